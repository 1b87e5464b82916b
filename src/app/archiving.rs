//! The store's archive upkeep: moves sled's recent keys into a new archive segment when a
//! spill is due, and merges segments of one size class (see the store's `archive` module).
//! Checked every interval; each step runs on a blocking thread, and at shutdown a merge in
//! progress is abandoned (a spill finishes: it is bounded by the spill threshold).

use crate::core::telemetry::emit;
use crate::store::Store;
use crate::store::events::ArchiveFailed;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Moves what sled holds into the archive at a clean stop, so that the next start opens an
/// almost empty sled (called once every writer has stopped).
pub async fn spill_at_stop(store: &Store) {
    if store.archive_usage().hot_writes == 0 {
        return;
    }
    let st = store.clone();
    match tokio::task::spawn_blocking(move || st.spill()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => emit(ArchiveFailed {
            error: &e.to_string(),
        }),
        Err(_) => emit(ArchiveFailed {
            error: "the archive step panicked",
        }),
    }
}

/// Runs the upkeep until `shutdown`.
pub async fn run(store: Store, interval: Duration, shutdown: CancellationToken) {
    let stop = Arc::new(AtomicBool::new(false));
    // The segments' indexes and bloom filters, read after the start rather than before ready.
    let st = store.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || st.load_archive()).await {
        emit(ArchiveFailed {
            error: &e.to_string(),
        });
    }
    loop {
        let (st, flag) = (store.clone(), Arc::clone(&stop));
        let step = tokio::task::spawn_blocking(move || st.maintain_archive(&flag));
        tokio::pin!(step);
        let outcome = tokio::select! {
            r = &mut step => r,
            _ = shutdown.cancelled() => {
                stop.store(true, Ordering::Relaxed);
                let _ = step.await;
                return;
            }
        };
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => emit(ArchiveFailed {
                error: &e.to_string(),
            }),
            Err(_) => emit(ArchiveFailed {
                error: "the archive step panicked",
            }),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditEntry, Keyspace, StoreOptions};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_due_spill_runs_in_the_background_and_stops_with_the_daemon() {
        let tmp = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            archive_after_keys: 50,
            ..StoreOptions::default()
        };
        let store = Store::open_with(&tmp.path().join("store"), &options).unwrap();
        for i in 0..40u32 {
            store
                .transact(|tx| {
                    tx.put(Keyspace::Specimens, format!("S-{i:03}").as_bytes(), &i)?;
                    tx.audit(AuditEntry::new(1, "test", "stored", format!("S-{i:03}")))?;
                    Ok::<_, crate::store::Abort<()>>(())
                })
                .unwrap();
        }
        store.flush_durable().unwrap();
        assert!(store.spill_due());
        let token = CancellationToken::new();
        let task = tokio::spawn(run(store.clone(), Duration::from_millis(10), token.clone()));
        let mut waited = 0;
        while store.archive_usage().segments == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
            assert!(waited < 500, "no spill within 5 s");
        }
        token.cancel();
        task.await.unwrap();
        assert!(!store.spill_due());
        for i in 0..40u32 {
            let v: Option<u32> = store
                .get(Keyspace::Specimens, format!("S-{i:03}").as_bytes())
                .unwrap();
            assert_eq!(v, Some(i));
        }
        assert_eq!(store.verify_audit().unwrap().entries, 40);
    }
}
