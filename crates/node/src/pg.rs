//! `pg` scopes, OTP's protocol (kernel's `pg.erl`, OTP 23+): a scope is a
//! process registered under the scope's name on every node that runs it.
//! Scopes find each other with `{discover, ScopePid}` (sent to
//! `{Scope, Node}` when a visible node comes up, and answered once),
//! exchange their local members with a `$gen_cast` `{sync, ScopePid,
//! [{Group, Pids}]}`, and then tell each other `{join, ScopePid, Group,
//! PidOrPids}` and `{leave, ScopePid, PidOrPids, [Group]}`. Each scope
//! monitors the others' scope processes (a node that goes away takes its
//! members with it) and its own members (a member that exits leaves).
//!
//! Only local processes join; a group with no members does not exist.
//! A message that is not one of the protocol's is logged and dropped, and
//! when it names a peer's scope process, the connection to that peer is
//! closed (OTP's scope crashes on such input; this one stays up).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use erlkube_etf::{Atom, Pid, Reference, Term};
use erlkube_proto::dist::control::ControlMessage;

use crate::{Inner, NodeEvent, Process};

/// A pg operation that cannot be done.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The node does not run this scope.
    #[error("pg scope {0} is not running on this node; add it to NodeConfig::pg_scopes or call Node::start_pg_scope")]
    NoScope(String),
    /// The scope runs already.
    #[error("pg scope {0} is already running on this node")]
    AlreadyRunning(String),
    /// A process of this node holds the scope's name.
    #[error("cannot start pg scope {0}: the name is registered by another process")]
    NameTaken(String),
    /// pg joins processes of this node only.
    #[error("{} is not a process of this node; pg joins and leaves local processes only", Term::Pid(.0.clone()))]
    NotLocal(Pid),
    /// `leave` of processes that have not joined the group.
    #[error("not joined: no given process is a member of group {0} in this scope")]
    NotJoined(String),
}

/// A group name (or any term used as a key): compared exactly (`=:=`),
/// as ETS keys are.
#[derive(Clone, Debug)]
pub(crate) struct Group(pub(crate) Term);

impl PartialEq for Group {
    fn eq(&self, other: &Self) -> bool {
        self.0.exact_eq(&other.0)
    }
}
impl Eq for Group {}
impl std::hash::Hash for Group {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

/// One scope this node runs.
pub(crate) struct Scope {
    name: Atom,
    pid: Pid,
    state: Mutex<ScopeState>,
}

#[derive(Default)]
struct ScopeState {
    /// Local members: the scope's monitor on each and the groups it joined
    /// (a group once per join, as OTP keeps it).
    local: HashMap<Pid, (Reference, Vec<Group>)>,
    /// Peer scopes: our monitor on each and its members per group.
    remote: HashMap<Pid, (Reference, HashMap<Group, Vec<Pid>>)>,
}

fn atom_is(t: &Term, s: &str) -> bool {
    t.as_atom().map(Atom::as_str) == Some(s)
}

fn pid_or_pids(pids: &[Pid]) -> Term {
    if pids.len() == 1 {
        Term::Pid(pids[0].clone())
    } else {
        Term::List(pids.iter().cloned().map(Term::Pid).collect())
    }
}

fn pids_of(t: &Term) -> Option<Vec<Pid>> {
    match t {
        Term::Pid(p) => Some(vec![p.clone()]),
        Term::List(v) => v.iter().map(|p| p.as_pid().cloned()).collect(),
        t if t.is_nil() => Some(Vec::new()),
        _ => None,
    }
}

impl Inner {
    fn pg_scope(&self, scope: &str) -> Result<Arc<Scope>, PgError> {
        self.pg
            .read()
            .expect("pg")
            .get(&Atom::new(scope))
            .cloned()
            .ok_or_else(|| PgError::NoScope(scope.to_owned()))
    }

    /// Sends as `erlang:send(Pid, Msg, [noconnect])`: dropped without a
    /// connection.
    fn send_noconnect(self: &Arc<Self>, to: &Pid, msg: Term) {
        if to.node == self.name {
            self.deliver_local(to, msg);
        } else if self.is_connected(to.node.as_str()) {
            self.send_to(to, msg);
        }
    }

