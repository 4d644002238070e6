//! Node names from a pod's environment (`erlkube nodename`, `erlkube env`).
//!
//! Pure except [`NamingInput::from_process`] (reads the environment, the
//! service-account namespace file and the host name) and [`check_resolves`]
//! (resolves a host name, reads the interface addresses).
//!
//! Modes:
//! - `ip`: `basename@<POD_IP>` (IPv6 as written, e.g. `app@fd00::5`;
//!   such nodes need `-proto_dist inet6_tcp`).
//! - `pod_dns`: `basename@<A-B-C-D>.<service>.<namespace>.svc.<domain>`,
//!   the per-pod record of a headless Service (Deployments). For IPv6 the
//!   colons of the address as Kubernetes prints it become dashes
//!   (`fd00::5` → `fd00--5`).
//! - `statefulset`: `basename@<hostname>.<service>.<namespace>.svc.<domain>`
//!   (`app-0.app-headless.default.svc.cluster.local`).
//! - `fqdn`: `basename@$(hostname -f)`.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// How the host part is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The pod IP.
    Ip,
    /// The dashed pod IP under the headless Service.
    PodDns,
    /// The StatefulSet pod's stable name under the headless Service.
    StatefulSet,
    /// `hostname -f`.
    Fqdn,
}

impl Mode {
    /// Parses `ip | pod_dns | statefulset | fqdn`.
    pub fn parse(text: &str) -> Option<Mode> {
        Some(match text {
            "ip" => Mode::Ip,
            "pod_dns" => Mode::PodDns,
            "statefulset" => Mode::StatefulSet,
            "fqdn" => Mode::Fqdn,
            _ => return None,
        })
    }

    /// The configured spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ip => "ip",
            Mode::PodDns => "pod_dns",
            Mode::StatefulSet => "statefulset",
            Mode::Fqdn => "fqdn",
        }
    }
}

/// Why a name cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NamingError {
    /// A required input is missing.
    #[error("{what} is not set: {hint}")]
    Missing {
        /// The missing input (`POD_IP`, `nodename.service`, ...).
        what: &'static str,
        /// How to provide it.
        hint: &'static str,
    },
    /// An input has an unusable value.
    #[error("{what}: {message}")]
    Invalid {
        /// The input.
        what: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Everything a name is made of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamingInput {
    /// The mode.
    pub mode: Option<Mode>,
    /// Name part (`app` in `app@host`).
    pub basename: Option<String>,
    /// Headless Service name.
    pub service: Option<String>,
    /// Kubernetes namespace.
    pub namespace: Option<String>,
    /// Cluster domain (default `cluster.local`).
    pub cluster_domain: Option<String>,
    /// The pod IP (`POD_IP`).
    pub pod_ip: Option<String>,
    /// The pod's name as the downward API gives it (`POD_NAME`), else its
    /// host name (`HOSTNAME` / gethostname), which a pod's `hostname:`
    /// field can make differ from the name the StatefulSet's DNS uses.
    pub hostname: Option<String>,
    /// `hostname -f`, when the mode needs it.
    pub fqdn: Option<String>,
}

/// The service-account namespace file Kubernetes mounts into pods.
pub const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

impl NamingInput {
    /// Fills the inputs from the process: `vars` (usually
    /// `std::env::vars()`: `ERLKUBE_NODENAME_*`, `POD_IP`, `POD_NAMESPACE`,
    /// `CLUSTER_DOMAIN`, `POD_NAME`, `HOSTNAME`, `RELEASE_NAME`), the namespace file and
    /// the kernel's host name. `file` holds `[nodename]` keys from the
    /// configuration file (environment wins).
    pub fn from_process(
        vars: impl IntoIterator<Item = (String, String)>,
        file: &BTreeMap<String, String>,
    ) -> Result<NamingInput, NamingError> {
        let env: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .collect();
        let pick = |key: &str, fallbacks: &[&str]| -> Option<String> {
            env.get(&format!("ERLKUBE_NODENAME_{}", key.to_ascii_uppercase()))
                .or_else(|| file.get(key))
                .or_else(|| fallbacks.iter().find_map(|f| env.get(*f)))
                .map(|s| s.trim().to_owned())
        };
        let mode = match pick("mode", &[]) {
            None => None,
            Some(m) => Some(Mode::parse(&m).ok_or_else(|| NamingError::Invalid {
                what: "nodename.mode",
                message: format!("must be one of ip, pod_dns, statefulset, fqdn; got {m:?}"),
            })?),
        };
        let namespace = pick("namespace", &["POD_NAMESPACE"]).or_else(|| {
            std::fs::read_to_string(NAMESPACE_FILE)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        });
        let hostname = env
            .get("POD_NAME")
            .or_else(|| env.get("HOSTNAME"))
            .map(|s| s.trim().to_owned())
            .or_else(kernel_hostname);
        let fqdn = if mode == Some(Mode::Fqdn) {
            hostname_f()
        } else {
            None
        };
        Ok(NamingInput {
            mode,
            basename: pick("basename", &["RELEASE_NAME"]),
            service: pick("service", &[]),
            namespace,
            cluster_domain: pick("cluster_domain", &["CLUSTER_DOMAIN"]),
            pod_ip: pick("pod_ip", &["POD_IP"]),
            hostname,
            fqdn,
        })
    }
}

fn kernel_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn hostname_f() -> Option<String> {
    let out = std::process::Command::new("hostname")
        .arg("-f")
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// A resolved name and how it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Naming {
    /// The mode used.
    pub mode: Mode,
    /// `basename@host`.
    pub node: String,
    /// The host part.
    pub host: String,
    /// True when the host part is an IPv6 address (the node then needs
    /// `-proto_dist inet6_tcp`).
    pub ipv6: bool,
}

/// The dashed form of an address as Kubernetes names per-pod records:
/// `10.1.2.3` → `10-1-2-3`, `fd00::5` → `fd00--5`.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

fn label(what: &'static str, v: &str) -> Result<(), NamingError> {
    let ok = !v.is_empty()
        && v.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(NamingError::Invalid {
            what,
            message: format!("must be a DNS name (letters, digits, '-', dots), got {v:?}"),
        })
    }
}

