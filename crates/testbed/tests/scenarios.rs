//! Formation scenarios in the test bed: real BEAM nodes in pods, one
//! formation engine per pod driving its node (`BeamActor`), membership
//! checked from the BEAM side (`nodes()`). The nodes run with
//! `-connect_all false`, so every connection is the engine's doing.
//!
//! Needs root (CI runs as root); fails otherwise. Scenarios run one at a
//! time (a lock) to keep the machine's load sane.

use std::time::Duration;

use erlkube_discovery::{Event, NodeName};
use erlkube_testbed::harness::{
    fast_engine, is_full_mesh, wait_discovered, wait_full_mesh, Engines, Strategy,
};
use erlkube_testbed::{Bed, BedConfig, Naming};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Liveness bound for a mesh to form (not a performance assertion).
const FORM: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(500);

fn bed(naming: Naming) -> Bed {
    Bed::new(BedConfig {
        naming,
        ..BedConfig::default()
    })
    .expect("test bed")
}

async fn forms_full_mesh(naming: Naming, strategy: impl Fn(&Bed) -> Strategy) {
    let mut bed = bed(naming);
    let pods = bed.add_pods(5).unwrap();
    let mut engines = Engines::default();
    engines.start_all(&bed, &strategy(&bed), &fast_engine(), POLL);
    wait_full_mesh(&bed, &pods, FORM).await.unwrap();
    wait_discovered(&bed, &engines, &pods, FORM).await.unwrap();
    // The engines' own view agrees (it is refreshed every check interval).
    let start = tokio::time::Instant::now();
    for i in &pods {
        loop {
            let m = engines.get(*i).metrics();
            if (m.discovered, m.connected) == (4, 4) {
                break;
            }
            assert!(start.elapsed() < FORM, "pod {i}: {m:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_pods_form_one_full_mesh_with_dns_a() {
    let _g = SERIAL.lock().await;
    forms_full_mesh(Naming::Ipv4, |_| Strategy::DnsA).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_ipv6_pods_form_one_full_mesh_with_dns_aaaa() {
    let _g = SERIAL.lock().await;
    forms_full_mesh(Naming::Ipv6, |_| Strategy::DnsA).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_pods_form_one_full_mesh_with_dns_srv() {
    let _g = SERIAL.lock().await;
    forms_full_mesh(Naming::Hostname, |_| Strategy::DnsSrv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_pods_form_one_full_mesh_with_a_static_list() {
    let _g = SERIAL.lock().await;
    forms_full_mesh(Naming::Ipv4, |bed| {
        Strategy::Static(bed.pods().map(|p| NodeName::new(&p.node_name)).collect())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_to_ten_and_back_to_three_disconnects_removed_pods() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Naming::Ipv4);
    let mut engines = Engines::default();
    bed.add_pods(5).unwrap();
    engines.start_all(&bed, &Strategy::DnsA, &fast_engine(), POLL);
    wait_full_mesh(&bed, &bed.indexes(), FORM).await.unwrap();
    bed.add_pods(5).unwrap();
    engines.start_all(&bed, &Strategy::DnsA, &fast_engine(), POLL);
    let all = bed.indexes();
    assert_eq!(all.len(), 10);
    wait_full_mesh(&bed, &all, FORM).await.unwrap();
    wait_discovered(&bed, &engines, &all, FORM).await.unwrap();
    // Scale down to 3 the Kubernetes way: the 7 leave the endpoints (and
    // stop their own formation) while their nodes still run. The survivors
    // must disconnect them on that evidence alone.
    let (keep, gone) = all.split_at(3);
    for i in gone {
        engines.stop(*i);
        bed.unpublish(*i).unwrap();
    }
    wait_full_mesh(&bed, keep, FORM).await.unwrap();
    for i in gone {
        assert!(bed.pod(*i).beam().is_running(), "pod {i} should still run");
    }
    for i in keep {
        let m = engines.get(*i).metrics();
        assert_eq!(
            (m.discovered, m.connected, m.removed),
            (2, 2, 7),
            "pod {i}: {m:?}"
        );
    }
    for i in gone {
        bed.kill_pod(*i).unwrap();
    }
    // Stable afterwards: still exactly the three.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(is_full_mesh(&bed, keep).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_pod_is_removed_and_its_replacement_joins() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Naming::Ipv4);
    let mut engines = Engines::default();
    let pods = bed.add_pods(5).unwrap();
    engines.start_all(&bed, &Strategy::DnsA, &fast_engine(), POLL);
    wait_full_mesh(&bed, &pods, FORM).await.unwrap();
    wait_discovered(&bed, &engines, &pods, FORM).await.unwrap();
    let victim = pods[2];
    let victim_name = NodeName::new(&bed.pod(victim).node_name);
    let mut subs: Vec<_> = pods
        .iter()
        .filter(|i| **i != victim)
        .map(|i| engines.get(*i).subscribe())
        .collect();
    engines.stop(victim);
    bed.kill_pod(victim).unwrap();
    let new = bed.add_pods(1).unwrap();
    engines.start_all(&bed, &Strategy::DnsA, &fast_engine(), POLL);
    let members = bed.indexes();
    assert!(members.contains(&new[0]) && !members.contains(&victim));
    wait_full_mesh(&bed, &members, FORM).await.unwrap();
    for sub in &mut subs {
        let mut removed = false;
        let deadline = tokio::time::Instant::now() + FORM;
        while !removed {
            match tokio::time::timeout_at(deadline, sub.recv()).await {
                Ok(Ok(Event::Removed(n))) if n == victim_name => removed = true,
                Ok(Ok(_)) => {}
                other => panic!("no Removed({victim_name}) event: {other:?}"),
            }
        }
    }
    wait_discovered(&bed, &engines, &members, FORM)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_ends_in_one_cluster() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Naming::Ipv4);
    let mut engines = Engines::default();
    let old = bed.add_pods(5).unwrap();
    engines.start_all(&bed, &Strategy::DnsA, &fast_engine(), POLL);
    wait_full_mesh(&bed, &old, FORM).await.unwrap();
    for i in &old {
        // Surge one new pod, wait until it is in, then retire one old pod.
        bed.add_pods(1).unwrap();
        engines.start_all(&bed, &Strategy::DnsA, &fast_engine(), POLL);
        wait_full_mesh(&bed, &bed.indexes(), FORM).await.unwrap();
        engines.stop(*i);
        bed.kill_pod(*i).unwrap();
    }
    let members = bed.indexes();
    assert_eq!(members.len(), 5);
    assert!(members.iter().all(|i| !old.contains(i)));
    wait_full_mesh(&bed, &members, FORM).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_heals() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Naming::Ipv4);
    let mut engines = Engines::default();
    let pods = bed.add_pods(5).unwrap();
    engines.start_all(&bed, &Strategy::DnsA, &fast_engine(), POLL);
    wait_full_mesh(&bed, &pods, FORM).await.unwrap();
    let cut = pods[1];
    let cut_name = bed.pod(cut).node_name.clone();
    bed.partition(cut).unwrap();
    // The others notice (net_ticktime) that the link is gone...
    let rest: Vec<u32> = pods.iter().copied().filter(|i| *i != cut).collect();
    let start = tokio::time::Instant::now();
    loop {
        let mut all_dropped = true;
        for i in &rest {
            if bed
                .pod(*i)
                .beam()
                .nodes()
                .await
                .unwrap()
                .contains(&cut_name)
            {
                all_dropped = false;
            }
        }
        if all_dropped {
            break;
        }
        assert!(start.elapsed() < FORM, "the partition was never noticed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...but DNS still lists the pod, so it stays desired (retried).
    for i in &rest {
        assert!(engines
            .get(*i)
            .desired()
            .contains(&NodeName::new(&cut_name)));
    }
    bed.heal(cut).unwrap();
    wait_full_mesh(&bed, &pods, FORM).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dns_outage_of_30s_keeps_the_cluster_and_discovery_recovers() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Naming::Ipv4);
    let mut engines = Engines::default();
    let pods = bed.add_pods(5).unwrap();
    engines.start_all(&bed, &Strategy::DnsA, &fast_engine(), POLL);
    wait_full_mesh(&bed, &pods, FORM).await.unwrap();
    bed.stop_dns();
    let errors_before: Vec<u64> = pods
        .iter()
        .map(|i| engines.get(*i).metrics().discovery_errors)
        .collect();
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < end {
        assert!(
            is_full_mesh(&bed, &pods).await,
            "the cluster broke during the DNS outage"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let answers_during: Vec<u64> = pods
        .iter()
        .map(|i| engines.get(*i).metrics().discovery_answers)
        .collect();
    for (k, i) in pods.iter().enumerate() {
        let m = engines.get(*i).metrics();
        assert!(
            m.discovery_errors > errors_before[k],
            "pod {i} saw no discovery errors: {m:?}"
        );
        assert_eq!(
            (m.discovered, m.connected, m.removed),
            (4, 4, 0),
            "pod {i}: {m:?}"
        );
    }
    bed.start_dns().unwrap();
    // Discovery recovers: answers again, and a new pod is found.
    let new = bed.add_pods(1).unwrap();
    engines.start_all(&bed, &Strategy::DnsA, &fast_engine(), POLL);
    let members = bed.indexes();
    wait_full_mesh(&bed, &members, FORM).await.unwrap();
    for (k, i) in pods.iter().enumerate() {
        let m = engines.get(*i).metrics();
        assert!(m.discovery_answers > answers_during[k], "pod {i}: {m:?}");
    }
    assert!(members.contains(&new[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_engines_quorum_watch_follows_real_connections_and_leave_disconnects_them() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Naming::Ipv4);
    let pods = bed.add_pods(3).unwrap();
    // The third pod is cut off: the others discover it but cannot reach it.
    bed.partition(pods[2]).unwrap();
    let mut engines = Engines::default();
    engines.start_all(&bed, &Strategy::DnsA, &fast_engine(), POLL);
    wait_full_mesh(&bed, &pods[..2], FORM).await.unwrap();
    let mut q = engines.get(pods[0]).quorum();
    // Default rule `all`: 2 of 3 members connected, not met (the failed
    // connect to the cut-off pod is on record before the state is read).
    let mut events = engines.get(pods[0]).subscribe();
    tokio::time::timeout(FORM, async {
        loop {
            if let Ok(Event::ConnectFailed { .. }) = events.recv().await {
                return;
            }
        }
    })
    .await
    .expect("a failed connect to the cut-off pod");
    let s = *q.borrow_and_update();
    assert_eq!((s.members, s.discovered, s.needed), (2, 3, Some(3)), "{s}");
    assert!(!s.met());
    bed.heal(pods[2]).unwrap();
    tokio::time::timeout(FORM, q.wait_for(|s| s.met()))
        .await
        .expect("quorum met after the heal")
        .unwrap();
    wait_full_mesh(&bed, &pods, FORM).await.unwrap();
    // Leave: every peer disconnected at once, and the node's own engine
    // never dials again (the others do: it is still in DNS).
    assert_eq!(engines.get(pods[0]).leave().await, 2);
    let attempts = engines.get(pods[0]).metrics().connect_attempts;
    // Four check intervals: the others dial it back; it dials nobody.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(engines.get(pods[0]).metrics().connect_attempts, attempts);
}
