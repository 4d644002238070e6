//! `erlkube node`: run a Rust node until SIGINT/SIGTERM.
//!
//! The node has a registered process `echo` that sends `Msg` back to `Pid`
//! for every `{Pid, Msg}` it receives, the demo services `demo:echo/1`,
//! `demo:add/2` (RPC) and `echo_server` (a gen_server replying
//! `{echo, Request}`), and logs nodeup/nodedown.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use erlkube_etf::Term;
use erlkube_node::{find_cookie, long_name, short_name, Listen, Node, NodeConfig, NodeEvent};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("nodename").required(true).args(["name", "sname"])))]
pub struct NodeArgs {
    /// Long node name (`alive@host.domain` or `alive@ip`; `alive` takes this host's name).
    #[arg(long)]
    name: Option<String>,
    /// Short node name (`alive` or `alive@host`).
    #[arg(long)]
    sname: Option<String>,
    /// The cookie (default: $RELEASE_COOKIE, then ~/.erlang.cookie).
    #[arg(long)]
    cookie: Option<String>,
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
    /// Seconds without anything read before a peer counts as dead.
    #[arg(long, default_value_t = 60)]
    net_ticktime: u64,
    /// On SIGTERM/SIGINT, keep serving this long (`500ms`, `5s`, at most
    /// `10m`), then leave the cluster (every peer disconnected, nothing
    /// dialled) and stop.
    #[arg(long, default_value = "0s", value_parser = parse_drain_grace)]
    drain_grace: Duration,
    #[command(flatten)]
    discovery: super::node_discovery::DiscoveryArgs,
}

fn parse_drain_grace(text: &str) -> Result<Duration, String> {
    erlkube_discovery::config::parse_duration(text)
        .filter(|d| *d <= erlkube_agent::config::MAX_DRAIN_GRACE)
        .ok_or_else(|| format!("must be a duration from 0s to 10m like \"5s\", got {text:?}"))
}

pub fn main(args: NodeArgs) -> ExitCode {
    init_tracing("info");
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = rt.block_on(run(args));
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

/// Logs to stderr, filtered by RUST_LOG (else `default`); colours only on
/// a terminal, so container logs stay plain text.
pub(crate) fn init_tracing(default: &str) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

async fn run(args: NodeArgs) -> anyhow::Result<()> {
    // Before anything is announced, so a signal right after the
    // "listening" line is not lost.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let name = match (&args.name, &args.sname) {
        (Some(n), _) => long_name(n)?,
        (_, Some(n)) => short_name(n)?,
        _ => unreachable!("clap requires one"),
    };
    let cookie = find_cookie(args.cookie.as_deref())?;
    let mut config = NodeConfig::new(name, cookie);
    config.hidden = args.hidden;
    config.epmd_port = args.epmd_port;
    config.net_ticktime = Duration::from_secs(args.net_ticktime.max(1));
    if let Some(p) = args.port {
        config.listen = Listen::Port(p);
        config.register_with_epmd = !args.no_epmd;
    }
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
    let formation = super::node_discovery::start(&node, &args.discovery, args.epmd_port).await?;

    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    // Drain: still connected and serving for the grace, then leave
    // cleanly so that peers see a nodedown at once.
    tracing::info!(grace = ?args.drain_grace, "draining");
    tokio::time::sleep(args.drain_grace).await;
    let peers = match &formation {
        Some(f) => f._engine.leave().await,
        None => 0,
    };
    let rest = node.nodes();
    for n in &rest {
        node.disconnect(n);
    }
    tracing::info!(
        peers = peers + rest.len(),
        "left the cluster; shutting down"
    );
    node.shutdown();
    Ok(())
}
