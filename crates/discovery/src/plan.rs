//! The formation decision, without IO and without a clock: the desired set,
//! the connected set and per-node backoff go in (with the time `now`),
//! actions and events come out. [`crate::engine`] drives it with tokio.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::quorum::{Quorum, QuorumState};
use crate::{Answer, NodeName};

/// Knobs of the formation decision (see `docs/configuration.md`, section
/// `[formation]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanConfig {
    /// First retry delay after a failed connect.
    pub backoff_base: Duration,
    /// Upper bound of the retry delay.
    pub backoff_max: Duration,
    /// How long a node must stay absent from complete answers before it is
    /// removed from the desired set.
    pub removal_grace: Duration,
    /// Disconnect a node when it is removed (else only stop reconnecting).
    pub disconnect_on_removal: bool,
}

impl Default for PlanConfig {
    fn default() -> PlanConfig {
        PlanConfig {
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            removal_grace: Duration::from_secs(5),
            disconnect_on_removal: true,
        }
    }
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Connect to the node; report with [`Plan::connect_result`].
    Connect(NodeName),
    /// Disconnect the node (it left, by positive evidence).
    Disconnect(NodeName),
}

/// What happened, for logs, metrics and subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A node entered the desired set.
    Discovered(NodeName),
    /// A connect succeeded.
    Connected(NodeName),
    /// A connect failed; the next attempt waits `retry_in`.
    ConnectFailed {
        /// The node.
        node: NodeName,
        /// Why (the actor's error text).
        reason: String,
        /// Consecutive failures so far.
        failures: u32,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// A desired node that was connected is no longer (it will be retried).
    Lost(NodeName),
    /// The source lists the node as terminating or not ready: it is no
    /// longer dialled, an existing connection is kept.
    Passive(NodeName),
    /// A complete answer no longer names the node; removal waits the grace.
    Absent(NodeName),
    /// An absent node's distribution port does not answer: it is removed
    /// without waiting out the grace.
    Silent {
        /// The node.
        node: NodeName,
        /// What the probe found ([`crate::liveness`]).
        reason: String,
    },
    /// The node left the desired set (positive evidence, grace elapsed).
    Removed(NodeName),
    /// A discovery round failed; the desired set is unchanged.
    DiscoveryError(crate::DiscoveryError),
}

#[derive(Clone, Debug, Default)]
struct Member {
    /// Set while the node is missing from complete answers.
    absent_since: Option<Instant>,
    /// Absent, and its distribution port does not answer: removed without
    /// the grace.
    silent: bool,
    failures: u32,
    /// Earliest time of the next connect attempt.
    not_before: Option<Instant>,
    in_flight: bool,
    /// Listed but not to be dialled (terminating, not ready): kept if
    /// connected, never dialled.
    passive: bool,
}

/// The formation state machine.
#[derive(Debug)]
pub struct Plan {
    config: PlanConfig,
    self_name: NodeName,
    desired: BTreeMap<NodeName, Member>,
    connected: BTreeSet<NodeName>,
    rng: fastrand::Rng,
    counters: Counters,
    /// Nodes connected by an attempt that finished after their removal.
    strays: Vec<NodeName>,
    /// Set by [`Plan::leave`]: nothing is dialled any more.
    leaving: bool,
    /// Whether any answer arrived.
    answered: bool,
    /// Nodes (self excluded) of the last complete answer.
    complete_size: Option<usize>,
}

/// Counters kept by the plan (the engine adds timing figures).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connect attempts started.
    pub connect_attempts: u64,
    /// Connect attempts that failed.
    pub connect_failures: u64,
    /// Discovery rounds that failed.
    pub discovery_errors: u64,
    /// Successful discovery answers.
    pub discovery_answers: u64,
    /// Nodes removed from the desired set.
    pub removed: u64,
}

impl Plan {
    /// A plan for the node `self_name` (never connected to itself); `seed`
    /// seeds the backoff jitter.
    pub fn new(config: PlanConfig, self_name: NodeName, seed: u64) -> Plan {
        Plan {
            config,
            self_name,
            desired: BTreeMap::new(),
            connected: BTreeSet::new(),
            rng: fastrand::Rng::with_seed(seed),
            counters: Counters::default(),
            strays: Vec::new(),
            leaving: false,
            answered: false,
            complete_size: None,
        }
    }

