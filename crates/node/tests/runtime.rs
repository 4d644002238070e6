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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
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
/// An expression that waits on the BEAM node, at most 10 s, until
/// `cond` is true, and gives `true` (or `false` if it never was): waits
/// for an event there instead of sleeping here.
fn until_true(cond: &str) -> String {
    format!(
        "W = fun W(0) -> false; W(K) -> case {cond} of true -> true; \
         false -> receive after 20 -> W(K - 1) end end end, W(500)"
    )
}

fn eval(n: &Arc<ErlNode>, expr: &str) -> impl std::future::Future<Output = String> + 'static {
    let n = n.clone();
    let expr = expr.to_owned();
    async move {
        tokio::task::spawn_blocking(move || n.eval(&expr))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("eval failed: {e}"))
    }
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
    // The call is running on the BEAM (a process sleeps in it) before
    // the node goes.
    assert_eq!(
        eval(&b, &until_true("[P || P <- processes(), erlang:process_info(P, current_function) =:= {current_function, {timer, sleep, 1}}] =/= []")).await,
        "true"
    );
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
    // spawn of an unknown function: the process dies with undef, as on a BEAM.
    let spawn_undef = |n: &str| {
        format!("{{_, Ref}} = spawn_monitor('{n}', nomod, nofun, [1]), receive {{'DOWN', Ref, process, _, Why}} -> Why after 10000 -> timeout end")
    };
    let beam_undef = eval(&b, &spawn_undef(b.node_name())).await;
    assert_eq!(eval(&b, &spawn_undef(r)).await, beam_undef);
    // An async Rust function, and a panicking one (the node stays up).
    rust.register_async_fn("t", "later", 1, |mut args| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(args.remove(0))
    });
    rust.register_fn("t", "boom", 0, |_| panic!("boom"));
    assert_eq!(
        eval(&b, &code(":erpc.call(r, :t, :later, [:x])")).await,
        "x"
    );
    assert_eq!(eval(&b, &code(":rpc.call(r, :t, :later, [:y])")).await, "y");
    assert_eq!(
        eval(&b, &code(":rpc.call(r, :t, :boom, [])")).await,
        "{badrpc,{'EXIT',{rust_panic,[]}}}"
    );
    assert_eq!(
        eval(&b, &code(":rpc.call(r, :demo, :add, [2, 2])")).await,
        "4"
    );
    // rex answers features_request like OTP's rpc.erl.
    assert_eq!(
        eval(&b, &format!("{{rex, '{r}'}} ! {{self(), features_request}}, receive {{features_reply, N, F}} -> {{N, F}} after 10000 -> timeout end")).await,
        format!("{{'{r}',[erpc]}}")
    );
    // noproc for a name nobody holds on the Rust node.
    assert_eq!(
        eval(&b, &format!("catch gen_server:call({{nobody, '{r}'}}, y)")).await,
        format!("{{'EXIT',{{noproc,{{gen_server,call,[{{nobody,'{r}'}},y]}}}}}}")
    );
}

