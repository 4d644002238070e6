//! What a new user meets first (issue 13), run as the user would: the real
//! binary, real OTP 25 `erl`, each test with its own epmd port.
//!
//! - `erlkube node` starts erlkube's port mapper as a daemon when none
//!   answers (as `erl` does), honours `ERL_EPMD_PORT`, and with
//!   `--start-epmd false` fails naming the fix;
//! - every setting is checked before any side effect (exit 2);
//! - names `erl` refuses are refused with its reason;
//! - `--timeout` takes durations with units;
//! - `rpc` with a wrong cookie says so.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use erlkube_testkit::{free_port, unique_name, wait_until, ChildGuard, ErlNode, OtpEpmd};

mod common;
use common::{outcome, ERLKUBE};

/// A port mapper daemon a test caused on a private port: killed on drop
/// (`erlkube epmd -kill`, accepted once no node is registered; the nodes
/// are dropped first, being declared after this guard).
struct DaemonOnPort(u16);

impl DaemonOnPort {
    fn answers(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.0)).is_ok()
    }
}

impl Drop for DaemonOnPort {
    fn drop(&mut self) {
        let _ = Command::new(ERLKUBE)
            .args(["epmd", "-port", &self.0.to_string(), "-kill"])
            .output();
        wait_until(Duration::from_secs(10), || !self.answers());
    }
}

/// `erlkube node` with `env`, waiting for its "listening" line.
fn rust_node(args: &[&str], env: &[(&str, &str)]) -> ChildGuard {
    let mut cmd = Command::new(ERLKUBE);
    cmd.arg("node")
        .args(args)
        .env_remove("ERL_EPMD_PORT")
        .envs(env.iter().copied())
        .stderr(Stdio::null());
    common::spawn_until_listening(&mut cmd)
}

fn erlkube(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    outcome(
        Command::new(ERLKUBE)
            .args(args)
            .env_remove("ERL_EPMD_PORT")
            .env_remove("RELEASE_COOKIE")
            .envs(env.iter().copied())
            .output()
            .unwrap(),
    )
}

fn long(prefix: &str) -> String {
    format!("{}@127.0.0.1", unique_name(prefix))
}

#[test]
fn node_starts_a_port_mapper_daemon_that_outlives_it_and_honours_erl_epmd_port() {
    let port = free_port();
    let port_s = port.to_string();
    let env = [("ERL_EPMD_PORT", port_s.as_str())];
    let daemon = DaemonOnPort(port);
    assert!(!daemon.answers(), "nothing serves the private port yet");
    let rust = long("hour_epmd");
    let mut node = rust_node(&["--name", &rust, "--cookie", "cc", "--no-discovery"], &env);
    assert!(
        daemon.answers(),
        "the node started a port mapper on ERL_EPMD_PORT"
    );

    // A real erl on the same ERL_EPMD_PORT finds the node through it;
    // ping and rpc, given only the variable, do too.
    let beam = ErlNode::builder(&unique_name("hour_beam"))
        .cookie("cc")
        .epmd_port(port)
        .start()
        .expect("erl must be installed");
    assert_eq!(
        beam.eval(&format!("net_adm:ping('{rust}')")).unwrap(),
        "pong"
    );
    let (code, out, err) = erlkube(&["ping", &rust, "--cookie", "cc"], &env);
    assert_eq!((code, out.as_str()), (0, "pong"), "{err}");
    let (code, out, err) = erlkube(
        &["rpc", &rust, "demo", "add", "[1, 2]", "--cookie", "cc"],
        &env,
    );
    assert_eq!((code, out.as_str()), (0, "3"), "{err}");

    // The daemon outlives the node, as OTP's epmd outlives erl.
    node.signal_group(libc::SIGTERM);
    assert!(wait_until(Duration::from_secs(30), || matches!(
        node.try_wait(),
        Ok(Some(_))
    )));
    assert!(
        daemon.answers(),
        "the port mapper is still up after the node stopped"
    );
    let (code, out, _) = erlkube(&["epmd", "-names"], &env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("port {port}")), "{out}");
}

