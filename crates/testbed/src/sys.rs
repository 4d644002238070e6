//! Host limits that big beds outgrow: the open-file limit of the test
//! process (in-process Rust pods hold both ends of every connection) and
//! the kernel's neighbour-table thresholds (one ARP/ND entry per pair of
//! pods that talk; the table is shared by every namespace). Small beds
//! (the CI scenarios) change nothing; a bed that does raise the neighbour
//! thresholds puts the old values back when it is dropped.

use std::io;

/// Raises the soft (and, as root, the hard) `RLIMIT_NOFILE` of this
/// process to at least `min`. Returns the new soft limit.
pub fn ensure_nofile(min: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= min {
        return Ok(lim.rlim_cur);
    }
    let want = libc::rlimit {
        rlim_cur: min,
        rlim_max: lim.rlim_max.max(min),
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::other(format!(
            "cannot raise the open-file limit from {} (hard {}) to {min}: {e}",
            lim.rlim_cur, lim.rlim_max
        )));
    }
    Ok(min)
}

const NEIGH_KEYS: [&str; 4] = [
    "/proc/sys/net/ipv4/neigh/default/gc_thresh2",
    "/proc/sys/net/ipv4/neigh/default/gc_thresh3",
    "/proc/sys/net/ipv6/neigh/default/gc_thresh2",
    "/proc/sys/net/ipv6/neigh/default/gc_thresh3",
];

/// Neighbour-table thresholds raised for a big bed; dropping it restores
/// the values found.
#[derive(Debug)]
pub struct NeighbourLimits {
    saved: Vec<(&'static str, u64)>,
}

fn read_u64(path: &str) -> io::Result<u64> {
    std::fs::read_to_string(path)?
        .trim()
        .parse()
        .map_err(|e| io::Error::other(format!("{path}: {e}")))
}

impl NeighbourLimits {
    /// Makes room for `entries` neighbour entries per address family
    /// (`gc_thresh3` at least that, `gc_thresh2` at least half). Returns
    /// `None` when the current limits are already large enough.
    pub fn ensure(entries: u64) -> io::Result<Option<NeighbourLimits>> {
        let want = |key: &str| {
            if key.ends_with('3') {
                entries
            } else {
                entries / 2
            }
        };
        let mut saved = Vec::new();
        for key in NEIGH_KEYS {
            let old = read_u64(key)?;
            if old < want(key) {
                saved.push((key, old));
            }
        }
        if saved.is_empty() {
            return Ok(None);
        }
        // Restored on drop from here on, also if a write below fails.
        let guard = NeighbourLimits { saved };
        // thresh3 before thresh2, so that thresh2 <= thresh3 throughout.
        for (key, _) in guard.saved.iter().rev() {
            std::fs::write(key, want(key).to_string())
                .map_err(|e| io::Error::other(format!("{key}: {e}")))?;
        }
        Ok(Some(guard))
    }
}

impl Drop for NeighbourLimits {
    fn drop(&mut self) {
        // thresh2 before thresh3 when lowering.
        for (key, old) in &self.saved {
            let _ = std::fs::write(key, old.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nofile_already_enough_is_unchanged() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(ensure_nofile(16).unwrap(), lim.rlim_cur);
    }
}
