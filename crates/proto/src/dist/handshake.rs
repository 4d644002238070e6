//! The distribution handshake (both sides) as a sans-IO state machine.
//!
//! Messages travel in frames with a 2-byte big-endian length over TCP
//! (`inet_tcp_dist`), and with a 4-byte length inside TLS
//! (`inet_tls_dist` sets `{packet, 4}` on the TLS socket before the
//! handshake starts): see [`HandshakeFraming`]. The
//! initiator (A, who dialled) and the acceptor (B) exchange:
//!
//! ```text
//! A -> B  send_name       'N' Flags:64 Creation:32 NLen:16 Name
//!                         (or the old 'n' Version:16=5 Flags:32 Name)
//! B -> A  send_status     's' "ok" | "ok_simultaneous" | "nok" | "not_allowed" | "alive"
//! A -> B  (after "alive") 's' "true" | "false"
//! B -> A  send_challenge  'N' Flags:64 Challenge:32 Creation:32 NLen:16 Name
//! A -> B  send_complement 'c' FlagsHigh:32 Creation:32   (only after the old 'n')
//! A -> B  challenge_reply 'r' Challenge:32 Digest:16
//! B -> A  challenge_ack   'a' Digest:16
//! ```
//!
//! Digest = md5(cookie ++ decimal text of the challenge), compared in
//! constant time. Each side is driven with [`Initiator::handle_input`] /
//! [`Acceptor::handle_input`], emits frames through `poll_transmit` and
//! arms its step timer through `poll_timeout` / `handle_timeout`. No IO,
//! no clock, no randomness: challenges and time are inputs.

use std::fmt;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use super::flags::DistFlags;

/// The distribution protocol version of the old `n` send_name.
pub const OLD_NAME_VERSION: u16 = 5;
/// OTP's default `net_setuptime`: the limit for each handshake step.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(7);

/// A distribution cookie. Never printed: `Debug` shows `Cookie(..)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Cookie(String);

impl Cookie {
    /// Wraps the cookie text.
    pub fn new(cookie: impl Into<String>) -> Self {
        Cookie(cookie.into())
    }

    /// The cookie text (for handing to a peer that needs it, never for logs).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// md5(cookie ++ decimal challenge), the handshake digest.
    pub fn digest(&self, challenge: u32) -> [u8; 16] {
        let mut h = Md5::new();
        h.update(self.0.as_bytes());
        h.update(challenge.to_string().as_bytes());
        let out = h.finalize();
        let mut d = [0u8; 16];
        d.copy_from_slice(&out);
        d
    }

    /// True for the empty cookie, which never authenticates anyone: a
    /// node and a peer that both lack a cookie must not connect.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn digest_matches(&self, challenge: u32, got: &[u8]) -> bool {
        !self.is_empty() && bool::from(self.digest(challenge).ct_eq(got))
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cookie(..)")
    }
}

/// What one side of the handshake knows about itself.
#[derive(Clone, Debug)]
pub struct HandshakeConfig {
    /// This node's full name, e.g. `rust@localhost`.
    pub this_node: String,
    /// The shared secret.
    pub cookie: Cookie,
    /// The flags this node offers (clear PUBLISHED for a hidden node).
    pub flags: DistFlags,
    /// The flags a peer must offer (checked after expanding MANDATORY_25_DIGEST).
    pub required_flags: DistFlags,
    /// This node's creation (non-zero; from epmd's ALIVE2_X_RESP or chosen).
    pub creation: u32,
    /// The limit on each handshake step.
    pub step_timeout: Duration,
    /// The length prefix of handshake frames (2 bytes over TCP, 4 inside TLS).
    pub framing: HandshakeFraming,
}

/// The length prefix of handshake frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HandshakeFraming {
    /// A 2-byte big-endian length: plain TCP (`inet_tcp_dist`).
    #[default]
    TwoByte,
    /// A 4-byte big-endian length: inside TLS (`inet_tls_dist` runs the
    /// whole handshake on a `{packet, 4}` TLS socket).
    FourByte,
}

impl HandshakeFraming {
    fn header_len(self) -> usize {
        match self {
            HandshakeFraming::TwoByte => 2,
            HandshakeFraming::FourByte => 4,
        }
    }
}

