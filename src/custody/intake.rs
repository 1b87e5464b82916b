//! Intake: what analyzers and the LIMS hand in becomes durable custody data.
//!
//! Every change is one store transaction run by the group committer: the raw input kept
//! verbatim, the dedupe mark, the specimen records changed and re-evaluated by the rules engine,
//! the state index, and an audit entry — all or nothing. A caller answers its sender only after
//! [`Custody`] returned, which is after the batch's flush and fsync.
//!
//! Duplicates (the same analyzer and MSH-10, or the same LIMS document bytes) are answered as
//! accepted again and never stored twice.

use crate::core::clock::Clock;
use crate::custody::records::{Indexed, put_specimen};
use crate::domain::rules::{ProfileSet, SpecimenType};
use crate::domain::specimen::{
    Accession, ChangeError, CorrectionEntry, ResultEntry, SpecimenRecord,
};
use crate::store::{
    self, Abort, AuditEntry, CommitError, GroupCommitter, Keyspace, Tx, dedupe_key,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What custody did with an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Stored durably; the specimens it touched, with their new states.
    Stored(Vec<(String, &'static str)>),
    /// Already stored earlier from the same source: nothing written.
    Duplicate,
}

/// Why an input was not applied.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The input cannot be used (the sender gets AE / the file is rejected); nothing stored.
    #[error("{0}")]
    Refused(#[from] ChangeError),
    /// A correction for a specimen the laboratory has no accession for.
    #[error("no accession is stored for the specimen")]
    UnknownSpecimen,
    /// The sender reused a message control id for different content: refused (AE), so that an
    /// instrument whose counter was reset never gets AA for results that were not stored.
    #[error("message control id already used for a message with different results")]
    ReusedControlId,
    /// The store could not make it durable (the sender gets AE and may retry).
    #[error("not stored durably: {0}")]
    NotDurable(String),
}

impl From<CommitError<ChangeErrorOrUnknown>> for IngestError {
    fn from(e: CommitError<ChangeErrorOrUnknown>) -> Self {
        match e {
            CommitError::Aborted(ChangeErrorOrUnknown::Change(c)) => IngestError::Refused(c),
            CommitError::Aborted(ChangeErrorOrUnknown::UnknownSpecimen) => {
                IngestError::UnknownSpecimen
            }
            // A refusal, not a storage failure: never "not durable; send again".
            CommitError::Aborted(ChangeErrorOrUnknown::ReusedControlId) => {
                IngestError::ReusedControlId
            }
            other => IngestError::NotDurable(other.to_string()),
        }
    }
}

/// A domain refusal inside a transaction.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChangeErrorOrUnknown {
    #[error("{0}")]
    Change(ChangeError),
    #[error("no accession is stored for the specimen")]
    UnknownSpecimen,
    #[error("message control id reused for different content")]
    ReusedControlId,
}

/// A refused input, kept with its reason (never its content in a log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// `analyzer:NAME` or `lims`.
    pub source: String,
    /// MSH-10 or the document's file name, if known.
    pub reference: Option<String>,
    /// Why it was refused (positions and rules, no content).
    pub reason: String,
    pub received_at_ms: u64,
    /// The input as received.
    pub raw: Vec<u8>,
}

/// The custody operations, shared by every listener and the spool.
#[derive(Clone)]
pub struct Custody {
    committer: GroupCommitter,
    profiles: Arc<ProfileSet>,
    default_profile: Arc<str>,
    clock: Arc<dyn Clock>,
    lifecycle: Arc<crate::custody::lifecycle::Settings>,
    /// The specimen types the laboratory is certified for (`[laboratory]`).
    certified: Arc<[SpecimenType]>,
}

/// An image of CCF Copy 1 written in the same transaction as the change that names it, with
/// its audit entry (media type, size and SHA-256; never content).
#[derive(Clone)]
pub struct ImageWrite {
    pub specimen_id: String,
    /// `received` or `certified`.
    pub kind: &'static str,
    pub meta: crate::domain::copy1::ImageMeta,
    pub data: Arc<Vec<u8>>,
}

