//! The part of OTP's `global` a visible node must play so that `global`
//! on BEAM nodes completes its connect protocol with us (`global:sync()`
//! returns, names registered on BEAM nodes keep resolving). This node
//! holds no global names and never takes locks of its own; it answers:
//!
//! - cast `{init_connect, {Vsn, HisTag}, Node, {locker, _, _, Locker}}`
//!   with our own `init_connect` and `{init_connect_ack, Me, HisTag, MyTag}`;
//! - cast `{lock_set, Locker, true, Known, MyTag}` with
//!   `{lock_set, OurLocker, true, [], HisTag}`;
//! - cast `{exchange, Node, Names, Ext, MyTag}` with an empty exchange;
//! - cast `{resolved, Node, Ops, Known, unused, Ext, MyTag}` with an empty
//!   `resolved`, after which the BEAM counts this node as synced;
//! - calls `set_lock`/`del_lock` (true), `register`/`register_ext` (yes),
//!   `unregister` (ok), `get_known`/`get_synced` ([]);
//! - cast `{in_sync, Node, true}` with our own `in_sync`, and for every node
//!   of a `new_nodes` cast, an `in_sync` (what `sync_others/1` does).

use std::sync::Arc;

use erlkube_etf::{Atom, Pid, Term};
use erlkube_proto::dist::control::ControlMessage;

use crate::Inner;

/// The protocol version we speak (OTP 25's `global` uses 8).
const VSN: i64 = 8;

fn atom_is(t: &Term, s: &str) -> bool {
    t.as_atom().map(Atom::as_str) == Some(s)
}

/// Per-peer tags of the connect protocol.
#[derive(Default)]
pub(crate) struct GlobalState {
    peers: std::collections::HashMap<String, (Term, Term)>,
}

impl Inner {
    /// The pid standing for our locker (it receives nothing we need).
    fn locker_pid(&self) -> Pid {
        self.pid(0)
    }

    fn gns_cast(self: &Arc<Self>, node: &str, msg: Term) {
        self.gns_send(node, Term::tuple(vec![Term::atom("$gen_cast"), msg]));
    }

    fn gns_send(self: &Arc<Self>, node: &str, msg: Term) {
        self.send_signal_msg(
            node,
            ControlMessage::RegSend {
                from: self.locker_pid(),
                to_name: Atom::new("global_name_server"),
            },
            Some(msg),
        );
    }

    /// Forgets the tags of a peer that went down.
    pub(crate) fn global_node_down(&self, node: &str) {
        self.global.lock().expect("global").peers.remove(node);
    }
}

/// Serves the registered name `global_name_server`.
pub(crate) fn register(services: &mut crate::dispatch::Services) {
    services.register_name("global_name_server", |inner, peer, _from, msg| {
        handle(inner, peer.node(), msg)
    });
}

/// A message to `global_name_server` on this node.
fn handle(inner: &Arc<Inner>, peer: &str, msg: Term) {
    let Some(t) = msg.as_tuple() else { return };
    match t {
        [label, req] if atom_is(label, "$gen_cast") => cast(inner, peer, req),
        [label, from, req] if atom_is(label, "$gen_call") => {
            let Some([Term::Pid(pid), tag]) = from.as_tuple() else {
                return;
            };
            let op = req
                .as_tuple()
                .and_then(|t| t.first())
                .or(Some(req))
                .and_then(Term::as_atom)
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default();
            let reply = match op.as_str() {
                "set_lock" | "del_lock" => Term::atom("true"),
                "register" | "register_ext" => Term::atom("yes"),
                "unregister" => Term::atom("ok"),
                "get_known" | "get_synced" => Term::nil(),
                "get_protocol_version" => Term::Integer(VSN),
                _ => {
                    tracing::debug!(request = %req, "global call not supported");
                    return;
                }
            };
            let from = crate::GenFrom {
                pid: pid.clone(),
                tag: tag.clone(),
            };
            crate::gen::reply_from(inner, &from, reply);
        }
        // init_connect_ack and others arrive as plain messages.
        _ => tracing::debug!(msg = %msg, "global message ignored"),
    }
}

