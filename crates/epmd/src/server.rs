//! The port-mapper daemon on tokio.
//!
//! [`run`] serves already-bound listeners until a shutdown future resolves
//! or a permitted `KILL_REQ` arrives, so tests bind `127.0.0.1:0` and the
//! binary binds OTP's addresses ([`bind_default`]).
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use erlkube_proto::epmd::registry::{ConnId, Registry};
use erlkube_proto::epmd::{decode_request, DecodeError, Request, Response, MAX_REQUEST_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
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

/// Binds one listener with `SO_REUSEADDR`, `IPV6_V6ONLY` for IPv6, and the
/// system's largest backlog.
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
    TcpListener::from_std(sock.into())
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
}

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
    });
    for l in &listeners {
        info!(addr = %l.local_addr()?, "epmd listening");
    }
    let mut conns = JoinSet::new();
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
                if let std::task::Poll::Ready(r) = l.poll_accept(cx) {
                    return std::task::Poll::Ready(r);
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
            accepted = accept_any => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        shared.config.metrics.error("accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                while conns.try_join_next().is_some() {}
                let metrics = &shared.config.metrics;
                if metrics.open_connections() as usize >= shared.config.max_connections {
                    metrics.error("connection_limit");
                    peer_warn!(shared, peer, "connection limit reached; closing");
                    continue;
                }
                metrics.connection_opened();
                let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                let span = tracing::debug_span!("conn", id, %peer);
                conns.spawn(connection(shared.clone(), stream, peer, id).instrument(span));
            }
        }
    };
    conns.shutdown().await;
    info!(?exit, "epmd stopped");
    Ok(exit)
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

struct ConnGuard<'a>(&'a Metrics);
impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

async fn connection(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr, id: ConnId) {
    let metrics = shared.config.metrics.clone();
    let _guard = ConnGuard(&metrics);
    let cfg = &shared.config;
    let deadline = Instant::now() + cfg.packet_timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(32);
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
    let metrics = &shared.config.metrics;
    metrics.request(request.kind());
    let needs_local = matches!(
        request,
        Request::Alive2(_) | Request::Dump | Request::Kill | Request::Stop { .. }
    );
    // Only privileged requests pay for getsockname(2); a loopback peer is
    // local whatever address it dialled.
    let local_peer = || {
        let ip = peer.ip().to_canonical();
        ip.is_loopback()
            || stream
                .local_addr()
                .is_ok_and(|l| is_local_peer(peer.ip(), l.ip()))
    };
    if needs_local && !local_peer() {
        peer_warn!(
            shared,
            peer,
            request = request.kind(),
            "refused from a non-local address"
        );
        metrics.error("not_local");
        return;
    }
    match request {
        Request::Alive2(info) => {
            let high = info.highest_version;
            let node_port = info.port;
            let name = info.name.clone();
            let result = {
                let mut reg = shared.registry.lock().unwrap();
                let r = reg.register(id, info, now_secs());
                metrics.set_registered(reg.len());
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
                }
                metrics.set_registered(reg.len());
            }
        }
        Request::PortPlease2 { name } => {
            let resp = match shared.registry.lock().unwrap().lookup(&name) {
                Some(i) => Response::Port2Found(i.clone()),
                None => Response::Port2NotFound,
            };
            debug!(name = ?name, found = matches!(resp, Response::Port2Found(_)), "port please");
            let _ = stream.write_all(&resp.to_bytes()).await;
        }
        Request::Names => {
            let bytes = shared.registry.lock().unwrap().names_response(shared.port);
            let _ = stream.write_all(&bytes).await;
        }
        Request::Dump => {
            let bytes = shared.registry.lock().unwrap().dump_response(shared.port);
            let _ = stream.write_all(&bytes).await;
        }
        Request::Kill => {
            let allowed =
                shared.config.relaxed_command_check || shared.registry.lock().unwrap().is_empty();
            let _ = stream
                .write_all(&Response::Kill { killed: allowed }.to_bytes())
                .await;
            if allowed {
                warn!(%peer, "KILL_REQ accepted; stopping");
                let _ = stream.shutdown().await;
                shared.killed.notify_one();
            } else {
                peer_warn!(shared, peer, "KILL_REQ refused: nodes are registered");
                metrics.error("kill_refused");
            }
        }
        Request::Stop { name } => {
            if !shared.config.relaxed_command_check {
                peer_warn!(shared, peer, name = ?name, "STOP_REQ refused: no relaxed command check");
                metrics.error("stop_refused");
                return;
            }
            let conn = {
                let mut reg = shared.registry.lock().unwrap();
                let c = reg.stop(&name);
                metrics.set_registered(reg.len());
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
            let _ = stream
                .write_all(&Response::Stop { stopped }.to_bytes())
                .await;
        }
        other => {
            debug!(request = other.kind(), "unhandled request");
        }
    }
}

/// Keeps a registration's connection until the node closes it, sends
/// anything (OTP treats that as the end too), or STOP closes it.
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
