//! The built `erlkube` binary as a port mapper with OTP's command line.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use erlkube_testkit::{free_port, unique_name, wait_until, ChildGuard, ErlNode, OtpEpmd};

const BIN: &str = env!("CARGO_BIN_EXE_erlkube");

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// `erlkube epmd -port P <args>` in the foreground, killed on drop.
fn start_daemon(args: &[&str]) -> (ChildGuard, u16) {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.arg("epmd")
        .arg("-port")
        .arg(port.to_string())
        .args(args)
        .env_remove("ERL_EPMD_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let g = ChildGuard::spawn(&mut cmd).unwrap();
    assert!(wait_until(Duration::from_secs(10), || listening(port)));
    (g, port)
}

fn erlkube_epmd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("epmd")
        .args(args)
        .env_remove("ERL_EPMD_PORT")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serves_otp_nodes_and_otp_clients() {
    let (_d, port) = start_daemon(&["-d"]);
    let node = ErlNode::builder(&unique_name("cli_node"))
        .epmd_port(port)
        .start()
        .expect("erl node");
    let short = node.node_name().split('@').next().unwrap().to_owned();
    let (code, otp_out, _) = OtpEpmd::client(port, &["-names"]).unwrap();
    assert_eq!(code, 0);
    assert!(
        otp_out.contains(&format!("name {short} at port ")),
        "{otp_out}"
    );
    // erlkube's own -names prints exactly what OTP's prints.
    let (code, ours, _) = erlkube_epmd(&["-port", &port.to_string(), "-names"]);
    assert_eq!((code, ours), (0, otp_out));
}

#[test]
fn erlkube_client_flags_match_otp_against_otp_epmd() {
    let otp = OtpEpmd::start().unwrap();
    let p = otp.port().to_string();
    for args in [vec!["-names"], vec!["-stop", "nobody"], vec!["-kill"]] {
        let mut full = vec!["-port", p.as_str()];
        full.extend(args.iter().copied());
        let theirs = OtpEpmd::client(otp.port(), &args).unwrap();
        if args == ["-kill"] {
            // OTP's client killed OTP's daemon: ours now cannot connect,
            // exactly like OTP's client would not.
            assert_eq!(theirs.1, "Killed\n");
            assert!(wait_until(Duration::from_secs(10), || !listening(
                otp.port()
            )));
            let ours = erlkube_epmd(&full);
            let theirs = OtpEpmd::client(otp.port(), &args).unwrap();
            assert_eq!(ours, theirs);
            break;
        }
        let ours = erlkube_epmd(&full);
        assert_eq!((ours.0, &ours.1), (theirs.0, &theirs.1), "{args:?}");
    }
}

#[test]
fn no_daemon_means_cannot_connect() {
    let port = free_port();
    let ours = erlkube_epmd(&["-port", &port.to_string(), "-names"]);
    let theirs = OtpEpmd::client(port, &["-names"]).unwrap();
    assert_eq!(ours, theirs);
    assert_eq!(ours.0, 1);
    assert_eq!(ours.2, "epmd: Cannot connect to local epmd\n");
    // -started: silent, only the exit code tells.
    let ours = erlkube_epmd(&["-port", &port.to_string(), "-started"]);
    assert_eq!(ours, OtpEpmd::client(port, &["-started"]).unwrap());
    assert_eq!(ours, (1, String::new(), String::new()));
}

#[test]
fn bad_flags_exit_1_with_a_message_naming_the_flag() {
    for (args, needle) in [
        (vec!["-port", "abc"], "-port"),
        (vec!["-port", "70000"], "-port"),
        (vec!["-port"], "-port"),
        (vec!["-address", "not-an-ip"], "-address"),
        (vec!["-metrics", "nowhere"], "-metrics"),
        (vec!["-packet_timeout", "0"], "-packet_timeout"),
        (vec!["-frobnicate"], "-frobnicate"),
    ] {
        let (code, _, err) = erlkube_epmd(&args);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = Command::new(BIN)
        .args(["epmd", "-names"])
        .env("ERL_EPMD_PORT", "zero")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ERL_EPMD_PORT"));
}

#[test]
fn help_prints_usage() {
    let (code, out, _) = erlkube_epmd(&["-help"]);
    assert_eq!(code, 0);
    assert!(out.contains("-relaxed_command_check"));
}

#[test]
fn env_port_address_and_relaxed_check() {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.arg("epmd")
        .env("ERL_EPMD_PORT", port.to_string())
        .env("ERL_EPMD_RELAXED_COMMAND_CHECK", "1")
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut g = ChildGuard::spawn(&mut cmd).unwrap();
    assert!(wait_until(Duration::from_secs(10), || listening(port)));
    let node = ErlNode::builder(&unique_name("cli_env"))
        .epmd_port(port)
        .start()
        .unwrap();
    let short = node.node_name().split('@').next().unwrap().to_owned();
    // Relaxed: -stop works, and -kill is allowed with nodes registered.
    let (code, out, _) = OtpEpmd::client(port, &["-stop", &short]).unwrap();
    assert_eq!((code, out.as_str()), (0, "STOPPED\n"));
    let _other = ErlNode::builder(&unique_name("cli_env2"))
        .epmd_port(port)
        .start()
        .unwrap();
    let (code, out, _) = OtpEpmd::client(port, &["-kill"]).unwrap();
    assert_eq!((code, out.as_str()), (0, "Killed\n"));
    assert!(wait_until(Duration::from_secs(10), || matches!(
        g.try_wait(),
        Ok(Some(_))
    )));
}

#[test]
fn invoked_as_epmd_and_daemon_mode() {
    let dir = std::env::temp_dir().join(format!("erlkube-epmd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("epmd");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let port = free_port();
    /// Kills the detached (relaxed) daemon even if an assertion fails.
    struct KillOnDrop(u16);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if listening(self.0) {
                let _ = OtpEpmd::client(self.0, &["-kill"]);
            }
        }
    }
    let _cleanup = KillOnDrop(port);
    // -daemon returns once the detached daemon listens.
    let st = Command::new(&link)
        .args([
            "-port",
            &port.to_string(),
            "-daemon",
            "-relaxed_command_check",
        ])
        .env_remove("ERL_EPMD_PORT")
        .status()
        .unwrap();
    assert!(st.success());
    assert!(wait_until(Duration::from_secs(10), || listening(port)));
    let out = Command::new(&link)
        .args(["-port", &port.to_string(), "-names"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("epmd: up and running on port {port} with data:\n")
    );
    // A second -daemon on the same port exits 0 (as OTP: already running).
    let st = Command::new(&link)
        .args(["-port", &port.to_string(), "-daemon"])
        .status()
        .unwrap();
    assert!(st.success());
    let (code, out, _) = OtpEpmd::client(port, &["-kill"]).unwrap();
    assert_eq!((code, out.as_str()), (0, "Killed\n"));
    assert!(wait_until(Duration::from_secs(10), || !listening(port)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_flag_serves_http() {
    let mport = free_port();
    let (_d, _port) = start_daemon(&["-metrics", &format!("127.0.0.1:{mport}")]);
    assert!(wait_until(Duration::from_secs(10), || listening(mport)));
    let mut s = TcpStream::connect(("127.0.0.1", mport)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.contains("erlkube_epmd_registered_nodes 0"), "{body}");
}

#[test]
fn listens_on_ipv4_and_ipv6_loopback_by_default() {
    let (_d, port) = start_daemon(&[]);
    assert!(
        std::net::TcpListener::bind("[::1]:0").is_ok(),
        "this test needs the IPv6 loopback address ::1; it cannot check the IPv6 listener without it"
    );
    let mut s = TcpStream::connect(("::1", port)).expect("IPv6 listener");
    s.write_all(&[0, 1, b'n']).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert_eq!(out, (port as u32).to_be_bytes());
    // An erl node registering over IPv4 is visible over IPv6.
    let node = ErlNode::builder(&unique_name("cli_v6"))
        .epmd_port(port)
        .start()
        .unwrap();
    let short = node.node_name().split('@').next().unwrap().to_owned();
    let mut s = TcpStream::connect(("::1", port)).unwrap();
    s.write_all(&[0, 1, b'n']).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert!(String::from_utf8_lossy(&out[4..]).contains(&format!("name {short} at port ")));
}

/// The drop-in case: `erl` itself starts erlkube as its port mapper
/// (`-epmd "PATH -daemon"` replaces OTP's `epmd -daemon`), registers with
/// it and finds itself through it.
#[test]
fn erl_starts_erlkube_as_its_own_epmd() {
    let port = free_port();
    let mport = free_port();
    struct KillOnDrop(u16);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if listening(self.0) {
                let _ = OtpEpmd::client(self.0, &["-kill"]);
            }
        }
    }
    let _cleanup = KillOnDrop(port);
    let node = ErlNode::builder(&unique_name("cli_dropin"))
        .epmd_port(port)
        .epmd_command(&format!("{BIN} epmd -daemon"))
        .env("ERL_EPMD_RELAXED_COMMAND_CHECK", "1")
        .env("ERLKUBE_EPMD_METRICS", &format!("127.0.0.1:{mport}"))
        .start()
        .expect("erl with erlkube as its epmd");
    let short = node.node_name().split('@').next().unwrap().to_owned();
    let names = node.eval("net_adm:names()").unwrap();
    assert!(names.contains(&format!("{{\"{short}\",")), "{names}");
    // The daemon answering is erlkube's: it serves the metrics endpoint.
    let mut s = TcpStream::connect(("127.0.0.1", mport)).expect("erlkube metrics");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.contains("erlkube_epmd_registered_nodes 1"), "{body}");
}

/// The lean `erlkube-epmd` binary (the same code as `erlkube epmd`, alone):
/// it serves a real `erl` node, its `-names` prints what OTP's client
/// prints, and `-daemon` (which re-executes the running binary with the
/// `epmd` subcommand word) detaches a daemon that `-kill` stops.
#[test]
fn lean_binary_serves_lists_and_daemonizes_like_erlkube_epmd() {
    const LEAN: &str = env!("CARGO_BIN_EXE_erlkube-epmd");
    let port = free_port();
    let mut cmd = Command::new(LEAN);
    cmd.args(["-port", &port.to_string()])
        .env_remove("ERL_EPMD_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let g = ChildGuard::spawn(&mut cmd).unwrap();
    assert!(wait_until(Duration::from_secs(10), || listening(port)));
    let node = ErlNode::builder(&unique_name("lean_node"))
        .epmd_port(port)
        .start()
        .expect("erl node");
    let short = node.node_name().split('@').next().unwrap().to_owned();
    let (code, otp_out, _) = OtpEpmd::client(port, &["-names"]).unwrap();
    assert_eq!(code, 0);
    assert!(
        otp_out.contains(&format!("name {short} at port ")),
        "{otp_out}"
    );
    let out = Command::new(LEAN)
        .args(["-port", &port.to_string(), "-names"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), otp_out);
    drop(node);
    drop(g);

    let port = free_port();
    /// Kills the detached daemon even if an assertion fails.
    struct KillOnDrop(u16);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if listening(self.0) {
                let _ = OtpEpmd::client(self.0, &["-kill"]);
            }
        }
    }
    let _cleanup = KillOnDrop(port);
    let st = Command::new(LEAN)
        .args(["-port", &port.to_string(), "-daemon"])
        .env_remove("ERL_EPMD_PORT")
        .status()
        .unwrap();
    assert!(st.success());
    assert!(listening(port), "the detached daemon listens");
    let out = Command::new(LEAN)
        .args(["-port", &port.to_string(), "-kill"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Killed\n");
    assert!(wait_until(Duration::from_secs(10), || !listening(port)));
}
