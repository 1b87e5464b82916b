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
[analyzer.mapping.runs]
kind = "initial"
qc_sample_prefixes = ["QC-"]
auto_accept = true
acceptable = { field = "OBX-13.1", acceptable = ["Y"] }
qc = [
  { code = "THC50", sample = "QC-NEG", level = "negative", expect = "below", value = 50 },
  { code = "THC50", sample = "QC-HIGH", level = "125% of cutoff", expect = "at_least", value = 50 },
  { code = "COC300", sample = "QC-NEG", level = "negative", expect = "below", value = 300 },
  { code = "COC300", sample = "QC-HIGH", level = "125% of cutoff", expect = "at_least", value = 300 },
  { code = "OPI2000", sample = "QC-NEG", level = "negative", expect = "below", value = 2000 },
  { code = "OPI2000", sample = "QC-HIGH", level = "125% of cutoff", expect = "at_least", value = 2000 },
  { code = "AMP1000", sample = "QC-NEG", level = "negative", expect = "below", value = 1000 },
  { code = "AMP1000", sample = "QC-HIGH", level = "125% of cutoff", expect = "at_least", value = 1000 },
  { code = "PCP25", sample = "QC-NEG", level = "negative", expect = "below", value = 25 },
  { code = "PCP25", sample = "QC-HIGH", level = "125% of cutoff", expect = "at_least", value = 25 },
  { code = "BZEC", sample = "QC-NEG", level = "negative", expect = "below", value = 150 },
  { code = "BZEC", sample = "QC-HIGH", level = "125% of cutoff", expect = "at_least", value = 150 },
  { code = "THCAC", sample = "QC-NEG", level = "negative", expect = "below", value = 15 },
  { code = "THCAC", sample = "QC-HIGH", level = "125% of cutoff", expect = "at_least", value = 15 },
  { code = "OXYCC", sample = "QC-NEG", level = "negative", expect = "below", value = 100 },
  { code = "OXYCC", sample = "QC-HIGH", level = "125% of cutoff", expect = "at_least", value = 100 },
  { code = "CREA", sample = "QC-NEG", level = "creatinine 10", expect = "within", value = 10, tolerance_percent = 20 },
  { code = "CREA", sample = "QC-HIGH", level = "creatinine 23", expect = "within", value = 23, tolerance_percent = 10 },
  { code = "SG", sample = "QC-NEG", level = "1.0150", expect = "within", value = 1.0150, tolerance_percent = 0.02 },
  { code = "PH", sample = "QC-NEG", level = "pH 7", expect = "within", value = 7, tolerance_percent = 5 },
  { code = "NIT", sample = "QC-NEG", level = "negative", expect = "below", value = 200 },
  { code = "NIT", sample = "QC-HIGH", level = "500 mcg/mL", expect = "within", value = 500, tolerance_percent = 20 },
]
"#;

/// OBX lines as (code, value, unit).
pub type Obx = Vec<(&'static str, &'static str, &'static str)>;
/// OBX lines as owned (code, value, unit).
pub type OwnedObx = Vec<(String, String, String)>;

/// The QC samples of [`LAB_MAPPING`] with a passing value for every test code: a run of the
/// test analyzer closes (and, without confirmations, is accepted automatically) once both
/// arrived after its specimens.
pub fn lab_qc_set() -> Vec<(&'static str, Obx)> {
    vec![
        (
            "QC-NEG",
            vec![
                ("THC50", "0", "ng/mL"),
                ("COC300", "0", "ng/mL"),
                ("OPI2000", "0", "ng/mL"),
                ("AMP1000", "0", "ng/mL"),
                ("PCP25", "0", "ng/mL"),
                ("CREA", "10.1", "mg/dL"),
                ("SG", "1.0150", ""),
                ("PH", "7.0", "pH"),
                ("NIT", "0", "mcg/mL"),
                ("BZEC", "0", "ng/mL"),
                ("THCAC", "0", "ng/mL"),
                ("OXYCC", "0", "ng/mL"),
            ],
        ),
        (
            "QC-HIGH",
            vec![
                ("THC50", "62", "ng/mL"),
                ("COC300", "375", "ng/mL"),
                ("OPI2000", "2500", "ng/mL"),
                ("AMP1000", "1250", "ng/mL"),
                ("PCP25", "31", "ng/mL"),
                ("CREA", "23.4", "mg/dL"),
                ("NIT", "505", "mcg/mL"),
                ("BZEC", "190", "ng/mL"),
                ("THCAC", "19", "ng/mL"),
                ("OXYCC", "125", "ng/mL"),
            ],
        ),
    ]
}

/// Sends the closing QC set of the test analyzer `analyzer` ([`lab_qc_set`]), each message
/// answered AA: the analyzer's current run closes and its QC is evaluated.
pub fn close_run(d: &Daemon, analyzer: &str) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    for (sample, obx) in lab_qc_set() {
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ack = send(d.addr(analyzer), &oru(&format!("QCSET-{n}"), sample, &obx)).unwrap();
        assert_eq!(ack_code(&ack), "AA", "QC {sample} to {analyzer}: {ack}");
    }
}