    pub(crate) fn close_connection(&self, node: &str) {
        let h = self.conns.lock().expect("conns").up.get(node).cloned();
        if let Some(h) = h {
            // Closed now: `connect` no longer hands it out.
            h.tx.close();
            h.kill.notify_one();
        }
    }
}

/// Starts scope `scope` on this node: a process registered under the
/// name, and its task.
pub(crate) fn start_scope(inner: &Arc<Inner>, scope: &str) -> Result<(), PgError> {
    let name = Atom::new(scope);
    let mut map = inner.pg.write().expect("pg");
    if map.contains_key(&name) {
        return Err(PgError::AlreadyRunning(scope.to_owned()));
    }
    let process = inner.spawn_process();
    {
        let mut procs = inner.procs.lock().expect("procs");
        if procs.names.contains_key(&name) {
            return Err(PgError::NameTaken(scope.to_owned()));
        }
        procs.names.insert(name.clone(), process.pid().id);
    }
    let sc = Arc::new(Scope {
        name: name.clone(),
        pid: process.pid().clone(),
        state: Mutex::new(ScopeState::default()),
    });
    map.insert(name, sc.clone());
    drop(map);
    // Subscribe before discovering, so that no nodeup falls between.
    let events = inner.events.subscribe();
    let shutdown = inner.shutdown.subscribe();
    for node in crate::visible_nodes(inner) {
        discover(inner, &sc, &node);
    }
    tokio::spawn(run(Arc::downgrade(inner), sc, process, events, shutdown));
    Ok(())
}

fn discover(inner: &Arc<Inner>, sc: &Scope, node: &str) {
    if inner.is_connected(node) {
        inner.send_signal_msg(
            node,
            ControlMessage::RegSend {
                from: sc.pid.clone(),
                to_name: sc.name.clone(),
            },
            Some(Term::tuple(vec![
                Term::atom("discover"),
                Term::Pid(sc.pid.clone()),
            ])),
        );
    }
}

async fn run(
    inner: Weak<Inner>,
    sc: Arc<Scope>,
    mut process: Process,
    mut events: tokio::sync::broadcast::Receiver<NodeEvent>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            msg = process.recv() => {
                let Some(msg) = msg else { break };
                let Some(inner) = inner.upgrade() else { break };
                tracing::debug!(scope = %sc.name, message = %msg, "pg: message");
                if let Err(peer) = handle(&inner, &sc, &msg) {
                    tracing::warn!(scope = %sc.name, message = %msg, "pg: malformed message dropped");
                    if let Some(peer) = peer.filter(|p| p.node != inner.name) {
                        tracing::warn!(scope = %sc.name, peer = %peer.node, "pg: closing the connection that sent a malformed pg message");
                        inner.close_connection(peer.node.as_str());
                    }
                }
            }
            ev = events.recv() => match ev {
                Ok(NodeEvent::NodeUp { node, hidden: false }) => {
                    let Some(inner) = inner.upgrade() else { break };
                    discover(&inner, &sc, &node);
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(scope = %sc.name, missed = n, "pg: node events lagged");
                }
                Err(_) => break,
            },
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break }
            }
        }
    }
}

/// One message to the scope process; `Err` for a malformed one, with the
/// peer scope it names if any.
fn handle(inner: &Arc<Inner>, sc: &Scope, msg: &Term) -> Result<(), Option<Pid>> {
    let t = msg.as_tuple().ok_or(None)?;
    let peer_in = |i: usize| t.get(i).and_then(Term::as_pid).cloned();
    match t {
        [op, peer] | [op, peer, _] if atom_is(op, "discover") => {
            let peer = peer.as_pid().ok_or(None)?;
            on_discover(inner, sc, peer);
        }
        [op, req] if atom_is(op, "$gen_cast") => match req.as_tuple() {
            Some([s, Term::Pid(peer), groups]) if atom_is(s, "sync") => {
                let mut parsed = HashMap::new();
                for g in groups.as_list().ok_or(Some(peer.clone()))? {
                    match g.as_tuple() {
                        Some([group, pids]) => {
                            let pids = pids_of(pids).ok_or(Some(peer.clone()))?;
                            parsed.insert(Group(group.clone()), pids);
                        }
                        _ => return Err(Some(peer.clone())),
                    }
                }
                on_sync(inner, sc, peer, parsed);
            }
            _ => return Err(None),
        },
        [op, Term::Pid(peer), group, pids] if atom_is(op, "join") => {
            let pids = pids_of(pids).ok_or(Some(peer.clone()))?;
            let mut st = sc.state.lock().expect("pg scope");
            if let Some((_, groups)) = st.remote.get_mut(peer) {
                let members = groups.entry(Group(group.clone())).or_default();
                for p in pids.into_iter().rev() {
                    members.insert(0, p);
                }
            }
        }
        [op, Term::Pid(peer), pids, groups] if atom_is(op, "leave") => {
            let pids = pids_of(pids).ok_or(Some(peer.clone()))?;
            let groups = groups.as_list().ok_or(Some(peer.clone()))?;
            let mut st = sc.state.lock().expect("pg scope");
            if let Some((_, map)) = st.remote.get_mut(peer) {
                for g in groups {
                    let key = Group(g.clone());
                    if let Some(members) = map.get_mut(&key) {
                        members.retain(|m| !pids.contains(m));
                        if members.is_empty() {
                            map.remove(&key);
                        }
                    }
                }
            }
        }
        [op, Term::Reference(r), _, Term::Pid(pid), _] if atom_is(op, "DOWN") => {
            on_down(inner, sc, r, pid);
        }
        // `pg:join/leave` from another node's process: OTP's scope crashes
        // with badarg (only local pids may join); answer nothing, log.
        _ => return Err(peer_in(1)),
    }
    Ok(())
}

