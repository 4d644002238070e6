//! Erlang's External Term Format (ETF). Owns the [`Term`] type, the encoder
//! and decoder, and the Erlang-syntax printer and parser. Does no IO.
//!
//! Data flow:
//!
//! ```text
//!  bytes ──decode_view──▶ TermView<'a> (validated, lazy, no allocation)
//!  bytes ──decode_ref──▶ TermRef<'a> (zero-copy) ──to_owned──▶ Term
//!  bytes ──decode──────────────────────────────────────────▶ Term
//!  Term ──encode / encode_with(EncodeOptions)──▶ bytes (as term_to_binary)
//!  Term ──encode_iovec──▶ EncodedIoVec: segments, large binaries borrowed
//!                         (as term_to_iovec)
//!  Rust values ──Encoder (node by node, no Term)──▶ bytes
//!  Term ◀──parse── Erlang text ◀──Display── Term
//!  Rust value ──to_term / from_term (serde)──▶ Term
//! ```
//!
//! # Encoding
//!
//! [`encode()`] writes what OTP 25's `erlang:term_to_binary/1` writes for every
//! term whose encoding is canonical: the smallest integer tag, `STRING_EXT`
//! for proper lists of up to 65535 bytes, small maps (up to 32 keys) with
//! keys in map-key order ([`Term::cmp_exact`]: Erlang term order, except
//! that every integer sorts before every float; [`Map`] keeps small maps in
//! that order), `NEW_FLOAT_EXT`, `NEW_PID_EXT`,
//! `NEW_PORT_EXT` (`V4_PORT_EXT` for port numbers above 32 bits),
//! `NEWER_REFERENCE_EXT`. The default [`EncodeOptions`] is `minor_version`
//! 1, OTP 25's default: atoms made only of latin-1 characters use
//! `ATOM_EXT` (tag 100). `minor_version` 2 (OTP 26+'s default and what the
//! distribution uses) writes every atom as `SMALL_ATOM_UTF8_EXT`/
//! `ATOM_UTF8_EXT`. Maps with more than 32 keys are written in stored order;
//! the BEAM writes them in hash order, so they are equal after decoding, not
//! byte for byte.
//!
//! [`EncodedIoVec`] ([`encode_iovec`]) is the equivalent of
//! `erlang:term_to_iovec/1`: the same bytes as segments, in which binaries
//! of at least [`IOVEC_MIN_BORROWED`] (64) bytes are borrowed from the term
//! rather than copied, for `Write::write_vectored`.
//!
//! # Decoding and hostile input
//!
//! Every tag the BEAM emits is decoded, plus the old forms (`FLOAT_EXT`,
//! latin-1 atoms, `PID_EXT`, `PORT_EXT`, `REFERENCE_EXT`,
//! `NEW_REFERENCE_EXT`) and `COMPRESSED`. `LOCAL_EXT` and `ATOM_CACHE_REF`
//! (outside [`decode_prefix_with_atom_cache`]) fail with named errors;
//! [`DecodeError`] carries the byte offset and a [`DecodeErrorKind`]. Terms
//! after a distribution header lack the version byte:
//! [`decode_body_prefix_with_atom_cache`] and [`encode_body_into`]. The
//! decoder never panics; lengths are checked against the remaining input
//! before anything is reserved, and compressed terms must declare at most
//! [`DEFAULT_MAX_UNCOMPRESSED`] bytes.
//!
//! # Nesting depth
//!
//! The BEAM accepts terms nested to any depth (a list nested a million
//! levels, say), and so does everything here: the owned decoder
//! ([`decode()`], [`decode_body_prefix_with_atom_cache`]), the borrowed
//! one ([`decode_ref`]) and the lazy view ([`decode_view`], its
//! iterators, [`Cursor`] and [`TermView::encoded`]), the payload check
//! ([`validate_body_prefix_with_atom_cache`]), every encoder (contiguous,
//! iovec, [`Encoder::term`]), [`parse`], and on [`Term`] and [`TermRef`]
//! `Drop`, `Clone`, `Display`, `Debug`, `==`, term order
//! ([`Term::cmp_term`], [`Term::cmp_exact`]), `Hash` and the conversion
//! to owned terms: none of them recurses per level. They recurse over
//! the first [`RECURSION_DEPTH`] (128) levels, which is all that real
//! terms use, and continue deeper levels with an explicit stack on the
//! heap (one small entry per open level), so memory stays in proportion
//! to the input; the view's scans keep only a count.
//! [`DecodeOptions::max_depth`] sets a limit. Serde (`to_term`,
//! `from_term`) cannot avoid its own recursion per level: it refuses
//! values nested past `SERDE_MAX_DEPTH` (128, as serde_json) with
//! `SerdeError::DepthLimit`.
//!
//! # The hot path: a lazy view
//!
//! [`decode_view`] checks the whole term in one pass that builds nothing
//! and allocates nothing, with the same depth and length checks and the
//! same errors (kind and byte offset) as [`decode_ref`], and returns a
//! [`TermView`]: a `Copy` slice of the input. [`TermView::kind`] decodes
//! only the term's head ([`ViewKind`]): integers, floats, atoms and
//! binaries directly (atoms and binaries borrow the input), tuples, lists
//! and maps as iterators ([`SeqView`], [`ListView`], [`MapView`]) that
//! read their elements as they go. Stepping over an element that is not
//! visited costs a scan of its bytes (no checks: they were done), so a
//! visit of every node through these iterators costs about one extra scan
//! per nesting level. [`TermView::cursor`] avoids that: a [`Cursor`] reads
//! the term in pre-order, one node ([`Visit`]) per step, each step moving
//! past what it read, so a visit of every node reads each byte once
//! (containers announce how many nodes follow as their children;
//! [`Cursor::skip_term`] steps over a whole subterm).
//! [`TermView::encoded`] gives the term's bytes as received, so forwarding
//! an unchanged (sub)term is a copy; [`TermView::to_term_ref`] and
//! [`TermView::to_owned`] build the eager forms.
//!
//! ```
//! use erlkube_etf::{decode_view, encode, parse, ViewKind};
//! let bytes = encode(&parse("{ok, [1, 2, 300], <<\"hi\">>}").unwrap());
//! let view = decode_view(&bytes).unwrap();
//! let ViewKind::Tuple(mut elems) = view.kind() else { panic!() };
//! assert_eq!(elems.next().unwrap().as_atom(), Some("ok"));
//! let ViewKind::List(list) = elems.next().unwrap().kind() else { panic!() };
//! assert_eq!(list.map(|e| e.as_i64().unwrap()).sum::<i64>(), 303);
//! assert_eq!(elems.next().unwrap().as_binary(), Some(&b"hi"[..]));
//! ```
//!
//! # Text
//!
//! `Display for Term` prints what the shell's `~p` prints on one line
//! (floats in the shortest form that reads back exactly, as
//! `float_to_list(F, [short])`). See [`parse`] and the [`text`] module for
//! the pid, port and reference forms that keep the node
//! (`#Pid<nonode@nohost.85.0.0>`), which the parser reads back.
//!
//! # Testing against the BEAM
//!
//! Golden vectors made by `erl` (`tests/golden/gen.escript`) are checked in
//! both directions; a property test round-trips thousands of random terms
//! through a live `erl` (byte-equal to `term_to_binary/1` when canonical)
//! and checks term order against `lists:sort/1` and float printing against
//! `~p`.
#![cfg_attr(
    feature = "serde",
    doc = r#"
