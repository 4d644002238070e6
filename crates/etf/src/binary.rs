//! [`Binary`], the bytes of a [`crate::Term::Binary`]: up to
//! [`Binary::INLINE`] bytes are stored inside the value, longer ones in a
//! `Vec<u8>` on the heap, or, when decoded from a shared buffer with
//! [`crate::decode_shared`], as a range of that buffer (no copy).
//!
//! Most binaries in real terms are short (names, keys, small strings), and
//! a heap allocation per short binary (and its free when the term is
//! dropped) was the largest single cost of decoding such terms. The
//! representation is invisible to callers: a `Binary` derefs to `[u8]`,
//! and equality, order, hashing and `Debug` are those of its bytes
//! (`Debug` prints what a `Vec<u8>` prints).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// The bytes of a binary term. Derefs to `[u8]`; converts from and into
/// `Vec<u8>` (without copying a vector of more than [`Binary::INLINE`]
/// bytes).
///
/// A binary made by [`crate::decode_shared`] may refer to the decoded
/// buffer (see [`Binary::is_shared`]): it keeps that buffer alive, and
/// writing to it ([`Binary::as_mut_slice`]) first copies its bytes out.
///
/// ```
/// use erlkube_etf::{Binary, Term};
/// let b = Binary::from(&b"hello"[..]);
/// assert_eq!(&b[..], b"hello");
/// assert_eq!(b, b"hello".to_vec());
/// let t = Term::Binary(b);
/// assert_eq!(t.as_binary(), Some(&b"hello"[..]));
/// assert_eq!(Binary::from(vec![1, 2, 3]).into_vec(), vec![1, 2, 3]);
/// ```
#[derive(Clone)]
pub struct Binary(Repr);

#[derive(Clone)]
enum Repr {
    /// `data[..len]`; `len <= INLINE`, the bytes after `len` are zero.
    Inline { len: u8, data: [u8; Binary::INLINE] },
    /// More than `INLINE` bytes.
    Heap(Vec<u8>),
    /// `buf[start..start + len]`, in range.
    Shared {
        buf: Arc<Vec<u8>>,
        start: usize,
        len: usize,
    },
}

// A `Term` holds a `Binary` in its 32 payload bytes.
const _: () = assert!(std::mem::size_of::<Binary>() == 32);

impl Binary {
    /// Binaries of at most this many bytes are stored inline (no heap
    /// allocation).
    pub const INLINE: usize = 30;

    /// The empty binary.
    #[inline]
    pub const fn new() -> Binary {
        Binary(Repr::Inline {
            len: 0,
            data: [0; Binary::INLINE],
        })
    }

    /// A copy of `b` (inline when it is short enough).
    #[inline]
    pub fn from_slice(b: &[u8]) -> Binary {
        if b.len() <= Binary::INLINE {
            // gathered in two registers with fixed-size loads: no call
            // to `memcpy`, whose narrow stores stalled the wide loads
            // that move the result
            let n = b.len();
            let (lo, hi) = if n <= 16 {
                (gather16(b), 0)
            } else {
                (gather16(&b[..16]), gather16(&b[16..]))
            };
            let mut data = [0; Binary::INLINE];
            let (a, c) = data.split_at_mut(16);
            a.copy_from_slice(&lo.to_le_bytes());
            c.copy_from_slice(&hi.to_le_bytes()[..Binary::INLINE - 16]);
            Binary(Repr::Inline { len: n as u8, data })
        } else {
            Binary(Repr::Heap(b.to_vec()))
        }
    }

