//! The iovec form (`EncodedIoVec`, like `erlang:term_to_iovec/1`): its
//! concatenation is byte for byte what `encode_with` writes (hence
//! `term_to_binary/1`'s golden bytes) for both minor versions, and the
//! binaries of at least `IOVEC_MIN_BORROWED` bytes are the term's own
//! bytes (same pointer), smaller ones are copied.

use erlkube_etf::{
    decode, encode_iovec, encode_with, parse, Atom, Binary, EncodeOptions, EncodedIoVec, Fun,
    FunData, Map, Pid, Term, IOVEC_MIN_BORROWED,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The binaries (and bit binaries' bytes) of `t` that must be borrowed, in
/// encoding order (map entries in stored order, as the encoder writes).
fn large_binaries<'a>(t: &'a Term, out: &mut Vec<&'a [u8]>) {
    match t {
        Term::Binary(b) if b.len() >= IOVEC_MIN_BORROWED => out.push(b),
        Term::BitBinary { bytes: b, .. } if b.len() >= IOVEC_MIN_BORROWED => out.push(b),
        Term::Tuple(v) | Term::List(v) => v.iter().for_each(|e| large_binaries(e, out)),
        Term::ImproperList { elems, tail } => {
            elems.iter().for_each(|e| large_binaries(e, out));
            large_binaries(tail, out);
        }
        Term::Map(m) => m.entries().iter().for_each(|(k, v)| {
            large_binaries(k, out);
            large_binaries(v, out);
        }),
        Term::Fun(f) => f.free_vars.iter().for_each(|e| large_binaries(e, out)),
        _ => {}
    }
}

fn opts(utf8: bool) -> EncodeOptions {
    if utf8 {
        EncodeOptions::utf8_atoms()
    } else {
        EncodeOptions::default()
    }
}

/// Checks the iovec form of `t` against `encode_with` for both minor
/// versions (and against `want[i]` if given: the BEAM's bytes), and that
/// exactly the large binaries are borrowed, by pointer.
fn check(t: &Term, want: [Option<&[u8]>; 2]) {
    let mut large = Vec::new();
    large_binaries(t, &mut large);
    for utf8 in [false, true] {
        let o = opts(utf8);
        let mut contiguous = Vec::new();
        encode_with(t, &o, &mut contiguous);
        if let Some(w) = want[utf8 as usize] {
            assert_eq!(
                contiguous, w,
                "{t:?}: encode_with vs the BEAM (utf8 {utf8})"
            );
        }
        let mut iov = EncodedIoVec::new();
        encode_iovec(t, &o, &mut iov);
        assert_eq!(iov.to_vec(), contiguous, "{t:?} (utf8 atoms: {utf8})");
        assert_eq!(iov.len(), contiguous.len());
        // the IoSlices are the same segments
        let joined: Vec<u8> = iov.io_slices().iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(joined, contiguous);
        // exactly the large binaries are borrowed, and they are the
        // term's own bytes
        let borrowed: Vec<&[u8]> = iov.borrowed().collect();
        assert_eq!(borrowed.len(), large.len(), "{t:?}");
        for (b, l) in borrowed.iter().zip(&large) {
            assert_eq!(b.as_ptr(), l.as_ptr());
            assert_eq!(b.len(), l.len());
        }
        // and each appears as its own segment
        let segs: Vec<&[u8]> = iov.segments().collect();
        assert!(segs.iter().all(|s| !s.is_empty()));
        for l in &large {
            assert!(
                segs.iter()
                    .any(|s| s.as_ptr() == l.as_ptr() && s.len() == l.len()),
                "a large binary is not a segment"
            );
        }
        assert_eq!(
            iov.owned().len() + large.iter().map(|l| l.len()).sum::<usize>(),
            contiguous.len()
        );
        // encoding again into the same (reused) buffers gives the same
        iov.encode_with(t, &o);
        assert_eq!(iov.to_vec(), contiguous);
        let mut again = iov.clone().reuse();
        encode_iovec(t, &o, &mut again);
        assert_eq!(again.to_vec(), contiguous);
    }
}

mod common;
use common::vectors;

#[test]
fn golden_vectors_concatenate_to_term_to_binary() {
    let mut borrowed_any = false;
    for v in vectors() {
        let t: Term = if v.flags == "fun" {
            decode(&v.plain).unwrap()
        } else {
            parse(&v.text).unwrap()
        };
        let want = if v.flags == "nocanon" {
            [None, None]
        } else {
            [Some(&v.plain[..]), Some(&v.utf8[..])]
        };
        let mut large = Vec::new();
        large_binaries(&t, &mut large);
        borrowed_any |= !large.is_empty();
        eprintln!("{}: {} large binaries", v.name, large.len());
        check(&t, want);
    }
    assert!(borrowed_any, "no golden vector has a large binary");
}

#[test]
fn binaries_around_the_threshold() {
    for n in (0..=300).chain([1000, 70_000]) {
        let b: Vec<u8> = (0..n).map(|i| (i * 7 + 1) as u8).collect();
        check(&Term::Binary(b.clone().into()), [None, None]);
        check(
            &Term::List(vec![
                Term::Binary(b.clone().into()),
                Term::Integer(5),
                Term::Binary(b.clone().into()),
                Term::Binary(b.clone().into()),
            ]),
            [None, None],
        );
        check(
            &Term::Tuple(vec![
                Term::atom("blob"),
                Term::Binary(b.clone().into()),
                Term::Map(Map::from_iter([(
                    Term::Binary(b.clone().into()),
                    Term::Binary(b.into()),
                )])),
            ]),
            [None, None],
        );
        if n > 0 {
            let bytes: Vec<u8> = (0..n).map(|i| i as u8 & 0xf0).collect();
            check(&Term::BitBinary { bytes, bits: 4 }, [None, None]);
        }
    }
}

#[test]
fn a_binary_of_the_threshold_is_borrowed_and_one_byte_less_is_copied() {
    let at = Term::Binary(vec![1; IOVEC_MIN_BORROWED].into());
    let mut iov = EncodedIoVec::new();
    iov.encode(&at);
    assert_eq!(iov.borrowed().count(), 1);
    assert_eq!(iov.owned(), &[131, 109, 0, 0, 0, IOVEC_MIN_BORROWED as u8]);
    let below = Term::Binary(vec![1; IOVEC_MIN_BORROWED - 1].into());
    let mut iov = EncodedIoVec::new();
    iov.encode(&below);
    assert_eq!(iov.borrowed().count(), 0);
    assert_eq!(iov.segments().count(), 1);
}

#[test]
fn fun_size_counts_borrowed_free_variables() {
    // NEW_FUN_EXT's size field covers the free variables, borrowed or not
    let pid = Pid {
        node: Atom::new("n@h"),
        id: 1,
        serial: 0,
        creation: 2,
    };
    let f = Term::Fun(Fun::new(FunData {
        arity: 1,
        uniq: [7; 16],
        index: 3,
        module: Atom::new("m"),
        old_index: 0,
        old_uniq: 12345,
        pid,
        free_vars: vec![
            Term::Binary(vec![9; 500].into()),
            Term::Integer(1),
            Term::Binary(vec![8; 100].into()),
        ],
    }));
    check(&f, [None, None]);
    check(
        &Term::List(vec![f.clone(), Term::Binary(vec![1; 80].into()), f]),
        [None, None],
    );
}

#[test]
fn compression_is_one_owned_segment() {
    let t = Term::Tuple(vec![
        Term::atom("blob"),
        Term::Binary(vec![0; 10_000].into()),
    ]);
    let o = EncodeOptions {
        compression: Some(6),
        ..EncodeOptions::default()
    };
    let mut want = Vec::new();
    encode_with(&t, &o, &mut want);
    let mut iov = EncodedIoVec::new();
    encode_iovec(&t, &o, &mut iov);
    assert_eq!(iov.borrowed().count(), 0);
    assert_eq!(iov.segments().count(), 1);
    assert_eq!(iov.to_vec(), want);
    assert_eq!(decode(&iov.to_vec()).unwrap(), t);
}

fn arb_leaf() -> impl Strategy<Value = Term> {
    prop_oneof![
        any::<i64>().prop_map(Term::Integer),
        (0i64..300).prop_map(Term::Integer),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Term::Float),
        "[a-z]{0,20}".prop_map(|s: String| Term::Atom(Atom::new(&s))),
        "[a-zé]{0,5}".prop_map(|s: String| Term::Atom(Atom::new(&s))),
        prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|v| Term::Binary(Binary::from_slice(&v))),
        prop::collection::vec(any::<u8>(), 40..300).prop_map(Term::binary),
        (prop::collection::vec(any::<u8>(), 1..150), 1u8..8).prop_map(|(mut bytes, bits)| {
            if let Some(last) = bytes.last_mut() {
                *last &= !(0xffu8 >> bits);
            }
            Term::BitBinary { bytes, bits }
        }),
        Just(Term::nil()),
    ]
}

#[test]
fn random_terms_concatenate_to_encode_and_borrow_large_binaries() {
    let term = arb_leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Term::Tuple),
            prop::collection::vec(inner.clone(), 0..8).prop_map(Term::List),
            (prop::collection::vec(inner.clone(), 1..4), inner.clone()).prop_map(
                |(elems, tail)| match tail {
                    Term::List(_) | Term::ImproperList { .. } => Term::List(elems),
                    t => Term::ImproperList {
                        elems,
                        tail: Box::new(t),
                    },
                }
            ),
            prop::collection::vec((inner.clone(), inner), 0..5)
                .prop_map(|kv| Term::Map(kv.into_iter().collect::<Map>())),
        ]
    });
    let mut runner = TestRunner::new(Config {
        cases: 500,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&term, |t| {
            check(&t, [None, None]);
            Ok(())
        })
        .unwrap();
}
