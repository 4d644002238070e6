//! Mnesia that follows membership: the agent keeps the configured RAM
//! tables replicated on every member of the cluster, removes members that
//! are gone for good from the schema, and heals the split left by a
//! netsplit. Everything is driven over RPC and `erl_eval` (no module is
//! loaded into the release): the node's own interpreter runs the few
//! expressions in [`JOIN`], [`INFO`] and [`SUBSCRIBER`].
//!
//! ```text
//!  quorum met ──> join: mnesia:start() (RAM schema) ; global:trans(schema lock,
//!                 change_config(extra_db_nodes, Peers), create_table once,
//!                 add_table_copy(T, node(), ram_copies)) ──> wait_for_tables ──> ready
//!  ready ──> every second: db_nodes, running_db_nodes; remove members gone
//!            for good (del_table_copy(schema, N), by the smallest running member)
//!        ──> system events: inconsistent_database ──> restart_minority | log
//!  GET /drain (the pod is going) ──> mnesia:stop() on the node; a running peer
//!            does del_table_copy(schema, Node) ──> the node is disconnected
//! ```
//!
//! This module is pure (configuration, state, decisions, the Erlang
//! texts); [`run`] does the IO.

pub mod config;
pub mod run;

use std::collections::BTreeSet;
use std::fmt::Write;

pub use config::{MnesiaConfig, PartitionPolicy, TableSpec, TableType, MNESIA_KEYS};

use crate::status::json_string;

/// Tag of every message the system-event subscriber sends.
pub const TAG: &str = "erlkube_mnesia";

/// Starts Mnesia (a RAM schema when the node has none on disc), then,
/// holding a `global` lock over the node and its peers so that two
/// schemas never both create a table, merges with the peers' schema and
/// creates or checks each table and adds the local RAM replica. Bindings:
/// `Peers` (node atoms), `Tables` (`[{Name, Type, Attributes}]`). Answers
/// `{ok, [{Name, created | added | present | {conflict, Type, Attrs} |
/// {error, Reason}}]}` or `{error, {Class, Reason}}`. The body is one
/// fun called at once, so that `erl_eval` binds no variable at the top
/// level (its answer carries the bindings back; funs among them would
/// travel for nothing).
pub const JOIN: &str = "(fun() -> J = fun() -> \
  case mnesia:change_config(extra_db_nodes, Peers) of \
    {ok, _} -> ok; \
    {error, Why} -> throw({change_config, Why}) \
  end, \
  Have = mnesia:system_info(tables), \
  Copy = fun(T) -> \
    case lists:member(node(), mnesia:table_info(T, all_nodes)) of \
      true -> present; \
      false -> \
        case mnesia:add_table_copy(T, node(), ram_copies) of \
          {atomic, ok} -> added; \
          {aborted, {already_exists, _, _}} -> present; \
          {aborted, R1} -> {error, R1} \
        end \
    end \
  end, \
  Check = fun(T, Ty, As) -> \
    case {mnesia:table_info(T, type), mnesia:table_info(T, attributes)} of \
      {Ty, As} -> Copy(T); \
      {OTy, OAs} -> {conflict, OTy, OAs} \
    end \
  end, \
  [{T, case lists:member(T, Have) of \
         true -> Check(T, Ty, As); \
         false -> \
           case mnesia:create_table(T, [{ram_copies, [node()]}, {type, Ty}, {attributes, As}]) of \
             {atomic, ok} -> created; \
             {aborted, {already_exists, _}} -> Check(T, Ty, As); \
             {aborted, R2} -> {error, R2} \
           end \
       end} || {T, Ty, As} <- Tables] \
end, \
try \
  case mnesia:system_info(is_running) of \
    yes -> ok; \
    _ -> ok = mnesia:start() \
  end, \
  {ok, global:trans({erlkube_mnesia_schema, self()}, J, [node() | Peers])} \
catch C:R -> {error, {C, R}} end end)().";

/// `{IsRunning, DbNodes, RunningDbNodes}`.
pub const INFO: &str = "{mnesia:system_info(is_running), mnesia:system_info(db_nodes), \
mnesia:system_info(running_db_nodes)}.";

/// The system-event subscriber (`Sink` bound to the agent's pid): links
/// to the sink, subscribes, confirms, then forwards every
/// `{mnesia_system_event, E}` as `{erlkube_mnesia, Self, E}`.
pub const SUBSCRIBER: &str = "link(Sink), \
case mnesia:subscribe(system) of \
  {ok, _} -> Sink ! {erlkube_mnesia, self(), subscribed}; \
  Err -> exit({subscribe, Err}) \
end, \
L = fun L() -> \
  receive \
    {mnesia_system_event, Ev} -> Sink ! {erlkube_mnesia, self(), Ev}, L(); \
    _ -> L() \
  end \
end, \
L().";

