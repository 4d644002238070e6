//! OTP's `ssl_dist_optfile`: one Erlang term,
//! `[{server, Opts}, {client, Opts}].`, read with the node's own parser
//! ([`erlkube_etf::text::parse`]) into [`TlsOptions`] per side, so one file
//! serves a BEAM release (`-ssl_dist_optfile FILE`) and erlkube.
//!
//! The options erlkube honours are listed in [`SUPPORTED`]; any other
//! option is refused by name, never ignored, since an ignored security
//! option (`verify_fun`, `crl_check`, `depth`, …) would make the two
//! ends of one file behave differently.

use std::path::{Path, PathBuf};

use erlkube_etf::Term;

/// The options erlkube reads (either side unless noted), with what each
/// does here.
pub const SUPPORTED: &[(&str, &str)] = &[
    ("certfile", "PEM certificate (chain) of this node"),
    (
        "keyfile",
        "PEM private key (PKCS#8, PKCS#1 or SEC1); default: the certfile",
    ),
    (
        "cacertfile",
        "PEM CA bundle the peer's certificate must chain to",
    ),
    ("verify", "verify_peer (default) or verify_none"),
    (
        "fail_if_no_peer_cert",
        "server: refuse a client without a certificate (true/false)",
    ),
    (
        "versions",
        "['tlsv1.2', 'tlsv1.3'] or a subset; default ['tlsv1.2'] as OTP's dist",
    ),
    (
        "server_name_indication",
        "client: a host name to check the server's certificate against, or disable (chain only)",
    ),
    (
        "secure_renegotiate",
        "accepted: rustls never renegotiates, so it is always secure",
    ),
    (
        "reuse_sessions",
        "accepted: sessions are resumed as rustls does by default",
    ),
    (
        "honor_cipher_order",
        "accepted: the server's order of rustls' suites applies",
    ),
    (
        "hibernate_after",
        "accepted: a BEAM process setting, nothing to do here",
    ),
];

/// `verify`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Check the peer's certificate against `cacertfile`.
    Peer,
    /// Accept any peer (OTP's `verify_none`; logged as a warning).
    None,
}

/// A TLS protocol version in `versions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    /// `'tlsv1.2'`.
    Tls12,
    /// `'tlsv1.3'`.
    Tls13,
}

/// `server_name_indication` of the client side.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ServerName {
    /// The host part of the dialled node name (what `inet_tls_dist` sets).
    #[default]
    NodeHost,
    /// This host name instead.
    Host(String),
    /// `disable`: the server's chain is checked, its name is not.
    Disable,
}

/// The options of one side (`server` or `client`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    /// `certfile`.
    pub certfile: Option<PathBuf>,
    /// `keyfile` (default: the key in `certfile`).
    pub keyfile: Option<PathBuf>,
    /// `cacertfile`.
    pub cacertfile: Option<PathBuf>,
    /// `verify` (default `verify_peer`).
    pub verify: Verify,
    /// `fail_if_no_peer_cert` (server; default false, as OTP).
    pub fail_if_no_peer_cert: bool,
    /// `versions` (default `['tlsv1.2']`, OTP's default for distribution).
    pub versions: Vec<TlsVersion>,
    /// `server_name_indication` (client).
    pub server_name: ServerName,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            certfile: None,
            keyfile: None,
            cacertfile: None,
            verify: Verify::Peer,
            fail_if_no_peer_cert: false,
            versions: vec![TlsVersion::Tls12],
            server_name: ServerName::NodeHost,
        }
    }
}

/// Both sides, as the file gives them (`None`: the side is absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptFile {
    /// `{server, Opts}`.
    pub server: Option<TlsOptions>,
    /// `{client, Opts}`.
    pub client: Option<TlsOptions>,
}

/// Why an optfile was refused. The message names the file and the option.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OptFileError {
    /// The file could not be read.
    #[error("cannot read the ssl_dist_optfile {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not one Erlang term.
    #[error("the ssl_dist_optfile {path} does not parse as an Erlang term: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why.
        #[source]
        source: erlkube_etf::ParseError,
    },
    /// A term of the wrong shape.
    #[error("the ssl_dist_optfile {path}: {what}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// An option erlkube does not implement.
    #[error(
        "the ssl_dist_optfile {path}: option {option} in {side} is not supported by erlkube \
         (supported: {list}); remove it or use a supported equivalent"
    )]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// `server` or `client`.
        side: &'static str,
        /// The option's name.
        option: String,
        /// The supported options.
        list: String,
    },
}

