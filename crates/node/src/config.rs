//! Node configuration: names, cookie, ports, timers.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
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
    /// The `pg` scopes the node runs from the start (OTP's default scope is
    /// `pg`; Phoenix.PubSub's is `Elixir.Phoenix.PubSub`, started on demand
    /// by the PubSub API).
    pub pg_scopes: Vec<String>,
    /// TLS distribution (OTP's `-proto_dist inet_tls`): every connection,
    /// both directions, runs inside TLS. `None`: plain TCP.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Spin before sleeping (what the BEAM's schedulers do by default,
    /// `+sbwt`): for this long after a connection last read data, its
    /// task yields and looks at the socket again instead of waiting for
    /// the kernel to wake it. Cuts the wake-up of an idle CPU from a
    /// request/answer round trip at the price of CPU burnt while spinning.
    /// `None` (the default): no spinning. Plain TCP connections only: a
    /// TLS connection (`tls`) does not spin. Run a spinning node on one
    /// tokio worker (a current-thread runtime, or one worker thread): on
    /// more, each spin turn wakes another worker and the slowest round
    /// trips get slower (the node logs a warning when it starts).
    pub busy_poll: Option<Duration>,
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
            pg_scopes: vec!["pg".to_owned()],
            tls: None,
            busy_poll: None,
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
    /// No cookie given, no RELEASE_COOKIE/ERLANG_COOKIE, no readable
    /// ~/.erlang.cookie (the path).
    #[error("no cookie: set RELEASE_COOKIE (or ERLANG_COOKIE), give a cookie file, or create {0} (chmod 400)")]
    NoCookie(String),
    /// A cookie source that holds the empty cookie.
    #[error("the cookie from {0} is empty; an empty cookie authenticates nobody: set RELEASE_COOKIE (or ERLANG_COOKIE) to the cluster's cookie, or put it in a file given as the cookie file or in ~/.erlang.cookie (chmod 400)")]
    EmptyCookie(CookieSource),
    /// A cookie file that cannot be read.
    #[error("cannot read the cookie file {path}: {source}")]
    CookieFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `~/.erlang.cookie` readable by group or others (OTP refuses it too).
    #[error("{path} is readable by its group or by others (mode {mode:03o}); OTP refuses such a cookie file too: chmod 400 {path}")]
    CookieFileMode {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

/// Where a cookie was found (never the cookie itself).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CookieSource {
    /// Given as the text itself (`--cookie`).
    Explicit,
    /// An environment variable (`RELEASE_COOKIE`, `ERLANG_COOKIE`).
    Env(&'static str),
    /// A file given as the cookie file (`--cookie-file`, `agent.cookie_file`).
    File(PathBuf),
    /// `$HOME/.erlang.cookie`.
    HomeFile(PathBuf),
}

impl std::fmt::Display for CookieSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CookieSource::Explicit => f.write_str("--cookie"),
            CookieSource::Env(v) => write!(f, "env {v}"),
            CookieSource::File(p) | CookieSource::HomeFile(p) => write!(f, "file {}", p.display()),
        }
    }
}

/// A cookie file's text and permission bits.
#[derive(Clone, Debug)]
pub struct CookieFile {
    /// The file's text.
    pub text: String,
    /// Its permission bits (`st_mode & 0o777`).
    pub mode: u32,
}

/// Reads a cookie file from the file system.
pub fn read_cookie_file(path: &Path) -> std::io::Result<CookieFile> {
    use std::os::unix::fs::PermissionsExt;
    let f = std::fs::File::open(path)?;
    let mode = f.metadata()?.permissions().mode() & 0o777;
    let text = std::io::read_to_string(f)?;
    Ok(CookieFile { text, mode })
}

/// Where to look for a cookie, besides the environment and
/// `~/.erlang.cookie`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CookieLookup<'a> {
    /// The cookie text itself (`--cookie`).
    pub explicit: Option<&'a str>,
    /// A file holding it (`--cookie-file`, `agent.cookie_file`).
    pub file: Option<&'a Path>,
}

