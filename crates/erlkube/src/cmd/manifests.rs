//! `erlkube manifests`: prints the Kubernetes objects for a cluster of
//! unmodified Erlang/Elixir releases clustered by the `erlkube agent`
//! sidecar (see docs/kubernetes.md, "Generating manifests"). Pure text
//! generation: no API access; the cookie is referenced, never written.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

/// How the agents discover each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    /// DNS A/AAAA records of the headless Service (`dns_a`); no RBAC.
    Dns,
    /// Watch the Service's EndpointSlices through the Kubernetes API
    /// (adds a ServiceAccount, Role and RoleBinding).
    Kubernetes,
}

/// Which workload runs the pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// A Deployment: nodes named `<app>@<pod IP>` (a new name per pod).
    Deployment,
    /// A StatefulSet: pods `<app>-0`, `<app>-1`, … with stable node names
    /// `<app>@<app>-N.<app>-headless.<namespace>.svc.<cluster domain>`.
    Statefulset,
}

/// Which API resource the kubernetes strategy reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Resource {
    /// `discovery.k8s.io` EndpointSlices of the headless Service (watched).
    Endpointslices,
    /// The core `Endpoints` object of the headless Service (deprecated API).
    Endpoints,
    /// The core Pods with the app's label.
    Pods,
}

impl Resource {
    /// The value of `discovery.kubernetes.resource` and of the Role's rule.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Endpointslices => "endpointslices",
            Resource::Endpoints => "endpoints",
            Resource::Pods => "pods",
        }
    }

    /// The API group of the Role's rule.
    fn api_group(self) -> &'static str {
        match self {
            Resource::Endpointslices => "discovery.k8s.io",
            Resource::Endpoints | Resource::Pods => "",
        }
    }
}

/// Where TLS distribution certificates come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TlsSource {
    /// cert-manager: a self-signed root, a CA Issuer, and the nodes'
    /// certificate naming every pod's DNS name (renewed by cert-manager).
    CertManager,
}

/// Arguments of `erlkube manifests`.
#[derive(Args, Debug)]
pub struct ManifestsArgs {
    /// Application name: names every object and is the node names' name part
    /// (`<app>@<pod IP>`). A DNS-1123 label starting with a letter.
    #[arg(long)]
    pub app: String,
    /// Container image of the release.
    #[arg(long)]
    pub image: String,
    /// Container image with the `erlkube` binary on its PATH (the sidecar).
    #[arg(long)]
    pub agent_image: String,
    /// Namespace of every object.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Number of pods (BEAM nodes).
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// Discovery strategy.
    #[arg(long, value_enum, default_value_t = Strategy::Dns)]
    pub strategy: Strategy,
    /// Workload: a Deployment (`<app>@<pod IP>` names) or a StatefulSet
    /// (stable `<app>@<app>-N.<app>-headless.<ns>.svc.<domain>` names).
    #[arg(long, value_enum, default_value_t = Workload::Deployment)]
    pub workload: Workload,
    /// What the kubernetes strategy reads (default endpointslices); the
    /// Role grants exactly that resource. Only with `--strategy kubernetes`.
    #[arg(long, value_enum)]
    pub resource: Option<Resource>,
    /// Secret holding the Erlang cookie (default `<app>-cookie`); not created.
    #[arg(long)]
    pub cookie_secret: Option<String>,
    /// Key of the cookie in that Secret.
    #[arg(long, default_value = "cookie")]
    pub cookie_key: String,
    /// Port of the agent's /healthz, /readyz, /metrics and /cluster.
    #[arg(long, default_value_t = 9568)]
    pub http_port: u16,
    /// Cluster DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Connected peers a pod needs to be ready: a number, or `all` (every
    /// discovered peer). Default 1 (0 with one replica), so that one broken
    /// pod cannot make every other pod unready.
    #[arg(long)]
    pub ready_min_peers: Option<String>,
    /// How long a terminating pod's node stays connected and serving after
    /// its drain starts (`agent.drain_grace`; `5s`, `500ms`, at most `10m`).
    /// The release's preStop hook runs the drain; the pod's
    /// terminationGracePeriodSeconds is this plus 30 s for the release to stop.
    #[arg(long, default_value = "5s")]
    pub drain_grace: String,
    /// TLS distribution (`-proto_dist inet_tls`) with certificates from
    /// cert-manager (installed in the cluster): adds the Issuers, the CA
    /// and node Certificates, the ssl_dist_optfile ConfigMap and the
    /// mounts; the release gets `-proto_dist inet_tls -ssl_dist_optfile`
    /// through ERL_FLAGS (also for `bin/app remote`). Needs `--workload
    /// statefulset` (the certificate names the pods' stable DNS names).
    #[arg(long, value_enum)]
    pub tls: Option<TlsSource>,
}

