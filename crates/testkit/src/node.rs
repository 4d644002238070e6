//! Real `erl` / `elixir` nodes that evaluate Erlang expressions on request.
//!
//! How it works: the node is started with an evaluation loop (`-eval` for
//! `erl`, `-e` for `elixir`) that reads one Erlang expression sequence per
//! line from stdin, evaluates it with `erl_eval`, and prints one result line
//! `@@testkit@@ ok <~0tp of the value>` or `@@testkit@@ error <~0tp of
//! {Class, Reason}>`. Everything else the node prints is kept in a log
//! ([`ErlNode::output`]) for failure messages. Closing stdin halts the node;
//! dropping the [`ErlNode`] kills its process group.
//!
//! Expressions are always Erlang syntax, for Elixir nodes too (call Elixir
//! code as `'Elixir.Enum':sum([1,2])`, or evaluate Elixir source with
//! `'Elixir.Code':eval_string(<<"1 + 1">>)`).
//!
//! [`ErlNode::eval`] blocks the calling thread; from an async test, use a
//! multi-threaded runtime or `spawn_blocking` so an in-process server keeps
//! running meanwhile.

use std::fmt;
use std::io::{self, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::erl_output::{self, Outcome};
use crate::ChildGuard;

const MARKER: &str = "@@testkit@@";

/// The evaluation loop, in Erlang. No double quotes, backslashes or `#{` so
/// it can be embedded in an Elixir string literal unchanged.
const LOOP: &str = "M = '@@testkit@@', \
Loop = fun Loop() -> \
  case io:get_line('') of \
    eof -> halt(0); \
    {error, _} -> halt(0); \
    Line -> \
      R = try \
            {ok, Ts, _} = erl_scan:string(unicode:characters_to_list(Line)), \
            {ok, Es} = erl_parse:parse_exprs(Ts), \
            {value, V, _} = erl_eval:exprs(Es, []), \
            {ok, V} \
          catch C:E -> {error, {C, E}} end, \
      case R of \
        {ok, V2} -> io:format('~n~s ok ~0tp~n', [M, V2]); \
        {error, X} -> io:format('~n~s error ~0tp~n', [M, X]) \
      end, \
      Loop() \
  end \
end, \
io:format('~n~s ready ~0tp~n', [M, node()]), \
Loop().";

/// Which program runs the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `erl -noshell …`
    Erlang,
    /// `elixir --name …` (Elixir's CLI on the same BEAM).
    Elixir,
}

/// How the node is named (which distribution flag is used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameMode {
    /// `-name base@127.0.0.1` (or the given host when the name has an `@`).
    Long,
    /// `-sname base`.
    Short,
    /// No distribution at all (no epmd needed).
    None,
}

/// Why an evaluation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum EvalError {
    /// The expression raised; holds the `~p` text of `{Class, Reason}`.
    Raised(String),
    /// No result within the timeout.
    Timeout,
    /// The node's process is gone; holds its output so far.
    Exited(String),
    /// Writing to the node failed.
    Io(io::Error),
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::Raised(r) => write!(f, "expression raised {r}"),
            EvalError::Timeout => write!(f, "no result before the timeout"),
            EvalError::Exited(log) => write!(f, "node exited; output:\n{log}"),
            EvalError::Io(e) => write!(f, "io error talking to the node: {e}"),
        }
    }
}

impl std::error::Error for EvalError {}

/// Configures and starts an [`ErlNode`].
#[derive(Debug, Clone)]
pub struct ErlNodeBuilder {
    name: String,
    mode: NameMode,
    runtime: Runtime,
    cookie: String,
    epmd_port: Option<u16>,
    epmd_command: Option<String>,
    dist_ports: Option<(u16, u16)>,
    hidden: bool,
    args: Vec<String>,
    env: Vec<(String, String)>,
    start_timeout: Duration,
    eval_timeout: Duration,
}

