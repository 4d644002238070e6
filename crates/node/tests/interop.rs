//! Interop with real OTP 25 (`erl`, `epmd`, `elixir`) on loopback, through
//! erlkube-testkit: a private OTP epmd on a free port (never 4369) or
//! erlkube's own epmd in-process, BEAM nodes that evaluate expressions,
//! children killed on drop. Tests fail (not skip) when erl is missing.
//!
//! Terms of any depth round-trip: a million levels of lists, tuples and
//! maps made by `erl` are received, decoded, encoded and sent back.

mod events;

use std::sync::Arc;
use std::time::Duration;

use erlkube_etf::Term;
use erlkube_node::{Cookie, Node, NodeConfig, NodeEvent};
use erlkube_testkit::{unique_name, ErlNode, OtpEpmd, Runtime};

/// Evaluates on a BEAM node from async code (testkit is blocking).
async fn eval(node: &Arc<ErlNode>, expr: String) -> String {
    let n = node.clone();
    tokio::task::spawn_blocking(move || n.eval(&expr))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn beam(epmd_port: u16, cookie: &str, args: &[&str]) -> Arc<ErlNode> {
    beam_rt(epmd_port, cookie, args, Runtime::Erlang).await
}

async fn beam_rt(epmd_port: u16, cookie: &str, args: &[&str], rt: Runtime) -> Arc<ErlNode> {
    let mut b = ErlNode::builder(&unique_name("beam"))
        .cookie(cookie)
        .epmd_port(epmd_port)
        .runtime(rt);
    for a in args {
        b = b.arg(a);
    }
    Arc::new(
        tokio::task::spawn_blocking(move || b.start())
            .await
            .unwrap()
            .expect("erl must be installed"),
    )
}

async fn rust_node(epmd_port: u16, cookie: &str, hidden: bool, ticktime: Duration) -> Node {
    let mut c = NodeConfig::new(
        format!("{}@127.0.0.1", unique_name("rust")),
        Cookie::new(cookie),
    );
    c.epmd_port = epmd_port;
    c.hidden = hidden;
    c.net_ticktime = ticktime;
    c.setup_timeout = Duration::from_secs(5);
    Node::start(c).await.expect("rust node starts")
}

/// The `echo` process of the CLI: sends `Msg` back to `Pid` for `{Pid, Msg}`.
fn spawn_echo(node: &Node) {
    let mut p = node.spawn_registered("echo").unwrap();
    let node = node.clone();
    tokio::spawn(async move {
        while let Some(m) = p.recv().await {
            if let Some([Term::Pid(to), msg]) = m.as_tuple() {
                let _ = node.send(to, msg.clone()).await;
            }
        }
    });
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn beam_pings_rust_and_sees_it_in_nodes() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = rust_node(epmd.port(), "c00kie", false, MINUTE).await;
    let b = beam(epmd.port(), "c00kie", &[]).await;
    let r = rust.name();
    assert_eq!(eval(&b, format!("net_adm:ping('{r}')")).await, "pong");
    assert_eq!(
        eval(&b, format!("lists:member('{r}', nodes())")).await,
        "true"
    );
    assert_eq!(rust.nodes(), vec![b.node_name().to_owned()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn hidden_rust_node_is_in_nodes_hidden_only() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = rust_node(epmd.port(), "c", true, MINUTE).await;
    let b = beam(epmd.port(), "c", &[]).await;
    let r = rust.name();
    assert_eq!(eval(&b, format!("net_adm:ping('{r}')")).await, "pong");
    assert_eq!(
        eval(
            &b,
            format!("{{lists:member('{r}', nodes()), lists:member('{r}', nodes(hidden))}}")
        )
        .await,
        "{false,true}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn elixir_node_ping_gives_pong() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = rust_node(epmd.port(), "c", false, MINUTE).await;
    let ex = beam_rt(epmd.port(), "c", &[], Runtime::Elixir).await;
    // The evaluation loop speaks Erlang; this is 'Elixir.Node':ping/1.
    assert_eq!(
        eval(&ex, format!("'Elixir.Node':ping('{}')", rust.name())).await,
        "pong"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_cookie_gives_pang_on_both_sides() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = rust_node(epmd.port(), "right", false, MINUTE).await;
    let wrong = beam(epmd.port(), "wrong", &[]).await;
    assert_eq!(
        eval(&wrong, format!("net_adm:ping('{}')", rust.name())).await,
        "pang"
    );
    let err = rust.ping(wrong.node_name()).await.expect_err("pang");
    assert!(err.to_string().contains("cookie"), "{err}");
    // The Rust node is still up for others.
    let right = beam(epmd.port(), "right", &[]).await;
    assert_eq!(
        eval(&right, format!("net_adm:ping('{}')", rust.name())).await,
        "pong"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_pings_beam() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = rust_node(epmd.port(), "c", false, MINUTE).await;
    let b = beam(epmd.port(), "c", &[]).await;
    rust.ping(b.node_name()).await.expect("pong");
    assert_eq!(rust.nodes(), vec![b.node_name().to_owned()]);
    assert_eq!(
        eval(&b, format!("lists:member('{}', nodes())", rust.name())).await,
        "true"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_round_trips_small_deep_and_10mb_terms() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = rust_node(epmd.port(), "c", false, MINUTE).await;
    spawn_echo(&rust);
    let b = beam(epmd.port(), "c", &[]).await;
    let echo = format!(
        "Echo = fun(M) -> {{echo, '{}'}} ! {{self(), M}}, receive R -> R =:= M after 20000 -> timeout end end",
        rust.name()
    );
    let small = "{hello, 42, -7, 3.5, <<\"bin\">>, \"str\", [a | b], #{k => v}, self(), make_ref(), 1 bsl 70, 'ünïcode', <<1:3>>}";
    assert_eq!(eval(&b, format!("{echo}, Echo({small})")).await, "true");
    let deep = "lists:foldl(fun(I, A) -> [I, {A}] end, [], lists:seq(1, 200))";
    assert_eq!(eval(&b, format!("{echo}, Echo({deep})")).await, "true");
    let big = "crypto:strong_rand_bytes(10000000)";
    assert_eq!(eval(&b, format!("{echo}, Echo({big})")).await, "true");
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_sends_to_beam_registered_process() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = rust_node(epmd.port(), "c", false, MINUTE).await;
    let b = beam(epmd.port(), "c", &[]).await;
    // A BEAM process registered as inbox forwards what it gets to `got`.
    eval(
        &b,
        "register(inbox, spawn(fun() -> receive M -> register(got_it, spawn(fun() -> receive {Q, get} -> Q ! M end end)) end end))".into(),
    )
    .await;
    let me = rust.spawn_process();
    let msg = Term::tuple(vec![
        Term::atom("from_rust"),
        Term::Integer(7),
        Term::binary(vec![0u8; 100_000]),
    ]);
    rust.send_named(me.pid(), b.node_name(), "inbox", msg)
        .await
        .unwrap();
    let got = eval(
        &b,
        "(fun W() -> case whereis(got_it) of undefined -> timer:sleep(10), W(); P -> P ! {self(), get}, receive {from_rust, 7, B} -> byte_size(B) end end end)()".into(),
    )
    .await;
    assert_eq!(got, "100000");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_link_survives_ticks_and_frozen_beam_is_detected() {
    let epmd = OtpEpmd::start().unwrap();
    let tick = Duration::from_secs(4);
    let rust = rust_node(epmd.port(), "c", false, tick).await;
    let b = beam(epmd.port(), "c", &["-kernel", "net_ticktime", "4"]).await;
    let mut events = rust.subscribe();
    rust.ping(b.node_name()).await.unwrap();
    // Three windows of silence: only ticks flow, and the link stays up.
    tokio::time::sleep(tick * 3).await;
    assert_eq!(rust.nodes(), vec![b.node_name().to_owned()]);
    while let Ok(ev) = events.try_recv() {
        assert!(!matches!(ev, NodeEvent::NodeDown { .. }), "{ev:?}");
    }
    // Freeze the BEAM: no ticks, the socket stays open.
    let pid = b.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let reason = events::nodedown_within(&mut events, b.node_name(), tick * 3).await;
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    let reason = reason.expect("nodedown within the tick window");
    assert_eq!(reason.label(), "not_responding", "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_beam_gives_nodedown() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = rust_node(epmd.port(), "c", false, Duration::from_secs(4)).await;
    let b = beam(epmd.port(), "c", &["-kernel", "net_ticktime", "4"]).await;
    let name = b.node_name().to_owned();
    let mut events = rust.subscribe();
    rust.ping(&name).await.unwrap();
    let mut b = Arc::try_unwrap(b).unwrap();
    b.kill();
    events::nodedown(&mut events, &name, Duration::from_secs(8)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fixed_port_without_epmd() {
    // The Rust node listens on a fixed port; the BEAM runs without epmd and
    // with -erl_epmd_port, so it dials that port for every node.
    let port = erlkube_testkit::free_port();
    let mut c = NodeConfig::new(
        format!("{}@127.0.0.1", unique_name("rust")),
        Cookie::new("c"),
    )
    .fixed_port(port);
    c.listen_ip = "127.0.0.1".parse().unwrap();
    let rust = Node::start(c).await.unwrap();
    let p = port.to_string();
    // epmd_port is required by testkit but unused: the BEAM does not ask epmd.
    let b = beam(1, "c", &["-erl_epmd_port", &p, "-dist_listen", "false"]).await;
    assert_eq!(
        eval(&b, format!("net_adm:ping('{}')", rust.name())).await,
        "pong"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn through_erlkube_epmd() {
    // erlkube's own port mapper, in-process, instead of OTP's.
    let listener = erlkube_epmd::server::bind_one("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(erlkube_epmd::run(
        vec![listener],
        erlkube_epmd::Config::default(),
        async {
            let _ = stop_rx.await;
        },
    ));
    let rust = rust_node(port, "c", false, MINUTE).await;
    let b = beam(port, "c", &[]).await;
    assert_eq!(
        eval(&b, format!("net_adm:ping('{}')", rust.name())).await,
        "pong"
    );
    let other = beam(port, "c", &[]).await;
    rust.ping(other.node_name())
        .await
        .expect("pong through erlkube epmd");
    drop(stop_tx);
    let _ = server.await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnect_after_disconnect() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = rust_node(epmd.port(), "c", false, MINUTE).await;
    let b = beam(epmd.port(), "c", &[]).await;
    let mut events = rust.subscribe();
    for i in 0..20 {
        rust.connect(b.node_name())
            .await
            .unwrap_or_else(|e| panic!("round {i}: {e}"));
        assert!(rust.disconnect(b.node_name()));
        events::nodedown(&mut events, b.node_name(), MINUTE).await;
    }
}

/// `disconnect` followed at once by `connect`, 50 times: `disconnect`
/// takes the connection out of the table before it returns (its nodedown
/// is already sent, the peer no longer listed), so each `connect` dials a
/// new connection (a new nodeup) instead of being handed the closing one,
/// and a ping over it answers. Before, `disconnect` only signalled the
/// connection's task, and a `connect` right after could return the dying
/// connection (a ping on it then failed, or the next `disconnect` found
/// nothing).
#[tokio::test(flavor = "multi_thread")]
async fn disconnect_then_connect_at_once_gives_a_fresh_connection() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = rust_node(epmd.port(), "c", false, MINUTE).await;
    let b = beam(epmd.port(), "c", &[]).await;
    let peer = b.node_name();
    let mut events = rust.subscribe();
    rust.connect(peer).await.unwrap();
    for i in 0..50 {
        assert!(rust.disconnect(peer), "round {i}: not connected");
        assert!(
            !rust.connected_nodes().iter().any(|n| n == peer),
            "round {i}: still listed after disconnect"
        );
        // The nodedown is sent before `disconnect` returns.
        let mut down = false;
        while let Ok(ev) = events.try_recv() {
            if let NodeEvent::NodeDown { node, .. } = ev {
                down |= node == peer;
            }
        }
        assert!(down, "round {i}: no nodedown when disconnect returned");
        rust.connect(peer)
            .await
            .unwrap_or_else(|e| panic!("round {i}: {e}"));
        // A new connection came up (its nodeup is sent when it enters the
        // table, before `connect` returns it), and it carries traffic.
        let mut up = false;
        while let Ok(ev) = events.try_recv() {
            match ev {
                NodeEvent::NodeUp { node, .. } if node == peer => up = true,
                NodeEvent::NodeDown { node, reason } if node == peer => {
                    panic!("round {i}: the new connection went down: {reason}")
                }
                _ => {}
            }
        }
        assert!(up, "round {i}: connect returned without a new nodeup");
        rust.ping(peer)
            .await
            .unwrap_or_else(|e| panic!("round {i}: ping: {e}"));
    }
    assert_eq!(
        eval(&b, format!("lists:member('{}', nodes())", rust.name())).await,
        "true"
    );
}

/// The echo process, taking the message apart instead of cloning it.
fn spawn_moving_echo(node: &Node) {
    let mut p = node.spawn_registered("echo").unwrap();
    let node = node.clone();
    tokio::spawn(async move {
        while let Some(mut m) = p.recv().await {
            if let Term::Tuple(v) = &mut m {
                if let (Some(msg), Some(Term::Pid(ref to))) = (v.pop(), v.pop()) {
                    let _ = node.send(to, msg).await;
                }
            }
        }
    });
}

/// A million levels of nesting, as the BEAM builds and accepts them
/// (lists, tuples, maps, and the three mixed), sent by `erl` to a Rust
/// process and echoed back equal (`=:=` on the BEAM side). Before, a term
/// deeper than 512 closed the connection.
#[tokio::test(flavor = "multi_thread")]
async fn echo_round_trips_million_level_terms() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = rust_node(epmd.port(), "c", false, MINUTE).await;
    spawn_moving_echo(&rust);
    let mut events = rust.subscribe();
    let b = beam(epmd.port(), "c", &[]).await;
    let echo = format!(
        "Echo = fun(M) -> {{echo, '{}'}} ! {{self(), M}}, receive R -> R =:= M after 60000 -> timeout end end",
        rust.name()
    );
    for build in [
        "lists:foldl(fun(_, A) -> [A] end, [], lists:seq(1, 1000000))",
        "lists:foldl(fun(_, A) -> {A} end, {}, lists:seq(1, 1000000))",
        "lists:foldl(fun(_, A) -> #{a => A} end, #{}, lists:seq(1, 1000000))",
        "lists:foldl(fun(I, A) -> case I rem 3 of 0 -> [I, A]; 1 -> {x, A}; 2 -> #{I => A} end end, <<\"core\">>, lists:seq(1, 1000000))",
    ] {
        assert_eq!(eval(&b, format!("{echo}, Echo({build})")).await, "true", "{build}");
    }
    // the connection stayed up throughout
    assert!(
        !matches!(events.try_recv(), Ok(NodeEvent::NodeDown { .. })),
        "a connection went down"
    );
    assert_eq!(
        eval(&b, format!("lists:member('{}', nodes())", rust.name())).await,
        "true"
    );
}
