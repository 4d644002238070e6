//! A Rust node of an Erlang cluster. Owns the listener, one tokio task per
//! distribution connection (handshake, 4-byte framing, ticks, fragments,
//! a bounded outbound queue), processes with mailboxes, registered names,
//! and the `net_kernel` answer that makes `net_adm:ping/1` say `pong`.
//! Also the runtime a cluster member needs: links, monitors and exit
//! signals (`trap_exit`, `noconnection` on nodedown), the gen_server
//! protocol both ways ([`Node::gen_call`], [`Node::serve_gen_server`]),
//! RPC both ways ([`Node::rpc_call`], [`Node::register_fn`]: `erpc` via
//! SPAWN_REQUEST and the legacy `rex`), and enough of `global`'s connect
//! protocol for `global:sync()` on BEAM nodes to return.
//! Does IO (tokio); the protocol itself lives in `erlkube_proto::dist`.
//! A peer given a socket address in [`NodeConfig::known_addrs`] (the local
//! end of a port-forward) is dialled there: its host is not resolved and
//! epmd is not asked.
//!
//! ```text
//!  Node ──► listener task ──► acceptor handshake ─┐
//!    │                                              ├─► connection task (one per peer)
//!    └──► connect(peer): epmd / known port ─► initiator handshake ─┘      │
//!  Process (pid + mailbox) ◄──── SEND / REG_SEND / ALIAS_SEND ◄──────────┘
//! ```

pub mod config;
pub mod demo;
pub mod epmd;
pub mod ssl_optfile;
pub mod tls;

// The connection layer, bottom up: handshake driver, outbound queue,
// dispatch (services register with it), the connection loop, and the two
// ways a connection starts (accept, dial).
mod accept;
mod connection;
mod dial;
mod dispatch;
mod handshake;
mod outq;
mod stream_conn;

// The runtime and the built-in services; they register with `dispatch`.
mod gen;
mod global;
mod mailbox;
mod net_kernel;
mod pg;
mod pubsub;
mod rpc;
mod server;
mod signals;

#[cfg(test)]
mod sans_io_tests;

pub use gen::{CallError, CallTarget, GenFrom, GenMessage};
pub use global::{GlobalError, ResolveMethod};
pub use pg::PgError;
pub use pubsub::{PubSubError, Subscription, PUBSUB_SCOPE};
pub use rpc::{ExceptionClass, RpcError};

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use erlkube_etf::{Atom, Pid, Reference, Term};
use erlkube_proto::dist::control::{ControlMessage, DistMessage};
use erlkube_proto::dist::HandshakeError;
use tokio::sync::{broadcast, mpsc, watch, Notify};

pub use config::{
    find_cookie, long_name, lookup_cookie, read_cookie_file, short_name, ConfigError, CookieFile,
    CookieLookup, CookieSource, Listen, NodeConfig,
};
pub use erlkube_proto::dist::Cookie;
pub use tls::{TlsConfig, TlsError};

/// A peer came or went.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeEvent {
    /// A connection is up.
    NodeUp {
        /// The peer.
        node: String,
        /// True when the connection is hidden.
        hidden: bool,
    },
    /// A connection ended.
    NodeDown {
        /// The peer.
        node: String,
        /// Why.
        reason: DownReason,
    },
}

