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
//! from the laboratory's default rule profile (Copy 1 does not name one).

use crate::rules::{ProfileSet, Validity};
use crate::specimen::SpecimenRecord;
use crate::split::{self, Copy1, LimitsOfDetection, Manifest, Received, SplitEvaluation};
use crate::store::{self, Abort, AuditEntry, CommitError, GroupCommitter, Keyspace, Tx, state_key};
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

/// A received Bottle B as recorded with its specimen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intake {
    pub copy1: Copy1,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
    pub received: Received,
    pub received_at_ms: u64,
    pub recorded_by: String,
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
    let profile = lab
        .profiles
        .get(&lab.default_profile)
        .ok_or_else(|| format!("rule profile `{}` is not loaded", lab.default_profile))?;
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

/// Records a received Bottle B (once per specimen ID) with its audit entry.
pub async fn receive(
    committer: &GroupCommitter,
    lab: &Arc<SplitLab>,
    body: IntakeBody,
    recorded_by: &str,
    now_ms: u64,
) -> Result<serde_json::Value, IntakeError> {
    check(lab, &body).map_err(IntakeError::Refused)?;
    let who = format!("user:{recorded_by}");
    let recorded_by = recorded_by.to_string();
    let r = committer
        .submit(
            move |tx: &mut Tx<'_>| -> Result<serde_json::Value, Abort<IntakeError>> {
                let id = body.copy1.specimen_id.clone();
                let existing: Option<SpecimenRecord> =
                    tx.get(Keyspace::Specimens, id.as_bytes())?;
                let refuse = |m: String| Abort::Domain(IntakeError::Refused(m));
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
                    None => {
                        let r = SpecimenRecord::new(&id, now_ms);
                        tx.put(Keyspace::ByState, &state_key(r.state.key(), &id)?, &())?;
                        r
                    }
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
                });
                rec.updated_at_ms = now_ms;
                tx.put(Keyspace::Specimens, id.as_bytes(), &rec)?;
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
    let profile = lab
        .profiles
        .get(&lab.default_profile)
        .ok_or_else(|| format!("rule profile `{}` is not loaded", lab.default_profile))?;
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
        SplitEvaluation::Complete(r) => match r.overall() {
            split::Reconfirmation::Reconfirmed => ("Reconfirmed".to_string(), None),
            split::Reconfirmation::FailedToReconfirm { reason } => {
                ("Failed to Reconfirm".to_string(), Some(reason.statement()))
            }
        },
    };
    Ok(Some(serde_json::json!({
        "specimen_id": rec.specimen_id,
        "mro": intake.copy1.mro,
        "received": intake.received,
        "received_at_ms": intake.received_at_ms,
        "result": result,
        "reason": reason,
        "evaluation": e,
    })))
}
