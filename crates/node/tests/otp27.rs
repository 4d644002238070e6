//! OTP 27 (Debian trixie in a chroot built by scripts/otp27-rootfs.sh)
//! against the Rust node: OTP 26+ makes V4_NC and UNLINK_ID mandatory.
//!
//! The root filesystem lives next to the build output (`<target>/otp27-rootfs`,
//! or `OTP27_ROOTFS`) and is built on first use (about two minutes); the
//! script skips the work when `usr/bin/erl` is already there. Needs root.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use erlkube_etf::Term;
use erlkube_node::{Cookie, Node, NodeConfig};
use erlkube_testkit::{otp27, OtpEpmd};
use tokio::process::Command;

fn erl27(root: &Path, epmd_port: u16, name: &str, args: &[&str]) -> Command {
    let mut c = Command::from(otp27::erl_command(root, epmd_port, name, "c27", args));
    c.kill_on_drop(true);
    c
}

#[tokio::test]
async fn otp27_pings_and_echoes_with_the_rust_node() {
    let root = tokio::task::spawn_blocking(otp27::ensure_rootfs)
        .await
        .unwrap();
    let e = OtpEpmd::start().unwrap();
    let mut cfg = NodeConfig::new(
        format!("rust27_{}@127.0.0.1", std::process::id()),
        Cookie::new("c27"),
    );
    cfg.epmd_port = e.port();
    let rust = Node::start(cfg).await.unwrap();
    let mut echo = rust.spawn_registered("echo").unwrap();
    let n = rust.clone();
    tokio::spawn(async move {
        while let Some(m) = echo.recv().await {
            if let Some([Term::Pid(to), msg]) = m.as_tuple() {
                let _ = n.send(to, msg.clone()).await;
            }
        }
    });

    let expr = format!(
        "P = net_adm:ping('{r}'), M = {{hello, self(), make_ref(), <<1,2,3>>, 1 bsl 80}}, \
         {{echo, '{r}'}} ! {{self(), M}}, E = receive X -> X =:= M after 10000 -> timeout end, \
         io:format(\"~s ~p ~p~n\", [erlang:system_info(otp_release), P, E]), init:stop().",
        r = rust.name()
    );
    let beam = format!("beam27_{}@127.0.0.1", std::process::id());
    let out = erl27(&root, e.port(), &beam, &["-eval", &expr]).output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().last(), Some("27 pong true"), "{text}");

    // And the Rust node pings an OTP 27 node.
    let target = format!("beam27t_{}@127.0.0.1", std::process::id());
    let _t = erl27(&root, e.port(), &target, &[])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if rust.ping(&target).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "Rust ping of an OTP 27 node");
}
