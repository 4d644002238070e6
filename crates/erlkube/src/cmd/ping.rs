//! `erlkube ping NODE`: `net_adm:ping/1` from the command line. Prints
//! `pong` (exit 0) or `pang` (exit 1, the reason on stderr). `--via HOST:PORT`
//! dials the node there (a port-forward): no name resolution, no epmd.

use std::process::ExitCode;
use std::time::Duration;

use erlkube_node::{long_name, short_name, Node, NodeConfig};
use erlkube_proto::name::{check_node_name, NameMode};

#[derive(clap::Args)]
pub struct PingArgs {
    /// The node to ping, `alive@host`.
    node: String,
    #[command(flatten)]
    client: ClientArgs,
    /// How long to wait for each step, with its unit (`7s`, `500ms`).
    #[arg(long, default_value = "7s", value_parser = super::parse_duration_arg)]
    timeout: Duration,
}

/// How a one-shot command (`ping`, `rpc`) reaches its target: the hidden
/// node it starts and where it dials.
#[derive(clap::Args)]
pub struct ClientArgs {
    #[command(flatten)]
    cookie: super::CookieArgs,
    #[command(flatten)]
    dist: super::DistArgs,
    /// This node's long name (default: a hidden `erlkube_<command>_<pid>`
    /// on the target's host).
    #[arg(long, conflicts_with = "sname")]
    name: Option<String>,
    /// This node's short name.
    #[arg(long)]
    sname: Option<String>,
    /// The epmd port on the target's host.
    #[arg(long, env = "ERL_EPMD_PORT", default_value_t = 4369)]
    epmd_port: u16,
    /// The target's distribution port (skips epmd).
    #[arg(long)]
    port: Option<u16>,
    /// Dial the node at this address (e.g. a `kubectl port-forward` to its
    /// distribution port): its host is not resolved and epmd is not asked.
    #[arg(long, value_name = "HOST:PORT", value_parser = super::remsh::parse_via, conflicts_with = "port")]
    via: Option<std::net::SocketAddr>,
}

impl ClientArgs {
    /// The configuration of the hidden node that `command` starts to reach
    /// `target`: never registered with epmd, listening on loopback only,
    /// dialling through `--port`/`--via` when given. Errors are usage
    /// errors (a bad name, no cookie, bad TLS settings).
    pub fn config(&self, command: &str, target: &str) -> Result<NodeConfig, String> {
        let host = check_node_name(target, NameMode::Any)
            .map_err(|e| e.to_string())?
            .1
            .to_owned();
        let own = match (&self.name, &self.sname) {
            (Some(n), _) => long_name(n).map_err(|e| format!("--name: {e}"))?,
            (_, Some(n)) => short_name(n).map_err(|e| format!("--sname: {e}"))?,
            _ => format!("erlkube_{command}_{}@{host}", std::process::id()),
        };
        let cookie = self.cookie.find().map_err(|e| e.to_string())?;
        let mut config = NodeConfig::new(own, cookie);
        config.tls = self.dist.tls(&["client"])?;
        config.hidden = true;
        config.register_with_epmd = false;
        config.listen_ip = std::net::Ipv4Addr::LOCALHOST.into();
        config.epmd_port = self.epmd_port;
        if let Some(p) = self.port {
            config.known_ports.insert(target.to_owned(), p);
        }
        if let Some(addr) = self.via {
            config.known_addrs.insert(target.to_owned(), addr);
        }
        Ok(config)
    }
}

pub fn main(args: PingArgs) -> ExitCode {
    super::node::init_tracing("error");
    // Usage and configuration errors (a bad name, no cookie) exit 2 before
    // anything is started, as on every command.
    let config = match prepare(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("erlkube ping: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(run(&args.node, config)) {
        Ok(()) => {
            println!("pong");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("pang");
            eprintln!("{reason}");
            ExitCode::FAILURE
        }
    }
}

fn prepare(args: &PingArgs) -> Result<NodeConfig, String> {
    let mut config = args.client.config("ping", &args.node)?;
    config.setup_timeout = args.timeout;
    Ok(config)
}

async fn run(target: &str, config: NodeConfig) -> Result<(), String> {
    let node = Node::start(config).await.map_err(|e| e.to_string())?;
    let r = node.ping(target).await.map_err(|e| error_chain(&e));
    node.stop().await;
    r
}

/// An error and its sources, `outer: inner: …`, each cause once (a
/// resolution failure under "cannot connect to epmd" shows up).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
