//! The specimen lifecycle wired to the store: the clocks of Part 40 kept as data, the written
//! requests that change them, and the discard confirmations.
//!
//! # Clocks
//! A clock is an entry of the store's `due` index, keyed by its due time
//! ([`due_entry_key`]: big-endian millis, the kind, NUL, the specimen ID) with a [`DueItem`] as
//! value; the specimen record remembers the due time it scheduled (in its
//! [`LifecycleRecord`]), so a reschedule removes the old entry in the same transaction that
//! writes the new one. [`sweep`] reads only what is due ([`Store::due_until`]) and fires each
//! entry in its own transaction that also removes the entry: a crash before the commit leaves
//! the entry (it fires after the restart), a crash after it leaves nothing to fire again. A sweep
//! therefore costs in proportion to what is due, never to what is stored. Time comes in as
//! `now_ms` (the daemon passes its [`crate::core::clock::Clock`]; tests pass whatever they like).
//!
//! Kinds:
//! - [`ClockKind::Correction`] (40.83(e)–(g)): when a specimen becomes `held`, its window ends at
//!   the close of the Nth business day (the profile's `correctable.business_days`, 5) after the
//!   day the laboratory initiated action to correct the flaw (the accession's
//!   `correction-initiated-on`, else the day custody stored the accession, laboratory time).
//!   On expiry the specimen is marked `correction_expired` and re-evaluated: each flaw not
//!   corrected by then is expired, and rejects for (e) and (g) or is reported for (f); a flaw
//!   corrected in time never rejects. A correction in time of the last open flaw releases the
//!   hold and removes the entry; a firing that finds the specimen no longer held changes
//!   nothing.
//! - [`ClockKind::Retention`] (40.99, 40.109): when a result is released the [`Retention`] of
//!   the specimen is created and the clock set to the next instant an item becomes
//!   discardable. On expiry the specimen joins the discardable index ([`discardable`]) and the
//!   clock moves to the next such instant (the records' two years, an extension's end).
//!
//! # Written requests
//! [`apply_request`] records a written request (retention extension or release, the MRO's
//! request for quantitation of 40.97(e), the MRO's split-specimen request of 40.171(c), the
//! MRO's request of 40.187(f)(4) to test the primary for the split's adulterant) in one
//! transaction with its audit entry, whether it came as a LIMS `request` document (deduplicated
//! by the document's hash, kept verbatim) or through the admin API. [`confirm_discard`] records
//! the laboratory's confirmation that it discarded an item.

use crate::core::clock::rfc3339;
use crate::core::telemetry::emit;
use crate::custody::events::{ClockFired, ClocksWaiting};
use crate::custody::notices::{NoticeDesk, NoticeError};
pub use crate::custody::records::{DISCARDABLE_INDEX, DueItem, due_entry_key};
use crate::custody::records::{Indexed, put_specimen};
use crate::domain::calendar::{Calendar, CorrectionWindow, Date};
pub use crate::domain::lifecycle::{
    ClockKind, CorrectionClock, LifecycleRecord, RecordedRequest, SplitRecord, SplitRelease,
};
use crate::domain::retention::{
    Basis, Discardable, Item, ItemRetention, Requester, Retention, RetentionPolicy,
    RetentionRelease, RetentionRequest, SplitBottle, Subject, Until,
};
use crate::domain::rules::ProfileSet;
use crate::domain::specimen::{SpecimenRecord, State};
use crate::domain::split::{self, SplitDisposition, SplitRequest};
use crate::store::{
    self, Abort, AuditEntry, CommitError, GroupCommitter, Keyspace, Store, Tx, TxError,
    split_due_key, state_key,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most due entries one sweep fires; the rest wait for the next sweep.
pub const SWEEP_LIMIT: usize = 10_000;

/// What the lifecycle needs to know of the laboratory.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Business days: federal holidays and the laboratory's closures.
    pub calendar: Calendar,
    /// The laboratory's UTC offset (standard time), for dates.
    pub utc_offset_minutes: i32,
    pub retention: RetentionPolicy,
    /// The laboratory's name, as the first laboratory of a split package.
    pub laboratory: String,
    pub profiles: Arc<ProfileSet>,
    pub default_profile: String,
    /// Signs and queues the reports to the MRO that answer written requests (the
    /// split-unavailable report, the primary-retest result); `None` where nothing is sent
    /// (tests of the lifecycle alone).
    pub notices: Option<NoticeDesk>,
}

impl Settings {
    /// Federal holidays only, UTC, negatives discardable once reported.
    pub fn new(profiles: Arc<ProfileSet>, default_profile: &str) -> Settings {
        Settings {
            calendar: Calendar::federal(),
            utc_offset_minutes: 0,
            retention: RetentionPolicy {
                after_report_ms: 0,
                utc_offset_minutes: 0,
            },
            laboratory: String::new(),
            profiles,
            default_profile: default_profile.to_string(),
            notices: None,
        }
    }
}

/// The correction window of a held record: from "the date on which you initiated action to
/// correct the flaw" (40.83(e)(1), (g)(1)), which is the accession document's
/// `correction-initiated-on` when the LIMS gave it, else the day custody stored the accession
/// (the laboratory's first record of the flaw, laboratory time). Never the CCF's receipt date:
/// an accession stored days after receipt must not find its window already closed.
pub fn correction_window(rec: &SpecimenRecord, s: &Settings) -> Option<CorrectionWindow> {
    let acc = rec.accession.as_ref()?;
    let days = rec
        .evaluation
        .as_ref()
        .and_then(|e| e.verdict.hold.as_ref())
        .map(|h| h.business_days)?;
    let started = window_start(acc, s.utc_offset_minutes);
    s.calendar.correction_window(started, days)
}

