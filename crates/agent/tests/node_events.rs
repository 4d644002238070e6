//! The agent learns its BEAM node's membership from the node's
//! nodeup/nodedown events (real `erl` nodes, OTP's epmd on a free port).
//!
//! The safety-net re-read of `nodes()` is set to 10 minutes here, so a
//! change seen within a test's wait can only have come from an event; the
//! `beam_nodes_polls_total` metric staying 0 says so too.
//!
//! Tests run one at a time (a lock): the agent's node reads the port
//! mapper's port from `ERL_EPMD_PORT` in this process's environment.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use erlkube_agent::{Agent, AgentConfig};
use erlkube_testkit::{unique_name, wait_until, ErlNode, OtpEpmd};

static SERIAL: Mutex<()> = Mutex::new(());

const COOKIE: &str = "agent_node_events_cookie";
/// Liveness bound of each wait (not a performance assertion).
const WAIT: Duration = Duration::from_secs(30);

mod common;

/// [`common::local_config`] with the safety-net poll pushed out to 10 min,
/// so every change a test sees comes from an event.
fn config(node: &str, overrides: &[(&str, &str)]) -> AgentConfig {
    let mut all = vec![("ERLKUBE_AGENT_NODES_POLL_INTERVAL", "10m")];
    all.extend_from_slice(overrides);
    common::local_config(node, COOKIE, &all)
}

/// An agent running on its own runtime; stopped on drop.
struct RunningAgent {
    http: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    rt: tokio::runtime::Runtime,
}

impl RunningAgent {
    fn start(node: &str) -> RunningAgent {
        RunningAgent::start_with(node, &[])
    }

    fn start_with(node: &str, overrides: &[(&str, &str)]) -> RunningAgent {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let agent = rt
            .block_on(Agent::start(config(node, overrides)))
            .expect("agent");
        let http = agent.http_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(async move {
            agent
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("agent run");
        });
        RunningAgent {
            http,
            stop: Some(stop),
            task: Some(task),
            rt,
        }
    }

    fn get(&self, path: &str) -> String {
        common::http_body(self.http, path)
    }

    fn cluster(&self) -> String {
        self.get("/cluster")
    }

    /// A counter or gauge from `/metrics`.
    fn metric(&self, name: &str) -> u64 {
        let text = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    fn visible_is(&self, nodes: &[&str]) -> bool {
        let list: Vec<String> = nodes.iter().map(|n| format!("\"{n}\"")).collect();
        self.cluster()
            .contains(&format!("\"visible\":[{}]", list.join(",")))
    }

    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), t).await });
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.stop();
    }
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
        agent.cluster()
    );
}

#[test]
fn peers_connecting_and_leaving_show_up_through_events() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let epmd = OtpEpmd::start().expect("start OTP epmd");
    std::env::set_var("ERL_EPMD_PORT", epmd.port().to_string());
    let app = node(&unique_name("events_app"), &epmd);
    let a = app.node_name().to_owned();
    let mut agent = RunningAgent::start(&a);
    wait("the agent follows the node's events", &agent, || {
        agent.cluster().contains("\"membership\":\"events\"")
    });
    assert!(agent.visible_is(&[]), "{}", agent.cluster());
    assert_eq!(agent.metric("erlkube_agent_beam_subscriptions_total"), 1);
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
        agent.visible_is(&[&b])
    });
    // The agent's node disconnects it.
    assert_eq!(
        app.eval(&format!("erlang:disconnect_node('{b}')")).unwrap(),
        "true"
    );
    wait("the nodedown shows in /cluster", &agent, || {
        agent.visible_is(&[])
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
        agent.visible_is(&[&b])
    });
    peer.kill();
    wait("a dead peer's nodedown shows", &agent, || {
        agent.visible_is(&[])
    });
    assert!(agent.metric("erlkube_agent_beam_node_events_total") >= 4);
    assert_eq!(
        agent.metric("erlkube_agent_beam_nodes_polls_total"),
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
        agent.metric("erlkube_agent_beam_subscriptions_total") == 2
            && agent.cluster().contains("\"membership\":\"events\"")
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
        agent.visible_is(&[&c])
    });
    assert_eq!(agent.metric("erlkube_agent_beam_nodes_polls_total"), 0);

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
    let agent = RunningAgent::start(&a);
    wait("the agent follows the node's events", &agent, || {
        agent.cluster().contains("\"membership\":\"events\"")
    });
    let peer = node(&unique_name("restart_peer"), &epmd);
    let b = peer.node_name().to_owned();
    assert_eq!(
        peer.eval(&format!("net_kernel:connect_node('{a}')"))
            .unwrap(),
        "true"
    );
    wait("the peer shows", &agent, || agent.visible_is(&[&b]));

    app.kill();
    wait("the agent sees the node down", &agent, || {
        agent.cluster().contains("\"beam_up\":false")
    });
    assert!(agent.visible_is(&[]), "{}", agent.cluster());
    let app = node(&name, &epmd);
    wait("the restarted node is followed by events", &agent, || {
        agent.metric("erlkube_agent_beam_starts_total") == 2
            && agent.cluster().contains("\"membership\":\"events\"")
    });
    assert_eq!(agent.metric("erlkube_agent_beam_subscriptions_total"), 2);
    assert!(agent.visible_is(&[]), "{}", agent.cluster());
    assert_eq!(subscribers(&app), "1");
    assert_eq!(
        peer.eval(&format!("net_kernel:connect_node('{a}')"))
            .unwrap(),
        "true"
    );
    wait(
        "the peer shows again, through the new subscriber",
        &agent,
        || agent.visible_is(&[&b]),
    );
    assert_eq!(agent.metric("erlkube_agent_beam_nodes_polls_total"), 0);
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
    let agent = RunningAgent::start_with(&a, &[("ERLKUBE_AGENT_NODES_POLL_INTERVAL", "1ms")]);
    wait("two safety-net reads", &agent, || {
        agent.metric("erlkube_agent_beam_nodes_polls_total") >= 2
    });
    assert!(agent.visible_is(&[&b]), "{}", agent.cluster());
    assert!(agent.cluster().contains("\"membership\":\"events\""));
    assert_eq!(
        agent.metric("erlkube_agent_beam_nodes_corrections_total"),
        0,
        "the events kept the membership right"
    );
    drop(agent);
    assert!(
        wait_until(WAIT, || subscribers(&app) == "0"),
        "the subscriber outlived the agent"
    );

    // agent.node_events = false: nodes() polled, nothing left on the node.
    let agent = RunningAgent::start_with(&a, &[("ERLKUBE_AGENT_NODE_EVENTS", "false")]);
    wait("the polled membership", &agent, || {
        agent.cluster().contains("\"membership\":\"polling\"") && agent.visible_is(&[&b])
    });
    assert_eq!(subscribers(&app), "0");
    assert_eq!(agent.metric("erlkube_agent_beam_subscriptions_total"), 0);
    assert_eq!(
        app.eval(&format!("erlang:disconnect_node('{b}')")).unwrap(),
        "true"
    );
    wait("the poll sees the disconnect", &agent, || {
        agent.visible_is(&[])
    });
    assert_eq!(agent.metric("erlkube_agent_beam_node_events_total"), 0);
}
