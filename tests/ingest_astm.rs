//! ASTM analyzers through the real daemon, driven by `tests/astm_client.py`: an analyzer
//! simulator written from E1381/E1394 in Python, not custodian's codec, whose checksums and
//! frames are checked against worked examples first (`selftest`).
//!
//! - results are stored once although a frame was refused for its checksum (NAK) and
//!   retransmitted, and once although the whole message is sent again with a new header
//!   timestamp (no control id in ASTM: the content is the identity);
//! - a SIGKILL between the last frame and its ACK loses nothing and duplicates nothing once
//!   the analyzer sends the message again;
//! - the host query answers with the tests of the specimen's edition, "no information" for an
//!   unknown or a rejected specimen, and a query for a rejected one is counted for its alert;
//! - runs as for HL7 (`[astm_analyzer.mapping.runs]`): controls marked by the order's action
//!   code (O-12 `Q`), runs bracketed by QC sets; the results count once the closing QC set sent
//!   over ASTM passed, and not while a control failed (the specimen waits).

mod common;
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const ANALYZER: &str = "cobas-1";

/// The test mapping ([`LAB_MAPPING`]) as an ASTM analyzer's: the specimen ID at O-3.1, the
/// bottle at O-3.2; its runs and QC rules with ASTM positions: controls by the action code
/// (O-12 `Q`), the confirmations' acceptability flag at R-7.
fn astm_analyzer() -> String {
    let (tests, runs) = LAB_MAPPING
        .split_once("[analyzer.mapping.runs]")
        .expect("LAB_MAPPING has runs");
    let tests = tests
        .split("[[analyzer.mapping.test]]")
        .skip(1)
        .map(|t| format!("[[astm_analyzer.mapping.test]]{t}"))
        .collect::<String>();
    let runs = runs
        .replace(
            "qc_sample_prefixes = [\"QC-\"]",
            "role = { field = \"O-12\", control = [\"Q\"] }",
        )
        .replace("OBX-13.1", "R-7");
    assert!(runs.contains("O-12") && runs.contains("R-7"), "{runs}");
    format!(
        "[[astm_analyzer]]\nname = \"{ANALYZER}\"\nlisten = \"127.0.0.1:0\"\n[astm_analyzer.mapping]\nspecimen_id = \"O-3.1\"\nbottle = {{ field = \"O-3.2\", primary = [\"A\"], split = [\"B\"], default = \"primary\" }}\n{tests}[astm_analyzer.mapping.runs]{runs}"
    )
}

fn start(dir: &Path) -> Daemon {
    write_config(dir, &astm_analyzer());
    Daemon::start(dir)
}

fn client(args: &[&str]) -> (bool, serde_json::Value) {
    let out = Command::new("python3")
        .arg(root().join("tests/astm_client.py"))
        .args(args)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    assert!(
        out.status.success() || !v.is_null(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), v)
}

fn send(addr: SocketAddr, extra: &[&str], records: &[String]) -> serde_json::Value {
    let port = addr.port().to_string();
    let mut args = vec!["send", "127.0.0.1", port.as_str()];
    args.extend_from_slice(extra);
    args.extend(records.iter().map(String::as_str));
    let (ok, v) = client(&args);
    assert!(ok, "{v}");
    v
}

