//! TLS distribution, as OTP's `inet_tls_dist`: TLS (rustls) over the TCP
//! connection before any distribution byte, then the usual handshake with
//! 4-byte frames, then the usual 4-byte framed connection.
//!
//! [`TlsConfig`] holds the two sides' options (from OTP's
//! `ssl_dist_optfile`, see [`crate::ssl_optfile`], or built in code) and
//! the rustls configurations made from the files they name. The files are
//! read again on every accept and dial and the configurations rebuilt when
//! a file's contents changed (cert-manager renewing a mounted Secret), so
//! new connections use the new certificate and CA bundle while existing
//! connections stay up. A rebuild that fails (a half-written file) is
//! logged and the previous configuration kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::ssl_optfile::{self, OptFile, TlsOptions, TlsVersion, Verify};

/// TLS settings of a node: both sides' options and the configurations
/// built from their files (shared by clones).
#[derive(Clone)]
pub struct TlsConfig {
    server: Option<TlsOptions>,
    client: Option<TlsOptions>,
    /// The optfile these came from, for messages.
    source: Option<PathBuf>,
    loaded: Arc<Mutex<Option<Loaded>>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("server", &self.server)
            .field("client", &self.client)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The server and client configurations in use.
type Configs = (Option<Arc<ServerConfig>>, Option<Arc<ClientConfig>>);

/// The rustls configurations made from one set of file contents.
struct Loaded {
    /// Every file read, with the bytes it held.
    files: Vec<(PathBuf, Vec<u8>)>,
    server: Option<Arc<ServerConfig>>,
    client: Option<Arc<ClientConfig>>,
    /// When the node's own certificate (server side, else client) expires.
    not_after: Option<SystemTime>,
}

/// Why TLS settings could not be used. Names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The optfile itself.
    #[error(transparent)]
    OptFile(#[from] ssl_optfile::OptFileError),
    /// A file named by an option cannot be read.
    #[error("{side} {option} {path}: cannot read it: {source}")]
    Read {
        /// `server` or `client`.
        side: &'static str,
        /// The option naming it.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file without the PEM items it must hold.
    #[error("{side} {option} {path}: {what}")]
    Content {
        /// `server` or `client`.
        side: &'static str,
        /// The option naming it.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A required option is missing.
    #[error("{side}: {what}")]
    Missing {
        /// `server` or `client`.
        side: &'static str,
        /// What is missing.
        what: String,
    },
    /// rustls refused the combination (e.g. the key does not match the certificate).
    #[error("{side}: {what}: {source}")]
    Rustls {
        /// `server` or `client`.
        side: &'static str,
        /// What was being built.
        what: String,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// The side needed is not configured.
    #[error("no {0} section in the TLS settings")]
    NoSide(&'static str),
}

impl TlsConfig {
    /// Reads OTP's `ssl_dist_optfile` and loads every file it names: a bad
    /// file, a key that does not match its certificate, an option
    /// erlkube does not support fail here, before anything listens.
    pub fn from_optfile(path: &Path) -> Result<TlsConfig, TlsError> {
        let f = OptFile::read(path)?;
        let mut c = TlsConfig::new(f.server, f.client);
        c.source = Some(path.to_owned());
        c.reload()?;
        Ok(c)
    }

    /// Settings from options built in code; files are loaded on first use
    /// or by [`TlsConfig::reload`].
    pub fn new(server: Option<TlsOptions>, client: Option<TlsOptions>) -> TlsConfig {
        TlsConfig {
            server,
            client,
            source: None,
            loaded: Arc::new(Mutex::new(None)),
        }
    }

    /// The server side's options.
    pub fn server_options(&self) -> Option<&TlsOptions> {
        self.server.as_ref()
    }

    /// The client side's options.
    pub fn client_options(&self) -> Option<&TlsOptions> {
        self.client.as_ref()
    }

    /// Reads the files now and rebuilds the configurations (errors
    /// returned, previous configuration kept).
    pub fn reload(&self) -> Result<(), TlsError> {
        let files = self.read_files()?;
        let l = self.build(files)?;
        *self.loaded.lock().expect("tls") = Some(l);
        Ok(())
    }

    /// When this node's certificate expires (the server side's, else the
    /// client side's), as last loaded.
    pub fn not_after(&self) -> Option<SystemTime> {
        if let Err(e) = self.current() {
            tracing::debug!(error = %e, "TLS files not loadable");
        }
        self.loaded.lock().expect("tls").as_ref()?.not_after
    }

    /// Every file the options name, with the side and option naming it.
    fn file_list(&self) -> Vec<(&'static str, &'static str, PathBuf)> {
        let mut v = Vec::new();
        for (side, o) in [("server", &self.server), ("client", &self.client)] {
            let Some(o) = o else { continue };
            if let Some(p) = &o.certfile {
                v.push((side, "certfile", p.clone()));
            }
            if let Some(p) = &o.keyfile {
                v.push((side, "keyfile", p.clone()));
            }
            if let Some(p) = &o.cacertfile {
                v.push((side, "cacertfile", p.clone()));
            }
        }
        v
    }

    fn read_files(&self) -> Result<Vec<(PathBuf, Vec<u8>)>, TlsError> {
        let mut out: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        for (side, option, path) in self.file_list() {
            if out.iter().any(|(p, _)| *p == path) {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|source| TlsError::Read {
                side,
                option,
                path: path.clone(),
                source,
            })?;
            out.push((path, bytes));
        }
        Ok(out)
    }

    /// The configurations for the files as they are now: rebuilt when a
    /// file changed; on a failed rebuild the previous ones, with a warning.
    fn current(&self) -> Result<Configs, TlsError> {
        let files = self.read_files();
        let mut guard = self.loaded.lock().expect("tls");
        let files = match (files, guard.as_ref()) {
            (Ok(f), _) => f,
            (Err(e), Some(old)) => {
                tracing::warn!(error = %e, "TLS files unreadable; keeping the loaded certificates");
                return Ok((old.server.clone(), old.client.clone()));
            }
            (Err(e), None) => return Err(e),
        };
        if let Some(old) = guard.as_ref() {
            if old.files == files {
                return Ok((old.server.clone(), old.client.clone()));
            }
        }
        let first = guard.is_none();
        match self.build(files) {
            Ok(l) => {
                if !first {
                    tracing::info!("TLS files changed; new connections use the new certificates");
                }
                let r = (l.server.clone(), l.client.clone());
                *guard = Some(l);
                Ok(r)
            }
            Err(e) => match guard.as_ref() {
                Some(old) => {
                    tracing::warn!(error = %e, "TLS files changed but do not load; keeping the loaded certificates");
                    Ok((old.server.clone(), old.client.clone()))
                }
                None => Err(e),
            },
        }
    }

    fn build(&self, files: Vec<(PathBuf, Vec<u8>)>) -> Result<Loaded, TlsError> {
        let get = |p: &PathBuf| -> &[u8] {
            files
                .iter()
                .find(|(q, _)| q == p)
                .map(|(_, b)| b.as_slice())
                .unwrap_or_default()
        };
        let mut not_after = None;
        let server = match &self.server {
            Some(o) => {
                let (certs, key) = cert_and_key("server", o, &get)?;
                not_after = expiry(&certs[0]);
                Some(Arc::new(server_config(o, certs, key, &get)?))
            }
            None => None,
        };
        let client = match &self.client {
            Some(o) => {
                let ck = match &o.certfile {
                    Some(_) => Some(cert_and_key("client", o, &get)?),
                    None => None,
                };
                if not_after.is_none() {
                    not_after = ck.as_ref().and_then(|(c, _)| expiry(&c[0]));
                }
                Some(Arc::new(client_config(o, ck, &get)?))
            }
            None => None,
        };
        Ok(Loaded {
            files,
            server,
            client,
            not_after,
        })
    }

    /// Runs the server side of TLS on an accepted connection.
    pub(crate) async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::server::TlsStream<TcpStream>, Refusal> {
        let (server, _) = self.current().map_err(|e| Refusal::Config(e.to_string()))?;
        let server =
            server.ok_or_else(|| Refusal::Config(TlsError::NoSide("server").to_string()))?;
        tokio_rustls::TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(Refusal::from_io)
    }

    /// Runs the client side of TLS to `host` (the dialled node's host).
    pub(crate) async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Refusal> {
        let (_, client) = self.current().map_err(|e| Refusal::Config(e.to_string()))?;
        let client =
            client.ok_or_else(|| Refusal::Config(TlsError::NoSide("client").to_string()))?;
        let name = match self.client.as_ref().map(|o| &o.server_name) {
            Some(ssl_optfile::ServerName::Host(h)) => h.as_str(),
            _ => host,
        };
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| Refusal::Config(format!("{name:?} is not a host name: {e}")))?;
        tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(Refusal::from_io)
    }
}

/// Why a TLS connection was refused, named for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The peer did not speak TLS (a plain-TCP distribution peer).
    NotTls(String),
    /// The peer's certificate does not chain to our CA.
    UnknownCa(String),
    /// The peer's certificate has expired (or is not yet valid).
    Expired(String),
    /// The peer sent no certificate though one is required.
    NoPeerCert(String),
    /// The certificate does not name the host dialled.
    NameMismatch(String),
    /// The peer refused us (an alert it sent).
    PeerAlert(String),
    /// Our own settings are unusable.
    Config(String),
    /// Anything else (IO errors, timeouts).
    Other(String),
}

impl Refusal {
    fn from_io(e: std::io::Error) -> Refusal {
        let text = e.to_string();
        let inner = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<rustls::Error>())
            .cloned();
        use rustls::{AlertDescription as A, CertificateError as C, Error as E};
        match inner {
            Some(E::InvalidMessage(_)) => Refusal::NotTls(text),
            Some(E::InvalidCertificate(C::UnknownIssuer | C::BadSignature)) => {
                Refusal::UnknownCa(text)
            }
            Some(E::InvalidCertificate(
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. },
            )) => Refusal::Expired(text),
            Some(E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. })) => {
                Refusal::NameMismatch(text)
            }
            Some(E::NoCertificatesPresented) => Refusal::NoPeerCert(text),
            Some(E::AlertReceived(A::CertificateRequired)) => Refusal::PeerAlert(format!(
                "{text} (the peer wants a client certificate: give the client side a certfile)"
            )),
            Some(E::AlertReceived(_)) => Refusal::PeerAlert(text),
            _ if text.contains("received corrupt message")
                || text.contains("InvalidContentType") =>
            {
                Refusal::NotTls(text)
            }
            _ => Refusal::Other(text),
        }
    }

    /// A fixed word for the log and metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Refusal::NotTls(_) => "not_tls",
            Refusal::UnknownCa(_) => "unknown_ca",
            Refusal::Expired(_) => "certificate_expired",
            Refusal::NoPeerCert(_) => "no_peer_certificate",
            Refusal::NameMismatch(_) => "certificate_name_mismatch",
            Refusal::PeerAlert(_) => "peer_alert",
            Refusal::Config(_) => "tls_config",
            Refusal::Other(_) => "tls_error",
        }
    }

    /// The underlying text.
    pub(crate) fn detail(&self) -> &str {
        match self {
            Refusal::NotTls(t)
            | Refusal::UnknownCa(t)
            | Refusal::Expired(t)
            | Refusal::NoPeerCert(t)
            | Refusal::NameMismatch(t)
            | Refusal::PeerAlert(t)
            | Refusal::Config(t)
            | Refusal::Other(t) => t,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason(), self.detail())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn protocol_versions(o: &TlsOptions) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut v = Vec::new();
    if o.versions.contains(&TlsVersion::Tls13) {
        v.push(&rustls::version::TLS13);
    }
    if o.versions.contains(&TlsVersion::Tls12) {
        v.push(&rustls::version::TLS12);
    }
    v
}

