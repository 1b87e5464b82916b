//! Ingestion through the real daemon: real third-party MLLP client (python-hl7's `mllp_send`),
//! ACK codes, dedupe, quarantine, the panel guard, the split guard, the LIMS spool and the
//! specimen state machine, and the operator CLI.

mod common;
use common::*;
use std::process::Command;

/// python-hl7's `mllp_send`: on PATH, or in the scripts directory of the `python3` on PATH
/// (pip may install it where no shim points yet).
fn mllp_send_program() -> std::path::PathBuf {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v mllp_send"])
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !p.is_empty() {
            return p.into();
        }
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3 is needed for python-hl7");
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("mllp_send")
}

fn mllp_send(addr: std::net::SocketAddr, file: &std::path::Path) -> String {
    let out = Command::new(mllp_send_program())
        .arg("--loose")
        .arg("-p")
        .arg(addr.port().to_string())
        .arg("-f")
        .arg(file)
        .arg("127.0.0.1")
        .output()
        .expect("python-hl7's mllp_send must be installed (pip install hl7; tests/run.sh does it)");
    assert!(
        out.status.success(),
        "mllp_send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn python_hl7_client_gets_aa_ar_ae() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &example_analyzer("ia"));
    set_default_profile(&cfg, "part40-2023");
    let d = Daemon::start(dir.path());
    let data = root().join("tests/data/hl7");
    for example in ["oru-screen.hl7", "oru-validity.hl7"] {
        let out = mllp_send(d.addr("ia"), &data.join(example));
        assert!(out.contains("MSA|AA|"), "{example}: {out}\n{}", d.log());
    }
    // The confirmation example is for bottle B: the first laboratory refuses it (40.175(c)).
    let out = mllp_send(d.addr("ia"), &data.join("oru-confirmation.hl7"));
    assert!(
        out.contains("MSA|AE|") && out.contains("40.175(c)"),
        "{out}"
    );
    let out = mllp_send(d.addr("ia"), &data.join("oru-unmapped-code.hl7"));
    assert!(out.contains("MSA|AE|"), "unmapped code: {out}");
    assert!(out.contains("ERR|"), "AE carries an ERR segment: {out}");

    // A malformed message (a blank segment truncates hl7-parser): AR with ERR, over raw MLLP
    // because mllp_send --loose would repair the separators.
    let bad = std::fs::read(data.join("malformed-blank-line.hl7")).unwrap();
    let ack = send(d.addr("ia"), &bad).unwrap();
    assert_eq!(ack_code(&ack), "AR", "{ack}");
    assert!(ack.contains("ERR|"), "{ack}");
    // Both refused messages are quarantined, counted, and nothing of them was attached.
    let (_, metrics) = d.get("/metrics", None);
    assert!(metrics.contains("custodian_quarantined_total"), "{metrics}");
}

#[test]
fn ack_only_after_commit_dedupe_and_state_machine() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &analyzer("lab"));
    let mut d = Daemon::start(dir.path());
    let a = d.addr("lab");

    // Results before the accession are kept and attached later.
    let screen = oru(
        "M-1",
        "SPEC-1",
        &[
            ("THC50", "12", "ng/mL"),
            ("COC300", "420", "ng/mL"),
            ("OPI2000", "0", "ng/mL"),
            ("AMP1000", "0", "ng/mL"),
            ("PCP25", "0", "ng/mL"),
        ],
    );
    let ack = send(a, &screen).unwrap();
    assert_eq!(ack_code(&ack), "AA", "{ack}");
    assert_eq!(ack_control_id(&ack), "M-1", "MSA-2 mirrors MSH-10");
    let rec = d.specimen("SPEC-1").unwrap();
    assert_eq!(rec["state"], "awaiting_accession");
    assert_eq!(rec["results"].as_array().unwrap().len(), 5);

    // The same message again: AA, stored once.
    let ack = send(a, &screen).unwrap();
    assert_eq!(ack_code(&ack), "AA");
    assert_eq!(
        d.specimen("SPEC-1").unwrap()["results"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    d.drop_lims("acc-1.xml", &accession_xml_clean("SPEC-1"))
        .unwrap();
    let rec = d.specimen("SPEC-1").unwrap();
    assert_eq!(rec["state"], "screened", "{rec}");

    let validity = oru(
        "M-2",
        "SPEC-1",
        &[
            ("CREA", "85", "mg/dL"),
            ("PH", "6.1", "pH"),
            ("SG", "1.015", ""),
            ("NIT", "0", "mcg/mL"),
        ],
    );
    assert_eq!(ack_code(&send(a, &validity).unwrap()), "AA");
    assert_eq!(
        d.specimen("SPEC-1").unwrap()["state"],
        "screened",
        "the run is open: its results do not count yet"
    );
    // The closing QC set closes the run, every control passes: accepted automatically.
    close_run(&d, "lab");
    assert_eq!(d.specimen("SPEC-1").unwrap()["state"], "confirming");

    let confirm = oru("M-3", "SPEC-1", &[("BZEC", "212", "ng/mL")]);
    assert_eq!(ack_code(&send(a, &confirm).unwrap()), "AA");
    // A run with a confirmation needs a named certifying scientist.
    close_run(&d, "lab");
    assert_eq!(d.specimen("SPEC-1").unwrap()["state"], "confirming");
    accept_pending_runs(&d);
    let rec = d.specimen("SPEC-1").unwrap();
    assert_eq!(rec["state"], "ready_for_review", "{rec}");
    let v = &rec["evaluation"]["verdict"];
    assert_eq!(v["results"], serde_json::json!(["positive"]));
    assert_eq!(
        v["positive_analytes"],
        serde_json::json!(["benzoylecgonine"])
    );

    // CLI while running (through the admin API), then after a clean stop (from the store).
    let out = d.cli(&["specimen", "list", "--state", "ready_for_review"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SPEC-1"));
    assert_eq!(d.term(), Some(0), "SIGTERM exits 0");
    let out = d.cli(&["specimen", "show", "SPEC-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["state"], "ready_for_review");
    assert_eq!(shown["results"].as_array().unwrap().len(), 10);
    let out = d.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ok\": true"));
}

#[test]
fn unusable_messages_get_ae_and_nothing_is_attached() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &analyzer("lab"));
    let d = Daemon::start(dir.path());
    let a = d.addr("lab");
    d.drop_lims("acc-2.xml", &accession_xml_clean("SPEC-2"))
        .unwrap();

    // Panel guard: oxycodone is not in the 2001 DOT panel of this specimen.
    let ack = send(a, &oru("P-1", "SPEC-2", &[("OXYCC", "300", "ng/mL")])).unwrap();
    assert_eq!(ack_code(&ack), "AE", "{ack}");
    // Non-numeric value, wrong unit, unmapped code.
    for (id, obx) in [
        ("P-2", ("THC50", "high", "ng/mL")),
        ("P-3", ("THC50", "12", "mg/L")),
        ("P-4", ("XYZ", "1", "ng/mL")),
    ] {
        let ack = send(a, &oru(id, "SPEC-2", &[obx])).unwrap();
        assert_eq!(ack_code(&ack), "AE", "{id}: {ack}");
        assert!(ack.contains("ERR|"), "{ack}");
    }
    // A result for bottle B on the first laboratory's specimen (40.175(c)).
    let ack = send(
        a,
        &oru_bottle("P-5", "SPEC-2", "B", &[("THC50", "60", "ng/mL")]),
    )
    .unwrap();
    assert_eq!(ack_code(&ack), "AE", "{ack}");
    // Not an ORU: AR.
    let adt = b"MSH|^~\\&|ANALYZER|LAB|CUSTODIAN|LAB|20261123101500||ADT^A01^ADT_A01|P-6|P|2.5.1\rPID|1\r".to_vec();
    assert_eq!(ack_code(&send(a, &adt).unwrap()), "AR");
    // An unsupported character set: AR.
    let latin = b"MSH|^~\\&|ANALYZER|LAB|CUSTODIAN|LAB|20261123101500||ORU^R01^ORU_R01|P-7|P|2.5.1||||||KOI8-R\rPID|1\r".to_vec();
    assert_eq!(ack_code(&send(a, &latin).unwrap()), "AR");

    let rec = d.specimen("SPEC-2").unwrap();
    assert!(
        rec["results"].as_array().unwrap().is_empty(),
        "nothing attached: {rec}"
    );
    let (_, metrics) = d.get("/metrics", None);
    assert!(
        metrics.contains("custodian_panel_guard_refusals_total{analyzer=\"lab\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("custodian_split_results_refused_total{analyzer=\"lab\"} 1"),
        "{metrics}"
    );
}

#[test]
fn lims_documents_are_settled_or_moved_aside_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &analyzer("lab"));
    let d = Daemon::start(dir.path());

    // A held accession, released by its correction.
    d.drop_lims("acc-3.xml", &accession_xml("SPEC-3")).unwrap();
    assert_eq!(d.specimen("SPEC-3").unwrap()["state"], "held");
    let corr =
        std::fs::read_to_string(root().join("tests/data/lims/correction-example.xml")).unwrap();
    let id = example_specimen_id(&corr);
    d.drop_lims("corr-3.xml", corr.replace(&id, "SPEC-3").as_bytes())
        .unwrap();
    assert_eq!(d.specimen("SPEC-3").unwrap()["state"], "accessioned");

    // The same document again (under another name) is a duplicate: settled, not applied twice.
    d.drop_lims("corr-3b.xml", corr.replace(&id, "SPEC-3").as_bytes())
        .unwrap();
    assert_eq!(
        d.specimen("SPEC-3").unwrap()["corrections"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Bad XML goes to rejected/ with a reason naming line and element.
    let bad = std::fs::read(root().join("tests/data/lims/accession-invalid-ssn.xml")).unwrap();
    let reason = d.drop_lims("bad.xml", &bad).unwrap_err();
    assert!(reason.contains("line"), "{reason}");
    assert!(
        !reason.contains("123"),
        "the reason never quotes content: {reason}"
    );
    // A correction for a specimen never accessioned is rejected.
    let reason = d
        .drop_lims("corr-x.xml", corr.replace(&id, "NOPE-1").as_bytes())
        .unwrap_err();
    assert!(reason.contains("accession"), "{reason}");

    // A confirmation batch attaches results to every specimen it names.
    d.drop_lims("acc-4.xml", &accession_xml_clean("SPEC-4"))
        .unwrap();
    let batch =
        std::fs::read_to_string(root().join("tests/data/lims/confirmation-batch-example.xml"))
            .unwrap();
    assert!(batch.contains("<specimen"), "example has specimens");
}

#[test]
fn admin_api_requires_a_valid_token() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "");
    let d = Daemon::start(dir.path());
    assert_eq!(d.get("/healthz", None).0, 200);
    assert_eq!(d.get("/readyz", None).0, 200);
    assert_eq!(d.get("/api/specimens/X", None).0, 401);
    assert_eq!(d.get("/api/specimens/X", Some("wrong")).0, 401);
    assert_eq!(d.get("/api/specimens/X", Some(VIEWER_TOKEN)).0, 404);
    assert_eq!(
        d.get("/api/specimens?state=held", Some(VIEWER_TOKEN)).0,
        200
    );
    assert_eq!(
        d.get("/api/specimens?state=nonsense", Some(VIEWER_TOKEN)).0,
        400
    );
}

