//! `custodian evaluate`: the rules engine over a file of cases (JSON Lines), as fixed by the
//! evaluate contract. One verdict per input line, same order; a line that cannot be read gets
//! `{"id":..,"error":".."}` and the run still evaluates the rest.
//!
//! This module is pure apart from the reader and writer it is handed; the verdicts come from
//! [`crate::domain::rules::evaluate`], the function the daemon calls.

use crate::domain::calendar::Date;
use crate::domain::rules::{
    self, Accession, NoEdition, Profile, ProfileSet, Program, Specimen, SpecimenType, Validity,
    Verdict, measure,
};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

/// One input line as the contract defines it. Unknown keys are an error for the line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    id: String,
    #[serde(default)]
    profile: Option<String>,
    /// CCF collection date: chooses the DOT edition in force that day.
    #[serde(default)]
    collected_on: Option<Date>,
    /// Date the laboratory received (accessioned) the specimen: chooses the HHS 2025 panels.
    #[serde(default)]
    received_on: Option<Date>,
    /// `dot` when absent.
    #[serde(default)]
    program: Option<Program>,
    /// `urine` when absent.
    #[serde(default)]
    specimen_type: Option<SpecimenType>,
    #[serde(default)]
    accession: Accession,
    #[serde(default)]
    validity: Validity,
    #[serde(default, deserialize_with = "measure::deserialize_map")]
    initial: BTreeMap<String, Decimal>,
    #[serde(default, deserialize_with = "measure::deserialize_map")]
    confirmation: BTreeMap<String, Decimal>,
    #[serde(default)]
    mro_requested_quantitation: bool,
}

/// Chooses profiles and evaluates lines.
pub struct Evaluator<'a> {
    profiles: &'a ProfileSet,
    /// `--profile`: applies to every case that names none (before any date).
    forced_profile: Option<String>,
    /// The configured default: applies when a case has no selecting date.
    default_profile: String,
}

/// The outcome of one line: the JSON to print, and whether it was evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct LineOutcome {
    pub output: Value,
    pub evaluated: bool,
}

/// Why an evaluation run could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("profile `{0}` is not loaded (loaded: {1})")]
    UnknownProfile(String, String),
}

impl<'a> Evaluator<'a> {
    /// `default_profile` is the configured default (`rules.default_profile`): it judges cases
    /// that name no profile and carry no selecting date.
    pub fn new(profiles: &'a ProfileSet, default_profile: &str) -> Result<Self, SetupError> {
        Self::with_profile(profiles, None, default_profile)
    }

    /// As [`Evaluator::new`], with `evaluate --profile NAME`: the named profile judges every
    /// case that names none, whatever its dates (a case's own `profile` still wins).
    pub fn with_profile(
        profiles: &'a ProfileSet,
        forced_profile: Option<&str>,
        default_profile: &str,
    ) -> Result<Self, SetupError> {
        for name in forced_profile.into_iter().chain([default_profile]) {
            if profiles.get(name).is_none() {
                return Err(SetupError::UnknownProfile(
                    name.to_string(),
                    profiles.names().collect::<Vec<_>>().join(", "),
                ));
            }
        }
        Ok(Evaluator {
            profiles,
            forced_profile: forced_profile.map(str::to_string),
            default_profile: default_profile.to_string(),
        })
    }

