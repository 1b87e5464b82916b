//! A local MRO for tests and benchmarks: a PKI made with rcgen (the MRO's CA and server
//! certificate, the laboratory's CA and client certificate) and an HTTPS receiver that requires
//! the client certificate, records every request with the instants it arrived and was answered,
//! can answer 503 a number of times, can hold requests (a slow MRO), and keeps idempotency the
//! way the delivery contract expects (a key already answered 2xx gets 409).
//!
//! Include it with `#[path = "common/mro.rs"] mod mro;` (from a benchmark:
//! `#[path = "../common/mro.rs"]`).
#![allow(dead_code)]

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The certificates of both sides, as files (for the daemon's configuration) and as DER.
pub struct Pki {
    pub mro_ca: PathBuf,
    pub lab_client_cert: PathBuf,
    pub lab_client_key: PathBuf,
    pub mro_ca_der: CertificateDer<'static>,
    pub server_chain: Vec<CertificateDer<'static>>,
    pub server_key: Vec<u8>,
    pub lab_ca_der: CertificateDer<'static>,
    pub client_chain: Vec<CertificateDer<'static>>,
    pub client_key: Vec<u8>,
}

fn write_key(path: &Path, pem: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, pem).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Makes both CAs and the two leaf certificates; writes what the daemon reads into `dir`.
pub fn pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca = |cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        (cert, Issuer::new(params, key))
    };
    let (mro_ca_cert, mro_ca) = ca("Test MRO CA");
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &mro_ca)
        .unwrap();
    let (lab_ca_cert, lab_ca) = ca("Test Lab CA");
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["lab.example".to_string()]).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "Test Laboratory");
    let client = client_params.signed_by(&client_key, &lab_ca).unwrap();

    let mro_ca = dir.join("mro-ca.pem");
    std::fs::write(&mro_ca, mro_ca_cert.pem()).unwrap();
    let lab_client_cert = dir.join("lab-client.pem");
    std::fs::write(&lab_client_cert, client.pem()).unwrap();
    let lab_client_key = dir.join("lab-client.key");
    write_key(&lab_client_key, &client_key.serialize_pem());
    Pki {
        mro_ca,
        lab_client_cert,
        lab_client_key,
        mro_ca_der: mro_ca_cert.der().clone(),
        server_chain: vec![server.der().clone()],
        server_key: server_key.serialize_der(),
        lab_ca_der: lab_ca_cert.der().clone(),
        client_chain: vec![client.der().clone()],
        client_key: client_key.serialize_der(),
    }
}

/// The `[[mro]]` section (id `id`, the CCF examples name MRO-0042) and a `[transmit]` section
/// with short backoff and a POST timeout of `timeout_secs`.
pub fn mro_section(p: &Pki, port: u16, id: &str, timeout_secs: u64) -> String {
    format!(
        "[[mro]]\nid = \"{id}\"\nname = \"Dr. Pat Example, MD\"\naddress = \"100 Example Way\"\nendpoint = \"https://127.0.0.1:{port}/reports\"\nca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n[transmit]\nbackoff_initial_ms = 50\nbackoff_max_secs = 1\ntimeout_secs = {timeout_secs}\n",
        p.mro_ca.display(),
        p.lab_client_cert.display(),
        p.lab_client_key.display()
    )
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub idempotency_key: String,
    pub content_type: String,
    pub body: String,
    /// When the whole request (head and body) had been read.
    pub arrived: Instant,
    /// The status sent and when the response had been written and flushed; None while held or
    /// when the client went away before an answer.
    pub answered: Option<(u16, Instant)>,
    /// The client closed the connection while the request was held.
    pub abandoned: bool,
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Request>>,
    changed: Condvar,
}

/// One scripted answer: status, extra headers, body.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Scripted {
    pub fn new(status: u16, body: &str) -> Scripted {
        Scripted {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Scripted {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// A running receiver (its accept thread lives as long as the process).
pub struct Receiver {
    pub port: u16,
    shared: Arc<Shared>,
    /// Answers to give first, in order (before `fail_first` and the normal answers).
    pub script: Arc<Mutex<std::collections::VecDeque<Scripted>>>,
    /// Answer this many requests with 503 first.
    pub fail_first: Arc<AtomicUsize>,
    /// Hold each request this long (measured from its arrival, re-read while holding) before
    /// answering; lowering it releases held requests.
    pub hold_ms: Arc<AtomicU64>,
}

/// Starts a receiver on a loopback port: client certificate required (signed by the lab's CA).
pub fn receiver(p: &Pki) -> Receiver {
    custodian::trust::tls::install_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.lab_ca_der.clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let cfg = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            p.server_chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.server_key.clone())),
        )
        .unwrap();
    let cfg = Arc::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let rx = Receiver {
        port,
        shared: Arc::new(Shared::default()),
        fail_first: Arc::new(AtomicUsize::new(0)),
        hold_ms: Arc::new(AtomicU64::new(0)),
        script: Arc::new(Mutex::new(std::collections::VecDeque::new())),
    };
    let (shared, fail_first, hold_ms, script) = (
        rx.shared.clone(),
        rx.fail_first.clone(),
        rx.hold_ms.clone(),
        rx.script.clone(),
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (cfg, shared, fail_first, hold_ms, script) = (
                cfg.clone(),
                shared.clone(),
                fail_first.clone(),
                hold_ms.clone(),
                script.clone(),
            );
            std::thread::spawn(move || {
                serve_one(stream, cfg, &shared, &fail_first, &hold_ms, &script)
            });
        }
    });
    rx
}