/// The day the correction window of `acc` counts from (see [`correction_window`]).
fn window_start(acc: &crate::domain::specimen::Accession, utc_offset_minutes: i32) -> Date {
    acc.correction_initiated_on
        .unwrap_or_else(|| Date::at_instant(acc.received_at_ms, utc_offset_minutes))
}

/// Called in every custody transaction after a record changed: starts the correction clock
/// when the specimen is held and has none, stops it when the hold was released (the due index
/// follows when the record is written, `records::put_specimen`).
pub fn after_change(rec: &mut SpecimenRecord, s: &Settings) {
    let held = rec.state == State::Held;
    if held && rec.lifecycle.correction.is_none() {
        if let Some(window) = correction_window(rec, s) {
            let closes = window.closes_at_ms(s.utc_offset_minutes);
            rec.lifecycle.correction = Some(CorrectionClock {
                window,
                closes_at_ms: closes,
                due_at_ms: Some(closes),
                expired_at_ms: None,
            });
        }
    } else if !held && let Some(c) = rec.lifecycle.correction.as_mut() {
        c.due_at_ms = None;
    }
}

/// Whether a correction received at `received_at_ms` is too late for the record's window.
pub fn correction_too_late(rec: &SpecimenRecord, received_at_ms: u64) -> Option<String> {
    let c = rec.lifecycle.correction.as_ref()?;
    (received_at_ms >= c.closes_at_ms).then(|| rfc3339(c.closes_at_ms))
}

/// Where Bottle B is for retention, from the accession.
fn split_bottle(rec: &SpecimenRecord) -> SplitBottle {
    match &rec.accession {
        Some(a)
            if a.ccf.split_collected
                && a.findings.split_seal != crate::domain::rules::SplitSeal::Absent =>
        {
            SplitBottle::Held
        }
        _ => SplitBottle::Absent,
    }
}

/// Called in the release transaction: creates the specimen's retention and sets its clock to
/// the first instant (at or after the release) something becomes discardable.
pub fn on_release(rec: &mut SpecimenRecord, s: &Settings, released_at_ms: u64) {
    let Some(basis) = rec.evaluation.as_ref().and_then(|e| Basis::of(&e.verdict)) else {
        return;
    };
    if rec.lifecycle.retention.is_some() {
        return;
    }
    let split = split_bottle(rec);
    start_retention(rec, s, basis, split, released_at_ms);
}

/// Creates the record's retention from `reported_at_ms` and schedules its clock at the first
/// instant something becomes discardable (the due index follows when the record is written).
pub fn start_retention(
    rec: &mut SpecimenRecord,
    s: &Settings,
    basis: Basis,
    split: SplitBottle,
    reported_at_ms: u64,
) {
    let r = Retention::new(basis, reported_at_ms, split);
    let next = r.next_due_ms(&s.retention, reported_at_ms.saturating_sub(1));
    rec.lifecycle.retention = Some(r);
    rec.lifecycle.retention_due_ms = next;
}

/// After a request, release, shipment or discard changed the retention: reschedule the clock
/// (at or after `now`, so an item that became discardable right now fires through the sweep)
/// and drop the specimen from the discardable index when nothing may be discarded any more.
fn refresh_retention(
    tx: &mut Tx<'_>,
    rec: &mut SpecimenRecord,
    s: &Settings,
    now_ms: u64,
) -> Result<(), TxError> {
    let Some(r) = &rec.lifecycle.retention else {
        return Ok(());
    };
    let storage = storage_of(rec);
    let index = state_key(DISCARDABLE_INDEX, &rec.specimen_id)?;
    let listed = tx.contains_key(Keyspace::ByState, &index)?;
    let none_now = r.may_discard(&s.retention, now_ms, &storage).is_empty();
    // Something became discardable already (a release received earlier than now) and is not
    // listed: the clock fires at once, through the sweep like any other.
    let next = if !none_now && !listed {
        Some(now_ms)
    } else {
        r.next_due_ms(&s.retention, now_ms.saturating_sub(1))
    };
    rec.lifecycle.retention_due_ms = next;
    // Listed until the sweep lists it (a due clock) or nothing may be discarded any more.
    rec.lifecycle.discardable = listed && !none_now;
    Ok(())
}

fn storage_of(rec: &SpecimenRecord) -> BTreeMap<String, String> {
    rec.accession
        .as_ref()
        .map(|a| a.ccf.storage.clone())
        .unwrap_or_default()
}

fn short(s: &str, max: usize) -> String {
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

// ---- The sweep --------------------------------------------------------------------------------

/// One clock that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fired {
    pub kind: ClockKind,
    pub specimen_id: String,
    pub due_at_ms: u64,
    /// Whether it changed the specimen (false: the clock was no longer in force).
    pub applied: bool,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub fired: Vec<Fired>,
    /// Due entries that could not be applied (they stay and are tried again), by kind.
    pub failed: BTreeMap<ClockKind, usize>,
}

impl SweepReport {
    pub fn applied(&self, kind: ClockKind) -> Vec<&str> {
        self.fired
            .iter()
            .filter(|f| f.kind == kind && f.applied)
            .map(|f| f.specimen_id.as_str())
            .collect()
    }
}