    /// The edition that judges `case`, as the contract orders it: the case's `profile`, else
    /// `--profile`, else the one profile of its program and specimen type covering its
    /// selecting date, else (no selecting date) the configured default. A date no profile
    /// covers is an error, never a neighbouring edition.
    fn choose(&self, case: &Case) -> Result<&'a Profile, String> {
        let program = case.program.unwrap_or_default();
        let specimen_type = case.specimen_type.unwrap_or_default();
        if let (Some(c), Some(r)) = (case.collected_on, case.received_on)
            && r < c
        {
            return Err(format!("received_on: {r} is before collected_on {c}"));
        }
        let named = case
            .profile
            .as_deref()
            .map(|n| ("profile", n))
            .or(self.forced_profile.as_deref().map(|n| ("--profile", n)));
        let profile = match named {
            Some((key, name)) => self.profiles.get(name).ok_or_else(|| {
                format!("{key}: `{name}` is not loaded (loaded: {})", self.loaded())
            })?,
            None => match rules::select(
                self.profiles,
                program,
                specimen_type,
                case.collected_on,
                case.received_on,
            ) {
                Ok(p) => p,
                Err(NoEdition::NoDate { .. }) => {
                    self.profiles.get(&self.default_profile).ok_or_else(|| {
                        format!(
                            "rules.default_profile: `{}` is not loaded",
                            self.default_profile
                        )
                    })?
                }
                Err(e) => return Err(e.to_string()),
            },
        };
        // A profile of another program or specimen type never judges a case (an absent
        // `program` is dot, an absent `specimen_type` urine): an HHS panel is not applied to a
        // DOT specimen (40.13(c)), urine cutoffs not to oral fluid.
        if profile.program != program || profile.specimen_type != specimen_type {
            return Err(format!(
                "profile: `{}` is for {} {} specimens, this case is {} {}",
                profile.name,
                profile.program.key(),
                profile.specimen_type.key(),
                program.key(),
                specimen_type.key()
            ));
        }
        Ok(profile)
    }

    fn loaded(&self) -> String {
        self.profiles.names().collect::<Vec<_>>().join(", ")
    }

    /// Evaluates one line of input (without its newline).
    pub fn line(&self, text: &str) -> LineOutcome {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    Value::Null,
                    format!("not JSON: {} at column {}", category(&e), e.column()),
                );
            }
        };
        let id = match &value {
            Value::Object(m) => m.get("id").cloned().unwrap_or(Value::Null),
            _ => Value::Null,
        };
        if !value.is_object() {
            return error(id, "a case must be a JSON object".into());
        }
        let case: Case = match serde_path_to_error::deserialize(&value) {
            Ok(c) => c,
            Err(e) => {
                let path = e.path().to_string();
                let msg = e.inner().to_string();
                let at = if path == "." {
                    String::new()
                } else {
                    format!("{path}: ")
                };
                return error(id, format!("{at}{msg}"));
            }
        };
        let profile = match self.choose(&case) {
            Ok(p) => p,
            Err(e) => return error(id, e),
        };
        let specimen = Specimen {
            accession: case.accession,
            validity: case.validity,
            initial: case.initial,
            confirmation: case.confirmation,
            mro_requested_quantitation: case.mro_requested_quantitation,
        };
        match rules::evaluate(profile, &specimen) {
            Ok(v) => LineOutcome {
                output: verdict_json(&case.id, profile, &v),
                evaluated: true,
            },
            Err(e) => error(id, e.to_string()),
        }
    }

    /// Evaluates every line of `input`, writing one JSON line each to `output`.
    /// Returns whether every line was evaluated. Blank lines are skipped.
    pub fn run<R: BufRead, W: Write>(&self, mut input: R, mut output: W) -> io::Result<bool> {
        let mut all_ok = true;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = input.read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            let outcome = match std::str::from_utf8(&buf) {
                Ok(text) => {
                    let text = text.trim_end_matches(['\n', '\r']);
                    if text.trim().is_empty() {
                        continue;
                    }
                    self.line(text)
                }
                Err(e) => error(
                    Value::Null,
                    format!("line is not UTF-8 (byte {})", e.valid_up_to()),
                ),
            };
            all_ok &= outcome.evaluated;
            serde_json::to_writer(&mut output, &outcome.output)?;
            output.write_all(b"\n")?;
        }
        output.flush()?;
        Ok(all_ok)
    }
}

fn category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "data error",
        serde_json::error::Category::Eof => "unexpected end of line",
    }
}

fn error(id: Value, message: String) -> LineOutcome {
    LineOutcome {
        output: json!({ "id": id, "error": message }),
        evaluated: false,
    }
}

/// The verdict in the contract's output shape.
pub fn verdict_json(id: &str, profile: &Profile, v: &Verdict) -> Value {
    let mut quant = Map::new();
    for (k, d) in &v.quantitations {
        quant.insert(k.clone(), measure::to_json(*d));
    }
    json!({
        "id": id,
        "profile": profile.name,
        "results": v.results.iter().map(|r| r.key()).collect::<Vec<_>>(),
        "dilute": v.dilute,
        "positive_analytes": v.positive_analytes,
        "quantitations": Value::Object(quant),
        "redesignated": v.redesignated,
        "hold": v.hold.as_ref().map(|h| json!({"reason": h.reason, "business_days": h.business_days})),
        "retain_one_year": v.retain_one_year,
        "remarks": v.remarks,
    })
}
