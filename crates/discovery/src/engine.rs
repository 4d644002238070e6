//! The formation engine: drives a [`Plan`] with tokio, a strategy's
//! [`Update`]s and an [`Actor`].
//!
//! Data flow:
//!
//! ```text
//! strategy task --Update--> Engine --Action--> Actor (connect / disconnect)
//!                              ^                 |
//!                              +--results, connected()--+
//!                              |
//!                              +--Event--> broadcast subscribers; Metrics snapshot
//! ```

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::liveness::{Done, Liveness, RemovalProbe, Verdict};
use crate::partition::PartitionStatus;
use crate::plan::{Action, Event, Plan, PlanConfig};
use crate::probe::{Probe, Step};
use crate::quorum::{Quorum, QuorumState};
use crate::{Actor, ConnectError, NodeName, Update};

/// Engine settings: the plan's knobs plus the driver's timers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Backoff, grace and removal behaviour.
    pub plan: PlanConfig,
    /// How often the actor's connected set is re-read (to notice dropped
    /// connections and reconnect).
    pub check_interval: Duration,
    /// Upper bound of one connect attempt.
    pub connect_timeout: Duration,
    /// Seed of the backoff jitter (`None`: random).
    pub seed: Option<u64>,
    /// How often connected peers are asked for their `nodes()` to detect
    /// partitions ([`crate::partition`]); `None`: never.
    pub partition_check: Option<Duration>,
    /// Probe the distribution port of a node absent from discovery, and
    /// remove it at once when nothing answers ([`crate::liveness`]);
    /// `None`: every absent node waits out the grace.
    pub removal_probe: Option<RemovalProbe>,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            plan: PlanConfig::default(),
            check_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            seed: None,
            partition_check: Some(Duration::from_secs(2)),
            removal_probe: Some(RemovalProbe::default()),
        }
    }
}

/// A snapshot of the engine's counters and gauges (for `/metrics`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Gauge: nodes in the desired set.
    pub discovered: u64,
    /// Gauge: desired nodes that are connected.
    pub connected: u64,
    /// Counter: connect attempts started.
    pub connect_attempts: u64,
    /// Counter: connect attempts that failed.
    pub connect_failures: u64,
    /// Counter: successful discovery answers.
    pub discovery_answers: u64,
    /// Counter: failed discovery rounds.
    pub discovery_errors: u64,
    /// Counter: nodes removed on evidence.
    pub removed: u64,
    /// Latency of the last successful discovery round, when measured.
    pub last_discovery_latency: Option<Duration>,
}

/// The engine before it runs.
pub struct Engine<A: Actor> {
    actor: Arc<A>,
    config: EngineConfig,
    quorum: Quorum,
    events: broadcast::Sender<Event>,
    metrics: Arc<Mutex<Metrics>>,
    partition: Arc<Mutex<PartitionStatus>>,
}

/// What a [`Formation`] asks its running engine.
#[derive(Debug)]
enum Command {
    /// Stop dialling for good, disconnect every peer, answer how many.
    Leave(oneshot::Sender<usize>),
}

/// A running engine. Dropping it stops the engine (in-flight attempts are
/// abandoned).
#[derive(Debug)]
pub struct Formation {
    events: broadcast::Sender<Event>,
    metrics: Arc<Mutex<Metrics>>,
    desired: watch::Receiver<BTreeSet<NodeName>>,
    quorum: watch::Receiver<QuorumState>,
    commands: mpsc::Sender<Command>,
    partition: Arc<Mutex<PartitionStatus>>,
    task: tokio::task::JoinHandle<()>,
}

impl Formation {
    /// Subscribes to events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The current metrics.
    pub fn metrics(&self) -> Metrics {
        self.metrics.lock().unwrap().clone()
    }

    /// The current desired set.
    pub fn desired(&self) -> BTreeSet<NodeName> {
        self.desired.borrow().clone()
    }

    /// Where the node stands against its quorum (`formation.quorum`), as a
    /// watch: `borrow()` for now, `changed()` to wait. Ready-gating code
    /// waits for [`QuorumState::met`].
    pub fn quorum(&self) -> watch::Receiver<QuorumState> {
        self.quorum.clone()
    }

