//! A new pod's node joining, and a pod lost silently (a program:
//! `cargo bench -p erlkube --bench fast_join`; needs root and erl, like
//! the test bed). Issue 20, item 6.
//!
//! Each trial is one netns bed of four pods, plain `erl -name` nodes
//! (OTP 25, `-connect_all false`, `net_ticktime` 60 s so that the BEAMs'
//! own tick never drops a lost pod within the measurement), dnsmasq as
//! cluster DNS. Two variants per trial, each on a fresh bed:
//!
//! - *agent*: the real `erlkube agent` beside every node (defaults: 1 s
//!   discovery interval, 1 s check interval, 5 s `removal_grace`,
//!   `removal_probe` on, `register_poll_interval` 10 ms);
//! - *anchor*: a libcluster `Kubernetes.DNS`-like poller written in Erlang
//!   inside every node (libcluster itself is not fetched here): every 5 s
//!   it resolves the Service, `net_kernel:connect_node/1`s every answer
//!   and `erlang:disconnect_node/1`s the nodes it connected before that
//!   are no longer in the answer; its first round runs at boot (as
//!   libcluster's does), the peers' pollers at a random phase.
//!
//! Measured:
//! - (a) join: the fourth pod's node is started (its agent already runs
//!   and has resolved the Service); from the moment its name is
//!   registered with the pod's epmd (polled every 1 ms from the bench) to
//!   the moment every other node has it (nodeup time recorded inside each
//!   peer by a `net_kernel:monitor_nodes/1` subscriber, `os:system_time`);
//! - (b) removal: pod 3 is cut off (its veth down: no RST, no FIN) and its
//!   record removed in one DNS update; from then to the nodedown on every
//!   remaining peer. In the agent variant pod 4's record is removed at the
//!   same moment and its agent stopped while its node keeps answering:
//!   its removal time shows it keeps `removal_grace`.
//!
//! Env: `FAST_JOIN_TRIALS` (default 3); `FAST_JOIN_EPMD=erlkube` runs
//! erlkube's port mapper (`erlkube-epmd`) in every pod of both variants
//! instead of OTP's `epmd`: the agent then learns of the registration
//! from its WATCH connection instead of its 10 ms poll;
//! `FAST_JOIN_WATCH=false` turns the agents' WATCH off
//! (`agent.epmd_watch`), to measure the poll on the same port mapper.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use erlkube_testbed::harness::{agent_command, is_full_mesh, random_below};
use erlkube_testbed::process::Guard;
use erlkube_testbed::{Bed, BedConfig, ErlSpec, Naming, PodErl};

const POLL: Duration = Duration::from_secs(5);
const LIMIT: Duration = Duration::from_secs(60);

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn spawn_agent(bed: &Bed, index: u32, log: Option<std::fs::File>) -> Guard {
    let mut cmd = agent_command(bed, index, env!("CARGO_BIN_EXE_erlkube"), "0.0.0.0:9568");
    if std::env::var("FAST_JOIN_WATCH").is_ok_and(|v| v == "false") {
        cmd.env("ERLKUBE_AGENT_EPMD_WATCH", "false");
    }
    cmd.env("RUST_LOG", if log.is_some() { "debug" } else { "warn" })
        .stderr(log.map_or_else(Stdio::null, Stdio::from));
    Guard::spawn(&mut cmd).expect("spawn erlkube agent")
}

