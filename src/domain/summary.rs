//! The semi-annual laboratory statistical summary of 40.111 (the data elements of Appendix B in
//! 2001, Appendix D today): aggregate counts per employer for results released in a period.
//! Pure: records in, summary out. It never carries a specimen or donor identifier, and it is
//! withheld when the employer has fewer than five results (40.111(a)(2), (b)).

use crate::core::clock::{civil_from_days, days_from_civil};
use crate::domain::rules::ResultCategory;
use crate::domain::rules::accessioning::fatal_flaws;
use crate::domain::specimen::SpecimenRecord;
use serde::Serialize;
use std::collections::BTreeMap;

/// The least number of results for which a summary may be sent (40.111(a)(2)).
pub const MINIMUM_RESULTS: u64 = 5;

/// The reasons for test of the summary, in its order; absent → "not noted".
pub const REASONS: [&str; 7] = [
    "pre-employment",
    "post-accident",
    "random",
    "reasonable-suspicion",
    "return-to-duty",
    "follow-up",
    "not-noted",
];

/// Drug groups of the summary and the analytes that count for each.
pub const DRUG_GROUPS: [(&str, &[&str]); 5] = [
    ("marijuana", &["thca"]),
    ("cocaine", &["benzoylecgonine"]),
    (
        "opioids",
        &[
            "codeine",
            "morphine",
            "6am",
            "hydrocodone",
            "hydromorphone",
            "oxycodone",
            "oxymorphone",
        ],
    ),
    ("pcp", &["pcp"]),
    (
        "amphetamines",
        &["amphetamine", "methamphetamine", "mdma", "mda"],
    ),
];

/// The aggregate for one employer and period. No identifiers of specimens or people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub employer_id: String,
    /// ISO dates, inclusive.
    pub from: String,
    pub to: String,
    pub total: u64,
    pub by_reason: BTreeMap<String, u64>,
    pub negative: u64,
    pub negative_dilute: u64,
    pub rejected_fatal_flaw: u64,
    pub rejected_uncorrected_flaw: u64,
    pub positive: u64,
    pub positive_by_drug: BTreeMap<String, u64>,
    pub adulterated: u64,
    pub substituted: u64,
    pub invalid: u64,
}

/// What may be sent: the summary, or the notice that there is not enough testing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Disclosure {
    Summary(Summary),
    /// 40.111(b): fewer than five results; the counts are withheld.
    NotEnoughTesting {
        employer_id: String,
        from: String,
        to: String,
        notice: String,
    },
}

/// Parses `YYYY-MM-DD` to days since the epoch.
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = s[0..4].parse().ok()?;
    let m: u32 = s[5..7].parse().ok()?;
    let d: u32 = s[8..10].parse().ok()?;
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

