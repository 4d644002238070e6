//! An [`Actor`] that drives a real BEAM node in a pod through its
//! evaluation channel (`net_kernel:connect_node/1`, `nodes()`,
//! `erlang:disconnect_node/1`): the formation engine forms a BEAM cluster
//! the way the agent will.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use erlkube_discovery::{Actor, ConnectError, NodeName};

use crate::erl::{parse_atom_list, EvalError, PodErl};

/// Drives one BEAM node.
#[derive(Clone, Debug)]
pub struct BeamActor {
    erl: Arc<PodErl>,
}

impl BeamActor {
    /// Acts through `erl`.
    pub fn new(erl: Arc<PodErl>) -> BeamActor {
        BeamActor { erl }
    }
}

fn unavailable(e: EvalError) -> ConnectError {
    ConnectError::ActorUnavailable(e.to_string())
}

impl Actor for BeamActor {
    fn self_name(&self) -> NodeName {
        NodeName::new(self.erl.name())
    }

    async fn connect(&self, node: &NodeName) -> Result<(), ConnectError> {
        let r = self
            .erl
            .eval(
                &format!("net_kernel:connect_node('{node}')"),
                Duration::from_secs(30),
            )
            .await
            .map_err(unavailable)?;
        match r.as_str() {
            "true" => Ok(()),
            other => Err(ConnectError::Unreachable {
                node: node.clone(),
                reason: format!("connect_node returned {other}"),
            }),
        }
    }

    async fn disconnect(&self, node: &NodeName) {
        let _ = self
            .erl
            .eval(
                &format!("erlang:disconnect_node('{node}')"),
                Duration::from_secs(10),
            )
            .await;
    }

    async fn connected(&self) -> Result<BTreeSet<NodeName>, ConnectError> {
        let r = self
            .erl
            .eval("nodes()", Duration::from_secs(10))
            .await
            .map_err(unavailable)?;
        Ok(parse_atom_list(&r).into_iter().map(NodeName::new).collect())
    }
}
