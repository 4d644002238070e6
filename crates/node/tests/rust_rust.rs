//! Two Rust nodes in one process, on loopback with fixed ports (no epmd).

mod events;

use std::time::Duration;

use erlkube_etf::Term;
use erlkube_node::{Cookie, Node, NodeConfig, NodeEvent};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(name: &str, cookie: &str, port: u16) -> NodeConfig {
    let mut c = NodeConfig::new(
        format!("{name}_{}@127.0.0.1", std::process::id()),
        Cookie::new(cookie),
    )
    .fixed_port(port);
    c.listen_ip = "127.0.0.1".parse().unwrap();
    c.setup_timeout = Duration::from_secs(5);
    c
}

async fn pair(ca: &str, cb: &str) -> (Node, Node) {
    let (pa, pb) = (free_port(), free_port());
    let mut a = config("a", ca, pa);
    let mut b = config("b", cb, pb);
    a.known_ports.insert(b.name.clone(), pb);
    b.known_ports.insert(a.name.clone(), pa);
    (Node::start(a).await.unwrap(), Node::start(b).await.unwrap())
}

#[tokio::test]
async fn ping_and_messages_both_ways() {
    let (a, b) = pair("c", "c").await;
    let mut events = b.subscribe();
    a.ping(b.name()).await.expect("pong");
    assert_eq!(a.nodes(), vec![b.name().to_owned()]);
    assert!(
        matches!(events.recv().await.unwrap(), NodeEvent::NodeUp { node, hidden: false } if node == a.name())
    );

    let mut pa = a.spawn_process();
    let mut pb = b.spawn_registered("inbox").unwrap();
    let small = Term::tuple(vec![
        Term::atom("hello"),
        Term::Integer(42),
        Term::binary(b"x".to_vec()),
    ]);
    a.send_named(pa.pid(), b.name(), "inbox", small.clone())
        .await
        .unwrap();
    assert_eq!(pb.recv().await.unwrap(), small);

    // A 10 MB binary crosses in fragments and comes back equal.
    let big = Term::binary((0..10_000_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    b.send(pa.pid(), big.clone()).await.unwrap();
    assert_eq!(pa.recv().await.unwrap(), big);

    // Aliases.
    let alias = pa.alias().unwrap();
    b.send_alias(pb.pid(), &alias, Term::atom("via_alias"))
        .await
        .unwrap();
    assert_eq!(pa.recv().await.unwrap(), Term::atom("via_alias"));
}

#[tokio::test]
async fn wrong_cookie_is_refused() {
    let (a, b) = pair("one", "two").await;
    let err = a.ping(b.name()).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("cookie") || text.contains("digest"), "{text}");
    assert!(a.nodes().is_empty() && b.nodes().is_empty());
    // b is still up and answers a node with the right cookie.
    let mut c = config("c", "two", free_port());
    c.known_ports.insert(b.name().to_owned(), b.port());
    let c = Node::start(c).await.unwrap();
    c.ping(b.name()).await.expect("pong with the right cookie");
}

#[tokio::test]
async fn hidden_node_is_not_in_nodes() {
    let (pa, pb) = (free_port(), free_port());
    let mut a = config("ha", "c", pa);
    a.hidden = true;
    let b = config("hb", "c", pb);
    a.known_ports.insert(b.name.clone(), pb);
    let (a, b) = (Node::start(a).await.unwrap(), Node::start(b).await.unwrap());
    a.ping(b.name()).await.unwrap();
    assert!(b.nodes().is_empty());
    assert_eq!(b.connected_nodes(), vec![a.name().to_owned()]);
}

#[tokio::test]
async fn shutdown_gives_nodedown() {
    let (a, b) = pair("c", "c").await;
    a.ping(b.name()).await.unwrap();
    let mut events = a.subscribe();
    b.shutdown();
    events::nodedown(&mut events, b.name(), Duration::from_secs(10)).await;
}

#[tokio::test]
async fn malformed_frame_closes_only_that_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, b) = pair("c", "c").await;
    // Garbage instead of a handshake: the node closes that socket...
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", b.port()))
        .await
        .unwrap();
    s.write_all(b"\x00\x05GET /").await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    // ...and keeps serving others.
    a.ping(b.name()).await.unwrap();
}

