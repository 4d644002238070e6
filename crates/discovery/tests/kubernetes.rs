//! The Kubernetes strategy against the Kubernetes API emulator
//! (erlkube-kube-emulator, the project's one stand-in: an HTTPS server
//! with its own CA speaking the real list/watch wire format). Everything
//! else here is real: the `kube` client, TLS verification, token files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use erlkube_discovery::kubernetes::{
    ApiAccess, KubeError, KubeSettings, Kubernetes, NameMode, ResourceKind,
};
use erlkube_discovery::reason::{KubeFailure, KubeOp};
use erlkube_discovery::{NodeName, Reason, Update};
use erlkube_kube_emulator::{Access, Emulator, EmulatorConfig, EndpointState, ServiceModel};
use tokio::sync::mpsc;

/// Liveness bound for an expected update (not a performance assertion).
const LIVENESS: Duration = Duration::from_secs(30);

struct Dir(PathBuf);

impl Dir {
    fn new(test: &str) -> Dir {
        let p = std::env::temp_dir().join(format!(
            "erlkube-kube-{test}-{}-{}",
            std::process::id(),
            fastrand_u32()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// A service-account directory as the kubelet mounts it.
fn service_account(dir: &Path, emu: &Emulator, token: &str, ns: &str) {
    std::fs::write(dir.join("ca.crt"), emu.ca_pem()).unwrap();
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    std::fs::write(dir.join("namespace"), ns).unwrap();
}

struct Setup {
    emu: Emulator,
    dir: Dir,
    model: ServiceModel,
}

async fn setup(test: &str) -> Setup {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.set_token("good-token", Access::Read);
    let dir = Dir::new(test);
    service_account(&dir.0, &emu, "good-token", "prod");
    let model = ServiceModel::new("prod", "app-headless", &[("app", "demo")]);
    Setup { emu, dir, model }
}

fn settings(s: &Setup) -> KubeSettings {
    let mut k = KubeSettings::new("app", "app-headless");
    k.api = ApiAccess::InCluster {
        api_server: Some(s.emu.url()),
        service_account_dir: s.dir.0.clone(),
    };
    k.timeout = Duration::from_secs(2);
    k
}

fn names(ips: &[&str]) -> BTreeSet<NodeName> {
    ips.iter()
        .map(|ip| NodeName::new(format!("app@{ip}")))
        .collect()
}

async fn start(k: KubeSettings) -> mpsc::Receiver<Update> {
    let (tx, rx) = mpsc::channel(256);
    let strategy = Kubernetes::connect(k).await.expect("strategy starts");
    assert_eq!(strategy.namespace(), "prod");
    tokio::spawn(strategy.run(tx));
    rx
}

/// What arrived while waiting for an answer.
#[derive(Debug, Default)]
struct Seen {
    answers: Vec<(BTreeSet<NodeName>, bool)>,
    errors: Vec<String>,
    /// The typed reasons of `errors`.
    reasons: Vec<Reason>,
    /// The passive nodes of the last answer.
    passive: BTreeSet<NodeName>,
}

/// Waits until a complete answer equals `want`; every update on the way is
/// recorded.
async fn until(rx: &mut mpsc::Receiver<Update>, want: &BTreeSet<NodeName>) -> Seen {
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + LIVENESS;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Update::Answer(a))) => {
                let done = a.complete && a.nodes == *want;
                seen.passive = a.passive;
                seen.answers.push((a.nodes, a.complete));
                if done {
                    return seen;
                }
            }
            Ok(Some(Update::Error(e))) => {
                seen.errors.push(e.to_string());
                seen.reasons.push(e.reason().clone());
            }
            other => panic!("no answer {want:?} (got {other:?}); seen so far: {seen:#?}"),
        }
    }
}

