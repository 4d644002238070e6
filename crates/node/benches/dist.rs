//! Distribution throughput and latency: the Rust node against OTP, with
//! BEAM<->BEAM measured in the same run as the anchor. Prints ratios.
//!
//!   cargo bench -p erlkube-node --bench dist
//!
//! Needs `erl` and `epmd` (a private epmd on a free port is started).

use std::process::Stdio;
use std::time::{Duration, Instant};

use erlkube_etf::Term;
use erlkube_node::{Cookie, Node, NodeConfig};
use tokio::process::{Child, Command};

const N: usize = 200_000;
/// One-way throughput is the best of this many rounds, on both sides
/// (the first round also warms buffers and allocators).
const ONE_WAY_ROUNDS: usize = 3;
const ROUND_TRIPS: usize = 20_000;
const HANDSHAKES: usize = 200;
const IDLE_CONNECTIONS: usize = 200;
const COOKIE: &str = "bench";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A BEAM node with registered `sink` (counts {hello, _} after {start, From, N},
/// then sends {done, N}) and `echo` ({Pid, M} -> Pid ! M).
const SERVER: &str = "register(sink, spawn(fun() -> L = fun Loop() -> receive {start, From, N} -> \
    C = fun Count(0) -> From ! {done, N}; Count(K) -> receive {hello, _} -> Count(K - 1) end end, C(N), Loop() end end, L() end)), \
    register(echo, spawn(fun() -> E = fun Echo() -> receive {P, M} -> P ! M, Echo() end end, E() end))";

fn erl(epmd: u16, name: &str, args: &[&str]) -> Command {
    let mut c = Command::new("erl");
    c.env("ERL_EPMD_PORT", epmd.to_string())
        .args(["-noshell", "-name", name, "-setcookie", COOKIE])
        .args(["-start_epmd", "false"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

async fn erl_eval(epmd: u16, name: &str, expr: &str) -> String {
    erl_eval_args(epmd, name, &[], expr).await
}

async fn erl_eval_args(epmd: u16, name: &str, args: &[&str], expr: &str) -> String {
    let full = format!("{expr}, init:stop().");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-eval", &full]);
    let out = erl(epmd, name, &all).output().await.unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_owned()
}

fn secs(s: &str) -> f64 {
    s.trim()
        .parse::<f64>()
        .unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

async fn rust_node(name: &str, epmd: u16) -> Node {
    let mut c = NodeConfig::new(
        format!("{name}_{}@127.0.0.1", std::process::id()),
        Cookie::new(COOKIE),
    );
    c.epmd_port = epmd;
    Node::start(c).await.unwrap()
}

fn sink(node: &Node, name: &str) {
    let mut p = node.spawn_registered(name).unwrap();
    let n = node.clone();
    tokio::spawn(async move {
        while let Some(m) = p.recv().await {
            if let Some([Term::Atom(a), Term::Pid(from), Term::Integer(count)]) = m.as_tuple() {
                if a.as_str() == "start" {
                    let mut left = *count;
                    while left > 0 {
                        p.recv().await.unwrap();
                        left -= 1;
                    }
                    n.send(
                        from,
                        Term::tuple(vec![Term::atom("done"), Term::Integer(*count)]),
                    )
                    .await
                    .unwrap();
                }
            }
        }
    });
}

fn echo(node: &Node) {
    let mut p = node.spawn_registered("echo").unwrap();
    let n = node.clone();
    tokio::spawn(async move {
        while let Some(m) = p.recv().await {
            if let Some([Term::Pid(to), msg]) = m.as_tuple() {
                let _ = n.send(to, msg.clone()).await;
            }
        }
    });
}

fn hello(i: usize) -> Term {
    Term::tuple(vec![Term::atom("hello"), Term::Integer(i as i64)])
}

/// Rust sends N to `sink` on `target`, waits for {done, N}.
async fn rust_one_way(node: &Node, target: &str) -> f64 {
    let mut me = node.spawn_process();
    let start_msg = Term::tuple(vec![
        Term::atom("start"),
        Term::Pid(me.pid().clone()),
        Term::Integer(N as i64),
    ]);
    node.send_named(me.pid(), target, "sink", start_msg)
        .await
        .unwrap();
    let t = Instant::now();
    for i in 0..N {
        node.send_named(me.pid(), target, "sink", hello(i))
            .await
            .unwrap();
    }
    me.recv().await.unwrap();
    t.elapsed().as_secs_f64()
}

/// The same round trips from a process living in a spawned task (a worker
/// thread of the runtime), where a service's processes normally run; the
/// plain version runs on the thread that `block_on`s `main`.
async fn rust_round_trips_in_task(node: &Node, target: &str) -> f64 {
    let (node, target) = (node.clone(), target.to_owned());
    tokio::spawn(async move { rust_round_trips(&node, &target).await })
        .await
        .unwrap()
}

async fn rust_round_trips(node: &Node, target: &str) -> f64 {
    let mut me = node.spawn_process();
    let t = Instant::now();
    for i in 0..ROUND_TRIPS {
        let m = Term::tuple(vec![Term::Pid(me.pid().clone()), Term::Integer(i as i64)]);
        node.send_named(me.pid(), target, "echo", m).await.unwrap();
        me.recv().await.unwrap();
    }
    t.elapsed().as_secs_f64()
}

/// BEAM code timing N one-way messages to {sink, Target}, best of
/// `ONE_WAY_ROUNDS` rounds in the same node; prints seconds.
fn beam_one_way(target: &str) -> String {
    format!(
        "T = '{target}', pong = net_adm:ping(T), \
         Run = fun() -> {{sink, T}} ! {{start, self(), {N}}}, T0 = erlang:monotonic_time(), \
         lists:foreach(fun(I) -> {{sink, T}} ! {{hello, I}} end, lists:seq(1, {N})), receive {{done, _}} -> ok end, \
         (erlang:monotonic_time() - T0) / erlang:convert_time_unit(1, second, native) end, \
         io:format(\"~f~n\", [lists:min([Run() || _ <- lists:seq(1, {ONE_WAY_ROUNDS})])])"
    )
}

/// Rust one-way, best of `ONE_WAY_ROUNDS` rounds (as the anchor).
async fn rust_one_way_best(node: &Node, target: &str) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..ONE_WAY_ROUNDS {
        best = best.min(rust_one_way(node, target).await);
    }
    best
}

fn beam_round_trips(target: &str) -> String {
    format!(
        "T = '{target}', pong = net_adm:ping(T), T0 = erlang:monotonic_time(), \
         lists:foreach(fun(I) -> {{echo, T}} ! {{self(), I}}, receive I -> ok end end, lists:seq(1, {ROUND_TRIPS})), \
         io:format(\"~f~n\", [(erlang:monotonic_time() - T0) / erlang:convert_time_unit(1, second, native)])"
    )
}

fn beam_handshakes(target: &str) -> String {
    format!(
        "T = '{target}', T0 = erlang:monotonic_time(), \
         lists:foreach(fun(_) -> (fun C() -> case net_kernel:connect_node(T) of true -> ok; false -> C() end end)(), \
         erlang:disconnect_node(T), \
         (fun W() -> case lists:member(T, nodes()) of true -> timer:sleep(1), W(); false -> ok end end)() end, \
         lists:seq(1, {HANDSHAKES})), \
         io:format(\"~f~n\", [(erlang:monotonic_time() - T0) / erlang:convert_time_unit(1, second, native)])"
    )
}

async fn wait_pong(node: &Node, target: &str) {
    for _ in 0..200 {
        if node.ping(target).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{target} never answered");
}

/// VmRSS of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Opens `k` hidden connections to `peer` at `addr`, each through the
/// sans-IO handshake on a raw socket, and keeps them idle.
async fn raw_connections(
    addr: std::net::SocketAddr,
    peer: &str,
    k: usize,
    tag: &str,
) -> Vec<tokio::net::TcpStream> {
    use erlkube_proto::dist::handshake::{HandshakeConfig, Initiator, Side};
    use erlkube_proto::dist::HandshakeEvent;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut out = Vec::with_capacity(k);
    for i in 0..k {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = format!("idle{tag}{i}_{}@127.0.0.1", std::process::id());
        let cfg = HandshakeConfig::new(name, Cookie::new(COOKIE), 1 + i as u32).hidden();
        let now = std::time::Instant::now();
        let mut hs = Initiator::new(cfg, peer, 12345 + i as u32, now);
        let mut buf = [0u8; 1024];
        loop {
            while let Some(t) = hs.poll_transmit() {
                s.write_all(&t).await.unwrap();
            }
            if let Some(HandshakeEvent::Established(_)) = hs.poll_event() {
                break;
            }
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "peer closed during the handshake");
            hs.handle_input(&buf[..n], now).unwrap();
        }
        out.push(s);
    }
    out
}

/// The runtime `#[tokio::main]` gives (multi-thread, one worker per CPU,
/// this future on the main thread), which the figures are for;
/// `DIST_BENCH_RUNTIME=current_thread` runs everything on one thread
/// instead (for comparison only).
fn main() {
    let rt = if std::env::var("DIST_BENCH_RUNTIME").as_deref() == Ok("current_thread") {
        println!("runtime: current_thread");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    rt.unwrap().block_on(run());
}

async fn run() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let epmd_port = free_port();
    let _epmd: Child = Command::new("epmd")
        .args(["-port", &epmd_port.to_string()])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = std::process::id();
    let beam_y = format!("bench_y_{pid}@127.0.0.1");
    let y = erl(epmd_port, &beam_y, &["-eval", SERVER])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // erl execs the emulator, so this is the BEAM's pid.
    let y_pid = y.id().unwrap();

    let a = rust_node("bench_a", epmd_port).await;
    let b = rust_node("bench_b", epmd_port).await;
    sink(&b, "sink");
    echo(&b);
    wait_pong(&a, &beam_y).await;
    a.ping(b.name()).await.unwrap();

    // DIST_BENCH_PROFILE=1: only Rust->Rust one-way, repeated (for a
    // profiler; no anchor, no ratio); DIST_BENCH_PROFILE=rtt: only
    // Rust<->Rust round trips.
    if std::env::var("DIST_BENCH_PROFILE").as_deref() == Ok("rtt") {
        for _ in 0..5 {
            let s = rust_round_trips(&a, b.name()).await;
            let t = rust_round_trips_in_task(&a, b.name()).await;
            println!(
                "Rust<->Rust {:>8.1} us per round trip (main thread), {:>8.1} us (spawned task)",
                s / ROUND_TRIPS as f64 * 1e6,
                t / ROUND_TRIPS as f64 * 1e6
            );
        }
        return;
    }
    if std::env::var_os("DIST_BENCH_PROFILE").is_some() {
        for _ in 0..10 {
            let s = rust_one_way(&a, b.name()).await;
            println!("Rust->Rust {:>10.0} msg/s", N as f64 / s);
        }
        return;
    }

    // The Rust side of "memory per idle connection" is measured first,
    // before the throughput runs leave freed memory in the allocator
    // that new connections would reuse (the delta then reads ~0).
    let me = std::process::id();
    let before = rss_kib(me);
    let held_a = raw_connections(
        ([127, 0, 0, 1], a.port()).into(),
        a.name(),
        IDLE_CONNECTIONS,
        "a",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rust_per = (rss_kib(me).saturating_sub(before)) as f64 / IDLE_CONNECTIONS as f64;
    drop(held_a);

    // One-way small messages.
    let beam_beam = secs(
        &erl_eval(
            epmd_port,
            &format!("bench_x1_{pid}@127.0.0.1"),
            &beam_one_way(&beam_y),
        )
        .await,
    );
    let rust_rust = rust_one_way_best(&a, b.name()).await;
    let beam_rust = secs(
        &erl_eval(
            epmd_port,
            &format!("bench_x2_{pid}@127.0.0.1"),
            &beam_one_way(b.name()),
        )
        .await,
    );
    let rust_beam = rust_one_way_best(&a, &beam_y).await;
    let rate = |s: f64| N as f64 / s;
    println!("one-way small messages ({N} x {{hello, I}}), msg/s:");
    println!("  BEAM->BEAM (anchor) {:>10.0}", rate(beam_beam));
    for (label, s) in [
        ("Rust->Rust", rust_rust),
        ("BEAM->Rust", beam_rust),
        ("Rust->BEAM", rust_beam),
    ] {
        println!(
            "  {label:<19} {:>10.0}  ratio {:.2}",
            rate(s),
            rate(s) / rate(beam_beam)
        );
    }

    // Ping-pong round trips.
    let bb = secs(
        &erl_eval(
            epmd_port,
            &format!("bench_x3_{pid}@127.0.0.1"),
            &beam_round_trips(&beam_y),
        )
        .await,
    );
    let rr = rust_round_trips(&a, b.name()).await;
    let rt = rust_round_trips_in_task(&a, b.name()).await;
    let rb = rust_round_trips(&a, &beam_y).await;
    let br = secs(
        &erl_eval(
            epmd_port,
            &format!("bench_x4_{pid}@127.0.0.1"),
            &beam_round_trips(b.name()),
        )
        .await,
    );
    let rtt = |s: f64| s / ROUND_TRIPS as f64 * 1e6;
    println!("ping-pong round trips ({ROUND_TRIPS}), microseconds each:");
    println!("  BEAM<->BEAM (anchor) {:>8.1}", rtt(bb));
    for (label, s) in [
        ("Rust<->Rust", rr),
        ("Rust<->Rust in task", rt),
        ("Rust->BEAM echo", rb),
        ("BEAM->Rust echo", br),
    ] {
        println!(
            "  {label:<20} {:>8.1}  ratio (anchor/this) {:.2}",
            rtt(s),
            bb / s
        );
    }

    // Handshakes: connect + disconnect, from hidden nodes on both sides
    // (a visible node makes the peer's `global` write to it right after
    // nodeup, which auto-connects back when the link is already gone and
    // collides with the next connect).
    let bh = secs(
        &erl_eval_args(
            epmd_port,
            &format!("bench_x5_{pid}@127.0.0.1"),
            &["-hidden"],
            &beam_handshakes(&beam_y),
        )
        .await,
    );
    let mut hc = NodeConfig::new(format!("bench_h_{pid}@127.0.0.1"), Cookie::new(COOKIE));
    hc.epmd_port = epmd_port;
    hc.hidden = true;
    let a = Node::start(hc).await.unwrap();
    let t = Instant::now();
    let mut events = a.subscribe();
    let mut failed = 0;
    for _ in 0..HANDSHAKES {
        // As on the BEAM, a reconnect racing the peer's teardown of the
        // previous connection can fail; retry until it succeeds.
        while let Err(e) = a.connect(&beam_y).await {
            tracing::debug!(error = %e, "reconnect failed");
            failed += 1;
        }
        a.disconnect(&beam_y);
        loop {
            if let Ok(erlkube_node::NodeEvent::NodeDown { node, .. }) = events.recv().await {
                if node == beam_y {
                    break;
                }
            }
        }
    }
    let rh = t.elapsed().as_secs_f64();
    let per = |s: f64| s / HANDSHAKES as f64 * 1e3;
    println!("handshake + disconnect ({HANDSHAKES}), milliseconds each:");
    println!("  BEAM->BEAM (anchor) {:>8.3}", per(bh));
    println!(
        "  Rust->BEAM          {:>8.3}  ratio (anchor/this) {:.2}  ({failed} retried)",
        per(rh),
        bh / rh
    );

    // Memory per idle connection (VmRSS delta / connections), hidden peers
    // that completed the handshake and then stay silent.
    let y_port = erlkube_node::epmd::port_please(
        "127.0.0.1",
        epmd_port,
        beam_y.split('@').next().unwrap(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let before = rss_kib(y_pid);
    let held_y = raw_connections(
        ([127, 0, 0, 1], y_port).into(),
        &beam_y,
        IDLE_CONNECTIONS,
        "y",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let beam_per = (rss_kib(y_pid).saturating_sub(before)) as f64 / IDLE_CONNECTIONS as f64;
    println!("memory per idle connection ({IDLE_CONNECTIONS} hidden peers), KiB of VmRSS:");
    println!("  BEAM (anchor)       {beam_per:>8.1}");
    println!(
        "  Rust node           {rust_per:>8.1}  ratio (anchor/this) {:.2}",
        beam_per / rust_per.max(0.1)
    );
    drop(held_y);
}
