//! `decode_shared`: the same terms as `decode`, with long binaries
//! referring to the decoded buffer (and keeping it alive) instead of
//! copies.

use std::sync::Arc;

use erlkube_etf::{decode, decode_shared, encode, encode_with, Binary, EncodeOptions, Term};

mod common;
use common::vectors;

/// Every binary of `t`, depth first.
fn binaries(t: &Term) -> Vec<&Binary> {
    let mut out = Vec::new();
    let mut stack = vec![t];
    while let Some(t) = stack.pop() {
        match t {
            Term::Binary(b) => out.push(b),
            Term::Tuple(v) | Term::List(v) => stack.extend(v),
            Term::ImproperList { elems, tail } => {
                stack.extend(elems);
                stack.push(tail);
            }
            Term::Map(m) => m.iter().for_each(|(k, v)| stack.extend([k, v])),
            _ => {}
        }
    }
    out
}

#[test]
fn the_beams_vectors_decode_as_with_decode() {
    for v in vectors() {
        for (what, bytes) in [
            ("input", &v.input),
            ("plain", &v.plain),
            ("utf8", &v.utf8),
            ("compressed", &v.compressed),
        ] {
            let want = decode(bytes).unwrap_or_else(|e| panic!("{} {what}: {e}", v.name));
            let got = decode_shared(&Arc::new(bytes.clone()))
                .unwrap_or_else(|e| panic!("{} {what}: {e}", v.name));
            assert_eq!(got, want, "{} {what}", v.name);
        }
    }
}

#[test]
fn long_binaries_refer_to_the_buffer_and_keep_it_alive() {
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    let t = Term::Tuple(vec![
        Term::atom("blob"),
        Term::Binary(big.clone().into()),
        Term::Binary(b"short".into()),
    ]);
    let buf = Arc::new(encode(&t));
    let got = decode_shared(&buf).expect("decode_shared");
    assert_eq!(got, t);
    assert_eq!(
        Arc::strong_count(&buf),
        2,
        "one reference, the long binary's"
    );
    let bins = binaries(&got);
    assert!(bins.iter().any(|b| b.is_shared() && b.len() == big.len()));
    assert!(bins.iter().any(|b| b.is_inline() && b[..] == b"short"[..]));
    // the buffer outlives the caller's handle
    drop(buf);
    assert_eq!(got, t);
    let copy = got.clone();
    drop(got);
    assert_eq!(copy, t);
}

#[test]
fn binaries_below_the_limits_are_copied() {
    // 64 bytes or more but less than an eighth of the buffer: copied
    let mut elems: Vec<Term> = (0..20)
        .map(|i| Term::Binary(vec![i as u8; 100].into()))
        .collect();
    // 63 bytes, the only element: copied however large its share
    let lone = Term::Binary(vec![5; erlkube_etf::SHARE_MIN - 1].into());
    elems.push(Term::Integer(1));
    for t in [Term::List(elems), lone] {
        let buf = Arc::new(encode(&t));
        let got = decode_shared(&buf).expect("decode_shared");
        assert_eq!(got, t);
        assert!(binaries(&got).iter().all(|b| !b.is_shared()), "{t:?}");
        assert_eq!(Arc::strong_count(&buf), 1);
    }
}

#[test]
fn compressed_input_is_decoded_from_its_inflated_copy() {
    let t = Term::Tuple(vec![Term::atom("z"), Term::Binary(vec![3; 50_000].into())]);
    let mut bytes = Vec::new();
    encode_with(
        &t,
        &EncodeOptions {
            compression: Some(6),
            ..Default::default()
        },
        &mut bytes,
    );
    assert_eq!(bytes.get(1), Some(&80), "compressed");
    let buf = Arc::new(bytes);
    let got = decode_shared(&buf).expect("decode_shared");
    assert_eq!(got, t);
    assert_eq!(Arc::strong_count(&buf), 1);
}

#[test]
fn errors_are_those_of_decode() {
    let mut bytes = encode(&Term::Binary(vec![1; 1000].into()));
    bytes.truncate(500);
    let buf = Arc::new(bytes);
    assert_eq!(
        decode_shared(&buf).map_err(|e| e.to_string()),
        decode(&buf).map_err(|e| e.to_string())
    );
    assert!(decode_shared(&buf).is_err());
    assert_eq!(Arc::strong_count(&buf), 1);
}

#[test]
fn writing_to_a_shared_binary_leaves_the_buffer_alone() {
    let t = Term::Binary(vec![9; 4096].into());
    let buf = Arc::new(encode(&t));
    let mut got = decode_shared(&buf).expect("decode_shared");
    if let Term::Binary(b) = &mut got {
        b[0] = 1;
        assert!(!b.is_shared());
    }
    assert_eq!(Arc::strong_count(&buf), 1);
    assert_eq!(decode(&buf).expect("decode"), t);
    assert_ne!(got, t);
}

#[test]
fn long_binaries_deeper_than_the_recursion_are_shared_too() {
    let depth = 2 * erlkube_etf::RECURSION_DEPTH;
    let mut t = Term::Binary(vec![4; 10_000].into());
    for _ in 0..depth {
        t = Term::List(vec![t]);
    }
    let buf = Arc::new(encode(&t));
    let got = decode_shared(&buf).expect("decode_shared");
    assert_eq!(got, t);
    let bins = binaries(&got);
    assert!(bins.len() == 1 && bins[0].is_shared());
    assert_eq!(Arc::strong_count(&buf), 2);
}
