//! The [`Actor`]: what the formation engine acts through (the local Rust
//! node, or an external BEAM node driven over RPC by the agent).

use std::collections::BTreeSet;
use std::future::Future;

use crate::NodeName;

/// Why a connect (or a query of the connected set) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The peer could not be reached or refused the connection (`pang`).
    #[error("{node}: not reachable: {reason}")]
    Unreachable {
        /// The node dialled.
        node: NodeName,
        /// Human-readable reason (no secrets).
        reason: String,
    },
    /// The attempt did not finish before the engine's connect timeout.
    #[error("{0}: connect timed out")]
    Timeout(NodeName),
    /// The actor itself is unavailable (node stopped, RPC channel closed).
    #[error("actor unavailable: {0}")]
    ActorUnavailable(String),
}

/// A node the engine can make connect and disconnect.
///
/// The methods return `Send` futures so the engine can run attempts in
/// parallel on a multi-threaded runtime. Implementations must be cheap to
/// share (`Arc`-wrapped by the engine).
pub trait Actor: Send + Sync + 'static {
    /// This node's own name (never connected to itself).
    fn self_name(&self) -> NodeName;

    /// Connects to `node`; `Ok` when the connection is up (the
    /// `net_kernel:connect_node/1` meaning).
    fn connect(&self, node: &NodeName) -> impl Future<Output = Result<(), ConnectError>> + Send;

    /// Disconnects from `node` (`erlang:disconnect_node/1`); best effort.
    fn disconnect(&self, node: &NodeName) -> impl Future<Output = ()> + Send;

    /// The nodes currently connected (`nodes()`, visible nodes).
    fn connected(&self) -> impl Future<Output = Result<BTreeSet<NodeName>, ConnectError>> + Send;

    /// Asks each of `peers` (connected nodes) for its own `nodes()`, over
    /// the distribution connection (an RPC of `erlang:nodes/0`), for
    /// partition detection ([`crate::partition`]). A peer that cannot be
    /// asked (or does not answer within `timeout`) maps to an error text.
    /// The default asks nobody.
    fn peer_views(
        &self,
        peers: &BTreeSet<NodeName>,
        timeout: std::time::Duration,
    ) -> impl Future<Output = crate::partition::PeerViews> + Send {
        let _ = timeout;
        let views = peers
            .iter()
            .map(|p| (p.clone(), Err("this actor cannot probe peers".to_owned())))
            .collect();
        std::future::ready(views)
    }
}
