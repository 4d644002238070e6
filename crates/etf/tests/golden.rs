//! Golden vectors made by the real BEAM (`tests/golden/gen.escript` writes
//! `tests/golden/vectors.tsv`), checked in both directions.

use erlkube_etf::{decode, decode_ref, encode, encode_with, parse, EncodeOptions, Term};

mod common;
use common::vectors;

#[test]
fn decode_matches_parsed_text_and_display() {
    for v in vectors() {
        let t = decode(&v.input).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        for (what, bytes) in [
            ("plain", &v.plain),
            ("utf8", &v.utf8),
            ("compressed", &v.compressed),
        ] {
            let u = decode(bytes).unwrap_or_else(|e| panic!("{} {what}: {e}", v.name));
            assert_eq!(u, t, "{} {what}", v.name);
        }
        if v.flags == "fun" {
            continue;
        }
        let parsed = parse(&v.text).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(t, parsed, "{}: decode(hex) != parse(text)", v.name);
        assert_eq!(t.to_string(), v.text, "{}: display", v.name);
    }
}

#[test]
fn encode_matches_term_to_binary() {
    for v in vectors() {
        let t: Term = if v.flags == "fun" {
            decode(&v.plain).unwrap()
        } else {
            parse(&v.text).unwrap()
        };
        if v.flags != "nocanon" {
            assert_eq!(encode(&t), v.plain, "{}: minor_version 1", v.name);
            let mut out = Vec::new();
            encode_with(&t, &EncodeOptions::utf8_atoms(), &mut out);
            assert_eq!(out, v.utf8, "{}: minor_version 2", v.name);
        } else {
            assert_eq!(decode(&encode(&t)).unwrap(), t, "{}", v.name);
        }
        // compression: zlib implementations differ in bytes, so decode-equal
        let mut z = Vec::new();
        encode_with(
            &t,
            &EncodeOptions {
                compression: Some(6),
                ..EncodeOptions::default()
            },
            &mut z,
        );
        assert_eq!(decode(&z).unwrap(), t, "{}: compressed", v.name);
        // like the BEAM, compress only when it makes the term smaller (the
        // exact threshold depends on the zlib implementation's output)
        if z.get(1) == Some(&80) {
            assert!(z.len() < v.plain.len(), "{}: compressed is larger", v.name);
        } else {
            assert_eq!(z, v.plain, "{}", v.name);
        }
    }
}

#[test]
fn borrowed_decode_agrees_with_owned() {
    for v in vectors() {
        if v.plain.get(1) == Some(&80) {
            continue;
        }
        let r = decode_ref(&v.plain).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(r.to_owned(), decode(&v.plain).unwrap(), "{}", v.name);
    }
}
