//! The agent's run loop.
//!
//! ```text
//! strategy --Update--> discovery forwarder --Answer--> engine (one per node incarnation)
//!                        | counts, latency,                 | connect/disconnect/nodes()
//!                        | throttled error log              v
//!                        +--> Status <-- supervisor --> BeamNode --rpc (rex)--> BEAM node
//!                               ^                                  (hidden Rust node)
//!                         HTTP /healthz /readyz /metrics /cluster
//! ```
//!
//! The supervisor waits for the BEAM node (an RPC `erlang:nodes/0` every
//! `agent.wait_interval`, failures logged through a [`Throttle`]), starts
//! a subscriber of the node's nodeup/nodedown events on it
//! ([`crate::monitor`]) and an engine (fed the last discovery answer at
//! once), applies each event to the membership and publishes it at once,
//! re-reads `nodes()` every `agent.nodes_poll_interval` as a safety net
//! (or polls it, when no subscriber runs), and drops both when the
//! connection to the node goes down, then waits again: a restarted node
//! gets a fresh subscriber and engine.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use erlkube_discovery::{Answer, Engine, Formation, Metrics, NodeName, Update};
use erlkube_etf::Term;
use erlkube_node::{Listen, Node, NodeConfig, NodeEvent};
use tokio::sync::{mpsc, watch};

use crate::beam::{BeamNode, Seen};
use crate::config::AgentConfig;
use crate::http;
use crate::monitor::{MonitorMessage, Subscription};
use crate::status::{Drain, Status};
use crate::throttle::{Throttle, Verdict};

/// Starting the agent failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The HTTP port could not be bound.
    #[error("agent.http: cannot listen on {addr}: {source}")]
    Http {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The agent's own node could not start.
    #[error("agent.name: the agent's node cannot start: {0}")]
    Node(#[from] erlkube_node::NodeError),
    /// The discovery strategy could not start.
    #[error(transparent)]
    Config(#[from] erlkube_discovery::config::ConfigError),
}

/// A started agent.
pub struct Agent {
    config: AgentConfig,
    status: Arc<Mutex<Status>>,
    drain: DrainControl,
    local: Node,
    http_addr: SocketAddr,
    http_task: tokio::task::JoinHandle<()>,
}

/// The drain, shared by `GET /drain`, the shutdown signal and the
/// supervisor: started once, over once the node has left.
#[derive(Clone)]
pub struct DrainControl {
    status: Arc<Mutex<Status>>,
    pub(crate) grace: Duration,
    /// The phase, for waiters.
    phase: watch::Sender<Drain>,
    /// Set when the grace is over: the supervisor makes the node leave.
    leave: watch::Sender<bool>,
    /// `GET /drain` requests waiting for their answer.
    pub(crate) waiting: Arc<AtomicUsize>,
    /// Set by `GET /drain` (a preStop hook: the pod is going): the leave
    /// also fences the node. A drain by the signal alone (the agent's
    /// container restarted, the node staying) does not, so that the next
    /// agent can cluster the node again.
    pub(crate) fence: Arc<AtomicBool>,
}

impl DrainControl {
    fn new(status: Arc<Mutex<Status>>, grace: Duration) -> DrainControl {
        DrainControl {
            status,
            grace,
            phase: watch::channel(Drain::Serving).0,
            leave: watch::channel(false).0,
            waiting: Arc::default(),
            fence: Arc::default(),
        }
    }

    /// Starts the drain unless one has started: `/readyz` turns 503 at
    /// once; the node leaves when the grace is over. Needs a tokio runtime.
    pub fn start(&self, why: &str) {
        {
            let mut s = self.status.lock().unwrap();
            if s.drain != Drain::Serving {
                return;
            }
            s.drain = Drain::Draining;
        }
        self.phase.send_replace(Drain::Draining);
        tracing::info!(trigger = why, grace = ?self.grace, "drain started: /readyz 503; the node stays connected for the grace, then leaves");
        let leave = self.leave.clone();
        let grace = self.grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            leave.send_replace(true);
        });
    }

    /// Waits until the node has left.
    pub async fn left(&self) {
        let mut rx = self.phase.subscribe();
        let _ = rx.wait_for(|p| *p == Drain::Left).await;
    }

    fn mark_left(&self) {
        self.status.lock().unwrap().drain = Drain::Left;
        self.phase.send_replace(Drain::Left);
    }
}