/// Why a connection ended: the reason of [`NodeEvent::NodeDown`], typed
/// where it arises. `Display` is the text for logs; [`DownReason::label`]
/// a fixed word for metrics labels.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DownReason {
    /// The peer closed the TCP connection.
    #[error("connection closed by peer")]
    ClosedByPeer,
    /// Reading the socket failed.
    #[error("read error: {message}")]
    Read {
        /// The error's kind.
        kind: std::io::ErrorKind,
        /// The error's text.
        message: String,
    },
    /// Writing the socket failed.
    #[error("write error: {message}")]
    Write {
        /// The error's kind.
        kind: std::io::ErrorKind,
        /// The error's text.
        message: String,
    },
    /// The peer broke the framing, or sent nothing for a tick window.
    #[error(transparent)]
    Connection(#[from] erlkube_proto::dist::ConnectionError),
    /// A control message or payload that does not decode.
    #[error(transparent)]
    BadMessage(#[from] erlkube_proto::dist::ControlError),
    /// This node closed it ([`Node::disconnect`], or a newer connection
    /// to the same peer replaced it).
    #[error("disconnected")]
    Disconnected,
    /// This node is shutting down.
    #[error("node shutting down")]
    Shutdown,
}

impl DownReason {
    fn read(e: &std::io::Error) -> Self {
        DownReason::Read {
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    fn write(e: &std::io::Error) -> Self {
        DownReason::Write {
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// A fixed word per kind of reason, for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            DownReason::ClosedByPeer => "closed_by_peer",
            DownReason::Read { .. } | DownReason::Write { .. } => "io_error",
            DownReason::Connection(erlkube_proto::dist::ConnectionError::NotResponding(_)) => {
                "not_responding"
            }
            DownReason::Connection(_) => "protocol_error",
            DownReason::BadMessage(_) => "bad_message",
            DownReason::Disconnected => "disconnected",
            DownReason::Shutdown => "shutdown",
        }
    }
}

/// Starting the node failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The name is not `alive@host`.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Could not listen.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Could not register with epmd.
    #[error("epmd registration failed: {0}")]
    Epmd(#[from] epmd::EpmdError),
    /// The configured cookie is empty (it would authenticate nobody).
    #[error("the node's cookie is empty; set one: RELEASE_COOKIE (or ERLANG_COOKIE), a cookie file, or ~/.erlang.cookie (chmod 400)")]
    EmptyCookie,
}

/// Reaching a peer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The name is not `alive@host`.
    #[error("invalid node name {0:?}")]
    InvalidName(String),
    /// Looking up the port failed (no epmd entry, epmd unreachable).
    #[error(transparent)]
    Epmd(#[from] epmd::EpmdError),
    /// The host name does not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TCP connect failed (connection refused, unreachable).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The handshake failed.
    #[error("handshake with {node} failed: {source}")]
    Handshake {
        /// The peer.
        node: String,
        /// Why.
        #[source]
        source: HandshakeError,
    },
    /// The peer closed the connection during the handshake.
    #[error("{node} closed the connection while we waited for {step}{hint}")]
    ClosedDuringHandshake {
        /// The peer.
        node: String,
        /// Where.
        step: erlkube_proto::dist::Step,
        /// A hint (a closed connection after our challenge reply means a wrong cookie).
        hint: &'static str,
    },
    /// TLS could not be set up with the peer (the reason names why:
    /// `unknown_ca`, `certificate_expired`, `not_tls`, …).
    #[error("TLS with {node} failed: {reason}")]
    Tls {
        /// The peer.
        node: String,
        /// Why, with a fixed word first.
        reason: String,
    },
    /// Socket error during the handshake.
    #[error("io error during the handshake with {node}: {source}")]
    Io {
        /// The peer.
        node: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Connecting took longer than the setup timeout.
    #[error("connecting to {0} timed out")]
    Timeout(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Shutdown,
}

/// Sending failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection closed before the message was queued.
    #[error("connection to {0} closed")]
    Closed(String),
}

/// `net_adm:ping` from Rust did not give `pong`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    /// No connection.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection went away before the answer.
    #[error("connection to {0} closed before net_kernel answered")]
    Closed(String),
    /// net_kernel did not answer in time.
    #[error("net_kernel on {0} did not answer in time")]
    Timeout(String),
    /// net_kernel answered something other than `yes`, or is not running.
    #[error("net_kernel on {node} answered {answer}")]
    Refused {
        /// The peer.
        node: String,
        /// What came back.
        answer: String,
    },
}

pub(crate) struct Outbound {
    pub control: Vec<u8>,
    pub payload: Option<Vec<u8>>,
}

#[derive(Clone)]
pub(crate) struct ConnHandle {
    pub id: u64,
    pub tx: Arc<outq::OutQueue>,
    pub published: bool,
    pub peer_flags: erlkube_proto::dist::flags::DistFlags,
    pub kill: Arc<Notify>,
}

#[derive(Default)]
pub(crate) struct Procs {
    pub by_id: HashMap<u32, mailbox::MailboxTx>,
    pub names: HashMap<Atom, u32>,
    pub aliases: HashMap<Vec<u32>, u32>,
    pub state: HashMap<u32, signals::ProcState>,
    pub exit_reasons: HashMap<u32, Term>,
}

#[derive(Default)]
pub(crate) struct Conns {
    pub up: HashMap<String, ConnHandle>,
    pub pending: HashSet<String>,
    /// Peers whose inbound handshake is under way (name received, allowed).
    pub accepting: HashSet<String>,
    pub locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Connections `Node::disconnect` took out of the table whose close
    /// is under way (until the peer closed its end too): peer → ids. A
    /// dial to the peer waits for them, so the peer does not see the new
    /// connection while it still holds the old one.
    pub closing: HashMap<String, HashSet<u64>>,
}

pub(crate) struct Inner {
    /// Tells this node from every other in the process (for caches that
    /// outlive one node).
    pub uid: u64,
    pub name: Atom,
    pub config: NodeConfig,
    pub creation: u32,
    pub port: u16,
    pub procs: Mutex<Procs>,
    pub conns: Mutex<Conns>,
    pub events: broadcast::Sender<NodeEvent>,
    /// Bumped whenever an inbound handshake ends (see `Conns::accepting`).
    pub accept_done: tokio::sync::watch::Sender<()>,
    /// Bumped whenever a disconnected connection's close ends (see
    /// `Conns::closing`).
    pub close_done: tokio::sync::watch::Sender<()>,
    next_pid: AtomicU32,
    next_ref: AtomicU64,
    pub next_conn: AtomicU64,
    pub shutdown: watch::Sender<bool>,
    pub global: Mutex<global::GlobalState>,
    /// The pg scopes this node runs.
    pub pg: std::sync::RwLock<HashMap<Atom, Arc<pg::Scope>>>,
    /// The Phoenix.PubSub servers this node takes part in.
    pub pubsub: Mutex<HashMap<String, Arc<pubsub::Server>>>,
    pub gen_calls: std::sync::RwLock<HashMap<u32, gen::InlineCall>>,
    pub fns: std::sync::RwLock<HashMap<(Atom, Atom, u32), rpc::Registered>>,
    /// What dispatch hands messages to besides mailboxes.
    pub services: dispatch::Services,
    _registration: Mutex<Option<erlkube_epmd::Registration>>,
}

/// A running node. Cheap to clone; the node stops when [`Node::shutdown`]
/// is called or the last clone is dropped.
///
/// A Rust service in a BEAM cluster: a gen_server Elixir calls, a call to
/// a BEAM gen_server, and an RPC (`examples/` has complete programs):
///
/// ```no_run
/// use std::time::Duration;
/// use erlkube_etf::Term;
/// use erlkube_node::{find_cookie, Node, NodeConfig};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let node = Node::start(NodeConfig::new("rust@127.0.0.1", find_cookie(Some("secret"))?)).await?;
/// // GenServer.call({:greeter, :"rust@127.0.0.1"}, "ada") answers {:hello, "ada"}.
/// node.serve_gen_server(
///     "greeter",
///     |name| Term::tuple(vec![Term::atom("hello"), name]),
///     |_cast| {},
/// );
/// // gen_server:call({counter, 'app@127.0.0.1'}, 1) from Rust.
/// let reply = node
///     .gen_call(("counter", "app@127.0.0.1"), Term::from(1i64), Duration::from_secs(5))
///     .await?;
/// // rpc:call('app@127.0.0.1', erlang, node, []).
/// let name = node
///     .rpc_call("app@127.0.0.1", "erlang", "node", vec![], Duration::from_secs(5))
///     .await?;
/// println!("{reply} from {name}");
/// node.shutdown();
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
    _guard: Arc<ShutdownGuard>,
}

struct ShutdownGuard(watch::Sender<bool>);

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// The services every node answers itself.
fn builtin_services() -> dispatch::Services {
    let mut s = dispatch::Services::default();
    net_kernel::register(&mut s);
    server::register(&mut s);
    global::register(&mut s);
    gen::register(&mut s);
    s
}

/// Peers seen through visible connections, sorted (`nodes()`).
fn visible_nodes(inner: &Inner) -> Vec<String> {
    let conns = inner.conns.lock().expect("conns");
    let mut v: Vec<String> = conns
        .up
        .iter()
        .filter(|(_, h)| h.published)
        .map(|(n, _)| n.clone())
        .collect();
    v.sort();
    v
}

pub(crate) fn random_u32() -> u32 {
    getrandom::u32().unwrap_or_else(|_| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.subsec_nanos() ^ (t.as_secs() as u32)
    })
}

impl Node {
    /// Binds the listener, registers with epmd if configured, and starts
    /// accepting connections. Needs a tokio runtime.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let name = config::long_name(&config.name)?;
        if config.cookie.is_empty() {
            return Err(NodeError::EmptyCookie);
        }
        if config.busy_poll.is_some() {
            warn_busy_poll_workers(&tokio::runtime::Handle::current());
        }
        let port = match config.listen {
            Listen::Port(p) => p,
            Listen::Ephemeral => 0,
        };
        let addr = SocketAddr::new(config.listen_ip, port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Listen { addr, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| NodeError::Listen { addr, source })?
            .port();
        let (registration, creation) = if config.register_with_epmd {
            let alive = name.split('@').next().unwrap_or_default();
            let r = epmd::register(
                &config.epmd_ip.to_string(),
                config.epmd_port,
                alive,
                port,
                config.setup_timeout,
            )
            .await?;
            let c = if r.creation() == 0 {
                random_u32().max(4)
            } else {
                r.creation()
            };
            (Some(r), c)
        } else {
            (None, random_u32().max(4))
        };
        let scopes = config.pg_scopes.clone();
        let inner = Inner::new(&name, config, creation, port, registration);
        for scope in &scopes {
            if let Err(e) = pg::start_scope(&inner, scope) {
                tracing::warn!(error = %e, "pg scope not started");
            }
        }
        let shutdown = inner.shutdown.clone();
        tracing::info!(node = %name, port, creation, "node started");
        tokio::spawn(accept::accept_loop(
            Arc::downgrade(&inner),
            listener,
            shutdown.subscribe(),
        ));
        let node = Node {
            inner,
            _guard: Arc::new(ShutdownGuard(shutdown)),
        };
        // `erlang:nodes/0` over RPC, as any BEAM node answers it: peers'
        // formation engines probe it to see partitions. A weak reference,
        // so the registry does not keep the node alive.
        let weak = Arc::downgrade(&node.inner);
        node.register_fn("erlang", "nodes", 0, move |_| {
            let names = weak
                .upgrade()
                .map(|i| visible_nodes(&i))
                .unwrap_or_default();
            Ok(Term::List(names.iter().map(|n| Term::atom(n)).collect()))
        });
        global::start(&node);
        Ok(node)
    }

    /// The full node name.
    pub fn name(&self) -> &str {
        self.inner.name.as_str()
    }

    /// The node name as an atom.
    pub fn atom(&self) -> &Atom {
        &self.inner.name
    }

    /// This incarnation's creation.
    pub fn creation(&self) -> u32 {
        self.inner.creation
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// A new process with a mailbox.
    pub fn spawn_process(&self) -> Process {
        self.inner.spawn_process()
    }

    /// A new process registered under `name`; `None` if the name is taken.
    pub fn spawn_registered(&self, name: &str) -> Option<Process> {
        let p = self.spawn_process();
        let mut procs = self.inner.procs.lock().expect("procs");
        let atom = Atom::new(name);
        if procs.names.contains_key(&atom) {
            return None;
        }
        procs.names.insert(atom, p.pid.id);
        drop(procs);
        Some(p)
    }

    /// The pid registered under `name`.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        let id = *self
            .inner
            .procs
            .lock()
            .expect("procs")
            .names
            .get(&Atom::new(name))?;
        Some(self.inner.pid(id))
    }

    /// A new reference of this node.
    pub fn make_ref(&self) -> Reference {
        self.inner.make_ref()
    }

    /// Peers this node sees (visible connections), like `nodes()`.
    pub fn nodes(&self) -> Vec<String> {
        visible_nodes(&self.inner)
    }

    /// Every connected peer, visible or hidden, like `nodes(connected)`.
    pub fn connected_nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .conns
            .lock()
            .expect("conns")
            .up
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// nodeup / nodedown events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// Connects to `node` unless already connected.
    pub async fn connect(&self, node: &str) -> Result<(), ConnectError> {
        dial::connect(&self.inner, node).await.map(|_| ())
    }

    /// Closes the connection to `node`, if any. On return the connection
    /// is out of the table (nodedown sent, links and monitors on `node`
    /// fired), so a [`Node::connect`] right after dials a new one instead
    /// of being handed the closing one. The old socket is half-closed and
    /// its task waits (up to 2 s) for the peer to close its end; a
    /// `connect` to `node` meanwhile waits for that before dialling, so
    /// the peer never sees the new connection while holding the old one.
    pub fn disconnect(&self, node: &str) -> bool {
        self.inner.disconnect(node)
    }

    /// Sends `msg` to `to` (SEND), connecting if needed. Waits while the
    /// connection's queue is full.
    pub async fn send(&self, to: &Pid, msg: Term) -> Result<(), SendError> {
        if to.node == self.inner.name {
            self.inner.deliver_local(to, msg);
            return Ok(());
        }
        let m = DistMessage {
            control: ControlMessage::Send { to: to.clone() },
            payload: Some(msg),
        };
        self.inner.send_dist(to.node.as_str(), &m).await
    }

    /// Sends `msg` to the process registered as `name` on `node` (REG_SEND).
    pub async fn send_named(
        &self,
        from: &Pid,
        node: &str,
        name: &str,
        msg: Term,
    ) -> Result<(), SendError> {
        if node == self.name() {
            if let Some(pid) = self.whereis(name) {
                self.inner.deliver_local(&pid, msg);
            }
            return Ok(());
        }
        let m = DistMessage {
            control: ControlMessage::RegSend {
                from: from.clone(),
                to_name: erlkube_etf::intern::intern(name),
            },
            payload: Some(msg),
        };
        self.inner.send_dist(node, &m).await
    }

    /// Sends `msg` to a process alias (ALIAS_SEND).
    pub async fn send_alias(
        &self,
        from: &Pid,
        alias: &Reference,
        msg: Term,
    ) -> Result<(), SendError> {
        if alias.node == self.inner.name {
            let id = self
                .inner
                .procs
                .lock()
                .expect("procs")
                .aliases
                .get(&alias.ids)
                .copied();
            if let Some(id) = id {
                self.inner.deliver_local(&self.inner.pid(id), msg);
            }
            return Ok(());
        }
        let m = DistMessage {
            control: ControlMessage::AliasSend {
                from: from.clone(),
                alias: alias.clone(),
            },
            payload: Some(msg),
        };
        self.inner.send_dist(alias.node.as_str(), &m).await
    }

    /// Sends a control message without payload (links, monitors, ...).
    pub async fn send_control(&self, node: &str, control: ControlMessage) -> Result<(), SendError> {
        let m = DistMessage {
            control,
            payload: None,
        };
        self.inner.send_dist(node, &m).await
    }

    /// `net_adm:ping(Node)` from Rust: monitors `net_kernel` on `node`, asks
    /// `{is_auth, ThisNode}` with a `$gen_call`, and expects `yes`.
    pub async fn ping(&self, node: &str) -> Result<(), PingError> {
        let timeout = self.inner.config.setup_timeout;
        let run = async {
            self.connect(node).await?;
            let mut me = self.spawn_process();
            let mref = self.make_ref();
            let net_kernel = Term::atom("net_kernel");
            let closed = |_| PingError::Closed(node.to_owned());
            self.send_control(
                node,
                ControlMessage::MonitorP {
                    from: me.pid().clone(),
                    to: net_kernel.clone(),
                    reference: mref.clone(),
                },
            )
            .await
            .map_err(closed)?;
            let call = Term::tuple(vec![
                Term::atom("$gen_call"),
                Term::tuple(vec![Term::Pid(me.pid().clone()), Term::from(mref.clone())]),
                Term::tuple(vec![
                    Term::atom("is_auth"),
                    Term::Atom(self.inner.name.clone()),
                ]),
            ]);
            self.send_named(me.pid(), node, "net_kernel", call)
                .await
                .map_err(closed)?;
            let answer = loop {
                let Some(msg) = me.recv().await else {
                    return Err(PingError::Closed(node.to_owned()));
                };
                match msg.as_tuple() {
                    Some([Term::Reference(r), answer]) if **r == mref => break answer.clone(),
                    Some([Term::Atom(down), Term::Reference(r), ..])
                        if down.as_str() == "DOWN" && **r == mref =>
                    {
                        return Err(PingError::Refused {
                            node: node.to_owned(),
                            answer: msg.to_string(),
                        });
                    }
                    _ => continue,
                }
            };
            let _ = self
                .send_control(
                    node,
                    ControlMessage::DemonitorP {
                        from: me.pid().clone(),
                        to: net_kernel,
                        reference: mref,
                    },
                )
                .await;
            if answer == Term::atom("yes") {
                Ok(())
            } else {
                Err(PingError::Refused {
                    node: node.to_owned(),
                    answer: answer.to_string(),
                })
            }
        };
        match tokio::time::timeout(timeout * 2, run).await {
            Ok(r) => r,
            Err(_) => Err(PingError::Timeout(node.to_owned())),
        }
    }

    /// Stops the node as `init:stop()` stops a BEAM node: every local
    /// process exits with reason `shutdown` (so monitors and links on other
    /// nodes see `shutdown`, not `normal`, which supervisors read as a clean
    /// finish), what is queued for each peer is written, then the listener
    /// stops and every connection closes. A peer whose connection is gone
    /// first sees `noconnection`, as with a BEAM node.
    pub fn shutdown(&self) {
        let ids: Vec<u32> = self
            .inner
            .procs
            .lock()
            .expect("procs")
            .by_id
            .keys()
            .copied()
            .collect();
        for id in ids {
            let actions = self.inner.terminate(id, Term::atom("shutdown"));
            self.inner.route(actions);
        }
        let _ = self.inner.shutdown.send(true);
    }

    /// [`Node::shutdown`], then waits (at most 4 s: 1 s to write, 2 s for
    /// the peer to close its end, and a margin) until every connection has
    /// written what was queued for it and closed. A command that sends
    /// and then exits calls this, not `shutdown`: dropping the runtime
    /// right after `shutdown` would cancel the connection tasks before
    /// their last write.
    pub async fn stop(&self) {
        let mut down = self.subscribe();
        self.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(4), async {
            while !self.connected_nodes().is_empty() {
                match down.recv().await {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        })
        .await;
    }
}

impl Inner {
    /// The state of a node named `name` (already checked) that listens on `port`;
    /// no task is started, no socket opened.
    fn new(
        name: &str,
        config: NodeConfig,
        creation: u32,
        port: u16,
        registration: Option<erlkube_epmd::Registration>,
    ) -> Arc<Inner> {
        static NEXT_UID: AtomicU64 = AtomicU64::new(1);
        Arc::new(Inner {
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            name: Atom::new(name),
            config,
            creation,
            port,
            procs: Mutex::new(Procs::default()),
            conns: Mutex::new(Conns::default()),
            events: broadcast::channel(256).0,
            accept_done: tokio::sync::watch::channel(()).0,
            close_done: tokio::sync::watch::channel(()).0,
            next_pid: AtomicU32::new(1),
            next_ref: AtomicU64::new(1),
            next_conn: AtomicU64::new(1),
            shutdown: watch::channel(false).0,
            fns: Default::default(),
            global: Default::default(),
            pg: Default::default(),
            pubsub: Default::default(),
            gen_calls: Default::default(),
            services: builtin_services(),
            _registration: Mutex::new(registration),
        })
    }

    pub(crate) fn pid(&self, id: u32) -> Pid {
        Pid {
            node: self.name.clone(),
            id,
            serial: 0,
            creation: self.creation,
        }
    }

    fn spawn_process(self: &Arc<Self>) -> Process {
        let id = self.next_pid.fetch_add(1, Ordering::Relaxed) & 0x0fff_ffff;
        let shared = Arc::new(mailbox::Mailbox::default());
        self.procs
            .lock()
            .expect("procs")
            .by_id
            .insert(id, mailbox::MailboxTx(shared.clone()));
        Process {
            pid: self.pid(id),
            rx: mailbox::MailboxRx::new(shared),
            node: Arc::downgrade(self),
        }
    }

    pub(crate) fn make_ref(&self) -> Reference {
        let n = self.next_ref.fetch_add(1, Ordering::Relaxed);
        Reference {
            node: self.name.clone(),
            creation: self.creation,
            ids: vec![(n & 0x3ffff) as u32, (n >> 18) as u32, random_u32()],
        }
    }

    /// Delivers to a local pid; messages to dead pids vanish, as in Erlang.
    pub(crate) fn deliver_local(&self, to: &Pid, msg: Term) -> bool {
        if to.creation != self.creation {
            return false;
        }
        let procs = self.procs.lock().expect("procs");
        match procs.by_id.get(&to.id) {
            Some(tx) => tx.0.push_term(msg),
            None => false,
        }
    }

    pub(crate) fn whereis_id(&self, name: &Atom) -> Option<u32> {
        self.procs.lock().expect("procs").names.get(name).copied()
    }

    pub(crate) fn deliver_named(&self, name: &Atom, msg: Term) -> bool {
        let procs = self.procs.lock().expect("procs");
        match procs.names.get(name).and_then(|id| procs.by_id.get(id)) {
            Some(tx) => tx.0.push_term(msg),
            None => false,
        }
    }

    pub(crate) fn deliver_alias(&self, alias: &Reference, msg: Term) -> bool {
        if alias.node != self.name {
            return false;
        }
        let procs = self.procs.lock().expect("procs");
        match procs
            .aliases
            .get(&alias.ids)
            .and_then(|id| procs.by_id.get(id))
        {
            Some(tx) => tx.0.push_term(msg),
            None => false,
        }
    }

    /// Queues a message to `node` without waiting: on the current
    /// connection's queue if there is room, else from a task (which may
    /// connect first). For signals sent from synchronous code.
    pub(crate) fn send_signal_msg(
        self: &Arc<Self>,
        node: &str,
        control: ControlMessage,
        payload: Option<Term>,
    ) {
        let m = DistMessage { control, payload };
        let h = self.conns.lock().expect("conns").up.get(node).cloned();
        if let Some(h) = h {
            let (control, payload) = m.encode();
            match h.tx.try_send(Outbound { control, payload }) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(o)) => {
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        rt.spawn(async move {
                            let _ = h.tx.send(o).await;
                        });
                    }
                    return;
                }
            }
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let inner = self.clone();
            let node = node.to_owned();
            rt.spawn(async move {
                let _ = inner.send_dist(&node, &m).await;
            });
        }
    }

    /// Sends `msg` to `to` from synchronous code (SEND, without waiting).
    pub(crate) fn send_to(self: &Arc<Self>, to: &Pid, msg: Term) {
        if to.node == self.name {
            self.deliver_local(to, msg);
        } else {
            self.send_signal_msg(
                to.node.as_str(),
                ControlMessage::Send { to: to.clone() },
                Some(msg),
            );
        }
    }

    pub(crate) async fn send_dist(
        self: &Arc<Self>,
        node: &str,
        m: &DistMessage,
    ) -> Result<(), SendError> {
        let tx = dial::out_queue(self, node).await?;
        tx.send_msg(m)
            .await
            .map_err(|()| SendError::Closed(node.to_owned()))
    }
}