impl ErlNodeBuilder {
    /// Long names (`-name`) by default; see [`ErlNodeBuilder::name_mode`].
    pub fn name_mode(mut self, mode: NameMode) -> Self {
        self.mode = mode;
        self
    }
    /// `erl` (default) or `elixir`.
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = runtime;
        self
    }
    /// The distribution cookie (default `erlkube_testkit_cookie`).
    pub fn cookie(mut self, cookie: &str) -> Self {
        self.cookie = cookie.to_owned();
        self
    }
    /// The port mapper's port, given to the node as `ERL_EPMD_PORT`.
    /// Required unless the name mode is [`NameMode::None`].
    pub fn epmd_port(mut self, port: u16) -> Self {
        self.epmd_port = Some(port);
        self
    }
    /// Let the node start its port mapper itself, as `erl` does by default,
    /// with `-epmd "CMD"` (e.g. `"/path/to/epmd -daemon"`) instead of
    /// `-start_epmd false`. The daemon it starts detaches and outlives the
    /// node (and its guard): the test must stop it (e.g. `epmd -kill`).
    /// Erlang runtime only.
    pub fn epmd_command(mut self, cmd: &str) -> Self {
        self.epmd_command = Some(cmd.to_owned());
        self
    }
    /// `-kernel inet_dist_listen_min MIN inet_dist_listen_max MAX`.
    pub fn dist_port_range(mut self, min: u16, max: u16) -> Self {
        self.dist_ports = Some((min, max));
        self
    }
    /// `-hidden` (`--hidden` for Elixir).
    pub fn hidden(mut self, hidden: bool) -> Self {
        self.hidden = hidden;
        self
    }
    /// Extra `erl` arguments (passed with `--erl` for Elixir; no spaces
    /// inside one argument there, as Elixir's script splits on spaces).
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }
    /// An environment variable for the node's process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
    /// How long to wait for the node to come up (default 30 s).
    pub fn start_timeout(mut self, t: Duration) -> Self {
        self.start_timeout = t;
        self
    }
    /// Default timeout of [`ErlNode::eval`] (default 30 s).
    pub fn eval_timeout(mut self, t: Duration) -> Self {
        self.eval_timeout = t;
        self
    }

    fn full_name(&self) -> String {
        match self.mode {
            NameMode::Long if !self.name.contains('@') => format!("{}@127.0.0.1", self.name),
            _ => self.name.clone(),
        }
    }

    /// The command line this builder would run (for logs and debugging).
    pub fn command(&self) -> Command {
        let mut erl_args: Vec<String> = Vec::new();
        if self.mode != NameMode::None {
            match &self.epmd_command {
                Some(c) => erl_args.extend(["-epmd".into(), c.clone()]),
                None => erl_args.extend(["-start_epmd".into(), "false".into()]),
            }
        }
        if let Some((min, max)) = self.dist_ports {
            erl_args.extend([
                "-kernel".into(),
                "inet_dist_listen_min".into(),
                min.to_string(),
                "inet_dist_listen_max".into(),
                max.to_string(),
            ]);
        }
        erl_args.extend(self.args.iter().cloned());
        let mut cmd;
        match self.runtime {
            Runtime::Erlang => {
                cmd = Command::new("erl");
                cmd.arg("-noshell");
                match self.mode {
                    NameMode::Long => {
                        cmd.arg("-name").arg(self.full_name());
                    }
                    NameMode::Short => {
                        cmd.arg("-sname").arg(&self.name);
                    }
                    NameMode::None => {}
                }
                if self.mode != NameMode::None {
                    cmd.arg("-setcookie").arg(&self.cookie);
                }
                if self.hidden {
                    cmd.arg("-hidden");
                }
                cmd.args(&erl_args).arg("-eval").arg(LOOP);
            }
            Runtime::Elixir => {
                cmd = Command::new("elixir");
                match self.mode {
                    NameMode::Long => {
                        cmd.arg("--name").arg(self.full_name());
                    }
                    NameMode::Short => {
                        cmd.arg("--sname").arg(&self.name);
                    }
                    NameMode::None => {}
                }
                if self.mode != NameMode::None {
                    cmd.arg("--cookie").arg(&self.cookie);
                }
                if self.hidden {
                    cmd.arg("--hidden");
                }
                if !erl_args.is_empty() {
                    cmd.arg("--erl").arg(erl_args.join(" "));
                }
                let code = format!(
                    "{{:ok, t, _}} = :erl_scan.string(String.to_charlist(\"{LOOP}\")); \
                     {{:ok, es}} = :erl_parse.parse_exprs(t); :erl_eval.exprs(es, [])"
                );
                cmd.arg("-e").arg(code);
            }
        }
        if let Some(p) = self.epmd_port {
            cmd.env("ERL_EPMD_PORT", p.to_string());
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts the node and waits until its evaluation loop is ready.
    pub fn start(self) -> io::Result<ErlNode> {
        if self.mode != NameMode::None && self.epmd_port.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a distributed test node needs epmd_port(..): never the default 4369",
            ));
        }
        let program = match self.runtime {
            Runtime::Erlang => "erl",
            Runtime::Elixir => "elixir",
        };
        let mut guard = ChildGuard::spawn(&mut self.command())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run `{program}`: {e}")))?;
        let child = guard.child_mut();
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let log = erl_output::read_output(
            stdout,
            stderr,
            MARKER,
            move |m| tx.send(m.outcome).is_ok(),
            || {},
        );
        let what = format!("{program} node {}", self.name);
        let ready = erl_output::wait_ready(&rx, self.start_timeout, &log, &what)?;
        let node_name = match ready {
            Outcome::Ready(name) | Outcome::Value(Ok(name) | Err(name)) => {
                name.trim().trim_matches('\'').to_owned()
            }
        };
        Ok(ErlNode {
            node_name,
            cookie: self.cookie,
            guard,
            stdin: Mutex::new(Some(stdin)),
            results: Mutex::new(rx),
            log,
            eval_timeout: self.eval_timeout,
        })
    }
}