impl Agent {
    /// Binds the HTTP port and starts the agent's hidden node (no
    /// connection yet). Needs a tokio runtime.
    pub async fn start(config: AgentConfig) -> Result<Agent, AgentError> {
        let listener = tokio::net::TcpListener::bind(config.http)
            .await
            .map_err(|source| AgentError::Http {
                addr: config.http,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| AgentError::Http {
            addr: config.http,
            source,
        })?;
        let mut nc = NodeConfig::new(config.agent_name.clone(), config.cookie.clone());
        nc.hidden = true;
        nc.listen = Listen::Ephemeral;
        nc.register_with_epmd = false;
        nc.net_ticktime = config.net_ticktime;
        nc.tls = config.tls.clone();
        // The agent's node only dials out (to its own BEAM node): it
        // listens on loopback, so nothing off the pod can reach it.
        nc.listen_ip = if config
            .node
            .as_str()
            .split('@')
            .nth(1)
            .is_some_and(|h| h.contains(':'))
        {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        } else {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        };
        let local = Node::start(nc).await?;
        let status = Arc::new(Mutex::new(Status {
            node: config.node.to_string(),
            agent: local.name().to_owned(),
            quorum: config.quorum,
            mnesia: config.mnesia.as_ref().map(crate::mnesia::MnesiaStatus::new),
            tls: config.tls.clone(),
            ..Status::default()
        }));
        let drain = DrainControl::new(status.clone(), config.drain_grace);
        let http_task = tokio::spawn(http::serve(listener, status.clone(), drain.clone()));
        tracing::info!(node = %config.node, agent = %local.name(), http = %http_addr, "agent started");
        Ok(Agent {
            config,
            status,
            drain,
            local,
            http_addr,
            http_task,
        })
    }

    /// Where the HTTP endpoints listen.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// A snapshot of the agent's view.
    pub fn status(&self) -> Status {
        self.status.lock().unwrap().clone()
    }

    /// The drain (what `GET /drain` and the shutdown signal start).
    pub fn drain(&self) -> DrainControl {
        self.drain.clone()
    }

    /// Runs until `shutdown` completes; then drains (unless a drain is
    /// over already: `/readyz` 503, the node connected for
    /// `agent.drain_grace`, then disconnected from every peer), answers the
    /// `GET /drain` requests still waiting, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let beam = BeamNode::new(
            self.local.clone(),
            self.config.node.clone(),
            self.config.rpc_timeout,
            seen.clone(),
        );
        // Fails here (before the loop) on a strategy that cannot start.
        let (probe_tx, _probe_rx) = mpsc::channel(1);
        self.config.formation.spawn_strategy(probe_tx)?.abort();
        let engine_tx: Arc<Mutex<Option<mpsc::Sender<Update>>>> = Arc::default();
        let last_answer: Arc<Mutex<Option<Answer>>> = Arc::default();
        let forwarder = tokio::spawn(forward(
            self.config.formation.clone(),
            engine_tx.clone(),
            last_answer.clone(),
            self.status.clone(),
            self.config.node.clone(),
        ));
        let supervisor = supervise(
            beam.clone(),
            self.config.clone(),
            engine_tx,
            last_answer,
            self.status.clone(),
            seen,
            self.drain.clone(),
        );
        tokio::pin!(supervisor);
        tokio::select! {
            _ = &mut supervisor => {}
            _ = shutdown => {
                self.drain.start("signal");
                tokio::select! {
                    _ = &mut supervisor => {}
                    _ = self.drain.left() => {}
                }
            }
        }
        forwarder.abort();
        // Let the `GET /drain` requests of a preStop hook get their answer
        // (bounded: the kubelet kills the pod at the end of its grace).
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.drain.waiting.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.http_task.abort();
        self.local.stop().await;
        tracing::info!("agent stopped");
        Ok(())
    }
}

