//! Node names (`alive@host`): the one check every layer uses, with the
//! rules and reasons of OTP's `net_kernel` (`valid_name_head/1`,
//! `validate_hostname/1`, `create_hostpart/2`), so a name `erl` refuses is
//! refused here too, saying why.
//!
//! ```
//! use erlkube_proto::name::{check_node_name, NameMode, NodeNameError};
//!
//! assert_eq!(check_node_name("app@10.0.0.5", NameMode::Long), Ok(("app", "10.0.0.5")));
//! assert!(matches!(
//!     check_node_name("fo o@10.0.0.5", NameMode::Long),
//!     Err(NodeNameError::AliveCharacters(_))
//! ));
//! assert!(matches!(
//!     check_node_name("a@b.c", NameMode::Short),
//!     Err(NodeNameError::ShortHostWithDot(_))
//! ));
//! ```

/// Long names (`-name`, hosts may be FQDNs or IP addresses) or short names
/// (`-sname`, hosts without a dot); `Any` checks only what both share, for
/// names met on the wire or in discovery answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameMode {
    /// `-name`: the host part may hold dots.
    Long,
    /// `-sname`: the host part may not hold a dot.
    Short,
    /// Either mode (a peer's name, a discovered name).
    Any,
}

/// Longest node name in characters (the distribution protocol's limit).
pub const MAX_NODE_NAME_CHARS: usize = 255;

/// Why a node name is refused; each message says what `erl` would say.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeNameError {
    /// No `@`, or an empty host part.
    #[error("invalid node name {0:?}: it needs a host part, as in name@host")]
    NoHost(String),
    /// An empty part before `@`.
    #[error("invalid node name {0:?}: the part before @ is empty")]
    EmptyAlive(String),
    /// The part before `@` holds something other than `[0-9A-Za-z_-]`.
    #[error(
        "invalid node name {0:?}: the part before @ may hold only letters, digits, `_` and `-` \
         (erl says \"Invalid node name!\")"
    )]
    AliveCharacters(String),
    /// The host part holds a space, a control character, a second `@` or a
    /// character above U+00FF (erl allows `!`..`ÿ`).
    #[error(
        "invalid node name {0:?}: the host part may not hold spaces, control characters \
         or a second @ (erl says \"Invalid node name!\")"
    )]
    HostCharacters(String),
    /// A short name (`-sname`) whose host has a dot.
    #[error(
        "invalid short node name {0:?}: a short name's host has no dots; use a long name \
         (--name) for a fully qualified host or an IP address (erl says \"Can't set short node name!\")"
    )]
    ShortHostWithDot(String),
    /// More than [`MAX_NODE_NAME_CHARS`] characters.
    #[error("invalid node name {0:?}: longer than 255 characters")]
    TooLong(String),
}

/// Checks `name` as `erl` would in `mode` and returns its (alive, host) parts.
pub fn check_node_name(name: &str, mode: NameMode) -> Result<(&str, &str), NodeNameError> {
    let owned = || name.to_owned();
    if name.chars().count() > MAX_NODE_NAME_CHARS {
        return Err(NodeNameError::TooLong(owned()));
    }
    let Some((alive, host)) = name.split_once('@') else {
        return Err(NodeNameError::NoHost(owned()));
    };
    alive_ok(alive).map_err(|e| e(owned()))?;
    if host.is_empty() {
        return Err(NodeNameError::NoHost(owned()));
    }
    // net_kernel: "^[!-ÿ]*$"; a second @ would split differently on each side.
    if !host
        .chars()
        .all(|c| ('!'..='\u{ff}').contains(&c) && c != '@')
    {
        return Err(NodeNameError::HostCharacters(owned()));
    }
    if mode == NameMode::Short && host.contains('.') {
        return Err(NodeNameError::ShortHostWithDot(owned()));
    }
    Ok((alive, host))
}

/// Checks the part before `@` alone (`--sname app` before a host is added).
pub fn check_alive(alive: &str) -> Result<(), NodeNameError> {
    alive_ok(alive).map_err(|e| e(alive.to_owned()))
}

/// net_kernel's `valid_name_head/1`: `^[0-9A-Za-z_\-]+$`.
fn alive_ok(alive: &str) -> Result<(), fn(String) -> NodeNameError> {
    if alive.is_empty() {
        return Err(NodeNameError::EmptyAlive);
    }
    if !alive
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(NodeNameError::AliveCharacters);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each verdict checked against `erl -name N` / `erl -sname N` (OTP 25).
    #[test]
    fn what_erl_accepts_and_refuses() {
        use NameMode::*;
        for (name, mode) in [
            ("a@localhost", Long),
            ("a@localhost", Short),
            ("app-0_x@10.0.0.5", Long),
            ("A9@app-0.app-headless.ns.svc.cluster.local", Long),
            ("a@::1", Long),
        ] {
            assert!(check_node_name(name, mode).is_ok(), "{name}");
        }
        for (name, mode) in [
            ("fo o@127.0.0.1", Long),
            ("a@b c", Long),
            ("@h", Long),
            ("a@", Long),
            ("a", Long),
            ("a@b.c", Short),
            ("a.b@h", Long),
            ("a@b@c", Any),
            ("a@b\tc", Any),
        ] {
            assert!(check_node_name(name, mode).is_err(), "{name}");
        }
        assert!(check_node_name(&format!("a@{}", "h".repeat(300)), Any).is_err());
    }
}
