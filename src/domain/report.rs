//! The laboratory results report (40.97(b)(1)(i)): the payload of the signed JWS that goes to
//! the MRO, exactly as `shared/contracts/mro-delivery.md` names its keys.
//!
//! [`build`] is pure: the laboratory's configuration, the specimen record and the release (who,
//! when, which report id) in, a [`Report`] out. Everything in a report comes from the CCF or the
//! verdict (40.97(b)(1)(ii)); quantitative values are exactly those the rules engine put in the
//! verdict (it alone applies 40.97(e) and (f)). The CCF's own remarks, the split bottle and the
//! observed-collection box are never copied, and a report whose remarks would mention the split
//! is refused (40.175(b)(1)). The JSON Schema is `schemas/report.schema.json`.

use crate::domain::parties::Laboratory;
use crate::domain::rules::profile::Measure;
use crate::domain::rules::{ResultCategory, measure};
use crate::domain::specimen::{Party, SpecimenRecord, State};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The longest report id accepted (it travels as the `Idempotency-Key` header).
pub const MAX_REPORT_ID: usize = 128;

/// The release a report is built for: the certifying scientist's approval (40.97(b)(1)(ii)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Unique per report; a corrected report gets a new one. `[A-Za-z0-9._:-]`, at most 128.
    pub report_id: String,
    /// When the certifying scientist released it, in milliseconds since the epoch (J).
    pub released_at_ms: u64,
    /// The certifying scientist's name (K).
    pub certifying_scientist: String,
    /// The report id this one corrects, if any.
    pub replaces: Option<String>,
}

/// Element (A).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabParty {
    pub name: String,
    pub address: String,
}

/// Elements (B) and (C): a name and the identifier the CCF gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedParty {
    pub name: String,
    pub id: String,
}

/// Element (G).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collector {
    pub name: String,
    pub phone: String,
}

/// One quantitative value (L): the analyte's concentration or the validity measure's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantitation {
    #[serde(
        serialize_with = "serialize_decimal",
        deserialize_with = "measure::deserialize"
    )]
    pub value: Decimal,
    /// `ng/mL` for drugs and metabolites, `mg/dL` for creatinine, `mcg/mL` for nitrite; absent
    /// for pH and specific gravity, which have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// The certified Copy 1 inside a report (`ccf_copy1` of the delivery contract): the image, its
/// media type and its SHA-256, so the release signature over the report covers the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CcfCopy1 {
    pub media_type: crate::domain::copy1::MediaType,
    /// Hex SHA-256 of the image's bytes.
    pub sha256: String,
    /// The image, base64 (standard alphabet, padded).
    pub data: String,
}

impl CcfCopy1 {
    pub fn new(media_type: crate::domain::copy1::MediaType, bytes: &[u8]) -> CcfCopy1 {
        use base64::Engine;
        CcfCopy1 {
            media_type,
            sha256: crate::domain::copy1::sha256_hex(bytes),
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }
}

/// The payload of the signed report. Field order is the contract's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub report_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// The released report this one adds to without replacing (the values of a case-by-case
    /// request for quantitation after release, 40.97(e) under the 2001 edition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplements: Option<String>,
    /// (A)
    pub laboratory: LabParty,
    /// (B)
    pub employer: NamedParty,
    /// (C)
    pub mro: NamedParty,
    /// (D)
    pub specimen_id: String,
    /// (E) SSN or employee ID, only if the CCF provides one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub donor_id: Option<String>,
    /// (F) only if the CCF provides one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_for_test: Option<String>,
    /// (G)
    pub collector: Collector,
    /// (H) ISO date.
    pub collected_on: String,
    /// (I) ISO date.
    pub received_on: String,
    /// (J) RFC 3339, UTC.
    pub released_at: String,
    /// (K)
    pub certifying_scientist: String,
    /// (L) in the order of 40.97(a).
    pub results: Vec<ResultCategory>,
    /// (L) the "dilute" qualifier of a negative or positive result.
    pub dilute: bool,
    /// (L) analyte keys of the rule profile, sorted.
    pub positive_analytes: Vec<String>,
    /// (L) only what the verdict carries (40.97(e), (f)).
    pub quantitations: BTreeMap<String, Quantitation>,
    /// (M)
    pub remarks: Vec<String>,
    /// The rule profile (edition of Part 40) applied.
    pub profile: String,
    /// `urine` or `oral_fluid` (40.97(a) today reports the specimen type).
    pub specimen_type: crate::domain::rules::SpecimenType,
    /// The certified Copy 1 (40.97(b)(2)): required for every non-negative result, set at
    /// release (see `custody::release`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ccf_copy1: Option<CcfCopy1>,
}