impl ImageWrite {
    /// An image with its metadata (hash and size computed here).
    pub fn new(
        specimen_id: &str,
        kind: &'static str,
        media_type: crate::domain::copy1::MediaType,
        data: Vec<u8>,
        source: crate::domain::copy1::ImageSource,
        now_ms: u64,
    ) -> ImageWrite {
        ImageWrite {
            specimen_id: specimen_id.to_string(),
            kind,
            meta: crate::domain::copy1::ImageMeta {
                media_type,
                sha256: crate::domain::copy1::sha256_hex(&data),
                bytes: data.len() as u64,
                source,
                received_at_ms: now_ms,
            },
            data: Arc::new(data),
        }
    }

    fn write(&self, tx: &mut Tx<'_>, actor: &str, now: u64) -> Result<(), store::TxError> {
        tx.put_raw_bytes(
            Keyspace::Images,
            &store::image_key(&self.specimen_id, self.kind),
            &self.data,
        )?;
        tx.audit(
            AuditEntry::new(
                now,
                short(actor),
                format!("ccf_image_{}", self.kind),
                self.specimen_id.as_str(),
            )
            .after(format!(
                "{}; {} bytes; sha256 {}",
                self.meta.media_type.key(),
                self.meta.bytes,
                self.meta.sha256
            )),
        )?;
        Ok(())
    }
}

/// One specimen's change inside a transaction.
type Change = Arc<
    dyn Fn(&mut SpecimenRecord, &ProfileSet, &str, u64) -> Result<(), ChangeErrorOrUnknown>
        + Send
        + Sync,
>;

impl Custody {
    pub fn new(
        committer: GroupCommitter,
        profiles: Arc<ProfileSet>,
        default_profile: &str,
        clock: Arc<dyn Clock>,
    ) -> Custody {
        let lifecycle = Arc::new(crate::custody::lifecycle::Settings::new(
            profiles.clone(),
            default_profile,
        ));
        Custody {
            committer,
            profiles,
            default_profile: Arc::from(default_profile),
            clock,
            lifecycle,
            certified: Arc::from(vec![SpecimenType::Urine]),
        }
    }

    /// The specimen types the laboratory is certified for ([`Custody::new`]: urine only).
    pub fn with_certified_specimen_types(mut self, types: &[SpecimenType]) -> Custody {
        self.certified = Arc::from(types.to_vec());
        self
    }

    pub fn certified_specimen_types(&self) -> &[SpecimenType] {
        &self.certified
    }

    /// Replaces the lifecycle settings (calendar, UTC offset, retention, laboratory) that
    /// custody's transactions use to start and stop clocks. [`Custody::new`] starts with
    /// federal holidays, UTC and no discard delay.
    pub fn with_lifecycle(mut self, settings: crate::custody::lifecycle::Settings) -> Custody {
        self.lifecycle = Arc::new(settings);
        self
    }

    pub fn lifecycle(&self) -> &Arc<crate::custody::lifecycle::Settings> {
        &self.lifecycle
    }

    pub fn committer(&self) -> &GroupCommitter {
        &self.committer
    }

