//! Rewriting sled's file at a clean stop, so that the next start opens a small one.
//!
//! # Why
//! sled 0.34 never shrinks its log file `db`: a store under load reaches 20 MiB or more of it
//! although a clean stop spills nearly everything into the archive, and at every open sled's
//! `SegmentAccountant` writes zeroes over each free 512 KiB segment of the file. That is most
//! of what a start costs beyond an empty store's. A clean stop therefore copies what sled still
//! holds (the store's `meta`, the `outbox`, CCF images, the empty trees of the generation
//! written now) into a fresh sled database and puts it in place of the old one.
//!
//! # Steps, and why nothing is lost
//! Everything runs under the store directory's lock ([`DirLock`], which every open takes
//! first), on a store no other handle holds.
//! 1. A fresh database is written in `engine.partial/`, every tree copied key by key and the
//!    copy checked against the original (a CRC-32 over every tree's names, keys and values, in
//!    order), flushed, and every file and directory fsynced.
//! 2. `engine.partial/` is renamed `engine.ready/` (the store directory fsynced): from here the
//!    new database is complete, and the old one is no longer needed.
//! 3. The old database's files (`db`, `conf`, `snap.*`, `blobs/`) are removed (directory
//!    fsynced), then `engine.ready/` is renamed `engine.moving/` (fsynced).
//! 4. Each file of `engine.moving/` is renamed into the store directory, then the empty
//!    `engine.moving/` is removed (fsynced).
//!
//! A crash in 1 leaves `engine.partial/`, which the next open removes: the old database is
//! whole. A crash in 3 or 4 is finished by the next open ([`finish_pending`]) before sled
//! opens: in 3 the new database is whole in `engine.ready/`, in 4 it is whole across
//! `engine.moving/` and the store directory. The archive's segments and the store directory's
//! other entries are never touched. A store where sled holds more than [`MAX_COPIED_BYTES`]
//! (many CCF images) is left as it is: copying it at every stop would cost more than the start
//! it saves.

use super::{StoreError, StoreOptions, durable, set_mode};
use std::fs::{self, File, TryLockError};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// Where a fresh database is written (step 1).
const PARTIAL: &str = "engine.partial";
/// The fresh database, complete (step 2).
const READY: &str = "engine.ready";
/// The fresh database, its files being moved into place (steps 3 and 4).
const MOVING: &str = "engine.moving";

/// sled's log file is rewritten only from this size (a smaller one costs a start little).
pub(crate) const REWRITE_FROM_BYTES: u64 = 4 * 1024 * 1024;
/// A rewrite copies at most this many bytes of keys and values (and at most half the log
/// file's size: below that, the copy would not be much smaller).
pub(crate) const MAX_COPIED_BYTES: u64 = 64 * 1024 * 1024;
/// Keys and values per batch applied to the fresh database.
const BATCH_BYTES: usize = 1024 * 1024;

/// How long a lock on the store directory is waited for.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// The exclusive lock on a store directory (an advisory `flock` of the directory itself),
/// held by an open store for its lifetime and by a rewrite: no open ever sees a rewrite
/// half-way, nor a rewrite a store in use.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir`, waiting up to [`LOCK_WAIT`] for its holder (a store just
    /// dropped, a restarting daemon's predecessor); [`StoreError::Locked`] after that.
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let file = File::open(dir)
            .map_err(|e| StoreError::io(format!("opening {} to lock it", dir.display()), e))?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(DirLock { _file: file }),
                Err(TryLockError::WouldBlock) => {
                    if started.elapsed() >= LOCK_WAIT {
                        return Err(StoreError::Locked(dir.to_path_buf()));
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(StoreError::io(format!("locking {}", dir.display()), e));
                }
            }
        }
    }
}

/// What [`rewrite_at_stop`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineRewrite {
    /// sled's file was rewritten.
    Rewritten {
        /// Size of `db` before and after.
        before: u64,
        after: u64,
        /// Keys copied (over every tree).
        keys: u64,
        /// Time of the whole rewrite.
        took: Duration,
    },
    /// sled's file was small enough to be left as it is.
    Small {
        /// Size of `db`.
        bytes: u64,
    },
    /// sled holds too much (more than [`MAX_COPIED_BYTES`], or half its file) to be copied at
    /// every stop; left as it is.
    Full {
        /// Size of `db`.
        bytes: u64,
    },
}

