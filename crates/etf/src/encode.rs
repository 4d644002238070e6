//! The encoder: [`Term`] → bytes, as `erlang:term_to_binary/1,2` writes them.

use std::io::Write;
use std::mem::MaybeUninit;

use crate::tags::*;
use crate::term::{Atom, BigInt, Fun, Map, Pid, Term};

/// Encoder options.
///
/// The default matches OTP 25's `term_to_binary/1`: `minor_version` 1
/// (latin-1 atoms as `ATOM_EXT`, others as UTF-8), no compression. The
/// distribution and OTP 26+ use `minor_version` 2 (UTF-8 atoms only):
/// [`EncodeOptions::utf8_atoms`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// 1: atoms whose characters are all latin-1 use `ATOM_EXT` (tag 100);
    /// 2: every atom uses `SMALL_ATOM_UTF8_EXT`/`ATOM_UTF8_EXT`. (0 is
    /// treated as 1: `FLOAT_EXT` is never written.)
    pub minor_version: u8,
    /// `Some(level)` (0..=9) wraps the term in `COMPRESSED` zlib data, as
    /// `term_to_binary(T, [{compressed, Level}])`; like the BEAM, the plain
    /// encoding is kept when compression does not make it smaller.
    pub compression: Option<u32>,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            minor_version: 1,
            compression: None,
        }
    }
}

impl EncodeOptions {
    /// `minor_version` 2, no compression: the distribution's encoding.
    pub fn utf8_atoms() -> Self {
        EncodeOptions {
            minor_version: 2,
            compression: None,
        }
    }
}

/// Encodes with the default options (version byte first).
///
/// ```
/// use erlkube_etf::{decode, encode, Term};
/// let t = Term::tuple(vec![Term::atom("ok"), Term::from(-3i64)]);
/// let bytes = encode(&t); // term_to_binary({ok, -3})
/// assert_eq!(bytes[0], 131);
/// assert_eq!(decode(&bytes).unwrap(), t);
/// ```
pub fn encode(term: &Term) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_into(term, &mut out);
    out
}

/// Appends the encoding (version byte first) with the default options.
#[inline]
pub fn encode_into(term: &Term, out: &mut Vec<u8>) {
    run(term, false, true, out);
}

/// Appends the encoding (version byte first) with explicit options.
pub fn encode_with(term: &Term, opts: &EncodeOptions, out: &mut Vec<u8>) {
    let utf8 = opts.minor_version >= 2;
    match opts.compression {
        None => run(term, utf8, true, out),
        Some(level) => {
            let mut plain = Vec::with_capacity(64);
            run(term, utf8, false, &mut plain);
            let mut z = flate2::write::ZlibEncoder::new(
                Vec::with_capacity(plain.len() / 2 + 16),
                flate2::Compression::new(level.min(9)),
            );
            z.write_all(&plain).expect("writing to a Vec cannot fail");
            let packed = z.finish().expect("writing to a Vec cannot fail");
            out.push(VERSION);
            if 5 + packed.len() < plain.len() && plain.len() <= u32::MAX as usize {
                out.push(COMPRESSED);
                out.extend_from_slice(&(plain.len() as u32).to_be_bytes());
                out.extend_from_slice(&packed);
            } else {
                out.extend_from_slice(&plain);
            }
        }
    }
}

/// Encodes without the version byte (for embedding, e.g. in distribution
/// messages whose control message and payload each lack it).
pub fn encode_body_into(term: &Term, opts: &EncodeOptions, out: &mut Vec<u8>) {
    run(term, opts.minor_version >= 2, false, out)
}

/// An atom from its text: `ATOM_EXT` (latin-1 bytes) when `utf8` is false
/// and every character is latin-1, else `SMALL_ATOM_UTF8_EXT` /
/// `ATOM_UTF8_EXT` (cut at 65535 bytes).
pub(crate) fn atom_text(out: &mut Vec<u8>, s: &str, utf8: bool) {
    let b = s.as_bytes();
    if !utf8 {
        if b.is_ascii() && b.len() <= u16::MAX as usize {
            out.reserve(3 + b.len());
            let [x, y] = (b.len() as u16).to_be_bytes();
            out.extend_from_slice(&[ATOM_EXT, x, y]);
            out.extend_from_slice(b);
            return;
        }
        if s.chars().all(|c| (c as u32) < 256) {
            let n = s.chars().count().min(u16::MAX as usize);
            let [x, y] = (n as u16).to_be_bytes();
            out.extend_from_slice(&[ATOM_EXT, x, y]);
            out.extend(s.chars().take(n).map(|c| c as u32 as u8));
            return;
        }
    }
    if b.len() < 256 {
        out.reserve(2 + b.len());
        out.extend_from_slice(&[SMALL_ATOM_UTF8_EXT, b.len() as u8]);
        out.extend_from_slice(b);
    } else {
        let n = b.len().min(u16::MAX as usize);
        let [x, y] = (n as u16).to_be_bytes();
        out.extend_from_slice(&[ATOM_UTF8_EXT, x, y]);
        out.extend_from_slice(&b[..n]);
    }
}

