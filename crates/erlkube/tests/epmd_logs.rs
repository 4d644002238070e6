//! `erlkube epmd`'s log under a flood of bad requests and hostile names
//! (the real binary on loopback, its stderr read line by line): warnings
//! name the peer, repeated ones are limited per peer with a count of
//! those suppressed, and a name from the network cannot forge a line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use erlkube_testkit::{free_port, wait_until, ChildGuard};

mod common;
use common::{http_get, ERLKUBE};

/// `erlkube epmd` with metrics, at its default log level (warnings),
/// stderr collected line by line.
struct Epmd {
    _guard: ChildGuard,
    port: u16,
    metrics: std::net::SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Epmd {
    fn start() -> Epmd {
        let port = free_port();
        let mport = free_port();
        let mut cmd = Command::new(ERLKUBE);
        cmd.args(["epmd", "-port", &port.to_string(), "-metrics"])
            .arg(format!("127.0.0.1:{mport}"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut guard = ChildGuard::spawn(&mut cmd).unwrap();
        let stderr = guard.child_mut().stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                match line {
                    Ok(line) => l.lock().unwrap().push(line),
                    Err(_) => break,
                }
            }
        });
        let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], mport));
        assert!(wait_until(Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok() && http_get(metrics, "/metrics").is_ok()
        }));
        Epmd {
            _guard: guard,
            port,
            metrics,
            lines,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn metric(&self, sample: &str) -> u64 {
        let (_, body) = http_get(self.metrics, "/metrics").unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// One request on its own connection; reads until the daemon closes.
fn send(port: u16, bytes: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.read_to_end(&mut Vec::new());
}

/// The number in `key=N` of a log line.
fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    let digits: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[test]
fn twenty_thousand_bad_requests_give_a_bounded_log_with_the_peer_and_a_count() {
    const N: u64 = 20_000;
    let d = Epmd::start();
    for _ in 0..N {
        // Request type '?' does not exist.
        send(d.port, &[0, 1, b'?']);
    }
    assert!(wait_until(Duration::from_secs(30), || d.metric(
        "erlkube_epmd_errors_total{reason=\"unknown_request\"}"
    ) == N));
    // Every bad request is either a line or counted in a summary line at
    // the end of its peer's window (10 s): wait until they add up.
    let accounted = |lines: &[String]| {
        let shown = lines.iter().filter(|l| l.contains("bad request")).count() as u64;
        let suppressed: u64 = lines
            .iter()
            .filter(|l| l.contains("suppressed repeated warnings"))
            .filter_map(|l| field(l, "suppressed"))
            .sum();
        shown + suppressed
    };
    assert!(
        wait_until(Duration::from_secs(60), || accounted(&d.lines()) == N),
        "the log does not account for {N} bad requests:\n{}",
        d.lines().join("\n")
    );
    let lines = d.lines();
    assert!(
        lines.len() <= 200,
        "{} log lines for {N} bad requests",
        lines.len()
    );
    for l in &lines {
        assert!(l.contains("peer=127.0.0.1"), "no peer address: {l}");
    }
}

#[test]
fn a_name_from_the_network_cannot_forge_a_log_line() {
    let d = Epmd::start();
    let forged = "evil\nERROR forged: all nodes down\u{1b}[2J";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = erlkube_epmd::Client::new("127.0.0.1", d.port);
    let info = |port| erlkube_epmd::NodeInfo {
        port,
        node_type: erlkube_proto::epmd::NODE_TYPE_NORMAL,
        protocol: 0,
        highest_version: 6,
        lowest_version: 5,
        name: forged.into(),
        extra: Vec::new(),
    };
    let _held = rt.block_on(client.register(info(40001))).unwrap();
    // The same name again: refused, and warned about with the name.
    assert!(rt.block_on(client.register(info(40002))).is_err());
    assert!(
        wait_until(Duration::from_secs(30), || d
            .lines()
            .iter()
            .any(|l| l.contains("registration refused"))),
        "{:?}",
        d.lines()
    );
    let lines = d.lines();
    let refused = lines
        .iter()
        .find(|l| l.contains("registration refused"))
        .unwrap();
    assert!(
        refused.contains(r#"name="evil\nERROR forged: all nodes down\u{1b}[2J""#),
        "{refused}"
    );
    assert!(refused.contains("peer=127.0.0.1"), "{refused}");
    for l in &lines {
        assert!(!l.starts_with("ERROR forged"), "forged line: {l:?}");
        assert!(!l.contains('\u{1b}'), "raw ESC in the log: {l:?}");
    }
}