/// Fires every clock due at or before `now_ms` (at most [`SWEEP_LIMIT`]), each in its own
/// transaction that also removes its due entry; the transactions share durable flushes. Sets
/// the gauge `custodian_clocks_due{kind}` to the due entries still waiting afterwards.
pub async fn sweep(
    committer: &GroupCommitter,
    s: &Arc<Settings>,
    now_ms: u64,
) -> Result<SweepReport, String> {
    // The due index is read on a blocking thread, not the runtime's: at a start it reads
    // segment indexes of the archive, and the runtime's threads answer `/readyz` and the
    // analyzers meanwhile.
    let store = committer.store().clone();
    let reader = store.clone();
    let due = tokio::task::spawn_blocking(move || {
        let mut due = Vec::new();
        for item in reader.due_until::<DueItem>(now_ms).take(SWEEP_LIMIT) {
            let (key, value) = item.map_err(|e| e.to_string())?;
            due.push((key, value));
        }
        Ok::<_, String>(due)
    })
    .await
    .map_err(|_| "the due clocks' read did not finish".to_string())??;
    let jobs = due.into_iter().map(|(key, item)| {
        let s = s.clone();
        let kind = item.kind;
        async move {
            let r = committer
                .submit(move |tx: &mut Tx<'_>| fire(tx, &s, &key, &item, now_ms))
                .await;
            (kind, r)
        }
    });
    let mut report = SweepReport::default();
    for (kind, r) in futures_util::future::join_all(jobs).await {
        match r {
            Ok(Some(f)) => {
                if f.applied {
                    emit(ClockFired { kind: kind.key() });
                }
                report.fired.push(f);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(component = "lifecycle", kind = kind.key(), error = %e, "a due clock could not be applied; it stays due");
                *report.failed.entry(kind).or_default() += 1;
            }
        }
    }
    let waiting = tokio::task::spawn_blocking(move || {
        let mut waiting: BTreeMap<ClockKind, usize> = BTreeMap::new();
        for (_, item) in store.due_until::<DueItem>(now_ms).flatten() {
            *waiting.entry(item.kind).or_default() += 1;
        }
        waiting
    })
    .await
    .map_err(|_| "the due clocks' count did not finish".to_string())?;
    for k in ClockKind::ALL {
        emit(ClocksWaiting {
            kind: k.key(),
            count: waiting.get(&k).copied().unwrap_or(0),
        });
    }
    Ok(report)
}

/// Fires one due entry (inside its transaction). `None` when the entry is already gone.
fn fire(
    tx: &mut Tx<'_>,
    s: &Settings,
    key: &[u8],
    item: &DueItem,
    now_ms: u64,
) -> Result<Option<Fired>, Abort<String>> {
    if !tx.contains_key(Keyspace::Due, key)? {
        return Ok(None);
    }
    tx.remove(Keyspace::Due, key)?;
    let due_at = split_due_key(key).map(|(t, _)| t).unwrap_or(0);
    let id = item.specimen_id.as_str();
    let mut fired = Fired {
        kind: item.kind,
        specimen_id: id.to_string(),
        due_at_ms: due_at,
        applied: false,
    };
    let Some(mut rec) = crate::custody::records::get_specimen(tx, id)? else {
        return Ok(Some(fired));
    };
    let before = Indexed::of(&rec);
    let (action, after) = match item.kind {
        ClockKind::Correction => {
            let Some(c) = rec.lifecycle.correction.as_mut() else {
                return Ok(Some(fired));
            };
            if c.due_at_ms != Some(due_at) {
                return Ok(Some(fired));
            }
            c.due_at_ms = None;
            if rec.state != State::Held {
                put_specimen(tx, Some(before), &rec)?;
                return Ok(Some(fired));
            }
            c.expired_at_ms = Some(now_ms);
            let closed = rfc3339(c.closes_at_ms);
            rec.correction_expired = true;
            rec.reevaluate(&s.profiles, &s.default_profile)
                .map_err(|e| Abort::Domain(e.to_string()))?;
            (
                "correction_window_expired",
                format!("{}; window closed {closed}", rec.state.key()),
            )
        }
        ClockKind::Retention => {
            if rec.lifecycle.retention_due_ms != Some(due_at) {
                return Ok(Some(fired));
            }
            let storage = storage_of(&rec);
            let Some(r) = &rec.lifecycle.retention else {
                return Ok(Some(fired));
            };
            let list = r.may_discard(&s.retention, now_ms, &storage);
            let next = r.next_due_ms(&s.retention, now_ms);
            rec.lifecycle.retention_due_ms = next;
            rec.lifecycle.discardable = !list.is_empty();
            let items: Vec<&str> = list.iter().map(|d| item_key(d.item)).collect();
            (
                "retention_period_ended",
                format!("may discard: {}", items.join(", ")),
            )
        }
    };
    rec.updated_at_ms = now_ms;
    put_specimen(tx, Some(before), &rec)?;
    tx.audit(
        AuditEntry::new(now_ms, "system:lifecycle", action, id)
            .before(before.state().key())
            .after(short(&after, store::MAX_SUMMARY_LEN)),
    )?;
    fired.applied = true;
    Ok(Some(fired))
}

fn item_key(i: Item) -> &'static str {
    match i {
        Item::Primary => "primary",
        Item::Split => "split",
        Item::Records => "records",
    }
}

