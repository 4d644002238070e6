//! The engine's partition probe: every `partition_check` it reads the
//! actor's connected set, asks those peers for their `nodes()`
//! ([`Actor::peer_views`]) in a task of its own (the engine keeps running
//! meanwhile), feeds the answers to [`partition::view`] and the
//! [`PartitionTracker`], and shortens the reconnect backoff toward
//! discovered nodes it is cut from. It never disconnects anyone.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::partition::{self, PartitionStatus, PartitionTracker, PeerViews, Transition};
use crate::plan::Plan;
use crate::{Actor, NodeName};

/// One finished probe.
pub(crate) struct Checked {
    me: NodeName,
    connected: BTreeSet<NodeName>,
    views: PeerViews,
}

/// What [`Probe::next`] has for the engine.
pub(crate) enum Step {
    /// Time to start a probe.
    Tick,
    /// A probe finished.
    Done(Checked),
}

/// The probe's state inside the engine's loop.
pub(crate) struct Probe {
    every: Duration,
    interval: Option<Interval>,
    running: Option<JoinHandle<Option<Checked>>>,
    tracker: PartitionTracker,
}

impl Probe {
    /// A probe every `every`; `None`: never.
    pub(crate) fn new(every: Option<Duration>) -> Probe {
        let interval = every.map(|d| {
            let mut i = tokio::time::interval(d);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        });
        Probe {
            every: every.unwrap_or(Duration::MAX),
            interval,
            running: None,
            tracker: PartitionTracker::default(),
        }
    }

