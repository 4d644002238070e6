//! The agent's shared state and its renderings: `/readyz` verdict,
//! Prometheus text for `/metrics`, JSON for `/cluster`. Pure.

use std::collections::BTreeSet;
use std::fmt::{self, Write};
use std::time::Duration;

use erlkube_discovery::partition::PartitionStatus;
use erlkube_discovery::{DiscoveryError, Metrics, NodeName, Quorum, QuorumState};

use crate::mnesia::MnesiaStatus;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Upper bounds of the discovery latency histogram, seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A Prometheus histogram (cumulative on render).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, d: Duration) {
        if self.counts.is_empty() {
            self.counts = vec![0; LATENCY_BUCKETS.len()];
        }
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| s <= *b) {
            self.counts[i] += 1;
        }
        self.sum += s;
        self.count += 1;
    }
}

/// Where a drain (`GET /drain`, SIGTERM) stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Drain {
    /// No drain: `/readyz` follows the quorum.
    #[default]
    Serving,
    /// Draining: `/readyz` 503, the node still connected and serving.
    Draining,
    /// The grace is over: the node was disconnected from every peer and
    /// nothing is dialled any more. Final.
    Left,
}

impl Drain {
    /// `serving`, `draining`, `left`.
    pub fn as_str(self) -> &'static str {
        match self {
            Drain::Serving => "serving",
            Drain::Draining => "draining",
            Drain::Left => "left",
        }
    }
}

/// Everything the endpoints show.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// TLS distribution settings, when the agent speaks TLS: `/metrics`
    /// shows when the certificate (as its files are now) expires.
    pub tls: Option<erlkube_node::TlsConfig>,
    /// The BEAM node driven.
    pub node: String,
    /// The agent's own node name.
    pub agent: String,
    /// True while the node answers RPC.
    pub beam_up: bool,
    /// Times the node came up (first start and every restart).
    pub beam_ups: u64,
    /// Connection attempts to the node that it refused for a wrong cookie
    /// (the agent retries every `agent.wait_interval`; the log says so
    /// once, then at doubling intervals).
    pub cookie_rejections: u64,
    /// Times the node was seen registering with its port mapper while it
    /// was absent (`agent.register_poll_interval`), each followed at once
    /// by a connection attempt instead of the next `agent.wait_interval`.
    pub registrations_seen: u64,
    /// True while the agent follows the port mapper's registry (erlkube's
    /// WATCH request): a registration is seen the moment it happens, not
    /// at the next `agent.register_poll_interval` look.
    pub epmd_watch: bool,
    /// The nodes of the last successful discovery answer (self excluded).
    pub discovered: Option<BTreeSet<NodeName>>,
    /// The node's `nodes()`: the last read, kept current by its events.
    pub connected: BTreeSet<NodeName>,
    /// True while the node's nodeup/nodedown events arrive (a subscriber
    /// runs on the node); false while `nodes()` is polled instead.
    pub node_events: bool,
    /// nodeup/nodedown events received from the node.
    pub node_events_received: u64,
    /// Subscribers started on the node (one per node start, more if one ended).
    pub node_subscriptions: u64,
    /// Safety-net reads of `nodes()` made while events arrive.
    pub nodes_polls: u64,
    /// Safety-net reads that found the event-kept set wrong (then replaced it).
    pub nodes_corrections: u64,
    /// Engine counters of past incarnations (the engine restarts with the node).
    pub engine_base: Metrics,
    /// The running engine's counters.
    pub engine: Metrics,
    /// Successful discovery rounds.
    pub discovery_answers: u64,
    /// Failed discovery rounds.
    pub discovery_errors: u64,
    /// Times the strategy was restarted because it made no progress.
    pub discovery_restarts: u64,
    /// The last discovery error, if the last round failed.
    pub last_discovery_error: Option<DiscoveryError>,
    /// Discovery latency.
    pub discovery_latency: Histogram,
    /// Readiness rule.
    pub quorum: Quorum,
    /// Peers of the last complete discovery answer (self excluded).
    pub complete_peers: Option<usize>,
    /// The drain.
    pub drain: Drain,
    /// The running engine's partition view (components, suspicion).
    pub partition: PartitionStatus,
    /// Partitions seen by past engine incarnations.
    pub partitions_base: u64,
    /// The agent's Mnesia work (`None` when no `mnesia.tables`).
    pub mnesia: Option<MnesiaStatus>,
}

