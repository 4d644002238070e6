//! `erlkube epmd`: the port mapper with OTP's command line.
//!
//! Flags are OTP's (single dash, parsed by hand, not clap): `-port N`,
//! `-address LIST`, `-daemon`, `-relaxed_command_check`, `-packet_timeout
//! S`, `-d`/`-debug`, and the client actions `-names`, `-started`, `-dump`,
//! `-kill`, `-stop NAME`; plus the erlkube extension `-metrics ADDR:PORT`.
//! Environment: `ERL_EPMD_PORT`, `ERL_EPMD_ADDRESS`,
//! `ERL_EPMD_RELAXED_COMMAND_CHECK`, `ERLKUBE_EPMD_METRICS`, `RUST_LOG`.
//! Client output and exit codes match OTP's `epmd`.

use std::ffi::OsString;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use erlkube_epmd::metrics::Metrics;
use erlkube_epmd::server::{bind_default, Config, Exit};
use erlkube_epmd::{Client, ClientError, Exchange};
use erlkube_proto::epmd::{Request, DEFAULT_PORT};

/// Set in the environment of the detached child started by `-daemon`.
const DAEMON_CHILD_ENV: &str = "ERLKUBE_EPMD_DAEMON_CHILD";

const USAGE: &str = "\
usage: erlkube epmd [-d|-debug] [-address List] [-port No] [-daemon]
                    [-relaxed_command_check] [-packet_timeout Seconds]
                    [-metrics Addr:Port]
       erlkube epmd [-d|-debug] [-port No] [-names|-dump|-kill|-stop Name]

A drop-in replacement for OTP's epmd (same flags, protocol and output).

Regular options
    -address List
        Listen only on the comma-separated list of IP addresses (and on
        the loopback interface). Default: all IPv4 and IPv6 addresses.
    -port No
        Listen on another port than the default 4369.
    -d
    -debug
        More logging on standard error (repeat for more; RUST_LOG
        overrides). Shortens the number of saved used node names to 5.
    -daemon
        Start detached (as a daemon).
    -relaxed_command_check
        Allow -kill with registered nodes, and -stop.
    -packet_timeout Seconds
        Seconds a connection may take to send its request (default 60).
    -metrics Addr:Port
        (erlkube) Serve Prometheus metrics at http://Addr:Port/metrics.

Interactive options
    -names     List names registered with the running epmd
    -dump      Dump the running epmd's registry
    -kill      Kill the running epmd (only with no registered nodes,
               or if it was started with -relaxed_command_check)
    -stop Name Forcibly unregister Name (needs -relaxed_command_check)

Environment: ERL_EPMD_PORT, ERL_EPMD_ADDRESS, ERL_EPMD_RELAXED_COMMAND_CHECK,
ERLKUBE_EPMD_METRICS, ERLKUBE_EPMD_WORKERS (runtime threads, default 1), RUST_LOG.
";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Serve,
    Names { silent: bool },
    Dump,
    Kill,
    Stop(String),
    Help,
}

#[derive(Debug, Clone)]
struct Opts {
    port: u16,
    addresses: Vec<IpAddr>,
    daemon: bool,
    relaxed: bool,
    debug: u32,
    packet_timeout: Option<Duration>,
    metrics: Option<SocketAddr>,
    action: Action,
}

fn parse_port(flag: &str, v: &str) -> Result<u16, String> {
    match v.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "invalid value {v:?} for {flag}: expected a port number 1-65535"
        )),
    }
}

fn parse_addresses(flag: &str, v: &str) -> Result<Vec<IpAddr>, String> {
    v.split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| format!("invalid value {s:?} for {flag}: expected an IP address"))
        })
        .collect()
}

fn parse_metrics(flag: &str, v: &str) -> Result<SocketAddr, String> {
    v.parse::<SocketAddr>().map_err(|_| {
        format!("invalid value {v:?} for {flag}: expected ADDRESS:PORT, e.g. 0.0.0.0:9180")
    })
}

fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Opts, String> {
    let mut o = Opts {
        port: DEFAULT_PORT,
        addresses: Vec::new(),
        daemon: false,
        relaxed: env("ERL_EPMD_RELAXED_COMMAND_CHECK").is_some(),
        debug: 0,
        packet_timeout: None,
        metrics: None,
        action: Action::Serve,
    };
    if let Some(p) = env("ERL_EPMD_PORT") {
        o.port = parse_port("ERL_EPMD_PORT", &p)?;
    }
    if let Some(a) = env("ERL_EPMD_ADDRESS") {
        o.addresses = parse_addresses("ERL_EPMD_ADDRESS", &a)?;
    }
    if let Some(m) = env("ERLKUBE_EPMD_METRICS").filter(|m| !m.is_empty()) {
        o.metrics = Some(parse_metrics("ERLKUBE_EPMD_METRICS", &m)?);
    }
    let mut it = args.iter();
    let set_action = |o: &mut Opts, a: Action, flag: &str| {
        if o.action != Action::Serve {
            return Err(format!("{flag} cannot be combined with another action"));
        }
        o.action = a;
        Ok(())
    };
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match arg.as_str() {
            "-d" | "-debug" => o.debug += 1,
            "-daemon" => o.daemon = true,
            "-relaxed_command_check" => o.relaxed = true,
            "-port" => o.port = parse_port("-port", &value("-port")?)?,
            "-address" => o.addresses = parse_addresses("-address", &value("-address")?)?,
            "-metrics" => o.metrics = Some(parse_metrics("-metrics", &value("-metrics")?)?),
            "-packet_timeout" => {
                let v = value("-packet_timeout")?;
                match v.parse::<u64>() {
                    Ok(s) if s > 0 => o.packet_timeout = Some(Duration::from_secs(s)),
                    _ => {
                        return Err(format!(
                            "invalid value {v:?} for -packet_timeout: expected seconds > 0"
                        ))
                    }
                }
            }
            "-delay_accept" | "-delay_write" => {
                // OTP's busy-server simulations: accepted and ignored.
                let v = value(arg)?;
                if v.parse::<u64>().is_err() {
                    return Err(format!("invalid value {v:?} for {arg}: expected seconds"));
                }
            }
            "-names" => set_action(&mut o, Action::Names { silent: false }, arg)?,
            "-started" => set_action(&mut o, Action::Names { silent: true }, arg)?,
            "-dump" => set_action(&mut o, Action::Dump, arg)?,
            "-kill" => set_action(&mut o, Action::Kill, arg)?,
            "-stop" => {
                let name = value("-stop")?;
                set_action(&mut o, Action::Stop(name), arg)?
            }
            "-help" | "-h" | "--help" => set_action(&mut o, Action::Help, arg)?,
            "-systemd" => return Err("-systemd is not supported by erlkube epmd".into()),
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok(o)
}

pub fn main(args: Vec<OsString>) -> ExitCode {
    let args: Vec<String> = match args
        .iter()
        .map(|a| a.to_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()
    {
        Some(a) => a,
        None => {
            eprintln!("erlkube epmd: arguments must be UTF-8");
            return ExitCode::from(1);
        }
    };
    let opts = match parse(&args, &|k| std::env::var(k).ok()) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("erlkube epmd: {msg}\nRun `erlkube epmd -help` for usage.");
            return ExitCode::from(1);
        }
    };
    match opts.action.clone() {
        Action::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Action::Names { silent } => client_text(opts.port, Request::Names, silent),
        Action::Dump => client_text(opts.port, Request::Dump, false),
        Action::Kill => client_kill(opts.port),
        Action::Stop(name) => client_stop(opts.port, &name),
        Action::Serve if opts.daemon && std::env::var_os(DAEMON_CHILD_ENV).is_none() => {
            daemonize(&args, opts.port)
        }
        Action::Serve => serve(opts),
    }
}

// ---------------------------------------------------------------- client

/// How long the command waits to connect and write, and for each read of
/// the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one client command on a runtime of its own (the command line is
/// not inside one).
fn run_client(f: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("erlkube epmd: cannot start the runtime: {e}");
            ExitCode::from(1)
        }
    }
}

