//! Formation scenarios with the Kubernetes API strategy in the netns test
//! bed: real BEAM nodes in pods, one formation engine per pod (driving its
//! node through `BeamActor`), membership from the BEAM side (`nodes()`).
//!
//! The API server is the Kubernetes API emulator (erlkube-kube-emulator,
//! the project's one stand-in), listening with TLS on the bed's bridge
//! address; the test plays the kubelet and the EndpointSlice controller:
//! pods appearing, becoming ready, terminating and disappearing in the bed
//! are written to the API as a cluster would.
//!
//! Needs root (CI runs as root); fails otherwise. One scenario at a time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use erlkube_discovery::kubernetes::{ApiAccess, KubeSettings, Kubernetes};
use erlkube_discovery::{Engine, Event, Formation, NodeName};
use erlkube_kube_emulator::{Access, Emulator, EmulatorConfig, EndpointState, ServiceModel};
use erlkube_testbed::harness::{fast_engine, is_full_mesh, wait_full_mesh};
use erlkube_testbed::{BeamActor, Bed, BedConfig, Naming};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Liveness bound for a mesh to form (not a performance assertion).
const FORM: Duration = Duration::from_secs(60);

/// The bed, the API emulator on its bridge, the Service model, and one
/// engine per pod.
struct Cluster {
    bed: Bed,
    emu: Emulator,
    model: ServiceModel,
    sa_dir: PathBuf,
    engines: BTreeMap<u32, (Formation, JoinHandle<()>)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, (_, t)) in std::mem::take(&mut self.engines) {
            t.abort();
        }
        let _ = std::fs::remove_dir_all(&self.sa_dir);
    }
}

fn pod_name(i: u32) -> String {
    format!("app-{i}")
}

