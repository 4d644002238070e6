//! Dispatch: where a decoded message from a peer goes. Messages to
//! plain mailboxes are staged still encoded and handed over per read;
//! links, monitors and exits go to the signal tables; everything else to
//! the services registered in [`Services`] (net_kernel, rex, global,
//! erpc's spawn requests, Rust gen_servers answered inline). The
//! connection knows none of them by name.

use std::collections::HashMap;
use std::sync::Arc;

use erlkube_etf::{Atom, Pid, Reference, Term};
use erlkube_proto::dist::control::{
    ControlError, ControlMessage, DistMessage, LazyMessage, LazyPayload, Mfa,
};
use erlkube_proto::dist::Connection;
use tokio::sync::Notify;

use crate::handshake::now;
use crate::mailbox::{Batch, Mailbox};
use crate::Inner;

/// What a built-in service sees of the connection a message came on.
pub(crate) struct Peer<'a> {
    conn: &'a mut Connection,
}

impl Peer<'_> {
    /// The peer's node name.
    pub(crate) fn node(&self) -> &str {
        self.conn.peer_node()
    }

    /// Answers on this connection, ahead of anything queued later.
    pub(crate) fn reply(&mut self, control: ControlMessage, payload: Option<Term>) {
        reply(self.conn, control, payload);
    }
}

/// A service the node answers itself under a registered name (REG_SEND
/// to it when no process holds the name): `from` and the message.
pub(crate) type NamedService = fn(&Arc<Inner>, &mut Peer<'_>, &Pid, Term);

/// Answers a SPAWN_REQUEST: request id, from, `{M, F, A}`, options and
/// the argument list; returns the control messages to send back, and
/// the body of the process it created, if any (started by the connection
/// once those messages are queued: see [`ProcessTask`]).
pub(crate) type SpawnService = fn(
    &Arc<Inner>,
    Reference,
    Pid,
    Mfa,
    Term,
    Option<Term>,
) -> (Vec<ControlMessage>, Option<ProcessTask>);

/// A spawned process's body, started by the connection only once its
/// SPAWN_REPLY is queued: the protocol wants the reply before any signal
/// from the new process (its exit, a message), and a process started at
/// once could run on another worker and write first.
pub(crate) struct ProcessTask {
    body: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    first_step: FirstStep,
}

/// Where a spawned process takes its first step (runs until it first
/// waits).
pub(crate) enum FirstStep {
    /// On the task that starts it (a synchronous or missing function,
    /// bad arguments: nothing that can take long).
    Here,
    /// Here while `allowed` holds (an async function: see
    /// [`ProcessTask::start`]); `mfa` names the function in the log.
    HereWhileAllowed {
        allowed: Arc<std::sync::atomic::AtomicBool>,
        mfa: (Atom, Atom, u32),
    },
}

/// A first step that ran longer than this on the connection's task (it
/// kept the connection from reading) makes the function's later
/// processes start as tasks of their own. A BEAM preempts a process after
/// 4,000 reductions, on the order of a millisecond.
const FIRST_STEP_MAX: std::time::Duration = std::time::Duration::from_millis(1);

/// A waker that does nothing, for a first step's poll (`Waker::noop` is
/// newer than the workspace's `rust-version`).
fn noop_waker() -> &'static std::task::Waker {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    static WAKER: std::sync::OnceLock<std::task::Waker> = std::sync::OnceLock::new();
    WAKER.get_or_init(|| std::task::Waker::from(Arc::new(Noop)))
}

impl ProcessTask {
    pub(crate) fn new(
        body: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        first_step: FirstStep,
    ) -> ProcessTask {
        ProcessTask { body, first_step }
    }

