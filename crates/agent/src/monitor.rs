//! [`Subscription`]: the BEAM node's nodeup/nodedown events, delivered to a
//! process of the agent's Rust node.
//!
//! `net_kernel:monitor_nodes/2` subscribes the *calling* process, which
//! must live on the BEAM node and stay alive. The agent loads no code
//! into the node, so the subscriber is a few lines of Erlang
//! ([`SUBSCRIBER`]) run by the node's own interpreter: the agent has the
//! node scan and parse the text (`erl_scan:string/1`,
//! `erl_parse:parse_exprs/1`, both in stdlib) and starts it with
//! `erlang:spawn(erl_eval, exprs, [Exprs, [{'Sink', AgentPid}]])`.
//!
//! ```text
//!  BEAM node                                        agent (Rust node)
//!  subscriber (initial call erl_eval:exprs/2) --link-- sink process
//!    monitor_nodes(true, [{node_type, visible}, nodedown_reason])
//!    {erlkube_node_monitor, Self, {nodes, nodes()}} ----> snapshot
//!    {erlkube_node_monitor, Self, {nodeup, N, Info}} ---> insert N
//!    {erlkube_node_monitor, Self, {nodedown, N, Info}} -> remove N
//! ```
//!
//! The subscriber links itself to the sink: when the agent's connection
//! goes (agent stopped, network) it gets a `noconnection` exit and dies,
//! and the agent ends it with an exit signal when it drops the
//! [`Subscription`]. The snapshot is taken *after* subscribing, so every
//! change after it arrives as an event; applying events in order to the
//! snapshot gives the node's `nodes()` (each event is a set operation,
//! and one sender's messages arrive in order). The interpreted loop is
//! tail-recursive (its stack stays at a few words however many events
//! pass).

use std::collections::BTreeSet;
use std::time::Duration;

use erlkube_discovery::NodeName;
use erlkube_etf::{Pid, Term};
use erlkube_node::{Node, Process};

use crate::beam::BeamNode;
use crate::rpc::RpcError;

/// Tag of every message the subscriber sends.
pub const TAG: &str = "erlkube_node_monitor";

/// The subscriber, in Erlang (expressions; `Sink` is bound to the agent's
/// pid). No strings or quotes: it is sent as a character list.
pub const SUBSCRIBER: &str = "link(Sink), \
ok = net_kernel:monitor_nodes(true, [{node_type, visible}, nodedown_reason]), \
Sink ! {erlkube_node_monitor, self(), {nodes, nodes()}}, \
Loop = fun L() -> \
  receive \
    {nodeup, _, _} = E -> Sink ! {erlkube_node_monitor, self(), E}, L(); \
    {nodedown, _, _} = E -> Sink ! {erlkube_node_monitor, self(), E}, L(); \
    _ -> L() \
  end \
end, \
Loop().";

/// Subscribing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    /// An RPC to the node failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The node answered a step with something else than expected.
    #[error("{call} returned {got}")]
    Unexpected {
        /// `m:f/arity`.
        call: &'static str,
        /// The answer, printed.
        got: String,
    },
    /// The subscriber ended before its first message.
    #[error("the node's subscriber exited: {0}")]
    Exited(String),
    /// No first message within the timeout.
    #[error("no answer from the node's subscriber within {0:?}")]
    Timeout(Duration),
}

/// One message of the subscriber, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MonitorMessage {
    /// The node's `nodes()` just after subscribing.
    Nodes(BTreeSet<NodeName>),
    /// `{nodeup, Node, Info}`.
    Up(NodeName),
    /// `{nodedown, Node, Info}` with its `nodedown_reason`, printed.
    Down {
        /// The peer.
        node: NodeName,
        /// Why (`connection_closed`, `disconnect`, `net_tick_timeout`, …).
        reason: String,
    },
    /// The subscriber ended (`{'EXIT', Subscriber, Reason}`), printed.
    Ended(String),
    /// Anything else (another subscriber's late message, …): ignored.
    Other,
}

