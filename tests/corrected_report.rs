//! Corrected reports end to end: a released, delivered report whose CCF data was wrong (here the
//! donor ID) is corrected by a certifying scientist; the local HTTPS MRO receiver gets a new JWS
//! whose payload names the report it replaces and carries the corrected field and the same
//! results; the old report is marked superseded; viewers and operators are refused, as are
//! unknown and not-yet-released reports and any attempt to change results or the destination;
//! the CLI does the same; the audit chain verifies and its entry holds no donor data.

mod common;
#[path = "common/mro.rs"]
mod mro;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const NEW_DONOR_ID: &str = "999-88-7777";

/// Drives one specimen to ready_for_review with a negative result.
fn prepare_negative(d: &Daemon, id: &str) {
    d.drop_lims(&format!("acc-{id}.xml"), &accession_xml_clean(id))
        .unwrap();
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
    assert_eq!(ack_code(&send(d.addr("lab"), &screen).unwrap()), "AA");
    close_run(d, "lab");
    assert_eq!(d.specimen(id).unwrap()["state"], "ready_for_review");
}

fn post(d: &Daemon, path: &str, token: Option<&str>, body: serde_json::Value) -> (u16, String) {
    let r = custodian::admin::client::post(d.admin, path, token, &body).unwrap();
    (r.status, r.body)
}

