//! Reaching a node through a forwarded port (`--via HOST:PORT`), as from a
//! laptop through `kubectl port-forward`: `erlkube ping`, `erlkube rpc` and
//! `erlkube remsh` against a real OTP node whose name's host does not
//! resolve (`…@pod-0.app.ns.svc.cluster.local`), so a dialler that used the
//! host in the name would fail at resolution and send no packet anywhere.
//!
//! The "pod" node listens on a fixed free loopback port (`-kernel
//! inet_dist_listen_min P inet_dist_listen_max P`, interface 127.0.0.1) and
//! registers with its own OTP epmd on a free port. The laptop side is given
//! `ERL_EPMD_PORT` of a port where nothing listens, so any epmd use by
//! mistake fails instead of reaching 4369. Children are killed on drop.
//!
//! TLS: `erlkube remsh` with `--proto-dist inet_tls --ssl-dist-optfile F`
//! against a BEAM node started with `-proto_dist inet_tls
//! -ssl_dist_optfile F` (certificates made in the test), directly through
//! epmd and with `--via` through a plain TCP forwarder run by the test.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use erlkube_testkit::tls::{Ca, TlsDir};
use erlkube_testkit::{free_port, unique_name, wait_until, ChildGuard, ErlNode, OtpEpmd, Runtime};

mod common;
use common::ERLKUBE;
const POD_HOST: &str = "pod-0.app.ns.svc.cluster.local";
const LONG: Duration = Duration::from_secs(60);

/// A BEAM node named `<unique>@pod-0.app.ns.svc.cluster.local` on a fixed
/// loopback distribution port, with its epmd.
struct Pod {
    node: ErlNode,
    port: u16,
    cookie: String,
    epmd: OtpEpmd,
}

impl Pod {
    fn start(test: &str) -> Pod {
        Pod::start_on(test, Runtime::Erlang)
    }

    fn start_on(test: &str, runtime: Runtime) -> Pod {
        Pod::start_with(test, runtime, POD_HOST, None)
    }

    /// A node named `<unique>@host`; with `optfile`, speaking TLS
    /// distribution (`-proto_dist inet_tls -ssl_dist_optfile optfile`).
    fn start_with(test: &str, runtime: Runtime, host: &str, optfile: Option<&Path>) -> Pod {
        let epmd = OtpEpmd::start().expect("OTP epmd must be installed");
        let port = free_port();
        let cookie = format!("remote_{test}_{}", std::process::id());
        let mut b = ErlNode::builder(&format!("{}@{host}", unique_name(test)))
            .runtime(runtime)
            .cookie(&cookie)
            .epmd_port(epmd.port())
            .dist_port_range(port, port)
            .arg("-kernel")
            .arg("inet_dist_use_interface")
            .arg("{127,0,0,1}");
        if let Some(f) = optfile {
            b = b
                .arg("-proto_dist")
                .arg("inet_tls")
                .arg("-ssl_dist_optfile")
                .arg(f.to_str().unwrap());
        }
        let node = b.start().expect("erl must be installed");
        Pod {
            node,
            port,
            cookie,
            epmd,
        }
    }

    fn name(&self) -> &str {
        self.node.node_name()
    }

