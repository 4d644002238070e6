//! The Rust side of an `erl` evaluation loop, shared by testkit's
//! [`crate::ErlNode`] and the test bed's pod nodes: the threads that read
//! the node's stdout and stderr, the parsing of the result lines the loop
//! prints after its marker, and the wait for the loop's ready line.
//!
//! The loops themselves differ on purpose (testkit evaluates in one
//! long-lived process, which tests rely on for links and registered names;
//! the bed evaluates each request in a fresh process, concurrently, with an
//! id); a result line is `MARKER [ID] KIND VALUE`, where KIND is `ready`,
//! `ok` or `error`.

use std::io::{self, BufRead, BufReader, Read};
use std::process::{ChildStderr, ChildStdout};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One result line of the loop, after its marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    /// The request's id, when the loop numbers its answers.
    pub id: Option<u64>,
    /// What the line says.
    pub outcome: Outcome,
}

/// What a result line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The loop runs; the `~0tp` of `node()`.
    Ready(String),
    /// `Ok`: the `~0tp` of the value; `Err`: of `{Class, Reason}` (or the
    /// whole line when it is of no known kind).
    Value(Result<String, String>),
}

/// Parses what follows the marker: `[ID ]KIND[ VALUE]`.
pub fn parse_marked(rest: &str) -> Marked {
    let rest = rest.trim_start();
    let (id, rest) = match rest.split_once(' ') {
        Some((first, tail)) => match first.parse::<u64>() {
            Ok(id) => (Some(id), tail),
            Err(_) => (None, rest),
        },
        None => (None, rest),
    };
    let (kind, value) = rest.split_once(' ').unwrap_or((rest, ""));
    let value = value.to_owned();
    let outcome = match kind {
        "ready" => Outcome::Ready(value),
        "ok" => Outcome::Value(Ok(value)),
        "error" => Outcome::Value(Err(value)),
        _ => Outcome::Value(Err(rest.to_owned())),
    };
    Marked { id, outcome }
}

/// Starts the reader threads: stdout lines that start with `marker` are
/// parsed and passed to `on_marked` (the reader stops when it returns
/// false), other non-empty lines and all of stderr go to the returned
/// log. `on_closed` runs when stdout closes (the node is gone).
pub fn read_output(
    stdout: ChildStdout,
    stderr: ChildStderr,
    marker: &'static str,
    mut on_marked: impl FnMut(Marked) -> bool + Send + 'static,
    on_closed: impl FnOnce() + Send + 'static,
) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix(marker) {
                    if !on_marked(parse_marked(rest)) {
                        break;
                    }
                } else if !line.is_empty() {
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            }
            on_closed();
        });
    }
    {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut stderr = stderr;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    log
}

/// Waits for the loop's ready line (what the reader sent on `ready`);
/// on failure, an error naming `what` with the node's output.
pub fn wait_ready<T>(
    ready: &Receiver<T>,
    timeout: Duration,
    log: &Mutex<String>,
    what: &str,
) -> io::Result<T> {
    match ready.recv_timeout(timeout) {
        Ok(v) => Ok(v),
        Err(e) => {
            let why = match e {
                RecvTimeoutError::Timeout => "did not start in time",
                RecvTimeoutError::Disconnected => "exited during start",
            };
            // Give the stderr reader the time to collect the reason (the
            // process is gone or stuck: there is no event to wait for).
            std::thread::sleep(Duration::from_millis(200));
            Err(io::Error::other(format!(
                "{what} {why}; output:\n{}",
                log.lock().unwrap()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_with_and_without_an_id() {
        assert_eq!(
            parse_marked(" ready 'a@h'"),
            Marked {
                id: None,
                outcome: Outcome::Ready("'a@h'".into())
            }
        );
        assert_eq!(
            parse_marked(" 0 ready 'a@h'"),
            Marked {
                id: Some(0),
                outcome: Outcome::Ready("'a@h'".into())
            }
        );
        assert_eq!(
            parse_marked(" 7 ok {ok,1 2}"),
            Marked {
                id: Some(7),
                outcome: Outcome::Value(Ok("{ok,1 2}".into()))
            }
        );
        assert_eq!(
            parse_marked(" ok 42"),
            Marked {
                id: None,
                outcome: Outcome::Value(Ok("42".into()))
            }
        );
        assert_eq!(
            parse_marked(" error {error,badarg}").outcome,
            Outcome::Value(Err("{error,badarg}".into()))
        );
        assert_eq!(
            parse_marked(" 3 what").outcome,
            Outcome::Value(Err("what".into()))
        );
    }
}
