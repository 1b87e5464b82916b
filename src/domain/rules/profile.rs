//! Rule profiles: one edition of Part 40 as data.
//!
//! A profile file (`config/profiles/NAME.toml`) holds every number the rules use — cutoffs,
//! validity criteria, the correction window, which results are kept a year — each with a comment
//! citing its section. Adding an edition means adding a file. Parsing is pure (text in, profile
//! out); reading the file is the caller's business.

use super::measure;
use crate::domain::calendar::Date;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A validity measure the engine knows how to read from a specimen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Measure {
    /// Creatinine, mg/dL.
    Creatinine,
    /// Specific gravity (dimensionless, read to 4 decimal places).
    SpecificGravity,
    /// pH.
    Ph,
    /// Nitrite, mcg/mL.
    Nitrite,
}

impl Measure {
    pub const ALL: [Measure; 4] = [
        Measure::Creatinine,
        Measure::SpecificGravity,
        Measure::Ph,
        Measure::Nitrite,
    ];

    /// The key used in cases, profiles and reports.
    pub fn key(self) -> &'static str {
        match self {
            Measure::Creatinine => "creatinine",
            Measure::SpecificGravity => "specific_gravity",
            Measure::Ph => "ph",
            Measure::Nitrite => "nitrite",
        }
    }

    pub fn from_key(k: &str) -> Option<Measure> {
        Measure::ALL.into_iter().find(|m| m.key() == k)
    }

    /// How the measure is written for a reader (with its unit).
    pub fn label(self) -> &'static str {
        match self {
            Measure::Creatinine => "creatinine (mg/dL)",
            Measure::SpecificGravity => "specific gravity",
            Measure::Ph => "pH",
            Measure::Nitrite => "nitrite (mcg/mL)",
        }
    }
}

/// A comparison operator in a validity criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    pub fn holds(self, value: Decimal, limit: Decimal) -> bool {
        match self {
            Op::Lt => value < limit,
            Op::Le => value <= limit,
            Op::Gt => value > limit,
            Op::Ge => value >= limit,
        }
    }
    fn text(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// One atom of a validity criterion.
#[derive(Debug, Clone, PartialEq)]
pub enum Atom {
    /// `measure op limit`; false when the measure was not reported.
    Compare {
        measure: Measure,
        op: Op,
        limit: Decimal,
    },
    /// An adulterant was identified (40.95(a)(1)).
    AdulterantIdentified,
    /// An interfering substance or a test that could not be completed.
    Interference,
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Compare { measure, op, limit } => {
                write!(f, "{} {} {}", measure.key(), op.text(), limit)
            }
            Atom::AdulterantIdentified => f.write_str("adulterant_identified"),
            Atom::Interference => f.write_str("interference"),
        }
    }
}

/// The validity categories a criterion can establish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidityResult {
    Dilute,
    Adulterated,
    Substituted,
    Invalid,
}

impl ValidityResult {
    pub fn key(self) -> &'static str {
        match self {
            ValidityResult::Dilute => "dilute",
            ValidityResult::Adulterated => "adulterated",
            ValidityResult::Substituted => "substituted",
            ValidityResult::Invalid => "invalid",
        }
    }
}

/// One validity criterion: every clause must hold; a clause holds when any of its atoms does.
#[derive(Debug, Clone, PartialEq)]
pub struct Criterion {
    pub result: ValidityResult,
    pub cite: String,
    pub remark: String,
    pub clauses: Vec<Vec<Atom>>,
    /// The edition asks for the initial and the confirmatory test on two separate aliquots
    /// (today's 40.88(b) substituted, 40.89 adulterated): the finding stands only when it holds
    /// on both.
    pub two_aliquots: bool,
}

