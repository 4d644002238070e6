//! The test bed itself: pods, DNS records, partition, cleanup.

use std::time::Duration;

use erlkube_discovery::strategy::{Discover, DnsA, DnsSrv};
use erlkube_discovery::NodeName;
use erlkube_testbed::harness::dns_settings;
use erlkube_testbed::{net, Bed, BedConfig, Naming};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_get_dns_records_and_everything_is_removed_on_drop() {
    let mut bed = Bed::new(BedConfig {
        naming: Naming::Hostname,
        ..BedConfig::default()
    })
    .unwrap();
    let id = bed.id().to_owned();
    let pods = bed.add_pods(2).unwrap();
    let names: Vec<NodeName> = pods
        .iter()
        .map(|i| NodeName::new(&bed.pod(*i).node_name))
        .collect();
    let mut a = DnsA::new(dns_settings(&bed)).unwrap();
    let got = a.discover().await.unwrap();
    assert!(got.complete);
    let ips: Vec<String> = pods
        .iter()
        .map(|i| format!("app@{}", bed.pod(*i).ipv4))
        .collect();
    assert_eq!(
        got.nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        ips
    );
    let mut srv = DnsSrv::new(dns_settings(&bed)).unwrap();
    let got = srv.discover().await.unwrap();
    assert_eq!(got.nodes, names.iter().cloned().collect());
    // The pods resolve each other's host names through the bed's DNS.
    let other = &bed.pod(pods[1]).node_name;
    let r = bed
        .pod(pods[0])
        .beam()
        .eval(&format!("net_adm:ping('{other}')"), Duration::from_secs(20))
        .await;
    assert_eq!(r.unwrap(), "pong");
    // Unpublished: gone from the Service records.
    bed.unpublish(pods[0]).unwrap();
    let got = srv.discover().await.unwrap();
    assert_eq!(got.nodes, [names[1].clone()].into());
    drop(bed);
    // Other tests of this binary run beds of their own at the same time:
    // only this bed's names count (`id` plus a dash).
    let mine = format!("{id}-");
    assert!(
        !net::netns_list().iter().any(|n| n.starts_with(&mine)),
        "{:?}",
        net::netns_list()
    );
    assert!(
        !net::link_list().iter().any(|n| n.starts_with(&mine)),
        "{:?}",
        net::link_list()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_pod_loses_its_connections_and_heals() {
    let mut bed = Bed::new(BedConfig::default()).unwrap();
    let pods = bed.add_pods(2).unwrap();
    let b = bed.pod(pods[1]).node_name.clone();
    let e0 = bed.pod(pods[0]).beam().clone();
    assert_eq!(
        e0.eval(&format!("net_adm:ping('{b}')"), Duration::from_secs(20))
            .await
            .unwrap(),
        "pong"
    );
    bed.partition(pods[1]).unwrap();
    // net_ticktime 4 s: the link drops within a few seconds.
    let mut dropped = false;
    for _ in 0..200 {
        if e0.nodes().await.unwrap().is_empty() {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dropped, "partitioned node still connected");
    assert_eq!(
        e0.eval(&format!("net_adm:ping('{b}')"), Duration::from_secs(20))
            .await
            .unwrap(),
        "pang"
    );
    bed.heal(pods[1]).unwrap();
    assert_eq!(
        e0.eval(&format!("net_adm:ping('{b}')"), Duration::from_secs(20))
            .await
            .unwrap(),
        "pong"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dns_strategies_treat_empty_short_and_failed_answers_safely() {
    use erlkube_discovery::strategy::EmptyAnswer;
    use erlkube_discovery::{DiscoveryError, Reason};
    let mut bed = Bed::new(BedConfig::default()).unwrap();
    let pods = bed.add_pods(2).unwrap();
    // Fewer records than expected: an incomplete answer (never prunes).
    let mut s = dns_settings(&bed);
    s.min_expected = 3;
    let got = DnsA::new(s).unwrap().discover().await.unwrap();
    assert_eq!((got.nodes.len(), got.complete), (2, false));
    // No ready pod: an error by default, a complete empty answer if asked.
    for i in &pods {
        bed.unpublish(*i).unwrap();
    }
    let err = DnsA::new(dns_settings(&bed))
        .unwrap()
        .discover()
        .await
        .unwrap_err();
    assert!(matches!(err, DiscoveryError::BadAnswer { .. }), "{err}");
    assert!(
        matches!(err.reason(), Reason::DnsNoRecords { .. }),
        "{err:?}"
    );
    let err = DnsSrv::new(dns_settings(&bed))
        .unwrap()
        .discover()
        .await
        .unwrap_err();
    assert!(matches!(err, DiscoveryError::BadAnswer { .. }), "{err}");
    let mut s = dns_settings(&bed);
    s.empty_answer = EmptyAnswer::Empty;
    let got = DnsA::new(s).unwrap().discover().await.unwrap();
    assert!(got.nodes.is_empty() && got.complete);
    // Server down: unavailable.
    bed.stop_dns();
    let err = DnsA::new(dns_settings(&bed))
        .unwrap()
        .discover()
        .await
        .unwrap_err();
    assert!(matches!(err, DiscoveryError::Unavailable { .. }), "{err}");
    assert!(matches!(err.reason(), Reason::DnsQuery { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thread_can_run_inside_a_bare_pod() {
    let mut bed = Bed::new(BedConfig::default()).unwrap();
    let pods = bed.add_bare_pods(2).unwrap();
    // Bare pods are in the Service's records like the others.
    let got = DnsA::new(dns_settings(&bed))
        .unwrap()
        .discover()
        .await
        .unwrap();
    assert_eq!(got.nodes.len(), 2);
    assert!(bed.pod(pods[0]).erl.is_none());
    let (a, b) = (bed.pod(pods[0]).ipv4, bed.pod(pods[1]).ipv4);
    // A listener on pod 1's address, from a thread inside pod 1...
    let listener = net::spawn_in_netns(&bed.pod(pods[0]).netns, move || {
        std::net::TcpListener::bind((a, 0)).map(|l| l.local_addr().unwrap())
    })
    .unwrap()
    .join()
    .unwrap();
    assert!(listener.is_ok(), "{listener:?}");
    // ...while pod 2's address is not local there.
    let other = net::spawn_in_netns(&bed.pod(pods[0]).netns, move || {
        std::net::TcpListener::bind((b, 0)).is_err()
    })
    .unwrap()
    .join()
    .unwrap();
    assert!(other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_answers_come_complete_over_tcp() {
    let mut bed = Bed::new(BedConfig::default()).unwrap();
    // 40 A records do not fit a 512-byte UDP answer: truncated, then TCP.
    bed.add_bare_pods(40).unwrap();
    let got = DnsA::new(dns_settings(&bed)).unwrap().discover().await;
    let got = got.unwrap();
    assert_eq!((got.nodes.len(), got.complete), (40, true));
}
