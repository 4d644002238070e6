//! Terms nested a million levels deep, which `binary_to_term/1` accepts:
//! the owned decoder, the payload check, every encoder and `Drop` take
//! them on a 2 MiB test thread (no recursion per level), with memory in
//! proportion to the input; errors deep inside keep their kind and offset.
//! (The live `erl` round trip is in the node crate's interop tests.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use erlkube_etf::parse;

use erlkube_etf::{
    decode, decode_body_prefix_with_atom_cache, decode_view, encode, encode_iovec,
    validate_body_prefix_with_atom_cache, Atom, DecodeErrorKind as K, EncodeOptions, EncodedIoVec,
    Encoder, Fun, FunData, Pid, Term, RECURSION_DEPTH,
};

/// Live and peak heap bytes of this thread.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grow(n: usize) {
    let _ = LIVE.try_with(|l| {
        l.set(l.get() + n);
        let _ = PEAK.try_with(|p| p.set(p.get().max(l.get())));
    });
}

fn shrink(n: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(n)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grow(l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        shrink(l.size());
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // old and new blocks both count while the copy is made
        grow(n);
        shrink(l.size());
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Peak heap bytes above the level at the start, while running `f`.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(base));
    let r = f();
    (r, PEAK.with(|p| p.get()) - base)
}

const N: usize = 1_000_000;

/// `lists:foldl(fun(_, A) -> [A] end, [], lists:seq(1, N))`.
fn lists(n: usize) -> Vec<u8> {
    let mut b = vec![131];
    for _ in 0..n {
        b.extend_from_slice(&[108, 0, 0, 0, 1]);
    }
    b.push(106);
    b.extend(std::iter::repeat_n(106, n));
    b
}

/// `{{{...{}...}}}`
fn tuples(n: usize) -> Vec<u8> {
    let mut b = vec![131];
    for _ in 0..n {
        b.extend_from_slice(&[104, 1]);
    }
    b.extend_from_slice(&[104, 0]);
    b
}

/// `#{a => #{a => ... #{} ...}}`
fn maps(n: usize) -> Vec<u8> {
    let mut b = vec![131];
    for _ in 0..n {
        b.extend_from_slice(&[116, 0, 0, 0, 1, 100, 0, 1, b'a']);
    }
    b.extend_from_slice(&[116, 0, 0, 0, 0]);
    b
}

/// Levels cycling through a tuple `{x, _}`, a list `[_, 7]`, a map
/// `#{1 => _}` and an improper list `[y | _]`, around `<<"core">>`.
fn mixed(n: usize) -> Vec<u8> {
    let mut b = vec![131];
    let mut tails: Vec<&[u8]> = Vec::new();
    for i in 0..n {
        match i % 4 {
            0 => {
                b.extend_from_slice(&[104, 2, 100, 0, 1, b'x']);
                tails.push(&[]);
            }
            1 => {
                b.extend_from_slice(&[108, 0, 0, 0, 2]);
                tails.push(&[97, 7, 106]);
            }
            2 => {
                b.extend_from_slice(&[116, 0, 0, 0, 1, 97, 1]);
                tails.push(&[]);
            }
            _ => {
                b.extend_from_slice(&[108, 0, 0, 0, 1, 100, 0, 1, b'y']);
                tails.push(&[]);
            }
        }
    }
    b.extend_from_slice(&[109, 0, 0, 0, 4]);
    b.extend_from_slice(b"core");
    for t in tails.iter().rev() {
        b.extend_from_slice(t);
    }
    b
}

/// How deep `t` is along elements that have elements, counted without
/// recursion.
fn depth(t: &Term) -> usize {
    fn nested(t: &Term) -> bool {
        match t {
            Term::Tuple(v) | Term::List(v) => !v.is_empty(),
            Term::Map(m) => !m.is_empty(),
            Term::ImproperList { .. } => true,
            Term::Fun(f) => !f.free_vars.is_empty(),
            _ => false,
        }
    }
    let mut d = 0;
    let mut cur = t;
    loop {
        let next = match cur {
            Term::Tuple(v) | Term::List(v) => v.iter().find(|c| nested(c)),
            Term::Map(m) => m.entries().iter().map(|e| &e.1).find(|c| nested(c)),
            Term::ImproperList { elems, tail } => elems.iter().chain([&**tail]).find(|c| nested(c)),
            Term::Fun(f) => f.free_vars.iter().find(|c| nested(c)),
            _ => None,
        };
        d += 1;
        match next {
            Some(n) => cur = n,
            None => return d,
        }
    }
}

