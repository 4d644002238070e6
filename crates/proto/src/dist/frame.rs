//! Framing after the handshake: 4-byte length frames, ticks, the
//! distribution header with its atom cache, and fragments.
//!
//! ```text
//! frame   = Length:32 Body            (Length 0 = tick)
//! Body    = 112 Control [Payload]                      pass-through, versioned terms
//!         | 131 'D' AtomCacheHeader Control [Payload]  normal header, unversioned terms
//!         | 131 'E' Seq:64 Frag:64 AtomCacheHeader Data   first fragment (Frag = count)
//!         | 131 'F' Seq:64 Frag:64 Data                    continuation (Frag counts down to 1)
//! ```
//!
//! Which form a connection uses follows from the negotiated flags: with
//! DIST_HDR_ATOM_CACHE or FRAGMENTS the BEAM sends and expects the 131
//! header forms and terms *without* their 131 version byte; otherwise
//! pass-through with versioned terms.

use super::flags::DistFlags;
use std::collections::HashMap;

/// Frame body tag of a pass-through message.
pub const PASS_THROUGH: u8 = 112;
/// First fragment header.
pub use erlkube_etf::tags::DIST_FRAG_HEADER;
/// Normal distribution header.
pub use erlkube_etf::tags::DIST_HEADER;
/// The ETF version byte, which also starts a distribution header.
pub use erlkube_etf::tags::VERSION as VERSION_MAGIC;
/// Fragment continuation.
pub const DIST_FRAG_CONT: u8 = b'F';
/// Entries in a connection's atom cache (8 segments of 256).
pub const ATOM_CACHE_SIZE: usize = 2048;
/// OTP's fragment size: messages larger than this are split when the peer accepts FRAGMENTS.
pub const FRAGMENT_SIZE: usize = 64 * 1024;

/// An atom taken from the atom cache.
pub type AtomText = erlkube_etf::Atom;

/// Limits on what a peer may make this side buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body accepted (the length field); larger is an error.
    pub max_frame_len: usize,
    /// Largest reassembled message (all fragments of one sequence).
    pub max_message_len: usize,
    /// Most fragmented messages in flight at once.
    pub max_in_flight: usize,
    /// Most bytes of unfinished fragmented messages held at once, all
    /// sequences of the connection together. Without it a peer could pin
    /// `max_in_flight` × `max_message_len` (16 GiB by default) by starting
    /// messages it never finishes. The default, 256 MiB, lets one message
    /// of the largest accepted size through (a 100 MB binary from `erl`
    /// arrives as one fragmented message) while capping what one
    /// connection can pin at a size that fits a pod with a memory limit of
    /// 512 MiB or more; lower it for smaller pods.
    pub max_partial_total: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_len: 64 << 20,
            max_message_len: 256 << 20,
            max_in_flight: 64,
            max_partial_total: 256 << 20,
        }
    }
}

