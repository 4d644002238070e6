//! Profiling driver (not a benchmark): runs one codec path in a loop so
//! `perf record` or `valgrind --tool=callgrind` can look at it.
//! `prof_loop [enc|iov|eetf|view|cursor|fold|validate|ref|owned|eetfdec]`, `ITERS=n`;
//! `SMALL=1` for the bench's small term, `MEDIUM=1` for its medium term,
//! `BLOB=1` for its large binary, instead of the 40000-tuple list. `iov`
//! is the iovec form (`EncodedIoVec`, reused).
use erlkube_etf::{encode, encode_into, Term};
use std::hint::black_box;
fn main() {
    let what = std::env::args().nth(1).unwrap_or_default();
    let small =
        erlkube_etf::parse(r#"{ok, [1,2,3], <<"hello">>, #{a => 1}, 'atom', 3.14}"#).unwrap();
    let (tuples, default_n) = if std::env::var("SMALL").is_ok() {
        (small, 20_000_000)
    } else if std::env::var("MEDIUM").is_ok() {
        (medium(), 200_000)
    } else if std::env::var("BLOB").is_ok() {
        (
            Term::Tuple(vec![
                Term::atom("blob"),
                Term::Binary((0..1_048_576u32).map(|i| (i * 31) as u8).collect()),
            ]),
            2_000,
        )
    } else {
        (large(), 200)
    };
    let n: u32 = std::env::var("ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_n);
    let bytes = encode(&tuples);
    let et = eetf::Term::decode(&bytes[..]).unwrap();
    let mut buf = Vec::with_capacity(bytes.len());
    let mut iov = erlkube_etf::EncodedIoVec::new();
    let t = std::time::Instant::now();
    for _ in 0..n {
        buf.clear();
        match what.as_str() {
            "eetf" => et.encode(&mut buf).unwrap(),
            "iov" => {
                iov.encode(black_box(&tuples));
                black_box(&iov);
            }
            "ref" => {
                black_box(erlkube_etf::decode_ref(&bytes).unwrap());
            }
            "owned" => {
                black_box(erlkube_etf::decode(&bytes).unwrap());
            }
            "eetfdec" => {
                black_box(eetf::Term::decode(&bytes[..]).unwrap());
            }
            "validate" => {
                black_box(erlkube_etf::decode_view(&bytes).unwrap());
            }
            "view" => {
                black_box(walk(erlkube_etf::decode_view(&bytes).unwrap()));
            }
            "fold" => {
                let v = erlkube_etf::decode_view(&bytes).unwrap();
                black_box(common::walk(v));
            }
            "cursor" => {
                let v = erlkube_etf::decode_view(&bytes).unwrap();
                black_box(walk_cursor(&mut v.cursor()));
            }
            _ => encode_into(black_box(&tuples), &mut buf),
        }
        black_box(&buf);
    }
    println!("{what} {:?}", t.elapsed() / n.max(1));
}

fn walk(v: erlkube_etf::TermView<'_>) -> u64 {
    use erlkube_etf::ViewKind;
    match v.kind() {
        ViewKind::Integer(i) => i as u64,
        ViewKind::Float(f) => f.to_bits() >> 52,
        ViewKind::Atom(a) => a.as_str().len() as u64,
        ViewKind::Binary(b) | ViewKind::ByteList(b) => b.len() as u64,
        ViewKind::Tuple(s) => s.map(walk).sum(),
        ViewKind::List(l) => l.map(walk).sum(),
        ViewKind::Map(m) => m.map(|(k, v)| walk(k) + walk(v)).sum(),
        _ => 1,
    }
}

#[path = "../benches/common/mod.rs"]
mod common;

fn walk_cursor(c: &mut erlkube_etf::Cursor<'_>) -> u64 {
    use erlkube_etf::Visit;
    match c.next() {
        Some(Visit::Integer(i)) => i as u64,
        Some(Visit::Float(f)) => f.to_bits() >> 52,
        Some(Visit::Atom(a)) => a.len() as u64,
        Some(Visit::Binary(b) | Visit::ByteList(b) | Visit::Latin1Atom(b)) => b.len() as u64,
        Some(Visit::Tuple(n)) => (0..n).map(|_| walk_cursor(c)).sum(),
        Some(Visit::List(n)) => (0..=n).map(|_| walk_cursor(c)).sum(),
        Some(Visit::Map(n)) => (0..2 * n).map(|_| walk_cursor(c)).sum(),
        Some(Visit::Nil) => 0,
        _ => 1,
    }
}

fn medium() -> Term {
    Term::List(
        (0..40)
            .map(|i| {
                erlkube_etf::parse(&format!(
                    r#"#{{id => {i}, name => <<"user-{i}">>, role => admin, score => {}.5,
                         tags => [alpha, beta], node => 'n{i}@host', seen => {}}}"#,
                    i * 7,
                    1_600_000_000_000i64 + i
                ))
                .unwrap()
            })
            .collect(),
    )
}

fn large() -> Term {
    Term::List(
        (0..40_000)
            .map(|i| {
                Term::Tuple(vec![
                    Term::Integer(i),
                    Term::atom("item"),
                    Term::Binary(format!("v{i}").into_bytes().into()),
                    Term::Float(i as f64 * 0.5),
                ])
            })
            .collect(),
    )
}
