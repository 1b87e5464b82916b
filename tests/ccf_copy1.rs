//! CCF Copy 1 and the MRO's requests for quantitative values, through the real daemon:
//! - a positive report carries its certified Copy 1 (Step 5A rendered under the image of Copy 1
//!   as received), python's jwcrypto verifies the report and the image's SHA-256 matches;
//! - a non-negative result without the image of Copy 1 as received is held in review with that
//!   reason (a negative without it releases);
//! - the MRO's general written request (40.97(e), in the MRO directory) puts the values in the
//!   report under the 2001 edition; a case-by-case request after release sends a supplementary
//!   signed report (`supplements`) with the values to the same MRO.

mod common;
#[path = "common/mro.rs"]
mod mro;

use common::*;
use mro::{Pki, pki, receiver};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The example accession for `id` without its image of Copy 1.
fn accession_without_image(id: &str) -> Vec<u8> {
    let text = String::from_utf8(accession_xml_clean(id)).unwrap();
    let start = text
        .find("  <!-- The image of Copy 1")
        .expect("example has an image");
    let end = text.find("</ccf-image>").unwrap() + "</ccf-image>\n".len();
    format!("{}{}", &text[..start], &text[end..]).into_bytes()
}

fn send_results(d: &Daemon, id: &str, cocaine: &str) {
    let a = d.addr("lab");
    let screen = oru(
        &format!("{id}-1"),
        id,
        &[
            ("THC50", "0", "ng/mL"),
            ("COC300", cocaine, "ng/mL"),
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
    if cocaine != "0" {
        let confirm = oru(&format!("{id}-3"), id, &[("BZEC", "480", "ng/mL")]);
        assert_eq!(ack_code(&send(a, &confirm).unwrap()), "AA");
    }
    // The run closes with its QC; a confirmation run is accepted by a named scientist.
    close_run(d, "lab");
    accept_pending_runs(d);
    assert_eq!(d.specimen(id).unwrap()["state"], "ready_for_review");
}

fn post(d: &Daemon, path: &str, token: &str, body: serde_json::Value) -> (u16, String) {
    let r = custodian::admin::client::post(d.admin, path, Some(token), &body).unwrap();
    (r.status, r.body)
}

fn release(d: &Daemon, id: &str) -> String {
    let (s, body) = post(
        d,
        &format!("/api/review/{id}/release"),
        TOKEN,
        serde_json::json!({}),
    );
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["released"][0]["report_id"].as_str().unwrap().to_string()
}

fn wait_for_body(rx: &mro::Receiver, key: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = rx.with_key(key).into_iter().find(|r| r.answered.is_some()) {
            return r.body;
        }
        assert!(Instant::now() < deadline, "report {key} never arrived");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// jwcrypto verifies the JWS with the laboratory's exported public key and checks the certified
/// Copy 1's SHA-256 against its bytes; prints the payload.
const VERIFY_PY: &str = r#"
import base64, hashlib, json, sys
from jwcrypto import jwk, jws
keys = jwk.JWKSet.from_json(open(sys.argv[1]).read())
t = jws.JWS()
t.deserialize(open(sys.argv[2]).read().strip())
assert t.jose_header.get("alg") == "EdDSA", t.jose_header
t.verify(keys.get_key(t.jose_header["kid"]))
payload = json.loads(t.payload)
copy = payload.get("ccf_copy1")
if copy is not None:
    data = base64.b64decode(copy["data"], validate=True)
    if hashlib.sha256(data).hexdigest() != copy["sha256"]:
        sys.exit("ccf_copy1: sha256 does not match its data")
    if copy["media_type"] == "application/pdf" and not data.startswith(b"%PDF-"):
        sys.exit("ccf_copy1: not a PDF")
print(json.dumps(payload))
"#;

fn jwcrypto(dir: &Path, cfg: &Path, name: &str, jws: &str) -> serde_json::Value {
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
    let out = Command::new("python3")
        .arg("-c")
        .arg(VERIFY_PY)
        .arg(&jwks_path)
        .arg(&jws_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jwcrypto (tests/run.sh installs it) did not verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn setup(dir: &Path, p: &Pki, port: u16, extra_mro: &str) -> std::path::PathBuf {
    let section = mro::mro_section(p, port, "MRO-0042", 5).replacen(
        "[[mro]]\n",
        &format!("[[mro]]\n{extra_mro}"),
        1,
    );
    let cfg = write_config(dir, &format!("{}\n{section}\n", analyzer("lab")));
    generate_key(&cfg);
    cfg
}

#[test]
fn a_positive_report_carries_its_certified_copy1_and_jwcrypto_verifies_both() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let rx = receiver(&p);
    let cfg = setup(dir.path(), &p, rx.port, "");
    let d = Daemon::start(dir.path());
    d.drop_lims("acc-C1.xml", &accession_xml_clean("SPEC-C1"))
        .unwrap();
    send_results(&d, "SPEC-C1", "900");
    // The image as received is stored with the specimen, its hash in the record.
    let rec = d.specimen("SPEC-C1").unwrap();
    assert_eq!(rec["ccf_image"]["media_type"], "image/png");
    assert_eq!(rec["ccf_image"]["sha256"].as_str().unwrap().len(), 64);
    let (s, body) = d.get("/api/review/SPEC-C1", Some(VIEWER_TOKEN));
    assert_eq!(s, 200, "{body}");
    let item: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(item["held_because"].is_null(), "{item}");
    assert_eq!(item["ccf_image"]["media_type"], "image/png");

    let report_id = release(&d, "SPEC-C1");
    let body = wait_for_body(&rx, &report_id);
    let payload = jwcrypto(dir.path(), &cfg, "c1.jws", &body);
    assert_eq!(payload["results"], serde_json::json!(["positive"]));
    assert_eq!(payload["specimen_type"], "urine");
    let copy = &payload["ccf_copy1"];
    assert_eq!(copy["media_type"], "application/pdf", "{payload}");
    // The certified copy names the specimen and states the result (Step 5A), read back.
    use base64::Engine;
    let pdf = base64::engine::general_purpose::STANDARD
        .decode(copy["data"].as_str().unwrap())
        .unwrap();
    custodian::codec::copy1::check(
        &pdf,
        "SPEC-C1",
        &[custodian::domain::rules::ResultCategory::Positive],
    )
    .unwrap();
    // The release's audit entry names the certified copy's hash: the signature covers it.
    let out = d.cli(&["audit", "show", "SPEC-C1"]);
    let audit = String::from_utf8_lossy(&out.stdout);
    assert!(
        audit.contains(copy["sha256"].as_str().unwrap()),
        "audit: {audit}"
    );
    assert!(audit.contains("ccf_image_received"), "audit: {audit}");
}

#[test]
fn a_non_negative_without_its_copy1_is_held_and_a_negative_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let rx = receiver(&p);
    setup(dir.path(), &p, rx.port, "");
    let d = Daemon::start(dir.path());
    d.drop_lims("acc-H1.xml", &accession_without_image("SPEC-H1"))
        .unwrap();
    send_results(&d, "SPEC-H1", "900");
    let (s, body) = d.get("/api/review/SPEC-H1", Some(VIEWER_TOKEN));
    assert_eq!(s, 200, "{body}");
    let item: serde_json::Value = serde_json::from_str(&body).unwrap();
    let held = item["held_because"].as_str().unwrap_or_default();
    assert!(held.contains("Copy 1"), "{item}");
    let (s, body) = post(
        &d,
        "/api/review/SPEC-H1/release",
        TOKEN,
        serde_json::json!({}),
    );
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("certified Copy 1"), "{body}");
    assert_eq!(d.specimen("SPEC-H1").unwrap()["state"], "ready_for_review");
    assert!(rx.requests().is_empty(), "nothing reached the MRO");

    // A negative may go as the electronic report alone (40.97(b)(2)).
    d.drop_lims("acc-H2.xml", &accession_without_image("SPEC-H2"))
        .unwrap();
    send_results(&d, "SPEC-H2", "0");
    let report_id = release(&d, "SPEC-H2");
    assert!(!wait_for_body(&rx, &report_id).is_empty());
}

#[test]
fn quantitation_requests_general_in_the_directory_and_case_by_case_after_release() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let rx = receiver(&p);
    let cfg = setup(
        dir.path(),
        &p,
        rx.port,
        "quantitation_request = \"MRO-0042 general request of 2026-01-05\"\n",
    );
    let d = Daemon::start(dir.path());
    // General request on file: the 2001 edition's report carries the values.
    d.drop_lims("acc-Q1.xml", &accession_xml_clean("SPEC-Q1"))
        .unwrap();
    send_results(&d, "SPEC-Q1", "900");
    let report_id = release(&d, "SPEC-Q1");
    let payload = jwcrypto(dir.path(), &cfg, "q1.jws", &wait_for_body(&rx, &report_id));
    assert_eq!(payload["profile"], "part40-2001");
    assert_eq!(
        payload["quantitations"]["benzoylecgonine"]["value"], 480,
        "{payload}"
    );
    let rec = d.specimen("SPEC-Q1").unwrap();
    assert_eq!(
        rec["quantitation_request"],
        "general: MRO-0042 general request of 2026-01-05"
    );
    drop(d);

    // Without a general request, a case-by-case request after release gets a supplement.
    let dir2 = tempfile::tempdir().unwrap();
    let p2 = pki(dir2.path());
    let rx2 = receiver(&p2);
    let cfg2 = setup(dir2.path(), &p2, rx2.port, "");
    let d = Daemon::start(dir2.path());
    d.drop_lims("acc-Q2.xml", &accession_xml_clean("SPEC-Q2"))
        .unwrap();
    send_results(&d, "SPEC-Q2", "900");
    let first = release(&d, "SPEC-Q2");
    let released = jwcrypto(dir2.path(), &cfg2, "q2.jws", &wait_for_body(&rx2, &first));
    assert_eq!(released["quantitations"], serde_json::json!({}));
    let (s, body) = post(
        &d,
        "/api/specimens/SPEC-Q2/requests",
        OPERATOR_TOKEN,
        serde_json::json!({"kind": "quantitation", "document_ref": "MRO-Q-77"}),
    );
    assert_eq!(s, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sup_id = answer["result"]["supplement"]["report_id"]
        .as_str()
        .or_else(|| answer["supplement"]["report_id"].as_str())
        .unwrap_or_else(|| panic!("no supplement in {answer}"))
        .to_string();
    let sup = jwcrypto(dir2.path(), &cfg2, "q2s.jws", &wait_for_body(&rx2, &sup_id));
    assert_eq!(sup["supplements"], first.as_str());
    assert_eq!(sup["specimen_id"], "SPEC-Q2");
    assert_eq!(sup["results"], released["results"]);
    assert_eq!(sup["quantitations"]["benzoylecgonine"]["value"], 480);
    assert_eq!(
        sup["ccf_copy1"], released["ccf_copy1"],
        "the certified copy travels again"
    );
    assert!(sup.get("replaces").is_none());
    // A second request adds nothing: refused with the reason, nothing sent.
    let (s, body) = post(
        &d,
        "/api/specimens/SPEC-Q2/requests",
        OPERATOR_TOKEN,
        serde_json::json!({"kind": "quantitation", "document_ref": "MRO-Q-78"}),
    );
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("nothing to supplement"), "{body}");
}

/// A certified-copy document from the LIMS for `id`, stating `results`, carrying `pdf`.
fn certified_copy_xml(id: &str, results: &[&str], pdf: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let results: String = results
        .iter()
        .map(|r| format!("  <result>{r}</result>\n"))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<certified-copy xmlns=\"urn:custodian:lims:1\">\n  <specimen-id>{id}</specimen-id>\n{results}  <certifying-scientist>Dr. Test Scientist</certifying-scientist>\n  <ccf-image media-type=\"application/pdf\">{}</ccf-image>\n</certified-copy>\n",
        base64::engine::general_purpose::STANDARD.encode(pdf)
    )
    .into_bytes()
}

