//! The one path by which custody writes a specimen record, and the indexes it owns (the habit
//! of garage's table `updated` hook): the record itself, its entry in the by-state index, its
//! clocks in the due index (the correction window and the retention period the record says are
//! scheduled) and its entry in the discardable list, all in the caller's transaction and all
//! derived from the record as it was ([`Indexed`], taken before the change) and as it is now.
//! Callers change the record; none of them touches an index.
//!
//! **Layout (store format 2).** A specimen's results live in keys of their own
//! (`results`: specimen ID + batch number), appended per arrival: a message adds one small key
//! and the record is written without them, so a specimen with 40 messages does not rewrite 40
//! messages' results on each. [`get_specimen`] and [`read_specimen`] put them back; a record
//! read otherwise refuses to be judged (`ChangeError::ResultsNotLoaded`). A record of format 1
//! (results inline) is read as it is and moves its results into keys at its next write;
//! [`migrate_layout`] moves every one at the first start, then records format 2.
//!
//! **Counts by state.** The same path keeps the number of specimens in each state in store
//! counters ([`state_counts`]), so the metrics sampler reads seven numbers instead of walking
//! every specimen of a two-year store. A store written before the counters counts its states
//! once, at its first start ([`ensure_state_counts`]).

use crate::domain::lifecycle::ClockKind;
use crate::domain::results::{RESULT_BATCH_VERSION, ResultBatch};
use crate::domain::specimen::{SpecimenRecord, State};
use crate::store::{
    AuditEntry, Keyspace, Store, StoreError, Tx, TxError, due_key, result_batch_key, state_key,
};
use serde::{Deserialize, Serialize};

/// The pseudo-state under which the `by_state` index lists specimens with something the
/// laboratory may discard (kept apart from the real states, which never contain `:`).
pub const DISCARDABLE_INDEX: &str = "lifecycle:discardable";

/// The value of a `due` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueItem {
    pub kind: ClockKind,
    pub specimen_id: String,
}

/// The `due` key of a clock.
pub fn due_entry_key(at_ms: u64, kind: ClockKind, specimen_id: &str) -> Vec<u8> {
    let mut id = Vec::with_capacity(kind.key().len() + 1 + specimen_id.len());
    id.extend_from_slice(kind.key().as_bytes());
    id.push(0);
    id.extend_from_slice(specimen_id.as_bytes());
    due_key(at_ms, &id)
}

/// The store number ([`Store::meta_number`]) counting the specimens in `state`.
fn state_counter(state: State) -> String {
    format!("specimens_in_state:{}", state.key())
}

/// Set once the counters of [`state_counter`] were taken from the index: from then on they are
/// kept by [`put_specimen`].
const STATE_COUNTS_TAKEN: &str = "specimens_in_state:counted";

/// The number of specimens in each state (in [`State::ALL`]'s order), from the store's
/// counters; `None` if the store has not counted them yet (see [`ensure_state_counts`]).
pub fn state_counts(store: &Store) -> Result<Option<Vec<(State, u64)>>, StoreError> {
    if store.meta_number(STATE_COUNTS_TAKEN)?.is_none() {
        return Ok(None);
    }
    State::ALL
        .iter()
        .map(|&st| Ok((st, store.meta_number(&state_counter(st))?.unwrap_or(0))))
        .collect::<Result<Vec<_>, StoreError>>()
        .map(Some)
}

/// Counts the specimens in each state from the `by_state` index once, if the store has not
/// done it before (a store written by an earlier version, or a new one); whether it counted.
/// Call before anything writes specimens (the daemon does at start): the count and the write of
/// the counters must see the same index.
pub fn ensure_state_counts(store: &Store) -> Result<bool, StoreError> {
    if store.meta_number(STATE_COUNTS_TAKEN)?.is_some() {
        return Ok(false);
    }
    let mut counts = Vec::with_capacity(State::ALL.len());
    for st in State::ALL {
        let prefix = crate::store::state_prefix(st.key())?;
        counts.push((st, store.count_prefix(Keyspace::ByState, &prefix)? as u64));
    }
    store
        .transact(|tx| -> Result<(), crate::store::Abort<()>> {
            for (st, n) in &counts {
                tx.set_meta_number(&state_counter(*st), *n)?;
            }
            tx.set_meta_number(STATE_COUNTS_TAKEN, 1)?;
            Ok(())
        })
        .map_err(|e| store_error(e, "counting the states"))?;
    Ok(true)
}

