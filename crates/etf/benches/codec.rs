//! Codec throughput against two anchors measured in the same run: the
//! `eetf` crate and the BEAM's own `binary_to_term/1` / `term_to_binary/1`
//! (a compiled module timing loops inside one `erl` process on the same
//! bytes). Prints ns/op, MB/s and ratios.
//!
//!     cargo bench -p erlkube-etf
//!
//! `ETF_BENCH_MS` sets the minimum time per measurement round (default
//! 300 ms); each figure is the best of 5 interleaved rounds.

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use erlkube_etf::{
    decode, decode_ref, decode_view, encode, encode_into, parse, Term, TermView, Visit,
};

/// Visits every node of a view (the "walk" of validate+walk) with the
/// pre-order cursor, the view's fastest full visit: sums integers, atom and
/// binary lengths and float bits, so no node is skipped.
fn walk(v: TermView<'_>) -> u64 {
    v.cursor()
        .map(|n| match n {
            Visit::Integer(i) => i as u64,
            Visit::Float(f) => f.to_bits() >> 52,
            Visit::Atom(a) => a.len() as u64,
            Visit::Binary(b) | Visit::ByteList(b) | Visit::Latin1Atom(b) => b.len() as u64,
            Visit::Tuple(_) | Visit::List(_) | Visit::Map(_) | Visit::Nil => 0,
            _ => 1,
        })
        .sum()
}

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

fn corpus() -> Vec<(&'static str, Term)> {
    let small =
        parse(r#"{ok, [1,2,3], <<"hello">>, #{a => 1}, 'atom', 3.14}"#).expect("small term");
    // ~3 KB: a list of records as a GenServer reply might carry
    let medium = Term::List(
        (0..40)
            .map(|i| {
                parse(&format!(
                    r#"#{{id => {i}, name => <<"user-{i}">>, role => admin, score => {}.5,
                         tags => [alpha, beta], node => 'n{i}@host', seen => {}}}"#,
                    i * 7,
                    1_600_000_000_000i64 + i
                ))
                .expect("medium term")
            })
            .collect(),
    );
    // ~1 MB: a list of tuples
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
    // ~1 MB: one big binary in a tuple
    let blob = Term::Tuple(vec![
        Term::atom("blob"),
        Term::Binary((0..1_048_576u32).map(|i| (i * 31) as u8).collect()),
    ]);
    vec![
        ("small", small),
        ("medium", medium),
        ("large_tuples", tuples),
        ("large_binary", blob),
    ]
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
    io:format("~s ~f ~f~n", [filename:rootname(Name), D, E]).
%% results feed the next iteration so the compiler cannot drop the calls
dec(N, B) -> dec(N, B, none).
dec(0, _, Last) -> Last;
dec(N, B, _) -> dec(N - 1, B, binary_to_term(B)).
enc(N, T) -> enc(N, T, 0).
enc(0, _, Acc) -> Acc;
enc(N, T, Acc) -> enc(N - 1, T, Acc + byte_size(term_to_binary(T))).
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

/// (decode ns, encode ns) per corpus name, measured inside one erl.
fn beam(corpus: &[(&str, Vec<u8>)]) -> Vec<(String, f64, f64)> {
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
            .find(|(n, _, _)| n == name)
            .map(|(_, d, e)| (*d, *e))
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
}
