//! The port mapper's registry: which names are registered, on which
//! connection, and with which creation. No IO; the caller passes the
//! current time (seconds) and identifies connections by a [`ConnId`].
//!
//! Semantics follow OTP's `epmd_srv.c`:
//!
//! - a name is registered for as long as its registering connection lives:
//!   the IO layer calls [`Registry::unregister_conn`] when it closes;
//! - registering a name that is already registered is refused;
//! - creation: a per-name counter, started from the clock the first time a
//!   name is seen and incremented on each re-registration, never 0..=3;
//!   nodes with highest version < 6 get the old form `counter % 3 + 1`;
//! - up to [`MAX_UNREG`] unregistered names remember their counter;
//! - `extra` is kept and returned unchanged to PORT_PLEASE2 askers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use super::{NameEntry, NodeInfo, MAX_EXTRA_BYTES, MAX_NAME_BYTES, MAX_NAME_CHARS};

/// Identifies the connection a registration lives on.
pub type ConnId = u64;

/// How many unregistered names keep their creation counter (OTP: 1000).
pub const MAX_UNREG: usize = 1000;

/// Why a registration was refused (the reply is result 1, creation 99).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The name is already registered by another live connection.
    #[error("node name {0:?} is already registered")]
    NameTaken(String),
    /// Longer than 255 characters or 1020 bytes.
    #[error("node name is too long")]
    NameTooLong,
    /// Extra data longer than 1020 bytes.
    #[error("extra data of {0} bytes is too long")]
    ExtraTooLong(usize),
    /// This connection already holds a registration.
    #[error("connection already holds a registration")]
    AlreadyRegistered,
}

#[derive(Debug)]
struct Active {
    info: NodeInfo,
    conn: ConnId,
    counter: u32,
    seq: u64,
}

#[derive(Debug)]
struct Old {
    counter: u32,
    port: u16,
    conn: ConnId,
    seq: u64,
}

/// The set of registered nodes, plus the memory of recently unregistered
/// names' creation counters.
#[derive(Debug, Default)]
pub struct Registry {
    active: HashMap<String, Active>,
    by_conn: HashMap<ConnId, String>,
    /// Registration order (newest last); OTP lists newest first.
    order: BTreeMap<u64, String>,
    old: HashMap<String, Old>,
    /// Unregistration order with lazy deletion: (seq, name).
    old_order: VecDeque<(u64, String)>,
    seq: u64,
    names_cache: Option<Arc<[u8]>>,
    max_unreg: usize,
}

fn bump(counter: u32) -> u32 {
    let c = counter.wrapping_add(1);
    if c < 4 {
        4
    } else {
        c
    }
}

/// The creation a node of `highest_version` gets from `counter`.
pub fn creation_for(counter: u32, highest_version: u16) -> u32 {
    if highest_version >= 6 {
        counter
    } else {
        counter % 3 + 1
    }
}

impl Registry {
    /// An empty registry remembering up to [`MAX_UNREG`] old names.
    pub fn new() -> Registry {
        Registry::with_unreg_limit(MAX_UNREG)
    }

    /// An empty registry remembering up to `max_unreg` old names (OTP uses
    /// 5 in debug mode).
    pub fn with_unreg_limit(max_unreg: usize) -> Registry {
        Registry {
            max_unreg,
            ..Registry::default()
        }
    }

    /// Number of registered nodes.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// True when no node is registered.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Registers `info` on connection `conn`; `now_secs` seeds the creation
    /// counter of a name never seen before. Returns the creation to reply.
    pub fn register(
        &mut self,
        conn: ConnId,
        info: NodeInfo,
        now_secs: u64,
    ) -> Result<u32, RegisterError> {
        if info.name.len() > MAX_NAME_BYTES || info.name.chars().count() > MAX_NAME_CHARS {
            return Err(RegisterError::NameTooLong);
        }
        if info.extra.len() > MAX_EXTRA_BYTES {
            return Err(RegisterError::ExtraTooLong(info.extra.len()));
        }
        if self.active.contains_key(&info.name) {
            return Err(RegisterError::NameTaken(info.name));
        }
        if self.by_conn.contains_key(&conn) {
            return Err(RegisterError::AlreadyRegistered);
        }
        let counter = match self.old.remove(&info.name) {
            Some(old) => bump(old.counter),
            None => bump(now_secs as u32),
        };
        self.seq += 1;
        let seq = self.seq;
        let creation = creation_for(counter, info.highest_version);
        self.order.insert(seq, info.name.clone());
        self.by_conn.insert(conn, info.name.clone());
        self.active.insert(
            info.name.clone(),
            Active {
                info,
                conn,
                counter,
                seq,
            },
        );
        self.names_cache = None;
        Ok(creation)
    }

