//! OTP's `epmd` command-line client against erlkube's daemon, and
//! erlkube's client against OTP's daemon.

mod common;

use std::time::Duration;

use common::{block_on, node_info, Daemon};
use erlkube_epmd::{Client, ClientError, Exit, KillReply, StopReply};
use erlkube_testkit::{wait_until, OtpEpmd};

/// `epmd -port P <args>` (OTP's client), with the port number in the first
/// line replaced so outputs of two daemons can be compared.
fn otp_client(port: u16, args: &[&str]) -> (i32, String) {
    let (code, out, err) = OtpEpmd::client(port, args).expect("run OTP epmd client");
    (
        code,
        format!("{out}{err}").replace(&format!("port {port} "), "port PORT "),
    )
}

#[test]
fn names_output_is_identical_to_otp_epmd() {
    let ours = Daemon::start();
    let otp = OtpEpmd::start().expect("OTP epmd");
    let names = ["alpha", "beta", "gamma_with_underscore", "dëlta"];
    let mut regs = Vec::new();
    for (i, n) in names.iter().enumerate() {
        for port in [ours.port, otp.port()] {
            let r =
                block_on(Client::new("127.0.0.1", port).register(node_info(n, 30000 + i as u16)))
                    .expect("register");
            regs.push(r);
        }
    }
    let (c1, a) = otp_client(ours.port, &["-names"]);
    let (c2, b) = otp_client(otp.port(), &["-names"]);
    assert_eq!((c1, &a), (c2, &b));
    assert!(
        a.starts_with("epmd: up and running on port PORT with data:\n"),
        "{a}"
    );
    assert!(a.contains("name dëlta at port 30003\n"), "{a}");
    // Empty registry: also identical.
    regs.clear();
    assert!(wait_until(Duration::from_secs(10), || {
        otp_client(ours.port, &["-names"]).1 == otp_client(otp.port(), &["-names"]).1
            && !otp_client(ours.port, &["-names"]).1.contains("name ")
    }));
}

#[test]
fn otp_kill_is_refused_with_nodes_then_kills() {
    let ours = Daemon::start();
    let otp = OtpEpmd::start().expect("OTP epmd");
    let r1 = block_on(Client::new("127.0.0.1", ours.port).register(node_info("k", 1))).unwrap();
    let r2 = block_on(Client::new("127.0.0.1", otp.port()).register(node_info("k", 1))).unwrap();
    let refused_ours = otp_client(ours.port, &["-kill"]);
    let refused_otp = otp_client(otp.port(), &["-kill"]);
    assert_eq!(refused_ours, refused_otp);
    assert_eq!(
        refused_ours,
        (
            1,
            "Killing not allowed - living nodes in database.\n".into()
        )
    );
    drop((r1, r2));
    assert!(wait_until(Duration::from_secs(10), || otp_client(
        ours.port,
        &["-kill"]
    )
    .0 == 0));
    assert_eq!(ours.join(), Exit::Killed);
}

#[test]
fn otp_kill_answers_killed() {
    let ours = Daemon::start();
    assert_eq!(otp_client(ours.port, &["-kill"]), (0, "Killed\n".into()));
    assert_eq!(ours.join(), Exit::Killed);
}

#[test]
fn otp_stop_behaves_the_same_relaxed_or_not() {
    // Not relaxed: both daemons close without answering.
    let ours = Daemon::start();
    let otp = OtpEpmd::start().expect("OTP epmd");
    let _r1 = block_on(Client::new("127.0.0.1", ours.port).register(node_info("s", 1))).unwrap();
    let _r2 = block_on(Client::new("127.0.0.1", otp.port()).register(node_info("s", 1))).unwrap();
    let a = otp_client(ours.port, &["-stop", "s"]);
    assert_eq!(a, otp_client(otp.port(), &["-stop", "s"]));
    assert_eq!(a.0, 1);
    assert_eq!(
        block_on(Client::new("127.0.0.1", ours.port).names())
            .unwrap()
            .nodes
            .len(),
        1
    );

    // Relaxed: STOPPED closes the registration; NOEXIST for unknown names.
    let ours = Daemon::start_relaxed();
    let otp = OtpEpmd::start_relaxed().expect("OTP epmd");
    let mut r1 = block_on(Client::new("127.0.0.1", ours.port).register(node_info("s", 1))).unwrap();
    let _r2 = block_on(Client::new("127.0.0.1", otp.port()).register(node_info("s", 1))).unwrap();
    let a = otp_client(ours.port, &["-stop", "s"]);
    assert_eq!(a, otp_client(otp.port(), &["-stop", "s"]));
    assert_eq!(a, (0, "STOPPED\n".into()));
    block_on(async {
        tokio::time::timeout(Duration::from_secs(10), r1.closed())
            .await
            .expect("registration connection closed by STOP")
    });
    assert!(block_on(Client::new("127.0.0.1", ours.port).names())
        .unwrap()
        .nodes
        .is_empty());
    let n = otp_client(ours.port, &["-stop", "nobody"]);
    assert_eq!(n, otp_client(otp.port(), &["-stop", "nobody"]));
    assert_eq!(n, (0, "NOEXIST\n".into()));
}

