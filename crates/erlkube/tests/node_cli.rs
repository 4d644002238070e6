//! `erlkube node` and `erlkube ping` against real OTP 25 on loopback,
//! through erlkube-testkit (private OTP epmd on a free port, BEAM nodes
//! evaluating expressions, children killed on drop).

use std::process::{Command, Stdio};
use std::time::Duration;

use erlkube_testkit::{free_port, unique_name, wait_until, ChildGuard, ErlNode, OtpEpmd};

mod common;
use common::ERLKUBE;

/// Starts `erlkube node` and waits for its "listening" line.
fn rust_node(epmd_port: u16, name: &str, cookie: &str, extra: &[&str]) -> ChildGuard {
    let mut cmd = Command::new(ERLKUBE);
    cmd.args(["node", "--name", name, "--cookie", cookie])
        .args(["--epmd-port", &epmd_port.to_string()])
        .args(extra)
        .stderr(Stdio::null());
    common::spawn_until_listening(&mut cmd)
}

fn beam(epmd_port: u16, cookie: &str, args: &[&str]) -> ErlNode {
    let mut b = ErlNode::builder(&unique_name("cli_beam"))
        .cookie(cookie)
        .epmd_port(epmd_port)
        .eval_timeout(Duration::from_secs(60));
    for a in args {
        b = b.arg(a);
    }
    b.start().expect("erl must be installed")
}

fn long(prefix: &str) -> String {
    format!("{}@127.0.0.1", unique_name(prefix))
}

#[test]
fn beam_pings_and_echoes_through_the_cli_node() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = long("cli_rust");
    let _node = rust_node(epmd.port(), &rust, "cc", &[]);
    let b = beam(epmd.port(), "cc", &[]);
    assert_eq!(b.eval(&format!("net_adm:ping('{rust}')")).unwrap(), "pong");
    let echoed = b
        .eval(&format!(
            "{{echo, '{rust}'}} ! {{self(), {{hi, [1,2,3]}}}}, receive X -> X after 5000 -> timeout end"
        ))
        .unwrap();
    assert_eq!(echoed, "{hi,[1,2,3]}");
}

fn ping(epmd_port: u16, node: &str, cookie: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(ERLKUBE)
        .args([
            "ping",
            node,
            "--cookie",
            cookie,
            "--epmd-port",
            &epmd_port.to_string(),
        ])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ping_cli_pong_and_pang_reasons() {
    let epmd = OtpEpmd::start().unwrap();
    let ep = epmd.port();
    let target = beam(ep, "cc", &[]);
    let (code, out, err) = ping(ep, target.node_name(), "cc", &[]);
    assert_eq!((code, out.as_str()), (Some(0), "pong"), "{err}");

    let (code, out, err) = ping(ep, target.node_name(), "wrong", &[]);
    assert_eq!((code, out.as_str()), (Some(1), "pang"));
    assert!(err.contains("cookie"), "{err}");

    let (code, out, err) = ping(ep, &long("nobody"), "cc", &[]);
    assert_eq!((code, out.as_str()), (Some(1), "pang"));
    assert!(err.contains("no epmd entry"), "{err}");

    let closed = free_port();
    let (code, out, err) = ping(ep, &long("closed"), "cc", &["--port", &closed.to_string()]);
    assert_eq!((code, out.as_str()), (Some(1), "pang"));
    assert!(err.contains("refused"), "{err}");

    let (code, out, err) = ping(free_port(), &long("noepmd"), "cc", &[]);
    assert_eq!((code, out.as_str()), (Some(1), "pang"));
    assert!(err.contains("epmd"), "{err}");
}

#[test]
fn frozen_rust_node_is_dropped_by_the_beam_within_the_tick_window() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = long("cli_frozen");
    let node = rust_node(epmd.port(), &rust, "cc", &["--net-ticktime", "4"]);
    let pid = node.id();
    let b = beam(epmd.port(), "cc", &["-kernel", "net_ticktime", "4"]);
    // The BEAM connects, idles three windows (ticks keep the link), then
    // the Rust node is stopped and the BEAM must see nodedown.
    let verdict = b
        .eval(&format!(
            "net_kernel:monitor_nodes(true), pong = net_adm:ping('{rust}'), \
             Idle = receive {{nodedown, _}} -> down after 12000 -> up end, \
             os:cmd(\"kill -STOP {pid}\"), \
             Down = receive {{nodedown, '{rust}'}} -> nodedown after 12000 -> still_up end, \
             os:cmd(\"kill -CONT {pid}\"), {{Idle, Down}}"
        ))
        .unwrap();
    assert_eq!(verdict, "{up,nodedown}");
}