/// A confirmation analyte's extra condition (e.g. methamphetamine needs amphetamine ≥ 200).
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    pub analyte: String,
    pub at_least: Decimal,
    pub cite: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Analyte {
    pub key: String,
    pub name: String,
    pub confirmation_cutoff: Decimal,
    pub requires: Option<Requirement>,
    /// Quantitative value always reported at or above this (40.97(f) in 2001, 40.85(d) today),
    /// with the section that says so.
    pub always_quantitate_at: Option<Decimal>,
    pub always_quantitate_cite: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DrugClass {
    pub key: String,
    pub name: String,
    pub initial_cutoff: Decimal,
    pub analytes: Vec<Analyte>,
    /// Other analyzer-mapping targets that mean this class's initial test in this edition (an
    /// instrument names what it measures; e.g. the 2000 ng/mL opiate immunoassay is `opiates`
    /// in the 2001 table and `codeine_morphine` today). Never another class's key.
    pub measured_as: Vec<String>,
}

/// A validity test the edition requires before a result may be reviewed (40.91 in 2001,
/// 40.87 today): on every specimen, or only when its `when` clauses hold (specific gravity when
/// creatinine is below 20 mg/dL).
#[derive(Debug, Clone, PartialEq)]
pub struct RequiredTest {
    pub key: String,
    pub cite: String,
    /// The result targets that show the test was done, any one of them: a validity measure
    /// with a value (e.g. `nitrite`), or an adulterant or interference check of that name
    /// (e.g. `oxidant`).
    pub done_by: Vec<String>,
    /// Every clause must hold for the test to be required (as in `[[validity]]`); empty: on
    /// every specimen.
    pub when: Vec<Vec<Atom>>,
}

/// What happens when a correctable flaw was not corrected in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExpiry {
    /// Rejected for testing (40.83(e)(3), (g)(2)).
    Reject,
    /// Reported as tested (40.83(f)(2)).
    Report,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Correctable {
    pub business_days: u32,
    pub collector_certification: OnExpiry,
    pub temperature: OnExpiry,
    pub form: OnExpiry,
}

/// Result categories named in a profile's reporting rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reportable {
    Positive,
    Adulterated,
    Substituted,
    Invalid,
}

/// Numerical values an edition requires in every report of a result (40.97(a) today).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequiredValue {
    /// Each positive analyte's value (40.97(a)(2)(i), from 2010).
    Positive,
    /// Creatinine and specific gravity of a dilute result (40.97(a), 40.88(a)).
    Dilute,
    /// Creatinine and specific gravity of a substituted result (40.97(a), 40.88(b)).
    Substituted,
    /// The value supporting an adulterated result (40.89(b)).
    Adulterated,
    /// The pH of a result invalid because of its pH.
    InvalidPh,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reporting {
    /// Results whose quantitative values go to the MRO on written request (40.97(e)).
    pub quantitate_on_request: BTreeSet<Reportable>,
    /// Values every report carries whatever the MRO asked (empty in 2001).
    pub values_required: BTreeSet<RequiredValue>,
    /// The sections requiring them (set when `values_required` is not empty).
    pub values_cite: String,
    /// Results whose specimen is kept at least one year (40.99(a)).
    pub retain_one_year: BTreeSet<Reportable>,
}

/// The testing program a specimen is collected under (the CCF says which).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Program {
    /// DOT, 49 CFR Part 40.
    #[default]
    Dot,
    /// The HHS Mandatory Guidelines (federal agencies).
    Hhs,
}

impl Program {
    pub fn key(self) -> &'static str {
        match self {
            Program::Dot => "dot",
            Program::Hhs => "hhs",
        }
    }
}

/// The specimen an edition's rules are written for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SpecimenType {
    #[default]
    Urine,
    OralFluid,
}

impl SpecimenType {
    pub fn key(self) -> &'static str {
        match self {
            SpecimenType::Urine => "urine",
            SpecimenType::OralFluid => "oral_fluid",
        }
    }

    pub fn from_key(k: &str) -> Option<SpecimenType> {
        [SpecimenType::Urine, SpecimenType::OralFluid]
            .into_iter()
            .find(|t| t.key() == k)
    }

    /// As a sentence says it ("oral fluid").
    pub fn words(self) -> &'static str {
        match self {
            SpecimenType::Urine => "urine",
            SpecimenType::OralFluid => "oral fluid",
        }
    }
}

