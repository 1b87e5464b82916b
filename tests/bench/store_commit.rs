//! Durable commit throughput: group commit vs one flush+fsync per record.
//!
//! `cargo bench --bench store_commit`. Each record is a ~600-byte inbound message written to
//! `raw`, a `dedupe` entry and an audit entry, in one transaction, with durability on.
//! Set `CUSTODIAN_BENCH_DIR` to put the stores on another file system (default: the system
//! temporary directory) and `CUSTODIAN_BENCH_SECS` to change the duration of each run (3).

use custodian::store::{
    Abort, AuditEntry, GroupCommitter, GroupConfig, Keyspace, Store, Tx, dedupe_key,
};
use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RECORD_BYTES: usize = 600;

fn record_job(
    key: String,
    payload: Arc<Vec<u8>>,
) -> impl Fn(&mut Tx<'_>) -> Result<(), Abort<()>> + Send + 'static {
    move |tx| {
        tx.put_raw_bytes(Keyspace::Raw, key.as_bytes(), &payload)?;
        tx.put(Keyspace::Dedupe, &dedupe_key("bench", &key)?, &key)?;
        tx.audit(AuditEntry::new(
            0,
            "analyzer:bench",
            "received",
            key.clone(),
        ))?;
        Ok(())
    }
}

fn payload() -> Arc<Vec<u8>> {
    let mut msg = b"MSH|^~\\&|CHEM1|LAB|CUSTODIAN|LAB|20250101120000||ORU^R01|".to_vec();
    while msg.len() < RECORD_BYTES {
        msg.extend_from_slice(b"OBX|1|NM|THC^Cannabinoids||12|ng/mL|||||F\r");
    }
    msg.truncate(RECORD_BYTES);
    Arc::new(msg)
}

struct Run {
    commits: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.commits as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        let idx = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[idx]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn bench_root() -> tempfile::TempDir {
    match std::env::var_os("CUSTODIAN_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

/// Bare fsync cost on this file system: append 600 bytes, fsync, repeat.
fn bare_fsync(root: &std::path::Path, secs: Duration) -> Vec<Duration> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("fsync-probe"))
        .unwrap();
    let buf = vec![b'x'; RECORD_BYTES];
    let mut lat = Vec::new();
    let end = Instant::now() + secs;
    while Instant::now() < end {
        let t = Instant::now();
        f.write_all(&buf).unwrap();
        f.sync_all().unwrap();
        lat.push(t.elapsed());
    }
    lat
}

/// Baseline: one transaction, then flush + fsync, per record; no grouping.
fn baseline(root: &std::path::Path, secs: Duration) -> (Run, Vec<Duration>, Vec<Duration>) {
    let store = Store::open(&root.join("baseline")).unwrap();
    let payload = payload();
    let mut latencies = Vec::new();
    let mut engine = Vec::new();
    let mut fsync = Vec::new();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < secs {
        let t = Instant::now();
        store
            .transact(record_job(format!("b-{i:08}"), Arc::clone(&payload)))
            .unwrap();
        let flush = store.flush_durable().unwrap();
        latencies.push(t.elapsed());
        engine.push(flush.engine_flush);
        fsync.push(flush.fsync_log);
        i += 1;
    }
    let run = Run {
        commits: latencies.len(),
        elapsed: start.elapsed(),
        latencies,
    };
    (run, engine, fsync)
}

fn grouped(
    root: &std::path::Path,
    name: &str,
    submitters: usize,
    config: GroupConfig,
    secs: Duration,
) -> Run {
    let store = Store::open(&root.join(name)).unwrap();
    let gc = GroupCommitter::start(store, config).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let payload = payload();
    let start = Instant::now();
    let latencies = rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..submitters {
            let gc = gc.clone();
            let payload = Arc::clone(&payload);
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0u64;
                while start.elapsed() < secs {
                    let t0 = Instant::now();
                    gc.submit(record_job(format!("g-{t:02}-{i:08}"), Arc::clone(&payload)))
                        .await
                        .unwrap();
                    lat.push(t0.elapsed());
                    i += 1;
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    });
    let elapsed = start.elapsed();
    rt.block_on(gc.shutdown());
    Run {
        commits: latencies.len(),
        elapsed,
        latencies,
    }
}

fn main() {
    let secs = Duration::from_secs(
        std::env::var("CUSTODIAN_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    );
    let root = bench_root();
    println!(
        "store_commit: {RECORD_BYTES}-byte records, {secs:?} per run, dir {}",
        root.path().display()
    );

    let mut bare = bare_fsync(root.path(), secs);
    println!(
        "bare append+fsync of {RECORD_BYTES} bytes: p50 {} p99 {} ({} samples)",
        ms(percentile(&mut bare, 0.5)),
        ms(percentile(&mut bare, 0.99)),
        bare.len()
    );

    let (mut base, mut engine, mut fsync) = baseline(root.path(), secs);
    let base_rate = base.per_sec();
    println!(
        "baseline (1 tx + flush + fsync per record): {:.0} commits/s, p50 {} p99 {}",
        base_rate,
        ms(base.pct(0.5)),
        ms(base.pct(0.99))
    );
    println!(
        "  of which sled flush (sync_file_range) p50 {} p99 {}; fsync(db) p50 {} p99 {}",
        ms(percentile(&mut engine, 0.5)),
        ms(percentile(&mut engine, 0.99)),
        ms(percentile(&mut fsync, 0.5)),
        ms(percentile(&mut fsync, 0.99))
    );

    println!(
        "{:<12} {:>3} {:>12} {:>12} {:>12} {:>14}",
        "config", "K", "commits/s", "p50", "p99", "vs baseline"
    );
    let configs = [
        ("default", GroupConfig::default()),
        (
            "linger 2ms",
            GroupConfig {
                idle_gap: Duration::from_millis(2),
                linger_alone: true,
                ..GroupConfig::default()
            },
        ),
        (
            "linger 0",
            GroupConfig {
                max_wait: Duration::ZERO,
                ..GroupConfig::default()
            },
        ),
    ];
    for (label, config) in configs {
        for k in [1usize, 8, 32] {
            let name = format!("{}-{k}", label.replace(' ', "-"));
            let mut run = grouped(root.path(), &name, k, config.clone(), secs);
            println!(
                "{:<12} {:>3} {:>12.0} {:>12} {:>12} {:>13.2}x",
                label,
                k,
                run.per_sec(),
                ms(run.pct(0.5)),
                ms(run.pct(0.99)),
                run.per_sec() / base_rate
            );
        }
    }
}
