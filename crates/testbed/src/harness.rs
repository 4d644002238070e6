//! Scenario helpers: one formation engine per pod (in the test process,
//! acting on the pod's BEAM node through [`BeamActor`]), and membership
//! checks from the BEAM side (`nodes()`).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use erlkube_discovery::strategy::{
    poll, DnsA, DnsSettings, DnsSrv, EmptyAnswer, IpVersion, StaticList,
};
use erlkube_discovery::{Engine, EngineConfig, Formation, NodeName, PlanConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{BeamActor, Bed};

/// Which strategy the pods' engines use.
#[derive(Clone, Debug)]
pub enum Strategy {
    /// DNS A/AAAA of the bed's Service.
    DnsA,
    /// DNS SRV of the bed's Service.
    DnsSrv,
    /// A fixed list.
    Static(Vec<NodeName>),
}

/// Engine settings suited to the bed (short timers).
pub fn fast_engine() -> EngineConfig {
    EngineConfig {
        plan: PlanConfig {
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
            removal_grace: Duration::from_secs(1),
            disconnect_on_removal: true,
        },
        check_interval: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(10),
        seed: None,
        partition_check: None,
        removal_probe: None,
    }
}

/// The DNS settings of the bed's Service.
pub fn dns_settings(bed: &Bed) -> DnsSettings {
    DnsSettings {
        query: bed.service_fqdn(),
        basename: bed.config().basename.clone(),
        server: Some(bed.dns_addr()),
        timeout: Duration::from_secs(1),
        min_expected: 0,
        empty_answer: EmptyAnswer::Error,
        ip_version: match bed.config().naming {
            crate::Naming::Ipv6 => IpVersion::V6,
            _ => IpVersion::V4,
        },
    }
}

/// [`dns_settings`] as the `ERLKUBE_DISCOVERY_DNS_*` environment of an
/// `erlkube node` or `erlkube agent` process in a pod.
pub fn dns_env(bed: &Bed) -> Vec<(&'static str, String)> {
    let ip_version = match bed.config().naming {
        crate::Naming::Ipv6 => "v6",
        _ => "v4",
    };
    vec![
        ("ERLKUBE_DISCOVERY_DNS_QUERY", bed.service_fqdn()),
        (
            "ERLKUBE_DISCOVERY_DNS_BASENAME",
            bed.config().basename.clone(),
        ),
        ("ERLKUBE_DISCOVERY_DNS_SERVER", bed.dns_addr().to_string()),
        ("ERLKUBE_DISCOVERY_DNS_IP_VERSION", ip_version.to_owned()),
    ]
}

/// Running engines, by pod index.
#[derive(Default)]
pub struct Engines {
    running: BTreeMap<u32, (Formation, JoinHandle<()>)>,
}

impl Engines {
    /// Starts an engine for pod `index` with `strategy`, polling every
    /// `interval`.
    pub fn start(
        &mut self,
        bed: &Bed,
        index: u32,
        strategy: &Strategy,
        config: EngineConfig,
        interval: Duration,
    ) {
        let pod = bed.pod(index);
        let (tx, rx) = mpsc::channel(16);
        let task = match strategy {
            Strategy::DnsA => tokio::spawn(poll(
                DnsA::new(dns_settings(bed)).expect("resolver"),
                interval,
                tx,
            )),
            Strategy::DnsSrv => tokio::spawn(poll(
                DnsSrv::new(dns_settings(bed)).expect("resolver"),
                interval,
                tx,
            )),
            Strategy::Static(list) => {
                tokio::spawn(poll(StaticList::new(list.clone()), interval, tx))
            }
        };
        let formation = Engine::new(BeamActor::new(pod.beam().clone()), config).spawn(rx);
        self.running.insert(index, (formation, task));
    }

    /// Starts engines for every pod that has none.
    pub fn start_all(
        &mut self,
        bed: &Bed,
        strategy: &Strategy,
        config: &EngineConfig,
        interval: Duration,
    ) {
        for i in bed.indexes() {
            if !self.running.contains_key(&i) {
                self.start(bed, i, strategy, config.clone(), interval);
            }
        }
    }

    /// Stops pod `index`'s engine.
    pub fn stop(&mut self, index: u32) {
        if let Some((f, t)) = self.running.remove(&index) {
            t.abort();
            drop(f);
        }
    }

    /// The engine of pod `index`.
    pub fn get(&self, index: u32) -> &Formation {
        &self.running[&index].0
    }
}

impl Drop for Engines {
    fn drop(&mut self) {
        for (_, (_, t)) in std::mem::take(&mut self.running) {
            t.abort();
        }
    }
}

/// Waits (up to `limit`) until the engine of every pod in `members` that
/// has one in `engines` wants exactly the other members: the steady state in which an engine has seen
/// everyone (an engine removes only nodes it discovered; a mesh can form
/// before every engine has polled, because a pair connects when either side
/// finds the other).
pub async fn wait_discovered(
    bed: &Bed,
    engines: &Engines,
    members: &[u32],
    limit: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let mut pending = Vec::new();
        for i in members.iter().filter(|i| engines.running.contains_key(i)) {
            let want: BTreeSet<NodeName> = members
                .iter()
                .filter(|j| *j != i)
                .map(|j| NodeName::new(&bed.pod(*j).node_name))
                .collect();
            let got = engines.get(*i).desired();
            if got != want {
                pending.push((*i, got));
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(format!("engines not settled after {limit:?}: {pending:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each pod's `nodes()`, by index.
pub async fn membership(bed: &Bed) -> BTreeMap<u32, Result<BTreeSet<String>, String>> {
    let mut out = BTreeMap::new();
    for p in bed.pods() {
        let r = p
            .nodes()
            .await
            .map(|v| v.into_iter().collect())
            .map_err(|e| e.to_string());
        out.insert(p.index, r);
    }
    out
}

/// True when every pod is connected to exactly every other pod in `members`
/// (and `members` are all the pods' names).
pub async fn is_full_mesh(bed: &Bed, members: &[u32]) -> bool {
    let names: BTreeSet<String> = members
        .iter()
        .map(|i| bed.pod(*i).node_name.clone())
        .collect();
    // Every pod is asked at once, so one check costs one query's time
    // however many pods there are (it bounds the measurement's resolution).
    let mut asks = tokio::task::JoinSet::new();
    for i in members {
        let pod = bed.pod(*i);
        let want: BTreeSet<String> = names
            .iter()
            .filter(|n| **n != pod.node_name)
            .cloned()
            .collect();
        let ask = pod.nodes_owned();
        asks.spawn(async move {
            matches!(ask.await, Ok(v) if v.iter().cloned().collect::<BTreeSet<_>>() == want)
        });
    }
    while let Some(r) = asks.join_next().await {
        if !r.unwrap_or(false) {
            return false;
        }
    }
    true
}

/// Waits (up to `limit`, a liveness bound, not a performance assertion)
/// until the given pods form one full mesh; returns the time it took, or a
/// description of each pod's view.
pub async fn wait_full_mesh(
    bed: &Bed,
    members: &[u32],
    limit: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        if is_full_mesh(bed, members).await {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            let view = membership(bed).await;
            return Err(format!(
                "no full mesh of {members:?} after {limit:?}; views: {view:#?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One side of the formation benchmarks: erlkube's defaults, or the anchor
/// configured as libcluster's DNSPoll behaves.
pub struct BenchVariant {
    /// Printed name.
    pub name: &'static str,
    /// Discovery polling interval.
    pub interval: Duration,
    /// Engine settings.
    pub engine: EngineConfig,
}

/// The two variants every formation benchmark measures in one run: erlkube
/// (1 s poll, default engine) and the libcluster-style anchor (5 s poll,
/// retries only at the next poll, 5 s membership check). Both remove a node
/// at once (`removal_grace = 0s`), so removal measures the polling.
pub fn bench_variants() -> Vec<BenchVariant> {
    let ours = EngineConfig {
        plan: PlanConfig {
            removal_grace: Duration::ZERO,
            ..PlanConfig::default()
        },
        ..EngineConfig::default()
    };
    let libcluster = EngineConfig {
        plan: PlanConfig {
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(5),
            removal_grace: Duration::ZERO,
            disconnect_on_removal: true,
        },
        check_interval: Duration::from_secs(5),
        // libcluster has no partition detection, and removes on the next
        // poll that misses a node, however it answers.
        partition_check: None,
        removal_probe: None,
        ..EngineConfig::default()
    };
    vec![
        BenchVariant {
            name: "erlkube (1 s poll)",
            interval: Duration::from_secs(1),
            engine: ours,
        },
        BenchVariant {
            name: "libcluster-style (5 s poll)",
            interval: Duration::from_secs(5),
            engine: libcluster,
        },
    ]
}

/// A pseudo-random duration below `d` (a phase within a poll cycle).
pub fn random_below(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos() as u64)
        .unwrap_or(0);
    let x = nanos
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        >> 11;
    Duration::from_nanos(x % (d.as_nanos() as u64).max(1))
}

/// The `erlkube agent` command for pod `index`'s node, run inside the pod:
/// a clean environment holding the pod's node name and cookie, the bed's
/// port-mapper port and tick time, the agent's HTTP address `http`, and DNS
/// A discovery of the bed's Service; standard input and output closed,
/// standard error discarded. Callers add or replace variables (a later
/// `env` wins) and may take standard error.
pub fn agent_command(bed: &Bed, index: u32, erlkube_bin: &str, http: &str) -> Command {
    let c = bed.config();
    let mut cmd = bed.exec(index, erlkube_bin);
    cmd.arg("agent")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RELEASE_NODE", &bed.pod(index).node_name)
        .env("RELEASE_COOKIE", &c.cookie)
        .env("ERL_EPMD_PORT", c.epmd_port.to_string())
        .env("ERLKUBE_AGENT_HTTP", http)
        .env("ERLKUBE_AGENT_NET_TICKTIME", format!("{}s", c.net_ticktime))
        .env("ERLKUBE_DISCOVERY_STRATEGY", "dns_a")
        .envs(dns_env(bed))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Waits until `f` holds, checking every `every`; past `limit` it panics
/// naming `what`, followed by `dump()` (say, a log tail). Returns how long
/// it took.
pub async fn wait_until<F, Fut>(
    what: &str,
    limit: Duration,
    every: Duration,
    dump: impl Fn() -> String,
    mut f: F,
) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what}\n{}",
            dump()
        );
        tokio::time::sleep(every).await;
    }
    start.elapsed()
}
