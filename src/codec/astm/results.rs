//! Result records (R) onto the same results the HL7 path hands to custody
//! ([`crate::codec::hl7::OruResults`]), with a per-analyzer [`AstmMapping`]
//! (`[astm_analyzer.mapping]`).
//!
//! Decisions (each checked by a test), the HL7 path's where the standards agree:
//! - One [`OruResults`] per order record (O) with results: its specimen ID where the mapping
//!   says (`O-3.1` by default, the specimen ID of LIS2-A2), its results the R records that
//!   follow it. A result before any order is refused.
//! - The header's processing ID (H-12) must be the mapping's (`P` by default; an instrument
//!   that sends none is configured with `processing_id = ""`), so training, debugging and QC
//!   messages never become donor results.
//! - The test code is the component of the universal test ID (R-3) the mapping names (`R-3.4`,
//!   the manufacturer's local code of `^^^CODE`), mapped as for HL7 (`[[...mapping.test]]`).
//! - The result status (R-9) is read through the mapping's lists: `final` (`F`), `corrected`
//!   (`C`), `cannot_obtain` (`X`: kept as not obtained), `preliminary` (`P`, `I`, `S`: skipped
//!   and counted); anything else needs a person (refused); an empty status is refused unless a
//!   list names `""`.
//! - Values (R-4) and units (R-5.1) follow the HL7 rules: an exact non-negative decimal for
//!   initial, confirmation and validity tests (no comparator, no components); a word or a number
//!   against the test's threshold for adulterant and interference tests; units compared with
//!   the mapping ignoring case (a qualitative word may come without one).
//! - Runs (`[astm_analyzer.mapping.runs]`, the HL7 analyzers' [`RunMapping`] and its checks
//!   with ASTM positions): a sample is a control or a calibrator when the role field the
//!   mapping names says so (the order record's action code O-12: `Q`, quality control; a
//!   calibrator only if the instrument marks it there), or, for an instrument that sends no
//!   role, when its sample ID starts with a configured prefix. The run id is optional (on the
//!   header or the order record; absent, the analyzer's runs are bracketed by its QC sets); the
//!   acceptability flag of a confirmation result is a field of its result record; the aliquot a
//!   field of the order record. QC results carry no bottle.
//! - The message's identity for dedupe ([`content_id`]): ASTM has no message control ID in
//!   practice, so a message is known by its analyzer and its records with the header's
//!   timestamp (H-14) left out: a retransmission after a lost ACK is the same message.

use super::records::{Message, Record, unescape};
use crate::codec::hl7::{
    self, Bottle, Kind, Location, Observation, OruResults, ResultStatus, ResultValue, RunMapping,
    TestMapping,
};
use crate::domain::rules::measure;
use crate::domain::runs::SampleRole;
use rust_decimal::Decimal;
use serde::Deserialize;
use std::fmt;
use std::str::FromStr;

/// A position in ASTM records: `O-3.1` (record type, field, component; the component defaults
/// to 1), numbered as in the standard (field 1 is the record type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AstmPath {
    pub record: char,
    pub field: usize,
    pub component: usize,
}

impl AstmPath {
    const fn new(record: char, field: usize, component: usize) -> AstmPath {
        AstmPath {
            record,
            field,
            component,
        }
    }

    /// The value at this position of `r` (first repetition), escapes decoded and trimmed;
    /// `None` when an escape is broken.
    pub fn value(&self, r: &Record, m: &Message) -> Option<String> {
        let raw = r.component(self.field, 1, self.component, &m.delimiters);
        unescape(raw, &m.delimiters).map(|s| s.trim().to_owned())
    }
}

/// Why text is not an ASTM position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "an ASTM position is a record type (H, P, O, R, C, Q, L), `-`, a field number and optionally `.` and a component number (1 to 99), e.g. O-3.1"
)]
pub struct AstmPathError;

impl FromStr for AstmPath {
    type Err = AstmPathError;

    fn from_str(s: &str) -> Result<AstmPath, AstmPathError> {
        let (record, rest) = s.split_once('-').ok_or(AstmPathError)?;
        let record = match record {
            "H" | "P" | "O" | "R" | "C" | "Q" | "L" => {
                record.chars().next().ok_or(AstmPathError)?
            }
            _ => return Err(AstmPathError),
        };
        let number = |t: &str| -> Result<usize, AstmPathError> {
            if t.is_empty() || t.len() > 2 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(AstmPathError);
            }
            match t.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(AstmPathError),
            }
        };
        let (field, component) = match rest.split_once('.') {
            None => (number(rest)?, 1),
            Some((f, c)) => (number(f)?, number(c)?),
        };
        Ok(AstmPath::new(record, field, component))
    }
}

impl fmt::Display for AstmPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}.{}", self.record, self.field, self.component)
    }
}

impl<'de> Deserialize<'de> for AstmPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AstmPath, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn default_specimen_id() -> AstmPath {
    AstmPath::new('O', 3, 1)
}
fn default_test_code() -> AstmPath {
    AstmPath::new('R', 3, 4)
}
fn default_query_specimen_id() -> AstmPath {
    AstmPath::new('Q', 3, 2)
}
fn default_processing_id() -> String {
    "P".to_owned()
}

fn codes(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// How the result status (R-9) reads (`[astm_analyzer.mapping.status]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusMapping {
    #[serde(default = "status_final", rename = "final")]
    pub final_: Vec<String>,
    #[serde(default = "status_corrected")]
    pub corrected: Vec<String>,
    #[serde(default = "status_cannot_obtain")]
    pub cannot_obtain: Vec<String>,
    #[serde(default = "status_preliminary")]
    pub preliminary: Vec<String>,
}

