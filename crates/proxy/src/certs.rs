//! The proxy's TLS identity: a local CA plus a wildcard leaf for
//! `*.{domain}` made on first start and reused afterwards, or an operator's
//! own certificate and key.
//!
//! Files of a local CA directory (see [`LocalCaFiles`]):
//! `ca.pem` (what clients trust), `ca.key`, `server.pem` (leaf, then the CA),
//! `server.key`. Keys are written `0600`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};
use tracing::info;

/// Leaf lifetime. Apple platforms refuse TLS leaves valid for more than 825
/// days even under a private CA; 397 days stays inside every browser's limit.
const LEAF_DAYS: i64 = 397;
/// A leaf closer than this to its end is replaced at start.
const LEAF_RENEW_BEFORE_DAYS: i64 = 30;
const CA_DAYS: i64 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Generate {
        context: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CertError {
    let context = context.into();
    move |source| CertError::Io { context, source }
}

fn gen_err(context: &'static str) -> impl FnOnce(rcgen::Error) -> CertError {
    move |source| CertError::Generate {
        context: context.to_string(),
        source,
    }
}

/// Where a local CA directory keeps its files.
#[derive(Debug, Clone)]
pub struct LocalCaFiles {
    pub dir: PathBuf,
}

impl LocalCaFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    /// The CA certificate clients must trust (`NODE_EXTRA_CA_CERTS`,
    /// `SSL_CERT_FILE`). Known before the CA exists, so `sandbar env` can
    /// print it without generating anything.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

/// The certificate chain and key the proxy presents.
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The local CA's certificate file; `None` for an operator's certificate.
    pub ca_cert_path: Option<PathBuf>,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert")
            .field("chain_len", &self.chain.len())
            .field("ca_cert_path", &self.ca_cert_path)
            .finish_non_exhaustive()
    }
}

/// The host the proxy serves, without any `:port` an operator may have
/// written into the domain (the SDKs accept `sbx.localhost:8443`).
pub fn bare_domain(domain: &str) -> &str {
    match domain.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => domain,
    }
}

/// The names the leaf must cover for `domain`.
fn wanted_names(domain: &str) -> Vec<String> {
    let domain = bare_domain(domain);
    vec![
        format!("*.{domain}"),
        domain.to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ]
}

