//! Cluster formation: discovery strategies that say which nodes should be in
//! the cluster, and the formation engine that makes the connected set follow.
//! Does IO through tokio (strategies do DNS via hickory-resolver and epmd
//! NAMES via erlkube-epmd; the engine drives an actor); the decision itself
//! ([`plan::Plan`]) and the configuration ([`config`]) are pure.
//!
//! ```text
//! strategy::poll(Discover) --Update--> Engine(Plan) --connect/disconnect--> Actor
//!                                          |                          (erlkube_agent's RustNode
//!                                          +--> Event broadcast,        and BeamNode, ...)
//!                                               Metrics snapshot
//! ```
//!
//! The contract between the two halves:
//!
//! - A strategy runs as its own task and sends [`Update`]s: a *successful*
//!   answer ([`Update::Answer`]) or an error ([`Update::Error`]). Polling
//!   strategies (DNS, epmd, hosts file) send one per round; watching
//!   strategies (Kubernetes EndpointSlice watch) send one per change.
//! - Only an answer with [`Answer::complete`] set is evidence that a node
//!   missing from it has left. An incomplete answer (truncated DNS, a partial
//!   page) is merged into the desired set but never prunes it. An error is
//!   never evidence of anything: the engine keeps the last good set.
//! - The engine acts through an [`Actor`]: the local Rust node, or (for the
//!   agent) a BEAM node reached over RPC.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

pub mod actor;
pub mod config;
pub mod engine;
pub mod form;
pub mod liveness;
pub mod partition;
pub mod plan;
mod probe;
pub mod quorum;
pub mod reason;
mod start;
pub mod strategy;

pub use strategy::{gossip, kubernetes};

pub use actor::{Actor, ConnectError};
pub use engine::{Engine, EngineConfig, Formation, Metrics};
pub use form::HostForm;
pub use plan::{Action, Event, Plan, PlanConfig};
pub use quorum::{Quorum, QuorumState};
pub use reason::Reason;

/// A node name as Erlang spells it: `name@host`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(String);

impl NodeName {
    /// Wraps a name; see [`NodeName::parse`] for checked input.
    pub fn new(name: impl Into<String>) -> NodeName {
        NodeName(name.into())
    }

    /// A name `erl` accepts (in either name mode): the one check of
    /// [`erlkube_proto::name`].
    pub fn parse(text: &str) -> Result<NodeName, InvalidNodeName> {
        erlkube_proto::name::check_node_name(text, erlkube_proto::name::NameMode::Any)
            .map_err(InvalidNodeName)?;
        Ok(NodeName(text.to_owned()))
    }

    /// The part after `@`.
    pub fn host(&self) -> &str {
        self.0.split_once('@').map_or("", |(_, h)| h)
    }

    /// The whole name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A string that is not a node name `erl` accepts; the reason says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(transparent)]
pub struct InvalidNodeName(pub erlkube_proto::name::NodeNameError);

/// One successful discovery answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The nodes the answer names.
    pub nodes: BTreeSet<NodeName>,
    /// True when the answer is the whole truth (so nodes absent from it have
    /// left); false when it may be partial (truncated DNS answer).
    pub complete: bool,
    /// Nodes the source still lists but that must not be dialled (a
    /// Kubernetes endpoint that is terminating or not ready): an existing
    /// connection is kept, none is made. Disjoint from `nodes`.
    pub passive: BTreeSet<NodeName>,
    /// How long the round took to answer (for metrics), when measured.
    pub elapsed: Option<Duration>,
}

impl Answer {
    /// An answer without a measured latency.
    pub fn new(nodes: BTreeSet<NodeName>, complete: bool) -> Answer {
        Answer {
            nodes,
            complete,
            passive: BTreeSet::new(),
            elapsed: None,
        }
    }
}

/// What a strategy reports.
#[derive(Debug)]
pub enum Update {
    /// A successful answer.
    Answer(Answer),
    /// Discovery failed this time; never evidence that nodes left.
    Error(DiscoveryError),
}

/// Why a discovery round failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The source could not be reached or did not answer in time.
    #[error("{strategy}: source unavailable: {reason}")]
    Unavailable {
        /// Strategy name, e.g. `dns_a`.
        strategy: crate::strategy::StrategyKind,
        /// Why (no secrets).
        reason: Reason,
    },
    /// The source answered with something that cannot be used.
    #[error("{strategy}: bad answer: {reason}")]
    BadAnswer {
        /// Strategy name.
        strategy: crate::strategy::StrategyKind,
        /// Why (no secrets).
        reason: Reason,
    },
}

impl DiscoveryError {
    /// The strategy that failed.
    pub fn strategy(&self) -> strategy::StrategyKind {
        match self {
            DiscoveryError::Unavailable { strategy, .. }
            | DiscoveryError::BadAnswer { strategy, .. } => *strategy,
        }
    }

    /// Why it failed.
    pub fn reason(&self) -> &Reason {
        match self {
            DiscoveryError::Unavailable { reason, .. }
            | DiscoveryError::BadAnswer { reason, .. } => reason,
        }
    }
}