/// Aggregates the released results of `employer_id` whose release date — the laboratory's
/// local date, `utc_offset_minutes` from UTC — is within `[from, to]` (days since the epoch,
/// inclusive): a result released at 22:00 on June 30 in the laboratory counts in the first
/// half of the year even when it is already July 1 in UTC.
pub fn summarize<'a>(
    records: impl IntoIterator<Item = &'a SpecimenRecord>,
    employer_id: &str,
    from: i64,
    to: i64,
    utc_offset_minutes: i32,
) -> Disclosure {
    let iso = |d: i64| {
        let (y, m, dd) = civil_from_days(d);
        format!("{y:04}-{m:02}-{dd:02}")
    };
    let mut s = Summary {
        employer_id: employer_id.to_string(),
        from: iso(from),
        to: iso(to),
        total: 0,
        by_reason: REASONS.iter().map(|r| (r.to_string(), 0)).collect(),
        negative: 0,
        negative_dilute: 0,
        rejected_fatal_flaw: 0,
        rejected_uncorrected_flaw: 0,
        positive: 0,
        positive_by_drug: DRUG_GROUPS
            .iter()
            .map(|(g, _)| (g.to_string(), 0))
            .collect(),
        adulterated: 0,
        substituted: 0,
        invalid: 0,
    };
    for r in records {
        let (Some(acc), Some(rel), Some(ev)) = (&r.accession, &r.release, &r.evaluation) else {
            continue;
        };
        if acc.ccf.employer.id.as_deref() != Some(employer_id) {
            continue;
        }
        let day = (rel.released_at_ms as i64 + i64::from(utc_offset_minutes) * 60_000)
            .div_euclid(86_400_000);
        if day < from || day > to {
            continue;
        }
        let v = &ev.verdict;
        s.total += 1;
        let reason = acc.ccf.reason_for_test.as_deref().unwrap_or("not-noted");
        let reason = if REASONS.contains(&reason) {
            reason
        } else {
            "not-noted"
        };
        *s.by_reason.entry(reason.to_string()).or_default() += 1;
        for cat in &v.results {
            match cat {
                ResultCategory::Negative => {
                    if v.dilute {
                        s.negative_dilute += 1
                    } else {
                        s.negative += 1
                    }
                }
                ResultCategory::Rejected => {
                    if fatal_flaws(&acc.findings).is_empty() {
                        s.rejected_uncorrected_flaw += 1
                    } else {
                        s.rejected_fatal_flaw += 1
                    }
                }
                ResultCategory::Positive => {
                    s.positive += 1;
                    for (group, analytes) in DRUG_GROUPS {
                        if v.positive_analytes
                            .iter()
                            .any(|a| analytes.contains(&a.as_str()))
                        {
                            *s.positive_by_drug.entry(group.to_string()).or_default() += 1;
                        }
                    }
                }
                ResultCategory::Adulterated => s.adulterated += 1,
                ResultCategory::Substituted => s.substituted += 1,
                ResultCategory::Invalid => s.invalid += 1,
            }
        }
    }
    if s.total < MINIMUM_RESULTS {
        return Disclosure::NotEnoughTesting {
            employer_id: s.employer_id,
            from: s.from,
            to: s.to,
            notice: format!(
                "Fewer than {MINIMUM_RESULTS} test results for this employer in the period: not enough testing was conducted to warrant a summary (40.111(a)(2), (b))."
            ),
        };
    }
    Disclosure::Summary(s)
}

