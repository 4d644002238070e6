//! The outbound queue of one connection, shared by every sender.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

use erlkube_proto::dist::control::DistMessage;
use erlkube_proto::dist::frame::OutboundEncoder;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

use crate::Outbound;

/// The outbound side of one connection, shared by every sender: frames
/// are encoded by the sending task straight into one growing buffer,
/// which the connection task writes with one syscall per batch. When the
/// connection task is idle and the peer has just been heard from (a
/// request/answer pattern), the sender writes its frame to the socket
/// itself, saving a task hop.
pub(crate) struct OutQueue {
    state: Mutex<OutState>,
    /// Wakes the connection task: bytes were queued (`queued` set). One
    /// task waits on it, so a single waker slot: no waiter list to join
    /// and leave under a lock on each turn of the connection loop.
    wake: AtomicWaker,
    /// Wakes senders waiting for room.
    room: Notify,
    limit: usize,
    /// Set once the connection ended.
    closed: AtomicBool,
    /// `!buf.is_empty()`, written under the lock: lets the connection
    /// task look without taking it (it would wait for a sender writing
    /// directly while holding it).
    queued: AtomicBool,
    /// The connection task's `busy`, for the task itself to read without
    /// the lock.
    task_busy: AtomicBool,
    /// A sender may write directly (re-armed on every read and whenever
    /// the connection task has drained the queue; cleared by a direct
    /// write).
    direct_ok: AtomicBool,
}

struct OutState {
    buf: Vec<u8>,
    encoder: OutboundEncoder,
    /// `None` once the connection ended.
    stream: Option<Sink>,
    /// The connection task holds a batch it has not fully written.
    busy: bool,
}

/// Who writes the queue to the peer.
enum Sink {
    /// A TCP socket: senders may write directly when the task is idle.
    Tcp(Arc<TcpStream>),
    /// Only the connection task writes (a TLS session is not shared).
    Task,
}

/// Why a frame was not queued.
enum Refused {
    Full,
    Closed,
}

impl OutQueue {
    pub(crate) fn new(stream: Arc<TcpStream>, encoder: OutboundEncoder, limit: usize) -> Self {
        let q = OutQueue::new_inner(encoder, limit);
        q.state.lock().expect("outq").stream = Some(Sink::Tcp(stream));
        q
    }

    fn new_inner(encoder: OutboundEncoder, limit: usize) -> Self {
        OutQueue {
            state: Mutex::new(OutState {
                buf: Vec::new(),
                encoder,
                stream: None,
                busy: false,
            }),
            wake: AtomicWaker::new(),
            room: Notify::new(),
            limit: limit.max(1),
            closed: AtomicBool::new(false),
            queued: AtomicBool::new(false),
            task_busy: AtomicBool::new(false),
            direct_ok: AtomicBool::new(true),
        }
    }

    /// A queue only the connection task writes (no direct writes by
    /// senders): for streams that cannot be shared, such as TLS.
    pub(crate) fn task_written(encoder: OutboundEncoder, limit: usize) -> Self {
        let q = OutQueue::new_inner(encoder, limit);
        q.state.lock().expect("outq").stream = Some(Sink::Task);
        q
    }

    /// True once the connection ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Encodes with `f` into the queue unless it is full or closed.
    fn try_push(
        &self,
        f: &mut dyn FnMut(&mut OutboundEncoder, &mut Vec<u8>),
    ) -> Result<(), Refused> {
        let mut st = self.state.lock().expect("outq");
        let st = &mut *st;
        let Some(sink) = &st.stream else {
            return Err(Refused::Closed);
        };
        if st.buf.len() >= self.limit {
            return Err(Refused::Full);
        }
        let idle = st.buf.is_empty() && !st.busy;
        f(&mut st.encoder, &mut st.buf);
        if !idle {
            // The connection task was already told (or is writing).
            return Ok(());
        }
        let direct = match sink {
            Sink::Tcp(stream) => Some(stream),
            Sink::Task => None,
        };
        if let Some(stream) = direct.filter(|_| self.direct_ok.swap(false, Ordering::AcqRel)) {
            let mut pos = 0;
            while pos < st.buf.len() {
                match stream.try_write(&st.buf[pos..]) {
                    Ok(n) => pos += n,
                    Err(_) => break, // WouldBlock or an error: the task handles it
                }
            }
            if pos == st.buf.len() {
                st.buf.clear();
                return Ok(());
            }
            st.buf.drain(..pos);
        }
        self.queued.store(true, Ordering::Release);
        self.wake.wake();
        Ok(())
    }

