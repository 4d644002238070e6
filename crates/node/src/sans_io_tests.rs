//! The runtime's rules driven without sockets: a node's state ([`Inner`],
//! no listener, no task) and a peer that is a sans-IO [`Connection`]
//! joined to ours by an in-memory handshake, as quinn-proto's `Pair`
//! joins two endpoints. A message goes from the peer's core, through our
//! core and [`dispatch_all`], into the signal tables, mailboxes and
//! services; what we answer on the connection comes back decoded. A
//! change to the exit-signal rules or a service fails here in
//! milliseconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use erlkube_etf::{Atom, Pid, Reference, Term};
use erlkube_proto::dist::control::{ControlMessage as C, DistMessage, Mfa};
use erlkube_proto::dist::handshake::{Acceptor, HandshakeConfig, Initiator, Side, Status};
use erlkube_proto::dist::{Connection, ConnectionConfig, Cookie, Established, HandshakeEvent};
use tokio::sync::Notify;

use crate::dispatch::{dispatch_all, Staged};
use crate::signals::Action;
use crate::{Inner, NodeConfig, Process, RpcError};

const ME: &str = "rust@localhost";
const PEER: &str = "beam@localhost";

/// Our node's state and both ends of one connection.
struct Pair {
    inner: Arc<Inner>,
    ours: Connection,
    theirs: Connection,
    staged: Staged,
    source: Arc<Notify>,
    now: Instant,
}

/// Runs both handshake cores against each other until both are done.
fn handshake(init: &mut Initiator, acc: &mut Acceptor, now: Instant) -> (Established, Established) {
    let (mut mine, mut peer) = (None, None);
    for _ in 0..20 {
        while let Some(t) = init.poll_transmit() {
            acc.handle_input(&t, now).expect("acceptor input");
        }
        while let Some(ev) = acc.poll_event() {
            match ev {
                HandshakeEvent::NameReceived(_) => acc.set_status(Status::Ok, now).unwrap(),
                HandshakeEvent::Established(e) => mine = Some(e),
            }
        }
        while let Some(t) = acc.poll_transmit() {
            init.handle_input(&t, now).expect("initiator input");
        }
        while let Some(ev) = init.poll_event() {
            if let HandshakeEvent::Established(e) = ev {
                peer = Some(e);
            }
        }
        if let (Some(m), Some(p)) = (&mine, &peer) {
            return (m.clone(), p.clone());
        }
    }
    panic!("the handshake did not finish");
}

fn pair() -> Pair {
    let cookie = Cookie::new("sans-io");
    let inner = Inner::new(ME, NodeConfig::new(ME, cookie.clone()), 7, 0, None);
    let now = Instant::now();
    let mut init = Initiator::new(HandshakeConfig::new(PEER, cookie, 9), ME, 11, now);
    let mut acc = Acceptor::new(crate::handshake::config(&inner), 22, now);
    let (mine, peer) = handshake(&mut init, &mut acc, now);
    let cfg = ConnectionConfig {
        net_ticktime: Duration::from_secs(60),
        limits: inner.config.limits,
    };
    Pair {
        ours: Connection::new(&mine, cfg, now),
        theirs: Connection::new(&peer, cfg, now),
        inner,
        staged: Staged::default(),
        source: Arc::new(Notify::new()),
        now,
    }
}

impl Pair {
    /// The peer sends one message; our node dispatches it. Returns what
    /// we answered on this connection.
    fn peer_sends(&mut self, control: C, payload: Option<Term>) -> Vec<DistMessage> {
        let (c, p) = DistMessage { control, payload }.encode();
        self.theirs.send(&c, p.as_deref(), self.now);
        while let Some(t) = self.theirs.poll_transmit() {
            self.ours
                .handle_input(&t, self.now)
                .expect("our core takes it");
        }
        dispatch_all(&self.inner, &mut self.ours, &mut self.staged, &self.source)
            .expect("dispatch");
        // Processes that SPAWN_REQUESTs created start after their replies
        // are queued, as on a connection (needs a runtime).
        let spawns = self.staged.take_spawns();
        while let Some(t) = self.ours.poll_transmit() {
            self.theirs
                .handle_input(&t, self.now)
                .expect("their core takes it");
        }
        for task in spawns {
            task.start();
        }
        let mut out = Vec::new();
        while let Some(m) = self.theirs.poll_message() {
            out.push(DistMessage::decode(&m).expect("our answer decodes"));
        }
        out
    }

