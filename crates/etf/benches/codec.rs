//! Codec throughput against two anchors measured in the same run: the
//! `eetf` crate and the BEAM's own `binary_to_term/1` / `term_to_binary/1`
//! (a compiled module timing loops inside one `erl` process on the same
//! bytes). Prints ns/op, MB/s and ratios.
//!
//! A second table encodes in iovec form (`EncodedIoVec`, like OTP's
//! `term_to_iovec/1`: binaries of at least 64 bytes referenced, not
//! copied) against eetf's contiguous encode and the BEAM's
//! `term_to_iovec/1`.
//!
//! A table of owned decoding, like for like: our `decode` (from `&[u8]`,
//! binaries copied) and `decode_shared` (from a shared `Arc<Vec<u8>>`,
//! long binaries referring to it), each result dropped, against eetf's
//! `Term::decode` reading the same buffer, its result dropped.
//!
//! A further, separate table encodes *from Rust values* (the corpus terms'
//! parts): with `Encoder` (no term built), by building our `Term` then
//! encoding, and by building eetf's `Term` then encoding.
//!
//!     cargo bench -p erlkube-etf
//!
//! `ETF_BENCH_MS` sets the minimum time per measurement round (default
//! 300 ms); each figure is the best of 5 interleaved rounds.

use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use erlkube_etf::{
    decode, decode_ref, decode_shared, decode_view, encode, encode_into, Atom, EncodedIoVec,
    Encoder, Term,
};

mod common;
use common::walk;
#[path = "common/corpus.rs"]
mod corpus;
use corpus::corpus;

fn min_time() -> Duration {
    let ms = std::env::var("ETF_BENCH_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    Duration::from_millis(ms)
}

/// Iterations of `f` that take at least `min_time()`.
fn calibrate(f: &mut dyn FnMut()) -> u64 {
    let min = min_time();
    let mut n: u64 = 1;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        if t.elapsed() >= min {
            return n;
        }
        n *= 2;
    }
}

/// Nanoseconds per call for each function. The functions are calibrated,
/// then run in interleaved rounds (so a load change on the machine hits
/// all of them alike) and the best round of each is kept.
fn measure_all(fs: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let ns: Vec<u64> = fs.iter_mut().map(|f| calibrate(*f)).collect();
    let mut best = vec![f64::INFINITY; fs.len()];
    for _ in 0..5 {
        for (i, f) in fs.iter_mut().enumerate() {
            let t = Instant::now();
            for _ in 0..ns[i] {
                f();
            }
            best[i] = best[i].min(t.elapsed().as_nanos() as f64 / ns[i] as f64);
        }
    }
    best
}

const ERL_MODULE: &str = r#"
-module(etf_bench).
-export([main/1]).
main(Dir) ->
    {ok, Names} = file:list_dir(Dir),
    [run(Dir, N) || N <- lists:sort(Names), lists:suffix(".etf", N)],
    ok.
run(Dir, Name) ->
    {ok, B} = file:read_file(filename:join(Dir, Name)),
    T = binary_to_term(B),
    D = measure(fun(N) -> dec(N, B) end),
    E = measure(fun(N) -> enc(N, T) end),
    I = measure(fun(N) -> iov(N, T) end),
    io:format("~s ~f ~f ~f~n", [filename:rootname(Name), D, E, I]).
%% results feed the next iteration so the compiler cannot drop the calls
dec(N, B) -> dec(N, B, none).
dec(0, _, Last) -> Last;
dec(N, B, _) -> dec(N - 1, B, binary_to_term(B)).
enc(N, T) -> enc(N, T, 0).
enc(0, _, Acc) -> Acc;
enc(N, T, Acc) -> enc(N - 1, T, Acc + byte_size(term_to_binary(T))).
iov(N, T) -> iov(N, T, 0).
iov(0, _, Acc) -> Acc;
iov(N, T, Acc) -> iov(N - 1, T, Acc + length(term_to_iovec(T))).
measure(F) -> measure(F, 1).
measure(F, N) ->
    {Us, _} = timer:tc(fun() -> F(N) end),
    MinUs = list_to_integer(os:getenv("ETF_BENCH_MS", "300")) * 1000,
    if Us < MinUs -> measure(F, N * 2);
       true -> best(F, N, Us * 1000 / N, 2)
    end.
best(_, _, Best, 0) -> Best;
best(F, N, Best, K) ->
    {Us, _} = timer:tc(fun() -> F(N) end),
    best(F, N, min(Best, Us * 1000 / N), K - 1).
"#;

