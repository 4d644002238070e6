//! Shared by the codec bench and `examples/prof_loop.rs` (which includes
//! this file with `#[path]`), so both time the same walk.

use erlkube_etf::{TermView, Visit};

/// Visits every node of a view (the "walk" of validate+walk) with the
/// pre-order cursor, the view's fastest full visit: sums integers, atom and
/// binary lengths and float bits, so no node is skipped.
pub fn walk(v: TermView<'_>) -> u64 {
    v.cursor()
        .map(|n| match n {
            Visit::Integer(i) => i as u64,
            Visit::Float(f) => f.to_bits() >> 52,
            Visit::Atom(a) => a.len() as u64,
            Visit::Binary(b) | Visit::ByteList(b) | Visit::Latin1Atom(b) => b.len() as u64,
            Visit::Tuple(_) | Visit::List(_) | Visit::Map(_) | Visit::Nil => 0,
            _ => 1,
        })
        .sum()
}
