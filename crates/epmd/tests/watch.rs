//! erlkube's WATCH request: a local client follows the registry as real
//! nodes register and leave; OTP's `epmd` closes it unanswered; the
//! daemon bounds its watchers.

mod common;

use std::time::Duration;

use common::{block_on, node_info, Daemon};
use erlkube_epmd::{Client, ClientError, Names, Watch};
use erlkube_testkit::{unique_name, ErlNode, OtpEpmd};

fn has(n: &Names, name: &str) -> bool {
    n.nodes.iter().any(|e| e.name == name)
}

/// The watch's answers until one satisfies `cond` (bounded: 30 s).
async fn until(w: &mut Watch, what: &str, mut cond: impl FnMut(&Names) -> bool) -> Names {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = w.next().await.expect("watch answer");
            if cond(&n) {
                return n;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("watch: {what} not seen within 30 s"))
}

#[test]
fn a_watch_follows_a_real_node_registering_and_leaving() {
    let d = Daemon::start();
    let c = Client::new("127.0.0.1", d.port);
    let name = unique_name("watched");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut w = rt.block_on(c.watch()).expect("watch");
    // The registry as it is, at once.
    let first = rt.block_on(w.next()).unwrap();
    assert_eq!(first.epmd_port, d.port as u32);
    assert!(first.nodes.is_empty(), "{first:?}");
    let node = ErlNode::builder(&name)
        .epmd_port(d.port)
        .start()
        .expect("erl node");
    let seen = rt.block_on(until(&mut w, "the registration", |n| has(n, &name)));
    let port = seen.nodes.iter().find(|e| e.name == name).unwrap().port;
    assert_eq!(
        rt.block_on(c.port_please(&name)).unwrap().map(|i| i.port),
        Some(port)
    );
    drop(node);
    rt.block_on(until(&mut w, "the unregistration", |n| !has(n, &name)));
    assert_eq!(d.metrics.requests("watch"), 1);
}

#[test]
fn changes_close_together_reach_the_watch_as_the_latest_registry() {
    let d = Daemon::start();
    let c = Client::new("127.0.0.1", d.port);
    block_on(async {
        let mut w = c.watch().await.unwrap();
        assert!(w.next().await.unwrap().nodes.is_empty());
        let a = c.register(node_info("a", 1001)).await.unwrap();
        let b = c.register(node_info("b", 1002)).await.unwrap();
        until(&mut w, "a and b", |n| has(n, "a") && has(n, "b")).await;
        drop(a);
        let n = until(&mut w, "a gone", |n| !has(n, "a")).await;
        assert!(has(&n, "b"), "{n:?}");
        drop(b);
        until(&mut w, "b gone", |n| n.nodes.is_empty()).await;
    });
}

#[test]
fn otp_epmd_closes_a_watch_unanswered() {
    let otp = OtpEpmd::start().expect("OTP epmd");
    let c = Client::new("127.0.0.1", otp.port());
    let r = block_on(c.watch());
    assert!(matches!(r, Err(ClientError::WatchUnsupported)), "{r:?}");
    // And it still serves.
    assert!(block_on(c.names()).unwrap().nodes.is_empty());
}

#[test]
fn watchers_are_bounded_and_a_closed_one_frees_its_place() {
    let d = Daemon::start();
    let c = Client::new("127.0.0.1", d.port);
    block_on(async {
        let mut open = Vec::new();
        for _ in 0..64 {
            let mut w = c.watch().await.expect("watch within the limit");
            w.next().await.unwrap();
            open.push(w);
        }
        assert!(matches!(
            c.watch().await,
            Err(ClientError::WatchUnsupported)
        ));
        assert_eq!(d.metrics.errors("watch_limit"), 1);
        drop(open.pop());
        // The daemon sees the close when its task reads the EOF: retry
        // (bounded) until the place is free again.
        let mut again = None;
        for _ in 0..200 {
            match c.watch().await {
                Ok(w) => {
                    again = Some(w);
                    break;
                }
                Err(ClientError::WatchUnsupported) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
        let mut w = again.expect("a place after one watcher closed");
        assert!(w.next().await.unwrap().nodes.is_empty());
        // Registering still works with every watcher place taken.
        let _r = c.register(node_info("x", 1)).await.unwrap();
        until(&mut w, "x", |n| has(n, "x")).await;
    });
}
