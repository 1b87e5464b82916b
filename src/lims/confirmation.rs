//! The `confirmation-batch` document (`schemas/confirmation-batch.xsd`): quantitative
//! confirmation results exported by an instrument for one run.

use super::check::{Cursor, Enumerated, enumerated, pattern, text};
use super::error::{Rule, XmlError};
use super::tree::Node;
use super::value::{
    self, ANALYTE_PATTERN, DateTime, IDENTIFIER_PATTERN, SPECIMEN_ID_PATTERN, SpecimenId,
};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};

/// Which bottle was tested. A is the primary (the default); B the split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BottleLabel {
    #[default]
    A,
    B,
}

impl Enumerated for BottleLabel {
    const VALUES: &'static [&'static str] = &["A", "B"];
    fn from_token(t: &str) -> Option<Self> {
        match t {
            "A" => Some(BottleLabel::A),
            "B" => Some(BottleLabel::B),
            _ => None,
        }
    }
}

/// The unit of a quantitative result. Only ng/mL is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    NgPerMl,
}

impl Enumerated for Unit {
    const VALUES: &'static [&'static str] = &["ng/mL"];
    fn from_token(t: &str) -> Option<Self> {
        (t == "ng/mL").then_some(Unit::NgPerMl)
    }
}

/// One quantitative result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantitation {
    /// An analyte key of the rule profiles (`[a-z0-9_]{1,32}`); the rules engine checks that
    /// the profile knows it.
    pub analyte: String,
    /// Exact, non-negative, at most 15 significant digits and 6 after the point.
    pub value: Decimal,
    pub unit: Unit,
}

/// The results for one specimen in the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecimenResults {
    pub specimen_id: SpecimenId,
    pub bottle: BottleLabel,
    /// In document order; each analyte at most once.
    pub results: Vec<Quantitation>,
}

impl SpecimenResults {
    /// The results as the rules engine's `Specimen::confirmation` map (analyte → ng/mL).
    /// Lossless: an analyte appears at most once per specimen.
    pub fn confirmation(&self) -> BTreeMap<String, Decimal> {
        self.results
            .iter()
            .map(|q| (q.analyte.clone(), q.value))
            .collect()
    }
}

/// A `confirmation-batch` document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmationBatch {
    /// The schema's `Identifier`.
    pub batch_id: String,
    /// At most 100 characters.
    pub instrument: String,
    pub run_at: DateTime,
    /// In document order; each specimen ID at most once.
    pub specimens: Vec<SpecimenResults>,
}

pub(crate) fn from_tree(root: &Node) -> Result<ConfirmationBatch, XmlError> {
    let mut c = Cursor::open(root, "/confirmation-batch".to_string(), &[])?;
    let batch_id = c.value(
        "batch-id",
        pattern(value::is_identifier, IDENTIFIER_PATTERN),
    )?;
    let instrument = c.value("instrument", text(100))?;
    let run_at = c.date_time("run-at")?;
    let mut specimens = Vec::new();
    let mut seen_ids: HashMap<String, u32> = HashMap::new();
    for s in c.repeated("specimen")? {
        let mut sc = Cursor::open(s.node, s.path, &["id", "bottle"])?;
        let specimen_id = sc.required_attribute("id", |v| {
            SpecimenId::new(v).ok_or(Rule::Pattern(SPECIMEN_ID_PATTERN))
        })?;
        if let Some(first_line) = seen_ids.insert(specimen_id.as_str().to_string(), s.node.line) {
            return Err(XmlError::new(
                s.node.line,
                format!("{}/@id", sc.path()),
                Rule::Duplicate { first_line },
            ));
        }
        let bottle = sc
            .attribute("bottle", enumerated::<BottleLabel>)?
            .unwrap_or_default();
        let mut results = Vec::new();
        let mut seen_analytes: HashMap<&str, u32> = HashMap::new();
        for r in sc.repeated("result")? {
            let analyte = r.required_attribute("analyte", |v| {
                if value::is_analyte_key(v) {
                    Ok(v)
                } else {
                    Err(Rule::Pattern(ANALYTE_PATTERN))
                }
            })?;
            if let Some(first_line) = seen_analytes.insert(analyte, r.node.line) {
                return Err(XmlError::new(
                    r.node.line,
                    format!("{}/@analyte", r.path),
                    Rule::Duplicate { first_line },
                ));
            }
            let unit = r.required_attribute("unit", enumerated::<Unit>)?;
            let value = r.value(&["analyte", "unit"], value::parse_quantity)?;
            results.push(Quantitation {
                analyte: analyte.to_string(),
                value,
                unit,
            });
        }
        sc.finish()?;
        specimens.push(SpecimenResults {
            specimen_id,
            bottle,
            results,
        });
    }
    c.finish()?;
    Ok(ConfirmationBatch {
        batch_id,
        instrument,
        run_at,
        specimens,
    })
}
