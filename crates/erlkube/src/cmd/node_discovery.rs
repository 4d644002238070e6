//! Cluster formation for `erlkube node`: the discovery options and the hook
//! that starts the formation engine on the running node.
//!
//! With no options the node clusters with every node on its local epmd
//! (strategy `epmd`, address `127.0.0.1:<--epmd-port>`, host = the host part
//! of the node's name). `--discovery`, `--config`/`ERLKUBE_CONFIG` and the
//! `ERLKUBE_DISCOVERY_*`/`ERLKUBE_FORMATION_*` variables choose otherwise
//! (docs/configuration.md).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use erlkube_agent::rust_node::RustNode;
use erlkube_discovery::config::{resolve_with, Defaults, FormationConfig};
use erlkube_discovery::{Engine, Formation};
use erlkube_node::Node;
use tokio::sync::mpsc;

/// Discovery options of `erlkube node`.
#[derive(clap::Args, Debug, Default)]
pub struct DiscoveryArgs {
    /// Discovery strategy: static, epmd (default), hosts_file, dns_a, dns_srv.
    #[arg(long, env = "ERLKUBE_DISCOVERY_STRATEGY")]
    pub discovery: Option<String>,
    /// Formation configuration file (TOML; see docs/configuration.md).
    #[arg(long, env = "ERLKUBE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Do not form a cluster (connect only on demand).
    #[arg(long, conflicts_with_all = ["discovery", "config"])]
    pub no_discovery: bool,
}

/// A running formation (strategy task + engine); stops when dropped.
pub struct Running {
    /// The engine (events, metrics).
    pub _engine: Formation,
    strategy: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.strategy.abort();
    }
}

/// Resolves the formation settings for the node named `node_name`
/// (reads the file, checks every key) without starting anything, so a bad
/// setting is reported before the node registers anywhere. `None` when
/// formation is disabled.
pub fn resolve(
    node_name: &str,
    args: &DiscoveryArgs,
    epmd_port: u16,
) -> Result<Option<FormationConfig>, String> {
    if args.no_discovery {
        return Ok(None);
    }
    let text = match &args.config {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("configuration file {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let host = node_name
        .split_once('@')
        .map(|(_, h)| h.to_owned())
        .unwrap_or_default();
    let defaults = Defaults {
        hostname: host,
        epmd_address: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, epmd_port))),
    };
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    if let Some(s) = &args.discovery {
        env.retain(|(k, _)| k != "ERLKUBE_DISCOVERY_STRATEGY");
        env.push(("ERLKUBE_DISCOVERY_STRATEGY".into(), s.clone()));
    }
    resolve_with(text.as_deref(), env, &defaults)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Starts formation for `node` with settings from [`resolve`].
pub fn start(node: &Node, config: &FormationConfig) -> anyhow::Result<Running> {
    tracing::info!(strategy = %config.strategy_name, "cluster formation");
    let (tx, rx) = mpsc::channel(16);
    let strategy = config
        .spawn_strategy(tx)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let formation = Engine::new(RustNode(node.clone()), config.engine.clone())
        .with_quorum(config.quorum)
        .spawn(rx);
    Ok(Running {
        _engine: formation,
        strategy,
    })
}