    /// The public handle of our node (for the APIs that register things).
    fn node(&self) -> crate::Node {
        crate::Node {
            inner: self.inner.clone(),
            _guard: Arc::new(crate::ShutdownGuard(self.inner.shutdown.clone())),
        }
    }

    fn process(&self) -> Process {
        self.inner.spawn_process()
    }

    fn trap(&self, p: &Process) {
        self.inner
            .procs
            .lock()
            .unwrap()
            .state
            .entry(p.pid().id)
            .or_default()
            .trap_exit = true;
    }

    fn is_alive(&self, p: &Process) -> bool {
        self.inner
            .procs
            .lock()
            .unwrap()
            .by_id
            .contains_key(&p.pid().id)
    }

    fn exit_reason(&self, p: &Process) -> Option<Term> {
        self.inner
            .procs
            .lock()
            .unwrap()
            .exit_reasons
            .get(&p.pid().id)
            .cloned()
    }
}

/// A process of the peer node.
fn remote(id: u32) -> Pid {
    Pid {
        node: Atom::new(PEER),
        id,
        serial: 0,
        creation: 9,
    }
}

fn remote_ref(n: u32) -> Reference {
    Reference {
        node: Atom::new(PEER),
        creation: 9,
        ids: vec![n, 0, 0],
    }
}

fn exit_msg(from: &Pid, reason: Term) -> Term {
    Term::tuple(vec![Term::atom("EXIT"), Term::Pid(from.clone()), reason])
}

#[test]
fn net_adm_ping_is_answered_yes_on_the_connection() {
    let mut pair = pair();
    let caller = remote(40);
    let tag = Term::from(remote_ref(1));
    let call = Term::tuple(vec![
        Term::atom("$gen_call"),
        Term::tuple(vec![Term::Pid(caller.clone()), tag.clone()]),
        Term::tuple(vec![Term::atom("is_auth"), Term::atom(PEER)]),
    ]);
    let out = pair.peer_sends(
        C::RegSend {
            from: caller.clone(),
            to_name: Atom::new("net_kernel"),
        },
        Some(call),
    );
    assert_eq!(
        out,
        vec![DistMessage {
            control: C::Send { to: caller },
            payload: Some(Term::tuple(vec![tag, Term::atom("yes")])),
        }]
    );
}

/// A monitor on a name the node serves itself is kept quiet (no
/// `noproc`); on a name nobody holds it fires at once.
#[test]
fn monitors_on_served_names_stay_and_on_missing_names_fire() {
    let pair = pair();
    let watcher = remote(41);
    let served = pair.inner.handle_signal(
        C::MonitorP {
            from: watcher.clone(),
            to: Term::atom("net_kernel"),
            reference: remote_ref(2),
        },
        Some(PEER),
    );
    assert!(served.is_empty());
    let missing = pair.inner.handle_signal(
        C::MonitorP {
            from: watcher.clone(),
            to: Term::atom("nobody"),
            reference: remote_ref(3),
        },
        Some(PEER),
    );
    assert!(matches!(
        missing.as_slice(),
        [Action::Signal(C::MonitorPExit { to, reason, .. })]
            if *to == watcher && *reason == Term::atom("noproc")
    ));
}

