//! Release and delivery end to end: accession XML + screen + validity + confirmation over MLLP →
//! review queue → authenticated release → a local HTTPS MRO receiver (its own CA, client
//! certificate required) gets a JWS that python's jwcrypto verifies and whose payload has every
//! required element; retries on 503 with the same Idempotency-Key and exactly one delivery;
//! SIGKILL between release and delivery still delivers once; refusals for non-MRO destinations.

mod common;
#[path = "common/mro.rs"]
mod mro;

use common::*;
use mro::{Pki, pki, receiver};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn mro_section(p: &Pki, port: u16, id: &str) -> String {
    mro::mro_section(p, port, id, 5)
}

/// Drives one specimen to ready_for_review: accession, screen, validity, confirmation.
fn prepare_positive(d: &Daemon, id: &str) {
    d.drop_lims(&format!("acc-{id}.xml"), &accession_xml_clean(id))
        .unwrap();
    let a = d.addr("lab");
    let screen = oru(
        &format!("{id}-1"),
        id,
        &[
            ("THC50", "0", "ng/mL"),
            ("COC300", "900", "ng/mL"),
            ("OPI2000", "0", "ng/mL"),
            ("AMP1000", "0", "ng/mL"),
            ("PCP25", "0", "ng/mL"),
        ],
    );
    assert_eq!(ack_code(&send(a, &screen).unwrap()), "AA");
    let validity = oru(
        &format!("{id}-2"),
        id,
        &[
            ("CREA", "90", "mg/dL"),
            ("PH", "6.2", "pH"),
            ("SG", "1.018", ""),
            ("NIT", "0", "mcg/mL"),
        ],
    );
    assert_eq!(ack_code(&send(a, &validity).unwrap()), "AA");
    let confirm = oru(&format!("{id}-3"), id, &[("BZEC", "480", "ng/mL")]);
    assert_eq!(ack_code(&send(a, &confirm).unwrap()), "AA");
    // The run holds a confirmation: it closes pending and a named certifying scientist accepts it.
    close_run(d, "lab");
    accept_pending_runs(d);
    assert_eq!(d.specimen(id).unwrap()["state"], "ready_for_review");
}

