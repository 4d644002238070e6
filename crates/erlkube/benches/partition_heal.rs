//! Time to heal after a partition: five pods of the test bed, each a plain
//! `erl` node (OTP 25, `-connect_all true` as a release runs) with the real
//! `erlkube agent` beside it, clustering over DNS A. A trial cuts pods
//! {1,2} from {3,4,5} (blackhole routes inside the pods' namespaces), waits
//! until each side has dropped the other (one `net_ticktime`, 4 s), holds
//! the cut for `HOLD` so that every engine's backoff has grown, mends it at
//! a random moment, and measures until every node is connected to every
//! other (each pod's `nodes()` read at once, every 20 ms).
//!
//! A program: `cargo bench -p erlkube --bench partition_heal` (root).
//! `PARTITION_HEAL_TRIALS` sets the trials per variant (default 10);
//! `PARTITION_HEAL_CONNECT_ALL=false` runs the nodes with `-connect_all
//! false`, so that `global` does not connect the nodes its peers know and
//! every pair must be reconnected by the engines themselves.
//!
//! Variants, measured in the same run on the same BEAM nodes (the agents are
//! restarted between variants):
//! - erlkube defaults (1 s discovery poll, `formation.partition_check` 2 s,
//!   backoff up to 10 s);
//! - erlkube without the partition check (`off`): the plain backoff;
//! - the anchor, the agent configured as libcluster's DNSPoll behaves (5 s
//!   poll, retries at the next poll, 5 s membership check, no partition
//!   check).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use erlkube_testbed::harness::{agent_command, is_full_mesh, membership, random_below, wait_until};
use erlkube_testbed::process::Guard;
use erlkube_testbed::{Bed, BedConfig, ErlRuntime};

struct Variant {
    name: &'static str,
    env: &'static [(&'static str, &'static str)],
}

const VARIANTS: [Variant; 3] = [
    Variant {
        name: "erlkube (partition_check 2s)",
        env: &[("ERLKUBE_DISCOVERY_INTERVAL", "1s")],
    },
    Variant {
        name: "erlkube, partition_check off",
        env: &[
            ("ERLKUBE_DISCOVERY_INTERVAL", "1s"),
            ("ERLKUBE_FORMATION_PARTITION_CHECK", "off"),
        ],
    },
    Variant {
        name: "libcluster-style (5 s poll)",
        env: &[
            ("ERLKUBE_DISCOVERY_INTERVAL", "5s"),
            ("ERLKUBE_FORMATION_BACKOFF_BASE", "5s"),
            ("ERLKUBE_FORMATION_BACKOFF_MAX", "5s"),
            ("ERLKUBE_FORMATION_CHECK_INTERVAL", "5s"),
            ("ERLKUBE_FORMATION_PARTITION_CHECK", "off"),
        ],
    },
];

/// How long a cut is held once both sides have dropped each other.
const HOLD: Duration = Duration::from_secs(10);
/// Liveness bound of every wait.
const LIMIT: Duration = Duration::from_secs(120);

fn spawn_agent(bed: &Bed, index: u32, v: &Variant) -> Guard {
    let mut cmd = agent_command(bed, index, env!("CARGO_BIN_EXE_erlkube"), "127.0.0.1:9568");
    cmd.env("ERLKUBE_DISCOVERY_TIMEOUT", "1s")
        .envs(v.env.iter().copied());
    Guard::spawn(&mut cmd).expect("spawn erlkube agent")
}

async fn wait<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_until(what, LIMIT, Duration::from_millis(20), String::new, f).await;
}

async fn sides_apart(bed: &Bed, left: &[u32], right: &[u32]) -> bool {
    let name = |i: &u32| bed.pod(*i).node_name.clone();
    let view = membership(bed).await;
    let apart = |side: &[u32], other: &[u32]| {
        let other: BTreeSet<String> = other.iter().map(name).collect();
        side.iter().all(|i| {
            view[i]
                .as_ref()
                .is_ok_and(|v| v.iter().all(|n| !other.contains(n)))
        })
    };
    apart(left, right) && apart(right, left)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and p99 (nearest rank), min, max, in ms.
fn summary(xs: &mut [f64]) -> (f64, f64, String) {
    xs.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| xs[((p * xs.len() as f64).ceil() as usize).clamp(1, xs.len()) - 1];
    let (p50, p99) = (rank(0.5), rank(0.99));
    (
        p50,
        p99,
        format!(
            "p50 {p50:.0} ms, p99 {p99:.0} ms (min {:.0}, max {:.0}, n={})",
            xs[0],
            xs[xs.len() - 1],
            xs.len()
        ),
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let trials: usize = std::env::var("PARTITION_HEAL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let connect_all = std::env::var("PARTITION_HEAL_CONNECT_ALL").as_deref() != Ok("false");
    println!(
        "load average at start: {}; -connect_all {connect_all}",
        loadavg()
    );
    let mut bed = Bed::new(BedConfig {
        erl: ErlRuntime {
            connect_all,
            ..ErlRuntime::default()
        },
        ..BedConfig::default()
    })
    .expect("test bed");
    let pods = bed.add_pods(5).expect("pods");
    let (left, right) = (pods[..2].to_vec(), pods[2..].to_vec());
    let mut results = Vec::new();
    for v in &VARIANTS {
        let agents: Vec<Guard> = pods.iter().map(|i| spawn_agent(&bed, *i, v)).collect();
        wait("a full mesh", || is_full_mesh(&bed, &pods)).await;
        let mut heal = Vec::new();
        for t in 0..trials {
            bed.cut(&left, &right).expect("cut");
            wait("the sides to drop each other", || {
                sides_apart(&bed, &left, &right)
            })
            .await;
            tokio::time::sleep(HOLD + random_below(Duration::from_secs(2))).await;
            let mended = Instant::now();
            bed.mend(&left, &right).expect("mend");
            wait("a full mesh after the mend", || is_full_mesh(&bed, &pods)).await;
            let d = mended.elapsed();
            println!("{}: trial {}: healed in {:.0} ms", v.name, t + 1, ms(d));
            heal.push(ms(d));
        }
        drop(agents);
        let (p50, p99, text) = summary(&mut heal);
        println!("{}: time to heal: {text}", v.name);
        results.push((v.name, p50, p99));
    }
    println!("load average at end: {}", loadavg());
    let (_, base50, base99) = results[0];
    for (name, p50, p99) in &results[1..] {
        println!(
            "{name} / {}: p50 {:.1}x, p99 {:.1}x",
            results[0].0,
            p50 / base50,
            p99 / base99
        );
    }
}