/// Runs the sweep every `interval` until `shutdown` (the first at once, so what came due while
/// the daemon was stopped fires at start).
pub async fn run(
    committer: GroupCommitter,
    settings: Arc<Settings>,
    clock: Arc<dyn crate::core::clock::Clock>,
    interval: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        match sweep(&committer, &settings, clock.now_ms()).await {
            Ok(r) if !r.fired.is_empty() => {
                tracing::info!(
                    component = "lifecycle",
                    fired = r.fired.len(),
                    "clocks fired"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(component = "lifecycle", error = %e, "sweep failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

// ---- What may be discarded ---------------------------------------------------------------------

/// An item the laboratory may discard, with its specimen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscardableItem {
    pub specimen_id: String,
    #[serde(flatten)]
    pub item: Discardable,
}

/// What the laboratory may discard at `now_ms`: the specimens of the discardable index (set by
/// the retention clock), each re-checked against its retention now.
pub fn discardable(
    store: &Store,
    s: &Settings,
    now_ms: u64,
) -> Result<Vec<DiscardableItem>, String> {
    let mut out = Vec::new();
    for id in store
        .ids_in_state(DISCARDABLE_INDEX)
        .map_err(|e| e.to_string())?
    {
        let Some(rec) =
            crate::custody::records::read_specimen(store, &id).map_err(|e| e.to_string())?
        else {
            continue;
        };
        if let Some(r) = &rec.lifecycle.retention {
            for item in r.may_discard(&s.retention, now_ms, &storage_of(&rec)) {
                out.push(DiscardableItem {
                    specimen_id: id.clone(),
                    item,
                });
            }
        }
    }
    Ok(out)
}

/// The retention of one specimen as operators see it.
pub fn retention_view(rec: &SpecimenRecord, s: &Settings) -> Option<serde_json::Value> {
    let r = rec.lifecycle.retention.as_ref()?;
    let schedule: Vec<ItemRetention> = r.schedule(&s.retention);
    Some(serde_json::json!({
        "specimen_id": rec.specimen_id,
        "basis": r.basis,
        "reported_at_ms": r.reported_at_ms,
        "items": schedule,
        "requests": r.requests,
        "releases": r.releases,
        "discards": r.discards,
        "next_due_ms": rec.lifecycle.retention_due_ms,
    }))
}

/// The request of 40.187(f)(4) and where it stands: the primary's validity results on the
/// record (Bottle A) tested for the split's adulterant with [`split::retest_primary`]. `None`
/// when no such request is recorded.
pub fn adulterant_retest_view(
    rec: &SpecimenRecord,
    s: &Settings,
) -> Result<Option<serde_json::Value>, String> {
    let Some(req) = &rec.lifecycle.adulterant_retest else {
        return Ok(None);
    };
    let name = rec.profile_name().ok_or_else(|| {
        "the specimen has no edition (not accessioned, or held untested)".to_string()
    })?;
    let profile = s
        .profiles
        .get(name)
        .ok_or_else(|| format!("rule profile `{name}` is not loaded"))?;
    let validity = rec.engine_input().validity;
    let tested = (validity != crate::domain::rules::Validity::default()).then_some(&validity);
    let outcome =
        split::retest_primary(profile, &rec.specimen_id, req, tested).map_err(|e| e.to_string())?;
    Ok(Some(serde_json::json!({
        "specimen_id": rec.specimen_id,
        "request": req,
        "outcome": outcome,
    })))
}

/// What the release of the primary-retest result means, as recorded with the signature.
pub const MEANING_PRIMARY_RETEST: &str = "primary retest result reviewed and released";

/// A certifying scientist releases the complete result of testing the primary for the split's
/// adulterant (40.187(f)) to the MRO named on the CCF: signed, stored as a report and queued in
/// one transaction with the audit entry. Refused while the result is pending, once released, or
/// when the report cannot be addressed or signed.
pub async fn release_primary_retest(
    committer: &GroupCommitter,
    s: &Arc<Settings>,
    specimen_id: &str,
    scientist: &str,
    now_ms: u64,
) -> Result<serde_json::Value, LifecycleError> {
    let settings = s.clone();
    let id = specimen_id.to_string();
    let scientist = scientist.to_string();
    let r = committer
        .submit(
            move |tx: &mut Tx<'_>| -> Result<(serde_json::Value, String), Abort<LifecycleError>> {
                let s = &settings;
                let Some(desk) = &s.notices else {
                    return Err(refused("this daemon sends no reports to MROs"));
                };
                let Some(mut rec) = crate::custody::records::get_specimen(tx, &id)?
                else {
                    return Err(Abort::Domain(LifecycleError::UnknownSpecimen));
                };
                let before = Indexed::of(&rec);
                let Some(req) = rec.lifecycle.adulterant_retest.clone() else {
                    return Err(refused(
                        "no request of the MRO to test the primary for the split's adulterant (40.187(f)) is recorded",
                    ));
                };
                if let Some(done) = &rec.lifecycle.adulterant_retest_released {
                    return Err(refused(format!(
                        "the primary-retest result was already released as report {}",
                        done.report_id
                    )));
                }
                let profile = profile_of(&rec, s)?;
                let profile_name = profile.name.clone();
                let validity = rec.engine_input().validity;
                let tested =
                    (validity != crate::domain::rules::Validity::default()).then_some(&validity);
                let outcome = match split::retest_primary(profile, &id, &req, tested)
                    .map_err(refused)?
                {
                    split::PrimaryRetest::Pending { missing } => {
                        let what: Vec<String> = missing
                            .iter()
                            .map(|m| serde_json::to_string(m).unwrap_or_default())
                            .collect();
                        return Err(refused(format!(
                            "the primary-retest result is pending, not releasable: still missing {}",
                            what.join(", ")
                        )));
                    }
                    split::PrimaryRetest::Complete(r) => r,
                };
                let Some(acc) = &rec.accession else {
                    return Err(Abort::Domain(LifecycleError::UnknownSpecimen));
                };
                let queued = crate::custody::notices::queue_primary_retest(
                    tx,
                    desk,
                    crate::custody::notices::RetestRelease {
                        outcome: &outcome,
                        mro_name: &acc.ccf.mro.name,
                        mro_id: acc.ccf.mro.id.as_deref(),
                        profile: &profile_name,
                        scientist: &scientist,
                        released_at_ms: now_ms,
                    },
                )?
                .map_err(|e| refused(format!("the primary-retest result cannot be sent: {e}")))?;
                rec.lifecycle.adulterant_retest_released = Some(SplitRelease {
                    report_id: queued.report_id.clone(),
                    released_at_ms: now_ms,
                    scientist: scientist.clone(),
                    meaning: MEANING_PRIMARY_RETEST.into(),
                    content_sha256: queued.content_sha256.clone(),
                });
                rec.updated_at_ms = now_ms;
                put_specimen(tx, Some(before), &rec)?;
                let who = short(&format!("user:{scientist}"), 64);
                let what = format!(
                    "{MEANING_PRIMARY_RETEST}; report {}; sha256 {}",
                    queued.report_id, queued.content_sha256
                );
                tx.audit(
                    AuditEntry::new(now_ms, who, "primary_retest_released", id.as_str())
                        .after(short(&what, store::MAX_SUMMARY_LEN)),
                )?;
                let mro = queued.mro_id.clone();
                Ok((serde_json::to_value(&queued).unwrap_or_default(), mro))
            },
        )
        .await;
    let (v, mro) = map_commit(r)?;
    if let Some(desk) = &s.notices {
        desk.wake(&mro);
    }
    Ok(v)
}

// ---- Written requests -------------------------------------------------------------------------

/// What a written request asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RequestKind {
    /// Keep the specimen or its records longer (40.99(c), 40.109(c)).
    RetentionExtension {
        requester: Requester,
        subject: Subject,
        until: Until,
    },
    /// Release an earlier extension.
    RetentionRelease {
        requester: Requester,
        request_ref: String,
    },
    /// The MRO asks for quantitative values (40.97(e)); only before the result is released.
    Quantitation,
    /// The MRO asks for Bottle B to be tested at a second laboratory (40.171(c)).
    SplitTest { second_laboratory: String },
    /// The MRO asks this laboratory to test the primary for the adulterant the second
    /// laboratory found in the split (40.187(f)(4)): the 40.95 criterion as the split
    /// laboratory reported it (`cite`, `remark`) and, for an identified adulterant, the
    /// substance.
    AdulterantRetest {
        cite: String,
        remark: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        substances: Vec<String>,
    },
}

impl RequestKind {
    pub fn key(&self) -> &'static str {
        match self {
            RequestKind::RetentionExtension { .. } => "retention_extension",
            RequestKind::RetentionRelease { .. } => "retention_release",
            RequestKind::Quantitation => "quantitation",
            RequestKind::SplitTest { .. } => "split_test",
            RequestKind::AdulterantRetest { .. } => "adulterant_retest",
        }
    }
}

/// A written request, from whichever channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenRequest {
    pub specimen_id: String,
    /// The document that carries it (letter reference).
    pub document_ref: String,
    pub received_at_ms: u64,
    pub recorded_by: String,
    #[serde(flatten)]
    pub kind: RequestKind,
}

