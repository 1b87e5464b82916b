//! Analytical runs in custody: every analyzer message placed in its run, QC results kept as run
//! records (never as specimens), runs closed and evaluated when their closing QC arrives, and a
//! certifying scientist's acceptance or rejection applied to every specimen of the run — each
//! as one transaction with its audit entries, acknowledged only after the durable commit.
//!
//! Where a message goes:
//! - **run id** (the mapping names the field): the run `<analyzer>:<id>`. A message of another
//!   run closes the analyzer's current one (the instrument moved on). A new result for a closed
//!   run is refused; a correction (OBX-11 `C`) joins the run of the result it corrects.
//! - **bracketing** (no run id): a QC set after specimens closes the current run once it covers
//!   every rule the run's assays need, and opens the next run, whose opening QC it is; a
//!   specimen that arrives before the closing set is complete closes the run as incomplete.
//!   Results after the last QC set stay in an open run until the closing QC arrives.
//!
//! A control or calibrator whose sample ID is the ID of an accessioned specimen is refused and
//! alerted, never guessed. Runs are listed in `by_state` as `run:<state>`.

use crate::custody::records::{Indexed, put_specimen};
use crate::custody::{Custody, DedupeMark};
use crate::domain::results::ResultEntry;
use crate::domain::runs::{
    Delimiting, QcResult, QcRule, RunError, RunKind, RunQc, RunRecord, RunSpecimen, RunState,
    run_key,
};
use crate::domain::specimen::{ChangeError, SpecimenRecord};
use crate::store::{
    Abort, AuditEntry, CommitError, GroupCommitter, Keyspace, RUN_ROSTER_PAGE, Store, StoreError,
    Tx, TxError, dedupe_key, run_cursor_key, run_member_key, run_member_prefix, run_qc_key,
    run_record_key, run_roster_key, run_state_index, state_key,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What custody needs to place one source's messages in runs (from its mapping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    /// The analyzer's name (or `lims`).
    pub source: String,
    pub kind: RunKind,
    /// The source sends run ids; else its runs are bracketed by QC sets.
    pub by_run_id: bool,
    pub auto_accept: bool,
    /// The source's QC rules (shared with its mapping: copied only into a run that opens).
    pub rules: Arc<Vec<QcRule>>,
}

/// Where a source's runs stand (in `runs` under [`run_cursor_key`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The open run the next specimen goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Bracketing: the run a closing QC set opened while the current run's set is incomplete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Bracketed runs opened so far (their ids are `B1`, `B2`, ...).
    #[serde(default)]
    pub opened: u64,
}

/// What one message carries: a specimen's results, or QC results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sample {
    Specimen {
        specimen_id: String,
        results: Vec<ResultEntry>,
    },
    Qc {
        sample_id: String,
        results: Vec<QcResult>,
    },
}

/// What custody did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// Stored durably in `run`; the specimen's new state (specimen messages); the runs that
    /// closed, with what became of them.
    Stored {
        run: String,
        state: Option<&'static str>,
        closed: Vec<(String, RunState)>,
    },
    /// Already stored from the same source and reference: nothing written.
    Duplicate,
}

/// Why custody refused a message or a decision (names rules and keys, never content).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Change(ChangeError),
    #[error(
        "the specimen's result was already released: results after release are refused (a released verdict never changes)"
    )]
    AfterRelease,
    #[error(
        "the QC sample ID is the ID of an accessioned specimen: refused, never guessed (rename the control)"
    )]
    QcSampleIsSpecimen,
    #[error("run {0} is closed: a new result cannot join it (a correction, OBX-11 C, may)")]
    RunClosed(String),
    #[error("message control id already used by this source for a message with different content")]
    ReusedControlId,
    #[error("no such run")]
    UnknownRun,
    #[error("{0}")]
    Decision(RunError),
    #[error("no such specimen")]
    UnknownSpecimen,
    #[error("this source has no run configuration ([analyzer.mapping.runs])")]
    NoRunSettings,
    #[error("run {0} was already received: a batch id names one run")]
    BatchSeen(String),
}

/// Why a runs operation did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    #[error("{0}")]
    Refused(Refusal),
    #[error("not stored durably: {0}")]
    NotDurable(String),
}

impl From<CommitError<Refusal>> for RunsError {
    fn from(e: CommitError<Refusal>) -> Self {
        match e {
            CommitError::Aborted(r) => RunsError::Refused(r),
            other => RunsError::NotDurable(other.to_string()),
        }
    }
}

impl RunsError {
    /// The HTTP status for the admin API.
    pub fn status(&self) -> u16 {
        match self {
            RunsError::Refused(Refusal::UnknownRun | Refusal::UnknownSpecimen) => 404,
            RunsError::Refused(Refusal::Change(ChangeError::NoSuchResult(_))) => 404,
            RunsError::Refused(_) => 409,
            RunsError::NotDurable(_) => 503,
        }
    }
}

fn refuse<T>(r: Refusal) -> Result<T, Abort<Refusal>> {
    Err(Abort::Domain(r))
}

/// Reads a run with its QC (its members stay apart: see [`load_members`]).
pub fn get_run(tx: &Tx<'_>, key: &str) -> Result<Option<RunRecord>, TxError> {
    let Some(mut run) = get_run_header(tx, key)? else {
        return Ok(None);
    };
    load_qc(tx, &mut run)?;
    Ok(Some(run))
}

