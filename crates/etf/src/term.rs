//! The owned term model: [`Term`], [`Atom`], [`Pid`], [`Port`], [`Reference`],
//! [`Fun`] and [`Map`], plus Erlang term order.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

pub use num_bigint::BigInt;

/// Longest atom the BEAM accepts, in characters.
pub const MAX_ATOM_CHARS: usize = 255;

/// An Erlang atom, compared by its text.
///
/// A text of at most [`Atom::INLINE`] bytes (`ok`, `error`, `undefined`,
/// map keys, record tags: most atoms) is stored inside the value: cloning
/// it is a 16-byte copy and dropping it costs nothing. A longer text is
/// shared (an `Arc`), so cloning it is a reference count increment.
/// Which form an atom has follows from its length alone, so equal atoms
/// always have the same form.
///
/// A shared text starts with a 3-byte head before the text. For an ASCII
/// atom of fewer than 128 bytes the head is the atom's `ATOM_EXT` head
/// (`[100, 0, len]`) and the encoder copies head and text in one piece;
/// any other atom has the head `[0, 0, 0]` and takes the encoder's
/// general path.
#[derive(Clone)]
pub struct Atom(Repr);

#[derive(Clone)]
enum Repr {
    /// `[len | NON_ASCII, text…, 0…]`: `len <= Atom::INLINE` bytes of
    /// valid UTF-8, zero padding after them; bit 7 of the first byte is set
    /// when the text is not ASCII.
    Inline([u8; Atom::INLINE + 1]),
    /// More than [`Atom::INLINE`] bytes: head and text (see [`Atom`]). The
    /// `Arc` is a thin pointer so that the whole atom stays 16 bytes (a
    /// `Term` holds two in `Export`).
    Shared(Arc<Box<str>>),
}

// Two atoms and a byte fit in a `Term`'s 32 payload bytes (`Export`).
const _: () = assert!(std::mem::size_of::<Atom>() == 16);

/// Bit 7 of an inline atom's first byte: the text is not ASCII.
const NON_ASCII: u8 = 0x80;

/// Length of the head stored before a shared atom's text.
const ATOM_HEAD: usize = 3;
/// Texts up to this length are assembled on the stack (one allocation).
const ATOM_STACK: usize = 64 - ATOM_HEAD;

/// `a == b` for slices of equal length, without a `memcmp` call for the
/// short texts atoms usually have.
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let w8 = |x: Option<&[u8; 8]>| x.map(|c| u64::from_ne_bytes(*c));
    let w4 = |x: Option<&[u8; 4]>| x.map(|c| u32::from_ne_bytes(*c));
    match n {
        // first and last eight bytes (overlapping below 16)
        8..=16 => {
            w8(a.first_chunk()) == w8(b.first_chunk()) && w8(a.last_chunk()) == w8(b.last_chunk())
        }
        4..=7 => {
            w4(a.first_chunk()) == w4(b.first_chunk()) && w4(a.last_chunk()) == w4(b.last_chunk())
        }
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        0 => true,
        _ => a == b,
    }
}

/// Error of [`Atom::try_new`]: the text has more than 255 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("atom has {chars} characters, the limit is 255")]
pub struct AtomTooLong {
    /// Number of characters of the rejected text.
    pub chars: usize,
}

impl Atom {
    /// Atoms of at most this many bytes of text are stored inline (no
    /// heap allocation, no reference count).
    pub const INLINE: usize = 14;

    /// Makes an atom without checking its length (never panics). Encoding an
    /// atom of more than 255 characters produces bytes the BEAM rejects; use
    /// [`Atom::try_new`] for untrusted text.
    #[inline]
    pub fn new(text: &str) -> Atom {
        let b = text.as_bytes();
        if b.len() <= Atom::INLINE {
            let (data, ascii) = inline_data(b);
            let mut data = data;
            if !ascii {
                data[0] |= NON_ASCII;
            }
            return Atom(Repr::Inline(data));
        }
        Atom::shared(text)
    }

    /// An atom of the bytes `b` if they are ASCII and at most
    /// [`Atom::INLINE`] long (valid in every atom encoding: the decoder's
    /// fast path), else `None`.
    #[inline(always)]
    pub(crate) fn inline_ascii(b: &[u8]) -> Option<Atom> {
        if b.len() > Atom::INLINE {
            return None;
        }
        let (data, ascii) = inline_data(b);
        ascii.then_some(Atom(Repr::Inline(data)))
    }

    #[inline(never)]
    fn shared(text: &str) -> Atom {
        let b = text.as_bytes();
        let head = if b.len() < 128 && b.is_ascii() {
            [crate::tags::ATOM_EXT, 0, b.len() as u8]
        } else {
            [0; ATOM_HEAD]
        };
        let n = ATOM_HEAD + b.len();
        if b.len() <= ATOM_STACK {
            let mut buf = [0u8; ATOM_HEAD + ATOM_STACK];
            buf[..ATOM_HEAD].copy_from_slice(&head);
            buf[ATOM_HEAD..ATOM_HEAD + b.len()].copy_from_slice(b);
            // ASCII head + the bytes of a `str`: valid UTF-8
            if let Ok(s) = std::str::from_utf8(&buf[..n]) {
                return Atom(Repr::Shared(Arc::new(Box::from(s))));
            }
        }
        let mut s = String::with_capacity(n);
        s.extend(head.iter().map(|&c| char::from(c)));
        s.push_str(text);
        Atom(Repr::Shared(Arc::new(s.into_boxed_str())))
    }

    /// Makes an atom, rejecting text of more than 255 characters.
    pub fn try_new(text: &str) -> Result<Atom, AtomTooLong> {
        let chars = text.chars().count();
        if chars > MAX_ATOM_CHARS {
            return Err(AtomTooLong { chars });
        }
        Ok(Atom::new(text))
    }

    /// The atom's text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(d) => {
                let b = inline_text(d);
                // SAFETY: an inline atom's first `len` bytes after the
                // length byte are the valid UTF-8 text it was made from
                // (`Atom::new` takes a `str`, `Atom::inline_ascii` checks
                // that the bytes are ASCII), and `inline_text` returns
                // exactly those bytes.
                unsafe { std::str::from_utf8_unchecked(b) }
            }
            Repr::Shared(s) => {
                let b = s.as_bytes();
                match b {
                    [crate::tags::ATOM_EXT, _, n, ..] => s.get(ATOM_HEAD..ATOM_HEAD + *n as usize),
                    _ => s.get(ATOM_HEAD..),
                }
                .unwrap_or("")
            }
        }
    }

    /// True when the atom is stored inline (its text has at most
    /// [`Atom::INLINE`] bytes): cloning and dropping it touch no shared
    /// memory.
    #[inline]
    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline(_))
    }

    /// For an inline ASCII atom: its storage (`[len, text…, 0…]`, which
    /// is also the tail of its `SMALL_ATOM_UTF8_EXT` encoding after the tag)
    /// and its length. The encoder's fast path for atoms (fixed-size moves
    /// straight from the atom).
    #[inline(always)]
    pub(crate) fn inline_ascii_parts(&self) -> Option<(&[u8; Atom::INLINE + 1], usize)> {
        match &self.0 {
            Repr::Inline(d) if d[0] & NON_ASCII == 0 => Some((d, d[0] as usize)),
            _ => None,
        }
    }

    /// True if the atom's text is exactly `bytes` (no UTF-8 check needed on
    /// `bytes`: a match means they are this atom's text).
    #[inline]
    pub(crate) fn text_is(&self, bytes: &[u8]) -> bool {
        match &self.0 {
            Repr::Inline(d) => same(inline_text(d), bytes),
            Repr::Shared(s) => {
                let s = s.as_bytes();
                match s {
                    [crate::tags::ATOM_EXT, _, n, rest @ ..] => {
                        *n as usize == bytes.len()
                            && rest.get(..bytes.len()).is_some_and(|t| same(t, bytes))
                    }
                    _ => s.get(ATOM_HEAD..) == Some(bytes),
                }
            }
        }
    }

    /// The atom's text as bytes (no character-boundary checks).
    #[inline]
    pub(crate) fn text_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline(d) => inline_text(d),
            Repr::Shared(s) => {
                let s = s.as_bytes();
                match s {
                    [crate::tags::ATOM_EXT, _, n, rest @ ..] => rest.get(..*n as usize),
                    _ => s.get(ATOM_HEAD..),
                }
                .unwrap_or(&[])
            }
        }
    }

    /// True for an ASCII atom shorter than 128 bytes.
    #[inline]
    pub(crate) fn is_short_ascii(&self) -> bool {
        match &self.0 {
            Repr::Inline(d) => d[0] & NON_ASCII == 0,
            Repr::Shared(s) => s.as_bytes().first() == Some(&crate::tags::ATOM_EXT),
        }
    }

    /// For a shared ASCII atom shorter than 128 bytes: its stored bytes,
    /// which are its whole `ATOM_EXT` encoding `[100, 0, len, text…]`,
    /// and the length of that encoding.
    #[inline(always)]
    pub(crate) fn ascii_encoded(&self) -> Option<(&[u8], usize)> {
        let Repr::Shared(s) = &self.0 else {
            return None;
        };
        let b = s.as_bytes();
        match b {
            [crate::tags::ATOM_EXT, _, n, ..] => Some((b, ATOM_HEAD + *n as usize)),
            _ => None,
        }
    }
}

