//! decode → encode → decode → equal, for both minor versions and with
//! compression; the borrowed decoder must agree with the owned one, and
//! printing then parsing must give the term back.
#![no_main]

use erlkube_etf::{decode, decode_ref, encode_with, parse, EncodeOptions, Term};
use libfuzzer_sys::fuzz_target;

fn has_fun(t: &Term) -> bool {
    match t {
        Term::Fun(_) => true,
        Term::Tuple(v) | Term::List(v) => v.iter().any(has_fun),
        Term::ImproperList { elems, tail } => elems.iter().any(has_fun) || has_fun(tail),
        Term::Map(m) => m.iter().any(|(k, v)| has_fun(k) || has_fun(v)),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(t) = decode(data) else {
        return;
    };
    if data.get(1) != Some(&80) {
        let r = decode_ref(data).expect("owned decode succeeded, borrowed must too");
        assert_eq!(r.to_owned(), t);
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
        assert_eq!(u, t);
    }
    if !has_fun(&t) {
        let text = t.to_string();
        let p = parse(&text).unwrap_or_else(|e| panic!("printed text must parse: {e}: {text}"));
        assert_eq!(p, t, "{text}");
    }
});
