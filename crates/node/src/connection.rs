//! The connection loop: one task per peer that reads into the sans-IO
//! [`Connection`] (framing, ticks, atom cache, fragments), hands what it
//! decoded to [`crate::dispatch`], and writes the outbound queue in
//! batches. Records the connection in the table (nodeup) and removes it
//! when the loop ends (nodedown with its reason).

use std::sync::Arc;

use erlkube_proto::dist::frame::OutboundEncoder;
use erlkube_proto::dist::{Connection, ConnectionConfig, Established};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::dispatch::{dispatch_all, Staged};
use crate::handshake::now;
use crate::outq::OutQueue;
use crate::{ConnHandle, DownReason, Inner, NodeEvent};

/// What a connection runs over once the handshake is done.
pub(crate) enum Transport {
    /// Plain TCP: the loop below, with direct writes by senders.
    Tcp(TcpStream),
    /// Any other byte stream (TLS over TCP): [`crate::stream_conn`].
    Stream(Box<dyn crate::stream_conn::DistStream>),
}

pub(crate) fn start_connection(
    inner: Arc<Inner>,
    transport: Transport,
    est: Established,
) -> ConnHandle {
    let encoder = OutboundEncoder::new(est.flags);
    let limit = inner.config.write_high_water;
    let (tx, transport) = match transport {
        Transport::Tcp(stream) => {
            let stream = Arc::new(stream);
            let q = OutQueue::new(stream.clone(), encoder, limit);
            (Arc::new(q), Ok(stream))
        }
        Transport::Stream(s) => (Arc::new(OutQueue::task_written(encoder, limit)), Err(s)),
    };
    let id = inner
        .next_conn
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let handle = ConnHandle {
        id,
        tx,
        published: est.is_published(),
        peer_flags: est.flags,
        kill: Arc::new(Notify::new()),
    };
    let peer = est.peer_node.clone();
    {
        // The event is sent under the lock that changes `up`, so nodeup and
        // nodedown of one peer reach subscribers in the order they happened.
        let mut conns = inner.conns.lock().expect("conns");
        conns.up.insert(peer.clone(), handle.clone());
        let _ = inner.events.send(NodeEvent::NodeUp {
            node: peer.clone(),
            hidden: !handle.published,
        });
    }
    tracing::info!(peer = %peer, hidden = !handle.published, flags = %est.flags, "nodeup");
    let span = tracing::info_span!("dist", peer = %peer, conn = id);
    let cfg = ConnectionConfig {
        net_ticktime: inner.config.net_ticktime,
        limits: inner.config.limits,
    };
    let conn = Connection::new(&est, cfg, now());
    match transport {
        Ok(stream) => {
            tokio::spawn(run_connection(inner, stream, conn, handle.clone()).instrument(span));
        }
        Err(s) => {
            tokio::spawn(crate::stream_conn::run(inner, s, conn, handle.clone()).instrument(span));
        }
    }
    handle
}

