//! Transactions over all keyspaces, without sled types.
//!
//! ```ignore
//! let outcome = store.transact(|tx| {
//!     if tx.contains_key(Keyspace::Dedupe, &dkey)? {
//!         return Err(Abort::Domain(Duplicate));
//!     }
//!     tx.put_raw_bytes(Keyspace::Raw, &raw_key, message)?;
//!     tx.put(Keyspace::Dedupe, &dkey, &raw_key)?;
//!     tx.audit(AuditEntry::new(now, "analyzer:chem1", "received", "S-1"))?;
//!     Ok(raw_key.clone())
//! });
//! ```
//!
//! **One writer at a time.** Every write of the store goes through a transaction, and the
//! store lets one writer in at a time (its writer lock): a [`Store::transact`] call, or one
//! whole group-commit batch. A transaction's closure therefore reads a state nobody else
//! changes while it runs. Its writes collect in an overlay that its own reads see (on top of
//! the writes of the batch's earlier jobs, on top of the trees); when it returns `Ok` they join
//! the batch, when it aborts, fails or panics they are dropped. The batch's writes then reach
//! the engine as ONE atomic multi-tree commit (write-only, so it cannot conflict), before the
//! single durable flush. Per message this replaces a 14-tree optimistic transaction with a few
//! map inserts.
//!
//! **The closure must be pure**: it must not send messages, write files, bump counters or read
//! a clock; compute such things before the transaction and move them in (it runs once here,
//! but a job is answered only after its batch is durable, and nothing it did outside the store
//! may run ahead of that). Propagate every [`TxError`] with `?` (never swallow one).

use super::audit::{AuditEntry, AuditHead, AuditReceipt, AuditRecord, META_AUDIT_HEAD};
use super::events::AuditIndexBuilt;
use super::{Keyspace, Store, StoreError, codec};
use crate::core::telemetry::emit;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

/// Writes not yet in the engine: per keyspace, key → the stored bytes, or `None` for a removal.
pub(crate) struct Overlay {
    maps: Vec<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    /// Audit records appended, in sequence order: stored together at apply (see
    /// [`super::audit`]). A transaction's reads of `audit` see committed entries only.
    audit: Vec<AuditRecord>,
}

impl Overlay {
    pub(crate) fn new() -> Overlay {
        Overlay {
            maps: Keyspace::ALL.iter().map(|_| BTreeMap::new()).collect(),
            audit: Vec::new(),
        }
    }

    /// `Some(None)`: removed here; `Some(Some(v))`: written here; `None`: not touched here.
    fn get(&self, ks: Keyspace, key: &[u8]) -> Option<Option<&[u8]>> {
        self.maps[ks.index()].get(key).map(|v| v.as_deref())
    }

    pub(crate) fn set(&mut self, ks: Keyspace, key: &[u8], value: Option<Vec<u8>>) {
        self.maps[ks.index()].insert(key.to_vec(), value);
    }

    /// Takes `later`'s writes on top of these.
    fn absorb(&mut self, later: Overlay) {
        self.audit.extend(later.audit);
        for (mine, theirs) in self.maps.iter_mut().zip(later.maps) {
            if mine.is_empty() {
                *mine = theirs;
            } else {
                mine.extend(theirs);
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.audit.is_empty() && self.maps.iter().all(BTreeMap::is_empty)
    }
}

/// Bytes read in a transaction: from its overlay, or from the store's tiers.
enum Read<'a> {
    Overlay(&'a [u8]),
    Stored(super::archive::Value),
}

impl std::ops::Deref for Read<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Read::Overlay(b) => b,
            Read::Stored(v) => v,
        }
    }
}

/// The view a transaction closure works through. Reads see the transaction's own writes (and
/// those of the batch's earlier jobs).
pub struct Tx<'a> {
    store: &'a Store,
    below: &'a Overlay,
    own: Overlay,
}

/// An error inside a transaction: a store error (engine failure, encoding, read-only keyspace,
/// bad audit entry). Propagate it with `?`.
pub struct TxError(StoreError);

