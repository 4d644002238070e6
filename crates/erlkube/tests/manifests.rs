//! `erlkube manifests` as a user runs it (the real binary): the output is
//! valid Kubernetes objects (each document parses into the `k8s-openapi`
//! type of its kind and serializes back to the same document, so an
//! unknown or misspelled field fails), the objects refer to each other
//! correctly, the RBAC is the one docs/kubernetes.md documents, and the
//! agent sidecar's environment is accepted by the real `erlkube agent
//! --check`; for a StatefulSet, the node name is the pod's DNS name and
//! the one discovery yields. kubectl-less: no API server runs here. The
//! `generated_*` tests run the generated pods (Deployment and StatefulSet,
//! each strategy) in the netns test bed (root and erl needed; fails
//! otherwise) with real `erl` nodes, real DNS and the real agent.

use std::collections::BTreeMap;

use erlkube_testkit::docs::{code_blocks, round_trip};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

/// A cookie in the generator's own environment: it must never reach the output.
const SENTINEL_COOKIE: &str = "sentinel_cookie_value_8f3a";

mod common;
use common::{run_clean as erlkube, text};

/// `erlkube manifests` with the common flags plus `extra`; must succeed.
fn generate(strategy: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "manifests",
        "--app",
        "myapp",
        "--image",
        "registry.example/myapp:1.2.0",
        "--agent-image",
        "registry.example/erlkube:0.1.0",
        "--namespace",
        "prod",
        "--strategy",
        strategy,
    ];
    args.extend_from_slice(extra);
    let out = erlkube(
        &args,
        &[
            ("RELEASE_COOKIE", SENTINEL_COOKIE),
            ("ERLANG_COOKIE", SENTINEL_COOKIE),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {stdout}{}",
        text(&out.stderr)
    );
    stdout
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The typed objects of one output.
struct Objects {
    kinds: Vec<(String, String)>,
    service_accounts: Vec<ServiceAccount>,
    roles: Vec<Role>,
    bindings: Vec<RoleBinding>,
    services: Vec<Service>,
    deployments: Vec<Deployment>,
    stateful_sets: Vec<StatefulSet>,
}

fn objects(yaml: &str) -> Objects {
    let mut o = Objects {
        kinds: Vec::new(),
        service_accounts: Vec::new(),
        roles: Vec::new(),
        bindings: Vec::new(),
        services: Vec::new(),
        deployments: Vec::new(),
        stateful_sets: Vec::new(),
    };
    for doc in documents(yaml) {
        let api = doc["apiVersion"].as_str().expect("apiVersion").to_owned();
        let kind = doc["kind"].as_str().expect("kind").to_owned();
        match kind.as_str() {
            "ServiceAccount" => o.service_accounts.push(round_trip(&doc)),
            "Role" => o.roles.push(round_trip(&doc)),
            "RoleBinding" => o.bindings.push(round_trip(&doc)),
            "Service" => o.services.push(round_trip(&doc)),
            "Deployment" => o.deployments.push(round_trip(&doc)),
            "StatefulSet" => o.stateful_sets.push(round_trip(&doc)),
            other => panic!("unexpected kind {other}"),
        }
        o.kinds.push((api, kind));
    }
    o
}

fn pair(api: &str, kind: &str) -> (String, String) {
    (api.to_owned(), kind.to_owned())
}

/// The one workload of an output (Deployment or StatefulSet): its
/// metadata, replicas, selector and pod template.
struct Workload<'a> {
    meta: &'a ObjectMeta,
    replicas: Option<i32>,
    selector: &'a LabelSelector,
    template: &'a PodTemplateSpec,
}

fn workload(o: &Objects) -> Workload<'_> {
    match (&o.deployments[..], &o.stateful_sets[..]) {
        ([d], []) => {
            let s = d.spec.as_ref().unwrap();
            Workload {
                meta: &d.metadata,
                replicas: s.replicas,
                selector: &s.selector,
                template: &s.template,
            }
        }
        ([], [ss]) => {
            let s = ss.spec.as_ref().unwrap();
            Workload {
                meta: &ss.metadata,
                replicas: s.replicas,
                selector: &s.selector,
                template: &s.template,
            }
        }
        (d, ss) => panic!(
            "one workload expected, got {} Deployments and {} StatefulSets",
            d.len(),
            ss.len()
        ),
    }
}

fn template(o: &Objects) -> &PodTemplateSpec {
    workload(o).template
}

fn containers(t: &PodTemplateSpec) -> &[Container] {
    &t.spec.as_ref().unwrap().containers
}

fn agent_container(d: &PodTemplateSpec) -> &Container {
    containers(d)
        .iter()
        .find(|c| {
            c.command
                .as_ref()
                .is_some_and(|cmd| cmd.last().is_some_and(|a| a == "agent"))
        })
        .expect("a container running `erlkube agent`")
}

fn release_container(d: &PodTemplateSpec) -> &Container {
    containers(d)
        .iter()
        .find(|c| c.command.is_none())
        .expect("the release container (image's own command)")
}

/// The placeholder pod name (a StatefulSet's second pod).
const POD_NAME: &str = "myapp-1";

/// The container's environment as Kubernetes would set it, with
/// placeholders for what the kubelet fills in: `status.podIP` → 10.0.0.7,
/// `metadata.name` → [`POD_NAME`], `metadata.namespace` → the workload's
/// namespace, a Secret key → a dummy cookie; `$(VAR)` expanded from the
/// entries before it.
fn resolved_env(c: &Container, namespace: &str) -> Vec<(String, String)> {
    resolved_env_for(c, namespace, "10.0.0.7", POD_NAME, "dummy_cookie")
}