/// Collects updates for `d`.
async fn collect(rx: &mut mpsc::Receiver<Update>, d: Duration) -> Seen {
    let mut seen = Seen::default();
    let end = tokio::time::Instant::now() + d;
    while let Ok(Some(u)) = tokio::time::timeout_at(end, rx.recv()).await {
        match u {
            Update::Answer(a) => seen.answers.push((a.nodes, a.complete)),
            Update::Error(e) => {
                seen.errors.push(e.to_string());
                seen.reasons.push(e.reason().clone());
            }
        }
    }
    seen
}

fn assert_never_below(seen: &Seen, floor: &BTreeSet<NodeName>) {
    for (nodes, _) in &seen.answers {
        assert!(
            floor.is_subset(nodes),
            "an answer dropped live nodes: {nodes:?} lacks some of {floor:?}; all: {seen:#?}"
        );
    }
}

#[tokio::test]
async fn watch_sees_pods_added_ready_terminating_and_deleted() {
    let mut s = setup("watch").await;
    s.model
        .set_pod(&s.emu, "app-0", "10.1.0.10", None, EndpointState::READY);
    s.model
        .set_pod(&s.emu, "app-1", "10.1.0.11", None, EndpointState::STARTING);
    let mut rx = start(settings(&s)).await;
    until(&mut rx, &names(&["10.1.0.10"])).await;
    s.model.set_state(&s.emu, "app-1", EndpointState::READY);
    until(&mut rx, &names(&["10.1.0.10", "10.1.0.11"])).await;
    s.model
        .set_pod(&s.emu, "app-2", "10.1.0.12", None, EndpointState::READY);
    until(&mut rx, &names(&["10.1.0.10", "10.1.0.11", "10.1.0.12"])).await;
    // Terminating: no longer dialled, but listed as passive (a connection
    // is kept), serving or not (default policy `keep`).
    s.model
        .set_state(&s.emu, "app-0", EndpointState::TERMINATING_SERVING);
    let seen = until(&mut rx, &names(&["10.1.0.11", "10.1.0.12"])).await;
    assert_eq!(seen.passive, names(&["10.1.0.10"]), "{seen:#?}");
    s.model
        .set_state(&s.emu, "app-0", EndpointState::TERMINATING);
    let seen = collect(&mut rx, Duration::from_millis(500)).await;
    assert!(
        seen.answers.is_empty(),
        "nothing changed for formation: {seen:#?}"
    );
    s.model.remove_pod(&s.emu, "app-0");
    s.model.remove_pod(&s.emu, "app-2");
    let seen = until(&mut rx, &names(&["10.1.0.11"])).await;
    assert!(seen.passive.is_empty(), "{seen:#?}");
    let st = s.emu.stats();
    assert_eq!(st.lists, 1, "changes must come from the watch: {st:?}");
    assert!(st.watches >= 1, "{st:?}");
}

#[tokio::test]
async fn several_slices_are_joined_by_the_service_name_label() {
    let mut s = setup("slices").await;
    s.model = ServiceModel::new("prod", "app-headless", &[("app", "demo")]).with_slice_size(2);
    let ips: Vec<String> = (0..5).map(|i| format!("10.1.1.{}", 10 + i)).collect();
    for (i, ip) in ips.iter().enumerate() {
        s.model
            .set_pod(&s.emu, &format!("app-{i}"), ip, None, EndpointState::READY);
    }
    // Another Service's slice in the same namespace is not ours.
    let mut other = ServiceModel::new("prod", "other", &[("app", "other")]);
    other.set_pod(&s.emu, "other-0", "10.1.1.99", None, EndpointState::READY);
    assert_eq!(
        s.emu
            .objects(erlkube_kube_emulator::Kind::EndpointSlice, "prod")
            .len(),
        4
    );
    let mut rx = start(settings(&s)).await;
    let all: Vec<&str> = ips.iter().map(String::as_str).collect();
    until(&mut rx, &names(&all)).await;
    s.model.remove_pod(&s.emu, "app-4");
    until(&mut rx, &names(&all[..4])).await;
}

