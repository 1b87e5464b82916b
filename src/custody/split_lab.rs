//! custodian as the second laboratory (40.177–40.183): the intake of a received Bottle B and
//! its reconfirmation.
//!
//! An operator posts the Copy 1 data that came with the bottle (the `copy1` of the first
//! laboratory's forwarding package, [`split::ForwardingPackage`]; the whole package JSON may be
//! posted as is) and how the bottle arrived. [`receive`] records it on the specimen record of
//! that specimen ID, in one transaction with its audit entry. Here the bottle is the specimen
//! tested, so its results arrive over the normal MLLP path as Bottle A of that specimen ID.
//! [`view`] reads them and gives [`split::reconfirm`]'s outcome: "Reconfirmed" or "Failed to
//! Reconfirm" with one reason of 40.183(b), or what is still missing (including the validity
//! tests of 40.177(c) when drugs failed to reconfirm).
//!
//! The record of a received split has no accession (it is not this laboratory's primary
//! specimen: no CCF, no donor): it stays in the `awaiting_accession` state and is never
//! released through the review queue; the outcome is read with [`view`]. Criteria are read
//! from the edition of Copy 1's collection date, chosen once at intake (DOT urine; Copy 1 names
//! no profile).
//!
//! A complete outcome is released by a certifying scientist with [`release`] (40.183(c),
//! 40.185): a signed split-result report ([`SplitResultReport`], no donor identity) stored and
//! queued to the MRO named in Copy 1, in one transaction with the audit entry; the sender
//! delivers it like any report.

use crate::custody::outbox::{self, StoredReport};
use crate::custody::records::{Indexed, put_specimen};
use crate::custody::release::Releaser;
pub use crate::domain::lifecycle::{Intake, SplitRelease};
use crate::domain::report::{LabParty, NamedParty};
use crate::domain::rules::{Profile, ProfileSet, Validity};
use crate::domain::specimen::SpecimenRecord;
use crate::domain::split::{
    self, Copy1, LimitsOfDetection, Manifest, Received, SplitEvaluation, SplitReport,
    SplitValidity, Tested,
};
use crate::store::{self, Abort, AuditEntry, CommitError, GroupCommitter, Keyspace, Tx};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What the split laboratory needs.
#[derive(Debug, Clone)]
pub struct SplitLab {
    /// The method's limit of detection per analyte (ng/mL).
    pub lods: LimitsOfDetection,
    pub profiles: Arc<ProfileSet>,
    pub default_profile: String,
}

/// What the operator posts: the Copy 1 data, optionally the manifest, and the bottle's
/// condition on receipt (default intact). Other fields of a forwarding package are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeBody {
    pub copy1: Copy1,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
    #[serde(default = "intact")]
    pub received: Received,
}

fn intact() -> Received {
    Received::Intact
}

/// Why an intake was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    #[error("{0}")]
    Refused(String),
    #[error("not stored durably: {0}")]
    NotDurable(String),
}

impl IntakeError {
    pub fn status(&self) -> u16 {
        match self {
            IntakeError::Refused(_) => 409,
            IntakeError::NotDurable(_) => 503,
        }
    }
}

