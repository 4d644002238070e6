//! The port-mapper daemon on tokio.
//!
//! [`run`] serves already-bound listeners until a shutdown future resolves
//! or a permitted `KILL_REQ` arrives, so tests bind `127.0.0.1:0` and the
//! binary binds OTP's addresses ([`bind_default`]).
//!
//! A connection whose whole request has arrived when it is accepted (the
//! listeners use `TCP_DEFER_ACCEPT`) and is not an ALIVE2 is answered and
//! closed inline by the accept loop; any other goes to a task of its own.
//! The rules are the same on both paths.
//!
//! Connection rules (OTP's, plus limits OTP lacks):
//! - one request per connection; the connection closes after the answer,
//!   except a successful ALIVE2 whose connection *is* the registration;
//! - a request must arrive whole within `packet_timeout`, with no gap longer
//!   than `idle_timeout` between bytes, and be at most `max_request_len`;
//! - bad bytes close that connection only (logged with the reason, counted
//!   in the metrics); the daemon carries on;
//! - ALIVE2, DUMP, KILL and STOP only from local peers ([`is_local_peer`]);
//!   STOP only with relaxed command checking; KILL refused (`NO`) while
//!   nodes are registered unless relaxed.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use erlkube_proto::epmd::registry::{ConnId, Registry};
use erlkube_proto::epmd::{
    decode_request, encode_watch_frame, DecodeError, Request, Response, MAX_REQUEST_LEN, WATCH_RESP,
};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use crate::metrics::Metrics;

/// Daemon settings. `Config::default()` matches OTP's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Allow STOP, and KILL with nodes registered (`-relaxed_command_check`).
    pub relaxed_command_check: bool,
    /// Time allowed for a whole request to arrive (OTP: 60 s).
    pub packet_timeout: Duration,
    /// Longest silence allowed between bytes of a request.
    pub idle_timeout: Duration,
    /// Largest request body accepted (OTP's buffer limit by default).
    pub max_request_len: usize,
    /// Connections beyond this are closed at once (counted as errors).
    pub max_connections: usize,
    /// How many unregistered names keep their creation counter (OTP: 1000,
    /// 5 in debug mode).
    pub unreg_limit: usize,
    /// The port announced in NAMES/DUMP replies; by default the first
    /// listener's port.
    pub announced_port: Option<u16>,
    /// The counters to update (share them with a metrics endpoint).
    pub metrics: Arc<Metrics>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            relaxed_command_check: false,
            packet_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_request_len: MAX_REQUEST_LEN,
            max_connections: 1_000_000,
            unreg_limit: erlkube_proto::epmd::registry::MAX_UNREG,
            announced_port: None,
            metrics: Arc::new(Metrics::default()),
        }
    }
}

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// The shutdown future resolved.
    Shutdown,
    /// A permitted `KILL_REQ` was answered `OK`.
    Killed,
}

/// True when a peer may register, dump, kill or stop: a loopback address
/// (127.0.0.0/8, ::1, or IPv4-mapped loopback), or the very address it
/// connected to (a connection from this host's own IP), as OTP decides.
pub fn is_local_peer(peer: IpAddr, local: IpAddr) -> bool {
    let peer = peer.to_canonical();
    let local = local.to_canonical();
    let loopback = match peer {
        IpAddr::V4(a) => a.octets()[0] == 127,
        IpAddr::V6(a) => a.is_loopback(),
    };
    loopback || peer == local
}

/// Binds OTP's default listeners on `port`: with no addresses, the IPv4 and
/// IPv6 wildcards (the IPv6 one `IPV6_V6ONLY`; skipped if the host has no
/// IPv6); with addresses, those plus 127.0.0.1 and ::1 (loopback failures
/// are not fatal, as in OTP).
pub fn bind_default(port: u16, addresses: &[IpAddr]) -> io::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    if addresses.is_empty() {
        out.push(bind_one(SocketAddr::new(
            Ipv4Addr::UNSPECIFIED.into(),
            port,
        ))?);
        match bind_one(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)) {
            Ok(l) => out.push(l),
            Err(e) if is_no_ipv6(&e) => debug!(error = %e, "no IPv6 listener"),
            Err(e) => return Err(e),
        }
    } else {
        for lo in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ] {
            if addresses.contains(&lo) {
                continue;
            }
            match bind_one(SocketAddr::new(lo, port)) {
                Ok(l) => out.push(l),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(e),
                Err(e) => debug!(error = %e, addr = %lo, "loopback listener skipped"),
            }
        }
        for a in addresses {
            out.push(bind_one(SocketAddr::new(*a, port))?);
        }
    }
    Ok(out)
}

