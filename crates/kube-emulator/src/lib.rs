//! A Kubernetes API emulator for tests: owns an HTTPS server that speaks
//! the real wire format for EndpointSlices (`discovery.k8s.io/v1`),
//! Endpoints and Pods (`v1`) — list, watch with `resourceVersion`,
//! bookmarks, `410 Gone`, `401`/`403` as `Status` objects — plus fault
//! injection and an API that tests drive. Does IO (tokio, TCP, TLS).
//!
//! **This is a stand-in.** No Kubernetes API server can run on the
//! project's test machines, so this emulator is the one imitation the
//! project allows: everything else in the tests (BEAM nodes, DNS server,
//! network namespaces) is real. Objects are serialized with the real
//! `k8s-openapi` types, so a client sees the same JSON as from a cluster.
//!
//! ```text
//!   test ──apply/delete/fault──▶ Emulator state (objects, history, rv)
//!                                   │ broadcast of changes
//!   kube client ──HTTPS (own CA)──▶ server ──list / watch stream──▶ client
//! ```
//!
//! The server's certificate is issued at start by the emulator's own CA
//! ([`Emulator::ca_pem`]) for `127.0.0.1`, `::1`, `localhost` and any extra
//! addresses given (a test bed's bridge address).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, PodCondition, PodStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_rustls::rustls;

pub mod service;

pub use service::{EndpointState, ServiceModel};

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Certificate(String),
    /// TLS setup failed.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Binding or another socket operation failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// get/list/watch on every emulated resource.
    Read,
    /// Authenticated, but no rights (every request answers 403 Forbidden).
    None,
}

/// The kinds the emulator serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
    /// `v1` Endpoints.
    Endpoints,
    /// `v1` Pod.
    Pod,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::Endpoints | Kind::Pod => "v1",
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Endpoints => "Endpoints",
            Kind::Pod => "Pod",
        }
    }
    fn from_path(group_version: &str, plural: &str) -> Option<Kind> {
        match (group_version, plural) {
            ("discovery.k8s.io/v1", "endpointslices") => Some(Kind::EndpointSlice),
            ("v1", "endpoints") => Some(Kind::Endpoints),
            ("v1", "pods") => Some(Kind::Pod),
            _ => None,
        }
    }
}

/// One change, as a watch sends it.
#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    kind: Kind,
    namespace: String,
    event: &'static str,
    object: Value,
}

/// Counters of what the server answered (for tests' assertions).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// List requests answered 200.
    pub lists: u64,
    /// Watch requests started (200).
    pub watches: u64,
    /// Requests answered 401.
    pub unauthorized: u64,
    /// The tokens of the requests answered 401 (`None`: no token), for
    /// tests to tell which credential was used.
    pub rejected_tokens: Vec<Option<String>>,
    /// Requests answered 403.
    pub forbidden: u64,
    /// Requests answered with an injected error status.
    pub injected: u64,
    /// Watches answered with `410 Gone` (status or ERROR event).
    pub gone: u64,
    /// BOOKMARK events sent.
    pub bookmarks: u64,
}

#[derive(Default)]
struct Faults {
    /// Status codes for the next requests (front first).
    next: VecDeque<u16>,
    /// A status for every request until cleared.
    always: Option<u16>,
    /// Delay before each answer.
    delay: Duration,
}

struct State {
    rv: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    history: VecDeque<Change>,
    /// Oldest resourceVersion a watch may resume from.
    oldest: u64,
    tokens: HashMap<String, Access>,
    faults: Faults,
    stats: Stats,
    bookmark_interval: Duration,
}

struct Shared {
    state: Mutex<State>,
    changes: broadcast::Sender<Change>,
    /// Incremented to end every open watch (`drop_watches`) or to make
    /// them fail with 410 (`expire`): (generation, send 410 first).
    kill: watch::Sender<(u64, bool)>,
    uid: AtomicU64,
}

/// Settings of an emulator.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Where to listen (port 0: any free port).
    pub bind: SocketAddr,
    /// Extra addresses for the certificate (besides 127.0.0.1, ::1 and
    /// localhost), e.g. a test bed's bridge address.
    pub extra_sans: Vec<IpAddr>,
    /// How often an open watch with `allowWatchBookmarks=true` gets a
    /// BOOKMARK (the real server sends one about every minute).
    pub bookmark_interval: Duration,
    /// How many changes are kept for resuming watches (older
    /// resourceVersions get `410 Gone`).
    pub history: usize,
}

