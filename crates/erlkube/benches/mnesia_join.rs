//! Time from a new pod's node start until its Mnesia replicas are loaded
//! and it is ready. Two pods of the test bed run a plain `erl` node (OTP
//! 25, `-connect_all true` as a release runs) with the real `erlkube
//! agent` beside it, configured with `ERLKUBE_MNESIA_TABLES=cache`; table
//! `cache` holds `KEYS` keys (`{cache, I, I}`). A trial adds a third pod
//! (new namespace, new IP, new node name) and measures from the moment its
//! `erl` is started until:
//! - erlkube: its agent's `/readyz` answers 200 (discovery, connection to
//!   the quorum, schema merge, `add_table_copy`, `wait_for_tables`),
//!   polled every 20 ms;
//! - the anchor, a mnesiac-style join written in Erlang and run by the new
//!   node itself (no agent, no discovery, peers given): `mnesia:start()`,
//!   `change_config(extra_db_nodes, Peers)`, `add_table_copy(cache,
//!   node(), ram_copies)`, `wait_for_tables([cache], infinity)`.
//!
//! Both variants pay the same node start (`erl` booting in its pod, shown
//! apart). The pod is then killed and the agents of the two first pods
//! remove it from the schema (`mnesia.removal_grace` 1 s), so every trial
//! starts from the same two-member schema.
//!
//! A program: `cargo bench -p erlkube --bench mnesia_join` (root).
//! `MNESIA_JOIN_TRIALS` sets the trials per variant and size (default 3);
//! `MNESIA_JOIN_KEYS` the sizes (default `10000,1000000`).

use std::time::{Duration, Instant};

use erlkube_testbed::harness::{agent_command, wait_until};
use erlkube_testbed::process::Guard;
use erlkube_testbed::{Bed, BedConfig, ErlRuntime, PodErl};

/// Liveness bound of every wait.
const LIMIT: Duration = Duration::from_secs(600);
const HTTP_PORT: u16 = 9568;

fn spawn_agent(bed: &Bed, index: u32) -> Guard {
    let http = format!("0.0.0.0:{HTTP_PORT}");
    let mut cmd = agent_command(bed, index, env!("CARGO_BIN_EXE_erlkube"), &http);
    cmd.env("ERLKUBE_AGENT_WAIT_INTERVAL", "100ms")
        .env("ERLKUBE_DISCOVERY_INTERVAL", "500ms")
        .env("ERLKUBE_DISCOVERY_TIMEOUT", "1s")
        .env("ERLKUBE_FORMATION_REMOVAL_GRACE", "1s")
        .env("ERLKUBE_MNESIA_TABLES", "cache")
        .env("ERLKUBE_MNESIA_REMOVAL_GRACE", "1s");
    Guard::spawn(&mut cmd).expect("spawn erlkube agent")
}

async fn wait<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_until(what, LIMIT, Duration::from_millis(20), String::new, f).await;
}

fn readyz(bed: &Bed, index: u32) -> impl std::future::Future<Output = bool> {
    let addr = std::net::SocketAddr::new(std::net::IpAddr::V4(bed.pod(index).ipv4), HTTP_PORT);
    async move {
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: agent\r\n\r\n")
                .is_err()
            {
                return false;
            }
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out.starts_with("HTTP/1.1 200")
        })
        .await
        .unwrap_or(false)
    }
}

