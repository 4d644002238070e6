//! Connection tasks: the handshake over TCP, then one loop per peer that
//! reads, writes, ticks and dispatches, all through the sans-IO core.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use erlkube_etf::{Atom, Term};
use erlkube_proto::dist::control::{ControlMessage, DistMessage, LazyMessage, LazyPayload};
use erlkube_proto::dist::frame::OutboundEncoder;
use erlkube_proto::dist::handshake::{
    simultaneous_status, Acceptor, HandshakeConfig, Initiator, Status, Step,
};
use erlkube_proto::dist::{
    Connection, ConnectionConfig, Established, HandshakeError, HandshakeEvent,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tracing::Instrument;

use crate::mailbox::{Batch, Mailbox};
use crate::{epmd, ConnHandle, ConnectError, Inner, NodeEvent, Outbound};

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn handshake_config(inner: &Inner) -> HandshakeConfig {
    let cfg = HandshakeConfig::new(
        inner.name.as_str(),
        inner.config.cookie.clone(),
        inner.creation,
    );
    let mut cfg = if inner.config.hidden {
        cfg.hidden()
    } else {
        cfg
    };
    cfg.step_timeout = inner.config.setup_timeout;
    cfg
}

/// Accepts connections until shutdown.
pub(crate) async fn accept_loop(
    inner: Weak<Inner>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Some(node) = inner.upgrade() else { return };
                match r {
                    Ok((stream, addr)) => {
                        let span = tracing::info_span!("dist_accept", %addr);
                        tokio::spawn(accept_one(node, stream).instrument(span));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// One side of the handshake, as the driver sees it.
trait Side {
    fn input(&mut self, data: &[u8], now: Instant) -> Result<(), HandshakeError>;
    fn transmit(&mut self) -> Option<Vec<u8>>;
    fn event(&mut self) -> Option<HandshakeEvent>;
    fn timeout(&self) -> Option<Instant>;
    fn fire(&mut self, now: Instant) -> Result<(), HandshakeError>;
    fn current_step(&self) -> Step;
    fn decide(&mut self, _status: Status, _now: Instant) -> Result<(), HandshakeError> {
        Ok(())
    }
    /// What an initiator answers if the peer says "alive".
    fn set_alive(&mut self, _answer: bool) {}
}

/// The calls both handshake cores share, under the driver's names.
macro_rules! side_common {
    () => {
        fn input(&mut self, d: &[u8], n: Instant) -> Result<(), HandshakeError> {
            self.handle_input(d, n)
        }
        fn transmit(&mut self) -> Option<Vec<u8>> {
            self.poll_transmit()
        }
        fn event(&mut self) -> Option<HandshakeEvent> {
            self.poll_event()
        }
        fn timeout(&self) -> Option<Instant> {
            self.poll_timeout()
        }
        fn fire(&mut self, n: Instant) -> Result<(), HandshakeError> {
            self.handle_timeout(n)
        }
        fn current_step(&self) -> Step {
            self.step()
        }
    };
}

impl Side for Initiator {
    side_common!();
    fn set_alive(&mut self, answer: bool) {
        self.set_alive_answer(answer);
    }
}

impl Side for Acceptor {
    side_common!();
    fn decide(&mut self, status: Status, now: Instant) -> Result<(), HandshakeError> {
        self.set_status(status, now)
    }
}

enum HsFail {
    Protocol(HandshakeError),
    Closed(Step),
    Io(std::io::Error),
}

/// Drives a handshake over `stream` to completion.
///
/// `decide` answers an acceptor's status; `pending` tells an initiator,
/// before each input, whether its attempt is still wanted: if the peer says
/// "alive" (it has a connection to us up) the answer is "true" (replace the
/// old one, which we no longer have) only while we have no connection to the
/// peer either, as OTP's `dist_util` asks net_kernel `is_pending`.
async fn drive<S: Side>(
    stream: &mut TcpStream,
    side: &mut S,
    mut decide: impl FnMut(&erlkube_proto::dist::PeerName) -> Status,
    pending: impl Fn() -> bool,
) -> Result<Established, HsFail> {
    let mut buf = vec![0u8; 4096];
    loop {
        // Write whatever is queued (also after an error: e.g. not_allowed).
        while let Some(t) = side.transmit() {
            stream.write_all(&t).await.map_err(HsFail::Io)?;
        }
        while let Some(ev) = side.event() {
            match ev {
                HandshakeEvent::NameReceived(p) => {
                    let status = decide(&p);
                    let r = side.decide(status, now());
                    while let Some(t) = side.transmit() {
                        stream.write_all(&t).await.map_err(HsFail::Io)?;
                    }
                    r.map_err(HsFail::Protocol)?;
                }
                HandshakeEvent::Established(e) => return Ok(e),
            }
        }
        let deadline = side.timeout().map(tokio::time::Instant::from_std);
        let read = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, stream.read(&mut buf)).await.ok(),
                None => Some(stream.read(&mut buf).await),
            }
        };
        match read.await {
            None => {
                side.fire(now()).map_err(HsFail::Protocol)?;
            }
            Some(Ok(0)) => return Err(HsFail::Closed(side.current_step())),
            Some(Ok(n)) => {
                side.set_alive(pending());
                let r = side.input(&buf[..n], now());
                if let Err(e) = r {
                    while let Some(t) = side.transmit() {
                        let _ = stream.write_all(&t).await;
                    }
                    return Err(HsFail::Protocol(e));
                }
            }
            Some(Err(e)) => return Err(HsFail::Io(e)),
        }
    }
}

async fn accept_one(inner: Arc<Inner>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut acc = Acceptor::new(handshake_config(&inner), crate::random_u32(), now());
    let me = inner.name.as_str().to_owned();
    // The peer whose handshake this is, once its name is known and its
    // attempt allowed: recorded in `accepting` so that this node does not
    // dial it meanwhile (`connect` waits for this attempt instead).
    let mut accepted: Option<String> = None;
    let decide = |p: &erlkube_proto::dist::PeerName| {
        if p.node == me {
            return Status::NotAllowed;
        }
        let mut conns = inner.conns.lock().expect("conns");
        let status = if conns.up.contains_key(&p.node) {
            Status::Alive
        } else if conns.accepting.contains(&p.node) {
            // A second inbound attempt while one is under way.
            Status::Nok
        } else if conns.pending.contains(&p.node) {
            simultaneous_status(&me, &p.node)
        } else {
            Status::Ok
        };
        if matches!(status, Status::Ok | Status::OkSimultaneous | Status::Alive) {
            conns.accepting.insert(p.node.clone());
            accepted = Some(p.node.clone());
        }
        drop(conns);
        tracing::debug!(peer = %p.node, status = status.as_str(), "connection attempt");
        status
    };
    let result = drive(&mut stream, &mut acc, decide, || true).await;
    let end_accepting = || {
        if let Some(peer) = &accepted {
            inner.conns.lock().expect("conns").accepting.remove(peer);
            inner.accept_done.send_replace(());
        }
    };
    match result {
        Ok(est) => {
            let peer = est.peer_node.clone();
            // After "alive" answered true, the old connection is stale.
            let old = inner.conns.lock().expect("conns").up.get(&peer).cloned();
            if let Some(old) = old {
                // Closed now, not when its task ends: senders holding it
                // (the per-thread cache) stop using it at once.
                old.tx.close();
                old.kill.notify_one();
            }
            start_connection(inner.clone(), stream, est);
            end_accepting();
        }
        Err(e) => {
            end_accepting();
            match e {
                HsFail::Protocol(e) => tracing::warn!(error = %e, "handshake rejected"),
                HsFail::Closed(step) => {
                    tracing::info!(%step, "peer closed the connection during the handshake")
                }
                HsFail::Io(e) => tracing::info!(error = %e, "io error during the handshake"),
            }
        }
    }
}

/// Returns the connection to `node`, dialling it if needed.
pub(crate) async fn connect(inner: &Arc<Inner>, node: &str) -> Result<ConnHandle, ConnectError> {
    if let Some(h) = inner.conns.lock().expect("conns").up.get(node) {
        return Ok(h.clone());
    }
    if *inner.shutdown.borrow() {
        return Err(ConnectError::Shutdown);
    }
    let Some((alive, host)) = node
        .split_once('@')
        .filter(|(a, h)| !a.is_empty() && !h.is_empty())
    else {
        return Err(ConnectError::InvalidName(node.to_owned()));
    };
    let lock = {
        let mut conns = inner.conns.lock().expect("conns");
        conns.locks.entry(node.to_owned()).or_default().clone()
    };
    let _guard = lock.lock().await;
    let deadline = tokio::time::Instant::now() + inner.config.setup_timeout;
    // An inbound handshake from the node under way: wait for its outcome
    // instead of dialling (a dial now would race it, and one of the two
    // connections would replace the other).
    let mut accept_done = inner.accept_done.subscribe();
    loop {
        {
            let mut conns = inner.conns.lock().expect("conns");
            if let Some(h) = conns.up.get(node) {
                return Ok(h.clone());
            }
            if !conns.accepting.contains(node) {
                // Pending from here on, in the same critical section, so an
                // inbound attempt arriving now sees the simultaneous case.
                conns.pending.insert(node.to_owned());
                break;
            }
        }
        if tokio::time::timeout_at(deadline, accept_done.changed())
            .await
            .is_err()
        {
            return Err(ConnectError::Timeout(node.to_owned()));
        }
    }
    let mut events = inner.events.subscribe();
    loop {
        inner
            .conns
            .lock()
            .expect("conns")
            .pending
            .insert(node.to_owned());
        let span = tracing::info_span!("dist_connect", peer = %node);
        let r = dial(inner, node, alive, host).instrument(span).await;
        inner.conns.lock().expect("conns").pending.remove(node);
        match r {
            Ok((stream, est)) => return Ok(start_connection(inner.clone(), stream, est)),
            Err(ConnectError::Handshake {
                source: HandshakeError::SimultaneousConnectLost,
                ..
            }) => {
                // The peer's own attempt wins: wait a little for it to come
                // up; if it never arrives (it may have failed), dial again.
                tracing::debug!(peer = %node, "simultaneous connect lost; waiting for the peer's attempt");
                let wait = async {
                    loop {
                        if let Some(h) = inner.conns.lock().expect("conns").up.get(node) {
                            return Some(h.clone());
                        }
                        match events.recv().await {
                            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(_) => return None,
                        }
                    }
                };
                let retry_at = (tokio::time::Instant::now() + RETRY_AFTER_NOK).min(deadline);
                if let Ok(Some(h)) = tokio::time::timeout_at(retry_at, wait).await {
                    return Ok(h);
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(ConnectError::Timeout(node.to_owned()));
                }
            }
            Err(
                e @ ConnectError::Handshake {
                    source: HandshakeError::AliveRefused,
                    ..
                },
            ) => {
                // We said "false" to "alive" because a connection to the
                // node came up meanwhile (its own dial): that one is ours.
                let up = inner.conns.lock().expect("conns").up.get(node).cloned();
                return up.ok_or(e);
            }
            Err(e) => {
                tracing::debug!(peer = %node, error = %e, "dial failed");
                return Err(e);
            }
        }
    }
}

thread_local! {
    /// The connection this thread sent on last: (node uid, peer, queue).
    /// Saves the connection table's lock and hash on every message of a
    /// stream to one peer.
    static LAST_QUEUE: std::cell::RefCell<Option<(u64, String, Weak<OutQueue>)>> =
        const { std::cell::RefCell::new(None) };
}

/// The outbound queue of the connection to `node`, dialling it if needed.
pub(crate) async fn out_queue(
    inner: &Arc<Inner>,
    node: &str,
) -> Result<Arc<OutQueue>, ConnectError> {
    let cached = LAST_QUEUE.with_borrow(|last| match last {
        Some((uid, peer, q)) if *uid == inner.uid && peer == node => {
            q.upgrade().filter(|q| !q.is_closed())
        }
        _ => None,
    });
    if let Some(q) = cached {
        return Ok(q);
    }
    let h = connect(inner, node).await?;
    LAST_QUEUE.with_borrow_mut(|last| match last {
        Some((uid, peer, q)) if *uid == inner.uid && peer == node => {
            *q = Arc::downgrade(&h.tx);
        }
        _ => *last = Some((inner.uid, node.to_owned(), Arc::downgrade(&h.tx))),
    });
    Ok(h.tx)
}

/// After losing a simultaneous connect, how long to wait for the peer's
/// own attempt before dialling again.
const RETRY_AFTER_NOK: std::time::Duration = std::time::Duration::from_millis(200);

async fn dial(
    inner: &Arc<Inner>,
    node: &str,
    alive: &str,
    host: &str,
) -> Result<(TcpStream, Established), ConnectError> {
    let timeout = inner.config.setup_timeout;
    let addrs = match inner.config.known_addrs.get(node) {
        Some(addr) => vec![*addr],
        None => {
            let port = match inner.config.known_ports.get(node) {
                Some(p) => *p,
                None => epmd::port_please(host, inner.config.epmd_port, alive, timeout).await?,
            };
            resolve(host, port).await?
        }
    };
    let mut stream = connect_any(node, &addrs, timeout).await?;
    let _ = stream.set_nodelay(true);
    let mut init = Initiator::new(handshake_config(inner), node, crate::random_u32(), now());
    let still_pending = || !inner.conns.lock().expect("conns").up.contains_key(node);
    match drive(&mut stream, &mut init, |_| Status::Ok, still_pending).await {
        Ok(est) => Ok((stream, est)),
        Err(HsFail::Protocol(source)) => Err(ConnectError::Handshake {
            node: node.to_owned(),
            source,
        }),
        Err(HsFail::Closed(step)) => Err(ConnectError::ClosedDuringHandshake {
            node: node.to_owned(),
            step,
            hint: if step == Step::ChallengeAck {
                " (wrong cookie?)"
            } else {
                ""
            },
        }),
        Err(HsFail::Io(source)) => Err(ConnectError::Io {
            node: node.to_owned(),
            source,
        }),
    }
}

/// Every address the host name resolves to, in the resolver's order.
async fn resolve(host: &str, port: u16) -> Result<Vec<std::net::SocketAddr>, ConnectError> {
    let mut addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| ConnectError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(ConnectError::Resolve {
            host: host.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        });
    }
    Ok(addrs)
}

