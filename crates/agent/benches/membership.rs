//! Membership benchmark (a program: `cargo bench -p erlkube-agent --bench
//! membership`; needs erl, uses OTP's epmd on a free port).
//!
//! In one run, against one real `erl` node, the agent in both modes:
//! - events (`agent.node_events = true`, the default) and
//! - the anchor: polling `nodes()` every `formation.check_interval` (1 s,
//!   the default), as the agent did before (`agent.node_events = false`);
//!
//! it measures
//! - lag: a peer's `net_kernel:connect_node/1` to the agent's node returns
//!   `true` at t0; time until `/cluster` lists the peer (and the same for
//!   `erlang:disconnect_node/1` until it is gone); trials start at spread
//!   phases of the 1 s poll;
//! - idle cost: processes spawned on the BEAM node over an idle window
//!   (each RPC of the agent is one `erpc` process there), from the pid
//!   numbers of two probe processes.
//!
//! Env: `MEMBERSHIP_BENCH_TRIALS` (default 10), `MEMBERSHIP_BENCH_IDLE_SECS`
//! (default 10).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use erlkube_agent::AgentConfig;
use erlkube_testkit::{unique_name, ErlNode, OtpEpmd};

const COOKIE: &str = "agent_membership_bench";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[path = "../tests/common/mod.rs"]
mod common;

fn config(node: &str, events: bool) -> AgentConfig {
    let events = events.to_string();
    common::local_config(node, COOKIE, &[("ERLKUBE_AGENT_NODE_EVENTS", &events)])
}

use common::{http_body as get, RunningAgent};

fn until(http: SocketAddr, needle: &str, nodes: &[&ErlNode]) -> Duration {
    let t0 = Instant::now();
    loop {
        let cluster = get(http, "/cluster");
        if cluster.contains(needle) {
            return t0.elapsed();
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let seen: Vec<String> = nodes
                .iter()
                .map(|n| format!("{}: nodes() = {:?}", n.node_name(), n.eval("nodes()")))
                .collect();
            panic!("no {needle} in 60 s; /cluster: {cluster}; {seen:?}");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// The number of the next pid the node hands out.
fn next_pid(n: &ErlNode) -> u64 {
    let text = n.eval("pid_to_list(spawn(fun() -> ok end))").unwrap();
    text.trim_matches('"')
        .trim_matches(|c| c == '<' || c == '>')
        .split('.')
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a pid")
}

struct Run {
    up: Vec<Duration>,
    down: Vec<Duration>,
    idle_spawns: u64,
    subscriptions: u64,
}

fn run(epmd: &OtpEpmd, events: bool, trials: usize, idle: Duration) -> Run {
    let app = ErlNode::builder(&unique_name("bench_app"))
        .epmd_port(epmd.port())
        .cookie(COOKIE)
        .start()
        .expect("erl");
    let peer = ErlNode::builder(&unique_name("bench_peer"))
        .epmd_port(epmd.port())
        .cookie(COOKIE)
        .start()
        .expect("erl");
    let (a, b) = (app.node_name().to_owned(), peer.node_name().to_owned());
    let mut agent = RunningAgent::start(config(&a, events));
    let http = agent.http;
    let mode = if events { "events" } else { "polling" };
    until(http, &format!("\"membership\":\"{mode}\""), &[&app]);
    until(http, "\"visible\":[]", &[&app]);
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for i in 0..trials {
        // Spread the changes over the poll's phase (otherwise each trial
        // starts just after the poll that ended the previous one).
        std::thread::sleep(Duration::from_millis((i as u64 * 379) % 1000));
        assert_eq!(
            peer.eval(&format!("net_kernel:connect_node('{a}')"))
                .unwrap(),
            "true"
        );
        up.push(until(
            http,
            &format!("\"visible\":[\"{b}\"]"),
            &[&app, &peer],
        ));
        assert_eq!(
            app.eval(&format!("erlang:disconnect_node('{b}')")).unwrap(),
            "true"
        );
        down.push(until(http, "\"visible\":[]", &[&app, &peer]));
        // The peer notices the disconnect a little later; a connect_node/1
        // before that answers true on the dying connection.
        let t = Instant::now();
        while peer.eval("nodes()").unwrap() != "[]" {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "peer still connected"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let p0 = next_pid(&app);
    std::thread::sleep(idle);
    let p1 = next_pid(&app);
    // subscribers started over the whole run: 1 unless one was replaced
    // (each start is 3 RPCs and a spawn on the node)
    let subscriptions = agent
        .metric("erlkube_agent_beam_subscriptions_total")
        .unwrap_or(0);
    agent.stop();
    Run {
        up,
        down,
        idle_spawns: p1.saturating_sub(p0 + 1),
        subscriptions,
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("membership: bench");
        return;
    }
    let trials = env_num("MEMBERSHIP_BENCH_TRIALS", 10) as usize;
    let idle = Duration::from_secs(env_num("MEMBERSHIP_BENCH_IDLE_SECS", 10));
    let epmd = OtpEpmd::start().expect("OTP epmd");
    std::env::set_var("ERL_EPMD_PORT", epmd.port().to_string());
    let mut ev = run(&epmd, true, trials, idle);
    let mut poll = run(&epmd, false, trials, idle);
    println!("{trials} trials each; lag = peer's connect_node/disconnect_node returned -> /cluster shows it");
    for (name, r) in [
        ("events (agent.node_events = true)", &mut ev),
        ("anchor: nodes() polled every 1 s", &mut poll),
    ] {
        println!(
            "{name:36} nodeup lag p50 {:?} max {:?}; nodedown lag p50 {:?} max {:?}; processes spawned on the node in {idle:?} idle: {}; subscribers started: {}",
            pct(&mut r.up, 0.5),
            pct(&mut r.up, 1.0),
            pct(&mut r.down, 0.5),
            pct(&mut r.down, 1.0),
            r.idle_spawns,
            r.subscriptions
        );
    }
    println!(
        "ratio events/anchor: nodeup lag p50 {:.4}, nodedown lag p50 {:.4}",
        pct(&mut ev.up, 0.5).as_secs_f64() / pct(&mut poll.up, 0.5).as_secs_f64(),
        pct(&mut ev.down, 0.5).as_secs_f64() / pct(&mut poll.down, 0.5).as_secs_f64(),
    );
}
