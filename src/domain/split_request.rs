//! Answering the MRO's written request for a test of the split (40.171(c), 40.175) from what
//! is stored for the specimen: the forwarding package for the second laboratory (Copy 1 data,
//! manifest, no donor identity: 40.175(e)) or the report that Bottle B is unavailable
//! (40.175(b)(2)). Pure: the record, the profile and the time come in.

use crate::domain::rules::profile::ValidityResult;
use crate::domain::rules::{self, Profile, ResultCategory};
use crate::domain::specimen::{Bottle, ResultKind, SpecimenRecord};
use crate::domain::split::*;
use std::collections::BTreeSet;

fn reported_results(record: &SpecimenRecord) -> Result<&rules::Verdict, SplitError> {
    let eval = record.evaluation.as_ref().ok_or(SplitError::NotReported)?;
    if eval.verdict.hold.is_some() || eval.verdict.results.is_empty() {
        return Err(SplitError::NotReported);
    }
    Ok(&eval.verdict)
}

/// The adulterated and substituted criteria the primary met, and the substances identified.
fn primary_criteria(profile: &Profile, record: &SpecimenRecord) -> Vec<CriterionToTest> {
    let input = record.engine_input();
    let substances: Vec<String> = record
        .results
        .iter()
        .filter(|r| r.bottle == Bottle::A && r.kind == ResultKind::Adulterant)
        .map(|r| r.target.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    rules::validity::assess(profile, &input.validity)
        .into_iter()
        .filter(|f| {
            matches!(
                f.criterion.result,
                ValidityResult::Adulterated | ValidityResult::Substituted
            )
        })
        .map(|f| CriterionToTest::of(f.criterion, &substances))
        .collect()
}

/// Answers the MRO's written request for a test of the split (40.171(c), 40.175). `previous`
/// is the disposition already recorded, if any (a request is answered once).
pub fn handle_request(
    record: &SpecimenRecord,
    profile: &Profile,
    first_laboratory: &str,
    request: &SplitRequest,
    found_later: &[Cause],
    previous: Option<&SplitDisposition>,
    at_ms: u64,
) -> Result<SplitDisposition, SplitError> {
    if request.document_ref.trim().is_empty() {
        return Err(SplitError::NoDocument);
    }
    if let Some(p) = previous {
        let doc = match p {
            SplitDisposition::Forwarded(f) => &f.mro_request.document_ref,
            SplitDisposition::Unavailable(u) => &u.mro_request.document_ref,
        };
        return Err(SplitError::AlreadyAnswered(doc.clone()));
    }
    let accession = record.accession.as_ref().ok_or(SplitError::NoAccession)?;
    let verdict = reported_results(record)?;
    let results: Vec<ResultCategory> = verdict
        .results
        .iter()
        .copied()
        .filter(|r| {
            matches!(
                r,
                ResultCategory::Positive
                    | ResultCategory::Adulterated
                    | ResultCategory::Substituted
            )
        })
        .collect();
    if results.is_empty() {
        let all: Vec<&str> = verdict.results.iter().map(|r| r.key()).collect();
        return Err(SplitError::NotEligible(all.join(", ")));
    }
    let ccf = &accession.ccf;
    let mro_request = RequestCopy {
        document_ref: request.document_ref.clone(),
        received_at_ms: request.received_at_ms,
    };
    let (labelled, redesignation) = match bottle_b(
        &accession.findings,
        ccf.split_collected,
        found_later,
    ) {
        BottleB::Unavailable(causes) => {
            let what: Vec<String> = causes.iter().map(Cause::describe).collect();
            let statement = format!(
                "Split specimen (Bottle B) of specimen {} is unavailable for testing: {} (40.175(b)(2)).",
                record.specimen_id,
                what.join("; ")
            );
            return Ok(SplitDisposition::Unavailable(UnavailableReport {
                specimen_id: record.specimen_id.clone(),
                mro: ccf.mro.clone(),
                mro_request,
                causes,
                statement,
                prepared_at_ms: at_ms,
            }));
        }
        BottleB::Available {
            labelled,
            redesignation,
        } => (labelled, redesignation),
    };
    let drugs = verdict
        .positive_analytes
        .iter()
        .map(|a| match profile.analyte(a) {
            Some((class, an)) => DrugToTest {
                analyte: a.clone(),
                name: an.name.clone(),
                class: class.key.clone(),
            },
            None => DrugToTest {
                analyte: a.clone(),
                name: a.clone(),
                class: String::new(),
            },
        })
        .collect();
    let criteria = primary_criteria(profile, record);
    let adulteration = if results.contains(&ResultCategory::Adulterated) {
        criteria
            .iter()
            .filter(|c| c.result == ValidityResult::Adulterated.key())
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    let substitution = if results.contains(&ResultCategory::Substituted) {
        criteria
            .into_iter()
            .find(|c| c.result == ValidityResult::Substituted.key())
    } else {
        None
    };
    let package = ForwardingPackage {
        manifest: Manifest {
            specimen_id: record.specimen_id.clone(),
            bottle: "B".into(),
            labelled: labelled.into(),
            seal: "intact".into(),
            redesignation,
            ship_to: request.second_laboratory.clone(),
        },
        mro_request,
        copy1: Copy1 {
            specimen_id: record.specimen_id.clone(),
            collected_on: ccf.collected_on.clone(),
            first_laboratory: first_laboratory.to_string(),
            received_at_first_laboratory: ccf.received_on.clone(),
            mro: ccf.mro.clone(),
            results,
            drugs,
            adulteration,
            substitution,
        },
        prepared_at_ms: at_ms,
    };
    if carries(&package, ccf.donor_id.as_deref()) {
        return Err(SplitError::DonorIdentity);
    }
    Ok(SplitDisposition::Forwarded(Box::new(package)))
}

/// True when the serialized package contains the donor identifier, as written or as its digits.
pub(crate) fn carries(package: &ForwardingPackage, donor_id: Option<&str>) -> bool {
    let Some(id) = donor_id.map(str::trim).filter(|s| !s.is_empty()) else {
        return false;
    };
    let text = serde_json::to_string(package)
        .unwrap_or_default()
        .to_lowercase();
    if text.contains(&id.to_lowercase()) {
        return true;
    }
    // An SSN written another way (123-45-6789, 123 45 6789, 123456789).
    let digits: String = id.chars().filter(char::is_ascii_digit).collect();
    let squeezed: String = text.chars().filter(|c| !matches!(c, '-' | ' ')).collect();
    digits.len() >= 9 && squeezed.contains(&digits)
}
