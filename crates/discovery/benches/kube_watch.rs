//! Time from an EndpointSlice change in the Kubernetes API emulator (the
//! project's one stand-in for the API server) to the formation engine
//! acting on it: `connect` called for a pod that became ready,
//! `disconnect` called for a pod that was deleted (removal grace 0).
//! Part 1: the engine acts through an in-memory actor that timestamps each
//! call. Part 2 (root, netns test bed): the engine acts on a real BEAM node
//! in a pod; the time is taken when `connect_node`/`disconnect_node` has
//! returned (`KUBE_BENCH_REAL_CHANGES`, `KUBE_BENCH_REAL_POLL_CHANGES`).
//!
//! Run: `cargo bench -p erlkube-discovery --bench kube_watch`
//! (`KUBE_BENCH_CHANGES`, default 50, `KUBE_BENCH_POLL_CHANGES`, default 12).
//!
//! The anchor is the same strategy in polling mode with libcluster's
//! default 5 s interval, measured in the same run; the ratio is printed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use erlkube_discovery::kubernetes::{ApiAccess, KubeSettings, Kubernetes};
use erlkube_discovery::{Actor, ConnectError, Engine, EngineConfig, NodeName, PlanConfig};
use erlkube_kube_emulator::{Access, Emulator, EmulatorConfig, EndpointState, ServiceModel};
use erlkube_testbed::{BeamActor, Bed, BedConfig};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug)]
enum Act {
    Connect(NodeName),
    Disconnect(NodeName),
}

/// Timestamps the engine's calls; with `inner`, the call goes to a real
/// BEAM node first and the time is taken when it has returned (the node is
/// connected / disconnected).
#[derive(Clone)]
struct TimingActor {
    tx: mpsc::UnboundedSender<(Act, Instant)>,
    connected: Arc<Mutex<BTreeSet<NodeName>>>,
    inner: Option<BeamActor>,
}