    /// Starts the process (call it once its SPAWN_REPLY is queued). Its
    /// first step runs here, on the connection's task, when allowed: a
    /// process that ends in it (an `erpc` call answered without waiting)
    /// never becomes a task, so there is no hand-off to another task or
    /// worker, and its exit is queued before the connection writes, in
    /// the same write as its SPAWN_REPLY. A process that waits goes on as
    /// a task of its own (its wakers are re-registered by the task's
    /// first poll). An async function whose first step took longer than
    /// `FIRST_STEP_MAX` has its later processes started as tasks. A panic
    /// in the first step ends the process as a panic in its task would
    /// (dropped: it exits `normal`), not the connection.
    pub(crate) fn start(self) {
        let ProcessTask {
            mut body,
            first_step,
        } = self;
        if let FirstStep::HereWhileAllowed { allowed, .. } = &first_step {
            if !allowed.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::spawn(body);
                return;
            }
        }
        let started = std::time::Instant::now();
        let mut cx = std::task::Context::from_waker(noop_waker());
        let step =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body.as_mut().poll(&mut cx)));
        let took = started.elapsed();
        if let FirstStep::HereWhileAllowed { allowed, mfa } = &first_step {
            if took > FIRST_STEP_MAX && allowed.swap(false, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    function = %format_args!("{}:{}/{}", mfa.0, mfa.1, mfa.2),
                    took_us = took.as_micros() as u64,
                    "a process's first step kept its connection waiting; this function's processes start as tasks from now on"
                );
            }
        }
        if let Ok(std::task::Poll::Pending) = step {
            tokio::spawn(body);
        }
    }
}

/// Answers a message to local process `id` inline (a Rust gen_server's
/// `$gen_call`): the reply's control message and payload, or the message
/// back for the mailbox.
pub(crate) type InlineService = fn(&Inner, u32, Term) -> Result<(ControlMessage, Term), Term>;

/// The services registered with dispatch; filled once when the node
/// starts, by each service module's `register`.
#[derive(Default)]
pub(crate) struct Services {
    named: HashMap<Atom, NamedService>,
    spawn: Option<SpawnService>,
    inline: Option<InlineService>,
}

impl Services {
    /// Serves messages to `name` (unless a process registers it).
    pub(crate) fn register_name(&mut self, name: &str, service: NamedService) {
        self.named.insert(Atom::new(name), service);
    }

    /// Serves SPAWN_REQUESTs.
    pub(crate) fn register_spawn(&mut self, service: SpawnService) {
        self.spawn = Some(service);
    }

    /// Answers messages to local processes inline where it can.
    pub(crate) fn register_inline(&mut self, service: InlineService) {
        self.inline = Some(service);
    }

    /// True when the node itself serves `name`.
    pub(crate) fn serves(&self, name: &Atom) -> bool {
        self.named.contains_key(name)
    }
}

/// Payloads of reassembled messages from this size on are moved to the
/// mailbox with their buffer instead of copied (peak memory of a large
/// message: see BENCHMARKS.md).
const MOVE_PAYLOAD_MIN: usize = 1 << 20;

/// Messages of the current read staged for one local process's mailbox.
#[derive(Default)]
pub(crate) struct Staged {
    /// Whose: the destination as the messages named it.
    key: Option<StageKey>,
    mailbox: Option<Arc<Mailbox>>,
    batch: Batch,
    /// Processes that SPAWN_REQUESTs of this read created, to be started
    /// once their replies are queued.
    spawns: Vec<ProcessTask>,
}

#[derive(PartialEq)]
enum StageKey {
    Pid(u32),
    Name(Atom),
}

impl Staged {
    /// The processes SPAWN_REQUESTs created since the last call; the
    /// caller queues the replies (`Connection::poll_transmit`), then
    /// starts them.
    pub(crate) fn take_spawns(&mut self) -> Vec<ProcessTask> {
        std::mem::take(&mut self.spawns)
    }

    /// Stages a payload for `key`'s mailbox; false when `key` is not a
    /// plain mailbox (no such process, a Rust gen_server answered
    /// inline, a name the node answers itself): the caller takes the
    /// general path.
    fn stage(
        &mut self,
        inner: &Inner,
        key: StageKey,
        body: &[u8],
        atoms: &[Atom],
        source: &Arc<Notify>,
    ) -> bool {
        if !self.select(inner, key) {
            return false;
        }
        self.batch.push_encoded(body, atoms, source);
        true
    }

    /// Makes `key`'s mailbox the one staged for; false when it is not a
    /// plain mailbox (see [`Staged::stage`]).
    fn select(&mut self, inner: &Inner, key: StageKey) -> bool {
        if self.key.as_ref() != Some(&key) {
            self.flush();
            let Some(mb) = mailbox_for(inner, &key) else {
                return false;
            };
            self.key = Some(key);
            self.mailbox = Some(mb);
        }
        true
    }