/// The store's error of a transaction that never aborts on its own (`what` names it).
fn store_error(e: crate::store::TransactError<()>, what: &str) -> StoreError {
    match e {
        crate::store::TransactError::Store(e) => e,
        crate::store::TransactError::Aborted(()) => StoreError::Invalid(format!("{what} aborted")),
    }
}

/// What the indexes of a stored record say, taken before a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Indexed {
    state: State,
    correction_due_ms: Option<u64>,
    retention_due_ms: Option<u64>,
}

impl Indexed {
    /// The index view of `rec` as stored.
    pub fn of(rec: &SpecimenRecord) -> Indexed {
        Indexed {
            state: rec.state,
            correction_due_ms: rec.lifecycle.correction.as_ref().and_then(|c| c.due_at_ms),
            retention_due_ms: rec.lifecycle.retention_due_ms,
        }
    }

    /// The state the record had.
    pub fn state(&self) -> State {
        self.state
    }
}

/// Moves a clock's entry in the due index from `old` to `new` (either may be absent).
fn move_due(
    tx: &mut Tx<'_>,
    kind: ClockKind,
    specimen_id: &str,
    old: Option<u64>,
    new: Option<u64>,
) -> Result<(), TxError> {
    if old == new {
        return Ok(());
    }
    if let Some(o) = old {
        tx.remove(Keyspace::Due, &due_entry_key(o, kind, specimen_id))?;
    }
    if let Some(n) = new {
        tx.put(
            Keyspace::Due,
            &due_entry_key(n, kind, specimen_id),
            &DueItem {
                kind,
                specimen_id: specimen_id.to_string(),
            },
        )?;
    }
    Ok(())
}

/// Writes `rec` (stored before as `before`, or new) with every index that follows from it.
pub fn put_specimen(
    tx: &mut Tx<'_>,
    before: Option<Indexed>,
    rec: &SpecimenRecord,
) -> Result<(), TxError> {
    let id = rec.specimen_id.as_str();
    let now = Indexed::of(rec);
    // The state index changes only when the state does.
    match before {
        Some(b) if b.state == now.state => {}
        Some(b) => {
            tx.remove(Keyspace::ByState, &state_key(b.state.key(), id)?)?;
            tx.put(Keyspace::ByState, &state_key(now.state.key(), id)?, &())?;
            tx.add_to_meta_number(&state_counter(b.state), -1)?;
            tx.add_to_meta_number(&state_counter(now.state), 1)?;
        }
        None => {
            tx.put(Keyspace::ByState, &state_key(now.state.key(), id)?, &())?;
            tx.add_to_meta_number(&state_counter(now.state), 1)?;
        }
    }
    let (old_correction, old_retention) = before
        .map(|b| (b.correction_due_ms, b.retention_due_ms))
        .unwrap_or((None, None));
    move_due(
        tx,
        ClockKind::Correction,
        id,
        old_correction,
        now.correction_due_ms,
    )?;
    move_due(
        tx,
        ClockKind::Retention,
        id,
        old_retention,
        now.retention_due_ms,
    )?;
    // A released record is in the discardable list exactly when the lifecycle says something
    // of it may be discarded now (set or cleared each time, so a record written by an earlier
    // version is brought in line on its next write).
    if rec.lifecycle.retention.is_some() {
        let index = state_key(DISCARDABLE_INDEX, id)?;
        if rec.lifecycle.discardable {
            tx.put(Keyspace::ByState, &index, &())?;
        } else {
            tx.remove(Keyspace::ByState, &index)?;
        }
    }
    let stored = stored_form(tx, rec)?;
    tx.put(Keyspace::Specimens, id.as_bytes(), &stored)?;
    Ok(())
}

/// The record as stored: its new results appended as one batch under their own key, the record
/// itself without them (a format-1 record moves all of its results into the first batch).
fn stored_form(tx: &mut Tx<'_>, rec: &SpecimenRecord) -> Result<SpecimenRecord, TxError> {
    let mut keys = rec.result_keys.unwrap_or_default();
    let count = keys.count as usize;
    // Read without its results (the record never reaches this with fewer unless a caller read
    // it raw): the stored batches stand, none is added.
    if rec.results.len() > count {
        let batch = ResultBatch {
            version: RESULT_BATCH_VERSION,
            first: keys.count,
            results: rec.results[count..].to_vec(),
        };
        tx.put(
            Keyspace::Results,
            &result_batch_key(&rec.specimen_id, keys.batches),
            &batch,
        )?;
        keys.batches += 1;
        keys.count = rec.results.len() as u32;
    }
    let mut stored = rec.clone();
    stored.results = Vec::new();
    stored.result_keys = Some(keys);
    Ok(stored)
}