/// [`resolved_env`] for a given pod IP, pod name and cookie.
fn resolved_env_for(
    c: &Container,
    namespace: &str,
    pod_ip: &str,
    pod_name: &str,
    cookie: &str,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for e in c.env.as_deref().unwrap_or_default() {
        let v = match (&e.value, &e.value_from) {
            (Some(v), None) => expand(v, &out),
            (None, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    match f.field_path.as_str() {
                        "status.podIP" => pod_ip.to_owned(),
                        "metadata.name" => pod_name.to_owned(),
                        "metadata.namespace" => namespace.to_owned(),
                        other => panic!("unexpected fieldRef {other}"),
                    }
                } else if from.secret_key_ref.is_some() {
                    cookie.to_owned()
                } else {
                    panic!("unexpected valueFrom {from:?}")
                }
            }
            other => panic!("env {} has neither value nor valueFrom: {other:?}", e.name),
        };
        out.push((e.name.clone(), v));
    }
    out
}

/// Kubernetes' `$(VAR)` expansion: only variables defined earlier.
fn expand(v: &str, earlier: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(i) = rest.find("$(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find(')') {
            Some(j) => {
                let name = &after[..j];
                match earlier.iter().rev().find(|(k, _)| k == name) {
                    Some((_, val)) => out.push_str(val),
                    None => out.push_str(&rest[i..i + 3 + j]),
                }
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn get<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{name} not in {env:?}"))
}

/// The value of `key` in `erlkube agent --check`'s plan (`  key = "v"  (source)`).
fn plan_value(plan: &str, key: &str) -> Option<String> {
    plan.lines().find_map(|l| {
        let (k, rest) = l.trim_start().split_once(" = ")?;
        if k.trim_end() != key {
            return None;
        }
        let v = rest.rsplit_once("  (").map_or(rest, |(v, _)| v);
        Some(v.trim_matches('"').to_owned())
    })
}

fn port_number(p: &IntOrString, c: &Container) -> i32 {
    match p {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            c.ports
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|cp| cp.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("no container port named {name}"))
                .container_port
        }
    }
}

#[test]
fn each_strategy_prints_valid_objects_of_the_expected_kinds() {
    let dns = objects(&generate("dns", &[]));
    assert_eq!(
        dns.kinds,
        [pair("v1", "Service"), pair("apps/v1", "Deployment")]
    );
    let kube = objects(&generate("kubernetes", &[]));
    assert_eq!(
        kube.kinds,
        [
            pair("v1", "ServiceAccount"),
            pair("rbac.authorization.k8s.io/v1", "Role"),
            pair("rbac.authorization.k8s.io/v1", "RoleBinding"),
            pair("v1", "Service"),
            pair("apps/v1", "Deployment"),
        ]
    );
    let d = template(&kube);
    assert_eq!(workload(&kube).replicas, Some(3));
    assert_eq!(
        release_container(d).image.as_deref(),
        Some("registry.example/myapp:1.2.0")
    );
    assert_eq!(
        agent_container(d).image.as_deref(),
        Some("registry.example/erlkube:0.1.0")
    );
    for o in [&dns, &kube] {
        assert!(o.services[0]
            .metadata
            .namespace
            .as_deref()
            .is_some_and(|n| n == "prod"));
    }
}

#[test]
fn the_headless_service_selects_the_pods_and_publishes_not_ready_addresses() {
    for (strategy, wl) in [
        ("dns", "deployment"),
        ("kubernetes", "deployment"),
        ("dns", "statefulset"),
        ("kubernetes", "statefulset"),
    ] {
        let o = objects(&generate(strategy, &["--replicas", "5", "--workload", wl]));
        let svc = o.services[0].spec.as_ref().unwrap();
        let d = workload(&o);
        let pod_labels = d
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        let selector = svc.selector.clone().expect("a selector");
        assert!(
            selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "{strategy}: Service selector {selector:?} does not match pod labels {pod_labels:?}"
        );
        let match_labels = d.selector.match_labels.clone().unwrap();
        assert!(
            match_labels
                .iter()
                .all(|(k, v)| pod_labels.get(k) == Some(v)),
            "{strategy}: workload selector {match_labels:?} vs {pod_labels:?}"
        );
        assert_eq!(d.replicas, Some(5));
        assert_eq!(svc.cluster_ip.as_deref(), Some("None"), "headless");
        assert_eq!(svc.publish_not_ready_addresses, Some(true), "{strategy}");
        // One family, that of POD_IP: dual-stack records would name each pod twice.
        assert_eq!(svc.ip_family_policy.as_deref(), Some("SingleStack"));
    }
}

#[test]
fn probes_and_the_metrics_port_use_the_agents_configured_http_port() {
    for (extra, want) in [(&[][..], 9568), (&["--http-port", "9100"][..], 9100)] {
        for strategy in ["dns", "kubernetes"] {
            let o = objects(&generate(strategy, extra));
            let agent = agent_container(template(&o));
            let env = resolved_env(agent, "prod");
            let http = get(&env, "ERLKUBE_AGENT_HTTP");
            let configured: i32 = http.rsplit_once(':').unwrap().1.parse().unwrap();
            assert_eq!(configured, want);
            for (what, probe) in [
                ("readiness", agent.readiness_probe.as_ref()),
                ("liveness", agent.liveness_probe.as_ref()),
            ] {
                let get = probe
                    .and_then(|p| p.http_get.as_ref())
                    .unwrap_or_else(|| panic!("{what} probe with httpGet"));
                assert_eq!(port_number(&get.port, agent), configured, "{what}");
            }
            let ready = agent.readiness_probe.as_ref().unwrap().http_get.as_ref();
            assert_eq!(ready.unwrap().path.as_deref(), Some("/readyz"));
            let live = agent.liveness_probe.as_ref().unwrap().http_get.as_ref();
            assert_eq!(live.unwrap().path.as_deref(), Some("/healthz"));
            let metrics = agent
                .ports
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|p| p.name.as_deref() == Some("metrics"))
                .expect("a container port named metrics");
            assert_eq!(metrics.container_port, configured);
        }
    }
}