/// (decode ns, encode ns, term_to_iovec ns) per corpus name, measured
/// inside one erl.
fn beam(corpus: &[(&str, Vec<u8>)]) -> Vec<(String, f64, f64, f64)> {
    let dir = std::env::temp_dir().join(format!("erlkube-etf-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (name, bytes) in corpus {
        std::fs::write(dir.join(format!("{name}.etf")), bytes).expect("write corpus");
    }
    std::fs::write(dir.join("etf_bench.erl"), ERL_MODULE).expect("write module");
    let d = dir
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let eval = format!(
        r#"{{ok, etf_bench}} = compile:file("{d}/etf_bench", [{{outdir, "{d}"}}]), code:add_patha("{d}"), etf_bench:main("{d}"), halt()."#
    );
    let out = Command::new("erl")
        .args(["-noshell", "-eval", &eval])
        .output()
        .expect("erl must be installed to measure the BEAM anchor");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "erl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((
                it.next()?.to_string(),
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
            ))
        })
        .collect()
}

fn mbps(bytes: usize, ns: f64) -> f64 {
    bytes as f64 / ns * 1e3
}

fn main() {
    // `cargo test --benches` runs this with --bench absent; keep it short.
    let corpus = corpus();
    let encoded: Vec<(&str, Vec<u8>)> = corpus.iter().map(|(n, t)| (*n, encode(t))).collect();
    let beam = beam(&encoded);

    println!(
        "{:<13} {:>8} | {:>9} {:>9} {:>9} {:>9} {:>9} | {:>11} {:>11} {:>11} | {:>9} {:>9} {:>9} | {:>11}",
        "corpus", "bytes", "view+walk", "dec_ref", "dec_owned", "eetf_dec", "beam_dec",
        "view x e/b", "ref x e/b", "own x eetf", "enc", "eetf_enc", "beam_enc", "enc x e/b"
    );
    let mut geo = [0.0f64; 7];
    for ((name, term), (_, bytes)) in corpus.iter().zip(&encoded) {
        let eterm = eetf::Term::decode(&bytes[..]).expect("eetf decode");
        let mut buf1 = Vec::with_capacity(bytes.len());
        let mut buf2 = Vec::with_capacity(bytes.len());
        let t = measure_all(&mut [
            &mut || {
                let v = decode_view(black_box(bytes)).expect("decode_view");
                black_box(walk(v));
            },
            &mut || {
                black_box(decode_ref(black_box(bytes)).expect("decode_ref"));
            },
            &mut || {
                black_box(decode(black_box(bytes)).expect("decode"));
            },
            &mut || {
                black_box(eetf::Term::decode(black_box(&bytes[..])).expect("eetf decode"));
            },
            &mut || {
                buf1.clear();
                encode_into(black_box(term), &mut buf1);
                black_box(&buf1);
            },
            &mut || {
                buf2.clear();
                black_box(&eterm).encode(&mut buf2).expect("eetf encode");
                black_box(&buf2);
            },
        ]);
        let (view, dec_ref, dec_owned, eetf_dec, enc, eetf_enc) =
            (t[0], t[1], t[2], t[3], t[4], t[5]);
        let (bdec, benc) = beam
            .iter()
            .find(|(n, _, _, _)| n == name)
            .map(|(_, d, e, _)| (*d, *e))
            .expect("BEAM figures for every corpus item");
        let r = [
            eetf_dec / view,
            bdec / view,
            eetf_dec / dec_ref,
            bdec / dec_ref,
            eetf_dec / dec_owned,
            eetf_enc / enc,
            benc / enc,
        ];
        for (g, x) in geo.iter_mut().zip(r) {
            *g += x.ln();
        }
        println!(
            "{:<13} {:>8} | {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} | {:>5.2} {:>5.2} | {:>5.2} {:>5.2} | {:>11.2} | {:>9.0} {:>9.0} {:>9.0} | {:>5.2} {:>5.2}",
            name, bytes.len(), view, dec_ref, dec_owned, eetf_dec, bdec, r[0], r[1], r[2], r[3], r[4], enc, eetf_enc, benc, r[5], r[6]
        );
        println!(
            "{:<13} {:>8} | {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} | {:>35} | {:>9.1} {:>9.1} {:>9.1} | (MB/s)",
            "", "",
            mbps(bytes.len(), view), mbps(bytes.len(), dec_ref), mbps(bytes.len(), dec_owned), mbps(bytes.len(), eetf_dec), mbps(bytes.len(), bdec),
            "", mbps(bytes.len(), enc), mbps(bytes.len(), eetf_enc), mbps(bytes.len(), benc)
        );
    }
    let n = corpus.len() as f64;
    let gm = |i: usize| (geo[i] / n).exp();
    println!(
        "geometric mean ratios: view+walk vs eetf {:.2}x, vs BEAM {:.2}x; decode_ref vs eetf {:.2}x, vs BEAM {:.2}x; owned decode vs eetf {:.2}x; encode vs eetf {:.2}x, vs BEAM {:.2}x",
        gm(0), gm(1), gm(2), gm(3), gm(4), gm(5), gm(6)
    );
    println!(
        "(times in ns per term; x e/b = eetf time / ours, BEAM time / ours; higher is better)"
    );
    owned(&encoded);
    iovec(&corpus, &beam);
    direct(&corpus);
}