fn report_status(d: &Daemon, report_id: &str) -> serde_json::Value {
    let (s, body) = d.get(&format!("/api/reports/{report_id}"), Some(VIEWER_TOKEN));
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn release(d: &Daemon, id: &str) -> String {
    let (s, body) = post(
        d,
        &format!("/api/review/{id}/release"),
        Some(TOKEN),
        serde_json::json!({}),
    );
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["released"][0]["report_id"].as_str().unwrap().to_string()
}

/// Verifies a JWS with the laboratory's exported keys (`custodian verify`); its payload.
fn verified_payload(dir: &Path, config: &Path, jws: &str) -> serde_json::Value {
    let jwks = Command::new(bin())
        .args(["keys", "export-public", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(jwks.status.success());
    let jwks_path = dir.join("jwks.json");
    std::fs::write(&jwks_path, &jwks.stdout).unwrap();
    let jws_path = dir.join("corrected.jws");
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

struct Lab {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    rx: mro::Receiver,
    d: Daemon,
}

fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let p = mro::pki(dir.path());
    let rx = mro::receiver(&p);
    let config = write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            analyzer("lab"),
            mro::mro_section(&p, rx.port, "MRO-0042", 5)
        ),
    );
    generate_key(&config);
    let d = Daemon::start(dir.path());
    Lab { dir, config, rx, d }
}

#[test]
fn a_corrected_report_replaces_the_old_one_at_the_same_mro() {
    let mut lab = lab();
    let d = &lab.d;
    prepare_negative(d, "SPEC-C1");
    let old_id = release(d, "SPEC-C1");
    assert!(
        lab.rx
            .wait_answered_2xx(&old_id, Duration::from_secs(30))
            .is_some()
    );
    let path = format!("/api/reports/{old_id}/correct");
    let body = serde_json::json!({
        "reason": "donor ID transposed on the report, caught by the MRO",
        "document_ref": "MRO-MEMO-2024-017",
        "ccf": {"donor_id": NEW_DONOR_ID},
    });

    // Only an authenticated certifying scientist may correct.
    assert_eq!(post(d, &path, None, body.clone()).0, 401);
    assert_eq!(post(d, &path, Some(VIEWER_TOKEN), body.clone()).0, 403);
    assert_eq!(post(d, &path, Some(OPERATOR_TOKEN), body.clone()).0, 403);

    // Results, the destination and anything else outside the CCF cannot be changed this way.
    for bad in [
        serde_json::json!({"reason": "r", "document_ref": "D", "ccf": {"donor_id": "1"},
            "results": ["positive"]}),
        serde_json::json!({"reason": "r", "document_ref": "D", "ccf": {"results": ["positive"]}}),
        serde_json::json!({"reason": "r", "document_ref": "D",
            "ccf": {"positive_analytes": ["benzoylecgonine"]}}),
        serde_json::json!({"reason": "r", "document_ref": "D", "ccf": {"mro_id": "MRO-7777"}}),
    ] {
        let (s, b) = post(d, &path, Some(TOKEN), bad.clone());
        assert!(
            (400..500).contains(&s) && s != 404,
            "{bad} accepted: {s} {b}"
        );
    }
    // A reason and a document are required, and something must change.
    for (bad, want) in [
        (
            serde_json::json!({"reason": " ", "document_ref": "D", "ccf": {"donor_id": "1"}}),
            409,
        ),
        (
            serde_json::json!({"reason": "r", "document_ref": "", "ccf": {"donor_id": "1"}}),
            409,
        ),
        (
            serde_json::json!({"reason": "r", "document_ref": "D", "ccf": {}}),
            409,
        ),
        (
            serde_json::json!({"reason": "r", "document_ref": "D", "ccf": {"collector_name": ""}}),
            422,
        ),
        (
            serde_json::json!({"reason": "r", "document_ref": "D",
                "ccf": {"collected_on": "04/03/2024"}}),
            422,
        ),
    ] {
        let (s, b) = post(d, &path, Some(TOKEN), bad.clone());
        assert_eq!(s, want, "{bad}: {b}");
    }
    // Nothing of the refusals reached the MRO or the record.
    assert_eq!(lab.rx.requests().len(), 1);
    let rec = d.specimen("SPEC-C1").unwrap();
    assert_eq!(rec["release"]["report_id"], old_id.as_str());
    assert_eq!(rec["accession"]["ccf"]["collector"]["name"], "Chris Sample");

    // The correction.
    let (s, resp) = post(d, &path, Some(TOKEN), body.clone());
    assert_eq!(s, 200, "{resp}");
    let resp: serde_json::Value = serde_json::from_str(&resp).unwrap();
    let c = &resp["corrected"];
    let new_id = c["report_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, old_id);
    assert_eq!(c["replaces"], old_id.as_str());
    assert_eq!(c["mro_id"], "MRO-0042");
    assert_eq!(c["fields"], serde_json::json!(["donor_id"]));

    // The MRO gets the corrected report, signed, naming the one it replaces.
    assert!(
        lab.rx
            .wait_answered_2xx(&new_id, Duration::from_secs(30))
            .is_some()
    );
    let got = lab.rx.with_key(&new_id);
    assert_eq!(got[0].content_type, "application/jose");
    let payload = verified_payload(lab.dir.path(), &lab.config, &got[0].body);
    assert_eq!(payload["report_id"], new_id.as_str());
    assert_eq!(payload["replaces"], old_id.as_str());
    assert_eq!(payload["donor_id"], NEW_DONOR_ID);
    assert_eq!(payload["results"], serde_json::json!(["negative"]));
    assert_eq!(payload["mro"]["id"], "MRO-0042");
    assert_eq!(payload["collector"]["name"], "Chris Sample");
    let old_payload = verified_payload(
        lab.dir.path(),
        &lab.config,
        &lab.rx.with_key(&old_id)[0].body,
    );
    assert_eq!(old_payload["donor_id"], "000-00-0000");
    assert!(old_payload.get("replaces").is_none());

    // Old and new, as stored.
    let old = report_status(d, &old_id);
    assert_eq!(old["superseded_by"], new_id.as_str());
    let new = report_status(d, &new_id);
    assert_eq!(new["replaces"], old_id.as_str());
    assert_eq!(new["mro_id"], "MRO-0042");
    assert!(new["superseded_by"].is_null());
    wait_until("delivery recorded", Duration::from_secs(30), || {
        report_status(d, &new_id)["delivery"]["status"] == "delivered"
    });
    let rec = d.specimen("SPEC-C1").unwrap();
    assert_eq!(rec["state"], "released");
    assert_eq!(rec["release"]["report_id"], new_id.as_str());
    assert_eq!(
        rec["release"]["meaning"],
        "corrected report reviewed and released"
    );
    assert_eq!(rec["release"]["content_sha256"], new["content_sha256"]);
    let rc = &rec["report_corrections"][0];
    assert_eq!(rc["replaces"], old_id.as_str());
    assert_eq!(rc["document"], "MRO-MEMO-2024-017");
    assert_eq!(rc["previous"]["donor_id"], "000-00-0000");
    assert_eq!(rc["superseded_release"]["meaning"], "reviewed and released");

    // The superseded report cannot be corrected again; the new one can.
    let (s, b) = post(d, &path, Some(TOKEN), body.clone());
    assert_eq!(s, 409, "{b}");
    assert!(b.contains(&new_id), "{b}");

    // Results still change only through a new evaluation: new results are refused.
    let late = oru("SPEC-C1-9", "SPEC-C1", &[("COC300", "900", "ng/mL")]);
    assert_ne!(ack_code(&send(d.addr("lab"), &late).unwrap()), "AA");
    assert_eq!(
        d.specimen("SPEC-C1").unwrap()["evaluation"],
        rec["evaluation"]
    );

    let (_, v) = d.get("/api/audit/verify", Some(TOKEN));
    assert!(v.contains("\"ok\":true"), "{v}");
    assert_eq!(lab.d.term(), Some(0));
    let store = custodian::store::Store::open(&lab.dir.path().join("store")).unwrap();
    let entries: Vec<_> = store
        .audit_entries(1)
        .flatten()
        .map(|(_, r)| r.entry)
        .filter(|e| e.action == "report_corrected")
        .collect();
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.subject, "SPEC-C1");
    assert_eq!(e.actor, "user:Dr. Test Scientist");
    let text = format!("{e:?}");
    assert!(text.contains(&old_id) && text.contains(&new_id), "{text}");
    assert!(text.contains("donor_id"), "field names are listed: {text}");
    for donor_data in [NEW_DONOR_ID, "000-00-0000", "transposed", "MRO-MEMO"] {
        assert!(
            !text.contains(donor_data),
            "audit entry holds {donor_data}: {text}"
        );
    }
}

#[test]
fn unknown_and_unreleased_reports_are_refused_and_the_cli_corrects() {
    let lab = lab();
    let d = &lab.d;
    prepare_negative(d, "SPEC-C2");
    let body = serde_json::json!({
        "reason": "collector name misspelled", "document_ref": "MEMO-2",
        "ccf": {"collector_name": "Chris Sampel"},
    });
    // Not yet released: there is no report to correct, not even under the specimen's id.
    for id in ["R-NOPE", "SPEC-C2", "DRAFT"] {
        let (s, b) = post(
            d,
            &format!("/api/reports/{id}/correct"),
            Some(TOKEN),
            body.clone(),
        );
        assert_eq!(s, 404, "{id}: {b}");
    }
    assert_eq!(d.specimen("SPEC-C2").unwrap()["state"], "ready_for_review");
    assert!(lab.rx.requests().is_empty());

    let old_id = release(d, "SPEC-C2");
    // The CLI needs at least one field.
    let out = d.cli(&[
        "review",
        "correct",
        &old_id,
        "--reason",
        "r",
        "--document",
        "D",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = d.cli(&[
        "review",
        "correct",
        &old_id,
        "--reason",
        "employer id wrong on the CCF copy",
        "--document",
        "MEMO-3",
        "--employer-id",
        "EMP-0002",
        "--reason-for-test",
        "post-accident",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let new_id = v["corrected"]["report_id"].as_str().unwrap().to_string();
    assert_eq!(v["corrected"]["replaces"], old_id.as_str());
    assert_eq!(
        v["corrected"]["fields"],
        serde_json::json!(["employer.id", "reason_for_test"])
    );
    assert!(
        lab.rx
            .wait_answered_2xx(&new_id, Duration::from_secs(30))
            .is_some()
    );
    let payload = verified_payload(
        lab.dir.path(),
        &lab.config,
        &lab.rx.with_key(&new_id)[0].body,
    );
    assert_eq!(payload["replaces"], old_id.as_str());
    assert_eq!(payload["employer"]["id"], "EMP-0002");
    assert_eq!(payload["reason_for_test"], "post-accident");
    // A viewer's token is refused by the CLI as by the API.
    let out = Command::new(bin())
        .args([
            "review",
            "correct",
            &new_id,
            "--reason",
            "r",
            "--document",
            "D",
        ])
        .args(["--donor-id", "1", "--config"])
        .arg(&lab.config)
        .env("CUSTODIAN_TOKEN", VIEWER_TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    let (_, v) = d.get("/api/audit/verify", Some(TOKEN));
    assert!(v.contains("\"ok\":true"), "{v}");
}
