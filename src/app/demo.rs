//! `custodian demo`: a newcomer watches a whole day of the laboratory in a minute. It starts the
//! daemon on a temporary store with the example configuration, plays a simulated LIMS and four
//! simulated analyzers (three HL7 over MLLP, one ASTM with its host query) for five specimens (a
//! negative, a positive, a dilute, an adulterated and a rejected one), closes each analyzer's run
//! with its QC set (the screen and validity runs are accepted automatically, the confirmation run
//! by the demo certifying scientist), releases the results as the demo certifying scientist, and
//! receives the signed reports at a local MRO receiver (HTTPS, client certificate required),
//! printing each step and the final verdicts. Everything it creates lives in a temporary
//! directory.
//!
//! The admin listener serves the review console over TLS with a certificate the demo makes for
//! `localhost`; the demo prints its address and the user to sign in with. With `--keep` it
//! leaves two specimens (the positive and the adulterated one) in the review queue and keeps the
//! daemon and the MRO receiver running until it is interrupted, so that a newcomer can review
//! and release them in the console and see the MRO receive the signed reports.

use crate::admin::client;
use crate::app::daemon::{RuntimeInfo, runtime_file};
use crate::trust::signing::{self, KeyStore};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TOKEN: &str = "demo-token-change-me";
/// The example configuration's console user and password.
const USER: &str = "Demo Certifying Scientist";
const PASSWORD: &str = "demo-password-change-me";

fn step(n: u32, text: &str) {
    crate::outln!("\n[{n}] {text}");
}