/// The anchor: libcluster's Kubernetes.DNS loop inside the node.
fn poller_expr(bed: &Bed, at_once: bool) -> String {
    let dns = bed.dns_addr();
    let std::net::IpAddr::V4(ip) = dns.ip() else {
        unreachable!()
    };
    let [a, b, c, d] = ip.octets();
    format!(
        "Poll = fun Loop(Last) -> \
            persistent_term:put(fj_round, os:system_time(microsecond)), \
            New = [list_to_atom(\"{base}@\" ++ inet:ntoa(Ip)) || Ip <- inet_res:lookup(\"{svc}\", in, a, [{{nameservers, [{{{{{a},{b},{c},{d}}}, {port}}}]}}, {{timeout, 1000}}])] -- [node()], \
            [erlang:disconnect_node(N) || N <- Last -- New], \
            persistent_term:put(fj_dns, os:system_time(microsecond)), \
            [net_kernel:connect_node(N) || N <- New], \
            persistent_term:put(fj_connected, os:system_time(microsecond)), \
            timer:sleep({ms}), Loop(New) end, \
        register(fj_poller, spawn(fun() -> timer:sleep({phase}), Poll([]) end)), ok",
        svc = bed.service_fqdn(),
        port = dns.port(),
        base = bed.config().basename,
        ms = POLL.as_millis(),
        phase = if at_once {
            0
        } else {
            random_below(POLL).as_millis() as u64
        },
    )
}

/// Records, inside the node, when each nodeup and nodedown arrived.
const RECORDER: &str = "spawn(fun() -> net_kernel:monitor_nodes(true), \
    L = fun Loop() -> receive \
        {nodeup, N} -> persistent_term:put({fj_up, N}, os:system_time(microsecond)); \
        {nodedown, N} -> persistent_term:put({fj_down, N}, os:system_time(microsecond)) \
    end, Loop() end, L() end), ok";

async fn recorded(erl: &PodErl, what: &str, node: &str) -> Option<i64> {
    let v = erl
        .eval(
            &format!("persistent_term:get({{{what}, '{node}'}}, 0)"),
            Duration::from_secs(10),
        )
        .await
        .ok()?;
    v.trim().parse::<i64>().ok().filter(|t| *t > 0)
}

fn spec(bed: &Bed, index: u32) -> ErlSpec {
    let c = bed.config();
    ErlSpec {
        name: bed.pod(index).node_name.clone(),
        cookie: c.cookie.clone(),
        epmd_port: c.epmd_port,
        dist_port: c.dist_port,
        net_ticktime: c.net_ticktime,
        inetrc: None,
        ipv6: false,
    }
}

