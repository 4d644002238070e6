//! The RPC server: SPAWN_REQUEST (`erpc:call`, `rpc:call` of OTP 25+,
//! `spawn/4` of a registered function) and the legacy `rex` protocol
//! (`erl_call`, JInterface, `ei_rpc`, `{From, features_request}`).

use std::sync::Arc;

use erlkube_etf::{Atom, Pid, Reference, Term};
use erlkube_proto::dist::control::{ControlMessage, Mfa};

use crate::dispatch::{FirstStep, ProcessTask, Services};
use crate::rpc::{ExceptionClass, RpcError};
use crate::signals::LinkState;
use crate::Inner;

/// SPAWN_REPLY flag: the link was set up.
const SPAWN_FLAG_LINK: i64 = 1;
/// SPAWN_REPLY flag: the monitor was set up.
const SPAWN_FLAG_MONITOR: i64 = 2;

fn atom_is(t: &Term, s: &str) -> bool {
    t.as_atom().map(Atom::as_str) == Some(s)
}

fn has_opt(options: &Term, name: &str) -> bool {
    options.as_list().is_some_and(|l| {
        l.iter().any(|o| {
            atom_is(o, name)
                || o.as_tuple()
                    .is_some_and(|t| !t.is_empty() && atom_is(&t[0], name))
        })
    })
}

/// The exit reason of a spawned process whose function failed, as the BEAM
/// gives it: `{R, Stack}` for errors, `R` for exits, `{{nocatch, R}, []}`.
fn crash_reason(e: &RpcError) -> Term {
    match e {
        RpcError::Exception {
            class: ExceptionClass::Error,
            reason,
            stack,
        } => Term::tuple(vec![reason.clone(), stack.clone()]),
        RpcError::Exception {
            class: ExceptionClass::Exit,
            reason,
            ..
        } => reason.clone(),
        RpcError::Exception {
            class: ExceptionClass::Throw,
            reason,
            stack,
        } => Term::tuple(vec![
            Term::tuple(vec![Term::atom("nocatch"), reason.clone()]),
            stack.clone(),
        ]),
        other => other.to_erpc_reason(Term::atom("rpc")),
    }
}

