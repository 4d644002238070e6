//! Shared by the pg, global and PubSub interop tests: a BEAM node of OTP 25
//! (the host's `erl`) or OTP 27 (the trixie chroot), started with `-eval`
//! and driven from the Rust node over RPC (`erl_scan`, `erl_parse`,
//! `erl_eval`), so one test body runs against both releases.

#![allow(dead_code)]

use std::time::Duration;

use erlkube_etf::{Pid, Term};
use erlkube_node::{Cookie, Node, NodeConfig};
use erlkube_testkit::{otp27, unique_name};
use tokio::process::{Child, Command};

/// Which OTP release a BEAM peer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Otp {
    /// The host's `erl`.
    V25,
    /// `erl` in the Debian trixie chroot.
    V27,
}

/// A BEAM node killed on drop.
pub struct Beam {
    pub name: String,
    child: Child,
}

impl Beam {
    /// Starts `erl -name NAME -setcookie COOKIE -eval EVAL` (plus `args`).
    pub async fn start(otp: Otp, epmd_port: u16, cookie: &str, eval: &str, args: &[&str]) -> Beam {
        let name = format!(
            "{}@127.0.0.1",
            unique_name(if otp == Otp::V25 { "b25" } else { "b27" })
        );
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-eval", eval]);
        let mut cmd = match otp {
            Otp::V25 => {
                let mut c = std::process::Command::new("erl");
                c.args([
                    "-noshell",
                    "-name",
                    &name,
                    "-setcookie",
                    cookie,
                    "-start_epmd",
                    "false",
                ])
                .args(&all)
                .env("ERL_EPMD_PORT", epmd_port.to_string())
                .stdin(std::process::Stdio::null());
                c
            }
            Otp::V27 => {
                let root = tokio::task::spawn_blocking(otp27::ensure_rootfs)
                    .await
                    .unwrap();
                otp27::erl_command(&root, epmd_port, &name, cookie, &all)
            }
        };
        cmd.stdout(std::process::Stdio::null());
        let mut cmd = Command::from(cmd);
        cmd.kill_on_drop(true);
        let child = cmd.spawn().expect("erl must be installed");
        Beam { name, child }
    }

    /// Starts `elixir --name NAME --cookie COOKIE` (the host's Elixir on
    /// OTP 25), idle until driven over RPC.
    pub async fn start_elixir(epmd_port: u16, cookie: &str) -> Beam {
        let name = format!("{}@127.0.0.1", unique_name("ex"));
        let mut cmd = Command::new("elixir");
        cmd.args([
            "--name",
            &name,
            "--cookie",
            cookie,
            "--erl",
            "-start_epmd false",
        ])
        .args(["-e", "Process.sleep(:infinity)"])
        .env("ERL_EPMD_PORT", epmd_port.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
        let child = cmd.spawn().expect("elixir must be installed");
        Beam { name, child }
    }

    /// Kills the BEAM node (as a crash would).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A Rust node named `rust…@127.0.0.1` on the given epmd.
pub async fn rust_node(epmd_port: u16, cookie: &str, scopes: &[&str]) -> Node {
    let mut c = NodeConfig::new(
        format!("{}@127.0.0.1", unique_name("rust")),
        Cookie::new(cookie),
    );
    c.epmd_port = epmd_port;
    c.setup_timeout = Duration::from_secs(5);
    c.pg_scopes = scopes.iter().map(|s| s.to_string()).collect();
    Node::start(c).await.expect("rust node starts")
}

/// Connects `rust` to `beam`, retrying while the BEAM node starts.
pub async fn connect(rust: &Node, beam: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match rust.connect(beam).await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("cannot reach {beam}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn charlist(s: &str) -> Term {
    Term::List(s.chars().map(|c| Term::Integer(c as i64)).collect())
}

/// Evaluates Erlang expressions `expr` on `beam` and returns the value.
pub async fn eval(rust: &Node, beam: &str, expr: &str) -> Term {
    let t = Duration::from_secs(30);
    let scanned = rust
        .rpc_call(beam, "erl_scan", "string", vec![charlist(expr)], t)
        .await
        .unwrap_or_else(|e| panic!("erl_scan {expr}: {e}"));
    let toks = match scanned.as_tuple() {
        Some([_ok, toks, _]) => toks.clone(),
        _ => panic!("scan {expr}: {scanned}"),
    };
    let parsed = rust
        .rpc_call(beam, "erl_parse", "parse_exprs", vec![toks], t)
        .await
        .unwrap();
    let exprs = match parsed.as_tuple() {
        Some([_ok, e]) => e.clone(),
        _ => panic!("parse {expr}: {parsed}"),
    };
    let v = rust
        .rpc_call(beam, "erl_eval", "exprs", vec![exprs, Term::nil()], t)
        .await
        .unwrap_or_else(|e| panic!("eval {expr}: {e}"));
    match v.as_tuple() {
        Some([_value, v, _]) => v.clone(),
        _ => panic!("eval {expr}: {v}"),
    }
}

/// The pids of a list term.
pub fn pids(t: &Term) -> Vec<Pid> {
    t.as_list()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.as_pid().cloned())
        .collect()
}

/// Polls a condition (an expression that may `.await`) every 50 ms until
/// it holds, for at most 30 s.
#[macro_export]
macro_rules! until {
    ($what:expr, $cond:expr) => {{
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if $cond {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {}",
                $what
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }};
}
