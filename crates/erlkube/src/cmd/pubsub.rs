//! `erlkube pubsub subscribe|broadcast SERVER TOPIC`: Phoenix.PubSub (the
//! default pg adapter) from the command line, for debugging. The command
//! joins the cluster through `--node` as a visible node (pg scopes only
//! talk to visible nodes), registered with epmd so the other members can
//! reach it too.
//!
//! `subscribe` prints "subscribed" on stderr once `--node`'s pg lists this
//! node's worker, then each message on the topic in Erlang syntax, one per
//! line (until SIGINT/SIGTERM, or `--count` messages). `broadcast` parses
//! TERM in Erlang syntax, waits until `--node`'s worker is seen, sends the
//! message to every node's subscribers and exits 0; exit 1 when no worker
//! is seen within `--timeout`, 2 for bad arguments.

use std::process::ExitCode;
use std::time::Duration;

use erlkube_etf::Term;
use erlkube_node::{long_name, Node, NodeConfig, PUBSUB_SCOPE};
use erlkube_proto::name::{check_node_name, NameMode};

#[derive(clap::Subcommand)]
pub enum PubSubCommand {
    /// Print each message broadcast on TOPIC of SERVER, in Erlang syntax.
    Subscribe {
        /// The Phoenix.PubSub server's name, e.g. MyApp.PubSub.
        server: String,
        /// The topic, e.g. room:lobby.
        topic: String,
        /// Exit after this many messages (default: run until SIGINT/SIGTERM).
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
    /// Broadcast TERM (Erlang syntax) on TOPIC of SERVER to every node.
    Broadcast {
        /// The Phoenix.PubSub server's name, e.g. MyApp.PubSub.
        server: String,
        /// The topic, e.g. room:lobby.
        topic: String,
        /// The message in Erlang syntax, e.g. '{new_msg, <<"hi">>}'.
        term: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Args)]
pub struct Common {
    /// A node of the cluster running the PubSub server, `alive@host`.
    #[arg(long)]
    node: String,
    #[command(flatten)]
    cookie: super::CookieArgs,
    /// This node's long name (default: `erlkube_pubsub_<pid>` on the target's host).
    #[arg(long)]
    name: Option<String>,
    /// The PubSub server's `:pool_size` (listener groups to join).
    #[arg(long, default_value_t = 1)]
    pool_size: u32,
    /// How long to wait for the connection and the membership, with its unit.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration_arg)]
    timeout: Duration,
    /// The epmd port.
    #[arg(long, env = "ERL_EPMD_PORT", default_value_t = 4369)]
    epmd_port: u16,
}

pub fn main(cmd: PubSubCommand) -> ExitCode {
    super::node::init_tracing("error");
    let (server, topic, common) = match &cmd {
        PubSubCommand::Subscribe {
            server,
            topic,
            common,
            ..
        }
        | PubSubCommand::Broadcast {
            server,
            topic,
            common,
            ..
        } => (server.clone(), topic.clone(), common),
    };
    let message = match &cmd {
        PubSubCommand::Broadcast { term, .. } => match erlkube_etf::parse(term) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("erlkube pubsub: cannot parse TERM: {e}");
                return ExitCode::from(2);
            }
        },
        PubSubCommand::Subscribe { .. } => None,
    };
    let count = match &cmd {
        PubSubCommand::Subscribe { count, .. } => *count,
        PubSubCommand::Broadcast { .. } => None,
    };
    let host = match check_node_name(&common.node, NameMode::Any) {
        Ok((_, h)) => h.to_owned(),
        Err(e) => {
            eprintln!("erlkube pubsub: --node: {e}");
            return ExitCode::from(2);
        }
    };
    let own = match &common.name {
        Some(n) => long_name(n),
        None => Ok(format!("erlkube_pubsub_{}@{host}", std::process::id())),
    };
    let (own, cookie) = match (own, common.cookie.find()) {
        (Ok(o), Ok(c)) => (o, c),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("erlkube pubsub: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = NodeConfig::new(own, cookie);
    config.epmd_port = common.epmd_port;
    config.pg_scopes = Vec::new();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = rt.block_on(run(config, common, server, topic, message, count));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("erlkube pubsub: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(
    config: NodeConfig,
    common: &Common,
    server: String,
    topic: String,
    message: Option<Term>,
    count: Option<u64>,
) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let node = Node::start(config).await.map_err(|e| e.to_string())?;
    let target = common.node.clone();
    let timeout = common.timeout;
    match tokio::time::timeout(timeout, node.connect(&target)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(super::ping::error_chain(&e)),
        Err(_) => return Err(format!("no connection to {target} within {timeout:?}")),
    }
    node.pubsub_start(&server, common.pool_size)
        .map_err(|e| e.to_string())?;
    let out = match message {
        Some(msg) => broadcast(&node, &target, &server, &topic, msg, timeout).await,
        None => {
            let sub = node
                .pubsub_subscribe(&server, &topic)
                .map_err(|e| e.to_string())?;
            tokio::select! {
                r = subscribe(&node, &target, &server, sub, count, timeout) => r,
                _ = term.recv() => Ok(()),
                _ = int.recv() => Ok(()),
            }
        }
    };
    node.stop().await;
    out
}

/// The adapter's group (`Module.concat(Server, "Adapter")`).
fn adapter(server: &str) -> Term {
    let bare = server.strip_prefix("Elixir.").unwrap_or(server);
    Term::atom(&format!("Elixir.{bare}.Adapter"))
}

/// Waits until `cond` holds, polling every 50 ms, for at most `timeout`.
async fn wait_for<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn broadcast(
    node: &Node,
    target: &str,
    server: &str,
    topic: &str,
    msg: Term,
    timeout: Duration,
) -> Result<(), String> {
    let group = adapter(server);
    let seen = wait_for(timeout, || async {
        node.pg_members(PUBSUB_SCOPE, &group)
            .unwrap_or_default()
            .iter()
            .any(|p| p.node.as_str() == target)
    })
    .await;
    if !seen {
        return Err(format!(
            "no PubSub worker of {server} on {target} within {timeout:?} \
             (is Phoenix.PubSub running there with the default PG2 adapter?)"
        ));
    }
    node.pubsub_broadcast(server, topic, msg)
        .await
        .map_err(|e| e.to_string())
}

async fn subscribe(
    node: &Node,
    target: &str,
    server: &str,
    mut sub: erlkube_node::Subscription,
    count: Option<u64>,
    timeout: Duration,
) -> Result<(), String> {
    let group = adapter(server);
    let worker = node
        .pubsub_worker(server)
        .ok_or("the PubSub worker is not running")?;
    // Subscribed once the target's pg lists this node's worker.
    let listed = wait_for(timeout, || async {
        let members = node
            .rpc_call(
                target,
                "pg",
                "get_members",
                vec![Term::atom(PUBSUB_SCOPE), group.clone()],
                timeout,
            )
            .await;
        matches!(members, Ok(Term::List(ref v)) if v.contains(&Term::Pid(worker.clone())))
    })
    .await;
    if !listed {
        return Err(format!(
            "{target} did not list this node in {server}'s group within {timeout:?} \
             (is Phoenix.PubSub running there with the default PG2 adapter?)"
        ));
    }
    eprintln!("subscribed to {} on {server}", sub.topic());
    let mut n = 0u64;
    while count.is_none_or(|c| n < c) {
        let Some(m) = sub.recv().await else { break };
        println!("{m}");
        n += 1;
    }
    Ok(())
}
