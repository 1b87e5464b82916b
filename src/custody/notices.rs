//! Reports to the MRO other than the laboratory results report: the report that the split
//! specimen is unavailable for testing (40.175(b)(2)), sent when the MRO's written request to
//! forward Bottle B is answered and Bottle B cannot go, and the result of testing the primary
//! for the adulterant the split laboratory found (40.187(f)), released by a certifying
//! scientist. Each is a signed payload (the same key and JWS as reports, checked by
//! `custodian verify`), stored as a report and queued to the MRO named on the CCF in the
//! transaction that produced it, and delivered by that MRO's sender like any report. Neither
//! carries donor or employer identity (checked before signing).

use crate::custody::outbox;
use crate::domain::parties::{Laboratory, Mro};
use crate::domain::report::{LabParty, NamedParty};
use crate::domain::split::{Cause, PrimaryRetestReport, UnavailableReport};
use crate::store::{Keyspace, Tx, TxError};
use crate::trust::signing::Signer;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Notify;

/// `kind` of the split-unavailable report.
pub const KIND_SPLIT_UNAVAILABLE: &str = "split_specimen_unavailable";
/// `kind` of the primary-retest result.
pub const KIND_PRIMARY_RETEST: &str = "primary_retest_result";

/// What custody needs to sign a notice and queue it: the signer, this laboratory, the MRO
/// directory and the senders' wake-ups.
#[derive(Clone)]
pub struct NoticeDesk {
    pub signer: Option<Arc<dyn Signer>>,
    pub laboratory: Laboratory,
    pub mros: Arc<BTreeMap<String, Mro>>,
    pub wake: Arc<BTreeMap<String, Arc<Notify>>>,
}

impl std::fmt::Debug for NoticeDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoticeDesk")
            .field("signer", &self.signer.is_some())
            .field("laboratory", &self.laboratory)
            .field("mros", &self.mros.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl NoticeDesk {
    /// Wakes the sender of `mro_id` (after the commit that queued a notice).
    pub fn wake(&self, mro_id: &str) {
        if let Some(w) = self.wake.get(mro_id) {
            w.notify_one();
        }
    }
}

/// Why a notice was not produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    #[error("no signing key: run `custodian keys generate`")]
    NoSigner,
    #[error("the CCF names no MRO directory id: the report cannot be addressed")]
    NoMro,
    #[error(
        "the MRO named on the CCF (directory id `{0}`) is not in the MRO directory: nothing is sent until the directory lists it"
    )]
    MroNotInDirectory(String),
    #[error(
        "the CCF names MRO {ccf} but directory id {id} is {directory}: nothing is sent until the CCF is corrected"
    )]
    MroNameMismatch {
        ccf: String,
        id: String,
        directory: String,
    },
    #[error("report id {0} is already in use; nothing was stored; try again")]
    ReportIdInUse(String),
    #[error("the notice cannot be built: {0}")]
    Build(String),
    #[error("the notice cannot be signed: {0}")]
    Signing(String),
}

/// The signed payload of the split-unavailable report (40.175(b)(2)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SplitUnavailableNotice {
    pub report_id: String,
    pub kind: String,
    pub laboratory: LabParty,
    pub mro: NamedParty,
    pub specimen_id: String,
    /// The MRO's written request this answers.
    pub request_document: String,
    /// As much as the laboratory knows of why (40.175(b)(2)).
    pub causes: Vec<Cause>,
    pub statement: String,
    pub reported_at: String,
    pub profile: String,
}

/// The signed payload of the primary-retest result (40.187(f)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrimaryRetestNotice {
    pub report_id: String,
    pub kind: String,
    pub laboratory: LabParty,
    pub mro: NamedParty,
    pub specimen_id: String,
    pub request_document: String,
    /// "Reconfirmed" or "Failed to Reconfirm".
    pub result: String,
    pub statement: String,
    pub released_at: String,
    pub certifying_scientist: String,
    pub profile: String,
}