/// An integer that fits `i64`: the smallest tag.
pub(crate) fn int_i64(out: &mut Vec<u8>, i: i64) {
    if (0..=255).contains(&i) {
        out.extend_from_slice(&[SMALL_INTEGER_EXT, i as u8]);
    } else if i >= i32::MIN as i64 && i <= i32::MAX as i64 {
        let [a, b, c, d] = (i as i32).to_be_bytes();
        out.extend_from_slice(&[INTEGER_EXT, a, b, c, d]);
    } else {
        let mag = i.unsigned_abs().to_le_bytes();
        let n = mag.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        out.extend_from_slice(&[SMALL_BIG_EXT, n as u8, (i < 0) as u8]);
        out.extend_from_slice(&mag[..n]);
    }
}

/// The spare capacity of the output vector, written by [`leaf`].
type Spare = [MaybeUninit<u8>];

/// Copies `src` to the start of `dst`; panics (never UB) if `dst` is
/// shorter. A constant length becomes fixed-size moves, others `memcpy`
/// (what the unstable `MaybeUninit::copy_from_slice` does).
#[inline(always)]
fn fill(dst: &mut Spare, src: &[u8]) {
    let dst = &mut dst[..src.len()];
    // SAFETY: `u8` and `MaybeUninit<u8>` have the same size, alignment and
    // ABI, and every initialised byte is a valid `MaybeUninit<u8>`, so a
    // `&[u8]` may be read as a `&[MaybeUninit<u8>]` of the same length
    // (the cast keeps the length). The shared borrow is only read.
    let src: &[MaybeUninit<u8>] = unsafe { &*(src as *const [u8] as *const [MaybeUninit<u8>]) };
    dst.copy_from_slice(src);
}

/// Copies `src` to the start of `dst`, which must have room for
/// `src.len().max(16)` bytes (panics otherwise). Up to 16 bytes are
/// gathered into one `u128` with (overlapping) fixed-size loads and
/// written with one 16-byte store instead of a call to `memcpy`: atoms
/// and short binaries are the common case. The bytes after `src.len()`
/// are scratch (the next element overwrites them).
#[cfg_attr(not(debug_assertions), inline(always))]
fn copy16(dst: &mut Spare, src: &[u8]) {
    let n = src.len();
    if n > 16 {
        fill(dst, src);
        return;
    }
    let w: u128 = if n >= 8 {
        let lo = u64::from_le_bytes(src[..8].try_into().unwrap_or([0; 8]));
        let hi = u64::from_le_bytes(src[n - 8..].try_into().unwrap_or([0; 8]));
        lo as u128 | (hi as u128) << (8 * (n - 8))
    } else if n >= 4 {
        let lo = u32::from_le_bytes(src[..4].try_into().unwrap_or([0; 4]));
        let hi = u32::from_le_bytes(src[n - 4..].try_into().unwrap_or([0; 4]));
        (lo as u64 | (hi as u64) << (8 * (n - 4))) as u128
    } else if n > 0 {
        src[0] as u128
            | (src[n / 2] as u128) << (8 * (n / 2))
            | (src[n - 1] as u128) << (8 * (n - 1))
    } else {
        0
    };
    fill(dst, &w.to_le_bytes());
}

/// Binaries longer than this are copied by `memcpy` (in [`Enc::node`]),
/// not by [`leaf`].
const LONG: usize = 256;

/// The iovec form ([`crate::EncodedIoVec`]) references binaries (and bit
/// binaries' bytes) of at least this many bytes instead of copying them:
/// the BEAM's threshold for reference-counted (off-heap) binaries, which
/// `erlang:term_to_iovec/1` references.
pub const IOVEC_MIN_BORROWED: usize = 64;

/// Room [`leaf`] asks for before writing any leaf: the largest
/// fixed-size write (16 scratch bytes after a 5-byte binary header).
const ROOM: usize = 32;

/// What [`leaf`] did.
enum Leaf {
    /// Wrote it (and moved the output slice past it).
    Wrote,
    /// A leaf that needs this much room.
    Need(usize),
    /// Not a leaf, or one for the general path ([`Enc::node`]).
    No,
}