/// Runs the demo with the example configuration at `config`; with `keep`, the daemon stays up.
pub fn run(config: &Path, keep: bool) -> ExitCode {
    match demo(config, keep) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndemo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A certificate for the console at `localhost` and 127.0.0.1 (self-signed): `(cert, key)`.
fn console_certificate(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(|e| e.to_string())?;
    let (cert, key) = (dir.join("admin.crt"), dir.join("admin.key"));
    std::fs::write(&cert, c.cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&key, c.signing_key.serialize_pem()).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    Ok((cert, key))
}

fn demo(example: &Path, keep: bool) -> Result<(), String> {
    crate::trust::tls::install_provider();
    // A directory of its own, never one left by an earlier demo (a reused process id would
    // otherwise hand this demo another day's store, released reports and all); kept afterwards.
    let dir = tempfile::Builder::new()
        .prefix(&format!("custodian-demo-{}-", std::process::id()))
        .tempdir()
        .map_err(|e| format!("cannot make the demo's directory: {e}"))?
        .keep();
    crate::outln!("custodian demo — everything lives in {}", dir.display());

    step(
        1,
        "Certificates for a demo MRO (its server) and the laboratory (its client)",
    );
    let pki = Pki::create(&dir)?;
    crate::outln!(
        "    MRO CA, MRO server certificate for 127.0.0.1, laboratory client certificate"
    );

    step(2, "A report-signing key (Ed25519) for the laboratory");
    let keys = KeyStore::new(dir.join("keys"));
    let kid = keys.generate().map_err(|e| e.to_string())?;
    crate::outln!("    key id {kid}");

    step(
        3,
        "A local MRO receiver (HTTPS; refuses clients without the lab's certificate)",
    );
    let jwks = keys.public_set().map_err(|e| e.to_string())?;
    let (port, reports) = receiver(&pki, jwks)?;
    crate::outln!("    listening on https://127.0.0.1:{port}/reports");

    step(
        4,
        "The daemon, on the example configuration with a temporary store",
    );
    let tls = console_certificate(&dir)?;
    let cfg = write_config(example, &dir, &pki, port, &tls)?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("daemon.log")).map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("CUSTODIAN_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("cannot start the daemon: {e}"))?;
    let pid = child.id();
    let mut guard = ChildGuard(Some(child));
    let rt = wait_ready(&dir.join("store"), pid)?;
    let admin = rt.admin_endpoint();
    let console = format!("https://localhost:{}/console/", rt.admin.port());
    crate::outln!("    admin API and review console {console} (TLS) ; analyzers:");
    for (name, addr) in &rt.analyzers {
        crate::outln!("      {name:<14} MLLP {addr}");
    }

    let specimens = [
        ("DEMO-NEG-001", "a negative", true),
        ("DEMO-POS-002", "a cocaine positive", true),
        ("DEMO-DIL-003", "a dilute negative", true),
        ("DEMO-ADU-004", "an adulterated specimen (nitrite)", true),
        (
            "DEMO-REJ-005",
            "a specimen whose bottle ID does not match the CCF",
            false,
        ),
    ];
    step(
        5,
        "The LIMS drops five accession documents (CCF Copy 1) into the spool",
    );
    let incoming = dir.join("spool/incoming");
    for (id, what, matches) in &specimens {
        let tmp = incoming.join(format!(".{id}.tmp"));
        std::fs::write(&tmp, accession_xml(id, *matches)).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, incoming.join(format!("{id}.xml"))).map_err(|e| e.to_string())?;
        crate::outln!("    {id}: {what}");
    }
    wait_for(Duration::from_secs(20), "the accessions", || {
        specimens
            .iter()
            .all(|(id, _, _)| dir.join("spool/done").join(format!("{id}.xml")).exists())
    })?;

    step(
        6,
        "The analyzers send their results over MLLP and ASTM; every ACK comes after the durable commit",
    );
    let screen_zero = [
        ("THC50", "2"),
        ("COC300", "0"),
        ("OPI2000", "0"),
        ("AMP1000", "0"),
        ("PCP25", "0"),
        ("6AM10", "0"),
        ("HYD300", "0"),
        ("OXY100", "0"),
        ("MDMA500", "0"),
    ];
    let mut n = 0;
    let mut send_in = |analyzer: &str,
                       id: &str,
                       run: Option<&str>,
                       role: Option<&str>,
                       obx: &[(&str, &str, &str)]|
     -> Result<(), String> {
        n += 1;
        let addr = rt
            .analyzers
            .get(analyzer)
            .ok_or(format!("no analyzer {analyzer}"))?;
        let ack = send_oru(*addr, &format!("DEMO{n:04}"), id, run, role, obx)?;
        let code = ack
            .split('\r')
            .find(|s| s.starts_with("MSA|"))
            .and_then(|s| s.split('|').nth(1))
            .unwrap_or("?")
            .to_string();
        crate::outln!(
            "    {analyzer:<14} {id}  {} result(s)  → ACK {code}",
            obx.len()
        );
        if code != "AA" {
            return Err(format!("expected AA, got {code}"));
        }
        Ok(())
    };
    let ng = |c: &'static str, v: &'static str| (c, v, "ng/mL");
    for id in ["DEMO-NEG-001", "DEMO-DIL-003", "DEMO-ADU-004"] {
        let obx: Vec<_> = screen_zero.iter().map(|(c, v)| ng(c, v)).collect();
        send_in("immunoassay-1", id, None, None, &obx)?;
    }
    send_in(
        "immunoassay-1",
        "DEMO-POS-002",
        None,
        None,
        &[
            ng("THC50", "2"),
            ng("COC300", "870"),
            ng("OPI2000", "0"),
            ng("AMP1000", "0"),
            ng("PCP25", "0"),
            ng("6AM10", "0"),
            ng("HYD300", "0"),
            ng("OXY100", "0"),
            ng("MDMA500", "0"),
        ],
    )?;
    let chem = |creat: &'static str, sg: &'static str, ph: &'static str, nit: &'static str| {
        vec![
            ("CREA", creat, "mg/dL"),
            ("SG", sg, ""),
            ("PH", ph, "pH"),
            ("NIT", nit, "mcg/mL"),
        ]
    };
    // The validity chemistry of DEMO-NEG-001 runs on an ASTM analyzer: it asks which tests to
    // run (host query), then sends them.
    astm_chemistry(&rt, "DEMO-NEG-001", &chem("118", "1.0180", "6.1", "0"))?;
    astm_query(&rt, "DEMO-REJ-005")?;
    send_in(
        "chemistry-1",
        "DEMO-POS-002",
        None,
        None,
        &chem("95", "1.0160", "5.8", "0"),
    )?;
    send_in(
        "chemistry-1",
        "DEMO-DIL-003",
        None,
        None,
        &chem("12.5", "1.0021", "6.4", "0"),
    )?;
    send_in(
        "chemistry-1",
        "DEMO-ADU-004",
        None,
        None,
        &chem("88", "1.0150", "6.0", "760"),
    )?;
    // Nitrite over 500 on the initial test: today's edition asks for the confirmatory test on
    // a second aliquot (40.89) before the specimen is adulterated.
    send_in(
        "chemistry-1",
        "DEMO-ADU-004",
        None,
        None,
        &[("NITC", "742", "mcg/mL")],
    )?;
    // The confirmation run carries its id (OBR-21) and each result the instrument's
    // acceptability flag (OBX-13 "Y": ion ratios, retention time, internal standard).
    send_in(
        "gcms-1",
        "DEMO-POS-002",
        Some(DEMO_GC_RUN),
        None,
        &[ng("BZEC", "412")],
    )?;

    step(
        7,
        "Each analyzer closes its run with its QC set (controls and calibrators: SPM-11 Q/C, ASTM O-12 Q)",
    );
    for (analyzer, run, set) in qc_sets() {
        for (sample, role, obx) in set {
            send_in(analyzer, sample, run, Some(role), &obx)?;
        }
    }
    // The ASTM analyzer's controls carry the action code Q (O-12).
    for (sample, action, results) in astm_qc_set() {
        astm_send(&rt, sample, action, &results)?;
    }
    let show_runs = |state: &str| -> Result<Vec<serde_json::Value>, String> {
        let runs = get_json(&admin, &format!("/api/runs?state={state}"))?;
        Ok(runs.as_array().cloned().unwrap_or_default())
    };
    for r in show_runs("accepted")? {
        crate::outln!(
            "    run {:<24} {:<12} QC {:<8} accepted automatically ({} specimens)",
            r["key"].as_str().unwrap_or("?"),
            r["kind"].as_str().unwrap_or("?"),
            r["qc"].as_str().unwrap_or("?"),
            r["specimens"]
        );
    }
    let pending = show_runs("pending")?;
    for r in &pending {
        crate::outln!(
            "    run {:<24} {:<12} QC {:<8} waits for a certifying scientist",
            r["key"].as_str().unwrap_or("?"),
            r["kind"].as_str().unwrap_or("?"),
            r["qc"].as_str().unwrap_or("?"),
        );
    }

    step(
        8,
        "The certifying scientist accepts the confirmation run (electronic signature; its QC passed)",
    );
    for r in &pending {
        let key = r["key"].as_str().unwrap_or_default();
        let accepted = post_json(
            &admin,
            &format!("/api/runs/{}/accept", url_segment(key)),
            &serde_json::json!({"reason": "calibrator and controls within +-20 %; ion ratios reviewed"}),
        )?;
        crate::outln!(
            "    run {key}: {} by \"Demo Certifying Scientist\"",
            accepted["state"].as_str().unwrap_or("?")
        );
    }

    step(9, "The review queue, as a certifying scientist sees it");
    let queue = get_json(&admin, "/api/review")?;
    let items = queue.as_array().cloned().unwrap_or_default();
    for it in &items {
        let v = &it["verdict"];
        crate::outln!(
            "    {}  results {}  dilute {}  positives {}",
            it["specimen_id"].as_str().unwrap_or("?"),
            v["results"],
            v["dilute"],
            v["positive_analytes"]
        );
    }
    if items.len() != specimens.len() {
        return Err(format!(
            "{} of {} specimens are ready for review (see {}/daemon.log)",
            items.len(),
            specimens.len(),
            dir.display()
        ));
    }

    step(
        10,
        "Released by \"Demo Certifying Scientist\" (negatives as one batch signature)",
    );
    let batch = serde_json::json!({"specimens": ["DEMO-NEG-001", "DEMO-DIL-003"]});
    post_json(&admin, "/api/release-batch", &batch)?;
    crate::outln!("    DEMO-NEG-001, DEMO-DIL-003: released as a batch of negatives");
    let (now, later): (&[&str], &[&str]) = if keep {
        (&["DEMO-REJ-005"], &["DEMO-POS-002", "DEMO-ADU-004"])
    } else {
        (&["DEMO-POS-002", "DEMO-ADU-004", "DEMO-REJ-005"], &[])
    };
    for id in now {
        post_json(
            &admin,
            &format!("/api/review/{id}/release"),
            &serde_json::json!({}),
        )?;
        crate::outln!("    {id}: released");
    }
    for id in later {
        crate::outln!("    {id}: left in the review queue for you to release in the console");
    }
    let expected = specimens.len() - later.len();

    step(
        11,
        "The MRO receives the signed reports (JWS verified with the lab's public key)",
    );
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        match reports.recv_timeout(left) {
            Ok(r) => got.push(r),
            Err(_) => {
                return Err(format!("only {} of {expected} reports arrived", got.len()));
            }
        }
    }
    got.sort_by(|a: &serde_json::Value, b| {
        a["specimen_id"].as_str().cmp(&b["specimen_id"].as_str())
    });
    crate::outln!(
        "\n    {:<14} {:<26} {:<7} positive analytes",
        "specimen",
        "results",
        "dilute"
    );
    for r in &got {
        crate::outln!(
            "    {:<14} {:<26} {:<7} {}",
            r["specimen_id"].as_str().unwrap_or("?"),
            r["results"].to_string(),
            r["dilute"].to_string(),
            r["positive_analytes"]
        );
    }

    if keep {
        step(
            12,
            "The daemon keeps running: review and release in the console",
        );
        crate::outln!("    open     {console}");
        crate::outln!("    sign in  user name \"{USER}\", password \"{PASSWORD}\"");
        crate::outln!(
            "    the certificate is the demo's own ({}): accept it in the browser",
            tls.0.display()
        );
        crate::outln!(
            "    daemon pid {pid}; its log is {}",
            dir.join("daemon.log").display()
        );
        crate::outln!("    press Ctrl-C to stop the daemon and the MRO receiver");
        // The daemon gets the terminal's Ctrl-C too (a clean shutdown); until then every
        // report the MRO receives is shown.
        let _keep_running = guard;
        while let Ok(r) = reports.recv() {
            crate::outln!(
                "    the MRO received the signed report of {}: {}",
                r["specimen_id"].as_str().unwrap_or("?"),
                r["results"]
            );
        }
        return Ok(());
    }
    crate::outln!(
        "\n    The review console was at {console} (user \"{USER}\", password \"{PASSWORD}\");\n    `custodian demo --keep` leaves the daemon running to click through it."
    );
    step(12, "Stopping the daemon (SIGTERM: settle, flush, exit 0)");
    if let Some(mut c) = guard.0.take() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let status = c.wait().map_err(|e| e.to_string())?;
        crate::outln!("    daemon exited with {status}");
    }
    crate::outln!(
        "\nDone. The store, the spool and the daemon's log are in {}",
        dir.display()
    );
    Ok(())
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

