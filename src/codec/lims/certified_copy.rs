//! The `certified-copy` document (`schemas/certified-copy.xsd`): the certified Copy 1 of the CCF
//! as the LIMS produced it after certification (40.97(b)(2)) — the image with Step 5A completed —
//! and what the LIMS states is on it (specimen ID, result, the certifying scientist), which
//! custodian checks against the verdict before the copy may travel.

use super::check::{Cursor, Enumerated, text};
use super::error::{Rule, XmlError};
use super::tree::Node;
use super::value::{Image, SPECIMEN_ID_PATTERN, SpecimenId};
use crate::domain::rules::ResultCategory;

impl Enumerated for ResultCategory {
    const VALUES: &'static [&'static str] = &[
        "negative",
        "rejected",
        "positive",
        "adulterated",
        "substituted",
        "invalid",
    ];
    fn from_token(t: &str) -> Option<Self> {
        [
            ResultCategory::Negative,
            ResultCategory::Rejected,
            ResultCategory::Positive,
            ResultCategory::Adulterated,
            ResultCategory::Substituted,
            ResultCategory::Invalid,
        ]
        .into_iter()
        .find(|c| c.key() == t)
    }
}

/// A `certified-copy` document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedCopyDoc {
    pub specimen_id: SpecimenId,
    /// The results Step 5A states, in document order.
    pub results: Vec<ResultCategory>,
    /// The certifying scientist who signed Step 5A; at most 100 characters.
    pub certifying_scientist: String,
    pub image: Image,
}

pub(crate) fn from_tree(root: &Node) -> Result<CertifiedCopyDoc, XmlError> {
    let mut c = Cursor::open(root, "/certified-copy".to_string(), &[])?;
    let specimen_id = c.value("specimen-id", |s| {
        SpecimenId::new(s).ok_or(Rule::Pattern(SPECIMEN_ID_PATTERN))
    })?;
    let mut results = Vec::new();
    for leaf in c.repeated("result")? {
        let first = leaf.node.line;
        let r = leaf.value(&[], super::check::enumerated::<ResultCategory>)?;
        if results.contains(&r) {
            return Err(XmlError::new(
                first,
                leaf.path.clone(),
                Rule::Duplicate { first_line: first },
            ));
        }
        results.push(r);
    }
    let certifying_scientist = c.value("certifying-scientist", text(100))?;
    let image = c.opt_image("ccf-image")?.ok_or_else(|| {
        XmlError::new(
            root.end_line,
            "/certified-copy/ccf-image",
            Rule::MissingElement,
        )
    })?;
    c.finish()?;
    Ok(CertifiedCopyDoc {
        specimen_id,
        results,
        certifying_scientist,
        image,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::lims::{DEFAULT_MAX_BYTES, LimsDocument, parse_document};
    use crate::domain::copy1::MediaType;

    const EXAMPLE: &str = include_str!("../../../tests/data/lims/certified-copy-example.xml");

    fn parse(s: &str) -> Result<CertifiedCopyDoc, XmlError> {
        match parse_document(s.as_bytes(), DEFAULT_MAX_BYTES)? {
            LimsDocument::CertifiedCopy(d) => Ok(d),
            other => panic!("not a certified copy: {:?}", other.kind()),
        }
    }

    #[test]
    fn the_example_parses_completely() {
        let d = parse(EXAMPLE).unwrap();
        assert_eq!(d.specimen_id.as_str(), "X0000001-TEST");
        assert_eq!(d.results, [ResultCategory::Positive]);
        assert_eq!(d.certifying_scientist, "Dr. Robin Certifier");
        assert_eq!(d.image.media_type, MediaType::Pdf);
        assert!(d.image.data.starts_with(b"%PDF-"));
    }

    #[test]
    fn refusals_name_the_element_and_the_rule() {
        let e = parse(&EXAMPLE.replace("<result>positive</result>", "<result>maybe</result>"))
            .unwrap_err();
        assert!(e.path.starts_with("/certified-copy/result"), "{e}");
        let twice = EXAMPLE.replace(
            "<result>positive</result>",
            "<result>positive</result><result>positive</result>",
        );
        assert!(matches!(
            parse(&twice).unwrap_err().rule,
            Rule::Duplicate { .. }
        ));
        let png_claimed = EXAMPLE.replace("application/pdf", "image/png");
        let e = parse(&png_claimed).unwrap_err();
        assert!(matches!(e.rule, Rule::BadImage(_)), "{e}");
        let start = EXAMPLE.find("<ccf-image").unwrap();
        let end = EXAMPLE.find("</ccf-image>").unwrap() + "</ccf-image>".len();
        let without = format!("{}{}", &EXAMPLE[..start], &EXAMPLE[end..]);
        let e = parse(&without).unwrap_err();
        assert_eq!(e.path, "/certified-copy/ccf-image", "{e}");
    }
}