impl ServerCert {
    /// Loads the local CA and leaf from `files.dir`, making whatever is
    /// missing: a new CA on first start, a new leaf when there is none, when
    /// it does not name exactly `domain`'s hosts, when it nears its end, or
    /// when it was not issued by the CA on disk.
    pub fn local(files: &LocalCaFiles, domain: &str) -> Result<Self, CertError> {
        fs::create_dir_all(&files.dir)
            .map_err(io_err(format!("creating {}", files.dir.display())))?;

        let (ca_pem, ca_key, ca_is_new) = load_or_create_ca(files)?;
        let ca_der = parse_single_cert(&files.ca_cert(), &ca_pem)?;
        let names = wanted_names(domain);

        if !ca_is_new {
            if let Some(cert) = reuse_leaf(files, &ca_der, &names)? {
                return Ok(cert);
            }
        }

        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
            .map_err(gen_err("reading the local CA certificate"))?;
        let leaf_key = KeyPair::generate().map_err(gen_err("generating the server key"))?;
        let leaf = leaf_params(&names)?
            .signed_by(&leaf_key, &issuer)
            .map_err(gen_err("signing the server certificate"))?;
        let chain_pem = format!("{}{}", leaf.pem(), ca_pem);
        write_file(
            &files.server_key(),
            leaf_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_file(&files.server_cert(), chain_pem.as_bytes(), 0o644)?;
        info!(dir = %files.dir.display(), names = ?names, "made the server certificate");

        Ok(Self {
            chain: vec![leaf.der().clone(), ca_der],
            key: PrivateKeyDer::try_from(leaf_key.serialize_der()).map_err(|message| {
                CertError::Pem {
                    path: files.server_key(),
                    message: message.to_string(),
                }
            })?,
            ca_cert_path: Some(files.ca_cert()),
        })
    }

    /// An operator's certificate chain and private key, both PEM.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, CertError> {
        let cert_pem = fs::read(cert).map_err(io_err(format!("reading {}", cert.display())))?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertError::Pem {
                path: cert.to_path_buf(),
                message: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(CertError::Pem {
                path: cert.to_path_buf(),
                message: "no CERTIFICATE block".into(),
            });
        }
        let key_pem = fs::read(key).map_err(io_err(format!("reading {}", key.display())))?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CertError::Pem {
            path: key.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            chain,
            key: key_der,
            ca_cert_path: None,
        })
    }

    /// A rustls server configuration offering h2 and http/1.1 by ALPN.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, CertError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn load_or_create_ca(files: &LocalCaFiles) -> Result<(String, KeyPair, bool), CertError> {
    let (cert_path, key_path) = (files.ca_cert(), files.ca_key());
    if cert_path.exists() && key_path.exists() {
        let pem = fs::read_to_string(&cert_path)
            .map_err(io_err(format!("reading {}", cert_path.display())))?;
        let key_pem = fs::read_to_string(&key_path)
            .map_err(io_err(format!("reading {}", key_path.display())))?;
        let key = KeyPair::from_pem(&key_pem).map_err(gen_err("reading the local CA key"))?;
        return Ok((pem, key, false));
    }

    let key = KeyPair::generate().map_err(gen_err("generating the CA key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "sandbar");
    // Unique per install, so two machines' CAs are told apart in a trust store.
    let tag = &short_hash(key.public_key_raw())[..8];
    dn.push(DnType::CommonName, format!("sandbar local CA {tag}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(CA_DAYS);
    let cert = params
        .self_signed(&key)
        .map_err(gen_err("signing the CA certificate"))?;
    let pem = cert.pem();
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, pem.as_bytes(), 0o644)?;
    info!(path = %cert_path.display(), "made a local certificate authority");
    Ok((pem, key, true))
}

fn leaf_params(names: &[String]) -> Result<CertificateParams, CertError> {
    let mut params =
        CertificateParams::new(names.to_vec()).map_err(gen_err("naming the server certificate"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "sandbar");
    dn.push(DnType::CommonName, names[0].clone());
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // OpenSSL's strict mode (Python 3.13's default) refuses a leaf without it.
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(LEAF_DAYS);
    // rcgen turns IP-looking names into IP SANs only when asked.
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| CertError::Generate {
                    context: format!("name '{n}'"),
                    source: e,
                }),
        })
        .collect::<Result<_, _>>()?;
    Ok(params)
}

/// The persisted leaf, when it is still the right one.
fn reuse_leaf(
    files: &LocalCaFiles,
    ca_der: &CertificateDer<'static>,
    names: &[String],
) -> Result<Option<ServerCert>, CertError> {
    let (cert_path, key_path) = (files.server_cert(), files.server_key());
    if !cert_path.exists() || !key_path.exists() {
        return Ok(None);
    }
    let loaded = ServerCert::from_pem_files(&cert_path, &key_path)?;
    let [leaf, ca] = loaded.chain.as_slice() else {
        return Ok(None);
    };
    if ca != ca_der {
        info!("server certificate is not from the current CA; making a new one");
        return Ok(None);
    }
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(leaf) else {
        return Ok(None);
    };
    let has_aki = x509.extensions().iter().any(|e| {
        matches!(
            e.parsed_extension(),
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(_)
        )
    });
    if !has_aki {
        info!("server certificate lacks an authority key identifier; making a new one");
        return Ok(None);
    }
    let renew_at = OffsetDateTime::now_utc() + Duration::days(LEAF_RENEW_BEFORE_DAYS);
    if x509.validity().not_after.to_datetime() < renew_at {
        info!("server certificate is near its end; making a new one");
        return Ok(None);
    }
    let mut have: Vec<String> = match x509.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => ip_from_bytes(b),
                _ => None,
            })
            .collect(),
        _ => return Ok(None),
    };
    let mut want = names.to_vec();
    have.sort();
    want.sort();
    if have != want {
        info!(
            ?have,
            ?want,
            "server certificate names changed; making a new one"
        );
        return Ok(None);
    }
    Ok(Some(ServerCert {
        ca_cert_path: Some(files.ca_cert()),
        ..loaded
    }))
}

