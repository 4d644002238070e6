//! Convergence and removal time of `erlkube node` processes, one per pod,
//! clustering over DNS A, against a libcluster-style 5 s poll in the same
//! run. A program: `cargo bench -p erlkube --bench node_formation [-- PODS...]`
//! (root; default 200 pods). `NODE_FORMATION_REPS` sets repetitions of the
//! erlkube variant (default 3 up to 50 pods, else 1),
//! `NODE_FORMATION_ANCHOR_REPS` those of the anchor (default the same).
//!
//! Every pod (a network namespace of the test bed, with its own epmd) runs
//! the real binary, `erlkube node --name rust@<pod ip> --discovery dns_a`,
//! configured through `ERLKUBE_*` variables exactly as a Deployment would.
//! Each node's membership is read from its own `nodeup` / `nodedown` log
//! lines. A process per pod is also what the host allows: a 200-node full
//! mesh has 19,900 connections, 39,800 sockets if every node lived in one
//! process, over this machine's unraisable 20,000 open-file limit.
//!
//! - convergence: from the DNS update that makes every pod resolvable at
//!   once (a random moment of the poll cycle) until every node has logged
//!   `nodeup` for every other;
//! - removal: once every engine has discovered every node, the victim's
//!   process is stopped (SIGSTOP: its engine can no longer redial, its
//!   sockets stay open) and its record is dropped from DNS; time until
//!   every other node has logged `nodedown` for it.
//!
//! Anchor: the same binary configured as libcluster's DNSPoll behaves
//! (5 s interval, retries at the next poll, 5 s membership check).
//! Both use `removal_grace = 0s`, so removal measures the polling.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use erlkube_testbed::harness::{dns_env, is_full_mesh, random_below};
use erlkube_testbed::process::Guard;
use erlkube_testbed::{Bed, BedConfig, Naming};

struct Variant {
    name: &'static str,
    interval: Duration,
    env: &'static [(&'static str, &'static str)],
}

const VARIANTS: [Variant; 2] = [
    Variant {
        name: "erlkube (1 s poll)",
        interval: Duration::from_secs(1),
        env: &[
            ("ERLKUBE_DISCOVERY_INTERVAL", "1s"),
            ("ERLKUBE_FORMATION_REMOVAL_GRACE", "0s"),
        ],
    },
    Variant {
        name: "libcluster-style (5 s poll)",
        interval: Duration::from_secs(5),
        env: &[
            ("ERLKUBE_DISCOVERY_INTERVAL", "5s"),
            ("ERLKUBE_FORMATION_REMOVAL_GRACE", "0s"),
            ("ERLKUBE_FORMATION_BACKOFF_BASE", "5s"),
            ("ERLKUBE_FORMATION_BACKOFF_MAX", "5s"),
            ("ERLKUBE_FORMATION_CHECK_INTERVAL", "5s"),
        ],
    },
];

/// One running `erlkube node`: the peers its log says it is connected to,
/// and the nodes its engine has discovered (and not removed).
struct NodeProc {
    guard: Guard,
    peers: Arc<Mutex<BTreeSet<String>>>,
    discovered: Arc<Mutex<BTreeSet<String>>>,
}

/// The `node=` field of a log line carrying `added` or `dropped`
/// (`(true, node)` / `(false, node)`), if it is one.
fn node_change<'l>(line: &'l str, added: &str, dropped: &str) -> Option<(bool, &'l str)> {
    let yes = if line.contains(added) {
        true
    } else if line.contains(dropped) {
        false
    } else {
        return None;
    };
    let rest = &line[line.find(" node=")? + 6..];
    Some((yes, rest.split_whitespace().next()?))
}

fn spawn_node(bed: &mut Bed, index: u32, v: &Variant) -> NodeProc {
    let c = bed.config().clone();
    let pod = bed.pod(index);
    let mut cmd = bed.exec(index, env!("CARGO_BIN_EXE_erlkube"));
    cmd.args(["node", "--name", &pod.node_name])
        .args(["--epmd-port", &c.epmd_port.to_string()])
        .args(["--net-ticktime", &c.net_ticktime.to_string()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RELEASE_COOKIE", &c.cookie)
        .env("ERLKUBE_DISCOVERY_STRATEGY", "dns_a")
        .envs(dns_env(bed))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, val) in v.env {
        cmd.env(k, val);
    }
    let mut guard = Guard::spawn(&mut cmd).expect("spawn erlkube node");
    let stderr = guard.child_mut().stderr.take().expect("piped");
    let peers: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let discovered: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let p = peers.clone();
    let d = discovered.clone();
    // NODE_FORMATION_LOGS=DIR keeps every node's log (for diagnosis).
    let mut keep = std::env::var_os("NODE_FORMATION_LOGS").and_then(|d| {
        let path = std::path::Path::new(&d).join(format!("pod-{index}.log"));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(f) = keep.as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
            if let Some((found, node)) =
                node_change(&line, "engine: discovered ", "engine: removed ")
            {
                let mut d = d.lock().unwrap();
                if found {
                    d.insert(node.to_owned());
                } else {
                    d.remove(node);
                }
            }
            if let Some((up, node)) = node_change(&line, ": nodeup ", ": nodedown ") {
                let mut p = p.lock().unwrap();
                if up {
                    p.insert(node.to_owned());
                } else {
                    p.remove(node);
                }
            }
        }
    });
    let view = peers.clone();
    bed.set_view(
        index,
        Arc::new(move || view.lock().unwrap().iter().cloned().collect()),
    );
    NodeProc {
        guard,
        peers,
        discovered,
    }
}

