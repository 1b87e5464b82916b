//! The quarantine of refused inputs (see [`QuarantineRecord`]): bounded and viewable.
//!
//! Every refused frame or document is kept raw with its reason, but not forever and not without
//! bound: a sweep (at start and every `[quarantine] sweep_interval_secs`) drops the records older
//! than `max_age_days`, then the oldest ones while more than `max_records` are kept or their raw
//! bytes exceed `max_bytes`. Never silently: what a sweep drops is removed in one transaction
//! with one `quarantine_pruned` audit entry (counts and bytes, no content), and counted on
//! `custodian_quarantine_dropped_total` by reason once durable.
//!
//! Operators see the list (id, source, time, reason, size; never the bytes) and one record;
//! the raw bytes (which carry donor data) go only to the operator role, and every read of a
//! record is audited before it is answered.

use crate::custody::intake::QuarantineRecord;
use crate::store::{Abort, AuditEntry, CommitError, GroupCommitter, Keyspace, Store, Tx};
use serde::Serialize;

/// The bounds of the quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_records: u64,
    pub max_age_ms: u64,
    pub max_bytes: u64,
}

/// What one sweep dropped, by the bound that dropped it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub by_age: u64,
    pub by_records: u64,
    pub by_bytes: u64,
    /// Raw bytes dropped.
    pub bytes: u64,
    /// Records and raw bytes kept after the sweep.
    pub kept: u64,
    pub kept_bytes: u64,
}

impl Pruned {
    pub fn dropped(&self) -> u64 {
        self.by_age + self.by_records + self.by_bytes
    }
}

/// One record's place in the keyspace: its key, when it was quarantined, its raw size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub key: Vec<u8>,
    pub at_ms: u64,
    pub size: u64,
}

/// The id an operator names a record by: the hex of its key (time, then a hash).
pub fn id_of(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_of(id: &str) -> Option<Vec<u8>> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..16)
        .map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).ok())
        .collect()
}

fn time_of(key: &[u8]) -> u64 {
    key.get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// Which of `slots` (oldest first, as the keyspace orders them) a sweep at `now_ms` drops.
pub fn plan(slots: &[Slot], limits: &Limits, now_ms: u64) -> (Vec<Vec<u8>>, Pruned) {
    let mut p = Pruned::default();
    let mut drop = Vec::new();
    let mut kept: u64 = slots.len() as u64;
    let mut bytes: u64 = slots.iter().map(|s| s.size).sum();
    for s in slots {
        let (reason, over) = if now_ms.saturating_sub(s.at_ms) > limits.max_age_ms {
            (&mut p.by_age, true)
        } else if kept > limits.max_records {
            (&mut p.by_records, true)
        } else if bytes > limits.max_bytes {
            (&mut p.by_bytes, true)
        } else {
            (&mut p.by_age, false)
        };
        if !over {
            // Oldest first: nothing after this one is older, and the counts are within bounds.
            break;
        }
        *reason += 1;
        kept -= 1;
        bytes -= s.size;
        p.bytes += s.size;
        drop.push(s.key.clone());
    }
    p.kept = kept;
    p.kept_bytes = bytes;
    (drop, p)
}

/// The keyspace's records as slots, oldest first.
pub fn slots(store: &Store) -> Result<Vec<Slot>, String> {
    let mut out = Vec::new();
    for item in store.iter::<QuarantineRecord>(Keyspace::Quarantine) {
        let (key, r) = item.map_err(|e| e.to_string())?;
        out.push(Slot {
            at_ms: time_of(&key),
            key,
            size: r.raw.len() as u64,
        });
    }
    Ok(out)
}

/// One sweep: drops what is over a bound in one transaction with one audit entry.
pub async fn prune(
    committer: &GroupCommitter,
    limits: &Limits,
    now_ms: u64,
) -> Result<Pruned, String> {
    // Read on a blocking thread (see the lifecycle sweep): the runtime's threads stay free.
    let store = committer.store().clone();
    let all = tokio::task::spawn_blocking(move || slots(&store))
        .await
        .map_err(|_| "the quarantine's read did not finish".to_string())??;
    let (drop, pruned) = plan(&all, limits, now_ms);
    if drop.is_empty() {
        return Ok(pruned);
    }
    let limits = *limits;
    committer
        .submit(move |tx: &mut Tx<'_>| -> Result<(), Abort<String>> {
            for k in &drop {
                tx.remove(Keyspace::Quarantine, k)?;
            }
            tx.audit(
                AuditEntry::new(
                    now_ms,
                    "system:quarantine",
                    "quarantine_pruned",
                    "quarantine",
                )
                .before(format!(
                    "{} records, {} bytes",
                    pruned.kept + pruned.dropped(),
                    pruned.kept_bytes + pruned.bytes
                ))
                .after(format!(
                    "dropped {} records, {} bytes (older than {} days: {}, over max_records \
                         {}: {}, over max_bytes {}: {}); kept {} records, {} bytes",
                    pruned.dropped(),
                    pruned.bytes,
                    limits.max_age_ms / 86_400_000,
                    pruned.by_age,
                    limits.max_records,
                    pruned.by_records,
                    limits.max_bytes,
                    pruned.by_bytes,
                    pruned.kept,
                    pruned.kept_bytes
                )),
            )?;
            Ok(())
        })
        .await
        .map_err(|e| match e {
            CommitError::Aborted(e) => e,
            other => other.to_string(),
        })?;
    for (reason, n) in [
        ("age", pruned.by_age),
        ("records", pruned.by_records),
        ("bytes", pruned.by_bytes),
    ] {
        if n > 0 {
            crate::core::telemetry::emit(crate::custody::events::QuarantineDropped {
                reason,
                count: n,
            });
        }
    }
    Ok(pruned)
}