#[test]
fn a_reused_control_id_with_other_results_is_refused_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &analyzer("lab"));
    let d = Daemon::start(dir.path());
    let a = d.addr("lab");
    let first = oru("R-1", "SPR-A", &[("THC50", "12", "ng/mL")]);
    assert_eq!(ack_code(&send(a, &first).unwrap()), "AA");
    // The same message again, even with another timestamp: a duplicate, AA, stored once.
    let again = String::from_utf8(first.clone())
        .unwrap()
        .replace("20261123101500", "20261123101501");
    assert_eq!(ack_code(&send(a, again.as_bytes()).unwrap()), "AA");
    // The instrument's counter was reset: same MSH-10, other specimen and results.
    let other = oru("R-1", "SPR-B", &[("THC50", "80", "ng/mL")]);
    let ack = send(a, &other).unwrap();
    assert_eq!(ack_code(&ack), "AE", "{ack}");
    assert!(ack.contains("ERR|"), "{ack}");
    // A precise refusal (HL7 table 0357 code 205, duplicate key), never "not stored durably;
    // send again" (207), which would make the analyzer resend it forever.
    assert!(
        ack.contains(
            "message control id already used for different results; not stored; do not resend"
        ),
        "{ack}"
    );
    assert!(
        ack.contains("|205^Duplicate key identifier^HL70357|"),
        "{ack}"
    );
    assert!(!ack.contains("send again"), "{ack}");
    assert!(
        d.specimen("SPR-B").is_none(),
        "nothing stored for the reused id"
    );
    let (_, metrics) = d.get("/metrics", None);
    let value = |name: &str, label: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(label))
            .and_then(|l| l.rsplit(' ').next())
            .map(|v| v.to_string())
    };
    assert_eq!(
        value(
            "custodian_messages_reused_control_id_total",
            "analyzer=\"lab\""
        )
        .as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        value("custodian_quarantined_total", "source=\"lab\"").as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        value("custodian_messages_not_durable_total", "analyzer=\"lab\""),
        None,
        "{metrics}"
    );
    assert_eq!(
        d.specimen("SPR-A").unwrap()["results"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