/// How often the strategy (and its resolver and connections) is replaced.
/// Runs the strategy and passes its updates to the current engine; counts,
/// latency and a throttled log of discovery errors (errors are not passed
/// on: they are evidence of nothing and the engine would log each one).
///
/// A watchdog restarts the strategy (a fresh resolver) when no round has
/// finished for three times `interval + timeout`: a round stuck in a
/// resolver must not freeze the agent's view. (Stale DNS views are the DNS
/// strategies' business: they build a fresh resolver every round.)
async fn forward(
    formation: erlkube_discovery::config::FormationConfig,
    engine_tx: Arc<Mutex<Option<mpsc::Sender<Update>>>>,
    last_answer: Arc<Mutex<Option<Answer>>>,
    status: Arc<Mutex<Status>>,
    me: NodeName,
) {
    let mut throttle = Throttle::new(Duration::from_secs(5), Duration::from_secs(300));
    // Only polling strategies answer every round; watching ones (kubernetes,
    // gossip) may rightly stay silent, so they get no stall watchdog.
    let polling = formation.strategy.kind().answers_every_round();
    let stall = if polling {
        (formation.interval + formation.timeout) * 3
    } else {
        Duration::from_secs(100 * 365 * 24 * 3600)
    };
    let (tx, mut from) = mpsc::channel(16);
    let Ok(mut task) = formation.spawn_strategy(tx) else {
        return;
    };
    loop {
        let next = tokio::time::timeout(stall, from.recv()).await;
        let u = match next {
            Ok(Some(u)) => u,
            Ok(None) | Err(_) => {
                task.abort();
                status.lock().unwrap().discovery_restarts += 1;
                tracing::warn!(stalled_for = ?stall, "discovery made no progress; restarting the strategy");
                let (tx, rx) = mpsc::channel(16);
                from = rx;
                match formation.spawn_strategy(tx) {
                    Ok(t) => task = t,
                    Err(_) => return,
                }
                continue;
            }
        };
        let now = std::time::Instant::now();
        match u {
            Update::Answer(a) => {
                if let Some((n, d)) = throttle.success(now) {
                    tracing::info!(failures = n, after = ?d, "discovery recovered");
                }
                {
                    let mut s = status.lock().unwrap();
                    s.discovery_answers += 1;
                    s.last_discovery_error = None;
                    if let Some(e) = a.elapsed {
                        s.discovery_latency.observe(e);
                    }
                    let mut peers: BTreeSet<NodeName> =
                        a.nodes.iter().filter(|n| **n != me).cloned().collect();
                    if a.complete {
                        s.complete_peers = Some(peers.len());
                    } else {
                        // A partial answer never prunes: merge as the engine does.
                        if let Some(prev) = &s.discovered {
                            peers.extend(prev.iter().cloned());
                        }
                    }
                    s.discovered = Some(peers);
                }
                *last_answer.lock().unwrap() = Some(a.clone());
                let tx = engine_tx.lock().unwrap().clone();
                if let Some(tx) = tx {
                    // Never wait on the engine: a full queue means it is
                    // behind, and the next round carries the same truth.
                    let _ = tx.try_send(Update::Answer(a));
                }
            }
            Update::Error(e) => {
                let text = e.to_string();
                {
                    let mut s = status.lock().unwrap();
                    s.discovery_errors += 1;
                    s.last_discovery_error = Some(e);
                }
                match throttle.failure(&text, now) {
                    Verdict::First => {
                        tracing::warn!(error = %text, "discovery failed; keeping the last good set")
                    }
                    Verdict::Repeat { suppressed } => {
                        tracing::warn!(error = %text, repeats = suppressed + 1, "discovery still failing")
                    }
                    Verdict::Quiet => {}
                }
            }
        }
    }
}