/// Days until the next semi-annual due date (Jan 20, Jul 20; 40.111(a)(3),(4)) and that date.
pub fn next_due(today: i64) -> (i64, String) {
    let (y, _, _) = civil_from_days(today);
    let candidates = [
        days_from_civil(y, 1, 20),
        days_from_civil(y, 7, 20),
        days_from_civil(y + 1, 1, 20),
    ];
    let due = candidates
        .into_iter()
        .find(|d| *d >= today)
        .unwrap_or(candidates[2]);
    let (yy, mm, dd) = civil_from_days(due);
    (due - today, format!("{yy:04}-{mm:02}-{dd:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::{self, ProfileSet};
    use crate::domain::specimen::{
        Accession, Ccf, Party, Release, ResultEntry, ResultKind, Source,
    };
    use rust_decimal::Decimal;

    fn profiles() -> ProfileSet {
        let mut set = ProfileSet::new();
        set.insert(
            rules::Profile::parse(
                include_str!("../../config/profiles/part40-2001.toml"),
                Some("part40-2001"),
            )
            .unwrap(),
        );
        set
    }

    /// A released record for `employer` with the given findings and results.
    fn record(
        id: &str,
        employer: &str,
        reason: Option<&str>,
        day: i64,
        findings: rules::Accession,
        results: &[(ResultKind, &str, &str)],
    ) -> SpecimenRecord {
        let p = profiles();
        let mut r = SpecimenRecord::new(id, 0);
        r.attach_accession(
            Accession {
                ccf: Ccf {
                    employer: Party {
                        name: "E".into(),
                        id: Some(employer.into()),
                        ..Party::default()
                    },
                    donor_id: Some("123-45-6789".into()),
                    reason_for_test: reason.map(str::to_string),
                    ..Ccf::default()
                },
                findings,
                // Written for the 2001 edition (its CCF dates would select today\'s).
                profile: Some("part40-2001".into()),
                program: Default::default(),
                specimen_type: Default::default(),
                document: "d".into(),
                received_at_ms: 0,
                correction_initiated_on: None,
            },
            &p,
            "part40-2001",
            0,
        )
        .unwrap();
        let entries = results
            .iter()
            .map(|(k, t, v)| ResultEntry {
                kind: *k,
                target: t.to_string(),
                value: Some(v.parse::<Decimal>().unwrap()),
                unit: String::new(),
                bottle: Default::default(),
                source: Source::Lims {
                    document: "x".into(),
                },
                received_at_ms: 1,
            })
            .collect();
        r.attach_results(entries, &p, "part40-2001", 1).unwrap();
        r.release = Some(Release {
            report_id: format!("R-{id}"),
            released_at_ms: (day as u64) * 86_400_000 + 3_600_000,
            scientist: "S".into(),
            meaning: "reviewed and released".into(),
            content_sha256: "0".repeat(64),
        });
        r
    }

    #[test]
    fn matches_a_hand_counted_fixture_and_never_names_anyone() {
        use ResultKind::*;
        let from = parse_date("2026-01-01").unwrap();
        let to = parse_date("2026-06-30").unwrap();
        let mid = parse_date("2026-03-10").unwrap();
        let ok = rules::Accession::default();
        let recs = vec![
            // 1. negative, random
            record(
                "S1",
                "EMP-1",
                Some("random"),
                mid,
                ok.clone(),
                &[(Initial, "marijuana", "1")],
            ),
            // 2. negative-dilute, pre-employment
            record(
                "S2",
                "EMP-1",
                Some("pre-employment"),
                mid,
                ok.clone(),
                &[
                    (Validity, "creatinine", "10"),
                    (Validity, "specific_gravity", "1.002"),
                ],
            ),
            // 3. positive cocaine + marijuana, post-accident
            record(
                "S3",
                "EMP-1",
                Some("post-accident"),
                mid,
                ok.clone(),
                &[
                    (Initial, "cocaine", "400"),
                    (Confirmation, "benzoylecgonine", "200"),
                    (Initial, "marijuana", "60"),
                    (Confirmation, "thca", "20"),
                ],
            ),
            // 4. positive opioids (morphine + codeine count once), no reason noted
            record(
                "S4",
                "EMP-1",
                None,
                mid,
                ok.clone(),
                &[
                    (Initial, "opiates", "5000"),
                    (Confirmation, "morphine", "3000"),
                    (Confirmation, "codeine", "2500"),
                ],
            ),
            // 5. rejected: fatal flaw
            record(
                "S5",
                "EMP-1",
                Some("random"),
                mid,
                rules::Accession {
                    id_matches: false,
                    ..ok.clone()
                },
                &[],
            ),
            // 6. adulterated (nitrite), follow-up
            record(
                "S6",
                "EMP-1",
                Some("follow-up"),
                mid,
                ok.clone(),
                &[(Validity, "nitrite", "800")],
            ),
            // outside the period, another employer: not counted
            record("S7", "EMP-1", Some("random"), to + 1, ok.clone(), &[]),
            record("S8", "EMP-2", Some("random"), mid, ok.clone(), &[]),
        ];
        let Disclosure::Summary(s) = summarize(&recs, "EMP-1", from, to, 0) else {
            panic!("six results")
        };
        assert_eq!(s.total, 6);
        assert_eq!((s.negative, s.negative_dilute), (1, 1));
        assert_eq!((s.rejected_fatal_flaw, s.rejected_uncorrected_flaw), (1, 0));
        assert_eq!(s.positive, 2);
        assert_eq!(s.positive_by_drug["cocaine"], 1);
        assert_eq!(s.positive_by_drug["marijuana"], 1);
        assert_eq!(s.positive_by_drug["opioids"], 1);
        assert_eq!(s.positive_by_drug["amphetamines"], 0);
        assert_eq!(s.adulterated, 1);
        assert_eq!((s.substituted, s.invalid), (0, 0));
        assert_eq!(s.by_reason["random"], 2);
        assert_eq!(s.by_reason["not-noted"], 1);
        assert_eq!(s.by_reason["post-accident"], 1);
        let text = serde_json::to_string(&s).unwrap();
        for id in ["S1", "S3", "123-45-6789", "R-S1"] {
            assert!(!text.contains(id), "summary names {id}");
        }
    }

    #[test]
    fn the_period_boundary_is_the_laboratorys_local_date() {
        // Released 2026-07-01T03:00Z: June 30, 22:00 in a laboratory at UTC-5.
        let july1 = parse_date("2026-07-01").unwrap();
        let mut recs = Vec::new();
        for i in 0..5 {
            let mut r = record(
                &format!("B{i}"),
                "EMP-7",
                Some("random"),
                july1,
                rules::Accession::default(),
                &[],
            );
            r.release.as_mut().unwrap().released_at_ms =
                (july1 as u64) * 86_400_000 + 3 * 3_600_000;
            recs.push(r);
        }
        let first_half = (
            parse_date("2026-01-01").unwrap(),
            parse_date("2026-06-30").unwrap(),
        );
        let second_half = (july1, parse_date("2026-12-31").unwrap());
        let total =
            |(from, to): (i64, i64), offset: i32| match summarize(&recs, "EMP-7", from, to, offset)
            {
                Disclosure::Summary(s) => s.total,
                Disclosure::NotEnoughTesting { .. } => 0,
            };
        // Laboratory time (UTC-5): June 30.
        assert_eq!(total(first_half, -300), 5);
        assert_eq!(total(second_half, -300), 0);
        // At UTC, or just east of it, the same instant is July 1.
        assert_eq!(total(first_half, 0), 0);
        assert_eq!(total(second_half, 0), 5);
        // Exactly at local midnight (UTC-3 makes 03:00Z midnight July 1): July.
        assert_eq!(total(second_half, -180), 5);
        assert_eq!(total(first_half, -181), 5);
    }

    #[test]
    fn fewer_than_five_results_are_withheld() {
        let from = parse_date("2026-07-01").unwrap();
        let to = parse_date("2026-12-31").unwrap();
        let day = parse_date("2026-08-01").unwrap();
        let recs: Vec<_> = (0..4)
            .map(|i| {
                record(
                    &format!("T{i}"),
                    "EMP-9",
                    Some("random"),
                    day,
                    rules::Accession::default(),
                    &[],
                )
            })
            .collect();
        match summarize(&recs, "EMP-9", from, to, 0) {
            Disclosure::NotEnoughTesting { notice, .. } => assert!(notice.contains("40.111")),
            other => panic!("{other:?}"),
        }
        let mut five = recs.clone();
        five.push(record(
            "T5",
            "EMP-9",
            Some("random"),
            day,
            rules::Accession::default(),
            &[],
        ));
        assert!(
            matches!(summarize(&five, "EMP-9", from, to, 0), Disclosure::Summary(s) if s.total == 5)
        );
    }

    #[test]
    fn due_dates() {
        let d = |s| parse_date(s).unwrap();
        assert_eq!(next_due(d("2026-01-20")), (0, "2026-01-20".into()));
        assert_eq!(next_due(d("2026-01-21")).1, "2026-07-20");
        assert_eq!(next_due(d("2026-07-21")).1, "2027-01-20");
        assert_eq!(next_due(d("2026-12-31")), (20, "2027-01-20".into()));
        assert!(parse_date("2026-02-30").is_none());
        assert!(parse_date("2026-2-3").is_none());
    }
}
