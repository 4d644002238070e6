//! Real OTP nodes (`erl`, `elixir`) use erlkube's port mapper.

mod common;

use std::time::Duration;

use common::{block_on, Daemon};
use erlkube_epmd::Client;
use erlkube_testkit::{unique_name, wait_until, ErlNode, Runtime};

fn short(node: &str) -> &str {
    node.split('@').next().unwrap()
}

fn registered(port: u16) -> Vec<String> {
    block_on(Client::new("127.0.0.1", port).names())
        .expect("names")
        .nodes
        .into_iter()
        .map(|e| e.name)
        .collect()
}

#[test]
fn erl_nodes_register_find_each_other_and_ping() {
    let d = Daemon::start();
    let a = ErlNode::builder(&unique_name("ek_a"))
        .epmd_port(d.port)
        .start()
        .expect("node a");
    let b = ErlNode::builder(&unique_name("ek_b"))
        .epmd_port(d.port)
        .start()
        .expect("node b");

    let names = registered(d.port);
    assert!(
        names.contains(&short(a.node_name()).to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&short(b.node_name()).to_owned()),
        "{names:?}"
    );

    // b's own view of its distribution port equals what epmd hands out.
    let (dist_port, version) = {
        let info = block_on(Client::new("127.0.0.1", d.port).port_please(short(b.node_name())))
            .unwrap()
            .expect("b registered");
        (info.port, info.highest_version)
    };
    assert_eq!(
        a.eval(&format!(
            "erl_epmd:port_please(\"{}\", {{127,0,0,1}})",
            short(b.node_name())
        ))
        .unwrap(),
        format!("{{port,{dist_port},{version}}}")
    );

    assert_eq!(
        a.eval(&format!("net_adm:ping('{}')", b.node_name()))
            .unwrap(),
        "pong"
    );
    assert_eq!(b.eval("nodes()").unwrap(), format!("['{}']", a.node_name()));
    // net_adm:names/0 goes through NAMES and parses OTP's line format.
    let listed = a.eval("net_adm:names()").unwrap();
    assert!(
        listed.contains(&format!("{{\"{}\",{dist_port}}}", short(b.node_name()))),
        "{listed}"
    );
}

#[test]
fn killing_a_node_unregisters_it() {
    let d = Daemon::start();
    let mut a = ErlNode::builder(&unique_name("ek_kill"))
        .epmd_port(d.port)
        .start()
        .expect("node");
    let name = short(a.node_name()).to_owned();
    assert!(registered(d.port).contains(&name));
    a.kill();
    assert!(
        wait_until(Duration::from_secs(10), || !registered(d.port)
            .contains(&name)),
        "still registered after the node died"
    );
    // The name can be registered again, with a new creation.
    let again = ErlNode::builder(&name)
        .epmd_port(d.port)
        .start()
        .expect("restart");
    assert!(registered(d.port).contains(&short(again.node_name()).to_owned()));
}

#[test]
fn a_restarted_node_gets_the_next_creation() {
    let d = Daemon::start();
    let name = unique_name("ek_cr");
    let creation = |n: &ErlNode| -> u64 {
        n.eval("erlang:system_info(creation)")
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut a = ErlNode::builder(&name)
        .epmd_port(d.port)
        .start()
        .expect("node");
    let c1 = creation(&a);
    assert!(c1 > 3, "creation {c1} is in OTP's reserved 0..3 range");
    a.stop();
    assert!(wait_until(Duration::from_secs(10), || registered(d.port).is_empty()));
    let b = ErlNode::builder(&name)
        .epmd_port(d.port)
        .start()
        .expect("restart");
    assert_eq!(creation(&b), c1 + 1, "per-name creation counter");
}

#[test]
fn elixir_and_erl_nodes_ping_through_erlkube_epmd() {
    let d = Daemon::start();
    let ex = ErlNode::builder(&unique_name("ek_ex"))
        .runtime(Runtime::Elixir)
        .epmd_port(d.port)
        .start()
        .expect("elixir node");
    let erl = ErlNode::builder(&unique_name("ek_erl"))
        .epmd_port(d.port)
        .start()
        .expect("erl node");
    assert_eq!(
        ex.eval(&format!("'Elixir.Node':ping('{}')", erl.node_name()))
            .unwrap(),
        "pong"
    );
    assert_eq!(
        erl.eval(&format!("net_adm:ping('{}')", ex.node_name()))
            .unwrap(),
        "pong"
    );
}
