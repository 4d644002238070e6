//! Arbitrary bytes into both handshake sides, split at arbitrary points:
//! no panic, and a failed side stays failed.
#![no_main]

use std::time::{Duration, Instant};

use erlkube_proto::dist::handshake::{Acceptor, Cookie, HandshakeConfig, HandshakeEvent, Initiator, Status};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let cfg = |n: &str| HandshakeConfig::new(n, Cookie::new("fuzz"), 1);
    let (split, rest) = match data.split_first() {
        Some((s, r)) => (*s as usize, r),
        None => return,
    };
    let cut = split.min(rest.len());
    let mut acc = Acceptor::new(cfg("b@h"), 7, now);
    let mut init = Initiator::new(cfg("a@h"), "b@h", 9, now);
    let old = Initiator::new_old_form(cfg("a@h"), "b@h", 9, now);
    drop(old);
    for chunk in [&rest[..cut], &rest[cut..]] {
        let r = acc.handle_input(chunk, now);
        while let Some(ev) = acc.poll_event() {
            if let HandshakeEvent::NameReceived(p) = ev {
                let status = if p.node.len() % 2 == 0 { Status::Ok } else { Status::Alive };
                let _ = acc.set_status(status, now);
            }
        }
        if r.is_err() {
            assert!(acc.handle_input(b"x", now).is_err());
        }
        let r = init.handle_input(chunk, now);
        while init.poll_event().is_some() {}
        if r.is_err() {
            assert!(init.handle_input(b"x", now).is_err());
        }
        while acc.poll_transmit().is_some() {}
        while init.poll_transmit().is_some() {}
    }
    let _ = acc.handle_timeout(now + Duration::from_secs(60));
    let _ = init.handle_timeout(now + Duration::from_secs(60));
});
