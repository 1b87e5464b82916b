//! ORU^R01 result extraction with a per-analyzer [`Mapping`].
//!
//! Decisions (each checked by a test):
//! - Only OBX-11 `F` (final) and `C` (corrected) results are kept. `P`, `R`, `I`, `S`
//!   (preliminary, unverified, pending, partial) are skipped and counted in
//!   [`OruResults::preliminary`]; `N` (not asked) is skipped and counted in
//!   [`OruResults::not_asked`]. `X` (result cannot be obtained) is kept as
//!   [`ResultValue::NotObtained`]: the test was not done, its measure is still missing and
//!   the specimen waits for a rerun. It is never an interference: interference is reported only
//!   by a test the mapping names with kind `interference` ([`OruResults::interference`]).
//!   `D`, `W`, `U` (deletion, wrong-patient retraction, status change without the
//!   values) and anything else need a person: [`UseError::UnsupportedStatus`] (AE). An empty
//!   OBX-11 is [`UseError::MissingStatus`].
//! - Runs ([`RunMapping`], `[analyzer.mapping.runs]`): the run id is read where the mapping
//!   says (else the analyzer's runs are bracketed by its QC sets); a sample is a control or a
//!   calibrator when the role field the mapping names says so (`SPM-11`: `Q`, `C`), or, for an
//!   instrument that sends no role, when its sample ID starts with a configured prefix; never
//!   guessed otherwise. QC results carry no bottle. Each OBX may carry the instrument's
//!   acceptability flag ([`FlagMapping`]) and the message its aliquot.
//! - Initial, confirmation and validity results are numeric: OBX-2 `NM`, `ST` or empty with a
//!   plain decimal in OBX-5, or `SN` with no comparator (or `=`) and no range. A comparator such
//!   as `<10` is not an exact value and is refused; so is a negative value.
//! - Adulterant and interference results say whether a substance was identified: OBX-5
//!   `POS`, `POSITIVE`, `DETECTED`, `IDENTIFIED`, `PRESENT` (any case) means identified; `NEG`,
//!   `NEGATIVE`, `NOT DETECTED`, `ND`, `NONE DETECTED`, `NOT IDENTIFIED`, `ABSENT` means not; a
//!   number means identified when it is at or above the test's `threshold` (a number without a
//!   configured threshold is [`UseError::NoThreshold`]).
//! - Units (OBX-6.1) are compared with the mapping exactly, ignoring case; a qualitative
//!   adulterant/interference result may leave OBX-6 empty.
//! - The message must be ORU^R01 (else AR), HL7 2.3 to 2.9 (else AR), with MSH-11.1 equal to the
//!   mapping's `processing_id` (default `P`; else AR), so training or debugging messages never
//!   become donor results.
//! - When the specimen-id path does not pick an occurrence, every occurrence of its segment must
//!   carry the same id ([`UseError::ConflictingSpecimenIds`]), so one message never mixes
//!   specimens. Two final results for the same kind, target and tier are
//!   [`UseError::DuplicateResult`].
//! - Whether the specimen id is known is the caller's business (it answers AE with
//!   [`super::ErrorCode::UnknownKeyIdentifier`]).

use super::ack::{AckCode, ErrorCode, ErrorDetail};
use super::location::Location;
use super::message::{Message, Segment};
use super::path::Path;
use crate::domain::results::Tier;
use crate::domain::rules::Profile;
use crate::domain::rules::measure;
use crate::domain::rules::profile::Measure;
use crate::domain::runs::{QcRule, RunKind, SampleRole};
use rust_decimal::Decimal;
use serde::Deserialize;

/// What an OBX reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Initial (screening) test; target is a drug class key, value in ng/mL.
    Initial,
    /// Confirmation test; target is an analyte key, value in ng/mL.
    Confirmation,
    /// Validity test; target is a measure key (creatinine, specific_gravity, ph, nitrite).
    Validity,
    /// Adulterant test; target names the substance (e.g. `glutaraldehyde`).
    Adulterant,
    /// Interference check; target names the check (e.g. `oxidant`).
    Interference,
}

impl Kind {
    pub fn key(self) -> &'static str {
        match self {
            Kind::Initial => "initial",
            Kind::Confirmation => "confirmation",
            Kind::Validity => "validity",
            Kind::Adulterant => "adulterant",
            Kind::Interference => "interference",
        }
    }

    fn is_qualitative(self) -> bool {
        matches!(self, Kind::Adulterant | Kind::Interference)
    }
}

/// One analyzer test code and what it means.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestMapping {
    /// OBX-3.1, exact.
    pub code: String,
    pub kind: Kind,
    /// Class key (initial), analyte key (confirmation), measure key (validity), substance or
    /// check name (adulterant, interference).
    pub target: String,
    /// Expected OBX-6.1, compared ignoring case.
    #[serde(default)]
    pub unit: String,
    /// Adulterant/interference only: a numeric result at or above this means identified.
    #[serde(default, deserialize_with = "measure::deserialize_opt")]
    pub threshold: Option<Decimal>,
    /// Initial or confirmatory test (a validity or adulterant test run as the confirmatory
    /// test on a second aliquot); by kind when absent (confirmation: confirmatory).
    #[serde(default)]
    pub tier: Option<Tier>,
}

/// Where the sample's role is written, and the values naming controls and calibrators. `P` is
/// the position type: an HL7 [`Path`], or an ASTM position for `[astm_analyzer.mapping.runs]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping<P = Path> {
    /// E.g. `SPM-11.1` (HL7 table 0369: `Q` control, `C` calibrator).
    pub field: P,
    /// Values meaning a control, compared ignoring case.
    pub control: Vec<String>,
    /// Values meaning a calibrator.
    #[serde(default)]
    pub calibrator: Vec<String>,
}

/// Where each OBX carries the instrument's acceptability of its result (ion ratios, retention
/// time, internal standard), and the values that mean acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagMapping<P = Path> {
    /// A field of the OBX itself, e.g. `OBX-13.1`.
    pub field: P,
    /// Values meaning acceptable (compared ignoring case); anything else, or nothing, is not.
    pub acceptable: Vec<String>,
}

/// How an analyzer's runs are delimited, how its QC samples are recognised, and the QC rules
/// of its assays (`[analyzer.mapping.runs]`; with ASTM positions `[astm_analyzer.mapping.runs]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "P: Deserialize<'de>"))]
pub struct RunMapping<P = Path> {
    /// What the analyzer's runs test.
    pub kind: RunKind,
    /// Where the run (batch) id is, e.g. `OBR-2.1`; absent: the samples between two QC sets of
    /// the analyzer form a run (bracketing).
    #[serde(default)]
    pub run_id: Option<P>,
    /// Where the sample's role is sent; for instruments that send none, `qc_sample_prefixes`.
    #[serde(default)]
    pub role: Option<RoleMapping<P>>,
    /// Sample ID prefixes of controls and calibrators, for instruments that send no role.
    #[serde(default)]
    pub qc_sample_prefixes: Vec<String>,
    /// Accept a run automatically when every QC result passed (initial and validity only).
    #[serde(default)]
    pub auto_accept: bool,
    /// Where each OBX says its result is acceptable (required for confirmation tests).
    #[serde(default)]
    pub acceptable: Option<FlagMapping<P>>,
    /// Where the aliquot tested is named, e.g. `SPM-2.2`.
    #[serde(default)]
    pub aliquot: Option<P>,
    /// `[[analyzer.mapping.runs.qc]]`: the QC rules of the assays, each citing its source
    /// (shared: every message of the analyzer hands them to custody without a copy).
    #[serde(default)]
    pub qc: std::sync::Arc<Vec<QcRule>>,
}

