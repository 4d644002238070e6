//! The runtime's Erlang-side checks against OTP 27 (Debian trixie in a
//! chroot built by scripts/otp27-rootfs.sh): gen_server calls, rpc/erpc,
//! `undef` shapes, links, monitors and `global:sync()` with a Rust node.
//!
//! The root filesystem lives next to the build output (`<target>/otp27-rootfs`,
//! or `OTP27_ROOTFS`) and is built on first use (about two minutes); the
//! script skips the work when `usr/bin/erl` is already there. Needs root.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use erlkube_etf::Term;
use erlkube_node::RpcError;
use erlkube_node::{Cookie, Node, NodeConfig};
use erlkube_testkit::{otp27, OtpEpmd};
use tokio::process::Command;

fn erl27(root: &Path, epmd_port: u16, name: &str, args: &[&str]) -> Command {
    let mut c = Command::from(otp27::erl_command(root, epmd_port, name, "c27", args));
    c.kill_on_drop(true);
    c
}

#[tokio::test]
async fn otp27_runtime_checks() {
    let root = tokio::task::spawn_blocking(otp27::ensure_rootfs)
        .await
        .unwrap();
    let e = OtpEpmd::start().unwrap();
    let mut cfg = NodeConfig::new(
        format!("rust27rt_{}@127.0.0.1", std::process::id()),
        Cookie::new("c27"),
    );
    cfg.epmd_port = e.port();
    let rust = Node::start(cfg).await.unwrap();
    erlkube_node::demo::install(&rust).unwrap();
    let r = rust.name().to_owned();
    let mut victim = rust.spawn_registered("victim").unwrap();
    let rust2 = rust.clone();
    // `victim` ends with `crashed` when told to.
    tokio::spawn(async move {
        let _ = victim.recv().await;
        victim.exit(Term::atom("crashed"));
        drop(rust2);
    });

    // `victim2` ends with `crashed2` when told to; the BEAM links to it.
    let mut victim2 = rust.spawn_process();
    let v2 = victim2.pid().clone();
    rust.register_fn("t", "victim2", 0, move |_| Ok(Term::Pid(v2.clone())));
    tokio::spawn(async move {
        let _ = victim2.recv().await;
        victim2.exit(Term::atom("crashed2"));
    });
    let expr = format!(
        "R = '{r}', \
         A = gen_server:call({{echo_server, R}}, hi), \
         B = rpc:call(R, demo, add, [1, 2]), \
         C = erpc:call(R, demo, add, [1, 2]), \
         D = rpc:call(R, nomod, nofun, [1]), \
         E = try erpc:call(R, nomod, nofun, [1]) catch Cl:Ex -> {{Cl, Ex}} end, \
         Ref = erlang:monitor(process, {{victim, R}}), {{victim, R}} ! go, \
         F = receive {{'DOWN', Ref, process, _, Why}} -> Why after 10000 -> timeout end, \
         Ref2 = erlang:monitor(process, {{nobody, R}}), \
         G = receive {{'DOWN', Ref2, process, _, Why2}} -> Why2 after 10000 -> timeout end, \
         H = global:sync(), \
         process_flag(trap_exit, true), V2 = rpc:call(R, t, victim2, []), link(V2), V2 ! go, \
         I = receive {{'EXIT', V2, Why3}} -> Why3 after 10000 -> timeout end, \
         io:format(\"~s ~0p~n\", [erlang:system_info(otp_release), [A, B, C, D, E, F, G, H, I]]), \
         receive after 300000 -> ok end."
    );
    let beam = format!("beam27rt_{}@127.0.0.1", std::process::id());
    let mut child = erl27(&root, e.port(), &beam, &["-eval", &expr])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("OTP 27 node answers")
        .unwrap()
        .unwrap_or_default();
    assert_eq!(
        line,
        "27 [{echo,hi},3,3,{badrpc,{'EXIT',{undef,[{nomod,nofun,[1],[]}]}}},\
         {error,{exception,undef,[{nomod,nofun,[1],[]}]}},crashed,noproc,ok,crashed2]"
    );
    // Rust -> OTP 27: rpc_call and gen_server call.
    let v = rust
        .rpc_call(
            &beam,
            "lists",
            "reverse",
            vec![Term::list(vec![Term::Integer(1), Term::Integer(2)])],
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(v, Ok(Term::list(vec![Term::Integer(2), Term::Integer(1)])));
    let v = rust
        .rpc_call(&beam, "nomod", "nofun", vec![], Duration::from_secs(10))
        .await;
    assert!(matches!(v, Err(RpcError::Exception { .. })), "{v:?}");
    let v = rust
        .gen_call(
            ("nobody", beam.as_str()),
            Term::atom("x"),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(v, Err(erlkube_node::CallError::Exit(Term::atom("noproc"))));
}
