//! A real `erl` node inside a pod, with an evaluation channel: each stdin
//! line `ID EXPR` is evaluated in a fresh Erlang process (so evaluations
//! run concurrently) and answered with one stdout line
//! `@@testbed@@ ID ok <~0tp of the value>` or `@@testbed@@ ID error <~0tp>`.

use std::collections::HashMap;
use std::io::{self, Write};
use std::process::{ChildStdin, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use erlkube_testkit::erl_output::{self, Outcome};
use tokio::sync::oneshot;

use crate::process::Guard;

const MARKER: &str = "@@testbed@@";

const LOOP: &str = "M = '@@testbed@@', \
Eval = fun(S) -> {ok, Ts, _} = erl_scan:string(S), {ok, Es} = erl_parse:parse_exprs(Ts), \
  {value, V, _} = erl_eval:exprs(Es, []), V end, \
Loop = fun Loop() -> \
  case io:get_line('') of \
    eof -> halt(0); \
    {error, _} -> halt(0); \
    Line -> \
      [IdS, Expr] = string:split(string:trim(unicode:characters_to_list(Line)), \" \"), \
      Id = list_to_integer(IdS), \
      spawn(fun() -> \
        R = try {ok, Eval(Expr)} catch C:E -> {error, {C, E}} end, \
        case R of \
          {ok, V} -> io:format(\"~n~s ~b ok ~0tp~n\", [M, Id, V]); \
          {error, X} -> io:format(\"~n~s ~b error ~0tp~n\", [M, Id, X]) \
        end end), \
      Loop() \
  end \
end, \
io:format(\"~n~s 0 ready ~0tp~n\", [M, node()]), \
Loop().";

/// Why an evaluation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalError {
    /// The expression raised (`~p` of `{Class, Reason}`).
    Raised(String),
    /// The node is gone.
    Exited,
    /// No answer in time.
    Timeout,
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalError::Raised(r) => write!(f, "raised {r}"),
            EvalError::Exited => f.write_str("node exited"),
            EvalError::Timeout => f.write_str("timed out"),
        }
    }
}

impl std::error::Error for EvalError {}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<String, EvalError>>>>>;

/// How to start a pod's node.
#[derive(Clone, Debug)]
pub struct ErlSpec {
    /// Full node name (`base@host`).
    pub name: String,
    /// Cookie.
    pub cookie: String,
    /// The epmd port in the pod.
    pub epmd_port: u16,
    /// The distribution listen port.
    pub dist_port: u16,
    /// `net_ticktime` in seconds.
    pub net_ticktime: u32,
    /// An inetrc file (DNS resolution inside the node), if any.
    pub inetrc: Option<std::path::PathBuf>,
    /// IPv6 distribution (`-proto_dist inet6_tcp`).
    pub ipv6: bool,
}

/// How to run `erl` beyond the [`ErlSpec`]: another OTP in a chroot, extra
/// arguments.
#[derive(Clone, Debug, Default)]
pub struct ErlRuntime {
    /// Root of a chroot holding another OTP (e.g. testkit's OTP 27 rootfs):
    /// `erl` runs as `chroot ROOT env … erl` inside the pod's namespace (a
    /// chroot keeps the network namespace, so the pod's epmd serves it).
    /// `None`: the host's `erl`.
    pub root: Option<std::path::PathBuf>,
    /// Extra `erl` arguments (e.g. `-kernel prevent_overlapping_partitions
    /// false`).
    pub args: Vec<String>,
    /// `-connect_all true`: `global` runs its connect protocol with every
    /// peer and connects to the nodes its peers know (a release's default).
    /// False (the bed's default): only the engine under test connects.
    pub connect_all: bool,
}

/// A running node (killed with its process group on drop).
pub struct PodErl {
    name: String,
    guard: Mutex<Guard>,
    stdin: Mutex<Option<ChildStdin>>,
    pending: Pending,
    next: AtomicU64,
    log: Arc<Mutex<String>>,
}

impl std::fmt::Debug for PodErl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodErl").field("name", &self.name).finish()
    }
}

impl PodErl {
    /// Starts `erl` inside network namespace `ns` and waits until its loop
    /// is ready.
    pub fn start(ns: &str, spec: &ErlSpec) -> io::Result<PodErl> {
        PodErl::start_with(ns, spec, &ErlRuntime::default())
    }

