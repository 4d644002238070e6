//! erlkube epmd against OTP's epmd, same load generator, same run.
//!
//! Run: `cargo bench -p erlkube-epmd` (builds the `erlkube` and
//! `erlkube-epmd` binaries with the bench profile first, or uses
//! `$ERLKUBE_BIN` and the `erlkube-epmd` beside it). The daemons run as
//! separate processes on free loopback ports: OTP's `epmd -port P` and
//! `erlkube-epmd -port P` (the lean binary a pod runs) measured in full;
//! `erlkube epmd -port P` (the same code in the shared binary) for memory
//! only.
//!
//! Measured, for each daemon:
//! 1. PORT_PLEASE2 requests/s with one node registered (a pod's port
//!    mapper holds one or two) at 1 and 64 concurrent clients, then with
//!    1,000 registered at 1, 64 and 1024 clients; every request on a new
//!    TCP connection (as real clients do: connect, send, read until the
//!    daemon closes).
//! 2. NAMES requests/s with 1,000 registered nodes (64 clients).
//! 3. Resident memory (VmRSS) with 1,000 nodes registered.
//! 4. Connections held open at once: how many are accepted and then served
//!    (a PORT_PLEASE2 answered on each), up to 12,000.
//!
//! For each load phase the daemon's CPU time (from /proc/PID/stat) is read
//! too: on a small shared machine the load generator, not the daemon, is
//! often the limit, and requests per daemon CPU-second shows the daemon's
//! own cost.
//!
//! Prints figures and erlkube/OTP ratios. Takes about a minute.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use erlkube_epmd::{Client, NodeInfo, Registration};
use erlkube_proto::epmd::{Request, NODE_TYPE_NORMAL};
use erlkube_testkit::{free_port, wait_until, ChildGuard, OtpEpmd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PHASE: Duration = Duration::from_secs(3);
const NODES: usize = 1000;

/// The shared `erlkube` binary; the lean `erlkube-epmd` is beside it.
fn erlkube_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ERLKUBE_BIN") {
        return p.into();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args([
            "build",
            "--profile",
            "bench",
            "-p",
            "erlkube",
            "--bin",
            "erlkube",
            "--bin",
            "erlkube-epmd",
        ])
        .status()
        .expect("run cargo build");
    assert!(st.success(), "building the erlkube binary failed");
    // This bench runs from <target>/release/deps/.
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("erlkube")
}

struct Daemon {
    label: &'static str,
    port: u16,
    pid: u32,
    _guard: Option<ChildGuard>,
    _otp: Option<OtpEpmd>,
}

/// `erlkube-epmd -port P` (lean) or `erlkube epmd -port P` (shared).
fn start_erlkube(bin: &PathBuf, lean: bool) -> Daemon {
    let port = free_port();
    let mut cmd;
    if lean {
        cmd = Command::new(bin.with_file_name("erlkube-epmd"));
    } else {
        cmd = Command::new(bin);
        cmd.arg("epmd");
    }
    cmd.args(["-port", &port.to_string()])
        .env_remove("ERL_EPMD_PORT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let g = ChildGuard::spawn(&mut cmd).expect("start erlkube epmd");
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
    }));
    Daemon {
        label: if lean { "erlkube-epmd" } else { "erlkube epmd" },
        port,
        pid: g.id(),
        _guard: Some(g),
        _otp: None,
    }
}

fn start_otp() -> Daemon {
    let e = OtpEpmd::start().expect("start OTP epmd");
    Daemon {
        label: "otp",
        port: e.port(),
        pid: e.pid(),
        _guard: None,
        _otp: Some(e),
    }
}

/// The floor: the least any server can do for one request per
/// connection on this kernel. One thread, blocking sockets: accept, one
/// read, write a fixed PORT2_RESP, close; nothing parsed, nothing looked
/// up. Returns its port and the path of the thread's `stat` (its CPU).
fn start_floor() -> (u16, String) {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let answer = erlkube_proto::epmd::Response::Port2Found(node("solo0".into(), 4370)).to_bytes();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        // SAFETY: gettid has no memory effects.
        let tid = unsafe { libc::gettid() };
        tx.send(format!("/proc/{}/task/{tid}/stat", std::process::id()))
            .unwrap();
        let mut b = [0u8; 64];
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            if matches!(s.read(&mut b), Ok(n) if n > 0) {
                let _ = s.write_all(&answer);
            }
        }
    });
    (port, rx.recv().unwrap())
}