/// Fills a record's results from its batches (a format-1 record has them inline).
fn with_results(
    mut rec: SpecimenRecord,
    mut batch: impl FnMut(u32) -> Result<Option<ResultBatch>, StoreError>,
) -> Result<SpecimenRecord, StoreError> {
    let Some(keys) = rec.result_keys else {
        return Ok(rec);
    };
    let mut results = Vec::with_capacity(keys.count as usize);
    for n in 0..keys.batches {
        let Some(b) = batch(n)? else {
            return Err(StoreError::Invalid(format!(
                "result batch {n} of a specimen record is missing"
            )));
        };
        results.extend(b.results);
    }
    if results.len() != keys.count as usize {
        return Err(StoreError::Invalid(
            "a specimen record's result batches do not hold its result count".into(),
        ));
    }
    rec.results = results;
    Ok(rec)
}

/// A specimen record with its results, in a transaction.
pub fn get_specimen(
    tx: &Tx<'_>,
    specimen_id: impl AsRef<str>,
) -> Result<Option<SpecimenRecord>, TxError> {
    let specimen_id = specimen_id.as_ref();
    let Some(rec) = tx.get::<SpecimenRecord>(Keyspace::Specimens, specimen_id.as_bytes())? else {
        return Ok(None);
    };
    let mut failed = None;
    let filled = with_results(rec, |n| {
        match tx.get::<ResultBatch>(Keyspace::Results, &result_batch_key(specimen_id, n)) {
            Ok(b) => Ok(b),
            Err(e) => {
                let text = e.to_string();
                failed = Some(e);
                Err(StoreError::Invalid(text))
            }
        }
    });
    match (filled, failed) {
        (_, Some(e)) => Err(e),
        (Ok(r), None) => Ok(Some(r)),
        (Err(e), None) => Err(TxError::from(e)),
    }
}

/// A specimen record with its results, read from the store (outside a transaction).
pub fn read_specimen(
    store: &Store,
    specimen_id: &str,
) -> Result<Option<SpecimenRecord>, StoreError> {
    let Some(rec) = store.get::<SpecimenRecord>(Keyspace::Specimens, specimen_id.as_bytes())?
    else {
        return Ok(None);
    };
    with_results(rec, |n| {
        store.get::<ResultBatch>(Keyspace::Results, &result_batch_key(specimen_id, n))
    })
    .map(Some)
}

/// How many specimen records one migration transaction moves.
const MIGRATION_CHUNK: usize = 256;

