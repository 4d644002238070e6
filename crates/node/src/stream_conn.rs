//! The connection loop over a byte stream that is not a bare TCP socket
//! (TLS over TCP). The same job as [`crate::connection`]'s loop: read into
//! the sans-IO [`Connection`], dispatch, write the outbound queue in
//! batches, tick; but through `AsyncRead`/`AsyncWrite`, since a TLS
//! session cannot be written by senders directly (its queue is
//! [`OutQueue::task_written`](crate::outq::OutQueue::task_written)). The
//! plain-TCP loop is left as it is.

use std::sync::Arc;
use std::time::Duration;

use erlkube_proto::dist::Connection;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::connection::connection_ended;
use crate::dispatch::{dispatch_all, Staged};
use crate::handshake::now;
use crate::{ConnHandle, DownReason, Inner};

/// A byte stream a connection can run over.
pub(crate) trait DistStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> DistStream for T {}

/// The read buffer: a TLS record carries at most 16 KiB of plaintext, and
/// one read returns what the records already received hold.
const READ_BUF: usize = 64 * 1024;

pub(crate) async fn run(
    inner: Arc<Inner>,
    stream: Box<dyn DistStream>,
    mut conn: Connection,
    handle: ConnHandle,
) {
    let peer = conn.peer_node().to_owned();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let reason = stream_loop(&inner, &mut rd, &mut wr, &mut conn, &handle).await;
    handle.tx.close();
    // TLS close_notify, bounded: a peer that stopped reading must not hold
    // the nodedown.
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
    if matches!(reason, DownReason::Disconnected | DownReason::Shutdown) {
        // Closed by this node: wait (bounded) for the peer to close its
        // end too (see `Conns::closing`; on shutdown, so that no reset
        // discards the last frames, as in `connection::run_connection`).
        let drain = async {
            let mut buf = [0u8; 4096];
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(crate::connection::CLOSE_WAIT, drain).await;
    }
    connection_ended(&inner, &peer, &handle, reason);
}

/// Writes `buf` if it has bytes (`Some(n)` written), else flushes what
/// the stream buffered (`None`).
async fn write_or_flush<W: AsyncWrite + Unpin>(
    wr: &mut W,
    buf: &[u8],
) -> std::io::Result<Option<usize>> {
    if buf.is_empty() {
        wr.flush().await.map(|()| None)
    } else {
        wr.write(buf).await.map(Some)
    }
}

async fn stream_loop<R, W>(
    inner: &Arc<Inner>,
    rd: &mut R,
    wr: &mut W,
    conn: &mut Connection,
    handle: &ConnHandle,
) -> DownReason
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let outq = &handle.tx;
    let mut buf = vec![0u8; READ_BUF];
    let mut batch: Vec<u8> = Vec::new();
    let mut written = 0usize;
    // Bytes handed to the stream but maybe still in its buffer.
    let mut unflushed = false;
    let mut shutdown = inner.shutdown.subscribe();
    if let Some(e) = conn.error() {
        return e.clone().into();
    }
    let mut staged = Staged::default();
    if let Err(e) = dispatch_all(inner, conn, &mut staged, &handle.kill) {
        return e.into();
    }
    crate::connection::start_spawned(conn, &mut staged, outq);
    let mut deadline = conn.poll_timeout().map(tokio::time::Instant::from_std);
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let sleep = tokio::time::sleep_until(deadline.unwrap_or(far));
    tokio::pin!(sleep);
    loop {
        if let Some(t) = conn.poll_transmit() {
            outq.push_raw(&t);
        }
        if written == batch.len() && outq.take(&mut batch) {
            written = 0;
        }
        let writing = written < batch.len();
        let next = conn.poll_timeout().map(tokio::time::Instant::from_std);
        if next != deadline {
            deadline = next;
            if let Some(d) = deadline {
                sleep.as_mut().reset(d);
            }
        }
        // Every branch is cancel-safe: `read` and `write` either complete
        // or leave the stream as it was; `flush` can be repeated.
        tokio::select! {
            r = rd.read(&mut buf) => {
                match r {
                    Ok(0) => return DownReason::ClosedByPeer,
                    Ok(n) => {
                        if let Err(e) = conn.handle_input(&buf[..n], now()) {
                            tracing::warn!(error = %e, "closing connection: bad input");
                            return e.into();
                        }
                        if let Err(e) = dispatch_all(inner, conn, &mut staged, &handle.kill) {
                            return e.into();
                        }
                        crate::connection::start_spawned(conn, &mut staged, outq);
                    }
                    Err(e) => return DownReason::read(&e),
                }
            },
            r = write_or_flush(wr, &batch[written..]), if writing || unflushed => {
                match r {
                    Ok(Some(0)) => {
                        let e = std::io::Error::from(std::io::ErrorKind::WriteZero);
                        return DownReason::write(&e);
                    }
                    Ok(Some(n)) => {
                        written += n;
                        unflushed = true;
                    }
                    Ok(None) => {
                        unflushed = false;
                        conn.note_write(now());
                    }
                    Err(e) => return DownReason::write(&e),
                }
            },
            _ = outq.queued(), if !writing && !unflushed => {},
            _ = &mut sleep, if deadline.is_some() => {
                if let Err(e) = conn.handle_timeout(now()) {
                    tracing::warn!(error = %e, "closing connection");
                    return e.into();
                }
                deadline = None;
            }
            _ = handle.kill.notified() => return DownReason::Disconnected,
            _ = shutdown.changed() => {
                // What the node queued before stopping goes out first.
                let flush = async {
                    loop {
                        if written < batch.len() && wr.write_all(&batch[written..]).await.is_err() {
                            return;
                        }
                        if !outq.take(&mut batch) {
                            let _ = wr.flush().await;
                            return;
                        }
                        written = 0;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
                return DownReason::Shutdown;
            }
        }
    }
}