/// A peer that completes the handshake (driven by the sans-IO acceptor)
/// and then never reads: senders must end up waiting instead of queueing
/// without bound.
#[tokio::test]
async fn slow_peer_applies_backpressure() {
    use erlkube_proto::dist::handshake::{Acceptor, HandshakeConfig, Side, Status};
    use erlkube_proto::dist::HandshakeEvent;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer_port = listener.local_addr().unwrap().port();
    let peer_name = format!("stuck_{}@127.0.0.1", std::process::id());
    let pn = peer_name.clone();
    let (established_tx, established_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let now = std::time::Instant::now();
        let mut acc = Acceptor::new(HandshakeConfig::new(pn, Cookie::new("c"), 9), 77, now);
        let mut buf = [0u8; 1024];
        loop {
            while let Some(t) = acc.poll_transmit() {
                s.write_all(&t).await.unwrap();
            }
            match acc.poll_event() {
                Some(HandshakeEvent::NameReceived(_)) => acc.set_status(Status::Ok, now).unwrap(),
                Some(HandshakeEvent::Established(_)) => break,
                None => {
                    let n = s.read(&mut buf).await.unwrap();
                    acc.handle_input(&buf[..n], now).unwrap();
                }
            }
        }
        let _ = established_tx.send(());
        // Hold the socket open, never read again.
        std::future::pending::<()>().await;
        drop(s);
    });

    let mut c = config("sender", "c", free_port());
    c.outbound_queue = 4;
    c.write_high_water = 64 * 1024;
    c.known_ports.insert(peer_name.clone(), peer_port);
    let node = Node::start(c).await.unwrap();
    node.connect(&peer_name).await.unwrap();
    established_rx.await.unwrap();

    let to = erlkube_etf::Pid {
        node: erlkube_etf::Atom::new(&peer_name),
        id: 1,
        serial: 0,
        creation: 9,
    };
    let chunk = Term::binary(vec![7u8; 1 << 20]);
    let mut sent = 0usize;
    // 1 GiB if nothing pushed back; the queue, the high-water mark and the
    // kernel's socket buffers hold a few MiB at most.
    for _ in 0..1024 {
        match tokio::time::timeout(Duration::from_secs(2), node.send(&to, chunk.clone())).await {
            Ok(r) => {
                r.unwrap();
                sent += 1;
            }
            Err(_) => break,
        }
    }
    // Here about 8 MiB: 4 queued, one being written, the rest in socket buffers.
    assert!(sent < 64, "sender queued {sent} MiB before waiting");
    // The node itself stays responsive.
    assert_eq!(node.connected_nodes(), vec![peer_name]);
}

/// Two senders flood one mailbox at once (the shared outbound buffer,
/// direct writes and batched writes all take part); every message
/// arrives, and each sender's messages arrive in the order sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_keep_per_sender_order() {
    const EACH: i64 = 20_000;
    let (a, b) = pair("c", "c").await;
    a.ping(b.name()).await.expect("pong");
    let mut inbox = b.spawn_registered("inbox").unwrap();
    let mut tasks = Vec::new();
    for s in 0..2i64 {
        let a = a.clone();
        let b_name = b.name().to_owned();
        tasks.push(tokio::spawn(async move {
            let me = a.spawn_process();
            for i in 0..EACH {
                let m = Term::tuple(vec![Term::Integer(s), Term::Integer(i)]);
                a.send_named(me.pid(), &b_name, "inbox", m).await.unwrap();
                if i % 5000 == 0 {
                    // A fragmented message in the middle of the stream.
                    let big = Term::tuple(vec![
                        Term::Integer(s),
                        Term::Integer(-1),
                        Term::binary(vec![s as u8; 200_000]),
                    ]);
                    a.send_named(me.pid(), &b_name, "inbox", big).await.unwrap();
                }
            }
        }));
    }
    let mut next = [0i64; 2];
    let mut bigs = [0usize; 2];
    while next != [EACH, EACH] {
        let m = inbox.recv().await.unwrap();
        match m.as_tuple() {
            Some([Term::Integer(s), Term::Integer(-1), Term::Binary(bin)]) => {
                assert!(bin.iter().all(|&x| x as i64 == *s) && bin.len() == 200_000);
                bigs[*s as usize] += 1;
            }
            Some([Term::Integer(s), Term::Integer(i)]) => {
                assert_eq!(*i, next[*s as usize], "sender {s} out of order");
                next[*s as usize] += 1;
            }
            _ => panic!("unexpected {m}"),
        }
    }
    assert_eq!(bigs, [4, 4]);
    for t in tasks {
        t.await.unwrap();
    }
}

