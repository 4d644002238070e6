//! `ip` command helpers.

use std::io;
use std::process::Command;

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> io::Result<String> {
    run(Command::new("ip").args(args))
}

/// Runs a command to completion, failing with its stderr.
pub fn run(cmd: &mut Command) -> io::Result<String> {
    let out = cmd
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip netns exec NS` + program: a command that runs inside the namespace.
pub fn in_netns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// Names of the network namespaces.
pub fn netns_list() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Names of the links of the current namespace.
pub fn link_list() -> Vec<String> {
    ip(&["-o", "link", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let name = l.split(':').nth(1)?.trim();
            Some(name.split('@').next()?.to_owned())
        })
        .collect()
}

/// Process ids inside a namespace.
pub fn netns_pids(ns: &str) -> Vec<i32> {
    ip(&["netns", "pids", ns])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills every process in the namespace, then deletes it.
pub fn netns_delete(ns: &str) {
    for pid in netns_pids(ns) {
        // SAFETY: kill(2) on a pid inside a namespace this test bed created.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    for _ in 0..50 {
        if netns_pids(ns).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = ip(&["netns", "delete", ns]);
}

/// Runs `f` on a new thread that has entered network namespace `ns`
/// (`setns(2)` affects only that thread): sockets it creates live in the
/// pod. Use it to run an in-process Rust node "inside" a pod, e.g. with a
/// current-thread tokio runtime built on that thread.
pub fn spawn_in_netns<F, T>(ns: &str, f: F) -> io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        // SAFETY: setns(2) on a valid namespace fd, for this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            let _ = tx.send(Err(io::Error::last_os_error()));
            // The caller gets the error; f never runs outside the pod.
            panic!("setns failed");
        }
        let _ = tx.send(Ok(()));
        drop(file);
        f()
    });
    match rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::other("netns thread died")),
    }
}