#[test]
fn the_release_drains_from_a_prestop_hook_within_the_pods_termination_grace() {
    for (extra, grace) in [(&[][..], 5u64), (&["--drain-grace", "20s"][..], 20)] {
        for strategy in ["dns", "kubernetes"] {
            for wl in ["deployment", "statefulset"] {
                let mut args = extra.to_vec();
                args.extend(["--workload", wl]);
                let o = objects(&generate(strategy, &args));
                let t = template(&o);
                let agent = agent_container(t);
                let env = resolved_env(agent, "prod");
                assert_eq!(get(&env, "ERLKUBE_AGENT_DRAIN_GRACE"), format!("{grace}s"));
                let http: i32 = get(&env, "ERLKUBE_AGENT_HTTP")
                    .rsplit_once(':')
                    .unwrap()
                    .1
                    .parse()
                    .unwrap();
                // The release container's preStop (a release stops on
                // SIGTERM) GETs the agent's /drain on the pod's network.
                let release = release_container(t);
                let pre_stop = release
                    .lifecycle
                    .as_ref()
                    .and_then(|l| l.pre_stop.as_ref())
                    .and_then(|h| h.http_get.as_ref())
                    .expect("a preStop httpGet on the release container");
                assert_eq!(pre_stop.path.as_deref(), Some("/drain"));
                assert_eq!(pre_stop.port, IntOrString::Int(http));
                assert!(pre_stop.host.is_none(), "the pod's own address");
                // The kubelet kills the pod at the end of its grace: the
                // drain and then the release's stop must fit.
                let tgps = t
                    .spec
                    .as_ref()
                    .unwrap()
                    .termination_grace_period_seconds
                    .expect("terminationGracePeriodSeconds");
                assert!(tgps as u64 >= grace + 30, "{tgps} for a grace of {grace}s");
                // Readiness turns 503 at the drain's start: probed often
                // enough to notice within the grace; liveness is /healthz,
                // which a drain leaves at 200.
                let r = agent.readiness_probe.as_ref().unwrap();
                let noticed = r.period_seconds.unwrap_or(10) * r.failure_threshold.unwrap_or(3);
                assert!(
                    noticed as u64 <= grace,
                    "readiness notices after {noticed}s"
                );
                let live = agent.liveness_probe.as_ref().unwrap().http_get.as_ref();
                assert_eq!(live.unwrap().path.as_deref(), Some("/healthz"));
            }
        }
    }
}

#[test]
fn the_role_binding_names_the_pods_service_account_and_the_role_has_the_documented_rules() {
    let o = objects(&generate("kubernetes", &[]));
    let sa = &o.service_accounts[0];
    let role = &o.roles[0];
    let binding = &o.bindings[0];
    let pod = template(&o).spec.as_ref();
    let pod_sa = pod.unwrap().service_account_name.as_deref();
    assert_eq!(
        pod_sa,
        sa.metadata.name.as_deref(),
        "the pod runs as the ServiceAccount"
    );
    let subject = &binding.subjects.as_deref().unwrap()[0];
    assert_eq!(subject.kind, "ServiceAccount");
    assert_eq!(Some(subject.name.as_str()), pod_sa);
    assert_eq!(
        subject.namespace.as_deref(),
        sa.metadata.namespace.as_deref()
    );
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.role_ref.api_group, "rbac.authorization.k8s.io");
    assert_eq!(
        Some(binding.role_ref.name.as_str()),
        role.metadata.name.as_deref()
    );
    for ns in [&role.metadata.namespace, &binding.metadata.namespace] {
        assert_eq!(ns.as_deref(), Some("prod"));
    }

    // The first Role in docs/kubernetes.md is the EndpointSlice one the
    // default resource needs; the generator must grant exactly its rules.
    let documented = documented_rules(None);
    assert_eq!(role.rules.as_ref(), Some(&documented));
    // And that Role is what the strategy uses by default.
    assert!(documented[0]
        .resources
        .as_deref()
        .is_some_and(|r| r == ["endpointslices"]));
}

/// The rules of a Role in docs/kubernetes.md: the first one (`None`), or
/// the one whose rules name `resource`.
fn documented_rules(resource: Option<&str>) -> Vec<PolicyRule> {
    let md = include_str!("../../../docs/kubernetes.md");
    let roles: Vec<Vec<PolicyRule>> = code_blocks(md, "yaml")
        .iter()
        .flat_map(|b| documents(b))
        .filter(|d| d["kind"] == "Role")
        .map(|d| round_trip::<Role>(&d).rules.unwrap())
        .collect();
    let Some(resource) = resource else {
        return roles
            .into_iter()
            .next()
            .expect("a Role in docs/kubernetes.md");
    };
    let mut matching = roles.into_iter().filter(|rules| {
        rules.iter().any(|r| {
            r.resources
                .as_deref()
                .is_some_and(|rs| rs.iter().any(|x| x == resource))
        })
    });
    let rules = matching
        .next()
        .unwrap_or_else(|| panic!("no Role for {resource} in docs/kubernetes.md"));
    assert!(matching.next().is_none(), "one Role for {resource}");
    rules
}

#[test]
fn each_resource_gets_exactly_the_documented_role_and_the_agent_reads_it() {
    for resource in ["endpointslices", "endpoints", "pods"] {
        for wl in ["deployment", "statefulset"] {
            let o = objects(&generate(
                "kubernetes",
                &["--resource", resource, "--workload", wl],
            ));
            assert_eq!(
                o.roles[0].rules.as_ref(),
                Some(&documented_rules(Some(resource))),
                "{resource} {wl}"
            );
            let plan = agent_check(&o);
            assert_eq!(
                plan_value(&plan, "discovery.kubernetes.resource").as_deref(),
                Some(resource),
                "{plan}"
            );
            // Pods are found by label: the selector must select the pods.
            let selector = plan_value(&plan, "discovery.kubernetes.selector");
            if resource == "pods" {
                let selector = selector.expect("a selector for resource = pods");
                let labels = template(&o).metadata.as_ref().unwrap().labels.clone();
                let labels = labels.unwrap();
                for term in selector.split(',') {
                    let (k, v) = term.split_once('=').expect("key=value");
                    assert_eq!(labels.get(k).map(String::as_str), Some(v), "{selector}");
                }
            }
        }
    }
}

