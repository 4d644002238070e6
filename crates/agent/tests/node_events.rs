//! The agent learns its BEAM node's membership from the node's
//! nodeup/nodedown events (real `erl` nodes, OTP's epmd on a free port).
//!
//! The safety-net re-read of `nodes()` is set to 10 minutes here, so a
//! change seen within a test's wait can only have come from an event; the
//! `beam_nodes_polls_total` metric staying 0 says so too.
//!
//! Tests run one at a time (a lock): the agent's node reads the port
//! mapper's port from `ERL_EPMD_PORT` in this process's environment.

use std::sync::Mutex;
use std::time::Duration;

use erlkube_agent::AgentConfig;
use erlkube_testkit::{unique_name, wait_until, ErlNode, OtpEpmd};

static SERIAL: Mutex<()> = Mutex::new(());

const COOKIE: &str = "agent_node_events_cookie";
/// Liveness bound of each wait (not a performance assertion).
const WAIT: Duration = Duration::from_secs(30);

mod common;

/// [`common::local_config`] with the safety-net poll pushed out to 10 min,
/// so every change a test sees comes from an event.
fn config(node: &str, overrides: &[(&str, &str)]) -> AgentConfig {
    // Stopping an agent drains its node: no grace here.
    let mut all = vec![
        ("ERLKUBE_AGENT_NODES_POLL_INTERVAL", "10m"),
        ("ERLKUBE_AGENT_DRAIN_GRACE", "0s"),
    ];
    all.extend_from_slice(overrides);
    common::local_config(node, COOKIE, &all)
}

use common::RunningAgent;

fn start(node: &str, overrides: &[(&str, &str)]) -> RunningAgent {
    RunningAgent::start(config(node, overrides))
}

fn cluster(agent: &RunningAgent) -> String {
    agent.get("/cluster")
}

/// A counter or gauge from `/metrics`.
fn metric(agent: &RunningAgent, name: &str) -> u64 {
    agent
        .metric(name)
        .unwrap_or_else(|| panic!("no {name} in\n{}", agent.get("/metrics")))
}

fn visible_is(agent: &RunningAgent, nodes: &[&str]) -> bool {
    let list: Vec<String> = nodes.iter().map(|n| format!("\"{n}\"")).collect();
    cluster(agent).contains(&format!("\"visible\":[{}]", list.join(",")))
}

fn node(name: &str, epmd: &OtpEpmd) -> ErlNode {
    ErlNode::builder(name)
        .epmd_port(epmd.port())
        .cookie(COOKIE)
        .start()
        .expect("start erl (is Erlang/OTP installed?)")
}

/// Processes on `n` started as `erl_eval:exprs/2` by `erlang:spawn/3`:
/// the agent's subscribers (the test kit's own loop starts otherwise).
fn subscribers(n: &ErlNode) -> String {
    n.eval(
        "length([P || P <- processes(), \
         process_info(P, initial_call) =:= {initial_call, {erl_eval, exprs, 2}}])",
    )
    .unwrap()
}

fn wait(what: &str, agent: &RunningAgent, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(WAIT, cond),
        "{what}; /cluster: {}",
        cluster(agent)
    );
}

#[test]
fn peers_connecting_and_leaving_show_up_through_events() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let epmd = OtpEpmd::start().expect("start OTP epmd");
    std::env::set_var("ERL_EPMD_PORT", epmd.port().to_string());
    let app = node(&unique_name("events_app"), &epmd);
    let a = app.node_name().to_owned();
    let mut agent = start(&a, &[]);
    wait("the agent follows the node's events", &agent, || {
        cluster(&agent).contains("\"membership\":\"events\"")
    });
    assert!(visible_is(&agent, &[]), "{}", cluster(&agent));
    assert_eq!(metric(&agent, "erlkube_agent_beam_subscriptions_total"), 1);
    assert_eq!(subscribers(&app), "1");

    // A peer connects to the agent's node.
    let mut peer = node(&unique_name("events_peer"), &epmd);
    let b = peer.node_name().to_owned();
    assert_eq!(
        peer.eval(&format!("net_kernel:connect_node('{a}')"))
            .unwrap(),
        "true"
    );
    wait("the peer's nodeup shows in /cluster", &agent, || {
        visible_is(&agent, &[&b])
    });
    // The agent's node disconnects it.
    assert_eq!(
        app.eval(&format!("erlang:disconnect_node('{b}')")).unwrap(),
        "true"
    );
    wait("the nodedown shows in /cluster", &agent, || {
        visible_is(&agent, &[])
    });
    // The peer notices a little later (until then it would answer a
    // connect on the dying connection).
    wait("the peer sees the disconnect", &agent, || {
        peer.eval("nodes()").unwrap() == "[]"
    });
    // The agent's node connects to it, then the peer dies.
    assert_eq!(
        app.eval(&format!("net_kernel:connect_node('{b}')"))
            .unwrap(),
        "true"
    );
    wait("the second nodeup shows", &agent, || {
        visible_is(&agent, &[&b])
    });
    peer.kill();
    wait("a dead peer's nodedown shows", &agent, || {
        visible_is(&agent, &[])
    });
    assert!(metric(&agent, "erlkube_agent_beam_node_events_total") >= 4);
    assert_eq!(
        metric(&agent, "erlkube_agent_beam_nodes_polls_total"),
        0,
        "every change came from an event"
    );

    // A killed subscriber is replaced, and events keep coming.
    app.eval(
        "[exit(P, kill) || P <- processes(), \
         process_info(P, initial_call) =:= {initial_call, {erl_eval, exprs, 2}}], ok",
    )
    .unwrap();
    wait("a new subscriber", &agent, || {
        metric(&agent, "erlkube_agent_beam_subscriptions_total") == 2
            && cluster(&agent).contains("\"membership\":\"events\"")
    });
    assert_eq!(subscribers(&app), "1");
    let third = node(&unique_name("events_third"), &epmd);
    let c = third.node_name().to_owned();
    assert_eq!(
        third
            .eval(&format!("net_kernel:connect_node('{a}')"))
            .unwrap(),
        "true"
    );
    wait("the new subscriber's nodeup shows", &agent, || {
        visible_is(&agent, &[&c])
    });
    assert_eq!(metric(&agent, "erlkube_agent_beam_nodes_polls_total"), 0);

    // The agent leaves nothing behind on the node.
    agent.stop();
    assert!(
        wait_until(WAIT, || subscribers(&app) == "0"),
        "the subscriber outlived the agent"
    );
}

