//! [`BeamNode`]: the formation engine's [`Actor`] for an external BEAM node,
//! driven over RPC from the agent's hidden Rust node
//! (`net_kernel:connect_node/1`, `erlang:nodes/0`, `erlang:disconnect_node/1`).
//!
//! While the node's nodeup/nodedown events arrive ([`Seen::events`], see
//! [`crate::monitor`]), [`Actor::connected`] answers from the set those
//! events maintain, without an RPC; otherwise it reads `erlang:nodes/0`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use erlkube_discovery::partition::{self, PeerViews};
use erlkube_discovery::{Actor, ConnectError, NodeName};
use erlkube_etf::Term;
use erlkube_node::Node;

use crate::rpc::{self, RpcError};

/// What the agent last saw of the BEAM node's connections.
#[derive(Debug, Default)]
pub struct Seen {
    /// The node's `nodes()`: the last read, kept current by events.
    pub connected: BTreeSet<NodeName>,
    /// True while a subscriber delivers the node's nodeup/nodedown events.
    pub events: bool,
}

/// One BEAM node driven over RPC.
#[derive(Clone)]
pub struct BeamNode {
    local: Node,
    target: NodeName,
    timeout: Duration,
    seen: Arc<Mutex<Seen>>,
}

impl std::fmt::Debug for BeamNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeamNode")
            .field("target", &self.target)
            .finish()
    }
}

impl BeamNode {
    /// Drives `target` from `local` with RPC calls bounded by `timeout`.
    pub fn new(local: Node, target: NodeName, timeout: Duration, seen: Arc<Mutex<Seen>>) -> Self {
        BeamNode {
            local,
            target,
            timeout,
            seen,
        }
    }

    /// `rpc:call(Target, M, F, A)`.
    pub async fn call(&self, m: &str, f: &str, args: Vec<Term>) -> Result<Term, RpcError> {
        rpc::call(&self.local, self.target.as_str(), m, f, args, self.timeout).await
    }

    /// `erlang:nodes()` of the BEAM node (visible nodes; the agent is hidden).
    pub async fn nodes(&self) -> Result<BTreeSet<NodeName>, RpcError> {
        let t = self.call("erlang", "nodes", vec![]).await?;
        let list = t.as_list().ok_or_else(|| RpcError::Remote {
            node: self.target.to_string(),
            call: "erlang:nodes/0".into(),
            reason: format!("expected a list, got {t}"),
        })?;
        Ok(list
            .iter()
            .filter_map(|a| a.as_atom().map(|a| NodeName::new(a.as_str())))
            .collect())
    }

    /// The agent's local Rust node.
    pub fn local(&self) -> &Node {
        &self.local
    }
}

fn unavailable(e: RpcError) -> ConnectError {
    ConnectError::ActorUnavailable(e.to_string())
}

impl Actor for BeamNode {
    fn self_name(&self) -> NodeName {
        self.target.clone()
    }

    async fn connect(&self, node: &NodeName) -> Result<(), ConnectError> {
        let r = self
            .call(
                "net_kernel",
                "connect_node",
                vec![Term::atom(node.as_str())],
            )
            .await
            .map_err(unavailable)?;
        if r == Term::atom("true") {
            // The nodeup event is on its way from another process of the
            // node; the engine must not see the node missing meanwhile.
            self.seen.lock().unwrap().connected.insert(node.clone());
            Ok(())
        } else {
            Err(ConnectError::Unreachable {
                node: node.clone(),
                reason: format!("net_kernel:connect_node/1 returned {r}"),
            })
        }
    }

    async fn disconnect(&self, node: &NodeName) {
        if let Err(e) = self
            .call("erlang", "disconnect_node", vec![Term::atom(node.as_str())])
            .await
        {
            tracing::debug!(node = %node, error = %e, "disconnect_node failed");
            return;
        }
        self.seen.lock().unwrap().connected.remove(node);
    }

    async fn connected(&self) -> Result<BTreeSet<NodeName>, ConnectError> {
        {
            let seen = self.seen.lock().unwrap();
            if seen.events {
                return Ok(seen.connected.clone());
            }
        }
        let set = self.nodes().await.map_err(unavailable)?;
        self.seen.lock().unwrap().connected = set.clone();
        Ok(set)
    }

    /// The BEAM node asks its peers itself, over its own connections:
    /// `erpc:multicall(Peers, erlang, nodes, [], Timeout)`, driven by one
    /// RPC from the agent.
    async fn peer_views(&self, peers: &BTreeSet<NodeName>, timeout: Duration) -> PeerViews {
        if peers.is_empty() {
            return PeerViews::new();
        }
        let ms = timeout.as_millis().min(u32::MAX as u128) as i64;
        let list = Term::List(peers.iter().map(|p| Term::atom(p.as_str())).collect());
        let args = vec![
            list,
            Term::atom("erlang"),
            Term::atom("nodes"),
            Term::nil(),
            Term::Integer(ms),
        ];
        let r = rpc::call(
            &self.local,
            self.target.as_str(),
            "erpc",
            "multicall",
            args,
            timeout + Duration::from_secs(1),
        )
        .await;
        match r {
            Ok(answers) => multicall_views(peers, &answers),
            Err(e) => {
                let reason = e.to_string();
                peers
                    .iter()
                    .map(|p| (p.clone(), Err(reason.clone())))
                    .collect()
            }
        }
    }
}

/// Reads `erpc:multicall/5`'s answer (one `{ok, Nodes}` or `{Class,
/// Reason}` per peer, in the order asked) into the peers' views.
pub fn multicall_views(peers: &BTreeSet<NodeName>, answers: &Term) -> PeerViews {
    let items = answers.as_list().unwrap_or(&[]);
    peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let view = match items.get(i).and_then(Term::as_tuple) {
                Some([ok, nodes]) if *ok == Term::atom("ok") => partition::node_list(nodes),
                Some(_) => Err(format!("erpc:multicall: {}", items[i])),
                None => Err(format!("erpc:multicall answered {answers}")),
            };
            (p.clone(), view)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multicall_answers_become_views_in_the_order_asked() {
        let peers: BTreeSet<NodeName> = ["a@h", "b@h", "c@h"].map(NodeName::new).into();
        let answers = Term::List(vec![
            Term::tuple(vec![
                Term::atom("ok"),
                Term::List(vec![Term::atom("me@h"), Term::atom("b@h")]),
            ]),
            Term::tuple(vec![
                Term::atom("error"),
                Term::tuple(vec![Term::atom("erpc"), Term::atom("timeout")]),
            ]),
        ]);
        let v = multicall_views(&peers, &answers);
        assert_eq!(
            v[&NodeName::new("a@h")],
            Ok(["me@h", "b@h"].map(NodeName::new).into())
        );
        assert!(v[&NodeName::new("b@h")]
            .as_ref()
            .unwrap_err()
            .contains("timeout"));
        assert!(
            v[&NodeName::new("c@h")].is_err(),
            "a short answer fails the rest"
        );
    }
}
