//! The lazy view (`decode_view`): same verdict and error (kind and offset)
//! as `decode_ref` on valid, mutated and truncated input; the same term
//! when read back; no allocation while validating and walking.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use erlkube_etf::{
    decode_ref, decode_ref_with, decode_view, decode_view_prefix, decode_view_with, encode, parse,
    AtomRef, Cursor, DecodeErrorKind as K, DecodeOptions, TermRef, TermView, ViewKind, Visit,
};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCS.with(|c| c.get());
    let r = f();
    (r, ALLOCS.with(|c| c.get()) - before)
}

mod common;

/// Every encoding in the golden vectors made by the BEAM, plus a few
/// composite terms.
fn seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = common::vectors()
        .into_iter()
        .flat_map(|v| [v.input, v.plain, v.utf8, v.compressed])
        .filter(|b| b.first() == Some(&131))
        .collect();
    out.sort();
    out.dedup();
    for text in [
        r#"{ok, [1,2,3], <<"hello">>, #{a => 1, <<"k">> => [x|y]}, 'atom', 3.14, "abc"}"#,
        r#"[{a, 1}, {b, [1000, -5, 2.5]}, #{}, [], {}, [[]|[]], 'é', <<>>]"#,
        r#"#{k => #{nested => [1, [2, [3 | tail]]]}, 12345678901234567890 => -1}"#,
    ] {
        out.push(encode(&parse(text).expect("seed text")));
    }
    // a LIST_EXT chain: [1 | [2 | "ab"]] written as two LIST_EXT segments
    out.push(vec![
        131, 108, 0, 0, 0, 1, 97, 1, 108, 0, 0, 0, 1, 97, 2, 107, 0, 2, 97, 98,
    ]);
    out
}

/// Rebuilds the eager tree from the view, the way `decode_ref` shapes it.
fn rebuild<'a>(v: TermView<'a>) -> TermRef<'a> {
    match v.kind() {
        ViewKind::Integer(i) => TermRef::Integer(i),
        ViewKind::Float(f) => TermRef::Float(f),
        ViewKind::Atom(a) => TermRef::Atom(a),
        ViewKind::Binary(b) => TermRef::Binary(b),
        ViewKind::ByteList(b) => TermRef::ByteList(b),
        ViewKind::Tuple(s) => TermRef::Tuple(s.map(rebuild).collect()),
        ViewKind::Map(m) => TermRef::Map(m.map(|(k, v)| (rebuild(k), rebuild(v))).collect()),
        ViewKind::List(l) => {
            let tail = l.tail();
            let elems: Vec<_> = l.map(rebuild).collect();
            match tail {
                None => TermRef::List(elems),
                Some(t) if elems.is_empty() => rebuild(t),
                Some(t) => TermRef::ImproperList {
                    elems,
                    tail: Box::new(rebuild(t)),
                },
            }
        }
        ViewKind::Other(t) => t,
        _ => unreachable!("no other kinds"),
    }
}

/// Rebuilds the eager tree from the cursor's pre-order visits (a list's
/// segments and string tails joined, as `decode_ref` joins them).
fn rebuild_cursor<'a>(c: &mut Cursor<'a>) -> TermRef<'a> {
    match c.next().expect("a node is pending") {
        Visit::Integer(i) => TermRef::Integer(i),
        Visit::Float(f) => TermRef::Float(f),
        Visit::Atom(a) => TermRef::Atom(AtomRef(std::borrow::Cow::Borrowed(a))),
        Visit::Latin1Atom(b) => TermRef::Atom(AtomRef(std::borrow::Cow::Owned(
            b.iter().map(|&c| c as char).collect(),
        ))),
        Visit::Binary(b) => TermRef::Binary(b),
        Visit::ByteList(b) => TermRef::ByteList(b),
        Visit::Nil => TermRef::List(Vec::new()),
        Visit::Tuple(n) => TermRef::Tuple((0..n).map(|_| rebuild_cursor(c)).collect()),
        Visit::Map(n) => TermRef::Map(
            (0..n)
                .map(|_| (rebuild_cursor(c), rebuild_cursor(c)))
                .collect(),
        ),
        Visit::List(n) => {
            let elems: Vec<_> = (0..n).map(|_| rebuild_cursor(c)).collect();
            // the tail is the next node; joined like decode_ref does
            // (`TermRef` has a `Drop` impl: parts are taken, not moved out)
            let mut tail = rebuild_cursor(c);
            match &mut tail {
                TermRef::List(rest) => {
                    TermRef::List(elems.into_iter().chain(std::mem::take(rest)).collect())
                }
                TermRef::ByteList(b) => TermRef::List(
                    elems
                        .into_iter()
                        .chain(b.iter().map(|&x| TermRef::Integer(x.into())))
                        .collect(),
                ),
                TermRef::ImproperList { elems: more, tail } => TermRef::ImproperList {
                    elems: elems.into_iter().chain(std::mem::take(more)).collect(),
                    tail: std::mem::replace(tail, Box::new(TermRef::Integer(0))),
                },
                _ => TermRef::ImproperList {
                    elems,
                    tail: Box::new(tail),
                },
            }
        }
        Visit::Other(v) => v.to_term_ref(),
        _ => unreachable!("no other visits"),
    }
}