impl Cluster {
    async fn new(test: &str) -> Cluster {
        let bed = Bed::new(BedConfig {
            naming: Naming::Ipv4,
            ..BedConfig::default()
        })
        .expect("test bed");
        let emu = Emulator::start(EmulatorConfig::listening_on(bed.bridge_ipv4().into()))
            .await
            .expect("emulator");
        emu.set_token("formation-token", Access::Read);
        let sa_dir = std::env::temp_dir().join(format!(
            "erlkube-kube-testbed-{test}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&sa_dir);
        std::fs::create_dir_all(&sa_dir).unwrap();
        std::fs::write(sa_dir.join("ca.crt"), emu.ca_pem()).unwrap();
        std::fs::write(sa_dir.join("token"), "formation-token").unwrap();
        std::fs::write(sa_dir.join("namespace"), &bed.config().namespace).unwrap();
        let model = ServiceModel::new(
            &bed.config().namespace,
            &bed.config().service,
            &[("app", "demo")],
        );
        Cluster {
            bed,
            emu,
            model,
            sa_dir,
            engines: BTreeMap::new(),
        }
    }

    fn settings(&self) -> KubeSettings {
        let mut k = KubeSettings::new(&self.bed.config().basename, &self.bed.config().service);
        k.api = ApiAccess::InCluster {
            api_server: Some(self.emu.url()),
            service_account_dir: self.sa_dir.clone(),
        };
        k
    }

    /// Pods start (not ready yet), then become ready: the API sees both.
    async fn add_pods(&mut self, n: usize) -> Vec<u32> {
        let new = self.bed.add_pods(n).unwrap();
        for i in &new {
            let ip = self.bed.pod(*i).ipv4.to_string();
            self.model
                .set_pod(&self.emu, &pod_name(*i), &ip, None, EndpointState::STARTING);
        }
        for i in &new {
            self.start_engine(*i).await;
            self.model
                .set_state(&self.emu, &pod_name(*i), EndpointState::READY);
        }
        new
    }

    async fn start_engine(&mut self, i: u32) {
        let (tx, rx) = mpsc::channel(64);
        let strategy = Kubernetes::connect(self.settings())
            .await
            .expect("strategy");
        let task = tokio::spawn(strategy.run(tx));
        let formation = Engine::new(
            BeamActor::new(self.bed.pod(i).beam().clone()),
            fast_engine(),
        )
        .spawn(rx);
        self.engines.insert(i, (formation, task));
    }

    fn stop_engine(&mut self, i: u32) {
        if let Some((f, t)) = self.engines.remove(&i) {
            t.abort();
            drop(f);
        }
    }

    fn engine(&self, i: u32) -> &Formation {
        &self.engines[&i].0
    }

    /// Deletion as Kubernetes does it: terminating (still serving), then
    /// not serving, then the pod is killed and leaves the API.
    async fn delete_pod(&mut self, i: u32) {
        self.model
            .set_state(&self.emu, &pod_name(i), EndpointState::TERMINATING_SERVING);
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.model
            .set_state(&self.emu, &pod_name(i), EndpointState::TERMINATING);
        self.stop_engine(i);
        self.bed.kill_pod(i).unwrap();
        self.model.remove_pod(&self.emu, &pod_name(i));
    }
}

/// Waits (liveness bound) until pod `i`'s engine wants exactly `n` nodes
/// (removals complete after the engine's grace period).
async fn wait_desired(c: &Cluster, i: u32, n: usize) {
    let start = tokio::time::Instant::now();
    loop {
        let d = c.engine(i).desired();
        if d.len() == n {
            return;
        }
        assert!(start.elapsed() < FORM, "pod {i} wants {d:?}, not {n} nodes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kube_five_pods_form_one_full_mesh() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::new("form").await;
    let pods = c.add_pods(5).await;
    wait_full_mesh(&c.bed, &pods, FORM).await.unwrap();
    for i in &pods {
        let m = c.engine(*i).metrics();
        assert_eq!((m.discovered, m.connected), (4, 4), "pod {i}: {m:?}");
    }
    let st = c.emu.stats();
    assert_eq!(st.lists, 5, "one list per engine, then watches: {st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kube_scale_to_eight_and_back_to_three() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::new("scale").await;
    c.add_pods(5).await;
    wait_full_mesh(&c.bed, &c.bed.indexes(), FORM)
        .await
        .unwrap();
    c.add_pods(3).await;
    let all = c.bed.indexes();
    assert_eq!(all.len(), 8);
    wait_full_mesh(&c.bed, &all, FORM).await.unwrap();
    // Scale down: the five leave the API (terminating, then gone) while
    // their nodes still run; survivors disconnect them on that evidence.
    let (keep, gone) = all.split_at(3);
    for i in gone {
        c.stop_engine(*i);
        c.model
            .set_state(&c.emu, &pod_name(*i), EndpointState::TERMINATING);
    }
    for i in gone {
        c.model.remove_pod(&c.emu, &pod_name(*i));
    }
    wait_full_mesh(&c.bed, keep, FORM).await.unwrap();
    for i in gone {
        assert!(
            c.bed.pod(*i).beam().is_running(),
            "pod {i} should still run"
        );
    }
    for i in keep {
        let m = c.engine(*i).metrics();
        assert_eq!(
            (m.discovered, m.connected, m.removed),
            (2, 2, 5),
            "pod {i}: {m:?}"
        );
    }
    for i in gone {
        c.bed.kill_pod(*i).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(is_full_mesh(&c.bed, keep).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kube_a_killed_pod_is_removed_and_its_replacement_joins() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::new("kill").await;
    let pods = c.add_pods(5).await;
    wait_full_mesh(&c.bed, &pods, FORM).await.unwrap();
    let victim = pods[2];
    let victim_name = NodeName::new(&c.bed.pod(victim).node_name);
    let mut subs: Vec<_> = pods
        .iter()
        .filter(|i| **i != victim)
        .map(|i| c.engine(*i).subscribe())
        .collect();
    // A crash: the node dies first, the API catches up afterwards.
    c.stop_engine(victim);
    c.bed.kill_pod(victim).unwrap();
    c.model.remove_pod(&c.emu, &pod_name(victim));
    let new = c.add_pods(1).await;
    let members = c.bed.indexes();
    assert!(members.contains(&new[0]) && !members.contains(&victim));
    wait_full_mesh(&c.bed, &members, FORM).await.unwrap();
    for sub in &mut subs {
        let deadline = tokio::time::Instant::now() + FORM;
        loop {
            match tokio::time::timeout_at(deadline, sub.recv()).await {
                Ok(Ok(Event::Removed(n))) if n == victim_name => break,
                Ok(Ok(_)) => {}
                other => panic!("no Removed({victim_name}) event: {other:?}"),
            }
        }
    }
    for i in &members {
        wait_desired(&c, *i, 4).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kube_a_rolling_restart_ends_in_one_cluster() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::new("rolling").await;
    let old = c.add_pods(5).await;
    wait_full_mesh(&c.bed, &old, FORM).await.unwrap();
    for i in &old {
        // maxSurge 1, maxUnavailable 0: a new pod becomes ready, then an
        // old one terminates (serving a moment longer), then goes.
        c.add_pods(1).await;
        wait_full_mesh(&c.bed, &c.bed.indexes(), FORM)
            .await
            .unwrap();
        c.delete_pod(*i).await;
    }
    let members = c.bed.indexes();
    assert_eq!(members.len(), 5);
    assert!(members.iter().all(|i| !old.contains(i)));
    wait_full_mesh(&c.bed, &members, FORM).await.unwrap();
    for i in &members {
        wait_desired(&c, *i, 4).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kube_a_partition_heals() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::new("partition").await;
    let pods = c.add_pods(5).await;
    wait_full_mesh(&c.bed, &pods, FORM).await.unwrap();
    let cut = pods[1];
    let cut_name = c.bed.pod(cut).node_name.clone();
    c.bed.partition(cut).unwrap();
    let rest: Vec<u32> = pods.iter().copied().filter(|i| *i != cut).collect();
    let start = tokio::time::Instant::now();
    loop {
        let mut all_dropped = true;
        for i in &rest {
            if c.bed
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
    // The API still lists the pod as ready: it stays desired (retried).
    for i in &rest {
        assert!(c.engine(*i).desired().contains(&NodeName::new(&cut_name)));
    }
    c.bed.heal(cut).unwrap();
    wait_full_mesh(&c.bed, &pods, FORM).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kube_an_api_outage_keeps_the_cluster() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::new("outage").await;
    let pods = c.add_pods(5).await;
    wait_full_mesh(&c.bed, &pods, FORM).await.unwrap();
    c.emu.fail_always(503);
    c.emu.drop_watches();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            is_full_mesh(&c.bed, &pods).await,
            "the cluster broke during the outage"
        );
    }
    for i in &pods {
        let m = c.engine(*i).metrics();
        assert!(m.discovery_errors > 0, "pod {i}: {m:?}");
        assert_eq!(
            (m.discovered, m.connected, m.removed),
            (4, 4, 0),
            "pod {i}: {m:?}"
        );
    }
    c.emu.clear_faults();
    let new = c.add_pods(1).await;
    let members = c.bed.indexes();
    assert!(members.contains(&new[0]));
    wait_full_mesh(&c.bed, &members, FORM).await.unwrap();
}

/// Waits (liveness bound) for `Event::Passive(node)` on `rx`.
async fn wait_passive(rx: &mut tokio::sync::broadcast::Receiver<Event>, node: &str) {
    let want = NodeName::new(node);
    tokio::time::timeout(FORM, async {
        loop {
            match rx.recv().await {
                Ok(Event::Passive(n)) if n == want => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the peer marked passive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kube_terminating_or_not_ready_peers_are_not_dialled_and_not_cut() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::new("passive").await;
    let pods = c.add_pods(3).await;
    wait_full_mesh(&c.bed, &pods, FORM).await.unwrap();
    let (rest, t) = (pods[..2].to_vec(), pods[2]);
    let name = c.bed.pod(t).node_name.clone();
    for state in [EndpointState::TERMINATING, EndpointState::STARTING] {
        let mut events: Vec<_> = rest.iter().map(|i| c.engine(*i).subscribe()).collect();
        c.model.set_state(&c.emu, &pod_name(t), state);
        for rx in events.iter_mut() {
            wait_passive(rx, &name).await;
        }
        // Well past formation.removal_grace (1 s) and two checks: the
        // connections are not cut.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            is_full_mesh(&c.bed, &pods).await,
            "{state:?}: a connection was cut"
        );
        for i in &rest {
            assert!(!c.engine(*i).desired().contains(&NodeName::new(&name)));
        }
        // Ready again: a member to dial again.
        c.model
            .set_state(&c.emu, &pod_name(t), EndpointState::READY);
        for i in &rest {
            let start = tokio::time::Instant::now();
            while !c.engine(*i).desired().contains(&NodeName::new(&name)) {
                assert!(start.elapsed() < FORM, "pod {i} never wanted {name} again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Its own engine gone (as after a drain), terminating, the pod's node
    // drops its connections: the others do not dial it back.
    let mut events: Vec<_> = rest.iter().map(|i| c.engine(*i).subscribe()).collect();
    c.model
        .set_state(&c.emu, &pod_name(t), EndpointState::TERMINATING);
    for rx in events.iter_mut() {
        wait_passive(rx, &name).await;
    }
    c.stop_engine(t);
    let attempts: Vec<u64> = rest
        .iter()
        .map(|i| c.engine(*i).metrics().connect_attempts)
        .collect();
    c.bed
        .pod(t)
        .beam()
        .eval(
            "[erlang:disconnect_node(N) || N <- nodes()]",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, before) in rest.iter().zip(attempts) {
        let nodes = c.bed.pod(*i).beam().nodes().await.unwrap();
        assert!(
            !nodes.contains(&name),
            "pod {i} dialled a passive peer: {nodes:?}"
        );
        assert_eq!(c.engine(*i).metrics().connect_attempts, before, "pod {i}");
    }
    // Ready again: dialled again.
    c.model
        .set_state(&c.emu, &pod_name(t), EndpointState::READY);
    wait_full_mesh(&c.bed, &pods, FORM).await.unwrap();
}
