//! A Rust service in an Elixir cluster: a gen_server registered as `kv`
//! that Elixir calls with `GenServer.call({:kv, :"kv@127.0.0.1"}, request)`.
//! Requests and replies are Rust types; serde maps them to terms:
//!
//! | Elixir | Rust |
//! |---|---|
//! | `{:put, "a", 1}` | `Request::Put("a".into(), 1)` |
//! | `{:get, "a"}` | `Request::Get("a".into())` |
//! | `:ok`, `{:value, 1}`, `:not_found` | `Reply::Ok`, `Reply::Value(1)`, `Reply::NotFound` |
//! | anything else | `{:error, "…"}` (`Reply::Error`) |
//!
//! Run: `kv_service --name kv@127.0.0.1 --cookie secret`
//! (it prints `ready` once the service answers).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use erlkube_etf::{from_term, to_term, Term};
use erlkube_node::{Node, NodeConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Request {
    Put(String, i64),
    Get(String),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Ok,
    Value(i64),
    NotFound,
    Error(String),
}

fn handle(store: &Mutex<BTreeMap<String, i64>>, request: Term) -> Reply {
    let request: Request = match from_term(&request) {
        Ok(r) => r,
        Err(e) => return Reply::Error(format!("bad request {request}: {e}")),
    };
    let mut store = store.lock().expect("store");
    match request {
        Request::Put(k, v) => {
            store.insert(k, v);
            Reply::Ok
        }
        Request::Get(k) => store.get(&k).map_or(Reply::NotFound, |v| Reply::Value(*v)),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = erlkube_examples::args()?;
    let name = args
        .get("name")
        .cloned()
        .unwrap_or_else(|| "kv@127.0.0.1".into());
    let cookie = erlkube_node::find_cookie(args.get("cookie").map(String::as_str))?;
    // Registers with the local epmd (ERL_EPMD_PORT, else 4369), so BEAM
    // nodes find it by name.
    let node = Node::start(NodeConfig::new(name, cookie)).await?;
    let store = Arc::new(Mutex::new(BTreeMap::new()));
    node.serve_gen_server(
        "kv",
        move |request| {
            let reply = handle(&store, request);
            to_term(&reply).unwrap_or_else(|e| {
                Term::tuple(vec![
                    Term::atom("error"),
                    Term::binary(e.to_string().into_bytes()),
                ])
            })
        },
        |_cast| {},
    )
    .ok_or_else(|| anyhow::anyhow!("the name kv is taken"))?;
    println!("ready");
    tokio::signal::ctrl_c().await?;
    node.stop().await;
    Ok(())
}
