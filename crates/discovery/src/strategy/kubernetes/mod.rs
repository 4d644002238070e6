//! The Kubernetes API strategy: EndpointSlices (default), Endpoints or Pods
//! of one Service, watched with a resumable watch (resourceVersion,
//! bookmarks, re-list on `410 Gone`) or polled.
//!
//! ```text
//!   list ──complete Answer──▶ engine
//!    │ resourceVersion
//!    ▼
//!   watch ──ADDED/MODIFIED/DELETED──▶ state ──Answer (when the set changes)──▶ engine
//!    │ BOOKMARK: remember rv    stream end / break: re-watch from rv
//!    │ 410 Gone: re-list (a complete answer)
//!    │ 403 / 5xx / timeout: Update::Error, last good set kept, retry with backoff
//! ```
//!
//! Errors never shrink the set: only a successful list, or a watch event
//! on top of one, is an answer. See `docs/kubernetes.md` for the RBAC.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::reason::{KubeFailure, KubeOp};
use crate::{Answer, DiscoveryError, NodeName, Reason, Update};

pub mod client;
pub mod config;

const STRATEGY: crate::strategy::StrategyKind = crate::strategy::StrategyKind::Kubernetes;

/// How node names are made from endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameMode {
    /// `basename@<pod IP>` (IPv6 in RFC 5952 form).
    Ip,
    /// `basename@A-B-C-D.<service>.<namespace>.svc.<cluster domain>` (IPv6:
    /// colons become dashes, as Kubernetes DNS names endpoints).
    Dns,
    /// `basename@<hostname>.<service>.<namespace>.svc.<cluster domain>`
    /// (StatefulSet pods: `name-N`).
    Hostname,
}

/// Which API resource is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    /// `discovery.k8s.io/v1` EndpointSlices labelled
    /// `kubernetes.io/service-name=<service>`.
    EndpointSlices,
    /// The `v1` Endpoints object named `<service>` (deprecated since 1.33).
    Endpoints,
    /// `v1` Pods matching a label selector.
    Pods,
}

/// What happens to terminating endpoints (pods being deleted). A
/// terminating endpoint is never dialled; this says how long an existing
/// connection to it is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Terminating {
    /// Kept while they still serve (readiness passing); once they stop
    /// serving they count as gone (disconnected after
    /// `formation.removal_grace`).
    WhileServing,
    /// Gone as soon as deletion starts (disconnected after
    /// `formation.removal_grace`).
    Drop,
    /// Kept until the endpoint disappears (default: a draining pod leaves
    /// by itself; its peers never cut it for terminating alone).
    Keep,
}

/// How an endpoint counts for formation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// A member to dial.
    Dial,
    /// Listed, not dialled, an existing connection kept
    /// ([`crate::Answer::passive`]): terminating, or not ready.
    Passive,
    /// Not a member.
    Absent,
}

/// How the API server is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiAccess {
    /// In a pod: service-account token and CA from `service_account_dir`,
    /// server from `api_server` or `KUBERNETES_SERVICE_HOST`/`_PORT`.
    InCluster {
        /// `https://host:port`; `None`: from the environment.
        api_server: Option<String>,
        /// Directory with `token`, `ca.crt` and `namespace`.
        service_account_dir: PathBuf,
    },
    /// Outside the cluster: a kubeconfig file.
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Context (`None`: the current context).
        context: Option<String>,
    },
}

/// Settings of the strategy (keys `discovery.kubernetes.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeSettings {
    /// Naming mode.
    pub mode: NameMode,
    /// Node name part (`basename@…`).
    pub basename: String,
    /// The Service (required for EndpointSlices, Endpoints and the `dns`
    /// and `hostname` modes).
    pub service: Option<String>,
    /// Namespace (`None`: the service account's namespace, else the
    /// kubeconfig context's, else `default`).
    pub namespace: Option<String>,
    /// Which resource.
    pub resource: ResourceKind,
    /// Label selector (required for Pods; narrows EndpointSlices).
    pub selector: Option<String>,
    /// Watch (true) or poll (false, for clusters that forbid watch).
    pub watch: bool,
    /// Polling interval (poll mode).
    pub poll_interval: Duration,
    /// Include endpoints that are not ready (and not terminating).
    pub include_not_ready: bool,
    /// Terminating endpoints.
    pub terminating: Terminating,
    /// Cluster DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// The API server.
    pub api: ApiAccess,
    /// Upper bound of one list and of a watch's first response.
    pub timeout: Duration,
    /// Longest silence on an open watch before it is considered broken
    /// (the server's bookmarks keep a healthy watch talking).
    pub watch_idle: Duration,
}