/// The inline storage of `b` (at most [`Atom::INLINE`] bytes): its length,
/// its bytes, zero padding; and whether `b` is ASCII. Gathered with
/// fixed-size loads (no `memcpy` call).
#[inline(always)]
fn inline_data(b: &[u8]) -> ([u8; Atom::INLINE + 1], bool) {
    debug_assert!(b.len() <= Atom::INLINE);
    let w = crate::binary::gather16(b);
    let ascii = w & 0x8080_8080_8080_8080_8080_8080_8080_8080 == 0;
    let w = (w << 8) | b.len() as u128;
    let mut d = [0u8; Atom::INLINE + 1];
    d.copy_from_slice(&w.to_le_bytes()[..Atom::INLINE + 1]);
    (d, ascii)
}

/// The text bytes of an inline atom's storage.
#[inline(always)]
fn inline_text(d: &[u8; Atom::INLINE + 1]) -> &[u8] {
    // the length is at most `INLINE`: `get` does not fail
    d.get(1..1 + (d[0] & !NON_ASCII) as usize).unwrap_or(&[])
}

impl PartialEq for Atom {
    #[inline]
    fn eq(&self, other: &Atom) -> bool {
        match (&self.0, &other.0) {
            // the storage is a function of the text (zero padding)
            (Repr::Inline(a), Repr::Inline(b)) => a == b,
            // the head is a function of the text
            (Repr::Shared(a), Repr::Shared(b)) => Arc::ptr_eq(a, b) || a == b,
            // the form is a function of the text's length
            _ => false,
        }
    }
}

impl Eq for Atom {}

impl Hash for Atom {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Atom) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Atom {
    fn cmp(&self, other: &Atom) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Atom({:?})", self.as_str())
    }
}

impl fmt::Display for Atom {
    /// Erlang syntax: quoted when needed (`'hello world'`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::text::write_atom(f, self.as_str())
    }
}

impl From<&str> for Atom {
    fn from(s: &str) -> Atom {
        Atom::new(s)
    }
}

impl AsRef<str> for Atom {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// A process identifier.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pid {
    /// Node name, e.g. `nonode@nohost`.
    pub node: Atom,
    /// Process number.
    pub id: u32,
    /// Serial (wraps of the process number).
    pub serial: u32,
    /// Creation of the node incarnation.
    pub creation: u32,
}

/// A port identifier.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Port {
    /// Node name.
    pub node: Atom,
    /// Port number (64-bit since OTP 24's `V4_PORT_EXT`).
    pub id: u64,
    /// Creation of the node incarnation.
    pub creation: u32,
}

/// A reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Node name.
    pub node: Atom,
    /// Creation of the node incarnation.
    pub creation: u32,
    /// ID words, least significant first, 1..=5 words (as on the wire).
    pub ids: Vec<u32>,
}

/// A closure (`NEW_FUN_EXT`), kept as data so it round-trips; it cannot be
/// called from Rust. Boxed so that funs, which are rare, do not make every
/// [`Term`] bigger; the fields are reached through `Deref` ([`FunData`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Fun(pub(crate) Box<FunData>);

impl Fun {
    /// Wraps the fun's fields.
    pub fn new(data: FunData) -> Fun {
        Fun(Box::new(data))
    }
    /// The fun's fields.
    pub fn into_data(self) -> FunData {
        *self.0
    }
}

impl std::ops::Deref for Fun {
    type Target = FunData;
    fn deref(&self) -> &FunData {
        &self.0
    }
}

impl std::ops::DerefMut for Fun {
    fn deref_mut(&mut self) -> &mut FunData {
        &mut self.0
    }
}

impl From<FunData> for Fun {
    fn from(d: FunData) -> Fun {
        Fun::new(d)
    }
}

/// The fields of a [`Fun`] as `NEW_FUN_EXT` carries them.
#[derive(Clone, Debug, PartialEq)]
pub struct FunData {
    /// Arity of the fun.
    pub arity: u8,
    /// MD5 of the module's code.
    pub uniq: [u8; 16],
    /// Index in the module's fun table.
    pub index: u32,
    /// Module the fun was defined in.
    pub module: Atom,
    /// Old index (an integer term on the wire).
    pub old_index: i64,
    /// Old uniq (an integer term on the wire).
    pub old_uniq: i64,
    /// Creator process.
    pub pid: Pid,
    /// Captured variables.
    pub free_vars: Vec<Term>,
}

/// Maps up to this many keys are "flatmaps" on the BEAM: stored and encoded
/// with keys in map-key order.
pub const SMALL_MAP_KEYS: usize = 32;

/// A map. Keys are unique (compared exactly: `1` and `1.0` differ);
/// equality ignores entry order. A map of up to [`SMALL_MAP_KEYS`] keys
/// keeps its entries sorted in map-key order ([`Term::cmp_exact`]), as the
/// BEAM stores and encodes it; larger maps keep insertion (or wire) order.
#[derive(Clone, Debug, Default)]
pub struct Map {
    entries: Vec<(Term, Term)>,
}

impl Map {
    /// An empty map.
    pub fn new() -> Map {
        Map::default()
    }

    /// Inserts or replaces, returning the old value.
    pub fn insert(&mut self, key: Term, value: Term) -> Option<Term> {
        if self.entries.len() < SMALL_MAP_KEYS {
            return match self.entries.binary_search_by(|(k, _)| k.cmp_exact(&key)) {
                Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
                Err(i) => {
                    self.entries.insert(i, (key, value));
                    None
                }
            };
        }
        for (k, v) in &mut self.entries {
            if k.exact_eq(&key) {
                return Some(std::mem::replace(v, value));
            }
        }
        self.entries.push((key, value));
        None
    }

    /// Looks a key up.
    pub fn get(&self, key: &Term) -> Option<&Term> {
        if self.entries.len() <= SMALL_MAP_KEYS {
            return self
                .entries
                .binary_search_by(|(k, _)| k.cmp_exact(key))
                .ok()
                .map(|i| &self.entries[i].1);
        }
        self.entries
            .iter()
            .find(|(k, _)| k.exact_eq(key))
            .map(|(_, v)| v)
    }