/// Moves `d` past the `n` bytes just written.
#[inline(always)]
fn wrote(d: &mut &mut Spare, n: usize) -> Leaf {
    advance(d, n);
    Leaf::Wrote
}

/// Writes a common scalar ("leaf": an integer that fits 64 bits, a float,
/// an atom with an ASCII head, a binary of up to [`LONG`] bytes) at the
/// start of `d`, with one room check, and moves `d` past it. It may write
/// up to 16 scratch bytes past that (the next write overwrites them);
/// what it moves past was written through bounds-checked slices. With
/// `iov` (the iovec form; a constant where it is inlined) binaries of
/// [`IOVEC_MIN_BORROWED`] bytes or more are left to [`Enc::node`], which
/// references them.
#[cfg_attr(not(debug_assertions), inline(always))]
fn leaf<const UTF8: bool>(t: &Term, d: &mut &mut Spare, iov: bool) -> Leaf {
    // one room check covers every fixed-size leaf and every atom or
    // binary of up to 16 bytes (scratch included)
    if d.len() < ROOM {
        return Leaf::Need(ROOM);
    }
    match t {
        Term::Integer(x) => {
            let x = *x;
            if (0..=255).contains(&x) {
                fill(d, &[SMALL_INTEGER_EXT, x as u8]);
                wrote(d, 2)
            } else if x >= i32::MIN as i64 && x <= i32::MAX as i64 {
                let [a, b, c, e] = (x as i32).to_be_bytes();
                fill(d, &[INTEGER_EXT, a, b, c, e]);
                wrote(d, 5)
            } else {
                // SMALL_BIG_EXT: the magnitude's significant bytes, least
                // significant first (4 to 8 of them here)
                let mag = x.unsigned_abs();
                let n = 8 - mag.leading_zeros() as usize / 8;
                let [a, b, c, e, g, h, k, l] = mag.to_le_bytes();
                fill(
                    d,
                    &[
                        SMALL_BIG_EXT,
                        n as u8,
                        (x < 0) as u8,
                        a,
                        b,
                        c,
                        e,
                        g,
                        h,
                        k,
                        l,
                    ],
                );
                wrote(d, 3 + n)
            }
        }
        Term::Float(f) => {
            let [a, b, c, e, g, h, k, l] = f.to_bits().to_be_bytes();
            fill(d, &[NEW_FLOAT_EXT, a, b, c, e, g, h, k, l]);
            wrote(d, 9)
        }
        Term::Atom(atom) => match atom.inline_ascii_parts() {
            // `data` is [len, text…, 0…] (15 bytes): with minor version 2
            // the atom is [SMALL_ATOM_UTF8_EXT, len, text…], else
            // [ATOM_EXT, 0, len, text…] (up to 13 bytes of text here);
            // the zeros after the text are scratch. Other atoms go to
            // `Enc::atom`.
            Some((data, n)) if UTF8 || n <= 13 => {
                let h = if UTF8 { 1 } else { 2 };
                fill(d, &[if UTF8 { SMALL_ATOM_UTF8_EXT } else { ATOM_EXT }, 0]);
                fill(&mut d[h..], data);
                wrote(d, h + 1 + n)
            }
            _ => Leaf::No,
        },
        Term::Binary(b) => {
            if let Some((data, n @ 0..=16)) = b.inline_parts() {
                // short and inline: the header and 16 fixed bytes (the
                // rest is zero padding, overwritten by what follows)
                let [a, c, e, g] = (n as u32).to_be_bytes();
                fill(d, &[BINARY_EXT, a, c, e, g]);
                fill(&mut d[5..], &data[..16]);
                return wrote(d, 5 + n);
            }
            let n = b.len();
            if n > LONG || (iov && n >= IOVEC_MIN_BORROWED) {
                // long binaries: `Vec::extend_from_slice` (memcpy); for
                // the iovec form, binaries it borrows
                Leaf::No
            } else if n > 16 && d.len() < 5 + n {
                Leaf::Need(5 + n)
            } else {
                let [a, c, e, g] = (n as u32).to_be_bytes();
                fill(d, &[BINARY_EXT, a, c, e, g]);
                copy16(&mut d[5..], b);
                wrote(d, 5 + n)
            }
        }
        _ => Leaf::No,
    }
}

