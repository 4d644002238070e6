//! The demo services of `erlkube node`: `demo:echo/1`, `demo:add/2` over
//! RPC and a registered gen_server `echo_server` answering `{echo, Req}`.

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
