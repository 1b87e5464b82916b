//! Reload and shutdown of the running daemon:
//!
//! - SIGHUP with a valid changed configuration replaces the admin users and the analyzer
//!   mappings: a changed token works and the old one no longer does; a message with a code the
//!   mapping just gained is acknowledged AA (it was AE before) and its result stored.
//! - SIGHUP with a broken configuration (an unknown key) is refused as a whole: the daemon stays
//!   up, the running configuration keeps working, nothing of the broken file is applied, and the
//!   refusal is visible in the log and in `custodian_config_reloads_total{outcome="refused"}`.
//! - SIGTERM while a report is in flight to a slow MRO: the daemon exits 0 promptly (it does not
//!   wait for the MRO's answer) and after a restart the report is delivered exactly once.
//!   (SIGTERM with analyzers mid-send is covered by `ingest_crash.rs`.)

mod common;
#[path = "common/mro.rs"]
mod mro;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const NEW_TOKEN: &str = "test-token-scientist-rotated";

/// The mapping entry the reload adds: a second creatinine code.
const NEW_CODE: &str = "\n[[analyzer.mapping.test]]\ncode = \"CREA2\"\nkind = \"validity\"\ntarget = \"creatinine\"\nunit = \"mg/dL\"\n";

fn hash(token: &str) -> String {
    custodian::admin::auth::hash_token(token)
}

/// Replaces the configuration file atomically (the daemon never reads half a file).
fn rewrite_config(config: &Path, text: &str) {
    let tmp = config.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, config).unwrap();
}

/// The running configuration with the scientist's token rotated and the CREA2 code (with its QC
/// rule) added to the (last, only) analyzer's mapping.
fn changed_config(original: &str) -> String {
    let old = format!("token_sha256 = \"{}\"", hash(TOKEN));
    assert!(original.contains(&old));
    let text = original.replace(&old, &format!("token_sha256 = \"{}\"", hash(NEW_TOKEN)));
    // The new test code needs its QC rule too (a run testing it must be able to pass).
    let text = text.replacen(
        "qc = [\n",
        "qc = [\n  { code = \"CREA2\", sample = \"QC-NEG\", level = \"creatinine 10\", expect = \"within\", value = 10, tolerance_percent = 20 },\n",
        1,
    );
    format!("{text}{NEW_CODE}")
}