/// Returns the control messages to send at once: the SPAWN_REPLY and,
/// when an `erpc` call of a synchronous (or missing) function was run
/// inline, the process's exit (link EXIT, MONITOR_P_EXIT). Otherwise the
/// process's body is returned, for the connection to start once the
/// SPAWN_REPLY is queued; it exits later.
fn spawn_request(
    inner: &Arc<Inner>,
    req_id: Reference,
    from: Pid,
    mfa: Mfa,
    options: Term,
    args: Option<Term>,
) -> (Vec<ControlMessage>, Option<ProcessTask>) {
    let args: Vec<Term> = match args.as_ref().and_then(Term::as_list) {
        Some(a) => a.to_vec(),
        None => {
            return (
                vec![ControlMessage::SpawnReply {
                    req_id,
                    to: from,
                    flags: 0,
                    result: Term::atom("badarg"),
                }],
                None,
            )
        }
    };
    let link = has_opt(&options, "link");
    let monitor = has_opt(&options, "monitor");
    if let Some(reason) = inline_erpc(inner, &mfa, &args) {
        // The process lived and died within this call: it never had a
        // mailbox, so later signals to it find no process, as on a BEAM.
        let id = inner
            .next_pid
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            & 0x0fff_ffff;
        let pid = inner.pid(id);
        let flags =
            if link { SPAWN_FLAG_LINK } else { 0 } | if monitor { SPAWN_FLAG_MONITOR } else { 0 };
        let mut out = vec![ControlMessage::SpawnReply {
            req_id: req_id.clone(),
            to: from.clone(),
            flags,
            result: Term::Pid(pid.clone()),
        }];
        if link {
            out.push(ControlMessage::Exit {
                from: pid.clone(),
                to: from.clone(),
                reason: reason.clone(),
            });
        }
        if monitor {
            out.push(ControlMessage::MonitorPExit {
                from: Term::Pid(pid),
                to: from,
                reference: req_id,
                reason,
            });
        }
        return (out, None);
    }
    let p = inner.spawn_process();
    let pid = p.pid().clone();
    {
        let mut procs = inner.procs.lock().expect("procs");
        let s = procs.state.entry(pid.id).or_default();
        if link {
            s.links.insert(from.clone(), LinkState::Linked);
        }
        if monitor {
            s.monitored_by
                .push((from.clone(), req_id.clone(), Term::Pid(pid.clone())));
        }
    }
    let flags =
        if link { SPAWN_FLAG_LINK } else { 0 } | if monitor { SPAWN_FLAG_MONITOR } else { 0 };
    // What the process runs: the function (looked up once, here) and how
    // its outcome becomes the exit reason.
    enum Job {
        /// `erpc:execute_call(Res, M, F, A)`: `{Res, return, V}` or the
        /// erpc reason.
        Call(Term),
        /// `erpc:execute_cast(M, F, A)`.
        Cast,
        /// `M:F(A...)` itself.
        Plain,
    }
    let (job, target) = match (mfa.module.as_str(), mfa.function.as_str(), args.as_slice()) {
        ("erpc", "execute_call", [res, m, f, a]) => (
            Job::Call(res.clone()),
            match (m.as_atom(), f.as_atom(), a.as_list()) {
                (Some(m), Some(f), Some(a)) => Some((m.clone(), f.clone(), a.to_vec())),
                _ => None,
            },
        ),
        ("erpc", "execute_cast", [m, f, a]) => (
            Job::Cast,
            match (m.as_atom(), f.as_atom(), a.as_list()) {
                (Some(m), Some(f), Some(a)) => Some((m.clone(), f.clone(), a.to_vec())),
                _ => None,
            },
        ),
        _ => (Job::Plain, Some((mfa.module, mfa.function, args))),
    };
    let entry = target
        .as_ref()
        .and_then(|(m, f, a)| inner.lookup_fn(m.as_str(), f.as_str(), a.len()));
    let first_step = match (&target, &entry) {
        (Some((m, f, a)), Some(crate::rpc::Registered::Async(_, allowed))) => {
            FirstStep::HereWhileAllowed {
                allowed: allowed.clone(),
                mfa: (m.clone(), f.clone(), a.len() as u32),
            }
        }
        _ => FirstStep::Here,
    };
    let body = Box::pin(async move {
        let Some((m, f, a)) = target else {
            // apply/3 with bad arguments.
            p.exit(match job {
                Job::Call(res) => Term::tuple(vec![
                    res,
                    Term::atom("error"),
                    Term::tuple(vec![Term::atom("erpc"), Term::atom("badarg")]),
                ]),
                Job::Cast | Job::Plain => Term::atom("badarg"),
            });
            return;
        };
        let outcome = crate::rpc::run_registered(entry, m.as_str(), f.as_str(), a).await;
        p.exit(match (job, outcome) {
            (Job::Call(res), Ok(v)) => Term::tuple(vec![res, Term::atom("return"), v]),
            (Job::Call(res), Err(e)) => e.to_erpc_reason(res),
            (Job::Cast | Job::Plain, Ok(_)) => Term::atom("normal"),
            (Job::Cast | Job::Plain, Err(e)) => crash_reason(&e),
        });
    });
    (
        vec![ControlMessage::SpawnReply {
            req_id,
            to: from,
            flags,
            result: Term::Pid(pid),
        }],
        Some(ProcessTask::new(body, first_step)),
    )
}

