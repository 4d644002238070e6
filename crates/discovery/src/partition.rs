//! Partition detection, without IO and without a clock: every
//! `formation.partition_check` the engine asks each connected peer for its
//! `nodes()` (an RPC of `erlang:nodes/0` over the distribution connection it
//! already has; see [`crate::Actor::peer_views`]), and this module turns the
//! answers into the connected components of the cluster graph and a
//! verdict ([`PartitionView`]) kept over time by [`PartitionTracker`].
//!
//! The graph's vertices are this node, its connected peers and every node a
//! peer reports; its edges are "A is connected to B" (taken as symmetric).
//! Discovered nodes that no vertex is connected to cannot be seen from
//! here; they count as one more component (`unreached`), since their own
//! links are invisible from this side of a cut. The [`PartitionTracker`]
//! counts only nodes it has seen in the graph before that way: a node
//! never seen (a new pod, not yet connected) is `pending`, not a
//! partition.
//!
//! The view is advice: the engine never disconnects anyone on its strength.
//! It only shortens the reconnect backoff toward nodes that discovery still
//! lists (so a healed cut is crossed again within about one check), and
//! reports (`/cluster`, `/metrics`, [`crate::Formation::partition`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::NodeName;

/// Each probed peer's answer: its `nodes()`, or why the probe failed.
pub type PeerViews = BTreeMap<NodeName, Result<BTreeSet<NodeName>, String>>;

/// The cluster as seen from one node at one check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionView {
    /// The connected components of the graph, largest first (then by
    /// name), each a set of node names; this node's component is among
    /// them.
    pub components: Vec<BTreeSet<NodeName>>,
    /// Discovered nodes that no node of the graph is connected to (counted
    /// as one more component when not empty).
    pub unreached: BTreeSet<NodeName>,
    /// Discovered nodes never seen in the graph (new pods): not counted as
    /// a component ([`PartitionTracker::observe`] moves them here from
    /// `unreached`).
    pub pending: BTreeSet<NodeName>,
    /// Discovered nodes this node is not connected to (unreached, pending,
    /// or reachable through a peer only).
    pub not_connected: BTreeSet<NodeName>,
    /// Peers whose probe failed (with the reason); their links are unknown.
    pub unprobed: BTreeMap<NodeName, String>,
}

impl PartitionView {
    /// Number of components, counting the unreached nodes as one.
    pub fn component_count(&self) -> usize {
        self.components.len() + usize::from(!self.unreached.is_empty())
    }

    /// A formed cluster: one component of more than this node, and every
    /// discovered node connected.
    pub fn whole(&self) -> bool {
        self.component_count() == 1
            && self.not_connected.is_empty()
            && self.components.first().is_some_and(|c| c.len() > 1)
    }

    /// True while some discovered node is not connected to this node, or
    /// the graph has more than one component.
    pub fn suspected(&self) -> bool {
        self.component_count() > 1 || !self.not_connected.is_empty()
    }
}

/// Computes the view: `me` and its `connected` peers, the peers' answers,
/// and the `discovered` set (the engine's desired set).
pub fn view(
    me: &NodeName,
    connected: &BTreeSet<NodeName>,
    views: &PeerViews,
    discovered: &BTreeSet<NodeName>,
) -> PartitionView {
    type Graph<'a> = BTreeMap<&'a NodeName, BTreeSet<&'a NodeName>>;
    fn link<'a>(adj: &mut Graph<'a>, a: &'a NodeName, b: &'a NodeName) {
        adj.entry(a).or_default().insert(b);
        adj.entry(b).or_default().insert(a);
    }
    let mut adjacency: Graph = BTreeMap::new();
    adjacency.entry(me).or_default();
    for c in connected {
        if c != me {
            link(&mut adjacency, me, c);
        }
    }
    let mut unprobed = BTreeMap::new();
    for (peer, answer) in views {
        adjacency.entry(peer).or_default();
        match answer {
            Ok(nodes) => {
                for n in nodes {
                    if n != peer {
                        link(&mut adjacency, peer, n);
                    }
                }
            }
            Err(reason) => {
                unprobed.insert(peer.clone(), reason.clone());
            }
        }
    }
    let mut components: Vec<BTreeSet<NodeName>> = Vec::new();
    let mut seen: BTreeSet<&NodeName> = BTreeSet::new();
    for start in adjacency.keys() {
        if !seen.insert(start) {
            continue;
        }
        let mut component = BTreeSet::new();
        let mut stack = vec![*start];
        while let Some(n) = stack.pop() {
            component.insert(n.clone());
            for m in &adjacency[n] {
                if seen.insert(m) {
                    stack.push(m);
                }
            }
        }
        components.push(component);
    }
    components.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    let unreached = discovered
        .iter()
        .filter(|n| *n != me && !adjacency.contains_key(n))
        .cloned()
        .collect();
    let not_connected = discovered
        .iter()
        .filter(|n| *n != me && !connected.contains(*n))
        .cloned()
        .collect();
    PartitionView {
        components,
        unreached,
        pending: BTreeSet::new(),
        not_connected,
        unprobed,
    }
}

