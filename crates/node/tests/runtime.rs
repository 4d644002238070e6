//! Runtime interop with real OTP 25 `erl` and Elixir 1.14: RPC and
//! gen_server calls both ways, links, monitors, `erl_call`, `global`.
//!
//! Each test starts OTP's epmd on a free port (never 4369); every child is
//! killed on drop. Tests fail, not skip, when erl/elixir are missing.

use std::sync::Arc;
use std::time::Duration;

use erlkube_etf::Term;
use erlkube_node::{CallError, Cookie, ExceptionClass, Node, NodeConfig, RpcError};
use erlkube_testkit::{unique_name, ErlNode, OtpEpmd, Runtime};

const COOKIE: &str = "erlkube_runtime_cookie";
const T: Duration = Duration::from_secs(10);

async fn rust_node(test: &str, epmd: &OtpEpmd) -> Node {
    let mut c = NodeConfig::new(
        format!("{}@127.0.0.1", unique_name(&format!("rust_{test}"))),
        Cookie::new(COOKIE),
    );
    c.epmd_port = epmd.port();
    c.setup_timeout = Duration::from_secs(5);
    Node::start(c).await.expect("rust node starts")
}

fn beam(test: &str, epmd: &OtpEpmd, runtime: Runtime) -> Arc<ErlNode> {
    Arc::new(
        ErlNode::builder(&unique_name(test))
            .runtime(runtime)
            .cookie(COOKIE)
            .epmd_port(epmd.port())
            .start()
            .expect("erl/elixir must be installed"),
    )
}

/// Evaluates on the BEAM node from a blocking thread, so the in-process
/// Rust node keeps serving meanwhile.
async fn eval(n: &Arc<ErlNode>, expr: &str) -> String {
    let n = n.clone();
    let expr = expr.to_owned();
    tokio::task::spawn_blocking(move || n.eval(&expr))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("eval failed: {e}"))
}

