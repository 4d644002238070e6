//! The gen_server protocol: calling a BEAM (or Rust) server from Rust, and
//! answering `gen_server:call` / `GenServer.call` / `cast` in a Rust process.

use std::time::Duration;

use erlkube_etf::{Atom, Pid, Reference, Term};
use erlkube_proto::dist::control::ControlMessage;

use crate::rpc::{wait, Wait};
use crate::{Node, Process};

/// Who a gen_server call goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallTarget {
    /// A pid (any node).
    Pid(Pid),
    /// A registered name on a node.
    Name {
        /// The registered name.
        name: String,
        /// The node.
        node: String,
    },
}

impl From<Pid> for CallTarget {
    fn from(p: Pid) -> Self {
        CallTarget::Pid(p)
    }
}

impl From<(&str, &str)> for CallTarget {
    fn from((name, node): (&str, &str)) -> Self {
        CallTarget::Name {
            name: name.to_owned(),
            node: node.to_owned(),
        }
    }
}

impl CallTarget {
    fn node(&self) -> &str {
        match self {
            CallTarget::Pid(p) => p.node.as_str(),
            CallTarget::Name { node, .. } => node,
        }
    }
}

/// A gen_server call failed, as `gen_server:call` would exit.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No reply within the timeout (`timeout`).
    #[error("gen_server call timed out")]
    Timeout,
    /// The server is gone or died: `noproc`, `noconnection`,
    /// `{nodedown, Node}` or the server's exit reason.
    #[error("gen_server call exited: {0}")]
    Exit(Term),
}

/// What a Rust gen_server process received.
#[derive(Clone, Debug, PartialEq)]
pub enum GenMessage {
    /// `{'$gen_call', From, Request}`: answer with [`Node::gen_reply`].
    Call {
        /// Who to answer (`{Pid, Tag}`).
        from: GenFrom,
        /// The request.
        request: Term,
    },
    /// `{'$gen_cast', Request}`.
    Cast(Term),
    /// Anything else.
    Info(Term),
}

/// The `From` of a `$gen_call`: the caller's pid and its reply tag (a
/// reference, or `[alias|Ref]` for alias-based calls).
#[derive(Clone, Debug, PartialEq)]
pub struct GenFrom {
    /// The caller.
    pub pid: Pid,
    /// The reply tag.
    pub tag: Term,
}

impl GenMessage {
    /// Classifies a mailbox message.
    pub fn parse(msg: Term) -> GenMessage {
        match msg.as_tuple() {
            Some([label, from, request])
                if label.as_atom().map(Atom::as_str) == Some("$gen_call") =>
            {
                if let Some([Term::Pid(pid), tag]) = from.as_tuple() {
                    return GenMessage::Call {
                        from: GenFrom {
                            pid: pid.clone(),
                            tag: tag.clone(),
                        },
                        request: request.clone(),
                    };
                }
                GenMessage::Info(msg)
            }
            Some([label, request]) if label.as_atom().map(Atom::as_str) == Some("$gen_cast") => {
                GenMessage::Cast(request.clone())
            }
            _ => GenMessage::Info(msg),
        }
    }
}

/// The alias in an `[alias|Ref]` tag.
fn alias_of(tag: &Term) -> Option<Reference> {
    match tag {
        Term::ImproperList { elems, tail } => match (elems.as_slice(), tail.as_ref()) {
            ([a], Term::Reference(r)) if a.as_atom().map(Atom::as_str) == Some("alias") => {
                Some(Reference::clone(r))
            }
            _ => None,
        },
        _ => None,
    }
}

impl Node {
    /// Answers a `$gen_call` like `gen_server:reply/2`: `{Tag, Reply}` to
    /// the alias for `[alias|Ref]` tags, to the pid otherwise.
    pub async fn gen_reply(
        &self,
        me: &Pid,
        from: &GenFrom,
        reply: Term,
    ) -> Result<(), crate::SendError> {
        let msg = Term::tuple(vec![from.tag.clone(), reply]);
        match alias_of(&from.tag) {
            Some(alias) => self.send_alias(me, &alias, msg).await,
            None => self.send(&from.pid, msg).await,
        }
    }

