//! A minimal HTTP/1.1 server for the agent's GET endpoints: one
//! request per connection (`Connection: close`), request heads up to 8 KiB,
//! 5 s to send one, at most 64 connections at once. Enough for kubelet
//! probes and a Prometheus scraper without a web framework. Handlers are
//! async, so one may wait (`/drain` answers when the drain is over).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// An answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Response {
    /// A response with `status`, `content_type` and `body`.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
        }
    }
}

const MAX_HEAD: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Serves `handler(path)` on `listener` until the task is dropped.
pub async fn serve<H, F>(listener: TcpListener, handler: H)
where
    H: Fn(String) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send,
{
    let handler = Arc::new(handler);
    let limit = Arc::new(Semaphore::new(64));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = one(stream, peer, &*handler).await {
                tracing::debug!(%peer, error = %e, "http connection failed");
            }
        });
    }
}

async fn one<H, F>(mut stream: TcpStream, _peer: SocketAddr, handler: &H) -> std::io::Result<()>
where
    H: Fn(String) -> F,
    F: Future<Output = Response>,
{
    let mut buf = Vec::with_capacity(512);
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break Some(p);
        }
        if buf.len() >= MAX_HEAD {
            break None;
        }
        let mut chunk = [0u8; 1024];
        let n = match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let (resp, head_only) = match head_end {
        None => (
            Response::new(431, "text/plain", "request head too large\n"),
            false,
        ),
        Some(end) => {
            let head = String::from_utf8_lossy(&buf[..end]);
            let line = head.lines().next().unwrap_or("");
            let mut parts = line.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(m @ ("GET" | "HEAD")), Some(target), Some(v)) if v.starts_with("HTTP/1.") => {
                    let path = target.split('?').next().unwrap_or(target);
                    (handler(path.to_owned()).await, m == "HEAD")
                }
                (Some(_), Some(_), Some(v)) if v.starts_with("HTTP/1.") => (
                    Response::new(405, "text/plain", "only GET and HEAD\n"),
                    false,
                ),
                _ => (
                    Response::new(400, "text/plain", "bad request line\n"),
                    false,
                ),
            }
        }
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    if !head_only {
        out.push_str(&resp.body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn request(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn answers_get_head_and_rejects_the_rest() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(serve(l, |p: String| async move {
            match p.as_str() {
                "/healthz" => Response::new(200, "text/plain", "ok\n"),
                _ => Response::new(404, "text/plain", "no\n"),
            }
        }));
        let r = request(addr, b"GET /healthz?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nok\n"),
            "{r}"
        );
        let r = request(addr, b"HEAD /healthz HTTP/1.0\r\n\r\n").await;
        assert!(
            r.contains("Content-Length: 3\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        let r = request(addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = request(addr, b"POST /healthz HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
        let r = request(addr, b"garbage\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
        // A head that never ends within the limit (exactly the limit, so
        // the server has read it all when it answers).
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        let r = request(addr, &big).await;
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        // Still serving after bad input.
        let r = request(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        task.abort();
    }
}