fn local_groups(st: &ScopeState) -> Term {
    let mut by_group: Vec<(Group, Vec<Pid>)> = Vec::new();
    for (pid, (_, groups)) in &st.local {
        for g in groups {
            match by_group.iter_mut().find(|(k, _)| k == g) {
                Some((_, v)) => v.push(pid.clone()),
                None => by_group.push((g.clone(), vec![pid.clone()])),
            }
        }
    }
    Term::List(
        by_group
            .into_iter()
            .map(|(g, pids)| {
                Term::tuple(vec![
                    g.0,
                    Term::List(pids.into_iter().map(Term::Pid).collect()),
                ])
            })
            .collect(),
    )
}

fn on_discover(inner: &Arc<Inner>, sc: &Scope, peer: &Pid) {
    let mut st = sc.state.lock().expect("pg scope");
    let sync = Term::tuple(vec![
        Term::atom("$gen_cast"),
        Term::tuple(vec![
            Term::atom("sync"),
            Term::Pid(sc.pid.clone()),
            local_groups(&st),
        ]),
    ]);
    inner.send_noconnect(peer, sync);
    if !st.remote.contains_key(peer) {
        let r = inner.monitor_as(
            &sc.pid,
            Term::Pid(peer.clone()),
            peer.node.as_str().to_owned(),
        );
        inner.send_noconnect(
            peer,
            Term::tuple(vec![Term::atom("discover"), Term::Pid(sc.pid.clone())]),
        );
        st.remote.insert(peer.clone(), (r, HashMap::new()));
    }
}

fn on_sync(inner: &Arc<Inner>, sc: &Scope, peer: &Pid, groups: HashMap<Group, Vec<Pid>>) {
    let mut st = sc.state.lock().expect("pg scope");
    match st.remote.get_mut(peer) {
        Some((_, map)) => *map = groups,
        None => {
            let r = inner.monitor_as(
                &sc.pid,
                Term::Pid(peer.clone()),
                peer.node.as_str().to_owned(),
            );
            st.remote.insert(peer.clone(), (r, groups));
        }
    }
}

fn on_down(inner: &Arc<Inner>, sc: &Scope, r: &Reference, pid: &Pid) {
    let mut st = sc.state.lock().expect("pg scope");
    if st.local.get(pid).is_some_and(|(mr, _)| mr == r) {
        let (_, groups) = st.local.remove(pid).expect("present");
        let mut unique: Vec<Group> = Vec::new();
        for g in groups {
            if !unique.contains(&g) {
                unique.push(g);
            }
        }
        let msg = Term::tuple(vec![
            Term::atom("leave"),
            Term::Pid(sc.pid.clone()),
            Term::Pid(pid.clone()),
            Term::List(unique.into_iter().map(|g| g.0).collect()),
        ]);
        for peer in st.remote.keys() {
            inner.send_noconnect(peer, msg.clone());
        }
    } else if st.remote.get(pid).is_some_and(|(mr, _)| mr == r) {
        st.remote.remove(pid);
    }
}

/// `pg:join(Scope, Group, Pids)` for local processes.
pub(crate) fn join(
    inner: &Arc<Inner>,
    scope: &str,
    group: Term,
    pids: &[Pid],
) -> Result<(), PgError> {
    let sc = inner.pg_scope(scope)?;
    if let Some(p) = pids
        .iter()
        .find(|p| p.node != inner.name || p.creation != inner.creation)
    {
        return Err(PgError::NotLocal(p.clone()));
    }
    if pids.is_empty() {
        return Ok(());
    }
    let key = Group(group.clone());
    let mut st = sc.state.lock().expect("pg scope");
    for p in pids {
        match st.local.get_mut(p) {
            Some((_, groups)) => groups.push(key.clone()),
            None => {
                let r = inner.monitor_as(
                    &sc.pid,
                    Term::Pid(p.clone()),
                    inner.name.as_str().to_owned(),
                );
                st.local.insert(p.clone(), (r, vec![key.clone()]));
            }
        }
    }
    let msg = Term::tuple(vec![
        Term::atom("join"),
        Term::Pid(sc.pid.clone()),
        group,
        pid_or_pids(pids),
    ]);
    for peer in st.remote.keys() {
        inner.send_noconnect(peer, msg.clone());
    }
    Ok(())
}