#[test]
fn erlkube_client_against_otp_epmd() {
    let otp = OtpEpmd::start().expect("OTP epmd");
    let c = Client::new("127.0.0.1", otp.port());
    block_on(async {
        let mut info = node_info("client_test", 40123);
        info.extra = b"some extra".to_vec();
        let reg = c.register(info.clone()).await.expect("register");
        assert!(reg.creation() > 3);
        assert_eq!(c.port_please("client_test").await.unwrap(), Some(info));
        assert_eq!(c.port_please("nobody").await.unwrap(), None);
        let names = c.names().await.unwrap();
        assert_eq!(names.epmd_port, otp.port() as u32);
        assert_eq!(names.nodes.len(), 1);
        assert_eq!(names.nodes[0].to_string(), "name client_test at port 40123");
        assert!(matches!(
            c.register(node_info("client_test", 1)).await,
            Err(ClientError::Refused(1))
        ));
        assert_eq!(c.kill().await.unwrap(), KillReply::Refused);
        // OTP answers STOP only when relaxed: no answer here.
        assert!(matches!(
            c.stop("client_test").await,
            Err(ClientError::NoAnswer)
        ));
        let first = reg.creation();
        drop(reg);
        let mut again = None;
        for _ in 0..200 {
            match c.register(node_info("client_test", 40123)).await {
                Ok(r) => {
                    again = Some(r);
                    break;
                }
                Err(ClientError::Refused(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(again.expect("re-registered").creation(), first + 1);
    });
}

#[test]
fn erlkube_client_against_erlkube_daemon() {
    let d = Daemon::start_relaxed();
    let c = Client::local(d.port);
    block_on(async {
        let mut info = node_info("self", 1234);
        info.extra = vec![0, 1, 2];
        let mut reg = c.register(info.clone()).await.unwrap();
        assert_eq!(reg.name(), "self");
        assert_eq!(c.port_please("self").await.unwrap(), Some(info));
        assert!(c
            .dump()
            .await
            .unwrap()
            .contains("active name     <self> at port 1234"));
        assert_eq!(c.stop("self").await.unwrap(), StopReply::Stopped);
        reg.closed().await;
        assert_eq!(c.stop("self").await.unwrap(), StopReply::NoSuchName);
        assert_eq!(c.kill().await.unwrap(), KillReply::Killed);
    });
    assert_eq!(d.join(), Exit::Killed);
}

#[test]
fn send_hands_back_otp_epmds_answer_byte_for_byte() {
    use erlkube_proto::epmd::Request;
    let otp = OtpEpmd::start().expect("OTP epmd");
    let c = Client::local(otp.port());
    block_on(async {
        let _reg = c.register(node_info("raw_test", 40124)).await.unwrap();
        let mut x = c.send(&Request::Names).await.unwrap();
        let head = x.read_up_to(4).await.unwrap();
        assert_eq!(head, (otp.port() as u32).to_be_bytes());
        assert_eq!(x.read_rest().await, b"name raw_test at port 40124\n");
        // KILL with a node registered: "NO"; STOP unrelaxed: closed, no bytes.
        let mut x = c.send(&Request::Kill).await.unwrap();
        assert_eq!(x.read_up_to(2).await.unwrap(), b"NO");
        let stop = Request::Stop {
            name: "raw_test".into(),
        };
        let mut x = c.send(&stop).await.unwrap();
        assert_eq!(x.read_up_to(7).await.unwrap(), b"");
    });
    // Nothing listens any more once OTP's epmd is gone: a connect error.
    let port = otp.port();
    drop(otp);
    let gone = Client::local(port).with_timeout(Duration::from_secs(5));
    let r = block_on(gone.send(&erlkube_proto::epmd::Request::Names));
    assert!(matches!(r, Err(ClientError::Connect { .. })), "{r:?}");
}
