//! Joining a cluster found through DNS: the `dns_a` strategy asks for the
//! A records of a headless Service (each pod IP becomes `basename@IP`) and
//! the formation engine connects to every node found, reconnecting with
//! backoff and removing nodes only when DNS positively says they left.
//!
//! Configuration is the same as `erlkube node`'s (docs/configuration.md),
//! from `ERLKUBE_*` variables, e.g.:
//!
//! ```sh
//! ERLKUBE_DISCOVERY_STRATEGY=dns_a \
//! ERLKUBE_DISCOVERY_DNS_QUERY=app-headless.prod.svc.cluster.local \
//! ERLKUBE_DISCOVERY_DNS_BASENAME=app \
//! dns_join --name rust@10.4.2.17 --cookie secret
//! ```
//!
//! It prints `nodeup NAME` for each node it joins.

use erlkube_agent::rust_node::RustNode;
use erlkube_discovery::config::{resolve_with, Defaults};
use erlkube_discovery::Engine;
use erlkube_node::{Node, NodeConfig, NodeEvent};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = erlkube_examples::args()?;
    let name = args
        .get("name")
        .ok_or_else(|| anyhow::anyhow!("--name NAME is required"))?
        .clone();
    let cookie = erlkube_node::find_cookie(args.get("cookie").map(String::as_str))?;
    let host = name
        .split_once('@')
        .map(|(_, h)| h.to_owned())
        .unwrap_or_default();
    // Check the settings before the node starts.
    let formation = resolve_with(None, std::env::vars(), &Defaults::for_host(&host))?;
    let node = Node::start(NodeConfig::new(name, cookie)).await?;
    let mut events = node.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let _strategy = formation.spawn_strategy(tx)?;
    let _engine = Engine::new(RustNode(node.clone()), formation.engine.clone()).spawn(rx);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(NodeEvent::NodeUp { node, .. }) => println!("nodeup {node}"),
                Ok(_) => {}
                Err(_) => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    node.stop().await;
    Ok(())
}
