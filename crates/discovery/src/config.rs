//! Formation settings from a TOML file and `ERLKUBE_<SECTION>_<KEY>`
//! environment variables (env overrides file overrides default), validated
//! with errors that name the key. Every key is listed in [`KEYS`] and
//! documented in `docs/configuration.md`.
//!
//! Pure: the caller reads the file and passes the environment in.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::EngineConfig;
use crate::plan::PlanConfig;
use crate::quorum::Quorum;
use crate::strategy::{DnsSettings, EmptyAnswer, IpVersion};
use crate::NodeName;

/// One configuration key.
#[derive(Debug)]
pub struct Key {
    /// Dotted name, e.g. `discovery.dns.query`.
    pub name: &'static str,
    /// Default (`None`: required when its strategy is used).
    pub default: Option<&'static str>,
    /// One-line meaning.
    pub doc: &'static str,
    /// The strategy the key belongs to (`None`: always used).
    pub strategy: Option<&'static [&'static str]>,
}

const DNS: &[&str] = &["dns_a", "dns_srv"];
const KUBE: &[&str] = &["kubernetes"];
const GOSSIP: &[&str] = &["gossip"];

/// Every key, in display order.
pub const KEYS: &[Key] = &[
    Key {
        name: "discovery.strategy",
        default: Some("epmd"),
        doc: "static | epmd | hosts_file | dns_a | dns_srv | kubernetes | gossip",
        strategy: None,
    },
    Key {
        name: "discovery.interval",
        default: Some("1s"),
        doc: "time between discovery rounds",
        strategy: None,
    },
    Key {
        name: "discovery.timeout",
        default: Some("2s"),
        doc: "upper bound of one discovery query",
        strategy: None,
    },
    Key {
        name: "discovery.static.nodes",
        default: None,
        doc: "node names, comma-separated in env",
        strategy: Some(&["static"]),
    },
    Key {
        name: "discovery.epmd.address",
        default: Some("127.0.0.1:4369"),
        doc: "the epmd to ask (ip:port)",
        strategy: Some(&["epmd"]),
    },
    Key {
        name: "discovery.epmd.host",
        default: Some("(this host's name)"),
        doc: "host part of the discovered names",
        strategy: Some(&["epmd"]),
    },
    Key {
        name: "discovery.hosts_file.path",
        default: Some(".hosts.erlang"),
        doc: "file of 'host'. terms",
        strategy: Some(&["hosts_file"]),
    },
    Key {
        name: "discovery.hosts_file.epmd_port",
        default: Some("4369"),
        doc: "epmd port on every host",
        strategy: Some(&["hosts_file"]),
    },
    Key {
        name: "discovery.dns.query",
        default: None,
        doc: "headless Service name to query",
        strategy: Some(DNS),
    },
    Key {
        name: "discovery.dns.basename",
        default: None,
        doc: "node name part: basename@address",
        strategy: Some(DNS),
    },
    Key {
        name: "discovery.dns.server",
        default: Some("system"),
        doc: "DNS server ip:port, or system (resolv.conf)",
        strategy: Some(DNS),
    },
    Key {
        name: "discovery.dns.ip_version",
        default: Some("both"),
        doc: "both | v4 | v6 (dns_a)",
        strategy: Some(DNS),
    },
    Key {
        name: "discovery.dns.min_expected",
        default: Some("0"),
        doc: "fewer records make the answer incomplete",
        strategy: Some(DNS),
    },
    Key {
        name: "discovery.dns.empty_answer",
        default: Some("error"),
        doc: "error | empty: meaning of an answer with no records",
        strategy: Some(DNS),
    },
    Key {
        name: "discovery.kubernetes.service",
        default: None,
        doc: "the (headless) Service whose endpoints are the cluster",
        strategy: Some(KUBE),
    },
    Key {
        name: "discovery.kubernetes.basename",
        default: None,
        doc: "node name part: basename@host",
        strategy: Some(KUBE),
    },
    Key {
        name: "discovery.kubernetes.mode",
        default: Some("ip"),
        doc: "ip | dns | hostname: the host part of node names",
        strategy: Some(KUBE),
    },
    Key {
        name: "discovery.kubernetes.namespace",
        default: Some("(service-account namespace)"),
        doc: "namespace of the Service or pods",
        strategy: Some(KUBE),
    },
    Key {
        name: "discovery.kubernetes.resource",
        default: Some("endpointslices"),
        doc: "endpointslices | endpoints | pods",
        strategy: Some(KUBE),
    },
    Key {
        name: "discovery.kubernetes.selector",
        default: None,
        doc: "label selector (required for pods; narrows endpointslices)",
        strategy: Some(KUBE),
    },
    Key {
        name: "discovery.kubernetes.watch",
        default: Some("true"),
        doc: "watch for changes (false: poll, for clusters that forbid watch)",
        strategy: Some(KUBE),
    },
    Key {
        name: "discovery.kubernetes.poll_interval",
        default: Some("5s"),
        doc: "time between lists when watch = false",
        strategy: Some(KUBE),
    },
    Key {
        name: "discovery.kubernetes.include_not_ready",
        default: Some("false"),
        doc: "also list endpoints that are not ready yet",
        strategy: Some(KUBE),
    },
    Key {
        name: "discovery.kubernetes.terminating",
        default: Some("keep"),
        doc: "keep | while_serving | drop: terminating endpoints (never dialled; kept connected while listed, while serving, or cut)",
        strategy: Some(KUBE),
    },
    Key {
        name: "discovery.kubernetes.cluster_domain",
        default: Some("cluster.local"),
        doc: "cluster DNS domain (default: $CLUSTER_DOMAIN, else cluster.local)",
        strategy: Some(KUBE),
    },
    Key {
        name: "discovery.kubernetes.api_server",
        default: Some("(from KUBERNETES_SERVICE_HOST/PORT)"),
        doc: "https://host:port of the API server (in-cluster access)",
        strategy: Some(KUBE),
    },
    Key {
        name: "discovery.kubernetes.service_account_dir",
        default: Some("/var/run/secrets/kubernetes.io/serviceaccount"),
        doc: "directory with token, ca.crt and namespace",
        strategy: Some(KUBE),
    },
    Key {
        name: "discovery.kubernetes.kubeconfig",
        default: None,
        doc: "kubeconfig file for running outside the cluster (unset: in-cluster)",
        strategy: Some(KUBE),
    },
    Key {
        name: "discovery.kubernetes.context",
        default: None,
        doc: "kubeconfig context (unset: current)",
        strategy: Some(KUBE),
    },
    Key {
        name: "discovery.gossip.cluster",
        default: None,
        doc: "cluster name (authenticated; clusters sharing a group never mix)",
        strategy: Some(GOSSIP),
    },
    Key {
        name: "discovery.gossip.secret_file",
        default: None,
        doc: "file holding the shared secret (at least 16 bytes)",
        strategy: Some(GOSSIP),
    },
    Key {
        name: "discovery.gossip.node",
        default: None,
        doc: "this node's name, announced to the others",
        strategy: Some(GOSSIP),
    },
    Key {
        name: "discovery.gossip.dist_port",
        default: Some("0"),
        doc: "this node's distribution port, announced",
        strategy: Some(GOSSIP),
    },
    Key {
        name: "discovery.gossip.group",
        default: Some("239.255.77.75:45892"),
        doc: "multicast group (or broadcast address) ip:port",
        strategy: Some(GOSSIP),
    },
    Key {
        name: "discovery.gossip.broadcast",
        default: Some("false"),
        doc: "send to a broadcast address instead of a multicast group",
        strategy: Some(GOSSIP),
    },
    Key {
        name: "discovery.gossip.interface",
        default: Some("any"),
        doc: "local IPv4 address of the interface to use",
        strategy: Some(GOSSIP),
    },
    Key {
        name: "discovery.gossip.interval",
        default: Some("1s"),
        doc: "time between heartbeats",
        strategy: Some(GOSSIP),
    },
    Key {
        name: "discovery.gossip.expiry",
        default: Some("5s"),
        doc: "silence after which a node is dropped",
        strategy: Some(GOSSIP),
    },
    Key {
        name: "formation.backoff_base",
        default: Some("200ms"),
        doc: "first retry delay after a failed connect",
        strategy: None,
    },
    Key {
        name: "formation.backoff_max",
        default: Some("10s"),
        doc: "largest retry delay",
        strategy: None,
    },
    Key {
        name: "formation.removal_grace",
        default: Some("5s"),
        doc: "absence from complete answers before removal",
        strategy: None,
    },
    Key {
        name: "formation.removal_probe",
        default: Some("on"),
        doc: "on: a node absent from discovery whose distribution port does not answer (probed at once, then every check) is removed without the grace; off: every absent node waits out removal_grace. Port mappers are asked on ERL_EPMD_PORT (default 4369)",
        strategy: None,
    },
    Key {
        name: "formation.disconnect_on_removal",
        default: Some("true"),
        doc: "disconnect removed nodes",
        strategy: None,
    },
    Key {
        name: "formation.check_interval",
        default: Some("1s"),
        doc: "how often the connected set is re-read",
        strategy: None,
    },
    Key {
        name: "formation.connect_timeout",
        default: Some("5s"),
        doc: "upper bound of one connect attempt",
        strategy: None,
    },
    Key {
        name: "formation.quorum",
        default: Some("all"),
        doc: "members (counting this node) connected before the node is ready: a number, majority (of the last complete discovered set) or all (every discovered peer)",
        strategy: None,
    },
    Key {
        name: "formation.partition_check",
        default: Some("2s"),
        doc: "how often connected peers are asked for their nodes() to detect partitions (off: never)",
        strategy: None,
    },
];