/// Reads a run's record alone: without what is stored apart (its QC, its members). What a
/// specimen's message needs of its run.
fn get_run_header(tx: &Tx<'_>, key: &str) -> Result<Option<RunRecord>, TxError> {
    tx.get(Keyspace::Runs, &run_record_key(key))
}

/// Loads a run's rules and QC results stored apart into the run (before QC is added, closing
/// QC judged, the run closed or decided).
pub fn load_qc(tx: &Tx<'_>, run: &mut RunRecord) -> Result<(), TxError> {
    if run.has_qc() {
        return Ok(());
    }
    let part = tx.get(Keyspace::Runs, &run_qc_key(&run.key))?;
    Ok(set_stored_qc(run, part)?)
}

/// Puts the QC part as read (`None`: absent) into the run. A run's QC is written in the
/// transaction that opens it: its absence is a broken store, never "no rules" (a run judged
/// without its rules would pass nothing or anything).
fn set_stored_qc(run: &mut RunRecord, part: Option<RunQc>) -> Result<(), StoreError> {
    let part = part.ok_or_else(|| {
        StoreError::Invalid(format!("run {}: its QC record is missing", clean(&run.key)))
    })?;
    run.set_qc(part);
    Ok(())
}

/// Loads a run's members stored apart into the run (before it is closed or decided: its
/// content hash and its specimens' news need them all), page by page of its roster.
pub fn load_members(tx: &Tx<'_>, run: &mut RunRecord) -> Result<(), TxError> {
    if run.has_all_members() {
        return Ok(());
    }
    let mut members = Vec::with_capacity(run.specimen_count as usize);
    for page in 0..run.specimen_count.div_ceil(RUN_ROSTER_PAGE) {
        let ids: Vec<String> = tx
            .get(Keyspace::Runs, &run_roster_key(&run.key, page))?
            .unwrap_or_default();
        for id in ids {
            if let Some(m) =
                tx.get::<RunSpecimen>(Keyspace::Runs, &run_member_key(&run.key, &id))?
            {
                members.push(m);
            }
        }
    }
    run.set_members(members);
    Ok(())
}

/// Adds specimen number `index` (from 0, in arrival order) to a run's roster.
fn roster_append(
    tx: &mut Tx<'_>,
    run_key: &str,
    index: u32,
    specimen_id: &str,
) -> Result<(), TxError> {
    let key = run_roster_key(run_key, index / RUN_ROSTER_PAGE);
    let mut ids: Vec<String> = if index.is_multiple_of(RUN_ROSTER_PAGE) {
        Vec::new()
    } else {
        tx.get(Keyspace::Runs, &key)?.unwrap_or_default()
    };
    ids.push(specimen_id.to_string());
    tx.put(Keyspace::Runs, &key, &ids)
}

/// Writes a run with its `by_state` entry (`before`: its state as stored, if it was). A run
/// whose members are stored apart is written without them.
pub fn put_run(tx: &mut Tx<'_>, before: Option<RunState>, run: &RunRecord) -> Result<(), TxError> {
    let now = run.state();
    if before != Some(now) {
        if let Some(b) = before {
            tx.remove(
                Keyspace::ByState,
                &state_key(&run_state_index(b.key()), &run.key)?,
            )?;
        }
        tx.put(
            Keyspace::ByState,
            &state_key(&run_state_index(now.key()), &run.key)?,
            &(),
        )?;
    }
    if run.qc_apart && run.qc_changed {
        tx.put(Keyspace::Runs, &run_qc_key(&run.key), &run.qc_part())?;
    }
    let apart = run.members_apart && !run.specimens.is_empty()
        || run.qc_apart && !(run.rules.is_empty() && run.qc.is_empty());
    if apart {
        return tx.put(Keyspace::Runs, &run_record_key(&run.key), &run.header());
    }
    tx.put(Keyspace::Runs, &run_record_key(&run.key), run)
}

/// The runs of the transaction: read once, changed, written once at the end.
struct Touched {
    runs: Vec<(Option<RunState>, RunRecord)>,
}

impl Touched {
    /// The run `key`, read once; with its QC loaded when `with_qc` (a QC message, a close).
    fn load(&mut self, tx: &Tx<'_>, key: &str, with_qc: bool) -> Result<Option<usize>, TxError> {
        let i = match self.runs.iter().position(|(_, r)| r.key == key) {
            Some(i) => i,
            None => {
                let Some(r) = get_run_header(tx, key)? else {
                    return Ok(None);
                };
                self.runs.push((Some(r.state()), r));
                self.runs.len() - 1
            }
        };
        if with_qc {
            load_qc(tx, &mut self.runs[i].1)?;
        }
        Ok(Some(i))
    }

    fn open(&mut self, s: &RunSettings, local: &str, delimited: Delimiting, now: u64) -> usize {
        self.runs.push((
            None,
            RunRecord::open(
                &s.source,
                local,
                s.kind,
                delimited,
                s.rules.to_vec(),
                s.auto_accept,
                now,
            ),
        ));
        self.runs.len() - 1
    }

    fn run(&mut self, i: usize) -> &mut RunRecord {
        &mut self.runs[i].1
    }
}