/// How a request reached custody.
#[derive(Debug, Clone)]
pub enum Channel {
    /// A LIMS document: its name and bytes (kept verbatim; the same bytes again are a
    /// duplicate).
    Lims { document: String, raw: Arc<Vec<u8>> },
    /// The admin API, by this user.
    Admin { user: String },
}

/// Why a request or discard was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("no accession is stored for the specimen")]
    UnknownSpecimen,
    /// Refused with the rule; nothing recorded.
    #[error("{0}")]
    Refused(String),
    #[error("not stored durably: {0}")]
    NotDurable(String),
}

impl LifecycleError {
    /// The admin API's status for it.
    pub fn status(&self) -> u16 {
        match self {
            LifecycleError::UnknownSpecimen => 404,
            LifecycleError::Refused(_) => 409,
            LifecycleError::NotDurable(_) => 503,
        }
    }
}

fn map_commit<T>(r: Result<T, CommitError<LifecycleError>>) -> Result<T, LifecycleError> {
    r.map_err(|e| match e {
        CommitError::Aborted(e) => e,
        other => LifecycleError::NotDurable(other.to_string()),
    })
}

/// What recording a request produced.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestOutcome {
    /// Recorded; what it changed, as JSON (the split disposition for a split request).
    Recorded(serde_json::Value),
    /// The same LIMS document was already recorded.
    Duplicate,
}

fn refused(e: impl ToString) -> Abort<LifecycleError> {
    Abort::Domain(LifecycleError::Refused(e.to_string()))
}

