//! Group commit: many transactions, one durable flush.
//!
//! A [`GroupCommitter`] owns one dedicated writer thread (sled work blocks, so it never runs on
//! tokio worker threads). Callers [`submit`](GroupCommitter::submit) a job, a transaction
//! closure with the same [`Tx`] API as [`Store::transact`], and await its result. The writer:
//!
//! 1. takes the first queued job, then keeps taking jobs until it holds
//!    [`GroupConfig::max_batch`] of them, [`GroupConfig::max_wait`] has passed, or no job arrived
//!    for [`GroupConfig::idle_gap`]; after a batch of a single job it only takes what is already
//!    queued (a lone submitter waiting for its answer cannot join the batch, so waiting would
//!    only add latency; see [`GroupConfig::linger_alone`]);
//! 2. holding the store's writer lock from the batch's first job to its commit, runs each job
//!    as soon as it is taken (so the wait for company is spent working), as its own
//!    transaction over the writes of the batch's earlier jobs (one job aborting or failing does
//!    not affect the others; a panicking job is caught and answered [`CommitError::Panicked`]),
//!    then writes what the jobs that returned `Ok` wrote into the engine as ONE atomic commit;
//! 3. makes the whole batch durable with ONE [`Store::flush_durable`], on a flush thread of
//!    its own: while it runs, the writer runs the next batch (a flush covers every batch
//!    written before it began, so batches that wait together share one flush);
//! 4. only then answers every waiter: `Ok(R)` only when the job committed **and** the flush
//!    succeeded; [`CommitError::NotDurable`] for every committed job of a batch whose flush
//!    failed. The writer survives a failed flush and the next batch flushes again (covering
//!    the earlier batch's writes too). After a *real* I/O error, though, the store refuses
//!    every later flush ([`StoreError::DurabilityLost`], see [`Store::flush_durable`]), so
//!    every later batch is answered `NotDurable` too until the daemon restarts: a second fsync
//!    after a failed one proves nothing on Linux.
//!
//! Metrics (the `metrics` crate): histogram `custodian_store_commit_batch_size` (jobs per
//! batch), histogram `custodian_store_flush_seconds` (duration of each durable flush, failed
//! ones included), counter `custodian_store_flush_failures_total`.

use super::events::{BatchCommitted, FlushFailed, FlushTimed};
use super::tx::{Abort, Overlay, TransactError, Tx};
use super::{Store, StoreError};
use crate::core::telemetry::emit;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, oneshot};

/// Tuning of a [`GroupCommitter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// Most jobs per batch (one commit into the engine; a durable flush covers the batches
    /// committed before it began). At least 1. A batch of every submitter leaves the writer
    /// idle while it is flushed when each submitter waits for its answer before the next job
    /// (an MLLP connection): 16, half of 32 such submitters, measured 18 % more jobs per
    /// second than 256.
    pub max_batch: usize,
    /// Longest time the writer waits for more jobs after the first of a batch (it runs each
    /// job as it takes it). Jobs already queued keep joining until the batch has run for this
    /// long, at least 1 ms. Zero means "take what is queued and flush": batches then form only
    /// from jobs that arrive during a flush or while the batch runs.
    pub max_wait: Duration,
    /// The batch also closes when no job arrived for this long (so a lone submitter does not
    /// pay the whole `max_wait`). Set it to `max_wait` or more (and `linger_alone`) to always
    /// wait `max_wait`.
    pub idle_gap: Duration,
    /// Most jobs queued or running at once; further `submit` calls wait (back-pressure).
    pub max_in_flight: usize,
    /// Whether to wait for more jobs (`idle_gap`, `max_wait`) even when the previous batch held
    /// a single job. Off by default: with one submitter at a time (one analyzer connection,
    /// which waits for each ACK before sending the next message) nobody can join the batch,
    /// and the wait only adds latency. Without it, the writer takes what is queued and
    /// flushes; as soon as a batch holds two jobs or more it lingers again. The first batch
    /// always lingers.
    pub linger_alone: bool,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            max_batch: 16,
            max_wait: Duration::from_millis(2),
            idle_gap: Duration::from_micros(100),
            max_in_flight: 4096,
            linger_alone: false,
        }
    }
}

/// Why a submitted job did not yield a durable result.
#[derive(Debug, thiserror::Error)]
pub enum CommitError<E> {
    /// The job returned [`Abort::Domain`]; nothing of it was written.
    #[error("transaction aborted: {0}")]
    Aborted(E),
    /// The transaction failed in the store; nothing of it was written.
    #[error("transaction failed: {0}")]
    Store(StoreError),
    /// The transaction committed in memory but the batch's durable flush failed. Its writes may
    /// or may not survive a crash (a later flush may still persist them): answer the sender
    /// negatively (AE, never AA) and rely on idempotent retries (dedupe).
    #[error("committed but not made durable: {0}")]
    NotDurable(String),
    /// The job panicked; nothing of it was written.
    #[error("the job panicked; nothing of it was written")]
    Panicked,
    /// The committer is shut down (or its writer thread died) before answering. If the job had
    /// already run, its writes may exist: treat like [`CommitError::NotDurable`].
    #[error("the group committer is shut down")]
    ShutDown,
}