impl Status {
    /// Discovered peers that the node is connected to.
    pub fn connected_discovered(&self) -> usize {
        match &self.discovered {
            Some(d) => d.intersection(&self.connected).count(),
            None => 0,
        }
    }

    /// The node against its quorum (discovered peers it is connected to,
    /// counting the node itself).
    pub fn quorum_state(&self) -> QuorumState {
        QuorumState::new(
            self.quorum,
            self.discovered.is_some(),
            self.connected_discovered(),
            self.discovered.as_ref().map_or(0, |d| d.len()),
            self.complete_peers,
        )
    }

    /// Ready: the node is up, discovery has answered, the quorum is met
    /// (by default: connected to every discovered peer), and no drain has
    /// started.
    pub fn ready(&self) -> bool {
        self.beam_up
            && self.drain == Drain::Serving
            && self.quorum_state().met()
            && self.mnesia.as_ref().is_none_or(MnesiaStatus::ready)
    }

    fn total(&self, f: impl Fn(&Metrics) -> u64) -> u64 {
        f(&self.engine_base) + f(&self.engine)
    }

    /// The Prometheus text exposition (format 0.0.4, see
    /// [`METRICS_CONTENT_TYPE`]), written by `prometheus-client` from this
    /// snapshot.
    pub fn prometheus(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Snapshot(self.clone())));
        let mut out = String::new();
        prometheus_text::encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }

    /// `/cluster` as JSON.
    pub fn json(&self) -> String {
        let list = |s: &BTreeSet<NodeName>| {
            let items: Vec<String> = s.iter().map(|n| json_string(n.as_str())).collect();
            format!("[{}]", items.join(","))
        };
        format!(
            "{{\"node\":{},\"agent\":{},\"beam_up\":{},\"membership\":{},\"ready\":{},\"quorum\":{},\"drain\":{},\"discovered\":{},\"connected\":{},\"visible\":{},\"last_discovery_error\":{},\"partition\":{},\"mnesia\":{}}}\n",
            json_string(&self.node),
            json_string(&self.agent),
            self.beam_up,
            json_string(if self.node_events { "events" } else { "polling" }),
            self.ready(),
            {
                let q = self.quorum_state();
                format!(
                    "{{\"rule\":{},\"members\":{},\"needed\":{},\"met\":{}}}",
                    json_string(&q.quorum.to_string()),
                    q.members,
                    q.needed.map_or("null".into(), |n| n.to_string()),
                    q.met()
                )
            },
            json_string(self.drain.as_str()),
            self.discovered.as_ref().map_or("null".into(), list),
            list(&match &self.discovered {
                Some(d) => d.intersection(&self.connected).cloned().collect(),
                None => BTreeSet::new(),
            }),
            list(&self.connected),
            self.last_discovery_error
                .as_ref()
                .map_or("null".into(), |e| json_string(&e.to_string())),
            self.partition_json(),
            self.mnesia.as_ref().map_or("null".into(), MnesiaStatus::json),
        )
    }

    /// The `partition` object of `/cluster`: components as lists of node
    /// names (the unreached discovered nodes as one more, flagged).
    fn partition_json(&self) -> String {
        let list = |s: &BTreeSet<NodeName>| {
            let items: Vec<String> = s.iter().map(|n| json_string(n.as_str())).collect();
            format!("[{}]", items.join(","))
        };
        let p = &self.partition;
        let comps: Vec<String> = p.view.components.iter().map(list).collect();
        format!(
            "{{\"checks\":{},\"components\":{},\"suspected\":{},\"partitions\":{},\"groups\":[{}],\"unreached\":{},\"not_connected\":{}}}",
            p.checks,
            p.components,
            p.suspected,
            self.partitions_base + p.partitions,
            comps.join(","),
            list(&p.view.unreached),
            list(&p.view.not_connected),
        )
    }
}

