//! Helpers shared by the agent's tests and its membership bench (which
//! includes this file with `#[path]`).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use erlkube_agent::{resolve_agent, Agent, AgentConfig};
use erlkube_testkit::unique_name;

/// An agent for the local `node` (long name on 127.0.0.1, `cookie`),
/// with its HTTP server on a free loopback port and static discovery of
/// `node` alone (the engine wants no peer, so every peer the agent reports
/// was connected by someone else). `overrides` replace or add
/// `ERLKUBE_*` settings.
pub fn local_config(node: &str, cookie: &str, overrides: &[(&str, &str)]) -> AgentConfig {
    let mut env = vec![
        ("RELEASE_NODE", node.to_owned()),
        ("RELEASE_COOKIE", cookie.to_owned()),
        (
            "ERLKUBE_AGENT_NAME",
            format!("{}@127.0.0.1", unique_name("agent")),
        ),
        ("ERLKUBE_AGENT_HTTP", "127.0.0.1:0".to_owned()),
        ("ERLKUBE_AGENT_WAIT_INTERVAL", "100ms".to_owned()),
        ("ERLKUBE_DISCOVERY_STRATEGY", "static".to_owned()),
        ("ERLKUBE_DISCOVERY_STATIC_NODES", node.to_owned()),
    ];
    for (k, v) in overrides {
        env.retain(|(key, _)| key != k);
        env.push((k, v.to_string()));
    }
    resolve_agent(
        None,
        env.into_iter().map(|(k, v)| (k.to_owned(), v)),
        "localhost",
        |_| Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        std::process::id(),
    )
    .expect("agent config")
}

/// The body of `GET path` from the agent's HTTP server.
pub fn http_body(http: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&http, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// An agent running on its own runtime; stopped on drop.
pub struct RunningAgent {
    pub http: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    rt: tokio::runtime::Runtime,
}

impl RunningAgent {
    pub fn start(config: AgentConfig) -> RunningAgent {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let agent = rt.block_on(Agent::start(config)).expect("agent");
        let http = agent.http_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(async move {
            agent
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("agent run");
        });
        RunningAgent {
            http,
            stop: Some(stop),
            task: Some(task),
            rt,
        }
    }

    /// The body of `GET path`.
    pub fn get(&self, path: &str) -> String {
        http_body(self.http, path)
    }

    /// A counter or gauge from `/metrics`.
    pub fn metric(&self, name: &str) -> Option<u64> {
        self.get("/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Stops the agent and waits (up to 10 s) for it to end.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), t).await });
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.stop();
    }
}