/// Sends `req` to the local daemon (::1, then 127.0.0.1), with OTP's
/// messages when that fails.
async fn send_request(port: u16, req: &Request, silent: bool) -> Result<Exchange, ExitCode> {
    match Client::local(port)
        .with_timeout(CLIENT_TIMEOUT)
        .send(req)
        .await
    {
        Ok(x) => Ok(x),
        Err(ClientError::Write(_)) => {
            println!("epmd: Can't write to epmd");
            Err(ExitCode::from(1))
        }
        Err(_) => {
            if !silent {
                eprintln!("epmd: Cannot connect to local epmd");
            }
            Err(ExitCode::from(1))
        }
    }
}

fn client_text(port: u16, req: Request, silent: bool) -> ExitCode {
    run_client(async move {
        let mut x = match send_request(port, &req, silent).await {
            Ok(x) => x,
            Err(c) => return c,
        };
        let head = x.read_up_to(4).await.unwrap_or_default();
        if head.len() != 4 {
            if !silent {
                println!("epmd: no response from local epmd");
            }
            return ExitCode::from(1);
        }
        if silent {
            return ExitCode::SUCCESS;
        }
        let p = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let rest = x.read_rest().await;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "epmd: up and running on port {p} with data:");
        let _ = out.write_all(&rest);
        let _ = out.flush();
        ExitCode::SUCCESS
    })
}

/// OTP's messages for an answer too short, or none.
fn bad_answer(r: Result<Vec<u8>, ClientError>) -> ExitCode {
    match r {
        Ok(b) => println!(
            "epmd: local epmd responded with <{}>",
            String::from_utf8_lossy(&b)
        ),
        Err(_) => println!("epmd: failed to read answer from local epmd"),
    }
    ExitCode::from(1)
}

fn client_kill(port: u16) -> ExitCode {
    run_client(async move {
        let mut x = match send_request(port, &Request::Kill, false).await {
            Ok(x) => x,
            Err(c) => return c,
        };
        match x.read_up_to(2).await {
            Ok(b) if b.as_slice() == b"OK" => {
                println!("Killed");
                ExitCode::SUCCESS
            }
            Ok(b) if b.len() == 2 => {
                println!("Killing not allowed - living nodes in database.");
                ExitCode::from(1)
            }
            r => bad_answer(r),
        }
    })
}

fn client_stop(port: u16, name: &str) -> ExitCode {
    if name.len() > 1000 {
        print!("epmd: Name too long!");
        return ExitCode::from(1);
    }
    let req = Request::Stop { name: name.into() };
    run_client(async move {
        let mut x = match send_request(port, &req, false).await {
            Ok(x) => x,
            Err(c) => return c,
        };
        match x.read_up_to(7).await {
            Ok(b) if b.len() == 7 => {
                println!("{}", String::from_utf8_lossy(&b));
                ExitCode::SUCCESS
            }
            r => bad_answer(r),
        }
    })
}

// ---------------------------------------------------------------- daemon

/// Whether something accepts connections on the local port (::1 or
/// 127.0.0.1): a probe, no request.
fn local_listening(port: u16) -> bool {
    [
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    ]
    .iter()
    .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(5)).is_ok())
}