impl Default for EmulatorConfig {
    fn default() -> EmulatorConfig {
        EmulatorConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            extra_sans: Vec::new(),
            bookmark_interval: Duration::from_secs(1),
            history: 10_000,
        }
    }
}

impl EmulatorConfig {
    /// Listening on `ip` (any free port), with `ip` in the certificate: an
    /// emulator that a test bed's pods reach at their bridge's address.
    pub fn listening_on(ip: IpAddr) -> EmulatorConfig {
        EmulatorConfig {
            bind: SocketAddr::new(ip, 0),
            extra_sans: vec![ip],
            ..EmulatorConfig::default()
        }
    }
}

/// A running emulator. Dropping it stops the server (open watches end).
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    history_limit: usize,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.kill.send_modify(|(g, _)| *g += 1);
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn reason_of(code: u16) -> &'static str {
    match code {
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        410 => "Expired",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn json_response(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed_unsync())
        .expect("valid response")
}

/// A parsed `labelSelector` (equality-based: `k=v`, `k==v`, `k!=v`, `k`,
/// `!k`, comma-separated, as the real server accepts).
#[derive(Clone, Debug, Default)]
struct Selector(Vec<(String, Op)>, Option<String>);

#[derive(Clone, Debug)]
enum Op {
    Eq(String),
    Ne(String),
    Exists,
    NotExists,
}

impl Selector {
    fn parse(text: &str) -> Result<Selector, String> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let item = if let Some((k, v)) = part.split_once("!=") {
                (k.trim().to_owned(), Op::Ne(v.trim().to_owned()))
            } else if let Some((k, v)) = part.split_once("==") {
                (k.trim().to_owned(), Op::Eq(v.trim().to_owned()))
            } else if let Some((k, v)) = part.split_once('=') {
                (k.trim().to_owned(), Op::Eq(v.trim().to_owned()))
            } else if let Some(k) = part.strip_prefix('!') {
                (k.trim().to_owned(), Op::NotExists)
            } else if part.contains(' ') || part.contains('(') {
                return Err(format!("unable to parse requirement: {part:?}"));
            } else {
                (part.to_owned(), Op::Exists)
            };
            if item.0.is_empty() {
                return Err(format!("unable to parse requirement: {part:?}"));
            }
            out.push(item);
        }
        Ok(Selector(out, None))
    }

    fn matches(&self, object: &Value) -> bool {
        if let Some(n) = &self.1 {
            if object.pointer("/metadata/name").and_then(Value::as_str) != Some(n.as_str()) {
                return false;
            }
        }
        let labels = object.pointer("/metadata/labels");
        self.0.iter().all(|(k, op)| {
            let v = labels.and_then(|l| l.get(k)).and_then(Value::as_str);
            match op {
                Op::Eq(want) => v == Some(want.as_str()),
                Op::Ne(want) => v != Some(want.as_str()),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
            }
        })
    }
}

