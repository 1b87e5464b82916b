//! The 40.111 summaries end to end.
//!
//! - At library level with a ManualClock, driving the production sweep: nothing while the period
//!   is open in laboratory time (UTC-5), then at July 1 the employer and DOT summaries of the
//!   closed period (a result released at 22:00 on June 30 lab time, July 1 in UTC, included),
//!   an employer with fewer than five results suppressed, an employer whose specimen received
//!   in the period is unreleased waiting (and the DOT summary of that type with it) until it is
//!   released; the files as recorded (SHA-256), without donor or specimen data; overdue after
//!   the due dates; marked sent (once; never a suppressed one); an employer's request; every
//!   step audited.
//! - Through the real daemon (port 0, temporary store, system clock): production at start, the
//!   list, `summaries mark-sent` (operator yes, viewer no), the gauge of overdue summaries
//!   following it, and an employer's request through the API and the CLI.

mod common;
use common::*;
use custodian::core::clock::ManualClock;
use custodian::custody::records::put_specimen;
use custodian::custody::summaries::{self, Desk, MarkSent, Outcome, Refused, Settings};
use custodian::domain::rules::{self, ProfileSet, Program, SpecimenType};
use custodian::domain::specimen::{
    Accession, Ccf, Party, Release, ResultEntry, ResultKind, Source, SpecimenRecord, State,
};
use custodian::domain::summary::{Identity, Period};
use custodian::store::{Abort, GroupCommitter, GroupConfig, Keyspace, Store};
use rust_decimal::Decimal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const DAY: u64 = 86_400_000;
const SSN: &str = "123-45-6789";
const DONOR_NAME: &str = "Jordan Q. Testperson";
/// The laboratory is at UTC-5.
const OFFSET: i32 = -300;

/// Unix ms of a UTC date and hour.
fn at(date: &str, hour: u64) -> u64 {
    custodian::domain::summary::parse_date(date).unwrap() as u64 * DAY + hour * 3_600_000
}