/// Polls the pod's epmd every 1 ms; the wall-clock time (µs) at which
/// `alive` was first registered.
fn watch_registration(bed: &Bed, index: u32) -> tokio::task::JoinHandle<i64> {
    let host = bed.pod(index).ipv4.to_string();
    let port = bed.config().epmd_port;
    let name = bed.pod(index).node_name.clone();
    let alive = name.split('@').next().unwrap().to_owned();
    tokio::spawn(async move {
        loop {
            if erlkube_node::epmd::port_please(&host, port, &alive, Duration::from_millis(200))
                .await
                .is_ok()
            {
                return now_us();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
}

#[derive(Default, Debug)]
struct Trial {
    /// Registration → every peer has the node, ms.
    join: f64,
    /// Cut + record removed → every remaining peer dropped it, ms
    /// (`None`: one did not within [`LIMIT`]).
    lost: Option<f64>,
    /// Record removed, node answering → dropped (agent only), ms.
    answering: Option<f64>,
}

/// The pods' port mapper (`FAST_JOIN_EPMD`).
fn epmd_program() -> String {
    match std::env::var("FAST_JOIN_EPMD").as_deref() {
        Ok("erlkube") => env!("CARGO_BIN_EXE_erlkube-epmd").to_owned(),
        Ok("otp") | Err(_) => "epmd".to_owned(),
        Ok(other) => panic!("FAST_JOIN_EPMD: otp or erlkube, not {other:?}"),
    }
}

async fn trial(agent: bool) -> Trial {
    let mut bed = Bed::new(BedConfig {
        naming: Naming::Ipv4,
        net_ticktime: 60,
        epmd_program: epmd_program(),
        ..BedConfig::default()
    })
    .expect("bed");
    let pods = bed.add_pods(4).expect("pods");
    let (old, new) = (&pods[..3], pods[3]);
    let new_name = bed.pod(new).node_name.clone();
    bed.pod(new).erl.as_ref().unwrap().kill();
    for i in old {
        bed.pod(*i)
            .erl
            .as_ref()
            .unwrap()
            .eval(RECORDER, Duration::from_secs(10))
            .await
            .expect("recorder");
    }
    let mut agents = BTreeMap::new();
    if agent {
        for i in &pods {
            // FAST_JOIN_AGENT_LOG=<file>: the new pod's agent logs there
            // at debug level (where its join time goes).
            let log = std::env::var_os("FAST_JOIN_AGENT_LOG")
                .filter(|_| *i == new)
                .map(|f| std::fs::File::create(f).expect("agent log file"));
            agents.insert(*i, spawn_agent(&bed, *i, log));
        }
    } else {
        for i in old {
            let e = poller_expr(&bed, false);
            bed.pod(*i)
                .erl
                .as_ref()
                .unwrap()
                .eval(&e, Duration::from_secs(10))
                .await
                .expect("poller");
        }
    }
    let t = Instant::now();
    while !is_full_mesh(&bed, old).await {
        assert!(t.elapsed() < LIMIT, "no mesh of the first three pods");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The new pod's agent has long answered its first discovery round
    // (1 s interval, first round at start).
    tokio::time::sleep(Duration::from_secs(2)).await;
    // (a) the node starts.
    let reg = watch_registration(&bed, new);
    let ns = bed.pod(new).netns.clone();
    let sp = spec(&bed, new);
    let mut rt = bed.config().erl.clone();
    if !agent {
        // The anchor's poller starts with the node's boot, as libcluster
        // starts with the release's applications.
        rt.args
            .extend(["-eval".to_owned(), poller_expr(&bed, true)]);
    }
    let erl = tokio::task::spawn_blocking(move || PodErl::start_with(&ns, &sp, &rt))
        .await
        .unwrap()
        .expect("start the new node");
    let t_reg = tokio::time::timeout(LIMIT, reg)
        .await
        .expect("registration")
        .unwrap();
    let mut ups = Vec::new();
    for i in old {
        let e = bed.pod(*i).erl.clone().unwrap();
        let t = Instant::now();
        loop {
            if let Some(u) = recorded(&e, "fj_up", &new_name).await {
                ups.push(u);
                break;
            }
            assert!(t.elapsed() < LIMIT, "pod {i} never saw the new node");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let join = (*ups.iter().max().unwrap() - t_reg) as f64 / 1000.0;
    if !agent {
        // Where the anchor's join went: the new node's boot after its
        // registration, its first round's DNS lookup, its connections.
        let mut at = Vec::new();
        for k in ["fj_round", "fj_dns", "fj_connected"] {
            let v = erl
                .eval(
                    &format!("persistent_term:get({k}, 0)"),
                    Duration::from_secs(10),
                )
                .await
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(0);
            at.push((v - t_reg) as f64 / 1000.0);
        }
        println!(
            "  anchor: first round at {:.1} ms after the registration, DNS answered at {:.1}, connected at {:.1}",
            at[0], at[1], at[2]
        );
    }
    // (b) removal.
    let (keep, lost) = (&pods[..2], pods[2]);
    let lost_name = bed.pod(lost).node_name.clone();
    // Every node has the new one before anything is cut.
    let t = Instant::now();
    loop {
        let mut all = true;
        for i in keep {
            let v = bed.pod(*i).nodes().await.unwrap_or_default();
            all &= v.contains(&new_name) && v.contains(&lost_name);
        }
        if all {
            break;
        }
        assert!(t.elapsed() < LIMIT, "no mesh before the cut");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unlisted: &[u32] = if agent {
        agents.remove(&new);
        &[lost, new]
    } else {
        &[lost]
    };
    let t0 = now_us();
    bed.partition(lost).unwrap();
    bed.set_published(unlisted, false).unwrap();
    let mut downs = Vec::new();
    let mut missed = false;
    let mut answering = Vec::new();
    for i in keep {
        let e = bed.pod(*i).erl.clone().unwrap();
        let t = Instant::now();
        loop {
            if let Some(d) = recorded(&e, "fj_down", &lost_name).await {
                downs.push(d);
                break;
            }
            if t.elapsed() > LIMIT {
                let why = e
                    .eval(
                        "{nodes(), catch erlang:process_info(whereis(fj_poller), [current_stacktrace, status])}",
                        Duration::from_secs(10),
                    )
                    .await;
                println!("pod {i} did not drop the lost pod within {LIMIT:?}: {why:?}");
                missed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if agent {
            let t = Instant::now();
            loop {
                if let Some(d) = recorded(&e, "fj_down", &new_name).await {
                    answering.push(d);
                    break;
                }
                assert!(
                    t.elapsed() < LIMIT,
                    "pod {i} never dropped the unlisted pod"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    drop(agents);
    drop(erl);
    Trial {
        join,
        lost: (!missed).then(|| (*downs.iter().max().unwrap() - t0) as f64 / 1000.0),
        answering: answering.iter().max().map(|d| (*d - t0) as f64 / 1000.0),
    }
}

fn range(v: &[f64]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let med = s[s.len() / 2];
    format!(
        "min {:.0} / median {:.0} / max {:.0} ms",
        s[0],
        med,
        s[s.len() - 1]
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("fast_join: bench");
        return;
    }
    erlkube_testbed::require_root();
    let trials = env_num("FAST_JOIN_TRIALS", 3) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load().trim());
    println!(
        "port mapper in every pod: {}",
        std::env::var("FAST_JOIN_EPMD").unwrap_or_else(|_| "otp".into())
    );
    println!(
        "agents' WATCH (agent.epmd_watch): {}",
        std::env::var("FAST_JOIN_WATCH").unwrap_or_else(|_| "true".into())
    );
    rt.block_on(async {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for t in 0..trials {
            let x = trial(true).await;
            println!(
                "trial {t}: agent  join {:.1} ms, lost {:?} ms, answering {:.0} ms",
                x.join,
                x.lost,
                x.answering.unwrap_or(0.0)
            );
            a.push(x);
            let y = trial(false).await;
            println!(
                "trial {t}: anchor join {:.1} ms, lost {:?} ms",
                y.join, y.lost
            );
            b.push(y);
        }
        let col = |v: &[Trial], f: fn(&Trial) -> f64| v.iter().map(f).collect::<Vec<f64>>();
        let (aj, bj) = (col(&a, |t| t.join), col(&b, |t| t.join));
        let lost = |v: &[Trial]| v.iter().filter_map(|t| t.lost).collect::<Vec<f64>>();
        let (al, bl) = (lost(&a), lost(&b));
        println!(
            "trials where a peer kept the lost pod past {LIMIT:?}: agent {}, anchor {}",
            a.len() - al.len(),
            b.len() - bl.len()
        );
        let ans = col(&a, |t| t.answering.unwrap_or(0.0));
        println!("\n{trials} trials per variant, 4 pods");
        println!("(a) registered -> every peer has it: agent {}", range(&aj));
        println!("                                    anchor {}", range(&bj));
        println!("(b) lost silently -> every peer dropped it: agent {}", range(&al));
        println!("                                           anchor {}", range(&bl));
        println!("    record removed, node answering -> dropped: agent {}", range(&ans));
        let max = |v: &[f64]| v.iter().cloned().fold(f64::MIN, f64::max);
        let med = |v: &[f64]| {
            if v.is_empty() {
                return f64::NAN;
            }
            let mut s = v.to_vec();
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        };
        println!(
            "ratios anchor/agent (median): join {:.2}, lost {:.2}",
            med(&bj) / med(&aj),
            med(&bl) / med(&al)
        );
        println!(
            "target (a) every trial <= 50 ms: {}",
            if max(&aj) <= 50.0 { "met" } else { "NOT met" }
        );
        println!(
            "target (b) every trial <= 1 discovery round + 1 check interval (2 s) and below the anchor's median: {}",
            if max(&al) <= 2000.0 && max(&al) < med(&bl) { "met" } else { "NOT met" }
        );
        println!(
            "answering node keeps the grace (dropped >= 5 s after its record went): {}",
            if ans.iter().all(|d| *d >= 5000.0) { "yes" } else { "NO" }
        );
    });
    println!("load average at end: {}", load().trim());
}
