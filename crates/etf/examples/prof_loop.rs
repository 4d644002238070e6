//! Profiling driver (not a benchmark): runs one codec path in a loop so
//! `perf record` can look at it. `prof_loop [enc|eetf|view]`, `SMALL=1` for
//! the small term instead of the 40000-tuple list.
use erlkube_etf::{encode, encode_into, Term};
use std::hint::black_box;
fn main() {
    let what = std::env::args().nth(1).unwrap_or_default();
    let small =
        erlkube_etf::parse(r#"{ok, [1,2,3], <<"hello">>, #{a => 1}, 'atom', 3.14}"#).unwrap();
    let tuples = Term::List(
        (0..40_000)
            .map(|i| {
                Term::Tuple(vec![
                    Term::Integer(i),
                    Term::atom("item"),
                    Term::Binary(format!("v{i}").into_bytes()),
                    Term::Float(i as f64 * 0.5),
                ])
            })
            .collect(),
    );
    let tuples = if std::env::var("SMALL").is_ok() {
        small
    } else {
        tuples
    };
    let n: u32 = if std::env::var("SMALL").is_ok() {
        20_000_000
    } else {
        200
    };
    let bytes = encode(&tuples);
    let et = eetf::Term::decode(&bytes[..]).unwrap();
    let mut buf = Vec::with_capacity(bytes.len());
    let t = std::time::Instant::now();
    for _ in 0..n {
        buf.clear();
        match what.as_str() {
            "eetf" => et.encode(&mut buf).unwrap(),
            "view" => {
                black_box(erlkube_etf::decode_view(&bytes).unwrap());
            }
            _ => encode_into(black_box(&tuples), &mut buf),
        }
        black_box(&buf);
    }
    println!("{what} {:?}", t.elapsed() / n);
}
