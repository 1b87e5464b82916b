//! Analytical runs, their QC and each specimen's result history, through the real daemon (port
//! 0, temporary store): results count only from an accepted run; nothing is chosen by recency
//! ("test until negative" is impossible); a correction (OBX-11 C) replaces its source's result;
//! a test not done (X) leaves the measure missing; results after release are refused.

mod common;
#[path = "common/mro.rs"]
mod mro;

use common::*;
use std::process::Command;

/// A validity analyzer that sends its run id (OBR-21.1) and the sample's role (SPM-11):
/// creatinine, SG, pH, nitrite and a glutaraldehyde test.
const CHEM: &str = r#"
[[analyzer]]
name = "chem"
listen = "127.0.0.1:0"
[analyzer.mapping]
specimen_id = "OBR-3.1"
bottle = { field = "OBR-20.1", primary = ["A"], split = ["B"], default = "primary" }
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
code = "GLUT"
kind = "adulterant"
target = "glutaraldehyde"
[analyzer.mapping.runs]
kind = "validity"
run_id = "OBR-21.1"
role = { field = "SPM-11.1", control = ["Q"], calibrator = ["C"] }
auto_accept = true
qc = [
  { code = "CREA", sample = "QC-V", level = "creatinine 10", expect = "within", value = 10, tolerance_percent = 20 },
  { code = "SG", sample = "QC-V", level = "1.0150", expect = "within", value = 1.0150, tolerance_percent = 0.02 },
  { code = "PH", sample = "QC-V", level = "pH 7", expect = "within", value = 7, tolerance_percent = 5 },
  { code = "GLUT", sample = "QC-V", level = "negative", expect = "not_identified" },
  { code = "GLUT", sample = "QC-GLUT", level = "positive", expect = "identified" },
]
"#;

/// One message of the `chem` analyzer in `run`: OBX lines given as (code, value-type, value,
/// unit, status); `role` makes it a control (`Q`) or calibrator (`C`).
fn chem(
    control: &str,
    sample: &str,
    run: &str,
    role: Option<&str>,
    obx: &[(&str, &str, &str, &str, &str)],
) -> Vec<u8> {
    let mut m = format!(
        "MSH|^~\\&|CHEM|LAB|CUSTODIAN|LAB|20261123101500||ORU^R01^ORU_R01|{control}|P|2.5.1\rPID|1\rOBR|1||{sample}^LAB|VAL||||||||||||||||A|{run}\r"
    );
    if let Some(r) = role {
        m.push_str(&format!("SPM|1|{sample}|||||||||{r}\r"));
    }
    for (i, (code, vt, value, unit, status)) in obx.iter().enumerate() {
        m.push_str(&format!(
            "OBX|{}|{vt}|{code}^{code}^L||{value}|{unit}|||||{status}\r",
            i + 1
        ));
    }
    m.into_bytes()
}

fn aa(d: &Daemon, analyzer: &str, msg: &[u8]) {
    let ack = send(d.addr(analyzer), msg).unwrap();
    assert_eq!(ack_code(&ack), "AA", "{ack}\n{}", d.log());
}

/// The closing QC of `chem`'s run `run`: every control passes (`glut_control` adds the
/// positive glutaraldehyde control a run with a GLUT test needs).
fn close_chem(d: &Daemon, run: &str, glut_control: bool) {
    aa(
        d,
        "chem",
        &chem(
            &format!("{run}-QC-V"),
            "QC-V",
            run,
            Some("Q"),
            &[
                ("CREA", "NM", "10.2", "mg/dL", "F"),
                ("SG", "NM", "1.0150", "", "F"),
                ("PH", "NM", "7.0", "pH", "F"),
                ("GLUT", "ST", "NEG", "", "F"),
            ],
        ),
    );
    if glut_control {
        aa(
            d,
            "chem",
            &chem(
                &format!("{run}-QC-G"),
                "QC-GLUT",
                run,
                Some("Q"),
                &[("GLUT", "ST", "POS", "", "F")],
            ),
        );
    }
}

/// An accessioned specimen with a negative screen counted (its run accepted).
fn screened(d: &Daemon, id: &str) {
    d.drop_lims(&format!("acc-{id}.xml"), &accession_xml_clean(id))
        .unwrap();
    aa(
        d,
        "lab",
        &oru(
            &format!("{id}-S"),
            id,
            &[
                ("THC50", "0", "ng/mL"),
                ("COC300", "0", "ng/mL"),
                ("OPI2000", "0", "ng/mL"),
                ("AMP1000", "0", "ng/mL"),
                ("PCP25", "0", "ng/mL"),
            ],
        ),
    );
    close_run(d, "lab");
}

fn state(d: &Daemon, id: &str) -> String {
    d.specimen(id).unwrap()["state"]
        .as_str()
        .unwrap()
        .to_string()
}

fn results(d: &Daemon, id: &str) -> serde_json::Value {
    d.specimen(id).unwrap()["evaluation"]["verdict"]["results"].clone()
}