impl<P> RunMapping<P> {
    /// The shape problems of a run configuration (keys under `runs.`) for the mapping's
    /// `tests`; `flag_field` says what is wrong with the acceptability flag's position, if
    /// anything (its record or segment is the protocol's). With `prefixes_beside_role` (ASTM,
    /// whose action code marks controls only) `qc_sample_prefixes` may recognise the samples
    /// the role field does not mark; else they are only for instruments that send no role.
    pub fn check(
        &self,
        tests: &[TestMapping],
        flag_field: impl Fn(&P) -> Option<String>,
        prefixes_beside_role: bool,
        add: &mut impl FnMut(String, String),
    ) {
        let r = self;
        if let Some(role) = &r.role {
            if role.control.is_empty() {
                add(
                    "runs.role.control".into(),
                    "name at least one value meaning a control".into(),
                );
            }
            let all: Vec<&String> = role.control.iter().chain(&role.calibrator).collect();
            if all.iter().any(|v| v.trim().is_empty()) {
                add("runs.role".into(), "empty value".into());
            }
            if role.control.iter().any(|c| {
                role.calibrator
                    .iter()
                    .any(|k| eq_ignore_case(c.trim(), k.trim()))
            }) {
                add(
                    "runs.role".into(),
                    "a value names both a control and a calibrator".into(),
                );
            }
            if !r.qc_sample_prefixes.is_empty() && !prefixes_beside_role {
                add(
                    "runs.qc_sample_prefixes".into(),
                    "only for instruments that send no role: this mapping names runs.role".into(),
                );
            }
        } else if r.qc_sample_prefixes.is_empty() {
            add(
                "runs.role".into(),
                "say how controls and calibrators are recognised: runs.role (the field the instrument sends) or runs.qc_sample_prefixes".into(),
            );
        }
        for (i, p) in r.qc_sample_prefixes.iter().enumerate() {
            if p.trim().is_empty()
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
            {
                add(
                    format!("runs.qc_sample_prefixes[{i}]"),
                    "must be letters, digits or - _ . /".into(),
                );
            }
        }
        if let Some(f) = &r.acceptable {
            if let Some(p) = flag_field(&f.field) {
                add("runs.acceptable.field".into(), p);
            }
            if f.acceptable.is_empty() || f.acceptable.iter().any(|v| v.trim().is_empty()) {
                add(
                    "runs.acceptable.acceptable".into(),
                    "name the non-empty values meaning acceptable".into(),
                );
            }
        } else if tests.iter().any(|t| t.kind == Kind::Confirmation) {
            add(
                "runs.acceptable".into(),
                "confirmation tests need the field where the instrument flags each result acceptable (a confirmation counts only with it)".into(),
            );
        }
        if r.auto_accept && r.kind == RunKind::Confirmation {
            add(
                "runs.auto_accept".into(),
                "only initial and validity runs may be accepted automatically; a confirmation run needs a named reviewer".into(),
            );
        }
        for (i, q) in r.qc.iter().enumerate() {
            for (k, p) in q.problems() {
                add(format!("runs.qc[{i}].{k}"), p);
            }
            if !q.code.is_empty() && !tests.iter().any(|t| t.code == q.code) {
                add(
                    format!("runs.qc[{i}].code"),
                    format!("`{}` is not a test code of this mapping", q.code),
                );
            }
            if let Some(j) = r.qc[..i]
                .iter()
                .position(|o| o.code == q.code && o.sample == q.sample)
            {
                add(
                    format!("runs.qc[{i}]"),
                    format!("the same code and sample as runs.qc[{j}]"),
                );
            }
        }
        for t in tests {
            if !r.qc.iter().any(|q| q.code == t.code) {
                add(
                    "runs.qc".into(),
                    format!(
                        "no QC rule for test code `{}`: a run testing it could never pass",
                        t.code
                    ),
                );
            }
        }
    }

    /// The same configuration with its positions mapped by `f`.
    pub fn with_positions<Q>(&self, f: impl Fn(&P) -> Q) -> RunMapping<Q> {
        RunMapping {
            kind: self.kind,
            run_id: self.run_id.as_ref().map(&f),
            role: self.role.as_ref().map(|m| RoleMapping {
                field: f(&m.field),
                control: m.control.clone(),
                calibrator: m.calibrator.clone(),
            }),
            qc_sample_prefixes: self.qc_sample_prefixes.clone(),
            auto_accept: self.auto_accept,
            acceptable: self.acceptable.as_ref().map(|m| FlagMapping {
                field: f(&m.field),
                acceptable: m.acceptable.clone(),
            }),
            aliquot: self.aliquot.as_ref().map(&f),
            qc: self.qc.clone(),
        }
    }
}

/// Where the bottle (primary "A" or split "B") is written, and the values that name each.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BottleMapping {
    /// E.g. `SPM-2.2` or `OBR-3.2`.
    pub field: Path,
    /// Values meaning the primary specimen (compared ignoring case), e.g. `["A"]`.
    pub primary: Vec<String>,
    /// Values meaning the split specimen, e.g. `["B"]`.
    pub split: Vec<String>,
    /// The bottle when the field is empty or absent; without it that is an error.
    #[serde(default)]
    pub default: Option<Bottle>,
}

fn default_processing_id() -> String {
    "P".to_owned()
}

/// A per-analyzer mapping from ORU content to custodian results (`[analyzer.mapping]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Where the specimen id is, e.g. `OBR-3.1`, `SPM-2.1`, `OBR-2.1`.
    pub specimen_id: Path,
    /// Where the bottle is named; absent: every result is for the primary specimen.
    #[serde(default)]
    pub bottle: Option<BottleMapping>,
    /// The MSH-11.1 accepted (`P` production unless this is a validation analyzer).
    #[serde(default = "default_processing_id")]
    pub processing_id: String,
    /// `[[analyzer.mapping.test]]`.
    #[serde(default, rename = "test")]
    pub tests: Vec<TestMapping>,
    /// `[analyzer.mapping.runs]`: runs and QC (required by the configuration check).
    #[serde(default)]
    pub runs: Option<RunMapping>,
}

