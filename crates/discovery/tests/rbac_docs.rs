//! The RBAC manifests in docs/kubernetes.md are valid Kubernetes objects
//! (kubectl-less validation): every YAML block parses into the
//! `k8s-openapi` type of its kind, and serializing it back gives the same
//! document, so an unknown or misspelled field fails. The Role grants
//! exactly what the strategy does: get, list and watch, on the one
//! resource it reads (a Role per `resource`).

use erlkube_testkit::docs::{code_blocks, round_trip};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde_json::Value;

#[test]
fn rbac_manifests_in_the_docs_are_valid_and_minimal() {
    let md = include_str!("../../../docs/kubernetes.md");
    let mut kinds = Vec::new();
    let mut roles = Vec::new();
    for block in code_blocks(md, "yaml") {
        for doc in serde_yaml::Deserializer::from_str(&block) {
            let v: Value = serde::Deserialize::deserialize(doc).expect("YAML");
            if v.is_null() {
                continue;
            }
            let kind = v["kind"].as_str().expect("kind").to_owned();
            let api = v["apiVersion"].as_str().expect("apiVersion");
            match kind.as_str() {
                "ServiceAccount" => {
                    assert_eq!(api, "v1");
                    round_trip::<ServiceAccount>(&v);
                }
                "Role" => {
                    assert_eq!(api, "rbac.authorization.k8s.io/v1");
                    roles.push(round_trip::<Role>(&v));
                }
                "RoleBinding" => {
                    assert_eq!(api, "rbac.authorization.k8s.io/v1");
                    let b = round_trip::<RoleBinding>(&v);
                    assert_eq!(b.role_ref.kind, "Role");
                    assert_eq!(b.role_ref.api_group, "rbac.authorization.k8s.io");
                    let s = &b.subjects.as_ref().expect("subjects")[0];
                    assert_eq!(s.kind, "ServiceAccount");
                }
                other => panic!("unexpected kind {other}"),
            }
            kinds.push(kind);
        }
    }
    assert!(
        kinds.starts_with(&["ServiceAccount".into(), "Role".into(), "RoleBinding".into()]),
        "{kinds:?}"
    );
    let slices = &roles[0].rules.as_ref().unwrap()[0];
    assert_eq!(
        slices.api_groups.as_deref(),
        Some(&["discovery.k8s.io".to_owned()][..])
    );
    assert_eq!(
        slices.resources.as_deref(),
        Some(&["endpointslices".to_owned()][..])
    );
    assert_eq!(slices.verbs, ["get", "list", "watch"]);
    // resource = "endpoints" and "pods": a Role each, with the core group
    // and that one resource (the readers never touch the other kind).
    for resource in ["endpoints", "pods"] {
        let rules: Vec<_> = roles
            .iter()
            .map(|r| r.rules.as_deref().unwrap())
            .filter(|rules| {
                rules.iter().any(|rule| {
                    rule.resources
                        .as_deref()
                        .is_some_and(|rs| rs.iter().any(|x| x == resource))
                })
            })
            .collect();
        assert_eq!(rules.len(), 1, "one Role for resource = {resource}");
        assert_eq!(rules[0].len(), 1, "{resource}: one rule");
        let rule = &rules[0][0];
        assert_eq!(rule.api_groups.as_deref(), Some(&[String::new()][..]));
        assert_eq!(rule.resources.as_deref(), Some(&[resource.to_owned()][..]));
        assert_eq!(rule.verbs, ["get", "list", "watch"]);
    }
    for r in &roles {
        for rule in r.rules.as_ref().unwrap() {
            assert!(
                rule.verbs
                    .iter()
                    .all(|v| ["get", "list", "watch"].contains(&v.as_str())),
                "read-only rights only: {rule:?}"
            );
        }
    }
}
