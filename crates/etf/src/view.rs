//! The lazy borrowed view: [`decode_view`] checks a whole term in one pass
//! that allocates nothing and returns a [`TermView`], a slice of the input.
//! Tuples, lists and maps are read element by element while iterating; no
//! tree is built.

use std::borrow::Cow;

use crate::decode::{term_ref_body, validate_body, AtomRef, TermRef};
use crate::decode::{DecodeOptions, DEFAULT_MAX_DEPTH};
use crate::error::{DecodeError, DecodeErrorKind as K};
use crate::tags::*;
use crate::term::Term;

/// A validated term inside the input buffer: a slice that starts at the
/// term's tag byte (and runs to the end of the input). `Copy`, 16 bytes.
///
/// Made by [`decode_view`]; the whole term was checked then (with the same
/// checks and errors as [`crate::decode_ref`]), so reading it cannot fail:
/// [`TermView::kind`] decodes only the head of the term and containers are
/// iterators over element views.
#[derive(Clone, Copy)]
pub struct TermView<'a> {
    b: &'a [u8],
}

/// What a [`TermView`] holds. Scalars are decoded; containers are lazy
/// iterators.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ViewKind<'a> {
    /// An integer that fits `i64` (`SMALL_INTEGER_EXT`, `INTEGER_EXT`, or a
    /// bignum of that size).
    Integer(i64),
    /// A float.
    Float(f64),
    /// An atom (borrowed unless it is non-ASCII latin-1 `ATOM_EXT`).
    Atom(AtomRef<'a>),
    /// A binary (borrowed).
    Binary(&'a [u8]),
    /// A proper list of bytes sent as `STRING_EXT`.
    ByteList(&'a [u8]),
    /// A tuple: its elements.
    Tuple(SeqView<'a>),
    /// A list, proper or not: its elements, and [`ListView::tail`]. `[]` is
    /// an empty `List`.
    List(ListView<'a>),
    /// A map: its entries in wire order (keys are not checked for
    /// uniqueness, as with [`crate::decode_ref`]).
    Map(MapView<'a>),
    /// Anything else (big integers, bit binaries, pids, ports, references,
    /// exports, funs), decoded on access by the borrowed decoder.
    Other(TermRef<'a>),
}

/// Decodes a whole buffer (version byte first) into a [`TermView`]: one
/// validation pass with the depth and length checks and the errors of
/// [`crate::decode_ref`] (same kinds, same offsets), and no allocation
/// (apart from pid, port and reference node names in non-ASCII latin-1).
/// Compressed input fails with [`K::CompressedInput`].
pub fn decode_view(input: &[u8]) -> Result<TermView<'_>, DecodeError> {
    let (v, used) = decode_view_prefix(input)?;
    if used != input.len() {
        return Err(DecodeError::new(used, K::TrailingBytes));
    }
    Ok(v)
}

/// Like [`decode_view`] for the term at the start of `input`; returns the
/// view and the bytes used (version byte included).
pub fn decode_view_prefix(input: &[u8]) -> Result<(TermView<'_>, usize), DecodeError> {
    view_prefix(input, DEFAULT_MAX_DEPTH)
}

/// [`decode_view`] with explicit limits ([`DecodeOptions::max_depth`];
/// compressed input is refused whatever the options say).
pub fn decode_view_with<'a>(
    input: &'a [u8],
    opts: &DecodeOptions,
) -> Result<TermView<'a>, DecodeError> {
    let (v, used) = view_prefix(input, opts.max_depth)?;
    if used != input.len() {
        return Err(DecodeError::new(used, K::TrailingBytes));
    }
    Ok(v)
}

fn view_prefix(input: &[u8], max_depth: usize) -> Result<(TermView<'_>, usize), DecodeError> {
    match input.first() {
        None => return Err(DecodeError::new(0, K::Truncated)),
        Some(&VERSION) => {}
        Some(&v) => return Err(DecodeError::new(0, K::BadVersion(v))),
    }
    let body = &input[1..];
    let used =
        validate_body(body, None, max_depth).map_err(|e| DecodeError::new(e.offset + 1, e.kind))?;
    Ok((TermView { b: body }, used + 1))
}

/// `[SMALL_INTEGER_EXT, i]` for every byte: the elements of a
/// `STRING_EXT` list are views into this table.
static SMALL_INTS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [SMALL_INTEGER_EXT, i as u8];
        i += 1;
    }
    t
};

// Readers for validated bytes. Validation guarantees the bytes exist; the
// fallbacks (0, empty) are never taken and only keep these panic-free.
#[inline(always)]
fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}
#[inline(always)]
fn be16(b: &[u8], i: usize) -> usize {
    match b.get(i..i + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]) as usize,
        _ => 0,
    }
}
#[inline(always)]
fn be32(b: &[u8], i: usize) -> u32 {
    match b.get(i..i + 4) {
        Some(&[x, y, z, w]) => u32::from_be_bytes([x, y, z, w]),
        _ => 0,
    }
}
#[inline(always)]
fn sub(b: &[u8], from: usize, len: usize) -> &[u8] {
    b.get(from..from + len).unwrap_or(&[])
}
#[inline(always)]
fn rest(b: &[u8], from: usize) -> &[u8] {
    b.get(from..).unwrap_or(&[])
}

