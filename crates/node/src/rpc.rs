//! RPC: the client (`erpc` through SPAWN_REQUEST with a monitor, `rex`
//! when the peer lacks SPAWN) and the error type shared with the server.

use std::time::Duration;

use erlkube_etf::{Atom, Pid, Term};
use erlkube_proto::dist::control::{ControlMessage, DistMessage, Mfa};
use erlkube_proto::dist::DistFlags;
use tokio::sync::broadcast;

use crate::{Node, NodeEvent, Process};

/// The class of an Erlang exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    /// `throw`
    Throw,
    /// `exit`
    Exit,
    /// `error`
    Error,
}

impl ExceptionClass {
    /// The class as its Erlang atom.
    pub fn as_str(self) -> &'static str {
        match self {
            ExceptionClass::Throw => "throw",
            ExceptionClass::Exit => "exit",
            ExceptionClass::Error => "error",
        }
    }
}

/// An RPC failed. Also what a Rust function served over RPC returns to
/// raise an exception on the caller's side.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// No answer within the timeout.
    #[error("rpc timed out")]
    Timeout,
    /// The node could not be reached, or the connection went down.
    #[error("no connection to {0}")]
    NoConnection(String),
    /// The remote side answered `{badrpc, Reason}` (rex) or could not
    /// start the call (a spawn error such as `notsup`).
    #[error("badrpc: {0}")]
    BadRpc(Term),
    /// The function raised: `Class:Reason:Stack`.
    #[error("{}: {reason}", class.as_str())]
    Exception {
        /// throw, exit or error.
        class: ExceptionClass,
        /// The reason.
        reason: Term,
        /// The stack (`[]` when not known).
        stack: Term,
    },
}

impl RpcError {
    /// `error:Reason` with an empty stack.
    pub fn error(reason: Term) -> RpcError {
        RpcError::Exception {
            class: ExceptionClass::Error,
            reason,
            stack: Term::nil(),
        }
    }

    /// `exit:Reason`.
    pub fn exit(reason: Term) -> RpcError {
        RpcError::Exception {
            class: ExceptionClass::Exit,
            reason,
            stack: Term::nil(),
        }
    }

    /// `throw:Reason`.
    pub fn throw(reason: Term) -> RpcError {
        RpcError::Exception {
            class: ExceptionClass::Throw,
            reason,
            stack: Term::nil(),
        }
    }

    /// What OTP's `rpc:call/5` returns for this failure:
    /// `{badrpc, timeout}`, `{badrpc, nodedown}`, `{badrpc, {'EXIT', R}}`,
    /// `{badrpc, {'EXIT', {R, Stack}}}`; a throw gives the thrown value.
    pub fn to_rpc_result(&self) -> Term {
        let badrpc = |t: Term| Term::tuple(vec![Term::atom("badrpc"), t]);
        let exit = |t: Term| Term::tuple(vec![Term::atom("EXIT"), t]);
        match self {
            RpcError::Timeout => badrpc(Term::atom("timeout")),
            RpcError::NoConnection(_) => badrpc(Term::atom("nodedown")),
            RpcError::BadRpc(t) => badrpc(t.clone()),
            RpcError::Exception {
                class,
                reason,
                stack,
            } => match class {
                ExceptionClass::Throw => reason.clone(),
                ExceptionClass::Exit => badrpc(exit(reason.clone())),
                ExceptionClass::Error => {
                    badrpc(exit(Term::tuple(vec![reason.clone(), stack.clone()])))
                }
            },
        }
    }

    /// The exit reason of an `erpc` process for this outcome:
    /// `{Res, throw|exit, R}` or `{Res, error, R, Stack}`.
    pub(crate) fn to_erpc_reason(&self, res: Term) -> Term {
        let (class, reason, stack) = match self {
            RpcError::Exception {
                class,
                reason,
                stack,
            } => (*class, reason.clone(), stack.clone()),
            RpcError::Timeout => (ExceptionClass::Exit, Term::atom("timeout"), Term::nil()),
            RpcError::NoConnection(_) => (
                ExceptionClass::Exit,
                Term::atom("noconnection"),
                Term::nil(),
            ),
            RpcError::BadRpc(t) => (
                ExceptionClass::Exit,
                Term::tuple(vec![Term::atom("badrpc"), t.clone()]),
                Term::nil(),
            ),
        };
        match class {
            ExceptionClass::Error => Term::tuple(vec![res, Term::atom("error"), reason, stack]),
            c => Term::tuple(vec![res, Term::atom(c.as_str()), reason]),
        }
    }
}

