//! Review and release by a certifying scientist (40.97(b)(1)(ii)): the review queue, release
//! (one specimen, or a listed batch of negatives under one signature), and send-back for
//! retest. A release is an electronic signature: who, when, what it means ("reviewed and
//! released"), bound to the exact report content by its SHA-256, in the audit chain. The
//! signed report goes into the durable outbox in the same transaction.

use crate::core::telemetry::emit;
use crate::custody::events::{CorrectedReportReleased, ReportReleased};
use crate::custody::outbox::{self, Delivery, StoredReport};
use crate::custody::records::{Indexed, put_specimen};
use crate::domain::parties::{Laboratory, Mro};
use crate::domain::report;
use crate::domain::specimen::{self, SpecimenRecord, State};
use crate::store::{Abort, AuditEntry, GroupCommitter, Keyspace, Tx};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Notify;

/// Signs a report payload as a compact JWS; returns (jws, key id).
pub use crate::trust::signing::Signer;

/// What a release means, as recorded with the signature.
pub const MEANING: &str = "reviewed and released";

/// What the release of a corrected report means, as recorded with the signature.
pub const MEANING_CORRECTED: &str = "corrected report reviewed and released";

/// A certifying scientist's correction of CCF data on a released report: why, the document that
/// justifies it, and the fields. Nothing else is accepted (results change only through a new
/// evaluation, and the MRO's directory id never changes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrectionRequest {
    pub reason: String,
    pub document_ref: String,
    pub ccf: specimen::CcfAmendment,
}

/// Why a release or send-back was refused. Names the specimen and the rule, never content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("no such specimen")]
    UnknownSpecimen,
    #[error("the specimen is `{0}`, not ready for review")]
    NotReady(&'static str),
    #[error(
        "the MRO named on the CCF (directory id `{0}`) is not in the MRO directory: the report is held until the directory lists it"
    )]
    MroNotInDirectory(String),
    #[error(
        "CCF names MRO {ccf} but directory id {id} is {directory}: the report is held until the CCF is corrected"
    )]
    MroNameMismatch {
        ccf: String,
        id: String,
        directory: String,
    },
    #[error("batch release is for negative results only; specimen {0} is not negative")]
    NotNegative(String),
    #[error("the report is held: the certified Copy 1 is missing: {0}")]
    Copy1Missing(String),
    #[error("the report is held: the certified Copy 1 does not match: {0}")]
    Copy1Mismatch(String),
    #[error(
        "the specimen changed while its release was prepared; nothing was stored; try the release again"
    )]
    Changed,
    #[error("the report cannot be built: {0}")]
    Report(String),
    #[error("the report cannot be signed: {0}")]
    Signing(String),
    #[error("not stored durably: {0}")]
    NotDurable(String),
    /// The new report's id is already taken (two releases in the same millisecond): nothing
    /// was stored; the release may be tried again. Not a storage failure.
    #[error("report id {0} is already in use; nothing was stored; try the release again")]
    ReportIdInUse(String),
    #[error("a reason is required")]
    NoReason,
    #[error("no such report")]
    UnknownReport,
    #[error("the report was already replaced by corrected report {0}; correct that one")]
    Superseded(String),
    #[error("the document that justifies the correction is required")]
    NoDocument,
    #[error("nothing to correct: no CCF field differs from the report")]
    NothingToCorrect,
    #[error("the correction is not valid: {0}")]
    BadCorrection(String),
}

/// A corrected report that was stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Corrected {
    pub specimen_id: String,
    pub report_id: String,
    pub replaces: String,
    pub mro_id: String,
    pub content_sha256: String,
    /// The CCF fields that changed (names only).
    pub fields: Vec<String>,
}

/// A release that was stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Released {
    pub specimen_id: String,
    pub report_id: String,
    pub mro_id: String,
    pub content_sha256: String,
}

