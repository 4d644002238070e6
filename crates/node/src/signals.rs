//! Links, monitors and exit signals of Rust processes, both with local
//! and remote peers, and what a nodedown does to them (`noconnection`).
//!
//! State changes happen under the `procs` lock; the signals they cause are
//! collected and routed after the lock is released (local ones are handled
//! in a loop, remote ones are queued on the peer's connection).

use std::collections::HashMap;
use std::sync::Arc;

use erlkube_etf::{Atom, Pid, Reference, Term};
use erlkube_proto::dist::control::ControlMessage;

use crate::Inner;

/// Link state towards one peer process (the UNLINK_ID protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkState {
    Linked,
    /// We sent UNLINK_ID with this id and wait for the ack; exit signals
    /// from the peer are ignored meanwhile.
    Unlinking(u64),
}

/// Per-process signal state.
#[derive(Default)]
pub(crate) struct ProcState {
    pub links: HashMap<Pid, LinkState>,
    /// Monitors others hold on this process: (watcher, ref, target as given).
    pub monitored_by: Vec<(Pid, Reference, Term)>,
    /// Monitors this process holds: ref ids -> (target as given, target node).
    pub monitors: HashMap<Vec<u32>, (Term, String)>,
    pub trap_exit: bool,
    pub node_monitors: Vec<String>,
}

/// A signal to route after the lock is released.
pub(crate) enum Action {
    /// A control message to the node of its destination (maybe this one).
    Signal(ControlMessage),
    /// A message for a local pid.
    Deliver(Pid, Term),
}

fn atom_is(t: &Term, s: &str) -> bool {
    t.as_atom().map(Atom::as_str) == Some(s)
}

fn dest_of(sig: &ControlMessage) -> Option<&Pid> {
    use ControlMessage as C;
    match sig {
        C::Link { to, .. }
        | C::Unlink { to, .. }
        | C::Exit { to, .. }
        | C::Exit2 { to, .. }
        | C::UnlinkId { to, .. }
        | C::UnlinkIdAck { to, .. }
        | C::MonitorPExit { to, .. } => Some(to),
        _ => None,
    }
}

