//! The split specimen, Bottle B (40.171–40.187). Pure: records and profiles in, packages,
//! reports and results out; every instant is passed in by the caller.
//!
//! First laboratory (the one that tested the primary):
//! - [`handle_request`]: the MRO's written request to send Bottle B to a second laboratory
//!   (40.171(c)). If Bottle B is available, the [`ForwardingPackage`] of 40.175(d): a manifest
//!   naming the bottle and its seal, a copy (reference) of the MRO's request and the Copy 1
//!   data naming the drugs or validity criteria to be tested, with no donor identity
//!   (40.175(e)). If not, the [`UnavailableReport`] to the MRO, made only now, with what is
//!   known of the cause (40.175(b)(2)).
//! - [`retest_primary`]: 40.187(f)(4)(ii)–(iii): the MRO asks this laboratory to test the
//!   primary for the adulterant found in the split.
//!
//! Second laboratory (custodian as the split laboratory for a received Bottle B):
//! - [`reconfirm`]: drugs at or above the method's limit of detection regardless of cutoffs
//!   (40.177(a), (b)); adulterants by 40.95 (40.179) and substitution by 40.93(b) (40.181),
//!   both through the profile's criteria; "Reconfirmed" or "Failed to Reconfirm" with one
//!   reason of 40.183(b); when drugs fail to reconfirm, the validity tests of 40.177(c) are
//!   required before the result can be released.

use crate::domain::parties::Party;
use crate::domain::rules::profile::{Atom, Criterion, Measure, ValidityResult};
use crate::domain::rules::{self, Profile, ResultCategory, SplitSeal, Validity};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

// ---- First laboratory: the request and what answers it ----------------------------------------

/// The MRO's written request to forward Bottle B (40.171(c)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitRequest {
    /// The document that carries the request (the MRO's letter, a LIMS document).
    pub document_ref: String,
    pub received_at_ms: u64,
    /// The HHS-certified laboratory that will test the split (40.175(f): chosen by the parties).
    pub second_laboratory: String,
}

/// Why Bottle B cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "cause", content = "detail")]
pub enum Cause {
    /// The CCF does not show a split collection.
    NeverCollected,
    /// A split was collected but Bottle B did not accompany the primary (40.83(h)).
    DidNotAccompany,
    /// Bottle B's seal was found broken.
    SealBroken,
    /// Bottle B appears insufficient (40.175(b)).
    Insufficient,
    /// Bottle B was tested as the primary under 40.83(h)(1) (the paragraph cited).
    UsedByRedesignation(String),
    /// Bottle B leaked (found at accessioning or in storage).
    Leaked,
    /// The laboratory's own account of another cause.
    Other(String),
}

impl Cause {
    pub fn describe(&self) -> String {
        match self {
            Cause::NeverCollected => "no split specimen was collected according to the CCF".into(),
            Cause::DidNotAccompany => {
                "the split specimen did not accompany the primary specimen".into()
            }
            Cause::SealBroken => "the split specimen bottle's seal was broken on receipt".into(),
            Cause::Insufficient => "the split specimen appears insufficient for testing".into(),
            Cause::UsedByRedesignation(cite) => format!(
                "the split specimen bottle was redesignated and tested as the primary specimen ({cite})"
            ),
            Cause::Leaked => "the split specimen leaked".into(),
            Cause::Other(s) => s.clone(),
        }
    }
}

/// Whether Bottle B can be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BottleB {
    /// Sealed and sufficient. `labelled` is the letter printed on the physical bottle that is
    /// the split ("A" when the labels were swapped, 40.83(h)(1)(ii), or when the sealed primary
    /// became the split, 40.83(h)(1)(iii)); `redesignation` says why that bottle is the split
    /// when it is not the one the collector sealed as Bottle B.
    Available {
        labelled: &'static str,
        redesignation: Option<String>,
    },
    Unavailable(Vec<Cause>),
}

/// Bottle B as accessioning found it, plus what the laboratory found since (`found_later`, e.g.
/// a leak in the freezer).
///
/// After a redesignation of 40.83(h)(1) the bottles change roles:
/// - (i) the primary leaked, or (iv) its seal is broken: the other bottle was tested as the
///   primary and what is left as "Bottle B" is the leaked or unsealed primary bottle, which is
///   no split (40.175(d)(1) ships the split "with the seal intact"): unavailable;
/// - (ii) the labels were swapped: nothing moved; the split is the bottle labelled A;
/// - (iii) the laboratory opened the split instead of the primary, and the primary is still
///   sealed: the sealed primary bottle is the split from now on (relabelled B under
///   40.83(h)(2)), available if it holds enough and did not leak.
pub fn bottle_b(
    findings: &rules::Accession,
    split_collected: bool,
    found_later: &[Cause],
) -> BottleB {
    use rules::accessioning::{Redesignation, redesignations};
    let redesig = redesignations(findings);
    let swapped = redesig.contains(&Redesignation::LabelsSwapped);
    let consumed = redesig.iter().find(|r| {
        matches!(
            r,
            Redesignation::PrimaryLeaked | Redesignation::PrimarySealBroken
        )
    });
    let primary_is_split =
        consumed.is_none() && redesig.contains(&Redesignation::OtherBottleOpened);
    let mut causes = Vec::new();
    if !split_collected {
        causes.push(Cause::NeverCollected);
    } else if let Some(r) = consumed {
        causes.push(Cause::UsedByRedesignation(r.cite().to_string()));
    } else if primary_is_split {
        // The bottle the collector sealed as the primary: its seal is intact (40.83(h)(1)(iii)).
        if findings.primary_leaked {
            causes.push(Cause::Leaked);
        }
        if !findings.primary_sufficient {
            causes.push(Cause::Insufficient);
        }
    } else {
        match findings.split_seal {
            SplitSeal::Absent => causes.push(Cause::DidNotAccompany),
            SplitSeal::Broken => causes.push(Cause::SealBroken),
            SplitSeal::Intact => {}
        }
        if findings.split_seal != SplitSeal::Absent && !findings.split_sufficient {
            causes.push(Cause::Insufficient);
        }
    }
    for c in found_later {
        if !causes.contains(c) {
            causes.push(c.clone());
        }
    }
    if !causes.is_empty() {
        return BottleB::Unavailable(causes);
    }
    // The letter printed on the bottle that is the split: the collector's B, unless the
    // labels were swapped; the other letter when the primary bottle became the split.
    let (labelled, redesignation) = match (primary_is_split, swapped) {
        (false, false) => ("B", None),
        (false, true) => (
            "A",
            Some("labels swapped at collection: the bottle labelled A is the split (40.83(h)(1)(ii))".to_string()),
        ),
        (true, false) => (
            "A",
            Some("the split was opened instead of the primary: the still-sealed primary bottle, labelled A and relabelled B, is the split (40.83(h)(1)(iii), (h)(2))".to_string()),
        ),
        (true, true) => (
            "B",
            Some("labels swapped at collection and the split opened instead of the primary: the still-sealed primary bottle, labelled B, is the split (40.83(h)(1)(ii), (iii), (h)(2))".to_string()),
        ),
    };
    BottleB::Available {
        labelled,
        redesignation,
    }
}

/// A drug or metabolite to reconfirm (40.177(a)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrugToTest {
    /// The analyte key of the profile.
    pub analyte: String,
    pub name: String,
    pub class: String,
}

/// A validity criterion to reconfirm (40.179, 40.181): the profile's criterion as cited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriterionToTest {
    pub result: String,
    pub cite: String,
    pub remark: String,
    /// The substances identified in the primary, for a criterion on an identified adulterant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub substances: Vec<String>,
}