/// Owned decoding like for like: both sides build a tree that owns its
/// data (or shares the input buffer it was given) and drop it in the
/// timed loop; eetf reads the same buffer (its only input form is
/// `io::Read`, here the buffer's bytes).
fn owned(encoded: &[(&str, Vec<u8>)]) {
    println!();
    println!("owned decode, like for like (each result dropped in the loop): ours from &[u8] (binaries copied) and from a shared Arc<Vec<u8>> (decode_shared: binaries of >= 64 bytes and >= 1/8 of the buffer refer to it), eetf Term::decode reading the same buffer");
    println!(
        "{:<13} {:>8} | {:>9} {:>9} {:>9} | {:>10} {:>10}",
        "corpus", "bytes", "dec_owned", "dec_shrd", "eetf_dec", "own x e", "shrd x e"
    );
    let mut geo = [0.0f64; 2];
    for (name, bytes) in encoded {
        let buf = Arc::new(bytes.clone());
        let t = measure_all(&mut [
            &mut || {
                black_box(decode(black_box(&buf[..])).expect("decode"));
            },
            &mut || {
                black_box(decode_shared(black_box(&buf)).expect("decode_shared"));
            },
            &mut || {
                black_box(eetf::Term::decode(black_box(&buf[..])).expect("eetf decode"));
            },
        ]);
        let r = [t[2] / t[0], t[2] / t[1]];
        for (g, x) in geo.iter_mut().zip(r) {
            *g += x.ln();
        }
        println!(
            "{:<13} {:>8} | {:>9.0} {:>9.0} {:>9.0} | {:>10.2} {:>10.2}",
            name,
            bytes.len(),
            t[0],
            t[1],
            t[2],
            r[0],
            r[1]
        );
    }
    let n = encoded.len() as f64;
    println!(
        "geometric mean ratios: owned decode vs eetf {:.2}x, shared {:.2}x",
        (geo[0] / n).exp(),
        (geo[1] / n).exp()
    );
}

/// The iovec table: our `EncodedIoVec` (binaries of at least
/// `IOVEC_MIN_BORROWED` bytes borrowed, the rest in one reused buffer),
/// against eetf's contiguous `Term::encode` and the BEAM's
/// `term_to_iovec/1` on the same term.
fn iovec(corpus: &[(&str, Term)], beam: &[(String, f64, f64, f64)]) {
    println!();
    println!("iovec encode (like OTP's term_to_iovec): EncodedIoVec::encode into reused buffers, large binaries borrowed; vs eetf Term::encode (contiguous, reused Vec) and BEAM term_to_iovec/1");
    println!(
        "{:<13} {:>8} {:>9} | {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9}",
        "corpus", "bytes", "borrowed", "iovec", "enc", "eetf_enc", "beam_iov", "iov x e", "iov x b"
    );
    let mut geo = [0.0f64; 2];
    for (name, term) in corpus {
        let bytes = encode(term);
        let eterm = eetf::Term::decode(&bytes[..]).expect("eetf decode");
        let mut iov = EncodedIoVec::new();
        iov.encode(term);
        let borrowed: usize = iov.borrowed().map(|b| b.len()).sum();
        let mut buf1 = Vec::with_capacity(bytes.len());
        let mut buf2 = Vec::with_capacity(bytes.len());
        let t = measure_all(&mut [
            &mut || {
                iov.encode(black_box(term));
                black_box(&iov);
            },
            &mut || {
                buf1.clear();
                encode_into(black_box(term), &mut buf1);
                black_box(&buf1);
            },
            &mut || {
                buf2.clear();
                black_box(&eterm).encode(&mut buf2).expect("eetf encode");
                black_box(&buf2);
            },
        ]);
        let (iv, enc, eetf_enc) = (t[0], t[1], t[2]);
        let biov = beam
            .iter()
            .find(|(n, ..)| n == name)
            .map(|(.., i)| *i)
            .expect("BEAM figures for every corpus item");
        let r = [eetf_enc / iv, biov / iv];
        for (g, x) in geo.iter_mut().zip(r) {
            *g += x.ln();
        }
        println!(
            "{:<13} {:>8} {:>9} | {:>9.0} {:>9.0} {:>9.0} {:>9.0} | {:>9.2} {:>9.2}",
            name,
            bytes.len(),
            borrowed,
            iv,
            enc,
            eetf_enc,
            biov,
            r[0],
            r[1]
        );
    }
    let n = corpus.len() as f64;
    println!(
        "geometric mean ratios: iovec vs eetf encode {:.2}x, vs BEAM term_to_iovec {:.2}x",
        (geo[0] / n).exp(),
        (geo[1] / n).exp()
    );
    println!("(times in ns per term; enc = our contiguous encode_into, measured again in this table's rounds; iov x e = eetf time / iovec time, iov x b = BEAM term_to_iovec time / iovec time; higher is better)");
}

