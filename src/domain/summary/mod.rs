//! The semi-annual laboratory statistical summaries of 40.111: to each employer (Appendix D;
//! Appendix B in 2001), per specimen type, and to DOT (Appendix E, 40.111(d); not in the 2001
//! text), per specimen type. Pure: specimen records in, summaries out.
//!
//! - What counts: DOT specimens (program DOT on the CCF) whose result a certifying scientist
//!   released; HHS (federal-agency) specimens never do. A result counts in the period of the
//!   laboratory's local date (`calendar.utc_offset_minutes`) of its first release, the report
//!   ("Specimen Results Reported", Appendix D 1): a corrected report later does not move it.
//! - Neither summary carries a specimen ID, a donor identifier, a name or a result value; the
//!   employer summary is the only output addressed to an employer (40.111(a)(1)).
//! - An employer with fewer than five results of a specimen type in the period gets no summary
//!   of that type (40.111(a)(2)); on request (40.111(b)) it gets the "not enough testing"
//!   report instead. UNVERIFIED: 40.111(a)(2) speaks of the employer's "aggregate test
//!   results"; they are counted per specimen type here, the stricter reading (a part of fewer
//!   than five could let a result be inferred).
//! - The DOT summary has no minimum.

pub mod dot;
pub mod employer;
pub mod items;
pub mod period;

pub use employer::{Disclosure, EmployerSummary, NotEnoughTesting};
pub use period::{Period, Recipient, iso, lab_day, next_due, parse_date};

use crate::domain::rules::accessioning::fatal_flaws_of;
use crate::domain::rules::{Program, ResultCategory, SpecimenType};
use crate::domain::specimen::{Edition, SpecimenRecord};
use items::{DRUGS, DotAgency, TestReason, drug_of};
use serde::Serialize;
use std::collections::BTreeMap;

/// The least number of results for which an employer summary may be sent (40.111(a)(2)).
pub const MINIMUM_RESULTS: u64 = 5;

/// A name and an address, as the appendices identify the laboratory and a C/TPA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub name: String,
    pub address: String,
}

/// The reporting period's inclusive dates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportingPeriod {
    pub from: String,
    pub to: String,
}

impl ReportingPeriod {
    pub fn of(from: i64, to: i64) -> ReportingPeriod {
        ReportingPeriod {
            from: iso(from),
            to: iso(to),
        }
    }
}

/// One released DOT result as the summaries count it: what it was and when it was reported.
/// Nothing of it identifies the donor or the specimen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported<'a> {
    pub employer_id: Option<&'a str>,
    pub employer_name: &'a str,
    pub specimen_type: SpecimenType,
    pub reason: TestReason,
    pub dot_agency: DotAgency,
    /// The laboratory's local date of the first release.
    pub day: i64,
    pub results: &'a [ResultCategory],
    pub dilute: bool,
    pub positive_analytes: &'a [String],
    /// Rejected for a fatal flaw (40.83(c); for oral fluid also 40.199(b)(8), (9)); otherwise,
    /// if rejected, for an uncorrected flaw.
    pub fatal_flaw: bool,
    /// The verdict's remarks (the validity criteria that decided, as the edition words them).
    pub remarks: &'a [String],
}

/// The record as the summaries count it, if it is a released DOT result.
pub fn reported(r: &SpecimenRecord, utc_offset_minutes: i32) -> Option<Reported<'_>> {
    let (Some(acc), Some(release), Some(ev)) = (&r.accession, &r.release, &r.evaluation) else {
        return None;
    };
    if acc.program != Program::Dot {
        return None;
    }
    // The first release: a corrected report keeps the original's place.
    let first = r
        .report_corrections
        .first()
        .map(|c| c.superseded_release.released_at_ms)
        .unwrap_or(release.released_at_ms);
    Some(Reported {
        employer_id: acc.ccf.employer.id.as_deref(),
        employer_name: &acc.ccf.employer.name,
        specimen_type: acc.specimen_type,
        reason: TestReason::from_ccf(acc.ccf.reason_for_test.as_deref()),
        dot_agency: DotAgency::from_ccf(acc.ccf.dot_agency.as_deref()),
        day: lab_day(first, utc_offset_minutes),
        results: &ev.verdict.results,
        dilute: ev.verdict.dilute,
        positive_analytes: &ev.verdict.positive_analytes,
        fatal_flaw: !fatal_flaws_of(acc.specimen_type, &acc.findings).is_empty(),
        remarks: &ev.verdict.remarks,
    })
}

