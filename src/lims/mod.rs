//! LIMS XML documents: `accession`, `confirmation-batch` and `correction`.
//!
//! The parsers are pure: bytes in, a typed document or an [`XmlError`] out; no I/O, no clock.
//! Each document has a schema in `schemas/` (namespace [`NAMESPACE`]); the parsers enforce in
//! code everything those schemas say, so the daemon never runs a schema validator, and
//! `tests/lims_xmllint.rs` checks that `xmllint --schema` and these parsers agree on the
//! examples in `tests/data/lims/`.
//!
//! On top of the schemas the parsers refuse:
//! - anything but UTF-8, a DOCTYPE (so any DTD or entity declaration), entity references other
//!   than the five predefined ones, processing instructions, nesting deeper than
//!   [`tree::MAX_DEPTH`], and documents larger than the caller's limit;
//! - attributes from other namespaces, including `xsi:type` and `xsi:nil`
//!   (`xsi:schemaLocation` and `xsi:noNamespaceSchemaLocation` are ignored);
//! - in `accession`, two co-occurrence rules XSD 1.0 cannot state (a receipt date before the
//!   collection date; a split bottle present when the CCF says no split was collected).
//!
//! Errors name the line, the element or attribute path and the rule; never the content.
//!
//! [`spool`] moves files through the spool directories; it is the only part that does I/O.

mod accession;
mod check;
mod confirmation;
mod correction;
mod error;
pub mod spool;
mod tree;
mod value;

pub use accession::{
    AccessionDoc, Collector, DonorId, Employer, Mro, Panel, PrimaryBottle, SplitBottle, TestReason,
    TestsRequested,
};
pub use confirmation::{BottleLabel, ConfirmationBatch, Quantitation, SpecimenResults, Unit};
pub use correction::CorrectionDoc;
pub use error::{Rule, XmlError};
pub use tree::{MAX_DEPTH, NAMESPACE};
pub use value::{
    Confidential, Date, DateTime, QUANTITY_FRACTION_DIGITS, QUANTITY_TOTAL_DIGITS, SpecimenId, Ssn,
};

/// A size limit that fits any real LIMS document with room to spare (1 MiB).
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;

/// Which document a root element names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocumentKind {
    Accession,
    ConfirmationBatch,
    Correction,
}

impl DocumentKind {
    /// The root element's name.
    pub fn root(self) -> &'static str {
        match self {
            DocumentKind::Accession => "accession",
            DocumentKind::ConfirmationBatch => "confirmation-batch",
            DocumentKind::Correction => "correction",
        }
    }
}

/// Any of the three documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimsDocument {
    Accession(AccessionDoc),
    ConfirmationBatch(ConfirmationBatch),
    Correction(CorrectionDoc),
}

impl LimsDocument {
    pub fn kind(&self) -> DocumentKind {
        match self {
            LimsDocument::Accession(_) => DocumentKind::Accession,
            LimsDocument::ConfirmationBatch(_) => DocumentKind::ConfirmationBatch,
            LimsDocument::Correction(_) => DocumentKind::Correction,
        }
    }
}

/// Parses any LIMS document, choosing the schema by the root element. `max_bytes` bounds the
/// input (see [`DEFAULT_MAX_BYTES`]); a larger input is refused before it is decoded.
pub fn parse_document(bytes: &[u8], max_bytes: usize) -> Result<LimsDocument, XmlError> {
    let root = tree::parse_tree(bytes, max_bytes)?;
    match root.name {
        "accession" => accession::from_tree(&root).map(LimsDocument::Accession),
        "confirmation-batch" => confirmation::from_tree(&root).map(LimsDocument::ConfirmationBatch),
        "correction" => correction::from_tree(&root).map(LimsDocument::Correction),
        other => Err(XmlError::new(
            root.line,
            format!("/{other}"),
            Rule::UnknownRoot,
        )),
    }
}

fn parse_kind(bytes: &[u8], max_bytes: usize, kind: DocumentKind) -> Result<tree::Node, XmlError> {
    let root = tree::parse_tree(bytes, max_bytes)?;
    if root.name != kind.root() {
        return Err(XmlError::new(
            root.line,
            format!("/{}", root.name),
            Rule::UnexpectedElement {
                expected: Some(kind.root()),
            },
        ));
    }
    Ok(root)
}

/// Parses an `accession` document; any other root is refused.
pub fn parse_accession(bytes: &[u8], max_bytes: usize) -> Result<AccessionDoc, XmlError> {
    accession::from_tree(&parse_kind(bytes, max_bytes, DocumentKind::Accession)?)
}

/// Parses a `confirmation-batch` document; any other root is refused.
pub fn parse_confirmation_batch(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<ConfirmationBatch, XmlError> {
    confirmation::from_tree(&parse_kind(
        bytes,
        max_bytes,
        DocumentKind::ConfirmationBatch,
    )?)
}

/// Parses a `correction` document; any other root is refused.
pub fn parse_correction(bytes: &[u8], max_bytes: usize) -> Result<CorrectionDoc, XmlError> {
    correction::from_tree(&parse_kind(bytes, max_bytes, DocumentKind::Correction)?)
}
