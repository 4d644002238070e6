//! Formation scenarios with Rust nodes (erlkube-node), alone and mixed with
//! real BEAM nodes. Each Rust node runs in-process on a thread that entered
//! its pod's network namespace, with its own formation engine (DNS A
//! strategy, `RustNode` actor); BEAM pods are driven as in `scenarios.rs`.
//! Membership is read from each node (`nodes()` on the BEAM, `Node::nodes`
//! on the Rust side). Needs root; fails otherwise.

use std::time::Duration;

use erlkube_discovery::{Event, NodeName};
use erlkube_testbed::harness::{fast_engine, wait_discovered, wait_full_mesh, Engines, Strategy};
use erlkube_testbed::rust::RustPod;
use erlkube_testbed::{Bed, BedConfig};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const FORM: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(500);

fn rust_pod(bed: &mut Bed, index: u32) -> RustPod {
    RustPod::start(bed, index, &Strategy::DnsA, fast_engine(), POLL).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_rust_nodes_form_one_full_mesh_with_dns_a() {
    let _g = SERIAL.lock().await;
    let mut bed = Bed::new(BedConfig::default()).unwrap();
    let pods = bed.add_bare_pods(5).unwrap();
    let _rust: Vec<RustPod> = pods.iter().map(|i| rust_pod(&mut bed, *i)).collect();
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
    let mut rust_pods: Vec<RustPod> = rust.iter().map(|i| rust_pod(&mut bed, *i)).collect();
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
    // Its own engine still wants the others: stop it, as a terminating pod
    // would, but keep its node running, so only the other engines'
    // disconnects can drop it.
    let mut leaving_pod = rust_pods.pop().unwrap();
    leaving_pod.stop_engine();
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
    assert!(
        leaving_pod.node().nodes().is_empty(),
        "{:?}",
        leaving_pod.node().nodes()
    );
}