fn atom_is(t: &Term, s: &str) -> bool {
    t.as_atom().map(|a| a.as_str()) == Some(s)
}

fn node_of(t: &Term) -> Option<NodeName> {
    t.as_atom().map(|a| NodeName::new(a.as_str()))
}

/// Decodes a message received by the sink from the subscriber `from`.
/// Pure.
pub fn decode(msg: &Term, from: &Pid) -> MonitorMessage {
    let Some(t) = msg.as_tuple() else {
        return MonitorMessage::Other;
    };
    match t {
        [tag, p, reason] if atom_is(tag, "EXIT") && p.as_pid() == Some(from) => {
            MonitorMessage::Ended(reason.to_string())
        }
        [tag, p, body] if atom_is(tag, TAG) && p.as_pid() == Some(from) => match body.as_tuple() {
            Some([k, list]) if atom_is(k, "nodes") => match list.as_list() {
                Some(l) => MonitorMessage::Nodes(l.iter().filter_map(node_of).collect()),
                None => MonitorMessage::Other,
            },
            Some([k, n, _]) if atom_is(k, "nodeup") => {
                node_of(n).map_or(MonitorMessage::Other, MonitorMessage::Up)
            }
            Some([k, n, info]) if atom_is(k, "nodedown") => match node_of(n) {
                Some(node) => {
                    let reason = info
                        .as_list()
                        .unwrap_or_default()
                        .iter()
                        .find_map(|kv| match kv.as_tuple() {
                            Some([k, v]) if atom_is(k, "nodedown_reason") => Some(v.to_string()),
                            _ => None,
                        })
                        .unwrap_or_else(|| "unknown".into());
                    MonitorMessage::Down { node, reason }
                }
                None => MonitorMessage::Other,
            },
            _ => MonitorMessage::Other,
        },
        _ => MonitorMessage::Other,
    }
}

/// A running subscriber on the BEAM node and the agent's process that
/// receives its messages. Dropping it ends the subscriber.
pub struct Subscription {
    local: Node,
    sink: Process,
    remote: Pid,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("sink", self.sink.pid())
            .field("remote", &self.remote)
            .finish()
    }
}

impl Subscription {
    /// Starts a subscriber on `beam`'s node (three RPCs) and waits for its
    /// snapshot of `nodes()`, each step bounded by `timeout`.
    pub async fn start(
        beam: &BeamNode,
        timeout: Duration,
    ) -> Result<(Subscription, BTreeSet<NodeName>), MonitorError> {
        let chars = Term::list(SUBSCRIBER.chars().map(|c| Term::from(c as u32)).collect());
        let scanned = beam.call("erl_scan", "string", vec![chars]).await?;
        let tokens = match scanned.as_tuple() {
            Some([ok, tokens, _]) if atom_is(ok, "ok") => tokens.clone(),
            _ => {
                return Err(MonitorError::Unexpected {
                    call: "erl_scan:string/1",
                    got: scanned.to_string(),
                })
            }
        };
        let parsed = beam.call("erl_parse", "parse_exprs", vec![tokens]).await?;
        let exprs = match parsed.as_tuple() {
            Some([ok, exprs]) if atom_is(ok, "ok") => exprs.clone(),
            _ => {
                return Err(MonitorError::Unexpected {
                    call: "erl_parse:parse_exprs/1",
                    got: parsed.to_string(),
                })
            }
        };
        let local = beam.local().clone();
        let sink = local.spawn_process();
        // Before the subscriber links to us: its death must be a message.
        sink.trap_exit(true);
        let bindings = Term::list(vec![Term::tuple(vec![
            Term::atom("Sink"),
            Term::Pid(sink.pid().clone()),
        ])]);
        let spawned = beam
            .call(
                "erlang",
                "spawn",
                vec![
                    Term::atom("erl_eval"),
                    Term::atom("exprs"),
                    Term::list(vec![exprs, bindings]),
                ],
            )
            .await?;
        let Some(remote) = spawned.as_pid().cloned() else {
            return Err(MonitorError::Unexpected {
                call: "erlang:spawn/3",
                got: spawned.to_string(),
            });
        };
        // From here on, dropping `sub` ends the subscriber.
        let mut sub = Subscription {
            local,
            sink,
            remote,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(msg) = sub.sink.recv_timeout(left).await else {
                return Err(MonitorError::Timeout(timeout));
            };
            match decode(&msg, &sub.remote) {
                MonitorMessage::Nodes(set) => return Ok((sub, set)),
                MonitorMessage::Ended(reason) => return Err(MonitorError::Exited(reason)),
                _ => {}
            }
        }
    }