/// Records a written request in one transaction with its audit entry (and, from the LIMS, the
/// document verbatim and its dedupe mark).
pub async fn apply_request(
    committer: &GroupCommitter,
    s: &Arc<Settings>,
    req: WrittenRequest,
    channel: Channel,
    now_ms: u64,
) -> Result<RequestOutcome, LifecycleError> {
    if req.document_ref.trim().is_empty() {
        return Err(LifecycleError::Refused(
            "a written request must name the document that carries it".into(),
        ));
    }
    let settings = s.clone();
    let r = committer
        .submit(
            move |tx: &mut Tx<'_>| -> Result<(RequestOutcome, Option<String>), Abort<LifecycleError>> {
                request_tx(tx, &settings, &req, &channel, now_ms)
            },
        )
        .await;
    let (outcome, notify) = map_commit(r)?;
    // A report to the MRO was queued with the answer: its sender goes now.
    if let (Some(mro), Some(desk)) = (notify, &s.notices) {
        desk.wake(&mro);
    }
    Ok(outcome)
}

/// Who recorded a request, how it came, and (from the LIMS) its dedupe key and raw bytes.
struct Provenance<'r> {
    actor: String,
    via: String,
    dedupe: Option<(Vec<u8>, &'r [u8])>,
}

/// The provenance of a request; `None` when the LIMS document was already recorded.
fn provenance<'r>(
    tx: &mut Tx<'_>,
    channel: &'r Channel,
) -> Result<Option<Provenance<'r>>, Abort<LifecycleError>> {
    Ok(Some(match channel {
        Channel::Lims { document, raw } => {
            let dkey = store::dedupe_key("lims", &crate::custody::document_key(document, raw))?;
            if tx.contains_key(Keyspace::Dedupe, &dkey)? {
                return Ok(None);
            }
            Provenance {
                actor: "lims".to_string(),
                via: short(&format!("lims:{document}"), 200),
                dedupe: Some((dkey, raw)),
            }
        }
        Channel::Admin { user } => Provenance {
            actor: short(&format!("user:{user}"), 64),
            via: "admin".to_string(),
            dedupe: None,
        },
    }))
}

/// Records one written request: applies it to the specimen record (one function per kind),
/// notes it in the record's request list, and writes the audit entry and (from the LIMS) the
/// dedupe mark, all in the caller's transaction.
fn request_tx(
    tx: &mut Tx<'_>,
    s: &Settings,
    req: &WrittenRequest,
    channel: &Channel,
    now_ms: u64,
) -> Result<(RequestOutcome, Option<String>), Abort<LifecycleError>> {
    let Some(from) = provenance(tx, channel)? else {
        return Ok((RequestOutcome::Duplicate, None));
    };
    let mut notify = None;
    let id = req.specimen_id.as_str();
    let Some(mut rec) = crate::custody::records::get_specimen(tx, id)? else {
        return Err(Abort::Domain(LifecycleError::UnknownSpecimen));
    };
    if rec.accession.is_none() {
        return Err(Abort::Domain(LifecycleError::UnknownSpecimen));
    }
    let before = Indexed::of(&rec);
    let result = match &req.kind {
        RequestKind::RetentionExtension {
            requester,
            subject,
            until,
        } => {
            let ask = RetentionRequest {
                requester: *requester,
                subject: *subject,
                document_ref: req.document_ref.clone(),
                received_at_ms: req.received_at_ms,
                until: *until,
            };
            retention_extension(tx, &mut rec, s, ask, now_ms)?
        }
        RequestKind::RetentionRelease {
            requester,
            request_ref,
        } => {
            let release = RetentionRelease {
                requester: *requester,
                document_ref: req.document_ref.clone(),
                request_ref: request_ref.clone(),
                received_at_ms: req.received_at_ms,
            };
            retention_release(tx, &mut rec, s, release, now_ms)?
        }
        RequestKind::Quantitation => quantitation(
            tx,
            &mut rec,
            s,
            &req.document_ref,
            &req.recorded_by,
            now_ms,
            &mut notify,
        )?,
        RequestKind::SplitTest { second_laboratory } => {
            let request = SplitRequest {
                document_ref: req.document_ref.clone(),
                received_at_ms: req.received_at_ms,
                second_laboratory: second_laboratory.clone(),
            };
            split_test(
                tx,
                &mut rec,
                s,
                request,
                &req.recorded_by,
                now_ms,
                &mut notify,
            )?
        }
        RequestKind::AdulterantRetest {
            cite,
            remark,
            substances,
        } => {
            let request = split::PrimaryRetestRequest {
                document_ref: req.document_ref.clone(),
                received_at_ms: req.received_at_ms,
                adulterant: split::CriterionToTest {
                    result: crate::domain::rules::profile::ValidityResult::Adulterated
                        .key()
                        .to_string(),
                    cite: cite.clone(),
                    remark: remark.clone(),
                    substances: substances.clone(),
                },
            };
            adulterant_retest(&mut rec, s, request)?
        }
    };
    rec.lifecycle.requests.push(RecordedRequest {
        document_ref: req.document_ref.clone(),
        kind: req.kind.key().to_string(),
        received_at_ms: req.received_at_ms,
        recorded_by: req.recorded_by.clone(),
        via: from.via,
    });
    rec.updated_at_ms = now_ms;
    put_specimen(tx, Some(before), &rec)?;
    let mut what = format!("{} {}", req.kind.key(), req.document_ref);
    if let Some(SplitRecord { disposition, .. }) = &rec.lifecycle.split
        && matches!(req.kind, RequestKind::SplitTest { .. })
    {
        what.push_str(match disposition {
            SplitDisposition::Forwarded(_) => "; bottle B forwarded",
            SplitDisposition::Unavailable(_) => "; bottle B unavailable, reported",
        });
    }
    tx.audit(
        AuditEntry::new(now_ms, from.actor, "written_request", id)
            .before(before.state().key())
            .after(short(&what, store::MAX_SUMMARY_LEN)),
    )?;
    if let Some((dkey, raw)) = from.dedupe {
        tx.put_raw_bytes(Keyspace::Raw, &dkey, raw)?;
        tx.put(Keyspace::Dedupe, &dkey, &now_ms)?;
    }
    Ok((RequestOutcome::Recorded(result), notify))
}

