//! The Part 40 rules engine: pure, deterministic, and the only place a verdict is decided.
//!
//! No clock, no store, no network, no I/O: a [`Specimen`] and a [`Profile`] in, a [`Verdict`]
//! out. The daemon and `custodian evaluate` both call [`evaluate`].
//!
//! The stages follow the regulation:
//! 1. [`accessioning`] — 40.83: fatal flaws, correctable flaws, redesignation of bottles;
//! 2. [`validity`] — 40.91–40.95: dilute, substituted, adulterated, invalid;
//! 3. [`testing`] — 40.87: initial and confirmation cutoffs;
//! 4. [`reporting`] — 40.97 and 40.99(a): the categories, quantitative values, retention, remarks.

pub mod accessioning;
pub mod edition;
pub mod measure;
pub mod profile;
pub mod reporting;
pub mod testing;
pub mod validity;

pub use edition::{NoEdition, select};
pub use profile::{Profile, ProfileError, ProfileSet, Program, SelectingDate, SpecimenType};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Condition of a bottle's tamper-evident seal as found at accessioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seal {
    #[default]
    Intact,
    Broken,
}

/// The split bottle's seal; `Absent` when no split bottle came with the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitSeal {
    #[default]
    Intact,
    Broken,
    Absent,
}

/// The custody and control form used for the collection (40.45(a), 40.83(g)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    #[default]
    Federal,
    NonFederal,
    ExpiredFederal,
}

/// Where the correction of a correctable flaw stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Correction {
    /// No correction yet (the window may still be open).
    #[default]
    None,
    /// The flaw was corrected within the window.
    Corrected,
    /// The window of business days ran out without a correction.
    Expired,
}

fn yes() -> bool {
    true
}

/// What accessioning found (40.83). Every field defaults to "normal".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accession {
    /// 40.83(c)(1): the bottle's specimen ID matches the CCF.
    #[serde(default = "yes")]
    pub id_matches: bool,
    /// 40.83(c)(3): the collector's printed name and signature are on the CCF.
    #[serde(default = "yes")]
    pub collector_name_and_signature: bool,
    /// 40.83(c)(2).
    #[serde(default)]
    pub primary_seal: Seal,
    #[serde(default)]
    pub split_seal: SplitSeal,
    /// 40.83(c)(4): enough urine in the primary for analysis.
    #[serde(default = "yes")]
    pub primary_sufficient: bool,
    #[serde(default = "yes")]
    pub split_sufficient: bool,
    /// 40.83(h)(1)(i).
    #[serde(default)]
    pub primary_leaked: bool,
    /// 40.83(h)(1)(ii): the primary is labelled B and the split A.
    #[serde(default)]
    pub labels_swapped: bool,
    /// 40.83(h)(1)(iii): the lab opened the split instead of the primary.
    #[serde(default)]
    pub split_opened_instead: bool,
    /// 40.83(e): the collector signed the Step 4 certification.
    #[serde(default = "yes")]
    pub collector_certification_signed: bool,
    /// 40.83(f): the temperature was checked (or a remark explains it).
    #[serde(default = "yes")]
    pub temperature_recorded: bool,
    /// 40.83(g).
    #[serde(default)]
    pub form: Form,
    /// Where the correction of every open correctable flaw stands (a case's `correction`).
    #[serde(default)]
    pub correction: Correction,
    /// Each open flaw's own state where it differs from `correction` (one flaw corrected while
    /// another ran out of time). The daemon sets it from the specimen record for each
    /// evaluation; it is no key of a case and is never stored with the findings.
    #[serde(skip)]
    pub flaw_corrections: BTreeMap<accessioning::Flaw, Correction>,
    /// Oral fluid, 40.199(b)(8): the collection device had expired (for (b)(9): the
    /// laboratory confirmed it had, when Step 4 gave no expiration date).
    #[serde(default)]
    pub collection_device_expired: bool,
    /// Oral fluid, 40.199(b)(9): the device's expiration date is recorded in Step 4.
    #[serde(default = "yes")]
    pub device_expiration_date_recorded: bool,
}

