//! The netns bed's agent pods, shared by the bed tests that run the real
//! `erlkube agent` beside a plain `erl` in each pod (partitions, Mnesia).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use erlkube_testbed::harness::{agent_command, wait_until};
use erlkube_testbed::process::Guard;
use erlkube_testbed::{Bed, PodErl};

use super::http_get_async;

/// Where every pod's agent serves its HTTP endpoints.
pub const HTTP_PORT: u16 = 9568;
/// Liveness bound of each wait (not a performance assertion).
pub const LIMIT: Duration = Duration::from_secs(120);
/// Liveness bound of one expression evaluated on a pod's node.
pub const EVAL: Duration = Duration::from_secs(60);

/// An `erlkube agent` inside a pod (killed on drop), its log kept.
pub struct AgentProc {
    _guard: Guard,
    /// Every line the agent wrote to standard error so far.
    pub log: Arc<Mutex<Vec<String>>>,
    /// The agent's HTTP endpoints.
    pub http: SocketAddr,
}

impl AgentProc {
    /// The last `n` lines of the agent's log.
    pub fn tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(n)..].join("\n")
    }

    /// Sends `signal` to the agent (15: SIGTERM, its drain by the signal).
    pub fn signal(&self, signal: i32) {
        self._guard.signal(signal);
    }

    /// Whether some line of the agent's log contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }
}

/// Starts the agent in pod `index` for its node, with DNS A discovery of
/// the bed and short intervals; `overrides` set or replace variables.
pub fn spawn_agent(bed: &Bed, index: u32, overrides: &[(&str, &str)]) -> AgentProc {
    let pod = bed.pod(index);
    let http = format!("0.0.0.0:{HTTP_PORT}");
    let mut cmd = agent_command(bed, index, env!("CARGO_BIN_EXE_erlkube"), &http);
    cmd.envs([
        ("ERLKUBE_AGENT_WAIT_INTERVAL", "200ms"),
        ("ERLKUBE_DISCOVERY_INTERVAL", "500ms"),
        ("ERLKUBE_DISCOVERY_TIMEOUT", "1s"),
        ("ERLKUBE_FORMATION_PARTITION_CHECK", "1s"),
        ("ERLKUBE_FORMATION_CHECK_INTERVAL", "500ms"),
        ("NO_COLOR", "1"),
        ("RUST_LOG", "info"),
    ])
    .envs(overrides.iter().copied())
    .stderr(Stdio::piped());
    let mut guard = Guard::spawn(&mut cmd).expect("spawn erlkube agent");
    let stderr = guard.child_mut().stderr.take().expect("piped");
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            l.lock().unwrap().push(line);
        }
    });
    AgentProc {
        _guard: guard,
        log,
        http: SocketAddr::new(std::net::IpAddr::V4(pod.ipv4), HTTP_PORT),
    }
}

/// One sample of the agent's `/metrics` (0 when absent or unreachable).
pub async fn metric(a: &AgentProc, name: &str) -> f64 {
    let Ok((200, body)) = http_get_async(a.http, "/metrics").await else {
        return 0.0;
    };
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `f` holds, polling every 100 ms; past `LIMIT` it panics
/// with `what` and `dump`. Returns how long it took.
pub async fn wait_for<F, Fut>(what: &str, dump: impl Fn() -> String, f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_until(what, LIMIT, Duration::from_millis(100), dump, f).await
}

/// Evaluates `expr` on the pod's node (bound `EVAL`), panicking with the
/// node's output on failure.
pub async fn eval(erl: &PodErl, expr: &str) -> String {
    erl.eval(expr, EVAL)
        .await
        .unwrap_or_else(|e| panic!("{} on {}: {e}\n{}", expr, erl.name(), erl.output()))
}
