//! The agent's HTTP endpoints (`/healthz`, `/readyz`, `/metrics`,
//! `/cluster`) served by [`erlkube_http`] (hyper, with a whole-request
//! deadline, a write-idle limit and a connection limit answering 503).
//! The router is async, so an endpoint may wait.

use std::sync::{Arc, Mutex};

use erlkube_http::{text, Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::status::Status;

/// Serves the endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, status: Arc<Mutex<Status>>) {
    erlkube_http::serve(
        "agent",
        listener,
        erlkube_http::Limits::default(),
        move |req| route(status.clone(), req),
        std::future::pending(),
    )
    .await
}

/// Answers one request.
pub async fn route(status: Arc<Mutex<Status>>, req: Request) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET and HEAD\n",
        );
    }
    let s = status.lock().unwrap();
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            let unready = |why: String| text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", why);
            if s.ready() {
                text(StatusCode::OK, "text/plain", "ready\n")
            } else if !s.beam_up {
                unready("not ready: the node is not up\n".into())
            } else if s.discovered.is_none() {
                unready("not ready: no discovery answer yet\n".into())
            } else {
                unready(format!(
                    "not ready: connected to {} of {} discovered peers\n",
                    s.connected_discovered(),
                    s.discovered.as_ref().map_or(0, |d| d.len())
                ))
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
            "not found; try /healthz /readyz /metrics /cluster\n",
        ),
    }
}
