//! The testkit against real OTP: epmd, erl and elixir nodes.

use std::time::Duration;

use erlkube_testkit::{unique_name, wait_until, ErlNode, EvalError, NameMode, OtpEpmd, Runtime};

#[test]
fn erl_nodes_register_and_ping_through_otp_epmd() {
    let epmd = OtpEpmd::start().expect("OTP epmd");
    let a = ErlNode::builder(&unique_name("tk_a"))
        .epmd_port(epmd.port())
        .start()
        .expect("node a");
    let b = ErlNode::builder(&unique_name("tk_b"))
        .epmd_port(epmd.port())
        .start()
        .expect("node b");
    assert!(a.node_name().ends_with("@127.0.0.1"), "{}", a.node_name());
    assert_eq!(
        a.eval(&format!("net_adm:ping('{}')", b.node_name()))
            .unwrap(),
        "pong"
    );
    assert_eq!(a.eval("nodes()").unwrap(), format!("['{}']", b.node_name()));
    let (code, out, _) = OtpEpmd::client(epmd.port(), &["-names"]).unwrap();
    assert_eq!(code, 0);
    let short_a = a.node_name().split('@').next().unwrap();
    assert!(out.contains(&format!("name {short_a} at port ")), "{out}");
}

#[test]
fn eval_reports_values_errors_and_multiline_input() {
    let n = ErlNode::builder("tk_nodist")
        .name_mode(NameMode::None)
        .start()
        .expect("node");
    assert_eq!(n.node_name(), "nonode@nohost");
    assert_eq!(n.eval("X = 20,\n X + 1").unwrap(), "21");
    assert_eq!(
        n.eval("{ok, \"a\\nb\", <<1>>}.").unwrap(),
        "{ok,\"a\\nb\",<<1>>}"
    );
    match n.eval("erlang:error(boom)") {
        Err(EvalError::Raised(r)) => assert_eq!(r, "{error,boom}"),
        other => panic!("expected a raise, got {other:?}"),
    }
    // The loop survives an exception.
    assert_eq!(n.eval("lists:seq(1,3)").unwrap(), "[1,2,3]");
}

#[test]
fn distributed_node_without_epmd_port_is_refused() {
    let err = ErlNode::builder("tk_noport").start().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn elixir_node_pings_erl_node() {
    let epmd = OtpEpmd::start().expect("OTP epmd");
    let e = ErlNode::builder(&unique_name("tk_ex"))
        .runtime(Runtime::Elixir)
        .epmd_port(epmd.port())
        .start()
        .expect("elixir node");
    let a = ErlNode::builder(&unique_name("tk_erl"))
        .epmd_port(epmd.port())
        .start()
        .expect("erl node");
    assert_eq!(
        e.eval(&format!("'Elixir.Node':ping('{}')", a.node_name()))
            .unwrap(),
        "pong"
    );
    assert_eq!(
        e.eval("'Elixir.Code':eval_string(<<\"Enum.sum([1, 2, 3])\">>)")
            .unwrap(),
        "{6,[]}"
    );
}

#[test]
fn killed_node_disappears_from_names() {
    let epmd = OtpEpmd::start().expect("OTP epmd");
    let mut a = ErlNode::builder(&unique_name("tk_kill"))
        .epmd_port(epmd.port())
        .start()
        .expect("node");
    let short = a.node_name().split('@').next().unwrap().to_owned();
    let listed = || {
        OtpEpmd::client(epmd.port(), &["-names"])
            .unwrap()
            .1
            .contains(&format!("name {short} at port"))
    };
    assert!(listed());
    a.kill();
    assert!(wait_until(Duration::from_secs(10), || !listed()));
}
