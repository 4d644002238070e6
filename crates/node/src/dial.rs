//! Dialling: finds a peer's address (known address, known port, or
//! epmd), connects, runs the initiator side of the handshake, and keeps
//! to one connection per peer (waits for an inbound attempt under way,
//! resolves simultaneous connects). Also the per-thread cache of the last
//! peer's outbound queue that senders go through.

use std::sync::{Arc, Weak};

use erlkube_proto::dist::handshake::{Initiator, Status, Step};
use erlkube_proto::dist::{Established, HandshakeError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::connection::{start_connection, Transport};
use crate::handshake::{drive, now, HsFail};
use crate::outq::OutQueue;
use crate::{epmd, ConnHandle, ConnectError, Inner};

/// Returns the connection to `node`, dialling it if needed.
pub(crate) async fn connect(inner: &Arc<Inner>, node: &str) -> Result<ConnHandle, ConnectError> {
    if let Some(h) = inner.live_connection(node) {
        return Ok(h);
    }
    if *inner.shutdown.borrow() {
        return Err(ConnectError::Shutdown);
    }
    let Ok((alive, host)) =
        erlkube_proto::name::check_node_name(node, erlkube_proto::name::NameMode::Any)
    else {
        return Err(ConnectError::InvalidName(node.to_owned()));
    };
    let lock = {
        let mut conns = inner.conns.lock().expect("conns");
        conns.locks.entry(node.to_owned()).or_default().clone()
    };
    let _guard = lock.lock().await;
    let deadline = tokio::time::Instant::now() + inner.config.setup_timeout;
    // A connection to the node this node just closed: wait until the peer
    // closed its end too (bounded by the connection's CLOSE_WAIT), else
    // the peer may still hold it when the new handshake arrives and (OTP
    // answering "alive") tear the new connection down right after it is up.
    let mut close_done = inner.close_done.subscribe();
    while inner
        .conns
        .lock()
        .expect("conns")
        .closing
        .contains_key(node)
    {
        if tokio::time::timeout_at(deadline, close_done.changed())
            .await
            .is_err()
        {
            break;
        }
    }
    let mut accept_done = inner.accept_done.subscribe();
    let mut events = inner.events.subscribe();
    let mut first = true;
    loop {
        if !first && tokio::time::Instant::now() >= deadline {
            return Err(ConnectError::Timeout(node.to_owned()));
        }
        first = false;
        // An inbound handshake from the node under way: wait for its
        // outcome instead of dialling (a dial now would race it, and one of
        // the two connections would replace the other). Checked before
        // every dial, retries included: a retry after a lost simultaneous
        // connect must not race the winner's handshake either.
        if let Some(h) = await_inbound(inner, node, deadline, &mut accept_done).await? {
            return Ok(h);
        }
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
                        if let Some(h) = inner.live_connection(node) {
                            return Some(h);
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
            }
            Err(ConnectError::Handshake {
                source: HandshakeError::AliveRefused,
                ..
            }) => {
                // We said "false" to "alive": a connection to the node came
                // up meanwhile, or its own attempt is under way here. The
                // next round returns that connection (or waits for it).
                tracing::debug!(peer = %node, "alive refused; using the peer's connection");
            }
            Err(e) => {
                tracing::debug!(peer = %node, error = %e, "dial failed");
                return Err(e);
            }
        }
    }
}

/// Waits while an inbound handshake from `node` is under way. Returns the
/// connection if one is up; otherwise marks `node` pending (in the same
/// critical section as the check, so an inbound attempt arriving from now
/// on sees the simultaneous case) and returns `None`: the caller dials.
async fn await_inbound(
    inner: &Arc<Inner>,
    node: &str,
    deadline: tokio::time::Instant,
    accept_done: &mut tokio::sync::watch::Receiver<()>,
) -> Result<Option<ConnHandle>, ConnectError> {
    loop {
        if let Some(h) = inner.live_connection(node) {
            return Ok(Some(h));
        }
        {
            let mut conns = inner.conns.lock().expect("conns");
            if let Some(h) = conns.up.get(node) {
                if h.tx.is_closed() {
                    // Closed since the check above: unregistered on the
                    // next round, then dialled anew.
                    continue;
                }
                return Ok(Some(h.clone()));
            }
            if !conns.accepting.contains(node) {
                conns.pending.insert(node.to_owned());
                return Ok(None);
            }
        }
        if tokio::time::timeout_at(deadline, accept_done.changed())
            .await
            .is_err()
        {
            return Err(ConnectError::Timeout(node.to_owned()));
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
) -> Result<(Transport, Established), ConnectError> {
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
    let stream = connect_any(node, &addrs, timeout).await?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = inner.config.tls.clone() else {
        let (s, est) = dial_handshake(inner, node, stream).await?;
        return Ok((Transport::Tcp(s), est));
    };
    // TLS before any distribution byte; the server's certificate must name
    // the host of the node dialled (as `inet_tls_dist`'s SNI check).
    let r = tokio::time::timeout(timeout, tls.connect(host, stream)).await;
    let stream = match r {
        Ok(Ok(s)) => s,
        Ok(Err(refusal)) => {
            tracing::warn!(peer = %node, reason = refusal.reason(), detail = refusal.detail(), "TLS connection failed");
            return Err(ConnectError::Tls {
                node: node.to_owned(),
                reason: refusal.to_string(),
            });
        }
        Err(_) => {
            tracing::warn!(peer = %node, reason = "tls_timeout", "TLS connection failed: no TLS handshake within the setup time");
            return Err(ConnectError::Timeout(node.to_owned()));
        }
    };
    let (s, est) = dial_handshake(inner, node, stream).await?;
    Ok((Transport::Stream(Box::new(s)), est))
}

/// The initiator side of the handshake over `stream` (TCP or TLS).
async fn dial_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    inner: &Arc<Inner>,
    node: &str,
    mut stream: S,
) -> Result<(S, Established), ConnectError> {
    let mut init = Initiator::new(
        crate::handshake::config(inner),
        node,
        crate::random_u32(),
        now(),
    );
    // Answer to "alive": true (replace the peer's stale connection) only if
    // this node has no connection to the peer and no inbound attempt from
    // it under way; else that one is the connection and this dial yields.
    let still_pending = || {
        let conns = inner.conns.lock().expect("conns");
        !conns.up.contains_key(node) && !conns.accepting.contains(node)
    };
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
