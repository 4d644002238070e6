//! CPU time a process has used, from `/proc` (benches divide it by the
//! work done to report CPU per operation, per process).

/// CPU seconds (user, system) from a `stat` file (`/proc/PID/stat` or a
/// thread's `/proc/PID/task/TID/stat`); zeros if it cannot be read.
pub fn stat_cpu_secs(path: &str) -> (f64, f64) {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    // utime and stime: fields 14 and 15 of the line, the 12th and 13th
    // after the ")" that ends the command name.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no memory effects.
    let hz = (unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64).max(1.0);
    (field(11) / hz, field(12) / hz)
}

/// Restricts the calling thread to CPU `cpu` (`sched_setaffinity`).
/// Threads and child processes it starts from then on inherit the mask,
/// and see one CPU: a BEAM started so runs one scheduler, a tokio runtime
/// built so defaults to one worker, as in a pod limited to one CPU.
pub fn pin_this_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes
    // within it (cpu is checked against its size).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// CPU seconds (user, system) process `pid` has used so far.
pub fn process_cpu_secs(pid: u32) -> (f64, f64) {
    stat_cpu_secs(&format!("/proc/{pid}/stat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_cpu_and_a_missing_one_reads_zero() {
        // Burn a little CPU so the counter has moved past zero ticks.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let (user, sys) = process_cpu_secs(std::process::id());
        assert!(user + sys > 0.0, "user {user} sys {sys}");
        assert_eq!(stat_cpu_secs("/proc/0/no-such-stat"), (0.0, 0.0));
    }

    #[test]
    fn a_pinned_thread_and_its_children_see_one_cpu() {
        std::thread::spawn(|| {
            pin_this_thread(0).unwrap();
            assert_eq!(std::thread::available_parallelism().unwrap().get(), 1);
            let out = std::process::Command::new("nproc").output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
            assert!(pin_this_thread(1 << 20).is_err());
        })
        .join()
        .unwrap();
    }
}