impl KubeSettings {
    /// EndpointSlices of `service`, `ip` mode, watch, in-cluster.
    pub fn new(basename: &str, service: &str) -> KubeSettings {
        KubeSettings {
            mode: NameMode::Ip,
            basename: basename.to_owned(),
            service: Some(service.to_owned()),
            namespace: None,
            resource: ResourceKind::EndpointSlices,
            selector: None,
            watch: true,
            poll_interval: Duration::from_secs(5),
            include_not_ready: false,
            terminating: Terminating::Keep,
            cluster_domain: "cluster.local".into(),
            api: ApiAccess::InCluster {
                api_server: None,
                service_account_dir: PathBuf::from(client::SERVICE_ACCOUNT_DIR),
            },
            timeout: Duration::from_secs(5),
            watch_idle: Duration::from_secs(330),
        }
    }

    /// Checks what can be checked without IO.
    pub fn validate(&self) -> Result<(), KubeError> {
        let bad = |m: String| Err(KubeError::Settings(m));
        if self.basename.is_empty() || self.basename.contains('@') {
            return bad(format!(
                "basename must be the name part of a node name, got {:?}",
                self.basename
            ));
        }
        if self.service.is_none()
            && (self.resource != ResourceKind::Pods || self.mode != NameMode::Ip)
        {
            return bad("service is required (except for resource = pods with mode = ip)".into());
        }
        if self.resource == ResourceKind::Pods && self.selector.is_none() {
            return bad("selector is required with resource = pods".into());
        }
        if self.poll_interval.is_zero() {
            return bad("poll_interval must be more than 0s".into());
        }
        Ok(())
    }
}

/// Why the strategy could not start (or a client could not be built).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KubeError {
    /// The CA file is missing, unreadable or holds no certificate. There
    /// is no fallback to skipping verification.
    #[error("CA file {path}: {reason} (the API server's certificate is always verified; mount the service-account CA)")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The token file is missing, unreadable or empty.
    #[error("token file {path}: {reason}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Neither `api_server` nor `KUBERNETES_SERVICE_HOST` is set.
    #[error("no API server: set discovery.kubernetes.api_server or run in a pod (KUBERNETES_SERVICE_HOST)")]
    NoApiServer,
    /// The API server address is unusable.
    #[error("API server {0}")]
    ApiServer(String),
    /// The kubeconfig cannot be used.
    #[error("kubeconfig {0}")]
    Kubeconfig(String),
    /// The client could not be built.
    #[error("kube client: {0}")]
    Client(String),
    /// Inconsistent settings.
    #[error("{0}")]
    Settings(String),
}

/// Kubernetes' DNS label for an endpoint address: dots (IPv4) or colons
/// (IPv6) become dashes.
pub fn dashed_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string().replace('.', "-"),
        IpAddr::V6(a) => a.to_string().replace(':', "-"),
    }
}

/// One endpoint as read from any resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The address as the API gives it.
    pub ip: String,
    /// The endpoint's hostname (StatefulSet pods), or the pod's name.
    pub hostname: Option<String>,
    /// Ready condition (nil read as true, as the API defines).
    pub ready: bool,
    /// Serving condition (nil read as `ready`).
    pub serving: bool,
    /// Terminating condition (nil read as false).
    pub terminating: bool,
}

impl KubeSettings {
    /// Whether the endpoint is dialled under the policy.
    pub fn admits(&self, e: &Endpoint) -> bool {
        self.standing(e) == Standing::Dial
    }

    /// How the endpoint counts: terminating endpoints are never dialled
    /// (kept or gone by `terminating`); not-ready ones are dialled with
    /// `include_not_ready`, else kept without being dialled.
    pub fn standing(&self, e: &Endpoint) -> Standing {
        if e.terminating {
            match self.terminating {
                Terminating::Drop => Standing::Absent,
                Terminating::WhileServing if !e.serving => Standing::Absent,
                Terminating::WhileServing | Terminating::Keep => Standing::Passive,
            }
        } else if e.ready || self.include_not_ready {
            Standing::Dial
        } else {
            Standing::Passive
        }
    }