/// Writes `v` as `STRING_EXT` at the start of `d` (which has room for
/// `3 + v.len()` bytes, `v.len()` at most 65535) if every element is a
/// byte; false (and nothing counts as written) otherwise.
#[inline]
fn byte_list(v: &[Term], d: &mut Spare) -> bool {
    let [a, b] = (v.len() as u16).to_be_bytes();
    fill(d, &[STRING_EXT, a, b]);
    for (d, e) in d[3..3 + v.len()].iter_mut().zip(v) {
        match e {
            Term::Integer(x @ 0..=255) => *d = MaybeUninit::new(*x as u8),
            _ => return false,
        }
    }
    true
}

/// Writes the leaves of `it` at the start of `d` while they fit (see
/// [`leaf`]), moving `d` past them; `it` is left at the first element not
/// written. True if `it` ended.
#[cfg_attr(not(debug_assertions), inline(always))]
fn run_leaves<'t, const UTF8: bool>(
    it: &mut (impl Iterator<Item = &'t Term> + Clone),
    d: &mut &mut Spare,
    iov: bool,
) -> bool {
    loop {
        let mut next = it.clone();
        let Some(e) = next.next() else {
            return true;
        };
        match leaf::<UTF8>(e, d, iov) {
            Leaf::Wrote => *it = next,
            _ => return false,
        }
    }
}

/// Drops the first `n` bytes of the remaining spare capacity `d` (panics,
/// never UB, if there are fewer).
#[inline(always)]
fn advance(d: &mut &mut Spare, n: usize) {
    let rest = std::mem::take(d);
    *d = &mut rest[n..];
}

/// [`run_leaves`] for map entries: `None` if every key and value was
/// written, else the keys and values left.
#[cfg_attr(not(debug_assertions), inline(always))]
fn run_pairs<'t, const UTF8: bool>(
    mut rest: &'t [(Term, Term)],
    d: &mut &mut Spare,
    iov: bool,
) -> Option<Pairs<'t>> {
    while let Some(((k, v), more)) = rest.split_first() {
        if !matches!(leaf::<UTF8>(k, d, iov), Leaf::Wrote) {
            return Some(Pairs { rest, value: None });
        }
        if !matches!(leaf::<UTF8>(v, d, iov), Leaf::Wrote) {
            return Some(Pairs {
                rest: more,
                value: Some(v),
            });
        }
        rest = more;
    }
    None
}

/// The keys and values of map entries, in turn.
#[derive(Clone)]
struct Pairs<'t> {
    rest: &'t [(Term, Term)],
    value: Option<&'t Term>,
}

impl<'t> Iterator for Pairs<'t> {
    type Item = &'t Term;
    #[inline(always)]
    fn next(&mut self) -> Option<&'t Term> {
        if let Some(v) = self.value.take() {
            return Some(v);
        }
        let ((k, v), rest) = self.rest.split_first()?;
        self.rest = rest;
        self.value = Some(v);
        Some(k)
    }
}

/// What [`Enc::deep_elems`] has left to write.
enum Pending<'t> {
    Term(&'t Term),
    /// The `NIL_EXT` after a proper list's elements.
    Nil,
    /// The size field of a fun, once its free variables are written.
    FunSize {
        size_at: usize,
        refs_at: usize,
    },
}

/// A container header: up to 5 bytes and how many of them count.
type Head = ([u8; 5], usize);

/// The encoder, writing to the caller's `Vec`. Container elements that
/// are common scalars are written by [`leaf`] straight into the vector's
/// spare capacity ([`Enc::elems`]); containers recurse, and rare terms are
/// written by [`Enc::node`] with `Vec` writes.
///
/// `UTF8` is minor version 2 (every atom as UTF-8).
struct Enc<'o, const UTF8: bool, R> {
    out: &'o mut Vec<u8>,
    /// Element loops ([`Enc::elems_packed`]) under way: containers this
    /// deep are written by [`Enc::deep_elems`], without recursion.
    depth: usize,
    /// Where binaries go that are referenced, not copied: nowhere (`()`)
    /// for the contiguous encoding, a vector for the iovec form.
    refs: R,
}

/// Where the encoder puts the binaries it references instead of copying.
trait Refs<'t> {
    /// Whether it references binaries of at least [`IOVEC_MIN_BORROWED`]
    /// bytes at all.
    const ON: bool;
    /// Records `b`, which goes after the first `pos` bytes of the output.
    fn push(&mut self, pos: usize, b: &'t [u8]);
    /// How many were recorded.
    fn count(&self) -> usize;
    /// The bytes of those recorded after the first `from`.
    fn bytes_since(&self, from: usize) -> usize;
}

/// The contiguous encoding: every binary is copied.
impl Refs<'_> for () {
    const ON: bool = false;
    #[inline(always)]
    fn push(&mut self, _: usize, _: &[u8]) {}
    #[inline(always)]
    fn count(&self) -> usize {
        0
    }
    #[inline(always)]
    fn bytes_since(&self, _: usize) -> usize {
        0
    }
}

