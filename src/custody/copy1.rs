//! The certified Copy 1 of a report about to be released (40.97(b)(2), 40.161(c)): the copy the
//! LIMS supplied after certification (a `certified-copy` document), checked against the verdict,
//! or — unless `laboratory.certified_copy1 = "lims"` — the copy rendered at release: Step 5A under
//! the image of Copy 1 as received (`codec::copy1`), read back. Either way its specimen ID and
//! result must be the report's; otherwise the release is held with the reason.
//! Reads the image bytes from the store's image keyspace; writes nothing.

use crate::domain::copy1::{self as model, Copy1Source, MediaType, Step5a};
use crate::domain::report::{CcfCopy1, Report};
use crate::domain::specimen::SpecimenRecord;
use crate::store::{Keyspace, Store, image_key};

/// Why there is no certified Copy 1 to send. Names the problem, never content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Copy1Problem {
    #[error(
        "no image of CCF Copy 1 as received is stored for the specimen: a non-negative result needs the certified Copy 1 (40.97(b)(2)); the LIMS sends it with the accession (<ccf-image>)"
    )]
    NoImage,
    #[error(
        "the laboratory sends the LIMS's certified Copy 1 (laboratory.certified_copy1 = \"lims\") and none has arrived for the specimen (certified-copy document)"
    )]
    AwaitingLims,
    #[error("the stored image of Copy 1 ({0}) is missing or does not match its recorded SHA-256")]
    StoredImageDamaged(&'static str),
    #[error("{0}")]
    Mismatch(String),
    #[error("{0}")]
    Unusable(String),
    #[error("the store could not be read: {0}")]
    Store(String),
}

/// Reads an image and checks it against the hash recorded when it was stored.
fn stored_image(
    store: &Store,
    specimen_id: &str,
    kind: &'static str,
    sha256: &str,
) -> Result<Vec<u8>, Copy1Problem> {
    let bytes = store
        .get_raw_bytes(Keyspace::Images, &image_key(specimen_id, kind))
        .map_err(|e| Copy1Problem::Store(e.to_string()))?
        .ok_or(Copy1Problem::StoredImageDamaged(kind))?;
    if model::sha256_hex(&bytes) != sha256 {
        return Err(Copy1Problem::StoredImageDamaged(kind));
    }
    Ok(bytes)
}

/// The laboratory's local date of an instant, `YYYY-MM-DD`.
fn local_date(ms: u64, utc_offset_minutes: i32) -> String {
    let day = (ms as i64 + i64::from(utc_offset_minutes) * 60_000).div_euclid(86_400_000);
    let (y, m, d) = crate::core::clock::civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The certified Copy 1 that goes with `report` (already built for the release, `ccf_copy1`
/// not yet set), or `None` when the result is negative and the report may go alone.
pub fn certified_copy(
    store: &Store,
    rec: &SpecimenRecord,
    report: &Report,
    released_at_ms: u64,
    utc_offset_minutes: i32,
    source: Copy1Source,
) -> Result<Option<CcfCopy1>, Copy1Problem> {
    if !model::required_for(&report.results) {
        return Ok(None);
    }
    if let Some(lims) = &rec.certified_copy1 {
        if let Some(why) = model::lims_copy_mismatch(lims, &rec.specimen_id, &report.results) {
            return Err(Copy1Problem::Mismatch(why));
        }
        let bytes = stored_image(store, &rec.specimen_id, "certified", &lims.image.sha256)?;
        // A PDF that carries text must state what it certifies; a scanned PDF (no text) rests on
        // the LIMS's statement checked above.
        if lims.image.media_type == MediaType::Pdf && crate::codec::copy1::has_text(&bytes) {
            crate::codec::copy1::check(&bytes, &rec.specimen_id, &report.results)
                .map_err(|e| Copy1Problem::Mismatch(format!("the LIMS's {e}")))?;
        }
        return Ok(Some(CcfCopy1::new(lims.image.media_type, &bytes)));
    }
    if source == Copy1Source::Lims {
        return Err(Copy1Problem::AwaitingLims);
    }
    let meta = rec.ccf_image.as_ref().ok_or(Copy1Problem::NoImage)?;
    let received = stored_image(store, &rec.specimen_id, "received", &meta.sha256)?;
    let step = Step5a {
        specimen_id: report.specimen_id.clone(),
        results: report.results.clone(),
        dilute: report.dilute,
        positive_analytes: report.positive_analytes.clone(),
        remarks: report.remarks.clone(),
        certifying_scientist: report.certifying_scientist.clone(),
        date: local_date(released_at_ms, utc_offset_minutes),
        report_id: report.report_id.clone(),
        laboratory: format!(
            "{}, {}",
            report.laboratory.name,
            report.laboratory.address.replace('\n', ", ")
        ),
    };
    let pdf = crate::codec::copy1::render(&received, meta.media_type, &step)
        .map_err(|e| Copy1Problem::Unusable(e.to_string()))?;
    crate::codec::copy1::check(&pdf, &rec.specimen_id, &report.results)
        .map_err(|e| Copy1Problem::Mismatch(e.to_string()))?;
    Ok(Some(CcfCopy1::new(MediaType::Pdf, &pdf)))
}

/// Whether a specimen waiting for review lacks what its certified Copy 1 needs (shown as the
/// review item's hold reason before anyone tries to release it).
pub fn review_problem(rec: &SpecimenRecord, source: Copy1Source) -> Option<Copy1Problem> {
    let results = rec
        .evaluation
        .as_ref()
        .map(|e| e.verdict.results.as_slice())?;
    if !model::required_for(results) {
        return None;
    }
    if let Some(lims) = &rec.certified_copy1 {
        return model::lims_copy_mismatch(lims, &rec.specimen_id, results)
            .map(Copy1Problem::Mismatch);
    }
    if source == Copy1Source::Lims {
        return Some(Copy1Problem::AwaitingLims);
    }
    rec.ccf_image.is_none().then_some(Copy1Problem::NoImage)
}
