//! TLS with rustls and the ring provider (spec §2.7): user certificates, or a self-signed pair
//! made once with rcgen in the data dir and reused on later starts.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// `--cert FILE --cert-key FILE`, or a bare `--cert`: a self-signed pair for `--cert-host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned { host: String },
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not read the certificate {}: {}", path.display(), pem_text(source))]
    Cert { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("{} holds no certificate", .0.display())]
    NoCert(PathBuf),
    #[error("could not read the certificate key {}: {}", path.display(), pem_text(source))]
    Key { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("the certificate and key do not work together: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("could not generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("could not write {}: {}", path.display(), crate::errno::describe(source))]
    Write { path: PathBuf, source: io::Error },
}

/// A PEM error in words, with the system's error name when it is an I/O error.
fn pem_text(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => crate::errno::describe(io),
        other => other.to_string(),
    }
}

/// A ready server config and the certificate file it came from (for the start-up line).
pub struct LoadedTls {
    pub config: Arc<ServerConfig>,
    pub cert_path: PathBuf,
}

pub fn load(tls: &Tls, data_dir: &Path) -> Result<LoadedTls, TlsError> {
    let (cert_path, key_path) = match tls {
        Tls::Files { cert, key } => (cert.clone(), key.clone()),
        Tls::SelfSigned { host } => self_signed(host, data_dir)?,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert { path: cert_path.clone(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(cert_path));
    }
    let key =
        PrivateKeyDer::from_pem_file(&key_path).map_err(|source| TlsError::Key { path: key_path.clone(), source })?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(LoadedTls { config: Arc::new(config), cert_path })
}

/// `<data dir>/<host with dots as underscores>.crt|.key`: reused when both exist, otherwise
/// made (self-signed, CN and SAN = host, CA:true so it can be imported as a trusted root,
/// serverAuth, one year). The key is written with mode 0600.
pub fn self_signed(host: &str, data_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let stem = host.replace('.', "_");
    let cert_path = data_dir.join(format!("{stem}.crt"));
    let key_path = data_dir.join(format!("{stem}.key"));
    if cert_path.is_file() && key_path.is_file() {
        return Ok((cert_path, key_path));
    }
    let mut params = CertificateParams::new(vec![host.to_string()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, host);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;

    let write = |path: &Path, data: &str, mode: u32| {
        crate::util::atomic_write(path, data.as_bytes(), mode)
            .map_err(|source| TlsError::Write { path: path.to_path_buf(), source })
    };
    crate::private_dir::ensure(data_dir)
        .map_err(|e| TlsError::Write { path: data_dir.to_path_buf(), source: std::io::Error::other(e.to_string()) })?;
    write(&key_path, &key.serialize_pem(), 0o600)?;
    write(&cert_path, &cert.pem(), 0o644)?;
    Ok((cert_path, key_path))
}
