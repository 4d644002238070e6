//! A child process that cannot outlive its guard.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};

/// A child process started in its own process group; dropping the guard
/// sends SIGKILL to the whole group (so helpers the child started, such as
/// the BEAM's `erl_child_setup`, die too) and reaps the child.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    reaped: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd` in a new process group.
    pub fn spawn(cmd: &mut Command) -> io::Result<ChildGuard> {
        cmd.process_group(0);
        let child = cmd.spawn()?;
        Ok(ChildGuard {
            child,
            reaped: None,
        })
    }

    /// The child's process id (also its process group id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The underlying child (to take its stdin/stdout/stderr pipes).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status if the child has exited, without blocking.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.reaped {
            return Ok(Some(s));
        }
        let s = self.child.try_wait()?;
        self.reaped = s;
        Ok(s)
    }

    /// Waits for the child to exit by itself.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.reaped {
            return Ok(s);
        }
        let s = self.child.wait()?;
        self.reaped = Some(s);
        Ok(s)
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the child's process group.
    pub fn signal_group(&self, signal: i32) {
        if self.reaped.is_none() {
            // SAFETY: kill(2) with a negative pid addresses the process
            // group we created for this child; no memory is involved.
            unsafe {
                libc::kill(-(self.child.id() as i32), signal);
            }
        }
    }

    /// Kills the process group now and reaps the child.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        self.signal_group(libc::SIGKILL);
        self.wait()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            // Kill the group even if the leader already exited, so no
            // helper survives; ignore errors (nothing left to kill).
            let _ = self.kill();
        } else {
            // SAFETY: as in `signal_group`.
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_kills_the_child() {
        let g = ChildGuard::spawn(Command::new("sleep").arg("30")).unwrap();
        let pid = g.id() as i32;
        drop(g);
        // SAFETY: signal 0 only checks existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "child {pid} survived its guard");
    }
}