impl HandshakeConfig {
    /// A visible node with [`DistFlags::DEFAULT`], requiring the OTP 25 mandatory flags.
    pub fn new(this_node: impl Into<String>, cookie: Cookie, creation: u32) -> Self {
        HandshakeConfig {
            this_node: this_node.into(),
            cookie,
            flags: DistFlags::DEFAULT,
            required_flags: DistFlags::MANDATORY_25,
            creation,
            step_timeout: DEFAULT_STEP_TIMEOUT,
            framing: HandshakeFraming::TwoByte,
        }
    }

    /// Makes the node hidden (no PUBLISHED flag).
    pub fn hidden(mut self) -> Self {
        self.flags = self.flags.without(DistFlags::PUBLISHED);
        self
    }
}

/// The status the acceptor sends after reading the initiator's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Go on.
    Ok,
    /// Go on; the acceptor's own attempt to the same node is dropped.
    OkSimultaneous,
    /// Stop; the acceptor's own attempt to the same node wins.
    Nok,
    /// Stop; the initiator is not allowed to connect.
    NotAllowed,
    /// The acceptor already has a connection to this node; the initiator
    /// must say whether that one is stale (`true`) or should be kept.
    Alive,
}

impl Status {
    /// The text after 's' on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::OkSimultaneous => "ok_simultaneous",
            Status::Nok => "nok",
            Status::NotAllowed => "not_allowed",
            Status::Alive => "alive",
        }
    }
}

/// The step a handshake was in (for timeouts and unexpected messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Acceptor waiting for send_name.
    Name,
    /// Acceptor waiting for the caller's [`Acceptor::set_status`].
    StatusDecision,
    /// Initiator waiting for the status.
    Status,
    /// Acceptor waiting for 's' "true"/"false" after "alive".
    AliveReply,
    /// Initiator waiting for the challenge.
    Challenge,
    /// Acceptor waiting for the complement after an old `n` name.
    Complement,
    /// Acceptor waiting for the challenge reply.
    ChallengeReply,
    /// Initiator waiting for the challenge ack.
    ChallengeAck,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Name => "send_name",
            Step::StatusDecision => "status decision",
            Step::Status => "send_status",
            Step::AliveReply => "alive reply",
            Step::Challenge => "send_challenge",
            Step::Complement => "send_complement",
            Step::ChallengeReply => "challenge_reply",
            Step::ChallengeAck => "challenge_ack",
        })
    }
}

/// Why a handshake failed. Peer violations have one variant each.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A step took longer than the step timeout.
    #[error("handshake timed out waiting for {0}")]
    Timeout(Step),
    /// A zero-length frame during the handshake.
    #[error("empty handshake frame while waiting for {0}")]
    EmptyFrame(Step),
    /// A message of the wrong kind for this step.
    #[error("unexpected handshake message {tag:#04x} while waiting for {step}")]
    UnexpectedMessage {
        /// Where we were.
        step: Step,
        /// The first byte of the message.
        tag: u8,
    },
    /// A message shorter than its fixed fields, or a name longer than the frame.
    #[error("truncated {0} message")]
    Truncated(Step),
    /// A status text we do not know.
    #[error("unknown handshake status {0:?}")]
    UnknownStatus(String),
    /// The old `n` send_name with a version other than 5.
    #[error("unsupported distribution version {0} in the old send_name")]
    UnsupportedVersion(u16),
    /// A node name that is not `name@host` (or not UTF-8).
    #[error("invalid node name {0:?}")]
    InvalidNodeName(String),
    /// The peer asked for a dynamic name (DFLAG_NAME_ME), which erlkube does not hand out.
    #[error("peer asked for a dynamic node name, which is not supported")]
    DynamicNameUnsupported,
    /// The challenge named another node than the one dialled.
    #[error("dialled {expected} but the peer calls itself {got}")]
    NameMismatch {
        /// The dialled node.
        expected: String,
        /// The name in the challenge.
        got: String,
    },
    /// The peer lacks flags this node requires.
    #[error("peer {peer} lacks mandatory distribution flags {missing}")]
    MissingMandatoryFlags {
        /// The peer's name.
        peer: String,
        /// The missing flags.
        missing: DistFlags,
    },
    /// The acceptor answered "not_allowed".
    #[error("the peer does not allow this node to connect (not_allowed)")]
    NotAllowed,
    /// The acceptor answered "nok": its own simultaneous attempt wins.
    #[error("simultaneous connect: the peer's own connection attempt wins (nok)")]
    SimultaneousConnectLost,
    /// After "alive", the initiator said the existing connection stays.
    #[error("the peer keeps its existing connection (alive answered false)")]
    AliveRefused,
    /// The alive reply was neither "true" nor "false".
    #[error("invalid reply to alive: {0:?}")]
    InvalidAliveReply(String),
    /// The challenge reply's digest is wrong: the peer has another cookie.
    #[error("challenge reply digest mismatch from {0} (different cookie)")]
    BadChallengeReply(String),
    /// The challenge ack's digest is wrong: the peer has another cookie.
    #[error("challenge ack digest mismatch from {0} (different cookie)")]
    BadChallengeAck(String),
    /// This node's cookie is empty: it authenticates no peer, even one
    /// with the empty cookie too.
    #[error(
        "this node's cookie is empty; set one (RELEASE_COOKIE, --cookie-file or ~/.erlang.cookie)"
    )]
    EmptyCookie,
    /// The caller refused the connection through [`Acceptor::set_status`].
    #[error("connection refused locally with status {}", .0.as_str())]
    Refused(Status),
    /// [`Acceptor::set_status`] called when no decision was pending.
    #[error("set_status called outside the status decision step")]
    NoDecisionPending,
    /// A 4-byte framed handshake message longer than any handshake
    /// message can be (64 KiB).
    #[error("handshake frame of {0} bytes (at most 65535)")]
    FrameTooLarge(u32),
}

