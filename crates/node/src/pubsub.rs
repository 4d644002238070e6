//! Phoenix.PubSub (2.x, default `Phoenix.PubSub.PG2` adapter) from Rust,
//! over [`crate::pg`]. The adapter's flow (phoenix_pubsub's
//! `lib/phoenix/pubsub/pg2.ex` and `supervisor.ex`):
//!
//! - a server named `Name` has the adapter name `Name.Adapter`
//!   (`Module.concat(Name, "Adapter")`); each node runs a worker
//!   registered under that name and joined to the pg group of the same
//!   name in scope `Elixir.Phoenix.PubSub` (with `pool_size` N > 1, also
//!   to groups `Name.Adapter_2` … `Name.Adapter_N`);
//! - `broadcast` sends `{forward_to_local, Topic, Message, Dispatcher}` to
//!   every member of the group on other nodes, and dispatches to the local
//!   subscribers itself; a worker that receives `forward_to_local` sends
//!   `Message` to each local subscriber of `Topic` (the default dispatcher
//!   `Elixir.Phoenix.PubSub` sends the message as it is).
//!
//! This node's worker is a Rust process doing the same for Rust
//! subscribers; topics are binaries, as Phoenix's are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use erlkube_etf::{Atom, Pid, Term};

use crate::{Inner, Node, PgError, Process};

/// The pg scope Phoenix.PubSub's adapter uses.
pub const PUBSUB_SCOPE: &str = "Elixir.Phoenix.PubSub";

/// The dispatcher named in messages this node broadcasts (Phoenix's
/// default, which sends the message unchanged).
const DISPATCHER: &str = "Elixir.Phoenix.PubSub";

/// A PubSub operation that cannot be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PubSubError {
    /// The server name is empty or not an atom's text.
    #[error("invalid PubSub server name {0:?}: give the Elixir module name, e.g. MyApp.PubSub")]
    InvalidServer(String),
    /// Joining the adapter's group failed.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// A process of this node already holds the adapter's name.
    #[error("cannot serve PubSub {0}: the name {0}.Adapter is registered by another process")]
    NameTaken(String),
    /// Sending to a member failed.
    #[error(transparent)]
    Send(#[from] crate::SendError),
}

/// The atom text of a server name: `MyApp.PubSub` and
/// `Elixir.MyApp.PubSub` both name `Elixir.MyApp.PubSub`.
fn server_atom(server: &str) -> Result<String, PubSubError> {
    let bare = server.strip_prefix("Elixir.").unwrap_or(server);
    if bare.is_empty() || bare.len() > 200 || bare.chars().any(char::is_whitespace) {
        return Err(PubSubError::InvalidServer(server.to_owned()));
    }
    Ok(format!("Elixir.{bare}"))
}

/// One PubSub server this node takes part in.
pub(crate) struct Server {
    adapter: Atom,
    worker: Pid,
    subscribers: Mutex<HashMap<Vec<u8>, Vec<Pid>>>,
}

impl Server {
    fn dispatch(&self, inner: &Inner, topic: &[u8], msg: &Term) {
        let mut subs = self.subscribers.lock().expect("pubsub");
        if let Some(pids) = subs.get_mut(topic) {
            // a subscriber whose process is gone is dropped
            pids.retain(|p| inner.deliver_local(p, msg.clone()));
            if pids.is_empty() {
                subs.remove(topic);
            }
        }
    }
}

