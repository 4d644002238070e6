//! The decoder: bytes → [`TermRef`] (borrowed, zero-copy) → [`Term`].

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;

use crate::error::{DecodeError, DecodeErrorKind as K};
use crate::intern;
use crate::tags::*;
use crate::term::{Atom, BigInt, Fun, FunData, Map, Pid, Port, Reference, Term, MAX_ATOM_CHARS};

/// Nesting limit of every decoder (owned [`decode`], borrowed
/// [`decode_ref`], the lazy [`crate::decode_view`]) and of the payload
/// check ([`validate_body_prefix_with_atom_cache`]): none, as on the BEAM.
/// Nesting means tuples, lists, maps and funs inside each other; a list's
/// elements and its tail chain do not nest. They decode the first
/// [`RECURSION_DEPTH`] levels by recursion and deeper levels with an
/// explicit stack on the heap, so any depth costs no thread stack and
/// memory in proportion to the input (every level takes input bytes).
/// [`DecodeOptions::max_depth`] sets a limit ([`K::DepthLimit`]).
pub const DEFAULT_MAX_DEPTH: usize = usize::MAX;

/// Levels the decoders, the payload check and the walks over terms
/// (`Drop`, `Clone`, `==`, conversions) take by recursion before they
/// continue with an explicit stack on the heap: enough for every term
/// seen in practice, so those pay nothing for the deep path.
pub const RECURSION_DEPTH: usize = 128;

/// Limit on the declared uncompressed size of a compressed term (64 MiB).
pub const DEFAULT_MAX_UNCOMPRESSED: usize = 64 << 20;

/// Decoder limits.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Maximum nesting depth (see [`DEFAULT_MAX_DEPTH`]: none by default).
    pub max_depth: usize,
    /// Maximum declared uncompressed size of a compressed term.
    pub max_uncompressed: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_depth: DEFAULT_MAX_DEPTH,
            max_uncompressed: DEFAULT_MAX_UNCOMPRESSED,
        }
    }
}

/// An atom borrowed from the input where possible (UTF-8 and ASCII atoms),
/// owned only for non-ASCII latin-1 atoms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AtomRef<'a>(pub Cow<'a, str>);

impl<'a> AtomRef<'a> {
    /// The atom's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// An owned [`Atom`].
    pub fn to_atom(&self) -> Atom {
        Atom::new(&self.0)
    }
}

/// A closure, borrowed form.
#[derive(Debug, Clone)]
pub struct FunRef<'a> {
    /// Arity.
    pub arity: u8,
    /// MD5 of the module.
    pub uniq: [u8; 16],
    /// Index.
    pub index: u32,
    /// Module.
    pub module: AtomRef<'a>,
    /// Old index.
    pub old_index: i64,
    /// Old uniq.
    pub old_uniq: i64,
    /// Creator pid (a [`TermRef::Pid`]).
    pub pid: TermRef<'a>,
    /// Free variables.
    pub free_vars: Vec<TermRef<'a>>,
}

