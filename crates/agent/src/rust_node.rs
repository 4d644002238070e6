//! The formation engine's [`Actor`] for a local Rust node
//! (`erlkube-node`). It lives here, beside [`crate::beam::BeamNode`] (the
//! actor for a BEAM node), because this crate is where the node runtime
//! and discovery meet: `erlkube-discovery` does not depend on the node
//! runtime, and the binary and the test bed take both actors from here.

use std::collections::BTreeSet;

use erlkube_node::Node;

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
}