fn not_reported() -> Abort<LifecycleError> {
    refused(
        "the specimen's result has not been released: its retention starts when it is reported (40.99(a))",
    )
}

/// A written request to keep a specimen or records longer (40.99(c), 40.109(b)).
fn retention_extension(
    tx: &mut Tx<'_>,
    rec: &mut SpecimenRecord,
    s: &Settings,
    ask: RetentionRequest,
    now_ms: u64,
) -> Result<serde_json::Value, Abort<LifecycleError>> {
    let r = rec.lifecycle.retention.as_mut().ok_or_else(not_reported)?;
    r.request(ask, &s.retention).map_err(refused)?;
    refresh_retention(tx, rec, s, now_ms)?;
    Ok(retention_view(rec, s).unwrap_or_default())
}

/// A written release of an earlier extension.
fn retention_release(
    tx: &mut Tx<'_>,
    rec: &mut SpecimenRecord,
    s: &Settings,
    release: RetentionRelease,
    now_ms: u64,
) -> Result<serde_json::Value, Abort<LifecycleError>> {
    let r = rec.lifecycle.retention.as_mut().ok_or_else(not_reported)?;
    r.release(release).map_err(refused)?;
    refresh_retention(tx, rec, s, now_ms)?;
    Ok(retention_view(rec, s).unwrap_or_default())
}

/// The MRO's written request for quantitative values (40.97(e)). Before the report: on file,
/// and the verdict re-evaluated so the report carries the values. After release (a released
/// verdict never changes): a supplementary report with the values the request adds, signed and
/// queued to the same MRO in this transaction (`supplements` names the released report); when
/// the released report already carries every value (today's edition reports them, 40.97(a)),
/// nothing is sent and the request is refused with that reason.
fn quantitation(
    tx: &mut Tx<'_>,
    rec: &mut SpecimenRecord,
    s: &Settings,
    document: &str,
    recorded_by: &str,
    now_ms: u64,
    notify: &mut Option<String>,
) -> Result<serde_json::Value, Abort<LifecycleError>> {
    let Some(release) = rec.release.clone() else {
        rec.mro_requested_quantitation = true;
        rec.quantitation_request = Some("case-by-case".into());
        rec.reevaluate(&s.profiles, &s.default_profile)
            .map_err(refused)?;
        return Ok(serde_json::json!({
            "specimen_id": rec.specimen_id,
            "mro_requested_quantitation": true,
            "state": rec.state.key(),
        }));
    };
    if let Some(sent) = rec.supplements.last() {
        return Err(refused(format!(
            "the quantitative values were already sent in supplementary report {sent} (40.97(e)); nothing to supplement"
        )));
    }
    let profile = profile_of(rec, s)?;
    let mut probe = rec.clone();
    probe.mro_requested_quantitation = true;
    let input = probe.engine_input_for(Some(profile));
    let verdict = crate::domain::rules::evaluate(profile, &input).map_err(refused)?;
    let reported = rec.evaluation.as_ref().map(|e| &e.verdict);
    if reported.map(|v| &v.results) != Some(&verdict.results) {
        return Err(refused(
            "the results evaluated now differ from the released report: a released verdict never changes; no supplement is sent",
        ));
    }
    if reported.map(|v| &v.quantitations) == Some(&verdict.quantitations) {
        return Err(refused(format!(
            "released report {} already carries every quantitative value this request asks for (40.97(e)); nothing to supplement",
            release.report_id
        )));
    }
    let desk = s.notices.as_ref().ok_or_else(|| {
        refused("no report signing is configured: the supplementary report cannot be sent")
    })?;
    let values = verdict
        .quantitations
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                crate::domain::report::Quantitation {
                    value: v.normalize(),
                    unit: crate::domain::report::unit_of(k).map(str::to_string),
                },
            )
        })
        .collect();
    let queued = crate::custody::notices::queue_supplement(
        tx,
        desk,
        &release.report_id,
        values,
        now_ms,
        recorded_by,
    )?
    .map_err(|e: NoticeError| {
        refused(format!(
            "the supplementary report with the quantitative values (40.97(e)) cannot be sent: {e}"
        ))
    })?;
    *notify = Some(queued.mro_id.clone());
    rec.mro_requested_quantitation = true;
    rec.quantitation_request = Some(format!("case-by-case: {document}"));
    rec.supplements.push(queued.report_id.clone());
    tx.audit(
        AuditEntry::new(
            now_ms,
            "system",
            "supplement_released",
            rec.specimen_id.as_str(),
        )
        .before(format!("report {}", release.report_id))
        .after(format!(
            "supplementary report {}; sha256 {}",
            queued.report_id, queued.content_sha256
        )),
    )?;
    Ok(serde_json::json!({
        "specimen_id": rec.specimen_id,
        "supplement": queued,
        "supplements": release.report_id,
    }))
}

/// The rule profile the specimen was judged by.
fn profile_of<'s>(
    rec: &SpecimenRecord,
    s: &'s Settings,
) -> Result<&'s crate::domain::rules::Profile, Abort<LifecycleError>> {
    let name = rec.profile_name().ok_or_else(|| {
        refused("the specimen has no edition (not accessioned, or held untested)".to_string())
    })?;
    s.profiles
        .get(name)
        .ok_or_else(|| refused(format!("rule profile `{name}` is not loaded")))
}

