//! Process mailboxes. A mailbox holds terms, and payloads from the
//! distribution still encoded: the connection task only checks a payload
//! and copies its bytes; the receiving process decodes it when it takes
//! the message (as the BEAM does). That keeps the connection task's work
//! per message small, spreads decoding over the receivers, and allocates
//! and frees each term on the receiver's thread.
//!
//! Messages travel in [`Batch`]es: the connection task stages the
//! messages of one read for one process and hands them over under one
//! lock with at most one wake-up; the process swaps the whole queue out
//! under one lock and then reads from its own copy.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use erlkube_etf::{Atom, Term};
use tokio::sync::Notify;

/// Buffers larger than this are released when a batch is emptied, so a
/// burst does not pin memory in an idle process (below it, buffers are
/// reused: growing them again costs page faults).
const KEEP_BYTES: usize = 2 << 20;
const KEEP_ENTRIES: usize = 1 << 15;

/// Messages in arrival order.
#[derive(Default)]
pub(crate) struct Batch {
    /// One per message, in order.
    slots: VecDeque<Slot>,
    /// The terms of the [`Slot::TERM`] slots, in order.
    terms: VecDeque<Term>,
    /// Encoded payloads back to back.
    bytes: Vec<u8>,
    /// Payloads moved in with their own buffer (large reassembled
    /// messages, see [`Batch::push_owned`]): the buffer and where the
    /// payload starts in it, for the [`Slot::OWNED`] slots in order.
    owned: VecDeque<(Vec<u8>, usize)>,
    /// Their atom cache atoms back to back.
    atoms: Vec<Atom>,
    /// The connections encoded payloads came from (a payload that fails
    /// to decode closes its connection, as on the BEAM).
    sources: Vec<Arc<Notify>>,
    /// Read positions in `bytes` and `atoms`.
    bytes_pos: usize,
    atoms_pos: usize,
}

/// A message: a checked payload, `bytes[bytes_pos..end]` with atoms
/// `atoms[atoms_pos..atoms_end]`, from `sources[source]`; or, when
/// `source` is [`Slot::TERM`], the next of the batch's terms.
#[derive(Clone, Copy)]
struct Slot {
    end: usize,
    atoms_end: usize,
    source: u32,
}

impl Slot {
    const TERM: u32 = u32::MAX;
    /// `end` of a slot whose payload is the next of [`Batch::owned`].
    const OWNED: usize = usize::MAX;
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub(crate) fn push_term(&mut self, t: Term) {
        self.terms.push_back(t);
        self.slots.push_back(Slot {
            end: 0,
            atoms_end: 0,
            source: Slot::TERM,
        });
    }

    /// Appends a payload body (checked by the caller) with its message's
    /// atom cache atoms, from the connection `source` kills.
    pub(crate) fn push_encoded(&mut self, body: &[u8], atoms: &[Atom], source: &Arc<Notify>) {
        self.bytes.extend_from_slice(body);
        let end = self.bytes.len();
        self.push_slot(end, body, atoms, source);
    }

    /// Like [`Batch::push_encoded`] for the payload `buf[start..]`, whose
    /// buffer is moved in rather than copied (a large reassembled
    /// message: copying it would hold it twice).
    pub(crate) fn push_owned(
        &mut self,
        buf: Vec<u8>,
        start: usize,
        atoms: &[Atom],
        source: &Arc<Notify>,
    ) {
        self.push_slot(Slot::OWNED, buf.get(start..).unwrap_or(&[]), atoms, source);
        self.owned.push_back((buf, start));
    }

    fn push_slot(&mut self, end: usize, body: &[u8], atoms: &[Atom], source: &Arc<Notify>) {
        // A payload refers to the atoms only through ATOM_CACHE_REF.
        if !atoms.is_empty() && body.contains(&erlkube_proto::dist::frame::ATOM_CACHE_REF) {
            self.atoms.extend_from_slice(atoms);
        }
        let source = match self.sources.last() {
            Some(s) if Arc::ptr_eq(s, source) => self.sources.len() - 1,
            _ => {
                self.sources.push(source.clone());
                self.sources.len() - 1
            }
        };
        self.slots.push_back(Slot {
            end,
            atoms_end: self.atoms.len(),
            source: source as u32,
        });
    }