    /// The node name of an endpoint, or why it has none.
    pub fn node_name(&self, e: &Endpoint, namespace: &str) -> Result<NodeName, String> {
        let host = match self.mode {
            NameMode::Ip => {
                let ip: IpAddr =
                    e.ip.parse()
                        .map_err(|_| format!("{:?} is not an IP address", e.ip))?;
                ip.to_string()
            }
            NameMode::Dns => {
                let ip: IpAddr =
                    e.ip.parse()
                        .map_err(|_| format!("{:?} is not an IP address", e.ip))?;
                format!(
                    "{}.{}.{namespace}.svc.{}",
                    dashed_ip(ip),
                    self.service.as_deref().unwrap_or_default(),
                    self.cluster_domain
                )
            }
            NameMode::Hostname => {
                let h = e
                    .hostname
                    .as_deref()
                    .ok_or_else(|| format!("endpoint {} has no hostname", e.ip))?;
                format!(
                    "{h}.{}.{namespace}.svc.{}",
                    self.service.as_deref().unwrap_or_default(),
                    self.cluster_domain
                )
            }
        };
        NodeName::parse(&format!("{}@{host}", self.basename)).map_err(|e| e.to_string())
    }
}

/// Endpoints of an EndpointSlice.
pub fn slice_endpoints(s: &EndpointSlice) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for e in &s.endpoints {
        let c = e.conditions.clone().unwrap_or_default();
        let ready = c.ready.unwrap_or(true);
        let serving = c.serving.unwrap_or(ready);
        let terminating = c.terminating.unwrap_or(false);
        let hostname = e
            .hostname
            .clone()
            .or_else(|| e.target_ref.as_ref().and_then(|r| r.name.clone()));
        for ip in &e.addresses {
            out.push(Endpoint {
                ip: ip.clone(),
                hostname: hostname.clone(),
                ready,
                serving,
                terminating,
            });
        }
    }
    out
}

/// Endpoints of an Endpoints object (ready and not-ready addresses;
/// terminating pods are not listed by the controller).
pub fn endpoints_endpoints(e: &Endpoints) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for s in e.subsets.iter().flatten() {
        let rows = s
            .addresses
            .iter()
            .flatten()
            .map(|a| (a, true))
            .chain(s.not_ready_addresses.iter().flatten().map(|a| (a, false)));
        for (a, ready) in rows {
            out.push(Endpoint {
                ip: a.ip.clone(),
                hostname: a
                    .hostname
                    .clone()
                    .or_else(|| a.target_ref.as_ref().and_then(|r| r.name.clone())),
                ready,
                serving: ready,
                terminating: false,
            });
        }
    }
    out
}

/// The endpoint of a Pod (none before it has an IP or after it finished).
pub fn pod_endpoints(p: &Pod) -> Vec<Endpoint> {
    let Some(st) = &p.status else {
        return Vec::new();
    };
    let phase = st.phase.as_deref().unwrap_or("");
    if phase == "Succeeded" || phase == "Failed" {
        return Vec::new();
    }
    let Some(ip) = st.pod_ip.clone() else {
        return Vec::new();
    };
    let serving = phase == "Running"
        && st
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
    let terminating = p.metadata.deletion_timestamp.is_some();
    let hostname = p
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or_else(|| p.metadata.name.clone());
    vec![Endpoint {
        ip,
        hostname,
        ready: serving && !terminating,
        serving,
        terminating,
    }]
}

/// The strategy. Build with [`Kubernetes::connect`], run with
/// [`Kubernetes::run`].
pub struct Kubernetes {
    settings: KubeSettings,
    client: kube::Client,
    namespace: String,
}

impl Debug for Kubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubernetes")
            .field("settings", &self.settings)
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// What one object contributes.
#[derive(Clone, Debug, Default)]
struct Contribution {
    nodes: BTreeSet<NodeName>,
    /// Listed, not to be dialled ([`Standing::Passive`]).
    passive: BTreeSet<NodeName>,
    /// Admitted endpoints that could not be named.
    unnamed: usize,
}

impl Kubernetes {
    /// Validates the settings, reads the CA and token (errors name the
    /// file) and builds the client. No request is made yet.
    pub async fn connect(settings: KubeSettings) -> Result<Kubernetes, KubeError> {
        settings.validate()?;
        let (client, found_ns) = client::build(&settings.api, settings.timeout).await?;
        let namespace = settings
            .namespace
            .clone()
            .or(found_ns)
            .unwrap_or_else(|| "default".into());
        Ok(Kubernetes {
            settings,
            client,
            namespace,
        })
    }

