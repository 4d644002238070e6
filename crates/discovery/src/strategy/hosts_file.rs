use std::collections::BTreeSet;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use super::{epmd_names, Discover, StrategyKind};
use crate::reason::HostFailure;
use crate::{Answer, DiscoveryError, NodeName, Reason};

/// Parses a `.hosts.erlang` file: Erlang terms, each a host atom followed
/// by a full stop (`'host1.example'.`), `%` comments. Returns the hosts or
/// a message naming the line of the first bad term.
pub fn parse_hosts_erlang(text: &str) -> Result<Vec<String>, String> {
    let mut hosts = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = match raw.find('%') {
            // A `%` inside a quoted atom is not a comment; hosts have none.
            Some(p) => &raw[..p],
            None => raw,
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(body) = line.strip_suffix('.') else {
            return Err(format!(
                "line {}: a term must end with `.`: {line:?}",
                i + 1
            ));
        };
        let body = body.trim();
        let host = if let Some(q) = body.strip_prefix('\'') {
            q.strip_suffix('\'')
                .ok_or_else(|| format!("line {}: unterminated quoted atom: {line:?}", i + 1))?
        } else {
            body
        };
        let ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !ok {
            return Err(format!("line {}: not a host name: {line:?}", i + 1));
        }
        hosts.push(host.to_owned());
    }
    Ok(hosts)
}

/// The hosts of a `.hosts.erlang`-style file (re-read every round), each
/// asked for its names by its epmd (libcluster's `ErlangHosts`).
#[derive(Clone, Debug)]
pub struct HostsFile {
    path: PathBuf,
    epmd_port: u16,
    timeout: Duration,
}

impl HostsFile {
    /// Reads `path`; asks epmd on `epmd_port` of every host.
    pub fn new(path: impl Into<PathBuf>, epmd_port: u16, timeout: Duration) -> HostsFile {
        HostsFile {
            path: path.into(),
            epmd_port,
            timeout,
        }
    }
}

impl Discover for HostsFile {
    fn kind(&self) -> StrategyKind {
        StrategyKind::HostsFile
    }

    async fn discover(&mut self) -> Result<Answer, DiscoveryError> {
        let text = tokio::fs::read_to_string(&self.path).await.map_err(|e| {
            DiscoveryError::Unavailable {
                strategy: StrategyKind::HostsFile,
                reason: Reason::HostsFileRead {
                    path: self.path.clone(),
                    error: e.to_string(),
                },
            }
        })?;
        let hosts = parse_hosts_erlang(&text).map_err(|e| DiscoveryError::BadAnswer {
            strategy: StrategyKind::HostsFile,
            reason: Reason::HostsFileParse {
                path: self.path.clone(),
                error: e.to_string(),
            },
        })?;
        let mut nodes = BTreeSet::new();
        let mut failed = Vec::new();
        let mut queries = tokio::task::JoinSet::new();
        for host in hosts.clone() {
            let (port, timeout) = (self.epmd_port, self.timeout);
            queries.spawn(async move {
                let target = format!("{host}:{port}");
                let addr = tokio::task::spawn_blocking(move || {
                    target.to_socket_addrs().ok().and_then(|mut a| a.next())
                })
                .await
                .ok()
                .flatten();
                let r = match addr {
                    Some(a) => epmd_names(a, timeout).await,
                    None => Err("cannot resolve".into()),
                };
                (host, r)
            });
        }
        while let Some(Ok((host, r))) = queries.join_next().await {
            match r {
                Ok(names) => nodes.extend(
                    names
                        .into_iter()
                        .map(|n| NodeName::new(format!("{n}@{host}"))),
                ),
                Err(error) => failed.push(HostFailure { host, error }),
            }
        }
        if !hosts.is_empty() && failed.len() == hosts.len() {
            return Err(DiscoveryError::Unavailable {
                strategy: StrategyKind::HostsFile,
                reason: Reason::HostsUnreachable(failed),
            });
        }
        // A host that did not answer may still run nodes: partial answer.
        Ok(Answer::new(nodes, failed.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Discover;

    #[test]
    fn parses_quoted_and_bare_atoms_and_comments() {
        let t = "% cluster hosts\n'a.example.com'.\nb . \n\n'10.0.0.3'. % third\n";
        assert_eq!(
            parse_hosts_erlang(t).unwrap(),
            vec!["a.example.com", "b", "10.0.0.3"]
        );
    }

    #[test]
    fn rejects_bad_terms_with_the_line() {
        assert!(parse_hosts_erlang("'a'\n").unwrap_err().contains("line 1"));
        assert!(parse_hosts_erlang("ok.\n{a,b}.\n")
            .unwrap_err()
            .contains("line 2"));
        assert!(parse_hosts_erlang("'a.\n")
            .unwrap_err()
            .contains("unterminated"));
    }

    /// A file in this test's own directory under the system temp dir.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("erlkube-hosts-file-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(".hosts.erlang")
    }

    #[tokio::test]
    async fn failures_carry_typed_reasons_from_where_they_arise() {
        // A port on loopback where nothing listens: the epmd query fails.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = Duration::from_secs(2);

        let missing = scratch("missing");
        let _ = std::fs::remove_file(&missing);
        let e = HostsFile::new(&missing, port, t)
            .discover()
            .await
            .unwrap_err();
        assert!(
            matches!(e.reason(), Reason::HostsFileRead { path, .. } if *path == missing),
            "{e:?}"
        );

        let bad = scratch("bad");
        std::fs::write(&bad, "{a,b}.\n").unwrap();
        let e = HostsFile::new(&bad, port, t).discover().await.unwrap_err();
        assert!(
            matches!(e.reason(), Reason::HostsFileParse { error, .. } if error.contains("line 1")),
            "{e:?}"
        );

        let dead = scratch("dead");
        std::fs::write(&dead, "'127.0.0.1'.\n").unwrap();
        let e = HostsFile::new(&dead, port, t).discover().await.unwrap_err();
        let Reason::HostsUnreachable(failures) = e.reason() else {
            panic!("{e:?}");
        };
        assert_eq!(failures.len(), 1, "{e:?}");
        assert_eq!(failures[0].host, "127.0.0.1");
        // The log text keeps its shape: strategy, kind, host, error.
        assert_eq!(
            e.to_string(),
            format!(
                "hosts_file: source unavailable: 127.0.0.1: {}",
                failures[0].error
            )
        );
        for f in [missing, bad, dead] {
            let _ = std::fs::remove_dir_all(f.parent().unwrap());
        }
    }
}
