//! The formation engine's [`Actor`] for a local Rust node
//! (`erlkube-node`). It lives here, beside [`crate::beam::BeamNode`] (the
//! actor for a BEAM node), because this crate is where the node runtime
//! and discovery meet: `erlkube-discovery` does not depend on the node
//! runtime, and the binary and the test bed take both actors from here.

use std::collections::BTreeSet;
use std::time::Duration;

use erlkube_node::Node;

use erlkube_discovery::partition::{self, PeerViews};
use erlkube_discovery::{Actor, ConnectError, NodeName};

/// Drives a local [`Node`]: connect/disconnect are the node's own, the
/// connected set is its visible peers (`nodes()`).
#[derive(Clone)]
pub struct RustNode(pub Node);

impl Actor for RustNode {
    fn self_name(&self) -> NodeName {
        NodeName::new(self.0.name())
    }

    async fn connect(&self, node: &NodeName) -> Result<(), ConnectError> {
        self.0
            .connect(node.as_str())
            .await
            .map_err(|e| ConnectError::Unreachable {
                node: node.clone(),
                reason: e.to_string(),
            })
    }

    async fn disconnect(&self, node: &NodeName) {
        self.0.disconnect(node.as_str());
    }

    async fn connected(&self) -> Result<BTreeSet<NodeName>, ConnectError> {
        Ok(self.0.nodes().into_iter().map(NodeName::new).collect())
    }

    async fn peer_views(&self, peers: &BTreeSet<NodeName>, timeout: Duration) -> PeerViews {
        let calls = peers.iter().map(|p| async move {
            let r = self
                .0
                .rpc_call(p.as_str(), "erlang", "nodes", Vec::new(), timeout)
                .await
                .map_err(|e| e.to_string())
                .and_then(|t| partition::node_list(&t));
            (p.clone(), r)
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .collect()
    }
}