/// A peer's framing violation. Each closes the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A length field above [`Limits::max_frame_len`].
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLong {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame body starting with neither 112 nor 131.
    #[error("unknown frame type {0:#04x}")]
    UnknownFrameType(u8),
    /// 131 followed by something other than 'D', 'E' or 'F'.
    #[error("unknown distribution header {0:#04x}")]
    UnknownHeader(u8),
    /// A header the negotiated flags do not allow.
    #[error("distribution header {0:?} used without the flag that allows it")]
    HeaderNotNegotiated(char),
    /// A header cut short.
    #[error("truncated distribution header")]
    TruncatedHeader,
    /// A header with no control message after it.
    #[error("message without a control message")]
    EmptyMessage,
    /// A reference to an atom cache slot that was never filled.
    #[error("reference to empty atom cache slot {0}")]
    UnknownAtomCacheEntry(usize),
    /// A new atom cache entry whose text is not UTF-8 or too long.
    #[error("invalid atom text in atom cache entry {0}")]
    InvalidCachedAtom(usize),
    /// A fragment id of 0.
    #[error("fragment id 0 in sequence {0}")]
    ZeroFragmentId(u64),
    /// A first fragment for a sequence already in flight.
    #[error("first fragment of sequence {0} while it is already in flight")]
    DuplicateSequence(u64),
    /// A continuation for a sequence not in flight.
    #[error("continuation fragment for unknown sequence {0}")]
    UnknownSequence(u64),
    /// A continuation whose fragment id is not the one expected.
    #[error("fragment {got} of sequence {seq} out of order (expected {expected})")]
    FragmentOutOfOrder {
        /// The sequence.
        seq: u64,
        /// The id expected next.
        expected: u64,
        /// The id received.
        got: u64,
    },
    /// More fragmented messages in flight than [`Limits::max_in_flight`].
    #[error("more than {0} fragmented messages in flight")]
    TooManyInFlight(usize),
    /// Unfinished fragmented messages holding more than
    /// [`Limits::max_partial_total`] bytes together.
    #[error("unfinished fragmented messages would hold {total} bytes, over the connection's budget of {budget}")]
    PartialBudgetExceeded {
        /// Bytes the unfinished messages would hold with this fragment.
        total: usize,
        /// The budget.
        budget: usize,
    },
    /// A message larger than [`Limits::max_message_len`].
    #[error("message of at least {len} bytes exceeds the maximum of {max}")]
    MessageTooLarge {
        /// Bytes so far (or announced).
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// One frame read from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A zero-length frame.
    Tick,
    /// A frame body.
    Data(Vec<u8>),
}

/// Splits a byte stream into 4-byte length frames. Separates "need more
/// bytes" (`Ok(None)`) from "bad bytes" (`Err`).
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    pos: usize,
    max_frame_len: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `max_frame_len`.
    pub fn new(max_frame_len: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            pos: 0,
            max_frame_len,
        }
    }

    /// Appends bytes read from the socket.
    pub fn push(&mut self, data: &[u8]) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next complete frame.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        Ok(self.next_frame_ref()?.map(|f| match f {
            FrameRef::Tick => Frame::Tick,
            FrameRef::Data(body) => Frame::Data(body.to_vec()),
        }))
    }

    /// Like [`FrameDecoder::next_frame`], borrowing the frame body from
    /// the decoder's buffer instead of copying it.
    pub fn next_frame_ref(&mut self) -> Result<Option<FrameRef<'_>>, FrameError> {
        let rest = &self.buf[self.pos..];
        if rest.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > self.max_frame_len {
            return Err(FrameError::FrameTooLong {
                len,
                max: self.max_frame_len,
            });
        }
        if len == 0 {
            self.pos += 4;
            return Ok(Some(FrameRef::Tick));
        }
        if rest.len() < 4 + len {
            // Reserve once so a large frame does not reallocate repeatedly.
            let missing = 4 + len - rest.len();
            self.buf.reserve(missing);
            return Ok(None);
        }
        let start = self.pos + 4;
        self.pos += 4 + len;
        Ok(Some(FrameRef::Data(&self.buf[start..start + len])))
    }
}

/// One frame read from the stream, borrowed from the decoder's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameRef<'a> {
    /// A zero-length frame.
    Tick,
    /// A frame body.
    Data(&'a [u8]),
}

/// A complete message: the control message, then the payload if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundMessage {
    /// The atoms that ATOM_CACHE_REF (tag 82) indexes in `data`.
    pub atoms: Vec<AtomText>,
    /// Control message ++ payload, as encoded terms.
    pub data: Vec<u8>,
    /// True for pass-through messages, whose terms each start with 131;
    /// false after a distribution header (terms without the version byte).
    pub versioned: bool,
}

impl InboundMessage {
    /// The borrowed form.
    pub fn as_ref(&self) -> InboundRef<'_> {
        InboundRef {
            atoms: &self.atoms,
            data: &self.data,
            versioned: self.versioned,
        }
    }
}