/// A DOT specimen accessioned but not yet reported: production of its period waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreported<'a> {
    pub employer_id: Option<&'a str>,
    pub specimen_type: SpecimenType,
    /// The laboratory date of receipt (the CCF's, else the accession's arrival).
    pub received_day: i64,
}

/// The record, if it is a DOT specimen accessioned and not yet released. A specimen held
/// untested (no edition judges it) is not waited for: it is reported only once re-assigned.
pub fn unreported(r: &SpecimenRecord, utc_offset_minutes: i32) -> Option<Unreported<'_>> {
    let acc = r.accession.as_ref()?;
    if acc.program != Program::Dot
        || r.release.is_some()
        || matches!(r.edition, Some(Edition::Untested { .. }))
    {
        return None;
    }
    let received_day = parse_date(&acc.ccf.received_on)
        .unwrap_or_else(|| lab_day(acc.received_at_ms, utc_offset_minutes));
    Some(Unreported {
        employer_id: acc.ccf.employer.id.as_deref(),
        specimen_type: acc.specimen_type,
        received_day,
    })
}

/// Negative results (Appendix D 2; Appendix E B).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Negatives {
    pub negative: u64,
    pub negative_dilute: u64,
}

/// Rejected for testing, by reason (Appendix D 3; Appendix E C).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub total: u64,
    pub fatal_flaw: u64,
    pub uncorrected_flaw: u64,
}

/// One analyte's line under its drug.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnalyteCount {
    pub analyte: &'static str,
    pub item: &'static str,
    pub count: u64,
}

/// One drug's line: specimens positive for it (once however many of its analytes were).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrugCount {
    pub drug: &'static str,
    pub item: &'static str,
    pub count: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub analytes: Vec<AnalyteCount>,
}

/// Positive results, by drug with the analytes broken out (Appendix D 4; Appendix E D).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Positives {
    pub total: u64,
    pub by_drug: Vec<DrugCount>,
    /// Positive analytes of an edition the appendix does not list (none for the shipped
    /// editions): counted here rather than dropped.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub not_listed: BTreeMap<String, u64>,
}

impl Positives {
    /// Every drug and analyte line at zero, with each drug's words for `words`.
    pub fn zero(words: impl Fn(&items::Drug) -> &'static str) -> Positives {
        Positives {
            total: 0,
            by_drug: DRUGS
                .iter()
                .map(|d| DrugCount {
                    drug: d.key,
                    item: words(d),
                    count: 0,
                    analytes: d
                        .analytes
                        .iter()
                        .map(|(k, w)| AnalyteCount {
                            analyte: k,
                            item: w,
                            count: 0,
                        })
                        .collect(),
                })
                .collect(),
            not_listed: BTreeMap::new(),
        }
    }

    /// Counts one positive specimen with its positive analytes.
    pub fn add(&mut self, analytes: &[String]) {
        self.total += 1;
        let mut drugs = [false; DRUGS.len()];
        for a in analytes {
            match drug_of(a) {
                Some((d, line)) => {
                    drugs[d] = true;
                    if let Some(j) = line {
                        self.by_drug[d].analytes[j].count += 1;
                    }
                }
                None => *self.not_listed.entry(a.clone()).or_default() += 1,
            }
        }
        for (d, hit) in drugs.iter().enumerate() {
            if *hit {
                self.by_drug[d].count += 1;
            }
        }
    }
}

/// The reasons the verdict's remarks give for a category (`Adulterated`, `Invalid`): the
/// validity criterion's words as the edition has them (reporting writes `Category: words
/// (cite).`), without the citation.
pub fn category_reasons<'a>(remarks: &'a [String], category: &str) -> Vec<&'a str> {
    let prefix = format!("{category}: ");
    remarks
        .iter()
        .filter_map(|r| r.strip_prefix(&prefix))
        .map(|rest| {
            let rest = rest.strip_suffix('.').unwrap_or(rest);
            match rest.rfind(" (") {
                Some(i) if rest.ends_with(')') => &rest[..i],
                _ => rest,
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;
