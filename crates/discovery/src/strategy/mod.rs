//! Discovery strategies. Each one answers "which nodes should be in the
//! cluster?" once per round ([`Discover::discover`]); [`poll`] runs rounds
//! forever and sends [`Update`]s to the engine.
//!
//! | strategy | libcluster analogue | source |
//! |---|---|---|
//! | [`StaticList`] | `Cluster.Strategy.Epmd` | a fixed list |
//! | [`LocalEpmd`] | (none) | every name on this host's epmd |
//! | [`HostsFile`] | `ErlangHosts` | `.hosts.erlang`, then each host's epmd |
//! | [`DnsA`] | `Kubernetes.DNS` / `DNSPoll` | A/AAAA of a headless Service |
//! | [`DnsSrv`] | `Kubernetes.DNSSRV` | SRV of a headless Service |
//! | [`kubernetes`] | `Kubernetes` (watching) | EndpointSlices of a Service, watched |
//! | [`gossip`] | `Gossip` | authenticated UDP multicast heartbeats |

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::{Answer, DiscoveryError, Update};

mod dns;
mod epmd;
pub mod gossip;
mod hosts_file;
pub mod kubernetes;
mod static_list;

pub use dns::{DnsA, DnsSettings, DnsSrv, EmptyAnswer, IpVersion};
pub use epmd::{epmd_names, LocalEpmd};
pub use hosts_file::{parse_hosts_erlang, HostsFile};
pub use static_list::StaticList;

/// Which strategy: the name as configured, and what the engine's
/// watchers may expect of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StrategyKind {
    /// `static`
    Static,
    /// `epmd`
    Epmd,
    /// `hosts_file`
    HostsFile,
    /// `dns_a`
    DnsA,
    /// `dns_srv`
    DnsSrv,
    /// `kubernetes`
    Kubernetes,
    /// `gossip`
    Gossip,
}

impl StrategyKind {
    /// Every strategy, in the order the documentation lists them.
    pub const ALL: [StrategyKind; 7] = [
        StrategyKind::Static,
        StrategyKind::Epmd,
        StrategyKind::HostsFile,
        StrategyKind::DnsA,
        StrategyKind::DnsSrv,
        StrategyKind::Kubernetes,
        StrategyKind::Gossip,
    ];

    /// The name as configured (`discovery.strategy`).
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Static => "static",
            StrategyKind::Epmd => "epmd",
            StrategyKind::HostsFile => "hosts_file",
            StrategyKind::DnsA => "dns_a",
            StrategyKind::DnsSrv => "dns_srv",
            StrategyKind::Kubernetes => "kubernetes",
            StrategyKind::Gossip => "gossip",
        }
    }

    /// The strategy called `name`.
    pub fn from_name(name: &str) -> Option<StrategyKind> {
        StrategyKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// True when the strategy answers every round ([`poll`]); watching
    /// strategies (Kubernetes watch, gossip) may rightly stay silent.
    pub fn answers_every_round(self) -> bool {
        !matches!(self, StrategyKind::Kubernetes | StrategyKind::Gossip)
    }
}

impl std::fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One discovery round.
pub trait Discover: Send + 'static {
    /// Which strategy this is.
    fn kind(&self) -> StrategyKind;

    /// Asks the source once.
    fn discover(&mut self) -> impl Future<Output = Result<Answer, DiscoveryError>> + Send;
}

/// Runs `strategy` every `interval` (the first round at once) and sends
/// each result to `updates`; returns when the receiver is gone.
pub async fn poll<D: Discover>(mut strategy: D, interval: Duration, updates: mpsc::Sender<Update>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = tokio::time::Instant::now();
        let update = match strategy.discover().await {
            Ok(mut a) => {
                a.elapsed.get_or_insert(started.elapsed());
                Update::Answer(a)
            }
            Err(e) => Update::Error(e),
        };
        if updates.send(update).await.is_err() {
            return;
        }
    }
}
