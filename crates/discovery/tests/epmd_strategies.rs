//! The epmd and hosts_file strategies against OTP's epmd and real nodes
//! (loopback, a private epmd port).

use std::time::Duration;

use erlkube_discovery::strategy::{Discover, HostsFile, LocalEpmd};
use erlkube_discovery::NodeName;
use erlkube_testkit::{unique_name, ErlNode, OtpEpmd};

#[tokio::test]
async fn epmd_strategy_lists_every_registered_node() {
    let epmd = OtpEpmd::start().unwrap();
    let a = ErlNode::builder(&unique_name("epmd_strat_a"))
        .epmd_port(epmd.port())
        .start()
        .unwrap();
    let b = ErlNode::builder(&unique_name("epmd_strat_b"))
        .epmd_port(epmd.port())
        .start()
        .unwrap();
    let addr = format!("127.0.0.1:{}", epmd.port()).parse().unwrap();
    let mut s = LocalEpmd::new(addr, "127.0.0.1", Duration::from_secs(5));
    let got = s.discover().await.unwrap();
    assert!(got.complete);
    let want: std::collections::BTreeSet<NodeName> = [a.node_name(), b.node_name()]
        .into_iter()
        .map(NodeName::new)
        .collect();
    assert_eq!(got.nodes, want);
}

#[tokio::test]
async fn epmd_strategy_reports_an_unreachable_epmd_as_an_error() {
    let port = erlkube_testkit::free_port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut s = LocalEpmd::new(addr, "127.0.0.1", Duration::from_secs(5));
    assert!(s.discover().await.is_err());
}

#[tokio::test]
async fn hosts_file_asks_every_host_and_a_silent_host_makes_the_answer_partial() {
    // Listening on 127.0.0.1 only, so 127.0.0.2 is a host without epmd.
    let epmd = OtpEpmd::start_with_args(&["-address", "127.0.0.1"]).unwrap();
    let a = ErlNode::builder(&unique_name("hosts_strat"))
        .epmd_port(epmd.port())
        .start()
        .unwrap();
    let dir = std::env::temp_dir().join(unique_name("hosts_strat_dir"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(".hosts.erlang");
    std::fs::write(&path, "'127.0.0.1'.\n").unwrap();
    let mut s = HostsFile::new(&path, epmd.port(), Duration::from_secs(5));
    let got = s.discover().await.unwrap();
    assert!(got.complete);
    assert_eq!(got.nodes, [NodeName::new(a.node_name())].into());
    // 127.0.0.2 (loopback, no epmd bound there) fails.
    std::fs::write(&path, "'127.0.0.1'.\n'127.0.0.2'. % down\n").unwrap();
    let got = s.discover().await.unwrap();
    assert!(!got.complete);
    assert_eq!(got.nodes, [NodeName::new(a.node_name())].into());
    std::fs::write(&path, "{not, a, host}.\n").unwrap();
    assert!(s.discover().await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
