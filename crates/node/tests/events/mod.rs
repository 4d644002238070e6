//! Shared by the node's integration tests: waiting for one peer's
//! nodedown as an event, with a bound, instead of sleeping.

#![allow(dead_code)]

use std::time::Duration;

use erlkube_node::{DownReason, NodeEvent};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

/// The next nodedown of `peer` (other events are skipped), or `None` when
/// none came within `within`.
pub async fn nodedown_within(
    events: &mut Receiver<NodeEvent>,
    peer: &str,
    within: Duration,
) -> Option<DownReason> {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(NodeEvent::NodeDown { node, reason }) if node == peer => return reason,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => {
                    panic!("the node's events ended before {peer}'s nodedown")
                }
            }
        }
    };
    tokio::time::timeout(within, wait).await.ok()
}

/// The next nodedown of `peer` within `within`; panics without one.
pub async fn nodedown(
    events: &mut Receiver<NodeEvent>,
    peer: &str,
    within: Duration,
) -> DownReason {
    nodedown_within(events, peer, within)
        .await
        .unwrap_or_else(|| panic!("no nodedown of {peer} within {within:?}"))
}
