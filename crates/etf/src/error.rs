//! Error types of the codec, the parser and the serde layer.

use std::fmt;

/// What went wrong while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input ended in the middle of a term.
    Truncated,
    /// The first byte is not the version byte 131.
    BadVersion(u8),
    /// A tag byte the format does not define.
    UnknownTag(u8),
    /// A tag the format defines but that is not portable or not supported
    /// here (e.g. the pre-R12 `FUN_EXT`).
    UnsupportedTag(u8),
    /// `LOCAL_EXT` (tag 121): node-local data, meaningless off the node.
    LocalExt,
    /// `ATOM_CACHE_REF` (tag 82) outside a distribution message, or an index
    /// past the end of the atom cache.
    AtomCacheRef(u8),
    /// An atom of more than 255 characters.
    AtomTooLong,
    /// A UTF-8 atom whose bytes are not UTF-8.
    InvalidUtf8,
    /// Nesting deeper than the decoder's limit.
    DepthLimit,
    /// Bytes left after the term (in `decode`, which consumes everything).
    TrailingBytes,
    /// A float that is NaN or infinite, or an unparsable `FLOAT_EXT`.
    InvalidFloat,
    /// A `BIT_BINARY_EXT` with a bit count outside 1..=8 or with bits but
    /// no bytes.
    InvalidBitBinary,
    /// A reference with a word count outside 1..=5.
    InvalidReference,
    /// A sub-term had the wrong type (e.g. a pid's node is not an atom).
    UnexpectedType,
    /// A map with two equal keys.
    DuplicateMapKey,
    /// A `NEW_FUN_EXT` whose size field disagrees with its contents.
    InvalidFunSize,
    /// A compressed term whose zlib data is corrupt or whose uncompressed
    /// size differs from the declared one.
    InvalidCompressed,
    /// A compressed term declaring an uncompressed size above the limit.
    CompressedTooLarge,
    /// A compressed term given to the borrowed decoder (use `decode` or
    /// `decompress` first).
    CompressedInput,
    /// A bignum with a sign byte other than 0 or 1.
    InvalidSign,
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DecodeErrorKind::*;
        match self {
            Truncated => write!(f, "input truncated"),
            BadVersion(v) => write!(f, "bad version byte {v} (expected 131)"),
            UnknownTag(t) => write!(f, "unknown tag {t}"),
            UnsupportedTag(t) => write!(f, "unsupported tag {t}"),
            LocalExt => write!(f, "LOCAL_EXT (node-local term) is not portable"),
            AtomCacheRef(i) => write!(f, "ATOM_CACHE_REF {i} without a matching atom cache entry"),
            AtomTooLong => write!(f, "atom longer than 255 characters"),
            InvalidUtf8 => write!(f, "atom is not valid UTF-8"),
            DepthLimit => write!(f, "nesting deeper than the depth limit"),
            TrailingBytes => write!(f, "trailing bytes after the term"),
            InvalidFloat => write!(f, "invalid float"),
            InvalidBitBinary => write!(f, "invalid bit binary"),
            InvalidReference => write!(f, "invalid reference (1..=5 id words)"),
            UnexpectedType => write!(f, "sub-term of unexpected type"),
            DuplicateMapKey => write!(f, "duplicate map key"),
            InvalidFunSize => write!(f, "NEW_FUN_EXT size disagrees with its contents"),
            InvalidCompressed => write!(f, "invalid compressed data"),
            CompressedTooLarge => write!(f, "compressed term declares a size above the limit"),
            CompressedInput => write!(f, "compressed term needs the owned decoder"),
            InvalidSign => write!(f, "invalid bignum sign byte"),
        }
    }
}

/// A decoding failure at a byte offset of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ETF decode error at byte {offset}: {kind}")]
pub struct DecodeError {
    pub(crate) offset: usize,
    pub(crate) kind: DecodeErrorKind,
}

impl DecodeError {
    pub(crate) fn new(offset: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError { offset, kind }
    }
    /// Byte offset in the input where the problem was found.
    pub fn offset(&self) -> usize {
        self.offset
    }
    /// What went wrong.
    pub fn kind(&self) -> DecodeErrorKind {
        self.kind
    }
}

/// A syntax error in Erlang term text, at a line and column (both from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error at line {line}, column {column}: {message}")]
pub struct ParseError {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
    /// What was expected or found.
    pub message: String,
}