    /// Hands the staged messages to their mailbox.
    fn flush(&mut self) {
        self.key = None;
        if let Some(mb) = self.mailbox.take() {
            mb.push_batch(&mut self.batch);
        }
    }
}

/// The mailbox messages to `key` go to, if it is a plain one.
fn mailbox_for(inner: &Inner, key: &StageKey) -> Option<Arc<Mailbox>> {
    let (id, mb) = {
        let procs = inner.procs.lock().expect("procs");
        let id = match key {
            StageKey::Pid(id) => *id,
            StageKey::Name(name) => {
                if inner.services.serves(name) {
                    return None;
                }
                *procs.names.get(name)?
            }
        };
        (id, procs.by_id.get(&id)?.0.clone())
    };
    if inner.gen_calls.read().expect("gen_calls").contains_key(&id) {
        return None;
    }
    Some(mb)
}

/// Handles every decoded message; an error string closes the connection.
/// Messages to local processes' mailboxes go there still encoded, staged
/// per destination and handed over in batches; everything else (and
/// anything after it) goes through [`dispatch`] in order.
pub(crate) fn dispatch_all(
    inner: &Arc<Inner>,
    conn: &mut Connection,
    staged: &mut Staged,
    source: &Arc<Notify>,
) -> Result<(), ControlError> {
    use ControlMessage as C;
    loop {
        let reassembled = conn.next_is_reassembled();
        let Some(raw) = conn.poll_message_ref() else {
            break;
        };
        let LazyMessage { control, payload } = match DistMessage::decode_lazy(&raw) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "closing connection: bad control message");
                staged.flush();
                return Err(e);
            }
        };
        if let Some(LazyPayload::Encoded { body, atoms }) = &payload {
            let key = match &control {
                C::Send { to }
                | C::SendTt { to, .. }
                | C::SendSender { to, .. }
                | C::SendSenderTt { to, .. }
                    if to.node == inner.name && to.creation == inner.creation =>
                {
                    Some(StageKey::Pid(to.id))
                }
                C::RegSend { to_name, .. } | C::RegSendTt { to_name, .. } => {
                    Some(StageKey::Name(to_name.clone()))
                }
                _ => None,
            };
            if let Some(key) = key {
                if reassembled && body.len() >= MOVE_PAYLOAD_MIN {
                    // a large reassembled payload is moved to the mailbox
                    let start = body.as_ptr() as usize - raw.data.as_ptr() as usize;
                    let atoms = atoms.to_vec();
                    if staged.select(inner, key) {
                        let buf = conn.take_reassembled();
                        staged.batch.push_owned(buf, start, &atoms, source);
                        continue;
                    }
                    // not a plain mailbox: the general path, as below
                } else if staged.stage(inner, key, body, atoms, source) {
                    continue;
                }
            }
        }
        staged.flush();
        let payload = match payload.map(LazyPayload::into_term).transpose() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "closing connection: bad message payload");
                return Err(e);
            }
        };
        if let Some(task) = dispatch(inner, conn, DistMessage { control, payload }) {
            staged.spawns.push(task);
        }
    }
    staged.flush();
    Ok(())
}

fn reply(conn: &mut Connection, control: ControlMessage, payload: Option<Term>) {
    let (c, p) = DistMessage { control, payload }.encode();
    conn.send(&c, p.as_deref(), now());
}