impl Inner {
    /// Routes signals: local ones are handled here (possibly causing more),
    /// remote ones are queued on the connection.
    pub(crate) fn route(self: &Arc<Self>, actions: Vec<Action>) {
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Deliver(pid, msg) => {
                    self.deliver_local(&pid, msg);
                }
                Action::Signal(sig) => {
                    let local = match &sig {
                        ControlMessage::MonitorP { to, .. }
                        | ControlMessage::DemonitorP { to, .. } => match to {
                            Term::Pid(p) => p.node == self.name,
                            _ => false, // by name: the caller routes those
                        },
                        s => dest_of(s).is_some_and(|p| p.node == self.name),
                    };
                    if local {
                        queue.extend(self.handle_signal(sig, None));
                    } else {
                        let node = match &sig {
                            ControlMessage::MonitorP {
                                to: Term::Pid(p), ..
                            }
                            | ControlMessage::DemonitorP {
                                to: Term::Pid(p), ..
                            } => p.node.as_str().to_owned(),
                            s => match dest_of(s) {
                                Some(p) => p.node.as_str().to_owned(),
                                None => continue,
                            },
                        };
                        self.send_signal_msg(&node, sig, None);
                    }
                }
            }
        }
    }

    /// Applies an incoming signal to local state; returns what it causes.
    /// `peer` is the node the signal came from (for name monitors).
    pub(crate) fn handle_signal(&self, sig: ControlMessage, peer: Option<&str>) -> Vec<Action> {
        use ControlMessage as C;
        let mut out = Vec::new();
        match sig {
            C::Link { from, to } => {
                let mut procs = self.procs.lock().expect("procs");
                if self.is_local_alive(&procs, &to) {
                    procs
                        .state
                        .entry(to.id)
                        .or_default()
                        .links
                        .insert(from, LinkState::Linked);
                } else {
                    out.push(Action::Signal(C::Exit {
                        from: to,
                        to: from,
                        reason: Term::atom("noproc"),
                    }));
                }
            }
            C::Unlink { from, to } => {
                let mut procs = self.procs.lock().expect("procs");
                if let Some(s) = procs.state.get_mut(&to.id) {
                    s.links.remove(&from);
                }
            }
            C::UnlinkId { id, from, to } => {
                let mut procs = self.procs.lock().expect("procs");
                if let Some(s) = procs.state.get_mut(&to.id) {
                    if s.links.get(&from) == Some(&LinkState::Linked) {
                        s.links.remove(&from);
                    }
                }
                drop(procs);
                out.push(Action::Signal(C::UnlinkIdAck {
                    id,
                    from: to,
                    to: from,
                }));
            }
            C::UnlinkIdAck { id, from, to } => {
                let mut procs = self.procs.lock().expect("procs");
                if let Some(s) = procs.state.get_mut(&to.id) {
                    let ours = id.as_integer().map(|i| i as u64);
                    if let (Some(LinkState::Unlinking(n)), Some(i)) = (s.links.get(&from), ours) {
                        if *n == i {
                            s.links.remove(&from);
                        }
                    }
                }
            }
            C::Exit { from, to, reason }
            | C::ExitTt {
                from, to, reason, ..
            } => {
                let linked = {
                    let mut procs = self.procs.lock().expect("procs");
                    match procs.state.get_mut(&to.id) {
                        Some(s) => match s.links.get(&from) {
                            Some(LinkState::Linked) => {
                                s.links.remove(&from);
                                true
                            }
                            _ => false,
                        },
                        None => false,
                    }
                };
                if linked {
                    out.extend(self.exit_signal(&to, &from, reason, true));
                }
            }
            C::Exit2 { from, to, reason }
            | C::Exit2Tt {
                from, to, reason, ..
            } => out.extend(self.exit_signal(&to, &from, reason, false)),
            C::MonitorP {
                from,
                to,
                reference,
            } => {
                let mut procs = self.procs.lock().expect("procs");
                let id = match &to {
                    Term::Pid(p) if self.is_local_alive(&procs, p) => Some(p.id),
                    Term::Atom(a) => procs.names.get(a).copied(),
                    _ => None,
                };
                match id {
                    Some(id) => procs
                        .state
                        .entry(id)
                        .or_default()
                        .monitored_by
                        .push((from, reference, to)),
                    None => {
                        let builtin = to.as_atom().is_some_and(|a| self.services.serves(a));
                        if !builtin {
                            out.push(Action::Signal(C::MonitorPExit {
                                from: to,
                                to: from,
                                reference,
                                reason: Term::atom("noproc"),
                            }));
                        }
                    }
                }
            }
            C::DemonitorP { to, reference, .. } => {
                let mut procs = self.procs.lock().expect("procs");
                let id = match &to {
                    Term::Pid(p) => Some(p.id),
                    Term::Atom(a) => procs.names.get(a).copied(),
                    _ => None,
                };
                if let Some(s) = id.and_then(|id| procs.state.get_mut(&id)) {
                    s.monitored_by.retain(|(_, r, _)| *r != reference);
                }
            }
            C::MonitorPExit {
                from,
                to,
                reference,
                reason,
            } => out.extend(self.monitor_fired(from, to, reference, reason, peer)),
            other => tracing::debug!(op = other.op(), "signal not handled"),
        }
        out
    }

    /// A monitor this node's process `to` held has fired.
    pub(crate) fn monitor_fired(
        &self,
        from: Term,
        to: Pid,
        reference: Reference,
        reason: Term,
        peer: Option<&str>,
    ) -> Vec<Action> {
        let held = {
            let mut procs = self.procs.lock().expect("procs");
            procs
                .state
                .get_mut(&to.id)
                .and_then(|s| s.monitors.remove(&reference.ids))
        };
        let object = match (&from, held) {
            (Term::Atom(a), Some((_, node))) => {
                Term::tuple(vec![Term::Atom(a.clone()), Term::atom(&node)])
            }
            (Term::Atom(a), None) => Term::tuple(vec![
                Term::Atom(a.clone()),
                Term::atom(peer.unwrap_or(self.name.as_str())),
            ]),
            (f, _) => f.clone(),
        };
        vec![Action::Deliver(
            to,
            Term::tuple(vec![
                Term::atom("DOWN"),
                Term::from(reference),
                Term::atom("process"),
                object,
                reason,
            ]),
        )]
    }

    fn is_local_alive(&self, procs: &crate::Procs, p: &Pid) -> bool {
        p.node == self.name && p.creation == self.creation && procs.by_id.contains_key(&p.id)
    }

    /// An exit signal reaches local process `to`.
    fn exit_signal(&self, to: &Pid, from: &Pid, reason: Term, linked: bool) -> Vec<Action> {
        let trapping = {
            let procs = self.procs.lock().expect("procs");
            if !self.is_local_alive(&procs, to) {
                return Vec::new();
            }
            procs.state.get(&to.id).is_some_and(|s| s.trap_exit)
        };
        if !linked && atom_is(&reason, "kill") {
            return self.terminate(to.id, Term::atom("killed"));
        }
        if trapping {
            return vec![Action::Deliver(
                to.clone(),
                Term::tuple(vec![Term::atom("EXIT"), Term::Pid(from.clone()), reason]),
            )];
        }
        if atom_is(&reason, "normal") && from != to {
            return Vec::new();
        }
        self.terminate(to.id, reason)
    }

    /// Ends local process `id` with `reason`: its mailbox closes, its
    /// links get exit signals and its monitors fire.
    pub(crate) fn terminate(&self, id: u32, reason: Term) -> Vec<Action> {
        let pid = self.pid(id);
        let (state, names) = {
            let mut procs = self.procs.lock().expect("procs");
            if procs.by_id.remove(&id).is_none() {
                return Vec::new();
            }
            let names: Vec<Atom> = procs
                .names
                .iter()
                .filter(|(_, v)| **v == id)
                .map(|(k, _)| k.clone())
                .collect();
            procs.names.retain(|_, v| *v != id);
            procs.aliases.retain(|_, v| *v != id);
            procs.exit_reasons.insert(id, reason.clone());
            (procs.state.remove(&id), names)
        };
        self.gen_calls.write().expect("gen_calls").remove(&id);
        let _ = names;
        let Some(state) = state else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (peer, st) in state.links {
            if st == LinkState::Linked {
                out.push(Action::Signal(ControlMessage::Exit {
                    from: pid.clone(),
                    to: peer,
                    reason: reason.clone(),
                }));
            }
        }
        for (watcher, reference, target) in state.monitored_by {
            out.push(Action::Signal(ControlMessage::MonitorPExit {
                from: target,
                to: watcher,
                reference,
                reason: reason.clone(),
            }));
        }
        for (ids, (target, node)) in state.monitors {
            let reference = Reference {
                node: self.name.clone(),
                creation: self.creation,
                ids,
            };
            let sig = ControlMessage::DemonitorP {
                from: pid.clone(),
                to: target,
                reference,
            };
            if node == self.name.as_str() {
                out.push(Action::Signal(sig));
            } else {
                self.send_signal_msg_nowait(&node, sig);
            }
        }
        out
    }

    fn send_signal_msg_nowait(&self, node: &str, sig: ControlMessage) {
        let h = self.conns.lock().expect("conns").up.get(node).cloned();
        if let Some(h) = h {
            let (control, payload) = erlkube_proto::dist::control::DistMessage {
                control: sig,
                payload: None,
            }
            .encode();
            let _ = h.tx.try_send(crate::Outbound { control, payload });
        }
    }

    /// The connection to `node` is gone: links to its processes exit with
    /// `noconnection`, monitors on them fire, node monitors get `nodedown`.
    pub(crate) fn node_down(self: &Arc<Self>, node: &str) {
        let mut out = Vec::new();
        let mut exits = Vec::new();
        {
            let mut procs = self.procs.lock().expect("procs");
            for (id, s) in procs.state.iter_mut() {
                let pid = self.pid(*id);
                let gone: Vec<Pid> = s
                    .links
                    .keys()
                    .filter(|p| p.node.as_str() == node)
                    .cloned()
                    .collect();
                for p in gone {
                    if s.links.remove(&p) == Some(LinkState::Linked) {
                        exits.push((pid.clone(), p));
                    }
                }
                s.monitored_by.retain(|(w, _, _)| w.node.as_str() != node);
                let fired: Vec<Vec<u32>> = s
                    .monitors
                    .iter()
                    .filter(|(_, (_, n))| n == node)
                    .map(|(k, _)| k.clone())
                    .collect();
                for ids in fired {
                    if let Some((target, _)) = s.monitors.remove(&ids) {
                        let object = match target {
                            Term::Atom(ref a) => {
                                Term::tuple(vec![Term::Atom(a.clone()), Term::atom(node)])
                            }
                            t => t,
                        };
                        out.push(Action::Deliver(
                            pid.clone(),
                            Term::tuple(vec![
                                Term::atom("DOWN"),
                                Term::from(Reference {
                                    node: self.name.clone(),
                                    creation: self.creation,
                                    ids,
                                }),
                                Term::atom("process"),
                                object,
                                Term::atom("noconnection"),
                            ]),
                        ));
                    }
                }
                let before = s.node_monitors.len();
                s.node_monitors.retain(|n| n != node);
                for _ in s.node_monitors.len()..before {
                    out.push(Action::Deliver(
                        pid.clone(),
                        Term::tuple(vec![Term::atom("nodedown"), Term::atom(node)]),
                    ));
                }
            }
        }
        for (local, remote) in exits {
            out.extend(self.exit_signal(&local, &remote, Term::atom("noconnection"), true));
        }
        self.route(out);
    }

    /// `erlang:monitor(process, Target)` held by local process `watcher`
    /// (a service's process monitoring from its own task).
    pub(crate) fn monitor_as(
        self: &Arc<Self>,
        watcher: &Pid,
        target: Term,
        node: String,
    ) -> Reference {
        let r = self.make_ref();
        self.procs
            .lock()
            .expect("procs")
            .state
            .entry(watcher.id)
            .or_default()
            .monitors
            .insert(r.ids.clone(), (target.clone(), node.clone()));
        let sig = ControlMessage::MonitorP {
            from: watcher.clone(),
            to: target.clone(),
            reference: r.clone(),
        };
        if node == self.name.as_str() {
            let a = self.handle_signal(sig, None);
            self.route(a);
        } else if !self.is_connected(&node) {
            let a = self.monitor_fired(
                target,
                watcher.clone(),
                r.clone(),
                Term::atom("noconnection"),
                Some(&node),
            );
            self.route(a);
        } else {
            self.send_signal_msg(&node, sig, None);
        }
        r
    }

    /// `erlang:demonitor(Ref)` for a monitor local process `watcher` holds.
    pub(crate) fn demonitor_as(self: &Arc<Self>, watcher: &Pid, r: &Reference) {
        let held = self
            .procs
            .lock()
            .expect("procs")
            .state
            .get_mut(&watcher.id)
            .and_then(|s| s.monitors.remove(&r.ids));
        if let Some((target, node)) = held {
            let sig = ControlMessage::DemonitorP {
                from: watcher.clone(),
                to: target,
                reference: r.clone(),
            };
            if node == self.name.as_str() {
                let a = self.handle_signal(sig, None);
                self.route(a);
            } else {
                self.send_signal_msg(&node, sig, None);
            }
        }
    }

    pub(crate) fn is_connected(&self, node: &str) -> bool {
        self.conns.lock().expect("conns").up.contains_key(node)
    }
}

