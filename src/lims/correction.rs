//! The `correction` document (`schemas/correction.xsd`): a correctable flaw of 40.83(e)–(g)
//! has been corrected.

use super::check::{Cursor, Enumerated, pattern, text};
use super::error::{Rule, XmlError};
use super::tree::Node;
use super::value::{self, DateTime, IDENTIFIER_PATTERN, SPECIMEN_ID_PATTERN, SpecimenId};
use crate::rules::accessioning::Flaw;

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