fn status_final() -> Vec<String> {
    codes(&["F"])
}
fn status_corrected() -> Vec<String> {
    codes(&["C"])
}
fn status_cannot_obtain() -> Vec<String> {
    codes(&["X"])
}
fn status_preliminary() -> Vec<String> {
    codes(&["P", "I", "S"])
}

impl Default for StatusMapping {
    fn default() -> StatusMapping {
        StatusMapping {
            final_: status_final(),
            corrected: status_corrected(),
            cannot_obtain: status_cannot_obtain(),
            preliminary: status_preliminary(),
        }
    }
}

enum Status {
    Kept(ResultStatus),
    Preliminary,
    Unknown,
}

impl StatusMapping {
    fn read(&self, code: &str) -> Status {
        let has = |l: &[String]| l.iter().any(|c| c == code);
        if has(&self.final_) {
            Status::Kept(ResultStatus::Final)
        } else if has(&self.corrected) {
            Status::Kept(ResultStatus::Corrected)
        } else if has(&self.cannot_obtain) {
            Status::Kept(ResultStatus::CannotObtain)
        } else if has(&self.preliminary) {
            Status::Preliminary
        } else {
            Status::Unknown
        }
    }

    fn lists(&self) -> [(&'static str, &[String]); 4] {
        [
            ("final", &self.final_),
            ("corrected", &self.corrected),
            ("cannot_obtain", &self.cannot_obtain),
            ("preliminary", &self.preliminary),
        ]
    }
}

/// Where the bottle is named on the order record, and the values naming each.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AstmBottle {
    /// A position on the order record, e.g. `O-3.2`.
    pub field: AstmPath,
    pub primary: Vec<String>,
    pub split: Vec<String>,
    #[serde(default)]
    pub default: Option<Bottle>,
}

/// A per-analyzer mapping from ASTM records to custodian results
/// (`[astm_analyzer.mapping]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AstmMapping {
    /// Where the specimen ID is on the order record (`O-3.1`; `O-4.1` for the instrument's).
    #[serde(default = "default_specimen_id")]
    pub specimen_id: AstmPath,
    /// Where the test code is in a result record's universal test ID (`R-3.4`).
    #[serde(default = "default_test_code")]
    pub test_code: AstmPath,
    /// Where a host query names the specimen (`Q-3.2`, the specimen ID of the starting range).
    #[serde(default = "default_query_specimen_id")]
    pub query_specimen_id: AstmPath,
    /// The header's processing ID (H-12) accepted: `P` production; `""` for an instrument that
    /// sends none.
    #[serde(default = "default_processing_id")]
    pub processing_id: String,
    /// Where the bottle is named; absent: every result is for the primary specimen.
    #[serde(default)]
    pub bottle: Option<AstmBottle>,
    /// How R-9 reads.
    #[serde(default)]
    pub status: StatusMapping,
    /// `[[astm_analyzer.mapping.test]]`: as for HL7 (code, kind, target, unit, threshold).
    #[serde(default, rename = "test")]
    pub tests: Vec<TestMapping>,
    /// `[astm_analyzer.mapping.runs]`: runs and QC as for HL7, with ASTM positions (required
    /// by the configuration check).
    #[serde(default)]
    pub runs: Option<RunMapping<AstmPath>>,
}

/// The HL7 position standing in for an ASTM one in [`AstmMapping::hl7_view`]: never read.
fn unread() -> hl7::Path {
    hl7::Path {
        segment: hl7::SegmentId::MSH,
        occurrence: 1,
        field: 10,
        repetition: 1,
        component: 1,
        subcomponent: 1,
    }
}

impl AstmMapping {
    /// The HL7 mapping with the same tests and runs (kind, how runs are delimited, how QC
    /// samples are recognised, auto_accept, QC rules): what the shared result path
    /// ([`crate::codec::hl7::Mapping`]) reads. Its HL7 positions are never read for ASTM.
    pub fn hl7_view(&self) -> hl7::Mapping {
        hl7::Mapping {
            specimen_id: unread(),
            bottle: None,
            processing_id: "P".to_owned(),
            tests: self.tests.clone(),
            runs: self.runs.as_ref().map(|r| r.with_positions(|_| unread())),
        }
    }