fn sighup(d: &Daemon) {
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(d.pid().unwrap().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// The value of one counter series in the daemon's `/metrics` (0 when absent).
fn counter(d: &Daemon, series: &str) -> f64 {
    let (status, text) = d.get("/metrics", None);
    assert_eq!(status, 200);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

const APPLIED: &str = "custodian_config_reloads_total{outcome=\"applied\"}";
const REFUSED: &str = "custodian_config_reloads_total{outcome=\"refused\"}";

fn status_with(d: &Daemon, token: &str) -> u16 {
    d.get("/api/review", Some(token)).0
}

/// A message whose only OBX uses the code the reload adds.
fn new_code_message(control_id: &str, specimen: &str) -> Vec<u8> {
    oru(control_id, specimen, &[("CREA2", "88", "mg/dL")])
}

/// Starts a daemon with one analyzer `lab` and an accessioned specimen `specimen`.
fn daemon_with_specimen(dir: &Path, specimen: &str) -> Daemon {
    write_config(dir, &analyzer("lab"));
    let d = Daemon::start(dir);
    d.drop_lims(
        &format!("acc-{specimen}.xml"),
        &accession_xml_clean(specimen),
    )
    .unwrap();
    d
}

#[test]
fn sighup_applies_a_valid_changed_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = daemon_with_specimen(dir.path(), "SPEC-H1");
    let lab = d.addr("lab");

    // Before: the old token works, the new one does not; the new code is not mapped (AE).
    assert_eq!(status_with(&d, TOKEN), 200);
    assert_eq!(status_with(&d, NEW_TOKEN), 401);
    let ack = send(lab, &new_code_message("H1-1", "SPEC-H1")).unwrap();
    assert_eq!(ack_code(&ack), "AE", "{ack}");
    assert!(results_from(&d.specimen("SPEC-H1").unwrap(), "H1-1").is_empty());

    let original = std::fs::read_to_string(&d.config).unwrap();
    rewrite_config(&d.config, &changed_config(&original));
    sighup(&d);
    wait_until("the reload to be applied", Duration::from_secs(20), || {
        counter(&d, APPLIED) >= 1.0
    });
    assert_eq!(counter(&d, APPLIED), 1.0);
    assert_eq!(counter(&d, REFUSED), 0.0);
    assert!(d.is_running());

    // After: the rotated token works with the same role, the old one is refused.
    assert_eq!(status_with(&d, NEW_TOKEN), 200);
    assert_eq!(status_with(&d, TOKEN), 401);
    assert_eq!(
        status_with(&d, VIEWER_TOKEN),
        200,
        "unchanged users keep working"
    );
    // The analyzer sends the refused message again: now AA, and the result is stored.
    let ack = send(lab, &new_code_message("H1-1", "SPEC-H1")).unwrap();
    assert_eq!(ack_code(&ack), "AA", "{ack}");
    assert_eq!(ack_control_id(&ack), "H1-1");
    let rec = d
        .get("/api/specimens/SPEC-H1", Some(NEW_TOKEN))
        .1
        .parse::<serde_json::Value>()
        .unwrap();
    assert_eq!(
        results_from(&rec, "H1-1"),
        vec![("creatinine".to_string(), "88".to_string())]
    );
    // The codes the mapping had before still work on the same listener.
    let ack = send(lab, &oru("H1-2", "SPEC-H1", &[("PH", "6.1", "pH")])).unwrap();
    assert_eq!(ack_code(&ack), "AA", "{ack}");
    assert!(
        d.log().contains("configuration reloaded"),
        "no reload line in the log:\n{}",
        d.log()
    );
    assert_eq!(d.term(), Some(0));
}

#[test]
fn sighup_with_a_broken_configuration_is_refused_and_the_running_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = daemon_with_specimen(dir.path(), "SPEC-H2");
    let lab = d.addr("lab");
    let original = std::fs::read_to_string(&d.config).unwrap();

    // Everything the valid change would do, plus one unknown key: nothing of it may apply.
    let changed = changed_config(&original);
    let broken = changed.replacen("[ingest]\n", "[ingest]\ncommit_max_wiat_us = 500\n", 1);
    assert_ne!(broken, changed);
    rewrite_config(&d.config, &broken);
    sighup(&d);
    wait_until("the reload to be refused", Duration::from_secs(20), || {
        counter(&d, REFUSED) >= 1.0
    });
    assert_eq!(counter(&d, REFUSED), 1.0);
    assert_eq!(counter(&d, APPLIED), 0.0);

    // The daemon is up and keeps the running configuration.
    assert!(d.is_running());
    assert_eq!(d.get("/healthz", None).0, 200);
    assert_eq!(d.get("/readyz", None).0, 200);
    assert_eq!(status_with(&d, TOKEN), 200, "the running token still works");
    assert_eq!(
        status_with(&d, NEW_TOKEN),
        401,
        "the broken file's token is not applied"
    );
    let ack = send(lab, &new_code_message("H2-1", "SPEC-H2")).unwrap();
    assert_eq!(
        ack_code(&ack),
        "AE",
        "the broken file's mapping is not applied: {ack}"
    );
    let ack = send(lab, &oru("H2-2", "SPEC-H2", &[("PH", "6.1", "pH")])).unwrap();
    assert_eq!(
        ack_code(&ack),
        "AA",
        "the running mapping still works: {ack}"
    );

    // The refusal is in the log, naming the key.
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap_or_else(|| panic!("no refusal in the log:\n{log}"));
    assert!(line.contains("commit_max_wiat_us"), "{line}");
    assert!(line.contains("\"level\":\"WARN\""), "{line}");

    // Fixed and signalled again: applied.
    rewrite_config(&d.config, &changed);
    sighup(&d);
    wait_until(
        "the fixed reload to be applied",
        Duration::from_secs(20),
        || counter(&d, APPLIED) >= 1.0,
    );
    assert_eq!(status_with(&d, NEW_TOKEN), 200);
    assert_eq!(status_with(&d, TOKEN), 401);
    let ack = send(lab, &new_code_message("H2-1", "SPEC-H2")).unwrap();
    assert_eq!(ack_code(&ack), "AA", "{ack}");
    assert_eq!(d.term(), Some(0));
}

// ---- SIGTERM while a delivery is in flight ---------------------------------------------------

/// How long SIGTERM may take with a POST outstanding. systemd allows 30 s (TimeoutStopSec); the
/// POST timeout in this test is 60 s, so a daemon that waited for the MRO's answer would fail.
const STOP_BOUND: Duration = Duration::from_secs(10);

fn report_of(d: &Daemon, report_id: &str) -> serde_json::Value {
    let (s, body) = d.get(&format!("/api/reports/{report_id}"), Some(VIEWER_TOKEN));
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn sigterm_during_a_slow_delivery_exits_promptly_and_delivers_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = mro::pki(dir.path());
    let rx = mro::receiver(&p);
    rx.hold_ms
        .store(300_000, std::sync::atomic::Ordering::SeqCst); // the MRO is slow
    let cfg = write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            analyzer("lab"),
            mro::mro_section(&p, rx.port, "MRO-0042", 60)
        ),
    );
    generate_key(&cfg);
    let mut d = Daemon::start(dir.path());

    // A negative, ready for review, released.
    d.drop_lims("acc-T1.xml", &accession_xml_clean("SPEC-T1"))
        .unwrap();
    let screen = oru(
        "T1-1",
        "SPEC-T1",
        &[
            ("THC50", "0", "ng/mL"),
            ("COC300", "0", "ng/mL"),
            ("OPI2000", "0", "ng/mL"),
            ("AMP1000", "0", "ng/mL"),
            ("PCP25", "0", "ng/mL"),
            ("CREA", "90", "mg/dL"),
            ("PH", "6.2", "pH"),
            ("NIT", "0", "mcg/mL"),
        ],
    );
    assert_eq!(ack_code(&send(d.addr("lab"), &screen).unwrap()), "AA");
    close_run(&d, "lab");
    assert_eq!(d.specimen("SPEC-T1").unwrap()["state"], "ready_for_review");
    let r = custodian::admin::client::post(
        d.admin,
        "/api/review/SPEC-T1/release",
        Some(TOKEN),
        &serde_json::json!({}),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let released: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let report_id = released["released"][0]["report_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The POST has reached the MRO, which holds it.
    rx.wait_for(Duration::from_secs(30), |rs| {
        rs.iter().any(|r| r.idempotency_key == report_id)
    })
    .expect("the report reaches the MRO");
    assert_eq!(report_of(&d, &report_id)["delivery"]["status"], "pending");

    let asked = Instant::now();
    let code = d.term();
    let took = asked.elapsed();
    assert_eq!(code, Some(0), "SIGTERM exits 0; log:\n{}", d.log());
    assert!(
        took < STOP_BOUND,
        "SIGTERM took {took:?} with a delivery in flight (bound {STOP_BOUND:?})"
    );
    assert!(d.log().contains("stopped cleanly"), "{}", d.log());
    // The MRO sees the laboratory hang up; it never answered that request.
    let seen = rx
        .wait_for(Duration::from_secs(10), |rs| {
            rs.iter()
                .any(|r| r.idempotency_key == report_id && r.abandoned)
        })
        .expect("the held request is abandoned when the daemon stops");
    assert!(
        seen.iter()
            .filter(|r| r.idempotency_key == report_id)
            .all(|r| r.answered.is_none())
    );

    // The MRO is fast again; after a restart the report goes out once.
    rx.hold_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    d.restart();
    wait_until("delivery after restart", Duration::from_secs(30), || {
        report_of(&d, &report_id)["delivery"]["status"] == "delivered"
    });
    let report = report_of(&d, &report_id);
    assert_eq!(report["delivery"]["http_status"], 201);
    assert_eq!(report["attempts"], 1, "one recorded delivery");
    let (_, outbox) = d.get("/api/outbox", Some(VIEWER_TOKEN));
    let outbox: serde_json::Value = serde_json::from_str(&outbox).unwrap();
    assert!(
        outbox["MRO-0042"]["queued"].as_array().unwrap().is_empty(),
        "{outbox}"
    );
    let sent = rx.with_key(&report_id);
    assert_eq!(sent.len(), 2, "the held try and the one after restart");
    assert!(sent[0].abandoned && sent[0].answered.is_none());
    assert_eq!(
        sent.iter()
            .filter(|r| r.answered.is_some_and(|(s, _)| (200..300).contains(&s)))
            .count(),
        1,
        "exactly one 2xx from the MRO"
    );
    assert!(
        sent.iter()
            .all(|r| r.body == sent[0].body && r.content_type == "application/jose"),
        "every try carries the same signed report"
    );
    assert_eq!(d.term(), Some(0));

    // The store holds exactly one delivery of the report, and the audit chain is intact.
    let store = custodian::store::Store::open(&dir.path().join("store")).unwrap();
    let delivered = store
        .audit_entries(0)
        .map(|r| r.unwrap().1)
        .filter(|r| r.entry.action == "delivered" && r.entry.subject == report_id)
        .count();
    assert_eq!(delivered, 1, "one delivered entry in the audit log");
    assert!(store.verify_audit().is_ok());
}

// ---- Signals at readiness ------------------------------------------------------------------

/// Whether `sig` is caught (has a handler) in `/proc/<pid>/status`.
fn catches(pid: u32, sig: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap_or(0);
    mask & (1 << (sig - 1)) != 0
}

/// Once the daemon says it is ready (runtime file, READY=1), a SIGHUP (systemd's ExecReload) or
/// SIGTERM must find its handler: SIGHUP's default action would kill the daemon. The runtime
/// file is polled without pause and the signal sent the moment it appears, several times over.
#[test]
fn a_sighup_the_moment_the_daemon_is_ready_reloads_and_does_not_kill() {
    for round in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), "");
        let mut child = Command::new(bin())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("CUSTODIAN_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let runtime = dir.path().join("store.runtime.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        let admin: std::net::SocketAddr = loop {
            let info = std::fs::read_to_string(&runtime)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .filter(|v| v["pid"].as_u64() == Some(u64::from(pid)));
            if let Some(v) = info {
                break v["admin"].as_str().unwrap().parse().unwrap();
            }
            assert!(child.try_wait().unwrap().is_none(), "exited during start");
            assert!(Instant::now() < deadline, "not ready in 30 s");
            std::hint::spin_loop();
        };
        let (hup, term) = (catches(pid, 1), catches(pid, 15));
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(
            hup && term,
            "round {round}: ready before SIGHUP/SIGTERM are handled"
        );
        let metrics = || {
            custodian::admin::client::get(admin, "/metrics", None)
                .map(|r| r.body)
                .unwrap_or_default()
        };
        wait_until("the reload", Duration::from_secs(20), || {
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: SIGHUP at readiness killed the daemon"
            );
            metrics().contains(&format!("{APPLIED} 1"))
        });
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(0));
    }
}