#[test]
fn the_agent_env_passes_agent_check_with_the_generated_strategy_and_service() {
    for (strategy, agent_strategy) in [("dns", "dns_a"), ("kubernetes", "kubernetes")] {
        let o = objects(&generate(strategy, &["--http-port", "9100"]));
        let service = o.services[0].metadata.name.clone().unwrap();
        let ns = o.services[0].metadata.namespace.clone().unwrap();
        let d = template(&o);
        let plan = agent_check(&o);
        assert!(
            plan.lines()
                .any(|l| l == format!("strategy: {agent_strategy}")),
            "{plan}"
        );
        assert_eq!(
            plan_value(&plan, "agent.http").as_deref(),
            Some("0.0.0.0:9100")
        );
        let basename = match strategy {
            "dns" => {
                assert_eq!(
                    plan_value(&plan, "discovery.dns.query"),
                    Some(format!("{service}.{ns}.svc.cluster.local")),
                    "{plan}"
                );
                plan_value(&plan, "discovery.dns.basename")
            }
            _ => {
                assert_eq!(
                    plan_value(&plan, "discovery.kubernetes.service"),
                    Some(service.clone()),
                    "{plan}"
                );
                assert_eq!(
                    plan_value(&plan, "discovery.kubernetes.namespace"),
                    Some(ns.clone())
                );
                assert_eq!(
                    plan_value(&plan, "discovery.kubernetes.mode").as_deref(),
                    Some("ip")
                );
                plan_value(&plan, "discovery.kubernetes.basename")
            }
        };
        // The agent drives the node the release starts as, and that name is
        // the one discovery produces for this pod (basename@pod IP).
        let release_env = resolved_env(release_container(d), &ns);
        let release_node = get(&release_env, "RELEASE_NODE");
        assert_eq!(get(&release_env, "RELEASE_DISTRIBUTION"), "name");
        assert_eq!(
            plan_value(&plan, "agent.node").as_deref(),
            Some(release_node)
        );
        assert_eq!(release_node, format!("{}@10.0.0.7", basename.unwrap()));
        assert!(
            plan.contains("cookie from env RELEASE_COOKIE (not shown)"),
            "{plan}"
        );
    }
}

#[test]
fn a_statefulset_is_served_by_the_headless_service_and_starts_its_pods_in_parallel() {
    for strategy in ["dns", "kubernetes"] {
        let o = objects(&generate(strategy, &["--workload", "statefulset"]));
        assert!(o.deployments.is_empty());
        assert_eq!(
            o.kinds.last(),
            Some(&pair("apps/v1", "StatefulSet")),
            "{:?}",
            o.kinds
        );
        let ss = &o.stateful_sets[0];
        let spec = ss.spec.as_ref().unwrap();
        assert_eq!(ss.metadata.name.as_deref(), Some("myapp"));
        assert_eq!(ss.metadata.namespace.as_deref(), Some("prod"));
        assert_eq!(
            spec.service_name.as_deref(),
            o.services[0].metadata.name.as_deref(),
            "serviceName is the headless Service"
        );
        assert_eq!(
            o.services[0].spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("None")
        );
        // OrderedReady would wait for pod 0's readiness, which waits for a peer.
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        // The controller sets each pod's hostname and subdomain (what gives
        // it its DNS name); the template must not override them.
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.hostname, None);
        assert_eq!(pod.subdomain, None);
    }
}

