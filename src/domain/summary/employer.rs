//! The employer summary of 40.111(a), item by item as Appendix D lists them, for one specimen
//! type (Appendix D part A for urine, part B for oral fluid), and the "not enough testing"
//! report of 40.111(b).
//!
//! Appendix D (today): Reporting Period (inclusive dates); Laboratory Identification (name and
//! address); Employer Identification (name; may include Billing Code or ID code); C/TPA
//! Identification (where applicable; name and address); then per specimen type: 1. results
//! reported (total) by test reason, (a) pre-employment ... (g) type of test not noted on CCF;
//! 2. (a) negative, (b) negative and dilute; 3. rejected for testing (total) by reason, (a) fatal
//! flaw, (b) uncorrected flaw; 4. positive (total) by drug, (a) marijuana metabolite, (b) cocaine
//! metabolite, (c) opioids (codeine, morphine, 6-AM, hydrocodone, hydromorphone, oxycodone,
//! oxymorphone), (d) phencyclidine, (e) amphetamines (amphetamine, methamphetamine, MDMA, MDA);
//! 5. adulterated; 6. substituted; 7. invalid result.
//! UNVERIFIED: items B.2 to B.7 (oral fluid) could only be read up to B.1; they are taken to
//! mirror part A (oral fluid has no dilute result, so B.2(b) stays 0).

use super::items::{self, TestReason};
use super::{Identity, MINIMUM_RESULTS, Negatives, Positives, Rejected, Reported, ReportingPeriod};
use crate::domain::rules::{ResultCategory, SpecimenType};
use serde::Serialize;

/// The title of the report (Appendix D).
pub const TITLE: &str = "DOT Drug Testing Semi-Annual Laboratory Report to Employers (49 CFR Part 40, Appendix D; 40.111(a))";

/// Appendix D "Employer Identification": name, and the ID code as on the CCF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Employer {
    /// As on the CCF of the latest result counted; `None` when none was (a request for a
    /// period without results).
    pub name: Option<String>,
    pub id: String,
}

/// Item 1: results reported, by test reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ByTestReason {
    pub total: u64,
    /// 1(a).
    pub pre_employment: u64,
    /// 1(b).
    pub post_accident: u64,
    /// 1(c).
    pub random: u64,
    /// 1(d).
    pub reasonable_suspicion_cause: u64,
    /// 1(e).
    pub return_to_duty: u64,
    /// 1(f).
    pub follow_up: u64,
    /// 1(g): type of test not noted on CCF.
    pub not_noted: u64,
    /// Not an Appendix D item: the CCF's "Other" box, shown apart so the reasons add up.
    pub other: u64,
}

impl ByTestReason {
    pub fn add(&mut self, r: TestReason) {
        self.total += 1;
        *match r {
            TestReason::PreEmployment => &mut self.pre_employment,
            TestReason::PostAccident => &mut self.post_accident,
            TestReason::Random => &mut self.random,
            TestReason::ReasonableSuspicionCause => &mut self.reasonable_suspicion_cause,
            TestReason::ReturnToDuty => &mut self.return_to_duty,
            TestReason::FollowUp => &mut self.follow_up,
            TestReason::NotNoted => &mut self.not_noted,
            TestReason::Other => &mut self.other,
        } += 1;
    }
}

/// The employer summary of one specimen type, item by item (Appendix D).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmployerSummary {
    pub report: &'static str,
    /// "A. Urine Specimens" or "B. Oral Fluid Specimens".
    pub part: &'static str,
    pub specimen_type: SpecimenType,
    pub reporting_period: ReportingPeriod,
    pub laboratory: Identity,
    pub employer: Employer,
    /// Where applicable (the laboratory's configuration names the C/TPA of the employer).
    pub ctpa: Option<Identity>,
    /// Item 1.
    pub results_reported: ByTestReason,
    /// Item 2.
    pub reported: Negatives,
    /// Item 3.
    pub rejected_for_testing: Rejected,
    /// Item 4.
    pub positive: Positives,
    /// Item 5.
    pub adulterated: u64,
    /// Item 6.
    pub substituted: u64,
    /// Item 7.
    pub invalid_result: u64,
}