/// The environment variable of a key: `ERLKUBE_` + the dotted name in
/// upper case with `_` for `.` (`ERLKUBE_DISCOVERY_DNS_QUERY`).
pub fn env_name(key: &str) -> String {
    format!("ERLKUBE_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// The configuration file.
    File,
    /// The named environment variable.
    Env(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File => f.write_str("file"),
            Source::Env(v) => write!(f, "env {v}"),
        }
    }
}

/// A configuration error naming the key and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key's value is invalid.
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// A key nobody reads (a typo?).
    #[error("{key}: unknown key (from {origin}); known keys: {known}")]
    Unknown {
        /// The key as written.
        key: String,
        /// File or environment.
        origin: String,
        /// The known keys of that section.
        known: String,
    },
    /// The file is not valid TOML.
    #[error("configuration file: {0}")]
    Syntax(String),
}

pub(crate) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// One resolved key.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The dotted key.
    pub key: &'static str,
    /// The value as text (lists comma-separated), `None` when unset.
    pub value: Option<String>,
    /// Where it came from.
    pub source: Source,
}

/// The chosen strategy with its typed settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum StrategyConfig {
    /// A fixed list.
    Static(Vec<NodeName>),
    /// The names on one epmd.
    Epmd {
        /// The epmd.
        address: SocketAddr,
        /// Host part of the names.
        host: String,
    },
    /// A `.hosts.erlang` file.
    HostsFile {
        /// The file.
        path: PathBuf,
        /// epmd port on every host.
        epmd_port: u16,
    },
    /// DNS A/AAAA.
    DnsA(DnsSettings),
    /// DNS SRV.
    DnsSrv(DnsSettings),
    /// The Kubernetes API.
    Kubernetes(crate::kubernetes::KubeSettings),
    /// UDP multicast/broadcast gossip.
    Gossip(crate::gossip::GossipSettings),
}