impl crate::Process {
    fn inner(&self) -> Option<Arc<Inner>> {
        self.node.upgrade()
    }

    /// `process_flag(trap_exit, On)`: exit signals become
    /// `{'EXIT', From, Reason}` messages instead of ending the process.
    pub fn trap_exit(&self, on: bool) {
        if let Some(inner) = self.inner() {
            inner
                .procs
                .lock()
                .expect("procs")
                .state
                .entry(self.pid.id)
                .or_default()
                .trap_exit = on;
        }
    }

    /// `link(Pid)`. A pid on a node that is not connected gives an
    /// immediate `noconnection` exit signal; a dead local pid `noproc`.
    pub fn link(&self, to: &Pid) {
        let Some(inner) = self.inner() else { return };
        if to.node != inner.name && !inner.is_connected(to.node.as_str()) {
            let a = inner.exit_signal(&self.pid, to, Term::atom("noconnection"), true);
            inner.route(a);
            return;
        }
        inner
            .procs
            .lock()
            .expect("procs")
            .state
            .entry(self.pid.id)
            .or_default()
            .links
            .insert(to.clone(), LinkState::Linked);
        inner.route(vec![Action::Signal(ControlMessage::Link {
            from: self.pid.clone(),
            to: to.clone(),
        })]);
    }