/// Connects to the first address that accepts, within `timeout` in all: a
/// dual-stack name whose first address is IPv6 must still reach a peer that
/// listens on IPv4 only. The error is the last address's.
async fn connect_any(
    node: &str,
    addrs: &[std::net::SocketAddr],
    timeout: std::time::Duration,
) -> Result<TcpStream, ConnectError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    for &addr in addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(source)) => {
                tracing::debug!(peer = %node, %addr, error = %source, "address refused, trying the next");
                last = Some(ConnectError::Connect { addr, source });
            }
            Err(_) => return Err(ConnectError::Timeout(node.to_owned())),
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::Timeout(node.to_owned())))
}

fn start_connection(inner: Arc<Inner>, stream: TcpStream, est: Established) -> ConnHandle {
    let stream = Arc::new(stream);
    let tx = Arc::new(OutQueue::new(
        stream.clone(),
        OutboundEncoder::new(est.flags),
        inner.config.write_high_water,
    ));
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
    tokio::spawn(run_connection(inner, stream, conn, handle.clone()).instrument(span));
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
    drop(stream);
    let was_up = {
        let mut conns = inner.conns.lock().expect("conns");
        if conns.up.get(&peer).is_some_and(|h| h.id == handle.id) {
            conns.up.remove(&peer);
            let _ = inner.events.send(NodeEvent::NodeDown {
                node: peer.clone(),
                reason: reason.clone(),
            });
            true
        } else {
            false
        }
    };
    if was_up {
        inner.global_node_down(&peer);
        inner.node_down(&peer);
        tracing::info!(reason = %reason, "nodedown");
    } else {
        // A connection already replaced by a newer one to the same node
        // (after "alive"): the node is still up, so no nodedown.
        tracing::info!(reason = %reason, "replaced connection closed");
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
) -> Result<bool, String> {
    for _ in 0..8 {
        match read_once(stream, buf) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                if let Err(e) = conn.handle_input(&buf[..n], now()) {
                    tracing::warn!(error = %e, "closing connection: bad input");
                    return Err(e.to_string());
                }
                if n == buf.len() && buf.len() < READ_MAX {
                    buf.resize(buf.len() * 2, 0);
                } else if n < buf.len() {
                    // Drained (a short read): the socket has nothing more.
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read error: {e}")),
        }
    }
    Ok(true)
}

async fn connection_loop(
    inner: &Arc<Inner>,
    stream: &TcpStream,
    conn: &mut Connection,
    handle: &ConnHandle,
) -> String {
    let outq = &handle.tx;
    let mut buf = vec![0u8; READ_MIN];
    // The batch being written and its progress.
    let mut batch: Vec<u8> = Vec::new();
    let mut written = 0usize;
    let mut shutdown = inner.shutdown.subscribe();
    // Messages the core decoded before the loop (handshake leftovers).
    if let Some(e) = conn.error() {
        return e.to_string();
    }
    let mut staged = Staged::default();
    if let Err(e) = dispatch_all(inner, conn, &mut staged, &handle.kill) {
        return e;
    }
    let mut deadline = conn.poll_timeout().map(tokio::time::Instant::from_std);
    let far = tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365);
    let sleep = tokio::time::sleep_until(deadline.unwrap_or(far));
    tokio::pin!(sleep);
    loop {
        // The core's own frames (ticks, replies) go through the queue.
        if let Some(t) = conn.poll_transmit() {
            outq.push_raw(&t);
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
                Err(e) => return format!("write error: {e}"),
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
        if next != deadline {
            deadline = next;
            if let Some(d) = deadline {
                sleep.as_mut().reset(d);
            }
        }
        tokio::select! {
            r = stream.readable() => {
                if let Err(e) = r {
                    return format!("read error: {e}");
                }
                match read_available(stream, &mut buf, conn) {
                    Ok(true) => {}
                    Ok(false) => return "connection closed by peer".into(),
                    Err(e) => return e,
                }
                outq.arm_direct();
                if let Err(e) = dispatch_all(inner, conn, &mut staged, &handle.kill) {
                    return e;
                }
            },
            r = stream.writable(), if writing => {
                if let Err(e) = r {
                    return format!("write error: {e}");
                }
            },
            _ = outq.wake.notified(), if !writing => {},
            _ = &mut sleep, if deadline.is_some() => {
                if let Err(e) = conn.handle_timeout(now()) {
                    tracing::warn!(error = %e, "closing connection");
                    return e.to_string();
                }
                // Re-arm at the next deadline (the same value would not).
                deadline = None;
            }
            _ = handle.kill.notified() => return "disconnected".into(),
            _ = shutdown.changed() => return "node shutting down".into(),
        }
    }
}

/// Messages of the current read staged for one local process's mailbox.
#[derive(Default)]
struct Staged {
    /// Whose: the destination as the messages named it.
    key: Option<StageKey>,
    mailbox: Option<Arc<Mailbox>>,
    batch: Batch,
}

#[derive(PartialEq)]
enum StageKey {
    Pid(u32),
    Name(Atom),
}

impl Staged {
    /// Stages a payload for `key`'s mailbox; false when `key` is not a
    /// plain mailbox (no such process, a Rust gen_server answered
    /// inline, a name the node answers itself): the caller takes the
    /// general path.
    fn stage(
        &mut self,
        inner: &Inner,
        key: StageKey,
        body: &[u8],
        atoms: &[Atom],
        source: &Arc<Notify>,
    ) -> bool {
        if self.key.as_ref() != Some(&key) {
            self.flush();
            let Some(mb) = mailbox_for(inner, &key) else {
                return false;
            };
            self.key = Some(key);
            self.mailbox = Some(mb);
        }
        self.batch.push_encoded(body, atoms, source);
        true
    }

    /// Hands the staged messages to their mailbox.
    fn flush(&mut self) {
        self.key = None;
        if let Some(mb) = self.mailbox.take() {
            mb.push_batch(&mut self.batch);
        }
    }
}

/// The mailbox messages to `key` go to, if it is a plain one.
fn mailbox_for(inner: &Inner, key: &StageKey) -> Option<Arc<Mailbox>> {
    let (id, mb) = {
        let procs = inner.procs.lock().expect("procs");
        let id = match key {
            StageKey::Pid(id) => *id,
            StageKey::Name(name) => {
                if matches!(name.as_str(), "net_kernel" | "rex" | "global_name_server") {
                    return None;
                }
                *procs.names.get(name)?
            }
        };
        (id, procs.by_id.get(&id)?.0.clone())
    };
    if inner.gen_calls.read().expect("gen_calls").contains_key(&id) {
        return None;
    }
    Some(mb)
}

/// Handles every decoded message; an error string closes the connection.
/// Messages to local processes' mailboxes go there still encoded, staged
/// per destination and handed over in batches; everything else (and
/// anything after it) goes through [`dispatch`] in order.
fn dispatch_all(
    inner: &Arc<Inner>,
    conn: &mut Connection,
    staged: &mut Staged,
    source: &Arc<Notify>,
) -> Result<(), String> {
    use ControlMessage as C;
    while let Some(raw) = conn.poll_message_ref() {
        let LazyMessage { control, payload } = match DistMessage::decode_lazy(&raw) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "closing connection: bad control message");
                staged.flush();
                return Err(e.to_string());
            }
        };
        if let Some(LazyPayload::Encoded { body, atoms }) = &payload {
            let key = match &control {
                C::Send { to }
                | C::SendTt { to, .. }
                | C::SendSender { to, .. }
                | C::SendSenderTt { to, .. }
                    if to.node == inner.name && to.creation == inner.creation =>
                {
                    Some(StageKey::Pid(to.id))
                }
                C::RegSend { to_name, .. } | C::RegSendTt { to_name, .. } => {
                    Some(StageKey::Name(to_name.clone()))
                }
                _ => None,
            };
            if let Some(key) = key {
                if staged.stage(inner, key, body, atoms, source) {
                    continue;
                }
            }
        }
        staged.flush();
        let payload = match payload.map(LazyPayload::into_term).transpose() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "closing connection: bad message payload");
                return Err(e.to_string());
            }
        };
        dispatch(inner, conn, DistMessage { control, payload });
    }
    staged.flush();
    Ok(())
}

