//! Durable flush: sled's flush followed by real fsyncs.
//!
//! sled 0.34.7 writes its log to `<dir>/db` and, on Linux, "flushes" it with `sync_file_range`
//! only (no metadata, no drive cache flush). It also writes files it never fsyncs: `conf` (at
//! creation), `blobs/<lsn>` (each value over about 128 KiB: an MLLP frame of up to 1 MiB, an
//! image) and renames `snap.*` without syncing the directory. A blob is written when its value
//! is inserted, and the log holds only a pointer to it: a log that reached the disk before the
//! blob it points to is a torn value after a power loss. [`Syncer::sync`] therefore goes
//! bottom-up, what is pointed to before what points to it:
//! 1. lists `blobs/`; every blob file that is new (or changed length) since the last successful
//!    sync gets mode 0600 and an fsync, then `blobs/` itself is fsynced if its entries changed;
//! 2. calls `Db::flush` (all trees share the log);
//! 3. fsyncs `db` through a handle kept open for the store's lifetime;
//! 4. the other new or changed files of the store directory (`conf`, snapshots), then the store
//!    directory if its entries changed (files created, renamed or removed).
//!
//! Each sync leaves its steps in order in a trace ([`SyncStep`], `Store::last_sync_trace`), so
//! a test sees that a blob is fsynced, and before the log; remove an fsync and it fails.
//!
//! # A failed fsync is not retried into success
//! After `fsync` (or sled's `sync_file_range`) reports an I/O error, Linux may already have
//! dropped the dirty pages and marked them clean, so a second `fsync` can succeed although data
//! never reached the disk. sled's log would then hold a hole, and recovery after a crash stops
//! at the hole, taking later (acknowledged!) commits with it. So the first real I/O error of
//! the durable path — or of a transaction's write (`Store::transact`: a full disk usually shows
//! there first) — makes the store refuse every later durable flush with
//! [`StoreError::DurabilityLost`] until the process restarts and sled recovers the log. Only a
//! *transient* injected fault ([`FaultInjector::fail_next_flush`]) lets the next flush succeed.

use super::{FILE_MODE, StoreError, set_mode};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What one durable flush did and cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableFlush {
    /// Time spent in sled's own flush (`sync_file_range` on Linux).
    pub engine_flush: Duration,
    /// Time spent in fsync of the log file `db`.
    pub fsync_log: Duration,
    /// Time spent listing the directories and fsyncing new files and directories.
    pub fsync_other: Duration,
    /// Number of files other than `db` that were fsynced.
    pub files_synced: usize,
    /// Number of directories that were fsynced.
    pub dirs_synced: usize,
}

impl DurableFlush {
    /// Total time of the durable flush.
    pub fn total(&self) -> Duration {
        self.engine_flush + self.fsync_log + self.fsync_other
    }
}

/// Fault injection for tests: makes the next durable flush fail without touching the disk.
///
/// It exists in normal builds so integration tests of the daemon can exercise the "not durable"
/// path, but nothing arms it unless [`FaultInjector::fail_next_flush`] is called explicitly.
/// **Test-only: production code must never call it.**
#[derive(Debug, Clone, Default)]
pub struct FaultInjector {
    fail_next_flush: Arc<AtomicBool>,
    fail_next_fsync: Arc<AtomicBool>,
}

impl FaultInjector {
    /// Test-only: the next [`Store::flush_durable`](super::Store::flush_durable) (hence the next
    /// group-commit batch) fails once with a transient error, before touching the disk; the
    /// flush after it may succeed.
    pub fn fail_next_flush(&self) {
        self.fail_next_flush.store(true, Ordering::SeqCst);
    }

    /// Test-only: the next durable flush fails as if `fsync` of the log had returned EIO, which
    /// (like a real one) makes every later durable flush fail with
    /// [`StoreError::DurabilityLost`] until the store is reopened.
    pub fn fail_next_fsync(&self) {
        self.fail_next_fsync.store(true, Ordering::SeqCst);
    }

    /// Whether a failure is armed (without consuming it).
    pub fn is_armed(&self) -> bool {
        self.fail_next_flush.load(Ordering::SeqCst) || self.fail_next_fsync.load(Ordering::SeqCst)
    }

