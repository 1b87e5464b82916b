//! The `confirmation-batch` document (`schemas/confirmation-batch.xsd`): quantitative
//! confirmation results exported by an instrument for one run, with the run's QC (its
//! calibrators and controls) and, per result, the instrument's acceptability (ion ratios,
//! retention time, internal standard).

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
    /// The instrument's acceptability of a specimen's result (`acceptable="true"`); absent:
    /// not judged acceptable (the result never counts). Always `None` for QC results.
    pub acceptable: Option<bool>,
}

/// What a QC sample is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QcRole {
    Control,
    Calibrator,
}

impl Enumerated for QcRole {
    const VALUES: &'static [&'static str] = &["control", "calibrator"];
    fn from_token(t: &str) -> Option<Self> {
        match t {
            "control" => Some(QcRole::Control),
            "calibrator" => Some(QcRole::Calibrator),
            _ => None,
        }
    }
}

/// One control or calibrator of the run, with its results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QcSample {
    /// The control's or calibrator's sample ID.
    pub sample_id: SpecimenId,
    pub role: QcRole,
    /// In document order; each analyte at most once.
    pub results: Vec<Quantitation>,
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
    /// The run's calibrators and controls, in document order; each sample ID at most once.
    /// Empty when the document carries none (its run's QC is then incomplete).
    pub qc: Vec<QcSample>,
    /// In document order; each specimen ID at most once.
    pub specimens: Vec<SpecimenResults>,
}