fn units_for(kind: Kind, target: &str) -> Option<&'static [&'static str]> {
    match kind {
        Kind::Initial | Kind::Confirmation => Some(&["ng/mL"]),
        Kind::Validity => match Measure::from_key(target)? {
            Measure::Creatinine => Some(&["mg/dL"]),
            Measure::SpecificGravity => Some(&[""]),
            Measure::Ph => Some(&["", "pH"]),
            Measure::Nitrite => Some(&["mcg/mL", "ug/mL", "µg/mL"]),
        },
        Kind::Adulterant | Kind::Interference => None,
    }
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

fn is_key(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Mapping {
    /// Checks the mapping against a rule profile. Returns (key, problem) pairs; empty when
    /// the mapping is usable.
    pub fn validate(&self, profile: &Profile) -> Vec<(String, String)> {
        self.check(Some(profile))
    }

    /// Checks everything but whether the targets exist in an edition (see
    /// [`Mapping::target_known`]): for a check against every loaded edition at once.
    pub fn validate_shape(&self) -> Vec<(String, String)> {
        self.check(None)
    }

    /// Does `profile` know this initial or confirmation target (a class, directly or through its
    /// `measured_as`, or an analyte)? Other kinds do not depend on the edition: `true`.
    pub fn target_known(kind: Kind, target: &str, profile: &Profile) -> bool {
        match kind {
            Kind::Initial => profile.class_for_target(target).is_some(),
            Kind::Confirmation => profile.analyte(target).is_some(),
            _ => true,
        }
    }

    fn check(&self, profile: Option<&Profile>) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut add = |key: String, problem: String| problems.push((key, problem));
        if !matches!(self.processing_id.as_str(), "P" | "T" | "D") {
            add(
                "processing_id".into(),
                "must be P, T or D (HL7 table 0103)".into(),
            );
        }
        if let Some(b) = &self.bottle {
            if b.primary.is_empty() || b.split.is_empty() {
                add(
                    "bottle".into(),
                    "primary and split each need at least one value".into(),
                );
            }
            for (i, v) in b.primary.iter().chain(&b.split).enumerate() {
                if v.trim().is_empty() {
                    add(format!("bottle.value[{i}]"), "empty value".into());
                }
            }
            if b.primary
                .iter()
                .any(|p| b.split.iter().any(|s| eq_ignore_case(p.trim(), s.trim())))
            {
                add(
                    "bottle".into(),
                    "a value names both the primary and the split".into(),
                );
            }
        }
        if self.tests.is_empty() {
            add("test".into(), "no test codes mapped".into());
        }
        for (i, t) in self.tests.iter().enumerate() {
            let key = |field: &str| format!("test[{i}].{field}");
            if t.code.is_empty() || t.code.chars().any(|c| c.is_whitespace() || c.is_control()) {
                add(key("code"), "must be non-empty without spaces".into());
            }
            if let Some(j) = self.tests[..i].iter().position(|o| o.code == t.code) {
                add(key("code"), format!("duplicate of test[{j}].code"));
            }
            match t.kind {
                Kind::Initial
                    if profile.is_some_and(|p| !Mapping::target_known(t.kind, &t.target, p)) =>
                {
                    add(
                        key("target"),
                        format!(
                            "no drug class `{}` in profile {}",
                            t.target,
                            profile.map_or("", |p| p.name.as_str())
                        ),
                    )
                }
                Kind::Confirmation
                    if profile.is_some_and(|p| !Mapping::target_known(t.kind, &t.target, p)) =>
                {
                    add(
                        key("target"),
                        format!(
                            "no analyte `{}` in profile {}",
                            t.target,
                            profile.map_or("", |p| p.name.as_str())
                        ),
                    )
                }
                Kind::Validity if Measure::from_key(&t.target).is_none() => add(
                    key("target"),
                    format!(
                        "`{}` is not a validity measure (creatinine, specific_gravity, ph, nitrite)",
                        t.target
                    ),
                ),
                Kind::Adulterant | Kind::Interference if !is_key(&t.target) => add(
                    key("target"),
                    "must be a lower-case key (a-z, 0-9, _)".into(),
                ),
                _ => {}
            }
            if let Some(units) = units_for(t.kind, &t.target)
                && !units.iter().any(|u| eq_ignore_case(u, &t.unit))
            {
                let shown: Vec<String> = units.iter().map(|u| format!("\"{u}\"")).collect();
                add(
                    key("unit"),
                    format!(
                        "unit \"{}\" does not fit {} `{}` (expected {})",
                        t.unit,
                        t.kind.key(),
                        t.target,
                        shown.join(" or ")
                    ),
                );
            }
            match (t.kind.is_qualitative(), t.threshold) {
                (false, Some(_)) => add(
                    key("threshold"),
                    "only adulterant and interference tests take a threshold".into(),
                ),
                (true, Some(th)) if th.is_sign_negative() => {
                    add(key("threshold"), "must not be negative".into())
                }
                _ => {}
            }
            match (t.kind, t.tier) {
                (Kind::Initial, Some(Tier::Confirmatory)) => add(
                    key("tier"),
                    "an initial drug test is not a confirmatory test".into(),
                ),
                (Kind::Confirmation, Some(Tier::Initial)) => add(
                    key("tier"),
                    "a confirmation test is the confirmatory test".into(),
                ),
                _ => {}
            }
        }
        if let Some(r) = &self.runs {
            self.check_runs(r, &mut add);
        }
        problems
    }

    fn check_runs(&self, r: &RunMapping, add: &mut impl FnMut(String, String)) {
        r.check(
            &self.tests,
            |f| {
                (f.segment.as_str() != "OBX")
                    .then(|| "must be a field of the OBX (e.g. OBX-13.1)".to_string())
            },
            false,
            add,
        );
    }

    /// Reads a mapping from TOML text holding an `[analyzer.mapping]` table (the shape of
    /// `tests/data/hl7/mapping-example.toml`). The error names the key, not the file's text.
    pub fn from_analyzer_toml(text: &str) -> Result<Mapping, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            analyzer: Analyzer,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Analyzer {
            mapping: Mapping,
        }
        let de =
            toml::Deserializer::parse(text).map_err(|e| format!("TOML syntax: {}", e.message()))?;
        let file: File = serde_path_to_error::deserialize(de)
            .map_err(|e| format!("{}: {}", e.path(), e.inner().message()))?;
        Ok(file.analyzer.mapping)
    }

    pub fn test(&self, code: &str) -> Option<&TestMapping> {
        self.tests.iter().find(|t| t.code == code)
    }
}

/// Why an ORU could not be used. Names positions, never content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UseError {
    #[error("message type at MSH-9.1 is not ORU")]
    UnsupportedMessageType,
    #[error("trigger event at MSH-9.2 is not R01")]
    UnsupportedEvent,
    #[error("HL7 version at MSH-12 is not supported (2.3 to 2.9 are)")]
    UnsupportedVersion,
    #[error("processing id at MSH-11 is not the one this analyzer is configured for")]
    UnsupportedProcessingId,
    #[error("specimen id at {location} is missing")]
    MissingSpecimenId { location: Location },
    #[error("specimen id at {location} is not 1-64 letters, digits or - _ . /")]
    InvalidSpecimenId { location: Location },
    #[error("specimen id at {location} differs from the first one: one message, one specimen")]
    ConflictingSpecimenIds { location: Location },
    #[error("bottle at {location} is not a configured primary or split value")]
    UnknownBottle { location: Location },
    #[error("message has no OBX segment")]
    NoObservations,
    #[error("test code at {location} is missing")]
    MissingCode { location: Location },
    #[error("test code at {location} is not in this analyzer's mapping")]
    UnmappedCode { location: Location },
    #[error("result status at {location} is missing")]
    MissingStatus { location: Location },
    #[error(
        "result status at {location} is not one custodian can act on (F, C, X; P, R, I, S, N skipped)"
    )]
    UnsupportedStatus { location: Location },
    #[error("set id at {location} is not a number")]
    InvalidSetId { location: Location },
    #[error("value type at {location} does not fit the mapped test")]
    WrongValueType { location: Location },
    #[error("value at {location} is missing")]
    MissingValue { location: Location },
    #[error("value at {location} is not an exact decimal number")]
    NotNumeric { location: Location },
    #[error("value at {location} is negative")]
    NegativeValue { location: Location },
    #[error("value at {location} is neither a number nor a recognised positive/negative word")]
    NotQualitative { location: Location },
    #[error("unit at {location} is not the mapped unit")]
    WrongUnit { location: Location },
    #[error("numeric value at {location} but the mapped test has no threshold")]
    NoThreshold { location: Location },
    #[error("second final result for the same test at {location}")]
    DuplicateResult { location: Location },
    #[error("run id at {location} is missing")]
    MissingRunId { location: Location },
    #[error("run id at {location} is not 1-64 letters, digits or - _ . /")]
    InvalidRunId { location: Location },
    #[error("aliquot at {location} is not 1-64 letters, digits or - _ . /")]
    InvalidAliquot { location: Location },
}

impl UseError {
    /// AR for a message custodian does not take at all (type, event, version, processing id);
    /// AE for one whose content cannot be used.
    pub fn ack_code(&self) -> AckCode {
        match self {
            UseError::UnsupportedMessageType
            | UseError::UnsupportedEvent
            | UseError::UnsupportedVersion
            | UseError::UnsupportedProcessingId => AckCode::AR,
            _ => AckCode::AE,
        }
    }

    /// The table 0357 code for ERR-3.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            UseError::UnsupportedMessageType => ErrorCode::UnsupportedMessageType,
            UseError::UnsupportedEvent => ErrorCode::UnsupportedEventCode,
            UseError::UnsupportedVersion => ErrorCode::UnsupportedVersionId,
            UseError::UnsupportedProcessingId => ErrorCode::UnsupportedProcessingId,
            UseError::NoObservations => ErrorCode::SegmentSequenceError,
            UseError::MissingSpecimenId { .. }
            | UseError::MissingRunId { .. }
            | UseError::MissingCode { .. }
            | UseError::MissingStatus { .. }
            | UseError::MissingValue { .. } => ErrorCode::RequiredFieldMissing,
            UseError::InvalidSpecimenId { .. }
            | UseError::InvalidRunId { .. }
            | UseError::InvalidAliquot { .. }
            | UseError::InvalidSetId { .. }
            | UseError::WrongValueType { .. }
            | UseError::NotNumeric { .. }
            | UseError::NegativeValue { .. }
            | UseError::NotQualitative { .. } => ErrorCode::DataTypeError,
            UseError::UnknownBottle { .. }
            | UseError::UnmappedCode { .. }
            | UseError::UnsupportedStatus { .. }
            | UseError::WrongUnit { .. } => ErrorCode::TableValueNotFound,
            UseError::ConflictingSpecimenIds { .. } | UseError::DuplicateResult { .. } => {
                ErrorCode::DuplicateKeyIdentifier
            }
            UseError::NoThreshold { .. } => ErrorCode::ApplicationInternalError,
        }
    }

    pub fn location(&self) -> Option<Location> {
        match *self {
            UseError::UnsupportedMessageType => Some(Location::msh(9).at_component(1)),
            UseError::UnsupportedEvent => Some(Location::msh(9).at_component(2)),
            UseError::UnsupportedVersion => Some(Location::msh(12)),
            UseError::UnsupportedProcessingId => Some(Location::msh(11)),
            UseError::NoObservations => None,
            UseError::MissingSpecimenId { location }
            | UseError::InvalidSpecimenId { location }
            | UseError::ConflictingSpecimenIds { location }
            | UseError::UnknownBottle { location }
            | UseError::MissingCode { location }
            | UseError::UnmappedCode { location }
            | UseError::MissingStatus { location }
            | UseError::UnsupportedStatus { location }
            | UseError::InvalidSetId { location }
            | UseError::WrongValueType { location }
            | UseError::MissingValue { location }
            | UseError::NotNumeric { location }
            | UseError::NegativeValue { location }
            | UseError::NotQualitative { location }
            | UseError::WrongUnit { location }
            | UseError::NoThreshold { location }
            | UseError::DuplicateResult { location }
            | UseError::MissingRunId { location }
            | UseError::InvalidRunId { location }
            | UseError::InvalidAliquot { location } => Some(location),
        }
    }
}