/// Both nodes dial each other at the same moment, many times over: every
/// round ends with one connection each way up and no nodedown on either
/// side (a dial racing an inbound handshake from the same node waits for
/// it instead of replacing a connection through "alive").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_connects_end_in_one_connection_without_nodedown() {
    let (a, b) = pair("c", "c").await;
    for round in 0..100 {
        let mut ea = a.subscribe();
        let mut eb = b.subscribe();
        let mut tasks = Vec::new();
        for i in 0..4 {
            let (x, y) = if i % 2 == 0 {
                (a.clone(), b.name().to_owned())
            } else {
                (b.clone(), a.name().to_owned())
            };
            tasks.push(tokio::spawn(async move { x.connect(&y).await }));
        }
        for t in tasks {
            t.await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        // Let any replaced connection's teardown surface.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(a.nodes(), vec![b.name().to_owned()], "round {round}");
        assert_eq!(b.nodes(), vec![a.name().to_owned()], "round {round}");
        for (who, ev) in [("a", &mut ea), ("b", &mut eb)] {
            let mut ups = 0;
            while let Ok(e) = ev.try_recv() {
                match e {
                    NodeEvent::NodeUp { .. } => ups += 1,
                    NodeEvent::NodeDown { node, reason } => {
                        panic!("round {round}: {who} saw nodedown of {node}: {reason}")
                    }
                }
            }
            assert_eq!(ups, 1, "round {round}: {who} saw {ups} nodeups");
        }
        // Next round from scratch: both sides see the nodedown.
        let (mut ea, mut eb) = (a.subscribe(), b.subscribe());
        assert!(a.disconnect(b.name()));
        for ev in [&mut ea, &mut eb] {
            loop {
                if let NodeEvent::NodeDown { .. } = ev.recv().await.unwrap() {
                    break;
                }
            }
        }
    }
}

/// A new incarnation of a connected node (same name, "alive" answered
/// "true") replaces the old connection: the node stays in `nodes()`, a
/// nodeup is reported for the new connection and no nodedown for the
/// replaced one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_connection_gives_no_nodedown() {
    use erlkube_proto::dist::handshake::HandshakeConfig;

    let (pa, pb) = (free_port(), free_port());
    let mut ca = config("a", "c", pa);
    let mut cb = config("b", "c", pb);
    ca.known_ports.insert(cb.name.clone(), pb);
    cb.known_ports.insert(ca.name.clone(), pa);
    let b_name = cb.name.clone();
    let a = Node::start(ca).await.unwrap();
    let b = Node::start(cb).await.unwrap();
    let mut events = a.subscribe();
    b.connect(a.name()).await.unwrap();
    let mut eb = b.subscribe();
    // a's nodeup of the first connection, which may come after b's
    // `connect` returned: taken here so that it is not counted below.
    next_nodeup(&mut events, &b_name).await;

    // b's "new incarnation", driven on a raw socket by the sans-IO core.
    let cfg = HandshakeConfig::new(b_name.clone(), Cookie::new("c"), 7);
    let (s, _) = raw_handshake(&a, cfg).await;
    // a reports the new connection's nodeup (waited for: under load it
    // can take a while), and no nodedown before it.
    next_nodeup(&mut events, &b_name).await;
    // b's old connection is closed by a; b itself reports that nodedown.
    loop {
        if let NodeEvent::NodeDown { .. } = eb.recv().await.unwrap() {
            break;
        }
    }
    // The replaced connection's task on a ends once b's end is closed; a
    // nodedown from it would come now. Watched for 200 ms (an absence
    // has no event to wait for).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.nodes(), vec![b_name.clone()]);
    if let Ok(e) = events.try_recv() {
        panic!("a reported {e:?} after the new connection's nodeup");
    }
    drop(s);
}

