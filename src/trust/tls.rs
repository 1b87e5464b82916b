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
    /// The analyzer's own name (DNS name or IP address) that its client certificate must carry
    /// in its subject alternative names: a certificate of the same CA issued to another
    /// analyzer is refused on this listener. Needs `client_ca`.
    #[serde(default)]
    pub client_name: Option<String>,
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
            match &t.client_name {
                Some(name) => {
                    let name = rustls::pki_types::ServerName::try_from(name.as_str())
                        .map_err(|e| TlsError::Rustls(format!("tls.client_name: {e}")))?
                        .to_owned();
                    builder.with_client_cert_verifier(Arc::new(NamedClient {
                        inner: verifier,
                        name,
                    }))
                }
                None => builder.with_client_cert_verifier(verifier),
            }
        }
        None => builder.with_no_client_auth(),
    };
    let cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(Arc::new(cfg))
}

/// A client certificate verifier that, after the CA's chain check, requires the end-entity
/// certificate to be issued to one name (its SAN, as webpki matches a server's): the
/// certificate of another analyzer of the same CA is refused.
#[derive(Debug)]
struct NamedClient {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    name: rustls::pki_types::ServerName<'static>,
}

impl rustls::server::danger::ClientCertVerifier for NamedClient {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&cert, &self.name).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
        })?;
        Ok(ok)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Checks a TLS section without starting anything (for `check-config`).
pub fn check(t: &ServerTls) -> Vec<String> {
    match server_config(t) {
        Ok(_) => Vec::new(),
        Err(e) => vec![e.to_string()],
    }
}

/// A client configuration that trusts exactly one server certificate: the first of the PEM file
/// `cert` (the admin listener's own, which the CLI finds in the configuration). Its chain and
/// names are not checked; its key must sign the handshake.
pub fn pinned_client_config(cert: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let pinned = load_certs(cert)?.remove(0);
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            cert: pinned,
            provider: provider(),
        }))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Accepts one certificate, byte for byte.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
