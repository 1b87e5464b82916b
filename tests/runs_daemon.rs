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
                // The oxidizing-adulterant test the edition requires before review (40.91(c)).
                ("NIT", "0", "mcg/mL"),
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

fn run_json(d: &Daemon, key: &str) -> serde_json::Value {
    let (s, body) = d.get(&format!("/api/runs/{}", url_encode(key)), Some(TOKEN));
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn runs_in(d: &Daemon, state: &str) -> Vec<serde_json::Value> {
    let (s, body) = d.get(&format!("/api/runs?state={state}"), Some(VIEWER_TOKEN));
    assert_eq!(s, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn cli_ok(d: &Daemon, args: &[&str]) -> String {
    let out = d.cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A run whose control failed: its results do not count and the specimen waits; it cannot be
/// accepted; rejecting it (reason required, audited) asks for a retest of its tests, and a
/// rerun in an accepted run answers it.
#[test]
fn a_failed_control_keeps_the_results_out_and_rejecting_the_run_asks_for_a_retest() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), "");
    screened(&d, "RF-1");
    aa(
        &d,
        "chem",
        &chem(
            "RF-1-V1",
            "RF-1",
            "R1",
            None,
            &[
                ("CREA", "NM", "85", "mg/dL", "F"),
                ("PH", "NM", "6.2", "pH", "F"),
            ],
        ),
    );
    // The creatinine control reads 20 against its target of 10 +-20 %: failed.
    aa(
        &d,
        "chem",
        &chem(
            "R1-QC-V",
            "QC-V",
            "R1",
            Some("Q"),
            &[
                ("CREA", "NM", "20", "mg/dL", "F"),
                ("SG", "NM", "1.0150", "", "F"),
                ("PH", "NM", "7.0", "pH", "F"),
                ("GLUT", "ST", "NEG", "", "F"),
            ],
        ),
    );
    let run = run_json(&d, "chem:R1");
    assert_eq!(run["state"], "pending", "{run}");
    assert_eq!(run["evaluation"]["outcome"], "failed", "{run}");
    assert!(
        run["evaluation"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["outcome"] == "failed" && c["code"] == "CREA" && c["results"][0] == "20"),
        "{run}"
    );
    let rec = d.specimen("RF-1").unwrap();
    assert_eq!(rec["state"], "screened", "the specimen waits: {rec}");
    let crea = rec["result_history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["target"] == "creatinine")
        .unwrap()
        .clone();
    assert_eq!(
        (crea["counts"].as_bool(), crea["run_qc"].as_str()),
        (Some(false), Some("failed")),
        "{crea}"
    );
    // The run list shows it waiting; it cannot be accepted.
    let pending = runs_in(&d, "pending");
    assert!(
        pending
            .iter()
            .any(|r| r["key"] == "chem:R1" && r["qc"] == "failed"),
        "{pending:?}"
    );
    let out = d.cli(&["runs", "accept", "chem:R1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("QC is failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Rejected by the certifying scientist, with the reason.
    let r = custodian::admin::client::post(
        d.admin,
        "/api/runs/chem%3AR1/reject",
        Some(OPERATOR_TOKEN),
        &serde_json::json!({"reason": "creatinine control high"}),
    )
    .unwrap();
    assert_eq!(r.status, 403, "only a certifying scientist decides");
    let shown = cli_ok(
        &d,
        &[
            "runs",
            "reject",
            "chem:R1",
            "--reason",
            "creatinine control out of range; recalibrate",
        ],
    );
    assert!(shown.contains("\"rejected\""), "{shown}");
    let rec = d.specimen("RF-1").unwrap();
    assert_eq!(rec["state"], "screened", "{rec}");
    let retest = &rec["retests_open"][0];
    assert_eq!(retest["tests"], serde_json::json!(["CREA", "PH"]), "{rec}");
    assert!(
        retest["reason"]
            .as_str()
            .unwrap()
            .starts_with("run chem:R1 rejected: creatinine control out of range"),
        "{retest}"
    );
    let (_, audit) = d.get("/api/specimens/RF-1/audit", Some(TOKEN));
    assert!(audit.contains("run_decision"), "{audit}");
    let (_, metrics) = d.get("/metrics", None);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("custodian_runs_rejected_total 1")),
        "{metrics}"
    );
    // The rerun, in a run whose QC passes: the retest is answered, the specimen is negative.
    aa(
        &d,
        "chem",
        &chem(
            "RF-1-V2",
            "RF-1",
            "R2",
            None,
            &[
                ("CREA", "NM", "84", "mg/dL", "F"),
                ("PH", "NM", "6.2", "pH", "F"),
            ],
        ),
    );
    close_chem(&d, "R2", false);
    let rec = d.specimen("RF-1").unwrap();
    assert_eq!(rec["state"], "ready_for_review", "{rec}");
    assert_eq!(rec["retests_open"], serde_json::json!([]));
    assert_eq!(results(&d, "RF-1"), serde_json::json!(["negative"]));
    let out = cli_ok(&d, &["runs", "show", "chem:R2"]);
    assert!(out.contains("\"accepted\""), "{out}");
}

/// A confirmation run is never accepted automatically: a certifying scientist accepts it by
/// name and then its confirmations count, those carrying the instrument's acceptability flag
/// only.
#[test]
fn accepting_a_confirmation_run_makes_flagged_results_count_and_unflagged_ones_never() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), "");
    for id in ["CA-1", "CA-2"] {
        d.drop_lims(&format!("acc-{id}.xml"), &accession_xml_clean(id))
            .unwrap();
        aa(
            &d,
            "lab",
            &oru(
                &format!("{id}-S"),
                id,
                &[
                    ("THC50", "0", "ng/mL"),
                    ("COC300", "900", "ng/mL"),
                    ("OPI2000", "0", "ng/mL"),
                    ("AMP1000", "0", "ng/mL"),
                    ("PCP25", "0", "ng/mL"),
                    ("CREA", "90", "mg/dL"),
                    ("PH", "6.2", "pH"),
                    ("NIT", "0", "mcg/mL"),
                ],
            ),
        );
    }
    close_run(&d, "lab");
    assert_eq!(state(&d, "CA-1"), "confirming");
    // CA-1's confirmation is flagged acceptable (OBX-13 "Y"); CA-2's is not.
    aa(
        &d,
        "lab",
        &oru("CA-1-C", "CA-1", &[("BZEC", "480", "ng/mL")]),
    );
    let unflagged = String::from_utf8(oru("CA-2-C", "CA-2", &[("BZEC", "480", "ng/mL")]))
        .unwrap()
        .replace("|||||F||Y\r", "|||||F\r");
    aa(&d, "lab", unflagged.as_bytes());
    close_run(&d, "lab");
    let pending = runs_in(&d, "pending");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["qc"], "passed");
    assert_eq!(pending[0]["kind"], "confirmation");
    let key = pending[0]["key"].as_str().unwrap().to_string();
    assert_eq!(
        state(&d, "CA-1"),
        "confirming",
        "not accepted automatically"
    );
    let shown = cli_ok(
        &d,
        &["runs", "accept", &key, "--reason", "ion ratios reviewed"],
    );
    assert!(shown.contains("\"accepted\""), "{shown}");
    let run = run_json(&d, &key);
    assert_eq!(run["decision"]["by"], "Dr. Test Scientist", "{run}");
    assert_eq!(run["decision"]["auto"], false);
    assert_eq!(
        run["decision"]["content_sha256"].as_str().unwrap().len(),
        64
    );
    assert_eq!(state(&d, "CA-1"), "ready_for_review");
    assert_eq!(results(&d, "CA-1"), serde_json::json!(["positive"]));
    let rec = d.specimen("CA-2").unwrap();
    assert_eq!(rec["state"], "confirming", "{rec}");
    let conf = rec["result_history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "confirmation")
        .unwrap()
        .clone();
    assert_eq!(
        conf["why_not"], "confirmation without the instrument's acceptability flag",
        "{conf}"
    );
    // Accepted once.
    let out = d.cli(&["runs", "accept", &key]);
    assert!(!out.status.success());
    let (_, audit) = d.get("/api/audit/verify", Some(TOKEN));
    assert!(audit.contains("\"ok\":true"), "{audit}");
}

