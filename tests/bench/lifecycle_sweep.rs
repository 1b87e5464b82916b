//! The lifecycle sweep costs in proportion to what is due, not to what is stored.
//!
//! `cargo bench --bench lifecycle_sweep`. For each store size (10k, 100k, 1M specimens by
//! default) a fresh store is filled with compact synthetic specimen records, each released with
//! a retention record and a retention clock in the `due` index; all but `DUE` of them are due a
//! week from now, `DUE` (1000) are due already. Each round re-arms those `DUE` clocks and times
//! one `lifecycle::sweep` (which fires them: retention evaluated, discardable index, next clock,
//! audit entry, durable group commit). The median of the rounds is reported with its ratio to
//! the 10k baseline measured in the same run; a flat ratio (about 1) is the claim.
//!
//! `CUSTODIAN_BENCH_SIZES` (comma-separated), `CUSTODIAN_BENCH_DUE`, `CUSTODIAN_BENCH_ROUNDS`
//! and `CUSTODIAN_BENCH_DIR` (where the stores go; default the system temporary directory)
//! change the run.

use custodian::custody::lifecycle::{self, ClockKind, DueItem, Settings, due_entry_key};
use custodian::domain::retention::{Basis, Retention, SplitBottle};
use custodian::domain::rules::ProfileSet;
use custodian::domain::specimen::{SpecimenRecord, State};
use custodian::store::{Abort, GroupCommitter, GroupConfig, Keyspace, Store, state_key};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DAY: u64 = 86_400_000;
/// "Now" of the benchmark: 2026-06-01T00:00Z.
const NOW: u64 = 1_780_272_000_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn id(n: usize) -> String {
    format!("S{n:08}")
}

/// A released negative: discardable 7 days after `reported`.
fn record(n: usize, reported: u64) -> SpecimenRecord {
    let mut r = SpecimenRecord::new(&id(n), reported);
    r.state = State::Released;
    r.lifecycle.retention = Some(Retention::new(
        Basis::AfterReport,
        reported,
        SplitBottle::Held,
    ));
    r.lifecycle.retention_due_ms = Some(reported + 7 * DAY);
    r
}

fn populate(store: &Store, size: usize, due: usize) {
    const CHUNK: usize = 20_000;
    let mut start = 0;
    while start < size {
        let end = (start + CHUNK).min(size);
        store
            .transact(|tx| {
                for n in start..end {
                    // The first `due` specimens were reported long ago; the rest just now.
                    let reported = if n < due { NOW - 30 * DAY } else { NOW };
                    let rec = record(n, reported);
                    let at = rec.lifecycle.retention_due_ms.unwrap();
                    let key = id(n);
                    tx.put(Keyspace::Specimens, key.as_bytes(), &rec)?;
                    tx.put(
                        Keyspace::ByState,
                        &state_key(State::Released.key(), &key)?,
                        &(),
                    )?;
                    tx.put(
                        Keyspace::Due,
                        &due_entry_key(at, ClockKind::Retention, &key),
                        &DueItem {
                            kind: ClockKind::Retention,
                            specimen_id: key.clone(),
                        },
                    )?;
                }
                Ok::<_, Abort<()>>(())
            })
            .unwrap();
        start = end;
    }
    store.flush_durable().unwrap();
}

/// Puts the `due` clocks back as they were before the sweep fired them.
fn rearm(store: &Store, due: usize) {
    store
        .transact(|tx| {
            for n in 0..due {
                let rec = record(n, NOW - 30 * DAY);
                let at = rec.lifecycle.retention_due_ms.unwrap();
                let key = id(n);
                // Remove the clock the firing scheduled next (the records' two years).
                if let Some(old) = tx
                    .get::<SpecimenRecord>(Keyspace::Specimens, key.as_bytes())?
                    .and_then(|r| r.lifecycle.retention_due_ms)
                {
                    tx.remove(
                        Keyspace::Due,
                        &due_entry_key(old, ClockKind::Retention, &key),
                    )?;
                }
                tx.remove(
                    Keyspace::ByState,
                    &state_key(lifecycle::DISCARDABLE_INDEX, &key)?,
                )?;
                tx.put(Keyspace::Specimens, key.as_bytes(), &rec)?;
                tx.put(
                    Keyspace::Due,
                    &due_entry_key(at, ClockKind::Retention, &key),
                    &DueItem {
                        kind: ClockKind::Retention,
                        specimen_id: key.clone(),
                    },
                )?;
            }
            Ok::<_, Abort<()>>(())
        })
        .unwrap();
    store.flush_durable().unwrap();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let sizes: Vec<usize> = std::env::var("CUSTODIAN_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    let due: usize = env_or("CUSTODIAN_BENCH_DUE", 1000);
    let rounds: usize = env_or("CUSTODIAN_BENCH_ROUNDS", 5);
    let root = match std::env::var_os("CUSTODIAN_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut settings = Settings::new(Arc::new(ProfileSet::new()), "none");
    settings.retention.after_report_ms = 7 * DAY;
    let settings = Arc::new(settings);
    println!(
        "lifecycle_sweep: {due} clocks due per sweep, {rounds} rounds per size, dir {}",
        root.path().display()
    );
    let mut baseline: Option<f64> = None;
    for size in sizes {
        let dir = root.path().join(format!("store-{size}"));
        let store = Store::open(&dir).unwrap();
        let t = Instant::now();
        populate(&store, size, due);
        let filled = t.elapsed();
        let committer = GroupCommitter::start(store.clone(), GroupConfig::default()).unwrap();
        let mut times = Vec::new();
        for round in 0..rounds {
            if round > 0 {
                rearm(&store, due);
            }
            let t = Instant::now();
            let report = rt
                .block_on(lifecycle::sweep(&committer, &settings, NOW))
                .unwrap();
            times.push(t.elapsed());
            assert_eq!(report.applied(ClockKind::Retention).len(), due);
            assert!(report.failed.is_empty());
        }
        // Nothing else was due: the other clocks are a week away.
        assert_eq!(store.due_until::<DueItem>(NOW).count(), 0);
        let m = median(times.clone());
        let ms = m.as_secs_f64() * 1000.0;
        let ratio = match baseline {
            None => {
                baseline = Some(ms);
                1.0
            }
            Some(b) => ms / b,
        };
        let all: Vec<String> = times
            .iter()
            .map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
            .collect();
        println!(
            "{size:>9} specimens ({} due entries, filled in {:.1} s): sweep of {due} due: median {ms:.1} ms (rounds: {} ms), ratio to 10k baseline {ratio:.2}",
            store.count(Keyspace::Due),
            filled.as_secs_f64(),
            all.join(", ")
        );
        rt.block_on(committer.shutdown());
        drop(committer);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