/// Releases and sends back; shared by the admin API handlers.
#[derive(Clone)]
pub struct Releaser {
    pub committer: GroupCommitter,
    pub laboratory: Laboratory,
    pub mros: Arc<BTreeMap<String, Mro>>,
    pub signer: Option<Arc<dyn Signer>>,
    pub clock: Arc<dyn crate::core::clock::Clock>,
    /// Wakes the sender of an MRO after a release to it.
    pub wake: Arc<BTreeMap<String, Arc<Notify>>>,
    /// Retention starts with the release (40.99(a)): its record and clock are written in the
    /// release transaction.
    pub lifecycle: Arc<crate::custody::lifecycle::Settings>,
    /// Where the certified Copy 1 of a non-negative result comes from.
    pub copy1_source: crate::domain::copy1::Copy1Source,
}

impl Releaser {
    /// Releases specimens as one signature act; all or nothing. `negatives_only` for batches.
    pub async fn release(
        &self,
        specimen_ids: Vec<String>,
        scientist: &str,
        negatives_only: bool,
    ) -> Result<Vec<Released>, ReleaseError> {
        let signer = self.signer.clone().ok_or_else(|| {
            ReleaseError::Signing("no signing key: run `custodian keys generate`".into())
        })?;
        let now = self.clock.now_ms();
        let lab = self.laboratory.clone();
        let mros = self.mros.clone();
        let scientist = scientist.to_string();
        let ids = specimen_ids.clone();
        let lifecycle = self.lifecycle.clone();
        // The certified Copy 1 of every non-negative result is rendered (or the LIMS's copy
        // checked) before the transaction, from the record as it is now; the transaction then
        // takes it only if the record did not change meanwhile (rendering never holds up the
        // group commit).
        let mut copies = BTreeMap::new();
        for (n, id) in ids.iter().enumerate() {
            let release = report::Release {
                report_id: format!("R-{id}-{now}-{n}"),
                released_at_ms: now,
                certifying_scientist: scientist.clone(),
                replaces: None,
            };
            if let Some(c) = self.prepare_copy(id, &release)? {
                copies.insert(id.clone(), c);
            }
        }
        let r = self
            .committer
            .submit(
                move |tx: &mut Tx<'_>| -> Result<Vec<Released>, Abort<ReleaseError>> {
                    let mut out = Vec::new();
                    for (n, id) in ids.iter().enumerate() {
                        let Some(mut rec) = crate::custody::records::get_specimen(tx, id)? else {
                            return Err(Abort::Domain(ReleaseError::UnknownSpecimen));
                        };
                        let before = Indexed::of(&rec);
                        if rec.state != State::ReadyForReview {
                            return Err(Abort::Domain(ReleaseError::NotReady(rec.state.key())));
                        }
                        if negatives_only {
                            let negative = rec.evaluation.as_ref().is_some_and(|e| {
                                e.verdict.results
                                    == [crate::domain::rules::ResultCategory::Negative]
                            });
                            if !negative {
                                return Err(Abort::Domain(ReleaseError::NotNegative(id.clone())));
                            }
                        }
                        let mro_id = rec
                            .accession
                            .as_ref()
                            .and_then(|a| a.ccf.mro.id.clone())
                            .unwrap_or_default();
                        if let Some(problem) = destination_problem(&rec, &mros) {
                            return Err(Abort::Domain(problem));
                        }
                        let as_prepared = rec.updated_at_ms;
                        apply_general_request(
                            &mut rec,
                            &mros,
                            &lifecycle.profiles,
                            &lifecycle.default_profile,
                        )
                        .map_err(|e| Abort::Domain(ReleaseError::Report(e)))?;
                        let report_id = format!("R-{id}-{now}-{n}");
                        let rel = report::Release {
                            report_id: report_id.clone(),
                            released_at_ms: now,
                            certifying_scientist: scientist.clone(),
                            replaces: None,
                        };
                        let mut built = report::build(&lab, &rec, &rel)
                            .map_err(|e| Abort::Domain(ReleaseError::Report(e.to_string())))?;
                        built.ccf_copy1 = take_copy(&copies, id, as_prepared, &built)?;
                        let copy_sha = copy_note(&built);
                        let sha = built.content_sha256();
                        let (jws, kid) = signer
                            .sign(&built.to_bytes())
                            .map_err(|e| Abort::Domain(ReleaseError::Signing(e)))?;
                        rec.release = Some(specimen::Release {
                            report_id: report_id.clone(),
                            released_at_ms: now,
                            scientist: scientist.clone(),
                            meaning: MEANING.into(),
                            content_sha256: sha.clone(),
                        });
                        rec.state = State::Released;
                        rec.updated_at_ms = now;
                        crate::custody::lifecycle::on_release(&mut rec, &lifecycle, now);
                        put_specimen(tx, Some(before), &rec)?;
                        outbox::enqueue(
                            tx,
                            outbox::Signed {
                                report_id: report_id.clone(),
                                specimen_id: id.clone(),
                                mro_id: mro_id.clone(),
                                jws,
                                kid,
                                content_sha256: sha.clone(),
                                released_at_ms: now,
                                released_by: scientist.clone(),
                                replaces: None,
                            },
                        )?;
                        let who: String = format!("user:{scientist}").chars().take(64).collect();
                        tx.audit(
                            AuditEntry::new(now, who, "released", id.as_str())
                                .before(State::ReadyForReview.key())
                                .after(format!(
                                    "{MEANING}; report {report_id}; sha256 {sha}{copy_sha}"
                                )),
                        )?;
                        out.push(Released {
                            specimen_id: id.clone(),
                            report_id,
                            mro_id,
                            content_sha256: sha,
                        });
                    }
                    Ok(out)
                },
            )
            .await;
        let released = r.map_err(|e| match e {
            crate::store::CommitError::Aborted(e) => e,
            other => ReleaseError::NotDurable(other.to_string()),
        })?;
        for r in &released {
            if let Some(w) = self.wake.get(&r.mro_id) {
                w.notify_one();
            }
            emit(ReportReleased {
                report_id: &r.report_id,
                mro: &r.mro_id,
            });
        }
        Ok(released)
    }

    /// Corrects CCF data of a released report: a new report (new id, `replaces` the old one)
    /// with the amended CCF and the same results, signed, released by `scientist` (meaning
    /// [`MEANING_CORRECTED`]) and queued to the same MRO in one transaction, audited with both
    /// report ids and the names of the fields (no values). The old report is marked
    /// `superseded_by` the new one. Only the latest report of a specimen can be corrected.
    pub async fn correct(
        &self,
        report_id: &str,
        scientist: &str,
        request: CorrectionRequest,
    ) -> Result<Corrected, ReleaseError> {
        let clean = |t: &str| -> String {
            t.chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect::<String>()
                .trim()
                .to_string()
        };
        let reason = clean(&request.reason);
        let document = clean(&request.document_ref);
        if reason.is_empty() {
            return Err(ReleaseError::NoReason);
        }
        if document.is_empty() {
            return Err(ReleaseError::NoDocument);
        }
        let signer = self.signer.clone().ok_or_else(|| {
            ReleaseError::Signing("no signing key: run `custodian keys generate`".into())
        })?;
        let now = self.clock.now_ms();
        let lab = self.laboratory.clone();
        let mros = self.mros.clone();
        let scientist = scientist.to_string();
        let old_id = report_id.to_string();
        let amendment = request.ccf;
        let store = self.committer.store().clone();
        let utc_offset = self.lifecycle.utc_offset_minutes;
        let copy1_source = self.copy1_source;
        let r = self
            .committer
            .submit(
                move |tx: &mut Tx<'_>| -> Result<Corrected, Abort<ReleaseError>> {
                    let Some(mut old) =
                        tx.get::<StoredReport>(Keyspace::Reports, old_id.as_bytes())?
                    else {
                        return Err(Abort::Domain(ReleaseError::UnknownReport));
                    };
                    if let Some(next) = &old.superseded_by {
                        return Err(Abort::Domain(ReleaseError::Superseded(next.clone())));
                    }
                    let id = old.specimen_id.clone();
                    let Some(mut rec) = crate::custody::records::get_specimen(tx, &id)? else {
                        return Err(Abort::Domain(ReleaseError::UnknownSpecimen));
                    };
                    let before = Indexed::of(&rec);
                    let Some(previous_release) = rec.release.clone() else {
                        return Err(Abort::Domain(ReleaseError::NotReady(rec.state.key())));
                    };
                    if rec.state != State::Released || previous_release.report_id != old_id {
                        return Err(Abort::Domain(ReleaseError::NotReady(rec.state.key())));
                    }
                    let Some(accession) = rec.accession.as_mut() else {
                        return Err(Abort::Domain(ReleaseError::NotReady(rec.state.key())));
                    };
                    let changed = amendment
                        .apply(&mut accession.ccf)
                        .map_err(|e| Abort::Domain(ReleaseError::BadCorrection(e)))?;
                    if changed.is_empty() {
                        return Err(Abort::Domain(ReleaseError::NothingToCorrect));
                    }
                    // The destination is the one the old report went to, and it never changes.
                    let mro_id = old.mro_id.clone();
                    if accession.ccf.mro.id.as_deref() != Some(mro_id.as_str()) {
                        return Err(Abort::Domain(ReleaseError::BadCorrection(
                            "the MRO directory id differs from the report's destination".into(),
                        )));
                    }
                    let Some(entry) = mros.get(&mro_id) else {
                        return Err(Abort::Domain(ReleaseError::MroNotInDirectory(mro_id)));
                    };
                    // A corrected MRO name must still be the name of the destination's entry.
                    if !crate::domain::parties::mro_names_match(
                        &accession.ccf.mro.name,
                        &entry.name,
                    ) {
                        return Err(Abort::Domain(ReleaseError::MroNameMismatch {
                            ccf: accession.ccf.mro.name.chars().take(100).collect(),
                            id: mro_id,
                            directory: entry.name.clone(),
                        }));
                    }
                    let new_id = format!("R-{id}-{now}-c{}", rec.report_corrections.len() + 1);
                    if tx
                        .get::<StoredReport>(Keyspace::Reports, new_id.as_bytes())?
                        .is_some()
                    {
                        return Err(Abort::Domain(ReleaseError::ReportIdInUse(new_id)));
                    }
                    let rel = report::Release {
                        report_id: new_id.clone(),
                        released_at_ms: now,
                        certifying_scientist: scientist.clone(),
                        replaces: Some(old_id.clone()),
                    };
                    let mut built = report::build(&lab, &rec, &rel)
                        .map_err(|e| Abort::Domain(ReleaseError::Report(e.to_string())))?;
                    // The corrected report carries a certified Copy 1 of its own (its report id
                    // and CCF data are new). Corrections are rare: rendered here, in the
                    // transaction, from images that never change once stored.
                    built.ccf_copy1 = crate::custody::copy1::certified_copy(
                        &store,
                        &rec,
                        &built,
                        now,
                        utc_offset,
                        copy1_source,
                    )
                    .map_err(|p| Abort::Domain(copy_error(p)))?;
                    let copy_sha = copy_note(&built);
                    let sha = built.content_sha256();
                    let (jws, kid) = signer
                        .sign(&built.to_bytes())
                        .map_err(|e| Abort::Domain(ReleaseError::Signing(e)))?;
                    let fields: Vec<String> = changed.iter().map(|(k, _)| k.to_string()).collect();
                    rec.report_corrections.push(specimen::ReportCorrection {
                        replaces: old_id.clone(),
                        report_id: new_id.clone(),
                        reason: reason.clone(),
                        document: document.clone(),
                        previous: changed
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect(),
                        superseded_release: previous_release,
                    });
                    rec.release = Some(specimen::Release {
                        report_id: new_id.clone(),
                        released_at_ms: now,
                        scientist: scientist.clone(),
                        meaning: MEANING_CORRECTED.into(),
                        content_sha256: sha.clone(),
                    });
                    rec.updated_at_ms = now;
                    put_specimen(tx, Some(before), &rec)?;
                    old.superseded_by = Some(new_id.clone());
                    tx.put(Keyspace::Reports, old_id.as_bytes(), &old)?;
                    outbox::enqueue(
                        tx,
                        outbox::Signed {
                            report_id: new_id.clone(),
                            specimen_id: id.clone(),
                            mro_id: mro_id.clone(),
                            jws,
                            kid,
                            content_sha256: sha.clone(),
                            released_at_ms: now,
                            released_by: scientist.clone(),
                            replaces: Some(old_id.clone()),
                        },
                    )?;
                    let who: String = format!("user:{scientist}").chars().take(64).collect();
                    tx.audit(
                        AuditEntry::new(now, who, "report_corrected", id.as_str())
                            .before(format!("report {old_id}; ccf fields {}", fields.join(",")))
                            .after(format!(
                                "{MEANING_CORRECTED}; report {new_id}; sha256 {sha}{copy_sha}"
                            )),
                    )?;
                    Ok(Corrected {
                        specimen_id: id,
                        report_id: new_id,
                        replaces: old_id.clone(),
                        mro_id,
                        content_sha256: sha,
                        fields,
                    })
                },
            )
            .await;
        let corrected = r.map_err(|e| match e {
            crate::store::CommitError::Aborted(e) => e,
            other => ReleaseError::NotDurable(other.to_string()),
        })?;
        if let Some(w) = self.wake.get(&corrected.mro_id) {
            w.notify_one();
        }
        emit(CorrectedReportReleased {
            report_id: &corrected.report_id,
            replaces: &corrected.replaces,
            mro: &corrected.mro_id,
        });
        Ok(corrected)
    }

    /// Sends a specimen back for retest: it leaves the review queue and waits for new results.
    pub async fn send_back(
        &self,
        specimen_id: &str,
        scientist: &str,
        reason: &str,
    ) -> Result<(), ReleaseError> {
        if reason.trim().is_empty() {
            return Err(ReleaseError::NoReason);
        }
        let now = self.clock.now_ms();
        let id = specimen_id.to_string();
        let who: String = format!("user:{scientist}").chars().take(64).collect();
        let reason: String = reason
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        let r = self
            .committer
            .submit(move |tx: &mut Tx<'_>| -> Result<(), Abort<ReleaseError>> {
                let Some(mut rec) = crate::custody::records::get_specimen(tx, &id)? else {
                    return Err(Abort::Domain(ReleaseError::UnknownSpecimen));
                };
                if rec.state != State::ReadyForReview {
                    return Err(Abort::Domain(ReleaseError::NotReady(rec.state.key())));
                }
                let before = Indexed::of(&rec);
                rec.state = State::Screened;
                rec.retest_requested = Some(reason.clone());
                rec.updated_at_ms = now;
                put_specimen(tx, Some(before), &rec)?;
                tx.audit(
                    AuditEntry::new(now, who.clone(), "sent_back_for_retest", id.as_str())
                        .before(State::ReadyForReview.key())
                        .after(format!("screened; reason: {reason}")),
                )?;
                Ok(())
            })
            .await;
        r.map_err(|e| match e {
            crate::store::CommitError::Aborted(e) => e,
            other => ReleaseError::NotDurable(other.to_string()),
        })
    }

    /// Puts a dead letter back in its MRO's queue after the cause was fixed (operator action).
    pub async fn retry_dead_letter(&self, report_id: &str, operator: &str) -> Result<(), String> {
        let now = self.clock.now_ms();
        let rid = report_id.to_string();
        let who: String = format!("user:{operator}").chars().take(64).collect();
        let r = self
            .committer
            .submit(move |tx: &mut Tx<'_>| -> Result<String, Abort<String>> {
                let Some(mut rep) = tx.get::<StoredReport>(Keyspace::Reports, rid.as_bytes())?
                else {
                    return Err(Abort::Domain("no such report".into()));
                };
                if !matches!(rep.delivery, Delivery::DeadLetter { .. }) {
                    return Err(Abort::Domain("the report is not a dead letter".into()));
                }
                tx.remove(
                    Keyspace::Outbox,
                    &outbox::dead_key(&rep.mro_id, rep.released_at_ms, &rid),
                )?;
                tx.put(
                    Keyspace::Outbox,
                    &outbox::queue_key(&rep.mro_id, rep.released_at_ms, &rid),
                    &rid,
                )?;
                rep.delivery = Delivery::Pending;
                tx.put(Keyspace::Reports, rid.as_bytes(), &rep)?;
                tx.audit(
                    AuditEntry::new(now, who.clone(), "dead_letter_retried", rid.as_str())
                        .before("dead_letter")
                        .after("pending"),
                )?;
                Ok(rep.mro_id.clone())
            })
            .await;
        match r {
            Ok(mro) => {
                if let Some(w) = self.wake.get(&mro) {
                    w.notify_one();
                }
                Ok(())
            }
            Err(crate::store::CommitError::Aborted(e)) => Err(e),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Why a specimen's report cannot go to its MRO: the CCF's directory id is not in the
/// directory, or the CCF's MRO name is not that entry's name (a mistyped id).
pub fn destination_problem(
    rec: &SpecimenRecord,
    mros: &BTreeMap<String, Mro>,
) -> Option<ReleaseError> {
    let ccf = rec.accession.as_ref().map(|a| &a.ccf.mro);
    let mro_id = ccf.and_then(|m| m.id.clone()).unwrap_or_default();
    let Some(entry) = mros.get(&mro_id) else {
        return Some(ReleaseError::MroNotInDirectory(mro_id));
    };
    let ccf_name = ccf.map(|m| m.name.as_str()).unwrap_or_default();
    if !crate::domain::parties::mro_names_match(ccf_name, &entry.name) {
        return Some(ReleaseError::MroNameMismatch {
            ccf: ccf_name.chars().take(100).collect(),
            id: mro_id,
            directory: entry.name.clone(),
        });
    }
    None
}

/// A certified Copy 1 prepared before a release transaction: for the record as it was then.
#[derive(Debug, Clone)]
pub struct PreparedCopy {
    pub updated_at_ms: u64,
    pub copy: report::CcfCopy1,
}

/// The prepared certified Copy 1 a report needs, if its result is non-negative: refused when the
/// record changed since it was prepared (the copy would certify something else).
fn take_copy(
    copies: &BTreeMap<String, PreparedCopy>,
    id: &str,
    updated_at_ms: u64,
    built: &report::Report,
) -> Result<Option<report::CcfCopy1>, Abort<ReleaseError>> {
    if !crate::domain::copy1::required_for(&built.results) {
        return Ok(None);
    }
    match copies.get(id) {
        Some(p) if p.updated_at_ms == updated_at_ms => Ok(Some(p.copy.clone())),
        _ => Err(Abort::Domain(ReleaseError::Changed)),
    }
}

/// The audit note of a report's certified Copy 1: its hash, which the signature covers.
fn copy_note(built: &report::Report) -> String {
    built
        .ccf_copy1
        .as_ref()
        .map(|c| format!("; ccf_copy1 {} sha256 {}", c.media_type.key(), c.sha256))
        .unwrap_or_default()
}

fn copy_error(p: crate::custody::copy1::Copy1Problem) -> ReleaseError {
    use crate::custody::copy1::Copy1Problem as P;
    match p {
        P::Mismatch(why) => ReleaseError::Copy1Mismatch(why),
        P::Store(e) => ReleaseError::NotDurable(e),
        other => ReleaseError::Copy1Missing(other.to_string()),
    }
}

impl Releaser {
    /// Builds the report `release` would produce from the record as stored now and, for a
    /// non-negative result, its certified Copy 1. `None` when no copy is needed or the record is
    /// not releasable (the transaction then refuses it with the precise reason).
    fn prepare_copy(
        &self,
        id: &str,
        release: &report::Release,
    ) -> Result<Option<PreparedCopy>, ReleaseError> {
        let store = self.committer.store();
        let Ok(Some(mut rec)) = crate::custody::records::read_specimen(store, id) else {
            return Ok(None);
        };
        let as_prepared = rec.updated_at_ms;
        if rec.state != State::ReadyForReview
            || apply_general_request(
                &mut rec,
                &self.mros,
                &self.lifecycle.profiles,
                &self.lifecycle.default_profile,
            )
            .is_err()
        {
            return Ok(None);
        }
        let Ok(built) = report::build(&self.laboratory, &rec, release) else {
            return Ok(None);
        };
        let copy = crate::custody::copy1::certified_copy(
            store,
            &rec,
            &built,
            release.released_at_ms,
            self.lifecycle.utc_offset_minutes,
            self.copy1_source,
        )
        .map_err(copy_error)?;
        Ok(copy.map(|copy| PreparedCopy {
            updated_at_ms: as_prepared,
            copy,
        }))
    }
}

/// Applies the MRO's general written request for quantitative values (40.97(e)), on file in the
/// MRO directory, to a specimen about to be reported: recorded on the record
/// (`quantitation_request`) and the verdict re-evaluated, so the values the request covers are
/// in the report. Before release only; nothing changes when a request is already on file or the
/// MRO has none. `Ok(true)` when it applied.
pub fn apply_general_request(
    rec: &mut SpecimenRecord,
    mros: &BTreeMap<String, Mro>,
    profiles: &crate::domain::rules::ProfileSet,
    default_profile: &str,
) -> Result<bool, String> {
    if rec.release.is_some() || rec.mro_requested_quantitation {
        return Ok(false);
    }
    let document = rec
        .accession
        .as_ref()
        .and_then(|a| a.ccf.mro.id.as_deref())
        .and_then(|id| mros.get(id))
        .and_then(|m| m.quantitation_request.clone());
    let Some(document) = document else {
        return Ok(false);
    };
    rec.mro_requested_quantitation = true;
    rec.quantitation_request = Some(format!("general: {document}"));
    rec.reevaluate(profiles, default_profile)
        .map_err(|e| e.to_string())?;
    Ok(true)
}

/// What a certifying scientist sees for one specimen in the queue.
pub fn review_item(
    rec: &SpecimenRecord,
    profiles: &crate::domain::rules::ProfileSet,
    default_profile: &str,
    lab: &Laboratory,
    mros: &BTreeMap<String, Mro>,
    copy1_source: crate::domain::copy1::Copy1Source,
) -> serde_json::Value {
    // What the report will carry: the MRO's general request for quantitation applies at release.
    let mut shown = rec.clone();
    let _ = apply_general_request(&mut shown, mros, profiles, default_profile);
    let rec = &shown;
    let profile_name = rec.profile_name().map(str::to_string);
    let profile = profile_name.as_deref().and_then(|n| profiles.get(n));
    let input = rec.engine_input_for(profile);
    let mut analytes = Vec::new();
    if let Some(p) = profile {
        for c in &p.classes {
            let screen = input.initial.get(&c.key);
            for a in &c.analytes {
                analytes.push(serde_json::json!({
                    "class": c.key,
                    "initial": screen.map(|v| v.to_string()),
                    "initial_cutoff": c.initial_cutoff.to_string(),
                    "analyte": a.key,
                    "confirmation": input.confirmation.get(&a.key).map(|v| v.to_string()),
                    "confirmation_cutoff": a.confirmation_cutoff.to_string(),
                }));
            }
        }
    }
    let mro_id = rec
        .accession
        .as_ref()
        .and_then(|a| a.ccf.mro.id.clone())
        .unwrap_or_default();
    let hold_reason = rec
        .held_because(profile)
        .or_else(|| destination_problem(rec, mros).map(|e| e.to_string()))
        .or_else(|| {
            crate::custody::copy1::review_problem(rec, copy1_source)
                .map(|p| format!("the certified Copy 1 cannot be made: {p}"))
        });
    let history = rec.analysis(profile);
    let draft = report::build(
        lab,
        rec,
        &report::Release {
            report_id: "DRAFT".into(),
            released_at_ms: rec.updated_at_ms,
            certifying_scientist: "(not yet released)".into(),
            replaces: None,
        },
    )
    .ok()
    .and_then(|r| serde_json::to_value(&r).ok());
    serde_json::json!({
        "specimen_id": rec.specimen_id,
        "profile": profile_name,
        "edition": rec.edition,
        "state": rec.state.key(),
        "verdict": rec.evaluation.as_ref().map(|e| &e.verdict),
        "analytes": analytes,
        "validity": input.validity,
        "accession_findings": rec.accession.as_ref().map(|a| &a.findings),
        "corrections": rec.corrections,
        "ccf_image": rec.ccf_image,
        "certified_copy1": rec.certified_copy1,
        "quantitation_request": rec.quantitation_request,
        "results": history.views,
        "result_conflicts": history.conflicts,
        "retests_open": rec.open_retests(),
        "mro_id": mro_id,
        "held_because": hold_reason,
        "draft_report": draft,
        "waiting_since_ms": rec.updated_at_ms,
    })
}