type Get<'a> = dyn Fn(&PathBuf) -> &'a [u8] + 'a;

fn certs(
    side: &'static str,
    option: &'static str,
    path: &PathBuf,
    get: &Get<'_>,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |what: String| TlsError::Content {
        side,
        option,
        path: path.clone(),
        what,
    };
    let certs = CertificateDer::pem_slice_iter(get(path))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM CERTIFICATE".into()));
    }
    Ok(certs)
}

fn cert_and_key(
    side: &'static str,
    o: &TlsOptions,
    get: &Get<'_>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certfile = o.certfile.as_ref().ok_or_else(|| TlsError::Missing {
        side,
        what: "no certfile: this node needs a certificate".into(),
    })?;
    let chain = certs(side, "certfile", certfile, get)?;
    let (option, keypath) = match &o.keyfile {
        Some(k) => ("keyfile", k),
        None => ("certfile", certfile),
    };
    let key = PrivateKeyDer::from_pem_slice(get(keypath)).map_err(|e| TlsError::Content {
        side,
        option,
        path: keypath.clone(),
        what: format!("no usable PEM private key: {e}"),
    })?;
    // The key must be the certificate's (rustls checks the public keys).
    let ck = rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider())
        .map_err(|source| TlsError::Rustls {
            side,
            what: format!(
                "the key in {} does not go with the certificate in {}",
                keypath.display(),
                certfile.display()
            ),
            source,
        })?;
    drop(ck);
    Ok((chain, key))
}