/// Places one analyzer message in its run and stores it (see the module notes). `run_id` is
/// the id the message carries (run-id sources); `fingerprint` what the message means, so a
/// retransmission is a duplicate and a reused control id for other content is refused.
#[allow(clippy::too_many_arguments)]
pub async fn message(
    custody: &Custody,
    settings: &RunSettings,
    control_id: &str,
    run_id: Option<&str>,
    raw: Vec<u8>,
    sample: Sample,
    fingerprint: String,
) -> Result<Placed, RunsError> {
    let now = custody.now_ms();
    let lifecycle = custody.lifecycle().clone();
    let profiles = lifecycle.profiles.clone();
    let default = custody.default_profile().to_string();
    let settings = settings.clone();
    let control_id = control_id.to_string();
    let run_id = run_id.map(str::to_string);
    let raw = Arc::new(raw);
    let sample = Arc::new(sample);
    let r = custody
        .committer()
        .submit(move |tx: &mut Tx<'_>| -> Result<Placed, Abort<Refusal>> {
            let dkey = dedupe_key(&settings.source, &control_id)?;
            if let Some(seen) = tx.get::<DedupeMark>(Keyspace::Dedupe, &dkey)? {
                if seen.fingerprint == fingerprint {
                    return Ok(Placed::Duplicate);
                }
                return refuse(Refusal::ReusedControlId);
            }
            let actor: String = format!("analyzer:{}", settings.source)
                .chars()
                .take(64)
                .collect();
            let ckey = run_cursor_key(&settings.source);
            let stored_cursor: Option<Cursor> = tx.get(Keyspace::Runs, &ckey)?;
            let mut cursor = stored_cursor.clone().unwrap_or_default();
            let mut touched = Touched { runs: Vec::new() };
            let mut closed: Vec<String> = Vec::new();
            let close = |tx: &Tx<'_>,
                         t: &mut Touched,
                         i: usize,
                         why: &str,
                         closed: &mut Vec<String>|
             -> Result<(), TxError> {
                let r = t.run(i);
                if r.is_open() {
                    load_members(tx, r)?;
                    load_qc(tx, r)?;
                    r.close(why, now);
                    closed.push(r.key.clone());
                }
                Ok(())
            };
            let mut specimen_state = None;
            let placed_in: String;
            match &*sample {
                Sample::Qc { sample_id, results } => {
                    if let Some(rec) = crate::custody::records::get_specimen(tx, sample_id)?
                        && rec.accession.is_some()
                    {
                        return refuse(Refusal::QcSampleIsSpecimen);
                    }
                    if settings.by_run_id {
                        let local = run_id.clone().unwrap_or_default();
                        let key = run_key(&settings.source, &local);
                        let i = match touched.load(tx, &key, true)? {
                            Some(i) => i,
                            None => touched.open(&settings, &local, Delimiting::RunId, now),
                        };
                        if !touched.run(i).is_open() {
                            return refuse(Refusal::RunClosed(key));
                        }
                        moved_on(tx, &mut touched, &cursor, &key, &mut closed, now)?;
                        let r = touched.run(i);
                        r.add_qc(results.clone());
                        if r.in_closing_qc() && r.closing_qc_complete() {
                            close(tx, &mut touched, i, "its closing QC arrived", &mut closed)?;
                        }
                        cursor.current = Some(key.clone());
                        placed_in = key;
                    } else {
                        let cur = match &cursor.current {
                            Some(k) => touched.load(tx, k, true)?,
                            None => None,
                        };
                        match cur {
                            Some(c) if touched.run(c).last_specimen_event > 0 => {
                                // Closing QC of the current run, opening QC of the next.
                                touched.run(c).add_qc(results.clone());
                                let next = match &cursor.next {
                                    Some(k) => touched.load(tx, k, true)?,
                                    None => None,
                                };
                                let n = match next {
                                    Some(n) => n,
                                    None => {
                                        cursor.opened += 1;
                                        let local = format!("B{}", cursor.opened);
                                        touched.open(&settings, &local, Delimiting::Bracketing, now)
                                    }
                                };
                                touched.run(n).add_qc(results.clone());
                                let next_key = touched.run(n).key.clone();
                                if touched.run(c).closing_qc_complete() {
                                    close(
                                        tx,
                                        &mut touched,
                                        c,
                                        "its closing QC set arrived",
                                        &mut closed,
                                    )?;
                                    cursor.current = Some(next_key.clone());
                                    cursor.next = None;
                                } else {
                                    cursor.next = Some(next_key.clone());
                                }
                                placed_in = touched.run(c).key.clone();
                            }
                            Some(c) => {
                                touched.run(c).add_qc(results.clone());
                                placed_in = touched.run(c).key.clone();
                            }
                            None => {
                                cursor.opened += 1;
                                let local = format!("B{}", cursor.opened);
                                let n =
                                    touched.open(&settings, &local, Delimiting::Bracketing, now);
                                touched.run(n).add_qc(results.clone());
                                placed_in = touched.run(n).key.clone();
                                cursor.current = Some(placed_in.clone());
                            }
                        }
                    }
                }
                Sample::Specimen {
                    specimen_id,
                    results,
                } => {
                    let corrections_only = !results.is_empty()
                        && results
                            .iter()
                            .all(|r| r.status == crate::domain::results::ResultStatus::Corrected);
                    let i = if settings.by_run_id {
                        let local = run_id.clone().unwrap_or_default();
                        let key = run_key(&settings.source, &local);
                        let i = match touched.load(tx, &key, false)? {
                            Some(i) => i,
                            None => touched.open(&settings, &local, Delimiting::RunId, now),
                        };
                        if !touched.run(i).is_open() && !corrections_only {
                            return refuse(Refusal::RunClosed(key));
                        }
                        if touched.run(i).is_open() {
                            moved_on(tx, &mut touched, &cursor, &key, &mut closed, now)?;
                            cursor.current = Some(key);
                        }
                        i
                    } else {
                        let cur = match &cursor.current {
                            Some(k) => touched.load(tx, k, false)?,
                            None => None,
                        };
                        let next = match &cursor.next {
                            Some(k) => touched.load(tx, k, false)?,
                            None => None,
                        };
                        match (cur, next) {
                            (Some(c), Some(n)) => {
                                close(
                                    tx,
                                    &mut touched,
                                    c,
                                    "a specimen arrived before its closing QC set was complete",
                                    &mut closed,
                                )?;
                                cursor.current = Some(touched.run(n).key.clone());
                                cursor.next = None;
                                n
                            }
                            (Some(c), None) if touched.run(c).is_open() => c,
                            _ => {
                                cursor.opened += 1;
                                let local = format!("B{}", cursor.opened);
                                let n =
                                    touched.open(&settings, &local, Delimiting::Bracketing, now);
                                cursor.current = Some(touched.run(n).key.clone());
                                n
                            }
                        }
                    };
                    let key = touched.run(i).key.clone();
                    let codes: Vec<String> =
                        results.iter().filter_map(|r| r.code.clone()).collect();
                    let confirmation = results
                        .iter()
                        .any(|r| r.kind == crate::domain::results::ResultKind::Confirmation);
                    if touched.run(i).is_open() {
                        let r = touched.run(i);
                        let mkey = run_member_key(&r.key, specimen_id);
                        let stored = if r.members_apart {
                            tx.get::<RunSpecimen>(Keyspace::Runs, &mkey)?
                        } else {
                            None
                        };
                        let new_member = r.members_apart && stored.is_none();
                        let index = r.specimen_count;
                        let member = if r.has_all_members() {
                            r.add_specimen(specimen_id, &codes, confirmation)
                        } else {
                            r.add_member(stored, specimen_id, &codes, confirmation)
                        };
                        if r.members_apart {
                            let run_key = r.key.clone();
                            tx.put(Keyspace::Runs, &mkey, &member)?;
                            if new_member {
                                roster_append(tx, &run_key, index, specimen_id)?;
                            }
                        }
                    }
                    let status = touched.run(i).status();
                    let after = results_arrived(
                        tx,
                        specimen_id,
                        results,
                        &key,
                        status,
                        &actor,
                        (&profiles, &default, &lifecycle),
                        now,
                    )?;
                    specimen_state = Some(after);
                    placed_in = key;
                }
            }
            // Write the runs, then tell the specimens of every run that closed.
            let mut closed_states = Vec::new();
            for (before, run) in &touched.runs {
                put_run(tx, *before, run)?;
                if let Sample::Qc { results, .. } = &*sample
                    && run.key == placed_in
                {
                    tx.audit(
                        AuditEntry::new(now, actor.clone(), "qc_received", run.key.as_str()).after(
                            format!("{} QC result(s); run {}", results.len(), run.state().key()),
                        ),
                    )?;
                }
            }
            for key in &closed {
                let Some((_, run)) = touched.runs.iter().find(|(_, r)| &r.key == key) else {
                    continue;
                };
                let qc = run
                    .evaluation
                    .as_ref()
                    .map(|e| e.outcome.key())
                    .unwrap_or("incomplete");
                let what = match run.state() {
                    RunState::Accepted => format!(
                        "accepted automatically; qc {qc}; sha256 {}",
                        run.content_sha256()
                    ),
                    s => format!("{}; qc {qc}", s.key()),
                };
                tx.audit(
                    AuditEntry::new(now, actor.clone(), "run_closed", key.as_str())
                        .before(RunState::Open.key())
                        .after(format!(
                            "{what}; {}",
                            run.closed_because.as_deref().unwrap_or("")
                        )),
                )?;
                apply_to_specimens(tx, run, None, &actor, &profiles, &default, &lifecycle, now)?;
                closed_states.push((key.clone(), run.state()));
            }
            // Most messages leave the cursor where it was: it is written only when it moved.
            if stored_cursor.as_ref() != Some(&cursor) {
                tx.put(Keyspace::Runs, &ckey, &cursor)?;
            }
            note_arrival(tx, &settings.source, now)?;
            tx.put_raw_bytes(Keyspace::Raw, &dkey, &raw)?;
            tx.put(
                Keyspace::Dedupe,
                &dkey,
                &DedupeMark {
                    at_ms: now,
                    fingerprint: fingerprint.clone(),
                },
            )?;
            Ok(Placed::Stored {
                run: placed_in,
                state: specimen_state,
                closed: closed_states,
            })
        })
        .await;
    r.map_err(RunsError::from)
}

