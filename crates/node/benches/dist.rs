//! Distribution throughput and latency: the Rust node against OTP, with
//! BEAM<->BEAM measured in the same run as the anchor. Prints ratios.
//!
//!   cargo bench -p erlkube-node --bench dist
//!
//! Needs `erl` and `epmd` (a private epmd on a free port is started).
//!
//! Every node runs in its own OS process, as in a pod: the BEAM nodes are
//! `erl` processes, the serving Rust node is this bench binary started
//! again as a peer (`ERLKUBE_DIST_BENCH_ROLE=node`), and the measuring Rust
//! node lives in the bench process. The old figure with both Rust nodes in
//! one process and one runtime is kept as a secondary line. The floor, a
//! raw TCP ping-pong between this process and a second one
//! (`ERLKUBE_DIST_BENCH_ROLE=tcp-echo`, blocking sockets, `TCP_NODELAY`),
//! is measured in the same run.

#[path = "../tests/events/mod.rs"]
mod events;

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use erlkube_etf::Term;
use erlkube_node::{Cookie, Node, NodeConfig};
use tokio::process::{Child, Command};

const N: usize = 200_000;
/// One-way throughput is the best of this many rounds, on both sides
/// (the first round also warms buffers and allocators).
const ONE_WAY_ROUNDS: usize = 3;
/// Round trips per latency figure (p50 and p99 are over these).
const ROUND_TRIPS: usize = 100_000;
/// Round trips before each measured series (not counted).
const WARM_UP: usize = 2_000;
const HANDSHAKES: usize = 200;
const IDLE_CONNECTIONS: usize = 200;
const COOKIE: &str = "bench";
/// Bytes each way in the raw TCP ping-pong: about what a small
/// distribution message of the echo bench takes on the wire.
const TCP_MSG: usize = 48;
const ROLE: &str = "ERLKUBE_DIST_BENCH_ROLE";

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
    c.busy_poll = busy_poll();
    Node::start(c).await.unwrap()
}

/// `DIST_BENCH_BUSY_POLL_US=N`: both Rust nodes spin N µs after a read
/// (`NodeConfig::busy_poll`), as the BEAM's schedulers do by default.
fn busy_poll() -> Option<Duration> {
    std::env::var("DIST_BENCH_BUSY_POLL_US")
        .ok()
        .map(|s| Duration::from_micros(s.parse().expect("DIST_BENCH_BUSY_POLL_US: microseconds")))
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

/// The runtime of a Rust node process: what `#[tokio::main]` gives
/// (multi-thread, one worker per CPU) unless
/// `DIST_BENCH_RUNTIME=current_thread` (for comparison only);
/// `DIST_BENCH_WORKERS=N` sets the multi-thread runtime's workers.
fn runtime() -> tokio::runtime::Runtime {
    if std::env::var("DIST_BENCH_RUNTIME").as_deref() == Ok("current_thread") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if let Ok(n) = std::env::var("DIST_BENCH_WORKERS") {
            b.worker_threads(n.parse().expect("DIST_BENCH_WORKERS: a number of threads"));
        }
        b.enable_all().build().unwrap()
    }
}

/// Latency figures of a series of round trips, in microseconds.
#[derive(Clone, Copy)]
struct Lat {
    p50: f64,
    p99: f64,
    mean: f64,
}

impl Lat {
    fn of(mut ns: Vec<u64>) -> Lat {
        ns.sort_unstable();
        let n = ns.len().max(1);
        let at = |q: usize| ns[(n * q / 100).min(n - 1)] as f64 / 1e3;
        Lat {
            p50: at(50),
            p99: at(99),
            mean: ns.iter().sum::<u64>() as f64 / n as f64 / 1e3,
        }
    }

    /// Parses "P50 P99 MEAN" in nanoseconds (the BEAM's output).
    fn parse(s: &str) -> Lat {
        let v: Vec<f64> = s
            .split_whitespace()
            .map(|x| {
                x.parse::<f64>()
                    .unwrap_or_else(|_| panic!("not numbers: {s:?}"))
            })
            .collect();
        assert_eq!(v.len(), 3, "expected p50 p99 mean, got {s:?}");
        Lat {
            p50: v[0] / 1e3,
            p99: v[1] / 1e3,
            mean: v[2] / 1e3,
        }
    }
}

// ---------------------------------------------------------------- peers

/// This bench binary, started again in another role.
fn peer(role: &str, extra: &[(&str, String)]) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.env(ROLE, role)
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    c.spawn().unwrap()
}