fn replies(v: &serde_json::Value) -> Vec<String> {
    v["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

/// A screen for `specimen` as an immunoassay analyzer sends it: header (with `ts` as H-14),
/// patient, order, one result record per (code, value, unit), terminator.
fn screen(specimen: &str, ts: &str, results: &[(&str, &str, &str)]) -> Vec<String> {
    let mut r = vec![
        format!("H|\\^&|||cobas^1|||||||P|1|{ts}"),
        "P|1".to_string(),
        format!("O|1|{specimen}^A||^^^THC50\\^^^COC300|R"),
    ];
    for (i, (code, value, unit)) in results.iter().enumerate() {
        r.push(format!(
            "R|{}|^^^{code}|{value}|{unit}||N||F||||20261123101000",
            i + 1
        ));
    }
    r.push("L|1|N".into());
    r
}

/// A control's results as the analyzer sends them: the order's action code (O-12) is `Q`.
fn control(sample: &str, ts: &str, results: &[(&str, &str, &str)]) -> Vec<String> {
    let codes: Vec<String> = results.iter().map(|(c, _, _)| format!("^^^{c}")).collect();
    let mut r = vec![
        format!("H|\\^&|||cobas^1|||||||P|1|{ts}"),
        "P|1".to_string(),
        format!("O|1|{sample}||{}|R||||||Q", codes.join("\\")),
    ];
    for (i, (code, value, unit)) in results.iter().enumerate() {
        r.push(format!(
            "R|{}|^^^{code}|{value}|{unit}||N||F||||20261123111000",
            i + 1
        ));
    }
    r.push("L|1|N".into());
    r
}

/// Sends the closing QC set ([`lab_qc_set`]) over ASTM, `change` applied to each control's
/// results; every frame acknowledged.
fn close_astm_run(d: &Daemon, ts: &str, change: impl Fn(&str, &str, &'static str) -> &'static str) {
    for (sample, results) in lab_qc_set() {
        let results: Vec<(&str, &str, &str)> = results
            .iter()
            .map(|&(c, v, u)| (c, change(sample, c, v), u))
            .collect();
        let v = send(d.addr(ANALYZER), &[], &control(sample, ts, &results));
        assert!(replies(&v).iter().all(|r| r == "ACK"), "{sample}: {v}");
    }
}

/// Every value of the QC set as it is (passing).
fn passing(_: &str, _: &str, v: &'static str) -> &'static str {
    v
}

/// The results a specimen holds from ASTM messages, as (target, value).
fn astm_results(d: &Daemon, id: &str) -> Vec<(String, String)> {
    let rec = d.specimen(id).expect("specimen stored");
    rec["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["source"]["control_id"]
                .as_str()
                .is_some_and(|c| c.starts_with("astm-"))
        })
        .map(|r| {
            (
                r["target"].as_str().unwrap().to_string(),
                json_text(&r["value"]),
            )
        })
        .collect()
}

fn metric(d: &Daemon, line_start: &str) -> f64 {
    let (_, m) = d.get("/metrics", None);
    m.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

const RESULTS: [(&str, &str, &str); 3] = [
    ("THC50", "12", "ng/mL"),
    ("COC300", "0", "ng/mL"),
    ("CREA", "85.2", "mg/dL"),
];

fn expected() -> Vec<(String, String)> {
    vec![
        ("marijuana".into(), "12".into()),
        ("cocaine".into(), "0".into()),
        ("creatinine".into(), "85.2".into()),
    ]
}

#[test]
fn the_client_checks_its_frames_against_worked_examples() {
    let out = Command::new("python3")
        .arg(root().join("tests/astm_client.py"))
        .arg("selftest")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bad_checksum_gets_nak_and_the_retransmission_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    d.drop_lims("acc.xml", &accession_xml_clean("AST-0001"))
        .unwrap();
    let message = screen("AST-0001", "20261123101500", &RESULTS);
    // Frame 4 is the first result record: sent first with a wrong checksum.
    let v = send(d.addr(ANALYZER), &["--corrupt", "4"], &message);
    assert_eq!(
        replies(&v),
        [
            "ACK", "ACK", "ACK", "ACK", "NAK", "ACK", "ACK", "ACK", "ACK"
        ],
        "{v}"
    );
    assert_eq!(astm_results(&d, "AST-0001"), expected());
    assert_eq!(
        metric(
            &d,
            "custodian_astm_frames_refused_total{analyzer=\"cobas-1\",reason=\"checksum\"}"
        ),
        1.0
    );
    // The same message again (its ACK lost, say) with another header timestamp: acknowledged,
    // not stored twice.
    let again = screen("AST-0001", "20261123104500", &RESULTS);
    let v = send(d.addr(ANALYZER), &[], &again);
    assert!(replies(&v).iter().all(|r| r == "ACK"), "{v}");
    assert_eq!(astm_results(&d, "AST-0001"), expected());
    assert_eq!(
        metric(
            &d,
            "custodian_messages_duplicate_total{analyzer=\"cobas-1\"}"
        ),
        1.0
    );
    // A result the mapping does not know: acknowledged (kept in quarantine), nothing attached.
    let unmapped = screen("AST-0001", "20261123110000", &[("BUP5", "3", "ng/mL")]);
    let v = send(d.addr(ANALYZER), &[], &unmapped);
    assert!(replies(&v).iter().all(|r| r == "ACK"), "{v}");
    assert_eq!(astm_results(&d, "AST-0001"), expected());
    assert_eq!(
        metric(
            &d,
            "custodian_astm_messages_total{analyzer=\"cobas-1\",outcome=\"refused\"}"
        ),
        1.0
    );
    // The closing QC set over ASTM passes: the run is accepted automatically and the stored
    // results (once each) count.
    close_astm_run(&d, "20261123111500", passing);
    let (s, body) = d.get("/api/runs/cobas-1%3AB1", Some(TOKEN));
    assert_eq!(s, 200, "{body}");
    let run: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (run["state"].as_str(), run["evaluation"]["outcome"].as_str()),
        (Some("accepted"), Some("passed")),
        "{run}"
    );
    let rec = d.specimen("AST-0001").unwrap();
    let history = rec["result_history"].as_array().unwrap();
    assert_eq!(history.len(), 3, "{rec}");
    assert!(history.iter().all(|r| r["counts"] == true), "{rec}");
    let log = d.log();
    assert!(!log.contains("AST-0001"), "logs never name specimens");
}

/// Every test of the 2001 edition's screen and validity for a negative specimen.
const FULL: [(&str, &str, &str); 9] = [
    ("THC50", "3", "ng/mL"),
    ("COC300", "0", "ng/mL"),
    ("OPI2000", "0", "ng/mL"),
    ("AMP1000", "0", "ng/mL"),
    ("PCP25", "0", "ng/mL"),
    ("CREA", "85.2", "mg/dL"),
    ("SG", "1.0180", ""),
    ("PH", "6.1", "pH"),
    ("NIT", "0", "mcg/mL"),
];

#[test]
fn astm_results_of_a_run_whose_control_failed_do_not_count_and_the_specimen_waits() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    d.drop_lims("acc.xml", &accession_xml_clean("AST-F1"))
        .unwrap();
    let v = send(
        d.addr(ANALYZER),
        &[],
        &screen("AST-F1", "20261123101500", &FULL),
    );
    assert!(replies(&v).iter().all(|r| r == "ACK"), "{v}");
    assert_eq!(astm_results(&d, "AST-F1").len(), FULL.len());
    // The creatinine control QC-NEG reads 20 against its target of 10 +-20 %: failed.
    close_astm_run(&d, "20261123111500", |sample, code, v| {
        if sample == "QC-NEG" && code == "CREA" {
            "20"
        } else {
            v
        }
    });
    let (s, body) = d.get("/api/runs/cobas-1%3AB1", Some(TOKEN));
    assert_eq!(s, 200, "{body}");
    let run: serde_json::Value = serde_json::from_str(&body).unwrap();
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
    // The controls were recognised by O-12 "Q": QC of the run, never specimens.
    assert!(d.specimen("QC-NEG").is_none());
    let rec = d.specimen("AST-F1").unwrap();
    assert_eq!(rec["state"], "screened", "the specimen waits: {rec}");
    assert_eq!(rec["runs"]["cobas-1:B1"]["qc"], "failed", "{rec}");
    let history = rec["result_history"].as_array().unwrap();
    assert_eq!(history.len(), FULL.len(), "{rec}");
    assert!(
        history
            .iter()
            .all(|r| r["counts"] == false && r["run_qc"] == "failed"),
        "{rec}"
    );
    let (_, review) = d.get("/api/review", Some(TOKEN));
    assert!(!review.contains("AST-F1"), "{review}");
}

#[test]
fn sigkill_between_the_last_frame_and_its_ack_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(dir.path());
    for round in 0..3 {
        let id = format!("AST-K{round}");
        d.drop_lims(&format!("acc-{round}.xml"), &accession_xml_clean(&id))
            .unwrap();
        let message = screen(&id, "20261123101500", &RESULTS);
        if round == 2 {
            // The ACK arrives, then the daemon dies: the resend must be a duplicate.
            let v = send(d.addr(ANALYZER), &[], &message);
            assert!(replies(&v).iter().all(|r| r == "ACK"), "{v}");
        } else {
            // The last frame is written and the daemon is killed before its ACK is read.
            let v = send(d.addr(ANALYZER), &["--stop-after-last-frame"], &message);
            assert_eq!(replies(&v).last().unwrap(), "unread", "{v}");
        }
        d.restart();
        let resend = screen(&id, "20261123102000", &RESULTS);
        let v = send(d.addr(ANALYZER), &[], &resend);
        assert!(replies(&v).iter().all(|r| r == "ACK"), "round {round}: {v}");
        assert_eq!(astm_results(&d, &id), expected(), "round {round}");
    }
}

fn query(d: &Daemon, id: &str) -> Vec<String> {
    let q = vec![
        "H|\\^&|||cobas^1|||||||P|1|20261123101500".to_string(),
        format!("Q|1|^{id}||^^^ALL||||||||O"),
        "L|1|N".to_string(),
    ];
    let v = send(d.addr(ANALYZER), &["--await-answer", "20"], &q);
    assert!(replies(&v).iter().all(|r| r == "ACK"), "{v}");
    let answers = v["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 1, "{v}");
    answers[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_host_query_answers_with_the_specimens_tests() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    d.drop_lims("acc.xml", &accession_xml_clean("AST-Q1"))
        .unwrap();
    let rejected = String::from_utf8(accession_xml_clean("AST-REJ"))
        .unwrap()
        .replace(
            "<bottle-id-matches-ccf>true</bottle-id-matches-ccf>",
            "<bottle-id-matches-ccf>false</bottle-id-matches-ccf>",
        );
    d.drop_lims("rej.xml", rejected.as_bytes()).unwrap();
    wait_until("the rejected specimen", Duration::from_secs(10), || {
        d.specimen("AST-REJ").is_some()
    });

    let answer = query(&d, "AST-Q1");
    assert!(answer[0].starts_with("H|\\^&|"), "{answer:?}");
    assert_eq!(answer.last().unwrap(), "L|1|N", "{answer:?}");
    let order = answer.iter().find(|r| r.starts_with("O|")).unwrap();
    let fields: Vec<&str> = order.split('|').collect();
    assert_eq!(fields[2], "AST-Q1");
    let tests: Vec<&str> = fields[4]
        .split('\\')
        .map(|t| t.trim_start_matches('^'))
        .collect();
    // The 2001 edition's screen and validity tests; no confirmation before a screen.
    assert_eq!(
        tests,
        [
            "THC50", "COC300", "OPI2000", "AMP1000", "PCP25", "CREA", "SG", "PH", "NIT"
        ]
    );

    for id in ["AST-NONE", "AST-REJ"] {
        let answer = query(&d, id);
        assert_eq!(answer.len(), 2, "{id}: {answer:?}");
        assert_eq!(answer[1], "L|1|I", "{id}: no information");
    }
    assert_eq!(
        metric(
            &d,
            "custodian_astm_host_queries_total{analyzer=\"cobas-1\",answer=\"rejected\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &d,
            "custodian_astm_host_queries_total{analyzer=\"cobas-1\",answer=\"orders\"}"
        ),
        1.0
    );
    // Every query is in the audit log with its answer, under the specimen it named.
    let mut d = d;
    assert_eq!(d.term(), Some(0));
    let store = custodian::store::Store::open(&dir.path().join("store")).unwrap();
    let queries: Vec<(String, String)> = store
        .audit_entries(1)
        .flatten()
        .filter(|(_, r)| r.entry.action == "host_query")
        .map(|(_, r)| {
            (
                r.entry.subject.clone(),
                r.entry.after.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(queries.len(), 3, "{queries:?}");
    assert_eq!(queries[2].0, "AST-REJ");
    assert!(queries[2].1.contains("rejected"), "{queries:?}");
}