async fn supervise(
    beam: BeamNode,
    config: AgentConfig,
    engine_tx: Arc<Mutex<Option<mpsc::Sender<Update>>>>,
    last_answer: Arc<Mutex<Option<Answer>>>,
    status: Arc<Mutex<Status>>,
    seen: Arc<Mutex<Seen>>,
    drain: DrainControl,
) {
    let target = config.node.to_string();
    let mut leave = drain.leave.subscribe();
    let mut events = beam.local().subscribe();
    let mut throttle = Throttle::new(Duration::from_secs(5), Duration::from_secs(300));
    // With `agent.register_poll_interval`, the port mapper is also asked
    // to tell of registrations as they happen (erlkube's WATCH; OTP's
    // epmd does not serve it, and the polling below carries on alone).
    // `None` while no WATCH answers (then the port mapper is polled),
    // else whether the node is registered.
    let (reg_tx, mut reg_rx) = watch::channel(None::<bool>);
    let mut watching = config.register_poll_interval.is_some() && config.epmd_watch;
    let _watcher = watching.then(|| {
        AbortOnDrop(tokio::spawn(watch_registration(
            config.clone(),
            reg_tx,
            status.clone(),
        )))
    });
    loop {
        // Wait for the node: an RPC every `agent.wait_interval` and, with
        // `agent.register_poll_interval`, its port mapper asked in between
        // whether it has registered: a registration is tried at once.
        let step = config
            .register_poll_interval
            .unwrap_or(config.wait_interval)
            .min(config.wait_interval);
        let mut wait = tokio::time::interval(step);
        wait.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_rpc = tokio::time::Instant::now();
        let mut registered = false;
        // After a registration, failed attempts are retried at 20 ms,
        // 40 ms, … up to `agent.wait_interval`: a node registers before
        // its boot is over.
        let mut quick: Option<Duration> = None;
        let first = loop {
            tokio::select! {
                _ = wait.tick() => {}
                // A registered node that did not answer yet is tried again
                // at 20 ms, 40 ms, … whatever the polling step.
                _ = tokio::time::sleep_until(next_rpc), if registered => {}
                // The port mapper told of a registration: look now (the
                // look below confirms it and connects at once).
                r = reg_rx.changed(), if watching => {
                    if r.is_err() {
                        watching = false;
                        continue;
                    }
                    if *reg_rx.borrow_and_update() != Some(true) {
                        continue;
                    }
                }
                _ = leave_requested(&mut leave), if status.lock().unwrap().drain != Drain::Left => {
                    // Nothing to disconnect: the node is not up.
                    tracing::info!(node = %target, "drain over while the node is down");
                    drain.mark_left();
                    continue;
                }
            }
            let mut attempt =
                config.register_poll_interval.is_none() || tokio::time::Instant::now() >= next_rpc;
            if config.register_poll_interval.is_some() {
                // While the port mapper tells of registrations, its word
                // is read instead of asking it (no request every step).
                let told = *reg_rx.borrow_and_update();
                let state = match told {
                    Some(r) => Some(r),
                    None => registration(&config).await,
                };
                match state {
                    Some(true) if !registered => {
                        registered = true;
                        quick = Some(Duration::from_millis(20));
                        status.lock().unwrap().registrations_seen += 1;
                        tracing::debug!(node = %target, "the node registered with its port mapper; connecting");
                        attempt = true;
                    }
                    Some(true) => {}
                    // Not registered, or the port mapper does not answer
                    // (the RPC every agent.wait_interval says why).
                    Some(false) | None => {
                        registered = false;
                        quick = None;
                    }
                }
            }
            if !attempt {
                continue;
            }
            let after = match quick {
                Some(q) => {
                    quick = Some((q * 2).min(config.wait_interval));
                    q.min(config.wait_interval)
                }
                None => config.wait_interval,
            };
            next_rpc = tokio::time::Instant::now() + after;
            match beam.nodes().await {
                Ok(set) => break set,
                Err(e) => {
                    if matches!(e, crate::rpc::RpcError::WrongCookie { .. }) {
                        status.lock().unwrap().cookie_rejections += 1;
                    }
                    let text = e.to_string();
                    match throttle.failure(&text, std::time::Instant::now()) {
                        Verdict::First => {
                            tracing::warn!(node = %target, error = %text, "waiting for the node")
                        }
                        Verdict::Repeat { suppressed } => {
                            tracing::warn!(node = %target, error = %text, repeats = suppressed + 1, "still waiting for the node")
                        }
                        Verdict::Quiet => {}
                    }
                }
            }
        };
        match throttle.success(std::time::Instant::now()) {
            Some((n, d)) => {
                tracing::info!(node = %target, failures = n, after = ?d, "the node is up")
            }
            None => tracing::info!(node = %target, "the node is up"),
        }
        seen.lock().unwrap().connected = first.clone();
        {
            let mut s = status.lock().unwrap();
            s.beam_up = true;
            s.beam_ups += 1;
            s.connected = first;
        }
        while events.try_recv().is_ok() {}
        // Run an engine for this incarnation of the node, first: it is fed
        // the last discovery answer (resolved while the node was absent)
        // and dials every peer in it at once, before the subscriber below
        // is set up.
        let engine = Engine::new(beam.clone(), config.formation.engine.clone());
        let (tx, rx) = mpsc::channel(16);
        if let Some(a) = last_answer.lock().unwrap().clone() {
            let _ = tx.try_send(Update::Answer(a));
        }
        *engine_tx.lock().unwrap() = Some(tx);
        let formation = engine.spawn(rx);
        // Follow the node's nodeup/nodedown events from now on; a slow
        // re-read of nodes() is the safety net.
        let mut live = if config.node_events {
            subscribe(&beam, &config, &status, &seen).await
        } else {
            None
        };
        let mut quick_ends = 0u32;
        let poll_every = config
            .nodes_poll_interval
            .max(config.formation.engine.check_interval);
        let mut poll =
            tokio::time::interval_at(tokio::time::Instant::now() + poll_every, poll_every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The Mnesia work of this incarnation (joins once the quorum is met).
        let mut mnesia = config.mnesia.clone().map(|m| {
            tokio::spawn(crate::mnesia::run::run(
                beam.clone(),
                m,
                config.rpc_timeout,
                status.clone(),
            ))
        });
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut engine_left = false;
        loop {
            tokio::select! {
                _ = leave_requested(&mut leave), if !engine_left => {
                    engine_left = true;
                    let fence = drain.fence.load(Ordering::SeqCst);
                    // A clean leave (the pod is going) also leaves the
                    // Mnesia schema, while the node is still connected.
                    // The Mnesia task is stopped first, so that it does
                    // not start Mnesia again. Not on a drain by the signal
                    // alone: the node stays, and the next agent finds it
                    // in the schema.
                    if fence {
                        if let Some(t) = mnesia.as_mut() {
                            t.abort();
                            let _ = t.await;
                            crate::mnesia::run::leave(&beam, config.rpc_timeout, &status).await;
                        }
                    }
                    leave_cluster(&beam, &formation, &status, &seen, fence).await;
                    drain.mark_left();
                }
                ev = events.recv() => match ev {
                    Ok(NodeEvent::NodeDown { node, reason }) if node == target => {
                        tracing::warn!(node = %target, %reason, "the node went down; waiting for it");
                        break;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    _ => {}
                },
                m = next_message(&mut live) => {
                    if let MonitorMessage::Ended(reason) = &m {
                        let lived = live.take().map(|l| l.since.elapsed());
                        set_events(&status, &seen, false);
                        if !beam.local().connected_nodes().contains(&target) {
                            tracing::warn!(node = %target, "the connection to the node is gone; waiting for it");
                            break;
                        }
                        tracing::warn!(node = %target, %reason, "the node's event subscriber ended; polling nodes() until it is replaced");
                        // Replaced at once, unless subscribers keep dying
                        // young: then at the poll tick only.
                        if lived.is_some_and(|d| d >= Duration::from_secs(5)) {
                            quick_ends = 0;
                        } else {
                            quick_ends += 1;
                        }
                        if quick_ends < 3 {
                            live = subscribe(&beam, &config, &status, &seen).await;
                        }
                    } else {
                        apply(&m, &target, &status, &seen);
                    }
                    publish(&formation, &status, &seen);
                }
                _ = poll.tick() => {
                    if live.is_some() {
                        safety_net(&beam, &status, &seen).await;
                    } else if config.node_events {
                        live = subscribe(&beam, &config, &status, &seen).await;
                    }
                    publish(&formation, &status, &seen);
                }
                _ = tick.tick() => {
                    if !beam.local().connected_nodes().contains(&target) {
                        tracing::warn!(node = %target, "the connection to the node is gone; waiting for it");
                        break;
                    }
                    publish(&formation, &status, &seen);
                }
            }
        }
        drop(live);
        if let Some(t) = mnesia {
            t.abort();
            crate::mnesia::run::node_gone(&status);
        }
        set_events(&status, &seen, false);
        *engine_tx.lock().unwrap() = None;
        publish(&formation, &status, &seen);
        drop(formation);
        let mut s = status.lock().unwrap();
        s.beam_up = false;
        let m = std::mem::take(&mut s.engine);
        s.engine_base = add(&s.engine_base, &m);
        let p = std::mem::take(&mut s.partition);
        s.partitions_base += p.partitions;
        s.connected.clear();
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The port mapper [`registration`] asks: the node's address when its
/// name holds one, else loopback.
fn epmd_host(config: &AgentConfig) -> Option<(&str, &str)> {
    let (alive, host) = config.node.as_str().split_once('@')?;
    let host = if host.parse::<std::net::IpAddr>().is_ok() {
        host
    } else {
        "127.0.0.1"
    };
    Some((alive, host))
}

/// Follows the node's port mapper with erlkube's WATCH request:
/// `registered` is `Some(true)` the moment the node registers,
/// `Some(false)` when it unregisters, and `None` while no WATCH
/// connection answers. Retries every `agent.wait_interval` while the port
/// mapper is not there; ends for good when it does not serve WATCH
/// (OTP's epmd), leaving the PORT_PLEASE2 polling alone.
async fn watch_registration(
    config: AgentConfig,
    registered: watch::Sender<Option<bool>>,
    status: Arc<Mutex<Status>>,
) {
    let Some((alive, host)) = epmd_host(&config) else {
        return;
    };
    let client = erlkube_epmd::Client::new(host, config.epmd_port)
        .with_timeout(Duration::from_millis(500).min(config.wait_interval));
    loop {
        match client.watch().await {
            Ok(mut w) => {
                tracing::debug!(
                    epmd_port = config.epmd_port,
                    "following the port mapper's registrations"
                );
                status.lock().unwrap().epmd_watch = true;
                while let Ok(names) = w.next().await {
                    let now = Some(names.nodes.iter().any(|e| e.name == alive));
                    registered.send_if_modified(|r| std::mem::replace(r, now) != now);
                }
                registered.send_replace(None);
                status.lock().unwrap().epmd_watch = false;
                tracing::debug!("the port mapper's WATCH connection closed");
            }
            Err(erlkube_epmd::ClientError::WatchUnsupported) => {
                tracing::debug!(
                    epmd_port = config.epmd_port,
                    "the port mapper does not tell of registrations; asking it every agent.register_poll_interval"
                );
                return;
            }
            // Not listening yet (the node starts it), or restarted.
            Err(e) => tracing::trace!(error = %e, "no WATCH connection to the port mapper"),
        }
        tokio::time::sleep(config.wait_interval).await;
    }
}

/// Whether the node is registered with the port mapper on its host
/// (`ERL_EPMD_PORT`): `None` when the port mapper does not answer.
/// One PORT_PLEASE2 to the node's address when its name holds one, else
/// to loopback (the agent runs in the node's pod; resolving a host name
/// every few milliseconds would load the cluster DNS instead).
async fn registration(config: &AgentConfig) -> Option<bool> {
    let (alive, host) = epmd_host(config)?;
    let timeout = Duration::from_millis(500).min(config.wait_interval);
    match erlkube_node::epmd::port_please(host, config.epmd_port, alive, timeout).await {
        Ok(_) => Some(true),
        Err(erlkube_node::epmd::EpmdError::NotRegistered(_)) => Some(false),
        Err(_) => None,
    }
}

/// Waits until the drain's grace is over (the `watch::Ref` is dropped
/// here, so the caller's future stays `Send`).
async fn leave_requested(leave: &mut watch::Receiver<bool>) {
    let _ = leave.wait_for(|l| *l).await;
}

/// The end of a drain. First `global` on the node is told that the node is
/// shutting down (`{prepare_shutdown, From, Ref}`, what `init:stop/0` sends
/// it): otherwise each disconnect below makes it report a lost connection
/// to the peer, and with `prevent_overlapping_partitions` (the OTP 25+
/// default) every other node would then disconnect that peer: the
/// cluster would fall apart instead of losing one node. Then, with
/// `fence` (a drain by `GET /drain`), the node accepts no new distribution
/// connection but the agent's (`net_kernel:allow/1`, for good), so peers
/// that still list it cannot dial it back; the engine stops dialling for good and disconnects every peer; a last
/// read of `nodes()` catches any connection made meanwhile. Peers see a
/// nodedown at once. (Before it, with `fence` and `mnesia.tables`, the
/// supervisor has the node leave the Mnesia schema:
/// [`crate::mnesia::run::leave`].)
async fn leave_cluster(
    beam: &BeamNode,
    formation: &Formation,
    status: &Mutex<Status>,
    seen: &Mutex<Seen>,
    fence: bool,
) {
    let mut reply_to = beam.local().spawn_process();
    let r = Term::Reference(Box::new(beam.local().make_ref()));
    let told = beam
        .call(
            "erlang",
            "send",
            vec![
                Term::atom("global_name_server"),
                Term::tuple(vec![
                    Term::atom("prepare_shutdown"),
                    Term::Pid(reply_to.pid().clone()),
                    r.clone(),
                ]),
            ],
        )
        .await;
    match told {
        // Answered `{Ref, ok}` (older OTP releases do not answer).
        Ok(_) => match reply_to.recv_timeout(Duration::from_secs(2)).await {
            Some(m) if m.as_tuple().is_some_and(|t| t.first() == Some(&r)) => {}
            other => {
                tracing::warn!(answer = ?other.map(|t| t.to_string()), "leave: global did not confirm prepare_shutdown; peers may disconnect each other (prevent_overlapping_partitions)")
            }
        },
        Err(e) => tracing::warn!(error = %e, "leave: cannot tell global the node is leaving"),
    }
    drop(reply_to);
    let me = Term::atom(beam.local().name());
    if fence {
        if let Err(e) = beam
            .call("net_kernel", "allow", vec![Term::list(vec![me])])
            .await
        {
            tracing::warn!(error = %e, "leave: net_kernel:allow/1 failed; peers may dial the node again");
        }
    }
    let mut gone = formation.leave().await;
    match beam.nodes().await {
        Ok(rest) => {
            for p in &rest {
                let _ = beam
                    .call("erlang", "disconnect_node", vec![Term::atom(p.as_str())])
                    .await;
                seen.lock().unwrap().connected.remove(p);
            }
            gone += rest.len();
        }
        Err(e) => tracing::warn!(error = %e, "leave: cannot read the node's peers"),
    }
    status.lock().unwrap().connected = seen.lock().unwrap().connected.clone();
    tracing::info!(
        peers = gone,
        fenced = fence,
        "drain over: disconnected the node from its peers; nothing is dialled any more"
    );
}

/// A running subscriber and when it started.
struct Live {
    sub: Subscription,
    since: std::time::Instant,
}

fn set_events(status: &Mutex<Status>, seen: &Mutex<Seen>, on: bool) {
    seen.lock().unwrap().events = on;
    status.lock().unwrap().node_events = on;
}

/// Starts a subscriber on the node; `None` (and polling) when it fails.
async fn subscribe(
    beam: &BeamNode,
    config: &AgentConfig,
    status: &Mutex<Status>,
    seen: &Mutex<Seen>,
) -> Option<Live> {
    match Subscription::start(beam, config.rpc_timeout).await {
        Ok((sub, set)) => {
            tracing::info!(node = %config.node, subscriber = %Term::Pid(sub.remote().clone()), peers = set.len(), "following the node's nodeup/nodedown events");
            {
                let mut s = seen.lock().unwrap();
                s.connected = set;
                s.events = true;
            }
            let mut st = status.lock().unwrap();
            st.node_events = true;
            st.node_subscriptions += 1;
            Some(Live {
                sub,
                since: std::time::Instant::now(),
            })
        }
        Err(e) => {
            set_events(status, seen, false);
            if !beam
                .local()
                .connected_nodes()
                .contains(&config.node.to_string())
            {
                // The node went away meanwhile: the supervisor says so.
                tracing::debug!(node = %config.node, error = %e, "cannot subscribe: the node is gone");
                return None;
            }
            tracing::warn!(node = %config.node, error = %e, "cannot follow the node's nodeup/nodedown events; polling nodes() every formation.check_interval, retrying every agent.nodes_poll_interval");
            None
        }
    }
}

async fn next_message(live: &mut Option<Live>) -> MonitorMessage {
    match live {
        Some(l) => l.sub.next().await,
        None => std::future::pending().await,
    }
}

/// Applies one event of the node to the membership.
fn apply(m: &MonitorMessage, target: &str, status: &Mutex<Status>, seen: &Mutex<Seen>) {
    let counted = match m {
        MonitorMessage::Nodes(set) => {
            seen.lock().unwrap().connected = set.clone();
            false
        }
        MonitorMessage::Up(n) => {
            tracing::debug!(node = %target, peer = %n, "nodeup");
            seen.lock().unwrap().connected.insert(n.clone());
            true
        }
        MonitorMessage::Down { node: n, reason } => {
            tracing::info!(node = %target, peer = %n, %reason, "the node lost its connection to a peer");
            seen.lock().unwrap().connected.remove(n);
            true
        }
        MonitorMessage::Ended(_) | MonitorMessage::Other => false,
    };
    if counted {
        status.lock().unwrap().node_events_received += 1;
    }
}

/// The slow re-read of `nodes()` while events arrive: corrects a lost
/// event (it may also count an event that was still on its way).
async fn safety_net(beam: &BeamNode, status: &Mutex<Status>, seen: &Mutex<Seen>) {
    match beam.nodes().await {
        Ok(set) => {
            let corrected = {
                let mut s = seen.lock().unwrap();
                let differs = s.connected != set;
                if differs {
                    tracing::info!(
                        events = ?s.connected, nodes = ?set,
                        "nodes() differs from the membership kept by events; taking nodes()"
                    );
                    s.connected = set;
                }
                differs
            };
            let mut st = status.lock().unwrap();
            st.nodes_polls += 1;
            st.nodes_corrections += corrected as u64;
        }
        Err(e) => tracing::debug!(error = %e, "safety-net nodes() failed"),
    }
}

fn publish(formation: &Formation, status: &Mutex<Status>, seen: &Mutex<Seen>) {
    let m = formation.metrics();
    let p = formation.partition();
    let connected = seen.lock().unwrap().connected.clone();
    let mut s = status.lock().unwrap();
    s.engine = m;
    s.partition = p;
    s.connected = connected;
}

fn add(a: &Metrics, b: &Metrics) -> Metrics {
    Metrics {
        discovered: b.discovered,
        connected: b.connected,
        connect_attempts: a.connect_attempts + b.connect_attempts,
        connect_failures: a.connect_failures + b.connect_failures,
        discovery_answers: a.discovery_answers + b.discovery_answers,
        discovery_errors: a.discovery_errors + b.discovery_errors,
        removed: a.removed + b.removed,
        last_discovery_latency: b.last_discovery_latency,
    }
}
