//! Agent settings: the formation keys of `erlkube-discovery` plus an
//! `[agent]` and a `[nodename]` section, from the same TOML file and
//! `ERLKUBE_AGENT_*` / `ERLKUBE_NODENAME_*` environment variables (env
//! overrides file overrides default), validated with errors that name the
//! key. Pure: the caller passes the file text and the environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use erlkube_discovery::config::{
    check_env_keys, env_name, parse_duration, resolve_with, ConfigError, Defaults, Entry,
    FormationConfig, Source,
};
use erlkube_discovery::{NodeName, Quorum};
use erlkube_node::{lookup_cookie, Cookie, CookieFile, CookieLookup};

use crate::nodename::{node_name, NamingInput};

/// One agent key: dotted name, default, meaning.
#[derive(Debug)]
pub struct AgentKey {
    /// `agent.http`, ...
    pub name: &'static str,
    /// Default as text (`None`: see `doc`).
    pub default: Option<&'static str>,
    /// One-line meaning.
    pub doc: &'static str,
}

/// Every `[agent]` key.
pub const AGENT_KEYS: &[AgentKey] = &[
    AgentKey {
        name: "agent.node",
        default: None,
        doc: "the BEAM node to cluster; default RELEASE_NODE, else the [nodename] name",
    },
    AgentKey {
        name: "agent.cookie_file",
        default: None,
        doc: "file holding the cookie; default RELEASE_COOKIE, else ERLANG_COOKIE, else ~/.erlang.cookie (owner-only)",
    },
    AgentKey {
        name: "agent.name",
        default: None,
        doc: "the agent's own (hidden) node name; default erlkube_agent_<pid>@<the node's host>",
    },
    AgentKey {
        name: "agent.http",
        default: Some("0.0.0.0:9568"),
        doc: "listen address of /healthz /readyz /metrics /cluster",
    },
    AgentKey {
        name: "agent.ready_min_peers",
        default: None,
        doc: "older form of formation.quorum: connected peers needed for /readyz, all or a number N (= quorum N+1); not together with formation.quorum",
    },
    AgentKey {
        name: "agent.rpc_timeout",
        default: Some("5s"),
        doc: "upper bound of one RPC call to the node",
    },
    AgentKey {
        name: "agent.wait_interval",
        default: Some("1s"),
        doc: "how often an absent node is looked for",
    },
    AgentKey {
        name: "agent.register_poll_interval",
        default: Some("10ms"),
        doc: "while the node is absent, how often its port mapper (ERL_EPMD_PORT; at the node's IP, or 127.0.0.1 for a host name) is asked whether the node has registered; the node is connected at once when it has. 0s: off (only agent.wait_interval)",
    },
    AgentKey {
        name: "agent.epmd_watch",
        default: Some("true"),
        doc: "with agent.register_poll_interval, also ask the port mapper to tell of registrations as they happen (erlkube's epmd serves it; OTP's epmd refuses, and the agent polls alone); false: poll only",
    },
    AgentKey {
        name: "agent.node_events",
        default: Some("true"),
        doc: "follow the node's nodeup/nodedown events (a subscriber process on the node); false: poll nodes() every formation.check_interval",
    },
    AgentKey {
        name: "agent.nodes_poll_interval",
        default: Some("30s"),
        doc: "safety-net re-read of the node's nodes() while its nodeup/nodedown events arrive (at least formation.check_interval)",
    },
    AgentKey {
        name: "agent.net_ticktime",
        default: Some("60s"),
        doc: "the node's net_ticktime (the agent's connection must tick as often as the node expects)",
    },
    AgentKey {
        name: "agent.proto_dist",
        default: Some("inet_tcp"),
        doc: "the distribution carrier, as the node's -proto_dist: inet_tcp, or inet_tls (TLS, with agent.ssl_dist_optfile)",
    },
    AgentKey {
        name: "agent.ssl_dist_optfile",
        default: None,
        doc: "with proto_dist inet_tls: OTP's ssl_dist_optfile (the node's own -ssl_dist_optfile file; its client side is used)",
    },
    AgentKey {
        name: "agent.disconnect_on_shutdown",
        default: None,
        doc: "older key: a drain (SIGTERM, GET /drain) now always ends by disconnecting the node; true is accepted, false is an error",
    },
    AgentKey {
        name: "agent.drain_grace",
        default: Some("5s"),
        doc: "drain (GET /drain, SIGTERM): /readyz 503 at once, the node stays connected this long, then leaves (disconnected from every peer); at most 10m",
    },
];