/// A complete message borrowed from the connection's buffers (see
/// [`crate::dist::Connection::poll_message_ref`]); the fields mean what
/// they mean in [`InboundMessage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboundRef<'a> {
    /// The atoms that ATOM_CACHE_REF (tag 82) indexes in `data`.
    pub atoms: &'a [AtomText],
    /// Control message ++ payload, as encoded terms.
    pub data: &'a [u8],
    /// True for pass-through messages (versioned terms).
    pub versioned: bool,
}

impl InboundRef<'_> {
    /// The owned form.
    pub fn to_owned(&self) -> InboundMessage {
        InboundMessage {
            atoms: self.atoms.to_vec(),
            data: self.data.to_vec(),
            versioned: self.versioned,
        }
    }
}

/// Where [`InboundDecoder::decode_slice`] found a complete message.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodedBody {
    /// The message is the frame body given, from this offset on.
    InFrame(usize),
    /// The message was reassembled from fragments.
    Reassembled(Vec<u8>),
}

/// The per-connection receive cache of 2048 atoms. The table is allocated
/// on the first new entry (32 KiB), so connections whose peer never uses
/// the cache (and idle ones) do not pay for it.
#[derive(Debug, Default)]
pub struct AtomCache {
    slots: Vec<Option<AtomText>>,
}

impl AtomCache {
    /// The atom in slot `ix`, if set.
    pub fn get(&self, ix: usize) -> Option<&AtomText> {
        self.slots.get(ix).and_then(|s| s.as_ref())
    }
}

/// Parses the atom cache part of a 'D' or 'E' header, updating `cache`.
/// Returns the message's atom list and the bytes used.
fn parse_atom_cache_header(
    input: &[u8],
    cache: &mut AtomCache,
    atoms: &mut Vec<AtomText>,
) -> Result<usize, FrameError> {
    let n = *input.first().ok_or(FrameError::TruncatedHeader)? as usize;
    let mut pos = 1;
    if n == 0 {
        return Ok(pos);
    }
    let flag_bytes = n / 2 + 1;
    let flags = input
        .get(pos..pos + flag_bytes)
        .ok_or(FrameError::TruncatedHeader)?;
    pos += flag_bytes;
    let nibble = |i: usize| (flags[i / 2] >> ((i % 2) * 4)) & 0x0f;
    let long_atoms = nibble(n) & 1 != 0;
    atoms.reserve(n);
    for i in 0..n {
        let f = nibble(i);
        let ix_low = *input.get(pos).ok_or(FrameError::TruncatedHeader)? as usize;
        pos += 1;
        let cix = ((f & 7) as usize) << 8 | ix_low;
        if f & 8 != 0 {
            let len = if long_atoms {
                let b = input.get(pos..pos + 2).ok_or(FrameError::TruncatedHeader)?;
                pos += 2;
                u16::from_be_bytes([b[0], b[1]]) as usize
            } else {
                let b = *input.get(pos).ok_or(FrameError::TruncatedHeader)?;
                pos += 1;
                b as usize
            };
            let raw = input
                .get(pos..pos + len)
                .ok_or(FrameError::TruncatedHeader)?;
            pos += len;
            let text = std::str::from_utf8(raw).map_err(|_| FrameError::InvalidCachedAtom(cix))?;
            if text.chars().count() > 255 {
                return Err(FrameError::InvalidCachedAtom(cix));
            }
            let atom = AtomText::new(text);
            if cache.slots.is_empty() {
                cache.slots = vec![None; ATOM_CACHE_SIZE];
            }
            cache.slots[cix] = Some(atom.clone());
            atoms.push(atom);
        } else {
            let atom = cache
                .get(cix)
                .ok_or(FrameError::UnknownAtomCacheEntry(cix))?;
            atoms.push(atom.clone());
        }
    }
    Ok(pos)
}

#[derive(Debug)]
struct Partial {
    atoms: Vec<AtomText>,
    data: Vec<u8>,
    next_frag: u64,
}

