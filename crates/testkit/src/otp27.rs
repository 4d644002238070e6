//! OTP 27 for interop tests: Debian trixie's `erlang-base` in a chroot built
//! by `scripts/otp27-rootfs.sh` (OTP 26+ makes V4_NC and UNLINK_ID
//! mandatory, so this is where flag mistakes show).
//!
//! The root filesystem lives next to the build output (`<target>/otp27-rootfs`,
//! or `OTP27_ROOTFS`) and is built on first use (about two minutes; the
//! script does nothing when `usr/bin/erl` is already there). Needs root and
//! debootstrap. The chroot shares the host's network, so its nodes reach
//! the test's on loopback.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Where the root filesystem is (not necessarily built yet).
pub fn rootfs_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("OTP27_ROOTFS").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    // The test executable is <target>/debug/deps/<test>-<hash>.
    let exe = std::env::current_exe().expect("current test executable");
    exe.ancestors()
        .nth(3)
        .expect("<target>/debug/deps/<test>")
        .join("otp27-rootfs")
}

/// Builds the root filesystem if it isn't there and returns its path.
/// Blocking (debootstrap); call it from `spawn_blocking` in async tests.
pub fn ensure_rootfs() -> PathBuf {
    let dir = rootfs_dir();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/otp27-rootfs.sh");
    let status = Command::new("sh")
        .arg(script)
        .arg(&dir)
        .status()
        .expect("run scripts/otp27-rootfs.sh");
    assert!(status.success(), "scripts/otp27-rootfs.sh failed");
    dir
}

/// `erl -noshell -name NAME -setcookie COOKIE ARGS…` run in the chroot,
/// pointed at the test's epmd on `epmd_port` and never starting one of its
/// own. Standard input is closed.
pub fn erl_command(
    root: &std::path::Path,
    epmd_port: u16,
    name: &str,
    cookie: &str,
    args: &[&str],
) -> Command {
    let mut c = Command::new("chroot");
    c.arg(root)
        .args([
            "env",
            &format!("ERL_EPMD_PORT={epmd_port}"),
            // Inside the chroot; the cookie comes from -setcookie.
            "HOME=/tmp",
            "erl",
            "-noshell",
            "-name",
            name,
            "-setcookie",
            cookie,
            "-start_epmd",
            "false",
        ])
        .args(args)
        .stdin(Stdio::null());
    c
}
