//! Hostile input: never a panic, never a stack overflow, never an allocation
//! the input cannot justify. A counting allocator records the largest single
//! allocation so "claims gigabytes" inputs are checked for real.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;

use erlkube_etf::{
    decode, decode_prefix, decode_prefix_with_atom_cache, decode_ref, decode_ref_with, decode_view,
    decode_view_with, decode_with, encode, Atom, DecodeErrorKind as K, DecodeOptions, Term,
};

/// The depth the borrowed decoder used to stop at.
const OLD_BORROWED_LIMIT: usize = 512;

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(l.size())));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(n)));
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Largest single allocation made (on this thread) while running `f`.
fn largest_alloc<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|m| m.set(0));
    let r = f();
    (r, LARGEST.with(|m| m.get()))
}

fn kind(input: &[u8]) -> K {
    decode(input).expect_err("must fail").kind()
}

/// `[[[...[]...]]]` nested `n` deep, as `term_to_binary/1` writes it.
fn nested_lists(n: usize) -> Vec<u8> {
    let mut b = vec![131];
    for _ in 0..n {
        b.extend_from_slice(&[108, 0, 0, 0, 1]);
    }
    b.push(106);
    b.extend(std::iter::repeat_n(106, n));
    b
}

/// Every decoder takes a million levels by default, and a limit when
/// one is asked for: the same error (kind and offset) from each, on
/// either side of the recursion's hand-over to the explicit stack.
#[test]
fn million_nested_lists_hit_the_limits_that_are_asked_for() {
    let b = nested_lists(1_000_000);
    assert!(decode_ref(&b).is_ok());
    assert!(decode_view(&b).is_ok());
    for limit in [10, 127, 128, 129, 200, 5000, 999_999] {
        let opts = DecodeOptions {
            max_depth: limit,
            ..DecodeOptions::default()
        };
        let e = decode_with(&b, &opts).unwrap_err();
        assert_eq!(e.kind(), K::DepthLimit);
        assert_eq!(e.offset(), 1 + 5 * limit);
        assert_eq!(decode_ref_with(&b, &opts).map(|_| ()), Err(e));
        assert_eq!(decode_view_with(&b, &opts).map(|_| ()), Err(e));
    }
    let opts = DecodeOptions {
        max_depth: 1_000_000,
        ..DecodeOptions::default()
    };
    assert!(decode_ref_with(&b, &opts).is_ok());
    assert!(decode_view_with(&b, &opts).is_ok());
}

#[test]
fn terms_past_the_old_borrowed_limit_are_usable_on_a_test_thread() {
    // levels past the old limit of the borrowed decoder decode; Clone,
    // Display, comparison and the parser then stay within a 2 MiB
    // test-thread stack.
    let mut b = vec![131];
    for _ in 0..OLD_BORROWED_LIMIT {
        b.extend_from_slice(&[104, 1]);
    }
    b.push(106);
    let t = decode(&b).expect("at the limit");
    let c = t.clone();
    assert_eq!(c, t);
    assert_eq!(encode(&t), b);
    let text = t.to_string();
    assert_eq!(erlkube_etf::parse(&text).unwrap(), t);
    assert_eq!(t.cmp_term(&c), std::cmp::Ordering::Equal);
    drop(c);
    // nested lists and maps at the limit decode too
    let mut b = vec![131];
    for _ in 0..OLD_BORROWED_LIMIT {
        b.extend_from_slice(&[108, 0, 0, 0, 1]);
    }
    b.push(106);
    b.extend(std::iter::repeat_n(106, OLD_BORROWED_LIMIT));
    assert_eq!(encode(&decode(&b).unwrap()), b);
    let mut b = vec![131];
    for _ in 0..OLD_BORROWED_LIMIT {
        b.extend_from_slice(&[116, 0, 0, 0, 1, 97, 1]);
    }
    b.push(106);
    assert_eq!(encode(&decode(&b).unwrap()), b);
    // one level more is taken by the borrowed decoder too
    let mut b = vec![131];
    for _ in 0..=OLD_BORROWED_LIMIT {
        b.extend_from_slice(&[104, 1]);
    }
    b.push(106);
    assert_eq!(decode_ref(&b).unwrap().to_owned(), decode(&b).unwrap());
}