fn wait_ready(store: &Path, pid: u32) -> Result<RuntimeInfo, String> {
    let file = runtime_file(store);
    let mut found = None;
    wait_for(Duration::from_secs(30), "the daemon to be ready", || {
        found = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str::<RuntimeInfo>(&t).ok())
            .filter(|rt| rt.pid == pid);
        found.is_some()
    })?;
    found.ok_or_else(|| "no runtime file".into())
}

fn get_json(admin: &client::Endpoint, path: &str) -> Result<serde_json::Value, String> {
    let r = client::get(admin.clone(), path, Some(TOKEN)).map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("GET {path}: {} {}", r.status, r.body.trim()));
    }
    serde_json::from_str(&r.body).map_err(|e| e.to_string())
}

fn post_json(
    admin: &client::Endpoint,
    path: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let r = client::post(admin.clone(), path, Some(TOKEN), body).map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("POST {path}: {} {}", r.status, r.body.trim()));
    }
    serde_json::from_str(&r.body).map_err(|e| e.to_string())
}

/// The demo's confirmation run id (OBR-21.1 of gcms-1).
const DEMO_GC_RUN: &str = "GC-DEMO-1";

type QcSet = Vec<(
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str, &'static str)>,
)>;

/// The closing QC set of each analyzer of the example configuration, every value passing its
/// rule: (analyzer, run id, [(sample, SPM-11 role, OBX)]).
fn qc_sets() -> Vec<(&'static str, Option<&'static str>, QcSet)> {
    let screen = |v: [&'static str; 9]| -> Vec<(&'static str, &'static str, &'static str)> {
        [
            "THC50", "COC300", "OPI2000", "AMP1000", "PCP25", "6AM10", "HYD300", "OXY100",
            "MDMA500",
        ]
        .into_iter()
        .zip(v)
        .map(|(c, v)| (c, v, "ng/mL"))
        .collect()
    };
    vec![
        (
            "immunoassay-1",
            None,
            vec![
                (
                    "CAL-CUT",
                    "C",
                    screen(["50", "300", "2000", "1000", "25", "10", "300", "100", "500"]),
                ),
                ("QC-NEG", "Q", screen(["0"; 9])),
                (
                    "QC-LOW",
                    "Q",
                    screen([
                        "37.5", "225", "1500", "750", "18.75", "7.5", "225", "75", "375",
                    ]),
                ),
                (
                    "QC-HIGH",
                    "Q",
                    screen([
                        "62.5", "375", "2500", "1250", "31.25", "12.5", "375", "125", "625",
                    ]),
                ),
            ],
        ),
        (
            "chemistry-1",
            None,
            vec![
                (
                    "CAL-VAL",
                    "C",
                    vec![("CREA", "2.0", "mg/dL"), ("SG", "1.0000", "")],
                ),
                (
                    "QC-VAL-1",
                    "Q",
                    vec![
                        ("CREA", "1.2", "mg/dL"),
                        ("SG", "1.0020", ""),
                        ("PH", "4.0", "pH"),
                        ("NIT", "0", "mcg/mL"),
                        ("NITC", "0", "mcg/mL"),
                    ],
                ),
                (
                    "QC-VAL-2",
                    "Q",
                    vec![
                        ("CREA", "10.0", "mg/dL"),
                        ("SG", "1.0150", ""),
                        ("PH", "7.0", "pH"),
                        ("NIT", "0", "mcg/mL"),
                    ],
                ),
                (
                    "QC-VAL-3",
                    "Q",
                    vec![
                        ("CREA", "23.0", "mg/dL"),
                        ("PH", "11.0", "pH"),
                        ("NIT", "500", "mcg/mL"),
                        ("NITC", "497", "mcg/mL"),
                    ],
                ),
            ],
        ),
        (
            "gcms-1",
            Some(DEMO_GC_RUN),
            vec![
                ("CAL-CONF", "C", vec![("BZEC", "98.6", "ng/mL")]),
                ("QC-NEG-C", "Q", vec![("BZEC", "0", "ng/mL")]),
                ("QC-POS-C", "Q", vec![("BZEC", "121.4", "ng/mL")]),
            ],
        ),
    ]
}