/// A process spawned by an `erpc` call takes its first step on the
/// task of the connection that carried the request (no hand-off: the
/// same task id for every call), goes on as a task of its own after it
/// first waits, and a function whose first step kept the connection
/// waiting (here it blocks 5 ms, against the rules of async code) has its
/// later processes started as tasks: one that blocks then no longer
/// holds the connection. A panic, before or after a wait, is
/// `error:rust_panic` on the caller's side, and the connection stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spawned_processes_take_their_first_step_on_the_connection_unless_it_took_too_long() {
    let epmd = OtpEpmd::start().unwrap();
    let b = beam("first_step", &epmd, Runtime::Erlang);
    let rust = demo_node("first_step", &epmd).await;
    let r = rust.name().to_owned();
    let task_id = || Term::Binary(format!("{:?}", tokio::task::try_id()).into_bytes().into());
    rust.register_async_fn("t", "where", 0, move |_| {
        let first = task_id();
        async move {
            tokio::task::yield_now().await;
            Ok(Term::tuple(vec![first, task_id()]))
        }
    });
    let wheres = eval(
        &b,
        &format!("[erpc:call('{r}', t, where, [], 10000) || _ <- [1, 2, 3]]"),
    )
    .await;
    let wheres = parse(&wheres);
    let pairs: Vec<(Term, Term)> = wheres
        .as_list()
        .expect("a list")
        .iter()
        .map(|t| match t.as_tuple() {
            Some([a, b]) => (a.clone(), b.clone()),
            _ => panic!("not a pair: {t}"),
        })
        .collect();
    assert_eq!(pairs.len(), 3);
    assert!(
        pairs.iter().all(|(first, _)| *first == pairs[0].0),
        "first steps on one task (the connection's): {wheres}"
    );
    assert!(
        pairs.iter().all(|(first, later)| first != later),
        "after a wait each process is a task of its own: {wheres}"
    );
    assert_ne!(pairs[0].1, pairs[1].1, "{wheres}");

    // t:hold/0 blocks 5 ms in its first step on its first call; later
    // calls block until the test lets them go (at most 20 s).
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (go, gate) = std::sync::mpsc::channel::<()>();
    let gate = Arc::new(std::sync::Mutex::new(gate));
    rust.register_async_fn("t", "hold", 0, move |_| {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let gate = gate.clone();
        async move {
            if n == 0 {
                std::thread::sleep(Duration::from_millis(5));
            } else {
                // Blocks this step, not the runtime: `block_in_place`
                // hands the worker's other tasks (and its turn at the
                // I/O driver) to another thread, so only the task being
                // polled waits. A bare blocking call would stall the
                // runtime's I/O for every connection alike (tokio does
                // not promise another worker polls the driver), which
                // is not what this test is about.
                tokio::task::block_in_place(|| {
                    let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(20));
                });
            }
            Ok(Term::atom("held"))
        }
    });
    assert_eq!(
        eval(&b, &format!("erpc:call('{r}', t, hold, [], 10000)")).await,
        "held"
    );
    // The holder's request goes out first on the connection; then, while
    // its process blocks, the same connection answers another call.
    let answered = eval(
        &b,
        &format!(
            "Self = self(), register(holder, spawn(fun() -> \
               Req = erpc:send_request('{r}', t, hold, []), Self ! sent, \
               V = (catch erpc:receive_response(Req, 30000)), \
               receive {{get, P}} -> P ! V end end)), \
             receive sent -> ok end, \
             catch erpc:call('{r}', demo, echo, [answered], 5000)"
        ),
    )
    .await;
    go.send(()).unwrap();
    assert_eq!(answered, "answered", "the connection was held");
    assert_eq!(
        eval(
            &b,
            "holder ! {get, self()}, receive V -> V after 30000 -> timeout end"
        )
        .await,
        "held"
    );

    rust.register_async_fn("t", "panic_now", 0, |_| async move {
        panic!("first step");
    });
    rust.register_async_fn("t", "panic_later", 0, |_| async move {
        tokio::task::yield_now().await;
        panic!("after a wait");
    });
    for f in ["panic_now", "panic_later"] {
        assert_eq!(
            eval(&b, &format!("rpc:call('{r}', t, {f}, [])")).await,
            "{badrpc,{'EXIT',{rust_panic,[]}}}",
            "{f}"
        );
    }
    assert_eq!(
        eval(&b, &format!("erpc:call('{r}', demo, echo, [up], 5000)")).await,
        "up"
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

/// A BEAM expression's pid, sent to the Rust process `inbox`.
async fn beam_pid(
    b: &Arc<ErlNode>,
    inbox: &mut erlkube_node::Process,
    rust: &Node,
    expr: &str,
) -> erlkube_etf::Pid {
    let r = eval(
        b,
        &format!("P = {expr}, {{inbox, '{}'}} ! {{pid, P}}, ok", rust.name()),
    )
    .await;
    assert_eq!(r, "ok");
    loop {
        let m = inbox.recv_timeout(T).await.expect("pid from the BEAM");
        if let Some([tag, Term::Pid(p)]) = m.as_tuple() {
            if *tag == Term::atom("pid") {
                return p.clone();
            }
        }
    }
}

fn is_exit(m: &Term, from: &erlkube_etf::Pid, reason: &Term) -> bool {
    matches!(m.as_tuple(), Some([t, Term::Pid(f), r]) if *t == Term::atom("EXIT") && f == from && r == reason)
}

fn down_reason(m: &Term, r: &erlkube_etf::Reference) -> Option<(Term, Term)> {
    match m.as_tuple() {
        Some([t, Term::Reference(mr), _, obj, reason])
            if *t == Term::atom("DOWN") && **mr == *r =>
        {
            Some((obj.clone(), reason.clone()))
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn links_and_monitors_both_ways() {
    let epmd = OtpEpmd::start().unwrap();
    let b = beam("links", &epmd, Runtime::Erlang);
    let rust = demo_node("links", &epmd).await;
    let bn = b.node_name().to_owned();
    rust.connect(&bn).await.unwrap();
    let mut inbox = rust.spawn_registered("inbox").unwrap();
    let rn = rust.name().to_owned();

    // 1. A trapping Rust process linked to a BEAM process that exits with boom.
    let r1 = rust.spawn_process();
    r1.trap_exit(true);
    let mut r1 = r1;
    let p = beam_pid(
        &b,
        &mut inbox,
        &rust,
        "spawn(fun() -> receive go -> exit(boom) end end)",
    )
    .await;
    r1.link(&p);
    rust.send(&p, Term::atom("go")).await.unwrap();
    let m = r1.recv_timeout(T).await.expect("EXIT message");
    assert!(is_exit(&m, &p, &Term::atom("boom")), "{m}");

    // 2. A non-trapping Rust process dies with the crash of its BEAM link,
    //    and its other link (a trapping BEAM watcher) gets the reason.
    let mut r2 = rust.spawn_process();
    let r2pid = r2.pid().clone();
    rust.register_fn("t", "r2", 0, move |_| Ok(Term::Pid(r2pid.clone())));
    let w = beam_pid(&b, &mut inbox, &rust, &format!(
        "begin Parent = self(), spawn(fun() -> process_flag(trap_exit, true), link(rpc:call('{rn}', t, r2, [])), Parent ! linked, receive {{'EXIT', _, R}} -> Parent ! {{watcher, R}} end end) end"
    )).await;
    let _ = w;
    assert_eq!(
        eval(&b, "receive linked -> ok after 10000 -> timeout end").await,
        "ok"
    );
    let crasher = beam_pid(
        &b,
        &mut inbox,
        &rust,
        "spawn(fun() -> receive go -> exit(crash) end end)",
    )
    .await;
    r2.link(&crasher);
    rust.send(&crasher, Term::atom("go")).await.unwrap();
    assert_eq!(r2.recv_timeout(T).await, None, "r2 ends");
    assert_eq!(r2.exit_reason(), Some(Term::atom("crash")));
    assert_eq!(
        eval(&b, "receive {watcher, R} -> R after 10000 -> timeout end").await,
        "crash"
    );

    // 3. Unlink (UNLINK_ID): a later crash does not reach the Rust process.
    let mut r3 = rust.spawn_process();
    let q = beam_pid(
        &b,
        &mut inbox,
        &rust,
        "spawn(fun() -> receive go -> exit(crash) end end)",
    )
    .await;
    r3.link(&q);
    r3.unlink(&q);
    let mon = r3.monitor(&q);
    rust.send(&q, Term::atom("go")).await.unwrap();
    let m = r3.recv_timeout(T).await.expect("DOWN");
    assert_eq!(
        down_reason(&m, &mon),
        Some((Term::Pid(q.clone()), Term::atom("crash")))
    );
    assert!(r3.is_alive());

    // 4. Rust monitors: normal exit, a kill, a missing name.
    let mut r4 = rust.spawn_process();
    let n = beam_pid(
        &b,
        &mut inbox,
        &rust,
        "spawn(fun() -> receive go -> ok end end)",
    )
    .await;
    let mon = r4.monitor(&n);
    rust.send(&n, Term::atom("go")).await.unwrap();
    let m = r4.recv_timeout(T).await.expect("DOWN");
    assert_eq!(
        down_reason(&m, &mon),
        Some((Term::Pid(n.clone()), Term::atom("normal")))
    );
    let k = beam_pid(
        &b,
        &mut inbox,
        &rust,
        "spawn(fun() -> receive after infinity -> ok end end)",
    )
    .await;
    let mon = r4.monitor(&k);
    rust.exit_signal(r4.pid(), &k, Term::atom("kill"));
    let m = r4.recv_timeout(T).await.expect("DOWN");
    assert_eq!(
        down_reason(&m, &mon),
        Some((Term::Pid(k.clone()), Term::atom("killed")))
    );
    let mon = r4.monitor_name("no_such_name", &bn);
    let m = r4.recv_timeout(T).await.expect("DOWN");
    assert_eq!(
        down_reason(&m, &mon),
        Some((
            parse(&format!("{{no_such_name, '{bn}'}}")),
            Term::atom("noproc")
        ))
    );
    // By name, of a registered BEAM process that crashes.
    let _ = beam_pid(&b, &mut inbox, &rust, "begin X = spawn(fun() -> receive go -> exit(bang) end end), register(named_victim, X), X end").await;
    let mon = r4.monitor_name("named_victim", &bn);
    rust.send_named(r4.pid(), &bn, "named_victim", Term::atom("go"))
        .await
        .unwrap();
    let m = r4.recv_timeout(T).await.expect("DOWN");
    assert_eq!(
        down_reason(&m, &mon),
        Some((
            parse(&format!("{{named_victim, '{bn}'}}")),
            Term::atom("bang")
        ))
    );

    // 5. The BEAM monitors Rust processes: by pid (crash reason), by a
    //    missing name (noproc), and a Rust process ending normally.
    let r5 = rust.spawn_registered("r5").unwrap();
    let got = eval(&b, &format!(
        "Ref = erlang:monitor(process, {{r5, '{rn}'}}), {{inbox, '{rn}'}} ! {{pid, self()}}, receive {{'DOWN', Ref, process, Obj, Why}} -> {{Obj, Why}} after 10000 -> timeout end"
    ));
    // The eval runs while Rust ends r5 with a reason.
    let ended = async {
        let _ = inbox.recv_timeout(T).await;
        r5.exit(Term::atom("crashed"));
    };
    let (got, ()) = tokio::join!(got, ended);
    assert_eq!(got, format!("{{{{r5,'{rn}'}},crashed}}"));
    let got = eval(&b, &format!(
        "Ref = erlang:monitor(process, {{nobody, '{rn}'}}), receive {{'DOWN', Ref, process, _, Why}} -> Why after 10000 -> timeout end"
    )).await;
    assert_eq!(got, "noproc");
    let r6 = rust.spawn_process();
    let r6pid = r6.pid().clone();
    rust.register_fn("t", "r6", 0, move |_| Ok(Term::Pid(r6pid.clone())));
    let got = eval(&b, &format!(
        "P = rpc:call('{rn}', t, r6, []), Ref = erlang:monitor(process, P), {{inbox, '{rn}'}} ! {{pid, self()}}, receive {{'DOWN', Ref, process, _, Why}} -> Why after 10000 -> timeout end"
    ));
    let ended = async {
        let _ = inbox.recv_timeout(T).await;
        drop(r6);
    };
    let (got, ()) = tokio::join!(got, ended);
    assert_eq!(got, "normal");
    // A BEAM process linked to a Rust process that is killed by exit/2.
    let r7 = rust.spawn_process();
    let r7pid = r7.pid().clone();
    rust.register_fn("t", "r7", 0, move |_| Ok(Term::Pid(r7pid.clone())));
    let got = eval(&b, &format!(
        "process_flag(trap_exit, true), P = rpc:call('{rn}', t, r7, []), link(P), exit(P, kill), R = receive {{'EXIT', P, Why}} -> Why after 10000 -> timeout end, process_flag(trap_exit, false), R"
    )).await;
    assert_eq!(got, "killed");
    assert!(!r7.is_alive());
    // A BEAM process links to a Rust process and unlinks (UNLINK_ID, acked
    // by the Rust node); the Rust process's later crash does not reach it,
    // while a second, still linked BEAM process gets the EXIT. The rpc
    // round trip after that EXIT flushes anything else the Rust node sent.
    let r8 = rust.spawn_process();
    let r8pid = r8.pid().clone();
    rust.register_fn("t", "r8", 0, move |_| Ok(Term::Pid(r8pid.clone())));
    let got = eval(&b, &format!(
        "process_flag(trap_exit, true), P = rpc:call('{rn}', t, r8, []), link(P), unlink(P),          Self = self(), W = spawn(fun() -> process_flag(trap_exit, true), link(P), Self ! linked,          receive {{'EXIT', P, Why}} -> Self ! {{w, Why}} end end),          receive linked -> ok end, {{inbox, '{rn}'}} ! {{pid, self()}},          R = receive {{w, Why}} -> rpc:call('{rn}', demo, echo, [sync]), receive {{'EXIT', P, _}} -> unlink_broken after 0 -> Why end after 10000 -> timeout end,          process_flag(trap_exit, false), R"
    ));
    let ended = async {
        let _ = inbox.recv_timeout(T).await;
        r8.exit(Term::atom("crash8"));
    };
    let (got, ()) = tokio::join!(got, ended);
    assert_eq!(got, "crash8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn noconnection_both_ways() {
    let epmd = OtpEpmd::start().unwrap();
    let b = beam("noconn", &epmd, Runtime::Erlang);
    let watcher = beam("noconn_w", &epmd, Runtime::Erlang);
    let rust = rust_node("noconn", &epmd).await;
    let bn = b.node_name().to_owned();
    rust.connect(&bn).await.unwrap();
    let mut inbox = rust.spawn_registered("inbox").unwrap();
    let rn = rust.name().to_owned();

    // The BEAM side: a process monitoring a Rust process gets noconnection
    // when the connection goes.
    let rp = rust.spawn_registered("target").unwrap();
    let _ = &rp;
    let got = eval(&watcher, &format!(
        "Ref = erlang:monitor(process, {{target, '{rn}'}}), {{inbox, '{rn}'}} ! {{pid, self()}}, receive {{'DOWN', Ref, process, _, Why}} -> Why after 10000 -> timeout end"
    ));
    let wn = watcher.node_name().to_owned();
    let cut = async {
        let _ = inbox.recv_timeout(T).await;
        assert!(rust.disconnect(&wn));
    };
    let (got, ()) = tokio::join!(got, cut);
    assert_eq!(got, "noconnection");

    // The Rust side: link + monitor on BEAM processes, then the BEAM node dies.
    let r = rust.spawn_process();
    r.trap_exit(true);
    let mut r = r;
    let p = beam_pid(
        &b,
        &mut inbox,
        &rust,
        "spawn(fun() -> receive after infinity -> ok end end)",
    )
    .await;
    r.link(&p);
    let mon = r.monitor(&p);
    let mut nm = rust.spawn_process();
    nm.monitor_node(&bn);
    // Make sure the link and monitor reached the BEAM before it dies.
    assert_eq!(eval(&b, "ok").await, "ok");
    let mut b = Arc::try_unwrap(b).expect("one owner");
    b.kill();
    let mut got_exit = false;
    let mut got_down = false;
    while !(got_exit && got_down) {
        let m = r.recv_timeout(T).await.expect("EXIT and DOWN");
        got_exit |= is_exit(&m, &p, &Term::atom("noconnection"));
        got_down |=
            down_reason(&m, &mon) == Some((Term::Pid(p.clone()), Term::atom("noconnection")));
    }
    let m = nm.recv_timeout(T).await.expect("nodedown");
    assert_eq!(m, parse(&format!("{{nodedown, '{bn}'}}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn global_and_pg_with_a_visible_rust_node() {
    let epmd = OtpEpmd::start().unwrap();
    let a = beam("glob_a", &epmd, Runtime::Erlang);
    let b = beam("glob_b", &epmd, Runtime::Erlang);
    let c = beam("glob_c", &epmd, Runtime::Erlang);
    let rust = rust_node("glob", &epmd).await;
    let rn = rust.name().to_owned();
    for n in [&a, &b, &c] {
        rust.connect(n.node_name()).await.unwrap();
    }
    // Full mesh among the BEAM nodes too.
    assert_eq!(
        eval(
            &a,
            &format!(
                "[net_adm:ping('{}'), net_adm:ping('{}')]",
                b.node_name(),
                c.node_name()
            )
        )
        .await,
        "[pong,pong]"
    );
    for n in [&a, &b, &c] {
        assert_eq!(
            eval(n, &format!("lists:member('{rn}', nodes())")).await,
            "true"
        );
        assert_eq!(
            eval(n, "global:sync()").await,
            "ok",
            "global:sync on {}",
            n.node_name()
        );
    }
    assert_eq!(
        eval(&a, "global:register_name(erlkube_glob, self())").await,
        "yes"
    );
    let an = a.node_name().to_owned();
    for n in [&a, &b, &c] {
        assert_eq!(eval(n, "global:sync()").await, "ok");
        assert_eq!(
            eval(n, "node(global:whereis_name(erlkube_glob))").await,
            format!("'{an}'")
        );
    }
    // The Rust node is still connected everywhere.
    for n in [&a, &b, &c] {
        assert_eq!(
            eval(n, &format!("lists:member('{rn}', nodes())")).await,
            "true"
        );
    }
    // pg on the BEAM keeps working with the Rust node in the cluster.
    for n in [&a, &b] {
        assert!(eval(n, "element(1, pg:start(pg))").await == "ok");
    }
    assert_eq!(eval(&a, "pg:join(grp, self())").await, "ok");
    let mut members = String::new();
    for _ in 0..50 {
        members = eval(&b, "length(pg:get_members(grp))").await;
        if members == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(members, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rust_to_rust_rpc_and_gen_server() {
    let epmd = OtpEpmd::start().unwrap();
    let server = demo_node("rr_server", &epmd).await;
    let client = rust_node("rr_client", &epmd).await;
    let s = server.name().to_owned();
    let v = client
        .rpc_call(
            &s,
            "demo",
            "add",
            vec![Term::Integer(40), Term::Integer(2)],
            T,
        )
        .await;
    assert_eq!(v, Ok(Term::Integer(42)));
    let v = client.rpc_call(&s, "demo", "nope", vec![], T).await;
    assert_eq!(
        v,
        Err(RpcError::Exception {
            class: ExceptionClass::Error,
            reason: Term::atom("undef"),
            stack: parse("[{demo, nope, [], []}]"),
        })
    );
    let v = client
        .gen_call(("echo_server", s.as_str()), Term::atom("hi"), T)
        .await;
    assert_eq!(v, Ok(parse("{echo, hi}")));
    // Calls to the node itself.
    let v = server
        .gen_call(("echo_server", s.as_str()), Term::atom("me"), T)
        .await;
    assert_eq!(v, Ok(parse("{echo, me}")));
    let v = server
        .rpc_call(&s, "demo", "echo", vec![Term::atom("x")], T)
        .await;
    assert_eq!(v, Ok(Term::atom("x")));
    // A node that does not exist.
    let v = client
        .rpc_call("nobody@127.0.0.1", "demo", "echo", vec![], T)
        .await;
    assert!(matches!(v, Err(RpcError::NoConnection(_))), "{v:?}");
    let v = client
        .gen_call(("echo_server", "nobody@127.0.0.1"), Term::atom("x"), T)
        .await;
    assert_eq!(
        v,
        Err(CallError::Exit(parse("{nodedown, 'nobody@127.0.0.1'}")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rust_gen_call_timeout_and_nodedown() {
    let epmd = OtpEpmd::start().unwrap();
    let b = beam("gen_to", &epmd, Runtime::Erlang);
    let rust = rust_node("gen_to", &epmd).await;
    let bn = b.node_name().to_owned();
    // A process that takes calls and never answers.
    assert_eq!(
        eval(
            &b,
            "register(mute, spawn(fun() -> receive after infinity -> ok end end)), ok"
        )
        .await,
        "ok"
    );
    let r = rust
        .gen_call(
            ("mute", bn.as_str()),
            Term::atom("x"),
            Duration::from_millis(300),
        )
        .await;
    assert_eq!(r, Err(CallError::Timeout));
    // The node goes away during the call: {nodedown, Node} for a name.
    let call = {
        let rust = rust.clone();
        let bn = bn.clone();
        tokio::spawn(async move {
            rust.gen_call(("mute", bn.as_str()), Term::atom("x"), T)
                .await
        })
    };
    // The call has reached `mute` before the node goes.
    assert_eq!(
        eval(
            &b,
            &until_true("element(2, erlang:process_info(whereis(mute), message_queue_len)) > 0")
        )
        .await,
        "true"
    );
    let _ = eval(&b, "spawn(fun() -> timer:sleep(50), erlang:halt() end), ok").await;
    let r = call.await.unwrap();
    assert_eq!(
        r,
        Err(CallError::Exit(parse(&format!("{{nodedown, '{bn}'}}"))))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rust_node_joins_a_formed_beam_cluster() {
    let epmd = OtpEpmd::start().unwrap();
    let a = beam("join_a", &epmd, Runtime::Erlang);
    let b = beam("join_b", &epmd, Runtime::Erlang);
    let c = beam("join_c", &epmd, Runtime::Elixir);
    assert_eq!(
        eval(
            &a,
            &format!(
                "[net_adm:ping('{}'), net_adm:ping('{}')], global:sync()",
                b.node_name(),
                c.node_name()
            )
        )
        .await,
        "ok"
    );
    assert_eq!(
        eval(&b, "global:register_name(before_rust, self())").await,
        "yes"
    );
    // The Rust node connects to A only; global makes B and C connect too.
    let rust = rust_node("join", &epmd).await;
    let rn = rust.name().to_owned();
    rust.connect(a.node_name()).await.unwrap();
    // A tells B and C about the Rust node after its own sync (new_nodes),
    // so wait for them to connect (as with any node joining), then sync.
    let wait_for_rust = format!(
        "W = fun W(0) -> false; W(K) -> case lists:member('{rn}', nodes()) of \
         true -> true; false -> timer:sleep(100), W(K - 1) end end, W(100)"
    );
    for n in [&a, &b, &c] {
        assert_eq!(
            eval(n, &wait_for_rust).await,
            "true",
            "{} sees the Rust node",
            n.node_name()
        );
    }
    for n in [&a, &b, &c] {
        assert_eq!(
            eval(n, "global:sync()").await,
            "ok",
            "global:sync on {}",
            n.node_name()
        );
    }
    assert_eq!(
        eval(&c, "global:register_name(after_rust, self())").await,
        "yes"
    );
    let bn = b.node_name().to_owned();
    let cn = c.node_name().to_owned();
    for n in [&a, &b, &c] {
        assert_eq!(
            eval(n, "node(global:whereis_name(before_rust))").await,
            format!("'{bn}'")
        );
        assert_eq!(
            eval(n, "node(global:whereis_name(after_rust))").await,
            format!("'{cn}'")
        );
    }
}