fn is_no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) | Some(libc::EPROTONOSUPPORT)
    )
}

/// Binds one listener with `SO_REUSEADDR`, `IPV6_V6ONLY` for IPv6, the
/// system's largest backlog, and `TCP_DEFER_ACCEPT` of one second (see
/// [`DEFER_ACCEPT_SECS`]).
pub fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    set_defer_accept(&sock, DEFER_ACCEPT_SECS);
    TcpListener::from_std(sock.into())
}

/// `TCP_DEFER_ACCEPT` on the listeners: the kernel completes a connection
/// (wakes `accept`) only once its first bytes have arrived, so the daemon
/// reads a whole request right after accepting and answers it inline (see
/// [`run`]). Every client sends its request at once; a connection that
/// sends nothing is still handed over after about this long (the kernel's
/// first SYN-ACK retransmission), and then meets `packet_timeout` as
/// before, so an idle connection is closed up to this much later than
/// without the option.
pub const DEFER_ACCEPT_SECS: libc::c_int = 1;

/// Sets `TCP_DEFER_ACCEPT` (Linux); a failure only costs the fast path.
fn set_defer_accept(sock: &socket2::Socket, secs: libc::c_int) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: setsockopt reads an int we own, on a socket we own.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&secs as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            debug!(error = %io::Error::last_os_error(), "TCP_DEFER_ACCEPT not set");
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (sock, secs);
}

struct Shared {
    config: Config,
    port: u16,
    registry: Mutex<Registry>,
    /// Close signals for connections holding a registration (for STOP).
    holders: Mutex<HashMap<ConnId, oneshot::Sender<()>>>,
    killed: Notify,
    next_id: AtomicU64,
    /// Per-peer limit on warnings (a client sending garbage in a loop
    /// gets a few lines and a count, not one line per connection).
    warns: PeerWarnings,
    /// Bumped on every change of the registry: what WATCH connections
    /// wait for.
    changes: watch::Sender<u64>,
    /// WATCH connections open now (at most [`MAX_WATCHERS`]).
    watchers: AtomicUsize,
}

impl Shared {
    /// Tells the WATCH connections that the registry changed.
    fn registry_changed(&self) {
        self.changes.send_modify(|g| *g = g.wrapping_add(1));
    }
}

/// WATCH connections served at once; more are closed (each holds a task
/// and a socket for as long as its client stays).
const MAX_WATCHERS: usize = 64;

/// Warnings shown per peer address in each window; the rest are counted
/// and summed up in one line when the window ends.
const WARN_BURST: u32 = 5;
/// The window of [`WARN_BURST`].
const WARN_WINDOW: Duration = Duration::from_secs(10);
/// Peers tracked at once; past it, new peers share one bucket.
const WARN_PEERS: usize = 4096;

#[derive(Default)]
struct PeerWarnings {
    peers: Mutex<HashMap<IpAddr, PeerWarns>>,
}

struct PeerWarns {
    since: Instant,
    shown: u32,
    suppressed: u64,
}

impl PeerWarnings {
    /// Whether a warning about `ip` may be logged now (else it is counted).
    fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut peers = self.peers.lock().unwrap();
        let key = if peers.len() >= WARN_PEERS && !peers.contains_key(&ip) {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            ip
        };
        let w = peers.entry(key).or_insert(PeerWarns {
            since: now,
            shown: 0,
            suppressed: 0,
        });
        if w.shown < WARN_BURST {
            w.shown += 1;
            true
        } else {
            w.suppressed += 1;
            false
        }
    }

    /// Ends the windows older than [`WARN_WINDOW`]: returns the peers with
    /// suppressed warnings and how many, and forgets those windows.
    fn flush(&self, now: Instant) -> Vec<(IpAddr, u64)> {
        let mut out = Vec::new();
        self.peers.lock().unwrap().retain(|ip, w| {
            if now.duration_since(w.since) < WARN_WINDOW {
                return true;
            }
            if w.suppressed > 0 {
                out.push((*ip, w.suppressed));
            }
            false
        });
        out
    }
}