fn ip_from_bytes(b: &[u8]) -> Option<String> {
    match b.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?).to_string()),
        _ => None,
    }
}

fn parse_single_cert(path: &Path, pem: &str) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| CertError::Pem {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn short_hash(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes through a temporary file and a rename so a crash never leaves half
/// a key behind; the mode is set at creation so a key is never world-readable.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(format!("creating {}", tmp.display())))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_err(format!("writing {}", tmp.display())))?;
    // The umask may have narrowed the mode; make it exact.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io_err(format!("renaming to {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_names(cert: &ServerCert) -> Vec<String> {
        let (_, x509) = x509_parser::parse_x509_certificate(&cert.chain[0]).unwrap();
        let san = x509.subject_alternative_name().unwrap().unwrap();
        san.value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn first_start_makes_ca_and_leaf_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalCaFiles::new(dir.path());
        let cert = ServerCert::local(&files, "sbx.example").unwrap();
        assert_eq!(cert.chain.len(), 2);
        assert_eq!(
            cert.ca_cert_path.as_deref(),
            Some(files.ca_cert().as_path())
        );
        for key in [files.ca_key(), files.server_key()] {
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        let names = leaf_names(&cert).join(",");
        assert!(names.contains("*.sbx.example"), "{names}");
        assert!(names.contains("DNSName(sbx.example)"), "{names}");
        assert!(names.contains("localhost"), "{names}");
        cert.server_config().unwrap();
    }

    /// OpenSSL with `-x509_strict` (Python 3.13's default verification)
    /// accepts the chain; skipped where no `openssl` binary is installed.
    #[test]
    fn chain_passes_openssl_strict_verification() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalCaFiles::new(dir.path());
        ServerCert::local(&files, "sbx.example").unwrap();
        let out = std::process::Command::new("openssl")
            .arg("verify")
            .arg("-x509_strict")
            .arg("-CAfile")
            .arg(files.ca_cert())
            .arg(files.server_cert())
            .output();
        let Ok(out) = out else {
            eprintln!("no openssl binary; skipped");
            return;
        };
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn later_start_reuses_and_domain_change_renews_only_the_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalCaFiles::new(dir.path());
        let first = ServerCert::local(&files, "a.example").unwrap();
        let again = ServerCert::local(&files, "a.example:8443").unwrap();
        assert_eq!(first.chain, again.chain, "same domain must reuse the leaf");

        let other = ServerCert::local(&files, "b.example").unwrap();
        assert_ne!(
            first.chain[0], other.chain[0],
            "new domain needs a new leaf"
        );
        assert_eq!(first.chain[1], other.chain[1], "the CA must survive");
        assert!(leaf_names(&other).join(",").contains("*.b.example"));
    }

    #[test]
    fn lost_ca_key_makes_a_new_ca_and_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalCaFiles::new(dir.path());
        let first = ServerCert::local(&files, "a.example").unwrap();
        fs::remove_file(files.ca_key()).unwrap();
        let second = ServerCert::local(&files, "a.example").unwrap();
        assert_ne!(first.chain[1], second.chain[1]);
        assert_ne!(first.chain[0], second.chain[0]);
    }

    #[test]
    fn operator_files_load_and_bad_ones_say_where() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalCaFiles::new(dir.path());
        ServerCert::local(&files, "a.example").unwrap();
        let op = ServerCert::from_pem_files(&files.server_cert(), &files.server_key()).unwrap();
        assert_eq!(op.chain.len(), 2);
        assert!(op.ca_cert_path.is_none());

        let bad = dir.path().join("bad.pem");
        fs::write(&bad, "not a pem").unwrap();
        let err = ServerCert::from_pem_files(&bad, &files.server_key()).unwrap_err();
        assert!(err.to_string().contains("bad.pem"), "{err}");
    }

    #[test]
    fn bare_domain_strips_only_a_port() {
        assert_eq!(bare_domain("sbx.localhost:8443"), "sbx.localhost");
        assert_eq!(bare_domain("sbx.localhost"), "sbx.localhost");
    }
}