/// The `Content-Type` of [`Status::prometheus`].
pub const METRICS_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A [`Status`] snapshot as a `prometheus-client` collector: every metric
/// is read from the snapshot when the registry is encoded.
#[derive(Debug)]
struct Snapshot(Status);

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let g = ConstGauge::new(v as i64);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// `name` without `_total`: the encoder adds it to counters.
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let e = &mut e;
        // Only with TLS; read from the files as they are now, so a renewed
        // certificate shows at once.
        if let Some(not_after) = s.tls.as_ref().and_then(|t| t.not_after()) {
            let now = std::time::SystemTime::now();
            let secs = match not_after.duration_since(now) {
                Ok(d) => d.as_secs() as i64,
                Err(past) => -(past.duration().as_secs() as i64),
            };
            let g = ConstGauge::new(secs);
            g.encode(e.encode_descriptor(
                "erlkube_agent_tls_certificate_expiry_seconds",
                "Seconds until the TLS distribution certificate (ssl_dist_optfile) expires; negative once expired.",
                None,
                g.metric_type(),
            )?)?;
        }
        gauge(
            e,
            "erlkube_agent_beam_up",
            "1 while the local BEAM node answers RPC.",
            s.beam_up as u64,
        )?;
        gauge(
            e,
            "erlkube_agent_ready",
            "1 when /readyz answers ready.",
            s.ready() as u64,
        )?;
        let q = s.quorum_state();
        gauge(
            e,
            "erlkube_agent_quorum_members",
            "Members connected, counting the node: 1 + discovered peers connected.",
            q.members as u64,
        )?;
        gauge(
            e,
            "erlkube_agent_quorum_needed",
            "Members formation.quorum needs (0 before a discovery answer).",
            q.needed.unwrap_or(0) as u64,
        )?;
        gauge(
            e,
            "erlkube_agent_draining",
            "1 from the start of a drain (GET /drain, SIGTERM) on.",
            (s.drain != Drain::Serving) as u64,
        )?;
        counter(
            e,
            "erlkube_agent_beam_starts",
            "Times the local BEAM node came up (start and restarts).",
            s.beam_ups,
        )?;
        counter(
            e,
            "erlkube_agent_beam_cookie_rejections",
            "Connection attempts to the local BEAM node refused for a wrong cookie.",
            s.cookie_rejections,
        )?;
        counter(
            e,
            "erlkube_agent_beam_registrations_seen",
            "Times the absent local BEAM node was seen registering with its port mapper (connected at once).",
            s.registrations_seen,
        )?;
        gauge(
            e,
            "erlkube_agent_epmd_watch",
            "1 while the port mapper tells the agent of each registration (erlkube's epmd; 0: it is polled).",
            s.epmd_watch as u64,
        )?;
        gauge(
            e,
            "erlkube_agent_discovered_nodes",
            "Peers in the last successful discovery answer.",
            s.discovered.as_ref().map_or(0, |d| d.len() as u64),
        )?;
        gauge(
            e,
            "erlkube_agent_connected_nodes",
            "Discovered peers the local BEAM node is connected to.",
            s.connected_discovered() as u64,
        )?;
        gauge(
            e,
            "erlkube_agent_beam_visible_nodes",
            "Length of the local BEAM node's nodes().",
            s.connected.len() as u64,
        )?;
        gauge(
            e,
            "erlkube_agent_beam_node_events",
            "1 while the node's nodeup/nodedown events arrive (0: nodes() is polled).",
            s.node_events as u64,
        )?;
        counter(
            e,
            "erlkube_agent_beam_node_events",
            "nodeup/nodedown events received from the node.",
            s.node_events_received,
        )?;
        counter(
            e,
            "erlkube_agent_beam_subscriptions",
            "Event subscribers started on the node.",
            s.node_subscriptions,
        )?;
        counter(
            e,
            "erlkube_agent_beam_nodes_polls",
            "Safety-net reads of the node's nodes() while events arrive.",
            s.nodes_polls,
        )?;
        counter(
            e,
            "erlkube_agent_beam_nodes_corrections",
            "Safety-net reads that found the event-kept membership wrong.",
            s.nodes_corrections,
        )?;
        counter(
            e,
            "erlkube_agent_connect_attempts",
            "net_kernel:connect_node/1 calls made.",
            s.total(|m| m.connect_attempts),
        )?;
        counter(
            e,
            "erlkube_agent_connect_failures",
            "net_kernel:connect_node/1 calls that failed.",
            s.total(|m| m.connect_failures),
        )?;
        counter(
            e,
            "erlkube_agent_removed_nodes",
            "Peers removed on evidence (absent from complete answers).",
            s.total(|m| m.removed),
        )?;
        counter(
            e,
            "erlkube_agent_discovery_answers",
            "Successful discovery rounds.",
            s.discovery_answers,
        )?;
        counter(
            e,
            "erlkube_agent_discovery_errors",
            "Failed discovery rounds.",
            s.discovery_errors,
        )?;
        counter(
            e,
            "erlkube_agent_discovery_restarts",
            "Times the discovery strategy was restarted because no round finished in time.",
            s.discovery_restarts,
        )?;
        gauge(
            e,
            "erlkube_cluster_components",
            "Connected components of the cluster graph at the last partition check (discovered nodes nobody here reaches count as one; 0 before the first check).",
            s.partition.components as u64,
        )?;
        gauge(
            e,
            "erlkube_partition_suspected",
            "1 while a discovered node is not connected to this node, or the cluster graph has more than one component.",
            s.partition.suspected as u64,
        )?;
        counter(
            e,
            "erlkube_partitions",
            "Times a whole cluster was seen split into more than one component.",
            s.partitions_base + s.partition.partitions,
        )?;
        if let Some(m) = &s.mnesia {
            mnesia_metrics(e, m)?;
        }
        let h = &s.discovery_latency;
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .enumerate()
            .map(|(i, b)| (*b, h.counts.get(i).copied().unwrap_or(0)))
            .collect();
        e.encode_descriptor(
            "erlkube_agent_discovery_duration_seconds",
            "Latency of successful discovery rounds.",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
    }
}