/// Waits for the next message, a nodedown of `peer`, or the deadline.
pub(crate) enum Wait {
    Msg(Term),
    NodeDown,
    Timeout,
}

pub(crate) async fn wait(
    me: &mut Process,
    events: &mut broadcast::Receiver<NodeEvent>,
    peer: &str,
    deadline: tokio::time::Instant,
) -> Wait {
    loop {
        tokio::select! {
            m = me.recv() => return match m {
                Some(m) => Wait::Msg(m),
                None => Wait::NodeDown,
            },
            e = events.recv() => match e {
                Ok(NodeEvent::NodeDown { node, .. }) if node == peer => return Wait::NodeDown,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Wait::NodeDown,
            },
            _ = tokio::time::sleep_until(deadline) => return Wait::Timeout,
        }
    }
}

fn atom_is(t: &Term, s: &str) -> bool {
    t.as_atom().map(Atom::as_str) == Some(s)
}

/// Turns an `erpc` result (the exit reason of the remote process) into
/// the call's outcome.
pub(crate) fn erpc_outcome(reason: &Term, res: &Term) -> Result<Term, RpcError> {
    match reason.as_tuple() {
        Some([r, tag, v]) if r == res && atom_is(tag, "return") => Ok(v.clone()),
        Some([r, tag, v]) if r == res && atom_is(tag, "throw") => Err(RpcError::throw(v.clone())),
        Some([r, tag, v]) if r == res && atom_is(tag, "exit") => Err(RpcError::exit(v.clone())),
        Some([r, tag, v]) if r == res && atom_is(tag, "error") => {
            // `{Res, error, {erpc, R}}`: an argument error.
            Err(RpcError::error(v.clone()))
        }
        Some([r, tag, v, stack]) if r == res && atom_is(tag, "error") => Err(RpcError::Exception {
            class: ExceptionClass::Error,
            reason: v.clone(),
            stack: stack.clone(),
        }),
        _ if atom_is(reason, "noconnection") => Err(RpcError::NoConnection(String::new())),
        // The process died some other way (killed, ...).
        _ => Err(RpcError::exit(reason.clone())),
    }
}

impl Node {
    /// Calls `M:F(Args)` on `node` and waits at most `timeout`, like OTP's
    /// `erpc:call/5`: a SPAWN_REQUEST of `erpc:execute_call/4` with a
    /// monitor, the result read from the monitor's DOWN reason. Peers
    /// without SPAWN get a `rex` call (`rpc:call` of old) instead. Calls to
    /// this node's own name run the registered Rust function.
    pub async fn rpc_call(
        &self,
        node: &str,
        module: &str,
        function: &str,
        args: Vec<Term>,
        timeout: Duration,
    ) -> Result<Term, RpcError> {
        if node == self.name() {
            let fut = self.inner.run_fn(module, function, args);
            return match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(RpcError::Timeout),
            };
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = self.subscribe();
        let handle = match tokio::time::timeout_at(
            deadline,
            crate::dial::connect(&self.inner, node),
        )
        .await
        {
            Ok(Ok(h)) => h,
            Ok(Err(_)) => return Err(RpcError::NoConnection(node.to_owned())),
            Err(_) => return Err(RpcError::Timeout),
        };
        let mut me = self.spawn_process();
        if !handle.peer_flags.contains(DistFlags::SPAWN) {
            return self
                .rex_call(&mut me, &mut events, node, module, function, args, deadline)
                .await;
        }
        let req = self.make_ref();
        let res = Term::from(self.make_ref());
        let m = DistMessage {
            control: ControlMessage::SpawnRequest {
                req_id: req.clone(),
                from: me.pid().clone(),
                group_leader: me.pid().clone(),
                mfa: Mfa {
                    module: Atom::new("erpc"),
                    function: Atom::new("execute_call"),
                    arity: 4,
                },
                options: Term::list(vec![Term::atom("monitor")]),
            },
            payload: Some(Term::list(vec![
                res.clone(),
                Term::atom(module),
                Term::atom(function),
                Term::list(args.clone()),
            ])),
        };
        if self.inner.send_dist(node, &m).await.is_err() {
            return Err(RpcError::NoConnection(node.to_owned()));
        }
        let mut spawned: Option<Pid> = None;
        loop {
            match wait(&mut me, &mut events, node, deadline).await {
                Wait::Msg(msg) => match msg.as_tuple() {
                    Some([tag, r, status, v])
                        if atom_is(tag, "spawn_reply") && r.as_reference() == Some(&req) =>
                    {
                        if atom_is(status, "ok") {
                            spawned = v.as_pid().cloned();
                        } else if atom_is(v, "notsup") {
                            return self
                                .rex_call(
                                    &mut me,
                                    &mut events,
                                    node,
                                    module,
                                    function,
                                    args,
                                    deadline,
                                )
                                .await;
                        } else if atom_is(v, "noconnection") {
                            return Err(RpcError::NoConnection(node.to_owned()));
                        } else {
                            return Err(RpcError::BadRpc(v.clone()));
                        }
                    }
                    Some([tag, r, _, _, reason])
                        if atom_is(tag, "DOWN") && r.as_reference() == Some(&req) =>
                    {
                        return erpc_outcome(reason, &res).map_err(|e| match e {
                            RpcError::NoConnection(_) => RpcError::NoConnection(node.to_owned()),
                            e => e,
                        });
                    }
                    _ => {}
                },
                Wait::NodeDown => return Err(RpcError::NoConnection(node.to_owned())),
                Wait::Timeout => {
                    if let Some(pid) = spawned {
                        let _ = self
                            .send_control(
                                node,
                                ControlMessage::Exit2 {
                                    from: me.pid().clone(),
                                    to: pid,
                                    reason: Term::atom("kill"),
                                },
                            )
                            .await;
                    }
                    return Err(RpcError::Timeout);
                }
            }
        }
    }