/// Longest `agent.drain_grace` accepted: the pod's
/// `terminationGracePeriodSeconds` must exceed it, and a grace of more than
/// ten minutes is a typo (`5m` for `5s`), not a plan.
pub const MAX_DRAIN_GRACE: Duration = Duration::from_secs(600);

/// Every `[nodename]` key (see `erlkube nodename`).
pub const NODENAME_KEYS: &[AgentKey] = &[
    AgentKey {
        name: "nodename.mode",
        default: Some("pod_dns if a service is set, else ip"),
        doc: "ip | pod_dns | statefulset | fqdn",
    },
    AgentKey {
        name: "nodename.basename",
        default: Some("(RELEASE_NAME)"),
        doc: "name part of the node name",
    },
    AgentKey {
        name: "nodename.service",
        default: None,
        doc: "headless Service name (pod_dns, statefulset)",
    },
    AgentKey {
        name: "nodename.namespace",
        default: Some("(POD_NAMESPACE, else the service-account namespace file)"),
        doc: "Kubernetes namespace",
    },
    AgentKey {
        name: "nodename.cluster_domain",
        default: Some("(CLUSTER_DOMAIN, else cluster.local)"),
        doc: "cluster DNS domain",
    },
    AgentKey {
        name: "nodename.pod_ip",
        default: Some("(POD_IP)"),
        doc: "the pod's IP address",
    },
    AgentKey {
        name: "nodename.dist_port",
        default: None,
        doc: "fixed distribution port for `erlkube env` (none: epmd picks)",
    },
];

/// Everything the agent runs with.
#[derive(Clone)]
pub struct AgentConfig {
    /// Discovery and engine settings.
    pub formation: FormationConfig,
    /// `[agent]` and `[nodename]` entries with value and source (cookie
    /// never shown).
    pub entries: Vec<Entry>,
    /// The BEAM node driven.
    pub node: NodeName,
    /// Where the cookie came from (never the cookie).
    pub cookie_source: String,
    /// The cookie.
    pub cookie: Cookie,
    /// The agent's own node name.
    pub agent_name: String,
    /// HTTP listen address.
    pub http: SocketAddr,
    /// Readiness rule: `formation.quorum`, or the older
    /// `agent.ready_min_peers` N as a quorum of N + 1.
    pub quorum: Quorum,
    /// How long a drain keeps the node connected before it leaves.
    pub drain_grace: Duration,
    /// RPC bound.
    pub rpc_timeout: Duration,
    /// Retry interval while the node is absent.
    pub wait_interval: Duration,
    /// While the node is absent, how often its port mapper is asked
    /// whether it has registered (`None`: never; only `wait_interval`).
    pub register_poll_interval: Option<Duration>,
    /// With `register_poll_interval`, also hold a WATCH connection to the
    /// port mapper (erlkube's), which tells of registrations at once.
    pub epmd_watch: bool,
    /// The port mapper's port (`ERL_EPMD_PORT`, default 4369).
    pub epmd_port: u16,
    /// Follow the node's nodeup/nodedown events (else poll `nodes()`).
    pub node_events: bool,
    /// Safety-net re-read of `nodes()` while events arrive (the runtime
    /// uses at least `formation.engine.check_interval`).
    pub nodes_poll_interval: Duration,
    /// The node's `net_ticktime`.
    pub net_ticktime: Duration,
    /// `[mnesia]`: RAM tables kept replicated on every member (`None`: off).
    pub mnesia: Option<crate::mnesia::MnesiaConfig>,
    /// TLS distribution (`agent.proto_dist = "inet_tls"`), files loaded.
    pub tls: Option<erlkube_node::TlsConfig>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("node", &self.node)
            .field("agent_name", &self.agent_name)
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// The file split in three: formation keys (re-serialized for the
/// discovery resolver) and the `[agent]` and `[nodename]` tables flattened
/// to text.
pub struct SplitFile {
    /// TOML text of everything else.
    pub formation: Option<String>,
    /// `agent.*` values (key without the section).
    pub agent: BTreeMap<String, String>,
    /// `nodename.*` values (key without the section).
    pub nodename: BTreeMap<String, String>,
    /// The `[mnesia]` table, read by [`crate::mnesia::config::resolve`].
    pub mnesia: Option<toml::Value>,
}

fn section(
    name: &str,
    keys: &[AgentKey],
    v: Option<toml::Value>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    let Some(v) = v else { return Ok(out) };
    let toml::Value::Table(t) = v else {
        return Err(invalid(name, "must be a table ([agent] / [nodename])"));
    };
    for (k, v) in t {
        let full = format!("{name}.{k}");
        if !keys.iter().any(|key| key.name == full) {
            return Err(ConfigError::Unknown {
                key: full,
                origin: "file".into(),
                known: keys.iter().map(|k| k.name).collect::<Vec<_>>().join(", "),
            });
        }
        let text = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => return Err(invalid(&full, format!("unsupported value {other}"))),
        };
        out.insert(k, text);
    }
    Ok(out)
}