impl<E> CommitError<E> {
    /// Whether the job's writes may exist although it was not acknowledged (`NotDurable`,
    /// `ShutDown`): the sender must be told "not accepted" and a retry must be idempotent.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, CommitError::NotDurable(_) | CommitError::ShutDown)
    }
}

/// The result of one batch's flush, handed to each job's delivery.
type Durability = Result<(), String>;

/// A job after it ran: whether it committed, and how to answer its waiter.
struct Ran {
    committed: bool,
    deliver: Delivery,
}

type Job = Box<dyn FnOnce(&Store, &mut Overlay) -> Ran + Send>;

/// Handle on a group-commit writer. Cheap to clone; the writer drains its queue, flushes and
/// stops when the last handle is dropped or [`shutdown`](GroupCommitter::shutdown) is called.
#[derive(Clone)]
pub struct GroupCommitter {
    shared: Arc<Shared>,
}

struct Shared {
    store: Store,
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    permits: Arc<Semaphore>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

impl GroupCommitter {
    /// Starts the writer thread for `store`.
    pub fn start(store: Store, config: GroupConfig) -> Result<GroupCommitter, StoreError> {
        if config.max_batch == 0 || config.max_in_flight == 0 {
            return Err(StoreError::Invalid(
                "group commit max_batch and max_in_flight must be at least 1".into(),
            ));
        }
        let (sender, receiver) = mpsc::channel::<Job>();
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let writer_store = store.clone();
        let writer_config = config.clone();
        let thread = thread::Builder::new()
            .name("custodian-store-writer".into())
            .spawn(move || {
                writer_loop(&writer_store, &receiver, &writer_config);
                drop(writer_store);
                let _ = stopped_tx.send(());
            })
            .map_err(|e| StoreError::io("starting the store writer thread", e))?;
        Ok(GroupCommitter {
            shared: Arc::new(Shared {
                store,
                sender: Mutex::new(Some(sender)),
                permits: Arc::new(Semaphore::new(config.max_in_flight)),
                thread: Mutex::new(Some(thread)),
                stopped: Mutex::new(Some(stopped_rx)),
            }),
        })
    }

    /// The store, for reads.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Runs `job` in a transaction on the writer thread and resolves once the result is durable
    /// (or known not to be). `Ok(r)` means: committed and fsynced.
    ///
    /// The job has the same contract as a [`Store::transact`] closure: it must be pure (it is
    /// answered only once its batch is durable, so nothing it did outside the store may run
    /// ahead of that). Cancelling the returned future does not cancel the job.
    pub async fn submit<R, E, F>(&self, job: F) -> Result<R, CommitError<E>>
    where
        F: Fn(&mut Tx<'_>) -> Result<R, Abort<E>> + Send + 'static,
        R: Send + 'static,
        E: Send + 'static,
    {
        let permit = Arc::clone(&self.shared.permits)
            .acquire_owned()
            .await
            .map_err(|_| CommitError::ShutDown)?;
        let (reply_tx, reply_rx) = oneshot::channel::<Result<R, CommitError<E>>>();
        let boxed: Job = Box::new(move |store: &Store, batch: &mut Overlay| {
            let outcome = catch_unwind(AssertUnwindSafe(|| store.run_in(batch, &job)));
            let committed = matches!(outcome, Ok(Ok(_)));
            Ran {
                committed,
                deliver: Box::new(move |durability: &Durability| {
                    let answer = match (outcome, durability) {
                        (Ok(Ok(r)), Ok(())) => Ok(r),
                        (Ok(Ok(_)), Err(why)) => Err(CommitError::NotDurable(why.clone())),
                        (Ok(Err(TransactError::Aborted(e))), _) => Err(CommitError::Aborted(e)),
                        (Ok(Err(TransactError::Store(e))), _) => Err(CommitError::Store(e)),
                        (Err(_panic), _) => Err(CommitError::Panicked),
                    };
                    // The waiter may have gone away (cancelled); nothing to do then.
                    let _ = reply_tx.send(answer);
                    drop(permit);
                }),
            }
        });
        {
            let sender = self
                .shared
                .sender
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match sender.as_ref() {
                Some(s) => s.send(boxed).map_err(|_| CommitError::ShutDown)?,
                None => return Err(CommitError::ShutDown),
            }
        }
        reply_rx.await.unwrap_or(Err(CommitError::ShutDown))
    }

    /// Stops accepting jobs, lets the writer run and flush every job already queued, and waits
    /// for the writer thread to end. Later `submit` calls fail with [`CommitError::ShutDown`].
    /// Idempotent; other handles see the committer as shut down.
    pub async fn shutdown(&self) {
        self.shared.close();
        let stopped = self
            .shared
            .stopped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(stopped) = stopped {
            // Err means the writer thread died; joining below reports nothing more useful.
            let _ = stopped.await;
        }
        // The writer has signalled its end; joining is immediate.
        self.shared.join();
    }
}

impl Shared {
    fn close(&self) {
        self.permits.close();
        self.sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
    }

