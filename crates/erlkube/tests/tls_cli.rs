//! TLS distribution through the binary: `erlkube node --proto-dist
//! inet_tls --ssl-dist-optfile FILE` against real OTP 25 nodes started with
//! `-proto_dist inet_tls -ssl_dist_optfile FILE`; `erlkube ping`, `rpc`,
//! and the agent over TLS (`remsh` over TLS: `tests/remote.rs`); bad input refused with
//! exit 2 before anything listens; refusals (plain TCP, another CA, an
//! expired certificate, no client certificate) logged with a named reason
//! while the node stays up; certificate rotation without a restart.
//!
//! Certificates are made in the test (rcgen, `erlkube_testkit::tls`).
//! Loopback only; every child is killed on drop.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use erlkube_testkit::tls::{Ca, Leaf, TlsDir};
use erlkube_testkit::{
    free_port, loopback_port_is_free, unique_name, wait_until, ChildGuard, ErlNode, OtpEpmd,
};

mod common;
use common::{http_get, ERLKUBE};

const COOKIE: &str = "tls_cli_cookie";
const HOSTS: &[&str] = &["localhost", "127.0.0.1"];
/// Liveness bound of each wait (not a performance assertion).
const WAIT: Duration = Duration::from_secs(30);

/// `erlkube node` speaking TLS on a fixed port, its log (stderr) collected.
struct TlsNode {
    child: ChildGuard,
    name: String,
    log: Arc<Mutex<String>>,
}

