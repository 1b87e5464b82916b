//! The store's archive upkeep: moves sled's recent keys into a new archive segment when a
//! spill is due, and merges segments of one size class (see the store's `archive` module).
//! Checked every interval on a thread of its own; at shutdown a merge in
//! progress is abandoned (a spill finishes: it is bounded by the spill threshold), and what
//! sled still holds is spilled once every writer has stopped ([`spill_at_stop`]).

use crate::core::telemetry::emit;
use crate::store::events::ArchiveFailed;
use crate::store::{Store, StoreError};
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

/// How often merges are looked for.
const COMPACT_EVERY: Duration = Duration::from_secs(1);

/// How long after a start the first merge step runs.
const FIRST_MERGE_AFTER: Duration = Duration::from_secs(2);

/// Runs the upkeep until `shutdown`: spills checked every `interval`, merges every second,
/// each on a thread of its own (not the runtime's blocking pool, whose threads serve
/// requests), so that a long merge never holds a spill back.
pub async fn run(store: Store, interval: Duration, shutdown: CancellationToken) {
    let stop = Arc::new(AtomicBool::new(false));
    let spawn =
        |name: &str, step: fn(&Store, &AtomicBool) -> Result<(), StoreError>, every, first| {
            let (store, stop) = (store.clone(), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || upkeep(&store, every, first, &stop, step))
        };
    let spiller = spawn("custodian-spill", spill_if_due, interval, Duration::ZERO);
    // The first merge step (which reads every segment's index and filter) waits a while: a
    // start's first requests (`/readyz`, the first messages) do not share the CPUs with it.
    let compactor = spawn(
        "custodian-merge",
        merge_all,
        COMPACT_EVERY,
        FIRST_MERGE_AFTER,
    );
    let threads: Vec<_> = [spiller, compactor]
        .into_iter()
        .filter_map(|t| match t {
            Ok(t) => Some(t),
            Err(_) => {
                emit(ArchiveFailed {
                    error: "an archive thread could not be started",
                });
                None
            }
        })
        .collect();
    shutdown.cancelled().await;
    stop.store(true, Ordering::Relaxed);
    // A spill in progress finishes (bounded by the threshold); a merge is abandoned.
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
}

fn spill_if_due(store: &Store, _stop: &AtomicBool) -> Result<(), StoreError> {
    if store.spill_due() {
        store.spill()?;
    }
    Ok(())
}

fn merge_all(store: &Store, stop: &AtomicBool) -> Result<(), StoreError> {
    // The segments' indexes and bloom filters: read here after a start rather than before
    // ready (after the first time, and for a segment read since, this does nothing).
    store.load_archive()?;
    while !stop.load(Ordering::Relaxed) {
        if store.compact(stop)?.is_none() {
            break;
        }
    }
    Ok(())
}

fn upkeep(
    store: &Store,
    interval: Duration,
    first: Duration,
    stop: &AtomicBool,
    step: fn(&Store, &AtomicBool) -> Result<(), StoreError>,
) {
    nap_until(first, stop);
    while !stop.load(Ordering::Relaxed) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(store, stop)));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => emit(ArchiveFailed {
                error: &e.to_string(),
            }),
            Err(_) => emit(ArchiveFailed {
                error: "an archive step panicked",
            }),
        }
        nap_until(interval, stop);
    }
}

/// Sleeps for `span`, in short naps, returning early once `stop` is set.
fn nap_until(span: Duration, stop: &AtomicBool) {
    let mut slept = Duration::ZERO;
    while slept < span && !stop.load(Ordering::Relaxed) {
        let nap = Duration::from_millis(20).min(span - slept);
        std::thread::sleep(nap);
        slept += nap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditEntry, Keyspace, StoreOptions};

    /// A step's first run waits `first` (never less: a sleep does not end early), runs at once
    /// when `first` is zero, and a stop during the wait ends the thread without running it.
    #[test]
    fn the_first_step_waits_and_a_stop_during_the_wait_skips_it() {
        use std::sync::atomic::AtomicUsize;
        use std::time::Instant;
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        fn count(_: &Store, stop: &AtomicBool) -> Result<(), StoreError> {
            RUNS.fetch_add(1, Ordering::SeqCst);
            stop.store(true, Ordering::SeqCst);
            Ok(())
        }
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let long = Duration::from_secs(3600);

        let stop = AtomicBool::new(false);
        let t = Instant::now();
        upkeep(&store, long, Duration::from_millis(150), &stop, count);
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(RUNS.load(Ordering::SeqCst), 1);

        let stop = AtomicBool::new(false);
        upkeep(&store, long, Duration::ZERO, &stop, count);
        assert_eq!(
            RUNS.load(Ordering::SeqCst),
            2,
            "no wait: the step runs at once"
        );

        let stop = Arc::new(AtomicBool::new(false));
        let waiting = {
            let (store, stop) = (store.clone(), Arc::clone(&stop));
            std::thread::spawn(move || upkeep(&store, long, long, &stop, count))
        };
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::SeqCst);
        let t = Instant::now();
        waiting.join().unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the stop ends the wait"
        );
        assert_eq!(
            RUNS.load(Ordering::SeqCst),
            2,
            "stopped before its first run"
        );
    }

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