/// Encoded length of the fixed-size tags (0 for the others), so stepping
/// over the most common scalars is a table load and a predictable branch
/// instead of an indirect jump.
static FIXED_LEN: [u8; 256] = {
    let mut t = [0u8; 256];
    t[SMALL_INTEGER_EXT as usize] = 2;
    t[INTEGER_EXT as usize] = 5;
    t[NEW_FLOAT_EXT as usize] = 9;
    t[NIL_EXT as usize] = 1;
    t
};

/// Length in bytes of the validated term at the start of `b`.
#[inline]
fn term_len(b: &[u8]) -> usize {
    let tag = at(b, 0);
    let fixed = FIXED_LEN[tag as usize];
    if fixed != 0 {
        return fixed as usize;
    }
    match tag {
        ATOM_EXT => 3 + be16(b, 1),
        SMALL_ATOM_UTF8_EXT => 2 + at(b, 1) as usize,
        BINARY_EXT => 5 + be32(b, 1) as usize,
        _ => var_len(b),
    }
}

/// Length of a term that is not a common scalar: a container is scanned
/// in pre-order with a count of the nodes still to step over (each head
/// adds its children), so any nesting depth costs no stack.
#[inline(never)]
fn var_len(b: &[u8]) -> usize {
    let mut p = 0;
    let mut pending = 1usize;
    while pending > 0 {
        pending -= 1;
        let t = rest(b, p);
        let fixed = FIXED_LEN[at(t, 0) as usize];
        if fixed != 0 {
            p += fixed as usize;
            continue;
        }
        p += match at(t, 0) {
            SMALL_ATOM_UTF8_EXT | SMALL_ATOM_EXT => 2 + at(t, 1) as usize,
            ATOM_UTF8_EXT | ATOM_EXT => 3 + be16(t, 1),
            STRING_EXT => 3 + be16(t, 1),
            BINARY_EXT => 5 + be32(t, 1) as usize,
            SMALL_TUPLE_EXT => {
                pending += at(t, 1) as usize;
                2
            }
            LARGE_TUPLE_EXT => {
                pending += be32(t, 1) as usize;
                5
            }
            MAP_EXT => {
                pending += 2 * be32(t, 1) as usize;
                5
            }
            LIST_EXT => {
                // the elements, then the tail
                pending += be32(t, 1) as usize + 1;
                5
            }
            // the size field covers the whole fun, free variables too
            NEW_FUN_EXT => 1 + be32(t, 1) as usize,
            _ => rare_len(t),
        };
    }
    p
}

/// Length of a validated scalar with a rare tag (big integers, pids,
/// references, ...): the checked scanner, which does not nest for them.
#[inline(never)]
fn rare_len(b: &[u8]) -> usize {
    // validated already: the checked scanner cannot fail here
    validate_body(b, None, DEFAULT_MAX_DEPTH).unwrap_or(b.len())
}

