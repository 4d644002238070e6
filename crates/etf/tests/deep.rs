//! Terms nested a million levels deep, which `binary_to_term/1` accepts:
//! the owned and borrowed decoders, the lazy view, the payload check,
//! every encoder, `Drop`, `Clone`, `==`, term order and `Hash` take them
//! on a 2 MiB test thread (no recursion per level), with memory in
//! proportion to the input; errors deep inside keep their kind and offset.
//! Terms made by a real `erl` go through the borrowed paths and back to
//! `erl` (the node's live round trip is in the node crate's interop
//! tests).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use erlkube_etf::parse;

use std::cmp::Ordering;
use std::hash::{BuildHasher, RandomState};
use std::process::Command;

use erlkube_etf::{
    decode, decode_body_prefix_with_atom_cache, decode_ref, decode_view, encode, encode_iovec,
    validate_body_prefix_with_atom_cache, Atom, DecodeErrorKind as K, EncodeOptions, EncodedIoVec,
    Encoder, Fun, FunData, Pid, Term, ViewKind, RECURSION_DEPTH,
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
    mixed_around(n, b"core")
}

/// [`mixed`] around another binary of four bytes.
fn mixed_around(n: usize, core: &[u8; 4]) -> Vec<u8> {
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
    b.extend_from_slice(core);
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

/// The borrowed tree and the lazy view of `b` (a term `levels` deep):
/// decoded with memory in proportion to the input, converted, cloned,
/// compared, printed and dropped without recursion per level.
fn borrowed_round_trip(name: &str, b: &[u8], levels: usize) {
    let (r, peak) = peak_during(|| decode_ref(b).expect("decode_ref"));
    eprintln!(
        "{name}: decode_ref peak {peak} bytes ({:.1}x the input)",
        peak as f64 / b.len() as f64
    );
    // a 56-byte `TermRef` and a one-element vector per level at most,
    // plus the decoder's stack of open levels
    assert!(
        peak <= 128 * b.len() + (1 << 20),
        "{name}: decode_ref peaked at {peak} bytes for {} input bytes",
        b.len()
    );
    let owned = r.to_owned();
    assert!(encode(&owned) == b, "{name}: decode_ref then to_owned");
    drop(owned);
    let c = r.clone();
    assert!(c == r, "{name}: clone equals");
    drop(c);
    assert!(format!("{r:?}").len() > levels, "{name}: Debug");
    let ((), peak) = peak_during(|| drop(r));
    assert!(peak < 1 << 20, "{name}: drop used {peak} bytes");

    let (v, peak) = peak_during(|| decode_view(b).expect("decode_view"));
    // the check keeps one small entry per open level beyond the recursion
    assert!(peak <= 32 * b.len(), "{name}: decode_view peaked at {peak}");
    // lengths are a scan with a count, without allocating
    let (e, peak) = peak_during(|| v.encoded());
    assert!(e == &b[1..], "{name}: encoded");
    assert_eq!(peak, 0, "{name}: encoded allocated");
    // the iterators step over deep elements, the cursor reads every node
    let first = match v.kind() {
        ViewKind::Tuple(mut it) => it.next(),
        ViewKind::List(mut it) => it.next(),
        ViewKind::Map(mut it) => it.next().map(|(_, v)| v),
        _ => None,
    }
    .expect("a non-empty container");
    assert!(first.encoded().len() < b.len() - 1);
    if let ViewKind::List(l) = v.kind() {
        // past the (deep) elements to the tail
        let _ = l.tail();
    }
    let nodes = v.cursor().count();
    assert!(nodes > levels, "{name}: cursor read {nodes} nodes");
    assert!(encode(&v.to_owned()) == b, "{name}: view to_owned");
    assert!(
        v.to_term_ref() == decode_ref(b).unwrap(),
        "{name}: to_term_ref"
    );
    assert!(format!("{v:?}").len() > levels, "{name}: view Debug");
}

#[test]
fn million_nested_lists_borrowed() {
    borrowed_round_trip("lists", &lists(N), N);
}

#[test]
fn million_nested_tuples_borrowed() {
    borrowed_round_trip("tuples", &tuples(N), N);
}

#[test]
fn million_nested_maps_borrowed() {
    borrowed_round_trip("maps", &maps(N), N);
}

#[test]
fn million_mixed_levels_borrowed() {
    borrowed_round_trip("mixed", &mixed(N), N);
}

fn hash(t: &Term, h: &RandomState) -> u64 {
    h.hash_one(t)
}

/// `==`, term order and `Hash` on two separately decoded terms a million
/// levels deep, equal and differing only at the bottom.
#[test]
fn million_level_terms_compare_and_hash() {
    let h = RandomState::new();
    for b in [lists(N), tuples(N), maps(N), mixed(N)] {
        let (x, y) = (decode(&b).unwrap(), decode(&b).unwrap());
        assert!(x == y);
        assert_eq!(x.cmp_term(&y), Ordering::Equal);
        assert_eq!(x.cmp_exact(&y), Ordering::Equal);
        assert_eq!(hash(&x, &h), hash(&y, &h));
    }
    let core = decode(&mixed(N)).unwrap();
    let cora = decode(&mixed_around(N, b"cora")).unwrap();
    assert!(core != cora);
    // <<"core">> > <<"cora">>, a million levels down
    assert_eq!(core.cmp_term(&cora), Ordering::Greater);
    assert_eq!(cora.cmp_exact(&core), Ordering::Less);
    assert_ne!(hash(&core, &h), hash(&cora, &h));
    // the borrowed trees compare too
    let (p, q) = (mixed(N), mixed_around(N, b"cora"));
    let (rp, rq) = (decode_ref(&p).unwrap(), decode_ref(&q).unwrap());
    assert!(rp == decode_ref(&p).unwrap());
    assert!(rp != rq);
    // a shallower term of the same shape sorts before a deeper one
    let shallow = decode(&lists(N - 1)).unwrap();
    let deep = decode(&lists(N)).unwrap();
    assert_eq!(shallow.cmp_term(&deep), Ordering::Less);
    assert!(shallow != deep);
}

/// Runs `erl` with `expr`, which must evaluate to a binary that is
/// written to stdout as is.
fn erl_output(expr: &str) -> Vec<u8> {
    let eval = format!("ok = file:write(standard_io, ({expr})), halt(0).");
    let out = Command::new("erl")
        .args(["-noshell", "-noinput", "-eval", &eval])
        .output()
        .expect("erl must be installed (tests use the real BEAM)");
    assert!(out.status.success(), "erl failed: {out:?}");
    out.stdout
}

/// Terms a million levels deep made by a real `erl` (`term_to_binary/1`):
/// the nested lists, tuples and maps are byte for byte the inputs the
/// tests above build; the borrowed tree and the view take them all; the
/// owned term made from the borrowed tree, encoded here, is `=:=` to the
/// original on `erl`.
#[test]
fn million_level_terms_from_erl_through_the_borrowed_paths() {
    let dir = std::env::temp_dir().join(format!("etf-deep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let builds = [
        "lists:foldl(fun(_, A) -> [A] end, [], lists:seq(1, 1000000))",
        "lists:foldl(fun(_, A) -> {A} end, {}, lists:seq(1, 1000000))",
        "lists:foldl(fun(_, A) -> #{a => A} end, #{}, lists:seq(1, 1000000))",
        "lists:foldl(fun(I, A) -> case I rem 4 of 0 -> [I, A]; 1 -> {x, A}; \
         2 -> #{I => A}; 3 -> [y | A] end end, <<\"core\">>, lists:seq(1, 1000000))",
    ];
    let built = [lists(N), tuples(N), maps(N)];
    for (i, build) in builds.iter().enumerate() {
        let b = erl_output(&format!("term_to_binary({build})"));
        assert!(b.len() > 1_000_000, "{build}: {} bytes", b.len());
        match built.get(i) {
            Some(ours) => assert!(*ours == b, "{build}: not the bytes the tests build"),
            None => borrowed_round_trip(build, &b, N),
        }
        let r = decode_ref(&b).expect("decode_ref");
        let ours = encode(&r.to_owned());
        drop(r);
        let path = dir.join(format!("t{i}"));
        std::fs::write(&path, &ours).unwrap();
        let same = erl_output(&format!(
            "begin {{ok, B}} = file:read_file(\"{}\"), \
             atom_to_binary(binary_to_term(B) =:= ({build})) end",
            path.display()
        ));
        assert_eq!(String::from_utf8_lossy(&same), "true", "{build}");
    }
    let _ = std::fs::remove_dir_all(&dir);
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
