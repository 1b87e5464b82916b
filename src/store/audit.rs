//! The append-only audit log, chained by SHA-256.
//!
//! Entry `n` (keys are big-endian `u64` sequence numbers from 1) stores `prev_hash`, the hash of
//! entry `n - 1` (64 zeros for entry 1), and `hash`, the lowercase hex SHA-256 of its canonical
//! bytes (see [`canonical_bytes`]). The chain head (last sequence number and hash) lives in
//! `meta` and is updated in the same transaction as the entry, so the log and its head commit
//! together. [`Store::verify_audit`] walks the chain and reports the first broken link.
//!
//! **Packs.** The entries of one commit (a group-commit batch, or a transaction) are stored
//! together when there are two or more: one key, the first entry's sequence number, holding
//! them in order as one value (a JSON array, compressed as one). A single entry is stored
//! alone. Readers and [`Store::verify_audit`] take both forms; a pack's records must be
//! consecutive from its key.
//!
//! The chain detects modified, deleted, inserted and reordered entries. It is not a signature:
//! someone able to rewrite the whole store can rebuild a consistent chain, so the head should
//! also be anchored outside the store (e.g. in signed exports).

use super::{KeyRef, Keyspace, Store, StoreError, codec, hex_lower};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Key in `meta` holding the audit chain head.
pub(crate) const META_AUDIT_HEAD: &[u8] = b"audit_head";

/// Key in `meta` holding the last sequence number indexed in `audit_subjects`.
pub(crate) const META_SUBJECTS_THROUGH: &[u8] = b"audit_subjects_through";

/// Entries indexed per commit when the index is built for an older store.
pub(crate) const INDEX_CHUNK: usize = 8192;

/// `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Maximum length in bytes of `actor` and `action`.
pub const MAX_NAME_LEN: usize = 64;
/// Maximum length in bytes of `subject`, `before` and `after`.
pub const MAX_SUMMARY_LEN: usize = 256;

/// One event to record.
///
/// **Never put donor identifiers (name, SSN, employee or donor ID, date of birth) or result
/// values (concentrations, positive/negative outcomes) in any field.** Specimen IDs are allowed
/// as `subject`; `before`/`after` are short summaries such as state names. Fields are limited
/// in length ([`MAX_NAME_LEN`], [`MAX_SUMMARY_LEN`]) and may not contain control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When it happened, in Unix milliseconds (UTC), supplied by the caller.
    pub at_millis: u64,
    /// Who or what acted: `analyzer:chem1`, `lims`, `user:jdoe`, `system`.
    pub actor: String,
    /// What was done: `received`, `accessioned`, `state_changed`, `reported`...
    pub action: String,
    /// What it was done to, e.g. a specimen ID.
    pub subject: String,
    /// Short summary before (e.g. the old state).
    pub before: Option<String>,
    /// Short summary after (e.g. the new state).
    pub after: Option<String>,
}

impl AuditEntry {
    /// An entry without before/after summaries.
    pub fn new(
        at_millis: u64,
        actor: impl Into<String>,
        action: impl Into<String>,
        subject: impl Into<String>,
    ) -> AuditEntry {
        AuditEntry {
            at_millis,
            actor: actor.into(),
            action: action.into(),
            subject: subject.into(),
            before: None,
            after: None,
        }
    }

    /// Sets the "before" summary.
    pub fn before(mut self, summary: impl Into<String>) -> AuditEntry {
        self.before = Some(summary.into());
        self
    }

    /// Sets the "after" summary.
    pub fn after(mut self, summary: impl Into<String>) -> AuditEntry {
        self.after = Some(summary.into());
        self
    }

    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        let fields = [
            ("actor", Some(&self.actor), MAX_NAME_LEN),
            ("action", Some(&self.action), MAX_NAME_LEN),
            ("subject", Some(&self.subject), MAX_SUMMARY_LEN),
            ("before", self.before.as_ref(), MAX_SUMMARY_LEN),
            ("after", self.after.as_ref(), MAX_SUMMARY_LEN),
        ];
        for (name, value, max) in fields {
            let Some(value) = value else { continue };
            if value.len() > max {
                return Err(StoreError::Invalid(format!(
                    "audit field {name} is {} bytes long (at most {max})",
                    value.len()
                )));
            }
            if value.chars().any(char::is_control) {
                return Err(StoreError::Invalid(format!(
                    "audit field {name} contains a control character"
                )));
            }
        }
        if self.actor.is_empty() || self.action.is_empty() {
            return Err(StoreError::Invalid(
                "audit actor and action must not be empty".into(),
            ));
        }
        Ok(())
    }
}

