//! The demo services of `erlkube node`: `demo:echo/1`, `demo:add/2` over
//! RPC and a registered gen_server `echo_server` answering `{echo, Req}`;
//! [`announce`] puts the `echo` process in the pg group `erlkube_demo`
//! (scope `pg`) and under the global name `erlkube_demo_echo`.

use erlkube_etf::Term;

use crate::{Node, RpcError};

/// Installs the demo services on `node`. Fails only when `echo_server` is
/// already registered.
pub fn install(node: &Node) -> Result<(), &'static str> {
    node.register_fn("demo", "echo", 1, |mut args| Ok(args.remove(0)));
    node.register_fn("demo", "add", 2, |args| add(&args[0], &args[1]));
    node.serve_gen_server(
        "echo_server",
        |req| Term::tuple(vec![Term::atom("echo"), req]),
        |_| {},
    )
    .ok_or("echo_server is already registered")?;
    Ok(())
}

/// The pg group and global name of the demo's `echo` process.
pub const DEMO_GROUP: &str = "erlkube_demo";
/// See [`DEMO_GROUP`].
pub const DEMO_GLOBAL_NAME: &str = "erlkube_demo_echo";

/// `echo` joins pg group `erlkube_demo` in scope `pg` (when the node runs
/// that scope) and registers the global name `erlkube_demo_echo` (when
/// the name is free). A conflict found later, when partitions meet, is
/// resolved with `random_notify_name`: the loser is told, never killed.
/// What could not be done is logged, not fatal.
pub async fn announce(node: &Node, echo: &erlkube_etf::Pid) {
    match node.pg_join("pg", Term::atom(DEMO_GROUP), std::slice::from_ref(echo)) {
        Ok(()) => tracing::info!(group = DEMO_GROUP, "echo joined pg group"),
        Err(e) => tracing::warn!(error = %e, "echo did not join the demo pg group"),
    }
    match node
        .global_register_with(
            Term::atom(DEMO_GLOBAL_NAME),
            echo,
            crate::ResolveMethod::NotifyLoser,
        )
        .await
    {
        Ok(()) => tracing::info!(name = DEMO_GLOBAL_NAME, "echo registered globally"),
        Err(e) => tracing::warn!(error = %e, "echo not registered globally"),
    }
}

/// `A + B` for integers and floats; `error:badarith` otherwise, like the BEAM.
fn add(a: &Term, b: &Term) -> Result<Term, RpcError> {
    let badarith = || RpcError::Exception {
        class: crate::ExceptionClass::Error,
        reason: Term::atom("badarith"),
        stack: Term::list(vec![Term::tuple(vec![
            Term::atom("erlang"),
            Term::atom("+"),
            Term::list(vec![a.clone(), b.clone()]),
            Term::nil(),
        ])]),
    };
    match (a, b) {
        (Term::Integer(x), Term::Integer(y)) => Ok(match x.checked_add(*y) {
            Some(s) => Term::Integer(s),
            None => Term::Float(*x as f64 + *y as f64),
        }),
        (Term::Float(x), Term::Float(y)) => Ok(Term::Float(x + y)),
        (Term::Integer(x), Term::Float(y)) | (Term::Float(y), Term::Integer(x)) => {
            Ok(Term::Float(*x as f64 + y))
        }
        _ => Err(badarith()),
    }
}
