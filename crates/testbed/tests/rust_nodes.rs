//! Formation scenarios with Rust nodes (erlkube-node), alone and mixed with
//! real BEAM nodes. Each Rust node runs in-process on a thread that entered
//! its pod's network namespace, with its own formation engine (DNS A
//! strategy, `RustNode` actor); BEAM pods are driven as in `scenarios.rs`.
//! Membership is read from each node (`nodes()` on the BEAM, `Node::nodes`
//! on the Rust side). Needs root; fails otherwise.

use std::sync::Arc;
use std::time::Duration;

use erlkube_discovery::rust_node::RustNode;
use erlkube_discovery::strategy::{poll, DnsA};
use erlkube_discovery::{Engine, Event, NodeName};
use erlkube_node::{Cookie, Node, NodeConfig};
use erlkube_testbed::harness::{
    dns_settings, fast_engine, wait_discovered, wait_full_mesh, Engines, Strategy,
};
use erlkube_testbed::{net, Bed, BedConfig};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const FORM: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(500);

/// A Rust node with its formation engine, on a thread inside a pod.
struct RustPod {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    events: tokio::sync::broadcast::Receiver<Event>,
}

impl RustPod {
    fn start(bed: &mut Bed, index: u32) -> RustPod {
        let pod = bed.pod(index);
        let (name, netns) = (pod.node_name.clone(), pod.netns.clone());
        let cookie = bed.config().cookie.clone();
        let epmd_port = bed.config().epmd_port;
        let settings = dns_settings(bed);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = net::spawn_in_netns(&netns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut config = NodeConfig::new(name, Cookie::new(cookie));
                config.epmd_port = epmd_port;
                config.net_ticktime = Duration::from_secs(4);
                let node = match Node::start(config).await {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let (tx, rx) = tokio::sync::mpsc::channel(16);
                let strategy = tokio::spawn(poll(DnsA::new(settings).expect("resolver"), POLL, tx));
                let engine = Engine::new(RustNode(node.clone()), fast_engine());
                let events = engine.subscribe();
                let formation = engine.spawn(rx);
                let _ = ready_tx.send(Ok((node.clone(), events)));
                let _ = stop_rx.await;
                strategy.abort();
                drop(formation);
                node.shutdown();
            });
        })
        .expect("thread in pod");
        let (node, events) = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("rust node thread")
            .unwrap_or_else(|e| panic!("rust node in pod {index}: {e}"));
        bed.set_view(index, Arc::new(move || node.nodes()));
        RustPod {
            stop: Some(stop_tx),
            thread: Some(thread),
            events,
        }
    }
}

impl Drop for RustPod {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_rust_nodes_form_one_full_mesh_with_dns_a() {
    let _g = SERIAL.lock().await;
    let mut bed = Bed::new(BedConfig::default()).unwrap();
    let pods = bed.add_bare_pods(5).unwrap();
    let _rust: Vec<RustPod> = pods.iter().map(|i| RustPod::start(&mut bed, *i)).collect();
    wait_full_mesh(&bed, &pods, FORM).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rust_and_beam_nodes_form_one_cluster_and_a_removed_rust_node_is_dropped() {
    let _g = SERIAL.lock().await;
    let mut bed = Bed::new(BedConfig::default()).unwrap();
    let beam = bed.add_pods(3).unwrap();
    let rust = bed.add_bare_pods(2).unwrap();
    let mut engines = Engines::default();
    for i in &beam {
        engines.start(&bed, *i, &Strategy::DnsA, fast_engine(), POLL);
    }
    let mut rust_pods: Vec<RustPod> = rust.iter().map(|i| RustPod::start(&mut bed, *i)).collect();
    let all = bed.indexes();
    wait_full_mesh(&bed, &all, FORM).await.unwrap();
    wait_discovered(&bed, &engines, &all, FORM).await.unwrap();
    // The Rust engines saw every other node too.
    for p in &mut rust_pods {
        let mut discovered = 0;
        let deadline = tokio::time::Instant::now() + FORM;
        while discovered < 4 {
            match tokio::time::timeout_at(deadline, p.events.recv()).await {
                Ok(Ok(Event::Discovered(_))) => discovered += 1,
                Ok(Ok(_)) => {}
                other => panic!("a Rust engine discovered only {discovered} nodes: {other:?}"),
            }
        }
    }
    // A Rust pod leaves the Service (still running): everyone drops it.
    let leaving = rust[1];
    let leaving_name = bed.pod(leaving).node_name.clone();
    let mut subs: Vec<_> = beam.iter().map(|i| engines.get(*i).subscribe()).collect();
    bed.unpublish(leaving).unwrap();
    let stay: Vec<u32> = all.iter().copied().filter(|i| *i != leaving).collect();
    // Its own engine still wants the others, so stop it first, as a
    // terminating pod would.
    drop(rust_pods.pop());
    wait_full_mesh(&bed, &stay, FORM).await.unwrap();
    for s in &mut subs {
        let deadline = tokio::time::Instant::now() + FORM;
        loop {
            match tokio::time::timeout_at(deadline, s.recv()).await {
                Ok(Ok(Event::Removed(n))) if n == NodeName::new(&leaving_name) => break,
                Ok(Ok(_)) => {}
                other => panic!("no Removed({leaving_name}): {other:?}"),
            }
        }
    }
}