    fn via(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Runs erlkube with `args` and the laptop's environment; (exit code,
/// stdout, stderr).
fn erlkube(args: &[&str]) -> (i32, String, String) {
    common::outcome(
        Command::new(ERLKUBE)
            .args(args)
            .env("ERL_EPMD_PORT", free_port().to_string())
            .env_remove("RELEASE_COOKIE")
            .output()
            .unwrap(),
    )
}

#[test]
fn ping_via_reaches_a_node_whose_host_does_not_resolve() {
    let pod = Pod::start("remote_ping");
    let via = pod.via();
    let (code, out, err) = erlkube(&["ping", pod.name(), "--via", &via, "--cookie", &pod.cookie]);
    assert_eq!((code, out.as_str()), (0, "pong"), "stderr: {err}");
}

#[test]
fn ping_without_via_fails_because_the_host_does_not_resolve() {
    let pod = Pod::start("remote_noroute");
    // The pod's own epmd port: only the unresolvable host stands in the way.
    let out = Command::new(ERLKUBE)
        .args([
            "ping",
            pod.name(),
            "--cookie",
            &pod.cookie,
            "--timeout",
            "5s",
        ])
        .env("ERL_EPMD_PORT", pod.epmd.port().to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout} {stderr}");
    assert_eq!(stdout.trim(), "pang");
    assert!(
        stderr.contains(POD_HOST) && stderr.contains("lookup address"),
        "the error says the host does not resolve: {stderr}"
    );
}

#[test]
fn rpc_via_runs_on_the_node_and_the_rust_node_is_hidden() {
    let pod = Pod::start("remote_rpc");
    let via = pod.via();
    let n = pod.name();
    let c = pod.cookie.as_str();
    let (code, out, err) = erlkube(&["rpc", n, "erlang", "node", "--via", &via, "--cookie", c]);
    assert_eq!((code, out), (0, format!("'{n}'")), "stderr: {err}");
    // While the call runs, the Rust node is connected: hidden, not visible.
    let (code, out, err) = erlkube(&["rpc", n, "erlang", "nodes", "--via", &via, "--cookie", c]);
    assert_eq!((code, out.as_str()), (0, "[]"), "stderr: {err}");
    let (code, out, err) = erlkube(&[
        "rpc", n, "erlang", "nodes", "[hidden]", "--via", &via, "--cookie", c,
    ]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(
        out.starts_with("['erlkube_rpc_") && out.ends_with(&format!("@{POD_HOST}']")),
        "{out}"
    );
}

#[test]
fn a_bad_via_is_a_usage_error_naming_the_flag() {
    for cmd in [
        &["ping", "a@pod-0.x.svc", "--via", "nonsense"][..],
        &[
            "rpc",
            "a@pod-0.x.svc",
            "erlang",
            "node",
            "--via",
            "127.0.0.1",
        ][..],
        &["remsh", "a@pod-0.x.svc", "--via", "127.0.0.1:notaport"][..],
    ] {
        let (code, _, err) = erlkube(cmd);
        assert_eq!(code, 2, "{cmd:?}: {err}");
        assert!(err.contains("--via"), "{cmd:?}: {err}");
    }
}

/// `erlkube remsh` on a pseudo-terminal (the OTP 25 `-remsh` shell needs a
/// terminal), its output collected by a thread. Killed on drop.
struct Terminal {
    child: ChildGuard,
    master: std::fs::File,
    output: Arc<Mutex<String>>,
}

impl Terminal {
    fn spawn(cmd: &mut Command) -> Terminal {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two new descriptors into the given ints;
        // the name, termios and winsize pointers may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just created by openpty and are
        // owned here only.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        let child = ChildGuard::spawn(cmd).unwrap();
        let master = std::fs::File::from(master);
        let output = Arc::new(Mutex::new(String::new()));
        {
            let output = output.clone();
            let mut reader = master.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // Ends with EIO once the child side is closed.
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Terminal {
            child,
            master,
            output,
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    fn wait_for(&self, text: &str) {
        assert!(
            wait_until(LONG, || self.output().contains(text)),
            "no {text:?} in the terminal; output:\n{}",
            self.output()
        );
    }

    fn type_text(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }
}

/// No process of process group `pgid` has `needle` on its command line.
fn no_command_line_in_group_contains(pgid: u32, needle: &str) -> Result<(), String> {
    let mut seen = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...
        let group = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|g| g.parse::<u32>().ok());
        if group != Some(pgid) {
            continue;
        }
        seen += 1;
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) {
                return Err(format!("process {:?}: {text}", entry.file_name()));
            }
        }
    }
    // erlkube, erl's beam.smp, erl_child_setup at least.
    if seen < 2 {
        return Err(format!("only {seen} processes in group {pgid}"));
    }
    Ok(())
}

#[test]
fn remsh_via_opens_a_hidden_shell_on_the_node_without_epmd() {
    let pod = Pod::start("remote_remsh");
    let tmp = std::env::temp_dir().join(unique_name("remote_remsh_tmp"));
    std::fs::create_dir(&tmp).unwrap();
    let mut term = Terminal::spawn(
        Command::new(ERLKUBE)
            .args(["remsh", pod.name(), "--via", &pod.via()])
            .env("RELEASE_COOKIE", &pod.cookie)
            .env("ERL_EPMD_PORT", free_port().to_string())
            .env("TMPDIR", &tmp),
    );
    // The prompt names the node the shell evaluates on.
    term.wait_for(&format!("({})1>", pod.name()));
    term.type_text("node().\n");
    term.wait_for(&format!("'{}'", pod.name()));

    // Connected: the laptop node is hidden on the pod.
    assert_eq!(pod.node.eval("nodes()").unwrap(), "[]");
    let hidden = pod.node.eval("nodes(hidden)").unwrap();
    assert!(
        hidden.starts_with("['remsh_") && hidden.ends_with("@127.0.0.1']"),
        "{hidden}"
    );
    // The cookie is on no command line of the shell's processes (the pod
    // node itself got it with -setcookie), and the file that carried it is
    // gone (the private directory holds the compiled module only).
    no_command_line_in_group_contains(term.child.id(), &pod.cookie).unwrap();
    let files: Vec<String> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!files.iter().any(|f| f == "via"), "{files:?}");

    // Ctrl-G q leaves the shell; the pod node stays up.
    term.type_text("\x07");
    term.wait_for("-->");
    term.type_text("q\n");
    let status = term.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "output:\n{}", term.output());
    assert_eq!(
        pod.node.eval("node()").unwrap(),
        format!("'{}'", pod.name())
    );
    assert!(
        wait_until(LONG, || pod.node.eval("nodes(hidden)").unwrap() == "[]"),
        "the laptop node left"
    );
    // The private directory is removed when the shell ends.
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    std::fs::remove_dir(&tmp).unwrap();
}