    /// The namespace read.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Runs forever, sending answers and errors to `updates`; returns when
    /// the receiver is gone.
    pub async fn run(self, updates: mpsc::Sender<Update>) {
        let s = self.settings.clone();
        match s.resource {
            ResourceKind::EndpointSlices => {
                let mut sel = format!(
                    "kubernetes.io/service-name={}",
                    s.service.as_deref().unwrap_or_default()
                );
                if let Some(extra) = &s.selector {
                    sel.push(',');
                    sel.push_str(extra);
                }
                let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.namespace);
                self.drive(api, sel, None, slice_endpoints, updates).await
            }
            ResourceKind::Endpoints => {
                let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &self.namespace);
                let field = format!("metadata.name={}", s.service.as_deref().unwrap_or_default());
                self.drive(
                    api,
                    String::new(),
                    Some(field),
                    endpoints_endpoints,
                    updates,
                )
                .await
            }
            ResourceKind::Pods => {
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
                let sel = s.selector.clone().unwrap_or_default();
                self.drive(api, sel, None, pod_endpoints, updates).await
            }
        }
    }

    fn contribution(&self, eps: Vec<Endpoint>) -> Contribution {
        let mut c = Contribution::default();
        for e in &eps {
            let standing = self.settings.standing(e);
            if standing == Standing::Absent {
                continue;
            }
            match self.settings.node_name(e, &self.namespace) {
                Ok(n) if standing == Standing::Dial => {
                    c.nodes.insert(n);
                }
                Ok(n) => {
                    c.passive.insert(n);
                }
                Err(_) if standing == Standing::Passive => {}
                Err(reason) => {
                    tracing::debug!(%reason, "endpoint without a usable name");
                    c.unnamed += 1;
                }
            }
        }
        c
    }

    async fn drive<K>(
        &self,
        api: Api<K>,
        labels: String,
        fields: Option<String>,
        extract: fn(&K) -> Vec<Endpoint>,
        updates: mpsc::Sender<Update>,
    ) where
        K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let s = &self.settings;
        let mut backoff = Backoff::new();
        let mut last_sent: Option<Answer>;
        'relist: loop {
            // A complete list.
            let started = Instant::now();
            let mut lp = ListParams::default();
            if !labels.is_empty() {
                lp = lp.labels(&labels);
            }
            if let Some(f) = &fields {
                lp = lp.fields(f);
            }
            let listed = match tokio::time::timeout(s.timeout, api.list(&lp)).await {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => {
                    if !send_error(&updates, describe(&e, KubeOp::List)).await {
                        return;
                    }
                    tokio::time::sleep(backoff.next(s)).await;
                    continue 'relist;
                }
                Err(_) => {
                    if !send_error(
                        &updates,
                        api_error(KubeOp::List, KubeFailure::NoAnswer(s.timeout)),
                    )
                    .await
                    {
                        return;
                    }
                    tokio::time::sleep(backoff.next(s)).await;
                    continue 'relist;
                }
            };
            backoff.reset();
            let mut state: BTreeMap<String, Contribution> = BTreeMap::new();
            for obj in &listed.items {
                state.insert(key_of(obj), self.contribution(extract(obj)));
            }
            let mut rv = listed.metadata.resource_version.clone().unwrap_or_default();
            // A re-list is a complete answer: always sent, even when the
            // set did not change (it re-confirms absences).
            let mut a = answer_of(&state);
            a.elapsed = Some(started.elapsed());
            last_sent = Some(a.clone());
            if updates.send(Update::Answer(a)).await.is_err() {
                return;
            }
            if !s.watch {
                tokio::time::sleep(s.poll_interval).await;
                continue 'relist;
            }
            // Watch from rv until the stream says the version is gone.
            loop {
                let mut wp = WatchParams::default().timeout(290).labels(&labels);
                if let Some(f) = &fields {
                    wp = wp.fields(f);
                }
                let stream = match tokio::time::timeout(s.timeout, api.watch(&wp, &rv)).await {
                    Ok(Ok(st)) => st,
                    Ok(Err(e)) => {
                        let gone = is_gone(&e);
                        if !send_error(&updates, describe(&e, KubeOp::Watch)).await {
                            return;
                        }
                        if gone {
                            continue 'relist;
                        }
                        tokio::time::sleep(backoff.next(s)).await;
                        continue;
                    }
                    Err(_) => {
                        if !send_error(
                            &updates,
                            api_error(KubeOp::Watch, KubeFailure::NoAnswer(s.timeout)),
                        )
                        .await
                        {
                            return;
                        }
                        tokio::time::sleep(backoff.next(s)).await;
                        continue;
                    }
                };
                let mut stream = Box::pin(stream);
                loop {
                    let next = match tokio::time::timeout(s.watch_idle, stream.next()).await {
                        Ok(n) => n,
                        Err(_) => {
                            if !send_error(
                                &updates,
                                api_error(KubeOp::Watch, KubeFailure::Silent(s.watch_idle)),
                            )
                            .await
                            {
                                return;
                            }
                            break;
                        }
                    };
                    let started = Instant::now();
                    let ev = match next {
                        // The server closed the stream (timeoutSeconds):
                        // resume from the last version seen.
                        None => break,
                        Some(Err(e)) => {
                            if !send_error(&updates, describe(&e, KubeOp::WatchStream)).await {
                                return;
                            }
                            tokio::time::sleep(backoff.next(s)).await;
                            break;
                        }
                        Some(Ok(ev)) => ev,
                    };
                    backoff.reset();
                    match ev {
                        WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                            if let Some(v) = o.meta().resource_version.clone() {
                                rv = v;
                            }
                            state.insert(key_of(&o), self.contribution(extract(&o)));
                        }
                        WatchEvent::Deleted(o) => {
                            if let Some(v) = o.meta().resource_version.clone() {
                                rv = v;
                            }
                            state.remove(&key_of(&o));
                        }
                        WatchEvent::Bookmark(b) => {
                            rv = b.metadata.resource_version;
                            continue;
                        }
                        WatchEvent::Error(st) => {
                            let gone = st.code == 410;
                            let reason = api_error(
                                KubeOp::Watch,
                                KubeFailure::Status {
                                    code: st.code,
                                    reason: st.reason.clone(),
                                    message: st.message.clone(),
                                },
                            );
                            if !send_error(&updates, reason).await {
                                return;
                            }
                            if gone {
                                // Our version was compacted away: the only
                                // way back to the whole truth is a re-list.
                                continue 'relist;
                            }
                            tokio::time::sleep(backoff.next(s)).await;
                            break;
                        }
                    }
                    let mut a = answer_of(&state);
                    if last_sent.as_ref().is_some_and(|l| {
                        l.nodes == a.nodes && l.passive == a.passive && l.complete == a.complete
                    }) {
                        continue;
                    }
                    a.elapsed = Some(started.elapsed());
                    last_sent = Some(a.clone());
                    if updates.send(Update::Answer(a)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn key_of<K: kube::Resource>(o: &K) -> String {
    let m = o.meta();
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or("")
    )
}

fn answer_of(state: &BTreeMap<String, Contribution>) -> Answer {
    let mut nodes = BTreeSet::new();
    let mut passive = BTreeSet::new();
    let mut unnamed = 0;
    for c in state.values() {
        nodes.extend(c.nodes.iter().cloned());
        passive.extend(c.passive.iter().cloned());
        unnamed += c.unnamed;
    }
    // An admitted endpoint we could not name might be a member: the
    // answer then proves nothing about absences.
    let mut a = Answer::new(nodes, unnamed == 0);
    a.passive = passive.difference(&a.nodes).cloned().collect();
    a
}

async fn send_error(updates: &mpsc::Sender<Update>, reason: Reason) -> bool {
    tracing::warn!(%reason, "kubernetes discovery error; keeping the last good set");
    updates
        .send(Update::Error(DiscoveryError::Unavailable {
            strategy: STRATEGY,
            reason,
        }))
        .await
        .is_ok()
}

fn is_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 410)
}

