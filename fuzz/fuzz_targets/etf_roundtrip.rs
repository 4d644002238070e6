//! decode → encode → decode → equal, for both minor versions and with
//! compression; the borrowed decoder and the lazy view must agree with
//! the owned decoder (on the term and on the bytes it spans), `==`, term
//! order and `Hash` must agree with each other, and printing then parsing
//! must give the term back. Terms of any depth: nothing here or in the
//! codec recurses per level.
#![no_main]

use std::cmp::Ordering;
use std::hash::{BuildHasher, RandomState};

use erlkube_etf::{decode, decode_ref, decode_view, encode_with, parse, EncodeOptions, Term};
use libfuzzer_sys::fuzz_target;

/// Whether a fun occurs, without recursion.
fn has_fun(t: &Term) -> bool {
    let mut fun = false;
    let mut stack = vec![(t, 1usize)];
    while let Some((t, d)) = stack.pop() {
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
    fun
}

fuzz_target!(|data: &[u8]| {
    let Ok(t) = decode(data) else {
        return;
    };
    let fun = has_fun(&t);
    if data.get(1) != Some(&80) {
        let r = decode_ref(data)
            .unwrap_or_else(|e| panic!("owned decode succeeded, borrowed failed: {e}"));
        assert!(r.to_owned() == t, "borrowed decode differs");
        assert!(r.clone() == r, "borrowed clone differs");
        let v = decode_view(data)
            .unwrap_or_else(|e| panic!("owned decode succeeded, view failed: {e}"));
        assert!(v.encoded() == &data[1..], "view spans other bytes");
        assert!(v.to_owned() == t, "view differs");
    }
    let h = RandomState::new();
    let c = t.clone();
    assert!(c == t, "clone differs");
    assert_eq!(t.cmp_term(&c), Ordering::Equal);
    assert_eq!(t.cmp_exact(&c), Ordering::Equal);
    assert_eq!(h.hash_one(&t), h.hash_one(&c));
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
        assert!(u == t, "encode then decode differs");
    }
    if !fun {
        let text = t.to_string();
        let p = parse(&text).unwrap_or_else(|e| panic!("printed text must parse: {e}: {text}"));
        assert!(p == t, "print then parse differs: {text}");
    }
});
