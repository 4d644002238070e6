//! `erlkube pubsub subscribe|broadcast` against a real Elixir node (the
//! host's Elixir on OTP 25) running the default Phoenix.PubSub adapter's
//! message flow (`node/tests/elixir/pg_pubsub.exs`, written from
//! phoenix_pubsub's `pg2.ex`; the package cannot be fetched in CI).

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use erlkube_testkit::{unique_name, ChildGuard, ErlNode, OtpEpmd, Runtime};

mod common;
use common::ERLKUBE;
const COOKIE: &str = "pubsub_cli_cookie";
const FLOW: &str = include_str!("../../node/tests/elixir/pg_pubsub.exs");

/// The Elixir source as an Erlang binary literal.
fn erlang_binary(src: &str) -> String {
    let mut out = String::from("<<\"");
    for c in src.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\">>");
    out
}

fn pubsub(epmd: u16, args: &[&str]) -> Command {
    let mut c = Command::new(ERLKUBE);
    c.arg("pubsub")
        .args(args)
        .args(["--epmd-port", &epmd.to_string()])
        .env("RELEASE_COOKIE", COOKIE);
    c
}

#[test]
fn pubsub_subscribe_and_broadcast_with_an_elixir_node() {
    let epmd = OtpEpmd::start().unwrap();
    let ex = ErlNode::builder(&unique_name("pubsub_cli_ex"))
        .cookie(COOKIE)
        .epmd_port(epmd.port())
        .runtime(Runtime::Elixir)
        .start()
        .expect("elixir must be installed");
    let n = ex.node_name().to_owned();
    let p = epmd.port();
    ex.eval(&format!(
        "'Elixir.Code':eval_string({}), ok = 'Elixir.PgPubSub':start('Elixir.Test.PubSub'), \
         C = 'Elixir.PgPubSub.Collector':start('Elixir.Test.PubSub', <<\"room\">>), \
         register(coll, C), ok",
        erlang_binary(FLOW)
    ))
    .unwrap();

    // subscribe: "subscribed" on stderr once the Elixir node lists it,
    // then each message in Erlang syntax.
    let mut sub = ChildGuard::spawn(
        pubsub(
            p,
            &[
                "subscribe",
                "Test.PubSub",
                "room",
                "--node",
                &n,
                "--count",
                "2",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped()),
    )
    .unwrap();
    let stderr = sub.child_mut().stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("erlkube pubsub subscribe says subscribed");
        if line.starts_with("subscribed to room on Test.PubSub") {
            break;
        }
    }
    ex.eval(
        "T = 'Elixir.Test.PubSub', 'Elixir.PgPubSub':broadcast(T, <<\"room\">>, {hello, 1}), \
         'Elixir.PgPubSub':broadcast(T, <<\"other\">>, not_for_room), \
         'Elixir.PgPubSub':broadcast(T, <<\"room\">>, [1, <<\"b\">>])",
    )
    .unwrap();
    let mut out = String::new();
    sub.child_mut()
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "{hello,1}\n[1,<<\"b\">>]\n");
    assert!(sub.wait().unwrap().success());

    // broadcast: the Elixir subscriber gets it after the ones above.
    let o = pubsub(
        p,
        &[
            "broadcast",
            "Test.PubSub",
            "room",
            "{from_cli, <<\"x\">>}",
            "--node",
            &n,
        ],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut got = String::new();
    for _ in 0..200 {
        got = ex
            .eval("'Elixir.PgPubSub.Collector':got(whereis(coll))")
            .unwrap();
        if got.contains("from_cli") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(got, "[{hello,1},[1,<<\"b\">>],{from_cli,<<\"x\">>}]");

    // Bad input: a term that does not parse (2); a server nobody runs (1,
    // with the reason).
    let o = pubsub(
        p,
        &["broadcast", "Test.PubSub", "room", "{oops", "--node", &n],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = pubsub(
        p,
        &[
            "broadcast",
            "Nobody.PubSub",
            "room",
            "x",
            "--node",
            &n,
            "--timeout",
            "1s",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no PubSub worker of Nobody.PubSub"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