/// A LIMS confirmation batch: one document, one run (`lims:<batch id>`), its QC in the
/// document. Every specimen's results join the run, the run closes at once (its QC is all
/// there) and is evaluated; a confirmation run waits for a certifying scientist by name. All or
/// nothing; the same document again is a duplicate.
pub async fn batch(
    custody: &Custody,
    settings: &RunSettings,
    document: &str,
    raw: Vec<u8>,
    batch_id: &str,
    specimens: Vec<(String, Vec<ResultEntry>)>,
    qc: Vec<QcResult>,
) -> Result<Placed, RunsError> {
    let now = custody.now_ms();
    let lifecycle = custody.lifecycle().clone();
    let profiles = lifecycle.profiles.clone();
    let default = custody.default_profile().to_string();
    let settings = settings.clone();
    let reference = crate::custody::document_key(document, &raw);
    let batch_id = batch_id.to_string();
    let raw = Arc::new(raw);
    let specimens = Arc::new(specimens);
    let qc = Arc::new(qc);
    let r = custody
        .committer()
        .submit(move |tx: &mut Tx<'_>| -> Result<Placed, Abort<Refusal>> {
            let dkey = dedupe_key(&settings.source, &reference)?;
            if let Some(seen) = tx.get::<DedupeMark>(Keyspace::Dedupe, &dkey)? {
                if seen.fingerprint == reference {
                    return Ok(Placed::Duplicate);
                }
                return refuse(Refusal::ReusedControlId);
            }
            let key = run_key(&settings.source, &batch_id);
            if get_run(tx, &key)?.is_some() {
                return refuse(Refusal::BatchSeen(key));
            }
            for q in qc.iter() {
                if let Some(rec) = crate::custody::records::get_specimen(tx, &q.sample)?
                    && rec.accession.is_some()
                {
                    return refuse(Refusal::QcSampleIsSpecimen);
                }
            }
            let mut run = RunRecord::open(
                &settings.source,
                &batch_id,
                settings.kind,
                Delimiting::Batch,
                settings.rules.to_vec(),
                settings.auto_accept,
                now,
            );
            // A batch is one bounded document: its run is stored whole.
            run.members_apart = false;
            run.qc_apart = false;
            let actor = "lims".to_string();
            for (id, results) in specimens.iter() {
                let codes: Vec<String> = results.iter().filter_map(|r| r.code.clone()).collect();
                let confirmation = results
                    .iter()
                    .any(|r| r.kind == crate::domain::results::ResultKind::Confirmation);
                let _ = run.add_specimen(id, &codes, confirmation);
                results_arrived(
                    tx,
                    id,
                    results,
                    &key,
                    run.status(),
                    &actor,
                    (&profiles, &default, &lifecycle),
                    now,
                )?;
            }
            run.add_qc((*qc).clone());
            run.close("the batch document carries its QC", now);
            put_run(tx, None, &run)?;
            let qc_outcome = run
                .evaluation
                .as_ref()
                .map(|e| e.outcome.key())
                .unwrap_or("incomplete");
            tx.audit(
                AuditEntry::new(now, actor.clone(), "run_closed", key.as_str())
                    .before(RunState::Open.key())
                    .after(format!(
                        "{}; qc {qc_outcome}; {} QC result(s)",
                        run.state().key(),
                        run.qc.len()
                    )),
            )?;
            apply_to_specimens(tx, &run, None, &actor, &profiles, &default, &lifecycle, now)?;
            tx.put_raw_bytes(Keyspace::Raw, &dkey, &raw)?;
            tx.put(
                Keyspace::Dedupe,
                &dkey,
                &DedupeMark {
                    at_ms: now,
                    fingerprint: reference.clone(),
                },
            )?;
            Ok(Placed::Stored {
                run: key.clone(),
                state: None,
                closed: vec![(key, run.state())],
            })
        })
        .await;
    r.map_err(RunsError::from)
}