/// Every decoder that takes any depth decodes `b`, and every encoder
/// writes it back byte for byte; dropping the term is part of it.
fn round_trip(name: &str, b: &[u8], levels: usize) {
    let body = &b[1..];
    assert_eq!(
        validate_body_prefix_with_atom_cache(body, &[]),
        Ok(body.len()),
        "{name}: payload check"
    );
    let (t, peak) = peak_during(|| decode(b).expect("decodes"));
    // one `Term` (40 bytes) and one element vector per level at most,
    // plus the decoder's stack of open levels: in proportion to the input
    assert!(
        peak <= 64 * b.len() + (1 << 20),
        "{name}: decode peaked at {peak} bytes for {} input bytes",
        b.len()
    );
    eprintln!(
        "{name}: {} input bytes, decode peak {peak} bytes ({:.1}x)",
        b.len(),
        peak as f64 / b.len() as f64
    );
    assert!(depth(&t) >= levels, "{name}: depth {}", depth(&t));
    assert!(encode(&t) == b, "{name}: contiguous encode");
    let mut iov = EncodedIoVec::new();
    encode_iovec(&t, &EncodeOptions::default(), &mut iov);
    assert!(iov.to_vec() == b, "{name}: iovec encode");
    drop(iov);
    let mut out = Vec::new();
    Encoder::new(&mut out).term(&t);
    assert!(out == b, "{name}: stream encoder");
    let (t2, used) = decode_body_prefix_with_atom_cache(body, &[]).expect("body decodes");
    assert_eq!(used, body.len());
    drop(t2);
    assert!(format!("{t:?}").len() > levels, "{name}: Debug");
    let c = t.clone();
    assert!(encode(&c) == b, "{name}: clone");
    drop(c);
    // printed in Erlang syntax and parsed back
    let text = t.to_string();
    assert!(text.len() >= levels, "{name}: printed {} chars", text.len());
    let parsed = parse(&text).expect("parses");
    assert!(encode(&parsed) == b, "{name}: print and parse");
    drop(parsed);
    let ((), peak) = peak_during(|| drop(t));
    assert!(peak < 1 << 20, "{name}: drop used {peak} bytes");
}

#[test]
fn million_nested_lists_round_trip() {
    round_trip("lists", &lists(N), N);
}

#[test]
fn million_nested_tuples_round_trip() {
    round_trip("tuples", &tuples(N), N);
}

#[test]
fn million_nested_maps_round_trip() {
    round_trip("maps", &maps(N), N);
}

#[test]
fn million_mixed_levels_round_trip() {
    round_trip("mixed", &mixed(N), N);
}

#[test]
fn printing_matches_the_shells_form() {
    let t = decode(&lists(3)).unwrap();
    assert_eq!(t.to_string(), "[[[[]]]]");
    let t = decode(&mixed(4)).unwrap();
    assert_eq!(t.to_string(), "{x,[#{1 => [y|<<\"core\">>]},7]}");
    assert_eq!(parse("{x,[#{1 => [y|<<\"core\">>]},7]}").unwrap(), t);
}

#[test]
fn debug_is_the_derived_form() {
    let t = parse("{1, [a | b], #{k => <<1>>}, 2.5}").unwrap();
    assert_eq!(
        format!("{t:?}"),
        "Tuple([Integer(1), ImproperList { elems: [Atom(Atom(\"a\"))], tail: Atom(Atom(\"b\")) }, \
         Map(Map { entries: [(Atom(Atom(\"k\")), Binary([1]))] }), Float(2.5)])"
    );
}

/// The lazy view recurses and keeps its limit: a deep term is refused,
/// not a crash.
#[test]
fn view_refuses_deep_terms() {
    assert_eq!(decode_view(&lists(N)).unwrap_err().kind(), K::DepthLimit);
}

fn pid() -> Pid {
    Pid {
        node: Atom::new("n@h"),
        id: 1,
        serial: 0,
        creation: 3,
    }
}

