//! The agent in the netns test bed: every pod runs a plain `erl -name …`
//! node (no clustering code; `-connect_all false`) and the real
//! `erlkube agent` binary inside the pod's namespace. Membership is checked
//! from the BEAM side (`nodes()`), readiness and metrics over HTTP from the
//! test process (pod addresses on the bed's bridge).
//!
//! Needs root and erl (CI has both); fails otherwise. One scenario at a
//! time (a lock).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use erlkube_testbed::harness::{dns_env, is_full_mesh, membership, wait_full_mesh};
use erlkube_testbed::process::Guard;
use erlkube_testbed::{Bed, BedConfig, ErlRuntime, ErlSpec, Naming, PodErl};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Liveness bound (not a performance assertion).
const FORM: Duration = Duration::from_secs(60);
const HTTP_PORT: u16 = 9568;

fn bed(naming: Naming) -> Bed {
    Bed::new(BedConfig {
        naming,
        ..BedConfig::default()
    })
    .expect("test bed")
}

/// A bed whose nodes run with OTP's default `-connect_all true`, as a
/// release does (`global` syncs names across the cluster).
fn global_bed() -> Bed {
    Bed::new(BedConfig {
        erl: ErlRuntime {
            connect_all: true,
            ..ErlRuntime::default()
        },
        ..BedConfig::default()
    })
    .expect("test bed")
}

/// An `erlkube agent` process inside a pod; killed on drop.
struct AgentProc {
    guard: Guard,
    log: Arc<Mutex<Vec<String>>>,
    http: SocketAddr,
    /// `/etc/netns/<pod>/` made for the pod's resolver (removed on drop).
    etc: Option<std::path::PathBuf>,
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.guard.kill();
        if let Some(d) = &self.etc {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl AgentProc {
    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// True while the process runs (not exited, not a zombie).
    fn guard_running(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.guard.id()))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
            .unwrap_or(false)
    }

    fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }
}

fn agent_env(bed: &Bed, index: u32) -> Vec<(String, String)> {
    let c = bed.config();
    let pod = bed.pod(index);
    let v6 = c.naming == Naming::Ipv6;
    let strategy = if c.naming == Naming::Hostname {
        "dns_srv"
    } else {
        "dns_a"
    };
    [
        ("RELEASE_NODE", pod.node_name.clone()),
        ("RELEASE_COOKIE", c.cookie.clone()),
        ("ERL_EPMD_PORT", c.epmd_port.to_string()),
        (
            "ERLKUBE_AGENT_HTTP",
            if v6 {
                format!("[::]:{HTTP_PORT}")
            } else {
                format!("0.0.0.0:{HTTP_PORT}")
            },
        ),
        ("ERLKUBE_AGENT_WAIT_INTERVAL", "200ms".into()),
        ("ERLKUBE_DISCOVERY_STRATEGY", strategy.into()),
        ("ERLKUBE_DISCOVERY_INTERVAL", "500ms".into()),
        ("ERLKUBE_DISCOVERY_TIMEOUT", "1s".into()),
        ("ERLKUBE_FORMATION_BACKOFF_MAX", "2s".into()),
        ("ERLKUBE_AGENT_NET_TICKTIME", format!("{}s", c.net_ticktime)),
        ("ERLKUBE_FORMATION_REMOVAL_GRACE", "1s".into()),
        ("ERLKUBE_FORMATION_CHECK_INTERVAL", "500ms".into()),
        ("NO_COLOR", "1".into()),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .chain(dns_env(bed))
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn spawn_agent(bed: &Bed, index: u32, overrides: &[(&str, &str)]) -> AgentProc {
    let mut env: BTreeMap<String, String> = agent_env(bed, index).into_iter().collect();
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    // Host-name nodes: the agent resolves its node's name with the system
    // resolver, so the pod gets the bed's DNS as its resolv.conf (what
    // `ip netns exec` bind-mounts from /etc/netns/<ns>/), as a pod's
    // kubelet-written resolv.conf would point at the cluster DNS.
    let etc = (bed.config().naming == Naming::Hostname).then(|| {
        let d = std::path::PathBuf::from("/etc/netns").join(&bed.pod(index).netns);
        std::fs::create_dir_all(&d).expect("/etc/netns dir");
        std::fs::write(
            d.join("resolv.conf"),
            format!("nameserver {}\n", bed.dns_addr().ip()),
        )
        .expect("resolv.conf");
        // The bed's DNS also serves AAAA records for the pods while the
        // nodes listen on IPv4 only: the pod's own name maps to its IPv4
        // address, as in a single-stack cluster.
        let pod = bed.pod(index);
        std::fs::write(
            d.join("hosts"),
            format!("127.0.0.1 localhost\n{} {}\n", pod.ipv4, pod.hostname),
        )
        .expect("hosts");
        d
    });
    let mut cmd = bed.exec(index, env!("CARGO_BIN_EXE_erlkube"));
    cmd.arg("agent")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut guard = Guard::spawn(&mut cmd).expect("spawn erlkube agent");
    let stderr = guard.child_mut().stderr.take().expect("piped");
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stderr);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                    l.lock().unwrap().push(line);
                }
            }
        }
    });
    let pod = bed.pod(index);
    let ip = if bed.config().naming == Naming::Ipv6 {
        std::net::IpAddr::V6(pod.ipv6)
    } else {
        std::net::IpAddr::V4(pod.ipv4)
    };
    AgentProc {
        guard,
        log,
        http: SocketAddr::new(ip, HTTP_PORT),
        etc,
    }
}

mod common;
use common::{http_get, http_get_async as get};

