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

/// The most of a response body that is read and kept as the receipt (bytes). The rest is not
/// read: an MRO's answer is a status, and its body must never stop delivery.
pub const MAX_RECEIPT_BYTES: usize = 4096;

/// The answer of the MRO's system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The body, read up to [`MAX_RECEIPT_BYTES`] and cut on a character boundary, kept as the
    /// receipt.
    pub body: String,
    /// The `Retry-After` header as sent (seconds or an HTTP date), if any.
    pub retry_after: Option<String>,
}

/// The receipt text of a body prefix: invalid UTF-8 replaced, cut to at most `max` bytes on a
/// character boundary (never inside a multi-byte character).
pub fn receipt_text(bytes: &[u8], max: usize) -> String {
    let bytes = &bytes[..bytes.len().min(max)];
    let text = String::from_utf8_lossy(bytes);
    let cut = text.floor_char_boundary(max);
    text[..cut].to_string()
}

/// Reads at most `max` bytes of a body; what follows is left unread.
async fn read_prefix<B>(mut body: B, max: usize) -> Vec<u8>
where
    B: hyper::body::Body + Unpin,
{
    let mut out = Vec::new();
    while out.len() < max {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(mut data) = frame.into_data() {
                    use bytes::Buf;
                    while data.has_remaining() && out.len() < max {
                        let chunk = data.chunk();
                        let take = chunk.len().min(max - out.len());
                        out.extend_from_slice(&chunk[..take]);
                        data.advance(take);
                    }
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    out
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
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(64).collect::<String>());
        let body = read_prefix(resp.into_body(), MAX_RECEIPT_BYTES).await;
        driver.abort();
        Ok(Answer {
            status,
            body: receipt_text(&body, MAX_RECEIPT_BYTES),
            retry_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An MRO's body whose byte 4096 falls inside a multi-byte character panicked
    /// `String::truncate` and killed the sender.
    #[test]
    fn receipt_is_cut_on_a_character_boundary() {
        let mut body = "a".repeat(4095).into_bytes();
        body.extend("é".repeat(100).as_bytes()); // byte 4096 is inside the first 'é'
        let text = receipt_text(&body, MAX_RECEIPT_BYTES);
        assert_eq!(text.len(), 4095);
        assert!(text.chars().all(|c| c == 'a'));
        let text = receipt_text("€".repeat(5000).as_bytes(), MAX_RECEIPT_BYTES);
        assert!(text.len() <= MAX_RECEIPT_BYTES && text.len() > 4090);
        assert!(text.chars().all(|c| c == '€'));
        // Invalid UTF-8 is replaced, never a panic; short bodies are kept whole.
        assert_eq!(receipt_text(b"ok \xff", 4096), "ok \u{fffd}");
        assert_eq!(
            receipt_text(b"{\"received\":true}", 4096),
            "{\"received\":true}"
        );
        assert_eq!(receipt_text(b"", 4096), "");
    }

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
