//! TLS distribution throughput and set-up time against OTP's
//! `inet_tls_dist`, with BEAM->BEAM over TLS measured in the same run as
//! the anchor. Every node is its own OS process: the receiving Rust node is
//! this program re-run as a child (`TLS_BENCH_ROLE=sink`), the BEAM nodes
//! are `erl -proto_dist inet_tls -ssl_dist_optfile FILE`. Certificates are
//! made at start (rcgen, one CA, mutual TLS with verify_peer, TLS 1.2 as
//! OTP's distribution default). Prints rates and ratios.
//!
//!   cargo bench -p erlkube-node --bench tls
//!
//! Needs `erl` and `epmd` (a private epmd on a free port is started).

#[path = "../tests/events/mod.rs"]
mod events;

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use erlkube_etf::Term;
use erlkube_node::{Cookie, Node, NodeConfig, TlsConfig};
use erlkube_testkit::tls::{Ca, TlsDir};
use tokio::process::{Child, Command};

const N: usize = 200_000;
/// Best of this many rounds, on every side.
const ROUNDS: usize = 3;
const HANDSHAKES: usize = 100;
const COOKIE: &str = "tlsbench";
const HOSTS: &[&str] = &["localhost", "127.0.0.1"];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A BEAM `sink`: counts `{hello, _}` after `{start, From, N}`, then sends
/// `{done, N}`.
const SINK: &str = "register(sink, spawn(fun() -> L = fun Loop() -> receive {start, From, N} -> \
    C = fun Count(0) -> From ! {done, N}; Count(K) -> receive {hello, _} -> Count(K - 1) end end, C(N), Loop() end end, L() end))";