fn api_error(op: KubeOp, failure: KubeFailure) -> Reason {
    Reason::KubeApi { op, failure }
}

/// The typed reason of a client error (no token in it).
fn describe(e: &kube::Error, op: KubeOp) -> Reason {
    let failure = match e {
        kube::Error::Api(s) if s.code == 403 => KubeFailure::Forbidden {
            message: s.message.clone(),
        },
        kube::Error::Api(s) if s.code == 401 => KubeFailure::Unauthorized {
            message: s.message.clone(),
        },
        kube::Error::Api(s) => KubeFailure::Status {
            code: s.code,
            reason: s.reason.clone(),
            message: s.message.clone(),
        },
        other => {
            let mut text = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                text.push_str(&format!(": {s}"));
                src = s.source();
            }
            KubeFailure::Transport(text)
        }
    };
    api_error(op, failure)
}

/// Retry delay after errors: 200 ms doubling to 5 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::ZERO)
    }
    fn reset(&mut self) {
        self.0 = Duration::ZERO;
    }
    fn next(&mut self, s: &KubeSettings) -> Duration {
        let cap = Duration::from_secs(5).min(s.poll_interval.max(Duration::from_millis(200)));
        self.0 = if self.0.is_zero() {
            Duration::from_millis(200)
        } else {
            (self.0 * 2).min(cap)
        };
        self.0
    }
}