    /// Looks an atom key up.
    pub fn get_atom(&self, key: &str) -> Option<&Term> {
        self.entries
            .iter()
            .find(|(k, _)| matches!(k, Term::Atom(a) if a.as_str() == key))
            .map(|(_, v)| v)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in stored order.
    pub fn iter(&self) -> impl Iterator<Item = (&Term, &Term)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// Entries in stored order.
    pub fn entries(&self) -> &[(Term, Term)] {
        &self.entries
    }

    /// Consumes the map into its entries.
    pub fn into_entries(self) -> Vec<(Term, Term)> {
        self.entries
    }

    /// Entries sorted by key in map-key order (for small maps, the stored
    /// order).
    pub fn sorted_entries(&self) -> Vec<&(Term, Term)> {
        let mut v: Vec<&(Term, Term)> = self.entries.iter().collect();
        if self.entries.len() > SMALL_MAP_KEYS {
            v.sort_by(|a, b| a.0.cmp_exact(&b.0));
        }
        v
    }

    /// Builds a map from entries strictly increasing in map-key order
    /// (hence unique).
    pub(crate) fn from_sorted_unique(entries: Vec<(Term, Term)>) -> Map {
        Map { entries }
    }

    /// Builds a map from entries whose keys the caller (the decoder) has
    /// checked to be unique; small maps are put in map-key order.
    pub(crate) fn from_unique_entries(mut entries: Vec<(Term, Term)>) -> Map {
        if entries.len() <= SMALL_MAP_KEYS
            && !entries
                .windows(2)
                .all(|w| w[0].0.cmp_exact(&w[1].0) == Ordering::Less)
        {
            entries.sort_by(|a, b| a.0.cmp_exact(&b.0));
        }
        Map { entries }
    }
}

/// Later duplicates replace earlier ones (like `maps:from_list/1`). Runs
/// in O(n log n); inserting one by one into a large map is O(n) per insert.
impl FromIterator<(Term, Term)> for Map {
    fn from_iter<I: IntoIterator<Item = (Term, Term)>>(iter: I) -> Map {
        let v: Vec<(Term, Term)> = iter.into_iter().collect();
        if v.len() <= SMALL_MAP_KEYS {
            let mut m = Map::new();
            for (k, val) in v {
                m.insert(k, val);
            }
            return m;
        }
        // stable sort of indices by key: within a run of equal keys the
        // last one wins
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].0.cmp_exact(&v[b].0));
        let mut keep = vec![true; v.len()];
        for w in idx.windows(2) {
            if v[w[0]].0.cmp_exact(&v[w[1]].0) == Ordering::Equal {
                keep[w[0]] = false;
            }
        }
        let entries: Vec<(Term, Term)> = v
            .into_iter()
            .zip(keep)
            .filter_map(|(e, k)| k.then_some(e))
            .collect();
        Map::from_unique_entries(entries)
    }
}

impl PartialEq for Map {
    fn eq(&self, other: &Map) -> bool {
        if self.len() != other.len() {
            return false;
        }
        let a = self.sorted_entries();
        let b = other.sorted_entries();
        a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.0 == y.0 && x.1 == y.1)
    }
}

/// An Erlang term.
///
/// Layout: the variant is a byte at offset 0 (`repr(u8)`), so reading it
/// is one load, and a `Term` is 40 bytes: the largest common payloads
/// (`Vec`s, pids, ports, big integers, a [`crate::Binary`] with up to 30
/// bytes inline) fit in 32, references (48 bytes
/// with their id vector) are boxed, and the byte fields of `BitBinary` and
/// `Export` come first so they sit beside the tag. Encoding walks these
/// nodes, so their size and the cost of their tag are its cost per term.
///
/// `Drop`, `Clone`, `Debug`, `Display`, `==`, [`Term::cmp_term`],
/// [`Term::cmp_exact`] and `Hash` take any nesting depth without
/// recursion per level.
#[repr(u8)]
pub enum Term {
    /// Every integer that fits `i64`.
    Integer(i64),
    /// Only integers outside `i64` (the decoder normalises).
    BigInt(BigInt),
    /// A float (never NaN or infinite on the wire).
    Float(f64),
    /// An atom (`true`, `false`, `undefined` are atoms too).
    Atom(Atom),
    /// A binary (up to [`crate::Binary::INLINE`] bytes stored inline,
    /// without a heap allocation).
    Binary(crate::Binary),
    /// A bitstring whose last byte holds `bits` (1..=7) significant high bits.
    BitBinary {
        /// Significant bits in the last byte, 1..=7.
        bits: u8,
        /// Bytes; the unused low bits of the last byte are zero.
        bytes: Vec<u8>,
    },
    /// A tuple.
    Tuple(Vec<Term>),
    /// A proper list; `Term::List(vec![])` is `[]`.
    List(Vec<Term>),
    /// An improper list `[a, b | tail]`; `elems` is non-empty and `tail` is
    /// not a list.
    ImproperList {
        /// The elements before the tail.
        elems: Vec<Term>,
        /// The tail (not a proper list).
        tail: Box<Term>,
    },
    /// A map.
    Map(Map),
    /// A pid.
    Pid(Pid),
    /// A port.
    Port(Port),
    /// A reference (boxed: see the layout note above; build one with
    /// `Term::from(reference)`).
    Reference(Box<Reference>),
    /// An external fun `fun M:F/A`.
    Export {
        /// Arity.
        arity: u8,
        /// Module.
        module: Atom,
        /// Function.
        function: Atom,
    },
    /// A closure, kept as data.
    Fun(Fun),
}

/// The derived form (`Tuple([Integer(1), Atom(Atom("a"))])`), written
/// from an explicit stack so a term of any depth prints without recursion
/// (`{:#?}` prints the same one-line form).
impl fmt::Debug for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        enum Dbg<'t> {
            Term(&'t Term),
            Text(&'static str),
        }
        fn seq<'t>(stack: &mut Vec<Dbg<'t>>, items: &'t [Term]) {
            for (i, e) in items.iter().enumerate().rev() {
                stack.push(Dbg::Term(e));
                if i > 0 {
                    stack.push(Dbg::Text(", "));
                }
            }
        }
        let mut stack = vec![Dbg::Term(self)];
        while let Some(d) = stack.pop() {
            let t = match d {
                Dbg::Text(s) => {
                    f.write_str(s)?;
                    continue;
                }
                Dbg::Term(t) => t,
            };
            match t {
                Term::Integer(i) => write!(f, "Integer({i:?})")?,
                Term::BigInt(b) => write!(f, "BigInt({b:?})")?,
                Term::Float(x) => write!(f, "Float({x:?})")?,
                Term::Atom(a) => write!(f, "Atom({a:?})")?,
                Term::Binary(b) => write!(f, "Binary({b:?})")?,
                Term::BitBinary { bits, bytes } => {
                    write!(f, "BitBinary {{ bits: {bits:?}, bytes: {bytes:?} }}")?
                }
                Term::Tuple(v) => {
                    f.write_str("Tuple([")?;
                    stack.push(Dbg::Text("])"));
                    seq(&mut stack, v);
                }
                Term::List(v) => {
                    f.write_str("List([")?;
                    stack.push(Dbg::Text("])"));
                    seq(&mut stack, v);
                }
                Term::ImproperList { elems, tail } => {
                    f.write_str("ImproperList { elems: [")?;
                    stack.push(Dbg::Text(" }"));
                    stack.push(Dbg::Term(tail));
                    stack.push(Dbg::Text("], tail: "));
                    seq(&mut stack, elems);
                }
                Term::Map(m) => {
                    f.write_str("Map(Map { entries: [")?;
                    stack.push(Dbg::Text("] })"));
                    for (i, (k, v)) in m.entries.iter().enumerate().rev() {
                        stack.push(Dbg::Text(")"));
                        stack.push(Dbg::Term(v));
                        stack.push(Dbg::Text(", "));
                        stack.push(Dbg::Term(k));
                        stack.push(Dbg::Text("("));
                        if i > 0 {
                            stack.push(Dbg::Text(", "));
                        }
                    }
                }
                Term::Pid(p) => write!(f, "Pid({p:?})")?,
                Term::Port(p) => write!(f, "Port({p:?})")?,
                Term::Reference(r) => write!(f, "Reference({r:?})")?,
                Term::Export {
                    arity,
                    module,
                    function,
                } => write!(
                    f,
                    "Export {{ arity: {arity:?}, module: {module:?}, function: {function:?} }}"
                )?,
                Term::Fun(x) => {
                    write!(
                        f,
                        "Fun(Fun(FunData {{ arity: {:?}, uniq: {:?}, index: {:?}, module: {:?}, \
                         old_index: {:?}, old_uniq: {:?}, pid: {:?}, free_vars: [",
                        x.arity, x.uniq, x.index, x.module, x.old_index, x.old_uniq, x.pid
                    )?;
                    stack.push(Dbg::Text("] }))"));
                    seq(&mut stack, &x.free_vars);
                }
            }
        }
        Ok(())
    }
}