/// Reads an answer of `erlang:nodes/0`: a list of atoms.
pub fn node_list(term: &erlkube_etf::Term) -> Result<BTreeSet<NodeName>, String> {
    let list = term
        .as_list()
        .ok_or_else(|| format!("erlang:nodes/0 answered {term}, not a list"))?;
    list.iter()
        .map(|t| {
            t.as_atom()
                .map(|a| NodeName::new(a.as_str()))
                .ok_or_else(|| format!("erlang:nodes/0 answered {term}, not a list of atoms"))
        })
        .collect()
}

/// What changed at a check.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transition {
    /// A cluster that was whole (one component) now has more than one.
    Split {
        /// Components now (unreached counted as one).
        components: usize,
    },
    /// A split cluster is whole again.
    Healed,
}

/// The view over time: the last view, whether a partition is suspected,
/// and how many partitions were seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionTracker {
    last: PartitionView,
    checks: u64,
    partitions: u64,
    was_whole: bool,
    split: bool,
    /// Every node seen in a component so far.
    known: BTreeSet<NodeName>,
}

/// A snapshot of the tracker (for metrics and the library API).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionStatus {
    /// The last view (empty before the first check).
    pub view: PartitionView,
    /// Checks made.
    pub checks: u64,
    /// Components at the last check (0 before the first).
    pub components: usize,
    /// [`PartitionView::suspected`] at the last check.
    pub suspected: bool,
    /// Partitions seen: times a whole cluster split.
    pub partitions: u64,
}

impl PartitionTracker {
    /// Takes a new view; returns the transition it makes, if any. A split
    /// is counted only after the cluster was [`PartitionView::whole`] at
    /// least once (a node alone before its first discovery answer, or a
    /// cold start before every node is connected, is no partition).
    pub fn observe(&mut self, mut view: PartitionView) -> Option<Transition> {
        self.checks += 1;
        for c in &view.components {
            self.known.extend(c.iter().cloned());
        }
        let (seen, new) = std::mem::take(&mut view.unreached)
            .into_iter()
            .partition(|n| self.known.contains(n));
        view.unreached = seen;
        view.pending.extend::<BTreeSet<NodeName>>(new);
        let count = view.component_count();
        self.last = view;
        let mut t = None;
        if count <= 1 {
            if self.split {
                t = Some(Transition::Healed);
            }
            self.split = false;
            self.was_whole |= self.last.whole();
        } else if self.was_whole && !self.split {
            self.split = true;
            self.partitions += 1;
            t = Some(Transition::Split { components: count });
        }
        t
    }

    /// The last view.
    pub fn view(&self) -> &PartitionView {
        &self.last
    }

