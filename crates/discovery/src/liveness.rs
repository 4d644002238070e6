//! Whether a node that discovery no longer lists still answers: a TCP
//! connect to its distribution port. The engine asks while a node waits
//! out `formation.removal_grace`: a node whose record is gone *and* whose
//! port does not answer (connection refused, or no answer within the
//! probe's time: a pod lost silently) is removed at once; a node that still
//! answers keeps the grace (a record that flaps, a pod briefly not ready).
//!
//! Where a node listens is learned while it is connected (its host's port
//! mapper, `PORT_PLEASE2`) and kept, so that a pod that vanished, port
//! mapper and all, is probed at the port its node had. A node never
//! located is looked up when probed; a host name that no longer resolves
//! then says nothing (the grace applies). The probe only opens and closes a
//! TCP connection; it never speaks the distribution protocol.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::NodeName;

/// Settings of the probe (`formation.removal_probe`, `ERL_EPMD_PORT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemovalProbe {
    /// The port mappers' port on every host (`ERL_EPMD_PORT`, default 4369).
    pub epmd_port: u16,
}

impl Default for RemovalProbe {
    fn default() -> RemovalProbe {
        RemovalProbe { epmd_port: 4369 }
    }
}

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The distribution port accepted a connection.
    Answers,
    /// Nothing answers for the node: the reason says what failed.
    Silent(String),
    /// The probe could not tell (say, the host name no longer resolves and
    /// the node was never located): the grace applies.
    Unknown(String),
}

/// A finished task of the [`Liveness`] tracker.
#[derive(Debug)]
pub(crate) enum Done {
    /// Where a connected node listens (`None`: not found).
    Located(NodeName, Option<SocketAddr>),
    /// The verdict on an absent node.
    Probed(NodeName, Verdict),
}

/// The engine's probes and what they learned.
#[derive(Debug)]
pub(crate) struct Liveness {
    config: Option<RemovalProbe>,
    timeout: Duration,
    addrs: HashMap<NodeName, SocketAddr>,
    busy: HashSet<NodeName>,
    tasks: JoinSet<Done>,
}

impl Liveness {
    /// A tracker; `None`: never probes. Each probe (lookup and connect)
    /// is bounded by `timeout`.
    pub(crate) fn new(config: Option<RemovalProbe>, timeout: Duration) -> Liveness {
        Liveness {
            config,
            timeout,
            addrs: HashMap::new(),
            busy: HashSet::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Looks up where each of `connected` listens, once per node.
    pub(crate) fn learn<'a>(&mut self, connected: impl IntoIterator<Item = &'a NodeName>) {
        let Some(c) = self.config else { return };
        for node in connected {
            if self.addrs.contains_key(node) || !self.busy.insert(node.clone()) {
                continue;
            }
            let (node, timeout) = (node.clone(), self.timeout);
            self.tasks.spawn(async move {
                let addr = tokio::time::timeout(timeout, locate(&node, c.epmd_port))
                    .await
                    .ok()
                    .and_then(|r| r.ok());
                Done::Located(node, addr)
            });
        }
    }

    /// Forgets where `node` listens (its connection went away: a restart
    /// may move it).
    pub(crate) fn forget(&mut self, node: &NodeName) {
        self.addrs.remove(node);
    }

    /// Probes each of `absent` that is not being probed or located.
    pub(crate) fn probe(&mut self, absent: impl IntoIterator<Item = NodeName>) {
        let Some(c) = self.config else { return };
        for node in absent {
            if self.busy.contains(&node) {
                continue;
            }
            self.busy.insert(node.clone());
            let known = self.addrs.get(&node).copied();
            let timeout = self.timeout;
            self.tasks.spawn(async move {
                let v = match tokio::time::timeout(timeout, probe(&node, known, c.epmd_port)).await
                {
                    Ok(v) => v,
                    Err(_) => Verdict::Silent(format!("no answer within {timeout:?}")),
                };
                Done::Probed(node, v)
            });
        }
    }

    /// The next finished task; pending while none runs (cancel-safe).
    pub(crate) async fn next(&mut self) -> Done {
        loop {
            match self.tasks.join_next().await {
                Some(Ok(d)) => {
                    match &d {
                        Done::Located(n, a) => {
                            self.busy.remove(n);
                            if let Some(a) = a {
                                self.addrs.insert(n.clone(), *a);
                            }
                        }
                        Done::Probed(n, _) => {
                            self.busy.remove(n);
                        }
                    }
                    return d;
                }
                // A task that panicked or was aborted: forget it.
                Some(Err(_)) => continue,
                None => std::future::pending::<()>().await,
            }
        }
    }
}

/// The node's host as an address: an IP literal, else the first address
/// the system resolver gives.
async fn host_ip(node: &NodeName) -> Result<IpAddr, String> {
    let host = node.host();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ip);
    }
    match tokio::net::lookup_host((bare, 0)).await {
        Ok(mut it) => it
            .next()
            .map(|a| a.ip())
            .ok_or_else(|| format!("{host} has no address")),
        Err(e) => Err(format!("cannot resolve {host}: {e}")),
    }
}

/// Where `node` listens: its host's port mapper asked for its port.
/// `Err` says why that cannot be told; `Ok(None)` is "not registered".
async fn lookup(node: &NodeName, epmd_port: u16) -> Result<Result<SocketAddr, String>, String> {
    let ip = host_ip(node).await?;
    let alive = node.as_str().split('@').next().unwrap_or_default();
    let client = erlkube_epmd::Client::new(ip.to_string(), epmd_port);
    Ok(match client.port_please(alive).await {
        Ok(Some(info)) => Ok(SocketAddr::new(ip, info.port)),
        Ok(None) => Err(format!(
            "{alive} is not registered with the port mapper of {ip}"
        )),
        Err(e) => Err(format!("the port mapper of {ip} does not answer: {e}")),
    })
}

async fn locate(node: &NodeName, epmd_port: u16) -> Result<SocketAddr, String> {
    lookup(node, epmd_port).await?
}

async fn probe(node: &NodeName, known: Option<SocketAddr>, epmd_port: u16) -> Verdict {
    let addr = match known {
        Some(a) => a,
        None => match lookup(node, epmd_port).await {
            Ok(Ok(a)) => a,
            Ok(Err(silent)) => return Verdict::Silent(silent),
            Err(unknown) => return Verdict::Unknown(unknown),
        },
    };
    match TcpStream::connect(addr).await {
        Ok(_) => Verdict::Answers,
        Err(e) => Verdict::Silent(format!("distribution port {addr}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listening_port_answers_and_a_closed_one_is_silent() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = l.local_addr().unwrap();
        let closed = {
            let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l2.local_addr().unwrap()
        };
        let n = NodeName::new("a@127.0.0.1");
        assert_eq!(probe(&n, Some(open), 1).await, Verdict::Answers);
        assert!(matches!(
            probe(&n, Some(closed), 1).await,
            Verdict::Silent(r) if r.contains("distribution port")
        ));
        // Not located, and no port mapper on the host's port: silent.
        assert!(matches!(
            probe(&n, None, closed.port()).await,
            Verdict::Silent(r) if r.contains("port mapper")
        ));
        // A name that does not resolve says nothing.
        let gone = NodeName::new("a@no-such-host.invalid");
        assert!(matches!(
            probe(&gone, None, 4369).await,
            Verdict::Unknown(_)
        ));
    }
}