/// A process: a pid and its mailbox. Dropping it ends the process (its
/// name and aliases go with it).
pub struct Process {
    pid: Pid,
    rx: mailbox::MailboxRx,
    node: Weak<Inner>,
}

impl Process {
    /// The pid.
    pub fn pid(&self) -> &Pid {
        &self.pid
    }

    /// The next message; `None` once the node is gone.
    pub async fn recv(&mut self) -> Option<Term> {
        self.rx.recv().await
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Term> {
        self.rx.try_recv().ok().flatten()
    }

    /// The next message, waiting at most `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Option<Term> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// A new alias: messages sent to it (ALIAS_SEND) land in this mailbox.
    pub fn alias(&self) -> Option<Reference> {
        let inner = self.node.upgrade()?;
        let r = inner.make_ref();
        inner
            .procs
            .lock()
            .expect("procs")
            .aliases
            .insert(r.ids.clone(), self.pid.id);
        Some(r)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(inner) = self.node.upgrade() {
            // A process that ends without a reason ends `normal`.
            let actions = inner.terminate(self.pid.id, Term::atom("normal"));
            inner
                .procs
                .lock()
                .expect("procs")
                .exit_reasons
                .remove(&self.pid.id);
            inner.route(actions);
        }
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process").field("pid", &self.pid).finish()
    }
}

/// Busy-poll on a multi-thread runtime of more than one worker: each spin
/// turn yields, the worker finds its queue empty and goes searching, and
/// when it finds the spinning task again tokio wakes a parked worker to
/// take over the search (`transition_worker_from_searching`), about once
/// per round trip. The woken worker takes a CPU from the spinners and
/// the tail of round trips gets longer than without spinning
/// (BENCHMARKS.md, issue 20). Said once, when the node starts.
fn warn_busy_poll_workers(rt: &tokio::runtime::Handle) {
    let workers = rt.metrics().num_workers();
    if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread && workers > 1 {
        tracing::warn!(
            workers,
            "busy_poll on a multi-thread runtime with more than one worker: \
             tokio wakes another worker at each spin turn, which makes the slowest \
             round trips slower (p99); give the node one worker \
             (TOKIO_WORKER_THREADS=1, or one CPU for the pod) or a current-thread runtime"
        );
    }
}