    /// [`PodErl::start`] with another OTP or extra arguments.
    pub fn start_with(ns: &str, spec: &ErlSpec, runtime: &ErlRuntime) -> io::Result<PodErl> {
        let mut cmd = match &runtime.root {
            None => crate::net::in_netns(ns, "erl"),
            Some(root) => {
                let mut c = crate::net::in_netns(ns, "chroot");
                // The host's HOME need not exist in the chroot; the cookie
                // comes from -setcookie.
                c.arg(root).args(["env", "HOME=/tmp", "erl"]);
                c
            }
        };
        cmd.args(&runtime.args);
        cmd.env("ERL_EPMD_PORT", spec.epmd_port.to_string())
            .args(["-noshell", "-name", &spec.name, "-setcookie", &spec.cookie])
            .args(["-start_epmd", "false", "-connect_all"])
            .arg(if runtime.connect_all { "true" } else { "false" })
            .args(["+S", "1:1", "+A", "1", "+sbwt", "none"])
            .args(["-kernel", "net_ticktime", &spec.net_ticktime.to_string()])
            .args([
                "-kernel",
                "inet_dist_listen_min",
                &spec.dist_port.to_string(),
            ])
            .args([
                "-kernel",
                "inet_dist_listen_max",
                &spec.dist_port.to_string(),
            ])
            .args(["-kernel", "logger_level", "warning"]);
        if spec.ipv6 {
            cmd.args(["-proto_dist", "inet6_tcp"]);
        }
        if let Some(p) = &spec.inetrc {
            cmd.args(["-kernel", "inetrc", &format!("\"{}\"", p.display())]);
        }
        cmd.args(["-eval", LOOP])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut guard = Guard::spawn(&mut cmd)?;
        let child = guard.child_mut();
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let pending: Pending = Arc::default();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let log = {
            let (answers, gone) = (pending.clone(), pending.clone());
            erl_output::read_output(
                stdout,
                stderr,
                MARKER,
                move |m| {
                    let r = match m.outcome {
                        Outcome::Ready(_) => {
                            let _ = ready_tx.send(());
                            return true;
                        }
                        Outcome::Value(v) => v.map_err(EvalError::Raised),
                    };
                    let waiter = m.id.and_then(|id| answers.lock().unwrap().remove(&id));
                    if let Some(tx) = waiter {
                        let _ = tx.send(r);
                    }
                    true
                },
                // The node is gone: fail every waiter.
                move || gone.lock().unwrap().clear(),
            )
        };
        let what = format!("erl {} in pod {ns}", spec.name);
        erl_output::wait_ready(&ready_rx, Duration::from_secs(60), &log, &what)?;
        Ok(PodErl {
            name: spec.name.clone(),
            guard: Mutex::new(guard),
            stdin: Mutex::new(Some(stdin)),
            pending,
            next: AtomicU64::new(1),
            log,
        })
    }

    /// The node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Output outside evaluation results (for failure messages).
    pub fn output(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Evaluates an Erlang expression sequence (no trailing `.`, one line).
    pub async fn eval(&self, expr: &str, timeout: Duration) -> Result<String, EvalError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let line = format!(
            "{id} {}.\n",
            expr.trim().trim_end_matches('.').replace('\n', " ")
        );
        {
            let mut stdin = self.stdin.lock().unwrap();
            let ok = match stdin.as_mut() {
                Some(w) => w.write_all(line.as_bytes()).and_then(|_| w.flush()).is_ok(),
                None => false,
            };
            if !ok {
                self.pending.lock().unwrap().remove(&id);
                return Err(EvalError::Exited);
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(EvalError::Exited),
            Err(_) => {
                self.pending.lock().unwrap().remove(&id);
                Err(EvalError::Timeout)
            }
        }
    }

    /// `nodes()` as names.
    pub async fn nodes(&self) -> Result<Vec<String>, EvalError> {
        let v = self.eval("nodes()", Duration::from_secs(10)).await?;
        Ok(parse_atom_list(&v))
    }

    /// True while the process runs.
    pub fn is_running(&self) -> bool {
        self.guard.lock().unwrap().is_running()
    }

    /// Sends `signal` to the node's process (SIGTERM: a BEAM stops as by
    /// `init:stop()`, as when the kubelet stops its container).
    pub fn signal(&self, signal: i32) {
        self.guard.lock().unwrap().signal(signal);
    }

    /// SIGKILL (a crash: no goodbyes).
    pub fn kill(&self) {
        self.guard.lock().unwrap().kill();
    }
}

/// Parses `['a@h','b@h']` (the `~0tp` of a list of atoms).
pub fn parse_atom_list(text: &str) -> Vec<String> {
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split(',')
        .map(|s| s.trim().trim_matches('\'').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}
