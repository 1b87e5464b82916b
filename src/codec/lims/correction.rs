//! The `correction` document (`schemas/correction.xsd`): a correctable flaw of 40.83(e)–(g)
//! has been corrected.

use super::check::{Cursor, Enumerated, pattern, text};
use super::error::{Rule, XmlError};
use super::tree::Node;
use super::value::{self, DateTime, IDENTIFIER_PATTERN, SPECIMEN_ID_PATTERN, SpecimenId};
use crate::domain::rules::accessioning::Flaw;

impl Enumerated for Flaw {
    const VALUES: &'static [&'static str] = &["collector-certification", "temperature", "form"];
    fn from_token(t: &str) -> Option<Self> {
        match t {
            "collector-certification" => Some(Flaw::CollectorCertification),
            "temperature" => Some(Flaw::Temperature),
            "form" => Some(Flaw::Form),
            _ => None,
        }
    }
}

/// A `correction` document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrectionDoc {
    pub specimen_id: SpecimenId,
    pub flaw: Flaw,
    /// The document that carries the correction, e.g. the memorandum's id (an `Identifier`).
    pub document_ref: String,
    /// When the laboratory received (and recorded) the correcting document.
    pub received_at: DateTime,
    /// Who recorded it; at most 100 characters.
    pub recorded_by: String,
}

pub(crate) fn from_tree(root: &Node) -> Result<CorrectionDoc, XmlError> {
    let mut c = Cursor::open(root, "/correction".to_string(), &[])?;
    let specimen_id = c.value("specimen-id", |s| {
        SpecimenId::new(s).ok_or(Rule::Pattern(SPECIMEN_ID_PATTERN))
    })?;
    let flaw = c.token::<Flaw>("flaw")?;
    let document_ref = c.value(
        "document-ref",
        pattern(value::is_identifier, IDENTIFIER_PATTERN),
    )?;
    let received_at = c.date_time("received-at")?;
    let recorded_by = c.value("recorded-by", text(100))?;
    c.finish()?;
    Ok(CorrectionDoc {
        specimen_id,
        flaw,
        document_ref,
        received_at,
        recorded_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::lims::{DEFAULT_MAX_BYTES, parse_correction};

    const EXAMPLE: &str = include_str!("../../../tests/data/lims/correction-example.xml");

    fn parse(s: &str) -> Result<CorrectionDoc, XmlError> {
        parse_correction(s.as_bytes(), DEFAULT_MAX_BYTES)
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

    #[test]
    fn example_parses() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.specimen_id.as_str(), "X0000001-TEST");
        assert_eq!(c.flaw, Flaw::CollectorCertification);
        assert_eq!(c.document_ref, "MEMO-2024-0042");
        assert_eq!(c.received_at.to_string(), "2024-03-07T09:30:00Z");
        assert_eq!(c.recorded_by, "J. Example (accessioning)");
    }

    #[test]
    fn every_flaw() {
        for (token, flaw) in [
            ("collector-certification", Flaw::CollectorCertification),
            ("temperature", Flaw::Temperature),
            ("form", Flaw::Form),
        ] {
            let c = parse(&with("collector-certification", token)).unwrap();
            assert_eq!(c.flaw, flaw);
        }
        check(
            &with("collector-certification", "seal"),
            5,
            "/correction/flaw",
            Rule::NotInEnumeration(Flaw::VALUES),
        );
    }

    #[test]
    fn field_rules() {
        check(
            &with("X0000001-TEST", "X0000001 TEST"),
            4,
            "/correction/specimen-id",
            Rule::Pattern(SPECIMEN_ID_PATTERN),
        );
        check(
            &with("MEMO-2024-0042", "memo #42"),
            6,
            "/correction/document-ref",
            Rule::Pattern(IDENTIFIER_PATTERN),
        );
        check(
            &with("2024-03-07T09:30:00Z", "2024-03-07T09:30:00"),
            7,
            "/correction/received-at",
            Rule::InvalidDateTime,
        );
        assert!(parse(&with("J. Example (accessioning)", &"j".repeat(100))).is_ok());
        check(
            &with("J. Example (accessioning)", &"j".repeat(101)),
            8,
            "/correction/recorded-by",
            Rule::TooLong { max: 100 },
        );
        check(
            &with(
                "  <recorded-by>J. Example (accessioning)</recorded-by>\n",
                "",
            ),
            8,
            "/correction/recorded-by",
            Rule::MissingElement,
        );
        check(
            &with("<flaw>", "<flaw kind=\"x\">"),
            5,
            "/correction/flaw/@*",
            Rule::UnknownAttribute,
        );
    }
}
