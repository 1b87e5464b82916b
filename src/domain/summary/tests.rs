//! The summaries' items and suppression against Appendix D and Appendix E, with records judged
//! by the shipped editions.

use super::fixture::{DONOR_ID, Spec, at, record};
use super::*;
use crate::domain::rules::{self, Program, SpecimenType};
use crate::domain::specimen::{Release, ReportCorrection, ResultKind::*, SpecimenRecord};

const EASTERN: i32 = -300;

fn lab() -> Identity {
    Identity {
        name: "Example Toxicology Laboratory".into(),
        address: "100 Example Way, Springfield, IL 62701".into(),
    }
}

fn h1() -> (i64, i64) {
    let p = Period::parse("2026-H1").unwrap();
    (p.first_day(), p.last_day())
}

fn reported_of(recs: &[SpecimenRecord], offset: i32) -> Vec<Reported<'_>> {
    recs.iter().filter_map(|r| reported(r, offset)).collect()
}

fn employer(
    recs: &[SpecimenRecord],
    employer_id: &str,
    t: SpecimenType,
    (from, to): (i64, i64),
    offset: i32,
) -> (Disclosure, u64) {
    let lab = lab();
    employer::summarize(
        &reported_of(recs, offset),
        employer::Addressed {
            laboratory: &lab,
            employer_id,
            ctpa: None,
        },
        t,
        from,
        to,
    )
}

/// The hand-counted urine results of EMP-1 in January-June 2026, one of each kind, and
/// records that must not count (another period, employer, program, specimen type; unreleased).
fn urine_fixture() -> Vec<SpecimenRecord> {
    let mid = at("2026-03-10", 15);
    let spec = |id, reason, results| Spec {
        id,
        reason,
        results,
        released_at_ms: Some(mid),
        ..Spec::default()
    };
    vec![
        // Negative, random.
        record(&spec(
            "N1",
            Some("random"),
            vec![(Initial, "marijuana", "1")],
        )),
        // Negative and dilute (40.88(a)), pre-employment.
        record(&spec(
            "N2",
            Some("pre-employment"),
            vec![
                (Validity, "creatinine", "10"),
                (Validity, "specific_gravity", "1.002"),
            ],
        )),
        // Positive for cocaine and marijuana, post-accident.
        record(&spec(
            "P1",
            Some("post-accident"),
            vec![
                (Initial, "cocaine", "400"),
                (Confirmation, "benzoylecgonine", "200"),
                (Initial, "marijuana", "60"),
                (Confirmation, "thca", "20"),
            ],
        )),
        // Positive for codeine, morphine and hydrocodone (opioids once), no reason on the CCF.
        record(&spec(
            "P2",
            None,
            vec![
                (Initial, "codeine_morphine", "5000"),
                (Confirmation, "morphine", "3000"),
                (Confirmation, "codeine", "2500"),
                (Initial, "hydrocodone_hydromorphone", "800"),
                (Confirmation, "hydrocodone", "400"),
            ],
        )),
        // Positive for MDMA, reasonable suspicion.
        record(&spec(
            "P3",
            Some("reasonable-suspicion"),
            vec![(Initial, "mdma_mda", "900"), (Confirmation, "mdma", "600")],
        )),
        // Rejected: fatal flaw (40.83(c)(1)), random.
        record(&Spec {
            findings: rules::Accession {
                id_matches: false,
                ..rules::Accession::default()
            },
            ..spec("R1", Some("random"), vec![])
        }),
        // Rejected: the collector's certification was not corrected in time, return-to-duty.
        record(&Spec {
            findings: rules::Accession {
                collector_certification_signed: false,
                ..rules::Accession::default()
            },
            correction_expired: true,
            ..spec("R2", Some("return-to-duty"), vec![])
        }),
        // Adulterated: nitrite 800 mcg/mL (40.89), follow-up.
        record(&spec(
            "A1",
            Some("follow-up"),
            vec![(Validity, "nitrite", "800")],
        )),
        // Substituted (40.88(b)), "Other" on the CCF.
        record(&spec(
            "S1",
            Some("other"),
            vec![
                (Validity, "creatinine", "1"),
                (Validity, "specific_gravity", "1.0005"),
            ],
        )),
        // Invalid: pH 4.2 (40.90), random.
        record(&spec("I1", Some("random"), vec![(Validity, "ph", "4.2")])),
        // Not counted: reported in July, another employer, an HHS specimen, oral fluid,
        // not yet released.
        record(&Spec {
            released_at_ms: Some(at("2026-07-01", 12)),
            ..spec("X1", Some("random"), vec![])
        }),
        record(&Spec {
            employer: "EMP-2",
            ..spec("X2", Some("random"), vec![])
        }),
        record(&Spec {
            program: Program::Hhs,
            ..spec("X3", Some("random"), vec![])
        }),
        record(&Spec {
            specimen_type: SpecimenType::OralFluid,
            ..spec("X4", Some("random"), vec![])
        }),
        record(&Spec {
            released_at_ms: None,
            ..spec("X5", Some("random"), vec![])
        }),
    ]
}