    /// Encodes with `f` into the queue, waiting while it is full.
    async fn push(&self, mut f: impl FnMut(&mut OutboundEncoder, &mut Vec<u8>)) -> Result<(), ()> {
        // The common case first: room in the queue, no waiter registered.
        match self.try_push(&mut f) {
            Ok(()) => return Ok(()),
            Err(Refused::Closed) => return Err(()),
            Err(Refused::Full) => {}
        }
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_push(&mut f) {
                Ok(()) => return Ok(()),
                Err(Refused::Closed) => return Err(()),
                Err(Refused::Full) => room.await,
            }
        }
    }

    /// Queues the frames of a message, waiting while the queue is full.
    pub(crate) async fn send_msg(&self, m: &DistMessage) -> Result<(), ()> {
        self.push(|e, out| {
            m.encode_frames(e, out);
        })
        .await
    }

    /// Queues an encoded message (versioned control and payload), waiting
    /// while the queue is full (the `mpsc::Sender::send` of older code).
    pub(crate) async fn send(&self, o: Outbound) -> Result<(), mpsc::error::SendError<Outbound>> {
        let r = self
            .push(|e, out| {
                e.encode(&o.control, o.payload.as_deref(), out);
            })
            .await;
        r.map_err(|()| mpsc::error::SendError(o))
    }

    /// Queues an encoded message unless the queue is full or closed.
    pub(crate) fn try_send(&self, o: Outbound) -> Result<(), mpsc::error::TrySendError<Outbound>> {
        let r = self.try_push(&mut |e, out| {
            e.encode(&o.control, o.payload.as_deref(), out);
        });
        match r {
            Ok(()) => Ok(()),
            Err(Refused::Full) => Err(mpsc::error::TrySendError::Full(o)),
            Err(Refused::Closed) => Err(mpsc::error::TrySendError::Closed(o)),
        }
    }

    /// Appends already framed bytes (the connection's own ticks and replies).
    pub(crate) fn push_raw(&self, bytes: &[u8]) {
        let mut st = self.state.lock().expect("outq");
        if st.stream.is_none() {
            return;
        }
        let idle = st.buf.is_empty() && !st.busy;
        st.buf.extend_from_slice(bytes);
        self.queued.store(true, Ordering::Release);
        if idle {
            self.wake.wake();
        }
    }

    /// [`OutQueue::push_raw`] by the connection task itself, which takes
    /// the queue next: no wake-up (waking itself while it runs would
    /// only reschedule it for a turn that finds nothing to do).
    pub(crate) fn push_own(&self, bytes: &[u8]) {
        let mut st = self.state.lock().expect("outq");
        if st.stream.is_none() {
            return;
        }
        st.buf.extend_from_slice(bytes);
        self.queued.store(true, Ordering::Release);
    }

    /// The connection task takes everything queued (swapping in `spare`),
    /// or marks itself idle when nothing is.
    pub(crate) fn take(&self, spare: &mut Vec<u8>) -> bool {
        if !self.queued.load(Ordering::Acquire) && !self.task_busy.load(Ordering::Relaxed) {
            // Idle and nothing queued (a sender that queues now sees the
            // task idle and wakes it).
            self.direct_ok.store(true, Ordering::Release);
            return false;
        }
        let mut st = self.state.lock().expect("outq");
        if st.buf.is_empty() {
            st.busy = false;
            self.task_busy.store(false, Ordering::Relaxed);
            self.direct_ok.store(true, Ordering::Release);
            return false;
        }
        let was_full = st.buf.len() >= self.limit;
        spare.clear();
        std::mem::swap(&mut st.buf, spare);
        st.busy = true;
        self.task_busy.store(true, Ordering::Relaxed);
        self.queued.store(false, Ordering::Release);
        drop(st);
        if was_full {
            self.room.notify_waiters();
        }
        true
    }

    /// Ready when bytes are queued for the connection task to take
    /// (for the connection task only: it holds the one waker slot).
    pub(crate) fn poll_queued(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.queued.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        // Register, then look again: a sender that queued in between
        // found no waker (it stores `queued` before waking).
        self.wake.register(cx.waker());
        if self.queued.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Waits until bytes are queued (see [`OutQueue::poll_queued`]).
    pub(crate) async fn queued(&self) {
        std::future::poll_fn(|cx| self.poll_queued(cx)).await
    }

    /// The peer was heard from: a sender may write directly again.
    pub(crate) fn arm_direct(&self) {
        self.direct_ok.store(true, Ordering::Release);
    }

    /// The connection ended: senders get an error from now on.
    pub(crate) fn close(&self) {
        let mut st = self.state.lock().expect("outq");
        st.stream = None;
        st.buf = Vec::new();
        self.queued.store(false, Ordering::Release);
        self.closed.store(true, Ordering::Release);
        drop(st);
        self.room.notify_waiters();
    }
}