#[test]
fn start_epmd_false_fails_naming_the_fix_and_starts_nothing() {
    let port = free_port();
    let (code, _, err) = erlkube(
        &[
            "node",
            "--name",
            &long("hour_noepmd"),
            "--cookie",
            "cc",
            "--epmd-port",
            &port.to_string(),
            "--start-epmd",
            "false",
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("erlkube epmd -daemon"), "{err}");
    assert_eq!(err.matches("no port mapper").count(), 1, "said once: {err}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn bad_settings_exit_2_before_any_side_effect() {
    // No epmd on the port: had the node got as far as starting one (or
    // registering), the port would answer afterwards.
    let port = free_port();
    let port_s = port.to_string();
    let dir = std::env::temp_dir().join(unique_name("hour_cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_toml = dir.join("bad.toml");
    std::fs::write(&bad_toml, "[discovery]\nstrategy = \"dns_a\"\n").unwrap();
    let name = long("hour_bad");
    for (args, needle) in [
        (vec!["--discovery", "nonsense"], "discovery.strategy"),
        (
            vec!["--config", bad_toml.to_str().unwrap()],
            "discovery.dns",
        ),
        (
            vec!["--config", "/nonexistent/erlkube.toml"],
            "configuration file",
        ),
    ] {
        let mut all = vec![
            "node",
            "--name",
            &name,
            "--cookie",
            "cc",
            "--epmd-port",
            &port_s,
        ];
        all.extend(args.iter().copied());
        let (code, _, err) = erlkube(&all, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "{args:?} left a port mapper behind"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn names_erl_refuses_are_refused_with_its_reason() {
    let port = free_port().to_string();
    for (flag, name, needle) in [
        ("--name", "fo o@127.0.0.1", "letters, digits"),
        ("--sname", "a@b.c", "short name"),
        ("--name", "a@b c", "host part"),
        ("--name", "@127.0.0.1", "empty"),
    ] {
        let (code, _, err) = erlkube(
            &["node", flag, name, "--cookie", "cc", "--epmd-port", &port],
            &[],
        );
        assert_eq!(code, 2, "{flag} {name:?}: {err}");
        assert!(err.contains(needle), "{flag} {name:?}: {err}");
    }
    // The same check on the other commands' node arguments.
    let (code, _, err) = erlkube(
        &["rpc", "fo o@127.0.0.1", "erlang", "node", "--cookie", "cc"],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("letters, digits"), "{err}");
    let (code, out, err) = erlkube(&["ping", "a@b@c", "--cookie", "cc"], &[]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("host part"), "{err}");
    // No cookie anywhere is a configuration error too.
    let (code, _, err) = erlkube(&["ping", "a@127.0.0.1"], &[("HOME", "/nonexistent-home")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cookie"), "{err}");
}

#[test]
fn timeouts_take_units_and_a_bare_number_is_refused() {
    let epmd = OtpEpmd::start().unwrap();
    let port = epmd.port().to_string();
    let env = [("ERL_EPMD_PORT", port.as_str())];
    let beam = ErlNode::builder(&unique_name("hour_units"))
        .cookie("cc")
        .epmd_port(epmd.port())
        .start()
        .expect("erl must be installed");
    let target = beam.node_name();
    let (code, out, err) = erlkube(&["ping", target, "--cookie", "cc", "--timeout", "5s"], &env);
    assert_eq!((code, out.as_str()), (0, "pong"), "{err}");
    let (code, out, err) = erlkube(
        &[
            "rpc",
            target,
            "erlang",
            "node",
            "--cookie",
            "cc",
            "--timeout",
            "4500ms",
        ],
        &env,
    );
    assert_eq!(
        (code, out.as_str()),
        (0, format!("'{target}'").as_str()),
        "{err}"
    );
    // An rpc that outlasts its timeout ends with {badrpc,timeout}.
    let (code, out, err) = erlkube(
        &[
            "rpc",
            target,
            "timer",
            "sleep",
            "[3000]",
            "--cookie",
            "cc",
            "--timeout",
            "300ms",
        ],
        &env,
    );
    assert_eq!((code, out.as_str()), (1, "{badrpc,timeout}"), "{err}");
    for cmd in ["ping", "rpc"] {
        let mut args = vec![cmd, target];
        if cmd == "rpc" {
            args.extend(["erlang", "node"]);
        }
        args.extend(["--cookie", "cc", "--timeout", "5"]);
        let (code, _, err) = erlkube(&args, &env);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(err.contains("needs a unit"), "{cmd}: {err}");
    }
}

#[test]
fn rpc_with_a_wrong_cookie_says_so() {
    let epmd = OtpEpmd::start().unwrap();
    let port = epmd.port().to_string();
    let env = [("ERL_EPMD_PORT", port.as_str())];
    let beam = ErlNode::builder(&unique_name("hour_cookie"))
        .cookie("right")
        .epmd_port(epmd.port())
        .start()
        .expect("erl must be installed");
    let (code, out, err) = erlkube(
        &[
            "rpc",
            beam.node_name(),
            "erlang",
            "node",
            "--cookie",
            "wrong",
        ],
        &env,
    );
    assert_eq!(code, 1, "{out} {err}");
    assert_eq!(out, "{badrpc,nodedown}");
    assert!(err.contains("cookie"), "{err}");
}

#[test]
fn nodename_statefulset_prefers_pod_name() {
    let (code, out, err) = common::outcome(common::run_clean(
        &["nodename", "--mode", "statefulset", "--no-check"],
        &[
            ("POD_NAME", "web-2"),
            ("HOSTNAME", "not-the-pod-name"),
            ("ERLKUBE_NODENAME_SERVICE", "web-headless"),
            ("POD_NAMESPACE", "ns"),
            ("RELEASE_NAME", "web"),
        ],
    ));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("web@web-2.web-headless.ns.svc.cluster.local"),
        "{out}"
    );
}

#[test]
fn agent_default_epmd_discovery_uses_the_node_host_and_erl_epmd_port() {
    let epmd = OtpEpmd::start().unwrap();
    let port = epmd.port().to_string();
    let e1 = ErlNode::builder(&unique_name("hour_e1"))
        .cookie("cc")
        .epmd_port(epmd.port())
        .start()
        .expect("erl must be installed");
    let e2 = ErlNode::builder(&unique_name("hour_e2"))
        .cookie("cc")
        .epmd_port(epmd.port())
        .start()
        .expect("erl must be installed");
    assert_eq!(e1.eval("nodes()").unwrap(), "[]");
    let http = format!("127.0.0.1:{}", free_port());
    let env = [
        ("ERL_EPMD_PORT", port.as_str()),
        ("RELEASE_NODE", e1.node_name()),
        ("RELEASE_COOKIE", "cc"),
        ("ERLKUBE_AGENT_HTTP", http.as_str()),
        ("ERLKUBE_AGENT_WAIT_INTERVAL", "100ms"),
    ];
    // The plan: the node's host, the private epmd.
    let (code, out, err) = erlkube(&["agent", "--check"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("discovery.epmd.host") && out.contains("\"127.0.0.1\""),
        "{out}"
    );
    assert!(out.contains(&format!("127.0.0.1:{port}")), "{out}");
    assert!(!err.contains("warning"), "{err}");

    let mut cmd = Command::new(ERLKUBE);
    cmd.arg("agent")
        .env_remove("RELEASE_COOKIE")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _agent = ChildGuard::spawn(&mut cmd).unwrap();
    let want = format!("['{}']", e2.node_name());
    let mut last = String::new();
    let joined = wait_until(Duration::from_secs(60), || {
        last = e1.eval("nodes()").unwrap_or_default();
        last == want
    });
    assert!(
        joined,
        "e1 should see e2 (and never itself as a peer): {last}"
    );
}

#[test]
fn node_warns_when_discovery_finds_only_names_it_cannot_reach() {
    // The case: e1@127.0.0.1 whose discovery names nodes @vm.
    let epmd = OtpEpmd::start().unwrap();
    let _beam = ErlNode::builder(&unique_name("hour_vm"))
        .cookie("cc")
        .epmd_port(epmd.port())
        .start()
        .expect("erl must be installed");
    let mut cmd = Command::new(ERLKUBE);
    cmd.args(["node", "--name", &long("hour_warn"), "--cookie", "cc"])
        .args(["--epmd-port", &epmd.port().to_string()])
        .env("ERLKUBE_DISCOVERY_EPMD_HOST", "vm")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut node = ChildGuard::spawn(&mut cmd).unwrap();
    let stderr = node.child_mut().stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let (mut at_start, mut in_answer) = (false, false);
    while !(at_start && in_answer) {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                at_start |= line.contains("can never connect");
                in_answer |= line.contains("only names this node cannot reach");
                seen.push(line);
            }
            Err(_) => break,
        }
    }
    assert!(
        at_start && in_answer,
        "warnings expected:\n{}",
        seen.join("\n")
    );
}