/// Cloning recurses over the first [`crate::RECURSION_DEPTH`] levels and
/// clones deeper ones from an explicit stack on the heap, so a term of
/// any depth clones without overflowing the thread's stack.
impl Clone for Term {
    #[inline]
    fn clone(&self) -> Term {
        clone_at(self, 0)
    }
}

/// Clones `t`, which is at nesting `depth` of the clone under way.
fn clone_at(t: &Term, depth: usize) -> Term {
    match t {
        Term::Integer(i) => Term::Integer(*i),
        Term::BigInt(b) => Term::BigInt(b.clone()),
        Term::Float(f) => Term::Float(*f),
        Term::Atom(a) => Term::Atom(a.clone()),
        Term::Binary(b) => Term::Binary(b.clone()),
        Term::BitBinary { bits, bytes } => Term::BitBinary {
            bits: *bits,
            bytes: bytes.clone(),
        },
        Term::Pid(p) => Term::Pid(p.clone()),
        Term::Port(p) => Term::Port(p.clone()),
        Term::Reference(r) => Term::Reference(r.clone()),
        Term::Export {
            arity,
            module,
            function,
        } => Term::Export {
            arity: *arity,
            module: module.clone(),
            function: function.clone(),
        },
        _ if depth >= crate::decode::RECURSION_DEPTH => clone_deep(t),
        Term::Tuple(v) => Term::Tuple(v.iter().map(|e| clone_at(e, depth + 1)).collect()),
        Term::List(v) => Term::List(v.iter().map(|e| clone_at(e, depth + 1)).collect()),
        Term::ImproperList { elems, tail } => Term::ImproperList {
            elems: elems.iter().map(|e| clone_at(e, depth + 1)).collect(),
            tail: Box::new(clone_at(tail, depth + 1)),
        },
        Term::Map(m) => Term::Map(Map {
            entries: m
                .entries
                .iter()
                .map(|(k, v)| (clone_at(k, depth + 1), clone_at(v, depth + 1)))
                .collect(),
        }),
        Term::Fun(f) => Term::Fun(Fun(Box::new(fun_with(
            f,
            f.free_vars.iter().map(|e| clone_at(e, depth + 1)).collect(),
        )))),
    }
}

/// `f`'s fields with other free variables.
fn fun_with(f: &FunData, free_vars: Vec<Term>) -> FunData {
    FunData {
        arity: f.arity,
        uniq: f.uniq,
        index: f.index,
        module: f.module.clone(),
        old_index: f.old_index,
        old_uniq: f.old_uniq,
        pid: f.pid.clone(),
        free_vars,
    }
}

/// The elements of a container in order (a map's keys and values
/// alternating, an improper list's tail last).
fn element(t: &Term, i: usize) -> Option<&Term> {
    match t {
        Term::Tuple(v) | Term::List(v) => v.get(i),
        Term::ImproperList { elems, tail } => {
            elems.get(i).or((i == elems.len()).then_some(&**tail))
        }
        Term::Map(m) => m
            .entries
            .get(i / 2)
            .map(|(k, v)| if i.is_multiple_of(2) { k } else { v }),
        Term::Fun(f) => f.free_vars.get(i),
        _ => None,
    }
}

fn element_count(t: &Term) -> usize {
    match t {
        Term::Tuple(v) | Term::List(v) => v.len(),
        Term::ImproperList { elems, .. } => elems.len() + 1,
        Term::Map(m) => 2 * m.entries.len(),
        Term::Fun(f) => f.free_vars.len(),
        _ => 0,
    }
}

/// A container like `src` with the elements `elems` (as [`element`]
/// lists them).
fn rebuild(src: &Term, mut elems: Vec<Term>) -> Term {
    match src {
        Term::Tuple(_) => Term::Tuple(elems),
        Term::List(_) => Term::List(elems),
        Term::ImproperList { .. } => {
            let tail = elems.pop().unwrap_or(Term::Integer(0));
            Term::ImproperList {
                elems,
                tail: Box::new(tail),
            }
        }
        Term::Map(_) => {
            let mut entries = Vec::with_capacity(elems.len() / 2);
            let mut it = elems.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                entries.push((k, v));
            }
            Term::Map(Map { entries })
        }
        Term::Fun(f) => Term::Fun(Fun(Box::new(fun_with(f, elems)))),
        other => clone_at(other, 0),
    }
}

/// Clones `root` from a stack of the containers being copied (on the
/// heap): each entry is the source, the next element to copy, and the
/// copies so far.
#[cold]
#[inline(never)]
fn clone_deep(root: &Term) -> Term {
    let mut stack: Vec<(&Term, usize, Vec<Term>)> =
        vec![(root, 0, Vec::with_capacity(element_count(root)))];
    loop {
        let Some(top) = stack.last_mut() else {
            return Term::Integer(0);
        };
        if let Some(e) = element(top.0, top.1) {
            top.1 += 1;
            if e.has_elements() {
                stack.push((e, 0, Vec::with_capacity(element_count(e))));
            } else {
                // nothing nested: no recursion
                top.2.push(clone_at(e, 0));
            }
            continue;
        }
        let Some((src, _, elems)) = stack.pop() else {
            return Term::Integer(0);
        };
        let t = rebuild(src, elems);
        match stack.last_mut() {
            Some(parent) => parent.2.push(t),
            None => return t,
        }
    }
}

