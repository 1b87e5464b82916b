//! The archive tier: what the store keeps outside sled, in immutable segment files.
//!
//! # Why
//! sled 0.34 keeps a page table of every page resident and rebuilds it at every open, and
//! rewrites whole pages as they change: a two-year store of a million specimens costs it
//! hundreds of MiB of memory, half a second of start and several times the data on disk. The
//! archive bounds all three: sled holds what was written recently (the hot tier), and a spill
//! moves it, at a threshold of keys written, into a new sorted segment ([`super::segment`]):
//! compressed blocks read on demand, an index and a bloom filter in memory.
//!
//! # Reads
//! A key's value is sled's if sled has the key, else the newest segment's that has it. A
//! removal of a key an older tier may still hold leaves a removal mark ([`MARK`]) in sled, which
//! later spills like any value and hides the older copies; a compaction that reaches the oldest
//! segment drops marks. Ranges merge sled's trees and every segment, newest first.
//!
//! # A spill, and why nothing is lost or revived
//! sled's trees of the archived keyspaces come in generations (`raw`, `raw~1`, `raw~2`...).
//! 1. Under the writer lock the active generation is frozen and a new one opened for the
//!    writes that follow; the manifest in `meta` records both, and is made durable.
//! 2. The frozen generation, which nobody writes any more, is copied into a new segment,
//!    fsynced and renamed into place (the directory fsynced).
//! 3. Under the writer lock the segment joins the set in place of the frozen generation, in
//!    one manifest write, made durable.
//! 4. Once no reader works through the frozen trees, they are dropped (sled frees their pages
//!    whole: no key-by-key removal).
//!
//! A crash in 2 leaves a file the manifest does not name, which the next open deletes, and the
//! frozen generation, which the next spill copies again. A crash after 3 leaves trees of an
//! archived generation, which the next open drops. A compaction writes its merged segment
//! first, swaps it for its inputs in one manifest write made durable, and only then deletes
//! the inputs.
//!
//! `meta`, `images` (large values, kept by sled as blob files) and the `outbox` work queue stay
//! in sled.

use super::events::{ArchiveCompacted, ArchiveSpilled};
use super::segment::{self, BlockCache, Segment, SegmentWriter, archive_key};
use super::{Keyspace, Store, StoreError, codec, durable};
use crate::core::telemetry::emit;
use serde::{Deserialize, Serialize};
use std::fs;
use std::ops::Bound;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// Where [`Store::spill_until`] stops, as a crash there would leave the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpillStep {
    /// The generation is frozen and the manifest says so.
    Frozen,
    /// The segment is written, the manifest does not name it yet.
    Copied,
    /// The manifest names the segment; the frozen trees are not dropped yet.
    Installed,
}

/// The value sled holds for a key removed while an older tier may still hold it.
pub(crate) const MARK: &[u8] = &[0x00];

/// Key in `meta` holding the [`Manifest`].
pub(crate) const META_ARCHIVE: &[u8] = b"archive_manifest";

/// The archive's directory inside the store.
pub(crate) const ARCHIVE_DIR: &str = "archive";

/// Segments of one size class merged together by a compaction.
pub(crate) const FANOUT: usize = 4;

/// Whether `v` is a removal mark.
pub(crate) fn is_mark(v: &[u8]) -> bool {
    v == MARK
}

/// Whether keys of `ks` move to the archive.
pub(crate) const fn archived(ks: Keyspace) -> bool {
    !matches!(ks, Keyspace::Meta | Keyspace::Images | Keyspace::Outbox)
}

/// The segments in force, newest first, and the next segment number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// The segments in force, newest first.
    pub segments: Vec<u64>,
    /// The next segment number.
    pub next_id: u64,
    /// The generation of the trees written now.
    #[serde(default)]
    pub generation: u64,
    /// A generation frozen by a spill that has not finished (a crash): the next spill
    /// finishes it.
    #[serde(default)]
    pub frozen: Option<u64>,
}

/// What a spill moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpillReport {
    /// The new segment's number.
    pub segment: u64,
    /// Keys copied into it (removal marks included).
    pub keys: u64,
    /// The segment's size.
    pub bytes: u64,
}