fn prepare_negative(d: &Daemon, id: &str) {
    d.drop_lims(&format!("acc-{id}.xml"), &accession_xml_clean(id))
        .unwrap();
    let a = d.addr("lab");
    let screen = oru(
        &format!("{id}-1"),
        id,
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
    assert_eq!(ack_code(&send(a, &screen).unwrap()), "AA");
    close_run(d, "lab");
    assert_eq!(d.specimen(id).unwrap()["state"], "ready_for_review");
}

fn post(d: &Daemon, path: &str, token: Option<&str>, body: serde_json::Value) -> (u16, String) {
    let r = custodian::admin::client::post(d.admin, path, token, &body).unwrap();
    (r.status, r.body)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn delivery_of(d: &Daemon, report_id: &str) -> serde_json::Value {
    let (s, body) = d.get(&format!("/api/reports/{report_id}"), Some(VIEWER_TOKEN));
    assert_eq!(s, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["delivery"].clone()
}

#[test]
fn release_signs_and_delivers_only_to_the_mro_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let rx = receiver(&p);
    rx.fail_first.store(3, Ordering::SeqCst);
    let cfg = write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            analyzer("lab"),
            mro_section(&p, rx.port, "MRO-0042")
        ),
    );
    generate_key(&cfg);
    let d = Daemon::start(dir.path());
    prepare_positive(&d, "SPEC-R1");

    // The review queue shows what the scientist needs.
    let (s, body) = d.get("/api/review", Some(VIEWER_TOKEN));
    assert_eq!(s, 200);
    let queue: serde_json::Value = serde_json::from_str(&body).unwrap();
    let item = &queue[0];
    assert_eq!(item["specimen_id"], "SPEC-R1");
    assert!(
        item["analytes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["analyte"] == "benzoylecgonine" && a["confirmation_cutoff"] == "150")
    );
    assert!(item["draft_report"]["results"].is_array());
    assert!(item["held_because"].is_null());

    // Release needs authentication and the certifying-scientist role.
    assert_eq!(
        post(
            &d,
            "/api/review/SPEC-R1/release",
            None,
            serde_json::json!({})
        )
        .0,
        401
    );
    assert_eq!(
        post(
            &d,
            "/api/review/SPEC-R1/release",
            Some(VIEWER_TOKEN),
            serde_json::json!({})
        )
        .0,
        403
    );
    assert_eq!(
        post(
            &d,
            "/api/review/SPEC-R1/release",
            Some(OPERATOR_TOKEN),
            serde_json::json!({})
        )
        .0,
        403
    );
    let (s, body) = post(
        &d,
        "/api/review/SPEC-R1/release",
        Some(TOKEN),
        serde_json::json!({}),
    );
    assert_eq!(s, 200, "{body}");
    let released: serde_json::Value = serde_json::from_str(&body).unwrap();
    let report_id = released["released"][0]["report_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(released["released"][0]["mro_id"], "MRO-0042");
    // A second release of the same specimen is refused.
    assert_eq!(
        post(
            &d,
            "/api/review/SPEC-R1/release",
            Some(TOKEN),
            serde_json::json!({})
        )
        .0,
        409
    );

    // 503 three times, then 201: one delivery, the same Idempotency-Key on every try.
    wait_until("delivery", || {
        delivery_of(&d, &report_id)["status"] == "delivered"
    });
    let seen = rx.requests();
    assert_eq!(seen.len(), 4, "three 503s then one 201");
    assert!(
        seen.iter()
            .all(|s| s.idempotency_key == report_id && s.content_type == "application/jose")
    );
    let delivery = delivery_of(&d, &report_id);
    assert_eq!(delivery["http_status"], 201);
    assert!(delivery["receipt"].as_str().unwrap().contains("received"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.requests().len(), 4, "nothing sent after delivery");

    // A third-party JOSE library verifies the JWS with the exported public key.
    let jwks = Command::new(bin())
        .args(["keys", "export-public", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(jwks.status.success());
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, &jwks.stdout).unwrap();
    let jws_path = dir.path().join("report.jws");
    std::fs::write(&jws_path, &seen[3].body).unwrap();
    let script = r#"
import json, sys
from jwcrypto import jwk, jws
keys = jwk.JWKSet.from_json(open(sys.argv[1]).read())
token = open(sys.argv[2]).read().strip()
t = jws.JWS()
t.deserialize(token)
kid = t.jose_header.get("kid")
assert t.jose_header.get("alg") == "EdDSA", t.jose_header
t.verify(keys.get_key(kid))
print(t.payload.decode())
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&jwks_path)
        .arg(&jws_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jwcrypto (pip install jwcrypto; tests/run.sh installs it) did not verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let payload: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "report_id",
        "laboratory",
        "employer",
        "mro",
        "specimen_id",
        "donor_id",
        "reason_for_test",
        "collector",
        "collected_on",
        "received_on",
        "released_at",
        "certifying_scientist",
        "results",
        "dilute",
        "positive_analytes",
        "quantitations",
        "remarks",
        "profile",
    ] {
        assert!(payload.get(key).is_some(), "payload lacks {key}: {payload}");
    }
    assert_eq!(payload["report_id"], report_id.as_str());
    assert_eq!(payload["certifying_scientist"], "Dr. Test Scientist");
    assert_eq!(payload["results"], serde_json::json!(["positive"]));
    assert_eq!(
        payload["positive_analytes"],
        serde_json::json!(["benzoylecgonine"])
    );
    assert_eq!(
        payload["quantitations"],
        serde_json::json!({}),
        "no quantitation without a written request"
    );
    assert_eq!(payload["laboratory"]["name"], "Test Laboratory");
    // custodian verify agrees.
    let out = Command::new(bin())
        .arg("verify")
        .arg(&jws_path)
        .arg("--key")
        .arg(&jwks_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The release is an audited electronic signature bound to the content hash.
    let rec = d.specimen("SPEC-R1").unwrap();
    assert_eq!(rec["state"], "released");
    assert_eq!(rec["release"]["meaning"], "reviewed and released");
    assert_eq!(rec["release"]["scientist"], "Dr. Test Scientist");
    let (_, v) = d.get("/api/audit/verify", Some(TOKEN));
    assert!(v.contains("\"ok\":true"), "{v}");
}

/// An MRO's answer never stops delivery: a receipt whose byte 4096 falls inside a multi-byte
/// character (it panicked the sender, and every later report of that MRO waited for a restart),
/// and 429 / 408 / 425 / 503 with `Retry-After`, which are retried (they were dead letters).
#[test]
fn no_answer_of_an_mro_stops_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let rx = receiver(&p);
    let mut receipt = "a".repeat(4095);
    receipt.push_str(&"é".repeat(1000));
    rx.script
        .lock()
        .unwrap()
        .push_back(mro::Scripted::new(201, &receipt));
    let cfg = write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            analyzer("lab"),
            mro_section(&p, rx.port, "MRO-0042")
        ),
    );
    generate_key(&cfg);
    let d = Daemon::start(dir.path());
    prepare_positive(&d, "SPEC-U1");
    let (s, body) = post(
        &d,
        "/api/review/SPEC-U1/release",
        Some(TOKEN),
        serde_json::json!({}),
    );
    assert_eq!(s, 200, "{body}");
    let first: serde_json::Value = serde_json::from_str(&body).unwrap();
    let first = first["released"][0]["report_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until("the first report delivered", || {
        delivery_of(&d, &first)["status"] == "delivered"
    });
    let receipt_kept = delivery_of(&d, &first)["receipt"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        receipt_kept,
        "a".repeat(4095),
        "cut before the split character"
    );
    let (s, health) = d.get("/healthz", None);
    assert_eq!((s, health.as_str()), (200, "ok\n"));

    // "Not now" answers: retried, honouring Retry-After (within the 1 s backoff maximum).
    {
        let mut script = rx.script.lock().unwrap();
        script.push_back(mro::Scripted::new(429, "slow down").header("Retry-After", "1"));
        script.push_back(mro::Scripted::new(408, ""));
        script.push_back(mro::Scripted::new(425, ""));
        script.push_back(
            mro::Scripted::new(503, "").header("Retry-After", "Thu, 01 Jan 1970 00:00:00 GMT"),
        );
    }
    prepare_positive(&d, "SPEC-U2");
    let (s, body) = post(
        &d,
        "/api/review/SPEC-U2/release",
        Some(TOKEN),
        serde_json::json!({}),
    );
    assert_eq!(s, 200, "{body}");
    let second: serde_json::Value = serde_json::from_str(&body).unwrap();
    let second = second["released"][0]["report_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until("the second report delivered", || {
        delivery_of(&d, &second)["status"] == "delivered"
    });
    let tries = rx.with_key(&second);
    assert_eq!(tries.len(), 5, "429, 408, 425, 503, then 201");
    let statuses: Vec<u16> = tries.iter().map(|r| r.answered.unwrap().0).collect();
    assert_eq!(statuses, vec![429, 408, 425, 503, 201]);
    // Retry-After: 1 was honoured before the second try.
    let waited = tries[1]
        .arrived
        .duration_since(tries[0].answered.unwrap().1);
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    let (s, status) = d.get(&format!("/api/reports/{second}"), Some(VIEWER_TOKEN));
    assert_eq!(s, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(status["attempts"].as_u64().unwrap() >= 5, "{status}");
    assert_eq!(status["last_error"], "HTTP 503");
    assert_eq!(d.get("/api/outbox", Some(VIEWER_TOKEN)).0, 200);
}