    /// The registration of `name`, if any.
    pub fn lookup(&self, name: &str) -> Option<&NodeInfo> {
        self.active.get(name).map(|a| &a.info)
    }

    /// The creation currently assigned to `name`, if registered.
    pub fn creation(&self, name: &str) -> Option<u32> {
        self.active
            .get(name)
            .map(|a| creation_for(a.counter, a.info.highest_version))
    }

    /// The name registered on `conn`, if any.
    pub fn name_of(&self, conn: ConnId) -> Option<&str> {
        self.by_conn.get(&conn).map(|s| s.as_str())
    }

    fn unregister_name(&mut self, name: &str) -> Option<ConnId> {
        let a = self.active.remove(name)?;
        self.by_conn.remove(&a.conn);
        self.order.remove(&a.seq);
        self.seq += 1;
        let seq = self.seq;
        self.old.insert(
            name.to_owned(),
            Old {
                counter: a.counter,
                port: a.info.port,
                conn: a.conn,
                seq,
            },
        );
        self.old_order.push_back((seq, name.to_owned()));
        while self.old.len() > self.max_unreg {
            let Some((s, n)) = self.old_order.pop_front() else {
                break;
            };
            if self.old.get(&n).is_some_and(|o| o.seq == s) {
                self.old.remove(&n);
            }
        }
        // Keep the lazy queue bounded too.
        if self.old_order.len() > 2 * self.max_unreg + 16 {
            let old = &self.old;
            self.old_order
                .retain(|(s, n)| old.get(n).is_some_and(|o| o.seq == *s));
        }
        self.names_cache = None;
        Some(a.conn)
    }

    /// The connection `conn` closed: its registration (if any) ends.
    /// Returns the name that was unregistered.
    pub fn unregister_conn(&mut self, conn: ConnId) -> Option<String> {
        let name = self.by_conn.get(&conn)?.clone();
        self.unregister_name(&name);
        Some(name)
    }

    /// STOP_REQ: unregisters `name` and returns the connection that held it
    /// (the IO layer closes it), or `None` if it was not registered.
    pub fn stop(&mut self, name: &str) -> Option<ConnId> {
        self.unregister_name(name)
    }