    fn take_flush(&self) -> bool {
        self.fail_next_flush.swap(false, Ordering::SeqCst)
    }

    fn take_fsync(&self) -> bool {
        self.fail_next_fsync.swap(false, Ordering::SeqCst)
    }
}

/// One fsync of a durable flush, in the order they were made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStep {
    /// A file of `blobs/` (a large value).
    Blob(PathBuf),
    /// The log file `db` (after sled's own flush).
    Log,
    /// Another file of the store directory (`conf`, a snapshot).
    File(PathBuf),
    /// A directory whose entries changed.
    Dir(PathBuf),
}

/// fsyncs a directory (its entries: creations, renames, removals).
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("fsyncing directory {}", dir.display()), e))
}

pub(crate) struct Syncer {
    dir: PathBuf,
    /// The log file, kept open; fsync on any descriptor flushes the inode.
    log: File,
    /// Files (other than `db`) already synced, with the length they had when synced, per
    /// directory (the store directory and `blobs/`).
    synced: HashMap<PathBuf, HashMap<PathBuf, u64>>,
    /// The first real I/O error of the durable path; once set, no flush succeeds any more.
    lost: Option<String>,
    /// The fsyncs of the last sync, in order.
    trace: Vec<SyncStep>,
}

impl Syncer {
    /// Opens the log file of the store in `dir`. Nothing is assumed synced yet, so the first
    /// [`Syncer::sync`] fsyncs every file and directory of the store.
    pub(crate) fn open(dir: &Path) -> Result<Syncer, StoreError> {
        let log_path = dir.join("db");
        set_mode(&log_path, FILE_MODE)?;
        let log = File::open(&log_path)
            .map_err(|e| StoreError::io(format!("opening {}", log_path.display()), e))?;
        Ok(Syncer {
            dir: dir.to_path_buf(),
            log,
            synced: HashMap::new(),
            lost: None,
            trace: Vec::new(),
        })
    }

    /// The fsyncs the last sync made, in order.
    pub(crate) fn trace(&self) -> &[SyncStep] {
        &self.trace
    }

    /// Records the first real I/O error seen outside [`Syncer::sync`] (a transaction's).
    pub(crate) fn mark_lost(&mut self, reason: String) {
        if self.lost.is_none() {
            self.lost = Some(reason);
        }
    }

    /// The reason durability was lost, if it was.
    pub(crate) fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    pub(crate) fn sync(
        &mut self,
        db: &sled::Db,
        faults: &FaultInjector,
    ) -> Result<DurableFlush, StoreError> {
        if let Some(reason) = &self.lost {
            return Err(StoreError::DurabilityLost(reason.clone()));
        }
        if faults.take_flush() {
            return Err(StoreError::io(
                "flushing (injected transient fault)",
                io::Error::other("injected flush failure"),
            ));
        }
        let result = if faults.take_fsync() {
            Err(StoreError::io(
                "fsyncing the log file db (injected fault)",
                io::Error::other("injected fsync failure"),
            ))
        } else {
            self.sync_files(db)
        };
        if let Err(e) = &result {
            self.lost = Some(e.to_string());
        }
        result
    }

    fn sync_files(&mut self, db: &sled::Db) -> Result<DurableFlush, StoreError> {
        self.trace.clear();
        let t0 = Instant::now();
        let mut files_synced = 0;
        let mut dirs_synced = 0;
        // 1. Blobs first: the log about to be synced points at them.
        let blobs = self.dir.join("blobs");
        let (files, blobs_changed, blobs_present) = self.sync_new_files(&blobs)?;
        files_synced += files;
        if blobs_changed {
            fsync_dir(&blobs)?;
            self.trace.push(SyncStep::Dir(blobs.clone()));
            dirs_synced += 1;
        }
        let t1 = Instant::now();
        // 2.-3. The log.
        db.flush()
            .map_err(|e| StoreError::engine("flushing the log", e))?;
        let t2 = Instant::now();
        self.log
            .sync_all()
            .map_err(|e| StoreError::io("fsyncing the log file db", e))?;
        self.trace.push(SyncStep::Log);
        let t3 = Instant::now();
        // 4. The rest of the store directory, then its entries.
        let dir = self.dir.clone();
        let (files, dir_changed, present) = self.sync_new_files(&dir)?;
        files_synced += files;
        if dir_changed {
            fsync_dir(&dir)?;
            self.trace.push(SyncStep::Dir(dir.clone()));
            dirs_synced += 1;
        }
        // Only now is every listed file durable under its name.
        self.synced.insert(blobs, blobs_present);
        self.synced.insert(dir, present);
        let t4 = Instant::now();
        Ok(DurableFlush {
            engine_flush: t2 - t1,
            fsync_log: t3 - t2,
            fsync_other: (t1 - t0) + (t4 - t3),
            files_synced,
            dirs_synced,
        })
    }

