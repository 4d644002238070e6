use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Discover, StrategyKind};
use crate::{Answer, DiscoveryError, NodeName, Reason};

/// Asks the epmd at `addr` for its registered names (NAMES, through
/// `erlkube-epmd`'s client). Returns the names.
pub async fn epmd_names(addr: SocketAddr, timeout: Duration) -> Result<Vec<String>, String> {
    let client =
        erlkube_epmd::Client::new(addr.ip().to_string(), addr.port()).with_timeout(timeout);
    match client.names().await {
        Ok(names) => Ok(names.nodes.into_iter().map(|e| e.name).collect()),
        Err(e) => Err(e.to_string()),
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
    fn kind(&self) -> StrategyKind {
        StrategyKind::Epmd
    }

    async fn discover(&mut self) -> Result<Answer, DiscoveryError> {
        let names = epmd_names(self.addr, self.timeout).await.map_err(|error| {
            DiscoveryError::Unavailable {
                strategy: StrategyKind::Epmd,
                reason: Reason::Epmd {
                    addr: self.addr,
                    error,
                },
            }
        })?;
        let nodes: BTreeSet<NodeName> = names
            .into_iter()
            .map(|n| NodeName::new(format!("{n}@{}", self.host)))
            .collect();
        Ok(Answer::new(nodes, true))
    }
}
