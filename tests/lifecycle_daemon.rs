//! The lifecycle clocks through the real daemon, across SIGKILL restarts, and the split
//! specimen's forwarding package as the admin API and CLI hand it out; the MRO's request of
//! 40.187(f) through the CLI; a received Bottle B reconfirmed as the split laboratory.
//!
//! How the daemon's clock is made to fire without a test knob: the clocks are created with due
//! times already past. The correction clock of a held specimen counts from the day the
//! laboratory initiated action to correct the flaw, which the accession gives here as the
//! fixture's receipt date (2024-03-05), long gone; the retention clock of a
//! negative runs `lifecycle.discard_after_report_days` after release, set to 0 here. The sweep
//! interval is an hour, so nothing fires while the first daemon runs (its one sweep ran at
//! start, before the clocks were set); the daemon is then killed with SIGKILL, and the start-up
//! sweep of the restarted daemon must fire each clock exactly once, and a further restart must
//! fire nothing. The audit log (read from the store after a clean stop) counts the firings.

mod common;
use common::*;
use custodian::store::Store;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SSN: &str = "123-45-6789";
const DONOR_NAME: &str = "Jordan Q. Testperson";

/// An MRO directory entry whose endpoint does not answer (delivery is not under test): the CA,
/// client certificate and key only need to load.
fn mro_section(dir: &Path) -> String {
    use rcgen::{CertificateParams, KeyPair};
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["lab.example".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let ca = dir.join("mro-ca.pem");
    std::fs::write(&ca, cert.pem()).unwrap();
    let client_cert = dir.join("lab-client.pem");
    std::fs::write(&client_cert, cert.pem()).unwrap();
    let client_key = dir.join("lab-client.key");
    std::fs::write(&client_key, key.serialize_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&client_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "[[mro]]\nid = \"MRO-0042\"\nname = \"Dr. Pat Example, MD\"\naddress = \"100 Example Way\"\nendpoint = \"https://127.0.0.1:1/reports\"\nca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n[transmit]\nbackoff_initial_ms = 1000\nbackoff_max_secs = 60\ntimeout_secs = 2\n",
        ca.display(),
        client_cert.display(),
        client_key.display()
    )
}

fn setup(dir: &Path) -> Daemon {
    setup_with(dir, "")
}

fn setup_with(dir: &Path, extra: &str) -> Daemon {
    let cfg = write_config(
        dir,
        &format!(
            "{}\n{}\n[lifecycle]\nsweep_interval_secs = 3600\ndiscard_after_report_days = 0\n{extra}",
            analyzer("lab"),
            mro_section(dir)
        ),
    );
    let out = Command::new(bin())
        .args(["keys", "generate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = Daemon::start(dir);
    wait_for_first_sweep(&d);
    d
}

/// The gauge `custodian_clocks_due` is set at the end of every sweep, the first at start.
fn wait_for_first_sweep(d: &Daemon) {
    wait_until("the start-up sweep", Duration::from_secs(20), || {
        d.get("/metrics", None)
            .1
            .contains("custodian_clocks_due{kind=\"correction\"}")
    });
}

fn post(d: &Daemon, path: &str, token: &str, body: serde_json::Value) -> (u16, String) {
    let r = custodian::admin::client::post(d.admin, path, Some(token), &body).unwrap();
    (r.status, r.body)
}

/// The accession example with a donor SSN and a remark naming the donor.
fn accession(id: &str, clean: bool) -> Vec<u8> {
    let raw = if clean {
        accession_xml_clean(id)
    } else {
        accession_xml(id)
    };
    String::from_utf8(raw)
        .unwrap()
        .replace("000-00-0000", SSN)
        .replace(
            "Step 4 signature missing; memo requested from collector &amp; site.",
            &format!("Donor {DONOR_NAME} asked to leave early."),
        )
        .into_bytes()
}

/// The flawed accession example with the day the laboratory initiated action to correct the
/// flaw (`<correction-initiated-on>`).
fn accession_initiated(id: &str, on: &str) -> Vec<u8> {
    let temperature = "<temperature-recorded>true</temperature-recorded>";
    let text = String::from_utf8(accession(id, false)).unwrap();
    assert_eq!(text.matches(temperature).count(), 1);
    text.replace(
        temperature,
        &format!("{temperature}\n  <correction-initiated-on>{on}</correction-initiated-on>"),
    )
    .into_bytes()
}

fn screen(d: &Daemon, id: &str, cocaine: &str) {
    let m = oru(
        &format!("{id}-1"),
        id,
        &[
            ("THC50", "0", "ng/mL"),
            ("COC300", cocaine, "ng/mL"),
            ("OPI2000", "0", "ng/mL"),
            ("AMP1000", "0", "ng/mL"),
            ("PCP25", "0", "ng/mL"),
            ("CREA", "90", "mg/dL"),
            ("PH", "6.2", "pH"),
            ("NIT", "0", "mcg/mL"),
        ],
    );
    assert_eq!(ack_code(&send(d.addr("lab"), &m).unwrap()), "AA");
    close_run(d, "lab");
}

fn release(d: &Daemon, id: &str) {
    assert_eq!(d.specimen(id).unwrap()["state"], "ready_for_review");
    let (s, body) = post(
        d,
        &format!("/api/review/{id}/release"),
        TOKEN,
        serde_json::json!({}),
    );
    assert_eq!(s, 200, "{body}");
}

fn discardable(d: &Daemon) -> Vec<(String, String)> {
    let (s, body) = d.get("/api/discardable", Some(VIEWER_TOKEN));
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["specimen_id"].as_str().unwrap().to_string(),
                x["item"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn audit_count(dir: &Path, action: &str, subject: &str) -> usize {
    let store = Store::open(&dir.join("store")).unwrap();
    store
        .audit_entries(1)
        .flatten()
        .filter(|(_, r)| r.entry.action == action && r.entry.subject == subject)
        .count()
}

/// 40.83(e)(1): the window counts from the day the laboratory initiated action to correct the
/// flaw, not from the CCF's receipt date. An accession stored long after its receipt date
/// (2024-03-05) and naming no such day counts from the day the daemon stored it: it is held,
/// not rejected at once, even by the sweep of a restarted daemon.
#[test]
fn a_window_counts_from_the_day_the_accession_was_stored_not_from_receipt() {
    use custodian::domain::calendar::{Calendar, Date};
    let dir = tempfile::tempdir().unwrap();
    let mut d = setup(dir.path());
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let before = Date::at_instant(now_ms(), 0);
    d.drop_lims("acc-LS-1.xml", &accession("LS-1", false))
        .unwrap();
    let after = Date::at_instant(now_ms(), 0);
    let rec = d.specimen("LS-1").unwrap();
    assert_eq!(rec["state"], "held", "{rec}");
    assert_eq!(rec["accession"]["ccf"]["received_on"], "2024-03-05");
    let window = &rec["lifecycle"]["correction"]["window"];
    let started: Date = window["started_on"].as_str().unwrap().parse().unwrap();
    assert!(started == before || started == after, "{window}");
    let last: Date = window["last_day"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        Calendar::federal().add_business_days(started, 5),
        Some(last),
        "{window}"
    );
    assert_eq!(rec["flaws"][0]["flaw"], "collector_certification", "{rec}");
    assert_eq!(rec["flaws"][0]["status"], "open", "{rec}");

    // The start-up sweep of a restarted daemon finds nothing due.
    d.restart();
    wait_for_first_sweep(&d);
    let rec = d.specimen("LS-1").unwrap();
    assert_eq!(rec["state"], "held", "{rec}");
    assert_eq!(rec["correction_expired"], false, "{rec}");
    assert_eq!(d.term(), Some(0));
    assert_eq!(
        audit_count(dir.path(), "correction_window_expired", "LS-1"),
        0
    );
}

#[test]
fn each_clock_fires_exactly_once_across_kill9_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = setup(dir.path());

    // Correction clock: the Step 4 certification is unsigned; action to correct it initiated
    // 2024-03-05, so the window closed 2024-03-12 (the 5th business day after) and the clock
    // is past due.
    d.drop_lims("acc-CL-1.xml", &accession_initiated("CL-1", "2024-03-05"))
        .unwrap();
    let rec = d.specimen("CL-1").unwrap();
    assert_eq!(rec["state"], "held");
    assert_eq!(
        rec["lifecycle"]["correction"]["window"]["last_day"],
        "2024-03-12"
    );
    // Retention clock: a negative, discardable 0 days after release.
    d.drop_lims("acc-NG-1.xml", &accession("NG-1", true))
        .unwrap();
    screen(&d, "NG-1", "0");
    release(&d, "NG-1");
    let rec = d.specimen("NG-1").unwrap();
    assert_eq!(rec["state"], "released");
    assert!(rec["lifecycle"]["retention_due_ms"].is_u64(), "{rec}");

    // Set, not fired: the next sweep is an hour away.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.specimen("CL-1").unwrap()["state"], "held");
    assert!(discardable(&d).is_empty());

    // SIGKILL between setting and firing; the restarted daemon fires both at start.
    d.restart();
    wait_until(
        "the correction clock to fire",
        Duration::from_secs(20),
        || d.specimen("CL-1").unwrap()["state"] == "ready_for_review",
    );
    let rec = d.specimen("CL-1").unwrap();
    assert_eq!(rec["correction_expired"], true);
    assert_eq!(
        rec["evaluation"]["verdict"]["results"],
        serde_json::json!(["rejected"])
    );
    wait_until(
        "the retention clock to fire",
        Duration::from_secs(20),
        || !discardable(&d).is_empty(),
    );
    assert_eq!(
        discardable(&d),
        vec![
            ("NG-1".to_string(), "primary".to_string()),
            ("NG-1".to_string(), "split".to_string())
        ]
    );
    // The location the LIMS gave for Bottle B is in the list.
    let (_, body) = d.get("/api/discardable", Some(VIEWER_TOKEN));
    assert!(body.contains("FRZ-2/R3/B14"), "{body}");

    // Once more: a restart fires nothing again.
    d.restart();
    wait_for_first_sweep(&d);
    assert_eq!(d.term(), Some(0));
    assert_eq!(
        audit_count(dir.path(), "correction_window_expired", "CL-1"),
        1
    );
    assert_eq!(audit_count(dir.path(), "retention_period_ended", "NG-1"), 1);
    let store = Store::open(&dir.path().join("store")).unwrap();
    assert_eq!(
        store
            .due_until::<custodian::custody::lifecycle::DueItem>(u64::MAX)
            .flatten()
            .filter(|(_, i)| i.kind == custodian::custody::lifecycle::ClockKind::Correction)
            .count(),
        0
    );
}

#[test]
fn split_request_as_lims_document_and_admin_command_without_donor_identity() {
    let dir = tempfile::tempdir().unwrap();
    let d = setup(dir.path());
    d.drop_lims("acc-SP-1.xml", &accession("SP-1", true))
        .unwrap();
    screen(&d, "SP-1", "900");
    let confirm = oru("SP-1-3", "SP-1", &[("BZEC", "480", "ng/mL")]);
    assert_eq!(ack_code(&send(d.addr("lab"), &confirm).unwrap()), "AA");
    close_run(&d, "lab");
    accept_pending_runs(&d);
    // Before release a split request is refused.
    let req = std::fs::read_to_string(root().join("tests/data/lims/request-split-example.xml"))
        .unwrap()
        .replace("X0000001-TEST", "SP-1");
    let why = d.drop_lims("split-early.xml", req.as_bytes()).unwrap_err();
    assert!(why.contains("no reported result"), "{why}");
    release(&d, "SP-1");
    let req2 = req.replace("2026-06-02T09:15:00Z", "2026-06-02T09:16:00Z");
    d.drop_lims("split.xml", req2.as_bytes()).unwrap();

    // Everything sent for the split: the disposition with the package, as the API and the CLI
    // give it.
    let (s, body) = d.get("/api/specimens/SP-1/split", Some(VIEWER_TOKEN));
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["disposition"]["disposition"], "forwarded", "{v}");
    assert_eq!(v["disposition"]["manifest"]["bottle"], "B");
    assert_eq!(
        v["disposition"]["mro_request"]["document_ref"],
        "MRO-SPLIT-2026-0003"
    );
    let out = d.cli(&["lifecycle", "split-show", "SP-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli_text = String::from_utf8(out.stdout).unwrap();
    assert!(cli_text.contains("Second Example Laboratory"));
    for text in [&body, &cli_text] {
        for needle in [SSN, "123456789", DONOR_NAME, "Testperson"] {
            assert!(!text.contains(needle), "`{needle}` in {text}");
        }
    }
    // The specimen record itself does hold the SSN (so the search above means something).
    assert!(d.specimen("SP-1").unwrap().to_string().contains(SSN));

    // Retention: the split shipped, so only the primary and records have clocks.
    let (s, body) = d.get("/api/specimens/SP-1/retention", Some(VIEWER_TOKEN));
    assert_eq!(s, 200, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["items"][1]["item"], "split");
    assert_eq!(r["items"][1]["holding"]["state"], "shipped", "{r}");

    // An MRO letter extending retention, through the CLI (audited, names its document).
    let out = d.cli(&[
        "lifecycle",
        "extend",
        "SP-1",
        "--document",
        "MRO-LTR-77",
        "--requester",
        "mro",
        "--until-released",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = d.specimen("SP-1").unwrap();
    let kinds: Vec<&str> = rec["lifecycle"]["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["split_test", "retention_extension"]);
    assert_eq!(rec["lifecycle"]["requests"][1]["via"], "admin");
    assert!(
        rec["lifecycle"]["requests"][0]["via"]
            .as_str()
            .unwrap()
            .starts_with("lims:")
    );
    // A viewer may not record requests.
    let (s, _) = post(
        &d,
        "/api/specimens/SP-1/requests",
        VIEWER_TOKEN,
        serde_json::json!({"kind": "quantitation", "document_ref": "X-1"}),
    );
    assert_eq!(s, 403);
    // Quantitation after release (2001 edition, values only on request, 40.97(e)): a
    // supplementary report with the values goes to the same MRO; a second request adds nothing.
    let (s, body) = post(
        &d,
        "/api/specimens/SP-1/requests",
        OPERATOR_TOKEN,
        serde_json::json!({"kind": "quantitation", "document_ref": "MRO-Q-9"}),
    );
    assert_eq!(s, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        answer["supplement"]["report_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("Q-SP-1-")),
        "{answer}"
    );
    assert_eq!(answer["supplement"]["mro_id"], "MRO-0042");
    let (s, body) = post(
        &d,
        "/api/specimens/SP-1/requests",
        OPERATOR_TOKEN,
        serde_json::json!({"kind": "quantitation", "document_ref": "MRO-Q-10"}),
    );
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("nothing to supplement"), "{body}");

    // 40.187(f): the MRO asks this laboratory to test the primary for the split's adulterant.
    // The primary's nitrite (its oxidizing-adulterant test before review, 0 mcg/mL) does not
    // meet the criterion: failed to reconfirm, 40.183(b)(2). (A primary without a nitrite
    // value names the missing measure: tests/lifecycle.rs.)
    let out = d.cli(&[
        "lifecycle",
        "adulterant-retest",
        "SP-1",
        "--document",
        "MRO-LTR-2026-0420",
        "--cite",
        "40.95(a)(2), HHS criteria",
        "--remark",
        "nitrite 500 mcg/mL or more",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, body) = d.get("/api/specimens/SP-1/adulterant-retest", Some(VIEWER_TOKEN));
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["outcome"]["state"], "complete", "{v}");
    assert_eq!(
        v["outcome"]["result"]["result"], "failed_to_reconfirm",
        "{v}"
    );
    assert_eq!(v["request"]["document_ref"], "MRO-LTR-2026-0420");
    let out = d.cli(&["lifecycle", "adulterant-retest-show", "SP-1"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nitrite"));
    let (s, _) = d.get("/api/specimens/NOPE/adulterant-retest", Some(VIEWER_TOKEN));
    assert_eq!(s, 404);
    // This daemon is not a split laboratory.
    let (s, body) = d.get("/api/split-lab/SP-1", Some(VIEWER_TOKEN));
    assert_eq!(s, 404, "{body}");
    assert!(
        body.contains("not configured as a split laboratory"),
        "{body}"
    );
}

#[test]
fn received_bottle_b_reconfirmed_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let d = setup_with(
        dir.path(),
        "[split_laboratory]\nenabled = true\nlod = { benzoylecgonine = 5, thca = 2 }\n",
    );
    // The first laboratory's forwarding package, as its API gives it out.
    let package = serde_json::json!({
        "disposition": "forwarded",
        "manifest": {
            "specimen_id": "SB-1", "bottle": "B", "labelled": "B", "seal": "intact",
            "ship_to": "Test Laboratory"
        },
        "mro_request": {"document_ref": "MRO-SPLIT-9", "received_at_ms": 1},
        "copy1": {
            "specimen_id": "SB-1",
            "collected_on": "2026-03-08",
            "first_laboratory": "First Example Laboratory",
            "received_at_first_laboratory": "2026-03-09",
            "mro": {"name": "Dr. Pat Example, MD", "id": "MRO-0042"},
            "results": ["positive"],
            "drugs": [{"analyte": "benzoylecgonine", "name": "Benzoylecgonine", "class": "cocaine"}],
            "adulteration": []
        },
        "prepared_at_ms": 2
    });
    let file = dir.path().join("package-SB-1.json");
    std::fs::write(&file, package.to_string()).unwrap();
    let out = d.cli(&["lifecycle", "split-lab-receive", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, body) = d.get("/api/split-lab/SB-1", Some(VIEWER_TOKEN));
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"], "Pending", "{v}");
    // The bottle's result over MLLP: 40 ng/mL, below the 150 cutoff, above the LOD of 5.
    let m = oru("SB-1-1", "SB-1", &[("BZEC", "40", "ng/mL")]);
    assert_eq!(ack_code(&send(d.addr("lab"), &m).unwrap()), "AA");
    // The split laboratory's confirmation counts once its run is accepted by name.
    close_run(&d, "lab");
    accept_pending_runs(&d);
    let out = d.cli(&["lifecycle", "split-lab-show", "SB-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"], "Reconfirmed", "{v}");
    // Received twice: refused. A viewer may not record an intake. Unknown ID: 404.
    let (s, body) = post(
        &d,
        "/api/split-lab/received",
        OPERATOR_TOKEN,
        package.clone(),
    );
    assert_eq!(s, 409, "{body}");
    let (s, _) = post(&d, "/api/split-lab/received", VIEWER_TOKEN, package);
    assert_eq!(s, 403);
    let (s, _) = d.get("/api/split-lab/SB-2", Some(VIEWER_TOKEN));
    assert_eq!(s, 404);
    drop(d);
    assert_eq!(audit_count(dir.path(), "split_received", "SB-1"), 1);
}