fn erl(epmd: u16, name: &str, optfile: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("erl");
    c.env("ERL_EPMD_PORT", epmd.to_string())
        .args(["-noshell", "-name", name, "-setcookie", COOKIE])
        .args(["-start_epmd", "false", "-proto_dist", "inet_tls"])
        .arg("-ssl_dist_optfile")
        .arg(optfile)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

async fn erl_eval(epmd: u16, name: &str, optfile: &Path, args: &[&str], expr: &str) -> String {
    let full = format!("{expr}, init:stop().");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-eval", &full]);
    let out = erl(epmd, name, optfile, &all).output().await.unwrap();
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

fn config(name: &str, epmd: u16, optfile: &Path) -> NodeConfig {
    let mut c = NodeConfig::new(name, Cookie::new(COOKIE));
    c.epmd_port = epmd;
    c.tls = Some(TlsConfig::from_optfile(optfile).unwrap());
    c
}

fn hello(i: usize) -> Term {
    Term::tuple(vec![Term::atom("hello"), Term::Integer(i as i64)])
}

/// BEAM code timing N one-way messages to {sink, Target}, best of ROUNDS.
fn beam_one_way(target: &str) -> String {
    format!(
        "T = '{target}', pong = net_adm:ping(T), \
         Run = fun() -> {{sink, T}} ! {{start, self(), {N}}}, T0 = erlang:monotonic_time(), \
         lists:foreach(fun(I) -> {{sink, T}} ! {{hello, I}} end, lists:seq(1, {N})), receive {{done, _}} -> ok end, \
         (erlang:monotonic_time() - T0) / erlang:convert_time_unit(1, second, native) end, \
         io:format(\"~f~n\", [lists:min([Run() || _ <- lists:seq(1, {ROUNDS})])])"
    )
}

/// BEAM code timing HANDSHAKES connect + disconnect to Target (hidden).
fn beam_handshakes(target: &str) -> String {
    format!(
        "T = '{target}', T0 = erlang:monotonic_time(), \
         lists:foreach(fun(_) -> (fun C() -> case net_kernel:connect_node(T) of true -> ok; false -> C() end end)(), \
         erlang:disconnect_node(T), \
         (fun W() -> case lists:member(T, nodes(hidden)) of true -> timer:sleep(1), W(); false -> ok end end)() end, \
         lists:seq(1, {HANDSHAKES})), \
         io:format(\"~f~n\", [(erlang:monotonic_time() - T0) / erlang:convert_time_unit(1, second, native)])"
    )
}

/// Rust sends N to `sink` on `target`, waits for {done, N}; best of ROUNDS.
async fn rust_one_way(node: &Node, target: &str) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let mut me = node.spawn_process();
        let start = Term::tuple(vec![
            Term::atom("start"),
            Term::Pid(me.pid().clone()),
            Term::Integer(N as i64),
        ]);
        node.send_named(me.pid(), target, "sink", start)
            .await
            .unwrap();
        let t = Instant::now();
        for i in 0..N {
            node.send_named(me.pid(), target, "sink", hello(i))
                .await
                .unwrap();
        }
        me.recv().await.unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

/// The child process: a Rust TLS node with `sink`, until stdin closes.
async fn sink_role() {
    let name = std::env::var("TLS_BENCH_NAME").unwrap();
    let epmd: u16 = std::env::var("TLS_BENCH_EPMD").unwrap().parse().unwrap();
    let optfile = std::env::var("TLS_BENCH_OPTFILE").unwrap();
    let node = Node::start(config(&name, epmd, Path::new(&optfile)))
        .await
        .unwrap();
    let mut p = node.spawn_registered("sink").unwrap();
    let n = node.clone();
    tokio::spawn(async move {
        while let Some(m) = p.recv().await {
            if let Some([Term::Atom(a), Term::Pid(from), Term::Integer(count)]) = m.as_tuple() {
                if a.as_str() == "start" {
                    for _ in 0..*count {
                        p.recv().await.unwrap();
                    }
                    let done = Term::tuple(vec![Term::atom("done"), Term::Integer(*count)]);
                    n.send(from, done).await.unwrap();
                }
            }
        }
    });
    println!("ready");
    std::io::stdout().flush().unwrap();
    // Until the parent closes stdin.
    tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        while std::io::stdin().lock().read_line(&mut s).unwrap_or(0) > 0 {}
    })
    .await
    .unwrap();
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::var("TLS_BENCH_ROLE").as_deref() == Ok("sink") {
        rt.block_on(sink_role());
        return;
    }
    rt.block_on(run());
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

async fn run() {
    let pid = std::process::id();
    let ca = Ca::new("bench CA");
    let dir = TlsDir::new(None, "tlsbench");
    let optfile = dir.node_files("node", &ca.issue(HOSTS), ca.pem(), true, Path::new("/"));
    let epmd_port = free_port();
    let _epmd: Child = Command::new("epmd")
        .args(["-port", &epmd_port.to_string()])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The BEAM sink Y, the Rust sink S (a child process), the Rust sender A.
    let beam_y = format!("tlsbench_y_{pid}@127.0.0.1");
    let _y = erl(epmd_port, &beam_y, &optfile, &["-eval", SINK])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let rust_s = format!("tlsbench_s_{pid}@127.0.0.1");
    let mut s = Command::new(std::env::current_exe().unwrap())
        .env("TLS_BENCH_ROLE", "sink")
        .env("TLS_BENCH_NAME", &rust_s)
        .env("TLS_BENCH_EPMD", epmd_port.to_string())
        .env("TLS_BENCH_OPTFILE", &optfile)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncBufReadExt;
        let out = s.stdout.take().unwrap();
        let mut line = String::new();
        tokio::io::BufReader::new(out)
            .read_line(&mut line)
            .await
            .unwrap();
        assert_eq!(line.trim(), "ready");
    }
    let a = Node::start(config(
        &format!("tlsbench_a_{pid}@127.0.0.1"),
        epmd_port,
        &optfile,
    ))
    .await
    .unwrap();
    wait_pong(&a, &beam_y).await;
    wait_pong(&a, &rust_s).await;

    let beam_beam = secs(
        &erl_eval(
            epmd_port,
            &format!("tlsbench_x1_{pid}@127.0.0.1"),
            &optfile,
            &[],
            &beam_one_way(&beam_y),
        )
        .await,
    );
    let rust_rust = rust_one_way(&a, &rust_s).await;
    let beam_rust = secs(
        &erl_eval(
            epmd_port,
            &format!("tlsbench_x2_{pid}@127.0.0.1"),
            &optfile,
            &[],
            &beam_one_way(&rust_s),
        )
        .await,
    );
    let rust_beam = rust_one_way(&a, &beam_y).await;
    let rate = |s: f64| N as f64 / s;
    println!("one-way small messages over TLS ({N} x {{hello, I}}, best of {ROUNDS}), msg/s:");
    println!("  BEAM->BEAM (anchor) {:>10.0}", rate(beam_beam));
    for (label, t, target) in [
        ("Rust->Rust", rust_rust, "target >= 3"),
        ("BEAM->Rust", beam_rust, "target >= 1"),
        ("Rust->BEAM", rust_beam, "no target"),
    ] {
        println!(
            "  {label:<19} {:>10.0}  ratio {:.2}  ({target})",
            rate(t),
            rate(t) / rate(beam_beam)
        );
    }

    // Connection set-up: TCP + TLS handshake + distribution handshake,
    // then a disconnect, from hidden nodes (as the dist bench).
    let bh = secs(
        &erl_eval(
            epmd_port,
            &format!("tlsbench_x3_{pid}@127.0.0.1"),
            &optfile,
            &["-hidden"],
            &beam_handshakes(&beam_y),
        )
        .await,
    );
    let mut hc = config(&format!("tlsbench_h_{pid}@127.0.0.1"), epmd_port, &optfile);
    hc.hidden = true;
    let h = Node::start(hc).await.unwrap();
    let mut events = h.subscribe();
    let t = Instant::now();
    let mut retried = 0;
    for _ in 0..HANDSHAKES {
        while h.connect(&beam_y).await.is_err() {
            retried += 1;
        }
        h.disconnect(&beam_y);
        events::nodedown(&mut events, &beam_y, Duration::from_secs(10)).await;
    }
    let rh = t.elapsed().as_secs_f64();
    let per = |s: f64| s / HANDSHAKES as f64 * 1e3;
    println!("TLS connection set-up + disconnect ({HANDSHAKES}), milliseconds each:");
    println!("  BEAM->BEAM (anchor) {:>8.3}", per(bh));
    println!(
        "  Rust->BEAM          {:>8.3}  ratio (anchor/this) {:.2}  ({retried} retried)",
        per(rh),
        bh / rh
    );
    drop(s.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(5), s.wait()).await;
}
