//! Building the `kube` client: in-cluster (service-account token re-read on
//! every request, CA always verified) or from a kubeconfig file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::HeaderValue;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::{ApiAccess, KubeError};

/// The standard service-account directory inside a pod.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Reads the CA bundle (PEM) as DER certificates; a missing or empty file
/// is an error naming it (never a reason to skip verification).
pub fn read_ca(path: &Path) -> Result<Vec<Vec<u8>>, KubeError> {
    let bytes = std::fs::read(path).map_err(|source| KubeError::CaFile {
        path: path.to_owned(),
        reason: source.to_string(),
    })?;
    let mut out = Vec::new();
    for c in CertificateDer::pem_slice_iter(&bytes) {
        let c = c.map_err(|e| KubeError::CaFile {
            path: path.to_owned(),
            reason: format!("not a PEM certificate bundle: {e}"),
        })?;
        out.push(c.as_ref().to_vec());
    }
    if out.is_empty() {
        return Err(KubeError::CaFile {
            path: path.to_owned(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(out)
}

/// Reads a bearer token file (trimmed); a missing or empty file is an error
/// naming it.
pub fn read_token(path: &Path) -> Result<String, KubeError> {
    let text = std::fs::read_to_string(path).map_err(|e| KubeError::TokenFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let t = text.trim();
    if t.is_empty() {
        return Err(KubeError::TokenFile {
            path: path.to_owned(),
            reason: "the file is empty".into(),
        });
    }
    Ok(t.to_owned())
}

/// The namespace of the service account (`<dir>/namespace`), if readable.
pub fn service_account_namespace(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("namespace"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The API server from `KUBERNETES_SERVICE_HOST`/`_PORT` (what the kubelet
/// sets in every pod).
pub fn api_server_from_env(env: impl Fn(&str) -> Option<String>) -> Result<String, KubeError> {
    let host = env("KUBERNETES_SERVICE_HOST").ok_or(KubeError::NoApiServer)?;
    let port = env("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".into());
    Ok(if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    })
}

/// Adds `Authorization: Bearer <token>` read from the token file on every
/// request: kubelet rotates projected service-account tokens by replacing
/// the file, and requests here are rare (a list, a watch every few
/// minutes), so reading a small file each time is the simplest correct
/// choice.
#[derive(Clone)]
struct TokenLayer(Arc<PathBuf>);

#[derive(Clone)]
struct TokenService<S> {
    path: Arc<PathBuf>,
    inner: S,
}

impl<S> tower_layer::Layer<S> for TokenLayer {
    type Service = TokenService<S>;
    fn layer(&self, inner: S) -> TokenService<S> {
        TokenService {
            path: self.0.clone(),
            inner,
        }
    }
}

impl<S, B> tower_service::Service<http::Request<B>> for TokenService<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match read_token(&self.path) {
            Ok(t) => match HeaderValue::from_str(&format!("Bearer {t}")) {
                Ok(mut h) => {
                    h.set_sensitive(true);
                    req.headers_mut().insert(AUTHORIZATION, h);
                }
                Err(_) => {
                    tracing::warn!(file = %self.path.display(), "token has characters not allowed in a header")
                }
            },
            // Sent without a token: the server answers 401, reported as an
            // error; the strategy also checks the file before each list.
            Err(e) => tracing::warn!(error = %e, "cannot read the token"),
        }
        self.inner.call(req)
    }
}

/// Builds the client and returns it with the default namespace it found
/// (service-account namespace file or kubeconfig context), if any.
pub async fn build(
    access: &ApiAccess,
    connect_timeout: Duration,
) -> Result<(kube::Client, Option<String>), KubeError> {
    match access {
        ApiAccess::InCluster {
            api_server,
            service_account_dir,
        } => {
            let url = match api_server {
                Some(u) => u.clone(),
                None => api_server_from_env(|k| std::env::var(k).ok())?,
            };
            let uri: http::Uri = url
                .parse()
                .map_err(|e| KubeError::ApiServer(format!("{url:?}: {e}")))?;
            if uri.scheme_str() != Some("https") {
                return Err(KubeError::ApiServer(format!(
                    "{url:?}: only https is supported (the API server's certificate is always verified)"
                )));
            }
            let ca = read_ca(&service_account_dir.join("ca.crt"))?;
            let token = service_account_dir.join("token");
            read_token(&token)?;
            let mut config = kube::Config::new(uri);
            config.root_cert = Some(ca);
            config.accept_invalid_certs = false;
            config.connect_timeout = Some(connect_timeout);
            config.read_timeout = None;
            let ns = service_account_namespace(service_account_dir);
            if let Some(ns) = &ns {
                config.default_namespace = ns.clone();
            }
            let client = kube::client::ClientBuilder::try_from(config)
                .map_err(|e| KubeError::Client(e.to_string()))?
                .with_layer(&TokenLayer(Arc::new(token)))
                .build();
            Ok((client, ns))
        }
        ApiAccess::Kubeconfig { path, context } => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| KubeError::Kubeconfig(format!("{}: {e}", path.display())))?;
            let opts = kube::config::KubeConfigOptions {
                context: context.clone(),
                ..Default::default()
            };
            let mut config = kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| KubeError::Kubeconfig(format!("{}: {e}", path.display())))?;
            if config.accept_invalid_certs {
                return Err(KubeError::Kubeconfig(format!(
                    "{}: insecure-skip-tls-verify is set; erlkube always verifies the API server (give certificate-authority or certificate-authority-data)",
                    path.display()
                )));
            }
            config.connect_timeout = Some(connect_timeout);
            config.read_timeout = None;
            let ns = Some(config.default_namespace.clone());
            let client =
                kube::Client::try_from(config).map_err(|e| KubeError::Client(e.to_string()))?;
            Ok((client, ns))
        }
    }
}