impl<'a> TermView<'a> {
    #[inline]
    fn at(b: &'a [u8]) -> TermView<'a> {
        TermView { b }
    }

    /// The term's head, decoded. Containers come back as iterators.
    #[inline]
    pub fn kind(&self) -> ViewKind<'a> {
        let b = self.b;
        match at(b, 0) {
            SMALL_INTEGER_EXT => ViewKind::Integer(at(b, 1) as i64),
            INTEGER_EXT => ViewKind::Integer(be32(b, 1) as i32 as i64),
            NEW_FLOAT_EXT => {
                let hi = be32(b, 1) as u64;
                let lo = be32(b, 5) as u64;
                ViewKind::Float(f64::from_bits(hi << 32 | lo))
            }
            SMALL_ATOM_UTF8_EXT => {
                ViewKind::Atom(AtomRef(Cow::Borrowed(utf8(sub(b, 2, at(b, 1) as usize)))))
            }
            ATOM_UTF8_EXT => ViewKind::Atom(AtomRef(Cow::Borrowed(utf8(sub(b, 3, be16(b, 1)))))),
            SMALL_ATOM_EXT => ViewKind::Atom(latin1(sub(b, 2, at(b, 1) as usize))),
            ATOM_EXT => ViewKind::Atom(latin1(sub(b, 3, be16(b, 1)))),
            BINARY_EXT => ViewKind::Binary(sub(b, 5, be32(b, 1) as usize)),
            STRING_EXT => ViewKind::ByteList(sub(b, 3, be16(b, 1))),
            NIL_EXT => ViewKind::List(ListView::empty()),
            SMALL_TUPLE_EXT => ViewKind::Tuple(SeqView {
                b: rest(b, 2),
                n: at(b, 1) as usize,
            }),
            LARGE_TUPLE_EXT => ViewKind::Tuple(SeqView {
                b: rest(b, 5),
                n: be32(b, 1) as usize,
            }),
            MAP_EXT => ViewKind::Map(MapView {
                b: rest(b, 5),
                n: be32(b, 1) as usize,
            }),
            LIST_EXT => ViewKind::List(ListView {
                b: rest(b, 5),
                n: be32(b, 1) as usize,
                bytes: &[],
                tail: None,
                done: false,
            }),
            _ => match self.to_term_ref() {
                TermRef::Integer(i) => ViewKind::Integer(i),
                TermRef::Float(f) => ViewKind::Float(f),
                TermRef::Atom(ref mut a) => {
                    ViewKind::Atom(std::mem::replace(a, AtomRef(Cow::Borrowed(""))))
                }
                TermRef::Binary(b) => ViewKind::Binary(b),
                t => ViewKind::Other(t),
            },
        }
    }

    /// The integer, if this is one that fits `i64`.
    #[inline]
    pub fn as_i64(&self) -> Option<i64> {
        match self.kind() {
            ViewKind::Integer(i) => Some(i),
            _ => None,
        }
    }

    /// The atom's text, if this is an atom stored as UTF-8 or ASCII (a
    /// non-ASCII latin-1 `ATOM_EXT` needs [`TermView::kind`]).
    #[inline]
    pub fn as_atom(&self) -> Option<&'a str> {
        match self.kind() {
            ViewKind::Atom(AtomRef(Cow::Borrowed(s))) => Some(s),
            _ => None,
        }
    }

    /// The binary's bytes, if this is a binary.
    #[inline]
    pub fn as_binary(&self) -> Option<&'a [u8]> {
        match at(self.b, 0) {
            BINARY_EXT => Some(sub(self.b, 5, be32(self.b, 1) as usize)),
            _ => None,
        }
    }

    /// The term's encoding as it was in the input (tag first, no version
    /// byte): re-sending an unchanged term is a copy of these bytes (see
    /// [`TermView::encode_into`]).
    pub fn encoded(&self) -> &'a [u8] {
        sub(self.b, 0, term_len(self.b))
    }

    /// A pre-order reader over this term: each step reads one node and
    /// moves past it (see [`Cursor`]). The fastest way to visit every node.
    #[inline]
    pub fn cursor(&self) -> Cursor<'a> {
        Cursor {
            b: self.b,
            pending: 1,
        }
    }

    /// Appends the version byte and [`TermView::encoded`].
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let e = self.encoded();
        out.reserve(1 + e.len());
        out.push(VERSION);
        out.extend_from_slice(e);
    }

    /// The eager borrowed tree of this term (as [`crate::decode_ref`]).
    pub fn to_term_ref(&self) -> TermRef<'a> {
        // validated already: decoding cannot fail
        term_ref_body(self.b).unwrap_or(TermRef::List(Vec::new()))
    }

    /// An owned [`Term`] (as [`TermRef::to_owned`]).
    pub fn to_owned(&self) -> Term {
        self.to_term_ref().to_owned()
    }
}