    /// Checks everything but whether the targets exist in an edition. Returns (key, problem)
    /// pairs; empty when usable.
    pub fn validate_shape(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut add = |k: &str, p: String| problems.push((k.to_owned(), p));
        if self.specimen_id.record != 'O' || !matches!(self.specimen_id.field, 3 | 4) {
            add(
                "specimen_id",
                "must be on the order record's specimen ID (O-3) or instrument specimen ID (O-4), e.g. O-3.1".into(),
            );
        }
        if self.test_code.record != 'R' || self.test_code.field != 3 {
            add(
                "test_code",
                "must be a component of the result record's universal test ID (R-3), e.g. R-3.4"
                    .into(),
            );
        }
        if self.query_specimen_id.record != 'Q' || !matches!(self.query_specimen_id.field, 3 | 4) {
            add(
                "query_specimen_id",
                "must be on the request record's starting or ending range ID (Q-3, Q-4), e.g. Q-3.2"
                    .into(),
            );
        }
        if !matches!(self.processing_id.as_str(), "P" | "T" | "D" | "Q" | "") {
            add(
                "processing_id",
                "must be P, T, D, Q (E1394 H-12) or \"\" for an instrument that sends none".into(),
            );
        }
        if let Some(b) = &self.bottle {
            if b.field.record != 'O' {
                add(
                    "bottle.field",
                    "must be a position on the order record (O-...)".into(),
                );
            }
            if b.primary.is_empty() || b.split.is_empty() {
                add(
                    "bottle",
                    "primary and split each need at least one value".into(),
                );
            }
            if b.primary.iter().any(|p| {
                b.split
                    .iter()
                    .any(|s| p.trim().eq_ignore_ascii_case(s.trim()))
            }) {
                add(
                    "bottle",
                    "a value names both the primary and the split".into(),
                );
            }
        }
        let lists = self.status.lists();
        for (i, (name, list)) in lists.iter().enumerate() {
            for code in list.iter() {
                if code.len() > 1 || code.chars().any(|c| !c.is_ascii_uppercase()) {
                    add(
                        &format!("status.{name}"),
                        format!("`{code}` is not a one-letter result status (or \"\")"),
                    );
                }
                if let Some((other, _)) = lists[..i].iter().find(|(_, l)| l.contains(code)) {
                    add(
                        &format!("status.{name}"),
                        format!("`{code}` is also in status.{other}"),
                    );
                }
            }
        }
        for (k, p) in self.hl7_view().validate_shape() {
            if k.starts_with("test") {
                problems.push((k, p));
            }
        }
        if let Some(r) = &self.runs {
            let mut add = |k: String, p: String| problems.push((k, p));
            let on = |p: &AstmPath, records: &[char], key: &str, what: &str| {
                (!records.contains(&p.record)).then(|| (key.to_owned(), what.to_owned()))
            };
            let positions = [
                r.role.as_ref().and_then(|m| {
                    on(
                        &m.field,
                        &['O'],
                        "runs.role.field",
                        "must be a position on the order record, e.g. O-12 (action code: Q for quality control)",
                    )
                }),
                r.run_id.as_ref().and_then(|p| {
                    on(
                        p,
                        &['H', 'O'],
                        "runs.run_id",
                        "must be a position on the header (H-...) or the order record (O-...)",
                    )
                }),
                r.aliquot.as_ref().and_then(|p| {
                    on(
                        p,
                        &['O'],
                        "runs.aliquot",
                        "must be a position on the order record (O-...)",
                    )
                }),
            ];
            for (k, p) in positions.into_iter().flatten() {
                add(k, p);
            }
            r.check(
                &self.tests,
                |f| {
                    (f.record != 'R').then(|| {
                        "must be a field of the result record (R-...), e.g. R-7".to_string()
                    })
                },
                true,
                &mut add,
            );
        }
        problems
    }

    fn test(&self, code: &str) -> Option<&TestMapping> {
        self.tests.iter().find(|t| t.code == code)
    }

    /// The analyzer's code for a (kind, target), if mapped.
    pub fn code_for(&self, kind: Kind, target: &str) -> Option<&str> {
        self.tests
            .iter()
            .find(|t| t.kind == kind && t.target == target)
            .map(|t| t.code.as_str())
    }
}

/// Why an ASTM message's results cannot be used. Names record positions, never content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UseError {
    #[error("processing ID at H-12 is not the one this analyzer is configured for")]
    UnsupportedProcessingId,
    #[error("result record {index} comes before any order record")]
    ResultOutsideOrder { index: usize },
    #[error("specimen ID of order record {index} is missing")]
    MissingSpecimenId { index: usize },
    #[error("specimen ID of record {index} is not 1-64 letters, digits or - _ . /")]
    InvalidSpecimenId { index: usize },
    #[error("bottle of order record {index} is not a configured primary or split value")]
    UnknownBottle { index: usize },
    #[error("test code of result record {index} (R-3) is missing")]
    MissingCode { index: usize },
    #[error("test code of result record {index} (R-3) is not in this analyzer's mapping")]
    UnmappedCode { index: usize },
    #[error("result status of result record {index} (R-9) is missing")]
    MissingStatus { index: usize },
    #[error("result status of result record {index} (R-9) is not one the mapping lists")]
    UnsupportedStatus { index: usize },
    #[error("sequence number of result record {index} (R-2) is not a number")]
    InvalidSetId { index: usize },
    #[error("value of result record {index} (R-4) is missing")]
    MissingValue { index: usize },
    #[error("value of result record {index} (R-4) is not an exact decimal number")]
    NotNumeric { index: usize },
    #[error("value of result record {index} (R-4) is negative")]
    NegativeValue { index: usize },
    #[error(
        "value of result record {index} (R-4) is neither a number nor a recognised positive/negative word"
    )]
    NotQualitative { index: usize },
    #[error("unit of result record {index} (R-5) is not the mapped unit")]
    WrongUnit { index: usize },
    #[error("numeric value of result record {index} (R-4) but the mapped test has no threshold")]
    NoThreshold { index: usize },
    #[error("result record {index} is a second result for the same test of its order")]
    DuplicateResult { index: usize },
    #[error("record {index} holds a broken escape sequence")]
    BadEscape { index: usize },
    #[error("run id for order record {index} is missing")]
    MissingRunId { index: usize },
    #[error("run id for order record {index} is not 1-64 letters, digits or - _ . /")]
    InvalidRunId { index: usize },
    #[error("aliquot of order record {index} is not 1-64 letters, digits or - _ . /")]
    InvalidAliquot { index: usize },
}

const MAX_SPECIMEN_ID: usize = 64;