#[test]
fn sigkill_between_release_and_delivery_still_delivers_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let rx = receiver(&p);
    rx.fail_first.store(1_000_000, Ordering::SeqCst); // the MRO is down
    let cfg = write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            analyzer("lab"),
            mro_section(&p, rx.port, "MRO-0042")
        ),
    );
    generate_key(&cfg);
    let mut d = Daemon::start(dir.path());
    prepare_negative(&d, "SPEC-K1");
    prepare_negative(&d, "SPEC-K2");
    // One signature over a listed set of negatives.
    let (s, body) = post(
        &d,
        "/api/release-batch",
        Some(TOKEN),
        serde_json::json!({"specimens": ["SPEC-K1", "SPEC-K2"]}),
    );
    assert_eq!(s, 200, "{body}");
    let released: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<String> = released["released"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["report_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    wait_until("a first failed attempt", || !rx.requests().is_empty());
    d.kill9();
    rx.fail_first.store(0, Ordering::SeqCst); // the MRO is back
    d.restart();
    for id in &ids {
        wait_until("delivery after restart", || {
            delivery_of(&d, id)["status"] == "delivered"
        });
    }
    let seen = rx.requests();
    for id in &ids {
        let ok = seen.iter().filter(|s| &s.idempotency_key == id).count();
        assert!(ok >= 1);
    }
    // In release order per MRO: the first report's last try comes before the second's first 201.
    let (_, outbox) = d.get("/api/outbox", Some(VIEWER_TOKEN));
    let outbox: serde_json::Value = serde_json::from_str(&outbox).unwrap();
    assert!(outbox["MRO-0042"]["queued"].as_array().unwrap().is_empty());
    // Exactly one delivery recorded per report: the audit log has one "delivered" each.
    assert_eq!(d.term(), Some(0));
    let out = d.cli(&["audit", "verify"]);
    assert!(out.status.success());
}

#[test]
fn batch_release_is_for_negatives_and_unknown_mros_hold_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let rx = receiver(&p);
    // The directory lists another MRO only: the CCF's MRO-0042 is unknown.
    let cfg = write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            analyzer("lab"),
            mro_section(&p, rx.port, "MRO-7777")
        ),
    );
    generate_key(&cfg);
    let d = Daemon::start(dir.path());
    prepare_positive(&d, "SPEC-B1");
    let (s, body) = post(
        &d,
        "/api/release-batch",
        Some(TOKEN),
        serde_json::json!({"specimens": ["SPEC-B1"]}),
    );
    assert_eq!(s, 409, "a positive cannot be batch released: {body}");
    let (s, body) = post(
        &d,
        "/api/review/SPEC-B1/release",
        Some(TOKEN),
        serde_json::json!({}),
    );
    assert_eq!(s, 409);
    assert!(
        body.contains("MRO-0042") && body.contains("directory"),
        "{body}"
    );
    let (_, item) = d.get("/api/review/SPEC-B1", Some(TOKEN));
    assert!(
        item.contains("held_because") && item.contains("not in the MRO directory"),
        "{item}"
    );
    assert_eq!(d.specimen("SPEC-B1").unwrap()["state"], "ready_for_review");
    // Send back for retest needs a reason and moves it out of the queue.
    let (s, _) = post(
        &d,
        "/api/review/SPEC-B1/retest",
        Some(TOKEN),
        serde_json::json!({"reason": ""}),
    );
    assert_eq!(s, 409);
    let (s, _) = post(
        &d,
        "/api/review/SPEC-B1/retest",
        Some(TOKEN),
        serde_json::json!({"reason": "re-run confirmation"}),
    );
    assert_eq!(s, 200);
    assert_eq!(d.specimen("SPEC-B1").unwrap()["state"], "screened");
    assert!(rx.requests().is_empty(), "nothing was sent anywhere");
}