#[test]
fn statefulset_node_names_are_the_pods_dns_names_and_discovery_yields_exactly_them() {
    use erlkube_discovery::kubernetes::{
        endpoints_endpoints, pod_endpoints, slice_endpoints, KubeSettings, NameMode,
    };
    let domain = "k8s.example";
    for (strategy, resource) in [
        ("dns", None),
        ("kubernetes", Some("endpointslices")),
        ("kubernetes", Some("endpoints")),
        ("kubernetes", Some("pods")),
    ] {
        let mut extra = vec!["--workload", "statefulset", "--cluster-domain", domain];
        extra.extend(resource.iter().flat_map(|r| ["--resource", *r]));
        let o = objects(&generate(strategy, &extra));
        let service = o.services[0].metadata.name.clone().unwrap();
        let ns = o.services[0].metadata.namespace.clone().unwrap();
        let ss_name = o.stateful_sets[0].metadata.name.clone().unwrap();
        // The agent sees the placeholders POD_NAME=myapp-1, POD_NAMESPACE=prod.
        assert!(
            POD_NAME.starts_with(&format!("{ss_name}-")),
            "a pod of the StatefulSet"
        );
        let plan = agent_check(&o);
        let release_env = resolved_env(release_container(template(&o)), &ns);
        let release_node = get(&release_env, "RELEASE_NODE");
        assert_eq!(get(&release_env, "RELEASE_DISTRIBUTION"), "name");
        assert_eq!(
            plan_value(&plan, "agent.node").as_deref(),
            Some(release_node),
            "the agent drives the release's node"
        );
        let want = format!("{ss_name}@{POD_NAME}.{service}.{ns}.svc.{domain}");
        assert_eq!(release_node, want, "the StatefulSet DNS form");
        if strategy == "dns" {
            assert!(plan.lines().any(|l| l == "strategy: dns_srv"), "{plan}");
            let basename = plan_value(&plan, "discovery.dns.basename").unwrap();
            let query = plan_value(&plan, "discovery.dns.query").unwrap();
            // Kubernetes DNS: _<port name>._<proto>.<service fqdn> has one
            // SRV record per pod, target <hostname>.<service fqdn>.
            let (port, service_fqdn) = query
                .strip_prefix('_')
                .and_then(|q| q.split_once("._tcp."))
                .unwrap_or_else(|| panic!("not an SRV name: {query}"));
            assert_eq!(service_fqdn, format!("{service}.{ns}.svc.{domain}"));
            let ports = o.services[0].spec.as_ref().unwrap().ports.clone().unwrap();
            let p = ports
                .iter()
                .find(|p| p.name.as_deref() == Some(port))
                .unwrap_or_else(|| panic!("the Service has no port named {port}"));
            assert!(matches!(p.protocol.as_deref(), None | Some("TCP")));
            assert_eq!(
                format!("{basename}@{POD_NAME}.{service_fqdn}"),
                release_node
            );
        } else {
            assert!(plan.lines().any(|l| l == "strategy: kubernetes"), "{plan}");
            let value = |k: &str| plan_value(&plan, &format!("discovery.kubernetes.{k}")).unwrap();
            assert_eq!(value("mode"), "hostname");
            assert_eq!(value("service"), service);
            assert_eq!(value("namespace"), ns);
            assert_eq!(value("cluster_domain"), domain);
            assert_eq!(value("include_not_ready"), "true");
            let mut settings = KubeSettings::new(&value("basename"), &value("service"));
            settings.mode = NameMode::Hostname;
            settings.cluster_domain = value("cluster_domain");
            settings.include_not_ready = true;
            // The pod as the controllers publish a StatefulSet's starting
            // (not yet ready) pod: its endpoint's hostname is the pod name.
            let eps = match resource.unwrap() {
                "endpointslices" => slice_endpoints(
                    &serde_json::from_value(serde_json::json!({
                        "metadata": {"name": format!("{service}-x1"), "namespace": ns},
                        "addressType": "IPv4",
                        "endpoints": [{
                            "addresses": ["10.0.0.7"],
                            "hostname": POD_NAME,
                            "conditions": {"ready": false, "serving": false, "terminating": false},
                            "targetRef": {"kind": "Pod", "name": POD_NAME, "namespace": ns}
                        }]
                    }))
                    .unwrap(),
                ),
                "endpoints" => endpoints_endpoints(
                    &serde_json::from_value(serde_json::json!({
                        "metadata": {"name": service, "namespace": ns},
                        "subsets": [{"notReadyAddresses": [{
                            "ip": "10.0.0.7",
                            "hostname": POD_NAME,
                            "targetRef": {"kind": "Pod", "name": POD_NAME, "namespace": ns}
                        }]}]
                    }))
                    .unwrap(),
                ),
                _ => pod_endpoints(
                    &serde_json::from_value(serde_json::json!({
                        "metadata": {"name": POD_NAME, "namespace": ns},
                        "spec": {"hostname": POD_NAME, "subdomain": service, "containers": []},
                        "status": {"phase": "Running", "podIP": "10.0.0.7"}
                    }))
                    .unwrap(),
                ),
            };
            assert_eq!(eps.len(), 1, "{resource:?}");
            assert!(settings.admits(&eps[0]), "a not-ready pod is discovered");
            assert_eq!(
                settings.node_name(&eps[0], &ns).unwrap().to_string(),
                release_node,
                "{resource:?}"
            );
        }
    }
}

/// Runs the real `erlkube agent --check` with the agent container's
/// resolved environment; returns the printed plan.
fn agent_check(o: &Objects) -> String {
    let ns = workload(o).meta.namespace.clone().unwrap();
    let env = resolved_env(agent_container(template(o)), &ns);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = erlkube(&["agent", "--check"], &pairs);
    let plan = text(&out.stdout);
    assert!(out.status.success(), "{env:?}: {}{plan}", text(&out.stderr));
    plan
}

#[test]
fn readiness_needs_one_peer_by_default_none_alone_and_the_flag_overrides_it() {
    for (extra, want) in [
        (&["--replicas", "3"][..], "1"),
        (&["--replicas", "1"][..], "0"),
        (&["--ready-min-peers", "all"][..], "all"),
        (&["--ready-min-peers", "2"][..], "2"),
    ] {
        for strategy in ["dns", "kubernetes"] {
            let plan = agent_check(&objects(&generate(strategy, extra)));
            assert_eq!(
                plan_value(&plan, "agent.ready_min_peers").as_deref(),
                Some(want),
                "{extra:?}: {plan}"
            );
        }
    }
}

#[test]
fn no_cookie_value_is_written_only_references_to_the_secret() {
    for strategy in ["dns", "kubernetes"] {
        let yaml = generate(
            strategy,
            &[
                "--cookie-secret",
                "beam-cookie",
                "--cookie-key",
                "erlang-cookie",
            ],
        );
        assert!(!yaml.contains(SENTINEL_COOKIE), "{yaml}");
        let o = objects(&yaml);
        assert!(!o.kinds.iter().any(|(_, k)| k == "Secret"));
        let d = template(&o);
        let mut cookie_entries = 0;
        for c in containers(d) {
            let env = c.env.as_deref().unwrap_or_default();
            let mut names: BTreeMap<&str, usize> = BTreeMap::new();
            for e in env {
                *names.entry(e.name.as_str()).or_default() += 1;
                if e.name.to_ascii_uppercase().contains("COOKIE") {
                    assert_eq!(e.value, None, "{}: a literal cookie in {}", e.name, c.name);
                    let r = e
                        .value_from
                        .as_ref()
                        .and_then(|f| f.secret_key_ref.as_ref())
                        .unwrap_or_else(|| panic!("{} is not a secretKeyRef", e.name));
                    assert_eq!(r.name, "beam-cookie");
                    assert_eq!(r.key, "erlang-cookie");
                    cookie_entries += 1;
                }
            }
            assert!(
                names.values().all(|n| *n == 1),
                "duplicate env in {}",
                c.name
            );
        }
        assert_eq!(cookie_entries, 2, "release and agent both read the Secret");
    }
}

