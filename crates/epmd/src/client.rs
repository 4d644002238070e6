//! An async port-mapper client (works with OTP's `epmd` and erlkube's).
//!
//! Every call opens a new connection, as OTP's `erl_epmd` does. A
//! registration is the connection itself: keep the [`Registration`] alive
//! for as long as the node should stay registered; dropping it unregisters.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use erlkube_proto::epmd::{
    decode_alive2_response, decode_port2_response, decode_watch_frame, parse_names, DecodeError,
    NameEntry, NodeInfo, Request, WATCH_RESP,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Client errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No address of the host accepted a connection.
    #[error("cannot connect to epmd at {host}:{port}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: io::Error,
    },
    /// Writing the request failed.
    #[error("cannot write to epmd")]
    Write(#[source] io::Error),
    /// Reading the answer failed.
    #[error("epmd connection failed")]
    Io(#[from] io::Error),
    /// No complete answer within the client's timeout.
    #[error("epmd did not answer in time")]
    Timeout,
    /// The daemon closed the connection without a (complete) answer.
    #[error("epmd closed the connection without answering")]
    NoAnswer,
    /// The daemon closed a WATCH connection without answering: OTP's
    /// `epmd` does not serve erlkube's request, and erlkube's refuses it
    /// to a non-local peer and past its limit of watchers. Poll with
    /// PORT_PLEASE2 or NAMES instead.
    #[error(
        "epmd closed the WATCH request unanswered (OTP's epmd, a non-local peer, or too many watchers)"
    )]
    WatchUnsupported,
    /// The daemon refused the registration (result code; name taken, …).
    #[error("epmd refused the registration (result {0})")]
    Refused(u8),
    /// The answer is not valid protocol.
    #[error("malformed answer from epmd")]
    Decode(#[from] DecodeError),
}

/// The answer to NAMES.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The port the daemon says it listens on.
    pub epmd_port: u32,
    /// Registered nodes, in the daemon's order.
    pub nodes: Vec<NameEntry>,
}

/// The answer to KILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReply {
    /// `OK`: the daemon is stopping.
    Killed,
    /// `NO`: nodes are registered and relaxed checking is off.
    Refused,
}

/// The answer to STOP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReply {
    /// `STOPPED`: the name was unregistered.
    Stopped,
    /// `NOEXIST`: no such name.
    NoSuchName,
}

/// A port-mapper client for one daemon (`host`, `port`).
///
/// ```no_run
/// # async fn demo() -> Result<(), erlkube_epmd::ClientError> {
/// let epmd = erlkube_epmd::Client::new("127.0.0.1", 4369);
/// // erl's `epmd -names`
/// println!("{:?}", epmd.names().await?);
/// // where does node app@this-host listen?
/// if let Some(info) = epmd.port_please("app").await? {
///     println!("app listens on port {}", info.port);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    host: String,
    port: u16,
    timeout: Duration,
}

/// A live registration: the open connection to the daemon and the creation
/// it assigned. Dropping it (or [`Registration::unregister`]) ends the
/// registration.
#[derive(Debug)]
pub struct Registration {
    name: String,
    creation: u32,
    stream: TcpStream,
}

impl Registration {
    /// The node name registered.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The creation the daemon assigned (use it in pids, ports and refs).
    pub fn creation(&self) -> u32 {
        self.creation
    }

    /// Resolves when the daemon closes the registration (it stopped, or a
    /// STOP_REQ removed the name). Any data from the daemon also counts.
    pub async fn closed(&mut self) {
        let mut b = [0u8; 1];
        let _ = self.stream.read(&mut b).await;
    }

    /// Ends the registration now (same as dropping it).
    pub fn unregister(self) {}
}

impl Client {
    /// A client for the daemon at `host` (name or address) and `port`, with
    /// a 10-second timeout per call.
    pub fn new(host: impl Into<String>, port: u16) -> Client {
        Client {
            host: host.into(),
            port,
            timeout: Duration::from_secs(10),
        }
    }