impl OptFile {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<OptFile, OptFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| OptFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        OptFile::parse(path, &text)
    }

    /// Parses the text of an optfile (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<OptFile, OptFileError> {
        let term = erlkube_etf::text::parse(text).map_err(|source| OptFileError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let shape = |what: String| OptFileError::Shape {
            path: path.to_owned(),
            what,
        };
        let Some(list) = term.as_list() else {
            return Err(shape(format!(
                "expected a list [{{server, [...]}}, {{client, [...]}}], got {term}"
            )));
        };
        let mut out = OptFile::default();
        for entry in list {
            let (side, opts) = match entry.as_tuple() {
                Some([Term::Atom(a), opts]) => (a.as_str(), opts),
                _ => {
                    return Err(shape(format!(
                        "expected {{server, [...]}} or {{client, [...]}}, got {entry}"
                    )))
                }
            };
            let (side, slot) = match side {
                "server" => ("server", &mut out.server),
                "client" => ("client", &mut out.client),
                other => {
                    return Err(shape(format!(
                        "unknown section {other:?}: only server and client are read"
                    )))
                }
            };
            if slot.is_some() {
                return Err(shape(format!("{side} is given twice")));
            }
            *slot = Some(parse_side(path, side, opts)?);
        }
        if out.server.is_none() && out.client.is_none() {
            return Err(shape(
                "neither {server, [...]} nor {client, [...]} is given".into(),
            ));
        }
        Ok(out)
    }
}