#[test]
fn sigterm_stops_the_node() {
    let epmd = OtpEpmd::start().unwrap();
    let mut node = rust_node(epmd.port(), &long("cli_term"), "cc", &[]);
    let pid = node.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // A liveness bound, generous for a loaded machine.
    assert!(
        wait_until(Duration::from_secs(30), || matches!(
            node.try_wait(),
            Ok(Some(_))
        )),
        "the node did not exit within 30 s of SIGTERM"
    );
    let status = node.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// What a BEAM monitor of a stopped Rust node's processes sees matches a
/// BEAM node stopped with `init:stop()` (checked on OTP 25: a process
/// stopped on purpose reports `shutdown`; one whose connection goes first,
/// `noconnection`): SIGTERM gives `shutdown` for `echo`; SIGKILL (the
/// connection just goes) gives `noconnection`.
#[test]
fn monitors_see_shutdown_on_sigterm_and_noconnection_on_kill() {
    let epmd = OtpEpmd::start().unwrap();
    for (signal, want) in [("TERM", "shutdown"), ("KILL", "noconnection")] {
        let rust = long("cli_down");
        let node = rust_node(epmd.port(), &rust, "cc", &["--no-discovery"]);
        let b = beam(epmd.port(), "cc", &[]);
        let pid = node.id();
        let got = b
            .eval(&format!(
                "pong = net_adm:ping('{rust}'), \
                 R = erlang:monitor(process, {{echo, '{rust}'}}), \
                 {{echo, '{rust}'}} ! {{self(), here}}, \
                 here = receive M -> M after 10000 -> no_echo end, \
                 os:cmd(\"kill -{signal} {pid}\"), \
                 receive {{'DOWN', R, process, _, Why}} -> Why after 30000 -> timeout end"
            ))
            .unwrap();
        assert_eq!(got, want, "SIG{signal}");
        drop(node);
    }
}

#[test]
fn sigterm_drains_for_the_grace_then_leaves_and_stops() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = long("cli_drain");
    let mut node = rust_node(epmd.port(), &rust, "cc", &["--drain-grace", "3s"]);
    let b = beam(epmd.port(), "cc", &[]);
    assert_eq!(b.eval(&format!("net_adm:ping('{rust}')")).unwrap(), "pong");
    assert_eq!(
        b.eval("net_kernel:monitor_nodes(true, [nodedown_reason])")
            .unwrap(),
        "ok"
    );
    let pid = node.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // During the grace the node still answers; then it leaves (nodedown).
    let verdict = b
        .eval(&format!(
            "P = net_adm:ping('{rust}'), \
             D = receive {{nodedown, '{rust}', _}} -> nodedown after 30000 -> still_up end, \
             {{P, D}}"
        ))
        .unwrap();
    assert_eq!(verdict, "{pong,nodedown}");
    assert!(
        wait_until(Duration::from_secs(30), || matches!(
            node.try_wait(),
            Ok(Some(_))
        )),
        "the node did not exit after its drain"
    );
    assert!(node.wait().unwrap().success());
}

/// `erlkube node` with `extra` after a name and cookie: refused with exit
/// code 2 before anything starts; its stderr.
fn refused_node_args(prefix: &str, extra: &[&str]) -> String {
    let out = Command::new(ERLKUBE)
        .args(["node", "--name", &long(prefix), "--cookie", "cc"])
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_drain_grace_out_of_range_is_refused() {
    let err = refused_node_args("cli_badgrace", &["--drain-grace", "11m"]);
    assert!(
        err.contains("--drain-grace") && err.contains("10m"),
        "{err}"
    );
}

/// `--busy-poll-us`: a node that spins after reads still talks to a real
/// BEAM both ways (a run of request/answer messages, each answered in
/// order); a value past 10000 is refused naming the flag and its range.
#[test]
fn busy_poll_node_echoes_a_beam_and_a_bad_value_is_refused() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = long("cli_spin");
    let _node = rust_node(epmd.port(), &rust, "cc", &["--busy-poll-us", "200"]);
    let b = beam(epmd.port(), "cc", &[]);
    assert_eq!(b.eval(&format!("net_adm:ping('{rust}')")).unwrap(), "pong");
    let got = b
        .eval(&format!(
            "L = lists:seq(1, 2000), \
             [begin {{echo, '{rust}'}} ! {{self(), I}}, receive I -> I after 5000 -> timeout end end || I <- L] =:= L"
        ))
        .unwrap();
    assert_eq!(got, "true");

    let err = refused_node_args("cli_badspin", &["--busy-poll-us", "20000"]);
    assert!(
        err.contains("--busy-poll-us") && err.contains("0..=10000"),
        "{err}"
    );
}

/// `--busy-poll-us` on a runtime of two workers (asked for with
/// `TOKIO_WORKER_THREADS`) logs, when the node starts, that spinning wakes
/// the other worker and what to do instead; on one worker it says nothing
/// of the kind, and without `TOKIO_WORKER_THREADS` the node picks one
/// worker itself (this machine has two CPUs, so tokio's default would be
/// two and warned about).
#[test]
fn busy_poll_on_more_than_one_worker_is_warned_about() {
    assert!(
        std::thread::available_parallelism().map_or(1, |n| n.get()) > 1,
        "needs more than one CPU for tokio's default to be more than one worker"
    );
    let epmd = OtpEpmd::start().unwrap();
    for workers in [Some("2"), Some("1"), None] {
        let mut cmd = Command::new(ERLKUBE);
        cmd.args(["node", "--name", &long("cli_spinw"), "--cookie", "cc"])
            .args(["--epmd-port", &epmd.port().to_string()])
            .args(["--busy-poll-us", "50"])
            .env_remove("TOKIO_WORKER_THREADS")
            .stderr(Stdio::piped());
        if let Some(w) = workers {
            cmd.env("TOKIO_WORKER_THREADS", w);
        }
        let mut node = common::spawn_until_listening(&mut cmd);
        let mut stderr = node.child_mut().stderr.take().unwrap();
        // Stopped, the node's log ends: all it wrote while starting is in.
        drop(node);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        let warned = text.contains("busy_poll on a multi-thread runtime with more than one worker")
            && text.contains("TOKIO_WORKER_THREADS=1");
        assert_eq!(
            warned,
            workers == Some("2"),
            "TOKIO_WORKER_THREADS {workers:?}, log:\n{text}"
        );
    }
}
