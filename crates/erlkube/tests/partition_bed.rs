//! Partitions in the netns bed: five pods run a plain `erl` node (OTP 25
//! from the host, or OTP 27 from the Debian trixie chroot) with the real
//! `erlkube agent` beside it, and a sixth pod runs a Rust node with the
//! embedded engine. Pods {1,2} are cut from {3,4,5,6} by blackhole routes
//! inside the pods' namespaces (DNS stays reachable, so discovery still
//! lists everyone), held for `CUT`, then mended. Checked: every agent's
//! `/metrics` and the Rust engine's `Formation::partition` show 2
//! components during the cut and 1 after; the mesh comes back whole; a
//! `global` name registered on both sides during the cut, and one
//! registered before it, resolve to exactly one pid on every BEAM node,
//! with `prevent_overlapping_partitions` true (the default) and false; and
//! `global:sync()` returns on every BEAM node with the Rust node in the
//! cluster.
//!
//! The cut lasts 30 s, as the issue asks: long enough for detection (one
//! `net_ticktime`, 4 s here), for every engine's backoff to reach its 10 s
//! cap, and for `global` on both sides to settle its own view of the split.
//!
//! Needs root and erl (CI has both); the OTP 27 cases build the chroot on
//! first use (debootstrap). One scenario at a time (a lock).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use erlkube_discovery::EngineConfig;
use erlkube_testbed::harness::{fast_engine, membership, wait_full_mesh, Strategy};
use erlkube_testbed::rust::RustPod;
use erlkube_testbed::{Bed, BedConfig, ErlRuntime, PodErl};

mod common;
use common::bed::{eval, metric, wait_for, AgentProc};
use common::http_get_async as get;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Liveness bound of each wait (not a performance assertion).
const LIMIT: Duration = Duration::from_secs(90);
/// How long the cut is held.
const CUT: Duration = Duration::from_secs(30);

/// The bed's agent in pod `index`; the default backoff cap (10 s) stays:
/// healing must not wait on it.
fn spawn_agent(bed: &Bed, index: u32) -> AgentProc {
    common::bed::spawn_agent(bed, index, &[("ERLKUBE_FORMATION_REMOVAL_GRACE", "5s")])
}