/// Validated settings the objects are made from.
#[derive(Debug)]
pub struct Spec {
    /// Application name.
    pub app: String,
    /// Release image.
    pub image: String,
    /// Agent image.
    pub agent_image: String,
    /// Namespace.
    pub namespace: String,
    /// Replicas.
    pub replicas: u32,
    /// Strategy.
    pub strategy: Strategy,
    /// Workload kind.
    pub workload: Workload,
    /// Resource read by the kubernetes strategy.
    pub resource: Resource,
    /// Cookie Secret name.
    pub cookie_secret: String,
    /// Cookie key in the Secret.
    pub cookie_key: String,
    /// Agent HTTP port.
    pub http_port: u16,
    /// Cluster DNS domain.
    pub cluster_domain: String,
    /// `agent.ready_min_peers`: `all` or a number.
    pub ready_min_peers: String,
    /// `agent.drain_grace` as given.
    pub drain_grace: String,
    /// The same, in whole seconds rounded up.
    pub drain_grace_secs: u64,
    /// TLS distribution with cert-manager certificates.
    pub tls: bool,
}

/// Where the pods see the node certificate's Secret (`tls.crt`,
/// `tls.key`, `ca.crt`, cert-manager's keys) and the optfile.
const TLS_DIR: &str = "/etc/erlkube/tls";
const OPTFILE_DIR: &str = "/etc/erlkube/ssl-dist";
const OPTFILE: &str = "ssl_dist.conf";

/// What the release gets after SIGTERM to stop (the Kubernetes default
/// grace), on top of the drain.
const STOP_SECONDS: u64 = 30;

/// The suffix of the headless Service's name.
const SERVICE_SUFFIX: &str = "-headless";
/// `<app>-headless` must stay a 63-character label.
const MAX_APP: usize = 63 - SERVICE_SUFFIX.len();
/// A StatefulSet's pods carry the label `controller-revision-hash:
/// <name>-<10-character hash>`, a label value of at most 63 characters.
const MAX_STATEFULSET_APP: usize = 63 - 11;
/// Erlang node names are atoms: at most 255 characters.
const MAX_NODE_NAME: usize = 255;

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_label)
}

/// Checks the flags; the error names the flag, the rule and the value.
pub fn validate(a: &ManifestsArgs) -> Result<Spec, String> {
    let app = &a.app;
    if !(is_label(app) && app.len() <= MAX_APP && app.starts_with(|c: char| c.is_ascii_lowercase()))
    {
        return Err(format!(
            "--app: must be a DNS-1123 label: lowercase letters, digits and '-', starting with a letter (it names a Service) and ending with a letter or digit, at most {MAX_APP} characters (so that \"<app>{SERVICE_SUFFIX}\" fits in 63); got {app:?}"
        ));
    }
    if !is_label(&a.namespace) {
        return Err(format!(
            "--namespace: must be a DNS-1123 label (lowercase letters, digits and '-', at most 63, not starting or ending with '-'); got {:?}",
            a.namespace
        ));
    }
    for (flag, v) in [("--image", &a.image), ("--agent-image", &a.agent_image)] {
        if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{flag}: must be a container image reference such as \"registry.example/myapp:1.2.0\" (no spaces); got {v:?}"
            ));
        }
    }
    let cookie_secret = a
        .cookie_secret
        .clone()
        .unwrap_or_else(|| format!("{app}-cookie"));
    if !is_subdomain(&cookie_secret) {
        return Err(format!(
            "--cookie-secret: must be a Secret name (DNS-1123 subdomain: lowercase letters, digits, '-' and '.'); got {cookie_secret:?}"
        ));
    }
    let key = &a.cookie_key;
    if key.is_empty()
        || key.len() > 253
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(format!(
            "--cookie-key: must be a Secret key (letters, digits, '-', '_' and '.'); got {key:?}"
        ));
    }
    if a.http_port == 0 || a.http_port == 4369 {
        return Err(format!(
            "--http-port: must be a port number 1-65535 other than epmd's 4369; got {}",
            a.http_port
        ));
    }
    if !is_subdomain(&a.cluster_domain) {
        return Err(format!(
            "--cluster-domain: must be a DNS name such as \"cluster.local\"; got {:?}",
            a.cluster_domain
        ));
    }
    let resource = match (a.strategy, a.resource) {
        (Strategy::Kubernetes, r) => r.unwrap_or(Resource::Endpointslices),
        (Strategy::Dns, None) => Resource::Endpointslices,
        (Strategy::Dns, Some(r)) => {
            return Err(format!(
                "--resource: only with --strategy kubernetes (the dns strategy reads no API resource); got {:?} with --strategy dns",
                r.as_str()
            ))
        }
    };
    if a.workload == Workload::Statefulset {
        if app.len() > MAX_STATEFULSET_APP {
            return Err(format!(
                "--app: with --workload statefulset at most {MAX_STATEFULSET_APP} characters (the StatefulSet controller labels every pod with \"<app>-<10-character revision hash>\", a label value of at most 63); got {app:?} ({} characters)",
                app.len()
            ));
        }
        // The longest node name is the one of the highest ordinal.
        let last = a.replicas.saturating_sub(1);
        let node = format!(
            "{app}@{app}-{last}.{app}{SERVICE_SUFFIX}.{}.svc.{}",
            a.namespace,
            a.cluster_domain.trim_end_matches('.')
        );
        let host = node.split_once('@').map_or("", |(_, h)| h);
        if node.len() > MAX_NODE_NAME || host.len() > 253 {
            return Err(format!(
                "--cluster-domain: with --workload statefulset the longest node name must be at most {MAX_NODE_NAME} characters (an Erlang atom) and its host part a DNS name of at most 253; --app, --namespace and --cluster-domain make {node:?} ({} characters)",
                node.len()
            ));
        }
    }
    if a.tls.is_some() && a.workload != Workload::Statefulset {
        return Err(
            "--tls: needs --workload statefulset: OTP checks the host of a node's name against its \
             certificate, and a Deployment's nodes are named by pod IPs that a cert-manager \
             Certificate cannot list in advance (a StatefulSet's pods have stable DNS names)"
                .into(),
        );
    }
    let ready_min_peers = match &a.ready_min_peers {
        None => u32::from(a.replicas > 1).to_string(),
        Some(v) if v == "all" || v.parse::<u32>().is_ok() => v.clone(),
        Some(v) => {
            return Err(format!(
                "--ready-min-peers: must be \"all\" or a whole number of peers; got {v:?}"
            ))
        }
    };
    let grace = erlkube_discovery::config::parse_duration(&a.drain_grace)
        .filter(|d| *d <= erlkube_agent::config::MAX_DRAIN_GRACE)
        .ok_or_else(|| {
            format!(
                "--drain-grace: must be a duration from 0s to 10m such as \"5s\" (terminationGracePeriodSeconds is this plus {STOP_SECONDS}s); got {:?}",
                a.drain_grace
            )
        })?;
    Ok(Spec {
        drain_grace: a.drain_grace.trim().to_owned(),
        drain_grace_secs: grace.as_secs() + u64::from(grace.subsec_nanos() > 0),
        app: app.clone(),
        image: a.image.clone(),
        agent_image: a.agent_image.clone(),
        namespace: a.namespace.clone(),
        replicas: a.replicas,
        strategy: a.strategy,
        workload: a.workload,
        resource,
        cookie_secret,
        cookie_key: key.clone(),
        http_port: a.http_port,
        cluster_domain: a.cluster_domain.trim_end_matches('.').to_owned(),
        ready_min_peers,
        tls: a.tls.is_some(),
    })
}