/// How stale the stored time of a source's last arrival may be (the start-up gauge
/// `custodian_analyzer_last_message_timestamp_seconds` reads it; rewriting it on every message
/// would cost a write per message for a precision no alert needs).
pub const LAST_ARRIVAL_PRECISION_MS: u64 = 60_000;

/// Notes that a message of `source` arrived at `now` (see [`LAST_ARRIVAL_PRECISION_MS`]).
fn note_arrival(tx: &mut Tx<'_>, source: &str, now: u64) -> Result<(), TxError> {
    let name = crate::store::last_arrival_number(source);
    let last = tx.meta_number(&name)?;
    if last.is_none_or(|t| now >= t.saturating_add(LAST_ARRIVAL_PRECISION_MS) || now < t) {
        tx.set_meta_number(&name, now)?;
    }
    Ok(())
}

/// A specimen's results of run `key` arrived (from an analyzer message or a LIMS batch): the
/// record takes them with the run's status, is judged again and written, with one audit entry.
/// Refused after release. Returns the specimen's new state.
#[allow(clippy::too_many_arguments)]
fn results_arrived(
    tx: &mut Tx<'_>,
    specimen_id: &str,
    results: &[ResultEntry],
    key: &str,
    status: crate::domain::runs::RunStatus,
    actor: &str,
    (profiles, default, lifecycle): (
        &crate::domain::rules::ProfileSet,
        &str,
        &crate::custody::lifecycle::Settings,
    ),
    now: u64,
) -> Result<&'static str, Abort<Refusal>> {
    let existing: Option<SpecimenRecord> = crate::custody::records::get_specimen(tx, specimen_id)?;
    let (mut rec, before) = match existing {
        Some(r) => {
            let b = Indexed::of(&r);
            (r, Some(b))
        }
        None => (SpecimenRecord::new(specimen_id, now), None),
    };
    if rec.release.is_some() {
        return refuse(Refusal::AfterRelease);
    }
    let entries: Vec<ResultEntry> = results
        .iter()
        .cloned()
        .map(|mut r| {
            r.run = Some(key.to_string());
            r
        })
        .collect();
    rec.runs.insert(key.to_string(), status);
    rec.attach_results(entries, profiles, default, now)
        .map_err(|e| Abort::Domain(Refusal::Change(e)))?;
    crate::custody::lifecycle::after_change(&mut rec, lifecycle);
    let after = rec.state.key();
    put_specimen(tx, before, &rec)?;
    let mut entry = AuditEntry::new(now, actor, "results_received", specimen_id)
        .after(format!("{after}; run {key}"));
    if let Some(b) = before {
        entry = entry.before(b.state().key());
    }
    tx.audit(entry)?;
    Ok(after)
}