/// The first line the peer prints (its port, or "ready").
async fn peer_line(child: &mut Child) -> String {
    use tokio::io::AsyncBufReadExt;
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::BufReader::new(out).read_line(&mut line),
    )
    .await
    .expect("peer did not start")
    .unwrap();
    line.trim().to_owned()
}

/// Peer role `node`: a Rust node with `sink` and `echo`, in its own
/// process, until its stdin closes.
fn peer_node() {
    let name = std::env::var("ERLKUBE_DIST_BENCH_NODE").unwrap();
    let epmd: u16 = std::env::var("ERLKUBE_DIST_BENCH_EPMD")
        .unwrap()
        .parse()
        .unwrap();
    let rt = runtime();
    rt.block_on(async {
        let mut c = NodeConfig::new(name, Cookie::new(COOKIE));
        c.epmd_port = epmd;
        c.busy_poll = busy_poll();
        let node = Node::start(c).await.unwrap();
        sink(&node, "sink");
        echo(&node);
        println!("ready");
        std::io::stdout().flush().unwrap();
        // Runs until the bench closes our stdin (or dies). The wait is
        // inside `block_on`: a current-thread runtime runs the node's
        // tasks only while its `block_on` does.
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await;
        node.shutdown();
    });
    drop(rt);
}

use erlkube_testkit::process_cpu_secs as cpu_secs;

/// Peer role `tcp-echo`: accepts one connection and echoes `TCP_MSG`-byte
/// messages until it closes (blocking sockets, `TCP_NODELAY`).
fn peer_tcp_echo() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", l.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    let (mut s, _) = l.accept().unwrap();
    s.set_nodelay(true).unwrap();
    let mut b = [0u8; TCP_MSG];
    while s.read_exact(&mut b).is_ok() {
        if s.write_all(&b).is_err() {
            break;
        }
    }
}

/// The floor: `ROUND_TRIPS` raw TCP ping-pongs with the `tcp-echo` peer
/// from a blocking thread.
async fn tcp_floor() -> Lat {
    let mut child = peer("tcp-echo", &[]);
    let port: u16 = peer_line(&mut child).await.parse().unwrap();
    let lat = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [7u8; TCP_MSG];
        let mut ns = Vec::with_capacity(ROUND_TRIPS);
        for i in 0..WARM_UP + ROUND_TRIPS {
            let t = Instant::now();
            s.write_all(&b).unwrap();
            s.read_exact(&mut b).unwrap();
            if i >= WARM_UP {
                ns.push(t.elapsed().as_nanos() as u64);
            }
        }
        Lat::of(ns)
    })
    .await
    .unwrap();
    drop(child);
    lat
}

// ---------------------------------------------------------------- measures

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

/// Rust one-way, best of `ONE_WAY_ROUNDS` rounds (as the anchor), from a
/// process in a spawned task.
async fn rust_one_way_best(node: &Node, target: &str) -> f64 {
    let (node, target) = (node.clone(), target.to_owned());
    tokio::spawn(async move {
        let mut best = f64::MAX;
        for _ in 0..ONE_WAY_ROUNDS {
            best = best.min(rust_one_way(&node, &target).await);
        }
        best
    })
    .await
    .unwrap()
}

