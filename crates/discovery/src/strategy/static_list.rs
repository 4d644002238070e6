use std::collections::BTreeSet;

use super::{Discover, StrategyKind};
use crate::{Answer, DiscoveryError, NodeName};

/// A fixed list of nodes (libcluster's `Epmd` strategy). Always a complete
/// answer; unreachable nodes are retried forever by the engine.
#[derive(Clone, Debug)]
pub struct StaticList {
    nodes: BTreeSet<NodeName>,
}

impl StaticList {
    /// The list.
    pub fn new(nodes: impl IntoIterator<Item = NodeName>) -> StaticList {
        StaticList {
            nodes: nodes.into_iter().collect(),
        }
    }
}

impl Discover for StaticList {
    fn kind(&self) -> StrategyKind {
        StrategyKind::Static
    }

    async fn discover(&mut self) -> Result<Answer, DiscoveryError> {
        Ok(Answer::new(self.nodes.clone(), true))
    }
}
