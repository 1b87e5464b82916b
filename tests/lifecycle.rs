//! The specimen lifecycle at library level, with a ManualClock and direct sweep calls: a real
//! store and group committer, custody fed with LIMS documents through the spool's own `apply`,
//! releases through the real `Releaser` (a stand-in signer), requests through
//! `lifecycle::apply_request` (admin channel) and LIMS `request` documents.
//!
//! Covers: a correctable flaw expiring across the Thanksgiving 2026 weekend (rejected) and
//! exactly at the close of the 5th business day; a correction in time (hold released, no
//! expiry later) and one too late (refused); a temperature flaw (40.83(f)) reported after
//! expiry; the window counted from the day the accession was stored (days after receipt) or
//! the day the LIMS says action was initiated; two flaws corrected one by one; a one-year retention ending, extended by an MRO letter, then released, discardable
//! with the freezer location, discard confirmed and audited; a request after the year refused;
//! quantitation before and after release; a split request forwarding Bottle B with no donor
//! identity, the second laboratory reconfirming below the primary's cutoff above the LOD; a split
//! request for an absent Bottle B (unavailable report); the MRO's request of 40.187(f) to test
//! the primary for the split's adulterant (LIMS and admin, refusals, each outcome).

mod common;
use common::*;
use custodian::app::config::{Laboratory, MroEntry};
use custodian::core::clock::{Clock, ManualClock};
use custodian::custody::Custody;
use custodian::custody::lifecycle::{
    self, Channel, ClockKind, LifecycleError, RequestKind, RequestOutcome, Settings, WrittenRequest,
};
use custodian::custody::release::{Releaser, Signer};
use custodian::domain::calendar::Date;
use custodian::domain::retention::{Requester, RetentionPolicy, Subject, Until};
use custodian::domain::specimen::{Bottle, ResultEntry, ResultKind, Source, SpecimenRecord};
use custodian::domain::split::{self, SplitDisposition};
use custodian::ingest::spool::{DocumentOutcome, apply};
use custodian::store::{GroupCommitter, GroupConfig, Keyspace, Store};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

const DAY: u64 = 86_400_000;
const SSN: &str = "123-45-6789";
const EMPLOYEE_ID: &str = "EMP-778899";
const DONOR_NAME: &str = "Jordan Q. Testperson";

/// Epoch ms of a UTC date and time `YYYY-MM-DDTHH:MM`.
fn at(s: &str) -> u64 {
    let (d, t) = s.split_once('T').unwrap();
    let (h, m) = t.split_once(':').unwrap();
    d.parse::<Date>().unwrap().start_ms(0)
        + (h.parse::<u64>().unwrap() * 60 + m.parse::<u64>().unwrap()) * 60_000
}

struct FakeSigner;
impl Signer for FakeSigner {
    fn sign(&self, payload: &[u8]) -> Result<(String, String), String> {
        Ok((format!("jws-of-{}-bytes", payload.len()), "kid-test".into()))
    }
}

struct Lab {
    rt: tokio::runtime::Runtime,
    _tmp: tempfile::TempDir,
    store: Store,
    committer: GroupCommitter,
    custody: Custody,
    releaser: Releaser,
    settings: Arc<Settings>,
    clock: ManualClock,
}

impl Lab {
    fn new(start: &str, closures: &[&str]) -> Lab {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let committer = GroupCommitter::start(store.clone(), GroupConfig::default()).unwrap();
        let mut problems = Vec::new();
        let profiles = Arc::new(custodian::app::config::load_profiles(
            &root().join("config/profiles"),
            &mut problems,
        ));
        assert!(problems.is_empty(), "{problems:?}");
        let clock = ManualClock::new(at(start));
        let settings = Settings {
            calendar: custodian::domain::calendar::Calendar::with_closures(
                closures.iter().map(|d| d.parse::<Date>().unwrap()),
            ),
            utc_offset_minutes: 0,
            retention: RetentionPolicy {
                after_report_ms: 7 * DAY,
                utc_offset_minutes: 0,
            },
            laboratory: "Test Laboratory".into(),
            profiles: profiles.clone(),
            default_profile: "part40-2001".into(),
            notices: Some(custodian::custody::notices::NoticeDesk {
                signer: Some(Arc::new(FakeSigner)),
                laboratory: Laboratory {
                    name: "Test Laboratory".into(),
                    address: "1 Test Way, Testville".into(),
                    certified_specimen_types: vec![custodian::domain::rules::SpecimenType::Urine],
                    certified_copy1: Default::default(),
                }
                .identity(),
                mros: Arc::new(
                    [(
                        "MRO-0042".to_string(),
                        custodian::domain::parties::Mro {
                            id: "MRO-0042".into(),
                            name: "Dr. Pat Example, MD".into(),
                            address: "100 Example Way".into(),
                            quantitation_request: None,
                        },
                    )]
                    .into_iter()
                    .collect(),
                ),
                wake: Arc::new(BTreeMap::new()),
            }),
        };
        let custody = Custody::new(
            committer.clone(),
            profiles,
            "part40-2001",
            Arc::new(clock.clone()),
        )
        .with_lifecycle(settings);
        let settings = custody.lifecycle().clone();
        let mro = MroEntry {
            id: "MRO-0042".into(),
            name: "Dr. Pat Example, MD".into(),
            address: "100 Example Way".into(),
            endpoint: "https://127.0.0.1:9/reports".into(),
            ca: "unused".into(),
            client_cert: "unused".into(),
            client_key: "unused".into(),
            quantitation_request: None,
        };
        let releaser = Releaser {
            committer: committer.clone(),
            laboratory: Laboratory {
                name: "Test Laboratory".into(),
                address: "1 Test Way, Testville".into(),
                certified_specimen_types: vec![custodian::domain::rules::SpecimenType::Urine],
                certified_copy1: Default::default(),
            }
            .identity(),
            mros: Arc::new([(mro.id.clone(), mro.party())].into_iter().collect()),
            signer: Some(Arc::new(FakeSigner)),
            clock: Arc::new(clock.clone()),
            wake: Arc::new(BTreeMap::new()),
            lifecycle: settings.clone(),
            copy1_source: Default::default(),
        };
        Lab {
            rt,
            _tmp: tmp,
            store,
            committer,
            custody,
            releaser,
            settings,
            clock,
        }
    }

    fn set(&self, when: &str) {
        self.clock.set_ms(at(when));
    }

    fn lims(&self, name: &str, xml: &[u8]) -> DocumentOutcome {
        self.rt
            .block_on(apply(
                &self.custody,
                name,
                xml,
                1 << 20,
                &custodian::ingest::spool::lims_runs(Vec::new()),
            ))
            .unwrap()
    }

    fn record(&self, id: &str) -> SpecimenRecord {
        custodian::custody::records::read_specimen(&self.store, id)
            .unwrap()
            .unwrap()
    }