impl std::fmt::Debug for TermView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TermView")
            .field(&self.to_term_ref())
            .finish()
    }
}

/// `b.is_ascii()` for the short texts of atoms: up to 16 bytes with two
/// (overlapping) word loads instead of a byte loop.
#[inline(always)]
fn is_ascii(b: &[u8]) -> bool {
    const HI: u64 = 0x8080_8080_8080_8080;
    let n = b.len();
    let word = |i: usize| match b.get(i..i + 8) {
        Some(&[a, c, d, e, f, g, h, k]) => u64::from_le_bytes([a, c, d, e, f, g, h, k]),
        _ => HI,
    };
    let half = |i: usize| match b.get(i..i + 4) {
        Some(&[a, c, d, e]) => u32::from_le_bytes([a, c, d, e]) as u64,
        _ => HI,
    };
    match n {
        8..=16 => (word(0) | word(n - 8)) & HI == 0,
        4..=7 => (half(0) | half(n - 4)) & HI == 0,
        0..=3 => b.iter().all(|c| *c < 0x80),
        _ => b.is_ascii(),
    }
}

/// The text of a UTF-8 atom of a validated view.
#[inline(always)]
fn utf8(b: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(b).is_ok());
    // SAFETY: a `TermView` is only made (by `decode_view`, and by the
    // iterators stepping over validated elements) at the tag of a term that
    // `validate_body` accepted, and a `Cursor` only reads at such tags too
    // (it starts at a view and moves past one whole head or term per step,
    // so it is always at the next term of the pre-order); `validate_body`
    // checks the bytes of every UTF-8 atom with `str::from_utf8`
    // (`Decoder::atom_body_check`); `b` is exactly those bytes.
    unsafe { std::str::from_utf8_unchecked(b) }
}

#[inline(always)]
fn latin1(b: &[u8]) -> AtomRef<'_> {
    if is_ascii(b) {
        // SAFETY: ASCII bytes are valid UTF-8 (checked on the line above).
        AtomRef(Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(b) }))
    } else {
        AtomRef(Cow::Owned(b.iter().map(|&c| c as char).collect()))
    }
}

/// The elements of a tuple (or a fun's free variables), read lazily.
#[derive(Debug, Clone)]
pub struct SeqView<'a> {
    b: &'a [u8],
    n: usize,
}

impl<'a> Iterator for SeqView<'a> {
    type Item = TermView<'a>;
    #[inline]
    fn next(&mut self) -> Option<TermView<'a>> {
        if self.n == 0 {
            return None;
        }
        self.n -= 1;
        let v = TermView::at(self.b);
        if self.n > 0 {
            self.b = rest(self.b, term_len(self.b));
        }
        Some(v)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.n, Some(self.n))
    }
}

impl ExactSizeIterator for SeqView<'_> {}

/// The entries of a map, in wire order, read lazily.
#[derive(Debug, Clone)]
pub struct MapView<'a> {
    b: &'a [u8],
    n: usize,
}

impl<'a> Iterator for MapView<'a> {
    type Item = (TermView<'a>, TermView<'a>);
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.n == 0 {
            return None;
        }
        self.n -= 1;
        let k = TermView::at(self.b);
        let vb = rest(self.b, term_len(self.b));
        let v = TermView::at(vb);
        if self.n > 0 {
            self.b = rest(vb, term_len(vb));
        }
        Some((k, v))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.n, Some(self.n))
    }
}

impl ExactSizeIterator for MapView<'_> {}

/// The elements of a list, read lazily across `LIST_EXT` chains and
/// `STRING_EXT` tails. After the last element, [`ListView::tail`] gives an
/// improper list's tail.
#[derive(Debug, Clone)]
pub struct ListView<'a> {
    /// Next element of the current `LIST_EXT` segment (or its tail).
    b: &'a [u8],
    /// Elements left in the segment.
    n: usize,
    /// Bytes left of a `STRING_EXT` tail.
    bytes: &'a [u8],
    tail: Option<TermView<'a>>,
    done: bool,
}

