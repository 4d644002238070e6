//! The erlkube agent: clusters an unmodified BEAM node from beside it.
//! Owns the agent runtime (a hidden Rust node that drives the BEAM node over
//! RPC as the formation engine's actor), its HTTP endpoints (`/healthz`,
//! `/readyz`, `/metrics`, `/cluster`), its configuration (`[agent]`,
//! `[nodename]` and `[mnesia]` next to the formation keys), Mnesia RAM
//! tables that follow membership ([`mnesia`]) and node naming from a pod's
//! environment. Does IO (tokio: distribution, HTTP, DNS through the
//! strategies); [`nodename`], [`status`], [`throttle`] and [`config`] are pure.
//!
//! ```text
//!  pod: BEAM node (erl -name app@10.0.0.5, no clustering code)
//!         ^ rpc: net_kernel:connect_node/1, erlang:disconnect_node/1,
//!         |      erlang:nodes/0 (safety net), erlang:spawn/3 of the subscriber
//!         | nodeup/nodedown events from the subscriber (monitor::Subscription)
//!         | (hidden distribution connection, the node's cookie)
//!       erlkube agent: strategy -> engine -> BeamNode actor; HTTP :9568
//! ```

pub mod beam;
pub mod config;
pub mod http;
pub mod mnesia;
pub mod monitor;
pub mod nodename;
pub mod rpc;
pub mod runtime;
pub mod rust_node;
pub mod status;
pub mod throttle;

pub use beam::BeamNode;
pub use config::{resolve_agent, AgentConfig};
pub use runtime::{Agent, AgentError};
pub use status::Status;