/// The `erlkube_mnesia_*` metrics (only when `mnesia.tables` is set).
fn mnesia_metrics(e: &mut DescriptorEncoder, m: &MnesiaStatus) -> fmt::Result {
    gauge(
        e,
        "erlkube_mnesia_ready",
        "1 when every configured Mnesia table has a loaded local replica and none conflicts.",
        m.ready() as u64,
    )?;
    gauge(
        e,
        "erlkube_mnesia_table_conflicts",
        "Configured tables that exist with another type or attributes (left untouched).",
        m.conflicts.len() as u64,
    )?;
    gauge(
        e,
        "erlkube_mnesia_db_nodes",
        "Members of the Mnesia schema (mnesia:system_info(db_nodes)) at the last check.",
        m.db_nodes.len() as u64,
    )?;
    gauge(
        e,
        "erlkube_mnesia_running_db_nodes",
        "Members running Mnesia with this node (running_db_nodes) at the last check.",
        m.running_db_nodes.len() as u64,
    )?;
    counter(
        e,
        "erlkube_mnesia_inconsistencies",
        "inconsistent_database system events seen on the node.",
        m.inconsistencies_seen,
    )?;
    counter(
        e,
        "erlkube_mnesia_inconsistencies_healed",
        "Restarts of Mnesia on the minority side that ended with the tables reloaded.",
        m.inconsistencies_healed,
    )?;
    counter(
        e,
        "erlkube_mnesia_removed_nodes",
        "Members gone for good removed from the Mnesia schema by this agent.",
        m.removed_nodes,
    )?;
    counter(
        e,
        "erlkube_mnesia_left_schema",
        "Clean leaves: at a drain by GET /drain, Mnesia stopped on this node and a peer removed it from the schema.",
        m.left_schema,
    )
}

