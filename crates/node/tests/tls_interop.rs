//! TLS distribution against real OTP: OTP 25 (`erl`, `elixir` on the
//! host) and OTP 27 (Debian trixie's `erlang-ssl` in the chroot), each
//! started with `-proto_dist inet_tls -ssl_dist_optfile FILE` and the very
//! same optfile format the Rust node reads. Certificates are made in the
//! test (rcgen): one CA, a certificate per node naming `localhost` and
//! `127.0.0.1`, mutual TLS with `verify_peer` and `fail_if_no_peer_cert`.
//!
//! Both directions: BEAM→Rust and Rust→BEAM ping, `rpc:call`,
//! `gen_server:call`, a 10 MB message, links and monitors.

mod events;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use erlkube_etf::Term;
use erlkube_node::{Cookie, Node, NodeConfig, TlsConfig};
use erlkube_testkit::tls::{Ca, TlsDir};
use erlkube_testkit::{otp27, unique_name, ErlNode, OtpEpmd, Runtime};

const HOSTS: &[&str] = &["localhost", "127.0.0.1"];
/// The options `TlsDir::node_files` adds to both sides.
const RENEGOTIATE: &str = ", {secure_renegotiate, true}";

async fn eval(node: &Arc<ErlNode>, expr: String) -> String {
    let n = node.clone();
    tokio::task::spawn_blocking(move || n.eval(&expr))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn tls_beam(epmd_port: u16, optfile: &Path, rt: Runtime) -> Arc<ErlNode> {
    let conf = optfile.to_str().unwrap().to_owned();
    let b = ErlNode::builder(&unique_name("tlsbeam"))
        .cookie("tls_c")
        .epmd_port(epmd_port)
        .runtime(rt)
        .start_timeout(Duration::from_secs(60))
        .arg("-proto_dist")
        .arg("inet_tls")
        .arg("-ssl_dist_optfile")
        .arg(&conf);
    Arc::new(
        tokio::task::spawn_blocking(move || b.start())
            .await
            .unwrap()
            .expect("erl with inet_tls starts"),
    )
}

async fn tls_rust(epmd_port: u16, optfile: &Path) -> Node {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut c = NodeConfig::new(
        format!("{}@127.0.0.1", unique_name("tlsrust")),
        Cookie::new("tls_c"),
    );
    c.epmd_port = epmd_port;
    c.setup_timeout = Duration::from_secs(10);
    c.tls = Some(TlsConfig::from_optfile(optfile).expect("optfile loads"));
    let node = Node::start(c).await.expect("rust node starts");
    // The services the tests call: echo, a gen_server, an RPC function.
    let mut echo = node.spawn_registered("echo").unwrap();
    let n = node.clone();
    tokio::spawn(async move {
        while let Some(m) = echo.recv().await {
            if let Some([Term::Pid(to), msg]) = m.as_tuple() {
                let _ = n.send(to, msg.clone()).await;
            }
        }
    });
    node.serve_gen_server(
        "greeter",
        |req| Term::tuple(vec![Term::atom("hello"), req]),
        |_| {},
    );
    node.register_fn("demo", "add", 2, |args| match args.as_slice() {
        [Term::Integer(a), Term::Integer(b)] => Ok(Term::Integer(a + b)),
        _ => Err(erlkube_node::RpcError::error(Term::atom("badarg"))),
    });
    node
}

/// Drops the connection to `peer` and waits for its nodedown.
/// A Rust node and a BEAM node (`rt`) with certificates from one CA
/// (mutual TLS; `extra` is appended to both optfiles' options), both
/// registered with one OTP epmd. Fields drop in order: nodes first.
struct Pair {
    rust: Node,
    beam: Arc<ErlNode>,
    _epmd: OtpEpmd,
    _dir: TlsDir,
}

async fn pair(tag: &str, rt: Runtime, extra: &str) -> Pair {
    let ca = Ca::new("erlkube test CA");
    let dir = TlsDir::new(None, tag);
    let root = Path::new("/");
    let rust_conf = dir.node_files_with("rust", &ca.issue(HOSTS), ca.pem(), true, root, extra);
    let beam_conf = dir.node_files_with("beam", &ca.issue(HOSTS), ca.pem(), true, root, extra);
    let epmd = OtpEpmd::start().unwrap();
    let rust = tls_rust(epmd.port(), &rust_conf).await;
    let beam = tls_beam(epmd.port(), &beam_conf, rt).await;
    Pair {
        rust,
        beam,
        _epmd: epmd,
        _dir: dir,
    }
}

async fn disconnect(rust: &Node, peer: &str) {
    let mut events = rust.subscribe();
    assert!(rust.disconnect(peer), "connected to {peer}");
    events::nodedown(&mut events, peer, Duration::from_secs(10)).await;
}

/// Everything both ways between a TLS Rust node and a TLS BEAM node.
async fn exercise(rust: &Node, b: &Arc<ErlNode>) {
    let r = rust.name().to_owned();
    // BEAM -> Rust.
    let pong = eval(b, format!("net_adm:ping('{r}')")).await;
    assert_eq!(pong, "pong", "{}", b.output());
    assert_eq!(
        eval(b, format!("rpc:call('{r}', demo, add, [40, 2])")).await,
        "42"
    );
    assert_eq!(
        eval(b, format!("gen_server:call({{greeter, '{r}'}}, ada)")).await,
        "{hello,ada}"
    );
    let echo = format!(
        "Echo = fun(M) -> {{echo, '{r}'}} ! {{self(), M}}, receive R -> R =:= M after 30000 -> timeout end end"
    );
    assert_eq!(
        eval(
            b,
            format!("{echo}, Echo(crypto:strong_rand_bytes(10000000))")
        )
        .await,
        "true",
        "a 10 MB binary round trip"
    );
    // A BEAM monitor on a Rust process that exits.
    let p = rust.spawn_registered("doomed").unwrap();
    let mon = format!(
        "Ref = erlang:monitor(process, {{doomed, '{r}'}}), {{doomed, '{r}'}} ! go, \
         receive {{'DOWN', Ref, process, _, Why}} -> Why after 10000 -> timeout end"
    );
    let watcher = tokio::spawn({
        let b = b.clone();
        async move { eval(&b, mon).await }
    });
    let mut p = p;
    assert_eq!(
        p.recv_timeout(Duration::from_secs(10)).await,
        Some(Term::atom("go"))
    );
    p.exit(Term::atom("finished"));
    assert_eq!(watcher.await.unwrap(), "finished");

    // Rust -> BEAM.
    let bn = b.node_name().to_owned();
    rust.ping(&bn).await.expect("Rust pings the BEAM over TLS");
    let v = rust
        .rpc_call(
            &bn,
            "erlang",
            "length",
            vec![Term::List(vec![Term::Integer(1); 3])],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(v, Term::Integer(3));
    let auth = rust
        .gen_call(
            ("net_kernel", bn.as_str()),
            Term::tuple(vec![Term::atom("is_auth"), Term::atom(&r)]),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(auth, Term::atom("yes"), "gen_server:call of net_kernel");
    // A 10 MB message to a BEAM process, which answers with its size.
    eval(
        b,
        "register(sizer, spawn(fun S() -> receive {From, B} -> From ! {size, byte_size(B)}, S() end end))"
            .into(),
    )
    .await;
    let mut me = rust.spawn_process();
    let msg = Term::tuple(vec![
        Term::Pid(me.pid().clone()),
        Term::binary(vec![7u8; 10_000_000]),
    ]);
    rust.send_named(me.pid(), &bn, "sizer", msg).await.unwrap();
    assert_eq!(
        me.recv_timeout(Duration::from_secs(30)).await,
        Some(Term::tuple(vec![
            Term::atom("size"),
            Term::Integer(10_000_000)
        ]))
    );
    // A Rust link to a BEAM process that exits: the exit arrives.
    let target = eval(
        b,
        "P = spawn(fun() -> receive stop -> exit(bye) end end), register(linked, P), P".into(),
    )
    .await;
    assert!(target.starts_with('<'), "{target}");
    let watcher = rust.spawn_process();
    watcher.trap_exit(true);
    let pid = rust
        .rpc_call(
            &bn,
            "erlang",
            "whereis",
            vec![Term::atom("linked")],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let Some(pid) = pid.as_pid().cloned() else {
        panic!("whereis gave {pid}")
    };
    watcher.link(&pid);
    let mut watcher = watcher;
    // The link is set up before the stop is sent (the BEAM sees it).
    let linked = "{links, L} = process_info(whereis(linked), links), length(L)".to_owned();
    for _ in 0..100 {
        if eval(b, linked.clone()).await == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eval(b, "linked ! stop".into()).await;
    let got = watcher.recv_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        got.as_tuple().map(|t| (t[0].clone(), t[2].clone())),
        Some((Term::atom("EXIT"), Term::atom("bye")))
    );
    // Visible both ways, over the one TLS connection.
    assert_eq!(rust.nodes(), vec![bn.clone()]);
    assert_eq!(
        eval(b, format!("lists:member('{r}', nodes())")).await,
        "true"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn otp25_and_rust_over_tls_both_ways() {
    let p = pair("tls25", Runtime::Erlang, RENEGOTIATE).await;
    let (rust, b) = (&p.rust, &p.beam);
    exercise(rust, b).await;
    // The BEAM's own view: the connection is TLS.
    assert_eq!(
        eval(
            b,
            "element(2, lists:keyfind(proto_dist, 1, init:get_arguments()))".into()
        )
        .await,
        "[\"inet_tls\"]"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_dials_otp25_first_over_tls() {
    // The Rust node makes the first connection (the BEAM never dialled).
    let p = pair("tls25d", Runtime::Erlang, RENEGOTIATE).await;
    let (rust, b) = (&p.rust, &p.beam);
    rust.ping(b.node_name())
        .await
        .expect("Rust dials the BEAM over TLS");
    assert_eq!(
        eval(b, format!("lists:member('{}', nodes())", rust.name())).await,
        "true"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn elixir_node_over_tls() {
    let p = pair("tlsex", Runtime::Elixir, RENEGOTIATE).await;
    let (rust, b) = (&p.rust, &p.beam);
    let r = rust.name();
    assert_eq!(eval(b, format!("'Elixir.Node':ping('{r}')")).await, "pong");
    assert_eq!(
        eval(
            b,
            format!("'Elixir.GenServer':call({{greeter, '{r}'}}, <<\"elixir\">>)")
        )
        .await,
        "{hello,<<\"elixir\">>}"
    );
    rust.ping(b.node_name()).await.expect("Rust pings Elixir");
}

#[tokio::test(flavor = "multi_thread")]
async fn otp27_and_rust_over_tls_both_ways() {
    let root = tokio::task::spawn_blocking(otp27::ensure_rootfs)
        .await
        .unwrap();
    let ca = Ca::new("erlkube test CA");
    // The files live inside the chroot so that its erl reads them too.
    let dir = TlsDir::new(Some(&root.join("tmp")), "tls27");
    let rust_conf = dir.node_files("rust", &ca.issue(HOSTS), ca.pem(), true, Path::new("/"));
    let beam_conf = dir.node_files("beam", &ca.issue(HOSTS), ca.pem(), true, &root);
    let epmd = OtpEpmd::start().unwrap();
    let rust = tls_rust(epmd.port(), &rust_conf).await;
    let beam_conf_in_chroot = format!("/{}", beam_conf.strip_prefix(&root).unwrap().display());
    let beam = format!("{}@127.0.0.1", unique_name("tls27"));
    let r = rust.name().to_owned();
    let expr = format!(
        "P = net_adm:ping('{r}'), \
         A = rpc:call('{r}', demo, add, [20, 22]), \
         G = gen_server:call({{greeter, '{r}'}}, otp27), \
         B = crypto:strong_rand_bytes(10000000), {{echo, '{r}'}} ! {{self(), B}}, \
         E = receive X -> X =:= B after 30000 -> timeout end, \
         io:format(\"~s ~p ~p ~p ~p~n\", [erlang:system_info(otp_release), P, A, G, E]), \
         receive stop -> ok after 600000 -> ok end."
    );
    let mut cmd = tokio::process::Command::from(otp27::erl_command(
        &root,
        epmd.port(),
        &beam,
        "tls_c",
        &[
            "-proto_dist",
            "inet_tls",
            "-ssl_dist_optfile",
            &beam_conf_in_chroot,
            "-eval",
            &expr,
        ],
    ));
    cmd.kill_on_drop(true).stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(90), lines.next_line())
        .await
        .expect("OTP 27 answers within 90 s")
        .unwrap()
        .unwrap_or_default();
    assert_eq!(line, "27 pong 42 {hello,otp27} true");
    // And the Rust node dials OTP 27 itself: a new TLS connection.
    disconnect(&rust, &beam).await;
    rust.ping(&beam)
        .await
        .expect("Rust dials and pings OTP 27 over TLS");
    let n = rust
        .rpc_call(
            &beam,
            "erlang",
            "system_info",
            vec![Term::atom("otp_release")],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(
        n,
        Term::List("27".chars().map(|c| Term::Integer(c as i64)).collect())
    );
    let _ = child.kill().await;
}

/// TLS 1.3 when both files ask for it (OTP's dist default is 1.2 only):
/// with `versions` holding only 'tlsv1.3' on both ends, nothing else can
/// be negotiated, so a connection at all means TLS 1.3.
#[tokio::test(flavor = "multi_thread")]
async fn otp25_and_rust_over_tls13() {
    let p = pair("tls13", Runtime::Erlang, ", {versions, ['tlsv1.3']}").await;
    let (rust, b) = (&p.rust, &p.beam);
    let r = rust.name();
    assert_eq!(eval(b, format!("net_adm:ping('{r}')")).await, "pong");
    disconnect(rust, b.node_name()).await;
    rust.ping(b.node_name())
        .await
        .expect("Rust dials with TLS 1.3");
}
