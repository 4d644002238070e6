//! `erlkube node`: run a Rust node until SIGINT/SIGTERM.
//!
//! The node has a registered process `echo` that sends `Msg` back to `Pid`
//! for every `{Pid, Msg}` it receives, the demo services `demo:echo/1`,
//! `demo:add/2` (RPC) and `echo_server` (a gen_server replying
//! `{echo, Request}`), and logs nodeup/nodedown. `echo` is also in the pg
//! group `erlkube_demo` (scope `pg`) and holds the global name
//! `erlkube_demo_echo` when it is free.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use erlkube_etf::Term;
use erlkube_node::{long_name, short_name, Listen, Node, NodeConfig, NodeEvent};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("nodename").required(true).args(["name", "sname"])))]
pub struct NodeArgs {
    /// Long node name (`alive@host.domain` or `alive@ip`; `alive` takes this host's name).
    #[arg(long)]
    name: Option<String>,
    /// Short node name (`alive` or `alive@host`).
    #[arg(long)]
    sname: Option<String>,
    #[command(flatten)]
    cookie: super::CookieArgs,
    #[command(flatten)]
    dist: super::DistArgs,
    /// Listen on this port (default: an ephemeral port registered with epmd).
    #[arg(long)]
    port: Option<u16>,
    /// With --port: do not register with epmd.
    #[arg(long, requires = "port")]
    no_epmd: bool,
    /// A hidden node (not in the peers' nodes()).
    #[arg(long)]
    hidden: bool,
    /// The epmd port.
    #[arg(long, env = "ERL_EPMD_PORT", default_value_t = 4369)]
    epmd_port: u16,
    /// Start erlkube's port mapper as a daemon when none answers on the
    /// epmd port (as `erl` does); `--start-epmd false` (OTP's
    /// `-start_epmd false`) fails instead.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    start_epmd: bool,
    /// Time without anything read before a peer counts as dead: OTP's
    /// seconds (`60`) or a duration with its unit (`1m`).
    #[arg(long, default_value = "60", value_parser = super::parse_seconds_or_duration)]
    net_ticktime: Duration,
    /// On SIGTERM/SIGINT, keep serving this long (`500ms`, `5s`, at most
    /// `10m`), then leave the cluster (every peer disconnected, nothing
    /// dialled) and stop.
    #[arg(long, default_value = "0s", value_parser = parse_drain_grace)]
    drain_grace: Duration,
    /// After a connection read data, spin this many microseconds (at most
    /// 10000) looking for more before sleeping, as the BEAM's schedulers
    /// do by default: a request/answer round trip no longer waits for an
    /// idle CPU to wake, at the price of CPU burnt while spinning. 0: off.
    /// Plain TCP distribution only (not with --proto-dist inet_tls). The
    /// node then runs on one tokio worker unless TOKIO_WORKER_THREADS
    /// says otherwise (spinning on more slows the slowest round trips).
    #[arg(long, default_value_t = 0, value_name = "MICROSECONDS",
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    busy_poll_us: u64,
    #[command(flatten)]
    discovery: super::node_discovery::DiscoveryArgs,
}

/// tokio's default multi-thread runtime (one worker per CPU the process
/// may use, or `TOKIO_WORKER_THREADS`); with busy-poll and no
/// `TOKIO_WORKER_THREADS`, one worker: spinning on more makes tokio wake
/// another worker at each spin turn (BENCHMARKS.md, issue 20).
fn runtime(busy_poll: bool) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if busy_poll && std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        b.worker_threads(1);
    }
    b.enable_all().build().expect("tokio runtime")
}

fn parse_drain_grace(text: &str) -> Result<Duration, String> {
    erlkube_discovery::config::parse_duration(text)
        .filter(|d| *d <= erlkube_agent::config::MAX_DRAIN_GRACE)
        .ok_or_else(|| format!("must be a duration from 0s to 10m like \"5s\", got {text:?}"))
}