/// Percent-encodes a path segment (run keys carry `:`).
fn url_segment(s: &str) -> String {
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

/// The demo's ASTM chemistry analyzer.
const ASTM_ANALYZER: &str = "chemistry-astm-1";

/// Asks the ASTM analyzer's host query for `id` and prints the answer: the tests ordered, or
/// "no information".
fn astm_query(rt: &RuntimeInfo, id: &str) -> Result<Vec<String>, String> {
    let addr = *rt
        .analyzers
        .get(ASTM_ANALYZER)
        .ok_or(format!("no analyzer {ASTM_ANALYZER}"))?;
    let records =
        format!("H|\\^&|||demo-chem|||||||P|1|20261123101500\rQ|1|^{id}||^^^ALL||||||||O\rL|1|N\r");
    let answer =
        astm_exchange(addr, records.as_bytes(), true)?.ok_or("no answer to the host query")?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let tests: Vec<String> = text
        .split('\r')
        .find(|r| r.starts_with("O|"))
        .and_then(|o| o.split('|').nth(4))
        .map(|t| {
            t.split('\\')
                .map(|c| c.trim_start_matches('^').to_string())
                .collect()
        })
        .unwrap_or_default();
    if tests.is_empty() {
        crate::outln!("    {ASTM_ANALYZER:<14} {id}  host query → no information (L|1|I)");
    } else {
        crate::outln!(
            "    {ASTM_ANALYZER:<14} {id}  host query → order {}",
            tests.join(" ")
        );
    }
    Ok(tests)
}

/// The ASTM chemistry analyzer: host query for `id`, then its results (only the tests
/// ordered), each frame acknowledged, the last only after the durable commit.
fn astm_chemistry(
    rt: &RuntimeInfo,
    id: &str,
    results: &[(&str, &str, &str)],
) -> Result<(), String> {
    let ordered = astm_query(rt, id)?;
    let results: Vec<_> = results
        .iter()
        .filter(|(c, _, _)| ordered.iter().any(|o| o == c))
        .copied()
        .collect();
    astm_send(rt, id, "", &results)
}

/// One ASTM result message of the chemistry analyzer: an order for `id` with the action code
/// `action` (O-12: "Q" for a control, empty for a specimen or a calibration), its results.
fn astm_send(
    rt: &RuntimeInfo,
    id: &str,
    action: &str,
    results: &[(&str, &str, &str)],
) -> Result<(), String> {
    let addr = *rt
        .analyzers
        .get(ASTM_ANALYZER)
        .ok_or(format!("no analyzer {ASTM_ANALYZER}"))?;
    let mut text = format!(
        "H|\\^&|||demo-chem|||||||P|1|20261123102000\rP|1\rO|1|{id}||{}|R||||||{action}\r",
        results
            .iter()
            .map(|(c, _, _)| format!("^^^{c}"))
            .collect::<Vec<_>>()
            .join("\\")
    );
    for (n, (code, value, unit)) in results.iter().enumerate() {
        text.push_str(&format!("R|{}|^^^{code}|{value}|{unit}||N||F\r", n + 1));
    }
    text.push_str("L|1|N\r");
    astm_exchange(addr, text.as_bytes(), false)?;
    crate::outln!(
        "    {ASTM_ANALYZER:<14} {id}  {} result(s)  → every frame ACK (ASTM E1381)",
        results.len()
    );
    Ok(())
}

/// The closing QC set of the ASTM chemistry analyzer, every value passing its rule: (sample,
/// O-12 action code, results). Its calibration is recognised by its sample ID (CAL-).
fn astm_qc_set() -> QcSet {
    vec![
        (
            "CAL-VAL",
            "",
            vec![("CREA", "2.0", "mg/dL"), ("SG", "1.0000", "")],
        ),
        (
            "QC-VAL-1",
            "Q",
            vec![
                ("CREA", "1.2", "mg/dL"),
                ("SG", "1.0020", ""),
                ("PH", "4.0", "pH"),
                ("NIT", "0", "mcg/mL"),
            ],
        ),
        (
            "QC-VAL-2",
            "Q",
            vec![
                ("CREA", "10.0", "mg/dL"),
                ("SG", "1.0150", ""),
                ("PH", "7.0", "pH"),
                ("NIT", "0", "mcg/mL"),
            ],
        ),
        (
            "QC-VAL-3",
            "Q",
            vec![
                ("CREA", "23.0", "mg/dL"),
                ("PH", "11.0", "pH"),
                ("NIT", "500", "mcg/mL"),
            ],
        ),
    ]
}

/// Sends one ASTM message as an analyzer (ENQ, frames, EOT; every reply must be ACK) and, when
/// `answer`, receives the host's message that follows.
fn astm_exchange(
    addr: SocketAddr,
    message: &[u8],
    answer: bool,
) -> Result<Option<Vec<u8>>, String> {
    use crate::codec::astm::frame::{ACK, ENQ, EOT, Event, Link, frames_for};
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let reply = |s: &mut TcpStream| -> Result<u8, String> {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).map_err(|e| e.to_string())?;
        Ok(b[0])
    };
    s.write_all(&[ENQ]).map_err(|e| e.to_string())?;
    if reply(&mut s)? != ACK {
        return Err("ENQ not acknowledged".into());
    }
    for f in frames_for(message) {
        s.write_all(&f).map_err(|e| e.to_string())?;
        if reply(&mut s)? != ACK {
            return Err("ASTM frame not acknowledged".into());
        }
    }
    s.write_all(&[EOT]).map_err(|e| e.to_string())?;
    if !answer {
        return Ok(None);
    }
    // The host's answer, received with the same link state machine the daemon uses.
    let mut link = Link::new(1 << 16);
    let start = Instant::now();
    let mut got = None;
    let mut buf = [0u8; 4096];
    while got.is_none() || !link.is_idle() {
        let now = start.elapsed().as_millis() as u64;
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        link.receive(&buf[..n], now);
        while let Some(ev) = link.next_event() {
            if let Event::Messages(mut m) = ev {
                got = m.pop();
                link.settle(true, now);
            }
        }
        s.write_all(&link.take_transmit())
            .map_err(|e| e.to_string())?;
    }
    Ok(got)
}