/// A YAML double-quoted scalar (also valid JSON): plain scalars such as
/// `yes` or `on` would be booleans to YAML 1.1 readers.
fn q(s: &str) -> String {
    // JSON string literals with every control character escaped are YAML
    // double-quoted scalars too
    erlkube_agent::status::json_string(s)
}

/// One container env entry.
enum Env<'a> {
    Value(&'a str, String),
    Field(&'a str, &'a str),
    Secret(&'a str),
}

fn env_block(out: &mut String, spec: &Spec, entries: &[Env<'_>]) {
    out.push_str("          env:\n");
    for e in entries {
        match e {
            Env::Value(name, v) => {
                let _ = writeln!(
                    out,
                    "            - name: {name}\n              value: {}",
                    q(v)
                );
            }
            Env::Field(name, path) => {
                let _ = writeln!(
                    out,
                    "            - name: {name}\n              valueFrom:\n                fieldRef:\n                  fieldPath: {path}"
                );
            }
            Env::Secret(name) => {
                let _ = writeln!(
                    out,
                    "            - name: {name}\n              valueFrom:\n                secretKeyRef:\n                  name: {}\n                  key: {}",
                    q(&spec.cookie_secret),
                    q(&spec.cookie_key)
                );
            }
        }
    }
}

impl Spec {
    fn service(&self) -> String {
        format!("{}{SERVICE_SUFFIX}", self.app)
    }

    fn role(&self) -> String {
        format!("{}-erlkube-discovery", self.app)
    }

    fn metadata(&self, out: &mut String, name: &str) {
        let _ = writeln!(
            out,
            "metadata:\n  name: {}\n  namespace: {}\n  labels:\n    app.kubernetes.io/name: {}",
            q(name),
            q(&self.namespace),
            q(&self.app)
        );
    }

    /// The node name both containers use, expanded by Kubernetes from the
    /// downward-API entries defined before it ([`Spec::pod_identity`]):
    /// `<app>@<pod IP>` for a Deployment; for a StatefulSet the pod's
    /// stable DNS name `<app>@<pod name>.<service>.<namespace>.svc.<domain>`.
    fn release_node(&self) -> String {
        match self.workload {
            Workload::Deployment => format!("{}@$(POD_IP)", self.app),
            Workload::Statefulset => format!(
                "{}@$(POD_NAME).{}.$(POD_NAMESPACE).svc.{}",
                self.app,
                self.service(),
                self.cluster_domain
            ),
        }
    }

    /// The downward-API entries [`Spec::release_node`] refers to.
    fn pod_identity(&self) -> Vec<Env<'static>> {
        match self.workload {
            Workload::Deployment => vec![Env::Field("POD_IP", "status.podIP")],
            Workload::Statefulset => vec![
                Env::Field("POD_NAME", "metadata.name"),
                Env::Field("POD_NAMESPACE", "metadata.namespace"),
            ],
        }
    }

    /// A node name as the header comment shows it.
    fn example_node(&self) -> String {
        match self.workload {
            Workload::Deployment => format!("{}@<pod IP>", self.app),
            Workload::Statefulset => format!(
                "{}@{}-<N>.{}.{}.svc.{}",
                self.app,
                self.app,
                self.service(),
                self.namespace,
                self.cluster_domain
            ),
        }
    }

    /// The whole multi-document YAML.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let app = &self.app;
        let ns = &self.namespace;
        let strategy = match self.strategy {
            Strategy::Dns => "dns".to_owned(),
            Strategy::Kubernetes => format!("kubernetes --resource {}", self.resource.as_str()),
        };
        let workload = match self.workload {
            Workload::Deployment => "deployment",
            Workload::Statefulset => "statefulset",
        };
        let _ = writeln!(
            out,
            "# erlkube manifests --app {app} --namespace {ns} --workload {workload} --strategy {strategy}\n\
             # A cluster of {} BEAM nodes named {}, clustered by the erlkube agent sidecar.\n\
             # The cookie comes from the Secret {} (key {}), which is not part of this output.\n\
             # Create it once, for example:\n\
             #   kubectl -n {ns} create secret generic {} --from-literal={}=\"$(openssl rand -hex 32)\"",
            self.replicas,
            self.example_node(),
            q(&self.cookie_secret),
            q(&self.cookie_key),
            self.cookie_secret,
            self.cookie_key,
        );
        if self.strategy == Strategy::Kubernetes {
            self.rbac(&mut out);
        }
        self.headless_service(&mut out);
        if self.tls {
            self.cert_manager(&mut out);
        }
        self.workload(&mut out);
        out
    }

    /// The pods' DNS names (one per replica) and the wildcard for pods
    /// added by scaling up.
    fn dns_names(&self) -> Vec<String> {
        let domain = format!(
            "{}.{}.svc.{}",
            self.service(),
            self.namespace,
            self.cluster_domain
        );
        let mut v: Vec<String> = (0..self.replicas.max(1))
            .map(|i| format!("{}-{i}.{domain}", self.app))
            .collect();
        v.push(format!("*.{domain}"));
        v
    }

    /// The text of the ssl_dist_optfile, OTP's format, read by the release
    /// and by the agent alike.
    pub fn ssl_dist_optfile(&self) -> String {
        let side = |extra: &str| {
            format!(
                "[{{certfile, \"{TLS_DIR}/tls.crt\"}},\n   {{keyfile, \"{TLS_DIR}/tls.key\"}},\n   \
                 {{cacertfile, \"{TLS_DIR}/ca.crt\"}},\n   {{verify, verify_peer}},{extra}\n   \
                 {{versions, ['tlsv1.2', 'tlsv1.3']}},\n   {{secure_renegotiate, true}}]"
            )
        };
        format!(
            "%% TLS distribution (erlkube manifests --tls cert-manager): the node's\n\
             %% certificate from the Secret {} mounted at {TLS_DIR}.\n\
             [{{server, {}}},\n {{client, {}}}].\n",
            self.tls_secret(),
            side("\n   {fail_if_no_peer_cert, true},"),
            side("")
        )
    }

    fn tls_secret(&self) -> String {
        format!("{}-dist-tls", self.app)
    }

    fn cert_manager(&self, out: &mut String) {
        let app = &self.app;
        let issuer_ref = |name: &str| {
            format!(
                "  issuerRef:\n    name: {}\n    kind: Issuer\n    group: cert-manager.io",
                q(name)
            )
        };
        out.push_str(
            "---\n# TLS distribution: cert-manager (installed in the cluster) makes a private CA for\n\
             # this cluster from a self-signed root, and from it the nodes' certificate.\n\
             apiVersion: cert-manager.io/v1\nkind: Issuer\n",
        );
        self.metadata(out, &format!("{app}-selfsigned"));
        out.push_str("spec:\n  selfSigned: {}\n");
        out.push_str(
            "---\n# The cluster's CA: ten years, so it does not expire under a running cluster (a\n\
             # CA of the default 90 days, or 30, is the trap write-ups of such setups report).\n\
             # The nodes trust the CA in their Secret's ca.crt.\n\
             apiVersion: cert-manager.io/v1\nkind: Certificate\n",
        );
        self.metadata(out, &format!("{app}-ca"));
        let _ = writeln!(
            out,
            "spec:\n  isCA: true\n  commonName: {}\n  secretName: {}\n  duration: 87600h\n  renewBefore: 720h\n  privateKey:\n    algorithm: ECDSA\n    size: 256\n{}",
            q(&format!("{app} distribution CA")),
            q(&format!("{app}-ca")),
            issuer_ref(&format!("{app}-selfsigned"))
        );
        out.push_str(
            "---\n# Signs the nodes' certificate with the cluster's CA.\n\
             apiVersion: cert-manager.io/v1\nkind: Issuer\n",
        );
        self.metadata(out, &format!("{app}-ca"));
        let _ = writeln!(
            out,
            "spec:\n  ca:\n    secretName: {}",
            q(&format!("{app}-ca"))
        );
        out.push_str(
            "---\n# The nodes' certificate, for TLS server and client use (mutual TLS): it names\n\
             # every pod's DNS name, the host of its node name, which OTP checks (and the\n\
             # wildcard covers pods added by scaling up). cert-manager renews it before it\n\
             # expires; the Secret volume is updated in place and new connections use the\n\
             # new files (existing connections stay up). The agent's /metrics shows\n\
             # erlkube_agent_tls_certificate_expiry_seconds.\n\
             apiVersion: cert-manager.io/v1\nkind: Certificate\n",
        );
        self.metadata(out, &format!("{app}-dist"));
        let names: Vec<String> = self
            .dns_names()
            .iter()
            .map(|n| format!("    - {}", q(n)))
            .collect();
        let _ = writeln!(
            out,
            "spec:\n  secretName: {}\n  commonName: {}\n  duration: 2160h\n  renewBefore: 360h\n  privateKey:\n    algorithm: ECDSA\n    size: 256\n    rotationPolicy: Always\n  usages:\n    - digital signature\n    - server auth\n    - client auth\n  dnsNames:\n{}\n{}",
            q(&self.tls_secret()),
            q(app),
            names.join("\n"),
            issuer_ref(&format!("{app}-ca"))
        );
        out.push_str(
            "---\n# OTP's ssl_dist_optfile, one file for the release (-ssl_dist_optfile) and the\n\
             # agent (agent.ssl_dist_optfile): mutual TLS with verify_peer.\n\
             apiVersion: v1\nkind: ConfigMap\n",
        );
        self.metadata(out, &format!("{app}-ssl-dist"));
        let _ = writeln!(out, "data:\n  {OPTFILE}: |");
        for line in self.ssl_dist_optfile().lines() {
            let _ = writeln!(out, "    {line}");
        }
    }

    /// The containers' mounts of the certificate Secret and the optfile:
    /// whole directories, never `subPath` (a subPath mount is not updated
    /// when cert-manager renews the Secret).
    fn tls_mounts(&self, out: &mut String) {
        if !self.tls {
            return;
        }
        let _ = writeln!(
            out,
            "          volumeMounts:\n            - name: dist-tls\n              mountPath: {TLS_DIR}\n              readOnly: true\n            - name: ssl-dist\n              mountPath: {OPTFILE_DIR}\n              readOnly: true"
        );
    }

    fn rbac(&self, out: &mut String) {
        let role = self.role();
        out.push_str(
            "---\n# The identity of the pods: the agent's Kubernetes API requests use its token.\n\
             apiVersion: v1\nkind: ServiceAccount\n",
        );
        self.metadata(out, &self.app);
        let _ = writeln!(
            out,
            "---\n# Read-only access to {} in this namespace: what the kubernetes strategy\n\
             # reads (resource = {}; the rule of docs/kubernetes.md, \"RBAC\").\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: Role",
            match self.resource {
                Resource::Endpointslices => "EndpointSlices",
                Resource::Endpoints => "Endpoints",
                Resource::Pods => "Pods",
            },
            self.resource.as_str()
        );
        self.metadata(out, &role);
        let _ = writeln!(
            out,
            "rules:\n  - apiGroups: [{}]\n    resources: [{}]\n    verbs: [\"get\", \"list\", \"watch\"]",
            q(self.resource.api_group()),
            q(self.resource.as_str())
        );
        out.push_str(
            "---\n# Grants the Role to the pods' ServiceAccount.\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n",
        );
        self.metadata(out, &role);
        let _ = writeln!(
            out,
            "subjects:\n  - kind: ServiceAccount\n    name: {}\n    namespace: {}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: {}",
            q(&self.app),
            q(&self.namespace),
            q(&role)
        );
    }

    fn headless_service(&self, out: &mut String) {
        let reads = match self.resource {
            Resource::Endpointslices => {
                "# Its EndpointSlices list the pods: what the agents' kubernetes discovery watches."
            }
            Resource::Endpoints => {
                "# Its Endpoints object lists the pods: what the agents' kubernetes discovery watches."
            }
            Resource::Pods => "# It selects the pods the agents' kubernetes discovery reads by label.",
        };
        let what = match (self.strategy, self.workload) {
            (Strategy::Dns, Workload::Deployment) => {
                "# Headless Service: cluster DNS answers its name with one A/AAAA record per pod,\n\
                 # which is what the agents' dns_a discovery asks for."
                    .to_owned()
            }
            (Strategy::Dns, Workload::Statefulset) => {
                "# Headless Service, the StatefulSet's serviceName: cluster DNS gives every pod the\n\
                 # name <pod>.<this service>.<namespace>.svc.<domain> and answers the SRV name of the\n\
                 # port epmd with one record per pod whose target is that name, which is what the\n\
                 # agents' dns_srv discovery asks for."
                    .to_owned()
            }
            (Strategy::Kubernetes, Workload::Deployment) => format!("# Headless Service.\n{reads}"),
            (Strategy::Kubernetes, Workload::Statefulset) => format!(
                "# Headless Service, the StatefulSet's serviceName: cluster DNS gives every pod the\n\
                 # name <pod>.<this service>.<namespace>.svc.<domain>, the node names (which the\n\
                 # agents' discovery, in hostname mode, builds the same way).\n{reads}"
            ),
        };
        let _ = writeln!(out, "---\n{what}\napiVersion: v1\nkind: Service");
        self.metadata(out, &self.service());
        let _ = writeln!(
            out,
            "spec:\n  clusterIP: None\n\
             \x20 # One address family, the one of the pods' primary IP: a node named by its IP\n\
             \x20 # would be discovered under two names, a node named by DNS could be dialed on a\n\
             \x20 # family it does not listen on.\n\
             \x20 ipFamilyPolicy: SingleStack\n\
             \x20 # The agent's readiness probe (/readyz) passes only once its node is connected to\n\
             \x20 # discovered peers. Discovery must therefore see pods before they are ready, or\n\
             \x20 # pods starting together wait for each other forever (docs/kubernetes.md, \"Ready,\n\
             \x20 # serving, terminating\"): publish not-ready addresses. This Service is for the\n\
             \x20 # cluster itself; send client traffic through a Service of its own.\n\
             \x20 publishNotReadyAddresses: true\n\
             \x20 selector:\n    app.kubernetes.io/name: {}\n\
             \x20 ports:\n    - name: epmd\n      port: 4369\n      targetPort: 4369\n\
             \x20   - name: metrics\n      port: {}\n      targetPort: metrics",
            q(&self.app),
            self.http_port
        );
    }

    /// The Deployment or StatefulSet: the release and the agent sidecar.
    fn workload(&self, out: &mut String) {
        let app = &self.app;
        let port = self.http_port;
        let period = (self.drain_grace_secs / 2).clamp(1, 10);
        match self.workload {
            Workload::Deployment => out.push_str(
                "---\n# The release and, beside it, the erlkube agent that clusters it.\n\
                 apiVersion: apps/v1\nkind: Deployment\n",
            ),
            Workload::Statefulset => out.push_str(
                "---\n# The release and, beside it, the erlkube agent that clusters it. A StatefulSet:\n\
                 # pods <app>-0, <app>-1, ... keep their names, and so their node names, across\n\
                 # restarts and rescheduling (what mnesia, :global names and persistent state need).\n\
                 apiVersion: apps/v1\nkind: StatefulSet\n",
            ),
        }
        self.metadata(out, app);
        out.push_str("spec:\n");
        if self.workload == Workload::Statefulset {
            let _ = writeln!(
                out,
                "  # The headless Service below: gives each pod its DNS name <pod>.<service>...\n\
                 \x20 serviceName: {}\n\
                 \x20 # Parallel, not OrderedReady: OrderedReady creates <app>-1 only once <app>-0 is\n\
                 \x20 # ready, but <app>-0's readiness (/readyz) waits for a connected peer, which\n\
                 \x20 # would never be created: a deadlock. Parallel starts (and scales) every pod at\n\
                 \x20 # once; rolling updates still replace one pod at a time, highest ordinal first.\n\
                 \x20 podManagementPolicy: Parallel",
                q(&self.service())
            );
        }
        let _ = writeln!(
            out,
            "  replicas: {}\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: {}\n  template:\n    metadata:\n      labels:\n        app.kubernetes.io/name: {}\n      annotations:\n        prometheus.io/scrape: \"true\"\n        prometheus.io/port: \"{port}\"\n        prometheus.io/path: /metrics\n    spec:",
            self.replicas,
            q(app),
            q(app)
        );
        if self.strategy == Strategy::Kubernetes {
            let _ = writeln!(out, "      serviceAccountName: {}", q(app));
        }
        let _ = writeln!(
            out,
            "      # The drain (preStop, below) takes agent.drain_grace ({}); the release then has\n\
             \x20     # {STOP_SECONDS} s to stop after SIGTERM before the kubelet kills it.\n\
             \x20     terminationGracePeriodSeconds: {}",
            self.drain_grace,
            self.drain_grace_secs + STOP_SECONDS
        );
        let _ = writeln!(
            out,
            "      containers:\n\
             \x20       # The unmodified release. Mix releases read RELEASE_DISTRIBUTION, RELEASE_NODE and\n\
             \x20       # RELEASE_COOKIE; for rebar3 releases use them in vm.args.src\n\
             \x20       # (-name ${{RELEASE_NODE}} -setcookie ${{RELEASE_COOKIE}}).\n\
             \x20       - name: {}\n          image: {}",
            q(app),
            q(&self.image)
        );
        let mut release = self.pod_identity();
        release.extend([
            Env::Secret("RELEASE_COOKIE"),
            Env::Value("RELEASE_DISTRIBUTION", "name".into()),
            Env::Value("RELEASE_NODE", self.release_node()),
        ]);
        if self.tls {
            // erl reads ERL_FLAGS on every start: the release, and also
            // `bin/<app> remote` run in the container.
            release.push(Env::Value(
                "ERL_FLAGS",
                format!("-proto_dist inet_tls -ssl_dist_optfile {OPTFILE_DIR}/{OPTFILE}"),
            ));
        }
        env_block(out, self, &release);
        self.tls_mounts(out);
        let _ = writeln!(
            out,
            "          # A release stops on SIGTERM, which the kubelet sends to every container at\n\
             \x20         # once after their preStop hooks: so the drain starts here. GET /drain on the\n\
             \x20         # agent turns /readyz 503, keeps the node connected and serving for\n\
             \x20         # agent.drain_grace, disconnects it from every peer (they see a nodedown at\n\
             \x20         # once) and answers; then the kubelet sends SIGTERM.\n\
             \x20         lifecycle:\n            preStop:\n              httpGet:\n                path: /drain\n                port: {port}"
        );
        let _ = writeln!(
            out,
            "        # The agent: connects to the node above as a hidden node with the same cookie\n\
             \x20       # and connects it to the nodes discovery finds (docs/agent.md). /readyz passes\n\
             \x20       # once the node is connected to ERLKUBE_AGENT_READY_MIN_PEERS discovered peers\n\
             \x20       # (\"all\" would let one crash-looping pod, still discovered, make every pod unready).\n\
             \x20       - name: erlkube-agent\n          image: {}\n          command: [\"erlkube\", \"agent\"]",
            q(&self.agent_image)
        );
        let mut env = self.pod_identity();
        env.extend([
            Env::Secret("RELEASE_COOKIE"),
            Env::Value("RELEASE_NODE", self.release_node()),
            Env::Value("ERLKUBE_AGENT_HTTP", format!("0.0.0.0:{port}")),
            Env::Value(
                "ERLKUBE_AGENT_READY_MIN_PEERS",
                self.ready_min_peers.clone(),
            ),
            Env::Value("ERLKUBE_AGENT_DRAIN_GRACE", self.drain_grace.clone()),
        ]);
        if self.tls {
            env.extend([
                Env::Value("ERLKUBE_AGENT_PROTO_DIST", "inet_tls".into()),
                Env::Value(
                    "ERLKUBE_AGENT_SSL_DIST_OPTFILE",
                    format!("{OPTFILE_DIR}/{OPTFILE}"),
                ),
            ]);
        }
        let service_fqdn = format!(
            "{}.{}.svc.{}",
            self.service(),
            self.namespace,
            self.cluster_domain
        );
        match (self.strategy, self.workload) {
            (Strategy::Dns, Workload::Deployment) => env.extend([
                Env::Value("ERLKUBE_DISCOVERY_STRATEGY", "dns_a".into()),
                Env::Value("ERLKUBE_DISCOVERY_DNS_QUERY", service_fqdn),
                Env::Value("ERLKUBE_DISCOVERY_DNS_BASENAME", app.clone()),
            ]),
            // dns_a would give <app>@<pod IP>, not the pods' names. The SRV
            // records of a headless Service's named port have one target
            // per pod, <pod>.<service>.<ns>.svc.<domain> for pods with a
            // hostname and subdomain (which a StatefulSet sets), and dns_srv
            // names nodes basename@<target>: the names the release uses.
            (Strategy::Dns, Workload::Statefulset) => env.extend([
                Env::Value("ERLKUBE_DISCOVERY_STRATEGY", "dns_srv".into()),
                Env::Value(
                    "ERLKUBE_DISCOVERY_DNS_QUERY",
                    format!("_epmd._tcp.{service_fqdn}"),
                ),
                Env::Value("ERLKUBE_DISCOVERY_DNS_BASENAME", app.clone()),
            ]),
            (Strategy::Kubernetes, wl) => {
                env.extend([
                    Env::Value("ERLKUBE_DISCOVERY_STRATEGY", "kubernetes".into()),
                    Env::Value(
                        "ERLKUBE_DISCOVERY_KUBERNETES_RESOURCE",
                        self.resource.as_str().into(),
                    ),
                    Env::Value("ERLKUBE_DISCOVERY_KUBERNETES_SERVICE", self.service()),
                    Env::Value(
                        "ERLKUBE_DISCOVERY_KUBERNETES_NAMESPACE",
                        self.namespace.clone(),
                    ),
                ]);
                if self.resource == Resource::Pods {
                    env.push(Env::Value(
                        "ERLKUBE_DISCOVERY_KUBERNETES_SELECTOR",
                        format!("app.kubernetes.io/name={app}"),
                    ));
                }
                env.push(Env::Value(
                    "ERLKUBE_DISCOVERY_KUBERNETES_BASENAME",
                    app.clone(),
                ));
                match wl {
                    Workload::Deployment => {
                        env.push(Env::Value("ERLKUBE_DISCOVERY_KUBERNETES_MODE", "ip".into()))
                    }
                    // hostname: basename@<endpoint hostname, else pod
                    // name>.<service>.<ns>.svc.<domain>; a StatefulSet's
                    // pods have hostname = pod name: the release's names.
                    Workload::Statefulset => env.extend([
                        Env::Value("ERLKUBE_DISCOVERY_KUBERNETES_MODE", "hostname".into()),
                        Env::Value(
                            "ERLKUBE_DISCOVERY_KUBERNETES_CLUSTER_DOMAIN",
                            self.cluster_domain.clone(),
                        ),
                    ]),
                }
                // Same reason as publishNotReadyAddresses on the Service.
                env.push(Env::Value(
                    "ERLKUBE_DISCOVERY_KUBERNETES_INCLUDE_NOT_READY",
                    "true".into(),
                ));
            }
        }
        env_block(out, self, &env);
        self.tls_mounts(out);
        let _ = writeln!(
            out,
            "          ports:\n            - name: metrics\n              containerPort: {port}\n\
             \x20         # Probed often enough to turn unready within the drain grace; /healthz\n\
             \x20         # stays 200 while draining.\n\
             \x20         readinessProbe:\n            httpGet:\n              path: /readyz\n              port: {port}\n            periodSeconds: {period}\n            failureThreshold: 1\n\
             \x20         livenessProbe:\n            httpGet:\n              path: /healthz\n              port: {port}"
        );
        if self.tls {
            let _ = writeln!(
                out,
                "      volumes:\n        - name: dist-tls\n          secret:\n            secretName: {}\n        - name: ssl-dist\n          configMap:\n            name: {}",
                q(&self.tls_secret()),
                q(&format!("{app}-ssl-dist"))
            );
        }
    }
}

