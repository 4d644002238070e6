//! Convergence and removal time with Rust nodes (erlkube-node) in pods,
//! against a libcluster-style 5 s poll in the same run (see `formation.rs`
//! for the method; here every node is an in-process Rust node in its own
//! network namespace, restarted for every repetition).
//!
//! Run (root): `cargo bench -p erlkube-testbed --bench rust_formation [-- PODS...]`
//! (default 50 pods; 3 repetitions up to 50 pods, 1 above).

use std::time::Duration;

use erlkube_discovery::Event;
use erlkube_testbed::harness::{
    bench_variants, is_full_mesh, random_below, BenchVariant, Strategy,
};
use erlkube_testbed::rust::RustPod;
use erlkube_testbed::{Bed, BedConfig};
use tokio::time::Instant;

async fn round(bed: &mut Bed, v: &BenchVariant) -> (Duration, Duration) {
    let all = bed.indexes();
    let n = all.len();
    bed.set_published(&all, false).unwrap();
    let step = v.interval / n as u32;
    let mut pods = Vec::new();
    for i in &all {
        let p = RustPod::start(bed, *i, &Strategy::DnsA, v.engine.clone(), v.interval);
        pods.push(p.expect("rust pod"));
        tokio::time::sleep(step).await;
    }
    tokio::time::sleep(random_below(v.interval)).await;
    let t0 = Instant::now();
    bed.set_published(&all, true).unwrap();
    while !is_full_mesh(bed, &all).await {
        if t0.elapsed() > Duration::from_secs(120) {
            let mut counts = Vec::new();
            for i in &all {
                counts.push(bed.pod(*i).nodes().await.unwrap_or_default().len());
            }
            // What the engines saw: discovery errors and failed connects
            // (the first reason of each kind).
            let (mut errors, mut failed) = (0usize, 0usize);
            let mut reasons = std::collections::BTreeSet::new();
            for p in &mut pods {
                loop {
                    let e = match p.events.try_recv() {
                        Ok(e) => e,
                        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
                        Err(_) => break,
                    };
                    match e {
                        Event::DiscoveryError(r) => {
                            errors += 1;
                            reasons.insert(format!("discovery: {r}"));
                        }
                        Event::ConnectFailed { reason, .. } => {
                            failed += 1;
                            reasons.insert(format!("connect: {reason}"));
                        }
                        _ => {}
                    }
                }
            }
            let reasons: Vec<_> = reasons.into_iter().take(10).collect();
            panic!(
                "no convergence; peers per node: {counts:?}; {errors} discovery errors, \
                 {failed} failed connects; reasons: {reasons:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let conv = t0.elapsed();
    for p in &mut pods {
        let mut seen = 0;
        while seen < n - 1 {
            match p.events.recv().await {
                Ok(Event::Discovered(_)) => seen += 1,
                Ok(_) => {}
                Err(e) => panic!("events: {e}"),
            }
        }
    }
    tokio::time::sleep(random_below(v.interval)).await;
    let victim = *all.last().unwrap();
    let name = bed.pod(victim).node_name.clone();
    pods.last_mut().unwrap().stop_engine();
    let t1 = Instant::now();
    bed.set_published(&[victim], false).unwrap();
    loop {
        let mut any = false;
        for i in all.iter().filter(|i| **i != victim) {
            if bed
                .pod(*i)
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
            break;
        }
        assert!(t1.elapsed() < Duration::from_secs(120), "no removal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rem = t1.elapsed();
    drop(pods);
    tokio::time::sleep(Duration::from_millis(500)).await;
    (conv, rem)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![50] } else { sizes };
    for n in sizes {
        let reps = if n > 50 { 1 } else { 3 };
        // Every node lives in this process: both ends of a full mesh.
        let fds = 2 * (n * n) as u64 + 4096;
        if let Err(e) = erlkube_testbed::sys::ensure_nofile(fds) {
            eprintln!(
                "{n} in-process nodes need {fds} open files: {e}; \
                 `cargo bench -p erlkube --bench node_formation` runs a process per pod"
            );
            std::process::exit(2);
        }
        let mut bed = Bed::new(BedConfig::default()).expect("test bed");
        let t = Instant::now();
        bed.add_bare_pods(n).expect("pods");
        println!("{n} bare pods set up in {:.1} s", t.elapsed().as_secs_f64());
        let mut means = Vec::new();
        for v in bench_variants() {
            let mut conv = Vec::new();
            let mut rem = Vec::new();
            for _ in 0..reps {
                let (c, r) = round(&mut bed, &v).await;
                conv.push(c);
                rem.push(r);
            }
            let mean = |xs: &[Duration]| xs.iter().map(|d| ms(*d)).sum::<f64>() / xs.len() as f64;
            let max = |xs: &[Duration]| xs.iter().map(|d| ms(*d)).fold(0.0, f64::max);
            println!(
                "{n} Rust nodes, {}: convergence mean {:.0} ms max {:.0} ms; removal mean {:.0} ms max {:.0} ms (n={reps})",
                v.name,
                mean(&conv),
                max(&conv),
                mean(&rem),
                max(&rem)
            );
            means.push((mean(&conv), mean(&rem)));
        }
        println!(
            "{n} Rust nodes: ratio libcluster-style / erlkube (mean): convergence {:.2}x, removal {:.2}x",
            means[1].0 / means[0].0,
            means[1].1 / means[0].1
        );
    }
}