/// A borrowed view of a term: binaries, byte strings and atoms refer to the
/// input buffer. Made by [`decode_ref`]; [`TermRef::to_owned`] gives a
/// [`Term`].
///
/// `Drop`, `Clone`, `Debug`, `==` and [`TermRef::to_owned`] take any
/// nesting depth: they recurse over the first [`RECURSION_DEPTH`] levels
/// and continue with an explicit stack on the heap.
pub enum TermRef<'a> {
    /// An integer that fits `i64`.
    Integer(i64),
    /// An integer outside `i64`: sign and little-endian magnitude bytes.
    BigInt {
        /// True if negative.
        negative: bool,
        /// Little-endian magnitude.
        magnitude: &'a [u8],
    },
    /// A float.
    Float(f64),
    /// An atom.
    Atom(AtomRef<'a>),
    /// A binary.
    Binary(&'a [u8]),
    /// A bitstring (`bits` significant bits in the last byte, 1..=7).
    BitBinary {
        /// Bytes as on the wire.
        bytes: &'a [u8],
        /// Bits used in the last byte.
        bits: u8,
    },
    /// A proper list of small integers sent as `STRING_EXT`.
    ByteList(&'a [u8]),
    /// A tuple.
    Tuple(Vec<TermRef<'a>>),
    /// A proper list (`List(vec![])` is `[]`).
    List(Vec<TermRef<'a>>),
    /// An improper list.
    ImproperList {
        /// Elements.
        elems: Vec<TermRef<'a>>,
        /// Tail (not a list).
        tail: Box<TermRef<'a>>,
    },
    /// A map, entries in wire order (key uniqueness is checked by the owned
    /// decoder, not by `decode_ref`).
    Map(Vec<(TermRef<'a>, TermRef<'a>)>),
    /// A pid.
    Pid {
        /// Node.
        node: AtomRef<'a>,
        /// Number.
        id: u32,
        /// Serial.
        serial: u32,
        /// Creation.
        creation: u32,
    },
    /// A port.
    Port {
        /// Node.
        node: AtomRef<'a>,
        /// Number.
        id: u64,
        /// Creation.
        creation: u32,
    },
    /// A reference.
    Reference {
        /// Node.
        node: AtomRef<'a>,
        /// Creation.
        creation: u32,
        /// Number of valid words in `ids`.
        len: u8,
        /// ID words, least significant first.
        ids: [u32; 5],
    },
    /// `fun M:F/A`.
    Export {
        /// Module.
        module: AtomRef<'a>,
        /// Function.
        function: AtomRef<'a>,
        /// Arity.
        arity: u8,
    },
    /// A closure.
    Fun(Box<FunRef<'a>>),
}

impl<'a> TermRef<'a> {
    /// Converts to an owned [`Term`]. Duplicate map keys keep the last value.
    pub fn to_owned(&self) -> Term {
        self.to_owned_checked().0
    }

    /// Owned conversion; the flag is false if a map had duplicate keys.
    fn to_owned_checked(&self) -> (Term, bool) {
        intern::with_table(|atoms| {
            let mut cx = Owner::new(atoms);
            let t = self.owned(&mut cx, 0);
            (t, cx.ok)
        })
    }

    /// The owned form of this term, which is at nesting `depth` of the
    /// conversion under way.
    fn owned(&self, cx: &mut Owner, depth: usize) -> Term {
        match self {
            TermRef::Tuple(_)
            | TermRef::List(_)
            | TermRef::ImproperList { .. }
            | TermRef::Map(_)
            | TermRef::Fun(_)
                if depth >= RECURSION_DEPTH =>
            {
                owned_deep(self, cx)
            }
            TermRef::Tuple(v) => Term::Tuple(owned_seq(v, cx, depth + 1)),
            TermRef::List(v) => Term::List(owned_seq(v, cx, depth + 1)),
            TermRef::ImproperList { elems, tail } => owned_improper(elems, tail, cx, depth + 1),
            TermRef::Map(entries) => owned_map(entries, cx, depth + 1),
            TermRef::Fun(f) => {
                let free_vars = owned_seq(&f.free_vars, cx, depth + 1);
                owned_fun(f, free_vars, cx)
            }
            _ => self.owned_scalar(cx),
        }
    }

    #[inline(never)]
    fn owned_scalar(&self, cx: &mut Owner) -> Term {
        match self {
            TermRef::Integer(i) => Term::Integer(*i),
            TermRef::BigInt {
                negative,
                magnitude,
            } => {
                let sign = if *negative {
                    num_bigint::Sign::Minus
                } else {
                    num_bigint::Sign::Plus
                };
                Term::from_bigint(BigInt::from_bytes_le(sign, magnitude))
            }
            TermRef::Float(f) => Term::Float(*f),
            TermRef::Atom(a) => Term::Atom(a.to_atom_cached(cx)),
            TermRef::Binary(b) => Term::Binary(cx.binary(b)),
            TermRef::BitBinary { bytes, bits } => {
                let mut v = bytes.to_vec();
                if let Some(last) = v.last_mut() {
                    *last &= !(0xffu8 >> bits);
                }
                Term::BitBinary {
                    bytes: v,
                    bits: *bits,
                }
            }
            TermRef::ByteList(b) => {
                Term::List(b.iter().map(|&x| Term::Integer(x.into())).collect())
            }
            TermRef::Pid {
                node,
                id,
                serial,
                creation,
            } => Term::Pid(Pid {
                node: node.to_atom_cached(cx),
                id: *id,
                serial: *serial,
                creation: *creation,
            }),
            TermRef::Port { node, id, creation } => Term::Port(Port {
                node: node.to_atom_cached(cx),
                id: *id,
                creation: *creation,
            }),
            TermRef::Reference {
                node,
                creation,
                len,
                ids,
            } => Term::from(Reference {
                node: node.to_atom_cached(cx),
                creation: *creation,
                ids: ids[..(*len as usize).min(5)].to_vec(),
            }),
            TermRef::Export {
                module,
                function,
                arity,
            } => Term::Export {
                module: module.to_atom_cached(cx),
                function: function.to_atom_cached(cx),
                arity: *arity,
            },
            // containers are handled by owned()
            TermRef::Tuple(_)
            | TermRef::List(_)
            | TermRef::ImproperList { .. }
            | TermRef::Map(_)
            | TermRef::Fun(_) => Term::nil(),
        }
    }
}

/// Elements at nesting `depth`.
#[inline(never)]
fn owned_seq(v: &[TermRef<'_>], cx: &mut Owner, depth: usize) -> Vec<Term> {
    let mut out = Vec::with_capacity(v.len());
    for t in v {
        out.push(t.owned(cx, depth));
    }
    out
}

#[inline(never)]
fn owned_improper(elems: &[TermRef<'_>], tail: &TermRef<'_>, cx: &mut Owner, depth: usize) -> Term {
    Term::ImproperList {
        elems: owned_seq(elems, cx, depth),
        tail: Box::new(tail.owned(cx, depth)),
    }
}

#[inline(never)]
fn owned_map(entries: &[(TermRef<'_>, TermRef<'_>)], cx: &mut Owner, depth: usize) -> Term {
    let mut v = Vec::with_capacity(entries.len());
    for (k, val) in entries {
        let k = k.owned(cx, depth);
        let val = val.owned(cx, depth);
        v.push((k, val));
    }
    Term::Map(dedup_map(v, cx))
}

/// The owned container like `src` with the (converted) elements `elems`,
/// as [`crate::ref_walk::element`] lists them.
fn owned_rebuild(src: &TermRef<'_>, mut elems: Vec<Term>, cx: &mut Owner) -> Term {
    match src {
        TermRef::Tuple(_) => Term::Tuple(elems),
        TermRef::List(_) => Term::List(elems),
        TermRef::ImproperList { .. } => {
            let tail = elems.pop().unwrap_or(Term::Integer(0));
            Term::ImproperList {
                elems,
                tail: Box::new(tail),
            }
        }
        TermRef::Map(_) => {
            let mut v = Vec::with_capacity(elems.len() / 2);
            let mut it = elems.into_iter();
            while let (Some(k), Some(val)) = (it.next(), it.next()) {
                v.push((k, val));
            }
            Term::Map(dedup_map(v, cx))
        }
        TermRef::Fun(f) => owned_fun(f, elems, cx),
        other => other.owned_scalar(cx),
    }
}

/// Converts `root` from a stack of the containers being converted (on
/// the heap): each entry is the source, the next element, and the
/// elements converted so far.
#[cold]
#[inline(never)]
fn owned_deep(root: &TermRef<'_>, cx: &mut Owner) -> Term {
    use crate::ref_walk::{element, element_count};
    let mut stack: Vec<(&TermRef<'_>, usize, Vec<Term>)> =
        vec![(root, 0, Vec::with_capacity(element_count(root)))];
    loop {
        let Some(top) = stack.last_mut() else {
            return Term::Integer(0);
        };
        if let Some(e) = element(top.0, top.1) {
            top.1 += 1;
            if element_count(e) > 0 {
                stack.push((e, 0, Vec::with_capacity(element_count(e))));
            } else {
                // nothing nested: no recursion
                top.2.push(e.owned(cx, 0));
            }
            continue;
        }
        let Some((src, _, elems)) = stack.pop() else {
            return Term::Integer(0);
        };
        let t = owned_rebuild(src, elems, cx);
        match stack.last_mut() {
            Some(parent) => parent.2.push(t),
            None => return t,
        }
    }
}

/// A fun with its free variables already converted.
#[inline(never)]
fn owned_fun(f: &FunRef<'_>, free_vars: Vec<Term>, cx: &mut Owner) -> Term {
    let pid = match &f.pid.owned_scalar(cx) {
        Term::Pid(p) => p.clone(),
        // the decoder only puts pids here
        _ => Pid {
            node: Atom::new(""),
            id: 0,
            serial: 0,
            creation: 0,
        },
    };
    Term::Fun(Fun::new(FunData {
        arity: f.arity,
        uniq: f.uniq,
        index: f.index,
        module: f.module.to_atom_cached(cx),
        old_index: f.old_index,
        old_uniq: f.old_uniq,
        pid,
        free_vars,
    }))
}

/// State of one owned conversion: whether map keys were unique, and the
/// thread's atom table ([`crate::intern`]), borrowed once for the whole
/// conversion, so repeated atoms share one `Arc` instead of allocating.
struct Owner<'t> {
    ok: bool,
    atoms: &'t mut intern::Table,
    /// The buffer being decoded, when [`decode_shared`] decodes it: long
    /// binaries refer to it instead of copying.
    share: Option<&'t Arc<Vec<u8>>>,
}

/// [`decode_shared`]: binaries of at least this many bytes, and at least
/// an eighth of the buffer, refer to the buffer.
pub const SHARE_MIN: usize = 64;

impl<'t> Owner<'t> {
    fn new(atoms: &'t mut intern::Table) -> Owner<'t> {
        Owner {
            ok: true,
            atoms,
            share: None,
        }
    }

    /// A binary of the bytes `b`: inline when short; a range of the
    /// shared buffer when there is one and `b` (a slice of it) is long
    /// enough (see [`decode_shared`]); else a copy on the heap.
    #[inline(always)]
    fn binary(&self, b: &[u8]) -> crate::Binary {
        if b.len() <= crate::Binary::INLINE {
            return crate::Binary::from_slice(b);
        }
        self.long_binary(b)
    }

    #[inline(never)]
    fn long_binary(&self, b: &[u8]) -> crate::Binary {
        if let Some(buf) = self.share {
            let start = (b.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
            let inside = start
                .checked_add(b.len())
                .is_some_and(|end| end <= buf.len());
            if inside && b.len() >= SHARE_MIN && b.len() >= buf.len() / 8 {
                return crate::Binary::shared(buf, start, b.len());
            }
        }
        crate::Binary::from_slice(b)
    }

    #[inline]
    fn atom(&mut self, s: &str) -> Atom {
        if s.len() <= Atom::INLINE || s.len() > intern::MAX_INTERNED_LEN {
            return Atom::new(s);
        }
        let ix = intern::slot(s.as_bytes());
        match &self.atoms[ix] {
            Some(a) if a.text_is(s.as_bytes()) => a.clone(),
            _ => {
                let a = Atom::new(s);
                self.atoms[ix] = Some(a.clone());
                a
            }
        }
    }
}

impl AtomRef<'_> {
    #[inline]
    fn to_atom_cached(&self, cx: &mut Owner) -> Atom {
        cx.atom(self.as_str())
    }
}

/// `a < b` in map-key order ([`Term::cmp_exact`]), with atoms and small
/// integers (the usual keys) compared inline.
#[inline]
fn key_less(a: &Term, b: &Term) -> bool {
    match (a, b) {
        (Term::Atom(x), Term::Atom(y)) => {
            // byte order of UTF-8 is the order of the texts' characters
            let (p, q) = (x.text_bytes(), y.text_bytes());
            match (p.first(), q.first()) {
                (Some(c), Some(d)) if c != d => c < d,
                _ => p < q,
            }
        }
        (Term::Integer(x), Term::Integer(y)) => x < y,
        _ => a.cmp_exact(b) == std::cmp::Ordering::Less,
    }
}

fn dedup_map(v: Vec<(Term, Term)>, cx: &mut Owner) -> Map {
    // the BEAM writes small maps in strictly increasing key order: unique
    if v.windows(2).all(|w| key_less(&w[0].0, &w[1].0)) {
        return Map::from_sorted_unique(v);
    }
    if v.len() > 1 {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].0.cmp_exact(&v[b].0).then(a.cmp(&b)));
        let dup = idx.windows(2).any(|w| v[w[0]].0 == v[w[1]].0);
        if dup {
            cx.ok = false;
            return v.into_iter().collect();
        }
    }
    Map::from_unique_entries(v)
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    cache: Option<&'a [Atom]>,
    /// The nesting limit ([`K::DepthLimit`] beyond).
    max_depth: usize,
    /// Where the recursive owned decoder and checker hand over to the
    /// iterative ones: `min(max_depth, RECURSION_DEPTH)`.
    deep_at: usize,
}

type R<T> = Result<T, DecodeError>;

impl<'a> Decoder<'a> {
    fn new(buf: &'a [u8], pos: usize, cache: Option<&'a [Atom]>, max_depth: usize) -> Self {
        Decoder {
            buf,
            pos,
            cache,
            max_depth,
            deep_at: max_depth.min(RECURSION_DEPTH),
        }
    }

    #[inline]
    fn err<T>(&self, at: usize, kind: K) -> R<T> {
        Err(DecodeError::new(at, kind))
    }

    #[inline]
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let buf = self.buf;
        match buf.get(self.pos..self.pos.wrapping_add(n)) {
            Some(s) if self.pos.checked_add(n).is_some() => {
                self.pos += n;
                Ok(s)
            }
            _ => self.err(self.pos, K::Truncated),
        }
    }

    #[inline]
    /// A big integer's sign byte and its `n` magnitude bytes (least
    /// significant first), the magnitude without its high zero bytes.
    fn big_body(&mut self, start: usize, n: usize) -> R<(bool, &'a [u8])> {
        let sign = self.u8()?;
        if sign > 1 {
            return self.err(start + 1, K::InvalidSign);
        }
        let mag = self.take(n)?;
        let eff = mag.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        Ok((sign == 1, &mag[..eff]))
    }

    fn u8(&mut self) -> R<u8> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => self.err(self.pos, K::Truncated),
        }
    }
    #[inline]
    fn u16(&mut self) -> R<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    #[inline]
    fn u32(&mut self) -> R<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    #[inline]
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// The checks of [`Self::atom_body`] without building the atom.
    #[inline]
    fn atom_body_check(&mut self, start: usize, len: usize, utf8: bool) -> R<&'a [u8]> {
        let bytes = self.take(len)?;
        if utf8 {
            let s =
                std::str::from_utf8(bytes).map_err(|_| DecodeError::new(start, K::InvalidUtf8))?;
            if len > MAX_ATOM_CHARS && s.chars().count() > MAX_ATOM_CHARS {
                return self.err(start, K::AtomTooLong);
            }
        } else if len > MAX_ATOM_CHARS {
            return self.err(start, K::AtomTooLong);
        }
        Ok(bytes)
    }

    fn atom_body(&mut self, start: usize, len: usize, utf8: bool) -> R<AtomRef<'a>> {
        let bytes = self.take(len)?;
        if utf8 {
            let s =
                std::str::from_utf8(bytes).map_err(|_| DecodeError::new(start, K::InvalidUtf8))?;
            if len > MAX_ATOM_CHARS && s.chars().count() > MAX_ATOM_CHARS {
                return self.err(start, K::AtomTooLong);
            }
            Ok(AtomRef(Cow::Borrowed(s)))
        } else {
            if len > MAX_ATOM_CHARS {
                return self.err(start, K::AtomTooLong);
            }
            if bytes.is_ascii() {
                // SAFETY-free path: ASCII is valid UTF-8.
                let s = std::str::from_utf8(bytes)
                    .map_err(|_| DecodeError::new(start, K::InvalidUtf8))?;
                Ok(AtomRef(Cow::Borrowed(s)))
            } else {
                Ok(AtomRef(Cow::Owned(
                    bytes.iter().map(|&b| b as char).collect(),
                )))
            }
        }
    }

    /// Reads an atom in any atom encoding (used where the format requires an
    /// atom: node names, modules, functions).
    fn atom(&mut self) -> R<AtomRef<'a>> {
        let start = self.pos;
        let tag = self.u8()?;
        self.atom_tagged(start, tag)
    }

    fn atom_tagged(&mut self, start: usize, tag: u8) -> R<AtomRef<'a>> {
        match tag {
            ATOM_UTF8_EXT => {
                let n = self.u16()? as usize;
                self.atom_body(start, n, true)
            }
            SMALL_ATOM_UTF8_EXT => {
                let n = self.u8()? as usize;
                self.atom_body(start, n, true)
            }
            ATOM_EXT => {
                let n = self.u16()? as usize;
                self.atom_body(start, n, false)
            }
            SMALL_ATOM_EXT => {
                let n = self.u8()? as usize;
                self.atom_body(start, n, false)
            }
            ATOM_CACHE_REF => {
                let i = self.u8()?;
                match self.cache.and_then(|c| c.get(i as usize)) {
                    Some(a) => Ok(AtomRef(Cow::Borrowed(a.as_str()))),
                    None => self.err(start, K::AtomCacheRef(i)),
                }
            }
            LOCAL_EXT => self.err(start, K::LocalExt),
            _ => self.err(start, K::UnexpectedType),
        }
    }

    fn small_int_term(&mut self) -> R<i64> {
        let start = self.pos;
        match self.u8()? {
            SMALL_INTEGER_EXT => Ok(self.u8()? as i64),
            INTEGER_EXT => Ok(self.u32()? as i32 as i64),
            _ => self.err(start, K::UnexpectedType),
        }
    }

    fn pid(&mut self) -> R<TermRef<'a>> {
        let start = self.pos;
        let tag = self.u8()?;
        match tag {
            NEW_PID_EXT | PID_EXT => self.pid_body(tag),
            _ => self.err(start, K::UnexpectedType),
        }
    }

    fn pid_body(&mut self, tag: u8) -> R<TermRef<'a>> {
        let node = self.atom()?;
        let id = self.u32()?;
        let serial = self.u32()?;
        let creation = if tag == NEW_PID_EXT {
            self.u32()?
        } else {
            self.u8()? as u32
        };
        Ok(TermRef::Pid {
            node,
            id,
            serial,
            creation,
        })
    }

    fn seq(&mut self, n: usize, depth: usize) -> R<Vec<TermRef<'a>>> {
        let mut v = Vec::new();
        self.grow(&mut v, n)?;
        for slot in v.iter_mut() {
            self.fill_term(depth, slot)?;
        }
        Ok(v)
    }

    /// Decodes one term into `slot`. Sequences are pre-filled with
    /// placeholders and decoded in place: building a 56-byte enum on the
    /// stack and then copying it into a vector costs more than decoding it
    /// (the copy stalls on store forwarding).
    #[inline]
    fn fill_term(&mut self, depth: usize, slot: &mut TermRef<'a>) -> R<()> {
        let start = self.pos;
        let tag = self.u8()?;
        match tag {
            SMALL_INTEGER_EXT => {
                let b = self.u8()?;
                *slot = TermRef::Integer(b as i64);
            }
            INTEGER_EXT => {
                let i = self.u32()? as i32;
                *slot = TermRef::Integer(i as i64);
            }
            ATOM_EXT | SMALL_ATOM_UTF8_EXT => {
                *slot = TermRef::Atom(self.atom_tagged(start, tag)?);
            }
            BINARY_EXT => {
                let n = self.u32()? as usize;
                *slot = TermRef::Binary(self.take(n)?);
            }
            NEW_FLOAT_EXT => {
                let b = self.take(8)?;
                let f = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                if !f.is_finite() {
                    return self.err(start, K::InvalidFloat);
                }
                *slot = TermRef::Float(f);
            }
            NIL_EXT => *slot = TermRef::List(Vec::new()),
            _ => *slot = self.term_tagged(start, tag, depth)?,
        }
        Ok(())
    }

    /// Appends `n` placeholder slots to `v` for in-place decoding; `n` must
    /// fit the remaining input (one byte per term at least).
    #[inline]
    fn grow(&self, v: &mut Vec<TermRef<'a>>, n: usize) -> R<usize> {
        if n > self.remaining() {
            return self.err(self.pos, K::Truncated);
        }
        let old = v.len();
        v.resize_with(old + n, || TermRef::Integer(0));
        Ok(old)
    }

    #[inline]
    fn term(&mut self, depth: usize) -> R<TermRef<'a>> {
        let start = self.pos;
        let tag = self.u8()?;
        self.term_tagged(start, tag, depth)
    }

    #[inline]
    fn term_tagged(&mut self, start: usize, tag: u8, depth: usize) -> R<TermRef<'a>> {
        match tag {
            // containers in small functions, the rest out of line
            SMALL_INTEGER_EXT => Ok(TermRef::Integer(self.u8()? as i64)),
            SMALL_TUPLE_EXT | LARGE_TUPLE_EXT => self.tuple(start, tag, depth),
            LIST_EXT => self.list(start, depth),
            MAP_EXT => self.map(start, depth),
            NEW_FUN_EXT => self.fun(start, depth),
            _ => self.scalar(start, tag),
        }
    }

    /// Container arms live in their own small functions so the recursive
    /// path keeps a small stack frame (the depth limit relies on it).
    #[inline(never)]
    fn tuple(&mut self, start: usize, tag: u8, depth: usize) -> R<TermRef<'a>> {
        let n = if tag == SMALL_TUPLE_EXT {
            self.u8()? as usize
        } else {
            self.u32()? as usize
        };
        if depth >= self.deep_at {
            return self.ref_deep(start, depth);
        }
        Ok(TermRef::Tuple(self.seq(n, depth + 1)?))
    }

    #[inline(never)]
    fn map(&mut self, start: usize, depth: usize) -> R<TermRef<'a>> {
        let n = self.u32()? as usize;
        if depth >= self.deep_at {
            return self.ref_deep(start, depth);
        }
        if n > self.remaining() / 2 {
            return self.err(self.pos, K::Truncated);
        }
        let mut v = Vec::new();
        v.resize_with(n, || (TermRef::Integer(0), TermRef::Integer(0)));
        for (k, val) in v.iter_mut() {
            self.fill_term(depth + 1, k)?;
            self.fill_term(depth + 1, val)?;
        }
        Ok(TermRef::Map(v))
    }

    #[inline(never)]
    fn fun(&mut self, start: usize, depth: usize) -> R<TermRef<'a>> {
        if depth >= self.deep_at {
            return self.ref_deep(start, depth);
        }
        let size = self.u32()? as usize;
        let arity = self.u8()?;
        let uniq: [u8; 16] = self.take(16)?.try_into().expect("16 bytes");
        let index = self.u32()?;
        let nfree = self.u32()? as usize;
        let module = self.atom()?;
        let old_index = self.small_int_term()?;
        let old_uniq = self.small_int_term()?;
        let pid = self.pid()?;
        let free_vars = self.seq(nfree, depth + 1)?;
        if self.pos - (start + 1) != size {
            return self.err(start, K::InvalidFunSize);
        }
        Ok(TermRef::Fun(Box::new(FunRef {
            arity,
            uniq,
            index,
            module,
            old_index,
            old_uniq,
            pid,
            free_vars,
        })))
    }

    #[inline(never)]
    fn scalar(&mut self, start: usize, tag: u8) -> R<TermRef<'a>> {
        match tag {
            SMALL_INTEGER_EXT => Ok(TermRef::Integer(self.u8()? as i64)),
            // containers are dispatched by term() and never reach here
            SMALL_TUPLE_EXT | LARGE_TUPLE_EXT | LIST_EXT | MAP_EXT | NEW_FUN_EXT => {
                self.err(start, K::UnexpectedType)
            }
            INTEGER_EXT => Ok(TermRef::Integer(self.u32()? as i32 as i64)),
            SMALL_ATOM_UTF8_EXT | ATOM_UTF8_EXT | ATOM_EXT | SMALL_ATOM_EXT | ATOM_CACHE_REF => {
                Ok(TermRef::Atom(self.atom_tagged(start, tag)?))
            }
            NIL_EXT => Ok(TermRef::List(Vec::new())),
            BINARY_EXT => {
                let n = self.u32()? as usize;
                Ok(TermRef::Binary(self.take(n)?))
            }
            STRING_EXT => {
                let n = self.u16()? as usize;
                Ok(TermRef::ByteList(self.take(n)?))
            }
            NEW_FLOAT_EXT => {
                let b = self.take(8)?;
                let f = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                if !f.is_finite() {
                    return self.err(start, K::InvalidFloat);
                }
                Ok(TermRef::Float(f))
            }
            FLOAT_EXT => {
                let b = self.take(31)?;
                let end = b.iter().position(|&c| c == 0).unwrap_or(31);
                let s = std::str::from_utf8(&b[..end])
                    .map_err(|_| DecodeError::new(start, K::InvalidFloat))?;
                match s.trim().parse::<f64>() {
                    Ok(f) if f.is_finite() => Ok(TermRef::Float(f)),
                    _ => self.err(start, K::InvalidFloat),
                }
            }
            SMALL_BIG_EXT | LARGE_BIG_EXT => {
                let n = if tag == SMALL_BIG_EXT {
                    self.u8()? as usize
                } else {
                    self.u32()? as usize
                };
                let (negative, mag) = self.big_body(start, n)?;
                if let Some(i) = fitting_i64(negative, mag) {
                    return Ok(TermRef::Integer(i));
                }
                Ok(TermRef::BigInt {
                    negative,
                    magnitude: mag,
                })
            }
            BIT_BINARY_EXT => {
                let n = self.u32()? as usize;
                let bits = self.u8()?;
                let bytes = self.take(n)?;
                if !(1..=8).contains(&bits) || n == 0 {
                    if n == 0 && bits == 0 {
                        return Ok(TermRef::Binary(bytes));
                    }
                    return self.err(start, K::InvalidBitBinary);
                }
                if bits == 8 {
                    return Ok(TermRef::Binary(bytes));
                }
                Ok(TermRef::BitBinary { bytes, bits })
            }
            NEW_PID_EXT | PID_EXT => self.pid_body(tag),
            NEW_PORT_EXT | V4_PORT_EXT | PORT_EXT => {
                let node = self.atom()?;
                let id = if tag == V4_PORT_EXT {
                    let b = self.take(8)?;
                    u64::from_be_bytes(b.try_into().expect("8 bytes"))
                } else {
                    self.u32()? as u64
                };
                let creation = if tag == PORT_EXT {
                    self.u8()? as u32
                } else {
                    self.u32()?
                };
                Ok(TermRef::Port { node, id, creation })
            }
            NEWER_REFERENCE_EXT | NEW_REFERENCE_EXT => {
                let len = self.u16()? as usize;
                if !(1..=5).contains(&len) {
                    return self.err(start, K::InvalidReference);
                }
                let node = self.atom()?;
                let creation = if tag == NEWER_REFERENCE_EXT {
                    self.u32()?
                } else {
                    self.u8()? as u32
                };
                let mut ids = [0u32; 5];
                for id in ids.iter_mut().take(len) {
                    *id = self.u32()?;
                }
                Ok(TermRef::Reference {
                    node,
                    creation,
                    len: len as u8,
                    ids,
                })
            }
            REFERENCE_EXT => {
                let node = self.atom()?;
                let id = self.u32()?;
                let creation = self.u8()? as u32;
                let mut ids = [0u32; 5];
                ids[0] = id;
                Ok(TermRef::Reference {
                    node,
                    creation,
                    len: 1,
                    ids,
                })
            }
            EXPORT_EXT => {
                let module = self.atom()?;
                let function = self.atom()?;
                let at = self.pos;
                let arity = self.small_int_term()?;
                let arity =
                    u8::try_from(arity).map_err(|_| DecodeError::new(at, K::UnexpectedType))?;
                Ok(TermRef::Export {
                    module,
                    function,
                    arity,
                })
            }
            COMPRESSED => self.err(start, K::CompressedInput),
            LOCAL_EXT => self.err(start, K::LocalExt),
            FUN_EXT | DIST_HEADER | DIST_FRAG_HEADER => self.err(start, K::UnsupportedTag(tag)),
            _ => self.err(start, K::UnknownTag(tag)),
        }
    }

    /// `LIST_EXT`: elements, then a tail. A tail that is itself a list
    /// (`LIST_EXT`, `STRING_EXT`, `NIL_EXT`) is merged in a loop, so chained
    /// tails cost no stack.
    #[inline(never)]
    fn list(&mut self, start: usize, depth: usize) -> R<TermRef<'a>> {
        if depth >= self.deep_at {
            return self.ref_deep(start, depth);
        }
        let mut n = self.u32()? as usize;
        let mut elems = Vec::new();
        loop {
            let old = self.grow(&mut elems, n)?;
            for slot in elems[old..].iter_mut() {
                self.fill_term(depth + 1, slot)?;
            }
            let tstart = self.pos;
            match self.buf.get(self.pos) {
                Some(&NIL_EXT) => {
                    self.pos += 1;
                    return Ok(TermRef::List(elems));
                }
                Some(&LIST_EXT) => {
                    self.pos += 1;
                    n = self.u32()? as usize;
                }
                Some(&STRING_EXT) => {
                    self.pos += 1;
                    let k = self.u16()? as usize;
                    let b = self.take(k)?;
                    elems.extend(b.iter().map(|&x| TermRef::Integer(x as i64)));
                    return Ok(TermRef::List(elems));
                }
                Some(_) => {
                    let tail = self.term(depth + 1)?;
                    if elems.is_empty() {
                        return Ok(tail);
                    }
                    return Ok(TermRef::ImproperList {
                        elems,
                        tail: Box::new(tail),
                    });
                }
                None => return self.err(tstart, K::Truncated),
            }
        }
    }
}

