//! Peak memory of receiving one large message from a real `erl`: a
//! 100 MB binary sent to a Rust process, measured as the growth of this
//! process's peak RSS (`VmHWM` in `/proc/self/status`) over its RSS
//! before the message. The only test in its binary, so nothing else
//! moves the figure. Prints the ratio; fails above 2× the binary's size.

use std::time::Duration;

use erlkube_etf::Term;
use erlkube_node::{Cookie, Node, NodeConfig};
use erlkube_testkit::{unique_name, ErlNode, OtpEpmd};

/// A field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> usize {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = s
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field}"));
    let kb: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number of kB");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiving_a_100_mb_binary_peaks_under_twice_its_size() {
    const SIZE: usize = 100_000_000;
    let epmd = OtpEpmd::start().unwrap();
    let mut c = NodeConfig::new(
        format!("{}@127.0.0.1", unique_name("rust")),
        Cookie::new("c"),
    );
    c.epmd_port = epmd.port();
    c.setup_timeout = Duration::from_secs(5);
    let rust = Node::start(c).await.expect("rust node starts");
    let mut sink = rust.spawn_registered("sink").unwrap();
    let port = epmd.port();
    let beam = tokio::task::spawn_blocking(move || {
        ErlNode::builder(&unique_name("beam"))
            .cookie("c")
            .epmd_port(port)
            .start()
            .expect("erl must be installed")
    })
    .await
    .unwrap();
    let beam = std::sync::Arc::new(beam);

    // Connect and exchange a small message first, so the connection's
    // buffers exist before the measurement starts.
    let name = rust.name().to_string();
    let b = beam.clone();
    let n = name.clone();
    tokio::task::spawn_blocking(move || b.eval(&format!("{{sink, '{n}'}} ! warm, ok")).unwrap())
        .await
        .unwrap();
    assert_eq!(
        sink.recv_timeout(Duration::from_secs(10)).await,
        Some(Term::atom("warm"))
    );

    let before = status_bytes("VmRSS:");
    let b = beam.clone();
    let send = tokio::task::spawn_blocking(move || {
        b.eval(&format!(
            "{{sink, '{name}'}} ! binary:copy(<<7>>, {SIZE}), ok"
        ))
        .unwrap()
    });
    let got = sink
        .recv_timeout(Duration::from_secs(120))
        .await
        .expect("the binary arrives");
    send.await.unwrap();
    let peak = status_bytes("VmHWM:");
    match &got {
        Term::Binary(v) => assert!(v.len() == SIZE && v.iter().all(|&x| x == 7)),
        other => panic!("not the binary: {:?}", other.as_atom()),
    }
    let grown = peak.saturating_sub(before);
    let ratio = grown as f64 / SIZE as f64;
    eprintln!(
        "peak memory: RSS before {before} B, VmHWM after {peak} B, growth {grown} B = {ratio:.2}x of {SIZE} B"
    );
    assert!(ratio <= 2.0, "peak {ratio:.2}x the message's size");
}