# Serde mapping

[`to_term`] and [`from_term`] map Rust values to terms:

| Rust | Erlang |
|---|---|
| `bool` | `true` / `false` |
| integers | integers (`u64`/`i128` beyond `i64` as big integers) |
| `f32`, `f64` | float |
| `char` | integer (code point) |
| `String`, `&str` | UTF-8 binary (the Elixir convention) |
| bytes (`serde_bytes`) | binary |
| `Option<T>` | `nil` for `None` (Elixir's convention), the value itself for `Some` |
| `()` , unit struct | `nil` |
| `Vec<T>`, sequences | proper list |
| tuples, tuple structs | tuples |
| newtype struct | the inner value |
| struct | map with atom keys (`#{field => value}`) |
| `HashMap`/`BTreeMap` | map (keys mapped by the same rules) |
| unit variant | atom `variant` |
| newtype variant | `{variant, Value}` |
| tuple variant | `{variant, A, B, ...}` |
| struct variant | `{variant, #{field => value}}` |

Decoding also accepts `undefined` for `None`, atoms and lists for strings,
and charlists as strings (when they are valid text)."#
)]
#![warn(missing_docs)]

mod binary;
mod decode;
mod encode;
mod error;
pub mod intern;
mod iovec;
mod ref_walk;
#[cfg(feature = "serde")]
mod serde_impl;
mod stream;
pub mod tags;
mod term;
pub mod text;
mod view;

pub use binary::Binary;
pub use decode::validate_body_prefix_with_atom_cache;
pub use decode::{
    decode, decode_body_prefix_with_atom_cache, decode_prefix, decode_prefix_with_atom_cache,
    decode_ref, decode_ref_body_prefix_with_atom_cache, decode_ref_prefix,
    decode_ref_prefix_with_atom_cache, decode_ref_with, decode_shared, decode_with, decompress,
    AtomRef, DecodeOptions, FunRef, TermRef, DEFAULT_MAX_DEPTH, DEFAULT_MAX_UNCOMPRESSED,
    RECURSION_DEPTH, SHARE_MIN,
};
pub use encode::{
    encode, encode_body_into, encode_into, encode_with, EncodeOptions, IOVEC_MIN_BORROWED,
};
pub use error::{DecodeError, DecodeErrorKind, ParseError};
pub use iovec::{encode_iovec, EncodedIoVec};
#[cfg(feature = "serde")]
pub use serde_impl::{
    from_term, to_term, Deserializer, Error, Error as SerdeError, Serializer, SERDE_MAX_DEPTH,
};
pub use stream::Encoder;
pub use term::{
    Atom, AtomTooLong, BigInt, Fun, FunData, Map, Pid, Port, Reference, Term, MAX_ATOM_CHARS,
    SMALL_MAP_KEYS,
};
pub use text::parse;
pub use view::{
    decode_view, decode_view_prefix, decode_view_with, Cursor, ListView, MapView, SeqView,
    TermView, ViewKind, Visit,
};