/// Where the agent's Mnesia work stands on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the node and its quorum.
    #[default]
    Waiting,
    /// Starting Mnesia, merging the schema, creating tables, adding replicas.
    Joining,
    /// Replicas added; these tables are still loading.
    Loading(Vec<String>),
    /// Every configured table (but conflicting ones) has a loaded local replica.
    Ready,
    /// Mnesia is being restarted to reload from the other side of a
    /// healed partition.
    Restarting(String),
    /// The last join step failed (retried).
    Failed(String),
    /// A drain by `GET /drain` stopped Mnesia on the node (the pod is
    /// going): nothing is joined again.
    Left,
}

impl Phase {
    /// A short word for `/cluster`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Joining => "joining",
            Phase::Loading(_) => "loading",
            Phase::Ready => "ready",
            Phase::Restarting(_) => "restarting",
            Phase::Failed(_) => "failed",
            Phase::Left => "left",
        }
    }
}

/// The agent's Mnesia view, shown by `/readyz`, `/metrics`, `/cluster`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MnesiaStatus {
    /// Configured table names.
    pub tables: Vec<String>,
    /// The policy after a netsplit.
    pub policy: &'static str,
    /// Where the work stands.
    pub phase: Phase,
    /// Tables that exist with another type or attributes than configured
    /// (one sentence each). Nothing is changed on them.
    pub conflicts: Vec<String>,
    /// `mnesia:system_info(db_nodes)` at the last check.
    pub db_nodes: BTreeSet<String>,
    /// `mnesia:system_info(running_db_nodes)` at the last check.
    pub running_db_nodes: BTreeSet<String>,
    /// `inconsistent_database` events received.
    pub inconsistencies_seen: u64,
    /// Restarts after an inconsistency that ended with the tables loaded.
    pub inconsistencies_healed: u64,
    /// Members removed from the schema.
    pub removed_nodes: u64,
    /// Clean leaves: this node removed from the schema by a peer, at its
    /// drain by `GET /drain`.
    pub left_schema: u64,
    /// The last `inconsistent_database` event, printed.
    pub last_inconsistency: Option<String>,
}

impl MnesiaStatus {
    /// The state before the node is first seen.
    pub fn new(config: &MnesiaConfig) -> MnesiaStatus {
        MnesiaStatus {
            tables: config.tables.iter().map(|t| t.name.clone()).collect(),
            policy: config.partition_policy.as_str(),
            ..MnesiaStatus::default()
        }
    }

    /// Every table has a loaded local replica and none conflicts.
    pub fn ready(&self) -> bool {
        self.phase == Phase::Ready && self.conflicts.is_empty()
    }

    /// Why the node is not ready, for `/readyz`.
    pub fn why_not_ready(&self) -> String {
        if !self.conflicts.is_empty() {
            return format!(
                "{}; nothing was deleted or changed: drop or rename the table, or configure mnesia.tables to match",
                self.conflicts.join("; ")
            );
        }
        match &self.phase {
            Phase::Waiting => "waiting for the node and its quorum before joining".into(),
            Phase::Joining => "joining the cluster's schema and adding the local replicas".into(),
            Phase::Loading(t) => format!("tables still loading: {}", t.join(", ")),
            Phase::Ready => "ready".into(),
            Phase::Restarting(why) => {
                format!("restarting Mnesia to reload from the majority: {why}")
            }
            Phase::Failed(e) => format!("join failed (retrying): {e}"),
            Phase::Left => "Mnesia stopped on the node by the drain (the pod is going)".into(),
        }
    }

    /// The `mnesia` object of `/cluster`.
    pub fn json(&self) -> String {
        let list = |s: &mut dyn Iterator<Item = &String>| {
            let items: Vec<String> = s.map(|n| json_string(n)).collect();
            format!("[{}]", items.join(","))
        };
        let loading: Vec<String> = match &self.phase {
            Phase::Loading(t) => t.clone(),
            _ => Vec::new(),
        };
        let detail = match &self.phase {
            Phase::Restarting(s) | Phase::Failed(s) => json_string(s),
            _ => "null".into(),
        };
        let mut out = String::new();
        let _ = write!(
            out,
            "{{\"phase\":{},\"ready\":{},\"detail\":{},\"tables\":{},\"loading\":{},\"conflicts\":{},\"db_nodes\":{},\"running_db_nodes\":{},\"partition_policy\":{},\"inconsistencies_seen\":{},\"inconsistencies_healed\":{},\"removed_nodes\":{},\"left_schema\":{},\"last_inconsistency\":{}}}",
            json_string(self.phase.as_str()),
            self.ready(),
            detail,
            list(&mut self.tables.iter()),
            list(&mut loading.iter()),
            list(&mut self.conflicts.iter()),
            list(&mut self.db_nodes.iter()),
            list(&mut self.running_db_nodes.iter()),
            json_string(self.policy),
            self.inconsistencies_seen,
            self.inconsistencies_healed,
            self.removed_nodes,
            self.left_schema,
            self.last_inconsistency
                .as_deref()
                .map_or("null".into(), json_string),
        );
        out
    }
}