/// Waits (at most 20 s) for the next event, which must be a nodeup of
/// `peer`: a nodedown before it fails the test.
async fn next_nodeup(events: &mut tokio::sync::broadcast::Receiver<NodeEvent>, peer: &str) {
    let e = tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .unwrap_or_else(|_| panic!("no nodeup of {peer} within 20 s"))
        .unwrap();
    match e {
        NodeEvent::NodeUp { node, .. } if node == peer => {}
        other => panic!("expected the nodeup of {peer}, got {other:?}"),
    }
}

/// Completes a handshake with `node` on a raw socket, driven by the
/// sans-IO initiator with `cfg`.
async fn raw_handshake(
    node: &Node,
    cfg: erlkube_proto::dist::handshake::HandshakeConfig,
) -> (tokio::net::TcpStream, erlkube_proto::dist::Established) {
    use erlkube_proto::dist::handshake::{Initiator, Side};
    use erlkube_proto::dist::HandshakeEvent;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", node.port()))
        .await
        .unwrap();
    let now = std::time::Instant::now();
    let mut hs = Initiator::new(cfg, node.name(), 4321, now);
    let mut buf = [0u8; 1024];
    let est = loop {
        while let Some(t) = hs.poll_transmit() {
            s.write_all(&t).await.unwrap();
        }
        if let Some(HandshakeEvent::Established(e)) = hs.poll_event() {
            break e;
        }
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed during the handshake");
        hs.handle_input(&buf[..n], now).unwrap();
    };
    (s, est)
}

/// A raw hidden peer that completed the handshake against `node`; returns
/// the socket, an encoder for the negotiated framing, and its name.
async fn raw_peer(
    node: &Node,
    tag: &str,
) -> (
    tokio::net::TcpStream,
    erlkube_proto::dist::frame::OutboundEncoder,
    String,
) {
    use erlkube_proto::dist::handshake::HandshakeConfig;
    let name = format!("raw{tag}_{}@127.0.0.1", std::process::id());
    let cfg = HandshakeConfig::new(name.clone(), Cookie::new("c"), 5).hidden();
    let (s, est) = raw_handshake(node, cfg).await;
    (
        s,
        erlkube_proto::dist::frame::OutboundEncoder::new(est.flags),
        name,
    )
}

/// True when the peer closes `s` within a few seconds (reads until EOF).
async fn closed_by_peer(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let wait = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {} // ticks
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or(false)
}

/// Payloads are checked by the connection and decoded by the receiving
/// process: a payload that fails the check closes the connection at once;
/// one that passes it but does not decode (a map with a repeated key) is
/// dropped when the process takes it, and closes its connection. Messages
/// before it arrive, other connections stay up.
#[tokio::test]
async fn bad_payloads_close_only_their_connection() {
    use erlkube_proto::dist::control::{ControlMessage, DistMessage};
    use tokio::io::AsyncWriteExt;
    let (a, b) = pair("c", "c").await;
    let mut sink = b.spawn_registered("sink").unwrap();
    let reg_send = |from: &str| {
        DistMessage {
            control: ControlMessage::RegSend {
                from: erlkube_etf::Pid {
                    node: erlkube_etf::Atom::new(from),
                    id: 1,
                    serial: 0,
                    creation: 5,
                },
                to_name: erlkube_etf::Atom::new("sink"),
            },
            payload: None,
        }
        .encode()
        .0
    };

    // A good message, then {1 => 1, 1 => 2}.
    let (mut s, mut enc, name) = raw_peer(&b, "dup").await;
    let mut out = Vec::new();
    let good = erlkube_etf::encode(&Term::atom("first"));
    enc.encode(&reg_send(&name), Some(&good), &mut out);
    let dup = [131, 116, 0, 0, 0, 2, 97, 1, 97, 1, 97, 1, 97, 2];
    enc.encode(&reg_send(&name), Some(&dup), &mut out);
    s.write_all(&out).await.unwrap();
    let first = sink.recv_timeout(Duration::from_secs(5)).await;
    assert_eq!(first, Some(Term::atom("first")));
    assert_eq!(sink.recv_timeout(Duration::from_millis(300)).await, None);
    assert!(closed_by_peer(&mut s).await, "connection not closed");

    // A payload cut short: refused by the connection's check.
    let (mut s, mut enc, name) = raw_peer(&b, "cut").await;
    let mut out = Vec::new();
    enc.encode(&reg_send(&name), Some(&[131, 104, 2, 97]), &mut out);
    s.write_all(&out).await.unwrap();
    assert!(closed_by_peer(&mut s).await, "connection not closed");
    assert_eq!(sink.try_recv(), None);

    // The node still serves others.
    a.ping(b.name()).await.unwrap();
    let me = a.spawn_process();
    a.send_named(me.pid(), b.name(), "sink", Term::atom("after"))
        .await
        .unwrap();
    assert_eq!(
        sink.recv_timeout(Duration::from_secs(5)).await,
        Some(Term::atom("after"))
    );
}