fn reply(conn: &mut Connection, control: ControlMessage, payload: Option<Term>) {
    let (c, p) = DistMessage { control, payload }.encode();
    conn.send(&c, p.as_deref(), now());
}

fn dispatch(inner: &Arc<Inner>, conn: &mut Connection, msg: DistMessage) {
    use ControlMessage as C;
    let payload = msg.payload;
    match msg.control {
        C::Send { to }
        | C::SendTt { to, .. }
        | C::SendSender { to, .. }
        | C::SendSenderTt { to, .. } => {
            if let Some(p) = payload {
                if to.node == inner.name && to.creation == inner.creation {
                    call_or_deliver(inner, conn, to.id, p);
                } else {
                    inner.deliver_local(&to, p);
                }
            }
        }
        C::RegSend { from, to_name } | C::RegSendTt { from, to_name, .. } => {
            let Some(p) = payload else { return };
            if to_name.as_str() == "net_kernel"
                && !inner.is_alive_proc(&Term::Atom(to_name.clone()))
            {
                net_kernel(inner, conn, &from, p);
            } else if to_name.as_str() == "rex"
                && !inner.is_alive_proc(&Term::Atom(to_name.clone()))
            {
                crate::server::rex(inner, p);
            } else if to_name.as_str() == "global_name_server"
                && !inner.is_alive_proc(&Term::Atom(to_name.clone()))
            {
                crate::global::handle(inner, conn.peer_node(), p);
            } else if let Some(id) = inner.whereis_id(&to_name) {
                call_or_deliver(inner, conn, id, p);
            } else if !inner.deliver_named(&to_name, p) {
                tracing::debug!(name = %to_name, "message to an unregistered name dropped");
            }
        }
        C::AliasSend { alias, .. } | C::AliasSendTt { alias, .. } => {
            if let Some(p) = payload {
                inner.deliver_alias(&alias, p);
            }
        }
        C::PayloadMonitorPExit {
            from,
            to,
            reference,
        } => {
            let reason = payload.unwrap_or(Term::atom("noproc"));
            let peer = conn.peer_node().to_owned();
            let a = inner.monitor_fired(from, to, reference, reason, Some(&peer));
            inner.route(a);
        }
        C::PayloadExit { from, to } | C::PayloadExitTt { from, to, .. } => {
            let reason = payload.unwrap_or(Term::atom("normal"));
            signal(inner, conn, C::Exit { from, to, reason });
        }
        C::PayloadExit2 { from, to } | C::PayloadExit2Tt { from, to, .. } => {
            let reason = payload.unwrap_or(Term::atom("normal"));
            signal(inner, conn, C::Exit2 { from, to, reason });
        }
        sig @ (C::Link { .. }
        | C::Unlink { .. }
        | C::UnlinkId { .. }
        | C::UnlinkIdAck { .. }
        | C::Exit { .. }
        | C::ExitTt { .. }
        | C::Exit2 { .. }
        | C::Exit2Tt { .. }
        | C::MonitorP { .. }
        | C::DemonitorP { .. }
        | C::MonitorPExit { .. }) => signal(inner, conn, sig),
        C::SpawnRequest {
            req_id,
            from,
            mfa,
            options,
            ..
        }
        | C::SpawnRequestTt {
            req_id,
            from,
            mfa,
            options,
            ..
        } => {
            for r in crate::server::spawn_request(inner, req_id, from, mfa, options, payload) {
                reply(conn, r, None);
            }
        }
        C::SpawnReply {
            req_id, to, result, ..
        }
        | C::SpawnReplyTt {
            req_id, to, result, ..
        } => {
            let msg = match result {
                Term::Pid(p) => vec![
                    Term::atom("spawn_reply"),
                    Term::from(req_id),
                    Term::atom("ok"),
                    Term::Pid(p),
                ],
                other => vec![
                    Term::atom("spawn_reply"),
                    Term::from(req_id),
                    Term::atom("error"),
                    other,
                ],
            };
            inner.deliver_local(&to, Term::tuple(msg));
        }
        other => tracing::debug!(op = other.op(), "control message ignored"),
    }
}

