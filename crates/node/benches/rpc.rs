//! RPC and gen_server call rates: BEAM->Rust and Rust->BEAM against
//! BEAM->BEAM measured in the same run (the anchor). Prints calls/s and
//! the ratio to the anchor.
//!
//!   cargo bench -p erlkube-node --bench rpc
//!
//! Needs `erl` and `epmd` (OTP's epmd on a free port is started). Every
//! figure is sequential calls from one caller (latency-bound) and, with
//! `PAR` callers at once, throughput-bound.
//!
//! Each node is its own OS process: the two BEAM nodes are `erl`
//! processes, the Rust node lives in this bench process (which does
//! nothing else while the BEAM calls it). A BEAM serves each call in a
//! process (`rpc:call` spawns one per call; the gen_server is one), so
//! the Rust node is measured the same way, with a Rust *process* serving
//! (`bench:echo/1` registered with `register_async_fn`: a process per
//! call; `echo_proc`: a gen_server loop in a process over its mailbox),
//! and beside it the inline modes (`demo:echo/1`, a synchronous function,
//! and `echo_server`, `serve_gen_server`: answered on the connection's
//! task, no process).

use std::sync::Arc;
use std::time::{Duration, Instant};

use erlkube_etf::Term;
use erlkube_node::{Cookie, GenMessage, Node, NodeConfig};
use erlkube_testkit::{unique_name, ErlNode, OtpEpmd};

const COOKIE: &str = "bench_rpc";
const N: usize = 20_000;
const PAR: usize = 8;

/// A minimal gen_server-protocol echo on the BEAM (what the Rust
/// `echo_server` does): `{'$gen_call', From, Req}` -> `{echo, Req}`.
const ECHO_SERVER: &str = "register(echo_server, spawn(fun() -> L = fun Loop() -> receive \
    {'$gen_call', From, Req} -> gen:reply(From, {echo, Req}), Loop() end end, L() end))";

/// Calls/s of `Call` (an Erlang fun of no arguments) made `N` times by
/// each of `Par` processes on the BEAM node.
fn beam_rate(b: &ErlNode, call: &str, par: usize) -> f64 {
    let expr = format!(
        "F = fun() -> {call} end, Par = {par}, N = {n}, Self = self(), \
         {{T, _}} = timer:tc(fun() -> \
            [spawn_link(fun() -> [F() || _ <- lists:seq(1, N)], Self ! done end) || _ <- lists:seq(1, Par)], \
            [receive done -> ok end || _ <- lists:seq(1, Par)] end), \
         Par * N * 1000000 / T",
        n = N / par
    );
    b.eval_timeout(&expr, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("bench eval: {e}"))
        .parse()
        .unwrap()
}