#[tokio::test]
async fn known_addr_dials_a_peer_whose_host_does_not_resolve() {
    // B's name names a host in the reserved `.invalid` domain: only the
    // known address can reach it, with the usual handshake under B's name.
    let port = free_port();
    let mut b = NodeConfig::new(
        format!("b_{}@pod-0.app.invalid", std::process::id()),
        Cookie::new("c"),
    )
    .fixed_port(port);
    b.listen_ip = "127.0.0.1".parse().unwrap();
    let b = Node::start(b).await.unwrap();
    let mut a = config("via", "c", free_port());
    a.hidden = true;
    a.epmd_port = free_port(); // never 4369, though the lookup fails first
    let a = Node::start(a).await.unwrap();
    match a.ping(b.name()).await {
        Err(erlkube_node::PingError::Connect(_)) => {}
        other => panic!("without the address the dial must fail, got {other:?}"),
    }
    let mut a_cfg = config("via2", "c", free_port());
    a_cfg.hidden = true;
    a_cfg
        .known_addrs
        .insert(b.name().to_owned(), ([127, 0, 0, 1], port).into());
    let a2 = Node::start(a_cfg).await.unwrap();
    a2.ping(b.name())
        .await
        .expect("pong through the known address");
    assert_eq!(b.nodes(), Vec::<String>::new());
    assert_eq!(b.connected_nodes(), vec![a2.name().to_owned()]);
    drop(a);
}

/// A hostile peer starts fragmented messages and never finishes them,
/// each first fragment well under the message limit: the connection's
/// budget for unfinished messages (`limits.max_partial_total`) refuses it
/// with `PartialBudgetExceeded` and closes that connection; the node
/// keeps serving others.
#[tokio::test]
async fn unfinished_fragments_past_the_budget_close_the_connection() {
    use tokio::io::AsyncWriteExt;
    let (pa, pb) = (free_port(), free_port());
    let mut a = config("a", "c", pa);
    let mut b = config("b", "c", pb);
    a.known_ports.insert(b.name.clone(), pb);
    b.known_ports.insert(a.name.clone(), pa);
    b.limits.max_partial_total = 1 << 20;
    let (a, b) = (Node::start(a).await.unwrap(), Node::start(b).await.unwrap());

    let mut events = b.subscribe();
    let (mut s, _enc, name) = raw_peer(&b, "frag").await;
    let chunk = vec![0u8; 256 << 10];
    // Four first fragments (of messages announced as 1000 fragments) fill
    // the 1 MiB budget exactly; each is accepted.
    for seq in 1..=4u64 {
        s.write_all(&first_fragment(seq, 1000, &chunk))
            .await
            .unwrap();
    }
    // The fifth would hold 1.25 MiB: the connection is closed.
    s.write_all(&first_fragment(5, 1000, &chunk)).await.unwrap();
    assert!(closed_by_peer(&mut s).await, "connection not closed");
    let reason = events::nodedown(&mut events, &name, Duration::from_secs(5)).await;
    assert!(
        reason.to_string().contains("over the connection's budget"),
        "{reason}"
    );

    // The node is up and serves others.
    a.ping(b.name()).await.unwrap();
}