    fn join(&self) {
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(handle) = handle {
            // Never join ourselves (a job holding the last handle, dropped on the writer), nor
            // the writer from its flush thread (an answer holding it, dropped there): the
            // writer waits for that thread.
            let current = thread::current();
            let on_flusher = current.name() == Some(FLUSH_THREAD);
            if handle.thread().id() != current.id() && !on_flusher && handle.join().is_err() {
                tracing::error!("store writer thread panicked");
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.close();
        self.join();
    }
}

const FLUSH_THREAD: &str = "custodian-store-flush";

/// What answers a job once its batch's durability is known.
type Delivery = Box<dyn FnOnce(&Durability) + Send>;

/// A batch written into the engine, waiting for a durable flush.
struct Applied {
    size: usize,
    /// Whether a job of it returned `Ok` (its writes are in the engine).
    committed: bool,
    /// Set when the engine refused the batch's commit: nothing to flush, answer this.
    failed: Option<String>,
    deliveries: Vec<Delivery>,
}

/// How long a batch keeps taking jobs already queued when `max_wait` is shorter (even 0).
const MIN_BATCH_WORK: Duration = Duration::from_millis(1);

fn writer_loop(store: &Store, jobs: &mpsc::Receiver<Job>, config: &GroupConfig) {
    // The flush runs on its own thread, so the next batch's jobs run while the previous
    // batch's fsync is under way; a flush covers every batch applied before it began.
    let (to_flusher, applied) = mpsc::channel::<Applied>();
    let flusher_store = store.clone();
    let flusher = thread::Builder::new()
        .name(FLUSH_THREAD.into())
        .spawn(move || flusher_loop(&flusher_store, &applied));
    let flusher = match flusher {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the store flush thread; flushing inline");
            None
        }
    };
    let mut inline_dirty = false;
    // Whether the last batch held more than one job (the first batch lingers).
    let mut concurrent = true;
    while let Ok(first) = jobs.recv() {
        let linger = concurrent || config.linger_alone;
        let began = Instant::now();
        let deadline = began + config.max_wait;
        // Jobs already queued keep joining until the batch has worked this long.
        let worked_enough = began + config.max_wait.max(MIN_BATCH_WORK);
        let done = {
            // Each job runs as soon as it is taken, while the batch waits for company: the
            // writer works through the linger instead of idling in it.
            let mut batch = Batch::begin(store);
            batch.run(store, first);
            while batch.size < config.max_batch {
                // Jobs queued while the batch ran join it, but not for ever: a busy writer
                // would otherwise hold the first job's answer for max_batch jobs.
                let now = Instant::now();
                if now >= worked_enough {
                    break;
                }
                match jobs.try_recv() {
                    Ok(job) => {
                        batch.run(store, job);
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {}
                }
                if !linger || now >= deadline {
                    break;
                }
                match jobs.recv_timeout((deadline - now).min(config.idle_gap)) {
                    Ok(job) => batch.run(store, job),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            concurrent = batch.size > 1;
            batch.apply(store)
        };
        if flusher.is_some() {
            if let Err(mpsc::SendError(done)) = to_flusher.send(done) {
                settle(store, vec![done], &mut inline_dirty);
            }
        } else {
            settle(store, vec![done], &mut inline_dirty);
        }
    }
    drop(to_flusher);
    if let Some(handle) = flusher
        && handle.join().is_err()
    {
        tracing::error!("store flush thread panicked");
    }
    final_flush(store, inline_dirty);
}

fn flusher_loop(store: &Store, applied: &mpsc::Receiver<Applied>) {
    // Set while commits exist that a failed flush did not make durable.
    let mut dirty = false;
    while let Ok(first) = applied.recv() {
        let mut group = vec![first];
        while let Ok(more) = applied.try_recv() {
            group.push(more);
        }
        settle(store, group, &mut dirty);
    }
    final_flush(store, dirty);
}

fn final_flush(store: &Store, dirty: bool) {
    if dirty {
        // Best effort: earlier NotDurable commits may still reach the disk.
        if let Err(e) = store.flush_durable() {
            store.publish_disk_free();
            emit(FlushFailed {
                error: &e.to_string(),
                batch: 0,
            });
        }
    }
}

/// A batch being run: under the writer lock, each job as its own transaction over the writes
/// of the jobs before it; [`Batch::apply`] writes what they wrote in one commit.
struct Batch<'a> {
    /// Held from the batch's first job to its commit.
    writer: std::sync::MutexGuard<'a, ()>,
    writes: Overlay,
    size: usize,
    committed: bool,
    deliveries: Vec<Delivery>,
}

impl<'a> Batch<'a> {
    fn begin(store: &'a Store) -> Batch<'a> {
        Batch {
            writer: store.writer_lock(),
            writes: Overlay::new(),
            size: 0,
            committed: false,
            deliveries: Vec::new(),
        }
    }

    fn run(&mut self, store: &Store, job: Job) {
        let r = job(store, &mut self.writes);
        self.size += 1;
        self.committed |= r.committed;
        self.deliveries.push(r.deliver);
    }

    fn apply(self, store: &Store) -> Applied {
        let applied = store.apply(self.writes);
        drop(self.writer);
        Applied {
            size: self.size,
            committed: self.committed,
            failed: applied.err().map(|e| e.to_string()),
            deliveries: self.deliveries,
        }
    }
}

/// Makes applied batches durable with one flush and answers their waiters.
fn settle(store: &Store, group: Vec<Applied>, dirty: &mut bool) {
    let size: usize = group.iter().map(|a| a.size).sum();
    emit(BatchCommitted { size });
    let needs_flush = *dirty || group.iter().any(|a| a.committed && a.failed.is_none());
    for refused in group.iter().filter_map(|a| a.failed.as_deref()) {
        // Nothing of that batch reached the engine (or, after an I/O error, the store no longer
        // promises anything): every job of it that returned Ok is answered "not durable".
        *dirty = true;
        store.publish_disk_free();
        emit(FlushFailed {
            error: refused,
            batch: size,
        });
    }
    let flushed: Durability = if needs_flush {
        let started = Instant::now();
        let result = store.flush_durable();
        emit(FlushTimed {
            took: started.elapsed(),
        });
        match result {
            Ok(_) => {
                *dirty = group.iter().any(|a| a.failed.is_some());
                Ok(())
            }
            Err(e) => {
                *dirty = true;
                // A full disk is the usual cause: the gauge must not wait for the next sample.
                store.publish_disk_free();
                emit(FlushFailed {
                    error: &e.to_string(),
                    batch: size,
                });
                Err(e.to_string())
            }
        }
    } else {
        Ok(())
    };
    for applied in group {
        let durability = match applied.failed {
            Some(why) => Err(why),
            None => flushed.clone(),
        };
        for deliver in applied.deliveries {
            deliver(&durability);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    /// A committer whose batches wait up to 1 s for company (max_wait and idle_gap): within a
    /// test, only `max_batch` closes a batch.
    fn lingering(store: &Store, max_batch: usize) -> GroupCommitter {
        GroupCommitter::start(
            store.clone(),
            GroupConfig {
                max_batch,
                max_wait: Duration::from_secs(1),
                idle_gap: Duration::from_secs(1),
                ..GroupConfig::default()
            },
        )
        .unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn put_job(
        key: String,
    ) -> impl Fn(&mut Tx<'_>) -> Result<String, Abort<String>> + Send + 'static {
        move |tx| {
            tx.put(Keyspace::Specimens, key.as_bytes(), &key)?;
            tx.put_raw_bytes(
                Keyspace::Raw,
                key.as_bytes(),
                format!("MSH|{key}").as_bytes(),
            )?;
            tx.audit(AuditEntry::new(1, "test", "put", key.clone()))?;
            Ok(key.clone())
        }
    }

    #[test]
    fn many_concurrent_submitters_all_answered_and_durable() {
        let (tmp, store) = temp_store();
        let gc = GroupCommitter::start(store, GroupConfig::default()).unwrap();
        let rt = runtime();
        let tasks = 32;
        let per_task = 25;
        let acked: Vec<String> = rt.block_on(async {
            let mut handles = Vec::new();
            for t in 0..tasks {
                let gc = gc.clone();
                handles.push(tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for i in 0..per_task {
                        let key = format!("S-{t:02}-{i:03}");
                        acked.push(gc.submit(put_job(key)).await.unwrap());
                    }
                    acked
                }));
            }
            let mut all = Vec::new();
            for h in handles {
                all.extend(h.await.unwrap());
            }
            all
        });
        assert_eq!(acked.len(), tasks * per_task);
        assert_eq!(acked.iter().collect::<HashSet<_>>().len(), tasks * per_task);
        drop(gc);
        drop(rt);
        let store = Store::open(&tmp.path().join("store")).unwrap();
        for key in &acked {
            assert_eq!(
                store
                    .get::<String>(Keyspace::Specimens, key.as_bytes())
                    .unwrap()
                    .as_deref(),
                Some(key.as_str())
            );
            // The batch's messages went into packs; each reads back as it was.
            assert_eq!(
                store.get_raw_bytes(Keyspace::Raw, key.as_bytes()).unwrap(),
                Some(format!("MSH|{key}").into_bytes())
            );
        }
        assert_eq!(store.count(Keyspace::Specimens), tasks * per_task);
        assert_eq!(
            store.verify_audit().unwrap().entries,
            (tasks * per_task) as u64
        );
    }

    #[test]
    fn aborting_job_does_not_fail_its_batch_neighbours() {
        let (_tmp, store) = temp_store();
        // The three jobs below form exactly one batch.
        let gc = lingering(&store, 3);
        let rt = runtime();
        let (ok, aborted, panicked) = rt.block_on(async {
            let ok = tokio::spawn({
                let gc = gc.clone();
                async move { gc.submit(put_job("S-ok".into())).await }
            });
            let aborted = tokio::spawn({
                let gc = gc.clone();
                async move {
                    gc.submit(|tx: &mut Tx<'_>| {
                        tx.put(Keyspace::Specimens, b"S-bad", &"x")?;
                        Err::<(), _>(Abort::Domain("duplicate".to_string()))
                    })
                    .await
                }
            });
            let panicked = tokio::spawn({
                let gc = gc.clone();
                async move {
                    gc.submit(|tx: &mut Tx<'_>| -> Result<(), Abort<()>> {
                        tx.put(Keyspace::Specimens, b"S-panic", &"x")?;
                        panic!("job bug (expected in this test)");
                    })
                    .await
                }
            });
            (
                ok.await.unwrap(),
                aborted.await.unwrap(),
                panicked.await.unwrap(),
            )
        });
        assert_eq!(ok.unwrap(), "S-ok");
        assert!(matches!(aborted, Err(CommitError::Aborted(ref e)) if e == "duplicate"));
        assert!(matches!(panicked, Err(CommitError::Panicked)));
        assert!(store.contains_key(Keyspace::Specimens, b"S-ok").unwrap());
        assert!(!store.contains_key(Keyspace::Specimens, b"S-bad").unwrap());
        assert!(!store.contains_key(Keyspace::Specimens, b"S-panic").unwrap());
        // The writer survived the panic.
        assert_eq!(
            rt.block_on(gc.submit(put_job("S-after".into()))).unwrap(),
            "S-after"
        );
    }

    /// Whether jobs B and C shared job A's batch: A holds the writer until B and C are queued
    /// (about 100 ms); B and C read the store itself (not their batch's writes), where A's
    /// write is only once A's batch was applied, i.e. when they run in a later batch.
    fn queued_behind_a_long_job(max_wait: Duration) -> (bool, bool) {
        let (_tmp, store) = temp_store();
        let gc = GroupCommitter::start(
            store.clone(),
            GroupConfig {
                max_batch: 3,
                max_wait,
                idle_gap: max_wait,
                ..GroupConfig::default()
            },
        )
        .unwrap();
        let rt = runtime();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        let started_tx = Mutex::new(started_tx);
        let (a, rest) = rt.block_on(async {
            let a = {
                let gc = gc.clone();
                tokio::spawn(async move {
                    gc.submit(move |tx: &mut Tx<'_>| {
                        let _ = started_tx.lock().unwrap().send(());
                        let _ = go_rx.lock().unwrap().recv_timeout(Duration::from_secs(5));
                        tx.put(Keyspace::Specimens, b"S-a", &"a")?;
                        Ok::<_, Abort<String>>(false)
                    })
                    .await
                })
            };
            tokio::task::spawn_blocking(move || started_rx.recv_timeout(Duration::from_secs(5)))
                .await
                .unwrap()
                .unwrap();
            let later: Vec<_> = ["S-b", "S-c"]
                .iter()
                .map(|k| {
                    let (gc, store) = (gc.clone(), store.clone());
                    tokio::spawn(async move {
                        gc.submit(move |tx: &mut Tx<'_>| {
                            let applied = store
                                .contains_key(Keyspace::Specimens, b"S-a")
                                .map_err(Abort::from)?;
                            tx.put(Keyspace::Specimens, k.as_bytes(), &"x")?;
                            Ok::<_, Abort<String>>(!applied)
                        })
                        .await
                    })
                })
                .collect();
            // B and C wait in the queue while A holds the writer.
            tokio::time::sleep(Duration::from_millis(100)).await;
            go_tx.send(()).unwrap();
            let a = a.await.unwrap();
            let mut rest = Vec::new();
            for h in later {
                rest.push(h.await.unwrap().unwrap());
            }
            (a, rest)
        });
        assert!(matches!(a, Ok(false)), "{a:?}");
        rt.block_on(gc.shutdown());
        (rest[0], rest[1])
    }

    #[test]
    fn jobs_queued_while_a_batch_runs_join_it_until_it_has_run_max_wait() {
        // A runs about 100 ms, within a max_wait of 1 s: B and C, queued meanwhile, join it.
        assert_eq!(
            queued_behind_a_long_job(Duration::from_secs(1)),
            (true, true)
        );
        // A runs past a max_wait of 2 ms: B and C go to the next batch.
        assert_eq!(
            queued_behind_a_long_job(Duration::from_millis(2)),
            (false, false)
        );
        // A max_wait of 0 lets queued jobs join for MIN_BATCH_WORK (1 ms) only; A ran longer.
        assert_eq!(queued_behind_a_long_job(Duration::ZERO), (false, false));
    }

    #[test]
    fn a_batch_takes_at_most_max_batch_jobs_however_many_are_queued() {
        // A holds the writer while 40 more jobs queue; max_wait and idle_gap are long, so only
        // the default max_batch (16) closes a batch: [A + 15], [16], [9].
        let (_tmp, store) = temp_store();
        assert_eq!(GroupConfig::default().max_batch, 16);
        let gc = lingering(&store, GroupConfig::default().max_batch);
        let rt = runtime();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        type Gate = (std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>);
        // Each job, as it runs: whether the job run before it is already in the engine (it
        // was, exactly when that job ended the batch before).
        let last: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let seen: Arc<Mutex<Vec<bool>>> = Arc::new(Mutex::new(Vec::new()));
        let job = |key: String, gate: Option<Gate>| {
            let (store, last, seen) = (store.clone(), Arc::clone(&last), Arc::clone(&seen));
            let gate = gate.map(Mutex::new);
            move |tx: &mut Tx<'_>| {
                if let Some(gate) = &gate {
                    let gate = gate.lock().unwrap();
                    let _ = gate.0.send(());
                    let _ = gate.1.recv_timeout(Duration::from_secs(5));
                }
                let before = last.lock().unwrap().replace(key.clone());
                let applied = match before {
                    Some(k) => store
                        .contains_key(Keyspace::Specimens, k.as_bytes())
                        .map_err(Abort::from)?,
                    None => false,
                };
                seen.lock().unwrap().push(applied);
                tx.put(Keyspace::Specimens, key.as_bytes(), &"x")?;
                Ok::<_, Abort<String>>(())
            }
        };
        rt.block_on(async {
            let a = tokio::spawn({
                let (gc, a) = (gc.clone(), job("S-a".into(), Some((started_tx, go_rx))));
                async move { gc.submit(a).await }
            });
            tokio::task::spawn_blocking(move || started_rx.recv_timeout(Duration::from_secs(5)))
                .await
                .unwrap()
                .unwrap();
            let queued: Vec<_> = (0..40)
                .map(|i| {
                    let (gc, j) = (gc.clone(), job(format!("S-q{i:02}"), None));
                    tokio::spawn(async move { gc.submit(j).await })
                })
                .collect();
            // Every job is queued before A lets the writer go on.
            tokio::time::sleep(Duration::from_millis(200)).await;
            go_tx.send(()).unwrap();
            a.await.unwrap().unwrap();
            for q in queued {
                q.await.unwrap().unwrap();
            }
        });
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 41);
        let mut sizes = vec![0usize];
        for applied in seen {
            if applied {
                sizes.push(0);
            }
            *sizes.last_mut().unwrap() += 1;
        }
        assert_eq!(sizes, vec![16, 16, 9]);
        rt.block_on(gc.shutdown());
    }