/// OTP's exit-signal rules for a linked remote process: a non-trapping
/// process dies of any reason but `normal`; a trapping one gets
/// `{'EXIT', From, Reason}`; EXIT from a process that is not linked is
/// ignored; `exit(P, kill)` kills even a trapping process (`killed`).
#[test]
fn exit_signals_follow_the_link_and_trap_rules() {
    let mut pair = pair();
    let peer = remote(50);
    let plain = pair.process();
    let trapping = pair.process();
    pair.trap(&trapping);
    let calm = pair.process();
    let stranger = pair.process();
    for p in [&plain, &trapping, &calm] {
        let out = pair.peer_sends(
            C::Link {
                from: peer.clone(),
                to: p.pid().clone(),
            },
            None,
        );
        assert!(out.is_empty(), "{out:?}");
    }
    let exit = |to: &Process, reason: &str| C::Exit {
        from: peer.clone(),
        to: to.pid().clone(),
        reason: Term::atom(reason),
    };
    pair.peer_sends(exit(&plain, "boom"), None);
    assert!(!pair.is_alive(&plain));
    assert_eq!(pair.exit_reason(&plain), Some(Term::atom("boom")));

    let mut trapping = trapping;
    pair.peer_sends(exit(&trapping, "boom"), None);
    assert!(pair.is_alive(&trapping));
    assert_eq!(
        trapping.try_recv(),
        Some(exit_msg(&peer, Term::atom("boom")))
    );

    pair.peer_sends(exit(&calm, "normal"), None);
    assert!(pair.is_alive(&calm), "normal does not end a linked process");

    pair.peer_sends(exit(&stranger, "boom"), None);
    assert!(pair.is_alive(&stranger), "EXIT without a link is ignored");

    // The link to `trapping` went with its EXIT; exit/2 with `kill`
    // needs none and is not trappable.
    pair.peer_sends(
        C::Exit2 {
            from: peer.clone(),
            to: trapping.pid().clone(),
            reason: Term::atom("kill"),
        },
        None,
    );
    assert!(!pair.is_alive(&trapping));
    assert_eq!(pair.exit_reason(&trapping), Some(Term::atom("killed")));
}

/// A process that ends sends EXIT to its linked peers and fires the
/// monitors peers hold on it, with its reason.
#[test]
fn an_ending_process_signals_its_links_and_monitors() {
    let mut pair = pair();
    let linked = remote(60);
    let watcher = remote(61);
    let p = pair.process();
    let me = p.pid().clone();
    pair.peer_sends(
        C::Link {
            from: linked.clone(),
            to: me.clone(),
        },
        None,
    );
    pair.peer_sends(
        C::MonitorP {
            from: watcher.clone(),
            to: Term::Pid(me.clone()),
            reference: remote_ref(4),
        },
        None,
    );
    let actions = pair.inner.terminate(me.id, Term::atom("done"));
    let mut exits = 0;
    let mut downs = 0;
    for a in &actions {
        match a {
            Action::Signal(C::Exit { from, to, reason }) => {
                assert_eq!((from, to, reason), (&me, &linked, &Term::atom("done")));
                exits += 1;
            }
            Action::Signal(C::MonitorPExit {
                from,
                to,
                reference,
                reason,
            }) => {
                assert_eq!(from, &Term::Pid(me.clone()));
                assert_eq!((to, reference), (&watcher, &remote_ref(4)));
                assert_eq!(reason, &Term::atom("done"));
                downs += 1;
            }
            _ => panic!("unexpected action"),
        }
    }
    assert_eq!((exits, downs), (1, 1));
    drop(p);
}

/// While our UNLINK_ID waits for its ack, the peer's EXIT is ignored
/// (the unlink protocol of OTP 23+); the ack ends the link.
#[test]
fn exit_during_unlink_is_ignored() {
    let mut pair = pair();
    let peer = remote(70);
    let p = pair.process();
    pair.peer_sends(
        C::Link {
            from: peer.clone(),
            to: p.pid().clone(),
        },
        None,
    );
    pair.inner
        .procs
        .lock()
        .unwrap()
        .state
        .get_mut(&p.pid().id)
        .unwrap()
        .links
        .insert(peer.clone(), crate::signals::LinkState::Unlinking(5));
    pair.peer_sends(
        C::Exit {
            from: peer.clone(),
            to: p.pid().clone(),
            reason: Term::atom("boom"),
        },
        None,
    );
    assert!(pair.is_alive(&p));
    pair.peer_sends(
        C::UnlinkIdAck {
            id: Term::Integer(5),
            from: peer.clone(),
            to: p.pid().clone(),
        },
        None,
    );
    let links = pair.inner.procs.lock().unwrap().state[&p.pid().id]
        .links
        .len();
    assert_eq!(links, 0);
}

