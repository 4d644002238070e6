//! Interop with real OTP (`erl`, `epmd`, `elixir`) on loopback.
//!
//! Each test starts its own OTP epmd on a free port (never 4369) and gives
//! it to erl through ERL_EPMD_PORT; children are killed on drop.
//! Tests fail (not skip) when erl is missing. The deep term stays within
//! erlkube-etf's default decode depth (1000); deeper terms close the
//! connection with a named decode error, as the BEAM does with bad terms.

use std::process::Stdio;
use std::time::Duration;

use erlkube_etf::Term;
use erlkube_node::{Cookie, Node, NodeConfig, NodeEvent};
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unique(test: &str) -> String {
    format!("{test}_{}", std::process::id())
}

/// OTP's epmd in the foreground on a free port; killed on drop.
struct Epmd {
    port: u16,
    _child: Child,
}

async fn epmd() -> Epmd {
    let port = free_port();
    let child = Command::new("epmd")
        .args(["-port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("epmd must be installed (OTP)");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Epmd {
                port,
                _child: child,
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("epmd did not start on port {port}");
}

fn erl(epmd_port: u16, name: &str, cookie: &str, extra: &[&str]) -> Command {
    let mut c = Command::new("erl");
    c.env("ERL_EPMD_PORT", epmd_port.to_string())
        .args(["-noshell", "-name", name, "-setcookie", cookie])
        .args(extra)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// Runs `expr` on a fresh BEAM node and returns what it printed.
async fn erl_eval(epmd_port: u16, name: &str, cookie: &str, extra: &[&str], expr: &str) -> String {
    let full = format!("{expr}, init:stop().");
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["-eval", &full]);
    let out = erl(epmd_port, name, cookie, &args)
        .stderr(Stdio::inherit())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("erl timed out")
        .expect("erl must be installed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn rust_node(
    test: &str,
    epmd_port: u16,
    cookie: &str,
    hidden: bool,
    ticktime: Duration,
) -> Node {
    let mut c = NodeConfig::new(
        format!("rust_{}@127.0.0.1", unique(test)),
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

#[tokio::test]
async fn beam_pings_rust_and_sees_it_in_nodes() {
    let e = epmd().await;
    let rust = rust_node(
        "beam_pings",
        e.port,
        "c00kie",
        false,
        Duration::from_secs(60),
    )
    .await;
    let expr = format!(
        "R = net_adm:ping('{r}'), io:format(\"~p ~p~n\", [R, lists:member('{r}', nodes())])",
        r = rust.name()
    );
    let out = erl_eval(
        e.port,
        &format!("{}@127.0.0.1", unique("beam_pings")),
        "c00kie",
        &[],
        &expr,
    )
    .await;
    assert_eq!(out, "pong true");
}

#[tokio::test]
async fn hidden_rust_node_is_in_nodes_hidden_only() {
    let e = epmd().await;
    let rust = rust_node("hidden", e.port, "c", true, Duration::from_secs(60)).await;
    let expr = format!(
        "pong = net_adm:ping('{r}'), io:format(\"~p ~p~n\", [lists:member('{r}', nodes()), lists:member('{r}', nodes(hidden))])",
        r = rust.name()
    );
    let out = erl_eval(
        e.port,
        &format!("{}@127.0.0.1", unique("hidden")),
        "c",
        &[],
        &expr,
    )
    .await;
    assert_eq!(out, "false true");
}

#[tokio::test]
async fn elixir_node_ping_gives_pong() {
    let e = epmd().await;
    let rust = rust_node("elixir", e.port, "c", false, Duration::from_secs(60)).await;
    let out = Command::new("elixir")
        .env("ERL_EPMD_PORT", e.port.to_string())
        .args([
            "--name",
            &format!("{}@127.0.0.1", unique("ex")),
            "--cookie",
            "c",
            "-e",
        ])
        .arg(format!("IO.inspect(Node.ping(:\"{}\"))", rust.name()))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .unwrap()
        .expect("elixir must be installed");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ":pong");
}

#[tokio::test]
async fn wrong_cookie_gives_pang_on_both_sides() {
    let e = epmd().await;
    let rust = rust_node("cookie", e.port, "right", false, Duration::from_secs(60)).await;
    let beam_name = format!("{}@127.0.0.1", unique("cookie"));
    let out = erl_eval(
        e.port,
        &beam_name,
        "wrong",
        &[],
        &format!("io:format(\"~p~n\", [net_adm:ping('{}')])", rust.name()),
    )
    .await;
    assert_eq!(out, "pang");

    let _beam = erl(e.port, &beam_name, "wrong", &[])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_registered(e.port, &beam_name).await;
    let err = rust.ping(&beam_name).await.expect_err("pang");
    assert!(err.to_string().contains("cookie"), "{err}");
    // The Rust node is still up for others.
    let out = erl_eval(
        e.port,
        &format!("{}@127.0.0.1", unique("cookie_ok")),
        "right",
        &[],
        &format!("io:format(\"~p~n\", [net_adm:ping('{}')])", rust.name()),
    )
    .await;
    assert_eq!(out, "pong");
}

async fn wait_registered(epmd_port: u16, node: &str) {
    let alive = node.split('@').next().unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], epmd_port));
    for _ in 0..300 {
        if erlkube_node::epmd::port_please(addr, alive, Duration::from_secs(1))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{node} never registered with epmd");
}

#[tokio::test]
async fn rust_pings_beam() {
    let e = epmd().await;
    let rust = rust_node("rust_pings", e.port, "c", false, Duration::from_secs(60)).await;
    let beam_name = format!("{}@127.0.0.1", unique("rust_pings"));
    let _beam = erl(e.port, &beam_name, "c", &[])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_registered(e.port, &beam_name).await;
    rust.ping(&beam_name).await.expect("pong");
    assert_eq!(rust.nodes(), vec![beam_name]);
}

#[tokio::test]
async fn echo_round_trips_small_deep_and_10mb_terms() {
    let e = epmd().await;
    let rust = rust_node("echo", e.port, "c", false, Duration::from_secs(60)).await;
    spawn_echo(&rust);
    let expr = format!(
        "Echo = fun(M) -> {{echo, '{r}'}} ! {{self(), M}}, receive R -> R =:= M after 20000 -> timeout end end, \
         Deep = lists:foldl(fun(I, A) -> [I, {{A}}] end, [], lists:seq(1, 300)), \
         Small = {{hello, 42, -7, 3.5, <<\"bin\">>, \"str\", [a | b], #{{k => v}}, self(), make_ref(), 1 bsl 70, 'ünïcode'}}, \
         Big = crypto:strong_rand_bytes(10000000), \
         io:format(\"~p ~p ~p~n\", [Echo(Small), Echo(Deep), Echo(Big)])",
        r = rust.name()
    );
    let out = erl_eval(
        e.port,
        &format!("{}@127.0.0.1", unique("echo")),
        "c",
        &[],
        &expr,
    )
    .await;
    assert_eq!(out, "true true true");
}

#[tokio::test]
async fn rust_sends_to_beam_registered_process() {
    let e = epmd().await;
    let rust = rust_node("to_beam", e.port, "c", false, Duration::from_secs(60)).await;
    spawn_echo(&rust);
    // The BEAM registers `inbox`, tells the Rust echo about itself, and
    // prints what the Rust side sends to the name.
    let expr = format!(
        "register(inbox, self()), {{echo, '{r}'}} ! {{self(), ready}}, receive ready -> ok end, \
         receive M -> io:format(\"~p~n\", [M]) after 20000 -> io:format(\"timeout~n\") end",
        r = rust.name()
    );
    let beam_name = format!("{}@127.0.0.1", unique("to_beam"));
    let run = {
        let (port, beam_name) = (e.port, beam_name.clone());
        tokio::spawn(async move { erl_eval(port, &beam_name, "c", &[], &expr).await })
    };
    let mut events = rust.subscribe();
    loop {
        if let NodeEvent::NodeUp { node, .. } = events.recv().await.unwrap() {
            if node == beam_name {
                break;
            }
        }
    }
    let me = rust.spawn_process();
    // inbox is registered before the BEAM connects; a message arriving before
    // its `ready` is kept by the selective receive.
    rust.send_named(
        me.pid(),
        &beam_name,
        "inbox",
        Term::tuple(vec![Term::atom("from_rust"), Term::Integer(7)]),
    )
    .await
    .unwrap();
    assert_eq!(run.await.unwrap(), "{from_rust,7}");
}

#[tokio::test]
async fn idle_link_survives_ticks_and_frozen_beam_is_detected() {
    let e = epmd().await;
    let tick = Duration::from_secs(4);
    let rust = rust_node("ticks", e.port, "c", false, tick).await;
    let beam_name = format!("{}@127.0.0.1", unique("ticks"));
    let beam = erl(e.port, &beam_name, "c", &["-kernel", "net_ticktime", "4"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_registered(e.port, &beam_name).await;
    let mut events = rust.subscribe();
    rust.ping(&beam_name).await.unwrap();
    // Three windows of silence: only ticks flow, and the link stays up.
    tokio::time::sleep(tick * 3).await;
    assert_eq!(rust.nodes(), vec![beam_name.clone()]);
    while let Ok(ev) = events.try_recv() {
        assert!(!matches!(ev, NodeEvent::NodeDown { .. }), "{ev:?}");
    }
    // Freeze the BEAM: no ticks, the socket stays open.
    let pid = beam.id().unwrap().to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    assert!(stopped.success());
    let reason = tokio::time::timeout(tick * 3, async {
        loop {
            if let NodeEvent::NodeDown { node, reason } = events.recv().await.unwrap() {
                if node == beam_name {
                    return reason;
                }
            }
        }
    })
    .await
    .expect("nodedown within the tick window");
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    assert!(reason.contains("not responding"), "{reason}");
    drop(beam);
}

#[tokio::test]
async fn killed_beam_gives_nodedown() {
    let e = epmd().await;
    let rust = rust_node("killed", e.port, "c", false, Duration::from_secs(4)).await;
    let beam_name = format!("{}@127.0.0.1", unique("killed"));
    let mut beam = erl(e.port, &beam_name, "c", &["-kernel", "net_ticktime", "4"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_registered(e.port, &beam_name).await;
    let mut events = rust.subscribe();
    rust.ping(&beam_name).await.unwrap();
    beam.kill().await.unwrap();
    let down = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            if let NodeEvent::NodeDown { node, .. } = events.recv().await.unwrap() {
                return node;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(down, beam_name);
}

#[tokio::test]
async fn fixed_port_without_epmd() {
    // The Rust node listens on a fixed port; the BEAM runs without epmd and
    // with -erl_epmd_port, so it dials that port for every node.
    let port = free_port();
    let mut c = NodeConfig::new(
        format!("rust_{}@127.0.0.1", unique("fixed")),
        Cookie::new("c"),
    )
    .fixed_port(port);
    c.listen_ip = "127.0.0.1".parse().unwrap();
    let rust = Node::start(c).await.unwrap();
    let expr = format!("io:format(\"~p~n\", [net_adm:ping('{}')])", rust.name());
    let port_s = port.to_string();
    let out = erl_eval(
        1, // unused: epmd is not started
        &format!("{}@127.0.0.1", unique("fixed")),
        "c",
        &[
            "-start_epmd",
            "false",
            "-erl_epmd_port",
            &port_s,
            "-dist_listen",
            "false",
        ],
        &expr,
    )
    .await;
    assert_eq!(out, "pong");
}