/// Run-id sources: a message of another run closes the source's current run (the instrument
/// started another one).
fn moved_on(
    tx: &Tx<'_>,
    touched: &mut Touched,
    cursor: &Cursor,
    key: &str,
    closed: &mut Vec<String>,
    now: u64,
) -> Result<(), TxError> {
    if let Some(current) = &cursor.current
        && current != key
        && let Some(i) = touched.load(tx, current, false)?
    {
        let r = touched.run(i);
        if r.is_open() {
            load_members(tx, r)?;
            load_qc(tx, r)?;
            r.close("the instrument started another run", now);
            closed.push(r.key.clone());
        }
    }
    Ok(())
}

/// Tells every specimen of `run` what became of it (re-evaluating each), with one audit entry
/// per specimen whose record changed. A released specimen is left as it is: a released verdict
/// never changes.
#[allow(clippy::too_many_arguments)]
fn apply_to_specimens(
    tx: &mut Tx<'_>,
    run: &RunRecord,
    rejected: Option<(&str, &str)>,
    actor: &str,
    profiles: &crate::domain::rules::ProfileSet,
    default: &str,
    lifecycle: &crate::custody::lifecycle::Settings,
    now: u64,
) -> Result<(), Abort<Refusal>> {
    let status = run.status();
    for s in &run.specimens {
        let Some(mut rec) = crate::custody::records::get_specimen(tx, &s.specimen_id)? else {
            continue;
        };
        if rec.release.is_some() {
            continue;
        }
        let before = Indexed::of(&rec);
        rec.set_run_status(&run.key, status.clone(), rejected, profiles, default, now)
            .map_err(|e| Abort::Domain(Refusal::Change(e)))?;
        crate::custody::lifecycle::after_change(&mut rec, lifecycle);
        put_specimen(tx, Some(before), &rec)?;
        tx.audit(
            AuditEntry::new(now, actor, "run_decision", s.specimen_id.as_str())
                .before(before.state().key())
                .after(format!(
                    "{}; run {} {}",
                    rec.state.key(),
                    run.key,
                    run.state().key()
                )),
        )?;
    }
    Ok(())
}

/// What a decision needs besides the run: the profiles and lifecycle settings of custody.
#[derive(Clone)]
pub struct Desk {
    pub committer: GroupCommitter,
    pub profiles: Arc<crate::domain::rules::ProfileSet>,
    pub default_profile: String,
    pub lifecycle: Arc<crate::custody::lifecycle::Settings>,
    pub clock: Arc<dyn crate::core::clock::Clock>,
}

impl Desk {
    pub fn of(custody: &Custody, clock: Arc<dyn crate::core::clock::Clock>) -> Desk {
        Desk {
            committer: custody.committer().clone(),
            profiles: custody.lifecycle().profiles.clone(),
            default_profile: custody.default_profile().to_string(),
            lifecycle: custody.lifecycle().clone(),
            clock,
        }
    }