/// The connection goes: links to the peer's processes end with
/// `noconnection`, node monitors get `{nodedown, Node}`.
#[test]
fn nodedown_turns_links_into_noconnection() {
    let mut pair = pair();
    let peer = remote(80);
    let mut p = pair.process();
    pair.trap(&p);
    pair.peer_sends(
        C::Link {
            from: peer.clone(),
            to: p.pid().clone(),
        },
        None,
    );
    pair.inner
        .procs
        .lock()
        .unwrap()
        .state
        .get_mut(&p.pid().id)
        .unwrap()
        .node_monitors
        .push(PEER.to_owned());
    pair.inner.node_down(PEER);
    let mut got = vec![p.try_recv(), p.try_recv()];
    got.sort_by_key(|m| format!("{m:?}"));
    let mut want = vec![
        Some(exit_msg(&peer, Term::atom("noconnection"))),
        Some(Term::tuple(vec![Term::atom("nodedown"), Term::atom(PEER)])),
    ];
    want.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(got, want);
}

/// A `$gen_call` from the peer to a Rust gen_server is answered inline,
/// on the connection, before the mailbox sees it.
#[tokio::test]
async fn gen_server_calls_are_answered_inline() {
    let mut pair = pair();
    let node = pair.node();
    let task = node
        .serve_gen_server(
            "echo",
            |req| Term::tuple(vec![Term::atom("echoed"), req]),
            |_| {},
        )
        .expect("name free");
    let caller = remote(90);
    let tag = Term::from(remote_ref(5));
    let out = pair.peer_sends(
        C::RegSend {
            from: caller.clone(),
            to_name: Atom::new("echo"),
        },
        Some(Term::tuple(vec![
            Term::atom("$gen_call"),
            Term::tuple(vec![Term::Pid(caller.clone()), tag.clone()]),
            Term::atom("hi"),
        ])),
    );
    assert_eq!(
        out,
        vec![DistMessage {
            control: C::Send { to: caller },
            payload: Some(Term::tuple(vec![
                tag,
                Term::tuple(vec![Term::atom("echoed"), Term::atom("hi")]),
            ])),
        }]
    );
    task.abort();
}

/// `erpc:call` (SPAWN_REQUEST of `erpc:execute_call/4`) of a registered
/// synchronous function: SPAWN_REPLY with a pid, then the result in the
/// monitor's exit, `{Ref, return, Value}`; an error as
/// `{Ref, error, Reason, Stack}`.
#[test]
fn erpc_calls_of_registered_functions_reply_with_spawn_reply_and_monitor_exit() {
    let mut pair = pair();
    let node = pair.node();
    node.register_fn("math", "double", 1, |args| match args.as_slice() {
        [Term::Integer(n)] => Ok(Term::Integer(n * 2)),
        _ => Err(RpcError::error(Term::atom("badarg"))),
    });
    let caller = remote(100);
    let res = Term::from(remote_ref(6));
    let request = |req: u32, arg: Term| {
        (
            C::SpawnRequest {
                req_id: remote_ref(req),
                from: caller.clone(),
                group_leader: caller.clone(),
                mfa: Mfa {
                    module: Atom::new("erpc"),
                    function: Atom::new("execute_call"),
                    arity: 4,
                },
                options: Term::List(vec![Term::atom("monitor")]),
            },
            Some(Term::List(vec![
                res.clone(),
                Term::atom("math"),
                Term::atom("double"),
                Term::List(vec![arg]),
            ])),
        )
    };
    let (c, p) = request(7, Term::Integer(21));
    let out = pair.peer_sends(c, p);
    let [spawn_reply, exit] = out.as_slice() else {
        panic!("two answers expected: {out:?}");
    };
    let spawned = match &spawn_reply.control {
        C::SpawnReply {
            req_id,
            to,
            result: Term::Pid(pid),
            ..
        } if *req_id == remote_ref(7) && *to == caller => pid.clone(),
        other => panic!("not a SPAWN_REPLY with a pid: {other:?}"),
    };
    match &exit.control {
        C::MonitorPExit {
            from, to, reason, ..
        } => {
            assert_eq!((from, to), (&Term::Pid(spawned), &caller));
            assert_eq!(
                reason,
                &Term::tuple(vec![res.clone(), Term::atom("return"), Term::Integer(42)])
            );
        }
        other => panic!("not a MONITOR_P_EXIT: {other:?}"),
    }
    let (c, p) = request(8, Term::atom("x"));
    let out = pair.peer_sends(c, p);
    match out.last().map(|m| &m.control) {
        Some(C::MonitorPExit { reason, .. }) => {
            let t = reason.as_tuple().expect("a tuple");
            assert_eq!(t[..3], [res, Term::atom("error"), Term::atom("badarg")]);
        }
        other => panic!("not a MONITOR_P_EXIT: {other:?}"),
    }
}

