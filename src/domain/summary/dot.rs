//! The laboratory's summary to DOT of 40.111(d), Appendix E, for one specimen type: the
//! laboratory's DOT results of the period, whatever the employer.
//!
//! Appendix E (today): Reporting Period (inclusive dates); Laboratory Identification (name and
//! address); 1. Specimen Type (oral fluid or urine); 2. DOT agency (FMCSA, FAA, FRA, FTA, PHMSA,
//! USCG); 3. Test Reason (Pre-Employment, Random, Reasonable Suspicion/Cause, Post-Accident,
//! Return-to-Duty, Other, Follow-up); A. DOT specimen results reported (total); B. negative
//! results reported (total): negative, negative-dilute; C. rejected for testing (total) by
//! reason: fatal flaw, uncorrected flaw; D. positive (total) by drug: marijuana or marijuana
//! metabolite, cocaine and/or cocaine metabolite, opioids (codeine, morphine, 6-AM,
//! hydrocodone, hydromorphone, oxycodone, oxymorphone), phencyclidine, amphetamines
//! (amphetamine, methamphetamine, MDMA, MDA); E. adulterated (total) by reason; F. substituted
//! (total); G. invalid (total) by reason.
//!
//! UNVERIFIED: how items 2 and 3 combine with A-G. The text lists them before the counts and
//! gives no layout; here the counts A-G are given for the whole specimen type and again for
//! each DOT agency and test reason that had results. A result without an agency or a reason
//! on its record is under "not_noted".

use super::items::{DotAgency, TestReason};
use super::{
    Identity, Negatives, Positives, Rejected, Reported, ReportingPeriod, category_reasons,
};
use crate::domain::rules::{ResultCategory, SpecimenType};
use serde::Serialize;
use std::collections::BTreeMap;

/// The title of the report (Appendix E).
pub const TITLE: &str =
    "DOT Drug Testing Semi-Annual Laboratory Report to DOT (49 CFR Part 40, Appendix E; 40.111(d))";

/// Item B: negative results.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NegativeResults {
    pub total: u64,
    #[serde(flatten)]
    pub counts: Negatives,
}

/// Items E and G: a total with the reasons (the validity criteria, as the edition words them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ByReason {
    pub total: u64,
    pub by_reason: BTreeMap<String, u64>,
}

/// Items A to G.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// A.
    pub results_reported: u64,
    /// B.
    pub negative: NegativeResults,
    /// C.
    pub rejected_for_testing: Rejected,
    /// D.
    pub positive: Positives,
    /// E.
    pub adulterated: ByReason,
    /// F.
    pub substituted: u64,
    /// G.
    pub invalid: ByReason,
}

impl Counts {
    fn zero() -> Counts {
        Counts {
            results_reported: 0,
            negative: NegativeResults::default(),
            rejected_for_testing: Rejected::default(),
            positive: Positives::zero(|d| d.dot_words),
            adulterated: ByReason::default(),
            substituted: 0,
            invalid: ByReason::default(),
        }
    }

    fn add(&mut self, r: &Reported<'_>) {
        self.results_reported += 1;
        for cat in r.results {
            match cat {
                ResultCategory::Negative => {
                    self.negative.total += 1;
                    if r.dilute {
                        self.negative.counts.negative_dilute += 1
                    } else {
                        self.negative.counts.negative += 1
                    }
                }
                ResultCategory::Rejected => {
                    self.rejected_for_testing.total += 1;
                    if r.fatal_flaw {
                        self.rejected_for_testing.fatal_flaw += 1
                    } else {
                        self.rejected_for_testing.uncorrected_flaw += 1
                    }
                }
                ResultCategory::Positive => self.positive.add(r.positive_analytes),
                ResultCategory::Adulterated => {
                    add_reasons(&mut self.adulterated, r.remarks, "Adulterated")
                }
                ResultCategory::Substituted => self.substituted += 1,
                ResultCategory::Invalid => add_reasons(&mut self.invalid, r.remarks, "Invalid"),
            }
        }
    }
}

fn add_reasons(into: &mut ByReason, remarks: &[String], category: &str) {
    into.total += 1;
    let reasons = category_reasons(remarks, category);
    if reasons.is_empty() {
        *into.by_reason.entry("not stated".into()).or_default() += 1;
    }
    for reason in reasons {
        *into.by_reason.entry(reason.to_string()).or_default() += 1;
    }
}

/// Items A-G of one DOT agency and test reason (items 2 and 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Breakdown {
    pub dot_agency: DotAgency,
    pub test_reason: TestReason,
    pub test_reason_item: &'static str,
    pub results: Counts,
}

/// The laboratory's summary to DOT of one specimen type (Appendix E).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DotSummary {
    pub report: &'static str,
    pub reporting_period: ReportingPeriod,
    pub laboratory: Identity,
    /// Item 1.
    pub specimen_type: SpecimenType,
    /// Items A-G over every DOT agency and test reason.
    pub results: Counts,
    /// Items A-G per DOT agency (item 2) and test reason (item 3), for those with results.
    pub by_dot_agency_and_test_reason: Vec<Breakdown>,
}

/// The summary to DOT of `specimen_type` for the results reported on laboratory dates
/// `from..=to`.
pub fn summarize(
    reported: &[Reported<'_>],
    laboratory: &Identity,
    specimen_type: SpecimenType,
    from_day: i64,
    to_day: i64,
) -> DotSummary {
    let mut total = Counts::zero();
    let mut rows: BTreeMap<(DotAgency, TestReason), Counts> = BTreeMap::new();
    for r in reported {
        if r.specimen_type != specimen_type || r.day < from_day || r.day > to_day {
            continue;
        }
        total.add(r);
        rows.entry((r.dot_agency, r.reason))
            .or_insert_with(Counts::zero)
            .add(r);
    }
    DotSummary {
        report: TITLE,
        reporting_period: ReportingPeriod::of(from_day, to_day),
        laboratory: laboratory.clone(),
        specimen_type,
        results: total,
        by_dot_agency_and_test_reason: rows
            .into_iter()
            .map(|((dot_agency, test_reason), results)| Breakdown {
                dot_agency,
                test_reason,
                test_reason_item: test_reason.words(),
                results,
            })
            .collect(),
    }
}
