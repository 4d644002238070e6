//! Mnesia that follows membership, in the netns bed: pods run a plain `erl`
//! node (OTP 25 from the host, or OTP 27 from the Debian trixie chroot,
//! each with only OTP's own Mnesia) with the real `erlkube agent` beside
//! it, configured with `ERLKUBE_MNESIA_TABLES`. The agent drives Mnesia
//! over RPC and `erl_eval`; no module is loaded into the nodes.
//!
//! Scenarios (the four):
//! - 3 pods: every node holds a `ram_copies` replica of `cache`; a write
//!   on one is read on the others (OTP 25 and OTP 27);
//! - 10,000 keys, then every pod replaced one at a time (new pod, new IP,
//!   new node name): every key readable on every pod, and `db_nodes` is
//!   exactly the live nodes;
//! - {1}|{2,3} cut for 20 s with writes on both sides, mended:
//!   `restart_minority` makes every node agree and keeps the majority's
//!   writes (OTP 25 and OTP 27);
//! - a table that exists with another type: a clear error on `/readyz`
//!   and in the log, the table untouched;
//! - a drain by `GET /drain` removes the node from the schema at once; a
//!   drain by SIGTERM alone keeps it.
//!
//! Needs root and erl (CI has both). One scenario at a time (a lock).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use erlkube_testbed::harness::{membership, wait_full_mesh};
use erlkube_testbed::{Bed, BedConfig, ErlRuntime, PodErl};

mod common;
use common::bed::{eval, metric, wait_for, AgentProc};
use common::http_get_async as get;
use common::promtool_check;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Liveness bound of each wait (not a performance assertion).
const LIMIT: Duration = Duration::from_secs(120);
/// How long the cut is held.
const CUT: Duration = Duration::from_secs(20);
const EVAL: Duration = Duration::from_secs(60);

/// The bed's agent in pod `index` keeping `cache` replicated, with short
/// graces; `extra` sets or replaces variables.
fn spawn_agent(bed: &Bed, index: u32, extra: &[(&str, &str)]) -> AgentProc {
    let mut env = vec![
        ("ERLKUBE_FORMATION_BACKOFF_MAX", "2s"),
        ("ERLKUBE_FORMATION_REMOVAL_GRACE", "1s"),
        ("ERLKUBE_MNESIA_TABLES", "cache"),
        ("ERLKUBE_MNESIA_REMOVAL_GRACE", "2s"),
    ];
    env.extend_from_slice(extra);
    common::bed::spawn_agent(bed, index, &env)
}