/// A `$gen_call` to a Rust gen_server is answered at once on this
/// connection when the caller is the peer; anything else goes to the mailbox.
fn call_or_deliver(inner: &Arc<Inner>, conn: &mut Connection, id: u32, msg: Term) {
    match crate::gen::inline_call(inner, id, msg) {
        Ok((control, reply_msg)) => {
            let dest = match &control {
                ControlMessage::Send { to } => to.node.as_str(),
                ControlMessage::AliasSend { alias, .. } => alias.node.as_str(),
                _ => "",
            };
            if dest == conn.peer_node() {
                reply(conn, control, Some(reply_msg));
            } else if dest == inner.name.as_str() {
                match control {
                    ControlMessage::Send { to } => {
                        inner.deliver_local(&to, reply_msg);
                    }
                    ControlMessage::AliasSend { alias, .. } => {
                        inner.deliver_alias(&alias, reply_msg);
                    }
                    _ => {}
                }
            } else {
                let dest = dest.to_owned();
                inner.send_signal_msg(&dest, control, Some(reply_msg));
            }
        }
        Err(msg) => {
            inner.deliver_local(&inner.pid(id), msg);
        }
    }
}

/// Applies a link/monitor/exit signal from the peer.
fn signal(inner: &Arc<Inner>, conn: &mut Connection, sig: ControlMessage) {
    let peer = conn.peer_node().to_owned();
    let actions = inner.handle_signal(sig, Some(&peer));
    inner.route(actions);
}