fn roots(side: &'static str, o: &TlsOptions, get: &Get<'_>) -> Result<RootCertStore, TlsError> {
    let path = o.cacertfile.as_ref().ok_or_else(|| TlsError::Missing {
        side,
        what: "verify_peer needs a cacertfile (the CA bundle peers' certificates chain to)".into(),
    })?;
    let mut store = RootCertStore::empty();
    for c in certs(side, "cacertfile", path, get)? {
        store.add(c).map_err(|source| TlsError::Rustls {
            side,
            what: format!("a CA certificate in {} is unusable", path.display()),
            source,
        })?;
    }
    Ok(store)
}

fn server_config(
    o: &TlsOptions,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    get: &Get<'_>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&protocol_versions(o))
        .map_err(|source| TlsError::Rustls {
            side: "server",
            what: "versions".into(),
            source,
        })?;
    let builder = match o.verify {
        Verify::Peer => {
            let v = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots("server", o, get)?),
                provider(),
            );
            let v = if o.fail_if_no_peer_cert {
                v
            } else {
                v.allow_unauthenticated()
            };
            let v = v.build().map_err(|e| TlsError::Missing {
                side: "server",
                what: format!("cannot verify clients: {e}"),
            })?;
            builder.with_client_cert_verifier(v)
        }
        Verify::None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Rustls {
            side: "server",
            what: "the certificate and key".into(),
            source,
        })
}

