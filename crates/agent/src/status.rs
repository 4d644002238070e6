//! The agent's shared state and its renderings: `/readyz` verdict,
//! Prometheus text for `/metrics`, JSON for `/cluster`. Pure.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::time::Duration;

use erlkube_discovery::partition::PartitionStatus;
use erlkube_discovery::{Metrics, NodeName};

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

/// Everything the endpoints show.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// The BEAM node driven.
    pub node: String,
    /// The agent's own node name.
    pub agent: String,
    /// True while the node answers RPC.
    pub beam_up: bool,
    /// Times the node came up (first start and every restart).
    pub beam_ups: u64,
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
    pub last_discovery_error: Option<String>,
    /// Discovery latency.
    pub discovery_latency: Histogram,
    /// Peers needed for readiness (`None`: all discovered).
    pub ready_min_peers: Option<usize>,
    /// The running engine's partition view (components, suspicion).
    pub partition: PartitionStatus,
    /// Partitions seen by past engine incarnations.
    pub partitions_base: u64,
}

impl Status {
    /// Discovered peers that the node is connected to.
    pub fn connected_discovered(&self) -> usize {
        match &self.discovered {
            Some(d) => d.intersection(&self.connected).count(),
            None => 0,
        }
    }

    /// Ready: the node is up, discovery has answered, and the node is
    /// connected to every discovered peer (or to `ready_min_peers`).
    pub fn ready(&self) -> bool {
        let Some(d) = &self.discovered else {
            return false;
        };
        if !self.beam_up {
            return false;
        }
        let c = self.connected_discovered();
        match self.ready_min_peers {
            None => c == d.len(),
            Some(m) => c >= m,
        }
    }

    fn total(&self, f: impl Fn(&Metrics) -> u64) -> u64 {
        f(&self.engine_base) + f(&self.engine)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "erlkube_agent_beam_up",
            "gauge",
            "1 while the local BEAM node answers RPC.",
            self.beam_up as u64,
        );
        metric(
            "erlkube_agent_ready",
            "gauge",
            "1 when /readyz answers ready.",
            self.ready() as u64,
        );
        metric(
            "erlkube_agent_beam_starts_total",
            "counter",
            "Times the local BEAM node came up (start and restarts).",
            self.beam_ups,
        );
        metric(
            "erlkube_agent_discovered_nodes",
            "gauge",
            "Peers in the last successful discovery answer.",
            self.discovered.as_ref().map_or(0, |d| d.len() as u64),
        );
        metric(
            "erlkube_agent_connected_nodes",
            "gauge",
            "Discovered peers the local BEAM node is connected to.",
            self.connected_discovered() as u64,
        );
        metric(
            "erlkube_agent_beam_visible_nodes",
            "gauge",
            "Length of the local BEAM node's nodes().",
            self.connected.len() as u64,
        );
        metric(
            "erlkube_agent_beam_node_events",
            "gauge",
            "1 while the node's nodeup/nodedown events arrive (0: nodes() is polled).",
            self.node_events as u64,
        );
        metric(
            "erlkube_agent_beam_node_events_total",
            "counter",
            "nodeup/nodedown events received from the node.",
            self.node_events_received,
        );
        metric(
            "erlkube_agent_beam_subscriptions_total",
            "counter",
            "Event subscribers started on the node.",
            self.node_subscriptions,
        );
        metric(
            "erlkube_agent_beam_nodes_polls_total",
            "counter",
            "Safety-net reads of the node's nodes() while events arrive.",
            self.nodes_polls,
        );
        metric(
            "erlkube_agent_beam_nodes_corrections_total",
            "counter",
            "Safety-net reads that found the event-kept membership wrong.",
            self.nodes_corrections,
        );
        metric(
            "erlkube_agent_connect_attempts_total",
            "counter",
            "net_kernel:connect_node/1 calls made.",
            self.total(|m| m.connect_attempts),
        );
        metric(
            "erlkube_agent_connect_failures_total",
            "counter",
            "net_kernel:connect_node/1 calls that failed.",
            self.total(|m| m.connect_failures),
        );
        metric(
            "erlkube_agent_removed_nodes_total",
            "counter",
            "Peers removed on evidence (absent from complete answers).",
            self.total(|m| m.removed),
        );
        metric(
            "erlkube_agent_discovery_answers_total",
            "counter",
            "Successful discovery rounds.",
            self.discovery_answers,
        );
        metric(
            "erlkube_agent_discovery_errors_total",
            "counter",
            "Failed discovery rounds.",
            self.discovery_errors,
        );
        metric(
            "erlkube_cluster_components",
            "gauge",
            "Connected components of the cluster graph at the last partition check (discovered nodes nobody here reaches count as one; 0 before the first check).",
            self.partition.components as u64,
        );
        metric(
            "erlkube_partition_suspected",
            "gauge",
            "1 while a discovered node is not connected to this node, or the cluster graph has more than one component.",
            self.partition.suspected as u64,
        );
        metric(
            "erlkube_partitions_total",
            "counter",
            "Times a whole cluster was seen split into more than one component.",
            self.partitions_base + self.partition.partitions,
        );
        let h = &self.discovery_latency;
        let name = "erlkube_agent_discovery_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Latency of successful discovery rounds.\n# TYPE {name} histogram"
        );
        let mut cum = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cum += h.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum {}", h.sum);
        let _ = writeln!(out, "{name}_count {}", h.count);
        out
    }

    /// `/cluster` as JSON.
    pub fn json(&self) -> String {
        let list = |s: &BTreeSet<NodeName>| {
            let items: Vec<String> = s.iter().map(|n| json_string(n.as_str())).collect();
            format!("[{}]", items.join(","))
        };
        format!(
            "{{\"node\":{},\"agent\":{},\"beam_up\":{},\"membership\":{},\"ready\":{},\"discovered\":{},\"connected\":{},\"visible\":{},\"last_discovery_error\":{},\"partition\":{}}}\n",
            json_string(&self.node),
            json_string(&self.agent),
            self.beam_up,
            json_string(if self.node_events { "events" } else { "polling" }),
            self.ready(),
            self.discovered.as_ref().map_or("null".into(), list),
            list(&match &self.discovered {
                Some(d) => d.intersection(&self.connected).cloned().collect(),
                None => BTreeSet::new(),
            }),
            list(&self.connected),
            self.last_discovery_error.as_deref().map_or("null".into(), json_string),
            self.partition_json(),
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
        s.ready_min_peers = Some(1);
        assert!(s.ready());
        s.discovered = Some(BTreeSet::new());
        s.ready_min_peers = None;
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