/// The report of 40.111(b) when the employer had fewer than five results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotEnoughTesting {
    pub report: &'static str,
    pub specimen_type: SpecimenType,
    pub reporting_period: ReportingPeriod,
    pub laboratory: Identity,
    pub employer: Employer,
    pub ctpa: Option<Identity>,
    pub notice: String,
}

/// What may go to the employer for one specimen type: the summary, or the notice that there
/// was not enough testing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Disclosure {
    Summary(EmployerSummary),
    NotEnoughTesting(NotEnoughTesting),
}

impl Disclosure {
    /// Whether the counts are given (five results or more).
    pub fn is_summary(&self) -> bool {
        matches!(self, Disclosure::Summary(_))
    }
}

/// Who the summary is for and who sends it.
#[derive(Debug, Clone, Copy)]
pub struct Addressed<'a> {
    pub laboratory: &'a Identity,
    pub employer_id: &'a str,
    pub ctpa: Option<&'a Identity>,
}

/// The employer summary of `specimen_type` for the results reported on laboratory dates
/// `from..=to`, or the "not enough testing" report under five results. Also the number of
/// results counted.
pub fn summarize(
    reported: &[Reported<'_>],
    to: Addressed<'_>,
    specimen_type: SpecimenType,
    from_day: i64,
    to_day: i64,
) -> (Disclosure, u64) {
    let mut s = EmployerSummary {
        report: TITLE,
        part: items::appendix_d_part(specimen_type),
        specimen_type,
        reporting_period: ReportingPeriod::of(from_day, to_day),
        laboratory: to.laboratory.clone(),
        employer: Employer {
            name: None,
            id: to.employer_id.to_string(),
        },
        ctpa: to.ctpa.cloned(),
        results_reported: ByTestReason::default(),
        reported: Negatives::default(),
        rejected_for_testing: Rejected::default(),
        positive: Positives::zero(|d| items::employer_words(d, specimen_type)),
        adulterated: 0,
        substituted: 0,
        invalid_result: 0,
    };
    let mut latest_day = i64::MIN;
    for r in reported {
        if r.employer_id != Some(to.employer_id)
            || r.specimen_type != specimen_type
            || r.day < from_day
            || r.day > to_day
        {
            continue;
        }
        if r.day >= latest_day {
            latest_day = r.day;
            s.employer.name = Some(r.employer_name.to_string());
        }
        s.results_reported.add(r.reason);
        for cat in r.results {
            match cat {
                ResultCategory::Negative if r.dilute => s.reported.negative_dilute += 1,
                ResultCategory::Negative => s.reported.negative += 1,
                ResultCategory::Rejected => {
                    s.rejected_for_testing.total += 1;
                    if r.fatal_flaw {
                        s.rejected_for_testing.fatal_flaw += 1
                    } else {
                        s.rejected_for_testing.uncorrected_flaw += 1
                    }
                }
                ResultCategory::Positive => s.positive.add(r.positive_analytes),
                ResultCategory::Adulterated => s.adulterated += 1,
                ResultCategory::Substituted => s.substituted += 1,
                ResultCategory::Invalid => s.invalid_result += 1,
            }
        }
    }
    let counted = s.results_reported.total;
    if counted < MINIMUM_RESULTS {
        return (
            Disclosure::NotEnoughTesting(NotEnoughTesting {
                report: TITLE,
                specimen_type,
                reporting_period: s.reporting_period,
                laboratory: s.laboratory,
                employer: s.employer,
                ctpa: s.ctpa,
                notice: format!(
                    "Not enough testing was conducted to warrant a summary: fewer than \
                     {MINIMUM_RESULTS} {} test results for this employer in the period \
                     (40.111(a)(2), (b)).",
                    specimen_type.words()
                ),
            }),
            counted,
        );
    }
    (Disclosure::Summary(s), counted)
}