impl CriterionToTest {
    pub(crate) fn of(c: &Criterion, substances: &[String]) -> CriterionToTest {
        let on_substance = c
            .clauses
            .iter()
            .flatten()
            .any(|a| matches!(a, Atom::AdulterantIdentified));
        CriterionToTest {
            result: c.result.key().to_string(),
            cite: c.cite.clone(),
            remark: c.remark.clone(),
            substances: if on_substance {
                substances.to_vec()
            } else {
                Vec::new()
            },
        }
    }
}

/// The Copy 1 data the second laboratory needs (40.175(d)(3)): the tests to perform and the MRO
/// to report to (40.185). No donor identity, no employer, no collector, no remarks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy1 {
    pub specimen_id: String,
    pub collected_on: String,
    pub first_laboratory: String,
    pub received_at_first_laboratory: String,
    /// The MRO the second laboratory reports to, directly and only (40.185(a)).
    pub mro: Party,
    /// The primary's reported results that the split is to reconfirm.
    pub results: Vec<ResultCategory>,
    pub drugs: Vec<DrugToTest>,
    pub adulteration: Vec<CriterionToTest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substitution: Option<CriterionToTest>,
}

/// The physical item shipped (40.175(d)(1)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub specimen_id: String,
    /// Always "B": the split specimen.
    pub bottle: String,
    /// The letter printed on the bottle (differs from `bottle` after swapped labels).
    pub labelled: String,
    /// "intact": the original bottle with its seal unbroken.
    pub seal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redesignation: Option<String>,
    pub ship_to: String,
}

/// The copy of the MRO's written request that goes with the bottle (40.175(d)(2)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCopy {
    pub document_ref: String,
    pub received_at_ms: u64,
}

/// Everything sent to the second laboratory (40.175(d)); contains no donor identity (40.175(e)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardingPackage {
    pub manifest: Manifest,
    pub mro_request: RequestCopy,
    pub copy1: Copy1,
    pub prepared_at_ms: u64,
}

/// The report to the MRO that Bottle B is unavailable (40.175(b)(2)): made only in answer to
/// the MRO's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnavailableReport {
    pub specimen_id: String,
    pub mro: Party,
    pub mro_request: RequestCopy,
    pub causes: Vec<Cause>,
    pub statement: String,
    pub prepared_at_ms: u64,
}

/// What the first laboratory did with the MRO's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "disposition")]
pub enum SplitDisposition {
    /// Bottle B shipped with this package; its retention clock stops (40.99(d)).
    Forwarded(Box<ForwardingPackage>),
    Unavailable(UnavailableReport),
}

impl SplitDisposition {
    /// When Bottle B left the laboratory, for retention.
    pub fn shipped_at_ms(&self) -> Option<u64> {
        match self {
            SplitDisposition::Forwarded(p) => Some(p.prepared_at_ms),
            SplitDisposition::Unavailable(_) => None,
        }
    }
}

/// Why a split request or split test could not be handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("the document reference must not be empty")]
    NoDocument,
    #[error("no accession is stored for the specimen")]
    NoAccession,
    #[error("the specimen has no reported result yet")]
    NotReported,
    #[error(
        "a split specimen is tested only for a positive, adulterated or substituted result (40.171(a)); this specimen was reported {0}"
    )]
    NotEligible(String),
    #[error("the split request was already answered under document `{0}`")]
    AlreadyAnswered(String),
    #[error("the package would carry the donor's identifier; nothing was produced (40.175(e))")]
    DonorIdentity,
    #[error("no limit of detection is configured for analyte `{0}`")]
    NoLimitOfDetection(String),
    #[error("the {0} criterion `{1}` ({2}) is not in profile {3}")]
    UnknownCriterion(String, String, String, String),
    #[error("the request names no adulterant to test for")]
    NoAdulterant,
}

// ---- Second laboratory: reconfirmation ----------------------------------------------------

/// The method's limit of detection per analyte, ng/mL (configured by the split laboratory).
pub type LimitsOfDetection = BTreeMap<String, Decimal>;

/// Bottle B as the second laboratory received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "condition", content = "detail")]
pub enum Received {
    Intact,
    /// Not received, leaked, seal broken, insufficient: what the laboratory found.
    NotAvailable(String),
}

/// The split laboratory's test results on Bottle B. An absent entry was not tested yet.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SplitTests {
    /// Analyte → measured value, ng/mL (0 or anything below the LOD means not detected).
    #[serde(default)]
    pub confirmation: BTreeMap<String, Decimal>,
    /// Validity results; `None` until validity testing was done.
    #[serde(default)]
    pub validity: Option<Validity>,
}

/// One reason of 40.183(b) for "Failed to Reconfirm".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "measures")]
pub enum FailureReason {
    /// 40.183(b)(1).
    DrugsNotDetected,
    /// 40.183(b)(2).
    AdulterantNotFoundWithinCriteria,
    /// 40.183(b)(3), naming the measures (creatinine, specific gravity, or both) not met.
    NotConsistentWithSubstitution(Vec<String>),
    /// 40.183(b)(4).
    SpecimenNotAvailable,
}

impl FailureReason {
    /// The statement for the "Reason" line (Step 5(b)).
    pub fn statement(&self) -> String {
        match self {
            FailureReason::DrugsNotDetected => "Drug(s)/Drug Metabolite(s) Not Detected.".into(),
            FailureReason::AdulterantNotFoundWithinCriteria => {
                "Adulterant not found within criteria.".into()
            }
            FailureReason::NotConsistentWithSubstitution(m) => {
                let labels: Vec<&str> = m
                    .iter()
                    .map(|k| match k.as_str() {
                        "specific_gravity" => "specific gravity",
                        other => other,
                    })
                    .collect();
                format!(
                    "Specimen not consistent with substitution criteria [{}].",
                    labels.join(" and ")
                )
            }
            FailureReason::SpecimenNotAvailable => "Specimen not available for testing.".into(),
        }
    }
}

/// "Reconfirmed" or "Failed to Reconfirm" with exactly one reason (40.183).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Reconfirmation {
    Reconfirmed,
    FailedToReconfirm { reason: FailureReason },
}

/// What one line of the request was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "what")]
pub enum Tested {
    Drug(String),
    Adulteration(CriterionToTest),
    Substitution(CriterionToTest),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemResult {
    pub tested: Tested,
    pub result: Reconfirmation,
}

/// What the validity tests of 40.177(c) found on a split whose drugs failed to reconfirm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "finding", content = "criteria")]
pub enum SplitValidity {
    ConsistentWithHumanUrine,
    Dilute,
    /// 40.187(f): the MRO may then ask the first laboratory to test the primary for it.
    Adulterated(Vec<CriterionToTest>),
    Substituted(Vec<CriterionToTest>),
    /// 40.187(e).
    Invalid(Vec<CriterionToTest>),
}

/// A test still needed before the split result may be released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "missing", content = "key")]
pub enum Missing {
    /// The analyte was not tested yet.
    Drug(String),
    /// A validity measure a requested criterion reads.
    Measure(String),
    /// 40.177(c): drugs failed to reconfirm, so this validity test of 40.91 is required.
    ValidityTest(String),
}

/// The split laboratory's result, ready for the certifying scientist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitReport {
    pub specimen_id: String,
    pub items: Vec<ItemResult>,
    /// Present when drugs failed to reconfirm (40.177(c)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity: Option<SplitValidity>,
}

impl SplitReport {
    /// The one box of Step 5(b): "Reconfirmed" when every requested item reconfirmed,
    /// otherwise "Failed to Reconfirm" with the reason of the first item that did not.
    pub fn overall(&self) -> Reconfirmation {
        self.items
            .iter()
            .find(|i| i.result != Reconfirmation::Reconfirmed)
            .map(|i| i.result.clone())
            .unwrap_or(Reconfirmation::Reconfirmed)
    }
}

