//! Examples a Rust developer copies from (each a binary in `src/bin/`,
//! each run against real `erl`/`elixir` by `tests/examples.rs`):
//!
//! - `kv_service`: a Rust node answering `GenServer.call({:kv, node}, …)`
//!   from Elixir with serde-typed requests and replies;
//! - `call_elixir`: a Rust node calling an Elixir GenServer, serde-typed;
//! - `dns_join`: a Rust node joining a cluster found through DNS (`dns_a`
//!   discovery and the formation engine).
//!
//! This library holds only what the three share: reading the node's name
//! and cookie from the command line.

/// `--name NAME --cookie COOKIE` and the rest as `(flag, value)` pairs.
pub fn args() -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(key) = flag.strip_prefix("--") else {
            anyhow::bail!("unexpected argument {flag:?}: flags are --key value");
        };
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}