/// 1 + payload length of the fixed-size tags that need no check beyond
/// their length (0 for the others).
static SKIP_FIXED: [u8; 256] = {
    let mut t = [0u8; 256];
    t[SMALL_INTEGER_EXT as usize] = 2;
    t[INTEGER_EXT as usize] = 5;
    t[NIL_EXT as usize] = 1;
    t
};

/// Validation without building anything: the same checks, in the same
/// order and with the same error offsets as the borrowed decoder
/// ([`Decoder::term`]), for [`crate::decode_view`]. Allocates nothing
/// (except for the rare pid/port/reference whose node atom is non-ASCII
/// latin-1, which goes through the borrowed decoder).
impl<'a> Decoder<'a> {
    /// Checks one term (as `term(depth)` would decode it). The common tags
    /// are handled here; the rest out of line, to keep this frame small.
    #[inline]
    pub(crate) fn skip(&mut self, depth: usize) -> R<()> {
        let start = self.pos;
        let tag = self.u8()?;
        // fixed-size tags without further checks: one predictable branch
        let fixed = SKIP_FIXED[tag as usize];
        if fixed != 0 {
            self.take(fixed as usize - 1)?;
            return Ok(());
        }
        match tag {
            ATOM_EXT => {
                let n = self.u16()? as usize;
                self.atom_body_check(start, n, false)?;
                Ok(())
            }
            SMALL_ATOM_UTF8_EXT => {
                let n = self.u8()? as usize;
                self.atom_body_check(start, n, true)?;
                Ok(())
            }
            BINARY_EXT => {
                let n = self.u32()? as usize;
                self.take(n)?;
                Ok(())
            }
            NEW_FLOAT_EXT => {
                let b = self.take(8)?;
                let f = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                if !f.is_finite() {
                    return self.err(start, K::InvalidFloat);
                }
                Ok(())
            }
            SMALL_TUPLE_EXT | LARGE_TUPLE_EXT => self.skip_tuple(start, tag, depth),
            LIST_EXT => self.skip_list(start, depth),
            MAP_EXT => self.skip_map(start, depth),
            _ => self.skip_other(start, tag, depth),
        }
    }