/// `ROUND_TRIPS` round trips through `echo` on `target` from a process
/// living in a spawned task (a worker thread of the runtime), where a
/// service's processes run.
async fn rust_round_trips(node: &Node, target: &str) -> Lat {
    let (node, target) = (node.clone(), target.to_owned());
    tokio::spawn(async move {
        let mut me = node.spawn_process();
        let mut ns = Vec::with_capacity(ROUND_TRIPS);
        for i in 0..WARM_UP + ROUND_TRIPS {
            let m = Term::tuple(vec![Term::Pid(me.pid().clone()), Term::Integer(i as i64)]);
            let t = Instant::now();
            node.send_named(me.pid(), &target, "echo", m).await.unwrap();
            me.recv().await.unwrap();
            if i >= WARM_UP {
                ns.push(t.elapsed().as_nanos() as u64);
            }
        }
        Lat::of(ns)
    })
    .await
    .unwrap()
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

/// BEAM code timing each of `ROUND_TRIPS` round trips through {echo,
/// Target}; prints "p50 p99 mean" in nanoseconds.
fn beam_round_trips(target: &str) -> String {
    format!(
        "T = '{target}', pong = net_adm:ping(T), \
         Loop = fun L(0, Acc) -> Acc; L(I, Acc) -> T0 = erlang:monotonic_time(nanosecond), \
            {{echo, T}} ! {{self(), I}}, receive I -> ok end, \
            L(I - 1, [erlang:monotonic_time(nanosecond) - T0 | Acc]) end, \
         _ = Loop({WARM_UP}, []), S = lists:sort(Loop({ROUND_TRIPS}, [])), Len = length(S), \
         At = fun(Q) -> lists:nth(min(Len, Len * Q div 100 + 1), S) end, \
         io:format(\"~b ~b ~b~n\", [At(50), At(99), lists:sum(S) div Len])"
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

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("node") => return peer_node(),
        Ok("tcp-echo") => return peer_tcp_echo(),
        Ok(other) => panic!("unknown {ROLE}: {other}"),
        Err(_) => {}
    }
    if std::env::var("DIST_BENCH_RUNTIME").as_deref() == Ok("current_thread") {
        println!("runtime: current_thread (bench process and Rust peer)");
    } else if let Ok(n) = std::env::var("DIST_BENCH_WORKERS") {
        println!("runtime: multi-thread, {n} workers (bench process and Rust peer)");
    }
    runtime().block_on(run());
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

    // The serving Rust node, in its own process.
    let rust_b = format!("bench_b_{pid}@127.0.0.1");
    let mut b_proc = peer(
        "node",
        &[
            ("ERLKUBE_DIST_BENCH_NODE", rust_b.clone()),
            ("ERLKUBE_DIST_BENCH_EPMD", epmd_port.to_string()),
        ],
    );
    assert_eq!(peer_line(&mut b_proc).await, "ready");
    let b_pid = b_proc.id().unwrap();

    // The measuring Rust node, and (secondary lines only) a serving node
    // in this same process and runtime.
    let a = rust_node("bench_a", epmd_port).await;
    let c = rust_node("bench_c", epmd_port).await;
    sink(&c, "sink");
    echo(&c);
    wait_pong(&a, &beam_y).await;
    wait_pong(&a, &rust_b).await;
    a.ping(c.name()).await.unwrap();

    // DIST_BENCH_PROFILE=rtt: only Rust<->Rust round trips across
    // processes, repeated (for strace / perf on the peer; no anchor).
    if std::env::var("DIST_BENCH_PROFILE").as_deref() == Ok("rtt") {
        println!("peer pid {b_pid}");
        let me = std::process::id();
        for _ in 0..5 {
            let (p0, m0) = (cpu_secs(b_pid), cpu_secs(me));
            let l = rust_round_trips(&a, &rust_b).await;
            let (p1, m1) = (cpu_secs(b_pid), cpu_secs(me));
            // CPU per round trip on each side (clock ticks of 10 ms, so
            // only meaningful over a whole series).
            let per = |a: f64, b: f64| (b - a) * 1e6 / (WARM_UP + ROUND_TRIPS) as f64;
            println!(
                "Rust<->Rust across processes: p50 {:.1} us, p99 {:.1} us, mean {:.1} us; \
                 CPU us per round trip: echo peer user {:.1} sys {:.1}, measuring process user {:.1} sys {:.1}",
                l.p50,
                l.p99,
                l.mean,
                per(p0.0, p1.0),
                per(p0.1, p1.1),
                per(m0.0, m1.0),
                per(m0.1, m1.1)
            );
        }
        return;
    }
    // DIST_BENCH_PROFILE=rtt-ratio: the round-trip lines the target is
    // about (floor, BEAM anchor, Rust<->Rust across processes), each run
    // three times in turn, with ratios.
    if std::env::var("DIST_BENCH_PROFILE").as_deref() == Ok("rtt-ratio") {
        for round in 1..=3 {
            let floor = tcp_floor().await;
            let bb = Lat::parse(
                &erl_eval(
                    epmd_port,
                    &format!("bench_r{round}_{pid}@127.0.0.1"),
                    &beam_round_trips(&beam_y),
                )
                .await,
            );
            let rr = rust_round_trips(&a, &rust_b).await;
            println!(
                "round {round}: p50/p99 us: floor {:.1}/{:.1} ({:.2}/{:.2}), BEAM {:.1}/{:.1}, \
                 Rust<->Rust {:.1}/{:.1} ({:.2}/{:.2})",
                floor.p50,
                floor.p99,
                floor.p50 / bb.p50,
                floor.p99 / bb.p99,
                bb.p50,
                bb.p99,
                rr.p50,
                rr.p99,
                rr.p50 / bb.p50,
                rr.p99 / bb.p99
            );
        }
        return;
    }
    if std::env::var_os("DIST_BENCH_PROFILE").is_some() {
        println!("peer pid {b_pid}");
        for _ in 0..10 {
            let s = rust_one_way_best(&a, &rust_b).await;
            println!("Rust->Rust {:>10.0} msg/s", N as f64 / s);
        }
        return;
    }

    // Memory per idle connection, measured first on the Rust peer, before
    // the throughput runs leave freed memory in its allocator that new
    // connections would reuse (the delta then reads ~0).
    let b_port = erlkube_node::epmd::port_please(
        "127.0.0.1",
        epmd_port,
        rust_b.split('@').next().unwrap(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let before = rss_kib(b_pid);
    let held_b = raw_connections(
        ([127, 0, 0, 1], b_port).into(),
        &rust_b,
        IDLE_CONNECTIONS,
        "b",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rust_per = (rss_kib(b_pid).saturating_sub(before)) as f64 / IDLE_CONNECTIONS as f64;
    drop(held_b);

    // One-way small messages.
    let beam_beam = secs(
        &erl_eval(
            epmd_port,
            &format!("bench_x1_{pid}@127.0.0.1"),
            &beam_one_way(&beam_y),
        )
        .await,
    );
    let rust_rust = rust_one_way_best(&a, &rust_b).await;
    let beam_rust = secs(
        &erl_eval(
            epmd_port,
            &format!("bench_x2_{pid}@127.0.0.1"),
            &beam_one_way(&rust_b),
        )
        .await,
    );
    let rust_beam = rust_one_way_best(&a, &beam_y).await;
    let rust_rust_same = rust_one_way_best(&a, c.name()).await;
    let rate = |s: f64| N as f64 / s;
    println!("one-way small messages ({N} x {{hello, I}}), msg/s, best of {ONE_WAY_ROUNDS}:");
    println!("  BEAM->BEAM (anchor)       {:>10.0}", rate(beam_beam));
    for (label, s) in [
        ("Rust->Rust", rust_rust),
        ("BEAM->Rust", beam_rust),
        ("Rust->BEAM", rust_beam),
        ("Rust->Rust same process", rust_rust_same),
    ] {
        println!(
            "  {label:<25} {:>10.0}  ratio {:.2}",
            rate(s),
            rate(s) / rate(beam_beam)
        );
    }

    // Round trips: p50 / p99 over ROUND_TRIPS each.
    let floor = tcp_floor().await;
    let bb = Lat::parse(
        &erl_eval(
            epmd_port,
            &format!("bench_x3_{pid}@127.0.0.1"),
            &beam_round_trips(&beam_y),
        )
        .await,
    );
    let rr = rust_round_trips(&a, &rust_b).await;
    let rb = rust_round_trips(&a, &beam_y).await;
    let br = Lat::parse(
        &erl_eval(
            epmd_port,
            &format!("bench_x4_{pid}@127.0.0.1"),
            &beam_round_trips(&rust_b),
        )
        .await,
    );
    let rs = rust_round_trips(&a, c.name()).await;
    println!(
        "round trips ({ROUND_TRIPS} each, after {WARM_UP} not counted), microseconds; \
         ratio = this / anchor (lower is better)"
    );
    println!(
        "  {:<31} {:>8} {:>8} {:>8}   {:>9} {:>9}",
        "", "p50", "p99", "mean", "p50 ratio", "p99 ratio"
    );
    let row = |label: &str, l: Lat| {
        println!(
            "  {label:<31} {:>8.1} {:>8.1} {:>8.1}   {:>9.2} {:>9.2}",
            l.p50,
            l.p99,
            l.mean,
            l.p50 / bb.p50,
            l.p99 / bb.p99
        )
    };
    row("raw TCP ping-pong (floor)", floor);
    row("BEAM<->BEAM (anchor)", bb);
    row("Rust<->Rust", rr);
    row("Rust->BEAM echo", rb);
    row("BEAM->Rust echo", br);
    row("Rust<->Rust same process", rs);
    println!(
        "  Rust<->Rust above the floor: p50 +{:.1} us ({:.2}x the floor)",
        rr.p50 - floor.p50,
        rr.p50 / floor.p50
    );

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
    let h = Node::start(hc).await.unwrap();
    let t = Instant::now();
    let mut events = h.subscribe();
    let mut failed = 0;
    for _ in 0..HANDSHAKES {
        // As on the BEAM, a reconnect racing the peer's teardown of the
        // previous connection can fail; retry until it succeeds.
        while let Err(e) = h.connect(&beam_y).await {
            tracing::debug!(error = %e, "reconnect failed");
            failed += 1;
        }
        h.disconnect(&beam_y);
        events::nodedown(&mut events, &beam_y, Duration::from_secs(10)).await;
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
        "  Rust node process   {rust_per:>8.1}  ratio (anchor/this) {:.2}",
        beam_per / rust_per.max(0.1)
    );
    drop(held_y);
    drop(b_proc);
}