/// Turns frame bodies into messages: header parsing, the atom cache,
/// fragment reassembly under [`Limits`].
#[derive(Debug)]
pub struct InboundDecoder {
    flags: DistFlags,
    limits: Limits,
    cache: AtomCache,
    in_flight: HashMap<u64, Partial>,
    /// Bytes held by `in_flight`, under [`Limits::max_partial_total`].
    partial_bytes: usize,
}

impl InboundDecoder {
    /// A decoder for a connection with these negotiated flags.
    pub fn new(flags: DistFlags, limits: Limits) -> Self {
        InboundDecoder {
            flags,
            limits,
            cache: AtomCache::default(),
            in_flight: HashMap::new(),
            partial_bytes: 0,
        }
    }

    /// The receive atom cache.
    pub fn atom_cache(&self) -> &AtomCache {
        &self.cache
    }

    /// Fragmented messages waiting for more fragments.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Bytes held by fragmented messages waiting for more fragments.
    pub fn partial_bytes(&self) -> usize {
        self.partial_bytes
    }

    /// Takes `n` more bytes of the partial-message budget.
    fn reserve_partial(&mut self, n: usize) -> Result<(), FrameError> {
        let total = self.partial_bytes.saturating_add(n);
        if total > self.limits.max_partial_total {
            return Err(FrameError::PartialBudgetExceeded {
                total,
                budget: self.limits.max_partial_total,
            });
        }
        self.partial_bytes = total;
        Ok(())
    }

    /// Decodes one frame body; `Ok(None)` when it was a fragment of an
    /// unfinished message.
    pub fn decode(&mut self, body: Vec<u8>) -> Result<Option<InboundMessage>, FrameError> {
        let mut atoms = Vec::new();
        let Some((found, versioned)) = self.decode_slice(&body, &mut atoms)? else {
            return Ok(None);
        };
        let data = match found {
            DecodedBody::InFrame(offset) => {
                let mut data = body;
                data.drain(..offset);
                data
            }
            DecodedBody::Reassembled(data) => data,
        };
        Ok(Some(InboundMessage {
            atoms,
            data,
            versioned,
        }))
    }

    /// Decodes one frame body without copying it: on a complete message,
    /// appends its atoms to `atoms` and says where its bytes are and
    /// whether its terms are versioned (pass-through). `Ok(None)` when
    /// the frame was a fragment of an unfinished message.
    pub fn decode_slice(
        &mut self,
        body: &[u8],
        atoms: &mut Vec<AtomText>,
    ) -> Result<Option<(DecodedBody, bool)>, FrameError> {
        match body.first() {
            Some(&PASS_THROUGH) => {
                if body.len() < 2 {
                    return Err(FrameError::EmptyMessage);
                }
                Ok(Some((DecodedBody::InFrame(1), true)))
            }
            Some(&VERSION_MAGIC) => self.decode_header(body, atoms),
            Some(&other) => Err(FrameError::UnknownFrameType(other)),
            None => Err(FrameError::EmptyMessage),
        }
    }

    fn decode_header(
        &mut self,
        body: &[u8],
        atoms: &mut Vec<AtomText>,
    ) -> Result<Option<(DecodedBody, bool)>, FrameError> {
        let kind = *body.get(1).ok_or(FrameError::TruncatedHeader)?;
        match kind {
            DIST_HEADER => {
                if !self.flags.uses_dist_header() {
                    return Err(FrameError::HeaderNotNegotiated('D'));
                }
                let mark = atoms.len();
                let used = parse_atom_cache_header(&body[2..], &mut self.cache, atoms)?;
                if body.len() == 2 + used {
                    atoms.truncate(mark);
                    return Err(FrameError::EmptyMessage);
                }
                Ok(Some((DecodedBody::InFrame(2 + used), false)))
            }
            DIST_FRAG_HEADER | DIST_FRAG_CONT => {
                if !self.flags.contains(DistFlags::FRAGMENTS) {
                    return Err(FrameError::HeaderNotNegotiated(kind as char));
                }
                let ids = body.get(2..18).ok_or(FrameError::TruncatedHeader)?;
                let seq = u64::from_be_bytes(ids[..8].try_into().expect("8 bytes"));
                let frag = u64::from_be_bytes(ids[8..].try_into().expect("8 bytes"));
                if frag == 0 {
                    return Err(FrameError::ZeroFragmentId(seq));
                }
                if kind == DIST_FRAG_HEADER {
                    self.first_fragment(seq, frag, body, atoms)
                } else {
                    self.continuation(seq, frag, &body[18..], atoms)
                }
            }
            other => Err(FrameError::UnknownHeader(other)),
        }
    }