    /// `unlink(Pid)` with the UNLINK_ID protocol.
    pub fn unlink(&self, to: &Pid) {
        let Some(inner) = self.inner() else { return };
        let id = inner.make_ref().ids[0] as u64 | 1;
        {
            let mut procs = inner.procs.lock().expect("procs");
            let s = procs.state.entry(self.pid.id).or_default();
            if s.links.get(to) != Some(&LinkState::Linked) {
                return;
            }
            s.links.insert(to.clone(), LinkState::Unlinking(id));
        }
        inner.route(vec![Action::Signal(ControlMessage::UnlinkId {
            id: Term::Integer(id as i64),
            from: self.pid.clone(),
            to: to.clone(),
        })]);
    }

    /// `erlang:monitor(process, Pid)`; for a name use
    /// [`crate::Process::monitor_name`]. The DOWN comes as
    /// `{'DOWN', Ref, process, Pid, Reason}`.
    pub fn monitor(&self, to: &Pid) -> Reference {
        self.monitor_term(Term::Pid(to.clone()), to.node.as_str().to_owned())
    }

    /// `erlang:monitor(process, {Name, Node})`. The DOWN names the object
    /// `{Name, Node}`; a name nobody holds gives `noproc`.
    pub fn monitor_name(&self, name: &str, node: &str) -> Reference {
        self.monitor_term(Term::atom(name), node.to_owned())
    }

