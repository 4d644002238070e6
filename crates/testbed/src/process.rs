//! Child processes that die with their guard.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// A child in its own process group; dropping the guard SIGKILLs the group
/// and reaps the child.
#[derive(Debug)]
pub struct Guard {
    child: Child,
    done: bool,
}

impl Guard {
    /// Spawns `cmd` in a new process group.
    pub fn spawn(cmd: &mut Command) -> io::Result<Guard> {
        cmd.process_group(0);
        Ok(Guard {
            child: cmd.spawn()?,
            done: false,
        })
    }

    /// The child (to take its pipes).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The process id (and group id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the process group.
    pub fn signal(&self, signal: i32) {
        if !self.done {
            // SAFETY: kill(2) with a negative pid signals a process group we
            // created; no memory is touched.
            unsafe {
                libc::kill(-(self.child.id() as i32), signal);
            }
        }
    }

    /// True while the child runs.
    pub fn is_running(&mut self) -> bool {
        !self.done && matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILLs the group and reaps the child.
    pub fn kill(&mut self) {
        if !self.done {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
            self.done = true;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}
