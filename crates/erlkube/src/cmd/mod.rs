//! One module per subcommand.

pub mod agent;
pub mod env;
pub mod epmd;
pub mod formation;
pub mod log;
pub mod manifests;
pub mod node;
pub mod node_discovery;
pub mod nodename;
pub mod ping;
pub mod pubsub;
pub mod remsh;
pub mod rpc;
pub mod term;

/// A `--timeout`-style value: a duration with its unit (`500ms`, `5s`,
/// `1m`), read by the same parser as the configuration file's durations.
/// A bare number is refused: it meant seconds to `ping` and milliseconds to
/// `rpc`, so guessing would be wrong for one of them.
pub fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    match erlkube_discovery::config::parse_duration(text) {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => Err("must be more than zero, e.g. \"5s\"".to_owned()),
        None if !text.is_empty() && text.trim().chars().all(|c| c.is_ascii_digit()) => {
            Err(format!(
                "needs a unit: \"{}s\" or \"{}ms\"",
                text.trim(),
                text.trim()
            ))
        }
        None => Err("must be a duration like \"500ms\", \"5s\" or \"1m\"".to_owned()),
    }
}

/// `--net-ticktime`: OTP's bare seconds (`-kernel net_ticktime 60`) or a
/// duration with its unit (`1m`).
pub fn parse_seconds_or_duration(text: &str) -> Result<std::time::Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("must be more than zero".to_owned()),
        Ok(s) => Ok(std::time::Duration::from_secs(s)),
        Err(_) => parse_duration_arg(text),
    }
}

const COOKIE_HEADING: &str =
    "Cookie: $RELEASE_COOKIE, else $ERLANG_COOKIE, else ~/.erlang.cookie (owner-only); or";

/// The cookie options of every command that joins a cluster. The
/// environment comes first (`RELEASE_COOKIE`, `ERLANG_COOKIE`), then
/// `~/.erlang.cookie`; the flags override them.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CookieArgs {
    /// Read the cookie from this file (surrounding whitespace trimmed).
    #[arg(long, value_name = "PATH", conflicts_with = "cookie", help_heading = COOKIE_HEADING)]
    cookie_file: Option<std::path::PathBuf>,
    /// The cookie itself. Visible to every user in `ps`: prefer
    /// RELEASE_COOKIE or --cookie-file.
    #[arg(long, help_heading = COOKIE_HEADING)]
    cookie: Option<String>,
}

impl CookieArgs {
    /// The cookie by erlkube-node's one lookup; warns once (on stderr,
    /// without the value) when it came from `--cookie`.
    pub fn find(&self) -> Result<erlkube_node::Cookie, erlkube_node::ConfigError> {
        if self.cookie.is_some() {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                eprintln!(
                    "erlkube: warning: --cookie shows the cookie to every user of this machine (ps); \
                     prefer RELEASE_COOKIE or --cookie-file PATH"
                )
            });
        }
        erlkube_node::lookup_cookie(
            erlkube_node::CookieLookup {
                explicit: self.cookie.as_deref(),
                file: self.cookie_file.as_deref(),
            },
            |v| std::env::var(v).ok(),
            erlkube_node::read_cookie_file,
        )
        .map(|(c, _)| c)
    }
}

const DIST_HEADING: &str = "Distribution carrier (as OTP's -proto_dist / -ssl_dist_optfile)";

/// The distribution carrier of every command that opens a distribution
/// connection: plain TCP (`inet_tcp`, the default) or TLS (`inet_tls`)
/// configured by OTP's own `ssl_dist_optfile`, so one file serves the BEAM
/// release and erlkube.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DistArgs {
    /// `inet_tcp` (plain TCP) or `inet_tls` (TLS, needs --ssl-dist-optfile).
    #[arg(long, value_name = "inet_tcp|inet_tls", env = "ERLKUBE_PROTO_DIST", help_heading = DIST_HEADING)]
    proto_dist: Option<String>,
    /// OTP's ssl_dist_optfile: `[{server, [...]}, {client, [...]}].` with
    /// certfile, keyfile, cacertfile, verify, fail_if_no_peer_cert,
    /// versions, server_name_indication, secure_renegotiate.
    #[arg(long, value_name = "FILE", env = "ERLKUBE_SSL_DIST_OPTFILE", help_heading = DIST_HEADING)]
    ssl_dist_optfile: Option<std::path::PathBuf>,
}

impl DistArgs {
    /// The optfile given, if any.
    pub fn optfile(&self) -> Option<&std::path::Path> {
        self.ssl_dist_optfile.as_deref()
    }

    /// The TLS settings (files loaded and checked), or `None` for plain
    /// TCP. `needs` names the sides this command uses (`server` to
    /// listen, `client` to dial); a missing one is an error naming the file.
    pub fn tls(&self, needs: &[&str]) -> Result<Option<erlkube_node::TlsConfig>, String> {
        match (self.proto_dist.as_deref(), &self.ssl_dist_optfile) {
            (None | Some("inet_tcp"), None) => Ok(None),
            (None | Some("inet_tcp"), Some(f)) => Err(format!(
                "--ssl-dist-optfile {} needs --proto-dist inet_tls (TLS distribution)",
                f.display()
            )),
            (Some("inet_tls"), None) => Err(
                "--proto-dist inet_tls needs --ssl-dist-optfile FILE (OTP's ssl_dist_optfile format)"
                    .into(),
            ),
            (Some("inet_tls"), Some(f)) => {
                let tls = erlkube_node::TlsConfig::from_optfile(f).map_err(|e| e.to_string())?;
                for side in needs {
                    let present = match *side {
                        "server" => tls.server_options().is_some(),
                        _ => tls.client_options().is_some(),
                    };
                    if !present {
                        return Err(format!(
                            "the ssl_dist_optfile {} has no {{{side}, [...]}} section, which this command needs",
                            f.display()
                        ));
                    }
                }
                Ok(Some(tls))
            }
            (Some(other), _) => Err(format!(
                "--proto-dist {other:?} is not supported: use inet_tcp (plain TCP) or inet_tls (TLS)"
            )),
        }
    }
}