#[test]
fn the_employer_summary_follows_appendix_d_item_by_item() {
    let recs = urine_fixture();
    let lab = lab();
    let ctpa = Identity {
        name: "Example C/TPA".into(),
        address: "1 Consortium Road".into(),
    };
    let (d, counted) = employer::summarize(
        &reported_of(&recs, EASTERN),
        employer::Addressed {
            laboratory: &lab,
            employer_id: "EMP-1",
            ctpa: Some(&ctpa),
        },
        SpecimenType::Urine,
        h1().0,
        h1().1,
    );
    let Disclosure::Summary(s) = d else {
        panic!("ten results give a summary")
    };
    assert_eq!(counted, 10);
    // The heading items: reporting period, laboratory, employer, C/TPA.
    assert_eq!(s.part, "A. Urine Specimens");
    assert_eq!(
        (
            s.reporting_period.from.as_str(),
            s.reporting_period.to.as_str()
        ),
        ("2026-01-01", "2026-06-30")
    );
    assert_eq!(s.laboratory, lab);
    assert_eq!(s.employer.id, "EMP-1");
    assert_eq!(s.employer.name.as_deref(), Some("Example Freight"));
    assert_eq!(s.ctpa.as_ref(), Some(&ctpa));
    // 1. Results reported by test reason, (a)-(g), and the CCF's "Other" apart.
    let r = &s.results_reported;
    assert_eq!(r.total, 10);
    assert_eq!(
        [
            r.pre_employment,
            r.post_accident,
            r.random,
            r.reasonable_suspicion_cause,
            r.return_to_duty,
            r.follow_up,
            r.not_noted,
            r.other
        ],
        [1, 1, 3, 1, 1, 1, 1, 1]
    );
    // 2. Negative, negative and dilute.
    assert_eq!((s.reported.negative, s.reported.negative_dilute), (1, 1));
    // 3. Rejected for testing by reason.
    let rj = &s.rejected_for_testing;
    assert_eq!((rj.total, rj.fatal_flaw, rj.uncorrected_flaw), (2, 1, 1));
    // 4. Positive by drug, the analytes broken out.
    let p = &s.positive;
    assert_eq!(p.total, 3);
    let drug = |k: &str| p.by_drug.iter().find(|d| d.drug == k).unwrap();
    let analyte = |k: &str, a: &str| {
        drug(k)
            .analytes
            .iter()
            .find(|x| x.analyte == a)
            .unwrap()
            .count
    };
    assert_eq!(
        p.by_drug
            .iter()
            .map(|d| (d.item, d.count))
            .collect::<Vec<_>>(),
        [
            ("Marijuana Metabolite", 1),
            ("Cocaine Metabolite", 1),
            ("Opioids", 1),
            ("Phencyclidine", 0),
            ("Amphetamines", 1)
        ]
    );
    assert_eq!(
        drug("opioids")
            .analytes
            .iter()
            .map(|a| (a.item, a.count))
            .collect::<Vec<_>>(),
        [
            ("Codeine", 1),
            ("Morphine", 1),
            ("6-AM", 0),
            ("Hydrocodone", 1),
            ("Hydromorphone", 0),
            ("Oxycodone", 0),
            ("Oxymorphone", 0)
        ]
    );
    assert_eq!(analyte("amphetamines", "mdma"), 1);
    assert_eq!(analyte("amphetamines", "amphetamine"), 0);
    assert!(drug("marijuana").analytes.is_empty());
    assert!(p.not_listed.is_empty());
    // 5-7.
    assert_eq!((s.adulterated, s.substituted, s.invalid_result), (1, 1, 1));

    // No donor or specimen data, nothing of another party.
    let text = serde_json::to_string(&s).unwrap();
    for secret in [DONOR_ID, "N1", "P2", "R-", "S. Scientist", "EMP-2"] {
        assert!(!text.contains(secret), "the summary shows {secret}: {text}");
    }
    // The JSON keys follow the appendix's items.
    let v = serde_json::to_value(&s).unwrap();
    for key in [
        "reporting_period",
        "laboratory",
        "employer",
        "ctpa",
        "results_reported",
        "reported",
        "rejected_for_testing",
        "positive",
        "adulterated",
        "substituted",
        "invalid_result",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
}

#[test]
fn an_oral_fluid_summary_is_part_b_and_apart_from_urine() {
    let mid = at("2026-04-02", 15);
    let mut recs: Vec<SpecimenRecord> = (0..3)
        .map(|i| {
            record(&Spec {
                id: ["O1", "O2", "O3"][i],
                specimen_type: SpecimenType::OralFluid,
                released_at_ms: Some(mid),
                ..Spec::default()
            })
        })
        .collect();
    recs.push(record(&Spec {
        id: "O4",
        specimen_type: SpecimenType::OralFluid,
        results: vec![(Initial, "thc", "10"), (Confirmation, "thc", "5")],
        released_at_ms: Some(mid),
        ..Spec::default()
    }));
    recs.push(record(&Spec {
        id: "O5",
        specimen_type: SpecimenType::OralFluid,
        results: vec![
            (Initial, "cocaine", "40"),
            (Confirmation, "cocaine", "20"),
            (Confirmation, "benzoylecgonine", "20"),
        ],
        released_at_ms: Some(mid),
        ..Spec::default()
    }));
    let (Disclosure::Summary(s), 5) = employer(&recs, "EMP-1", SpecimenType::OralFluid, h1(), 0)
    else {
        panic!("five oral-fluid results give a summary")
    };
    assert_eq!(s.part, "B. Oral Fluid Specimens");
    let drug = |k: &str| s.positive.by_drug.iter().find(|d| d.drug == k).unwrap();
    assert_eq!(drug("marijuana").count, 1);
    // Cocaine and benzoylecgonine in one specimen: one cocaine positive.
    assert_eq!(drug("cocaine").count, 1);
    assert_eq!(drug("cocaine").item, "Cocaine and/or Cocaine Metabolite");
    assert_eq!((s.positive.total, s.reported.negative), (2, 3));
    assert_eq!(s.rejected_for_testing.total, 0);
    // The urine summary of the same employer and period knows none of them.
    let (urine, n) = employer(&recs, "EMP-1", SpecimenType::Urine, h1(), 0);
    assert_eq!(n, 0);
    assert!(!urine.is_summary());
}

#[test]
fn an_expired_oral_fluid_device_is_counted_a_fatal_flaw_not_an_uncorrected_one() {
    let mid = at("2026-04-02", 15);
    let mut recs: Vec<SpecimenRecord> = ["O1", "O2", "O3"]
        .iter()
        .map(|id| {
            record(&Spec {
                id,
                specimen_type: SpecimenType::OralFluid,
                released_at_ms: Some(mid),
                ..Spec::default()
            })
        })
        .collect();
    // 40.199(b)(8): the device had expired (its date recorded on the CCF); (b)(9): no date
    // recorded and the laboratory confirmed it had expired.
    for (id, recorded) in [("X1", true), ("X2", false)] {
        recs.push(record(&Spec {
            id,
            specimen_type: SpecimenType::OralFluid,
            findings: rules::Accession {
                collection_device_expired: true,
                device_expiration_date_recorded: recorded,
                ..rules::Accession::default()
            },
            released_at_ms: Some(mid),
            ..Spec::default()
        }));
    }
    let (Disclosure::Summary(s), 5) = employer(&recs, "EMP-1", SpecimenType::OralFluid, h1(), 0)
    else {
        panic!("five oral-fluid results give a summary")
    };
    let rj = &s.rejected_for_testing;
    assert_eq!((rj.total, rj.fatal_flaw, rj.uncorrected_flaw), (2, 2, 0));
    assert_eq!(s.reported.negative, 3);
    // (A urine specimen has no collection device: accessioning refuses these findings for it,
    // `rules::tests::oral_fluid_fatal_flaws_and_inputs`.)
}

#[test]
fn fewer_than_five_results_give_the_not_enough_testing_report() {
    let day = at("2026-08-01", 15);
    let mut recs: Vec<SpecimenRecord> = (0..4)
        .map(|i| {
            record(&Spec {
                id: ["T1", "T2", "T3", "T4"][i],
                employer: "EMP-9",
                results: vec![
                    (Initial, "cocaine", "400"),
                    (Confirmation, "benzoylecgonine", "200"),
                ],
                released_at_ms: Some(day),
                ..Spec::default()
            })
        })
        .collect();
    let h2 = Period::parse("2026-H2").unwrap();
    let range = (h2.first_day(), h2.last_day());
    match employer(&recs, "EMP-9", SpecimenType::Urine, range, 0) {
        (Disclosure::NotEnoughTesting(n), 4) => {
            assert!(n.notice.contains("40.111"), "{}", n.notice);
            assert_eq!(n.employer.id, "EMP-9");
            let text = serde_json::to_string(&n).unwrap();
            // No count of any kind: four positives must not be readable from it.
            for word in ["positive", "results_reported", "negative", "adulterated"] {
                assert!(!text.contains(word), "the report shows `{word}`: {text}");
            }
        }
        other => panic!("{other:?}"),
    }
    recs.push(record(&Spec {
        id: "T5",
        employer: "EMP-9",
        released_at_ms: Some(day),
        ..Spec::default()
    }));
    assert!(matches!(
        employer(&recs, "EMP-9", SpecimenType::Urine, range, 0),
        (Disclosure::Summary(s), 5) if s.positive.total == 4
    ));
    // An employer without any result in the period: the report, never a summary.
    let (d, n) = employer(&recs, "EMP-NONE", SpecimenType::Urine, range, 0);
    assert!(matches!(d, Disclosure::NotEnoughTesting(ref r) if r.employer.name.is_none()));
    assert_eq!(n, 0);
}

#[test]
fn a_result_released_at_22_00_on_june_30_lab_time_counts_in_january_june() {
    // Released 2026-07-01T03:00Z: June 30, 22:00 in a laboratory at UTC-5.
    let recs: Vec<SpecimenRecord> = ["B1", "B2", "B3", "B4", "B5"]
        .iter()
        .map(|id| {
            record(&Spec {
                id,
                released_at_ms: Some(at("2026-07-01", 3)),
                ..Spec::default()
            })
        })
        .collect();
    let h2 = Period::parse("2026-H2").unwrap();
    let second = (h2.first_day(), h2.last_day());
    let counted = |range, offset| employer(&recs, "EMP-1", SpecimenType::Urine, range, offset).1;
    assert_eq!(counted(h1(), EASTERN), 5);
    assert_eq!(counted(second, EASTERN), 0);
    // In UTC the same instant is July 1.
    assert_eq!(counted(h1(), 0), 0);
    assert_eq!(counted(second, 0), 5);
    // The DOT summary counts the same way.
    let dot = |range: (i64, i64), offset| {
        dot::summarize(
            &reported_of(&recs, offset),
            &lab(),
            SpecimenType::Urine,
            range.0,
            range.1,
        )
        .results
        .results_reported
    };
    assert_eq!((dot(h1(), EASTERN), dot(second, EASTERN)), (5, 0));
    assert_eq!((dot(h1(), 0), dot(second, 0)), (0, 5));
}

#[test]
fn a_corrected_report_keeps_the_period_of_its_first_release() {
    let mut r = record(&Spec {
        released_at_ms: Some(at("2026-06-30", 15)),
        ..Spec::default()
    });
    let first = r.release.clone().unwrap();
    r.report_corrections.push(ReportCorrection {
        replaces: first.report_id.clone(),
        report_id: "R-S-2".into(),
        reason: "employer name misspelled".into(),
        document: "memo".into(),
        previous: Default::default(),
        superseded_release: first,
    });
    r.release = Some(Release {
        report_id: "R-S-2".into(),
        released_at_ms: at("2026-07-06", 15),
        scientist: "S. Scientist".into(),
        meaning: "corrected report reviewed and released".into(),
        content_sha256: "1".repeat(64),
    });
    let day = reported(&r, 0).unwrap().day;
    assert_eq!(iso(day), "2026-06-30");
}

#[test]
fn the_dot_summary_follows_appendix_e_across_employers() {
    let mut recs = urine_fixture();
    let mid = at("2026-03-10", 15);
    // EMP-2 and EMP-3 results, FAA and not noted; one oral-fluid result for DOT's part.
    recs.push(record(&Spec {
        id: "E2",
        employer: "EMP-3",
        employer_name: "Example Airways",
        dot_agency: Some("faa"),
        reason: Some("pre-employment"),
        results: vec![(Validity, "nitrite", "600")],
        released_at_ms: Some(mid),
        ..Spec::default()
    }));
    recs.push(record(&Spec {
        id: "E3",
        employer: "EMP-3",
        dot_agency: None,
        released_at_ms: Some(mid),
        ..Spec::default()
    }));
    let s = dot::summarize(
        &reported_of(&recs, EASTERN),
        &lab(),
        SpecimenType::Urine,
        h1().0,
        h1().1,
    );
    assert_eq!(s.specimen_type, SpecimenType::Urine);
    assert_eq!(s.laboratory, lab());
    let c = &s.results;
    // A: EMP-1's ten, EMP-2's one (X2), EMP-3's two; not the HHS, oral-fluid, July or
    // unreleased ones.
    assert_eq!(c.results_reported, 13);
    // B: N1, X2, E3 negative; N2 negative-dilute.
    assert_eq!(
        (
            c.negative.total,
            c.negative.counts.negative,
            c.negative.counts.negative_dilute
        ),
        (4, 3, 1)
    );
    // C.
    let rj = &c.rejected_for_testing;
    assert_eq!((rj.total, rj.fatal_flaw, rj.uncorrected_flaw), (2, 1, 1));
    // D, with Appendix E's words.
    assert_eq!(c.positive.total, 3);
    assert_eq!(
        c.positive.by_drug[0].item,
        "Marijuana or Marijuana Metabolite"
    );
    assert_eq!(
        c.positive.by_drug[1].item,
        "Cocaine and/or Cocaine Metabolite"
    );
    // E, F, G: adulterated and invalid by reason, as the edition words the criterion.
    assert_eq!(c.adulterated.total, 2);
    assert_eq!(c.adulterated.by_reason["nitrite 500 mcg/mL or more"], 2);
    assert_eq!(c.substituted, 1);
    assert_eq!(c.invalid.total, 1);
    assert_eq!(c.invalid.by_reason["pH 4 or more and less than 4.5"], 1);
    // Items 2 and 3: the counts per DOT agency and test reason.
    let row = |a: items::DotAgency, t: items::TestReason| {
        s.by_dot_agency_and_test_reason
            .iter()
            .find(|b| b.dot_agency == a && b.test_reason == t)
            .map(|b| b.results.results_reported)
    };
    use items::{DotAgency as A, TestReason as T};
    assert_eq!(row(A::Fmcsa, T::Random), Some(4));
    assert_eq!(row(A::Faa, T::PreEmployment), Some(1));
    assert_eq!(row(A::NotNoted, T::Random), Some(1));
    assert_eq!(row(A::Faa, T::Random), None);
    let rows: u64 = s
        .by_dot_agency_and_test_reason
        .iter()
        .map(|b| b.results.results_reported)
        .sum();
    assert_eq!(rows, 13);
    // Nothing of any employer or donor.
    let text = serde_json::to_string(&s).unwrap();
    for secret in [
        DONOR_ID,
        "EMP-1",
        "EMP-3",
        "Example Freight",
        "Example Airways",
        "N1",
        "R-",
    ] {
        assert!(!text.contains(secret), "the DOT summary shows {secret}");
    }
    // The oral-fluid part is its own summary.
    let of = dot::summarize(
        &reported_of(&recs, EASTERN),
        &lab(),
        SpecimenType::OralFluid,
        h1().0,
        h1().1,
    );
    assert_eq!(of.results.results_reported, 1);
}

#[test]
fn what_waits_for_production() {
    let unreleased = record(&Spec {
        released_at_ms: None,
        received_on: "2026-06-29",
        ..Spec::default()
    });
    let u = unreported(&unreleased, 0).unwrap();
    assert_eq!(
        (u.employer_id, iso(u.received_day).as_str()),
        (Some("EMP-1"), "2026-06-29")
    );
    let released = record(&Spec::default());
    assert!(unreported(&released, 0).is_none());
    let hhs = record(&Spec {
        program: Program::Hhs,
        released_at_ms: None,
        ..Spec::default()
    });
    assert!(unreported(&hhs, 0).is_none());
    assert!(reported(&hhs, 0).is_none(), "HHS results never count");
}

#[test]
fn reasons_are_read_from_the_verdicts_remarks() {
    let remarks = vec![
        "Adulterated: nitrite 500 mcg/mL or more (40.89).".to_string(),
        "Invalid: pH 4 or more and less than 4.5 (40.90, HHS criteria).".to_string(),
        "Dilute: creatinine (40.88(a)).".to_string(),
    ];
    assert_eq!(
        category_reasons(&remarks, "Adulterated"),
        ["nitrite 500 mcg/mL or more"]
    );
    assert_eq!(
        category_reasons(&remarks, "Invalid"),
        ["pH 4 or more and less than 4.5"]
    );
    assert!(category_reasons(&remarks, "Substituted").is_empty());
}