    fn monitor_term(&self, target: Term, node: String) -> Reference {
        let Some(inner) = self.inner() else {
            return Reference {
                node: self.pid.node.clone(),
                creation: 0,
                ids: vec![0, 0, 0],
            };
        };
        inner.monitor_as(&self.pid, target, node)
    }

    /// `erlang:demonitor(Ref)`.
    pub fn demonitor(&self, r: &Reference) {
        let Some(inner) = self.inner() else { return };
        let held = inner
            .procs
            .lock()
            .expect("procs")
            .state
            .get_mut(&self.pid.id)
            .and_then(|s| s.monitors.remove(&r.ids));
        if let Some((target, node)) = held {
            let sig = ControlMessage::DemonitorP {
                from: self.pid.clone(),
                to: target,
                reference: r.clone(),
            };
            if node == inner.name.as_str() {
                let a = inner.handle_signal(sig, None);
                inner.route(a);
            } else {
                inner.send_signal_msg(&node, sig, None);
            }
        }
    }

    /// `monitor_node(Node, true)`: `{nodedown, Node}` when the connection
    /// goes (at once if there is none).
    pub fn monitor_node(&self, node: &str) {
        let Some(inner) = self.inner() else { return };
        if !inner.is_connected(node) {
            inner.deliver_local(
                &self.pid,
                Term::tuple(vec![Term::atom("nodedown"), Term::atom(node)]),
            );
            return;
        }
        inner
            .procs
            .lock()
            .expect("procs")
            .state
            .entry(self.pid.id)
            .or_default()
            .node_monitors
            .push(node.to_owned());
    }

    /// Ends the process with `reason` (links and monitors fire with it).
    pub fn exit(self, reason: Term) {
        if let Some(inner) = self.inner() {
            let a = inner.terminate(self.pid.id, reason);
            inner.route(a);
        }
    }

    /// True until the process ended (by [`crate::Process::exit`] or an
    /// exit signal).
    pub fn is_alive(&self) -> bool {
        self.inner().is_some_and(|i| {
            i.procs
                .lock()
                .expect("procs")
                .by_id
                .contains_key(&self.pid.id)
        })
    }

    /// Why the process ended, once it has been ended by a signal.
    pub fn exit_reason(&self) -> Option<Term> {
        let inner = self.inner()?;
        let r = inner
            .procs
            .lock()
            .expect("procs")
            .exit_reasons
            .get(&self.pid.id)
            .cloned();
        r
    }
}

impl crate::Node {
    /// `exit(Pid, Reason)` sent from `from` (EXIT2): `kill` cannot be trapped.
    pub fn exit_signal(&self, from: &Pid, to: &Pid, reason: Term) {
        self.inner.route(vec![Action::Signal(ControlMessage::Exit2 {
            from: from.clone(),
            to: to.clone(),
            reason,
        })]);
    }
}