/// A completed handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Established {
    /// The peer's full node name.
    pub peer_node: String,
    /// The flags the peer offered (MANDATORY_25_DIGEST expanded).
    pub peer_flags: DistFlags,
    /// The flags both sides use: ours and the peer's.
    pub flags: DistFlags,
    /// The peer's creation (0 when an old `n` peer never sent its complement).
    pub peer_creation: u32,
    /// Bytes that arrived after the last handshake frame: the start of the
    /// 4-byte-framed stream. Feed them to the connection first.
    pub leftover: Vec<u8>,
}

impl Established {
    /// True when both nodes are visible to each other.
    pub fn is_published(&self) -> bool {
        self.flags.is_published()
    }
}

/// What the acceptor learnt from send_name, for the caller's status decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerName {
    /// The initiator's full node name.
    pub node: String,
    /// Its flags (MANDATORY_25_DIGEST expanded).
    pub flags: DistFlags,
    /// Its creation, if it sent the new `N` form.
    pub creation: Option<u32>,
    /// True when it used the old `n` version-5 form.
    pub old_form: bool,
}

/// Something the caller must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeEvent {
    /// Acceptor only: the initiator's name arrived; call [`Acceptor::set_status`].
    NameReceived(PeerName),
    /// The handshake is done; switch to the 4-byte framed connection.
    Established(Established),
}

/// Reads length-prefixed frames (2 or 4 bytes) out of a byte stream.
#[derive(Debug, Default)]
struct FrameBuf {
    buf: Vec<u8>,
    pos: usize,
    framing: HandshakeFraming,
}