impl<'a> ListView<'a> {
    fn empty() -> ListView<'a> {
        ListView {
            b: &[],
            n: 0,
            bytes: &[],
            tail: None,
            done: true,
        }
    }

    /// The tail of an improper list (`None` for a proper list). Walks the
    /// remaining elements of a copy of the iterator, so it costs a pass over
    /// them unless the iterator is already exhausted.
    pub fn tail(&self) -> Option<TermView<'a>> {
        let mut it = self.clone();
        for _ in it.by_ref() {}
        it.tail
    }

    /// True when no element is left.
    pub fn is_empty(&self) -> bool {
        self.clone().next().is_none()
    }
}

impl<'a> Iterator for ListView<'a> {
    type Item = TermView<'a>;
    #[inline]
    fn next(&mut self) -> Option<TermView<'a>> {
        loop {
            if self.n > 0 {
                self.n -= 1;
                let v = TermView::at(self.b);
                self.b = rest(self.b, term_len(self.b));
                return Some(v);
            }
            if let Some((&x, more)) = self.bytes.split_first() {
                self.bytes = more;
                return Some(TermView::at(&SMALL_INTS[x as usize]));
            }
            if self.done {
                return None;
            }
            // the segment ended: what follows is its tail
            match at(self.b, 0) {
                LIST_EXT => {
                    self.n = be32(self.b, 1) as usize;
                    self.b = rest(self.b, 5);
                }
                STRING_EXT => {
                    self.bytes = sub(self.b, 3, be16(self.b, 1));
                    self.done = true;
                }
                NIL_EXT => self.done = true,
                _ => {
                    self.tail = Some(TermView::at(self.b));
                    self.done = true;
                }
            }
        }
    }
}

