//! The agent learns of its node's registration from erlkube's port mapper
//! (its WATCH request) the moment it happens; with OTP's epmd, which does
//! not serve WATCH, it keeps polling. Real `erl` nodes.
//!
//! Both tests push `agent.wait_interval` to a minute: after its first
//! look (the node absent) the agent would not look again within a test's
//! wait unless something told it to.
//!
//! Tests run one at a time (a lock): the agent's node reads the port
//! mapper's port from `ERL_EPMD_PORT` in this process's environment.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::RunningAgent;
use erlkube_testkit::{unique_name, wait_until, ErlNode, OtpEpmd};

mod common;

static SERIAL: Mutex<()> = Mutex::new(());

const COOKIE: &str = "agent_epmd_watch_cookie";
/// Liveness bound of each wait (not a performance assertion).
const WAIT: Duration = Duration::from_secs(30);

fn agent(node: &str, epmd_port: u16, register_poll: &str) -> RunningAgent {
    std::env::set_var("ERL_EPMD_PORT", epmd_port.to_string());
    let port = epmd_port.to_string();
    RunningAgent::start(common::local_config(
        node,
        COOKIE,
        &[
            ("ERL_EPMD_PORT", port.as_str()),
            ("ERLKUBE_AGENT_WAIT_INTERVAL", "60s"),
            ("ERLKUBE_AGENT_REGISTER_POLL_INTERVAL", register_poll),
            ("ERLKUBE_AGENT_DRAIN_GRACE", "0s"),
        ],
    ))
}

fn metric(agent: &RunningAgent, name: &str) -> u64 {
    agent
        .metric(name)
        .unwrap_or_else(|| panic!("no {name} in\n{}", agent.get("/metrics")))
}

fn wait(what: &str, agent: &RunningAgent, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(WAIT, cond),
        "{what}; /cluster: {}",
        agent.get("/cluster")
    );
}

/// erlkube's port mapper, in-process on `rt`: its port and its counters.
fn erlkube_epmd(rt: &tokio::runtime::Runtime) -> (u16, Arc<erlkube_epmd::metrics::Metrics>) {
    let listener = rt
        .block_on(async { erlkube_epmd::server::bind_one("127.0.0.1:0".parse().unwrap()) })
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = erlkube_epmd::Config::default();
    let metrics = config.metrics.clone();
    rt.spawn(erlkube_epmd::run(
        vec![listener],
        config,
        std::future::pending(),
    ));
    (port, metrics)
}

fn start_node(name: &str, epmd_port: u16) -> ErlNode {
    ErlNode::builder(name.split('@').next().unwrap())
        .epmd_port(epmd_port)
        .cookie(COOKIE)
        .start()
        .expect("start erl (is Erlang/OTP installed?)")
}

#[test]
fn erlkube_epmd_tells_the_agent_of_the_registration() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // erlkube's port mapper, in-process, on its own runtime.
    let epmd_rt = tokio::runtime::Runtime::new().unwrap();
    let (port, _) = erlkube_epmd(&epmd_rt);
    let name = format!("{}@127.0.0.1", unique_name("watch_app"));
    // The poll step is a minute too: only the port mapper's word can make
    // the agent look again in time.
    let agent = agent(&name, port, "60s");
    wait("the agent follows the port mapper", &agent, || {
        metric(&agent, "erlkube_agent_epmd_watch") == 1
    });
    assert_eq!(metric(&agent, "erlkube_agent_beam_up"), 0);
    let node = start_node(&name, port);
    assert_eq!(node.node_name(), name);
    wait("the node is up for the agent", &agent, || {
        metric(&agent, "erlkube_agent_beam_up") == 1
    });
    assert_eq!(
        metric(&agent, "erlkube_agent_beam_registrations_seen_total"),
        1
    );
}

#[test]
fn while_erlkube_epmd_tells_the_agent_it_does_not_poll() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let epmd_rt = tokio::runtime::Runtime::new().unwrap();
    let (port, metrics) = erlkube_epmd(&epmd_rt);
    let name = format!("{}@127.0.0.1", unique_name("quiet_app"));
    // The default step: a polling agent would ask every 10 ms.
    let agent = agent(&name, port, "10ms");
    wait("the agent follows the port mapper", &agent, || {
        metric(&agent, "erlkube_agent_epmd_watch") == 1
    });
    // The test's own watch marks the registration.
    let client = erlkube_epmd::Client::new("127.0.0.1", port);
    let mut w = epmd_rt.block_on(client.watch()).expect("watch");
    let before = metrics.requests("port_please2");
    let node = start_node(&name, port);
    let alive = name.split('@').next().unwrap();
    epmd_rt.block_on(async {
        tokio::time::timeout(WAIT, async {
            while !w
                .next()
                .await
                .expect("watch answer")
                .nodes
                .iter()
                .any(|e| e.name == alive)
            {}
        })
        .await
        .expect("the node registered")
    });
    // From the agent's watch until the registration, the node booted
    // (hundreds of milliseconds: dozens of looks at 10 ms); at most the
    // agent's own dial, just after the registration, may have asked.
    let asked = metrics.requests("port_please2") - before;
    assert!(
        asked <= 1,
        "{asked} PORT_PLEASE2 requests while the node booted"
    );
    wait("the node is up for the agent", &agent, || {
        metric(&agent, "erlkube_agent_beam_up") == 1
    });
    assert_eq!(node.node_name(), name);
}

#[test]
fn with_otp_epmd_the_agent_polls_its_registration() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let epmd = OtpEpmd::start().expect("start OTP epmd");
    let name = format!("{}@127.0.0.1", unique_name("poll_app"));
    let agent = agent(&name, epmd.port(), "20ms");
    let node = start_node(&name, epmd.port());
    assert_eq!(node.node_name(), name);
    wait("the node is up for the agent", &agent, || {
        metric(&agent, "erlkube_agent_beam_up") == 1
    });
    assert_eq!(
        metric(&agent, "erlkube_agent_beam_registrations_seen_total"),
        1
    );
    // OTP's epmd closed the WATCH request: the agent polled.
    assert_eq!(metric(&agent, "erlkube_agent_epmd_watch"), 0);
}
