//! DNS strategies for a Kubernetes headless Service: A/AAAA (one address per
//! ready pod) and SRV (one target host per ready pod).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

use super::{Discover, StrategyKind};
use crate::{Answer, DiscoveryError, NodeName, Reason};

/// What an answer with no records at all (NXDOMAIN or NODATA) means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmptyAnswer {
    /// A discovery error: the last good set is kept (default). A headless
    /// Service with no ready pod is legitimately empty, but so is a DNS
    /// server that briefly lost its zone; only the second is common in a
    /// running cluster, and tearing it down on a glitch is the worse error.
    Error,
    /// A complete, empty answer: every known node is removed (after the
    /// grace period).
    Empty,
}

/// Which address families [`DnsA`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpVersion {
    /// A and AAAA.
    Both,
    /// A only.
    V4,
    /// AAAA only.
    V6,
}

/// Settings shared by the DNS strategies.
#[derive(Clone, Debug)]
pub struct DnsSettings {
    /// The name to query (the headless Service), e.g.
    /// `myapp-headless.default.svc.cluster.local`.
    pub query: String,
    /// The node name part: nodes are `basename@<address or target>`.
    pub basename: String,
    /// A specific server (`ip:port`); `None` = the system's resolv.conf.
    pub server: Option<SocketAddr>,
    /// Per-query timeout.
    pub timeout: Duration,
    /// Fewer records than this make the answer incomplete (never prunes).
    pub min_expected: usize,
    /// What an empty answer means.
    pub empty_answer: EmptyAnswer,
    /// Address families for [`DnsA`].
    pub ip_version: IpVersion,
}

fn resolver(s: &DnsSettings) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match s.server {
        Some(addr) => {
            let mut udp = ConnectionConfig::new(ProtocolConfig::Udp);
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::new(ProtocolConfig::Tcp);
            tcp.port = addr.port();
            let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                provider,
            )
        }
        None => TokioResolver::builder(provider).map_err(|e| format!("system resolver: {e}"))?,
    };
    let mut opts: ResolverOpts = builder.options_mut().clone();
    opts.timeout = s.timeout;
    opts.attempts = 1;
    // Every round must see the server's current truth.
    opts.cache_size = 0;
    *builder.options_mut() = opts;
    builder.build().map_err(|e| e.to_string())
}

/// A resolver for one discovery round. Built anew each round so that no
/// connection outlives the round: a resolver that keeps a TCP connection
/// (the fallback for truncated answers, e.g. a Service with many pods) can
/// keep talking to a server process holding an old view of the records —
/// dnsmasq forks a child per TCP connection that answers from a snapshot —
/// and a system resolver picks up `resolv.conf` changes this way.
fn round_resolver(
    strategy: StrategyKind,
    s: &DnsSettings,
) -> Result<TokioResolver, DiscoveryError> {
    resolver(s).map_err(|e| DiscoveryError::Unavailable {
        strategy,
        reason: Reason::DnsResolver(e),
    })
}

/// The outcome of one lookup.
enum Got {
    Records(Lookup),
    Nothing,
}

async fn lookup(r: &TokioResolver, name: &str, t: RecordType) -> Result<Got, NetError> {
    match r.lookup(name, t).await {
        Ok(l) => Ok(Got::Records(l)),
        Err(e) if e.is_no_records_found() => Ok(Got::Nothing),
        Err(e) => Err(e),
    }
}

fn finish(
    strategy: StrategyKind,
    s: &DnsSettings,
    nodes: BTreeSet<NodeName>,
    records: usize,
    mut complete: bool,
) -> Result<Answer, DiscoveryError> {
    if records == 0 && s.empty_answer == EmptyAnswer::Error {
        return Err(DiscoveryError::BadAnswer {
            strategy,
            reason: Reason::DnsNoRecords {
                query: s.query.clone(),
            },
        });
    }
    if records < s.min_expected {
        complete = false;
    }
    Ok(Answer::new(nodes, complete))
}