    fn sweep(&self) -> lifecycle::SweepReport {
        self.rt
            .block_on(lifecycle::sweep(
                &self.committer,
                &self.settings,
                self.clock.now_ms(),
            ))
            .unwrap()
    }

    fn results(&self, id: &str, control: &str, results: &[(ResultKind, &str, &str)]) {
        let now = self.clock.now_ms();
        let entries = results
            .iter()
            .enumerate()
            .map(|(i, (kind, target, value))| ResultEntry {
                kind: *kind,
                target: target.to_string(),
                value: Some(Decimal::from_str(value).unwrap()),
                unit: "ng/mL".into(),
                bottle: Bottle::A,
                source: Source::Analyzer {
                    analyzer: "lab".into(),
                    control_id: control.into(),
                    observation: (i + 1).to_string(),
                },
                received_at_ms: now,
                ..ResultEntry::default()
            })
            .collect();
        self.rt
            .block_on(self.custody.results(
                "lab",
                control,
                control.as_bytes().to_vec(),
                id,
                entries,
            ))
            .unwrap();
    }

    /// A cocaine positive (benzoylecgonine 200 ng/mL), released now.
    fn released_positive(&self, id: &str, accession: Vec<u8>) {
        self.released_positive_with(id, accession, &[]);
    }

    /// A cocaine positive with more screening results (`extra`), released now.
    fn released_positive_with(
        &self,
        id: &str,
        accession: Vec<u8>,
        extra: &[(ResultKind, &str, &str)],
    ) {
        assert_eq!(
            self.lims(&format!("acc-{id}.xml"), &accession),
            DocumentOutcome::Stored
        );
        use ResultKind::*;
        let mut screen = vec![
            (Initial, "marijuana", "1"),
            (Initial, "cocaine", "400"),
            (Initial, "pcp", "1"),
            (Initial, "amphetamines", "1"),
            (Initial, "opiates", "1"),
            (Validity, "creatinine", "80"),
            (Validity, "ph", "6.5"),
        ];
        // The oxidizing-adulterant test (40.91(c)), unless `extra` brings its own.
        if !extra
            .iter()
            .any(|(k, t, _)| (*k == Validity && *t == "nitrite") || *k == Interference)
        {
            screen.push((Validity, "nitrite", "0"));
        }
        screen.extend_from_slice(extra);
        self.results(id, &format!("{id}-screen"), &screen);
        self.results(
            id,
            &format!("{id}-conf"),
            &[(Confirmation, "benzoylecgonine", "200")],
        );
        assert_eq!(self.record(id).state.key(), "ready_for_review");
        self.rt
            .block_on(
                self.releaser
                    .release(vec![id.into()], "Dr. Test Scientist", false),
            )
            .unwrap();
    }

    fn request(
        &self,
        id: &str,
        doc: &str,
        received: &str,
        kind: RequestKind,
    ) -> Result<RequestOutcome, LifecycleError> {
        self.rt.block_on(lifecycle::apply_request(
            &self.committer,
            &self.settings,
            WrittenRequest {
                specimen_id: id.into(),
                document_ref: doc.into(),
                received_at_ms: at(received),
                recorded_by: "Client Services".into(),
                kind,
            },
            Channel::Admin {
                user: "Operator".into(),
            },
            self.clock.now_ms(),
        ))
    }

    fn audit_actions(&self, action: &str, subject: &str) -> usize {
        self.store
            .audit_entries(1)
            .flatten()
            .filter(|(_, r)| r.entry.action == action && r.entry.subject == subject)
            .count()
    }

    fn due_entries(&self) -> usize {
        self.store.due_until::<lifecycle::DueItem>(u64::MAX).count()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let c = self.committer.clone();
        self.rt.block_on(c.shutdown());
    }
}

/// The accession example for `id` received on `received` (collected the day before), with a
/// donor SSN and a remark naming the donor.
fn accession(id: &str, collected: &str, received: &str) -> String {
    String::from_utf8(accession_xml(id))
        .unwrap()
        .replace(
            "<collection-date>2024-03-04</collection-date>",
            &format!("<collection-date>{collected}</collection-date>"),
        )
        .replace(
            "<receipt-date>2024-03-05</receipt-date>",
            &format!("<receipt-date>{received}</receipt-date>"),
        )
        .replace("000-00-0000", SSN)
        .replace(
            "Step 4 signature missing; memo requested from collector &amp; site.",
            &format!("Donor {DONOR_NAME} asked to leave early."),
        )
}

fn clean(xml: &str) -> String {
    xml.replace(
        "<collector-certification-signed>false</collector-certification-signed>",
        "<collector-certification-signed>true</collector-certification-signed>",
    )
}

fn correction(id: &str, flaw: &str, doc: &str, received_at: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<correction xmlns="urn:custodian:lims:1">
  <specimen-id>{id}</specimen-id>
  <flaw>{flaw}</flaw>
  <document-ref>{doc}</document-ref>
  <received-at>{received_at}</received-at>
  <recorded-by>J. Example (accessioning)</recorded-by>
</correction>
"#
    )
    .into_bytes()
}

#[test]
fn correction_window_expires_across_the_thanksgiving_weekend() {
    // Received Monday 2026-11-23 with the Step 4 certification unsigned (40.83(e)). Business
    // days after it: Tue 24 (1), Wed 25 (2), Thu 26 Thanksgiving, Fri 27 lab closure, Sat, Sun,
    // Mon 30 (3), Tue Dec 1 (4), Wed Dec 2 (5): the window closes at the end of Dec 2.
    let lab = Lab::new("2026-11-23T15:00", &["2026-11-27"]);
    let xml = accession("TG-1", "2026-11-22", "2026-11-23");
    assert_eq!(
        lab.lims("acc-TG-1.xml", xml.as_bytes()),
        DocumentOutcome::Stored
    );
    let r = lab.record("TG-1");
    assert_eq!(r.state.key(), "held");
    let c = r
        .lifecycle
        .correction
        .clone()
        .expect("correction clock set");
    assert_eq!(c.window.last_day.to_string(), "2026-12-02");
    assert_eq!(c.closes_at_ms, at("2026-12-03T00:00"));
    assert_eq!(lab.due_entries(), 1);

    // Five calendar days, and even five weekdays without the holiday and closure, are not it.
    for when in ["2026-11-28T12:00", "2026-12-01T12:00", "2026-12-02T23:59"] {
        lab.set(when);
        let rep = lab.sweep();
        assert!(rep.fired.is_empty(), "{when}: {rep:?}");
        assert_eq!(lab.record("TG-1").state.key(), "held", "{when}");
    }
    lab.set("2026-12-03T00:00");
    let rep = lab.sweep();
    assert_eq!(rep.applied(ClockKind::Correction), vec!["TG-1"]);
    let r = lab.record("TG-1");
    assert!(r.correction_expired);
    assert_eq!(r.state.key(), "ready_for_review");
    let v = &r.evaluation.as_ref().unwrap().verdict;
    assert_eq!(
        v.results,
        [custodian::domain::rules::ResultCategory::Rejected]
    );
    assert_eq!(lab.audit_actions("correction_window_expired", "TG-1"), 1);
    assert_eq!(lab.due_entries(), 0);

    // It fires once: later sweeps find nothing.
    lab.set("2026-12-20T00:00");
    assert!(lab.sweep().fired.is_empty());
    assert_eq!(lab.audit_actions("correction_window_expired", "TG-1"), 1);

    // A correction received after the window is refused with the rule and the closing time.
    let late = correction(
        "TG-1",
        "collector-certification",
        "MEMO-LATE",
        "2026-12-03T09:00:00Z",
    );
    match lab.lims("memo-late.xml", &late) {
        DocumentOutcome::Rejected(why) => {
            assert!(why.contains("after the correction window closed"), "{why}");
            assert!(why.contains("2026-12-03T00:00:00.000Z"), "{why}");
        }
        other => panic!("late correction accepted: {other:?}"),
    }
    assert!(lab.record("TG-1").corrections.is_empty());
}