/// A stored audit entry with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sequence number (1 for the first entry); also the key.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// Hash of the previous entry ([`GENESIS_HASH`] for seq 1).
    pub prev_hash: String,
    /// Hash of this entry's canonical bytes.
    pub hash: String,
}

impl AuditRecord {
    /// Recomputes the hash from the record's content.
    pub fn computed_hash(&self) -> String {
        hex_lower(&Sha256::digest(canonical_bytes(
            self.seq,
            &self.entry,
            &self.prev_hash,
        )))
    }
}

/// The last entry of the chain (seq 0 and [`GENESIS_HASH`] when the log is empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Sequence number of the last entry.
    pub seq: u64,
    /// Hash of the last entry.
    pub hash: String,
}

impl AuditHead {
    pub(crate) fn genesis() -> AuditHead {
        AuditHead {
            seq: 0,
            hash: GENESIS_HASH.to_string(),
        }
    }
}

/// An audit value as stored: a pack of consecutive records, or one record.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Pack(Vec<AuditRecord>),
    One(AuditRecord),
}

impl Stored {
    fn into_records(self) -> Vec<AuditRecord> {
        match self {
            Stored::Pack(records) => records,
            Stored::One(record) => vec![record],
        }
    }
}

/// A key and the value stored under it.
pub(crate) type KeyValue = (Vec<u8>, Vec<u8>);

/// A write into a keyspace: its key and value.
pub(crate) type Write = (Keyspace, Vec<u8>, Vec<u8>);

/// The key and stored value of consecutive records committed together (see the module notes).
pub(crate) fn encode_records(records: &[AuditRecord]) -> Result<Option<KeyValue>, StoreError> {
    let Some(first) = records.first() else {
        return Ok(None);
    };
    let key = first.seq.to_be_bytes().to_vec();
    let value = if records.len() == 1 {
        codec::encode_json(Keyspace::Audit, &key, first)?
    } else {
        codec::encode_json(Keyspace::Audit, &key, records)?
    };
    Ok(Some((key, value)))
}

/// Key of `seq` in the index by subject.
pub(crate) fn subject_key(subject: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(subject.len() + 9);
    key.extend_from_slice(subject.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The writes that add `records` (consecutive, just appended) to the index by subject and
/// move the index's high-water mark (in `meta`) to the last of them.
pub(crate) fn subject_writes(records: &[AuditRecord]) -> Result<Vec<Write>, StoreError> {
    let mut out = Vec::with_capacity(records.len() + 1);
    for r in records {
        out.push((
            Keyspace::AuditSubjects,
            subject_key(&r.entry.subject, r.seq),
            vec![codec::TAG_BYTES_V1],
        ));
    }
    if let Some(last) = records.last() {
        out.push((
            Keyspace::Meta,
            META_SUBJECTS_THROUGH.to_vec(),
            codec::encode_json(Keyspace::Meta, META_SUBJECTS_THROUGH, &last.seq)?,
        ));
    }
    Ok(out)
}

fn decode_stored(key: &[u8], value: &[u8]) -> Result<Vec<AuditRecord>, StoreError> {
    Ok(codec::decode_json::<Stored>(Keyspace::Audit, key, value)?.into_records())
}

/// The audit records from a sequence number on, in order (see [`Store::audit_entries`]). Each
/// item is the record's sequence number (big-endian, as a key) and the record.
pub struct AuditEntries {
    iter: super::archive::Merged,
    from: u64,
    pending: std::vec::IntoIter<AuditRecord>,
}

impl Iterator for AuditEntries {
    type Item = Result<(Vec<u8>, AuditRecord), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.pending.next() {
                if record.seq < self.from {
                    continue;
                }
                return Some(Ok((record.seq.to_be_bytes().to_vec(), record)));
            }
            let (key, value) = match self.iter.next()? {
                Ok((k, Some(v))) => (k, v),
                Ok((_, None)) => continue,
                Err(e) => return Some(Err(e)),
            };
            match decode_stored(&key, &value) {
                Ok(records) => self.pending = records.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// What [`Tx::audit`] appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReceipt {
    /// Sequence number of the new entry.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Number of entries walked.
    pub entries: u64,
    /// The head they end at.
    pub head: AuditHead,
}

/// The first broken link of the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {reason}")]
pub struct AuditBreak {
    /// Sequence number of the first entry that does not verify (or that is missing).
    pub seq: u64,
    /// Why (never the entry's content).
    pub reason: String,
}

/// The bytes an entry's hash covers: a fixed layout that does not depend on serde.
///
/// `"custodian.audit.v1\0"`, seq (u64 BE), at_millis (u64 BE), then actor, action, subject as
/// (u32 BE length, UTF-8 bytes), then before and after as a 0 byte (absent) or a 1 byte and
/// (length, bytes), then prev_hash as (length, ASCII hex).
pub fn canonical_bytes(seq: u64, entry: &AuditEntry, prev_hash: &str) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, s: &str) {
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn optional(out: &mut Vec<u8>, s: Option<&String>) {
        match s {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                field(out, s);
            }
        }
    }
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"custodian.audit.v1\0");
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&entry.at_millis.to_be_bytes());
    field(&mut out, &entry.actor);
    field(&mut out, &entry.action);
    field(&mut out, &entry.subject);
    optional(&mut out, entry.before.as_ref());
    optional(&mut out, entry.after.as_ref());
    field(&mut out, prev_hash);
    out
}

