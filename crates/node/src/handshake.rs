//! The handshake driver: runs one side of the sans-IO handshake
//! ([`erlkube_proto::dist::handshake`]) over a stream (TCP, or TLS over
//! TCP) to completion.
//! Knows nothing of the connection table; its callers (`accept`, `dial`)
//! answer the acceptor's status and the initiator's "alive" question.

use std::time::Instant;

use erlkube_proto::dist::handshake::{HandshakeConfig, Side, Status, Step};
use erlkube_proto::dist::{Established, HandshakeError, HandshakeEvent};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Inner;

pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The handshake settings of this node.
pub(crate) fn config(inner: &Inner) -> HandshakeConfig {
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
    if inner.config.tls.is_some() {
        cfg.framing = erlkube_proto::dist::HandshakeFraming::FourByte;
    }
    cfg
}

pub(crate) enum HsFail {
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
pub(crate) async fn drive<S: Side, T: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut T,
    side: &mut S,
    mut decide: impl FnMut(&erlkube_proto::dist::PeerName) -> Status,
    pending: impl Fn() -> bool,
) -> Result<Established, HsFail> {
    let mut buf = vec![0u8; 4096];
    loop {
        // Write whatever is queued (also after an error: e.g. not_allowed).
        // A flush is a no-op on TCP and sends the records inside TLS.
        while let Some(t) = side.poll_transmit() {
            stream.write_all(&t).await.map_err(HsFail::Io)?;
        }
        stream.flush().await.map_err(HsFail::Io)?;
        while let Some(ev) = side.poll_event() {
            match ev {
                HandshakeEvent::NameReceived(p) => {
                    let status = decide(&p);
                    let r = side.decide(status, now());
                    while let Some(t) = side.poll_transmit() {
                        stream.write_all(&t).await.map_err(HsFail::Io)?;
                    }
                    stream.flush().await.map_err(HsFail::Io)?;
                    r.map_err(HsFail::Protocol)?;
                }
                HandshakeEvent::Established(e) => return Ok(e),
            }
        }
        let deadline = side.poll_timeout().map(tokio::time::Instant::from_std);
        let read = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, stream.read(&mut buf)).await.ok(),
                None => Some(stream.read(&mut buf).await),
            }
        };
        match read.await {
            None => {
                side.handle_timeout(now()).map_err(HsFail::Protocol)?;
            }
            Some(Ok(0)) => return Err(HsFail::Closed(side.step())),
            Some(Ok(n)) => {
                side.set_alive(pending());
                let r = side.handle_input(&buf[..n], now());
                if let Err(e) = r {
                    while let Some(t) = side.poll_transmit() {
                        let _ = stream.write_all(&t).await;
                    }
                    let _ = stream.flush().await;
                    return Err(HsFail::Protocol(e));
                }
            }
            Some(Err(e)) => return Err(HsFail::Io(e)),
        }
    }
}