    /// The legacy path: a `$gen_call` of `{call, M, F, A, GL}` to `rex`.
    #[allow(clippy::too_many_arguments)]
    async fn rex_call(
        &self,
        me: &mut Process,
        events: &mut broadcast::Receiver<NodeEvent>,
        node: &str,
        module: &str,
        function: &str,
        args: Vec<Term>,
        deadline: tokio::time::Instant,
    ) -> Result<Term, RpcError> {
        let mref = self.make_ref();
        let nodedown = || RpcError::NoConnection(node.to_owned());
        self.send_control(
            node,
            ControlMessage::MonitorP {
                from: me.pid().clone(),
                to: Term::atom("rex"),
                reference: mref.clone(),
            },
        )
        .await
        .map_err(|_| nodedown())?;
        let call = Term::tuple(vec![
            Term::atom("$gen_call"),
            Term::tuple(vec![Term::Pid(me.pid().clone()), Term::from(mref.clone())]),
            Term::tuple(vec![
                Term::atom("call"),
                Term::atom(module),
                Term::atom(function),
                Term::list(args),
                Term::Pid(me.pid().clone()),
            ]),
        ]);
        self.send_named(me.pid(), node, "rex", call)
            .await
            .map_err(|_| nodedown())?;
        let mref_t = Term::from(mref.clone());
        let out = loop {
            match wait(me, events, node, deadline).await {
                Wait::Msg(msg) => match msg.as_tuple() {
                    Some([r, v]) if *r == mref_t => break Ok(v.clone()),
                    Some([tag, r, _, _, reason]) if atom_is(tag, "DOWN") && *r == mref_t => {
                        return Err(if atom_is(reason, "noconnection") {
                            nodedown()
                        } else {
                            RpcError::BadRpc(Term::tuple(vec![Term::atom("EXIT"), reason.clone()]))
                        });
                    }
                    _ => {}
                },
                Wait::NodeDown => return Err(nodedown()),
                Wait::Timeout => break Err(RpcError::Timeout),
            }
        };
        let _ = self
            .send_control(
                node,
                ControlMessage::DemonitorP {
                    from: me.pid().clone(),
                    to: Term::atom("rex"),
                    reference: mref,
                },
            )
            .await;
        let v = out?;
        match v.as_tuple() {
            Some([tag, reason]) if atom_is(tag, "badrpc") => Err(RpcError::BadRpc(reason.clone())),
            _ => Ok(v),
        }
    }
}

/// A Rust function served over RPC.
pub(crate) type RpcFn = std::sync::Arc<
    dyn Fn(Vec<Term>) -> futures_lite_box::BoxFuture<Result<Term, RpcError>> + Send + Sync,
>;

/// A synchronous Rust function served over RPC (run inline, without a task).
pub(crate) type SyncFn = std::sync::Arc<dyn Fn(Vec<Term>) -> Result<Term, RpcError> + Send + Sync>;

/// A registered function.
#[derive(Clone)]
pub(crate) enum Registered {
    Sync(SyncFn),
    /// An async function, and whether a process that runs it may take its
    /// first step on the task of the connection that spawned it (see
    /// `connection::start_spawned`); cleared for good when a first step
    /// took too long.
    Async(RpcFn, std::sync::Arc<std::sync::atomic::AtomicBool>),
}