/// A certifying scientist accepts every run waiting for acceptance (their QC passed).
pub fn accept_pending_runs(d: &Daemon) {
    let (s, body) = d.get("/api/runs?state=pending", Some(TOKEN));
    assert_eq!(s, 200, "{body}");
    let runs: serde_json::Value = serde_json::from_str(&body).unwrap();
    for r in runs.as_array().unwrap() {
        let key = r["key"].as_str().unwrap();
        let r = custodian::admin::client::post(
            d.endpoint(),
            &format!("/api/runs/{}/accept", url_encode(key)),
            Some(TOKEN),
            &serde_json::json!({"reason": "QC reviewed"}),
        )
        .unwrap();
        assert_eq!(r.status, 200, "accept {key}: {}", r.body);
    }
}

/// Percent-encodes a path segment (run keys carry `:`).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

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

/// Creates the report-signing key of the configuration at `config` (`custodian keys generate`).
pub fn generate_key(config: &Path) {
    let out = std::process::Command::new(bin())
        .args(["keys", "generate", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
            if let Ok(t) = std::fs::read_to_string(&runtime)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&t)
                && v["pid"].as_u64() == Some(pid as u64)
            {
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
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "custodian exited during start ({status}); log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "custodian not ready in 30 s; log:\n{}",
                self.log()
            );
            // Short: the store economy benchmark times starts through this wait.
            std::thread::sleep(Duration::from_millis(2));
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

    /// Starts the daemon again after [`Daemon::term`] (no kill: a clean restart).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the daemon still runs");
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
        // Confirmations carry the instrument's acceptability flag (OBX-13 "Y").
        let flag = if code.ends_with('C') && *code != "NIT" {
            "||Y"
        } else {
            ""
        };
        m.push_str(&format!(
            "OBX|{}|NM|{code}^{code}^L||{value}|{unit}|||||F{flag}\r",
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

// ---- QC of the example configuration's analyzers (config/custodian.toml) -------------------

/// An ORU^R01 for a control or calibrator of the example configuration: SPM-11 names its role
/// (`Q` control, `C` calibrator); `run` goes to OBR-21.1 (the example's run id field).
pub fn oru_qc(
    control_id: &str,
    sample: &str,
    role: &str,
    run: Option<&str>,
    obx: &[(&str, &str, &str)],
) -> Vec<u8> {
    let mut m = format!(
        "MSH|^~\\&|ANALYZER|LAB|CUSTODIAN|LAB|20261123101500||ORU^R01^ORU_R01|{control_id}|P|2.5.1\rPID|1\rOBR|1||{sample}^LAB|DAT|||||||||||||||||{}\rSPM|1||||||||||{role}\r",
        run.unwrap_or("")
    );
    for (i, (code, value, unit)) in obx.iter().enumerate() {
        m.push_str(&format!(
            "OBX|{}|NM|{code}^{code}^L||{value}|{unit}|||||F\r",
            i + 1
        ));
    }
    m.into_bytes()
}

/// An ORU^R01 for `specimen` in run `run` (OBR-21.1), confirmations flagged acceptable.
pub fn oru_in_run(
    control_id: &str,
    specimen: &str,
    run: &str,
    obx: &[(&str, &str, &str)],
) -> Vec<u8> {
    let text = String::from_utf8(oru(control_id, specimen, obx)).unwrap();
    text.replacen(
        &format!("{specimen}^LAB|DAT||||||||||||||||A\r"),
        &format!("{specimen}^LAB|DAT||||||||||||||||A|{run}\r"),
        1,
    )
    .into_bytes()
}

/// The example configuration's QC set for `analyzer`, every value passing: (sample, role
/// `Q`/`C`, OBX triples).
pub fn example_qc_set(analyzer: &str) -> Vec<(&'static str, &'static str, OwnedObx)> {
    let ng = |list: &[(&str, &str)]| -> Vec<(String, String, String)> {
        list.iter()
            .map(|(c, v)| (c.to_string(), v.to_string(), "ng/mL".to_string()))
            .collect()
    };
    match analyzer {
        "immunoassay-1" => {
            let cutoffs = [
                ("THC50", 50.0),
                ("COC300", 300.0),
                ("OPI2000", 2000.0),
                ("AMP1000", 1000.0),
                ("PCP25", 25.0),
                ("6AM10", 10.0),
                ("HYD300", 300.0),
                ("OXY100", 100.0),
                ("MDMA500", 500.0),
            ];
            let at = |f: f64| -> Vec<(String, String, String)> {
                cutoffs
                    .iter()
                    .map(|(c, cut)| (c.to_string(), format!("{}", cut * f), "ng/mL".into()))
                    .collect()
            };
            vec![
                ("CAL-CUT", "C", at(1.0)),
                ("QC-NEG", "Q", at(0.0)),
                ("QC-LOW", "Q", at(0.75)),
                ("QC-HIGH", "Q", at(1.25)),
            ]
        }
        "chemistry-1" => {
            let t = |list: &[(&str, &str, &str)]| -> Vec<(String, String, String)> {
                list.iter()
                    .map(|(c, v, u)| (c.to_string(), v.to_string(), u.to_string()))
                    .collect()
            };
            vec![
                (
                    "CAL-VAL",
                    "C",
                    t(&[("CREA", "2.0", "mg/dL"), ("SG", "1.0000", "")]),
                ),
                (
                    "QC-VAL-1",
                    "Q",
                    t(&[
                        ("CREA", "1.2", "mg/dL"),
                        ("SG", "1.0020", ""),
                        ("PH", "4.0", "pH"),
                        ("NIT", "0", "mcg/mL"),
                    ]),
                ),
                (
                    "QC-VAL-2",
                    "Q",
                    t(&[
                        ("CREA", "10.0", "mg/dL"),
                        ("SG", "1.0150", ""),
                        ("PH", "7.0", "pH"),
                        ("NIT", "0", "mcg/mL"),
                    ]),
                ),
                (
                    "QC-VAL-3",
                    "Q",
                    t(&[
                        ("CREA", "23.0", "mg/dL"),
                        ("PH", "11.0", "pH"),
                        ("NIT", "500", "mcg/mL"),
                    ]),
                ),
            ]
        }
        "gcms-1" => vec![
            (
                "CAL-CONF",
                "C",
                ng(&[
                    ("BZEC", "100"),
                    ("THCAC", "15"),
                    ("MORC", "2000"),
                    ("CODC", "2000"),
                    ("6AMC", "10"),
                    ("OXYC", "100"),
                ]),
            ),
            (
                "QC-NEG-C",
                "Q",
                ng(&[
                    ("BZEC", "0"),
                    ("THCAC", "0"),
                    ("MORC", "0"),
                    ("CODC", "0"),
                    ("6AMC", "0"),
                    ("OXYC", "0"),
                ]),
            ),
            (
                "QC-POS-C",
                "Q",
                ng(&[
                    ("BZEC", "125"),
                    ("THCAC", "18.75"),
                    ("MORC", "2500"),
                    ("CODC", "2500"),
                    ("6AMC", "12.5"),
                    ("OXYC", "125"),
                ]),
            ),
        ],
        other => panic!("no example QC set for {other}"),
    }
}

/// Sends the example configuration's closing QC set to `analyzer` (in `run` for run-id
/// analyzers), each answered AA.
pub fn close_example_run(d: &Daemon, analyzer: &str, run: Option<&str>) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    for (sample, role, obx) in example_qc_set(analyzer) {
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let obx: Vec<(&str, &str, &str)> = obx
            .iter()
            .map(|(c, v, u)| (c.as_str(), v.as_str(), u.as_str()))
            .collect();
        let msg = oru_qc(&format!("EXQC-{n}"), sample, role, run, &obx);
        let ack = send(d.addr(analyzer), &msg).unwrap();
        assert_eq!(
            ack_code(&ack),
            "AA",
            "QC {sample} to {analyzer}: {ack}\n{}",
            d.log()
        );
    }
}
