//! `erlkube rpc` against a real OTP 25 node, and `erlkube node`'s demo
//! services called from OTP's `erl_call` and from an Elixir node. A private
//! OTP epmd on a free port; children are killed on drop.

use std::io::BufRead;
use std::process::{Command, Stdio};

use erlkube_testkit::{unique_name, ChildGuard, ErlNode, OtpEpmd, Runtime};

mod common;
use common::ERLKUBE;
const COOKIE: &str = "rpc_cli_cookie";

fn rpc(epmd: u16, args: &[&str]) -> (i32, String, String) {
    common::outcome(
        Command::new(ERLKUBE)
            .arg("rpc")
            .args(args)
            .args(["--epmd-port", &epmd.to_string()])
            .env("RELEASE_COOKIE", COOKIE)
            .output()
            .unwrap(),
    )
}

#[test]
fn erlkube_rpc_calls_a_beam_node() {
    let epmd = OtpEpmd::start().unwrap();
    let b = ErlNode::builder(&unique_name("rpc_cli_beam"))
        .cookie(COOKIE)
        .epmd_port(epmd.port())
        .start()
        .expect("erl must be installed");
    let n = b.node_name();
    let p = epmd.port();
    assert_eq!(
        rpc(p, &[n, "erlang", "node", "[]"]),
        (0, format!("'{n}'"), String::new())
    );
    let (code, out, _) = rpc(p, &[n, "lists", "reverse", "[[1, <<\"x\">>, {a, 2.5}]]"]);
    assert_eq!((code, out.as_str()), (0, "[{a,2.5},<<\"x\">>,1]"));
    let (code, out, _) = rpc(p, &[n, "nomod", "nofun", "[1]"]);
    assert_eq!(code, 1);
    assert_eq!(out, "{badrpc,{'EXIT',{undef,[{nomod,nofun,[1],[]}]}}}");
    // Compare with what rpc:call gives on the BEAM itself.
    assert_eq!(b.eval("rpc:call(node(), nomod, nofun, [1])").unwrap(), out);
    let (code, _, err) = rpc(p, &[n, "erlang", "node", "[1"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = rpc(p, &[n, "erlang", "node", "not_a_list"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = rpc(p, &["nobody@127.0.0.1", "erlang", "node", "[]"]);
    assert_eq!((code, out.as_str()), (1, "{badrpc,nodedown}"));
}

#[test]
fn erlkube_node_demo_services_from_erl_call_and_elixir() {
    let epmd = OtpEpmd::start().unwrap();
    let name = format!("{}@127.0.0.1", unique_name("rpc_cli_node"));
    let mut child = ChildGuard::spawn(
        Command::new(ERLKUBE)
            .args(["node", "--name", &name, "--cookie", COOKIE])
            .args(["--epmd-port", &epmd.port().to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.child_mut().stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on port"), "{line}");

    let out = Command::new("erl_call")
        .env("ERL_EPMD_PORT", epmd.port().to_string())
        .args(["-c", COOKIE, "-n", &name, "-a", "demo echo [hello]"])
        .output()
        .expect("erl_call must be installed (OTP)");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");

    let ex = ErlNode::builder(&unique_name("rpc_cli_ex"))
        .runtime(Runtime::Elixir)
        .cookie(COOKIE)
        .epmd_port(epmd.port())
        .start()
        .expect("elixir must be installed");
    let code =
        |s: &str| format!("element(1, 'Elixir.Code':eval_string(<<\"{s}\">>, [{{r, '{name}'}}]))");
    assert_eq!(
        ex.eval(&code("GenServer.call({:echo_server, r}, :hi)"))
            .unwrap(),
        "{echo,hi}"
    );
    assert_eq!(
        ex.eval(&code(":rpc.call(r, :demo, :add, [1, 2])")).unwrap(),
        "3"
    );
    assert_eq!(
        ex.eval(&code(":erpc.call(r, :demo, :add, [1, 2])"))
            .unwrap(),
        "3"
    );
}