impl Default for Accession {
    fn default() -> Self {
        Accession {
            id_matches: true,
            collector_name_and_signature: true,
            primary_seal: Seal::Intact,
            split_seal: SplitSeal::Intact,
            primary_sufficient: true,
            split_sufficient: true,
            primary_leaked: false,
            labels_swapped: false,
            split_opened_instead: false,
            collector_certification_signed: true,
            temperature_recorded: true,
            form: Form::Federal,
            correction: Correction::None,
            flaw_corrections: BTreeMap::new(),
            collection_device_expired: false,
            device_expiration_date_recorded: true,
        }
    }
}

/// Validity test results (40.91). An absent measure was not reported.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validity {
    /// mg/dL.
    #[serde(default, deserialize_with = "measure::deserialize_opt")]
    pub creatinine: Option<Decimal>,
    #[serde(default, deserialize_with = "measure::deserialize_opt")]
    pub specific_gravity: Option<Decimal>,
    #[serde(default, deserialize_with = "measure::deserialize_opt")]
    pub ph: Option<Decimal>,
    /// mcg/mL.
    #[serde(default, deserialize_with = "measure::deserialize_opt")]
    pub nitrite: Option<Decimal>,
    /// Substances identified as adulterants (e.g. "glutaraldehyde").
    #[serde(default)]
    pub adulterants: Vec<String>,
    /// An interfering substance, or a test that could not be completed.
    #[serde(default)]
    pub interference: bool,
}

impl Validity {
    pub fn get(&self, m: profile::Measure) -> Option<Decimal> {
        match m {
            profile::Measure::Creatinine => self.creatinine,
            profile::Measure::SpecificGravity => self.specific_gravity,
            profile::Measure::Ph => self.ph,
            profile::Measure::Nitrite => self.nitrite,
        }
    }
}

/// Everything the rules look at for one primary specimen.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Specimen {
    #[serde(default)]
    pub accession: Accession,
    #[serde(default)]
    pub validity: Validity,
    /// Initial (screening) results by drug class key, ng/mL.
    #[serde(default, deserialize_with = "measure::deserialize_map")]
    pub initial: BTreeMap<String, Decimal>,
    /// Confirmation results by analyte key, ng/mL.
    #[serde(default, deserialize_with = "measure::deserialize_map")]
    pub confirmation: BTreeMap<String, Decimal>,
    /// 40.97(e): the MRO asked in writing for quantitative values.
    #[serde(default)]
    pub mro_requested_quantitation: bool,
}

/// The eight categories of 40.97(a), folded into six names plus the `dilute` qualifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultCategory {
    // Declaration order is the order of 40.97(a).
    Negative,
    Rejected,
    Positive,
    Adulterated,
    Substituted,
    Invalid,
}

impl ResultCategory {
    pub fn key(self) -> &'static str {
        match self {
            ResultCategory::Negative => "negative",
            ResultCategory::Rejected => "rejected",
            ResultCategory::Positive => "positive",
            ResultCategory::Adulterated => "adulterated",
            ResultCategory::Substituted => "substituted",
            ResultCategory::Invalid => "invalid",
        }
    }
}

/// A correctable flaw is open: the result waits (40.83(e)–(g)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub reason: String,
    pub business_days: u32,
}

/// What the laboratory reports for one specimen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// In the order of 40.97(a); empty only while `hold` is set.
    pub results: Vec<ResultCategory>,
    pub dilute: bool,
    /// Sorted analyte keys.
    pub positive_analytes: Vec<String>,
    /// Analyte (or validity measure) → value that must go to the MRO.
    pub quantitations: BTreeMap<String, Decimal>,
    pub redesignated: bool,
    pub hold: Option<Hold>,
    pub retain_one_year: bool,
    pub remarks: Vec<String>,
}

/// Why a specimen could not be evaluated. Names positions and keys, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaseError {
    #[error("initial.{0}: not a drug class of profile {1}")]
    UnknownClass(String, String),
    #[error("confirmation.{0}: not an analyte of profile {1}")]
    UnknownAnalyte(String, String),
    #[error("{0}: must not be negative")]
    Negative(String),
    #[error("validity.ph: must be between 0 and 14")]
    PhOutOfRange,
    #[error("validity.specific_gravity: must be greater than zero")]
    SpecificGravityNotPositive,
    #[error("validity.adulterants[{0}]: must name the substance")]
    EmptyAdulterant(usize),
    #[error("{0}: does not apply to {1} specimens (profile {2})")]
    NotForSpecimenType(String, &'static str, String),
}

