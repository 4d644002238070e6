//! Certificates for TLS distribution tests, made with rcgen: a CA, node
//! certificates naming the hosts a distribution name needs (`localhost`,
//! `127.0.0.1`), an expired one, and files plus an OTP `ssl_dist_optfile`
//! in a directory the caller owns (removed on drop).

use std::path::{Path, PathBuf};

/// A certificate authority.
pub struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Leaf {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl Ca {
    /// A new self-signed CA called `name`.
    pub fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A certificate for `hosts` (DNS names or IP addresses), valid now,
    /// for both TLS server and client use (one file serves both sides, as
    /// in an `ssl_dist_optfile`).
    pub fn issue(&self, hosts: &[&str]) -> Leaf {
        self.issue_with(hosts, |_| {})
    }

    /// A certificate for `hosts` that expired in 2001.
    pub fn issue_expired(&self, hosts: &[&str]) -> Leaf {
        self.issue_with(hosts, |p| {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        })
    }

    /// A certificate for `hosts` valid until the given day.
    pub fn issue_until(&self, hosts: &[&str], year: i32, month: u8, day: u8) -> Leaf {
        self.issue_with(hosts, |p| {
            p.not_after = rcgen::date_time_ymd(year, month, day);
        })
    }

    fn issue_with(&self, hosts: &[&str], f: impl FnOnce(&mut rcgen::CertificateParams)) -> Leaf {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        for h in hosts {
            // OTP checks a node's host against dNSName entries only, also
            // when the host is an IP address: such a host goes in as an IP
            // SAN and as its text in a DNS SAN.
            if let Ok(ip) = h.parse::<std::net::IpAddr>() {
                p.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
            }
            p.subject_alt_names
                .push(rcgen::SanType::DnsName((*h).try_into().expect("DNS name")));
        }
        p.distinguished_name.push(
            rcgen::DnType::CommonName,
            hosts.first().copied().unwrap_or("node"),
        );
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        f(&mut p);
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = p.signed_by(&key, &self.issuer).expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A directory of certificate files and an `ssl_dist_optfile`, removed on
/// drop.
pub struct TlsDir {
    dir: PathBuf,
}

impl TlsDir {
    /// A new empty directory under `base` (e.g. the OTP 27 chroot's
    /// `/tmp`, so the chroot's `erl` reads the same files) or the system
    /// temporary directory.
    pub fn new(base: Option<&Path>, name: &str) -> TlsDir {
        let base = base
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(crate::unique_name(name));
        std::fs::create_dir_all(&dir).expect("create TLS dir");
        TlsDir { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `text` to `file` in the directory (replacing it atomically,
    /// as a Secret volume does) and returns its path.
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.dir.join(file);
        let tmp = self.dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).expect("write TLS file");
        std::fs::rename(&tmp, &p).expect("rename TLS file");
        p
    }

    /// Writes `prefix.crt`, `prefix.key` and `ca.crt`, and an optfile
    /// `prefix.conf` naming them with `verify_peer` and
    /// `secure_renegotiate` on both sides (and `fail_if_no_peer_cert` as
    /// given) with paths as seen under `root`
    /// (`/` outside a chroot). Returns the optfile's path.
    pub fn node_files(
        &self,
        prefix: &str,
        leaf: &Leaf,
        ca_pem: &str,
        fail_if_no_peer_cert: bool,
        root: &Path,
    ) -> PathBuf {
        let extra = ", {secure_renegotiate, true}";
        self.node_files_with(prefix, leaf, ca_pem, fail_if_no_peer_cert, root, extra)
    }

    /// [`TlsDir::node_files`] with `extra` options (`, {versions, [...]}`)
    /// appended to both sides.
    pub fn node_files_with(
        &self,
        prefix: &str,
        leaf: &Leaf,
        ca_pem: &str,
        fail_if_no_peer_cert: bool,
        root: &Path,
        extra: &str,
    ) -> PathBuf {
        let crt = self.write(&format!("{prefix}.crt"), &leaf.cert_pem);
        let key = self.write(&format!("{prefix}.key"), &leaf.key_pem);
        let ca = self.write(&format!("{prefix}-ca.crt"), ca_pem);
        let seen = |p: &Path| -> String {
            let rel = p.strip_prefix(root).expect("file under root");
            format!("/{}", rel.display())
        };
        let side = |own: &str| {
            format!(
                "[{{certfile, \"{}\"}}, {{keyfile, \"{}\"}}, {{cacertfile, \"{}\"}}, \
                 {{verify, verify_peer}}{own}{more}]",
                seen(&crt),
                seen(&key),
                seen(&ca),
                more = extra,
            )
        };
        let text = format!(
            "[{{server, {}}},\n {{client, {}}}].\n",
            side(&format!(
                ", {{fail_if_no_peer_cert, {fail_if_no_peer_cert}}}"
            )),
            side("")
        );
        self.write(&format!("{prefix}.conf"), &text)
    }
}

impl Drop for TlsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