/// The server `server` (atom text), started on first use with
/// `pool_size` listener groups.
fn server(inner: &Arc<Inner>, server: &str, pool_size: u32) -> Result<Arc<Server>, PubSubError> {
    let name = server_atom(server)?;
    let mut map = inner.pubsub.lock().expect("pubsub");
    if let Some(s) = map.get(&name) {
        return Ok(s.clone());
    }
    match crate::pg::start_scope(inner, PUBSUB_SCOPE) {
        Ok(()) | Err(PgError::AlreadyRunning(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let adapter = format!("{name}.Adapter");
    let process = inner.spawn_process();
    {
        let mut procs = inner.procs.lock().expect("procs");
        let a = Atom::new(&adapter);
        if procs.names.contains_key(&a) {
            return Err(PubSubError::NameTaken(name));
        }
        procs.names.insert(a, process.pid().id);
    }
    let s = Arc::new(Server {
        adapter: Atom::new(&adapter),
        worker: process.pid().clone(),
        subscribers: Mutex::new(HashMap::new()),
    });
    let me = [process.pid().clone()];
    crate::pg::join(inner, PUBSUB_SCOPE, Term::Atom(s.adapter.clone()), &me)?;
    for n in 2..=pool_size.max(1) {
        crate::pg::join(
            inner,
            PUBSUB_SCOPE,
            Term::atom(&format!("{adapter}_{n}")),
            &me,
        )?;
    }
    map.insert(name, s.clone());
    tokio::spawn(worker(Arc::downgrade(inner), s.clone(), process));
    Ok(s)
}

/// The worker: `{forward_to_local, Topic, Message, Dispatcher}` to local
/// subscribers of `Topic`, anything else dropped (as `PG2Worker` does).
async fn worker(inner: Weak<Inner>, s: Arc<Server>, mut process: Process) {
    while let Some(msg) = process.recv().await {
        let Some(inner) = inner.upgrade() else { break };
        match msg.as_tuple() {
            Some([op, topic, m, _dispatcher])
                if op.as_atom().map(Atom::as_str) == Some("forward_to_local") =>
            {
                match topic.as_binary() {
                    Some(t) => s.dispatch(&inner, t, m),
                    None => {
                        tracing::warn!(topic = %topic, "pubsub: forward_to_local with a topic that is not a binary dropped")
                    }
                }
            }
            _ => tracing::debug!(message = %msg, "pubsub: message to the worker ignored"),
        }
    }
}

/// A subscription of a Rust process to one topic; dropping it unsubscribes.
pub struct Subscription {
    process: Process,
    server: Arc<Server>,
    topic: String,
}

impl Subscription {
    /// The subscribing process (messages for the topic go to its mailbox).
    pub fn pid(&self) -> &Pid {
        self.process.pid()
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next message broadcast on the topic; `None` once the node is gone.
    pub async fn recv(&mut self) -> Option<Term> {
        self.process.recv().await
    }

    /// The next message, waiting at most `timeout`.
    pub async fn recv_timeout(&mut self, timeout: std::time::Duration) -> Option<Term> {
        self.process.recv_timeout(timeout).await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = self.server.subscribers.lock().expect("pubsub");
        if let Some(v) = subs.get_mut(self.topic.as_bytes()) {
            v.retain(|p| p != self.process.pid());
            if v.is_empty() {
                subs.remove(self.topic.as_bytes());
            }
        }
    }
}

impl Node {
    /// Takes part in Phoenix.PubSub server `server` (e.g. `MyApp.PubSub`)
    /// with `pool_size` listener groups (the server's `:pool_size`, 1 by
    /// default); the other PubSub calls do this with 1 on first use.
    pub fn pubsub_start(&self, server: &str, pool_size: u32) -> Result<(), PubSubError> {
        self::server(&self.inner, server, pool_size).map(|_| ())
    }

    /// `Phoenix.PubSub.subscribe(server, topic)` for a new Rust process:
    /// what any node broadcasts on `topic` arrives in the subscription.
    pub fn pubsub_subscribe(&self, server: &str, topic: &str) -> Result<Subscription, PubSubError> {
        let s = self::server(&self.inner, server, 1)?;
        let process = self.spawn_process();
        s.subscribers
            .lock()
            .expect("pubsub")
            .entry(topic.as_bytes().to_vec())
            .or_default()
            .push(process.pid().clone());
        Ok(Subscription {
            process,
            server: s,
            topic: topic.to_owned(),
        })
    }

    /// `Phoenix.PubSub.broadcast(server, topic, msg)`: to the adapter's
    /// workers on every other node, then to this node's subscribers.
    pub async fn pubsub_broadcast(
        &self,
        server: &str,
        topic: &str,
        msg: Term,
    ) -> Result<(), PubSubError> {
        let s = self::server(&self.inner, server, 1)?;
        let members =
            crate::pg::members(&self.inner, PUBSUB_SCOPE, &Term::Atom(s.adapter.clone()))?;
        let forward = Term::tuple(vec![
            Term::atom("forward_to_local"),
            Term::binary(topic.as_bytes()),
            msg.clone(),
            Term::atom(DISPATCHER),
        ]);
        for pid in members.iter().filter(|p| p.node != self.inner.name) {
            self.send(pid, forward.clone()).await?;
        }
        s.dispatch(&self.inner, topic.as_bytes(), &msg);
        Ok(())
    }

    /// The pid of this node's PubSub worker for `server`, if it runs.
    pub fn pubsub_worker(&self, server: &str) -> Option<Pid> {
        let name = server_atom(server).ok()?;
        self.inner
            .pubsub
            .lock()
            .expect("pubsub")
            .get(&name)
            .map(|s| s.worker.clone())
    }
}