/// A running `erl` or `elixir` node (see the module docs for how it
/// evaluates expressions). Killed, with its process group, on drop.
#[derive(Debug)]
pub struct ErlNode {
    node_name: String,
    cookie: String,
    guard: ChildGuard,
    stdin: Mutex<Option<ChildStdin>>,
    results: Mutex<Receiver<Outcome>>,
    log: Arc<Mutex<String>>,
    eval_timeout: Duration,
}

impl ErlNode {
    /// A builder for a node whose name is `name` (for long names, `@127.0.0.1`
    /// is appended when `name` has no host part). Use
    /// [`crate::unique_name`] to make names unique per test run.
    pub fn builder(name: &str) -> ErlNodeBuilder {
        ErlNodeBuilder {
            name: name.to_owned(),
            mode: NameMode::Long,
            runtime: Runtime::Erlang,
            cookie: "erlkube_testkit_cookie".into(),
            epmd_port: None,
            epmd_command: None,
            dist_ports: None,
            hidden: false,
            args: Vec::new(),
            env: Vec::new(),
            start_timeout: Duration::from_secs(30),
            eval_timeout: Duration::from_secs(30),
        }
    }

    /// The node's name as `node()` returns it (`name@host`), or `nonode@nohost`.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The cookie the node was started with.
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    /// The operating-system process id (the BEAM's, as `erl` execs it).
    pub fn pid(&self) -> u32 {
        self.guard.id()
    }

    /// Evaluates an Erlang expression sequence (a trailing `.` is optional;
    /// newlines are allowed) and returns the `~0tp` text of its value, e.g.
    /// `"pong"`, `"[a,b]"`, `"{ok,<<\"x\">>}"`.
    pub fn eval(&self, expr: &str) -> Result<String, EvalError> {
        self.eval_timeout(expr, self.eval_timeout)
    }

    /// [`ErlNode::eval`] with an explicit timeout.
    pub fn eval_timeout(&self, expr: &str, timeout: Duration) -> Result<String, EvalError> {
        let mut line: String = expr
            .trim()
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        if !line.ends_with('.') {
            line.push('.');
        }
        line.push('\n');
        let results = self.results.lock().unwrap();
        // Drop results of earlier evaluations that timed out.
        while results.try_recv().is_ok() {}
        {
            let mut stdin = self.stdin.lock().unwrap();
            let Some(w) = stdin.as_mut() else {
                return Err(EvalError::Exited(self.output()));
            };
            if let Err(e) = w.write_all(line.as_bytes()).and_then(|_| w.flush()) {
                return Err(if e.kind() == io::ErrorKind::BrokenPipe {
                    EvalError::Exited(self.output())
                } else {
                    EvalError::Io(e)
                });
            }
        }
        match results.recv_timeout(timeout) {
            Ok(Outcome::Value(Ok(v))) => Ok(v),
            Ok(Outcome::Value(Err(r)) | Outcome::Ready(r)) => Err(EvalError::Raised(r)),
            Err(RecvTimeoutError::Timeout) => Err(EvalError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(EvalError::Exited(self.output())),
        }
    }

    /// Everything the node printed outside evaluation results (stdout and
    /// stderr), for failure messages.
    pub fn output(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// True while the node's process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.guard.try_wait(), Ok(None))
    }

    /// Stops the node gracefully (closes stdin: the loop calls `halt(0)`) and
    /// waits for it to exit (killing it after 10 s).
    pub fn stop(&mut self) {
        self.stdin.lock().unwrap().take();
        let exited = crate::wait_until(Duration::from_secs(10), || {
            matches!(self.guard.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = self.guard.kill();
        }
    }

    /// Kills the node with SIGKILL (a crash: no goodbye to epmd or peers).
    pub fn kill(&mut self) {
        let _ = self.guard.kill();
    }
}
