//! The HTTP endpoints of the real binaries under attack: the agent's
//! probes answer while 1,000 slow clients are held open, and those
//! clients are closed at the whole-request deadline however slowly they
//! trickle; every metrics endpoint's output passes `promtool check
//! metrics` (Debian package `prometheus`). Loopback only: a real `erl`
//! node, OTP's epmd, `erlkube agent` and `erlkube epmd` as processes.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use erlkube_testkit::{free_port, unique_name, wait_until, ChildGuard, ErlNode, OtpEpmd};

mod common;
use common::{http_get, promtool_check, ERLKUBE};

const COOKIE: &str = "http_endpoints_cookie";
/// Liveness bound of each wait (not a performance assertion).
const WAIT: Duration = Duration::from_secs(30);

/// A real `erl` node (OTP's epmd on a free port) and `erlkube agent`
/// driving it, HTTP on a free loopback port.
struct Setup {
    _epmd: OtpEpmd,
    _node: ErlNode,
    agent: ChildGuard,
    http: SocketAddr,
}

fn setup() -> Setup {
    let epmd = OtpEpmd::start().expect("OTP epmd (is Erlang/OTP installed?)");
    let node = ErlNode::builder(&unique_name("http"))
        .epmd_port(epmd.port())
        .cookie(COOKIE)
        .start()
        .expect("start erl");
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = Command::new(ERLKUBE);
    cmd.arg("agent")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent-home")
        .env("ERL_EPMD_PORT", epmd.port().to_string())
        .env("RELEASE_NODE", node.node_name())
        .env("RELEASE_COOKIE", COOKIE)
        .env(
            "ERLKUBE_AGENT_NAME",
            format!("{}@127.0.0.1", unique_name("agent")),
        )
        .env("ERLKUBE_AGENT_HTTP", http.to_string())
        .env("ERLKUBE_AGENT_WAIT_INTERVAL", "100ms")
        .env("ERLKUBE_DISCOVERY_STRATEGY", "static")
        .env("ERLKUBE_DISCOVERY_STATIC_NODES", node.node_name())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let agent = ChildGuard::spawn(&mut cmd).expect("spawn erlkube agent");
    assert!(
        wait_until(WAIT, || http_get(http, "/readyz")
            .is_ok_and(|(s, _)| s == 200)),
        "the agent never became ready: {:?}",
        http_get(http, "/cluster")
    );
    Setup {
        _epmd: epmd,
        _node: node,
        agent,
        http,
    }
}

