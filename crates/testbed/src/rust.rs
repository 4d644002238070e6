//! Rust nodes (erlkube-node) in bare pods: each runs in-process on a thread
//! that entered its pod's network namespace, with its own current-thread
//! runtime, strategy task and formation engine (`RustNode` actor).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use erlkube_agent::rust_node::RustNode;
use erlkube_discovery::partition::PartitionStatus;
use erlkube_discovery::strategy::{poll, DnsA, StaticList};
use erlkube_discovery::{Engine, EngineConfig, Event, Formation};
use erlkube_node::{Cookie, Node, NodeConfig};
use tokio::sync::{broadcast, oneshot};

use crate::harness::{dns_settings, Strategy};
use crate::{net, Bed};

/// A Rust node with its formation engine, inside a bare pod. Dropping it
/// stops the engine and shuts the node down.
pub struct RustPod {
    slot: Arc<Mutex<Option<Node>>>,
    engine_stop: Option<oneshot::Sender<()>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    node: Node,
    formation: Arc<Mutex<Option<Formation>>>,
    /// The engine's events from its start.
    pub events: broadcast::Receiver<Event>,
}

impl RustPod {
    /// Starts the pod's node (named [`crate::Pod::node_name`], registered
    /// with the pod's epmd, `net_ticktime` from the bed) and its engine, and
    /// gives the bed a view of its `nodes()`.
    pub fn start(
        bed: &mut Bed,
        index: u32,
        strategy: &Strategy,
        engine: EngineConfig,
        interval: Duration,
    ) -> io::Result<RustPod> {
        let pod = bed.pod(index);
        let (name, netns) = (pod.node_name.clone(), pod.netns.clone());
        let cookie = bed.config().cookie.clone();
        let epmd_port = bed.config().epmd_port;
        let ticktime = Duration::from_secs(bed.config().net_ticktime.into());
        let settings = dns_settings(bed);
        let strategy = strategy.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (engine_stop_tx, engine_stop_rx) = oneshot::channel::<()>();
        let formation_slot: Arc<Mutex<Option<Formation>>> = Arc::default();
        let slot_in = formation_slot.clone();
        let thread = net::spawn_in_netns(&netns, move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let mut config = NodeConfig::new(name, Cookie::new(cookie));
                config.epmd_port = epmd_port;
                config.net_ticktime = ticktime;
                let node = match Node::start(config).await {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let (tx, rx) = tokio::sync::mpsc::channel(16);
                let task = match strategy {
                    Strategy::DnsA => match DnsA::new(settings) {
                        Ok(d) => tokio::spawn(poll(d, interval, tx)),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    },
                    Strategy::Static(list) => {
                        tokio::spawn(poll(StaticList::new(list), interval, tx))
                    }
                    Strategy::DnsSrv => {
                        let _ = ready_tx.send(Err("Rust pods use IP names: DnsA or Static".into()));
                        return;
                    }
                };
                let engine = Engine::new(RustNode(node.clone()), engine);
                let events = engine.subscribe();
                *slot_in.lock().unwrap() = Some(engine.spawn(rx));
                let _ = ready_tx.send(Ok((node.clone(), events)));
                let _ = engine_stop_rx.await;
                task.abort();
                drop(slot_in.lock().unwrap().take());
                let _ = stop_rx.await;
                node.shutdown();
            });
        })?;
        let (node, events) = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| io::Error::other(format!("Rust node in pod {index} did not start")))?
            .map_err(|e| io::Error::other(format!("Rust node in pod {index}: {e}")))?;
        // The bed's view must not keep the node alive (its epmd
        // registration lives as long as the node): cleared on drop.
        let slot = Arc::new(Mutex::new(Some(node.clone())));
        let view = slot.clone();
        bed.set_view(
            index,
            Arc::new(move || {
                view.lock()
                    .unwrap()
                    .as_ref()
                    .map(Node::nodes)
                    .unwrap_or_default()
            }),
        );
        Ok(RustPod {
            slot,
            engine_stop: Some(engine_stop_tx),
            stop: Some(stop_tx),
            thread: Some(thread),
            node,
            formation: formation_slot,
            events,
        })
    }

    /// The engine's partition view (`None` once the engine is stopped).
    pub fn partition(&self) -> Option<PartitionStatus> {
        self.formation
            .lock()
            .unwrap()
            .as_ref()
            .map(Formation::partition)
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Stops the formation engine only (the node keeps running).
    pub fn stop_engine(&mut self) {
        if let Some(s) = self.engine_stop.take() {
            let _ = s.send(());
        }
    }
}

impl Drop for RustPod {
    fn drop(&mut self) {
        self.slot.lock().unwrap().take();
        self.stop_engine();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
