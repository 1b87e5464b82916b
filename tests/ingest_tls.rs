//! MLLP over TLS through the real daemon: an analyzer listener with a server certificate and a
//! required client certificate. Certificates are generated for the test with rcgen: a CA, a
//! server certificate for 127.0.0.1/localhost and a client certificate signed by it, plus a
//! client certificate from an unrelated CA. Clients: rustls (ring) and Debian's
//! `openssl s_client`.

mod common;
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The PEM files of one test PKI.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
}

fn write_key(path: &Path, pem: &str) {
    std::fs::write(path, pem).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate signed by `issuer`; returns (certificate PEM, key PEM).
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki(dir: &Path) -> Pki {
    let lab_ca = ca("custodian test laboratory CA");
    let rogue_ca = ca("unrelated CA");
    let (server_cert, server_key) = leaf(
        &lab_ca,
        "custodian",
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(
        &lab_ca,
        "immunoassay-1",
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (rogue_cert, rogue_key) = leaf(
        &rogue_ca,
        "immunoassay-1",
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let p = Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        rogue_cert: dir.join("rogue.pem"),
        rogue_key: dir.join("rogue.key"),
    };
    std::fs::write(&p.ca, lab_ca.pem()).unwrap();
    std::fs::write(&p.server_cert, server_cert).unwrap();
    write_key(&p.server_key, &server_key);
    std::fs::write(&p.client_cert, client_cert).unwrap();
    write_key(&p.client_key, &client_key);
    std::fs::write(&p.rogue_cert, rogue_cert).unwrap();
    write_key(&p.rogue_key, &rogue_key);
    p
}

/// An analyzer `name` on port 0 with TLS and a required client certificate.
fn tls_analyzer(name: &str, p: &Pki) -> String {
    format!(
        "[[analyzer]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\n[analyzer.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n{LAB_MAPPING}\n",
        p.server_cert.display(),
        p.server_key.display(),
        p.ca.display()
    )
}

/// A rustls client configuration trusting the test CA, with an optional client certificate.
fn client_config(p: &Pki, client: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    custodian::trust::tls::install_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&p.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = match client {
        Some((cert, key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// Connects with rustls, completes the handshake, sends one MLLP frame and reads the reply
/// frame. Err says where it failed (handshake, write, read, or closed without a reply).
fn tls_exchange(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    payload: &[u8],
) -> Result<String, String> {
    let mut tcp = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut frame = vec![0x0b];
    frame.extend_from_slice(payload);
    frame.extend_from_slice(&[0x1c, 0x0d]);
    tls.write_all(&frame).map_err(|e| format!("write: {e}"))?;
    tls.flush().map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tls.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed without a reply".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(2).position(|w| w == [0x1c, 0x0d]) {
            let start = buf.iter().position(|&b| b == 0x0b).map_or(0, |p| p + 1);
            return Ok(String::from_utf8_lossy(&buf[start..end]).into_owned());
        }
    }
}

/// The daemon's count of refused TLS handshakes on analyzer `name`.
fn tls_refusals(d: &Daemon, name: &str) -> u64 {
    let (_, metrics) = d.get("/metrics", None);
    let prefix = format!("custodian_analyzer_tls_refused_total{{analyzer=\"{name}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn rustls_clients_need_a_certificate_of_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    write_config(dir.path(), &tls_analyzer("ia", &p));
    let d = Daemon::start(dir.path());
    let a = d.addr("ia");

    // The analyzer's certificate: AA, stored.
    let msg = oru("T-1", "SPT-1", &[("THC50", "18", "ng/mL")]);
    let good = client_config(&p, Some((&p.client_cert, &p.client_key)));
    let ack = tls_exchange(a, good.clone(), &msg).expect("TLS exchange with a valid client cert");
    assert_eq!(ack_code(&ack), "AA", "{ack}");
    assert_eq!(ack_control_id(&ack), "T-1");
    let rec = d.specimen("SPT-1").expect("stored");
    assert_eq!(
        results_from(&rec, "T-1"),
        vec![("marijuana".to_string(), "18".to_string())]
    );

    // No client certificate, or one from an unrelated CA: refused before any ACK, and nothing
    // of the message is stored.
    let before = tls_refusals(&d, "ia");
    let cases = [
        (
            "no client certificate",
            client_config(&p, None),
            "CertificateRequired",
        ),
        (
            "client certificate from an unrelated CA",
            client_config(&p, Some((&p.rogue_cert, &p.rogue_key))),
            "UnknownCA",
        ),
    ];
    for (i, (what, cfg, alert)) in cases.iter().enumerate() {
        let id = format!("T-X{i}");
        let err = tls_exchange(
            a,
            cfg.clone(),
            &oru(&id, "SPT-2", &[("THC50", "1", "ng/mL")]),
        )
        .expect_err(&format!("{what}: must be refused, not answered"));
        assert!(
            err.starts_with("handshake") || err.starts_with("read") || err.starts_with("write"),
            "{what}: {err}"
        );
        assert!(
            err.contains(alert),
            "{what}: the daemon's alert is {alert}: {err}"
        );
        eprintln!("{what}: refused ({err})");
    }
    wait_until("both refusals counted", Duration::from_secs(10), || {
        tls_refusals(&d, "ia") >= before + 2
    });
    assert!(
        d.specimen("SPT-2").is_none(),
        "nothing of a refused client is stored"
    );

    // The listener still serves the real analyzer afterwards.
    let ack = tls_exchange(a, good, &oru("T-2", "SPT-1", &[("COC300", "5", "ng/mL")])).unwrap();
    assert_eq!(ack_code(&ack), "AA", "{ack}");
}

/// Runs `openssl s_client` against `addr` with `extra` arguments, feeds it `payload` as one MLLP
/// frame on standard input, and returns (stdout so far, stderr, exited) once the reply frame
/// arrived, or once it exited, or after 15 s.
fn s_client(addr: SocketAddr, p: &Pki, extra: &[&Path], payload: &[u8]) -> (String, String, bool) {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
        .arg(&p.ca)
        .args(["-verify_return_error", "-verify_ip", "127.0.0.1", "-quiet"]);
    for (flag, path) in ["-cert", "-key"].iter().zip(extra) {
        cmd.arg(flag).arg(path);
    }
    let mut child: Child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl must be installed (Debian package openssl)");
    let mut frame = vec![0x0b];
    frame.extend_from_slice(payload);
    frame.extend_from_slice(&[0x1c, 0x0d]);
    let mut stdin = child.stdin.take().unwrap();
    // A refused client may already be gone: a failed write is part of the outcome.
    let _ = stdin.write_all(&frame);
    let _ = stdin.flush();

    // Read stdout on a thread so the wait can be bounded.
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 || tx.send(chunk[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut out = Vec::new();
    let exited;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(bytes) => out.extend(bytes),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                exited = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if out.windows(2).any(|w| w == [0x1c, 0x0d]) || Instant::now() > deadline {
            exited = false;
            break;
        }
    }
    // -quiet ignores EOF on stdin, so the client is ended here (our own child, by handle).
    drop(stdin);
    if !exited {
        let _ = child.kill();
    }
    child.wait().unwrap();
    let _ = reader.join();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (String::from_utf8_lossy(&out).into_owned(), err, exited)
}

#[test]
fn openssl_s_client_with_the_client_certificate_gets_aa_and_without_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    write_config(dir.path(), &tls_analyzer("ia", &p));
    let d = Daemon::start(dir.path());
    let a = d.addr("ia");

    let msg = oru("O-1", "SPO-1", &[("AMP1000", "250", "ng/mL")]);
    let (out, err, _) = s_client(a, &p, &[&p.client_cert, &p.client_key], &msg);
    assert!(
        out.contains("MSA|AA|O-1"),
        "s_client with the client certificate: stdout {out:?}, stderr {err}"
    );
    let rec = d.specimen("SPO-1").expect("stored");
    assert_eq!(
        results_from(&rec, "O-1"),
        vec![("amphetamines".to_string(), "250".to_string())]
    );

    let (out, err, exited) = s_client(
        a,
        &p,
        &[],
        &oru("O-2", "SPO-2", &[("AMP1000", "1", "ng/mL")]),
    );
    assert!(
        !out.contains("MSA|"),
        "no ACK without a certificate: {out:?}"
    );
    assert!(exited, "the daemon closed the connection: stderr {err}");
    assert!(
        err.to_lowercase().contains("alert") || err.contains("certificate required"),
        "refused by a TLS alert: {err}"
    );
    assert!(d.specimen("SPO-2").is_none());

    // A certificate of an unrelated CA is refused too.
    let (out, err, exited) = s_client(
        a,
        &p,
        &[&p.rogue_cert, &p.rogue_key],
        &oru("O-3", "SPO-3", &[("AMP1000", "1", "ng/mL")]),
    );
    assert!(
        !out.contains("MSA|"),
        "no ACK for a foreign certificate: {out:?}"
    );
    assert!(exited, "the daemon closed the connection: stderr {err}");
    assert!(
        err.contains("alert unknown ca"),
        "refused by a TLS alert: {err}"
    );
    assert!(d.specimen("SPO-3").is_none());
}

#[test]
fn the_daemon_refuses_to_start_with_a_readable_tls_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    std::fs::set_permissions(&p.server_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_config(dir.path(), &tls_analyzer("ia", &p));
    let (code, stderr) = run_expecting_refusal(dir.path());
    assert_ne!(code, Some(0), "must not start: {stderr}");
    assert!(
        stderr.contains(&p.server_key.display().to_string()),
        "the refusal names the key file: {stderr}"
    );
    assert!(stderr.contains("readable by group or others"), "{stderr}");
    assert!(
        !dir.path().join("store.runtime.json").exists(),
        "never became ready"
    );
    // With 0600 it starts.
    std::fs::set_permissions(&p.server_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let d = Daemon::start(dir.path());
    assert_eq!(d.get("/healthz", None).0, 200);
}

/// An analyzer's client certificate is bound to that analyzer (`tls.client_name`, matched
/// against the certificate's SAN): a certificate of the same CA issued to another analyzer is
/// refused on that listener and counted; the right one still gets AA.
#[test]
fn a_certificate_of_the_same_ca_for_another_analyzer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lab_ca = ca("custodian test laboratory CA");
    let (server_cert, server_key) = leaf(
        &lab_ca,
        "custodian",
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let files = |name: &str, (cert, key): (String, String)| -> (PathBuf, PathBuf) {
        let c = dir.path().join(format!("{name}.pem"));
        let k = dir.path().join(format!("{name}.key"));
        std::fs::write(&c, cert).unwrap();
        write_key(&k, &key);
        (c, k)
    };
    let (sc, sk) = files("server", (server_cert, server_key));
    let chem1 = files(
        "chem-1",
        leaf(
            &lab_ca,
            "chem-1",
            &["chem-1.lab.example"],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    );
    let chem2 = files(
        "chem-2",
        leaf(
            &lab_ca,
            "chem-2",
            &["chem-2.lab.example"],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    );
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, lab_ca.pem()).unwrap();
    let p = Pki {
        ca: ca_path.clone(),
        server_cert: sc.clone(),
        server_key: sk.clone(),
        client_cert: chem1.0.clone(),
        client_key: chem1.1.clone(),
        rogue_cert: chem2.0.clone(),
        rogue_key: chem2.1.clone(),
    };
    let analyzer = tls_analyzer("chem1", &p).replacen(
        &format!("client_ca = \"{}\"\n", ca_path.display()),
        &format!(
            "client_ca = \"{}\"\nclient_name = \"chem-1.lab.example\"\n",
            ca_path.display()
        ),
        1,
    );
    assert!(analyzer.contains("client_name"));
    write_config(dir.path(), &analyzer);
    let d = Daemon::start(dir.path());
    let a = d.addr("chem1");

    let good = client_config(&p, Some((&chem1.0, &chem1.1)));
    let ack = tls_exchange(
        a,
        good.clone(),
        &oru("N-1", "SPN-1", &[("THC50", "3", "ng/mL")]),
    )
    .expect("chem-1's own certificate");
    assert_eq!(ack_code(&ack), "AA", "{ack}");

    let before = tls_refusals(&d, "chem1");
    let other = client_config(&p, Some((&chem2.0, &chem2.1)));
    let err = tls_exchange(a, other, &oru("N-2", "SPN-2", &[("THC50", "4", "ng/mL")]))
        .expect_err("chem-2's certificate must be refused on chem-1's listener");
    eprintln!("refused: {err}");
    wait_until("the refusal counted", Duration::from_secs(10), || {
        tls_refusals(&d, "chem1") > before
    });
    assert!(d.specimen("SPN-2").is_none(), "nothing of it is stored");
    let ack = tls_exchange(a, good, &oru("N-3", "SPN-1", &[("COC300", "5", "ng/mL")])).unwrap();
    assert_eq!(ack_code(&ack), "AA", "{ack}");
}

/// Plain MLLP on an address other than loopback is refused by check-config (and so by run)
/// unless `allow_plaintext = true` says so.
#[test]
fn plain_mllp_off_loopback_needs_allow_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let open = analyzer("lab").replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
    write_config(dir.path(), &open);
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(dir.path().join("custodian.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("analyzer[0].allow_plaintext"), "{text}");
    let (code, err) = run_expecting_refusal(dir.path());
    assert_ne!(code, Some(0));
    assert!(err.contains("allow_plaintext"), "{err}");

    let allowed = open.replacen(
        "listen = \"0.0.0.0:0\"\n",
        "listen = \"0.0.0.0:0\"\nallow_plaintext = true\n",
        1,
    );
    write_config(dir.path(), &allowed);
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(dir.path().join("custodian.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
