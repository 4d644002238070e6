//! The gossip strategy, for networks without Kubernetes: every node sends
//! a heartbeat (its node name, distribution port and cluster name) to a UDP
//! multicast group (or a broadcast address) and lists the nodes it heard
//! within the expiry.
//!
//! Packets are authenticated with HMAC-SHA256 under a shared secret; the
//! MAC is checked (in constant time) before a single field is decoded, so
//! unauthenticated packets cost one MAC computation and are counted and
//! dropped. The cluster name is inside the authenticated part: clusters
//! that share a group (with different secrets, or the same secret and a
//! different name) never mix. A timestamp and a random nonce in every
//! packet, a skew bound and a per-sender monotonic timestamp stop replays.
//!
//! Wire format (version 1, big-endian):
//!
//! ```text
//! "EKG\x01" | unix ms u64 | nonce u64 | len u8 | cluster | len u8 | node | dist port u16 | HMAC-SHA256 (32)
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{Answer, DiscoveryError, NodeName, Update};

pub mod config;

const MAGIC: &[u8; 4] = b"EKG\x01";
const MAC_LEN: usize = 32;
/// Shortest possible packet: magic, time, nonce, two lengths, one byte
/// each, port, MAC.
const MIN_LEN: usize = 4 + 8 + 8 + 1 + 1 + 1 + 1 + 2 + MAC_LEN;
/// Longest packet we read; longer datagrams are truncated (and fail the MAC).
const MAX_LEN: usize = 1024;

type HmacSha256 = Hmac<Sha256>;

/// Why gossip could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GossipError {
    /// The secret is too short.
    #[error("gossip secret: at least 16 bytes are required, got {0}")]
    WeakSecret(usize),
    /// The secret file cannot be read.
    #[error("gossip secret file {path}: {reason}")]
    SecretFile {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Cluster or node name too long or empty.
    #[error("gossip: {0}")]
    Settings(String),
    /// Socket setup failed.
    #[error("gossip socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// Settings (keys `discovery.gossip.*`).
#[derive(Clone)]
pub struct GossipSettings {
    /// Cluster name (inside the authenticated part).
    pub cluster: String,
    /// Shared secret (never logged).
    pub secret: Vec<u8>,
    /// This node's name (announced; never listed in answers).
    pub node: NodeName,
    /// This node's distribution port (announced).
    pub dist_port: u16,
    /// Multicast group (or broadcast address) and port.
    pub group: SocketAddrV4,
    /// Send to a broadcast address instead of joining a multicast group.
    pub broadcast: bool,
    /// The local address of the interface to use (`None`: the system's
    /// choice, `0.0.0.0`).
    pub interface: Option<Ipv4Addr>,
    /// Multicast TTL (1: the local link only).
    pub ttl: u32,
    /// Time between heartbeats.
    pub interval: Duration,
    /// Silence after which a node is removed.
    pub expiry: Duration,
    /// Largest accepted clock difference of a packet's timestamp.
    pub max_skew: Duration,
}

impl std::fmt::Debug for GossipSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipSettings")
            .field("cluster", &self.cluster)
            .field("secret", &"<redacted>")
            .field("node", &self.node)
            .field("dist_port", &self.dist_port)
            .field("group", &self.group)
            .field("broadcast", &self.broadcast)
            .field("interface", &self.interface)
            .field("interval", &self.interval)
            .field("expiry", &self.expiry)
            .finish()
    }
}

impl GossipSettings {
    /// Defaults: group 239.255.77.75:45892, TTL 1, heartbeat 1 s, expiry
    /// 5 s, skew 30 s.
    pub fn new(cluster: &str, secret: &[u8], node: NodeName, dist_port: u16) -> GossipSettings {
        GossipSettings {
            cluster: cluster.to_owned(),
            secret: secret.to_vec(),
            node,
            dist_port,
            group: SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 75), 45892),
            broadcast: false,
            interface: None,
            ttl: 1,
            interval: Duration::from_secs(1),
            expiry: Duration::from_secs(5),
            max_skew: Duration::from_secs(30),
        }
    }

    /// Reads the secret from a file (trailing newline trimmed).
    pub fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, GossipError> {
        let mut b = std::fs::read(path).map_err(|e| GossipError::SecretFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
            b.pop();
        }
        Ok(b)
    }

    /// Checks lengths, the secret and the timers.
    pub fn validate(&self) -> Result<(), GossipError> {
        if self.secret.len() < 16 {
            return Err(GossipError::WeakSecret(self.secret.len()));
        }
        if self.cluster.is_empty() || self.cluster.len() > 255 {
            return Err(GossipError::Settings(
                "cluster name must be 1 to 255 bytes".into(),
            ));
        }
        if self.node.as_str().len() > 255 {
            return Err(GossipError::Settings(
                "node name longer than 255 bytes".into(),
            ));
        }
        if self.interval.is_zero() || self.expiry <= self.interval {
            return Err(GossipError::Settings(
                "expiry must be longer than the heartbeat interval".into(),
            ));
        }
        Ok(())
    }
}