/// The MRO's split-specimen request (40.171(c)): the forwarding package, or the report that
/// Bottle B is unavailable; shipping stops the split's retention (40.99(d)).
/// When Bottle B is unavailable, the report of 40.175(b)(2) is signed and queued to the MRO in
/// the same transaction (`notify` names the MRO whose sender to wake); a report that cannot be
/// sent refuses the request, so the answer is never recorded without reaching the MRO.
fn split_test(
    tx: &mut Tx<'_>,
    rec: &mut SpecimenRecord,
    s: &Settings,
    request: SplitRequest,
    recorded_by: &str,
    now_ms: u64,
    notify: &mut Option<String>,
) -> Result<serde_json::Value, Abort<LifecycleError>> {
    if rec.release.is_none() {
        return Err(refused(split::SplitError::NotReported));
    }
    let profile = profile_of(rec, s)?;
    let previous = rec.lifecycle.split.as_ref().map(|x| &x.disposition);
    let d = crate::domain::split_request::handle_request(
        rec,
        profile,
        &s.laboratory,
        &request,
        &[],
        previous,
        now_ms,
    )
    .map_err(refused)?;
    if let (Some(at), Some(r)) = (d.shipped_at_ms(), rec.lifecycle.retention.as_mut()) {
        r.split_shipped(at).map_err(refused)?;
    }
    let mut out = serde_json::to_value(&d).unwrap_or_default();
    if let (SplitDisposition::Unavailable(report), Some(desk)) = (&d, &s.notices) {
        let profile = profile_of(rec, s)?.name.clone();
        let queued = crate::custody::notices::queue_split_unavailable(
            tx,
            desk,
            report,
            &profile,
            recorded_by,
        )?
        .map_err(|e: NoticeError| {
            refused(format!(
                "the split-unavailable report to the MRO (40.175(b)(2)) cannot be sent: {e}"
            ))
        })?;
        *notify = Some(queued.mro_id.clone());
        out["reported_to_mro"] = serde_json::to_value(&queued).unwrap_or_default();
    }
    rec.lifecycle.split = Some(SplitRecord {
        request,
        disposition: d,
    });
    refresh_retention(tx, rec, s, now_ms)?;
    Ok(out)
}

/// The MRO's request that the primary be tested for the split's adulterant (40.187(f)(4)).
fn adulterant_retest(
    rec: &mut SpecimenRecord,
    s: &Settings,
    request: split::PrimaryRetestRequest,
) -> Result<serde_json::Value, Abort<LifecycleError>> {
    if !matches!(
        rec.lifecycle.split.as_ref().map(|x| &x.disposition),
        Some(SplitDisposition::Forwarded(_))
    ) {
        return Err(refused(
            "no Bottle B of this specimen was forwarded to a second laboratory: a request to test the primary for the split's adulterant (40.187(f)) follows a split test",
        ));
    }
    if let Some(prev) = &rec.lifecycle.adulterant_retest {
        return Err(refused(format!(
            "the request to test the primary for the split's adulterant was already recorded under document `{}`",
            prev.document_ref
        )));
    }
    let profile = profile_of(rec, s)?;
    // Checks the request against the profile (a known 40.95 criterion) before recording it.
    split::retest_primary(profile, &rec.specimen_id, &request, None).map_err(refused)?;
    rec.lifecycle.adulterant_retest = Some(request);
    Ok(adulterant_retest_view(rec, s)
        .map_err(refused)?
        .unwrap_or_default())
}

/// The laboratory confirms it discarded an item (refused unless it may be discarded now).
pub async fn confirm_discard(
    committer: &GroupCommitter,
    s: &Arc<Settings>,
    specimen_id: &str,
    item: Item,
    confirmed_by: &str,
    now_ms: u64,
) -> Result<serde_json::Value, LifecycleError> {
    let s = s.clone();
    let id = specimen_id.to_string();
    let who = short(&format!("user:{confirmed_by}"), 64);
    let r = committer
        .submit(
            move |tx: &mut Tx<'_>| -> Result<serde_json::Value, Abort<LifecycleError>> {
                let Some(mut rec) = crate::custody::records::get_specimen(tx, &id)? else {
                    return Err(Abort::Domain(LifecycleError::UnknownSpecimen));
                };
                let before = Indexed::of(&rec);
                let location = item.bottle().and_then(|b| storage_of(&rec).get(b).cloned());
                let r = rec.lifecycle.retention.as_mut().ok_or_else(|| {
                    refused("the specimen's result has not been released; nothing may be discarded")
                })?;
                r.confirm_discard(item, &who, now_ms, &s.retention)
                    .map_err(refused)?;
                refresh_retention(tx, &mut rec, &s, now_ms)?;
                rec.updated_at_ms = now_ms;
                put_specimen(tx, Some(before), &rec)?;
                let mut what = format!("{} discarded", item_key(item));
                if let Some(l) = &location {
                    what.push_str(&format!(" from {l}"));
                }
                tx.audit(
                    AuditEntry::new(now_ms, who.clone(), "discard_confirmed", id.as_str())
                        .after(short(&what, store::MAX_SUMMARY_LEN)),
                )?;
                Ok(serde_json::json!({
                    "specimen_id": id,
                    "item": item,
                    "location": location,
                    "confirmed_by": who,
                    "at_ms": now_ms,
                }))
            },
        )
        .await;
    map_commit(r)
}