    /// Leaves the cluster cleanly: the engine stops dialling for good
    /// (also nodes that connect later, by a late attempt, are disconnected)
    /// and disconnects every connected peer, so that they see a nodedown
    /// at once rather than after `net_ticktime`. Returns the number of
    /// peers disconnected (0 when the engine is gone). Peers that still
    /// list this node may dial it again: shut the node down (or fence it)
    /// next.
    pub async fn leave(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).await.is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// The partition view of the last check (components, suspicion,
    /// partitions seen); empty while `partition_check` is off.
    pub fn partition(&self) -> PartitionStatus {
        self.partition.lock().unwrap().clone()
    }

    /// Stops the engine.
    pub fn stop(self) {}
}

impl Drop for Formation {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<A: Actor> Engine<A> {
    /// An engine acting through `actor`.
    ///
    /// Formation with settings from the `ERLKUBE_*` environment
    /// (docs/configuration.md), acting through any [`Actor`] (the agent
    /// crate's `RustNode` for a local Rust node, its `BeamNode` for a BEAM
    /// node driven over RPC):
    ///
    /// ```no_run
    /// use erlkube_discovery::{config::resolve, Actor, Engine};
    ///
    /// # async fn demo(actor: impl Actor) -> Result<(), Box<dyn std::error::Error>> {
    /// let formation = resolve(None, std::env::vars(), "127.0.0.1")?;
    /// let (updates, rx) = tokio::sync::mpsc::channel(16);
    /// let _strategy = formation.spawn_strategy(updates)?;
    /// let _running = Engine::new(actor, formation.engine.clone()).spawn(rx);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(actor: A, config: EngineConfig) -> Engine<A> {
        let (events, _) = broadcast::channel(1024);
        Engine {
            actor: Arc::new(actor),
            config,
            quorum: Quorum::All,
            events,
            metrics: Arc::default(),
            partition: Arc::default(),
        }
    }

    /// Sets the quorum rule of [`Formation::quorum`] (default
    /// [`Quorum::All`]).
    pub fn with_quorum(mut self, quorum: Quorum) -> Engine<A> {
        self.quorum = quorum;
        self
    }

    /// Subscribes to events before the engine starts (so none are missed).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Starts the engine on the current runtime, fed by `updates`.
    pub fn spawn(self, updates: mpsc::Receiver<Update>) -> Formation {
        let (desired_tx, desired) = watch::channel(BTreeSet::new());
        let (quorum_tx, quorum) = watch::channel(QuorumState::new(self.quorum, false, 0, 0, None));
        let (commands, commands_rx) = mpsc::channel(4);
        let events = self.events.clone();
        let metrics = self.metrics.clone();
        let partition = self.partition.clone();
        let task = tokio::spawn(self.run(updates, desired_tx, quorum_tx, commands_rx));
        Formation {
            events,
            metrics,
            desired,
            quorum,
            commands,
            partition,
            task,
        }
    }