impl Store {
    /// The audit chain head as committed (seq 0 when the log is empty).
    pub fn audit_head(&self) -> Result<AuditHead, StoreError> {
        Ok(self
            .get(Keyspace::Meta, META_AUDIT_HEAD)?
            .unwrap_or_else(AuditHead::genesis))
    }

    /// The audit records from `from_seq` on, in order (a pack holding `from_seq` is read from
    /// that record on).
    pub fn audit_entries(&self, from_seq: u64) -> AuditEntries {
        let from = from_seq.to_be_bytes();
        let start = match self.floor(Keyspace::Audit, &from) {
            Ok(Some((key, _))) => key,
            _ => from.to_vec(),
        };
        AuditEntries {
            iter: self.scan(
                Keyspace::Audit,
                std::ops::Bound::Included(start),
                std::ops::Bound::Unbounded,
            ),
            from: from_seq,
            pending: Vec::new().into_iter(),
        }
    }

    /// Every entry whose subject is `subject`, in order, read through the index by subject
    /// (its cost does not grow with the log). An index entry that points at a missing entry or
    /// at another subject's is an error (the store was altered).
    pub fn audit_of(&self, subject: &str) -> Result<Vec<AuditRecord>, StoreError> {
        let mut prefix = subject.as_bytes().to_vec();
        prefix.push(0);
        // The pack (first seq, records) read last: entries of one commit share it.
        let mut pack: Option<(u64, Vec<AuditRecord>)> = None;
        let mut out = Vec::new();
        for item in self.scan_prefix_raw(Keyspace::AuditSubjects, &prefix) {
            let (key, _) = item?;
            let Ok(seq) = <[u8; 8]>::try_from(&key[prefix.len()..]).map(u64::from_be_bytes) else {
                return Err(StoreError::Decode {
                    key: KeyRef::new(Keyspace::AuditSubjects, &key),
                    detail: "malformed audit index key".into(),
                });
            };
            let inconsistent = |why: &str| StoreError::Decode {
                key: KeyRef::new(Keyspace::Audit, &seq.to_be_bytes()),
                detail: format!("the audit index names this entry, which {why}"),
            };
            let cached = pack.as_ref().and_then(|(first, records)| {
                let i = usize::try_from(seq.checked_sub(*first)?).ok()?;
                records.get(i).filter(|r| r.seq == seq).cloned()
            });
            let record = match cached {
                Some(r) => r,
                None => {
                    let (first_key, value) = self
                        .floor(Keyspace::Audit, &seq.to_be_bytes())?
                        .ok_or_else(|| inconsistent("is missing"))?;
                    let first = <[u8; 8]>::try_from(&first_key[..])
                        .map(u64::from_be_bytes)
                        .map_err(|_| inconsistent("is stored under a malformed key"))?;
                    let records = decode_stored(&first_key, &value)?;
                    let i = usize::try_from(seq - first).unwrap_or(usize::MAX);
                    let r = records
                        .get(i)
                        .filter(|r| r.seq == seq)
                        .cloned()
                        .ok_or_else(|| inconsistent("is missing"))?;
                    pack = Some((first, records));
                    r
                }
            };
            if record.entry.subject != subject {
                return Err(inconsistent("is about another subject"));
            }
            out.push(record);
        }
        Ok(out)
    }

