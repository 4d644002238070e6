//! Agent benchmark (a program: `cargo bench -p erlkube --bench agent`;
//! needs root and erl, like the test bed).
//!
//! In one run, on the netns test bed with plain `erl -name` nodes:
//! - convergence: pods are published in DNS at t0; time until every
//!   node's `nodes()` is the full mesh, (a) with one `erlkube agent` per pod
//!   (default settings: 1 s discovery interval), and (b) the anchor: a
//!   libcluster-style loop inside every node that resolves the Service
//!   and calls `net_kernel:connect_node/1` for each answer every 5 s
//!   (started at a random phase, as a poller started at boot would be);
//! - the agent's resident memory (VmRSS) and CPU over a 20 s idle window
//!   after formation (from /proc, first trial), next to the BEAM node's own.
//!
//! Env: `AGENT_BENCH_TRIALS` (default 5), `AGENT_BENCH_PODS` (default 3),
//! `AGENT_BENCH_IDLE_SECS` (default 20).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use erlkube_testbed::harness::{agent_command, is_full_mesh};
use erlkube_testbed::process::Guard;
use erlkube_testbed::{Bed, BedConfig, Naming};

const POLL: Duration = Duration::from_secs(5);

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn spawn_agent(bed: &Bed, index: u32) -> Guard {
    let mut cmd = agent_command(bed, index, env!("CARGO_BIN_EXE_erlkube"), "0.0.0.0:9568");
    Guard::spawn(&mut cmd).expect("spawn erlkube agent")
}

/// The anchor: a 5 s DNS poll loop inside the node (what libcluster's
/// Kubernetes.DNS strategy does), first round after a random phase.
fn poller_expr(bed: &Bed) -> String {
    let dns = bed.dns_addr();
    let std::net::IpAddr::V4(ip) = dns.ip() else {
        unreachable!()
    };
    let [a, b, c, d] = ip.octets();
    format!(
        "Poll = fun Loop() -> \
            case inet_res:lookup(\"{svc}\", in, a, [{{nameservers, [{{{{{a},{b},{c},{d}}}, {port}}}]}}, {{timeout, 1000}}]) of \
                Ips -> [net_kernel:connect_node(list_to_atom(\"{base}@\" ++ inet:ntoa(Ip))) || Ip <- Ips] \
            end, \
            timer:sleep({ms}), Loop() end, \
        spawn(fun() -> timer:sleep(rand:uniform({ms})), Poll() end), ok",
        svc = bed.service_fqdn(),
        port = dns.port(),
        base = bed.config().basename,
        ms = POLL.as_millis(),
    )
}

/// One trial: pods hidden from DNS, formation started, then all published
/// at once; returns the time to the full mesh.
async fn trial(
    pods: usize,
    agent: bool,
    measure_idle: bool,
) -> (Duration, Option<(u64, f64, u64)>) {
    let mut bed = Bed::new(BedConfig {
        naming: Naming::Ipv4,
        ..BedConfig::default()
    })
    .expect("bed");
    let ids = bed.add_pods(pods).expect("pods");
    bed.set_published(&ids, false).unwrap();
    let mut agents = BTreeMap::new();
    if agent {
        for i in &ids {
            agents.insert(*i, spawn_agent(&bed, *i));
        }
    } else {
        let expr = poller_expr(&bed);
        for i in &ids {
            bed.pod(*i)
                .erl
                .as_ref()
                .expect("erl")
                .eval(&expr, Duration::from_secs(10))
                .await
                .expect("start the in-node poller");
        }
    }
    // Let the formation side settle (agents find their nodes; pollers run).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    bed.set_published(&ids, true).unwrap();
    loop {
        if is_full_mesh(&bed, &ids).await {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no mesh in 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t0.elapsed();
    let mut idle = None;
    if agent && measure_idle {
        let secs = env_num("AGENT_BENCH_IDLE_SECS", 20);
        let pid = agents[&ids[0]].id();
        let beam_pid = beam_pid(&bed, ids[0]);
        let (c0, w0) = (cpu_ticks(pid), Instant::now());
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (c1, w1) = (cpu_ticks(pid), Instant::now());
        let hz = unsafe { libc_sysconf_clk_tck() } as f64;
        let cpu_pct = (c1 - c0) as f64 / hz / (w1 - w0).as_secs_f64() * 100.0;
        idle = Some((rss_kb(pid), cpu_pct, beam_pid.map(rss_kb).unwrap_or(0)));
    }
    (took, idle)
}

fn beam_pid(bed: &Bed, index: u32) -> Option<u32> {
    erlkube_testbed::net::netns_pids(&bed.pod(index).netns)
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .map(|c| c.trim().starts_with("beam"))
                .unwrap_or(false)
        })
        .map(|p| p as u32)
}

unsafe fn libc_sysconf_clk_tck() -> i64 {
    extern "C" {
        fn sysconf(name: i32) -> i64;
    }
    // _SC_CLK_TCK is 2 on Linux.
    sysconf(2)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the name: state is [0]; utime [11], stime [12].
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("agent: bench");
        return;
    }
    let trials = env_num("AGENT_BENCH_TRIALS", 5) as usize;
    let pods = env_num("AGENT_BENCH_PODS", 3) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut agent = Vec::new();
        let mut anchor = Vec::new();
        let mut idle = Vec::new();
        for t in 0..trials {
            let (d, i) = trial(pods, true, t == 0).await;
            println!("trial {t}: agent converged in {d:?}");
            agent.push(d);
            idle.extend(i);
            let (d, _) = trial(pods, false, false).await;
            println!("trial {t}: in-node 5 s poll converged in {d:?}");
            anchor.push(d);
        }
        agent.sort();
        anchor.sort();
        println!("\n{pods} pods, {trials} trials each");
        println!(
            "convergence agent (1 s discovery interval): p50 {:?}  p99 {:?}  max {:?}",
            pct(&agent, 0.5),
            pct(&agent, 0.99),
            agent[agent.len() - 1]
        );
        println!(
            "convergence anchor (in-node 5 s poll):      p50 {:?}  p99 {:?}  max {:?}",
            pct(&anchor, 0.5),
            pct(&anchor, 0.99),
            anchor[anchor.len() - 1]
        );
        println!(
            "ratio agent/anchor p50 {:.2}  p99 {:.2}",
            pct(&agent, 0.5).as_secs_f64() / pct(&anchor, 0.5).as_secs_f64(),
            pct(&agent, 0.99).as_secs_f64() / pct(&anchor, 0.99).as_secs_f64()
        );
        let target = POLL + Duration::from_millis(500);
        println!(
            "target p99 <= 1 poll interval + 500 ms = {target:?}: {}",
            if pct(&agent, 0.99) <= target { "met" } else { "NOT met" }
        );
        for (rss, cpu, beam_rss) in &idle {
            println!(
                "agent idle: RSS {:.1} MB (BEAM node {:.1} MB, ratio {:.2}), CPU {:.3} % of a core (target RSS <= 15 MB: {}, CPU <= 0.5 %: {})",
                *rss as f64 / 1024.0,
                *beam_rss as f64 / 1024.0,
                *rss as f64 / (*beam_rss).max(1) as f64,
                cpu,
                if *rss <= 15 * 1024 { "met" } else { "NOT met" },
                if *cpu <= 0.5 { "met" } else { "NOT met" },
            );
        }
    });
}