/// Sweeps at once and then every `interval` until `shutdown`.
pub async fn run(
    committer: GroupCommitter,
    limits: Limits,
    clock: std::sync::Arc<dyn crate::core::clock::Clock>,
    interval: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        match prune(&committer, &limits, clock.now_ms()).await {
            Ok(p) if p.dropped() > 0 => tracing::info!(
                component = "quarantine",
                dropped = p.dropped(),
                bytes = p.bytes,
                kept = p.kept,
                "quarantine pruned"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(component = "quarantine", error = %e, "quarantine sweep failed")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One record as the list shows it: never its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    pub id: String,
    pub source: String,
    pub received_at: String,
    pub reason: String,
    pub size: u64,
}

fn listed(key: &[u8], r: &QuarantineRecord) -> Listed {
    Listed {
        id: id_of(key),
        source: r.source.clone(),
        received_at: crate::core::clock::rfc3339(r.received_at_ms),
        reason: r.reason.clone(),
        size: r.raw.len() as u64,
    }
}

/// The records, oldest first, optionally of one source (`analyzer:NAME`, `NAME` or `lims`).
pub fn list(store: &Store, source: Option<&str>) -> Result<Vec<Listed>, String> {
    let mut out = Vec::new();
    for item in store.iter::<QuarantineRecord>(Keyspace::Quarantine) {
        let (key, r) = item.map_err(|e| e.to_string())?;
        let keep = match source {
            None => true,
            Some(s) => r.source == s || r.source.strip_prefix("analyzer:") == Some(s),
        };
        if keep {
            out.push(listed(&key, &r));
        }
    }
    Ok(out)
}

/// Why a record could not be shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShowError {
    #[error("no such quarantine record")]
    NotFound,
    #[error("the read could not be audited durably; not shown: {0}")]
    NotDurable(String),
    #[error("{0}")]
    Store(String),
}

impl ShowError {
    pub fn status(&self) -> u16 {
        match self {
            ShowError::NotFound => 404,
            ShowError::NotDurable(_) => 503,
            ShowError::Store(_) => 500,
        }
    }
}

/// One record: what the list shows, its reference, and the raw bytes (base64) when
/// `with_raw` (the operator role). The read is audited (who, which record, whether the bytes
/// were given) and durable before anything is answered.
pub async fn show(
    committer: &GroupCommitter,
    id: &str,
    reader: &str,
    with_raw: bool,
    now_ms: u64,
) -> Result<serde_json::Value, ShowError> {
    use base64::Engine;
    let key = key_of(id).ok_or(ShowError::NotFound)?;
    let record: QuarantineRecord = committer
        .store()
        .get(Keyspace::Quarantine, &key)
        .map_err(|e| ShowError::Store(e.to_string()))?
        .ok_or(ShowError::NotFound)?;
    let actor: String = format!("user:{reader}").chars().take(64).collect();
    let subject = id_of(&key);
    committer
        .submit(move |tx: &mut Tx<'_>| -> Result<(), Abort<String>> {
            tx.audit(
                AuditEntry::new(now_ms, actor.clone(), "quarantine_read", subject.clone()).after(
                    if with_raw {
                        "raw bytes shown"
                    } else {
                        "metadata shown"
                    },
                ),
            )?;
            Ok(())
        })
        .await
        .map_err(|e| ShowError::NotDurable(e.to_string()))?;
    let mut v = serde_json::to_value(listed(&key, &record)).unwrap_or_default();
    v["reference"] = serde_json::json!(record.reference);
    if with_raw {
        v["raw_base64"] =
            serde_json::json!(base64::engine::general_purpose::STANDARD.encode(&record.raw));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(n: u8, at_ms: u64, size: u64) -> Slot {
        let mut key = at_ms.to_be_bytes().to_vec();
        key.extend_from_slice(&[n; 8]);
        Slot { key, at_ms, size }
    }

    const DAY: u64 = 86_400_000;

    #[test]
    fn plan_drops_by_age_then_count_then_bytes_oldest_first() {
        let limits = Limits {
            max_records: 3,
            max_age_ms: 10 * DAY,
            max_bytes: 250,
        };
        let slots = vec![
            slot(1, DAY, 10),
            slot(2, 2 * DAY, 10),
            slot(3, 15 * DAY, 100),
            slot(4, 16 * DAY, 100),
            slot(5, 17 * DAY, 100),
            slot(6, 18 * DAY, 100),
        ];
        let (drop, p) = plan(&slots, &limits, 20 * DAY);
        // 1 and 2 are older than 10 days; of 4 left, one over max_records; 300 > 250 drops one.
        assert_eq!(
            drop,
            vec![
                slots[0].key.clone(),
                slots[1].key.clone(),
                slots[2].key.clone(),
                slots[3].key.clone()
            ]
        );
        assert_eq!((p.by_age, p.by_records, p.by_bytes), (2, 1, 1));
        assert_eq!((p.kept, p.kept_bytes, p.bytes), (2, 200, 220));
        // Within bounds: nothing.
        let (drop, p) = plan(&slots[4..], &limits, 20 * DAY);
        assert!(drop.is_empty());
        assert_eq!(p.dropped(), 0);
    }

    /// Records quarantined through custody at manual-clock times; a sweep later drops what is
    /// too old and the oldest over the count, in one audit entry; the list and show follow.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sweep_prunes_by_the_manual_clock_and_audits_once() {
        use crate::core::clock::{Clock, ManualClock};
        use crate::custody::Custody;
        use crate::store::GroupConfig;
        use std::sync::Arc;
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        let committer = GroupCommitter::start(store.clone(), GroupConfig::default()).unwrap();
        let clock = ManualClock::new(100 * DAY);
        let custody = Custody::new(
            committer.clone(),
            Arc::new(crate::domain::rules::ProfileSet::new()),
            "part40-2001",
            Arc::new(clock.clone()),
        );
        for (i, source) in [
            "analyzer:chem-1",
            "lims",
            "analyzer:chem-1",
            "analyzer:gc-1",
        ]
        .iter()
        .enumerate()
        {
            custody
                .quarantine(QuarantineRecord {
                    source: source.to_string(),
                    reference: Some(format!("REF-{i}")),
                    reason: format!("MSH-9: not an ORU ({i})"),
                    received_at_ms: clock.now_ms(),
                    raw: vec![b'x'; 10 * (i + 1)],
                })
                .await
                .unwrap();
            clock.advance_ms(DAY);
        }
        let listed = list(&store, None).unwrap();
        assert_eq!(listed.len(), 4);
        assert_eq!(listed[0].size, 10);
        assert_eq!(list(&store, Some("chem-1")).unwrap().len(), 2);
        assert_eq!(list(&store, Some("lims")).unwrap().len(), 1);
        let text = serde_json::to_string(&listed).unwrap();
        assert!(!text.contains("xxxx"), "no raw bytes in the list: {text}");

        let limits = Limits {
            max_records: 2,
            max_age_ms: 10 * DAY,
            max_bytes: 1 << 20,
        };
        // Day 104: within age; the two oldest are over max_records.
        let audit_before = store.audit_head().unwrap().seq;
        let p = prune(&committer, &limits, clock.now_ms()).await.unwrap();
        assert_eq!((p.by_age, p.by_records, p.by_bytes), (0, 2, 0));
        let left = list(&store, None).unwrap();
        assert_eq!(
            left.iter().map(|l| l.size).collect::<Vec<_>>(),
            vec![30, 40],
            "the oldest went first"
        );
        let entries: Vec<_> = store
            .audit_entries(audit_before + 1)
            .map(|e| e.unwrap().1.entry)
            .collect();
        assert_eq!(entries.len(), 1, "one entry per sweep: {entries:?}");
        assert_eq!(entries[0].action, "quarantine_pruned");
        assert!(
            entries[0]
                .after
                .as_ref()
                .unwrap()
                .contains("dropped 2 records")
        );
        // Nothing more to do: no entry.
        let p = prune(&committer, &limits, clock.now_ms()).await.unwrap();
        assert_eq!(p.dropped(), 0);
        assert_eq!(store.audit_head().unwrap().seq, audit_before + 1);

        // Show: audited, the bytes only when asked for (the operator role).
        let id = &left[0].id;
        let v = show(&committer, id, "Viewer", false, clock.now_ms())
            .await
            .unwrap();
        assert!(v.get("raw_base64").is_none(), "{v}");
        assert_eq!(v["reference"], "REF-2");
        let v = show(&committer, id, "Operator", true, clock.now_ms())
            .await
            .unwrap();
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["raw_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(raw, vec![b'x'; 30]);
        let reads: Vec<_> = store
            .audit_entries(audit_before + 2)
            .map(|e| e.unwrap().1.entry)
            .collect();
        assert_eq!(reads.len(), 2);
        assert!(
            reads
                .iter()
                .all(|e| e.action == "quarantine_read" && e.subject == *id)
        );
        assert_eq!(reads[1].actor, "user:Operator");
        assert_eq!(
            show(&committer, &"0".repeat(32), "Operator", true, 0)
                .await
                .unwrap_err(),
            ShowError::NotFound
        );

        // Day 120: the rest is older than 10 days.
        clock.advance_ms(16 * DAY);
        let p = prune(&committer, &limits, clock.now_ms()).await.unwrap();
        assert_eq!((p.by_age, p.kept), (2, 0));
        assert!(list(&store, None).unwrap().is_empty());
        assert!(store.verify_audit().is_ok());
        committer.shutdown().await;
    }

    #[test]
    fn ids_round_trip_and_junk_is_not_found() {
        let s = slot(9, 12345, 1);
        assert_eq!(key_of(&id_of(&s.key)), Some(s.key.clone()));
        assert_eq!(key_of("zz"), None);
        assert_eq!(key_of(&"g".repeat(32)), None);
    }
}