    /// A certifying scientist accepts (`accept`) or rejects a run: an electronic signature in
    /// the audit chain bound to the run's content (SHA-256), applied to every specimen of the
    /// run in the same transaction; a rejected run's specimens are asked for a retest.
    pub async fn decide(
        &self,
        key: &str,
        accept: bool,
        scientist: &str,
        reason: &str,
    ) -> Result<RunRecord, RunsError> {
        let now = self.clock.now_ms();
        let (key, scientist) = (key.to_string(), scientist.to_string());
        let reason: String = reason
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect::<String>()
            .trim()
            .to_string();
        let (profiles, default, lifecycle) = (
            self.profiles.clone(),
            self.default_profile.clone(),
            self.lifecycle.clone(),
        );
        let r = self
            .committer
            .submit(
                move |tx: &mut Tx<'_>| -> Result<RunRecord, Abort<Refusal>> {
                    let Some(mut run) = get_run(tx, &key)? else {
                        return refuse(Refusal::UnknownRun);
                    };
                    load_members(tx, &mut run)?;
                    let before = run.state();
                    let outcome = if accept {
                        run.accept(&scientist, Some(&reason), now)
                    } else {
                        run.reject(&scientist, &reason, now)
                    };
                    outcome.map_err(|e| Abort::Domain(Refusal::Decision(e)))?;
                    put_run(tx, Some(before), &run)?;
                    let who: String = format!("user:{scientist}").chars().take(64).collect();
                    let (action, after) = if accept {
                        (
                            "run_accepted",
                            format!(
                                "{}; sha256 {}",
                                crate::domain::runs::MEANING_ACCEPTED,
                                run.content_sha256()
                            ),
                        )
                    } else {
                        (
                            "run_rejected",
                            format!("rejected: {reason}; sha256 {}", run.content_sha256()),
                        )
                    };
                    tx.audit(
                        AuditEntry::new(now, who.clone(), action, key.as_str())
                            .before(before.key())
                            .after(after),
                    )?;
                    let rejected = (!accept).then_some((reason.as_str(), scientist.as_str()));
                    apply_to_specimens(
                        tx, &run, rejected, &who, &profiles, &default, &lifecycle, now,
                    )?;
                    Ok(run)
                },
            )
            .await;
        let run = r.map_err(RunsError::from)?;
        if !accept {
            crate::core::telemetry::emit(crate::custody::events::RunRejected { run: &run.key });
        }
        Ok(run)
    }

    /// A certifying scientist marks result `result` of a specimen not reportable (audited; the
    /// reason stays in the record).
    pub async fn mark_not_reportable(
        &self,
        specimen_id: &str,
        result: usize,
        scientist: &str,
        reason: &str,
    ) -> Result<&'static str, RunsError> {
        let now = self.clock.now_ms();
        let (id, scientist) = (specimen_id.to_string(), scientist.to_string());
        let reason = clean(reason);
        let (profiles, default, lifecycle) = (
            self.profiles.clone(),
            self.default_profile.clone(),
            self.lifecycle.clone(),
        );
        let r = self
            .committer
            .submit(
                move |tx: &mut Tx<'_>| -> Result<&'static str, Abort<Refusal>> {
                    let Some(mut rec) = crate::custody::records::get_specimen(tx, &id)? else {
                        return refuse(Refusal::UnknownSpecimen);
                    };
                    let before = Indexed::of(&rec);
                    rec.mark_not_reportable(result, &reason, &scientist, &profiles, &default, now)
                        .map_err(|e| Abort::Domain(Refusal::Change(e)))?;
                    crate::custody::lifecycle::after_change(&mut rec, &lifecycle);
                    put_specimen(tx, Some(before), &rec)?;
                    let who: String = format!("user:{scientist}").chars().take(64).collect();
                    tx.audit(
                        AuditEntry::new(now, who, "result_not_reportable", id.as_str())
                            .before(before.state().key())
                            .after(format!("{}; result #{result}", rec.state.key())),
                    )?;
                    Ok(rec.state.key())
                },
            )
            .await;
        r.map_err(RunsError::from)
    }

    /// A certifying scientist asks for a retest of `tests` with a reason: the specimen waits
    /// for a counting result of each (audited; the request stays in the record).
    pub async fn retest(
        &self,
        specimen_id: &str,
        tests: Vec<String>,
        scientist: &str,
        reason: &str,
    ) -> Result<&'static str, RunsError> {
        let now = self.clock.now_ms();
        let (id, scientist) = (specimen_id.to_string(), scientist.to_string());
        let reason = clean(reason);
        let tests: Vec<String> = tests
            .iter()
            .map(|t| clean(t))
            .filter(|t| !t.is_empty())
            .collect();
        let (profiles, default, lifecycle) = (
            self.profiles.clone(),
            self.default_profile.clone(),
            self.lifecycle.clone(),
        );
        let r = self
            .committer
            .submit(
                move |tx: &mut Tx<'_>| -> Result<&'static str, Abort<Refusal>> {
                    let Some(mut rec) = crate::custody::records::get_specimen(tx, &id)? else {
                        return refuse(Refusal::UnknownSpecimen);
                    };
                    let before = Indexed::of(&rec);
                    rec.request_retest(
                        tests.clone(),
                        &reason,
                        &scientist,
                        &profiles,
                        &default,
                        now,
                    )
                    .map_err(|e| Abort::Domain(Refusal::Change(e)))?;
                    crate::custody::lifecycle::after_change(&mut rec, &lifecycle);
                    put_specimen(tx, Some(before), &rec)?;
                    let who: String = format!("user:{scientist}").chars().take(64).collect();
                    let named = if tests.is_empty() {
                        "any test".to_string()
                    } else {
                        tests.join(",")
                    };
                    tx.audit(
                        AuditEntry::new(now, who, "retest_requested", id.as_str())
                            .before(before.state().key())
                            .after(format!(
                                "{}; tests {}; reason: {reason}",
                                rec.state.key(),
                                named.chars().take(200).collect::<String>()
                            )),
                    )?;
                    Ok(rec.state.key())
                },
            )
            .await;
        r.map_err(RunsError::from)
    }
}

fn clean(t: &str) -> String {
    t.chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect::<String>()
        .trim()
        .to_string()
}

/// The runs in `state`, newest first as stored (key order).
pub fn list(store: &Store, state: RunState) -> Result<Vec<RunRecord>, StoreError> {
    let mut out = Vec::new();
    for key in store.ids_in_state(&run_state_index(state.key()))? {
        if let Some(mut r) = store.get::<RunRecord>(Keyspace::Runs, &run_record_key(&key))? {
            store_load_qc(store, &mut r)?;
            out.push(r);
        }
    }
    Ok(out)
}

/// [`load_qc`] outside a transaction.
fn store_load_qc(store: &Store, run: &mut RunRecord) -> Result<(), StoreError> {
    if run.has_qc() {
        return Ok(());
    }
    let part = store.get(Keyspace::Runs, &run_qc_key(&run.key))?;
    set_stored_qc(run, part)
}

/// One run.
pub fn show(store: &Store, key: &str) -> Result<Option<RunRecord>, StoreError> {
    let Some(mut run) = store.get::<RunRecord>(Keyspace::Runs, &run_record_key(key))? else {
        return Ok(None);
    };
    store_load_qc(store, &mut run)?;
    if !run.has_all_members() {
        let members = store
            .scan_prefix::<RunSpecimen>(Keyspace::Runs, &run_member_prefix(&run.key))
            .map(|item| item.map(|(_, m)| m))
            .collect::<Result<Vec<_>, _>>()?;
        run.set_members(members);
    }
    Ok(Some(run))
}