#[test]
fn a_restarted_node_gets_a_new_subscriber() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let epmd = OtpEpmd::start().expect("start OTP epmd");
    std::env::set_var("ERL_EPMD_PORT", epmd.port().to_string());
    let name = unique_name("restart_app");
    let mut app = node(&name, &epmd);
    let a = app.node_name().to_owned();
    let agent = start(&a, &[]);
    wait("the agent follows the node's events", &agent, || {
        cluster(&agent).contains("\"membership\":\"events\"")
    });
    let peer = node(&unique_name("restart_peer"), &epmd);
    let b = peer.node_name().to_owned();
    assert_eq!(
        peer.eval(&format!("net_kernel:connect_node('{a}')"))
            .unwrap(),
        "true"
    );
    wait("the peer shows", &agent, || visible_is(&agent, &[&b]));

    app.kill();
    wait("the agent sees the node down", &agent, || {
        cluster(&agent).contains("\"beam_up\":false")
    });
    assert!(visible_is(&agent, &[]), "{}", cluster(&agent));
    let app = node(&name, &epmd);
    wait("the restarted node is followed by events", &agent, || {
        metric(&agent, "erlkube_agent_beam_starts_total") == 2
            && cluster(&agent).contains("\"membership\":\"events\"")
    });
    assert_eq!(metric(&agent, "erlkube_agent_beam_subscriptions_total"), 2);
    assert!(visible_is(&agent, &[]), "{}", cluster(&agent));
    assert_eq!(subscribers(&app), "1");
    assert_eq!(
        peer.eval(&format!("net_kernel:connect_node('{a}')"))
            .unwrap(),
        "true"
    );
    wait(
        "the peer shows again, through the new subscriber",
        &agent,
        || visible_is(&agent, &[&b]),
    );
    assert_eq!(metric(&agent, "erlkube_agent_beam_nodes_polls_total"), 0);
}

#[test]
fn the_safety_net_agrees_with_the_events_and_polling_still_works() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let epmd = OtpEpmd::start().expect("start OTP epmd");
    std::env::set_var("ERL_EPMD_PORT", epmd.port().to_string());
    let app = node(&unique_name("net_app"), &epmd);
    let a = app.node_name().to_owned();
    let peer = node(&unique_name("net_peer"), &epmd);
    let b = peer.node_name().to_owned();
    assert_eq!(
        peer.eval(&format!("net_kernel:connect_node('{a}')"))
            .unwrap(),
        "true"
    );

    // Events, with the safety net as often as the engine checks (1 s).
    let agent = start(&a, &[("ERLKUBE_AGENT_NODES_POLL_INTERVAL", "1ms")]);
    wait("two safety-net reads", &agent, || {
        metric(&agent, "erlkube_agent_beam_nodes_polls_total") >= 2
    });
    assert!(visible_is(&agent, &[&b]), "{}", cluster(&agent));
    assert!(cluster(&agent).contains("\"membership\":\"events\""));
    assert_eq!(
        metric(&agent, "erlkube_agent_beam_nodes_corrections_total"),
        0,
        "the events kept the membership right"
    );
    drop(agent);
    assert!(
        wait_until(WAIT, || subscribers(&app) == "0"),
        "the subscriber outlived the agent"
    );
    // The stopped agent drained the node: it left its peer. Not fenced (no
    // GET /drain): the peer can connect again.
    assert!(wait_until(WAIT, || app.eval("nodes()").unwrap() == "[]"));
    assert_eq!(
        peer.eval(&format!("net_kernel:connect_node('{a}')"))
            .unwrap(),
        "true"
    );

    // agent.node_events = false: nodes() polled, nothing left on the node.
    let agent = start(&a, &[("ERLKUBE_AGENT_NODE_EVENTS", "false")]);
    wait("the polled membership", &agent, || {
        cluster(&agent).contains("\"membership\":\"polling\"") && visible_is(&agent, &[&b])
    });
    assert_eq!(subscribers(&app), "0");
    assert_eq!(metric(&agent, "erlkube_agent_beam_subscriptions_total"), 0);
    assert_eq!(
        app.eval(&format!("erlang:disconnect_node('{b}')")).unwrap(),
        "true"
    );
    wait("the poll sees the disconnect", &agent, || {
        visible_is(&agent, &[])
    });
    assert_eq!(metric(&agent, "erlkube_agent_beam_node_events_total"), 0);
}