/// Keys that would carry donor (or employer) identity; none may appear anywhere in a payload
/// that is not the results report.
const DONOR_KEYS: [&str; 4] = ["donor", "ssn", "employee", "employer"];

/// Refuses a payload with any key naming donor identity (at any depth).
pub fn assert_no_donor_identity(v: &serde_json::Value) -> Result<(), String> {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let lower = k.to_ascii_lowercase();
                if DONOR_KEYS.iter().any(|d| lower.contains(d)) {
                    return Err(format!(
                        "the payload carries `{k}`: no donor or employer identity may be sent"
                    ));
                }
                assert_no_donor_identity(x)?;
            }
            Ok(())
        }
        serde_json::Value::Array(a) => a.iter().try_for_each(assert_no_donor_identity),
        _ => Ok(()),
    }
}

/// What was queued: the report id, the MRO and the content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Queued {
    pub report_id: String,
    pub mro_id: String,
    pub content_sha256: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The destination of a notice: the MRO directory entry named on the CCF, whose name must be
/// the CCF's (a mistyped id never sends a donor's notice to another real MRO).
fn destination<'d>(
    desk: &'d NoticeDesk,
    mro_id: Option<&str>,
    ccf_name: &str,
) -> Result<&'d Mro, NoticeError> {
    let id = mro_id
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .ok_or(NoticeError::NoMro)?;
    let entry = desk
        .mros
        .get(id)
        .ok_or_else(|| NoticeError::MroNotInDirectory(id.to_string()))?;
    if !crate::domain::parties::mro_names_match(ccf_name, &entry.name) {
        return Err(NoticeError::MroNameMismatch {
            ccf: ccf_name.chars().take(100).collect(),
            id: id.to_string(),
            directory: entry.name.clone(),
        });
    }
    Ok(entry)
}

/// Signs `payload` and queues it to `mro_id` inside the caller's transaction.
#[allow(clippy::too_many_arguments)]
fn sign_and_queue<T: Serialize>(
    tx: &mut Tx<'_>,
    desk: &NoticeDesk,
    payload: &T,
    report_id: &str,
    specimen_id: &str,
    mro_id: &str,
    at_ms: u64,
    by: &str,
) -> Result<Result<Queued, NoticeError>, TxError> {
    let signer = match &desk.signer {
        Some(s) => s,
        None => return Ok(Err(NoticeError::NoSigner)),
    };
    if tx
        .get::<outbox::StoredReport>(Keyspace::Reports, report_id.as_bytes())?
        .is_some()
    {
        return Ok(Err(NoticeError::ReportIdInUse(report_id.to_string())));
    }
    let value = match serde_json::to_value(payload) {
        Ok(v) => v,
        Err(e) => return Ok(Err(NoticeError::Build(e.to_string()))),
    };
    if let Err(e) = assert_no_donor_identity(&value) {
        return Ok(Err(NoticeError::Build(e)));
    }
    let bytes = serde_json::to_vec(&value).expect("a JSON value serializes");
    let sha = sha256_hex(&bytes);
    let (jws, kid) = match signer.sign(&bytes) {
        Ok(x) => x,
        Err(e) => return Ok(Err(NoticeError::Signing(e))),
    };
    outbox::enqueue(
        tx,
        outbox::Signed {
            report_id: report_id.to_string(),
            specimen_id: specimen_id.to_string(),
            mro_id: mro_id.to_string(),
            jws,
            kid,
            content_sha256: sha.clone(),
            released_at_ms: at_ms,
            released_by: by.to_string(),
            replaces: None,
        },
    )?;
    Ok(Ok(Queued {
        report_id: report_id.to_string(),
        mro_id: mro_id.to_string(),
        content_sha256: sha,
    }))
}

fn lab_party(l: &Laboratory) -> LabParty {
    LabParty {
        name: l.name.clone(),
        address: l.address.clone(),
    }
}