impl TlsNode {
    fn start(epmd: &OtpEpmd, optfile: &Path) -> TlsNode {
        let name = format!("{}@127.0.0.1", unique_name("tlsnode"));
        let port = free_port();
        let mut cmd = Command::new(ERLKUBE);
        cmd.args(["node", "--name", &name, "--port", &port.to_string()])
            .args(["--proto-dist", "inet_tls", "--ssl-dist-optfile"])
            .arg(optfile)
            .env("RELEASE_COOKIE", COOKIE)
            .env("ERL_EPMD_PORT", epmd.port().to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = ChildGuard::spawn(&mut cmd).expect("spawn erlkube node");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.child_mut().stderr.take().unwrap();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let stdout = child.child_mut().stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.contains("listening on port"),
            "{line}; log: {}",
            log.lock().unwrap()
        );
        TlsNode { child, name, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_log(&self, text: &str) {
        assert!(
            wait_until(WAIT, || self.log().contains(text)),
            "no {text:?} in the node's log:\n{}",
            self.log()
        );
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// A BEAM node; with `optfile`, speaking TLS with it.
fn beam(epmd: &OtpEpmd, optfile: Option<&Path>, prefix: &str) -> ErlNode {
    let mut b = ErlNode::builder(&unique_name(prefix))
        .cookie(COOKIE)
        .epmd_port(epmd.port());
    if let Some(f) = optfile {
        b = b
            .arg("-proto_dist")
            .arg("inet_tls")
            .arg("-ssl_dist_optfile")
            .arg(f.to_str().unwrap());
    }
    b.start().expect("erl starts")
}

fn ping(from: &ErlNode, to: &str) -> String {
    from.eval(&format!("net_adm:ping('{to}')")).unwrap()
}

/// A CA, a directory, and a TLS erlkube node with a certificate of that CA.
struct Bed {
    ca: Ca,
    dir: TlsDir,
    epmd: OtpEpmd,
    node: TlsNode,
}

fn bed(test: &str) -> Bed {
    let ca = Ca::new("erlkube test CA");
    let dir = TlsDir::new(None, test);
    let conf = dir.node_files("node", &ca.issue(HOSTS), ca.pem(), true, Path::new("/"));
    let epmd = OtpEpmd::start().expect("OTP epmd");
    let node = TlsNode::start(&epmd, &conf);
    Bed {
        ca,
        dir,
        epmd,
        node,
    }
}

impl Bed {
    /// The node still accepts a good TLS peer.
    fn assert_still_serving(&mut self) {
        assert!(
            self.node.is_running(),
            "the node exited:\n{}",
            self.node.log()
        );
        let conf = self.peer_conf("good", &self.ca.issue(HOSTS), self.ca.pem(), true);
        let good = beam(&self.epmd, Some(&conf), "good");
        assert_eq!(ping(&good, &self.node.name), "pong", "{}", self.node.log());
    }

    fn peer_conf(&self, prefix: &str, leaf: &Leaf, ca_pem: &str, fail: bool) -> PathBuf {
        let p = unique_name(prefix);
        self.dir.node_files(&p, leaf, ca_pem, fail, Path::new("/"))
    }
}

#[test]
fn plain_tcp_peer_is_refused_with_a_reason_and_the_node_stays_up() {
    let mut b = bed("tls_plain");
    let plain = beam(&b.epmd, None, "plain");
    assert_eq!(ping(&plain, &b.node.name), "pang");
    b.node.wait_log("TLS connection refused reason=\"not_tls\"");
    b.assert_still_serving();
}

#[test]
fn certificate_of_another_ca_is_refused_with_a_reason() {
    let mut b = bed("tls_otherca");
    let other = Ca::new("another CA");
    // The peer trusts our CA (so it gets as far as showing its
    // certificate), but its own certificate is from another CA.
    let conf = b.peer_conf("other", &other.issue(HOSTS), b.ca.pem(), true);
    let peer = beam(&b.epmd, Some(&conf), "otherca");
    assert_eq!(ping(&peer, &b.node.name), "pang");
    b.node
        .wait_log("TLS connection refused reason=\"unknown_ca\"");
    b.assert_still_serving();
}

#[test]
fn expired_certificate_is_refused_with_a_reason() {
    let mut b = bed("tls_expired");
    let conf = b.peer_conf("expired", &b.ca.issue_expired(HOSTS), b.ca.pem(), true);
    let peer = beam(&b.epmd, Some(&conf), "expired");
    assert_eq!(ping(&peer, &b.node.name), "pang");
    b.node
        .wait_log("TLS connection refused reason=\"certificate_expired\"");
    b.assert_still_serving();
}

#[test]
fn client_without_certificate_is_refused_when_fail_if_no_peer_cert() {
    let mut b = bed("tls_nocert");
    // A client side with the CA only: no certfile, no keyfile.
    let ca = b.dir.write("nocert-ca.crt", b.ca.pem());
    let text = format!(
        "[{{server, [{{verify, verify_none}}]}},\n {{client, [{{cacertfile, \"{}\"}}, {{verify, verify_peer}}]}}].\n",
        ca.display()
    );
    let conf = b.dir.write("nocert.conf", &text);
    let peer = beam(&b.epmd, Some(&conf), "nocert");
    assert_eq!(ping(&peer, &b.node.name), "pang");
    b.node
        .wait_log("TLS connection refused reason=\"no_peer_certificate\"");
    b.assert_still_serving();
}

#[test]
fn bad_tls_input_exits_2_naming_the_file_before_anything_listens() {
    let ca = Ca::new("erlkube test CA");
    let dir = TlsDir::new(None, "tls_bad");
    let root = Path::new("/");
    let good = dir.node_files("good", &ca.issue(HOSTS), ca.pem(), true, root);
    let other = ca.issue(HOSTS);
    let missing = dir.path().join("missing.conf");
    let unparsable = dir.write("unparsable.conf", "[{server, [{certfile, \"a\"}]");
    let unsupported = dir.write(
        "unsupported.conf",
        "[{server, [{certfile, \"a\"}, {crl_check, true}]}].",
    );
    let text = std::fs::read_to_string(&good).unwrap();
    let good_key = dir.path().join("good.key");
    let good_crt = dir.path().join("good.crt");
    // The key of another certificate.
    let other_key = dir.write("other.key", &other.key_pem);
    let mismatch = dir.write(
        "mismatch.conf",
        &text.replace(good_key.to_str().unwrap(), other_key.to_str().unwrap()),
    );
    let nofile = dir.write(
        "nofile.conf",
        &text.replace(good_crt.to_str().unwrap(), "/nonexistent/tls.crt"),
    );
    let cases: Vec<(PathBuf, String)> = vec![
        (
            missing.clone(),
            format!("cannot read the ssl_dist_optfile {}", missing.display()),
        ),
        (
            unparsable.clone(),
            format!("{} does not parse", unparsable.display()),
        ),
        (
            unsupported.clone(),
            format!("{}: option crl_check in server", unsupported.display()),
        ),
        (
            mismatch,
            format!(
                "the key in {} does not go with the certificate in {}",
                other_key.display(),
                good_crt.display()
            ),
        ),
        (
            nofile,
            "certfile /nonexistent/tls.crt: cannot read it".into(),
        ),
    ];
    for (file, expected) in cases {
        let port = free_port();
        let out = Command::new(ERLKUBE)
            .args(["node", "--name", "bad@127.0.0.1", "--no-epmd", "--port"])
            .arg(port.to_string())
            .args(["--proto-dist", "inet_tls", "--ssl-dist-optfile"])
            .arg(&file)
            .env("RELEASE_COOKIE", COOKIE)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let (code, _out, err) = common::outcome(out);
        assert_eq!(code, 2, "{}: {err}", file.display());
        assert!(err.contains(&expected), "{}: {err}", file.display());
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(loopback_port_is_free(port), "nothing listened on {port}");
    }
    // The flags need each other.
    let out = Command::new(ERLKUBE)
        .args([
            "node",
            "--name",
            "bad@127.0.0.1",
            "--no-epmd",
            "--port",
            "1",
        ])
        .arg("--ssl-dist-optfile")
        .arg(&good)
        .env("RELEASE_COOKIE", COOKIE)
        .output()
        .unwrap();
    let (code, _, err) = common::outcome(out);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs --proto-dist inet_tls"), "{err}");
}

#[test]
fn ping_rpc_and_via_over_tls() {
    let ca = Ca::new("erlkube test CA");
    let dir = TlsDir::new(None, "tls_tools");
    let root = Path::new("/");
    let epmd = OtpEpmd::start().unwrap();
    let port = free_port();
    let beam_conf = dir.node_files("beam", &ca.issue(HOSTS), ca.pem(), true, root);
    let tool_conf = dir.node_files("tool", &ca.issue(HOSTS), ca.pem(), true, root);
    let b = ErlNode::builder(&unique_name("tlstools"))
        .cookie(COOKIE)
        .epmd_port(epmd.port())
        .dist_port_range(port, port)
        .arg("-proto_dist")
        .arg("inet_tls")
        .arg("-ssl_dist_optfile")
        .arg(beam_conf.to_str().unwrap())
        .start()
        .unwrap();
    let run = |args: &[&str]| {
        common::outcome(
            Command::new(ERLKUBE)
                .args(args)
                .args(["--proto-dist", "inet_tls", "--ssl-dist-optfile"])
                .arg(&tool_conf)
                .env("RELEASE_COOKIE", COOKIE)
                .env("ERL_EPMD_PORT", epmd.port().to_string())
                .output()
                .unwrap(),
        )
    };
    let n = b.node_name();
    assert_eq!(run(&["ping", n]).1, "pong");
    let (code, out, err) = run(&["rpc", n, "erlang", "node"]);
    assert_eq!((code, out), (0, format!("'{n}'")), "{err}");
    let via = format!("127.0.0.1:{port}");
    let (code, out, err) = run(&["ping", n, "--via", &via]);
    assert_eq!((code, out.as_str()), (0, "pong"), "{err}");
    let (code, out, err) = run(&["rpc", n, "lists", "sum", "[[1,2,3]]", "--via", &via]);
    assert_eq!((code, out.as_str()), (0, "6"), "{err}");
    // Without TLS the same node answers pang.
    let (code, out, _) = common::outcome(
        Command::new(ERLKUBE)
            .args(["ping", n, "--via", &via, "--timeout", "3s"])
            .env("RELEASE_COOKIE", COOKIE)
            .output()
            .unwrap(),
    );
    assert_eq!((code, out.as_str()), (1, "pang"));
}

#[test]
fn rotation_new_connections_use_the_new_ca_old_ones_stay_up() {
    let ca1 = Ca::new("first CA");
    let dir = TlsDir::new(None, "tls_rotate");
    let root = Path::new("/");
    let conf = dir.node_files("node", &ca1.issue(HOSTS), ca1.pem(), true, root);
    let epmd = OtpEpmd::start().unwrap();
    let mut node = TlsNode::start(&epmd, &conf);
    let old_conf = dir.node_files("old", &ca1.issue(HOSTS), ca1.pem(), true, root);
    let old = beam(&epmd, Some(&old_conf), "old");
    assert_eq!(ping(&old, &node.name), "pong");
    // The old peer watches for nodedown of the Rust node.
    old.eval("ok = net_kernel:monitor_nodes(true), register(watch, self()), ok")
        .unwrap();

    // cert-manager renews into a new CA: the same file names, new contents.
    let ca2 = Ca::new("second CA");
    let leaf = ca2.issue(HOSTS);
    dir.write("node.crt", &leaf.cert_pem);
    dir.write("node.key", &leaf.key_pem);
    dir.write("node-ca.crt", ca2.pem());

    // A new peer with a certificate of the new CA gets in, without a restart.
    let new_conf = dir.node_files("new", &ca2.issue(HOSTS), ca2.pem(), true, root);
    let new = beam(&epmd, Some(&new_conf), "new");
    assert_eq!(ping(&new, &node.name), "pong", "{}", node.log());
    node.wait_log("TLS files changed");
    // A new peer of the old CA does not.
    let late_conf = dir.node_files("late", &ca1.issue(HOSTS), ca1.pem(), true, root);
    let late = beam(&epmd, Some(&late_conf), "late");
    assert_eq!(ping(&late, &node.name), "pang");
    // The old connection is the same one and still works.
    let r = &node.name;
    assert_eq!(
        old.eval(&format!("rpc:call('{r}', demo, add, [1, 2])"))
            .unwrap(),
        "3"
    );
    assert_eq!(
        old.eval("receive {nodedown, N} -> {nodedown, N} after 0 -> none end")
            .unwrap(),
        "none",
        "the old connection never went down"
    );
    assert!(node.is_running());
}

#[test]
fn agent_over_tls_exports_certificate_expiry() {
    let ca = Ca::new("erlkube test CA");
    let dir = TlsDir::new(None, "tls_agent");
    let root = Path::new("/");
    let conf = dir.node_files(
        "beam",
        &ca.issue_until(HOSTS, 2040, 1, 1),
        ca.pem(),
        true,
        root,
    );
    let epmd = OtpEpmd::start().unwrap();
    let b = beam(&epmd, Some(&conf), "agentbeam");
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = Command::new(ERLKUBE);
    cmd.arg("agent")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent-home")
        .env("ERL_EPMD_PORT", epmd.port().to_string())
        .env("RELEASE_NODE", b.node_name())
        .env("RELEASE_COOKIE", COOKIE)
        .env(
            "ERLKUBE_AGENT_NAME",
            format!("{}@127.0.0.1", unique_name("agent")),
        )
        .env("ERLKUBE_AGENT_HTTP", http.to_string())
        .env("ERLKUBE_AGENT_WAIT_INTERVAL", "100ms")
        .env("ERLKUBE_AGENT_PROTO_DIST", "inet_tls")
        .env("ERLKUBE_AGENT_SSL_DIST_OPTFILE", &conf)
        .env("ERLKUBE_DISCOVERY_STRATEGY", "static")
        .env("ERLKUBE_DISCOVERY_STATIC_NODES", b.node_name())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _agent = ChildGuard::spawn(&mut cmd).unwrap();
    assert!(
        wait_until(WAIT, || http_get(http, "/readyz")
            .is_ok_and(|(s, _)| s == 200)),
        "the agent never became ready over TLS: {:?}",
        http_get(http, "/cluster")
    );
    // The agent's hidden node is connected to the node over TLS.
    let hidden = b.eval("nodes(hidden)").unwrap();
    assert!(hidden.contains("agent"), "{hidden}");
    let expiry = |body: &str| -> i64 {
        body.lines()
            .find_map(|l| l.strip_prefix("erlkube_agent_tls_certificate_expiry_seconds "))
            .unwrap_or_else(|| panic!("no expiry metric in:\n{body}"))
            .parse()
            .unwrap()
    };
    let until = |y: i32| -> i64 {
        // Seconds from now to 1 January of year `y`, 00:00 UTC.
        let days_from_epoch = (1970..y)
            .map(|yr| {
                if (yr % 4 == 0 && yr % 100 != 0) || yr % 400 == 0 {
                    366
                } else {
                    365
                }
            })
            .sum::<i64>();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        days_from_epoch * 86_400 - now
    };
    let (_, body) = http_get(http, "/metrics").unwrap();
    let got = expiry(&body);
    assert!((got - until(2040)).abs() < 600, "{got} vs {}", until(2040));
    // A renewed certificate shows at once.
    let renewed = ca.issue_until(HOSTS, 2041, 1, 1);
    dir.write("beam.crt", &renewed.cert_pem);
    dir.write("beam.key", &renewed.key_pem);
    let (_, body) = http_get(http, "/metrics").unwrap();
    let got = expiry(&body);
    assert!((got - until(2041)).abs() < 600, "{got} vs {}", until(2041));
}

/// `erlkube manifests --tls cert-manager` for a StatefulSet of `replicas`.
fn tls_manifests(replicas: &str) -> String {
    let out = common::run_clean(
        &[
            "manifests",
            "--app",
            "myapp",
            "--image",
            "registry.example/myapp:1.2.0",
            "--agent-image",
            "registry.example/erlkube:0.1.0",
            "--namespace",
            "prod",
            "--workload",
            "statefulset",
            "--replicas",
            replicas,
            "--tls",
            "cert-manager",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    common::text(&out.stdout)
}

fn yaml_documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

/// Validates every cert-manager object of `yaml` against cert-manager's
/// published CRD schemas (tests/data/cert-manager, offline) with Python's
/// jsonschema, plus a strict pass that refuses fields the schema does not
/// declare (the API server would silently drop them). Returns how many
/// objects were checked, or the validator's complaint.
fn validate_cert_manager(yaml: &str) -> Result<usize, String> {
    const SCRIPT: &str = r#"
import sys, yaml, jsonschema
schemas = {}
for path in sys.argv[1:]:
    for d in yaml.safe_load_all(open(path)):
        if d and d.get('kind') == 'CustomResourceDefinition':
            for v in d['spec']['versions']:
                key = (d['spec']['group'] + '/' + v['name'], d['spec']['names']['kind'])
                schemas[key] = v['schema']['openAPIV3Schema']
def strict(o, s, path):
    if isinstance(o, dict):
        props = s.get('properties')
        if props is not None and not s.get('x-kubernetes-preserve-unknown-fields'):
            for k, v in o.items():
                if k not in props:
                    sys.exit('unknown field %s.%s' % (path, k))
                strict(v, props[k], path + '.' + k)
        elif isinstance(s.get('additionalProperties'), dict):
            for k, v in o.items():
                strict(v, s['additionalProperties'], path + '.' + k)
    elif isinstance(o, list) and isinstance(s.get('items'), dict):
        for i, v in enumerate(o):
            strict(v, s['items'], '%s[%d]' % (path, i))
n = 0
for o in yaml.safe_load_all(sys.stdin):
    if not o or not o['apiVersion'].startswith('cert-manager.io/'):
        continue
    key = (o['apiVersion'], o['kind'])
    if key not in schemas:
        sys.exit('no published schema for %s %s' % key)
    try:
        jsonschema.validate(o, schemas[key])
    except jsonschema.ValidationError as e:
        sys.exit('%s %s: %s' % (o['kind'], o['metadata']['name'], e.message))
    strict(o, schemas[key], o['kind'])
    n += 1
print(n)
"#;
    use std::io::Write;
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cert-manager");
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(data.join("cert-manager.io_certificates.yaml"))
        .arg(data.join("cert-manager.io_issuers.yaml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with PyYAML and jsonschema (.ci/run installs them)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(common::text(&out.stdout).trim().parse().unwrap())
    } else {
        Err(common::text(&out.stderr))
    }
}

#[test]
fn cert_manager_manifests_validate_and_wire_the_secret_into_both_containers() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{ConfigMap, Service};
    let yaml = tls_manifests("3");
    // Issuer (self-signed), Certificate (CA), Issuer (CA), Certificate (nodes).
    assert_eq!(validate_cert_manager(&yaml), Ok(4));
    // The validator fails on what the schema refuses: a misspelled field,
    // a wrong type.
    let typo = yaml.replacen("  isCA: true", "  isCa: true", 1);
    assert!(validate_cert_manager(&typo)
        .unwrap_err()
        .contains("unknown field Certificate.spec.isCa"));
    let wrong = yaml.replacen("  isCA: true", "  isCA: \"yes\"", 1);
    assert!(validate_cert_manager(&wrong).is_err());

    let docs = yaml_documents(&yaml);
    let by_kind = |kind: &str| -> Vec<&serde_json::Value> {
        docs.iter().filter(|d| d["kind"] == kind).collect()
    };
    let sts: StatefulSet = erlkube_testkit::docs::round_trip(by_kind("StatefulSet")[0]);
    let cm: ConfigMap = erlkube_testkit::docs::round_trip(by_kind("ConfigMap")[0]);
    let _svc: Service = erlkube_testkit::docs::round_trip(by_kind("Service")[0]);
    let node_cert = by_kind("Certificate")
        .into_iter()
        .find(|c| c["spec"]["isCA"].is_null())
        .expect("the nodes' certificate");
    let pod = sts.spec.unwrap().template.spec.unwrap();
    // The Secret cert-manager writes is the one mounted.
    let volumes = pod.volumes.unwrap();
    let secret = volumes
        .iter()
        .find_map(|v| v.secret.as_ref())
        .and_then(|s| s.secret_name.clone())
        .unwrap();
    assert_eq!(node_cert["spec"]["secretName"], secret.as_str());
    let cm_name = volumes
        .iter()
        .find_map(|v| v.config_map.as_ref())
        .map(|c| c.name.clone())
        .unwrap();
    assert_eq!(cm.metadata.name.as_deref(), Some(cm_name.as_str()));
    // Both containers mount both; the optfile they are told to read is
    // the ConfigMap's key at its mount path, and names the Secret's files.
    let optfile_text = &cm.data.as_ref().unwrap()["ssl_dist.conf"];
    for c in &pod.containers {
        let mounts = c.volume_mounts.as_ref().expect("mounts");
        let at = |name: &str| {
            mounts
                .iter()
                .find(|m| m.name == name)
                .map(|m| {
                    assert!(m.sub_path.is_none(), "a subPath mount is never updated");
                    m.mount_path.clone()
                })
                .unwrap_or_else(|| panic!("{} mounts no {name}", c.name))
        };
        let optfile = format!("{}/ssl_dist.conf", at("ssl-dist"));
        let tls_dir = at("dist-tls");
        for f in ["tls.crt", "tls.key", "ca.crt"] {
            assert!(
                optfile_text.contains(&format!("\"{tls_dir}/{f}\"")),
                "{optfile_text}"
            );
        }
        let env: BTreeMap<String, String> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect();
        if c.name == "erlkube-agent" {
            assert_eq!(env["ERLKUBE_AGENT_PROTO_DIST"], "inet_tls");
            assert_eq!(env["ERLKUBE_AGENT_SSL_DIST_OPTFILE"], optfile);
        } else {
            // ERL_FLAGS reaches every erl the container starts: the release
            // and `bin/myapp remote`.
            assert_eq!(
                env["ERL_FLAGS"],
                format!("-proto_dist inet_tls -ssl_dist_optfile {optfile}")
            );
        }
    }
    // The certificate names each pod's node host (RELEASE_NODE expanded
    // for pod myapp-N in namespace prod).
    let names: Vec<&str> = node_cert["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for n in 0..3 {
        let host = format!("myapp-{n}.myapp-headless.prod.svc.cluster.local");
        assert!(names.contains(&host.as_str()), "{names:?}");
    }
    // The CA lasts longer than the nodes' certificate is renewed within.
    let ca = by_kind("Certificate")
        .into_iter()
        .find(|c| c["spec"]["isCA"] == true)
        .unwrap();
    assert_eq!(ca["spec"]["duration"], "87600h");
    // The optfile is erlkube's to read too (and OTP's, next test).
    let dir = TlsDir::new(None, "tls_manifest_optfile");
    let f = dir.write("ssl_dist.conf", optfile_text);
    let parsed = erlkube_node::ssl_optfile::OptFile::read(&f).unwrap();
    assert!(parsed.server.unwrap().fail_if_no_peer_cert);
}

#[test]
fn cert_manager_optfile_connects_otp_and_erlkube() {
    // The generated file, with the Secret's files as cert-manager writes
    // them (tls.crt, tls.key, ca.crt) in a test directory.
    let yaml = tls_manifests("1");
    let cm = yaml_documents(&yaml)
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap")
        .unwrap();
    let text = cm["data"]["ssl_dist.conf"].as_str().unwrap().to_owned();
    let ca = Ca::new("cluster CA");
    let dir = TlsDir::new(None, "tls_manifest_live");
    let leaf = ca.issue(HOSTS);
    dir.write("tls.crt", &leaf.cert_pem);
    dir.write("tls.key", &leaf.key_pem);
    dir.write("ca.crt", ca.pem());
    let conf = dir.write(
        "ssl_dist.conf",
        &text.replace("/etc/erlkube/tls", dir.path().to_str().unwrap()),
    );
    let epmd = OtpEpmd::start().unwrap();
    let node = TlsNode::start(&epmd, &conf);
    let b = beam(&epmd, Some(&conf), "cmbeam");
    assert_eq!(ping(&b, &node.name), "pong", "{}", node.log());
    let (code, out, err) = common::outcome(
        Command::new(ERLKUBE)
            .args([
                "ping",
                b.node_name(),
                "--proto-dist",
                "inet_tls",
                "--ssl-dist-optfile",
            ])
            .arg(&conf)
            .env("RELEASE_COOKIE", COOKIE)
            .env("ERL_EPMD_PORT", epmd.port().to_string())
            .output()
            .unwrap(),
    );
    assert_eq!((code, out.as_str()), (0, "pong"), "{err}");
}

#[test]
fn tls_manifests_need_a_statefulset() {
    let out = common::run_clean(
        &[
            "manifests",
            "--app",
            "myapp",
            "--image",
            "i:1",
            "--agent-image",
            "a:1",
            "--tls",
            "cert-manager",
        ],
        &[],
    );
    let (code, _, err) = common::outcome(out);
    assert_eq!(code, 2);
    assert!(err.contains("--tls: needs --workload statefulset"), "{err}");
}