fn query_params(uri: &http::Uri) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Some(q) = uri.query() {
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.insert(percent_decode(k), percent_decode(v));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(c) => {
                        out.push(c);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Emulator {
    /// Generates the CA and the server certificate and starts serving.
    pub async fn start(config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        let cert_err = |e: rcgen::Error| EmulatorError::Certificate(e.to_string());
        let ca_key = rcgen::KeyPair::generate().map_err(cert_err)?;
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "erlkube-kube-emulator-ca");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(cert_err)?;
        let ca_pem = ca_cert.pem();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let mut sans = vec!["127.0.0.1".to_owned(), "::1".into(), "localhost".into()];
        sans.extend(config.extra_sans.iter().map(|a| a.to_string()));
        if !config.bind.ip().is_unspecified() {
            sans.push(config.bind.ip().to_string());
        }
        sans.sort();
        sans.dedup();
        let mut leaf = rcgen::CertificateParams::new(sans).map_err(cert_err)?;
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver");
        let leaf_key = rcgen::KeyPair::generate().map_err(cert_err)?;
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(cert_err)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| EmulatorError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .map_err(|e| EmulatorError::Tls(e.to_string()))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let (changes, _) = broadcast::channel(4096);
        let (kill, _) = watch::channel((0, false));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                oldest: 1,
                tokens: HashMap::new(),
                faults: Faults::default(),
                stats: Stats::default(),
                bookmark_interval: config.bookmark_interval,
            }),
            changes,
            kill,
            uid: AtomicU64::new(1),
        });
        let task = tokio::spawn(serve(listener, acceptor, shared.clone()));
        Ok(Emulator {
            shared,
            addr,
            ca_pem,
            history_limit: config.history.max(1),
            task,
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://ip:port` of the server.
    pub fn url(&self) -> String {
        match self.addr {
            SocketAddr::V4(a) => format!("https://{a}"),
            SocketAddr::V6(a) => format!("https://[{}]:{}", a.ip(), a.port()),
        }
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Lets `token` in with the given rights (replaces earlier rights).
    pub fn set_token(&self, token: &str, access: Access) {
        self.state().tokens.insert(token.to_owned(), access);
    }

    /// Revokes `token` (it then gets 401).
    pub fn revoke_token(&self, token: &str) {
        self.state().tokens.remove(token);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.state().stats.clone()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state().rv
    }

    /// Creates or replaces an object (by namespace and name); returns its
    /// new resourceVersion. Watches get ADDED or MODIFIED.
    pub fn apply<K>(&self, object: &K) -> u64
    where
        K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta> + serde::Serialize,
    {
        let kind = kind_of::<K>();
        let mut v = serde_json::to_value(object).expect("k8s-openapi types serialize");
        v["apiVersion"] = json!(K::API_VERSION);
        v["kind"] = json!(K::KIND);
        let meta = object.metadata();
        let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let name = meta.name.clone().expect("object has metadata.name");
        let mut st = self.state();
        st.rv += 1;
        let rv = st.rv;
        let key = (kind, ns.clone(), name);
        let existing_uid = st
            .objects
            .get(&key)
            .and_then(|o| o.pointer("/metadata/uid").cloned());
        let uid = existing_uid.unwrap_or_else(|| {
            json!(format!(
                "00000000-0000-4000-8000-{:012x}",
                self.shared.uid.fetch_add(1, Ordering::Relaxed)
            ))
        });
        v["metadata"]["namespace"] = json!(ns);
        v["metadata"]["resourceVersion"] = json!(rv.to_string());
        v["metadata"]["uid"] = uid;
        let event = if st.objects.insert(key, v.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.record(
            &mut st,
            Change {
                rv,
                kind,
                namespace: ns,
                event,
                object: v,
            },
        );
        rv
    }

    /// Deletes an object; watches get DELETED. Returns whether it existed.
    pub fn delete<K: k8s_openapi::Resource>(&self, namespace: &str, name: &str) -> bool {
        let kind = kind_of::<K>();
        let mut st = self.state();
        let Some(mut v) = st
            .objects
            .remove(&(kind, namespace.to_owned(), name.to_owned()))
        else {
            return false;
        };
        st.rv += 1;
        let rv = st.rv;
        v["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(
            &mut st,
            Change {
                rv,
                kind,
                namespace: namespace.to_owned(),
                event: "DELETED",
                object: v,
            },
        );
        true
    }

    fn record(&self, st: &mut State, change: Change) {
        st.history.push_back(change.clone());
        while st.history.len() > self.history_limit {
            if let Some(c) = st.history.pop_front() {
                st.oldest = c.rv;
            }
        }
        let _ = self.shared.changes.send(change);
    }

    /// The next `n` API requests answer `code` (a `Status` object with the
    /// matching reason: 403 Forbidden, 500 InternalError, …).
    pub fn fail_next(&self, code: u16, n: usize) {
        let mut st = self.state();
        for _ in 0..n {
            st.faults.next.push_back(code);
        }
    }

    /// Every API request answers `code` until [`Emulator::clear_faults`].
    pub fn fail_always(&self, code: u16) {
        self.state().faults.always = Some(code);
    }

    /// Every answer waits `delay` first (slow API server).
    pub fn set_delay(&self, delay: Duration) {
        self.state().faults.delay = delay;
    }

    /// Removes every injected fault (errors and delay).
    pub fn clear_faults(&self) {
        self.state().faults = Faults::default();
    }

    /// Ends every open watch stream (as a load balancer or an API server
    /// restart does); clients must re-watch.
    pub fn drop_watches(&self) {
        self.shared.kill.send_modify(|(g, gone)| {
            *g += 1;
            *gone = false;
        });
    }

    /// Compacts the history at the current resourceVersion: resuming from
    /// any earlier version answers 410 Gone (an ERROR event with a 410
    /// Status), and open watches get that ERROR event and end, so clients
    /// must re-list. A list made afterwards returns the current version,
    /// from which a watch may start again.
    pub fn expire_history(&self) {
        {
            let mut st = self.state();
            st.history.clear();
            st.oldest = st.rv;
        }
        self.shared.kill.send_modify(|(g, gone)| {
            *g += 1;
            *gone = true;
        });
    }

    /// Every stored object of `kind` in `namespace` (as served).
    pub fn objects(&self, kind: Kind, namespace: &str) -> Vec<Value> {
        self.state()
            .objects
            .iter()
            .filter(|((k, ns, _), _)| *k == kind && ns == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn kind_of<K: k8s_openapi::Resource>() -> Kind {
    match K::KIND {
        "EndpointSlice" => Kind::EndpointSlice,
        "Endpoints" => Kind::Endpoints,
        "Pod" => Kind::Pod,
        other => panic!("the emulator does not serve {other}"),
    }
}

async fn serve(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let io = hyper_util::rt::TokioIo::new(tls);
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let delay = shared.state.lock().unwrap().faults.delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::to_owned);
    let injected = {
        let mut st = shared.state.lock().unwrap();
        let access = token.as_deref().and_then(|t| st.tokens.get(t).copied());
        match access {
            None => {
                st.stats.unauthorized += 1;
                st.stats.rejected_tokens.push(token.clone());
                return json_response(401, &status(401, "Unauthorized", "Unauthorized"));
            }
            Some(Access::None) => {
                st.stats.forbidden += 1;
                let path = req.uri().path().to_owned();
                return json_response(
                    403,
                    &status(
                        403,
                        "Forbidden",
                        &format!("{path} is forbidden: the token has no rights"),
                    ),
                );
            }
            Some(Access::Read) => {}
        }
        let code = st.faults.next.pop_front().or(st.faults.always);
        if code.is_some() {
            st.stats.injected += 1;
            if code == Some(403) {
                st.stats.forbidden += 1;
            }
        }
        code
    };
    if let Some(code) = injected {
        return json_response(
            code,
            &status(code, reason_of(code), &format!("injected fault {code}")),
        );
    }
    if req.method() != http::Method::GET {
        return json_response(
            405,
            &status(
                405,
                "MethodNotAllowed",
                "the emulator serves get, list and watch",
            ),
        );
    }
    let path: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    // /api/v1/namespaces/NS/PLURAL or /apis/GROUP/VERSION/namespaces/NS/PLURAL
    let (gv, rest) = match path.as_slice() {
        ["api", v, rest @ ..] => (v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return not_found(req.uri().path()),
    };
    let (namespace, plural, name) = match rest {
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        [plural] => (None, *plural, None),
        _ => return not_found(req.uri().path()),
    };
    let Some(kind) = Kind::from_path(&gv, plural) else {
        return not_found(req.uri().path());
    };
    let q = query_params(req.uri());
    let selector = match Selector::parse(q.get("labelSelector").map(String::as_str).unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return json_response(400, &status(400, "BadRequest", &e)),
    };
    let field_name = match q.get("fieldSelector").map(String::as_str) {
        None | Some("") => None,
        Some(f) => match f.strip_prefix("metadata.name=") {
            Some(n) if !n.contains(',') => Some(n.to_owned()),
            _ => {
                return json_response(
                    400,
                    &status(
                        400,
                        "BadRequest",
                        &format!(
                        "the emulator supports fieldSelector metadata.name=NAME only, got {f:?}"
                    ),
                    ),
                )
            }
        },
    };
    let mut selector = selector;
    selector.1 = field_name;
    if let Some(name) = name {
        let st = shared.state.lock().unwrap();
        let ns = namespace.unwrap_or("default");
        return match st.objects.get(&(kind, ns.to_owned(), name.to_owned())) {
            Some(v) => json_response(200, v),
            None => not_found(req.uri().path()),
        };
    }
    let is_watch = matches!(q.get("watch").map(String::as_str), Some("1" | "true"));
    if is_watch {
        watch_response(shared, kind, namespace.map(str::to_owned), selector, &q)
    } else {
        let mut st = shared.state.lock().unwrap();
        st.stats.lists += 1;
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|((k, ns, _), v)| {
                *k == kind && namespace.is_none_or(|n| n == ns) && selector.matches(v)
            })
            .map(|(_, v)| v.clone())
            .collect();
        json_response(
            200,
            &json!({
                "kind": format!("{}List", kind.kind()),
                "apiVersion": kind.api_version(),
                "metadata": {"resourceVersion": st.rv.to_string()},
                "items": items,
            }),
        )
    }
}

fn not_found(path: &str) -> Response<Body> {
    json_response(
        404,
        &status(
            404,
            "NotFound",
            &format!("the server could not find {path}"),
        ),
    )
}

fn line(event: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": event, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn watch_response(
    shared: Arc<Shared>,
    kind: Kind,
    namespace: Option<String>,
    selector: Selector,
    q: &HashMap<String, String>,
) -> Response<Body> {
    let bookmarks = matches!(
        q.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let from: Option<u64> = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(t) => match t.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                return json_response(
                    400,
                    &status(400, "BadRequest", &format!("invalid resourceVersion {t:?}")),
                )
            }
        },
    };
    let wanted = {
        let selector = selector.clone();
        let namespace = namespace.clone();
        move |c: &Change| {
            c.kind == kind
                && namespace.as_ref().is_none_or(|n| *n == c.namespace)
                && selector.matches(&c.object)
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let mut st = shared.state.lock().unwrap();
    let mut kill = shared.kill.subscribe();
    kill.borrow_and_update();
    let mut live = shared.changes.subscribe();
    let mut first: Vec<Bytes> = Vec::new();
    let mut last_rv = st.rv;
    match from {
        Some(v) if v < st.oldest => {
            // Too old: the real server answers 200 and one ERROR event.
            st.stats.gone += 1;
            first.push(line(
                "ERROR",
                &status(
                    410,
                    "Expired",
                    &format!("too old resource version: {v} ({})", st.oldest),
                ),
            ));
            st.stats.watches += 1;
            drop(st);
            let _ = tx.try_send(first.remove(0));
            return stream_response(rx);
        }
        Some(v) => {
            for c in st.history.iter().filter(|c| c.rv > v && wanted(c)) {
                first.push(line(c.event, &c.object));
            }
        }
        None => {
            // No version: synthetic ADDED for every current object.
            for ((k, ns, _), o) in &st.objects {
                if *k == kind && namespace.as_ref().is_none_or(|n| n == ns) && selector.matches(o) {
                    first.push(line("ADDED", o));
                }
            }
        }
    }
    st.stats.watches += 1;
    let interval = st.bookmark_interval;
    drop(st);
    let shared2 = shared.clone();
    tokio::spawn(async move {
        for b in first {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        let end = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            let sleep_end = async {
                match end {
                    Some(e) => tokio::time::sleep_until(e).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                c = live.recv() => match c {
                    Ok(c) => {
                        if c.rv > last_rv || from.is_some_and(|v| c.rv > v) {
                            last_rv = last_rv.max(c.rv);
                            if wanted(&c) && tx.send(line(c.event, &c.object)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    let rv = shared2.state.lock().unwrap().rv;
                    last_rv = last_rv.max(rv);
                    shared2.state.lock().unwrap().stats.bookmarks += 1;
                    let b = json!({
                        "kind": kind.kind(),
                        "apiVersion": kind.api_version(),
                        "metadata": {"resourceVersion": rv.to_string()},
                    });
                    if tx.send(line("BOOKMARK", &b)).await.is_err() {
                        return;
                    }
                }
                r = kill.changed() => {
                    if r.is_ok() && kill.borrow().1 {
                        shared2.state.lock().unwrap().stats.gone += 1;
                        let _ = tx.send(line("ERROR", &status(410, "Expired", "too old resource version"))).await;
                    }
                    return;
                }
                _ = sleep_end => return,
                _ = tx.closed() => return,
            }
        }
    });
    stream_response(rx)
}

fn stream_response(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(BodyExt::boxed_unsync(StreamBody::new(stream.boxed())))
        .expect("valid response")
}

/// Builders of the objects a cluster would hold for a pod behind a
/// Service (used by [`ServiceModel`]).
pub mod objects {
    use super::*;

    /// An EndpointSlice of `service` in `namespace` (label
    /// `kubernetes.io/service-name`), address type from the first
    /// endpoint (IPv4 by default).
    pub fn endpoint_slice(
        namespace: &str,
        name: &str,
        service: &str,
        endpoints: Vec<Endpoint>,
        port: Option<i32>,
    ) -> EndpointSlice {
        let v6 = endpoints
            .first()
            .and_then(|e| e.addresses.first())
            .is_some_and(|a| a.contains(':'));
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(
                    [
                        ("kubernetes.io/service-name".to_owned(), service.to_owned()),
                        (
                            "endpointslice.kubernetes.io/managed-by".to_owned(),
                            "endpointslice-controller.k8s.io".to_owned(),
                        ),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            address_type: if v6 { "IPv6" } else { "IPv4" }.to_owned(),
            endpoints,
            ports: port.map(|p| {
                vec![k8s_openapi::api::discovery::v1::EndpointPort {
                    name: Some("epmd".into()),
                    port: Some(p),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]
            }),
        }
    }

    /// One endpoint with its conditions.
    pub fn endpoint(
        ip: &str,
        hostname: Option<&str>,
        pod: &str,
        namespace: &str,
        state: EndpointState,
    ) -> Endpoint {
        Endpoint {
            addresses: vec![ip.to_owned()],
            conditions: Some(EndpointConditions {
                ready: Some(state.ready),
                serving: Some(state.serving),
                terminating: Some(state.terminating),
            }),
            hostname: hostname.map(str::to_owned),
            target_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The Endpoints object of a Service: ready addresses and not-ready
    /// addresses (terminating pods are left out, as the controller does
    /// unless the Service publishes not-ready addresses).
    pub fn endpoints(
        namespace: &str,
        service: &str,
        pods: &[(String, String, Option<String>, EndpointState)],
        port: Option<i32>,
    ) -> Endpoints {
        let addr = |(pod, ip, host, _): &(String, String, Option<String>, EndpointState)| {
            EndpointAddress {
                ip: ip.clone(),
                hostname: host.clone(),
                target_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
                    kind: Some("Pod".into()),
                    name: Some(pod.clone()),
                    namespace: Some(namespace.to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            }
        };
        let ready: Vec<_> = pods
            .iter()
            .filter(|p| p.3.ready && !p.3.terminating)
            .map(addr)
            .collect();
        let not_ready: Vec<_> = pods
            .iter()
            .filter(|p| !p.3.ready && !p.3.terminating)
            .map(addr)
            .collect();
        let subsets = if ready.is_empty() && not_ready.is_empty() {
            None
        } else {
            Some(vec![EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: port.map(|p| {
                    vec![EndpointPort {
                        name: Some("epmd".into()),
                        port: p,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]
                }),
            }])
        };
        Endpoints {
            metadata: ObjectMeta {
                name: Some(service.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            },
            subsets,
        }
    }

    /// A Pod with labels, IP, phase Running, the Ready condition and a
    /// deletionTimestamp when terminating.
    pub fn pod(
        namespace: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
        ip: &str,
        state: EndpointState,
    ) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(labels.clone()),
                deletion_timestamp: state.terminating.then(|| {
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::from_second(
                            std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map(|d| d.as_secs() as i64)
                                .unwrap_or(0),
                        )
                        .expect("a valid time"),
                    )
                }),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.to_owned()),
                pod_ips: Some(vec![k8s_openapi::api::core::v1::PodIP {
                    ip: ip.to_owned(),
                }]),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if state.ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }
}
