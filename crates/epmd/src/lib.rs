//! The port-mapper daemon and client, over `erlkube-proto`'s EPMD messages.
//! Uses tokio (network IO); the protocol and the registry themselves live,
//! IO-free, in `erlkube_proto::epmd`.
//!
//! ```text
//!   TcpListener(s) (TCP_DEFER_ACCEPT) ──accept4──▶ read at once
//!        request complete, not ALIVE2: answered inline, closed (no task)
//!        otherwise ──▶ one task per connection
//!                                │ read frame (packet/idle timeouts, size cap)
//!                                │ erlkube_proto::epmd::decode_request
//!                                ▼
//!                    Mutex<Registry> (register / lookup / names / stop)
//!                                │
//!                                ▼ Response::encode → write → close
//!                                  (ALIVE2: keep the socket; its close
//!                                   unregisters the node)
//! ```
//!
//! - [`server::run`]: the daemon on listeners you bind (testable on
//!   `127.0.0.1:0`), [`server::Config`], [`server::bind_default`].
//! - [`client::Client`]: register (a [`client::Registration`] guard that
//!   holds the connection and the creation), `port_please`, `names`,
//!   `dump`, `kill`, `stop`, and `send` (a [`client::Exchange`] whose
//!   answer the caller reads byte for byte: the `erlkube epmd` command
//!   line prints it as OTP's `epmd` does).
//! - [`metrics::Metrics`]: counters rendered in Prometheus text format.

pub mod client;
pub mod metrics;
pub mod server;
pub mod sys;

pub use client::{Client, ClientError, Exchange, KillReply, Names, Registration, StopReply, Watch};
pub use erlkube_proto::epmd::{NameEntry, NodeInfo};
pub use server::{is_local_peer, run, Config, Exit};