/// Makes the node name. The mode defaults to `pod_dns` when a service is
/// set, else `ip`.
pub fn node_name(input: &NamingInput) -> Result<Naming, NamingError> {
    let mode = input.mode.unwrap_or(if input.service.is_some() {
        Mode::PodDns
    } else {
        Mode::Ip
    });
    let basename = input.basename.clone().ok_or(NamingError::Missing {
        what: "nodename.basename",
        hint: "set ERLKUBE_NODENAME_BASENAME (or RELEASE_NAME) to the name part, e.g. myapp",
    })?;
    if basename.is_empty()
        || !basename
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(NamingError::Invalid {
            what: "nodename.basename",
            message: format!("must be letters, digits, '_' or '-', got {basename:?}"),
        });
    }
    let pod_ip = || -> Result<IpAddr, NamingError> {
        let text = input.pod_ip.as_deref().ok_or(NamingError::Missing {
            what: "POD_IP",
            hint: "expose it with the downward API: env POD_IP from fieldRef status.podIP",
        })?;
        text.parse::<IpAddr>().map_err(|_| NamingError::Invalid {
            what: "POD_IP",
            message: format!("not an IP address: {text:?}"),
        })
    };
    let service_suffix = || -> Result<String, NamingError> {
        let service = input.service.as_deref().ok_or(NamingError::Missing {
            what: "nodename.service",
            hint: "set ERLKUBE_NODENAME_SERVICE to the headless Service's name",
        })?;
        label("nodename.service", service)?;
        let namespace = input.namespace.as_deref().ok_or(NamingError::Missing {
            what: "nodename.namespace",
            hint:
                "set POD_NAMESPACE (downward API metadata.namespace) or ERLKUBE_NODENAME_NAMESPACE",
        })?;
        label("nodename.namespace", namespace)?;
        let domain = input
            .cluster_domain
            .as_deref()
            .unwrap_or("cluster.local")
            .trim_end_matches('.');
        label("nodename.cluster_domain", domain)?;
        Ok(format!("{service}.{namespace}.svc.{domain}"))
    };
    let (host, ipv6) = match mode {
        Mode::Ip => {
            let ip = pod_ip()?;
            (ip.to_string(), ip.is_ipv6())
        }
        Mode::PodDns => {
            let ip = pod_ip()?;
            (format!("{}.{}", dashed(ip), service_suffix()?), false)
        }
        Mode::StatefulSet => {
            let h = input.hostname.as_deref().ok_or(NamingError::Missing {
                what: "POD_NAME",
                hint:
                    "the pod's name (downward API metadata.name; else HOSTNAME, set by Kubernetes)",
            })?;
            let short = h.split('.').next().unwrap_or(h);
            label("POD_NAME", short)?;
            (format!("{short}.{}", service_suffix()?), false)
        }
        Mode::Fqdn => {
            let f = input.fqdn.clone().ok_or(NamingError::Missing {
                what: "hostname -f",
                hint: "`hostname -f` gave no name; set nodename.mode to ip or pod_dns",
            })?;
            label("hostname -f", &f)?;
            (f, false)
        }
    };
    Ok(Naming {
        mode,
        node: format!("{basename}@{host}"),
        host,
        ipv6,
    })
}

