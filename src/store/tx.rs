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
//! **The closure must be pure**: it may run more than once (the engine retries it on a
//! conflict), and only the effects of the run that commits are kept. It must not send
//! messages, write files, bump counters or read a clock; compute such things before the
//! transaction and move them in. Propagate every [`TxError`] with `?` (never swallow one): it
//! may be the engine's request to retry.

use super::audit::{AuditEntry, AuditHead, AuditReceipt, AuditRecord, META_AUDIT_HEAD};
use super::{Keyspace, Store, StoreError, codec};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use std::fmt;

/// The view a transaction closure works through. Reads see the transaction's own writes.
pub struct Tx<'a> {
    views: &'a [TransactionalTree],
}

/// An error inside a transaction: an engine condition (conflict, storage failure) or a store
/// error (encoding, read-only keyspace, bad audit entry). Propagate it with `?`.
pub struct TxError(Kind);

enum Kind {
    Engine(UnabortableTransactionError),
    Store(StoreError),
}

impl TxError {
    fn engine(e: UnabortableTransactionError) -> TxError {
        TxError(Kind::Engine(e))
    }

    pub(crate) fn store(e: StoreError) -> TxError {
        TxError(Kind::Store(e))
    }

    /// The store error, if this is one (not an engine condition).
    pub fn store_error(&self) -> Option<&StoreError> {
        match &self.0 {
            Kind::Store(e) => Some(e),
            Kind::Engine(_) => None,
        }
    }
}

impl fmt::Debug for TxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Engine(e) => write!(f, "TxError::Engine({e})"),
            Kind::Store(e) => write!(f, "TxError::Store({e:?})"),
        }
    }
}

impl fmt::Display for TxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Engine(e) => write!(f, "storage engine: {e}"),
            Kind::Store(e) => e.fmt(f),
        }
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

/// What the closure's error becomes inside sled.
enum Internal<E> {
    Domain(E),
    Store(StoreError),
}

impl Store {
    /// Runs `f` as one atomic, serialisable transaction over every keyspace.
    ///
    /// Either every write of the closure commits, or (abort, error) none does. The closure may
    /// be run several times and must be pure (see the module notes). The commit reaches sled's
    /// memory only: it is **not durable** until [`Store::flush_durable`] returns `Ok` (the
    /// [`GroupCommitter`](super::GroupCommitter) does that for you).
    pub fn transact<R, E, F>(&self, f: F) -> Result<R, TransactError<E>>
    where
        F: Fn(&mut Tx<'_>) -> Result<R, Abort<E>>,
    {
        use sled::Transactional;
        let trees: &[sled::Tree] = &self.inner.trees;
        let result = <[sled::Tree] as Transactional<Internal<E>>>::transaction(trees, |views| {
            let mut tx = Tx { views };
            match f(&mut tx) {
                Ok(r) => Ok(r),
                Err(Abort::Domain(e)) => {
                    Err(ConflictableTransactionError::Abort(Internal::Domain(e)))
                }
                Err(Abort::Tx(TxError(Kind::Engine(e)))) => Err(e.into()),
                Err(Abort::Tx(TxError(Kind::Store(e)))) => {
                    Err(ConflictableTransactionError::Abort(Internal::Store(e)))
                }
            }
        });
        match result {
            Ok(r) => Ok(r),
            Err(TransactionError::Abort(Internal::Domain(e))) => Err(TransactError::Aborted(e)),
            Err(TransactionError::Abort(Internal::Store(e))) => Err(TransactError::Store(e)),
            Err(TransactionError::Storage(e)) => {
                // An I/O error (a full disk, usually) or corruption in the engine's write path
                // may leave a hole in the log that recovery stops at, taking later commits with
                // it: like a failed fsync, nothing after it can be promised durable until the
                // store is reopened.
                let lost = matches!(
                    e,
                    sled::Error::Io(_)
                        | sled::Error::Corruption { .. }
                        | sled::Error::ReportableBug(_)
                );
                let err = StoreError::engine("committing a transaction", e);
                if lost {
                    self.lose_durability(err.to_string());
                }
                Err(TransactError::Store(err))
            }
        }
    }
}

impl Tx<'_> {
    fn view(&self, ks: Keyspace) -> &TransactionalTree {
        &self.views[ks.index()]
    }

    fn read(&self, ks: Keyspace, key: &[u8]) -> Result<Option<sled::IVec>, TxError> {
        self.view(ks).get(key).map_err(TxError::engine)
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
            Some(v) => Ok(Some(codec::decode_bytes(ks, key, &v)?)),
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
    pub fn put_raw_bytes(&mut self, ks: Keyspace, key: &[u8], bytes: &[u8]) -> Result<(), TxError> {
        check_writable(ks)?;
        self.view(ks)
            .insert(key, codec::encode_bytes(ks, bytes))
            .map_err(TxError::engine)?;
        Ok(())
    }

    /// Removes `key`; returns whether it existed. Refused for `audit` and `meta`.
    pub fn remove(&mut self, ks: Keyspace, key: &[u8]) -> Result<bool, TxError> {
        check_writable(ks)?;
        let existed = self
            .view(ks)
            .remove(key)
            .map_err(TxError::engine)?
            .is_some();
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
        self.put_internal(Keyspace::Audit, &seq.to_be_bytes(), &record)?;
        let new_head = AuditHead {
            seq,
            hash: record.hash.clone(),
        };
        self.put_internal(Keyspace::Meta, META_AUDIT_HEAD, &new_head)?;
        Ok(AuditReceipt {
            seq,
            hash: record.hash,
        })
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
        self.view(ks).insert(key, bytes).map_err(TxError::engine)?;
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
            let expected = usize::from(ks == Keyspace::Meta); // only the format version
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