impl TxError {
    pub(crate) fn store(e: StoreError) -> TxError {
        TxError(e)
    }

    /// The store error.
    pub fn store_error(&self) -> Option<&StoreError> {
        Some(&self.0)
    }
}

impl fmt::Debug for TxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxError::Store({:?})", self.0)
    }
}

impl fmt::Display for TxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TxError {}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::store(e)
    }
}

/// How a transaction closure ends without committing.
#[derive(Debug)]
pub enum Abort<E> {
    /// The domain decided not to commit; `transact` returns [`TransactError::Aborted`].
    Domain(E),
    /// A [`TxError`] propagated with `?`.
    Tx(TxError),
}

impl<E> From<TxError> for Abort<E> {
    fn from(e: TxError) -> Self {
        Abort::Tx(e)
    }
}

impl<E> From<StoreError> for Abort<E> {
    fn from(e: StoreError) -> Self {
        Abort::Tx(TxError::store(e))
    }
}

/// Outcome of a transaction that did not commit. Nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum TransactError<E> {
    /// The closure returned [`Abort::Domain`].
    #[error("transaction aborted: {0}")]
    Aborted(E),
    /// The store or the engine failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Runs `f` as one atomic transaction over every keyspace.
    ///
    /// Either every write of the closure commits, or (abort, error) none does. It waits for
    /// the store's writer lock (see the module notes), so it never runs beside another writer.
    /// The commit reaches the engine's memory only: it is **not durable** until
    /// [`Store::flush_durable`] returns `Ok` (the [`GroupCommitter`](super::GroupCommitter)
    /// does that for you).
    pub fn transact<R, E, F>(&self, f: F) -> Result<R, TransactError<E>>
    where
        F: Fn(&mut Tx<'_>) -> Result<R, Abort<E>>,
    {
        let _writer = self.writer_lock();
        let mut batch = Overlay::new();
        let r = self.run_in(&mut batch, &f)?;
        self.apply(batch)?;
        Ok(r)
    }

    /// Runs `f` over `batch` (the writes of a batch's earlier jobs); on `Ok` its writes join
    /// `batch`, otherwise `batch` is left as it was. The caller holds the writer lock and
    /// applies `batch` afterwards.
    pub(crate) fn run_in<R, E, F>(&self, batch: &mut Overlay, f: &F) -> Result<R, TransactError<E>>
    where
        F: Fn(&mut Tx<'_>) -> Result<R, Abort<E>>,
    {
        let mut tx = Tx {
            store: self,
            below: batch,
            own: Overlay::new(),
        };
        match f(&mut tx) {
            Ok(r) => {
                let own = tx.own;
                batch.absorb(own);
                Ok(r)
            }
            Err(Abort::Domain(e)) => Err(TransactError::Aborted(e)),
            Err(Abort::Tx(TxError(e))) => {
                // A read of the job's that met the engine's own I/O error (sled reports a
                // failed background write of its log to every later operation): the commit
                // after it would fail the same way, and readiness must say so now, not at
                // the next job that happens to reach the commit.
                if e.breaks_durability() {
                    self.lose_durability(e.to_string());
                }
                Err(TransactError::Store(e))
            }
        }
    }

    /// Writes `batch` into the engine as one atomic commit over every keyspace it touches.
    /// The caller holds the writer lock.
    pub(crate) fn apply(&self, batch: Overlay) -> Result<(), StoreError> {
        let result = self.apply_unchecked(batch);
        if let Err(e) = &result
            && e.breaks_durability()
        {
            // An I/O error (a full disk, usually) or corruption in the engine's write path may
            // leave a hole in the log that recovery stops at, taking later commits with it:
            // like a failed fsync, nothing after it can be promised durable until the store
            // is reopened.
            self.lose_durability(e.to_string());
        }
        result
    }

    fn apply_unchecked(&self, mut batch: Overlay) -> Result<(), StoreError> {
        use sled::Transactional;
        if batch.is_empty() {
            return Ok(());
        }
        self.pack_raw(&mut batch)?;
        let audit = std::mem::take(&mut batch.audit);
        if let Some((key, value)) = super::audit::encode_records(&audit)? {
            batch.maps[Keyspace::Audit.index()].insert(key, Some(value));
            for (ks, key, value) in super::audit::subject_writes(&audit)? {
                batch.maps[ks.index()].insert(key, Some(value));
            }
        }
        // A removal of a key an older tier may hold leaves a mark that hides it there.
        let tiers = self.tiers();
        let mut written = 0u64;
        for (ks, writes) in Keyspace::ALL.iter().zip(batch.maps.iter_mut()) {
            if !super::archive::archived(*ks) {
                continue;
            }
            written += writes.len() as u64;
            for (key, value) in writes.iter_mut() {
                if value.is_none() && tiers.below_may_hold(*ks, key)? {
                    *value = Some(super::archive::MARK.to_vec());
                }
            }
        }
        self.inner.archive.note_written(written);
        let trees: &[sled::Tree] = &tiers.active;
        let result = <[sled::Tree] as Transactional<()>>::transaction(trees, |views| {
            for (view, writes) in views.iter().zip(&batch.maps) {
                for (key, value) in writes {
                    match value {
                        Some(v) => {
                            view.insert(key.as_slice(), v.as_slice())?;
                        }
                        None => {
                            view.remove(key.as_slice())?;
                        }
                    }
                }
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(())) => Err(StoreError::Invalid(
                "the engine refused a write-only commit".into(),
            )),
            Err(TransactionError::Storage(e)) => {
                Err(StoreError::engine("committing a transaction", e))
            }
        }
    }
}

impl Store {
    /// Stores the batch's new messages in `raw` together: two or more become one pack and
    /// pointers; a single one is stored alone (compressed when that pays).
    fn pack_raw(&self, batch: &mut Overlay) -> Result<(), StoreError> {
        let raw = &mut batch.maps[Keyspace::Raw.index()];
        let waiting: Vec<&Vec<u8>> = raw
            .iter()
            .filter_map(|(k, v)| match v {
                Some(v) if k.first() != Some(&0) && v.first() == Some(&codec::TAG_BYTES_V1) => {
                    Some(k)
                }
                _ => None,
            })
            .collect();
        if waiting.len() < 2 {
            if let Some(key) = waiting.first().map(|k| (*k).clone())
                && let Some(Some(v)) = raw.get_mut(&key)
            {
                *v = codec::encode_bytes(Keyspace::Raw, &v[1..]);
            }
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = waiting.into_iter().cloned().collect();
        let next: u64 = match self.tree(Keyspace::Meta).get(super::META_NEXT_PACK) {
            Ok(Some(v)) => codec::decode_json(Keyspace::Meta, super::META_NEXT_PACK, &v)?,
            Ok(None) => 1,
            Err(e) => return Err(StoreError::engine("reading the next pack number", e)),
        };
        let packed = {
            let members: Vec<&[u8]> = keys
                .iter()
                .filter_map(|k| raw.get(k).and_then(|v| v.as_deref()).map(|v| &v[1..]))
                .collect();
            codec::encode_pack(Keyspace::Raw, &members)
        };
        for (index, key) in (0u32..).zip(&keys) {
            raw.insert(key.clone(), Some(codec::pack_pointer(next, index)));
        }
        raw.insert(super::pack_key(next), Some(packed));
        let after = next
            .checked_add(1)
            .ok_or_else(|| StoreError::Invalid("pack numbers exhausted".into()))?;
        batch.maps[Keyspace::Meta.index()].insert(
            super::META_NEXT_PACK.to_vec(),
            Some(codec::encode_json(
                Keyspace::Meta,
                super::META_NEXT_PACK,
                &after,
            )?),
        );
        Ok(())
    }
}

impl Store {
    /// Builds the index by subject for entries written before it existed (a store of an
    /// earlier build), resuming where it stopped; nothing to do otherwise. Runs at open,
    /// before any other write: every commit after that indexes its own entries. Whether it
    /// wrote.
    pub(crate) fn index_audit_subjects(&self) -> Result<bool, StoreError> {
        let head = self.audit_head()?;
        let through: Option<u64> = self.get(Keyspace::Meta, super::audit::META_SUBJECTS_THROUGH)?;
        let mut from = match through {
            Some(t) if t >= head.seq => return Ok(false),
            Some(t) => t + 1,
            None => 1,
        };
        let started = Instant::now();
        let mut indexed = 0u64;
        let _writer = self.writer_lock();
        loop {
            let mut batch = Overlay::new();
            let mut chunk = Vec::with_capacity(super::audit::INDEX_CHUNK.min(4096));
            for item in self.audit_entries(from) {
                let (_, record) = item?;
                if record.seq > head.seq {
                    break;
                }
                chunk.push(record);
                if chunk.len() >= super::audit::INDEX_CHUNK {
                    break;
                }
            }
            let Some(last) = chunk.last().map(|r| r.seq) else {
                // No entry left below the head (an empty log): record where the index stands.
                batch.set(
                    Keyspace::Meta,
                    super::audit::META_SUBJECTS_THROUGH,
                    Some(codec::encode_json(
                        Keyspace::Meta,
                        super::audit::META_SUBJECTS_THROUGH,
                        &head.seq,
                    )?),
                );
                self.apply(batch)?;
                break;
            };
            for (ks, key, value) in super::audit::subject_writes(&chunk)? {
                batch.set(ks, &key, Some(value));
            }
            self.apply(batch)?;
            indexed += chunk.len() as u64;
            if last >= head.seq {
                break;
            }
            from = last + 1;
        }
        if indexed > 0 {
            emit(AuditIndexBuilt {
                entries: indexed,
                took: started.elapsed(),
            });
        }
        Ok(true)
    }
}

impl Tx<'_> {
    fn read(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Read<'_>>, TxError> {
        if let Some(v) = self.own.get(ks, key).or_else(|| self.below.get(ks, key)) {
            return Ok(v.map(Read::Overlay));
        }
        Ok(self.store.lookup(ks, key)?.map(Read::Stored))
    }

    /// Reads and decodes a JSON value (seeing this transaction's writes).
    pub fn get<T: DeserializeOwned>(&self, ks: Keyspace, key: &[u8]) -> Result<Option<T>, TxError> {
        match self.read(ks, key)? {
            Some(v) => Ok(Some(codec::decode_json(ks, key, &v)?)),
            None => Ok(None),
        }
    }

    /// Reads a value written with [`Tx::put_raw_bytes`].
    pub fn get_raw_bytes(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, TxError> {
        match self.read(ks, key)? {
            Some(v) => Ok(Some(self.store.resolve_bytes(ks, key, &v)?)),
            None => Ok(None),
        }
    }

    /// Whether `key` exists in `ks`.
    pub fn contains_key(&self, ks: Keyspace, key: &[u8]) -> Result<bool, TxError> {
        Ok(self.read(ks, key)?.is_some())
    }

    /// Writes `value` as version-tagged JSON. Refused for `audit` and `meta`.
    pub fn put<T: Serialize + ?Sized>(
        &mut self,
        ks: Keyspace,
        key: &[u8],
        value: &T,
    ) -> Result<(), TxError> {
        check_writable(ks)?;
        self.put_internal(ks, key, value)
    }

    /// Writes opaque bytes verbatim (after the version tag), e.g. an inbound message in `raw`.
    /// Refused for `audit` and `meta`.
    /// In `raw`, the messages of one commit are stored together as a pack (see
    /// [`super::pack_key`]); until the commit they wait verbatim.
    pub fn put_raw_bytes(&mut self, ks: Keyspace, key: &[u8], bytes: &[u8]) -> Result<(), TxError> {
        check_writable(ks)?;
        if ks == Keyspace::Raw && key.first() == Some(&0) {
            return Err(TxError::store(StoreError::Invalid(
                "raw keys starting with NUL are the store's own".into(),
            )));
        }
        let value = if ks == Keyspace::Raw {
            let mut plain = Vec::with_capacity(bytes.len() + 1);
            plain.push(codec::TAG_BYTES_V1);
            plain.extend_from_slice(bytes);
            plain
        } else {
            codec::encode_bytes(ks, bytes)
        };
        self.own.set(ks, key, Some(value));
        Ok(())
    }

    /// Removes `key`; returns whether it existed. Refused for `audit` and `meta`.
    pub fn remove(&mut self, ks: Keyspace, key: &[u8]) -> Result<bool, TxError> {
        check_writable(ks)?;
        let existed = self.read(ks, key)?.is_some();
        self.own.set(ks, key, None);
        Ok(existed)
    }

    /// Appends `entry` to the audit log in this transaction: it commits or aborts with the
    /// rest. See [`AuditEntry`] for what must never go into an entry.
    pub fn audit(&mut self, entry: AuditEntry) -> Result<AuditReceipt, TxError> {
        entry.validate()?;
        let head: AuditHead = self
            .get(Keyspace::Meta, META_AUDIT_HEAD)?
            .unwrap_or_else(AuditHead::genesis);
        let seq = head
            .seq
            .checked_add(1)
            .ok_or_else(|| StoreError::Invalid("audit sequence exhausted".into()))?;
        let mut record = AuditRecord {
            seq,
            entry,
            prev_hash: head.hash,
            hash: String::new(),
        };
        record.hash = record.computed_hash();
        let receipt = AuditReceipt {
            seq,
            hash: record.hash.clone(),
        };
        self.own.audit.push(record);
        let new_head = AuditHead {
            seq,
            hash: receipt.hash.clone(),
        };
        self.put_internal(Keyspace::Meta, META_AUDIT_HEAD, &new_head)?;
        Ok(receipt)
    }

    /// The store's number `name` as this transaction sees it (see [`Store::meta_number`]).
    pub fn meta_number(&self, name: &str) -> Result<Option<u64>, TxError> {
        self.get(Keyspace::Meta, &super::meta_number_key(name))
    }

    /// Adds `delta` to the store's number `name` in this transaction (a count; see
    /// [`Store::meta_number`]); returns its new value. A count never goes below zero.
    pub fn add_to_meta_number(&mut self, name: &str, delta: i64) -> Result<u64, TxError> {
        let was = self.meta_number(name)?.unwrap_or(0);
        let now = if delta < 0 {
            was.saturating_sub(delta.unsigned_abs())
        } else {
            was.saturating_add(delta.unsigned_abs())
        };
        self.set_meta_number(name, now)?;
        Ok(now)
    }

    /// Sets the store's number `name` in this transaction (see [`Store::meta_number`]).
    pub fn set_meta_number(&mut self, name: &str, value: u64) -> Result<(), TxError> {
        self.put_internal(Keyspace::Meta, &super::meta_number_key(name), &value)
    }

    /// Records the store's format version in `meta`: only an in-place migration calls it, in
    /// the transaction that completes the migration.
    pub fn set_format_version(&mut self, version: u32) -> Result<(), TxError> {
        self.put_internal(Keyspace::Meta, super::META_FORMAT_VERSION, &version)
    }

    pub(crate) fn put_internal<T: Serialize + ?Sized>(
        &mut self,
        ks: Keyspace,
        key: &[u8],
        value: &T,
    ) -> Result<(), TxError> {
        let bytes = codec::encode_json(ks, key, value)?;
        self.own.set(ks, key, Some(bytes));
        Ok(())
    }
}

fn check_writable(ks: Keyspace) -> Result<(), TxError> {
    if ks.is_writable() {
        Ok(())
    } else {
        Err(TxError::store(StoreError::ReadOnlyKeyspace(ks)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::super::*;
    use serde::{Deserialize, Serialize};
    use std::io;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Specimen {
        id: String,
        state: String,
    }

    #[test]
    fn typed_round_trip_inside_and_outside_transactions() {
        let (_tmp, store) = temp_store();
        let s = Specimen {
            id: "S-1".into(),
            state: "accessioned".into(),
        };
        let seen = store
            .transact(|tx| {
                tx.put(Keyspace::Specimens, b"S-1", &s)?;
                // Reads see the transaction's own writes.
                let back: Option<Specimen> = tx.get(Keyspace::Specimens, b"S-1")?;
                tx.put_raw_bytes(Keyspace::Raw, b"r1", b"MSH|...")?;
                Ok::<_, Abort<()>>(back)
            })
            .unwrap();
        assert_eq!(seen.as_ref(), Some(&s));
        assert_eq!(
            store.get::<Specimen>(Keyspace::Specimens, b"S-1").unwrap(),
            Some(s)
        );
        assert_eq!(
            store.get_raw_bytes(Keyspace::Raw, b"r1").unwrap().unwrap(),
            b"MSH|..."
        );
        assert_eq!(
            store.tamper_get(Keyspace::Specimens, b"S-1").unwrap()[0],
            0x01
        );
        assert_eq!(store.tamper_get(Keyspace::Raw, b"r1").unwrap()[0], 0x02);
    }

    /// A job that met the engine's own I/O error (sled hands a failed background write of its
    /// log to every later read) loses durability at once: the store is unready before any
    /// later job reaches the commit. A failed file operation of the store's own does not.
    #[test]
    fn a_job_meeting_the_engines_io_error_loses_durability_its_own_file_error_does_not() {
        let (_tmp, store) = temp_store();
        let full = || io::Error::from_raw_os_error(28);
        let own = store.transact(|_tx| {
            Err::<(), _>(Abort::<()>::Tx(TxError::store(StoreError::io(
                "writing a blob",
                full(),
            ))))
        });
        assert!(matches!(
            own,
            Err(TransactError::Store(StoreError::Io { .. }))
        ));
        assert!(store.durability_lost().is_none());
        store.flush_durable().unwrap();

        let engine = store.transact(|_tx| {
            Err::<(), _>(Abort::<()>::Tx(TxError::store(StoreError::engine(
                "reading",
                sled::Error::Io(full()),
            ))))
        });
        let Err(TransactError::Store(e)) = engine else {
            panic!("{engine:?}")
        };
        assert!(e.breaks_durability(), "{e}");
        let lost = store.durability_lost().expect("durability lost");
        assert!(lost.contains("reading"), "{lost}");
        assert!(matches!(
            store.flush_durable(),
            Err(StoreError::DurabilityLost(_))
        ));
    }

    #[test]
    fn engine_errors_that_break_durability() {
        let e = |err| StoreError::engine("committing a transaction", err);
        assert!(e(sled::Error::Io(io::Error::other("eio"))).breaks_durability());
        assert!(e(sled::Error::ReportableBug("x".into())).breaks_durability());
        assert!(!e(sled::Error::Unsupported("x".into())).breaks_durability());
        assert!(!e(sled::Error::CollectionNotFound(vec![1].into())).breaks_durability());
        assert!(!StoreError::Invalid("x".into()).breaks_durability());
    }

    #[test]
    fn messages_of_one_commit_are_stored_as_one_pack() {
        let (_tmp, store) = temp_store();
        let messages: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                format!("MSH|^~\\&|chem1|LAB|||20261201||ORU^R01|C{i}|P|2.5.1\rOBX|{i}")
                    .into_bytes()
            })
            .collect();
        let read_back = store
            .transact(|tx| {
                for (i, m) in messages.iter().enumerate() {
                    tx.put_raw_bytes(Keyspace::Raw, format!("chem1\0C{i}").as_bytes(), m)?;
                }
                // Before the commit, reads see the message itself.
                Ok::<_, Abort<()>>(tx.get_raw_bytes(Keyspace::Raw, b"chem1\0C3")?)
            })
            .unwrap();
        assert_eq!(read_back.as_deref(), Some(messages[3].as_slice()));
        // Five pointers and one pack.
        assert_eq!(store.count(Keyspace::Raw), 6);
        assert!(store.contains_key(Keyspace::Raw, &pack_key(1)).unwrap());
        for (i, m) in messages.iter().enumerate() {
            let key = format!("chem1\0C{i}");
            assert_eq!(
                store.tamper_get(Keyspace::Raw, key.as_bytes()).unwrap()[0],
                0x05
            );
            assert_eq!(
                store
                    .get_raw_bytes(Keyspace::Raw, key.as_bytes())
                    .unwrap()
                    .as_ref(),
                Some(m)
            );
        }
        // Inside a later transaction too; the next commit's pack has the next number.
        store
            .transact(|tx| {
                assert_eq!(
                    tx.get_raw_bytes(Keyspace::Raw, b"chem1\0C0")?.as_ref(),
                    Some(&messages[0])
                );
                tx.put_raw_bytes(Keyspace::Raw, b"chem1\0D1", b"one")?;
                tx.put_raw_bytes(Keyspace::Raw, b"chem1\0D2", b"two")?;
                Ok::<_, Abort<()>>(())
            })
            .unwrap();
        assert!(store.contains_key(Keyspace::Raw, &pack_key(2)).unwrap());
        assert_eq!(
            store
                .get_raw_bytes(Keyspace::Raw, b"chem1\0D2")
                .unwrap()
                .unwrap(),
            b"two"
        );
        // The store's own keys cannot be written by domain code.
        assert!(matches!(
            store.transact(|tx| {
                tx.put_raw_bytes(Keyspace::Raw, &pack_key(9), b"x")?;
                Ok::<_, Abort<()>>(())
            }),
            Err(TransactError::Store(StoreError::Invalid(_)))
        ));
    }

    #[test]
    fn a_broken_pack_or_pointer_is_a_content_free_decode_error() {
        let (_tmp, store) = temp_store();
        store
            .transact(|tx| {
                tx.put_raw_bytes(Keyspace::Raw, b"a\0secret-1", b"MSH|one")?;
                tx.put_raw_bytes(Keyspace::Raw, b"a\0secret-2", b"MSH|two")?;
                Ok::<_, Abort<()>>(())
            })
            .unwrap();
        let pointer = store.tamper_get(Keyspace::Raw, b"a\0secret-2").unwrap();
        let check = |what: &str| {
            let err = store
                .get_raw_bytes(Keyspace::Raw, b"a\0secret-2")
                .unwrap_err();
            assert!(matches!(err, StoreError::Decode { .. }), "{what}: {err:?}");
            let text = err.to_string();
            assert!(!text.contains("secret") && !text.contains("MSH"), "{text}");
        };
        // A pointer past the pack's end, a truncated pointer, a missing pack.
        let mut past = pointer.clone();
        past[12] = 9;
        store.tamper_put(Keyspace::Raw, b"a\0secret-2", &past);
        check("index past the end");
        store.tamper_put(Keyspace::Raw, b"a\0secret-2", &pointer[..7]);
        check("truncated pointer");
        store.tamper_put(Keyspace::Raw, b"a\0secret-2", &pointer);
        let pack = store.tamper_get(Keyspace::Raw, &pack_key(1)).unwrap();
        store.tamper_put(Keyspace::Raw, &pack_key(1), &pack[..pack.len() - 3]);
        check("truncated pack");
        store.tamper_remove(Keyspace::Raw, &pack_key(1));
        check("missing pack");
    }

    #[test]
    fn unknown_version_is_refused_inside_a_transaction() {
        let (_tmp, store) = temp_store();
        store.tamper_put(Keyspace::Specimens, b"S-9", b"\x07{}");
        let err = store
            .transact(|tx| {
                let _: Option<Specimen> = tx.get(Keyspace::Specimens, b"S-9")?;
                Ok::<_, Abort<()>>(())
            })
            .unwrap_err();
        match err {
            TransactError::Store(StoreError::UnknownVersion { key, version }) => {
                assert_eq!(version, 7);
                assert_eq!(key.keyspace, Keyspace::Specimens);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            store.get::<Specimen>(Keyspace::Specimens, b"S-9"),
            Err(StoreError::UnknownVersion { version: 7, .. })
        ));
    }

    #[test]
    fn aborted_transaction_leaves_nothing_in_any_keyspace() {
        let (_tmp, store) = temp_store();
        let err = store
            .transact(|tx| {
                tx.put_raw_bytes(Keyspace::Raw, b"r1", b"msg")?;
                tx.put(Keyspace::Specimens, b"S-1", &"x")?;
                tx.put(Keyspace::Dedupe, b"chem1\0c1", &"r1")?;
                tx.put(Keyspace::ByState, &state_key("received", "S-1")?, &())?;
                tx.put(Keyspace::Due, &due_key(5, b"S-1"), &"S-1")?;
                tx.put(Keyspace::Quarantine, b"q", &"reason")?;
                tx.audit(AuditEntry::new(1, "lims", "accession", "S-1"))?;
                Err::<(), _>(Abort::Domain("refused"))
            })
            .unwrap_err();
        assert!(matches!(err, TransactError::Aborted("refused")));
        for ks in Keyspace::ALL {
            // Only the format version and the audit index's mark.
            let expected = if ks == Keyspace::Meta { 2 } else { 0 };
            assert_eq!(store.count(ks), expected, "{ks}");
        }
        assert_eq!(store.audit_head().unwrap().seq, 0);
    }

    #[test]
    fn store_error_inside_closure_aborts_everything() {
        let (_tmp, store) = temp_store();
        let err = store
            .transact(|tx| {
                tx.put(Keyspace::Specimens, b"S-1", &"x")?;
                tx.put(Keyspace::Meta, b"audit_head", &"forged")?;
                Ok::<_, Abort<()>>(())
            })
            .unwrap_err();
        assert!(matches!(
            err,
            TransactError::Store(StoreError::ReadOnlyKeyspace(Keyspace::Meta))
        ));
        assert!(matches!(
            store.transact(|tx| {
                tx.remove(Keyspace::Audit, &1u64.to_be_bytes())?;
                Ok::<_, Abort<()>>(())
            }),
            Err(TransactError::Store(StoreError::ReadOnlyKeyspace(
                Keyspace::Audit
            )))
        ));
        assert_eq!(store.count(Keyspace::Specimens), 0);
    }

    #[test]
    fn remove_reports_existence() {
        let (_tmp, store) = temp_store();
        let (first, second) = store
            .transact(|tx| {
                tx.put(Keyspace::Specimens, b"S-1", &1u8)?;
                let a = tx.remove(Keyspace::Specimens, b"S-1")?;
                let b = tx.remove(Keyspace::Specimens, b"S-1")?;
                Ok::<_, Abort<()>>((a, b))
            })
            .unwrap();
        assert!(first);
        assert!(!second);
        assert!(!store.contains_key(Keyspace::Specimens, b"S-1").unwrap());
    }

    #[test]
    fn indexes_query_by_state_and_due_time() {
        let (_tmp, store) = temp_store();
        store
            .transact(|tx| {
                for (id, state, due) in [
                    ("S-1", "received", 3000u64),
                    ("S-2", "received", 1000),
                    ("S-3", "reported", 2000),
                    ("S-10", "received", u64::MAX),
                ] {
                    tx.put(Keyspace::ByState, &state_key(state, id)?, &())?;
                    tx.put(Keyspace::Due, &due_key(due, id.as_bytes()), &id)?;
                }
                Ok::<_, Abort<()>>(())
            })
            .unwrap();
        assert_eq!(
            store.ids_in_state("received").unwrap(),
            vec!["S-1", "S-10", "S-2"]
        );
        assert_eq!(store.ids_in_state("reported").unwrap(), vec!["S-3"]);
        assert!(store.ids_in_state("nothing").unwrap().is_empty());
        assert_eq!(
            store
                .count_prefix(Keyspace::ByState, b"received\0")
                .unwrap(),
            3
        );
        let due: Vec<(u64, String)> = store
            .due_until::<String>(2000)
            .map(|r| {
                let (k, v) = r.unwrap();
                (split_due_key(&k).unwrap().0, v)
            })
            .collect();
        assert_eq!(due, vec![(1000, "S-2".into()), (2000, "S-3".into())]);
        assert_eq!(store.due_until::<String>(u64::MAX).count(), 4);
        assert!(state_key("bad\0state", "S-1").is_err());
        assert!(dedupe_key("", "c1").is_err());
        assert_eq!(dedupe_key("chem1", "c1").unwrap(), b"chem1\0c1");
    }
}