thread_local! {
    /// Containers of this thread being dropped inside each other.
    static DROP_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Dropping a term never recurses deeper than
/// [`crate::RECURSION_DEPTH`] levels: below that, elements are
/// freed from an explicit stack on the heap, so a term of any depth (a list
/// nested a million levels, as `binary_to_term/1` accepts) is dropped
/// without overflowing the thread's stack. Shallower terms are dropped as
/// the drop glue would, with a per-thread depth count around each
/// container.
impl Drop for Term {
    #[inline]
    fn drop(&mut self) {
        if !self.has_elements() {
            return;
        }
        let depth = DROP_DEPTH.with(|d| d.get());
        if depth >= crate::decode::RECURSION_DEPTH {
            return drop_deep(self);
        }
        DROP_DEPTH.with(|d| d.set(depth + 1));
        self.clear_elements();
        DROP_DEPTH.with(|d| d.set(depth));
    }
}

impl Term {
    /// Drops this term's elements (in place: the containers keep their
    /// buffers, which the drop glue frees).
    #[inline]
    fn clear_elements(&mut self) {
        match self {
            Term::Tuple(v) | Term::List(v) => clear_terms(v),
            Term::ImproperList { elems, tail } => {
                elems.clear();
                **tail = Term::Integer(0);
            }
            Term::Map(m) => clear_entries(&mut m.entries),
            Term::Fun(f) => f.free_vars.clear(),
            _ => {}
        }
    }

    /// True for a container with at least one element.
    #[inline]
    fn has_elements(&self) -> bool {
        match self {
            Term::Tuple(v) | Term::List(v) => !v.is_empty(),
            Term::ImproperList { .. } => true,
            Term::Map(m) => !m.entries.is_empty(),
            Term::Fun(f) => !f.free_vars.is_empty(),
            _ => false,
        }
    }

    /// Moves this term's elements that have elements of their own to
    /// `out` and drops the others (which nest nothing), leaving it
    /// without any.
    fn detach(&mut self, out: &mut Vec<Term>) {
        let mut keep = |t: Term| {
            if t.has_elements() {
                out.push(t);
            }
        };
        match self {
            Term::Tuple(v) | Term::List(v) => v.drain(..).for_each(keep),
            Term::ImproperList { elems, tail } => {
                elems.drain(..).for_each(&mut keep);
                keep(std::mem::replace(&mut **tail, Term::Integer(0)));
            }
            Term::Map(m) => {
                for (k, v) in m.entries.drain(..) {
                    keep(k);
                    keep(v);
                }
            }
            Term::Fun(f) => f.free_vars.drain(..).for_each(keep),
            _ => {}
        }
    }
}

/// `v.clear()` with the commonest elements dropped inline: integers and
/// floats own nothing, an atom is one reference count and a binary one
/// deallocation, so only the others go through `Term`'s drop glue (a
/// call per element otherwise, and most elements of real terms are
/// these four).
#[inline]
fn clear_terms(v: &mut Vec<Term>) {
    let len = v.len();
    let p = v.as_mut_ptr();
    // SAFETY: the length is set to 0 first, so the elements, dropped
    // below exactly once each, are never reached through `v` again (a
    // panic while dropping one would leak the rest, not free them twice);
    // `p.add(i)` for `i < len` points at an initialised element.
    unsafe {
        v.set_len(0);
        for i in 0..len {
            drop_element(p.add(i));
        }
    }
}

/// Drops one element of a vector being cleared (see [`clear_terms`]).
///
/// # Safety
///
/// `e` points at an initialised `Term` that is never used again.
#[inline(always)]
unsafe fn drop_element(e: *mut Term) {
    // SAFETY: as the caller promises; each arm drops the field it names
    // (or the whole term) exactly once.
    unsafe {
        match &mut *e {
            Term::Integer(_) | Term::Float(_) => {}
            Term::Atom(a) => std::ptr::drop_in_place(a),
            Term::Binary(b) => std::ptr::drop_in_place(b),
            _ => std::ptr::drop_in_place(e),
        }
    }
}

/// [`clear_terms`] for a map's entries.
#[inline]
fn clear_entries(v: &mut Vec<(Term, Term)>) {
    let len = v.len();
    let p = v.as_mut_ptr();
    // SAFETY: as in `clear_terms`: the length is 0 before any entry is
    // dropped, and each initialised entry's key and value are dropped once.
    unsafe {
        v.set_len(0);
        for i in 0..len {
            let e = p.add(i);
            drop_element(&raw mut (*e).0);
            drop_element(&raw mut (*e).1);
        }
    }
}

/// Frees the nodes under `t` one by one from a stack of detached terms;
/// each is dropped once it holds nothing nested.
#[cold]
#[inline(never)]
fn drop_deep(t: &mut Term) {
    let mut pending = Vec::new();
    t.detach(&mut pending);
    while let Some(mut c) = pending.pop() {
        c.detach(&mut pending);
    }
}

impl Term {
    /// An atom term.
    pub fn atom(s: &str) -> Term {
        Term::Atom(Atom::new(s))
    }
    /// A tuple term.
    pub fn tuple(elems: Vec<Term>) -> Term {
        Term::Tuple(elems)
    }
    /// A proper list term.
    pub fn list(elems: Vec<Term>) -> Term {
        Term::List(elems)
    }
    /// The empty list `[]`.
    pub fn nil() -> Term {
        Term::List(Vec::new())
    }
    /// A binary term.
    pub fn binary(bytes: impl Into<crate::Binary>) -> Term {
        Term::Binary(bytes.into())
    }
    /// A map term from key/value pairs (later duplicates replace earlier).
    pub fn map(entries: impl IntoIterator<Item = (Term, Term)>) -> Term {
        Term::Map(entries.into_iter().collect())
    }
    /// An integer from a big integer, normalised to `Integer` if it fits.
    pub fn from_bigint(b: BigInt) -> Term {
        match i64::try_from(&b) {
            Ok(i) => Term::Integer(i),
            Err(_) => Term::BigInt(b),
        }
    }
    /// A boolean as the atom `true` or `false`.
    pub fn boolean(b: bool) -> Term {
        Term::atom(if b { "true" } else { "false" })
    }

    /// The atom, if this is one.
    pub fn as_atom(&self) -> Option<&Atom> {
        match self {
            Term::Atom(a) => Some(a),
            _ => None,
        }
    }
    /// The tuple elements, if this is a tuple.
    pub fn as_tuple(&self) -> Option<&[Term]> {
        match self {
            Term::Tuple(t) => Some(t),
            _ => None,
        }
    }
    /// The list elements, if this is a proper list.
    pub fn as_list(&self) -> Option<&[Term]> {
        match self {
            Term::List(t) => Some(t),
            _ => None,
        }
    }
    /// The integer, if this is an integer that fits `i64`.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Term::Integer(i) => Some(*i),
            _ => None,
        }
    }
    /// The float, if this is a float.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Term::Float(f) => Some(*f),
            _ => None,
        }
    }
    /// The bytes, if this is a binary.
    pub fn as_binary(&self) -> Option<&[u8]> {
        match self {
            Term::Binary(b) => Some(b),
            _ => None,
        }
    }
    /// The map, if this is a map.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Term::Map(m) => Some(m),
            _ => None,
        }
    }
    /// The pid, if this is a pid.
    pub fn as_pid(&self) -> Option<&Pid> {
        match self {
            Term::Pid(p) => Some(p),
            _ => None,
        }
    }
    /// The reference, if this is a reference.
    pub fn as_reference(&self) -> Option<&Reference> {
        match self {
            Term::Reference(r) => Some(r),
            _ => None,
        }
    }
    /// True for the atom `true`, false for `false`, else `None`.
    pub fn as_bool(&self) -> Option<bool> {
        match self.as_atom()?.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }
    /// True for `[]`.
    pub fn is_nil(&self) -> bool {
        matches!(self, Term::List(v) if v.is_empty())
    }

    /// Exact equality (`=:=`): like `==` on `Term` (which is structural).
    pub fn exact_eq(&self, other: &Term) -> bool {
        self == other
    }

    fn type_rank(&self) -> u8 {
        // number < atom < reference < fun < port < pid < tuple < map < nil < list < bitstring
        match self {
            Term::Integer(_) | Term::BigInt(_) | Term::Float(_) => 0,
            Term::Atom(_) => 1,
            Term::Reference(_) => 2,
            Term::Fun(_) | Term::Export { .. } => 3,
            Term::Port(_) => 4,
            Term::Pid(_) => 5,
            Term::Tuple(_) => 6,
            Term::Map(_) => 7,
            Term::List(v) if v.is_empty() => 8,
            Term::List(_) | Term::ImproperList { .. } => 9,
            Term::Binary(_) | Term::BitBinary { .. } => 10,
        }
    }

    /// Erlang term order, as `<`/`==` compare (`1 == 1.0`).
    pub fn cmp_term(&self, other: &Term) -> Ordering {
        term_cmp(self, other, false)
    }

    /// The order of map keys (what `erts` uses to sort small maps and to
    /// compare maps): like [`Term::cmp_term`], except that every integer
    /// sorts before every float (`#{1 => a, 0.5 => b}` is stored as
    /// `1, 0.5`), so only `=:=` terms are `Equal`.
    pub fn cmp_exact(&self, other: &Term) -> Ordering {
        term_cmp(self, other, true)
    }
}