async fn run_connection(
    inner: Arc<Inner>,
    stream: Arc<TcpStream>,
    mut conn: Connection,
    handle: ConnHandle,
) {
    let peer = conn.peer_node().to_owned();
    let reason = connection_loop(&inner, &stream, &mut conn, &handle).await;
    handle.tx.close();
    if matches!(reason, DownReason::Disconnected | DownReason::Shutdown) {
        // Closed by this node: half-close and wait (bounded) for the
        // peer to close its end, so that it has let go of the connection
        // before this node dials it again (see `Conns::closing`). On
        // shutdown this also keeps the last frames: closing a socket
        // with unread bytes in its receive buffer (the peer's ticks,
        // global's sync) sends a reset that discards what was still in
        // the send buffer; after the peer's close, everything was read.
        let _ = socket2::SockRef::from(&*stream).shutdown(std::net::Shutdown::Write);
        let drain = async {
            let mut buf = [0u8; 4096];
            loop {
                if stream.readable().await.is_err() {
                    return;
                }
                match stream.try_read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, drain).await;
    }
    drop(stream);
    connection_ended(&inner, &peer, &handle, reason);
}

/// How long a connection this node closed waits for the peer to close its
/// end (a peer that stopped reading must not hold a reconnect for long).
pub(crate) const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The table and events after a connection's loop ended: nodedown when it
/// was the registered connection to `peer`.
pub(crate) fn connection_ended(
    inner: &Arc<Inner>,
    peer: &str,
    handle: &ConnHandle,
    reason: DownReason,
) {
    let was_closing = {
        let mut conns = inner.conns.lock().expect("conns");
        let ids = conns.closing.get_mut(peer);
        let was = ids.is_some_and(|ids| ids.remove(&handle.id));
        if conns.closing.get(peer).is_some_and(|ids| ids.is_empty()) {
            conns.closing.remove(peer);
        }
        was
    };
    if was_closing {
        inner.close_done.send_replace(());
    }
    if !unregister(inner, peer, Some(handle.id), &reason) {
        // A connection already replaced by a newer one to the same node
        // (after "alive"), or taken out of the table by
        // `Node::disconnect`, which sent the nodedown itself.
        tracing::info!(reason = %reason, "closed connection ended");
    }
}

/// Takes the connection to `peer` out of the table (only connection `id`,
/// if given), sends nodedown under the table's lock, closes its queue,
/// and fires what the node's going down fires (links, monitors, global).
/// Without `id` (`Node::disconnect`) the connection is also recorded in
/// `Conns::closing` until its task saw the peer close. False when there
/// was no such connection.
pub(crate) fn unregister(
    inner: &Arc<Inner>,
    peer: &str,
    id: Option<u64>,
    reason: &DownReason,
) -> bool {
    let removed = {
        let mut conns = inner.conns.lock().expect("conns");
        let registered = match (conns.up.get(peer), id) {
            (Some(h), Some(id)) => h.id == id,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !registered {
            return false;
        }
        let h = conns.up.remove(peer);
        if id.is_none() {
            // `Node::disconnect`: the connection's task waits for the
            // peer's close; dials wait for that (`Conns::closing`).
            if let Some(h) = &h {
                conns
                    .closing
                    .entry(peer.to_owned())
                    .or_default()
                    .insert(h.id);
            }
        }
        let _ = inner.events.send(NodeEvent::NodeDown {
            node: peer.to_owned(),
            reason: reason.clone(),
        });
        h
    };
    if let Some(h) = removed {
        // Senders holding the handle (the per-thread cache) stop at once.
        h.tx.close();
        h.kill.notify_one();
    }
    inner.global_node_down(peer);
    inner.node_down(peer);
    tracing::info!(peer = %peer, reason = %reason, "nodedown");
    true
}

impl Inner {
    /// `Node::disconnect`: the connection to `node` out of the table now.
    pub(crate) fn disconnect(self: &Arc<Self>, node: &str) -> bool {
        unregister(self, node, None, &DownReason::Disconnected)
    }

    /// The registered connection to `node` if it is not closing. One that
    /// is (its queue closed: replaced, or closed by the pg or global
    /// service) is unregistered here with its nodedown, so that a caller
    /// about to dial gets a new connection instead of the dying one.
    pub(crate) fn live_connection(self: &Arc<Self>, node: &str) -> Option<ConnHandle> {
        let h = self.conns.lock().expect("conns").up.get(node).cloned()?;
        if !h.tx.is_closed() {
            return Some(h);
        }
        unregister(self, node, Some(h.id), &DownReason::Disconnected);
        None
    }
}

/// Smallest and largest read buffer: an idle connection holds the small
/// one (frames of any size are assembled in the decoder, not here); it
/// doubles while reads fill it.
const READ_MIN: usize = 16 * 1024;
const READ_MAX: usize = 256 * 1024;

/// One read. A short read (fewer bytes than asked) means the socket had
/// nothing more at that moment, so tokio's read readiness is cleared
/// right away instead of by a second read that would fail with
/// WouldBlock: a syscall less per wake-up, which counts on request and
/// answer traffic. (tokio clears it only if no readiness event arrived
/// since the read began, so data that comes in meanwhile still wakes the
/// task.)
fn read_once(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut short = None;
    let r = stream.try_io(tokio::io::Interest::READABLE, || {
        let n = (&*socket2::SockRef::from(stream)).read(buf)?;
        if n > 0 && n < buf.len() {
            short = Some(n);
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match short {
        Some(n) => Ok(n),
        None => r,
    }
}

/// Reads until the socket would block (or a budget is spent), feeding
/// the core. `Ok(false)`: the peer closed.
fn read_available(
    stream: &TcpStream,
    buf: &mut Vec<u8>,
    conn: &mut Connection,
) -> Result<bool, DownReason> {
    Ok(read_available_with(stream, buf, conn, read_once)?.is_some())
}

/// One read straight from the socket, past tokio's readiness cache: what a
/// spinning connection does (the runtime's I/O driver may not have been
/// polled since the data came, when another worker holds it).
fn read_raw(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    (&*socket2::SockRef::from(stream)).read(buf)
}

/// [`read_available`] with `read` for each read: the bytes read, `None`
/// when the peer closed.
fn read_available_with(
    stream: &TcpStream,
    buf: &mut Vec<u8>,
    conn: &mut Connection,
    read: fn(&TcpStream, &mut [u8]) -> std::io::Result<usize>,
) -> Result<Option<usize>, DownReason> {
    let mut total = 0;
    for _ in 0..8 {
        match read(stream, buf) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                total += n;
                if let Err(e) = conn.handle_input(&buf[..n], now()) {
                    tracing::warn!(error = %e, "closing connection: bad input");
                    return Err(e.into());
                }
                if n == buf.len() && buf.len() < READ_MAX {
                    buf.resize(buf.len() * 2, 0);
                } else if n < buf.len() {
                    // Drained (a short read): the socket has nothing more.
                    return Ok(Some(total));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(Some(total)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DownReason::read(&e)),
        }
    }
    Ok(Some(total))
}

/// What follows a read that fed the core: senders may write directly
/// again, decoded messages go to their processes.
async fn after_read(
    inner: &Arc<Inner>,
    conn: &mut Connection,
    staged: &mut Staged,
    handle: &ConnHandle,
) -> Result<(), DownReason> {
    let outq = &handle.tx;
    outq.arm_direct();
    dispatch_all(inner, conn, staged, &handle.kill)?;
    // No turn is waited for after a start (as before processes took
    // their first step here, so that a short one could append its exit
    // to the SPAWN_REPLY's write): the task of a process started as a
    // task takes this worker next, and one that blocks it would then
    // hold the connection too (the yielded task waits for that worker).
    start_spawned(conn, staged, outq);
    Ok(())
}

/// Queues what the core has to send (the SPAWN_REPLYs among it), then
/// starts the processes SPAWN_REQUESTs created (`ProcessTask::start`): a
/// process's first signal (its exit, written by whichever worker runs
/// it) can only follow its reply.
pub(crate) fn start_spawned(
    conn: &mut Connection,
    staged: &mut Staged,
    outq: &crate::outq::OutQueue,
) {
    let spawns = staged.take_spawns();
    if spawns.is_empty() {
        return;
    }
    while let Some(t) = conn.poll_transmit() {
        outq.push_own(&t);
    }
    for task in spawns {
        task.start();
    }
}

async fn connection_loop(
    inner: &Arc<Inner>,
    stream: &TcpStream,
    conn: &mut Connection,
    handle: &ConnHandle,
) -> DownReason {
    let outq = &handle.tx;
    let mut buf = vec![0u8; READ_MIN];
    // The batch being written and its progress.
    let mut batch: Vec<u8> = Vec::new();
    let mut written = 0usize;
    let mut shutdown = inner.shutdown.subscribe();
    // Messages the core decoded before the loop (handshake leftovers).
    if let Some(e) = conn.error() {
        return e.clone().into();
    }
    let mut staged = Staged::default();
    if let Err(e) = dispatch_all(inner, conn, &mut staged, &handle.kill) {
        return e.into();
    }
    start_spawned(conn, &mut staged, outq);
    // The tick timer is armed at the connection's next deadline, and
    // re-armed only when that deadline comes earlier: it moves later on
    // every write and read, and resetting a timer takes the time
    // driver's lock. A timer that fires early finds nothing due and is
    // re-armed at the deadline then current.
    let mut armed = conn.poll_timeout().map(tokio::time::Instant::from_std);
    let far = tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365);
    let sleep = tokio::time::sleep_until(armed.unwrap_or(far));
    tokio::pin!(sleep);
    // Futures that live across turns of the loop (built once, not on
    // every turn: a `Notified` joins and leaves its waiter list under a
    // lock each time it is built, polled and dropped).
    let kill = handle.kill.notified();
    tokio::pin!(kill);
    let shutdown_changed = async {
        let _ = shutdown.changed().await;
    };
    tokio::pin!(shutdown_changed);
    // Busy-poll (opt-in): until `spin_until`, the loop yields and looks
    // again instead of sleeping until the socket is readable.
    let busy_poll = inner.config.busy_poll;
    let mut spin_until: Option<std::time::Instant> = None;
    loop {
        // The core's own frames (ticks, replies) go through the queue.
        if let Some(t) = conn.poll_transmit() {
            outq.push_own(&t);
        }
        // Write what is queued before waiting: one syscall per batch.
        if written == batch.len() && outq.take(&mut batch) {
            written = 0;
        }
        while written < batch.len() {
            match stream.try_write(&batch[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return DownReason::write(&e),
            }
            if written == batch.len() {
                conn.note_write(now());
                if outq.take(&mut batch) {
                    written = 0;
                }
            }
        }
        let writing = written < batch.len();
        let next = conn.poll_timeout().map(tokio::time::Instant::from_std);
        let rearm = match (next, armed) {
            (Some(n), Some(a)) => n < a,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if rearm {
            armed = next;
            if let Some(d) = armed {
                sleep.as_mut().reset(d);
            }
        } else if next.is_none() {
            armed = None;
        }
        // Readiness through `poll_read_ready`/`poll_write_ready`: the
        // stream's one reader (writer) waker slot, instead of a
        // `readable()` future that joins and leaves a waiter list on
        // every turn.
        let spinning = !writing && spin_until.is_some_and(|t| std::time::Instant::now() < t);
        if spinning {
            let got = match read_available_with(stream, &mut buf, conn, read_raw) {
                Ok(Some(n)) => n,
                Ok(None) => return DownReason::ClosedByPeer,
                Err(e) => return e,
            };
            if got > 0 {
                spin_until = busy_poll.map(|d| std::time::Instant::now() + d);
                if let Err(e) = after_read(inner, conn, &mut staged, handle).await {
                    return e;
                }
                continue;
            }
        }
        tokio::select! {
            r = std::future::poll_fn(|cx| stream.poll_read_ready(cx)) => {
                if let Err(e) = r {
                    return DownReason::read(&e);
                }
                match read_available(stream, &mut buf, conn) {
                    Ok(true) => {}
                    Ok(false) => return DownReason::ClosedByPeer,
                    Err(e) => return e,
                }
                if let Some(d) = busy_poll {
                    spin_until = Some(std::time::Instant::now() + d);
                }
                if let Err(e) = after_read(inner, conn, &mut staged, handle).await {
                    return e;
                }
            },
            r = std::future::poll_fn(|cx| stream.poll_write_ready(cx)), if writing => {
                if let Err(e) = r {
                    return DownReason::write(&e);
                }
            },
            _ = outq.queued(), if !writing => {},
            _ = &mut sleep, if armed.is_some() => {
                if let Err(e) = conn.handle_timeout(now()) {
                    tracing::warn!(error = %e, "closing connection");
                    return e.into();
                }
                // Re-arm at the next deadline (the same value would not).
                armed = None;
            }
            _ = &mut kill => return DownReason::Disconnected,
            // Spinning: one turn of the scheduler (tokio polls the I/O
            // driver without blocking before it runs this task again),
            // then the socket is looked at again.
            _ = tokio::task::yield_now(), if spinning => {},
            _ = &mut shutdown_changed => {
                // What the node queued before stopping (its processes'
                // `shutdown` exits) goes out before the connection closes.
                let flush = async {
                    loop {
                        while written < batch.len() {
                            if stream.writable().await.is_err() {
                                return;
                            }
                            match stream.try_write(&batch[written..]) {
                                Ok(n) => written += n,
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                                Err(_) => return,
                            }
                        }
                        if !outq.take(&mut batch) {
                            return;
                        }
                        written = 0;
                    }
                };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), flush).await;
                return DownReason::Shutdown;
            }
        }
    }
}