    async fn run(
        self,
        mut updates: mpsc::Receiver<Update>,
        desired: watch::Sender<BTreeSet<NodeName>>,
        quorum: watch::Sender<QuorumState>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let seed = self.config.seed.unwrap_or_else(|| fastrand::u64(..));
        let mut plan = Plan::new(self.config.plan.clone(), self.actor.self_name(), seed);
        let mut attempts: JoinSet<(NodeName, Result<(), ConnectError>)> = JoinSet::new();
        let mut check = tokio::time::interval(self.config.check_interval);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut updates_open = true;
        let mut latency = None;
        let own = self.actor.self_name();
        // The last warning about names this node cannot reach, so a
        // steady state logs it once.
        let mut form_warning: Option<String> = None;
        let mut probe = Probe::new(self.config.partition_check);
        // A probe of an absent node ends well within one check interval,
        // so a silent node is gone within one check of its absence.
        let mut liveness = Liveness::new(
            self.config.removal_probe,
            (self.config.check_interval / 2).min(self.config.connect_timeout),
        );
        loop {
            let deadline = plan.next_deadline();
            let mut events = Vec::new();
            tokio::select! {
                u = updates.recv(), if updates_open => match u {
                    Some(Update::Answer(a)) => {
                        if a.elapsed.is_some() {
                            latency = a.elapsed;
                        }
                        let w = crate::form::check_answer(&own, &a.nodes);
                        if let Some(text) = w.as_ref().filter(|w| form_warning.as_ref() != Some(*w)) {
                            tracing::warn!("{text}");
                        }
                        form_warning = w;
                        let found = plan.answer(&a, Instant::now());
                        liveness.probe(found.iter().filter_map(|e| match e {
                            Event::Absent(n) => Some(n.clone()),
                            _ => None,
                        }));
                        events.extend(found);
                    }
                    Some(Update::Error(e)) => {
                        tracing::warn!(error = %e, "discovery failed; keeping the last good set");
                        events.extend(plan.discovery_error(e));
                    }
                    None => updates_open = false,
                },
                Some(r) = attempts.join_next(), if !attempts.is_empty() => {
                    if let Ok((node, result)) = r {
                        let result = result.map_err(|e| e.to_string());
                        events.extend(plan.connect_result(&node, result, Instant::now()));
                    }
                }
                _ = check.tick() => {
                    match self.actor.connected().await {
                        Ok(set) => events.extend(plan.connected_set(set)),
                        Err(e) => tracing::warn!(error = %e, "cannot read the connected set"),
                    }
                    let desired = plan.desired();
                    liveness.learn(plan.connected().intersection(&desired));
                    liveness.probe(plan.absent());
                }
                done = liveness.next() => match done {
                    Done::Located(..) => {}
                    Done::Probed(node, Verdict::Silent(reason)) => {
                        events.extend(plan.silent(&node, reason));
                    }
                    Done::Probed(node, v) => {
                        tracing::debug!(node = %node, verdict = ?v, "absent node probed; it keeps the grace");
                    }
                },
                Some(Command::Leave(reply)) = commands.recv() => {
                    plan.leave();
                    let peers = match self.actor.connected().await {
                        Ok(set) => set,
                        Err(e) => {
                            tracing::warn!(error = %e, "leave: cannot read the connected set");
                            plan.connected().clone()
                        }
                    };
                    let gone = disconnect_all(&self.actor, &peers).await;
                    tracing::info!(peers = gone, "left the cluster: disconnected every peer, dialling stopped");
                    let _ = reply.send(gone);
                }
                step = probe.next() => match step {
                    Step::Tick => probe.start(&self.actor, self.config.connect_timeout),
                    Step::Done(c) => probe.apply(c, &mut plan, &self.partition, Instant::now()),
                },
                _ = sleep_until(deadline) => {}
            }
            let (actions, removals) = plan.poll(Instant::now());
            events.extend(removals);
            for e in &events {
                if let Event::Lost(n) | Event::Removed(n) = e {
                    liveness.forget(n);
                }
            }
            for action in actions {
                match action {
                    Action::Connect(node) => {
                        let actor = self.actor.clone();
                        let timeout = self.config.connect_timeout;
                        attempts.spawn(async move {
                            let r = match tokio::time::timeout(timeout, actor.connect(&node)).await
                            {
                                Ok(r) => r,
                                Err(_) => Err(ConnectError::Timeout(node.clone())),
                            };
                            (node, r)
                        });
                    }
                    Action::Disconnect(node) => {
                        let actor = self.actor.clone();
                        tokio::spawn(async move { actor.disconnect(&node).await });
                    }
                }
            }
            for e in events {
                log_event(&e);
                let _ = self.events.send(e);
            }
            desired.send_if_modified(|d| {
                let now = plan.desired();
                let changed = *d != now;
                *d = now;
                changed
            });
            quorum.send_if_modified(|q| {
                let now = plan.quorum(self.quorum);
                let changed = *q != now;
                if changed && now.met() != q.met() {
                    tracing::info!(quorum = %now, met = now.met(), "quorum");
                }
                *q = now;
                changed
            });
            let c = plan.counters();
            let snapshot = Metrics {
                discovered: plan.desired().len() as u64,
                connected: plan.connected_desired() as u64,
                connect_attempts: c.connect_attempts,
                connect_failures: c.connect_failures,
                discovery_answers: c.discovery_answers,
                discovery_errors: c.discovery_errors,
                removed: c.removed,
                last_discovery_latency: latency,
            };
            *self.metrics.lock().unwrap() = snapshot;
        }
    }
}