    /// Moves every message of `other` to the end of this batch, leaving
    /// `other` empty (with buffers to reuse).
    fn append(&mut self, other: &mut Batch) {
        if self.is_empty() {
            self.clear();
            std::mem::swap(self, other);
            return;
        }
        let b0 = self.bytes.len() - other.bytes_pos;
        let a0 = self.atoms.len() - other.atoms_pos;
        let s0 = self.sources.len() as u32;
        self.bytes
            .extend_from_slice(&other.bytes[other.bytes_pos..]);
        self.atoms
            .extend_from_slice(&other.atoms[other.atoms_pos..]);
        self.sources.append(&mut other.sources);
        self.terms.append(&mut other.terms);
        self.owned.append(&mut other.owned);
        self.slots.extend(other.slots.drain(..).map(|s| {
            if s.source == Slot::TERM {
                s
            } else {
                Slot {
                    end: if s.end == Slot::OWNED {
                        Slot::OWNED
                    } else {
                        s.end + b0
                    },
                    atoms_end: s.atoms_end + a0,
                    source: s.source + s0,
                }
            }
        }));
        other.clear();
    }

    /// Empties the batch, keeping modest buffers for reuse.
    fn clear(&mut self) {
        self.slots.clear();
        self.terms.clear();
        self.owned.clear();
        self.bytes.clear();
        self.atoms.clear();
        self.sources.clear();
        self.bytes_pos = 0;
        self.atoms_pos = 0;
        if self.bytes.capacity() > KEEP_BYTES {
            self.bytes = Vec::new();
        }
        if self.slots.capacity() > KEEP_ENTRIES {
            self.slots = VecDeque::new();
        }
        if self.terms.capacity() > KEEP_ENTRIES {
            self.terms = VecDeque::new();
        }
        if self.atoms.capacity() > KEEP_ENTRIES {
            self.atoms = Vec::new();
        }
    }

    /// The next message, decoding an encoded payload. A payload that does
    /// not decode (a repeated map key, the one thing the connection's check
    /// leaves out) is dropped and its connection closed.
    fn pop(&mut self) -> Option<Term> {
        loop {
            let Some(s) = self.slots.pop_front() else {
                self.clear();
                return None;
            };
            if s.source == Slot::TERM {
                return self.terms.pop_front();
            }
            let atoms = &self.atoms[self.atoms_pos..s.atoms_end];
            self.atoms_pos = s.atoms_end;
            let decoded = if s.end == Slot::OWNED {
                let (buf, start) = self.owned.pop_front().unwrap_or_default();
                decode_owned_payload(buf, start, atoms)
            } else {
                let body = &self.bytes[self.bytes_pos..s.end];
                self.bytes_pos = s.end;
                erlkube_proto::dist::control::decode_payload_body(body, atoms)
            };
            match decoded {
                Ok(t) => return Some(t),
                Err(e) => {
                    tracing::warn!(error = %e, "closing connection: bad message payload");
                    if let Some(src) = self.sources.get(s.source as usize) {
                        src.notify_one();
                    }
                }
            }
        }
    }
}

/// Decodes the payload `buf[start..]`. A payload that is one binary
/// running to the end of the buffer (the usual large message) becomes
/// that binary in the buffer itself, moved down over what preceded it:
/// no second copy of a large binary.
fn decode_owned_payload(
    mut buf: Vec<u8>,
    start: usize,
    atoms: &[Atom],
) -> Result<Term, erlkube_proto::dist::control::ControlError> {
    const BINARY_EXT: u8 = 109;
    if let Some([BINARY_EXT, a, b, c, d]) = buf.get(start..start + 5) {
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        if start + 5 + len == buf.len() {
            buf.drain(..start + 5);
            return Ok(Term::Binary(buf.into()));
        }
    }
    erlkube_proto::dist::control::decode_payload_body(buf.get(start..).unwrap_or(&[]), atoms)
}

/// The shared end of a mailbox.
#[derive(Default)]
pub(crate) struct Mailbox {
    queue: Mutex<Batch>,
    /// Wakes the process: the queue went from empty to non-empty, or the
    /// mailbox closed. A mailbox has one reader, so one waker slot with
    /// atomic register/take is enough: no waiter list under a lock (a
    /// `Notify`'s) to join and leave on every wait, which is on every
    /// message of a request/answer exchange.
    waker: AtomicWaker,
    closed: AtomicBool,
}