impl Pair {
    /// The peer's `caller` makes a `$gen_call` to `global_name_server`;
    /// returns the reply term, if one came back on the connection.
    fn global_call(&mut self, caller: &Pid, n: u32, req: Term) -> Option<Term> {
        let tag = Term::from(remote_ref(n));
        let call = Term::tuple(vec![
            Term::atom("$gen_call"),
            Term::tuple(vec![Term::Pid(caller.clone()), tag.clone()]),
            req,
        ]);
        let out = self.peer_sends(
            C::RegSend {
                from: caller.clone(),
                to_name: Atom::new("global_name_server"),
            },
            Some(call),
        );
        out.into_iter().find_map(|m| match (m.control, m.payload) {
            (C::Send { to }, Some(p)) if to == *caller => match p.as_tuple() {
                Some([t, reply]) if *t == tag => Some(reply.clone()),
                _ => None,
            },
            _ => None,
        })
    }

    fn global_cast(&mut self, req: Term) {
        let out = self.peer_sends(
            C::RegSend {
                from: remote(1),
                to_name: Atom::new("global_name_server"),
            },
            Some(Term::tuple(vec![Term::atom("$gen_cast"), req])),
        );
        assert!(
            out.is_empty(),
            "casts are answered with casts, not on the call path"
        );
    }
}

fn lock_id(resource: &str, requester: &Pid) -> Term {
    Term::tuple(vec![Term::atom(resource), Term::Pid(requester.clone())])
}

fn req(op: &str, args: Vec<Term>) -> Term {
    let mut v = vec![Term::atom(op)];
    v.extend(args);
    Term::tuple(v)
}

/// `global`'s locks as `global_name_server` grants them: one requester
/// per resource, shared by its pids, released by `del_lock`.
#[test]
fn global_locks_admit_one_requester_at_a_time() {
    let mut pair = pair();
    let (a, b) = (remote(50), remote(51));
    let t = Term::atom("true");
    assert_eq!(
        pair.global_call(&a, 1, req("set_lock", vec![lock_id("res", &a)])),
        Some(t.clone())
    );
    // the same lock id from another pid joins it; another id is refused
    assert_eq!(
        pair.global_call(&b, 2, req("set_lock", vec![lock_id("res", &a)])),
        Some(t.clone())
    );
    assert_eq!(
        pair.global_call(&b, 3, req("set_lock", vec![lock_id("res", &b)])),
        Some(Term::atom("false"))
    );
    pair.global_call(&a, 4, req("del_lock", vec![lock_id("res", &a)]));
    assert_eq!(
        pair.global_call(&b, 5, req("set_lock", vec![lock_id("res", &b)])),
        Some(Term::atom("false")),
        "b still holds the lock under a's id"
    );
    pair.global_call(&b, 6, req("del_lock", vec![lock_id("res", &a)]));
    assert_eq!(
        pair.global_call(&b, 7, req("set_lock", vec![lock_id("res", &b)])),
        Some(t)
    );
}