/// Decides the verdict for one specimen under one profile.
pub fn evaluate(profile: &Profile, specimen: &Specimen) -> Result<Verdict, CaseError> {
    check(profile, specimen)?;
    let accessioned = accessioning::accession(profile, &specimen.accession);
    let mut remarks = accessioned.remarks.clone();
    match accessioned.outcome {
        accessioning::Outcome::Rejected => {
            return Ok(Verdict {
                results: vec![ResultCategory::Rejected],
                dilute: false,
                positive_analytes: Vec::new(),
                quantitations: BTreeMap::new(),
                redesignated: false,
                hold: None,
                retain_one_year: false,
                remarks,
            });
        }
        accessioning::Outcome::Hold(hold) => {
            return Ok(Verdict {
                results: Vec::new(),
                dilute: false,
                positive_analytes: Vec::new(),
                quantitations: BTreeMap::new(),
                redesignated: accessioned.redesignated,
                hold: Some(hold),
                retain_one_year: false,
                remarks,
            });
        }
        accessioning::Outcome::Test => {}
    }
    let findings = validity::assess(profile, &specimen.validity);
    let drugs = testing::test(profile, &specimen.initial, &specimen.confirmation);
    let mut verdict = reporting::report(profile, specimen, &findings, &drugs);
    remarks.append(&mut verdict.remarks);
    verdict.remarks = remarks;
    verdict.redesignated = accessioned.redesignated;
    Ok(verdict)
}

fn check(profile: &Profile, s: &Specimen) -> Result<(), CaseError> {
    let not_for = |key: &str| {
        CaseError::NotForSpecimenType(
            key.to_string(),
            profile.specimen_type.key(),
            profile.name.clone(),
        )
    };
    match profile.specimen_type {
        SpecimenType::Urine => {
            if s.accession.collection_device_expired {
                return Err(not_for("accession.collection_device_expired"));
            }
            if !s.accession.device_expiration_date_recorded {
                return Err(not_for("accession.device_expiration_date_recorded"));
            }
        }
        SpecimenType::OralFluid => {
            // No temperature is taken and no validity test is done on oral fluid (40.92-40.93):
            // a finding of either is a mistake in the input, never "normal".
            if !s.accession.temperature_recorded {
                return Err(not_for("accession.temperature_recorded"));
            }
            if s.validity != Validity::default() && profile.validity.is_empty() {
                return Err(not_for("validity"));
            }
        }
    }
    for (k, v) in &s.initial {
        if profile.class(k).is_none() {
            return Err(CaseError::UnknownClass(k.clone(), profile.name.clone()));
        }
        if v.is_sign_negative() && !v.is_zero() {
            return Err(CaseError::Negative(format!("initial.{k}")));
        }
    }
    for (k, v) in &s.confirmation {
        if profile.analyte(k).is_none() {
            return Err(CaseError::UnknownAnalyte(k.clone(), profile.name.clone()));
        }
        if v.is_sign_negative() && !v.is_zero() {
            return Err(CaseError::Negative(format!("confirmation.{k}")));
        }
    }
    for m in profile::Measure::ALL {
        if let Some(v) = s.validity.get(m)
            && v.is_sign_negative()
            && !v.is_zero()
        {
            return Err(CaseError::Negative(format!("validity.{}", m.key())));
        }
    }
    if let Some(ph) = s.validity.ph
        && ph > Decimal::from(14)
    {
        return Err(CaseError::PhOutOfRange);
    }
    if let Some(sg) = s.validity.specific_gravity
        && sg.is_zero()
    {
        return Err(CaseError::SpecificGravityNotPositive);
    }
    if let Some(i) = s
        .validity
        .adulterants
        .iter()
        .position(|a| a.trim().is_empty())
    {
        return Err(CaseError::EmptyAdulterant(i));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
