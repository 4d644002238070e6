//! The Mnesia task of one node incarnation: join once the quorum is met,
//! wait for the tables, then follow the schema and Mnesia's system events.
//! Started by the supervisor when the node comes up, aborted when it goes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use erlkube_etf::{Pid, Term};
use erlkube_node::{Node, Process};

use super::{
    restarts, Evidence, MnesiaConfig, MnesiaStatus, PartitionPolicy, Phase, INFO, JOIN, SUBSCRIBER,
    TAG,
};
use crate::beam::BeamNode;
use crate::rpc::{self, RpcError};
use crate::status::Status;
use crate::throttle::{Throttle, Verdict};

/// How often the schema is read while ready.
const CHECK: Duration = Duration::from_secs(1);
/// Each `mnesia:wait_for_tables/2` call (the loading list is published
/// between calls).
const WAIT_STEP_MS: i64 = 1000;
/// Pause before a failed join is retried.
const RETRY: Duration = Duration::from_secs(2);
/// How often a table conflict is looked at again.
const CONFLICT_RECHECK: Duration = Duration::from_secs(10);

/// A failed step on the node.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("{0}")]
    Answer(String),
}

/// The node, its parsed Erlang texts, the settings and the shared status.
struct Ctx {
    beam: BeamNode,
    target: String,
    config: MnesiaConfig,
    rpc_timeout: Duration,
    status: Arc<Mutex<Status>>,
    join: Term,
    info: Term,
    subscriber: Term,
}

fn atom_is(t: &Term, s: &str) -> bool {
    t.as_atom().map(|a| a.as_str()) == Some(s)
}

fn atoms(t: &Term) -> BTreeSet<String> {
    t.as_list()
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a.as_atom().map(|a| a.as_str().to_owned()))
        .collect()
}

fn chars(text: &str) -> Term {
    Term::list(text.chars().map(|c| Term::from(c as u32)).collect())
}

/// Sorted `[{Name, Value}]` (an orddict, as `erl_eval` reads it).
fn bindings(mut pairs: Vec<(&str, Term)>) -> Term {
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    Term::list(
        pairs
            .into_iter()
            .map(|(k, v)| Term::tuple(vec![Term::atom(k), v]))
            .collect(),
    )
}

/// Has the node scan and parse `text` (expressions ending with a dot).
async fn parse(beam: &BeamNode, text: &str) -> Result<Term, StepError> {
    let scanned = beam.call("erl_scan", "string", vec![chars(text)]).await?;
    let tokens = match scanned.as_tuple() {
        Some([ok, tokens, _]) if atom_is(ok, "ok") => tokens.clone(),
        _ => {
            return Err(StepError::Answer(format!(
                "erl_scan:string/1 returned {scanned}"
            )))
        }
    };
    let parsed = beam.call("erl_parse", "parse_exprs", vec![tokens]).await?;
    match parsed.as_tuple() {
        Some([ok, exprs]) if atom_is(ok, "ok") => Ok(exprs.clone()),
        _ => Err(StepError::Answer(format!(
            "erl_parse:parse_exprs/1 returned {parsed}"
        ))),
    }
}

impl Ctx {
    async fn call(
        &self,
        m: &str,
        f: &str,
        args: Vec<Term>,
        timeout: Duration,
    ) -> Result<Term, StepError> {
        Ok(rpc::call(self.beam.local(), &self.target, m, f, args, timeout).await?)
    }

    /// `erl_eval:exprs(Exprs, Bindings)` on the node: the value.
    async fn eval(
        &self,
        exprs: &Term,
        b: Vec<(&str, Term)>,
        timeout: Duration,
    ) -> Result<Term, StepError> {
        let r = self
            .call(
                "erl_eval",
                "exprs",
                vec![exprs.clone(), bindings(b)],
                timeout,
            )
            .await?;
        match r.as_tuple() {
            Some([v, value, _]) if atom_is(v, "value") => Ok(value.clone()),
            _ => Err(StepError::Answer(format!("erl_eval:exprs/2 returned {r}"))),
        }
    }

