//! The agent's HTTP endpoints (`/healthz`, `/readyz`, `/metrics`,
//! `/cluster`, `/drain`) served by [`erlkube_http`] (hyper, with a
//! whole-request deadline, a write-idle limit and a connection limit
//! answering 503). The router is async, so an endpoint may wait: `/drain`
//! answers when the drain is over.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use erlkube_http::{text, Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::runtime::DrainControl;
use crate::status::{Drain, Status};

/// Serves the endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, status: Arc<Mutex<Status>>, drain: DrainControl) {
    erlkube_http::serve(
        "agent",
        listener,
        erlkube_http::Limits::default(),
        move |req| route(status.clone(), drain.clone(), req),
        std::future::pending(),
    )
    .await
}

/// `GET /drain`: starts the drain (or joins the one under way) and answers
/// once the node has left the cluster (a preStop hook's request).
async fn drain_endpoint(d: &DrainControl) -> Response {
    d.waiting.fetch_add(1, Ordering::SeqCst);
    d.fence.store(true, Ordering::SeqCst);
    d.start("GET /drain");
    d.left().await;
    let r = text(
        StatusCode::OK,
        "text/plain",
        format!(
            "drained: the node left the cluster after a grace of {:?}\n",
            d.grace
        ),
    );
    // Counted down once the answer is built; the shutdown path gives the
    // server a moment to write it.
    d.waiting.fetch_sub(1, Ordering::SeqCst);
    r
}

/// Answers one request.
pub async fn route(status: Arc<Mutex<Status>>, drain: DrainControl, req: Request) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET and HEAD\n",
        );
    }
    if req.uri().path() == "/drain" {
        return drain_endpoint(&drain).await;
    }
    let s = status.lock().unwrap();
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            let unready = |why: String| text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", why);
            let q = s.quorum_state();
            if s.ready() {
                let tables = match &s.mnesia {
                    Some(m) => format!("; mnesia: replicas loaded: {}", m.tables.join(", ")),
                    None => String::new(),
                };
                text(
                    StatusCode::OK,
                    "text/plain",
                    format!("ready: {q}{tables}\n"),
                )
            } else if s.drain == Drain::Draining {
                unready(
                    "not ready: draining (the node stays connected for agent.drain_grace, then leaves)\n"
                        .into(),
                )
            } else if s.drain == Drain::Left {
                unready("not ready: drained (the node left the cluster)\n".into())
            } else if !s.beam_up {
                unready("not ready: the node is not up\n".into())
            } else if s.discovered.is_none() {
                unready("not ready: no discovery answer yet\n".into())
            } else if let Some(m) = s.mnesia.as_ref().filter(|m| q.met() && !m.ready()) {
                let why = m.why_not_ready();
                unready(format!("not ready: mnesia: {why}\n"))
            } else if s.quorum == erlkube_discovery::Quorum::All {
                unready(format!(
                    "not ready: connected to {} of {} discovered peers\n",
                    s.connected_discovered(),
                    s.discovered.as_ref().map_or(0, |d| d.len())
                ))
            } else {
                unready(format!("not ready: {q}\n"))
            }
        }
        "/metrics" => text(
            StatusCode::OK,
            crate::status::METRICS_CONTENT_TYPE,
            s.prometheus(),
        ),
        "/cluster" => text(StatusCode::OK, "application/json", s.json()),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /healthz /readyz /metrics /cluster /drain\n",
        ),
    }
}
