//! `erlkube agent --check`, `erlkube nodename` and `erlkube env` as a user
//! runs them (the real binary, a controlled environment).

use std::process::Command;

mod common;
use common::{run_clean as run, text};

#[test]
fn agent_check_prints_the_plan_with_sources_and_no_cookie() {
    let out = run(
        &["agent", "--check"],
        &[
            ("RELEASE_NODE", "app@10.0.0.5"),
            ("RELEASE_COOKIE", "very_secret_cookie"),
            ("ERLKUBE_DISCOVERY_STRATEGY", "dns_a"),
            (
                "ERLKUBE_DISCOVERY_DNS_QUERY",
                "app-headless.prod.svc.cluster.local",
            ),
            ("ERLKUBE_DISCOVERY_DNS_BASENAME", "app"),
            ("ERLKUBE_AGENT_READY_MIN_PEERS", "2"),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("agent.node                   = \"app@10.0.0.5\"  (env RELEASE_NODE)"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("agent.ready_min_peers        = \"2\"  (env ERLKUBE_AGENT_READY_MIN_PEERS)"),
        "{stdout}"
    );
    assert!(stdout.contains("strategy: dns_a"), "{stdout}");
    assert!(
        stdout.contains("cookie from env RELEASE_COOKIE (not shown)"),
        "{stdout}"
    );
    assert!(!stdout.contains("very_secret_cookie"), "{stdout}");
}

#[test]
fn bad_agent_configuration_is_one_line_naming_the_key_and_exit_2() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("RELEASE_NODE", "app@h"),
                ("RELEASE_COOKIE", "c"),
                ("ERLKUBE_AGENT_HTTP", "9568"),
            ],
            "agent.http",
        ),
        (&[("RELEASE_NODE", "app@h")], "agent.cookie_file: no cookie"),
        (&[("RELEASE_COOKIE", "c")], "agent.node"),
        (
            &[
                ("RELEASE_NODE", "app@h"),
                ("RELEASE_COOKIE", "c"),
                ("ERLKUBE_DISCOVERY_STRATEGY", "dns_a"),
            ],
            "discovery.dns.query",
        ),
        (
            &[
                ("RELEASE_NODE", "app@h"),
                ("RELEASE_COOKIE", "c"),
                ("ERLKUBE_AGENT_TYPO", "1"),
            ],
            "ERLKUBE_AGENT_TYPO: unknown key",
        ),
    ];
    for (env, named) in cases {
        for args in [&["agent", "--check"][..], &["agent"][..]] {
            let out = run(args, env);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{env:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(
                stderr.starts_with(&format!("erlkube agent: configuration error: {named}")),
                "{env:?}: {stderr}"
            );
        }
    }
}

#[test]
fn nodename_modes_from_the_pod_environment() {
    let base = [
        ("POD_IP", "10.4.2.17"),
        ("POD_NAMESPACE", "prod"),
        ("HOSTNAME", "app-2"),
        ("RELEASE_NAME", "app"),
    ];
    let name = |extra: &[(&str, &str)], args: &[&str]| {
        let mut env = base.to_vec();
        env.extend_from_slice(extra);
        let mut a = vec!["nodename", "--no-check"];
        a.extend_from_slice(args);
        let out = run(&a, &env);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    assert_eq!(name(&[], &[]), "app@10.4.2.17");
    assert_eq!(
        name(&[], &["--service", "app-headless"]),
        "app@10-4-2-17.app-headless.prod.svc.cluster.local"
    );
    assert_eq!(
        name(
            &[("CLUSTER_DOMAIN", "corp.local")],
            &["--mode", "statefulset", "--service", "app-headless"]
        ),
        "app@app-2.app-headless.prod.svc.corp.local"
    );
    assert_eq!(
        name(
            &[
                ("POD_IP", "fd00:10::2a"),
                ("ERLKUBE_NODENAME_SERVICE", "svc")
            ],
            &[]
        ),
        "app@fd00-10--2a.svc.prod.svc.cluster.local"
    );
    let out = run(
        &["nodename", "--mode", "pod_dns"],
        &[("POD_IP", "10.0.0.1"), ("RELEASE_NAME", "a")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("nodename.service"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn nodename_says_when_the_name_does_not_reach_this_pod_and_strict_fails() {
    // 198.51.100.0/24 is TEST-NET-2: not an address of this host.
    let env = [("RELEASE_NAME", "app"), ("POD_IP", "198.51.100.123")];
    let out = run(&["nodename"], &env);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(text(&out.stdout).trim(), "app@198.51.100.123");
    assert!(
        stderr.contains("does not reach this pod") && stderr.contains("not an address of this pod"),
        "{stderr}"
    );
    assert_eq!(run(&["nodename", "--strict"], &env).status.code(), Some(3));
    // With POD_IP given, the name must resolve to it.
    let env = [
        ("RELEASE_NAME", "app"),
        ("POD_IP", "10.9.9.9"),
        ("POD_NAMESPACE", "ns"),
        ("ERLKUBE_NODENAME_SERVICE", "svc"),
        ("ERLKUBE_NODENAME_MODE", "statefulset"),
        ("HOSTNAME", "localhost"),
        ("CLUSTER_DOMAIN", "invalid"),
    ];
    let out = run(&["nodename"], &env);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(text(&out.stdout).trim(), "app@localhost.svc.ns.svc.invalid");
    assert!(
        stderr.contains("does not reach this pod") && stderr.contains("does not resolve"),
        "{stderr}"
    );
    let out = run(&["nodename", "--strict"], &env);
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
    // An address of this host: no warning.
    let here = local_v4();
    let out = run(
        &["nodename", "--strict"],
        &[("RELEASE_NAME", "app"), ("POD_IP", &here)],
    );
    assert!(out.status.success());
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn env_lines_evaluate_in_sh() {
    let out = run(
        &["env", "--no-check", "--dist-port", "9100"],
        &[("POD_IP", "10.1.2.3"), ("RELEASE_NAME", "it's")],
    );
    // A quote in the basename is refused (not a valid node name part).
    assert_eq!(out.status.code(), Some(2));
    let out = run(
        &["env", "--no-check", "--dist-port", "9100"],
        &[("POD_IP", "10.1.2.3"), ("RELEASE_NAME", "web")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = text(&out.stdout);
    let sh = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "RELEASE_COMMAND=start\n{lines}\nprintf '%s|%s|%s' \"$RELEASE_DISTRIBUTION\" \"$RELEASE_NODE\" \"$ELIXIR_ERL_OPTIONS\""
        ))
        .env_remove("ELIXIR_ERL_OPTIONS")
        .output()
        .unwrap();
    assert_eq!(
        text(&sh.stdout),
        "name|web@10.1.2.3|-kernel inet_dist_listen_min 9100 inet_dist_listen_max 9100"
    );
}

/// A non-loopback IPv4 address of this host (`ip -4 addr`).
fn local_v4() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .unwrap();
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|a| a.split('/').next())
        .find(|a| !a.starts_with("127."))
        .expect("a non-loopback IPv4 address")
        .to_owned()
}