/// `['a@h','b@h']` for these names, sorted (as `lists:sort/1` prints them).
fn atom_list(names: &BTreeSet<String>) -> String {
    let items: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!("[{}]", items.join(","))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Otp {
    Host25,
    Chroot27,
}

/// A bed whose nodes run as a release does (`-connect_all true`).
async fn bed(otp: Otp) -> Bed {
    let root = match otp {
        Otp::Host25 => None,
        Otp::Chroot27 => Some(
            tokio::task::spawn_blocking(erlkube_testkit::otp27::ensure_rootfs)
                .await
                .expect("OTP 27 rootfs"),
        ),
    };
    Bed::new(BedConfig {
        erl: ErlRuntime {
            root,
            args: Vec::new(),
            connect_all: true,
        },
        ..BedConfig::default()
    })
    .expect("test bed")
}

fn dump_all(agents: &BTreeMap<u32, AgentProc>) -> String {
    agents
        .iter()
        .map(|(i, a)| format!("--- agent {i}:\n{}", a.tail(40)))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn ready(a: &AgentProc) -> bool {
    matches!(get(a.http, "/readyz").await, Ok((200, _)))
}

async fn check_release(erl: &PodErl, otp: Otp) {
    let release = eval(erl, "erlang:system_info(otp_release)").await;
    assert_eq!(
        release,
        match otp {
            Otp::Host25 => "\"25\"",
            Otp::Chroot27 => "\"27\"",
        }
    );
}

async fn three_pods_replicate(otp: Otp) {
    let _g = SERIAL.lock().await;
    let mut bed = bed(otp).await;
    let pods = bed.add_pods(3).expect("pods");
    let agents: BTreeMap<u32, AgentProc> = pods
        .iter()
        .map(|i| (*i, spawn_agent(&bed, *i, &[])))
        .collect();
    let dump = || dump_all(&agents);
    let erl = |i: u32| bed.pod(i).beam().clone();
    check_release(&erl(pods[0]), otp).await;
    for a in agents.values() {
        wait_for("every agent ready", dump, || ready(a)).await;
    }
    let names: BTreeSet<String> = pods.iter().map(|i| bed.pod(*i).node_name.clone()).collect();
    for i in &pods {
        assert_eq!(
            eval(&erl(*i), "lists:sort(mnesia:table_info(cache, ram_copies))").await,
            atom_list(&names),
            "every node holds a ram_copies replica"
        );
        assert_eq!(
            eval(&erl(*i), "mnesia:table_info(cache, storage_type)").await,
            "ram_copies"
        );
    }
    assert_eq!(
        eval(
            &erl(pods[0]),
            "mnesia:transaction(fun() -> mnesia:write({cache, k1, <<\"from one\">>}) end)"
        )
        .await,
        "{atomic,ok}"
    );
    for i in &pods[1..] {
        assert_eq!(
            eval(&erl(*i), "mnesia:dirty_read(cache, k1)").await,
            "[{cache,k1,<<\"from one\">>}]"
        );
    }
    let a = &agents[&pods[1]];
    let (status, body) = get(a.http, "/readyz").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("mnesia: replicas loaded: cache"), "{body}");
    let (_, cluster) = get(a.http, "/cluster").await.unwrap();
    assert!(
        cluster.contains("\"mnesia\":{\"phase\":\"ready\",\"ready\":true"),
        "{cluster}"
    );
    let (_, text) = get(a.http, "/metrics").await.unwrap();
    assert!(text.contains("\nerlkube_mnesia_ready 1\n"), "{text}");
    promtool_check("the agent's /metrics with [mnesia]", &text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn otp25_three_pods_hold_a_replica_each_and_read_each_others_writes() {
    three_pods_replicate(Otp::Host25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn otp27_three_pods_hold_a_replica_each_and_read_each_others_writes() {
    three_pods_replicate(Otp::Chroot27).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_keeps_10000_keys_and_the_schema_holds_live_nodes_only() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Otp::Host25).await;
    let first = bed.add_pods(3).expect("pods");
    let mut agents: BTreeMap<u32, AgentProc> = first
        .iter()
        .map(|i| (*i, spawn_agent(&bed, *i, &[])))
        .collect();
    for a in agents.values() {
        wait_for("every agent ready", || dump_all(&agents), || ready(a)).await;
    }
    let erl = |bed: &Bed, i: u32| bed.pod(i).beam().clone();
    assert_eq!(
        eval(
            &erl(&bed, first[0]),
            "mnesia:transaction(fun() -> lists:foreach(fun(I) -> mnesia:write({cache, I, I * 2}) end, lists:seq(1, 10000)) end)"
        )
        .await,
        "{atomic,ok}"
    );
    // The logs of the replaced pods' agents (one may have made a removal
    // before it went).
    let mut gone_logs = Vec::new();
    let first_names: Vec<String> = first
        .iter()
        .map(|i| bed.pod(*i).node_name.clone())
        .collect();
    for old in first.clone() {
        // A Deployment's rolling update: the new pod first, ready; then the
        // old one is taken out of the Service and killed.
        let new = bed.add_pods(1).expect("new pod")[0];
        agents.insert(new, spawn_agent(&bed, new, &[]));
        let t = wait_for(
            "the new pod ready",
            || dump_all(&agents),
            || ready(&agents[&new]),
        )
        .await;
        let loaded = agents[&new]
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("replicas loaded"))
            .cloned()
            .collect::<Vec<_>>();
        eprintln!("pod {new} replacing {old}: ready {t:?} after its agent started; {loaded:?}");
        bed.unpublish(old).expect("unpublish");
        gone_logs.push(agents.remove(&old).unwrap().log.clone());
        bed.kill_pod(old).expect("kill");
    }
    let live: Vec<u32> = bed.indexes();
    assert_eq!(live.len(), 3);
    let names: BTreeSet<String> = live.iter().map(|i| bed.pod(*i).node_name.clone()).collect();
    for i in &live {
        let e = erl(&bed, *i);
        let want = atom_list(&names);
        wait_for(
            "db_nodes to be exactly the live nodes",
            || dump_all(&agents),
            || {
                let e = e.clone();
                let want = want.clone();
                async move {
                    e.eval("lists:sort(mnesia:system_info(db_nodes))", EVAL)
                        .await
                        .is_ok_and(|v| v == want)
                }
            },
        )
        .await;
        assert_eq!(
            eval(
                &e,
                "length([I || I <- lists:seq(1, 10000), mnesia:dirty_read(cache, I) =:= [{cache, I, I * 2}]])"
            )
            .await,
            "10000",
            "every key is readable on {}",
            e.name()
        );
        assert_eq!(
            eval(&e, "lists:sort(mnesia:table_info(cache, ram_copies))").await,
            want
        );
    }
    // Each gone member was removed once, by one live member.
    let removals: Vec<String> = agents
        .values()
        .map(|a| a.log.clone())
        .chain(gone_logs)
        .flat_map(|l| l.lock().unwrap().clone())
        .filter(|l| l.contains("removed a member gone for good"))
        .collect();
    for name in &first_names {
        let member = format!("member={name}");
        assert_eq!(
            removals.iter().filter(|l| l.contains(&member)).count(),
            1,
            "{member}: {removals:#?}"
        );
    }
    assert_eq!(removals.len(), 3, "{removals:#?}");
    let mut removed = 0.0;
    for a in agents.values() {
        removed += metric(a, "erlkube_mnesia_removed_nodes_total").await;
    }
    assert!(
        removed >= 1.0,
        "the live agents' metrics count their removals"
    );
}

async fn partition_heals(otp: Otp) {
    let _g = SERIAL.lock().await;
    let mut bed = bed(otp).await;
    let pods = bed.add_pods(3).expect("pods");
    let agents: BTreeMap<u32, AgentProc> = pods
        .iter()
        .map(|i| (*i, spawn_agent(&bed, *i, &[])))
        .collect();
    let dump = || dump_all(&agents);
    let erl = |i: u32| bed.pod(i).beam().clone();
    check_release(&erl(pods[0]), otp).await;
    for a in agents.values() {
        wait_for("every agent ready", dump, || ready(a)).await;
    }
    let write = |k: &str, v: &str| {
        format!("mnesia:transaction(fun() -> mnesia:write({{cache, {k}, {v}}}) end)")
    };
    assert_eq!(
        eval(&erl(pods[0]), &write("before", "1")).await,
        "{atomic,ok}"
    );
    let (left, right) = (vec![pods[0]], vec![pods[1], pods[2]]);
    let cut_at = Instant::now();
    bed.cut(&left, &right).expect("cut");
    // Each side alone, in Mnesia's eyes too, before it writes.
    for (side, other) in [(&left, &right), (&right, &left)] {
        let other: BTreeSet<String> = other
            .iter()
            .map(|i| bed.pod(*i).node_name.clone())
            .collect();
        wait_for("the sides to drop each other", dump, || async {
            let view = membership(&bed).await;
            side.iter()
                .all(|i| view[i].as_ref().is_ok_and(|v| v.is_disjoint(&other)))
        })
        .await;
        for i in side.iter() {
            let e = erl(*i);
            let other = other.clone();
            wait_for("Mnesia to see the other side down", dump, || {
                let e = e.clone();
                let other = other.clone();
                async move {
                    e.eval("mnesia:system_info(running_db_nodes)", EVAL)
                        .await
                        .is_ok_and(|v| other.iter().all(|n| !v.contains(n.as_str())))
                }
            })
            .await;
        }
    }
    assert_eq!(
        eval(&erl(pods[0]), &write("minority", "1")).await,
        "{atomic,ok}"
    );
    assert_eq!(
        eval(&erl(pods[0]), &write("shared", "from_minority")).await,
        "{atomic,ok}"
    );
    assert_eq!(
        eval(&erl(pods[1]), &write("majority", "1")).await,
        "{atomic,ok}"
    );
    assert_eq!(
        eval(&erl(pods[2]), &write("shared", "from_majority")).await,
        "{atomic,ok}"
    );
    tokio::time::sleep(CUT.saturating_sub(cut_at.elapsed())).await;

    let mended = Instant::now();
    bed.mend(&left, &right).expect("mend");
    if let Err(e) = wait_full_mesh(&bed, &pods, LIMIT).await {
        panic!("{e}\n{}", dump());
    }
    let names: BTreeSet<String> = pods.iter().map(|i| bed.pod(*i).node_name.clone()).collect();
    let all = atom_list(&names);
    for i in &pods {
        let e = erl(*i);
        wait_for("Mnesia to run on all three again", dump, || {
            let e = e.clone();
            let all = all.clone();
            async move {
                e.eval("lists:sort(mnesia:system_info(running_db_nodes))", EVAL)
                    .await
                    .is_ok_and(|v| v == all)
            }
        })
        .await;
        wait_for("every agent ready again", dump, || ready(&agents[i])).await;
    }
    eprintln!(
        "{otp:?}: every node running Mnesia together and ready {:?} after the mend",
        mended.elapsed()
    );
    let mut contents = BTreeSet::new();
    for i in &pods {
        let e = erl(*i);
        assert_eq!(
            eval(&e, "mnesia:wait_for_tables([cache], 30000)").await,
            "ok"
        );
        contents.insert(eval(&e, "lists:sort(ets:tab2list(cache))").await);
        assert_eq!(
            eval(&e, "mnesia:dirty_read(cache, majority)").await,
            "[{cache,majority,1}]"
        );
        assert_eq!(
            eval(&e, "mnesia:dirty_read(cache, shared)").await,
            "[{cache,shared,from_majority}]"
        );
        assert_eq!(
            eval(&e, "mnesia:dirty_read(cache, before)").await,
            "[{cache,before,1}]"
        );
        assert_eq!(
            eval(&e, "mnesia:dirty_read(cache, minority)").await,
            "[]",
            "the minority's writes during the split are dropped (documented)"
        );
    }
    assert_eq!(contents.len(), 1, "every node agrees: {contents:?}");
    let minority = &agents[&pods[0]];
    assert!(
        metric(minority, "erlkube_mnesia_inconsistencies_total").await >= 1.0,
        "{}",
        dump()
    );
    assert_eq!(
        metric(minority, "erlkube_mnesia_inconsistencies_healed_total").await,
        1.0,
        "{}",
        dump()
    );
    for i in &right {
        assert_eq!(
            metric(&agents[i], "erlkube_mnesia_inconsistencies_healed_total").await,
            0.0,
            "the majority side is kept as it is"
        );
    }
    assert!(
        minority
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("restarting Mnesia to reload from the majority")),
        "{}",
        dump()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn otp25_a_partition_heals_by_restarting_the_minority_and_keeps_the_majoritys_writes() {
    partition_heals(Otp::Host25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn otp27_a_partition_heals_by_restarting_the_minority_and_keeps_the_majoritys_writes() {
    partition_heals(Otp::Chroot27).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_of_another_type_is_reported_on_readyz_and_in_the_log_and_left_alone() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Otp::Host25).await;
    let pod = bed.add_pods(1).expect("pod")[0];
    let e = bed.pod(pod).beam().clone();
    assert_eq!(
        eval(
            &e,
            "ok = mnesia:start(), {atomic, ok} = mnesia:create_table(cache, [{type, bag}, {attributes, [key, value]}]), ok = mnesia:dirty_write({cache, k, 1}), ok = mnesia:dirty_write({cache, k, 2}), done"
        )
        .await,
        "done"
    );
    let agent = spawn_agent(&bed, pod, &[("ERLKUBE_MNESIA_TABLES", "cache,other")]);
    let dump = || agent.tail(40);
    wait_for("/readyz to name the conflict", dump, || async {
        matches!(get(agent.http, "/readyz").await, Ok((503, b)) if b.contains("table cache exists as bag"))
    })
    .await;
    let (status, body) = get(agent.http, "/readyz").await.unwrap();
    assert_eq!(status, 503);
    assert!(
        body.contains("configured as set") && body.contains("nothing was deleted or changed"),
        "{body}"
    );
    assert!(
        agent
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("ERROR") && l.contains("table cache exists as bag")),
        "{}",
        dump()
    );
    assert_eq!(metric(&agent, "erlkube_mnesia_table_conflicts").await, 1.0);
    // Nothing deleted or changed; the other table was made.
    assert_eq!(eval(&e, "mnesia:table_info(cache, type)").await, "bag");
    assert_eq!(
        eval(&e, "lists:sort(mnesia:dirty_read(cache, k))").await,
        "[{cache,k,1},{cache,k,2}]"
    );
    wait_for("the other table to be made", dump, || async {
        e.eval("mnesia:table_info(other, storage_type)", EVAL)
            .await
            .is_ok_and(|v| v == "ram_copies")
    })
    .await;
    assert!(!ready(&agent).await);
}

/// A drain by `GET /drain` (a preStop hook: the pod is going) stops
/// Mnesia on the node and has a peer remove it from the schema before the
/// node is disconnected, with `mnesia.removal_grace` at 60 s and the pod
/// still listed in DNS (so the peers' own removal cannot be what did it);
/// its writes stay readable on the others. Then a drain by SIGTERM alone
/// (the agent restarting, the node staying) leaves its node in the schema
/// with Mnesia running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_by_get_leaves_the_schema_at_once_and_a_drain_by_sigterm_alone_does_not() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Otp::Host25).await;
    let pods = bed.add_pods(3).expect("pods");
    let long = [
        ("ERLKUBE_MNESIA_REMOVAL_GRACE", "60s"),
        ("ERLKUBE_AGENT_DRAIN_GRACE", "1s"),
    ];
    let agents: BTreeMap<u32, AgentProc> = pods
        .iter()
        .map(|i| (*i, spawn_agent(&bed, *i, &long)))
        .collect();
    let dump = || dump_all(&agents);
    let erl = |i: u32| bed.pod(i).beam().clone();
    let name = |i: u32| bed.pod(i).node_name.clone();
    for a in agents.values() {
        wait_for("every agent ready", dump, || ready(a)).await;
    }
    let (stays, leaves) = (pods[1], pods[2]);
    assert_eq!(
        eval(
            &erl(leaves),
            "mnesia:transaction(fun() -> mnesia:write({cache, written_by_the_leaver, 1}) end)"
        )
        .await,
        "{atomic,ok}"
    );

    // GET /drain first: the pod is going.
    let started = Instant::now();
    let (code, body) = common::http_drain_async(agents[&leaves].http)
        .await
        .expect("GET /drain answered");
    assert_eq!(code, 200, "{body}");
    let answered = started.elapsed();
    let rest: BTreeSet<String> = [pods[0], stays].iter().map(|i| name(*i)).collect();
    let want = atom_list(&rest);
    for i in [pods[0], stays] {
        let e = erl(i);
        wait_for("the others' schema to drop the drained node", dump, || {
            let e = e.clone();
            let want = want.clone();
            async move {
                e.eval("lists:sort(mnesia:system_info(db_nodes))", EVAL)
                    .await
                    .is_ok_and(|v| v == want)
            }
        })
        .await;
        assert_eq!(
            eval(&e, "lists:sort(mnesia:table_info(cache, ram_copies))").await,
            want
        );
        assert_eq!(
            eval(&e, "mnesia:dirty_read(cache, written_by_the_leaver)").await,
            "[{cache,written_by_the_leaver,1}]",
            "the drained node's writes stay readable on {}",
            e.name()
        );
    }
    eprintln!(
        "GET /drain answered {answered:?} after the request; the others' db_nodes without the drained node {:?} after it (mnesia.removal_grace 60s)",
        started.elapsed()
    );
    let leaver = &agents[&leaves];
    assert!(
        leaver.logged("leave: stopped Mnesia on the node"),
        "{}",
        dump()
    );
    assert!(
        leaver.logged("leave: removed the node from the Mnesia schema"),
        "{}",
        dump()
    );
    assert_eq!(
        eval(&erl(leaves), "mnesia:system_info(is_running)").await,
        "no"
    );
    assert!(
        bed.pod(leaves).published,
        "the drained pod is still listed in DNS: the peers' removal rule had no evidence"
    );
    assert!(
        !agents[&pods[0]].logged("removed a member gone for good"),
        "{}",
        dump()
    );
    assert_eq!(
        metric(leaver, "erlkube_mnesia_left_schema_total").await,
        1.0
    );
    let (_, cluster) = get(leaver.http, "/cluster").await.unwrap();
    assert!(cluster.contains("\"phase\":\"left\""), "{cluster}");
    let (_, text) = get(leaver.http, "/metrics").await.unwrap();
    promtool_check("the agent's /metrics with [mnesia]", &text);

    // Then SIGTERM to another agent alone (the node staying): it stays a
    // schema member.
    agents[&stays].signal(15);
    wait_for("the signalled agent to finish its drain", dump, || async {
        agents[&stays].logged("agent stopped")
    })
    .await;
    assert!(agents[&stays].logged("drain over: disconnected the node from its peers"));
    assert!(
        !agents[&stays].logged("leave: stopped Mnesia"),
        "{}",
        dump()
    );
    assert_eq!(
        eval(&erl(stays), "mnesia:system_info(is_running)").await,
        "yes",
        "a drain by the signal alone leaves Mnesia running"
    );
    assert_eq!(
        eval(&erl(pods[0]), "lists:sort(mnesia:system_info(db_nodes))").await,
        atom_list(&rest),
        "a drain by the signal alone keeps the node in the schema"
    );
}

/// docs/mnesia.md's TOML and environment examples pass `erlkube agent
/// --check`, which lists the `[mnesia]` keys; a bad value names its key.
#[test]
fn the_mnesia_doc_examples_check_and_bad_values_name_the_key() {
    let path = format!("{}/../../docs/mnesia.md", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let toml = erlkube_testkit::docs::code_blocks(&text, "toml");
    assert_eq!(toml.len(), 1, "one TOML example");
    let dir = std::env::temp_dir().join(erlkube_testkit::unique_name("mnesia_doc"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("agent.toml");
    std::fs::write(&file, &toml[0]).unwrap();
    let base = [
        ("RELEASE_NODE", "myapp@10.4.2.17"),
        ("RELEASE_COOKIE", "c"),
        ("ERLKUBE_DISCOVERY_STRATEGY", "static"),
        ("ERLKUBE_DISCOVERY_STATIC_NODES", "myapp@10.4.2.18"),
    ];
    let (code, out, err) = common::outcome(common::run_clean(
        &["agent", "--check", "--config", file.to_str().unwrap()],
        &base,
    ));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("mnesia.tables") && out.contains("sessions:bag:id/user/at"),
        "{out}"
    );
    let sh = erlkube_testkit::docs::code_blocks(&text, "sh");
    let mut env: Vec<(&str, &str)> = base.to_vec();
    for line in sh[0].lines() {
        if let Some((k, v)) = line.split_once('=') {
            env.push((k.trim(), v.trim()));
        }
    }
    let (code, out, err) = common::outcome(common::run_clean(&["agent", "--check"], &env));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("env ERLKUBE_MNESIA_TABLES"), "{out}");
    env.push(("ERLKUBE_MNESIA_PARTITION_POLICY", "heal"));
    let (code, _, err) = common::outcome(common::run_clean(&["agent", "--check"], &env));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("mnesia.partition_policy: must be restart_minority or log"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