/// Checks the posted data before anything is stored.
pub fn check(lab: &SplitLab, body: &IntakeBody) -> Result<(), String> {
    let id = body.copy1.specimen_id.trim();
    if id.is_empty() || id.len() > 64 || id.chars().any(char::is_control) {
        return Err("copy1.specimen_id must be 1-64 printable characters".into());
    }
    if let Some(m) = &body.manifest {
        if m.specimen_id != body.copy1.specimen_id {
            return Err(format!(
                "the manifest names specimen `{}`, Copy 1 names `{}`",
                m.specimen_id, body.copy1.specimen_id
            ));
        }
        if m.bottle != "B" {
            return Err(format!(
                "the manifest names bottle `{}`: a split laboratory receives Bottle B",
                m.bottle
            ));
        }
    }
    let c = &body.copy1;
    if c.drugs.is_empty() && c.adulteration.is_empty() && c.substitution.is_none() {
        return Err("Copy 1 names no drug and no validity criterion to reconfirm".into());
    }
    let profile = edition_for(lab, c)?;
    // Every drug needs a configured LOD and every criterion must be the profile's: the same
    // checks `reconfirm` makes, run now on an empty set of tests.
    split::reconfirm(
        profile,
        &lab.lods,
        c,
        &Received::Intact,
        &split::SplitTests::default(),
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// The edition a received split is judged by: the DOT urine edition whose period covers Copy 1's
/// collection date, chosen once at intake like a primary's (a DOT split is the same specimen, so
/// the same edition as at the first laboratory). A date no shipped edition covers is refused,
/// never judged by a neighbouring edition.
fn edition_for<'l>(lab: &'l SplitLab, c: &split::Copy1) -> Result<&'l Profile, String> {
    let date: crate::domain::calendar::Date = c
        .collected_on
        .parse()
        .map_err(|_| "Copy 1's collected_on is not a YYYY-MM-DD date".to_string())?;
    crate::domain::rules::edition::select(
        &lab.profiles,
        crate::domain::rules::Program::Dot,
        crate::domain::rules::SpecimenType::Urine,
        Some(date),
        None,
    )
    .map_err(|e| format!("the split cannot be judged: {e}"))
}

/// The edition a recorded intake was judged by (its own, or the default profile for intakes
/// recorded before editions were chosen).
fn intake_profile<'l>(
    lab: &'l SplitLab,
    intake: &crate::domain::lifecycle::Intake,
) -> Result<&'l Profile, String> {
    let name = intake.profile.as_deref().unwrap_or(&lab.default_profile);
    lab.profiles
        .get(name)
        .ok_or_else(|| format!("rule profile `{name}` is not loaded"))
}

/// Records a received Bottle B (once per specimen ID) with its audit entry.
pub async fn receive(
    committer: &GroupCommitter,
    lab: &Arc<SplitLab>,
    body: IntakeBody,
    recorded_by: &str,
    now_ms: u64,
) -> Result<serde_json::Value, IntakeError> {
    check(lab, &body).map_err(IntakeError::Refused)?;
    let profile = edition_for(lab, &body.copy1)
        .map_err(IntakeError::Refused)?
        .name
        .clone();
    let who = format!("user:{recorded_by}");
    let recorded_by = recorded_by.to_string();
    let r = committer
        .submit(
            move |tx: &mut Tx<'_>| -> Result<serde_json::Value, Abort<IntakeError>> {
                let id = body.copy1.specimen_id.clone();
                let existing: Option<SpecimenRecord> =
                    crate::custody::records::get_specimen(tx, &id)?;
                let refuse = |m: String| Abort::Domain(IntakeError::Refused(m));
                let before = existing.as_ref().map(Indexed::of);
                let mut rec = match existing {
                    Some(r) if r.accession.is_some() => {
                        return Err(refuse(format!(
                            "specimen `{id}` is accessioned here as a primary specimen; a split received for testing must not share its ID"
                        )));
                    }
                    Some(r) if r.lifecycle.split_lab.is_some() => {
                        return Err(refuse(format!(
                            "a split specimen `{id}` was already received"
                        )));
                    }
                    Some(r) => r,
                    None => SpecimenRecord::new(&id, now_ms),
                };
                let condition = match &body.received {
                    Received::Intact => "intact".to_string(),
                    Received::NotAvailable(why) => format!("not available: {why}"),
                };
                rec.lifecycle.split_lab = Some(Intake {
                    copy1: body.copy1.clone(),
                    manifest: body.manifest.clone(),
                    received: body.received.clone(),
                    received_at_ms: now_ms,
                    recorded_by: recorded_by.clone(),
                    profile: Some(profile.clone()),
                    released: None,
                });
                rec.updated_at_ms = now_ms;
                put_specimen(tx, before, &rec)?;
                let what = format!("bottle B received for reconfirmation; {condition}");
                tx.audit(
                    AuditEntry::new(now_ms, who.clone(), "split_received", id.as_str())
                        .after(truncate(&what, store::MAX_SUMMARY_LEN)),
                )?;
                Ok(serde_json::json!({
                    "specimen_id": id,
                    "received_at_ms": now_ms,
                    "condition": condition,
                }))
            },
        )
        .await;
    r.map_err(|e| match e {
        CommitError::Aborted(e) => e,
        other => IntakeError::NotDurable(other.to_string()),
    })
}

