//! OTP 27 (Debian trixie in a chroot built by scripts/otp27-rootfs.sh)
//! against the Rust node: OTP 26+ makes V4_NC and UNLINK_ID mandatory.
//!
//! The root filesystem lives next to the build output (`<target>/otp27-rootfs`,
//! or `OTP27_ROOTFS`) and is built on first use (about two minutes); the
//! script skips the work when `usr/bin/erl` is already there. Needs root.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use erlkube_etf::Term;
use erlkube_node::{Cookie, Node, NodeConfig};
use erlkube_testkit::OtpEpmd;
use tokio::process::Command;

fn rootfs() -> PathBuf {
    if let Some(d) = std::env::var_os("OTP27_ROOTFS") {
        return PathBuf::from(d);
    }
    // <target>/debug/deps/otp27-xxxx
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("otp27-rootfs")
}

fn ensure_rootfs() -> PathBuf {
    let dir = rootfs();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/otp27-rootfs.sh");
    let status = std::process::Command::new("sh")
        .arg(script)
        .arg(&dir)
        .status()
        .expect("run otp27-rootfs.sh");
    assert!(status.success(), "otp27-rootfs.sh failed");
    dir
}

fn erl27(root: &PathBuf, epmd_port: u16, name: &str, args: &[&str]) -> Command {
    let mut c = Command::new("chroot");
    c.arg(root)
        .args([
            "env",
            &format!("ERL_EPMD_PORT={epmd_port}"),
            "HOME=/tmp", // inside the chroot; the cookie comes from -setcookie
            "erl",
            "-noshell",
            "-name",
            name,
        ])
        .args(["-setcookie", "c27"])
        // The test runs its own epmd; never leave a detached one behind.
        .args(["-start_epmd", "false"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

#[tokio::test]
async fn otp27_pings_and_echoes_with_the_rust_node() {
    let root = tokio::task::spawn_blocking(ensure_rootfs).await.unwrap();
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
