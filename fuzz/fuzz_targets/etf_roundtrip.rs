//! decode → encode → decode → equal, for both minor versions and with
//! compression; the borrowed decoder must agree with the owned one (or
//! refuse a term nested past its limit), and printing then parsing must
//! give the term back. Terms of any depth: nothing here recurses per
//! level (equality of deep terms is checked on their encodings).
#![no_main]

use erlkube_etf::{
    decode, decode_ref, encode_with, parse, DecodeErrorKind, EncodeOptions, Term,
    BORROWED_MAX_DEPTH,
};
use libfuzzer_sys::fuzz_target;

/// Nesting depth and whether a fun occurs, without recursion.
fn shape(t: &Term) -> (usize, bool) {
    let (mut depth, mut fun) = (0, false);
    let mut stack = vec![(t, 1usize)];
    while let Some((t, d)) = stack.pop() {
        depth = depth.max(d);
        match t {
            Term::Fun(f) => {
                fun = true;
                stack.extend(f.free_vars.iter().map(|e| (e, d + 1)));
            }
            Term::Tuple(v) | Term::List(v) => stack.extend(v.iter().map(|e| (e, d + 1))),
            Term::ImproperList { elems, tail } => {
                stack.extend(elems.iter().map(|e| (e, d + 1)));
                stack.push((tail, d + 1));
            }
            Term::Map(m) => {
                for (k, v) in m.iter() {
                    stack.push((k, d + 1));
                    stack.push((v, d + 1));
                }
            }
            _ => {}
        }
    }
    (depth, fun)
}

fuzz_target!(|data: &[u8]| {
    let Ok(t) = decode(data) else {
        return;
    };
    let (depth, fun) = shape(&t);
    // `==` recurses: only on shallow terms (`depth` counts the innermost
    // scalar as a level)
    let shallow = depth <= BORROWED_MAX_DEPTH + 1;
    if data.get(1) != Some(&80) {
        match decode_ref(data) {
            // the borrowed tree is bounded by its limit
            Ok(r) => assert_eq!(r.to_owned(), t),
            Err(e) if e.kind() == DecodeErrorKind::DepthLimit && depth > BORROWED_MAX_DEPTH => {}
            Err(e) => panic!("owned decode succeeded, borrowed failed: {e}"),
        }
    }
    for opts in [
        EncodeOptions::default(),
        EncodeOptions::utf8_atoms(),
        EncodeOptions {
            compression: Some(1),
            ..EncodeOptions::default()
        },
    ] {
        let mut out = Vec::new();
        encode_with(&t, &opts, &mut out);
        let u = decode(&out).expect("our own encoding must decode");
        if shallow {
            assert_eq!(u, t);
        } else {
            let mut again = Vec::new();
            encode_with(&u, &opts, &mut again);
            assert!(again == out, "re-encoding a deep term changed it");
        }
    }
    if !fun {
        let text = t.to_string();
        let p = parse(&text).unwrap_or_else(|e| panic!("printed text must parse: {e}: {text}"));
        if shallow {
            assert_eq!(p, t, "{text}");
        } else {
            assert!(p.to_string() == text, "print, parse, print changed a deep term");
        }
    }
});