    fn update(&self, f: impl FnOnce(&mut MnesiaStatus)) {
        let mut s = self.status.lock().unwrap();
        if let Some(m) = s.mnesia.as_mut() {
            f(m);
        }
    }

    fn set_phase(&self, p: Phase) {
        self.update(|m| m.phase = p);
    }

    /// `{IsRunning, DbNodes, RunningDbNodes}`.
    async fn info(&self) -> Result<(bool, BTreeSet<String>, BTreeSet<String>), StepError> {
        let t = self.eval(&self.info, vec![], self.rpc_timeout).await?;
        match t.as_tuple() {
            Some([r, db, running]) => Ok((atom_is(r, "yes"), atoms(db), atoms(running))),
            _ => Err(StepError::Answer(format!(
                "mnesia:system_info/1 returned {t}"
            ))),
        }
    }

    /// One join step with `peers`. Returns the tables to wait for and the
    /// conflicts (sentences).
    async fn join(
        &self,
        peers: &BTreeSet<String>,
    ) -> Result<(Vec<String>, Vec<String>), StepError> {
        let tables = Term::list(
            self.config
                .tables
                .iter()
                .map(|t| {
                    Term::tuple(vec![
                        Term::atom(&t.name),
                        Term::atom(t.kind.as_str()),
                        Term::list(t.attributes.iter().map(|a| Term::atom(a)).collect()),
                    ])
                })
                .collect(),
        );
        let peers_t = Term::list(peers.iter().map(|p| Term::atom(p)).collect());
        let r = self
            .eval(
                &self.join,
                vec![("Peers", peers_t), ("Tables", tables)],
                self.config.join_timeout,
            )
            .await?;
        let results = match r.as_tuple() {
            Some([ok, list]) if atom_is(ok, "ok") => list.as_list().unwrap_or_default().to_vec(),
            Some([e, why]) if atom_is(e, "error") => {
                let text = why.to_string();
                let hint = if text.contains("undef") {
                    " (is Mnesia in the release? add :mnesia to extra_applications, or the erlang-mnesia package)"
                } else {
                    ""
                };
                return Err(StepError::Answer(format!("{why}{hint}")));
            }
            _ => return Err(StepError::Answer(format!("join returned {r}"))),
        };
        let mut ok = Vec::new();
        let mut conflicts = Vec::new();
        let mut errors = Vec::new();
        for item in &results {
            let Some([name, verdict]) = item.as_tuple() else {
                continue;
            };
            let name = name
                .as_atom()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default();
            let spec = self.config.tables.iter().find(|t| t.name == name);
            match verdict.as_tuple() {
                Some([c, ty, attrs]) if atom_is(c, "conflict") => {
                    let want = spec
                        .map(|s| {
                            format!(
                                "{} with attributes [{}]",
                                s.kind.as_str(),
                                s.attributes.join(",")
                            )
                        })
                        .unwrap_or_default();
                    conflicts.push(format!(
                        "table {name} exists as {ty} with attributes {attrs}, configured as {want}"
                    ));
                }
                Some([e, why]) if atom_is(e, "error") => {
                    errors.push(format!("table {name}: {why}"))
                }
                _ => {
                    if let Some(v) = verdict.as_atom() {
                        if v.as_str() != "present" {
                            tracing::info!(node = %self.target, table = %name, step = v.as_str(), "mnesia: local RAM replica in place");
                        }
                    }
                    ok.push(name);
                }
            }
        }
        if !errors.is_empty() {
            return Err(StepError::Answer(errors.join("; ")));
        }
        Ok((ok, conflicts))
    }

