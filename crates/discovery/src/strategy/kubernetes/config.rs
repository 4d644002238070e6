//! `discovery.kubernetes.*` keys to [`KubeSettings`], and starting the
//! strategy from the formation configuration.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{ApiAccess, KubeSettings, NameMode, ResourceKind, Terminating};
use crate::config::{invalid, parse_duration, ConfigError};
use crate::{DiscoveryError, Update};

/// A value that is a placeholder default ("(…)") counts as unset.
fn value(get: &impl Fn(&str) -> Option<String>, key: &str) -> Option<String> {
    get(key)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty() && !v.starts_with('('))
}

fn boolean(get: &impl Fn(&str) -> Option<String>, key: &str) -> Result<bool, ConfigError> {
    match value(get, key).as_deref() {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        other => Err(invalid(
            key,
            format!("must be true or false, got {:?}", other.unwrap_or("")),
        )),
    }
}

/// Builds the settings; errors name the key.
pub fn settings(
    get: &impl Fn(&str) -> Option<String>,
    timeout: Duration,
) -> Result<KubeSettings, ConfigError> {
    const P: &str = "discovery.kubernetes.";
    let k = |s: &str| format!("{P}{s}");
    let basename = value(get, &k("basename")).ok_or_else(|| {
        invalid(
            &k("basename"),
            "required by the kubernetes strategy; set it in the file or ERLKUBE_DISCOVERY_KUBERNETES_BASENAME",
        )
    })?;
    let service = value(get, &k("service"));
    let mut s = KubeSettings::new(&basename, service.as_deref().unwrap_or(""));
    s.service = service;
    s.timeout = timeout.max(Duration::from_millis(100));
    s.mode = match value(get, &k("mode")).as_deref() {
        Some("ip") => NameMode::Ip,
        Some("dns") => NameMode::Dns,
        Some("hostname") => NameMode::Hostname,
        other => {
            return Err(invalid(
                &k("mode"),
                format!("must be ip, dns or hostname; got {:?}", other.unwrap_or("")),
            ))
        }
    };
    s.namespace = value(get, &k("namespace"));
    s.resource = match value(get, &k("resource")).as_deref() {
        Some("endpointslices") => ResourceKind::EndpointSlices,
        Some("endpoints") => ResourceKind::Endpoints,
        Some("pods") => ResourceKind::Pods,
        other => {
            return Err(invalid(
                &k("resource"),
                format!(
                    "must be endpointslices, endpoints or pods; got {:?}",
                    other.unwrap_or("")
                ),
            ))
        }
    };
    s.selector = value(get, &k("selector"));
    s.watch = boolean(get, &k("watch"))?;
    let pi = value(get, &k("poll_interval")).unwrap_or_default();
    s.poll_interval = parse_duration(&pi)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            invalid(
                &k("poll_interval"),
                format!("must be a duration above 0 like \"5s\", got {pi:?}"),
            )
        })?;
    s.include_not_ready = boolean(get, &k("include_not_ready"))?;
    s.terminating = match value(get, &k("terminating")).as_deref() {
        Some("while_serving") => Terminating::WhileServing,
        Some("drop") => Terminating::Drop,
        Some("keep") => Terminating::Keep,
        other => {
            return Err(invalid(
                &k("terminating"),
                format!(
                    "must be keep, while_serving or drop; got {:?}",
                    other.unwrap_or("")
                ),
            ))
        }
    };
    s.cluster_domain = value(get, &k("cluster_domain"))
        .map(|d| d.trim_end_matches('.').to_owned())
        .unwrap_or_else(|| "cluster.local".into());
    s.api = match value(get, &k("kubeconfig")) {
        Some(path) => ApiAccess::Kubeconfig {
            path: PathBuf::from(path),
            context: value(get, &k("context")),
        },
        None => ApiAccess::InCluster {
            api_server: value(get, &k("api_server")),
            service_account_dir: PathBuf::from(
                value(get, &k("service_account_dir"))
                    .unwrap_or_else(|| super::client::SERVICE_ACCOUNT_DIR.into()),
            ),
        },
    };
    s.validate().map_err(|e| {
        let key = match &e {
            super::KubeError::Settings(m) if m.starts_with("service") => k("service"),
            super::KubeError::Settings(m) if m.starts_with("selector") => k("selector"),
            _ => k("basename"),
        };
        invalid(&key, e.to_string())
    })?;
    Ok(s)
}

/// Checks the files (CA, token, kubeconfig) at once, so a missing file is
/// a startup error naming it, then starts the strategy as a task. A later
/// failure to build the client is reported as discovery errors.
pub fn spawn(
    settings: KubeSettings,
    updates: mpsc::Sender<Update>,
) -> Result<tokio::task::JoinHandle<()>, ConfigError> {
    match &settings.api {
        ApiAccess::InCluster {
            service_account_dir,
            api_server,
        } => {
            super::client::read_ca(&service_account_dir.join("ca.crt"))
                .map_err(|e| invalid("discovery.kubernetes.service_account_dir", e.to_string()))?;
            super::client::read_token(&service_account_dir.join("token"))
                .map_err(|e| invalid("discovery.kubernetes.service_account_dir", e.to_string()))?;
            if api_server.is_none() {
                super::client::api_server_from_env(|k| std::env::var(k).ok())
                    .map_err(|e| invalid("discovery.kubernetes.api_server", e.to_string()))?;
            }
        }
        ApiAccess::Kubeconfig { path, .. } => {
            if let Err(e) = std::fs::metadata(path) {
                return Err(invalid(
                    "discovery.kubernetes.kubeconfig",
                    format!("{}: {e}", path.display()),
                ));
            }
        }
    }
    Ok(tokio::spawn(async move {
        let retry = settings.poll_interval;
        loop {
            match super::Kubernetes::connect(settings.clone()).await {
                Ok(k) => return k.run(updates).await,
                Err(e) => {
                    let err = DiscoveryError::Unavailable {
                        strategy: crate::strategy::StrategyKind::Kubernetes,
                        reason: crate::Reason::KubeClient(e),
                    };
                    if updates.send(Update::Error(err)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(retry).await;
                }
            }
        }
    }))
}