    #[test]
    fn flush_fault_makes_the_batch_not_durable_and_the_next_batch_succeeds() {
        let (tmp, store) = temp_store();
        // The four jobs below form exactly one batch.
        let gc = lingering(&store, 4);
        let rt = runtime();
        store.fault_injector().fail_next_flush();
        let failed: Vec<_> = rt.block_on(async {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let gc = gc.clone();
                    tokio::spawn(async move { gc.submit(put_job(format!("S-f{i}"))).await })
                })
                .collect();
            let mut out = Vec::new();
            for h in handles {
                out.push(h.await.unwrap());
            }
            out
        });
        assert_eq!(failed.len(), 4);
        for r in &failed {
            match r {
                Err(e @ CommitError::NotDurable(why)) => {
                    assert!(why.contains("injected"), "{why}");
                    assert!(e.outcome_unknown());
                }
                other => panic!("expected NotDurable, got {other:?}"),
            }
        }
        assert!(!store.fault_injector().is_armed());
        // The committer is alive and the next batch is durable.
        assert_eq!(
            rt.block_on(gc.submit(put_job("S-next".into()))).unwrap(),
            "S-next"
        );
        rt.block_on(gc.shutdown());
        drop(gc);
        drop(store);
        let store = Store::open(&tmp.path().join("store")).unwrap();
        assert!(store.contains_key(Keyspace::Specimens, b"S-next").unwrap());
        assert!(store.verify_audit().is_ok());
    }