/// Terms built by hand (not decoded) a million levels deep: encoded
/// without recursion, decoded back equal in bytes, dropped.
#[test]
fn hand_built_deep_terms_encode_and_drop() {
    let shapes: [fn(Term) -> Term; 5] = [
        |t| Term::Tuple(vec![t]),
        |t| Term::List(vec![Term::Integer(300), t]),
        |t| Term::map([(Term::atom("k"), t)]),
        |t| Term::ImproperList {
            elems: vec![Term::atom("h")],
            tail: Box::new(Term::Tuple(vec![t])),
        },
        |t| {
            Term::Fun(Fun::new(FunData {
                arity: 0,
                uniq: [7; 16],
                index: 1,
                module: Atom::new("m"),
                old_index: 1,
                old_uniq: 2,
                pid: pid(),
                free_vars: vec![t],
            }))
        },
    ];
    for (i, wrap) in shapes.iter().enumerate() {
        let levels = if i == 4 { N / 10 } else { N };
        let mut t = Term::binary(b"x".to_vec());
        for _ in 0..levels {
            t = wrap(t);
        }
        let b = encode(&t);
        let back = decode(&b).expect("decodes");
        assert!(encode(&back) == b, "shape {i}");
        assert!(depth(&back) >= levels, "shape {i}");
        drop(back);
        drop(t);
    }
    // every shape in turn
    let mut t = Term::nil();
    for i in 0..N {
        t = shapes[i % 5](t);
    }
    let b = encode(&t);
    assert!(encode(&decode(&b).unwrap()) == b);
}

/// An error at the bottom of a deep term has the kind and offset it has
/// at the bottom of a shallow one (shifted by the levels' bytes), in the
/// owned decoder (deep path: beyond `RECURSION_DEPTH`) and the payload
/// check alike.
#[test]
fn errors_deep_inside_keep_kind_and_offset() {
    // (core bytes, expected kind); the offset is the one the core alone
    // gives, shifted
    let cores: [(&[u8], K); 6] = [
        (&[104, 2, 97], K::Truncated),
        (&[104, 1, 200], K::UnknownTag(200)),
        (&[116, 0, 0, 0, 9, 97], K::Truncated),
        (&[108, 0, 0, 0, 1, 97, 1], K::Truncated),
        (&[108, 0, 0, 0, 1, 97, 1, 104, 1, 255], K::UnknownTag(255)),
        (&[70, 127, 240, 0, 0, 0, 0, 0, 0], K::InvalidFloat),
    ];
    for levels in [
        3,
        RECURSION_DEPTH - 1,
        RECURSION_DEPTH,
        RECURSION_DEPTH + 5,
        200_000,
    ] {
        for (core, kind) in cores {
            let alone: Vec<u8> = [131].iter().chain(core).copied().collect();
            let at = decode(&alone).unwrap_err().offset() - 1;
            let mut b = vec![131];
            for _ in 0..levels {
                b.extend_from_slice(&[104, 1]);
            }
            let prefix = b.len();
            b.extend_from_slice(core);
            let e = decode(&b).unwrap_err();
            assert_eq!(
                (e.kind(), e.offset()),
                (kind, prefix + at),
                "{levels} {core:?}"
            );
            let e = validate_body_prefix_with_atom_cache(&b[1..], &[]).unwrap_err();
            assert_eq!(
                (e.kind(), e.offset() + 1),
                (kind, prefix + at),
                "{levels} {core:?}"
            );
        }
        // a duplicate key deep inside: the owned decoder refuses it at
        // the map, the payload check (which does not compare keys) takes it
        let mut b = vec![131];
        for _ in 0..levels {
            b.extend_from_slice(&[108, 0, 0, 0, 1]);
        }
        let prefix = b.len();
        b.extend_from_slice(&[116, 0, 0, 0, 2, 97, 1, 97, 1, 97, 1, 97, 2]);
        b.extend(std::iter::repeat_n(106, levels));
        let e = decode(&b).unwrap_err();
        assert_eq!((e.kind(), e.offset()), (K::DuplicateMapKey, prefix));
        assert_eq!(
            validate_body_prefix_with_atom_cache(&b[1..], &[]),
            Ok(b.len() - 1)
        );
    }
}