/// Same verdict as decode_ref; on success the same tree and the exact
/// encoded span.
fn check(b: &[u8]) {
    match (decode_view(b), decode_ref(b)) {
        (Ok(v), Ok(t)) => {
            assert_eq!(rebuild(v), t, "input {b:?}");
            let mut c = v.cursor();
            assert_eq!(rebuild_cursor(&mut c), t, "cursor on {b:?}");
            assert_eq!(c.pending(), 0);
            assert!(c.next().is_none() && c.peek().is_none() && c.skip_term().is_none());
            // skipping the whole term, or every child of the root, ends at
            // the same place
            let mut c = v.cursor();
            assert_eq!(c.skip_term().map(|s| s.encoded()), Some(v.encoded()));
            assert!(c.next().is_none());
            assert_eq!(v.to_term_ref(), t);
            assert_eq!(v.encoded(), &b[1..]);
            let mut out = Vec::new();
            v.encode_into(&mut out);
            assert_eq!(out, b);
        }
        (Err(e), Err(f)) => assert_eq!(e, f, "input {b:?}"),
        (v, t) => panic!("view {v:?} but decode_ref {t:?} on {b:?}"),
    }
}

#[test]
fn view_agrees_with_decode_ref_on_valid_input() {
    for s in seeds() {
        check(&s);
    }
}

#[test]
fn view_agrees_with_decode_ref_on_mutated_and_truncated_input() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for s in seeds() {
        // every cut of short inputs, 64 spread cuts of long ones
        let step = (s.len() / 64).max(1);
        for cut in (0..s.len()).step_by(step) {
            check(&s[..cut]);
        }
        for _ in 0..200 {
            let mut m = s.clone();
            for _ in 0..1 + rnd() % 3 {
                let i = (rnd() as usize) % m.len();
                m[i] = rnd() as u8;
            }
            check(&m);
        }
    }
}

/// Any depth by default; a limit asked for gives the borrowed decoder's
/// error (kind and offset).
#[test]
fn view_takes_any_depth_and_keeps_a_limit_and_its_offset() {
    for (head, tail) in [
        (&[104u8, 1][..], &[][..]),
        (&[108, 0, 0, 0, 1][..], &[106][..]),
    ] {
        const LIMIT: usize = 512;
        let opts = DecodeOptions {
            max_depth: LIMIT,
            ..DecodeOptions::default()
        };
        for depth in [LIMIT, LIMIT + 1, 1_000_000] {
            let mut b = vec![131];
            for _ in 0..depth {
                b.extend_from_slice(head);
            }
            b.push(106);
            for _ in 0..depth {
                b.extend_from_slice(tail);
            }
            let v = decode_view(&b).expect("any depth");
            assert_eq!(v.encoded(), &b[1..]);
            let r = decode_view_with(&b, &opts);
            if depth <= LIMIT {
                assert!(r.is_ok());
            } else {
                let e = r.unwrap_err();
                assert_eq!(e.kind(), K::DepthLimit);
                assert_eq!(Err(e), decode_ref_with(&b, &opts).map(|_| ()));
            }
        }
    }
    // a long LIST_EXT tail chain does not nest
    let mut b = vec![131];
    for _ in 0..1_000_000 {
        b.extend_from_slice(&[108, 0, 0, 0, 1, 97, 7]);
    }
    b.push(106);
    let v = decode_view(&b).expect("chain");
    let ViewKind::List(l) = v.kind() else {
        panic!("a list")
    };
    assert_eq!(l.map(|e| e.as_i64().unwrap()).sum::<i64>(), 7_000_000);
    assert_eq!(v.encoded().len(), b.len() - 1);
}

#[test]
fn view_reports_trailing_bytes_and_prefix_length() {
    let mut b = encode(&parse("{a, <<1,2>>}").unwrap());
    let n = b.len();
    b.extend_from_slice(&[97, 1]);
    assert_eq!(decode_view(&b).unwrap_err().kind(), K::TrailingBytes);
    assert_eq!(decode_view(&b).unwrap_err().offset(), n);
    let (v, used) = decode_view_prefix(&b).unwrap();
    assert_eq!(used, n);
    assert_eq!(v.encoded(), &b[1..n]);
}

fn walk(v: TermView<'_>) -> u64 {
    match v.kind() {
        ViewKind::Integer(i) => i as u64,
        ViewKind::Float(f) => f.to_bits() >> 60,
        ViewKind::Atom(a) => a.as_str().len() as u64,
        ViewKind::Binary(b) | ViewKind::ByteList(b) => b.len() as u64,
        ViewKind::Tuple(s) => s.map(walk).sum(),
        ViewKind::List(l) => l.map(walk).sum(),
        ViewKind::Map(m) => m.map(|(k, v)| walk(k) + walk(v)).sum(),
        _ => 1,
    }
}

#[test]
fn validating_and_walking_allocates_nothing() {
    let big = erlkube_etf::Term::List(
        (0..1000)
            .map(|i| {
                parse(&format!(
                    r#"{{{i}, item, <<"v{i}">>, {i}.5, #{{k => [a, "xy"]}}}}"#
                ))
                .unwrap()
            })
            .collect(),
    );
    let b = encode(&big);
    let (sum, n) = allocations(|| walk(decode_view(&b).expect("valid")));
    assert_eq!(n, 0, "allocations while validating and walking");
    assert!(sum > 0);
    let (sum2, n) = allocations(|| {
        decode_view(&b)
            .expect("valid")
            .cursor()
            .map(|v| match v {
                Visit::Integer(i) => i as u64,
                Visit::Float(f) => f.to_bits() >> 60,
                Visit::Atom(a) => a.len() as u64,
                Visit::Binary(b) | Visit::ByteList(b) | Visit::Latin1Atom(b) => b.len() as u64,
                Visit::Tuple(_) | Visit::List(_) | Visit::Map(_) | Visit::Nil => 0,
                _ => 1,
            })
            .sum::<u64>()
    });
    assert_eq!(
        n, 0,
        "allocations while validating and reading with the cursor"
    );
    assert_eq!(sum2, sum, "the cursor visits what the iterators visit");
}