/// The `result` children of a specimen or QC sample: each analyte at most once.
fn results_of(
    sc: &mut Cursor<'_>,
    attributes: &[&'static str],
) -> Result<Vec<Quantitation>, XmlError> {
    let mut results = Vec::new();
    let mut seen_analytes: HashMap<String, u32> = HashMap::new();
    for r in sc.repeated("result")? {
        let analyte = r.required_attribute("analyte", |v| {
            if value::is_analyte_key(v) {
                Ok(v)
            } else {
                Err(Rule::Pattern(ANALYTE_PATTERN))
            }
        })?;
        if let Some(first_line) = seen_analytes.insert(analyte.to_string(), r.node.line) {
            return Err(XmlError::new(
                r.node.line,
                format!("{}/@analyte", r.path),
                Rule::Duplicate { first_line },
            ));
        }
        let unit = r.required_attribute("unit", enumerated::<Unit>)?;
        let acceptable = if attributes.contains(&"acceptable") {
            match r.node.attrs.iter().find(|a| a.name == "acceptable") {
                Some(a) => Some(value::parse_bool(&a.value).map_err(|rule| {
                    XmlError::new(r.node.line, format!("{}/@acceptable", r.path), rule)
                })?),
                None => None,
            }
        } else {
            None
        };
        let value = r.value(attributes, value::parse_quantity)?;
        results.push(Quantitation {
            analyte: analyte.to_string(),
            value,
            unit,
            acceptable,
        });
    }
    Ok(results)
}

pub(crate) fn from_tree(root: &Node) -> Result<ConfirmationBatch, XmlError> {
    let mut c = Cursor::open(root, "/confirmation-batch".to_string(), &[])?;
    let batch_id = c.value(
        "batch-id",
        pattern(value::is_identifier, IDENTIFIER_PATTERN),
    )?;
    let instrument = c.value("instrument", text(100))?;
    let run_at = c.date_time("run-at")?;
    let mut qc = Vec::new();
    if let Some(mut q) = c.opt_element("qc", &[])? {
        let mut seen: HashMap<String, u32> = HashMap::new();
        for s in q.repeated("sample")? {
            let mut sc = Cursor::open(s.node, s.path, &["id", "role"])?;
            let sample_id = sc.required_attribute("id", |v| {
                SpecimenId::new(v).ok_or(Rule::Pattern(SPECIMEN_ID_PATTERN))
            })?;
            if let Some(first_line) = seen.insert(sample_id.as_str().to_string(), s.node.line) {
                return Err(XmlError::new(
                    s.node.line,
                    format!("{}/@id", sc.path()),
                    Rule::Duplicate { first_line },
                ));
            }
            let role = sc.required_attribute("role", enumerated::<QcRole>)?;
            let results = results_of(&mut sc, &["analyte", "unit"])?;
            sc.finish()?;
            qc.push(QcSample {
                sample_id,
                role,
                results,
            });
        }
        q.finish()?;
    }
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
        let results = results_of(&mut sc, &["analyte", "unit", "acceptable"])?;
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
        qc,
        specimens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::lims::{DEFAULT_MAX_BYTES, parse_confirmation_batch};
    use std::str::FromStr;

    /// A batch without its run's QC (the shape before runs were tracked): the rules of the
    /// document itself, line by line.
    const EXAMPLE: &str =
        include_str!("../../../tests/data/lims/confirmation-batch-without-qc-example.xml");
    /// The batch with its run's QC and each result's acceptability.
    const WITH_QC: &str = include_str!("../../../tests/data/lims/confirmation-batch-example.xml");

    fn parse(s: &str) -> Result<ConfirmationBatch, XmlError> {
        parse_confirmation_batch(s.as_bytes(), DEFAULT_MAX_BYTES)
    }

    fn with(from: &str, to: &str) -> String {
        assert_eq!(EXAMPLE.matches(from).count(), 1, "{from}");
        EXAMPLE.replace(from, to)
    }

    fn check(doc: &str, line: u32, path: &str, rule: Rule) {
        let e = parse(doc).expect_err("should be refused");
        assert_eq!(
            (e.line, e.path.as_str(), &e.rule),
            (line, path, &rule),
            "{e}"
        );
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn example_parses_exactly() {
        let b = parse(EXAMPLE).unwrap();
        assert_eq!(b.batch_id, "GCMS-20240311-01");
        assert_eq!(b.instrument, "GC/MS 02 (fictitious)");
        assert_eq!(b.run_at.to_string(), "2024-03-11T14:05:00-05:00");
        assert_eq!(b.specimens.len(), 3);
        let s0 = &b.specimens[0];
        assert_eq!(s0.specimen_id.as_str(), "X0000001-TEST");
        assert_eq!(s0.bottle, BottleLabel::A, "bottle defaults to A");
        assert_eq!(
            s0.results,
            vec![Quantitation {
                analyte: "benzoylecgonine".into(),
                value: dec("162.5"),
                unit: Unit::NgPerMl,
                acceptable: None,
            }]
        );
        assert!(b.qc.is_empty(), "no QC: the run is incomplete");
        let s1 = &b.specimens[1];
        assert_eq!(s1.bottle, BottleLabel::A);
        let map = s1.confirmation();
        assert_eq!(map.len(), 3);
        assert_eq!(map["morphine"], dec("15000"));
        assert_eq!(map["codeine"], Decimal::ZERO);
        assert_eq!(map["6am"], dec("12.25"));
        assert_eq!(b.specimens[2].bottle, BottleLabel::B);
        assert_eq!(b.specimens[2].results[0].value, dec("0.000001"));
    }

    /// The run's QC travels with the batch; each specimen result carries the instrument's
    /// acceptability, QC results none; a QC sample appears once.
    #[test]
    fn the_runs_qc_and_each_results_acceptability() {
        let b = parse(WITH_QC).unwrap();
        assert_eq!(b.qc.len(), 3, "the run's calibrator and controls");
        assert_eq!(b.qc[0].sample_id.as_str(), "CAL-CONF");
        assert_eq!(b.qc[0].role, QcRole::Calibrator);
        assert_eq!(b.qc[1].role, QcRole::Control);
        assert_eq!(b.qc[2].results.len(), 4);
        assert_eq!(b.qc[2].results[0].value, dec("124.7"));
        assert!(
            b.qc.iter()
                .all(|q| q.results.iter().all(|r| r.acceptable.is_none()))
        );
        assert_eq!(b.specimens[0].results[0].acceptable, Some(true));
        assert_eq!(b.specimens[1].results[0].acceptable, Some(true));
        assert_eq!(
            b.specimens[1].results[1].acceptable,
            Some(false),
            "codeine's ion ratio failed"
        );
        assert_eq!(b.specimens[2].results[0].acceptable, None);
        let twice = WITH_QC.replace("<sample id=\"QC-NEG-C\"", "<sample id=\"CAL-CONF\"");
        let e = parse(&twice).unwrap_err();
        assert_eq!(e.path, "/confirmation-batch/qc/sample[2]/@id", "{e}");
        let bad = WITH_QC.replace("acceptable=\"true\">162.5", "acceptable=\"yes\">162.5");
        let e = parse(&bad).unwrap_err();
        assert_eq!(e.rule, Rule::InvalidBoolean, "{e}");
        let on_qc = WITH_QC.replace(
            "unit=\"ng/mL\">101.2",
            "unit=\"ng/mL\" acceptable=\"true\">101.2",
        );
        assert_eq!(parse(&on_qc).unwrap_err().rule, Rule::UnknownAttribute);
    }

    #[test]
    fn decimal_values() {
        for (text, want) in [
            (" 162.50 ", "162.5"),
            ("+.5", "0.5"),
            ("-0", "0"),
            ("999999999999999", "999999999999999"),
            ("123456789.123456", "123456789.123456"),
        ] {
            let b = parse(&with(">162.5<", &format!(">{text}<"))).unwrap();
            assert_eq!(b.specimens[0].results[0].value, dec(want), "{text}");
        }
        let path = "/confirmation-batch/specimen[1]/result[1]";
        check(&with(">162.5<", ">-1.5<"), 8, path, Rule::Negative);
        for bad in ["1.2e1", "", "abc", "1,5", "NaN"] {
            check(
                &with(">162.5<", &format!(">{bad}<")),
                8,
                path,
                Rule::InvalidDecimal,
            );
        }
        let digits = Rule::TooManyDigits {
            total: 15,
            fraction: 6,
        };
        check(&with(">162.5<", ">0.0000001<"), 8, path, digits.clone());
        check(&with(">162.5<", ">1000000000000000<"), 8, path, digits);
        check(
            &with(">12.25<", "><x/>12.25<"),
            13,
            "/confirmation-batch/specimen[2]/result[3]/*",
            Rule::ChildNotAllowed,
        );
    }

    #[test]
    fn attribute_rules() {
        let r1 = "/confirmation-batch/specimen[1]/result[1]";
        check(
            &with(" unit=\"ng/mL\">162.5", ">162.5"),
            8,
            &format!("{r1}/@unit"),
            Rule::MissingAttribute,
        );
        check(
            &with(" unit=\"ng/mL\">162.5", " unit=\"ug/mL\">162.5"),
            8,
            &format!("{r1}/@unit"),
            Rule::NotInEnumeration(&["ng/mL"]),
        );
        check(
            &with("analyte=\"benzoylecgonine\" ", ""),
            8,
            &format!("{r1}/@analyte"),
            Rule::MissingAttribute,
        );
        check(
            &with("analyte=\"benzoylecgonine\"", "analyte=\"Benzoylecgonine\""),
            8,
            &format!("{r1}/@analyte"),
            Rule::Pattern(ANALYTE_PATTERN),
        );
        let key32 = "a".repeat(32);
        assert!(parse(&with("benzoylecgonine", &key32)).is_ok());
        check(
            &with("benzoylecgonine", &"a".repeat(33)),
            8,
            &format!("{r1}/@analyte"),
            Rule::Pattern(ANALYTE_PATTERN),
        );
        check(
            &with(">162.5<", " flag=\"H\">162.5<"),
            8,
            &format!("{r1}/@*"),
            Rule::UnknownAttribute,
        );
        check(
            &with("<specimen id=\"X0000001-TEST\">", "<specimen>"),
            7,
            "/confirmation-batch/specimen[1]/@id",
            Rule::MissingAttribute,
        );
        check(
            &with(
                "id=\"X0000001-TEST\"",
                &format!("id=\"{}\"", "9".repeat(33)),
            ),
            7,
            "/confirmation-batch/specimen[1]/@id",
            Rule::Pattern(SPECIMEN_ID_PATTERN),
        );
        assert!(parse(&with("X0000001-TEST", &"9".repeat(32))).is_ok());
        check(
            &with("bottle=\"B\"", "bottle=\"C\""),
            15,
            "/confirmation-batch/specimen[3]/@bottle",
            Rule::NotInEnumeration(&["A", "B"]),
        );
        let b = parse(&with("bottle=\"B\"", "bottle=\" B \"")).unwrap();
        assert_eq!(b.specimens[2].bottle, BottleLabel::B);
        check(
            &with(
                "<specimen id=\"0000003\" bottle=\"B\">",
                "<specimen id=\"0000003\" bottle=\"B\">x",
            ),
            15,
            "/confirmation-batch/specimen[3]",
            Rule::TextNotAllowed,
        );
    }

    #[test]
    fn uniqueness() {
        check(
            &with("analyte=\"codeine\"", "analyte=\"morphine\""),
            12,
            "/confirmation-batch/specimen[2]/result[2]/@analyte",
            Rule::Duplicate { first_line: 11 },
        );
        check(
            &with("id=\"0000003\"", "id=\"0000002\""),
            15,
            "/confirmation-batch/specimen[3]/@id",
            Rule::Duplicate { first_line: 10 },
        );
        // The same analyte under two specimens is fine.
        let b = parse(&with("analyte=\"thca\"", "analyte=\"morphine\"")).unwrap();
        assert_eq!(b.specimens[2].results[0].analyte, "morphine");
    }

    #[test]
    fn required_elements_and_header() {
        let no_results = with(
            "\n    <result analyte=\"thca\" unit=\"ng/mL\">0.000001</result>",
            "",
        );
        check(
            &no_results,
            16,
            "/confirmation-batch/specimen[3]/result",
            Rule::MissingElement,
        );
        let start = EXAMPLE.find("  <specimen").unwrap();
        let end = EXAMPLE.rfind("</specimen>\n").unwrap() + "</specimen>\n".len();
        let no_specimens = format!("{}{}", &EXAMPLE[..start], &EXAMPLE[end..]);
        check(
            &no_specimens,
            7,
            "/confirmation-batch/specimen",
            Rule::MissingElement,
        );
        check(
            &with("  <batch-id>GCMS-20240311-01</batch-id>\n", ""),
            4,
            "/confirmation-batch/instrument",
            Rule::UnexpectedElement {
                expected: Some("batch-id"),
            },
        );
        check(
            &with("GCMS-20240311-01", "GCMS 2024"),
            4,
            "/confirmation-batch/batch-id",
            Rule::Pattern(IDENTIFIER_PATTERN),
        );
        check(
            &with("GC/MS 02 (fictitious)", &"i".repeat(101)),
            5,
            "/confirmation-batch/instrument",
            Rule::TooLong { max: 100 },
        );
        for bad in [
            "2024-03-11T14:05:00",
            "2024-03-11",
            "2024-03-11T24:00:00Z",
            "2024-02-30T14:05:00Z",
        ] {
            check(
                &with("2024-03-11T14:05:00-05:00", bad),
                6,
                "/confirmation-batch/run-at",
                Rule::InvalidDateTime,
            );
        }
        check(
            &with(
                "</specimen>\n</confirmation-batch>",
                "</specimen>\n<batch-id>x</batch-id></confirmation-batch>",
            ),
            18,
            "/confirmation-batch/batch-id",
            Rule::UnexpectedElement {
                expected: Some("specimen"),
            },
        );
    }
}
