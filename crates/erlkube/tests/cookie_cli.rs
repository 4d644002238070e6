//! Where the binary's commands find the cookie, as a user runs them (the
//! real binary, a controlled environment; real `erl` nodes on loopback
//! where a command must reach one): an empty cookie is refused by every
//! command, `~/.erlang.cookie` readable by others is refused as OTP does,
//! `--cookie-file` works everywhere `--cookie` does, and `--cookie` warns
//! once without showing the value.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use erlkube_testkit::{free_port, unique_name, wait_until, ChildGuard, ErlNode, OtpEpmd};

mod common;
use common::ERLKUBE;

/// Every command that takes `--cookie`.
const COMMANDS: [&str; 4] = ["node", "ping", "rpc", "remsh"];

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let d = std::env::temp_dir().join(unique_name("erlkube_cookie_cli"));
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    fn file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the binary in a controlled environment (`PATH`, `HOME`, `env`),
/// killed after 30 s (a command that wrongly accepts a cookie may go on
/// running): (exit code or -1, stdout, stderr).
fn run(args: &[&str], home: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(ERLKUBE);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut g = ChildGuard::spawn(&mut cmd).unwrap();
    let done = wait_until(Duration::from_secs(30), || {
        g.try_wait().ok().flatten().is_some()
    });
    let code = if done {
        g.wait().unwrap().code().unwrap_or(-1)
    } else {
        let _ = g.kill();
        -1
    };
    let mut out = String::new();
    let mut err = String::new();
    let c = g.child_mut();
    c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (code, out, err)
}

/// Arguments that make `cmd` need a cookie and otherwise stay on
/// loopback (a closed port, so nothing is reached if it goes on).
fn args_for(cmd: &str, closed: &str) -> Vec<String> {
    let target = "nobody@127.0.0.1".to_owned();
    match cmd {
        "node" => vec![
            "node".into(),
            "--name".into(),
            format!("{}@127.0.0.1", unique_name("ck")),
            "--port".into(),
            free_port().to_string(),
            "--epmd-port".into(),
            closed.into(),
        ],
        "ping" => vec![cmd.into(), target, "--port".into(), closed.into()],
        "remsh" => vec![
            cmd.into(),
            target,
            "--via".into(),
            format!("127.0.0.1:{closed}"),
        ],
        "rpc" => vec![
            "rpc".into(),
            target,
            "erlang".into(),
            "node".into(),
            "--port".into(),
            closed.into(),
        ],
        _ => unreachable!(),
    }
}

#[test]
fn an_empty_cookie_is_refused_by_every_command_with_how_to_set_one() {
    let dir = Scratch::new();
    let empty = dir.file("empty", "\n", 0o400);
    let empty = empty.to_str().unwrap();
    let empty_source = format!("file {empty}");
    let closed = free_port().to_string();
    for cmd in COMMANDS {
        let base: Vec<String> = args_for(cmd, &closed);
        let base: Vec<&str> = base.iter().map(String::as_str).collect();
        type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
        let cases: [Case; 4] = [
            (vec![], vec![("RELEASE_COOKIE", "")], "env RELEASE_COOKIE"),
            (vec![], vec![("ERLANG_COOKIE", "")], "env ERLANG_COOKIE"),
            (vec!["--cookie", ""], vec![], "--cookie"),
            (vec!["--cookie-file", empty], vec![], &empty_source),
        ];
        for (extra, env, source) in cases {
            let mut args = base.clone();
            args.extend(extra);
            let (code, _, err) = run(&args, &dir.0, &env);
            assert!(code > 0, "{cmd} {args:?} {env:?}: exit {code}: {err}");
            assert!(
                err.contains(&format!("the cookie from {source} is empty"))
                    && err.contains("set RELEASE_COOKIE"),
                "{cmd} {args:?} {env:?}: {err}"
            );
        }
    }
    // The agent too (its cookie comes from the same lookup).
    let (code, _, err) = run(
        &["agent", "--check"],
        &dir.0,
        &[("RELEASE_NODE", "app@127.0.0.1"), ("RELEASE_COOKIE", "")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("agent.cookie_file: the cookie from env RELEASE_COOKIE is empty"),
        "{err}"
    );
}

#[test]
fn a_home_cookie_file_readable_by_others_is_refused_with_the_fix() {
    let dir = Scratch::new();
    let closed = free_port().to_string();
    for mode in [0o644, 0o640, 0o604] {
        dir.file(".erlang.cookie", "somecookie", mode);
        for cmd in COMMANDS {
            let args = args_for(cmd, &closed);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, _, err) = run(&args, &dir.0, &[]);
            assert!(code > 0, "{cmd} mode {mode:o}: {err}");
            assert!(
                err.contains(&format!("mode {mode:03o}")) && err.contains("chmod 400"),
                "{cmd} mode {mode:o}: {err}"
            );
        }
    }
    // Owner-only: accepted (the ping goes on to find nobody: pang, exit 1).
    dir.file(".erlang.cookie", "somecookie", 0o400);
    let (code, _, err) = run(
        &["ping", "nobody@127.0.0.1", "--port", &closed],
        &dir.0,
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("cookie"), "{err}");
}

