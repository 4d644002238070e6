//! Each example built and run against real peers: Elixir 1.14 calling the
//! Rust `kv` service, the Rust caller calling an Elixir GenServer, and a
//! Rust node joining a BEAM node found through a real DNS server (dnsmasq
//! on loopback, answering the headless Service's A record).

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use erlkube_testkit::{free_port, unique_name, wait_until, ChildGuard, ErlNode, OtpEpmd, Runtime};

/// Starts an example binary and waits for its first stdout line.
fn start(
    bin: &str,
    args: &[&str],
    env: &[(&str, String)],
) -> (
    ChildGuard,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut guard = ChildGuard::spawn(&mut cmd).unwrap();
    let lines = std::io::BufReader::new(guard.child_mut().stdout.take().unwrap()).lines();
    (guard, lines)
}

fn elixir(epmd: &OtpEpmd, prefix: &str) -> ErlNode {
    ErlNode::builder(&unique_name(prefix))
        .runtime(Runtime::Elixir)
        .cookie("cc")
        .epmd_port(epmd.port())
        .eval_timeout(Duration::from_secs(60))
        .start()
        .expect("elixir must be installed")
}

#[test]
fn elixir_calls_the_rust_kv_service_with_typed_requests() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = format!("{}@127.0.0.1", unique_name("kv"));
    let (_svc, mut out) = start(
        env!("CARGO_BIN_EXE_kv_service"),
        &["--name", &rust, "--cookie", "cc"],
        &[("ERL_EPMD_PORT", epmd.port().to_string())],
    );
    assert_eq!(out.next().unwrap().unwrap(), "ready");
    let ex = elixir(&epmd, "kv_client");
    // GenServer.call/2 as Elixir writes it, evaluated by Elixir's compiler.
    let call = |req: &str| {
        ex.eval(&format!(
            "'Elixir.Code':eval_string(<<\"GenServer.call({{:kv, :'{rust}'}}, {req})\">>)"
        ))
        .unwrap()
    };
    assert_eq!(call("{:get, \\\"a\\\"}"), "{not_found,[]}");
    assert_eq!(call("{:put, \\\"a\\\", 41}"), "{ok,[]}");
    assert_eq!(call("{:get, \\\"a\\\"}"), "{{value,41},[]}");
    let bad = call("{:delete, \\\"a\\\"}");
    assert!(bad.starts_with("{{error,<<\"bad request"), "{bad}");
}

#[test]
fn rust_calls_an_elixir_genserver_with_typed_requests() {
    let epmd = OtpEpmd::start().unwrap();
    let ex = elixir(&epmd, "counter_app");
    let started = ex
        .eval(
            "'Elixir.Code':eval_string(<<\"defmodule Counter do use GenServer; \
             def init(n), do: {:ok, n}; \
             def handle_call({:add, k}, _from, n), do: {:reply, {:total, n + k}, n + k} end; \
             {:ok, _} = GenServer.start(Counter, 0, name: :counter); :started\">>)",
        )
        .unwrap();
    assert_eq!(started, "{started,[]}");
    for (k, total) in [("5", "5"), ("7", "12")] {
        let out = Command::new(env!("CARGO_BIN_EXE_call_elixir"))
            .args(["--name", &format!("{}@127.0.0.1", unique_name("caller"))])
            .args(["--cookie", "cc", "--target", ex.node_name(), "--add", k])
            .env("ERL_EPMD_PORT", epmd.port().to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), total);
    }
}

#[test]
fn a_rust_node_joins_the_nodes_dns_names() {
    let epmd = OtpEpmd::start().unwrap();
    // The BEAM "pod": app@127.0.0.1 is what dns_a makes of the A record.
    let app = ErlNode::builder("app@127.0.0.1")
        .cookie("cc")
        .epmd_port(epmd.port())
        .start()
        .expect("erl must be installed");
    let dns_port = free_port();
    let mut dns_cmd = Command::new("dnsmasq");
    dns_cmd
        .args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
        ])
        .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
        .arg(format!("--port={dns_port}"))
        .arg("--host-record=app-headless.ns.svc.cluster.local,127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _dns = ChildGuard::spawn(&mut dns_cmd).expect("dnsmasq must be installed");
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            dns_port
        ))
        .is_ok()),
        "dnsmasq listens"
    );
    let rust = format!("{}@127.0.0.1", unique_name("joiner"));
    let (_node, mut out) = start(
        env!("CARGO_BIN_EXE_dns_join"),
        &["--name", &rust, "--cookie", "cc"],
        &[
            ("ERL_EPMD_PORT", epmd.port().to_string()),
            ("ERLKUBE_DISCOVERY_STRATEGY", "dns_a".into()),
            (
                "ERLKUBE_DISCOVERY_DNS_QUERY",
                "app-headless.ns.svc.cluster.local".into(),
            ),
            ("ERLKUBE_DISCOVERY_DNS_BASENAME", "app".into()),
            (
                "ERLKUBE_DISCOVERY_DNS_SERVER",
                format!("127.0.0.1:{dns_port}"),
            ),
            ("ERLKUBE_DISCOVERY_DNS_IP_VERSION", "v4".into()),
        ],
    );
    assert_eq!(out.next().unwrap().unwrap(), "nodeup app@127.0.0.1");
    assert_eq!(app.eval("nodes()").unwrap(), format!("['{rust}']"));
}
