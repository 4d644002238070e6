//! Node configuration: names, cookie, ports, timers.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use erlkube_proto::dist::{Cookie, Limits};

/// OTP's default epmd port.
pub const DEFAULT_EPMD_PORT: u16 = 4369;

/// How the node listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A fixed port; not registered with epmd unless `register` is set.
    Port(u16),
    /// An ephemeral port registered with epmd (the usual BEAM way).
    Ephemeral,
}

/// Everything a [`crate::Node`] needs to start.
///
/// ```
/// use erlkube_node::{find_cookie, long_name, NodeConfig};
///
/// let mut config = NodeConfig::new(long_name("rust@127.0.0.1")?, find_cookie(Some("secret"))?);
/// config.hidden = true; // not in the peers' nodes()
/// config.register_with_epmd = false; // reached by --via / known ports only
/// assert_eq!(config.name, "rust@127.0.0.1");
/// // Names erl refuses are refused with its reason.
/// assert!(long_name("fo o@127.0.0.1").is_err());
/// # Ok::<(), erlkube_node::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The full node name, `alive@host`.
    pub name: String,
    /// The distribution cookie.
    pub cookie: Cookie,
    /// A hidden node does not show in the peers' `nodes()`.
    pub hidden: bool,
    /// The listening address (the IP part; the port comes from `listen`).
    pub listen_ip: IpAddr,
    /// Fixed or ephemeral listening port.
    pub listen: Listen,
    /// Register with epmd (default: true for an ephemeral port, false for a fixed one).
    pub register_with_epmd: bool,
    /// Where epmd runs (its port; the host is the peer's host for lookups
    /// and `epmd_ip` for registration).
    pub epmd_port: u16,
    /// The epmd to register with.
    pub epmd_ip: IpAddr,
    /// Peers reachable at a known port without asking epmd.
    pub known_ports: HashMap<String, u16>,
    /// Peers dialled at a fixed socket address: the name's host is not
    /// resolved and epmd is not asked (e.g. the local end of a
    /// `kubectl port-forward` to the peer's distribution port). The
    /// handshake is the usual one, under the peer's real name. Takes
    /// precedence over [`NodeConfig::known_ports`].
    pub known_addrs: HashMap<String, SocketAddr>,
    /// The tick window.
    pub net_ticktime: Duration,
    /// The limit on each handshake step and on connecting.
    pub setup_timeout: Duration,
    /// What a peer may make this node buffer.
    pub limits: Limits,
    /// Unused since senders encode into one shared buffer per connection
    /// (the bound is [`NodeConfig::write_high_water`], in bytes); kept so
    /// existing configurations still compile.
    pub outbound_queue: usize,
    /// Bytes encoded but not yet written on a connection before senders
    /// wait (backpressure).
    pub write_high_water: usize,
}

impl NodeConfig {
    /// A visible node on an ephemeral port registered with the epmd at
    /// `ERL_EPMD_PORT` (or 4369), `net_ticktime` 60 s.
    pub fn new(name: impl Into<String>, cookie: Cookie) -> Self {
        let epmd_port = std::env::var("ERL_EPMD_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(DEFAULT_EPMD_PORT);
        NodeConfig {
            name: name.into(),
            cookie,
            hidden: false,
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            listen: Listen::Ephemeral,
            register_with_epmd: true,
            epmd_port,
            epmd_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            known_ports: HashMap::new(),
            known_addrs: HashMap::new(),
            net_ticktime: erlkube_proto::dist::tick::DEFAULT_NET_TICKTIME,
            setup_timeout: erlkube_proto::dist::handshake::DEFAULT_STEP_TIMEOUT,
            limits: Limits::default(),
            outbound_queue: 1024,
            write_high_water: 1 << 20,
        }
    }

    /// Listens on a fixed port, without epmd.
    pub fn fixed_port(mut self, port: u16) -> Self {
        self.listen = Listen::Port(port);
        self.register_with_epmd = false;
        self
    }
}

/// Errors about names and cookies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A node name `erl` would refuse (the reason says why).
    #[error(transparent)]
    InvalidName(#[from] erlkube_proto::name::NodeNameError),
    /// No cookie given, no RELEASE_COOKIE, no readable ~/.erlang.cookie.
    #[error("no cookie: pass one, set RELEASE_COOKIE, or create {0}")]
    NoCookie(String),
}

/// Completes a short name (`--sname`): `alive` → `alive@<short hostname>`;
/// names that already have a host are checked and kept.
pub fn short_name(name: &str) -> Result<String, ConfigError> {
    complete(name, false)
}

/// Completes a long name (`--name`): `alive` → `alive@<hostname>`.
pub fn long_name(name: &str) -> Result<String, ConfigError> {
    complete(name, true)
}

fn complete(name: &str, long: bool) -> Result<String, ConfigError> {
    use erlkube_proto::name::{check_alive, check_node_name, NameMode};
    let mode = if long {
        NameMode::Long
    } else {
        NameMode::Short
    };
    if name.contains('@') {
        check_node_name(name, mode)?;
        return Ok(name.to_owned());
    }
    check_alive(name)?;
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host = if long {
        host
    } else {
        host.split('.').next().unwrap_or("localhost").to_owned()
    };
    let full = format!("{name}@{host}");
    check_node_name(&full, mode)?;
    Ok(full)
}

/// The cookie as OTP finds it: explicit, else `RELEASE_COOKIE`, else
/// `$HOME/.erlang.cookie` (trimmed).
pub fn find_cookie(explicit: Option<&str>) -> Result<Cookie, ConfigError> {
    if let Some(c) = explicit {
        return Ok(Cookie::new(c));
    }
    if let Ok(c) = std::env::var("RELEASE_COOKIE") {
        if !c.is_empty() {
            return Ok(Cookie::new(c));
        }
    }
    let path = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".erlang.cookie");
    match std::fs::read_to_string(&path) {
        Ok(c) if !c.trim().is_empty() => Ok(Cookie::new(c.trim())),
        _ => Err(ConfigError::NoCookie(path.display().to_string())),
    }
}