/// Connects and runs the strategy as a task on the current runtime. A
/// startup error (missing CA, bad kubeconfig) is returned at once.
pub async fn spawn(
    settings: KubeSettings,
    updates: mpsc::Sender<Update>,
) -> Result<tokio::task::JoinHandle<()>, KubeError> {
    let k = Kubernetes::connect(settings).await?;
    Ok(tokio::spawn(k.run(updates)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ip: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            ip: ip.into(),
            hostname: Some("app-0".into()),
            ready,
            serving,
            terminating,
        }
    }

    #[test]
    fn names_in_every_mode_including_ipv6() {
        let mut s = KubeSettings::new("app", "app-headless");
        let e = ep("10.1.2.3", true, true, false);
        assert_eq!(s.node_name(&e, "prod").unwrap().as_str(), "app@10.1.2.3");
        s.mode = NameMode::Dns;
        assert_eq!(
            s.node_name(&e, "prod").unwrap().as_str(),
            "app@10-1-2-3.app-headless.prod.svc.cluster.local"
        );
        s.cluster_domain = "k8s.example".into();
        let v6 = ep("fd00:10:244::1a", true, true, false);
        assert_eq!(
            s.node_name(&v6, "prod").unwrap().as_str(),
            "app@fd00-10-244--1a.app-headless.prod.svc.k8s.example"
        );
        s.mode = NameMode::Ip;
        let long = ep("fd00:0010:0244:0000:0000:0000:0000:001a", true, true, false);
        assert_eq!(
            s.node_name(&long, "p").unwrap().as_str(),
            "app@fd00:10:244::1a"
        );
        s.mode = NameMode::Hostname;
        assert_eq!(
            s.node_name(&e, "prod").unwrap().as_str(),
            "app@app-0.app-headless.prod.svc.k8s.example"
        );
        let mut nohost = e.clone();
        nohost.hostname = None;
        assert!(s.node_name(&nohost, "prod").is_err());
    }

    #[test]
    fn condition_policy() {
        let mut s = KubeSettings::new("app", "svc");
        let starting = ep("10.0.0.1", false, false, false);
        let ready = ep("10.0.0.2", true, true, false);
        let term_serving = ep("10.0.0.3", false, true, true);
        let term_done = ep("10.0.0.4", false, false, true);
        use Standing::*;
        // Default: terminating and not-ready endpoints are kept, never dialled.
        assert_eq!(s.standing(&starting), Passive);
        assert_eq!(s.standing(&ready), Dial);
        assert_eq!(s.standing(&term_serving), Passive);
        assert_eq!(s.standing(&term_done), Passive);
        assert!(!s.admits(&term_serving));
        s.terminating = Terminating::WhileServing;
        assert_eq!(s.standing(&term_serving), Passive);
        assert_eq!(s.standing(&term_done), Absent);
        s.terminating = Terminating::Drop;
        assert_eq!(s.standing(&term_serving), Absent);
        s.include_not_ready = true;
        assert_eq!(s.standing(&starting), Dial);
        assert_eq!(
            s.standing(&term_serving),
            Absent,
            "terminating is never dialled"
        );
    }

    #[test]
    fn nil_conditions_follow_the_api_definition() {
        use k8s_openapi::api::discovery::v1 as d;
        let slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: vec![d::Endpoint {
                addresses: vec!["10.0.0.9".into()],
                conditions: None,
                ..Default::default()
            }],
            metadata: Default::default(),
            ports: None,
        };
        let eps = slice_endpoints(&slice);
        assert_eq!(eps.len(), 1);
        assert!(eps[0].ready && eps[0].serving && !eps[0].terminating);
    }

    #[test]
    fn settings_are_checked() {
        let mut s = KubeSettings::new("app", "svc");
        s.resource = ResourceKind::Pods;
        assert!(matches!(s.validate(), Err(KubeError::Settings(_))));
        s.selector = Some("app=x".into());
        s.service = None;
        assert!(s.validate().is_ok());
        s.mode = NameMode::Dns;
        assert!(s.validate().is_err());
    }
}
