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

/// The spare capacity of the output vector, written by [`leaves`].
type Spare = [MaybeUninit<u8>];

/// Copies `src` to the start of `dst`; panics (never UB) if `dst` is
/// shorter. For short slices the byte loop becomes fixed-size moves, for
/// long ones a `memcpy`.
#[inline(always)]
fn fill(dst: &mut Spare, src: &[u8]) {
    for (d, s) in dst[..src.len()].iter_mut().zip(src) {
        *d = MaybeUninit::new(*s);
    }
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
        src[0] as u128 | (src[n / 2] as u128) << (8 * (n / 2)) | (src[n - 1] as u128) << (8 * (n - 1))
    } else {
        0
    };
    fill(dst, &w.to_le_bytes());
}

/// Binaries longer than this are copied by `memcpy` (in [`Enc::node`]),
/// not in the [`leaves`] loop.
const LONG: usize = 256;

/// Where [`leaves`] stopped.
struct Stop {
    /// Index of the first element not written.
    index: usize,
    /// Bytes written (initialised) from the start of the spare capacity.
    written: usize,
    /// Room the element at `index` needs if it is a leaf that did not fit;
    /// 0 if it is not a leaf (or the elements ended).
    need: usize,
}

/// The hot loop: writes the elements `get(i)`, `get(i + 1)`, … that are
/// common scalars ("leaves": integers that fit 32 bits, floats, atoms with
/// an ASCII head, binaries) into `dst`, from its start, with the write
/// position in a register and one room check per element, until an
/// element is not a leaf, does not fit, or the elements end.
///
/// Every advance of the position by `k` follows a write of at least `k`
/// bytes at that position through a bounds-checked slice, so the first
/// `written` bytes of `dst` are initialised when it returns.
#[cfg_attr(not(debug_assertions), inline(always))]
fn leaves<'t>(
    get: impl Fn(usize) -> Option<&'t Term>,
    mut i: usize,
    dst: &mut Spare,
    utf8: bool,
) -> Stop {
    let mut pos = 0;
    while let Some(t) = get(i) {
        let d = &mut dst[pos..];
        let stop = |need| Stop {
            index: i,
            written: pos,
            need,
        };
        match t {
            Term::Integer(x) => {
                let x = *x;
                if d.len() < 5 {
                    return stop(5);
                }
                if (0..=255).contains(&x) {
                    fill(d, &[SMALL_INTEGER_EXT, x as u8]);
                    pos += 2;
                } else if x >= i32::MIN as i64 && x <= i32::MAX as i64 {
                    let [a, b, c, e] = (x as i32).to_be_bytes();
                    fill(d, &[INTEGER_EXT, a, b, c, e]);
                    pos += 5;
                } else {
                    return stop(0);
                }
            }
            Term::Float(f) => {
                if d.len() < 9 {
                    return stop(9);
                }
                let [a, b, c, e, g, h, k, l] = f.to_bits().to_be_bytes();
                fill(d, &[NEW_FLOAT_EXT, a, b, c, e, g, h, k, l]);
                pos += 9;
            }
            Term::Atom(atom) => {
                let Some(enc) = atom.ascii_encoded() else {
                    return stop(0);
                };
                // [ATOM_EXT, 0, len, text…]; minor version 2 writes
                // [SMALL_ATOM_UTF8_EXT, len, text…] from the same bytes
                let src = if utf8 { enc.get(1..).unwrap_or(&[]) } else { enc };
                let n = src.len();
                if d.len() < n.max(16) {
                    return stop(n.max(16));
                }
                copy16(d, src);
                if utf8 {
                    d[0] = MaybeUninit::new(SMALL_ATOM_UTF8_EXT);
                }
                pos += n;
            }
            Term::Binary(b) => {
                let n = b.len();
                if n > LONG {
                    // long binaries: `Vec::extend_from_slice` (memcpy)
                    return stop(0);
                }
                if d.len() < 5 + n.max(16) {
                    return stop(5 + n.max(16));
                }
                let [a, c, e, g] = (n as u32).to_be_bytes();
                fill(d, &[BINARY_EXT, a, c, e, g]);
                copy16(&mut d[5..], b);
                pos += 5 + n;
            }
            _ => return stop(0),
        }
        i += 1;
    }
    Stop {
        index: i,
        written: pos,
        need: 0,
    }
}