async fn rust_rate<F, Fut>(par: usize, f: F) -> f64
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let per = N / par;
    let start = Instant::now();
    let tasks: Vec<_> = (0..par)
        .map(|_| {
            let f = f.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    f().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (per * par) as f64 / start.elapsed().as_secs_f64()
}

/// `RPC_BENCH_ONLY=rpc_proc` (or `gen_proc`) runs the anchor and that one
/// BEAM->Rust figure only, `RPC_BENCH_ROUNDS` times (default 1), to profile
/// the Rust node on it.
fn only() -> Option<String> {
    std::env::var("RPC_BENCH_ONLY").ok()
}

fn line(what: &str, rate: f64, anchor: f64) {
    println!(
        "{what:<52} {rate:>10.0} calls/s   {:.2}x BEAM->BEAM ({anchor:.0})",
        rate / anchor
    );
}

/// A gen_server running as a Rust process: its loop takes each
/// `$gen_call` from its mailbox and answers `{echo, Req}` (what
/// `serve_gen_server` answers inline, and the BEAM's `ECHO_SERVER`).
fn gen_server_process(node: &Node, name: &str) {
    let mut p = node.spawn_registered(name).unwrap();
    let n = node.clone();
    tokio::spawn(async move {
        while let Some(m) = p.recv().await {
            if let GenMessage::Call { from, request } = GenMessage::parse(m) {
                let reply = Term::tuple(vec![Term::atom("echo"), request]);
                let _ = n.gen_reply(p.pid(), &from, reply).await;
            }
        }
    });
}

fn main() {
    // RPC_BENCH_WORKERS=N: the Rust node's runtime workers (default 2).
    let workers = std::env::var("RPC_BENCH_WORKERS")
        .ok()
        .map(|s| s.parse().expect("RPC_BENCH_WORKERS: a count"))
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let epmd = OtpEpmd::start().expect("epmd (OTP) must be installed");
    let start = |n: &str| {
        Arc::new(
            ErlNode::builder(&unique_name(n))
                .cookie(COOKIE)
                .epmd_port(epmd.port())
                .start()
                .expect("erl must be installed"),
        )
    };
    let a = start("bench_a");
    let b = start("bench_b");
    let rust = rt.block_on(async {
        let mut c = NodeConfig::new(
            format!("{}@127.0.0.1", unique_name("bench_rust")),
            Cookie::new(COOKIE),
        );
        c.epmd_port = epmd.port();
        // RPC_BENCH_BUSY_POLL_US=N: the Rust node spins N us after a read
        // (`NodeConfig::busy_poll`), as the BEAMs do by default.
        c.busy_poll = std::env::var("RPC_BENCH_BUSY_POLL_US").ok().map(|s| {
            std::time::Duration::from_micros(
                s.parse().expect("RPC_BENCH_BUSY_POLL_US: microseconds"),
            )
        });
        let n = Node::start(c).await.unwrap();
        erlkube_node::demo::install(&n).unwrap();
        // Served by a process per call, as `rpc:call` is on a BEAM.
        n.register_async_fn(
            "bench",
            "echo",
            1,
            |mut args| async move { Ok(args.remove(0)) },
        );
        gen_server_process(&n, "echo_proc");
        n
    });
    let r = rust.name().to_owned();
    let bn = b.node_name().to_owned();
    b.eval(ECHO_SERVER).unwrap();
    a.eval(&format!("net_adm:ping('{bn}'), net_adm:ping('{r}')"))
        .unwrap();
    rt.block_on(rust.connect(&bn)).unwrap();

    println!("N = {N} calls per figure; 1 caller, then {PAR} callers at once");
    if let Some(which) = only() {
        let rounds: usize = std::env::var("RPC_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let (anchor, call) = match which.as_str() {
            "gen_proc" => (
                format!("gen_server:call({{echo_server, '{bn}'}}, x)"),
                format!("gen_server:call({{echo_proc, '{r}'}}, x)"),
            ),
            _ => (
                format!("rpc:call('{bn}', erlang, abs, [1])"),
                format!("rpc:call('{r}', bench, echo, [1])"),
            ),
        };
        for par in [1, PAR] {
            for _ in 0..rounds {
                let a_rate = beam_rate(&a, &anchor, par);
                let r_rate = beam_rate(&a, &call, par);
                line(&format!("{which}, {par} caller(s)"), r_rate, a_rate);
            }
        }
        rust.shutdown();
        return;
    }
    for par in [1, PAR] {
        println!("-- {par} caller(s)");
        // Warm up, then the anchor and the Rust-served figures.
        beam_rate(&a, &format!("rpc:call('{bn}', erlang, abs, [1])"), par);
        let rpc_anchor = beam_rate(&a, &format!("rpc:call('{bn}', erlang, abs, [1])"), par);
        let rpc_rust_proc = beam_rate(&a, &format!("rpc:call('{r}', bench, echo, [1])"), par);
        let rpc_rust = beam_rate(&a, &format!("rpc:call('{r}', demo, echo, [1])"), par);
        let gen_anchor = beam_rate(
            &a,
            &format!("gen_server:call({{echo_server, '{bn}'}}, x)"),
            par,
        );
        let gen_rust_proc = beam_rate(
            &a,
            &format!("gen_server:call({{echo_proc, '{r}'}}, x)"),
            par,
        );
        let gen_rust = beam_rate(
            &a,
            &format!("gen_server:call({{echo_server, '{r}'}}, x)"),
            par,
        );
        let rust_rpc = rt.block_on({
            let rust = rust.clone();
            let bn = bn.clone();
            rust_rate(par, move || {
                let rust = rust.clone();
                let bn = bn.clone();
                async move {
                    let v = rust
                        .rpc_call(
                            &bn,
                            "erlang",
                            "abs",
                            vec![Term::Integer(1)],
                            Duration::from_secs(10),
                        )
                        .await;
                    assert_eq!(v, Ok(Term::Integer(1)));
                }
            })
        });
        let rust_gen = rt.block_on({
            let rust = rust.clone();
            let bn = bn.clone();
            rust_rate(par, move || {
                let rust = rust.clone();
                let bn = bn.clone();
                async move {
                    let v = rust
                        .gen_call(
                            ("echo_server", bn.as_str()),
                            Term::atom("x"),
                            Duration::from_secs(10),
                        )
                        .await;
                    assert!(v.is_ok());
                }
            })
        });
        line("rpc:call  BEAM->BEAM (anchor)", rpc_anchor, rpc_anchor);
        line(
            "rpc:call  BEAM->Rust process (bench:echo/1)",
            rpc_rust_proc,
            rpc_anchor,
        );
        line(
            "rpc:call  BEAM->Rust inline (demo:echo/1)",
            rpc_rust,
            rpc_anchor,
        );
        line("rpc_call  Rust->BEAM (erlang:abs/1)", rust_rpc, rpc_anchor);
        line(
            "gen_server:call BEAM->BEAM (anchor)",
            gen_anchor,
            gen_anchor,
        );
        line(
            "gen_server:call BEAM->Rust process (echo_proc)",
            gen_rust_proc,
            gen_anchor,
        );
        line(
            "gen_server:call BEAM->Rust inline (echo_server)",
            gen_rust,
            gen_anchor,
        );
        line("gen_call  Rust->BEAM (echo_server)", rust_gen, gen_anchor);
    }
    rust.shutdown();
}
