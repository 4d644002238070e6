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
use erlkube_testkit::{process_cpu_secs, unique_name, ErlNode, OtpEpmd};

const COOKIE: &str = "bench_rpc";
const N: usize = 20_000;
const PAR: usize = 8;

/// A minimal gen_server-protocol echo on the BEAM (what the Rust
/// `echo_server` does): `{'$gen_call', From, Req}` -> `{echo, Req}`.
const ECHO_SERVER: &str = "register(echo_server, spawn(fun() -> L = fun Loop() -> receive \
    {'$gen_call', From, Req} -> gen:reply(From, {echo, Req}), Loop() end end, L() end))";

/// One figure: calls/s, and the CPU microseconds per call that the
/// caller's and the server's OS processes used while it ran.
#[derive(Clone, Copy)]
struct Rate {
    calls: f64,
    caller_us: f64,
    server_us: f64,
}

/// Runs `f` (which makes `calls` calls) and charges the CPU that processes
/// `caller` and `server` used meanwhile to each call.
fn measured(caller: u32, server: u32, calls: usize, f: impl FnOnce() -> f64) -> Rate {
    let cpu = |pid| {
        let (u, s) = process_cpu_secs(pid);
        u + s
    };
    let (c0, s0) = (cpu(caller), cpu(server));
    let rate = f();
    let (c1, s1) = (cpu(caller), cpu(server));
    let per = |d: f64| d * 1e6 / calls as f64;
    Rate {
        calls: rate,
        caller_us: per(c1 - c0),
        server_us: per(s1 - s0),
    }
}

/// Calls/s of `Call` (an Erlang fun of no arguments) made `N` times by
/// each of `Par` processes on the BEAM node `b`, served by OS process
/// `server`.
fn beam_rate(b: &ErlNode, server: u32, call: &str, par: usize) -> Rate {
    let expr = format!(
        "F = fun() -> {call} end, Par = {par}, N = {n}, Self = self(), \
         {{T, _}} = timer:tc(fun() -> \
            [spawn_link(fun() -> [F() || _ <- lists:seq(1, N)], Self ! done end) || _ <- lists:seq(1, Par)], \
            [receive done -> ok end || _ <- lists:seq(1, Par)] end), \
         Par * N * 1000000 / T",
        n = N / par
    );
    measured(b.pid(), server, N / par * par, || {
        b.eval_timeout(&expr, Duration::from_secs(300))
            .unwrap_or_else(|e| panic!("bench eval: {e}"))
            .parse()
            .unwrap()
    })
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

fn line(what: &str, rate: Rate, anchor: Rate) {
    println!(
        "{what:<50} {:>8.0} calls/s {:>5.2}x ({:>6.0})  CPU us/call caller {:>5.1} server {:>5.1} ({:.2}x the anchor server's)",
        rate.calls,
        rate.calls / anchor.calls,
        anchor.calls,
        rate.caller_us,
        rate.server_us,
        rate.server_us / anchor.server_us,
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
    // RPC_BENCH_PIN=1: the caller BEAM on CPU 0, the server (the anchor's
    // BEAM, the Rust node) on CPU 1, as pods limited to one CPU each on
    // different machines; the default shares both CPUs among all three.
    let pin = std::env::var("RPC_BENCH_PIN").is_ok_and(|v| v == "1");
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
    if pin {
        erlkube_testkit::cpu::pin_this_thread(0).expect("RPC_BENCH_PIN: CPU 0");
    }
    let a = start("bench_a");
    if pin {
        erlkube_testkit::cpu::pin_this_thread(1).expect("RPC_BENCH_PIN: CPU 1");
    }
    let b = start("bench_b");
    // RPC_BENCH_WORKERS=N: the Rust node's runtime workers (default 2, or
    // the CPUs this process may use when pinned: 1).
    let workers = std::env::var("RPC_BENCH_WORKERS")
        .ok()
        .map(|s| s.parse().expect("RPC_BENCH_WORKERS: a count"))
        .unwrap_or(if pin {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            2
        });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let schedulers = |n: &ErlNode| n.eval("erlang:system_info(schedulers_online)").unwrap();
    println!(
        "set-up: {}; caller BEAM {} schedulers, server BEAM {}, Rust node {workers} worker(s)",
        if pin {
            "pinned (caller on CPU 0, server on CPU 1)"
        } else {
            "shared CPUs"
        },
        schedulers(&a),
        schedulers(&b),
    );
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
    // The OS processes the CPU is charged to: the BEAM server, and this
    // one (the Rust node's).
    let (b_os, me) = (b.pid(), std::process::id());
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
        // RPC_BENCH_CALLERS=N: only that caller count (default 1, then PAR).
        let pars = match std::env::var("RPC_BENCH_CALLERS") {
            Ok(v) => vec![v.parse().expect("RPC_BENCH_CALLERS: a count")],
            Err(_) => vec![1, PAR],
        };
        for par in pars {
            for _ in 0..rounds {
                let a_rate = beam_rate(&a, b_os, &anchor, par);
                let r_rate = beam_rate(&a, me, &call, par);
                line(&format!("{which}, {par} caller(s)"), r_rate, a_rate);
            }
        }
        rust.shutdown();
        return;
    }
    for par in [1, PAR] {
        println!("-- {par} caller(s)");
        // Warm up, then the anchor and the Rust-served figures.
        beam_rate(
            &a,
            b_os,
            &format!("rpc:call('{bn}', erlang, abs, [1])"),
            par,
        );
        let rpc_anchor = beam_rate(
            &a,
            b_os,
            &format!("rpc:call('{bn}', erlang, abs, [1])"),
            par,
        );
        let rpc_rust_proc = beam_rate(&a, me, &format!("rpc:call('{r}', bench, echo, [1])"), par);
        let rpc_rust = beam_rate(&a, me, &format!("rpc:call('{r}', demo, echo, [1])"), par);
        let gen_anchor = beam_rate(
            &a,
            b_os,
            &format!("gen_server:call({{echo_server, '{bn}'}}, x)"),
            par,
        );
        let gen_rust_proc = beam_rate(
            &a,
            me,
            &format!("gen_server:call({{echo_proc, '{r}'}}, x)"),
            par,
        );
        let gen_rust = beam_rate(
            &a,
            me,
            &format!("gen_server:call({{echo_server, '{r}'}}, x)"),
            par,
        );
        let rust_rpc = measured(me, b_os, N / par * par, || {
            rt.block_on({
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
            })
        });
        let rust_gen = measured(me, b_os, N / par * par, || {
            rt.block_on({
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
        if pin {
            println!("(pinned: in the Rust->BEAM rows caller and server share CPU 1)");
        }
    }
    rust.shutdown();
}