    /// The desired set (nodes the plan wants connected; passive ones not
    /// included).
    pub fn desired(&self) -> BTreeSet<NodeName> {
        self.desired
            .iter()
            .filter(|(_, m)| !m.passive)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Nodes listed but not dialled ([`Answer::passive`]): kept if
    /// connected.
    pub fn passive(&self) -> BTreeSet<NodeName> {
        self.desired
            .iter()
            .filter(|(_, m)| m.passive)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Stops dialling for good (the node is leaving the cluster): no
    /// connect is started any more, and one that finishes later is undone.
    pub fn leave(&mut self) {
        self.leaving = true;
    }

    /// True after [`Plan::leave`].
    pub fn leaving(&self) -> bool {
        self.leaving
    }

    /// Where the node stands against `quorum`: desired nodes connected,
    /// counting the node itself.
    pub fn quorum(&self, quorum: Quorum) -> QuorumState {
        QuorumState::new(
            quorum,
            self.answered,
            self.connected_desired(),
            self.desired.values().filter(|m| !m.passive).count(),
            self.complete_size,
        )
    }

    /// The connected set as last reported.
    pub fn connected(&self) -> &BTreeSet<NodeName> {
        &self.connected
    }

    /// Desired nodes that are connected (passive ones not counted).
    pub fn connected_desired(&self) -> usize {
        self.desired
            .iter()
            .filter(|(n, m)| !m.passive && self.connected.contains(*n))
            .count()
    }

    /// Counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// A successful answer: complete answers replace the desired set (after
    /// the removal grace), incomplete ones only add to it.
    pub fn answer(&mut self, answer: &Answer, now: Instant) -> Vec<Event> {
        self.counters.discovery_answers += 1;
        self.answered = true;
        let mut events = Vec::new();
        for node in &answer.nodes {
            if *node == self.self_name {
                continue;
            }
            match self.desired.get_mut(node) {
                Some(m) => {
                    m.absent_since = None;
                    m.silent = false;
                    if m.passive {
                        m.passive = false;
                        events.push(Event::Discovered(node.clone()));
                    }
                }
                None => {
                    self.desired.insert(node.clone(), Member::default());
                    events.push(Event::Discovered(node.clone()));
                }
            }
        }
        for node in &answer.passive {
            if *node == self.self_name || answer.nodes.contains(node) {
                continue;
            }
            let m = self.desired.entry(node.clone()).or_default();
            m.absent_since = None;
            m.silent = false;
            if !m.passive {
                m.passive = true;
                events.push(Event::Passive(node.clone()));
            }
        }
        if answer.complete {
            self.complete_size = Some(
                answer
                    .nodes
                    .iter()
                    .filter(|n| **n != self.self_name)
                    .count(),
            );
            for (node, m) in self.desired.iter_mut() {
                if !answer.nodes.contains(node)
                    && !answer.passive.contains(node)
                    && m.absent_since.is_none()
                {
                    m.absent_since = Some(now);
                    events.push(Event::Absent(node.clone()));
                }
            }
        }
        events
    }

    /// Nodes absent from complete answers, waiting out the grace.
    pub fn absent(&self) -> Vec<NodeName> {
        self.desired
            .iter()
            .filter(|(_, m)| m.absent_since.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// An absent node's distribution port does not answer: the next
    /// [`Plan::poll`] removes it without waiting out the grace. Nothing
    /// happens to a node listed again meanwhile (or not desired).
    pub fn silent(&mut self, node: &NodeName, reason: String) -> Vec<Event> {
        match self.desired.get_mut(node) {
            Some(m) if m.absent_since.is_some() && !m.silent => {
                m.silent = true;
                vec![Event::Silent {
                    node: node.clone(),
                    reason,
                }]
            }
            _ => Vec::new(),
        }
    }

    /// A failed discovery round: counted, nothing else changes.
    pub fn discovery_error(&mut self, error: crate::DiscoveryError) -> Vec<Event> {
        self.counters.discovery_errors += 1;
        vec![Event::DiscoveryError(error)]
    }

    /// The actor's current connected set.
    pub fn connected_set(&mut self, set: BTreeSet<NodeName>) -> Vec<Event> {
        let mut events = Vec::new();
        for node in self.connected.difference(&set) {
            if self.leaving {
                break;
            }
            if let Some(m) = self.desired.get_mut(node).filter(|m| !m.passive) {
                // Dropped by the peer or the network: retry right away, then
                // back off if that fails.
                m.failures = 0;
                m.not_before = None;
                events.push(Event::Lost(node.clone()));
            }
        }
        self.connected = set;
        events
    }

    /// The result of an [`Action::Connect`].
    pub fn connect_result(
        &mut self,
        node: &NodeName,
        result: Result<(), String>,
        now: Instant,
    ) -> Vec<Event> {
        if self.leaving {
            // Left while the attempt ran: undo a late success.
            if result.is_ok() {
                self.strays.push(node.clone());
            }
            if let Some(m) = self.desired.get_mut(node) {
                m.in_flight = false;
            }
            return Vec::new();
        }
        let Some(m) = self.desired.get_mut(node) else {
            // Removed while the attempt ran: a late success is undone by
            // the next `poll` (when removal disconnects).
            if result.is_ok() && self.config.disconnect_on_removal {
                self.strays.push(node.clone());
            }
            return Vec::new();
        };
        m.in_flight = false;
        match result {
            Ok(()) => {
                m.failures = 0;
                m.not_before = None;
                self.connected.insert(node.clone());
                vec![Event::Connected(node.clone())]
            }
            Err(reason) => {
                self.counters.connect_failures += 1;
                m.failures = m.failures.saturating_add(1);
                let delay = backoff_delay(&self.config, m.failures, &mut self.rng);
                m.not_before = Some(now + delay);
                vec![Event::ConnectFailed {
                    node: node.clone(),
                    reason,
                    failures: m.failures,
                    retry_in: delay,
                }]
            }
        }
    }

    /// Actions due at `now` (and the events of removals that happen now).
    pub fn poll(&mut self, now: Instant) -> (Vec<Action>, Vec<Event>) {
        let mut actions: Vec<Action> = self.strays.drain(..).map(Action::Disconnect).collect();
        let mut events = Vec::new();
        let grace = self.config.removal_grace;
        let gone: Vec<NodeName> = self
            .desired
            .iter()
            .filter(|(_, m)| m.absent_since.is_some_and(|t| m.silent || now >= t + grace))
            .map(|(n, _)| n.clone())
            .collect();
        for node in gone {
            self.desired.remove(&node);
            self.counters.removed += 1;
            events.push(Event::Removed(node.clone()));
            if self.config.disconnect_on_removal && self.connected.remove(&node) {
                actions.push(Action::Disconnect(node));
            }
        }
        for (node, m) in self.desired.iter_mut() {
            if self.leaving || m.passive || self.connected.contains(node) || m.in_flight {
                continue;
            }
            if m.not_before.is_some_and(|t| now < t) {
                continue;
            }
            m.in_flight = true;
            self.counters.connect_attempts += 1;
            actions.push(Action::Connect(node.clone()));
        }
        (actions, events)
    }

    /// Brings the next connect attempt to each of `nodes` (those desired
    /// and not connected) forward to `at` at the latest, whatever their
    /// backoff says; the failure count stays (a failure after `at` backs
    /// off as before). Used by partition detection so that a healed cut
    /// is crossed again at once. Returns how many nodes it moved.
    pub fn retry_by(&mut self, nodes: &BTreeSet<NodeName>, at: Instant) -> usize {
        let mut moved = 0;
        for node in nodes {
            if self.connected.contains(node) {
                continue;
            }
            if let Some(m) = self.desired.get_mut(node) {
                if m.not_before.is_some_and(|t| t > at) {
                    m.not_before = Some(at);
                    moved += 1;
                }
            }
        }
        moved
    }

    /// When [`Plan::poll`] next has something to do (a backoff expiring or a
    /// grace elapsing), if anything is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        let grace = self.config.removal_grace;
        self.desired
            .iter()
            .filter_map(|(node, m)| {
                let removal = m.absent_since.map(|t| if m.silent { t } else { t + grace });
                let retry =
                    if self.leaving || m.passive || self.connected.contains(node) || m.in_flight {
                        None
                    } else {
                        m.not_before
                    };
                match (removal, retry) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }
}

/// Exponential backoff with "equal jitter": the delay for the n-th
/// consecutive failure is `d = min(max, base * 2^(n-1))`, drawn uniformly
/// from `[d/2, d]`.
pub fn backoff_delay(config: &PlanConfig, failures: u32, rng: &mut fastrand::Rng) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let d = config
        .backoff_base
        .saturating_mul(1u32 << exp)
        .min(config.backoff_max);
    let half = d / 2;
    let span = (d - half).as_nanos().min(u64::MAX as u128) as u64;
    half + Duration::from_nanos(if span == 0 { 0 } else { rng.u64(0..=span) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeName {
        NodeName::new(s)
    }

    fn answer(nodes: &[&str], complete: bool) -> Answer {
        Answer::new(nodes.iter().map(|s| n(s)).collect(), complete)
    }

    fn plan(grace: Duration) -> Plan {
        Plan::new(
            PlanConfig {
                backoff_base: Duration::from_millis(100),
                backoff_max: Duration::from_secs(1),
                removal_grace: grace,
                disconnect_on_removal: true,
            },
            n("me@h"),
            7,
        )
    }

    #[test]
    fn connects_every_discovered_node_but_itself_at_once() {
        let now = Instant::now();
        let mut p = plan(Duration::ZERO);
        let ev = p.answer(&answer(&["a@h", "b@h", "me@h"], true), now);
        assert_eq!(
            ev,
            vec![Event::Discovered(n("a@h")), Event::Discovered(n("b@h"))]
        );
        let (acts, _) = p.poll(now);
        assert_eq!(
            acts,
            vec![Action::Connect(n("a@h")), Action::Connect(n("b@h"))]
        );
        // In flight: not asked again.
        assert!(p.poll(now).0.is_empty());
    }

    #[test]
    fn failed_connects_back_off_exponentially_with_jitter_up_to_the_max() {
        let t0 = Instant::now();
        let mut p = plan(Duration::ZERO);
        p.answer(&answer(&["a@h"], true), t0);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            assert_eq!(p.poll(now).0, vec![Action::Connect(n("a@h"))]);
            let ev = p.connect_result(&n("a@h"), Err("refused".into()), now);
            let Event::ConnectFailed { retry_in, .. } = ev[0].clone() else {
                panic!("{ev:?}")
            };
            delays.push(retry_in);
            // Not before the delay...
            assert!(p
                .poll(now + retry_in - Duration::from_millis(1))
                .0
                .is_empty());
            assert_eq!(p.next_deadline(), Some(now + retry_in));
            now += retry_in;
        }
        for (i, d) in delays.iter().enumerate() {
            let full = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(1));
            assert!(
                *d >= full / 2 && *d <= full,
                "attempt {i}: {d:?} vs {full:?}"
            );
        }
        // Success resets the backoff.
        p.poll(now);
        p.connect_result(&n("a@h"), Ok(()), now);
        p.connected_set(BTreeSet::new());
        assert_eq!(p.poll(now).0, vec![Action::Connect(n("a@h"))]);
    }

    #[test]
    fn errors_and_incomplete_answers_never_remove() {
        let now = Instant::now();
        let mut p = plan(Duration::ZERO);
        p.answer(&answer(&["a@h", "b@h"], true), now);
        p.discovery_error(crate::DiscoveryError::Unavailable {
            strategy: crate::strategy::StrategyKind::Epmd,
            reason: crate::Reason::Epmd {
                addr: "127.0.0.1:4369".parse().unwrap(),
                error: "timed out".into(),
            },
        });
        p.answer(&answer(&["c@h"], false), now);
        p.answer(&answer(&[], false), now);
        let (_, ev) = p.poll(now);
        assert!(ev.is_empty());
        assert_eq!(p.desired(), [n("a@h"), n("b@h"), n("c@h")].into());
        assert_eq!(p.counters().discovery_errors, 1);
    }

    #[test]
    fn complete_answer_removes_after_grace_and_disconnects() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(3);
        let mut p = plan(grace);
        p.answer(&answer(&["a@h", "b@h"], true), t0);
        for a in p.poll(t0).0 {
            let Action::Connect(node) = a else { panic!() };
            p.connect_result(&node, Ok(()), t0);
        }
        let ev = p.answer(&answer(&["a@h"], true), t0);
        assert_eq!(ev, vec![Event::Absent(n("b@h"))]);
        assert_eq!(p.next_deadline(), Some(t0 + grace));
        assert!(p.poll(t0 + grace - Duration::from_millis(1)).1.is_empty());
        let (acts, ev) = p.poll(t0 + grace);
        assert_eq!(acts, vec![Action::Disconnect(n("b@h"))]);
        assert_eq!(ev, vec![Event::Removed(n("b@h"))]);
        assert_eq!(p.desired(), [n("a@h")].into());
    }

    #[test]
    fn a_silent_absent_node_is_removed_at_once_and_a_listed_one_is_not() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(5);
        let mut p = plan(grace);
        p.answer(&answer(&["a@h", "b@h", "c@h"], true), t0);
        for a in p.poll(t0).0 {
            let Action::Connect(node) = a else { panic!() };
            p.connect_result(&node, Ok(()), t0);
        }
        // Listed nodes are never removed for a probe's verdict.
        assert!(p.silent(&n("a@h"), "refused".into()).is_empty());
        p.answer(&answer(&["a@h"], true), t0);
        assert_eq!(p.absent(), vec![n("b@h"), n("c@h")]);
        let ev = p.silent(&n("b@h"), "refused".into());
        assert_eq!(
            ev,
            vec![Event::Silent {
                node: n("b@h"),
                reason: "refused".into()
            }]
        );
        assert_eq!(p.next_deadline(), Some(t0));
        let (acts, ev) = p.poll(t0);
        assert_eq!(acts, vec![Action::Disconnect(n("b@h"))]);
        assert_eq!(ev, vec![Event::Removed(n("b@h"))]);
        // c (still answering) keeps the grace.
        assert!(p.poll(t0 + grace - Duration::from_millis(1)).1.is_empty());
        assert_eq!(p.poll(t0 + grace).1, vec![Event::Removed(n("c@h"))]);
        // A verdict that arrives after the node is listed again is void.
        p.answer(&answer(&["a@h", "d@h"], true), t0);
        p.answer(&answer(&["a@h"], true), t0);
        p.answer(&answer(&["a@h", "d@h"], true), t0);
        assert!(p.silent(&n("d@h"), "late".into()).is_empty());
        assert!(p.poll(t0 + grace * 2).1.is_empty());
    }

    #[test]
    fn reappearing_within_grace_cancels_removal() {
        let t0 = Instant::now();
        let mut p = plan(Duration::from_secs(3));
        p.answer(&answer(&["a@h"], true), t0);
        p.answer(&answer(&[], true), t0);
        p.answer(&answer(&["a@h"], true), t0 + Duration::from_secs(1));
        let (_, ev) = p.poll(t0 + Duration::from_secs(10));
        assert!(ev.is_empty());
        assert_eq!(p.desired(), [n("a@h")].into());
    }

    #[test]
    fn removal_without_disconnect_when_configured() {
        let t0 = Instant::now();
        let mut p = plan(Duration::ZERO);
        p.config.disconnect_on_removal = false;
        p.answer(&answer(&["a@h"], true), t0);
        p.poll(t0);
        p.connect_result(&n("a@h"), Ok(()), t0);
        p.answer(&answer(&[], true), t0);
        let (acts, ev) = p.poll(t0);
        assert!(acts.is_empty());
        assert_eq!(ev, vec![Event::Removed(n("a@h"))]);
    }

    #[test]
    fn a_lost_connection_is_retried_immediately() {
        let t0 = Instant::now();
        let mut p = plan(Duration::ZERO);
        p.answer(&answer(&["a@h"], true), t0);
        p.poll(t0);
        p.connect_result(&n("a@h"), Ok(()), t0);
        assert!(p.poll(t0).0.is_empty());
        let ev = p.connected_set(BTreeSet::new());
        assert_eq!(ev, vec![Event::Lost(n("a@h"))]);
        assert_eq!(p.poll(t0).0, vec![Action::Connect(n("a@h"))]);
    }

    #[test]
    fn a_connect_that_finishes_after_removal_is_undone() {
        let t0 = Instant::now();
        let mut p = plan(Duration::ZERO);
        p.answer(&answer(&["a@h"], true), t0);
        assert_eq!(p.poll(t0).0, vec![Action::Connect(n("a@h"))]);
        p.answer(&answer(&[], true), t0);
        assert_eq!(p.poll(t0).1, vec![Event::Removed(n("a@h"))]);
        p.connect_result(&n("a@h"), Ok(()), t0);
        assert_eq!(p.poll(t0).0, vec![Action::Disconnect(n("a@h"))]);
    }

    #[test]
    fn passive_nodes_are_not_dialled_and_not_cut() {
        let t0 = Instant::now();
        let mut p = plan(Duration::ZERO);
        p.answer(&answer(&["a@h", "b@h"], true), t0);
        for a in p.poll(t0).0 {
            let Action::Connect(node) = a else { panic!() };
            p.connect_result(&node, Ok(()), t0);
        }
        // b terminates (listed, not to be dialled); c starts, not ready.
        let mut a = answer(&["a@h"], true);
        a.passive = [n("b@h"), n("c@h")].into();
        let ev = p.answer(&a, t0);
        assert_eq!(ev, vec![Event::Passive(n("b@h")), Event::Passive(n("c@h"))]);
        // Nothing dialled, nothing cut, even long after the grace.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(p.poll(later), (vec![], vec![]));
        assert_eq!(p.desired(), [n("a@h")].into());
        assert_eq!(p.passive(), [n("b@h"), n("c@h")].into());
        // b's connection drops: not redialled either.
        assert!(p.connected_set([n("a@h")].into()).is_empty());
        assert!(p.poll(later).0.is_empty());
        assert_eq!(p.next_deadline(), None);
        // c becomes ready: dialled.
        let mut a = answer(&["a@h", "c@h"], true);
        a.passive = [n("b@h")].into();
        assert_eq!(p.answer(&a, later), vec![Event::Discovered(n("c@h"))]);
        assert_eq!(p.poll(later).0, vec![Action::Connect(n("c@h"))]);
        // b disappears from the source: removed after the grace.
        assert_eq!(
            p.answer(&answer(&["a@h", "c@h"], true), later),
            vec![Event::Absent(n("b@h"))]
        );
        assert_eq!(p.poll(later).1, vec![Event::Removed(n("b@h"))]);
    }

    #[test]
    fn leave_stops_dialling_and_undoes_late_connects() {
        let t0 = Instant::now();
        let mut p = plan(Duration::ZERO);
        p.answer(&answer(&["a@h", "b@h"], true), t0);
        assert_eq!(p.poll(t0).0.len(), 2);
        p.connect_result(&n("a@h"), Ok(()), t0);
        p.leave();
        p.connect_result(&n("b@h"), Ok(()), t0);
        assert_eq!(p.poll(t0).0, vec![Action::Disconnect(n("b@h"))]);
        p.connected_set(BTreeSet::new());
        p.answer(&answer(&["a@h", "b@h", "c@h"], true), t0);
        assert!(p.poll(t0 + Duration::from_secs(60)).0.is_empty());
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn quorum_counts_connected_desired_members() {
        let t0 = Instant::now();
        let mut p = plan(Duration::ZERO);
        assert!(!p.quorum(Quorum::Members(1)).met(), "no answer yet");
        p.answer(&answer(&["a@h", "b@h", "c@h", "d@h", "me@h"], true), t0);
        p.poll(t0);
        p.connect_result(&n("a@h"), Ok(()), t0);
        let q = p.quorum(Quorum::Members(3));
        assert_eq!((q.members, q.discovered, q.needed), (2, 5, Some(3)));
        assert!(!q.met());
        p.connect_result(&n("b@h"), Ok(()), t0);
        assert!(p.quorum(Quorum::Members(3)).met());
        assert!(p.quorum(Quorum::Majority).met());
        assert!(!p.quorum(Quorum::All).met());
    }

    #[test]
    fn backoff_delay_saturates() {
        let c = PlanConfig {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            ..PlanConfig::default()
        };
        let mut rng = fastrand::Rng::with_seed(1);
        for f in [0, 1, 40, u32::MAX] {
            let d = backoff_delay(&c, f, &mut rng);
            assert!(d <= Duration::from_secs(30), "{f}: {d:?}");
        }
    }

    #[test]
    fn retry_by_brings_a_backed_off_attempt_forward_and_only_that() {
        let mut p = plan(Duration::ZERO);
        let t0 = Instant::now();
        p.answer(&answer(&["a@h", "b@h"], true), t0);
        let (actions, _) = p.poll(t0);
        assert_eq!(actions.len(), 2);
        p.connect_result(&n("a@h"), Err("pang".into()), t0);
        p.connect_result(&n("b@h"), Ok(()), t0);
        for _ in 0..5 {
            let next = p.next_deadline().expect("a retry is pending");
            assert_eq!(p.poll(next).0, vec![Action::Connect(n("a@h"))]);
            p.connect_result(&n("a@h"), Err("pang".into()), next);
        }
        let late = p.next_deadline().unwrap();
        let now = late - Duration::from_millis(400);
        assert!(p.poll(now).0.is_empty(), "backed off");
        let wanted = [n("a@h"), n("b@h"), n("gone@h")].into_iter().collect();
        assert_eq!(
            p.retry_by(&wanted, now),
            1,
            "b is connected, gone is not desired"
        );
        assert_eq!(p.next_deadline(), Some(now));
        assert_eq!(p.poll(now).0, vec![Action::Connect(n("a@h"))]);
        // A later deadline never postpones an earlier one.
        p.connect_result(&n("a@h"), Err("pang".into()), now);
        let due = p.next_deadline().unwrap();
        assert_eq!(p.retry_by(&wanted, due + Duration::from_secs(1)), 0);
        assert_eq!(p.next_deadline(), Some(due));
    }
}