    #[inline(never)]
    fn skip_other(&mut self, start: usize, tag: u8, depth: usize) -> R<()> {
        match tag {
            SMALL_ATOM_EXT => {
                let n = self.u8()? as usize;
                self.atom_body_check(start, n, false)?;
            }
            ATOM_UTF8_EXT => {
                let n = self.u16()? as usize;
                self.atom_body_check(start, n, true)?;
            }
            STRING_EXT => {
                let n = self.u16()? as usize;
                self.take(n)?;
            }
            NEW_FUN_EXT => self.skip_fun(start, depth)?,
            _ => {
                self.scalar(start, tag)?;
            }
        }
        Ok(())
    }

    /// Checks an atom in any atom encoding (where the format requires one).
    fn skip_atom(&mut self) -> R<()> {
        let start = self.pos;
        let tag = self.u8()?;
        match tag {
            SMALL_ATOM_UTF8_EXT | SMALL_ATOM_EXT => {
                let n = self.u8()? as usize;
                self.atom_body_check(start, n, tag == SMALL_ATOM_UTF8_EXT)?;
            }
            ATOM_UTF8_EXT | ATOM_EXT => {
                let n = self.u16()? as usize;
                self.atom_body_check(start, n, tag == ATOM_UTF8_EXT)?;
            }
            _ => {
                self.atom_tagged(start, tag)?;
            }
        }
        Ok(())
    }

    /// `n` elements at `depth`, after the same length check as `grow`.
    fn skip_seq(&mut self, n: usize, depth: usize) -> R<()> {
        if n > self.remaining() {
            return self.err(self.pos, K::Truncated);
        }
        for _ in 0..n {
            self.skip(depth)?;
        }
        Ok(())
    }

    #[inline(never)]
    fn skip_tuple(&mut self, start: usize, tag: u8, depth: usize) -> R<()> {
        let n = if tag == SMALL_TUPLE_EXT {
            self.u8()? as usize
        } else {
            self.u32()? as usize
        };
        if depth >= self.deep_at {
            return self.skip_deep(start, depth);
        }
        self.skip_seq(n, depth + 1)
    }

    #[inline(never)]
    fn skip_map(&mut self, start: usize, depth: usize) -> R<()> {
        let n = self.u32()? as usize;
        if depth >= self.deep_at {
            return self.skip_deep(start, depth);
        }
        if n > self.remaining() / 2 {
            return self.err(self.pos, K::Truncated);
        }
        for _ in 0..n {
            self.skip(depth + 1)?;
            self.skip(depth + 1)?;
        }
        Ok(())
    }

    #[inline(never)]
    fn skip_list(&mut self, start: usize, depth: usize) -> R<()> {
        if depth >= self.deep_at {
            return self.skip_deep(start, depth);
        }
        let mut n = self.u32()? as usize;
        loop {
            self.skip_seq(n, depth + 1)?;
            let tstart = self.pos;
            match self.buf.get(self.pos) {
                Some(&NIL_EXT) => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(&LIST_EXT) => {
                    self.pos += 1;
                    n = self.u32()? as usize;
                }
                Some(&STRING_EXT) => {
                    self.pos += 1;
                    let k = self.u16()? as usize;
                    self.take(k)?;
                    return Ok(());
                }
                Some(_) => return self.skip(depth + 1),
                None => return self.err(tstart, K::Truncated),
            }
        }
    }

    #[inline(never)]
    fn skip_fun(&mut self, start: usize, depth: usize) -> R<()> {
        if depth >= self.deep_at {
            return self.skip_deep(start, depth);
        }
        let size = self.u32()? as usize;
        self.u8()?;
        self.take(16)?;
        self.u32()?;
        let nfree = self.u32()? as usize;
        self.skip_atom()?;
        self.small_int_term()?;
        self.small_int_term()?;
        self.pid()?;
        self.skip_seq(nfree, depth + 1)?;
        if self.pos - (start + 1) != size {
            return self.err(start, K::InvalidFunSize);
        }
        Ok(())
    }
}

/// Checks the term at the start of `input` (no version byte) as the
/// borrowed decoder would; returns the bytes it spans.
pub(crate) fn validate_body(input: &[u8], cache: Option<&[Atom]>, max_depth: usize) -> R<usize> {
    let mut d = Decoder::new(input, 0, cache, max_depth);
    d.skip(0)?;
    Ok(d.pos)
}

/// The borrowed decoding of the term at the start of `input` (no version
/// byte) with the default depth limit.
pub(crate) fn term_ref_body(input: &[u8]) -> R<TermRef<'_>> {
    let mut d = Decoder::new(input, 0, None, DEFAULT_MAX_DEPTH);
    d.term(0)
}

/// A big integer (trimmed magnitude, least significant byte first) as an
/// `i64` when it fits: the decoders normalise those to `Integer`.
fn fitting_i64(negative: bool, mag: &[u8]) -> Option<i64> {
    if mag.len() > 8 {
        return None;
    }
    let mut w = [0u8; 8];
    w[..mag.len()].copy_from_slice(mag);
    let u = u64::from_le_bytes(w);
    match negative {
        false if u <= i64::MAX as u64 => Some(u as i64),
        true if u <= 1u64 << 63 => Some((u as i64).wrapping_neg()),
        _ => None,
    }
}

/// Stores `t` in a slot that holds a placeholder `Term::Integer` (sequences
/// are pre-filled with them and decoded in place). The placeholder owns
/// nothing, so it is forgotten rather than dropped: that skips a call to
/// `Term`'s drop glue per element.
#[inline(always)]
fn put(slot: &mut Term, t: Term) {
    debug_assert!(matches!(slot, Term::Integer(_)));
    std::mem::forget(std::mem::replace(slot, t));
}