impl FrameBuf {
    fn push(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame's body, if one has fully arrived.
    fn next(&mut self) -> Result<Option<Vec<u8>>, HandshakeError> {
        let rest = &self.buf[self.pos..];
        let h = self.framing.header_len();
        if rest.len() < h {
            return Ok(None);
        }
        let len = match self.framing {
            HandshakeFraming::TwoByte => u16::from_be_bytes([rest[0], rest[1]]) as usize,
            HandshakeFraming::FourByte => {
                let len = be_u32(rest);
                if len > u32::from(u16::MAX) {
                    return Err(HandshakeError::FrameTooLarge(len));
                }
                len as usize
            }
        };
        if rest.len() - h < len {
            return Ok(None);
        }
        let body = rest[h..h + len].to_vec();
        self.pos += h + len;
        Ok(Some(body))
    }

    fn take_rest(&mut self) -> Vec<u8> {
        let rest = self.buf[self.pos..].to_vec();
        self.buf.clear();
        self.pos = 0;
        rest
    }
}

#[cfg(test)]
fn frame(body: &[u8]) -> Vec<u8> {
    frame_with(HandshakeFraming::TwoByte, body)
}

fn frame_with(framing: HandshakeFraming, body: &[u8]) -> Vec<u8> {
    debug_assert!(body.len() <= u16::MAX as usize);
    let mut out = Vec::with_capacity(4 + body.len());
    match framing {
        HandshakeFraming::TwoByte => out.extend_from_slice(&(body.len() as u16).to_be_bytes()),
        HandshakeFraming::FourByte => out.extend_from_slice(&(body.len() as u32).to_be_bytes()),
    }
    out.extend_from_slice(body);
    out
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Checks a peer's `name@host` (valid UTF-8, then the one node-name check
/// of [`crate::name`], in either name mode).
fn parse_node_name(raw: &[u8]) -> Result<String, HandshakeError> {
    let name = std::str::from_utf8(raw)
        .map_err(|_| HandshakeError::InvalidNodeName(String::from_utf8_lossy(raw).into_owned()))?;
    crate::name::check_node_name(name, crate::name::NameMode::Any)
        .map_err(|_| HandshakeError::InvalidNodeName(name.to_owned()))?;
    Ok(name.to_owned())
}

/// State shared by both sides: output frames, events, timer, failure.
/// Opaque; reached through [`Side`].
#[derive(Debug)]
pub struct Common {
    config: HandshakeConfig,
    input: FrameBuf,
    transmits: std::collections::VecDeque<Vec<u8>>,
    events: std::collections::VecDeque<HandshakeEvent>,
    deadline: Option<Instant>,
    failed: Option<HandshakeError>,
    done: bool,
}

impl Common {
    fn new(config: HandshakeConfig, now: Instant) -> Self {
        let deadline = Some(now + config.step_timeout);
        let framing = config.framing;
        Common {
            config,
            input: FrameBuf {
                framing,
                ..FrameBuf::default()
            },
            transmits: Default::default(),
            events: Default::default(),
            deadline,
            failed: None,
            done: false,
        }
    }

    fn send(&mut self, body: &[u8]) {
        self.transmits
            .push_back(frame_with(self.config.framing, body));
    }

    fn send_status(&mut self, text: &str) {
        let mut body = Vec::with_capacity(1 + text.len());
        body.push(b's');
        body.extend_from_slice(text.as_bytes());
        self.send(&body);
    }

    fn reset_timer(&mut self, now: Instant) {
        self.deadline = Some(now + self.config.step_timeout);
    }

    fn fail(&mut self, e: HandshakeError) -> HandshakeError {
        self.deadline = None;
        self.failed = Some(e.clone());
        e
    }

    fn check_usable(&self) -> Result<(), HandshakeError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// The current step's deadline; none once failed (or established).
    fn next_deadline(&self) -> Option<Instant> {
        if self.failed.is_some() {
            None
        } else {
            self.deadline
        }
    }

    fn timeout(&mut self, now: Instant, step: Step) -> Result<(), HandshakeError> {
        self.check_usable()?;
        match self.deadline {
            Some(d) if now >= d && !self.done => Err(self.fail(HandshakeError::Timeout(step))),
            _ => Ok(()),
        }
    }

    fn establish(&mut self, mut est: Established) {
        est.leftover = self.input.take_rest();
        self.deadline = None;
        self.done = true;
        self.events.push_back(HandshakeEvent::Established(est));
    }

    fn check_flags(&self, peer: &str, flags: DistFlags) -> Result<(), HandshakeError> {
        let missing = flags.missing(self.config.required_flags);
        if missing.bits() != 0 {
            return Err(HandshakeError::MissingMandatoryFlags {
                peer: peer.to_owned(),
                missing,
            });
        }
        Ok(())
    }
}

/// Either side of the handshake, as a driver sees it: bytes in
/// ([`Side::handle_input`]), frames and events out, a timer. The outputs,
/// timer and failure are one piece of code for both sides (they live in
/// [`Common`]); each side brings its input handling and step, and answers
/// the one question only it is asked ([`Side::decide`] for the acceptor,
/// [`Side::set_alive`] for the initiator).
pub trait Side {
    /// Feeds bytes read from the socket. After an error, the connection
    /// must be closed once [`Side::poll_transmit`] is drained.
    fn handle_input(&mut self, data: &[u8], now: Instant) -> Result<(), HandshakeError>;

    /// The step the handshake is in (what it waits for).
    fn step(&self) -> Step;

    /// The state both sides share.
    fn common(&self) -> &Common;

    /// The state both sides share, to change.
    fn common_mut(&mut self) -> &mut Common;

    /// The acceptor's answer to [`HandshakeEvent::NameReceived`]
    /// ([`Acceptor::set_status`]); an initiator is never asked.
    fn decide(&mut self, _status: Status, _now: Instant) -> Result<(), HandshakeError> {
        Ok(())
    }

    /// The initiator's answer if the peer says "alive"
    /// ([`Initiator::set_alive_answer`]); an acceptor is never asked.
    fn set_alive(&mut self, _answer: bool) {}

    /// The next frame to write to the socket.
    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.common_mut().transmits.pop_front()
    }

    /// The next event ([`HandshakeEvent::NameReceived`] on an acceptor,
    /// then the [`HandshakeEvent::Established`] outcome).
    fn poll_event(&mut self) -> Option<HandshakeEvent> {
        self.common_mut().events.pop_front()
    }

    /// When [`Side::handle_timeout`] must be called next.
    fn poll_timeout(&self) -> Option<Instant> {
        self.common().next_deadline()
    }

    /// Fails the handshake if the current step's deadline has passed.
    fn handle_timeout(&mut self, now: Instant) -> Result<(), HandshakeError> {
        let step = self.step();
        self.common_mut().timeout(now, step)
    }

    /// True once established.
    fn is_established(&self) -> bool {
        self.common().done
    }

    /// The failure, if the handshake failed.
    fn error(&self) -> Option<&HandshakeError> {
        self.common().failed.as_ref()
    }
}

impl Side for Initiator {
    fn handle_input(&mut self, data: &[u8], now: Instant) -> Result<(), HandshakeError> {
        self.c.check_usable()?;
        if self.state == InitState::Done {
            self.c.input.push(data);
            return Ok(());
        }
        self.c.input.push(data);
        while self.state != InitState::Done {
            let body = match self.c.input.next() {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(e) => return Err(self.c.fail(e)),
            };
            if let Err(e) = self.handle_frame(&body, now) {
                return Err(self.c.fail(e));
            }
        }
        if self.state == InitState::Done && !self.c.done {
            let est = Established {
                peer_node: self.peer_node.clone(),
                peer_flags: self.peer_flags,
                flags: negotiate(self.c.config.flags, self.peer_flags),
                peer_creation: self.peer_creation,
                leftover: Vec::new(),
            };
            self.c.establish(est);
        }
        Ok(())
    }
    fn step(&self) -> Step {
        match self.state {
            InitState::Status => Step::Status,
            InitState::Challenge => Step::Challenge,
            InitState::Ack | InitState::Done => Step::ChallengeAck,
        }
    }
    fn common(&self) -> &Common {
        &self.c
    }
    fn common_mut(&mut self) -> &mut Common {
        &mut self.c
    }
    fn set_alive(&mut self, answer: bool) {
        self.set_alive_answer(answer);
    }
}

impl Side for Acceptor {
    fn handle_input(&mut self, data: &[u8], now: Instant) -> Result<(), HandshakeError> {
        self.c.check_usable()?;
        self.c.input.push(data);
        self.process(now)
    }
    fn step(&self) -> Step {
        match self.state {
            AccState::Name => Step::Name,
            AccState::StatusDecision => Step::StatusDecision,
            AccState::AliveReply => Step::AliveReply,
            AccState::Complement => Step::Complement,
            AccState::Reply | AccState::Done => Step::ChallengeReply,
        }
    }
    fn common(&self) -> &Common {
        &self.c
    }
    fn common_mut(&mut self) -> &mut Common {
        &mut self.c
    }
    fn decide(&mut self, status: Status, now: Instant) -> Result<(), HandshakeError> {
        self.set_status(status, now)
    }
}

fn challenge_reply_body(challenge: u32, digest: [u8; 16]) -> Vec<u8> {
    let mut b = Vec::with_capacity(21);
    b.push(b'r');
    b.extend_from_slice(&challenge.to_be_bytes());
    b.extend_from_slice(&digest);
    b
}

/// Negotiated flags: what both sides offered. (OTP also hides the connection
/// when either side is hidden, which the intersection does for PUBLISHED.)
fn negotiate(ours: DistFlags, theirs: DistFlags) -> DistFlags {
    ours & theirs.expand_digest()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InitState {
    Status,
    Challenge,
    Ack,
    Done,
}

/// The side that dialled.
#[derive(Debug)]
pub struct Initiator {
    c: Common,
    state: InitState,
    peer_node: String,
    my_challenge: u32,
    legacy_name: bool,
    answer_alive: bool,
    peer_flags: DistFlags,
    peer_creation: u32,
}

impl Initiator {
    /// Starts a handshake towards `peer_node` (the exact name dialled);
    /// queues send_name. `challenge` is this side's random challenge.
    pub fn new(
        config: HandshakeConfig,
        peer_node: impl Into<String>,
        challenge: u32,
        now: Instant,
    ) -> Self {
        let mut i = Initiator {
            c: Common::new(config, now),
            state: InitState::Status,
            peer_node: peer_node.into(),
            my_challenge: challenge,
            legacy_name: false,
            answer_alive: true,
            peer_flags: DistFlags::EMPTY,
            peer_creation: 0,
        };
        i.queue_name();
        i
    }

    /// Like [`Initiator::new`] but sends the old `n` version-5 send_name
    /// (and the `c` complement after the challenge), as OTP 23/24 could.
    pub fn new_old_form(
        config: HandshakeConfig,
        peer_node: impl Into<String>,
        challenge: u32,
        now: Instant,
    ) -> Self {
        let mut i = Initiator::new(config, peer_node, challenge, now);
        i.legacy_name = true;
        i.c.transmits.clear();
        i.queue_name();
        i
    }

    /// What to answer when the acceptor says "alive" (it already has a
    /// connection to us): `true` (default) means that one is stale and
    /// this attempt should win, as OTP answers while its attempt is pending.
    pub fn set_alive_answer(&mut self, answer: bool) {
        self.answer_alive = answer;
    }

    fn queue_name(&mut self) {
        let cfg = &self.c.config;
        let name = cfg.this_node.as_bytes();
        let mut b = Vec::with_capacity(15 + name.len());
        if self.legacy_name {
            b.push(b'n');
            b.extend_from_slice(&OLD_NAME_VERSION.to_be_bytes());
            b.extend_from_slice(&(cfg.flags.bits() as u32).to_be_bytes());
            b.extend_from_slice(name);
        } else {
            b.push(b'N');
            b.extend_from_slice(&cfg.flags.bits().to_be_bytes());
            b.extend_from_slice(&cfg.creation.to_be_bytes());
            b.extend_from_slice(&(name.len() as u16).to_be_bytes());
            b.extend_from_slice(name);
        }
        self.c.send(&b);
    }

    fn handle_frame(&mut self, body: &[u8], now: Instant) -> Result<(), HandshakeError> {
        let step = self.step();
        let Some(&tag) = body.first() else {
            return Err(HandshakeError::EmptyFrame(step));
        };
        match (self.state, tag) {
            (InitState::Status, b's') => {
                let text = String::from_utf8_lossy(&body[1..]).into_owned();
                match text.as_str() {
                    "ok" | "ok_simultaneous" => {
                        self.state = InitState::Challenge;
                        self.c.reset_timer(now);
                        Ok(())
                    }
                    "nok" => Err(HandshakeError::SimultaneousConnectLost),
                    "not_allowed" => Err(HandshakeError::NotAllowed),
                    "alive" => {
                        let answer = self.answer_alive;
                        self.c.send_status(if answer { "true" } else { "false" });
                        if answer {
                            self.state = InitState::Challenge;
                            self.c.reset_timer(now);
                            Ok(())
                        } else {
                            Err(HandshakeError::AliveRefused)
                        }
                    }
                    t if t.starts_with("named:") => Err(HandshakeError::DynamicNameUnsupported),
                    _ => Err(HandshakeError::UnknownStatus(text)),
                }
            }
            (InitState::Challenge, b'N') => {
                if body.len() < 19 {
                    return Err(HandshakeError::Truncated(step));
                }
                let flags = DistFlags(be_u64(&body[1..9])).expand_digest();
                let challenge = be_u32(&body[9..13]);
                let creation = be_u32(&body[13..17]);
                let nlen = be_u16(&body[17..19]) as usize;
                // OTP ignores bytes after the name; so do we.
                let Some(raw) = body.get(19..19 + nlen) else {
                    return Err(HandshakeError::Truncated(step));
                };
                if raw != self.peer_node.as_bytes() {
                    return Err(HandshakeError::NameMismatch {
                        expected: self.peer_node.clone(),
                        got: String::from_utf8_lossy(raw).into_owned(),
                    });
                }
                self.c.check_flags(&self.peer_node, flags)?;
                self.peer_flags = flags;
                self.peer_creation = creation;
                if self.legacy_name {
                    let mut b = Vec::with_capacity(9);
                    b.push(b'c');
                    b.extend_from_slice(&((self.c.config.flags.bits() >> 32) as u32).to_be_bytes());
                    b.extend_from_slice(&self.c.config.creation.to_be_bytes());
                    self.c.send(&b);
                }
                let digest = self.c.config.cookie.digest(challenge);
                self.c
                    .send(&challenge_reply_body(self.my_challenge, digest));
                self.state = InitState::Ack;
                self.c.reset_timer(now);
                Ok(())
            }
            (InitState::Ack, b'a') => {
                if body.len() != 17 {
                    return Err(HandshakeError::Truncated(step));
                }
                if self.c.config.cookie.is_empty() {
                    return Err(HandshakeError::EmptyCookie);
                }
                if !self
                    .c
                    .config
                    .cookie
                    .digest_matches(self.my_challenge, &body[1..17])
                {
                    return Err(HandshakeError::BadChallengeAck(self.peer_node.clone()));
                }
                self.state = InitState::Done;
                Ok(())
            }
            _ => Err(HandshakeError::UnexpectedMessage { step, tag }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccState {
    Name,
    StatusDecision,
    AliveReply,
    Complement,
    Reply,
    Done,
}

/// The side that accepted the TCP connection.
#[derive(Debug)]
pub struct Acceptor {
    c: Common,
    state: AccState,
    my_challenge: u32,
    peer: Option<PeerName>,
}

impl Acceptor {
    /// Waits for the initiator's send_name. `challenge` is this side's random challenge.
    pub fn new(config: HandshakeConfig, challenge: u32, now: Instant) -> Self {
        Acceptor {
            c: Common::new(config, now),
            state: AccState::Name,
            my_challenge: challenge,
            peer: None,
        }
    }

    fn process(&mut self, now: Instant) -> Result<(), HandshakeError> {
        while !matches!(self.state, AccState::Done | AccState::StatusDecision) {
            let body = match self.c.input.next() {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(e) => return Err(self.c.fail(e)),
            };
            if let Err(e) = self.handle_frame(&body, now) {
                if matches!(
                    e,
                    HandshakeError::MissingMandatoryFlags { .. }
                        | HandshakeError::DynamicNameUnsupported
                ) {
                    // OTP answers a peer it cannot talk to with not_allowed.
                    self.c.send_status(Status::NotAllowed.as_str());
                }
                return Err(self.c.fail(e));
            }
        }
        if self.state == AccState::Done && !self.c.done {
            let peer = self.peer.clone().expect("peer known when done");
            let est = Established {
                peer_node: peer.node,
                peer_flags: peer.flags,
                flags: negotiate(self.c.config.flags, peer.flags),
                peer_creation: peer.creation.unwrap_or(0),
                leftover: Vec::new(),
            };
            self.c.establish(est);
        }
        Ok(())
    }

    /// Answers the initiator's name (after [`HandshakeEvent::NameReceived`]).
    /// OTP's net_kernel decides: `Ok` normally; for a simultaneous connect,
    /// `OkSimultaneous` if the initiator's name is greater than ours and
    /// `Nok` otherwise; `Alive` if a connection to that node is already up;
    /// `NotAllowed` to refuse it.
    pub fn set_status(&mut self, status: Status, now: Instant) -> Result<(), HandshakeError> {
        self.c.check_usable()?;
        if self.state != AccState::StatusDecision {
            return Err(HandshakeError::NoDecisionPending);
        }
        self.c.send_status(status.as_str());
        match status {
            Status::Ok | Status::OkSimultaneous => {
                self.send_challenge(now);
                self.process(now)
            }
            Status::Alive => {
                self.state = AccState::AliveReply;
                self.c.reset_timer(now);
                self.process(now)
            }
            Status::Nok | Status::NotAllowed => Err(self.c.fail(HandshakeError::Refused(status))),
        }
    }

    fn send_challenge(&mut self, now: Instant) {
        let cfg = &self.c.config;
        let name = cfg.this_node.as_bytes();
        let mut b = Vec::with_capacity(19 + name.len());
        b.push(b'N');
        b.extend_from_slice(&cfg.flags.bits().to_be_bytes());
        b.extend_from_slice(&self.my_challenge.to_be_bytes());
        b.extend_from_slice(&cfg.creation.to_be_bytes());
        b.extend_from_slice(&(name.len() as u16).to_be_bytes());
        b.extend_from_slice(name);
        self.c.send(&b);
        let old = self.peer.as_ref().is_some_and(|p| p.old_form);
        self.state = if old {
            AccState::Complement
        } else {
            AccState::Reply
        };
        self.c.reset_timer(now);
    }

    fn handle_frame(&mut self, body: &[u8], now: Instant) -> Result<(), HandshakeError> {
        let step = self.step();
        let Some(&tag) = body.first() else {
            return Err(HandshakeError::EmptyFrame(step));
        };
        match (self.state, tag) {
            (AccState::Name, b'N') => {
                if body.len() < 15 {
                    return Err(HandshakeError::Truncated(step));
                }
                let flags = DistFlags(be_u64(&body[1..9])).expand_digest();
                let creation = be_u32(&body[9..13]);
                let nlen = be_u16(&body[13..15]) as usize;
                let Some(raw) = body.get(15..15 + nlen) else {
                    return Err(HandshakeError::Truncated(step));
                };
                self.name_received(raw, flags, Some(creation), false, now)
            }
            (AccState::Name, b'n') => {
                if body.len() < 7 {
                    return Err(HandshakeError::Truncated(step));
                }
                let version = be_u16(&body[1..3]);
                if version != OLD_NAME_VERSION {
                    return Err(HandshakeError::UnsupportedVersion(version));
                }
                let flags = DistFlags(be_u32(&body[3..7]) as u64).expand_digest();
                self.name_received(&body[7..], flags, None, true, now)
            }
            (AccState::AliveReply, b's') => match &body[1..] {
                b"true" => {
                    self.send_challenge(now);
                    Ok(())
                }
                b"false" => Err(HandshakeError::AliveRefused),
                other => Err(HandshakeError::InvalidAliveReply(
                    String::from_utf8_lossy(other).into_owned(),
                )),
            },
            (AccState::Complement, b'c') => {
                if body.len() != 9 {
                    return Err(HandshakeError::Truncated(step));
                }
                let high = be_u32(&body[1..5]) as u64;
                let creation = be_u32(&body[5..9]);
                let peer = self.peer.as_mut().expect("peer known after name");
                peer.flags = DistFlags(peer.flags.bits() | (high << 32)).expand_digest();
                peer.creation = Some(creation);
                let (node, flags) = (peer.node.clone(), peer.flags);
                self.c.check_flags(&node, flags)?;
                self.state = AccState::Reply;
                self.c.reset_timer(now);
                Ok(())
            }
            (AccState::Reply, b'r') => {
                if body.len() != 21 {
                    return Err(HandshakeError::Truncated(step));
                }
                let their_challenge = be_u32(&body[1..5]);
                let peer = self
                    .peer
                    .as_ref()
                    .expect("peer known after name")
                    .node
                    .clone();
                if self.c.config.cookie.is_empty() {
                    return Err(HandshakeError::EmptyCookie);
                }
                if !self
                    .c
                    .config
                    .cookie
                    .digest_matches(self.my_challenge, &body[5..21])
                {
                    return Err(HandshakeError::BadChallengeReply(peer));
                }
                let mut ack = Vec::with_capacity(17);
                ack.push(b'a');
                ack.extend_from_slice(&self.c.config.cookie.digest(their_challenge));
                self.c.send(&ack);
                self.state = AccState::Done;
                Ok(())
            }
            _ => Err(HandshakeError::UnexpectedMessage { step, tag }),
        }
    }

    fn name_received(
        &mut self,
        raw: &[u8],
        flags: DistFlags,
        creation: Option<u32>,
        old_form: bool,
        now: Instant,
    ) -> Result<(), HandshakeError> {
        if flags.contains(DistFlags::NAME_ME) {
            return Err(HandshakeError::DynamicNameUnsupported);
        }
        let node = parse_node_name(raw)?;
        // The old form carries only the low 32 flag bits; V4_NC and friends
        // arrive with the complement, so check only the low half for now.
        let required = if old_form {
            DistFlags(self.c.config.required_flags.bits() & 0xffff_ffff)
        } else {
            self.c.config.required_flags
        };
        let missing = flags.missing(required);
        if missing.bits() != 0 {
            return Err(HandshakeError::MissingMandatoryFlags {
                peer: node,
                missing,
            });
        }
        let peer = PeerName {
            node,
            flags,
            creation,
            old_form,
        };
        self.peer = Some(peer.clone());
        self.state = AccState::StatusDecision;
        self.c.reset_timer(now);
        self.c.events.push_back(HandshakeEvent::NameReceived(peer));
        Ok(())
    }

    /// The initiator, once its name has arrived.
    pub fn peer(&self) -> Option<&PeerName> {
        self.peer.as_ref()
    }
}

/// The status OTP's net_kernel picks when a connection attempt arrives
/// while this node is itself dialling the same peer: the node with the
/// greater name keeps its own attempt.
pub fn simultaneous_status(this_node: &str, peer_node: &str) -> Status {
    if peer_node > this_node {
        Status::OkSimultaneous
    } else {
        Status::Nok
    }
}

#[cfg(test)]
mod tests;