    /// A client for the local daemon on `port` (tries ::1, then 127.0.0.1,
    /// like OTP's `epmd` command-line client).
    pub fn local(port: u16) -> Client {
        Client::new("localhost", port)
    }

    /// Sets the timeout of each call (connect + request + answer).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The daemon's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    async fn connect(&self) -> Result<TcpStream, ClientError> {
        let mut addrs: Vec<SocketAddr> = if self.host == "localhost" {
            vec![
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, self.port)),
                SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, self.port)),
            ]
        } else {
            tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|source| ClientError::Connect {
                    host: self.host.clone(),
                    port: self.port,
                    source,
                })?
                .collect()
        };
        addrs.dedup();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(ClientError::Connect {
            host: self.host.clone(),
            port: self.port,
            source: last,
        })
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Connects and writes the request.
    async fn open(&self, req: &Request) -> Result<TcpStream, ClientError> {
        let mut s = self.connect().await?;
        s.write_all(&req.to_bytes())
            .await
            .map_err(ClientError::Write)?;
        Ok(s)
    }

    /// Sends `req` and hands back the connection, for callers that read
    /// the answer their own way (erlkube's `epmd -names`, `-kill` and
    /// `-stop` print it byte for byte as OTP's `epmd` does). Connecting and
    /// writing share the client's timeout; each read has its own.
    pub async fn send(&self, req: &Request) -> Result<Exchange, ClientError> {
        let stream = self.timed(self.open(req)).await?;
        Ok(Exchange {
            stream,
            timeout: self.timeout,
        })
    }

    async fn request_to_eof(&self, req: Request) -> Result<Vec<u8>, ClientError> {
        self.timed(async {
            let mut s = self.open(&req).await?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await?;
            Ok(out)
        })
        .await
    }

    /// Registers a node (ALIVE2). The returned guard holds the registration.
    pub async fn register(&self, info: NodeInfo) -> Result<Registration, ClientError> {
        let name = info.name.clone();
        self.timed(async {
            let mut s = self.open(&Request::Alive2(info)).await?;
            let mut buf = Vec::with_capacity(8);
            loop {
                if let Some((reply, _)) = decode_alive2_response(&buf)? {
                    if reply.result != 0 {
                        return Err(ClientError::Refused(reply.result));
                    }
                    return Ok(Registration {
                        name,
                        creation: reply.creation,
                        stream: s,
                    });
                }
                if s.read_buf(&mut buf).await? == 0 {
                    return Err(ClientError::NoAnswer);
                }
            }
        })
        .await
    }

    /// Looks up `name` (PORT_PLEASE2): `Ok(None)` when it is not registered.
    pub async fn port_please(&self, name: &str) -> Result<Option<NodeInfo>, ClientError> {
        let buf = self
            .request_to_eof(Request::PortPlease2 { name: name.into() })
            .await?;
        match decode_port2_response(&buf)? {
            Some((info, _)) => Ok(info),
            None => Err(ClientError::NoAnswer),
        }
    }

    /// Lists registered names (NAMES).
    pub async fn names(&self) -> Result<Names, ClientError> {
        let buf = self.request_to_eof(Request::Names).await?;
        if buf.is_empty() {
            return Err(ClientError::NoAnswer);
        }
        let (epmd_port, nodes) = parse_names(&buf)?;
        Ok(Names { epmd_port, nodes })
    }

    /// Follows the registry (erlkube's WATCH request, local peers only):
    /// the returned [`Watch`] yields the NAMES answer now and after every
    /// registration or unregistration. [`ClientError::WatchUnsupported`]
    /// from a daemon that does not serve it (OTP's `epmd`). Connecting and
    /// the daemon's first answer share the client's timeout; waiting for
    /// changes has none.
    pub async fn watch(&self) -> Result<Watch, ClientError> {
        self.timed(async {
            let mut stream = self.open(&Request::Watch).await?;
            let mut ack = [0u8; 1];
            match stream.read(&mut ack).await? {
                0 => Err(ClientError::WatchUnsupported),
                _ if ack[0] == WATCH_RESP => Ok(Watch {
                    stream,
                    buf: Vec::new(),
                }),
                _ => Err(ClientError::Decode(DecodeError::UnexpectedResponse(ack[0]))),
            }
        })
        .await
    }

    /// The daemon's DUMP text (local peers only), without the port prefix.
    pub async fn dump(&self) -> Result<String, ClientError> {
        let buf = self.request_to_eof(Request::Dump).await?;
        if buf.len() < 4 {
            return Err(ClientError::NoAnswer);
        }
        Ok(String::from_utf8_lossy(&buf[4..]).into_owned())
    }

    /// Asks the daemon to stop (KILL).
    pub async fn kill(&self) -> Result<KillReply, ClientError> {
        let buf = self.request_to_eof(Request::Kill).await?;
        match buf.get(..2) {
            Some(b"OK") => Ok(KillReply::Killed),
            Some(_) => Ok(KillReply::Refused),
            None => Err(ClientError::NoAnswer),
        }
    }

    /// Forcibly unregisters `name` (STOP; needs relaxed command checking on
    /// the daemon, which otherwise closes without answering: `NoAnswer`).
    pub async fn stop(&self, name: &str) -> Result<StopReply, ClientError> {
        let buf = self
            .request_to_eof(Request::Stop { name: name.into() })
            .await?;
        match buf.get(..7) {
            Some(b"STOPPED") => Ok(StopReply::Stopped),
            Some(b"NOEXIST") => Ok(StopReply::NoSuchName),
            _ => Err(ClientError::NoAnswer),
        }
    }
}