/// One ORU^R01: a specimen's results (bottle A), or with `role` a control's or calibrator's
/// (SPM-11); `run` in OBR-21.1; confirmations flagged acceptable in OBX-13.1.
fn send_oru(
    addr: SocketAddr,
    control_id: &str,
    specimen: &str,
    run: Option<&str>,
    role: Option<&str>,
    obx: &[(&str, &str, &str)],
) -> Result<String, String> {
    let run = run.map(|r| format!("|{r}")).unwrap_or_default();
    let mut m = format!(
        "MSH|^~\\&|DEMO|LAB|CUSTODIAN|LAB|20261123101500||ORU^R01^ORU_R01|{control_id}|P|2.5.1\rPID|1\rOBR|1||{specimen}^LAB|DAT||||||||||||||||A{run}\r"
    );
    if let Some(role) = role {
        m.push_str(&format!("SPM|1|{specimen}|||||||||{role}\r"));
    }
    for (i, (code, value, unit)) in obx.iter().enumerate() {
        let flag = if run.is_empty() || role.is_some() {
            ""
        } else {
            "||Y"
        };
        m.push_str(&format!(
            "OBX|{}|NM|{code}^{code}^L||{value}|{unit}|||||F{flag}\r",
            i + 1
        ));
    }
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut frame = vec![0x0b];
    frame.extend_from_slice(m.as_bytes());
    frame.extend_from_slice(&[0x1c, 0x0d]);
    s.write_all(&frame).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed without an ACK".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(2).position(|w| w == [0x1c, 0x0d]) {
            return Ok(String::from_utf8_lossy(&buf[1.min(end)..end]).into_owned());
        }
    }
}

