//! Shared harness of the integration tests: writes a configuration into a temporary directory,
//! starts the real `custodian` binary on port 0 with a temporary store, finds the bound ports in
//! the runtime file, and speaks MLLP and HTTP to it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-token-scientist";
pub const VIEWER_TOKEN: &str = "test-token-viewer";
pub const OPERATOR_TOKEN: &str = "test-token-operator";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_custodian"))
}

fn sha256_hex(s: &str) -> String {
    custodian::admin::auth::hash_token(s)
}

/// The test analyzer mapping: every code of the 2001 panel plus validity, on OBR-3.1.
pub const LAB_MAPPING: &str = r#"
[analyzer.mapping]
specimen_id = "OBR-3.1"
processing_id = "P"
bottle = { field = "OBR-20.1", primary = ["A"], split = ["B"], default = "primary" }
[[analyzer.mapping.test]]
code = "THC50"
kind = "initial"
target = "marijuana"
unit = "ng/mL"
[[analyzer.mapping.test]]
code = "COC300"
kind = "initial"
target = "cocaine"
unit = "ng/mL"
[[analyzer.mapping.test]]
code = "OPI2000"
kind = "initial"
target = "opiates"
unit = "ng/mL"
[[analyzer.mapping.test]]
code = "AMP1000"
kind = "initial"
target = "amphetamines"
unit = "ng/mL"
[[analyzer.mapping.test]]
code = "PCP25"
kind = "initial"
target = "pcp"
unit = "ng/mL"
[[analyzer.mapping.test]]
code = "CREA"
kind = "validity"
target = "creatinine"
unit = "mg/dL"
[[analyzer.mapping.test]]
code = "SG"
kind = "validity"
target = "specific_gravity"
unit = ""
[[analyzer.mapping.test]]
code = "PH"
kind = "validity"
target = "ph"
unit = "pH"
[[analyzer.mapping.test]]
code = "NIT"
kind = "validity"
target = "nitrite"
unit = "mcg/mL"
[[analyzer.mapping.test]]
code = "BZEC"
kind = "confirmation"
target = "benzoylecgonine"
unit = "ng/mL"
[[analyzer.mapping.test]]
code = "THCAC"
kind = "confirmation"
target = "thca"
unit = "ng/mL"
[[analyzer.mapping.test]]
code = "OXYCC"
kind = "confirmation"
target = "oxycodone"
unit = "ng/mL"
"#;