impl StrategyConfig {
    /// Which strategy this configures.
    pub fn kind(&self) -> crate::strategy::StrategyKind {
        use crate::strategy::StrategyKind as K;
        match self {
            StrategyConfig::Static(_) => K::Static,
            StrategyConfig::Epmd { .. } => K::Epmd,
            StrategyConfig::HostsFile { .. } => K::HostsFile,
            StrategyConfig::DnsA(_) => K::DnsA,
            StrategyConfig::DnsSrv(_) => K::DnsSrv,
            StrategyConfig::Kubernetes(_) => K::Kubernetes,
            StrategyConfig::Gossip(_) => K::Gossip,
        }
    }
}

/// Everything resolved: the entries (for `erlkube formation --check`) and
/// the typed settings.
#[derive(Clone, Debug)]
pub struct FormationConfig {
    /// Every key used by the chosen strategy, with value and source.
    pub entries: Vec<Entry>,
    /// The strategy's name.
    pub strategy_name: String,
    /// The strategy.
    pub strategy: StrategyConfig,
    /// Discovery interval.
    pub interval: Duration,
    /// Discovery query timeout.
    pub timeout: Duration,
    /// The engine's settings.
    pub engine: EngineConfig,
    /// Readiness rule (`formation.quorum`).
    pub quorum: Quorum,
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            other => {
                out.insert(key, other.clone());
            }
        }
    }
}

fn value_text(key: &str, v: &toml::Value) -> Result<String, ConfigError> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => {
            let mut parts = Vec::new();
            for i in items {
                match i {
                    toml::Value::String(s) => parts.push(s.clone()),
                    other => {
                        return Err(invalid(
                            key,
                            format!("list items must be strings, got {other}"),
                        ))
                    }
                }
            }
            parts.join(",")
        }
        other => return Err(invalid(key, format!("unsupported value {other}"))),
    })
}