#[test]
fn bad_flag_values_exit_2_with_one_line_naming_the_flag() {
    let cases: &[(&str, &str, &str)] = &[
        ("--app", "My_App", "--app: must be a DNS-1123 label"),
        ("--app", "1app", "--app: must be a DNS-1123 label"),
        ("--app", "app-", "--app: must be a DNS-1123 label"),
        ("--app", &"a".repeat(55), "--app: must be a DNS-1123 label"),
        (
            "--namespace",
            "Prod",
            "--namespace: must be a DNS-1123 label",
        ),
        ("--http-port", "0", "--http-port:"),
        ("--cookie-key", "a b", "--cookie-key:"),
        ("--ready-min-peers", "most", "--ready-min-peers:"),
        ("--drain-grace", "11m", "--drain-grace: must be a duration"),
        ("--drain-grace", "1h", "--drain-grace: must be a duration"),
        ("--drain-grace", "soon", "--drain-grace: must be a duration"),
    ];
    for (flag, value, want) in cases {
        let mut args = vec!["manifests", *flag, *value];
        for (f, v) in [
            ("--app", "myapp"),
            ("--image", "img:1"),
            ("--agent-image", "agent:1"),
        ] {
            if f != *flag {
                args.extend([f, v]);
            }
        }
        let out = erlkube(&args, &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(out.stdout.is_empty(), "nothing printed on error");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!("erlkube manifests: {want}")),
            "{flag} {value}: {stderr}"
        );
        assert!(stderr.contains(value), "names the value: {stderr}");
    }
    // Combinations.
    let long_app = "a".repeat(53);
    let long_domain = ["x".repeat(60).as_str(); 4].join(".");
    let combos: &[(&[&str], &str, &str)] = &[
        (
            &["--app", "myapp", "--resource", "pods"],
            "--resource: only with --strategy kubernetes",
            "pods",
        ),
        (
            &["--app", &long_app, "--workload", "statefulset"],
            "--app: with --workload statefulset at most 52 characters",
            &long_app,
        ),
        (
            &[
                "--app",
                "myapp",
                "--workload",
                "statefulset",
                "--cluster-domain",
                &long_domain,
            ],
            "--cluster-domain: with --workload statefulset the longest node name",
            &long_domain,
        ),
    ];
    for (flags, want, value) in combos {
        let mut args = vec!["manifests", "--image", "img:1", "--agent-image", "agent:1"];
        args.extend_from_slice(flags);
        let out = erlkube(&args, &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(out.stdout.is_empty(), "nothing printed on error");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!("erlkube manifests: {want}")),
            "{flags:?}: {stderr}"
        );
        assert!(stderr.contains(*value), "names the value: {stderr}");
    }
    // The same domain is fine for a Deployment (names are IPs there).
    generate("dns", &["--cluster-domain", &long_domain]);
    let out = erlkube(
        &[
            "manifests",
            "--app",
            "a",
            "--image",
            "i",
            "--agent-image",
            "j",
            "--strategy",
            "gossip",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--strategy"),
        "{}",
        text(&out.stderr)
    );
}