    /// fsyncs the regular files of `dir` that are new or changed length; returns how many,
    /// whether the directory's entries changed, and the files now present with their lengths.
    /// The caller records them as synced only once the directory itself is synced, so a failed
    /// attempt is retried in full next time.
    #[allow(clippy::type_complexity)]
    fn sync_new_files(
        &mut self,
        dir: &Path,
    ) -> Result<(usize, bool, HashMap<PathBuf, u64>), StoreError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir != self.dir => {
                return Ok((0, false, HashMap::new()));
            }
            Err(e) => return Err(StoreError::io(format!("listing {}", dir.display()), e)),
        };
        let empty = HashMap::new();
        let first_time = !self.synced.contains_key(dir);
        let known = self.synced.get(dir).unwrap_or(&empty);
        let mut present = HashMap::new();
        let mut files = 0;
        let mut changed = first_time;
        for entry in entries {
            let entry =
                entry.map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
            let path = entry.path();
            let file_type = match entry.file_type() {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(format!("inspecting {}", path.display()), e)),
            };
            if file_type.is_dir() {
                if known.get(&path).is_none() {
                    set_mode(&path, super::DIR_MODE)?;
                    changed = true;
                }
                present.insert(path, 0);
                continue;
            }
            if !file_type.is_file() || path == self.dir.join("db") {
                continue;
            }
            let len = match fs::metadata(&path) {
                Ok(m) => m.len(),
                // sled removes `snap.*.generating` and collected blobs concurrently.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(format!("inspecting {}", path.display()), e)),
            };
            if known.get(&path) != Some(&len) {
                if !known.contains_key(&path) {
                    changed = true;
                }
                match fsync_file(&path) {
                    Ok(()) => {
                        files += 1;
                        self.trace.push(if dir == self.dir {
                            SyncStep::File(path.clone())
                        } else {
                            SyncStep::Blob(path.clone())
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(StoreError::io(format!("fsyncing {}", path.display()), e));
                    }
                }
            }
            present.insert(path, len);
        }
        if known.keys().any(|p| !present.contains_key(p)) {
            changed = true;
        }
        Ok((files, changed, present))
    }
}

