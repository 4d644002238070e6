//! The encoder: [`Term`] → bytes, as `erlang:term_to_binary/1,2` writes them.

use std::io::Write;

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
pub fn encode(term: &Term) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_into(term, &mut out);
    out
}

/// Appends the encoding (version byte first) with the default options.
pub fn encode_into(term: &Term, out: &mut Vec<u8>) {
    encode_with(term, &EncodeOptions::default(), out)
}

/// Appends the encoding (version byte first) with explicit options.
pub fn encode_with(term: &Term, opts: &EncodeOptions, out: &mut Vec<u8>) {
    let utf8 = opts.minor_version >= 2;
    match opts.compression {
        None => {
            out.push(VERSION);
            Enc { out, utf8 }.term(term);
        }
        Some(level) => {
            let mut plain = Vec::with_capacity(64);
            Enc {
                out: &mut plain,
                utf8,
            }
            .term(term);
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
    Enc {
        out,
        utf8: opts.minor_version >= 2,
    }
    .term(term)
}

struct Enc<'o> {
    out: &'o mut Vec<u8>,
    utf8: bool,
}

impl Enc<'_> {
    #[inline]
    fn u8(&mut self, b: u8) {
        self.out.push(b);
    }
    #[inline]
    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    #[inline]
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    /// Atoms of up to 255 bytes that are ASCII (or any atom with UTF-8
    /// atoms): one reserve, a 2- or 3-byte head and one copy.
    #[inline]
    fn atom(&mut self, a: &Atom) {
        let b = a.as_str().as_bytes();
        if b.len() < 256 {
            if self.utf8 {
                self.out.reserve(2 + b.len());
                self.out
                    .extend_from_slice(&[SMALL_ATOM_UTF8_EXT, b.len() as u8]);
                self.out.extend_from_slice(b);
                return;
            }
            if b.is_ascii() {
                self.out.reserve(3 + b.len());
                self.out.extend_from_slice(&[ATOM_EXT, 0, b.len() as u8]);
                self.out.extend_from_slice(b);
                return;
            }
        }
        self.atom_slow(a)
    }

    #[inline(never)]
    fn atom_slow(&mut self, a: &Atom) {
        let s = a.as_str();
        let b = s.as_bytes();
        if !self.utf8 {
            if b.is_ascii() {
                self.out.reserve(3 + b.len());
                self.u8(ATOM_EXT);
                self.u16(b.len() as u16);
                self.out.extend_from_slice(b);
                return;
            }
            if s.chars().all(|c| (c as u32) < 256) {
                let n = s.chars().count();
                self.u8(ATOM_EXT);
                self.u16(n as u16);
                self.out.extend(s.chars().map(|c| c as u32 as u8));
                return;
            }
        }
        if b.len() < 256 {
            self.out.reserve(2 + b.len());
            self.u8(SMALL_ATOM_UTF8_EXT);
            self.u8(b.len() as u8);
        } else {
            self.u8(ATOM_UTF8_EXT);
            self.u16(b.len().min(u16::MAX as usize) as u16);
        }
        self.out
            .extend_from_slice(&b[..b.len().min(u16::MAX as usize)]);
    }

    /// A tag and a big-endian `u32` in one copy.
    #[inline]
    fn tag_u32(&mut self, tag: u8, v: u32) {
        let [a, b, c, d] = v.to_be_bytes();
        self.out.extend_from_slice(&[tag, a, b, c, d]);
    }

    fn int(&mut self, i: i64) {
        if (0..=255).contains(&i) {
            self.out.extend_from_slice(&[SMALL_INTEGER_EXT, i as u8]);
        } else if i >= i32::MIN as i64 && i <= i32::MAX as i64 {
            self.tag_u32(INTEGER_EXT, i as i32 as u32);
        } else {
            let mag = i.unsigned_abs().to_le_bytes();
            let n = mag.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            self.out
                .extend_from_slice(&[SMALL_BIG_EXT, n as u8, (i < 0) as u8]);
            self.out.extend_from_slice(&mag[..n]);
        }
    }

    fn big(&mut self, b: &BigInt) {
        let (sign, mag) = b.to_bytes_le();
        let neg = sign == num_bigint::Sign::Minus;
        if mag.len() <= 255 {
            self.out
                .extend_from_slice(&[SMALL_BIG_EXT, mag.len() as u8, neg as u8]);
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

    fn map(&mut self, m: &Map) {
        self.tag_u32(MAP_EXT, m.len() as u32);
        // small maps are kept in map-key order by `Map` itself
        for (k, v) in m.entries() {
            self.term(k);
            self.term(v);
        }
    }

    fn fun(&mut self, f: &Fun) {
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
        for v in &f.free_vars {
            self.term(v);
        }
        let size = (self.out.len() - size_at) as u32;
        self.out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    }

    fn term(&mut self, t: &Term) {
        match t {
            Term::Integer(i) => self.int(*i),
            Term::BigInt(b) => self.big(b),
            Term::Float(f) => {
                let [a, b, c, d, e, g, h, k] = f.to_bits().to_be_bytes();
                self.out
                    .extend_from_slice(&[NEW_FLOAT_EXT, a, b, c, d, e, g, h, k]);
            }
            Term::Atom(a) => self.atom(a),
            Term::Binary(b) => {
                self.out.reserve(5 + b.len());
                self.tag_u32(BINARY_EXT, b.len() as u32);
                self.out.extend_from_slice(b);
            }
            Term::BitBinary { bytes, bits } => {
                self.u8(BIT_BINARY_EXT);
                self.u32(bytes.len() as u32);
                self.u8(*bits);
                self.out.extend_from_slice(bytes);
            }
            Term::Tuple(v) => {
                if v.len() < 256 {
                    self.out
                        .extend_from_slice(&[SMALL_TUPLE_EXT, v.len() as u8]);
                } else {
                    self.tag_u32(LARGE_TUPLE_EXT, v.len() as u32);
                }
                for e in v {
                    self.term(e);
                }
            }
            Term::List(v) => {
                if v.is_empty() {
                    self.u8(NIL_EXT);
                    return;
                }
                // STRING_EXT for byte lists: checked first (stops at the
                // first non-byte), then written in one reserve
                if v.len() <= u16::MAX as usize
                    && v.iter().all(|e| matches!(e, Term::Integer(0..=255)))
                {
                    self.out.reserve(3 + v.len());
                    let [a, b] = (v.len() as u16).to_be_bytes();
                    self.out.extend_from_slice(&[STRING_EXT, a, b]);
                    self.out.extend(v.iter().map(|e| match e {
                        Term::Integer(i) => *i as u8,
                        _ => 0,
                    }));
                    return;
                }
                self.tag_u32(LIST_EXT, v.len() as u32);
                for e in v {
                    self.term(e);
                }
                self.u8(NIL_EXT);
            }
            Term::ImproperList { elems, tail } => {
                self.u8(LIST_EXT);
                self.u32(elems.len() as u32);
                for e in elems {
                    self.term(e);
                }
                self.term(tail);
            }
            Term::Map(m) => self.map(m),
            Term::Pid(p) => self.pid(p),
            Term::Port(p) => {
                if p.id > u32::MAX as u64 {
                    self.u8(V4_PORT_EXT);
                    self.atom(&p.node);
                    self.out.extend_from_slice(&p.id.to_be_bytes());
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
                self.out.extend_from_slice(&[SMALL_INTEGER_EXT, *arity]);
            }
            Term::Fun(f) => self.fun(f),
        }
    }
}
