//! Convergence and removal time of the formation engine driving real BEAM
//! nodes in the test bed, against a libcluster-style anchor measured in the
//! same run: the same engine polling DNS every 5 s (libcluster's default
//! polling interval) with no backoff between polls.
//!
//! - convergence: from the moment every pod becomes resolvable (one DNS
//!   update) until every node is connected to every other (`nodes()` on
//!   each BEAM);
//! - removal: from the moment one pod leaves the Service records (its node
//!   still running, its own engine stopped) until no other node is
//!   connected to it.
//!
//! Both variants use `removal_grace = 0s` so removal measures the polling
//! mechanics. Engines start staggered over one interval, so poll phases
//! are spread as they are in a real cluster.
//!
//! Also measured: the floor, every node dialling every other at one moment
//! with no discovery at all (what the BEAM nodes need to connect).
//!
//! Run (root): `cargo bench -p erlkube-testbed --bench formation [-- PODS...]`
//! (default 5 and 20 pods).

use std::time::Duration;

use erlkube_testbed::harness::{
    bench_variants, is_full_mesh, random_below, BenchVariant, Engines, Strategy,
};
use erlkube_testbed::{Bed, BedConfig, Naming};
use tokio::time::Instant;

async fn reset(bed: &mut Bed, engines: &mut Engines) {
    for i in bed.indexes() {
        engines.stop(i);
    }
    let all = bed.indexes();
    bed.set_published(&all, false).unwrap();
    for p in bed.pods() {
        let _ = p
            .beam()
            .eval(
                "[erlang:disconnect_node(N) || N <- nodes()]",
                Duration::from_secs(10),
            )
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn start_staggered(bed: &Bed, engines: &mut Engines, v: &BenchVariant) {
    let pods = bed.indexes();
    let step = v.interval / pods.len() as u32;
    for i in pods {
        engines.start(bed, i, &Strategy::DnsA, v.engine.clone(), v.interval);
        tokio::time::sleep(step).await;
    }
}

async fn converge(bed: &mut Bed, engines: &mut Engines, v: &BenchVariant) -> Duration {
    reset(bed, engines).await;
    start_staggered(bed, engines, v).await;
    // The Service fills at a random moment of the poll cycle.
    tokio::time::sleep(random_below(v.interval)).await;
    let all = bed.indexes();
    let t0 = Instant::now();
    bed.set_published(&all, true).unwrap();
    while !is_full_mesh(bed, &all).await {
        assert!(t0.elapsed() < Duration::from_secs(120), "no convergence");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t0.elapsed();
    // Settle: every engine has seen every other node (an engine only
    // removes nodes it knew; a mesh can form before every engine polled).
    let others = all.len() as u64 - 1;
    while !all
        .iter()
        .all(|i| engines.get(*i).metrics().discovered == others)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    took
}

async fn remove_one(
    bed: &mut Bed,
    engines: &mut Engines,
    victim: u32,
    v: &BenchVariant,
) -> Duration {
    let name = bed.pod(victim).node_name.clone();
    tokio::time::sleep(random_below(v.interval)).await;
    engines.stop(victim);
    let t0 = Instant::now();
    bed.set_published(&[victim], false).unwrap();
    let others: Vec<u32> = bed.indexes().into_iter().filter(|i| *i != victim).collect();
    loop {
        let mut any = false;
        for i in &others {
            if bed
                .pod(*i)
                .beam()
                .nodes()
                .await
                .unwrap_or_default()
                .contains(&name)
            {
                any = true;
                break;
            }
        }
        if !any {
            return t0.elapsed();
        }
        if t0.elapsed() > Duration::from_secs(60) {
            for i in &others {
                let f = engines.get(*i);
                eprintln!(
                    "pod {i}: desired {:?} metrics {:?} nodes {:?}",
                    f.desired(),
                    f.metrics(),
                    bed.pod(*i).beam().nodes().await
                );
            }
            eprintln!("dns log:\n{}", bed.dns_log());
            panic!("no removal of {name}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The floor under any discovery: at t0 every node is told every name at
/// once and dials them all (`net_kernel:connect_node/1` in parallel), no
/// DNS, no engine; the time until the full mesh is what the BEAM nodes on
/// this host need to connect, whatever finds the names.
async fn floor(bed: &mut Bed, engines: &mut Engines) -> Duration {
    reset(bed, engines).await;
    let all = bed.indexes();
    let names: Vec<String> = all
        .iter()
        .map(|i| format!("'{}'", bed.pod(*i).node_name))
        .collect();
    let expr = format!(
        "[spawn(fun() -> net_kernel:connect_node(N) end) || N <- [{}], N =/= node()], ok",
        names.join(",")
    );
    let t0 = Instant::now();
    let mut dials = tokio::task::JoinSet::new();
    for i in &all {
        let erl = bed.pod(*i).beam().clone();
        let expr = expr.clone();
        dials.spawn(async move { erl.eval(&expr, Duration::from_secs(10)).await });
    }
    while let Some(r) = dials.join_next().await {
        r.unwrap().expect("dial");
    }
    while !is_full_mesh(bed, &all).await {
        assert!(t0.elapsed() < Duration::from_secs(120), "no full mesh");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t0.elapsed()
}

fn summary(xs: &mut [Duration]) -> String {
    xs.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = xs.iter().map(|d| ms(*d)).sum::<f64>() / xs.len() as f64;
    format!(
        "n={} mean {:.0} ms, median {:.0} ms, max {:.0} ms",
        xs.len(),
        mean,
        ms(xs[xs.len() / 2]),
        ms(xs[xs.len() - 1])
    )
}

fn mean(xs: &[Duration]) -> f64 {
    xs.iter().map(|d| d.as_secs_f64()).sum::<f64>() / xs.len() as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![5, 20] } else { sizes };
    for n in sizes {
        let reps = if n <= 5 { 6 } else { 3 };
        let mut bed = Bed::new(BedConfig {
            naming: Naming::Ipv4,
            ..BedConfig::default()
        })
        .expect("test bed");
        bed.add_pods(n).expect("pods");
        let mut results = Vec::new();
        for v in bench_variants() {
            let mut conv = Vec::new();
            let mut rem = Vec::new();
            for _ in 0..reps {
                let mut engines = Engines::default();
                conv.push(converge(&mut bed, &mut engines, &v).await);
                let victim = *bed.indexes().last().unwrap();
                rem.push(remove_one(&mut bed, &mut engines, victim, &v).await);
                reset(&mut bed, &mut engines).await;
            }
            println!("{n} pods, {}: convergence {}", v.name, summary(&mut conv));
            println!("{n} pods, {}: removal     {}", v.name, summary(&mut rem));
            results.push((conv, rem));
        }
        let mut floors = Vec::new();
        for _ in 0..reps {
            let mut engines = Engines::default();
            floors.push(floor(&mut bed, &mut engines).await);
        }
        reset(&mut bed, &mut Engines::default()).await;
        println!(
            "{n} pods, floor (every node dials every other at t0, no discovery): convergence {}",
            summary(&mut floors)
        );
        // Churn in a stable cluster: our engines, a window after
        // convergence (FORMATION_STABLE_SECS, default 60; the issue's
        // figure is 600).
        let window = Duration::from_secs(
            std::env::var("FORMATION_STABLE_SECS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(60),
        );
        let v = &bench_variants()[0];
        let mut engines = Engines::default();
        converge(&mut bed, &mut engines, v).await;
        let all = bed.indexes();
        let before: u64 = all
            .iter()
            .map(|i| engines.get(*i).metrics().connect_attempts)
            .sum();
        // Count lost connections as they happen (a broadcast receiver read
        // only at the end could lag and undercount over a long window).
        let lost = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let lagged = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counters: Vec<_> = all
            .iter()
            .map(|i| {
                let mut sub = engines.get(*i).subscribe();
                let (lost, lagged) = (lost.clone(), lagged.clone());
                tokio::spawn(async move {
                    use tokio::sync::broadcast::error::RecvError;
                    loop {
                        match sub.recv().await {
                            Ok(erlkube_discovery::Event::Lost(_)) => {
                                lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(RecvError::Lagged(k)) => {
                                lagged.fetch_add(k, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(RecvError::Closed) => return,
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(window).await;
        let after: u64 = all
            .iter()
            .map(|i| engines.get(*i).metrics().connect_attempts)
            .sum();
        for c in counters {
            c.abort();
        }
        let lost = lost.load(std::sync::atomic::Ordering::Relaxed);
        let lagged = lagged.load(std::sync::atomic::Ordering::Relaxed);
        let mesh = is_full_mesh(&bed, &all).await;
        println!(
            "{n} pods, stable {} s after convergence: {} connect attempts, {lost} lost connections, full mesh at the end: {mesh}{}",
            window.as_secs(),
            after - before,
            if lagged > 0 { format!(" ({lagged} events missed: count is a lower bound)") } else { String::new() }
        );
        reset(&mut bed, &mut engines).await;
        println!(
            "{n} pods: ratio libcluster-style / erlkube (mean): convergence {:.2}x, removal {:.2}x",
            mean(&results[1].0) / mean(&results[0].0),
            mean(&results[1].1) / mean(&results[0].1)
        );
    }
}