/// A register is kept only from a caller holding the `global` lock here
/// (OTP's `lock_still_set/3`); unregister removes it.
#[test]
fn global_register_needs_the_global_lock() {
    let mut pair = pair();
    let node = pair.node();
    let (registrar, target) = (remote(60), remote(61));
    let method = Term::atom("m");
    let register = req(
        "register",
        vec![Term::atom("n"), Term::Pid(target.clone()), method.clone()],
    );
    assert_eq!(
        pair.global_call(&registrar, 1, register.clone()),
        Some(Term::atom("yes"))
    );
    assert_eq!(
        node.global_whereis(&Term::atom("n")),
        None,
        "no lock, no name"
    );
    assert_eq!(
        pair.global_call(
            &registrar,
            2,
            req("set_lock", vec![lock_id("global", &registrar)])
        ),
        Some(Term::atom("true"))
    );
    pair.global_call(&registrar, 3, register);
    assert_eq!(node.global_whereis(&Term::atom("n")), Some(target));
    assert_eq!(
        pair.global_call(&registrar, 4, req("unregister", vec![Term::atom("n")])),
        Some(Term::atom("ok"))
    );
    assert_eq!(node.global_whereis(&Term::atom("n")), None);
}

/// The connect protocol merges names: the peer's names we lack are
/// inserted on its `exchange`, its `resolved` and `new_nodes` operations
/// applied; a cast with a stale tag is ignored.
#[test]
fn global_exchange_and_resolved_merge_names() {
    let mut pair = pair();
    let node = pair.node();
    let his_tag = Term::from(1234i64);
    pair.global_cast(req(
        "init_connect",
        vec![
            Term::tuple(vec![Term::from(8i64), his_tag]),
            Term::atom(PEER),
            Term::tuple(vec![
                Term::atom("locker"),
                Term::atom("x"),
                Term::nil(),
                Term::Pid(remote(2)),
            ]),
        ],
    ));
    let my_tag = pair
        .inner
        .global
        .lock()
        .unwrap()
        .peer_tags(PEER)
        .expect("tags kept")
        .0;
    let entry = |name: &str, pid: &Pid| {
        Term::tuple(vec![
            Term::atom(name),
            Term::Pid(pid.clone()),
            Term::atom("m"),
        ])
    };
    // a stale tag changes nothing
    pair.global_cast(req(
        "exchange",
        vec![
            Term::atom(PEER),
            Term::list(vec![entry("stale", &remote(70))]),
            Term::nil(),
            Term::from(1i64),
        ],
    ));
    assert_eq!(node.global_whereis(&Term::atom("stale")), None);
    pair.global_cast(req(
        "exchange",
        vec![
            Term::atom(PEER),
            Term::list(vec![entry("theirs", &remote(71))]),
            Term::nil(),
            my_tag.clone(),
        ],
    ));
    assert_eq!(node.global_whereis(&Term::atom("theirs")), Some(remote(71)));
    let insert = Term::tuple(vec![
        Term::atom("insert"),
        entry("resolved_in", &remote(72)),
    ]);
    let delete = Term::tuple(vec![Term::atom("delete"), Term::atom("theirs")]);
    pair.global_cast(req(
        "resolved",
        vec![
            Term::atom(PEER),
            Term::list(vec![insert, delete]),
            Term::nil(),
            Term::atom("unused"),
            Term::nil(),
            my_tag,
        ],
    ));
    assert_eq!(
        node.global_whereis(&Term::atom("resolved_in")),
        Some(remote(72))
    );
    assert_eq!(node.global_whereis(&Term::atom("theirs")), None);
}

/// A malformed global call gets no answer (the connection is closed,
/// logged) and changes nothing.
#[test]
fn a_malformed_global_call_is_not_answered() {
    let mut pair = pair();
    let a = remote(80);
    assert_eq!(
        pair.global_call(&a, 1, req("set_lock", vec![Term::atom("not_an_id")])),
        None
    );
    assert_eq!(
        pair.global_call(&a, 2, req("register", vec![Term::atom("n")])),
        None
    );
    assert!(pair.node().global_names().is_empty());
}
