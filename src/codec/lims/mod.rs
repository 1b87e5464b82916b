//! LIMS XML documents: `accession`, `confirmation-batch`, `correction`, `request` and
//! `certified-copy`.
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
//!   [`MAX_DEPTH`], and documents larger than the caller's limit;
//! - attributes from other namespaces, including `xsi:type` and `xsi:nil`
//!   (`xsi:schemaLocation` and `xsi:noNamespaceSchemaLocation` are ignored);
//! - in `accession`, the co-occurrence rules XSD 1.0 cannot state (a receipt date before the
//!   collection date; a split bottle present when the CCF says no split was collected; a
//!   correction-initiated-on date before the receipt date, or without a correctable flaw).
//!
//! Errors name the line, the element or attribute path and the rule; never the content.
//!
//! Pure: bytes in, typed documents out. The spool directory (the I/O) is `ingest::spool_dir`.

mod accession;
mod certified_copy;
mod check;
mod confirmation;
mod correction;
mod error;
mod request;
mod tree;
mod value;

pub use accession::{
    AccessionDoc, Collector, DonorId, DotAgency, Employer, Mro, Panel, PrimaryBottle, SplitBottle,
    TestReason, TestsRequested,
};
pub use certified_copy::CertifiedCopyDoc;
pub use confirmation::{
    BottleLabel, ConfirmationBatch, QcRole, QcSample, Quantitation, SpecimenResults, Unit,
};
pub use correction::CorrectionDoc;
pub use error::{Rule, XmlError};
pub use request::{RequestAsk, RequestDoc, RequestUntil};
pub use tree::{MAX_DEPTH, NAMESPACE};
pub use value::{
    Confidential, Date, DateTime, QUANTITY_FRACTION_DIGITS, QUANTITY_TOTAL_DIGITS, SpecimenId, Ssn,
};

/// A size limit that fits any real LIMS document with room to spare (12 MiB: an accession with
/// the image of Copy 1, at most 8 MiB decoded, base64).
pub const DEFAULT_MAX_BYTES: usize = 12 << 20;

/// Which document a root element names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocumentKind {
    Accession,
    ConfirmationBatch,
    Correction,
    Request,
    CertifiedCopy,
}

impl DocumentKind {
    /// The root element's name.
    pub fn root(self) -> &'static str {
        match self {
            DocumentKind::Accession => "accession",
            DocumentKind::ConfirmationBatch => "confirmation-batch",
            DocumentKind::Correction => "correction",
            DocumentKind::Request => "request",
            DocumentKind::CertifiedCopy => "certified-copy",
        }
    }
}

/// Any of the documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimsDocument {
    /// Boxed: much larger than the other two.
    Accession(Box<AccessionDoc>),
    ConfirmationBatch(ConfirmationBatch),
    Correction(CorrectionDoc),
    Request(RequestDoc),
    CertifiedCopy(CertifiedCopyDoc),
}

impl LimsDocument {
    pub fn kind(&self) -> DocumentKind {
        match self {
            LimsDocument::Accession(_) => DocumentKind::Accession,
            LimsDocument::ConfirmationBatch(_) => DocumentKind::ConfirmationBatch,
            LimsDocument::Correction(_) => DocumentKind::Correction,
            LimsDocument::Request(_) => DocumentKind::Request,
            LimsDocument::CertifiedCopy(_) => DocumentKind::CertifiedCopy,
        }
    }
}