/// Disconnects every node of `peers` at once; returns how many.
async fn disconnect_all<A: Actor>(actor: &Arc<A>, peers: &BTreeSet<NodeName>) -> usize {
    let mut set = JoinSet::new();
    for p in peers {
        let (actor, p) = (actor.clone(), p.clone());
        set.spawn(async move { actor.disconnect(&p).await });
    }
    while set.join_next().await.is_some() {}
    peers.len()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn log_event(e: &Event) {
    match e {
        Event::Discovered(n) => tracing::info!(node = %n, "discovered"),
        Event::Connected(n) => tracing::info!(node = %n, "connected"),
        Event::ConnectFailed {
            node,
            reason,
            failures,
            retry_in,
        } => {
            tracing::debug!(node = %node, %reason, failures, ?retry_in, "connect failed")
        }
        Event::Lost(n) => tracing::info!(node = %n, "connection lost; reconnecting"),
        Event::Passive(n) => {
            tracing::info!(node = %n, "listed as terminating or not ready: not dialled, connection kept")
        }
        Event::Absent(n) => tracing::info!(node = %n, "absent from a complete answer"),
        Event::Silent { node, reason } => {
            tracing::info!(node = %node, %reason, "absent, and its distribution port does not answer: removed without waiting for the grace")
        }
        Event::Removed(n) => tracing::info!(node = %n, "removed"),
        Event::DiscoveryError(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::{Answer, DiscoveryError, Quorum};

    /// An in-memory node: connects succeed to reachable nodes.
    #[derive(Clone, Default)]
    struct MemActor {
        state: Arc<Mutex<MemState>>,
    }

    #[derive(Default)]
    struct MemState {
        reachable: BTreeSet<NodeName>,
        connected: BTreeSet<NodeName>,
        attempts: Vec<NodeName>,
        disconnects: Vec<NodeName>,
    }

    impl Actor for MemActor {
        fn self_name(&self) -> NodeName {
            NodeName::new("me@h")
        }
        async fn connect(&self, node: &NodeName) -> Result<(), ConnectError> {
            let mut s = self.state.lock().unwrap();
            s.attempts.push(node.clone());
            if s.reachable.contains(node) {
                s.connected.insert(node.clone());
                Ok(())
            } else {
                Err(ConnectError::Unreachable {
                    node: node.clone(),
                    reason: "pang".into(),
                })
            }
        }
        async fn disconnect(&self, node: &NodeName) {
            let mut s = self.state.lock().unwrap();
            s.connected.remove(node);
            s.disconnects.push(node.clone());
        }
        async fn connected(&self) -> Result<BTreeSet<NodeName>, ConnectError> {
            Ok(self.state.lock().unwrap().connected.clone())
        }
    }

    fn set(names: &[&str]) -> BTreeSet<NodeName> {
        names.iter().map(|n| NodeName::new(*n)).collect()
    }

    fn config(grace: Duration) -> EngineConfig {
        EngineConfig {
            plan: PlanConfig {
                backoff_base: Duration::from_millis(100),
                backoff_max: Duration::from_secs(2),
                removal_grace: grace,
                disconnect_on_removal: true,
            },
            check_interval: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(1),
            seed: Some(3),
            partition_check: None,
            removal_probe: None,
        }
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn connects_discovered_nodes_and_keeps_them_through_errors() {
        let actor = MemActor::default();
        actor.state.lock().unwrap().reachable = set(&["a@h", "b@h"]);
        let engine = Engine::new(actor.clone(), config(Duration::ZERO));
        let mut events = engine.subscribe();
        let (tx, rx) = mpsc::channel(8);
        let f = engine.spawn(rx);
        tx.send(Update::Answer(Answer::new(
            set(&["a@h", "b@h", "me@h"]),
            true,
        )))
        .await
        .unwrap();
        settle().await;
        assert_eq!(actor.state.lock().unwrap().connected, set(&["a@h", "b@h"]));
        tx.send(Update::Error(DiscoveryError::Unavailable {
            strategy: crate::strategy::StrategyKind::Kubernetes,
            reason: crate::Reason::KubeApi {
                op: crate::reason::KubeOp::List,
                failure: crate::reason::KubeFailure::NoAnswer(Duration::from_secs(3)),
            },
        }))
        .await
        .unwrap();
        tx.send(Update::Answer(Answer::new(set(&[]), false)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(actor.state.lock().unwrap().connected, set(&["a@h", "b@h"]));
        assert!(actor.state.lock().unwrap().disconnects.is_empty());
        let m = f.metrics();
        assert_eq!((m.discovered, m.connected, m.discovery_errors), (2, 2, 1));
        assert_eq!((m.connect_attempts, m.connect_failures), (2, 0));
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(e);
        }
        assert!(
            seen.contains(&Event::Connected(NodeName::new("a@h"))),
            "{seen:?}"
        );
        let errors: Vec<String> = seen
            .iter()
            .filter_map(|e| match e {
                Event::DiscoveryError(e) => Some(e.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            errors,
            ["kubernetes: source unavailable: list: no answer within 3s"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unreachable_node_is_retried_with_backoff_until_it_comes_up() {
        let actor = MemActor::default();
        let engine = Engine::new(actor.clone(), config(Duration::ZERO));
        let (tx, rx) = mpsc::channel(8);
        let f = engine.spawn(rx);
        tx.send(Update::Answer(Answer::new(set(&["a@h"]), true)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let n = actor.state.lock().unwrap().attempts.len();
        // 100ms doubling to a 2 s cap, jittered to [d/2, d]: 10 s fits at
        // least 5 and at most 14 attempts; far fewer than one per check.
        assert!((5..=14).contains(&n), "{n} attempts");
        actor.state.lock().unwrap().reachable = set(&["a@h"]);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(actor.state.lock().unwrap().connected, set(&["a@h"]));
        assert_eq!(f.metrics().connect_failures as usize, n);
    }

    #[tokio::test(start_paused = true)]
    async fn removal_waits_for_grace_then_disconnects_and_stops_retrying() {
        let actor = MemActor::default();
        actor.state.lock().unwrap().reachable = set(&["a@h", "b@h"]);
        let engine = Engine::new(actor.clone(), config(Duration::from_secs(2)));
        let (tx, rx) = mpsc::channel(8);
        let f = engine.spawn(rx);
        tx.send(Update::Answer(Answer::new(set(&["a@h", "b@h"]), true)))
            .await
            .unwrap();
        settle().await;
        tx.send(Update::Answer(Answer::new(set(&["a@h"]), true)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1900)).await;
        assert!(actor.state.lock().unwrap().disconnects.is_empty());
        tokio::time::sleep(Duration::from_millis(200)).await;
        settle().await;
        assert_eq!(
            actor.state.lock().unwrap().disconnects,
            vec![NodeName::new("b@h")]
        );
        assert_eq!(f.desired(), set(&["a@h"]));
        let attempts = actor.state.lock().unwrap().attempts.len();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(actor.state.lock().unwrap().attempts.len(), attempts);
        assert_eq!(f.metrics().removed, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn quorum_is_watched_and_leave_disconnects_everyone_for_good() {
        let actor = MemActor::default();
        actor.state.lock().unwrap().reachable = set(&["a@h", "b@h"]);
        let engine =
            Engine::new(actor.clone(), config(Duration::ZERO)).with_quorum(Quorum::Members(3));
        let (tx, rx) = mpsc::channel(8);
        let f = engine.spawn(rx);
        let mut q = f.quorum();
        assert!(!q.borrow().met());
        tx.send(Update::Answer(Answer::new(
            set(&["a@h", "b@h", "c@h"]),
            true,
        )))
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), q.wait_for(|s| s.met()))
            .await
            .expect("quorum met")
            .unwrap();
        let s = *f.quorum().borrow();
        assert_eq!((s.members, s.discovered, s.needed), (3, 4, Some(3)));
        // Someone else connected to us too (not discovered).
        actor
            .state
            .lock()
            .unwrap()
            .connected
            .insert(NodeName::new("x@h"));
        assert_eq!(f.leave().await, 3);
        assert!(actor.state.lock().unwrap().connected.is_empty());
        let attempts = actor.state.lock().unwrap().attempts.len();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            actor.state.lock().unwrap().attempts.len(),
            attempts,
            "no redial"
        );
        assert!(!f.quorum().borrow().met());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_connection_is_noticed_and_restored() {
        let actor = MemActor::default();
        actor.state.lock().unwrap().reachable = set(&["a@h"]);
        let engine = Engine::new(actor.clone(), config(Duration::ZERO));
        let (tx, rx) = mpsc::channel(8);
        let _f = engine.spawn(rx);
        tx.send(Update::Answer(Answer::new(set(&["a@h"]), true)))
            .await
            .unwrap();
        settle().await;
        actor.state.lock().unwrap().connected.clear();
        tokio::time::sleep(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(actor.state.lock().unwrap().connected, set(&["a@h"]));
        assert_eq!(actor.state.lock().unwrap().attempts.len(), 2);
    }
}