    fn first_fragment(
        &mut self,
        seq: u64,
        frag: u64,
        body: &[u8],
        atoms: &mut Vec<AtomText>,
    ) -> Result<Option<(DecodedBody, bool)>, FrameError> {
        if self.in_flight.contains_key(&seq) {
            return Err(FrameError::DuplicateSequence(seq));
        }
        let rest = &body[18..];
        let mut own = Vec::new();
        let used = parse_atom_cache_header(rest, &mut self.cache, &mut own)?;
        if rest.len() == used {
            return Err(FrameError::EmptyMessage);
        }
        if frag == 1 {
            atoms.append(&mut own);
            return Ok(Some((DecodedBody::InFrame(18 + used), false)));
        }
        if self.in_flight.len() >= self.limits.max_in_flight {
            return Err(FrameError::TooManyInFlight(self.limits.max_in_flight));
        }
        let data = rest[used..].to_vec();
        self.check_size(data.len())?;
        self.reserve_partial(data.len())?;
        self.in_flight.insert(
            seq,
            Partial {
                atoms: own,
                data,
                next_frag: frag - 1,
            },
        );
        Ok(None)
    }

    fn continuation(
        &mut self,
        seq: u64,
        frag: u64,
        rest: &[u8],
        atoms: &mut Vec<AtomText>,
    ) -> Result<Option<(DecodedBody, bool)>, FrameError> {
        let max = self.limits.max_message_len;
        let partial = self
            .in_flight
            .get(&seq)
            .ok_or(FrameError::UnknownSequence(seq))?;
        if frag != partial.next_frag {
            return Err(FrameError::FragmentOutOfOrder {
                seq,
                expected: partial.next_frag,
                got: frag,
            });
        }
        let len = partial.data.len() + rest.len();
        if len > max {
            return Err(FrameError::MessageTooLarge { len, max });
        }
        self.reserve_partial(rest.len())?;
        let partial = self.in_flight.get_mut(&seq).expect("present");
        partial.data.extend_from_slice(rest);
        partial.next_frag -= 1;
        if frag == 1 {
            let mut p = self.in_flight.remove(&seq).expect("present");
            self.partial_bytes -= p.data.len();
            atoms.append(&mut p.atoms);
            return Ok(Some((DecodedBody::Reassembled(p.data), false)));
        }
        Ok(None)
    }

    fn check_size(&self, len: usize) -> Result<(), FrameError> {
        if len > self.limits.max_message_len {
            return Err(FrameError::MessageTooLarge {
                len,
                max: self.limits.max_message_len,
            });
        }
        Ok(())
    }
}

/// Encodes outbound messages for a connection: pass-through or the normal
/// header with no atom cache refs, split into fragments above
/// [`FRAGMENT_SIZE`] when the peer accepts FRAGMENTS.
#[derive(Debug)]
pub struct OutboundEncoder {
    flags: DistFlags,
    fragment_size: usize,
    next_seq: u64,
    /// What the peer's receive atom cache holds from us, slot by slot
    /// (allocated on first use, like the receive side).
    sent_atoms: Vec<Option<AtomText>>,
    /// The atom cache header of the last cached message.
    cache_hdr: Vec<u8>,
    /// The atoms `cache_hdr` was written for.
    hdr_atoms: Vec<AtomText>,
    /// `cache_hdr` added no new entries, so the same atoms (the same
    /// allocations) give the same header again.
    hdr_reusable: bool,
}