/// Where the split test stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum SplitEvaluation {
    /// Not releasable: these tests are still needed.
    Pending { missing: Vec<Missing> },
    /// Releasable once the certifying scientist signs (40.183(c)).
    Complete(SplitReport),
}

fn find_criterion<'p>(
    profile: &'p Profile,
    c: &CriterionToTest,
    result: ValidityResult,
) -> Result<&'p Criterion, SplitError> {
    profile
        .validity
        .iter()
        .find(|x| x.result == result && x.cite == c.cite && x.remark == c.remark)
        .ok_or_else(|| {
            SplitError::UnknownCriterion(
                result.key().into(),
                c.remark.clone(),
                c.cite.clone(),
                profile.name.clone(),
            )
        })
}

fn measures_read(c: &Criterion) -> BTreeSet<Measure> {
    c.clauses
        .iter()
        .flatten()
        .filter_map(|a| match a {
            Atom::Compare { measure, .. } => Some(*measure),
            _ => None,
        })
        .collect()
}

fn meets(c: &Criterion, v: &Validity) -> bool {
    c.clauses
        .iter()
        .all(|cl| rules::validity::clause_holds(cl, v))
}

fn missing_measures(c: &Criterion, v: Option<&Validity>) -> Vec<Missing> {
    measures_read(c)
        .into_iter()
        .filter(|m| v.and_then(|v| v.get(*m)).is_none())
        .map(|m| Missing::Measure(m.key().to_string()))
        .collect()
}

/// 40.179 (and 40.187(f) on the primary): the specimen meets the same 40.95 criterion, and for
/// an identified adulterant, the same substance.
fn adulterant_found(c: &Criterion, wanted: &CriterionToTest, v: &Validity) -> bool {
    if !meets(c, v) {
        return false;
    }
    if wanted.substances.is_empty() {
        return true;
    }
    v.adulterants.iter().any(|found| {
        wanted
            .substances
            .iter()
            .any(|w| w.trim().eq_ignore_ascii_case(found.trim()))
    })
}

/// 40.177(c): the 40.91 tests still missing (creatinine, pH, and specific gravity when
/// creatinine is below 20 mg/dL).
fn missing_validity_tests(v: Option<&Validity>) -> Vec<Missing> {
    let mut out = Vec::new();
    let creatinine = v.and_then(|v| v.creatinine);
    if creatinine.is_none() {
        out.push(Missing::ValidityTest(Measure::Creatinine.key().into()));
    }
    if v.and_then(|v| v.ph).is_none() {
        out.push(Missing::ValidityTest(Measure::Ph.key().into()));
    }
    let need_sg = creatinine.is_none_or(|c| c < Decimal::from(20));
    if need_sg && v.and_then(|v| v.specific_gravity).is_none() {
        out.push(Missing::ValidityTest(Measure::SpecificGravity.key().into()));
    }
    out
}

fn classify(profile: &Profile, v: &Validity) -> SplitValidity {
    let found = rules::validity::assess(profile, v);
    let of = |r: ValidityResult| -> Vec<CriterionToTest> {
        found
            .iter()
            .filter(|f| f.criterion.result == r)
            .map(|f| CriterionToTest::of(f.criterion, &v.adulterants))
            .collect()
    };
    let adulterated = of(ValidityResult::Adulterated);
    let substituted = of(ValidityResult::Substituted);
    let invalid = of(ValidityResult::Invalid);
    if !adulterated.is_empty() {
        SplitValidity::Adulterated(adulterated)
    } else if !substituted.is_empty() {
        SplitValidity::Substituted(substituted)
    } else if !invalid.is_empty() {
        SplitValidity::Invalid(invalid)
    } else if !of(ValidityResult::Dilute).is_empty() {
        SplitValidity::Dilute
    } else {
        SplitValidity::ConsistentWithHumanUrine
    }
}

/// The second laboratory's reconfirmation of Bottle B against the Copy 1 request.
pub fn reconfirm(
    profile: &Profile,
    lods: &LimitsOfDetection,
    request: &Copy1,
    received: &Received,
    tests: &SplitTests,
) -> Result<SplitEvaluation, SplitError> {
    let mut asked: Vec<Tested> = request
        .drugs
        .iter()
        .map(|d| Tested::Drug(d.analyte.clone()))
        .collect();
    asked.extend(
        request
            .adulteration
            .iter()
            .cloned()
            .map(Tested::Adulteration),
    );
    asked.extend(
        request
            .substitution
            .iter()
            .cloned()
            .map(Tested::Substitution),
    );

    if let Received::NotAvailable(_) = received {
        let items = asked
            .into_iter()
            .map(|tested| ItemResult {
                tested,
                result: Reconfirmation::FailedToReconfirm {
                    reason: FailureReason::SpecimenNotAvailable,
                },
            })
            .collect();
        return Ok(SplitEvaluation::Complete(SplitReport {
            specimen_id: request.specimen_id.clone(),
            items,
            validity: None,
        }));
    }

    let failed = |reason| Reconfirmation::FailedToReconfirm { reason };
    let v = tests.validity.as_ref();
    let mut missing = Vec::new();
    let mut items = Vec::new();
    let mut drugs_failed = false;
    for tested in asked {
        let result = match &tested {
            Tested::Drug(analyte) => {
                let lod = lods
                    .get(analyte)
                    .ok_or_else(|| SplitError::NoLimitOfDetection(analyte.clone()))?;
                match tests.confirmation.get(analyte) {
                    None => {
                        missing.push(Missing::Drug(analyte.clone()));
                        continue;
                    }
                    Some(value) if value >= lod => Reconfirmation::Reconfirmed,
                    Some(_) => {
                        drugs_failed = true;
                        failed(FailureReason::DrugsNotDetected)
                    }
                }
            }
            Tested::Adulteration(wanted) => {
                let c = find_criterion(profile, wanted, ValidityResult::Adulterated)?;
                let m = missing_measures(c, v);
                match v {
                    Some(v) if m.is_empty() => {
                        if adulterant_found(c, wanted, v) {
                            Reconfirmation::Reconfirmed
                        } else {
                            failed(FailureReason::AdulterantNotFoundWithinCriteria)
                        }
                    }
                    _ => {
                        missing.extend(m);
                        if v.is_none() && measures_read(c).is_empty() {
                            missing.push(Missing::ValidityTest("adulterants".into()));
                        }
                        continue;
                    }
                }
            }
            Tested::Substitution(wanted) => {
                let c = find_criterion(profile, wanted, ValidityResult::Substituted)?;
                let m = missing_measures(c, v);
                match v {
                    Some(v) if m.is_empty() => {
                        if meets(c, v) {
                            Reconfirmation::Reconfirmed
                        } else {
                            let not_met: BTreeSet<&'static str> = c
                                .clauses
                                .iter()
                                .filter(|cl| !rules::validity::clause_holds(cl, v))
                                .flatten()
                                .filter_map(|a| match a {
                                    Atom::Compare { measure, .. } => Some(measure.key()),
                                    _ => None,
                                })
                                .collect();
                            failed(FailureReason::NotConsistentWithSubstitution(
                                not_met.into_iter().map(String::from).collect(),
                            ))
                        }
                    }
                    _ => {
                        missing.extend(m);
                        continue;
                    }
                }
            }
        };
        items.push(ItemResult { tested, result });
    }
    let validity = if drugs_failed {
        let m = missing_validity_tests(v);
        match v {
            Some(v) if m.is_empty() => Some(classify(profile, v)),
            _ => {
                missing.extend(m);
                None
            }
        }
    } else {
        None
    };
    if !missing.is_empty() {
        missing.dedup();
        return Ok(SplitEvaluation::Pending { missing });
    }
    Ok(SplitEvaluation::Complete(SplitReport {
        specimen_id: request.specimen_id.clone(),
        items,
        validity,
    }))
}

// ---- 40.187(f): the primary tested for the split's adulterant --------------------------------