async fn round(bed: &mut Bed, v: &Variant) -> (Duration, Duration) {
    let all = bed.indexes();
    let n = all.len();
    bed.set_published(&all, false).unwrap();
    let step = v.interval / n as u32;
    let mut procs = Vec::new();
    for i in &all {
        procs.push(spawn_node(bed, *i, v));
        tokio::time::sleep(step).await;
    }
    // Nodes up (listening, registered) before the moment measured.
    tokio::time::sleep(Duration::from_secs(2) + random_below(v.interval)).await;
    let t0 = Instant::now();
    bed.set_published(&all, true).unwrap();
    while !is_full_mesh(bed, &all).await {
        if t0.elapsed() > Duration::from_secs(300) {
            let counts: Vec<usize> = procs
                .iter()
                .map(|p| p.peers.lock().unwrap().len())
                .collect();
            panic!("no convergence in 300 s; peers per node: {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let conv = t0.elapsed();
    // Removal is the engines' doing: every engine must have discovered the
    // victim (a node connected only by the victim's own dial is not one
    // its engine may remove; it would go at the tick timeout).
    while procs
        .iter()
        .any(|p| p.discovered.lock().unwrap().len() < n - 1)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "discovery incomplete"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(random_below(v.interval)).await;
    let victim = *all.last().unwrap();
    let name = bed.pod(victim).node_name.clone();
    procs.last().unwrap().guard.signal(libc::SIGSTOP);
    let t1 = Instant::now();
    bed.set_published(&[victim], false).unwrap();
    while procs[..n - 1]
        .iter()
        .any(|p| p.peers.lock().unwrap().contains(&name))
    {
        assert!(
            t1.elapsed() < Duration::from_secs(300),
            "no removal in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rem = t1.elapsed();
    drop(procs);
    tokio::time::sleep(Duration::from_secs(1)).await;
    (conv, rem)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Mean and nearest-rank percentiles (p99 of fewer than 100 samples is
/// the maximum; the line says how many samples there are).
fn summary(xs: &mut [f64]) -> String {
    xs.sort_by(f64::total_cmp);
    let pct = |p: f64| xs[((p / 100.0 * xs.len() as f64).ceil() as usize).clamp(1, xs.len()) - 1];
    format!(
        "mean {:.0} ms, p50 {:.0}, p95 {:.0}, p99 {:.0}, max {:.0} ms",
        mean(xs),
        pct(50.0),
        pct(95.0),
        pct(99.0),
        xs[xs.len() - 1]
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![200] } else { sizes };
    let reps_env = |key: &str| {
        std::env::var(key)
            .ok()
            .and_then(|r| r.parse::<usize>().ok())
    };
    for n in sizes {
        let default_reps = if n > 50 { 1 } else { 3 };
        let reps = reps_env("NODE_FORMATION_REPS").unwrap_or(default_reps);
        let anchor_reps = reps_env("NODE_FORMATION_ANCHOR_REPS").unwrap_or(reps);
        let mut bed = Bed::new(BedConfig {
            naming: Naming::Ipv4,
            // OTP's default; the bed's short 4 s (quick dead-pod detection
            // in the scenarios) starves on one 2-core host running 200 nodes.
            net_ticktime: 60,
            ..BedConfig::default()
        })
        .expect("test bed");
        let t = Instant::now();
        bed.add_bare_pods(n).expect("pods");
        println!("{n} bare pods set up in {:.1} s", t.elapsed().as_secs_f64());
        let mut means = Vec::new();
        for (k, v) in VARIANTS.iter().enumerate() {
            let reps = if k == 0 { reps } else { anchor_reps };
            let mut conv = Vec::new();
            let mut rem = Vec::new();
            for _ in 0..reps {
                let (c, r) = round(&mut bed, v).await;
                println!(
                    "  {n} nodes, {}: convergence {:.0} ms, removal {:.0} ms",
                    v.name,
                    ms(c),
                    ms(r)
                );
                conv.push(ms(c));
                rem.push(ms(r));
            }
            println!(
                "{n} erlkube node processes, {} (n={reps}): convergence {}; removal {}",
                v.name,
                summary(&mut conv),
                summary(&mut rem)
            );
            means.push((mean(&conv), mean(&rem)));
        }
        println!(
            "{n} erlkube node processes: ratio libcluster-style / erlkube (mean): convergence {:.2}x, removal {:.2}x",
            means[1].0 / means[0].0,
            means[1].1 / means[0].1
        );
    }
}