#[tokio::test]
async fn api_faults_never_shrink_the_set_and_are_recovered_from() {
    let mut s = setup("faults").await;
    s.model
        .set_pod(&s.emu, "app-0", "10.1.2.10", None, EndpointState::READY);
    s.model
        .set_pod(&s.emu, "app-1", "10.1.2.11", None, EndpointState::READY);
    let mut rx = start(settings(&s)).await;
    let mut live = vec!["10.1.2.10".to_owned(), "10.1.2.11".to_owned()];
    let set = |live: &[String]| names(&live.iter().map(String::as_str).collect::<Vec<_>>());
    until(&mut rx, &set(&live)).await;

    // 403 and 500 on every request, the open watch broken: errors only.
    for code in [403u16, 500] {
        s.emu.fail_always(code);
        s.emu.drop_watches();
        let seen = collect(&mut rx, Duration::from_millis(1500)).await;
        assert!(
            seen.errors.iter().any(|e| e.contains(&code.to_string())),
            "no {code} error reported: {seen:#?}"
        );
        assert!(
            seen.answers.is_empty(),
            "answers during a {code} outage: {seen:#?}"
        );
        s.emu.clear_faults();
        // A change after the fault is seen.
        let n = live.len();
        let ip = format!("10.1.2.{}", 10 + n);
        s.model
            .set_pod(&s.emu, &format!("app-{n}"), &ip, None, EndpointState::READY);
        live.push(ip);
        let seen = until(&mut rx, &set(&live)).await;
        assert_never_below(&seen, &set(&live[..live.len() - 1]));
    }
    if let Some(code) = Some(403) {
        // The 403 error names the RBAC fix.
        s.emu.fail_next(code, 1);
        s.emu.drop_watches();
        let seen = collect(&mut rx, Duration::from_millis(800)).await;
        assert!(
            seen.errors.iter().any(|e| e.contains("get/list/watch")),
            "{seen:#?}"
        );
    }

    // A dropped watch: re-watched from the last version, nothing missed.
    s.emu.drop_watches();
    s.model.remove_pod(&s.emu, "app-0");
    live.retain(|ip| ip != "10.1.2.10");
    until(&mut rx, &set(&live)).await;

    // 410 Gone on the open watch: a re-list, which is a complete answer.
    let lists = s.emu.stats().lists;
    s.emu.expire_history();
    let seen = until(&mut rx, &set(&live)).await;
    assert!(
        seen.errors.iter().any(|e| e.contains("410")),
        "410 not reported: {seen:#?}"
    );
    assert!(s.emu.stats().lists > lists, "no re-list after 410");
    assert_never_below(&seen, &set(&live));
    // A change after the re-list is seen.
    s.model
        .set_pod(&s.emu, "app-9", "10.1.2.99", None, EndpointState::READY);
    live.push("10.1.2.99".into());
    until(&mut rx, &set(&live)).await;

    // 410 when resuming: the watch is dropped, history compacted before it
    // comes back, a change made meanwhile is found by the re-list.
    let injected = s.emu.stats().injected;
    s.emu.fail_always(503);
    s.emu.drop_watches();
    // The strategy has noticed: an attempt to come back was refused.
    let deadline = tokio::time::Instant::now() + LIVENESS;
    while s.emu.stats().injected == injected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request after the watch was dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gone_before = s.emu.stats().gone;
    s.model
        .set_pod(&s.emu, "app-10", "10.1.2.100", None, EndpointState::READY);
    live.push("10.1.2.100".into());
    s.emu.expire_history();
    s.emu.clear_faults();
    let seen = until(&mut rx, &set(&live)).await;
    assert_never_below(&seen, &set(&live[..live.len() - 1]));
    assert!(
        s.emu.stats().gone > gone_before,
        "the resumed watch was not answered 410: {seen:#?}"
    );

    // Slow answers (longer than the client's timeout): errors, no shrink,
    // then recovery.
    s.emu.set_delay(Duration::from_secs(3));
    s.emu.drop_watches();
    let seen = collect(&mut rx, Duration::from_secs(4)).await;
    assert!(
        seen.errors.iter().any(|e| e.contains("no answer within")),
        "{seen:#?}"
    );
    assert!(
        seen.reasons.iter().any(|r| matches!(
            r,
            Reason::KubeApi {
                failure: KubeFailure::NoAnswer(_),
                ..
            }
        )),
        "{seen:#?}"
    );
    assert_never_below(&seen, &set(&live));
    s.emu.clear_faults();
    s.model.remove_pod(&s.emu, "app-1");
    live.retain(|ip| ip != "10.1.2.11");
    until(&mut rx, &set(&live)).await;
}