/// The exit reason of `erpc:execute_call/4` when it can run right away: a
/// synchronous registered function, or a missing one (`undef`).
fn inline_erpc(inner: &Inner, mfa: &Mfa, args: &[Term]) -> Option<Term> {
    if mfa.module.as_str() != "erpc" || mfa.function.as_str() != "execute_call" {
        return None;
    }
    let [res, m, f, a] = args else { return None };
    let (m, f, a) = (m.as_atom()?, f.as_atom()?, a.as_list()?);
    let outcome = match inner.lookup_fn(m.as_str(), f.as_str(), a.len()) {
        Some(crate::rpc::Registered::Sync(func)) => {
            // A panicking function must not take the connection down.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| func(a.to_vec())))
                .unwrap_or_else(|_| Err(crate::RpcError::error(Term::atom("rust_panic"))))
        }
        Some(crate::rpc::Registered::Async(..)) => return None,
        None => Err(crate::rpc::undef(m.as_str(), f.as_str(), a.to_vec())),
    };
    Some(match outcome {
        Ok(v) => Term::tuple(vec![res.clone(), Term::atom("return"), v]),
        Err(e) => e.to_erpc_reason(res.clone()),
    })
}

/// Serves the registered name `rex` and erpc's spawn requests.
pub(crate) fn register(services: &mut Services) {
    services.register_name("rex", |inner, _peer, _from, msg| rex(inner, msg));
    services.register_spawn(spawn_request);
}

/// Messages to the registered name `rex`.
fn rex(inner: &Arc<Inner>, msg: Term) {
    let Some(t) = msg.as_tuple() else { return };
    match t {
        // {From, features_request}
        [Term::Pid(from), req] if atom_is(req, "features_request") => {
            let reply = Term::tuple(vec![
                Term::atom("features_reply"),
                Term::Atom(inner.name.clone()),
                Term::list(vec![Term::atom("erpc")]),
            ]);
            inner.send_to(from, reply);
        }
        // {From, {call, M, F, A, GL}}: erl_call, JInterface, ei_rpc.
        [Term::Pid(from), call] => {
            if let Some((m, f, a)) = call_of(call) {
                let from = from.clone();
                run_rex(inner, m, f, a, move |inner, result| {
                    inner.send_to(&from, Term::tuple(vec![Term::atom("rex"), result]))
                });
            }
        }
        // {'$gen_call', {Pid, Tag}, {call, M, F, A, GL}}: rpc:call of old.
        [label, from, call] if atom_is(label, "$gen_call") => {
            let (Some([Term::Pid(pid), tag]), Some((m, f, a))) = (from.as_tuple(), call_of(call))
            else {
                return;
            };
            let gfrom = crate::GenFrom {
                pid: pid.clone(),
                tag: tag.clone(),
            };
            run_rex(inner, m, f, a, move |inner, result| {
                crate::gen::reply_from(inner, &gfrom, result)
            });
        }
        // {'$gen_cast', {cast, M, F, A, GL}}
        [label, cast] if atom_is(label, "$gen_cast") => {
            if let Some([c, m, f, a, _]) = cast.as_tuple() {
                if atom_is(c, "cast") {
                    if let (Some(m), Some(f), Some(a)) = (m.as_atom(), f.as_atom(), a.as_list()) {
                        let fut = inner.run_fn(m.as_str(), f.as_str(), a.to_vec());
                        tokio::spawn(async move {
                            let _ = fut.await;
                        });
                    }
                }
            }
        }
        _ => tracing::debug!(msg = %msg, "rex message ignored"),
    }
}

fn call_of(call: &Term) -> Option<(String, String, Vec<Term>)> {
    match call.as_tuple()? {
        [c, m, f, a, _gl] if atom_is(c, "call") => Some((
            m.as_atom()?.as_str().to_owned(),
            f.as_atom()?.as_str().to_owned(),
            a.as_list()?.to_vec(),
        )),
        _ => None,
    }
}

fn run_rex(
    inner: &Arc<Inner>,
    m: String,
    f: String,
    a: Vec<Term>,
    reply: impl FnOnce(&Arc<Inner>, Term) + Send + 'static,
) {
    let fut = inner.run_fn(&m, &f, a);
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        let result = match fut.await {
            Ok(v) => v,
            Err(e) => e.to_rpc_result(),
        };
        if let Some(inner) = weak.upgrade() {
            reply(&inner, result);
        }
    });
}