/// `warn!` with the peer's address, limited per peer ([`PeerWarnings`]).
macro_rules! peer_warn {
    ($shared:expr, $peer:expr, $($rest:tt)+) => {
        if $shared.warns.allow($peer.ip(), Instant::now()) {
            warn!(peer = %$peer, $($rest)+);
        }
    };
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Serves the port-mapper protocol on `listeners` until `shutdown` resolves
/// or a permitted KILL arrives. Returns why it stopped; all connections
/// (and so all registrations) are closed on return.
pub async fn run(
    listeners: Vec<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<Exit> {
    if listeners.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no listener"));
    }
    let port = match config.announced_port {
        Some(p) => p,
        None => listeners[0].local_addr()?.port(),
    };
    let shared = Arc::new(Shared {
        registry: Mutex::new(Registry::with_unreg_limit(config.unreg_limit)),
        config,
        port,
        holders: Mutex::new(HashMap::new()),
        killed: Notify::new(),
        next_id: AtomicU64::new(1),
        warns: PeerWarnings::default(),
        changes: watch::Sender::new(0),
        watchers: AtomicUsize::new(0),
    });
    for l in &listeners {
        info!(addr = %l.local_addr()?, "epmd listening");
    }
    // The listeners are polled for readiness only: `accept4` is called
    // here (non-blocking, close-on-exec, no epoll registration), so a
    // connection whose request is already complete is answered and closed
    // inline without ever entering the event loop (see [`accepted`]).
    let listeners = listeners
        .into_iter()
        .map(|l| {
            let l = l.into_std()?;
            // SAFETY: the listener owns its descriptor, which stays open
            // as long as the AsyncFd that owns the listener.
            unsafe { AsyncFd::register_with_interest(l, tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let mut conns = JoinSet::new();
    // One read buffer for the inline path, reused by every connection.
    let mut scratch = vec![
        0u8;
        shared
            .config
            .max_request_len
            .saturating_add(3)
            .min(INLINE_READ)
    ];
    tokio::pin!(shutdown);
    // Which listener is polled first rotates, so a busy one (say IPv4)
    // cannot starve another (IPv6).
    let mut first = 0usize;
    let mut summaries = tokio::time::interval(WARN_WINDOW);
    summaries.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let exit = loop {
        first = first.wrapping_add(1);
        let accept_any = std::future::poll_fn(|cx| {
            let n = listeners.len();
            for i in 0..n {
                let l = &listeners[(first + i) % n];
                // Accept until the listener reports EAGAIN, which clears
                // its readiness; the next poll then registers the waker.
                loop {
                    match l.poll_read_ready(cx) {
                        std::task::Poll::Pending => break,
                        std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                        std::task::Poll::Ready(Ok(mut guard)) => {
                            match guard.try_io(|l| accept_nonblocking(l.get_ref())) {
                                Ok(r) => return std::task::Poll::Ready(r),
                                Err(_would_block) => continue,
                            }
                        }
                    }
                }
            }
            std::task::Poll::Pending
        });
        tokio::select! {
            _ = &mut shutdown => break Exit::Shutdown,
            _ = shared.killed.notified() => break Exit::Killed,
            _ = summaries.tick() => {
                for (ip, n) in shared.warns.flush(Instant::now()) {
                    warn!(peer = %ip, suppressed = n, "suppressed repeated warnings about this peer");
                }
            }
            accepted_conn = accept_any => {
                let (stream, peer) = match accepted_conn {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        shared.config.metrics.error("accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                accepted(&shared, &mut conns, stream, peer, &mut scratch);
                // More connections waiting (many clients at once): take
                // them now, without another round of the select. A
                // listener's EAGAIN clears its readiness for the next round.
                for _ in 0..ACCEPT_BATCH {
                    let n = listeners.len();
                    let next = (0..n).find_map(|i| {
                        listeners[(first + i) % n]
                            .try_io(tokio::io::Interest::READABLE, accept_nonblocking)
                            .ok()
                    });
                    let Some((stream, peer)) = next else { break };
                    accepted(&shared, &mut conns, stream, peer, &mut scratch);
                }
            }
        }
    };
    conns.shutdown().await;
    info!(?exit, "epmd stopped");
    Ok(exit)
}

/// Connections taken after one readiness wake-up before the loop looks
/// at shutdown, KILL and its timer again.
const ACCEPT_BATCH: usize = 64;

/// The most the inline path reads at once (a request larger than this is
/// finished by the connection's task).
const INLINE_READ: usize = 4096;

/// `accept4(2)` with `SOCK_NONBLOCK | SOCK_CLOEXEC`: a non-blocking socket
/// in one system call, not registered with the event loop.
fn accept_nonblocking(l: &std::net::TcpListener) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    use std::os::fd::FromRawFd;
    // SAFETY: a zeroed sockaddr_storage is a valid (empty) address.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` are ours and sized for any address.
    let fd = unsafe {
        libc::accept4(
            l.as_raw_fd(),
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let peer = match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: &libc::sockaddr_in =
                unsafe { &*(&storage as *const _ as *const libc::sockaddr_in) };
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                u16::from_be(a.sin_port),
            )
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 =
                unsafe { &*(&storage as *const _ as *const libc::sockaddr_in6) };
            SocketAddr::V6(std::net::SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))
        }
        _ => stream.peer_addr()?,
    };
    Ok((stream, peer))
}

/// A newly accepted connection. Its request is read at once (non-blocking;
/// a client sends it right after connecting, so it has usually arrived):
/// a complete request other than ALIVE2 is answered, written and closed
/// here, with no task and no epoll registration. A request not complete
/// yet, an ALIVE2 (its connection is the registration), bad bytes, or an
/// answer the socket does not take at once go to a task of their own
/// ([`connection`]), which applies every rule from where this left off.
fn accepted(
    shared: &Arc<Shared>,
    conns: &mut JoinSet<()>,
    stream: std::net::TcpStream,
    peer: SocketAddr,
    scratch: &mut [u8],
) {
    while conns.try_join_next().is_some() {}
    let metrics = &shared.config.metrics;
    if metrics.open_connections() as usize >= shared.config.max_connections {
        metrics.error("connection_limit");
        peer_warn!(shared, peer, "connection limit reached; closing");
        return;
    }
    metrics.connection_opened();
    let guard = ConnGuard(metrics.clone());
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let span = tracing::debug_span!("conn", id, %peer);
    let entered = span.enter();
    let got = match (&stream).read(scratch) {
        Ok(0) => return, // closed before sending anything
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => {
            debug!(error = %e, "read failed");
            metrics.error("io");
            return;
        }
    };
    let complete = match decode_request(&scratch[..got], shared.config.max_request_len) {
        // ALIVE2 and WATCH keep their connection: a task of their own.
        Ok(Some((req, used)))
            if used == got && !matches!(req, Request::Alive2(_) | Request::Watch) =>
        {
            Some(req)
        }
        _ => None,
    };
    let Some(request) = complete else {
        // Not finished here: the task decodes what was read, then reads on.
        let buf = scratch[..got].to_vec();
        drop(entered);
        spawn_connection(shared, conns, stream, peer, id, buf, guard, span);
        return;
    };
    let local = || {
        peer.ip().to_canonical().is_loopback()
            || stream
                .local_addr()
                .is_ok_and(|l| is_local_peer(peer.ip(), l.ip()))
    };
    let reply = reply(shared, peer, &local, request);
    let Some(bytes) = reply.bytes else { return };
    let written = match (&stream).write(bytes.as_slice()) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => {
            debug!(error = %e, "write failed");
            return;
        }
    };
    if written == bytes.len() {
        if reply.kill {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            shared.killed.notify_one();
        }
        return; // dropping the socket closes it
    }
    // A large answer (NAMES or DUMP with many nodes) the socket buffer did
    // not take whole: a task writes the rest.
    drop(entered);
    let shared2 = shared.clone();
    let task = async move {
        let _guard = guard;
        let Ok(mut stream) = TcpStream::from_std(stream) else {
            return;
        };
        let _ = stream.write_all(&bytes.as_slice()[written..]).await;
        if reply.kill {
            let _ = stream.shutdown().await;
            shared2.killed.notify_one();
        }
    };
    conns.spawn(task.instrument(span));
}

/// Hands a connection to a task of its own ([`connection`]).
#[allow(clippy::too_many_arguments)]
fn spawn_connection(
    shared: &Arc<Shared>,
    conns: &mut JoinSet<()>,
    stream: std::net::TcpStream,
    peer: SocketAddr,
    id: ConnId,
    buf: Vec<u8>,
    guard: ConnGuard,
    span: tracing::Span,
) {
    match TcpStream::from_std(stream) {
        Ok(stream) => {
            conns.spawn(connection(shared.clone(), stream, peer, id, buf, guard).instrument(span));
        }
        Err(e) => {
            debug!(error = %e, "cannot register the connection");
            shared.config.metrics.error("io");
        }
    }
}

fn decode_reason(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::EmptyRequest => "empty_request",
        DecodeError::TooLarge { .. } => "too_large",
        DecodeError::UnknownRequest(_) => "unknown_request",
        DecodeError::Truncated(_) => "truncated",
        DecodeError::InvalidName(_) => "invalid_name",
        _ => "bad_request",
    }
}

/// Counts the connection closed when dropped.
struct ConnGuard(Arc<Metrics>);
impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// A connection's task: reads the rest of its request (`buf` holds what
/// was read on accept) under the timeouts and the size limit, then answers.
async fn connection(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    id: ConnId,
    mut buf: Vec<u8>,
    _guard: ConnGuard,
) {
    let metrics = shared.config.metrics.clone();
    let cfg = &shared.config;
    let deadline = Instant::now() + cfg.packet_timeout;
    let request = loop {
        match decode_request(&buf, cfg.max_request_len) {
            Ok(Some((req, used))) => {
                if used != buf.len() {
                    peer_warn!(
                        shared,
                        peer,
                        extra = buf.len() - used,
                        "bytes after the request; closing"
                    );
                    metrics.error("trailing_bytes");
                    return;
                }
                break req;
            }
            Ok(None) => {}
            Err(e) => {
                peer_warn!(shared, peer, reason = %e, "bad request; closing");
                metrics.error(decode_reason(&e));
                return;
            }
        }
        let idle_end = Instant::now() + cfg.idle_timeout;
        let (until, reason) = if idle_end < deadline {
            (idle_end, "idle_timeout")
        } else {
            (deadline, "packet_timeout")
        };
        if buf.capacity() == buf.len() {
            buf.reserve(if buf.len() < 2 { 32 } else { 256 });
        }
        match tokio::time::timeout_at(until, stream.read_buf(&mut buf)).await {
            Err(_) => {
                peer_warn!(
                    shared,
                    peer,
                    got = buf.len(),
                    reason,
                    "request not received in time; closing"
                );
                metrics.error(reason);
                return;
            }
            Ok(Ok(0)) => {
                if !buf.is_empty() {
                    peer_warn!(
                        shared,
                        peer,
                        got = buf.len(),
                        "closed in the middle of a request"
                    );
                    metrics.error("partial_request");
                }
                return;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                debug!(error = %e, "read failed");
                metrics.error("io");
                return;
            }
        }
    };
    drop(buf);
    // The answering half is boxed so that the future of a connection still
    // waiting for its request (the common state with many connections) is
    // small.
    Box::pin(answer(&shared, stream, peer, id, request)).await;
}

async fn answer(
    shared: &Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    id: ConnId,
    request: Request,
) {
    // Only privileged requests pay for getsockname(2); a loopback peer is
    // local whatever address it dialled.
    let local = || {
        peer.ip().to_canonical().is_loopback()
            || stream
                .local_addr()
                .is_ok_and(|l| is_local_peer(peer.ip(), l.ip()))
    };
    let info = match request {
        Request::Alive2(info) => info,
        Request::Watch => {
            let is_local = local();
            watch_registry(shared, stream, peer, is_local).await;
            return;
        }
        other => {
            let reply = reply(shared, peer, &local, other);
            if let Some(bytes) = reply.bytes {
                let _ = stream.write_all(bytes.as_slice()).await;
                if reply.kill {
                    let _ = stream.shutdown().await;
                    shared.killed.notify_one();
                }
            }
            return;
        }
    };
    let metrics = &shared.config.metrics;
    metrics.request("alive2");
    if !local() {
        refuse_non_local(shared, peer, "alive2");
        return;
    }
    let high = info.highest_version;
    let node_port = info.port;
    let name = info.name.clone();
    let result = {
        let mut reg = shared.registry.lock().unwrap();
        let r = reg.register(id, info, now_secs());
        metrics.set_registered(reg.len());
        if r.is_ok() {
            shared.registry_changed();
        }
        r
    };
    let (ok, creation) = match &result {
        Ok(c) => (true, *c),
        Err(e) => {
            peer_warn!(shared, peer, name = ?name, reason = %e, "registration refused");
            metrics.error("register_refused");
            (false, 99)
        }
    };
    let resp = if high >= 6 {
        Response::Alive2X {
            result: u8::from(!ok),
            creation,
        }
    } else {
        Response::Alive2 {
            result: u8::from(!ok),
            creation: creation as u16,
        }
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    if ok {
        shared.holders.lock().unwrap().insert(id, stop_tx);
        info!(name = ?name, port = node_port, creation, "registered");
    }
    let written = stream.write_all(&resp.to_bytes()).await;
    if ok {
        if written.is_ok() {
            hold_registration(&mut stream, stop_rx).await;
        }
        shared.holders.lock().unwrap().remove(&id);
        let mut reg = shared.registry.lock().unwrap();
        if let Some(n) = reg.unregister_conn(id) {
            info!(name = ?n, "unregistered");
            shared.registry_changed();
        }
        metrics.set_registered(reg.len());
    }
}

/// An answer's bytes: built for this request, or the registry's cached
/// NAMES answer.
enum Answer {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Answer {
    fn as_slice(&self) -> &[u8] {
        match self {
            Answer::Owned(v) => v,
            Answer::Shared(a) => a,
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }
}

/// A privileged request from a peer that is not local: logged (limited
/// per peer) and counted; the caller closes the connection.
fn refuse_non_local(shared: &Shared, peer: SocketAddr, request: &str) {
    peer_warn!(shared, peer, request, "refused from a non-local address");
    shared.config.metrics.error("not_local");
}

/// What a request other than ALIVE2 gets.
struct Reply {
    /// The answer; `None`: close without one.
    bytes: Option<Answer>,
    /// A permitted KILL: stop the daemon once the answer is written.
    kill: bool,
}

/// Answers a request other than ALIVE2 (counted, checked for a local
/// peer where the request needs one, logged as before); used by the
/// inline path and by connection tasks alike. `local` is asked only for
/// privileged requests (it may cost a getsockname(2)).
fn reply(shared: &Shared, peer: SocketAddr, local: &dyn Fn() -> bool, request: Request) -> Reply {
    let metrics = &shared.config.metrics;
    metrics.request(request.kind());
    let none = Reply {
        bytes: None,
        kill: false,
    };
    let owned = |r: Response| Reply {
        bytes: Some(Answer::Owned(r.to_bytes())),
        kill: false,
    };
    let needs_local = matches!(
        request,
        Request::Alive2(_) | Request::Dump | Request::Kill | Request::Stop { .. }
    );
    if needs_local && !local() {
        refuse_non_local(shared, peer, request.kind());
        return none;
    }
    match request {
        Request::PortPlease2 { name } => {
            let mut out = Vec::with_capacity(32);
            let found = match shared.registry.lock().unwrap().lookup(&name) {
                Some(i) => {
                    encode_port2_found(i, &mut out);
                    true
                }
                None => {
                    Response::Port2NotFound.encode(&mut out);
                    false
                }
            };
            debug!(name = ?name, found, "port please");
            Reply {
                bytes: Some(Answer::Owned(out)),
                kill: false,
            }
        }
        Request::Names => Reply {
            bytes: Some(Answer::Shared(
                shared.registry.lock().unwrap().names_response(shared.port),
            )),
            kill: false,
        },
        Request::Dump => Reply {
            bytes: Some(Answer::Owned(
                shared.registry.lock().unwrap().dump_response(shared.port),
            )),
            kill: false,
        },
        Request::Kill => {
            let allowed =
                shared.config.relaxed_command_check || shared.registry.lock().unwrap().is_empty();
            if allowed {
                warn!(%peer, "KILL_REQ accepted; stopping");
            } else {
                peer_warn!(shared, peer, "KILL_REQ refused: nodes are registered");
                metrics.error("kill_refused");
            }
            Reply {
                kill: allowed,
                ..owned(Response::Kill { killed: allowed })
            }
        }
        Request::Stop { name } => {
            if !shared.config.relaxed_command_check {
                peer_warn!(shared, peer, name = ?name, "STOP_REQ refused: no relaxed command check");
                metrics.error("stop_refused");
                return none;
            }
            let conn = {
                let mut reg = shared.registry.lock().unwrap();
                let c = reg.stop(&name);
                metrics.set_registered(reg.len());
                if c.is_some() {
                    shared.registry_changed();
                }
                c
            };
            let stopped = match conn {
                Some(c) => {
                    if let Some(tx) = shared.holders.lock().unwrap().remove(&c) {
                        let _ = tx.send(());
                    }
                    info!(name = ?name, "unregistered by STOP_REQ");
                    true
                }
                None => false,
            };
            owned(Response::Stop { stopped })
        }
        other => {
            debug!(request = other.kind(), "unhandled request");
            none
        }
    }
}

/// PORT2_RESP for a registered node, written from the registry's entry
/// (no copy of the entry), byte for byte `Response::Port2Found`.
fn encode_port2_found(n: &erlkube_proto::epmd::NodeInfo, out: &mut Vec<u8>) {
    use erlkube_proto::epmd::PORT2_RESP;
    out.push(PORT2_RESP);
    out.push(0);
    n.encode_fields(out);
}

/// Keeps a registration's connection until the node closes it, sends
/// anything (OTP treats that as the end too), or STOP closes it.
/// A WATCH connection (erlkube's own request, see
/// [`erlkube_proto::epmd`]): `WATCH_RESP`, then the NAMES answer as a
/// frame at once and after every change of the registry, until the
/// client closes (or sends anything) or a write does not finish within
/// the packet timeout. Local peers only, at most [`MAX_WATCHERS`].
async fn watch_registry(
    shared: &Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    local: bool,
) {
    let metrics = &shared.config.metrics;
    metrics.request("watch");
    if !local {
        refuse_non_local(shared, peer, "watch");
        return;
    }
    struct Watching<'a>(&'a AtomicUsize);
    impl Drop for Watching<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let _watching = Watching(&shared.watchers);
    if shared.watchers.fetch_add(1, Ordering::AcqRel) >= MAX_WATCHERS {
        peer_warn!(
            shared,
            peer,
            max = MAX_WATCHERS,
            "too many WATCH connections; closing"
        );
        metrics.error("watch_limit");
        return;
    }
    debug!("watching the registry");
    let mut changes = shared.changes.subscribe();
    let mut out = vec![WATCH_RESP];
    let mut byte = [0u8; 1];
    loop {
        // Marked seen before the registry is read: a change made after
        // this point wakes the loop again.
        changes.borrow_and_update();
        let names = shared.registry.lock().unwrap().names_response(shared.port);
        encode_watch_frame(&names, &mut out);
        let write = tokio::time::timeout(shared.config.packet_timeout, stream.write_all(&out));
        match write.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(error = %e, "watch connection failed");
                return;
            }
            Err(_) => {
                peer_warn!(shared, peer, "watching client does not read; closing");
                metrics.error("watch_stalled");
                return;
            }
        }
        out.clear();
        tokio::select! {
            r = changes.changed() => {
                if r.is_err() {
                    return; // the daemon is stopping
                }
            }
            r = stream.read(&mut byte) => {
                match r {
                    Ok(0) => debug!("watch connection closed"),
                    Ok(_) => {
                        peer_warn!(shared, peer, "data on a WATCH connection; closing");
                        metrics.error("trailing_bytes");
                    }
                    Err(e) => debug!(error = %e, "watch connection failed"),
                }
                return;
            }
        }
    }
}

async fn hold_registration(stream: &mut TcpStream, stop: oneshot::Receiver<()>) {
    let mut byte = [0u8; 1];
    tokio::select! {
        r = stream.read(&mut byte) => match r {
            Ok(0) => debug!("registration connection closed"),
            Ok(_) => warn!("data on a registration connection; unregistering"),
            Err(e) => debug!(error = %e, "registration connection failed"),
        },
        _ = stop => debug!("closed by STOP_REQ"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_same_address_are_local() {
        let lo4: IpAddr = "127.0.0.1".parse().unwrap();
        let lo4b: IpAddr = "127.1.2.3".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let host: IpAddr = "10.1.2.3".parse().unwrap();
        for p in [lo4, lo4b, lo6, mapped] {
            assert!(is_local_peer(p, host), "{p}");
        }
        // The host's own address connecting to itself.
        assert!(is_local_peer(host, host));
        assert!(is_local_peer("::ffff:10.1.2.3".parse().unwrap(), host));
    }

    #[test]
    fn other_hosts_are_not_local() {
        let host: IpAddr = "10.1.2.3".parse().unwrap();
        for p in [
            "10.1.2.4",
            "192.168.0.1",
            "128.0.0.1",
            "fe80::1",
            "2001:db8::1",
        ] {
            assert!(!is_local_peer(p.parse().unwrap(), host), "{p}");
        }
        let host6: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(!is_local_peer("2001:db8::1".parse().unwrap(), host6));
        assert!(is_local_peer(host6, host6));
    }
}

#[cfg(test)]
mod warn_tests {
    use super::*;

    #[test]
    fn warnings_are_limited_per_peer_and_summed_when_the_window_ends() {
        let w = PeerWarnings::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let shown = (0..100).filter(|_| w.allow(a, t0)).count();
        assert_eq!(shown, WARN_BURST as usize);
        assert!(w.allow(b, t0), "another peer has its own budget");
        assert!(w.flush(t0 + WARN_WINDOW / 2).is_empty());
        assert_eq!(
            w.flush(t0 + WARN_WINDOW),
            vec![(a, 100 - WARN_BURST as u64)]
        );
        assert!(w.allow(a, t0 + WARN_WINDOW), "a new window");
        // Many peers share one bucket past the cap: memory stays bounded.
        for i in 0..(WARN_PEERS as u32 + 100) {
            w.allow(IpAddr::V4(i.into()), t0);
        }
        assert!(w.peers.lock().unwrap().len() <= WARN_PEERS + 1);
    }
}

#[cfg(test)]
mod inline_tests {
    use super::*;
    use erlkube_proto::epmd::{parse_names, NodeInfo, NODE_TYPE_NORMAL};

    fn shared_with_nodes(n: u16) -> Arc<Shared> {
        let shared = Arc::new(Shared {
            registry: Mutex::new(Registry::new()),
            config: Config::default(),
            port: 4369,
            holders: Mutex::new(HashMap::new()),
            killed: Notify::new(),
            next_id: AtomicU64::new(1_000_000),
            warns: PeerWarnings::default(),
            changes: watch::Sender::new(0),
            watchers: AtomicUsize::new(0),
        });
        let mut reg = shared.registry.lock().unwrap();
        for i in 0..n {
            let info = NodeInfo {
                port: 20000 + i,
                node_type: NODE_TYPE_NORMAL,
                protocol: 0,
                highest_version: 6,
                lowest_version: 5,
                name: format!("{i:0>200}"),
                extra: Vec::new(),
            };
            reg.register(u64::from(i) + 1, info, 0).unwrap();
        }
        drop(reg);
        shared
    }

    /// An answer larger than the socket takes at once (small send buffer,
    /// small peer window): the inline path writes what it can and a task
    /// writes the rest; the peer gets it whole and the connection is
    /// counted closed.
    #[tokio::test]
    async fn an_answer_the_socket_does_not_take_whole_is_finished_by_a_task() {
        use std::io::{Read, Write};
        let shared = shared_with_nodes(400);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let client =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        client.connect(&addr.into()).unwrap();
        let mut client: std::net::TcpStream = client.into();
        client.write_all(&Request::Names.to_bytes()).unwrap();
        let (server, peer) = l.accept().unwrap();
        // The request is there before the inline read (peek blocks).
        server.peek(&mut [0u8; 1]).unwrap();
        server.set_nonblocking(true).unwrap();
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .unwrap();
        let mut conns = JoinSet::new();
        let mut scratch = vec![0u8; INLINE_READ];
        accepted(&shared, &mut conns, server, peer, &mut scratch);
        assert_eq!(conns.len(), 1, "the rest of the answer is left to a task");
        assert_eq!(shared.config.metrics.open_connections(), 1);
        let got = tokio::task::spawn_blocking(move || {
            let mut v = Vec::new();
            client.read_to_end(&mut v).unwrap();
            v
        })
        .await
        .unwrap();
        let expected = shared.registry.lock().unwrap().names_response(4369);
        assert_eq!(got.len(), expected.len());
        assert_eq!(&got[..], &expected[..]);
        assert_eq!(parse_names(&got).unwrap().1.len(), 400);
        while conns.join_next().await.is_some() {}
        assert_eq!(shared.config.metrics.open_connections(), 0);
        assert_eq!(shared.config.metrics.requests("names"), 1);
    }

    /// A complete PORT_PLEASE2 is answered with no task at all.
    #[tokio::test]
    async fn a_complete_request_is_answered_without_a_task() {
        use std::io::{Read, Write};
        let shared = shared_with_nodes(1);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let name = format!("{:0>200}", 0);
        client
            .write_all(&Request::PortPlease2 { name }.to_bytes())
            .unwrap();
        let (server, peer) = l.accept().unwrap();
        server.peek(&mut [0u8; 1]).unwrap();
        server.set_nonblocking(true).unwrap();
        let mut conns = JoinSet::new();
        let mut scratch = vec![0u8; INLINE_READ];
        accepted(&shared, &mut conns, server, peer, &mut scratch);
        assert_eq!(conns.len(), 0);
        assert_eq!(shared.config.metrics.open_connections(), 0);
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        let (info, _) = erlkube_proto::epmd::decode_port2_response(&got)
            .unwrap()
            .unwrap();
        assert_eq!(info.unwrap().port, 20000);
    }

    /// WATCH from a peer that is not local is closed unanswered and
    /// counted; from a local one it gets WATCH_RESP and the registry.
    #[tokio::test]
    async fn watch_is_for_local_peers_only() {
        let shared = shared_with_nodes(2);
        for local in [false, true] {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            let (server, peer) = l.accept().await.unwrap();
            let task = tokio::spawn({
                let shared = shared.clone();
                async move { watch_registry(&shared, server, peer, local).await }
            });
            let mut got = vec![0u8; 1];
            let n = client.read(&mut got).await.unwrap();
            if local {
                assert_eq!((n, got[0]), (1, WATCH_RESP));
                let mut len = [0u8; 4];
                client.read_exact(&mut len).await.unwrap();
                let mut names = vec![0u8; u32::from_be_bytes(len) as usize];
                client.read_exact(&mut names).await.unwrap();
                assert_eq!(parse_names(&names).unwrap().1.len(), 2);
                drop(client);
            } else {
                assert_eq!(n, 0, "a non-local WATCH got an answer");
            }
            task.await.unwrap();
        }
        assert_eq!(shared.config.metrics.errors("not_local"), 1);
        assert_eq!(shared.config.metrics.requests("watch"), 2);
        assert_eq!(shared.watchers.load(Ordering::Acquire), 0);
    }
}
