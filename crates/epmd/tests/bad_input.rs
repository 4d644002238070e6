//! Garbage, slow senders and refused requests close one connection; the
//! daemon keeps answering.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{block_on, node_info, Daemon};
use erlkube_epmd::server::Config;
use erlkube_epmd::{Client, ClientError};
use erlkube_proto::epmd::Request;
use erlkube_testkit::wait_until;

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Sends `bytes`, then reads until the daemon closes; returns what it sent.
fn send_and_read_all(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = connect(port);
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    // A reset instead of a FIN is also "closed".
    let _ = s.read_to_end(&mut out);
    out
}

fn still_answers(d: &Daemon) {
    let names = block_on(Client::new("127.0.0.1", d.port).names()).expect("daemon still answers");
    assert_eq!(names.epmd_port, d.port as u32);
}

fn quick_config() -> Config {
    Config {
        packet_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(200),
        ..Config::default()
    }
}

#[test]
fn truncated_request_then_close() {
    let d = Daemon::start();
    // Length says 16, only 5 bytes of body follow, then the client closes.
    let mut s = connect(d.port);
    s.write_all(&[0, 16, 120, 0, 1, 77, 0]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(out.is_empty());
    assert!(wait_until(Duration::from_secs(10), || d
        .metrics
        .errors("partial_request")
        == 1));
    still_answers(&d);
}

#[test]
fn truncated_fields_inside_a_complete_frame() {
    let d = Daemon::start();
    // ALIVE2 whose name length (9) runs past the frame.
    let out = send_and_read_all(
        d.port,
        &[0, 14, 120, 0, 1, 77, 0, 0, 6, 0, 5, 0, 9, b'a', 0, 0],
    );
    assert!(out.is_empty());
    assert_eq!(d.metrics.errors("truncated"), 1);
    still_answers(&d);
}

#[test]
fn oversized_request_is_refused_at_the_length_prefix() {
    let d = Daemon::start();
    let out = send_and_read_all(d.port, &[0xff, 0xff, b'n']);
    assert!(out.is_empty());
    assert_eq!(d.metrics.errors("too_large"), 1);
    // A body just over the cap: refused as well, without reading it all.
    let max = erlkube_proto::epmd::MAX_REQUEST_LEN + 1;
    let mut req = (max as u16).to_be_bytes().to_vec();
    req.push(b'z');
    let out = send_and_read_all(d.port, &req);
    assert!(out.is_empty());
    assert_eq!(d.metrics.errors("too_large"), 2);
    still_answers(&d);
}

#[test]
fn unknown_and_empty_requests() {
    let d = Daemon::start();
    assert!(send_and_read_all(d.port, &[0, 1, b'?']).is_empty());
    assert_eq!(d.metrics.errors("unknown_request"), 1);
    assert!(send_and_read_all(d.port, &[0, 0]).is_empty());
    assert_eq!(d.metrics.errors("empty_request"), 1);
    assert!(send_and_read_all(d.port, &[0, 3, b'z', 0xff, 0xfe]).is_empty());
    assert_eq!(d.metrics.errors("invalid_name"), 1);
    // A whole request followed by extra bytes.
    assert!(send_and_read_all(d.port, &[0, 1, b'n', 0, 1, b'n']).is_empty());
    assert_eq!(d.metrics.errors("trailing_bytes"), 1);
    still_answers(&d);
}

#[test]
fn slow_sender_is_cut_off() {
    let d = Daemon::start_with(quick_config());
    // Sends the first byte of a length prefix, then nothing.
    let mut s = connect(d.port);
    s.write_all(&[0]).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(out.is_empty());
    assert_eq!(
        d.metrics.errors("idle_timeout") + d.metrics.errors("packet_timeout"),
        1
    );

    // Trickles bytes faster than the idle timeout but never finishes within
    // the packet timeout.
    let mut s = connect(d.port);
    s.write_all(&[0, 200, b'z']).unwrap();
    let mut closed = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        if s.write_all(b"a").is_err() {
            closed = true;
            break;
        }
    }
    assert!(closed || d.metrics.errors("packet_timeout") >= 1);
    assert!(wait_until(Duration::from_secs(10), || d
        .metrics
        .errors("packet_timeout")
        >= 1));
    still_answers(&d);
}