/// A decoded, authenticated heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Sender's clock, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Random per packet.
    pub nonce: u64,
    /// Cluster name.
    pub cluster: String,
    /// Node name.
    pub node: String,
    /// Distribution port.
    pub dist_port: u16,
}

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// Too short or too long to be a heartbeat.
    #[error("malformed length")]
    Length,
    /// The MAC does not verify (wrong secret, garbage, tampering).
    #[error("bad MAC")]
    BadMac,
    /// Authenticated but not a valid heartbeat (bad magic or fields).
    #[error("malformed heartbeat")]
    Malformed,
}

/// Encodes and signs a heartbeat.
pub fn encode(secret: &[u8], hb: &Heartbeat) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + hb.cluster.len() + hb.node.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&hb.timestamp_ms.to_be_bytes());
    out.extend_from_slice(&hb.nonce.to_be_bytes());
    out.push(hb.cluster.len() as u8);
    out.extend_from_slice(hb.cluster.as_bytes());
    out.push(hb.node.len() as u8);
    out.extend_from_slice(hb.node.as_bytes());
    out.extend_from_slice(&hb.dist_port.to_be_bytes());
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

/// Verifies the MAC (constant time) and only then decodes.
pub fn decode(secret: &[u8], packet: &[u8]) -> Result<Heartbeat, Rejected> {
    if packet.len() < MIN_LEN || packet.len() > MAX_LEN {
        return Err(Rejected::Length);
    }
    let (body, tag) = packet.split_at(packet.len() - MAC_LEN);
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(tag).map_err(|_| Rejected::BadMac)?;
    // Authenticated from here on: a malformed body means a sender with
    // the secret and a bug, still dropped and counted.
    let mut r = Reader(body);
    if r.take(4)? != MAGIC {
        return Err(Rejected::Malformed);
    }
    let timestamp_ms = u64::from_be_bytes(r.take(8)?.try_into().expect("8 bytes"));
    let nonce = u64::from_be_bytes(r.take(8)?.try_into().expect("8 bytes"));
    let n = r.take(1)?[0] as usize;
    let cluster = std::str::from_utf8(r.take(n)?).map_err(|_| Rejected::Malformed)?;
    let n = r.take(1)?[0] as usize;
    let node = std::str::from_utf8(r.take(n)?).map_err(|_| Rejected::Malformed)?;
    let dist_port = u16::from_be_bytes(r.take(2)?.try_into().expect("2 bytes"));
    if !r.0.is_empty() || cluster.is_empty() || NodeName::parse(node).is_err() {
        return Err(Rejected::Malformed);
    }
    Ok(Heartbeat {
        timestamp_ms,
        nonce,
        cluster: cluster.to_owned(),
        node: node.to_owned(),
        dist_port,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Rejected> {
        if self.0.len() < n {
            return Err(Rejected::Malformed);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
}

/// Counters (shared; read them while the strategy runs).
#[derive(Debug, Default)]
pub struct GossipCounters {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Heartbeats accepted.
    pub accepted: AtomicU64,
    /// Dropped: wrong length.
    pub bad_length: AtomicU64,
    /// Dropped: the MAC did not verify.
    pub bad_mac: AtomicU64,
    /// Dropped: authenticated but malformed.
    pub malformed: AtomicU64,
    /// Dropped: another cluster's name.
    pub foreign_cluster: AtomicU64,
    /// Dropped: timestamp outside the skew, or not newer than the last
    /// one from that node (replay).
    pub replayed: AtomicU64,
    /// Heartbeats sent.
    pub sent: AtomicU64,
    /// Sends that failed.
    pub send_errors: AtomicU64,
}

impl GossipCounters {
    /// Every dropped datagram.
    pub fn dropped(&self) -> u64 {
        self.bad_length.load(Ordering::Relaxed)
            + self.bad_mac.load(Ordering::Relaxed)
            + self.malformed.load(Ordering::Relaxed)
            + self.foreign_cluster.load(Ordering::Relaxed)
            + self.replayed.load(Ordering::Relaxed)
    }
}

/// Creates the UDP socket for `settings` (reuse address and port, so
/// several nodes on one host can share the group; joined to the group,
/// multicast interface and TTL set; or broadcast enabled). Blocking-free;
/// call inside the network namespace that should own it.
pub fn bind_socket(settings: &GossipSettings) -> Result<std::net::UdpSocket, GossipError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    let iface = settings.interface.unwrap_or(Ipv4Addr::UNSPECIFIED);
    if settings.broadcast {
        s.set_broadcast(true)?;
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, settings.group.port())).into())?;
    } else {
        // Bound to the group address: only the group's datagrams arrive.
        s.bind(&SocketAddr::from((*settings.group.ip(), settings.group.port())).into())?;
        s.join_multicast_v4(settings.group.ip(), &iface)?;
        s.set_multicast_loop_v4(true)?;
        s.set_multicast_ttl_v4(settings.ttl)?;
        if !iface.is_unspecified() {
            s.set_multicast_if_v4(&iface)?;
        }
    }
    Ok(s.into())
}