/// Why a report cannot be built. Names keys and states, never donor data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("specimen has no accession (no CCF): nothing may be reported")]
    NotAccessioned,
    #[error("specimen has not been evaluated")]
    NotEvaluated,
    #[error("specimen is held: {0}")]
    Held(String),
    #[error("specimen is {}, not ready_for_review", .0.key())]
    NotReady(State),
    #[error("the verdict has no result")]
    NoResult,
    #[error("{0}: missing on the CCF (required by 40.97(b)(1)(i))")]
    MissingElement(&'static str),
    #[error("{0}: not an ISO date (YYYY-MM-DD)")]
    BadDate(&'static str),
    #[error("{0}: must be 1-128 characters of A-Z a-z 0-9 . _ : -")]
    BadReportId(&'static str),
    #[error("a report cannot replace itself")]
    ReplacesItself,
    #[error("remarks[{0}] mentions the split specimen (40.175(b)(1) forbids it)")]
    SplitMentioned(usize),
}

/// Builds the report for a released specimen: one ready for review, or, for a corrected report
/// (`release.replaces` set), one already released.
pub fn build(
    lab: &Laboratory,
    record: &SpecimenRecord,
    release: &Release,
) -> Result<Report, ReportError> {
    let accession = record
        .accession
        .as_ref()
        .ok_or(ReportError::NotAccessioned)?;
    let evaluation = record
        .evaluation
        .as_ref()
        .ok_or(ReportError::NotEvaluated)?;
    let verdict = &evaluation.verdict;
    if let Some(h) = &verdict.hold {
        return Err(ReportError::Held(h.reason.clone()));
    }
    if record.state == State::Held {
        return Err(ReportError::Held("specimen state is held".to_string()));
    }
    // A corrected report is built for a specimen already released; its results are the same.
    let corrected = release.replaces.is_some() && record.state == State::Released;
    if record.state != State::ReadyForReview && !corrected {
        return Err(ReportError::NotReady(record.state));
    }
    if verdict.results.is_empty() {
        return Err(ReportError::NoResult);
    }
    if !valid_report_id(&release.report_id) {
        return Err(ReportError::BadReportId("report_id"));
    }
    if let Some(r) = &release.replaces {
        if !valid_report_id(r) {
            return Err(ReportError::BadReportId("replaces"));
        }
        if *r == release.report_id {
            return Err(ReportError::ReplacesItself);
        }
    }
    if let Some(i) = verdict.remarks.iter().position(|r| mentions_split(r)) {
        return Err(ReportError::SplitMentioned(i));
    }

    let ccf = &accession.ccf;
    let laboratory = LabParty {
        name: required(&lab.name, "laboratory.name")?,
        address: required(&lab.address, "laboratory.address")?,
    };
    let employer = named(&ccf.employer, "employer.name", "employer.id")?;
    let mro = named(&ccf.mro, "mro.name", "mro.id")?;
    let collector = Collector {
        name: required(&ccf.collector.name, "collector.name")?,
        phone: required(
            ccf.collector.phone.as_deref().unwrap_or(""),
            "collector.phone",
        )?,
    };
    let mut results = verdict.results.clone();
    results.sort();
    results.dedup();
    let quantitations = verdict
        .quantitations
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Quantitation {
                    value: v.normalize(),
                    unit: unit_of(k).map(str::to_string),
                },
            )
        })
        .collect();

    Ok(Report {
        report_id: release.report_id.clone(),
        replaces: release.replaces.clone(),
        supplements: None,
        laboratory,
        employer,
        mro,
        specimen_id: required(&record.specimen_id, "specimen_id")?,
        donor_id: provided(ccf.donor_id.as_deref()),
        reason_for_test: provided(ccf.reason_for_test.as_deref()),
        collector,
        collected_on: date(&ccf.collected_on, "collected_on")?,
        received_on: date(&ccf.received_on, "received_on")?,
        released_at: crate::core::clock::rfc3339(release.released_at_ms),
        certifying_scientist: required(&release.certifying_scientist, "certifying_scientist")?,
        results,
        dilute: verdict.dilute,
        positive_analytes: verdict.positive_analytes.clone(),
        quantitations,
        remarks: verdict.remarks.clone(),
        profile: required(&evaluation.profile, "profile")?,
        specimen_type: accession.specimen_type,
        ccf_copy1: None,
    })
}

impl Report {
    /// The exact bytes that are signed (compact JSON, fields in the contract's order).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a report always serializes")
    }

    /// Hex SHA-256 of [`Report::to_bytes`]: what a certifying scientist's signature binds.
    pub fn content_sha256(&self) -> String {
        Sha256::digest(self.to_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Whether a text names the split specimen (bottle B) in any way a reader would recognise.
pub fn mentions_split(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("split") || t.contains("bottle b")
}

fn valid_report_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REPORT_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

fn required(v: &str, key: &'static str) -> Result<String, ReportError> {
    if v.trim().is_empty() {
        Err(ReportError::MissingElement(key))
    } else {
        Ok(v.to_string())
    }
}

fn provided(v: Option<&str>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty()).map(str::to_string)
}

fn named(
    p: &Party,
    name_key: &'static str,
    id_key: &'static str,
) -> Result<NamedParty, ReportError> {
    Ok(NamedParty {
        name: required(&p.name, name_key)?,
        id: required(p.id.as_deref().unwrap_or(""), id_key)?,
    })
}

/// An ISO calendar date `YYYY-MM-DD`.
fn date(v: &str, key: &'static str) -> Result<String, ReportError> {
    let b = v.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if v.trim().is_empty() {
        return Err(ReportError::MissingElement(key));
    }
    if !shape {
        return Err(ReportError::BadDate(key));
    }
    let m: u32 = v[5..7].parse().unwrap_or(0);
    let d: u32 = v[8..10].parse().unwrap_or(0);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(ReportError::BadDate(key));
    }
    Ok(v.to_string())
}

/// The unit a quantitative value is expressed in.
pub fn unit_of(key: &str) -> Option<&'static str> {
    match Measure::from_key(key) {
        Some(Measure::Creatinine) => Some("mg/dL"),
        Some(Measure::Nitrite) => Some("mcg/mL"),
        Some(Measure::Ph | Measure::SpecificGravity) => None,
        None => Some("ng/mL"),
    }
}

fn serialize_decimal<S: serde::Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    measure::to_json(*d).serialize(s)
}

#[cfg(test)]
mod tests;