#[test]
fn correction_in_time_releases_the_hold_and_nothing_fires_later() {
    let lab = Lab::new("2026-11-23T15:00", &["2026-11-27"]);
    let xml = accession("TG-2", "2026-11-22", "2026-11-23");
    assert_eq!(
        lab.lims("acc-TG-2.xml", xml.as_bytes()),
        DocumentOutcome::Stored
    );
    assert_eq!(lab.due_entries(), 1);
    lab.set("2026-12-02T16:00");
    let memo = correction(
        "TG-2",
        "collector-certification",
        "MEMO-2026-0099",
        "2026-12-02T15:30:00Z",
    );
    assert_eq!(lab.lims("memo.xml", &memo), DocumentOutcome::Stored);
    let r = lab.record("TG-2");
    assert_eq!(r.state.key(), "accessioned");
    assert_eq!(r.lifecycle.correction.as_ref().unwrap().due_at_ms, None);
    assert_eq!(lab.due_entries(), 0, "the due entry went with the hold");
    for when in ["2026-12-03T00:00", "2027-01-15T00:00"] {
        lab.set(when);
        assert!(lab.sweep().fired.is_empty());
    }
    let r = lab.record("TG-2");
    assert!(!r.correction_expired);
    assert_eq!(r.state.key(), "accessioned");
    assert_eq!(lab.audit_actions("correction_window_expired", "TG-2"), 0);
}

#[test]
fn july_fourth_on_a_saturday_and_a_temperature_flaw_is_reported() {
    // 2026-07-04 is a Saturday: observed Friday July 3. Received Wednesday July 1: Thu 2 (1),
    // Fri 3 observed holiday, Mon 6 (2), Tue 7 (3), Wed 8 (4), Thu 9 (5).
    let lab = Lab::new("2026-07-01T13:00", &[]);
    let xml = clean(&accession("J4-1", "2026-06-30", "2026-07-01")).replace(
        "<temperature-recorded>true</temperature-recorded>",
        "<temperature-recorded>false</temperature-recorded>",
    );
    assert_eq!(
        lab.lims("acc-J4-1.xml", xml.as_bytes()),
        DocumentOutcome::Stored
    );
    let r = lab.record("J4-1");
    assert_eq!(r.state.key(), "held");
    assert_eq!(
        r.lifecycle
            .correction
            .as_ref()
            .unwrap()
            .window
            .last_day
            .to_string(),
        "2026-07-09"
    );
    lab.set("2026-07-09T23:59");
    assert!(lab.sweep().fired.is_empty());
    lab.set("2026-07-10T00:00");
    assert_eq!(lab.sweep().applied(ClockKind::Correction), vec!["J4-1"]);
    let r = lab.record("J4-1");
    // 40.83(f): the specimen is tested and reported, not rejected.
    assert_eq!(r.state.key(), "accessioned");
    assert!(r.evaluation.as_ref().unwrap().verdict.hold.is_none());
}

/// The flawed accession with `<correction-initiated-on>`.
fn initiated_on(xml: &str, on: &str) -> String {
    let t = "<temperature-recorded>true</temperature-recorded>";
    assert_eq!(xml.matches(t).count(), 1);
    xml.replace(
        t,
        &format!("{t}\n  <correction-initiated-on>{on}</correction-initiated-on>"),
    )
}

#[test]
fn an_accession_stored_days_after_receipt_counts_its_window_from_the_day_it_was_stored() {
    // Received Monday 2026-11-16, accession stored Tuesday 2026-11-24. From the receipt date
    // the window would have closed at the end of Monday 23 (rejected at once); it counts from
    // the day the laboratory first recorded the flaw: Wed 25 (1), Thu 26 Thanksgiving, Fri 27
    // closure, Mon 30 (2), Tue Dec 1 (3), Wed 2 (4), Thu 3 (5).
    let lab = Lab::new("2026-11-24T15:00", &["2026-11-27"]);
    let xml = accession("LATE-1", "2026-11-15", "2026-11-16");
    assert_eq!(
        lab.lims("acc-LATE-1.xml", xml.as_bytes()),
        DocumentOutcome::Stored
    );
    let r = lab.record("LATE-1");
    assert_eq!(r.state.key(), "held");
    let w = r.lifecycle.correction.as_ref().unwrap().window;
    assert_eq!(w.started_on.to_string(), "2026-11-24");
    assert_eq!(w.last_day.to_string(), "2026-12-03");
    // Not expired at once, nor on the last business day.
    for when in ["2026-11-24T15:00", "2026-12-03T23:59"] {
        lab.set(when);
        assert!(lab.sweep().fired.is_empty(), "{when}");
        assert_eq!(lab.record("LATE-1").state.key(), "held", "{when}");
    }
    // The next day it has expired.
    lab.set("2026-12-04T00:00");
    assert_eq!(lab.sweep().applied(ClockKind::Correction), vec!["LATE-1"]);
    let r = lab.record("LATE-1");
    assert_eq!(
        r.evaluation.as_ref().unwrap().verdict.results,
        [custodian::domain::rules::ResultCategory::Rejected]
    );
}