impl From<&UseError> for ErrorDetail {
    fn from(e: &UseError) -> ErrorDetail {
        ErrorDetail::from_display(e.error_code(), e.location(), e)
    }
}

/// Which bottle the results are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bottle {
    /// Bottle A.
    Primary,
    /// Bottle B.
    Split,
}

/// OBX-11 of a kept result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultStatus {
    /// `F`
    Final,
    /// `C`: a correction of a result sent before.
    Corrected,
    /// `X`: the result cannot be obtained.
    CannotObtain,
}

/// The value of a kept result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultValue {
    /// Initial, confirmation and validity results: the exact decimal sent.
    Number(Decimal),
    /// Adulterant and interference results; `measured` holds the number when one was sent.
    Identified {
        identified: bool,
        measured: Option<Decimal>,
    },
    /// OBX-11 `X`.
    NotObtained,
}

/// One kept OBX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub kind: Kind,
    pub target: String,
    pub value: ResultValue,
    /// OBX-6.1 as sent.
    pub unit: String,
    /// OBX-1.
    pub set_id: Option<u32>,
    /// Where the OBX is (segment index and OBX occurrence).
    pub location: Location,
    pub status: ResultStatus,
    /// OBX-14.1 as sent, when present.
    pub observed_at: Option<String>,
    /// OBX-3.1: the assay's test code.
    pub code: String,
    /// The mapping's tier for the test, if it names one.
    pub tier: Option<Tier>,
    /// The instrument's acceptability flag, when the mapping says where it is.
    pub acceptable: Option<bool>,
}

/// What an ORU^R01 says about one specimen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OruResults {
    pub specimen_id: String,
    pub bottle: Bottle,
    pub results: Vec<Observation>,
    /// OBX skipped because they were preliminary (P, R, I, S).
    pub preliminary: usize,
    /// OBX skipped because they were not asked (N).
    pub not_asked: usize,
    /// The run id, when the mapping says where it is.
    pub run_id: Option<String>,
    /// A control or calibrator (by the role field, or by a QC sample prefix); `None`: a
    /// specimen.
    pub role: Option<SampleRole>,
    /// The aliquot, when the mapping says where it is and the message names one.
    pub aliquot: String,
}

impl OruResults {
    /// An interference check the mapping names identified something. A result that could not
    /// be obtained (X) is not an interference: the test was not done.
    pub fn interference(&self) -> bool {
        self.results.iter().any(|o| match o.value {
            ResultValue::Identified { identified, .. } => {
                identified && o.kind == Kind::Interference
            }
            ResultValue::NotObtained | ResultValue::Number(_) => false,
        })
    }

    /// Targets of adulterant tests that identified their substance.
    pub fn adulterants(&self) -> Vec<&str> {
        self.results
            .iter()
            .filter(|o| {
                o.kind == Kind::Adulterant
                    && matches!(
                        o.value,
                        ResultValue::Identified {
                            identified: true,
                            ..
                        }
                    )
            })
            .map(|o| o.target.as_str())
            .collect()
    }

    /// Numeric results of one kind, as (target, value).
    pub fn numbers(&self, kind: Kind) -> impl Iterator<Item = (&str, Decimal)> {
        self.results.iter().filter_map(move |o| match o.value {
            ResultValue::Number(v) if o.kind == kind => Some((o.target.as_str(), v)),
            _ => None,
        })
    }
}

const MAX_SPECIMEN_ID: usize = 64;

fn valid_specimen_id(s: &str) -> bool {
    (1..=MAX_SPECIMEN_ID).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

fn supported_version(v: &str) -> bool {
    let mut parts = v.split('.');
    let major = parts.next();
    let minor = parts.next().and_then(|m| m.parse::<u8>().ok());
    let rest_ok =
        parts.all(|p| !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()));
    major == Some("2") && matches!(minor, Some(3..=9)) && rest_ok
}

fn path_location(p: &Path, seg: Option<&Segment>) -> Location {
    let base = match seg {
        Some(s) => s.location(),
        None => Location::segment(0, Some(p.segment), p.occurrence),
    };
    Location {
        repetition: p.repetition,
        ..base.at_field(p.field).at_component(p.component)
    }
}

fn value_at<'a>(seg: &'a Segment, p: &Path) -> &'a str {
    seg.field(p.field)
        .and_then(|f| f.repetition(p.repetition))
        .and_then(|r| r.component(p.component))
        .and_then(|c| c.subcomponent(p.subcomponent))
        .unwrap_or("")
}

fn specimen_id(msg: &Message, p: &Path) -> Result<String, UseError> {
    let id = p.segment.as_str();
    let Some(seg) = msg.segment_n(id, p.occurrence) else {
        return Err(UseError::MissingSpecimenId {
            location: path_location(p, None),
        });
    };
    let location = path_location(p, Some(seg));
    let value = value_at(seg, p).trim();
    if value.is_empty() {
        return Err(UseError::MissingSpecimenId { location });
    }
    if !valid_specimen_id(value) {
        return Err(UseError::InvalidSpecimenId { location });
    }
    if p.occurrence == 1 {
        for other in msg.segments_named(id).skip(1) {
            if value_at(other, p).trim() != value {
                return Err(UseError::ConflictingSpecimenIds {
                    location: path_location(p, Some(other)),
                });
            }
        }
    }
    Ok(value.to_owned())
}

fn bottle(msg: &Message, b: &BottleMapping) -> Result<Bottle, UseError> {
    let seg = msg.segment_n(b.field.segment.as_str(), b.field.occurrence);
    let location = path_location(&b.field, seg);
    let value = seg.map(|s| value_at(s, &b.field)).unwrap_or("").trim();
    let is = |list: &[String]| list.iter().any(|v| eq_ignore_case(v.trim(), value));
    if value.is_empty() {
        b.default.ok_or(UseError::UnknownBottle { location })
    } else if is(&b.primary) {
        Ok(Bottle::Primary)
    } else if is(&b.split) {
        Ok(Bottle::Split)
    } else {
        Err(UseError::UnknownBottle { location })
    }
}

const IDENTIFIED: [&str; 5] = ["POS", "POSITIVE", "DETECTED", "IDENTIFIED", "PRESENT"];
const NOT_IDENTIFIED: [&str; 7] = [
    "NEG",
    "NEGATIVE",
    "NOT DETECTED",
    "ND",
    "NONE DETECTED",
    "NOT IDENTIFIED",
    "ABSENT",
];

/// The exact number in OBX-5, per OBX-2.
fn number(obx: &Segment, here: Location) -> Result<Decimal, UseError> {
    let value_loc = here.at_field(5).at_component(1);
    let field = obx
        .field(5)
        .filter(|f| !f.is_empty())
        .ok_or(UseError::MissingValue {
            location: here.at_field(5),
        })?;
    if field.repetitions().count() > 1 {
        return Err(UseError::NotNumeric {
            location: here.at_field(5),
        });
    }
    let text = match obx.text(2) {
        "NM" | "ST" | "" => {
            let rep = field.repetition(1);
            let single = rep.is_some_and(|r| {
                r.components().count() == 1
                    && r.components().all(|c| c.subcomponents().count() == 1)
            });
            if !single {
                return Err(UseError::NotNumeric {
                    location: value_loc,
                });
            }
            field.text()
        }
        "SN" => {
            let comparator = field.component_text(1);
            let tail_empty = (3..=4).all(|c| field.component_text(c).is_empty())
                && field
                    .repetition(1)
                    .is_some_and(|r| r.components().count() <= 4);
            if !matches!(comparator, "" | "=") || !tail_empty {
                return Err(UseError::NotNumeric {
                    location: value_loc,
                });
            }
            field.component_text(2)
        }
        _ => {
            return Err(UseError::WrongValueType {
                location: here.at_field(2),
            });
        }
    };
    if text.trim().is_empty() {
        return Err(UseError::MissingValue {
            location: value_loc,
        });
    }
    let v = measure::parse(text).map_err(|_| UseError::NotNumeric {
        location: value_loc,
    })?;
    if v.is_sign_negative() && !v.is_zero() {
        return Err(UseError::NegativeValue {
            location: value_loc,
        });
    }
    Ok(v)
}