fn profiles() -> ProfileSet {
    let mut problems = Vec::new();
    let p = custodian::app::config::load_profiles(&root().join("config/profiles"), &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    p
}

/// A DOT (or HHS) urine specimen of `employer`, received on `received_on`, with `results`,
/// released at `released` (UTC ms) if given.
fn specimen(
    p: &ProfileSet,
    id: &str,
    employer: &str,
    program: Program,
    received_on: &str,
    results: &[(ResultKind, &str, &str)],
    released: Option<u64>,
) -> SpecimenRecord {
    let profile = match program {
        Program::Dot => "part40-2023",
        Program::Hhs => "hhs-urine-2025",
    };
    let mut r = SpecimenRecord::new(id, 0);
    r.attach_accession(
        Accession {
            ccf: Ccf {
                employer: Party {
                    name: format!("{employer} Freight"),
                    id: Some(employer.into()),
                    ..Party::default()
                },
                donor_id: Some(SSN.into()),
                reason_for_test: Some("random".into()),
                dot_agency: Some("fmcsa".into()),
                collected_on: received_on.into(),
                received_on: received_on.into(),
                remarks: Some(format!("donor {DONOR_NAME}")),
                ..Ccf::default()
            },
            findings: rules::Accession::default(),
            profile: Some(profile.into()),
            program,
            specimen_type: SpecimenType::Urine,
            document: format!("acc-{id}.xml"),
            received_at_ms: 0,
            correction_initiated_on: None,
        },
        p,
        profile,
        0,
    )
    .unwrap();
    if !results.is_empty() {
        r.attach_results(
            results
                .iter()
                .map(|(k, t, v)| ResultEntry {
                    kind: *k,
                    target: t.to_string(),
                    value: Some(v.parse::<Decimal>().unwrap()),
                    unit: "ng/mL".into(),
                    bottle: Default::default(),
                    source: Source::Lims {
                        document: "batch.xml".into(),
                    },
                    received_at_ms: 1,
                    ..ResultEntry::default()
                })
                .collect(),
            p,
            profile,
            1,
        )
        .unwrap();
    }
    if let Some(at) = released {
        release(&mut r, at);
    }
    r
}

fn release(r: &mut SpecimenRecord, at: u64) {
    r.release = Some(Release {
        report_id: format!("RPT-{}", r.specimen_id),
        released_at_ms: at,
        scientist: "Dr. Test Scientist".into(),
        meaning: "reviewed and released".into(),
        content_sha256: "0".repeat(64),
    });
    r.state = State::Released;
}

/// EMP-1: six results of January-June (the last at 22:00 on June 30 lab time, July 1 UTC),
/// one positive; EMP-2: two; EMP-3: five released and one received June 20 not yet released;
/// an HHS specimen of EMP-1 (never counted).
fn fixture(p: &ProfileSet) -> Vec<SpecimenRecord> {
    use ResultKind::*;
    let mid = at("2026-03-10", 15);
    let mut out = Vec::new();
    for i in 1..=5 {
        out.push(specimen(
            p,
            &format!("SPEC-1-{i}"),
            "EMP-1",
            Program::Dot,
            "2026-03-09",
            &[],
            Some(mid),
        ));
    }
    out.push(specimen(
        p,
        "SPEC-1-6",
        "EMP-1",
        Program::Dot,
        "2026-06-29",
        &[
            (Initial, "cocaine", "400"),
            (Confirmation, "benzoylecgonine", "200"),
        ],
        Some(at("2026-07-01", 3)),
    ));
    for i in 1..=2 {
        out.push(specimen(
            p,
            &format!("SPEC-2-{i}"),
            "EMP-2",
            Program::Dot,
            "2026-03-09",
            &[],
            Some(mid),
        ));
    }
    for i in 1..=5 {
        out.push(specimen(
            p,
            &format!("SPEC-3-{i}"),
            "EMP-3",
            Program::Dot,
            "2026-03-09",
            &[],
            Some(mid),
        ));
    }
    out.push(specimen(
        p,
        "SPEC-3-6",
        "EMP-3",
        Program::Dot,
        "2026-06-20",
        &[],
        None,
    ));
    out.push(specimen(
        p,
        "SPEC-H-1",
        "EMP-1",
        Program::Hhs,
        "2026-03-09",
        &[],
        Some(mid),
    ));
    out
}

async fn put(committer: &GroupCommitter, recs: Vec<SpecimenRecord>) {
    committer
        .submit(move |tx| -> Result<(), Abort<String>> {
            for r in &recs {
                let before = tx
                    .get::<SpecimenRecord>(Keyspace::Specimens, r.specimen_id.as_bytes())?
                    .map(|b| custodian::custody::records::Indexed::of(&b));
                put_specimen(tx, before, r)?;
            }
            Ok(())
        })
        .await
        .unwrap();
}

fn desk(certified: Vec<SpecimenType>) -> Desk {
    Desk {
        laboratory: Identity {
            name: "Test Laboratory".into(),
            address: "1 Test Way, Testville".into(),
        },
        ctpa: [(
            "EMP-1".to_string(),
            Identity {
                name: "Example Consortium Services".into(),
                address: "200 Example Road".into(),
            },
        )]
        .into_iter()
        .collect(),
        certified,
        utc_offset_minutes: OFFSET,
    }
}

/// Every file of `dir` with its text.
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    std::fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn assert_no_donor_data(text: &str) {
    for secret in [
        SSN,
        DONOR_NAME,
        "SPEC-",
        "RPT-",
        "Dr. Test Scientist",
        "batch.xml",
        "acc-",
    ] {
        assert!(!text.contains(secret), "`{secret}` in:\n{text}");
    }
}

fn audit_actions(store: &Store) -> Vec<(String, String, String)> {
    store
        .audit_entries(1)
        .map(|e| {
            let r = e.unwrap().1;
            (r.entry.actor, r.entry.action, r.entry.subject)
        })
        .filter(|(_, a, _)| a.starts_with("summary_"))
        .collect()
}

#[test]
fn production_sending_and_requests_with_a_manual_clock() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let committer = GroupCommitter::start(store.clone(), GroupConfig::default()).unwrap();
    let p = profiles();
    let recs = fixture(&p);
    rt.block_on(put(&committer, recs.clone()));
    let out = tmp.path().join("summaries");
    let settings = Arc::new(Settings {
        desk: desk(vec![SpecimenType::Urine, SpecimenType::OralFluid]),
        dir: out.clone(),
        since: Period::parse("2026-H1").unwrap(),
    });
    let clock = ManualClock::new(at("2026-06-30", 23));
    use custodian::core::clock::Clock;
    let produce = |now: u64| {
        rt.block_on(summaries::produce(&committer, &settings, now))
            .unwrap()
    };

    // June 30, 18:00 in the laboratory: the period is open.
    let s = produce(clock.now_ms());
    assert!(s.produced.is_empty() && s.suppressed.is_empty(), "{s:?}");
    assert!(files(&out).is_empty());

    // July 1, 01:00 lab time: January-June closed. EMP-3 (and DOT urine, which counts EMP-3's
    // specimens too) wait for SPEC-3-6, received June 20 and not released.
    clock.set_ms(at("2026-07-01", 6));
    let s = produce(clock.now_ms());
    assert_eq!(
        s.produced,
        ["2026-H1_dot_oral_fluid", "2026-H1_employer_EMP-1_urine"]
    );
    assert_eq!(s.suppressed, ["2026-H1_employer_EMP-2_urine"]);
    assert_eq!(s.waiting, 2);
    let written = files(&out);
    assert_eq!(
        written.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [
            "2026-H1_dot_oral_fluid.json",
            "2026-H1_employer_EMP-1_urine.json"
        ]
    );
    let emp1: serde_json::Value = serde_json::from_str(&written[1].1).unwrap();
    assert_eq!(emp1["summary_id"], "2026-H1_employer_EMP-1_urine");
    assert_eq!(emp1["part"], "A. Urine Specimens");
    assert_eq!(emp1["reporting_period"]["to"], "2026-06-30");
    assert_eq!(emp1["laboratory"]["address"], "1 Test Way, Testville");
    assert_eq!(emp1["employer"]["id"], "EMP-1");
    assert_eq!(emp1["employer"]["name"], "EMP-1 Freight");
    assert_eq!(emp1["ctpa"]["name"], "Example Consortium Services");
    // The six include the result released at 22:00 on June 30 lab time (July 1 UTC); the HHS
    // specimen is not among them.
    assert_eq!(emp1["results_reported"]["total"], 6);
    assert_eq!(emp1["results_reported"]["random"], 6);
    assert_eq!(emp1["positive"]["total"], 1);
    assert_eq!(emp1["positive"]["by_drug"][1]["item"], "Cocaine Metabolite");
    assert_eq!(emp1["positive"]["by_drug"][1]["count"], 1);
    for (_, text) in &written {
        assert_no_donor_data(text);
        assert!(!text.contains("EMP-2") && !text.contains("EMP-3"));
    }
    // The record: file name, SHA-256 of the bytes written, the content itself.
    let rec: summaries::SummaryRecord = store
        .get(Keyspace::Summaries, b"2026-H1_employer_EMP-1_urine")
        .unwrap()
        .unwrap();
    let Outcome::Produced {
        file,
        sha256,
        content,
    } = &rec.outcome
    else {
        panic!("{rec:?}")
    };
    assert_eq!(file, "2026-H1_employer_EMP-1_urine.json");
    assert_eq!(content, &written[1].1);
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(written[1].1.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sha256, &digest);
    assert_eq!((rec.due.as_str(), rec.results), ("2026-07-20", 6));

    // SPEC-3-6 is released on July 2: EMP-3's summary counts its five of January-June (the
    // sixth is in July-December, where its report falls), and DOT urine follows.
    let mut late = recs
        .iter()
        .find(|r| r.specimen_id == "SPEC-3-6")
        .unwrap()
        .clone();
    release(&mut late, at("2026-07-02", 15));
    rt.block_on(put(&committer, vec![late]));
    clock.set_ms(at("2026-07-02", 16));
    let s = produce(clock.now_ms());
    assert_eq!(
        s.produced,
        ["2026-H1_dot_urine", "2026-H1_employer_EMP-3_urine"]
    );
    assert_eq!(s.waiting, 0);
    let dot: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("2026-H1_dot_urine.json")).unwrap())
            .unwrap();
    // DOT: every DOT result of the laboratory, whatever the employer, never an employer's name.
    assert_eq!(dot["results"]["results_reported"], 13);
    assert_eq!(
        dot["by_dot_agency_and_test_reason"][0]["dot_agency"],
        "FMCSA"
    );
    let text = serde_json::to_string(&dot).unwrap();
    assert_no_donor_data(&text);
    for e in ["EMP-1", "EMP-2", "EMP-3", "Freight"] {
        assert!(!text.contains(e), "the DOT summary names {e}");
    }
    let emp3: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("2026-H1_employer_EMP-3_urine.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(emp3["results_reported"]["total"], 5);
    assert!(emp3["ctpa"].is_null(), "EMP-3 has no C/TPA");
    // Each summary once.
    let s = produce(clock.now_ms());
    assert!(s.produced.is_empty() && s.suppressed.is_empty());

    // July 21: the employer summaries are past their July 20 due date, DOT's (July 31) not.
    clock.set_ms(at("2026-07-21", 14));
    let plan = summaries::plan(&store, &settings, clock.now_ms()).unwrap();
    assert_eq!(plan.unsent_overdue["employer"], 2);
    assert_eq!(plan.unsent_overdue["dot"], 0);
    let listed = summaries::list(&store, Some("2026-H1"), OFFSET, clock.now_ms()).unwrap();
    let overdue: Vec<_> = listed
        .iter()
        .filter(|l| l.overdue)
        .map(|l| l.id.as_str())
        .collect();
    assert_eq!(
        overdue,
        [
            "2026-H1_employer_EMP-1_urine",
            "2026-H1_employer_EMP-3_urine"
        ]
    );
    assert!(listed.iter().all(|l| l.sent.is_none()));
    let suppressed = listed
        .iter()
        .find(|l| l.id == "2026-H1_employer_EMP-2_urine")
        .unwrap();
    assert_eq!(
        (suppressed.status, suppressed.file.as_deref()),
        ("suppressed", None)
    );

    // Marked sent: once, by whom and when; never a suppressed one or a date to come.
    let mark = |id: &str, m: MarkSent| {
        rt.block_on(summaries::mark_sent(
            &committer,
            id,
            "Operator",
            m,
            OFFSET,
            clock.now_ms(),
        ))
    };
    let sent = mark(
        "2026-H1_employer_EMP-1_urine",
        MarkSent {
            note: Some("sent to the C/TPA by secure e-mail".into()),
            sent_on: Some("2026-07-17".into()),
        },
    )
    .unwrap();
    let by = sent.sent.unwrap();
    assert_eq!(
        (by.by.as_str(), by.sent_on.as_str()),
        ("Operator", "2026-07-17")
    );
    assert!(!sent.overdue);
    assert!(matches!(
        mark("2026-H1_employer_EMP-1_urine", MarkSent::default()),
        Err(Refused::Conflict(_))
    ));
    assert!(matches!(
        mark("2026-H1_employer_EMP-2_urine", MarkSent::default()),
        Err(Refused::Conflict(_))
    ));
    assert!(matches!(
        mark("2026-H1_employer_EMP-9_urine", MarkSent::default()),
        Err(Refused::NotFound)
    ));
    assert!(matches!(
        mark(
            "2026-H1_dot_urine",
            MarkSent {
                sent_on: Some("2026-07-22".into()),
                ..MarkSent::default()
            }
        ),
        Err(Refused::BadRequest(_))
    ));
    let plan = summaries::plan(&store, &settings, clock.now_ms()).unwrap();
    assert_eq!(plan.unsent_overdue["employer"], 1);
    // August 1: DOT's two are past July 31.
    let plan = summaries::plan(&store, &settings, at("2026-08-01", 12)).unwrap();
    assert_eq!(plan.unsent_overdue["dot"], 2);

    // An employer's request (40.111(b)): EMP-2 gets the "not enough testing" report, EMP-1 its
    // summary; both audited.
    let ask = |employer: &str| {
        rt.block_on(summaries::request(
            &committer,
            &settings.desk,
            employer,
            "2026-01-01",
            "2026-06-30",
            "user:Viewer",
            clock.now_ms(),
        ))
        .unwrap()
    };
    let r = ask("EMP-2");
    assert_eq!(r["kind"], "not_enough_testing");
    assert_eq!(r["disclosures"][0]["kind"], "not_enough_testing");
    assert!(
        r["disclosures"][0]["notice"]
            .as_str()
            .unwrap()
            .contains("40.111")
    );
    assert!(r["disclosures"][0].get("results_reported").is_none());
    let r = ask("EMP-1");
    assert_eq!(r["kind"], "summary");
    assert_eq!(r["disclosures"][0]["results_reported"]["total"], 6);
    assert_no_donor_data(&r.to_string());

    let actions = audit_actions(&store);
    let has = |actor: &str, action: &str, subject: &str| {
        actions
            .iter()
            .any(|(a, b, c)| a == actor && b == action && c == subject)
    };
    assert!(has(
        "system:summaries",
        "summary_produced",
        "2026-H1_employer_EMP-1_urine"
    ));
    assert!(has(
        "system:summaries",
        "summary_suppressed",
        "2026-H1_employer_EMP-2_urine"
    ));
    assert!(has(
        "user:Operator",
        "summary_marked_sent",
        "2026-H1_employer_EMP-1_urine"
    ));
    assert!(has("user:Viewer", "summary_requested", "employer EMP-2"));
    assert_eq!(
        actions
            .iter()
            .filter(|(_, a, _)| a == "summary_produced")
            .count(),
        4,
        "each summary produced once: {actions:?}"
    );
    assert!(store.verify_audit().is_ok());
    rt.block_on(committer.shutdown());
}

