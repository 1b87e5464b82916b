//! A small client for the admin API, used by the CLI while the daemon runs (the store is then
//! locked by the daemon). HTTP/1.0 over TCP, or over TLS when the admin listener has
//! `[admin.tls]`: the client then trusts exactly the listener's configured certificate.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// Where the admin API listens, and the certificate it presents if it speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub tls_cert: Option<PathBuf>,
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            tls_cert: None,
        }
    }
}

/// GETs `path` with a bearer token.
pub fn get(at: impl Into<Endpoint>, path: &str, token: Option<&str>) -> std::io::Result<Response> {
    request(&at.into(), "GET", path, token, None)
}

/// POSTs a JSON body to `path` with a bearer token.
pub fn post(
    at: impl Into<Endpoint>,
    path: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> std::io::Result<Response> {
    request(&at.into(), "POST", path, token, Some(body.to_string()))
}

fn request(
    at: &Endpoint,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> std::io::Result<Response> {
    let addr = at.addr;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req =
        format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = &body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(b) = &body {
        req.push_str(b);
    }
    let mut buf = Vec::new();
    match &at.tls_cert {
        None => {
            s.write_all(req.as_bytes())?;
            s.read_to_end(&mut buf)?;
        }
        Some(cert) => {
            let cfg = crate::trust::tls::pinned_client_config(cert)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let conn = rustls::ClientConnection::new(cfg, name)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut tls = rustls::StreamOwned::new(conn, s);
            tls.write_all(req.as_bytes())?;
            match tls.read_to_end(&mut buf) {
                Ok(_) => {}
                // The server closed without close_notify after a complete HTTP/1.0 answer.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
                Err(e) => return Err(e),
            }
        }
    }
    parse(&buf).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response")
    })
}

fn parse(buf: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(Response {
        status,
        body: body.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let r = parse(b"HTTP/1.0 404 Not Found\r\ncontent-length: 3\r\n\r\nno\n").unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.body, "no\n");
        assert!(parse(b"garbage").is_none());
    }
}
