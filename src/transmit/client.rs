//! The HTTPS client that carries a report to one MRO: rustls with the MRO's configured CA (no
//! way to turn verification off), the laboratory's client certificate, `POST` of a compact JWS
//! with `Content-Type: application/jose` and `Idempotency-Key: <report id>`.

use crate::tls::{TlsError, load_certs, load_key};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Why a POST did not produce an HTTP status. All of these are retried.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS with {0}: {1}")]
    Tls(String, std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Where and how to reach one MRO.
#[derive(Clone)]
pub struct MroClient {
    host: String,
    port: u16,
    path: String,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

/// The answer of the MRO's system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The body (cut to 4 KiB), kept as the receipt.
    pub body: String,
}

/// Splits an `https://host[:port]/path` endpoint; anything else is refused.
pub fn parse_endpoint(endpoint: &str) -> Result<(String, u16, String), String> {
    let uri: http::Uri = endpoint.parse().map_err(|_| "not a URL".to_string())?;
    if uri.scheme_str() != Some("https") {
        return Err("must be an https:// URL (reports never travel unencrypted)".into());
    }
    let host = uri
        .host()
        .ok_or("has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    Ok((host, port, path))
}

impl MroClient {
    /// Builds the client: the CA that signs the MRO's server certificate, the lab's client
    /// certificate and key (key mode 0600 or stricter).
    pub fn new(
        endpoint: &str,
        ca: &Path,
        client_cert: &Path,
        client_key: &Path,
        timeout: Duration,
    ) -> Result<MroClient, String> {
        let (host, port, path) = parse_endpoint(endpoint)?;
        let mut roots = rustls::RootCertStore::empty();
        for c in load_certs(ca).map_err(|e| e.to_string())? {
            roots
                .add(c)
                .map_err(|e| TlsError::BadCa(ca.to_path_buf(), e.to_string()).to_string())?;
        }
        let certs = load_certs(client_cert).map_err(|e| e.to_string())?;
        let key = load_key(client_key).map_err(|e| e.to_string())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("client certificate: {e}"))?;
        let server_name =
            ServerName::try_from(host.clone()).map_err(|_| "bad host name".to_string())?;
        Ok(MroClient {
            host,
            port,
            path,
            server_name,
            tls: Arc::new(tls),
            timeout,
        })
    }

    /// POSTs a compact JWS. Any HTTP status is an `Ok`; the caller decides what it means.
    pub async fn post(&self, jws: &str, idempotency_key: &str) -> Result<Answer, SendError> {
        match tokio::time::timeout(self.timeout, self.post_inner(jws, idempotency_key)).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Timeout(self.timeout)),
        }
    }

    async fn post_inner(&self, jws: &str, idempotency_key: &str) -> Result<Answer, SendError> {
        let authority = format!("{}:{}", self.host, self.port);
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| SendError::Connect(authority.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let tls = connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| SendError::Tls(authority.clone(), e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| SendError::Http(e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::post(self.path.as_str())
            .header(hyper::header::HOST, authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/jose")
            .header("Idempotency-Key", idempotency_key)
            .body(Full::new(Bytes::copy_from_slice(jws.as_bytes())))
            .map_err(|e| SendError::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| SendError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        driver.abort();
        let mut text = String::from_utf8_lossy(&body).into_owned();
        text.truncate(4096);
        Ok(Answer { status, body: text })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_https() {
        assert_eq!(
            parse_endpoint("https://mro.example:8443/reports").unwrap(),
            ("mro.example".into(), 8443, "/reports".into())
        );
        assert_eq!(parse_endpoint("https://127.0.0.1/").unwrap().1, 443);
        assert!(parse_endpoint("http://mro.example/reports").is_err());
        assert!(parse_endpoint("ftp://x/").is_err());
        assert!(parse_endpoint("not a url").is_err());
    }
}