/// `-daemon`: re-executes this binary detached (new process group, stdio
/// on /dev/null) and returns once it listens, or with its exit code if it
/// stops first. No fork in this process.
fn daemonize(args: &[String], port: u16) -> ExitCode {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("erlkube epmd: cannot find own executable to detach: {e}");
            return ExitCode::from(1);
        }
    };
    // Something already serves the port: like OTP's epmd, report success
    // without starting a second daemon. (Starting one anyway raced: it
    // could bind the port after the first was killed and stay behind.)
    if local_listening(port) {
        return ExitCode::SUCCESS;
    }
    let mut cmd = Command::new(exe);
    cmd.arg0("erlkube")
        .arg("epmd")
        .args(args)
        .env(DAEMON_CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/")
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("erlkube epmd: cannot start the daemon: {e}");
            return ExitCode::from(1);
        }
    };
    for _ in 0..100 {
        if let Ok(Some(st)) = child.try_wait() {
            return ExitCode::from(st.code().unwrap_or(1).clamp(0, 255) as u8);
        }
        if local_listening(port) {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ExitCode::SUCCESS
}

fn init_logging(debug: u32) {
    let default = match debug {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    super::log::init_tracing(default);
}

fn serve(opts: Opts) -> ExitCode {
    init_logging(opts.debug);
    match erlkube_epmd::sys::raise_nofile_limit() {
        Ok(n) => tracing::debug!(nofile = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
    // One thread by default: the work is syscall-bound and a single
    // thread keeps memory small. ERLKUBE_EPMD_WORKERS=N uses N workers.
    let workers: usize = std::env::var("ERLKUBE_EPMD_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    let built = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("erlkube epmd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let listeners = match bind_default(opts.port, &opts.addresses) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                // As OTP's epmd: another port mapper already serves this port.
                tracing::info!(port = opts.port, "there is already an epmd running on this port");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("erlkube epmd: cannot listen on port {}: {e}", opts.port);
                return ExitCode::from(1);
            }
        };
        let metrics = Arc::new(Metrics::default());
        let mut config = Config {
            relaxed_command_check: opts.relaxed,
            announced_port: Some(opts.port),
            metrics: metrics.clone(),
            ..Config::default()
        };
        if opts.debug > 0 {
            config.unreg_limit = 5;
        }
        if let Some(t) = opts.packet_timeout {
            config.packet_timeout = t;
            config.idle_timeout = t;
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        if let Some(addr) = opts.metrics {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    tracing::info!(%addr, "metrics at /metrics");
                    let mut rx = stop_rx.clone();
                    tokio::spawn(erlkube_epmd::metrics::serve(l, metrics, async move {
                        let _ = rx.changed().await;
                    }));
                }
                Err(e) => {
                    eprintln!("erlkube epmd: cannot listen for metrics on {addr}: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        if std::env::var_os(DAEMON_CHILD_ENV).is_some() {
            // A detached daemon outlives its terminal: ignore SIGHUP (a
            // registered tokio handler replaces the default "terminate").
            if let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            {
                tokio::spawn(async move { while hup.recv().await.is_some() {} });
            }
        }
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        let r = erlkube_epmd::server::run(listeners, config, shutdown).await;
        let _ = stop_tx.send(true);
        match r {
            Ok(Exit::Killed) | Ok(Exit::Shutdown) => ExitCode::SUCCESS,
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("erlkube epmd: {e}");
                ExitCode::from(1)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Opts, String> {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&a, &|_| None)
    }

    #[test]
    fn otp_flags() {
        let o = p(&[
            "-d",
            "-d",
            "-port",
            "5000",
            "-relaxed_command_check",
            "-daemon",
        ])
        .unwrap();
        assert_eq!(
            (o.port, o.debug, o.relaxed, o.daemon),
            (5000, 2, true, true)
        );
        assert_eq!(
            p(&["-stop", "foo"]).unwrap().action,
            Action::Stop("foo".into())
        );
        let o = p(&["-address", "127.0.0.1,::1 10.0.0.1"]).unwrap();
        assert_eq!(o.addresses.len(), 3);
    }

    #[test]
    fn bad_values_name_the_flag() {
        assert!(p(&["-port", "abc"]).unwrap_err().contains("-port"));
        assert!(p(&["-port", "0"]).unwrap_err().contains("-port"));
        assert!(p(&["-port"]).unwrap_err().contains("-port needs a value"));
        assert!(p(&["-address", "nope"]).unwrap_err().contains("-address"));
        assert!(p(&["-metrics", "x"]).unwrap_err().contains("-metrics"));
        assert!(p(&["-bogus"]).unwrap_err().contains("-bogus"));
        assert!(p(&["-names", "-kill"]).is_err());
    }

    #[test]
    fn environment() {
        let env = |k: &str| match k {
            "ERL_EPMD_PORT" => Some("4444".to_string()),
            "ERL_EPMD_RELAXED_COMMAND_CHECK" => Some(String::new()),
            "ERL_EPMD_ADDRESS" => Some("127.0.0.1".to_string()),
            _ => None,
        };
        let o = parse(&[], &env).unwrap();
        assert_eq!((o.port, o.relaxed, o.addresses.len()), (4444, true, 1));
        let bad = |k: &str| (k == "ERL_EPMD_PORT").then(|| "x".to_string());
        assert!(parse(&[], &bad).unwrap_err().contains("ERL_EPMD_PORT"));
    }
}
