//! OTP's `global` (protocol version 8, as OTP 25 and 27 speak it): this
//! node holds global names and locks and takes part in the connect
//! protocol (served under the registered name `global_name_server`).
//!
//! - Locks: calls `{set_lock, {ResourceId, RequesterId}}` and
//!   `{del_lock, Id}` as `global:set_lock/2` makes them; a lock is held by
//!   the calling pids (monitored: a holder that exits, or whose node goes
//!   down, releases it).
//! - Names: calls `{register, Name, Pid, Method}` (and `register_ext`) are
//!   taken only from a caller holding the `global` lock here, as OTP
//!   checks; `{unregister, Name}`. Registered pids are monitored: a name
//!   goes when its process exits or its node goes down.
//! - Connect protocol: cast `{init_connect, {Vsn, HisTag}, Node, …}` is
//!   answered with our own `init_connect` and `init_connect_ack`;
//!   `{lock_set, …}` with `lock_set` (this node never contends for the
//!   partition lock: it grants the BEAM locker's `set_lock` like any other
//!   lock); `{exchange, Node, Names, …}` with our names, and the names are
//!   merged as `global:exchange_names/4` does (on a conflict the node
//!   whose name sorts first resolves it: `random_exit_name` kills the pid
//!   on the node that sorts last); then `{resolved, …}` with the
//!   operations for the peer, whose own `resolved` and `new_nodes` casts
//!   are applied here. `in_sync` is answered in kind, and sent to the
//!   nodes a `new_nodes` or `resolved` names (`sync_others/1`).
//! - `global:resolve_it/4` is answered over RPC (a BEAM resolving a
//!   conflict asks the node of the pid it knows).
//!
//! Rust processes register with [`crate::Node::global_register`]: the
//! lock `{global, Registrar}` on the boss (the greatest node name) and
//! then every node, `{register, …}` to each, the lock released.
//! Malformed requests close the connection they came on (logged).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use erlkube_etf::{Atom, Pid, Reference, Term};
use erlkube_proto::dist::control::ControlMessage;

use crate::pg::Group as Key;
use crate::{Inner, Node, Process};

/// The protocol version we speak (OTP 25's and 27's `global` use 8).
const VSN: i64 = 8;

fn atom_is(t: &Term, s: &str) -> bool {
    t.as_atom().map(Atom::as_str) == Some(s)
}

/// A global name operation that cannot be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GlobalError {
    /// The name is registered already (`global:register_name/2` gives `no`).
    #[error("the global name {name} is registered already, by {}", Term::Pid(.pid.clone()))]
    NameTaken {
        /// The name.
        name: Term,
        /// Who holds it.
        pid: Pid,
    },
    /// The pid holds another global name already (OTP refuses a second).
    #[error("{} is registered already under the global name {name}", Term::Pid(.pid.clone()))]
    PidHasName {
        /// The pid.
        pid: Pid,
        /// Its name.
        name: Term,
    },
    /// The `global` lock could not be taken on every node in time.
    #[error("could not take the global lock on {0} in time; is global:sync() stuck somewhere?")]
    LockTimeout(String),
    /// A peer's `global_name_server` did not answer a register call.
    #[error("global_name_server on {0} did not answer")]
    NoAnswer(String),
}

struct NameEntry {
    pid: Pid,
    method: Term,
    mref: Option<Reference>,
}

struct Lock {
    requester: Term,
    holders: Vec<(Pid, Option<Reference>)>,
}

/// Names, locks and per-peer tags of the connect protocol.
#[derive(Default)]
pub(crate) struct GlobalState {
    peers: HashMap<String, (Term, Term)>,
    names: HashMap<Key, NameEntry>,
    locks: HashMap<Key, Lock>,
    /// The process holding this node's monitors (started with the node).
    watcher: Option<Pid>,
}

/// How a name conflict found when partitions meet is resolved: global's
/// three methods (the pid on the node whose name sorts first wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolveMethod {
    /// `global:random_exit_name/3` (the default): the loser is killed.
    ExitLoser,
    /// `global:random_notify_name/3`: the loser is sent
    /// `{global_name_conflict, Name}` and unregistered.
    NotifyLoser,
    /// `global:notify_all_name/3`: both get
    /// `{global_name_conflict, Name, OtherPid}`; the name is unregistered.
    NotifyBoth,
}