/// Quotes `s` for a POSIX shell: bare when it is made of safe characters,
/// else in single quotes with `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The variable that carries extra `erl` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagsVar {
    /// `ELIXIR_ERL_OPTIONS`: read by the `elixir` script that a mix
    /// release's `bin/<name>` runs (the default).
    ElixirErlOptions,
    /// `ERL_AFLAGS`: read by every `erl` (rebar3 releases, plain `erl`).
    ErlAflags,
}

impl FlagsVar {
    /// The variable's name.
    pub fn as_str(self) -> &'static str {
        match self {
            FlagsVar::ElixirErlOptions => "ELIXIR_ERL_OPTIONS",
            FlagsVar::ErlAflags => "ERL_AFLAGS",
        }
    }
}

/// The shell lines for a release's `env.sh` (`eval "$(erlkube env)"`).
///
/// - `RELEASE_DISTRIBUTION=name` and `RELEASE_NODE=<node>` (mix releases);
/// - an IPv6 host part appends `-proto_dist inet6_tcp` to `flags_var`
///   (for every command: `remote` needs it too);
/// - a fixed distribution port appends
///   `-kernel inet_dist_listen_min P inet_dist_listen_max P`, only when
///   `$RELEASE_COMMAND` is `start*` or `daemon*` (unset counts as start),
///   so `bin/<name> remote` and `rpc` do not try to listen on the node's
///   port. Values already in `flags_var` are kept in front.
pub fn env_lines(naming: &Naming, dist_port: Option<u16>, flags_var: FlagsVar) -> String {
    let var = flags_var.as_str();
    let append = |flags: &str| format!("export {var}=\"${{{var}:+${var} }}{flags}\"");
    let mut out = String::new();
    out.push_str("export RELEASE_DISTRIBUTION=name\n");
    out.push_str(&format!(
        "export RELEASE_NODE={}\n",
        shell_quote(&naming.node)
    ));
    if naming.ipv6 {
        out.push_str(&append("-proto_dist inet6_tcp"));
        out.push('\n');
    }
    if let Some(p) = dist_port {
        out.push_str(&format!(
            "case \"${{RELEASE_COMMAND:-start}}\" in start*|daemon*) {} ;; esac\n",
            append(&format!(
                "-kernel inet_dist_listen_min {p} inet_dist_listen_max {p}"
            ))
        ));
    }
    out
}

/// Whether the name's host part resolves to this pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// It resolves to (or is) one of `ours`.
    Ok(Vec<IpAddr>),
    /// It resolves, but to none of this pod's addresses.
    Elsewhere {
        /// What it resolves to.
        resolved: Vec<IpAddr>,
        /// This pod's addresses.
        ours: Vec<IpAddr>,
    },
    /// It does not resolve.
    Unresolved(String),
}

/// This host's interface addresses (getifaddrs), loopback excluded.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs allocates a list we walk read-only and free once;
    // each ifa_addr is checked for null and its family before the cast.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut p = head;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() {
                match (*a).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        out.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(a as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out.retain(|ip| !ip.is_loopback());
    out.sort();
    out.dedup();
    out
}

