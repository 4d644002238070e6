//! Where owned decoding spends its time, for us and for eetf (not a
//! benchmark with an anchor ratio to quote; `cargo bench` is): for each
//! corpus item of the codec bench, the heap allocations and bytes one
//! decode makes (a counting global allocator), and decode and drop timed
//! separately (best of 5 rounds of a calibrated loop; each round decodes a
//! batch of terms, then drops the batch, so the two are apart).
//!
//!     cargo run --release -p erlkube-etf --example decode_costs
//!
//! `ETF_BENCH_MS` sets the time per round (default 200 ms).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use erlkube_etf::{decode, encode};

/// `System` with a count of allocations (and reallocations) and bytes.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to `System` unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(l.size() as u64, Relaxed);
        // SAFETY: the caller's promises are `System`'s.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(l.size() as u64, Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(n as u64, Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<T>(f: impl FnOnce() -> T) -> (T, u64, u64) {
    let (a, b) = (ALLOCS.load(Relaxed), BYTES.load(Relaxed));
    let t = f();
    (t, ALLOCS.load(Relaxed) - a, BYTES.load(Relaxed) - b)
}

/// (decode ns, drop ns) per term: batches of `batch` decodes, then the
/// batch dropped, each half timed; the best of 5 rounds.
fn split<T>(batch: usize, mut dec: impl FnMut() -> T) -> (f64, f64) {
    let ms = std::env::var("ETF_BENCH_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let min = Duration::from_millis(ms);
    let mut rounds = 1usize;
    let mut best = (f64::INFINITY, f64::INFINITY);
    let mut held: Vec<T> = Vec::with_capacity(batch);
    let mut k = 0;
    while k < 5 {
        let (mut td, mut tf) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..batch {
                held.push(black_box(dec()));
            }
            let m = Instant::now();
            held.clear();
            let e = Instant::now();
            td += m - t;
            tf += e - m;
        }
        if td + tf < min {
            rounds *= 2;
            continue;
        }
        let n = (rounds * batch) as f64;
        best.0 = best.0.min(td.as_nanos() as f64 / n);
        best.1 = best.1.min(tf.as_nanos() as f64 / n);
        k += 1;
    }
    best
}

#[path = "../benches/common/corpus.rs"]
mod corpus;

fn main() {
    println!(
        "{:<13} {:>8} | {:>6} {:>9} {:>9} {:>9} | {:>6} {:>9} {:>9} {:>9} | {:>6}",
        "corpus",
        "bytes",
        "allocs",
        "alloc B",
        "dec ns",
        "drop ns",
        "e allocs",
        "e alloc B",
        "e dec ns",
        "e drop ns",
        "e/ours"
    );
    for (name, term) in corpus::corpus() {
        let bytes = encode(&term);
        // steady state: this thread's atom table already holds the atoms
        drop(decode(&bytes).expect("decode"));
        let (t, n, b) = counted(|| decode(&bytes).expect("decode"));
        assert!(t == term, "decode round trip of {name}");
        drop(t);
        let (e, en, eb) = counted(|| eetf::Term::decode(&bytes[..]).expect("eetf decode"));
        drop(e);
        // batches small enough to stay in cache for small terms, one term
        // at a time for the large ones (as the bench does)
        let batch = if bytes.len() < 10_000 { 64 } else { 1 };
        let (d, f) = split(batch, || decode(black_box(&bytes)).expect("decode"));
        let (ed, ef) = split(batch, || {
            eetf::Term::decode(black_box(&bytes[..])).expect("eetf decode")
        });
        println!(
            "{:<13} {:>8} | {:>6} {:>9} {:>9.0} {:>9.0} | {:>8} {:>9} {:>9.0} {:>9.0} | {:>6.2}",
            name,
            bytes.len(),
            n,
            b,
            d,
            f,
            en,
            eb,
            ed,
            ef,
            (ed + ef) / (d + f)
        );
    }
}