/// ETF tag of an atom cache reference (an index into the message's
/// atom cache header).
pub use erlkube_etf::tags::ATOM_CACHE_REF;

impl OutboundEncoder {
    /// An encoder for a connection with these negotiated flags.
    pub fn new(flags: DistFlags) -> Self {
        OutboundEncoder {
            flags,
            fragment_size: FRAGMENT_SIZE,
            next_seq: 1,
            sent_atoms: Vec::new(),
            cache_hdr: Vec::new(),
            hdr_atoms: Vec::new(),
            hdr_reusable: false,
        }
    }

    /// Changes the fragment size (at least 1 byte; OTP uses 64 KiB).
    pub fn set_fragment_size(&mut self, size: usize) {
        self.fragment_size = size.max(1);
    }

    /// Appends the frames (with their 4-byte lengths) carrying `control`
    /// and `payload` to `out`. Both are versioned ETF (starting with 131),
    /// as `erlkube_etf::encode` writes them. Returns the number of frames.
    pub fn encode(&mut self, control: &[u8], payload: Option<&[u8]>, out: &mut Vec<u8>) -> usize {
        if !self.flags.uses_dist_header() {
            let len = 1 + control.len() + payload.map_or(0, <[u8]>::len);
            out.reserve(4 + len);
            out.extend_from_slice(&(len as u32).to_be_bytes());
            out.push(PASS_THROUGH);
            out.extend_from_slice(control);
            if let Some(p) = payload {
                out.extend_from_slice(p);
            }
            return 1;
        }
        let control = unversioned(control);
        let payload = payload.map(unversioned).unwrap_or(&[]);
        let total = control.len() + payload.len();
        if !self.flags.contains(DistFlags::FRAGMENTS) || total <= self.fragment_size {
            let len = 3 + total;
            out.reserve(4 + len);
            out.extend_from_slice(&(len as u32).to_be_bytes());
            out.extend_from_slice(&[VERSION_MAGIC, DIST_HEADER, 0]);
            out.extend_from_slice(control);
            out.extend_from_slice(payload);
            return 1;
        }
        self.fragments(&[0], control, payload, out)
    }

    /// Splits `control` ++ `payload` (term bodies) into fragments; the
    /// first carries `cache_hdr` (the atom cache header).
    fn fragments(
        &mut self,
        cache_hdr: &[u8],
        control: &[u8],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> usize {
        let total = control.len() + payload.len();
        // The control message stays whole in the first fragment: the BEAM
        // decodes it from there.
        let first_len = self.fragment_size.max(control.len());
        let rest_len = total - first_len;
        let count = 1 + rest_len.div_ceil(self.fragment_size) as u64;
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let body = Chain(control, payload);
        out.reserve(total + count as usize * 22 + cache_hdr.len());
        let mut frag = count;
        let mut offset = 0;
        let mut first = true;
        while offset < total {
            let take = if first {
                first_len
            } else {
                self.fragment_size.min(total - offset)
            };
            let hdr_len = if first { 18 + cache_hdr.len() } else { 18 };
            out.extend_from_slice(&((hdr_len + take) as u32).to_be_bytes());
            out.push(VERSION_MAGIC);
            out.push(if first {
                DIST_FRAG_HEADER
            } else {
                DIST_FRAG_CONT
            });
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&frag.to_be_bytes());
            if first {
                out.extend_from_slice(cache_hdr);
            }
            body.copy_range(offset, take, out);
            offset += take;
            frag -= 1;
            first = false;
        }
        debug_assert_eq!(frag, 0);
        count as usize
    }
}