/// Waits until `f` holds (liveness bound `FORM`).
async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < FORM, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A strict parser of the Prometheus text format (0.0.4): every sample
/// line is `name{labels} value`, every metric family has HELP and TYPE
/// before its samples, names are valid, values are numbers, no duplicate
/// series. Returns series → value.
fn parse_prometheus(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut helped: BTreeSet<String> = BTreeSet::new();
    let mut out = BTreeMap::new();
    if !text.ends_with('\n') {
        return Err("exposition must end with a newline".into());
    }
    for (no, line) in text.lines().enumerate() {
        let no = no + 1;
        if line.is_empty() {
            return Err(format!("line {no}: empty line"));
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or("");
            let name = parts.next().unwrap_or("");
            let value = parts.next().unwrap_or("");
            if !valid_name(name) {
                return Err(format!("line {no}: bad metric name {name:?}"));
            }
            match kind {
                "HELP" => {
                    if !helped.insert(name.to_owned()) {
                        return Err(format!("line {no}: second HELP for {name}"));
                    }
                }
                "TYPE" => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&value) {
                        return Err(format!("line {no}: bad type {value:?}"));
                    }
                    if typed.insert(name.to_owned(), value.to_owned()).is_some() {
                        return Err(format!("line {no}: second TYPE for {name}"));
                    }
                }
                _ => return Err(format!("line {no}: unknown comment {kind:?}")),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("line {no}: no value"))?;
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .map_err(|_| format!("line {no}: bad value {v:?}"))?,
        };
        let name = series.split('{').next().unwrap_or("");
        if !valid_name(name) {
            return Err(format!("line {no}: bad series name {name:?}"));
        }
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .ok_or_else(|| format!("line {no}: bad labels {labels:?}"))?;
                for pair in inner.split(',') {
                    let (k, v) = pair
                        .split_once('=')
                        .ok_or_else(|| format!("line {no}: bad label {pair:?}"))?;
                    if !(valid_name(k) && v.starts_with('"') && v.ends_with('"') && v.len() >= 2) {
                        return Err(format!("line {no}: bad label {pair:?}"));
                    }
                }
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        if !typed.contains_key(family) || !helped.contains(family) {
            return Err(format!(
                "line {no}: sample of {family} before its HELP/TYPE"
            ));
        }
        if out.insert(series.to_owned(), v).is_some() {
            return Err(format!("line {no}: duplicate series {series}"));
        }
    }
    Ok(out)
}

