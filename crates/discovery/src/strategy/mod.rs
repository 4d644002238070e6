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

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::{Answer, DiscoveryError, Update};

mod dns;
mod epmd;
mod hosts_file;
mod static_list;

pub use dns::{DnsA, DnsSettings, DnsSrv, EmptyAnswer, IpVersion};
pub use epmd::{epmd_names, LocalEpmd};
pub use hosts_file::{parse_hosts_erlang, HostsFile};
pub use static_list::StaticList;

/// One discovery round.
pub trait Discover: Send + 'static {
    /// The strategy's name as configured (`dns_a`, …).
    fn name(&self) -> &'static str;

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