    /// The bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            // `len <= INLINE` always: `get` does not fail (and is only a
            // comparison)
            Repr::Inline { len, data } => data.get(..*len as usize).unwrap_or(&[]),
            Repr::Heap(v) => v,
            Repr::Shared { buf, start, len } => buf.get(*start..*start + *len).unwrap_or(&[]),
        }
    }

    /// The bytes, writable (the length cannot change). A shared binary
    /// first copies its bytes into a vector of its own.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        if let Repr::Shared { .. } = self.0 {
            self.0 = Repr::Heap(self.as_slice().to_vec());
        }
        match &mut self.0 {
            Repr::Inline { len, data } => data.get_mut(..*len as usize).unwrap_or(&mut []),
            Repr::Heap(v) => v,
            Repr::Shared { .. } => &mut [],
        }
    }

    /// The bytes as a vector (no copy when they are held in one).
    pub fn into_vec(self) -> Vec<u8> {
        match self.0 {
            Repr::Heap(v) => v,
            _ => self.as_slice().to_vec(),
        }
    }

    /// `buf[start..start + len]` without a copy. `start + len` must be at
    /// most `buf.len()` (else the binary is empty).
    #[inline]
    pub(crate) fn shared(buf: &Arc<Vec<u8>>, start: usize, len: usize) -> Binary {
        debug_assert!(start.checked_add(len).is_some_and(|e| e <= buf.len()));
        Binary(Repr::Shared {
            buf: Arc::clone(buf),
            start,
            len,
        })
    }

    /// True when the bytes are a range of a buffer decoded with
    /// [`crate::decode_shared`] (which this binary keeps alive).
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Repr::Shared { .. })
    }

    /// Bytes it can hold without reallocating: [`Binary::INLINE`] inline,
    /// its length when shared, else its vector's capacity.
    pub fn capacity(&self) -> usize {
        match &self.0 {
            Repr::Inline { .. } => Binary::INLINE,
            Repr::Heap(v) => v.capacity(),
            Repr::Shared { len, .. } => *len,
        }
    }

    /// For an inline binary: its storage (the bytes, then zeros) and its
    /// length. The encoder copies short binaries from it with fixed-size
    /// moves.
    #[inline(always)]
    pub(crate) fn inline_parts(&self) -> Option<(&[u8; Binary::INLINE], usize)> {
        match &self.0 {
            Repr::Inline { len, data } => Some((data, *len as usize)),
            _ => None,
        }
    }

    /// True when the bytes are stored inline (no heap allocation).
    #[inline]
    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }
}

/// Up to 16 bytes as a little-endian `u128` (zero above them), read with
/// (overlapping) fixed-size loads.
#[inline(always)]
pub(crate) fn gather16(b: &[u8]) -> u128 {
    let n = b.len();
    let w8 = |x: &[u8]| u64::from_le_bytes(x.try_into().unwrap_or([0; 8]));
    let w4 = |x: &[u8]| u32::from_le_bytes(x.try_into().unwrap_or([0; 4]));
    if n >= 8 {
        let lo = w8(&b[..8]) as u128;
        let hi = w8(&b[n - 8..]) as u128;
        lo | hi << (8 * (n - 8))
    } else if n >= 4 {
        let lo = w4(&b[..4]) as u64;
        let hi = w4(&b[n - 4..]) as u64;
        (lo | hi << (8 * (n - 4))) as u128
    } else if n > 0 {
        b[0] as u128 | (b[n / 2] as u128) << (8 * (n / 2)) | (b[n - 1] as u128) << (8 * (n - 1))
    } else {
        0
    }
}

impl Default for Binary {
    fn default() -> Binary {
        Binary::new()
    }
}

