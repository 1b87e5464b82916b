//! The durable outbox: released reports waiting for their MRO, in release order per MRO, and
//! dead letters. Written in the same transaction as the release; emptied only when the MRO's
//! system answered 2xx or 409 and that answer was stored.

use serde::{Deserialize, Serialize};

/// Where a report stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Delivery {
    /// In the outbox.
    Pending,
    /// The MRO's system took it (2xx, or 409 "already have it"); the receipt is kept.
    Delivered {
        at_ms: u64,
        http_status: u16,
        receipt: String,
    },
    /// Refused permanently (4xx other than 409): waits for an operator.
    DeadLetter {
        at_ms: u64,
        http_status: u16,
        reason: String,
    },
}

/// A released, signed report as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReport {
    pub report_id: String,
    pub specimen_id: String,
    /// The MRO directory id named on the CCF: the one and only destination.
    pub mro_id: String,
    /// The compact JWS sent as the body.
    pub jws: String,
    pub kid: String,
    pub content_sha256: String,
    pub released_at_ms: u64,
    pub released_by: String,
    pub delivery: Delivery,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// Set when a corrected report replaced this one: the corrected report's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
}

/// What a release hands to the outbox: a signed report for one MRO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub report_id: String,
    pub specimen_id: String,
    pub mro_id: String,
    pub jws: String,
    pub kid: String,
    pub content_sha256: String,
    pub released_at_ms: u64,
    pub released_by: String,
    pub replaces: Option<String>,
}

/// Stores a signed report as pending and queues it to its MRO, inside the caller's
/// transaction (the release that signed it): both happen, or neither.
/// Why a signed report could not be exported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("no such report")]
    NotFound,
    #[error("the export could not be audited durably; not given: {0}")]
    NotDurable(String),
    #[error("{0}")]
    Store(String),
}

impl ExportError {
    pub fn status(&self) -> u16 {
        match self {
            ExportError::NotFound => 404,
            ExportError::NotDurable(_) => 503,
            ExportError::Store(_) => 500,
        }
    }
}

/// The signed compact JWS of a stored report, exactly as sent to the MRO (so `custodian verify`
/// and the MRO's tools can check it). The report carries donor data: the export is audited
/// (`report_exported`, the reader, the specimen, the report id) and durable before it is given.
pub async fn export_jws(
    committer: &crate::store::GroupCommitter,
    report_id: &str,
    reader: &str,
    now_ms: u64,
) -> Result<String, ExportError> {
    use crate::store::{Abort, AuditEntry, Keyspace, Tx};
    let r: StoredReport = committer
        .store()
        .get(Keyspace::Reports, report_id.as_bytes())
        .map_err(|e| ExportError::Store(e.to_string()))?
        .ok_or(ExportError::NotFound)?;
    let actor: String = format!("user:{reader}").chars().take(64).collect();
    let subject = r.specimen_id.clone();
    let after = format!("report {} exported (signed JWS)", r.report_id);
    committer
        .submit(move |tx: &mut Tx<'_>| -> Result<(), Abort<String>> {
            tx.audit(
                AuditEntry::new(now_ms, actor.clone(), "report_exported", subject.clone())
                    .after(after.clone()),
            )?;
            Ok(())
        })
        .await
        .map_err(|e| ExportError::NotDurable(e.to_string()))?;
    Ok(r.jws)
}

/// The kinds of report, by the first letter of their IDs: `R` results (and their corrections),
/// `U` unsuitable-specimen notices, `P` split outcomes, `Q` quantitation answers, `S` split
/// laboratory reports. Every report ID is `<kind>-<specimen ID>-<suffix>` ([`reports_of`]
/// relies on it; [`enqueue`] checks it in debug builds).
pub const REPORT_ID_KINDS: [char; 5] = ['R', 'U', 'P', 'Q', 'S'];

fn report_id_prefix(kind: char, specimen_id: &str) -> String {
    format!("{kind}-{specimen_id}-")
}

