//! Copy 1 of the CCF as images (40.97(b)(2), 40.161(c)): the image of Copy 1 *as received*,
//! stored with the specimen at accession for the certifying scientist's review, and the
//! **certified** Copy 1 — the fully completed Copy 1 with Step 5A (results, remarks, the
//! certifying scientist's printed name, date and signature) — that travels with every
//! non-negative report, rendered at release. Pure: media types, their signatures, what Step 5A says, and whether a
//! report needs the certified copy. The rendering is `codec::copy1`.

use crate::domain::rules::ResultCategory;
use serde::{Deserialize, Serialize};

/// The largest image accepted (as received, or certified by the LIMS): 8 MiB, room for a
/// multi-page 300 dpi scan of the form.
pub const MAX_IMAGE_BYTES: usize = 8 << 20;

/// The media types the delivery contract allows for Copy 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MediaType {
    #[serde(rename = "application/pdf")]
    Pdf,
    #[serde(rename = "image/tiff")]
    Tiff,
    #[serde(rename = "image/png")]
    Png,
}

impl MediaType {
    pub const ALL: [MediaType; 3] = [MediaType::Pdf, MediaType::Tiff, MediaType::Png];

    /// The media type's name (`application/pdf`, `image/tiff`, `image/png`).
    pub fn key(self) -> &'static str {
        match self {
            MediaType::Pdf => "application/pdf",
            MediaType::Tiff => "image/tiff",
            MediaType::Png => "image/png",
        }
    }

    pub fn from_key(s: &str) -> Option<MediaType> {
        MediaType::ALL.into_iter().find(|m| m.key() == s)
    }

    /// The media type whose file signature opens `bytes` (PDF `%PDF-`, PNG's eight bytes, TIFF
    /// `II*\0` or `MM\0*`).
    pub fn sniff(bytes: &[u8]) -> Option<MediaType> {
        if bytes.starts_with(b"%PDF-") {
            Some(MediaType::Pdf)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(MediaType::Png)
        } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
            Some(MediaType::Tiff)
        } else {
            None
        }
    }
}

/// Why an image is refused. Names the rule, never content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("the image is empty")]
    Empty,
    #[error("the image is larger than {MAX_IMAGE_BYTES} bytes")]
    TooLarge,
    #[error("the image's content is not {0} (its file signature does not match the media type)")]
    NotItsMediaType(&'static str),
}

/// Checks an image against its declared media type and the size limit.
pub fn check_image(media: MediaType, bytes: &[u8]) -> Result<(), ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(ImageError::TooLarge);
    }
    if MediaType::sniff(bytes) != Some(media) {
        return Err(ImageError::NotItsMediaType(media.key()));
    }
    Ok(())
}

/// Hex SHA-256 of an image.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where an image came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageSource {
    /// Carried by the accession document of this name.
    Accession { document: String },
    /// Supplied by the LIMS after certification, in the `certified-copy` document of this name.
    Lims { document: String },
}

/// Where the certified Copy 1 comes from (`laboratory.certified_copy1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Copy1Source {
    /// Rendered by custodian at release under the image as received, unless the LIMS supplied
    /// a certified copy (then that one, checked).
    #[default]
    Render,
    /// Only the LIMS's certified copy: a non-negative result waits for it.
    Lims,
}

/// A certified Copy 1 the LIMS supplied: the image and what the LIMS states is on it, checked
/// against the verdict before it may travel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedCopyMeta {
    pub image: ImageMeta,
    /// The specimen ID printed on it.
    pub specimen_id: String,
    /// The results Step 5A states (40.97(a) categories).
    pub results: Vec<ResultCategory>,
    /// The certifying scientist who signed Step 5A.
    pub certifying_scientist: String,
}

