//! Log throttling for repeated failures: the first failure of a kind is
//! logged at once, repeats at a doubling interval (with the count of
//! suppressed repeats), and recovery is logged once.

use std::time::{Duration, Instant};

/// One throttled failure stream (e.g. "cannot reach the BEAM node").
#[derive(Debug)]
pub struct Throttle {
    min: Duration,
    max: Duration,
    state: Option<Failing>,
}

#[derive(Debug)]
struct Failing {
    cause: String,
    since: Instant,
    next_log: Instant,
    every: Duration,
    suppressed: u64,
    total: u64,
}

/// What to log for a failure, if anything.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it: a new cause (or the first failure).
    First,
    /// Log it again with the number of repeats suppressed since the last line.
    Repeat {
        /// Repeats not logged since the last line.
        suppressed: u64,
    },
    /// Stay quiet.
    Quiet,
}

impl Throttle {
    /// Repeats are logged after `min`, then at doubling intervals up to `max`.
    pub fn new(min: Duration, max: Duration) -> Throttle {
        Throttle {
            min,
            max,
            state: None,
        }
    }

    /// Records a failure with `cause` (its text decides "same kind").
    pub fn failure(&mut self, cause: &str, now: Instant) -> Verdict {
        match &mut self.state {
            Some(f) if f.cause == cause => {
                f.total += 1;
                if now >= f.next_log {
                    let suppressed = f.suppressed;
                    f.suppressed = 0;
                    f.every = (f.every * 2).min(self.max);
                    f.next_log = now + f.every;
                    Verdict::Repeat { suppressed }
                } else {
                    f.suppressed += 1;
                    Verdict::Quiet
                }
            }
            _ => {
                self.state = Some(Failing {
                    cause: cause.to_owned(),
                    since: now,
                    next_log: now + self.min,
                    every: self.min,
                    suppressed: 0,
                    total: 1,
                });
                Verdict::First
            }
        }
    }

    /// Records a success; returns `(failures, duration)` of the failure
    /// streak it ends, if any (log "recovered").
    pub fn success(&mut self, now: Instant) -> Option<(u64, Duration)> {
        self.state
            .take()
            .map(|f| (f.total, now.saturating_duration_since(f.since)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_logged_at_doubling_intervals_and_recovery_once() {
        let mut t = Throttle::new(Duration::from_secs(1), Duration::from_secs(8));
        let t0 = Instant::now();
        let mut logged = Vec::new();
        // A failure every 100 ms for 30 s.
        for i in 0..300u64 {
            let now = t0 + Duration::from_millis(100 * i);
            if t.failure("down", now) != Verdict::Quiet {
                logged.push(i);
            }
        }
        // t=0, 1, 3, 7, 15, 23 s: 6 lines instead of 300.
        assert_eq!(logged, vec![0, 10, 30, 70, 150, 230]);
        let (n, d) = t.success(t0 + Duration::from_secs(30)).unwrap();
        assert_eq!(n, 300);
        assert_eq!(d, Duration::from_secs(30));
        assert_eq!(t.success(t0 + Duration::from_secs(31)), None);
    }

    #[test]
    fn a_new_cause_is_logged_at_once() {
        let mut t = Throttle::new(Duration::from_secs(1), Duration::from_secs(8));
        let t0 = Instant::now();
        assert_eq!(t.failure("a", t0), Verdict::First);
        assert_eq!(t.failure("a", t0), Verdict::Quiet);
        assert_eq!(t.failure("b", t0), Verdict::First);
    }
}
