//! Free loopback ports.

use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};

/// True when `port` can be bound right now on 127.0.0.1 and (if the host has
/// IPv6) on ::1.
pub fn loopback_port_is_free(port: u16) -> bool {
    if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
        return false;
    }
    match TcpListener::bind((Ipv6Addr::LOCALHOST, port)) {
        Ok(_) => true,
        // No IPv6 on this host: the IPv4 check is all there is.
        Err(e) => e.kind() == std::io::ErrorKind::AddrNotAvailable,
    }
}

/// A TCP port that is free on the loopback interfaces at the time of the
/// call (asked from the kernel with port 0, then checked on IPv6 too).
///
/// Another process may take it before you bind it; callers that start a
/// daemon on it should retry with a new port when the bind fails (as
/// [`crate::OtpEpmd::start`] does).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("binding 127.0.0.1:0");
        if port != 4369 && loopback_port_is_free(port) {
            return port;
        }
    }
    panic!("no free loopback port found in 100 attempts");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        let p = free_port();
        assert_ne!(p, 0);
        assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok());
    }

    #[test]
    fn taken_port_is_not_free() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        assert!(!loopback_port_is_free(l.local_addr().unwrap().port()));
    }
}
