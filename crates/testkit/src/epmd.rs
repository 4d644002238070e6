//! OTP's own port mapper as a guarded child process.

use std::io;
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_until, ChildGuard};

/// OTP's `epmd` running in the foreground (`epmd -port P`) on a free
/// loopback port; killed when dropped.
#[derive(Debug)]
pub struct OtpEpmd {
    port: u16,
    guard: ChildGuard,
}

impl OtpEpmd {
    /// Starts `epmd -port P` on a free port and waits until it accepts
    /// connections.
    pub fn start() -> io::Result<OtpEpmd> {
        OtpEpmd::start_with_args(&[])
    }

    /// Same, with `-relaxed_command_check` (allows `-stop` and `-kill` with
    /// nodes registered).
    pub fn start_relaxed() -> io::Result<OtpEpmd> {
        OtpEpmd::start_with_args(&["-relaxed_command_check"])
    }

    /// Starts `epmd -port P <extra args>`; retries on a new port when the
    /// chosen one was taken in the meantime.
    pub fn start_with_args(extra: &[&str]) -> io::Result<OtpEpmd> {
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new("epmd");
            cmd.arg("-port")
                .arg(port.to_string())
                .args(extra)
                .env_remove("ERL_EPMD_PORT")
                .env_remove("ERL_EPMD_ADDRESS")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut guard = ChildGuard::spawn(&mut cmd)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot run OTP's `epmd`: {e}")))?;
            let up = wait_until(Duration::from_secs(10), || {
                if matches!(guard.try_wait(), Ok(Some(_))) {
                    return true;
                }
                TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
            });
            match guard.try_wait()? {
                None if up => return Ok(OtpEpmd { port, guard }),
                None => last_err = Some(format!("epmd on port {port} did not come up")),
                Some(st) => last_err = Some(format!("epmd on port {port} exited: {st}")),
            }
        }
        Err(io::Error::other(last_err.unwrap_or_default()))
    }

    /// The port it listens on (give it to nodes as `ERL_EPMD_PORT`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The operating-system process id of the daemon.
    pub fn pid(&self) -> u32 {
        self.guard.id()
    }

    /// True while the daemon process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.guard.try_wait(), Ok(None))
    }

    /// Runs OTP's `epmd` as a *client* against the port `port` with `args`
    /// (e.g. `["-names"]`, `["-kill"]`, `["-stop", "name"]`), returning
    /// (exit code, stdout, stderr). Works against any port mapper.
    pub fn client(port: u16, args: &[&str]) -> io::Result<(i32, String, String)> {
        let out = Command::new("epmd")
            .arg("-port")
            .arg(port.to_string())
            .args(args)
            .env_remove("ERL_EPMD_PORT")
            .stdin(Stdio::null())
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}