/// The float of the small term (`3.14`, not pi).
#[allow(clippy::approx_constant)]
const SMALL_FLOAT: f64 = 3.14;

/// The Rust values the corpus terms are made of.
struct Sources {
    /// medium: (id, name, score, node, seen) per record
    records: Vec<(i64, Vec<u8>, f64, String, i64)>,
    /// large_tuples: (I, <<"vI">>, F) per tuple
    rows: Vec<(i64, Vec<u8>, f64)>,
    /// large_binary's binary
    blob: Vec<u8>,
}

fn sources() -> Sources {
    Sources {
        records: (0..40i64)
            .map(|i| {
                (
                    i,
                    format!("user-{i}").into_bytes(),
                    (i * 7) as f64 + 0.5,
                    format!("n{i}@host"),
                    1_600_000_000_000 + i,
                )
            })
            .collect(),
        rows: (0..40_000i64)
            .map(|i| (i, format!("v{i}").into_bytes(), i as f64 * 0.5))
            .collect(),
        blob: (0..1_048_576u32).map(|i| (i * 31) as u8).collect(),
    }
}

/// Writes corpus item `name` from the Rust values with [`Encoder`], node
/// by node (map keys in map-key order, as `term_to_binary/1` writes them).
fn write_direct(name: &str, s: &Sources, out: &mut Vec<u8>) {
    let mut e = Encoder::new(out);
    match name {
        "small" => {
            e.tuple(6).atom("ok").string(&[1, 2, 3]).binary(b"hello");
            e.map(1).atom("a").int(1);
            e.atom("atom").float(SMALL_FLOAT);
        }
        "medium" => {
            e.list(s.records.len());
            for (id, name, score, node, seen) in &s.records {
                e.map(7).atom("id").int(*id).atom("name").binary(name);
                e.atom("node").atom(node).atom("role").atom("admin");
                e.atom("score").float(*score).atom("seen").int(*seen);
                e.atom("tags").list(2).atom("alpha").atom("beta").nil();
            }
            e.nil();
        }
        "large_tuples" => {
            e.list(s.rows.len());
            for (i, b, f) in &s.rows {
                e.tuple(4).int(*i).atom("item").binary(b).float(*f);
            }
            e.nil();
        }
        _ => {
            e.tuple(2).atom("blob").binary(&s.blob);
        }
    }
}

/// Builds our `Term` for corpus item `name` from the Rust values.
fn build_ours(name: &str, s: &Sources) -> Term {
    let a = |t: &str| Term::Atom(Atom::new(t));
    match name {
        "small" => Term::Tuple(vec![
            a("ok"),
            Term::List(vec![Term::Integer(1), Term::Integer(2), Term::Integer(3)]),
            Term::Binary(b"hello".to_vec().into()),
            Term::map([(a("a"), Term::Integer(1))]),
            a("atom"),
            Term::Float(SMALL_FLOAT),
        ]),
        "medium" => Term::List(
            s.records
                .iter()
                .map(|(id, name, score, node, seen)| {
                    Term::map([
                        (a("id"), Term::Integer(*id)),
                        (a("name"), Term::Binary(name.clone().into())),
                        (a("role"), a("admin")),
                        (a("score"), Term::Float(*score)),
                        (a("tags"), Term::List(vec![a("alpha"), a("beta")])),
                        (a("node"), a(node)),
                        (a("seen"), Term::Integer(*seen)),
                    ])
                })
                .collect(),
        ),
        "large_tuples" => {
            let item = Atom::new("item");
            Term::List(
                s.rows
                    .iter()
                    .map(|(i, b, f)| {
                        Term::Tuple(vec![
                            Term::Integer(*i),
                            Term::Atom(item.clone()),
                            Term::Binary(b.clone().into()),
                            Term::Float(*f),
                        ])
                    })
                    .collect(),
            )
        }
        _ => Term::Tuple(vec![a("blob"), Term::Binary(s.blob.clone().into())]),
    }
}