fn check_unit(obx: &Segment, here: Location, t: &TestMapping) -> Result<(), UseError> {
    if eq_ignore_case(obx.component_text(6, 1).trim(), t.unit.trim()) {
        Ok(())
    } else {
        Err(UseError::WrongUnit {
            location: here.at_field(6).at_component(1),
        })
    }
}

fn qualitative(obx: &Segment, here: Location, t: &TestMapping) -> Result<ResultValue, UseError> {
    let value_loc = here.at_field(5).at_component(1);
    let field = obx
        .field(5)
        .filter(|f| !f.is_empty())
        .ok_or(UseError::MissingValue {
            location: here.at_field(5),
        })?;
    if field.repetitions().count() > 1 {
        return Err(UseError::NotQualitative {
            location: here.at_field(5),
        });
    }
    // A coded value (CE/CWE) carries its code in component 1 as well.
    let word = field.text().trim().to_ascii_uppercase();
    if IDENTIFIED.contains(&word.as_str()) || NOT_IDENTIFIED.contains(&word.as_str()) {
        let unit = obx.component_text(6, 1).trim();
        if !unit.is_empty() {
            check_unit(obx, here, t)?;
        }
        return Ok(ResultValue::Identified {
            identified: IDENTIFIED.contains(&word.as_str()),
            measured: None,
        });
    }
    match measure::parse(&word) {
        Ok(v) => {
            if v.is_sign_negative() && !v.is_zero() {
                return Err(UseError::NegativeValue {
                    location: value_loc,
                });
            }
            check_unit(obx, here, t)?;
            let threshold = t.threshold.ok_or(UseError::NoThreshold {
                location: value_loc,
            })?;
            Ok(ResultValue::Identified {
                identified: v >= threshold,
                measured: Some(v),
            })
        }
        Err(_) => Err(UseError::NotQualitative {
            location: value_loc,
        }),
    }
}

/// Reads the results of an ORU^R01 with an analyzer's mapping. Pure.
pub fn extract(msg: &Message, mapping: &Mapping) -> Result<OruResults, UseError> {
    let h = msg.header();
    if h.message_type != "ORU" {
        return Err(UseError::UnsupportedMessageType);
    }
    if h.trigger_event != "R01" {
        return Err(UseError::UnsupportedEvent);
    }
    if !supported_version(&h.version) {
        return Err(UseError::UnsupportedVersion);
    }
    if h.processing_id != mapping.processing_id {
        return Err(UseError::UnsupportedProcessingId);
    }
    let specimen_id = specimen_id(msg, &mapping.specimen_id)?;
    let runs = mapping.runs.as_ref();
    let role = match runs {
        Some(r) => role(msg, r, &specimen_id),
        None => None,
    };
    // A control or calibrator is no bottle of a donor's specimen.
    let bottle = match (&mapping.bottle, role) {
        (_, Some(_)) | (None, None) => Bottle::Primary,
        (Some(b), None) => bottle(msg, b)?,
    };
    let run_id = match runs.and_then(|r| r.run_id.as_ref()) {
        Some(p) => Some(
            identifier_at(msg, p, true)?.ok_or_else(|| UseError::MissingRunId {
                location: path_location(p, msg.segment_n(p.segment.as_str(), p.occurrence)),
            })?,
        ),
        None => None,
    };
    let aliquot = match runs.and_then(|r| r.aliquot.as_ref()) {
        Some(p) => identifier_at(msg, p, false)?.unwrap_or_default(),
        None => String::new(),
    };

    let mut results: Vec<Observation> = Vec::new();
    let mut preliminary = 0;
    let mut not_asked = 0;
    let mut any_obx = false;
    for obx in msg.segments_named("OBX") {
        any_obx = true;
        let here = obx.location();
        let status = match obx.text(11).trim() {
            "F" => ResultStatus::Final,
            "C" => ResultStatus::Corrected,
            "X" => ResultStatus::CannotObtain,
            "P" | "R" | "I" | "S" => {
                preliminary += 1;
                continue;
            }
            "N" => {
                not_asked += 1;
                continue;
            }
            "" => {
                return Err(UseError::MissingStatus {
                    location: here.at_field(11),
                });
            }
            _ => {
                return Err(UseError::UnsupportedStatus {
                    location: here.at_field(11),
                });
            }
        };
        let set_id = match obx.text(1).trim() {
            "" => None,
            s => Some(s.parse::<u32>().map_err(|_| UseError::InvalidSetId {
                location: here.at_field(1),
            })?),
        };
        let code_loc = here.at_field(3).at_component(1);
        let code = obx.component_text(3, 1).trim();
        if code.is_empty() {
            return Err(UseError::MissingCode { location: code_loc });
        }
        let t = mapping
            .test(code)
            .ok_or(UseError::UnmappedCode { location: code_loc })?;
        let value = match (status, t.kind.is_qualitative()) {
            (ResultStatus::CannotObtain, _) => ResultValue::NotObtained,
            (_, true) => qualitative(obx, here, t)?,
            (_, false) => {
                let v = number(obx, here)?;
                check_unit(obx, here, t)?;
                ResultValue::Number(v)
            }
        };
        // One result per test and tier: the initial and the confirmatory test of a measure may
        // travel together.
        if results
            .iter()
            .any(|o| o.kind == t.kind && o.target == t.target && o.tier == t.tier)
        {
            return Err(UseError::DuplicateResult { location: here });
        }
        let observed_at = Some(obx.component_text(14, 1).trim())
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        // The acceptability flag is judged per confirmation result (ion ratios, retention time,
        // internal standard); other tests carry none.
        let acceptable = runs
            .and_then(|r| r.acceptable.as_ref())
            .filter(|_| t.kind == Kind::Confirmation)
            .map(|f| {
                let v = value_at(obx, &f.field).trim();
                f.acceptable.iter().any(|a| eq_ignore_case(a.trim(), v))
            });
        results.push(Observation {
            kind: t.kind,
            target: t.target.clone(),
            value,
            unit: obx.component_text(6, 1).trim().to_owned(),
            set_id,
            location: here,
            status,
            observed_at,
            code: t.code.clone(),
            tier: t.tier,
            acceptable,
        });
    }
    if !any_obx {
        return Err(UseError::NoObservations);
    }
    Ok(OruResults {
        specimen_id,
        bottle,
        results,
        preliminary,
        not_asked,
        run_id,
        role,
        aliquot,
    })
}

/// A control or calibrator by the role field the mapping names, or (for an instrument that
/// sends no role) by a QC sample prefix; `None`: a specimen.
fn role(msg: &Message, r: &RunMapping, sample_id: &str) -> Option<SampleRole> {
    match &r.role {
        Some(m) => {
            let seg = msg.segment_n(m.field.segment.as_str(), m.field.occurrence)?;
            let v = value_at(seg, &m.field).trim();
            let is = |list: &[String]| list.iter().any(|x| eq_ignore_case(x.trim(), v));
            if v.is_empty() {
                None
            } else if is(&m.control) {
                Some(SampleRole::Control)
            } else if is(&m.calibrator) {
                Some(SampleRole::Calibrator)
            } else {
                None
            }
        }
        None => r
            .qc_sample_prefixes
            .iter()
            .any(|p| !p.is_empty() && sample_id.starts_with(p.as_str()))
            .then_some(SampleRole::Control),
    }
}