    #[test]
    fn real_fsync_failure_keeps_every_later_batch_not_durable() {
        let (_tmp, store) = temp_store();
        let gc = GroupCommitter::start(store.clone(), GroupConfig::default()).unwrap();
        let rt = runtime();
        store.fault_injector().fail_next_fsync();
        let first = rt.block_on(gc.submit(put_job("S-1".into())));
        assert!(matches!(first, Err(CommitError::NotDurable(ref why)) if why.contains("injected")));
        for i in 2..4 {
            let later = rt.block_on(gc.submit(put_job(format!("S-{i}"))));
            match later {
                Err(CommitError::NotDurable(why)) => {
                    assert!(why.contains("restart required"), "{why}")
                }
                other => panic!("expected NotDurable, got {other:?}"),
            }
        }
        // Aborted jobs are still answered as such: nothing to make durable.
        let aborted = rt.block_on(gc.submit(|_tx: &mut Tx<'_>| Err::<(), _>(Abort::Domain(7))));
        assert!(matches!(aborted, Err(CommitError::Aborted(7))));
        assert!(store.durability_lost().is_some());
    }

    #[test]
    fn metrics_are_emitted() {
        let recorder = test_recorder::install();
        let (_tmp, store) = temp_store();
        let gc = GroupCommitter::start(store.clone(), GroupConfig::default()).unwrap();
        let rt = runtime();
        let before = recorder.counter("custodian_store_flush_failures_total");
        rt.block_on(gc.submit(put_job("S-1".into()))).unwrap();
        store.fault_injector().fail_next_flush();
        assert!(rt.block_on(gc.submit(put_job("S-2".into()))).is_err());
        rt.block_on(gc.shutdown());
        // Other tests run committers concurrently: the figures are lower bounds.
        assert!(recorder.counter("custodian_store_flush_failures_total") > before);
        assert!(recorder.histogram_count("custodian_store_commit_batch_size") >= 2);
        assert!(recorder.histogram_count("custodian_store_flush_seconds") >= 2);
    }

    /// A failed flush (a full disk, usually) samples the free-disk gauge at once: no 10 s lag
    /// behind the periodic sampler, which does not run here.
    #[test]
    fn a_failed_flush_samples_the_free_disk_gauge() {
        let recorder = test_recorder::install();
        let (_tmp, store) = temp_store();
        let gc = GroupCommitter::start(store.clone(), GroupConfig::default()).unwrap();
        let rt = runtime();
        rt.block_on(gc.submit(put_job("S-1".into()))).unwrap();
        let before = recorder.gauge_sets("custodian_store_disk_free_bytes");
        store.fault_injector().fail_next_flush();
        assert!(rt.block_on(gc.submit(put_job("S-2".into()))).is_err());
        assert!(
            recorder.gauge_sets("custodian_store_disk_free_bytes") > before,
            "the free-disk gauge was not sampled on the failed flush"
        );
        rt.block_on(gc.shutdown());
    }

    /// A minimal global `metrics` recorder that counts what the committer reports.
    mod test_recorder {
        use metrics::{
            Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
            SharedString, Unit,
        };
        use std::collections::HashMap;
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Mutex, OnceLock};

        #[derive(Default)]
        pub struct TestRecorder {
            counters: Mutex<HashMap<String, Arc<Cell>>>,
            histograms: Mutex<HashMap<String, Arc<Cell>>>,
            gauges: Mutex<HashMap<String, Arc<Cell>>>,
        }

        #[derive(Default)]
        struct Cell(AtomicU64);

        impl CounterFn for Cell {
            fn increment(&self, value: u64) {
                self.0.fetch_add(value, Ordering::SeqCst);
            }
            fn absolute(&self, value: u64) {
                self.0.fetch_max(value, Ordering::SeqCst);
            }
        }

        /// A gauge cell counts how often it was set (the value is the count, not the gauge).
        impl metrics::GaugeFn for Cell {
            fn increment(&self, _value: f64) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
            fn decrement(&self, _value: f64) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
            fn set(&self, _value: f64) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }

        impl HistogramFn for Cell {
            fn record(&self, _value: f64) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }

        fn cell(map: &Mutex<HashMap<String, Arc<Cell>>>, name: &str) -> Arc<Cell> {
            Arc::clone(map.lock().unwrap().entry(name.to_string()).or_default())
        }

        impl TestRecorder {
            pub fn counter(&self, name: &str) -> u64 {
                cell(&self.counters, name).0.load(Ordering::SeqCst)
            }
            pub fn gauge_sets(&self, name: &str) -> u64 {
                cell(&self.gauges, name).0.load(Ordering::SeqCst)
            }
            pub fn histogram_count(&self, name: &str) -> u64 {
                cell(&self.histograms, name).0.load(Ordering::SeqCst)
            }
        }

        impl Recorder for &'static TestRecorder {
            fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
                Counter::from_arc(cell(&self.counters, key.name()))
            }
            fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
                Gauge::from_arc(cell(&self.gauges, key.name()))
            }
            fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
                Histogram::from_arc(cell(&self.histograms, key.name()))
            }
        }

        pub fn install() -> &'static TestRecorder {
            static RECORDER: OnceLock<&'static TestRecorder> = OnceLock::new();
            RECORDER.get_or_init(|| {
                let recorder: &'static TestRecorder = Box::leak(Box::default());
                metrics::set_global_recorder(recorder).expect("no other global recorder in tests");
                recorder
            })
        }
    }

    #[test]
    fn shutdown_drains_queued_jobs_then_refuses_new_ones() {
        let (tmp, store) = temp_store();
        let gc = GroupCommitter::start(store, GroupConfig::default()).unwrap();
        let rt = runtime();
        let results = rt.block_on(async {
            let handles: Vec<_> = (0..50)
                .map(|i| {
                    let gc = gc.clone();
                    tokio::spawn(async move { gc.submit(put_job(format!("S-{i:02}"))).await })
                })
                .collect();
            tokio::task::yield_now().await;
            let mut out = Vec::new();
            for h in handles {
                out.push(h.await.unwrap());
            }
            gc.shutdown().await;
            out
        });
        assert!(results.iter().all(|r| r.is_ok()));
        let late = rt.block_on(gc.submit(put_job("S-late".into())));
        assert!(matches!(late, Err(CommitError::ShutDown)));
        // shutdown twice is harmless
        rt.block_on(gc.shutdown());
        drop(gc);
        let store = Store::open(&tmp.path().join("store")).unwrap();
        assert_eq!(store.count(Keyspace::Specimens), 50);
    }

    #[test]
    fn dropping_every_handle_flushes_and_releases_the_store() {
        let (tmp, store) = temp_store();
        let gc = GroupCommitter::start(store, GroupConfig::default()).unwrap();
        let rt = runtime();
        rt.block_on(gc.submit(put_job("S-1".into()))).unwrap();
        drop(gc);
        // The writer thread held a Store clone; the reopen succeeds only if it was joined.
        let store = Store::open(&tmp.path().join("store")).unwrap();
        assert!(store.contains_key(Keyspace::Specimens, b"S-1").unwrap());
    }

    #[test]
    fn a_lone_submitter_does_not_wait_for_company() {
        let (_tmp, store) = temp_store();
        let config = GroupConfig {
            max_wait: Duration::from_secs(1),
            idle_gap: Duration::from_secs(1),
            ..GroupConfig::default()
        };
        let gc = GroupCommitter::start(store.clone(), config.clone()).unwrap();
        let rt = runtime();
        // The first batch lingers (up to 1 s); the later ones, after a batch of one, do not.
        rt.block_on(gc.submit(put_job("S-0".into()))).unwrap();
        let started = std::time::Instant::now();
        for i in 1..5 {
            rt.block_on(gc.submit(put_job(format!("S-{i}")))).unwrap();
        }
        // Lingering would take at least 4 s.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );

        // With `linger_alone` every batch waits for company, up to `idle_gap`.
        let gc = GroupCommitter::start(
            store,
            GroupConfig {
                max_wait: Duration::from_millis(300),
                idle_gap: Duration::from_millis(300),
                linger_alone: true,
                ..config
            },
        )
        .unwrap();
        rt.block_on(gc.submit(put_job("S-5".into()))).unwrap();
        let started = std::time::Instant::now();
        rt.block_on(gc.submit(put_job("S-6".into()))).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn zero_batch_is_refused() {
        let (_tmp, store) = temp_store();
        assert!(matches!(
            GroupCommitter::start(
                store,
                GroupConfig {
                    max_batch: 0,
                    ..GroupConfig::default()
                }
            ),
            Err(StoreError::Invalid(_))
        ));
    }
}