/// CPU seconds (user + system) from a `stat` file.
fn stat_cpu_secs(path: &str) -> f64 {
    let (user, sys) = erlkube_testkit::cpu::stat_cpu_secs(path);
    user + sys
}

/// PORT_PLEASE2 against the floor server at each client count: (clients,
/// req/s, failed, server CPU share).
async fn floor_phases(port: u16, stat: &str, clients: &[usize]) -> Vec<(usize, f64, u64, f64)> {
    let req = Request::PortPlease2 {
        name: "solo0".into(),
    }
    .to_bytes();
    let mut out = Vec::new();
    for &c in clients {
        let cpu0 = stat_cpu_secs(stat);
        let (rps, failed) = load(port, c, req.clone()).await;
        let cpu = (stat_cpu_secs(stat) - cpu0) / PHASE.as_secs_f64();
        eprintln!(
            "  floor    PORT_PLEASE2 (fixed answer) {c:>5} clients: {rps:>9.0} req/s ({failed} failed), server CPU {:.0}%",
            cpu * 100.0
        );
        out.push((c, rps, failed, cpu));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    out
}

fn vm_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let (user, sys) = erlkube_testkit::process_cpu_secs(pid);
    user + sys
}

fn node(name: String, port: u16) -> NodeInfo {
    NodeInfo {
        port,
        node_type: NODE_TYPE_NORMAL,
        protocol: 0,
        highest_version: 6,
        lowest_version: 5,
        name,
        extra: Vec::new(),
    }
}

/// One request on a fresh connection; true if an answer came back.
async fn one_request(addr: SocketAddr, req: &[u8], buf: &mut Vec<u8>) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    if s.write_all(req).await.is_err() {
        return false;
    }
    buf.clear();
    matches!(s.read_to_end(buf).await, Ok(n) if n > 0)
}