/// An analyzer without run ids: its runs are bracketed by QC sets. Results after the last QC
/// set wait until the closing set arrives; a specimen arriving before the closing set is
/// complete closes the run as incomplete, never passed.
#[test]
fn bracketing_qc_works_for_an_analyzer_without_run_ids() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), "");
    let screen = |c: &str, id: &str| {
        oru(
            c,
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
        )
    };
    for id in ["BK-1", "BK-2", "BK-3"] {
        d.drop_lims(&format!("acc-{id}.xml"), &accession_xml_clean(id))
            .unwrap();
    }
    // The opening QC set, then a specimen: it waits in the open run.
    close_run(&d, "lab");
    aa(&d, "lab", &screen("BK-1-S", "BK-1"));
    let open = runs_in(&d, "open");
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["key"], "lab:B1");
    assert_eq!(open[0]["delimited_by"], "bracketing");
    assert_eq!(open[0]["specimens"], 1);
    assert_eq!(state(&d, "BK-1"), "screened");
    // The closing set: B1 accepted, BK-1 counts; the set opens B2.
    close_run(&d, "lab");
    assert_eq!(state(&d, "BK-1"), "ready_for_review");
    let b1 = run_json(&d, "lab:B1");
    assert_eq!(b1["state"], "accepted", "{b1}");
    assert_eq!(b1["decision"]["auto"], true);
    // BK-2 after the last QC set: pending until the closing QC arrives.
    aa(&d, "lab", &screen("BK-2-S", "BK-2"));
    assert_eq!(state(&d, "BK-2"), "screened");
    // Only part of the closing set, then BK-3: B2 closes incomplete and waits (never passed).
    let (sample, obx) = &lab_qc_set()[0];
    aa(&d, "lab", &oru("PARTIAL-QC", sample, obx));
    aa(&d, "lab", &screen("BK-3-S", "BK-3"));
    let b2 = run_json(&d, "lab:B2");
    assert_eq!(b2["state"], "pending", "{b2}");
    assert_eq!(b2["evaluation"]["outcome"], "incomplete", "{b2}");
    assert_eq!(state(&d, "BK-2"), "screened");
    // BK-3 is in B3, which the partial set opened; the next full set closes it.
    close_run(&d, "lab");
    assert_eq!(run_json(&d, "lab:B3")["state"], "accepted");
    assert_eq!(state(&d, "BK-3"), "ready_for_review");
    assert_eq!(state(&d, "BK-2"), "screened", "its run was never accepted");
    // The gauges show the run waiting for acceptance.
    let (_, metrics) = d.get("/metrics", None);
    wait_until("the runs gauge", std::time::Duration::from_secs(15), || {
        let (_, m) = d.get("/metrics", None);
        m.lines()
            .any(|l| l.starts_with("custodian_runs_pending_acceptance 1"))
    });
    assert!(metrics.contains("custodian_runs_open"), "{metrics}");
}