/// The part of `net_kernel` peers talk to: `is_auth` (net_adm:ping).
fn net_kernel(inner: &Arc<Inner>, conn: &mut Connection, _from: &erlkube_etf::Pid, msg: Term) {
    let Some([label, from_tag, request]) = msg.as_tuple() else {
        return;
    };
    if label.as_atom().map(Atom::as_str) != Some("$gen_call") {
        return;
    }
    let Some([Term::Pid(caller), tag]) = from_tag.as_tuple() else {
        return;
    };
    let answer = match request.as_tuple() {
        Some([op, _node]) if op.as_atom().map(Atom::as_str) == Some("is_auth") => Term::atom("yes"),
        _ => {
            tracing::debug!(request = %request, "net_kernel call not supported");
            return;
        }
    };
    let _ = inner;
    reply(
        conn,
        ControlMessage::Send { to: caller.clone() },
        Some(Term::tuple(vec![tag.clone(), answer])),
    );
}

/// The outbound side of one connection, shared by every sender: frames
/// are encoded by the sending task straight into one growing buffer,
/// which the connection task writes with one syscall per batch. When the
/// connection task is idle and the peer has just been heard from (a
/// request/answer pattern), the sender writes its frame to the socket
/// itself, saving a task hop.
pub(crate) struct OutQueue {
    state: Mutex<OutState>,
    /// Wakes the connection task: bytes were queued.
    wake: Notify,
    /// Wakes senders waiting for room.
    room: Notify,
    limit: usize,
    /// Set once the connection ended.
    closed: AtomicBool,
    /// `!buf.is_empty()`, written under the lock: lets the connection
    /// task look without taking it (it would wait for a sender writing
    /// directly while holding it).
    queued: AtomicBool,
    /// The connection task's `busy`, for the task itself to read without
    /// the lock.
    task_busy: AtomicBool,
    /// A sender may write directly (re-armed on every read and whenever
    /// the connection task has drained the queue; cleared by a direct
    /// write).
    direct_ok: AtomicBool,
}