#[test]
fn chained_list_tails_do_not_nest() {
    // [1 | [1 | [1 | ... ]]] written as a million LIST_EXT tails is a flat list
    let n = 1_000_000;
    let mut b = vec![131];
    for _ in 0..n {
        b.extend_from_slice(&[108, 0, 0, 0, 1, 97, 1]);
    }
    b.push(106);
    let t = decode(&b).unwrap();
    assert_eq!(t.as_list().map(|l| l.len()), Some(n));
}

#[test]
fn lengths_claiming_gigabytes_do_not_allocate() {
    let cases: &[(&str, Vec<u8>)] = &[
        ("binary", vec![131, 109, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
        ("list", vec![131, 108, 0xff, 0xff, 0xff, 0xff, 97, 1, 97, 2]),
        ("large tuple", vec![131, 105, 0xff, 0xff, 0xff, 0xff, 97, 1]),
        ("map", vec![131, 116, 0xff, 0xff, 0xff, 0xff, 97, 1, 97, 2]),
        (
            "large big",
            vec![131, 111, 0xff, 0xff, 0xff, 0xff, 0, 1, 2, 3],
        ),
        ("bit binary", vec![131, 77, 0xff, 0xff, 0xff, 0xff, 3, 1]),
        ("string", vec![131, 107, 0xff, 0xff, 1]),
        ("fun free vars", {
            let mut v = vec![131, 112, 0, 0, 0, 60, 1];
            v.extend_from_slice(&[0; 16]);
            v.extend_from_slice(&[
                0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 119, 1, b'm', 97, 0, 97, 0,
            ]);
            v.extend_from_slice(&[88, 119, 1, b'n', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 97, 1]);
            v
        }),
        (
            "reference words",
            vec![131, 90, 0xff, 0xff, 119, 1, b'n', 0, 0, 0, 0],
        ),
    ];
    for (name, b) in cases {
        let (r, largest) = largest_alloc(|| decode(b));
        let e = r.expect_err(name);
        assert!(
            matches!(e.kind(), K::Truncated | K::InvalidReference),
            "{name}: {e}"
        );
        assert!(largest < 4096, "{name}: allocated {largest} bytes");
    }
}

#[test]
fn atoms_over_255_characters_are_rejected() {
    let mut b = vec![131, 118, 1, 0];
    b.extend(std::iter::repeat_n(b'a', 256));
    assert_eq!(kind(&b), K::AtomTooLong);
    let mut b = vec![131, 100, 1, 0];
    b.extend(std::iter::repeat_n(b'a', 256));
    assert_eq!(kind(&b), K::AtomTooLong);
    // 255 three-byte characters are fine (765 bytes)
    let s: String = std::iter::repeat_n('字', 255).collect();
    let mut b = vec![131, 118];
    b.extend_from_slice(&(s.len() as u16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
    assert_eq!(decode(&b).unwrap(), Term::atom(&s));
    // one more is not
    let s: String = std::iter::repeat_n('字', 256).collect();
    let mut b = vec![131, 118];
    b.extend_from_slice(&(s.len() as u16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
    assert_eq!(kind(&b), K::AtomTooLong);
    assert!(Atom::try_new(&s).is_err());
}

#[test]
fn invalid_utf8_atom_is_named() {
    assert_eq!(kind(&[131, 119, 2, 0xc3, 0x28]), K::InvalidUtf8);
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    let t = erlkube_etf::parse(
        r#"{ok, [1, 2.5, <<"bin">>, #{a => 'B'}], <<1,2:3>>, -12345678901234567890123,
           #Pid<'a@h'.1.2.3>, #Port<'a@h'.4294967301.1>, #Ref<'a@h'.1.2.3.4>, fun m:f/2,
           [a | b], "str", 1.0e10, 'ünï'}"#,
    )
    .unwrap();
    let b = encode(&t);
    for cut in 0..b.len() {
        let e = decode(&b[..cut]).expect_err("prefix must fail");
        assert_eq!(e.kind(), K::Truncated, "cut {cut}");
        assert!(decode_ref(&b[..cut]).is_err());
    }
    assert_eq!(decode(&b).unwrap(), t);
}

#[test]
fn compressed_bombs_are_refused() {
    // declared size above the limit
    let b = [131, 80, 0x7f, 0xff, 0xff, 0xff, 0x78, 0x9c];
    assert_eq!(kind(&b), K::CompressedTooLarge);
    // a real bomb: 10 MB of zeros in a binary, declared as 100 bytes
    let mut body = vec![109];
    body.extend_from_slice(&(10_000_000u32).to_be_bytes());
    body.resize(5 + 10_000_000, 0);
    let mut z = flate2_compress(&body);
    let mut b = vec![131, 80, 0, 0, 0, 100];
    b.append(&mut z);
    let (r, largest) = largest_alloc(|| decode(&b));
    assert_eq!(r.unwrap_err().kind(), K::InvalidCompressed);
    assert!(largest < 1 << 20, "allocated {largest}");
    // the same bomb declaring its true size passes under a big enough limit
    // and fails under a smaller one
    let mut z = flate2_compress(&body);
    let mut b = vec![131, 80];
    b.extend_from_slice(&(body.len() as u32).to_be_bytes());
    b.append(&mut z);
    let small = DecodeOptions {
        max_uncompressed: 1 << 20,
        ..DecodeOptions::default()
    };
    assert_eq!(
        decode_with(&b, &small).unwrap_err().kind(),
        K::CompressedTooLarge
    );
    assert_eq!(
        decode(&b).unwrap().as_binary().map(|b| b.len()),
        Some(10_000_000)
    );
    // borrowed decoding names compressed input
    assert_eq!(decode_ref(&b).unwrap_err().kind(), K::CompressedInput);
}

fn flate2_compress(data: &[u8]) -> Vec<u8> {
    // zlib stream via the encoder's public option, without the ETF header
    let t = Term::Binary(data[5..].to_vec().into());
    let mut out = Vec::new();
    erlkube_etf::encode_with(
        &t,
        &erlkube_etf::EncodeOptions {
            compression: Some(9),
            ..Default::default()
        },
        &mut out,
    );
    assert_eq!(out[1], 80);
    let mut z = out[6..].to_vec();
    z.flush().unwrap();
    z
}

#[test]
fn local_ext_and_atom_cache_refs_are_named() {
    assert_eq!(kind(&[131, 121, 1, 2, 3]), K::LocalExt);
    assert_eq!(kind(&[131, 82, 0]), K::AtomCacheRef(0));
    let cache = [Atom::new("hello"), Atom::new("world")];
    let (t, used) =
        decode_prefix_with_atom_cache(&[131, 104, 2, 82, 1, 82, 0, 99], &cache).unwrap();
    assert_eq!(used, 7);
    assert_eq!(
        t,
        Term::tuple(vec![Term::atom("world"), Term::atom("hello")])
    );
    assert_eq!(
        decode_prefix_with_atom_cache(&[131, 82, 2], &cache)
            .unwrap_err()
            .kind(),
        K::AtomCacheRef(2)
    );
}

#[test]
fn trailing_bytes_and_prefix_decoding() {
    let e = decode(&[131, 97, 1, 0]).unwrap_err();
    assert_eq!((e.kind(), e.offset()), (K::TrailingBytes, 3));
    assert_eq!(
        decode_prefix(&[131, 97, 1, 0]).unwrap(),
        (Term::Integer(1), 3)
    );
    let msg = e.to_string();
    assert!(msg.contains("byte 3") && !msg.contains('\n'), "{msg}");
}

#[test]
fn other_named_errors() {
    assert_eq!(kind(&[]), K::Truncated);
    assert_eq!(kind(&[130, 97, 1]), K::BadVersion(130));
    assert_eq!(kind(&[131, 200]), K::UnknownTag(200));
    assert_eq!(kind(&[131, 117, 0]), K::UnsupportedTag(117));
    let nan = f64::NAN.to_bits().to_be_bytes();
    assert_eq!(kind(&[&[131, 70][..], &nan].concat()), K::InvalidFloat);
    assert_eq!(kind(&[131, 77, 0, 0, 0, 1, 0, 5]), K::InvalidBitBinary);
    assert_eq!(kind(&[131, 110, 1, 2, 5]), K::InvalidSign);
    assert_eq!(kind(&[131, 90, 0, 6, 119, 1, b'n']), K::InvalidReference);
    assert_eq!(kind(&[131, 88, 97, 1]), K::UnexpectedType);
    assert_eq!(
        kind(&[131, 116, 0, 0, 0, 2, 97, 1, 97, 2, 97, 1, 97, 3]),
        K::DuplicateMapKey
    );
}