/// Signs the split-unavailable report and queues it to the MRO named on the CCF, in the
/// transaction that records the answer to the MRO's request.
pub fn queue_split_unavailable(
    tx: &mut Tx<'_>,
    desk: &NoticeDesk,
    report: &UnavailableReport,
    profile: &str,
    recorded_by: &str,
) -> Result<Result<Queued, NoticeError>, TxError> {
    let mro = match destination(desk, report.mro.id.as_deref(), &report.mro.name) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    let at = report.prepared_at_ms;
    let report_id = format!("U-{}-{at}", report.specimen_id);
    let payload = SplitUnavailableNotice {
        report_id: report_id.clone(),
        kind: KIND_SPLIT_UNAVAILABLE.into(),
        laboratory: lab_party(&desk.laboratory),
        mro: NamedParty {
            name: report.mro.name.clone(),
            id: mro.id.clone(),
        },
        specimen_id: report.specimen_id.clone(),
        request_document: report.mro_request.document_ref.clone(),
        causes: report.causes.clone(),
        statement: report.statement.clone(),
        reported_at: crate::core::clock::rfc3339(at),
        profile: profile.to_string(),
    };
    sign_and_queue(
        tx,
        desk,
        &payload,
        &report_id,
        &report.specimen_id,
        &mro.id,
        at,
        recorded_by,
    )
}

/// The primary-retest result as a certifying scientist releases it.
pub struct RetestRelease<'a> {
    pub outcome: &'a PrimaryRetestReport,
    pub mro_name: &'a str,
    pub mro_id: Option<&'a str>,
    pub profile: &'a str,
    pub scientist: &'a str,
    pub released_at_ms: u64,
}

/// Signs the primary-retest result and queues it to the MRO named on the CCF.
pub fn queue_primary_retest(
    tx: &mut Tx<'_>,
    desk: &NoticeDesk,
    r: RetestRelease<'_>,
) -> Result<Result<Queued, NoticeError>, TxError> {
    let mro = match destination(desk, r.mro_id, r.mro_name) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    let at = r.released_at_ms;
    let report_id = format!("P-{}-{at}", r.outcome.specimen_id);
    let result = match &r.outcome.result {
        crate::domain::split::Reconfirmation::Reconfirmed => "Reconfirmed",
        crate::domain::split::Reconfirmation::FailedToReconfirm { .. } => "Failed to Reconfirm",
    };
    let payload = PrimaryRetestNotice {
        report_id: report_id.clone(),
        kind: KIND_PRIMARY_RETEST.into(),
        laboratory: lab_party(&desk.laboratory),
        mro: NamedParty {
            name: r.mro_name.to_string(),
            id: mro.id.clone(),
        },
        specimen_id: r.outcome.specimen_id.clone(),
        request_document: r.outcome.request_ref.clone(),
        result: result.to_string(),
        statement: r.outcome.statement.clone(),
        released_at: crate::core::clock::rfc3339(at),
        certifying_scientist: r.scientist.to_string(),
        profile: r.profile.to_string(),
    };
    sign_and_queue(
        tx,
        desk,
        &payload,
        &report_id,
        &r.outcome.specimen_id,
        &mro.id,
        at,
        r.scientist,
    )
}

/// The payload of a report this laboratory signed (a compact JWS from its own store).
fn own_payload(jws: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let middle = jws.split('.').nth(1)?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(middle)
        .ok()
}