struct OutState {
    buf: Vec<u8>,
    encoder: OutboundEncoder,
    /// `None` once the connection ended.
    stream: Option<Arc<TcpStream>>,
    /// The connection task holds a batch it has not fully written.
    busy: bool,
}

/// Why a frame was not queued.
enum Refused {
    Full,
    Closed,
}

impl OutQueue {
    fn new(stream: Arc<TcpStream>, encoder: OutboundEncoder, limit: usize) -> Self {
        OutQueue {
            state: Mutex::new(OutState {
                buf: Vec::new(),
                encoder,
                stream: Some(stream),
                busy: false,
            }),
            wake: Notify::new(),
            room: Notify::new(),
            limit: limit.max(1),
            closed: AtomicBool::new(false),
            queued: AtomicBool::new(false),
            task_busy: AtomicBool::new(false),
            direct_ok: AtomicBool::new(true),
        }
    }

    /// True once the connection ended.
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Encodes with `f` into the queue unless it is full or closed.
    fn try_push(
        &self,
        f: &mut dyn FnMut(&mut OutboundEncoder, &mut Vec<u8>),
    ) -> Result<(), Refused> {
        let mut st = self.state.lock().expect("outq");
        let st = &mut *st;
        let Some(stream) = &st.stream else {
            return Err(Refused::Closed);
        };
        if st.buf.len() >= self.limit {
            return Err(Refused::Full);
        }
        let idle = st.buf.is_empty() && !st.busy;
        f(&mut st.encoder, &mut st.buf);
        if !idle {
            // The connection task was already told (or is writing).
            return Ok(());
        }
        if self.direct_ok.swap(false, Ordering::AcqRel) {
            let mut pos = 0;
            while pos < st.buf.len() {
                match stream.try_write(&st.buf[pos..]) {
                    Ok(n) => pos += n,
                    Err(_) => break, // WouldBlock or an error: the task handles it
                }
            }
            if pos == st.buf.len() {
                st.buf.clear();
                return Ok(());
            }
            st.buf.drain(..pos);
        }
        self.queued.store(true, Ordering::Release);
        self.wake.notify_one();
        Ok(())
    }

