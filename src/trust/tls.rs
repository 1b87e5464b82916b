//! TLS settings for the daemon's listeners (rustls, `ring` provider only).
//!
//! An analyzer listener may require client certificates signed by a configured CA: an analyzer
//! without one is refused during the handshake. Private key files must not be readable by group
//! or others; the daemon refuses to start otherwise.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// TLS for one listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM certificate chain presented by the listener.
    pub cert: PathBuf,
    /// PEM private key (mode 0600 or stricter).
    pub key: PathBuf,
    /// PEM CA certificates that sign client certificates. When set, a client certificate is
    /// required.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Why TLS could not be set up. Names the file, never key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}: cannot read: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    #[error("{0}: no PEM private key found")]
    NoKey(PathBuf),
    #[error("{0}: private key is readable by group or others (mode {1:o}); chmod 600 it")]
    KeyPermissions(PathBuf, u32),
    #[error("{0}: bad CA certificate: {1}")]
    BadCa(PathBuf, String),
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

/// Installs the `ring` crypto provider as the process default (idempotent).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::Read(path.to_path_buf(), e))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(|c| c.ok())
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// Refuses a key file that group or others can read.
pub fn check_key_permissions(path: &Path) -> Result<(), TlsError> {
    let meta = std::fs::metadata(path).map_err(|e| TlsError::Read(path.to_path_buf(), e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyPermissions(path.to_path_buf(), mode));
    }
    Ok(())
}

/// Reads a private key (after checking its permissions).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    check_key_permissions(path)?;
    let bytes = std::fs::read(path).map_err(|e| TlsError::Read(path.to_path_buf(), e))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::NoKey(path.to_path_buf()))
}

/// Builds a server configuration; with `client_ca`, client certificates are required.
pub fn server_config(t: &ServerTls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = load_certs(&t.cert)?;
    let key = load_key(&t.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &t.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::BadCa(ca.clone(), e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::BadCa(ca.clone(), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(Arc::new(cfg))
}

/// Checks a TLS section without starting anything (for `check-config`).
pub fn check(t: &ServerTls) -> Vec<String> {
    match server_config(t) {
        Ok(_) => Vec::new(),
        Err(e) => vec![e.to_string()],
    }
}
