//! The two EPMD requests a node needs: ALIVE2 (register, kept for the
//! node's lifetime) and PORT_PLEASE2 (find a peer's port).
//!
//! A deliberately small client; erlkube-epmd's client replaces it once
//! both live in the same tree.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// OTP's highest and lowest distribution version (6 since OTP 23).
const DIST_VERSION: u16 = 6;

/// What went wrong talking to epmd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EpmdError {
    /// Could not reach epmd.
    #[error("cannot reach epmd at {addr}: {source}")]
    Unreachable {
        /// Where we tried.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// epmd does not know the node.
    #[error("no epmd entry for {0}")]
    NotRegistered(String),
    /// epmd refused the registration (name taken).
    #[error("epmd refused to register {name} (result {result})")]
    RegistrationRefused {
        /// The alive name.
        name: String,
        /// epmd's result code.
        result: u8,
    },
    /// epmd sent something we cannot read.
    #[error("malformed epmd response")]
    Malformed,
    /// IO after connecting.
    #[error("epmd connection: {0}")]
    Io(#[from] std::io::Error),
    /// epmd did not answer in time.
    #[error("epmd did not answer within {0:?}")]
    Timeout(Duration),
}

/// A live registration: dropping it unregisters the node.
#[derive(Debug)]
pub struct Registration {
    _stream: TcpStream,
    /// The creation epmd handed out.
    pub creation: u32,
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, EpmdError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(EpmdError::Unreachable { addr, source }),
        Err(_) => Err(EpmdError::Timeout(timeout)),
    }
}

/// Registers `alive` (the part before `@`) with its listening port.
pub async fn register(
    epmd: SocketAddr,
    alive: &str,
    port: u16,
    timeout: Duration,
) -> Result<Registration, EpmdError> {
    let mut s = connect(epmd, timeout).await?;
    let name = alive.as_bytes();
    let mut req = Vec::with_capacity(16 + name.len());
    req.push(120);
    req.extend_from_slice(&port.to_be_bytes());
    req.push(77); // normal node
    req.push(0); // tcp
    req.extend_from_slice(&DIST_VERSION.to_be_bytes());
    req.extend_from_slice(&DIST_VERSION.to_be_bytes());
    req.extend_from_slice(&(name.len() as u16).to_be_bytes());
    req.extend_from_slice(name);
    req.extend_from_slice(&0u16.to_be_bytes());
    let mut framed = (req.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&req);
    let answer = async {
        s.write_all(&framed).await?;
        let mut head = [0u8; 2];
        s.read_exact(&mut head).await?;
        let creation = match head[0] {
            118 => {
                let mut c = [0u8; 4];
                s.read_exact(&mut c).await?;
                u32::from_be_bytes(c)
            }
            121 => {
                let mut c = [0u8; 2];
                s.read_exact(&mut c).await?;
                u16::from_be_bytes(c) as u32
            }
            _ => return Err(EpmdError::Malformed),
        };
        if head[1] != 0 {
            return Err(EpmdError::RegistrationRefused {
                name: alive.to_owned(),
                result: head[1],
            });
        }
        Ok(creation)
    };
    let creation = tokio::time::timeout(timeout, answer)
        .await
        .map_err(|_| EpmdError::Timeout(timeout))??;
    Ok(Registration {
        _stream: s,
        creation,
    })
}

/// Asks epmd for the distribution port of `alive`.
pub async fn port_please(
    epmd: SocketAddr,
    alive: &str,
    timeout: Duration,
) -> Result<u16, EpmdError> {
    let mut s = connect(epmd, timeout).await?;
    let name = alive.as_bytes();
    let mut req = ((name.len() + 1) as u16).to_be_bytes().to_vec();
    req.push(122);
    req.extend_from_slice(name);
    let answer = async {
        s.write_all(&req).await?;
        let mut head = [0u8; 2];
        match s.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(EpmdError::Malformed)
            }
            Err(e) => return Err(e.into()),
        }
        if head[0] != 119 {
            return Err(EpmdError::Malformed);
        }
        if head[1] != 0 {
            return Err(EpmdError::NotRegistered(alive.to_owned()));
        }
        let mut port = [0u8; 2];
        s.read_exact(&mut port).await?;
        Ok(u16::from_be_bytes(port))
    };
    tokio::time::timeout(timeout, answer)
        .await
        .map_err(|_| EpmdError::Timeout(timeout))?
}