impl ResolveMethod {
    /// The method as `fun global:F/3`.
    fn export(self) -> Term {
        let f = match self {
            ResolveMethod::ExitLoser => "random_exit_name",
            ResolveMethod::NotifyLoser => "random_notify_name",
            ResolveMethod::NotifyBoth => "notify_all_name",
        };
        Term::Export {
            arity: 3,
            module: Atom::new("global"),
            function: Atom::new(f),
        }
    }
}

impl Inner {
    /// The pid standing for our locker and registrar in the connect
    /// protocol (it receives nothing we need).
    fn locker_pid(&self) -> Pid {
        self.pid(0)
    }

    fn gns_cast(self: &Arc<Self>, node: &str, msg: Term) {
        self.gns_send(node, Term::tuple(vec![Term::atom("$gen_cast"), msg]));
    }

    fn gns_send(self: &Arc<Self>, node: &str, msg: Term) {
        if !self.is_connected(node) {
            return;
        }
        self.send_signal_msg(
            node,
            ControlMessage::RegSend {
                from: self.locker_pid(),
                to_name: Atom::new("global_name_server"),
            },
            Some(msg),
        );
    }

    /// Forgets the tags of a peer that went down (its names and locks go
    /// through the monitors).
    pub(crate) fn global_node_down(&self, node: &str) {
        self.global.lock().expect("global").peers.remove(node);
    }

    fn global_monitor(self: &Arc<Self>, watcher: &Option<Pid>, pid: &Pid) -> Option<Reference> {
        let w = watcher.as_ref()?;
        Some(self.monitor_as(w, Term::Pid(pid.clone()), pid.node.as_str().to_owned()))
    }

    fn global_demonitor(self: &Arc<Self>, watcher: &Option<Pid>, r: &Option<Reference>) {
        if let (Some(w), Some(r)) = (watcher, r) {
            self.demonitor_as(w, r);
        }
    }
}

impl GlobalState {
    /// Our tag and the peer's in the connect protocol with `peer`.
    #[cfg(test)]
    pub(crate) fn peer_tags(&self, peer: &str) -> Option<(Term, Term)> {
        self.peers.get(peer).cloned()
    }

    fn where_(&self, inner: &Inner, name: &Term) -> Option<Pid> {
        let e = self.names.get(&Key(name.clone()))?;
        if e.pid.node == inner.name {
            let alive = inner
                .procs
                .lock()
                .expect("procs")
                .by_id
                .contains_key(&e.pid.id);
            alive.then(|| e.pid.clone())
        } else {
            Some(e.pid.clone())
        }
    }

    fn name_of(&self, pid: &Pid) -> Option<Term> {
        self.names
            .iter()
            .find(|(_, e)| e.pid == *pid)
            .map(|(k, _)| k.0.clone())
    }

    fn ins_name(&mut self, inner: &Arc<Inner>, name: Term, pid: Pid, method: Term) {
        self.del_name(inner, &name);
        let mref = inner.global_monitor(&self.watcher, &pid);
        self.names
            .insert(Key(name), NameEntry { pid, method, mref });
    }

    fn del_name(&mut self, inner: &Arc<Inner>, name: &Term) {
        if let Some(e) = self.names.remove(&Key(name.clone())) {
            inner.global_demonitor(&self.watcher, &e.mref);
        }
    }

    /// `handle_set_lock`: true when `pid` holds `{Resource, Requester}`.
    fn set_lock(&mut self, inner: &Arc<Inner>, id: &Term, pid: &Pid) -> Option<bool> {
        let [res, req] = id.as_tuple()? else {
            return None;
        };
        let key = Key(res.clone());
        match self.locks.get_mut(&key) {
            Some(l) if l.requester.exact_eq(req) => {
                if !l.holders.iter().any(|(p, _)| p == pid) {
                    let r = inner.global_monitor(&self.watcher, pid);
                    l.holders.push((pid.clone(), r));
                }
                Some(true)
            }
            Some(_) => Some(false),
            None => {
                let r = inner.global_monitor(&self.watcher, pid);
                self.locks.insert(
                    key,
                    Lock {
                        requester: req.clone(),
                        holders: vec![(pid.clone(), r)],
                    },
                );
                Some(true)
            }
        }
    }