fn cast(inner: &Arc<Inner>, peer: &str, req: &Term) {
    let Some(t) = req.as_tuple() else { return };
    let me = Term::Atom(inner.name.clone());
    let locker = Term::Pid(inner.locker_pid());
    match t {
        [op, vsn, node, _init] if atom_is(op, "init_connect") => {
            let Some(his_tag) = vsn.as_tuple().and_then(|v| v.get(1)).cloned() else {
                return;
            };
            let Some(node) = node.as_atom().map(|a| a.as_str().to_owned()) else {
                return;
            };
            let my_tag = Term::Integer((crate::random_u32() >> 1) as i64 + 1);
            inner
                .global
                .lock()
                .expect("global")
                .peers
                .insert(node.clone(), (my_tag.clone(), his_tag.clone()));
            inner.gns_cast(
                &node,
                Term::tuple(vec![
                    Term::atom("init_connect"),
                    Term::tuple(vec![Term::Integer(VSN), my_tag.clone()]),
                    me.clone(),
                    Term::tuple(vec![
                        Term::atom("locker"),
                        Term::atom("no_longer_a_pid"),
                        Term::nil(),
                        locker,
                    ]),
                ]),
            );
            inner.gns_send(
                &node,
                Term::tuple(vec![Term::atom("init_connect_ack"), me, his_tag, my_tag]),
            );
        }
        [op, _locker, set, _known, tag] if atom_is(op, "lock_set") => {
            let Some((mine, his)) = tags(inner, peer) else {
                return;
            };
            if *tag != mine || !atom_is(set, "true") {
                return;
            }
            inner.gns_cast(
                peer,
                Term::tuple(vec![
                    Term::atom("lock_set"),
                    locker,
                    Term::atom("true"),
                    Term::nil(),
                    his,
                ]),
            );
        }
        [op, _node, _names, _ext, tag] if atom_is(op, "exchange") => {
            let Some((mine, his)) = tags(inner, peer) else {
                return;
            };
            if *tag != mine {
                return;
            }
            inner.gns_cast(
                peer,
                Term::tuple(vec![
                    Term::atom("exchange"),
                    me,
                    Term::nil(),
                    Term::nil(),
                    his,
                ]),
            );
        }
        [op, _node, _ops, _known, _unused, _ext, tag] if atom_is(op, "resolved") => {
            let Some((mine, his)) = tags(inner, peer) else {
                return;
            };
            if *tag != mine {
                return;
            }
            inner.gns_cast(
                peer,
                Term::tuple(vec![
                    Term::atom("resolved"),
                    me,
                    Term::nil(),
                    Term::nil(),
                    Term::atom("unused"),
                    Term::nil(),
                    his,
                ]),
            );
        }
        // Another node tells us it is in sync with us (it learnt about us
        // from a third node): answer in kind so it counts us as synced too.
        [op, node, _] if atom_is(op, "in_sync") => {
            if let Some(node) = node.as_atom() {
                inner.gns_cast(
                    node.as_str(),
                    Term::tuple(vec![Term::atom("in_sync"), me, Term::atom("true")]),
                );
            }
        }
        // New nodes joined the peer's partition: tell each we are in sync,
        // as `global:sync_others/1` does.
        [op, _node, _ops, _ext, nodes, _extra] if atom_is(op, "new_nodes") => {
            for n in nodes.as_list().unwrap_or_default() {
                let n = n.as_tuple().and_then(|t| t.first()).unwrap_or(n);
                if let Some(n) = n.as_atom() {
                    if *n != inner.name && inner.is_connected(n.as_str()) {
                        inner.gns_cast(
                            n.as_str(),
                            Term::tuple(vec![
                                Term::atom("in_sync"),
                                me.clone(),
                                Term::atom("true"),
                            ]),
                        );
                    }
                }
            }
        }
        _ => tracing::debug!(request = %req, "global cast ignored"),
    }
}

fn tags(inner: &Inner, peer: &str) -> Option<(Term, Term)> {
    inner
        .global
        .lock()
        .expect("global")
        .peers
        .get(peer)
        .cloned()
}