fn truncate(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).collect();
    if out.len() > max {
        let mut cut = max;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// The tests done on the received bottle: this laboratory's results for the specimen ID (Bottle
/// A here: the bottle tested). Validity is `None` until any validity result arrived.
pub fn tests_of(rec: &SpecimenRecord) -> split::SplitTests {
    let input = rec.engine_input();
    split::SplitTests {
        confirmation: input.confirmation,
        validity: (input.validity != Validity::default()).then_some(input.validity),
    }
}

/// Where the reconfirmation of a received split stands; `None` if no split was received
/// under this ID.
pub fn view(lab: &SplitLab, rec: &SpecimenRecord) -> Result<Option<serde_json::Value>, String> {
    let Some(intake) = &rec.lifecycle.split_lab else {
        return Ok(None);
    };
    let profile = intake_profile(lab, intake)?;
    let e = split::reconfirm(
        profile,
        &lab.lods,
        &intake.copy1,
        &intake.received,
        &tests_of(rec),
    )
    .map_err(|e| e.to_string())?;
    let (result, reason) = match &e {
        SplitEvaluation::Pending { .. } => ("Pending".to_string(), None),
        SplitEvaluation::Complete(r) => outcome_text(&r.overall()),
    };
    Ok(Some(serde_json::json!({
        "specimen_id": rec.specimen_id,
        "mro": intake.copy1.mro,
        "received": intake.received,
        "received_at_ms": intake.received_at_ms,
        "result": result,
        "reason": reason,
        "evaluation": e,
        "released": intake.released,
    })))
}

/// What the release of a split result means, as recorded with the signature.
pub const MEANING: &str = "split result reviewed and released";

/// The `kind` of a split-result report.
pub const KIND: &str = "split_specimen_result";

/// One requested item and its outcome, as the split-result report states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemLine {
    pub tested: Tested,
    /// "Reconfirmed" or "Failed to Reconfirm".
    pub result: String,
    /// The 40.183(b) statement when the item failed to reconfirm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The payload of the signed split-result report sent to the MRO (40.183(c), 40.185). It has
/// no donor identity: the second laboratory never had one. Field order is the signed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitResultReport {
    pub report_id: String,
    /// Always [`KIND`].
    pub kind: String,
    /// This (the second) laboratory.
    pub laboratory: LabParty,
    /// The MRO named in Copy 1: the only recipient (40.185(a)).
    pub mro: NamedParty,
    pub specimen_id: String,
    /// The laboratory that tested the primary, as named in Copy 1.
    pub first_laboratory: String,
    /// The one box of Step 5(b): "Reconfirmed" or "Failed to Reconfirm".
    pub result: String,
    /// The 40.183(b) statement when the split failed to reconfirm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Each requested item with its outcome.
    pub results: Vec<ItemLine>,
    /// The validity tests of 40.177(c), when drugs failed to reconfirm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity: Option<SplitValidity>,
    /// RFC 3339, UTC.
    pub released_at: String,
    pub certifying_scientist: String,
    /// The rule profile whose criteria were applied.
    pub profile: String,
}

fn outcome_text(r: &split::Reconfirmation) -> (String, Option<String>) {
    match r {
        split::Reconfirmation::Reconfirmed => ("Reconfirmed".to_string(), None),
        split::Reconfirmation::FailedToReconfirm { reason } => {
            ("Failed to Reconfirm".to_string(), Some(reason.statement()))
        }
    }
}