#[test]
fn destinations_that_are_not_mros_are_refused_by_check_config_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    for (label, section) in [
        ("DER", mro_section(&p, 443, "DER-ACME")),
        (
            "employer",
            mro_section(&p, 443, "MRO-1").replace("Dr. Pat Example, MD", "Acme Employer Portal"),
        ),
        (
            "C/TPA",
            mro_section(&p, 443, "MRO-2").replace("Dr. Pat Example, MD", "Example C/TPA Services"),
        ),
        (
            "plain http",
            mro_section(&p, 443, "MRO-3").replace("https://", "http://"),
        ),
    ] {
        let cfg = write_config(dir.path(), &section);
        let out = Command::new(bin())
            .arg("check-config")
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{label} accepted by check-config"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("mro[0]"), "{label}: {err}");
        let out = Command::new(bin())
            .arg("run")
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{label} accepted by run");
    }
}

/// Copy 1 of a received Bottle B naming `mro_id` and one drug to reconfirm.
fn split_package(id: &str, mro_id: &str) -> serde_json::Value {
    serde_json::json!({
        "copy1": {
            "specimen_id": id,
            "collected_on": "2026-03-08",
            "first_laboratory": "First Example Laboratory",
            "received_at_first_laboratory": "2026-03-09",
            "mro": {"name": "Dr. Pat Example, MD", "id": mro_id},
            "results": ["positive"],
            "drugs": [{"analyte": "benzoylecgonine", "name": "Benzoylecgonine", "class": "cocaine"}],
            "adulteration": []
        }
    })
}