fn parse(s: &str) -> Term {
    erlkube_etf::parse(s).unwrap_or_else(|e| panic!("cannot parse {s:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rust_rpc_client_calls_beam() {
    let epmd = OtpEpmd::start().unwrap();
    let b = beam("rpc_client", &epmd, Runtime::Erlang);
    let rust = rust_node("rpc_client", &epmd).await;
    let node = b.node_name();

    let r = rust.rpc_call(node, "erlang", "node", vec![], T).await;
    assert_eq!(r, Ok(Term::atom(node)));

    let r = rust
        .rpc_call(
            node,
            "lists",
            "reverse",
            vec![parse("[1, 2, <<\"x\">>]")],
            T,
        )
        .await;
    assert_eq!(r, Ok(parse("[<<\"x\">>, 2, 1]")));

    // Unknown function: error:undef with the BEAM's stack.
    let r = rust
        .rpc_call(node, "nomod", "nofun", vec![Term::Integer(1)], T)
        .await;
    match r {
        Err(RpcError::Exception {
            class,
            reason,
            stack,
        }) => {
            assert_eq!(class, ExceptionClass::Error);
            assert_eq!(reason, Term::atom("undef"));
            assert_eq!(stack, parse("[{nomod, nofun, [1], []}]"));
        }
        other => panic!("expected undef, got {other:?}"),
    }
    // throw / exit.
    let r = rust
        .rpc_call(node, "erlang", "throw", vec![Term::atom("t")], T)
        .await;
    assert_eq!(r, Err(RpcError::throw(Term::atom("t"))));
    let r = rust
        .rpc_call(node, "erlang", "exit", vec![Term::atom("bye")], T)
        .await;
    assert_eq!(r, Err(RpcError::exit(Term::atom("bye"))));
    // Timeout.
    let r = rust
        .rpc_call(
            node,
            "timer",
            "sleep",
            vec![Term::Integer(5000)],
            Duration::from_millis(200),
        )
        .await;
    assert_eq!(r, Err(RpcError::Timeout));
    // The BEAM node dies during a call: noconnection.
    let call = {
        let rust = rust.clone();
        let node = node.to_owned();
        tokio::spawn(async move {
            rust.rpc_call(
                &node,
                "timer",
                "sleep",
                vec![Term::Integer(20000)],
                Duration::from_secs(30),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = eval(&b, "spawn(fun() -> timer:sleep(50), erlang:halt() end), ok").await;
    let r = call.await.unwrap();
    assert!(matches!(r, Err(RpcError::NoConnection(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rust_gen_call_into_elixir_agent() {
    let epmd = OtpEpmd::start().unwrap();
    let b = beam("agent", &epmd, Runtime::Elixir);
    let rust = rust_node("agent", &epmd).await;
    let node = b.node_name().to_owned();
    let r = eval(
        &b,
        "{ok, _} = 'Elixir.Agent':start(fun() -> 42 end, [{name, ag}]), ok",
    )
    .await;
    assert_eq!(r, "ok");
    // Agent.get(ag, :erlang, :+, [1]) sends {get, {erlang, '+', [1]}}.
    let r = rust
        .gen_call(("ag", node.as_str()), parse("{get, {erlang, '+', [1]}}"), T)
        .await;
    assert_eq!(r, Ok(Term::Integer(43)));
    // A name nobody holds: noproc.
    let r = rust
        .gen_call(("nobody", node.as_str()), Term::atom("x"), T)
        .await;
    assert_eq!(r, Err(CallError::Exit(Term::atom("noproc"))));
    // The server crashes while handling the call (exit(42)): its reason.
    let r = rust
        .gen_call(("ag", node.as_str()), parse("{get, {erlang, exit, []}}"), T)
        .await;
    match r {
        Err(CallError::Exit(reason)) => assert_eq!(reason, Term::Integer(42)),
        other => panic!("expected the agent's exit, got {other:?}"),
    }
}

async fn demo_node(test: &str, epmd: &OtpEpmd) -> Node {
    let n = rust_node(test, epmd).await;
    erlkube_node::demo::install(&n).unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn elixir_calls_rust_gen_server_and_rpc() {
    let epmd = OtpEpmd::start().unwrap();
    let b = beam("ex_calls", &epmd, Runtime::Elixir);
    let rust = demo_node("ex_calls", &epmd).await;
    let r = rust.name();
    let code = |s: &str| {
        format!(
            "element(1, 'Elixir.Code':eval_string(<<\"{}\">>, [{{r, '{r}'}}]))",
            s.replace('"', "\\\"")
        )
    };
    assert_eq!(
        eval(&b, &code("GenServer.call({:echo_server, r}, :hi)")).await,
        "{echo,hi}"
    );
    assert_eq!(
        eval(&b, &code(":rpc.call(r, :demo, :add, [1, 2])")).await,
        "3"
    );
    assert_eq!(
        eval(&b, &code(":erpc.call(r, :demo, :add, [1, 2])")).await,
        "3"
    );
    assert_eq!(
        eval(&b, &code(":rpc.call(r, :demo, :echo, [%{a: [1, \"x\"]}])")).await,
        "#{a => [1,<<\"x\">>]}"
    );
    // Unknown function: the same shapes as from a BEAM node.
    assert_eq!(
        eval(&b, &code(":rpc.call(r, :nomod, :nofun, [1])")).await,
        "{badrpc,{'EXIT',{undef,[{nomod,nofun,[1],[]}]}}}"
    );
    let beam_shape = eval(
        &b,
        "try erpc:call(node(), nomod, nofun, [1]) catch C:E -> {C, E} end",
    )
    .await;
    let rust_shape = eval(
        &b,
        &format!("try erpc:call('{r}', nomod, nofun, [1]) catch C:E -> {{C, E}} end"),
    )
    .await;
    assert_eq!(rust_shape, beam_shape);
    assert_eq!(
        rust_shape,
        "{error,{exception,undef,[{nomod,nofun,[1],[]}]}}"
    );
    // badarith from demo:add, as error with a stack.
    assert_eq!(
        eval(&b, &format!("rpc:call('{r}', demo, add, [a, 1])")).await,
        "{badrpc,{'EXIT',{badarith,[{erlang,'+',[a,1],[]}]}}}"
    );
    // A cast reaches the gen_server without breaking it; monitor on the name works.
    assert_eq!(
        eval(&b, &format!("gen_server:cast({{echo_server, '{r}'}}, x), gen_server:call({{echo_server, '{r}'}}, y)")).await,
        "{echo,y}"
    );
    // noproc for a name nobody holds on the Rust node.
    assert_eq!(
        eval(&b, &format!("catch gen_server:call({{nobody, '{r}'}}, y)")).await,
        format!("{{'EXIT',{{noproc,{{gen_server,call,[{{nobody,'{r}'}},y]}}}}}}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn erl_call_uses_rex_on_rust_node() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = demo_node("erl_call", &epmd).await;
    let name = rust.name().to_owned();
    let port = epmd.port();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("erl_call")
            .env("ERL_EPMD_PORT", port.to_string())
            .args(["-c", COOKIE, "-n", &name, "-a", "demo echo [hello]"])
            .output()
    })
    .await
    .unwrap()
    .expect("erl_call must be installed (OTP)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "erl_call failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "hello");
}