fn serve_one(
    stream: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    shared: &Shared,
    fail_first: &AtomicUsize,
    hold_ms: &AtomicU64,
    script: &Mutex<std::collections::VecDeque<Scripted>>,
) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let conn = rustls::ServerConnection::new(cfg).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (start, len) = loop {
        match tls.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            break (pos + 4, len);
        }
    };
    while buf.len() < start + len {
        match tls.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let arrived = Instant::now();
    let head = String::from_utf8_lossy(&buf[..start]).to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let key = header("idempotency-key");
    let index = {
        let mut reqs = shared.requests.lock().unwrap();
        reqs.push(Request {
            idempotency_key: key.clone(),
            content_type: header("content-type"),
            body: String::from_utf8_lossy(&buf[start..start + len]).to_string(),
            arrived,
            answered: None,
            abandoned: false,
        });
        shared.changed.notify_all();
        reqs.len() - 1
    };

    // A slow MRO: hold the request, noticing when the client gives up on it.
    if hold_ms.load(Ordering::SeqCst) > 0 {
        let _ = tls.sock.set_read_timeout(Some(Duration::from_millis(20)));
        while arrived.elapsed() < Duration::from_millis(hold_ms.load(Ordering::SeqCst)) {
            let gone = match tls.read(&mut chunk) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            };
            if gone {
                let mut reqs = shared.requests.lock().unwrap();
                reqs[index].abandoned = true;
                shared.changed.notify_all();
                return;
            }
        }
    }

    let scripted = script.lock().unwrap().pop_front();
    let status = if let Some(s) = &scripted {
        s.status
    } else if fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        503
    } else if shared.requests.lock().unwrap().iter().any(|r| {
        r.idempotency_key == key && r.answered.is_some_and(|(s, _)| (200..300).contains(&s))
    }) {
        409
    } else {
        201
    };
    let reason = match status {
        201 => "Created",
        409 => "Conflict",
        503 => "Service Unavailable",
        _ => "Scripted",
    };
    let (body, extra) = match &scripted {
        Some(s) => (
            s.body.clone(),
            s.headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}\r\n"))
                .collect::<String>(),
        ),
        None => ("{\"received\":true}".to_string(), String::new()),
    };
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    if tls.write_all(resp.as_bytes()).is_err() || tls.flush().is_err() {
        return;
    }
    let done = Instant::now();
    {
        let mut reqs = shared.requests.lock().unwrap();
        reqs[index].answered = Some((status, done));
        shared.changed.notify_all();
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

impl Receiver {
    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The requests carrying `key`.
    pub fn with_key(&self, key: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.idempotency_key == key)
            .collect()
    }

    /// Waits until `cond` holds over the requests (checked at every change); the requests then,
    /// or None after `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&[Request]) -> bool,
    ) -> Option<Vec<Request>> {
        let deadline = Instant::now() + timeout;
        let mut reqs = self.shared.requests.lock().unwrap();
        loop {
            if cond(&reqs) {
                return Some(reqs.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            reqs = self.shared.changed.wait_timeout(reqs, left).unwrap().0;
        }
    }

    /// Waits for a 2xx answer to a request with `key`; the instant it was answered.
    pub fn wait_answered_2xx(&self, key: &str, timeout: Duration) -> Option<Instant> {
        let reqs = self.wait_for(timeout, |rs| {
            rs.iter().any(|r| {
                r.idempotency_key == key && r.answered.is_some_and(|(s, _)| (200..300).contains(&s))
            })
        })?;
        reqs.iter()
            .filter(|r| r.idempotency_key == key)
            .find_map(|r| r.answered.filter(|(s, _)| (200..300).contains(s)))
            .map(|(_, at)| at)
    }
}