fn client_config(
    o: &TlsOptions,
    cert_key: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    get: &Get<'_>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&protocol_versions(o))
        .map_err(|source| TlsError::Rustls {
            side: "client",
            what: "versions".into(),
            source,
        })?;
    let builder = match o.verify {
        Verify::Peer => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerVerifier {
                roots: Arc::new(roots("client", o, get)?),
                provider: provider(),
                check_name: !matches!(o.server_name, ssl_optfile::ServerName::Disable),
            })),
        Verify::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider()))),
    };
    let mut c = match cert_key {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|source| TlsError::Rustls {
                side: "client",
                what: "the certificate and key".into(),
                source,
            })?,
        None => builder.with_no_client_auth(),
    };
    // SNI only when the server's name is checked (rustls never sends it
    // for an IP address).
    c.enable_sni = !matches!(o.server_name, ssl_optfile::ServerName::Disable);
    Ok(c)
}

/// The dNSName entries of a certificate's subjectAltName.
fn dns_sans(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, c)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = c.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect()
}

/// When a certificate expires.
fn expiry(cert: &CertificateDer<'_>) -> Option<SystemTime> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let secs = c.validity().not_after.timestamp();
    SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(u64::try_from(secs).ok()?))
}

/// `verify_peer` on the client side: the chain against the CA bundle,
/// then (unless `{server_name_indication, disable}`) the name. A node
/// named by an IP address matches an IP SAN, or, as OTP's check does
/// (`inet_tls_dist` passes the host text as the SNI name and OTP matches
/// it against dNSName entries only), a DNS SAN holding the address as
/// text, so one certificate serves BEAM and Rust peers.
#[derive(Debug)]
struct ServerVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    check_name: bool,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.check_name {
            if let Err(e) = rustls::client::verify_server_name(&cert, server_name) {
                let ServerName::IpAddress(ip) = server_name else {
                    return Err(e);
                };
                let text = std::net::IpAddr::from(*ip).to_string();
                if !dns_sans(end_entity)
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(&text))
                {
                    return Err(e);
                }
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `verify_none` on the client side: any server certificate (signatures
/// still checked).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
