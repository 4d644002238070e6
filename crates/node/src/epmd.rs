//! The node's use of the port mapper, through erlkube-epmd's client:
//! ALIVE2 (a registration held for the node's lifetime) and PORT_PLEASE2.

use std::time::Duration;

use erlkube_epmd::{Client, ClientError, Registration};
use erlkube_proto::epmd::{NodeInfo, NODE_TYPE_NORMAL, PROTOCOL_TCP};

/// Distribution version 6 (OTP 23+), both highest and lowest.
const DIST_VERSION: u16 = 6;

/// What went wrong talking to epmd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EpmdError {
    /// epmd does not know the node.
    #[error("no epmd entry for {0}")]
    NotRegistered(String),
    /// Talking to epmd failed (unreachable, refused registration, timeout).
    #[error("epmd at {host}:{port}: {source}")]
    Client {
        /// epmd's host.
        host: String,
        /// epmd's port.
        port: u16,
        /// Why.
        #[source]
        source: ClientError,
    },
}

fn client(host: &str, port: u16, timeout: Duration) -> Client {
    Client::new(host, port).with_timeout(timeout)
}

/// Registers `alive` (the part before `@`) with its listening port.
pub(crate) async fn register(
    host: &str,
    epmd_port: u16,
    alive: &str,
    port: u16,
    timeout: Duration,
) -> Result<Registration, EpmdError> {
    let info = NodeInfo {
        port,
        node_type: NODE_TYPE_NORMAL,
        protocol: PROTOCOL_TCP,
        highest_version: DIST_VERSION,
        lowest_version: DIST_VERSION,
        name: alive.to_owned(),
        extra: Vec::new(),
    };
    client(host, epmd_port, timeout)
        .register(info)
        .await
        .map_err(|source| EpmdError::Client {
            host: host.to_owned(),
            port: epmd_port,
            source,
        })
}

/// Asks the epmd at `host`:`epmd_port` for the distribution port of `alive`.
pub async fn port_please(
    host: &str,
    epmd_port: u16,
    alive: &str,
    timeout: Duration,
) -> Result<u16, EpmdError> {
    match client(host, epmd_port, timeout).port_please(alive).await {
        Ok(Some(info)) => Ok(info.port),
        Ok(None) => Err(EpmdError::NotRegistered(alive.to_owned())),
        Err(source) => Err(EpmdError::Client {
            host: host.to_owned(),
            port: epmd_port,
            source,
        }),
    }
}
