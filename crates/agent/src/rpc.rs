//! A minimal RPC client to a BEAM node's `rex` server (what `rpc:call/5`
//! talks to), kept apart so it can be swapped for erlkube-node's own RPC
//! client: send `{'$gen_call', {Pid, Ref}, {call, M, F, A, GroupLeader}}` to
//! the registered name `rex`, wait for `{Ref, Reply}` with a timeout.
//!
//! A monitor on `rex` turns a vanished node into an error at once instead
//! of a timeout.

use std::time::Duration;

use erlkube_etf::Term;
use erlkube_node::{ConnectError as NodeConnectError, Node};
use erlkube_proto::dist::control::ControlMessage;

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

/// `rpc:call(Node, M, F, A, Timeout)` through `rex`.
pub async fn call(
    local: &Node,
    node: &str,
    module: &str,
    function: &str,
    args: Vec<Term>,
    timeout: Duration,
) -> Result<Term, RpcError> {
    let call_name = format!("{module}:{function}/{}", args.len());
    let run = async {
        local.connect(node).await.map_err(|e| classify(node, e))?;
        let mut me = local.spawn_process();
        let mref = local.make_ref();
        let closed = |_| RpcError::Closed(node.to_owned());
        local
            .send_control(
                node,
                ControlMessage::MonitorP {
                    from: me.pid().clone(),
                    to: Term::atom("rex"),
                    reference: mref.clone(),
                },
            )
            .await
            .map_err(closed)?;
        let request = Term::tuple(vec![
            Term::atom("$gen_call"),
            Term::tuple(vec![
                Term::Pid(me.pid().clone()),
                Term::Reference(mref.clone()),
            ]),
            Term::tuple(vec![
                Term::atom("call"),
                Term::atom(module),
                Term::atom(function),
                Term::list(args),
                Term::Pid(me.pid().clone()),
            ]),
        ]);
        local
            .send_named(me.pid(), node, "rex", request)
            .await
            .map_err(closed)?;
        let answer = loop {
            let Some(msg) = me.recv().await else {
                return Err(RpcError::Closed(node.to_owned()));
            };
            match msg.as_tuple() {
                Some([Term::Reference(r), answer]) if *r == mref => break answer.clone(),
                Some([Term::Atom(down), Term::Reference(r), rest @ ..])
                    if down.as_str() == "DOWN" && *r == mref =>
                {
                    return Err(RpcError::Remote {
                        node: node.to_owned(),
                        call: call_name.clone(),
                        reason: format!(
                            "rex is down: {}",
                            rest.last().map(|t| t.to_string()).unwrap_or_default()
                        ),
                    });
                }
                // io requests to us as group leader, anything else: ignore.
                _ => continue,
            }
        };
        let _ = local
            .send_control(
                node,
                ControlMessage::DemonitorP {
                    from: me.pid().clone(),
                    to: Term::atom("rex"),
                    reference: mref,
                },
            )
            .await;
        if let Some([Term::Atom(tag), reason]) = answer.as_tuple() {
            if tag.as_str() == "badrpc" || tag.as_str() == "EXIT" {
                return Err(RpcError::Remote {
                    node: node.to_owned(),
                    call: call_name.clone(),
                    reason: reason.to_string(),
                });
            }
        }
        Ok(answer)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(RpcError::Timeout {
            node: node.to_owned(),
            call: call_name,
            timeout,
        }),
    }
}