/// A run's members are stored apart, their IDs listed in roster pages of 32: a run of 65
/// specimens (pages 32 + 32 + 1; the first specimen opens the run, the others join a stored
/// run, one arrives twice) closes with every member, and each of them hears of its decision.
#[test]
fn a_run_across_roster_pages_closes_with_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), "");
    let screen = |c: &str, id: &str, thc: &str| {
        oru(
            c,
            id,
            &[
                ("THC50", thc, "ng/mL"),
                ("COC300", "0", "ng/mL"),
                ("OPI2000", "0", "ng/mL"),
                ("AMP1000", "0", "ng/mL"),
                ("PCP25", "0", "ng/mL"),
                ("CREA", "90", "mg/dL"),
                ("PH", "6.2", "pH"),
                ("NIT", "0", "mcg/mL"),
            ],
        )
    };
    let ids: Vec<String> = (0..65).map(|n| format!("RP-{n:03}")).collect();
    for id in &ids {
        d.drop_lims(&format!("acc-{id}.xml"), &accession_xml_clean(id))
            .unwrap();
    }
    for id in &ids {
        aa(&d, "lab", &screen(&format!("{id}-S"), id, "0"));
    }
    // One specimen again in the same run (another message): still one member.
    aa(&d, "lab", &screen("RP-032-S2", "RP-032", "0"));
    let open = runs_in(&d, "open");
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["specimens"], 65, "{open:?}");
    let key = open[0]["key"].as_str().unwrap().to_string();
    close_run(&d, "lab");
    let run = run_json(&d, &key);
    assert_eq!(run["state"], "accepted", "{run}");
    let members: Vec<&str> = run["specimens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["specimen_id"].as_str().unwrap())
        .collect();
    assert_eq!(members.len(), 65, "{run}");
    for id in &ids {
        assert!(members.contains(&id.as_str()), "{id} missing from {run}");
        assert_eq!(state(&d, id), "ready_for_review", "{id}");
    }
    // The decision's hash is the hash of what is shown, however often it is read.
    let hash = run["decision"]["content_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(run["content_sha256"], hash.as_str(), "{run}");
    assert_eq!(run_json(&d, &key)["content_sha256"], hash.as_str());
}

/// A control is a run record, never a specimen; a control under an accessioned specimen's ID
/// is refused, quarantined and counted, never guessed.
#[test]
fn a_control_sample_never_appears_as_a_specimen() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), "");
    close_run(&d, "lab");
    assert!(d.specimen("QC-NEG").is_none(), "a control is no specimen");
    assert!(d.specimen("QC-HIGH").is_none());
    let open = runs_in(&d, "open");
    let b1 = run_json(&d, open[0]["key"].as_str().unwrap());
    assert_eq!(b1["qc"].as_array().unwrap().len(), 22, "{b1}");
    assert!(b1["qc"][0]["sample"] == "QC-NEG", "{b1}");
    for state in [
        "awaiting_accession",
        "accessioned",
        "screened",
        "held",
        "ready_for_review",
    ] {
        let out = cli_ok(&d, &["specimen", "list", "--state", state]);
        assert!(!out.contains("QC-"), "{state}: {out}");
    }
    // A specimen accessioned under an ID the QC prefix matches: its ID is never a control's.
    d.drop_lims("acc-qc.xml", &accession_xml_clean("QC-777"))
        .unwrap();
    let ack = send(
        d.addr("lab"),
        &oru("QC-CLASH", "QC-777", &[("THC50", "0", "ng/mL")]),
    )
    .unwrap();
    assert_eq!(ack_code(&ack), "AE", "{ack}");
    assert!(ack.contains("never guessed"), "{ack}");
    let rec = d.specimen("QC-777").unwrap();
    assert_eq!(rec["results"], serde_json::json!([]), "{rec}");
    let (_, metrics) = d.get("/metrics", None);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("custodian_qc_sample_conflicts_total{source=\"lab\"} 1")),
        "{metrics}"
    );
    let (_, q) = d.get("/api/quarantine?source=analyzer:lab", Some(TOKEN));
    assert!(q.contains("never guessed"), "{q}");
}