    fn del_lock(&mut self, inner: &Arc<Inner>, id: &Term, pid: &Pid) -> Option<()> {
        let [res, req] = id.as_tuple()? else {
            return None;
        };
        let key = Key(res.clone());
        if let Some(l) = self.locks.get_mut(&key) {
            if l.requester.exact_eq(req) {
                if let Some(i) = l.holders.iter().position(|(p, _)| p == pid) {
                    let (_, r) = l.holders.remove(i);
                    inner.global_demonitor(&self.watcher, &r);
                }
                if l.holders.is_empty() {
                    self.locks.remove(&key);
                }
            }
        }
        Some(())
    }

    /// `lock_still_set/3` for a caller pid: it holds the `global` lock.
    fn holds_global_lock(&self, pid: &Pid) -> bool {
        self.locks
            .get(&Key(Term::atom("global")))
            .is_some_and(|l| l.holders.iter().any(|(p, _)| p == pid))
    }

    fn names_list(&self) -> Term {
        Term::List(
            self.names
                .iter()
                .map(|(k, e)| {
                    Term::tuple(vec![
                        k.0.clone(),
                        Term::Pid(e.pid.clone()),
                        e.method.clone(),
                    ])
                })
                .collect(),
        )
    }

    /// Applies `{insert, {Name, Pid, Method}}` and `{delete, Name}` ops.
    fn do_ops(&mut self, inner: &Arc<Inner>, ops: &Term) -> Result<(), ()> {
        for op in ops.as_list().ok_or(())? {
            match op.as_tuple() {
                Some([i, nm]) if atom_is(i, "insert") => match nm.as_tuple() {
                    Some([name, Term::Pid(pid), method]) => {
                        self.ins_name(inner, name.clone(), pid.clone(), method.clone())
                    }
                    _ => return Err(()),
                },
                Some([d, name]) if atom_is(d, "delete") => self.del_name(inner, name),
                _ => return Err(()),
            }
        }
        Ok(())
    }
}

/// `{Min, Max}` of two pids by node name (`global:minmax/2`).
fn minmax(p1: &Pid, p2: &Pid) -> (Pid, Pid) {
    if p1.node.as_str() < p2.node.as_str() {
        (p1.clone(), p2.clone())
    } else {
        (p2.clone(), p1.clone())
    }
}

/// `global:resolve_it(Method, Name, Pid1, Pid2)` for global's own three
/// methods; the winner, or `none`. Other methods are funs of BEAM code
/// this node cannot run: the name is dropped (logged), as OTP does when a
/// method returns something unexpected.
fn resolve_it(inner: &Arc<Inner>, method: &Term, name: &Term, p1: &Pid, p2: &Pid) -> Term {
    let from = inner.locker_pid();
    let f = match method {
        Term::Export {
            module,
            function,
            arity: 3,
        } if module.as_str() == "global" => function.as_str().to_owned(),
        _ => {
            tracing::warn!(name = %name, method = %method, "global: a name conflict's resolve method cannot run on a Rust node; the name is dropped");
            return Term::atom("none");
        }
    };
    let (min, max) = minmax(p1, p2);
    match f.as_str() {
        "random_exit_name" => {
            tracing::info!(name = %name, loser = %Term::Pid(max.clone()), "global: name conflict, terminating the loser");
            inner.route(vec![crate::signals::Action::Signal(
                ControlMessage::Exit2 {
                    from,
                    to: max,
                    reason: Term::atom("kill"),
                },
            )]);
            Term::Pid(min)
        }
        "random_notify_name" => {
            inner.send_to(
                &max,
                Term::tuple(vec![Term::atom("global_name_conflict"), name.clone()]),
            );
            Term::Pid(min)
        }
        "notify_all_name" => {
            for (a, b) in [(p1, p2), (p2, p1)] {
                inner.send_to(
                    a,
                    Term::tuple(vec![
                        Term::atom("global_name_conflict"),
                        name.clone(),
                        Term::Pid(b.clone()),
                    ]),
                );
            }
            Term::atom("none")
        }
        other => {
            tracing::warn!(name = %name, method = other, "global: unknown resolve method; the name is dropped");
            Term::atom("none")
        }
    }
}