fn start(dir: &std::path::Path, extra: &str) -> Daemon {
    write_config(dir, &format!("{}\n{CHEM}\n{extra}", analyzer("lab")));
    Daemon::start(dir)
}

/// Creatinine first comes back X (not done); the rerun in another run gives 85 mg/dL: the
/// specimen is not invalid, it waited for the measure and is negative.
#[test]
fn creatinine_not_done_then_85_in_a_rerun_is_not_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), "");
    screened(&d, "RX-1");
    aa(
        &d,
        "chem",
        &chem(
            "RX-1-V1",
            "RX-1",
            "R1",
            None,
            &[("CREA", "NM", "", "", "X"), ("PH", "NM", "6.2", "pH", "F")],
        ),
    );
    close_chem(&d, "R1", false);
    let rec = d.specimen("RX-1").unwrap();
    assert_eq!(rec["state"], "screened", "waits for its creatinine: {rec}");
    let x = &rec["result_history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["target"] == "creatinine")
        .unwrap()
        .clone();
    assert_eq!(x["status"], "not_done", "{x}");
    assert_eq!(x["counts"], false);
    assert_ne!(
        results(&d, "RX-1"),
        serde_json::json!(["invalid"]),
        "never invalid for a test not done"
    );
    // The rerun, in another run of the analyzer.
    aa(
        &d,
        "chem",
        &chem(
            "RX-1-V2",
            "RX-1",
            "R2",
            None,
            &[("CREA", "NM", "85", "mg/dL", "F")],
        ),
    );
    close_chem(&d, "R2", false);
    assert_eq!(state(&d, "RX-1"), "ready_for_review");
    assert_eq!(results(&d, "RX-1"), serde_json::json!(["negative"]));
    let rec = d.specimen("RX-1").unwrap();
    assert_eq!(rec["evaluation"]["verdict"]["dilute"], false, "{rec}");
    // Every result is kept, the X too.
    assert_eq!(
        rec["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["target"] == "creatinine")
            .count(),
        2
    );
}

/// An adulterant reported identified, then corrected (OBX-11 C) by the same analyzer to "not
/// identified": not adulterated; the history shows the correction.
#[test]
fn an_adulterant_corrected_to_not_identified_is_not_adulterated() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), "");
    screened(&d, "RC-1");
    aa(
        &d,
        "chem",
        &chem(
            "RC-1-V1",
            "RC-1",
            "R1",
            None,
            &[
                ("CREA", "NM", "85", "mg/dL", "F"),
                ("PH", "NM", "6.2", "pH", "F"),
                ("GLUT", "ST", "POS", "", "F"),
            ],
        ),
    );
    close_chem(&d, "R1", true);
    assert_eq!(state(&d, "RC-1"), "ready_for_review");
    assert_eq!(results(&d, "RC-1"), serde_json::json!(["adulterated"]));
    // The analyzer corrects its result; the run is closed, a correction may still join it.
    aa(
        &d,
        "chem",
        &chem(
            "RC-1-V1-C",
            "RC-1",
            "R1",
            None,
            &[("GLUT", "ST", "NEG", "", "C")],
        ),
    );
    assert_eq!(results(&d, "RC-1"), serde_json::json!(["negative"]));
    assert_eq!(state(&d, "RC-1"), "ready_for_review");
    let rec = d.specimen("RC-1").unwrap();
    let glut: Vec<&serde_json::Value> = rec["result_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["target"] == "glutaraldehyde")
        .collect();
    assert_eq!(glut.len(), 2, "{rec}");
    assert_eq!(glut[0]["value"], "identified");
    assert!(
        glut[0]["why_not"]
            .as_str()
            .unwrap()
            .starts_with("corrected by result #"),
        "{}",
        glut[0]
    );
    assert_eq!(
        (glut[1]["value"].as_str(), glut[1]["counts"].as_bool()),
        (Some("not identified"), Some(true))
    );
    assert_eq!(glut[1]["run"], "chem:R1", "a correction keeps its run");
    // A new (final) result for the closed run is refused.
    let ack = send(
        d.addr("chem"),
        &chem(
            "RC-1-V1-late",
            "RC-1",
            "R1",
            None,
            &[("PH", "NM", "6.3", "pH", "F")],
        ),
    )
    .unwrap();
    assert_eq!(ack_code(&ack), "AE", "{ack}");
    assert!(ack.contains("run is closed"), "{ack}");
}

