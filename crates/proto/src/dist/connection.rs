//! An established connection as one sans-IO state machine: framing,
//! header and fragments, ticks and liveness.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::flags::DistFlags;
use super::frame::{
    AtomText, DecodedBody, FrameDecoder, FrameError, FrameRef, InboundDecoder, InboundMessage,
    InboundRef, Limits, OutboundEncoder,
};
use super::handshake::Established;
use super::tick::{PeerNotResponding, TickAction, Ticker, DEFAULT_NET_TICKTIME};

/// Settings of an established connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// The tick window (OTP's `net_ticktime`).
    pub net_ticktime: Duration,
    /// What the peer may make this side buffer.
    pub limits: Limits,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            net_ticktime: DEFAULT_NET_TICKTIME,
            limits: Limits::default(),
        }
    }
}

/// Why a connection ended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer broke the framing.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer sent nothing for a tick window.
    #[error(transparent)]
    NotResponding(#[from] PeerNotResponding),
}

/// Arena capacity kept between bursts; above it the arena shrinks back.
const ARENA_KEEP: usize = 256 * 1024;

/// A complete message waiting in [`Connection`]'s buffers.
#[derive(Debug)]
struct Pending {
    /// `arena[start..end]`, or a reassembled message.
    data: PendingData,
    atoms_end: usize,
    versioned: bool,
}

#[derive(Debug)]
enum PendingData {
    Arena { end: usize },
    Owned(Vec<u8>),
}

/// One established distribution connection, without IO.
#[derive(Debug)]
pub struct Connection {
    peer_node: String,
    flags: DistFlags,
    frames: FrameDecoder,
    inbound: InboundDecoder,
    outbound: OutboundEncoder,
    ticker: Ticker,
    /// Complete messages not yet polled, in order.
    messages: VecDeque<Pending>,
    /// The bytes of pending messages that arrived whole (one frame each),
    /// back to back: no allocation per message.
    arena: Vec<u8>,
    /// The atoms of pending messages, back to back.
    atoms: Vec<AtomText>,
    /// A reassembled message being looked at through `poll_message_ref`.
    current: Vec<u8>,
    /// Where the next pending message starts in `arena` and `atoms`.
    arena_pos: usize,
    atoms_pos: usize,
    transmit: Vec<u8>,
    transmit_pos: usize,
    failed: Option<ConnectionError>,
    ticks_received: u64,
}

impl Connection {
    /// Takes over after the handshake; the handshake's leftover bytes are
    /// processed at once (errors surface on the next call).
    pub fn new(established: &Established, config: ConnectionConfig, now: Instant) -> Self {
        let mut c = Connection {
            peer_node: established.peer_node.clone(),
            flags: established.flags,
            frames: FrameDecoder::new(config.limits.max_frame_len),
            inbound: InboundDecoder::new(established.flags, config.limits),
            outbound: OutboundEncoder::new(established.flags),
            ticker: Ticker::new(config.net_ticktime, now),
            messages: VecDeque::new(),
            arena: Vec::new(),
            atoms: Vec::new(),
            current: Vec::new(),
            arena_pos: 0,
            atoms_pos: 0,
            transmit: Vec::new(),
            transmit_pos: 0,
            failed: None,
            ticks_received: 0,
        };
        if !established.leftover.is_empty() {
            let _ = c.handle_input(&established.leftover, now);
        }
        c
    }

    /// The peer's node name.
    pub fn peer_node(&self) -> &str {
        &self.peer_node
    }

    /// The negotiated flags.
    pub fn flags(&self) -> DistFlags {
        self.flags
    }

    /// Why the connection failed, if it did (no more input is accepted).
    pub fn error(&self) -> Option<&ConnectionError> {
        self.failed.as_ref()
    }

    /// Ticks read so far.
    pub fn ticks_received(&self) -> u64 {
        self.ticks_received
    }

