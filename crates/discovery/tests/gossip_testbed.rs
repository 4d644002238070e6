//! Gossip in the netns test bed: real BEAM nodes in pods, each pod's
//! gossip socket created inside the pod's network namespace (multicast on
//! the bed's bridge), one formation engine per pod driving its node.
//!
//! Needs root (CI runs as root); fails otherwise.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use erlkube_discovery::gossip::{bind_socket, Gossip, GossipCounters, GossipSettings};
use erlkube_discovery::{Engine, Formation, NodeName};
use erlkube_testbed::harness::{fast_engine, wait_full_mesh};
use erlkube_testbed::{BeamActor, Bed, BedConfig, Naming};
use tokio::sync::mpsc;

const FORM: Duration = Duration::from_secs(60);
const SECRET: &[u8] = b"testbed-gossip-secret-0123456789";

/// Runs `f` on a thread that entered the pod's network namespace; sockets
/// made there belong to that namespace for good.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/var/run/netns/{ns}"))
                .unwrap_or_else(|e| panic!("netns {ns}: {e}"));
            // SAFETY: setns on this thread only, with a valid namespace fd.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread")
    })
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Member {
    formation: Formation,
    task: tokio::task::JoinHandle<()>,
    counters: Arc<GossipCounters>,
}

/// Waits (liveness bound `FORM`) until every member's engine wants
/// exactly `n` nodes.
/// Checks `cond` every 50 ms until it holds (true) or `timeout` passes
/// (false): waits for what the test expects instead of sleeping.
async fn until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_desired(members: &[Member], n: usize) {
    let start = tokio::time::Instant::now();
    for (i, m) in members.iter().enumerate() {
        loop {
            let d = m.formation.desired();
            if d.len() == n {
                break;
            }
            assert!(
                start.elapsed() < FORM,
                "member {i} wants {d:?}, not {n} nodes"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start(bed: &Bed, i: u32, cluster: &str, secret: &[u8]) -> Member {
    start_with(bed, i, cluster, secret, None)
}

/// `broadcast`: send to this broadcast address instead of the group.
fn start_with(
    bed: &Bed,
    i: u32,
    cluster: &str,
    secret: &[u8],
    broadcast: Option<std::net::SocketAddrV4>,
) -> Member {
    let pod = bed.pod(i);
    let mut s = GossipSettings::new(
        cluster,
        secret,
        NodeName::new(&pod.node_name),
        bed.config().dist_port,
    );
    if let Some(b) = broadcast {
        s.group = b;
        s.broadcast = true;
    }
    s.interface = Some(pod.ipv4);
    s.interval = Duration::from_millis(250);
    s.expiry = Duration::from_secs(2);
    let sock = in_netns(&pod.netns, || bind_socket(&s)).expect("gossip socket");
    let g = Gossip::with_socket(s, sock).unwrap();
    let counters = g.counters();
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(g.run(tx));
    let formation = Engine::new(BeamActor::new(pod.beam().clone()), fast_engine()).spawn(rx);
    Member {
        formation,
        task,
        counters,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_pods_form_one_cluster_by_gossip_and_strangers_are_ignored() {
    let mut bed = Bed::new(BedConfig {
        naming: Naming::Ipv4,
        ..BedConfig::default()
    })
    .expect("test bed");
    let pods = bed.add_pods(7).unwrap();
    // Multicast on the bed: flood the bridge (no IGMP querier here) and
    // route the multicast range out of eth0 in every pod.
    ip(&[
        "link",
        "set",
        "dev",
        &format!("{}-b", bed.id()),
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ]);
    for i in &pods {
        ip(&[
            "-n",
            &bed.pod(*i).netns,
            "route",
            "add",
            "224.0.0.0/4",
            "dev",
            "eth0",
        ]);
    }
    let (members, strangers) = pods.split_at(5);
    let good: Vec<Member> = members
        .iter()
        .map(|i| start(&bed, *i, "prod", SECRET))
        .collect();
    // Same group, wrong secret; and same secret, another cluster name.
    let wrong_secret = start(&bed, strangers[0], "prod", b"not-the-right-secret-at-all!");
    let other_cluster = start(&bed, strangers[1], "staging", SECRET);
    wait_full_mesh(&bed, members, FORM).await.unwrap();
    // The strangers are in nobody's cluster and know nobody.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in members {
        let n = bed.pod(*i).beam().nodes().await.unwrap();
        assert_eq!(n.len(), 4, "pod {i}: {n:?}");
    }
    for i in strangers {
        let n = bed.pod(*i).beam().nodes().await.unwrap();
        assert!(n.is_empty(), "stranger {i} connected to {n:?}");
    }
    for (k, m) in good.iter().enumerate() {
        let c = &m.counters;
        assert!(
            c.bad_mac.load(Ordering::Relaxed) > 0,
            "member {k} never saw the wrong-secret packets: {c:?}"
        );
        assert!(
            c.foreign_cluster.load(Ordering::Relaxed) > 0,
            "member {k}: {c:?}"
        );
    }
    assert!(wrong_secret.counters.bad_mac.load(Ordering::Relaxed) > 0);
    assert!(
        other_cluster
            .counters
            .foreign_cluster
            .load(Ordering::Relaxed)
            > 0
    );

    // Garbage sent to the group from a pod: dropped and counted.
    let before: Vec<u64> = good.iter().map(|m| m.counters.dropped()).collect();
    let ns = bed.pod(strangers[0]).netns.clone();
    let src = bed.pod(strangers[0]).ipv4;
    in_netns(&ns, || {
        let s = std::net::UdpSocket::bind((src, 0)).unwrap();
        let group = GossipSettings::new("x", SECRET, NodeName::new("a@b"), 0).group;
        let mut rng = 0x1234_5678u64;
        for len in [0usize, 1, 10, 60, 100, 500, 1000, 1500] {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (rng >> 33) as u8
                })
                .collect();
            s.send_to(&buf, group).unwrap();
        }
    });
    // 8 garbage datagrams on top of the strangers' ongoing heartbeats.
    let all_dropped = until(FORM, || {
        good.iter()
            .enumerate()
            .all(|(k, m)| m.counters.dropped() >= before[k] + 8)
    })
    .await;
    for (k, m) in good.iter().enumerate() {
        assert!(all_dropped, "member {k}: {:?}", m.counters);
    }
    wait_full_mesh(&bed, members, FORM).await.unwrap();

    // A captured heartbeat sent again is a replay: refused and counted.
    let replayed_before: u64 = good
        .iter()
        .map(|m| m.counters.replayed.load(Ordering::Relaxed))
        .sum();
    in_netns(&ns, || {
        let probe = GossipSettings {
            interface: Some(src),
            ..GossipSettings::new("x", SECRET, NodeName::new("probe@x"), 0)
        };
        let s = bind_socket(&probe).unwrap();
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2048];
        // The first authentic packet of the right cluster heard.
        let packet = loop {
            let (n, _) = s.recv_from(&mut buf).expect("a heartbeat on the group");
            if let Ok(hb) = erlkube_discovery::gossip::decode(SECRET, &buf[..n]) {
                if hb.cluster == "prod" {
                    break buf[..n].to_vec();
                }
            }
        };
        // Replayed at once: each member gets the packet four times (the
        // original and three copies) and takes it once, in whichever
        // order they come.
        for _ in 0..3 {
            s.send_to(&packet, probe.group).unwrap();
        }
    });
    let replayed = || -> u64 {
        good.iter()
            .map(|m| m.counters.replayed.load(Ordering::Relaxed))
            .sum()
    };
    // 3 copies reach the 4 members that are not the sender (or all 5 when
    // the sender also hears its own).
    until(FORM, || replayed() >= replayed_before + 12).await;
    let replayed_after = replayed();
    assert!(
        replayed_after >= replayed_before + 12,
        "replays not refused: {replayed_before} -> {replayed_after}"
    );
    wait_full_mesh(&bed, members, FORM).await.unwrap();

    // A member goes silent: after the expiry the others drop it.
    let mut good = good;
    let gone = members[4];
    let gone_name = NodeName::new(&bed.pod(gone).node_name);
    drop(good.remove(4));
    bed.kill_pod(gone).unwrap();
    let start = tokio::time::Instant::now();
    while good
        .iter()
        .any(|m| m.formation.desired().contains(&gone_name))
    {
        assert!(start.elapsed() < FORM, "the silent node never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_desired(&good, 3).await;
    for m in &good {
        assert!(m.formation.metrics().removed >= 1);
    }
    wait_full_mesh(&bed, &members[..4], FORM).await.unwrap();
    drop(wrong_secret);
    drop(other_cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_pods_form_one_cluster_by_broadcast_gossip() {
    let mut bed = Bed::new(BedConfig {
        naming: Naming::Ipv4,
        ..BedConfig::default()
    })
    .expect("test bed");
    let pods = bed.add_pods(3).unwrap();
    // The subnet's broadcast address (the bed uses a /24).
    let o = bed.pod(pods[0]).ipv4.octets();
    let bcast = std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(o[0], o[1], o[2], 255), 45893);
    let members: Vec<Member> = pods
        .iter()
        .map(|i| start_with(&bed, *i, "prod", SECRET, Some(bcast)))
        .collect();
    wait_full_mesh(&bed, &pods, FORM).await.unwrap();
    // the mesh can be full through the others' dials before a member's own
    // engine has heard both peers: wait for that, each member in turn
    wait_desired(&members, 2).await;
    for m in &members {
        assert!(m.counters.accepted.load(Ordering::Relaxed) > 0);
    }
}
