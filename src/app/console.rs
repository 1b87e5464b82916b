//! The console's wiring: what it reads from the store (records, the image of Copy 1 as received,
//! the signed reports of a specimen) and how the admin layer's audit entries are written (one
//! durable commit per call, before the page that needs them is sent).

use crate::admin::console::ConsoleData;
use crate::domain::rules::ProfileSet;
use crate::domain::specimen::{SpecimenRecord, State};
use crate::store::{Abort, AuditEntry, GroupCommitter, Keyspace, Store, Tx};
use std::sync::Arc;

/// The console's read access to the store.
pub struct ConsoleStore {
    pub store: Store,
    pub profiles: Arc<ProfileSet>,
    pub default_profile: String,
}

impl ConsoleData for ConsoleStore {
    /// The record with its results (kept in keys of their own).
    fn record(&self, id: &str) -> Result<Option<SpecimenRecord>, String> {
        crate::custody::records::read_specimen(&self.store, id).map_err(|e| e.to_string())
    }

    fn in_state(&self, state: State) -> Result<Vec<SpecimenRecord>, String> {
        let mut out = Vec::new();
        for id in self
            .store
            .ids_in_state(state.key())
            .map_err(|e| e.to_string())?
        {
            if let Some(r) = self.record(&id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn profiles(&self) -> &ProfileSet {
        &self.profiles
    }

    fn default_profile(&self) -> &str {
        &self.default_profile
    }

    fn ccf_image(&self, id: &str) -> Result<Option<Vec<u8>>, String> {
        let Some(rec) = self.record(id)? else {
            return Ok(None);
        };
        let Some(meta) = rec.ccf_image else {
            return Ok(None);
        };
        let bytes = self
            .store
            .get_raw_bytes(Keyspace::Images, &crate::store::image_key(id, "received"))
            .map_err(|e| e.to_string())?;
        match bytes {
            Some(b) if crate::domain::copy1::sha256_hex(&b) == meta.sha256 => Ok(Some(b)),
            Some(_) => Err("the stored image does not match its recorded SHA-256".into()),
            None => Ok(None),
        }
    }

    fn reports_of(&self, id: &str) -> Result<Vec<crate::custody::outbox::StoredReport>, String> {
        let mut out = Vec::new();
        for item in self
            .store
            .iter::<crate::custody::outbox::StoredReport>(Keyspace::Reports)
        {
            let (_, r) = item.map_err(|e| e.to_string())?;
            if r.specimen_id == id {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.released_at_ms);
        Ok(out)
    }
}

/// Audit entries written through the group committer: durable when the future resolves.
pub fn audit_sink(committer: GroupCommitter) -> crate::admin::AuditSink {
    Arc::new(move |entries: Vec<AuditEntry>| {
        let committer = committer.clone();
        Box::pin(async move {
            committer
                .submit(move |tx: &mut Tx<'_>| -> Result<(), Abort<String>> {
                    for e in &entries {
                        tx.audit(e.clone())?;
                    }
                    Ok(())
                })
                .await
                .map_err(|e| e.to_string())
        })
    })
}