#[tokio::test]
async fn a_missing_ca_file_is_an_error_naming_the_file() {
    let s = setup("noca").await;
    std::fs::remove_file(s.dir.0.join("ca.crt")).unwrap();
    let err = Kubernetes::connect(settings(&s)).await.unwrap_err();
    let path = s.dir.0.join("ca.crt");
    assert!(
        matches!(&err, KubeError::CaFile { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    // An empty file is no better.
    std::fs::write(&path, "").unwrap();
    let err = Kubernetes::connect(settings(&s)).await.unwrap_err();
    assert!(matches!(err, KubeError::CaFile { .. }), "{err:?}");
}

#[tokio::test]
async fn a_wrong_ca_is_a_clear_error_and_nothing_is_answered() {
    let mut s = setup("wrongca").await;
    s.model
        .set_pod(&s.emu, "app-0", "10.1.3.10", None, EndpointState::READY);
    let other = Emulator::start(EmulatorConfig::default()).await.unwrap();
    std::fs::write(s.dir.0.join("ca.crt"), other.ca_pem()).unwrap();
    let mut rx = start(settings(&s)).await;
    let seen = collect(&mut rx, Duration::from_secs(1)).await;
    assert!(seen.answers.is_empty(), "{seen:#?}");
    let e = seen.errors.first().expect("an error");
    assert!(
        e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"),
        "not a clear TLS error: {e}"
    );
    assert_eq!(s.emu.stats().lists, 0);
}

#[tokio::test]
async fn a_token_without_rights_gets_a_forbidden_error_naming_the_rbac() {
    let mut s = setup("forbidden").await;
    s.model
        .set_pod(&s.emu, "app-0", "10.1.4.10", None, EndpointState::READY);
    s.emu.set_token("good-token", Access::None);
    let mut rx = start(settings(&s)).await;
    let seen = collect(&mut rx, Duration::from_secs(1)).await;
    assert!(seen.answers.is_empty(), "{seen:#?}");
    assert!(
        seen.errors[0].contains("403 Forbidden") && seen.errors[0].contains("docs/kubernetes.md"),
        "{seen:#?}"
    );
    assert!(
        matches!(
            &seen.reasons[0],
            Reason::KubeApi {
                op: KubeOp::List,
                failure: KubeFailure::Forbidden { .. }
            }
        ),
        "{seen:#?}"
    );
    // Rights granted: discovery recovers.
    s.emu.set_token("good-token", Access::Read);
    until(&mut rx, &names(&["10.1.4.10"])).await;
}

#[tokio::test]
async fn a_rotated_token_is_picked_up() {
    let mut s = setup("rotate").await;
    s.model
        .set_pod(&s.emu, "app-0", "10.1.5.10", None, EndpointState::READY);
    let mut rx = start(settings(&s)).await;
    until(&mut rx, &names(&["10.1.5.10"])).await;
    // Let the first watch open with the first token.
    let start = tokio::time::Instant::now();
    while s.emu.stats().watches == 0 {
        assert!(start.elapsed() < LIVENESS, "no watch");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The kubelet writes a new token; the old one stops working.
    s.emu.set_token("rotated-token", Access::Read);
    std::fs::write(s.dir.0.join("token"), "rotated-token\n").unwrap();
    s.emu.revoke_token("good-token");
    s.emu.drop_watches();
    s.model
        .set_pod(&s.emu, "app-1", "10.1.5.11", None, EndpointState::READY);
    until(&mut rx, &names(&["10.1.5.10", "10.1.5.11"])).await;
    let st = s.emu.stats();
    assert_eq!(st.unauthorized, 0, "the old token was used again: {st:?}");
}

#[tokio::test]
async fn endpoints_resource_with_polling() {
    let mut s = setup("endpoints").await;
    s.model
        .set_pod(&s.emu, "app-0", "10.1.6.10", None, EndpointState::READY);
    s.model
        .set_pod(&s.emu, "app-1", "10.1.6.11", None, EndpointState::STARTING);
    let mut k = settings(&s);
    k.resource = ResourceKind::Endpoints;
    k.watch = false;
    k.poll_interval = Duration::from_millis(200);
    let mut rx = start(k).await;
    until(&mut rx, &names(&["10.1.6.10"])).await;
    s.model.set_state(&s.emu, "app-1", EndpointState::READY);
    until(&mut rx, &names(&["10.1.6.10", "10.1.6.11"])).await;
    let st = s.emu.stats();
    assert_eq!(st.watches, 0, "polling mode must not watch: {st:?}");
    assert!(st.lists >= 2);
    // An error in polling mode keeps nothing from coming back.
    s.emu.fail_next(500, 2);
    let seen = collect(&mut rx, Duration::from_millis(700)).await;
    assert!(seen.errors.iter().any(|e| e.contains("500")), "{seen:#?}");
    assert_never_below(&seen, &names(&["10.1.6.10", "10.1.6.11"]));
}

#[tokio::test]
async fn pods_resource_with_a_label_selector_and_dns_names() {
    let mut s = setup("pods").await;
    s.model
        .set_pod(&s.emu, "app-0", "10.1.7.10", None, EndpointState::READY);
    s.model.set_pod(
        &s.emu,
        "app-1",
        "fd00:10:244::7",
        None,
        EndpointState::READY,
    );
    let mut other = ServiceModel::new("prod", "other", &[("app", "other")]);
    other.set_pod(&s.emu, "other-0", "10.1.7.99", None, EndpointState::READY);
    let mut k = settings(&s);
    k.resource = ResourceKind::Pods;
    k.selector = Some("app=demo".into());
    k.mode = NameMode::Dns;
    let mut rx = start(k).await;
    let want: BTreeSet<NodeName> = [
        "app@10-1-7-10.app-headless.prod.svc.cluster.local",
        "app@fd00-10-244--7.app-headless.prod.svc.cluster.local",
    ]
    .into_iter()
    .map(NodeName::new)
    .collect();
    until(&mut rx, &want).await;
    s.model
        .set_state(&s.emu, "app-0", EndpointState::TERMINATING);
    let want: BTreeSet<NodeName> = ["app@fd00-10-244--7.app-headless.prod.svc.cluster.local"]
        .into_iter()
        .map(NodeName::new)
        .collect();
    until(&mut rx, &want).await;
}

#[tokio::test]
async fn statefulset_hostnames() {
    let mut s = setup("hostname").await;
    s.model.set_pod(
        &s.emu,
        "app-0",
        "10.1.8.10",
        Some("app-0"),
        EndpointState::READY,
    );
    s.model.set_pod(
        &s.emu,
        "app-1",
        "10.1.8.11",
        Some("app-1"),
        EndpointState::READY,
    );
    let mut k = settings(&s);
    k.mode = NameMode::Hostname;
    k.cluster_domain = "k8s.example".into();
    let mut rx = start(k).await;
    let want: BTreeSet<NodeName> = [
        "app@app-0.app-headless.prod.svc.k8s.example",
        "app@app-1.app-headless.prod.svc.k8s.example",
    ]
    .into_iter()
    .map(NodeName::new)
    .collect();
    until(&mut rx, &want).await;
}

#[tokio::test]
async fn configured_from_keys_and_a_missing_ca_fails_at_startup() {
    let s = setup("config").await;
    let env = |extra: &[(&str, String)]| {
        let mut v: Vec<(String, String)> = vec![
            ("ERLKUBE_DISCOVERY_STRATEGY".into(), "kubernetes".into()),
            (
                "ERLKUBE_DISCOVERY_KUBERNETES_SERVICE".into(),
                "app-headless".into(),
            ),
            ("ERLKUBE_DISCOVERY_KUBERNETES_BASENAME".into(), "app".into()),
            (
                "ERLKUBE_DISCOVERY_KUBERNETES_API_SERVER".into(),
                s.emu.url(),
            ),
            (
                "ERLKUBE_DISCOVERY_KUBERNETES_SERVICE_ACCOUNT_DIR".into(),
                s.dir.0.display().to_string(),
            ),
            ("CLUSTER_DOMAIN".into(), "corp.example".into()),
        ];
        v.extend(extra.iter().map(|(k, val)| (k.to_string(), val.clone())));
        v
    };
    let c = erlkube_discovery::config::resolve(None, env(&[]), "h").unwrap();
    let erlkube_discovery::config::StrategyConfig::Kubernetes(k) = &c.strategy else {
        panic!("{c:?}")
    };
    assert_eq!(k.cluster_domain, "corp.example");
    assert!(k.watch);
    assert_eq!(k.resource, ResourceKind::EndpointSlices);
    let (tx, mut rx) = mpsc::channel(16);
    let task = c.spawn_strategy(tx).unwrap();
    let seen = collect(&mut rx, Duration::from_millis(500)).await;
    assert!(
        seen.answers.iter().any(|(n, c)| n.is_empty() && *c),
        "{seen:#?}"
    );
    task.abort();
    let e = erlkube_discovery::config::resolve(
        None,
        env(&[("ERLKUBE_DISCOVERY_KUBERNETES_RESOURCE", "services".into())]),
        "h",
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with("discovery.kubernetes.resource"),
        "{e}"
    );
    std::fs::remove_file(s.dir.0.join("ca.crt")).unwrap();
    let c = erlkube_discovery::config::resolve(None, env(&[]), "h").unwrap();
    let (tx, _rx) = mpsc::channel(16);
    let e = c.spawn_strategy(tx).unwrap_err();
    assert!(e.to_string().contains("ca.crt"), "{e}");
}

fn kubeconfig(s: &Setup, extra_cluster: &str) -> PathBuf {
    let ca = s.dir.0.join("kubeconfig-ca.crt");
    std::fs::write(&ca, s.emu.ca_pem()).unwrap();
    let path = s.dir.0.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: emu
  cluster:
    server: {}
    certificate-authority: {}
{extra_cluster}users:
- name: reader
  user:
    token: good-token
contexts:
- name: emu-prod
  context:
    cluster: emu
    user: reader
    namespace: prod
current-context: emu-prod
",
            s.emu.url(),
            ca.display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn runs_outside_the_cluster_from_a_kubeconfig() {
    let mut s = setup("kubeconfig").await;
    s.model
        .set_pod(&s.emu, "app-0", "10.1.9.10", None, EndpointState::READY);
    let mut k = settings(&s);
    k.api = ApiAccess::Kubeconfig {
        path: kubeconfig(&s, ""),
        context: None,
    };
    // The namespace comes from the context.
    let mut rx = start(k).await;
    until(&mut rx, &names(&["10.1.9.10"])).await;
}

#[tokio::test]
async fn a_kubeconfig_that_skips_verification_is_refused() {
    let s = setup("insecure").await;
    let mut k = settings(&s);
    k.api = ApiAccess::Kubeconfig {
        path: kubeconfig(&s, "    insecure-skip-tls-verify: true\n"),
        context: None,
    };
    let e = Kubernetes::connect(k).await.unwrap_err();
    assert!(matches!(e, KubeError::Kubeconfig(_)), "{e:?}");
    assert!(e.to_string().contains("insecure-skip-tls-verify"), "{e}");
}