/// The LIMS's QC rules for benzoylecgonine and morphine batches.
const LIMS_QC: &str = r#"qc = [
  { code = "benzoylecgonine", sample = "CAL-CONF", level = "cutoff", role = "calibrator", expect = "within", value = 100, tolerance_percent = 20 },
  { code = "benzoylecgonine", sample = "QC-NEG-C", level = "negative", expect = "below", value = 100 },
  { code = "benzoylecgonine", sample = "QC-POS-C", level = "125%", expect = "within", value = 125, tolerance_percent = 20 },
]"#;

/// A batch for `id` (benzoylecgonine `value`, `acceptable` as given) with its QC; the
/// positive control reads `pos`.
fn batch_xml(batch: &str, id: &str, value: &str, acceptable: &str, pos: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<confirmation-batch xmlns="urn:custodian:lims:1">
  <batch-id>{batch}</batch-id>
  <instrument>LC-MS/MS 1</instrument>
  <run-at>2026-11-23T14:05:00Z</run-at>
  <qc>
    <sample id="CAL-CONF" role="calibrator"><result analyte="benzoylecgonine" unit="ng/mL">98</result></sample>
    <sample id="QC-NEG-C" role="control"><result analyte="benzoylecgonine" unit="ng/mL">0</result></sample>
    <sample id="QC-POS-C" role="control"><result analyte="benzoylecgonine" unit="ng/mL">{pos}</result></sample>
  </qc>
  <specimen id="{id}">
    <result analyte="benzoylecgonine" unit="ng/mL"{acceptable}>{value}</result>
  </specimen>
</confirmation-batch>
"#
    )
    .into_bytes()
}