fn parse_side(path: &Path, side: &'static str, opts: &Term) -> Result<TlsOptions, OptFileError> {
    let shape = |what: String| OptFileError::Shape {
        path: path.to_owned(),
        what: format!("{side}: {what}"),
    };
    let Some(list) = opts.as_list() else {
        return Err(shape(format!("expected a list of options, got {opts}")));
    };
    let mut o = TlsOptions::default();
    let mut renegotiate = false;
    for opt in list {
        let (name, value) = match opt.as_tuple() {
            Some([Term::Atom(a), v]) => (a.as_str(), v),
            _ => return Err(shape(format!("expected {{Option, Value}}, got {opt}"))),
        };
        let bad = |expected: &str| shape(format!("{name} must be {expected}, got {value}"));
        match name {
            "certfile" => o.certfile = Some(path_value(value).ok_or_else(|| bad("a file name"))?),
            "keyfile" => o.keyfile = Some(path_value(value).ok_or_else(|| bad("a file name"))?),
            "cacertfile" => {
                o.cacertfile = Some(path_value(value).ok_or_else(|| bad("a file name"))?)
            }
            "verify" => {
                o.verify = match value.as_atom().map(|a| a.as_str()) {
                    Some("verify_peer") => Verify::Peer,
                    Some("verify_none") => Verify::None,
                    _ => return Err(bad("verify_peer or verify_none")),
                }
            }
            "fail_if_no_peer_cert" if side == "server" => {
                o.fail_if_no_peer_cert = value.as_bool().ok_or_else(|| bad("true or false"))?
            }
            "versions" => {
                let vs = value.as_list().ok_or_else(|| bad("a list of versions"))?;
                let mut versions = Vec::new();
                for v in vs {
                    versions.push(match v.as_atom().map(|a| a.as_str()) {
                        Some("tlsv1.2") => TlsVersion::Tls12,
                        Some("tlsv1.3") => TlsVersion::Tls13,
                        Some(other @ ("tlsv1" | "tlsv1.1" | "sslv3")) => {
                            return Err(shape(format!(
                                "versions: {other} is not supported (erlkube speaks 'tlsv1.2' and 'tlsv1.3')"
                            )))
                        }
                        _ => return Err(bad("a list of 'tlsv1.2' and 'tlsv1.3'")),
                    });
                }
                if versions.is_empty() {
                    return Err(bad("a non-empty list"));
                }
                o.versions = versions;
            }
            "server_name_indication" if side == "client" => {
                o.server_name = match value {
                    Term::Atom(a) if a.as_str() == "disable" => ServerName::Disable,
                    v => ServerName::Host(
                        string_value(v).ok_or_else(|| bad("a host name or disable"))?,
                    ),
                }
            }
            "secure_renegotiate" => {
                value.as_bool().ok_or_else(|| bad("true or false"))?;
                renegotiate = true;
            }
            "reuse_sessions" | "honor_cipher_order" => {
                value.as_bool().ok_or_else(|| bad("true or false"))?;
            }
            "hibernate_after" => {
                value.as_integer().ok_or_else(|| bad("an integer"))?;
            }
            other => {
                return Err(OptFileError::Unsupported {
                    path: path.to_owned(),
                    side,
                    option: other.to_owned(),
                    list: SUPPORTED
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        }
    }
    if renegotiate && !o.versions.contains(&TlsVersion::Tls12) {
        // OTP refuses the file then too ({options, incompatible, ...}).
        return Err(shape(
            "secure_renegotiate is a TLS 1.2 option and versions has no 'tlsv1.2'              (OTP refuses this combination too): remove secure_renegotiate or add 'tlsv1.2'"
                .into(),
        ));
    }
    Ok(o)
}

/// A string as OTP takes one: a character list or a binary.
fn string_value(t: &Term) -> Option<String> {
    match t {
        Term::Binary(b) => String::from_utf8(b.to_vec()).ok(),
        Term::List(l) if !l.is_empty() => l
            .iter()
            .map(|c| c.as_integer().and_then(|i| char::from_u32(i as u32)))
            .collect(),
        _ => None,
    }
}

fn path_value(t: &Term) -> Option<PathBuf> {
    string_value(t).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OptFile, OptFileError> {
        OptFile::parse(Path::new("dist.conf"), text)
    }

    #[test]
    fn reads_the_usual_file() {
        let f = parse(
            r#"%% as in OTP's "Using TLS for Erlang Distribution"
            [{server, [{certfile, "/etc/tls/tls.crt"}, {keyfile, "/etc/tls/tls.key"},
                       {cacertfile, "/etc/tls/ca.crt"}, {verify, verify_peer},
                       {fail_if_no_peer_cert, true}, {secure_renegotiate, true}]},
             {client, [{certfile, <<"/etc/tls/tls.crt">>}, {keyfile, "/etc/tls/tls.key"},
                       {cacertfile, "/etc/tls/ca.crt"}, {verify, verify_peer},
                       {versions, ['tlsv1.2', 'tlsv1.3']},
                       {server_name_indication, disable}]}]."#,
        )
        .unwrap();
        let s = f.server.unwrap();
        assert_eq!(s.certfile.unwrap(), PathBuf::from("/etc/tls/tls.crt"));
        assert!(s.fail_if_no_peer_cert);
        assert_eq!(s.versions, vec![TlsVersion::Tls12]);
        let c = f.client.unwrap();
        assert_eq!(c.certfile.unwrap(), PathBuf::from("/etc/tls/tls.crt"));
        assert_eq!(c.versions, vec![TlsVersion::Tls12, TlsVersion::Tls13]);
        assert_eq!(c.server_name, ServerName::Disable);
    }

    #[test]
    fn names_an_unsupported_option() {
        let e = parse(r#"[{server, [{certfile, "a"}, {verify_fun, {m, f, []}}]}]."#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("option verify_fun in server"), "{e}");
        assert!(e.contains("dist.conf"), "{e}");
    }

    #[test]
    fn names_what_does_not_parse() {
        let e = parse("[{server, [{certfile, \"a\"}]")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("dist.conf") && e.contains("does not parse"),
            "{e}"
        );
        let e = parse(r#"[{server, [{verify, maybe}]}]."#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("verify must be verify_peer or verify_none"),
            "{e}"
        );
        let e = parse(r#"[{client, [{versions, ['tlsv1.1']}]}]."#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tlsv1.1 is not supported"), "{e}");
        let e = parse(r#"[{client, [{versions, ['tlsv1.3']}, {secure_renegotiate, true}]}]."#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("secure_renegotiate is a TLS 1.2 option"), "{e}");
        let e = parse(r#"{server, []}."#).unwrap_err().to_string();
        assert!(e.contains("expected a list"), "{e}");
    }
}