/// Fails on the first variable of `env` that starts with `prefix` but is
/// not the variable of one of `keys` (an error naming them all): a typo
/// in an `ERLKUBE_…` variable is an error, not silence. Shared by every
/// configuration section (formation here, the agent's sections there).
pub fn check_env_keys<'a>(
    env: impl IntoIterator<Item = &'a String>,
    prefix: &str,
    keys: &[&str],
) -> Result<(), ConfigError> {
    for k in env {
        if k.starts_with(prefix) && !keys.iter().any(|key| env_name(key) == *k) {
            return Err(ConfigError::Unknown {
                key: k.clone(),
                origin: "environment".into(),
                known: keys
                    .iter()
                    .map(|k| env_name(k))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(())
}

fn known_keys() -> String {
    KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// Resolves the configuration: `file` is the TOML text (if any), `env` the
/// process environment (only `ERLKUBE_DISCOVERY_*` and `ERLKUBE_FORMATION_*`
/// are read; unknown ones there are errors). `hostname` is this host's name
/// (default of `discovery.epmd.host`).
pub fn resolve(
    file: Option<&str>,
    env: impl IntoIterator<Item = (String, String)>,
    hostname: &str,
) -> Result<FormationConfig, ConfigError> {
    resolve_with(file, env, &Defaults::for_host(hostname))
}

/// Defaults that depend on where formation runs.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// Default of `discovery.epmd.host` (the host part of this node's name).
    pub hostname: String,
    /// Default of `discovery.epmd.address` (`None`: `127.0.0.1:4369`).
    pub epmd_address: Option<SocketAddr>,
}

impl Defaults {
    /// Host-name default only.
    pub fn for_host(hostname: &str) -> Defaults {
        Defaults {
            hostname: hostname.to_owned(),
            epmd_address: None,
        }
    }
}

/// [`resolve`] with explicit [`Defaults`].
pub fn resolve_with(
    file: Option<&str>,
    env: impl IntoIterator<Item = (String, String)>,
    defaults: &Defaults,
) -> Result<FormationConfig, ConfigError> {
    let hostname = defaults.hostname.as_str();
    let mut file_values = BTreeMap::new();
    if let Some(text) = file {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError::Syntax(e.to_string().trim_end().to_owned())
        })?;
        flatten("", &table, &mut file_values);
    }
    for k in file_values.keys() {
        if !KEYS.iter().any(|key| key.name == k) {
            return Err(ConfigError::Unknown {
                key: k.clone(),
                origin: "file".into(),
                known: known_keys(),
            });
        }
    }
    let env: Vec<(String, String)> = env.into_iter().collect();
    let epmd_port_env = env
        .iter()
        .find(|(k, _)| k == "ERL_EPMD_PORT")
        .map(|(_, v)| v.clone())
        .filter(|v| !v.trim().is_empty());
    let cluster_domain_env = env
        .iter()
        .find(|(k, _)| k == "CLUSTER_DOMAIN")
        .map(|(_, v)| v.clone())
        .filter(|v| !v.trim().is_empty());
    let env: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("ERLKUBE_DISCOVERY_") || k.starts_with("ERLKUBE_FORMATION_"))
        .collect();
    check_env_keys(
        env.keys(),
        "",
        &KEYS.iter().map(|k| k.name).collect::<Vec<_>>(),
    )?;
    let mut entries = Vec::new();
    for key in KEYS {
        let var = env_name(key.name);
        let (value, source) = if let Some(v) = env.get(&var) {
            (Some(v.clone()), Source::Env(var))
        } else if let Some(v) = file_values.get(key.name) {
            (Some(value_text(key.name, v)?), Source::File)
        } else if key.name == "discovery.epmd.host" {
            (Some(hostname.to_owned()), Source::Default)
        } else if key.name == "discovery.kubernetes.cluster_domain" && cluster_domain_env.is_some()
        {
            (
                cluster_domain_env.clone(),
                Source::Env("CLUSTER_DOMAIN".into()),
            )
        } else if let (true, Some(a)) =
            (key.name == "discovery.epmd.address", defaults.epmd_address)
        {
            (Some(a.to_string()), Source::Default)
        } else {
            (key.default.map(str::to_owned), Source::Default)
        };
        entries.push(Entry {
            key: key.name,
            value,
            source,
        });
    }
    let get = |name: &str| -> Option<String> {
        entries
            .iter()
            .find(|e| e.key == name)
            .and_then(|e| e.value.clone())
    };
    let required = |name: &str| -> Result<String, ConfigError> {
        match get(name) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(invalid(
                name,
                format!(
                    "required by the chosen strategy; set it in the file or {}",
                    env_name(name)
                ),
            )),
        }
    };
    let duration = |name: &str| -> Result<Duration, ConfigError> {
        let v = get(name).unwrap_or_default();
        parse_duration(&v).ok_or_else(|| {
            invalid(
                name,
                format!("must be a duration like \"500ms\", \"2s\" or \"1m\", got {v:?}"),
            )
        })
    };
    let strategy_name = get("discovery.strategy").unwrap_or_default();
    let interval = duration("discovery.interval")?;
    if interval.is_zero() {
        return Err(invalid("discovery.interval", "must be more than 0s"));
    }
    let timeout = duration("discovery.timeout")?;
    let dns = |_: ()| -> Result<DnsSettings, ConfigError> {
        let query = required("discovery.dns.query")?;
        if !is_dns_name(&query) {
            return Err(invalid(
                "discovery.dns.query",
                format!("must be a DNS name such as \"myapp-headless.default.svc.cluster.local\", got {query:?}"),
            ));
        }
        let basename = required("discovery.dns.basename")?;
        if basename.contains('@') || basename.contains(char::is_whitespace) {
            return Err(invalid(
                "discovery.dns.basename",
                format!(
                    "must be the name part of a node name (no '@', no spaces), got {basename:?}"
                ),
            ));
        }
        let server_text = get("discovery.dns.server").unwrap_or_default();
        let server = if server_text == "system" {
            None
        } else if let Ok(a) = server_text.parse::<SocketAddr>() {
            Some(a)
        } else if let Ok(ip) = server_text.parse::<IpAddr>() {
            Some(SocketAddr::new(ip, 53))
        } else {
            return Err(invalid(
                "discovery.dns.server",
                format!("must be \"system\" or ip[:port] such as \"10.96.0.10:53\" or \"[fd00::a]:53\", got {server_text:?}"),
            ));
        };
        let ipv = get("discovery.dns.ip_version").unwrap_or_default();
        let ip_version = match ipv.as_str() {
            "both" => IpVersion::Both,
            "v4" => IpVersion::V4,
            "v6" => IpVersion::V6,
            _ => {
                return Err(invalid(
                    "discovery.dns.ip_version",
                    format!("must be one of both, v4, v6; got {ipv:?}"),
                ))
            }
        };
        let me = get("discovery.dns.min_expected").unwrap_or_default();
        let min_expected = me.parse::<usize>().map_err(|_| {
            invalid(
                "discovery.dns.min_expected",
                format!("must be a whole number, got {me:?}"),
            )
        })?;
        let ea = get("discovery.dns.empty_answer").unwrap_or_default();
        let empty_answer = match ea.as_str() {
            "error" => EmptyAnswer::Error,
            "empty" => EmptyAnswer::Empty,
            _ => {
                return Err(invalid(
                    "discovery.dns.empty_answer",
                    format!("must be \"error\" (keep the last good set) or \"empty\" (remove every node); got {ea:?}"),
                ))
            }
        };
        Ok(DnsSettings {
            query,
            basename,
            server,
            timeout,
            min_expected,
            empty_answer,
            ip_version,
        })
    };
    let strategy = match strategy_name.as_str() {
        "static" => {
            let text = required("discovery.static.nodes")?;
            let mut nodes = Vec::new();
            for n in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                nodes.push(
                    NodeName::parse(n)
                        .map_err(|e| invalid("discovery.static.nodes", e.to_string()))?,
                );
            }
            StrategyConfig::Static(nodes)
        }
        "epmd" => {
            let a = get("discovery.epmd.address").unwrap_or_default();
            let address = a.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "discovery.epmd.address",
                    format!("must be ip:port such as \"127.0.0.1:4369\", got {a:?}"),
                )
            })?;
            let host = required("discovery.epmd.host")?;
            if host.contains('@') || host.contains(char::is_whitespace) {
                return Err(invalid(
                    "discovery.epmd.host",
                    format!("must be a host name, got {host:?}"),
                ));
            }
            StrategyConfig::Epmd { address, host }
        }
        "hosts_file" => {
            let path = PathBuf::from(required("discovery.hosts_file.path")?);
            let p = get("discovery.hosts_file.epmd_port").unwrap_or_default();
            let epmd_port = p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                invalid(
                    "discovery.hosts_file.epmd_port",
                    format!("must be a port number 1-65535, got {p:?}"),
                )
            })?;
            StrategyConfig::HostsFile { path, epmd_port }
        }
        "dns_a" => StrategyConfig::DnsA(dns(())?),
        "dns_srv" => StrategyConfig::DnsSrv(dns(())?),
        "kubernetes" => StrategyConfig::Kubernetes(crate::kubernetes::config::settings(&get, timeout)?),
        "gossip" => StrategyConfig::Gossip(crate::gossip::config::settings(&get)?),
        other => {
            return Err(invalid(
                "discovery.strategy",
                format!("must be one of static, epmd, hosts_file, dns_a, dns_srv, kubernetes, gossip; got {other:?}"),
            ))
        }
    };
    let backoff_base = duration("formation.backoff_base")?;
    let backoff_max = duration("formation.backoff_max")?;
    if backoff_base.is_zero() {
        return Err(invalid("formation.backoff_base", "must be more than 0s"));
    }
    if backoff_max < backoff_base {
        return Err(invalid(
            "formation.backoff_max",
            format!(
                "must be at least formation.backoff_base ({backoff_base:?}), got {backoff_max:?}"
            ),
        ));
    }
    let dor = get("formation.disconnect_on_removal").unwrap_or_default();
    let disconnect_on_removal = match dor.as_str() {
        "true" => true,
        "false" => false,
        _ => {
            return Err(invalid(
                "formation.disconnect_on_removal",
                format!("must be true or false, got {dor:?}"),
            ))
        }
    };
    let check_interval = duration("formation.check_interval")?;
    if check_interval.is_zero() {
        return Err(invalid("formation.check_interval", "must be more than 0s"));
    }
    let connect_timeout = duration("formation.connect_timeout")?;
    let quorum = Quorum::parse(&get("formation.quorum").unwrap_or_default())
        .map_err(|m| invalid("formation.quorum", m))?;
    let pc = get("formation.partition_check").unwrap_or_default();
    let partition_check = match (pc.as_str(), parse_duration(&pc)) {
        ("off", _) => None,
        (_, Some(d)) if !d.is_zero() => Some(d),
        _ => {
            return Err(invalid(
                "formation.partition_check",
                format!("must be a duration above 0s like \"2s\", or off; got {pc:?}"),
            ))
        }
    };
    let removal_probe = match get("formation.removal_probe").as_deref() {
        Some("on") => {
            let epmd_port = match &epmd_port_env {
                None => 4369,
                Some(p) => p
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| {
                        invalid(
                            "ERL_EPMD_PORT",
                            format!("must be a port number 1-65535, got {p:?}"),
                        )
                    })?,
            };
            Some(crate::liveness::RemovalProbe { epmd_port })
        }
        Some("off") => None,
        other => {
            return Err(invalid(
                "formation.removal_probe",
                format!("must be on or off; got {:?}", other.unwrap_or_default()),
            ))
        }
    };
    let engine = EngineConfig {
        plan: PlanConfig {
            backoff_base,
            backoff_max,
            removal_grace: duration("formation.removal_grace")?,
            disconnect_on_removal,
        },
        check_interval,
        connect_timeout,
        seed: None,
        partition_check,
        removal_probe,
    };
    let entries = entries
        .into_iter()
        .filter(|e| {
            KEYS.iter()
                .find(|k| k.name == e.key)
                .and_then(|k| k.strategy)
                .is_none_or(|s| s.contains(&strategy_name.as_str()))
        })
        .collect();
    Ok(FormationConfig {
        entries,
        strategy_name,
        strategy,
        interval,
        timeout,
        engine,
        quorum,
    })
}