/// The iovec form: (position in the output, binary), in order.
impl<'t> Refs<'t> for &mut Vec<(usize, &'t [u8])> {
    const ON: bool = true;
    #[inline]
    fn push(&mut self, pos: usize, b: &'t [u8]) {
        Vec::push(self, (pos, b));
    }
    #[inline]
    fn count(&self) -> usize {
        self.len()
    }
    fn bytes_since(&self, from: usize) -> usize {
        self[from..].iter().map(|r| r.1.len()).sum()
    }
}

/// Runs the encoder for the minor version.
#[inline(always)]
fn run(term: &Term, utf8: bool, version: bool, out: &mut Vec<u8>) {
    if utf8 {
        Enc::<true, ()>::run(term, version, out, ())
    } else {
        Enc::<false, ()>::run(term, version, out, ())
    }
}

/// Runs the encoder for the iovec form: binaries (and bit binaries' bytes)
/// of at least [`IOVEC_MIN_BORROWED`] bytes are not copied to `out` but
/// pushed to `refs` with the position in `out` where they belong.
pub(crate) fn run_iovec<'t>(
    term: &'t Term,
    utf8: bool,
    out: &mut Vec<u8>,
    refs: &mut Vec<(usize, &'t [u8])>,
) {
    if utf8 {
        Enc::<true, _>::run(term, true, out, refs)
    } else {
        Enc::<false, _>::run(term, true, out, refs)
    }
}

impl<'o, 't, const UTF8: bool, R: Refs<'t>> Enc<'o, UTF8, R> {
    #[inline(always)]
    fn run(term: &'t Term, version: bool, out: &'o mut Vec<u8>, refs: R) {
        let mut e = Enc::<UTF8, R> {
            out,
            depth: 0,
            refs,
        };
        match term {
            // the common top-level term: the version byte and the tuple's
            // header in one store, then straight to the element loop
            Term::Tuple(v) if v.len() < 256 => {
                let n = v.len() as u8;
                let head = if version {
                    ([VERSION, SMALL_TUPLE_EXT, n, 0, 0], 3)
                } else {
                    ([SMALL_TUPLE_EXT, n, 0, 0, 0], 2)
                };
                e.elems(head, v.iter());
            }
            _ => {
                if version {
                    e.out.push(VERSION);
                }
                e.node(term);
            }
        }
    }

    #[inline(always)]
    fn put<const N: usize>(&mut self, b: [u8; N]) {
        self.out.extend_from_slice(&b);
    }
    #[inline]
    fn u8(&mut self, b: u8) {
        self.out.push(b);
    }
    #[inline]
    fn u16(&mut self, v: u16) {
        self.put(v.to_be_bytes());
    }
    #[inline]
    fn u32(&mut self, v: u32) {
        self.put(v.to_be_bytes());
    }
    /// A tag and a big-endian `u32` in one copy.
    #[inline(always)]
    fn tag_u32(&mut self, tag: u8, v: u32) {
        let [a, b, c, d] = v.to_be_bytes();
        self.put([tag, a, b, c, d]);
    }

    /// A binary's bytes: copied, or for the iovec form (`R::ON`)
    /// referenced when they are at least [`IOVEC_MIN_BORROWED`].
    #[inline(always)]
    fn bytes(&mut self, b: &'t [u8]) {
        if R::ON && b.len() >= IOVEC_MIN_BORROWED {
            self.refs.push(self.out.len(), b);
        } else {
            self.out.extend_from_slice(b);
        }
    }

    /// Marks `written` more bytes of the spare capacity as part of the
    /// output.
    ///
    /// The callers (`elems`, `list`) pass the number of bytes they wrote,
    /// from its start, into the spare capacity they took right before
    /// (with no other write to `out` in between): `elems` keeps the rest
    /// of the spare capacity as a slice `d` that it only moves past bytes
    /// it has written (`fill` then `advance`, in `leaf` and for headers),
    /// and passes `total - d.len()`.
    #[inline(always)]
    fn commit(&mut self, written: usize) {
        assert!(written <= self.out.capacity() - self.out.len());
        // SAFETY: `written` is at most the spare capacity (checked above),
        // and the caller initialised the first `written` bytes of it
        // (every byte it counts was written through a bounds-checked slice
        // of the spare capacity before it moved past it; see above).
        unsafe { self.out.set_len(self.out.len() + written) };
    }