/// Splits the configuration file.
pub fn split_file(text: Option<&str>) -> Result<SplitFile, ConfigError> {
    let Some(text) = text else {
        return Ok(SplitFile {
            formation: None,
            agent: BTreeMap::new(),
            nodename: BTreeMap::new(),
            mnesia: None,
        });
    };
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax(e.to_string().trim_end().to_owned()))?;
    let agent = section("agent", AGENT_KEYS, table.remove("agent"))?;
    let nodename = section("nodename", NODENAME_KEYS, table.remove("nodename"))?;
    let mnesia = table.remove("mnesia");
    let formation = toml::to_string(&table).map_err(|e| ConfigError::Syntax(e.to_string()))?;
    Ok(SplitFile {
        formation: Some(formation),
        agent,
        nodename,
        mnesia,
    })
}

/// Resolves the agent's configuration. `read_file` reads a cookie file
/// ([`erlkube_node::read_cookie_file`] for real ones; a parameter so tests
/// stay pure); `pid` is used in the default agent
/// name. `_hostname` (this machine's name) is no longer used: the default
/// `epmd` discovery asks for the host part of the node's own name, on the
/// epmd at `127.0.0.1:$ERL_EPMD_PORT`, so it finds names the node can reach.
pub fn resolve_agent(
    file: Option<&str>,
    env: impl IntoIterator<Item = (String, String)>,
    _hostname: &str,
    read_file: impl Fn(&std::path::Path) -> std::io::Result<CookieFile>,
    pid: u32,
) -> Result<AgentConfig, ConfigError> {
    let env: BTreeMap<String, String> = env.into_iter().collect();
    let split = split_file(file)?;
    for (prefix, keys) in [
        ("ERLKUBE_AGENT_", AGENT_KEYS),
        ("ERLKUBE_NODENAME_", NODENAME_KEYS),
    ] {
        let names: Vec<&str> = keys.iter().map(|k| k.name).collect();
        check_env_keys(env.keys(), prefix, &names)?;
    }
    let mut entries = Vec::new();
    for key in AGENT_KEYS {
        let var = env_name(key.name);
        let short = key.name.trim_start_matches("agent.");
        let (value, source) = if let Some(v) = env.get(&var).filter(|v| !v.is_empty()) {
            (Some(v.clone()), Source::Env(var))
        } else if let Some(v) = split.agent.get(short) {
            (Some(v.clone()), Source::File)
        } else {
            (key.default.map(str::to_owned), Source::Default)
        };
        entries.push(Entry {
            key: key.name,
            value,
            source,
        });
    }
    fn get(entries: &[Entry], name: &str) -> Option<String> {
        entries
            .iter()
            .find(|e| e.key == name)
            .and_then(|e| e.value.clone())
    }
    let duration = |entries: &[Entry], name: &str| -> Result<Duration, ConfigError> {
        let v = get(entries, name).unwrap_or_default();
        parse_duration(&v).filter(|d| !d.is_zero()).ok_or_else(|| {
            invalid(
                name,
                format!("must be a duration more than 0 like \"500ms\" or \"2s\", got {v:?}"),
            )
        })
    };
    let boolean = |entries: &[Entry], name: &str| -> Result<bool, ConfigError> {
        match get(entries, name).unwrap_or_default().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(invalid(
                name,
                format!("must be true or false, got {other:?}"),
            )),
        }
    };
    // The node: agent.node, else RELEASE_NODE, else the [nodename] name.
    let node_entry = entries.iter_mut().find(|e| e.key == "agent.node").unwrap();
    if node_entry.value.is_none() {
        if let Some(r) = env.get("RELEASE_NODE").filter(|v| !v.is_empty()) {
            node_entry.value = Some(r.clone());
            node_entry.source = Source::Env("RELEASE_NODE".into());
        } else {
            let input = NamingInput::from_process(
                env.iter().map(|(k, v)| (k.clone(), v.clone())),
                &split.nodename,
            )
            .map_err(|e| {
                invalid(
                    "agent.node",
                    format!("not set, and no name from [nodename]: {e}"),
                )
            })?;
            let n = node_name(&input).map_err(|e| {
                invalid(
                    "agent.node",
                    format!("not set (nor RELEASE_NODE), and no name from [nodename]: {e}"),
                )
            })?;
            node_entry.value = Some(n.node);
            node_entry.source = Source::Default;
        }
    }
    let node_text = get(&entries, "agent.node").unwrap_or_default();
    let node = NodeName::parse(&node_text).map_err(|e| {
        invalid(
            "agent.node",
            format!("{e} (a long name such as app@10.0.0.5 or app@app-0.svc.ns.svc.cluster.local)"),
        )
    })?;
    let host = node.host();
    // Cookie: erlkube-node's one lookup (agent.cookie_file, else
    // RELEASE_COOKIE, ERLANG_COOKIE, ~/.erlang.cookie).
    let cookie_file = get(&entries, "agent.cookie_file").map(PathBuf::from);
    let (cookie, cookie_source) = lookup_cookie(
        CookieLookup {
            explicit: None,
            file: cookie_file.as_deref(),
        },
        |v| env.get(v).cloned(),
        read_file,
    )
    .map_err(|e| invalid("agent.cookie_file", e.to_string()))?;
    let cookie_source = cookie_source.to_string();
    let name_entry = entries.iter_mut().find(|e| e.key == "agent.name").unwrap();
    if name_entry.value.is_none() {
        name_entry.value = Some(format!("erlkube_agent_{pid}@{host}"));
    }
    let agent_name = get(&entries, "agent.name").unwrap_or_default();
    if NodeName::parse(&agent_name).is_err() || agent_name == node_text {
        return Err(invalid(
            "agent.name",
            format!("must be a node name name@host other than agent.node, got {agent_name:?}"),
        ));
    }
    let http_text = get(&entries, "agent.http").unwrap_or_default();
    let http = http_text.parse::<SocketAddr>().map_err(|_| {
        invalid(
            "agent.http",
            format!("must be ip:port such as \"0.0.0.0:9568\" or \"[::]:9568\", got {http_text:?}"),
        )
    })?;
    let epmd_port = match env.get("ERL_EPMD_PORT").filter(|v| !v.is_empty()) {
        None => 4369,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
            invalid(
                "ERL_EPMD_PORT",
                format!("must be a port number 1-65535, got {p:?}"),
            )
        })?,
    };
    let formation = resolve_with(
        split.formation.as_deref(),
        env.iter().map(|(k, v)| (k.clone(), v.clone())),
        &Defaults {
            hostname: host.to_owned(),
            epmd_address: Some(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, epmd_port))),
        },
    )?;
    let quorum_set = formation
        .entries
        .iter()
        .any(|e| e.key == "formation.quorum" && e.source != Source::Default);
    let quorum = match get(&entries, "agent.ready_min_peers") {
        None => formation.quorum,
        Some(_) if quorum_set => {
            return Err(invalid(
                "agent.ready_min_peers",
                "set together with formation.quorum, which replaces it: keep only formation.quorum (ERLKUBE_FORMATION_QUORUM), a count of members including the node (ready_min_peers N is quorum N+1)",
            ))
        }
        Some(rmp) => match rmp.as_str() {
            "all" => Quorum::All,
            n => Quorum::Members(n.parse::<usize>().map(|n| n.saturating_add(1)).map_err(|_| {
                invalid(
                    "agent.ready_min_peers",
                    format!("must be \"all\" or a whole number, got {rmp:?} (formation.quorum replaces this key)"),
                )
            })?),
        },
    };
    match get(&entries, "agent.disconnect_on_shutdown").as_deref() {
        None | Some("true") => {}
        Some(other) => {
            return Err(invalid(
                "agent.disconnect_on_shutdown",
                format!("a drain now always ends by disconnecting the node from its peers (after agent.drain_grace); remove this key (got {other:?})"),
            ))
        }
    }
    let dg = get(&entries, "agent.drain_grace").unwrap_or_default();
    let drain_grace = parse_duration(&dg)
        .filter(|d| *d <= MAX_DRAIN_GRACE)
        .ok_or_else(|| {
            invalid(
                "agent.drain_grace",
                format!("must be a duration from 0s to 10m like \"5s\" (the pod's terminationGracePeriodSeconds must be longer), got {dg:?}"),
            )
        })?;
    let epmd_watch = boolean(&entries, "agent.epmd_watch")?;
    let node_events = boolean(&entries, "agent.node_events")?;
    let rpc_timeout = duration(&entries, "agent.rpc_timeout")?;
    let wait_interval = duration(&entries, "agent.wait_interval")?;
    let rp = get(&entries, "agent.register_poll_interval").unwrap_or_default();
    let register_poll_interval = match parse_duration(&rp) {
        Some(d) if d.is_zero() => None,
        Some(d) if d <= Duration::from_secs(60) => Some(d),
        _ => {
            return Err(invalid(
                "agent.register_poll_interval",
                format!("must be a duration from 0s (off) to 60s like \"10ms\", got {rp:?}"),
            ))
        }
    };
    let net_ticktime = duration(&entries, "agent.net_ticktime")?;
    let nodes_poll_interval = duration(&entries, "agent.nodes_poll_interval")?;
    let (mnesia, mnesia_entries) = crate::mnesia::config::resolve(split.mnesia, &env)?;
    entries.extend(mnesia_entries);
    let optfile = get(&entries, "agent.ssl_dist_optfile");
    let tls = match (get(&entries, "agent.proto_dist").as_deref(), optfile) {
        (Some("inet_tcp") | None, None) => None,
        (Some("inet_tcp") | None, Some(_)) => return Err(invalid(
            "agent.ssl_dist_optfile",
            "is only read with agent.proto_dist = \"inet_tls\"; set that too, or remove this key",
        )),
        (Some("inet_tls"), None) => {
            return Err(invalid(
                "agent.ssl_dist_optfile",
                "agent.proto_dist = \"inet_tls\" needs the node's ssl_dist_optfile here",
            ))
        }
        (Some("inet_tls"), Some(f)) => {
            let t = erlkube_node::TlsConfig::from_optfile(std::path::Path::new(&f))
                .map_err(|e| invalid("agent.ssl_dist_optfile", e.to_string()))?;
            if t.client_options().is_none() {
                return Err(invalid(
                    "agent.ssl_dist_optfile",
                    format!(
                        "{f} has no {{client, [...]}} section: the agent dials its node with it"
                    ),
                ));
            }
            Some(t)
        }
        (Some(other), _) => {
            return Err(invalid(
                "agent.proto_dist",
                format!("must be inet_tcp or inet_tls, got {other:?}"),
            ))
        }
    };
    let cookie_entry = entries
        .iter_mut()
        .find(|e| e.key == "agent.cookie_file")
        .unwrap();
    if cookie_entry.value.is_none() {
        cookie_entry.value = Some(format!("(not used: cookie from {cookie_source})"));
    }
    Ok(AgentConfig {
        formation,
        entries,
        node,
        cookie_source,
        cookie,
        agent_name,
        http,
        quorum,
        drain_grace,
        rpc_timeout,
        wait_interval,
        register_poll_interval,
        epmd_watch,
        epmd_port,
        node_events,
        nodes_poll_interval,
        net_ticktime,
        mnesia,
        tls,
    })
}