impl Mailbox {
    /// Queues one term; false if the process is gone.
    pub(crate) fn push_term(&self, t: Term) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let mut q = self.queue.lock().expect("mailbox");
        let was_empty = q.is_empty();
        q.push_term(t);
        drop(q);
        if was_empty {
            self.waker.wake();
        }
        true
    }

    /// Queues every message of `batch` (left empty); false if the
    /// process is gone (the messages are dropped, as in Erlang).
    pub(crate) fn push_batch(&self, batch: &mut Batch) -> bool {
        if self.closed.load(Ordering::Acquire) {
            batch.clear();
            return false;
        }
        let mut q = self.queue.lock().expect("mailbox");
        let was_empty = q.is_empty();
        q.append(batch);
        drop(q);
        if was_empty {
            self.waker.wake();
        }
        true
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// The node's handle on a process's mailbox; dropping it (the process
/// ended, or the node is gone) closes the mailbox.
pub(crate) struct MailboxTx(pub Arc<Mailbox>);

impl Drop for MailboxTx {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The process's end: its own copy of the queue, refilled by swapping.
pub(crate) struct MailboxRx {
    shared: Arc<Mailbox>,
    local: Batch,
}

impl MailboxRx {
    pub(crate) fn new(shared: Arc<Mailbox>) -> Self {
        MailboxRx {
            shared,
            local: Batch::default(),
        }
    }

    /// The next message if one is waiting; `Err(())` once the mailbox is
    /// closed and empty.
    pub(crate) fn try_recv(&mut self) -> Result<Option<Term>, ()> {
        if let Some(t) = self.local.pop() {
            return Ok(Some(t));
        }
        // Read `closed` first: whatever was queued before closing is then
        // seen by the swap below.
        let closed = self.shared.closed.load(Ordering::Acquire);
        {
            let mut q = self.shared.queue.lock().expect("mailbox");
            if !q.is_empty() {
                std::mem::swap(&mut *q, &mut self.local);
            }
        }
        if let Some(t) = self.local.pop() {
            return Ok(Some(t));
        }
        if closed {
            Err(())
        } else {
            Ok(None)
        }
    }

    /// The next message; `None` once the mailbox is closed and empty.
    pub(crate) async fn recv(&mut self) -> Option<Term> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message; `Ready(None)` once the mailbox is
    /// closed and empty.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Term>> {
        match self.try_recv() {
            Ok(Some(t)) => return Poll::Ready(Some(t)),
            Err(()) => return Poll::Ready(None),
            Ok(None) => {}
        }
        // Register, then look again: a message queued between the first
        // look and the registration found no waker to wake.
        self.shared.waker.register(cx.waker());
        match self.try_recv() {
            Ok(Some(t)) => Poll::Ready(Some(t)),
            Err(()) => Poll::Ready(None),
            Ok(None) => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(t: &Term, atoms: &[Atom]) -> Vec<u8> {
        // Encode, then turn every atom in `atoms` into a cache reference
        // when it is the whole term (enough for these tests).
        let mut out = Vec::new();
        erlkube_etf::encode_body_into(t, &erlkube_etf::EncodeOptions::utf8_atoms(), &mut out);
        if let Term::Atom(a) = t {
            if let Some(ix) = atoms.iter().position(|x| x == a) {
                return vec![erlkube_proto::dist::frame::ATOM_CACHE_REF, ix as u8];
            }
        }
        out
    }

    /// Payloads moved in with their buffers keep their place among the
    /// copied ones and the terms, across appends; a lone binary becomes
    /// the buffer itself (no second allocation of its size).
    #[test]
    fn owned_payloads_keep_order_and_binaries_keep_their_buffer() {
        let src = Arc::new(Notify::new());
        let atoms = [Atom::new("cached")];
        let with_prefix = |t: &Term, atoms: &[Atom]| {
            let mut b = b"control".to_vec();
            b.extend(body(t, atoms));
            b
        };
        let bin = Term::Binary(vec![9; 5000].into());
        let tuple = Term::tuple(vec![Term::atom("big"), Term::Binary(vec![1; 10].into())]);
        let mut staged = Batch::default();
        staged.push_encoded(&body(&Term::Integer(1), &[]), &[], &src);
        staged.push_owned(with_prefix(&bin, &[]), 7, &[], &src);
        staged.push_term(Term::Integer(2));
        let mut shared = Batch::default();
        shared.push_encoded(&body(&Term::Integer(0), &[]), &[], &src);
        shared.append(&mut staged);
        let mut more = Batch::default();
        more.push_owned(with_prefix(&tuple, &[]), 7, &[], &src);
        more.push_owned(with_prefix(&Term::atom("cached"), &atoms), 7, &atoms, &src);
        more.push_encoded(&body(&Term::Integer(3), &[]), &[], &src);
        shared.append(&mut more);
        assert_eq!(shared.pop(), Some(Term::Integer(0)));
        assert_eq!(shared.pop(), Some(Term::Integer(1)));
        match &shared.pop() {
            Some(Term::Binary(v)) => {
                assert!(v.len() == 5000 && v.iter().all(|&x| x == 9));
                // the message's buffer: room for the prefix and the head
                assert!(v.capacity() >= 5000 + 7 + 5);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(shared.pop(), Some(Term::Integer(2)));
        assert_eq!(shared.pop(), Some(tuple));
        assert_eq!(shared.pop(), Some(Term::atom("cached")));
        assert_eq!(shared.pop(), Some(Term::Integer(3)));
        assert_eq!(shared.pop(), None);
    }

    #[test]
    fn batches_keep_order_across_appends() {
        let src = Arc::new(Notify::new());
        let atoms = [Atom::new("x"), Atom::new("cached")];
        let mut shared = Batch::default();
        let mut expect = Vec::new();
        for round in 0..4i64 {
            let mut staged = Batch::default();
            for i in 0..5 {
                let t = Term::tuple(vec![Term::Integer(round), Term::Integer(i)]);
                staged.push_encoded(&body(&t, &atoms), &atoms, &src);
                expect.push(t);
                let c = Term::atom("cached");
                staged.push_encoded(&body(&c, &atoms), &atoms, &src);
                expect.push(c);
            }
            staged.push_term(Term::Integer(round));
            expect.push(Term::Integer(round));
            shared.append(&mut staged);
            assert!(staged.is_empty());
        }
        let mut got = Vec::new();
        while let Some(t) = shared.pop() {
            got.push(t);
        }
        assert_eq!(got, expect);
        assert!(shared.is_empty());
    }

    /// A producer on another thread pushing each message the moment the
    /// process has taken the one before, so that the process waits for
    /// nearly every one: every message wakes it, in order, through both
    /// `push_term` and `push_batch` (a push that woke nobody would leave
    /// the process waiting; the bound turns that into a failure).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_push_from_another_thread_wakes_the_process() {
        use std::sync::atomic::AtomicI64;
        const N: i64 = 20_000;
        let shared = Arc::new(Mailbox::default());
        let mut rx = MailboxRx::new(shared.clone());
        let taken = Arc::new(AtomicI64::new(-1));
        let failed = Arc::new(AtomicBool::new(false));
        let (t, f) = (taken.clone(), failed.clone());
        let producer = std::thread::spawn(move || {
            let tx = MailboxTx(shared);
            for i in 0..N {
                // wait until the process took message i - 1
                while t.load(Ordering::Acquire) < i - 1 {
                    if f.load(Ordering::Acquire) {
                        return;
                    }
                    std::hint::spin_loop();
                }
                if i % 2 == 0 {
                    let mut b = Batch::default();
                    b.push_term(Term::Integer(i));
                    assert!(tx.0.push_batch(&mut b));
                } else {
                    assert!(tx.0.push_term(Term::Integer(i)));
                }
            }
        });
        for i in 0..N {
            // The bound is looked at first: a message that is queued but
            // woke nobody must fail the test, not be found when the bound
            // wakes the task.
            let bound = tokio::time::sleep(std::time::Duration::from_secs(10));
            let got = tokio::select! {
                biased;
                _ = bound => None,
                m = rx.recv() => Some(m),
            };
            let Some(got) = got else {
                failed.store(true, Ordering::Release);
                panic!("message {i} never woke the process");
            };
            assert_eq!(got, Some(Term::Integer(i)));
            taken.store(i, Ordering::Release);
        }
        producer.join().unwrap();
        // The producer's handle is gone: the mailbox is closed and empty.
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn undecodable_payload_is_dropped_and_closes_its_source() {
        let src = Arc::new(Notify::new());
        let shared = Arc::new(Mailbox::default());
        let mut rx = MailboxRx::new(shared.clone());
        let mut b = Batch::default();
        // {1 => 1, 1 => 2}: passes the connection's check, fails to decode.
        b.push_encoded(&[116, 0, 0, 0, 2, 97, 1, 97, 1, 97, 1, 97, 2], &[], &src);
        b.push_encoded(&[97, 7], &[], &src);
        assert!(shared.push_batch(&mut b));
        let killed = src.notified();
        assert_eq!(rx.recv().await, Some(Term::Integer(7)));
        tokio::time::timeout(std::time::Duration::from_secs(1), killed)
            .await
            .expect("source notified");
        // Closing ends recv once the queue is empty.
        shared.push_term(Term::Integer(8));
        drop(MailboxTx(shared));
        assert_eq!(rx.recv().await, Some(Term::Integer(8)));
        assert_eq!(rx.recv().await, None);
    }
}
