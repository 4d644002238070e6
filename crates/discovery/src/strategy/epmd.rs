use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Discover;
use crate::{Answer, DiscoveryError, NodeName};

/// Asks the epmd at `addr` for its registered names (EPMD `NAMES_REQ`:
/// request `[0, 1, 'n']`, reply = 4-byte epmd port then lines
/// `name NAME at port PORT`). Returns the names.
pub async fn epmd_names(addr: SocketAddr, timeout: Duration) -> Result<Vec<String>, String> {
    let work = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        s.write_all(&[0, 1, b'n'])
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        if buf.len() < 4 {
            return Err(format!("short NAMES reply ({} bytes)", buf.len()));
        }
        let text = String::from_utf8_lossy(&buf[4..]);
        let mut names = Vec::new();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if let (Some("name"), Some(n)) = (w.next(), w.next()) {
                names.push(n.to_owned());
            }
        }
        Ok(names)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err("timed out".into()),
    }
}

/// Every node registered on one epmd (normally this host's), named
/// `name@host` with the host name given.
#[derive(Clone, Debug)]
pub struct LocalEpmd {
    addr: SocketAddr,
    host: String,
    timeout: Duration,
}

impl LocalEpmd {
    /// Asks the epmd at `addr`; names get `@host`.
    pub fn new(addr: SocketAddr, host: impl Into<String>, timeout: Duration) -> LocalEpmd {
        LocalEpmd {
            addr,
            host: host.into(),
            timeout,
        }
    }
}

impl Discover for LocalEpmd {
    fn name(&self) -> &'static str {
        "epmd"
    }

    async fn discover(&mut self) -> Result<Answer, DiscoveryError> {
        let names = epmd_names(self.addr, self.timeout)
            .await
            .map_err(|reason| DiscoveryError::Unavailable {
                strategy: "epmd",
                reason: format!("epmd at {}: {reason}", self.addr),
            })?;
        let nodes: BTreeSet<NodeName> = names
            .into_iter()
            .map(|n| NodeName::new(format!("{n}@{}", self.host)))
            .collect();
        Ok(Answer::new(nodes, true))
    }
}