/// The agent's whole-request deadline for a request head
/// (`erlkube_http::Limits::default().request_deadline`).
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// True when the server has closed `s` (EOF, reset, or an answer such as
/// 408); false while it still waits for more.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 256];
    let closed = match s.read(&mut b) {
        Ok(_) => true,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn agent_probes_answer_while_1000_slow_clients_are_held_and_those_are_cut_at_the_deadline() {
    let _ = erlkube_epmd::sys::raise_nofile_limit();
    let s = setup();
    // 1,000 clients, each with a request head begun and never finished.
    let mut slow: Vec<(TcpStream, Instant)> = (0..1000)
        .map(|i| {
            let mut c = TcpStream::connect(s.http).unwrap();
            let connected = Instant::now();
            // (A server that drops excess connections fails this write;
            // the probes below then say what that costs.)
            let _ = write!(c, "GET /healthz HTTP/1.1\r\nX-Slow: {i}");
            (c, connected)
        })
        .collect();
    let mut latencies = Vec::new();
    for path in ["/healthz", "/readyz", "/healthz", "/readyz", "/metrics"] {
        let t = Instant::now();
        let (status, body) = http_get(s.http, path).expect("the probe answers");
        latencies.push(t.elapsed());
        assert_eq!(
            status, 200,
            "{path} while 1,000 slow clients are held: {body}"
        );
    }
    // None of the slow clients was turned away to make room: a client
    // found closed while younger than the deadline (its age taken after
    // the read, and the server's clock starts at its accept, later) was
    // closed early. (On a loaded machine some may have reached the
    // deadline by now; those are not evidence either way.)
    let (mut young, mut early_closed) = (0, 0);
    for (c, connected) in slow.iter_mut() {
        let closed = closed_by_server(c);
        if connected.elapsed() < REQUEST_DEADLINE {
            young += 1;
            early_closed += usize::from(closed);
        }
    }
    assert_eq!(
        early_closed, 0,
        "slow clients closed before the deadline ({young} checked while younger than it)"
    );
    eprintln!(
        "probe latencies with 1,000 slow clients held: {:?}; {young} slow clients checked open before the deadline",
        latencies
    );
    // Now they trickle one byte every 500 ms (never idle for long, as a
    // per-read timeout would want); the whole-request deadline (5 s)
    // closes every one. Bounded: 40 rounds, 20 s.
    let mut open: Vec<TcpStream> = slow.into_iter().map(|(c, _)| c).collect();
    for _ in 0..40 {
        open.retain_mut(|c| c.write_all(b"a").is_ok() && !closed_by_server(c));
        if open.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        open.is_empty(),
        "{} trickling clients still open after 20 s",
        open.len()
    );
    // And the agent still serves.
    assert_eq!(http_get(s.http, "/healthz").unwrap().0, 200);
}

#[test]
fn every_metrics_endpoint_passes_promtool() {
    // The agent, driving a real node.
    let s = setup();
    let (status, body) = http_get(s.http, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\nerlkube_agent_ready 1\n"), "{body}");
    promtool_check("the agent's /metrics", &body);

    // erlkube epmd, after a registration, a lookup and a bad request.
    let port = free_port();
    let mport = free_port();
    let mut cmd = Command::new(ERLKUBE);
    cmd.args(["epmd", "-port", &port.to_string(), "-metrics"])
        .arg(format!("127.0.0.1:{mport}"))
        .env_remove("ERL_EPMD_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _epmd = ChildGuard::spawn(&mut cmd).unwrap();
    let maddr = SocketAddr::from(([127, 0, 0, 1], mport));
    assert!(wait_until(WAIT, || http_get(maddr, "/metrics").is_ok()));
    let node = ErlNode::builder(&unique_name("promtool"))
        .epmd_port(port)
        .cookie(COOKIE)
        .start()
        .expect("erl registers with erlkube epmd");
    let mut bad = TcpStream::connect(("127.0.0.1", port)).unwrap();
    bad.write_all(&[0, 1, b'?']).unwrap();
    let _ = bad.read_to_end(&mut Vec::new());
    let (status, body) = http_get(maddr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("\nerlkube_epmd_registered_nodes 1\n")
            && body.contains("erlkube_epmd_errors_total{reason=\"unknown_request\"} 1\n"),
        "{body}"
    );
    promtool_check("erlkube epmd's /metrics", &body);
    drop(node);
}

/// The TCP sockets process `pid` listens on: its socket inodes matched
/// against `/proc/net/tcp{,6}` entries in state LISTEN.
fn listening_sockets(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address st ... inode
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                out.push(f[1].to_owned());
            }
        }
    }
    out
}

/// The agent's own (hidden) node only dials out: it listens on loopback.
#[test]
fn the_agent_listens_on_loopback_only() {
    let s = setup();
    let socks = listening_sockets(s.agent.id());
    // The HTTP port (bound to 127.0.0.1 here) and the node's listener.
    assert!(socks.len() >= 2, "{socks:?}");
    for a in &socks {
        // Hex address:port as the kernel writes it: 127.0.0.1 is
        // 0100007F, ::1 is 00000000000000000000000001000000.
        let (addr, _port) = a.split_once(':').unwrap();
        assert!(
            addr == "0100007F" || addr == "00000000000000000000000001000000",
            "the agent listens on {a} (not loopback): {socks:?}"
        );
    }
}