pub use crate::custody::notices::assert_no_donor_identity;

impl SplitResultReport {
    /// Builds the payload from the intake and the complete outcome; refuses a Copy 1 without
    /// the MRO's directory id, and any payload that would carry donor identity.
    pub fn build(
        laboratory: &crate::domain::parties::Laboratory,
        copy1: &Copy1,
        outcome: &SplitReport,
        profile: &str,
        release: &SplitRelease,
    ) -> Result<Self, String> {
        let mro_id = copy1
            .mro
            .id
            .clone()
            .filter(|i| !i.trim().is_empty())
            .ok_or("Copy 1 names no MRO directory id")?;
        let (result, reason) = outcome_text(&outcome.overall());
        let r = SplitResultReport {
            report_id: release.report_id.clone(),
            kind: KIND.into(),
            laboratory: LabParty {
                name: laboratory.name.clone(),
                address: laboratory.address.clone(),
            },
            mro: NamedParty {
                name: copy1.mro.name.clone(),
                id: mro_id,
            },
            specimen_id: copy1.specimen_id.clone(),
            first_laboratory: copy1.first_laboratory.clone(),
            result,
            reason,
            results: outcome
                .items
                .iter()
                .map(|i| {
                    let (result, reason) = outcome_text(&i.result);
                    ItemLine {
                        tested: i.tested.clone(),
                        result,
                        reason,
                    }
                })
                .collect(),
            validity: outcome.validity.clone(),
            released_at: crate::core::clock::rfc3339(release.released_at_ms),
            certifying_scientist: release.scientist.clone(),
            profile: profile.to_string(),
        };
        let v = serde_json::to_value(&r).map_err(|e| e.to_string())?;
        assert_no_donor_identity(&v)?;
        Ok(r)
    }

    /// The exact bytes that are signed (compact JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a split-result report always serializes")
    }

    /// Hex SHA-256 of [`SplitResultReport::to_bytes`].
    pub fn content_sha256(&self) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(self.to_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Why a split result was not released.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("no split specimen was received under this ID")]
    Unknown,
    #[error("the split result is pending, not releasable: still missing {0}")]
    Pending(String),
    #[error("the split result was already released as report {0}")]
    AlreadyReleased(String),
    #[error(
        "the MRO named in Copy 1 (directory id `{0}`) is not in the MRO directory: the split result is held until the directory lists it"
    )]
    MroNotInDirectory(String),
    #[error("the split result cannot be built: {0}")]
    Report(String),
    #[error("the split result cannot be signed: {0}")]
    Signing(String),
    #[error(
        "Copy 1 names MRO {ccf} but directory id {id} is {directory}: the split result is held until Copy 1 is corrected"
    )]
    MroNameMismatch {
        ccf: String,
        id: String,
        directory: String,
    },
    #[error("not stored durably: {0}")]
    NotDurable(String),
    /// The new report's id is already taken (two releases in the same millisecond): nothing
    /// was stored; the release may be tried again. Not a storage failure.
    #[error("report id {0} is already in use; nothing was stored; try the release again")]
    ReportIdInUse(String),
}

impl ReleaseError {
    pub fn status(&self) -> u16 {
        match self {
            ReleaseError::Unknown => 404,
            ReleaseError::Pending(_)
            | ReleaseError::AlreadyReleased(_)
            | ReleaseError::MroNotInDirectory(_)
            | ReleaseError::MroNameMismatch { .. }
            | ReleaseError::ReportIdInUse(_) => 409,
            ReleaseError::Report(_) => 422,
            ReleaseError::Signing(_) | ReleaseError::NotDurable(_) => 503,
        }
    }
}