/// Whether a certified Copy 1 the LIMS supplied states what the verdict says: its specimen ID and
/// its results. `None` when it matches; otherwise the reason (names neither results nor values).
pub fn lims_copy_mismatch(
    copy: &CertifiedCopyMeta,
    specimen_id: &str,
    results: &[ResultCategory],
) -> Option<String> {
    if copy.specimen_id != specimen_id {
        return Some("the certified Copy 1 names another specimen ID".into());
    }
    let norm = |v: &[ResultCategory]| {
        let mut v = v.to_vec();
        v.sort();
        v.dedup();
        v
    };
    if norm(&copy.results) != norm(results) {
        // Names no category: error texts carry no result (the review shows both).
        return Some(
            "the certified Copy 1 from the LIMS states other results than the verdict".into(),
        );
    }
    None
}

/// What the specimen record keeps of an image; the bytes live in the store's image keyspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    pub media_type: MediaType,
    pub sha256: String,
    pub bytes: u64,
    pub source: ImageSource,
    pub received_at_ms: u64,
}

/// Whether a report with these results needs the certified Copy 1 (every non-negative result,
/// rejected ones included; 40.97(b)(2)). A negative, dilute or not, may go as the electronic
/// report alone.
pub fn required_for(results: &[ResultCategory]) -> bool {
    results.iter().any(|r| *r != ResultCategory::Negative)
}

/// How Step 5A names a result category on the form.
pub fn category_text(c: ResultCategory) -> &'static str {
    match c {
        ResultCategory::Negative => "NEGATIVE",
        ResultCategory::Rejected => "REJECTED FOR TESTING",
        ResultCategory::Positive => "POSITIVE",
        ResultCategory::Adulterated => "ADULTERATED",
        ResultCategory::Substituted => "SUBSTITUTED",
        ResultCategory::Invalid => "INVALID RESULT",
    }
}

/// What Step 5A of the certified Copy 1 says: built from the report that is being released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step5a {
    pub specimen_id: String,
    pub results: Vec<ResultCategory>,
    pub dilute: bool,
    pub positive_analytes: Vec<String>,
    pub remarks: Vec<String>,
    pub certifying_scientist: String,
    /// ISO date of the release.
    pub date: String,
    pub report_id: String,
    pub laboratory: String,
}

/// The certification statement of Step 5A.
pub const CERTIFICATION: &str = "I certify that the specimen identified on this form was examined upon receipt, handled using chain of custody procedures, analyzed, and reported in accordance with applicable Federal requirements.";

impl Step5a {
    /// The result line as the form reads it, e.g. `POSITIVE for: benzoylecgonine; DILUTE`.
    pub fn result_line(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for c in &self.results {
            if *c == ResultCategory::Positive && !self.positive_analytes.is_empty() {
                parts.push(format!(
                    "{} for: {}",
                    category_text(*c),
                    self.positive_analytes.join(", ")
                ));
            } else {
                parts.push(category_text(*c).to_string());
            }
        }
        if self.dilute {
            parts.push("DILUTE".into());
        }
        parts.join("; ")
    }