/// The strategy.
pub struct Gossip {
    settings: GossipSettings,
    socket: UdpSocket,
    counters: Arc<GossipCounters>,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("settings", &self.settings)
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Gossip {
    /// Binds the socket ([`bind_socket`]) and prepares the strategy.
    pub fn bind(settings: GossipSettings) -> Result<Gossip, GossipError> {
        settings.validate()?;
        let socket = bind_socket(&settings)?;
        Gossip::with_socket(settings, socket)
    }

    /// Uses a socket made by [`bind_socket`] (e.g. inside another network
    /// namespace). Must be called on a tokio runtime.
    pub fn with_socket(
        settings: GossipSettings,
        socket: std::net::UdpSocket,
    ) -> Result<Gossip, GossipError> {
        settings.validate()?;
        socket.set_nonblocking(true)?;
        Ok(Gossip {
            settings,
            socket: UdpSocket::from_std(socket)?,
            counters: Arc::default(),
        })
    }

    /// The counters.
    pub fn counters(&self) -> Arc<GossipCounters> {
        self.counters.clone()
    }

    fn heartbeat(&self) -> Vec<u8> {
        encode(
            &self.settings.secret,
            &Heartbeat {
                timestamp_ms: now_ms(),
                nonce: fastrand::u64(..),
                cluster: self.settings.cluster.clone(),
                node: self.settings.node.as_str().to_owned(),
                dist_port: self.settings.dist_port,
            },
        )
    }

    /// Sends heartbeats and answers until `updates` is closed. Answers are
    /// sent when the set changes; they are complete once one expiry has
    /// passed since start (before, a live node may not have been heard
    /// yet).
    pub async fn run(self, updates: mpsc::Sender<Update>) {
        let s = &self.settings;
        let c = &self.counters;
        let started = Instant::now();
        let dest = SocketAddr::V4(s.group);
        // node -> (last heard, dist port)
        let mut heard: BTreeMap<NodeName, (Instant, u16)> = BTreeMap::new();
        // node -> newest accepted timestamp; kept past the node's expiry
        // (for the skew window) so an old packet cannot revive it.
        let mut newest: BTreeMap<NodeName, u64> = BTreeMap::new();
        let mut beat = tokio::time::interval(s.interval);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sweep_every = (s.interval / 2).max(Duration::from_millis(50));
        let mut sweep = tokio::time::interval(sweep_every);
        let mut last: Option<Answer> = None;
        let mut buf = vec![0u8; MAX_LEN + 1];
        let mut last_send_error = None::<crate::Reason>;
        loop {
            let mut changed = false;
            tokio::select! {
                _ = beat.tick() => {
                    match self.socket.send_to(&self.heartbeat(), dest).await {
                        Ok(_) => {
                            c.sent.fetch_add(1, Ordering::Relaxed);
                            last_send_error = None;
                        }
                        Err(e) => {
                            c.send_errors.fetch_add(1, Ordering::Relaxed);
                            let reason = crate::Reason::GossipSend { dest, error: e.to_string() };
                            if last_send_error.as_ref() != Some(&reason) {
                                last_send_error = Some(reason.clone());
                                let err = DiscoveryError::Unavailable { strategy: crate::strategy::StrategyKind::Gossip, reason };
                                if updates.send(Update::Error(err)).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
                r = self.socket.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    c.received.fetch_add(1, Ordering::Relaxed);
                    match decode(&s.secret, &buf[..n]) {
                        Err(Rejected::Length) => { c.bad_length.fetch_add(1, Ordering::Relaxed); }
                        Err(Rejected::BadMac) => {
                            c.bad_mac.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%from, "gossip packet with a bad MAC dropped");
                        }
                        Err(Rejected::Malformed) => { c.malformed.fetch_add(1, Ordering::Relaxed); }
                        Ok(hb) => {
                            if hb.cluster != s.cluster {
                                c.foreign_cluster.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            let node = NodeName::new(hb.node.clone());
                            let now_wall = now_ms();
                            let skew = s.max_skew.as_millis() as u64;
                            let fresh = hb.timestamp_ms.abs_diff(now_wall) <= skew;
                            let newer = newest.get(&node).is_none_or(|ts| hb.timestamp_ms > *ts);
                            if !fresh || !newer {
                                c.replayed.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            c.accepted.fetch_add(1, Ordering::Relaxed);
                            if node == s.node {
                                continue;
                            }
                            newest.insert(node.clone(), hb.timestamp_ms);
                            let is_new = heard.insert(node, (Instant::now(), hb.dist_port)).is_none();
                            changed |= is_new;
                        }
                    }
                }
                _ = sweep.tick() => {
                    let now = Instant::now();
                    let before = heard.len();
                    heard.retain(|_, (t, _)| now.duration_since(*t) < s.expiry);
                    let wall = now_ms();
                    let keep = 2 * s.max_skew.as_millis() as u64;
                    newest.retain(|_, ts| wall.saturating_sub(*ts) <= keep);
                    changed |= heard.len() != before;
                    // The first complete answer, once warmed up.
                    changed |= last.as_ref().is_some_and(|a| !a.complete) && started.elapsed() >= s.expiry;
                }
            }
            if !changed {
                continue;
            }
            let a = Answer::new(
                heard.keys().cloned().collect(),
                started.elapsed() >= s.expiry,
            );
            if last.as_ref() == Some(&a) {
                continue;
            }
            last = Some(a.clone());
            if updates.send(Update::Answer(a)).await.is_err() {
                return;
            }
        }
    }
}

/// The local IPv4 address on the interface that reaches `peer` (for
/// `interface` defaults). Returns `None` when there is no route.
pub fn local_ipv4_towards(peer: Ipv4Addr) -> Option<Ipv4Addr> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((peer, 9)).ok()?;
    match s.local_addr().ok()?.ip() {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef-secret";

    fn hb() -> Heartbeat {
        Heartbeat {
            timestamp_ms: 1_700_000_000_000,
            nonce: 42,
            cluster: "prod".into(),
            node: "app@10.0.0.1".into(),
            dist_port: 9100,
        }
    }

    #[test]
    fn round_trip() {
        let p = encode(SECRET, &hb());
        assert_eq!(decode(SECRET, &p), Ok(hb()));
    }

    #[test]
    fn wrong_secret_and_every_flipped_bit_fail_the_mac() {
        let p = encode(SECRET, &hb());
        assert_eq!(decode(b"another-secret-of-16+", &p), Err(Rejected::BadMac));
        for i in 0..p.len() * 8 {
            let mut q = p.clone();
            q[i / 8] ^= 1 << (i % 8);
            assert_eq!(decode(SECRET, &q), Err(Rejected::BadMac), "bit {i}");
        }
    }

    #[test]
    fn garbage_is_dropped_without_panics() {
        let mut rng = fastrand::Rng::with_seed(7);
        for len in 0..700 {
            let g: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            assert!(decode(SECRET, &g).is_err());
        }
        assert_eq!(decode(SECRET, &[0; 10]), Err(Rejected::Length));
        assert_eq!(decode(SECRET, &vec![0; 2000]), Err(Rejected::Length));
    }

    #[test]
    fn authenticated_but_malformed_is_named() {
        // Correct MAC over a body with a bad magic.
        let mut body = encode(SECRET, &hb());
        body.truncate(body.len() - MAC_LEN);
        body[0] = b'X';
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(SECRET).unwrap();
        mac.update(&body);
        body.extend_from_slice(&mac.finalize().into_bytes());
        assert_eq!(decode(SECRET, &body), Err(Rejected::Malformed));
    }

    #[test]
    fn settings_need_a_real_secret() {
        let s = GossipSettings::new("c", b"short", NodeName::new("a@b"), 1);
        assert!(matches!(s.validate(), Err(GossipError::WeakSecret(5))));
        let dbg = format!(
            "{:?}",
            GossipSettings::new("c", SECRET, NodeName::new("a@b"), 1)
        );
        assert!(!dbg.contains("secret-")); // never printed
    }
}
