//! Starting what [`crate::config`] resolved: the configured strategy as a
//! task on the current runtime. Parsing stays pure in `config`; the
//! tasks start here (each watching strategy starts its own tasks in its
//! `config` module).

use tokio::sync::mpsc;

use crate::config::{invalid, ConfigError, FormationConfig, StrategyConfig};
use crate::strategy::{poll, DnsA, DnsSrv, HostsFile, LocalEpmd, StaticList};
use crate::Update;

impl FormationConfig {
    /// Starts the strategy as a task on the current runtime, polling every
    /// `interval` and sending to `updates`.
    pub fn spawn_strategy(
        &self,
        updates: mpsc::Sender<Update>,
    ) -> Result<tokio::task::JoinHandle<()>, ConfigError> {
        let interval = self.interval;
        Ok(match &self.strategy {
            StrategyConfig::Static(nodes) => {
                tokio::spawn(poll(StaticList::new(nodes.clone()), interval, updates))
            }
            StrategyConfig::Epmd { address, host } => tokio::spawn(poll(
                LocalEpmd::new(*address, host.clone(), self.timeout),
                interval,
                updates,
            )),
            StrategyConfig::HostsFile { path, epmd_port } => tokio::spawn(poll(
                HostsFile::new(path.clone(), *epmd_port, self.timeout),
                interval,
                updates,
            )),
            StrategyConfig::DnsA(s) => {
                let d = DnsA::new(s.clone()).map_err(|e| invalid("discovery.dns.server", e))?;
                tokio::spawn(poll(d, interval, updates))
            }
            StrategyConfig::DnsSrv(s) => {
                let d = DnsSrv::new(s.clone()).map_err(|e| invalid("discovery.dns.server", e))?;
                tokio::spawn(poll(d, interval, updates))
            }
            StrategyConfig::Kubernetes(s) => crate::kubernetes::config::spawn(s.clone(), updates)?,
            StrategyConfig::Gossip(s) => crate::gossip::config::spawn(s.clone(), updates)?,
        })
    }
}