#[test]
fn cookie_file_works_and_cookie_flag_warns_once_without_the_value() {
    const COOKIE: &str = "cookie_cli_secret";
    let dir = Scratch::new();
    // A cookie file as Kubernetes mounts a Secret: group/world readable,
    // a trailing newline (only ~/.erlang.cookie is held to owner-only).
    let file = dir.file("cookie", &format!("{COOKIE}\n"), 0o644);
    let file = file.to_str().unwrap();
    let epmd = OtpEpmd::start().expect("OTP epmd (is Erlang/OTP installed?)");
    let port = epmd.port().to_string();
    let node = ErlNode::builder(&unique_name("cookie_cli"))
        .epmd_port(epmd.port())
        .cookie(COOKIE)
        .start()
        .expect("start erl");
    let env = [("ERL_EPMD_PORT", port.as_str())];
    let target = node.node_name();
    let (code, out, err) = run(&["ping", target, "--cookie-file", file], &dir.0, &env);
    assert_eq!((code, out.trim()), (0, "pong"), "{err}");
    assert!(err.is_empty(), "{err}");
    let (code, out, err) = run(
        &["rpc", target, "erlang", "node", "--cookie-file", file],
        &dir.0,
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("'{target}'"));
    // A Rust node started with --cookie-file is reachable by the erl node.
    let rust = format!("{}@127.0.0.1", unique_name("ck_node"));
    let mut cmd = Command::new(ERLKUBE);
    cmd.args(["node", "--name", &rust, "--cookie-file", file])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &dir.0)
        .env("ERL_EPMD_PORT", &port)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _rust_node = ChildGuard::spawn(&mut cmd).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || node
            .eval(&format!("net_adm:ping('{rust}')"))
            .is_ok_and(|r| r == "pong")),
        "the erl node cannot reach the Rust node started with --cookie-file"
    );
    // --cookie: works, warns once on stderr, never shows the value.
    let (code, out, err) = run(&["ping", target, "--cookie", COOKIE], &dir.0, &env);
    assert_eq!((code, out.trim()), (0, "pong"), "{err}");
    assert_eq!(err.matches("warning: --cookie").count(), 1, "{err}");
    assert!(
        err.contains("prefer RELEASE_COOKIE or --cookie-file"),
        "{err}"
    );
    assert!(!err.contains(COOKIE), "{err}");
    // The environment is the first way every command's help shows.
    for cmd in COMMANDS {
        let (code, help, _) = run(&[cmd, "--help"], &dir.0, &[]);
        assert_eq!(code, 0);
        let env_at = help
            .find("$RELEASE_COOKIE")
            .expect("help names RELEASE_COOKIE");
        let flag_at = help
            .find("--cookie-file")
            .expect("help lists --cookie-file");
        assert!(
            help.contains("$ERLANG_COOKIE") && env_at < flag_at,
            "{help}"
        );
    }
}