/// The one cookie lookup of every erlkube command and the agent, first
/// found wins: the explicit text, the cookie file, `RELEASE_COOKIE`,
/// `ERLANG_COOKIE`, `$HOME/.erlang.cookie`. Environment values are taken
/// as they are (as `-setcookie "$RELEASE_COOKIE"` gives them to the
/// BEAM); files are trimmed of surrounding whitespace (a trailing newline).
/// An empty cookie from any source is an error, not a fall-through; so is
/// a `~/.erlang.cookie` readable by group or others, as in OTP.
///
/// `env` reads a variable, `read` a file ([`read_cookie_file`] for the
/// real ones).
pub fn lookup_cookie(
    lookup: CookieLookup<'_>,
    env: impl Fn(&str) -> Option<String>,
    read: impl Fn(&Path) -> std::io::Result<CookieFile>,
) -> Result<(Cookie, CookieSource), ConfigError> {
    let nonempty = |text: &str, source: CookieSource| {
        if text.is_empty() {
            Err(ConfigError::EmptyCookie(source))
        } else {
            Ok((Cookie::new(text), source))
        }
    };
    if let Some(c) = lookup.explicit {
        return nonempty(c, CookieSource::Explicit);
    }
    if let Some(path) = lookup.file {
        let f = read(path).map_err(|source| ConfigError::CookieFile {
            path: path.to_owned(),
            source,
        })?;
        return nonempty(f.text.trim(), CookieSource::File(path.to_owned()));
    }
    for var in ["RELEASE_COOKIE", "ERLANG_COOKIE"] {
        if let Some(c) = env(var) {
            return nonempty(&c, CookieSource::Env(var));
        }
    }
    let path = PathBuf::from(env("HOME").unwrap_or_default()).join(".erlang.cookie");
    match read(&path) {
        Ok(f) if f.mode & 0o077 != 0 => Err(ConfigError::CookieFileMode {
            path: path.display().to_string(),
            mode: f.mode,
        }),
        Ok(f) => nonempty(f.text.trim(), CookieSource::HomeFile(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ConfigError::NoCookie(path.display().to_string()))
        }
        Err(source) => Err(ConfigError::CookieFile { path, source }),
    }
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

/// [`lookup_cookie`] with `explicit` (if any), this process's
/// environment and the real file system.
pub fn find_cookie(explicit: Option<&str>) -> Result<Cookie, ConfigError> {
    lookup_cookie(
        CookieLookup {
            explicit,
            file: None,
        },
        |v| std::env::var(v).ok(),
        read_cookie_file,
    )
    .map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(
        explicit: Option<&str>,
        file: Option<&str>,
        env: &[(&str, &str)],
        files: &[(&str, &str, u32)],
    ) -> Result<(String, String), String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let file = file.map(Path::new);
        lookup_cookie(
            CookieLookup { explicit, file },
            |v| env.get(v).cloned(),
            |p| {
                files
                    .iter()
                    .find(|(name, _, _)| Path::new(name) == p)
                    .map(|(_, text, mode)| CookieFile {
                        text: text.to_string(),
                        mode: *mode,
                    })
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
            },
        )
        .map(|(c, s)| (c.expose().to_owned(), s.to_string()))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn one_order_for_every_source() {
        let home = [
            ("/h/.erlang.cookie", "home\n", 0o400),
            ("/f", " file\n", 0o644),
        ];
        let env = [
            ("HOME", "/h"),
            ("RELEASE_COOKIE", "rel"),
            ("ERLANG_COOKIE", "erl"),
        ];
        let ok = |e, f, env: &[(&str, &str)]| lookup(e, f, env, &home).unwrap();
        assert_eq!(
            ok(Some("x"), Some("/f"), &env),
            ("x".into(), "--cookie".into())
        );
        assert_eq!(
            ok(None, Some("/f"), &env),
            ("file".into(), "file /f".into())
        );
        assert_eq!(
            ok(None, None, &env),
            ("rel".into(), "env RELEASE_COOKIE".into())
        );
        assert_eq!(
            ok(
                None,
                None,
                &env[..1]
                    .iter()
                    .chain(&env[2..])
                    .copied()
                    .collect::<Vec<_>>()
            ),
            ("erl".into(), "env ERLANG_COOKIE".into())
        );
        assert_eq!(
            ok(None, None, &env[..1]),
            ("home".into(), "file /h/.erlang.cookie".into())
        );
        // Environment values are taken as they are.
        assert_eq!(ok(None, None, &[("RELEASE_COOKIE", " a b\n")]).0, " a b\n");
    }

    #[test]
    fn empty_cookies_and_open_home_files_are_refused_with_the_fix() {
        let files = [("/h/.erlang.cookie", "c", 0o644), ("/e", " \n", 0o400)];
        for (explicit, file, env) in [
            (Some(""), None, &[][..]),
            (None, Some("/e"), &[][..]),
            (None, None, &[("RELEASE_COOKIE", "")][..]),
            (None, None, &[("ERLANG_COOKIE", "")][..]),
        ] {
            let e = lookup(explicit, file, env, &files).unwrap_err();
            assert!(
                e.contains("is empty") && e.contains("set RELEASE_COOKIE"),
                "{e}"
            );
        }
        let e = lookup(None, None, &[("HOME", "/h")], &files).unwrap_err();
        assert!(
            e.contains("mode 644") && e.contains("chmod 400 /h/.erlang.cookie"),
            "{e}"
        );
        let e = lookup(None, None, &[("HOME", "/nope")], &files).unwrap_err();
        assert!(e.starts_with("no cookie: set RELEASE_COOKIE"), "{e}");
        let e = lookup(None, Some("/missing"), &[], &files).unwrap_err();
        assert!(e.contains("cannot read the cookie file /missing"), "{e}");
    }

    #[tokio::test]
    async fn a_node_with_the_empty_cookie_does_not_start() {
        let mut c = NodeConfig::new("empty@127.0.0.1", Cookie::new(""));
        c.listen_ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        c.register_with_epmd = false;
        let e = crate::Node::start(c).await.err().expect("refused");
        assert!(matches!(e, crate::NodeError::EmptyCookie), "{e}");
    }
}