/// The reports of one specimen, by the prefixes of their IDs (a few key range reads, whatever
/// the number of reports in the store). A specimen whose ID extends another's (`S-1`, `S-1-2`)
/// shares the prefix: each report is checked against its own specimen ID.
pub fn reports_of(
    store: &crate::store::Store,
    specimen_id: &str,
) -> Result<Vec<StoredReport>, crate::store::StoreError> {
    use crate::store::Keyspace;
    let mut out = Vec::new();
    for kind in REPORT_ID_KINDS {
        let prefix = report_id_prefix(kind, specimen_id);
        for item in store.scan_prefix::<StoredReport>(Keyspace::Reports, prefix.as_bytes()) {
            let (_, r) = item?;
            if r.specimen_id == specimen_id {
                out.push(r);
            }
        }
    }
    Ok(out)
}

pub fn enqueue(tx: &mut crate::store::Tx<'_>, s: Signed) -> Result<(), crate::store::TxError> {
    use crate::store::Keyspace;
    debug_assert!(
        REPORT_ID_KINDS.iter().any(|k| s
            .report_id
            .starts_with(&report_id_prefix(*k, &s.specimen_id))),
        "report IDs are <kind>-<specimen>-<suffix> (REPORT_ID_KINDS)"
    );
    let key = queue_key(&s.mro_id, s.released_at_ms, &s.report_id);
    let stored = StoredReport {
        report_id: s.report_id,
        specimen_id: s.specimen_id,
        mro_id: s.mro_id,
        jws: s.jws,
        kid: s.kid,
        content_sha256: s.content_sha256,
        released_at_ms: s.released_at_ms,
        released_by: s.released_by,
        delivery: Delivery::Pending,
        attempts: 0,
        last_error: None,
        replaces: s.replaces,
        superseded_by: None,
    };
    tx.put(Keyspace::Reports, stored.report_id.as_bytes(), &stored)?;
    tx.put(Keyspace::Outbox, &key, &stored.report_id)?;
    Ok(())
}

const QUEUE: u8 = b'q';
const DEAD: u8 = b'd';

fn key(kind: u8, mro_id: &str, released_at_ms: u64, report_id: &str) -> Vec<u8> {
    let mut k = vec![kind, 0];
    k.extend_from_slice(mro_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&released_at_ms.to_be_bytes());
    k.extend_from_slice(report_id.as_bytes());
    k
}

/// Key of a queued report: sorts by MRO, then release time.
pub fn queue_key(mro_id: &str, released_at_ms: u64, report_id: &str) -> Vec<u8> {
    key(QUEUE, mro_id, released_at_ms, report_id)
}

/// Key of a dead letter.
pub fn dead_key(mro_id: &str, released_at_ms: u64, report_id: &str) -> Vec<u8> {
    key(DEAD, mro_id, released_at_ms, report_id)
}

/// Prefix of every queued report of an MRO.
pub fn queue_prefix(mro_id: &str) -> Vec<u8> {
    let mut k = vec![QUEUE, 0];
    k.extend_from_slice(mro_id.as_bytes());
    k.push(0);
    k
}

/// Prefix of every dead letter of an MRO.
pub fn dead_prefix(mro_id: &str) -> Vec<u8> {
    let mut k = vec![DEAD, 0];
    k.extend_from_slice(mro_id.as_bytes());
    k.push(0);
    k
}

