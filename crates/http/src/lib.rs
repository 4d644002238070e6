//! erlkube's small HTTP endpoints (the agent's `/healthz` `/readyz`
//! `/metrics` `/cluster`, epmd's `/metrics`) served by hyper, with the
//! limits a probe endpoint needs against slow or idle clients. Does IO
//! (tokio).
//!
//! - **Whole-request deadline**: a request head must arrive complete
//!   within [`Limits::request_deadline`] from the connection's start
//!   (hyper's `header_read_timeout`), however slowly its bytes trickle;
//!   an idle connection is closed at the same deadline.
//! - **Write-idle limit**: a response write that makes no progress for
//!   [`Limits::write_idle`] (a client that does not read) closes the
//!   connection.
//! - **Connection limit**: past [`Limits::max_connections`] a new
//!   connection is answered `503 Service Unavailable` at once and closed,
//!   and a warning is logged (at most one a second, with the count since
//!   the last).
//!
//! One request per connection (`Connection: close`), as probes and
//! scrapers use it. The handler is async: it may wait (for example until
//! a drain ends); the deadline bounds receiving the request, not the
//! handler's work.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;

pub use hyper::body::Incoming;
pub use hyper::{Method, StatusCode};

/// A request as the handler gets it.
pub type Request = hyper::Request<Incoming>;
/// A response: a body held in memory.
pub type Response = hyper::Response<Full<Bytes>>;

/// The server's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time from a connection's start to its complete request head.
    pub request_deadline: Duration,
    /// Time a response write may make no progress.
    pub write_idle: Duration,
    /// Largest request head, bytes (431 past it).
    pub max_head: usize,
}

impl Default for Limits {
    /// 4,096 connections (a probe must answer while 1,000 slow clients
    /// are held), 5 s per request, 5 s write idle, 8 KiB heads.
    fn default() -> Limits {
        Limits {
            max_connections: 4096,
            request_deadline: Duration::from_secs(5),
            write_idle: Duration::from_secs(5),
            max_head: 8192,
        }
    }
}

/// A response with `status`, `content_type` and a text `body`.
pub fn text(status: StatusCode, content_type: &'static str, body: impl Into<String>) -> Response {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

/// How many connections answered 503 because of the limit, per server;
/// logged at most once a second.
#[derive(Debug)]
struct Overflow {
    since_log: AtomicU64,
    last_log: std::sync::Mutex<Option<Instant>>,
}

impl Overflow {
    fn record(&self, name: &str, peer: std::net::SocketAddr, limit: usize) {
        let n = self.since_log.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let mut last = self.last_log.lock().unwrap();
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            *last = Some(now);
            self.since_log.store(0, Ordering::Relaxed);
            tracing::warn!(
                server = name,
                %peer,
                limit,
                refused = n,
                "http connection limit reached; answered 503 (refused counts since the last warning)"
            );
        }
    }
}

const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 36\r\nConnection: close\r\n\r\ntoo many connections; try again soon\n";

/// Serves `handler` on `listener` under `limits` until `shutdown`
/// resolves (connections already accepted finish on their own). `name`
/// names the server in logs.
pub async fn serve<H, F>(
    name: &'static str,
    listener: TcpListener,
    limits: Limits,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let handler = Arc::new(handler);
    let limit = Arc::new(Semaphore::new(limits.max_connections));
    // Connections being answered 503: bounded too, the rest just closed.
    let refusing = Arc::new(Semaphore::new(256));
    let overflow = Arc::new(Overflow {
        since_log: AtomicU64::new(0),
        last_log: std::sync::Mutex::new(None),
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, mostly: wait for some to close.
                    tracing::warn!(server = name, error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            overflow.record(name, peer, limits.max_connections);
            if let Ok(p) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    let _p = p;
                    refuse(stream).await;
                });
            }
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let io = TokioIo::new(WriteIdle::new(stream, limits.write_idle));
            let service = service_fn(move |req| {
                let fut = handler(req);
                async move { Ok::<_, std::convert::Infallible>(fut.await) }
            });
            let r = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.request_deadline)
                .max_header_size(limits.max_head)
                .max_buf_size(limits.max_head.max(8192))
                .keep_alive(false)
                .serve_connection(io, service)
                .await;
            if let Err(e) = r {
                tracing::debug!(server = name, %peer, error = %e, "http connection closed");
            }
        });
    }
}

