//! `erlkube node`'s demo from an `erl` shell (OTP 25): the `echo` process
//! is in pg group `erlkube_demo` of scope `pg` and holds the global name
//! `erlkube_demo_echo`; both reach it.

use std::process::{Command, Stdio};
use std::time::Duration;

use erlkube_testkit::{unique_name, wait_until, ErlNode, OtpEpmd};

mod common;
use common::ERLKUBE;

#[test]
fn the_demo_echo_is_in_pg_and_global() {
    let epmd = OtpEpmd::start().unwrap();
    let rust = format!("{}@127.0.0.1", unique_name("demo_rust"));
    let mut cmd = Command::new(ERLKUBE);
    cmd.args(["node", "--name", &rust])
        .args(["--epmd-port", &epmd.port().to_string()])
        .env("RELEASE_COOKIE", "democ")
        .stderr(Stdio::null());
    let _node = common::spawn_until_listening(&mut cmd);
    let b = ErlNode::builder(&unique_name("demo_beam"))
        .cookie("democ")
        .epmd_port(epmd.port())
        .arg("-kernel")
        .arg("start_pg")
        .arg("true")
        .eval_timeout(Duration::from_secs(60))
        .start()
        .expect("erl must be installed");
    assert_eq!(b.eval(&format!("net_adm:ping('{rust}')")).unwrap(), "pong");
    assert!(
        wait_until(Duration::from_secs(30), || b
            .eval("length(pg:get_members(pg, erlkube_demo))")
            .unwrap()
            == "1"),
        "the echo process shows in pg"
    );
    assert_eq!(b.eval("global:sync()").unwrap(), "ok");
    assert_eq!(
        b.eval(
            "[P] = pg:get_members(pg, erlkube_demo), \
             {node(P), P =:= global:whereis_name(erlkube_demo_echo)}"
        )
        .unwrap(),
        format!("{{'{rust}',true}}")
    );
    assert_eq!(
        b.eval(
            "global:send(erlkube_demo_echo, {self(), via_global}), \
             receive via_global -> ok after 5000 -> timeout end"
        )
        .unwrap(),
        "ok"
    );
    assert_eq!(
        b.eval(
            "[P] = pg:get_members(pg, erlkube_demo), P ! {self(), via_pg}, \
             receive via_pg -> ok after 5000 -> timeout end"
        )
        .unwrap(),
        "ok"
    );
}