    /// `gen_server:cast/2`: sends `{'$gen_cast', Request}`, never fails
    /// visibly (like the BEAM's cast).
    pub async fn gen_cast(&self, target: impl Into<CallTarget>, request: Term) {
        let msg = Term::tuple(vec![Term::atom("$gen_cast"), request]);
        let me = self.spawn_process();
        let _ = match target.into() {
            CallTarget::Pid(p) => self.send(&p, msg).await,
            CallTarget::Name { name, node } => self.send_named(me.pid(), &node, &name, msg).await,
        };
    }

    /// `gen_server:call/3` from Rust: monitors the server (by pid or
    /// name), sends `{'$gen_call', {Self, Ref}, Request}`, waits for
    /// `{Ref, Reply}` or the DOWN, and demonitors.
    pub async fn gen_call(
        &self,
        target: impl Into<CallTarget>,
        request: Term,
        timeout: Duration,
    ) -> Result<Term, CallError> {
        let target = target.into();
        let deadline = tokio::time::Instant::now() + timeout;
        let node = target.node().to_owned();
        let down_reason = |t: &CallTarget| match t {
            CallTarget::Name { node, .. } => {
                Term::tuple(vec![Term::atom("nodedown"), Term::atom(node)])
            }
            CallTarget::Pid(_) => Term::atom("noconnection"),
        };
        let mut me = self.spawn_process();
        let mut events = self.subscribe();
        let mref = self.make_ref();
        let to = match &target {
            CallTarget::Pid(p) => Term::Pid(p.clone()),
            CallTarget::Name { name, .. } => Term::atom(name),
        };
        let msg = Term::tuple(vec![
            Term::atom("$gen_call"),
            Term::tuple(vec![Term::Pid(me.pid().clone()), Term::from(mref.clone())]),
            request,
        ]);
        if node == self.name() {
            return self.local_call(&mut me, &to, msg, &mref, deadline).await;
        }
        let connected = tokio::time::timeout_at(deadline, self.connect(&node)).await;
        match connected {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(CallError::Exit(down_reason(&target))),
            Err(_) => return Err(CallError::Timeout),
        }
        let sent = async {
            self.send_control(
                &node,
                ControlMessage::MonitorP {
                    from: me.pid().clone(),
                    to: to.clone(),
                    reference: mref.clone(),
                },
            )
            .await?;
            match &target {
                CallTarget::Pid(p) => self.send(p, msg).await,
                CallTarget::Name { name, .. } => self.send_named(me.pid(), &node, name, msg).await,
            }
        };
        if sent.await.is_err() {
            return Err(CallError::Exit(down_reason(&target)));
        }
        let mref_t = Term::from(mref.clone());
        let out = loop {
            match wait(&mut me, &mut events, &node, deadline).await {
                Wait::Msg(m) => match m.as_tuple() {
                    Some([r, v]) if *r == mref_t => break Ok(v.clone()),
                    Some([tag, r, _, _, reason])
                        if tag.as_atom().map(Atom::as_str) == Some("DOWN") && *r == mref_t =>
                    {
                        let reason = if reason.as_atom().map(Atom::as_str) == Some("noconnection") {
                            down_reason(&target)
                        } else {
                            reason.clone()
                        };
                        return Err(CallError::Exit(reason));
                    }
                    _ => {}
                },
                Wait::NodeDown => return Err(CallError::Exit(down_reason(&target))),
                Wait::Timeout => break Err(CallError::Timeout),
            }
        };
        let _ = self
            .send_control(
                &node,
                ControlMessage::DemonitorP {
                    from: me.pid().clone(),
                    to,
                    reference: mref,
                },
            )
            .await;
        out
    }

