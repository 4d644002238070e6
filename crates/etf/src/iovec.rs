//! The iovec form of an encoding, like `erlang:term_to_iovec/1`: the bytes
//! of [`crate::encode()`] as a sequence of segments in which large binaries
//! are referenced, not copied.

use std::io::IoSlice;

use crate::encode::{encode_with, run_iovec, EncodeOptions};
use crate::term::Term;

/// A term's encoding (version byte first) as segments: one owned buffer
/// holding everything but the large binaries, and the binaries (and bit
/// binaries' bytes) of at least [`IOVEC_MIN_BORROWED`](crate::IOVEC_MIN_BORROWED) bytes borrowed from
/// the term, like the list of binaries `erlang:term_to_iovec/1` returns.
/// Their concatenation ([`EncodedIoVec::to_vec`]) is exactly what
/// [`crate::encode_with`] writes with the same options.
///
/// The buffers are kept by [`EncodedIoVec::clear`] (and
/// [`EncodedIoVec::reuse`] for a term of another lifetime), so encoding
/// term after term allocates nothing once they are large enough.
///
/// ```
/// use erlkube_etf::{encode, EncodedIoVec, Term};
/// let t = Term::Tuple(vec![Term::atom("blob"), Term::Binary(vec![7; 1000].into())]);
/// let mut iov = EncodedIoVec::new();
/// iov.encode(&t);
/// assert_eq!(iov.to_vec(), encode(&t));
/// // the header, then the binary itself (not a copy)
/// let Term::Tuple(v) = &t else { unreachable!() };
/// let Term::Binary(b) = &v[1] else { unreachable!() };
/// assert_eq!(iov.segments().nth(1).unwrap().as_ptr(), b.as_ptr());
/// ```
#[derive(Debug, Default, Clone)]
pub struct EncodedIoVec<'a> {
    /// Everything but the borrowed binaries.
    buf: Vec<u8>,
    /// The borrowed binaries, in order, each with the length `buf` had
    /// when it came (where it goes between `buf`'s bytes).
    refs: Vec<(usize, &'a [u8])>,
}

impl<'a> EncodedIoVec<'a> {
    /// An empty encoding.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empties it, keeping the buffers.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.refs.clear();
    }

    /// Empties it and keeps its buffers for terms of another lifetime.
    pub fn reuse<'b>(mut self) -> EncodedIoVec<'b> {
        self.buf.clear();
        self.refs.clear();
        EncodedIoVec {
            buf: self.buf,
            // an empty vector of a type with the same layout: collected in
            // place, so the allocation is kept
            refs: self.refs.into_iter().map(|(p, _)| (p, &[][..])).collect(),
        }
    }

    /// Replaces the contents with `term`'s encoding with the default
    /// options (`term_to_iovec/1`).
    pub fn encode(&mut self, term: &'a Term) {
        self.encode_with(term, &EncodeOptions::default());
    }

    /// Replaces the contents with `term`'s encoding with `opts`. With
    /// compression the whole (compressed) encoding is one owned segment:
    /// nothing is borrowed.
    pub fn encode_with(&mut self, term: &'a Term, opts: &EncodeOptions) {
        self.clear();
        if opts.compression.is_some() {
            encode_with(term, opts, &mut self.buf);
        } else {
            run_iovec(term, opts.minor_version >= 2, &mut self.buf, &mut self.refs);
        }
    }

    /// The total length in bytes (of every segment).
    pub fn len(&self) -> usize {
        self.buf.len() + self.refs.iter().map(|r| r.1.len()).sum::<usize>()
    }

    /// True if nothing was encoded.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.refs.is_empty()
    }

    /// The owned bytes: the encoding without the borrowed binaries.
    pub fn owned(&self) -> &[u8] {
        &self.buf
    }

    /// The borrowed binaries, in order.
    pub fn borrowed(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.refs.iter().map(|r| r.1)
    }

    /// The segments in order: non-empty ranges of the owned buffer and the
    /// borrowed binaries (which are never empty).
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let buf = &self.buf[..];
        let mut at = 0;
        self.refs
            .iter()
            .flat_map(move |&(pos, b)| {
                let own = buf.get(at..pos).unwrap_or(&[]);
                at = pos;
                [own, b]
            })
            .chain(std::iter::once_with(move || {
                let last = self.refs.last().map_or(0, |r| r.0);
                buf.get(last..).unwrap_or(&[])
            }))
            .filter(|s| !s.is_empty())
    }

    /// The segments as `IoSlice`s, for `Write::write_vectored`.
    pub fn io_slices(&self) -> Vec<IoSlice<'_>> {
        let mut v = Vec::with_capacity(2 * self.refs.len() + 1);
        v.extend(self.segments().map(IoSlice::new));
        v
    }

    /// The concatenation of the segments: the contiguous encoding.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        for s in self.segments() {
            v.extend_from_slice(s);
        }
        v
    }
}

/// `term`'s encoding with `opts` in iovec form, in `out` (replacing what it
/// held): see [`EncodedIoVec`]. Binaries of at least
/// [`IOVEC_MIN_BORROWED`](crate::IOVEC_MIN_BORROWED) bytes are borrowed.
pub fn encode_iovec<'a>(term: &'a Term, opts: &EncodeOptions, out: &mut EncodedIoVec<'a>) {
    out.encode_with(term, opts);
}