/// An identifier (run id, aliquot) at `p`: `None` when empty; refused when malformed.
fn identifier_at(msg: &Message, p: &Path, run: bool) -> Result<Option<String>, UseError> {
    let seg = msg.segment_n(p.segment.as_str(), p.occurrence);
    let location = path_location(p, seg);
    let v = seg.map(|s| value_at(s, p)).unwrap_or("").trim();
    if v.is_empty() {
        return Ok(None);
    }
    if !valid_specimen_id(v) {
        return Err(if run {
            UseError::InvalidRunId { location }
        } else {
            UseError::InvalidAliquot { location }
        });
    }
    Ok(Some(v.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::hl7::ack::build_ack;
    use crate::codec::hl7::message::parse;
    use std::str::FromStr;

    fn data(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/data/hl7/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn example() -> Mapping {
        let text = String::from_utf8(data("mapping-example.toml")).unwrap();
        Mapping::from_analyzer_toml(&text).unwrap()
    }

    fn profile() -> Profile {
        let text = include_str!("../../../config/profiles/part40-2023.toml");
        Profile::parse(text, Some("part40-2023")).unwrap()
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    const MSH: &str = "MSH|^~\\&|A|B|C|D|1||ORU^R01|CTL|P|2.5.1";
    const OBR: &str = "OBR|1||0012345^LAB|||||||||||||||||A";

    fn run(extra: &[&str]) -> Result<OruResults, UseError> {
        let mut segs = vec![MSH, OBR];
        segs.extend_from_slice(extra);
        let text = segs.join("\r") + "\r";
        let msg = parse(text.as_bytes()).unwrap();
        extract(&msg, &example())
    }

    fn err_path(r: Result<OruResults, UseError>) -> (UseError, String) {
        let e = r.unwrap_err();
        (e, e.location().map(|l| l.path()).unwrap_or_default())
    }

    #[test]
    fn example_mapping_is_valid_for_the_current_profile() {
        let problems = example().validate(&profile());
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn screen_fixture() {
        let msg = parse(&data("oru-screen.hl7")).unwrap();
        let r = extract(&msg, &example()).unwrap();
        assert_eq!(r.specimen_id, "0012345");
        assert_eq!(r.bottle, Bottle::Primary);
        assert_eq!(r.results.len(), 9);
        assert_eq!((r.preliminary, r.not_asked), (0, 0));
        let initial: Vec<(&str, Decimal)> = r.numbers(Kind::Initial).collect();
        assert_eq!(initial[0], ("marijuana", d("12")));
        assert_eq!(initial[3], ("6am", d("0.8")));
        assert_eq!(initial[7], ("amphetamines", d("612")));
        let thc = &r.results[0];
        assert_eq!(thc.unit, "ng/mL");
        assert_eq!(thc.set_id, Some(1));
        assert_eq!(thc.status, ResultStatus::Final);
        assert_eq!(thc.observed_at.as_deref(), Some("20240315100100"));
        assert_eq!(thc.location.path(), "OBX");
        assert_eq!(r.results[8].location.path(), "OBX(9)");
        assert!(!r.interference());
        assert!(r.adulterants().is_empty());
    }

    #[test]
    fn validity_fixture() {
        let msg = parse(&data("oru-validity.hl7")).unwrap();
        let r = extract(&msg, &example()).unwrap();
        assert_eq!(r.preliminary, 1, "the P creatinine is skipped");
        let v: Vec<(&str, Decimal)> = r.numbers(Kind::Validity).collect();
        assert_eq!(
            v,
            [
                ("creatinine", d("85.2")),
                ("specific_gravity", d("1.0182")),
                ("ph", d("6.4")),
                ("nitrite", d("35")),
            ]
        );
        let glut = r
            .results
            .iter()
            .find(|o| o.target == "glutaraldehyde")
            .unwrap();
        assert_eq!(
            glut.value,
            ResultValue::Identified {
                identified: false,
                measured: None
            }
        );
        let cr = r
            .results
            .iter()
            .find(|o| o.target == "chromium_vi")
            .unwrap();
        assert_eq!(
            cr.value,
            ResultValue::Identified {
                identified: false,
                measured: Some(d("0"))
            }
        );
        assert!(!r.interference());
        assert!(r.adulterants().is_empty());
    }

    #[test]
    fn confirmation_fixture_split_bottle_sn_corrected_and_x() {
        let msg = parse(&data("oru-confirmation.hl7")).unwrap();
        let r = extract(&msg, &example()).unwrap();
        assert_eq!(r.bottle, Bottle::Split);
        let c: Vec<(&str, Decimal)> = r.numbers(Kind::Confirmation).collect();
        assert_eq!(
            c,
            [
                ("amphetamine", d("388")),
                ("methamphetamine", d("1204")),
                ("mdma", d("0"))
            ]
        );
        assert_eq!(r.results[2].status, ResultStatus::Corrected);
        let thca = &r.results[3];
        assert_eq!(
            (thca.status, thca.value),
            (ResultStatus::CannotObtain, ResultValue::NotObtained)
        );
        assert!(
            !r.interference(),
            "a result that cannot be obtained is a test not done, never an interference"
        );
    }

    #[test]
    fn unmapped_code_fixture_names_position_not_value() {
        let msg = parse(&data("oru-unmapped-code.hl7")).unwrap();
        let e = extract(&msg, &example()).unwrap_err();
        assert_eq!(e.location().unwrap().path(), "OBX(4)-3.1");
        assert_eq!(e.ack_code(), AckCode::AE);
        assert_eq!(e.error_code(), ErrorCode::TableValueNotFound);
        assert!(!e.to_string().contains("BUP5"), "{e}");
        let ack = build_ack(
            msg.header(),
            e.ack_code(),
            Some(&ErrorDetail::from(&e)),
            "C",
            "1",
        );
        let ack = parse(&ack).unwrap();
        assert_eq!(ack.get("ERR-2.1"), Some("OBX"));
        assert_eq!(ack.get("ERR-2.2"), Some("4"));
        assert_eq!(ack.get("ERR-2.3"), Some("3"));
        assert_eq!(ack.get("MSA-2"), Some("IA20240315-0001"));
        assert!(!String::from_utf8_lossy(&ack_bytes_of(&ack)).contains("BUP5"));
    }

    fn ack_bytes_of(m: &Message) -> Vec<u8> {
        m.segments()
            .iter()
            .flat_map(|s| s.fields().map(|f| f.text().to_owned()))
            .collect::<Vec<_>>()
            .join("|")
            .into_bytes()
    }

    #[test]
    fn not_oru_r01_is_ar() {
        for (msh, e) in [
            (
                "MSH|^~\\&|A|B|C|D|1||ADT^A01|C|P|2.5.1",
                UseError::UnsupportedMessageType,
            ),
            (
                "MSH|^~\\&|A|B|C|D|1||ORU^R30|C|P|2.5.1",
                UseError::UnsupportedEvent,
            ),
            (
                "MSH|^~\\&|A|B|C|D|1||ORU|C|P|2.5.1",
                UseError::UnsupportedEvent,
            ),
            (
                "MSH|^~\\&|A|B|C|D|1||ORU^R01|C|P|2.2",
                UseError::UnsupportedVersion,
            ),
            (
                "MSH|^~\\&|A|B|C|D|1||ORU^R01|C|P|3.0",
                UseError::UnsupportedVersion,
            ),
            (
                "MSH|^~\\&|A|B|C|D|1||ORU^R01|C|P|2.x",
                UseError::UnsupportedVersion,
            ),
            (
                "MSH|^~\\&|A|B|C|D|1||ORU^R01|C|T|2.5.1",
                UseError::UnsupportedProcessingId,
            ),
        ] {
            let text = format!("{msh}\r{OBR}\rOBX|1|NM|THC50||1|ng/mL|||||F\r");
            let got = extract(&parse(text.as_bytes()).unwrap(), &example()).unwrap_err();
            assert_eq!(got, e, "{msh}");
            assert_eq!(got.ack_code(), AckCode::AR);
        }
        for v in [
            "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7.1", "2.8.2", "2.9",
        ] {
            let text = format!(
                "MSH|^~\\&|A|B|C|D|1||ORU^R01|C|P|{v}\r{OBR}\rOBX|1|NM|THC50||1|ng/mL|||||F\r"
            );
            assert!(
                extract(&parse(text.as_bytes()).unwrap(), &example()).is_ok(),
                "{v}"
            );
        }
        let mut m = example();
        m.processing_id = "T".into();
        let text = format!(
            "MSH|^~\\&|A|B|C|D|1||ORU^R01|C|T|2.5.1\r{OBR}\rOBX|1|NM|THC50||1|ng/mL|||||F\r"
        );
        assert!(extract(&parse(text.as_bytes()).unwrap(), &m).is_ok());
    }

    #[test]
    fn specimen_id_rules() {
        let text = |obr: &str| format!("{MSH}\r{obr}\rOBX|1|NM|THC50||1|ng/mL|||||F\r");
        let go = |obr: &str| extract(&parse(text(obr).as_bytes()).unwrap(), &example());
        let (e, at) = err_path(go("OBR|1||^LAB|||||||||||||||||A"));
        assert_eq!((e.ack_code(), at.as_str()), (AckCode::AE, "OBR-3.1"));
        assert!(matches!(e, UseError::MissingSpecimenId { .. }));
        let (e, _) = err_path(go("OBR|1||00 12^LAB"));
        assert!(matches!(e, UseError::InvalidSpecimenId { .. }));
        // Length limit: 64 accepted, 65 refused.
        let ok = format!("OBR|1||{}|||||||||||||||||A", "9".repeat(64));
        assert_eq!(go(&ok).unwrap().specimen_id.len(), 64);
        let long = format!("OBR|1||{}|||||||||||||||||A", "9".repeat(65));
        assert!(matches!(go(&long), Err(UseError::InvalidSpecimenId { .. })));
        // No OBR at all.
        let msg = parse(format!("{MSH}\rOBX|1|NM|THC50||1|ng/mL|||||F\r").as_bytes()).unwrap();
        let (e, at) = err_path(extract(&msg, &example()));
        assert!(matches!(e, UseError::MissingSpecimenId { .. }));
        assert_eq!(at, "OBR-3.1");
        // A second OBR with another specimen id.
        let two =
            format!("{OBR}\rOBX|1|NM|THC50||1|ng/mL|||||F\rOBR|2||0099999^LAB|||||||||||||||||A");
        let (e, at) = err_path(go(&two));
        assert!(matches!(e, UseError::ConflictingSpecimenIds { .. }));
        assert_eq!(at, "OBR(2)-3.1");
        // Same id again is fine.
        let same = format!("{OBR}\rOBR|2||0012345^LAB|||||||||||||||||A");
        assert_eq!(go(&same).unwrap().specimen_id, "0012345");
        // SPM-2.1 as the location.
        let mut m = example();
        m.specimen_id = "SPM-2.1".parse().unwrap();
        let t = format!("{MSH}\r{OBR}\rSPM|1|0054321\rOBX|1|NM|THC50||1|ng/mL|||||F\r");
        assert_eq!(
            extract(&parse(t.as_bytes()).unwrap(), &m)
                .unwrap()
                .specimen_id,
            "0054321"
        );
    }

    #[test]
    fn bottle_rules() {
        let go = |f20: &str| {
            let obr = format!("OBR|1||0012345^LAB|||||||||||||||||{f20}");
            let text = format!("{MSH}\r{obr}\rOBX|1|NM|THC50||1|ng/mL|||||F\r");
            extract(&parse(text.as_bytes()).unwrap(), &example())
        };
        assert_eq!(go("A").unwrap().bottle, Bottle::Primary);
        assert_eq!(go("a").unwrap().bottle, Bottle::Primary);
        assert_eq!(go("B").unwrap().bottle, Bottle::Split);
        assert_eq!(go("").unwrap().bottle, Bottle::Primary, "mapping default");
        let (e, at) = err_path(go("C"));
        assert!(matches!(e, UseError::UnknownBottle { .. }));
        assert_eq!(at, "OBR-20.1");
        let mut m = example();
        if let Some(b) = m.bottle.as_mut() {
            b.default = None;
        }
        let text = format!("{MSH}\rOBR|1||0012345\rOBX|1|NM|THC50||1|ng/mL|||||F\r");
        assert!(matches!(
            extract(&parse(text.as_bytes()).unwrap(), &m),
            Err(UseError::UnknownBottle { .. })
        ));
        m.bottle = None;
        assert_eq!(
            extract(&parse(text.as_bytes()).unwrap(), &m)
                .unwrap()
                .bottle,
            Bottle::Primary
        );
    }

    #[test]
    fn statuses() {
        let r = run(&[
            "OBX|1|NM|THC50||1|ng/mL|||||P",
            "OBX|2|NM|THC50||1|ng/mL|||||R",
            "OBX|3|NM|THC50||1|ng/mL|||||I",
            "OBX|4|NM|THC50||1|ng/mL|||||S",
            "OBX|5|NM|COC150||1|ng/mL|||||N",
            "OBX|6|NM|THC50||2|ng/mL|||||F",
        ])
        .unwrap();
        assert_eq!((r.preliminary, r.not_asked, r.results.len()), (4, 1, 1));
        let only_preliminary = run(&["OBX|1|NM|THC50||1|ng/mL|||||P"]).unwrap();
        assert!(only_preliminary.results.is_empty());
        for s in ["D", "W", "U", "Q", "f"] {
            let line = format!("OBX|1|NM|THC50||1|ng/mL|||||{s}");
            let (e, at) = err_path(run(&[&line]));
            assert!(matches!(e, UseError::UnsupportedStatus { .. }), "{s}");
            assert_eq!(at, "OBX-11");
        }
        let (e, at) = err_path(run(&["OBX|1|NM|THC50||1|ng/mL"]));
        assert!(matches!(e, UseError::MissingStatus { .. }));
        assert_eq!(at, "OBX-11");
        // X: kept as not obtained even with an empty value and no unit.
        let r = run(&["OBX|1|NM|CREA||||||||X"]).unwrap();
        assert_eq!(r.results[0].value, ResultValue::NotObtained);
        assert!(!r.interference(), "not done, not an interference");
    }

    #[test]
    fn numeric_values() {
        let one = |line: &str| run(&[line]).map(|r| r.results[0].value);
        assert_eq!(
            one("OBX|1|NM|THC50||49.99|ng/mL|||||F"),
            Ok(ResultValue::Number(d("49.99")))
        );
        assert_eq!(
            one("OBX|1|ST|THC50|| 50 |ng/mL|||||F"),
            Ok(ResultValue::Number(d("50")))
        );
        assert_eq!(
            one("OBX|1||THC50||50.010|ng/mL|||||F"),
            Ok(ResultValue::Number(d("50.01")))
        );
        assert_eq!(
            one("OBX|1|SN|THC50||^51|ng/mL|||||F"),
            Ok(ResultValue::Number(d("51")))
        );
        assert_eq!(
            one("OBX|1|SN|THC50||=^51|ng/mL|||||F"),
            Ok(ResultValue::Number(d("51")))
        );
        assert_eq!(
            one("OBX|1|NM|THC50||0|ng/mL|||||F"),
            Ok(ResultValue::Number(d("0")))
        );
        assert_eq!(
            one("OBX|1|NM|THC50||-0|ng/mL|||||F"),
            Ok(ResultValue::Number(d("0")))
        );
        let bad = [
            ("OBX|1|NM|THC50||<10|ng/mL|||||F", "OBX-5.1", "NotNumeric"),
            ("OBX|1|NM|THC50||POS|ng/mL|||||F", "OBX-5.1", "NotNumeric"),
            ("OBX|1|NM|THC50||1^2|ng/mL|||||F", "OBX-5.1", "NotNumeric"),
            ("OBX|1|NM|THC50||1&2|ng/mL|||||F", "OBX-5.1", "NotNumeric"),
            ("OBX|1|NM|THC50||1~2|ng/mL|||||F", "OBX-5", "NotNumeric"),
            ("OBX|1|SN|THC50||<^10|ng/mL|||||F", "OBX-5.1", "NotNumeric"),
            (
                "OBX|1|SN|THC50||^10^-^20|ng/mL|||||F",
                "OBX-5.1",
                "NotNumeric",
            ),
            ("OBX|1|NM|THC50||-1|ng/mL|||||F", "OBX-5.1", "NegativeValue"),
            ("OBX|1|NM|THC50|||ng/mL|||||F", "OBX-5", "MissingValue"),
            ("OBX|1|SN|THC50||=^|ng/mL|||||F", "OBX-5.1", "MissingValue"),
            ("OBX|1|CWE|THC50||1|ng/mL|||||F", "OBX-2", "WrongValueType"),
            ("OBX|1|NM|THC50||1|ug/L|||||F", "OBX-6.1", "WrongUnit"),
            ("OBX|1|NM|THC50||1||||||F", "OBX-6.1", "WrongUnit"),
            ("OBX|X|NM|THC50||1|ng/mL|||||F", "OBX-1", "InvalidSetId"),
            ("OBX|1|NM|||1|ng/mL|||||F", "OBX-3.1", "MissingCode"),
        ];
        for (line, at, variant) in bad {
            let (e, got_at) = err_path(run(&[line]));
            assert_eq!(got_at, at, "{line}");
            assert!(format!("{e:?}").starts_with(variant), "{line}: {e:?}");
            assert_eq!(e.ack_code(), AckCode::AE);
        }
        // Unit comparison ignores case only.
        assert!(run(&["OBX|1|NM|THC50||1|NG/ML|||||F"]).is_ok());
        assert!(
            run(&["OBX|1|NM|PH||7|||||||F"]).is_err(),
            "mapping wants pH"
        );
        assert!(run(&["OBX|1|NM|PH||7|PH|||||F"]).is_ok());
        assert!(run(&["OBX|1|NM|SG||1.0200||||||F"]).is_ok());
    }

    #[test]
    fn adulterant_and_interference_values() {
        let one = |line: &str| {
            run(&[line]).map(|r| (r.results[0].value, r.adulterants().len(), r.interference()))
        };
        let id = |identified, measured| ResultValue::Identified {
            identified,
            measured,
        };
        for w in [
            "POS",
            "pos",
            "Positive",
            "DETECTED",
            "identified",
            "PRESENT",
        ] {
            let line = format!("OBX|1|ST|GLUT||{w}||||||F");
            assert_eq!(one(&line), Ok((id(true, None), 1, false)), "{w}");
        }
        for w in [
            "NEG",
            "negative",
            "NOT DETECTED",
            "ND",
            "None Detected",
            "NOT IDENTIFIED",
            "ABSENT",
        ] {
            let line = format!("OBX|1|ST|GLUT||{w}||||||F");
            assert_eq!(one(&line), Ok((id(false, None), 0, false)), "{w}");
        }
        assert_eq!(
            one("OBX|1|CWE|GLUT||POS^Detected^L||||||F"),
            Ok((id(true, None), 1, false))
        );
        // Threshold 50 mcg/mL: below, at, above.
        assert_eq!(
            one("OBX|1|NM|CRVI||49.9|mcg/mL|||||F"),
            Ok((id(false, Some(d("49.9"))), 0, false))
        );
        assert_eq!(
            one("OBX|1|NM|CRVI||50|mcg/mL|||||F"),
            Ok((id(true, Some(d("50"))), 1, false))
        );
        assert_eq!(
            one("OBX|1|NM|CRVI||50.1|mcg/mL|||||F"),
            Ok((id(true, Some(d("50.1"))), 1, false))
        );
        assert!(matches!(
            run(&["OBX|1|NM|CRVI||60|ng/mL|||||F"]),
            Err(UseError::WrongUnit { .. })
        ));
        assert!(matches!(
            run(&["OBX|1|NM|CRVI||-1|mcg/mL|||||F"]),
            Err(UseError::NegativeValue { .. })
        ));
        // A qualitative word with no unit is fine even when the mapping has one.
        assert_eq!(
            one("OBX|1|ST|CRVI||NEG||||||F"),
            Ok((id(false, None), 0, false))
        );
        // A number without a configured threshold.
        assert!(matches!(
            run(&["OBX|1|NM|GLUT||5||||||F"]),
            Err(UseError::NoThreshold { .. })
        ));
        assert!(matches!(
            run(&["OBX|1|ST|GLUT||maybe||||||F"]),
            Err(UseError::NotQualitative { .. })
        ));
        assert!(matches!(
            run(&["OBX|1|ST|GLUT||POS~NEG||||||F"]),
            Err(UseError::NotQualitative { .. })
        ));
        assert!(matches!(
            run(&["OBX|1|ST|GLUT||||||||F"]),
            Err(UseError::MissingValue { .. })
        ));
        // Interference.
        assert_eq!(
            one("OBX|1|ST|OXID||POS||||||F"),
            Ok((id(true, None), 0, true))
        );
        assert_eq!(
            one("OBX|1|ST|OXID||NEG||||||F"),
            Ok((id(false, None), 0, false))
        );
    }

    #[test]
    fn duplicates_and_no_obx() {
        let (e, at) = err_path(run(&[
            "OBX|1|NM|THC50||1|ng/mL|||||F",
            "OBX|2|NM|THC50||2|ng/mL|||||C",
        ]));
        assert!(matches!(e, UseError::DuplicateResult { .. }));
        assert_eq!(at, "OBX(2)");
        let e = run(&[]).unwrap_err();
        assert_eq!(e, UseError::NoObservations);
        assert_eq!(e.ack_code(), AckCode::AE);
        assert_eq!(e.location(), None);
    }

    #[test]
    fn use_errors_never_echo_content() {
        let secret = "999999999";
        let lines = [
            format!("OBX|1|NM|{secret}||1|ng/mL|||||F"),
            format!("OBX|1|NM|THC50||{secret}x|ng/mL|||||F"),
            format!("OBX|1|NM|THC50||1|{secret}|||||F"),
            format!("OBX|1|NM|THC50||1|ng/mL|||||{secret}"),
            format!("OBX|{secret}x|NM|THC50||1|ng/mL|||||F"),
        ];
        for line in &lines {
            let e = run(&[line]).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn validate_reports_problems() {
        let toml = r#"
[analyzer.mapping]
specimen_id = "OBR-3.1"
processing_id = "X"
bottle = { field = "OBR-20", primary = ["A"], split = ["a"] }

[[analyzer.mapping.test]]
code = "THC50"
kind = "initial"
target = "thca"
unit = "ng/mL"

[[analyzer.mapping.test]]
code = "THC50"
kind = "confirmation"
target = "marijuana"
unit = "ng/mL"

[[analyzer.mapping.test]]
code = "CREA"
kind = "validity"
target = "creatinine"
unit = "mg/L"

[[analyzer.mapping.test]]
code = "SG"
kind = "validity"
target = "gravity"

[[analyzer.mapping.test]]
code = "GL UT"
kind = "adulterant"
target = "Glutaraldehyde"
threshold = -1

[[analyzer.mapping.test]]
code = "THR"
kind = "initial"
target = "cocaine"
unit = "ng/mL"
threshold = 5
"#;
        let m = Mapping::from_analyzer_toml(toml).unwrap();
        let problems = m.validate(&profile());
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "processing_id",
                "bottle",
                "test[0].target",
                "test[1].code",
                "test[1].target",
                "test[2].unit",
                "test[3].target",
                "test[4].code",
                "test[4].target",
                "test[4].threshold",
                "test[5].threshold",
            ],
            "{problems:?}"
        );
        assert!(problems[3].1.contains("duplicate of test[0].code"));
        let empty = Mapping {
            tests: vec![],
            runs: None,
            ..example()
        };
        assert_eq!(
            empty.validate(&profile()),
            [("test".to_string(), "no test codes mapped".to_string())]
        );
    }

    #[test]
    fn mapping_toml_is_strict() {
        let base = "[analyzer.mapping]\nspecimen_id = \"OBR-3.1\"\n";
        let err = Mapping::from_analyzer_toml(&format!("{base}colour = 1\n")).unwrap_err();
        assert!(err.contains("colour"), "{err}");
        let err = Mapping::from_analyzer_toml("[analyzer.mapping]\nspecimen_id = \"OBR3\"\n")
            .unwrap_err();
        assert!(err.contains("specimen_id"), "{err}");
        let err = Mapping::from_analyzer_toml(&format!(
            "{base}[[analyzer.mapping.test]]\ncode = \"X\"\nkind = \"screen\"\ntarget = \"pcp\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("kind"), "{err}");
        let err = Mapping::from_analyzer_toml(&format!(
            "{base}[[analyzer.mapping.test]]\ncode = \"X\"\nkind = \"initial\"\ntarget = \"pcp\"\nUnit = \"ng/mL\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("Unit"), "{err}");
        let m = Mapping::from_analyzer_toml(base).unwrap();
        assert_eq!(m.processing_id, "P");
        assert!(m.tests.is_empty() && m.bottle.is_none());
        let m = Mapping::from_analyzer_toml(&format!(
            "{base}[[analyzer.mapping.test]]\ncode = \"C\"\nkind = \"adulterant\"\ntarget = \"chromium_vi\"\nthreshold = \"50.5\"\n"
        ))
        .unwrap();
        assert_eq!(m.tests[0].threshold, Some(d("50.5")));
    }
}