    /// Encodes with `f` into the queue, waiting while it is full.
    async fn push(&self, mut f: impl FnMut(&mut OutboundEncoder, &mut Vec<u8>)) -> Result<(), ()> {
        // The common case first: room in the queue, no waiter registered.
        match self.try_push(&mut f) {
            Ok(()) => return Ok(()),
            Err(Refused::Closed) => return Err(()),
            Err(Refused::Full) => {}
        }
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_push(&mut f) {
                Ok(()) => return Ok(()),
                Err(Refused::Closed) => return Err(()),
                Err(Refused::Full) => room.await,
            }
        }
    }

    /// Queues the frames of a message, waiting while the queue is full.
    pub(crate) async fn send_msg(&self, m: &DistMessage) -> Result<(), ()> {
        self.push(|e, out| {
            m.encode_frames(e, out);
        })
        .await
    }

    /// Queues an encoded message (versioned control and payload), waiting
    /// while the queue is full (the `mpsc::Sender::send` of older code).
    pub(crate) async fn send(&self, o: Outbound) -> Result<(), mpsc::error::SendError<Outbound>> {
        let r = self
            .push(|e, out| {
                e.encode(&o.control, o.payload.as_deref(), out);
            })
            .await;
        r.map_err(|()| mpsc::error::SendError(o))
    }

    /// Queues an encoded message unless the queue is full or closed.
    pub(crate) fn try_send(&self, o: Outbound) -> Result<(), mpsc::error::TrySendError<Outbound>> {
        let r = self.try_push(&mut |e, out| {
            e.encode(&o.control, o.payload.as_deref(), out);
        });
        match r {
            Ok(()) => Ok(()),
            Err(Refused::Full) => Err(mpsc::error::TrySendError::Full(o)),
            Err(Refused::Closed) => Err(mpsc::error::TrySendError::Closed(o)),
        }
    }

    /// Appends already framed bytes (the connection's own ticks and replies).
    fn push_raw(&self, bytes: &[u8]) {
        let mut st = self.state.lock().expect("outq");
        if st.stream.is_none() {
            return;
        }
        let idle = st.buf.is_empty() && !st.busy;
        st.buf.extend_from_slice(bytes);
        self.queued.store(true, Ordering::Release);
        if idle {
            self.wake.notify_one();
        }
    }

    /// The connection task takes everything queued (swapping in `spare`),
    /// or marks itself idle when nothing is.
    fn take(&self, spare: &mut Vec<u8>) -> bool {
        if !self.queued.load(Ordering::Acquire) && !self.task_busy.load(Ordering::Relaxed) {
            // Idle and nothing queued (a sender that queues now sees the
            // task idle and wakes it).
            self.direct_ok.store(true, Ordering::Release);
            return false;
        }
        let mut st = self.state.lock().expect("outq");
        if st.buf.is_empty() {
            st.busy = false;
            self.task_busy.store(false, Ordering::Relaxed);
            self.direct_ok.store(true, Ordering::Release);
            return false;
        }
        let was_full = st.buf.len() >= self.limit;
        spare.clear();
        std::mem::swap(&mut st.buf, spare);
        st.busy = true;
        self.task_busy.store(true, Ordering::Relaxed);
        self.queued.store(false, Ordering::Release);
        drop(st);
        if was_full {
            self.room.notify_waiters();
        }
        true
    }

    /// The peer was heard from: a sender may write directly again.
    fn arm_direct(&self) {
        self.direct_ok.store(true, Ordering::Release);
    }

    /// The connection ended: senders get an error from now on.
    pub(crate) fn close(&self) {
        let mut st = self.state.lock().expect("outq");
        st.stream = None;
        st.buf = Vec::new();
        self.queued.store(false, Ordering::Release);
        self.closed.store(true, Ordering::Release);
        drop(st);
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port with a listener on 127.0.0.1 and nothing on [::1].
    fn v4_only_listener() -> (std::net::TcpListener, u16) {
        loop {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            // Binding [::1]:port proves nothing listens there; drop it again.
            if std::net::TcpListener::bind(("::1", port)).is_ok() {
                return (l, port);
            }
        }
    }

    #[tokio::test]
    async fn dial_moves_on_when_the_first_address_refuses() {
        let (listener, port) = v4_only_listener();
        let addrs = [
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)),
        ];
        let s = connect_any("n@h", &addrs, std::time::Duration::from_secs(5))
            .await
            .expect("the IPv4 address accepts");
        assert_eq!(s.peer_addr().unwrap(), addrs[1]);
        drop(listener);
    }

    #[tokio::test]
    async fn dial_reports_the_last_refusal() {
        let (listener, port) = v4_only_listener();
        drop(listener);
        let addrs = [
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)),
        ];
        match connect_any("n@h", &addrs, std::time::Duration::from_secs(5)).await {
            Err(ConnectError::Connect { addr, .. }) => assert_eq!(addr, addrs[1]),
            other => panic!("expected a refusal of the last address, got {other:?}"),
        }
    }
}
