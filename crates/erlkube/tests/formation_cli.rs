//! `erlkube formation --check` with the built binary.

use std::process::Command;

fn check(config: Option<&str>, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_erlkube"));
    cmd.args(["formation", "--check"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("ERLKUBE_") {
            cmd.env_remove(k);
        }
    }
    let path = std::env::temp_dir().join(format!(
        "erlkube-formation-cli-{}-{}.toml",
        std::process::id(),
        config.map_or(0, str::len)
    ));
    if let Some(text) = config {
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(&path);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let _ = std::fs::remove_file(&path);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn prints_the_plan_with_sources_and_exits_0() {
    let file = "[discovery]\nstrategy = \"dns_srv\"\n[discovery.dns]\nquery = \"app-headless.default.svc.cluster.local\"\nbasename = \"app\"\n";
    let (code, out, err) = check(Some(file), &[("ERLKUBE_FORMATION_REMOVAL_GRACE", "30s")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("strategy: dns_srv"), "{out}");
    let line = |k: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(k))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("discovery.dns.query").contains("\"app-headless.default.svc.cluster.local\""),
        "{out}"
    );
    assert!(line("discovery.dns.query").ends_with("(file)"), "{out}");
    assert!(line("formation.removal_grace").contains("\"30s\""), "{out}");
    assert!(
        line("formation.removal_grace").ends_with("(env ERLKUBE_FORMATION_REMOVAL_GRACE)"),
        "{out}"
    );
    assert!(
        line("discovery.dns.empty_answer").ends_with("(default)"),
        "{out}"
    );
}

#[test]
fn a_bad_value_names_the_key_and_exits_2() {
    let (code, out, err) = check(
        None,
        &[
            ("ERLKUBE_DISCOVERY_STRATEGY", "dns_a"),
            ("ERLKUBE_DISCOVERY_DNS_QUERY", "no spaces allowed"),
        ],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains("discovery.dns.query: must be a DNS name"),
        "{err}"
    );
    let (code, _, err) = check(Some("[discovery\n"), &[]);
    assert_eq!(code, 2);
    assert!(err.contains("configuration file"), "{err}");
    let (code, _, err) = check(None, &[("ERLKUBE_DISCOVERY_STRATEGY", "carrier_pigeon")]);
    assert_eq!(code, 2);
    assert!(err.contains("discovery.strategy: must be one of"), "{err}");
    // A strategy missing a required key names that key and where to set it.
    let (code, _, err) = check(None, &[("ERLKUBE_DISCOVERY_STRATEGY", "gossip")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("discovery.gossip.cluster: required")
            && err.contains("ERLKUBE_DISCOVERY_GOSSIP_CLUSTER"),
        "{err}"
    );
}
