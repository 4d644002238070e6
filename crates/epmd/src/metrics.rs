//! The daemon's counters (`prometheus-client` metrics) and their HTTP
//! endpoint (`GET /metrics`, Prometheus text format 0.0.4) on
//! [`erlkube_http`].

use std::future::Future;
use std::sync::Arc;

use erlkube_http::{text, Method, StatusCode};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

const KINDS: [&str; 7] = [
    "alive2",
    "port_please2",
    "names",
    "dump",
    "kill",
    "stop",
    "watch",
];

type Labels = [(&'static str, &'static str); 1];

/// The daemon's counters. Cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    /// The family's counter of each of [`KINDS`] (same values), so that a
    /// request is counted without the family's lock and hash.
    by_kind: [Counter; KINDS.len()],
    errors: Family<Labels, Counter>,
    connections_total: Counter,
    connections_open: Gauge,
    registered: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            by_kind: Default::default(),
            errors: Family::default(),
            connections_total: Counter::default(),
            connections_open: Gauge::default(),
            registered: Gauge::default(),
        };
        // Every request type shows, at 0 until seen.
        for (i, k) in KINDS.iter().enumerate() {
            m.by_kind[i] = m.requests.get_or_create(&[("type", k)]).clone();
        }
        // `register` adds the help text's final period and counters' `_total`.
        m.registry.register(
            "erlkube_epmd_registered_nodes",
            "Nodes currently registered",
            m.registered.clone(),
        );
        m.registry.register(
            "erlkube_epmd_requests",
            "Requests received, by type",
            m.requests.clone(),
        );
        m.registry.register(
            "erlkube_epmd_errors",
            "Connections closed because of an error, by reason",
            m.errors.clone(),
        );
        m.registry.register(
            "erlkube_epmd_connections",
            "Connections accepted",
            m.connections_total.clone(),
        );
        m.registry.register(
            "erlkube_epmd_connections_open",
            "Connections open now",
            m.connections_open.clone(),
        );
        m
    }
}

impl Metrics {
    /// Counts a request of `kind` (see `Request::kind`).
    pub fn request(&self, kind: &str) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            self.by_kind[i].inc();
        }
    }

    /// Counts an error (a closed connection) by reason.
    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&[("reason", reason)]).inc();
    }

    /// A connection was accepted.
    pub fn connection_opened(&self) {
        self.connections_total.inc();
        self.connections_open.inc();
    }

    /// A connection was closed.
    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    /// Sets the registered-nodes gauge.
    pub fn set_registered(&self, n: usize) {
        self.registered.set(n as i64);
    }

    /// Requests of `kind` counted so far.
    pub fn requests(&self, kind: &str) -> u64 {
        KINDS
            .iter()
            .find(|k| **k == kind)
            .map_or(0, |k| self.requests.get_or_create(&[("type", k)]).get())
    }

    /// Errors with `reason` counted so far.
    pub fn errors(&self, reason: &'static str) -> u64 {
        self.errors
            .get(&[("reason", reason)])
            .map_or(0, |c| c.get())
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> u64 {
        self.connections_open.get().max(0) as u64
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut s = String::new();
        prometheus_text::encode(&mut s, &self.registry).expect("writing to a String cannot fail");
        s
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves
/// (anything else gets 404 or 405), under [`erlkube_http::Limits`]'
/// defaults: a request must arrive whole within 5 s, at most 4,096
/// connections, 503 past them.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    erlkube_http::serve(
        "epmd-metrics",
        listener,
        erlkube_http::Limits::default(),
        move |req| {
            let metrics = metrics.clone();
            async move {
                match (req.method(), req.uri().path()) {
                    (&Method::GET | &Method::HEAD, "/metrics") => text(
                        StatusCode::OK,
                        prometheus_text::CONTENT_TYPE,
                        metrics.render(),
                    ),
                    (&Method::GET | &Method::HEAD, _) => text(
                        StatusCode::NOT_FOUND,
                        "text/plain",
                        "not found; try /metrics\n",
                    ),
                    _ => text(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "text/plain",
                        "only GET and HEAD\n",
                    ),
                }
            }
        },
        shutdown,
    )
    .await
}