impl FormationConfig {
    /// The resolved plan as text: one line per key with value and source.
    pub fn describe(&self) -> String {
        let mut out = format!("strategy: {}\n", self.strategy_name);
        let width = self.entries.iter().map(|e| e.key.len()).max().unwrap_or(0);
        for e in &self.entries {
            let v = match &e.value {
                Some(v) => format!("{v:?}"),
                None => "(unset)".into(),
            };
            out.push_str(&format!("  {:width$} = {v}  ({})\n", e.key, e.source));
        }
        out
    }
}

impl FormationConfig {
    /// The host forms of the names this strategy discovers (empty when the
    /// configuration does not say: hosts file, gossip, a mixed static list).
    pub fn discovered_forms(&self) -> Vec<crate::HostForm> {
        use crate::kubernetes::NameMode;
        use crate::HostForm;
        let ip = |v: IpVersion| match v {
            IpVersion::V4 => vec![HostForm::Ipv4],
            IpVersion::V6 => vec![HostForm::Ipv6],
            IpVersion::Both => vec![HostForm::Ipv4, HostForm::Ipv6],
        };
        match &self.strategy {
            StrategyConfig::Static(nodes) => {
                let forms: BTreeSet<HostForm> = nodes.iter().map(|n| n.host_form()).collect();
                if forms.len() == 1 {
                    forms.into_iter().collect()
                } else {
                    Vec::new()
                }
            }
            StrategyConfig::Epmd { host, .. } => vec![HostForm::of(host)],
            StrategyConfig::DnsA(d) => ip(d.ip_version),
            StrategyConfig::DnsSrv(_) => vec![HostForm::DnsName],
            StrategyConfig::Kubernetes(k) => match k.mode {
                NameMode::Ip => vec![HostForm::Ipv4, HostForm::Ipv6],
                _ => vec![HostForm::DnsName],
            },
            _ => Vec::new(),
        }
    }

