//! global's conflict resolution after a netsplit of a 3-node cluster (one
//! Rust node, two OTP 25 nodes), the name registered on both sides.
//!
//! The cut is made with `erlang:disconnect_node/1` on the isolated BEAM
//! node, fenced by `-kernel dist_auto_connect never` on both BEAM nodes
//! (nothing reconnects behind the test's back; the Rust node dials only
//! when told) and healed by `net_kernel:connect_node/1` once a file
//! appears. This reproduces global's conflict path faithfully: every node
//! sees real nodedowns, each side registers under its own lock, and the
//! heal runs global's real connect protocol (init_connect, lock_set,
//! exchange, exchange_names → resolve_it → random_exit_name). Network
//! namespaces would add nothing global can observe (it sees connections,
//! not packets) and would need the Rust node moved into a namespace.
//!
//! The Rust pid loses (random_exit_name keeps the pid of the node whose
//! name sorts first: `b25_…` < `rust_…`) and gets the `kill` exit signal
//! a BEAM process would; all three nodes end with the BEAM pid.

#[macro_use]
mod beam_peer;
mod events;

use std::time::Duration;

use beam_peer::{connect, eval, rust_node, Beam, Otp};
use erlkube_etf::Term;
use erlkube_testkit::OtpEpmd;

/// Removes the gate file however the test ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_registered_on_both_sides_of_a_netsplit_resolves_to_one_pid() {
    let epmd = OtpEpmd::start().unwrap();
    let fence = ["-kernel", "dist_auto_connect", "never"];
    let rust = rust_node(epmd.port(), "nsc", &[]).await;
    let b1 = Beam::start(Otp::V25, epmd.port(), "nsc", "ok.", &fence).await;
    let b2 = Beam::start(Otp::V25, epmd.port(), "nsc", "ok.", &fence).await;
    let (n1, n2, r) = (b1.name.clone(), b2.name.clone(), rust.name().to_owned());
    assert!(
        n2.as_str() < r.as_str(),
        "the test needs the BEAM name to sort first"
    );
    connect(&rust, &n1).await;
    connect(&rust, &n2).await;
    assert_eq!(
        eval(&rust, &n1, &format!("net_kernel:connect_node('{n2}').")).await,
        Term::atom("true")
    );
    for n in [&n1, &n2] {
        assert_eq!(eval(&rust, n, "global:sync().").await, Term::atom("ok"));
    }

    // The cut: b2 leaves, registers `conflict` on its side, and heals
    // when the gate file appears.
    let gate = std::env::temp_dir().join(format!("erlkube_netsplit_{}", std::process::id()));
    let _ = std::fs::remove_file(&gate);
    let _cleanup = RemoveOnDrop(gate.clone());
    let gate_s = gate.display().to_string();
    eval(
        &rust,
        &n2,
        &format!(
            "C = spawn(fun() -> receive go -> ok end, \
               P2 = spawn(fun() -> receive stop -> ok end end), register(p2, P2), \
               erlang:disconnect_node('{r}'), erlang:disconnect_node('{n1}'), \
               W = fun Wait(0) -> cut_failed; Wait(K) -> case nodes() of [] -> ok; _ -> timer:sleep(50), Wait(K - 1) end end, \
               ok = W(600), \
               yes = global:register_name(conflict, P2), \
               G = fun Gate(0) -> gate_timeout; Gate(K) -> case filelib:is_file(\"{gate_s}\") of true -> ok; false -> timer:sleep(50), Gate(K - 1) end end, \
               ok = G(1200), \
               net_kernel:connect_node('{r}'), net_kernel:connect_node('{n1}') end), \
             register(cutter, C), ok."
        ),
    )
    .await;
    let mut events = rust.subscribe();
    let me = rust.spawn_process();
    rust.send_named(me.pid(), &n2, "cutter", Term::atom("go"))
        .await
        .unwrap();
    // b2 cut itself off.
    events::nodedown(&mut events, &n2, Duration::from_secs(30)).await;
    until!(
        "b1 has lost b2",
        !eval(&rust, &n1, "nodes().")
            .await
            .as_list()
            .unwrap()
            .contains(&Term::atom(&n2))
    );

    // This side registers the same name for a Rust process.
    let loser = rust.spawn_process();
    let lp = loser.pid().clone();
    rust.global_register(Term::atom("conflict"), &lp)
        .await
        .unwrap();
    assert_eq!(
        eval(&rust, &n1, "global:whereis_name(conflict).").await,
        Term::Pid(lp.clone())
    );

    // Heal.
    std::fs::write(&gate, b"heal").unwrap();
    until!("b2 is back", rust.nodes().contains(&n2));
    let winner = eval(&rust, &n2, "whereis(p2).").await;
    let winner_pid = winner.as_pid().expect("p2 runs").clone();
    until!(
        "every node resolves conflict to b2's pid",
        rust.global_whereis(&Term::atom("conflict")) == Some(winner_pid.clone())
            && eval(&rust, &n1, "global:whereis_name(conflict).").await == winner
            && eval(&rust, &n2, "global:whereis_name(conflict).").await == winner
    );
    // The Rust loser got the exit signal random_exit_name sends: kill.
    until!("the losing Rust process is dead", !loser.is_alive());
    assert_eq!(loser.exit_reason(), Some(Term::atom("killed")));
    for n in [&n1, &n2] {
        assert_eq!(eval(&rust, n, "global:sync().").await, Term::atom("ok"));
    }
    rust.shutdown();
}