impl Deref for Binary {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl DerefMut for Binary {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl AsRef<[u8]> for Binary {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for Binary {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for Binary {
    /// As a `Vec<u8>` prints: `[104, 105]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

impl PartialEq for Binary {
    #[inline]
    fn eq(&self, other: &Binary) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Binary {}

impl PartialOrd for Binary {
    fn partial_cmp(&self, other: &Binary) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Binary {
    fn cmp(&self, other: &Binary) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

/// Hashes as the `[u8]` (and so the `Vec<u8>`) of the same bytes.
impl Hash for Binary {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

macro_rules! eq_bytes {
    ($($t:ty),*) => {$(
        impl PartialEq<$t> for Binary {
            #[inline]
            fn eq(&self, other: &$t) -> bool {
                self.as_slice() == &other[..]
            }
        }
        impl PartialEq<Binary> for $t {
            #[inline]
            fn eq(&self, other: &Binary) -> bool {
                &self[..] == other.as_slice()
            }
        }
    )*};
}
eq_bytes!([u8], &[u8], Vec<u8>);

impl<const N: usize> PartialEq<[u8; N]> for Binary {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.as_slice() == other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Binary {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.as_slice() == *other
    }
}

impl From<Vec<u8>> for Binary {
    /// Keeps the vector (no copy), or for up to [`Binary::INLINE`] bytes
    /// copies them inline (and frees the vector).
    #[inline]
    fn from(v: Vec<u8>) -> Binary {
        if v.len() <= Binary::INLINE {
            return Binary::from_slice(&v);
        }
        Binary(Repr::Heap(v))
    }
}

impl From<&[u8]> for Binary {
    #[inline]
    fn from(b: &[u8]) -> Binary {
        Binary::from_slice(b)
    }
}

impl<const N: usize> From<&[u8; N]> for Binary {
    fn from(b: &[u8; N]) -> Binary {
        Binary::from_slice(b)
    }
}

impl<const N: usize> From<[u8; N]> for Binary {
    fn from(b: [u8; N]) -> Binary {
        Binary::from_slice(&b)
    }
}

impl From<Box<[u8]>> for Binary {
    fn from(b: Box<[u8]>) -> Binary {
        Binary::from(b.into_vec())
    }
}

impl From<std::borrow::Cow<'_, [u8]>> for Binary {
    fn from(b: std::borrow::Cow<'_, [u8]>) -> Binary {
        match b {
            std::borrow::Cow::Borrowed(b) => Binary::from_slice(b),
            std::borrow::Cow::Owned(v) => Binary::from(v),
        }
    }
}

impl From<&str> for Binary {
    fn from(s: &str) -> Binary {
        Binary::from_slice(s.as_bytes())
    }
}

impl From<String> for Binary {
    fn from(s: String) -> Binary {
        Binary::from(s.into_bytes())
    }
}

impl From<Binary> for Vec<u8> {
    fn from(b: Binary) -> Vec<u8> {
        b.into_vec()
    }
}

impl<'b> IntoIterator for &'b Binary {
    type Item = &'b u8;
    type IntoIter = std::slice::Iter<'b, u8>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl FromIterator<u8> for Binary {
    fn from_iter<I: IntoIterator<Item = u8>>(iter: I) -> Binary {
        Binary::from(iter.into_iter().collect::<Vec<u8>>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_heap_hold_the_same_bytes() {
        for n in [0, 1, Binary::INLINE, Binary::INLINE + 1, 1000] {
            let bytes: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let a = Binary::from(&bytes[..]);
            let b = Binary::from(bytes.clone());
            assert_eq!(a.is_inline(), n <= Binary::INLINE, "length {n}");
            assert_eq!(b.is_inline(), n <= Binary::INLINE, "length {n}");
            assert_eq!(a, b);
            assert_eq!(&a[..], &bytes[..]);
            assert_eq!(format!("{a:?}"), format!("{bytes:?}"));
            assert_eq!(a.clone().into_vec(), bytes);
            assert_eq!(b.into_vec(), bytes);
            let h = |x: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
                let mut s = std::collections::hash_map::DefaultHasher::new();
                x(&mut s);
                s.finish()
            };
            assert_eq!(h(&|s| a.hash(s)), h(&|s| bytes.hash(s)));
        }
    }

    #[test]
    fn shared_bytes_are_copied_before_writing() {
        let buf = Arc::new((0..200u8).collect::<Vec<u8>>());
        let mut a = Binary::shared(&buf, 100, 64);
        let b = a.clone();
        assert!(a.is_shared() && b.is_shared());
        assert_eq!(a, buf[100..164]);
        assert_eq!(Arc::strong_count(&buf), 3);
        a[0] = 1;
        assert!(!a.is_shared());
        assert_eq!(a[0], 1);
        assert_eq!(a[1..], buf[101..164]);
        assert_eq!(b[0], 100, "the buffer is unchanged");
        drop(b);
        assert_eq!(Arc::strong_count(&buf), 1);
    }

    #[test]
    fn inline_bytes_are_writable() {
        let mut a = Binary::from(&[1u8, 2, 3][..]);
        a[1] = 9;
        assert_eq!(a, [1, 9, 3]);
    }
}