/// The supplementary report of 40.97(e) under the 2001 edition: the MRO's case-by-case written
/// request for quantitative values arrives after the report was released. The released report
/// (read back from the store) is sent again with the values, a new report id, `supplements`
/// naming the released one and the time it was prepared; everything else — results, the
/// certifying scientist who certified them, the certified Copy 1 — is the released report's.
/// Signed and queued to the same MRO in the caller's transaction.
pub fn queue_supplement(
    tx: &mut Tx<'_>,
    desk: &NoticeDesk,
    released_report_id: &str,
    quantitations: std::collections::BTreeMap<String, crate::domain::report::Quantitation>,
    at_ms: u64,
    recorded_by: &str,
) -> Result<Result<Queued, NoticeError>, TxError> {
    let Some(stored) =
        tx.get::<outbox::StoredReport>(Keyspace::Reports, released_report_id.as_bytes())?
    else {
        return Ok(Err(NoticeError::Build(format!(
            "released report {released_report_id} is not in the store"
        ))));
    };
    let Some(original) = own_payload(&stored.jws)
        .and_then(|b| serde_json::from_slice::<crate::domain::report::Report>(&b).ok())
    else {
        return Ok(Err(NoticeError::Build(format!(
            "released report {released_report_id} cannot be read back"
        ))));
    };
    let Some(signer) = &desk.signer else {
        return Ok(Err(NoticeError::NoSigner));
    };
    let report_id = format!("Q-{}-{at_ms}", original.specimen_id);
    if tx
        .get::<outbox::StoredReport>(Keyspace::Reports, report_id.as_bytes())?
        .is_some()
    {
        return Ok(Err(NoticeError::ReportIdInUse(report_id)));
    }
    let mut supplement = original;
    supplement.report_id = report_id.clone();
    supplement.replaces = None;
    supplement.supplements = Some(released_report_id.to_string());
    supplement.released_at = crate::core::clock::rfc3339(at_ms);
    supplement.quantitations = quantitations;
    let bytes = supplement.to_bytes();
    let sha = supplement.content_sha256();
    let (jws, kid) = match signer.sign(&bytes) {
        Ok(x) => x,
        Err(e) => return Ok(Err(NoticeError::Signing(e))),
    };
    outbox::enqueue(
        tx,
        outbox::Signed {
            report_id: report_id.clone(),
            specimen_id: supplement.specimen_id.clone(),
            mro_id: stored.mro_id.clone(),
            jws,
            kid,
            content_sha256: sha.clone(),
            released_at_ms: at_ms,
            released_by: recorded_by.to_string(),
            replaces: None,
        },
    )?;
    Ok(Ok(Queued {
        report_id,
        mro_id: stored.mro_id,
        content_sha256: sha,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desk() -> NoticeDesk {
        NoticeDesk {
            signer: None,
            laboratory: Laboratory {
                name: "Lab".into(),
                address: "1 Way".into(),
            },
            mros: Arc::new(
                [(
                    "MRO-1".to_string(),
                    Mro {
                        id: "MRO-1".into(),
                        name: "Dr. Pat Example, MD".into(),
                        address: "100 Example Way".into(),
                        quantitation_request: None,
                    },
                )]
                .into_iter()
                .collect(),
            ),
            wake: Arc::new(BTreeMap::new()),
        }
    }

    /// A notice goes only to the directory entry the CCF's id names, and only when the CCF's
    /// MRO name is that entry's.
    #[test]
    fn the_destination_is_the_named_mro_and_only_it() {
        let d = desk();
        assert_eq!(
            destination(&d, Some("MRO-1"), "Example, Pat M.D.")
                .unwrap()
                .id,
            "MRO-1"
        );
        assert!(matches!(
            destination(&d, Some("MRO-1"), "Dr. Lee Other"),
            Err(NoticeError::MroNameMismatch { .. })
        ));
        assert!(matches!(
            destination(&d, Some("MRO-9"), "Dr. Pat Example, MD"),
            Err(NoticeError::MroNotInDirectory(_))
        ));
        assert!(matches!(
            destination(&d, Some("  "), "Dr. Pat Example, MD"),
            Err(NoticeError::NoMro)
        ));
    }

    #[test]
    fn donor_identity_keys_are_refused_at_any_depth() {
        let ok = serde_json::json!({"specimen_id": "S-1", "mro": {"name": "Dr. M", "id": "M-1"}});
        assert!(assert_no_donor_identity(&ok).is_ok());
        let bad = serde_json::json!({"a": [{"donor_id": "123"}]});
        assert!(
            assert_no_donor_identity(&bad)
                .unwrap_err()
                .contains("donor_id")
        );
        let bad = serde_json::json!({"Employer": {"name": "X"}});
        assert!(assert_no_donor_identity(&bad).is_err());
    }
}