fn describe_missing(m: &[split::Missing]) -> String {
    m.iter()
        .map(|x| match x {
            split::Missing::Drug(k) => format!("drug {k}"),
            split::Missing::Measure(k) => format!("measure {k}"),
            split::Missing::ValidityTest(k) => format!("validity test {k} (40.177(c))"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Releases a complete split result to the MRO named in Copy 1: builds the payload, signs it
/// with the report signer, stores it as a report, queues it to that MRO (which must be in the
/// directory) and records the release and its audit entry, all in one transaction.
pub async fn release(
    releaser: &Releaser,
    lab: &Arc<SplitLab>,
    specimen_id: &str,
    scientist: &str,
) -> Result<serde_json::Value, ReleaseError> {
    let signer = releaser.signer.clone().ok_or_else(|| {
        ReleaseError::Signing("no signing key: run `custodian keys generate`".into())
    })?;
    let now = releaser.clock.now_ms();
    let laboratory = releaser.laboratory.clone();
    let mros = releaser.mros.clone();
    let releaser_lifecycle = releaser.lifecycle.clone();
    let lab = lab.clone();
    let id = specimen_id.to_string();
    let scientist = scientist.to_string();
    let r = releaser
        .committer
        .submit(
            move |tx: &mut Tx<'_>| -> Result<serde_json::Value, Abort<ReleaseError>> {
                let refuse = |e: ReleaseError| Abort::Domain(e);
                let Some(mut rec) = crate::custody::records::get_specimen(tx, &id)? else {
                    return Err(refuse(ReleaseError::Unknown));
                };
                let before = Indexed::of(&rec);
                let Some(mut intake) = rec.lifecycle.split_lab.clone() else {
                    return Err(refuse(ReleaseError::Unknown));
                };
                if let Some(done) = &intake.released {
                    return Err(refuse(ReleaseError::AlreadyReleased(
                        done.report_id.clone(),
                    )));
                }
                let profile =
                    intake_profile(&lab, &intake).map_err(|e| refuse(ReleaseError::Report(e)))?;
                let outcome = match split::reconfirm(
                    profile,
                    &lab.lods,
                    &intake.copy1,
                    &intake.received,
                    &tests_of(&rec),
                )
                .map_err(|e| refuse(ReleaseError::Report(e.to_string())))?
                {
                    SplitEvaluation::Pending { missing } => {
                        return Err(refuse(ReleaseError::Pending(describe_missing(&missing))));
                    }
                    SplitEvaluation::Complete(r) => r,
                };
                let mro_id = intake.copy1.mro.id.clone().unwrap_or_default();
                let Some(entry) = mros.get(&mro_id) else {
                    return Err(refuse(ReleaseError::MroNotInDirectory(mro_id)));
                };
                // Copy 1's MRO name must be the directory entry's: a mistyped id never sends
                // the split result to another real MRO.
                if !crate::domain::parties::mro_names_match(&intake.copy1.mro.name, &entry.name) {
                    return Err(refuse(ReleaseError::MroNameMismatch {
                        ccf: intake.copy1.mro.name.chars().take(100).collect(),
                        id: mro_id,
                        directory: entry.name.clone(),
                    }));
                }
                let report_id = format!("S-{id}-{now}");
                if tx
                    .get::<StoredReport>(Keyspace::Reports, report_id.as_bytes())?
                    .is_some()
                {
                    return Err(refuse(ReleaseError::ReportIdInUse(report_id)));
                }
                let mut rel = SplitRelease {
                    report_id: report_id.clone(),
                    released_at_ms: now,
                    scientist: scientist.clone(),
                    meaning: MEANING.into(),
                    content_sha256: String::new(),
                };
                let built = SplitResultReport::build(
                    &laboratory,
                    &intake.copy1,
                    &outcome,
                    &lab.default_profile,
                    &rel,
                )
                .map_err(|e| refuse(ReleaseError::Report(e)))?;
                let sha = built.content_sha256();
                let (jws, kid) = signer
                    .sign(&built.to_bytes())
                    .map_err(|e| refuse(ReleaseError::Signing(e)))?;
                rel.content_sha256 = sha.clone();
                intake.released = Some(rel);
                rec.lifecycle.split_lab = Some(intake);
                rec.updated_at_ms = now;
                // The bottle this laboratory reconfirmed is kept a year (40.99(a)) and the
                // records two (40.109(a)), from the release of the split result.
                if rec.lifecycle.retention.is_none() {
                    crate::custody::lifecycle::start_retention(
                        &mut rec,
                        &releaser_lifecycle,
                        crate::domain::retention::Basis::OneYear,
                        crate::domain::retention::SplitBottle::Absent,
                        now,
                    );
                }
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
                let what = format!(
                    "{MEANING}; {}; report {report_id}; sha256 {sha}",
                    built.result
                );
                tx.audit(
                    AuditEntry::new(now, who, "split_released", id.as_str())
                        .after(truncate(&what, store::MAX_SUMMARY_LEN)),
                )?;
                Ok(serde_json::json!({
                    "specimen_id": id,
                    "report_id": report_id,
                    "mro_id": mro_id,
                    "result": built.result,
                    "reason": built.reason,
                    "content_sha256": sha,
                }))
            },
        )
        .await;
    let v = r.map_err(|e| match e {
        CommitError::Aborted(e) => e,
        other => ReleaseError::NotDurable(other.to_string()),
    })?;
    let mro = v["mro_id"].as_str().unwrap_or("");
    if let Some(w) = releaser.wake.get(mro) {
        w.notify_one();
    }
    crate::core::telemetry::emit(crate::custody::events::ReportReleased {
        report_id: v["report_id"].as_str().unwrap_or(""),
        mro,
    });
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::specimen::Party;
    use crate::domain::split::{FailureReason, ItemResult, Reconfirmation};

    fn copy1() -> Copy1 {
        Copy1 {
            specimen_id: "SB-1".into(),
            collected_on: "2026-03-08".into(),
            first_laboratory: "First Example Laboratory".into(),
            received_at_first_laboratory: "2026-03-09".into(),
            mro: Party {
                name: "Dr. Pat Example, MD".into(),
                id: Some("MRO-0042".into()),
                address: None,
                phone: None,
            },
            results: vec![crate::domain::rules::ResultCategory::Positive],
            drugs: vec![],
            adulteration: vec![],
            substitution: None,
        }
    }

    fn release() -> SplitRelease {
        SplitRelease {
            report_id: "S-SB-1-1".into(),
            released_at_ms: 0,
            scientist: "Dr. Test Scientist".into(),
            meaning: MEANING.into(),
            content_sha256: String::new(),
        }
    }

    fn lab() -> crate::domain::parties::Laboratory {
        crate::domain::parties::Laboratory {
            name: "Second Laboratory".into(),
            address: "2 Lab Road".into(),
        }
    }

    #[test]
    fn the_split_is_judged_by_the_edition_of_its_collection_date_chosen_once() {
        let mut set = ProfileSet::new();
        for (n, t) in [
            (
                "part40-2001",
                include_str!("../../config/profiles/part40-2001.toml"),
            ),
            (
                "part40-2023",
                include_str!("../../config/profiles/part40-2023.toml"),
            ),
        ] {
            set.insert(crate::domain::rules::Profile::parse(t, Some(n)).unwrap());
        }
        let lab = SplitLab {
            lods: Default::default(),
            profiles: Arc::new(set),
            default_profile: "part40-2001".into(),
        };
        let mut c = copy1();
        assert_eq!(edition_for(&lab, &c).unwrap().name, "part40-2023");
        c.collected_on = "2005-06-01".into();
        assert_eq!(edition_for(&lab, &c).unwrap().name, "part40-2001");
        c.collected_on = "2014-05-05".into();
        let e = edition_for(&lab, &c).unwrap_err();
        assert!(e.contains("cannot be judged"), "{e}");
        c.collected_on = "05/05/2014".into();
        assert!(edition_for(&lab, &c).unwrap_err().contains("collected_on"));
        // A recorded intake keeps its edition; one recorded before editions keeps the default.
        let mut intake = crate::domain::lifecycle::Intake {
            copy1: copy1(),
            manifest: None,
            received: Received::Intact,
            received_at_ms: 0,
            recorded_by: "Operator".into(),
            profile: Some("part40-2023".into()),
            released: None,
        };
        assert_eq!(intake_profile(&lab, &intake).unwrap().name, "part40-2023");
        intake.profile = None;
        assert_eq!(intake_profile(&lab, &intake).unwrap().name, "part40-2001");
    }

    #[test]
    fn payload_states_each_item_and_carries_no_donor_identity() {
        let outcome = SplitReport {
            specimen_id: "SB-1".into(),
            items: vec![
                ItemResult {
                    tested: Tested::Drug("benzoylecgonine".into()),
                    result: Reconfirmation::Reconfirmed,
                },
                ItemResult {
                    tested: Tested::Drug("thca".into()),
                    result: Reconfirmation::FailedToReconfirm {
                        reason: FailureReason::DrugsNotDetected,
                    },
                },
            ],
            validity: Some(SplitValidity::ConsistentWithHumanUrine),
        };
        let r =
            SplitResultReport::build(&lab(), &copy1(), &outcome, "hhs-2017", &release()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.to_bytes()).unwrap();
        assert_eq!(v["kind"], KIND);
        assert_eq!(
            v["mro"],
            serde_json::json!({"name": "Dr. Pat Example, MD", "id": "MRO-0042"})
        );
        assert_eq!(v["laboratory"]["name"], "Second Laboratory");
        assert_eq!(v["first_laboratory"], "First Example Laboratory");
        assert_eq!(v["result"], "Failed to Reconfirm");
        assert_eq!(v["reason"], "Drug(s)/Drug Metabolite(s) Not Detected.");
        assert_eq!(v["results"][0]["result"], "Reconfirmed");
        assert!(v["results"][0].get("reason").is_none());
        assert_eq!(
            v["results"][1]["reason"],
            "Drug(s)/Drug Metabolite(s) Not Detected."
        );
        assert_eq!(v["released_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["certifying_scientist"], "Dr. Test Scientist");
        assert_eq!(v["profile"], "hhs-2017");
        assert!(assert_no_donor_identity(&v).is_ok());
        assert_eq!(r.content_sha256().len(), 64);
        // Round trip: the signed bytes are the struct.
        let back: SplitResultReport = serde_json::from_slice(&r.to_bytes()).unwrap();
        assert_eq!(back, r);
        // And it is what schemas/split-result.schema.json describes.
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../schemas/split-result.schema.json")).unwrap();
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&v)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        let mut bad = v.clone();
        bad["donor_id"] = serde_json::json!("123-45-6789");
        assert!(
            !validator.is_valid(&bad),
            "no field outside the schema, donor data least of all"
        );
        let mut bad = v.clone();
        bad.as_object_mut().unwrap().remove("reason");
        assert!(
            !validator.is_valid(&bad),
            "a failure names its 40.183(b) reason"
        );
    }

    #[test]
    fn donor_identity_anywhere_is_refused() {
        for bad in [
            serde_json::json!({"donor_id": "123-45-6789"}),
            serde_json::json!({"a": [{"b": {"SSN": "x"}}]}),
            serde_json::json!({"employee_id": "E1"}),
        ] {
            assert!(assert_no_donor_identity(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_copy1_without_the_mro_directory_id_cannot_be_released() {
        let mut c = copy1();
        c.mro.id = None;
        let outcome = SplitReport {
            specimen_id: "SB-1".into(),
            items: vec![],
            validity: None,
        };
        let e = SplitResultReport::build(&lab(), &c, &outcome, "p", &release()).unwrap_err();
        assert!(e.contains("MRO directory id"), "{e}");
    }
}