/// Which date of a specimen decides whether an edition applies to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectingDate {
    /// The CCF collection date (the DOT editions).
    CollectedOn,
    /// The date the laboratory received (accessioned) the specimen (the HHS 2025 panels).
    ReceivedOn,
}

impl SelectingDate {
    pub fn key(self) -> &'static str {
        match self {
            SelectingDate::CollectedOn => "collected_on",
            SelectingDate::ReceivedOn => "received_on",
        }
    }
}

/// The specimens an edition covers: those whose selecting date is in `from..=to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub selected_by: SelectingDate,
    pub from: Date,
    /// Last day covered (inclusive); `None`: still in force.
    pub to: Option<Date>,
    /// Where the dates come from.
    pub cite: String,
}

impl Period {
    pub fn covers(&self, d: Date) -> bool {
        d >= self.from && self.to.is_none_or(|t| d <= t)
    }

    /// True when the two periods share a day.
    pub fn overlaps(&self, other: &Period) -> bool {
        let starts_before_other_ends = other.to.is_none_or(|t| self.from <= t);
        let other_starts_before_end = self.to.is_none_or(|t| other.from <= t);
        starts_before_other_ends && other_starts_before_end
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to {
            Some(t) => write!(f, "{} {} to {}", self.selected_by.key(), self.from, t),
            None => write!(f, "{} from {}", self.selected_by.key(), self.from),
        }
    }
}

/// One edition of the rules, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub title: String,
    pub program: Program,
    pub specimen_type: SpecimenType,
    pub period: Period,
    pub classes: Vec<DrugClass>,
    pub validity: Vec<Criterion>,
    /// The validity tests every specimen needs before review, in profile order (none for
    /// oral fluid).
    pub validity_tests: Vec<RequiredTest>,
    pub correctable: Correctable,
    pub reporting: Reporting,
}

impl Profile {
    pub fn class(&self, key: &str) -> Option<&DrugClass> {
        self.classes.iter().find(|c| c.key == key)
    }

    /// The class an analyzer-mapping target of kind `initial` means in this edition: the class
    /// with that key, else the one that lists it in `measured_as`.
    pub fn class_for_target(&self, target: &str) -> Option<&DrugClass> {
        self.class(target).or_else(|| {
            self.classes
                .iter()
                .find(|c| c.measured_as.iter().any(|m| m == target))
        })
    }

    pub fn analyte(&self, key: &str) -> Option<(&DrugClass, &Analyte)> {
        self.classes
            .iter()
            .find_map(|c| c.analytes.iter().find(|a| a.key == key).map(|a| (c, a)))
    }

    /// Parses and validates profile text. `expected_name` (the file stem) must match `name`.
    pub fn parse(text: &str, expected_name: Option<&str>) -> Result<Profile, ProfileError> {
        let raw: RawProfile = {
            let de = toml::Deserializer::parse(text).map_err(|e| ProfileError {
                problems: vec![Problem::new("(file)", toml_message(&e.to_string()))],
            })?;
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                ProfileError {
                    problems: vec![Problem::new(&path, toml_message(&e.inner().to_string()))],
                }
            })?
        };
        raw.validate(expected_name)
    }
}

fn toml_message(s: &str) -> String {
    // toml's messages quote the offending line; keep only the first line (position + reason).
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .take(1)
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_string()
}

/// One thing wrong in a profile, with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub problem: String,
}

impl Problem {
    fn new(key: &str, problem: impl Into<String>) -> Problem {
        Problem {
            key: key.to_string(),
            problem: problem.into(),
        }
    }
}

/// Everything wrong with a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", p.key, p.problem)?;
        }
        Ok(())
    }
}

impl std::error::Error for ProfileError {}