/// Direct owned decoding: builds `Term`s without a `TermRef` tree. Mirrors
/// the borrowed decoder's structure (and its depth accounting); rare tags
/// go through the borrowed scalar decoder and are converted.
impl<'a> Decoder<'a> {
    /// Decodes one term into `slot`, which holds a placeholder
    /// (`Term::Integer`, see [`put`]). Inlined into the container loops
    /// in optimised builds, where their frames stay small (200 to 300
    /// bytes); unoptimised frames would grow by the whole body, so debug
    /// builds keep the call (the depth limit must fit a test thread's
    /// stack either way).
    #[cfg_attr(not(debug_assertions), inline(always))]
    #[cfg_attr(debug_assertions, inline)]
    fn fill_owned(&mut self, depth: usize, slot: &mut Term, cx: &mut Owner) -> R<()> {
        let start = self.pos;
        let tag = self.u8()?;
        // one `put`, so unoptimised builds keep a single temporary
        let t = match tag {
            SMALL_INTEGER_EXT => {
                let b = self.u8()?;
                Term::Integer(b as i64)
            }
            INTEGER_EXT => {
                let i = self.u32()? as i32;
                Term::Integer(i as i64)
            }
            ATOM_EXT | SMALL_ATOM_UTF8_EXT | ATOM_UTF8_EXT | SMALL_ATOM_EXT | ATOM_CACHE_REF => {
                Term::Atom(self.atom_owned(start, tag, cx)?)
            }
            BINARY_EXT => {
                let n = self.u32()? as usize;
                Term::Binary(cx.binary(self.take(n)?))
            }
            NEW_FLOAT_EXT => {
                let b = self.take(8)?;
                let f = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                if !f.is_finite() {
                    return self.err(start, K::InvalidFloat);
                }
                Term::Float(f)
            }
            NIL_EXT => Term::List(Vec::new()),
            STRING_EXT => {
                let n = self.u16()? as usize;
                let b = self.take(n)?;
                Term::List(b.iter().map(|&x| Term::Integer(x as i64)).collect())
            }
            _ => return self.owned_tagged(start, tag, depth, slot, cx),
        };
        put(slot, t);
        Ok(())
    }

    /// An atom in any of the four atom encodings or `ATOM_CACHE_REF`, with
    /// the checks (and error offsets) of [`Self::atom_tagged`]. A text
    /// found in the atom table is taken from there without a UTF-8 check:
    /// equal bytes are that atom's (valid) text.
    #[inline]
    fn atom_owned(&mut self, start: usize, tag: u8, cx: &mut Owner) -> R<Atom> {
        let (n, utf8) = match tag {
            ATOM_EXT => (self.u16()? as usize, false),
            SMALL_ATOM_UTF8_EXT => (self.u8()? as usize, true),
            ATOM_UTF8_EXT => (self.u16()? as usize, true),
            SMALL_ATOM_EXT => (self.u8()? as usize, false),
            _ => return self.atom_other(start, tag, cx),
        };
        let bytes = self.take(n)?;
        // ASCII is the same text in every atom encoding; a short one is
        // stored inline (no table, no reference count)
        if let Some(a) = Atom::inline_ascii(bytes) {
            return Ok(a);
        }
        if n > Atom::INLINE && n <= intern::MAX_INTERNED_LEN {
            let ix = intern::slot(bytes);
            if let Some(a) = &cx.atoms[ix] {
                // a latin-1 text equals its UTF-8 text only when ASCII
                if a.text_is(bytes) && (utf8 || a.is_short_ascii()) {
                    return Ok(a.clone());
                }
            }
        }
        self.atom_new(start, bytes, utf8, cx)
    }

    /// `ATOM_CACHE_REF` (the cache's atom itself) and the non-atom tags.
    #[inline(never)]
    fn atom_other(&mut self, start: usize, tag: u8, cx: &mut Owner) -> R<Atom> {
        if tag == ATOM_CACHE_REF {
            let i = self.u8()?;
            return match self.cache.and_then(|c| c.get(i as usize)) {
                Some(a) => Ok(a.clone()),
                None => self.err(start, K::AtomCacheRef(i)),
            };
        }
        let a = self.atom_tagged(start, tag)?;
        Ok(cx.atom(a.as_str()))
    }

    /// An atom not in the table: the checks of [`Self::atom_body`] on the
    /// bytes it took, then a new atom (remembered in the table).
    #[inline(never)]
    fn atom_new(&mut self, start: usize, bytes: &'a [u8], utf8: bool, cx: &mut Owner) -> R<Atom> {
        let len = bytes.len();
        let text: Cow<'a, str> = if utf8 {
            let s =
                std::str::from_utf8(bytes).map_err(|_| DecodeError::new(start, K::InvalidUtf8))?;
            if len > MAX_ATOM_CHARS && s.chars().count() > MAX_ATOM_CHARS {
                return self.err(start, K::AtomTooLong);
            }
            Cow::Borrowed(s)
        } else {
            if len > MAX_ATOM_CHARS {
                return self.err(start, K::AtomTooLong);
            }
            match std::str::from_utf8(bytes) {
                Ok(s) if bytes.is_ascii() => Cow::Borrowed(s),
                _ => Cow::Owned(bytes.iter().map(|&b| b as char).collect()),
            }
        };
        Ok(cx.atom(&text))
    }

    fn owned_term(&mut self, depth: usize, cx: &mut Owner) -> R<Term> {
        let mut t = Term::Integer(0);
        self.owned_into(depth, &mut t, cx)?;
        Ok(t)
    }

    /// Decodes one term into `slot` (a placeholder, see [`put`]). The
    /// containers write their result in place instead of returning a
    /// `Result<Term, _>` that each caller copies (those 40-byte copies of
    /// differently shaped stores stall on store forwarding).
    #[inline(never)]
    fn owned_into(&mut self, depth: usize, slot: &mut Term, cx: &mut Owner) -> R<()> {
        self.fill_owned(depth, slot, cx)
    }

    #[inline]
    fn owned_tagged(
        &mut self,
        start: usize,
        tag: u8,
        depth: usize,
        slot: &mut Term,
        cx: &mut Owner,
    ) -> R<()> {
        match tag {
            SMALL_TUPLE_EXT | LARGE_TUPLE_EXT => self.tuple_owned(start, tag, depth, slot, cx),
            LIST_EXT => self.list_owned(start, depth, slot, cx),
            MAP_EXT => self.map_owned(start, depth, slot, cx),
            NEW_FUN_EXT => self.fun_owned(start, depth, slot, cx),
            _ => self.scalar_owned(start, tag, slot, cx),
        }
    }

    #[inline(never)]
    fn scalar_owned(&mut self, start: usize, tag: u8, slot: &mut Term, cx: &mut Owner) -> R<()> {
        let t = if tag == SMALL_BIG_EXT {
            self.small_big_owned(start)?
        } else {
            self.scalar(start, tag)?.owned_scalar(cx)
        };
        put(slot, t);
        Ok(())
    }

    /// `SMALL_BIG_EXT` (timestamps and other 64-bit integers), with the
    /// checks and normalisation of [`Self::scalar`].
    #[inline]
    fn small_big_owned(&mut self, start: usize) -> R<Term> {
        let n = self.u8()? as usize;
        let (negative, mag) = self.big_body(start, n)?;
        if let Some(i) = fitting_i64(negative, mag) {
            return Ok(Term::Integer(i));
        }
        let sign = if negative {
            num_bigint::Sign::Minus
        } else {
            num_bigint::Sign::Plus
        };
        Ok(Term::from_bigint(BigInt::from_bytes_le(sign, mag)))
    }

    #[inline(never)]
    fn fun_owned(&mut self, start: usize, depth: usize, slot: &mut Term, cx: &mut Owner) -> R<()> {
        // funs are rare: the iterative decoder takes them (and their free
        // variables, however deep) whole
        self.pos = start;
        self.owned_deep(start, depth, slot, cx)
    }

    #[inline]
    fn grow_owned(&self, v: &mut Vec<Term>, n: usize) -> R<usize> {
        if n > self.remaining() {
            return self.err(self.pos, K::Truncated);
        }
        let old = v.len();
        v.extend((0..n).map(|_| Term::Integer(0)));
        Ok(old)
    }

    #[inline(never)]
    fn tuple_owned(
        &mut self,
        start: usize,
        tag: u8,
        depth: usize,
        slot: &mut Term,
        cx: &mut Owner,
    ) -> R<()> {
        let n = if tag == SMALL_TUPLE_EXT {
            self.u8()? as usize
        } else {
            self.u32()? as usize
        };
        if depth >= self.deep_at {
            return self.owned_deep(start, depth, slot, cx);
        }
        if n > self.remaining() {
            return self.err(self.pos, K::Truncated);
        }
        let mut v = Vec::with_capacity(n);
        v.extend((0..n).map(|_| Term::Integer(0)));
        for slot in v.iter_mut() {
            self.fill_owned(depth + 1, slot, cx)?;
        }
        put(slot, Term::Tuple(v));
        Ok(())
    }

    #[inline(never)]
    fn map_owned(&mut self, start: usize, depth: usize, slot: &mut Term, cx: &mut Owner) -> R<()> {
        let n = self.u32()? as usize;
        if depth >= self.deep_at {
            return self.owned_deep(start, depth, slot, cx);
        }
        if n > self.remaining() / 2 {
            return self.err(self.pos, K::Truncated);
        }
        let mut v = Vec::with_capacity(n);
        v.extend((0..n).map(|_| (Term::Integer(0), Term::Integer(0))));
        for (k, val) in v.iter_mut() {
            self.fill_owned(depth + 1, k, cx)?;
            self.fill_owned(depth + 1, val, cx)?;
        }
        // keys in strictly increasing order (as the BEAM writes small
        // maps) are unique: taken as they are without a call
        if v.windows(2).all(|w| key_less(&w[0].0, &w[1].0)) {
            put(slot, Term::Map(Map::from_sorted_unique(v)));
            return Ok(());
        }
        let m = dedup_map(v, cx);
        if !cx.ok {
            return self.err(start, K::DuplicateMapKey);
        }
        put(slot, Term::Map(m));
        Ok(())
    }

    #[inline(never)]
    fn list_owned(&mut self, start: usize, depth: usize, slot: &mut Term, cx: &mut Owner) -> R<()> {
        if depth >= self.deep_at {
            return self.owned_deep(start, depth, slot, cx);
        }
        let mut n = self.u32()? as usize;
        if n > self.remaining() {
            return self.err(self.pos, K::Truncated);
        }
        let mut elems = Vec::with_capacity(n);
        // one exit, so unoptimised builds keep a single `put` in the frame
        let t = loop {
            let old = self.grow_owned(&mut elems, n)?;
            for slot in elems[old..].iter_mut() {
                self.fill_owned(depth + 1, slot, cx)?;
            }
            let tstart = self.pos;
            match self.buf.get(self.pos) {
                Some(&NIL_EXT) => {
                    self.pos += 1;
                    break Term::List(elems);
                }
                Some(&LIST_EXT) => {
                    self.pos += 1;
                    n = self.u32()? as usize;
                }
                Some(&STRING_EXT) => {
                    self.pos += 1;
                    let k = self.u16()? as usize;
                    let b = self.take(k)?;
                    elems.extend(b.iter().map(|&x| Term::Integer(x as i64)));
                    break Term::List(elems);
                }
                Some(_) => {
                    let tail = self.owned_term(depth + 1, cx)?;
                    if elems.is_empty() {
                        break tail;
                    }
                    break Term::ImproperList {
                        elems,
                        tail: Box::new(tail),
                    };
                }
                None => return self.err(tstart, K::Truncated),
            }
        };
        put(slot, t);
        Ok(())
    }
}