/// After `inconsistent_database`: does the side `mine` (this node's
/// `running_db_nodes`) restart, against the side `theirs` (the peer's)?
/// The smaller side restarts; on a tie, the side that does not hold the
/// smallest node name of the two. Both sides compute the same answer.
pub fn restarts(mine: &BTreeSet<String>, theirs: &BTreeSet<String>) -> bool {
    if mine.is_empty() || theirs.is_empty() || !mine.is_disjoint(theirs) {
        return false;
    }
    match mine.len().cmp(&theirs.len()) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => theirs.first() < mine.first(),
    }
}

/// What the agent knows about a schema member from discovery and the
/// node's connections, for the removal rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// A complete discovery answer has been seen.
    pub complete_answer: bool,
    /// The member is in the last discovered set.
    pub discovered: bool,
    /// The node is connected to the member.
    pub connected: bool,
    /// Mnesia runs on the member (in `running_db_nodes`).
    pub running: bool,
}

impl Evidence {
    /// Positive evidence that the member is gone: discovery (complete)
    /// no longer lists it, the node is not connected to it, and Mnesia
    /// does not count it as running.
    pub fn gone(&self) -> bool {
        self.complete_answer && !self.discovered && !self.connected && !self.running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_smaller_side_restarts_and_ties_are_broken_by_the_smallest_name() {
        let one = set(&["a@1"]);
        let two = set(&["a@2", "a@3"]);
        assert!(restarts(&one, &two));
        assert!(!restarts(&two, &one));
        let (x, y) = (set(&["a@1"]), set(&["a@2"]));
        assert!(!restarts(&x, &y), "the side holding a@1 stays");
        assert!(restarts(&y, &x));
        assert!(
            !restarts(&x, &set(&["a@1", "a@2"])),
            "overlapping views: no verdict"
        );
        assert!(!restarts(&x, &BTreeSet::new()));
    }

    #[test]
    fn gone_needs_every_piece_of_evidence() {
        let e = Evidence {
            complete_answer: true,
            discovered: false,
            connected: false,
            running: false,
        };
        assert!(e.gone());
        assert!(!Evidence {
            complete_answer: false,
            ..e
        }
        .gone());
        assert!(!Evidence {
            discovered: true,
            ..e
        }
        .gone());
        assert!(!Evidence {
            connected: true,
            ..e
        }
        .gone());
        assert!(!Evidence { running: true, ..e }.gone());
    }

    #[test]
    fn readiness_names_loading_tables_and_conflicts() {
        let mut s = MnesiaStatus {
            tables: vec!["cache".into(), "sessions".into()],
            phase: Phase::Loading(vec!["sessions".into()]),
            ..MnesiaStatus::default()
        };
        assert!(!s.ready());
        assert_eq!(s.why_not_ready(), "tables still loading: sessions");
        s.phase = Phase::Ready;
        assert!(s.ready());
        s.conflicts
            .push("table cache exists as bag, configured as set".into());
        assert!(!s.ready());
        assert!(s.why_not_ready().contains("nothing was deleted"));
        assert!(s
            .json()
            .contains("\"conflicts\":[\"table cache exists as bag, configured as set\"]"));
    }

    #[test]
    fn a_clean_leave_shows_as_the_left_phase_and_is_counted() {
        let s = MnesiaStatus {
            tables: vec!["cache".into()],
            phase: Phase::Left,
            left_schema: 1,
            ..MnesiaStatus::default()
        };
        assert!(!s.ready());
        assert!(s
            .why_not_ready()
            .contains("stopped on the node by the drain"));
        let j = s.json();
        assert!(j.contains("\"phase\":\"left\""), "{j}");
        assert!(j.contains("\"left_schema\":1"), "{j}");
    }

    #[test]
    fn the_erlang_texts_are_ascii_and_end_with_a_dot() {
        for t in [JOIN, INFO, SUBSCRIBER] {
            assert!(t.is_ascii() && t.trim_end().ends_with('.'));
        }
    }
}