async fn metrics(a: &AgentProc) -> BTreeMap<String, f64> {
    let (status, body) = get(a.http, "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200);
    parse_prometheus(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

fn start_agents(bed: &Bed, pods: &[u32], agents: &mut BTreeMap<u32, AgentProc>) {
    for i in pods {
        agents.insert(*i, spawn_agent(bed, *i, &[]));
    }
}

fn dump(agents: &BTreeMap<u32, AgentProc>) -> String {
    agents
        .iter()
        .map(|(i, a)| {
            let wchan = std::fs::read_to_string(format!("/proc/{}/wchan", a.guard.id()))
                .unwrap_or_default();
            let cluster = http_get(a.http, "/cluster")
                .map(|(_, b)| b)
                .unwrap_or_else(|e| format!("(no answer: {e})"));
            let counters = http_get(a.http, "/metrics")
                .map(|(_, b)| {
                    b.lines()
                        .filter(|l| {
                            l.starts_with("erlkube_agent_discovery_") && !l.contains("bucket")
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let cluster = format!("{cluster} {counters}");
            format!(
                "--- agent {i} (running: {}, wchan {wchan}): {cluster}\n{}",
                a.guard_running(),
                a.lines().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn mesh(bed: &Bed, pods: &[u32], agents: &BTreeMap<u32, AgentProc>) {
    if let Err(e) = wait_full_mesh(bed, pods, FORM).await {
        let dns = bed.dns_addr();
        let probe = format!(
            "import socket,struct\nq=b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00'+b''.join(bytes([len(l)])+l.encode() for l in '{}'.split('.'))+b'\\x00\\x00\\x01\\x00\\x01'\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(2);s.sendto(q,('{}',{}));r=s.recv(4096);print(len(r), struct.unpack('>H',r[6:8])[0], r.hex())",
            bed.service_fqdn(),
            dns.ip(),
            dns.port()
        );
        let mut raw = String::new();
        for i in pods {
            let out = bed.exec(*i, "python3").arg("-c").arg(&probe).output();
            raw.push_str(&format!(
                "pod {i}: {:?}\n",
                out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr))
            ));
        }
        panic!("{e}\nraw DNS:\n{raw}\n{}", dump(agents));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_cluster_plain_erl_nodes_and_readyz_waits_for_the_partitioned_peer() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Naming::Ipv4);
    let pods = bed.add_pods(3).unwrap();
    // Pod 3 is cut off before any agent runs: the others discover it in
    // DNS but cannot connect, so the cluster has not formed.
    bed.partition(pods[2]).unwrap();
    let mut agents = BTreeMap::new();
    start_agents(&bed, &pods, &mut agents);
    let a1 = agents[&pods[0]].http;
    wait_for("agent 1 to see 2 discovered peers", || async move {
        matches!(get(a1, "/cluster").await, Ok((200, b)) if b.contains(&"\"discovered\":[\"app@".to_string()) && b.matches("app@").count() >= 3)
    })
    .await;
    wait_for("agent 1 connected to pod 2", || async move {
        matches!(get(a1, "/readyz").await, Ok((503, b)) if b.contains("connected to 1 of 2"))
    })
    .await;
    // Not ready while a discovered peer is unreachable (sampled over 3 s
    // of connect retries).
    for _ in 0..6 {
        let (status, body) = get(a1, "/readyz").await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("connected to 1 of 2"), "{body}");
        let (h, _) = get(a1, "/healthz").await.unwrap();
        assert_eq!(h, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The first attempt to the cut-off peer fails only after
    // formation.connect_timeout; the agent may be ready to be asked sooner.
    let first = &agents[&pods[0]];
    wait_for("a failed connect to the partitioned peer", || async move {
        metrics(first).await["erlkube_agent_connect_failures_total"] >= 1.0
    })
    .await;
    assert!(!is_full_mesh(&bed, &pods).await);
    let before = metrics(&agents[&pods[0]]).await;
    assert_eq!(before["erlkube_agent_ready"], 0.0);
    assert_eq!(before["erlkube_agent_discovered_nodes"], 2.0);
    assert_eq!(before["erlkube_agent_connected_nodes"], 1.0);
    assert!(
        before["erlkube_agent_connect_failures_total"] >= 1.0,
        "{before:?}"
    );
    bed.heal(pods[2]).unwrap();
    mesh(&bed, &pods, &agents).await;
    for i in &pods {
        let a = agents[i].http;
        wait_for("/readyz 200", || async move {
            matches!(get(a, "/readyz").await, Ok((200, _)))
        })
        .await;
        // Ready means formed: checked from the BEAM side.
        let view = membership(&bed).await;
        assert_eq!(view[i].as_ref().unwrap().len(), 2, "{view:?}");
        let m = metrics(&agents[i]).await;
        assert_eq!(m["erlkube_agent_beam_up"], 1.0);
        assert_eq!(m["erlkube_agent_beam_starts_total"], 1.0);
        assert_eq!(m["erlkube_agent_discovered_nodes"], 2.0);
        assert_eq!(m["erlkube_agent_connected_nodes"], 2.0);
        let attempts = m["erlkube_agent_connect_attempts_total"];
        let failures = m["erlkube_agent_connect_failures_total"];
        // Every attempt either failed or made one of the two connections
        // (a peer may also have connected to us first: then fewer).
        assert!(attempts - failures <= 2.0, "{m:?}");
        assert!(m["erlkube_agent_discovery_answers_total"] >= 1.0);
        assert_eq!(
            m["erlkube_agent_discovery_duration_seconds_count"],
            m["erlkube_agent_discovery_answers_total"],
            "{m:?}"
        );
        let (_, cluster) = get(a, "/cluster").await.unwrap();
        for p in &pods {
            assert!(cluster.contains(&bed.pod(*p).node_name), "{cluster}");
        }
        assert!(cluster.contains("\"ready\":true"), "{cluster}");
    }
    // The partitioned pod could not reach DNS: its errors were counted;
    // the others' DNS never failed.
    let m3 = metrics(&agents[&pods[2]]).await;
    assert!(m3["erlkube_agent_discovery_errors_total"] >= 1.0, "{m3:?}");
    let m1 = metrics(&agents[&pods[0]]).await;
    assert_eq!(m1["erlkube_agent_discovery_errors_total"], 0.0);
    assert!(
        m1["erlkube_agent_connect_failures_total"]
            >= before["erlkube_agent_connect_failures_total"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_follow_scale_up_kill_and_scale_down() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Naming::Ipv4);
    let mut agents = BTreeMap::new();
    let first = bed.add_pods(3).unwrap();
    start_agents(&bed, &first, &mut agents);
    mesh(&bed, &first, &agents).await;
    let more = bed.add_pods(3).unwrap();
    start_agents(&bed, &more, &mut agents);
    let all = bed.indexes();
    mesh(&bed, &all, &agents).await;
    // Kill one (a crash) and add a replacement.
    let victim = all[1];
    agents.remove(&victim);
    bed.kill_pod(victim).unwrap();
    let new = bed.add_pods(1).unwrap();
    start_agents(&bed, &new, &mut agents);
    let all = bed.indexes();
    mesh(&bed, &all, &agents).await;
    // Every agent has seen the replacement in DNS (an agent disconnects
    // nodes it has seen leave, not nodes it never knew).
    let want = bed.pod(new[0]).node_name.clone();
    for i in all.iter().filter(|i| **i != new[0]) {
        let a = agents[i].http;
        let want = &want;
        wait_for("every agent to discover the replacement", || async move {
            matches!(get(a, "/cluster").await, Ok((200, b)) if b.split("\"connected\"").next().unwrap_or("").contains(want.as_str()))
        })
        .await;
    }
    // Scale down to 3: the others leave the endpoints while their nodes
    // still run; the survivors' agents disconnect them on that evidence.
    let (keep, gone) = all.split_at(3);
    for i in gone {
        agents.remove(i);
    }
    bed.set_published(gone, false).unwrap();
    mesh(&bed, keep, &agents).await;
    for i in keep {
        // The agent publishes the engine's counters every 250 ms.
        let a = &agents[i];
        wait_for("the removals in the agent's metrics", || async {
            metrics(a).await["erlkube_agent_removed_nodes_total"] >= 3.0
        })
        .await;
        let m = metrics(a).await;
        assert_eq!(m["erlkube_agent_discovered_nodes"], 2.0, "pod {i}: {m:?}");
        assert_eq!(m["erlkube_agent_connected_nodes"], 2.0, "pod {i}: {m:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_ends_in_one_cluster() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Naming::Ipv4);
    let mut agents = BTreeMap::new();
    let pods = bed.add_pods(3).unwrap();
    start_agents(&bed, &pods, &mut agents);
    mesh(&bed, &pods, &agents).await;
    for old in pods {
        let new = bed.add_pods(1).unwrap();
        start_agents(&bed, &new, &mut agents);
        mesh(&bed, &bed.indexes(), &agents).await;
        bed.unpublish(old).unwrap();
        agents.remove(&old);
        bed.kill_pod(old).unwrap();
        mesh(&bed, &bed.indexes(), &agents).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dns_outage_keeps_the_cluster_and_is_logged_without_flooding() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Naming::Ipv4);
    let mut agents = BTreeMap::new();
    let pods = bed.add_pods(3).unwrap();
    start_agents(&bed, &pods, &mut agents);
    mesh(&bed, &pods, &agents).await;
    bed.stop_dns();
    let a = &agents[&pods[0]];
    let errors_at_start = metrics(a).await["erlkube_agent_discovery_errors_total"];
    let lines_at_start = a.lines().len();
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(is_full_mesh(&bed, &pods).await, "the cluster must hold");
    let m = metrics(a).await;
    let failed_rounds = m["erlkube_agent_discovery_errors_total"] - errors_at_start;
    // Rounds every 500 ms, 1 s timeout: several failed rounds ...
    assert!(failed_rounds >= 5.0, "{m:?}");
    // ... logged once, then at a backed-off rate (first line, then 5 s
    // later): far fewer lines than failures.
    let logged: Vec<String> = a.lines()[lines_at_start..]
        .iter()
        .filter(|l| l.contains("discovery"))
        .cloned()
        .collect();
    assert!(
        !logged.is_empty() && (logged.len() as f64) < failed_rounds / 2.0,
        "{failed_rounds} failures, {} lines: {logged:#?}",
        logged.len()
    );
    assert_eq!(m["erlkube_agent_ready"], 1.0, "still formed");
    bed.start_dns().unwrap();
    wait_for("discovery recovered log", || async {
        agents[&pods[0]].count("discovery recovered") == 1
    })
    .await;
    assert!(is_full_mesh(&bed, &pods).await);
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

async fn nodes_of(erl: &PodErl) -> BTreeSet<String> {
    erl.nodes().await.unwrap_or_default().into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_started_before_its_node_waits_and_survives_node_restarts() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Naming::Ipv4);
    let mut agents = BTreeMap::new();
    let pods = bed.add_pods(3).unwrap();
    let late = pods[2];
    let late_ns = bed.pod(late).netns.clone();
    // The late pod's node is not running when its agent starts.
    bed.pod(late).erl.as_ref().expect("erl").kill();
    start_agents(&bed, &pods, &mut agents);
    mesh(&bed, &pods[..2], &agents).await;
    let a = &agents[&late];
    let addr = a.http;
    wait_for("the late agent to report waiting", || async {
        agents[&late].count("waiting for the node") >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = get(addr, "/readyz").await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: the node is not up\n")
    );
    assert_eq!(get(addr, "/healthz").await.unwrap().0, 200);
    // Polled every 200 ms for 2 s+: logged once, not ten times.
    assert_eq!(
        a.count("waiting for the node"),
        1,
        "{}",
        a.lines().join("\n")
    );
    let want = |me: u32| -> BTreeSet<String> {
        pods.iter()
            .filter(|p| **p != me)
            .map(|p| bed.pod(*p).node_name.clone())
            .collect()
    };
    for round in 1..=2u32 {
        let erl = PodErl::start_with(&late_ns, &spec(&bed, late), &bed.config().erl)
            .expect("start the node");
        wait_for("the late node in the cluster", || async {
            nodes_of(&erl).await == want(late)
        })
        .await;
        wait_for("/readyz 200", || async move {
            matches!(get(addr, "/readyz").await, Ok((200, _)))
        })
        .await;
        let m = metrics(&agents[&late]).await;
        assert_eq!(m["erlkube_agent_beam_starts_total"], round as f64);
        assert!(agents[&late].count("the node is up") >= round as usize);
        // Restart: a crash of the node, the agent stays.
        erl.kill();
        drop(erl);
        wait_for("beam_up 0", || async {
            metrics(&agents[&late]).await["erlkube_agent_beam_up"] == 0.0
        })
        .await;
        assert!(agents[&late].guard_running());
    }
}

/// A new pod's node is connected to its peers by its agent as soon as it
/// registers with its port mapper, from the discovery answer the agent
/// resolved before the node was up. Every other path is shut: the late
/// agent's `agent.wait_interval` and every agent's `discovery.interval`
/// are an hour (one discovery round each, at start), and the late pod is
/// not in DNS, so the peers' agents never dial it. Without the
/// registration watch the late node would not be looked for again for an
/// hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_node_is_connected_to_the_known_peers_when_it_registers() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Naming::Ipv4);
    let pods = bed.add_pods(3).unwrap();
    let (old, late) = (&pods[..2], pods[2]);
    let late_ns = bed.pod(late).netns.clone();
    let late_name = bed.pod(late).node_name.clone();
    bed.pod(late).erl.as_ref().expect("erl").kill();
    bed.set_published(&[late], false).unwrap();
    let hour = [("ERLKUBE_DISCOVERY_INTERVAL", "60m")];
    let mut agents = BTreeMap::new();
    for i in old {
        agents.insert(*i, spawn_agent(&bed, *i, &hour));
    }
    mesh(&bed, old, &agents).await;
    agents.insert(
        late,
        spawn_agent(
            &bed,
            late,
            &[
                ("ERLKUBE_DISCOVERY_INTERVAL", "60m"),
                ("ERLKUBE_AGENT_WAIT_INTERVAL", "60m"),
            ],
        ),
    );
    wait_for(
        "the late agent's one discovery answer and its failed look",
        || async {
            agents[&late].count("waiting for the node") == 1
                && metrics(&agents[&late]).await["erlkube_agent_discovery_answers_total"] == 1.0
        },
    )
    .await;
    assert_eq!(
        metrics(&agents[&late]).await["erlkube_agent_beam_registrations_seen_total"],
        0.0
    );
    let erl =
        PodErl::start_with(&late_ns, &spec(&bed, late), &bed.config().erl).expect("start the node");
    for i in old {
        wait_for("an old pod connected to the late node", || async {
            pod_nodes(&bed, *i).await.contains(&late_name)
        })
        .await;
    }
    let m = metrics(&agents[&late]).await;
    assert_eq!(
        m["erlkube_agent_beam_registrations_seen_total"],
        1.0,
        "{}",
        dump(&agents)
    );
    assert_eq!(m["erlkube_agent_beam_starts_total"], 1.0);
    // No second discovery round anywhere: the peers came from the answer
    // resolved while the node was absent.
    for a in agents.values() {
        assert_eq!(
            metrics(a).await["erlkube_agent_discovery_answers_total"],
            1.0,
            "{}",
            dump(&agents)
        );
    }
    let want: BTreeSet<String> = old.iter().map(|i| bed.pod(*i).node_name.clone()).collect();
    wait_for("the late node's nodes() = the old pods", || async {
        nodes_of(&erl).await == want
    })
    .await;
}

/// A pod lost silently (cut off the network, its record removed) is dropped
/// by its peers without waiting out `formation.removal_grace`: its
/// distribution port does not answer. A pod whose record is removed at the
/// same moment while its node still answers keeps the grace: it is still
/// connected when the lost one is gone, and it is removed by the grace,
/// never by the probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_absent_node_is_dropped_before_the_grace_an_answering_one_keeps_it() {
    let _g = SERIAL.lock().await;
    // OTP's default tick, so that the BEAMs' own tick (60 s) is not what
    // drops the lost pod.
    let mut bed = Bed::new(BedConfig {
        naming: Naming::Ipv4,
        net_ticktime: 60,
        ..BedConfig::default()
    })
    .expect("test bed");
    let pods = bed.add_pods(4).unwrap();
    let mut agents = BTreeMap::new();
    for i in &pods {
        agents.insert(
            *i,
            spawn_agent(&bed, *i, &[("ERLKUBE_FORMATION_REMOVAL_GRACE", "30s")]),
        );
    }
    mesh(&bed, &pods, &agents).await;
    let (keep, lost, unlisted) = (&pods[..2], pods[2], pods[3]);
    let lost_name = bed.pod(lost).node_name.clone();
    let unlisted_name = bed.pod(unlisted).node_name.clone();
    // The unlisted pod's agent stops (a pod leaving the Service: nothing
    // on it dials the others back); its node keeps running and answering.
    agents.remove(&unlisted);
    // One DNS update drops both records; the lost pod's traffic is
    // dropped from then on (no RST, no FIN: as when its host vanishes).
    bed.partition(lost).unwrap();
    bed.set_published(&[lost, unlisted], false).unwrap();
    for i in keep {
        wait_for("the lost pod dropped", || async {
            !pod_nodes(&bed, *i).await.contains(&lost_name)
        })
        .await;
        let now = pod_nodes(&bed, *i).await;
        assert!(
            now.contains(&unlisted_name),
            "pod {i}: the answering pod, absent as long as the lost one, must keep the grace: {now:?}\n{}",
            dump(&agents)
        );
        let a = &agents[i];
        let probed = |name: &str| {
            a.lines()
                .iter()
                .filter(|l| l.contains("removed without waiting for the grace") && l.contains(name))
                .count()
        };
        assert_eq!(probed(&lost_name), 1, "{}", a.lines().join("\n"));
    }
    // The answering pod goes when its grace is over, by the grace.
    for i in keep {
        wait_for("the unlisted pod removed after the grace", || async {
            !pod_nodes(&bed, *i).await.contains(&unlisted_name)
        })
        .await;
        let lines = agents[i].lines();
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("removed without waiting for the grace")
                    && l.contains(&unlisted_name)),
            "{}",
            lines.join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_cookie_is_named_once_and_retried_quietly() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Naming::Ipv4);
    let pods = bed.add_pods(1).unwrap();
    let a = spawn_agent(&bed, pods[0], &[("RELEASE_COOKIE", "not_the_cookie")]);
    let addr = a.http;
    wait_for("the cookie error", || async {
        a.count("rejected the cookie") >= 1
    })
    .await;
    // Retried every 200 ms: wait until the node has refused 10 attempts
    // (counted by the agent), then there is still one line (the next one
    // is due 5 s after the first, 25 attempts later).
    wait_for("10 attempts refused for the cookie", || async {
        metrics(&a).await["erlkube_agent_beam_cookie_rejections_total"] >= 10.0
    })
    .await;
    assert_eq!(
        a.count("rejected the cookie"),
        1,
        "{}",
        a.lines().join("\n")
    );
    let (status, _) = get(addr, "/readyz").await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(get(addr, "/healthz").await.unwrap().0, 200);
    assert!(a.guard_running(), "the agent keeps running and retrying");
    let line = a
        .lines()
        .into_iter()
        .find(|l| l.contains("rejected the cookie"))
        .unwrap();
    assert!(
        !line.contains("erlkube_testbed"),
        "no cookie in logs: {line}"
    );
    assert!(
        !line.contains("not_the_cookie"),
        "no cookie in logs: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ipv6_and_srv_named_pods_form_one_cluster() {
    let _g = SERIAL.lock().await;
    for naming in [Naming::Ipv6, Naming::Hostname] {
        let mut bed = bed(naming);
        let mut agents = BTreeMap::new();
        let pods = bed.add_pods(3).unwrap();
        start_agents(&bed, &pods, &mut agents);
        mesh(&bed, &pods, &agents).await;
        let a = agents[&pods[0]].http;
        wait_for("/readyz 200", || async move {
            matches!(get(a, "/readyz").await, Ok((200, _)))
        })
        .await;
    }
}

/// `nodes()` of pod `i`'s node (empty when it cannot be read).
async fn pod_nodes(bed: &Bed, i: u32) -> BTreeSet<String> {
    nodes_of(bed.pod(i).beam()).await
}

/// What the cold-start test saw.
#[derive(Default)]
struct Observed {
    count: u32,
    /// Pods seen ready.
    ready: BTreeSet<u32>,
    /// Pods seen answering 503 with "N of 3 members".
    short: BTreeSet<u32>,
}

/// One observation of every pod: `/readyz`, then `nodes()`. Connections
/// only grow in the cold-start test, so a `nodes()` read after a 200 that
/// holds fewer than 2 peers proves the 200 came too early.
async fn observe(bed: &Bed, agents: &BTreeMap<u32, AgentProc>, pods: &[u32], w: &mut Observed) {
    for i in pods {
        let Ok((status, body)) = get(agents[i].http, "/readyz").await else {
            continue;
        };
        let peers = pod_nodes(bed, *i).await;
        w.count += 1;
        if status == 200 {
            assert!(
                peers.len() >= 2,
                "pod {i}: /readyz 200 ({body:?}) while connected to {peers:?}"
            );
            w.ready.insert(*i);
        } else if body.contains(" of 3 members connected") {
            w.short.insert(*i);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_start_with_quorum_3_no_pod_is_ready_before_it_is_connected_to_2_others() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Naming::Ipv4);
    let pods = bed.add_pods(5).unwrap();
    // Three of the five are unreachable at first, so the two others can
    // reach only each other (2 members: short of the quorum) for a while;
    // then they come back one at a time.
    for p in &pods[2..] {
        bed.partition(*p).unwrap();
    }
    let mut agents = BTreeMap::new();
    for i in &pods {
        agents.insert(
            *i,
            spawn_agent(&bed, *i, &[("ERLKUBE_FORMATION_QUORUM", "3")]),
        );
    }
    let name = |i: u32| bed.pod(i).node_name.clone();
    let mut w = Observed::default();
    // Pods 1 and 2 connect to each other and fail to reach the others.
    wait_for("pods 1 and 2 connected", || async {
        pod_nodes(&bed, pods[0]).await.contains(&name(pods[1]))
    })
    .await;
    for i in &pods[..2] {
        let a = &agents[i];
        wait_for("a failed connect to a cut-off peer", || async {
            metrics(a).await["erlkube_agent_connect_failures_total"] >= 1.0
        })
        .await;
    }
    for _ in 0..10 {
        observe(&bed, &agents, &pods, &mut w).await;
    }
    assert!(w.ready.is_empty(), "{:?} ready with 2 members", w.ready);
    assert!(
        w.short.contains(&pods[0]) && w.short.contains(&pods[1]),
        "the 503 says how many of how many: {:?}",
        w.short
    );
    // Back one at a time; every pod becomes ready once it has 2 peers.
    for p in &pods[2..] {
        bed.heal(*p).unwrap();
        let start = tokio::time::Instant::now();
        loop {
            observe(&bed, &agents, &pods, &mut w).await;
            let healed = pods.iter().take_while(|q| *q <= p).count();
            if healed >= 3 && pods[..healed].iter().all(|q| w.ready.contains(q)) {
                break;
            }
            assert!(
                start.elapsed() < FORM,
                "not ready after heal: {:?}\n{}",
                w.ready,
                dump(&agents)
            );
        }
    }
    mesh(&bed, &pods, &agents).await;
    observe(&bed, &agents, &pods, &mut w).await;
    println!(
        "cold start, quorum 3 of 5: {} observations of (/readyz, nodes()), no 200 before 2 peers",
        w.count
    );
    let a1 = agents[&pods[0]].http;
    wait_for("/cluster to show the quorum met by 5 members", || async move {
        matches!(get(a1, "/cluster").await, Ok((200, b)) if b.contains("\"quorum\":{\"rule\":\"3\",\"members\":5,\"needed\":3,\"met\":true}"))
    })
    .await;
}

/// Drains pod `i` by `how` (`"GET /drain"` or `"SIGTERM"`) with the others
/// (`peers`) watching: `/readyz` turns 503 before the drain is over, the
/// node answers `net_adm:ping` and stays in its peers' `nodes()` during the
/// grace, and after the drain every peer has dropped it and cannot dial it
/// back (still listed in DNS). Returns (drain start → /readyz 503, drain
/// over → last peer's nodedown observed).
async fn drain_and_check(
    bed: &Bed,
    agents: &mut BTreeMap<u32, AgentProc>,
    i: u32,
    peers: &[u32],
    how: &str,
) -> (Duration, Duration) {
    let me = bed.pod(i).node_name.clone();
    let addr = agents[&i].http;
    let failures_before: Vec<f64> = {
        let mut v = Vec::new();
        for p in peers {
            v.push(metrics(&agents[p]).await["erlkube_agent_connect_failures_total"]);
        }
        v
    };
    // Each peer records its first nodedown of the node (a peer may dial
    // it again later, when nothing fences it).
    for p in peers {
        let r = bed
            .pod(*p)
            .beam()
            .eval(
                &format!("W = spawn(fun() -> ok = net_kernel:monitor_nodes(true), receive {{nodedown, '{me}'}} -> receive {{get, F}} -> F ! down end end end), register(erlkube_drain_watch, W), ok"),
                Duration::from_secs(10),
            )
            .await;
        assert_eq!(r.as_deref(), Ok("ok"));
    }
    let started = tokio::time::Instant::now();
    let drain = if how == "SIGTERM" {
        agents[&i].guard.signal(15);
        None
    } else {
        Some(tokio::spawn(common::http_drain_async(addr)))
    };
    // /readyz turns 503 (polled as fast as answers come).
    let to_503 = loop {
        match get(addr, "/readyz").await {
            Ok((503, b)) => {
                assert!(b.contains("draining"), "{b}");
                break started.elapsed();
            }
            Ok((200, _)) => {}
            other => panic!("/readyz during the drain: {other:?}"),
        }
        assert!(started.elapsed() < FORM, "/readyz never turned 503");
    };
    // During the grace: still connected and serving.
    let ping = bed
        .pod(peers[0])
        .beam()
        .eval(&format!("net_adm:ping('{me}')"), Duration::from_secs(5))
        .await;
    assert_eq!(
        ping.as_deref(),
        Ok("pong"),
        "the draining node answers ping"
    );
    for p in peers {
        assert!(
            pod_nodes(bed, *p).await.contains(&me),
            "pod {p} still connected during the grace"
        );
    }
    assert_eq!(
        get(addr, "/healthz").await.unwrap().0,
        200,
        "healthy while draining"
    );
    let still_draining = match &drain {
        Some(t) => !t.is_finished(),
        None => agents.get_mut(&i).unwrap().guard.is_running(),
    };
    assert!(still_draining, "the checks above ran during the grace");
    // The drain's end.
    match drain {
        Some(t) => {
            let (status, body) = t.await.unwrap().expect("GET /drain answered");
            assert_eq!(status, 200, "{body}");
            assert!(body.starts_with("drained"), "{body}");
        }
        None => {
            let a = agents.get_mut(&i).unwrap();
            wait_for("the agent to exit after its drain", || {
                let running = a.guard.is_running();
                async move { !running }
            })
            .await;
        }
    }
    let over = tokio::time::Instant::now();
    let mut nodedown = Duration::ZERO;
    for p in peers {
        let r = bed
            .pod(*p)
            .beam()
            .eval(
                "erlkube_drain_watch ! {get, self()}, receive down -> down after 60000 -> no_nodedown end",
                Duration::from_secs(70),
            )
            .await;
        assert_eq!(r.as_deref(), Ok("down"), "pod {p}");
        nodedown = over.elapsed();
    }
    assert!(bed.pod(i).beam().is_running(), "the node itself still runs");
    if how == "SIGTERM" {
        // A drain by the signal alone does not fence the node (it may be
        // the agent's container alone that restarts); in a terminating pod
        // the release gets its SIGTERM too.
        let erl = bed.pod(i).beam().clone();
        erl.signal(15);
        wait_for("the release to stop", || {
            let running = erl.is_running();
            async move { !running }
        })
        .await;
        return (to_503, nodedown);
    }
    assert!(
        pod_nodes(bed, i).await.is_empty(),
        "the node left every peer"
    );
    // The peers still find it in DNS and dial it again: refused (a drain by
    // GET /drain, a preStop hook, fences the node).
    for (p, before) in peers.iter().zip(failures_before) {
        let a = &agents[p];
        wait_for("a refused redial", || async {
            metrics(a).await["erlkube_agent_connect_failures_total"] > before
        })
        .await;
        assert!(
            !pod_nodes(bed, *p).await.contains(&me),
            "pod {p} dialled the drained node back"
        );
    }
    if how != "SIGTERM" {
        let (status, body) = get(addr, "/readyz").await.unwrap();
        assert_eq!(
            (status, body.as_str()),
            (503, "not ready: drained (the node left the cluster)\n")
        );
        let (_, cluster) = get(addr, "/cluster").await.unwrap();
        assert!(cluster.contains("\"drain\":\"left\""), "{cluster}");
    }
    (to_503, nodedown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_by_get_and_by_sigterm_unready_at_once_serving_for_the_grace_then_gone() {
    let _g = SERIAL.lock().await;
    let mut bed = bed(Naming::Ipv4);
    let pods = bed.add_pods(4).unwrap();
    let mut agents = BTreeMap::new();
    for i in &pods {
        agents.insert(
            *i,
            spawn_agent(&bed, *i, &[("ERLKUBE_AGENT_DRAIN_GRACE", "3s")]),
        );
    }
    mesh(&bed, &pods, &agents).await;
    for i in &pods {
        let a = agents[i].http;
        wait_for("/readyz 200", || async move {
            matches!(get(a, "/readyz").await, Ok((200, _)))
        })
        .await;
    }
    let (r1, d1) = drain_and_check(&bed, &mut agents, pods[3], &pods[..3], "GET /drain").await;
    println!("drain by GET /drain: /readyz 503 after {r1:?}; peers' nodedown {d1:?} after the drain answered");
    // The drained pod goes (its records leave DNS, as when Kubernetes
    // deletes the pod): the others are ready again under quorum `all`.
    bed.unpublish(pods[3]).unwrap();
    for i in &pods[..3] {
        let a = agents[i].http;
        wait_for("/readyz 200 again", || async move {
            matches!(get(a, "/readyz").await, Ok((200, _)))
        })
        .await;
    }
    let (r2, d2) = drain_and_check(&bed, &mut agents, pods[2], &pods[..2], "SIGTERM").await;
    println!(
        "drain by SIGTERM: /readyz 503 after {r2:?}; peers' nodedown {d2:?} after the agent exited"
    );
    assert!(
        agents[&pods[2]].count("drain over: disconnected the node from its peers") == 1,
        "{}",
        agents[&pods[2]].lines().join("\n")
    );
    mesh(&bed, &pods[..2], &agents).await;
}

/// Terminates pod `i` as the kubelet does with the generated manifests:
/// the release container's preStop `GET /drain` and, at the same moment,
/// SIGTERM to the agent container (it has no hook); once the hook has
/// answered, SIGTERM to the release (the BEAM stops as by `init:stop()`).
/// Returns when both are gone.
async fn terminate_like_the_kubelet(bed: &Bed, agents: &mut BTreeMap<u32, AgentProc>, i: u32) {
    let addr = agents[&i].http;
    let hook = tokio::spawn(common::http_drain_async(addr));
    agents[&i].guard.signal(15);
    let (status, body) = hook.await.unwrap().expect("preStop GET /drain answered");
    assert_eq!(status, 200, "{body}");
    let erl = bed.pod(i).beam().clone();
    erl.signal(15);
    wait_for("the release to stop on SIGTERM", || {
        let running = erl.is_running();
        async move { !running }
    })
    .await;
    let a = agents.get_mut(&i).unwrap();
    wait_for("the agent to exit", || {
        let running = a.guard.is_running();
        async move { !running }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_with_drains_fails_no_call_to_a_global_server() {
    let _g = SERIAL.lock().await;
    let mut bed = global_bed();
    let pods = bed.add_pods(7).unwrap();
    let (server, client, restarted) = (pods[0], pods[1], pods[2..].to_vec());
    let mut agents = BTreeMap::new();
    let grace = [("ERLKUBE_AGENT_DRAIN_GRACE", "2s")];
    for i in &pods {
        agents.insert(*i, spawn_agent(&bed, *i, &grace));
    }
    mesh(&bed, &pods, &agents).await;
    let t = Duration::from_secs(10);
    // A gen_server-protocol server registered with `global` on a pod that
    // is not restarted.
    let r = bed
        .pod(server)
        .beam()
        .eval(
            "P = spawn(fun() -> L = fun L() -> receive {'$gen_call', From, Req} -> gen:reply(From, {pong, Req}), L() end end, L() end), yes = global:register_name(erlkube_echo, P)",
            t,
        )
        .await;
    assert_eq!(r.as_deref(), Ok("yes"));
    let c = bed.pod(client).beam().clone();
    wait_for("the client to resolve the global name", || {
        let c = c.clone();
        async move {
            matches!(
                c.eval(
                    "is_pid(global:whereis_name(erlkube_echo))",
                    Duration::from_secs(10)
                )
                .await
                .as_deref(),
                Ok("true")
            )
        }
    })
    .await;
    // The client: gen_server:call every 10 ms, counting answers and failures.
    let r = c
        .eval(
            "C = spawn(fun() -> L = fun L(Ok, Fail, Errs) -> receive {get, F} -> F ! {counts, Ok, Fail, Errs}, L(Ok, Fail, Errs) after 10 -> try gen_server:call({global, erlkube_echo}, ping, 2000) of {pong, ping} -> L(Ok + 1, Fail, Errs) catch K:E -> L(Ok, Fail + 1, lists:sublist([{K, E} | Errs], 5)) end end end, L(0, 0, []) end), register(erlkube_caller, C), ok",
            t,
        )
        .await;
    assert_eq!(r.as_deref(), Ok("ok"));
    let counts = || async {
        c.eval(
            "erlkube_caller ! {get, self()}, receive {counts, O, F, E} -> {O, F, E} after 5000 -> timeout end",
            Duration::from_secs(10),
        )
        .await
        .unwrap()
    };
    let mut gaps = Vec::new();
    for old in restarted {
        let sigterm = tokio::time::Instant::now();
        terminate_like_the_kubelet(&bed, &mut agents, old).await;
        agents.remove(&old);
        bed.kill_pod(old).unwrap();
        let new = bed.add_pods(1).unwrap()[0];
        agents.insert(new, spawn_agent(&bed, new, &grace));
        let a = agents[&new].http;
        wait_for("the replacement ready", || async move {
            matches!(get(a, "/readyz").await, Ok((200, _)))
        })
        .await;
        gaps.push(sigterm.elapsed());
    }
    mesh(&bed, &bed.indexes(), &agents).await;
    let text = counts().await;
    let inner = text.trim_start_matches('{');
    let mut parts = inner.splitn(3, ',');
    let ok: u64 = parts.next().unwrap().trim().parse().unwrap();
    let failed: u64 = parts.next().unwrap().trim().parse().unwrap();
    let mut sorted = gaps.clone();
    sorted.sort();
    println!(
        "rolling restart of 5 pods (drain grace 2s): {ok} calls answered, {failed} failed; SIGTERM -> replacement ready: {gaps:?} (median {:?})",
        sorted[sorted.len() / 2]
    );
    assert!(ok > 0, "{text}");
    assert_eq!(failed, 0, "failed calls: {text}");
}
