//! A small per-thread atom cache: [`intern`] returns an existing [`Atom`]
//! for text seen recently on this thread instead of allocating a new one.
//!
//! The decoder and the distribution layer build the same few atoms over
//! and over (a registered name, a node name). Atoms of at most
//! [`Atom::INLINE`] bytes are stored inline and never enter the table;
//! a longer one is shared, so a hit costs a reference count increment
//! where a miss costs an allocation (and, when the term is dropped on
//! another thread, a cross-thread free). Equality of atoms is by text, so
//! sharing is invisible to callers.
//!
//! The table is direct-mapped (one slot per hash bucket, the newest atom
//! wins), per thread, and bounded: at most [`SLOTS`] atoms of at most
//! [`MAX_INTERNED_LEN`] bytes each stay alive per thread. Peer-controlled
//! text cannot grow it.

use std::cell::RefCell;

use crate::Atom;

/// Slots per thread.
pub const SLOTS: usize = 256;
/// Longer atom texts are not cached (they are rare and would pin memory).
pub const MAX_INTERNED_LEN: usize = 64;

/// A thread's table: one slot per hash bucket.
pub(crate) type Table = [Option<Atom>; SLOTS];

thread_local! {
    static TABLE: RefCell<Table> = const { RefCell::new([const { None }; SLOTS]) };
}

/// Runs `f` with this thread's table borrowed (one thread-local access
/// for a whole decode instead of one per atom). During thread teardown, or
/// if the table is already borrowed, `f` gets an empty table of its own.
pub(crate) fn with_table<T>(f: impl FnOnce(&mut Table) -> T) -> T {
    let mut f = Some(f);
    let r = TABLE.try_with(|t| {
        let f = f.take()?;
        Some(match t.try_borrow_mut() {
            Ok(mut t) => f(&mut t),
            Err(_) => f(&mut [const { None }; SLOTS]),
        })
    });
    match (r, f) {
        (Ok(Some(v)), _) => v,
        (_, Some(f)) => f(&mut [const { None }; SLOTS]),
        // the closure ran (it took `f`) and so returned `Some`
        (_, None) => unreachable!("with_table: closure ran without a result"),
    }
}

/// The slot of `text` in a [`Table`].
#[inline]
pub(crate) fn slot(text: &[u8]) -> usize {
    // Up to 16 bytes are all mixed in (the first and last eight, which
    // overlap for shorter texts), longer texts by their ends: atoms that
    // differ only in the middle (`n12@host`, `n13@host`) get their own
    // slots. Collisions only cost an allocation.
    let n = text.len();
    let word = |b: &[u8]| -> u64 {
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    let h = if n >= 8 {
        word(&text[..8]) ^ word(&text[n - 8..]).rotate_left(32)
    } else if n >= 4 {
        word(&text[..4]) ^ word(&text[n - 4..]) << 32
    } else if n > 0 {
        // all of 1..=3 bytes
        text[0] as u64 | (text[n / 2] as u64) << 8 | (text[n - 1] as u64) << 16
    } else {
        0
    };
    let h = (h ^ n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 56) as usize & (SLOTS - 1)
}

/// The atom with this text: an existing one from this thread's table when
/// there is one, else a new one (remembered for next time). Never panics.
pub fn intern(text: &str) -> Atom {
    // short atoms are stored inline: nothing to share
    if text.len() <= Atom::INLINE || text.len() > MAX_INTERNED_LEN {
        return Atom::new(text);
    }
    let ix = slot(text.as_bytes());
    let hit = TABLE.try_with(|t| {
        let Ok(mut t) = t.try_borrow_mut() else {
            return Atom::new(text);
        };
        match &t[ix] {
            Some(a) if a.as_str() == text => a.clone(),
            _ => {
                let a = Atom::new(text);
                t[ix] = Some(a.clone());
                a
            }
        }
    });
    // During thread teardown the table is gone: allocate.
    hit.unwrap_or_else(|_| Atom::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_allocation() {
        let a = intern("a_longer_atom_text");
        let b = intern("a_longer_atom_text");
        assert_eq!(a, b);
        assert!(std::ptr::eq(a.as_str().as_ptr(), b.as_str().as_ptr()));
    }

    #[test]
    fn different_texts_stay_distinct() {
        let words: Vec<String> = (0..2000).map(|i| format!("w{i}")).collect();
        for w in &words {
            assert_eq!(intern(w).as_str(), w);
        }
        for w in words.iter().rev() {
            assert_eq!(intern(w).as_str(), w);
        }
    }

    #[test]
    fn long_and_empty_texts() {
        let long = "é".repeat(200);
        assert_eq!(intern(&long).as_str(), long);
        assert_eq!(intern("").as_str(), "");
    }
}