/// Builds eetf's `Term` for corpus item `name` from the Rust values.
fn build_eetf(name: &str, s: &Sources) -> eetf::Term {
    use eetf::{Atom as A, BigInteger, Binary, FixInteger, Float, List, Map, Tuple};
    let a = |t: &str| eetf::Term::from(A::from(t));
    let f = |x: f64| eetf::Term::from(Float::try_from(x).expect("finite"));
    let int = |i: i64| match i32::try_from(i) {
        Ok(i) => eetf::Term::from(FixInteger::from(i)),
        Err(_) => eetf::Term::from(BigInteger::from(i)),
    };
    match name {
        "small" => eetf::Term::from(Tuple::from(vec![
            a("ok"),
            eetf::Term::from(List::from(vec![int(1), int(2), int(3)])),
            eetf::Term::from(Binary::from(&b"hello"[..])),
            eetf::Term::from(Map::from([(a("a"), int(1))])),
            a("atom"),
            f(SMALL_FLOAT),
        ])),
        "medium" => eetf::Term::from(List::from(
            s.records
                .iter()
                .map(|(id, name, score, node, seen)| {
                    eetf::Term::from(Map::from([
                        (a("id"), int(*id)),
                        (a("name"), eetf::Term::from(Binary::from(name.clone()))),
                        (a("role"), a("admin")),
                        (a("score"), f(*score)),
                        (
                            a("tags"),
                            eetf::Term::from(List::from(vec![a("alpha"), a("beta")])),
                        ),
                        (a("node"), a(node)),
                        (a("seen"), int(*seen)),
                    ]))
                })
                .collect::<Vec<_>>(),
        )),
        "large_tuples" => eetf::Term::from(List::from(
            s.rows
                .iter()
                .map(|(i, b, x)| {
                    eetf::Term::from(Tuple::from(vec![
                        int(*i),
                        a("item"),
                        eetf::Term::from(Binary::from(b.clone())),
                        f(*x),
                    ]))
                })
                .collect::<Vec<_>>(),
        )),
        _ => eetf::Term::from(Tuple::from(vec![
            a("blob"),
            eetf::Term::from(Binary::from(s.blob.clone())),
        ])),
    }
}

/// Beside the main table, clearly apart: encoding *from Rust values*.
/// `direct` writes the bytes with [`Encoder`] (no term is built); `term`
/// builds our `Term` from the values and encodes it; eetf builds its
/// `Term` from the values and encodes it (its only way). The bytes of
/// `direct` and `term` are checked equal to the corpus encoding.
fn direct(corpus: &[(&str, Term)]) {
    let s = sources();
    println!();
    println!("encoding from Rust values (not the Term -> bytes figure above): build + encode, reused output Vec");
    println!(
        "{:<13} {:>8} | {:>9} {:>9} {:>9} | {:>13} {:>13}",
        "corpus", "bytes", "direct", "term", "eetf", "eetf/direct", "eetf/term"
    );
    for (name, term) in corpus {
        let want = encode(term);
        let mut check = Vec::new();
        write_direct(name, &s, &mut check);
        assert_eq!(check, want, "Encoder bytes for {name}");
        assert_eq!(encode(&build_ours(name, &s)), want, "built Term for {name}");
        let mut b1 = Vec::with_capacity(want.len());
        let mut b2 = Vec::with_capacity(want.len());
        let mut b3 = Vec::with_capacity(want.len());
        let t = measure_all(&mut [
            &mut || {
                b1.clear();
                write_direct(black_box(name), black_box(&s), &mut b1);
                black_box(&b1);
            },
            &mut || {
                b2.clear();
                let t = build_ours(black_box(name), black_box(&s));
                encode_into(&t, &mut b2);
                black_box(&b2);
            },
            &mut || {
                b3.clear();
                let t = build_eetf(black_box(name), black_box(&s));
                t.encode(&mut b3).expect("eetf encode");
                black_box(&b3);
            },
        ]);
        println!(
            "{:<13} {:>8} | {:>9.0} {:>9.0} {:>9.0} | {:>13.2} {:>13.2}",
            name,
            want.len(),
            t[0],
            t[1],
            t[2],
            t[2] / t[0],
            t[2] / t[1]
        );
    }
}
