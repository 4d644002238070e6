//! A Rust process calling an Elixir GenServer: `GenServer.call` from Rust
//! with serde-typed request and reply.
//!
//! The Elixir side (any GenServer registered under a name):
//!
//! ```elixir
//! defmodule Counter do
//!   use GenServer
//!   def init(n), do: {:ok, n}
//!   def handle_call({:add, k}, _from, n), do: {:reply, {:total, n + k}, n + k}
//! end
//! GenServer.start(Counter, 0, name: :counter)
//! ```
//!
//! Run: `call_elixir --name caller@127.0.0.1 --cookie secret --target app@127.0.0.1 --add 5`
//! prints the new total.

use std::time::Duration;

use erlkube_etf::{from_term, to_term};
use erlkube_node::{CallTarget, Node, NodeConfig};
use serde::{Deserialize, Serialize};

/// `{:add, k}`
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum Request {
    Add(i64),
}

/// `{:total, n}`
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Total(i64),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = erlkube_examples::args()?;
    let name = args
        .get("name")
        .cloned()
        .unwrap_or_else(|| "caller@127.0.0.1".into());
    let cookie = erlkube_node::find_cookie(args.get("cookie").map(String::as_str))?;
    let target = args
        .get("target")
        .ok_or_else(|| anyhow::anyhow!("--target NODE is required"))?;
    let k: i64 = args.get("add").map_or(Ok(1), |s| s.parse())?;
    let mut config = NodeConfig::new(name, cookie);
    config.hidden = true; // a client: not part of the peers' nodes()
    config.register_with_epmd = false;
    let node = Node::start(config).await?;
    let reply = node
        .gen_call(
            CallTarget::from(("counter", target.as_str())),
            to_term(&Request::Add(k))?,
            Duration::from_secs(5),
        )
        .await?;
    let Reply::Total(n) = from_term(&reply)?;
    println!("{n}");
    node.stop().await;
    Ok(())
}