async fn eval(erl: &PodErl, expr: &str) -> String {
    erl.eval(expr, LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{expr} on {}: {e}\n{}", erl.name(), erl.output()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Erlkube,
    Anchor,
}

/// One join; returns (node start, node start to ready).
async fn trial(bed: &mut Bed, first: &[u32], v: Variant) -> (Duration, Duration) {
    let started = Instant::now();
    let new = bed.add_pods(1).expect("new pod")[0];
    let booted = started.elapsed();
    let agent = match v {
        Variant::Erlkube => {
            let a = spawn_agent(bed, new);
            wait("the new pod ready", || readyz(bed, new)).await;
            Some(a)
        }
        Variant::Anchor => {
            let peers: Vec<String> = first
                .iter()
                .map(|i| format!("'{}'", bed.pod(*i).node_name))
                .collect();
            let r = eval(
                bed.pod(new).beam(),
                &format!(
                    "ok = mnesia:start(), {{ok, _}} = mnesia:change_config(extra_db_nodes, [{}]), {{atomic, ok}} = mnesia:add_table_copy(cache, node(), ram_copies), ok = mnesia:wait_for_tables([cache], infinity), done",
                    peers.join(", ")
                ),
            )
            .await;
            assert_eq!(r, "done");
            None
        }
    };
    let took = started.elapsed();
    let size = eval(bed.pod(new).beam(), "mnesia:table_info(cache, size)").await;
    drop(agent);
    bed.unpublish(new).expect("unpublish");
    bed.kill_pod(new).expect("kill");
    // Back to the two-member schema (the first pods' agents remove it).
    let p0 = bed.pod(first[0]).beam().clone();
    wait("the schema back to two members", || {
        let p0 = p0.clone();
        async move {
            p0.eval("length(mnesia:system_info(db_nodes))", LIMIT)
                .await
                .is_ok_and(|n| n == "2")
        }
    })
    .await;
    let want = eval(&p0, "mnesia:table_info(cache, size)").await;
    assert_eq!(size, want, "the new replica held every key");
    (booted, took)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let trials: usize = std::env::var("MNESIA_JOIN_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let sizes: Vec<u64> = std::env::var("MNESIA_JOIN_KEYS")
        .unwrap_or_else(|_| "10000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!("load average at start: {}", loadavg());
    let mut bed = Bed::new(BedConfig {
        erl: ErlRuntime {
            connect_all: true,
            ..ErlRuntime::default()
        },
        ..BedConfig::default()
    })
    .expect("test bed");
    let first = bed.add_pods(2).expect("pods");
    let _agents: Vec<Guard> = first.iter().map(|i| spawn_agent(&bed, *i)).collect();
    for i in &first {
        wait("the first pods ready", || readyz(&bed, *i)).await;
    }
    let p0 = bed.pod(first[0]).beam().clone();
    for keys in sizes {
        let filled = Instant::now();
        let r = eval(
            &p0,
            &format!(
                "{{atomic, ok}} = mnesia:clear_table(cache), lists:foreach(fun(B) -> {{atomic, ok}} = mnesia:transaction(fun() -> lists:foreach(fun(I) -> mnesia:write({{cache, I, I}}) end, lists:seq(B, min(B + 9999, {keys}))) end) end, lists:seq(1, {keys}, 10000)), mnesia:table_info(cache, size)"
            ),
        )
        .await;
        assert_eq!(r, keys.to_string());
        println!(
            "{keys} keys written in {:.1} s",
            filled.elapsed().as_secs_f64()
        );
        let mut results = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
        for t in 0..trials {
            for (k, v) in [Variant::Erlkube, Variant::Anchor].into_iter().enumerate() {
                let (boot, took) = trial(&mut bed, &first, v).await;
                let name = if v == Variant::Erlkube {
                    "erlkube agent"
                } else {
                    "mnesiac-style join in Erlang"
                };
                println!(
                    "{keys} keys, {name}, trial {}: node start {:.0} ms, node start -> replicas loaded and ready {:.0} ms",
                    t + 1,
                    ms(boot),
                    ms(took)
                );
                results[k].0.push(ms(boot));
                results[k].1.push(ms(took));
            }
        }
        let ours = median(&mut results[0].1);
        let anchor = median(&mut results[1].1);
        println!(
            "{keys} keys: median node start -> ready: erlkube agent {ours:.0} ms, mnesiac-style join {anchor:.0} ms; ratio {:.2}x (node start alone: median {:.0} ms)",
            ours / anchor,
            median(&mut results[0].0)
        );
    }
    println!("load average at end: {}", loadavg());
}