/// A specimen ID custodian accepts: 1-64 letters, digits or `- _ . /`.
pub fn valid_specimen_id(s: &str) -> bool {
    (1..=MAX_SPECIMEN_ID).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
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

fn single(r: &Record, m: &Message, n: usize) -> bool {
    let d = &m.delimiters;
    let f = r.field(n);
    !f.contains(d.repeat as char) && !f.contains(d.component as char)
}

fn unit_ok(unit: &str, t: &TestMapping) -> bool {
    unit.eq_ignore_ascii_case(t.unit.trim()) || unit.to_lowercase() == t.unit.trim().to_lowercase()
}

fn value_of(
    r: &Record,
    m: &Message,
    t: &TestMapping,
    status: ResultStatus,
) -> Result<ResultValue, UseError> {
    let index = r.index;
    if status == ResultStatus::CannotObtain {
        return Ok(ResultValue::NotObtained);
    }
    let raw = unescape(r.field(4), &m.delimiters).ok_or(UseError::BadEscape { index })?;
    let text = raw.trim();
    let unit = unescape(r.component(5, 1, 1, &m.delimiters), &m.delimiters)
        .ok_or(UseError::BadEscape { index })?;
    let unit = unit.trim();
    let qualitative = matches!(t.kind, Kind::Adulterant | Kind::Interference);
    if text.is_empty() {
        return Err(UseError::MissingValue { index });
    }
    if !single(r, m, 4) {
        return Err(if qualitative {
            UseError::NotQualitative { index }
        } else {
            UseError::NotNumeric { index }
        });
    }
    if qualitative {
        let word = text.to_ascii_uppercase();
        if IDENTIFIED.contains(&word.as_str()) || NOT_IDENTIFIED.contains(&word.as_str()) {
            if !unit.is_empty() && !unit_ok(unit, t) {
                return Err(UseError::WrongUnit { index });
            }
            return Ok(ResultValue::Identified {
                identified: IDENTIFIED.contains(&word.as_str()),
                measured: None,
            });
        }
        let v = measure::parse(&word).map_err(|_| UseError::NotQualitative { index })?;
        if v.is_sign_negative() && !v.is_zero() {
            return Err(UseError::NegativeValue { index });
        }
        if !unit_ok(unit, t) {
            return Err(UseError::WrongUnit { index });
        }
        let threshold = t.threshold.ok_or(UseError::NoThreshold { index })?;
        return Ok(ResultValue::Identified {
            identified: v >= threshold,
            measured: Some(v),
        });
    }
    let v: Decimal = measure::parse(text).map_err(|_| UseError::NotNumeric { index })?;
    if v.is_sign_negative() && !v.is_zero() {
        return Err(UseError::NegativeValue { index });
    }
    if !unit_ok(unit, t) {
        return Err(UseError::WrongUnit { index });
    }
    Ok(ResultValue::Number(v))
}

fn bottle(o: &Record, m: &Message, b: &AstmBottle) -> Result<Bottle, UseError> {
    let index = o.index;
    let value = b.field.value(o, m).ok_or(UseError::BadEscape { index })?;
    let is = |list: &[String]| list.iter().any(|v| v.trim().eq_ignore_ascii_case(&value));
    if value.is_empty() {
        b.default.ok_or(UseError::UnknownBottle { index })
    } else if is(&b.primary) {
        Ok(Bottle::Primary)
    } else if is(&b.split) {
        Ok(Bottle::Split)
    } else {
        Err(UseError::UnknownBottle { index })
    }
}

/// A control or calibrator by the role field on the order record `o`, or, for a sample the
/// field does not mark (no role field; calibrators the action code cannot name), by a QC sample
/// prefix: then its role is the one its QC rules give it (a control if none names it); `None`:
/// a specimen.
fn role(
    o: &Record,
    m: &Message,
    r: &RunMapping<AstmPath>,
    sample_id: &str,
) -> Result<Option<SampleRole>, UseError> {
    if let Some(f) = &r.role {
        let v = f
            .field
            .value(o, m)
            .ok_or(UseError::BadEscape { index: o.index })?;
        let is = |list: &[String]| {
            !v.is_empty() && list.iter().any(|x| x.trim().eq_ignore_ascii_case(&v))
        };
        if is(&f.control) {
            return Ok(Some(SampleRole::Control));
        }
        if is(&f.calibrator) {
            return Ok(Some(SampleRole::Calibrator));
        }
    }
    let by_prefix = r
        .qc_sample_prefixes
        .iter()
        .any(|p| !p.is_empty() && sample_id.starts_with(p.as_str()));
    Ok(by_prefix.then(|| {
        r.qc.iter()
            .find(|q| q.sample == sample_id)
            .map_or(SampleRole::Control, |q| q.role)
    }))
}

/// An identifier (run id, aliquot) at `p` of `r`: `None` when empty; refused when malformed.
fn identifier(
    r: &Record,
    m: &Message,
    p: &AstmPath,
    invalid: UseError,
) -> Result<Option<String>, UseError> {
    let v = p
        .value(r, m)
        .ok_or(UseError::BadEscape { index: r.index })?;
    if v.is_empty() {
        Ok(None)
    } else if valid_specimen_id(&v) {
        Ok(Some(v))
    } else {
        Err(invalid)
    }
}

/// Reads the results of a message with an analyzer's mapping: one [`OruResults`] per order
/// record that has results. Pure.
pub fn extract(m: &Message, mapping: &AstmMapping) -> Result<Vec<OruResults>, UseError> {
    if m.header().field(12).trim() != mapping.processing_id {
        return Err(UseError::UnsupportedProcessingId);
    }
    let mut out: Vec<OruResults> = Vec::new();
    let mut current: Option<OruResults> = None;
    let mut results_seen = 0usize;
    for r in &m.records {
        match r.kind {
            'O' => {
                if let Some(done) = current.take() {
                    out.push(done);
                }
                let index = r.index;
                let id = mapping
                    .specimen_id
                    .value(r, m)
                    .ok_or(UseError::BadEscape { index })?;
                if id.is_empty() {
                    return Err(UseError::MissingSpecimenId { index });
                }
                if !valid_specimen_id(&id) {
                    return Err(UseError::InvalidSpecimenId { index });
                }
                let runs = mapping.runs.as_ref();
                let role = match runs {
                    Some(rm) => role(r, m, rm, &id)?,
                    None => None,
                };
                // A control or calibrator is no bottle of a donor's specimen.
                let bottle = match (&mapping.bottle, role) {
                    (_, Some(_)) | (None, None) => Bottle::Primary,
                    (Some(b), None) => bottle(r, m, b)?,
                };
                let run_id = match runs.and_then(|rm| rm.run_id.as_ref()) {
                    Some(p) => {
                        let at = if p.record == 'H' { m.header() } else { r };
                        Some(
                            identifier(at, m, p, UseError::InvalidRunId { index })?
                                .ok_or(UseError::MissingRunId { index })?,
                        )
                    }
                    None => None,
                };
                let aliquot = match runs.and_then(|rm| rm.aliquot.as_ref()) {
                    Some(p) => {
                        identifier(r, m, p, UseError::InvalidAliquot { index })?.unwrap_or_default()
                    }
                    None => String::new(),
                };
                current = Some(OruResults {
                    specimen_id: id,
                    bottle,
                    results: Vec::new(),
                    preliminary: 0,
                    not_asked: 0,
                    run_id,
                    role,
                    aliquot,
                });
            }
            'P' | 'L' => {
                if let Some(done) = current.take() {
                    out.push(done);
                }
            }
            'R' => {
                results_seen += 1;
                let index = r.index;
                let Some(group) = current.as_mut() else {
                    return Err(UseError::ResultOutsideOrder { index });
                };
                let status_code = r.field(9).trim();
                let status = match mapping.status.read(status_code) {
                    Status::Kept(s) => s,
                    Status::Preliminary => {
                        group.preliminary += 1;
                        continue;
                    }
                    Status::Unknown if status_code.is_empty() => {
                        return Err(UseError::MissingStatus { index });
                    }
                    Status::Unknown => return Err(UseError::UnsupportedStatus { index }),
                };
                let set_id = match r.field(2).trim() {
                    "" => None,
                    s => Some(
                        s.parse::<u32>()
                            .map_err(|_| UseError::InvalidSetId { index })?,
                    ),
                };
                let code = mapping
                    .test_code
                    .value(r, m)
                    .ok_or(UseError::BadEscape { index })?;
                if code.is_empty() {
                    return Err(UseError::MissingCode { index });
                }
                let t = mapping
                    .test(&code)
                    .ok_or(UseError::UnmappedCode { index })?;
                let value = value_of(r, m, t, status)?;
                if group
                    .results
                    .iter()
                    .any(|o| o.kind == t.kind && o.target == t.target)
                {
                    return Err(UseError::DuplicateResult { index });
                }
                let unit = unescape(r.component(5, 1, 1, &m.delimiters), &m.delimiters)
                    .ok_or(UseError::BadEscape { index })?;
                let observed_at = Some(r.field(13).trim())
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned);
                // The acceptability flag is judged per confirmation result (ion ratios,
                // retention time, internal standard); other tests carry none.
                let acceptable = match mapping.runs.as_ref().and_then(|rm| rm.acceptable.as_ref()) {
                    Some(f) if t.kind == Kind::Confirmation => {
                        let v = f.field.value(r, m).ok_or(UseError::BadEscape { index })?;
                        Some(
                            f.acceptable
                                .iter()
                                .any(|a| a.trim().eq_ignore_ascii_case(&v)),
                        )
                    }
                    _ => None,
                };
                group.results.push(Observation {
                    kind: t.kind,
                    target: t.target.clone(),
                    value,
                    unit: unit.trim().to_owned(),
                    set_id,
                    location: Location::segment(index, None, results_seen),
                    status,
                    observed_at,
                    code: t.code.clone(),
                    tier: t.tier,
                    acceptable,
                });
            }
            _ => {}
        }
    }
    if let Some(done) = current.take() {
        out.push(done);
    }
    // Orders without results (an order echoed back) carry nothing to store.
    out.retain(|g| !g.results.is_empty() || g.preliminary > 0);
    Ok(out)
}