fn remsh(pod: &Pod, extra: &[&str]) -> Terminal {
    Terminal::spawn(
        Command::new(ERLKUBE)
            .args(["remsh", pod.name(), "--via", &pod.via()])
            .args(extra)
            .env("RELEASE_COOKIE", &pod.cookie)
            .env("ERL_EPMD_PORT", free_port().to_string()),
    )
}

#[test]
fn remsh_iex_opens_an_iex_shell_on_an_elixir_node() {
    let pod = Pod::start_on("remote_iex", Runtime::Elixir);
    let mut term = remsh(&pod, &["--iex"]);
    term.wait_for(&format!("iex({})1>", pod.name()));
    term.type_text("node()\n");
    term.wait_for(&format!(":\"{}\"", pod.name()));
    assert_eq!(pod.node.eval("nodes()").unwrap(), "[]");
    let hidden = pod.node.eval("nodes(hidden)").unwrap();
    assert!(hidden.starts_with("['remsh_"), "{hidden}");
    // Ctrl-C twice, as a terminal sends it (SIGINT to the foreground
    // process group: erlkube and the BEAM): the BREAK menu, then halt.
    // erlkube itself ignores it and waits for the shell.
    term.child.signal_group(libc::SIGINT);
    term.wait_for("BREAK");
    term.child.signal_group(libc::SIGINT);
    let status = term.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "output:\n{}", term.output());
    assert_eq!(
        pod.node.eval("node()").unwrap(),
        format!("'{}'", pod.name())
    );
}

#[test]
fn remsh_passes_the_shells_exit_code() {
    // iex refuses a node without Elixir after connecting to it, and its
    // BEAM exits 1: erlkube exits 1 too.
    let pod = Pod::start("remote_code");
    let mut term = remsh(&pod, &["--iex"]);
    let status = term.child.wait().unwrap();
    term.wait_for("Could not find IEx on remote node");
    assert_eq!(status.code(), Some(1), "output:\n{}", term.output());
}

#[test]
fn remsh_with_a_wrong_cookie_says_so_and_exits_non_zero() {
    let pod = Pod::start("remote_badcookie");
    let via = pod.via();
    // No terminal needed: the shell is never started when the node refuses.
    let (code, _out, err) = erlkube(&["remsh", pod.name(), "--via", &via, "--cookie", "wrong"]);
    assert_eq!(code, 1, "stderr: {err}");
    assert!(err.contains("cookie"), "stderr names the cookie: {err}");
    assert!(err.contains(pod.name()), "stderr names the node: {err}");
}