/// Runs the subcommand.
pub fn main(args: ManifestsArgs) -> ExitCode {
    match validate(&args) {
        Ok(spec) => {
            print!("{}", spec.render());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("erlkube manifests: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(app: &str) -> ManifestsArgs {
        ManifestsArgs {
            app: app.into(),
            image: "img:1".into(),
            agent_image: "agent:1".into(),
            namespace: "prod".into(),
            replicas: 3,
            strategy: Strategy::Dns,
            workload: Workload::Deployment,
            resource: None,
            cookie_secret: None,
            cookie_key: "cookie".into(),
            http_port: 9568,
            cluster_domain: "cluster.local".into(),
            ready_min_peers: None,
            drain_grace: "5s".into(),
            tls: None,
        }
    }

    #[test]
    fn app_names_follow_the_label_rule() {
        for good in ["a", "myapp", "my-app-2", &"a".repeat(MAX_APP)] {
            assert!(validate(&args(good)).is_ok(), "{good}");
        }
        for bad in [
            "",
            "MyApp",
            "my_app",
            "-app",
            "app-",
            "1app",
            "my.app",
            &"a".repeat(MAX_APP + 1),
        ] {
            let e = validate(&args(bad)).unwrap_err();
            assert!(
                e.starts_with("--app: must be a DNS-1123 label"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn statefulset_apps_leave_room_for_the_revision_hash_label() {
        let sts = |app: &str| ManifestsArgs {
            workload: Workload::Statefulset,
            ..args(app)
        };
        assert!(validate(&sts(&"a".repeat(MAX_STATEFULSET_APP))).is_ok());
        let e = validate(&sts(&"a".repeat(MAX_STATEFULSET_APP + 1))).unwrap_err();
        assert!(e.starts_with("--app: with --workload statefulset"), "{e}");
        // The revision hash label is `<app>-` and 10 characters: 63 at most.
        assert_eq!(MAX_STATEFULSET_APP + 1 + 10, 63);
        // A Deployment has no such label.
        assert!(validate(&args(&"a".repeat(MAX_STATEFULSET_APP + 1))).is_ok());
    }

    #[test]
    fn quoting_escapes_quotes_backslashes_and_controls() {
        assert_eq!(q("yes"), "\"yes\"");
        assert_eq!(q("a\"b\\c\u{1}"), "\"a\\\"b\\\\c\\u0001\"");
    }
}