/// The MRO's written request that the first laboratory test the primary for the adulterant
/// the second laboratory found in the split (40.187(f)(4)(i)–(ii)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryRetestRequest {
    pub document_ref: String,
    pub received_at_ms: u64,
    /// The adulterant as the split laboratory reported it.
    pub adulterant: CriterionToTest,
}

/// The first laboratory's answer, reported to the MRO on a copy of Copy 1 (40.187(f)(4)(iii)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryRetestReport {
    pub specimen_id: String,
    pub request_ref: String,
    pub result: Reconfirmation,
    pub statement: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum PrimaryRetest {
    Pending { missing: Vec<Missing> },
    Complete(PrimaryRetestReport),
}

/// Tests the primary's retest results (`retest`, validity on Bottle A after the request) for
/// the split's adulterant with the criteria of 40.95 (via 40.179).
pub fn retest_primary(
    profile: &Profile,
    specimen_id: &str,
    request: &PrimaryRetestRequest,
    retest: Option<&Validity>,
) -> Result<PrimaryRetest, SplitError> {
    if request.document_ref.trim().is_empty() {
        return Err(SplitError::NoDocument);
    }
    if request.adulterant.result != ValidityResult::Adulterated.key() {
        return Err(SplitError::NoAdulterant);
    }
    let c = find_criterion(profile, &request.adulterant, ValidityResult::Adulterated)?;
    let mut missing = missing_measures(c, retest);
    let Some(v) = retest.filter(|_| missing.is_empty()) else {
        if missing.is_empty() {
            missing.push(Missing::ValidityTest("adulterants".into()));
        }
        return Ok(PrimaryRetest::Pending { missing });
    };
    let (result, statement) = if adulterant_found(c, &request.adulterant, v) {
        (
            Reconfirmation::Reconfirmed,
            format!(
                "Primary specimen reconfirmed for the adulterant found in the split specimen: {} ({}) (40.187(f)(4)(iii)).",
                request.adulterant.remark, request.adulterant.cite
            ),
        )
    } else {
        let reason = FailureReason::AdulterantNotFoundWithinCriteria;
        let s = format!(
            "Primary specimen failed to reconfirm the adulterant found in the split specimen: {} (40.187(f)(4)(iii)).",
            reason.statement()
        );
        (Reconfirmation::FailedToReconfirm { reason }, s)
    };
    Ok(PrimaryRetest::Complete(PrimaryRetestReport {
        specimen_id: specimen_id.to_string(),
        request_ref: request.document_ref.clone(),
        result,
        statement,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::ProfileSet;
    use crate::domain::specimen::{Accession, Ccf, ResultEntry, Source};
    use crate::domain::specimen::{Bottle, ResultKind, SpecimenRecord};
    use crate::domain::split_request::{carries, handle_request};
    use std::str::FromStr;

    const SSN: &str = "123-45-6789";
    const EMPLOYEE_ID: &str = "EMP-778812";
    const DONOR_NAME: &str = "Jane Q. Donor";

    fn profiles() -> ProfileSet {
        let mut set = ProfileSet::new();
        set.insert(
            Profile::parse(
                include_str!("../../config/profiles/part40-2001.toml"),
                Some("part40-2001"),
            )
            .unwrap(),
        );
        set
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn ccf() -> Ccf {
        Ccf {
            employer: Party {
                name: "Acme Freight".into(),
                id: Some("ACME-01".into()),
                address: None,
                phone: None,
            },
            mro: Party {
                name: "Dr. Maria Reviewer".into(),
                id: Some("MRO-555".into()),
                address: Some("9 Review Rd, Springfield".into()),
                phone: Some("555-0100".into()),
            },
            donor_id: Some(SSN.into()),
            reason_for_test: Some("random".into()),
            dot_agency: None,
            collector: Party {
                name: "Carl Collector".into(),
                ..Party::default()
            },
            collected_on: "2026-03-02".into(),
            received_on: "2026-03-03".into(),
            split_collected: true,
            observed: false,
            remarks: Some(format!("Donor {DONOR_NAME}, employee ID {EMPLOYEE_ID}")),
            storage: [("B".to_string(), "freezer-2/B12".to_string())]
                .into_iter()
                .collect(),
        }
    }

    fn entry(kind: ResultKind, target: &str, value: Option<&str>) -> ResultEntry {
        ResultEntry {
            kind,
            target: target.into(),
            value: value.map(dec),
            unit: String::new(),
            bottle: Bottle::A,
            source: Source::Lims {
                document: "batch-1.xml".into(),
            },
            received_at_ms: 10,
            ..ResultEntry::default()
        }
    }

    /// A specimen tested and evaluated; `extra` adds results to a negative panel.
    fn specimen(
        findings: rules::Accession,
        ccf: Ccf,
        extra: &[(ResultKind, &str, Option<&str>)],
    ) -> SpecimenRecord {
        let p = profiles();
        let mut r = SpecimenRecord::new("S-0001", 0);
        r.attach_accession(
            Accession {
                ccf,
                findings,
                // Written for the 2001 edition (its CCF dates would select today\'s).
                profile: Some("part40-2001".into()),
                program: Default::default(),
                specimen_type: Default::default(),
                document: "acc-1.xml".into(),
                received_at_ms: 1,
                correction_initiated_on: None,
            },
            &p,
            "part40-2001",
            1,
        )
        .unwrap();
        let mut results: Vec<ResultEntry> =
            ["marijuana", "cocaine", "pcp", "amphetamines", "opiates"]
                .iter()
                .map(|c| entry(ResultKind::Initial, c, Some("1")))
                .collect();
        results.push(entry(ResultKind::Validity, "creatinine", Some("80")));
        results.push(entry(ResultKind::Validity, "ph", Some("6.5")));
        for (k, t, v) in extra {
            results.retain(|e| !(e.kind == *k && e.target == *t));
            results.push(entry(*k, t, *v));
        }
        r.attach_results(results, &p, "part40-2001", 2).unwrap();
        r
    }

    fn cocaine_positive() -> SpecimenRecord {
        specimen(
            rules::Accession::default(),
            ccf(),
            &[
                (ResultKind::Initial, "cocaine", Some("400")),
                (ResultKind::Confirmation, "benzoylecgonine", Some("200")),
            ],
        )
    }

    fn request() -> SplitRequest {
        SplitRequest {
            document_ref: "MRO-LTR-2026-0311".into(),
            received_at_ms: 1_000,
            second_laboratory: "Second HHS Lab, Inc.".into(),
        }
    }

    fn answer(record: &SpecimenRecord, found_later: &[Cause]) -> SplitDisposition {
        let p = profiles();
        handle_request(
            record,
            p.get("part40-2001").unwrap(),
            "Example Toxicology Laboratory",
            &request(),
            found_later,
            None,
            2_000,
        )
        .unwrap()
    }

    fn package(d: SplitDisposition) -> ForwardingPackage {
        match d {
            SplitDisposition::Forwarded(p) => *p,
            other => panic!("not forwarded: {other:?}"),
        }
    }

    fn unavailable(d: SplitDisposition) -> UnavailableReport {
        match d {
            SplitDisposition::Unavailable(u) => u,
            other => panic!("not unavailable: {other:?}"),
        }
    }

    fn assert_no_donor_identity(text: &str) {
        let lower = text.to_lowercase();
        let squeezed: String = lower.chars().filter(|c| !matches!(c, '-' | ' ')).collect();
        for needle in [
            SSN,
            "123456789",
            EMPLOYEE_ID,
            "778812",
            DONOR_NAME,
            "Donor",
            "Jane",
        ] {
            let n = needle.to_lowercase();
            assert!(!lower.contains(&n), "package carries `{needle}`: {text}");
            let n2: String = n.chars().filter(|c| !matches!(c, '-' | ' ')).collect();
            assert!(
                !squeezed.contains(&n2),
                "package carries `{needle}`: {text}"
            );
        }
    }

    #[test]
    fn forwarding_package_names_bottle_seal_request_and_drugs() {
        let record = cocaine_positive();
        let d = answer(&record, &[]);
        assert_eq!(d.shipped_at_ms(), Some(2_000));
        let p = package(d);
        assert_eq!(p.manifest.specimen_id, "S-0001");
        assert_eq!(p.manifest.bottle, "B");
        assert_eq!(p.manifest.labelled, "B");
        assert_eq!(p.manifest.seal, "intact");
        assert_eq!(p.manifest.redesignation, None);
        assert_eq!(p.manifest.ship_to, "Second HHS Lab, Inc.");
        assert_eq!(p.mro_request.document_ref, "MRO-LTR-2026-0311");
        assert_eq!(p.mro_request.received_at_ms, 1_000);
        assert_eq!(p.copy1.results, vec![ResultCategory::Positive]);
        assert_eq!(
            p.copy1.drugs,
            vec![DrugToTest {
                analyte: "benzoylecgonine".into(),
                name: "Benzoylecgonine".into(),
                class: "cocaine".into(),
            }]
        );
        assert!(p.copy1.adulteration.is_empty());
        assert_eq!(p.copy1.substitution, None);
        assert_eq!(p.copy1.mro.name, "Dr. Maria Reviewer");
        assert_eq!(p.copy1.collected_on, "2026-03-02");
        assert_eq!(p.copy1.first_laboratory, "Example Toxicology Laboratory");
        assert_eq!(p.prepared_at_ms, 2_000);
    }

    #[test]
    fn forwarding_package_carries_no_donor_identity() {
        for donor in [SSN, EMPLOYEE_ID] {
            let mut c = ccf();
            c.donor_id = Some(donor.into());
            let record = specimen(
                rules::Accession::default(),
                c,
                &[
                    (ResultKind::Initial, "cocaine", Some("400")),
                    (ResultKind::Confirmation, "benzoylecgonine", Some("200")),
                    (ResultKind::Validity, "nitrite", Some("600")),
                ],
            );
            let p = package(answer(&record, &[]));
            let text = serde_json::to_string(&p).unwrap();
            assert_no_donor_identity(&text);
            // Nor the employer, the collector or the remarks.
            for other in [
                "Acme",
                "ACME-01",
                "Carl Collector",
                "random",
                "remarks",
                "donor_id",
            ] {
                assert!(!text.contains(other), "`{other}` in {text}");
            }
            // The record itself does carry them: the search would have found a leak.
            let whole = serde_json::to_string(&record).unwrap();
            assert!(whole.contains(donor) && whole.contains(DONOR_NAME));
        }
    }

    #[test]
    fn a_package_that_would_carry_the_donor_id_is_refused() {
        let mut c = ccf();
        // A LIMS that put the employee ID into the request reference field.
        c.donor_id = Some("MRO-LTR-2026-0311".into());
        let record = specimen(
            rules::Accession::default(),
            c,
            &[
                (ResultKind::Initial, "cocaine", Some("400")),
                (ResultKind::Confirmation, "benzoylecgonine", Some("200")),
            ],
        );
        let p = profiles();
        let e = handle_request(
            &record,
            p.get("part40-2001").unwrap(),
            "Lab",
            &request(),
            &[],
            None,
            2_000,
        )
        .unwrap_err();
        assert_eq!(e, SplitError::DonorIdentity);
        // An SSN written without dashes is found too.
        let mut pk = package(answer(&cocaine_positive(), &[]));
        assert!(!carries(&pk, Some(SSN)));
        pk.manifest.ship_to = "Lab 123 45 6789".into();
        assert!(carries(&pk, Some(SSN)));
        assert!(carries(&pk, Some("123456789")));
        assert!(!carries(&pk, Some("  ")));
        assert!(!carries(&pk, None));
    }

    #[test]
    fn adulterated_and_substituted_name_their_criteria() {
        let record = specimen(
            rules::Accession::default(),
            ccf(),
            &[
                (ResultKind::Adulterant, "glutaraldehyde", None),
                (ResultKind::Validity, "nitrite", Some("650")),
            ],
        );
        let p = package(answer(&record, &[]));
        assert_eq!(p.copy1.results, vec![ResultCategory::Adulterated]);
        assert!(p.copy1.drugs.is_empty());
        let remarks: Vec<&str> = p
            .copy1
            .adulteration
            .iter()
            .map(|c| c.remark.as_str())
            .collect();
        assert_eq!(
            remarks,
            vec![
                "nitrite 500 mcg/mL or more",
                "a substance not expected in human urine was identified"
            ]
        );
        assert!(p.copy1.adulteration[0].substances.is_empty());
        assert_eq!(p.copy1.adulteration[1].substances, vec!["glutaraldehyde"]);

        let record = specimen(
            rules::Accession::default(),
            ccf(),
            &[
                (ResultKind::Validity, "creatinine", Some("4")),
                (ResultKind::Validity, "specific_gravity", Some("1.0005")),
            ],
        );
        let p = package(answer(&record, &[]));
        assert_eq!(p.copy1.results, vec![ResultCategory::Substituted]);
        assert_eq!(p.copy1.substitution.as_ref().unwrap().cite, "40.93(b)");
        assert!(p.copy1.adulteration.is_empty());
    }

    #[test]
    fn swapped_labels_ship_the_bottle_labelled_a() {
        let findings = rules::Accession {
            labels_swapped: true,
            ..rules::Accession::default()
        };
        let record = specimen(
            findings,
            ccf(),
            &[
                (ResultKind::Initial, "cocaine", Some("400")),
                (ResultKind::Confirmation, "benzoylecgonine", Some("200")),
            ],
        );
        let p = package(answer(&record, &[]));
        assert_eq!(
            (p.manifest.bottle.as_str(), p.manifest.labelled.as_str()),
            ("B", "A")
        );
        assert!(
            p.manifest
                .redesignation
                .unwrap()
                .contains("40.83(h)(1)(ii)")
        );
    }

    #[test]
    fn split_opened_by_mistake_leaves_the_sealed_primary_as_the_split() {
        // 40.83(h)(1)(iii): the laboratory opened Bottle B instead of the primary, which is
        // still sealed; Bottle B holds enough and is tested as the primary. The bottle the
        // collector sealed as A is the split now, so a verified positive can be reconfirmed.
        let findings = rules::Accession {
            split_opened_instead: true,
            split_seal: SplitSeal::Broken,
            ..rules::Accession::default()
        };
        let record = positive_with(findings, ccf());
        let v = &record.evaluation.as_ref().unwrap().verdict;
        assert!(v.redesignated);
        assert_eq!(v.results, [ResultCategory::Positive]);
        let p = package(answer(&record, &[]));
        assert_eq!(
            (
                p.manifest.bottle.as_str(),
                p.manifest.labelled.as_str(),
                p.manifest.seal.as_str()
            ),
            ("B", "A", "intact")
        );
        let why = p.manifest.redesignation.unwrap();
        assert!(why.contains("40.83(h)(1)(iii)"), "{why}");
        assert!(why.contains("still-sealed primary bottle"), "{why}");
        // Bottle B's seal as found does not matter: it was opened and is the primary now.
        let intact = rules::Accession {
            split_opened_instead: true,
            ..rules::Accession::default()
        };
        assert!(matches!(
            bottle_b(&intact, true, &[]),
            BottleB::Available { labelled: "A", .. }
        ));
        // With the labels swapped as well, the sealed primary carries the letter B.
        let both = rules::Accession {
            labels_swapped: true,
            ..intact.clone()
        };
        match bottle_b(&both, true, &[]) {
            BottleB::Available {
                labelled,
                redesignation,
            } => {
                assert_eq!(labelled, "B");
                let why = redesignation.unwrap();
                assert!(why.contains("40.83(h)(1)(ii), (iii)"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_redesignation_of_40_83_h_1_decides_what_is_left_as_the_split() {
        let with = |f: fn(&mut rules::Accession)| {
            let mut a = rules::Accession::default();
            f(&mut a);
            bottle_b(&a, true, &[])
        };
        let used = |cite: &str| BottleB::Unavailable(vec![Cause::UsedByRedesignation(cite.into())]);
        // (i) the primary leaked: what is left as B is the leaked primary bottle.
        assert_eq!(with(|a| a.primary_leaked = true), used("40.83(h)(1)(i)"));
        // (ii) labels swapped: nothing moved, the bottle labelled A is the split.
        assert!(matches!(
            with(|a| a.labels_swapped = true),
            BottleB::Available {
                labelled: "A",
                redesignation: Some(_)
            }
        ));
        // (iii) the split opened instead, primary sealed: the primary bottle is the split ...
        assert!(matches!(
            with(|a| a.split_opened_instead = true),
            BottleB::Available {
                labelled: "A",
                redesignation: Some(_)
            }
        ));
        // ... unless it is short or leaked out of its seal (the leak without an intact other
        // bottle is no (i); with one, (i) used the other bottle as the primary).
        assert_eq!(
            with(|a| {
                a.split_opened_instead = true;
                a.primary_sufficient = false;
            }),
            BottleB::Unavailable(vec![Cause::Insufficient])
        );
        assert_eq!(
            with(|a| {
                a.split_opened_instead = true;
                a.split_seal = SplitSeal::Broken;
                a.primary_leaked = true;
            }),
            BottleB::Unavailable(vec![Cause::Leaked])
        );
        assert_eq!(
            with(|a| {
                a.split_opened_instead = true;
                a.primary_leaked = true;
            }),
            used("40.83(h)(1)(i)")
        );
        // (iv) the primary's seal is broken: what is left is the unsealed primary bottle.
        assert_eq!(
            with(|a| a.primary_seal = rules::Seal::Broken),
            used("40.83(h)(1)(iv)")
        );
        // Just past (iii): the primary is not sealed either, and the opened split is no sealed
        // bottle for (iv): no redesignation; Bottle B stays the split, found unsealed.
        assert_eq!(
            with(|a| {
                a.split_opened_instead = true;
                a.primary_seal = rules::Seal::Broken;
                a.split_seal = SplitSeal::Broken;
            }),
            BottleB::Unavailable(vec![Cause::SealBroken])
        );
        // Just past (iii) the other way: Bottle B holds too little to be tested as the primary,
        // so it is not redesignated (and is itself insufficient).
        assert_eq!(
            with(|a| {
                a.split_opened_instead = true;
                a.split_sufficient = false;
            }),
            BottleB::Unavailable(vec![Cause::Insufficient])
        );
        // Something found later (a leak in the freezer) still makes the new split unavailable.
        let mut a = rules::Accession {
            split_opened_instead: true,
            ..rules::Accession::default()
        };
        assert_eq!(
            bottle_b(&a, true, &[Cause::Leaked]),
            BottleB::Unavailable(vec![Cause::Leaked])
        );
        // No split collected: nothing to redesignate into a split.
        a.split_seal = SplitSeal::Absent;
        assert_eq!(
            bottle_b(&a, false, &[]),
            BottleB::Unavailable(vec![Cause::NeverCollected])
        );
    }

    fn positive_with(findings: rules::Accession, c: Ccf) -> SpecimenRecord {
        specimen(
            findings,
            c,
            &[
                (ResultKind::Initial, "cocaine", Some("400")),
                (ResultKind::Confirmation, "benzoylecgonine", Some("200")),
            ],
        )
    }

    #[test]
    fn unavailable_split_is_reported_only_now_with_the_cause() {
        // Never collected.
        let mut c = ccf();
        c.split_collected = false;
        let u = unavailable(answer(&positive_with(rules::Accession::default(), c), &[]));
        assert_eq!(u.causes, vec![Cause::NeverCollected]);
        assert_eq!(u.mro.name, "Dr. Maria Reviewer");
        assert_eq!(u.mro_request.document_ref, "MRO-LTR-2026-0311");
        assert_eq!(
            u.statement,
            "Split specimen (Bottle B) of specimen S-0001 is unavailable for testing: no split specimen was collected according to the CCF (40.175(b)(2))."
        );
        // Collected but did not accompany the primary.
        let f = rules::Accession {
            split_seal: SplitSeal::Absent,
            ..rules::Accession::default()
        };
        let u = unavailable(answer(&positive_with(f, ccf()), &[]));
        assert_eq!(u.causes, vec![Cause::DidNotAccompany]);
        // Insufficient, seal broken.
        let f = rules::Accession {
            split_sufficient: false,
            split_seal: SplitSeal::Broken,
            ..rules::Accession::default()
        };
        let u = unavailable(answer(&positive_with(f, ccf()), &[]));
        assert_eq!(u.causes, vec![Cause::SealBroken, Cause::Insufficient]);
        // Used by redesignation: the primary leaked and Bottle B was tested as primary.
        let f = rules::Accession {
            primary_leaked: true,
            ..rules::Accession::default()
        };
        let record = positive_with(f, ccf());
        assert!(record.evaluation.as_ref().unwrap().verdict.redesignated);
        let u = unavailable(answer(&record, &[]));
        assert_eq!(
            u.causes,
            vec![Cause::UsedByRedesignation("40.83(h)(1)(i)".into())]
        );
        assert!(
            u.statement
                .contains("redesignated and tested as the primary specimen (40.83(h)(1)(i))")
        );
        // Leaked in storage, found when the request came.
        let u = unavailable(answer(
            &cocaine_positive(),
            &[
                Cause::Leaked,
                Cause::Other("bottle cracked in freezer 2".into()),
            ],
        ));
        assert_eq!(
            u.causes,
            vec![
                Cause::Leaked,
                Cause::Other("bottle cracked in freezer 2".into())
            ]
        );
        assert!(
            u.statement
                .contains("the split specimen leaked; bottle cracked in freezer 2")
        );
        assert_eq!(u.prepared_at_ms, 2_000);
        // Nothing shipped.
        assert_eq!(SplitDisposition::Unavailable(u).shipped_at_ms(), None);
    }

    #[test]
    fn primary_report_says_nothing_of_the_split_before_the_request() {
        let f = rules::Accession {
            split_seal: SplitSeal::Absent,
            ..rules::Accession::default()
        };
        let record = positive_with(f, ccf());
        let v = &record.evaluation.as_ref().unwrap().verdict;
        let text = serde_json::to_string(v).unwrap().to_lowercase();
        assert!(
            !text.contains("split") && !text.contains("bottle b"),
            "{text}"
        );
    }

    #[test]
    fn requests_that_cannot_be_answered() {
        let p = profiles();
        let profile = p.get("part40-2001").unwrap();
        let go = |r: &SpecimenRecord, req: &SplitRequest, prev: Option<&SplitDisposition>| {
            handle_request(r, profile, "Lab", req, &[], prev, 5).unwrap_err()
        };
        // A negative specimen has no split test.
        let neg = specimen(rules::Accession::default(), ccf(), &[]);
        assert_eq!(
            go(&neg, &request(), None).to_string(),
            "a split specimen is tested only for a positive, adulterated or substituted result (40.171(a)); this specimen was reported negative"
        );
        // Held for a correctable flaw: nothing reported yet.
        let held = positive_with(
            rules::Accession {
                temperature_recorded: false,
                ..rules::Accession::default()
            },
            ccf(),
        );
        assert_eq!(go(&held, &request(), None), SplitError::NotReported);
        // No accession.
        let mut bare = cocaine_positive();
        bare.accession = None;
        assert_eq!(go(&bare, &request(), None), SplitError::NoAccession);
        // No document.
        let mut r = request();
        r.document_ref = " ".into();
        assert_eq!(go(&cocaine_positive(), &r, None), SplitError::NoDocument);
        // Answered once.
        let first = answer(&cocaine_positive(), &[]);
        assert_eq!(
            go(&cocaine_positive(), &request(), Some(&first)),
            SplitError::AlreadyAnswered("MRO-LTR-2026-0311".into())
        );
    }

    // ---- second laboratory ----

    fn lods() -> LimitsOfDetection {
        [
            ("benzoylecgonine".to_string(), dec("5")),
            ("thca".to_string(), dec("1")),
        ]
        .into_iter()
        .collect()
    }

    fn order(record: &SpecimenRecord) -> Copy1 {
        package(answer(record, &[])).copy1
    }

    fn run(order: &Copy1, tests: &SplitTests) -> SplitEvaluation {
        let p = profiles();
        reconfirm(
            p.get("part40-2001").unwrap(),
            &lods(),
            order,
            &Received::Intact,
            tests,
        )
        .unwrap()
    }

    fn complete(e: SplitEvaluation) -> SplitReport {
        match e {
            SplitEvaluation::Complete(r) => r,
            other => panic!("not complete: {other:?}"),
        }
    }

    fn normal_validity() -> Validity {
        Validity {
            creatinine: Some(dec("80")),
            ph: Some(dec("6.5")),
            ..Validity::default()
        }
    }

    fn drug_tests(value: &str, validity: Option<Validity>) -> SplitTests {
        SplitTests {
            confirmation: [("benzoylecgonine".to_string(), dec(value))]
                .into_iter()
                .collect(),
            validity,
        }
    }

    #[test]
    fn drugs_reconfirm_at_or_above_the_lod_regardless_of_cutoffs() {
        let o = order(&cocaine_positive());
        // 40 ng/mL: below the 150 confirmation cutoff, above the LOD of 5.
        let r = complete(run(&o, &drug_tests("40", None)));
        assert_eq!(r.overall(), Reconfirmation::Reconfirmed);
        assert_eq!(r.items.len(), 1);
        assert_eq!(r.items[0].tested, Tested::Drug("benzoylecgonine".into()));
        assert_eq!(r.validity, None);
        assert_eq!(r.specimen_id, "S-0001");
        // At the LOD.
        assert_eq!(
            complete(run(&o, &drug_tests("5", None))).overall(),
            Reconfirmation::Reconfirmed
        );
        // Just below: validity tests of 40.177(c) are required before release.
        match run(&o, &drug_tests("4.99", None)) {
            SplitEvaluation::Pending { missing } => assert_eq!(
                missing,
                vec![
                    Missing::ValidityTest("creatinine".into()),
                    Missing::ValidityTest("ph".into()),
                    Missing::ValidityTest("specific_gravity".into()),
                ]
            ),
            other => panic!("{other:?}"),
        }
        // Creatinine at 20 needs no specific gravity; below 20 it does.
        let mut v = normal_validity();
        v.creatinine = Some(dec("19.9"));
        assert_eq!(
            run(&o, &drug_tests("0", Some(v.clone()))),
            SplitEvaluation::Pending {
                missing: vec![Missing::ValidityTest("specific_gravity".into())]
            }
        );
        v.specific_gravity = Some(dec("1.010"));
        let r = complete(run(&o, &drug_tests("0", Some(v))));
        assert_eq!(
            r.overall(),
            Reconfirmation::FailedToReconfirm {
                reason: FailureReason::DrugsNotDetected
            }
        );
        assert_eq!(r.validity, Some(SplitValidity::ConsistentWithHumanUrine));
        assert_eq!(
            FailureReason::DrugsNotDetected.statement(),
            "Drug(s)/Drug Metabolite(s) Not Detected."
        );
    }

    #[test]
    fn failed_drugs_with_an_adulterated_or_invalid_split() {
        let o = order(&cocaine_positive());
        let mut v = normal_validity();
        v.nitrite = Some(dec("600"));
        let r = complete(run(&o, &drug_tests("1", Some(v))));
        match r.validity {
            Some(SplitValidity::Adulterated(c)) => {
                assert_eq!(c[0].remark, "nitrite 500 mcg/mL or more")
            }
            other => panic!("{other:?}"),
        }
        let mut v = normal_validity();
        v.ph = Some(dec("9.5"));
        let r = complete(run(&o, &drug_tests("1", Some(v))));
        assert!(
            matches!(r.validity, Some(SplitValidity::Invalid(_))),
            "{r:?}"
        );
        let mut v = normal_validity();
        v.creatinine = Some(dec("10"));
        v.specific_gravity = Some(dec("1.002"));
        let r = complete(run(&o, &drug_tests("1", Some(v))));
        assert_eq!(r.validity, Some(SplitValidity::Dilute));
    }

    #[test]
    fn untested_drug_and_missing_lod() {
        let o = order(&cocaine_positive());
        assert_eq!(
            run(&o, &SplitTests::default()),
            SplitEvaluation::Pending {
                missing: vec![Missing::Drug("benzoylecgonine".into())]
            }
        );
        let p = profiles();
        let e = reconfirm(
            p.get("part40-2001").unwrap(),
            &LimitsOfDetection::new(),
            &o,
            &Received::Intact,
            &drug_tests("40", None),
        )
        .unwrap_err();
        assert_eq!(e, SplitError::NoLimitOfDetection("benzoylecgonine".into()));
    }

    fn nitrite_order() -> Copy1 {
        order(&specimen(
            rules::Accession::default(),
            ccf(),
            &[(ResultKind::Validity, "nitrite", Some("650"))],
        ))
    }

    fn validity_tests(v: Validity) -> SplitTests {
        SplitTests {
            confirmation: BTreeMap::new(),
            validity: Some(v),
        }
    }

    #[test]
    fn adulterant_reconfirmed_by_the_40_95_criteria() {
        let o = nitrite_order();
        let mut v = normal_validity();
        v.nitrite = Some(dec("500"));
        assert_eq!(
            complete(run(&o, &validity_tests(v.clone()))).overall(),
            Reconfirmation::Reconfirmed
        );
        v.nitrite = Some(dec("499.9"));
        let r = complete(run(&o, &validity_tests(v)));
        assert_eq!(
            r.overall(),
            Reconfirmation::FailedToReconfirm {
                reason: FailureReason::AdulterantNotFoundWithinCriteria
            }
        );
        assert_eq!(r.validity, None);
        assert_eq!(
            FailureReason::AdulterantNotFoundWithinCriteria.statement(),
            "Adulterant not found within criteria."
        );
        // Not measured yet.
        assert_eq!(
            run(&o, &validity_tests(normal_validity())),
            SplitEvaluation::Pending {
                missing: vec![Missing::Measure("nitrite".into())]
            }
        );
        assert_eq!(
            run(&o, &SplitTests::default()),
            SplitEvaluation::Pending {
                missing: vec![Missing::Measure("nitrite".into())]
            }
        );
    }

    #[test]
    fn identified_adulterant_must_be_the_same_substance() {
        let o = order(&specimen(
            rules::Accession::default(),
            ccf(),
            &[(ResultKind::Adulterant, "glutaraldehyde", None)],
        ));
        let mut v = normal_validity();
        v.adulterants = vec!["Glutaraldehyde".into()];
        assert_eq!(
            complete(run(&o, &validity_tests(v.clone()))).overall(),
            Reconfirmation::Reconfirmed
        );
        v.adulterants = vec!["pyridine".into()];
        assert_eq!(
            complete(run(&o, &validity_tests(v))).overall(),
            Reconfirmation::FailedToReconfirm {
                reason: FailureReason::AdulterantNotFoundWithinCriteria
            }
        );
        assert_eq!(
            run(&o, &SplitTests::default()),
            SplitEvaluation::Pending {
                missing: vec![Missing::ValidityTest("adulterants".into())]
            }
        );
    }

    #[test]
    fn substitution_by_40_93_b_names_the_measures_not_met() {
        let o = order(&specimen(
            rules::Accession::default(),
            ccf(),
            &[
                (ResultKind::Validity, "creatinine", Some("4")),
                (ResultKind::Validity, "specific_gravity", Some("1.0005")),
            ],
        ));
        let v = |c: &str, sg: &str| {
            validity_tests(Validity {
                creatinine: Some(dec(c)),
                specific_gravity: Some(dec(sg)),
                ph: Some(dec("6")),
                ..Validity::default()
            })
        };
        let failed = |m: &[&str]| Reconfirmation::FailedToReconfirm {
            reason: FailureReason::NotConsistentWithSubstitution(
                m.iter().map(|s| s.to_string()).collect(),
            ),
        };
        assert_eq!(
            complete(run(&o, &v("5", "1.001"))).overall(),
            Reconfirmation::Reconfirmed
        );
        assert_eq!(
            complete(run(&o, &v("5", "1.020"))).overall(),
            Reconfirmation::Reconfirmed
        );
        assert_eq!(
            complete(run(&o, &v("5.1", "1.001"))).overall(),
            failed(&["creatinine"])
        );
        assert_eq!(
            complete(run(&o, &v("5", "1.0011"))).overall(),
            failed(&["specific_gravity"])
        );
        assert_eq!(
            complete(run(&o, &v("5", "1.0199"))).overall(),
            failed(&["specific_gravity"])
        );
        let both = complete(run(&o, &v("6", "1.010"))).overall();
        assert_eq!(both, failed(&["creatinine", "specific_gravity"]));
        let Reconfirmation::FailedToReconfirm { reason } = both else {
            unreachable!()
        };
        assert_eq!(
            reason.statement(),
            "Specimen not consistent with substitution criteria [creatinine and specific gravity]."
        );
        assert_eq!(
            run(&o, &validity_tests(Validity::default())),
            SplitEvaluation::Pending {
                missing: vec![
                    Missing::Measure("creatinine".into()),
                    Missing::Measure("specific_gravity".into())
                ]
            }
        );
    }

    #[test]
    fn specimen_not_available_at_the_second_laboratory() {
        let o = order(&cocaine_positive());
        let p = profiles();
        let r = complete(
            reconfirm(
                p.get("part40-2001").unwrap(),
                &lods(),
                &o,
                &Received::NotAvailable("bottle leaked in transit".into()),
                &SplitTests::default(),
            )
            .unwrap(),
        );
        let reason = FailureReason::SpecimenNotAvailable;
        assert_eq!(
            r.overall(),
            Reconfirmation::FailedToReconfirm {
                reason: reason.clone()
            }
        );
        assert_eq!(r.items.len(), 1);
        assert_eq!(reason.statement(), "Specimen not available for testing.");
    }

    #[test]
    fn overall_is_reconfirmed_only_when_every_item_is() {
        let record = specimen(
            rules::Accession::default(),
            ccf(),
            &[
                (ResultKind::Initial, "cocaine", Some("400")),
                (ResultKind::Confirmation, "benzoylecgonine", Some("200")),
                (ResultKind::Validity, "nitrite", Some("650")),
            ],
        );
        let o = order(&record);
        assert_eq!(
            o.results,
            vec![ResultCategory::Positive, ResultCategory::Adulterated]
        );
        let mut v = normal_validity();
        v.nitrite = Some(dec("100"));
        let r = complete(run(&o, &drug_tests("30", Some(v))));
        assert_eq!(r.items[0].result, Reconfirmation::Reconfirmed);
        assert_eq!(
            r.overall(),
            Reconfirmation::FailedToReconfirm {
                reason: FailureReason::AdulterantNotFoundWithinCriteria
            }
        );
        let j = serde_json::to_value(SplitEvaluation::Complete(r.clone())).unwrap();
        assert_eq!(j["state"], "complete");
        assert_eq!(
            j["items"][1]["result"]["reason"]["reason"],
            "adulterant_not_found_within_criteria"
        );
        let back: SplitEvaluation = serde_json::from_value(j).unwrap();
        assert_eq!(back, SplitEvaluation::Complete(r));
    }

    #[test]
    fn unknown_criterion_is_named() {
        let mut o = nitrite_order();
        o.adulteration[0].remark = "made up".into();
        let p = profiles();
        let e = reconfirm(
            p.get("part40-2001").unwrap(),
            &lods(),
            &o,
            &Received::Intact,
            &validity_tests(normal_validity()),
        )
        .unwrap_err();
        assert!(matches!(e, SplitError::UnknownCriterion(..)), "{e}");
    }

    // ---- 40.187(f) ----

    fn retest_request() -> PrimaryRetestRequest {
        PrimaryRetestRequest {
            document_ref: "MRO-LTR-2026-0420".into(),
            received_at_ms: 9_000,
            adulterant: CriterionToTest {
                result: "adulterated".into(),
                cite: "40.95(a)(2), HHS criteria".into(),
                remark: "nitrite 500 mcg/mL or more".into(),
                substances: vec![],
            },
        }
    }

    #[test]
    fn primary_tested_for_the_split_adulterant() {
        let p = profiles();
        let profile = p.get("part40-2001").unwrap();
        let req = retest_request();
        let mut v = normal_validity();
        v.nitrite = Some(dec("520"));
        let PrimaryRetest::Complete(r) = retest_primary(profile, "S-0001", &req, Some(&v)).unwrap()
        else {
            panic!("pending")
        };
        assert_eq!(r.result, Reconfirmation::Reconfirmed);
        assert_eq!(r.request_ref, "MRO-LTR-2026-0420");
        assert!(r.statement.contains("40.187(f)(4)(iii)"));
        v.nitrite = Some(dec("120"));
        let PrimaryRetest::Complete(r) = retest_primary(profile, "S-0001", &req, Some(&v)).unwrap()
        else {
            panic!("pending")
        };
        assert_eq!(
            r.result,
            Reconfirmation::FailedToReconfirm {
                reason: FailureReason::AdulterantNotFoundWithinCriteria
            }
        );
        assert!(
            r.statement
                .contains("Adulterant not found within criteria.")
        );
        // Not tested yet.
        assert_eq!(
            retest_primary(profile, "S-0001", &req, None).unwrap(),
            PrimaryRetest::Pending {
                missing: vec![Missing::Measure("nitrite".into())]
            }
        );
        // From the split laboratory's report straight into the request.
        let o = order(&cocaine_positive());
        let mut sv = normal_validity();
        sv.nitrite = Some(dec("700"));
        let split = complete(run(&o, &drug_tests("0", Some(sv))));
        let Some(SplitValidity::Adulterated(found)) = split.validity else {
            panic!("not adulterated")
        };
        let from_split = PrimaryRetestRequest {
            adulterant: found[0].clone(),
            ..retest_request()
        };
        assert!(matches!(
            retest_primary(profile, "S-0001", &from_split, Some(&v)).unwrap(),
            PrimaryRetest::Complete(_)
        ));
        // A request must name an adulterant, and a document.
        let mut bad = retest_request();
        bad.adulterant.result = "substituted".into();
        assert_eq!(
            retest_primary(profile, "S-0001", &bad, Some(&v)),
            Err(SplitError::NoAdulterant)
        );
        let mut bad = retest_request();
        bad.document_ref.clear();
        assert_eq!(
            retest_primary(profile, "S-0001", &bad, Some(&v)),
            Err(SplitError::NoDocument)
        );
    }
}