/// Resolves `host` (a literal address is taken as is) and compares with
/// `ours` (POD_IP, else the interface addresses).
pub fn check_resolves(host: &str, ours: &[IpAddr]) -> Resolution {
    use std::net::ToSocketAddrs;
    let resolved: Vec<IpAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
        vec![ip]
    } else {
        match (host, 0u16).to_socket_addrs() {
            Ok(a) => {
                let mut v: Vec<IpAddr> = a.map(|s| s.ip()).collect();
                v.sort();
                v.dedup();
                v
            }
            Err(e) => return Resolution::Unresolved(e.to_string()),
        }
    };
    if resolved.iter().any(|r| ours.contains(r)) {
        Resolution::Ok(resolved)
    } else {
        Resolution::Elsewhere {
            resolved,
            ours: ours.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(mode: Mode) -> NamingInput {
        NamingInput {
            mode: Some(mode),
            basename: Some("app".into()),
            service: Some("app-headless".into()),
            namespace: Some("prod".into()),
            cluster_domain: None,
            pod_ip: Some("10.4.2.17".into()),
            hostname: Some("app-2".into()),
            fqdn: Some("app-2.app-headless.prod.svc.cluster.local".into()),
        }
    }

    #[test]
    fn ip_mode_uses_the_pod_ip() {
        let n = node_name(&input(Mode::Ip)).unwrap();
        assert_eq!(n.node, "app@10.4.2.17");
        assert!(!n.ipv6);
    }

    #[test]
    fn ipv6_ip_mode_keeps_the_address_and_asks_for_inet6() {
        let mut i = input(Mode::Ip);
        i.pod_ip = Some("fd00:10:244::1f".into());
        let n = node_name(&i).unwrap();
        assert_eq!(n.node, "app@fd00:10:244::1f");
        assert!(n.ipv6);
        let env = env_lines(&n, None, FlagsVar::ErlAflags);
        assert!(
            env.contains(
                "export ERL_AFLAGS=\"${ERL_AFLAGS:+$ERL_AFLAGS }-proto_dist inet6_tcp\"\n"
            ),
            "{env}"
        );
    }

    #[test]
    fn pod_dns_mode_dashes_ipv4() {
        let n = node_name(&input(Mode::PodDns)).unwrap();
        assert_eq!(n.node, "app@10-4-2-17.app-headless.prod.svc.cluster.local");
    }

    #[test]
    fn pod_dns_mode_dashes_ipv6_colons_like_kubernetes() {
        let mut i = input(Mode::PodDns);
        i.pod_ip = Some("FD00:10:244:0:0:0:0:1F".into());
        i.cluster_domain = Some("corp.example.".into());
        let n = node_name(&i).unwrap();
        // The address in its canonical (compressed, lower case) form.
        assert_eq!(
            n.node,
            "app@fd00-10-244--1f.app-headless.prod.svc.corp.example"
        );
        assert!(!n.ipv6, "a DNS name host part needs no inet6 flag");
    }

    #[test]
    fn statefulset_mode_uses_the_stable_host_name() {
        let n = node_name(&input(Mode::StatefulSet)).unwrap();
        assert_eq!(n.node, "app@app-2.app-headless.prod.svc.cluster.local");
    }

    #[test]
    fn fqdn_mode_uses_hostname_f() {
        let n = node_name(&input(Mode::Fqdn)).unwrap();
        assert_eq!(n.host, "app-2.app-headless.prod.svc.cluster.local");
    }

    #[test]
    fn missing_inputs_name_what_to_set() {
        let mut i = input(Mode::PodDns);
        i.namespace = None;
        let e = node_name(&i).unwrap_err().to_string();
        assert!(e.contains("POD_NAMESPACE"), "{e}");
        let mut i = input(Mode::Ip);
        i.pod_ip = None;
        assert!(node_name(&i).unwrap_err().to_string().contains("POD_IP"));
        let mut i = input(Mode::Ip);
        i.pod_ip = Some("10.0.0".into());
        assert!(node_name(&i)
            .unwrap_err()
            .to_string()
            .contains("not an IP address"));
        let mut i = input(Mode::Ip);
        i.basename = Some("a b".into());
        assert!(node_name(&i).is_err());
    }

    #[test]
    fn default_mode_follows_the_service_setting() {
        let mut i = input(Mode::Ip);
        i.mode = None;
        assert_eq!(node_name(&i).unwrap().mode, Mode::PodDns);
        i.service = None;
        assert_eq!(node_name(&i).unwrap().mode, Mode::Ip);
    }

    #[test]
    fn from_process_prefers_erlkube_vars_then_kubernetes_ones() {
        let vars = vec![
            ("POD_IP".to_string(), "10.1.1.1".to_string()),
            ("POD_NAMESPACE".to_string(), "ns1".to_string()),
            ("ERLKUBE_NODENAME_NAMESPACE".to_string(), "ns2".to_string()),
            ("RELEASE_NAME".to_string(), "rel".to_string()),
            ("CLUSTER_DOMAIN".to_string(), "k.local".to_string()),
            ("HOSTNAME".to_string(), "web-0".to_string()),
        ];
        let mut file = BTreeMap::new();
        file.insert("service".to_string(), "web".to_string());
        file.insert("basename".to_string(), "filebase".to_string());
        let i = NamingInput::from_process(vars, &file).unwrap();
        assert_eq!(i.namespace.as_deref(), Some("ns2"));
        assert_eq!(i.basename.as_deref(), Some("filebase"));
        assert_eq!(i.cluster_domain.as_deref(), Some("k.local"));
        let n = node_name(&i).unwrap();
        assert_eq!(n.node, "filebase@10-1-1-1.web.ns2.svc.k.local");
        let bad = NamingInput::from_process(
            vec![("ERLKUBE_NODENAME_MODE".to_string(), "dns".to_string())],
            &BTreeMap::new(),
        );
        assert!(bad.unwrap_err().to_string().contains("nodename.mode"));
    }

    #[test]
    fn statefulset_mode_prefers_the_downward_api_pod_name() {
        let vars = |extra: &[(&str, &str)]| {
            let mut v: Vec<(String, String)> = [
                ("ERLKUBE_NODENAME_MODE", "statefulset"),
                ("ERLKUBE_NODENAME_SERVICE", "web-headless"),
                ("POD_NAMESPACE", "ns"),
                ("RELEASE_NAME", "web"),
                ("HOSTNAME", "custom-host"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            v
        };
        let with_pod = NamingInput::from_process(vars(&[("POD_NAME", "web-2")]), &BTreeMap::new());
        assert_eq!(
            node_name(&with_pod.unwrap()).unwrap().node,
            "web@web-2.web-headless.ns.svc.cluster.local"
        );
        let without = NamingInput::from_process(vars(&[]), &BTreeMap::new());
        assert_eq!(
            node_name(&without.unwrap()).unwrap().node,
            "web@custom-host.web-headless.ns.svc.cluster.local"
        );
    }

    #[test]
    fn shell_quoting_round_trips_through_sh() {
        for s in [
            "app@10.0.0.1",
            "it's",
            "a b",
            "$(reboot)",
            "`x`",
            "\"q\"",
            "back\\slash",
            "",
            "x'y'z",
            "-kernel inet_dist_listen_min 9000 inet_dist_listen_max 9000",
        ] {
            let q = shell_quote(s);
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {q}"))
                .output()
                .expect("sh");
            assert_eq!(String::from_utf8_lossy(&out.stdout), s, "quoted as {q}");
        }
    }

    fn eval_env(text: &str, pre: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{pre}\n{text}\nprintf '%s|%s|%s' \"$RELEASE_DISTRIBUTION\" \"$RELEASE_NODE\" \"$ELIXIR_ERL_OPTIONS\""
            ))
            .env_remove("ELIXIR_ERL_OPTIONS")
            .env_remove("RELEASE_COMMAND")
            .output()
            .expect("sh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn env_lines_eval_in_sh_to_the_expected_values() {
        let n = node_name(&input(Mode::PodDns)).unwrap();
        let text = env_lines(&n, Some(9100), FlagsVar::ElixirErlOptions);
        let node = "app@10-4-2-17.app-headless.prod.svc.cluster.local";
        let port = "-kernel inet_dist_listen_min 9100 inet_dist_listen_max 9100";
        assert_eq!(eval_env(&text, ""), format!("name|{node}|{port}"));
        assert_eq!(
            eval_env(&text, "RELEASE_COMMAND=daemon; ELIXIR_ERL_OPTIONS='+S 2'"),
            format!("name|{node}|+S 2 {port}")
        );
        // `bin/app remote` must not listen on the node's port.
        assert_eq!(
            eval_env(&text, "RELEASE_COMMAND=remote"),
            format!("name|{node}|")
        );
        let mut i = input(Mode::Ip);
        i.pod_ip = Some("fd00::7".into());
        let v6 = node_name(&i).unwrap();
        let text = env_lines(&v6, None, FlagsVar::ElixirErlOptions);
        assert_eq!(
            eval_env(&text, "RELEASE_COMMAND=remote"),
            "name|app@fd00::7|-proto_dist inet6_tcp"
        );
    }

    #[test]
    fn resolution_check_compares_with_our_addresses() {
        let ours: Vec<IpAddr> = vec!["10.4.2.17".parse().unwrap()];
        assert!(matches!(
            check_resolves("10.4.2.17", &ours),
            Resolution::Ok(_)
        ));
        assert!(matches!(
            check_resolves("10.4.2.18", &ours),
            Resolution::Elsewhere { .. }
        ));
        assert!(matches!(
            check_resolves("localhost", &["127.0.0.1".parse().unwrap()]),
            Resolution::Ok(_)
        ));
        assert!(matches!(
            check_resolves("no-such-host.invalid", &ours),
            Resolution::Unresolved(_)
        ));
    }
}