pub(crate) mod futures_lite_box {
    /// A boxed, sendable future.
    pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;
}

/// `error:undef` as the BEAM raises it for a missing function: the stack
/// is `[{M, F, Args, []}]`.
pub(crate) fn undef(module: &str, function: &str, args: Vec<Term>) -> RpcError {
    RpcError::Exception {
        class: ExceptionClass::Error,
        reason: Term::atom("undef"),
        stack: Term::list(vec![Term::tuple(vec![
            Term::atom(module),
            Term::atom(function),
            Term::list(args),
            Term::nil(),
        ])]),
    }
}

impl crate::Inner {
    pub(crate) fn lookup_fn(
        &self,
        module: &str,
        function: &str,
        arity: usize,
    ) -> Option<Registered> {
        // Keyed by atoms: short names (most) are inline, so a look-up
        // allocates nothing.
        let fns = self.fns.read().expect("fns");
        fns.get(&(Atom::new(module), Atom::new(function), arity as u32))
            .cloned()
    }

    /// Runs a registered function; `undef` when there is none.
    pub(crate) fn run_fn(
        &self,
        module: &str,
        function: &str,
        args: Vec<Term>,
    ) -> futures_lite_box::BoxFuture<Result<Term, RpcError>> {
        run_registered(
            self.lookup_fn(module, function, args.len()),
            module,
            function,
            args,
        )
    }
}

/// An async function's future whose panic becomes `error:rust_panic`, as a
/// synchronous function's does (the process then exits with that error,
/// instead of the task dying and the process exiting `normal`).
struct PanicToError(futures_lite_box::BoxFuture<Result<Term, RpcError>>);

impl std::future::Future for PanicToError {
    type Output = Result<Term, RpcError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(p) => p,
            Err(_) => std::task::Poll::Ready(Err(RpcError::error(Term::atom("rust_panic")))),
        }
    }
}

/// Runs `entry`, the function registered as `module:function/len(args)`
/// (looked up by the caller); `undef` when there is none.
pub(crate) fn run_registered(
    entry: Option<Registered>,
    module: &str,
    function: &str,
    args: Vec<Term>,
) -> futures_lite_box::BoxFuture<Result<Term, RpcError>> {
    match entry {
        Some(Registered::Async(f, _)) => Box::pin(PanicToError(f(args))),
        Some(Registered::Sync(f)) => {
            let r = f(args);
            Box::pin(async move { r })
        }
        None => {
            let e = undef(module, function, args);
            Box::pin(async move { Err(e) })
        }
    }
}

impl Node {
    /// Serves `Module:Function/Arity` over RPC (`rpc:call`, `erpc:call`,
    /// `erl_call`, rex) with a synchronous closure. Replaces an earlier
    /// registration of the same MFA. `erpc` calls of a synchronous function
    /// run inline on the connection's task (fast, but the connection waits):
    /// use [`Node::register_async_fn`] for anything that blocks or takes
    /// long. A panic becomes `error:rust_panic` on the caller's side.
    pub fn register_fn<F>(&self, module: &str, function: &str, arity: u32, f: F)
    where
        F: Fn(Vec<Term>) -> Result<Term, RpcError> + Send + Sync + 'static,
    {
        let wrapped = Registered::Sync(std::sync::Arc::new(f));
        self.inner
            .fns
            .write()
            .expect("fns")
            .insert((Atom::new(module), Atom::new(function), arity), wrapped);
    }

    /// [`Node::register_fn`] with an async closure. Each `erpc` call (and
    /// `spawn/4`) of it runs in a process of its own (a pid, links and
    /// monitors, an exit carrying the result). The process takes its first
    /// step (runs until it first waits) on the task of the connection that
    /// carried the request, so a call answered without waiting costs no
    /// hand-off to another task or worker, and goes on as a task of its own
    /// when it waits. Do blocking work in `spawn_blocking`: a first step
    /// that takes longer than 1 ms keeps the connection from reading, and
    /// the function's later processes are then started as tasks (logged
    /// once). A panic becomes `error:rust_panic` on the caller's side.
    pub fn register_async_fn<F, Fut>(&self, module: &str, function: &str, arity: u32, f: F)
    where
        F: Fn(Vec<Term>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Term, RpcError>> + Send + 'static,
    {
        let wrapped = Registered::Async(
            std::sync::Arc::new(move |args| Box::pin(f(args))),
            std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        );
        self.inner
            .fns
            .write()
            .expect("fns")
            .insert((Atom::new(module), Atom::new(function), arity), wrapped);
    }
}