    /// A snapshot.
    pub fn status(&self) -> PartitionStatus {
        PartitionStatus {
            view: self.last.clone(),
            checks: self.checks,
            components: if self.checks == 0 {
                0
            } else {
                self.last.component_count()
            },
            suspected: self.checks > 0 && self.last.suspected(),
            partitions: self.partitions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeName {
        NodeName::new(s)
    }

    fn set(names: &[&str]) -> BTreeSet<NodeName> {
        names.iter().map(|s| n(s)).collect()
    }

    fn views(entries: &[(&str, &[&str])]) -> PeerViews {
        entries.iter().map(|(p, v)| (n(p), Ok(set(v)))).collect()
    }

    #[test]
    fn a_full_mesh_is_one_component() {
        let v = view(
            &n("a"),
            &set(&["b", "c"]),
            &views(&[("b", &["a", "c"]), ("c", &["a", "b"])]),
            &set(&["a", "b", "c"]),
        );
        assert_eq!(v.components, vec![set(&["a", "b", "c"])]);
        assert_eq!(v.component_count(), 1);
        assert!(!v.suspected());
    }

    #[test]
    fn a_cut_shows_the_other_side_as_one_unreached_component() {
        // {1,2} | {3,4,5}, seen from 1.
        let v = view(
            &n("1"),
            &set(&["2"]),
            &views(&[("2", &["1"])]),
            &set(&["2", "3", "4", "5"]),
        );
        assert_eq!(v.components, vec![set(&["1", "2"])]);
        assert_eq!(v.unreached, set(&["3", "4", "5"]));
        assert_eq!(v.component_count(), 2);
        assert!(v.suspected());
    }

    #[test]
    fn a_node_reached_through_a_peer_only_is_one_component_but_suspected() {
        // a-b, b-c, a cannot reach c.
        let v = view(
            &n("a"),
            &set(&["b"]),
            &views(&[("b", &["a", "c"])]),
            &set(&["b", "c"]),
        );
        assert_eq!(v.component_count(), 1);
        assert!(v.unreached.is_empty());
        assert_eq!(v.not_connected, set(&["c"]));
        assert!(v.suspected());
    }

    #[test]
    fn peers_reporting_disjoint_groups_make_separate_components() {
        // A probed node answering with a group that shares no link with
        // ours (e.g. an answer from just before a cut).
        let v = view(
            &n("a"),
            &set(&["b"]),
            &views(&[("b", &["a"]), ("x", &["y"])]),
            &set(&[]),
        );
        assert_eq!(v.components, vec![set(&["a", "b"]), set(&["x", "y"])]);
        assert_eq!(v.component_count(), 2);
    }

    #[test]
    fn a_failed_probe_keeps_the_peer_in_our_component() {
        let mut pv = views(&[]);
        pv.insert(n("b"), Err("timeout".into()));
        let v = view(&n("a"), &set(&["b"]), &pv, &set(&["b"]));
        assert_eq!(v.components, vec![set(&["a", "b"])]);
        assert_eq!(v.unprobed.get(&n("b")).map(String::as_str), Some("timeout"));
        assert!(!v.suspected());
    }

    #[test]
    fn alone_with_nothing_discovered_is_one_component_but_no_cluster() {
        let v = view(&n("a"), &set(&[]), &views(&[]), &set(&["a"]));
        assert_eq!(v.component_count(), 1);
        assert!(!v.suspected());
        assert!(!v.whole());
    }

    #[test]
    fn tracker_counts_a_split_of_a_whole_cluster_once_and_its_heal() {
        let whole = view(
            &n("a"),
            &set(&["b"]),
            &views(&[("b", &["a"])]),
            &set(&["b"]),
        );
        let cut = view(&n("a"), &set(&[]), &views(&[]), &set(&["b"]));
        let alone = view(&n("a"), &set(&[]), &views(&[]), &set(&[]));
        let mut t = PartitionTracker::default();
        assert_eq!(t.status().components, 0);
        // Before the first discovery answer: one component, but no cluster.
        assert_eq!(t.observe(alone), None);
        assert!(!t.status().suspected);
        // Cold start: b discovered, never seen: pending, not a component.
        assert_eq!(t.observe(cut.clone()), None);
        let s = t.status();
        assert_eq!((s.components, s.suspected, s.partitions), (1, true, 0));
        assert_eq!(s.view.pending, set(&["b"]));
        assert_eq!(t.observe(whole.clone()), None);
        assert_eq!(
            t.observe(cut.clone()),
            Some(Transition::Split { components: 2 })
        );
        assert_eq!(t.observe(cut), None, "one partition, however many checks");
        let s = t.status();
        assert_eq!((s.components, s.suspected, s.partitions), (2, true, 1));
        assert_eq!(t.observe(whole), Some(Transition::Healed));
        let s = t.status();
        assert_eq!((s.components, s.suspected, s.partitions), (1, false, 1));
        assert_eq!(s.checks, 6);
    }
}
