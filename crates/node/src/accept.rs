//! The listener: accepts TCP connections (and runs the server side of TLS
//! first when the node speaks TLS distribution), then the acceptor side of
//! the handshake, deciding each attempt against the connection table as
//! net_kernel does (one connection per peer).

use std::sync::{Arc, Weak};

use erlkube_proto::dist::handshake::{simultaneous_status, Acceptor, Status};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

use crate::connection::{start_connection, Transport};
use crate::handshake::{drive, now, HsFail};
use crate::Inner;

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

async fn accept_one(inner: Arc<Inner>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = inner.config.tls.clone() else {
        return accept_handshake(inner, stream, Transport::Tcp).await;
    };
    // TLS before any distribution byte, within the setup time.
    let r = tokio::time::timeout(inner.config.setup_timeout, tls.accept(stream)).await;
    match r {
        Ok(Ok(s)) => {
            accept_handshake(inner, s, |s| Transport::Stream(Box::new(s))).await;
        }
        Ok(Err(refusal)) => tracing::warn!(
            reason = refusal.reason(),
            detail = refusal.detail(),
            "TLS connection refused"
        ),
        Err(_) => tracing::warn!(
            reason = "tls_timeout",
            "TLS connection refused: no TLS handshake within the setup time"
        ),
    }
}

async fn accept_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    inner: Arc<Inner>,
    mut stream: S,
    transport: impl FnOnce(S) -> Transport,
) {
    let mut acc = Acceptor::new(crate::handshake::config(&inner), crate::random_u32(), now());
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
            start_connection(inner.clone(), transport(stream), est);
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
