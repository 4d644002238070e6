//! Liveness: when to send a tick, when the peer counts as dead.
//!
//! OTP ticks every `net_ticktime / 4` when nothing else was written, and
//! drops a connection after a window with nothing read. This ticker keeps
//! the same contract with exact instants: a tick is due `interval` after
//! the last write, and the peer is dead `net_ticktime` after the last read.

use std::time::{Duration, Instant};

/// OTP's default `net_ticktime`.
pub const DEFAULT_NET_TICKTIME: Duration = Duration::from_secs(60);

/// What [`Ticker::handle_timeout`] asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickAction {
    /// Nothing to do yet.
    Idle,
    /// Write a tick (a zero-length frame) now.
    SendTick,
}

/// The peer sent nothing for a whole tick window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("peer not responding: nothing read for {0:?}")]
pub struct PeerNotResponding(pub Duration);

/// The tick state machine of one connection.
#[derive(Clone, Debug)]
pub struct Ticker {
    net_ticktime: Duration,
    interval: Duration,
    last_read: Instant,
    last_write: Instant,
}

impl Ticker {
    /// Starts counting at `now` (the end of the handshake). A zero
    /// `net_ticktime` is raised to 4 ms so ticks stay well defined.
    pub fn new(net_ticktime: Duration, now: Instant) -> Self {
        let net_ticktime = net_ticktime.max(Duration::from_millis(4));
        Ticker {
            net_ticktime,
            interval: net_ticktime / 4,
            last_read: now,
            last_write: now,
        }
    }

    /// The configured window.
    pub fn net_ticktime(&self) -> Duration {
        self.net_ticktime
    }

    /// The tick interval (`net_ticktime / 4`).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Something (a tick or data) was read.
    pub fn on_read(&mut self, now: Instant) {
        self.last_read = self.last_read.max(now);
    }

    /// Something (a tick or data) was written.
    pub fn on_write(&mut self, now: Instant) {
        self.last_write = self.last_write.max(now);
    }

    /// When [`Ticker::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Instant {
        (self.last_write + self.interval).min(self.last_read + self.net_ticktime)
    }

    /// Checks the deadlines. On [`TickAction::SendTick`] the write is
    /// counted here, so the caller just writes the tick.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<TickAction, PeerNotResponding> {
        if now >= self.last_read + self.net_ticktime {
            return Err(PeerNotResponding(now - self.last_read));
        }
        if now >= self.last_write + self.interval {
            self.last_write = now;
            return Ok(TickAction::SendTick);
        }
        Ok(TickAction::Idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(8);

    #[test]
    fn ticks_every_quarter_when_idle() {
        let t0 = Instant::now();
        let mut t = Ticker::new(T, t0);
        assert_eq!(t.poll_timeout(), t0 + Duration::from_secs(2));
        assert_eq!(
            t.handle_timeout(t0 + Duration::from_secs(1)),
            Ok(TickAction::Idle)
        );
        assert_eq!(
            t.handle_timeout(t0 + Duration::from_secs(2)),
            Ok(TickAction::SendTick)
        );
        assert_eq!(t.poll_timeout(), t0 + Duration::from_secs(4));
        t.on_read(t0 + Duration::from_secs(3));
        assert_eq!(
            t.handle_timeout(t0 + Duration::from_secs(4)),
            Ok(TickAction::SendTick)
        );
    }

    #[test]
    fn writes_postpone_ticks() {
        let t0 = Instant::now();
        let mut t = Ticker::new(T, t0);
        t.on_write(t0 + Duration::from_millis(1500));
        assert_eq!(t.poll_timeout(), t0 + Duration::from_millis(3500));
        assert_eq!(
            t.handle_timeout(t0 + Duration::from_secs(2)),
            Ok(TickAction::Idle)
        );
    }

    #[test]
    fn dead_after_a_window_without_reads() {
        let t0 = Instant::now();
        let mut t = Ticker::new(T, t0);
        let mut now;
        // Keep ticking, never reading: dead exactly at t0 + T.
        loop {
            now = t.poll_timeout();
            match t.handle_timeout(now) {
                Ok(_) => assert!(now < t0 + T),
                Err(e) => {
                    assert_eq!(e, PeerNotResponding(T));
                    break;
                }
            }
        }
        assert_eq!(now, t0 + T);
    }

    #[test]
    fn reads_keep_the_peer_alive() {
        let t0 = Instant::now();
        let mut t = Ticker::new(T, t0);
        for s in 1..100u64 {
            let now = t0 + Duration::from_secs(s);
            t.on_read(now);
            assert!(t.handle_timeout(now).is_ok());
        }
    }
}
