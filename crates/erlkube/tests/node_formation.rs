//! `erlkube node` forms a cluster: with no discovery options it connects to
//! every node on its local epmd (real OTP nodes, a private OTP epmd).

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use erlkube_testkit::{unique_name, wait_until, ChildGuard, ErlNode, OtpEpmd};

fn rust_node(
    epmd_port: u16,
    name: &str,
    cookie: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> ChildGuard {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_erlkube"));
    cmd.args([
        "node",
        "--name",
        name,
        "--cookie",
        cookie,
        "--epmd-port",
        &epmd_port.to_string(),
    ])
    .args(["--net-ticktime", "4"])
    .args(extra)
    .env_remove("ERLKUBE_CONFIG")
    .env("ERLKUBE_DISCOVERY_INTERVAL", "200ms")
    .envs(env.iter().copied())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut g = ChildGuard::spawn(&mut cmd).expect("erlkube node");
    let out = g.child_mut().stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "{line}");
    g
}

#[test]
fn with_no_options_the_node_joins_every_node_on_its_epmd() {
    let epmd = OtpEpmd::start().unwrap();
    let a = ErlNode::builder(&unique_name("form_a"))
        .epmd_port(epmd.port())
        .start()
        .unwrap();
    let b = ErlNode::builder(&unique_name("form_b"))
        .epmd_port(epmd.port())
        .start()
        .unwrap();
    let rust = format!("{}@127.0.0.1", unique_name("form_rust"));
    let _node = rust_node(epmd.port(), &rust, a.cookie(), &[], &[]);
    let seen = |n: &ErlNode| {
        n.eval("nodes()")
            .map(|v| v.contains(&rust))
            .unwrap_or(false)
    };
    assert!(
        wait_until(Duration::from_secs(30), || seen(&a) && seen(&b)),
        "a: {:?} b: {:?}",
        a.eval("nodes()"),
        b.eval("nodes()")
    );
}

#[test]
fn no_discovery_connects_to_nobody() {
    let epmd = OtpEpmd::start().unwrap();
    let a = ErlNode::builder(&unique_name("form_nd"))
        .epmd_port(epmd.port())
        .start()
        .unwrap();
    let rust = format!("{}@127.0.0.1", unique_name("form_nd_rust"));
    let _node = rust_node(epmd.port(), &rust, a.cookie(), &["--no-discovery"], &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(a.eval("nodes()").unwrap(), "[]");
}

#[test]
fn a_static_list_from_the_environment_is_used() {
    let epmd = OtpEpmd::start().unwrap();
    let a = ErlNode::builder(&unique_name("form_st_a"))
        .epmd_port(epmd.port())
        .start()
        .unwrap();
    let b = ErlNode::builder(&unique_name("form_st_b"))
        .epmd_port(epmd.port())
        .start()
        .unwrap();
    let rust = format!("{}@127.0.0.1", unique_name("form_st_rust"));
    let _node = rust_node(
        epmd.port(),
        &rust,
        a.cookie(),
        &["--discovery", "static"],
        &[("ERLKUBE_DISCOVERY_STATIC_NODES", a.node_name())],
    );
    assert!(wait_until(Duration::from_secs(30), || a
        .eval("nodes()")
        .map(|v| v.contains(&rust))
        .unwrap_or(false)));
    // b is not in the list: never connected by the Rust node.
    std::thread::sleep(Duration::from_secs(1));
    assert!(!b.eval("nodes()").unwrap().contains(&rust));
}