fn cmp_int_float(i: &BigInt, f: f64) -> Ordering {
    // Compare exactly: floats are integral beyond 2^53, so compare via BigInt
    // of the truncated float, then the fraction.
    let t = f.trunc();
    let fb = float_to_bigint(t);
    match i.cmp(&fb) {
        Ordering::Equal => {
            if f > t {
                Ordering::Less
            } else if f < t {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        }
        o => o,
    }
}

fn float_to_bigint(t: f64) -> BigInt {
    if t.abs() < 9.0e15 {
        return BigInt::from(t as i64);
    }
    let bits = t.to_bits();
    let neg = bits >> 63 != 0;
    let exp = ((bits >> 52) & 0x7ff) as i64;
    let mant = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
    let mut b = BigInt::from(mant);
    let shift = exp - 1075;
    if shift >= 0 {
        b <<= shift as usize;
    } else {
        b >>= (-shift) as usize;
    }
    if neg {
        -b
    } else {
        b
    }
}

fn num_cmp(a: &Term, b: &Term, exact: bool) -> Ordering {
    use Term::*;
    match (a, b) {
        (Integer(x), Integer(y)) => x.cmp(y),
        (Float(x), Float(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Integer(x), BigInt(y)) => num_bigint::BigInt::from(*x).cmp(y),
        (BigInt(x), Integer(y)) => x.cmp(&num_bigint::BigInt::from(*y)),
        (BigInt(x), BigInt(y)) => x.cmp(y),
        // map-key order (exact): every integer sorts before every float
        (Integer(_) | BigInt(_), Float(_)) if exact => Ordering::Less,
        (Integer(x), Float(f)) => cmp_int_float(&num_bigint::BigInt::from(*x), *f),
        (BigInt(x), Float(f)) => cmp_int_float(x, *f),
        (Float(_), Integer(_) | BigInt(_)) => num_cmp(b, a, exact).reverse(),
        _ => Ordering::Equal,
    }
}

/// Reference words compare as one number (least significant word first on
/// the wire), then by word count.
fn ref_ids_cmp(a: &[u32], b: &[u32]) -> Ordering {
    let trim = |v: &[u32]| v.len() - v.iter().rev().take_while(|&&w| w == 0).count();
    let (la, lb) = (trim(a), trim(b));
    la.cmp(&lb)
        .then_with(|| a[..la].iter().rev().cmp(b[..lb].iter().rev()))
        .then(a.len().cmp(&b.len()))
}

fn node_cmp(a: &Atom, b: &Atom) -> Ordering {
    a.as_str().cmp(b.as_str())
}

/// Pids order by serial, number, node, creation (the BEAM's order).
fn pid_cmp(x: &Pid, y: &Pid) -> Ordering {
    x.serial
        .cmp(&y.serial)
        .then(x.id.cmp(&y.id))
        .then_with(|| node_cmp(&x.node, &y.node))
        .then(x.creation.cmp(&y.creation))
}

/// True for the terms whose order depends on their elements.
#[inline]
fn nests(t: &Term) -> bool {
    matches!(
        t,
        Term::Tuple(_) | Term::Map(_) | Term::List(_) | Term::ImproperList { .. } | Term::Fun(_)
    )
}

/// The order of two terms of the same rank that do not nest (numbers,
/// atoms, references, ports, pids, binaries, exports).
fn scalar_cmp(a: &Term, b: &Term, exact: bool) -> Ordering {
    use Term::*;
    match (a, b) {
        (Integer(_) | BigInt(_) | Float(_), _) => num_cmp(a, b, exact),
        (Atom(x), Atom(y)) => x.as_str().cmp(y.as_str()),
        // orders below are the BEAM's (checked against erl in the tests)
        (Reference(x), Reference(y)) => node_cmp(&x.node, &y.node)
            .then(x.creation.cmp(&y.creation))
            .then_with(|| ref_ids_cmp(&x.ids, &y.ids)),
        (Port(x), Port(y)) => node_cmp(&x.node, &y.node)
            .then(x.creation.cmp(&y.creation))
            .then(x.id.cmp(&y.id)),
        (Pid(x), Pid(y)) => pid_cmp(x, y),
        (Binary(_) | BitBinary { .. }, _) => {
            let (xb, xbits) = bits_of(a);
            let (yb, ybits) = bits_of(b);
            // compare bit by bit: full bytes first
            let n = xb.len().min(yb.len());
            for i in 0..n {
                let xl = if i + 1 == xb.len() { xbits } else { 8 };
                let yl = if i + 1 == yb.len() { ybits } else { 8 };
                let l = xl.min(yl);
                let mask = if l == 8 { 0xff } else { !(0xffu8 >> l) };
                match (xb[i] & mask).cmp(&(yb[i] & mask)) {
                    Ordering::Equal => {}
                    o => return o,
                }
                if xl != yl {
                    return xl.cmp(&yl);
                }
            }
            let xt = (xb.len() as u64) * 8;
            let yt = (yb.len() as u64) * 8;
            xt.cmp(&yt)
        }
        (
            Export {
                module: m1,
                function: f1,
                arity: a1,
            },
            Export {
                module: m2,
                function: f2,
                arity: a2,
            },
        ) => m1
            .as_str()
            .cmp(m2.as_str())
            .then(f1.as_str().cmp(f2.as_str()))
            .then(a1.cmp(a2)),
        // local funs sort before exports
        (Fun(_), _) => Ordering::Less,
        (Export { .. }, Fun(_)) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

/// What is left of a list to compare: elements, then a tail (`None` for
/// `[]`).
type ListRest<'t> = (&'t [Term], Option<&'t Term>);

/// A list's rest, seen as a term: a non-empty list, `[]`, or a term that
/// is not a list (an improper tail).
enum RestKind<'t> {
    List(ListRest<'t>),
    Nil,
    Other(&'t Term),
}

fn rest_kind<'t>((elems, tail): ListRest<'t>) -> RestKind<'t> {
    if !elems.is_empty() {
        return RestKind::List((elems, tail));
    }
    match tail {
        None => RestKind::Nil,
        Some(Term::List(v)) if v.is_empty() => RestKind::Nil,
        Some(Term::List(v)) => RestKind::List((v, None)),
        Some(Term::ImproperList { elems, tail }) => RestKind::List((elems, Some(tail))),
        Some(t) => RestKind::Other(t),
    }
}

fn list_rest(t: &Term) -> ListRest<'_> {
    match t {
        Term::List(v) => (v, None),
        Term::ImproperList { elems, tail } => (elems, Some(tail)),
        _ => (&[], None),
    }
}

/// A comparison still to make, on the stack of [`term_cmp`].
enum Cmp<'t> {
    Terms(&'t Term, &'t Term, bool),
    Lists(ListRest<'t>, ListRest<'t>, bool),
    /// An order already known, which counts once everything pushed
    /// above it compared equal.
    Then(Ordering),
    /// Two funs' fields after their free variables.
    FunRest(&'t FunData, &'t FunData),
}

/// Erlang term order (`exact`: map-key order), from an explicit stack of
/// comparisons still to make, so any nesting depth costs no thread stack.
/// Terms that do not nest compare without touching the heap.
fn term_cmp(a: &Term, b: &Term, exact: bool) -> Ordering {
    let (ra, rb) = (a.type_rank(), b.type_rank());
    if ra != rb {
        return ra.cmp(&rb);
    }
    if !nests(a) || !nests(b) {
        return scalar_cmp(a, b, exact);
    }
    let mut stack = vec![Cmp::Terms(a, b, exact)];
    while let Some(c) = stack.pop() {
        let o = match c {
            Cmp::Then(o) => o,
            Cmp::FunRest(x, y) => x
                .index
                .cmp(&y.index)
                .then(x.uniq.cmp(&y.uniq))
                .then(x.arity.cmp(&y.arity))
                .then_with(|| pid_cmp(&x.pid, &y.pid)),
            Cmp::Lists(x, y, exact) => match (rest_kind(x), rest_kind(y)) {
                (RestKind::List((xe, xt)), RestKind::List((ye, yt))) => {
                    stack.push(Cmp::Lists((&xe[1..], xt), (&ye[1..], yt), exact));
                    stack.push(Cmp::Terms(&xe[0], &ye[0], exact));
                    Ordering::Equal
                }
                (RestKind::Nil, RestKind::Nil) => Ordering::Equal,
                (RestKind::Other(p), RestKind::Other(q)) => {
                    stack.push(Cmp::Terms(p, q, exact));
                    Ordering::Equal
                }
                // a non-empty list (rank 9) against [] (rank 8) or a
                // term of another type
                (p, q) => {
                    let rank = |k: &RestKind<'_>| match k {
                        RestKind::List(_) => 9,
                        RestKind::Nil => 8,
                        RestKind::Other(t) => t.type_rank(),
                    };
                    rank(&p).cmp(&rank(&q))
                }
            },
            Cmp::Terms(a, b, exact) => {
                let (ra, rb) = (a.type_rank(), b.type_rank());
                if ra != rb {
                    return ra.cmp(&rb);
                }
                match (a, b) {
                    (Term::Tuple(x), Term::Tuple(y)) => {
                        let o = x.len().cmp(&y.len());
                        if o == Ordering::Equal {
                            for (p, q) in x.iter().zip(y).rev() {
                                stack.push(Cmp::Terms(p, q, exact));
                            }
                        }
                        o
                    }
                    (Term::Map(x), Term::Map(y)) => {
                        let o = x.len().cmp(&y.len());
                        if o == Ordering::Equal {
                            // keys (in map-key order) first, then values
                            let xs = x.sorted_entries();
                            let ys = y.sorted_entries();
                            for (p, q) in xs.iter().zip(&ys).rev() {
                                stack.push(Cmp::Terms(&p.1, &q.1, exact));
                            }
                            for (p, q) in xs.iter().zip(&ys).rev() {
                                stack.push(Cmp::Terms(&p.0, &q.0, true));
                            }
                        }
                        o
                    }
                    (Term::List(_) | Term::ImproperList { .. }, _) => {
                        stack.push(Cmp::Lists(list_rest(a), list_rest(b), exact));
                        Ordering::Equal
                    }
                    (Term::Fun(x), Term::Fun(y)) => {
                        let o = x
                            .module
                            .as_str()
                            .cmp(y.module.as_str())
                            .then(x.old_index.cmp(&y.old_index))
                            .then(x.old_uniq.cmp(&y.old_uniq));
                        if o == Ordering::Equal {
                            // free variables pairwise, then their
                            // counts, then the rest (only to make Equal
                            // mean identical)
                            stack.push(Cmp::FunRest(x, y));
                            stack.push(Cmp::Then(x.free_vars.len().cmp(&y.free_vars.len())));
                            for (p, q) in x.free_vars.iter().zip(&y.free_vars).rev() {
                                stack.push(Cmp::Terms(p, q, exact));
                            }
                        }
                        o
                    }
                    _ => scalar_cmp(a, b, exact),
                }
            }
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

fn bits_of(t: &Term) -> (&[u8], u8) {
    match t {
        Term::Binary(b) => (b, 8),
        Term::BitBinary { bytes, bits } => (bytes, *bits),
        _ => (&[], 8),
    }
}

/// Structural equality (`=:=`: `1 == 1.0` is false; maps compare
/// regardless of their entries' order). Recurses over the first
/// [`crate::RECURSION_DEPTH`] levels and continues from an explicit stack.
impl PartialEq for Term {
    fn eq(&self, other: &Term) -> bool {
        eq_at(self, other, 0)
    }
}

/// Same variant, same fields apart from elements, same element count.
fn head_eq(a: &Term, b: &Term) -> bool {
    use Term::*;
    match (a, b) {
        (Integer(x), Integer(y)) => x == y,
        (BigInt(x), BigInt(y)) => x == y,
        (Float(x), Float(y)) => x == y,
        (Atom(x), Atom(y)) => x == y,
        (Binary(x), Binary(y)) => x == y,
        (
            BitBinary {
                bits: t1,
                bytes: b1,
            },
            BitBinary {
                bits: t2,
                bytes: b2,
            },
        ) => t1 == t2 && b1 == b2,
        (Tuple(x), Tuple(y)) | (List(x), List(y)) => x.len() == y.len(),
        (ImproperList { elems: x, .. }, ImproperList { elems: y, .. }) => x.len() == y.len(),
        (Map(x), Map(y)) => x.len() == y.len(),
        (Pid(x), Pid(y)) => x == y,
        (Port(x), Port(y)) => x == y,
        (Reference(x), Reference(y)) => x == y,
        (
            Export {
                arity: a1,
                module: m1,
                function: f1,
            },
            Export {
                arity: a2,
                module: m2,
                function: f2,
            },
        ) => a1 == a2 && m1 == m2 && f1 == f2,
        (Fun(x), Fun(y)) => {
            x.arity == y.arity
                && x.uniq == y.uniq
                && x.index == y.index
                && x.module == y.module
                && x.old_index == y.old_index
                && x.old_uniq == y.old_uniq
                && x.pid == y.pid
                && x.free_vars.len() == y.free_vars.len()
        }
        _ => false,
    }
}

/// The element pairs two containers with equal heads compare by: maps'
/// entries in key order, everything else in [`element`] order.
fn eq_children<'t>(a: &'t Term, b: &'t Term, out: &mut Vec<(&'t Term, &'t Term)>) {
    if let (Term::Map(x), Term::Map(y)) = (a, b) {
        for (p, q) in x.sorted_entries().into_iter().zip(y.sorted_entries()) {
            out.push((&p.0, &q.0));
            out.push((&p.1, &q.1));
        }
        return;
    }
    let n = element_count(a);
    out.extend((0..n).filter_map(|i| Some((element(a, i)?, element(b, i)?))));
}

fn eq_at(a: &Term, b: &Term, depth: usize) -> bool {
    if !head_eq(a, b) {
        return false;
    }
    if !a.has_elements() {
        return true;
    }
    if depth >= crate::decode::RECURSION_DEPTH {
        return eq_deep(a, b);
    }
    match (a, b) {
        (Term::Tuple(x), Term::Tuple(y)) | (Term::List(x), Term::List(y)) => {
            x.iter().zip(y).all(|(p, q)| eq_at(p, q, depth + 1))
        }
        _ => {
            let mut pairs = Vec::new();
            eq_children(a, b, &mut pairs);
            pairs.into_iter().all(|(p, q)| eq_at(p, q, depth + 1))
        }
    }
}

#[cold]
#[inline(never)]
fn eq_deep(a: &Term, b: &Term) -> bool {
    let mut stack = vec![(a, b)];
    let mut pairs = Vec::new();
    while let Some((a, b)) = stack.pop() {
        if !head_eq(a, b) {
            return false;
        }
        eq_children(a, b, &mut pairs);
        stack.extend(pairs.drain(..).rev());
    }
    true
}

/// Hashes the nodes in pre-order from an explicit stack (any depth).
/// Equal terms hash alike: a map's entries are hashed in key order (the
/// order they are stored in may differ between equal maps), a fun
/// contributes only its identity.
impl Hash for Term {
    fn hash<H: Hasher>(&self, state: &mut H) {
        fn node<H: Hasher>(t: &Term, state: &mut H) {
            std::mem::discriminant(t).hash(state);
            match t {
                Term::Integer(i) => i.hash(state),
                Term::BigInt(b) => b.hash(state),
                // 0.0 == -0.0, so they must hash alike
                Term::Float(f) => (if *f == 0.0 { 0.0f64 } else { *f }).to_bits().hash(state),
                Term::Atom(a) => a.hash(state),
                Term::Binary(b) => b.hash(state),
                Term::BitBinary { bytes, bits } => (bytes, bits).hash(state),
                Term::Tuple(v) | Term::List(v) => v.len().hash(state),
                Term::ImproperList { elems, .. } => elems.len().hash(state),
                Term::Map(m) => m.len().hash(state),
                Term::Pid(p) => p.hash(state),
                Term::Port(p) => p.hash(state),
                Term::Reference(r) => r.hash(state),
                Term::Export {
                    module,
                    function,
                    arity,
                } => (module, function, arity).hash(state),
                Term::Fun(f) => (&f.module, f.index, f.uniq).hash(state),
            }
        }
        if !self.has_elements() {
            return node(self, state);
        }
        let mut stack = vec![self];
        while let Some(t) = stack.pop() {
            node(t, state);
            match t {
                Term::Tuple(v) | Term::List(v) => stack.extend(v.iter().rev()),
                Term::ImproperList { elems, tail } => {
                    stack.push(tail);
                    stack.extend(elems.iter().rev());
                }
                // in key order: equal maps may store entries in
                // different orders
                Term::Map(m) => {
                    for (k, v) in m.sorted_entries().into_iter().rev() {
                        stack.push(v);
                        stack.push(k);
                    }
                }
                _ => {}
            }
        }
    }
}

impl From<i64> for Term {
    fn from(i: i64) -> Term {
        Term::Integer(i)
    }
}
impl From<i32> for Term {
    fn from(i: i32) -> Term {
        Term::Integer(i.into())
    }
}
impl From<u32> for Term {
    fn from(i: u32) -> Term {
        Term::Integer(i.into())
    }
}
impl From<u64> for Term {
    fn from(i: u64) -> Term {
        Term::from_bigint(BigInt::from(i))
    }
}
impl From<f64> for Term {
    fn from(f: f64) -> Term {
        Term::Float(f)
    }
}
impl From<bool> for Term {
    fn from(b: bool) -> Term {
        Term::boolean(b)
    }
}
impl From<Atom> for Term {
    fn from(a: Atom) -> Term {
        Term::Atom(a)
    }
}
/// A Rust string becomes a binary (the Elixir convention).
impl From<&str> for Term {
    fn from(s: &str) -> Term {
        Term::Binary(crate::Binary::from_slice(s.as_bytes()))
    }
}
/// A Rust string becomes a binary (the Elixir convention).
impl From<String> for Term {
    fn from(s: String) -> Term {
        Term::Binary(s.into_bytes().into())
    }
}
impl From<Vec<u8>> for Term {
    fn from(b: Vec<u8>) -> Term {
        Term::Binary(b.into())
    }
}
impl From<BigInt> for Term {
    fn from(b: BigInt) -> Term {
        Term::from_bigint(b)
    }
}
impl From<Pid> for Term {
    fn from(p: Pid) -> Term {
        Term::Pid(p)
    }
}
impl From<Port> for Term {
    fn from(p: Port) -> Term {
        Term::Port(p)
    }
}
impl From<Reference> for Term {
    fn from(r: Reference) -> Term {
        Term::Reference(Box::new(r))
    }
}
impl From<Map> for Term {
    fn from(m: Map) -> Term {
        Term::Map(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_finds_every_single_byte_difference() {
        for n in 0..=40usize {
            let a: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37)).collect();
            assert!(same(&a, &a.clone()));
            for i in 0..n {
                let mut b = a.clone();
                b[i] ^= 0x80;
                assert!(!same(&a, &b), "length {n}, byte {i}");
            }
            assert!(!same(&a, &a[..n.saturating_sub(1)]) || n == 0);
        }
    }

    fn hash_of(a: &Atom) -> u64 {
        use std::collections::hash_map::DefaultHasher;
        let mut h = DefaultHasher::new();
        a.hash(&mut h);
        h.finish()
    }

    /// Texts around the inline limit keep their text, take the form their
    /// length says, and compare, hash and order by text alone.
    #[test]
    fn atoms_at_the_inline_boundary() {
        assert_eq!(std::mem::size_of::<Atom>(), 16);
        let mut all = Vec::new();
        for n in 0..=Atom::INLINE + 2 {
            for text in ["x".repeat(n), "é".repeat(n / 2) + &"y".repeat(n % 2)] {
                assert_eq!(text.len(), n);
                let a = Atom::new(&text);
                assert_eq!(a.as_str(), text, "length {n}");
                assert_eq!(a.is_inline(), n <= Atom::INLINE, "length {n}");
                assert_eq!(a.text_bytes(), text.as_bytes());
                assert!(a.text_is(text.as_bytes()));
                assert!(!a.text_is(format!("{text}z").as_bytes()));
                assert_eq!(a.is_short_ascii(), text.is_ascii());
                let b = a.clone();
                assert_eq!(a, b);
                assert_eq!(hash_of(&a), hash_of(&Atom::new(&text)));
                assert_eq!(a.cmp(&b), Ordering::Equal);
                all.push((text, a));
            }
        }
        // every pair, inline against shared included: equal exactly when
        // the texts are, ordered as the texts are
        for (s, a) in &all {
            for (t, b) in &all {
                assert_eq!(a == b, s == t, "{s:?} {t:?}");
                assert_eq!(a.cmp(b), s.as_str().cmp(t.as_str()), "{s:?} {t:?}");
                if s == t {
                    assert_eq!(hash_of(a), hash_of(b));
                }
            }
        }
    }

    /// Texts that differ in one byte at any place, in either form, differ.
    #[test]
    fn atoms_differing_in_one_byte_differ() {
        for n in 1..=Atom::INLINE + 2 {
            let base: String = (0..n).map(|i| (b'a' + i as u8) as char).collect();
            let a = Atom::new(&base);
            for i in 0..n {
                let mut t = base.clone().into_bytes();
                t[i] = b'Z';
                let t = String::from_utf8(t).expect("ASCII");
                let b = Atom::new(&t);
                assert_ne!(a, b, "{base} {t}");
                assert!(!a.text_is(t.as_bytes()));
            }
        }
    }

    /// The decoder's fast path takes short ASCII bytes only, and makes
    /// the same atom as `Atom::new`.
    #[test]
    fn inline_ascii_matches_new() {
        for text in [
            "",
            "a",
            "ok",
            "undefined",
            "nonode@nohost",
            "fourteen_bytes",
        ] {
            let a = Atom::inline_ascii(text.as_bytes()).expect("short ASCII");
            assert_eq!(a, Atom::new(text));
            assert_eq!(a.as_str(), text);
        }
        assert!(Atom::inline_ascii(b"fifteen_bytes_x").is_none());
        assert!(Atom::inline_ascii("é".as_bytes()).is_none());
        assert!(Atom::inline_ascii(&[0xff]).is_none());
        // UTF-8 and encoding: the encoder's inline path and its general
        // path write the same atoms
        for text in [
            "",
            "ok",
            "thirteen_byte",
            "fourteen_bytes",
            "fifteen_bytes_x",
            "héllo",
            "原子",
        ] {
            let t = Term::atom(text);
            let back = crate::decode(&crate::encode(&t)).expect("round trip");
            assert_eq!(back, t, "{text:?}");
            assert_eq!(back.as_atom().map(Atom::as_str), Some(text));
        }
    }

    /// The layout the encoder's per-node cost depends on (see [`Term`]):
    /// a byte tag at offset 0 and 40 bytes in all.
    #[test]
    fn term_is_forty_bytes_with_a_leading_tag() {
        assert_eq!(std::mem::size_of::<Term>(), 40);
        // SAFETY: `repr(u8)` puts the tag, an initialised byte, at offset 0
        let tag = |t: &Term| unsafe { *(t as *const Term as *const u8) };
        assert_ne!(tag(&Term::Integer(7)), tag(&Term::atom("a")));
        assert_eq!(tag(&Term::Integer(7)), tag(&Term::Integer(-1)));
    }

    #[test]
    fn maps_from_many_entries_keep_the_last_duplicate() {
        let n = 100_000i64;
        let m: Map = (0..n)
            .map(|i| (Term::Integer(i % 50_000), Term::Integer(i)))
            .collect();
        assert_eq!(m.len(), 50_000);
        assert_eq!(m.get(&Term::Integer(7)), Some(&Term::Integer(50_007)));
        // small maps: sorted in map-key order, integers before floats
        let m: Map = [
            (Term::Float(0.5), Term::atom("f")),
            (Term::atom("a"), Term::Integer(1)),
            (Term::Integer(1), Term::atom("i")),
            (Term::atom("a"), Term::Integer(2)),
        ]
        .into_iter()
        .collect();
        let keys: Vec<String> = m.entries().iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, ["1", "0.5", "a"]);
        assert_eq!(m.get_atom("a"), Some(&Term::Integer(2)));
    }
}