/// The encoder. It owns the output `Vec` while it runs (taken from the
/// caller and given back). Runs of scalar elements are written by
/// [`leaves`] straight into the vector's spare capacity; containers and
/// rare terms go through [`Enc::node`] (recursive) and `Vec` writes.
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

    /// Lets `f` write into the spare capacity; `f` returns how many bytes
    /// it initialised from the start.
    #[inline(always)]
    fn write_spare(&mut self, f: impl FnOnce(&mut Spare) -> usize) {
        let len = self.out.len();
        let spare = self.out.spare_capacity_mut();
        let room = spare.len();
        let written = f(spare);
        assert!(written <= room);
        // SAFETY: `written` is at most the spare capacity (checked above)
        // and the two callers (`seq` with `leaves`, `list` with its byte
        // loop) initialise the first `written` bytes of it before returning
        // that count (see `leaves`).
        unsafe { self.out.set_len(len + written) };
    }

    #[inline]
    fn term(&mut self, t: &Term) {
        self.seq(1, |i| (i == 0).then_some(t));
    }

    /// Elements `get(0..n)` in order: runs of leaves by [`leaves`], the
    /// rest by [`Enc::node`].
    #[inline(always)]
    fn seq<'t>(&mut self, n: usize, get: impl Fn(usize) -> Option<&'t Term> + Copy) {
        let mut i = 0;
        while let Some(t) = get(i) {
            if !matches!(
                t,
                Term::Integer(_) | Term::Float(_) | Term::Atom(_) | Term::Binary(_)
            ) {
                self.node(t);
                i += 1;
                continue;
            }
            let utf8 = self.utf8;
            let mut stop = Stop {
                index: i,
                written: 0,
                need: 0,
            };
            self.write_spare(|spare| {
                stop = leaves(get, i, spare, utf8);
                stop.written
            });
            i = stop.index;
            if stop.need > 0 {
                self.out.reserve(stop.need);
            } else if i < n {
                // a leaf `leaves` leaves to the general path
                if let Some(t) = get(i) {
                    self.node(t);
                }
                i += 1;
            }
        }
    }

    #[inline(never)]
    fn atom(&mut self, a: &Atom) {
        if let Some(enc) = a.ascii_encoded() {
            if self.utf8 {
                self.u8(SMALL_ATOM_UTF8_EXT);
                self.out.extend_from_slice(enc.get(2..).unwrap_or(&[]));
            } else {
                self.out.extend_from_slice(enc);
            }
            return;
        }
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

    fn int(&mut self, i: i64) {
        if (0..=255).contains(&i) {
            self.put([SMALL_INTEGER_EXT, i as u8]);
        } else if i >= i32::MIN as i64 && i <= i32::MAX as i64 {
            self.tag_u32(INTEGER_EXT, i as i32 as u32);
        } else {
            let mag = i.unsigned_abs().to_le_bytes();
            let n = mag.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            self.put([SMALL_BIG_EXT, n as u8, (i < 0) as u8]);
            self.out.extend_from_slice(&mag[..n]);
        }
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
        let e = m.entries();
        self.seq(2 * e.len(), |i| {
            e.get(i / 2).map(|(k, v)| if i % 2 == 0 { k } else { v })
        });
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
        let v = &f.free_vars;
        self.seq(v.len(), |i| v.get(i));
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
        if v.len() <= u16::MAX as usize && matches!(v[0], Term::Integer(0..=255)) {
            // try STRING_EXT in one pass; nothing is kept if an element is
            // not a byte
            self.out.reserve(3 + v.len());
            let mut bytes = true;
            self.write_spare(|spare| {
                let [a, b] = (v.len() as u16).to_be_bytes();
                fill(spare, &[STRING_EXT, a, b]);
                for (d, e) in spare[3..3 + v.len()].iter_mut().zip(v) {
                    match e {
                        Term::Integer(x @ 0..=255) => *d = MaybeUninit::new(*x as u8),
                        _ => {
                            bytes = false;
                            return 0;
                        }
                    }
                }
                3 + v.len()
            });
            if bytes {
                return;
            }
        }
        self.tag_u32(LIST_EXT, v.len() as u32);
        self.seq(v.len(), |i| v.get(i));
        self.u8(NIL_EXT);
    }

    /// Everything [`leaves`] does not write: containers, and the rare
    /// terms and forms.
    #[inline(never)]
    fn node(&mut self, t: &Term) {
        match t {
            Term::Tuple(v) => {
                if v.len() < 256 {
                    self.put([SMALL_TUPLE_EXT, v.len() as u8]);
                } else {
                    self.tag_u32(LARGE_TUPLE_EXT, v.len() as u32);
                }
                self.seq(v.len(), |i| v.get(i));
            }
            Term::List(v) => self.list(v),
            Term::Map(m) => self.map(m),
            Term::ImproperList { elems, tail } => {
                self.tag_u32(LIST_EXT, elems.len() as u32);
                self.seq(elems.len(), |i| elems.get(i));
                self.term(tail);
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
                self.out.extend_from_slice(&b[..n]);
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
        }
    }
}
