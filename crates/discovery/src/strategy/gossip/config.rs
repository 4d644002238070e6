//! `discovery.gossip.*` keys to [`GossipSettings`], and starting the
//! strategy from the formation configuration.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use tokio::sync::mpsc;

use super::{Gossip, GossipSettings};
use crate::config::{invalid, parse_duration, ConfigError};
use crate::{NodeName, Update};

fn value(get: &impl Fn(&str) -> Option<String>, key: &str) -> Option<String> {
    get(key)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Builds the settings (reads the secret file); errors name the key,
/// never the secret.
pub fn settings(get: &impl Fn(&str) -> Option<String>) -> Result<GossipSettings, ConfigError> {
    const P: &str = "discovery.gossip.";
    let k = |s: &str| format!("{P}{s}");
    let required = |name: &str| {
        value(get, &k(name)).ok_or_else(|| {
            invalid(
                &k(name),
                format!(
                    "required by the gossip strategy; set it in the file or {}",
                    crate::config::env_name(&k(name))
                ),
            )
        })
    };
    let cluster = required("cluster")?;
    let secret_file = PathBuf::from(required("secret_file")?);
    let secret = GossipSettings::read_secret(&secret_file)
        .map_err(|e| invalid(&k("secret_file"), e.to_string()))?;
    let node =
        NodeName::parse(&required("node")?).map_err(|e| invalid(&k("node"), e.to_string()))?;
    let port_text = value(get, &k("dist_port")).unwrap_or_default();
    let dist_port = port_text.parse::<u16>().map_err(|_| {
        invalid(
            &k("dist_port"),
            format!("must be a port number, got {port_text:?}"),
        )
    })?;
    let mut s = GossipSettings::new(&cluster, &secret, node, dist_port);
    let g = value(get, &k("group")).unwrap_or_default();
    s.group = g.parse::<SocketAddrV4>().map_err(|_| {
        invalid(
            &k("group"),
            format!("must be an IPv4 ip:port such as \"239.255.77.75:45892\", got {g:?}"),
        )
    })?;
    s.broadcast = match value(get, &k("broadcast")).as_deref() {
        Some("true") => true,
        Some("false") | None => false,
        other => {
            return Err(invalid(
                &k("broadcast"),
                format!("must be true or false, got {:?}", other.unwrap_or("")),
            ))
        }
    };
    if !s.broadcast && !s.group.ip().is_multicast() {
        return Err(invalid(
            &k("group"),
            format!(
                "{} is not a multicast address (set broadcast = true for a broadcast address)",
                s.group.ip()
            ),
        ));
    }
    s.interface = match value(get, &k("interface")).as_deref() {
        None | Some("any") => None,
        Some(t) => Some(t.parse::<Ipv4Addr>().map_err(|_| {
            invalid(
                &k("interface"),
                format!("must be an IPv4 address or \"any\", got {t:?}"),
            )
        })?),
    };
    for (name, slot) in [("interval", &mut s.interval), ("expiry", &mut s.expiry)] {
        let t = value(get, &k(name)).unwrap_or_default();
        *slot = parse_duration(&t).filter(|d| !d.is_zero()).ok_or_else(|| {
            invalid(
                &k(name),
                format!("must be a duration above 0 like \"1s\", got {t:?}"),
            )
        })?;
    }
    s.validate().map_err(|e| {
        let key = match &e {
            super::GossipError::WeakSecret(_) => k("secret_file"),
            super::GossipError::Settings(m) if m.starts_with("expiry") => k("expiry"),
            _ => k("cluster"),
        };
        invalid(&key, e.to_string())
    })?;
    Ok(s)
}

/// Binds the socket (errors at once) and starts the strategy as a task.
pub fn spawn(
    settings: GossipSettings,
    updates: mpsc::Sender<Update>,
) -> Result<tokio::task::JoinHandle<()>, ConfigError> {
    let g = Gossip::bind(settings).map_err(|e| invalid("discovery.gossip.group", e.to_string()))?;
    Ok(tokio::spawn(g.run(updates)))
}

#[cfg(test)]
mod tests {
    use crate::config::{resolve, StrategyConfig};

    fn env(secret_file: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = [
            ("ERLKUBE_DISCOVERY_STRATEGY", "gossip"),
            ("ERLKUBE_DISCOVERY_GOSSIP_CLUSTER", "prod"),
            ("ERLKUBE_DISCOVERY_GOSSIP_NODE", "app@10.0.0.7"),
            ("ERLKUBE_DISCOVERY_GOSSIP_DIST_PORT", "9100"),
            ("ERLKUBE_DISCOVERY_GOSSIP_SECRET_FILE", secret_file),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        v
    }

    #[test]
    fn gossip_keys_resolve_and_errors_name_the_key_not_the_secret() {
        let dir =
            std::env::temp_dir().join(format!("erlkube-gossip-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "a-long-enough-shared-secret\n").unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "tiny\n").unwrap();
        let c = resolve(
            None,
            env(
                good.to_str().unwrap(),
                &[("ERLKUBE_DISCOVERY_GOSSIP_EXPIRY", "3s")],
            ),
            "h",
        )
        .unwrap();
        let StrategyConfig::Gossip(g) = &c.strategy else {
            panic!("{c:?}")
        };
        assert_eq!(g.secret, b"a-long-enough-shared-secret");
        assert_eq!((g.cluster.as_str(), g.dist_port), ("prod", 9100));
        assert_eq!(g.expiry, std::time::Duration::from_secs(3));
        assert!(!c.describe().contains("a-long-enough"), "{}", c.describe());
        let e = resolve(None, env(short.to_str().unwrap(), &[]), "h").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("discovery.gossip.secret_file: gossip secret: at least 16 bytes"),
            "{e}"
        );
        assert!(!e.to_string().contains("tiny"));
        let e = resolve(
            None,
            env(
                good.to_str().unwrap(),
                &[("ERLKUBE_DISCOVERY_GOSSIP_GROUP", "10.0.0.1:45892")],
            ),
            "h",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("discovery.gossip.group: 10.0.0.1 is not a multicast address"),
            "{e}"
        );
        let e = resolve(
            None,
            env(
                good.to_str().unwrap(),
                &[
                    ("ERLKUBE_DISCOVERY_GOSSIP_EXPIRY", "1s"),
                    ("ERLKUBE_DISCOVERY_GOSSIP_INTERVAL", "2s"),
                ],
            ),
            "h",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("discovery.gossip.expiry"), "{e}");
        let e = resolve(None, env(dir.join("missing").to_str().unwrap(), &[]), "h").unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