/// A framed first fragment (`131 'E' Seq Frag`, an empty atom cache
/// header) carrying `data`.
fn first_fragment(seq: u64, frags: u64, data: &[u8]) -> Vec<u8> {
    let mut body = vec![131, b'E'];
    body.extend_from_slice(&seq.to_be_bytes());
    body.extend_from_slice(&frags.to_be_bytes());
    body.push(0);
    body.extend_from_slice(data);
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// `Node::stop` returns only once what was sent went out: a sender whose
/// runtime is dropped right after it (a CLI command that exits) loses
/// nothing. `shutdown` alone would leave the queued frames to connection
/// tasks that the dropped runtime cancels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_writes_what_was_sent_before_the_runtime_goes() {
    const N: usize = 500;
    let (pa, pb) = (free_port(), free_port());
    let mut ca = config("stop_a", "c", pa);
    let mut cb = config("stop_b", "c", pb);
    ca.known_ports.insert(cb.name.clone(), pb);
    cb.known_ports.insert(ca.name.clone(), pa);
    let b = Node::start(cb).await.unwrap();
    let mut inbox = b.spawn_registered("inbox").unwrap();
    let b_name = b.name().to_owned();
    let sender = std::thread::spawn(move || {
        // One thread: once `block_on` returns, no task of A's runs again.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = Node::start(ca).await.unwrap();
            a.connect(&b_name).await.unwrap();
            let p = a.spawn_process();
            for i in 0..N {
                let msg = Term::tuple(vec![
                    Term::Integer(i as i64),
                    Term::binary(vec![7u8; 64 * 1024]),
                ]);
                a.send_named(p.pid(), &b_name, "inbox", msg).await.unwrap();
            }
            a.stop().await;
        });
        // The runtime goes here, with every task it still had.
        drop(rt);
    });
    for i in 0..N {
        let got = inbox
            .recv_timeout(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("message {i} of {N} never arrived"));
        assert_eq!(got.as_tuple().unwrap()[0], Term::Integer(i as i64));
    }
    sender.join().unwrap();
}