/// An open WATCH connection ([`Client::watch`]).
#[derive(Debug)]
pub struct Watch {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Watch {
    /// The next NAMES answer: the first at once, then one after each
    /// change of the registry (changes close together may come as one).
    /// [`ClientError::NoAnswer`] once the daemon closed the connection.
    pub async fn next(&mut self) -> Result<Names, ClientError> {
        loop {
            if let Some((body, used)) = decode_watch_frame(&self.buf)? {
                let (epmd_port, nodes) = parse_names(body)?;
                self.buf.drain(..used);
                return Ok(Names { epmd_port, nodes });
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ClientError::NoAnswer);
            }
        }
    }
}

/// A request sent with [`Client::send`], its answer still to read.
#[derive(Debug)]
pub struct Exchange {
    stream: TcpStream,
    timeout: Duration,
}

impl Exchange {
    /// Reads until `n` bytes have arrived or the daemon closed the
    /// connection (fewer bytes then). A failed read, or none within the
    /// client's timeout, is an error even after some bytes.
    pub async fn read_up_to(&mut self, n: usize) -> Result<Vec<u8>, ClientError> {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match tokio::time::timeout(self.timeout, self.stream.read(&mut buf[got..])).await {
                Ok(Ok(0)) => break,
                Ok(Ok(k)) => got += k,
                Ok(Err(e)) => return Err(ClientError::Io(e)),
                Err(_) => return Err(ClientError::Timeout),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    /// Reads to the end of the answer, keeping what arrived before a failed
    /// read or a read that timed out.
    pub async fn read_rest(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(Ok(k)) = tokio::time::timeout(self.timeout, self.stream.read(&mut buf)).await {
            if k == 0 {
                break;
            }
            out.extend_from_slice(&buf[..k]);
        }
        out
    }
}

/// Looks up `name` on the daemon at `host`:`epmd_port` (one-shot helper).
pub async fn port_please(
    host: &str,
    epmd_port: u16,
    name: &str,
) -> Result<Option<NodeInfo>, ClientError> {
    Client::new(host, epmd_port).port_please(name).await
}