    /// Feeds bytes read from the socket.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) -> Result<(), ConnectionError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if !data.is_empty() {
            self.ticker.on_read(now);
        }
        if self.messages.is_empty() {
            // Everything was polled: reuse the buffers from the start.
            self.arena.clear();
            if self.arena.capacity() > ARENA_KEEP {
                self.arena.shrink_to(ARENA_KEEP);
            }
            self.atoms.clear();
            self.current = Vec::new();
            self.arena_pos = 0;
            self.atoms_pos = 0;
        }
        self.frames.push(data);
        loop {
            let body = match self.frames.next_frame_ref() {
                Ok(Some(FrameRef::Data(body))) => body,
                Ok(Some(FrameRef::Tick)) => {
                    self.ticks_received += 1;
                    continue;
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(e.into())),
            };
            match self.inbound.decode_slice(body, &mut self.atoms) {
                Ok(Some((found, versioned))) => {
                    let data = match found {
                        DecodedBody::InFrame(offset) => {
                            self.arena.extend_from_slice(&body[offset..]);
                            PendingData::Arena {
                                end: self.arena.len(),
                            }
                        }
                        DecodedBody::Reassembled(v) => PendingData::Owned(v),
                    };
                    self.messages.push_back(Pending {
                        data,
                        atoms_end: self.atoms.len(),
                        versioned,
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(self.fail(e.into())),
            }
        }
    }

    fn fail(&mut self, e: ConnectionError) -> ConnectionError {
        self.failed = Some(e.clone());
        e
    }

    /// The next complete inbound message.
    pub fn poll_message(&mut self) -> Option<InboundMessage> {
        self.poll_message_ref().map(|m| m.to_owned())
    }

    /// The next complete inbound message, borrowed from the connection's
    /// buffers (no allocation per message); valid until the next call
    /// that changes the connection.
    pub fn poll_message_ref(&mut self) -> Option<InboundRef<'_>> {
        // the previous reassembled message (if any) is done with: free it
        // now rather than at the next read, so a large message is not held
        // twice while its copy is decoded
        self.current = Vec::new();
        let p = self.messages.pop_front()?;
        let atoms = &self.atoms[self.atoms_pos..p.atoms_end];
        self.atoms_pos = p.atoms_end;
        let data = match p.data {
            PendingData::Arena { end } => {
                let d = &self.arena[self.arena_pos..end];
                self.arena_pos = end;
                d
            }
            PendingData::Owned(v) => {
                self.current = v;
                &self.current[..]
            }
        };
        Some(InboundRef {
            atoms,
            data,
            versioned: p.versioned,
        })
    }

    /// True if the next message [`Connection::poll_message_ref`] returns
    /// was reassembled from fragments (its data is a buffer of its own,
    /// which [`Connection::take_reassembled`] can then take).
    pub fn next_is_reassembled(&self) -> bool {
        matches!(
            self.messages.front(),
            Some(Pending {
                data: PendingData::Owned(_),
                ..
            })
        )
    }

    /// The buffer of the reassembled message [`Connection::poll_message_ref`]
    /// returned last (empty if it was not reassembled): its `data`, which
    /// the caller may keep instead of copying it.
    pub fn take_reassembled(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.current)
    }

    /// Queues a message: `control` and `payload` are versioned ETF.
    pub fn send(&mut self, control: &[u8], payload: Option<&[u8]>, now: Instant) {
        self.compact();
        self.outbound.encode(control, payload, &mut self.transmit);
        self.ticker.on_write(now);
    }

    /// Records that frames encoded elsewhere (with another
    /// [`OutboundEncoder`] on the same
    /// stream) were written, so no tick is due.
    pub fn note_write(&mut self, now: Instant) {
        self.ticker.on_write(now);
    }

    /// Queues a tick (a zero-length frame).
    pub fn send_tick(&mut self, now: Instant) {
        self.compact();
        self.transmit.extend_from_slice(&[0, 0, 0, 0]);
        self.ticker.on_write(now);
    }

    fn compact(&mut self) {
        if self.transmit_pos == self.transmit.len() {
            self.transmit.clear();
            self.transmit_pos = 0;
        }
    }

    /// Bytes waiting to be written (write some, then [`Connection::consume_transmit`]).
    pub fn pending_transmit(&self) -> &[u8] {
        &self.transmit[self.transmit_pos..]
    }

    /// Marks `n` bytes of [`Connection::pending_transmit`] as written.
    pub fn consume_transmit(&mut self, n: usize) {
        self.transmit_pos = (self.transmit_pos + n).min(self.transmit.len());
        self.compact();
    }

    /// Takes every pending byte at once.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.pending_transmit().is_empty() {
            return None;
        }
        let out = self.transmit.split_off(self.transmit_pos);
        self.transmit.clear();
        self.transmit_pos = 0;
        Some(out)
    }

    /// When [`Connection::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed.is_some() {
            None
        } else {
            Some(self.ticker.poll_timeout())
        }
    }

    /// Sends a tick when due; fails when the peer has been silent for a window.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnectionError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.ticker.handle_timeout(now) {
            Ok(TickAction::SendTick) => {
                self.compact();
                self.transmit.extend_from_slice(&[0, 0, 0, 0]);
                Ok(())
            }
            Ok(TickAction::Idle) => Ok(()),
            Err(e) => Err(self.fail(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::handshake::{
        Acceptor, Cookie, HandshakeConfig, HandshakeEvent, Initiator, Side, Status,
    };

    /// Runs a real handshake in memory and returns both sides' outcomes.
    fn establish(now: Instant) -> (Established, Established) {
        let a = HandshakeConfig::new("a@h", Cookie::new("c"), 1);
        let b = HandshakeConfig::new("b@h", Cookie::new("c"), 2);
        let mut i = Initiator::new(a, "b@h", 1, now);
        let mut acc = Acceptor::new(b, 2, now);
        let (mut ei, mut ea) = (None, None);
        while ei.is_none() || ea.is_none() {
            while let Some(t) = i.poll_transmit() {
                acc.handle_input(&t, now).unwrap();
            }
            while let Some(ev) = acc.poll_event() {
                match ev {
                    HandshakeEvent::NameReceived(_) => acc.set_status(Status::Ok, now).unwrap(),
                    HandshakeEvent::Established(e) => ea = Some(e),
                }
            }
            while let Some(t) = acc.poll_transmit() {
                i.handle_input(&t, now).unwrap();
            }
            if let Some(HandshakeEvent::Established(e)) = i.poll_event() {
                ei = Some(e);
            }
        }
        (ei.unwrap(), ea.unwrap())
    }

    struct Link {
        now: Instant,
        a: Connection,
        b: Connection,
        /// When false, bytes from b are dropped (b is frozen).
        b_alive: bool,
    }

    impl Link {
        fn new(net_ticktime: Duration) -> Self {
            let now = Instant::now();
            let (ea, eb) = establish(now);
            let cfg = ConnectionConfig {
                net_ticktime,
                limits: Limits::default(),
            };
            Link {
                now,
                a: Connection::new(&ea, cfg, now),
                b: Connection::new(&eb, cfg, now),
                b_alive: true,
            }
        }

        fn flush(&mut self) -> Result<(), ConnectionError> {
            if let Some(t) = self.a.poll_transmit() {
                if self.b_alive {
                    self.b.handle_input(&t, self.now)?;
                }
            }
            if let Some(t) = self.b.poll_transmit() {
                if self.b_alive {
                    self.a.handle_input(&t, self.now)?;
                }
            }
            Ok(())
        }

        /// Jumps to the next timer of either side and fires it.
        fn step(&mut self) -> Result<(), ConnectionError> {
            let mut next = self.a.poll_timeout().unwrap();
            if self.b_alive {
                next = next.min(self.b.poll_timeout().unwrap());
            }
            self.now = next;
            self.a.handle_timeout(self.now)?;
            if self.b_alive {
                self.b.handle_timeout(self.now)?;
            }
            self.flush()
        }
    }

    #[test]
    fn messages_both_ways_with_fragments() {
        let mut l = Link::new(Duration::from_secs(60));
        assert!(l.a.flags().contains(DistFlags::FRAGMENTS));
        l.a.send(&[131, 104, 0], Some(&[131, 106]), l.now);
        let mut big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        big[0] = 131;
        l.b.send(&[131, 106], Some(&big), l.now);
        l.flush().unwrap();
        let m = l.b.poll_message().unwrap();
        assert_eq!(m.data, vec![104, 0, 106]);
        let m = l.a.poll_message().unwrap();
        assert_eq!(m.data.len(), 1 + big.len() - 1);
        assert_eq!(&m.data[1..], &big[1..]);
    }

    #[test]
    fn borrowed_messages_survive_interleaved_input() {
        let mut l = Link::new(Duration::from_secs(60));
        l.a.outbound.set_fragment_size(100);
        let big: Vec<u8> = std::iter::once(131)
            .chain((0..1000u32).map(|i| i as u8))
            .collect();
        let mut bytes = Vec::new();
        for i in 0..5u8 {
            l.a.send(&[131, 97, i], Some(&[131, 97, i + 10]), l.now);
            l.a.send(&[131, 97, 100 + i], Some(&big), l.now);
            bytes.extend(l.a.poll_transmit().unwrap());
        }
        let want = |i: u8, n: usize| -> Vec<u8> {
            if n.is_multiple_of(2) {
                vec![97, i, 97, i + 10]
            } else {
                let mut v = vec![97, 100 + i];
                v.extend_from_slice(&big[1..]);
                v
            }
        };
        // Feed in odd-sized pieces, polling one message now and then.
        let mut got = Vec::new();
        for (k, chunk) in bytes.chunks(37).enumerate() {
            l.b.handle_input(chunk, l.now).unwrap();
            if k.is_multiple_of(3) {
                if let Some(m) = l.b.poll_message_ref() {
                    got.push(m.data.to_vec());
                }
            }
        }
        while let Some(m) = l.b.poll_message() {
            got.push(m.data);
        }
        let expected: Vec<Vec<u8>> = (0..10).map(|n| want((n / 2) as u8, n)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn idle_link_ticks_and_stays_up() {
        let t = Duration::from_secs(4);
        let mut l = Link::new(t);
        let start = l.now;
        while l.now < start + t * 10 {
            l.step().unwrap();
        }
        // One tick per interval from each side.
        assert!(l.a.ticks_received() >= 39, "{}", l.a.ticks_received());
        assert!(l.b.ticks_received() >= 39);
    }

    #[test]
    fn frozen_peer_is_dead_after_the_window() {
        let t = Duration::from_secs(4);
        let mut l = Link::new(t);
        l.step().unwrap();
        let last_heard = l.now;
        l.b_alive = false;
        let err = loop {
            if let Err(e) = l.step() {
                break e;
            }
        };
        assert!(matches!(err, ConnectionError::NotResponding(_)));
        assert_eq!(l.now, last_heard + t);
        assert_eq!(l.a.poll_timeout(), None);
    }

    #[test]
    fn bad_input_fails_the_connection() {
        let now = Instant::now();
        let (ea, _) = establish(now);
        let cfg = ConnectionConfig {
            net_ticktime: Duration::from_secs(60),
            limits: Limits {
                max_frame_len: 1000,
                ..Limits::default()
            },
        };
        let mut c = Connection::new(&ea, cfg, now);
        assert_eq!(
            c.handle_input(&[0, 0, 3, 233], now),
            Err(ConnectionError::Frame(FrameError::FrameTooLong {
                len: 1001,
                max: 1000
            }))
        );
        assert!(c.handle_input(&[0, 0, 0, 0], now).is_err());

        let mut c = Connection::new(&ea, cfg, now);
        assert_eq!(
            c.handle_input(&[0, 0, 0, 2, 9, 9], now),
            Err(ConnectionError::Frame(FrameError::UnknownFrameType(9)))
        );
    }

    #[test]
    fn leftover_bytes_are_processed_first() {
        let now = Instant::now();
        let (mut ea, _) = establish(now);
        ea.leftover = vec![0, 0, 0, 0, 0, 0, 0, 4, 131, b'D', 0, 106];
        let mut c = Connection::new(&ea, ConnectionConfig::default(), now);
        assert_eq!(c.ticks_received(), 1);
        assert_eq!(c.poll_message().unwrap().data, vec![106]);
    }

    #[test]
    fn partial_writes() {
        let now = Instant::now();
        let (ea, _) = establish(now);
        let mut c = Connection::new(&ea, ConnectionConfig::default(), now);
        c.send(&[131, 106], None, now);
        assert_eq!(c.pending_transmit(), &[0, 0, 0, 4, 131, b'D', 0, 106]);
        c.consume_transmit(3);
        assert_eq!(c.pending_transmit(), &[4, 131, b'D', 0, 106]);
        c.send_tick(now);
        assert_eq!(c.pending_transmit(), &[4, 131, b'D', 0, 106, 0, 0, 0, 0]);
        c.consume_transmit(9);
        assert!(c.pending_transmit().is_empty());
        assert_eq!(c.poll_transmit(), None);
    }
}