    /// The subscriber's pid on the BEAM node.
    pub fn remote(&self) -> &Pid {
        &self.remote
    }

    /// The next message; [`MonitorMessage::Ended`] when the agent's node
    /// is gone.
    pub async fn next(&mut self) -> MonitorMessage {
        match self.sink.recv().await {
            Some(m) => decode(&m, &self.remote),
            None => MonitorMessage::Ended("the agent's node stopped".into()),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // The link alone would not do: our process ends `normal`, which a
        // process that does not trap exits ignores.
        self.local
            .exit_signal(self.sink.pid(), &self.remote, Term::atom("shutdown"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use erlkube_etf::Atom;

    fn pid(id: u32) -> Pid {
        Pid {
            node: Atom::new("app@h"),
            id,
            serial: 0,
            creation: 1,
        }
    }

    fn msg(from: &Pid, body: Term) -> Term {
        Term::tuple(vec![Term::atom(TAG), Term::Pid(from.clone()), body])
    }

    #[test]
    fn decodes_the_snapshot_and_events_of_the_current_subscriber_only() {
        let me = pid(7);
        let nodes = msg(
            &me,
            Term::tuple(vec![
                Term::atom("nodes"),
                Term::list(vec![Term::atom("a@h"), Term::atom("b@h")]),
            ]),
        );
        assert_eq!(
            decode(&nodes, &me),
            MonitorMessage::Nodes([NodeName::new("a@h"), NodeName::new("b@h")].into())
        );
        assert_eq!(decode(&nodes, &pid(8)), MonitorMessage::Other);
        let up = msg(
            &me,
            Term::tuple(vec![
                Term::atom("nodeup"),
                Term::atom("c@h"),
                Term::list(vec![Term::tuple(vec![
                    Term::atom("node_type"),
                    Term::atom("visible"),
                ])]),
            ]),
        );
        assert_eq!(decode(&up, &me), MonitorMessage::Up(NodeName::new("c@h")));
        let down = msg(
            &me,
            Term::tuple(vec![
                Term::atom("nodedown"),
                Term::atom("c@h"),
                Term::list(vec![
                    Term::tuple(vec![
                        Term::atom("nodedown_reason"),
                        Term::atom("connection_closed"),
                    ]),
                    Term::tuple(vec![Term::atom("node_type"), Term::atom("visible")]),
                ]),
            ]),
        );
        assert_eq!(
            decode(&down, &me),
            MonitorMessage::Down {
                node: NodeName::new("c@h"),
                reason: "connection_closed".into()
            }
        );
        let exit = Term::tuple(vec![
            Term::atom("EXIT"),
            Term::Pid(me.clone()),
            Term::atom("killed"),
        ]);
        assert_eq!(decode(&exit, &me), MonitorMessage::Ended("killed".into()));
        assert_eq!(decode(&Term::atom("junk"), &me), MonitorMessage::Other);
        assert_eq!(
            decode(&msg(&me, Term::atom("junk")), &me),
            MonitorMessage::Other
        );
    }

    #[test]
    fn the_subscriber_text_has_no_quotes() {
        assert!(!SUBSCRIBER.contains('"') && !SUBSCRIBER.contains('\''));
        assert!(SUBSCRIBER.is_ascii());
    }
}