impl AgentConfig {
    /// The resolved plan: agent keys, then the formation plan.
    pub fn describe(&self) -> String {
        let mut out = String::from("agent:\n");
        let width = self.entries.iter().map(|e| e.key.len()).max().unwrap_or(0);
        for e in &self.entries {
            let v = match &e.value {
                Some(v) => format!("{v:?}"),
                None => "(unset)".into(),
            };
            out.push_str(&format!("  {:width$} = {v}  ({})\n", e.key, e.source));
        }
        out.push_str(&format!(
            "  cookie from {} (not shown)\n",
            self.cookie_source
        ));
        out.push_str(&self.formation.describe());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn no_file(_: &std::path::Path) -> std::io::Result<CookieFile> {
        Err(std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    #[test]
    fn agent_keys_come_from_file_and_env_with_sources() {
        let file = "[discovery]\nstrategy = \"static\"\nstatic.nodes = [\"a@h\"]\n[agent]\nnode = \"app@10.0.0.5\"\nhttp = \"127.0.0.1:9000\"\n";
        let c = resolve_agent(
            Some(file),
            env(&[
                ("RELEASE_COOKIE", "sekrit"),
                ("ERLKUBE_AGENT_READY_MIN_PEERS", "2"),
            ]),
            "h",
            no_file,
            7,
        )
        .unwrap();
        assert_eq!(c.node.as_str(), "app@10.0.0.5");
        assert_eq!(c.agent_name, "erlkube_agent_7@10.0.0.5");
        assert_eq!(c.http.to_string(), "127.0.0.1:9000");
        assert_eq!(c.quorum, Quorum::Members(3));
        assert_eq!(c.drain_grace, Duration::from_secs(5));
        assert_eq!(c.nodes_poll_interval, Duration::from_secs(30));
        assert_eq!(c.register_poll_interval, Some(Duration::from_millis(10)));
        assert!(c.epmd_watch);
        assert_eq!(c.epmd_port, 4369);
        assert_eq!(c.formation.strategy_name, "static");
        let d = c.describe();
        assert!(d.contains("agent.ready_min_peers"), "{d}");
        assert!(d.contains("env ERLKUBE_AGENT_READY_MIN_PEERS"), "{d}");
        assert!(
            !d.contains("sekrit"),
            "the cookie must never be printed: {d}"
        );
    }

    #[test]
    fn the_node_defaults_to_release_node_then_to_the_nodename_section() {
        let c = resolve_agent(
            None,
            env(&[("RELEASE_NODE", "web@10.1.1.1"), ("RELEASE_COOKIE", "c")]),
            "h",
            no_file,
            1,
        )
        .unwrap();
        assert_eq!(c.node.as_str(), "web@10.1.1.1");
        let file =
            "[nodename]\nbasename = \"web\"\nservice = \"web-headless\"\nnamespace = \"prod\"\n";
        let c = resolve_agent(
            Some(file),
            env(&[("POD_IP", "10.2.2.2"), ("RELEASE_COOKIE", "c")]),
            "h",
            no_file,
            1,
        )
        .unwrap();
        assert_eq!(
            c.node.as_str(),
            "web@10-2-2-2.web-headless.prod.svc.cluster.local"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let base = [("RELEASE_NODE", "a@h"), ("RELEASE_COOKIE", "c")];
        let cases: &[(&str, &str, &str)] = &[
            ("ERLKUBE_AGENT_HTTP", "nine", "agent.http"),
            (
                "ERLKUBE_AGENT_READY_MIN_PEERS",
                "most",
                "agent.ready_min_peers",
            ),
            ("ERLKUBE_AGENT_RPC_TIMEOUT", "0s", "agent.rpc_timeout"),
            ("ERLKUBE_AGENT_NODE_EVENTS", "yes", "agent.node_events"),
            ("ERLKUBE_AGENT_EPMD_WATCH", "on", "agent.epmd_watch"),
            (
                "ERLKUBE_AGENT_NODES_POLL_INTERVAL",
                "often",
                "agent.nodes_poll_interval",
            ),
            (
                "ERLKUBE_AGENT_DISCONNECT_ON_SHUTDOWN",
                "false",
                "agent.disconnect_on_shutdown",
            ),
            ("ERLKUBE_AGENT_DRAIN_GRACE", "11m", "agent.drain_grace"),
            ("ERLKUBE_AGENT_DRAIN_GRACE", "-1s", "agent.drain_grace"),
            ("ERLKUBE_AGENT_DRAIN_GRACE", "soon", "agent.drain_grace"),
            (
                "ERLKUBE_AGENT_REGISTER_POLL_INTERVAL",
                "2m",
                "agent.register_poll_interval",
            ),
            (
                "ERLKUBE_AGENT_REGISTER_POLL_INTERVAL",
                "fast",
                "agent.register_poll_interval",
            ),
            ("ERLKUBE_FORMATION_QUORUM", "0", "formation.quorum"),
            ("ERLKUBE_FORMATION_QUORUM", "-3", "formation.quorum"),
            ("ERLKUBE_FORMATION_QUORUM", "many", "formation.quorum"),
            ("ERLKUBE_AGENT_NODE", "nohost", "agent.node"),
            ("ERLKUBE_AGENT_BOGUS", "1", "ERLKUBE_AGENT_BOGUS"),
            ("ERLKUBE_DISCOVERY_STRATEGY", "magic", "discovery.strategy"),
        ];
        for (k, v, named) in cases {
            let mut e = env(&base);
            e.push((k.to_string(), v.to_string()));
            let err = resolve_agent(None, e, "h", no_file, 1)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(named), "{k}={v}: {err}");
        }
        let err = resolve_agent(
            Some("[agent]\nnodes = \"x\"\n"),
            env(&base),
            "h",
            no_file,
            1,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("agent.nodes: unknown key"), "{err}");
    }

    #[test]
    fn the_registration_poll_can_be_turned_off() {
        let c = resolve_agent(
            None,
            env(&[
                ("RELEASE_NODE", "a@h"),
                ("RELEASE_COOKIE", "c"),
                ("ERLKUBE_AGENT_REGISTER_POLL_INTERVAL", "0s"),
                ("ERL_EPMD_PORT", "4400"),
            ]),
            "h",
            no_file,
            1,
        )
        .unwrap();
        assert_eq!(c.register_poll_interval, None);
        assert_eq!(c.epmd_port, 4400);
    }

    #[test]
    fn quorum_comes_from_formation_or_the_older_key_but_not_both() {
        let base = [("RELEASE_NODE", "a@h"), ("RELEASE_COOKIE", "c")];
        let with = |extra: &[(&str, &str)]| {
            let mut e = env(&base);
            e.extend(env(extra));
            resolve_agent(None, e, "h", no_file, 1)
        };
        assert_eq!(with(&[]).unwrap().quorum, Quorum::All);
        assert_eq!(
            with(&[("ERLKUBE_FORMATION_QUORUM", "majority")])
                .unwrap()
                .quorum,
            Quorum::Majority
        );
        assert_eq!(
            with(&[("ERLKUBE_AGENT_READY_MIN_PEERS", "all")])
                .unwrap()
                .quorum,
            Quorum::All
        );
        let err = with(&[
            ("ERLKUBE_AGENT_READY_MIN_PEERS", "1"),
            ("ERLKUBE_FORMATION_QUORUM", "2"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("agent.ready_min_peers:") && err.contains("ERLKUBE_FORMATION_QUORUM"),
            "{err}"
        );
        assert_eq!(
            with(&[("ERLKUBE_AGENT_DRAIN_GRACE", "0s")])
                .unwrap()
                .drain_grace,
            Duration::ZERO
        );
        assert!(with(&[("ERLKUBE_AGENT_DISCONNECT_ON_SHUTDOWN", "true")]).is_ok());
    }

    #[test]
    fn a_missing_cookie_says_where_it_was_looked_for() {
        let err = resolve_agent(
            None,
            env(&[("RELEASE_NODE", "a@h"), ("HOME", "/nonexistent")]),
            "h",
            no_file,
            1,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("RELEASE_COOKIE") && err.contains(".erlang.cookie"),
            "{err}"
        );
        let c = resolve_agent(
            None,
            env(&[("RELEASE_NODE", "a@h"), ("ERLKUBE_AGENT_COOKIE_FILE", "/c")]),
            "h",
            |_| {
                Ok(CookieFile {
                    text: "  filecookie\n".into(),
                    mode: 0o644,
                })
            },
            1,
        )
        .unwrap();
        assert_eq!(c.cookie_source, "file /c");
    }
}