/// The release time inside a queue or dead-letter key of `mro_id`.
pub fn released_at(key: &[u8], mro_id: &str) -> Option<u64> {
    let start = 2 + mro_id.len() + 1;
    let b = key.get(start..start + 8)?;
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_mro_then_time_and_never_mix() {
        let a = queue_key("MRO-1", 5, "R-b");
        let b = queue_key("MRO-1", 10, "R-a");
        let c = queue_key("MRO-10", 1, "R-c");
        assert!(a < b);
        assert!(a.starts_with(&queue_prefix("MRO-1")));
        assert!(
            !c.starts_with(&queue_prefix("MRO-1")),
            "MRO-1 prefix does not match MRO-10"
        );
        assert!(!dead_key("MRO-1", 5, "R-b").starts_with(&queue_prefix("MRO-1")));
        assert_eq!(released_at(&b, "MRO-1"), Some(10));
    }

    /// A signed report of `specimen_id` to MRO-1, released at 42.
    fn signed(report_id: &str, specimen_id: &str) -> Signed {
        Signed {
            report_id: report_id.into(),
            specimen_id: specimen_id.into(),
            mro_id: "MRO-1".into(),
            jws: "a.b.c".into(),
            kid: "k".into(),
            content_sha256: "0".repeat(64),
            released_at_ms: 42,
            released_by: "Dr. S".into(),
            replaces: None,
        }
    }

    #[test]
    fn a_specimens_reports_are_found_by_their_id_prefix() {
        use crate::store::{Abort, Store};
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s")).unwrap();
        store
            .transact(|tx| -> Result<(), Abort<&str>> {
                enqueue(tx, signed("R-S-1-42-0", "S-1"))?;
                enqueue(tx, signed("R-S-1-50-c1", "S-1"))?;
                enqueue(tx, signed("U-S-1-60", "S-1"))?;
                enqueue(tx, signed("Q-S-1-70", "S-1"))?;
                // Another specimen whose ID extends this one's, and one beside it.
                enqueue(tx, signed("R-S-1-2-42-0", "S-1-2"))?;
                enqueue(tx, signed("P-S-2-42", "S-2"))?;
                Ok(())
            })
            .unwrap();
        let mut ids: Vec<String> = reports_of(&store, "S-1")
            .unwrap()
            .into_iter()
            .map(|r| r.report_id)
            .collect();
        ids.sort();
        assert_eq!(
            ids,
            vec!["Q-S-1-70", "R-S-1-42-0", "R-S-1-50-c1", "U-S-1-60"]
        );
        let of_other: Vec<String> = reports_of(&store, "S-1-2")
            .unwrap()
            .into_iter()
            .map(|r| r.report_id)
            .collect();
        assert_eq!(of_other, vec!["R-S-1-2-42-0"]);
        assert_eq!(reports_of(&store, "S-2").unwrap().len(), 1);
        assert!(reports_of(&store, "S-3").unwrap().is_empty());
    }

    #[test]
    fn enqueue_stores_pending_and_queues_in_one_transaction() {
        use crate::store::{Abort, Keyspace, Store};
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s")).unwrap();
        let signed = Signed {
            replaces: Some("R-0".into()),
            ..signed("R-S-1-1", "S-1")
        };
        // Aborted after enqueue: nothing of it exists.
        let aborted = store.transact(|tx| -> Result<(), Abort<&str>> {
            enqueue(tx, signed.clone())?;
            Err(Abort::Domain("changed my mind"))
        });
        assert!(aborted.is_err());
        assert_eq!(store.count(Keyspace::Reports), 0);
        assert_eq!(store.count(Keyspace::Outbox), 0);
        store
            .transact(|tx| -> Result<(), Abort<&str>> {
                enqueue(tx, signed.clone())?;
                Ok(())
            })
            .unwrap();
        let rep: StoredReport = store.get(Keyspace::Reports, b"R-S-1-1").unwrap().unwrap();
        assert_eq!(rep.delivery, Delivery::Pending);
        assert_eq!(rep.replaces.as_deref(), Some("R-0"));
        assert_eq!(rep.attempts, 0);
        let queued: Vec<_> = store
            .scan_prefix::<String>(Keyspace::Outbox, &queue_prefix("MRO-1"))
            .flatten()
            .collect();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].1, "R-S-1-1");
        assert_eq!(released_at(&queued[0].0, "MRO-1"), Some(42));
    }
}