/// Writes the 503 answer, then reads (and drops) what the client sent for
/// up to a second so the close does not reset the answer away.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(OVERLOADED).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// A stream whose writes fail with `TimedOut` after making no progress
/// for `idle`.
struct WriteIdle<S> {
    inner: S,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteIdle<S> {
    fn new(inner: S, idle: Duration) -> WriteIdle<S> {
        WriteIdle {
            inner,
            idle,
            timer: None,
        }
    }

    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Pending => {
                let idle = self.idle;
                let t = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if t.as_mut().poll(cx).is_ready() {
                    self.timer = None;
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client read nothing of the response",
                    )));
                }
                Poll::Pending
            }
            r => {
                self.timer = None;
                r
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteIdle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteIdle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    async fn start(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(
            "test",
            l,
            limits,
            |req: Request| async move {
                match (req.method(), req.uri().path()) {
                    (&Method::GET | &Method::HEAD, "/healthz") => {
                        text(StatusCode::OK, "text/plain", "ok\n")
                    }
                    (&Method::GET, "/wait") => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        text(StatusCode::OK, "text/plain", "waited\n")
                    }
                    (&Method::GET, "/big") => {
                        text(StatusCode::OK, "text/plain", "x".repeat(64 << 20))
                    }
                    _ => text(StatusCode::NOT_FOUND, "text/plain", "no\n"),
                }
            },
            async move {
                let _ = rx.await;
            },
        ));
        (addr, tx)
    }

    async fn request(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn answers_get_head_async_handlers_and_bad_requests() {
        let (addr, _stop) = start(Limits::default()).await;
        let r = request(addr, b"GET /healthz?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nok\n"),
            "{r}"
        );
        assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
        let r = request(addr, b"HEAD /healthz HTTP/1.0\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.0 200") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        let r = request(addr, b"GET /wait HTTP/1.1\r\n\r\n").await;
        assert!(r.ends_with("waited\n"), "{r}");
        let r = request(addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = request(addr, b"garbage\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(20_000, b'a');
        big.extend_from_slice(b"\r\n\r\n");
        let r = request(addr, &big).await;
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        let r = request(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }

    /// A client trickling its head one byte at a time, well within any
    /// per-read timeout, is still closed at the whole-request deadline.
    #[tokio::test]
    async fn a_trickling_client_is_closed_at_the_request_deadline() {
        let limits = Limits {
            request_deadline: Duration::from_millis(500),
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let start = Instant::now();
        let mut closed = false;
        // Bounded: 200 bytes at 20 ms, 4 s in all.
        for b in b"GET /healthz HTTP/1.1\r\nX: "
            .iter()
            .chain([b'a'; 180].iter())
        {
            if s.write_all(&[*b]).await.is_err() {
                closed = true;
                break;
            }
            let mut one = [0u8; 64];
            if let Ok(r) = tokio::time::timeout(Duration::from_millis(20), s.read(&mut one)).await {
                // EOF, an error, or a 408: the server gave up on us.
                let _ = r;
                closed = true;
                break;
            }
        }
        assert!(closed, "still open after {:?}", start.elapsed());
        assert!(start.elapsed() >= Duration::from_millis(500));
    }

    #[tokio::test]
    async fn past_the_connection_limit_new_clients_get_503_and_held_ones_stay() {
        let limits = Limits {
            max_connections: 4,
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
            held.push(s);
        }
        // The server took the four (it accepts in order; wait for a
        // fifth's answer, which can only come after the four were taken).
        let r = request(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        // A held client finishing its request is still served.
        let mut s = held.pop().unwrap();
        s.write_all(b"\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        drop(held);
        // And once they are gone, new clients are served again (bounded wait).
        let mut ok = false;
        for _ in 0..100 {
            if request(addr, b"GET /healthz HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 200")
            {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok);
    }

    /// A client that asks for a large answer and reads none of it is
    /// dropped after the write-idle limit.
    #[tokio::test]
    async fn a_client_that_reads_nothing_is_dropped_after_write_idle() {
        let limits = Limits {
            max_connections: 1,
            write_idle: Duration::from_millis(300),
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\n\r\n").await.unwrap();
        // The only slot is taken until the server gives up on `s`.
        let mut ok = false;
        for _ in 0..200 {
            if request(addr, b"GET /healthz HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 200")
            {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "the non-reading client kept the slot");
        drop(s);
    }
}