/// A PDF whose Step 5A names `id` and states a positive result (as a LIMS would produce it).
fn lims_pdf(id: &str) -> Vec<u8> {
    use base64::Engine;
    let text = String::from_utf8(accession_xml_clean(id)).unwrap();
    let start = text.find("<ccf-image media-type=\"image/png\">").unwrap()
        + "<ccf-image media-type=\"image/png\">".len();
    let end = text.find("</ccf-image>").unwrap();
    let b64: String = text[start..end].split_whitespace().collect();
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    custodian::codec::copy1::render(
        &png,
        custodian::domain::copy1::MediaType::Png,
        &custodian::domain::copy1::Step5a {
            specimen_id: id.into(),
            results: vec![custodian::domain::rules::ResultCategory::Positive],
            dilute: false,
            positive_analytes: vec!["benzoylecgonine".into()],
            remarks: vec![],
            certifying_scientist: "Dr. Test Scientist".into(),
            date: "2026-12-01".into(),
            report_id: "LIMS-CERT-1".into(),
            laboratory: "Test Laboratory".into(),
        },
    )
    .unwrap()
}

#[test]
fn a_certified_copy_from_the_lims_is_checked_against_the_verdict_and_travels_as_supplied() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let rx = receiver(&p);
    let cfg = setup(dir.path(), &p, rx.port, "");
    let d = Daemon::start(dir.path());
    d.drop_lims("acc-L1.xml", &accession_xml_clean("SPEC-L1"))
        .unwrap();
    send_results(&d, "SPEC-L1", "900");
    let held = |d: &Daemon| -> String {
        let (s, body) = d.get("/api/review/SPEC-L1", Some(VIEWER_TOKEN));
        assert_eq!(s, 200, "{body}");
        let item: serde_json::Value = serde_json::from_str(&body).unwrap();
        item["held_because"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let wait_copy = |d: &Daemon, sha: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while d.specimen("SPEC-L1").unwrap()["certified_copy1"]["image"]["sha256"] != sha {
            assert!(Instant::now() < deadline, "certified copy never stored");
            std::thread::sleep(Duration::from_millis(25));
        }
    };
    let pdf = lims_pdf("SPEC-L1");
    let sha = custodian::domain::copy1::sha256_hex(&pdf);

    // The LIMS states another result than the verdict: held, with that reason.
    d.drop_lims(
        "cert-L1-a.xml",
        &certified_copy_xml("SPEC-L1", &["negative"], &pdf),
    )
    .unwrap();
    wait_copy(&d, &sha);
    assert!(held(&d).contains("states other results"), "{}", held(&d));
    let (s, body) = post(
        &d,
        "/api/review/SPEC-L1/release",
        TOKEN,
        serde_json::json!({}),
    );
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("does not match"), "{body}");

    // The statement is right but the PDF's Step 5A names another specimen: held.
    let other = lims_pdf("SPEC-L9");
    let other_sha = custodian::domain::copy1::sha256_hex(&other);
    d.drop_lims(
        "cert-L1-b.xml",
        &certified_copy_xml("SPEC-L1", &["positive"], &other),
    )
    .unwrap();
    wait_copy(&d, &other_sha);
    let (s, body) = post(
        &d,
        "/api/review/SPEC-L1/release",
        TOKEN,
        serde_json::json!({}),
    );
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("specimen ID"), "{body}");

    // The right copy: it travels exactly as the LIMS supplied it.
    d.drop_lims(
        "cert-L1-c.xml",
        &certified_copy_xml("SPEC-L1", &["positive"], &pdf),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !held(&d).is_empty() {
        assert!(Instant::now() < deadline, "still held: {}", held(&d));
        std::thread::sleep(Duration::from_millis(25));
    }
    let report_id = release(&d, "SPEC-L1");
    let payload = jwcrypto(dir.path(), &cfg, "l1.jws", &wait_for_body(&rx, &report_id));
    assert_eq!(payload["ccf_copy1"]["sha256"], sha.as_str());
    assert_eq!(payload["ccf_copy1"]["media_type"], "application/pdf");
    // After release no certified copy is taken any more.
    let why = d
        .drop_lims(
            "cert-L1-d.xml",
            &certified_copy_xml("SPEC-L1", &["positive"], &lims_pdf("SPEC-L8")),
        )
        .unwrap_err();
    assert!(why.contains("already released"), "{why}");
}
