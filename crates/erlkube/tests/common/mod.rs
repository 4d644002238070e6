//! Helpers shared by the binary's integration tests: each test file has
//! `mod common;` and uses what it needs (hence `dead_code` allowed).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub mod bed;

/// The binary under test.
pub const ERLKUBE: &str = env!("CARGO_BIN_EXE_erlkube");

/// Runs the binary with `args` in a controlled environment: `PATH`, a
/// `HOME` that does not exist, and `env`, nothing else.
pub fn run_clean(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(ERLKUBE)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent-home")
        .envs(env.iter().copied())
        .output()
        .expect("run erlkube")
}

/// Output bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// (exit code, or -1 when killed by a signal; stdout and stderr trimmed).
pub fn outcome(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout).trim().to_owned(),
        text(&out.stderr).trim().to_owned(),
    )
}

/// GET over a fresh connection: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_get_within(addr, path, Duration::from_secs(5))
}

/// [`http_get`] waiting up to `read` for the answer (`/drain` answers when
/// the drain is over).
pub fn http_get_within(
    addr: SocketAddr,
    path: &str,
    read: Duration,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(read))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// `GET /drain` on a blocking thread (answered when the drain is over,
/// bounded by a minute).
pub async fn http_drain_async(addr: SocketAddr) -> std::io::Result<(u16, String)> {
    tokio::task::spawn_blocking(move || http_get_within(addr, "/drain", Duration::from_secs(60)))
        .await
        .expect("http thread")
}

/// [`http_get`] on a blocking thread, for async tests.
pub async fn http_get_async(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || http_get(addr, &path))
        .await
        .expect("http thread")
}

/// Spawns `cmd` (an `erlkube node`) with its stdout piped and waits for its
/// "listening on port" line, which it prints once its services answer.
pub fn spawn_until_listening(cmd: &mut Command) -> erlkube_testkit::ChildGuard {
    use std::io::BufRead;
    let mut guard = erlkube_testkit::ChildGuard::spawn(cmd.stdout(Stdio::piped())).unwrap();
    let stdout = guard.child_mut().stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on port"), "{line}");
    guard
}

/// Runs `promtool check metrics` (the Prometheus project's own parser) on
/// `text`, the exposition of `what`; panics with its report.
pub fn promtool_check(what: &str, text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`) must be installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed on {what}:\n{}{}\n--- text:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
