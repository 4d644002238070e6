//! Every configuration example in docs/ runs through the real binary's
//! `--check` (`erlkube agent --check` for the agent's Kubernetes env,
//! `erlkube formation --check` for the TOML files), and the node name that
//! goes with each example must have the host form its discovery finds
//! (`myapp@10.4.2.17` with `dns_a`, DNS names with kubernetes `dns` mode):
//! a mismatch is the warning that these nodes could never connect.

use std::collections::BTreeMap;

use erlkube_testkit::docs::code_blocks;
use erlkube_testkit::unique_name;

mod common;
use common::{outcome, run_clean};

fn doc(name: &str) -> String {
    let path = format!("{}/../../docs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A container's `env:` list as a pod would see it: downward-API fields
/// filled with a pod's values, secrets with a placeholder, `$(VAR)`
/// references expanded as the kubelet does.
fn pod_env(block: &str) -> BTreeMap<String, String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(block).unwrap();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for item in doc["env"].as_sequence().expect("an env: list") {
        let name = item["name"].as_str().unwrap().to_owned();
        let value = if let Some(v) = item["value"].as_str() {
            let mut v: String = v.to_owned();
            for (k, val) in &env {
                v = v.replace(&format!("$({k})"), val);
            }
            v
        } else {
            let field = item["valueFrom"]["fieldRef"]["fieldPath"].as_str();
            match field {
                Some("status.podIP") => "10.4.2.17".to_owned(),
                Some("metadata.namespace") => "prod".into(),
                Some("metadata.name") => "myapp-0".into(),
                None if !item["valueFrom"]["secretKeyRef"].is_null() => "secret-cookie".into(),
                other => panic!("{name}: unhandled valueFrom {other:?}"),
            }
        };
        env.insert(name, value);
    }
    env
}

#[test]
fn the_agent_sidecar_example_checks_and_its_names_can_cluster() {
    let blocks: Vec<String> = code_blocks(&doc("agent.md"), "yaml")
        .into_iter()
        .filter(|b| b.contains("ERLKUBE_"))
        .collect();
    assert!(
        !blocks.is_empty(),
        "docs/agent.md has its Kubernetes example"
    );
    for block in blocks {
        let env = pod_env(&block);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (code, out, err) = outcome(run_clean(&["agent", "--check"], &pairs));
        assert_eq!(code, 0, "{block}\n{out}\n{err}");
        assert!(
            !err.contains("warning"),
            "the example's names disagree:\n{err}"
        );
        // The name the agent derived is the form dns_a finds.
        assert!(out.contains("myapp@10.4.2.17"), "{out}");
    }
}

/// The node name each TOML example goes with, as its doc states it.
fn node_for(doc_name: &str, block: &str) -> String {
    if let Some(line) = block.lines().find(|l| l.trim_start().starts_with("node =")) {
        return line.split('"').nth(1).unwrap().to_owned();
    }
    match doc_name {
        "configuration.md" => "myapp@10.244.1.7".into(),
        "kubernetes.md" => "myapp@10-244-1-7.myapp-headless.prod.svc.cluster.local".into(),
        other => panic!("{other}: no node name for this example"),
    }
}

#[test]
fn every_toml_example_checks_and_agrees_with_its_node_names() {
    let dir = std::env::temp_dir().join(unique_name("docs_toml"));
    std::fs::create_dir_all(&dir).unwrap();
    // The gossip example reads its secret from a file: a 32-byte stand-in.
    let secret = dir.join("gossip.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
    let mut checked = 0;
    for name in ["configuration.md", "kubernetes.md", "gossip.md"] {
        let text = doc(name);
        for (i, block) in code_blocks(&text, "toml").into_iter().enumerate() {
            let node = node_for(name, &block);
            assert!(text.contains(&node), "{name} names {node} for its example");
            let block = block.replace("/etc/erlkube/gossip.secret", secret.to_str().unwrap());
            let file = dir.join(format!("{name}-{i}.toml"));
            std::fs::write(&file, &block).unwrap();
            let (code, out, err) = outcome(run_clean(
                &[
                    "formation",
                    "--check",
                    "--config",
                    file.to_str().unwrap(),
                    "--node",
                    &node,
                ],
                &[
                    ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                    ("KUBERNETES_SERVICE_PORT", "443"),
                ],
            ));
            assert_eq!(code, 0, "{name} example {i}:\n{block}\n{out}\n{err}");
            assert!(!err.contains("warning"), "{name} example {i}: {err}");
            checked += 1;
        }
    }
    assert!(checked >= 3, "found {checked} TOML examples");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_mismatch_is_a_warning_naming_both_forms() {
    // The old docs/agent.md example: pod_dns names with dns_a discovery.
    let (code, _out, err) = outcome(run_clean(
        &["agent", "--check"],
        &[
            ("POD_IP", "10.4.2.17"),
            ("POD_NAMESPACE", "prod"),
            ("RELEASE_COOKIE", "c"),
            ("RELEASE_NAME", "myapp"),
            ("ERLKUBE_NODENAME_SERVICE", "myapp-headless"),
            ("ERLKUBE_DISCOVERY_STRATEGY", "dns_a"),
            (
                "ERLKUBE_DISCOVERY_DNS_QUERY",
                "myapp-headless.prod.svc.cluster.local",
            ),
            ("ERLKUBE_DISCOVERY_DNS_BASENAME", "myapp"),
        ],
    ));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning") && err.contains("can never connect"),
        "{err}"
    );
    assert!(err.contains("myapp@10-4-2-17.myapp-headless"), "{err}");
    // formation --check with RELEASE_NODE does the same.
    let (code, out, err) = outcome(run_clean(
        &["formation", "--check"],
        &[
            ("RELEASE_NODE", "myapp@myapp-0"),
            ("ERLKUBE_DISCOVERY_STRATEGY", "dns_a"),
            (
                "ERLKUBE_DISCOVERY_DNS_QUERY",
                "myapp-headless.prod.svc.cluster.local",
            ),
            ("ERLKUBE_DISCOVERY_DNS_BASENAME", "myapp"),
        ],
    ));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("discovered names have as host: an IPv4 address"),
        "{out}"
    );
    assert!(err.contains("short name"), "{err}");
}