/// The payload of a delivered JWS as `custodian verify` prints it (which also checks it).
fn verified_payload(dir: &Path, cfg: &Path, name: &str, jws: &str) -> serde_json::Value {
    let jwks = Command::new(bin())
        .args(["keys", "export-public", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    assert!(jwks.status.success());
    let jwks_path = dir.join("jwks.json");
    std::fs::write(&jwks_path, &jwks.stdout).unwrap();
    let jws_path = dir.join(name);
    std::fs::write(&jws_path, jws).unwrap();
    let out = Command::new(bin())
        .arg("verify")
        .arg(&jws_path)
        .arg("--key")
        .arg(&jwks_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn split_laboratory_releases_the_split_result_only_to_the_mro_in_copy1() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let rx = receiver(&p);
    let cfg = write_config(
        dir.path(),
        &format!(
            "{}\n{}\n[split_laboratory]\nenabled = true\nlod = {{ benzoylecgonine = 5 }}\n",
            analyzer("lab"),
            mro_section(&p, rx.port, "MRO-0042")
        ),
    );
    generate_key(&cfg);
    let d = Daemon::start(dir.path());
    for (id, mro) in [
        ("SB-1", "MRO-0042"),
        ("SB-2", "MRO-0042"),
        ("SB-3", "MRO-9999"),
    ] {
        let (s, body) = post(
            &d,
            "/api/split-lab/received",
            Some(OPERATOR_TOKEN),
            split_package(id, mro),
        );
        assert_eq!(s, 200, "{body}");
    }
    let a = d.addr("lab");

    // Pending (not tested yet): refused.
    let (s, body) = post(
        &d,
        "/api/split-lab/SB-1/release",
        Some(TOKEN),
        serde_json::json!({}),
    );
    assert_eq!(s, 409, "{body}");
    assert!(
        body.contains("pending") && body.contains("benzoylecgonine"),
        "{body}"
    );
    // 40 ng/mL: below the 150 cutoff, above the LOD of 5: reconfirmed.
    let m = oru("SB-1-1", "SB-1", &[("BZEC", "40", "ng/mL")]);
    assert_eq!(ack_code(&send(a, &m).unwrap()), "AA");
    close_run(&d, "lab");
    accept_pending_runs(&d);
    // Only a certifying scientist releases.
    for token in [VIEWER_TOKEN, OPERATOR_TOKEN] {
        let (s, _) = post(
            &d,
            "/api/split-lab/SB-1/release",
            Some(token),
            serde_json::json!({}),
        );
        assert_eq!(s, 403);
    }
    let out = d.cli(&["lifecycle", "split-lab-release", "SB-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let released: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(released["result"], "Reconfirmed", "{released}");
    assert_eq!(released["mro_id"], "MRO-0042");
    let rid1 = released["report_id"].as_str().unwrap().to_string();
    // Released once.
    let (s, body) = post(
        &d,
        "/api/split-lab/SB-1/release",
        Some(TOKEN),
        serde_json::json!({}),
    );
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("already released"), "{body}");

    // The bottle this laboratory reconfirmed keeps its clocks from the release: a year for the
    // specimen (40.99(a)), two for the records (40.109(a)).
    let (s, body) = d.get("/api/specimens/SB-1/retention", Some(VIEWER_TOKEN));
    assert_eq!(s, 200, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["basis"], "one_year", "{r}");
    assert!(
        d.specimen("SB-1").unwrap()["lifecycle"]["retention_due_ms"].is_u64(),
        "the retention clock is scheduled"
    );

    // Not detected: the validity tests of 40.177(c) are required before release.
    let m = oru("SB-2-1", "SB-2", &[("BZEC", "0", "ng/mL")]);
    assert_eq!(ack_code(&send(a, &m).unwrap()), "AA");
    close_run(&d, "lab");
    accept_pending_runs(&d);
    let (s, body) = post(
        &d,
        "/api/split-lab/SB-2/release",
        Some(TOKEN),
        serde_json::json!({}),
    );
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("40.177(c)"), "{body}");
    let m = oru(
        "SB-2-2",
        "SB-2",
        &[("CREA", "90", "mg/dL"), ("PH", "6.2", "pH")],
    );
    assert_eq!(ack_code(&send(a, &m).unwrap()), "AA");
    close_run(&d, "lab");
    let (s, body) = post(
        &d,
        "/api/split-lab/SB-2/release",
        Some(TOKEN),
        serde_json::json!({}),
    );
    assert_eq!(s, 200, "{body}");
    let released: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(released["result"], "Failed to Reconfirm", "{released}");
    let rid2 = released["report_id"].as_str().unwrap().to_string();

    // An MRO that is not in the directory: held with the reason.
    let m = oru("SB-3-1", "SB-3", &[("BZEC", "40", "ng/mL")]);
    assert_eq!(ack_code(&send(a, &m).unwrap()), "AA");
    close_run(&d, "lab");
    accept_pending_runs(&d);
    let (s, body) = post(
        &d,
        "/api/split-lab/SB-3/release",
        Some(TOKEN),
        serde_json::json!({}),
    );
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("not in the MRO directory"), "{body}");

    // Copy 1 names another MRO than the directory entry its id points to: held, never sent to
    // the entry's MRO.
    let mut other = split_package("SB-4", "MRO-0042");
    other["copy1"]["mro"]["name"] = serde_json::json!("Dr. Lee Other, MD");
    let (s, body) = post(&d, "/api/split-lab/received", Some(OPERATOR_TOKEN), other);
    assert_eq!(s, 200, "{body}");
    let m = oru("SB-4-1", "SB-4", &[("BZEC", "40", "ng/mL")]);
    assert_eq!(ack_code(&send(a, &m).unwrap()), "AA");
    close_run(&d, "lab");
    accept_pending_runs(&d);
    let (s, body) = post(
        &d,
        "/api/split-lab/SB-4/release",
        Some(TOKEN),
        serde_json::json!({}),
    );
    assert_eq!(s, 409, "{body}");
    assert!(
        body.contains("Copy 1 names MRO Dr. Lee Other, MD"),
        "{body}"
    );

    // The sender delivers both to the MRO; the JWS verifies; no donor identity.
    for rid in [&rid1, &rid2] {
        assert!(
            rx.wait_answered_2xx(rid, Duration::from_secs(30)).is_some(),
            "{rid} not delivered"
        );
        wait_until("delivery recorded", || {
            delivery_of(&d, rid)["status"] == "delivered"
        });
    }
    let body_of = |rid: &str| rx.with_key(rid)[0].body.clone();
    let v1 = verified_payload(dir.path(), &cfg, "split1.jws", &body_of(&rid1));
    assert_eq!(v1["kind"], "split_specimen_result");
    assert_eq!(v1["report_id"], rid1.as_str());
    assert_eq!(v1["specimen_id"], "SB-1");
    assert_eq!(v1["result"], "Reconfirmed");
    assert_eq!(v1["results"][0]["result"], "Reconfirmed");
    assert_eq!(
        v1["mro"],
        serde_json::json!({"name": "Dr. Pat Example, MD", "id": "MRO-0042"})
    );
    assert_eq!(v1["first_laboratory"], "First Example Laboratory");
    assert_eq!(v1["laboratory"]["name"], "Test Laboratory");
    assert_eq!(v1["certifying_scientist"], "Dr. Test Scientist");
    assert_eq!(v1["profile"], "part40-2001");
    assert!(v1["released_at"].is_string());
    let v2 = verified_payload(dir.path(), &cfg, "split2.jws", &body_of(&rid2));
    assert_eq!(v2["result"], "Failed to Reconfirm");
    assert_eq!(v2["reason"], "Drug(s)/Drug Metabolite(s) Not Detected.");
    assert_eq!(
        v2["results"][0]["reason"],
        "Drug(s)/Drug Metabolite(s) Not Detected."
    );
    assert_eq!(v2["validity"]["finding"], "consistent_with_human_urine");
    for v in [&v1, &v2] {
        let text = v.to_string().to_lowercase();
        assert!(!text.contains("donor") && !text.contains("employer"), "{v}");
    }

    // The release is recorded with its meaning; the audit chain holds.
    let (s, body) = d.get("/api/split-lab/SB-1", Some(VIEWER_TOKEN));
    assert_eq!(s, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        view["released"]["meaning"],
        "split result reviewed and released"
    );
    assert_eq!(view["released"]["report_id"], rid1.as_str());
    let (_, v) = d.get("/api/audit/verify", Some(TOKEN));
    assert!(v.contains("\"ok\":true"), "{v}");
    drop(d);
    let store = custodian::store::Store::open(&dir.path().join("store")).unwrap();
    let released: Vec<String> = store
        .audit_entries(1)
        .flatten()
        .filter(|(_, r)| r.entry.action == "split_released")
        .map(|(_, r)| {
            format!(
                "{} {}",
                r.entry.subject,
                r.entry.after.clone().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(released.len(), 2, "{released:?}");
    assert!(released[0].starts_with("SB-1 split result reviewed and released; Reconfirmed"));
    assert!(released[0].contains("sha256 "));
}

/// A mistyped MRO id on the CCF points at another real MRO of the directory: the CCF's MRO
/// name is not that entry's name, so the report is held in review with that reason and release
/// is refused; nothing is sent anywhere.
#[test]
fn a_ccf_mro_name_that_is_not_the_directory_entrys_holds_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let rx = receiver(&p);
    let section = mro_section(&p, rx.port, "MRO-0042").replace(
        "name = \"Dr. Pat Example, MD\"",
        "name = \"Dr. Lee Other, MD\"",
    );
    assert!(section.contains("Lee Other"));
    let cfg = write_config(dir.path(), &format!("{}\n{section}", analyzer("lab")));
    generate_key(&cfg);
    let d = Daemon::start(dir.path());
    prepare_positive(&d, "SPEC-N1");
    let (_, item) = d.get("/api/review/SPEC-N1", Some(TOKEN));
    let v: serde_json::Value = serde_json::from_str(&item).unwrap();
    let why = v["held_because"].as_str().unwrap_or_default();
    assert!(
        why.contains("CCF names MRO Dr. Pat Example, MD")
            && why.contains("directory id MRO-0042 is Dr. Lee Other, MD"),
        "{item}"
    );
    let (s, body) = post(
        &d,
        "/api/review/SPEC-N1/release",
        Some(TOKEN),
        serde_json::json!({}),
    );
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("CCF names MRO"), "{body}");
    assert_eq!(d.specimen("SPEC-N1").unwrap()["state"], "ready_for_review");
    assert!(rx.requests().is_empty(), "nothing was sent anywhere");
}

/// `custodian reports export` writes the signed compact JWS that `custodian verify` checks
/// with the exported public keys (any reader; audited); `custodian audit show` lists the
/// specimen's audit entries through the daemon and, once it is stopped, from the store.
#[test]
fn reports_export_verifies_and_audit_show_lists_the_specimen() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let rx = receiver(&p);
    let cfg = write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            analyzer("lab"),
            mro_section(&p, rx.port, "MRO-0042")
        ),
    );
    generate_key(&cfg);
    let mut d = Daemon::start(dir.path());
    prepare_positive(&d, "SPEC-E1");
    let (s, body) = post(
        &d,
        "/api/review/SPEC-E1/release",
        Some(TOKEN),
        serde_json::json!({}),
    );
    assert_eq!(s, 200, "{body}");
    let released: serde_json::Value = serde_json::from_str(&body).unwrap();
    let report_id = released["released"][0]["report_id"]
        .as_str()
        .unwrap()
        .to_string();

    let cli = |token: &str, args: &[&str]| {
        Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .env("CUSTODIAN_TOKEN", token)
            .output()
            .unwrap()
    };
    let out_file = dir.path().join("report.jws");
    // The signed report carries the donor's identifier: a viewer may not export it.
    let refused = cli(VIEWER_TOKEN, &["reports", "export", &report_id]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("403"));
    let out = cli(
        TOKEN,
        &[
            "reports",
            "export",
            &report_id,
            "--out",
            out_file.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jws = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(jws.trim().split('.').count(), 3, "compact JWS: {jws}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The same JWS the MRO received.
    wait_until("delivery", || !rx.requests().is_empty());
    assert_eq!(rx.requests()[0].body.trim(), jws.trim());
    let keys = Command::new(bin())
        .args(["keys", "export-public", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(keys.status.success());
    let key_file = dir.path().join("lab-keys.json");
    std::fs::write(&key_file, &keys.stdout).unwrap();
    let verified = Command::new(bin())
        .arg("verify")
        .arg(&out_file)
        .arg("--key")
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(String::from_utf8_lossy(&verified.stdout).contains("SPEC-E1"));
    // Unknown report: 404, exit 1; no token: refused.
    assert_eq!(
        cli(VIEWER_TOKEN, &["reports", "export", "R-nope"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(d.get(&format!("/api/reports/{report_id}/jws"), None).0, 401);

    let actions = |v: &serde_json::Value| -> Vec<String> {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect()
    };
    // The delivery's entry (subject: the report id) is there once the MRO's answer is stored.
    wait_until("delivered", || {
        delivery_of(&d, &report_id)["status"] == "delivered"
    });
    let out = cli(VIEWER_TOKEN, &["audit", "show", "SPEC-E1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let running: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let seen = actions(&running);
    for action in ["accessioned", "released", "report_exported", "delivered"] {
        assert!(seen.iter().any(|a| a == action), "{action}: {seen:?}");
    }
    assert!(
        running["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["subject"] == "SPEC-E1" || e["subject"] == report_id.as_str())
    );

    assert_eq!(d.term(), Some(0));
    let out = cli(VIEWER_TOKEN, &["audit", "show", "SPEC-E1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stopped: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(actions(&stopped), seen, "the store has the same entries");
}

/// Reports to the MRO that answer its letters reach the MRO like any report, signed and
/// verifiable: 40.175(b)(2) "the split specimen is unavailable" when Bottle B cannot be
/// forwarded, and 40.187(f) the result of testing the primary for the split's adulterant,
/// released by a certifying scientist (refused for other roles). Neither names the donor.
#[test]
fn split_unavailable_and_primary_retest_reports_reach_the_mro() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let rx = receiver(&p);
    let cfg = write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            analyzer("lab"),
            mro_section(&p, rx.port, "MRO-0042")
        ),
    );
    generate_key(&cfg);
    let d = Daemon::start(dir.path());

    // Bottle B absent at accessioning; the MRO's letter asks for it to be forwarded.
    let xml = String::from_utf8(accession_xml_clean("SPEC-U9"))
        .unwrap()
        .replace(
            "<bottle-b>\n    <seal>intact</seal>",
            "<bottle-b>\n    <seal>absent</seal>",
        );
    assert!(xml.contains("<seal>absent</seal>"), "fixture changed");
    d.drop_lims("acc-SPEC-U9.xml", xml.as_bytes()).unwrap();
    let a = d.addr("lab");
    let screen = oru(
        "SPEC-U9-1",
        "SPEC-U9",
        &[
            ("THC50", "0", "ng/mL"),
            ("COC300", "900", "ng/mL"),
            ("OPI2000", "0", "ng/mL"),
            ("AMP1000", "0", "ng/mL"),
            ("PCP25", "0", "ng/mL"),
            ("CREA", "90", "mg/dL"),
            ("PH", "6.2", "pH"),
            ("NIT", "100", "mcg/mL"),
        ],
    );
    assert_eq!(ack_code(&send(a, &screen).unwrap()), "AA");
    let confirm = oru("SPEC-U9-3", "SPEC-U9", &[("BZEC", "480", "ng/mL")]);
    assert_eq!(ack_code(&send(a, &confirm).unwrap()), "AA");
    close_run(&d, "lab");
    accept_pending_runs(&d);
    let (s, body) = post(
        &d,
        "/api/review/SPEC-U9/release",
        Some(TOKEN),
        serde_json::json!({}),
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = post(
        &d,
        "/api/specimens/SPEC-U9/requests",
        Some(OPERATOR_TOKEN),
        serde_json::json!({"kind": "split_test", "document_ref": "MRO-SPLIT-9",
                           "second_laboratory": "Second Example Laboratory"}),
    );
    assert_eq!(s, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let unavailable = answer["reported_to_mro"]["report_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no report to the MRO: {answer}"))
        .to_string();
    rx.wait_answered_2xx(&unavailable, Duration::from_secs(30))
        .expect("the split-unavailable report reaches the MRO");
    let jws = rx.with_key(&unavailable)[0].body.clone();
    let v = verified_payload(dir.path(), &cfg, "unavailable.jws", &jws);
    assert_eq!(v["kind"], "split_specimen_unavailable", "{v}");
    assert_eq!(v["specimen_id"], "SPEC-U9");
    assert_eq!(v["mro"]["id"], "MRO-0042");
    assert_eq!(v["request_document"], "MRO-SPLIT-9");
    assert!(
        v["statement"].as_str().unwrap().contains("unavailable"),
        "{v}"
    );
    assert!(!jws.is_empty());
    wait_until("the unavailable report recorded as delivered", || {
        delivery_of(&d, &unavailable)["status"] == "delivered"
    });

    // The primary of another specimen, retested for the split's adulterant (nitrite), was
    // measured before release: the outcome is complete and a certifying scientist releases it.
    d.drop_lims("acc-SPEC-U8.xml", &accession_xml_clean("SPEC-U8"))
        .unwrap();
    let screen = String::from_utf8(screen.clone())
        .unwrap()
        .replace("SPEC-U9", "SPEC-U8");
    assert_eq!(ack_code(&send(a, screen.as_bytes()).unwrap()), "AA");
    let confirm = oru("SPEC-U8-3", "SPEC-U8", &[("BZEC", "480", "ng/mL")]);
    assert_eq!(ack_code(&send(a, &confirm).unwrap()), "AA");
    close_run(&d, "lab");
    accept_pending_runs(&d);
    let (s, body) = post(
        &d,
        "/api/review/SPEC-U8/release",
        Some(TOKEN),
        serde_json::json!({}),
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = post(
        &d,
        "/api/specimens/SPEC-U8/requests",
        Some(OPERATOR_TOKEN),
        serde_json::json!({"kind": "split_test", "document_ref": "MRO-SPLIT-8",
                           "second_laboratory": "Second Example Laboratory"}),
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = post(
        &d,
        "/api/specimens/SPEC-U8/requests",
        Some(OPERATOR_TOKEN),
        serde_json::json!({"kind": "adulterant_retest", "document_ref": "MRO-LTR-8",
                           "cite": "40.95(a)(2), HHS criteria",
                           "remark": "nitrite 500 mcg/mL or more"}),
    );
    assert_eq!(s, 200, "{body}");
    let path = "/api/specimens/SPEC-U8/adulterant-retest/release";
    assert_eq!(
        post(&d, path, Some(OPERATOR_TOKEN), serde_json::json!({})).0,
        403
    );
    assert_eq!(
        post(&d, path, Some(VIEWER_TOKEN), serde_json::json!({})).0,
        403
    );
    let out = d.cli(&["lifecycle", "adulterant-retest-release", "SPEC-U8"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let queued: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let retest = queued["report_id"].as_str().unwrap().to_string();
    rx.wait_answered_2xx(&retest, Duration::from_secs(30))
        .expect("the primary-retest result reaches the MRO");
    let jws = rx.with_key(&retest)[0].body.clone();
    let v = verified_payload(dir.path(), &cfg, "retest.jws", &jws);
    assert_eq!(v["kind"], "primary_retest_result", "{v}");
    assert_eq!(v["result"], "Failed to Reconfirm", "{v}");
    assert_eq!(v["request_document"], "MRO-LTR-8");
    assert_eq!(v["certifying_scientist"], "Dr. Test Scientist");
    // Released once.
    let (s, body) = post(&d, path, Some(TOKEN), serde_json::json!({}));
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("already released"), "{body}");
    // No donor identity in either payload.
    for r in rx.requests() {
        for needle in ["000-00-0000", "donor"] {
            let payload = r.body.split('.').nth(1).unwrap_or("");
            use base64::Engine;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            if text.contains("split_specimen_unavailable") || text.contains("primary_retest") {
                assert!(!text.contains(needle), "`{needle}` in {text}");
            }
        }
    }
}