/// Handles one message; the process to start when it was a
/// SPAWN_REQUEST served by a process.
fn dispatch(inner: &Arc<Inner>, conn: &mut Connection, msg: DistMessage) -> Option<ProcessTask> {
    use ControlMessage as C;
    let payload = msg.payload;
    match msg.control {
        C::Send { to }
        | C::SendTt { to, .. }
        | C::SendSender { to, .. }
        | C::SendSenderTt { to, .. } => {
            if let Some(p) = payload {
                if to.node == inner.name && to.creation == inner.creation {
                    call_or_deliver(inner, conn, to.id, p);
                } else {
                    inner.deliver_local(&to, p);
                }
            }
        }
        C::RegSend { from, to_name } | C::RegSendTt { from, to_name, .. } => {
            let p = payload?;
            let service = inner.services.named.get(&to_name).copied();
            if let Some(service) = service.filter(|_| inner.whereis_id(&to_name).is_none()) {
                service(inner, &mut Peer { conn }, &from, p);
            } else if let Some(id) = inner.whereis_id(&to_name) {
                call_or_deliver(inner, conn, id, p);
            } else if !inner.deliver_named(&to_name, p) {
                tracing::debug!(name = %to_name, "message to an unregistered name dropped");
            }
        }
        C::AliasSend { alias, .. } | C::AliasSendTt { alias, .. } => {
            if let Some(p) = payload {
                inner.deliver_alias(&alias, p);
            }
        }
        C::PayloadMonitorPExit {
            from,
            to,
            reference,
        } => {
            let reason = payload.unwrap_or(Term::atom("noproc"));
            let peer = conn.peer_node().to_owned();
            let a = inner.monitor_fired(from, to, reference, reason, Some(&peer));
            inner.route(a);
        }
        C::PayloadExit { from, to } | C::PayloadExitTt { from, to, .. } => {
            let reason = payload.unwrap_or(Term::atom("normal"));
            signal(inner, conn, C::Exit { from, to, reason });
        }
        C::PayloadExit2 { from, to } | C::PayloadExit2Tt { from, to, .. } => {
            let reason = payload.unwrap_or(Term::atom("normal"));
            signal(inner, conn, C::Exit2 { from, to, reason });
        }
        sig @ (C::Link { .. }
        | C::Unlink { .. }
        | C::UnlinkId { .. }
        | C::UnlinkIdAck { .. }
        | C::Exit { .. }
        | C::ExitTt { .. }
        | C::Exit2 { .. }
        | C::Exit2Tt { .. }
        | C::MonitorP { .. }
        | C::DemonitorP { .. }
        | C::MonitorPExit { .. }) => signal(inner, conn, sig),
        C::SpawnRequest {
            req_id,
            from,
            mfa,
            options,
            ..
        }
        | C::SpawnRequestTt {
            req_id,
            from,
            mfa,
            options,
            ..
        } => match inner.services.spawn {
            Some(spawn) => {
                let (replies, task) = spawn(inner, req_id, from, mfa, options, payload);
                for r in replies {
                    reply(conn, r, None);
                }
                return task;
            }
            None => tracing::debug!("spawn request ignored: no spawn service"),
        },
        C::SpawnReply {
            req_id, to, result, ..
        }
        | C::SpawnReplyTt {
            req_id, to, result, ..
        } => {
            let msg = match result {
                Term::Pid(ref p) => vec![
                    Term::atom("spawn_reply"),
                    Term::from(req_id),
                    Term::atom("ok"),
                    Term::Pid(p.clone()),
                ],
                other => vec![
                    Term::atom("spawn_reply"),
                    Term::from(req_id),
                    Term::atom("error"),
                    other,
                ],
            };
            inner.deliver_local(&to, Term::tuple(msg));
        }
        other => tracing::debug!(op = other.op(), "control message ignored"),
    }
    None
}

/// A `$gen_call` to a Rust gen_server is answered at once on this
/// connection when the caller is the peer; anything else goes to the mailbox.
fn call_or_deliver(inner: &Arc<Inner>, conn: &mut Connection, id: u32, msg: Term) {
    let answered = match inner.services.inline {
        Some(inline) => inline(inner, id, msg),
        None => Err(msg),
    };
    match answered {
        Ok((control, reply_msg)) => {
            let dest = match &control {
                ControlMessage::Send { to } => to.node.as_str(),
                ControlMessage::AliasSend { alias, .. } => alias.node.as_str(),
                _ => "",
            };
            if dest == conn.peer_node() {
                reply(conn, control, Some(reply_msg));
            } else if dest == inner.name.as_str() {
                match control {
                    ControlMessage::Send { to } => {
                        inner.deliver_local(&to, reply_msg);
                    }
                    ControlMessage::AliasSend { alias, .. } => {
                        inner.deliver_alias(&alias, reply_msg);
                    }
                    _ => {}
                }
            } else {
                let dest = dest.to_owned();
                inner.send_signal_msg(&dest, control, Some(reply_msg));
            }
        }
        Err(msg) => {
            inner.deliver_local(&inner.pid(id), msg);
        }
    }
}

/// Applies a link/monitor/exit signal from the peer.
fn signal(inner: &Arc<Inner>, conn: &mut Connection, sig: ControlMessage) {
    let peer = conn.peer_node().to_owned();
    let actions = inner.handle_signal(sig, Some(&peer));
    inner.route(actions);
}