pub fn main(args: NodeArgs) -> ExitCode {
    init_tracing("info");
    // Everything the user gave is checked before anything is started or
    // registered: a bad setting exits 2 and leaves nothing behind.
    let prepared = match prepare(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("erlkube node: {e}");
            return ExitCode::from(2);
        }
    };
    if prepared.config.register_with_epmd {
        if let Err(e) = ensure_epmd(prepared.config.epmd_ip, args.epmd_port, args.start_epmd) {
            eprintln!("erlkube node: {e}");
            return ExitCode::FAILURE;
        }
    }
    let rt = runtime(args.busy_poll_us > 0);
    let result = rt.block_on(run(args, prepared));
    // Don't let a task still finishing (a connection, a discovery round)
    // hold the exit after the node has shut down.
    rt.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("erlkube node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The node's settings and its formation plan, checked.
struct Prepared {
    config: NodeConfig,
    formation: Option<erlkube_discovery::config::FormationConfig>,
}

fn prepare(args: &NodeArgs) -> Result<Prepared, String> {
    let name = match (&args.name, &args.sname) {
        (Some(n), _) => long_name(n).map_err(|e| format!("--name: {e}"))?,
        (_, Some(n)) => short_name(n).map_err(|e| format!("--sname: {e}"))?,
        _ => unreachable!("clap requires one"),
    };
    let cookie = args.cookie.find().map_err(|e| e.to_string())?;
    let formation = super::node_discovery::resolve(&name, &args.discovery, args.epmd_port)
        .map_err(|e| format!("configuration error: {e}"))?;
    if let (Some(f), Ok(n)) = (&formation, erlkube_discovery::NodeName::parse(&name)) {
        if let Some(w) = f.check_node_form(&n) {
            tracing::warn!("{w}");
        }
    }
    let mut config = NodeConfig::new(name, cookie);
    config.tls = args.dist.tls(&["server", "client"])?;
    config.hidden = args.hidden;
    config.epmd_port = args.epmd_port;
    config.net_ticktime = args.net_ticktime;
    config.busy_poll = (args.busy_poll_us > 0).then(|| Duration::from_micros(args.busy_poll_us));
    if let Some(p) = args.port {
        config.listen = Listen::Port(p);
        config.register_with_epmd = !args.no_epmd;
    }
    Ok(Prepared { config, formation })
}

/// Makes sure a port mapper answers on `ip:port`, starting
/// `erlkube epmd -daemon` when none does and `start` allows it (as `erl`
/// starts `epmd -daemon`). The daemon outlives this node, as OTP's does.
fn ensure_epmd(ip: std::net::IpAddr, port: u16, start: bool) -> Result<(), String> {
    let addr = std::net::SocketAddr::new(ip, port);
    let answers = || std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok();
    if answers() {
        return Ok(());
    }
    if !start || !ip.is_loopback() {
        return Err(format!(
            "no port mapper answers on {addr} (and --start-epmd is false, or it is not local): start one \
             (`erlkube epmd -daemon -port {port}`, or OTP's `epmd -daemon`), drop \
             `--start-epmd false`, or run without epmd (--port P --no-epmd)"
        ));
    }
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find this executable to start epmd: {e}"))?;
    let status = std::process::Command::new(exe)
        .args(["epmd", "-daemon", "-port", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot start `erlkube epmd -daemon`: {e}"))?;
    if !status.success() || !answers() {
        return Err(format!(
            "no port mapper answers on {addr}, and `erlkube epmd -daemon -port {port}` \
             did not start one ({status})"
        ));
    }
    tracing::info!(
        port,
        "started erlkube epmd as a daemon (it outlives this node, as erl's epmd does)"
    );
    Ok(())
}

pub(crate) use super::log::init_tracing;

async fn run(args: NodeArgs, prepared: Prepared) -> anyhow::Result<()> {
    // Before anything is announced, so a signal right after the
    // "listening" line is not lost.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let Prepared {
        mut config,
        formation,
    } = prepared;
    let node = match Node::start(config.clone()).await {
        Ok(n) => n,
        Err(erlkube_node::NodeError::Epmd(e)) if args.port.is_some() => {
            tracing::warn!(error = %e, "epmd registration failed; reachable only at the fixed port");
            config.register_with_epmd = false;
            Node::start(config).await?
        }
        Err(e) => return Err(e).context("starting the node"),
    };
    let mut echo = node.spawn_registered("echo").context("registering echo")?;
    let echo_pid = echo.pid().clone();
    let echo_node = node.clone();
    tokio::spawn(async move {
        while let Some(m) = echo.recv().await {
            match m.as_tuple() {
                Some([Term::Pid(to), msg]) => {
                    if let Err(e) = echo_node.send(to, msg.clone()).await {
                        tracing::warn!(error = %e, "echo reply failed");
                    }
                }
                _ => {
                    tracing::debug!(message = %m, "echo ignores a message that is not {{Pid, Msg}}")
                }
            }
        }
    });

    erlkube_node::demo::install(&node)
        .map_err(anyhow::Error::msg)
        .context("demo services")?;
    erlkube_node::demo::announce(&node, &echo_pid).await;

    let mut events = node.subscribe();
    tokio::spawn(async move {
        while let Ok(ev) = events.recv().await {
            match ev {
                NodeEvent::NodeUp { node, hidden } => tracing::info!(%node, hidden, "nodeup"),
                NodeEvent::NodeDown { node, reason } => tracing::info!(%node, %reason, "nodedown"),
            }
        }
    });

    // announced (and peers looked for) once the services above answer: a
    // client that waits for this line must not find `demo` undefined
    println!("{} listening on port {}", node.name(), node.port());
    let formation = match &formation {
        Some(f) => Some(super::node_discovery::start(&node, f)?),
        None => None,
    };

    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    // Drain: still connected and serving for the grace (the EndpointSlice
    // drops the pod, in-flight calls finish), then leave.
    if !args.drain_grace.is_zero() {
        tracing::info!(grace = ?args.drain_grace, "draining");
        tokio::time::sleep(args.drain_grace).await;
    }
    // Leave: nothing is dialled any more; processes exit with `shutdown`
    // (what BEAM monitors see when a BEAM node stops with init:stop()) and
    // every connection closes once it has written that, so peers see a
    // nodedown at once. Wait, bounded, for that before the runtime goes.
    drop(formation);
    tracing::info!("leaving the cluster; shutting down");
    node.stop().await;
    Ok(())
}