/// Writes the fixture into the store a daemon will open.
fn seed(store_dir: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(store_dir).unwrap();
        let committer = GroupCommitter::start(store.clone(), GroupConfig::default()).unwrap();
        let mut recs = fixture(&profiles());
        for r in recs.iter_mut() {
            if r.release.is_none() {
                release(r, at("2026-07-02", 15));
            }
        }
        put(&committer, recs).await;
        committer.shutdown().await;
    });
}

/// The value of `custodian_summaries_overdue{recipient, state}` in a scrape.
fn overdue_gauge(metrics: &str, recipient: &str, state: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("custodian_summaries_overdue{"))
        .find(|l| {
            l.contains(&format!("recipient=\"{recipient}\""))
                && l.contains(&format!("state=\"{state}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn the_daemon_produces_lists_marks_sent_and_answers_requests() {
    let dir = tempfile::tempdir().unwrap();
    seed(&dir.path().join("store"));
    write_config(
        dir.path(),
        r#"
[calendar]
utc_offset_minutes = -300
[summaries]
dir = "summaries"
since = "2026-01-01"
[[summaries.ctpa]]
name = "Example Consortium Services"
address = "200 Example Road"
employers = ["EMP-1"]
"#,
    );
    let d = Daemon::start(dir.path());
    let list = |token: &str| -> Vec<serde_json::Value> {
        let (status, body) = d.get("/api/summaries?period=2026-H1", Some(token));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    wait_until("the 2026-H1 summaries", Duration::from_secs(30), || {
        list(VIEWER_TOKEN).len() == 4
    });
    let ids: Vec<String> = list(VIEWER_TOKEN)
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "2026-H1_dot_urine",
            "2026-H1_employer_EMP-1_urine",
            "2026-H1_employer_EMP-2_urine",
            "2026-H1_employer_EMP-3_urine"
        ]
    );
    let file = dir
        .path()
        .join("summaries/2026-H1_employer_EMP-1_urine.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_no_donor_data(&text);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["ctpa"]["name"], "Example Consortium Services");
    assert_eq!(v["results_reported"]["total"], 6);
    assert!(
        !dir.path()
            .join("summaries/2026-H1_employer_EMP-2_urine.json")
            .exists()
    );

    // The CLI's list (through the API) and one summary with its content.
    let out = d.cli(&["summaries", "list", "--period", "2026-H1"]);
    assert!(out.status.success(), "{out:?}");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 4);
    let (status, body) = d.get(
        "/api/summaries/2026-H1_employer_EMP-1_urine",
        Some(VIEWER_TOKEN),
    );
    assert_eq!(status, 200);
    let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown["content"], v);
    assert!(
        shown["overdue"].as_bool().unwrap(),
        "due 2026-07-20: {shown}"
    );

    // The employer summaries are past due (July 20): the gauge says so until one is marked.
    let scrape = || d.get("/metrics", None).1;
    let before = overdue_gauge(&scrape(), "employer", "unsent").expect("the gauge is exported");
    assert!(before >= 2.0, "EMP-1 and EMP-3 are overdue: {before}");
    let mark = |token: &str| {
        std::process::Command::new(bin())
            .args([
                "summaries",
                "mark-sent",
                "2026-H1_employer_EMP-1_urine",
                "--note",
                "mailed to the C/TPA",
            ])
            .arg("--config")
            .arg(&d.config)
            .env("CUSTODIAN_TOKEN", token)
            .output()
            .unwrap()
    };
    let refused = mark(VIEWER_TOKEN);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("403"),
        "{refused:?}"
    );
    let ok = mark(OPERATOR_TOKEN);
    assert!(ok.status.success(), "{ok:?}");
    let marked: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(marked["sent"]["by"], "Operator");
    assert_eq!(marked["sent"]["note"], "mailed to the C/TPA");
    let again = mark(OPERATOR_TOKEN);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("409"),
        "{again:?}"
    );
    wait_until(
        "the gauge follows the sending",
        Duration::from_secs(30),
        || overdue_gauge(&scrape(), "employer", "unsent") == Some(before - 1.0),
    );

    // An employer's request: the API answers, audited; the CLI exits 1 for "not enough testing".
    let (status, body) = d.get(
        "/api/summary?employer=EMP-1&from=2026-01-01&to=2026-06-30",
        Some(VIEWER_TOKEN),
    );
    assert_eq!(status, 200, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["kind"], "summary");
    assert_no_donor_data(&body);
    let out = d.cli(&["summary", "--employer", "EMP-2", "--period", "2026-H1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["kind"], "not_enough_testing");
    let (_, audit) = d.get("/api/audit/verify", Some(TOKEN));
    assert!(audit.contains("\"ok\":true"), "{audit}");
    let mut d = d;
    assert_eq!(d.term(), Some(0));
    // Stopped: the request reads the store and audits itself.
    let out = d.cli(&["summary", "--employer", "EMP-1", "--period", "2026-H1"]);
    assert!(out.status.success(), "{out:?}");
    let store = Store::open(&dir.path().join("store")).unwrap();
    let actions = audit_actions(&store);
    assert!(
        actions.iter().any(|(a, b, c)| a == "user:Operator"
            && b == "summary_marked_sent"
            && c == "2026-H1_employer_EMP-1_urine"),
        "{actions:?}"
    );
    assert_eq!(
        actions
            .iter()
            .filter(|(_, b, _)| b == "summary_requested")
            .count(),
        3,
        "{actions:?}"
    );
    assert!(actions.iter().any(|(a, _, _)| a.starts_with("cli:")));
}