#[test]
fn the_window_counts_from_the_day_the_lims_says_action_was_initiated() {
    // Received Monday 2026-11-16, action initiated Tuesday 17, accession stored Tuesday 24:
    // Wed 18 (1), Thu 19 (2), Fri 20 (3), Mon 23 (4), Tue 24 (5): still open when stored.
    let lab = Lab::new("2026-11-24T15:00", &["2026-11-27"]);
    let xml = initiated_on(
        &accession("INIT-1", "2026-11-15", "2026-11-16"),
        "2026-11-17",
    );
    assert_eq!(
        lab.lims("acc-INIT-1.xml", xml.as_bytes()),
        DocumentOutcome::Stored
    );
    let r = lab.record("INIT-1");
    assert_eq!(r.state.key(), "held");
    let w = r.lifecycle.correction.as_ref().unwrap().window;
    assert_eq!(w.started_on.to_string(), "2026-11-17");
    assert_eq!(w.last_day.to_string(), "2026-11-24");
    lab.set("2026-11-24T23:59");
    assert!(lab.sweep().fired.is_empty());
    lab.set("2026-11-25T00:00");
    assert_eq!(lab.sweep().applied(ClockKind::Correction), vec!["INIT-1"]);
    // A day before the receipt date is refused (the laboratory cannot act before receiving).
    let early = initiated_on(
        &accession("INIT-2", "2026-11-15", "2026-11-16"),
        "2026-11-15",
    );
    match lab.lims("acc-INIT-2.xml", early.as_bytes()) {
        DocumentOutcome::Rejected(why) => {
            assert!(why.contains("correction-initiated-on"), "{why}")
        }
        other => panic!("accepted: {other:?}"),
    }
}

#[test]
fn two_flaws_corrected_one_by_one_a_corrected_signature_never_rejects() {
    // The Step 4 certification unsigned and no temperature statement. The signature is
    // corrected in time, the temperature is not: the result is reported (40.83(f)(2)).
    use custodian::domain::specimen::FlawStatus;
    let lab = Lab::new("2026-11-23T15:00", &["2026-11-27"]);
    let xml = accession("TWO-1", "2026-11-22", "2026-11-23").replace(
        "<temperature-recorded>true</temperature-recorded>",
        "<temperature-recorded>false</temperature-recorded>",
    );
    assert_eq!(
        lab.lims("acc-TWO-1.xml", xml.as_bytes()),
        DocumentOutcome::Stored
    );
    let memo = correction(
        "TWO-1",
        "collector-certification",
        "MEMO-2026-0100",
        "2026-11-24T10:00:00Z",
    );
    lab.set("2026-11-24T10:05");
    assert_eq!(lab.lims("memo-two.xml", &memo), DocumentOutcome::Stored);
    let r = lab.record("TWO-1");
    assert_eq!(r.state.key(), "held", "the temperature is still open");
    assert_eq!(lab.due_entries(), 1);
    lab.set("2026-12-03T00:00");
    assert_eq!(lab.sweep().applied(ClockKind::Correction), vec!["TWO-1"]);
    let r = lab.record("TWO-1");
    let states: Vec<(&str, FlawStatus, Option<&str>)> = r
        .flaws
        .iter()
        .map(|f| (f.flaw.key(), f.status, f.document.as_deref()))
        .collect();
    assert_eq!(
        states,
        [
            (
                "collector_certification",
                FlawStatus::Corrected,
                Some("MEMO-2026-0100")
            ),
            ("temperature", FlawStatus::Expired, None)
        ]
    );
    let v = &r.evaluation.as_ref().unwrap().verdict;
    assert!(v.hold.is_none());
    assert!(
        !v.results
            .contains(&custodian::domain::rules::ResultCategory::Rejected)
    );
    assert_eq!(
        r.state.key(),
        "accessioned",
        "tested and reported, not rejected"
    );
    assert!(
        v.remarks
            .iter()
            .any(|x| x.contains("result reported (40.83(f)(2))")),
        "{:?}",
        v.remarks
    );
}