/// `pg:leave(Scope, Group, Pids)` for local processes.
pub(crate) fn leave(
    inner: &Arc<Inner>,
    scope: &str,
    group: Term,
    pids: &[Pid],
) -> Result<(), PgError> {
    let sc = inner.pg_scope(scope)?;
    if let Some(p) = pids
        .iter()
        .find(|p| p.node != inner.name || p.creation != inner.creation)
    {
        return Err(PgError::NotLocal(p.clone()));
    }
    let key = Group(group.clone());
    let mut st = sc.state.lock().expect("pg scope");
    let mut left = Vec::new();
    for p in pids {
        let Some((r, groups)) = st.local.get_mut(p) else {
            continue;
        };
        let Some(i) = groups.iter().position(|g| *g == key) else {
            continue;
        };
        groups.remove(i);
        left.push(p.clone());
        if groups.is_empty() {
            let r = r.clone();
            st.local.remove(p);
            inner.demonitor_as(&sc.pid, &r);
        }
    }
    if left.is_empty() {
        return Err(PgError::NotJoined(group.to_string()));
    }
    let msg = Term::tuple(vec![
        Term::atom("leave"),
        Term::Pid(sc.pid.clone()),
        pid_or_pids(&left),
        Term::List(vec![group]),
    ]);
    for peer in st.remote.keys() {
        inner.send_noconnect(peer, msg.clone());
    }
    Ok(())
}

/// `pg:get_members(Scope, Group)`: local members first, then remote ones.
pub(crate) fn members(inner: &Inner, scope: &str, group: &Term) -> Result<Vec<Pid>, PgError> {
    let sc = inner.pg_scope(scope)?;
    let key = Group(group.clone());
    let st = sc.state.lock().expect("pg scope");
    let mut out = local_of(&st, &key);
    for (_, map) in st.remote.values() {
        if let Some(v) = map.get(&key) {
            out.extend(v.iter().cloned());
        }
    }
    Ok(out)
}

fn local_of(st: &ScopeState, key: &Group) -> Vec<Pid> {
    let mut out = Vec::new();
    for (pid, (_, groups)) in &st.local {
        for g in groups.iter().filter(|g| *g == key) {
            let _ = g;
            out.push(pid.clone());
        }
    }
    out
}

/// `pg:get_local_members(Scope, Group)`.
pub(crate) fn local_members(inner: &Inner, scope: &str, group: &Term) -> Result<Vec<Pid>, PgError> {
    let sc = inner.pg_scope(scope)?;
    let st = sc.state.lock().expect("pg scope");
    Ok(local_of(&st, &Group(group.clone())))
}

/// `pg:which_groups(Scope)`: every group with a member anywhere.
pub(crate) fn which_groups(inner: &Inner, scope: &str) -> Result<Vec<Term>, PgError> {
    let sc = inner.pg_scope(scope)?;
    let st = sc.state.lock().expect("pg scope");
    let mut out: Vec<Group> = Vec::new();
    let all = st
        .local
        .values()
        .flat_map(|(_, g)| g.iter())
        .chain(st.remote.values().flat_map(|(_, m)| m.keys()));
    for g in all {
        if !out.contains(g) {
            out.push(g.clone());
        }
    }
    Ok(out.into_iter().map(|g| g.0).collect())
}

impl crate::Node {
    /// Starts pg scope `scope` on this node (the scopes in
    /// [`crate::NodeConfig::pg_scopes`] start with the node).
    pub fn start_pg_scope(&self, scope: &str) -> Result<(), PgError> {
        start_scope(&self.inner, scope)
    }

    /// `pg:join(Scope, Group, Pids)`: local processes join `group`; a
    /// process may join a group more than once (it is then listed as often).
    pub fn pg_join(&self, scope: &str, group: Term, pids: &[Pid]) -> Result<(), PgError> {
        join(&self.inner, scope, group, pids)
    }

    /// `pg:leave(Scope, Group, Pids)`: undoes one join of each process;
    /// [`PgError::NotJoined`] when none of them was a member.
    pub fn pg_leave(&self, scope: &str, group: Term, pids: &[Pid]) -> Result<(), PgError> {
        leave(&self.inner, scope, group, pids)
    }

    /// `pg:get_members(Scope, Group)`: members on every node running the
    /// scope.
    pub fn pg_members(&self, scope: &str, group: &Term) -> Result<Vec<Pid>, PgError> {
        members(&self.inner, scope, group)
    }

    /// `pg:get_local_members(Scope, Group)`.
    pub fn pg_local_members(&self, scope: &str, group: &Term) -> Result<Vec<Pid>, PgError> {
        local_members(&self.inner, scope, group)
    }

    /// `pg:which_groups(Scope)`.
    pub fn pg_which_groups(&self, scope: &str) -> Result<Vec<Term>, PgError> {
        which_groups(&self.inner, scope)
    }
}
