//! Why a discovery round failed, typed where the failure arises (DNS, the
//! Kubernetes API, epmd, gossip, the hosts file) and carried unchanged to
//! where it is shown (the engine's events, the agent's status). `Display`
//! gives the log text; the library error underneath (an IO or resolver
//! error) stays text, since those types are neither `Clone` nor comparable.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::kubernetes::KubeError;

/// The cause inside a [`DiscoveryError`](crate::DiscoveryError).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    /// The DNS resolver could not be built (e.g. an unreadable
    /// `resolv.conf`).
    #[error("{0}")]
    DnsResolver(String),
    /// A DNS query failed.
    #[error("{query}: {error}")]
    DnsQuery {
        /// The name queried.
        query: String,
        /// The resolver's error.
        error: String,
    },
    /// A DNS query had no records and `empty_answer = "error"`.
    #[error("{query}: no records (empty_answer = \"error\")")]
    DnsNoRecords {
        /// The name queried.
        query: String,
    },
    /// An epmd did not answer NAMES.
    #[error("epmd at {addr}: {error}")]
    Epmd {
        /// The epmd asked.
        addr: SocketAddr,
        /// The client's error.
        error: String,
    },
    /// The hosts file cannot be read.
    #[error("{}: {error}", path.display())]
    HostsFileRead {
        /// The file.
        path: PathBuf,
        /// The IO error.
        error: String,
    },
    /// The hosts file cannot be parsed.
    #[error("{}: {error}", path.display())]
    HostsFileParse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        error: String,
    },
    /// No host of the hosts file answered.
    #[error("{}", join(.0))]
    HostsUnreachable(Vec<HostFailure>),
    /// The Kubernetes client could not be built.
    #[error("{0}")]
    KubeClient(KubeError),
    /// A Kubernetes API request failed.
    #[error("{op}: {failure}")]
    KubeApi {
        /// The request.
        op: KubeOp,
        /// How it failed.
        failure: KubeFailure,
    },
    /// A gossip heartbeat could not be sent.
    #[error("send to {dest}: {error}")]
    GossipSend {
        /// The destination.
        dest: SocketAddr,
        /// The IO error.
        error: String,
    },
}

/// One host of a hosts file whose epmd did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFailure {
    /// The host as written in the file.
    pub host: String,
    /// Why (cannot resolve, the epmd client's error).
    pub error: String,
}

impl fmt::Display for HostFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.host, self.error)
    }
}

fn join(failures: &[HostFailure]) -> String {
    failures
        .iter()
        .map(HostFailure::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A Kubernetes API request of the strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KubeOp {
    /// Listing the watched objects.
    List,
    /// Starting a watch.
    Watch,
    /// An open watch stream.
    WatchStream,
}

impl fmt::Display for KubeOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KubeOp::List => "list",
            KubeOp::Watch => "watch",
            KubeOp::WatchStream => "watch stream broke",
        })
    }
}

/// How a Kubernetes API request failed (never holds the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KubeFailure {
    /// 403: the service account lacks a permission.
    #[error("403 Forbidden ({message}); the service account needs get/list/watch on this resource (see docs/kubernetes.md)")]
    Forbidden {
        /// The server's message.
        message: String,
    },
    /// 401: the token was rejected.
    #[error("401 Unauthorized ({message}); the token was rejected")]
    Unauthorized {
        /// The server's message.
        message: String,
    },
    /// Another error status (from a request or inside a watch stream).
    #[error("{code} {reason} ({message})")]
    Status {
        /// HTTP-style status code.
        code: u16,
        /// The server's reason word.
        reason: String,
        /// The server's message.
        message: String,
    },
    /// The request did not reach the server or its answer was unusable;
    /// the client error with its chain of sources.
    #[error("{0}")]
    Transport(String),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    /// An open watch said nothing for too long; it is re-opened.
    #[error("silent for {0:?}; re-watching")]
    Silent(Duration),
}