fn fsync_file(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(FILE_MODE))?;
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Bytes that do not compress (so the store keeps them as they are, in a blob file).
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn open_sets_modes_0700_and_0600() {
        let (tmp, store) = temp_store();
        let dir = tmp.path().join("store");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("blobs")), 0o700);
        // A large value goes to a blob file, which sled creates with the umask's mode.
        store
            .transact(|tx| {
                tx.put_raw_bytes(Keyspace::Raw, b"big", &noise(2 << 20, 7))?;
                Ok::<_, Abort<()>>(())
            })
            .unwrap();
        let flush = store.flush_durable().unwrap();
        assert!(flush.files_synced >= 1, "{flush:?}");
        let mut files = 0;
        for d in [dir.clone(), dir.join("blobs")] {
            for entry in fs::read_dir(&d).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_file() {
                    files += 1;
                    assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
                } else {
                    assert_eq!(mode(&entry.path()), 0o700, "{}", entry.path().display());
                }
            }
        }
        assert!(files >= 3, "conf, db and the blob at least; saw {files}");
        assert_eq!(
            store
                .get_raw_bytes(Keyspace::Raw, b"big")
                .unwrap()
                .unwrap()
                .len(),
            2 << 20
        );
    }

    /// A large value lives in its own blob file, which the log only points to: the durable
    /// flush must fsync the blob (and `blobs/`) before the log. Fails if either fsync is
    /// removed or comes after the log's.
    #[test]
    fn blobs_are_fsynced_before_the_log() {
        let (tmp, store) = temp_store();
        let blobs = tmp.path().join("store").join("blobs");
        store.flush_durable().unwrap();
        for round in 0..2u8 {
            // 1 MiB: an MLLP frame at the limit.
            store
                .transact(|tx| {
                    tx.put_raw_bytes(
                        Keyspace::Raw,
                        &[b'm', round],
                        &noise(1 << 20, u64::from(round) + 1),
                    )?;
                    Ok::<_, Abort<()>>(())
                })
                .unwrap();
            let new_blobs: Vec<PathBuf> = fs::read_dir(&blobs)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert_eq!(
                new_blobs.len(),
                usize::from(round) + 1,
                "a blob per large value"
            );
            let flush = store.flush_durable().unwrap();
            let trace = store.last_sync_trace();
            let log = trace
                .iter()
                .position(|s| *s == SyncStep::Log)
                .expect("log fsynced");
            let blob_steps: Vec<usize> = trace
                .iter()
                .enumerate()
                .filter(|(_, s)| matches!(s, SyncStep::Blob(_)))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(
                blob_steps.len(),
                1,
                "only the new blob is fsynced: {trace:?}"
            );
            assert!(blob_steps[0] < log, "blob after the log: {trace:?}");
            let SyncStep::Blob(path) = &trace[blob_steps[0]] else {
                unreachable!()
            };
            assert!(new_blobs.contains(path), "{trace:?}");
            let dir = trace
                .iter()
                .position(|s| *s == SyncStep::Dir(blobs.clone()))
                .expect("blobs/ fsynced after a new blob");
            assert!(dir < log, "blobs/ after the log: {trace:?}");
            assert!(
                flush.files_synced >= 1 && flush.dirs_synced >= 1,
                "{flush:?}"
            );
        }
        // Nothing new: only the log.
        store.flush_durable().unwrap();
        assert_eq!(store.last_sync_trace(), vec![SyncStep::Log]);
    }

    #[test]
    fn existing_directory_is_tightened_to_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let _store = Store::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("db")), 0o600);
        assert_eq!(mode(&dir.join("conf")), 0o600);
    }

    #[test]
    fn second_flush_syncs_only_the_log() {
        let (_tmp, store) = temp_store();
        store
            .transact(|tx| {
                tx.put(Keyspace::Specimens, b"S1", &"small")?;
                Ok::<_, Abort<()>>(())
            })
            .unwrap();
        store.flush_durable().unwrap();
        let again = store.flush_durable().unwrap();
        assert_eq!(again.files_synced, 0, "{again:?}");
        assert_eq!(again.dirs_synced, 0, "{again:?}");
    }

    #[test]
    fn injected_fault_fails_once() {
        let (_tmp, store) = temp_store();
        store.fault_injector().fail_next_flush();
        assert!(store.fault_injector().is_armed());
        let err = store.flush_durable().unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        assert!(!store.fault_injector().is_armed());
        store.flush_durable().unwrap();
    }

    #[test]
    fn fsync_failure_is_sticky_until_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = Store::open(&dir).unwrap();
        assert!(store.durability_lost().is_none());
        store.fault_injector().fail_next_fsync();
        assert!(matches!(store.flush_durable(), Err(StoreError::Io { .. })));
        // A retry must not report success: the kernel may have dropped the dirty pages.
        for _ in 0..2 {
            let err = store.flush_durable().unwrap_err();
            assert!(matches!(err, StoreError::DurabilityLost(_)), "{err}");
            assert!(err.to_string().contains("injected fsync failure"), "{err}");
        }
        assert!(store.durability_lost().unwrap().contains("injected"));
        drop(store);
        let store = Store::open(&dir).unwrap();
        assert!(store.durability_lost().is_none());
        store.flush_durable().unwrap();
    }

    #[test]
    fn open_refuses_a_file_and_a_missing_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(Store::open(&file), Err(StoreError::Io { .. })));
        assert!(matches!(
            Store::open(&tmp.path().join("missing/store")),
            Err(StoreError::Io { .. })
        ));
    }
}
