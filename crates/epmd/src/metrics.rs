//! Counters and a tiny HTTP responder serving them in Prometheus text
//! format (`GET /metrics`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const KINDS: [&str; 6] = ["alive2", "port_please2", "names", "dump", "kill", "stop"];

/// The daemon's counters. Cheap to update from any task.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [AtomicU64; 6],
    errors: Mutex<BTreeMap<&'static str, u64>>,
    connections_total: AtomicU64,
    connections_open: AtomicU64,
    registered: AtomicU64,
}

impl Metrics {
    /// Counts a request of `kind` (see `Request::kind`).
    pub fn request(&self, kind: &str) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            self.requests[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an error (a closed connection) by reason.
    pub fn error(&self, reason: &'static str) {
        *self.errors.lock().unwrap().entry(reason).or_default() += 1;
    }

    /// A connection was accepted.
    pub fn connection_opened(&self) {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was closed.
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets the registered-nodes gauge.
    pub fn set_registered(&self, n: usize) {
        self.registered.store(n as u64, Ordering::Relaxed);
    }

    /// Requests of `kind` counted so far.
    pub fn requests(&self, kind: &str) -> u64 {
        KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.requests[i].load(Ordering::Relaxed))
    }

    /// Errors with `reason` counted so far.
    pub fn errors(&self, reason: &str) -> u64 {
        self.errors
            .lock()
            .unwrap()
            .get(reason)
            .copied()
            .unwrap_or(0)
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP erlkube_epmd_registered_nodes Nodes currently registered.\n\
             # TYPE erlkube_epmd_registered_nodes gauge\n\
             erlkube_epmd_registered_nodes {}",
            self.registered.load(Ordering::Relaxed)
        );
        s.push_str(
            "# HELP erlkube_epmd_requests_total Requests received, by type.\n\
             # TYPE erlkube_epmd_requests_total counter\n",
        );
        for (i, k) in KINDS.iter().enumerate() {
            let _ = writeln!(
                s,
                "erlkube_epmd_requests_total{{type=\"{k}\"}} {}",
                self.requests[i].load(Ordering::Relaxed)
            );
        }
        s.push_str(
            "# HELP erlkube_epmd_errors_total Connections closed because of an error, by reason.\n\
             # TYPE erlkube_epmd_errors_total counter\n",
        );
        for (reason, n) in self.errors.lock().unwrap().iter() {
            let _ = writeln!(s, "erlkube_epmd_errors_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            s,
            "# HELP erlkube_epmd_connections_total Connections accepted.\n\
             # TYPE erlkube_epmd_connections_total counter\n\
             erlkube_epmd_connections_total {}\n\
             # HELP erlkube_epmd_connections_open Connections open now.\n\
             # TYPE erlkube_epmd_connections_open gauge\n\
             erlkube_epmd_connections_open {}",
            self.connections_total.load(Ordering::Relaxed),
            self.connections_open.load(Ordering::Relaxed)
        );
        s
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves. Anything
/// else gets 404; requests must arrive within 5 s and 8 KiB.
pub async fn serve(
    listener: TcpListener,
    metrics: std::sync::Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(512);
            let head = tokio::time::timeout(Duration::from_secs(5), async {
                let mut chunk = [0u8; 1024];
                loop {
                    let n = stream.read(&mut chunk).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        return Some(());
                    }
                    if buf.len() > 8192 {
                        return None;
                    }
                }
            })
            .await;
            if !matches!(head, Ok(Some(()))) {
                tracing::debug!(%peer, "metrics request incomplete");
                return;
            }
            let first = buf.split(|&b| b == b'\n').next().unwrap_or_default();
            let mut parts = first.split(|&b| b == b' ');
            let (method, path) = (parts.next(), parts.next());
            let path = path.map(|p| p.split(|&b| b == b'?').next().unwrap_or_default());
            let resp = if method == Some(b"GET") && path == Some(b"/metrics") {
                let body = metrics.render();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
            };
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