/// A plain TCP forwarder on a free loopback port to `target`, as
/// `kubectl port-forward` is: bytes copied both ways, nothing else. Counts
/// the connections it forwarded. Stops accepting on drop.
struct Forwarder {
    addr: SocketAddr,
    forwarded: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    fn start(target: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let forwarded = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (forwarded.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Forwarder {
            addr,
            forwarded,
            stop,
        }
    }

    fn forwarded(&self) -> usize {
        self.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// A CA, a TLS "pod" node named `…@host` with a certificate for `host`,
/// and a client optfile for erlkube with a certificate of the same CA.
struct TlsPod {
    pod: Pod,
    client_conf: PathBuf,
    _dir: TlsDir,
}

fn tls_pod(test: &str, host: &str) -> TlsPod {
    let ca = Ca::new("erlkube remsh test CA");
    let dir = TlsDir::new(None, test);
    let root = Path::new("/");
    let node_conf = dir.node_files("pod", &ca.issue(&[host]), ca.pem(), true, root);
    let client_conf = dir.node_files("laptop", &ca.issue(&["127.0.0.1"]), ca.pem(), true, root);
    let pod = Pod::start_with(test, Runtime::Erlang, host, Some(&node_conf));
    TlsPod {
        pod,
        client_conf,
        _dir: dir,
    }
}

/// Opens `erlkube remsh` (TLS with `conf` when given) on a terminal,
/// evaluates an expression on the node and checks the answer, checks the
/// laptop node is hidden there and the cookie on no command line, then
/// leaves with Ctrl-G q.
fn remsh_evaluates_and_leaves(pod: &Pod, extra: &[&str], env: &[(&str, String)]) {
    let mut cmd = Command::new(ERLKUBE);
    cmd.args(["remsh", pod.name()])
        .args(extra)
        .env("RELEASE_COOKIE", &pod.cookie);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut term = Terminal::spawn(&mut cmd);
    term.wait_for(&format!("({})1>", pod.name()));
    term.type_text("{node(), lists:sum([1,2,3]) * 7}.\n");
    term.wait_for(&format!("{{'{}',42}}", pod.name()));
    let hidden = pod.node.eval("nodes(hidden)").unwrap();
    assert!(
        hidden.starts_with("['remsh_") && hidden.ends_with("@127.0.0.1']"),
        "{hidden}"
    );
    no_command_line_in_group_contains(term.child.id(), &pod.cookie).unwrap();
    term.type_text("\x07");
    term.wait_for("-->");
    term.type_text("q\n");
    let status = term.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "output:\n{}", term.output());
    assert!(
        wait_until(LONG, || pod.node.eval("nodes(hidden)").unwrap() == "[]"),
        "the laptop node left"
    );
}

#[test]
fn remsh_over_tls_evaluates_on_the_node() {
    let t = tls_pod("remote_tls_remsh", "127.0.0.1");
    let conf = t.client_conf.to_str().unwrap();
    // Through the pod's epmd: the shell's BEAM looks the node up there.
    remsh_evaluates_and_leaves(
        &t.pod,
        &["--proto-dist", "inet_tls", "--ssl-dist-optfile", conf],
        &[("ERL_EPMD_PORT", t.pod.epmd.port().to_string())],
    );
}

#[test]
fn remsh_over_tls_via_a_forwarded_port() {
    // The node's host does not resolve; its certificate names it (the
    // client checks the name it dials, not the forwarder's address).
    let t = tls_pod("remote_tls_via", POD_HOST);
    let fwd = Forwarder::start(format!("127.0.0.1:{}", t.pod.port).parse().unwrap());
    let via = fwd.addr.to_string();
    let conf = t.client_conf.to_str().unwrap();
    remsh_evaluates_and_leaves(
        &t.pod,
        &[
            "--via",
            &via,
            "--proto-dist",
            "inet_tls",
            "--ssl-dist-optfile",
            conf,
        ],
        &[("ERL_EPMD_PORT", free_port().to_string())],
    );
    // The check node's connection and the shell's went through it.
    assert!(fwd.forwarded() >= 2, "{} connections", fwd.forwarded());
}

#[test]
fn plain_remsh_against_a_tls_node_says_so_and_the_node_stays_up() {
    let t = tls_pod("remote_tls_plain", "127.0.0.1");
    let pod = &t.pod;
    let epmd_port = pod.epmd.port().to_string();
    let via = pod.via();
    for extra in [&[][..], &["--via", &via][..]] {
        // No terminal needed: the shell is never started.
        let out = Command::new(ERLKUBE)
            .args(["remsh", pod.name()])
            .args(extra)
            .env("RELEASE_COOKIE", &pod.cookie)
            .env("ERL_EPMD_PORT", &epmd_port)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let (code, _out, err) = common::outcome(out);
        assert_eq!(code, 1, "{extra:?}: {err}");
        assert!(err.contains(pod.name()), "{extra:?}: names the node: {err}");
        assert!(
            err.contains("--proto-dist inet_tls --ssl-dist-optfile"),
            "{extra:?}: says how to speak TLS: {err}"
        );
    }
    // The node is up and still serves a TLS client.
    assert_eq!(
        pod.node.eval("node()").unwrap(),
        format!("'{}'", pod.name())
    );
    let (code, out, err) = erlkube(&[
        "ping",
        pod.name(),
        "--via",
        &via,
        "--cookie",
        &pod.cookie,
        "--proto-dist",
        "inet_tls",
        "--ssl-dist-optfile",
        t.client_conf.to_str().unwrap(),
    ]);
    assert_eq!((code, out.as_str()), (0, "pong"), "{err}");
}