/// With `busy_poll` on both sides, a connection reads through the
/// spinning path (straight from the socket, past the runtime's readiness)
/// as well as the waiting one: small messages and a 10 MB binary both
/// ways arrive whole and in order, and the peer's close is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_poll_connections_deliver_everything_in_order() {
    const T: Duration = Duration::from_secs(10);
    let (pa, pb) = (free_port(), free_port());
    let mut ca = config("spin_a", "c", pa);
    let mut cb = config("spin_b", "c", pb);
    ca.known_ports.insert(cb.name.clone(), pb);
    cb.known_ports.insert(ca.name.clone(), pa);
    ca.busy_poll = Some(Duration::from_millis(5));
    cb.busy_poll = Some(Duration::from_millis(5));
    let (a, b) = (
        Node::start(ca).await.unwrap(),
        Node::start(cb).await.unwrap(),
    );
    a.ping(b.name()).await.unwrap();
    let mut pa = a.spawn_registered("spin_inbox").unwrap();
    let mut pb = b.spawn_registered("spin_inbox").unwrap();
    // Request/answer (the pattern that spins): 2,000 round trips.
    for i in 0..2_000i64 {
        a.send_named(pa.pid(), b.name(), "spin_inbox", Term::Integer(i))
            .await
            .unwrap();
        assert_eq!(
            pb.recv_timeout(T).await.expect("delivered"),
            Term::Integer(i)
        );
        b.send(pa.pid(), Term::Integer(-i)).await.unwrap();
        assert_eq!(
            pa.recv_timeout(T).await.expect("delivered"),
            Term::Integer(-i)
        );
    }
    // A burst one way, then a binary larger than any read buffer.
    for i in 0..5_000i64 {
        b.send(pa.pid(), Term::Integer(i)).await.unwrap();
    }
    for i in 0..5_000i64 {
        assert_eq!(
            pa.recv_timeout(T).await.expect("delivered"),
            Term::Integer(i)
        );
    }
    let big = Term::binary((0..10_000_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    a.send(pb.pid(), big.clone()).await.unwrap();
    assert_eq!(pb.recv_timeout(T).await.expect("delivered"), big);
    let mut events = a.subscribe();
    b.stop().await;
    // a sees b's close.
    events::nodedown(&mut events, b.name(), Duration::from_secs(10)).await;
}

/// The protocol wants a SPAWN_REPLY before any signal from the process
/// it names. A process served by an async function that ends at once
/// runs on whichever worker takes its task; started before its reply was
/// queued, it could write its exit (MONITOR_P_EXIT) first, which a BEAM
/// caller handled only slowly (rpc:call by a process at 8 callers ran at
/// 0.13-0.45x instead of 0.65x). Eight requests per read, 1,000 reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_reply_goes_out_before_the_spawned_process_exit() {
    use erlkube_etf::{Atom, Pid, Reference};
    use erlkube_proto::dist::control::{ControlMessage as C, DistMessage, Mfa};
    use erlkube_proto::dist::{Connection, ConnectionConfig};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, _b) = pair("c", "c").await;
    a.register_async_fn("t", "echo", 1, |mut args| async move { Ok(args.remove(0)) });
    let name = format!("rawspawn_{}@127.0.0.1", std::process::id());
    let cfg = erlkube_proto::dist::handshake::HandshakeConfig::new(
        name.clone(),
        erlkube_node::Cookie::new("c"),
        5,
    )
    .hidden();
    let (mut s, est) = raw_handshake(&a, cfg).await;
    let mut enc = erlkube_proto::dist::frame::OutboundEncoder::new(est.flags);
    let mut conn = Connection::new(
        &est,
        ConnectionConfig {
            net_ticktime: Duration::from_secs(60),
            limits: Default::default(),
        },
        std::time::Instant::now(),
    );
    let me = Pid {
        node: Atom::new(&name),
        id: 1,
        serial: 0,
        creation: 5,
    };
    let reference = |n: u32| Reference {
        node: Atom::new(&name),
        creation: 5,
        ids: vec![n, 0, 0],
    };
    let mut buf = vec![0u8; 65536];
    for round in 0..1_000u32 {
        let mut out = Vec::new();
        for k in 0..8u32 {
            let id = round * 8 + k + 1;
            let m = DistMessage {
                control: C::SpawnRequest {
                    req_id: reference(id),
                    from: me.clone(),
                    group_leader: me.clone(),
                    mfa: Mfa {
                        module: Atom::new("erpc"),
                        function: Atom::new("execute_call"),
                        arity: 4,
                    },
                    options: Term::List(vec![Term::atom("monitor")]),
                },
                payload: Some(Term::List(vec![
                    Term::Integer(id as i64),
                    Term::atom("t"),
                    Term::atom("echo"),
                    Term::List(vec![Term::Integer(id as i64)]),
                ])),
            };
            let (c, p) = m.encode();
            enc.encode(&c, p.as_deref(), &mut out);
        }
        s.write_all(&out).await.unwrap();
        // Both frames of each of the 8 requests, in the order they came.
        let mut replied = std::collections::HashSet::new();
        let mut exited = 0;
        while exited < 8 {
            while let Some(raw) = conn.poll_message() {
                let m = DistMessage::decode(&raw).expect("decodes");
                match m.control {
                    C::SpawnReply { req_id, .. } => {
                        replied.insert(req_id.ids[0]);
                    }
                    C::MonitorPExit { reference, .. } => {
                        assert!(
                            replied.contains(&reference.ids[0]),
                            "round {round}: the exit of request {} came before its SPAWN_REPLY",
                            reference.ids[0]
                        );
                        exited += 1;
                    }
                    _ => {}
                }
            }
            if exited == 8 {
                break;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("answers within 10 s")
                .unwrap();
            assert!(n > 0, "closed");
            conn.handle_input(&buf[..n], std::time::Instant::now())
                .unwrap();
        }
    }
}