#[test]
fn one_year_retention_extended_by_the_mro_then_released() {
    let lab = Lab::new("2026-03-10T14:00", &[]);
    let xml = clean(&accession("RT-1", "2026-03-08", "2026-03-09"));
    lab.released_positive("RT-1", xml.into_bytes());
    let reported = at("2026-03-10T14:00");
    let r = lab.record("RT-1");
    let ret = r.lifecycle.retention.as_ref().expect("retention created");
    assert_eq!(ret.reported_at_ms, reported);
    let year = at("2027-03-10T14:00");
    assert_eq!(r.lifecycle.retention_due_ms, Some(year));

    // The MRO's letter, within the year: keep through 2027-12-31.
    lab.set("2026-09-01T10:00");
    let out = lab
        .request(
            "RT-1",
            "MRO-LTR-2026-0007",
            "2026-09-01T09:00",
            RequestKind::RetentionExtension {
                requester: Requester::Mro,
                subject: Subject::Specimen,
                until: Until::Date("2027-12-31".parse().unwrap()),
            },
        )
        .unwrap();
    assert!(matches!(out, RequestOutcome::Recorded(_)));
    let r = lab.record("RT-1");
    assert_eq!(r.lifecycle.retention_due_ms, Some(at("2028-01-01T00:00")));
    assert_eq!(r.lifecycle.requests.len(), 1);
    assert_eq!(lab.audit_actions("written_request", "RT-1"), 1);

    // The year ends: nothing is discardable (the clock moved with the extension).
    lab.set("2027-03-10T14:00");
    assert!(lab.sweep().fired.is_empty());
    let list = lifecycle::discardable(&lab.store, &lab.settings, lab.clock.now_ms()).unwrap();
    assert!(list.is_empty(), "{list:?}");

    // A request from the employer after the year passed is refused with a clear error.
    let e = lab
        .request(
            "RT-1",
            "EMP-LTR-1",
            "2027-03-11T09:00",
            RequestKind::RetentionExtension {
                requester: Requester::Employer,
                subject: Subject::Records,
                until: Until::Released,
            },
        )
        .err();
    assert_eq!(
        e, None,
        "records are kept two years: still within their period"
    );
    lab.set("2028-03-11T09:00");
    let e = lab
        .request(
            "RT-1",
            "EMP-LTR-2",
            "2028-03-11T09:00",
            RequestKind::RetentionExtension {
                requester: Requester::Employee,
                subject: Subject::Specimen,
                until: Until::Released,
            },
        )
        .unwrap_err();
    assert_eq!(e.status(), 409);
    assert!(e.to_string().contains("retention period"), "{e}");

    // The MRO releases its request in writing before 2027-12-31: discardable at once.
    let lab2 = Lab::new("2026-03-10T14:00", &[]);
    let xml = clean(&accession("RT-2", "2026-03-08", "2026-03-09"));
    lab2.released_positive("RT-2", xml.into_bytes());
    lab2.set("2026-09-01T10:00");
    lab2.request(
        "RT-2",
        "MRO-LTR-2026-0008",
        "2026-09-01T09:00",
        RequestKind::RetentionExtension {
            requester: Requester::Mro,
            subject: Subject::Specimen,
            until: Until::Released,
        },
    )
    .unwrap();
    // Only the records' two years remain on the clock; the specimen waits for the release.
    assert_eq!(
        lab2.record("RT-2").lifecycle.retention_due_ms,
        Some(at("2028-03-10T14:00"))
    );
    lab2.set("2027-06-01T10:00");
    assert!(lab2.sweep().fired.is_empty(), "kept until released");
    // Only the party that asked may release it.
    let e = lab2
        .request(
            "RT-2",
            "EMP-REL-1",
            "2027-06-01T09:00",
            RequestKind::RetentionRelease {
                requester: Requester::Employer,
                request_ref: "MRO-LTR-2026-0008".into(),
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("only they can release it"), "{e}");
    lab2.request(
        "RT-2",
        "MRO-REL-2027-0001",
        "2027-06-01T09:00",
        RequestKind::RetentionRelease {
            requester: Requester::Mro,
            request_ref: "MRO-LTR-2026-0008".into(),
        },
    )
    .unwrap();
    let rep = lab2.sweep();
    assert_eq!(rep.applied(ClockKind::Retention), vec!["RT-2"]);
    let list = lifecycle::discardable(&lab2.store, &lab2.settings, lab2.clock.now_ms()).unwrap();
    let items: Vec<(&str, Option<&str>)> = list
        .iter()
        .map(|d| {
            (
                match d.item.item {
                    custodian::domain::retention::Item::Primary => "primary",
                    custodian::domain::retention::Item::Split => "split",
                    custodian::domain::retention::Item::Records => "records",
                },
                d.item.location.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        items,
        vec![("primary", None), ("split", Some("FRZ-2/R3/B14"))]
    );
    // The records' two years are the next clock.
    assert_eq!(
        lab2.record("RT-2").lifecycle.retention_due_ms,
        Some(at("2028-03-10T14:00"))
    );
    // The lab confirms the discard of the split; it leaves the list, audited.
    lab2.rt
        .block_on(lifecycle::confirm_discard(
            &lab2.committer,
            &lab2.settings,
            "RT-2",
            custodian::domain::retention::Item::Split,
            "Operator",
            lab2.clock.now_ms(),
        ))
        .unwrap();
    let list = lifecycle::discardable(&lab2.store, &lab2.settings, lab2.clock.now_ms()).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(lab2.audit_actions("discard_confirmed", "RT-2"), 1);
    let entry = lab2
        .store
        .audit_entries(1)
        .flatten()
        .find(|(_, r)| r.entry.action == "discard_confirmed")
        .unwrap()
        .1;
    assert_eq!(entry.entry.actor, "user:Operator");
    assert_eq!(
        entry.entry.after.as_deref(),
        Some("split discarded from FRZ-2/R3/B14")
    );
    // Discarding twice is refused.
    assert!(
        lab2.rt
            .block_on(lifecycle::confirm_discard(
                &lab2.committer,
                &lab2.settings,
                "RT-2",
                custodian::domain::retention::Item::Split,
                "Operator",
                lab2.clock.now_ms(),
            ))
            .is_err()
    );
}

#[test]
fn quantitation_before_release_is_recorded_and_after_release_needs_a_supplement() {
    let lab = Lab::new("2026-03-10T14:00", &[]);
    let xml = clean(&accession("QN-1", "2026-03-08", "2026-03-09"));
    assert_eq!(
        lab.lims("acc-QN-1.xml", xml.as_bytes()),
        DocumentOutcome::Stored
    );
    lab.request(
        "QN-1",
        "MRO-Q-1",
        "2026-03-10T13:00",
        RequestKind::Quantitation,
    )
    .unwrap();
    assert!(lab.record("QN-1").mro_requested_quantitation);
    let lab2 = Lab::new("2026-03-10T14:00", &[]);
    lab2.released_positive(
        "QN-2",
        clean(&accession("QN-2", "2026-03-08", "2026-03-09")).into_bytes(),
    );
    let e = lab2
        .request(
            "QN-2",
            "MRO-Q-2",
            "2026-03-10T15:00",
            RequestKind::Quantitation,
        )
        .unwrap_err();
    // After release the request is answered by a supplementary report to the MRO (daemon test
    // `tests/ccf_copy1.rs`); this laboratory's test signer writes no readable report, so the
    // supplement cannot be made and the request is refused without being recorded: it is
    // never on file without reaching the MRO.
    assert!(e.to_string().contains("supplementary report"), "{e}");
    assert!(!lab2.record("QN-2").mro_requested_quantitation);
    assert!(lab2.record("QN-2").supplements.is_empty());
}

/// Every string sent for the split (the whole disposition, request and package) must hold none
/// of the donor's identifiers.
fn assert_no_donor_identity(text: &str) {
    let lower = text.to_lowercase();
    for needle in [
        SSN,
        "123456789",
        "123 45 6789",
        EMPLOYEE_ID,
        DONOR_NAME,
        "Testperson",
    ] {
        assert!(
            !lower.contains(&needle.to_lowercase()),
            "found `{needle}` in {text}"
        );
    }
}

#[test]
fn split_request_forwards_bottle_b_without_donor_identity_and_the_second_lab_reconfirms() {
    let lab = Lab::new("2026-03-10T14:00", &[]);
    let xml = clean(&accession("SP-1", "2026-03-08", "2026-03-09"));
    lab.released_positive("SP-1", xml.into_bytes());
    lab.set("2026-04-02T10:00");
    // The MRO's request arrives as a LIMS `request` document.
    let req = std::fs::read_to_string(root().join("tests/data/lims/request-split-example.xml"))
        .unwrap()
        .replace("X0000001-TEST", "SP-1");
    assert_eq!(
        lab.lims("split-SP-1.xml", req.as_bytes()),
        DocumentOutcome::Stored
    );
    assert_eq!(
        lab.lims("split-SP-1-again.xml", req.as_bytes()),
        DocumentOutcome::Duplicate
    );
    let r = lab.record("SP-1");
    let s = r.lifecycle.split.as_ref().expect("split recorded");
    let SplitDisposition::Forwarded(p) = &s.disposition else {
        panic!("not forwarded: {:?}", s.disposition)
    };
    assert_eq!(p.manifest.bottle, "B");
    assert_eq!(p.manifest.seal, "intact");
    assert_eq!(p.manifest.ship_to, "Second Example Laboratory");
    assert_eq!(p.mro_request.document_ref, "MRO-SPLIT-2026-0003");
    assert_eq!(p.copy1.first_laboratory, "Test Laboratory");
    assert_eq!(p.copy1.drugs[0].analyte, "benzoylecgonine");
    // Everything stored and shown for the split carries no donor identifier; the record itself
    // does (the CCF), so the check is meaningful.
    assert!(serde_json::to_string(&r).unwrap().contains(SSN));
    assert_no_donor_identity(&serde_json::to_string(s).unwrap());
    // Shipped: the split's retention clock stopped; the primary's runs on.
    let ret = r.lifecycle.retention.as_ref().unwrap();
    assert!(matches!(
        ret.split,
        custodian::domain::retention::SplitBottle::Shipped { .. }
    ));
    lab.set("2027-03-10T14:00");
    lab.sweep();
    let list = lifecycle::discardable(&lab.store, &lab.settings, lab.clock.now_ms()).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0].item.item,
        custodian::domain::retention::Item::Primary
    );
    // A second request is answered with the first.
    let e = lab
        .request(
            "SP-1",
            "MRO-SPLIT-AGAIN",
            "2026-04-03T09:00",
            RequestKind::SplitTest {
                second_laboratory: "Other Lab".into(),
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("MRO-SPLIT-2026-0003"), "{e}");

    // The second laboratory: benzoylecgonine at 40 ng/mL, below the primary's 150 ng/mL
    // confirmation cutoff, above its LOD of 5: reconfirmed (40.177(b)).
    let profile = lab.settings.profiles.get("part40-2001").unwrap();
    let lods: split::LimitsOfDetection = [("benzoylecgonine".to_string(), Decimal::from(5))]
        .into_iter()
        .collect();
    let tests = split::SplitTests {
        confirmation: [("benzoylecgonine".to_string(), Decimal::from(40))]
            .into_iter()
            .collect(),
        validity: None,
    };
    let e = split::reconfirm(profile, &lods, &p.copy1, &split::Received::Intact, &tests).unwrap();
    match e {
        split::SplitEvaluation::Complete(rep) => {
            assert_eq!(rep.overall(), split::Reconfirmation::Reconfirmed)
        }
        other => panic!("{other:?}"),
    }
    // Below the LOD it fails to reconfirm, and validity tests are then required (40.177(c)).
    let tests = split::SplitTests {
        confirmation: [("benzoylecgonine".to_string(), Decimal::from(4))]
            .into_iter()
            .collect(),
        validity: None,
    };
    assert!(matches!(
        split::reconfirm(profile, &lods, &p.copy1, &split::Received::Intact, &tests).unwrap(),
        split::SplitEvaluation::Pending { .. }
    ));
}

#[test]
fn split_request_for_an_absent_bottle_b_reports_it_unavailable() {
    let lab = Lab::new("2026-03-10T14:00", &[]);
    let xml = clean(&accession("SP-2", "2026-03-08", "2026-03-09"))
        .replace(
            "<ssn>123-45-6789</ssn>",
            &format!("<employee-id>{EMPLOYEE_ID}</employee-id>"),
        )
        .replace(
            "<bottle-b>\n    <seal>intact</seal>",
            "<bottle-b>\n    <seal>absent</seal>",
        );
    assert!(xml.contains("<seal>absent</seal>"));
    lab.released_positive("SP-2", xml.into_bytes());
    let out = lab
        .request(
            "SP-2",
            "MRO-SPLIT-2026-0004",
            "2026-04-02T09:00",
            RequestKind::SplitTest {
                second_laboratory: "Second Example Laboratory".into(),
            },
        )
        .unwrap();
    let RequestOutcome::Recorded(v) = out else {
        panic!()
    };
    assert_eq!(v["disposition"], "unavailable", "{v}");
    let r = lab.record("SP-2");
    let SplitDisposition::Unavailable(u) = &r.lifecycle.split.as_ref().unwrap().disposition else {
        panic!()
    };
    assert!(u.statement.contains("did not accompany"), "{}", u.statement);
    assert_eq!(u.mro_request.document_ref, "MRO-SPLIT-2026-0004");
    assert_no_donor_identity(&serde_json::to_string(&r.lifecycle.split).unwrap());
    assert_eq!(
        r.lifecycle.retention.as_ref().unwrap().split,
        custodian::domain::retention::SplitBottle::Absent
    );
    // 40.175(b)(2): the report that Bottle B is unavailable goes to the MRO, signed, queued in
    // the same transaction as the answer.
    let queued = &v["reported_to_mro"];
    assert_eq!(queued["mro_id"], "MRO-0042", "{v}");
    let report_id = queued["report_id"].as_str().unwrap();
    assert!(report_id.starts_with("U-SP-2-"), "{report_id}");
    let stored: custodian::custody::outbox::StoredReport = lab
        .store
        .get(Keyspace::Reports, report_id.as_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(stored.mro_id, "MRO-0042");
    assert_eq!(
        stored.delivery,
        custodian::custody::outbox::Delivery::Pending
    );
    assert_eq!(stored.kid, "kid-test");
    let queue: Vec<_> = lab
        .store
        .scan_prefix::<String>(
            Keyspace::Outbox,
            &custodian::custody::outbox::queue_prefix("MRO-0042"),
        )
        .flatten()
        .map(|(_, id)| id)
        .collect();
    assert!(queue.iter().any(|q| q == report_id), "{queue:?}");
}

#[test]
fn negative_discardable_after_the_configured_delay() {
    let lab = Lab::new("2026-05-04T10:00", &[]);
    let id = "NG-1";
    let xml = clean(&accession(id, "2026-05-02", "2026-05-03"));
    assert_eq!(
        lab.lims("acc-NG-1.xml", xml.as_bytes()),
        DocumentOutcome::Stored
    );
    use ResultKind::*;
    lab.results(
        id,
        "ng-screen",
        &[
            (Initial, "marijuana", "1"),
            (Initial, "cocaine", "1"),
            (Initial, "pcp", "1"),
            (Initial, "amphetamines", "1"),
            (Initial, "opiates", "1"),
            (Validity, "creatinine", "80"),
            (Validity, "ph", "6.5"),
            (Validity, "nitrite", "0"),
        ],
    );
    lab.rt
        .block_on(
            lab.releaser
                .release(vec![id.into()], "Dr. Test Scientist", true),
        )
        .unwrap();
    assert_eq!(
        lab.record(id).lifecycle.retention_due_ms,
        Some(at("2026-05-11T10:00"))
    );
    lab.set("2026-05-11T09:59");
    assert!(lab.sweep().fired.is_empty());
    lab.set("2026-05-11T10:00");
    assert_eq!(lab.sweep().applied(ClockKind::Retention), vec![id]);
    assert_eq!(
        lifecycle::discardable(&lab.store, &lab.settings, lab.clock.now_ms())
            .unwrap()
            .len(),
        2
    );
}

fn nitrite_retest(doc_cite: &str, remark: &str) -> RequestKind {
    RequestKind::AdulterantRetest {
        cite: doc_cite.into(),
        remark: remark.into(),
        substances: vec![],
    }
}

const NITRITE_CITE: &str = "40.95(a)(2), HHS criteria";
const NITRITE_REMARK: &str = "nitrite 500 mcg/mL or more";

fn forward_split(lab: &Lab, id: &str) {
    let out = lab
        .request(
            id,
            &format!("MRO-SPLIT-{id}"),
            "2026-04-02T09:00",
            RequestKind::SplitTest {
                second_laboratory: "Second Example Laboratory".into(),
            },
        )
        .unwrap();
    let RequestOutcome::Recorded(v) = out else {
        panic!("duplicate")
    };
    assert_eq!(v["disposition"], "forwarded", "{v}");
}

fn retest_view(lab: &Lab, id: &str) -> serde_json::Value {
    lifecycle::adulterant_retest_view(&lab.record(id), &lab.settings)
        .unwrap()
        .expect("request recorded")
}

#[test]
fn primary_tested_for_the_split_adulterant_40_187_f() {
    use ResultKind::Validity;
    let lab = Lab::new("2026-03-10T14:00", &[]);
    // Primary positive for cocaine; nitrite measured at 120 mcg/mL (below every criterion).
    lab.released_positive_with(
        "AR-1",
        clean(&accession("AR-1", "2026-03-08", "2026-03-09")).into_bytes(),
        &[(Validity, "nitrite", "120")],
    );
    lab.set("2026-04-02T10:00");
    // Before any split test, the request is refused and nothing is recorded.
    let e = lab
        .request(
            "AR-1",
            "MRO-LTR-EARLY",
            "2026-04-02T09:00",
            nitrite_retest(NITRITE_CITE, NITRITE_REMARK),
        )
        .unwrap_err();
    assert_eq!(e.status(), 409);
    assert!(e.to_string().contains("40.187(f)"), "{e}");
    assert!(lab.record("AR-1").lifecycle.adulterant_retest.is_none());
    assert_eq!(lab.audit_actions("written_request", "AR-1"), 0);

    forward_split(&lab, "AR-1");
    // The split laboratory found nitrite; the MRO's letter arrives as a LIMS document.
    lab.set("2026-04-20T10:00");
    let doc = std::fs::read_to_string(
        root().join("tests/data/lims/request-adulterant-retest-example.xml"),
    )
    .unwrap()
    .replace("X0000001-TEST", "AR-1");
    assert_eq!(
        lab.lims("retest-AR-1.xml", doc.as_bytes()),
        DocumentOutcome::Stored
    );
    assert_eq!(
        lab.lims("retest-AR-1-again.xml", doc.as_bytes()),
        DocumentOutcome::Duplicate
    );
    let r = lab.record("AR-1");
    let req = r.lifecycle.adulterant_retest.as_ref().unwrap();
    assert_eq!(req.document_ref, "MRO-LTR-2026-0420");
    assert_eq!(req.adulterant.result, "adulterated");
    assert_eq!(req.adulterant.remark, NITRITE_REMARK);
    let last = r.lifecycle.requests.last().unwrap();
    assert_eq!(last.kind, "adulterant_retest");
    assert_eq!(last.via, "lims:retest-AR-1.xml");
    assert_eq!(lab.audit_actions("written_request", "AR-1"), 2);
    // The primary's nitrite (120) does not meet the criterion: failed to reconfirm, 40.183(b)(2).
    let v = retest_view(&lab, "AR-1");
    assert_eq!(v["outcome"]["state"], "complete", "{v}");
    assert_eq!(
        v["outcome"]["result"]["result"], "failed_to_reconfirm",
        "{v}"
    );
    assert_eq!(
        v["outcome"]["result"]["reason"]["reason"], "adulterant_not_found_within_criteria",
        "{v}"
    );
    assert!(
        v["outcome"]["statement"]
            .as_str()
            .unwrap()
            .contains("40.187(f)(4)(iii)"),
        "{v}"
    );
    assert_eq!(v["outcome"]["request_ref"], "MRO-LTR-2026-0420");
    // A second request for the same specimen is refused, naming the first.
    let e = lab
        .request(
            "AR-1",
            "MRO-LTR-AGAIN",
            "2026-04-21T09:00",
            nitrite_retest(NITRITE_CITE, NITRITE_REMARK),
        )
        .unwrap_err();
    assert!(e.to_string().contains("MRO-LTR-2026-0420"), "{e}");
    assert_eq!(lab.audit_actions("written_request", "AR-1"), 2);

    // Primary also adulterated by nitrite (650): the adulterant reconfirms in the primary.
    lab.set("2026-03-10T14:00");
    lab.released_positive_with(
        "AR-2",
        clean(&accession("AR-2", "2026-03-08", "2026-03-09")).into_bytes(),
        &[(Validity, "nitrite", "650")],
    );
    lab.set("2026-04-02T10:00");
    forward_split(&lab, "AR-2");
    // A criterion the profile does not have is refused, nothing recorded.
    let e = lab
        .request(
            "AR-2",
            "MRO-LTR-BAD",
            "2026-04-20T09:00",
            nitrite_retest(NITRITE_CITE, "made up"),
        )
        .unwrap_err();
    assert!(e.to_string().contains("made up"), "{e}");
    assert!(lab.record("AR-2").lifecycle.adulterant_retest.is_none());
    let out = lab
        .request(
            "AR-2",
            "MRO-LTR-0421",
            "2026-04-20T09:00",
            nitrite_retest(NITRITE_CITE, NITRITE_REMARK),
        )
        .unwrap();
    let RequestOutcome::Recorded(v) = out else {
        panic!("duplicate")
    };
    assert_eq!(v["outcome"]["state"], "complete", "{v}");
    assert_eq!(v["outcome"]["result"]["result"], "reconfirmed", "{v}");
    assert_eq!(retest_view(&lab, "AR-2"), v);

    // Primary never tested for nitrite: pending, naming the measure. Its oxidizing-adulterant
    // test (40.91(c), needed before review) was a general oxidant check, which reported an
    // interference: no nitrite value.
    lab.set("2026-03-10T14:00");
    lab.released_positive_with(
        "AR-3",
        clean(&accession("AR-3", "2026-03-08", "2026-03-09")).into_bytes(),
        &[(ResultKind::Interference, "oxidant", "1")],
    );
    lab.set("2026-04-02T10:00");
    forward_split(&lab, "AR-3");
    lab.request(
        "AR-3",
        "MRO-LTR-0422",
        "2026-04-20T09:00",
        nitrite_retest(NITRITE_CITE, NITRITE_REMARK),
    )
    .unwrap();
    let v = retest_view(&lab, "AR-3");
    assert_eq!(v["outcome"]["state"], "pending", "{v}");
    assert_eq!(
        v["outcome"]["missing"],
        serde_json::json!([{"missing": "measure", "key": "nitrite"}]),
        "{v}"
    );
    // A specimen with no such request has nothing to show.
    assert_eq!(
        lifecycle::adulterant_retest_view(&lab.record("AR-3"), &lab.settings).map(|v| v.is_some()),
        Ok(true)
    );
    let mut none = lab.record("AR-3");
    none.lifecycle.adulterant_retest = None;
    assert_eq!(
        lifecycle::adulterant_retest_view(&none, &lab.settings),
        Ok(None)
    );
}

/// The first laboratory's forwarding package for a released cocaine positive, as JSON.
fn forwarded_package(lab: &Lab, id: &str) -> serde_json::Value {
    lab.released_positive(
        id,
        clean(&accession(id, "2026-03-08", "2026-03-09")).into_bytes(),
    );
    forward_split(lab, id);
    let d = &lab.record(id).lifecycle.split.unwrap().disposition;
    assert!(matches!(d, SplitDisposition::Forwarded(_)));
    serde_json::to_value(d).unwrap()
}

fn split_lab_of(lab: &Lab, lods: &[(&str, i64)]) -> Arc<custodian::custody::split_lab::SplitLab> {
    Arc::new(custodian::custody::split_lab::SplitLab {
        lods: lods
            .iter()
            .map(|(k, v)| (k.to_string(), Decimal::from(*v)))
            .collect(),
        profiles: lab.settings.profiles.clone(),
        default_profile: "part40-2001".into(),
    })
}

fn receive(
    lab: &Lab,
    split_lab: &Arc<custodian::custody::split_lab::SplitLab>,
    body: serde_json::Value,
) -> Result<serde_json::Value, custodian::custody::split_lab::IntakeError> {
    let body: custodian::custody::split_lab::IntakeBody = serde_json::from_value(body).unwrap();
    lab.rt.block_on(custodian::custody::split_lab::receive(
        &lab.committer,
        split_lab,
        body,
        "Receiving Tech",
        lab.clock.now_ms(),
    ))
}

fn split_view(
    lab: &Lab,
    split_lab: &custodian::custody::split_lab::SplitLab,
    id: &str,
) -> serde_json::Value {
    custodian::custody::split_lab::view(split_lab, &lab.record(id))
        .unwrap()
        .expect("received")
}

#[test]
fn second_laboratory_reconfirms_a_received_bottle_b() {
    use ResultKind::*;
    // The first laboratory forwards Bottle B of three cocaine positives.
    let first = Lab::new("2026-03-10T14:00", &[]);
    let pkg1 = forwarded_package(&first, "SL-1");
    let pkg2 = forwarded_package(&first, "SL-2");
    let pkg3 = forwarded_package(&first, "SL-3");
    assert_no_donor_identity(&pkg1.to_string());

    // custodian at the second laboratory.
    let second = Lab::new("2026-04-06T09:00", &[]);
    let lab = split_lab_of(&second, &[("benzoylecgonine", 5), ("thca", 2)]);
    // Without a limit of detection for the analyte, the intake is refused and nothing stored.
    let no_lod = split_lab_of(&second, &[("thca", 2)]);
    let e = receive(&second, &no_lod, pkg1.clone()).unwrap_err();
    assert_eq!(e.status(), 409);
    assert!(e.to_string().contains("benzoylecgonine"), "{e}");
    assert!(
        second
            .store
            .get::<SpecimenRecord>(Keyspace::Specimens, b"SL-1")
            .unwrap()
            .is_none()
    );
    // The first laboratory's own primary cannot be taken in as a received split.
    let e = receive(
        &first,
        &split_lab_of(&first, &[("benzoylecgonine", 5)]),
        pkg1.clone(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("accessioned here"), "{e}");

    // The whole forwarding package is posted as is.
    let out = receive(&second, &lab, pkg1.clone()).unwrap();
    assert_eq!(out["condition"], "intact");
    assert_eq!(second.audit_actions("split_received", "SL-1"), 1);
    let e = receive(&second, &lab, pkg1.clone()).unwrap_err();
    assert!(e.to_string().contains("already received"), "{e}");
    assert_eq!(second.audit_actions("split_received", "SL-1"), 1);
    assert_no_donor_identity(&serde_json::to_string(&second.record("SL-1")).unwrap());
    // Nothing tested yet.
    let v = split_view(&second, &lab, "SL-1");
    assert_eq!(v["result"], "Pending", "{v}");
    assert_eq!(
        v["evaluation"]["missing"],
        serde_json::json!([{"missing": "drug", "key": "benzoylecgonine"}])
    );
    assert_eq!(v["mro"]["name"], pkg1["copy1"]["mro"]["name"]);
    // Benzoylecgonine at 40 ng/mL on this laboratory's instrument: below the primary's
    // 150 ng/mL confirmation cutoff, above the LOD of 5: reconfirmed (40.177(b)).
    second.results(
        "SL-1",
        "SL-1-conf",
        &[(Confirmation, "benzoylecgonine", "40")],
    );
    let v = split_view(&second, &lab, "SL-1");
    assert_eq!(v["result"], "Reconfirmed", "{v}");
    assert_eq!(v["reason"], serde_json::Value::Null);
    assert_eq!(second.record("SL-1").state.key(), "awaiting_accession");

    // Below the LOD: the validity tests of 40.177(c) are required first.
    receive(&second, &lab, serde_json::json!({"copy1": pkg2["copy1"]})).unwrap();
    second.results(
        "SL-2",
        "SL-2-conf",
        &[(Confirmation, "benzoylecgonine", "3")],
    );
    let v = split_view(&second, &lab, "SL-2");
    assert_eq!(v["result"], "Pending", "{v}");
    assert_eq!(
        v["evaluation"]["missing"],
        serde_json::json!([
            {"missing": "validity_test", "key": "creatinine"},
            {"missing": "validity_test", "key": "ph"},
            {"missing": "validity_test", "key": "specific_gravity"},
        ])
    );
    second.results(
        "SL-2",
        "SL-2-val",
        &[(Validity, "creatinine", "80"), (Validity, "ph", "6.5")],
    );
    let v = split_view(&second, &lab, "SL-2");
    assert_eq!(v["result"], "Failed to Reconfirm", "{v}");
    assert_eq!(v["reason"], "Drug(s)/Drug Metabolite(s) Not Detected.");
    assert_eq!(
        v["evaluation"]["validity"]["finding"],
        "consistent_with_human_urine"
    );

    // A bottle that arrived leaked: failed to reconfirm, specimen not available (40.183(b)(4)).
    let mut leaked = pkg3.clone();
    leaked["received"] =
        serde_json::json!({"condition": "not_available", "detail": "leaked in transit"});
    let out = receive(&second, &lab, leaked).unwrap();
    assert_eq!(out["condition"], "not available: leaked in transit");
    let v = split_view(&second, &lab, "SL-3");
    assert_eq!(v["result"], "Failed to Reconfirm", "{v}");
    assert_eq!(v["reason"], "Specimen not available for testing.");

    // A manifest for another specimen or bottle is refused.
    let mut wrong = pkg3.clone();
    wrong["copy1"]["specimen_id"] = "SL-4".into();
    let e = receive(&second, &lab, wrong).unwrap_err();
    assert!(e.to_string().contains("manifest names specimen"), "{e}");
    // A record with no received split has nothing to show.
    assert_eq!(
        custodian::custody::split_lab::view(&lab, &first.record("SL-1")),
        Ok(None)
    );
}