/// What a compaction merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactReport {
    /// Segments merged.
    pub inputs: usize,
    /// Entries read from them.
    pub entries_in: u64,
    /// Entries of the merged segment.
    pub entries_out: u64,
    /// Bytes of the inputs, and of the merged segment.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// What the archive holds (see [`Store::archive_usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArchiveUsage {
    pub segments: usize,
    pub entries: u64,
    pub bytes: u64,
    /// Keys written to sled since the last spill.
    pub hot_writes: u64,
    /// The generation of sled's trees written now.
    pub generation: u64,
    /// Bytes of decoded blocks the archive's cache holds, and the lookups it served and
    /// those that read a segment's file, since the store opened.
    pub cache_bytes: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Bytes of memory the segments' block indexes and bloom filters take (those read).
    pub index_bytes: u64,
    pub filter_bytes: u64,
}

/// The store's tiers at one moment: what a read or a commit works through. Replaced whole
/// (under the writer lock) by a spill's rotation, its end, and a compaction.
pub(crate) struct Tiers {
    /// The generation of the trees written now (0: the trees named after their keyspace).
    pub(crate) generation: u64,
    /// The trees written now, by keyspace index (the keyspaces that stay in sled have one
    /// tree for ever).
    pub(crate) active: Vec<sled::Tree>,
    /// Held by every `Tiers` whose `active` is this generation's (see [`Frozen::token`]).
    active_token: Arc<()>,
    /// The previous generation, frozen while a spill copies it into a segment.
    pub(crate) frozen: Option<Frozen>,
    /// The segments in force, newest first.
    pub(crate) segments: Vec<Arc<Segment>>,
}

/// A generation frozen by a spill.
#[derive(Clone)]
pub(crate) struct Frozen {
    generation: u64,
    /// Its trees, by keyspace index (archived keyspaces only).
    trees: Vec<Option<sled::Tree>>,
    /// Held by every `Tiers` that includes these trees (as active or as frozen): once the
    /// spill holds the last one, no reader works through them any more.
    token: Arc<()>,
}

impl Tiers {
    fn frozen_tree(&self, ks: Keyspace) -> Option<&sled::Tree> {
        self.frozen
            .as_ref()
            .and_then(|f| f.trees[ks.index()].as_ref())
    }