    /// Registered nodes, newest first (OTP's order).
    pub fn entries(&self) -> impl Iterator<Item = &NodeInfo> + '_ {
        self.order.values().rev().map(|n| &self.active[n].info)
    }

    /// Registered nodes as NAMES entries, newest first.
    pub fn names(&self) -> Vec<NameEntry> {
        self.entries()
            .map(|i| NameEntry {
                name: i.name.clone(),
                port: i.port,
            })
            .collect()
    }

    /// The complete NAMES response for a daemon on `epmd_port`: the port as
    /// 4 bytes, then `name N at port P\n` per node. Cached until the
    /// registry changes.
    pub fn names_response(&mut self, epmd_port: u16) -> Arc<[u8]> {
        if let Some(c) = &self.names_cache {
            if c[..4] == (epmd_port as u32).to_be_bytes() {
                return c.clone();
            }
        }
        let mut out = Vec::with_capacity(4 + self.active.len() * 32);
        out.extend_from_slice(&(epmd_port as u32).to_be_bytes());
        for i in self.entries() {
            use std::io::Write;
            let _ = writeln!(out, "name {} at port {}", i.name, i.port);
        }
        let arc: Arc<[u8]> = out.into();
        self.names_cache = Some(arc.clone());
        arc
    }

    /// The complete DUMP response (OTP's format, each line NUL-terminated
    /// as OTP sends it; the "fd" is the connection id).
    pub fn dump_response(&self, epmd_port: u16) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::new();
        out.extend_from_slice(&(epmd_port as u32).to_be_bytes());
        for n in self.order.values().rev() {
            let a = &self.active[n];
            let _ = write!(
                out,
                "active name     <{}> at port {}, fd = {}\n\0",
                n, a.info.port, a.conn
            );
        }
        for (s, n) in &self.old_order {
            if let Some(o) = self.old.get(n).filter(|o| o.seq == *s) {
                let _ = write!(
                    out,
                    "old/unused name <{}>, port = {}, fd = {} \n\0",
                    n, o.port, o.conn
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epmd::{NODE_TYPE_NORMAL, PROTOCOL_TCP};

    fn info(name: &str, port: u16, high: u16) -> NodeInfo {
        NodeInfo {
            port,
            node_type: NODE_TYPE_NORMAL,
            protocol: PROTOCOL_TCP,
            highest_version: high,
            lowest_version: 5,
            name: name.into(),
            extra: vec![9, 8],
        }
    }

    #[test]
    fn register_lookup_and_unregister_with_the_connection() {
        let mut r = Registry::new();
        let c = r.register(1, info("a", 100, 6), 1_700_000_000).unwrap();
        assert_eq!(c, 1_700_000_001);
        assert_eq!(r.lookup("a").unwrap().extra, vec![9, 8]);
        assert_eq!(r.unregister_conn(1).as_deref(), Some("a"));
        assert!(r.lookup("a").is_none());
        assert_eq!(r.unregister_conn(1), None);
    }

    #[test]
    fn creation_increments_per_name_and_skips_0_to_3() {
        let mut r = Registry::new();
        let c1 = r.register(1, info("a", 1, 6), u32::MAX as u64 - 1).unwrap();
        assert_eq!(c1, u32::MAX);
        r.unregister_conn(1);
        let c2 = r.register(2, info("a", 1, 6), 0).unwrap();
        assert_eq!(c2, 4, "wraps past 0..=3");
        r.unregister_conn(2);
        assert_eq!(r.register(3, info("a", 1, 6), 0).unwrap(), 5);
        // Another name starts from the clock.
        assert_eq!(r.register(4, info("b", 1, 6), 10).unwrap(), 11);
        // Clock values 0..=2 still never give 0..=3.
        assert_eq!(r.register(5, info("c", 1, 6), 1).unwrap(), 4);
    }

    #[test]
    fn old_nodes_get_creation_1_to_3() {
        let mut r = Registry::new();
        for (conn, now) in (1..20).zip(100..) {
            let c = r.register(conn, info("old", 1, 5), now).unwrap();
            assert!((1..=3).contains(&c));
            r.unregister_conn(conn);
        }
    }

    #[test]
    fn duplicate_names_are_refused() {
        let mut r = Registry::new();
        r.register(1, info("a", 1, 6), 0).unwrap();
        assert_eq!(
            r.register(2, info("a", 2, 6), 0),
            Err(RegisterError::NameTaken("a".into()))
        );
        assert_eq!(r.lookup("a").unwrap().port, 1);
        assert_eq!(
            r.register(1, info("b", 2, 6), 0),
            Err(RegisterError::AlreadyRegistered)
        );
    }

    #[test]
    fn limits_are_refused() {
        let mut r = Registry::new();
        let long = "x".repeat(256);
        assert_eq!(
            r.register(1, info(&long, 1, 6), 0),
            Err(RegisterError::NameTooLong)
        );
        let mut big = info("a", 1, 6);
        big.extra = vec![0; MAX_EXTRA_BYTES + 1];
        assert_eq!(
            r.register(1, big, 0),
            Err(RegisterError::ExtraTooLong(MAX_EXTRA_BYTES + 1))
        );
        assert!(r.is_empty());
    }

    #[test]
    fn stop_returns_the_connection() {
        let mut r = Registry::new();
        r.register(7, info("a", 1, 6), 0).unwrap();
        assert_eq!(r.stop("a"), Some(7));
        assert_eq!(r.stop("a"), None);
        assert_eq!(r.name_of(7), None);
    }

    #[test]
    fn names_text_newest_first_and_cached() {
        let mut r = Registry::new();
        r.register(1, info("a", 10, 6), 0).unwrap();
        r.register(2, info("b", 20, 6), 0).unwrap();
        let t = r.names_response(4369);
        assert_eq!(&t[..4], &4369u32.to_be_bytes());
        assert_eq!(&t[4..], b"name b at port 20\nname a at port 10\n");
        assert!(Arc::ptr_eq(&t, &r.names_response(4369)));
        r.unregister_conn(2);
        assert_eq!(&r.names_response(4369)[4..], b"name a at port 10\n");
    }

    #[test]
    fn dump_lists_active_then_old() {
        let mut r = Registry::new();
        r.register(1, info("a", 10, 6), 0).unwrap();
        r.register(2, info("b", 20, 6), 0).unwrap();
        r.unregister_conn(1);
        let d = r.dump_response(1);
        assert_eq!(
            &d[4..],
            b"active name     <b> at port 20, fd = 2\n\0old/unused name <a>, port = 10, fd = 1 \n\0"
        );
    }

    #[test]
    fn unreg_memory_is_bounded() {
        let mut r = Registry::with_unreg_limit(3);
        for i in 0..10u64 {
            r.register(i, info(&format!("n{i}"), 1, 6), 100).unwrap();
            r.unregister_conn(i);
        }
        assert_eq!(r.old.len(), 3);
        // A forgotten name starts again from the clock.
        assert_eq!(r.register(99, info("n0", 1, 6), 500).unwrap(), 501);
        // A remembered one continues its counter.
        assert_eq!(r.register(98, info("n9", 1, 6), 500).unwrap(), 102);
    }
}