#[test]
fn duplicate_names_are_refused_and_the_first_stays() {
    let d = Daemon::start();
    let c = Client::new("127.0.0.1", d.port);
    block_on(async {
        let first = c.register(node_info("dup", 1111)).await.unwrap();
        assert!(matches!(
            c.register(node_info("dup", 2222)).await,
            Err(ClientError::Refused(1))
        ));
        assert_eq!(c.port_please("dup").await.unwrap().unwrap().port, 1111);
        drop(first);
    });
    assert_eq!(d.metrics.errors("register_refused"), 1);
    still_answers(&d);
}

#[test]
fn old_version_node_gets_alive2_resp_with_small_creation() {
    let d = Daemon::start();
    let mut info = node_info("old", 1);
    info.highest_version = 5;
    let mut s = connect(d.port);
    s.write_all(&Request::Alive2(info).to_bytes()).unwrap();
    let mut resp = [0u8; 4];
    s.read_exact(&mut resp).unwrap();
    assert_eq!(resp[0], erlkube_proto::epmd::ALIVE2_RESP);
    assert_eq!(resp[1], 0);
    let creation = u16::from_be_bytes([resp[2], resp[3]]);
    assert!((1..=3).contains(&creation), "{creation}");
}

#[test]
fn data_on_a_registration_connection_ends_it() {
    let d = Daemon::start();
    let mut s = connect(d.port);
    s.write_all(&Request::Alive2(node_info("chatty", 1)).to_bytes())
        .unwrap();
    let mut resp = [0u8; 6];
    s.read_exact(&mut resp).unwrap();
    assert_eq!(resp[..2], [erlkube_proto::epmd::ALIVE2_X_RESP, 0]);
    s.write_all(b"x").unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(wait_until(Duration::from_secs(10), || {
        block_on(Client::new("127.0.0.1", d.port).names())
            .unwrap()
            .nodes
            .is_empty()
    }));
}

#[test]
fn stop_is_refused_without_relaxed_checking() {
    let d = Daemon::start();
    let c = Client::new("127.0.0.1", d.port);
    block_on(async {
        let _r = c.register(node_info("keep", 1)).await.unwrap();
        assert!(matches!(c.stop("keep").await, Err(ClientError::NoAnswer)));
        assert!(c.port_please("keep").await.unwrap().is_some());
    });
    assert_eq!(d.metrics.errors("stop_refused"), 1);
}

#[test]
fn more_than_1024_connections_are_served() {
    let _ = erlkube_epmd::sys::raise_nofile_limit();
    let d = Daemon::start();
    // Hold 1500 idle connections open, then ask for NAMES on one more.
    let held: Vec<TcpStream> = (0..1500).map(|_| connect(d.port)).collect();
    assert!(wait_until(Duration::from_secs(30), || {
        d.metrics.open_connections() >= 1500
    }));
    still_answers(&d);
    drop(held);
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    let d = Daemon::start();
    let c = Client::new("127.0.0.1", d.port);
    let _r = block_on(c.register(node_info("m", 1))).unwrap();
    block_on(c.port_please("m")).unwrap();
    let _ = send_and_read_all(d.port, &[0, 1, b'?']);
    let metrics = d.metrics.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            port_tx.send(l.local_addr().unwrap().port()).unwrap();
            erlkube_epmd::metrics::serve(l, metrics, async {
                let _ = stop_rx.await;
            })
            .await
        })
    });
    let mport = port_rx.recv().unwrap();
    let get = |path: &str| {
        let mut s = connect(mport);
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let body = get("/metrics");
    assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
    assert!(
        body.contains("\nerlkube_epmd_registered_nodes 1\n"),
        "{body}"
    );
    assert!(
        body.contains("erlkube_epmd_requests_total{type=\"port_please2\"} 1\n"),
        "{body}"
    );
    assert!(
        body.contains("erlkube_epmd_errors_total{reason=\"unknown_request\"} 1\n"),
        "{body}"
    );
    assert!(get("/other").starts_with("HTTP/1.1 404"));
    stop_tx.send(()).unwrap();
    server.join().unwrap();
}