/// Identified in one accepted run and not in another: held for the certifying scientist with
/// both shown, until one is marked not reportable (audited).
#[test]
fn an_adulterant_identified_in_one_accepted_run_and_not_in_another_holds_the_specimen() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), "");
    screened(&d, "RH-1");
    aa(
        &d,
        "chem",
        &chem(
            "RH-1-V1",
            "RH-1",
            "R1",
            None,
            &[
                ("CREA", "NM", "85", "mg/dL", "F"),
                ("PH", "NM", "6.2", "pH", "F"),
                ("GLUT", "ST", "POS", "", "F"),
            ],
        ),
    );
    close_chem(&d, "R1", true);
    assert_eq!(results(&d, "RH-1"), serde_json::json!(["adulterated"]));
    aa(
        &d,
        "chem",
        &chem(
            "RH-1-V2",
            "RH-1",
            "R2",
            None,
            &[("GLUT", "ST", "NEG", "", "F")],
        ),
    );
    assert_eq!(
        results(&d, "RH-1"),
        serde_json::json!(["adulterated"]),
        "R2 is open: its result does not count yet"
    );
    close_chem(&d, "R2", true);
    let rec = d.specimen("RH-1").unwrap();
    assert_eq!(rec["state"], "held", "{rec}");
    let conflict = &rec["result_conflicts"][0];
    assert_eq!(conflict["target"], "glutaraldehyde", "{rec}");
    let shown: Vec<String> = conflict["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].as_str().unwrap().to_string())
        .collect();
    assert_eq!(shown, ["identified", "not identified"]);
    let (s, body) = d.get("/api/review/RH-1", Some(TOKEN));
    assert_eq!(s, 200, "{body}");
    let item: serde_json::Value = serde_json::from_str(&body).unwrap();
    let why = item["held_because"].as_str().unwrap();
    assert!(
        why.contains("glutaraldehyde") && why.contains("identified") && why.contains("disagree"),
        "{why}"
    );
    assert!(
        item["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["run_state"] == "accepted"),
        "{item}"
    );
    // The certifying scientist marks the first run's result not reportable, with the reason.
    let first = conflict["results"][0][0].as_u64().unwrap().to_string();
    let out = d.cli(&[
        "review",
        "not-reportable",
        "RH-1",
        &first,
        "--reason",
        "carryover from the preceding sample (run R1 sequence 14)",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(&d, "RH-1"), "ready_for_review");
    assert_eq!(results(&d, "RH-1"), serde_json::json!(["negative"]));
    let rec = d.specimen("RH-1").unwrap();
    assert_eq!(rec["result_marks"][0]["by"], "Dr. Test Scientist", "{rec}");
    let (_, audit) = d.get("/api/specimens/RH-1/audit", Some(TOKEN));
    assert!(audit.contains("result_not_reportable"), "{audit}");
    assert!(
        !audit.contains("carryover"),
        "the reason stays in the record, not the audit chain: {audit}"
    );
    // Marked once; only a certifying scientist marks.
    let r = custodian::admin::client::post(
        d.admin,
        &format!("/api/specimens/RH-1/results/{first}/not-reportable"),
        Some(TOKEN),
        &serde_json::json!({"reason": "again"}),
    )
    .unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    let r = custodian::admin::client::post(
        d.admin,
        "/api/specimens/RH-1/results/0/not-reportable",
        Some(OPERATOR_TOKEN),
        &serde_json::json!({"reason": "x"}),
    )
    .unwrap();
    assert_eq!(r.status, 403);
}

/// Results that arrive after release are refused (AE with the reason), quarantined and
/// counted for the alert: a released verdict never changes.
#[test]
fn results_after_release_are_refused_quarantined_and_alerted() {
    let dir = tempfile::tempdir().unwrap();
    let p = mro::pki(dir.path());
    let rx = mro::receiver(&p);
    let cfg = {
        write_config(
            dir.path(),
            &format!(
                "{}\n{CHEM}\n{}",
                analyzer("lab"),
                mro::mro_section(&p, rx.port, "MRO-0042", 5)
            ),
        )
    };
    let out = Command::new(bin())
        .args(["keys", "generate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let d = Daemon::start(dir.path());
    screened(&d, "RR-1");
    aa(
        &d,
        "chem",
        &chem(
            "RR-1-V1",
            "RR-1",
            "R1",
            None,
            &[
                ("CREA", "NM", "85", "mg/dL", "F"),
                ("PH", "NM", "6.2", "pH", "F"),
            ],
        ),
    );
    close_chem(&d, "R1", false);
    let r = custodian::admin::client::post(
        d.admin,
        "/api/review/RR-1/release",
        Some(TOKEN),
        &serde_json::json!({}),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let before = d.specimen("RR-1").unwrap();
    for (control, run, status) in [("RR-1-late", "R9", "F"), ("RR-1-V1-C", "R1", "C")] {
        let ack = send(
            d.addr("chem"),
            &chem(
                control,
                "RR-1",
                run,
                None,
                &[("PH", "NM", "2.0", "pH", status)],
            ),
        )
        .unwrap();
        assert_eq!(ack_code(&ack), "AE", "{ack}");
        assert!(ack.contains("already released"), "{ack}");
    }
    let after = d.specimen("RR-1").unwrap();
    assert_eq!(
        before["evaluation"], after["evaluation"],
        "the verdict stands"
    );
    assert_eq!(before["results"], after["results"]);
    let (_, metrics) = d.get("/metrics", None);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("custodian_results_after_release_total{source=\"chem\"} 2")),
        "{metrics}"
    );
    let (_, q) = d.get("/api/quarantine", Some(TOKEN));
    assert!(q.contains("already released"), "{q}");
}
