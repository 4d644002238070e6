//! pg against real OTP 25 (host `erl`) and OTP 27 (trixie chroot): a Rust
//! node and a BEAM node run the scopes `pg` and `other`; joins and leaves
//! show on both sides, members go when their process exits or their node
//! goes down (both ways), scopes are independent, and malformed pg
//! messages close the sender's connection without taking the node down.

#[macro_use]
mod beam_peer;
mod events;

use beam_peer::{connect, eval, pids, rust_node, Beam, Otp};
use erlkube_etf::Term;
use erlkube_node::{NodeEvent, PgError};
use erlkube_testkit::OtpEpmd;

fn g() -> Term {
    Term::atom("g")
}

async fn pg_both_ways(otp: Otp) {
    let epmd = OtpEpmd::start().unwrap();
    let rust = rust_node(epmd.port(), "pgc", &["pg", "other"]).await;
    let beam = Beam::start(
        otp,
        epmd.port(),
        "pgc",
        "{ok, _} = pg:start(pg), {ok, _} = pg:start(other).",
        &[],
    )
    .await;
    let b = beam.name.clone();
    connect(&rust, &b).await;
    let r = rust.name().to_owned();

    // A Rust member shows in pg:get_members/2 on the BEAM.
    let a = rust.spawn_process();
    rust.pg_join("pg", g(), &[a.pid().clone()]).unwrap();
    until!(
        "the BEAM sees the Rust member",
        pids(&eval(&rust, &b, "pg:get_members(pg, g).").await).contains(a.pid())
    );

    // A BEAM member shows in the Rust API.
    let bp = eval(
        &rust,
        &b,
        "P = spawn(fun() -> receive stop -> ok end end), ok = pg:join(pg, g, P), P.",
    )
    .await;
    let bp = bp.as_pid().unwrap().clone();
    until!(
        "Rust sees the BEAM member",
        rust.pg_members("pg", &g()).unwrap().contains(&bp)
    );
    assert!(rust.pg_members("pg", &g()).unwrap().contains(a.pid()));
    assert_eq!(
        rust.pg_local_members("pg", &g()).unwrap(),
        vec![a.pid().clone()]
    );

    // Scopes are independent.
    rust.pg_join("other", g(), &[a.pid().clone()]).unwrap();
    let c = eval(
        &rust,
        &b,
        "P = spawn(fun() -> receive stop -> ok end end), ok = pg:join(other, h, P), P.",
    )
    .await;
    until!(
        "Rust sees the member of h in scope other",
        rust.pg_members("other", &Term::atom("h")).unwrap() == pids(&Term::list(vec![c.clone()]))
    );
    assert!(rust.pg_members("pg", &Term::atom("h")).unwrap().is_empty());
    until!(
        "the BEAM sees the Rust member in scope other",
        pids(&eval(&rust, &b, "pg:get_members(other, g).").await) == vec![a.pid().clone()]
    );

    // Bad requests get named errors.
    assert_eq!(
        rust.pg_join("nope", g(), &[a.pid().clone()]),
        Err(PgError::NoScope("nope".into()))
    );
    assert_eq!(
        rust.pg_join("pg", g(), std::slice::from_ref(&bp)),
        Err(PgError::NotLocal(bp.clone()))
    );
    let stranger = rust.spawn_process();
    assert!(matches!(
        rust.pg_leave("pg", g(), &[stranger.pid().clone()]),
        Err(PgError::NotJoined(_))
    ));

    // Leave: gone from pg on the BEAM, still in other.
    rust.pg_leave("pg", g(), &[a.pid().clone()]).unwrap();
    until!(
        "the BEAM no longer sees the Rust member in pg",
        !pids(&eval(&rust, &b, "pg:get_members(pg, g).").await).contains(a.pid())
    );
    assert_eq!(
        pids(&eval(&rust, &b, "pg:get_members(other, g).").await),
        vec![a.pid().clone()]
    );

    // Exit: a Rust member that ends leaves on the BEAM; a BEAM member
    // killed leaves on the Rust node.
    let d = rust.spawn_process();
    let dp = d.pid().clone();
    rust.pg_join("pg", g(), std::slice::from_ref(&dp)).unwrap();
    until!(
        "the BEAM sees the second Rust member",
        pids(&eval(&rust, &b, "pg:get_members(pg, g).").await).contains(&dp)
    );
    drop(d);
    until!(
        "the BEAM drops the Rust member that exited",
        !pids(&eval(&rust, &b, "pg:get_members(pg, g).").await).contains(&dp)
    );
    assert!(!rust.pg_members("pg", &g()).unwrap().contains(&dp));
    eval(
        &rust,
        &b,
        &format!(
            "exit(list_to_pid(\"{}\"), kill).",
            pid_text(&bp, &rust, &b).await
        ),
    )
    .await;
    until!(
        "Rust drops the BEAM member that was killed",
        !rust.pg_members("pg", &g()).unwrap().contains(&bp)
    );

    // Nodedown both ways: each side drops the other's members, and both
    // come back when the nodes reconnect.
    let f = rust.spawn_process();
    rust.pg_join("pg", g(), &[f.pid().clone()]).unwrap();
    let e = eval(
        &rust,
        &b,
        "P = spawn(fun() -> receive stop -> ok end end), ok = pg:join(pg, g, P), \
         Rec = spawn(fun() -> {Ref, _} = pg:monitor(pg, g), \
           L = fun Loop(Acc) -> receive {Ref, leave, g, Ps} -> Loop(Acc ++ Ps); \
                                         {get, From} -> From ! {left, Acc}, Loop(Acc) end end, \
           L([]) end), \
         register(left_rec, Rec), P.",
    )
    .await;
    let ep = e.as_pid().unwrap().clone();
    until!(
        "both members are seen",
        rust.pg_members("pg", &g()).unwrap().contains(&ep)
            && pids(&eval(&rust, &b, "pg:get_members(pg, g).").await).contains(f.pid())
    );
    let mut events = rust.subscribe();
    assert!(rust.disconnect(&b));
    events::nodedown(&mut events, &b, std::time::Duration::from_secs(30)).await;
    until!(
        "Rust drops the members of the node that went down",
        !rust.pg_members("pg", &g()).unwrap().contains(&ep)
    );
    // The RPC reconnects; the BEAM's recorder saw the Rust member leave.
    let left = eval(
        &rust,
        &b,
        "left_rec ! {get, self()}, receive {left, L} -> L end.",
    )
    .await;
    assert!(pids(&left).contains(f.pid()), "the BEAM saw {left} leave");
    until!(
        "the members are back on both sides after reconnecting",
        rust.pg_members("pg", &g()).unwrap().contains(&ep)
            && pids(&eval(&rust, &b, "pg:get_members(pg, g).").await).contains(f.pid())
    );

    // Malformed input: junk that names no peer is logged and dropped (the
    // connection stays); a join naming a peer but no pids closes that
    // connection, and the node and its scope keep working.
    let mut events = rust.subscribe();
    eval(
        &rust,
        &b,
        &format!("{{pg, '{r}'}} ! hello, {{pg, '{r}'}} ! {{discover, 42}}, ok."),
    )
    .await;
    let h = rust.spawn_process();
    rust.pg_join("pg", Term::atom("after_junk"), &[h.pid().clone()])
        .unwrap();
    until!(
        "a join after junk still reaches the BEAM",
        pids(&eval(&rust, &b, "pg:get_members(pg, after_junk).").await).contains(h.pid())
    );
    while let Ok(ev) = events.try_recv() {
        assert!(
            !matches!(ev, NodeEvent::NodeDown { .. }),
            "junk must not close the connection: {ev:?}"
        );
    }
    assert!(rust.nodes().contains(&b));
    eval(
        &rust,
        &b,
        &format!(
            "spawn(fun() -> timer:sleep(100), {{pg, '{r}'}} ! {{join, self(), g, not_a_pid}} end), ok."
        ),
    )
    .await;
    events::nodedown(&mut events, &b, std::time::Duration::from_secs(30)).await;
    until!(
        "the scope works after the bad peer was cut off",
        pids(&eval(&rust, &b, "pg:get_members(pg, g).").await).contains(f.pid())
    );
    rust.shutdown();
}

/// `pid_to_list/1` text of a pid of `beam` (to name it in an expression).
async fn pid_text(p: &erlkube_etf::Pid, rust: &erlkube_node::Node, beam: &str) -> String {
    let t = rust
        .rpc_call(
            beam,
            "erlang",
            "pid_to_list",
            vec![Term::Pid(p.clone())],
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    t.as_list()
        .unwrap()
        .iter()
        .map(|c| char::from_u32(c.as_integer().unwrap() as u32).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_with_otp25() {
    pg_both_ways(Otp::V25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_with_otp27() {
    pg_both_ways(Otp::V27).await;
}