    pub fn store(&self) -> &store::Store {
        self.committer.store()
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub fn profiles(&self) -> &ProfileSet {
        &self.profiles
    }

    pub fn default_profile(&self) -> &str {
        &self.default_profile
    }

    /// Results from an analyzer message for one specimen.
    pub async fn results(
        &self,
        analyzer: &str,
        control_id: &str,
        raw: Vec<u8>,
        specimen_id: &str,
        results: Vec<ResultEntry>,
    ) -> Result<Applied, IngestError> {
        let fingerprint = results_fingerprint(specimen_id, &results);
        let results = Arc::new(results);
        let change: Change = Arc::new(move |rec, profiles, default, now| {
            rec.attach_results((*results).clone(), profiles, default, now)
                .map_err(ChangeErrorOrUnknown::Change)
        });
        self.apply_with(
            analyzer.to_string(),
            control_id.to_string(),
            format!("analyzer:{analyzer}"),
            "results_received",
            raw,
            vec![(specimen_id.to_string(), change, true)],
            fingerprint,
            Vec::new(),
        )
        .await
    }

    /// An accession (CCF Copy 1 and the accessioning findings).
    /// `image` is the image of Copy 1 as received, when the accession carries one: stored in the
    /// same transaction, its hash in the audit entry.
    pub async fn accession(
        &self,
        document: &str,
        raw: Vec<u8>,
        specimen_id: &str,
        accession: Accession,
        image: Option<(crate::domain::copy1::MediaType, Vec<u8>)>,
    ) -> Result<Applied, IngestError> {
        let accession = Arc::new(accession);
        let certified = self.certified.clone();
        let image = image.map(|(media, data)| {
            ImageWrite::new(
                specimen_id,
                "received",
                media,
                data,
                crate::domain::copy1::ImageSource::Accession {
                    document: document.to_string(),
                },
                self.clock.now_ms(),
            )
        });
        let meta = image.as_ref().map(|i| i.meta.clone());
        let change: Change = Arc::new(move |rec, profiles, default, now| {
            rec.attach_accession_for((*accession).clone(), profiles, default, &certified, now)
                .map_err(ChangeErrorOrUnknown::Change)?;
            if let Some(m) = &meta {
                rec.ccf_image = Some(m.clone());
            }
            Ok(())
        });
        let reference = document_key(document, &raw);
        self.apply_with(
            "lims".into(),
            reference.clone(),
            "lims".into(),
            "accessioned",
            raw,
            vec![(specimen_id.to_string(), change, true)],
            reference,
            image.into_iter().collect(),
        )
        .await
    }

    /// The certified Copy 1 the LIMS produced after certification (40.97(b)(2)): stored with its
    /// statement (specimen ID, results, signer) in one transaction, the image's hash audited. The
    /// specimen must be accessioned and not yet released; a later copy replaces an earlier one
    /// (both stay in the audit log). Checked against the verdict at release.
    pub async fn certified_copy(
        &self,
        document: &str,
        raw: Vec<u8>,
        specimen_id: &str,
        results: Vec<crate::domain::rules::ResultCategory>,
        certifying_scientist: String,
        image: (crate::domain::copy1::MediaType, Vec<u8>),
    ) -> Result<Applied, IngestError> {
        let write = ImageWrite::new(
            specimen_id,
            "certified",
            image.0,
            image.1,
            crate::domain::copy1::ImageSource::Lims {
                document: document.to_string(),
            },
            self.clock.now_ms(),
        );
        let meta = crate::domain::copy1::CertifiedCopyMeta {
            image: write.meta.clone(),
            specimen_id: specimen_id.to_string(),
            results,
            certifying_scientist,
        };
        let change: Change = Arc::new(move |rec, _profiles, _default, _now| {
            if rec.accession.is_none() {
                return Err(ChangeErrorOrUnknown::UnknownSpecimen);
            }
            if rec.release.is_some() {
                return Err(ChangeErrorOrUnknown::Change(ChangeError::AlreadyReleased));
            }
            rec.certified_copy1 = Some(meta.clone());
            Ok(())
        });
        let reference = document_key(document, &raw);
        self.apply_with(
            "lims".into(),
            reference.clone(),
            "lims".into(),
            "certified_copy_received",
            raw,
            vec![(specimen_id.to_string(), change, false)],
            reference,
            vec![write],
        )
        .await
    }

    /// A correction of a correctable flaw; the specimen must be accessioned.
    pub async fn correction(
        &self,
        document: &str,
        raw: Vec<u8>,
        specimen_id: &str,
        correction: CorrectionEntry,
    ) -> Result<Applied, IngestError> {
        let correction = Arc::new(correction);
        let change: Change = Arc::new(move |rec, profiles, default, now| {
            if rec.accession.is_none() {
                return Err(ChangeErrorOrUnknown::UnknownSpecimen);
            }
            if let Some(closed) =
                crate::custody::lifecycle::correction_too_late(rec, correction.received_at_ms)
            {
                return Err(ChangeErrorOrUnknown::Change(
                    ChangeError::CorrectionWindowClosed(closed),
                ));
            }
            rec.attach_correction((*correction).clone(), profiles, default, now)
                .map_err(ChangeErrorOrUnknown::Change)
        });
        self.apply(
            "lims".into(),
            document_key(document, &raw),
            "lims".into(),
            "flaw_corrected",
            raw,
            vec![(specimen_id.to_string(), change, false)],
        )
        .await
    }

    /// A confirmation batch file: every specimen's results, all or nothing.
    pub async fn batch(
        &self,
        document: &str,
        raw: Vec<u8>,
        specimens: Vec<(String, Vec<ResultEntry>)>,
    ) -> Result<Applied, IngestError> {
        let changes = specimens
            .into_iter()
            .map(|(id, results)| {
                let results = Arc::new(results);
                let change: Change = Arc::new(move |rec, profiles, default, now| {
                    rec.attach_results((*results).clone(), profiles, default, now)
                        .map_err(ChangeErrorOrUnknown::Change)
                });
                (id, change, true)
            })
            .collect();
        self.apply(
            "lims".into(),
            document_key(document, &raw),
            "lims".into(),
            "results_received",
            raw,
            changes,
        )
        .await
    }

    /// An operator's re-assignment of a specimen's edition, before release only
    /// ([`SpecimenRecord::reassign_edition`]): one transaction with its audit entry
    /// (`edition_reassigned`, the profile names before and after; the reason stays in the
    /// record's `edition_changes`). Returns the new state.
    pub async fn reassign_edition(
        &self,
        specimen_id: &str,
        profile: &str,
        reason: &str,
        by: &str,
    ) -> Result<&'static str, IngestError> {
        let now = self.clock.now_ms();
        let profiles = self.profiles.clone();
        let default = self.default_profile.clone();
        let certified = self.certified.clone();
        let lifecycle = self.lifecycle.clone();
        let (id, profile, reason, by) = (
            specimen_id.to_string(),
            profile.to_string(),
            reason.to_string(),
            by.to_string(),
        );
        let r = self
            .committer
            .submit(
                move |tx: &mut Tx<'_>| -> Result<&'static str, Abort<ChangeErrorOrUnknown>> {
                    let Some(mut rec) = crate::custody::records::get_specimen(tx, &id)? else {
                        return Err(Abort::Domain(ChangeErrorOrUnknown::UnknownSpecimen));
                    };
                    let before = Indexed::of(&rec);
                    let from = rec.profile_name().unwrap_or("untested").to_string();
                    rec.reassign_edition(
                        &profile, &reason, &by, &profiles, &default, &certified, now,
                    )
                    .map_err(|e| Abort::Domain(ChangeErrorOrUnknown::Change(e)))?;
                    crate::custody::lifecycle::after_change(&mut rec, &lifecycle);
                    let state = rec.state.key();
                    put_specimen(tx, Some(before), &rec)?;
                    tx.audit(
                        AuditEntry::new(
                            now,
                            short(&format!("user:{by}")),
                            "edition_reassigned",
                            id.as_str(),
                        )
                        .before(format!("{}; edition {from}", before.state().key()))
                        .after(format!("{state}; edition {profile}")),
                    )?;
                    Ok(state)
                },
            )
            .await;
        r.map_err(IngestError::from)
    }