fn check_version(input: &[u8]) -> R<()> {
    match input.first() {
        None => Err(DecodeError::new(0, K::Truncated)),
        Some(&VERSION) => Ok(()),
        Some(&v) => Err(DecodeError::new(0, K::BadVersion(v))),
    }
}

fn decode_ref_inner<'a>(
    input: &'a [u8],
    cache: Option<&'a [Atom]>,
    opts: &DecodeOptions,
) -> R<(TermRef<'a>, usize)> {
    check_version(input)?;
    let mut d = Decoder::new(input, 1, cache, opts.max_depth);
    let t = d.term(0)?;
    Ok((t, d.pos))
}

/// Decodes a whole buffer (version byte first) into a borrowed [`TermRef`].
/// Compressed input fails with [`K::CompressedInput`]; see [`decompress`].
pub fn decode_ref(input: &[u8]) -> Result<TermRef<'_>, DecodeError> {
    let (t, used) = decode_ref_inner(input, None, &DecodeOptions::default())?;
    if used != input.len() {
        return Err(DecodeError::new(used, K::TrailingBytes));
    }
    Ok(t)
}

/// [`decode_ref`] with explicit limits ([`DecodeOptions::max_depth`]).
pub fn decode_ref_with<'a>(
    input: &'a [u8],
    opts: &DecodeOptions,
) -> Result<TermRef<'a>, DecodeError> {
    let (t, used) = decode_ref_inner(input, None, opts)?;
    if used != input.len() {
        return Err(DecodeError::new(used, K::TrailingBytes));
    }
    Ok(t)
}

/// Decodes one term from the start of `input` into a [`TermRef`], returning
/// it with the number of bytes used.
pub fn decode_ref_prefix(input: &[u8]) -> Result<(TermRef<'_>, usize), DecodeError> {
    decode_ref_inner(input, None, &DecodeOptions::default())
}

/// Like [`decode_ref_prefix`], resolving `ATOM_CACHE_REF` through `cache`.
pub fn decode_ref_prefix_with_atom_cache<'a>(
    input: &'a [u8],
    cache: &'a [Atom],
) -> Result<(TermRef<'a>, usize), DecodeError> {
    decode_ref_inner(input, Some(cache), &DecodeOptions::default())
}

/// If `input` (version byte first) is a compressed term, inflates it into a
/// new buffer that starts with the version byte; otherwise borrows it.
pub fn decompress(input: &[u8]) -> Result<Cow<'_, [u8]>, DecodeError> {
    decompress_with(input, &DecodeOptions::default()).map(|(b, _)| b)
}

/// Returns the (possibly inflated) term bytes and the input bytes consumed
/// by the compressed envelope (0 if not compressed).
fn decompress_with<'a>(input: &'a [u8], opts: &DecodeOptions) -> R<(Cow<'a, [u8]>, usize)> {
    check_version(input)?;
    if input.get(1) != Some(&COMPRESSED) {
        return Ok((Cow::Borrowed(input), 0));
    }
    let size = match input.get(2..6) {
        Some(b) => u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize,
        None => return Err(DecodeError::new(input.len(), K::Truncated)),
    };
    if size > opts.max_uncompressed {
        return Err(DecodeError::new(2, K::CompressedTooLarge));
    }
    let mut out = Vec::with_capacity(1 + size.min(input.len().saturating_mul(8)));
    out.push(VERSION);
    let z = flate2::read::ZlibDecoder::new(&input[6..]);
    let mut limited = z.take(size as u64 + 1);
    limited
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::new(6, K::InvalidCompressed))?;
    if out.len() - 1 != size {
        return Err(DecodeError::new(6, K::InvalidCompressed));
    }
    let consumed = 6 + limited.into_inner().total_in() as usize;
    Ok((Cow::Owned(out), consumed))
}

/// Decodes into `out` (a placeholder, see [`put`]; the term is written
/// in place, not copied out through the layers); returns the bytes used.
fn decode_owned(
    input: &[u8],
    cache: Option<&[Atom]>,
    whole: bool,
    opts: &DecodeOptions,
    out: &mut Term,
) -> R<usize> {
    decode_owned_from(input, None, cache, whole, opts, out)
}

/// [`decode_owned`], with `share` the buffer `input` is (for
/// [`decode_shared`]) or `None`.
fn decode_owned_from(
    input: &[u8],
    share: Option<&Arc<Vec<u8>>>,
    cache: Option<&[Atom]>,
    whole: bool,
    opts: &DecodeOptions,
    out: &mut Term,
) -> R<usize> {
    check_version(input)?;
    if input.get(1) == Some(&COMPRESSED) {
        let (t, used) = decode_owned_compressed(input, cache, whole, opts)?;
        put(out, t);
        return Ok(used);
    }
    // uncompressed (the usual case): no envelope to account for
    let mut d = Decoder::new(input, 1, cache, opts.max_depth);
    // Only an error is copied out of the closure: moving the whole
    // `Result` (16 bytes, written as 8 + 1 + 1) through `with_table`'s
    // layers read it back with one 16-byte load, a store-forwarding stall
    // that cost 5-6% of a small term's decode.
    let mut r = Ok(());
    intern::with_table(|atoms| {
        let mut cx = Owner::new(atoms);
        cx.share = share;
        if let Err(e) = d.owned_into(0, out, &mut cx) {
            r = Err(e);
        }
    });
    r?;
    if whole && d.pos != input.len() {
        return Err(DecodeError::new(d.pos, K::TrailingBytes));
    }
    Ok(d.pos)
}

/// [`decode_owned`] returning the term.
#[inline]
fn decode_owned_term(
    input: &[u8],
    cache: Option<&[Atom]>,
    whole: bool,
    opts: &DecodeOptions,
) -> R<(Term, usize)> {
    let mut t = Term::Integer(0);
    let used = decode_owned(input, cache, whole, opts, &mut t)?;
    Ok((t, used))
}

#[inline(never)]
fn decode_owned_compressed(
    input: &[u8],
    cache: Option<&[Atom]>,
    whole: bool,
    opts: &DecodeOptions,
) -> R<(Term, usize)> {
    let (buf, consumed) = decompress_with(input, opts)?;
    let compressed = matches!(buf, Cow::Owned(_));
    let mut d = Decoder::new(&buf, 1, cache, opts.max_depth);
    let r = intern::with_table(|atoms| d.owned_term(0, &mut Owner::new(atoms)));
    let used = d.pos;
    // offsets inside inflated data are reported past the 6-byte header
    // (version, tag, size) minus the version byte they share
    let shift = |e: DecodeError| {
        if compressed {
            DecodeError::new(e.offset + 5, e.kind)
        } else {
            e
        }
    };
    let term = r.map_err(shift)?;
    let used_in_input = if compressed {
        if used != buf.len() {
            return Err(shift(DecodeError::new(used, K::TrailingBytes)));
        }
        consumed
    } else {
        used
    };
    if whole && used_in_input != input.len() {
        return Err(DecodeError::new(used_in_input, K::TrailingBytes));
    }
    Ok((term, used_in_input))
}

/// Decodes one term that has no version byte (the terms after a
/// distribution header omit it), resolving `ATOM_CACHE_REF` through
/// `cache`; returns the term and the bytes used.
pub fn decode_body_prefix_with_atom_cache(
    input: &[u8],
    cache: &[Atom],
) -> Result<(Term, usize), DecodeError> {
    let mut d = Decoder::new(input, 0, Some(cache), DEFAULT_MAX_DEPTH);
    let mut t = Term::Integer(0);
    let mut r = Ok(());
    intern::with_table(|atoms| {
        if let Err(e) = d.owned_into(0, &mut t, &mut Owner::new(atoms)) {
            r = Err(e);
        }
    });
    r?;
    Ok((t, d.pos))
}

/// Borrowed form of [`decode_body_prefix_with_atom_cache`].
pub fn decode_ref_body_prefix_with_atom_cache<'a>(
    input: &'a [u8],
    cache: &'a [Atom],
) -> Result<(TermRef<'a>, usize), DecodeError> {
    let mut d = Decoder::new(input, 0, Some(cache), DEFAULT_MAX_DEPTH);
    let t = d.term(0)?;
    Ok((t, d.pos))
}

/// Decodes a whole buffer (version byte first, compressed or not).
///
/// ```
/// // binary_to_term(<<131,100,0,2,111,107>>) on OTP 25: ok
/// let t = erlkube_etf::decode(&[131, 100, 0, 2, 111, 107]).unwrap();
/// assert_eq!(t.to_string(), "ok");
/// assert!(erlkube_etf::decode(&[131, 100, 0, 9]).is_err()); // cut short
/// ```
pub fn decode(input: &[u8]) -> Result<Term, DecodeError> {
    let mut t = Term::Integer(0);
    decode_owned(input, None, true, &DecodeOptions::default(), &mut t)?;
    Ok(t)
}

/// [`decode`] for a buffer the caller can share: binaries of at least
/// [`SHARE_MIN`] bytes that are also at least an eighth of the buffer are
/// not copied but refer to `input` ([`crate::Binary::is_shared`]), each
/// holding a reference count on it, so the buffer stays alive while any
/// of them does (the bound keeps what they hold alive to at most eight
/// times their own size). This is how a received message is best decoded:
/// a large binary in it costs no copy. Compressed input is inflated into a
/// new buffer and decoded from there as [`decode`] does (copying).
///
/// ```
/// use std::sync::Arc;
/// let mut bytes = vec![131, 109, 0, 0, 4, 0];
/// bytes.extend(std::iter::repeat_n(7u8, 1024));
/// let buf = Arc::new(bytes);
/// let t = erlkube_etf::decode_shared(&buf).unwrap();
/// match &t {
///     erlkube_etf::Term::Binary(b) => assert!(b.is_shared() && b.len() == 1024),
///     _ => unreachable!(),
/// }
/// assert_eq!(t, erlkube_etf::decode(&buf).unwrap());
/// ```
pub fn decode_shared(input: &Arc<Vec<u8>>) -> Result<Term, DecodeError> {
    let mut t = Term::Integer(0);
    let share = (input.get(1) != Some(&COMPRESSED)).then_some(input);
    decode_owned_from(input, share, None, true, &DecodeOptions::default(), &mut t)?;
    Ok(t)
}

