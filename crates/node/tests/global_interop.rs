//! global names between a Rust node and real OTP 25 (host `erl`) and
//! OTP 27 (trixie chroot) nodes: register, whereis and unregister both
//! ways, a taken name refused on the other side, names dropped when their
//! process exits or their node goes away, `global:sync()` never stuck,
//! and a malformed global call closing its connection.

#[macro_use]
mod beam_peer;
mod events;

use std::time::Duration;

use beam_peer::{connect, eval, rust_node, Beam, Otp};
use erlkube_etf::Term;
use erlkube_node::GlobalError;
use erlkube_testkit::OtpEpmd;

async fn global_both_ways(otp: Otp) {
    let epmd = OtpEpmd::start().unwrap();
    let rust = rust_node(epmd.port(), "glc", &[]).await;
    let mut beam = Beam::start(otp, epmd.port(), "glc", "ok.", &[]).await;
    let b = beam.name.clone();
    connect(&rust, &b).await;
    let r = rust.name().to_owned();
    assert_eq!(eval(&rust, &b, "global:sync().").await, Term::atom("ok"));

    // Rust registers; the BEAM resolves the name to the Rust pid.
    let a = rust.spawn_process();
    rust.global_register(Term::atom("rust_name"), a.pid())
        .await
        .unwrap();
    assert_eq!(
        eval(&rust, &b, "global:whereis_name(rust_name).").await,
        Term::Pid(a.pid().clone())
    );
    assert_eq!(
        rust.global_whereis(&Term::atom("rust_name")),
        Some(a.pid().clone())
    );

    // The BEAM registers; Rust resolves the name to the BEAM pid.
    let bp = eval(
        &rust,
        &b,
        "P = spawn(fun() -> receive stop -> ok end end), yes = global:register_name(beam_name, P), P.",
    )
    .await;
    assert_eq!(
        rust.global_whereis(&Term::atom("beam_name")).map(Term::Pid),
        Some(bp.clone())
    );

    // A taken name is refused on the other side; a pid gets one name.
    let other = rust.spawn_process();
    assert!(matches!(
        rust.global_register(Term::atom("beam_name"), other.pid())
            .await,
        Err(GlobalError::NameTaken { .. })
    ));
    assert!(matches!(
        rust.global_register(Term::atom("second"), a.pid()).await,
        Err(GlobalError::PidHasName { .. })
    ));
    assert_eq!(
        eval(&rust, &b, "global:register_name(rust_name, self()).").await,
        Term::atom("no")
    );

    // Unregister both ways.
    rust.global_unregister(&Term::atom("rust_name"))
        .await
        .unwrap();
    assert_eq!(
        eval(&rust, &b, "global:whereis_name(rust_name).").await,
        Term::atom("undefined")
    );
    eval(&rust, &b, "global:unregister_name(beam_name).").await;
    assert_eq!(rust.global_whereis(&Term::atom("beam_name")), None);

    // A registered process that exits is unregistered everywhere.
    let d = rust.spawn_process();
    rust.global_register(Term::atom("dies"), d.pid())
        .await
        .unwrap();
    drop(d);
    until!(
        "the BEAM drops the name of the Rust process that exited",
        eval(&rust, &b, "global:whereis_name(dies).").await == Term::atom("undefined")
    );
    assert_eq!(rust.global_whereis(&Term::atom("dies")), None);
    eval(
        &rust,
        &b,
        "P = spawn(fun() -> receive stop -> ok end end), yes = global:register_name(beam_dies, P), P ! stop, ok.",
    )
    .await;
    until!(
        "Rust drops the name of the BEAM process that exited",
        rust.global_whereis(&Term::atom("beam_dies")).is_none()
    );

    // A Rust node that goes away takes its names with it, on the BEAM and
    // on the other Rust node.
    let rust2 = rust_node(epmd.port(), "glc", &[]).await;
    connect(&rust2, &b).await;
    // global's connect_all: the BEAM's new_nodes makes the Rust nodes meet.
    until!(
        "the two Rust nodes are connected",
        rust.nodes().contains(&rust2.name().to_owned())
    );
    assert_eq!(eval(&rust, &b, "global:sync().").await, Term::atom("ok"));
    let e = rust2.spawn_process();
    rust2
        .global_register(Term::atom("on_rust2"), e.pid())
        .await
        .unwrap();
    until!(
        "the first Rust node learns the second's name",
        rust.global_whereis(&Term::atom("on_rust2")) == Some(e.pid().clone())
    );
    assert_eq!(
        eval(&rust, &b, "global:whereis_name(on_rust2).").await,
        Term::Pid(e.pid().clone())
    );
    rust2.shutdown();
    until!(
        "the BEAM drops the names of the Rust node that went away",
        eval(&rust, &b, "global:whereis_name(on_rust2).").await == Term::atom("undefined")
    );
    until!(
        "the other Rust node drops them too",
        rust.global_whereis(&Term::atom("on_rust2")).is_none()
    );
    assert_eq!(eval(&rust, &b, "global:sync().").await, Term::atom("ok"));

    // A malformed global call closes the connection; global still works.
    let mut events = rust.subscribe();
    eval(
        &rust,
        &b,
        &format!(
            "spawn(fun() -> timer:sleep(100), {{global_name_server, '{r}'}} ! \
             {{'$gen_call', {{self(), make_ref()}}, {{set_lock, not_a_lock_id}}}} end), ok."
        ),
    )
    .await;
    events::nodedown(&mut events, &b, Duration::from_secs(30)).await;
    let f = rust.spawn_process();
    connect(&rust, &b).await;
    assert_eq!(eval(&rust, &b, "global:sync().").await, Term::atom("ok"));
    rust.global_register(Term::atom("after_bad"), f.pid())
        .await
        .unwrap();
    assert_eq!(
        eval(&rust, &b, "global:whereis_name(after_bad).").await,
        Term::Pid(f.pid().clone())
    );

    // A BEAM node that goes away takes its names with it.
    eval(
        &rust,
        &b,
        "P = spawn(fun() -> receive stop -> ok end end), yes = global:register_name(beam_last, P), ok.",
    )
    .await;
    assert!(rust.global_whereis(&Term::atom("beam_last")).is_some());
    beam.kill().await;
    until!(
        "Rust drops the names of the BEAM node that went away",
        rust.global_whereis(&Term::atom("beam_last")).is_none()
    );
    rust.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_with_otp25() {
    global_both_ways(Otp::V25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_with_otp27() {
    global_both_ways(Otp::V27).await;
}