    /// Whether a tier below the active one may hold `key`: a removal there must leave a mark.
    pub(crate) fn below_may_hold(&self, ks: Keyspace, key: &[u8]) -> Result<bool, StoreError> {
        if !archived(ks) {
            return Ok(false);
        }
        if let Some(t) = self.frozen_tree(ks)
            && t.contains_key(key)
                .map_err(|e| StoreError::engine("reading the frozen tier", e))?
        {
            return Ok(true);
        }
        if self.segments.is_empty() {
            return Ok(false);
        }
        let akey = archive_key(ks, key);
        for s in &self.segments {
            if s.may_contain(&akey)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn manifest(&self, next_id: u64) -> Manifest {
        Manifest {
            segments: self.segments.iter().map(|s| s.id()).collect(),
            next_id,
            generation: self.generation,
            frozen: self.frozen.as_ref().map(|f| f.generation),
        }
    }
}

/// The sled tree name of `ks` in `generation`.
pub(crate) fn tree_name(ks: Keyspace, generation: u64) -> String {
    if generation == 0 || !archived(ks) {
        ks.name().to_string()
    } else {
        format!("{}~{generation}", ks.name())
    }
}

/// The keyspace and generation a sled tree name stands for (`None`: not one of ours).
fn parse_tree_name(name: &[u8]) -> Option<(Keyspace, u64)> {
    let name = std::str::from_utf8(name).ok()?;
    let (base, generation) = match name.split_once('~') {
        Some((base, g)) => (base, g.parse::<u64>().ok()?),
        None => (name, 0),
    };
    let ks = Keyspace::ALL.into_iter().find(|ks| ks.name() == base)?;
    Some((ks, generation))
}

fn open_trees(
    db: &sled::Db,
    generation: u64,
    only_archived: bool,
) -> Result<Vec<Option<sled::Tree>>, StoreError> {
    Keyspace::ALL
        .into_iter()
        .map(|ks| {
            if only_archived && !archived(ks) {
                return Ok(None);
            }
            db.open_tree(tree_name(ks, generation))
                .map(Some)
                .map_err(|e| StoreError::engine("opening a keyspace", e))
        })
        .collect()
}

/// The archive's own state: where its files are, the next segment number, the keys written
/// since the last spill.
pub(crate) struct Archive {
    dir: PathBuf,
    next_id: AtomicU64,
    /// Keys written to sled since the last rotation.
    written: AtomicU64,
    /// One spill at a time, and one compaction (a spill and a compaction may run together:
    /// each replaces the tiers under the writer lock from what they are then).
    spilling: Mutex<()>,
    compacting: Mutex<()>,
    tiers: RwLock<Arc<Tiers>>,
    /// Decoded blocks its segments' lookups read (see [`BlockCache`]).
    cache: Arc<BlockCache>,
}

impl Archive {
    /// Opens the tiers `manifest` describes: the active and frozen generations' trees, and the
    /// segments in `store_dir/archive` (created if missing). Deletes what a crash or a finished
    /// spill or compaction left behind: segment files the manifest does not name, and the
    /// trees of generations already archived.
    pub(crate) fn open(
        db: &sled::Db,
        store_dir: &Path,
        manifest: &Manifest,
        cache_bytes: usize,
    ) -> Result<Archive, StoreError> {
        let cache = Arc::new(BlockCache::new(cache_bytes));
        let dir = store_dir.join(ARCHIVE_DIR);
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .mode(super::DIR_MODE)
                .create(&dir)
                .map_err(|e| StoreError::io("creating the archive directory", e))?;
            durable::fsync_dir(store_dir)?;
        }
        super::set_mode(&dir, super::DIR_MODE)?;
        let mut max_seen = 0u64;
        let mut removed_any = false;
        for entry in fs::read_dir(&dir).map_err(|e| StoreError::io("listing the archive", e))? {
            let entry = entry.map_err(|e| StoreError::io("listing the archive", e))?;
            let name = entry.file_name();
            let id = segment::segment_id_of(&name.to_string_lossy());
            if let Some(id) = id {
                max_seen = max_seen.max(id);
            }
            if id.is_none_or(|id| !manifest.segments.contains(&id)) {
                fs::remove_file(entry.path())
                    .map_err(|e| StoreError::io("removing a stale archive file", e))?;
                removed_any = true;
            }
        }
        if removed_any {
            durable::fsync_dir(&dir)?;
        }
        for name in db.tree_names() {
            if let Some((ks, generation)) = parse_tree_name(&name)
                && archived(ks)
                && generation != manifest.generation
                && Some(generation) != manifest.frozen
            {
                db.drop_tree(&name)
                    .map_err(|e| StoreError::engine("dropping an archived generation", e))?;
            }
        }
        let active = open_trees(db, manifest.generation, false)?
            .into_iter()
            .map(|t| t.expect("every keyspace opened"))
            .collect();
        let frozen = match manifest.frozen {
            Some(g) => Some(Frozen {
                generation: g,
                trees: open_trees(db, g, true)?,
                token: Arc::new(()),
            }),
            None => None,
        };
        let segments = manifest
            .segments
            .iter()
            .map(|&id| Segment::open(&dir, id).map(|s| Arc::new(s.with_cache(Arc::clone(&cache)))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Archive {
            cache,
            dir,
            next_id: AtomicU64::new(manifest.next_id.max(max_seen + 1).max(1)),
            written: AtomicU64::new(0),
            spilling: Mutex::new(()),
            compacting: Mutex::new(()),
            tiers: RwLock::new(Arc::new(Tiers {
                generation: manifest.generation,
                active,
                active_token: Arc::new(()),
                frozen,
                segments,
            })),
        })
    }

    /// The tiers in force.
    pub(crate) fn tiers(&self) -> Arc<Tiers> {
        Arc::clone(&self.tiers.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn replace(&self, tiers: Tiers) -> Arc<Tiers> {
        let new = Arc::new(tiers);
        let old = std::mem::replace(
            &mut *self.tiers.write().unwrap_or_else(|p| p.into_inner()),
            Arc::clone(&new),
        );
        drop(old);
        new
    }

    /// Counts `n` keys written to sled (called by the commit path).
    pub(crate) fn note_written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }

    fn allocate_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// A stored value read through the tiers: sled's bytes, or a segment's.
pub(crate) enum Value {
    Engine(sled::IVec),
    Archived(Vec<u8>),
}

impl std::ops::Deref for Value {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Value::Engine(v) => v,
            Value::Archived(v) => v,
        }
    }
}

/// A key and its value through the tiers (`None`: a removal mark).
type Head = (Vec<u8>, Option<Value>);

type SourceItem = Result<Head, StoreError>;

/// One input of a merge, with the entry it stands at.
pub(crate) struct Source {
    iter: Box<dyn Iterator<Item = SourceItem> + Send>,
    head: Option<Head>,
}

impl Source {
    pub(crate) fn new(iter: Box<dyn Iterator<Item = SourceItem> + Send>) -> Source {
        Source { iter, head: None }
    }

    /// A sled range: removal marks become `None`.
    pub(crate) fn engine(iter: sled::Iter) -> Source {
        Source::new(Box::new(iter.map(|r| {
            r.map(|(k, v)| (k.to_vec(), (!is_mark(&v)).then_some(Value::Engine(v))))
                .map_err(|e| StoreError::engine("iterating", e))
        })))
    }

    fn advance(&mut self) -> Result<(), StoreError> {
        self.head = self.iter.next().transpose()?;
        Ok(())
    }
}

/// Merges sources given newest first: each key once, from the newest source that has it;
/// removed keys are skipped unless `keep_marks`.
pub(crate) struct Merged {
    sources: Vec<Source>,
    primed: bool,
    failed: bool,
    keep_marks: bool,
    /// The tiers read: held so that a spill does not drop a tree this iterator still reads.
    _tiers: Option<Arc<Tiers>>,
}

impl Merged {
    pub(crate) fn new(sources: Vec<Source>, keep_marks: bool, tiers: Option<Arc<Tiers>>) -> Merged {
        Merged {
            sources,
            primed: false,
            failed: false,
            keep_marks,
            _tiers: tiers,
        }
    }

    fn step(&mut self) -> Result<Option<Head>, StoreError> {
        if !self.primed {
            self.primed = true;
            for s in &mut self.sources {
                s.advance()?;
            }
        }
        loop {
            let mut best: Option<usize> = None;
            for (i, s) in self.sources.iter().enumerate() {
                if let Some((k, _)) = &s.head
                    && best.is_none_or(|b| {
                        k < &self.sources[b].head.as_ref().expect("best has a head").0
                    })
                {
                    best = Some(i);
                }
            }
            let Some(b) = best else {
                return Ok(None);
            };
            let (key, value) = self.sources[b].head.take().expect("best has a head");
            self.sources[b].advance()?;
            for s in self.sources.iter_mut().skip(b + 1) {
                if s.head.as_ref().is_some_and(|(k, _)| *k == key) {
                    s.advance()?;
                }
            }
            if value.is_some() || self.keep_marks {
                return Ok(Some((key, value)));
            }
        }
    }
}

impl Iterator for Merged {
    type Item = SourceItem;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(item) => item.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl Store {
    fn archive(&self) -> &Archive {
        &self.inner.archive
    }

    /// The tiers in force (see [`Tiers`]).
    pub(crate) fn tiers(&self) -> Arc<Tiers> {
        self.archive().tiers()
    }

    /// `key`'s value through the tiers: the active tree's, the frozen one's, the newest
    /// segment's; `None` when the first tier holding the key holds a removal mark.
    pub(crate) fn lookup(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Value>, StoreError> {
        let tiers = self.tiers();
        let read = |t: &sled::Tree| t.get(key).map_err(|e| StoreError::engine("reading", e));
        if let Some(v) = read(&tiers.active[ks.index()])? {
            return Ok((!is_mark(&v)).then_some(Value::Engine(v)));
        }
        if !archived(ks) {
            return Ok(None);
        }
        if let Some(t) = tiers.frozen_tree(ks)
            && let Some(v) = read(t)?
        {
            return Ok((!is_mark(&v)).then_some(Value::Engine(v)));
        }
        if tiers.segments.is_empty() {
            return Ok(None);
        }
        let akey = archive_key(ks, key);
        for s in &tiers.segments {
            if let Some(found) = s.get(&akey)? {
                return Ok(found.map(Value::Archived));
            }
        }
        Ok(None)
    }

    /// The live entries of `ks` in the range, in key order, merged through the tiers.
    pub(crate) fn scan(
        &self,
        ks: Keyspace,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
    ) -> Merged {
        self.scan_within(ks, lower, upper, None)
    }

    /// [`Store::scan`] of the keys starting with `prefix`, asking each segment's bloom filter
    /// about the prefix where it keeps them (an `audit_subjects` subject).
    pub(crate) fn scan_within(
        &self,
        ks: Keyspace,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        prefix: Option<&[u8]>,
    ) -> Merged {
        let tiers = self.tiers();
        let range = (lower.clone(), upper.clone());
        let mut sources = vec![Source::engine(
            tiers.active[ks.index()].range(range.clone()),
        )];
        if archived(ks) {
            if let Some(t) = tiers.frozen_tree(ks) {
                sources.push(Source::engine(t.range(range)));
            }
            if !tiers.segments.is_empty() {
                let lo = match &lower {
                    Bound::Included(k) => Bound::Included(archive_key(ks, k)),
                    Bound::Excluded(k) => Bound::Excluded(archive_key(ks, k)),
                    Bound::Unbounded => Bound::Included(vec![ks.index() as u8]),
                };
                let hi = match &upper {
                    Bound::Included(k) => Bound::Included(archive_key(ks, k)),
                    Bound::Excluded(k) => Bound::Excluded(archive_key(ks, k)),
                    Bound::Unbounded => Bound::Excluded(vec![ks.index() as u8 + 1]),
                };
                let subject = prefix.map(|p| archive_key(ks, p));
                for s in &tiers.segments {
                    match s.may_overlap(ks.index() as u8, &lo, &hi, subject.as_deref()) {
                        Ok(false) => continue,
                        Ok(true) => {}
                        Err(e) => {
                            sources.push(Source::new(Box::new(std::iter::once(Err(e)))));
                            continue;
                        }
                    }
                    let it = s.iter(lo.clone(), hi.clone());
                    sources.push(Source::new(Box::new(
                        it.map(|r| r.map(|(k, v)| (k[1..].to_vec(), v.map(Value::Archived)))),
                    )));
                }
            }
        }
        Merged::new(sources, false, Some(tiers))
    }

    /// The live entry of `ks` with the greatest key at or before `key`.
    pub(crate) fn floor(
        &self,
        ks: Keyspace,
        key: &[u8],
    ) -> Result<Option<(Vec<u8>, Value)>, StoreError> {
        let tiers = self.tiers();
        let mut bound = key.to_vec();
        let mut inclusive = true;
        loop {
            // The candidates, newest tier first: (key, value or mark).
            let mut best: Option<(Vec<u8>, Option<Value>)> = None;
            let mut consider = |k: Vec<u8>, v: Option<Value>| {
                if best.as_ref().is_none_or(|(b, _)| k > *b) {
                    best = Some((k, v));
                }
            };
            let engine_floor = |t: &sled::Tree| {
                let upper = if inclusive {
                    Bound::Included(bound.clone())
                } else {
                    Bound::Excluded(bound.clone())
                };
                t.range((Bound::<Vec<u8>>::Unbounded, upper))
                    .next_back()
                    .transpose()
                    .map_err(|e| StoreError::engine("reading", e))
            };
            if let Some((k, v)) = engine_floor(&tiers.active[ks.index()])? {
                consider(k.to_vec(), (!is_mark(&v)).then_some(Value::Engine(v)));
            }
            if archived(ks) {
                if let Some(t) = tiers.frozen_tree(ks)
                    && let Some((k, v)) = engine_floor(t)?
                {
                    consider(k.to_vec(), (!is_mark(&v)).then_some(Value::Engine(v)));
                }
                let akey = archive_key(ks, &bound);
                for s in &tiers.segments {
                    if let Some((k, v)) = s.floor(&akey, inclusive)?
                        && k.first() == Some(&(ks.index() as u8))
                    {
                        consider(k[1..].to_vec(), v.map(Value::Archived));
                    }
                }
            }
            match best {
                None => return Ok(None),
                Some((k, Some(v))) => return Ok(Some((k, v))),
                Some((k, None)) => {
                    bound = k;
                    inclusive = false;
                }
            }
        }
    }

    /// Reads every segment's index and bloom filter now (they are read at the first lookup
    /// otherwise): the archive's upkeep does it after a start, off the path to ready.
    pub fn load_archive(&self) -> Result<(), StoreError> {
        for s in &self.tiers().segments {
            s.load()?;
        }
        Ok(())
    }

    /// What the archive holds.
    pub fn archive_usage(&self) -> ArchiveUsage {
        let tiers = self.tiers();
        let (cache_bytes, cache_hits, cache_misses) = self.archive().cache.stats();
        let (index_bytes, filter_bytes) = tiers
            .segments
            .iter()
            .map(|s| s.memory())
            .fold((0, 0), |(i, f), (a, b)| (i + a, f + b));
        let filter_bytes = filter_bytes + self.archive().cache.filter_bytes() as u64;
        ArchiveUsage {
            index_bytes,
            filter_bytes,
            cache_bytes: cache_bytes as u64,
            cache_hits,
            cache_misses,
            segments: tiers.segments.len(),
            entries: tiers.segments.iter().map(|s| s.entries()).sum(),
            bytes: tiers.segments.iter().map(|s| s.bytes()).sum(),
            hot_writes: self.archive().written.load(Ordering::Relaxed),
            generation: tiers.generation,
        }
    }

    /// Whether a spill is due: enough keys were written to sled since the last one (see
    /// `StoreOptions::archive_after_keys`; 0 never spills on its own), or a spill was
    /// interrupted and its frozen generation waits.
    pub fn spill_due(&self) -> bool {
        let after = self.inner.options.archive_after_keys;
        self.tiers().frozen.is_some()
            || (after > 0 && self.archive().written.load(Ordering::Relaxed) >= after)
    }

    fn write_manifest(&self, tiers: &Tiers) -> Result<(), StoreError> {
        let manifest = tiers.manifest(self.archive().next_id.load(Ordering::Relaxed));
        let value = codec::encode_json(Keyspace::Meta, META_ARCHIVE, &manifest)?;
        self.tiers().active[Keyspace::Meta.index()]
            .insert(META_ARCHIVE, value)
            .map_err(|e| StoreError::engine("writing the archive manifest", e))?;
        Ok(())
    }

    /// Moves what sled holds of the archived keyspaces into a new segment (see the module
    /// notes). `Ok(None)` when there was nothing to move.
    pub fn spill(&self) -> Result<Option<SpillReport>, StoreError> {
        self.spill_until(None)
    }

    /// [`Store::spill`], stopping after `stop` as a crash there would (for tests).
    pub(crate) fn spill_until(
        &self,
        stop: Option<SpillStep>,
    ) -> Result<Option<SpillReport>, StoreError> {
        let archive = self.archive();
        let _one = archive.spilling.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        // 1. Freeze the active generation (or take the one a crash left frozen).
        let tiers = {
            let _writer = self.writer_lock();
            let now = self.tiers();
            if now.frozen.is_some() {
                now
            } else {
                let next = now.generation + 1;
                let fresh = open_trees(&self.inner.db, next, true)?;
                let active = Keyspace::ALL
                    .into_iter()
                    .zip(&fresh)
                    .map(|(ks, t)| t.clone().unwrap_or_else(|| now.active[ks.index()].clone()))
                    .collect();
                let frozen = Keyspace::ALL
                    .into_iter()
                    .map(|ks| archived(ks).then(|| now.active[ks.index()].clone()))
                    .collect();
                let tiers = archive.replace(Tiers {
                    generation: next,
                    active,
                    active_token: Arc::new(()),
                    frozen: Some(Frozen {
                        generation: now.generation,
                        trees: frozen,
                        token: Arc::clone(&now.active_token),
                    }),
                    segments: now.segments.clone(),
                });
                archive.written.store(0, Ordering::Relaxed);
                self.write_manifest(&tiers)?;
                tiers
            }
        };
        self.flush_durable()?;
        if stop == Some(SpillStep::Frozen) {
            return Ok(None);
        }
        let Frozen {
            generation: frozen_generation,
            trees: frozen,
            token,
        } = tiers.frozen.clone().expect("a generation is frozen");
        // 2. Copy it (nobody writes to it any more) into a segment.
        let id = archive.allocate_id();
        let mut w = SegmentWriter::create(&archive.dir, id)?;
        let copied = (|| {
            for (ks, tree) in Keyspace::ALL.into_iter().zip(&frozen) {
                let Some(tree) = tree else { continue };
                for item in tree.iter() {
                    let (k, v) = item.map_err(|e| StoreError::engine("spilling", e))?;
                    w.add(&archive_key(ks, &k), (!is_mark(&v)).then_some(&v[..]))?;
                }
            }
            Ok::<(), StoreError>(())
        })();
        if let Err(e) = copied {
            w.abandon();
            return Err(e);
        }
        let keys = w.entries();
        let written = w.finish()?;
        if stop == Some(SpillStep::Copied) {
            return Ok(None);
        }
        let segment = match written {
            Some(written) => {
                let seg = Segment::open(&archive.dir, id)?.with_cache(Arc::clone(&archive.cache));
                // Its index and its filter, the ones the writer built.
                seg.adopt(written);
                Some(Arc::new(seg))
            }
            None => None,
        };
        let bytes = segment.as_ref().map_or(0, |s| s.bytes());
        // 3. The segment replaces the frozen generation, in one manifest write made durable.
        let old = {
            let _writer = self.writer_lock();
            let now = self.tiers();
            let mut segments: Vec<Arc<Segment>> = segment.iter().cloned().collect();
            segments.extend(now.segments.iter().cloned());
            let tiers = archive.replace(Tiers {
                generation: now.generation,
                active: now.active.clone(),
                active_token: Arc::clone(&now.active_token),
                frozen: None,
                segments,
            });
            self.write_manifest(&tiers)?;
            now
        };
        self.flush_durable()?;
        if stop == Some(SpillStep::Installed) {
            return Ok(None);
        }
        // 4. Drop the frozen trees once no reader still works through them. A reader that
        // holds them longer (an iterator left open) leaves them to the next open, with sled's
        // own handle. The last handle of a dropped tree flushes sled's log as it goes, which
        // deadlocks against a sled transaction committing at that moment (sled 0.34): the
        // trees are dropped, and their last handles released, under the writer lock.
        drop(tiers);
        drop(old);
        let released = wait_unshared(&token, UNSHARED_WAIT);
        {
            let _writer = self.writer_lock();
            if released {
                for ks in Keyspace::ALL.into_iter().filter(|ks| archived(*ks)) {
                    self.inner
                        .db
                        .drop_tree(tree_name(ks, frozen_generation))
                        .map_err(|e| StoreError::engine("dropping an archived generation", e))?;
                }
            }
            drop(frozen);
        }
        emit(ArchiveSpilled {
            keys,
            bytes,
            took: started.elapsed(),
        });
        Ok(segment.map(|_| SpillReport {
            segment: id,
            keys,
            bytes,
        }))
    }

    /// Merges the newest run of at least [`FANOUT`] segments of one size class into one, if
    /// there is such a run; `stop` abandons the merge. `Ok(None)` when nothing was merged.
    pub fn compact(&self, stop: &AtomicBool) -> Result<Option<CompactReport>, StoreError> {
        let archive = self.archive();
        let _one = archive.compacting.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let set = self.tiers().segments.clone();
        let Some((from, to)) = pick_run(&set.iter().map(|s| s.bytes()).collect::<Vec<_>>()) else {
            return Ok(None);
        };
        let inputs: Vec<Arc<Segment>> = set[from..to].to_vec();
        // Removal marks can go only when nothing older is left for them to hide.
        let reaches_oldest = to == set.len();
        let entries_in: u64 = inputs.iter().map(|s| s.entries()).sum();
        let bytes_in: u64 = inputs.iter().map(|s| s.bytes()).sum();
        let id = archive.allocate_id();
        let mut w = SegmentWriter::create(&archive.dir, id)?;
        w.reserve_index(inputs.iter().map(|s| s.index_bytes()).sum());
        let sources = inputs
            .iter()
            .map(|s| {
                Source::new(Box::new(
                    s.iter(Bound::Unbounded, Bound::Unbounded)
                        .map(|r| r.map(|(k, v)| (k, v.map(Value::Archived)))),
                ))
            })
            .collect();
        let merged = (|| {
            for (n, item) in Merged::new(sources, !reaches_oldest, None).enumerate() {
                let (k, v) = item?;
                w.add(&k, v.as_deref())?;
                if n % 4096 == 0 && stop.load(Ordering::Relaxed) {
                    return Ok(false);
                }
            }
            Ok::<bool, StoreError>(true)
        })();
        match merged {
            Ok(true) => {}
            Ok(false) => {
                w.abandon();
                return Ok(None);
            }
            Err(e) => {
                w.abandon();
                return Err(e);
            }
        }
        let entries_out = w.entries();
        let merged_seg = match w.finish()? {
            Some(written) => {
                let seg = Segment::open(&archive.dir, id)?.with_cache(Arc::clone(&archive.cache));
                // Its index and its filter, the ones the writer built.
                seg.adopt(written);
                Some(Arc::new(seg))
            }
            None => None,
        };
        let bytes_out = merged_seg.as_ref().map_or(0, |s| s.bytes());
        {
            let _writer = self.writer_lock();
            // Spills may have added newer segments since: the run keeps its place.
            let now = self.tiers();
            let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(now.segments.len());
            let mut placed = false;
            for s in &now.segments {
                if inputs.iter().any(|i| i.id() == s.id()) {
                    if !placed {
                        segments.extend(merged_seg.iter().cloned());
                        placed = true;
                    }
                } else {
                    segments.push(Arc::clone(s));
                }
            }
            let tiers = archive.replace(Tiers {
                generation: now.generation,
                active: now.active.clone(),
                active_token: Arc::clone(&now.active_token),
                frozen: now.frozen.clone(),
                segments,
            });
            self.write_manifest(&tiers)?;
        }
        self.flush_durable()?;
        // Readers still holding an input read it through its open file.
        for s in &inputs {
            fs::remove_file(s.path())
                .map_err(|e| StoreError::io("removing a compacted archive segment", e))?;
        }
        durable::fsync_dir(&archive.dir)?;
        let report = CompactReport {
            inputs: inputs.len(),
            entries_in,
            entries_out,
            bytes_in,
            bytes_out,
        };
        emit(ArchiveCompacted {
            report,
            took: started.elapsed(),
        });
        Ok(Some(report))
    }

    /// Spills if one is due, then compacts while there is a run to merge (`stop` ends it
    /// between steps and abandons a merge): what the daemon's archive task runs.
    pub fn maintain_archive(&self, stop: &AtomicBool) -> Result<(), StoreError> {
        if self.spill_due() {
            self.spill()?;
        }
        while !stop.load(Ordering::Relaxed) {
            if self.compact(stop)?.is_none() {
                break;
            }
        }
        Ok(())
    }
}

/// How long a spill waits for readers of the frozen trees before leaving them to the next open.
const UNSHARED_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits up to `limit` until `token` is the last reference to itself (every `Tiers` that
/// included the generation, readers' and iterators' among them, is gone); whether it came to
/// that.
fn wait_unshared(token: &Arc<()>, limit: std::time::Duration) -> bool {
    let started = Instant::now();
    while Arc::strong_count(token) > 1 {
        if started.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    true
}

/// Size class of a segment: 0 up to 4 MiB, then one per factor of [`FANOUT`].
fn size_class(bytes: u64) -> u32 {
    let mut class = 0;
    let mut limit = 4u64 << 20;
    while bytes > limit {
        class += 1;
        limit = limit.saturating_mul(FANOUT as u64);
    }
    class
}

/// The newest run (indexes `from..to` of a newest-first list) of at least [`FANOUT`]
/// consecutive segments of one size class.
fn pick_run(sizes: &[u64]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < sizes.len() {
        let class = size_class(sizes[i]);
        let mut j = i + 1;
        while j < sizes.len() && size_class(sizes[j]) == class {
            j += 1;
        }
        if j - i >= FANOUT {
            return Some((i, j));
        }
        i = j;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_one_size_class_are_picked_newest_first() {
        let mib = 1u64 << 20;
        assert_eq!(pick_run(&[mib, mib, mib]), None);
        assert_eq!(pick_run(&[mib, mib, mib, mib]), Some((0, 4)));
        assert_eq!(
            pick_run(&[mib, 20 * mib, 20 * mib, 20 * mib, 20 * mib]),
            Some((1, 5))
        );
        assert_eq!(pick_run(&[mib, mib, 20 * mib, mib, mib]), None);
        assert_eq!(size_class(4 * mib), 0);
        assert_eq!(size_class(4 * mib + 1), 1);
        assert_eq!(size_class(16 * mib + 1), 2);
    }
}
