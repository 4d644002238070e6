//! Readiness gated on a quorum (`formation.quorum`): how many members of
//! the cluster, counting the node itself, must be connected before the node
//! counts as formed. Pure: the engine and the agent feed it counts.

use std::fmt;

/// The rule (`formation.quorum`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quorum {
    /// Connected to every discovered peer (the default: what `/readyz`
    /// always meant).
    #[default]
    All,
    /// At least this many members connected, counting the node itself
    /// (`3`: the node and two peers). Never 0.
    Members(usize),
    /// More than half of the last complete discovered set, counting the
    /// node itself (5 discovered members: 3).
    Majority,
}

impl Quorum {
    /// `all`, `majority` or a whole number of members of at least 1.
    pub fn parse(text: &str) -> Result<Quorum, String> {
        match text.trim() {
            "all" => Ok(Quorum::All),
            "majority" => Ok(Quorum::Majority),
            t => match t.parse::<u64>() {
                Ok(0) => Err(format!(
                    "must be at least 1 (members counting this node), got {text:?}"
                )),
                Ok(n) => Ok(Quorum::Members(usize::try_from(n).unwrap_or(usize::MAX))),
                Err(_) => Err(format!(
                    "must be a whole number of members counting this node (1 or more), \"majority\" or \"all\"; got {text:?}"
                )),
            },
        }
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::All => f.write_str("all"),
            Quorum::Majority => f.write_str("majority"),
            Quorum::Members(n) => write!(f, "{n}"),
        }
    }
}

/// Where a node stands against its quorum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuorumState {
    /// The rule.
    pub quorum: Quorum,
    /// Members connected, counting this node: 1 + discovered peers connected.
    pub members: usize,
    /// Members discovered, counting this node.
    pub discovered: usize,
    /// Members needed; `None` before the first discovery answer (and, for
    /// `majority`, before the first complete one).
    pub needed: Option<usize>,
}

impl QuorumState {
    /// The state for `connected_peers` connected of `discovered_peers`
    /// discovered (self excluded from both); `answered` once discovery has
    /// answered; `complete_peers` the size of the last complete answer
    /// (self excluded).
    pub fn new(
        quorum: Quorum,
        answered: bool,
        connected_peers: usize,
        discovered_peers: usize,
        complete_peers: Option<usize>,
    ) -> QuorumState {
        let needed = if !answered {
            None
        } else {
            match quorum {
                Quorum::All => Some(discovered_peers + 1),
                Quorum::Members(n) => Some(n),
                // More than half of the members (the peers and this node).
                Quorum::Majority => complete_peers.map(|p| {
                    let members = p + 1;
                    members / 2 + 1
                }),
            }
        };
        QuorumState {
            quorum,
            members: connected_peers + 1,
            discovered: discovered_peers + 1,
            needed,
        }
    }

    /// True when enough members are connected.
    pub fn met(&self) -> bool {
        self.needed.is_some_and(|n| self.members >= n)
    }
}

impl fmt::Display for QuorumState {
    /// `3 of 3 members connected (quorum 3, 5 discovered)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.needed {
            Some(n) => write!(
                f,
                "{} of {n} members connected (quorum {}, {} discovered, counting this node)",
                self.members.min(n),
                self.quorum,
                self.discovered
            ),
            None => write!(
                f,
                "no {}discovery answer yet (quorum {})",
                if self.quorum == Quorum::Majority {
                    "complete "
                } else {
                    ""
                },
                self.quorum
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_all_majority_and_positive_counts_only() {
        assert_eq!(Quorum::parse("all"), Ok(Quorum::All));
        assert_eq!(Quorum::parse("majority"), Ok(Quorum::Majority));
        assert_eq!(Quorum::parse("3"), Ok(Quorum::Members(3)));
        for bad in ["0", "-1", "three", "", "1.5", "most"] {
            let e = Quorum::parse(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    #[test]
    fn needed_members_by_rule() {
        let s = QuorumState::new(Quorum::Members(3), true, 1, 4, Some(4));
        assert_eq!((s.members, s.needed, s.met()), (2, Some(3), false));
        assert!(QuorumState::new(Quorum::Members(3), true, 2, 4, Some(4)).met());
        // Majority of 5 members (4 peers + self) is 3.
        let m = QuorumState::new(Quorum::Majority, true, 2, 4, Some(4));
        assert_eq!((m.needed, m.met()), (Some(3), true));
        // Majority of 4 is 3; of 1 (alone) is 1.
        assert_eq!(
            QuorumState::new(Quorum::Majority, true, 0, 3, Some(3)).needed,
            Some(3)
        );
        assert!(QuorumState::new(Quorum::Majority, true, 0, 0, Some(0)).met());
        // No complete answer yet: majority unknown.
        assert!(!QuorumState::new(Quorum::Majority, true, 4, 4, None).met());
        // All: every discovered peer.
        assert!(!QuorumState::new(Quorum::All, true, 3, 4, Some(4)).met());
        assert!(QuorumState::new(Quorum::All, true, 4, 4, Some(4)).met());
        // Nothing before an answer.
        assert!(!QuorumState::new(Quorum::Members(1), false, 0, 0, None).met());
        assert_eq!(
            QuorumState::new(Quorum::Members(3), true, 1, 4, None).to_string(),
            "2 of 3 members connected (quorum 3, 5 discovered, counting this node)"
        );
    }
}