    /// Keeps a refused input with its reason, durably.
    pub async fn quarantine(&self, record: QuarantineRecord) -> Result<(), IngestError> {
        let now = self.clock.now_ms();
        let record = Arc::new(record);
        let r = self
            .committer
            .submit(
                move |tx: &mut Tx<'_>| -> Result<(), Abort<ChangeErrorOrUnknown>> {
                    let key = quarantine_key(now, &record);
                    tx.put(Keyspace::Quarantine, &key, &*record)?;
                    let mut entry = AuditEntry::new(now, short(&record.source), "quarantined", "-");
                    entry = entry.after("quarantined");
                    tx.audit(entry)?;
                    Ok(())
                },
            )
            .await;
        r.map_err(IngestError::from)
    }

    async fn apply(
        &self,
        source: String,
        reference: String,
        actor: String,
        action: &'static str,
        raw: Vec<u8>,
        changes: Vec<(String, Change, bool)>,
    ) -> Result<Applied, IngestError> {
        // A LIMS document's reference is the hash of its bytes: the content is the key.
        let fingerprint = reference.clone();
        self.apply_with(
            source,
            reference,
            actor,
            action,
            raw,
            changes,
            fingerprint,
            Vec::new(),
        )
        .await
    }

    /// Applies changes once per (source, reference). `fingerprint` says what the input meant: a
    /// second input under the same reference is a duplicate only if its fingerprint matches.
    #[allow(clippy::too_many_arguments)]
    async fn apply_with(
        &self,
        source: String,
        reference: String,
        actor: String,
        action: &'static str,
        raw: Vec<u8>,
        changes: Vec<(String, Change, bool)>,
        fingerprint: String,
        images: Vec<ImageWrite>,
    ) -> Result<Applied, IngestError> {
        let now = self.clock.now_ms();
        let profiles = self.profiles.clone();
        let default = self.default_profile.clone();
        let lifecycle = self.lifecycle.clone();
        let raw = Arc::new(raw);
        let r = self
            .committer
            .submit(
                move |tx: &mut Tx<'_>| -> Result<Applied, Abort<ChangeErrorOrUnknown>> {
                    let dkey = dedupe_key(&source, &reference)?;
                    if let Some(seen) = tx.get::<DedupeMark>(Keyspace::Dedupe, &dkey)? {
                        if seen.fingerprint == fingerprint {
                            return Ok(Applied::Duplicate);
                        }
                        return Err(Abort::Domain(ChangeErrorOrUnknown::ReusedControlId));
                    }
                    let mut touched = Vec::new();
                    for (specimen_id, change, may_create) in &changes {
                        let existing: Option<SpecimenRecord> =
                            crate::custody::records::get_specimen(tx, specimen_id)?;
                        let (mut rec, before) = match existing {
                            Some(r) => {
                                let b = Indexed::of(&r);
                                (r, Some(b))
                            }
                            None if *may_create => (SpecimenRecord::new(specimen_id, now), None),
                            None => {
                                return Err(Abort::Domain(ChangeErrorOrUnknown::UnknownSpecimen));
                            }
                        };
                        change(&mut rec, &profiles, &default, now).map_err(Abort::Domain)?;
                        crate::custody::lifecycle::after_change(&mut rec, &lifecycle);
                        let after = rec.state.key();
                        put_specimen(tx, before, &rec)?;
                        let mut entry =
                            AuditEntry::new(now, short(&actor), action, specimen_id.as_str())
                                .after(after);
                        if let Some(b) = before {
                            entry = entry.before(b.state().key());
                        }
                        tx.audit(entry)?;
                        touched.push((specimen_id.clone(), after));
                    }
                    for image in &images {
                        image.write(tx, &actor, now)?;
                    }
                    tx.put_raw_bytes(Keyspace::Raw, &dkey, &raw)?;
                    tx.put(
                        Keyspace::Dedupe,
                        &dkey,
                        &DedupeMark {
                            at_ms: now,
                            fingerprint: fingerprint.clone(),
                        },
                    )?;
                    Ok(Applied::Stored(touched))
                },
            )
            .await;
        r.map_err(IngestError::from)
    }
}