/// Parses any LIMS document, choosing the schema by the root element. `max_bytes` bounds the
/// input (see [`DEFAULT_MAX_BYTES`]); a larger input is refused before it is decoded.
pub fn parse_document(bytes: &[u8], max_bytes: usize) -> Result<LimsDocument, XmlError> {
    let root = tree::parse_tree(bytes, max_bytes)?;
    match root.name {
        "accession" => accession::from_tree(&root).map(|d| LimsDocument::Accession(Box::new(d))),
        "confirmation-batch" => confirmation::from_tree(&root).map(LimsDocument::ConfirmationBatch),
        "correction" => correction::from_tree(&root).map(LimsDocument::Correction),
        "request" => request::from_tree(&root).map(LimsDocument::Request),
        "certified-copy" => certified_copy::from_tree(&root).map(LimsDocument::CertifiedCopy),
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

/// Parses a `request` document; any other root is refused.
pub fn parse_request(bytes: &[u8], max_bytes: usize) -> Result<RequestDoc, XmlError> {
    request::from_tree(&parse_kind(bytes, max_bytes, DocumentKind::Request)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::{self, Correction, Profile, ResultCategory, Specimen};
    use rust_decimal::Decimal;

    const ACCESSION: &str = include_str!("../../../tests/data/lims/accession-example.xml");
    const BATCH: &str = include_str!("../../../tests/data/lims/confirmation-batch-example.xml");
    const CORRECTION: &str = include_str!("../../../tests/data/lims/correction-example.xml");

    fn doc(s: &str) -> Result<LimsDocument, XmlError> {
        parse_document(s.as_bytes(), DEFAULT_MAX_BYTES)
    }

    #[test]
    fn dispatches_on_the_root_element() {
        assert_eq!(doc(ACCESSION).unwrap().kind(), DocumentKind::Accession);
        assert_eq!(doc(BATCH).unwrap().kind(), DocumentKind::ConfirmationBatch);
        assert_eq!(doc(CORRECTION).unwrap().kind(), DocumentKind::Correction);
        assert_eq!(
            doc(include_str!("../../../tests/data/lims/request-example.xml"))
                .unwrap()
                .kind(),
            DocumentKind::Request
        );
        match doc(CORRECTION).unwrap() {
            LimsDocument::Correction(c) => assert_eq!(c.document_ref, "MEMO-2024-0042"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_or_wrong_root_refused() {
        let e =
            doc("<?xml version=\"1.0\"?>\n<result xmlns=\"urn:custodian:lims:1\"/>").unwrap_err();
        assert_eq!(
            (e.line, e.path.as_str(), e.rule),
            (2, "/result", Rule::UnknownRoot)
        );
        let e = doc("<report xmlns=\"urn:custodian:lims:1\"/>").unwrap_err();
        assert_eq!((e.path.as_str(), e.rule), ("/*", Rule::UnknownRoot));
        let e = doc("<accession/>").unwrap_err();
        assert_eq!(e.rule, Rule::WrongNamespace);
        let e = parse_accession(CORRECTION.as_bytes(), DEFAULT_MAX_BYTES).unwrap_err();
        assert_eq!(
            (e.line, e.path.as_str(), e.rule),
            (
                3,
                "/correction",
                Rule::UnexpectedElement {
                    expected: Some("accession")
                }
            )
        );
        assert!(parse_correction(BATCH.as_bytes(), DEFAULT_MAX_BYTES).is_err());
        assert!(parse_confirmation_batch(ACCESSION.as_bytes(), DEFAULT_MAX_BYTES).is_err());
        assert!(parse_confirmation_batch(BATCH.as_bytes(), DEFAULT_MAX_BYTES).is_ok());
    }

    #[test]
    fn document_level_refusals() {
        let e = parse_document(ACCESSION.as_bytes(), ACCESSION.len() - 1).unwrap_err();
        assert_eq!(
            e.rule,
            Rule::TooLarge {
                limit: ACCESSION.len() - 1
            }
        );
        assert!(parse_document(ACCESSION.as_bytes(), ACCESSION.len()).is_ok());

        let latin1 = ACCESSION
            .replace("encoding=\"UTF-8\"", "encoding=\"ISO-8859-1\"")
            .into_bytes();
        assert_eq!(
            parse_document(&latin1, DEFAULT_MAX_BYTES).unwrap_err().rule,
            Rule::UnsupportedEncoding
        );
        let mut bad = ACCESSION.as_bytes().to_vec();
        let at = ACCESSION.find("Chris").unwrap();
        bad[at] = 0xC9; // a Latin-1 'É' on line 21
        let e = parse_document(&bad, DEFAULT_MAX_BYTES).unwrap_err();
        assert_eq!((e.line, e.rule), (21, Rule::NotUtf8));

        let xxe = ACCESSION.replace(
            "<!-- Fictitious",
            "<!DOCTYPE accession [<!ENTITY ssn SYSTEM \"file:///etc/passwd\">]>\n<!-- Fictitious",
        );
        let e = doc(&xxe).unwrap_err();
        assert_eq!((e.line, e.rule), (2, Rule::DoctypeRefused));
        let e = doc(&ACCESSION.replace("000-00-0000", "&ssn;")).unwrap_err();
        assert_eq!(
            (e.line, e.path.as_str(), e.rule),
            (17, "/accession/donor/ssn", Rule::EntityRefused)
        );
    }

    #[test]
    fn errors_never_carry_content() {
        let secret = "987-65-4321";
        let docs = [
            ACCESSION.replace("000-00-0000", "987-65-432"),
            ACCESSION.replace("<reason>random", &format!("<reason>{secret}")),
            ACCESSION.replace(
                "<name>Chris Sample",
                &format!("<name>{}", secret.repeat(10)),
            ),
            ACCESSION.replace("<employer>", &format!("<employer><x{secret}/>")),
            ACCESSION.replace("<employer>", &format!("<employer a{secret}=\"1\">")),
            CORRECTION.replace("<flaw>collector-certification", &format!("<flaw>{secret}")),
            BATCH.replace("analyte=\"codeine\"", &format!("analyte=\"x{secret}\"")),
        ];
        for d in docs {
            let e = doc(&d).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("987") && !shown.contains("4321"), "{shown}");
        }
    }

    /// The parsed documents feed the rules engine end to end: the Step 4 signature is missing
    /// (hold), the correction clears it, and the confirmation map is accepted by the profile.
    #[test]
    fn documents_feed_the_rules_engine() {
        let profile = Profile::parse(
            include_str!("../../../config/profiles/part40-2001.toml"),
            Some("part40-2001"),
        )
        .unwrap();
        let LimsDocument::Accession(acc) = doc(ACCESSION).unwrap() else {
            panic!("not an accession");
        };
        let LimsDocument::Correction(cor) = doc(CORRECTION).unwrap() else {
            panic!("not a correction");
        };
        let LimsDocument::ConfirmationBatch(batch) = doc(BATCH).unwrap() else {
            panic!("not a batch");
        };
        assert_eq!(cor.specimen_id, acc.specimen_id);
        assert_eq!(cor.flaw, rules::accessioning::Flaw::CollectorCertification);
        let results = batch
            .specimens
            .iter()
            .find(|s| s.specimen_id == acc.specimen_id)
            .unwrap();

        let mut specimen = Specimen {
            accession: acc.findings(),
            ..Specimen::default()
        };
        let held = rules::evaluate(&profile, &specimen).unwrap();
        assert!(held.hold.is_some(), "{held:?}");
        assert!(held.results.is_empty());

        specimen.accession.correction = Correction::Corrected;
        specimen
            .initial
            .insert("cocaine".into(), Decimal::from(400));
        specimen.confirmation = results.confirmation();
        let v = rules::evaluate(&profile, &specimen).unwrap();
        assert_eq!(v.hold, None);
        assert_eq!(v.results, vec![ResultCategory::Positive]);
        assert_eq!(v.positive_analytes, vec!["benzoylecgonine".to_string()]);
    }
    /// Every truncation of every example is refused cleanly (no panic), except the ones that
    /// only drop trailing whitespace after the root element.
    #[test]
    fn truncated_documents_are_refused_without_panic() {
        for text in [ACCESSION, BATCH, CORRECTION] {
            let complete = text.trim_end().len();
            for cut in 0..text.len() {
                let r = parse_document(&text.as_bytes()[..cut], DEFAULT_MAX_BYTES);
                assert_eq!(r.is_ok(), cut >= complete, "cut at {cut}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_document(&bytes, DEFAULT_MAX_BYTES);
        }

        #[test]
        fn mutated_examples_never_panic(
            which in 0usize..3,
            edits in proptest::collection::vec((0usize..4096, proptest::num::u8::ANY), 1..8),
        ) {
            let mut bytes = [ACCESSION, BATCH, CORRECTION][which].as_bytes().to_vec();
            for (at, b) in edits {
                let i = at % bytes.len();
                bytes[i] = b;
            }
            if let Err(e) = parse_document(&bytes, DEFAULT_MAX_BYTES) {
                proptest::prop_assert!(e.line >= 1);
                proptest::prop_assert!(e.path.starts_with('/'));
            }
        }
    }
}
