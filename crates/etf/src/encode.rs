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
#[inline]
pub fn encode_into(term: &Term, out: &mut Vec<u8>) {
    out.push(VERSION);
    Enc::run(term, false, out);
}

/// Appends the encoding (version byte first) with explicit options.
pub fn encode_with(term: &Term, opts: &EncodeOptions, out: &mut Vec<u8>) {
    let utf8 = opts.minor_version >= 2;
    match opts.compression {
        None => {
            out.push(VERSION);
            Enc::run(term, utf8, out);
        }
        Some(level) => {
            let mut plain = Vec::with_capacity(64);
            Enc::run(term, utf8, &mut plain);
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
    Enc::run(term, opts.minor_version >= 2, out)
}

/// Appends `src` to `out`. Up to 16 bytes are gathered into one `u128`
/// with (overlapping) fixed-size loads and written with one fixed-size
/// store, instead of a call to `memcpy`: atoms and short binaries are the
/// common case. (Gathering in registers, not in a stack buffer, avoids a
/// store-forwarding stall on the wide store.)
#[inline(always)]
fn copy_short(out: &mut Vec<u8>, src: &[u8]) {
    let n = src.len();
    if n <= 16 && out.capacity() - out.len() >= 16 {
        let w: u128 = if n >= 8 {
            let lo = u64::from_le_bytes(src[..8].try_into().unwrap_or([0; 8]));
            let hi = u64::from_le_bytes(src[n - 8..].try_into().unwrap_or([0; 8]));
            lo as u128 | (hi as u128) << (8 * (n - 8))
        } else if n >= 4 {
            let lo = u32::from_le_bytes(src[..4].try_into().unwrap_or([0; 4]));
            let hi = u32::from_le_bytes(src[n - 4..].try_into().unwrap_or([0; 4]));
            (lo as u64 | (hi as u64) << (8 * (n - 4))) as u128
        } else if n > 0 {
            src[0] as u128 | (src[n / 2] as u128) << (8 * (n / 2)) | (src[n - 1] as u128) << (8 * (n - 1))
        } else {
            0
        };
        let len = out.len();
        out.extend_from_slice(&w.to_le_bytes());
        out.truncate(len + n);
    } else {
        out.extend_from_slice(src);
    }
}

/// The encoder. It owns the output `Vec` while it runs (taken from the
/// caller and given back) so that every write reaches the vector's fields
/// through one pointer. Scalars are written inline in the loops over
/// container elements ([`Enc::leaf`]); only containers and rare terms take
/// a (recursive) call.
struct Enc {
    out: Vec<u8>,
    utf8: bool,
}

impl Enc {
    #[inline(always)]
    fn run(term: &Term, utf8: bool, out: &mut Vec<u8>) {
        let mut e = Enc {
            out: std::mem::take(out),
            utf8,
        };
        e.term(term);
        *out = e.out;
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

    #[inline(always)]
    fn term(&mut self, t: &Term) {
        if !self.leaf(t) {
            self.node(t)
        }
    }

    /// The elements of a tuple or list, in order.
    #[inline(always)]
    fn seq(&mut self, v: &[Term]) {
        for e in v {
            if !self.leaf(e) {
                self.node(e)
            }
        }
    }

    /// Writes the common scalars (integers that fit `i64`, floats, atoms,
    /// binaries); false for anything else.
    #[inline(always)]
    fn leaf(&mut self, t: &Term) -> bool {
        match t {
            Term::Integer(i) => self.int(*i),
            Term::Atom(a) => self.atom(a),
            Term::Float(f) => {
                let [a, b, c, d, e, g, h, k] = f.to_bits().to_be_bytes();
                self.put([NEW_FLOAT_EXT, a, b, c, d, e, g, h, k]);
            }
            Term::Binary(b) => {
                if b.len() <= u32::MAX as usize {
                    self.out.reserve(5 + b.len());
                    self.tag_u32(BINARY_EXT, b.len() as u32);
                    copy_short(&mut self.out, b);
                } else {
                    // more than 4 GiB: the BEAM cannot hold it either;
                    // write what the length field can say
                    self.tag_u32(BINARY_EXT, u32::MAX);
                    self.out.extend_from_slice(&b[..u32::MAX as usize]);
                }
            }
            _ => return false,
        }
        true
    }

    /// Atoms with a pre-encoded head (ASCII, under 128 bytes): one copy.
    #[inline(always)]
    fn atom(&mut self, a: &Atom) {
        match a.ascii_encoded() {
            Some(enc) if !self.utf8 => copy_short(&mut self.out, enc),
            Some(enc) => {
                // [ATOM_EXT, 0, len, text…] → [SMALL_ATOM_UTF8_EXT, len, text…]
                self.out.push(SMALL_ATOM_UTF8_EXT);
                copy_short(&mut self.out, enc.get(2..).unwrap_or(&[]));
            }
            None => self.atom_slow(a),
        }
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

    #[inline(always)]
    fn int(&mut self, i: i64) {
        if (0..=255).contains(&i) {
            self.put([SMALL_INTEGER_EXT, i as u8]);
        } else if i >= i32::MIN as i64 && i <= i32::MAX as i64 {
            self.tag_u32(INTEGER_EXT, i as i32 as u32);
        } else {
            self.int_big(i)
        }
    }

    #[inline(never)]
    fn int_big(&mut self, i: i64) {
        let mag = i.unsigned_abs().to_le_bytes();
        let n = mag.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        self.put([SMALL_BIG_EXT, n as u8, (i < 0) as u8]);
        self.out.extend_from_slice(&mag[..n]);
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

    /// A proper list: `STRING_EXT` when every element is a byte (and
    /// there are at most 65535), else `LIST_EXT` … `NIL_EXT`.
    fn list(&mut self, v: &[Term]) {
        if v.is_empty() {
            self.u8(NIL_EXT);
            return;
        }
        if v.len() <= u16::MAX as usize {
            // try STRING_EXT in one pass; undo at the first non-byte
            let start = self.out.len();
            self.out.reserve(3 + v.len());
            let [a, b] = (v.len() as u16).to_be_bytes();
            self.put([STRING_EXT, a, b]);
            let mut all_bytes = true;
            for e in v {
                match e {
                    Term::Integer(i @ 0..=255) => self.out.push(*i as u8),
                    _ => {
                        all_bytes = false;
                        break;
                    }
                }
            }
            if all_bytes {
                return;
            }
            self.out.truncate(start);
        }
        self.tag_u32(LIST_EXT, v.len() as u32);
        self.seq(v);
        self.u8(NIL_EXT);
    }

    /// Containers and the rare terms (everything [`Enc::leaf`] does not
    /// write).
    #[inline(never)]
    fn node(&mut self, t: &Term) {
        match t {
            Term::Tuple(v) => {
                if v.len() < 256 {
                    self.put([SMALL_TUPLE_EXT, v.len() as u8]);
                } else {
                    self.tag_u32(LARGE_TUPLE_EXT, v.len() as u32);
                }
                self.seq(v);
            }
            Term::List(v) => self.list(v),
            Term::Map(m) => self.map(m),
            Term::ImproperList { elems, tail } => {
                self.tag_u32(LIST_EXT, elems.len() as u32);
                self.seq(elems);
                self.term(tail);
            }
            Term::BigInt(b) => self.big(b),
            Term::BitBinary { bytes, bits } => {
                self.tag_u32(BIT_BINARY_EXT, bytes.len() as u32);
                self.u8(*bits);
                self.out.extend_from_slice(bytes);
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
            // the scalars, if ever called with one
            t => {
                self.leaf(t);
            }
        }
    }
}