/// A LIMS confirmation batch is a run carrying its QC: evaluated on arrival, never accepted
/// automatically; accepted by name its flagged results count; a batch whose control failed
/// cannot be accepted; an unflagged result never counts.
#[test]
fn a_lims_confirmation_batch_is_a_run_with_its_qc() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &analyzer("lab"));
    // The LIMS's QC rules go into [lims].
    let cfg = dir.path().join("custodian.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "poll_interval_ms = 50\n",
        &format!("poll_interval_ms = 50\n{LIMS_QC}\n"),
    );
    std::fs::write(&cfg, text).unwrap();
    let d = Daemon::start(dir.path());
    let positive_screen = |id: &str| {
        d.drop_lims(&format!("acc-{id}.xml"), &accession_xml_clean(id))
            .unwrap();
        aa(
            &d,
            "lab",
            &oru(
                &format!("{id}-S"),
                id,
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
            ),
        );
    };
    for id in ["LB-1", "LB-2", "LB-3"] {
        positive_screen(id);
    }
    close_run(&d, "lab");
    assert_eq!(state(&d, "LB-1"), "confirming");

    d.drop_lims(
        "batch-1.xml",
        &batch_xml("LC-0001", "LB-1", "480", " acceptable=\"true\"", "126"),
    )
    .unwrap();
    let run = run_json(&d, "lims:LC-0001");
    assert_eq!(run["state"], "pending", "{run}");
    assert_eq!(run["delimited_by"], "batch");
    assert_eq!(run["evaluation"]["outcome"], "passed", "{run}");
    assert_eq!(run["qc"].as_array().unwrap().len(), 3);
    assert!(d.specimen("CAL-CONF").is_none(), "a control is no specimen");
    assert_eq!(state(&d, "LB-1"), "confirming", "waits for the reviewer");
    cli_ok(
        &d,
        &["runs", "accept", "lims:LC-0001", "--reason", "QC reviewed"],
    );
    assert_eq!(state(&d, "LB-1"), "ready_for_review");
    assert_eq!(results(&d, "LB-1"), serde_json::json!(["positive"]));

    // The positive control reads 160 against 125 +-20 %: failed, never accepted.
    d.drop_lims(
        "batch-2.xml",
        &batch_xml("LC-0002", "LB-2", "480", " acceptable=\"true\"", "160"),
    )
    .unwrap();
    let run = run_json(&d, "lims:LC-0002");
    assert_eq!(run["evaluation"]["outcome"], "failed", "{run}");
    let out = d.cli(&["runs", "accept", "lims:LC-0002"]);
    assert!(!out.status.success());
    assert_eq!(state(&d, "LB-2"), "confirming");

    // No acceptability flag: the run is accepted, the result still does not count.
    d.drop_lims(
        "batch-3.xml",
        &batch_xml("LC-0003", "LB-3", "480", "", "126"),
    )
    .unwrap();
    cli_ok(&d, &["runs", "accept", "lims:LC-0003"]);
    let rec = d.specimen("LB-3").unwrap();
    assert_eq!(rec["state"], "confirming", "{rec}");
    assert!(
        rec["result_history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["why_not"] == "confirmation without the instrument's acceptability flag"),
        "{rec}"
    );
    // A batch id names one run.
    let why = d
        .drop_lims(
            "batch-1b.xml",
            &batch_xml("LC-0001", "LB-3", "481", " acceptable=\"true\"", "126"),
        )
        .unwrap_err();
    assert!(why.contains("already received"), "{why}");
}