fn accession_xml(id: &str, bottle_matches: bool) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<accession xmlns="urn:custodian:lims:1">
  <specimen-id>{id}</specimen-id>
  <employer><name>Demo Freight Lines</name><id>EMP-DEMO</id></employer>
  <mro><name>Dr. Demo Reviewer, MD</name><address>1 Demo Plaza, Springfield, ZZ 00000</address><directory-id>MRO-0042</directory-id></mro>
  <donor><employee-id>E-DEMO-{id}</employee-id></donor>
  <reason>random</reason>
  <collector><name>Casey Collector</name><phone>(555) 010-0000</phone></collector>
  <collection-date>2026-11-20</collection-date>
  <receipt-date>2026-11-21</receipt-date>
  <tests-requested><panel>dot</panel></tests-requested>
  <split-collected>true</split-collected>
  <observed>false</observed>
  <bottle-a><seal>intact</seal><volume-sufficient>true</volume-sufficient><leaked>false</leaked></bottle-a>
  <bottle-b><seal>intact</seal><volume-sufficient>true</volume-sufficient><leaked>false</leaked></bottle-b>
  <bottle-id-matches-ccf>{bottle_matches}</bottle-id-matches-ccf>
  <labels-swapped>false</labels-swapped>
  <split-opened-instead>false</split-opened-instead>
  <collector-name-and-signature>true</collector-name-and-signature>
  <collector-certification-signed>true</collector-certification-signed>
  <form>federal</form>
  <temperature-recorded>true</temperature-recorded>
  <ccf-image media-type="image/png">{DEMO_CCF_PNG}</ccf-image>