    /// The next thing to do (cancel-safe: a running probe's handle and the
    /// interval are kept across cancellations). Pending forever when off.
    pub(crate) async fn next(&mut self) -> Step {
        loop {
            if let Some(h) = &mut self.running {
                let r = h.await;
                self.running = None;
                match r {
                    Ok(Some(c)) => return Step::Done(c),
                    // A failed read of the connected set (logged by the
                    // task) or a task that died: wait for the next tick.
                    _ => continue,
                }
            }
            match &mut self.interval {
                Some(i) => {
                    i.tick().await;
                    return Step::Tick;
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Starts a probe through `actor` (each peer's answer bounded by the
    /// check interval and `connect_timeout`, whichever is shorter).
    pub(crate) fn start<A: Actor>(&mut self, actor: &Arc<A>, connect_timeout: Duration) {
        if self.running.is_some() {
            return;
        }
        let actor = actor.clone();
        let timeout = self.every.min(connect_timeout);
        self.running = Some(tokio::spawn(async move {
            let connected = match actor.connected().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "partition check: cannot read the connected set");
                    return None;
                }
            };
            let views = match tokio::time::timeout(
                timeout + Duration::from_millis(100),
                actor.peer_views(&connected, timeout),
            )
            .await
            {
                Ok(v) => v,
                Err(_) => connected
                    .iter()
                    .map(|p| (p.clone(), Err("no answer in time".to_owned())))
                    .collect(),
            };
            Some(Checked {
                me: actor.self_name(),
                connected,
                views,
            })
        }));
    }

    /// Takes a finished probe: computes the view, publishes it to `shared`,
    /// logs a split or a heal, and brings reconnects forward:
    ///
    /// - toward a discovered node some peer is connected to but this node
    ///   is not: at once (it is alive and reachable from the cluster);
    /// - toward every discovered node not connected, at once, when the
    ///   view just got better (fewer components or fewer unreached nodes:
    ///   the cut is healing);
    /// - while a partition is suspected, within half a check interval, so
    ///   the engine's backoff (up to `formation.backoff_max`) never keeps a
    ///   healed cut open for long.
    pub(crate) fn apply(
        &mut self,
        c: Checked,
        plan: &mut Plan,
        shared: &Mutex<PartitionStatus>,
        now: Instant,
    ) {
        let desired = plan.desired();
        let view = partition::view(&c.me, &c.connected, &c.views, &desired);
        let before = self.tracker.status();
        let better = before.checks > 0
            && (view.component_count() < before.components
                || view.unreached.len() < before.view.unreached.len());
        let via_peers: BTreeSet<NodeName> = view
            .not_connected
            .difference(&view.unreached)
            .cloned()
            .collect();
        if better {
            plan.retry_by(&view.not_connected, now);
        } else {
            plan.retry_by(&via_peers, now);
            if view.suspected() {
                plan.retry_by(&view.not_connected, now + self.every / 2);
            }
        }
        for (peer, reason) in &view.unprobed {
            tracing::debug!(peer = %peer, %reason, "partition check: peer not probed");
        }
        let components = view.component_count();
        let unreached: Vec<String> = view.unreached.iter().map(|n| n.to_string()).collect();
        match self.tracker.observe(view) {
            Some(Transition::Split { components }) => {
                tracing::warn!(
                    components,
                    ?unreached,
                    "partition suspected: the cluster split"
                )
            }
            Some(Transition::Healed) => tracing::info!("partition healed: one component"),
            _ => {}
        }
        tracing::trace!(components, "partition check");
        *shared.lock().unwrap() = self.tracker.status();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::sync::mpsc;

    use crate::partition::PeerViews;
    use crate::plan::PlanConfig;
    use crate::{Actor, Answer, ConnectError, Engine, EngineConfig, NodeName, Update};

    /// In-memory peers that all see each other while not cut.
    #[derive(Clone, Default)]
    struct Mesh {
        state: Arc<Mutex<State>>,
    }

    #[derive(Default)]
    struct State {
        cut: bool,
        connected: BTreeSet<NodeName>,
        attempts: u64,
        disconnects: u64,
    }

    fn me() -> NodeName {
        NodeName::new("me@h")
    }

    impl Actor for Mesh {
        fn self_name(&self) -> NodeName {
            me()
        }
        async fn connect(&self, node: &NodeName) -> Result<(), ConnectError> {
            let mut s = self.state.lock().unwrap();
            s.attempts += 1;
            if s.cut {
                return Err(ConnectError::Unreachable {
                    node: node.clone(),
                    reason: "cut".into(),
                });
            }
            s.connected.insert(node.clone());
            Ok(())
        }
        async fn disconnect(&self, node: &NodeName) {
            let mut s = self.state.lock().unwrap();
            s.disconnects += 1;
            s.connected.remove(node);
        }
        async fn connected(&self) -> Result<BTreeSet<NodeName>, ConnectError> {
            Ok(self.state.lock().unwrap().connected.clone())
        }
        async fn peer_views(&self, peers: &BTreeSet<NodeName>, _: Duration) -> PeerViews {
            let s = self.state.lock().unwrap();
            peers
                .iter()
                .map(|p| {
                    let mut v: BTreeSet<NodeName> =
                        s.connected.iter().filter(|n| *n != p).cloned().collect();
                    v.insert(me());
                    (p.clone(), Ok(v))
                })
                .collect()
        }
    }

    fn set(names: &[&str]) -> BTreeSet<NodeName> {
        names.iter().map(|n| NodeName::new(*n)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_is_seen_and_a_heal_reconnects_within_two_checks_despite_a_long_backoff() {
        let mesh = Mesh::default();
        let check = Duration::from_secs(2);
        let engine = Engine::new(
            mesh.clone(),
            EngineConfig {
                plan: PlanConfig {
                    backoff_base: Duration::from_millis(200),
                    backoff_max: Duration::from_secs(30),
                    removal_grace: Duration::from_secs(5),
                    disconnect_on_removal: true,
                },
                check_interval: Duration::from_millis(500),
                connect_timeout: Duration::from_secs(1),
                seed: Some(1),
                partition_check: Some(check),
                removal_probe: None,
            },
        );
        let (tx, rx) = mpsc::channel(8);
        let f = engine.spawn(rx);
        tx.send(Update::Answer(Answer::new(
            set(&["a@h", "b@h", "me@h"]),
            true,
        )))
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let p = f.partition();
        assert_eq!((p.components, p.suspected, p.partitions), (1, false, 0));
        assert_eq!(p.view.components, vec![set(&["a@h", "b@h", "me@h"])]);

        // The cut: connections drop, every reconnect fails for 60 s, long
        // enough for the backoff to reach 30 s.
        {
            let mut s = mesh.state.lock().unwrap();
            s.cut = true;
            s.connected.clear();
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        let p = f.partition();
        assert_eq!((p.components, p.suspected, p.partitions), (2, true, 1));
        assert_eq!(p.view.unreached, set(&["a@h", "b@h"]));
        assert_eq!(mesh.state.lock().unwrap().disconnects, 0, "advice only");

        // The heal: every node is back within two checks.
        mesh.state.lock().unwrap().cut = false;
        tokio::time::sleep(check * 2).await;
        assert_eq!(mesh.state.lock().unwrap().connected, set(&["a@h", "b@h"]));
        tokio::time::sleep(check).await;
        let p = f.partition();
        assert_eq!((p.components, p.suspected, p.partitions), (1, false, 1));
        // Attempts during the cut stayed bounded: about one per node per
        // half check (plus the backoff's own early ones), not a storm.
        let attempts = mesh.state.lock().unwrap().attempts;
        assert!(attempts <= 2 * (60 + 10), "{attempts} attempts");
    }
}
