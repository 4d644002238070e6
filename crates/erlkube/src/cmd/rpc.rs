//! `erlkube rpc NODE MODULE FUNCTION 'ARGS'`: `rpc:call/5` from the command
//! line. ARGS is an Erlang list (`'[1, <<"x">>]'`). Prints the result in
//! Erlang syntax (exit 0); an RPC error prints the BEAM's `{badrpc, ...}`
//! term and exits 1; bad arguments exit 2. `--via HOST:PORT` dials the node
//! there (a port-forward): no name resolution, no epmd.

use std::process::ExitCode;
use std::time::Duration;

use erlkube_etf::Term;
use erlkube_node::{Node, RpcError};

#[derive(clap::Args)]
pub struct RpcArgs {
    /// The node to call, `alive@host`.
    node: String,
    /// The module.
    module: String,
    /// The function.
    function: String,
    /// The argument list in Erlang syntax, e.g. '[1, <<"x">>]'.
    #[arg(default_value = "[]")]
    args: String,
    #[command(flatten)]
    client: super::ping::ClientArgs,
    /// How long to wait for the result, with its unit (`10s`, `500ms`).
    #[arg(long, default_value = "10s", value_parser = super::parse_duration_arg)]
    timeout: Duration,
}

pub fn main(args: RpcArgs) -> ExitCode {
    super::node::init_tracing("error");
    let call_args = match erlkube_etf::parse(&args.args) {
        Ok(Term::List(ref mut items)) => std::mem::take(items),
        Ok(other) => {
            eprintln!("erlkube rpc: ARGS must be a list, got {other}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("erlkube rpc: cannot parse ARGS: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match args.client.config("rpc", &args.node) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("erlkube rpc: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let timeout = args.timeout;
    let result = rt.block_on(async {
        let node = Node::start(config).await.map_err(|e| e.to_string())?;
        // Connect first, so a failure keeps its reason (a wrong cookie, no
        // epmd entry) instead of rpc's bare `nodedown`, as `ping` reports it.
        let connected = match tokio::time::timeout(timeout, node.connect(&args.node)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(super::ping::error_chain(&e)),
            Err(_) => Err(format!("no connection to {} within {timeout:?}", args.node)),
        };
        if let Err(why) = connected {
            node.stop().await;
            println!(
                "{}",
                RpcError::NoConnection(args.node.clone()).to_rpc_result()
            );
            return Err(why);
        }
        let r = node
            .rpc_call(&args.node, &args.module, &args.function, call_args, timeout)
            .await;
        node.stop().await;
        Ok::<_, String>(r)
    });
    match result {
        Ok(Ok(v)) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(Err(
            e @ RpcError::Exception {
                class: erlkube_node::ExceptionClass::Throw,
                ..
            },
        )) => {
            // A throw: rpc:call returns the thrown value.
            println!("{}", e.to_rpc_result());
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            println!("{}", e.to_rpc_result());
            eprintln!("erlkube rpc: {}", super::ping::error_chain(&e));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("erlkube rpc: {e}");
            ExitCode::from(1)
        }
    }
}