/// Writes a configuration for a daemon living in `dir`; `extra` is appended verbatim.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let profiles = root().join("config/profiles");
    let text = format!(
        r#"
[laboratory]
name = "Test Laboratory"
address = "1 Test Way, Testville"
[rules]
default_profile = "part40-2001"
profiles_dir = "{profiles}"
[store]
path = "store"
[log]
level = "info"
format = "json"
[ingest]
read_timeout_secs = 30
commit_max_wait_us = 1000
[lims]
spool_dir = "spool"
poll_interval_ms = 50
[signing]
keys_dir = "keys"
[admin]
listen = "127.0.0.1:0"
[[admin.user]]
name = "Dr. Test Scientist"
role = "certifying_scientist"
token_sha256 = "{t1}"
[[admin.user]]
name = "Viewer"
role = "viewer"
token_sha256 = "{t2}"
[[admin.user]]
name = "Operator"
role = "operator"
token_sha256 = "{t3}"
{extra}
"#,
        profiles = profiles.display(),
        t1 = sha256_hex(TOKEN),
        t2 = sha256_hex(VIEWER_TOKEN),
        t3 = sha256_hex(OPERATOR_TOKEN),
    );
    let path = dir.join("custodian.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The console passwords of the test users (the scientist's, the viewer's, the operator's).
pub const PASSWORD: &str = "scientist-password-1";
pub const VIEWER_PASSWORD: &str = "viewer-password-22";
pub const OPERATOR_PASSWORD: &str = "operator-password-333";

/// Gives the test users of a written configuration console passwords (Argon2id) and, with
/// `tls`, serves the admin listener over TLS with a self-signed certificate for 127.0.0.1 and
/// localhost (`admin.crt`, `admin.key` in `dir`).
pub fn enable_console(config: &Path, tls: bool) {
    let mut t = std::fs::read_to_string(config).unwrap();
    for (token, password) in [
        (TOKEN, PASSWORD),
        (VIEWER_TOKEN, VIEWER_PASSWORD),
        (OPERATOR_TOKEN, OPERATOR_PASSWORD),
    ] {
        let line = format!("token_sha256 = \"{}\"", sha256_hex(token));
        let phc = custodian::admin::auth::hash_password(password).unwrap();
        t = t.replace(&line, &format!("{line}\npassword_argon2 = \"{phc}\""));
    }
    if tls {
        let dir = config.parent().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        std::fs::write(dir.join("admin.crt"), cert.cert.pem()).unwrap();
        let key = dir.join("admin.key");
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        t.push_str("\n[admin.tls]\ncert = \"admin.crt\"\nkey = \"admin.key\"\n");
    }
    std::fs::write(config, t).unwrap();
}

/// One analyzer named `name` on port 0 with the test mapping.
pub fn analyzer(name: &str) -> String {
    format!("[[analyzer]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\n{LAB_MAPPING}\n")
}

/// A running daemon.
pub struct Daemon {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub admin: SocketAddr,
    /// The admin listener's certificate when it speaks TLS.
    pub admin_tls_cert: Option<PathBuf>,
    pub analyzers: BTreeMap<String, SocketAddr>,
    starts: u32,
    /// The daemon's limit of open files (`ulimit -n`), if set.
    nofile: Option<u64>,
}

impl Daemon {
    /// Starts the daemon on the configuration in `dir` (see [`write_config`]).
    pub fn start(dir: &Path) -> Daemon {
        let mut d = Daemon {
            dir: dir.to_path_buf(),
            config: dir.join("custodian.toml"),
            child: None,
            admin: "127.0.0.1:1".parse().unwrap(),
            admin_tls_cert: None,
            analyzers: BTreeMap::new(),
            starts: 0,
            nofile: None,
        };
        d.spawn();
        d
    }

    /// Starts the daemon with at most `nofile` open file descriptors (`ulimit -n`).
    pub fn start_with_nofile(dir: &Path, nofile: u64) -> Daemon {
        let mut d = Daemon {
            dir: dir.to_path_buf(),
            config: dir.join("custodian.toml"),
            child: None,
            admin: "127.0.0.1:1".parse().unwrap(),
            admin_tls_cert: None,
            analyzers: BTreeMap::new(),
            starts: 0,
            nofile: Some(nofile),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap();
        let mut command = match self.nofile {
            None => Command::new(bin()),
            Some(n) => {
                // exec keeps the pid, so the runtime file names the daemon itself.
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg("ulimit -n \"$1\" && shift && exec \"$@\"")
                    .arg("sh")
                    .arg(n.to_string())
                    .arg(bin());
                c
            }
        };
        let child = command
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env_remove("CUSTODIAN_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start custodian");
        let pid = child.id();
        self.child = Some(child);
        let runtime = self.dir.join("store.runtime.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(t) = std::fs::read_to_string(&runtime) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) {
                    if v["pid"].as_u64() == Some(pid as u64) {
                        self.admin = v["admin"].as_str().unwrap().parse().unwrap();
                        self.admin_tls_cert = v["admin_tls_cert"].as_str().map(PathBuf::from);
                        self.analyzers = v["analyzers"]
                            .as_object()
                            .unwrap()
                            .iter()
                            .map(|(k, a)| (k.clone(), a.as_str().unwrap().parse().unwrap()))
                            .collect();
                        return;
                    }
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "custodian exited during start ({status}); log:\n{}",
                        self.log()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "custodian not ready in 30 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn addr(&self, analyzer: &str) -> SocketAddr {
        self.analyzers[analyzer]
    }

    /// SIGKILL, no chance to flush.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn term(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("custodian did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Where the admin API is (with its certificate when it speaks TLS).
    pub fn endpoint(&self) -> custodian::admin::client::Endpoint {
        custodian::admin::client::Endpoint {
            addr: self.admin,
            tls_cert: self.admin_tls_cert.clone(),
        }
    }

    /// GET on the admin API with a token.
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let r = custodian::admin::client::get(self.endpoint(), path, token).unwrap();
        (r.status, r.body)
    }

    /// The stored record of a specimen (None if unknown).
    pub fn specimen(&self, id: &str) -> Option<serde_json::Value> {
        let (status, body) = self.get(&format!("/api/specimens/{id}"), Some(TOKEN));
        match status {
            200 => Some(serde_json::from_str(&body).unwrap()),
            404 => None,
            s => panic!("GET specimen answered {s}: {body}"),
        }
    }

    /// Runs the CLI against this daemon's configuration.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("CUSTODIAN_TOKEN", TOKEN)
            .output()
            .unwrap()
    }

    /// Drops a LIMS document into the spool and waits until it is settled (done/ or rejected/).
    pub fn drop_lims(&self, name: &str, xml: &[u8]) -> Result<(), String> {
        let incoming = self.dir.join("spool/incoming");
        let tmp = incoming.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, xml).unwrap();
        std::fs::rename(&tmp, incoming.join(name)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.dir.join("spool/done").join(name).exists() {
                return Ok(());
            }
            let reason = self
                .dir
                .join("spool/rejected")
                .join(format!("{name}.reason"));
            if let Ok(r) = std::fs::read_to_string(&reason) {
                return Err(r);
            }
            assert!(
                Instant::now() < deadline,
                "LIMS document {name} not settled in 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An ORU^R01 for `specimen` with OBX (code, value, unit) triples; segments end with `\r`.
pub fn oru(control_id: &str, specimen: &str, obx: &[(&str, &str, &str)]) -> Vec<u8> {
    oru_bottle(control_id, specimen, "A", obx)
}

pub fn oru_bottle(
    control_id: &str,
    specimen: &str,
    bottle: &str,
    obx: &[(&str, &str, &str)],
) -> Vec<u8> {
    let mut m = format!(
        "MSH|^~\\&|ANALYZER|LAB|CUSTODIAN|LAB|20261123101500||ORU^R01^ORU_R01|{control_id}|P|2.5.1\rPID|1\rOBR|1||{specimen}^LAB|DAT||||||||||||||||{bottle}\r"
    );
    for (i, (code, value, unit)) in obx.iter().enumerate() {
        m.push_str(&format!(
            "OBX|{}|NM|{code}^{code}^L||{value}|{unit}|||||F\r",
            i + 1
        ));
    }
    m.into_bytes()
}

/// Sends one MLLP frame and reads the reply frame (None if the peer closed without one).
pub fn mllp_exchange(stream: &mut TcpStream, payload: &[u8]) -> Option<String> {
    let mut frame = vec![0x0b];
    frame.extend_from_slice(payload);
    frame.extend_from_slice(&[0x1c, 0x0d]);
    stream.write_all(&frame).ok()?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    loop {
        let n = stream.read(&mut byte).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
        if let Some(end) = buf.windows(2).position(|w| w == [0x1c, 0x0d]) {
            let start = buf
                .iter()
                .position(|&b| b == 0x0b)
                .map(|p| p + 1)
                .unwrap_or(0);
            return Some(String::from_utf8_lossy(&buf[start..end]).into_owned());
        }
    }
}

/// Connects and sends one message; returns the ACK text.
pub fn send(addr: SocketAddr, payload: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    mllp_exchange(&mut s, payload)
}

/// MSA-1 of an ACK.
pub fn ack_code(ack: &str) -> String {
    ack.split('\r')
        .find(|s| s.starts_with("MSA|"))
        .and_then(|s| s.split('|').nth(1))
        .unwrap_or("")
        .to_string()
}

/// MSA-2 of an ACK.
pub fn ack_control_id(ack: &str) -> String {
    ack.split('\r')
        .find(|s| s.starts_with("MSA|"))
        .and_then(|s| s.split('|').nth(2))
        .unwrap_or("")
        .to_string()
}

/// An accession document for `specimen` (the shipped example with its specimen ID replaced).
pub fn accession_xml(specimen: &str) -> Vec<u8> {
    let text =
        std::fs::read_to_string(root().join("tests/data/lims/accession-example.xml")).unwrap();
    let id = example_specimen_id(&text);
    text.replace(&id, specimen).into_bytes()
}

/// The specimen ID inside an example document.
pub fn example_specimen_id(text: &str) -> String {
    let start = text.find("<specimen-id>").expect("specimen-id") + "<specimen-id>".len();
    let end = text[start..].find("</specimen-id>").unwrap() + start;
    text[start..end].to_string()
}

/// The accession example for `specimen` with no correctable flaw (Step 4 signed).
pub fn accession_xml_clean(specimen: &str) -> Vec<u8> {
    String::from_utf8(accession_xml(specimen))
        .unwrap()
        .replace(
            "<collector-certification-signed>false</collector-certification-signed>",
            "<collector-certification-signed>true</collector-certification-signed>",
        )
        .into_bytes()
}

/// The shipped HL7 example mapping (today's panel keys) as an analyzer section.
pub fn example_analyzer(name: &str) -> String {
    let mapping =
        std::fs::read_to_string(root().join("tests/data/hl7/mapping-example.toml")).unwrap();
    format!("[[analyzer]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\n{mapping}\n")
}

/// Switches a written configuration to another default profile.
pub fn set_default_profile(config: &Path, profile: &str) {
    let t = std::fs::read_to_string(config).unwrap();
    std::fs::write(
        config,
        t.replace(
            "default_profile = \"part40-2001\"",
            &format!("default_profile = \"{profile}\""),
        ),
    )
    .unwrap();
}

// ---- Helpers for the durability, crash and TLS tests (appended) ------------------------------

/// The results a stored specimen record holds from analyzer message `control_id`, as
/// (target, value) pairs in stored order.
pub fn results_from(rec: &serde_json::Value, control_id: &str) -> Vec<(String, String)> {
    rec["results"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or(&[])
        .iter()
        .filter(|r| r["source"]["control_id"].as_str() == Some(control_id))
        .map(|r| {
            (
                r["target"].as_str().unwrap_or("").to_string(),
                json_text(&r["value"]),
            )
        })
        .collect()
}

/// A JSON scalar as text (decimals are stored as strings; tolerate numbers too).
pub fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The target the test mapping ([`LAB_MAPPING`]) gives an OBX code.
pub fn mapped_target(code: &str) -> &'static str {
    match code {
        "THC50" => "marijuana",
        "COC300" => "cocaine",
        "OPI2000" => "opiates",
        "AMP1000" => "amphetamines",
        "PCP25" => "pcp",
        "CREA" => "creatinine",
        "SG" => "specific_gravity",
        "PH" => "ph",
        "NIT" => "nitrite",
        "BZEC" => "benzoylecgonine",
        "THCAC" => "thca",
        "OXYCC" => "oxycodone",
        other => panic!("code {other} is not in the test mapping"),
    }
}

/// A message that is not an ORU^R01 (an ADT^A01) but carries OBR/OBX segments naming
/// `specimen`, so that attaching anything of it would be visible on the specimen.
pub fn not_oru(control_id: &str, specimen: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|ANALYZER|LAB|CUSTODIAN|LAB|20261123101500||ADT^A01^ADT_A01|{control_id}|P|2.5.1\rPID|1\rOBR|1||{specimen}^LAB|DAT||||||||||||||||A\rOBX|1|NM|THC50^THC50^L||77|ng/mL|||||F\r"
    )
    .into_bytes()
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Daemon {
    /// The pid of the running child, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// Runs `custodian run` on the configuration in `dir` expecting it to refuse to start: waits
/// (at most 30 s) for it to exit and returns its exit code and standard error.
pub fn run_expecting_refusal(dir: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(bin())
        .arg("run")
        .arg("--config")
        .arg(dir.join("custodian.toml"))
        .env_remove("CUSTODIAN_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start custodian");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("custodian kept running for 30 s although it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