/// The identity of a message for dedupe: SHA-256 over its records with the header's
/// timestamp (H-14) left out, as `astm-` and 32 hexadecimal digits.
pub fn content_id(m: &Message) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for r in &m.records {
        let text = if r.kind == 'H' {
            r.text_without(14, &m.delimiters)
        } else {
            r.text_without(0, &m.delimiters)
        };
        h.update(text.as_bytes());
        h.update(b"\r");
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("astm-{}", &hex[..32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::astm::records::parse;
    use crate::domain::runs::RunKind;

    pub(crate) const MAPPING: &str = r#"
[astm_analyzer.mapping]
specimen_id = "O-3.1"
processing_id = "P"
bottle = { field = "O-3.2", primary = ["A"], split = ["B"], default = "primary" }
[[astm_analyzer.mapping.test]]
code = "THC50"
kind = "initial"
target = "marijuana"
unit = "ng/mL"
[[astm_analyzer.mapping.test]]
code = "COC300"
kind = "initial"
target = "cocaine"
unit = "ng/mL"
[[astm_analyzer.mapping.test]]
code = "CREA"
kind = "validity"
target = "creatinine"
unit = "mg/dL"
[[astm_analyzer.mapping.test]]
code = "GLUT"
kind = "adulterant"
target = "glutaraldehyde"
[[astm_analyzer.mapping.test]]
code = "CRVI"
kind = "adulterant"
target = "chromium_vi"
unit = "mcg/mL"
threshold = 50
"#;

    pub(crate) fn mapping() -> AstmMapping {
        #[derive(Deserialize)]
        struct File {
            astm_analyzer: A,
        }
        #[derive(Deserialize)]
        struct A {
            mapping: AstmMapping,
        }
        toml::from_str::<File>(MAPPING)
            .unwrap()
            .astm_analyzer
            .mapping
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    const H: &str = "H|\\^&|||immuno^1|||||||P|1|20240315101500";

    fn run(records: &[&str]) -> Result<Vec<OruResults>, UseError> {
        let mut all = vec![H];
        all.extend_from_slice(records);
        all.push("L|1|N");
        let text = all.join("\r") + "\r";
        extract(&parse(text.as_bytes()).unwrap(), &mapping())
    }

    #[test]
    fn paths_parse_and_print() {
        let p: AstmPath = "O-3.1".parse().unwrap();
        assert_eq!(p, AstmPath::new('O', 3, 1));
        assert_eq!("R-3".parse::<AstmPath>().unwrap().to_string(), "R-3.1");
        for bad in [
            "O3", "X-3", "O-0", "O-3.0", "O-100", "O-a", "-3", "O-3.1.1", "OO-3",
        ] {
            assert!(bad.parse::<AstmPath>().is_err(), "{bad}");
        }
    }

    #[test]
    fn default_mapping_positions() {
        let m: AstmMapping = toml::from_str("").unwrap();
        assert_eq!(m.specimen_id.to_string(), "O-3.1");
        assert_eq!(m.test_code.to_string(), "R-3.4");
        assert_eq!(m.query_specimen_id.to_string(), "Q-3.2");
        assert_eq!(m.processing_id, "P");
        assert_eq!(m.status, StatusMapping::default());
        assert!(toml::from_str::<AstmMapping>("colour = 1").is_err());
    }

    #[test]
    fn one_result_group_per_order() {
        let groups = run(&[
            "P|1",
            "O|1|0012345^A||^^^THC50\\^^^COC300|R",
            "R|1|^^^THC50|12.5|ng/mL||N||F||||20240315101000",
            "R|2|^^^COC300|0|NG/ML||N||F",
            "C|1|I|note|G",
            "P|2",
            "O|1|0012346^B||^^^CREA",
            "R|1|^^^CREA|85.2|mg/dL||N||C",
        ])
        .unwrap();
        assert_eq!(groups.len(), 2);
        let g = &groups[0];
        assert_eq!(
            (g.specimen_id.as_str(), g.bottle),
            ("0012345", Bottle::Primary)
        );
        assert_eq!(g.results.len(), 2);
        assert_eq!(g.results[0].value, ResultValue::Number(d("12.5")));
        assert_eq!(g.results[0].set_id, Some(1));
        assert_eq!(g.results[0].observed_at.as_deref(), Some("20240315101000"));
        assert_eq!(
            g.results[1].unit, "NG/ML",
            "unit kept as sent, compared ignoring case"
        );
        let g = &groups[1];
        assert_eq!(
            (g.specimen_id.as_str(), g.bottle),
            ("0012346", Bottle::Split)
        );
        assert_eq!(g.results[0].status, ResultStatus::Corrected);
    }

    #[test]
    fn statuses_through_the_mapping() {
        let r = run(&[
            "O|1|S1",
            "R|1|^^^THC50|1|ng/mL||||P",
            "R|2|^^^COC300|1|ng/mL||||I",
            "R|3|^^^CREA||||||X",
        ])
        .unwrap();
        assert_eq!(r[0].preliminary, 2);
        assert_eq!(r[0].results[0].value, ResultValue::NotObtained);
        assert!(matches!(
            run(&["O|1|S1", "R|1|^^^THC50|1|ng/mL||||"]),
            Err(UseError::MissingStatus { index: 3 })
        ));
        assert!(matches!(
            run(&["O|1|S1", "R|1|^^^THC50|1|ng/mL||||W"]),
            Err(UseError::UnsupportedStatus { index: 3 })
        ));
        let mut m = mapping();
        m.status.final_.push(String::new());
        let text = format!("{H}\rO|1|S1\rR|1|^^^THC50|1|ng/mL\rL|1\r");
        assert_eq!(
            extract(&parse(text.as_bytes()).unwrap(), &m).unwrap()[0].results[0].status,
            ResultStatus::Final
        );
    }

    #[test]
    fn refusals_name_the_record() {
        let cases: Vec<(Vec<&str>, UseError)> = vec![
            (
                vec!["R|1|^^^THC50|1|ng/mL||||F"],
                UseError::ResultOutsideOrder { index: 2 },
            ),
            (
                vec!["O|1|", "R|1|^^^THC50|1|ng/mL||||F"],
                UseError::MissingSpecimenId { index: 2 },
            ),
            (
                vec!["O|1|00 1", "R|1|^^^THC50|1|ng/mL||||F"],
                UseError::InvalidSpecimenId { index: 2 },
            ),
            (
                vec!["O|1|S1^C", "R|1|^^^THC50|1|ng/mL||||F"],
                UseError::UnknownBottle { index: 2 },
            ),
            (
                vec!["O|1|S1", "R|1||1|ng/mL||||F"],
                UseError::MissingCode { index: 3 },
            ),
            (
                vec!["O|1|S1", "R|1|^^^BUP5|1|ng/mL||||F"],
                UseError::UnmappedCode { index: 3 },
            ),
            (
                vec!["O|1|S1", "R|x|^^^THC50|1|ng/mL||||F"],
                UseError::InvalidSetId { index: 3 },
            ),
            (
                vec!["O|1|S1", "R|1|^^^THC50||ng/mL||||F"],
                UseError::MissingValue { index: 3 },
            ),
            (
                vec!["O|1|S1", "R|1|^^^THC50|<10|ng/mL||||F"],
                UseError::NotNumeric { index: 3 },
            ),
            (
                vec!["O|1|S1", "R|1|^^^THC50|1^2|ng/mL||||F"],
                UseError::NotNumeric { index: 3 },
            ),
            (
                vec!["O|1|S1", "R|1|^^^THC50|-1|ng/mL||||F"],
                UseError::NegativeValue { index: 3 },
            ),
            (
                vec!["O|1|S1", "R|1|^^^THC50|1|ug/L||||F"],
                UseError::WrongUnit { index: 3 },
            ),
            (
                vec!["O|1|S1", "R|1|^^^GLUT|maybe|||||F"],
                UseError::NotQualitative { index: 3 },
            ),
            (
                vec!["O|1|S1", "R|1|^^^GLUT|5|||||F"],
                UseError::NoThreshold { index: 3 },
            ),
            (
                vec![
                    "O|1|S1",
                    "R|1|^^^THC50|1|ng/mL||||F",
                    "R|2|^^^THC50|2|ng/mL||||C",
                ],
                UseError::DuplicateResult { index: 4 },
            ),
            (
                vec!["O|1|S1&Q&", "R|1|^^^THC50|1|ng/mL||||F"],
                UseError::BadEscape { index: 2 },
            ),
        ];
        for (records, want) in cases {
            assert_eq!(run(&records), Err(want), "{records:?}");
            assert!(!want.to_string().contains("THC50"));
        }
        let text = "H|\\^&|||x|||||||T\rO|1|S1\rR|1|^^^THC50|1|ng/mL||||F\rL|1\r";
        assert_eq!(
            extract(&parse(text.as_bytes()).unwrap(), &mapping()),
            Err(UseError::UnsupportedProcessingId)
        );
    }

    #[test]
    fn qualitative_results() {
        let one = |rec: &str| run(&["O|1|S1", rec]).map(|g| g[0].results[0].value);
        let id = |identified, measured| ResultValue::Identified {
            identified,
            measured,
        };
        assert_eq!(one("R|1|^^^GLUT|Positive|||||F"), Ok(id(true, None)));
        assert_eq!(one("R|1|^^^GLUT|NEG|||||F"), Ok(id(false, None)));
        assert_eq!(one("R|1|^^^GLUT|none detected|||||F"), Ok(id(false, None)));
        assert_eq!(
            one("R|1|^^^CRVI|49.9|mcg/mL||||F"),
            Ok(id(false, Some(d("49.9"))))
        );
        assert_eq!(
            one("R|1|^^^CRVI|50|mcg/mL||||F"),
            Ok(id(true, Some(d("50"))))
        );
        assert_eq!(one("R|1|^^^CRVI|NEG|||||F"), Ok(id(false, None)));
        assert_eq!(
            one("R|1|^^^CRVI|60|ng/mL||||F"),
            Err(UseError::WrongUnit { index: 3 })
        );
    }

    #[test]
    fn orders_without_results_carry_nothing() {
        assert!(run(&["O|1|S1||^^^THC50"]).unwrap().is_empty());
        assert!(run(&[]).unwrap().is_empty());
    }

    #[test]
    fn content_id_ignores_the_header_timestamp_only() {
        let a = "H|\\^&|||x|||||||P|1|20240101000000\rO|1|S1\rR|1|^^^THC50|1|ng/mL||||F\rL|1\r";
        let b = a.replace("20240101000000", "20250505050505");
        let c = a.replace("|1|ng/mL", "|2|ng/mL");
        let id = |t: &str| content_id(&parse(t.as_bytes()).unwrap());
        assert_eq!(id(a), id(&b));
        assert_ne!(id(a), id(&c));
        assert!(id(a).starts_with("astm-") && id(a).len() == 37);
    }

    #[test]
    fn validate_reports_problems() {
        let toml_text = r#"
specimen_id = "R-3.1"
test_code = "O-5.4"
query_specimen_id = "O-3"
processing_id = "X"
bottle = { field = "R-3.2", primary = ["A"], split = ["a"] }
status = { final = ["F", "C"], corrected = ["C"], preliminary = ["pp"] }
[[test]]
code = "THC50"
kind = "initial"
target = "marijuana"
unit = "mg/dL"
"#;
        let m: AstmMapping = toml::from_str(toml_text).unwrap();
        let keys: Vec<String> = m.validate_shape().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "specimen_id",
                "test_code",
                "query_specimen_id",
                "processing_id",
                "bottle.field",
                "bottle",
                "status.corrected",
                "status.preliminary",
                "test[0].unit",
            ]
        );
        assert!(
            mapping().validate_shape().is_empty(),
            "{:?}",
            mapping().validate_shape()
        );
        assert_eq!(mapping().code_for(Kind::Initial, "cocaine"), Some("COC300"));
    }

    const RUNS_MAPPING: &str = r#"
specimen_id = "O-3.1"
bottle = { field = "O-3.2", primary = ["A"], split = ["B"], default = "primary" }
[[test]]
code = "COC300"
kind = "initial"
target = "cocaine"
unit = "ng/mL"
[[test]]
code = "BZEC"
kind = "confirmation"
target = "benzoylecgonine"
unit = "ng/mL"
[runs]
kind = "confirmation"
run_id = "O-21"
role = { field = "O-12", control = ["Q"] }
qc_sample_prefixes = ["CAL-"]
acceptable = { field = "R-7", acceptable = ["Y"] }
qc = [
  { code = "COC300", sample = "QC-NEG", level = "negative", expect = "below", value = 300 },
  { code = "BZEC", sample = "QC-NEG", level = "negative", expect = "below", value = 100 },
  { code = "BZEC", sample = "CAL-1", level = "cutoff", role = "calibrator", expect = "within", value = 100, tolerance_percent = 20 },
]
"#;

    /// An order record with `fields` (number, text) set, the others empty.
    fn order(fields: &[(usize, &str)]) -> String {
        let mut f = vec![""; 22];
        f[0] = "O";
        for &(n, v) in fields {
            f[n - 1] = v;
        }
        f.join("|")
    }

    fn run_with(mapping: &AstmMapping, records: &[String]) -> Result<Vec<OruResults>, UseError> {
        let mut all = vec![H.to_string(), "P|1".to_string()];
        all.extend_from_slice(records);
        all.push("L|1|N".into());
        let text = all.join("\r") + "\r";
        extract(&parse(text.as_bytes()).unwrap(), mapping)
    }

    #[test]
    fn runs_read_role_run_id_and_acceptability_from_astm_positions() {
        let m: AstmMapping = toml::from_str(RUNS_MAPPING).unwrap();
        assert!(m.validate_shape().is_empty(), "{:?}", m.validate_shape());
        let groups = run_with(
            &m,
            &[
                order(&[(2, "1"), (3, "SP-1^A"), (5, "^^^BZEC"), (21, "B-7")]),
                "R|1|^^^BZEC|412|ng/mL||Y||F".into(),
                "R|2|^^^COC300|870|ng/mL||Y||F".into(),
                order(&[(2, "2"), (3, "SP-2^A"), (5, "^^^BZEC"), (21, "B-7")]),
                "R|1|^^^BZEC|180|ng/mL||N||F".into(),
                order(&[(2, "3"), (3, "QC-NEG^B"), (12, "Q"), (21, "B-7")]),
                "R|1|^^^BZEC|0|ng/mL||Y||F".into(),
                order(&[(2, "4"), (3, "CAL-1"), (21, "B-7")]),
                "R|1|^^^BZEC|98|ng/mL||Y||F".into(),
            ],
        )
        .unwrap();
        let seen: Vec<_> = groups
            .iter()
            .map(|g| {
                (
                    g.specimen_id.as_str(),
                    g.role,
                    g.run_id.as_deref(),
                    g.bottle,
                    g.results
                        .iter()
                        .map(|o| (o.code.as_str(), o.acceptable))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "SP-1",
                    None,
                    Some("B-7"),
                    Bottle::Primary,
                    vec![("BZEC", Some(true)), ("COC300", None)]
                ),
                (
                    "SP-2",
                    None,
                    Some("B-7"),
                    Bottle::Primary,
                    vec![("BZEC", Some(false))]
                ),
                // A control (O-12 "Q") is no bottle of a donor's specimen.
                (
                    "QC-NEG",
                    Some(SampleRole::Control),
                    Some("B-7"),
                    Bottle::Primary,
                    vec![("BZEC", Some(true))]
                ),
                // The action code cannot name a calibrator: its prefix does, its rule the role.
                (
                    "CAL-1",
                    Some(SampleRole::Calibrator),
                    Some("B-7"),
                    Bottle::Primary,
                    vec![("BZEC", Some(true))]
                ),
            ]
        );
        assert_eq!(groups[0].results[0].tier, None);
        // The run id is required where the mapping names it, and must be an identifier.
        for (run, err) in [
            ("", UseError::MissingRunId { index: 3 }),
            ("B 7", UseError::InvalidRunId { index: 3 }),
        ] {
            assert_eq!(
                run_with(
                    &m,
                    &[
                        order(&[(2, "1"), (3, "SP-1"), (21, run)]),
                        "R|1|^^^BZEC|412|ng/mL||Y||F".into(),
                    ],
                ),
                Err(err)
            );
        }
        // Without a run id position: bracketing, no run id read.
        let mut bracketing = m.clone();
        if let Some(r) = bracketing.runs.as_mut() {
            r.run_id = None;
        }
        let g = run_with(
            &bracketing,
            &[
                order(&[(2, "1"), (3, "SP-1")]),
                "R|1|^^^BZEC|412|ng/mL||Y||F".into(),
            ],
        )
        .unwrap();
        assert_eq!(g[0].run_id, None);
        // The HL7 view carries the runs (kind, how runs are delimited and QC samples known,
        // the rules) to the shared result path.
        let view = m.hl7_view();
        let r = view.runs.as_ref().unwrap();
        assert!(r.run_id.is_some() && r.role.is_some() && r.acceptable.is_some());
        assert_eq!(r.qc, m.runs.as_ref().unwrap().qc);
        assert_eq!(r.kind, RunKind::Confirmation);
    }

    #[test]
    fn runs_positions_are_checked_as_astm_positions() {
        let bad = RUNS_MAPPING
            .replace("run_id = \"O-21\"", "run_id = \"R-2\"")
            .replace("field = \"O-12\"", "field = \"R-3\"")
            .replace("field = \"R-7\"", "field = \"O-12\"");
        let m: AstmMapping = toml::from_str(&bad).unwrap();
        let keys: Vec<String> = m.validate_shape().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            ["runs.role.field", "runs.run_id", "runs.acceptable.field"]
        );
        // The shared checks of [analyzer.mapping.runs] apply: a confirmation needs its flag,
        // every test code a QC rule, a confirmation run a named reviewer.
        let shared = RUNS_MAPPING
            .replace("acceptable = { field = \"R-7\", acceptable = [\"Y\"] }\n", "")
            .replace("kind = \"confirmation\"\nrun_id", "kind = \"confirmation\"\nauto_accept = true\nrun_id")
            .replace(
                "  { code = \"COC300\", sample = \"QC-NEG\", level = \"negative\", expect = \"below\", value = 300 },\n",
                "",
            );
        let m: AstmMapping = toml::from_str(&shared).unwrap();
        let keys: Vec<String> = m.validate_shape().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["runs.acceptable", "runs.auto_accept", "runs.qc"]);
        // Neither a role nor prefixes: controls could not be recognised.
        let none = RUNS_MAPPING
            .replace("role = { field = \"O-12\", control = [\"Q\"] }\n", "")
            .replace("qc_sample_prefixes = [\"CAL-\"]\n", "");
        let m: AstmMapping = toml::from_str(&none).unwrap();
        let keys: Vec<String> = m.validate_shape().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["runs.role"]);
    }
}
