//! The one path by which custody writes a specimen record, and the indexes it owns (the habit
//! of garage's table `updated` hook): the record itself, its entry in the by-state index, its
//! clocks in the due index (the correction window and the retention period the record says are
//! scheduled) and its entry in the discardable list, all in the caller's transaction and all
//! derived from the record as it was ([`Indexed`], taken before the change) and as it is now.
//! Callers change the record; none of them touches an index.

use crate::domain::lifecycle::ClockKind;
use crate::domain::specimen::{SpecimenRecord, State};
use crate::store::{Keyspace, Tx, TxError, due_key, state_key};
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
        }
        None => tx.put(Keyspace::ByState, &state_key(now.state.key(), id)?, &())?,
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
    tx.put(Keyspace::Specimens, id.as_bytes(), rec)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::calendar::{CorrectionWindow, Date};
    use crate::domain::lifecycle::CorrectionClock;
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
        let stored: SpecimenRecord = store.get(Keyspace::Specimens, b"S-1").unwrap().unwrap();
        assert_eq!(stored, rec);
    }
}