// ---- the file format -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    title: String,
    program: Program,
    specimen_type: SpecimenType,
    period: RawPeriod,
    #[serde(rename = "class")]
    classes: Vec<RawClass>,
    #[serde(rename = "validity", default)]
    validity: Vec<RawCriterion>,
    #[serde(rename = "validity_test", default)]
    validity_tests: Vec<RawRequiredTest>,
    correctable: RawCorrectable,
    reporting: RawReporting,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeriod {
    selected_by: SelectingDate,
    from: Date,
    #[serde(default)]
    to: Option<Date>,
    cite: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    key: String,
    name: String,
    #[serde(deserialize_with = "measure::deserialize")]
    initial_cutoff: Decimal,
    #[serde(rename = "analyte")]
    analytes: Vec<RawAnalyte>,
    #[serde(default)]
    measured_as: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnalyte {
    key: String,
    name: String,
    #[serde(deserialize_with = "measure::deserialize")]
    confirmation_cutoff: Decimal,
    #[serde(default)]
    requires: Option<RawRequirement>,
    #[serde(default, deserialize_with = "measure::deserialize_opt")]
    always_quantitate_at: Option<Decimal>,
    #[serde(default)]
    always_quantitate_cite: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirement {
    analyte: String,
    #[serde(deserialize_with = "measure::deserialize")]
    at_least: Decimal,
    cite: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCriterion {
    result: ValidityResult,
    cite: String,
    remark: String,
    when: Vec<String>,
    #[serde(default)]
    two_aliquots: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequiredTest {
    key: String,
    cite: String,
    done_by: Vec<String>,
    #[serde(default)]
    when: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCorrectable {
    business_days: i64,
    collector_certification: OnExpiry,
    temperature: OnExpiry,
    form: OnExpiry,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReporting {
    quantitate_on_request: Vec<Reportable>,
    values_required: Vec<RequiredValue>,
    #[serde(default)]
    values_cite: String,
    retain_one_year: Vec<Reportable>,
}

/// Parses one clause: atoms joined by `|`.
pub fn parse_clause(text: &str) -> Result<Vec<Atom>, String> {
    let mut atoms = Vec::new();
    for part in text.split('|') {
        let t = part.trim();
        if t.is_empty() {
            return Err("empty alternative".into());
        }
        atoms.push(parse_atom(t)?);
    }
    Ok(atoms)
}

fn parse_atom(t: &str) -> Result<Atom, String> {
    match t {
        "adulterant_identified" => return Ok(Atom::AdulterantIdentified),
        "interference" => return Ok(Atom::Interference),
        _ => {}
    }
    let words: Vec<&str> = t.split_whitespace().collect();
    if words.len() != 3 {
        return Err(format!(
            "`{t}` is not `measure op number`, `adulterant_identified` or `interference`"
        ));
    }
    let measure = Measure::from_key(words[0]).ok_or_else(|| {
        format!(
            "unknown measure `{}` (known: creatinine, specific_gravity, ph, nitrite)",
            words[0]
        )
    })?;
    let op = match words[1] {
        "<" => Op::Lt,
        "<=" => Op::Le,
        ">" => Op::Gt,
        ">=" => Op::Ge,
        o => return Err(format!("unknown operator `{o}` (use <, <=, > or >=)")),
    };
    let limit = measure::parse(words[2]).map_err(|e| format!("limit `{}`: {e}", words[2]))?;
    if limit.is_sign_negative() {
        return Err(format!("limit `{}` is negative", words[2]));
    }
    Ok(Atom::Compare { measure, op, limit })
}

impl RawProfile {
    fn validate(self, expected_name: Option<&str>) -> Result<Profile, ProfileError> {
        let mut problems = Vec::new();
        let mut p = |k: String, m: String| problems.push(Problem { key: k, problem: m });

        if self.name.trim().is_empty() {
            p("name".into(), "must not be empty".into());
        }
        if let Some(stem) = expected_name
            && stem != self.name
        {
            p(
                "name".into(),
                format!("is `{}` but the file is named `{stem}.toml`", self.name),
            );
        }
        if let Some(to) = self.period.to
            && to < self.period.from
        {
            p(
                "period.to".into(),
                format!("{to} is before period.from {}", self.period.from),
            );
        }
        if self.period.cite.trim().is_empty() {
            p(
                "period.cite".into(),
                "must name where the dates come from".into(),
            );
        }
        if self.classes.is_empty() {
            p(
                "class".into(),
                "a profile needs at least one drug class".into(),
            );
        }
        let mut class_keys = BTreeSet::new();
        let mut analyte_keys = BTreeSet::new();
        for (i, c) in self.classes.iter().enumerate() {
            let at = format!("class[{i}]");
            if !valid_key(&c.key) {
                p(
                    format!("{at}.key"),
                    "must be lower-case letters, digits or `_`".into(),
                );
            }
            if !class_keys.insert(c.key.clone()) {
                p(
                    format!("{at}.key"),
                    format!("class `{}` appears twice", c.key),
                );
            }
            if c.initial_cutoff <= Decimal::ZERO {
                p(
                    format!("{at}.initial_cutoff"),
                    "must be greater than zero".into(),
                );
            }
            if c.analytes.is_empty() {
                p(
                    format!("{at}.analyte"),
                    format!("class `{}` has no confirmation analyte", c.key),
                );
            }
            for (j, a) in c.analytes.iter().enumerate() {
                let at = format!("{at}.analyte[{j}]");
                if !valid_key(&a.key) {
                    p(
                        format!("{at}.key"),
                        "must be lower-case letters, digits or `_`".into(),
                    );
                }
                if !analyte_keys.insert(a.key.clone()) {
                    p(
                        format!("{at}.key"),
                        format!("analyte `{}` appears twice", a.key),
                    );
                }
                if a.confirmation_cutoff <= Decimal::ZERO {
                    p(
                        format!("{at}.confirmation_cutoff"),
                        "must be greater than zero".into(),
                    );
                }
                if let Some(q) = a.always_quantitate_at
                    && q <= Decimal::ZERO
                {
                    p(
                        format!("{at}.always_quantitate_at"),
                        "must be greater than zero".into(),
                    );
                }
                let cited = a
                    .always_quantitate_cite
                    .as_deref()
                    .is_some_and(|c| !c.trim().is_empty());
                if a.always_quantitate_at.is_some() != cited {
                    p(
                        format!("{at}.always_quantitate_cite"),
                        "must name the section exactly when always_quantitate_at is set".into(),
                    );
                }
                if let Some(r) = &a.requires {
                    if r.at_least < Decimal::ZERO {
                        p(
                            format!("{at}.requires.at_least"),
                            "must not be negative".into(),
                        );
                    }
                    if r.analyte == a.key {
                        p(
                            format!("{at}.requires.analyte"),
                            "an analyte cannot require itself".into(),
                        );
                    }
                    if r.cite.trim().is_empty() {
                        p(
                            format!("{at}.requires.cite"),
                            "must name the section".into(),
                        );
                    }
                }
            }
        }
        let mut aliases = BTreeSet::new();
        for (i, c) in self.classes.iter().enumerate() {
            for (k, m) in c.measured_as.iter().enumerate() {
                let at = format!("class[{i}].measured_as[{k}]");
                if !valid_key(m) {
                    p(at, "must be lower-case letters, digits or `_`".into());
                } else if class_keys.contains(m) {
                    p(
                        at,
                        format!(
                            "`{m}` is a class of this profile; it cannot also mean `{}`",
                            c.key
                        ),
                    );
                } else if !aliases.insert(m.clone()) {
                    p(at, format!("`{m}` is listed by two classes"));
                }
            }
        }
        for (i, c) in self.classes.iter().enumerate() {
            for (j, a) in c.analytes.iter().enumerate() {
                if let Some(r) = &a.requires
                    && !analyte_keys.contains(&r.analyte)
                {
                    p(
                        format!("class[{i}].analyte[{j}].requires.analyte"),
                        format!("`{}` is not an analyte of this profile", r.analyte),
                    );
                }
            }
        }
        let mut validity = Vec::new();
        // Oral fluid has no validity test in practice (no HHS-approved biomarker); a urine
        // edition without validity criteria is a mistake.
        if self.validity.is_empty() && self.specimen_type == SpecimenType::Urine {
            p(
                "validity".into(),
                "a urine profile needs its validity criteria".into(),
            );
        }
        for (i, v) in self.validity.iter().enumerate() {
            let at = format!("validity[{i}]");
            if v.cite.trim().is_empty() {
                p(format!("{at}.cite"), "must name the section".into());
            }
            if v.remark.trim().is_empty() {
                p(format!("{at}.remark"), "must say what the MRO reads".into());
            }
            if v.when.is_empty() {
                p(format!("{at}.when"), "needs at least one clause".into());
            }
            let mut clauses = Vec::new();
            for (j, w) in v.when.iter().enumerate() {
                match parse_clause(w) {
                    Ok(c) => clauses.push(c),
                    Err(e) => p(format!("{at}.when[{j}]"), e),
                }
            }
            validity.push(Criterion {
                result: v.result,
                cite: v.cite.clone(),
                remark: v.remark.clone(),
                clauses,
                two_aliquots: v.two_aliquots,
            });
        }

        // The validity tests required before review (40.91 in 2001, 40.87 today).
        if self.validity_tests.is_empty() && self.specimen_type == SpecimenType::Urine {
            p(
                "validity_test".into(),
                "a urine profile needs the validity tests every specimen must have (40.91 in 2001, 40.87 today)".into(),
            );
        }
        if !self.validity_tests.is_empty() && self.validity.is_empty() {
            p(
                "validity_test".into(),
                "an edition without validity criteria cannot require validity tests".into(),
            );
        }
        let mut test_keys = BTreeSet::new();
        let mut validity_tests = Vec::new();
        for (i, t) in self.validity_tests.iter().enumerate() {
            let at = format!("validity_test[{i}]");
            if !valid_key(&t.key) {
                p(
                    format!("{at}.key"),
                    "must be lower-case letters, digits or `_`".into(),
                );
            } else if !test_keys.insert(t.key.clone()) {
                p(
                    format!("{at}.key"),
                    format!("test `{}` appears twice", t.key),
                );
            }
            if t.cite.trim().is_empty() {
                p(format!("{at}.cite"), "must name the section".into());
            }
            if t.done_by.is_empty() {
                p(
                    format!("{at}.done_by"),
                    "must name at least one result target".into(),
                );
            }
            for (j, d) in t.done_by.iter().enumerate() {
                if !valid_key(d) {
                    p(
                        format!("{at}.done_by[{j}]"),
                        "must be lower-case letters, digits or `_`".into(),
                    );
                }
            }
            let mut when = Vec::new();
            for (j, w) in t.when.iter().enumerate() {
                match parse_clause(w) {
                    Ok(c) => when.push(c),
                    Err(e) => p(format!("{at}.when[{j}]"), e),
                }
            }
            validity_tests.push(RequiredTest {
                key: t.key.clone(),
                cite: t.cite.clone(),
                done_by: t.done_by.clone(),
                when,
            });
        }

        let days = self.correctable.business_days;
        if !(1..=30).contains(&days) {
            p(
                "correctable.business_days".into(),
                "must be between 1 and 30".into(),
            );
        }
        if !self.reporting.values_required.is_empty()
            && self.reporting.values_cite.trim().is_empty()
        {
            p(
                "reporting.values_cite".into(),
                "must name the sections requiring the values".into(),
            );
        }
        if self.reporting.retain_one_year.is_empty() {
            p(
                "reporting.retain_one_year".into(),
                "must name the results kept a year (40.99(a))".into(),
            );
        }

        if !problems.is_empty() {
            return Err(ProfileError { problems });
        }

        let classes = self
            .classes
            .into_iter()
            .map(|c| DrugClass {
                key: c.key,
                name: c.name,
                initial_cutoff: c.initial_cutoff,
                analytes: c
                    .analytes
                    .into_iter()
                    .map(|a| Analyte {
                        key: a.key,
                        name: a.name,
                        confirmation_cutoff: a.confirmation_cutoff,
                        requires: a.requires.map(|r| Requirement {
                            analyte: r.analyte,
                            at_least: r.at_least,
                            cite: r.cite,
                        }),
                        always_quantitate_at: a.always_quantitate_at,
                        always_quantitate_cite: a.always_quantitate_cite,
                    })
                    .collect(),
                measured_as: c.measured_as,
            })
            .collect();
        Ok(Profile {
            name: self.name,
            title: self.title,
            program: self.program,
            specimen_type: self.specimen_type,
            period: Period {
                selected_by: self.period.selected_by,
                from: self.period.from,
                to: self.period.to,
                cite: self.period.cite,
            },
            classes,
            validity,
            validity_tests,
            correctable: Correctable {
                business_days: days as u32,
                collector_certification: self.correctable.collector_certification,
                temperature: self.correctable.temperature,
                form: self.correctable.form,
            },
            reporting: Reporting {
                quantitate_on_request: self.reporting.quantitate_on_request.into_iter().collect(),
                values_required: self.reporting.values_required.into_iter().collect(),
                values_cite: self.reporting.values_cite,
                retain_one_year: self.reporting.retain_one_year.into_iter().collect(),
            },
        })
    }
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The set of profiles a daemon or `evaluate` run can choose from, by name.
#[derive(Debug, Clone, Default)]
pub struct ProfileSet {
    profiles: BTreeMap<String, Profile>,
}

impl ProfileSet {
    pub fn new() -> ProfileSet {
        ProfileSet::default()
    }
    pub fn insert(&mut self, p: Profile) -> Option<Profile> {
        self.profiles.insert(p.name.clone(), p)
    }
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(|s| s.as_str())
    }
    pub fn len(&self) -> usize {
        self.profiles.len()
    }
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
title = "test"
program = "dot"
specimen_type = "urine"
[period]
selected_by = "collected_on"
from = "2001-08-01"
to = "2010-09-30"
cite = "test"
[[class]]
key = "pcp"
name = "PCP"
initial_cutoff = 25
[[class.analyte]]
key = "pcp"
name = "PCP"
confirmation_cutoff = 25
[[validity]]
result = "adulterated"
cite = "40.95"
remark = "nitrite high"
when = ["nitrite >= 500"]
[[validity_test]]
key = "oxidizing_adulterant"
cite = "40.91(c)"
done_by = ["nitrite", "oxidant"]
[[validity_test]]
key = "specific_gravity"
cite = "40.91(a)"
done_by = ["specific_gravity"]
when = ["creatinine < 20"]
[correctable]
business_days = 5
collector_certification = "reject"
temperature = "report"
form = "reject"
[reporting]
quantitate_on_request = ["positive"]
values_required = []
retain_one_year = ["positive"]
"#;

    #[test]
    fn minimal_profile_loads() {
        let p = Profile::parse(MINIMAL, Some("t")).unwrap();
        assert_eq!(
            p.classes[0].analytes[0].confirmation_cutoff,
            Decimal::from(25)
        );
        assert_eq!(p.validity[0].clauses.len(), 1);
    }

    #[test]
    fn name_must_match_file() {
        let e = Profile::parse(MINIMAL, Some("other")).unwrap_err();
        assert_eq!(e.problems[0].key, "name");
    }

    #[test]
    fn negative_and_zero_cutoffs_refused() {
        let bad = MINIMAL
            .replace("initial_cutoff = 25", "initial_cutoff = -1")
            .replace("confirmation_cutoff = 25", "confirmation_cutoff = 0");
        let e = Profile::parse(&bad, None).unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"class[0].initial_cutoff"), "{keys:?}");
        assert!(
            keys.contains(&"class[0].analyte[0].confirmation_cutoff"),
            "{keys:?}"
        );
    }

    #[test]
    fn unknown_keys_refused_with_path() {
        let bad = MINIMAL.replace("initial_cutoff = 25", "initial_cutoff = 25\ncutof = 3");
        let e = Profile::parse(&bad, None).unwrap_err();
        assert!(e.to_string().contains("cutof"), "{e}");
        assert!(e.problems[0].key.starts_with("class[0]"), "{e}");
    }

    #[test]
    fn requirement_must_name_an_analyte() {
        let bad = MINIMAL.replace(
            "confirmation_cutoff = 25",
            "confirmation_cutoff = 25\nrequires = { analyte = \"amphetamine\", at_least = 200, cite = \"x\" }",
        );
        let e = Profile::parse(&bad, None).unwrap_err();
        assert_eq!(e.problems[0].key, "class[0].analyte[0].requires.analyte");
    }

    #[test]
    fn clauses_parse_and_refuse() {
        assert_eq!(parse_clause("ph < 3 | ph >= 11").unwrap().len(), 2);
        assert!(parse_clause("ph << 3").is_err());
        assert!(parse_clause("colour < 3").is_err());
        assert!(parse_clause("ph < x").is_err());
        assert!(parse_clause("ph < -1").is_err());
        assert!(parse_clause("ph < 3 |").is_err());
        let bad = MINIMAL.replace("nitrite >= 500", "nitrate >= 500");
        let e = Profile::parse(&bad, None).unwrap_err();
        assert_eq!(e.problems[0].key, "validity[0].when[0]");
    }

    #[test]
    fn validity_tests_load_and_refuse() {
        let p = Profile::parse(MINIMAL, Some("t")).unwrap();
        let keys: Vec<&str> = p.validity_tests.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["oxidizing_adulterant", "specific_gravity"]);
        assert!(p.validity_tests[0].when.is_empty());
        assert_eq!(p.validity_tests[1].when.len(), 1);
        assert_eq!(p.validity_tests[0].done_by, ["nitrite", "oxidant"]);

        // A urine edition must list its tests.
        let start = MINIMAL.find("[[validity_test]]").unwrap();
        let end = MINIMAL.find("[correctable]").unwrap();
        let none = format!("{}{}", &MINIMAL[..start], &MINIMAL[end..]);
        let e = Profile::parse(&none, None).unwrap_err();
        assert_eq!(e.problems[0].key, "validity_test", "{e}");
        // Each key, cite, target and clause is checked, naming its key.
        let bad = MINIMAL
            .replace("cite = \"40.91(c)\"", "cite = \" \"")
            .replace("done_by = [\"specific_gravity\"]", "done_by = []")
            .replace(
                "when = [\"creatinine < 20\"]",
                "when = [\"creatinin < 20\"]",
            )
            .replace(
                "done_by = [\"nitrite\", \"oxidant\"]",
                "done_by = [\"Nitrite\"]",
            );
        let e = Profile::parse(&bad, None).unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "validity_test[0].cite",
                "validity_test[0].done_by[0]",
                "validity_test[1].done_by",
                "validity_test[1].when[0]",
            ],
            "{e}"
        );
        let twice = MINIMAL.replace(
            "key = \"specific_gravity\"",
            "key = \"oxidizing_adulterant\"",
        );
        let e = Profile::parse(&twice, None).unwrap_err();
        assert_eq!(e.problems[0].key, "validity_test[1].key", "{e}");
        assert!(e.to_string().contains("appears twice"), "{e}");
    }

    #[test]
    fn duplicate_analyte_refused() {
        let bad = MINIMAL.replace(
            "[[validity]]",
            "[[class.analyte]]\nkey = \"pcp\"\nname = \"again\"\nconfirmation_cutoff = 25\n[[validity]]",
        );
        let e = Profile::parse(&bad, None).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
    }
}