/// The fingerprint of what a message means: its sample, run id, role and every result,
/// order-independent; a retransmission with another MSH-7 or segment order is the same message.
pub fn fingerprint(sample_id: &str, run_id: Option<&str>, items: Vec<String>) -> String {
    use sha2::Digest;
    let mut items = items;
    items.sort();
    let mut h = sha2::Sha256::new();
    h.update(sample_id.as_bytes());
    h.update(b"\n");
    h.update(run_id.unwrap_or("").as_bytes());
    for i in items {
        h.update(b"\n");
        h.update(i.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's rules and QC are written apart from its record, once when it opens and again
    /// only when QC arrives; a specimen's message reads and writes the record alone, and every
    /// read that judges or shows the run loads them. A record whose QC is missing is an error,
    /// never a run without rules.
    #[test]
    fn a_run_s_qc_is_stored_apart_and_loaded_where_it_is_judged() {
        use crate::domain::runs::{Expectation, QcValue, SampleRole};
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s")).unwrap();
        let rules = vec![QcRule {
            code: "COC300".into(),
            sample: "QC-NEG".into(),
            level: "negative".into(),
            role: SampleRole::default(),
            expect: Expectation::Below,
            value: Some(rust_decimal::Decimal::from(300)),
            tolerance_percent: None,
        }];
        let mut run = RunRecord::open(
            "chem",
            "B1",
            RunKind::Initial,
            Delimiting::Bracketing,
            rules.clone(),
            true,
            1,
        );
        run.add_qc(vec![QcResult {
            sample: "QC-NEG".into(),
            role: SampleRole::default(),
            code: "COC300".into(),
            value: QcValue::Number(rust_decimal::Decimal::from(10)),
            reference: "m1".into(),
            received_at_ms: 1,
            event: 0,
        }]);
        let write = |run: RunRecord, before: Option<RunState>| {
            store
                .transact(|tx| {
                    put_run(tx, before, &run)?;
                    Ok::<_, Abort<()>>(())
                })
                .unwrap();
        };
        write(run.clone(), None);
        let stored: RunRecord = store
            .get(Keyspace::Runs, &run_record_key(&run.key))
            .unwrap()
            .unwrap();
        assert!(
            stored.rules.is_empty() && stored.qc.is_empty(),
            "{stored:?}"
        );
        let part: RunQc = store
            .get(Keyspace::Runs, &run_qc_key(&run.key))
            .unwrap()
            .unwrap();
        assert_eq!((part.rules, part.qc.len()), (rules.clone(), 1));

        // A specimen's message: the header alone, written back without its QC.
        let mut header = store
            .transact(|tx| Ok::<_, Abort<()>>(get_run_header(tx, &run.key)?))
            .unwrap()
            .unwrap();
        assert!(!header.has_qc());
        header.add_member(None, "S1", &["COC300".into()], false);
        write(header, Some(RunState::Open));
        let part: RunQc = store
            .get(Keyspace::Runs, &run_qc_key(&run.key))
            .unwrap()
            .unwrap();
        assert_eq!(part.qc.len(), 1, "the QC part is as it was");

        // Every read that judges or shows the run has its QC.
        let full = store
            .transact(|tx| Ok::<_, Abort<()>>(get_run(tx, &run.key)?))
            .unwrap()
            .unwrap();
        assert!(full.has_qc());
        assert_eq!(
            (full.rules.clone(), full.qc.len(), full.specimen_count),
            (rules.clone(), 1, 1)
        );
        let shown = show(&store, &run.key).unwrap().unwrap();
        assert_eq!((shown.rules.clone(), shown.qc.len()), (rules.clone(), 1));
        assert_eq!(shown.specimen_count, 1);
        assert_eq!(list(&store, RunState::Open).unwrap()[0].rules, rules);

        // Its QC lost: an error naming the run, never a run judged without rules.
        store
            .transact(|tx| {
                tx.remove(Keyspace::Runs, &run_qc_key(&run.key))?;
                Ok::<_, Abort<()>>(())
            })
            .unwrap();
        let e = store
            .transact(|tx| Ok::<_, Abort<()>>(get_run(tx, &run.key)?))
            .unwrap_err();
        assert!(
            format!("{e:?}").contains("chem:B1: its QC record is missing"),
            "{e:?}"
        );
        let e = show(&store, &run.key).unwrap_err();
        assert!(e.to_string().contains("its QC record is missing"), "{e}");
    }

    /// The noted last arrival is rewritten once it is a minute old (or the clock went back),
    /// not on every message.
    #[test]
    fn a_source_s_last_arrival_is_noted_to_the_minute() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s")).unwrap();
        let note = |now: u64| {
            store
                .transact(|tx| {
                    note_arrival(tx, "chem", now)?;
                    Ok::<_, Abort<()>>(())
                })
                .unwrap();
            store
                .meta_number(&crate::store::last_arrival_number("chem"))
                .unwrap()
                .unwrap()
        };
        assert_eq!(note(100_000), 100_000);
        assert_eq!(note(100_000 + LAST_ARRIVAL_PRECISION_MS - 1), 100_000);
        assert_eq!(
            note(100_000 + LAST_ARRIVAL_PRECISION_MS),
            100_000 + LAST_ARRIVAL_PRECISION_MS
        );
        assert_eq!(note(50_000), 50_000, "a clock set back is followed");
    }
}
