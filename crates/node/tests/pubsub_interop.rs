//! Phoenix.PubSub from Rust against real Elixir nodes (the host's Elixir
//! on OTP 25). The phoenix_pubsub package cannot be fetched in CI, so the
//! Elixir side below is written here from the default adapter's message
//! flow as phoenix_pubsub 2.x's `lib/phoenix/pubsub/pg2.ex` and
//! `supervisor.ex` do it: the adapter name is `Module.concat(name,
//! "Adapter")`; a worker registered under it joins the pg group of that
//! name in scope `Phoenix.PubSub`; `broadcast` sends `{:forward_to_local,
//! topic, message, dispatcher}` to the group's members on other nodes and
//! dispatches locally; the worker dispatches what it is forwarded to the
//! local subscribers of the topic (a duplicate-key `Registry` named after
//! the server, as Phoenix keeps them).

#[macro_use]
mod beam_peer;

use std::time::Duration;

use beam_peer::{connect, rust_node, Beam};
use erlkube_etf::Term;
use erlkube_node::{Node, PUBSUB_SCOPE};
use erlkube_testkit::OtpEpmd;

const ADAPTER_FLOW: &str = include_str!("elixir/pg_pubsub.exs");

const SERVER: &str = "Elixir.Test.PubSub";

async fn call(rust: &Node, node: &str, m: &str, f: &str, args: Vec<Term>) -> Term {
    rust.rpc_call(node, m, f, args, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{m}:{f} on {node}: {e}"))
}

fn msgs(tag: &str, n: i64) -> Vec<Term> {
    (1..=n)
        .map(|i| Term::tuple(vec![Term::atom(tag), Term::from(i)]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_elixir_subscribers_get_the_same_broadcasts_in_order() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = rust_node(epmd.port(), "psc", &[]).await;
    let e1 = Beam::start_elixir(epmd.port(), "psc").await;
    let e2 = Beam::start_elixir(epmd.port(), "psc").await;
    connect(&rust, &e1.name).await;
    connect(&rust, &e2.name).await;
    let server = Term::atom(SERVER);
    let room1 = Term::binary("room:1");
    let room2 = Term::binary("room:2");
    let mut collectors = Vec::new();
    for e in [&e1.name, &e2.name] {
        call(
            &rust,
            e,
            "Elixir.Code",
            "eval_string",
            vec![Term::binary(ADAPTER_FLOW)],
        )
        .await;
        call(&rust, e, "Elixir.PgPubSub", "start", vec![server.clone()]).await;
        let c = call(
            &rust,
            e,
            "Elixir.PgPubSub.Collector",
            "start",
            vec![server.clone(), room1.clone()],
        )
        .await;
        collectors.push((e.clone(), c));
    }
    // The two Elixir nodes meet (through the Rust node's RPC they know of
    // each other only once connected).
    call(
        &rust,
        &e1.name,
        "net_kernel",
        "connect_node",
        vec![Term::atom(&e2.name)],
    )
    .await;

    let mut sub = rust.pubsub_subscribe("Test.PubSub", "room:1").unwrap();
    let mut other = rust.pubsub_subscribe("Test.PubSub", "room:2").unwrap();
    let worker = rust.pubsub_worker("Test.PubSub").unwrap();

    // Every node sees three workers in the adapter's group.
    let adapter = Term::atom("Elixir.Test.PubSub.Adapter");
    until!(
        "all three workers are members everywhere",
        rust.pg_members(PUBSUB_SCOPE, &adapter).unwrap().len() == 3 && {
            let mut ok = true;
            for e in [&e1.name, &e2.name] {
                let m = call(&rust, e, "Elixir.PgPubSub", "members", vec![server.clone()]).await;
                ok &= m.as_list().unwrap_or_default().len() == 3
                    && m.as_list().unwrap().contains(&Term::Pid(worker.clone()));
            }
            ok
        }
    );

    // An Elixir node broadcasts: both Elixir subscribers and the Rust one
    // get the messages in order; the Rust subscriber of room:2 gets none.
    let from_e1 = msgs("e1", 50);
    for m in &from_e1 {
        call(
            &rust,
            &e1.name,
            "Elixir.PgPubSub",
            "broadcast",
            vec![server.clone(), room1.clone(), m.clone()],
        )
        .await;
    }
    for m in &from_e1 {
        assert_eq!(
            sub.recv_timeout(Duration::from_secs(10)).await.as_ref(),
            Some(m)
        );
    }
    // The Rust node broadcasts: Elixir subscribers on both nodes get it.
    let from_rust = msgs("rust", 50);
    for m in &from_rust {
        rust.pubsub_broadcast("Test.PubSub", "room:1", m.clone())
            .await
            .unwrap();
    }
    for m in &from_rust {
        assert_eq!(
            sub.recv_timeout(Duration::from_secs(10)).await.as_ref(),
            Some(m)
        );
    }
    let mut want = from_e1.clone();
    want.extend(from_rust.iter().cloned());
    for (e, c) in &collectors {
        until!(
            "the Elixir subscriber has every message",
            call(
                &rust,
                e,
                "Elixir.PgPubSub.Collector",
                "got",
                vec![c.clone()]
            )
            .await
            .as_list()
            .map(|l| l.len())
                == Some(want.len())
        );
        let got = call(
            &rust,
            e,
            "Elixir.PgPubSub.Collector",
            "got",
            vec![c.clone()],
        )
        .await;
        assert_eq!(got.as_list().unwrap(), &want[..], "on {e}");
    }
    // Topic filtering: a broadcast on room:2 from Elixir reaches only the
    // Rust room:2 subscriber.
    let only = Term::tuple(vec![Term::atom("room2"), Term::from(1)]);
    call(
        &rust,
        &e2.name,
        "Elixir.PgPubSub",
        "broadcast",
        vec![server.clone(), room2.clone(), only.clone()],
    )
    .await;
    assert_eq!(
        other.recv_timeout(Duration::from_secs(10)).await,
        Some(only)
    );
    // ...and not the room:1 subscriber: the next thing it gets is a
    // marker broadcast on room:1 after it (same sender, same order).
    let marker = Term::atom("marker");
    call(
        &rust,
        &e2.name,
        "Elixir.PgPubSub",
        "broadcast",
        vec![server.clone(), room1.clone(), marker.clone()],
    )
    .await;
    assert_eq!(
        sub.recv_timeout(Duration::from_secs(10)).await,
        Some(marker)
    );
    rust.shutdown();
}