impl OutboundEncoder {
    /// Appends the frames carrying `control` and `payload`, encoding the
    /// terms straight into `out` (no intermediate buffers). Same wire
    /// format as [`OutboundEncoder::encode`]. Returns the number of frames.
    pub fn encode_terms(
        &mut self,
        control: &erlkube_etf::Term,
        payload: Option<&erlkube_etf::Term>,
        out: &mut Vec<u8>,
    ) -> usize {
        let opts = erlkube_etf::EncodeOptions::utf8_atoms();
        match payload {
            Some(p) => self.encode_parts(
                out,
                |o| erlkube_etf::encode_body_into(control, &opts, o),
                Some(|o: &mut Vec<u8>| erlkube_etf::encode_body_into(p, &opts, o)),
            ),
            None => self.encode_parts(
                out,
                |o| erlkube_etf::encode_body_into(control, &opts, o),
                None::<fn(&mut Vec<u8>)>,
            ),
        }
    }

    /// Appends the frames of a message whose control message and payload
    /// bodies (terms *without* the 131 version byte) are written by
    /// `control` and `payload`; the encoder adds version bytes, header and
    /// lengths as the flags require. Returns the number of frames.
    pub fn encode_parts(
        &mut self,
        out: &mut Vec<u8>,
        control: impl FnOnce(&mut Vec<u8>),
        payload: Option<impl FnOnce(&mut Vec<u8>)>,
    ) -> usize {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0]);
        if !self.flags.uses_dist_header() {
            out.extend_from_slice(&[PASS_THROUGH, VERSION_MAGIC]);
            control(out);
            if let Some(p) = payload {
                out.push(VERSION_MAGIC);
                p(out);
            }
            let len = (out.len() - start - 4) as u32;
            out[start..start + 4].copy_from_slice(&len.to_be_bytes());
            return 1;
        }
        out.extend_from_slice(&[VERSION_MAGIC, DIST_HEADER, 0]);
        let ctl_start = out.len();
        control(out);
        let ctl_end = out.len();
        if let Some(p) = payload {
            p(out);
        }
        let total = out.len() - ctl_start;
        if !self.flags.contains(DistFlags::FRAGMENTS) || total <= self.fragment_size {
            let len = (out.len() - start - 4) as u32;
            out[start..start + 4].copy_from_slice(&len.to_be_bytes());
            return 1;
        }
        // Too big for one frame: re-frame as fragments.
        let body = out.split_off(ctl_start);
        out.truncate(start);
        let (c, p) = body.split_at(ctl_end - ctl_start);
        self.encode(c, Some(p), out)
    }
}

impl OutboundEncoder {
    /// True when messages may use atom cache references
    /// ([`OutboundEncoder::encode_parts_cached`] writes them).
    pub fn atom_cache_enabled(&self) -> bool {
        self.flags.contains(DistFlags::DIST_HDR_ATOM_CACHE)
    }