    /// The lines of Step 5A, in the order the form gives them. The electronic signature line
    /// names the report the release signature binds.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![
            "STEP 5A: PRIMARY SPECIMEN REPORT - COMPLETED BY TEST FACILITY (certified Copy 1, 40.97(b)(2))".to_string(),
            format!("Specimen ID: {}", self.specimen_id),
            format!("Result: {}", self.result_line()),
        ];
        if self.remarks.is_empty() {
            out.push("Remarks: none".into());
        } else {
            for (i, r) in self.remarks.iter().enumerate() {
                out.push(if i == 0 {
                    format!("Remarks: {r}")
                } else {
                    format!("         {r}")
                });
            }
        }
        out.push(format!("Test facility: {}", self.laboratory));
        out.push(CERTIFICATION.to_string());
        out.push(format!(
            "Certifying scientist (printed name): {}    Date: {}",
            self.certifying_scientist, self.date
        ));
        out.push(format!(
            "Signature: electronically signed by {} with the release of report {}",
            self.certifying_scientist, self.report_id
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_are_recognised_by_their_signature() {
        assert_eq!(MediaType::sniff(b"%PDF-1.7\n"), Some(MediaType::Pdf));
        assert_eq!(
            MediaType::sniff(b"\x89PNG\r\n\x1a\nrest"),
            Some(MediaType::Png)
        );
        assert_eq!(MediaType::sniff(b"II*\0...."), Some(MediaType::Tiff));
        assert_eq!(MediaType::sniff(b"MM\0*...."), Some(MediaType::Tiff));
        assert_eq!(MediaType::sniff(b"GIF89a"), None);
        assert_eq!(
            check_image(MediaType::Png, b"%PDF-1.4"),
            Err(ImageError::NotItsMediaType("image/png"))
        );
        assert_eq!(check_image(MediaType::Pdf, b""), Err(ImageError::Empty));
        let mut big = b"%PDF-".to_vec();
        big.resize(MAX_IMAGE_BYTES, b' ');
        assert_eq!(check_image(MediaType::Pdf, &big), Ok(()));
        big.push(b' ');
        assert_eq!(check_image(MediaType::Pdf, &big), Err(ImageError::TooLarge));
        for m in MediaType::ALL {
            assert_eq!(MediaType::from_key(m.key()), Some(m));
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.key()));
        }
    }

    #[test]
    fn a_lims_copy_must_name_the_specimen_and_state_the_verdict() {
        let copy = CertifiedCopyMeta {
            image: ImageMeta {
                media_type: MediaType::Pdf,
                sha256: "00".into(),
                bytes: 1,
                source: ImageSource::Lims {
                    document: "c.xml".into(),
                },
                received_at_ms: 0,
            },
            specimen_id: "S-1".into(),
            results: vec![ResultCategory::Positive],
            certifying_scientist: "Dr. C".into(),
        };
        assert_eq!(
            lims_copy_mismatch(&copy, "S-1", &[ResultCategory::Positive]),
            None
        );
        assert!(
            lims_copy_mismatch(&copy, "S-2", &[ResultCategory::Positive])
                .unwrap()
                .contains("specimen ID")
        );
        let why = lims_copy_mismatch(&copy, "S-1", &[ResultCategory::Adulterated]).unwrap();
        assert!(why.contains("other results"), "{why}");
        assert!(
            !why.contains("positive") && !why.contains("adulterated"),
            "{why}"
        );
    }

    #[test]
    fn only_non_negative_results_need_the_certified_copy() {
        use ResultCategory::*;
        assert!(!required_for(&[Negative]));
        for c in [Rejected, Positive, Adulterated, Substituted, Invalid] {
            assert!(required_for(&[c]), "{c:?}");
        }
        assert!(required_for(&[Positive, Adulterated]));
    }

    fn step() -> Step5a {
        Step5a {
            specimen_id: "S-1".into(),
            results: vec![ResultCategory::Positive],
            dilute: true,
            positive_analytes: vec!["benzoylecgonine".into()],
            remarks: vec!["first".into(), "second".into()],
            certifying_scientist: "Dr. C".into(),
            date: "2026-12-01".into(),
            report_id: "R-1".into(),
            laboratory: "Lab".into(),
        }
    }

    #[test]
    fn step_5a_names_results_remarks_the_scientist_and_the_report() {
        let s = step();
        assert_eq!(s.result_line(), "POSITIVE for: benzoylecgonine; DILUTE");
        let lines = s.lines();
        assert!(lines.iter().any(|l| l == "Specimen ID: S-1"));
        assert!(lines.iter().any(|l| l == "Remarks: first"));
        assert!(lines.iter().any(|l| l.trim() == "second"));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("Dr. C") && l.contains("2026-12-01"))
        );
        assert!(lines.iter().any(|l| l.contains("report R-1")));
        assert!(lines.iter().any(|l| l == CERTIFICATION));
    }
}