    async fn local_call(
        &self,
        me: &mut Process,
        to: &Term,
        msg: Term,
        mref: &Reference,
        deadline: tokio::time::Instant,
    ) -> Result<Term, CallError> {
        let delivered = match to {
            Term::Pid(p) => self.inner.deliver_local(p, msg),
            Term::Atom(a) => self.inner.deliver_named(a, msg),
            _ => false,
        };
        if !delivered {
            return Err(CallError::Exit(Term::atom("noproc")));
        }
        let mref_t = Term::from(mref.clone());
        loop {
            match tokio::time::timeout_at(deadline, me.recv()).await {
                Ok(Some(m)) => {
                    if let Some([r, v]) = m.as_tuple() {
                        if *r == mref_t {
                            return Ok(v.clone());
                        }
                    }
                }
                Ok(None) => return Err(CallError::Exit(Term::atom("noproc"))),
                Err(_) => return Err(CallError::Timeout),
            }
        }
    }

    /// Runs a gen_server registered as `name` whose calls are answered by
    /// `handle_call(request) -> reply` and whose casts go to
    /// `handle_cast`. Returns `None` when the name is taken. The server
    /// runs until the node stops. Calls arriving from a peer are answered
    /// inline on the connection's task (keep `handle_call` quick; a panic
    /// is answered with `{error, rust_panic}`).
    pub fn serve_gen_server<C, K>(
        &self,
        name: &str,
        handle_call: C,
        handle_cast: K,
    ) -> Option<tokio::task::JoinHandle<()>>
    where
        C: Fn(Term) -> Term + Send + Sync + 'static,
        K: Fn(Term) + Send + 'static,
    {
        let mut p = self.spawn_registered(name)?;
        let handle_call: std::sync::Arc<dyn Fn(Term) -> Term + Send + Sync> =
            std::sync::Arc::new(handle_call);
        self.inner
            .gen_calls
            .write()
            .expect("gen_calls")
            .insert(p.pid().id, handle_call.clone());
        let weak = std::sync::Arc::downgrade(&self.inner);
        Some(tokio::spawn(async move {
            while let Some(msg) = p.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                match GenMessage::parse(msg) {
                    GenMessage::Call { from, request } => {
                        let reply = handle_call(request);
                        reply_from(&inner, &from, reply);
                    }
                    GenMessage::Cast(r) => handle_cast(r),
                    GenMessage::Info(_) => {}
                }
            }
        }))
    }
}

/// `gen_server:reply/2` from synchronous code.
pub(crate) fn reply_from(inner: &std::sync::Arc<crate::Inner>, from: &GenFrom, reply: Term) {
    let msg = Term::tuple(vec![from.tag.clone(), reply]);
    match alias_of(&from.tag) {
        Some(alias) if alias.node == inner.name => {
            inner.deliver_alias(&alias, msg);
        }
        Some(alias) => inner.send_signal_msg(
            alias.node.as_str(),
            ControlMessage::AliasSend {
                from: from.pid.clone(),
                alias: alias.clone(),
            },
            Some(msg),
        ),
        None => inner.send_to(&from.pid, msg),
    }
}

/// Answers `$gen_call`s to Rust gen_servers inline.
pub(crate) fn register(services: &mut crate::dispatch::Services) {
    services.register_inline(inline_call);
}

/// A handler for `$gen_call`s to a Rust gen_server, run inline.
pub(crate) type InlineCall = std::sync::Arc<dyn Fn(Term) -> Term + Send + Sync>;

/// Answers a `$gen_call` to local process `id` inline when it is a Rust
/// gen_server; returns the reply to send (control message and payload),
/// or gives the message back.
fn inline_call(inner: &crate::Inner, id: u32, msg: Term) -> Result<(ControlMessage, Term), Term> {
    let handler = inner.gen_calls.read().expect("gen_calls").get(&id).cloned();
    let Some(handler) = handler else {
        return Err(msg);
    };
    let GenMessage::Call { from, request } = GenMessage::parse(msg.clone()) else {
        return Err(msg);
    };
    let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(request)))
        .unwrap_or_else(|_| Term::tuple(vec![Term::atom("error"), Term::atom("rust_panic")]));
    let out = Term::tuple(vec![from.tag.clone(), reply]);
    let control = match alias_of(&from.tag) {
        Some(alias) => ControlMessage::AliasSend {
            from: inner.pid(id),
            alias,
        },
        None => ControlMessage::Send { to: from.pid },
    };
    Ok((control, out))
}