/// The names of sled's files in a directory: its log, its configuration, its snapshots and
/// its blobs.
fn is_engine_file(name: &str) -> bool {
    matches!(name, "db" | "conf" | "blobs") || name.starts_with("snap.")
}

fn exists(path: &Path) -> Result<bool, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io(format!("inspecting {}", path.display()), e)),
    }
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let context = format!("{what} {}", path.display());
    move |e| StoreError::io(context, e)
}

/// Finishes a rewrite a crash interrupted (steps 3 and 4), or removes a partial one (step 1);
/// whether anything was pending. The caller holds the directory's [`DirLock`], and no sled
/// database of `dir` is open.
pub(crate) fn finish_pending(dir: &Path) -> Result<bool, StoreError> {
    let (partial, ready, moving) = (dir.join(PARTIAL), dir.join(READY), dir.join(MOVING));
    let mut pending = false;
    if exists(&ready)? {
        pending = true;
        for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
            let entry = entry.map_err(io_err("listing", dir))?;
            let name = entry.file_name();
            if !name.to_str().is_some_and(is_engine_file) {
                continue;
            }
            let path = entry.path();
            if entry
                .file_type()
                .map_err(io_err("inspecting", &path))?
                .is_dir()
            {
                fs::remove_dir_all(&path).map_err(io_err("removing", &path))?;
            } else {
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
            }
        }
        durable::fsync_dir(dir)?;
        fs::rename(&ready, &moving).map_err(io_err("renaming", &ready))?;
        durable::fsync_dir(dir)?;
    }
    if exists(&moving)? {
        pending = true;
        for entry in fs::read_dir(&moving).map_err(io_err("listing", &moving))? {
            let entry = entry.map_err(io_err("listing", &moving))?;
            let to = dir.join(entry.file_name());
            fs::rename(entry.path(), &to).map_err(io_err("moving into place", &to))?;
        }
        durable::fsync_dir(dir)?;
        fs::remove_dir(&moving).map_err(io_err("removing", &moving))?;
        durable::fsync_dir(dir)?;
    }
    if exists(&partial)? {
        pending = true;
        fs::remove_dir_all(&partial).map_err(io_err("removing", &partial))?;
        durable::fsync_dir(dir)?;
    }
    Ok(pending)
}

/// Size of sled's log file in `dir` (0 if there is none).
fn log_bytes(dir: &Path) -> Result<u64, StoreError> {
    match fs::metadata(dir.join("db")) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StoreError::io(format!("inspecting {}", dir.display()), e)),
    }
}

/// Rewrites sled's file of the store in `dir` if it is worth it (see the module notes). For
/// a clean stop, once every handle on the store is dropped: it takes the directory's lock,
/// and fails with [`StoreError::Locked`] while a store is open on `dir`.
pub fn rewrite_at_stop(dir: &Path, options: &StoreOptions) -> Result<EngineRewrite, StoreError> {
    rewrite_from(dir, options, REWRITE_FROM_BYTES)
}