/// Serves the registered name `global_name_server`.
pub(crate) fn register(services: &mut crate::dispatch::Services) {
    services.register_name("global_name_server", |inner, peer, _from, msg| {
        if let Err(why) = handle(inner, peer, &msg) {
            let node = peer.node().to_owned();
            tracing::warn!(peer = %node, message = %msg, reason = why, "global: malformed message; closing the connection");
            inner.close_connection(&node);
        }
    });
}

/// Starts the process holding global's monitors, and `global:resolve_it/4`.
pub(crate) fn start(node: &Node) {
    let inner = &node.inner;
    let mut watcher = inner.spawn_process();
    inner.global.lock().expect("global").watcher = Some(watcher.pid().clone());
    let weak: Weak<Inner> = Arc::downgrade(inner);
    tokio::spawn(async move {
        while let Some(msg) = watcher.recv().await {
            let Some(inner) = weak.upgrade() else { break };
            if let Some([d, Term::Reference(r), _, _, _]) = msg.as_tuple() {
                if atom_is(d, "DOWN") {
                    let mut st = inner.global.lock().expect("global");
                    st.names.retain(|_, e| e.mref.as_ref() != Some(&**r));
                    for l in st.locks.values_mut() {
                        l.holders.retain(|(_, m)| m.as_ref() != Some(&**r));
                    }
                    st.locks.retain(|_, l| !l.holders.is_empty());
                }
            }
        }
    });
    let weak = Arc::downgrade(inner);
    node.register_fn("global", "resolve_it", 4, move |args| {
        let inner = weak
            .upgrade()
            .ok_or_else(|| crate::RpcError::exit(Term::atom("noproc")))?;
        match &args[..] {
            [method, name, Term::Pid(p1), Term::Pid(p2)] => {
                Ok(resolve_it(&inner, method, name, p1, p2))
            }
            _ => Err(crate::RpcError::error(Term::atom("badarg"))),
        }
    });
}

/// A message to `global_name_server` on this node; `Err` for a malformed one.
fn handle(
    inner: &Arc<Inner>,
    peer: &mut crate::dispatch::Peer<'_>,
    msg: &Term,
) -> Result<(), &'static str> {
    let t = msg.as_tuple().ok_or("not a tuple")?;
    match t {
        [label, req] if atom_is(label, "$gen_cast") => {
            let node = peer.node().to_owned();
            cast(inner, &node, req)
        }
        [label, from, req] if atom_is(label, "$gen_call") => {
            let Some([Term::Pid(pid), tag]) = from.as_tuple() else {
                return Err("a call without {Pid, Tag}");
            };
            let Some(reply) = call(inner, pid, req)? else {
                return Ok(());
            };
            let alias_tag = matches!(tag, Term::List(_) | Term::ImproperList { .. });
            if pid.node.as_str() == peer.node() && !alias_tag {
                // answered on this connection, ahead of anything queued later
                peer.reply(
                    ControlMessage::Send { to: pid.clone() },
                    Some(Term::tuple(vec![tag.clone(), reply])),
                );
            } else {
                let from = crate::GenFrom {
                    pid: pid.clone(),
                    tag: tag.clone(),
                };
                crate::gen::reply_from(inner, &from, reply);
            }
            Ok(())
        }
        // init_connect_ack and others arrive as plain messages.
        _ => {
            tracing::debug!(msg = %msg, "global message ignored");
            Ok(())
        }
    }
}

/// A `$gen_call` from `pid`: the reply, if one is due.
fn call(inner: &Arc<Inner>, pid: &Pid, req: &Term) -> Result<Option<Term>, &'static str> {
    let mut st = inner.global.lock().expect("global");
    let op = req
        .as_tuple()
        .and_then(|t| t.first())
        .or(Some(req))
        .and_then(Term::as_atom)
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let t = req.as_tuple().unwrap_or_default();
    let reply = match (op.as_str(), t) {
        ("set_lock", [_, id]) => Term::boolean(st.set_lock(inner, id, pid).ok_or("bad lock id")?),
        ("del_lock", [_, id]) => {
            st.del_lock(inner, id, pid).ok_or("bad lock id")?;
            Term::atom("true")
        }
        ("register", [_, name, Term::Pid(p), method])
        | ("register_ext", [_, name, Term::Pid(p), method, _]) => {
            st.ins_name(inner, name.clone(), p.clone(), method.clone());
            if !st.holds_global_lock(pid) {
                // OTP's lock_still_set/3: a register without the lock is undone
                st.del_name(inner, name);
            }
            Term::atom("yes")
        }
        ("unregister", [_, name]) => {
            st.del_name(inner, name);
            Term::atom("ok")
        }
        ("get_known", _) | ("get_synced", _) => {
            drop(st);
            Term::List(
                crate::visible_nodes(inner)
                    .iter()
                    .map(|n| Term::atom(n))
                    .collect(),
            )
        }
        ("get_protocol_version", _) => Term::Integer(VSN),
        ("set_lock" | "del_lock" | "register" | "register_ext" | "unregister", _) => {
            return Err("a global call of the wrong shape")
        }
        _ => {
            tracing::warn!(request = %req, "global: call not supported, not answered");
            return Ok(None);
        }
    };
    Ok(Some(reply))
}