/// Where `global` says `name` lives, as seen from `erl`: the owner node and
/// the pid printed on its owner (so every node prints it the same way).
async fn whereis(erl: &PodErl, name: &str) -> String {
    eval(
        erl,
        &format!(
            "case global:whereis_name({name}) of undefined -> undefined; P -> {{node(P), erpc:call(node(P), erlang, pid_to_list, [P])}} end"
        ),
    )
    .await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Otp {
    Host25,
    Chroot27,
}

async fn partition_heals(otp: Otp, prevent_overlapping: bool) {
    let _g = SERIAL.lock().await;
    let root = match otp {
        Otp::Host25 => None,
        Otp::Chroot27 => Some(
            tokio::task::spawn_blocking(erlkube_testkit::otp27::ensure_rootfs)
                .await
                .expect("OTP 27 rootfs"),
        ),
    };
    let args = if prevent_overlapping {
        Vec::new()
    } else {
        ["-kernel", "prevent_overlapping_partitions", "false"]
            .map(String::from)
            .to_vec()
    };
    let mut bed = Bed::new(BedConfig {
        // A release's default: global connects and syncs with every peer.
        erl: ErlRuntime {
            root,
            args,
            connect_all: true,
        },
        ..BedConfig::default()
    })
    .expect("test bed");
    let beams = bed.add_pods(5).expect("pods");
    let rust = bed.add_bare_pods(1).expect("bare pod")[0];
    let rust_pod = RustPod::start(
        &mut bed,
        rust,
        &Strategy::DnsA,
        EngineConfig {
            partition_check: Some(Duration::from_secs(1)),
            ..fast_engine()
        },
        Duration::from_millis(500),
    )
    .expect("Rust node");
    let agents: BTreeMap<u32, AgentProc> =
        beams.iter().map(|i| (*i, spawn_agent(&bed, *i))).collect();
    let all: Vec<u32> = beams.iter().copied().chain([rust]).collect();
    let erl = |i: u32| bed.pod(i).beam().clone();
    let dump = || {
        agents
            .iter()
            .map(|(i, a)| {
                let log = a.log.lock().unwrap();
                let tail = log.len().saturating_sub(40);
                format!("--- agent {i}:\n{}", log[tail..].join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };

    let release = eval(&erl(beams[0]), "erlang:system_info(otp_release)").await;
    assert_eq!(
        release,
        match otp {
            Otp::Host25 => "\"25\"",
            Otp::Chroot27 => "\"27\"",
        }
    );
    let pop = eval(
        &erl(beams[0]),
        "application:get_env(kernel, prevent_overlapping_partitions)",
    )
    .await;
    assert_eq!(
        pop,
        if prevent_overlapping {
            "{ok,true}"
        } else {
            "{ok,false}"
        },
        "the setting under test"
    );
    if let Err(e) = wait_full_mesh(&bed, &all, LIMIT).await {
        panic!("{e}\n{}", dump());
    }
    // The Rust node answers erlang:nodes/0 over RPC, as the probe needs.
    let rust_nodes = eval(
        &erl(beams[0]),
        &format!(
            "erpc:call('{}', erlang, nodes, [], 5000)",
            bed.pod(rust).node_name
        ),
    )
    .await;
    assert!(
        rust_nodes.contains(&bed.pod(beams[0]).node_name),
        "{rust_nodes}"
    );
    for a in agents.values() {
        wait_for("one component before the cut", dump, || async {
            metric(a, "erlkube_cluster_components").await == 1.0
                && metric(a, "erlkube_partition_suspected").await == 0.0
        })
        .await;
        assert_eq!(
            metric(a, "erlkube_partitions_total").await,
            0.0,
            "a cold start is no partition\n{}",
            dump()
        );
    }
    let waiter = "spawn(fun() -> receive stop -> ok end end)";
    assert_eq!(
        eval(
            &erl(beams[0]),
            &format!("global:register_name(before_cut, {waiter})")
        )
        .await,
        "yes"
    );
    for i in &beams {
        assert_eq!(eval(&erl(*i), "global:sync()").await, "ok");
    }

    // The cut.
    let (left, right) = (
        vec![beams[0], beams[1]],
        vec![beams[2], beams[3], beams[4], rust],
    );
    let cut_at = Instant::now();
    bed.cut(&left, &right).expect("cut");
    for (i, a) in &agents {
        let t = wait_for("two components during the cut", dump, || async {
            metric(a, "erlkube_cluster_components").await == 2.0
                && metric(a, "erlkube_partition_suspected").await == 1.0
        })
        .await;
        let (_, body) = get(a.http, "/cluster").await.expect("/cluster");
        assert!(
            body.contains("\"components\":2,\"suspected\":true"),
            "{body}"
        );
        eprintln!("pod {i}: 2 components seen {t:?} into the wait");
    }
    wait_for("the Rust engine to see two components", dump, || async {
        rust_pod
            .partition()
            .is_some_and(|p| p.components == 2 && p.suspected)
    })
    .await;
    // Each side alone before it registers the same name.
    for side in [&left, &right] {
        let other: BTreeSet<String> = if side == &left { &right } else { &left }
            .iter()
            .map(|i| bed.pod(*i).node_name.clone())
            .collect();
        wait_for("the sides to drop each other", dump, || async {
            let view = membership(&bed).await;
            side.iter().all(|i| {
                view[i]
                    .as_ref()
                    .is_ok_and(|v| v.iter().all(|n| !other.contains(n)))
            })
        })
        .await;
    }
    for i in [left[0], right[0]] {
        let e = erl(i);
        assert_eq!(
            eval(&e, &format!("global:register_name(both_sides, {waiter})")).await,
            "yes",
            "each side registers the name while cut off"
        );
    }
    tokio::time::sleep(CUT.saturating_sub(cut_at.elapsed())).await;

    // The heal.
    let mended = Instant::now();
    bed.mend(&left, &right).expect("mend");
    let mesh = match wait_full_mesh(&bed, &all, LIMIT).await {
        Ok(d) => d,
        Err(e) => panic!("{e}\n{}", dump()),
    };
    for a in agents.values() {
        wait_for("one component after the heal", dump, || async {
            metric(a, "erlkube_cluster_components").await == 1.0
        })
        .await;
        assert!(metric(a, "erlkube_partitions_total").await >= 1.0);
    }
    let view = mended.elapsed();
    wait_for("the Rust engine to see one component", dump, || async {
        rust_pod.partition().is_some_and(|p| p.components == 1)
    })
    .await;
    eprintln!(
        "{otp:?}, prevent_overlapping_partitions={prevent_overlapping}: full mesh {mesh:?} after the mend, every agent at 1 component after {view:?}"
    );

    // global: sync returns with the Rust node in the cluster, and each name
    // resolves to one pid, the same on every node.
    for i in &beams {
        assert_eq!(eval(&erl(*i), "global:sync()").await, "ok");
    }
    for name in ["before_cut", "both_sides"] {
        let mut seen = BTreeSet::new();
        for i in &beams {
            seen.insert(whereis(&erl(*i), name).await);
        }
        assert_eq!(seen.len(), 1, "{name} resolves differently: {seen:?}");
        let one = seen.into_iter().next().unwrap();
        assert_ne!(one, "undefined", "{name} is lost");
    }
    let mut names = BTreeSet::new();
    for i in &beams {
        names.insert(eval(&erl(*i), "lists:sort(global:registered_names())").await);
    }
    assert_eq!(names.len(), 1, "registered names differ: {names:?}");
    drop(rust_pod);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn otp25_partition_is_seen_and_healed_with_prevent_overlapping_partitions() {
    partition_heals(Otp::Host25, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn otp25_partition_is_seen_and_healed_without_prevent_overlapping_partitions() {
    partition_heals(Otp::Host25, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn otp27_partition_is_seen_and_healed_with_prevent_overlapping_partitions() {
    partition_heals(Otp::Chroot27, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn otp27_partition_is_seen_and_healed_without_prevent_overlapping_partitions() {
    partition_heals(Otp::Chroot27, false).await;
}