    /// Waits until `tables` are loaded, publishing those still loading.
    async fn wait_tables(&self, tables: &[String]) -> Result<(), StepError> {
        if tables.is_empty() {
            return Ok(());
        }
        let list = Term::list(tables.iter().map(|t| Term::atom(t)).collect());
        let bound = Duration::from_millis(WAIT_STEP_MS as u64) + self.rpc_timeout;
        let started = Instant::now();
        loop {
            let r = self
                .call(
                    "mnesia",
                    "wait_for_tables",
                    vec![list.clone(), Term::Integer(WAIT_STEP_MS)],
                    bound,
                )
                .await?;
            if atom_is(&r, "ok") {
                return Ok(());
            }
            match r.as_tuple() {
                Some([t, bad]) if atom_is(t, "timeout") => {
                    let loading: Vec<String> = atoms(bad).into_iter().collect();
                    self.set_phase(Phase::Loading(loading));
                }
                _ => {
                    return Err(StepError::Answer(format!(
                        "mnesia:wait_for_tables/2 returned {r}"
                    )))
                }
            }
            if started.elapsed() > self.config.join_timeout {
                return Err(StepError::Answer(format!(
                    "tables still loading after mnesia.join_timeout ({:?})",
                    self.config.join_timeout
                )));
            }
        }
    }
}

/// The system-event subscriber on the node and the agent's sink process.
struct Events {
    local: Node,
    sink: Process,
    remote: Pid,
}

impl Drop for Events {
    fn drop(&mut self) {
        self.local
            .exit_signal(self.sink.pid(), &self.remote, Term::atom("shutdown"));
    }
}

/// One message of the subscriber.
#[derive(Debug)]
enum Event {
    Inconsistent { context: String, node: String },
    Down(String),
    Ended(String),
    Other,
}

impl Events {
    async fn start(ctx: &Ctx) -> Result<Events, StepError> {
        let local = ctx.beam.local().clone();
        let sink = local.spawn_process();
        sink.trap_exit(true);
        let spawned = ctx
            .call(
                "erlang",
                "spawn",
                vec![
                    Term::atom("erl_eval"),
                    Term::atom("exprs"),
                    Term::list(vec![
                        ctx.subscriber.clone(),
                        bindings(vec![("Sink", Term::Pid(sink.pid().clone()))]),
                    ]),
                ],
                ctx.rpc_timeout,
            )
            .await?;
        let Some(remote) = spawned.as_pid().cloned() else {
            return Err(StepError::Answer(format!(
                "erlang:spawn/3 returned {spawned}"
            )));
        };
        let mut ev = Events {
            local,
            sink,
            remote,
        };
        let deadline = tokio::time::Instant::now() + ctx.rpc_timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(m) = ev.sink.recv_timeout(left).await else {
                return Err(StepError::Answer(
                    "the system-event subscriber did not confirm".into(),
                ));
            };
            if let Some([tag, p, body]) = m.as_tuple() {
                if atom_is(tag, TAG)
                    && p.as_pid() == Some(&ev.remote)
                    && atom_is(body, "subscribed")
                {
                    return Ok(ev);
                }
                if atom_is(tag, "EXIT") && p.as_pid() == Some(&ev.remote) {
                    return Err(StepError::Answer(format!(
                        "the system-event subscriber exited: {body}"
                    )));
                }
            }
        }
    }

    async fn next(&mut self) -> Event {
        let Some(m) = self.sink.recv().await else {
            return Event::Ended("the agent's node stopped".into());
        };
        let Some([tag, p, body]) = m.as_tuple() else {
            return Event::Other;
        };
        if p.as_pid() != Some(&self.remote) {
            return Event::Other;
        }
        if atom_is(tag, "EXIT") {
            return Event::Ended(body.to_string());
        }
        if !atom_is(tag, TAG) {
            return Event::Other;
        }
        match body.as_tuple() {
            Some([k, c, n]) if atom_is(k, "inconsistent_database") => Event::Inconsistent {
                context: c.to_string(),
                node: n
                    .as_atom()
                    .map(|a| a.as_str().to_owned())
                    .unwrap_or_else(|| n.to_string()),
            },
            Some([k, n]) if atom_is(k, "mnesia_down") => Event::Down(
                n.as_atom()
                    .map(|a| a.as_str().to_owned())
                    .unwrap_or_default(),
            ),
            _ => Event::Other,
        }
    }
}

