//! The daemon answers a complete request on accept, without a task; what
//! is not complete then (a request still arriving, a registration) goes
//! to a task. Both paths give the same answers and keep the counters
//! right. (The task that finishes an answer the socket did not take whole
//! is not reached here, as loopback's send buffer takes an 88 KB NAMES
//! answer in one write: a unit test in `server.rs` shrinks the buffers.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{block_on, node_info, Daemon};
use erlkube_epmd::Client;
use erlkube_proto::epmd::{decode_port2_response, parse_names, Request};
use erlkube_testkit::wait_until;

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn read_all(mut s: TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn many_requests_on_new_connections_are_answered_and_counted() {
    let d = Daemon::start();
    let c = Client::new("127.0.0.1", d.port);
    let _r = block_on(c.register(node_info("solo", 4370))).unwrap();
    let req = Request::PortPlease2 {
        name: "solo".into(),
    }
    .to_bytes();
    for _ in 0..500 {
        let mut s = connect(d.port);
        s.write_all(&req).unwrap();
        let got = read_all(s);
        let (info, used) = decode_port2_response(&got).unwrap().unwrap();
        assert_eq!(used, got.len());
        assert_eq!(info.unwrap().port, 4370);
    }
    assert_eq!(d.metrics.requests("port_please2"), 500);
    // Every answered connection is counted closed: only the registration
    // stays open.
    assert!(wait_until(Duration::from_secs(10), || d
        .metrics
        .open_connections()
        == 1));
}

#[test]
fn a_request_arriving_after_the_accept_is_finished_by_a_task() {
    let d = Daemon::start();
    let c = Client::new("127.0.0.1", d.port);
    let _r = block_on(c.register(node_info("late", 4371))).unwrap();
    let req = Request::PortPlease2 {
        name: "late".into(),
    }
    .to_bytes();
    let mut s = connect(d.port);
    s.write_all(&req[..3]).unwrap();
    // Accepted (and its first read done) before the rest is sent.
    assert!(wait_until(Duration::from_secs(10), || d
        .metrics
        .open_connections()
        == 2));
    s.write_all(&req[3..]).unwrap();
    let got = read_all(s);
    let (info, _) = decode_port2_response(&got).unwrap().unwrap();
    assert_eq!(info.unwrap().port, 4371);
    assert!(wait_until(Duration::from_secs(10), || d
        .metrics
        .open_connections()
        == 1));
}

#[test]
fn a_large_names_answer_arrives_whole() {
    let _ = erlkube_epmd::sys::raise_nofile_limit();
    let d = Daemon::start();
    let c = Client::new("127.0.0.1", d.port);
    // 400 nodes with 200-character names: a NAMES answer of ~88 KB.
    let regs: Vec<_> = (0..400)
        .map(|i| {
            let name = format!("{i:0>200}");
            block_on(c.register(node_info(&name, 20000 + i))).unwrap()
        })
        .collect();
    let mut s = connect(d.port);
    s.write_all(&Request::Names.to_bytes()).unwrap();
    let got = read_all(s);
    assert!(got.len() > 64 * 1024, "answer of {} bytes", got.len());
    let (port, names) = parse_names(&got).unwrap();
    assert_eq!(port, d.port as u32);
    assert_eq!(names.len(), 400);
    drop(regs);
    assert!(wait_until(Duration::from_secs(10), || d
        .metrics
        .open_connections()
        == 0));
}