/// A JSON string literal. Every control character is escaped (C1 and DEL
/// too), so it is also a valid YAML double-quoted scalar.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<NodeName> {
        names.iter().map(|n| NodeName::new(*n)).collect()
    }

    #[test]
    fn ready_needs_the_node_an_answer_and_every_peer() {
        let mut s = Status::default();
        assert!(!s.ready());
        s.discovered = Some(set(&["a@h", "b@h"]));
        s.connected = set(&["a@h"]);
        s.beam_up = true;
        assert!(!s.ready());
        s.connected = set(&["a@h", "b@h", "other@x"]);
        assert!(s.ready());
        s.beam_up = false;
        assert!(!s.ready());
        s.beam_up = true;
        s.connected = set(&["a@h"]);
        s.quorum = Quorum::Members(2);
        assert!(s.ready());
        s.drain = Drain::Draining;
        assert!(!s.ready(), "a drain makes the node unready at once");
        s.drain = Drain::Serving;
        s.quorum = Quorum::Majority;
        assert!(!s.ready(), "no complete answer yet");
        s.complete_peers = Some(2);
        assert!(s.ready(), "2 of 3 members");
        s.discovered = Some(BTreeSet::new());
        s.quorum = Quorum::All;
        assert!(s.ready(), "a cluster of one is formed");
    }

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let mut s = Status::default();
        s.discovery_latency.observe(Duration::from_millis(3));
        s.discovery_latency.observe(Duration::from_millis(30));
        s.discovery_latency.observe(Duration::from_secs(10));
        let text = s.prometheus();
        assert!(text.contains("erlkube_agent_discovery_duration_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(text.contains("erlkube_agent_discovery_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("erlkube_agent_discovery_duration_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("erlkube_agent_discovery_duration_seconds_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("erlkube_agent_discovery_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("erlkube_agent_discovery_duration_seconds_count 3\n"));
    }

    /// The exposition is what the hand-written renderer wrote before
    /// `prometheus-client` (golden text first made by that renderer):
    /// every name, type, help text and value kept. The quorum, drain and
    /// partition metrics added since stand in it too, at their places.
    #[test]
    fn metrics_text_is_unchanged_by_the_library() {
        let mut s = Status {
            beam_up: true,
            beam_ups: 2,
            cookie_rejections: 4,
            registrations_seen: 3,
            epmd_watch: true,
            discovered: Some(set(&["a@h"])),
            connected: set(&["a@h", "b@h"]),
            node_events: true,
            node_events_received: 5,
            node_subscriptions: 1,
            nodes_polls: 3,
            nodes_corrections: 1,
            discovery_answers: 7,
            discovery_errors: 2,
            ..Status::default()
        };
        s.discovery_latency.observe(Duration::from_millis(3));
        s.discovery_latency.observe(Duration::from_secs(1));
        assert_eq!(s.prometheus(), include_str!("../tests/golden/metrics.txt"));
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        assert_eq!(json_string("\u{7f}\u{85}é"), "\"\\u007f\\u0085é\"");
    }

    #[test]
    fn partition_shows_in_metrics_and_cluster() {
        use erlkube_discovery::partition::{view, PartitionTracker, PeerViews};
        let mut t = PartitionTracker::default();
        let mut views = PeerViews::new();
        views.insert(NodeName::new("b@h"), Ok(set(&["me@h", "c@h"])));
        t.observe(view(
            &NodeName::new("me@h"),
            &set(&["b@h", "c@h"]),
            &views,
            &set(&["b@h", "c@h"]),
        ));
        views.insert(NodeName::new("b@h"), Ok(set(&["me@h"])));
        t.observe(view(
            &NodeName::new("me@h"),
            &set(&["b@h"]),
            &views,
            &set(&["b@h", "c@h"]),
        ));
        let s = Status {
            partition: t.status(),
            partitions_base: 2,
            ..Status::default()
        };
        let text = s.prometheus();
        assert!(text.contains("\nerlkube_cluster_components 2\n"), "{text}");
        assert!(text.contains("\nerlkube_partition_suspected 1\n"), "{text}");
        assert!(text.contains("\nerlkube_partitions_total 3\n"), "{text}");
        let json = s.json();
        assert!(
            json.contains("\"partition\":{\"checks\":2,\"components\":2,\"suspected\":true,\"partitions\":3,\"groups\":[[\"b@h\",\"me@h\"]],\"unreached\":[\"c@h\"],\"not_connected\":[\"c@h\"]}"),
            "{json}"
        );
    }
}