/// What the dedupe index remembers of an input: when, and a fingerprint of what it meant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupeMark {
    pub at_ms: u64,
    pub fingerprint: String,
}

/// The meaning of an analyzer message: its specimen and every (kind, target, value, bottle),
/// order-independent. A retransmission with another MSH-7 or segment order is the same message.
pub fn results_fingerprint(specimen_id: &str, results: &[ResultEntry]) -> String {
    use sha2::Digest;
    let mut items: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{:?}|{}|{}|{}|{:?}",
                r.kind,
                r.target,
                r.value
                    .map(|v| v.normalize().to_string())
                    .unwrap_or_default(),
                r.unit,
                r.bottle
            )
        })
        .collect();
    items.sort();
    let mut h = sha2::Sha256::new();
    h.update(specimen_id.as_bytes());
    for i in items {
        h.update(b"\n");
        h.update(i.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A LIMS document is known by the hash of its bytes: the same document dropped again (under
/// any name, or replayed after a crash) is a duplicate; a changed document is new input.
pub fn document_key(_name: &str, raw: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(raw);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn quarantine_key(now: u64, r: &QuarantineRecord) -> Vec<u8> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(r.source.as_bytes());
    h.update(&r.raw);
    h.update(r.reason.as_bytes());
    let d = h.finalize();
    let mut key = now.to_be_bytes().to_vec();
    key.extend_from_slice(&d[..8]);
    key
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reused control id aborts the transaction as a refusal; it must never be reported as a
    /// storage failure (the analyzer would resend it forever and IT would look at the disk).
    #[test]
    fn a_reused_control_id_is_a_refusal_not_a_storage_failure() {
        let e = IngestError::from(CommitError::Aborted(ChangeErrorOrUnknown::ReusedControlId));
        assert!(matches!(e, IngestError::ReusedControlId), "{e:?}");
        let e = IngestError::from(CommitError::Aborted(ChangeErrorOrUnknown::UnknownSpecimen));
        assert!(matches!(e, IngestError::UnknownSpecimen), "{e:?}");
    }
}
