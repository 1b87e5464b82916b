//! `custodian evaluate`: the rules engine over a file of cases (JSON Lines), as fixed by the
//! evaluate contract. One verdict per input line, same order; a line that cannot be read gets
//! `{"id":..,"error":".."}` and the run still evaluates the rest.
//!
//! This module is pure apart from the reader and writer it is handed; the verdicts come from
//! [`crate::domain::rules::evaluate`], the function the daemon calls.

use crate::domain::rules::{
    self, Accession, Profile, ProfileSet, Specimen, Validity, Verdict, measure,
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
    /// `default_profile` is `--profile` if given, else the configured default.
    pub fn new(profiles: &'a ProfileSet, default_profile: &str) -> Result<Self, SetupError> {
        if profiles.get(default_profile).is_none() {
            return Err(SetupError::UnknownProfile(
                default_profile.to_string(),
                profiles.names().collect::<Vec<_>>().join(", "),
            ));
        }
        Ok(Evaluator {
            profiles,
            default_profile: default_profile.to_string(),
        })
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
        let profile_name = case.profile.as_deref().unwrap_or(&self.default_profile);
        let Some(profile) = self.profiles.get(profile_name) else {
            return error(
                id,
                format!(
                    "profile: `{profile_name}` is not loaded (loaded: {})",
                    self.profiles.names().collect::<Vec<_>>().join(", ")
                ),
            );
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