/// [`rewrite_at_stop`], for a log file of at least `from_bytes`.
fn rewrite_from(
    dir: &Path,
    options: &StoreOptions,
    from_bytes: u64,
) -> Result<EngineRewrite, StoreError> {
    let started = Instant::now();
    let _lock = DirLock::acquire(dir)?;
    finish_pending(dir)?;
    let before = log_bytes(dir)?;
    if before < from_bytes {
        return Ok(EngineRewrite::Small { bytes: before });
    }
    let budget = MAX_COPIED_BYTES.min(before / 2);
    let partial = dir.join(PARTIAL);
    let copied = {
        let old = super::open_db(dir, options)?;
        let copied = copy_into(&old, &partial, options, budget);
        // The old database is closed before its files go (sled's threads that still hold
        // it write only to its open log, whatever its name).
        drop(old);
        copied
    };
    let keys = match copied {
        Ok(Some(keys)) => keys,
        Ok(None) => {
            fs::remove_dir_all(&partial).map_err(io_err("removing", &partial))?;
            durable::fsync_dir(dir)?;
            return Ok(EngineRewrite::Full { bytes: before });
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    let ready = dir.join(READY);
    fs::rename(&partial, &ready).map_err(io_err("renaming", &partial))?;
    durable::fsync_dir(dir)?;
    finish_pending(dir)?;
    Ok(EngineRewrite::Rewritten {
        before,
        after: log_bytes(dir)?,
        keys,
        took: started.elapsed(),
    })
}

/// Copies every tree of `old` into a fresh database in `to`, checks the copy, closes it and
/// makes it durable; the keys copied, or `None` if more than `budget` bytes would be copied.
fn copy_into(
    old: &sled::Db,
    to: &Path,
    options: &StoreOptions,
    budget: u64,
) -> Result<Option<u64>, StoreError> {
    if exists(to)? {
        fs::remove_dir_all(to).map_err(io_err("removing", to))?;
    }
    fs::DirBuilder::new()
        .mode(super::DIR_MODE)
        .create(to)
        .map_err(io_err("creating", to))?;
    let new = super::engine_config(to, options)
        .open()
        .map_err(|e| StoreError::engine("opening a fresh database", e))?;
    let mut names = old.tree_names();
    names.sort();
    let (mut keys, mut bytes) = (0u64, 0u64);
    let mut written = crc32fast::Hasher::new();
    for name in &names {
        let (src, dst) = (tree(old, name)?, tree(&new, name)?);
        written.update(name);
        let mut batch = sled::Batch::default();
        let mut batch_bytes = 0;
        for kv in src.iter() {
            let (k, v) = kv.map_err(|e| StoreError::engine("reading a key to copy", e))?;
            bytes += (k.len() + v.len()) as u64;
            if bytes > budget {
                return Ok(None);
            }
            written.update(&k);
            written.update(&v);
            keys += 1;
            batch_bytes += k.len() + v.len();
            batch.insert(k, v);
            if batch_bytes >= BATCH_BYTES {
                dst.apply_batch(std::mem::take(&mut batch))
                    .map_err(|e| StoreError::engine("writing a copied key", e))?;
                batch_bytes = 0;
            }
        }
        dst.apply_batch(batch)
            .map_err(|e| StoreError::engine("writing a copied key", e))?;
    }
    // The copy, read back, is the original.
    let mut read = crc32fast::Hasher::new();
    let mut new_names = new.tree_names();
    new_names.sort();
    if new_names != names {
        return Err(StoreError::Invalid(
            "a rewrite of sled's file did not copy every tree".into(),
        ));
    }
    for name in &new_names {
        read.update(name);
        for kv in tree(&new, name)?.iter() {
            let (k, v) = kv.map_err(|e| StoreError::engine("reading a copied key", e))?;
            read.update(&k);
            read.update(&v);
        }
    }
    if read.finalize() != written.finalize() {
        return Err(StoreError::Invalid(
            "a rewrite of sled's file read back other keys than it copied".into(),
        ));
    }
    new.flush()
        .map_err(|e| StoreError::engine("flushing a fresh database", e))?;
    drop(new);
    sync_tree(to)?;
    Ok(Some(keys))
}

/// The tree `name` of `db` (sled's default tree included).
fn tree(db: &sled::Db, name: &[u8]) -> Result<sled::Tree, StoreError> {
    db.open_tree(name)
        .map_err(|e| StoreError::engine("opening a keyspace to copy", e))
}

/// Sets the store's modes on every file and directory under `dir` and fsyncs them, the
/// directories after their entries.
fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    set_mode(dir, super::DIR_MODE)?;
    for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let entry = entry.map_err(io_err("listing", dir))?;
        let path: PathBuf = entry.path();
        if entry
            .file_type()
            .map_err(io_err("inspecting", &path))?
            .is_dir()
        {
            sync_tree(&path)?;
        } else {
            set_mode(&path, super::FILE_MODE)?;
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_err("fsyncing", &path))?;
        }
    }
    durable::fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Abort, Keyspace, Store};
    use std::collections::BTreeMap;

    type Dump = BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>>;

    /// Every tree's keys and values, read from sled itself (no store open on `dir`).
    fn dump(dir: &Path) -> Dump {
        let db = crate::store::open_db(dir, &StoreOptions::default()).unwrap();
        let mut out = Dump::new();
        for name in db.tree_names() {
            for kv in db.open_tree(&name).unwrap().iter() {
                let (k, v) = kv.unwrap();
                out.insert((name.to_vec(), k.to_vec()), v.to_vec());
            }
        }
        out
    }

    /// A store whose sled file grew as a daemon's does: many small commits, each made durable,
    /// spilled into the archive, and work left in sled (`outbox`, which stays there).
    fn grown_store(dir: &Path) {
        let store = Store::open(dir).unwrap();
        for round in 0..4 {
            for n in 0..400 {
                store
                    .transact(|tx| {
                        let filler: String = (0..1500)
                            .map(|i| char::from(b'a' + ((n * 7 + i * 13 + round) % 26) as u8))
                            .collect();
                        tx.put(
                            Keyspace::Specimens,
                            format!("S-{round}-{n:04}").as_bytes(),
                            &filler,
                        )?;
                        tx.put(Keyspace::Outbox, b"MRO\0cursor", &(round * 1000 + n))?;
                        Ok::<_, Abort<()>>(())
                    })
                    .unwrap();
                store.flush_durable().unwrap();
            }
            store.spill().unwrap();
        }
        store
            .transact(|tx| {
                for n in 0..20u32 {
                    tx.put(Keyspace::Outbox, format!("MRO\0{n:08}").as_bytes(), &n)?;
                }
                Ok::<_, Abort<()>>(())
            })
            .unwrap();
        store.flush_durable().unwrap();
    }

    fn read_back(dir: &Path) {
        let store = Store::open(dir).unwrap();
        for n in 0..20u32 {
            let v: Option<u32> = store
                .get(Keyspace::Outbox, format!("MRO\0{n:08}").as_bytes())
                .unwrap();
            assert_eq!(v, Some(n));
        }
        for round in 0..4 {
            for n in [0, 199, 399] {
                let v: Option<String> = store
                    .get(Keyspace::Specimens, format!("S-{round}-{n:04}").as_bytes())
                    .unwrap();
                assert_eq!(v.map(|v| v.len()), Some(1500), "S-{round}-{n:04}");
            }
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn a_rewrite_keeps_every_tree_and_key_and_shrinks_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        grown_store(&dir);
        let before = dump(&dir);
        let size = log_bytes(&dir).unwrap();
        // The test's store is smaller than a daemon's (512 KiB): rewritten from any size.
        let done = rewrite_from(&dir, &StoreOptions::default(), 0).unwrap();
        let EngineRewrite::Rewritten {
            before: b,
            after,
            keys,
            ..
        } = done
        else {
            panic!("{done:?}");
        };
        assert_eq!(b, size);
        assert!(after < size / 4, "{after} of {size}");
        assert_eq!(keys as usize, before.len());
        // Modes: the rewrite's files are private (the archive's are the archive's).
        use std::os::unix::fs::PermissionsExt;
        for n in names(&dir).iter().filter(|n| is_engine_file(n)) {
            let m = fs::metadata(dir.join(n)).unwrap();
            let want = if m.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(m.permissions().mode() & 0o777, want, "{n}");
        }
        assert_eq!(dump(&dir), before);
        // Nothing of the rewrite is left; the archive is where it was.
        let left = names(&dir);
        assert!(left.iter().all(|n| !n.starts_with("engine.")), "{left:?}");
        assert!(left.contains(&"archive".to_string()), "{left:?}");
        read_back(&dir);
        // A second stop: the file is small now, and left.
        assert!(matches!(
            rewrite_at_stop(&dir, &StoreOptions::default()).unwrap(),
            EngineRewrite::Small { .. }
        ));
    }

    #[test]
    fn a_store_in_use_is_not_rewritten() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        grown_store(&dir);
        let open = Store::open(&dir).unwrap();
        let err = rewrite_from(&dir, &StoreOptions::default(), 0).unwrap_err();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
        drop(open);
        assert!(!names(&dir).iter().any(|n| n.starts_with("engine.")));
        read_back(&dir);
    }

    /// Runs a rewrite's first steps by hand and stops where a crash would: `step` 1 leaves
    /// `engine.partial`, 2 `engine.ready`, 3 the old files removed and `engine.moving`, 4 some
    /// of its files moved.
    fn crash_at(dir: &Path, step: u8) -> Dump {
        let options = StoreOptions::default();
        let partial = dir.join(PARTIAL);
        {
            let old = crate::store::open_db(dir, &options).unwrap();
            copy_into(&old, &partial, &options, u64::MAX)
                .unwrap()
                .unwrap();
        }
        if step == 1 {
            return dump(dir);
        }
        let copied = dump(&partial);
        fs::rename(&partial, dir.join(READY)).unwrap();
        if step == 2 {
            return copied;
        }
        for n in names(dir).iter().filter(|n| is_engine_file(n)) {
            let p = dir.join(n);
            if p.is_dir() {
                fs::remove_dir_all(p).unwrap()
            } else {
                fs::remove_file(p).unwrap()
            }
        }
        fs::rename(dir.join(READY), dir.join(MOVING)).unwrap();
        if step == 4 {
            for n in ["db", "conf"] {
                fs::rename(dir.join(MOVING).join(n), dir.join(n)).unwrap();
            }
        }
        copied
    }

    #[test]
    fn a_rewrite_a_crash_interrupted_is_finished_or_undone_by_the_next_open() {
        for step in 1..=4u8 {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("store");
            grown_store(&dir);
            let original = dump(&dir);
            let expected = crash_at(&dir, step);
            assert_eq!(expected, original, "step {step}: the copy is the original");
            // The next open finishes (or removes) it before sled opens.
            read_back(&dir);
            assert!(
                !names(&dir).iter().any(|n| n.starts_with("engine.")),
                "step {step}: {:?}",
                names(&dir)
            );
            let now = dump(&dir);
            // The open itself may add sled's own bookkeeping, never change a key.
            for (k, v) in &original {
                assert_eq!(now.get(k), Some(v), "step {step}");
            }
        }
    }

    #[test]
    fn a_store_holding_more_than_the_budget_is_left_as_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        grown_store(&dir);
        let before = dump(&dir);
        let old = crate::store::open_db(&dir, &StoreOptions::default()).unwrap();
        let partial = dir.join(PARTIAL);
        assert_eq!(
            copy_into(&old, &partial, &StoreOptions::default(), 100).unwrap(),
            None
        );
        drop(old);
        fs::remove_dir_all(&partial).unwrap();
        assert_eq!(dump(&dir), before);
    }

    #[test]
    fn the_size_and_budget_edges_decide_a_rewrite() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        grown_store(&dir);
        let before = dump(&dir);
        // What a copy holds: every tree's keys and values.
        let live: u64 = before
            .iter()
            .map(|((_, k), v)| (k.len() + v.len()) as u64)
            .sum();
        let options = StoreOptions::default();
        let partial = dir.join(PARTIAL);
        for (budget, fits) in [(live - 1, false), (live, true), (live + 1, true)] {
            let old = crate::store::open_db(&dir, &options).unwrap();
            let copied = copy_into(&old, &partial, &options, budget).unwrap();
            drop(old);
            assert_eq!(copied.is_some(), fits, "budget {budget} of {live}");
            fs::remove_dir_all(&partial).unwrap();
            assert_eq!(dump(&dir), before, "budget {budget}");
        }
        // A file one byte under the size a rewrite starts from is left; at that size it is
        // rewritten.
        let size = log_bytes(&dir).unwrap();
        assert!(matches!(
            rewrite_from(&dir, &options, size + 1).unwrap(),
            EngineRewrite::Small { bytes } if bytes == size
        ));
        assert_eq!(log_bytes(&dir).unwrap(), size);
        assert!(matches!(
            rewrite_from(&dir, &options, size).unwrap(),
            EngineRewrite::Rewritten { before, .. } if before == size
        ));
        assert_eq!(dump(&dir), before);
    }

    #[test]
    fn a_small_file_is_left_as_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        drop(Store::open(&dir).unwrap());
        let names_before = names(&dir);
        let got = rewrite_at_stop(&dir, &StoreOptions::default()).unwrap();
        assert!(matches!(got, EngineRewrite::Small { .. }), "{got:?}");
        assert_eq!(names(&dir), names_before);
    }
}
