//! `erlkube node` and `erlkube ping` against real OTP 25 on loopback, with
//! a private OTP epmd on a free port. Children are killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ERLKUBE: &str = env!("CARGO_BIN_EXE_erlkube");

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn epmd() -> (u16, Guard) {
    let port = free_port();
    let guard = Guard(
        Command::new("epmd")
            .args(["-port", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("epmd"),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (port, guard);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("epmd did not start");
}

/// Starts `erlkube node` and waits for its "listening" line.
fn rust_node(epmd_port: u16, name: &str, cookie: &str, extra: &[&str]) -> Guard {
    use std::io::BufRead;
    let mut child = Command::new(ERLKUBE)
        .args([
            "node",
            "--name",
            name,
            "--cookie",
            cookie,
            "--epmd-port",
            &epmd_port.to_string(),
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on port"), "{line}");
    Guard(child)
}

fn erl_eval(epmd_port: u16, name: &str, cookie: &str, extra: &[&str], expr: &str) -> String {
    let out = Command::new("erl")
        .env("ERL_EPMD_PORT", epmd_port.to_string())
        .args(["-noshell", "-name", name, "-setcookie", cookie])
        .args(extra)
        .args(["-eval", &format!("{expr}, init:stop().")])
        .output()
        .expect("erl must be installed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn uniq(s: &str) -> String {
    format!("{s}_{}@127.0.0.1", std::process::id())
}

#[test]
fn beam_pings_and_echoes_through_the_cli_node() {
    let (ep, _epmd) = epmd();
    let rust = uniq("cli_rust");
    let _node = rust_node(ep, &rust, "cc", &[]);
    let expr = format!(
        "P = net_adm:ping('{rust}'), {{echo, '{rust}'}} ! {{self(), {{hi, [1,2,3]}}}}, \
         R = receive X -> X after 5000 -> timeout end, io:format(\"~p ~p~n\", [P, R])"
    );
    assert_eq!(
        erl_eval(ep, &uniq("cli_beam"), "cc", &[], &expr),
        "pong {hi,[1,2,3]}"
    );
}

#[test]
fn ping_cli_pong_and_pang_reasons() {
    let (ep, _epmd) = epmd();
    let beam = uniq("cli_target");
    let _beam = Guard(
        Command::new("erl")
            .env("ERL_EPMD_PORT", ep.to_string())
            .args(["-noshell", "-name", &beam, "-setcookie", "cc"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ping = |node: &str, cookie: &str, extra: &[&str]| {
        let out = Command::new(ERLKUBE)
            .args([
                "ping",
                node,
                "--cookie",
                cookie,
                "--epmd-port",
                &ep.to_string(),
            ])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Wait for the BEAM to register.
    let mut last = ping(&beam, "cc", &[]);
    for _ in 0..100 {
        if last.0 == Some(0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        last = ping(&beam, "cc", &[]);
    }
    assert_eq!((last.0, last.1.as_str()), (Some(0), "pong"), "{}", last.2);

    let (code, out, err) = ping(&beam, "wrong", &[]);
    assert_eq!((code, out.as_str()), (Some(1), "pang"));
    assert!(err.contains("cookie"), "{err}");

    let (code, out, err) = ping(&uniq("nobody"), "cc", &[]);
    assert_eq!((code, out.as_str()), (Some(1), "pang"));
    assert!(err.contains("no epmd entry"), "{err}");

    let closed = free_port();
    let (code, out, err) = ping(&uniq("closed"), "cc", &["--port", &closed.to_string()]);
    assert_eq!((code, out.as_str()), (Some(1), "pang"));
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn frozen_rust_node_is_dropped_by_the_beam_within_the_tick_window() {
    let (ep, _epmd) = epmd();
    let rust = uniq("cli_frozen");
    let node = rust_node(ep, &rust, "cc", &["--net-ticktime", "4"]);
    let pid = node.0.id().to_string();
    // The BEAM connects, idles three windows (ticks keep the link), then
    // the Rust node is stopped and the BEAM must see nodedown.
    let expr = format!(
        "net_kernel:monitor_nodes(true), pong = net_adm:ping('{rust}'), \
         Idle = receive {{nodedown, _}} -> down after 12000 -> up end, \
         os:cmd(\"kill -STOP {pid}\"), \
         Down = receive {{nodedown, '{rust}'}} -> nodedown after 12000 -> still_up end, \
         os:cmd(\"kill -CONT {pid}\"), io:format(\"~p ~p~n\", [Idle, Down])"
    );
    let out = erl_eval(
        ep,
        &uniq("cli_watch"),
        "cc",
        &["-kernel", "net_ticktime", "4"],
        &expr,
    );
    // The BEAM also logs "not responding" to stdout; the verdict is the last line.
    assert_eq!(out.lines().last(), Some("up nodedown"), "{out}");
}

#[test]
fn sigterm_stops_the_node() {
    let (ep, _epmd) = epmd();
    let mut node = rust_node(ep, &uniq("cli_term"), "cc", &[]);
    let pid = node.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = node.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