impl Actor for TimingActor {
    fn self_name(&self) -> NodeName {
        match &self.inner {
            Some(b) => b.self_name(),
            None => NodeName::new("bench@self"),
        }
    }
    async fn connect(&self, node: &NodeName) -> Result<(), ConnectError> {
        if let Some(b) = &self.inner {
            b.connect(node).await?;
        }
        let now = Instant::now();
        self.connected.lock().unwrap().insert(node.clone());
        let _ = self.tx.send((Act::Connect(node.clone()), now));
        Ok(())
    }
    async fn disconnect(&self, node: &NodeName) {
        if let Some(b) = &self.inner {
            b.disconnect(node).await;
        }
        let now = Instant::now();
        self.connected.lock().unwrap().remove(node);
        let _ = self.tx.send((Act::Disconnect(node.clone()), now));
    }
    async fn connected(&self) -> Result<BTreeSet<NodeName>, ConnectError> {
        match &self.inner {
            Some(b) => b.connected().await,
            None => Ok(self.connected.lock().unwrap().clone()),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

struct Run {
    add: Vec<Duration>,
    remove: Vec<Duration>,
    /// Changes the engine did not act on within 60 s (real actor only).
    missed: usize,
}

async fn run(watch: bool, changes: usize, label: &str) -> Run {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.set_token("bench", Access::Read);
    let dir =
        std::env::temp_dir().join(format!("erlkube-kube-bench-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.crt"), emu.ca_pem()).unwrap();
    std::fs::write(dir.join("token"), "bench").unwrap();
    std::fs::write(dir.join("namespace"), "bench").unwrap();
    let mut model = ServiceModel::new("bench", "app-headless", &[("app", "bench")]);
    // A standing membership of 20 pods.
    for i in 0..20 {
        model.set_pod(
            &emu,
            &format!("base-{i}"),
            &format!("10.9.0.{}", 10 + i),
            None,
            EndpointState::READY,
        );
    }
    let mut k = KubeSettings::new("app", "app-headless");
    k.api = ApiAccess::InCluster {
        api_server: Some(emu.url()),
        service_account_dir: dir.clone(),
    };
    k.watch = watch;
    k.poll_interval = Duration::from_secs(5);
    let (tx, rx) = mpsc::channel(256);
    let strategy = Kubernetes::connect(k).await.unwrap();
    let task = tokio::spawn(strategy.run(tx));
    let (atx, mut arx) = mpsc::unbounded_channel();
    let actor = TimingActor {
        tx: atx,
        connected: Arc::default(),
        inner: None,
    };
    let engine = Engine::new(
        actor,
        EngineConfig {
            plan: PlanConfig {
                removal_grace: Duration::ZERO,
                ..PlanConfig::default()
            },
            ..EngineConfig::default()
        },
    )
    .spawn(rx);
    // Wait for the standing membership.
    let mut seen = 0;
    while seen < 20 {
        if let Some((Act::Connect(_), _)) = arx.recv().await {
            seen += 1;
        }
    }
    let mut out = Run {
        add: Vec::new(),
        remove: Vec::new(),
        missed: 0,
    };
    for c in 0..changes {
        // Changes land at random points of the poll cycle.
        if !watch {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..5000))).await;
        } else {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(5..50))).await;
        }
        let name = format!("churn-{c}");
        let ip = format!("10.9.{}.{}", 1 + c / 200, 10 + c % 200);
        let node = NodeName::new(format!("app@{ip}"));
        let add = c % 2 == 0 || model.pod_names().iter().all(|p| !p.starts_with("churn"));
        let (t0, want_connect, node) = if add {
            let t0 = Instant::now();
            model.set_pod(&emu, &name, &ip, None, EndpointState::READY);
            (t0, true, node)
        } else {
            let victim = model
                .pod_names()
                .into_iter()
                .find(|p| p.starts_with("churn"))
                .unwrap();
            let vip = emu
                .objects(erlkube_kube_emulator::Kind::Pod, "bench")
                .into_iter()
                .find(|o| o["metadata"]["name"] == victim.as_str())
                .and_then(|o| o["status"]["podIP"].as_str().map(str::to_owned))
                .unwrap();
            let t0 = Instant::now();
            model.remove_pod(&emu, &victim);
            (t0, false, NodeName::new(format!("app@{vip}")))
        };
        loop {
            let (act, t) = tokio::time::timeout(Duration::from_secs(30), arx.recv())
                .await
                .expect("the engine acted within 30 s")
                .unwrap();
            match act {
                Act::Connect(n) if want_connect && n == node => {
                    out.add.push(t - t0);
                    break;
                }
                Act::Disconnect(n) if !want_connect && n == node => {
                    out.remove.push(t - t0);
                    break;
                }
                _ => {}
            }
        }
    }
    drop(engine);
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// The same with real BEAM nodes in the netns test bed: one observer pod
/// whose engine acts on its node; `pool` pods that become ready (timed to
/// `net_kernel:connect_node/1` returning true on the observer) and then
/// terminate (timed to `erlang:disconnect_node/1` returning).
async fn run_real(watch: bool, pool: usize, rounds: usize, label: &str) -> Run {
    let mut bed = Bed::new(BedConfig::default()).expect("test bed");
    let idx = bed.add_pods(pool + 1).expect("pods");
    let (observer, pool) = (idx[0], idx[1..].to_vec());
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.set_token("bench", Access::Read);
    let dir =
        std::env::temp_dir().join(format!("erlkube-kube-bench-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.crt"), emu.ca_pem()).unwrap();
    std::fs::write(dir.join("token"), "bench").unwrap();
    std::fs::write(dir.join("namespace"), "bench").unwrap();
    let mut model = ServiceModel::new("bench", &bed.config().service, &[("app", "bench")]);
    for i in &pool {
        let ip = bed.pod(*i).ipv4.to_string();
        model.set_pod(&emu, &format!("p{i}"), &ip, None, EndpointState::STARTING);
    }
    let mut k = KubeSettings::new(&bed.config().basename, &bed.config().service);
    k.api = ApiAccess::InCluster {
        api_server: Some(emu.url()),
        service_account_dir: dir.clone(),
    };
    k.watch = watch;
    k.poll_interval = Duration::from_secs(5);
    let (tx, rx) = mpsc::channel(256);
    let task = tokio::spawn(Kubernetes::connect(k).await.unwrap().run(tx));
    let (atx, mut arx) = mpsc::unbounded_channel();
    let actor = TimingActor {
        tx: atx,
        connected: Arc::default(),
        inner: Some(BeamActor::new(bed.pod(observer).beam().clone())),
    };
    let engine = Engine::new(
        actor,
        EngineConfig {
            plan: PlanConfig {
                removal_grace: Duration::ZERO,
                ..PlanConfig::default()
            },
            ..EngineConfig::default()
        },
    )
    .spawn(rx);
    let mut out = Run {
        add: Vec::new(),
        remove: Vec::new(),
        missed: 0,
    };
    for r in 0..rounds {
        let i = pool[r % pool.len()];
        let adding = (r / pool.len()) % 2 == 0;
        if watch {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(5..50))).await;
        } else {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..5000))).await;
        }
        let node = NodeName::new(&bed.pod(i).node_name);
        let t0 = Instant::now();
        let state = if adding {
            EndpointState::READY
        } else {
            EndpointState::TERMINATING
        };
        model.set_state(&emu, &format!("p{i}"), state);
        loop {
            let Ok(Some((act, t))) =
                tokio::time::timeout(Duration::from_secs(60), arx.recv()).await
            else {
                // Reported, not hidden: a change the engine never acted on.
                println!(
                    "MISSED: no {} of {node} within 60 s: desired {:?}, metrics {:?}, emulator {:?}",
                    if adding { "connect" } else { "disconnect" },
                    engine.desired(),
                    engine.metrics(),
                    emu.stats()
                );
                out.missed += 1;
                break;
            };
            match act {
                Act::Connect(n) if adding && n == node => {
                    out.add.push(t - t0);
                    break;
                }
                Act::Disconnect(n) if !adding && n == node => {
                    out.remove.push(t - t0);
                    break;
                }
                _ => {}
            }
        }
    }
    drop(engine);
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn summary(label: &str, xs: &mut [Duration]) -> (Duration, Duration) {
    xs.sort();
    let p50 = percentile(xs, 0.5);
    let p99 = percentile(xs, 0.99);
    println!(
        "{label:<28} n={:<3} p50={:>9.1?} p99={:>9.1?} max={:>9.1?}",
        xs.len(),
        p50,
        p99,
        xs.last().copied().unwrap_or_default()
    );
    (p50, p99)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let changes = env_usize("KUBE_BENCH_CHANGES", 50);
    let poll_changes = env_usize("KUBE_BENCH_POLL_CHANGES", 12);
    rt.block_on(async {
        println!("EndpointSlice change -> engine calls connect/disconnect (in-memory actor), 20 standing pods");
        let mut w = run(true, changes, "watch").await;
        let mut p = run(false, poll_changes, "poll").await;
        let mut w_all: Vec<Duration> = w.add.iter().chain(&w.remove).copied().collect();
        let mut p_all: Vec<Duration> = p.add.iter().chain(&p.remove).copied().collect();
        summary("watch: pod ready -> connect", &mut w.add);
        summary("watch: pod gone -> disconnect", &mut w.remove);
        let (w50, w99) = summary("watch: all", &mut w_all);
        summary("poll 5s: pod ready -> connect", &mut p.add);
        summary("poll 5s: pod gone -> disconnect", &mut p.remove);
        let (p50, p99) = summary("poll 5s (anchor): all", &mut p_all);
        println!(
            "ratio poll/watch: p50 {:.0}x, p99 {:.0}x; watch p99 target <= 250ms: {}",
            p50.as_secs_f64() / w50.as_secs_f64().max(1e-9),
            p99.as_secs_f64() / w99.as_secs_f64().max(1e-9),
            if w99 <= Duration::from_millis(250) { "met" } else { "MISSED" }
        );
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("real BEAM actor part skipped: the netns test bed needs root");
            return;
        }
        println!();
        println!("EndpointSlice change -> observer BEAM node connected/disconnected (netns test bed, 5 pods)");
        let real_rounds = env_usize("KUBE_BENCH_REAL_CHANGES", 20);
        let real_poll_rounds = env_usize("KUBE_BENCH_REAL_POLL_CHANGES", 10);
        let mut w = run_real(true, 5, real_rounds, "real-watch").await;
        let mut p = run_real(false, 5, real_poll_rounds, "real-poll").await;
        let mut w_all: Vec<Duration> = w.add.iter().chain(&w.remove).copied().collect();
        let mut p_all: Vec<Duration> = p.add.iter().chain(&p.remove).copied().collect();
        summary("watch: ready -> connected", &mut w.add);
        summary("watch: terminating -> disc.", &mut w.remove);
        let (w50, w99) = summary("watch: all", &mut w_all);
        summary("poll 5s: ready -> connected", &mut p.add);
        summary("poll 5s: terminating -> disc.", &mut p.remove);
        let (p50, p99) = summary("poll 5s (anchor): all", &mut p_all);
        println!("changes never acted on: watch {}, poll {}", w.missed, p.missed);
        println!(
            "ratio poll/watch: p50 {:.0}x, p99 {:.0}x; watch p99 target <= 250ms: {}",
            p50.as_secs_f64() / w50.as_secs_f64().max(1e-9),
            p99.as_secs_f64() / w99.as_secs_f64().max(1e-9),
            if w99 <= Duration::from_millis(250) { "met" } else { "MISSED" }
        );
    });
}