/// One bed scenario at a time in this binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The test bed's pods with the generated agent sidecar: a plain `erl`
/// node per pod (named as the release container's env names it) and the
/// real `erlkube agent` run with the agent container's command and env.
/// `dns`: the pod's resolver points at the bed's DNS (dnsmasq serving the
/// headless Service, not-ready pods included, as `publishNotReadyAddresses`
/// makes cluster DNS do). `kubernetes`: the API emulator (the project's
/// one stand-in) on the bed's bridge lists the pods in the generated
/// Service's EndpointSlices as started but *not ready*, as in a cluster
/// where every pod waits for its readiness probe; the agent finds it as a
/// pod does (KUBERNETES_SERVICE_HOST/PORT, a service-account directory).
/// Where the bed differs from a cluster, and only there, the env is
/// overridden: the pods' epmd port (the bed never uses 4369), IPv4 records
/// only (the bed publishes AAAA too; the generated Service is
/// single-stack), and the service-account directory's path.
/// `statefulset`: the pods are `<app>-N` (the bed's ordinals start at 1),
/// their nodes named `<app>@<app>-N.<service>.<ns>.svc.cluster.local` by
/// the generated env from the pod's name and namespace; the bed's DNS has
/// those host records and the SRV records of the Service's named ports
/// (targets: those names), the emulator's endpoints carry the hostname,
/// and each pod's hosts file maps its own name, as the kubelet writes it.
async fn generated_pods_form_in_the_bed(strategy: &str, wl: &str) {
    use erlkube_kube_emulator::{Access, Emulator, EmulatorConfig, EndpointState, ServiceModel};
    use erlkube_testbed::harness::wait_full_mesh;
    use erlkube_testbed::process::Guard;
    use erlkube_testbed::{Bed, BedConfig, Naming};
    use std::io::{BufRead, BufReader};
    use std::net::{IpAddr, SocketAddr};
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Liveness bound (not a performance assertion).
    const FORM: Duration = Duration::from_secs(60);

    use common::http_get_async as get_async;

    /// Removes a directory on drop.
    struct RemoveDir(PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    let _serial = SERIAL.lock().await;
    let o = objects(&generate(strategy, &["--replicas", "3", "--workload", wl]));
    let stateful = !o.stateful_sets.is_empty();
    let d = template(&o);
    let service = o.services[0].metadata.name.clone().unwrap();
    let ns = o.services[0].metadata.namespace.clone().unwrap();
    let app = workload(&o).meta.name.clone().unwrap();
    let agent = agent_container(d).clone();
    let release_node = get(&resolved_env(release_container(d), &ns), "RELEASE_NODE").to_owned();
    let basename = release_node.split_once('@').unwrap().0.to_owned();
    let replicas = workload(&o).replicas.unwrap() as usize;
    // Cluster DNS publishes SRV records for each named port of the Service.
    let port_names: Vec<String> = o.services[0]
        .spec
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.clone())
        .collect();
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let g = p.as_ref().unwrap().http_get.clone().unwrap();
        (port_number(&g.port, &agent) as u16, g.path.unwrap())
    };
    let (ready_port, ready_path) = probe(&agent.readiness_probe);
    let (live_port, live_path) = probe(&agent.liveness_probe);
    let metrics_port = agent
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .unwrap()
        .container_port as u16;

    let mut bed = Bed::new(BedConfig {
        service: service.clone(),
        namespace: ns.clone(),
        basename,
        // The agent's default (the generated env does not set it).
        net_ticktime: 60,
        // A StatefulSet's pods are <app>-N.<service>.<ns>.svc.cluster.local
        // in DNS (the bed's ordinals start at 1).
        naming: if stateful {
            Naming::Hostname
        } else {
            Naming::Ipv4
        },
        pod_prefix: app.clone(),
        srv_ports: port_names,
        ..BedConfig::default()
    })
    .expect("test bed");
    let pods = bed.add_pods(replicas).expect("pods");
    let cookie = bed.config().cookie.clone();
    let mut overrides = vec![(
        "ERL_EPMD_PORT".to_owned(),
        bed.config().epmd_port.to_string(),
    )];
    let mut dirs = Vec::new();
    let mut emulator = None;
    // The pod's resolver is the cluster DNS (the bed's): the dns strategy
    // asks it, and a StatefulSet's agent resolves its node's name with it.
    // A StatefulSet pod's /etc/hosts, which the kubelet writes, maps the
    // pod's own DNS name to its address (the IPv4 one: the bed's DNS also
    // answers AAAA while the nodes listen on IPv4, as single-stack).
    if strategy == "dns" || stateful {
        for i in &pods {
            let pod = bed.pod(*i);
            let etc = PathBuf::from("/etc/netns").join(&pod.netns);
            std::fs::create_dir_all(&etc).expect("/etc/netns dir");
            let etc = RemoveDir(etc);
            std::fs::write(
                etc.0.join("resolv.conf"),
                format!("nameserver {}\n", bed.dns_addr().ip()),
            )
            .expect("resolv.conf");
            if stateful {
                std::fs::write(
                    etc.0.join("hosts"),
                    format!("127.0.0.1 localhost\n{} {}\n", pod.ipv4, pod.hostname),
                )
                .expect("hosts");
            }
            dirs.push(etc);
        }
    }
    match strategy {
        "dns" => {
            if !stateful {
                overrides.push(("ERLKUBE_DISCOVERY_DNS_IP_VERSION".into(), "v4".into()));
            }
        }
        _ => {
            let emu = Emulator::start(EmulatorConfig::listening_on(bed.bridge_ipv4().into()))
                .await
                .expect("emulator");
            emu.set_token("manifests-token", Access::Read);
            let sa = RemoveDir(
                std::env::temp_dir().join(format!("erlkube-manifests-sa-{}", std::process::id())),
            );
            std::fs::create_dir_all(&sa.0).unwrap();
            std::fs::write(sa.0.join("ca.crt"), emu.ca_pem()).unwrap();
            std::fs::write(sa.0.join("token"), "manifests-token").unwrap();
            std::fs::write(sa.0.join("namespace"), &ns).unwrap();
            let labels = d.metadata.clone().unwrap();
            let labels: Vec<(String, String)> = labels.labels.unwrap().into_iter().collect();
            let labels: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut model = ServiceModel::new(&ns, &service, &labels);
            for i in &pods {
                let ip = bed.pod(*i).ipv4.to_string();
                let name = pod_name(bed.pod(*i));
                // The EndpointSlice controller sets an endpoint's hostname
                // for pods with a hostname and the Service as subdomain:
                // a StatefulSet's pods.
                let hostname = stateful.then_some(name.as_str());
                model.set_pod(&emu, &name, &ip, hostname, EndpointState::STARTING);
            }
            overrides.extend([
                (
                    "KUBERNETES_SERVICE_HOST".to_owned(),
                    bed.bridge_ipv4().to_string(),
                ),
                (
                    "KUBERNETES_SERVICE_PORT".to_owned(),
                    emu.addr().port().to_string(),
                ),
                (
                    "ERLKUBE_DISCOVERY_KUBERNETES_SERVICE_ACCOUNT_DIR".to_owned(),
                    sa.0.display().to_string(),
                ),
            ]);
            dirs.push(sa);
            emulator = Some((emu, model));
        }
    }
    let mut running = Vec::new();
    for i in &pods {
        let pod = bed.pod(*i);
        let ip = pod.ipv4.to_string();
        let name = pod_name(pod);
        let release = resolved_env_for(release_container(d), &ns, &ip, &name, &cookie);
        assert_eq!(
            get(&release, "RELEASE_NODE"),
            pod.node_name,
            "the release container's node name is the pod's node"
        );
        let mut env = resolved_env_for(&agent, &ns, &ip, &name, &cookie);
        env.extend(overrides.iter().cloned());
        let command = agent.command.clone().unwrap();
        assert_eq!(command[0], "erlkube");
        let mut cmd = bed.exec(*i, env!("CARGO_BIN_EXE_erlkube"));
        cmd.args(&command[1..])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut guard = Guard::spawn(&mut cmd).expect("spawn erlkube agent");
        let stderr = guard.child_mut().stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = l.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        running.push((pod.ipv4, guard, log));
    }
    let logs = || {
        running
            .iter()
            .map(|(ip, _, log)| format!("--- agent at {ip}\n{}", log.lock().unwrap()))
            .collect::<String>()
    };
    if let Err(e) = wait_full_mesh(&bed, &pods, FORM).await {
        panic!("{strategy}: {e}\n{}", logs());
    }
    for (ip, _, _) in &running {
        let ip = IpAddr::V4(*ip);
        let start = tokio::time::Instant::now();
        loop {
            let r = get_async(SocketAddr::new(ip, ready_port), &ready_path).await;
            if matches!(r, Ok((200, _))) {
                break;
            }
            assert!(
                start.elapsed() < FORM,
                "{strategy}: readiness probe: {r:?}\n{}",
                logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let r = get_async(SocketAddr::new(ip, live_port), &live_path).await;
        assert!(matches!(r, Ok((200, _))), "liveness probe: {r:?}");
        // Readiness needs one peer; the agent's gauge of connected
        // discovered peers reaches all of them at its next check.
        let connected = format!("erlkube_agent_connected_nodes {}", pods.len() - 1);
        let start = tokio::time::Instant::now();
        loop {
            let (status, body) = get_async(SocketAddr::new(ip, metrics_port), "/metrics")
                .await
                .expect("GET /metrics");
            assert_eq!(status, 200);
            assert!(body.lines().any(|l| l == "erlkube_agent_ready 1"), "{body}");
            if body.lines().any(|l| l == connected) {
                break;
            }
            assert!(
                start.elapsed() < FORM,
                "{strategy}: no {connected:?} in\n{body}\n{}",
                logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Terminate the last pod the way the kubelet does with these objects:
    // the release container's preStop hook (GET on the pod's address) and,
    // at the same moment, SIGTERM to the agent container, which has no
    // hook; SIGTERM to the release once its hook has answered; all within
    // the pod's terminationGracePeriodSeconds. The API marks the endpoint
    // terminating at once (its peers stop dialling it).
    let hook = release_container(d)
        .lifecycle
        .clone()
        .and_then(|l| l.pre_stop)
        .and_then(|h| h.http_get)
        .expect("release preStop httpGet");
    let tgps = d
        .spec
        .as_ref()
        .unwrap()
        .termination_grace_period_seconds
        .unwrap();
    let victim = *pods.last().unwrap();
    let victim_name = bed.pod(victim).node_name.clone();
    let others = &pods[..pods.len() - 1];
    if let Some((emu, model)) = &mut emulator {
        model.set_state(emu, &pod_name(bed.pod(victim)), EndpointState::TERMINATING);
    }
    let started = tokio::time::Instant::now();
    let ip = IpAddr::V4(bed.pod(victim).ipv4);
    let hook_addr = SocketAddr::new(ip, port_number(&hook.port, &agent) as u16);
    let path = hook.path.clone().unwrap();
    assert_eq!(path, "/drain");
    let pre_stop = tokio::spawn(common::http_drain_async(hook_addr));
    let agent_pid = running.last().unwrap().1.id();
    running.last().unwrap().1.signal(15);
    // Running and not a zombie.
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
            .unwrap_or(false)
    };
    // While the hook runs: unready, still connected and answering pings.
    loop {
        match get_async(SocketAddr::new(ip, ready_port), &ready_path).await {
            Ok((503, _)) => break,
            r => assert!(
                started.elapsed() < FORM,
                "readiness during the drain: {r:?}"
            ),
        }
    }
    let ping = bed
        .pod(others[0])
        .beam()
        .eval(
            &format!("net_adm:ping('{victim_name}')"),
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(
        ping.as_deref(),
        Ok("pong"),
        "{strategy}: serving during the drain"
    );
    assert!(
        !pre_stop.is_finished(),
        "{strategy}: the checks ran during the grace"
    );
    let (status, body) = pre_stop.await.unwrap().expect("preStop answered");
    assert_eq!(status, 200, "{strategy}: preStop: {body}\n{}", logs());
    // The node left its peers before its release got SIGTERM.
    for p in others {
        loop {
            let nodes = bed.pod(*p).beam().nodes().await.unwrap();
            if !nodes.contains(&victim_name) {
                break;
            }
            assert!(
                started.elapsed() < FORM,
                "{strategy}: still connected: {nodes:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let erl = bed.pod(victim).beam().clone();
    assert!(erl.is_running(), "the release runs until its SIGTERM");
    erl.signal(15);
    loop {
        if !alive(agent_pid) && !erl.is_running() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(tgps as u64),
            "{strategy}: the pod outlived terminationGracePeriodSeconds ({tgps}s): the kubelet would kill it\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{strategy}/{wl}: kubelet-style termination (preStop /drain, SIGTERM) over in {:?} of {tgps}s",
        started.elapsed()
    );
    drop(running);
    drop(emulator);
    drop(dirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_dns_pods_form_one_cluster_of_real_erl_nodes_in_the_test_bed() {
    generated_pods_form_in_the_bed("dns", "deployment").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_kubernetes_pods_form_one_cluster_while_not_ready_in_the_api() {
    generated_pods_form_in_the_bed("kubernetes", "deployment").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_statefulset_dns_pods_form_one_cluster_under_their_stable_names() {
    generated_pods_form_in_the_bed("dns", "statefulset").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_statefulset_kubernetes_pods_form_one_cluster_under_their_stable_names() {
    generated_pods_form_in_the_bed("kubernetes", "statefulset").await;
}

/// A bed pod's name: the first label of its host name (`<app>-N`; the
/// Deployment's pods get the same form, their names are not used there).
fn pod_name(pod: &erlkube_testbed::Pod) -> String {
    pod.hostname.split('.').next().unwrap().to_owned()
}