/// One node of a term, as a [`Cursor`] reads it. `Copy` and borrowed:
/// reading a node never allocates.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Visit<'a> {
    /// An integer that fits `i64`.
    Integer(i64),
    /// A float.
    Float(f64),
    /// An atom stored as UTF-8, or as latin-1 made only of ASCII (the text
    /// is the same).
    Atom(&'a str),
    /// An atom stored as latin-1 (`ATOM_EXT`, `SMALL_ATOM_EXT`) with
    /// characters above ASCII: its latin-1 bytes (each byte is the code
    /// point). OTP 26 and later never write these; OTP 25's
    /// `term_to_binary/1` does.
    Latin1Atom(&'a [u8]),
    /// A binary (borrowed).
    Binary(&'a [u8]),
    /// A list of bytes sent as `STRING_EXT` (a whole list or a list tail).
    ByteList(&'a [u8]),
    /// `[]`.
    Nil,
    /// A tuple head: its `n` elements follow.
    Tuple(usize),
    /// A `LIST_EXT` head: its `n` elements follow, then its tail, which is
    /// [`Visit::Nil`] for a proper list, a [`Visit::ByteList`] or another
    /// [`Visit::List`] when the list continues in another segment (as the
    /// sender wrote it), or any other term for an improper list.
    List(usize),
    /// A map head: its `n` entries follow, key then value.
    Map(usize),
    /// Anything else (big integers, bit binaries, pids, ports, references,
    /// exports, funs), read whole: decode it with [`TermView::kind`] or
    /// [`TermView::to_term_ref`].
    Other(TermView<'a>),
}

/// A pre-order reader over a validated term, made by
/// [`TermView::cursor`]: an iterator of [`Visit`]s in which every step
/// reads one node's head and moves past it, so visiting every node reads
/// each byte once (the element iterators of [`TermView::kind`] step over
/// each element once more to find the next one). A container's head says
/// how many nodes follow as its children; the iterator ends after the
/// last node of the term. [`Cursor::skip_term`] moves past a whole
/// subterm.
///
/// ```
/// use erlkube_etf::{decode_view, encode, parse, Cursor, Visit};
/// fn sum(c: &mut Cursor<'_>) -> i64 {
///     match c.next() {
///         Some(Visit::Integer(i)) => i,
///         Some(Visit::Tuple(n)) => (0..n).map(|_| sum(c)).sum(),
///         // elements, then the tail
///         Some(Visit::List(n)) => (0..=n).map(|_| sum(c)).sum(),
///         Some(Visit::Map(n)) => (0..2 * n).map(|_| sum(c)).sum(),
///         _ => 0,
///     }
/// }
/// let bytes = encode(&parse("[{1, a}, {2, #{k => 3}}, 300]").unwrap());
/// let view = decode_view(&bytes).unwrap();
/// assert_eq!(sum(&mut view.cursor()), 306);
/// ```
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    /// From the next node's tag on.
    b: &'a [u8],
    /// Nodes left to read.
    pending: usize,
}

impl<'a> Cursor<'a> {
    /// The next node as a whole term, without moving.
    #[inline]
    pub fn peek(&self) -> Option<TermView<'a>> {
        (self.pending > 0).then_some(TermView::at(self.b))
    }

    /// Moves past the next node and everything under it; returns it.
    #[inline]
    pub fn skip_term(&mut self) -> Option<TermView<'a>> {
        if self.pending == 0 {
            return None;
        }
        self.pending -= 1;
        let v = TermView::at(self.b);
        self.b = rest(self.b, term_len(self.b));
        Some(v)
    }

    /// Nodes left to read (children announced by the heads read so far,
    /// counted without their own children).
    #[inline]
    pub fn pending(&self) -> usize {
        self.pending
    }
}

impl<'a> Iterator for Cursor<'a> {
    type Item = Visit<'a>;

    #[inline(always)]
    fn next(&mut self) -> Option<Visit<'a>> {
        if self.pending == 0 {
            return None;
        }
        self.pending -= 1;
        let b = self.b;
        // validated input: the counts below are elements that exist, so
        // `pending` stays below the input length
        let (visit, len) = match at(b, 0) {
            SMALL_INTEGER_EXT => (Visit::Integer(at(b, 1) as i64), 2),
            INTEGER_EXT => (Visit::Integer(be32(b, 1) as i32 as i64), 5),
            NEW_FLOAT_EXT => {
                let hi = be32(b, 1) as u64;
                let lo = be32(b, 5) as u64;
                (Visit::Float(f64::from_bits(hi << 32 | lo)), 9)
            }
            SMALL_ATOM_UTF8_EXT => {
                let n = at(b, 1) as usize;
                (Visit::Atom(utf8(sub(b, 2, n))), 2 + n)
            }
            ATOM_UTF8_EXT => {
                let n = be16(b, 1);
                (Visit::Atom(utf8(sub(b, 3, n))), 3 + n)
            }
            SMALL_ATOM_EXT => {
                let n = at(b, 1) as usize;
                (latin1_visit(sub(b, 2, n)), 2 + n)
            }
            ATOM_EXT => {
                let n = be16(b, 1);
                (latin1_visit(sub(b, 3, n)), 3 + n)
            }
            BINARY_EXT => {
                let n = be32(b, 1) as usize;
                (Visit::Binary(sub(b, 5, n)), 5 + n)
            }
            STRING_EXT => {
                let n = be16(b, 1);
                (Visit::ByteList(sub(b, 3, n)), 3 + n)
            }
            NIL_EXT => (Visit::Nil, 1),
            SMALL_TUPLE_EXT => {
                let n = at(b, 1) as usize;
                self.pending += n;
                (Visit::Tuple(n), 2)
            }
            LARGE_TUPLE_EXT => {
                let n = be32(b, 1) as usize;
                self.pending += n;
                (Visit::Tuple(n), 5)
            }
            MAP_EXT => {
                let n = be32(b, 1) as usize;
                self.pending += 2 * n;
                (Visit::Map(n), 5)
            }
            LIST_EXT => {
                let n = be32(b, 1) as usize;
                self.pending += n + 1;
                (Visit::List(n), 5)
            }
            _ => (rare_visit(b), term_len(b)),
        };
        self.b = rest(b, len);
        Some(visit)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.pending, None)
    }
}

/// A latin-1 atom's visit: [`Visit::Atom`] when it is ASCII.
#[inline(always)]
fn latin1_visit(b: &[u8]) -> Visit<'_> {
    if is_ascii(b) {
        // SAFETY: ASCII bytes are valid UTF-8 (checked on the line above).
        Visit::Atom(unsafe { std::str::from_utf8_unchecked(b) })
    } else {
        Visit::Latin1Atom(b)
    }
}

/// The visit of a rare tag (`FLOAT_EXT`, big integers, the rest).
#[inline(never)]
fn rare_visit(b: &[u8]) -> Visit<'_> {
    let v = TermView::at(b);
    match v.to_term_ref() {
        TermRef::Integer(i) => Visit::Integer(i),
        TermRef::Float(f) => Visit::Float(f),
        _ => Visit::Other(v),
    }
}