/// The node went down: its replicas are gone with it (counters kept).
pub fn node_gone(status: &Mutex<Status>) {
    if let Some(m) = status.lock().unwrap().mnesia.as_mut() {
        m.phase = Phase::Waiting;
        m.running_db_nodes.clear();
    }
}

/// Runs the Mnesia work for one incarnation of the node until aborted.
pub async fn run(
    beam: BeamNode,
    config: MnesiaConfig,
    rpc_timeout: Duration,
    status: Arc<Mutex<Status>>,
) {
    let target = status.lock().unwrap().node.clone();
    let mut throttle = Throttle::new(Duration::from_secs(5), Duration::from_secs(300));
    // Parse the texts once per incarnation (retried until the node answers).
    let (join, info, subscriber) = loop {
        let r = async {
            Ok::<_, StepError>((
                parse(&beam, JOIN).await?,
                parse(&beam, INFO).await?,
                parse(&beam, SUBSCRIBER).await?,
            ))
        }
        .await;
        match r {
            Ok(t) => break t,
            Err(e) => {
                tracing::debug!(node = %target, error = %e, "mnesia: cannot parse the expressions on the node yet");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    let ctx = Ctx {
        beam,
        target,
        config,
        rpc_timeout,
        status,
        join,
        info,
        subscriber,
    };
    let mut heal_pending = false;
    let mut peers_hint: Option<BTreeSet<String>> = None;
    loop {
        if !heal_pending {
            ctx.set_phase(Phase::Waiting);
        }
        // Join once the node is connected to its quorum.
        let peers = loop {
            {
                let s = ctx.status.lock().unwrap();
                if s.beam_up && s.quorum_state().met() {
                    break peers_hint.take().unwrap_or_else(|| {
                        s.connected.iter().map(|n| n.as_str().to_owned()).collect()
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if !heal_pending {
            ctx.set_phase(Phase::Joining);
        }
        let join_started = Instant::now();
        let (tables, conflicts) = match ctx.join(&peers).await {
            Ok(r) => r,
            Err(e) => {
                let text = e.to_string();
                if let Verdict::First | Verdict::Repeat { .. } =
                    throttle.failure(&text, std::time::Instant::now())
                {
                    tracing::error!(node = %ctx.target, error = %text, "mnesia: join failed; retrying");
                }
                ctx.set_phase(Phase::Failed(text));
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        // Logged when they change, not at every re-check.
        let known = ctx
            .status
            .lock()
            .unwrap()
            .mnesia
            .as_ref()
            .is_some_and(|m| m.conflicts == conflicts);
        for c in conflicts.iter().filter(|_| !known) {
            tracing::error!(node = %ctx.target, conflict = %c, "mnesia: configured table conflicts with the existing one; nothing was deleted or changed; the node stays unready");
        }
        ctx.update(|m| m.conflicts = conflicts.clone());
        let joined = join_started.elapsed();
        ctx.set_phase(Phase::Loading(tables.clone()));
        let load_started = Instant::now();
        if let Err(e) = ctx.wait_tables(&tables).await {
            let text = e.to_string();
            tracing::error!(node = %ctx.target, error = %text, "mnesia: waiting for the tables failed; retrying");
            ctx.set_phase(Phase::Failed(text));
            tokio::time::sleep(RETRY).await;
            continue;
        }
        let mut events = match Events::start(&ctx).await {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(node = %ctx.target, error = %e, "mnesia: cannot follow system events; inconsistencies will not be seen until it is retried");
                None
            }
        };
        ctx.set_phase(Phase::Ready);
        throttle.success(std::time::Instant::now());
        if heal_pending {
            heal_pending = false;
            ctx.update(|m| m.inconsistencies_healed += 1);
            tracing::info!(node = %ctx.target, "mnesia: healed: restarted and reloaded the tables from the other side");
        }
        tracing::info!(node = %ctx.target, tables = ?tables, conflicts = conflicts.len(), join = ?joined, load = ?load_started.elapsed(), "mnesia: local RAM replicas loaded");
        match steady(&ctx, &mut events, !conflicts.is_empty()).await {
            Next::Rejoin => {}
            Next::Restart { peers, why } => {
                heal_pending = true;
                ctx.set_phase(Phase::Restarting(why.clone()));
                drop(events.take());
                tracing::warn!(node = %ctx.target, reason = %why, "mnesia: restarting Mnesia to reload from the majority (this side's writes during the split are dropped)");
                let _ = ctx
                    .call("mnesia", "stop", vec![], ctx.config.join_timeout)
                    .await;
                match ctx
                    .call("mnesia", "start", vec![], ctx.config.join_timeout)
                    .await
                {
                    Ok(t) if atom_is(&t, "ok") => {}
                    other => {
                        tracing::error!(node = %ctx.target, answer = ?other.map(|t| t.to_string()), "mnesia: mnesia:start() after the restart failed; retrying the join")
                    }
                }
                peers_hint = Some(peers);
            }
        }
    }
}

enum Next {
    /// Mnesia stopped under us or a conflict may be gone: join again.
    Rejoin,
    /// Restart Mnesia and join `peers` (the other side).
    Restart {
        peers: BTreeSet<String>,
        why: String,
    },
}

async fn next_event(events: &mut Option<Events>) -> Event {
    match events {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

/// Ready: reads the schema every second (removing members gone for
/// good), and handles system events.
async fn steady(ctx: &Ctx, events: &mut Option<Events>, conflicted: bool) -> Next {
    let mut tick = tokio::time::interval(CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gone_since: BTreeMap<String, Instant> = BTreeMap::new();
    let mut held_back: BTreeSet<String> = BTreeSet::new();
    let since = Instant::now();
    loop {
        tokio::select! {
            ev = next_event(events) => match ev {
                Event::Inconsistent { context, node } => {
                    let text = format!("{{inconsistent_database, {context}, {node}}}");
                    ctx.update(|m| {
                        m.inconsistencies_seen += 1;
                        m.last_inconsistency = Some(text.clone());
                    });
                    if let Some(next) = inconsistent(ctx, &context, &node).await {
                        return next;
                    }
                }
                Event::Down(n) if n == ctx.target => {
                    tracing::warn!(node = %ctx.target, "mnesia: stopped on the node; joining again");
                    return Next::Rejoin;
                }
                Event::Ended(reason) => {
                    tracing::warn!(node = %ctx.target, %reason, "mnesia: the system-event subscriber ended; starting another");
                    *events = Events::start(ctx).await.ok();
                }
                _ => {}
            },
            _ = tick.tick() => {
                let (running, db, run_db) = match ctx.info().await {
                    Ok(i) => i,
                    Err(e) => {
                        tracing::debug!(node = %ctx.target, error = %e, "mnesia: cannot read the schema");
                        continue;
                    }
                };
                ctx.update(|m| {
                    m.db_nodes = db.clone();
                    m.running_db_nodes = run_db.clone();
                });
                if !running {
                    tracing::warn!(node = %ctx.target, "mnesia: not running on the node; joining again");
                    return Next::Rejoin;
                }
                if conflicted && since.elapsed() >= CONFLICT_RECHECK {
                    return Next::Rejoin;
                }
                if events.is_none() {
                    *events = Events::start(ctx).await.ok();
                }
                remove_gone(ctx, &db, &run_db, &mut gone_since, &mut held_back).await;
            }
        }
    }
}

/// `inconsistent_database` about `node`: `None` to go on, or a restart.
async fn inconsistent(ctx: &Ctx, context: &str, node: &str) -> Option<Next> {
    if ctx.config.partition_policy == PartitionPolicy::Log {
        tracing::error!(node = %ctx.target, peer = %node, %context, "mnesia: inconsistent database after a partition (mnesia.partition_policy = log: nothing done; the two sides keep their own copies)");
        return None;
    }
    let mine = match ctx.info().await {
        Ok((_, _, r)) => r,
        Err(e) => {
            tracing::warn!(node = %ctx.target, error = %e, "mnesia: cannot read running_db_nodes after an inconsistency");
            return None;
        }
    };
    if mine.contains(node) {
        tracing::info!(node = %ctx.target, peer = %node, %context, "mnesia: inconsistency already resolved (the peer runs with this node again)");
        return None;
    }
    let theirs = match ctx
        .call(
            "erpc",
            "call",
            vec![
                Term::atom(node),
                Term::atom("mnesia"),
                Term::atom("system_info"),
                Term::list(vec![Term::atom("running_db_nodes")]),
                Term::Integer(ctx.rpc_timeout.as_millis() as i64),
            ],
            ctx.rpc_timeout + Duration::from_secs(1),
        )
        .await
    {
        Ok(t) => atoms(&t),
        Err(e) => {
            tracing::warn!(node = %ctx.target, peer = %node, error = %e, "mnesia: cannot ask the other side for its running_db_nodes; not acting");
            return None;
        }
    };
    if restarts(&mine, &theirs) {
        let why = format!(
            "inconsistent_database ({context}) with {node}: this side {mine:?} is the minority against {theirs:?}"
        );
        Some(Next::Restart { peers: theirs, why })
    } else {
        tracing::warn!(node = %ctx.target, peer = %node, %context, this_side = ?mine, other_side = ?theirs, "mnesia: inconsistent database after a partition; this side is kept, the other restarts");
        None
    }
}

/// Removes schema members gone for good: left discovery (a complete
/// answer), not connected to the node, not running Mnesia, for
/// `mnesia.removal_grace`, while no partition is suspected. Only the
/// smallest running member acts, so one removal is made per member.
async fn remove_gone(
    ctx: &Ctx,
    db: &BTreeSet<String>,
    running: &BTreeSet<String>,
    gone_since: &mut BTreeMap<String, Instant>,
    held_back: &mut BTreeSet<String>,
) {
    let (evidence, suspected): (Vec<(String, Evidence)>, bool) = {
        let s = ctx.status.lock().unwrap();
        let ev = db
            .iter()
            .filter(|n| **n != ctx.target)
            .map(|n| {
                let name = erlkube_discovery::NodeName::new(n);
                (
                    n.clone(),
                    Evidence {
                        complete_answer: s.complete_peers.is_some(),
                        discovered: s.discovered.as_ref().is_some_and(|d| d.contains(&name)),
                        connected: s.connected.contains(&name),
                        running: running.contains(n),
                    },
                )
            })
            .collect();
        (ev, s.partition.suspected)
    };
    let now = Instant::now();
    gone_since.retain(|n, _| evidence.iter().any(|(m, e)| m == n && e.gone()));
    for (n, e) in &evidence {
        if e.gone() {
            gone_since.entry(n.clone()).or_insert(now);
        }
    }
    let actor = running.first().is_some_and(|m| *m == ctx.target);
    for (n, at) in gone_since.clone() {
        if now.duration_since(at) < ctx.config.removal_grace || !actor {
            continue;
        }
        if suspected {
            if held_back.insert(n.clone()) {
                tracing::info!(node = %ctx.target, member = %n, "mnesia: not removing a gone member while a partition is suspected");
            }
            continue;
        }
        match ctx
            .call(
                "mnesia",
                "del_table_copy",
                vec![Term::atom("schema"), Term::atom(&n)],
                ctx.config.join_timeout,
            )
            .await
        {
            Ok(t)
                if t.as_tuple()
                    .is_some_and(|x| x.first().is_some_and(|a| atom_is(a, "atomic"))) =>
            {
                tracing::info!(node = %ctx.target, member = %n, after = ?now.duration_since(at), "mnesia: removed a member gone for good from the schema (left discovery, disconnected past mnesia.removal_grace)");
                ctx.update(|m| m.removed_nodes += 1);
                gone_since.remove(&n);
                held_back.remove(&n);
            }
            other => {
                tracing::warn!(node = %ctx.target, member = %n, answer = ?other.map(|t| t.to_string()), "mnesia: could not remove a gone member from the schema; retrying");
            }
        }
    }
}

/// A clean leave (a drain by `GET /drain`: the pod is going), called
/// before the node is disconnected from its peers, with the node's Mnesia
/// task stopped: when Mnesia runs on the node, stops it there
/// (`mnesia:stop()`) and has a running peer remove the node from the
/// schema (`rpc:call(Peer, mnesia, del_table_copy, [schema, Node])`,
/// through the node), trying the next running peer on failure. Each call
/// is bounded by `agent.rpc_timeout`, the removal by twice that in all. A
/// failure is logged and the leave goes on: the peers' removal after
/// `mnesia.removal_grace` remains. Returns whether the node left the schema.
pub async fn leave(beam: &BeamNode, rpc_timeout: Duration, status: &Mutex<Status>) -> bool {
    let target = status.lock().unwrap().node.clone();
    let local = beam.local();
    let call = |m: &'static str, f: &'static str, args: Vec<Term>| {
        rpc::call(local, &target, m, f, args, rpc_timeout)
    };
    let set_phase = |p: Phase| {
        if let Some(m) = status.lock().unwrap().mnesia.as_mut() {
            m.phase = p;
        }
    };
    let running = match call(
        "mnesia",
        "system_info",
        vec![Term::atom("running_db_nodes")],
    )
    .await
    {
        Ok(t) => atoms(&t),
        Err(e) => {
            tracing::warn!(node = %target, error = %e, "leave: cannot read Mnesia's running_db_nodes on the node; not leaving the schema (the peers remove the node after mnesia.removal_grace)");
            return false;
        }
    };
    if !running.contains(&target) {
        tracing::info!(node = %target, "leave: Mnesia does not run on the node; nothing to leave");
        return false;
    }
    let peers: Vec<String> = running.into_iter().filter(|n| *n != target).collect();
    match call("mnesia", "stop", vec![]).await {
        Ok(t) if atom_is(&t, "stopped") => {
            tracing::info!(node = %target, "leave: stopped Mnesia on the node (the pod is going away; its tables stay on the peers)");
        }
        other => {
            tracing::warn!(node = %target, answer = ?other.map(|t| t.to_string()), "leave: mnesia:stop() on the node failed; not leaving the schema (the peers remove the node after mnesia.removal_grace)");
            return false;
        }
    }
    set_phase(Phase::Left);
    if peers.is_empty() {
        tracing::info!(node = %target, "leave: no peer runs Mnesia; no schema to leave");
        return false;
    }
    // A peer refuses (`{aborted, {active, schema, Node}}`) until it has
    // seen Mnesia stop on the node: the peers are tried in turn until the
    // bound.
    let deadline = tokio::time::Instant::now() + rpc_timeout * 2;
    let inner = Term::Integer(rpc_timeout.as_millis() as i64);
    let mut last = String::new();
    'tries: loop {
        for peer in &peers {
            let r = rpc::call(
                local,
                &target,
                "rpc",
                "call",
                vec![
                    Term::atom(peer),
                    Term::atom("mnesia"),
                    Term::atom("del_table_copy"),
                    Term::list(vec![Term::atom("schema"), Term::atom(&target)]),
                    inner.clone(),
                ],
                rpc_timeout + Duration::from_secs(1),
            )
            .await;
            match r {
                Ok(t)
                    if t.as_tuple()
                        .is_some_and(|x| x.first().is_some_and(|a| atom_is(a, "atomic"))) =>
                {
                    tracing::info!(node = %target, by = %peer, "leave: removed the node from the Mnesia schema (a clean drain; the peers need not wait for mnesia.removal_grace)");
                    if let Some(m) = status.lock().unwrap().mnesia.as_mut() {
                        m.left_schema += 1;
                    }
                    return true;
                }
                Ok(t) => last = format!("{peer}: {t}"),
                Err(e) => last = format!("{peer}: {e}"),
            }
            if tokio::time::Instant::now() >= deadline {
                break 'tries;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    tracing::warn!(node = %target, last_answer = %last, bound = ?(rpc_timeout * 2), "leave: no peer removed the node from the Mnesia schema; leaving anyway (the peers remove it after mnesia.removal_grace)");
    false
}
