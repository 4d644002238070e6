//! The encoder's fast paths (scalars written straight into a vector's
//! spare capacity, small containers inline, pre-encoded atoms) against a
//! plain reference encoder written from the format description, at the
//! sizes where the paths change, and into output vectors of every small
//! capacity (so that the "no room left" paths run); and the node-by-node
//! `Encoder` against the same reference.

use erlkube_etf::{
    decode, encode, encode_body_into, encode_into, encode_with, Atom, Binary, EncodeOptions,
    Encoder, Map, Pid, Term,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The reference: one push per field, no fast path.
fn reference(t: &Term, utf8: bool, out: &mut Vec<u8>) {
    match t {
        Term::Integer(i) if (0..=255).contains(i) => out.extend([97, *i as u8]),
        Term::Integer(i) if *i >= i32::MIN as i64 && *i <= i32::MAX as i64 => {
            out.push(98);
            out.extend((*i as i32).to_be_bytes());
        }
        Term::Integer(i) => {
            let mut mag = i.unsigned_abs().to_le_bytes().to_vec();
            while mag.last() == Some(&0) {
                mag.pop();
            }
            out.extend([110, mag.len() as u8, (*i < 0) as u8]);
            out.extend(mag);
        }
        Term::Float(f) => {
            out.push(70);
            out.extend(f.to_bits().to_be_bytes());
        }
        Term::Atom(a) => reference_atom(a, utf8, out),
        Term::Binary(b) => {
            out.push(109);
            out.extend((b.len() as u32).to_be_bytes());
            out.extend(b);
        }
        Term::Tuple(v) => {
            if v.len() < 256 {
                out.extend([104, v.len() as u8]);
            } else {
                out.push(105);
                out.extend((v.len() as u32).to_be_bytes());
            }
            for e in v {
                reference(e, utf8, out);
            }
        }
        Term::List(v) if v.is_empty() => out.push(106),
        Term::List(v)
            if v.len() <= 65535 && v.iter().all(|e| matches!(e, Term::Integer(0..=255))) =>
        {
            out.push(107);
            out.extend((v.len() as u16).to_be_bytes());
            out.extend(v.iter().map(|e| e.as_integer().unwrap() as u8));
        }
        Term::List(v) => {
            out.push(108);
            out.extend((v.len() as u32).to_be_bytes());
            for e in v {
                reference(e, utf8, out);
            }
            out.push(106);
        }
        Term::Map(m) => {
            out.push(116);
            out.extend((m.len() as u32).to_be_bytes());
            for (k, v) in m.iter() {
                reference(k, utf8, out);
                reference(v, utf8, out);
            }
        }
        Term::Pid(p) => {
            out.push(88);
            reference_atom(&p.node, utf8, out);
            out.extend(p.id.to_be_bytes());
            out.extend(p.serial.to_be_bytes());
            out.extend(p.creation.to_be_bytes());
        }
        other => panic!("the reference encoder does not cover {other:?}"),
    }
}

fn reference_atom(a: &Atom, utf8: bool, out: &mut Vec<u8>) {
    let s = a.as_str();
    if !utf8 && s.chars().all(|c| (c as u32) < 256) {
        out.push(100);
        out.extend((s.chars().count() as u16).to_be_bytes());
        out.extend(s.chars().map(|c| c as u32 as u8));
    } else if s.len() < 256 {
        out.extend([119, s.len() as u8]);
        out.extend(s.as_bytes());
    } else {
        out.push(118);
        out.extend((s.len() as u16).to_be_bytes());
        out.extend(s.as_bytes());
    }
}

/// Writes `t` with the node-by-node [`Encoder`], the way its docs say
/// gives `encode_with`'s bytes.
fn stream(t: &Term, e: &mut Encoder<'_>) {
    match t {
        Term::Integer(i) => {
            e.int(*i);
        }
        Term::Float(f) => {
            e.float(*f);
        }
        Term::Atom(a) => {
            e.atom(a.as_str());
        }
        Term::Binary(b) => {
            e.binary(b);
        }
        Term::Tuple(v) => {
            e.tuple(v.len());
            for x in v {
                stream(x, e);
            }
        }
        Term::List(v) if v.is_empty() => {
            e.nil();
        }
        Term::List(v)
            if v.len() <= 65535 && v.iter().all(|x| matches!(x, Term::Integer(0..=255))) =>
        {
            let bytes: Vec<u8> = v.iter().map(|x| x.as_integer().unwrap() as u8).collect();
            e.string(&bytes);
        }
        Term::List(v) => {
            e.list(v.len());
            for x in v {
                stream(x, e);
            }
            e.nil();
        }
        Term::Map(m) => {
            e.map(m.len());
            for (k, v) in m.iter() {
                stream(k, e);
                stream(v, e);
            }
        }
        other => {
            e.term(other);
        }
    }
}

/// Checks `t` with both minor versions: against the reference, into
/// vectors of capacity 0..80 after a 3-byte prefix, and back through the
/// decoder.
fn check(t: &Term) {
    for utf8 in [false, true] {
        let opts = if utf8 {
            EncodeOptions::utf8_atoms()
        } else {
            EncodeOptions::default()
        };
        let mut want = vec![131];
        reference(t, utf8, &mut want);
        let mut got = Vec::new();
        encode_with(t, &opts, &mut got);
        assert_eq!(got, want, "{t:?} (utf8 atoms: {utf8})");
        for cap in 0..80 {
            let mut out = Vec::with_capacity(cap);
            out.extend([1, 2, 3]);
            encode_with(t, &opts, &mut out);
            assert_eq!(&out[..3], &[1, 2, 3]);
            assert_eq!(&out[3..], &want[..], "capacity {cap}: {t:?}");
            let mut body = Vec::with_capacity(cap);
            encode_body_into(t, &opts, &mut body);
            assert_eq!(&body[..], &want[1..]);
        }
        assert_eq!(&decode(&got).unwrap(), t);
        let mut streamed = Vec::new();
        stream(t, &mut Encoder::with_options(&mut streamed, &opts));
        assert_eq!(streamed, want, "Encoder: {t:?} (utf8 atoms: {utf8})");
        let mut body = Vec::new();
        stream(t, &mut Encoder::body(&mut body, &opts));
        assert_eq!(&body[..], &want[1..]);
    }
}

fn atom(s: &str) -> Term {
    Term::Atom(Atom::new(s))
}

#[test]
fn atoms_of_every_length_and_kind() {
    for n in 0..=255 {
        check(&atom(&"a".repeat(n)));
        check(&Term::Tuple(vec![atom(&"z".repeat(n)), Term::Integer(1)]));
    }
    for s in ["é", "naïve", "ÿÿÿ", "λ", "原子", "a\u{0}b", "\u{7f}"] {
        check(&atom(s));
        check(&Term::List(vec![atom(s), atom(s)]));
    }
    check(&atom(&"é".repeat(255)));
    check(&atom(&"λ".repeat(200)));
    // the text, order and equality do not see the stored head
    let a = Atom::new("abc");
    assert_eq!(a.as_str(), "abc");
    assert!(Atom::new("ab") < Atom::new("abc") && Atom::new("abc") < Atom::new("abd"));
    assert!(Atom::new("b") > Atom::new(&"a".repeat(200)));
    assert!(Atom::new("é") > Atom::new("z"));
    assert_eq!(Atom::new(&"x".repeat(100)).as_str().len(), 100);
    assert_ne!(Atom::new("a"), Atom::new("a\u{0}"));
}

#[test]
fn binaries_of_every_length_up_to_past_the_copy_limits() {
    for n in (0..=300).chain([1000, 70_000]) {
        let b: Vec<u8> = (0..n).map(|i| (i * 7 + 1) as u8).collect();
        // in a vector and, up to `Binary::INLINE` bytes, stored inline
        for bin in [Binary::from(b.clone()), Binary::from_slice(&b)] {
            check(&Term::Binary(bin.clone()));
            check(&Term::List(vec![
                Term::Binary(bin.clone()),
                Term::Integer(5),
                Term::Binary(bin),
            ]));
        }
    }
}

#[test]
fn integers_at_every_size_boundary() {
    let mut ints = vec![i64::MIN, i64::MIN + 1, i64::MAX, -1, 0, 255, 256, -256];
    for shift in 0..63 {
        let p = 1i64 << shift;
        ints.extend([p - 1, p, p + 1, -p, -p - 1, -p + 1]);
    }
    ints.extend([
        i32::MIN as i64 - 1,
        i32::MIN as i64,
        i32::MAX as i64,
        i32::MAX as i64 + 1,
    ]);
    for &i in &ints {
        check(&Term::Integer(i));
    }
    check(&Term::Tuple(
        ints.iter().map(|&i| Term::Integer(i)).collect(),
    ));
    check(&Term::List(
        ints.iter().map(|&i| Term::Integer(i)).collect(),
    ));
}

#[test]
fn containers_at_every_header_boundary() {
    for n in [0, 1, 2, 254, 255, 256, 300] {
        let elems: Vec<Term> = (0..n).map(|i| Term::Integer(i as i64 % 300)).collect();
        check(&Term::Tuple(elems.clone()));
        check(&Term::List(elems.clone()));
        // tuples and lists inside tuples, lists and maps, with a container
        // in the middle (the inline paths stop and resume)
        let mixed: Vec<Term> = (0..n)
            .map(|i| match i % 5 {
                0 => Term::Tuple(vec![Term::Integer(i as i64), atom("x")]),
                1 => Term::List(vec![atom("y"), Term::Float(i as f64)]),
                2 => Term::Map(Map::from_iter([(atom("k"), Term::Integer(i as i64))])),
                3 => Term::Tuple(vec![
                    atom("a"),
                    Term::Tuple(vec![]),
                    Term::Binary(vec![1; 20].into()),
                ]),
                _ => Term::List(vec![Term::Integer(1), Term::Integer(300)]),
            })
            .collect();
        check(&Term::Tuple(mixed.clone()));
        check(&Term::List(mixed.clone()));
        check(&Term::Map(
            mixed
                .iter()
                .enumerate()
                .map(|(i, t)| (Term::Integer(i as i64), t.clone()))
                .collect(),
        ));
    }
    let pid = Term::Pid(Pid {
        node: Atom::new("n@h"),
        id: 1,
        serial: 2,
        creation: 3,
    });
    check(&Term::Tuple(vec![pid.clone(), Term::Integer(1), pid]));
    check(&Term::List(vec![
        Term::Integer(1),
        Term::nil(),
        Term::List(vec![Term::Integer(2)]),
    ]));
}

#[test]
fn random_terms_match_the_reference_at_every_capacity() {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Term::Integer),
        (0i64..300).prop_map(Term::Integer),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Term::Float),
        "[a-z]{0,20}".prop_map(|s: String| atom(&s)),
        "[a-zé]{0,5}".prop_map(|s: String| atom(&s)),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(binary_either),
    ];
    let term = leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Term::Tuple),
            prop::collection::vec(inner.clone(), 0..8).prop_map(Term::List),
            prop::collection::vec((inner.clone(), inner), 0..5)
                .prop_map(|kv| Term::Map(kv.into_iter().collect::<Map>())),
        ]
    });
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&term, |t| {
            check(&t);
            let mut a = Vec::new();
            encode_into(&t, &mut a);
            prop_assert_eq!(a, encode(&t));
            Ok(())
        })
        .unwrap();
}

/// A binary term, stored in a vector or (up to `Binary::INLINE` bytes)
/// inline, by the parity of its length.
fn binary_either(v: Vec<u8>) -> Term {
    Term::Binary(if v.len().is_multiple_of(2) {
        Binary::from_slice(&v)
    } else {
        v.into()
    })
}
