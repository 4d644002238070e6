//! RPC to the BEAM node through erlkube-node's client
//! ([`Node::rpc_call`]: erpc, or rex for old peers), with the connection
//! made first so a failure says why (a wrong cookie is named as such).

use std::time::Duration;

use erlkube_etf::Term;
use erlkube_node::RpcError as NodeRpcError;
use erlkube_node::{ConnectError as NodeConnectError, Node};

/// Why an RPC call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The node could not be reached (not running, wrong address).
    #[error("cannot reach {node}: {source}")]
    Unreachable {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: NodeConnectError,
    },
    /// The node closed the connection after our challenge reply: its
    /// cookie differs from ours.
    #[error("{node} rejected the cookie (it closed the connection after our challenge reply): the agent's cookie differs from the node's; check RELEASE_COOKIE or agent.cookie_file")]
    WrongCookie {
        /// The node.
        node: String,
    },
    /// The connection went away before the answer.
    #[error("connection to {0} closed before the answer")]
    Closed(String),
    /// No answer within the timeout.
    #[error("{node}: rpc {call} timed out after {timeout:?}")]
    Timeout {
        /// The node.
        node: String,
        /// `m:f/arity`.
        call: String,
        /// The limit.
        timeout: Duration,
    },
    /// The call raised on the remote side (`{badrpc, Reason}`-like answer).
    #[error("{node}: rpc {call} failed: {reason}")]
    Remote {
        /// The node.
        node: String,
        /// `m:f/arity`.
        call: String,
        /// The remote reason, printed.
        reason: String,
    },
}

fn classify(node: &str, e: NodeConnectError) -> RpcError {
    match e {
        NodeConnectError::ClosedDuringHandshake { hint, .. } if !hint.is_empty() => {
            RpcError::WrongCookie {
                node: node.to_owned(),
            }
        }
        source => RpcError::Unreachable {
            node: node.to_owned(),
            source,
        },
    }
}

/// `rpc:call(Node, M, F, A, Timeout)`.
pub async fn call(
    local: &Node,
    node: &str,
    module: &str,
    function: &str,
    args: Vec<Term>,
    timeout: Duration,
) -> Result<Term, RpcError> {
    let call_name = format!("{module}:{function}/{}", args.len());
    let timed_out = || RpcError::Timeout {
        node: node.to_owned(),
        call: call_name.clone(),
        timeout,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, local.connect(node)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(classify(node, e)),
        Err(_) => return Err(timed_out()),
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    match local.rpc_call(node, module, function, args, left).await {
        Ok(t) => Ok(t),
        Err(NodeRpcError::Timeout) => Err(timed_out()),
        Err(NodeRpcError::NoConnection(_)) => Err(RpcError::Closed(node.to_owned())),
        Err(e) => Err(RpcError::Remote {
            node: node.to_owned(),
            call: call_name,
            reason: e.to_string(),
        }),
    }
}
