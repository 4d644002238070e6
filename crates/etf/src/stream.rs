//! [`Encoder`]: writes a term node by node, straight from Rust values,
//! without building a [`Term`] first.

use crate::encode::{atom_text, encode_body_into, int_i64, EncodeOptions};
use crate::tags::*;
use crate::term::{BigInt, Term};

/// Writes one term to a `Vec<u8>` node by node, in pre-order (the order a
/// [`crate::Cursor`] reads): a container's header first, then its
/// children. Nothing is built or checked: the caller writes as many
/// children as each header announces.
///
/// The bytes equal [`crate::encode_with`]'s for the same term when the
/// caller writes what the encoder would: `string` for a proper list of
/// bytes (up to 65535), `nil` for `[]`, `list(n)` then `n` elements then
/// `nil()` for other proper lists, and the keys of a map of up to 32 keys
/// in map-key order ([`Term::cmp_exact`]). Compression is not applied.
///
/// ```
/// use erlkube_etf::{encode, parse, Encoder};
/// let mut out = Vec::new();
/// let mut e = Encoder::new(&mut out);
/// e.tuple(3).atom("ok").list(2).int(1).int(300).nil();
/// e.binary(b"hi");
/// assert_eq!(out, encode(&parse("{ok, [1, 300], <<\"hi\">>}").unwrap()));
/// ```
#[derive(Debug)]
pub struct Encoder<'o> {
    out: &'o mut Vec<u8>,
    utf8: bool,
}

impl<'o> Encoder<'o> {
    /// Appends the version byte to `out` and writes the term after it with
    /// the default options (`term_to_binary/1`'s).
    pub fn new(out: &'o mut Vec<u8>) -> Encoder<'o> {
        Encoder::with_options(out, &EncodeOptions::default())
    }

    /// Like [`Encoder::new`] with explicit options (the minor version;
    /// compression is not applied).
    pub fn with_options(out: &'o mut Vec<u8>, opts: &EncodeOptions) -> Encoder<'o> {
        out.push(VERSION);
        Encoder::body(out, opts)
    }

    /// Without the version byte (as [`crate::encode_body_into`]).
    pub fn body(out: &'o mut Vec<u8>, opts: &EncodeOptions) -> Encoder<'o> {
        Encoder {
            out,
            utf8: opts.minor_version >= 2,
        }
    }

    /// An integer.
    #[inline]
    pub fn int(&mut self, i: i64) -> &mut Self {
        int_i64(self.out, i);
        self
    }

    /// An integer of any size.
    pub fn bigint(&mut self, b: &BigInt) -> &mut Self {
        self.term(&Term::from_bigint(b.clone()))
    }

    /// A float.
    #[inline]
    pub fn float(&mut self, f: f64) -> &mut Self {
        let [a, b, c, d, e, g, h, k] = f.to_bits().to_be_bytes();
        self.out
            .extend_from_slice(&[NEW_FLOAT_EXT, a, b, c, d, e, g, h, k]);
        self
    }

    /// An atom (as [`crate::Atom`]s are written: latin-1 `ATOM_EXT` when
    /// possible with minor version 1, UTF-8 otherwise).
    #[inline]
    pub fn atom(&mut self, text: &str) -> &mut Self {
        atom_text(self.out, text, self.utf8);
        self
    }

    /// A binary.
    #[inline]
    pub fn binary(&mut self, bytes: &[u8]) -> &mut Self {
        let n = bytes.len().min(u32::MAX as usize);
        let [a, b, c, d] = (n as u32).to_be_bytes();
        self.out.reserve(5 + n);
        self.out.extend_from_slice(&[BINARY_EXT, a, b, c, d]);
        self.out.extend_from_slice(&bytes[..n]);
        self
    }

    /// A tuple header: `arity` elements follow.
    #[inline]
    pub fn tuple(&mut self, arity: usize) -> &mut Self {
        if arity < 256 {
            self.out.extend_from_slice(&[SMALL_TUPLE_EXT, arity as u8]);
        } else {
            let [a, b, c, d] = (arity as u32).to_be_bytes();
            self.out.extend_from_slice(&[LARGE_TUPLE_EXT, a, b, c, d]);
        }
        self
    }

    /// A list header (`LIST_EXT`, `len` > 0): `len` elements follow, then
    /// the tail ([`Encoder::nil`] for a proper list).
    #[inline]
    pub fn list(&mut self, len: usize) -> &mut Self {
        let [a, b, c, d] = (len as u32).to_be_bytes();
        self.out.extend_from_slice(&[LIST_EXT, a, b, c, d]);
        self
    }

    /// `[]`, or the tail that ends a proper list.
    #[inline]
    pub fn nil(&mut self) -> &mut Self {
        self.out.push(NIL_EXT);
        self
    }

    /// A proper list of bytes (a charlist): `STRING_EXT` up to 65535
    /// bytes, a `LIST_EXT` of small integers above, `[]` when empty.
    pub fn string(&mut self, bytes: &[u8]) -> &mut Self {
        if bytes.is_empty() {
            return self.nil();
        }
        if bytes.len() <= u16::MAX as usize {
            let [a, b] = (bytes.len() as u16).to_be_bytes();
            self.out.reserve(3 + bytes.len());
            self.out.extend_from_slice(&[STRING_EXT, a, b]);
            self.out.extend_from_slice(bytes);
            return self;
        }
        self.list(bytes.len());
        for &b in bytes {
            self.out.extend_from_slice(&[SMALL_INTEGER_EXT, b]);
        }
        self.nil()
    }

    /// A map header: `len` key/value pairs follow, key then value.
    #[inline]
    pub fn map(&mut self, len: usize) -> &mut Self {
        let [a, b, c, d] = (len as u32).to_be_bytes();
        self.out.extend_from_slice(&[MAP_EXT, a, b, c, d]);
        self
    }

    /// A whole [`Term`].
    pub fn term(&mut self, t: &Term) -> &mut Self {
        let opts = if self.utf8 {
            EncodeOptions::utf8_atoms()
        } else {
            EncodeOptions::default()
        };
        encode_body_into(t, &opts, self.out);
        self
    }
}
