//! The golden vectors `tests/golden/gen.escript` made with `erl`, shared
//! by the test files that check against them (`mod common;`).
#![allow(dead_code)]

/// One line of `golden/vectors.tsv`.
pub struct Vector {
    /// The vector's name.
    pub name: String,
    /// The term in Erlang syntax (`-` for funs).
    pub text: String,
    /// Bytes to decode (crafted for the old and alternative tags, else
    /// `term_to_binary/1`).
    pub input: Vec<u8>,
    /// `term_to_binary/1` (minor version 1).
    pub plain: Vec<u8>,
    /// `term_to_binary(T, [{minor_version, 2}])`.
    pub utf8: Vec<u8>,
    /// `term_to_binary(T, [compressed])`.
    pub compressed: Vec<u8>,
    /// `canon`, `nocanon` (the encoding need not be byte-equal) or `fun`.
    pub flags: String,
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Every vector of `golden/vectors.tsv`.
pub fn vectors() -> Vec<Vector> {
    let v: Vec<Vector> = include_str!("../golden/vectors.tsv")
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert_eq!(c.len(), 7, "bad line {l}");
            Vector {
                name: c[0].into(),
                text: c[1].into(),
                input: unhex(c[2]),
                plain: unhex(c[3]),
                utf8: unhex(c[4]),
                compressed: unhex(c[5]),
                flags: c[6].into(),
            }
        })
        .collect();
    assert!(v.len() > 90);
    v
}
