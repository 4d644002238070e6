//! The emulator's wire format, read by the real `kube` client over TLS
//! verified against the emulator's CA: lists with resourceVersion, watches
//! with replay, bookmarks and 410 Gone, 401/403 Status objects, selectors.

use std::time::Duration;

use erlkube_kube_emulator::{Access, Emulator, EmulatorConfig, EndpointState, ServiceModel};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

const LIVENESS: Duration = Duration::from_secs(20);

fn client(emu: &Emulator, token: &str) -> kube::Client {
    let mut c = kube::Config::new(emu.url().parse().unwrap());
    c.root_cert = Some(
        CertificateDer::pem_slice_iter(emu.ca_pem().as_bytes())
            .map(|c| c.unwrap().as_ref().to_vec())
            .collect(),
    );
    c.headers.push((
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    ));
    kube::Client::try_from(c).unwrap()
}

async fn started() -> (Emulator, ServiceModel) {
    let emu = Emulator::start(EmulatorConfig {
        bookmark_interval: Duration::from_millis(100),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    emu.set_token("t", Access::Read);
    let mut m = ServiceModel::new("ns1", "svc", &[("app", "a")]);
    m.set_pod(&emu, "a-0", "10.0.0.1", Some("a-0"), EndpointState::READY);
    m.set_pod(
        &emu,
        "a-1",
        "10.0.0.2",
        Some("a-1"),
        EndpointState::STARTING,
    );
    (emu, m)
}

#[tokio::test]
async fn lists_carry_a_resource_version_and_selectors_filter() {
    let (emu, _m) = started().await;
    let mut other = ServiceModel::new("ns1", "other", &[("app", "b")]);
    other.set_pod(&emu, "b-0", "10.0.1.1", None, EndpointState::READY);
    let c = client(&emu, "t");
    let slices: Api<EndpointSlice> = Api::namespaced(c.clone(), "ns1");
    let l = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=svc"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    assert_eq!(
        l.metadata.resource_version.as_deref(),
        Some(emu.resource_version().to_string().as_str())
    );
    let eps = &l.items[0].endpoints;
    assert_eq!(eps.len(), 2);
    let conds: Vec<_> = eps
        .iter()
        .map(|e| e.conditions.clone().unwrap().ready)
        .collect();
    assert_eq!(conds, [Some(true), Some(false)]);
    let pods: Api<Pod> = Api::namespaced(c.clone(), "ns1");
    assert_eq!(
        pods.list(&ListParams::default().labels("app=b"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        pods.list(&ListParams::default().labels("app!=b"))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );
    let endpoints: Api<Endpoints> = Api::namespaced(c.clone(), "ns1");
    let l = endpoints
        .list(&ListParams::default().fields("metadata.name=svc"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    let subset = &l.items[0].subsets.as_ref().unwrap()[0];
    assert_eq!(subset.addresses.as_ref().unwrap().len(), 1);
    assert_eq!(subset.not_ready_addresses.as_ref().unwrap().len(), 1);
    // Other namespaces are empty; a bad selector is a 400 Status.
    let none: Api<Pod> = Api::namespaced(c.clone(), "ns2");
    assert!(none
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    let e = pods
        .list(&ListParams::default().labels("app in (a b"))
        .await
        .unwrap_err();
    assert!(matches!(&e, kube::Error::Api(s) if s.code == 400), "{e:?}");
}

#[tokio::test]
async fn watch_replays_from_a_version_sends_bookmarks_and_live_changes() {
    let (emu, mut m) = started().await;
    let c = client(&emu, "t");
    let pods: Api<Pod> = Api::namespaced(c, "ns1");
    let rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    // A change after the list: replayed by a watch from rv.
    m.set_state(&emu, "a-1", EndpointState::READY);
    let s = pods
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap();
    let mut s = Box::pin(s);
    let mut kinds = Vec::new();
    let mut bookmark_rv = None;
    let deadline = tokio::time::Instant::now() + LIVENESS;
    while kinds.len() < 3 || bookmark_rv.is_none() {
        let ev = tokio::time::timeout_at(deadline, s.next())
            .await
            .expect("events")
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Added(p) => kinds.push(("ADDED", p.metadata.name.unwrap())),
            WatchEvent::Modified(p) => kinds.push(("MODIFIED", p.metadata.name.unwrap())),
            WatchEvent::Deleted(p) => kinds.push(("DELETED", p.metadata.name.unwrap())),
            WatchEvent::Bookmark(b) => bookmark_rv = Some(b.metadata.resource_version),
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
        if kinds.len() == 1 {
            m.set_pod(&emu, "a-2", "10.0.0.3", None, EndpointState::READY);
            m.remove_pod(&emu, "a-0");
        }
    }
    assert_eq!(
        kinds,
        [
            ("MODIFIED", "a-1".to_owned()),
            ("ADDED", "a-2".to_owned()),
            ("DELETED", "a-0".to_owned())
        ]
    );
    let b: u64 = bookmark_rv.unwrap().parse().unwrap();
    assert!(b >= rv.parse::<u64>().unwrap());
    assert!(emu.stats().bookmarks >= 1);
}

#[tokio::test]
async fn a_compacted_version_is_410_gone_for_new_and_open_watches() {
    let (emu, mut m) = started().await;
    let c = client(&emu, "t");
    let slices: Api<EndpointSlice> = Api::namespaced(c, "ns1");
    let rv = slices
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let open = slices
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap();
    let mut open = Box::pin(open);
    // A change, then compaction at the new version: rv is now too old.
    m.set_state(&emu, "a-1", EndpointState::READY);
    emu.expire_history();
    let ev = loop {
        match tokio::time::timeout(LIVENESS, open.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Modified(_) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(&ev, WatchEvent::Error(s) if s.code == 410 && s.reason == "Expired"),
        "{ev:?}"
    );
    let again = slices.watch(&WatchParams::default(), &rv).await.unwrap();
    let mut again = Box::pin(again);
    let ev = tokio::time::timeout(LIVENESS, again.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(&ev, WatchEvent::Error(s) if s.code == 410),
        "{ev:?}"
    );
    assert!(emu.stats().gone >= 2);
    // A fresh list gives a version a watch can start from.
    let rv2 = slices
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    assert!(rv2.parse::<u64>().unwrap() > rv.parse::<u64>().unwrap());
    let fresh = slices
        .watch(&WatchParams::default().disable_bookmarks(), &rv2)
        .await
        .unwrap();
    let mut fresh = Box::pin(fresh);
    m.set_state(&emu, "a-0", EndpointState::TERMINATING);
    let ev = tokio::time::timeout(LIVENESS, fresh.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(&ev, WatchEvent::Modified(_)), "{ev:?}");
}

#[tokio::test]
async fn tokens_are_checked_and_faults_are_status_objects() {
    let (emu, _m) = started().await;
    emu.set_token("weak", Access::None);
    let pods = |t: &str| -> Api<Pod> { Api::namespaced(client(&emu, t), "ns1") };
    let e = pods("nope").list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 401 && s.reason == "Unauthorized"),
        "{e:?}"
    );
    let e = pods("weak").list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 403 && s.reason == "Forbidden"),
        "{e:?}"
    );
    emu.fail_next(500, 1);
    let e = pods("t").list(&ListParams::default()).await.unwrap_err();
    assert!(matches!(&e, kube::Error::Api(s) if s.code == 500), "{e:?}");
    assert!(pods("t").list(&ListParams::default()).await.is_ok());
    emu.set_delay(Duration::from_millis(300));
    let t = std::time::Instant::now();
    assert!(pods("t").list(&ListParams::default()).await.is_ok());
    assert!(t.elapsed() >= Duration::from_millis(300));
    emu.clear_faults();
    // Another CA does not verify this server.
    let other = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let mut cfg = kube::Config::new(emu.url().parse().unwrap());
    cfg.root_cert = Some(
        CertificateDer::pem_slice_iter(other.ca_pem().as_bytes())
            .map(|c| c.unwrap().as_ref().to_vec())
            .collect(),
    );
    let p: Api<Pod> = Api::namespaced(kube::Client::try_from(cfg).unwrap(), "ns1");
    assert!(p.list(&ListParams::default()).await.is_err());
}

#[tokio::test]
async fn dropped_watches_end_and_can_resume() {
    let (emu, mut m) = started().await;
    let pods: Api<Pod> = Api::namespaced(client(&emu, "t"), "ns1");
    let rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let s = pods
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap();
    let mut s = Box::pin(s);
    emu.drop_watches();
    assert!(tokio::time::timeout(LIVENESS, s.next())
        .await
        .unwrap()
        .is_none());
    m.set_pod(&emu, "a-5", "10.0.0.5", None, EndpointState::READY);
    let s = pods
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap();
    let mut s = Box::pin(s);
    let ev = tokio::time::timeout(LIVENESS, s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(&ev, WatchEvent::Added(p) if p.metadata.name.as_deref() == Some("a-5")),
        "{ev:?}"
    );
}