</accession>
"#
    )
}

/// The image of Copy 1 as received that the demo's LIMS sends with each accession (a small
/// placeholder PNG standing in for the laboratory's scan).
const DEMO_CCF_PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAHgAAAA8CAAAAACIxiF0AAAARElEQVR42u3SQQ0AMAzEsMIZpvHn0ZHodKrkEPAnVbE6EhgMBs/A539gV4PBYPAW+E60CjYXGAwGg8FgMBgMBoPjcKgHXvFQW69Uh+MAAAAASUVORK5CYII=";

/// Rewrites the example configuration for the demo's temporary directory: every listener on a
/// free port, the store, spool, keys and summaries inside `dir`, and the demo MRO in the
/// directory.
fn write_config(
    example: &Path,
    dir: &Path,
    pki: &Pki,
    port: u16,
    tls: &(PathBuf, PathBuf),
) -> Result<PathBuf, String> {
    let text =
        std::fs::read_to_string(example).map_err(|e| format!("{}: {e}", example.display()))?;
    let mut v: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", example.display()))?;
    let base = example.parent().unwrap_or(Path::new("."));
    let profiles = v
        .get("rules")
        .and_then(|r| r.get("profiles_dir"))
        .and_then(|p| p.as_str())
        .unwrap_or("profiles")
        .to_string();
    let profiles =
        std::fs::canonicalize(base.join(profiles)).map_err(|e| format!("profiles: {e}"))?;
    let set = |v: &mut toml::Table, section: &str, key: &str, value: toml::Value| {
        if let Some(t) = v.get_mut(section).and_then(|s| s.as_table_mut()) {
            t.insert(key.into(), value);
        }
    };
    let s = |p: PathBuf| toml::Value::String(p.display().to_string());
    set(&mut v, "rules", "profiles_dir", s(profiles));
    set(&mut v, "store", "path", s(dir.join("store")));
    set(&mut v, "lims", "spool_dir", s(dir.join("spool")));
    set(&mut v, "lims", "poll_interval_ms", toml::Value::Integer(50));
    set(&mut v, "signing", "keys_dir", s(dir.join("keys")));
    set(&mut v, "summaries", "dir", s(dir.join("summaries")));
    set(
        &mut v,
        "admin",
        "listen",
        toml::Value::String("127.0.0.1:0".into()),
    );
    let mut admin_tls = toml::Table::new();
    admin_tls.insert("cert".into(), s(tls.0.clone()));
    admin_tls.insert("key".into(), s(tls.1.clone()));
    set(&mut v, "admin", "tls", toml::Value::Table(admin_tls));
    for section in ["analyzer", "astm_analyzer"] {
        if let Some(list) = v.get_mut(section).and_then(|a| a.as_array_mut()) {
            for a in list {
                if let Some(t) = a.as_table_mut()
                    && t.contains_key("listen")
                {
                    t.insert("listen".into(), toml::Value::String("127.0.0.1:0".into()));
                }
            }
        }
    }
    let mut mro = toml::Table::new();
    mro.insert("id".into(), "MRO-0042".into());
    mro.insert("name".into(), "Dr. Demo Reviewer, MD".into());
    mro.insert(
        "address".into(),
        "1 Demo Plaza, Springfield, ZZ 00000".into(),
    );
    mro.insert(
        "endpoint".into(),
        format!("https://127.0.0.1:{port}/reports").into(),
    );
    mro.insert("ca".into(), s(pki.mro_ca.clone()));
    mro.insert("client_cert".into(), s(pki.lab_cert.clone()));
    mro.insert("client_key".into(), s(pki.lab_key.clone()));
    v.insert(
        "mro".into(),
        toml::Value::Array(vec![toml::Value::Table(mro)]),
    );
    let out = dir.join("custodian.toml");
    std::fs::write(&out, toml::to_string(&v).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

struct Pki {
    mro_ca: PathBuf,
    lab_cert: PathBuf,
    lab_key: PathBuf,
    server_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    server_key: Vec<u8>,
    lab_ca: rustls::pki_types::CertificateDer<'static>,
}

impl Pki {
    fn create(dir: &Path) -> Result<Pki, String> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let e = |e: rcgen::Error| e.to_string();
        let ca = |cn: &str| -> Result<(rcgen::Certificate, Issuer<'static, KeyPair>), String> {
            let key = KeyPair::generate().map_err(e)?;
            let mut p = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            let cert = p.self_signed(&key).map_err(e)?;
            Ok((cert, Issuer::new(p, key)))
        };
        let (mro_ca_cert, mro_ca) = ca("custodian demo MRO CA")?;
        let (lab_ca_cert, lab_ca) = ca("custodian demo laboratory CA")?;
        let server_key = KeyPair::generate().map_err(e)?;
        let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .map_err(e)?
            .signed_by(&server_key, &mro_ca)
            .map_err(e)?;
        let lab_key = KeyPair::generate().map_err(e)?;
        let lab = CertificateParams::new(vec!["laboratory.demo".to_string()])
            .map_err(e)?
            .signed_by(&lab_key, &lab_ca)
            .map_err(e)?;
        let pki_dir = dir.join("pki");
        std::fs::create_dir_all(&pki_dir).map_err(|e| e.to_string())?;
        let write = |name: &str, text: &str, private: bool| -> Result<PathBuf, String> {
            use std::os::unix::fs::PermissionsExt;
            let p = pki_dir.join(name);
            std::fs::write(&p, text).map_err(|e| e.to_string())?;
            if private {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| e.to_string())?;
            }
            Ok(p)
        };
        Ok(Pki {
            mro_ca: write("mro-ca.pem", &mro_ca_cert.pem(), false)?,
            lab_cert: write("lab-client.pem", &lab.pem(), false)?,
            lab_key: write("lab-client.key", &lab_key.serialize_pem(), true)?,
            server_chain: vec![server.der().clone()],
            server_key: server_key.serialize_der(),
            lab_ca: lab_ca_cert.der().clone(),
        })
    }
}