/// Decodes a whole buffer with explicit limits.
pub fn decode_with(input: &[u8], opts: &DecodeOptions) -> Result<Term, DecodeError> {
    let mut t = Term::Integer(0);
    decode_owned(input, None, true, opts, &mut t)?;
    Ok(t)
}

/// Decodes one term from the start of `input`; returns it and the bytes
/// used.
pub fn decode_prefix(input: &[u8]) -> Result<(Term, usize), DecodeError> {
    decode_owned_term(input, None, false, &DecodeOptions::default())
}

/// Like [`decode_prefix`], resolving `ATOM_CACHE_REF` (tag 82) through
/// `cache`, the atom list of a distribution message's header.
pub fn decode_prefix_with_atom_cache(
    input: &[u8],
    cache: &[Atom],
) -> Result<(Term, usize), DecodeError> {
    decode_owned_term(input, Some(cache), false, &DecodeOptions::default())
}

/// Checks the term at the start of `input` (no version byte, as after a
/// distribution header) as [`decode_body_prefix_with_atom_cache`] would
/// decode it, without building anything; returns the bytes it uses. Map
/// keys are not checked for uniqueness (as with [`decode_ref`]).
pub fn validate_body_prefix_with_atom_cache(
    input: &[u8],
    cache: &[Atom],
) -> Result<usize, DecodeError> {
    validate_body(input, Some(cache), DEFAULT_MAX_DEPTH)
}

/// A container the iterative checker is inside of.
enum SkipFrame {
    /// Terms left (tuple elements, map keys and values).
    Seq(usize),
    /// List elements left, then the tail.
    List(usize),
    /// Free variables left of the fun at `start` whose size field says
    /// `size`.
    Fun {
        left: usize,
        start: usize,
        size: usize,
    },
}

/// A container the iterative owned decoder is inside of (40 bytes: one
/// per open level is what a deep term costs beyond the term itself).
enum OwnedFrame {
    /// Elements so far, elements in all.
    Tuple(Vec<Term>, usize),
    /// Entries so far (the last one's value a placeholder while
    /// `key_pending`), entries in all, `key_pending`, and where the map
    /// starts (for a duplicate key).
    Map(Vec<(Term, Term)>, u32, bool, usize),
    /// Elements so far and elements left before the tail.
    List(Vec<Term>, usize),
    /// Elements of a list whose tail (not a list) is being decoded.
    Tail(Vec<Term>),
    /// The fun, its free variables in all, its size field, where it starts.
    Fun(Box<FunData>, u32, u32, usize),
}

impl OwnedFrame {
    fn wants_child(&self) -> bool {
        match self {
            OwnedFrame::Tuple(v, n) => v.len() < *n,
            OwnedFrame::Map(v, n, pending, _) => *pending || v.len() < *n as usize,
            OwnedFrame::List(_, left) => *left > 0,
            OwnedFrame::Tail(_) => true,
            OwnedFrame::Fun(f, n, _, _) => f.free_vars.len() < *n as usize,
        }
    }

    /// Takes a decoded child; a list's tail completes the list, which is
    /// returned.
    fn deliver(&mut self, t: Term) -> Option<Term> {
        match self {
            OwnedFrame::Tuple(v, _) => v.push(t),
            OwnedFrame::Map(v, _, pending, _) => {
                if *pending {
                    if let Some(e) = v.last_mut() {
                        put(&mut e.1, t);
                    }
                } else {
                    v.push((t, Term::Integer(0)));
                }
                *pending = !*pending;
            }
            OwnedFrame::List(v, left) => {
                v.push(t);
                *left -= 1;
            }
            OwnedFrame::Tail(v) => {
                let elems = std::mem::take(v);
                return Some(if elems.is_empty() {
                    t
                } else {
                    Term::ImproperList {
                        elems,
                        tail: Box::new(t),
                    }
                });
            }
            OwnedFrame::Fun(f, _, _, _) => f.free_vars.push(t),
        }
        None
    }
}

/// The deep paths: the recursive checker and owned decoder hand a
/// container over to these at [`RECURSION_DEPTH`]; they decode it whole
/// with an explicit stack (one small frame per open container, on the
/// heap), with the checks, errors and offsets of the recursive code.
impl<'a> Decoder<'a> {
    #[inline]
    fn depth_check(&self, start: usize, depth: usize) -> R<()> {
        if depth >= self.max_depth {
            return self.err(start, K::DepthLimit);
        }
        Ok(())
    }

    /// Checks the container at `start` (at nesting `depth`) and all of
    /// it, as [`Self::skip`] does.
    #[cold]
    #[inline(never)]
    fn skip_deep(&mut self, start: usize, depth: usize) -> R<()> {
        self.pos = start;
        let mut stack: Vec<SkipFrame> = Vec::new();
        loop {
            // one term, a child of the top frame (or the root)
            let d = depth + stack.len();
            let start = self.pos;
            let tag = self.u8()?;
            match tag {
                SMALL_TUPLE_EXT | LARGE_TUPLE_EXT => {
                    let n = if tag == SMALL_TUPLE_EXT {
                        self.u8()? as usize
                    } else {
                        self.u32()? as usize
                    };
                    self.depth_check(start, d)?;
                    if n > self.remaining() {
                        return self.err(self.pos, K::Truncated);
                    }
                    stack.push(SkipFrame::Seq(n));
                }
                MAP_EXT => {
                    let n = self.u32()? as usize;
                    self.depth_check(start, d)?;
                    if n > self.remaining() / 2 {
                        return self.err(self.pos, K::Truncated);
                    }
                    stack.push(SkipFrame::Seq(2 * n));
                }
                LIST_EXT => {
                    self.depth_check(start, d)?;
                    let n = self.u32()? as usize;
                    if n > self.remaining() {
                        return self.err(self.pos, K::Truncated);
                    }
                    stack.push(SkipFrame::List(n));
                }
                NEW_FUN_EXT => {
                    self.depth_check(start, d)?;
                    let size = self.u32()? as usize;
                    self.u8()?;
                    self.take(16)?;
                    self.u32()?;
                    let nfree = self.u32()? as usize;
                    self.skip_atom()?;
                    self.small_int_term()?;
                    self.small_int_term()?;
                    self.pid()?;
                    if nfree > self.remaining() {
                        return self.err(self.pos, K::Truncated);
                    }
                    stack.push(SkipFrame::Fun {
                        left: nfree,
                        start,
                        size,
                    });
                }
                _ => {
                    // not a container: the recursive checker does not recurse
                    self.pos = start;
                    self.skip(d)?;
                }
            }
            // close what is complete; stop at a frame that wants a child
            loop {
                match stack.last_mut() {
                    None => return Ok(()),
                    Some(SkipFrame::Seq(0)) => {
                        stack.pop();
                    }
                    Some(SkipFrame::Seq(n)) => {
                        *n -= 1;
                        break;
                    }
                    Some(SkipFrame::List(0)) => {
                        let tstart = self.pos;
                        match self.buf.get(self.pos) {
                            Some(&NIL_EXT) => {
                                self.pos += 1;
                                stack.pop();
                            }
                            Some(&LIST_EXT) => {
                                self.pos += 1;
                                let n = self.u32()? as usize;
                                if n > self.remaining() {
                                    return self.err(self.pos, K::Truncated);
                                }
                                stack.pop();
                                stack.push(SkipFrame::List(n));
                            }
                            Some(&STRING_EXT) => {
                                self.pos += 1;
                                let k = self.u16()? as usize;
                                self.take(k)?;
                                stack.pop();
                            }
                            // the tail, one level below the list
                            Some(_) => {
                                stack.pop();
                                stack.push(SkipFrame::Seq(0));
                                break;
                            }
                            None => return self.err(tstart, K::Truncated),
                        }
                    }
                    Some(SkipFrame::List(n)) => {
                        *n -= 1;
                        break;
                    }
                    Some(SkipFrame::Fun {
                        left: 0,
                        start,
                        size,
                    }) => {
                        let (start, size) = (*start, *size);
                        if self.pos - (start + 1) != size {
                            return self.err(start, K::InvalidFunSize);
                        }
                        stack.pop();
                    }
                    Some(SkipFrame::Fun { left, .. }) => {
                        *left -= 1;
                        break;
                    }
                }
            }
        }
    }

    /// Decodes the container at `start` (at nesting `depth`) whole into
    /// `slot`, as the recursive owned decoder does.
    #[cold]
    #[inline(never)]
    fn owned_deep(&mut self, start: usize, depth: usize, slot: &mut Term, cx: &mut Owner) -> R<()> {
        self.pos = start;
        let mut stack: Vec<OwnedFrame> = Vec::new();
        let mut value = self.open_deep(depth, &mut stack, cx)?;
        loop {
            if let Some(t) = value.take() {
                match stack.last_mut() {
                    None => {
                        put(slot, t);
                        return Ok(());
                    }
                    Some(f) => value = f.deliver(t),
                }
                if value.is_some() {
                    // a list's tail completed it
                    stack.pop();
                    continue;
                }
            }
            let top = stack.last_mut().expect("an open container");
            if top.wants_child() {
                value = self.open_deep(depth + stack.len(), &mut stack, cx)?;
                continue;
            }
            if let OwnedFrame::List(elems, left) = top {
                let tstart = self.pos;
                match self.buf.get(self.pos) {
                    Some(&NIL_EXT) => {
                        self.pos += 1;
                        value = Some(Term::List(std::mem::take(elems)));
                    }
                    Some(&LIST_EXT) => {
                        self.pos += 1;
                        let n = self.u32()? as usize;
                        if n > self.remaining() {
                            return self.err(self.pos, K::Truncated);
                        }
                        elems.reserve(n);
                        *left = n;
                        continue;
                    }
                    Some(&STRING_EXT) => {
                        self.pos += 1;
                        let k = self.u16()? as usize;
                        let b = self.take(k)?;
                        elems.extend(b.iter().map(|&x| Term::Integer(x as i64)));
                        value = Some(Term::List(std::mem::take(elems)));
                    }
                    Some(_) => {
                        let elems = std::mem::take(elems);
                        *top = OwnedFrame::Tail(elems);
                        continue;
                    }
                    None => return self.err(tstart, K::Truncated),
                }
                stack.pop();
                continue;
            }
            // complete
            value = Some(match stack.pop().expect("an open container") {
                OwnedFrame::Tuple(v, _) => Term::Tuple(v),
                OwnedFrame::Map(v, _, _, start) => {
                    let m = dedup_map(v, cx);
                    if !cx.ok {
                        return self.err(start, K::DuplicateMapKey);
                    }
                    Term::Map(m)
                }
                OwnedFrame::Fun(f, _, size, start) => {
                    if self.pos - (start + 1) != size as usize {
                        return self.err(start, K::InvalidFunSize);
                    }
                    Term::Fun(Fun(f))
                }
                OwnedFrame::List(..) | OwnedFrame::Tail(_) => unreachable!("handled above"),
            });
        }
    }