    /// Like [`OutboundEncoder::encode_parts`], with `atoms` (distinct, at
    /// most 255) put in the distribution header's atom cache: `control`
    /// may then write `ATOM_CACHE_REF i` ([`ATOM_CACHE_REF`], `i` the
    /// position in `atoms`) instead of atom `i`. The peer keeps the atoms
    /// per connection, so after the first message each costs it an index
    /// lookup instead of text to check and store. `control` gets `true`
    /// when references are usable (else it must write the atoms).
    pub fn encode_parts_cached(
        &mut self,
        out: &mut Vec<u8>,
        atoms: &[&AtomText],
        control: impl FnOnce(&mut Vec<u8>, bool),
        payload: Option<impl FnOnce(&mut Vec<u8>)>,
    ) -> usize {
        if !self.atom_cache_enabled() || atoms.is_empty() || atoms.len() > 255 {
            return self.encode_parts(out, |o| control(o, false), payload);
        }
        let mut hdr = std::mem::take(&mut self.cache_hdr);
        self.write_cache_header(atoms, &mut hdr);
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0, VERSION_MAGIC, DIST_HEADER]);
        out.extend_from_slice(&hdr);
        let ctl_start = out.len();
        control(out, true);
        let ctl_end = out.len();
        if let Some(p) = payload {
            p(out);
        }
        let total = out.len() - ctl_start;
        let frames = if !self.flags.contains(DistFlags::FRAGMENTS) || total <= self.fragment_size {
            let len = (out.len() - start - 4) as u32;
            out[start..start + 4].copy_from_slice(&len.to_be_bytes());
            1
        } else {
            let body = out.split_off(ctl_start);
            out.truncate(start);
            let (c, p) = body.split_at(ctl_end - ctl_start);
            self.fragments(&hdr, c, p, out)
        };
        self.cache_hdr = hdr;
        frames
    }

    /// Writes the atom cache header for `atoms`, updating what the peer
    /// is known to hold.
    fn write_cache_header(&mut self, atoms: &[&AtomText], hdr: &mut Vec<u8>) {
        let same = |a: &AtomText, b: &AtomText| {
            let (a, b) = (a.as_str(), b.as_str());
            a.as_ptr() == b.as_ptr() && a.len() == b.len()
        };
        if self.hdr_reusable
            && atoms.len() == self.hdr_atoms.len()
            && atoms.iter().zip(&self.hdr_atoms).all(|(a, b)| same(a, b))
        {
            // `hdr` still holds the header written for these atoms, and
            // the peer's cache has not changed since.
            return;
        }
        let mut any_new = false;
        if self.sent_atoms.is_empty() {
            self.sent_atoms = vec![None; ATOM_CACHE_SIZE];
        }
        let n = atoms.len();
        hdr.clear();
        hdr.push(n as u8);
        let flags_at = hdr.len();
        hdr.resize(flags_at + n / 2 + 1, 0);
        let long = atoms.iter().any(|a| a.as_str().len() > 255);
        for (i, a) in atoms.iter().enumerate() {
            let ix = cache_slot(a.as_str());
            let new = self.sent_atoms[ix].as_ref() != Some(*a);
            let nibble = (if new { 8 } else { 0 }) | (ix >> 8) as u8;
            hdr[flags_at + i / 2] |= nibble << ((i % 2) * 4);
            hdr.push(ix as u8);
            if new {
                any_new = true;
                let text = a.as_str().as_bytes();
                if long {
                    hdr.extend_from_slice(&(text.len() as u16).to_be_bytes());
                } else {
                    hdr.push(text.len() as u8);
                }
                hdr.extend_from_slice(text);
                self.sent_atoms[ix] = Some((*a).clone());
            }
        }
        if long {
            hdr[flags_at + n / 2] |= 1 << ((n % 2) * 4);
        }
        self.hdr_reusable = !any_new;
        self.hdr_atoms.clear();
        self.hdr_atoms.extend(atoms.iter().map(|a| (*a).clone()));
    }
}

/// The atom cache slot an atom goes to (a hash of its text).
fn cache_slot(text: &str) -> usize {
    let mut h: u32 = 2_166_136_261;
    for &b in text.as_bytes() {
        h = (h ^ b as u32).wrapping_mul(16_777_619);
    }
    (h as usize) % ATOM_CACHE_SIZE
}

/// Drops the leading 131 of a versioned term, if present.
fn unversioned(term: &[u8]) -> &[u8] {
    match term.first() {
        Some(&VERSION_MAGIC) => &term[1..],
        _ => term,
    }
}

/// Two slices viewed as one.
struct Chain<'a>(&'a [u8], &'a [u8]);

impl Chain<'_> {
    fn copy_range(&self, offset: usize, len: usize, out: &mut Vec<u8>) {
        let end = offset + len;
        let a = self.0.len();
        if offset < a {
            out.extend_from_slice(&self.0[offset..end.min(a)]);
        }
        if end > a {
            out.extend_from_slice(&self.1[offset.max(a) - a..end - a]);
        }
    }
}

#[cfg(test)]
mod tests;