/// The demo MRO: HTTPS with a required client certificate; verifies each JWS against the
/// laboratory's public keys and hands the payload to the demo.
fn receiver(
    pki: &Pki,
    jwks: signing::JwkSet,
) -> Result<(u16, mpsc::Receiver<serde_json::Value>), String> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.lab_ca.clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            pki.server_chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone())),
        )
        .map_err(|e| e.to_string())?;
    let cfg = Arc::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(conn) = rustls::ServerConnection::new(cfg.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let Some(body) = read_request(&mut tls) else {
                continue;
            };
            let (status, answer) = match signing::verify(body.trim(), &jwks) {
                Ok(payload) => match serde_json::from_slice::<serde_json::Value>(&payload) {
                    Ok(v) => {
                        let _ = tx.send(v);
                        ("201 Created", "{\"received\":true}")
                    }
                    Err(_) => ("400 Bad Request", "{\"error\":\"payload is not JSON\"}"),
                },
                Err(_) => (
                    "400 Bad Request",
                    "{\"error\":\"signature does not verify\"}",
                ),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = tls.write_all(resp.as_bytes());
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    Ok((port, rx))
}

fn read_request(tls: &mut impl Read) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (start, len) = loop {
        let n = tls.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                })
                .unwrap_or(0);
            break (pos + 4, len);
        }
    };
    while buf.len() < start + len {
        let n = tls.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&buf[start..(start + len).min(buf.len())]).into_owned())
}