    /// Reads one term at nesting `depth`: a scalar is returned, a
    /// container's head opens a frame.
    fn open_deep(
        &mut self,
        depth: usize,
        stack: &mut Vec<OwnedFrame>,
        cx: &mut Owner,
    ) -> R<Option<Term>> {
        let start = self.pos;
        let tag = self.u8()?;
        match tag {
            SMALL_TUPLE_EXT | LARGE_TUPLE_EXT => {
                let n = if tag == SMALL_TUPLE_EXT {
                    self.u8()? as usize
                } else {
                    self.u32()? as usize
                };
                self.depth_check(start, depth)?;
                if n > self.remaining() {
                    return self.err(self.pos, K::Truncated);
                }
                stack.push(OwnedFrame::Tuple(Vec::with_capacity(n), n));
            }
            MAP_EXT => {
                let n = self.u32()? as usize;
                self.depth_check(start, depth)?;
                if n > self.remaining() / 2 {
                    return self.err(self.pos, K::Truncated);
                }
                stack.push(OwnedFrame::Map(
                    Vec::with_capacity(n),
                    n as u32,
                    false,
                    start,
                ));
            }
            LIST_EXT => {
                self.depth_check(start, depth)?;
                let n = self.u32()? as usize;
                if n > self.remaining() {
                    return self.err(self.pos, K::Truncated);
                }
                stack.push(OwnedFrame::List(Vec::with_capacity(n), n));
            }
            NEW_FUN_EXT => {
                self.depth_check(start, depth)?;
                let size = self.u32()? as usize;
                let arity = self.u8()?;
                let uniq: [u8; 16] = self.take(16)?.try_into().expect("16 bytes");
                let index = self.u32()?;
                let nfree = self.u32()? as usize;
                let module = self.atom()?.to_atom_cached(cx);
                let old_index = self.small_int_term()?;
                let old_uniq = self.small_int_term()?;
                let pid = match &self.pid()?.owned_scalar(cx) {
                    Term::Pid(p) => p.clone(),
                    _ => return self.err(start, K::UnexpectedType),
                };
                if nfree > self.remaining() {
                    return self.err(self.pos, K::Truncated);
                }
                let f = FunData {
                    arity,
                    uniq,
                    index,
                    module,
                    old_index,
                    old_uniq,
                    pid,
                    free_vars: Vec::with_capacity(nfree),
                };
                stack.push(OwnedFrame::Fun(
                    Box::new(f),
                    nfree as u32,
                    size as u32,
                    start,
                ));
            }
            _ => {
                // not a container: the recursive decoder does not recurse
                self.pos = start;
                let mut t = Term::Integer(0);
                self.fill_owned(depth, &mut t, cx)?;
                return Ok(Some(t));
            }
        }
        Ok(None)
    }
}

/// A container the iterative borrowed decoder is inside of.
enum RefFrame<'a> {
    /// Elements so far, elements in all.
    Tuple(Vec<TermRef<'a>>, usize),
    /// Entries so far (the last one's value a placeholder while
    /// `key_pending`), entries in all, `key_pending`.
    Map(Vec<(TermRef<'a>, TermRef<'a>)>, usize, bool),
    /// Elements so far and elements left before the tail.
    List(Vec<TermRef<'a>>, usize),
    /// Elements of a list whose tail (not a list) is being decoded.
    Tail(Vec<TermRef<'a>>),
    /// The fun, its free variables in all, its size field, where it starts.
    Fun(Box<FunRef<'a>>, usize, usize, usize),
}

impl<'a> RefFrame<'a> {
    fn wants_child(&self) -> bool {
        match self {
            RefFrame::Tuple(v, n) => v.len() < *n,
            RefFrame::Map(v, n, pending) => *pending || v.len() < *n,
            RefFrame::List(_, left) => *left > 0,
            RefFrame::Tail(_) => true,
            RefFrame::Fun(f, n, _, _) => f.free_vars.len() < *n,
        }
    }

    /// Takes a decoded child; a list's tail completes the list, which is
    /// returned.
    fn deliver(&mut self, t: TermRef<'a>) -> Option<TermRef<'a>> {
        match self {
            RefFrame::Tuple(v, _) => v.push(t),
            RefFrame::Map(v, _, pending) => {
                if *pending {
                    if let Some(e) = v.last_mut() {
                        e.1 = t;
                    }
                } else {
                    v.push((t, TermRef::Integer(0)));
                }
                *pending = !*pending;
            }
            RefFrame::List(v, left) => {
                v.push(t);
                *left -= 1;
            }
            RefFrame::Tail(v) => {
                let elems = std::mem::take(v);
                return Some(if elems.is_empty() {
                    t
                } else {
                    TermRef::ImproperList {
                        elems,
                        tail: Box::new(t),
                    }
                });
            }
            RefFrame::Fun(f, _, _, _) => f.free_vars.push(t),
        }
        None
    }
}

/// The deep path of the borrowed decoder: it hands a container over to
/// this at [`RECURSION_DEPTH`], which decodes it whole with an explicit
/// stack (one frame per open container, on the heap), with the checks,
/// errors and offsets of the recursive code.
impl<'a> Decoder<'a> {
    #[cold]
    #[inline(never)]
    fn ref_deep(&mut self, start: usize, depth: usize) -> R<TermRef<'a>> {
        self.pos = start;
        let mut stack: Vec<RefFrame<'a>> = Vec::new();
        let mut value = self.open_ref_deep(depth, &mut stack)?;
        loop {
            if let Some(t) = value.take() {
                match stack.last_mut() {
                    None => return Ok(t),
                    Some(f) => value = f.deliver(t),
                }
                if value.is_some() {
                    // a list's tail completed it
                    stack.pop();
                    continue;
                }
            }
            let top = stack.last_mut().expect("an open container");
            if top.wants_child() {
                value = self.open_ref_deep(depth + stack.len(), &mut stack)?;
                continue;
            }
            if let RefFrame::List(elems, left) = top {
                let tstart = self.pos;
                match self.buf.get(self.pos) {
                    Some(&NIL_EXT) => {
                        self.pos += 1;
                        value = Some(TermRef::List(std::mem::take(elems)));
                    }
                    Some(&LIST_EXT) => {
                        self.pos += 1;
                        let n = self.u32()? as usize;
                        if n > self.remaining() {
                            return self.err(self.pos, K::Truncated);
                        }
                        elems.reserve(n);
                        *left = n;
                        continue;
                    }
                    Some(&STRING_EXT) => {
                        self.pos += 1;
                        let k = self.u16()? as usize;
                        let b = self.take(k)?;
                        elems.extend(b.iter().map(|&x| TermRef::Integer(x as i64)));
                        value = Some(TermRef::List(std::mem::take(elems)));
                    }
                    Some(_) => {
                        let elems = std::mem::take(elems);
                        *top = RefFrame::Tail(elems);
                        continue;
                    }
                    None => return self.err(tstart, K::Truncated),
                }
                stack.pop();
                continue;
            }
            // complete
            value = Some(match stack.pop().expect("an open container") {
                RefFrame::Tuple(v, _) => TermRef::Tuple(v),
                RefFrame::Map(v, _, _) => TermRef::Map(v),
                RefFrame::Fun(f, _, size, start) => {
                    if self.pos - (start + 1) != size {
                        return self.err(start, K::InvalidFunSize);
                    }
                    TermRef::Fun(f)
                }
                RefFrame::List(..) | RefFrame::Tail(_) => unreachable!("handled above"),
            });
        }
    }

    /// Reads one term at nesting `depth`: a scalar is returned, a
    /// container's head opens a frame.
    fn open_ref_deep(
        &mut self,
        depth: usize,
        stack: &mut Vec<RefFrame<'a>>,
    ) -> R<Option<TermRef<'a>>> {
        let start = self.pos;
        let tag = self.u8()?;
        match tag {
            SMALL_TUPLE_EXT | LARGE_TUPLE_EXT => {
                let n = if tag == SMALL_TUPLE_EXT {
                    self.u8()? as usize
                } else {
                    self.u32()? as usize
                };
                self.depth_check(start, depth)?;
                if n > self.remaining() {
                    return self.err(self.pos, K::Truncated);
                }
                stack.push(RefFrame::Tuple(Vec::with_capacity(n), n));
            }
            MAP_EXT => {
                let n = self.u32()? as usize;
                self.depth_check(start, depth)?;
                if n > self.remaining() / 2 {
                    return self.err(self.pos, K::Truncated);
                }
                stack.push(RefFrame::Map(Vec::with_capacity(n), n, false));
            }
            LIST_EXT => {
                self.depth_check(start, depth)?;
                let n = self.u32()? as usize;
                if n > self.remaining() {
                    return self.err(self.pos, K::Truncated);
                }
                stack.push(RefFrame::List(Vec::with_capacity(n), n));
            }
            NEW_FUN_EXT => {
                self.depth_check(start, depth)?;
                let size = self.u32()? as usize;
                let arity = self.u8()?;
                let uniq: [u8; 16] = self.take(16)?.try_into().expect("16 bytes");
                let index = self.u32()?;
                let nfree = self.u32()? as usize;
                let module = self.atom()?;
                let old_index = self.small_int_term()?;
                let old_uniq = self.small_int_term()?;
                let pid = self.pid()?;
                if nfree > self.remaining() {
                    return self.err(self.pos, K::Truncated);
                }
                let f = FunRef {
                    arity,
                    uniq,
                    index,
                    module,
                    old_index,
                    old_uniq,
                    pid,
                    free_vars: Vec::with_capacity(nfree),
                };
                stack.push(RefFrame::Fun(Box::new(f), nfree, size, start));
            }
            _ => {
                // not a container: the recursive decoder does not recurse
                self.pos = start;
                let mut t = TermRef::Integer(0);
                self.fill_term(depth, &mut t)?;
                return Ok(Some(t));
            }
        }
        Ok(None)
    }
}