    /// A warning when `node`'s name can never match what this
    /// configuration discovers (see [`crate::form`]).
    pub fn check_node_form(&self, node: &NodeName) -> Option<String> {
        crate::form::check_forms(node, &self.discovered_forms(), &self.strategy_name)
    }
}

/// `500ms`, `2s`, `1m`, `0s`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
}

fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_to_the_local_epmd() {
        let c = resolve(None, env(&[]), "myhost").unwrap();
        assert_eq!(c.strategy_name, "epmd");
        let StrategyConfig::Epmd { address, host } = &c.strategy else {
            panic!()
        };
        assert_eq!(address.to_string(), "127.0.0.1:4369");
        assert_eq!(host, "myhost");
        assert_eq!(c.engine.plan, PlanConfig::default());
        assert!(c.entries.iter().all(|e| e.source == Source::Default));
    }

    #[test]
    fn env_overrides_file_and_sources_are_reported() {
        let file = r#"
[discovery]
strategy = "dns_a"
interval = "3s"
[discovery.dns]
query = "app-headless.default.svc.cluster.local"
basename = "app"
server = "10.0.0.2:5353"
"#;
        let c = resolve(
            Some(file),
            env(&[("ERLKUBE_DISCOVERY_INTERVAL", "250ms"), ("PATH", "/bin")]),
            "h",
        )
        .unwrap();
        assert_eq!(c.interval, Duration::from_millis(250));
        let StrategyConfig::DnsA(s) = &c.strategy else {
            panic!()
        };
        assert_eq!(s.server, Some("10.0.0.2:5353".parse().unwrap()));
        assert_eq!(s.empty_answer, EmptyAnswer::Error);
        let src = |k: &str| {
            c.entries
                .iter()
                .find(|e| e.key == k)
                .unwrap()
                .source
                .clone()
        };
        assert_eq!(
            src("discovery.interval"),
            Source::Env("ERLKUBE_DISCOVERY_INTERVAL".into())
        );
        assert_eq!(src("discovery.dns.query"), Source::File);
        assert_eq!(src("formation.backoff_base"), Source::Default);
        // Keys of other strategies are not shown.
        assert!(!c
            .entries
            .iter()
            .any(|e| e.key.starts_with("discovery.epmd")));
        let text = c.describe();
        assert!(text.contains("discovery.dns.query"), "{text}");
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let e = resolve(
            None,
            env(&[
                ("ERLKUBE_DISCOVERY_STRATEGY", "dns_srv"),
                ("ERLKUBE_DISCOVERY_DNS_QUERY", "not a name!"),
            ]),
            "h",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("discovery.dns.query: must be a DNS name"),
            "{e}"
        );
        let e = resolve(None, env(&[("ERLKUBE_DISCOVERY_STRATEGY", "dns_a")]), "h").unwrap_err();
        assert!(e.to_string().contains("ERLKUBE_DISCOVERY_DNS_QUERY"), "{e}");
        let e = resolve(Some("[formation]\nbackoff_bas = \"1s\"\n"), env(&[]), "h").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("formation.backoff_bas: unknown key"),
            "{e}"
        );
        let e = resolve(None, env(&[("ERLKUBE_FORMATION_BACKOFF_MAX", "fast")]), "h").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("formation.backoff_max: must be a duration"),
            "{e}"
        );
        let e = resolve(None, env(&[("ERLKUBE_DISCOVERY_STRATEG", "x")]), "h").unwrap_err();
        assert!(matches!(e, ConfigError::Unknown { .. }), "{e}");
        let e = resolve(Some("discovery = ["), env(&[]), "h").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax(_)), "{e}");
        let e = resolve(
            Some("[discovery]\nstrategy = \"static\"\n[discovery.static]\nnodes = [\"a@h\", \"bad\"]\n"),
            env(&[]),
            "h",
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "discovery.static.nodes: invalid node name \"bad\": it needs a host part"
            ),
            "{e}"
        );
    }

    #[test]
    fn quorum_is_a_positive_count_majority_or_all() {
        assert_eq!(resolve(None, env(&[]), "h").unwrap().quorum, Quorum::All);
        let q = |v: &str| resolve(None, env(&[("ERLKUBE_FORMATION_QUORUM", v)]), "h");
        assert_eq!(q("3").unwrap().quorum, Quorum::Members(3));
        assert_eq!(q("majority").unwrap().quorum, Quorum::Majority);
        for bad in ["0", "-2", "three"] {
            let e = q(bad).unwrap_err().to_string();
            assert!(e.starts_with("formation.quorum: must be"), "{bad}: {e}");
        }
        let e = resolve(Some("[formation]\nquorum = 0\n"), env(&[]), "h").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("formation.quorum: must be at least 1"),
            "{e}"
        );
    }

    #[test]
    fn static_list_from_env_is_comma_separated() {
        let c = resolve(
            None,
            env(&[
                ("ERLKUBE_DISCOVERY_STRATEGY", "static"),
                ("ERLKUBE_DISCOVERY_STATIC_NODES", "a@h1, b@h2"),
            ]),
            "h",
        )
        .unwrap();
        let StrategyConfig::Static(n) = &c.strategy else {
            panic!()
        };
        assert_eq!(n, &vec![NodeName::new("a@h1"), NodeName::new("b@h2")]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("2"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("1h"), None);
    }

    #[test]
    fn removal_probe_is_on_by_default_asks_erl_epmd_port_and_takes_off() {
        use crate::liveness::RemovalProbe;
        let c = resolve(None, env(&[]), "h").unwrap();
        assert_eq!(
            c.engine.removal_probe,
            Some(RemovalProbe { epmd_port: 4369 })
        );
        let c = resolve(None, env(&[("ERL_EPMD_PORT", "4400")]), "h").unwrap();
        assert_eq!(
            c.engine.removal_probe,
            Some(RemovalProbe { epmd_port: 4400 })
        );
        let c = resolve(
            Some("[formation]\nremoval_probe = \"off\"\n"),
            env(&[]),
            "h",
        )
        .unwrap();
        assert_eq!(c.engine.removal_probe, None);
        let e = resolve(
            None,
            env(&[("ERLKUBE_FORMATION_REMOVAL_PROBE", "yes")]),
            "h",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("formation.removal_probe") && e.contains("on or off"),
            "{e}"
        );
        let e = resolve(None, env(&[("ERL_EPMD_PORT", "x")]), "h")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ERL_EPMD_PORT"), "{e}");
    }

    #[test]
    fn partition_check_defaults_to_2s_takes_off_and_refuses_bad_values() {
        let c = resolve(None, env(&[]), "h").unwrap();
        assert_eq!(c.engine.partition_check, Some(Duration::from_secs(2)));
        let c = resolve(
            None,
            env(&[("ERLKUBE_FORMATION_PARTITION_CHECK", "500ms")]),
            "h",
        )
        .unwrap();
        assert_eq!(c.engine.partition_check, Some(Duration::from_millis(500)));
        let c = resolve(
            Some("[formation]\npartition_check = \"off\"\n"),
            env(&[]),
            "h",
        )
        .unwrap();
        assert_eq!(c.engine.partition_check, None);
        for bad in ["0s", "soon", "-1s"] {
            let e = resolve(
                None,
                env(&[("ERLKUBE_FORMATION_PARTITION_CHECK", bad)]),
                "h",
            )
            .unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("formation.partition_check: must be a duration above 0s"),
                "{bad:?}: {e}"
            );
        }
    }
}