    /// `head`, then the terms of `it`: leaves are written by [`leaf`]
    /// straight into the spare capacity with the position in a register,
    /// small tuples by a recursive call, everything else by
    /// [`Enc::node`].
    #[inline(always)]
    fn elems(&mut self, head: Head, it: impl Iterator<Item = &'t Term>) {
        // the header travels in a register: passed as bytes in memory, the
        // callee's one 8-byte load of what the caller stored byte by byte
        // stalls (no store forwarding)
        let [a, b, c, d, e] = head.0;
        self.elems_packed(u64::from_le_bytes([a, b, c, d, e, 0, 0, 0]), head.1, it)
    }

    /// [`Enc::elems`] with the header's bytes packed (little-endian) in
    /// `head`, of which `head_len` count.
    #[inline(never)]
    fn elems_packed(&mut self, head: u64, head_len: usize, it: impl Iterator<Item = &'t Term>) {
        if self.depth >= crate::decode::RECURSION_DEPTH {
            return self.deep_elems(head, head_len, it);
        }
        self.depth += 1;
        if self.out.capacity() - self.out.len() < 64 {
            self.out.reserve(64);
        }
        // `d` is what is left of the spare capacity, which had `total`
        // bytes: `total - d.len()` bytes were written
        let mut d = self.out.spare_capacity_mut();
        let mut total = d.len();
        // one fixed-size store; only `head_len` bytes count
        fill(d, &head.to_le_bytes());
        advance(&mut d, head_len);
        'elems: for t in it {
            loop {
                match leaf::<UTF8>(t, &mut d, R::ON) {
                    Leaf::Wrote => {}
                    Leaf::Need(n) => {
                        let written = total - d.len();
                        self.commit(written);
                        self.out.reserve(n);
                        d = self.out.spare_capacity_mut();
                        total = d.len();
                        continue;
                    }
                    Leaf::No => {
                        // small containers: their header and leading
                        // leaves inline, the rest (if any) by a call
                        let room = d.len();
                        match t {
                            Term::Tuple(v) if v.len() < 256 && room >= 2 => {
                                fill(d, &[SMALL_TUPLE_EXT, v.len() as u8]);
                                advance(&mut d, 2);
                                let mut inner = v.iter();
                                if run_leaves::<UTF8>(&mut inner, &mut d, R::ON) {
                                    continue 'elems;
                                }
                                let written = total - d.len();
                                self.commit(written);
                                self.elems(([0; 5], 0), inner);
                            }
                            Term::Map(m) if room >= 5 => {
                                let [a, b, c, e] = (m.len() as u32).to_be_bytes();
                                fill(d, &[MAP_EXT, a, b, c, e]);
                                advance(&mut d, 5);
                                let Some(inner) = run_pairs::<UTF8>(m.entries(), &mut d, R::ON)
                                else {
                                    continue 'elems;
                                };
                                let written = total - d.len();
                                self.commit(written);
                                self.elems(([0; 5], 0), inner);
                            }
                            Term::List(v)
                                if matches!(v.first(), Some(Term::Integer(0..=255)))
                                    && v.len() <= u16::MAX as usize
                                    && room >= 3 + v.len()
                                    && byte_list(v, d) =>
                            {
                                advance(&mut d, 3 + v.len());
                                continue 'elems;
                            }
                            Term::List(v)
                                if room >= 5
                                    && !matches!(
                                        v.first(),
                                        None | Some(Term::Integer(0..=255))
                                    ) =>
                            {
                                // not a byte list (its first element is not
                                // a byte): LIST_EXT … NIL_EXT
                                let [a, b, c, e] = (v.len() as u32).to_be_bytes();
                                fill(d, &[LIST_EXT, a, b, c, e]);
                                advance(&mut d, 5);
                                let mut inner = v.iter();
                                if run_leaves::<UTF8>(&mut inner, &mut d, R::ON) && !d.is_empty() {
                                    fill(d, &[NIL_EXT]);
                                    advance(&mut d, 1);
                                    continue 'elems;
                                }
                                let written = total - d.len();
                                self.commit(written);
                                self.elems(([0; 5], 0), inner);
                                self.out.push(NIL_EXT);
                            }
                            _ => {
                                let written = total - d.len();
                                self.commit(written);
                                self.node(t);
                            }
                        }
                        d = self.out.spare_capacity_mut();
                        total = d.len();
                    }
                }
                break;
            }
        }
        let written = total - d.len();
        self.commit(written);
        self.depth -= 1;
    }

    /// [`Enc::elems_packed`] past [`crate::RECURSION_DEPTH`] levels:
    /// the header, then each term with an explicit stack of what is left
    /// to write (on the heap, one entry per pending element), so a term of
    /// any depth costs no thread stack.
    #[cold]
    #[inline(never)]
    fn deep_elems(&mut self, head: u64, head_len: usize, it: impl Iterator<Item = &'t Term>) {
        self.out.extend_from_slice(&head.to_le_bytes()[..head_len]);
        let mut stack: Vec<Pending<'t>> = Vec::new();
        for t in it {
            stack.push(Pending::Term(t));
            while let Some(p) = stack.pop() {
                match p {
                    Pending::Term(t) => self.deep_node(t, &mut stack),
                    Pending::Nil => self.u8(NIL_EXT),
                    Pending::FunSize { size_at, refs_at } => self.fun_size(size_at, refs_at),
                }
            }
        }
    }

    /// Writes `t`'s head (a container's) or all of it (anything else) and
    /// pushes what follows the head, last first.
    fn deep_node(&mut self, t: &'t Term, stack: &mut Vec<Pending<'t>>) {
        match t {
            Term::Tuple(v) => {
                if v.len() < 256 {
                    self.put([SMALL_TUPLE_EXT, v.len() as u8]);
                } else {
                    self.tag_u32(LARGE_TUPLE_EXT, v.len() as u32);
                }
                stack.extend(v.iter().rev().map(Pending::Term));
            }
            Term::List(v) if !v.is_empty() => {
                if v.len() <= u16::MAX as usize && matches!(v[0], Term::Integer(0..=255)) {
                    self.out.reserve(3 + v.len());
                    if byte_list(v, self.out.spare_capacity_mut()) {
                        self.commit(3 + v.len());
                        return;
                    }
                }
                self.tag_u32(LIST_EXT, v.len() as u32);
                stack.push(Pending::Nil);
                stack.extend(v.iter().rev().map(Pending::Term));
            }
            Term::ImproperList { elems, tail } => {
                self.tag_u32(LIST_EXT, elems.len() as u32);
                stack.push(Pending::Term(tail));
                stack.extend(elems.iter().rev().map(Pending::Term));
            }
            Term::Map(m) => {
                self.tag_u32(MAP_EXT, m.len() as u32);
                for (k, v) in m.entries().iter().rev() {
                    stack.push(Pending::Term(v));
                    stack.push(Pending::Term(k));
                }
            }
            Term::Fun(f) => {
                let (size_at, refs_at) = self.fun_head(f);
                stack.push(Pending::FunSize { size_at, refs_at });
                stack.extend(f.free_vars.iter().rev().map(Pending::Term));
            }
            // `[]` and every term without elements: no recursion
            _ => self.node(t),
        }
    }

    #[inline(never)]
    fn atom(&mut self, a: &Atom) {
        if let Some((stored, n)) = a.ascii_encoded() {
            let enc = stored.get(..n).unwrap_or(&[]);
            if UTF8 {
                self.u8(SMALL_ATOM_UTF8_EXT);
                self.out.extend_from_slice(enc.get(2..).unwrap_or(&[]));
            } else {
                self.out.extend_from_slice(enc);
            }
            return;
        }
        atom_text(self.out, a.as_str(), UTF8);
    }

    fn int(&mut self, i: i64) {
        int_i64(self.out, i)
    }

    fn big(&mut self, b: &BigInt) {
        let (sign, mag) = b.to_bytes_le();
        let neg = sign == num_bigint::Sign::Minus;
        if mag.len() <= 255 {
            self.put([SMALL_BIG_EXT, mag.len() as u8, neg as u8]);
        } else {
            self.u8(LARGE_BIG_EXT);
            self.u32(mag.len() as u32);
            self.u8(neg as u8);
        }
        self.out.extend_from_slice(&mag);
    }

    fn pid(&mut self, p: &Pid) {
        self.u8(NEW_PID_EXT);
        self.atom(&p.node);
        self.u32(p.id);
        self.u32(p.serial);
        self.u32(p.creation);
    }

    fn map(&mut self, m: &'t Map) {
        let [a, b, c, d] = (m.len() as u32).to_be_bytes();
        // small maps are kept in map-key order by `Map` itself
        self.elems(
            ([MAP_EXT, a, b, c, d], 5),
            Pairs {
                rest: m.entries(),
                value: None,
            },
        );
    }

    fn fun(&mut self, f: &'t Fun) {
        let (size_at, refs_at) = self.fun_head(f);
        self.elems(([0; 5], 0), f.free_vars.iter());
        self.fun_size(size_at, refs_at);
    }

    /// A fun up to its free variables; returns where its size field is
    /// and how many binaries were referenced before them.
    fn fun_head(&mut self, f: &'t Fun) -> (usize, usize) {
        self.u8(NEW_FUN_EXT);
        let size_at = self.out.len();
        self.u32(0);
        self.u8(f.arity);
        self.out.extend_from_slice(&f.uniq);
        self.u32(f.index);
        self.u32(f.free_vars.len() as u32);
        self.atom(&f.module);
        self.int(f.old_index);
        self.int(f.old_uniq);
        self.pid(&f.pid);
        (size_at, self.refs.count())
    }

    /// Fills in the size field of the fun whose free variables end here.
    fn fun_size(&mut self, size_at: usize, refs_at: usize) {
        // the free variables' borrowed binaries count too
        let size = self.out.len() - size_at + self.refs.bytes_since(refs_at);
        let size = size as u32;
        self.out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    }

    /// A proper list: `STRING_EXT` when every element is a byte (and
    /// there are at most 65535), else `LIST_EXT` … `NIL_EXT`.
    fn list(&mut self, v: &'t [Term]) {
        if v.is_empty() {
            self.u8(NIL_EXT);
            return;
        }
        if v.len() <= u16::MAX as usize && matches!(v[0], Term::Integer(0..=255)) {
            // try STRING_EXT in one pass; nothing is kept if an element is
            // not a byte
            self.out.reserve(3 + v.len());
            if byte_list(v, self.out.spare_capacity_mut()) {
                // the header and every element were written above
                self.commit(3 + v.len());
                return;
            }
        }
        let [a, b, c, d] = (v.len() as u32).to_be_bytes();
        self.elems(([LIST_EXT, a, b, c, d], 5), v.iter());
        self.u8(NIL_EXT);
    }

    /// Any term; what [`leaf`] does not write (containers, the rare terms
    /// and forms) is written here.
    #[inline(never)]
    fn node(&mut self, t: &'t Term) {
        match t {
            Term::Tuple(v) => {
                let head = if v.len() < 256 {
                    ([SMALL_TUPLE_EXT, v.len() as u8, 0, 0, 0], 2)
                } else {
                    let [a, b, c, d] = (v.len() as u32).to_be_bytes();
                    ([LARGE_TUPLE_EXT, a, b, c, d], 5)
                };
                self.elems(head, v.iter());
            }
            Term::List(v) => self.list(v),
            Term::Map(m) => self.map(m),
            Term::ImproperList { elems, tail } => {
                let [a, b, c, d] = (elems.len() as u32).to_be_bytes();
                self.elems(([LIST_EXT, a, b, c, d], 5), elems.iter());
                // a tail that is an improper list itself (not canonical,
                // but buildable) in the next element loop, not by recursion
                match &**tail {
                    Term::ImproperList { .. } => self.elems(([0; 5], 0), std::iter::once(&**tail)),
                    _ => self.node(tail),
                }
            }
            Term::Integer(i) => self.int(*i),
            Term::Float(f) => {
                self.u8(NEW_FLOAT_EXT);
                self.put(f.to_bits().to_be_bytes());
            }
            Term::Atom(a) => self.atom(a),
            Term::Binary(b) => {
                // binaries over `LONG` bytes; over 4 GiB, which the BEAM
                // cannot hold either, only what the length field can say
                let n = b.len().min(u32::MAX as usize);
                self.tag_u32(BINARY_EXT, n as u32);
                self.bytes(&b[..n]);
            }
            Term::BigInt(b) => self.big(b),
            Term::BitBinary { bytes, bits } => {
                self.tag_u32(BIT_BINARY_EXT, bytes.len() as u32);
                self.u8(*bits);
                self.bytes(bytes);
            }
            Term::Pid(p) => self.pid(p),
            Term::Port(p) => {
                if p.id > u32::MAX as u64 {
                    self.u8(V4_PORT_EXT);
                    self.atom(&p.node);
                    self.put(p.id.to_be_bytes());
                } else {
                    self.u8(NEW_PORT_EXT);
                    self.atom(&p.node);
                    self.u32(p.id as u32);
                }
                self.u32(p.creation);
            }
            Term::Reference(r) => {
                self.u8(NEWER_REFERENCE_EXT);
                self.u16(r.ids.len() as u16);
                self.atom(&r.node);
                self.u32(r.creation);
                for id in &r.ids {
                    self.u32(*id);
                }
            }
            Term::Export {
                module,
                function,
                arity,
            } => {
                self.u8(EXPORT_EXT);
                self.atom(module);
                self.atom(function);
                self.put([SMALL_INTEGER_EXT, *arity]);
            }
            Term::Fun(f) => self.fun(f),
        }
    }
}