/// `clients` concurrent loops of one-request-per-connection for `PHASE`.
async fn load(port: u16, clients: usize, req: Vec<u8>) -> (f64, u64) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let req = Arc::new(req);
    let start = Instant::now();
    let deadline = start + PHASE;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (ok, failed, req) = (ok.clone(), failed.clone(), req.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = Vec::with_capacity(64);
            while Instant::now() < deadline {
                let r =
                    tokio::time::timeout(Duration::from_secs(2), one_request(addr, &req, &mut buf))
                        .await;
                if matches!(r, Ok(true)) {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    (
        ok.load(Ordering::Relaxed) as f64 / secs,
        failed.load(Ordering::Relaxed),
    )
}

async fn register_many(port: u16, n: usize, prefix: &str) -> Vec<Registration> {
    let c = Client::new("127.0.0.1", port);
    let mut regs = Vec::with_capacity(n);
    for i in 0..n {
        regs.push(
            c.register(node(format!("{prefix}{i}"), 20000 + i as u16))
                .await
                .expect("register"),
        );
    }
    regs
}

/// Opens up to `target` connections and keeps them; then sends a
/// PORT_PLEASE2 on each and counts answers. Returns (accepted, served,
/// daemon VmRSS in KiB while all were held).
async fn hold_connections(port: u16, pid: u32, target: usize) -> (usize, usize, u64) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut conns = Vec::with_capacity(target);
    for _ in 0..target {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => conns.push(s),
            _ => break,
        }
    }
    let accepted = conns.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = vm_rss_kib(pid);
    let req = Request::PortPlease2 {
        name: "bench0".into(),
    }
    .to_bytes();
    let served = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(accepted);
    for mut s in conns {
        let (req, served) = (req.clone(), served.clone());
        tasks.push(tokio::spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(10), async {
                s.write_all(&req).await.ok()?;
                let mut b = Vec::new();
                s.read_to_end(&mut b).await.ok()?;
                (b.len() >= 2).then_some(())
            })
            .await;
            if matches!(r, Ok(Some(()))) {
                served.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (accepted, served.load(Ordering::Relaxed) as usize, rss)
}

struct Figures {
    /// One node registered: (clients, req/s, failed, daemon CPU fraction)
    pp_one: Vec<(usize, f64, u64, f64)>,
    /// 1,000 nodes registered: (clients, req/s, failed, daemon CPU fraction)
    pp: Vec<(usize, f64, u64, f64)>,
    names: (f64, u64, f64),
    rss_kib: u64,
    rss_idle_kib: u64,
    held: (usize, usize, u64),
}

/// PORT_PLEASE2 for `name` at each client count.
async fn port_please_phases(
    d: &Daemon,
    name: &str,
    clients: &[usize],
    what: &str,
) -> Vec<(usize, f64, u64, f64)> {
    let req = Request::PortPlease2 { name: name.into() }.to_bytes();
    let mut out = Vec::new();
    for &clients in clients {
        let cpu0 = cpu_secs(d.pid);
        let (rps, failed) = load(d.port, clients, req.clone()).await;
        let cpu = (cpu_secs(d.pid) - cpu0) / PHASE.as_secs_f64();
        eprintln!(
            "  {:8} PORT_PLEASE2 ({what}) {clients:>5} clients: {rps:>9.0} req/s ({failed} failed), daemon CPU {:.0}%",
            d.label,
            cpu * 100.0
        );
        out.push((clients, rps, failed, cpu));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    out
}

async fn measure(d: &Daemon, held_target: usize, quick: bool) -> Figures {
    let rss_idle_kib = vm_rss_kib(d.pid);
    let solo = register_many(d.port, 1, "solo").await;
    let pp_one = port_please_phases(d, "solo0", &[1, 64], "1 node").await;
    drop(solo);
    if quick {
        return Figures {
            pp_one,
            pp: Vec::new(),
            names: (0.0, 0, 0.0),
            rss_kib: 0,
            rss_idle_kib,
            held: (0, 0, 0),
        };
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let regs = register_many(d.port, NODES, "bench").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_kib = vm_rss_kib(d.pid);
    let pp = port_please_phases(d, "bench500", &[1, 64, 1024], "1000 nodes").await;
    let cpu0 = cpu_secs(d.pid);
    let names = load(d.port, 64, Request::Names.to_bytes()).await;
    let cpu = (cpu_secs(d.pid) - cpu0) / PHASE.as_secs_f64();
    eprintln!(
        "  {:8} NAMES (1000 nodes) 64 clients: {:>9.0} req/s ({} failed), daemon CPU {:.0}%",
        d.label,
        names.0,
        names.1,
        cpu * 100.0
    );
    let names = (names.0, names.1, cpu);
    drop(regs);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _keep = register_many(d.port, 1, "bench").await;
    let held = hold_connections(d.port, d.pid, held_target).await;
    eprintln!(
        "  {:8} held connections: {} accepted, {} served",
        d.label, held.0, held.1
    );
    Figures {
        pp_one,
        pp,
        names,
        rss_kib,
        rss_idle_kib,
        held,
    }
}

fn main() {
    // Both daemons inherit this limit (erlkube raises its own anyway).
    let nofile = erlkube_epmd::sys::raise_nofile_limit().unwrap_or(1024);
    let held_target = 12_000usize.min((nofile as usize).saturating_sub(2_000));
    let bin = erlkube_bin();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    eprintln!(
        "erlkube epmd vs OTP epmd, loopback, {PHASE:?} per phase, one connection per request"
    );
    // EPMD_BENCH_PROFILE=one: only the one-registration phases (OTP, the
    // floor, erlkube-epmd), for profiling.
    let quick = std::env::var_os("EPMD_BENCH_PROFILE").is_some();
    let (otp, floor, ours, shared) = rt.block_on(async {
        let otp_d = start_otp();
        let otp = measure(&otp_d, held_target, quick).await;
        drop(otp_d);
        let (floor_port, floor_stat) = start_floor();
        let floor = floor_phases(floor_port, &floor_stat, &[1, 64]).await;
        let ours_d = start_erlkube(&bin, true);
        if quick {
            eprintln!("  erlkube-epmd pid {}", ours_d.pid);
        }
        let ours = measure(&ours_d, held_target, quick).await;
        drop(ours_d);
        if quick {
            return (otp, floor, ours, (0, 0));
        }
        // The same daemon in the shared binary: memory only.
        let shared_d = start_erlkube(&bin, false);
        let shared_idle = vm_rss_kib(shared_d.pid);
        let regs = register_many(shared_d.port, NODES, "bench").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let shared_full = vm_rss_kib(shared_d.pid);
        drop(regs);
        drop(shared_d);
        (otp, floor, ours, (shared_idle, shared_full))
    });
    println!();
    println!("| measure | OTP epmd | erlkube-epmd | ratio |");
    println!("|---|---:|---:|---:|");
    for (nodes, o_rows, e_rows) in [(1, &otp.pp_one, &ours.pp_one), (NODES, &otp.pp, &ours.pp)] {
        for ((c, o, of, ocpu), (_, e, ef, ecpu)) in o_rows.iter().zip(e_rows) {
            println!(
                "| PORT_PLEASE2 req/s, {nodes} registered, {c} clients (new conn each) | {o:.0} ({of} failed) | {e:.0} ({ef} failed) | {:.2}x |",
                e / o
            );
            let (oe, ee) = (o / ocpu.max(1e-9), e / ecpu.max(1e-9));
            println!(
                "| PORT_PLEASE2 req per daemon CPU-second, {nodes} registered, {c} clients | {oe:.0} ({:.0}% CPU) | {ee:.0} ({:.0}% CPU) | {:.2}x |",
                ocpu * 100.0,
                ecpu * 100.0,
                ee / oe
            );
        }
    }
    for ((c, o, _, ocpu), (_, f, ff, fcpu)) in otp.pp_one.iter().zip(&floor) {
        println!(
            "| floor (one blocking thread: accept, read, write fixed answer, close), {c} clients | {o:.0} | {f:.0} ({ff} failed) | {:.2}x |",
            f / o
        );
        println!(
            "| floor req per server CPU-second, {c} clients | {:.0} ({:.0}% CPU) | {:.0} ({:.0}% CPU) | {:.2}x |",
            o / ocpu.max(1e-9),
            ocpu * 100.0,
            f / fcpu.max(1e-9),
            fcpu * 100.0,
            (f / fcpu.max(1e-9)) / (o / ocpu.max(1e-9))
        );
    }
    println!(
        "| VmRSS idle (KiB) | {} | {} | {:.2}x |",
        otp.rss_idle_kib,
        ours.rss_idle_kib,
        ours.rss_idle_kib as f64 / otp.rss_idle_kib.max(1) as f64
    );
    if quick {
        return;
    }
    println!(
        "| NAMES req/s, {NODES} nodes, 64 clients | {:.0} ({} failed) | {:.0} ({} failed) | {:.2}x |",
        otp.names.0,
        otp.names.1,
        ours.names.0,
        ours.names.1,
        ours.names.0 / otp.names.0
    );
    let (oe, ee) = (
        otp.names.0 / otp.names.2.max(1e-9),
        ours.names.0 / ours.names.2.max(1e-9),
    );
    println!(
        "| NAMES req per daemon CPU-second | {oe:.0} ({:.0}% CPU) | {ee:.0} ({:.0}% CPU) | {:.2}x |",
        otp.names.2 * 100.0,
        ours.names.2 * 100.0,
        ee / oe
    );
    println!(
        "| connections held: accepted / served (of {held_target}) | {} / {} | {} / {} | {:.2}x |",
        otp.held.0,
        otp.held.1,
        ours.held.0,
        ours.held.1,
        ours.held.1 as f64 / otp.held.1.max(1) as f64
    );
    println!(
        "| VmRSS holding those connections (KiB) | {} | {} | {:.2}x |",
        otp.held.2,
        ours.held.2,
        ours.held.2 as f64 / otp.held.2.max(1) as f64
    );
    println!(
        "| VmRSS with {NODES} nodes (KiB) | {} | {} | {:.2}x |",
        otp.rss_kib,
        ours.rss_kib,
        ours.rss_kib as f64 / otp.rss_kib.max(1) as f64
    );
    println!(
        "| VmRSS idle, shared `erlkube epmd` (KiB) | {} | {} | {:.2}x |",
        otp.rss_idle_kib,
        shared.0,
        shared.0 as f64 / otp.rss_idle_kib.max(1) as f64
    );
    println!(
        "| VmRSS with {NODES} nodes, shared `erlkube epmd` (KiB) | {} | {} | {:.2}x |",
        otp.rss_kib,
        shared.1,
        shared.1 as f64 / otp.rss_kib.max(1) as f64
    );
    println!();
    println!("total bench time: {:.0?}", started.elapsed());
}