fn node_names(list: &Term) -> Vec<Atom> {
    list.as_list()
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.as_tuple().and_then(|t| t.first()).unwrap_or(n).as_atom())
        .cloned()
        .collect()
}

/// `sync_others/1`: tells each node of `nodes` we are in sync, connecting
/// first where needed (global's `connect_all`).
fn sync_others(inner: &Arc<Inner>, nodes: &Term) {
    for n in node_names(nodes) {
        if n == inner.name {
            continue;
        }
        let inner = inner.clone();
        let in_sync = Term::tuple(vec![
            Term::atom("in_sync"),
            Term::Atom(inner.name.clone()),
            Term::atom("true"),
        ]);
        if inner.is_connected(n.as_str()) {
            inner.gns_cast(n.as_str(), in_sync);
        } else if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                match crate::dial::connect(&inner, n.as_str()).await {
                    Ok(_) => inner.gns_cast(n.as_str(), in_sync),
                    Err(e) => tracing::warn!(node = %n, error = %e, "global: cannot connect to a node of the cluster"),
                }
            });
        }
    }
}

fn cast(inner: &Arc<Inner>, peer: &str, req: &Term) -> Result<(), &'static str> {
    let t = req.as_tuple().ok_or("a cast that is not a tuple")?;
    let me = Term::Atom(inner.name.clone());
    let locker = Term::Pid(inner.locker_pid());
    let op = t
        .first()
        .and_then(Term::as_atom)
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    match (op.as_str(), t) {
        ("init_connect", [_, vsn, node, _init]) => {
            let his_tag = vsn
                .as_tuple()
                .and_then(|v| v.get(1))
                .cloned()
                .ok_or("init_connect without {Vsn, Tag}")?;
            let node = node
                .as_atom()
                .ok_or("init_connect without a node")?
                .as_str()
                .to_owned();
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
        ("lock_set", [_, _locker, set, _known, tag]) => {
            let Some((mine, his)) = tags(inner, peer) else {
                return Ok(());
            };
            if *tag != mine || !atom_is(set, "true") {
                return Ok(());
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
        ("exchange", [_, _node, names, _ext, tag]) => {
            let Some((mine, his)) = tags(inner, peer) else {
                return Ok(());
            };
            if *tag != mine {
                return Ok(());
            }
            let theirs = names.as_list().ok_or("exchange without a name list")?;
            let mut st = inner.global.lock().expect("global");
            let ours = st.names_list();
            let (ops, res) = exchange_names(inner, &st, peer, theirs)?;
            st.do_ops(inner, &ops).map_err(|()| "bad ops")?;
            drop(st);
            inner.gns_cast(
                peer,
                Term::tuple(vec![
                    Term::atom("exchange"),
                    me.clone(),
                    ours,
                    Term::nil(),
                    his.clone(),
                ]),
            );
            inner.gns_cast(
                peer,
                Term::tuple(vec![
                    Term::atom("resolved"),
                    me,
                    res,
                    Term::nil(),
                    Term::atom("unused"),
                    Term::nil(),
                    his,
                ]),
            );
        }
        ("resolved", [_, _node, his_ops, his_known, _unused, _ext, tag]) => {
            let Some((mine, _)) = tags(inner, peer) else {
                return Ok(());
            };
            if *tag != mine {
                return Ok(());
            }
            inner
                .global
                .lock()
                .expect("global")
                .do_ops(inner, his_ops)
                .map_err(|()| "resolved with bad ops")?;
            sync_others(inner, his_known);
        }
        // Another node tells us it is in sync with us (it learnt about us
        // from a third node): answer in kind so it counts us as synced too.
        ("in_sync", [_, node, _]) => {
            let node = node.as_atom().ok_or("in_sync without a node")?;
            inner.gns_cast(
                node.as_str(),
                Term::tuple(vec![Term::atom("in_sync"), me, Term::atom("true")]),
            );
        }
        // New nodes joined the peer's partition: apply its operations and
        // tell each new node we are in sync, as `global:new_nodes/6` does.
        ("new_nodes", [_, _node, ops, _ext, nodes, _extra]) => {
            inner
                .global
                .lock()
                .expect("global")
                .do_ops(inner, ops)
                .map_err(|()| "new_nodes with bad ops")?;
            sync_others(inner, nodes);
        }
        ("init_connect" | "lock_set" | "exchange" | "resolved" | "in_sync" | "new_nodes", _) => {
            return Err("a connect-protocol cast of the wrong shape")
        }
        _ => tracing::debug!(request = %req, "global cast ignored"),
    }
    Ok(())
}

/// `global:exchange_names/4`: (our ops, the peer's ops) for the peer's
/// names. Conflicts are resolved here when our name sorts first.
fn exchange_names(
    inner: &Arc<Inner>,
    st: &GlobalState,
    peer: &str,
    theirs: &[Term],
) -> Result<(Term, Term), &'static str> {
    let mut ops = Vec::new();
    let mut res = Vec::new();
    for entry in theirs {
        let Some([name, Term::Pid(pid), method]) = entry.as_tuple() else {
            return Err("exchange with a bad name entry");
        };
        let insert = |name: &Term, pid: &Pid, method: &Term| {
            Term::tuple(vec![
                Term::atom("insert"),
                Term::tuple(vec![name.clone(), Term::Pid(pid.clone()), method.clone()]),
            ])
        };
        match st.names.get(&Key(name.clone())) {
            Some(e) if e.pid == *pid => {}
            Some(e) if inner.name.as_str() < peer => {
                let winner = resolve_it(inner, &e.method, name, pid, &e.pid);
                match &winner {
                    Term::Pid(w) if *w == *pid => ops.push(insert(name, pid, method)),
                    Term::Pid(w) if *w == e.pid => res.push(insert(name, &e.pid, &e.method)),
                    _ => {
                        let d = Term::tuple(vec![Term::atom("delete"), name.clone()]);
                        ops.push(d.clone());
                        res.push(d);
                    }
                }
            }
            Some(_) => {}
            None => ops.push(insert(name, pid, method)),
        }
    }
    Ok((Term::List(ops), Term::List(res)))
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

impl Node {
    /// `global:whereis_name(Name)`.
    pub fn global_whereis(&self, name: &Term) -> Option<Pid> {
        self.inner
            .global
            .lock()
            .expect("global")
            .where_(&self.inner, name)
    }

    /// `global:registered_names()`.
    pub fn global_names(&self) -> Vec<Term> {
        let st = self.inner.global.lock().expect("global");
        st.names.keys().map(|k| k.0.clone()).collect()
    }

    /// `global:register_name(Name, Pid)` (resolve method
    /// `random_exit_name`): under the `global` lock on every node, the name
    /// is registered everywhere, or refused when it is taken or `pid` has
    /// a name already.
    pub async fn global_register(&self, name: Term, pid: &Pid) -> Result<(), GlobalError> {
        self.global_register_with(name, pid, ResolveMethod::ExitLoser)
            .await
    }

    /// `global:register_name(Name, Pid, Method)` with one of global's
    /// resolve methods.
    pub async fn global_register_with(
        &self,
        name: Term,
        pid: &Pid,
        method: ResolveMethod,
    ) -> Result<(), GlobalError> {
        let req = Term::tuple(vec![
            Term::atom("register"),
            name.clone(),
            Term::Pid(pid.clone()),
            method.export(),
        ]);
        let pid = pid.clone();
        let check = |st: &GlobalState| {
            if let Some(p) = st.where_(&self.inner, &name) {
                return Err(GlobalError::NameTaken {
                    name: name.clone(),
                    pid: p,
                });
            }
            if let Some(n) = st.name_of(&pid) {
                return Err(GlobalError::PidHasName {
                    pid: pid.clone(),
                    name: n,
                });
            }
            Ok(())
        };
        self.trans_all_known(req, check).await
    }

    /// `global:unregister_name(Name)` on every node.
    pub async fn global_unregister(&self, name: &Term) -> Result<(), GlobalError> {
        if self.global_whereis(name).is_none()
            && !self.global_names().iter().any(|n| n.exact_eq(name))
        {
            return Ok(());
        }
        let req = Term::tuple(vec![Term::atom("unregister"), name.clone()]);
        self.trans_all_known(req, |_| Ok(())).await
    }

    /// `global:trans_all_known/1` around one request: takes `{global,
    /// Registrar}` on the boss and on every node, checks, sends `req` to
    /// every node (and applies it here), releases the lock.
    async fn trans_all_known(
        &self,
        req: Term,
        check: impl Fn(&GlobalState) -> Result<(), GlobalError>,
    ) -> Result<(), GlobalError> {
        let mut registrar = self.spawn_process();
        let id = Term::tuple(vec![
            Term::atom("global"),
            Term::Pid(registrar.pid().clone()),
        ]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut attempt = 0u32;
        let nodes = loop {
            let mut all: Vec<String> = self.nodes();
            all.push(self.name().to_owned());
            all.sort();
            let boss = all.last().cloned().unwrap_or_default();
            let mut order = vec![boss.clone()];
            order.extend(all.iter().filter(|n| **n != boss).cloned());
            let mut locked = Vec::new();
            let mut ok = true;
            for n in &order {
                let granted = self
                    .gns_call(
                        &mut registrar,
                        n,
                        Term::tuple(vec![Term::atom("set_lock"), id.clone()]),
                    )
                    .await;
                if granted.as_ref().is_some_and(|t| atom_is(t, "true")) {
                    locked.push(n.clone());
                } else {
                    ok = false;
                    break;
                }
            }
            if ok {
                break order;
            }
            for n in &locked {
                let _ = self
                    .gns_call(
                        &mut registrar,
                        n,
                        Term::tuple(vec![Term::atom("del_lock"), id.clone()]),
                    )
                    .await;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(GlobalError::LockTimeout(order.join(", ")));
            }
            attempt += 1;
            let max_ms = 250u64 << attempt.min(4);
            tokio::time::sleep(Duration::from_millis(
                1 + crate::random_u32() as u64 % max_ms,
            ))
            .await;
        };
        let checked = check(&self.inner.global.lock().expect("global"));
        let mut out = checked;
        if out.is_ok() {
            for n in &nodes {
                if self
                    .gns_call(&mut registrar, n, req.clone())
                    .await
                    .is_none()
                {
                    out = Err(GlobalError::NoAnswer(n.clone()));
                }
            }
        }
        for n in &nodes {
            let _ = self
                .gns_call(
                    &mut registrar,
                    n,
                    Term::tuple(vec![Term::atom("del_lock"), id.clone()]),
                )
                .await;
        }
        out
    }

    /// `gen_server:call({global_name_server, Node}, Req)` from `me`; this
    /// node's own server is called directly. `None` when there is no answer.
    async fn gns_call(&self, me: &mut Process, node: &str, req: Term) -> Option<Term> {
        if node == self.name() {
            return call(&self.inner, me.pid(), &req).ok().flatten();
        }
        let mref = me.monitor_name("global_name_server", node);
        let tag = self.make_ref();
        let msg = Term::tuple(vec![
            Term::atom("$gen_call"),
            Term::tuple(vec![Term::Pid(me.pid().clone()), Term::from(tag.clone())]),
            req,
        ]);
        if self
            .send_named(me.pid(), node, "global_name_server", msg)
            .await
            .is_err()
        {
            me.demonitor(&mref);
            return None;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let answer = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(m) = me.recv_timeout(left).await else {
                break None;
            };
            match m.as_tuple() {
                Some([Term::Reference(r), answer]) if **r == tag => break Some(answer.clone()),
                Some([d, Term::Reference(r), ..]) if atom_is(d, "DOWN") && **r == mref => {
                    break None
                }
                _ => continue,
            }
        };
        me.demonitor(&mref);
        answer
    }
}