    /// Walks the whole audit chain from seq 1 to the head and reports the first broken link:
    /// an entry whose content does not match its hash (modified), a missing sequence number
    /// (deleted), an entry stored under another entry's key (reordered), a `prev_hash` that is
    /// not the previous entry's hash, or a head in `meta` that does not match the last entry.
    /// Entries committed while the walk runs are not covered.
    pub fn verify_audit(&self) -> Result<AuditReport, AuditBreak> {
        let head = self.audit_head().map_err(|e| AuditBreak {
            seq: 0,
            reason: format!("chain head unreadable: {e}"),
        })?;
        let mut expected = 1u64;
        let mut prev_hash = GENESIS_HASH.to_string();
        let mut beyond_head = None;
        for item in self.scan(
            Keyspace::Audit,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
        ) {
            let (key, value) = item.map_err(|e| AuditBreak {
                seq: expected,
                reason: format!("cannot read: {e}"),
            })?;
            let Some(value) = value else { continue };
            let Ok(key_bytes) = <[u8; 8]>::try_from(&key[..]) else {
                return Err(AuditBreak {
                    seq: expected,
                    reason: format!("malformed key of {} bytes", key.len()),
                });
            };
            let seq = u64::from_be_bytes(key_bytes);
            if seq > head.seq {
                beyond_head = Some(seq);
                break;
            }
            if seq != expected {
                return Err(AuditBreak {
                    seq: expected,
                    reason: format!("entry missing (the next entry present is seq {seq})"),
                });
            }
            let records = decode_stored(&key, &value).map_err(|e| AuditBreak {
                seq,
                reason: format!("undecodable entry: {e}"),
            })?;
            if records.is_empty() {
                return Err(AuditBreak {
                    seq,
                    reason: "an empty pack of entries".into(),
                });
            }
            for (at, record) in (seq..).zip(records) {
                if record.seq != at {
                    return Err(AuditBreak {
                        seq: at,
                        reason: format!(
                            "entry stored under seq {at} says it is seq {} (moved or reordered)",
                            record.seq
                        ),
                    });
                }
                if record.prev_hash != prev_hash {
                    return Err(AuditBreak {
                        seq: at,
                        reason: format!(
                            "prev_hash does not match the hash of seq {} (that entry was altered, \
                             or this one was forged)",
                            at - 1
                        ),
                    });
                }
                if record.computed_hash() != record.hash {
                    return Err(AuditBreak {
                        seq: at,
                        reason: "content does not match its hash (entry modified)".into(),
                    });
                }
                prev_hash = record.hash;
                expected += 1;
            }
        }
        let walked = expected - 1;
        if walked > head.seq {
            return Err(AuditBreak {
                seq: head.seq + 1,
                reason: format!("entry beyond the chain head (seq {})", head.seq),
            });
        }
        if walked < head.seq {
            return Err(AuditBreak {
                seq: expected,
                reason: format!("entry missing (the chain head is at seq {})", head.seq),
            });
        }
        if prev_hash != head.hash {
            return Err(AuditBreak {
                seq: head.seq,
                reason: "the chain head in meta does not match the last entry".into(),
            });
        }
        if let Some(seq) = beyond_head {
            // Either committed during the walk (fine) or planted beyond the head.
            let now = self.audit_head().map_err(|e| AuditBreak {
                seq,
                reason: format!("chain head unreadable: {e}"),
            })?;
            if now.seq < seq {
                return Err(AuditBreak {
                    seq,
                    reason: format!("entry beyond the chain head (seq {})", now.seq),
                });
            }
        }
        Ok(AuditReport {
            entries: walked,
            head,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::super::*;
    use super::{GENESIS_HASH, canonical_bytes};

    fn append_n(store: &Store, n: u64) {
        for i in 1..=n {
            store
                .transact(|tx| {
                    tx.audit(
                        AuditEntry::new(
                            1_700_000_000_000 + i,
                            "lims",
                            "state_changed",
                            format!("S-{i}"),
                        )
                        .before("received")
                        .after("accessioned"),
                    )?;
                    Ok::<_, Abort<()>>(())
                })
                .unwrap();
        }
    }

    fn key(seq: u64) -> [u8; 8] {
        seq.to_be_bytes()
    }

    fn record(store: &Store, seq: u64) -> AuditRecord {
        let (k, r) = store.audit_entries(seq).next().unwrap().unwrap();
        assert_eq!(k, key(seq));
        r
    }

    fn put_record(store: &Store, at: u64, rec: &AuditRecord) {
        let mut bytes = vec![0x01];
        bytes.extend(serde_json::to_vec(rec).unwrap());
        store.tamper_put(Keyspace::Audit, &key(at), &bytes);
    }

    #[test]
    fn chain_links_and_verifies() {
        let (_tmp, store) = temp_store();
        assert_eq!(
            store.verify_audit().unwrap(),
            AuditReport {
                entries: 0,
                head: AuditHead {
                    seq: 0,
                    hash: GENESIS_HASH.into()
                }
            }
        );
        append_n(&store, 5);
        let report = store.verify_audit().unwrap();
        assert_eq!(report.entries, 5);
        assert_eq!(report.head.seq, 5);
        assert_eq!(report.head.hash, record(&store, 5).hash);
        assert_eq!(record(&store, 1).prev_hash, GENESIS_HASH);
        assert_eq!(record(&store, 3).prev_hash, record(&store, 2).hash);
        let seqs: Vec<u64> = store.audit_entries(4).map(|r| r.unwrap().1.seq).collect();
        assert_eq!(seqs, vec![4, 5]);
    }

    #[test]
    fn several_entries_in_one_transaction_chain_in_order() {
        let (_tmp, store) = temp_store();
        let receipts = store
            .transact(|tx| {
                let a = tx.audit(AuditEntry::new(1, "analyzer:chem1", "received", "S-1"))?;
                let b = tx.audit(AuditEntry::new(2, "system", "validated", "S-1"))?;
                Ok::<_, Abort<()>>((a, b))
            })
            .unwrap();
        assert_eq!(receipts.0.seq, 1);
        assert_eq!(receipts.1.seq, 2);
        assert_eq!(record(&store, 2).prev_hash, receipts.0.hash);
        assert_eq!(store.verify_audit().unwrap().entries, 2);
        // Committed together, stored together: one key, the first entry's seq.
        assert_eq!(store.count(Keyspace::Audit), 1);
        assert!(store.tamper_get(Keyspace::Audit, &key(1)).is_some());
    }

    fn append_pack(store: &Store, first_at: u64, n: u64) {
        store
            .transact(|tx| {
                for i in 0..n {
                    tx.audit(AuditEntry::new(
                        first_at + i,
                        "system",
                        "validated",
                        format!("S-{i}"),
                    ))?;
                }
                Ok::<_, Abort<()>>(())
            })
            .unwrap();
    }

    #[test]
    fn packs_and_single_entries_read_and_verify_as_one_chain() {
        let (_tmp, store) = temp_store();
        append_n(&store, 2); // seq 1, 2 alone
        append_pack(&store, 10, 4); // seq 3..=6 in one value
        append_n(&store, 1); // seq 7 alone
        append_pack(&store, 20, 3); // seq 8..=10
        assert_eq!(store.count(Keyspace::Audit), 5);
        let all: Vec<u64> = store.audit_entries(1).map(|r| r.unwrap().1.seq).collect();
        assert_eq!(all, (1..=10).collect::<Vec<_>>());
        // From the middle of a pack, and from a key between packs.
        let mid: Vec<u64> = store.audit_entries(5).map(|r| r.unwrap().1.seq).collect();
        assert_eq!(mid, vec![5, 6, 7, 8, 9, 10]);
        let keys: Vec<Vec<u8>> = store.audit_entries(9).map(|r| r.unwrap().0).collect();
        assert_eq!(keys, vec![key(9).to_vec(), key(10).to_vec()]);
        assert_eq!(store.audit_entries(11).count(), 0);
        let report = store.verify_audit().unwrap();
        assert_eq!(report.entries, 10);
        assert_eq!(report.head.hash, record(&store, 10).hash);
        assert_eq!(record(&store, 3).prev_hash, record(&store, 2).hash);
        assert_eq!(record(&store, 8).prev_hash, record(&store, 7).hash);
    }

    fn put_pack(store: &Store, at: u64, recs: &[AuditRecord]) {
        let mut bytes = vec![0x01];
        bytes.extend(serde_json::to_vec(recs).unwrap());
        store.tamper_put(Keyspace::Audit, &key(at), &bytes);
    }

    fn subjects(records: &[AuditRecord]) -> Vec<(u64, String)> {
        records
            .iter()
            .map(|r| (r.seq, r.entry.subject.clone()))
            .collect()
    }

    #[test]
    fn entries_of_a_subject_are_read_through_the_index() {
        let (_tmp, store) = temp_store();
        append_n(&store, 3); // S-1, S-2, S-3 alone
        store
            .transact(|tx| {
                for s in ["S-1", "S-10", "S-1", "S-2"] {
                    tx.audit(AuditEntry::new(9, "system", "validated", s))?;
                }
                Ok::<_, Abort<()>>(())
            })
            .unwrap(); // seq 4..=7 in one pack
        let of_s1 = store.audit_of("S-1").unwrap();
        assert_eq!(
            subjects(&of_s1),
            vec![(1, "S-1".into()), (4, "S-1".into()), (6, "S-1".into())]
        );
        // A subject that is another's prefix is its own.
        assert_eq!(
            subjects(&store.audit_of("S-10").unwrap()),
            vec![(5, "S-10".into())]
        );
        assert!(store.audit_of("S-").unwrap().is_empty());
        assert!(store.audit_of("").unwrap().is_empty());
        // Each record is the stored one, hash and all.
        assert_eq!(of_s1[1], record(&store, 4));
        // The index is the store's own: domain code cannot write it.
        assert!(matches!(
            store.transact(|tx| {
                tx.put(Keyspace::AuditSubjects, b"S-1\0x", &())?;
                Ok::<_, Abort<()>>(())
            }),
            Err(TransactError::Store(StoreError::ReadOnlyKeyspace(
                Keyspace::AuditSubjects
            )))
        ));
    }

    #[test]
    fn an_index_entry_without_its_entry_is_an_error() {
        let (_tmp, store) = temp_store();
        append_n(&store, 2);
        // Pointing at a missing entry, and at another subject's.
        store.tamper_put(
            Keyspace::AuditSubjects,
            &super::subject_key("S-1", 9),
            &[0x02],
        );
        let err = store.audit_of("S-1").unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        store.tamper_remove(Keyspace::AuditSubjects, &super::subject_key("S-1", 9));
        store.tamper_put(
            Keyspace::AuditSubjects,
            &super::subject_key("S-1", 2),
            &[0x02],
        );
        let err = store.audit_of("S-1").unwrap_err();
        assert!(err.to_string().contains("another subject"), "{err}");
        assert!(!err.to_string().contains("S-2"), "{err}");
    }

    #[test]
    fn an_older_store_gets_its_index_built_once_at_open() {
        let (tmp, store) = temp_store();
        let dir = tmp.path().join("store");
        append_n(&store, 5);
        append_pack(&store, 10, 4); // seq 6..=9: S-0..S-3
        // As an earlier build left it: entries, no index, no mark.
        let keys: Vec<Vec<u8>> = store
            .tree(Keyspace::AuditSubjects)
            .iter()
            .keys()
            .map(|k| k.unwrap().to_vec())
            .collect();
        assert_eq!(keys.len(), 9);
        for k in &keys {
            store.tamper_remove(Keyspace::AuditSubjects, k);
        }
        store.tamper_remove(Keyspace::Meta, super::META_SUBJECTS_THROUGH);
        assert!(store.audit_of("S-1").unwrap().is_empty());
        store.flush_durable().unwrap();
        drop(store);
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.count(Keyspace::AuditSubjects), 9);
        assert_eq!(
            subjects(&store.audit_of("S-1").unwrap()),
            vec![(1, "S-1".into()), (7, "S-1".into())]
        );
        // Half-built (a crash mid-way): resumed from its mark; entries after it are indexed.
        store.tamper_remove(Keyspace::AuditSubjects, &super::subject_key("S-1", 7));
        let mut mark = vec![0x01];
        mark.extend(b"6");
        store.tamper_put(Keyspace::Meta, super::META_SUBJECTS_THROUGH, &mark);
        store.flush_durable().unwrap();
        drop(store);
        let store = Store::open(&dir).unwrap();
        assert_eq!(subjects(&store.audit_of("S-1").unwrap()).len(), 2);
        append_n(&store, 1);
        assert_eq!(subjects(&store.audit_of("S-1").unwrap()).len(), 3);
        assert!(store.verify_audit().is_ok());
    }

    #[test]
    fn building_the_index_crosses_its_commit_size_at_the_edges() {
        for n in [
            super::INDEX_CHUNK - 1,
            super::INDEX_CHUNK,
            super::INDEX_CHUNK + 1,
        ] {
            let (tmp, store) = temp_store();
            let dir = tmp.path().join("store");
            append_pack(&store, 10, n as u64);
            for seq in 1..=n as u64 {
                let subject = format!("S-{}", seq - 1);
                store.tamper_remove(Keyspace::AuditSubjects, &super::subject_key(&subject, seq));
            }
            store.tamper_remove(Keyspace::Meta, super::META_SUBJECTS_THROUGH);
            assert_eq!(store.count(Keyspace::AuditSubjects), 0);
            store.flush_durable().unwrap();
            drop(store);
            let store = Store::open(&dir).unwrap();
            assert_eq!(store.count(Keyspace::AuditSubjects), n, "{n} entries");
            let last = format!("S-{}", n - 1);
            assert_eq!(
                subjects(&store.audit_of(&last).unwrap()),
                vec![(n as u64, last)]
            );
        }
    }

    #[test]
    fn tampering_inside_a_pack_is_reported_at_the_entry() {
        let (_tmp, store) = temp_store();
        append_n(&store, 1);
        append_pack(&store, 10, 4); // seq 2..=5
        let pack: Vec<AuditRecord> = store.audit_entries(2).map(|r| r.unwrap().1).collect();
        // Modified content.
        let mut changed = pack.clone();
        changed[2].entry.action = "released".into();
        put_pack(&store, 2, &changed);
        let err = store.verify_audit().unwrap_err();
        assert_eq!(err.seq, 4);
        assert!(err.reason.contains("modified"), "{}", err.reason);
        // An entry dropped from the pack (hash recomputed or not): the next link breaks.
        let mut dropped = pack.clone();
        dropped.remove(1);
        put_pack(&store, 2, &dropped);
        let err = store.verify_audit().unwrap_err();
        assert_eq!(err.seq, 3);
        assert!(err.reason.contains("says it is seq 4"), "{}", err.reason);
        // Two entries swapped.
        let mut swapped = pack.clone();
        swapped.swap(0, 1);
        put_pack(&store, 2, &swapped);
        assert_eq!(store.verify_audit().unwrap_err().seq, 2);
        // A pack extended beyond the head.
        let mut longer = pack.clone();
        let mut extra = pack[3].clone();
        extra.seq = 6;
        extra.prev_hash = pack[3].hash.clone();
        extra.hash = extra.computed_hash();
        longer.push(extra);
        put_pack(&store, 2, &longer);
        let err = store.verify_audit().unwrap_err();
        assert_eq!(err.seq, 6);
        assert!(
            err.reason.contains("beyond the chain head"),
            "{}",
            err.reason
        );
        // An empty pack, and the original back.
        put_pack(&store, 2, &[]);
        assert!(
            store
                .verify_audit()
                .unwrap_err()
                .reason
                .contains("empty pack")
        );
        put_pack(&store, 2, &pack);
        assert_eq!(store.verify_audit().unwrap().entries, 5);
    }

    #[test]
    fn canonical_hash_is_pinned() {
        // The canonical layout must never change silently: old chains would stop verifying.
        let entry =
            AuditEntry::new(1_700_000_000_000, "lims", "accessioned", "S-1").after("received");
        let bytes = canonical_bytes(1, &entry, GENESIS_HASH);
        assert!(bytes.starts_with(b"custodian.audit.v1\0"));
        let rec = AuditRecord {
            seq: 1,
            entry,
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        };
        // Cross-checked against an independent Python implementation of the documented layout.
        assert_eq!(
            rec.computed_hash(),
            "d12d49502175b1689c24bfb6634e6a0528863c8d0faf7caf287fcf2ce937a8a7"
        );
    }

    #[test]
    fn modified_entry_is_reported_at_its_seq() {
        let (_tmp, store) = temp_store();
        append_n(&store, 6);
        let mut rec = record(&store, 3);
        rec.entry.after = Some("reported".into());
        put_record(&store, 3, &rec);
        let err = store.verify_audit().unwrap_err();
        assert_eq!(err.seq, 3, "{err}");
        assert!(err.reason.contains("modified"), "{err}");
    }

    #[test]
    fn modified_entry_with_recomputed_hash_breaks_the_next_link() {
        let (_tmp, store) = temp_store();
        append_n(&store, 6);
        let mut rec = record(&store, 3);
        rec.entry.actor = "user:mallory".into();
        rec.hash = rec.computed_hash();
        put_record(&store, 3, &rec);
        let err = store.verify_audit().unwrap_err();
        assert_eq!(err.seq, 4, "{err}");
        assert!(err.reason.contains("prev_hash"), "{err}");
    }

    #[test]
    fn deleted_entry_is_reported_as_missing() {
        let (_tmp, store) = temp_store();
        append_n(&store, 6);
        store.tamper_remove(Keyspace::Audit, &key(4));
        let err = store.verify_audit().unwrap_err();
        assert_eq!(err.seq, 4, "{err}");
        assert!(err.reason.contains("missing"), "{err}");
    }

    #[test]
    fn deleted_last_entry_is_reported_against_the_head() {
        let (_tmp, store) = temp_store();
        append_n(&store, 6);
        store.tamper_remove(Keyspace::Audit, &key(6));
        let err = store.verify_audit().unwrap_err();
        assert_eq!(err.seq, 6, "{err}");
        assert!(err.reason.contains("missing"), "{err}");
    }

    #[test]
    fn reordered_entries_are_reported_at_the_first_swap() {
        let (_tmp, store) = temp_store();
        append_n(&store, 6);
        let r2 = store.tamper_get(Keyspace::Audit, &key(2)).unwrap();
        let r5 = store.tamper_get(Keyspace::Audit, &key(5)).unwrap();
        store.tamper_put(Keyspace::Audit, &key(2), &r5);
        store.tamper_put(Keyspace::Audit, &key(5), &r2);
        let err = store.verify_audit().unwrap_err();
        assert_eq!(err.seq, 2, "{err}");
        assert!(err.reason.contains("reordered"), "{err}");
    }

    #[test]
    fn renumbered_tail_after_deletion_is_caught_by_prev_hash() {
        let (_tmp, store) = temp_store();
        append_n(&store, 5);
        // Delete entry 3 and shift 4,5 down with consistent seq and hash: the link breaks.
        for seq in 4..=5 {
            let mut rec = record(&store, seq);
            rec.seq = seq - 1;
            rec.hash = rec.computed_hash();
            put_record(&store, seq - 1, &rec);
        }
        store.tamper_remove(Keyspace::Audit, &key(5));
        let err = store.verify_audit().unwrap_err();
        assert_eq!(err.seq, 3, "{err}");
        assert!(err.reason.contains("prev_hash"), "{err}");
    }

    #[test]
    fn planted_entry_beyond_head_and_corrupt_entry_are_reported() {
        let (_tmp, store) = temp_store();
        append_n(&store, 2);
        let mut rec = record(&store, 2);
        rec.seq = 3;
        rec.prev_hash = rec.hash.clone();
        rec.hash = rec.computed_hash();
        put_record(&store, 3, &rec);
        let err = store.verify_audit().unwrap_err();
        assert_eq!(err.seq, 3, "{err}");
        assert!(err.reason.contains("beyond"), "{err}");

        store.tamper_remove(Keyspace::Audit, &key(3));
        store.tamper_put(Keyspace::Audit, &key(1), b"\x05garbage");
        let err = store.verify_audit().unwrap_err();
        assert_eq!(err.seq, 1, "{err}");
        assert!(err.reason.contains("unknown encoding version 5"), "{err}");
    }

    #[test]
    fn invalid_entries_are_refused_and_abort_the_transaction() {
        let (_tmp, store) = temp_store();
        for entry in [
            AuditEntry::new(1, "", "x", "S-1"),
            AuditEntry::new(1, "lims", "x", "S-1\nforged line"),
            AuditEntry::new(1, "lims", "x", "S".repeat(MAX_SUMMARY_LEN_TEST + 1)),
        ] {
            let err = store
                .transact(|tx| {
                    tx.put(Keyspace::Specimens, b"S-1", &1)?;
                    tx.audit(entry.clone())?;
                    Ok::<_, Abort<()>>(())
                })
                .unwrap_err();
            assert!(
                matches!(err, TransactError::Store(StoreError::Invalid(_))),
                "{err:?}"
            );
        }
        assert_eq!(store.count(Keyspace::Specimens), 0);
        assert_eq!(store.audit_head().unwrap().seq, 0);
    }

    const MAX_SUMMARY_LEN_TEST: usize = super::MAX_SUMMARY_LEN;
}
