//! Polling.

use std::time::{Duration, Instant};

/// Calls `cond` every 20 ms until it returns true (then returns true) or
/// `timeout` has passed (then returns false after one last try).
///
/// The timeout is a bound on how long to wait for something that is expected
/// to happen, not a performance assertion: pick it generously.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_after_some_calls() {
        let mut n = 0;
        assert!(wait_until(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
        assert_eq!(n, 3);
    }

    #[test]
    fn false_when_never() {
        assert!(!wait_until(Duration::from_millis(50), || false));
    }
}