/// Migrates a store of format 1 (results inside each specimen record) in place: every record's
/// results move into keys of their own (as JSON: fields this build does not know are kept),
/// chunk by chunk (a crash mid-way resumes at the next
/// start: a moved record is skipped), then one transaction records format 2 with an audit entry
/// (`store_migrated`, the number of records moved). Each step is made durable. Returns the
/// number of records moved (0 for a store already of format 2).
pub fn migrate_layout(store: &Store, now_ms: u64) -> Result<usize, StoreError> {
    if store.format_version()? != crate::store::MIGRATES_FROM {
        return Ok(0);
    }
    // Records are moved as JSON, so nothing of a record this build does not know is lost.
    let mut ids = Vec::new();
    for item in store.iter::<serde_json::Value>(Keyspace::Specimens) {
        let (key, rec) = item?;
        if rec.get("result_keys").is_none() {
            ids.push(String::from_utf8_lossy(&key).into_owned());
        }
    }
    for chunk in ids.chunks(MIGRATION_CHUNK) {
        store
            .transact(|tx| -> Result<(), crate::store::Abort<()>> {
                for id in chunk {
                    let Some(mut rec) =
                        tx.get::<serde_json::Value>(Keyspace::Specimens, id.as_bytes())?
                    else {
                        continue;
                    };
                    let Some(obj) = rec.as_object_mut() else {
                        continue;
                    };
                    if obj.contains_key("result_keys") {
                        continue;
                    }
                    let results = match obj.remove("results") {
                        Some(serde_json::Value::Array(a)) => a,
                        _ => Vec::new(),
                    };
                    let count = results.len() as u32;
                    let batches = u32::from(!results.is_empty());
                    if !results.is_empty() {
                        tx.put(
                            Keyspace::Results,
                            &result_batch_key(id, 0),
                            &serde_json::json!({
                                "version": RESULT_BATCH_VERSION,
                                "first": 0,
                                "results": results,
                            }),
                        )?;
                    }
                    obj.insert(
                        "result_keys".into(),
                        serde_json::json!({"batches": batches, "count": count}),
                    );
                    tx.put(Keyspace::Specimens, id.as_bytes(), &rec)?;
                }
                Ok(())
            })
            .map_err(|e| store_error(e, "migration"))?;
        store.flush_durable()?;
    }
    let moved = ids.len();
    store
        .transact(|tx| -> Result<(), crate::store::Abort<()>> {
            tx.audit(
                AuditEntry::new(now_ms, "custodian", "store_migrated", "store")
                    .before(format!("format {}", crate::store::MIGRATES_FROM))
                    .after(format!(
                        "format {}; {moved} specimen record(s): results in keys of their own",
                        crate::store::FORMAT_VERSION
                    )),
            )?;
            tx.set_format_version(crate::store::FORMAT_VERSION)?;
            Ok(())
        })
        .map_err(|e| match e {
            crate::store::TransactError::Store(s) => s,
            crate::store::TransactError::Aborted(()) => {
                StoreError::Invalid("migration aborted".into())
            }
        })?;
    store.flush_durable()?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::calendar::{CorrectionWindow, Date};
    use crate::domain::lifecycle::CorrectionClock;
    use crate::domain::results::ResultKeys;
    use crate::store::{Abort, Store};

    fn write(store: &Store, before: Option<Indexed>, rec: &SpecimenRecord) {
        store
            .transact(|tx| -> Result<(), Abort<()>> {
                put_specimen(tx, before, rec)?;
                Ok(())
            })
            .unwrap();
    }

    fn due(store: &Store) -> Vec<(u64, String)> {
        store
            .iter::<DueItem>(Keyspace::Due)
            .map(|r| {
                let (k, v) = r.unwrap();
                let (at, _) = crate::store::split_due_key(&k).unwrap();
                (at, format!("{}:{}", v.kind.key(), v.specimen_id))
            })
            .collect()
    }

    /// The record's indexes follow the record: state moved, clocks moved, discardable listed
    /// and unlisted, whoever the caller.
    #[test]
    fn every_index_follows_the_record() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s")).unwrap();
        let mut rec = SpecimenRecord::new("S-1", 1);
        write(&store, None, &rec);
        assert_eq!(store.ids_in_state("awaiting_accession").unwrap(), ["S-1"]);

        // Held with a correction window: the state moves and the clock is scheduled.
        let before = Indexed::of(&rec);
        rec.state = State::Held;
        let day = Date::new(2026, 12, 1).unwrap();
        rec.lifecycle.correction = Some(CorrectionClock {
            window: CorrectionWindow {
                started_on: day,
                business_days: 5,
                last_day: day,
            },
            closes_at_ms: 500,
            due_at_ms: Some(500),
            expired_at_ms: None,
        });
        write(&store, Some(before), &rec);
        assert!(store.ids_in_state("awaiting_accession").unwrap().is_empty());
        assert_eq!(store.ids_in_state("held").unwrap(), ["S-1"]);
        assert_eq!(due(&store), [(500, "correction:S-1".to_string())]);

        // Corrected and released: the correction clock goes, the retention clock comes, the
        // specimen is listed as discardable when the lifecycle says so.
        let before = Indexed::of(&rec);
        rec.state = State::Released;
        rec.lifecycle.correction.as_mut().unwrap().due_at_ms = None;
        rec.lifecycle.retention = Some(crate::domain::retention::Retention::new(
            crate::domain::retention::Basis::AfterReport,
            10,
            crate::domain::retention::SplitBottle::Absent,
        ));
        rec.lifecycle.retention_due_ms = Some(900);
        rec.lifecycle.discardable = true;
        write(&store, Some(before), &rec);
        assert_eq!(store.ids_in_state("released").unwrap(), ["S-1"]);
        assert!(store.ids_in_state("held").unwrap().is_empty());
        assert_eq!(due(&store), [(900, "retention:S-1".to_string())]);
        assert_eq!(store.ids_in_state(DISCARDABLE_INDEX).unwrap(), ["S-1"]);

        // Nothing left to discard: unlisted; the clock moves on.
        let before = Indexed::of(&rec);
        rec.lifecycle.discardable = false;
        rec.lifecycle.retention_due_ms = Some(2000);
        write(&store, Some(before), &rec);
        assert!(store.ids_in_state(DISCARDABLE_INDEX).unwrap().is_empty());
        assert_eq!(due(&store), [(2000, "retention:S-1".to_string())]);
        let mut stored = read_specimen(&store, "S-1").unwrap().unwrap();
        assert_eq!(stored.result_keys, Some(ResultKeys::default()));
        stored.result_keys = None;
        assert_eq!(stored, rec);
    }

    /// The counts by state: taken from the index once (a store written before them), then
    /// kept by every write, equal to a walk of the index after every step; a store that has
    /// not counted yet says so.
    #[test]
    fn counts_by_state_are_taken_once_then_kept_with_the_index() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s")).unwrap();
        let walked = |store: &Store| -> Vec<(State, u64)> {
            State::ALL
                .iter()
                .map(|&st| (st, store.ids_in_state(st.key()).unwrap().len() as u64))
                .collect()
        };
        // Written before the store counted: the index holds three, the counters are not taken.
        let mut recs: Vec<SpecimenRecord> = (1..=3)
            .map(|n| SpecimenRecord::new(&format!("S-{n}"), 1))
            .collect();
        for r in &recs {
            write(&store, None, r);
        }
        assert_eq!(state_counts(&store).unwrap(), None);
        assert!(ensure_state_counts(&store).unwrap());
        assert!(!ensure_state_counts(&store).unwrap(), "counted once");
        assert_eq!(state_counts(&store).unwrap().unwrap(), walked(&store));
        let count = |store: &Store, st: State| {
            state_counts(store)
                .unwrap()
                .unwrap()
                .into_iter()
                .find(|(s, _)| *s == st)
                .unwrap()
                .1
        };
        assert_eq!(count(&store, State::AwaitingAccession), 3);

        // Moves, a write that keeps the state, a new specimen: always what the index says.
        for (i, to) in [State::Held, State::Released, State::Released]
            .into_iter()
            .enumerate()
        {
            let before = Indexed::of(&recs[i]);
            recs[i].state = to;
            write(&store, Some(before), &recs[i]);
            assert_eq!(state_counts(&store).unwrap().unwrap(), walked(&store));
        }
        let before = Indexed::of(&recs[1]);
        recs[1].updated_at_ms = 99;
        write(&store, Some(before), &recs[1]);
        write(&store, None, &SpecimenRecord::new("S-4", 2));
        assert_eq!(state_counts(&store).unwrap().unwrap(), walked(&store));
        assert_eq!(count(&store, State::Released), 2);
        assert_eq!(count(&store, State::Held), 1);
        assert_eq!(count(&store, State::AwaitingAccession), 1);

        // A transaction that aborts leaves the counts as they were.
        let before = Indexed::of(&recs[0]);
        let mut moved = recs[0].clone();
        moved.state = State::Released;
        let r = store.transact(|tx| -> Result<(), Abort<()>> {
            put_specimen(tx, Some(before), &moved)?;
            Err(Abort::Domain(()))
        });
        assert!(r.is_err());
        assert_eq!(count(&store, State::Held), 1);
        assert_eq!(state_counts(&store).unwrap().unwrap(), walked(&store));

        // Kept across a reopen.
        drop(store);
        let store = Store::open(&d.path().join("s")).unwrap();
        assert!(!ensure_state_counts(&store).unwrap());
        assert_eq!(state_counts(&store).unwrap().unwrap(), walked(&store));
    }

    fn entry(target: &str, at: u64) -> crate::domain::specimen::ResultEntry {
        crate::domain::specimen::ResultEntry {
            target: target.into(),
            received_at_ms: at,
            ..Default::default()
        }
    }

    /// Results are appended per arrival under keys of their own; the record is written
    /// without them, and read back whole. A record read raw refuses to be judged.
    #[test]
    fn results_are_appended_in_their_own_keys() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s")).unwrap();
        let mut rec = SpecimenRecord::new("S-2", 1);
        rec.results.push(entry("cocaine", 1));
        write(&store, None, &rec);
        let stored = read_specimen(&store, "S-2").unwrap().unwrap();
        assert_eq!(stored.results.len(), 1);
        let before = Indexed::of(&stored);
        let mut rec = stored;
        rec.results.push(entry("pcp", 2));
        rec.results.push(entry("thca", 2));
        write(&store, Some(before), &rec);
        assert_eq!(store.count(Keyspace::Results), 2, "one key per arrival");
        let raw: SpecimenRecord = store.get(Keyspace::Specimens, b"S-2").unwrap().unwrap();
        assert!(
            raw.results.is_empty(),
            "the record is stored without its results"
        );
        assert_eq!(
            raw.result_keys,
            Some(ResultKeys {
                batches: 2,
                count: 3
            })
        );
        let read = read_specimen(&store, "S-2").unwrap().unwrap();
        let targets: Vec<&str> = read.results.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, ["cocaine", "pcp", "thca"]);
        // Written again without new results: no batch is added; read raw: never judged.
        let before = Indexed::of(&read);
        write(&store, Some(before), &read);
        assert_eq!(store.count(Keyspace::Results), 2);
        let mut raw = raw;
        let p = crate::domain::rules::ProfileSet::new();
        assert_eq!(
            raw.reevaluate(&p, "part40-2001"),
            Err(crate::domain::specimen::ChangeError::ResultsNotLoaded)
        );
    }

    /// A format-1 store: records carry their results inline. The migration moves them into
    /// keys, records format 2 with an audit entry, and the audit chain verifies before and
    /// after; a second run moves nothing.
    #[test]
    fn a_format_1_store_is_migrated_in_place() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s")).unwrap();
        store
            .transact(|tx| -> Result<(), crate::store::Abort<()>> {
                for i in 0..300 {
                    let mut rec = SpecimenRecord::new(&format!("S-{i:03}"), 1);
                    rec.results.push(entry("cocaine", 1));
                    rec.results.push(entry("pcp", 1));
                    // A format-1 record: results inline, no result keys.
                    tx.put(Keyspace::Specimens, rec.specimen_id.as_bytes(), &rec)?;
                    tx.audit(AuditEntry::new(
                        1,
                        "lims",
                        "accessioned",
                        rec.specimen_id.as_str(),
                    ))?;
                }
                // A field this build does not know (written by a newer one) survives.
                let mut other = serde_json::to_value(SpecimenRecord::new("S-999", 1)).unwrap();
                other["results"] = serde_json::to_value(vec![entry("thca", 1)]).unwrap();
                other["from_another_build"] = serde_json::json!({"kept": true});
                tx.put(Keyspace::Specimens, b"S-999", &other)?;
                tx.set_format_version(crate::store::MIGRATES_FROM)?;
                Ok(())
            })
            .unwrap();
        assert_eq!(store.verify_audit().unwrap().entries, 300);
        assert_eq!(migrate_layout(&store, 5).unwrap(), 301);
        assert_eq!(
            store.format_version().unwrap(),
            crate::store::FORMAT_VERSION
        );
        assert_eq!(store.verify_audit().unwrap().entries, 301);
        assert_eq!(store.count(Keyspace::Results), 301);
        let kept: serde_json::Value = store.get(Keyspace::Specimens, b"S-999").unwrap().unwrap();
        assert_eq!(kept["from_another_build"]["kept"], true, "{kept}");
        assert!(kept.get("results").is_none());
        assert_eq!(
            read_specimen(&store, "S-999")
                .unwrap()
                .unwrap()
                .results
                .len(),
            1
        );
        let raw: serde_json::Value = store.get(Keyspace::Specimens, b"S-007").unwrap().unwrap();
        assert_eq!(
            raw["result_keys"],
            serde_json::json!({"batches": 1, "count": 2})
        );
        let raw: SpecimenRecord = store.get(Keyspace::Specimens, b"S-042").unwrap().unwrap();
        assert!(raw.results.is_empty());
        let read = read_specimen(&store, "S-042").unwrap().unwrap();
        assert_eq!(read.results.len(), 2);
        assert_eq!(migrate_layout(&store, 6).unwrap(), 0, "done once");
    }
}