fn unavailable(
    strategy: StrategyKind,
    s: &DnsSettings,
    e: impl std::fmt::Display,
) -> DiscoveryError {
    DiscoveryError::Unavailable {
        strategy,
        reason: Reason::DnsQuery {
            query: s.query.clone(),
            error: e.to_string(),
        },
    }
}

/// A/AAAA records of a headless Service: `basename@<ip>` per address
/// (libcluster `Kubernetes.DNS`). IPv6 addresses are written the way
/// `inet:ntoa/1` writes them (RFC 5952 form), as in Erlang long names.
pub struct DnsA {
    settings: DnsSettings,
}

impl DnsA {
    /// Builds the resolver (system or the configured server).
    pub fn new(settings: DnsSettings) -> Result<DnsA, String> {
        resolver(&settings)?;
        Ok(DnsA { settings })
    }
}

impl Discover for DnsA {
    fn kind(&self) -> StrategyKind {
        StrategyKind::DnsA
    }

    async fn discover(&mut self) -> Result<Answer, DiscoveryError> {
        let s = &self.settings;
        let mut types = Vec::new();
        if s.ip_version != IpVersion::V6 {
            types.push(RecordType::A);
        }
        if s.ip_version != IpVersion::V4 {
            types.push(RecordType::AAAA);
        }
        let resolver = round_resolver(StrategyKind::DnsA, s)?;
        let results = futures_join(types.iter().map(|t| lookup(&resolver, &s.query, *t))).await;
        let mut ips: BTreeSet<IpAddr> = BTreeSet::new();
        let mut complete = true;
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok(Got::Records(l)) => {
                    complete &= !l.message().metadata.truncation;
                    for rec in l.answers() {
                        match &rec.data {
                            RData::A(a) => ips.insert(IpAddr::V4(a.0)),
                            RData::AAAA(a) => ips.insert(IpAddr::V6(a.0)),
                            _ => false,
                        };
                    }
                }
                Ok(Got::Nothing) => {}
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            if ips.is_empty() {
                return Err(unavailable(StrategyKind::DnsA, s, &errors[0]));
            }
            // One family answered, the other failed: use what we have,
            // but it proves nothing about absent nodes.
            complete = false;
        }
        let nodes = ips
            .iter()
            .map(|ip| NodeName::new(format!("{}@{ip}", s.basename)))
            .collect();
        finish(StrategyKind::DnsA, s, nodes, ips.len(), complete)
    }
}

/// SRV records of a headless Service: `basename@<target>` per record, the
/// target's trailing dot stripped (libcluster `Kubernetes.DNSSRV`).
pub struct DnsSrv {
    settings: DnsSettings,
}

impl DnsSrv {
    /// Builds the resolver (system or the configured server).
    pub fn new(settings: DnsSettings) -> Result<DnsSrv, String> {
        resolver(&settings)?;
        Ok(DnsSrv { settings })
    }
}

impl Discover for DnsSrv {
    fn kind(&self) -> StrategyKind {
        StrategyKind::DnsSrv
    }

    async fn discover(&mut self) -> Result<Answer, DiscoveryError> {
        let s = &self.settings;
        let resolver = round_resolver(StrategyKind::DnsSrv, s)?;
        let got = lookup(&resolver, &s.query, RecordType::SRV)
            .await
            .map_err(|e| unavailable(StrategyKind::DnsSrv, s, e))?;
        let mut hosts = BTreeSet::new();
        let mut complete = true;
        if let Got::Records(l) = got {
            complete = !l.message().metadata.truncation;
            for rec in l.answers() {
                if let RData::SRV(srv) = &rec.data {
                    let t = srv.target.to_ascii();
                    let t = t.strip_suffix('.').unwrap_or(&t).to_owned();
                    if !t.is_empty() {
                        hosts.insert(t);
                    }
                }
            }
        }
        let nodes = hosts
            .iter()
            .map(|h| NodeName::new(format!("{}@{h}", s.basename)))
            .collect();
        finish(StrategyKind::DnsSrv, s, nodes, hosts.len(), complete)
    }
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let futs: Vec<_> = futs.map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    let mut futs: Vec<Option<_>> = futs.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, slot) in futs.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        outs[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outs.into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
}
