//! The durable store: the only module of the crate that touches sled.
//!
//! # What it keeps
//! One sled database in a directory of mode 0700, split into named [`Keyspace`]s: inbound
//! messages verbatim (`raw`), specimen records, the hash-chained audit log, the dedupe index,
//! the state and due-time indexes, refused messages (`quarantine`), released reports and their
//! outbox, the 40.111 summaries produced (`summaries`), analytical runs (`runs`), each specimen's
//! results (`results`), the audit log's index by subject (`audit_subjects`) and store metadata
//! (`meta`).
//! Every value starts with an encoding-version byte (0x01: JSON v1, 0x02: verbatim bytes v1);
//! the encoding can therefore evolve, and a value this build does not know is refused with
//! [`StoreError::UnknownVersion`], which names the keyspace and a key position ([`KeyRef`]),
//! never the content.
//!
//! # Durability
//! sled 0.34 only reaches the page cache on `insert`, and its `flush` uses `sync_file_range` on
//! Linux, which neither persists file metadata nor flushes the drive cache. A commit is
//! therefore durable only after [`Store::flush_durable`]: a sled flush followed by a real
//! `fsync` of the log file `db`, of every file sled created since the last durable flush
//! (`blobs/*`, `snap.*`, `conf`) and of the directories whose entries changed.
//! [`Store::transact`] alone is **not** durable. Domain code normally commits through the
//! [`GroupCommitter`], which runs many transactions and then one durable flush for all of them,
//! and answers each caller only afterwards.
//!
//! # Privacy
//! Error messages never quote stored values or raw keys. Audit entries may name specimen IDs but
//! must never carry donor identifiers (names, SSNs, employee IDs) or result values; see
//! [`AuditEntry`].
//!
//! # Concurrency
//! [`Store`] is a cheap `Clone` handle. Transactions are serialisable (sled 0.34.7 runs them
//! under a process-wide write lock). Only one process may open a store directory at a time:
//! an open takes an exclusive `flock` of the directory itself (held until the last handle is
//! dropped; see [`rewrite`], which rewrites sled's file at a clean stop under the same lock),
//! and sled locks its `db` file.

mod archive;
mod audit;
mod codec;
mod durable;
pub mod events;
mod group;
mod rewrite;
mod segment;
mod tx;

#[cfg(test)]
mod archive_tests;
#[cfg(test)]
mod crash_tests;

pub use archive::{ArchiveUsage, CompactReport, SpillReport};
pub use audit::{
    AuditBreak, AuditEntry, AuditHead, AuditReceipt, AuditRecord, AuditReport, GENESIS_HASH,
    MAX_NAME_LEN, MAX_SUMMARY_LEN, canonical_bytes,
};
pub use durable::{DurableFlush, FaultInjector, SyncStep};
pub use group::{CommitError, GroupCommitter, GroupConfig};
pub use rewrite::{EngineRewrite, rewrite_at_stop};
pub use tx::{Abort, TransactError, Tx, TxError};

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The on-disk format version this build writes (kept in `meta`). Version 2 keeps each
/// specimen's results in `results` (appended per arrival) instead of inside the record;
/// version 3 adds the archive tier (segment files, and sled trees in generations), which an
/// earlier build would not see: a version-2 store is marked 3 when this build opens it.
/// Version 4 stores a run's rules and QC results apart from its record (`runs`, key
/// [`run_qc_key`]), which a version-3 build would read as a run without rules; runs written
/// before keep them inside and read as they are. Version 5 writes archive segments of layout
/// 2 (a bloom filter per block; see `segment`), which a version-4 build cannot read; the
/// segments of layout 1 a version-4 store holds read as they are, and merges rewrite them.
pub const FORMAT_VERSION: u32 = 5;

/// The formats this build upgrades in place at open, by marking them (nothing to convert:
/// version 2's trees are the archive's generation 0, the records of versions 2 to 4 and
/// segments of layout 1 read as they are).
const UPGRADES_FROM: [u32; 3] = [2, 3, 4];

/// The earlier format this build still opens, to migrate it in place (custody's
/// `records::migrate_layout`); nothing but the migration writes to a store of this version.
pub const MIGRATES_FROM: u32 = 1;

/// Key in `meta` holding the format version.
const META_FORMAT_VERSION: &[u8] = b"format_version";

/// Mode of the store directory (and of `blobs/`).
pub const DIR_MODE: u32 = 0o700;
/// Mode of every regular file of the store.
pub const FILE_MODE: u32 = 0o600;

/// The named keyspaces of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Keyspace {
    /// Inbound messages kept verbatim for audit (usually written with `put_raw_bytes`).
    Raw,
    /// Specimen records.
    Specimens,
    /// The append-only, hash-chained audit log (written only through [`Tx::audit`]).
    Audit,
    /// Analyzer + message control ID → raw key (see [`dedupe_key`]).
    Dedupe,
    /// State index: state → specimen ID (see [`state_key`]).
    ByState,
    /// Due-time index: big-endian millis + item ID (see [`due_key`]).
    Due,
    /// Messages refused, with their reason.
    Quarantine,
    /// Store metadata: format version, audit chain head (written only by the store).
    Meta,
    /// Released reports: report id → the signed report, its destination and delivery status.
    Reports,
    /// Reports waiting to be sent: MRO id, NUL, sequence (big-endian) → report id.
    Outbox,
    /// Images of CCF Copy 1: specimen ID, NUL, kind (`received`, `certified`) → the image's
    /// bytes (see [`image_key`]). Large values: sled keeps them as blob files.
    Images,
    /// The 40.111 statistical summaries produced (or suppressed) and their sending: summary id
    /// → what was produced, when, and when it was marked sent (40.109(b)).
    Summaries,
    /// Analytical runs: [`run_record_key`] → the run with its QC and decision;
    /// [`run_cursor_key`] → where an analyzer's current run stands. Their states are listed
    /// in `by_state` under [`run_state_index`].
    Runs,
    /// Each specimen's results, appended as batches: [`result_batch_key`] → the results of one
    /// arrival (format 2; format-1 records carry theirs inline).
    Results,
    /// Index of the audit log by subject: subject, NUL, sequence number (big-endian) → empty.
    /// Written by the store in the commit that appends the entry (see [`Store::audit_of`]).
    AuditSubjects,
}

impl Keyspace {
    /// Every keyspace, in the order of their transaction views.
    pub const ALL: [Keyspace; 15] = [
        Keyspace::Raw,
        Keyspace::Specimens,
        Keyspace::Audit,
        Keyspace::Dedupe,
        Keyspace::ByState,
        Keyspace::Due,
        Keyspace::Quarantine,
        Keyspace::Meta,
        Keyspace::Reports,
        Keyspace::Outbox,
        Keyspace::Images,
        Keyspace::Summaries,
        Keyspace::Runs,
        Keyspace::Results,
        Keyspace::AuditSubjects,
    ];

    /// The keyspace's name (also its sled tree name).
    pub const fn name(self) -> &'static str {
        match self {
            Keyspace::Raw => "raw",
            Keyspace::Specimens => "specimens",
            Keyspace::Audit => "audit",
            Keyspace::Dedupe => "dedupe",
            Keyspace::ByState => "by_state",
            Keyspace::Due => "due",
            Keyspace::Quarantine => "quarantine",
            Keyspace::Meta => "meta",
            Keyspace::Reports => "reports",
            Keyspace::Outbox => "outbox",
            Keyspace::Images => "images",
            Keyspace::Summaries => "summaries",
            Keyspace::Runs => "runs",
            Keyspace::Results => "results",
            Keyspace::AuditSubjects => "audit_subjects",
        }
    }

    /// Whether domain code may write it through [`Tx::put`] / [`Tx::remove`]. `audit`, its
    /// index `audit_subjects` and `meta` are written only by the store itself.
    pub const fn is_writable(self) -> bool {
        !matches!(
            self,
            Keyspace::Audit | Keyspace::Meta | Keyspace::AuditSubjects
        )
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Keyspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a value lives, described without its content: the keyspace and a key position.
///
/// The position is the sequence number for audit entries, and otherwise the key's length and
/// fingerprint (first 16 hex digits of the SHA-256 of the key, see [`key_fingerprint`]), so an
/// operator can find the key without the key itself reaching a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// The keyspace.
    pub keyspace: Keyspace,
    /// A content-free description of the key.
    pub position: String,
}

impl KeyRef {
    pub(crate) fn new(keyspace: Keyspace, key: &[u8]) -> KeyRef {
        let position = match (keyspace, <[u8; 8]>::try_from(key)) {
            (Keyspace::Audit, Ok(seq)) => format!("seq {}", u64::from_be_bytes(seq)),
            _ => format!(
                "key fingerprint {} ({} bytes)",
                key_fingerprint(key),
                key.len()
            ),
        };
        KeyRef { keyspace, position }
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "keyspace `{}`, {}", self.keyspace, self.position)
    }
}

/// First 16 hex digits of the SHA-256 of `key`: how errors refer to a key.
pub fn key_fingerprint(key: &[u8]) -> String {
    let mut hex = hex_lower(&Sha256::digest(key));
    hex.truncate(16);
    hex
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Errors of the store. None of them quotes a stored value or a raw key.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed.
    #[error("store I/O error while {context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The storage engine's own I/O failed (writing or reading its log file; a full disk,
    /// usually). sled keeps the first such error and fails every later operation with it, and
    /// the failed write may leave a hole in the log that recovery stops at: see
    /// [`StoreError::breaks_durability`].
    #[error("store I/O error while {context}: {source}")]
    EngineIo {
        /// What the store was doing.
        context: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The storage engine reported an error (corruption, unsupported operation, bug).
    #[error("storage engine error while {context}: {detail}")]
    Engine {
        /// What the store was doing.
        context: &'static str,
        /// The engine's description.
        detail: String,
        /// Corruption or an engine bug: nothing after it can be promised durable.
        fatal: bool,
    },
    /// A value starts with an encoding-version tag this build does not know.
    #[error("{key}: value has unknown encoding version {version}")]
    UnknownVersion {
        /// Where the value lives.
        key: KeyRef,
        /// The tag found.
        version: u8,
    },
    /// A value is empty: it has no version tag.
    #[error("{key}: value is empty (no encoding version)")]
    MissingVersion {
        /// Where the value lives.
        key: KeyRef,
    },
    /// A value was read with the wrong accessor (JSON vs verbatim bytes).
    #[error("{key}: value is encoded as {found}, read as {expected}")]
    WrongEncoding {
        /// Where the value lives.
        key: KeyRef,
        /// The encoding the reader expected.
        expected: &'static str,
        /// The encoding found.
        found: &'static str,
    },
    /// A value could not be decoded into the requested type.
    #[error("{key}: cannot decode value: {detail}")]
    Decode {
        /// Where the value lives.
        key: KeyRef,
        /// Error category and position (never the content).
        detail: String,
    },
    /// A value could not be encoded.
    #[error("{key}: cannot encode value: {detail}")]
    Encode {
        /// Where the value would have lived.
        key: KeyRef,
        /// Error category (never the content).
        detail: String,
    },
    /// Domain code tried to write a keyspace only the store writes (`audit`, `meta`).
    #[error("keyspace `{0}` is written only by the store itself")]
    ReadOnlyKeyspace(Keyspace),
    /// The store was written by a build with another format version.
    #[error("store format version {found} is not supported (this build reads version {supported})")]
    UnsupportedFormat {
        /// Version found in `meta`.
        found: u32,
        /// Version this build supports.
        supported: u32,
    },
    /// An earlier durable flush failed with an I/O error; nothing written since can be
    /// promised durable until the process restarts (see the `durable` module notes).
    #[error("durability lost after an earlier flush failure ({0}); restart required")]
    DurabilityLost(String),
    /// Another process (or another open [`Store`] of this process) holds the store.
    #[error("the store at {0} is in use by another process")]
    Locked(PathBuf),
    /// A key or audit field is not acceptable.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// An archive segment is damaged or unreadable as a segment.
    #[error("archive segment {segment:016x}: {detail}")]
    Archive {
        /// The segment's number (its file is `archive/<number>.seg`).
        segment: u64,
        /// What is wrong (never the content).
        detail: String,
    },
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> StoreError {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    /// Converts a sled error without exposing the sled type.
    pub(crate) fn engine(context: &'static str, e: sled::Error) -> StoreError {
        match e {
            sled::Error::Io(source) => StoreError::EngineIo { context, source },
            sled::Error::CollectionNotFound(_) => StoreError::Engine {
                context,
                detail: "collection not found".into(),
                fatal: false,
            },
            other => StoreError::Engine {
                context,
                fatal: matches!(
                    other,
                    sled::Error::Corruption { .. } | sled::Error::ReportableBug(_)
                ),
                detail: other.to_string(),
            },
        }
    }

    /// Whether this error means the engine's write path is broken, so that nothing committed
    /// after it can be promised durable until the store is reopened: an I/O error of the
    /// engine itself (sled fails every later operation with the first one; a write it could
    /// not finish may leave a hole in the log that recovery stops at), corruption, or an
    /// engine bug. A failed file operation of the store's own (a blob, a segment) is not: it
    /// refuses that one write and leaves the engine as it was.
    pub fn breaks_durability(&self) -> bool {
        matches!(
            self,
            StoreError::EngineIo { .. } | StoreError::Engine { fatal: true, .. }
        )
    }
}

/// The key of a specimen's image of CCF Copy 1: specimen ID, NUL, kind.
pub fn image_key(specimen_id: &str, kind: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(specimen_id.len() + 1 + kind.len());
    k.extend_from_slice(specimen_id.as_bytes());
    k.push(0);
    k.extend_from_slice(kind.as_bytes());
    k
}

/// Key of the `due` index: big-endian `at_millis` then the item ID, so keys sort by time.
pub fn due_key(at_millis: u64, item_id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + item_id.len());
    key.extend_from_slice(&at_millis.to_be_bytes());
    key.extend_from_slice(item_id);
    key
}

/// Splits a `due` key into its time and item ID (`None` if shorter than 8 bytes).
pub fn split_due_key(key: &[u8]) -> Option<(u64, &[u8])> {
    let (time, id) = key.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*time), id))
}

/// Key of the `by_state` index: `state`, a NUL byte, then the specimen ID. The state must not
/// contain NUL.
pub fn state_key(state: &str, specimen_id: &str) -> Result<Vec<u8>, StoreError> {
    let mut key = state_prefix(state)?;
    key.extend_from_slice(specimen_id.as_bytes());
    Ok(key)
}

/// Prefix of every `by_state` key of `state`.
pub fn state_prefix(state: &str) -> Result<Vec<u8>, StoreError> {
    if state.is_empty() || state.contains('\0') {
        return Err(StoreError::Invalid(
            "state name must be non-empty and contain no NUL".into(),
        ));
    }
    let mut key = Vec::with_capacity(state.len() + 1);
    key.extend_from_slice(state.as_bytes());
    key.push(0);
    Ok(key)
}

/// Key of a run record in `runs`: `r`, a NUL byte, then the run key (`<source>:<run id>`).
pub fn run_record_key(run_key: &str) -> Vec<u8> {
    let mut key = b"r\0".to_vec();
    key.extend_from_slice(run_key.as_bytes());
    key
}

/// Prefix of every run record key.
pub const RUN_RECORD_PREFIX: &[u8] = b"r\0";

/// Key of one member of a run in `runs`: `m`, a NUL byte, the run key, a NUL byte, then the
/// specimen ID (see [`run_member_prefix`]).
pub fn run_member_key(run_key: &str, specimen_id: &str) -> Vec<u8> {
    let mut key = run_member_prefix(run_key);
    key.extend_from_slice(specimen_id.as_bytes());
    key
}

/// Prefix of every member key of a run.
pub fn run_member_prefix(run_key: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(run_key.len() + 3);
    key.extend_from_slice(b"m\0");
    key.extend_from_slice(run_key.as_bytes());
    key.push(0);
    key
}

/// Key of one page of a run's roster in `runs`: `o`, a NUL byte, the run key, a NUL byte, then
/// the page number (big-endian): the run's specimen IDs in arrival order, a page of at most
/// [`RUN_ROSTER_PAGE`] each, so a run's members can be listed inside a transaction (which
/// cannot scan) without one key growing with the run.
pub fn run_roster_key(run_key: &str, page: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(run_key.len() + 7);
    key.extend_from_slice(b"o\0");
    key.extend_from_slice(run_key.as_bytes());
    key.push(0);
    key.extend_from_slice(&page.to_be_bytes());
    key
}

/// Specimen IDs per roster page (see [`run_roster_key`]).
pub const RUN_ROSTER_PAGE: u32 = 32;

/// Key of a run's QC in `runs` (its rules and QC results, stored apart from the record): `q`,
/// a NUL byte, then the run key.
pub fn run_qc_key(run_key: &str) -> Vec<u8> {
    let mut key = b"q\0".to_vec();
    key.extend_from_slice(run_key.as_bytes());
    key
}

/// Key of an analyzer's run cursor in `runs`: `c`, a NUL byte, then the analyzer (or `lims`).
pub fn run_cursor_key(source: &str) -> Vec<u8> {
    let mut key = b"c\0".to_vec();
    key.extend_from_slice(source.as_bytes());
    key
}

/// Key of one batch of a specimen's results in `results`: the specimen ID, a NUL byte, then
/// the batch number (big-endian), so a specimen's batches sort in arrival order.
pub fn result_batch_key(specimen_id: &str, batch: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(specimen_id.len() + 5);
    key.extend_from_slice(specimen_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&batch.to_be_bytes());
    key
}

/// The pseudo-state under which `by_state` lists runs in `state` (`open`, `pending`,
/// `accepted`, `rejected`), apart from the specimen states (which never contain `:`).
pub fn run_state_index(state: &str) -> String {
    format!("run:{state}")
}

/// Key in `dedupe` of when a source's messages last arrived, as stores written before
/// [`last_arrival_number`] kept it: a NUL byte, `last`, a NUL byte, then the source. A dedupe key starts with its source's name, which is never empty and holds
/// no NUL, so this key is never one of them.
pub fn last_arrival_key(source: &str) -> Vec<u8> {
    let mut key = b"\0last\0".to_vec();
    key.extend_from_slice(source.as_bytes());
    key
}

/// The store number ([`Store::meta_number`]) of when a source's messages last arrived, in Unix
/// milliseconds: read at every start, for each analyzer, and kept in `meta` so that the read
/// never opens an archive segment's index.
pub fn last_arrival_number(source: &str) -> String {
    format!("last_arrival:{source}")
}

/// Key of the `dedupe` index: analyzer, a NUL byte, then the message control ID. The analyzer
/// name must not contain NUL.
/// Key of pack `n` in `raw`: the inbound messages of one commit, stored together (a NUL first:
/// no [`dedupe_key`] starts with one). Each message's own key holds a pointer into it.
pub fn pack_key(n: u64) -> Vec<u8> {
    let mut key = b"\0pack\0".to_vec();
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// Key in `meta` holding the next pack number.
pub(crate) const META_NEXT_PACK: &[u8] = b"next_pack";

pub fn dedupe_key(analyzer: &str, control_id: &str) -> Result<Vec<u8>, StoreError> {
    if analyzer.is_empty() || analyzer.contains('\0') {
        return Err(StoreError::Invalid(
            "analyzer name must be non-empty and contain no NUL".into(),
        ));
    }
    let mut key = Vec::with_capacity(analyzer.len() + 1 + control_id.len());
    key.extend_from_slice(analyzer.as_bytes());
    key.push(0);
    key.extend_from_slice(control_id.as_bytes());
    Ok(key)
}

/// What one keyspace holds (see [`Store::usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyspaceUsage {
    pub keyspace: Keyspace,
    pub keys: u64,
    pub key_bytes: u64,
    pub value_bytes: u64,
}

/// How a store is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Bytes of decoded pages the store keeps in memory: sled's page cache (sled's own
    /// default, 1 GiB, would let a two-year store grow the daemon by a gigabyte) and, an eighth
    /// of it, the archive's decoded blocks. sled's bookkeeping per page is not counted.
    pub cache_bytes: u64,
    /// Keys written to sled after which its recent keys move to the archive (a spill; see
    /// [`Store::spill_due`]); 0: only when asked.
    pub archive_after_keys: u64,
}

impl StoreOptions {
    /// The part of [`StoreOptions::cache_bytes`] that keeps the archive's decoded blocks (an
    /// eighth; sled has the rest).
    pub fn block_cache_bytes(&self) -> usize {
        usize::try_from(self.cache_bytes / 8).unwrap_or(usize::MAX)
    }
}

/// The default page cache: 32 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// The default spill threshold: keys written to sled.
pub const DEFAULT_ARCHIVE_AFTER_KEYS: u64 = 10_000;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: DEFAULT_CACHE_BYTES,
            archive_after_keys: DEFAULT_ARCHIVE_AFTER_KEYS,
        }
    }
}

/// A handle on an open store. Cheap to clone; the database closes when the last clone (and the
/// last [`GroupCommitter`] using it) is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    db: sled::Db,
    options: StoreOptions,
    /// sled's trees by generation, and the segments (see [`archive`]).
    archive: archive::Archive,
    syncer: Mutex<durable::Syncer>,
    faults: FaultInjector,
    /// Held by the one writer at a time (a transaction, or a whole group-commit batch).
    writer: Mutex<()>,
    /// The store directory's lock, held while the store is open (see [`rewrite`]).
    _dir_lock: rewrite::DirLock,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store in `dir`, creating it if needed.
    ///
    /// A new directory is created with mode 0700 and its parent is fsynced; an existing one is
    /// set to 0700. The parent directory must exist. The format version is checked (or
    /// written, for a new store); a store the open changed (created, upgraded, indexed) is
    /// made durable and every file set to 0600 and fsynced at once, one it only read at the
    /// first commit's durable flush.
    /// If another holder has the store's lock, it waits up to 3 s, then fails with
    /// [`StoreError::Locked`].
    /// Files sled creates later (`blobs/*`, `snap.*`) get 0600 at the next durable flush;
    /// until then the 0700 directory keeps other users out.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, &StoreOptions::default())
    }

    /// [`Store::open`] with explicit [`StoreOptions`].
    pub fn open_with(dir: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        let created = prepare_dir(dir)?;
        let dir_lock = rewrite::DirLock::acquire(dir)?;
        // A rewrite of sled's file a crash interrupted is finished first.
        rewrite::finish_pending(dir)?;
        let db = open_db(dir, options)?;
        let meta = db
            .open_tree(Keyspace::Meta.name())
            .map_err(|e| StoreError::engine("opening a keyspace", e))?;
        let manifest: archive::Manifest = match meta
            .get(archive::META_ARCHIVE)
            .map_err(|e| StoreError::engine("reading the archive manifest", e))?
        {
            Some(v) => codec::decode_json(Keyspace::Meta, archive::META_ARCHIVE, &v)?,
            None => archive::Manifest::default(),
        };
        let archive = archive::Archive::open(&db, dir, &manifest, options.block_cache_bytes())?;
        let syncer = durable::Syncer::open(dir)?;
        let store = Store {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                db,
                options: options.clone(),
                archive,
                syncer: Mutex::new(syncer),
                faults: FaultInjector::default(),
                writer: Mutex::new(()),
                _dir_lock: dir_lock,
            }),
        };
        let formatted = store.check_format(created)?;
        let indexed = store.index_audit_subjects()?;
        // A store this open changed (created, upgraded, indexed) is made durable now; one it
        // only read is made durable by the first commit's flush (its first sync covers every
        // file), which keeps the start short.
        if created || formatted || indexed {
            store.flush_durable()?;
        }
        Ok(store)
    }

    /// Checks (or writes, for a new store) the format version; whether it wrote.
    fn check_format(&self, created: bool) -> Result<bool, StoreError> {
        match self.get::<u32>(Keyspace::Meta, META_FORMAT_VERSION)? {
            Some(v) if v == FORMAT_VERSION || v == MIGRATES_FROM => Ok(false),
            Some(v) if UPGRADES_FROM.contains(&v) => {
                let value =
                    codec::encode_json(Keyspace::Meta, META_FORMAT_VERSION, &FORMAT_VERSION)?;
                self.tree(Keyspace::Meta)
                    .insert(META_FORMAT_VERSION, value)
                    .map_err(|e| StoreError::engine("writing the format version", e))?;
                Ok(true)
            }
            Some(found) => Err(StoreError::UnsupportedFormat {
                found,
                supported: FORMAT_VERSION,
            }),
            None => {
                let meta = self.tree(Keyspace::Meta);
                let any_data = self
                    .tiers()
                    .active
                    .iter()
                    .any(|t| t.first().map(|f| f.is_some()).unwrap_or(true));
                if any_data && !created {
                    return Err(StoreError::Invalid(
                        "store holds data but no format version; refusing to guess".into(),
                    ));
                }
                let value =
                    codec::encode_json(Keyspace::Meta, META_FORMAT_VERSION, &FORMAT_VERSION)?;
                meta.insert(META_FORMAT_VERSION, value)
                    .map_err(|e| StoreError::engine("writing the format version", e))?;
                Ok(true)
            }
        }
    }

    /// The store's number `name`: a count or a time custody keeps in `meta` (which stays in
    /// sled: reading it never touches the archive) in the commits that change what it says
    /// ([`Tx::add_to_meta_number`], [`Tx::set_meta_number`]); `None` if never written.
    pub fn meta_number(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.get::<u64>(Keyspace::Meta, &meta_number_key(name))
    }

    /// The store's format version (see [`FORMAT_VERSION`], [`MIGRATES_FROM`]).
    pub fn format_version(&self) -> Result<u32, StoreError> {
        Ok(self
            .get::<u32>(Keyspace::Meta, META_FORMAT_VERSION)?
            .unwrap_or(FORMAT_VERSION))
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Free space on the store's file system, in bytes (None if it cannot be read).
    pub fn disk_free_bytes(&self) -> Option<u64> {
        fs2::available_space(&self.inner.dir).ok()
    }

    /// Publishes [`Store::disk_free_bytes`] on `custodian_store_disk_free_bytes`: the periodic
    /// sampler calls it, and so does the write path when a flush fails (a full disk shows at
    /// once, not at the next sample).
    pub fn publish_disk_free(&self) {
        if let Some(free) = self.disk_free_bytes() {
            metrics::gauge!("custodian_store_disk_free_bytes").set(free as f64);
        }
    }

    /// The fault injector consulted by [`Store::flush_durable`] (for tests only; see
    /// [`FaultInjector`]).
    pub fn fault_injector(&self) -> &FaultInjector {
        &self.inner.faults
    }

    /// The writer lock (see [`tx`]): a panic while it was held leaves nothing half-applied
    /// (writes reach the engine in one commit), so a poisoned lock is taken over.
    pub(crate) fn writer_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The tree of `ks` written now (see [`archive`]: what sled holds of an archived keyspace
    /// may be only its recent part; read through [`Store::lookup`] and [`Store::scan`]).
    pub(crate) fn tree(&self, ks: Keyspace) -> sled::Tree {
        self.tiers().active[ks.index()].clone()
    }

    /// Makes every commit so far durable: a sled flush, then a real fsync of the log file, of
    /// every file created or grown since the last durable flush, and of the directories whose
    /// entries changed (new files get mode 0600 first). Serialised with other callers.
    ///
    /// On error nothing may be assumed about commits since the last successful call. After an
    /// injected transient fault the next successful call covers them; after a real I/O error
    /// every later call fails with [`StoreError::DurabilityLost`] until the store is reopened.
    pub fn flush_durable(&self) -> Result<DurableFlush, StoreError> {
        let mut syncer = self
            .inner
            .syncer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        syncer.sync(&self.inner.db, &self.inner.faults)
    }

    /// The fsyncs the last durable flush made, in order (blobs, then the log, then the rest).
    pub fn last_sync_trace(&self) -> Vec<SyncStep> {
        self.inner
            .syncer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .trace()
            .to_vec()
    }

    /// Why durable flushes are refused, if an earlier one failed with an I/O error (for
    /// health checks): the daemon must stop acknowledging and be restarted.
    pub fn durability_lost(&self) -> Option<String> {
        self.inner
            .syncer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .lost()
            .map(str::to_string)
    }

    /// Marks durability lost (an I/O error outside the durable flush, e.g. in a transaction):
    /// every later durable flush fails with [`StoreError::DurabilityLost`] until reopened.
    pub(crate) fn lose_durability(&self, reason: String) {
        self.inner
            .syncer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .mark_lost(reason);
    }

    /// Reads and decodes a JSON value.
    pub fn get<T: DeserializeOwned>(
        &self,
        ks: Keyspace,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.lookup(ks, key)? {
            Some(v) => codec::decode_json(ks, key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Reads a value stored with [`Tx::put_raw_bytes`].
    pub fn get_raw_bytes(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.lookup(ks, key)? {
            Some(v) => self.resolve_bytes(ks, key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Decodes a stored bytes value, following a pointer into its pack (see
    /// [`pack_key`]).
    pub(crate) fn resolve_bytes(
        &self,
        ks: Keyspace,
        key: &[u8],
        stored: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let Some((pack, index)) = codec::pack_pointer_of(ks, key, stored)? else {
            return codec::decode_bytes(ks, key, stored);
        };
        let packed = self
            .lookup(ks, &pack_key(pack))?
            .ok_or_else(|| StoreError::Decode {
                key: KeyRef::new(ks, key),
                detail: format!("points into pack {pack}, which is missing"),
            })?;
        codec::pack_member(ks, key, &packed, index)
    }

    /// Whether `key` exists in `ks`.
    pub fn contains_key(&self, ks: Keyspace, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.lookup(ks, key)?.is_some())
    }

    /// The live entries of `ks` whose keys start with `prefix`, in key order (through the
    /// tiers).
    pub(crate) fn scan_prefix_raw(&self, ks: Keyspace, prefix: &[u8]) -> archive::Merged {
        self.scan_within(
            ks,
            Bound::Included(prefix.to_vec()),
            prefix_end(prefix),
            Some(prefix),
        )
    }

    /// Iterates the JSON values whose keys start with `prefix`, in key order.
    pub fn scan_prefix<T: DeserializeOwned>(&self, ks: Keyspace, prefix: &[u8]) -> Entries<T> {
        Entries::new(ks, self.scan_prefix_raw(ks, prefix))
    }

    /// Iterates the JSON values whose keys fall in `range`, in key order.
    pub fn range<T, K, R>(&self, ks: Keyspace, range: R) -> Entries<T>
    where
        T: DeserializeOwned,
        K: AsRef<[u8]>,
        R: RangeBounds<K>,
    {
        let lower = range.start_bound().map(|k| k.as_ref().to_vec());
        let upper = range.end_bound().map(|k| k.as_ref().to_vec());
        Entries::new(ks, self.scan(ks, lower, upper))
    }

    /// Iterates every JSON value of `ks`, in key order.
    pub fn iter<T: DeserializeOwned>(&self, ks: Keyspace) -> Entries<T> {
        Entries::new(ks, self.scan(ks, Bound::Unbounded, Bound::Unbounded))
    }

    /// The entries of `due` whose time is at or before `until_millis`, earliest first.
    pub fn due_until<T: DeserializeOwned>(&self, until_millis: u64) -> Entries<T> {
        let end = match until_millis.checked_add(1) {
            Some(next) => Bound::Excluded(next.to_be_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        self.range(Keyspace::Due, (Bound::<Vec<u8>>::Unbounded, end))
    }

    /// The specimen IDs in `state` (from `by_state`), in key order.
    pub fn ids_in_state(&self, state: &str) -> Result<Vec<String>, StoreError> {
        let prefix = state_prefix(state)?;
        let mut ids = Vec::new();
        for item in self.scan_prefix_raw(Keyspace::ByState, &prefix) {
            let (key, _) = item?;
            let id = std::str::from_utf8(&key[prefix.len()..]).map_err(|_| StoreError::Decode {
                key: KeyRef::new(Keyspace::ByState, &key),
                detail: "specimen ID in key is not UTF-8".into(),
            })?;
            ids.push(id.to_string());
        }
        Ok(ids)
    }

    /// What each keyspace holds: keys, bytes of keys and bytes of values as stored (encoded,
    /// compressed where it paid). Walks every keyspace: O(n), for operators and benchmarks.
    pub fn usage(&self) -> Result<Vec<KeyspaceUsage>, StoreError> {
        let mut out = Vec::with_capacity(Keyspace::ALL.len());
        for ks in Keyspace::ALL {
            let mut u = KeyspaceUsage {
                keyspace: ks,
                keys: 0,
                key_bytes: 0,
                value_bytes: 0,
            };
            for item in self.scan(ks, Bound::Unbounded, Bound::Unbounded) {
                let (k, v) = item?;
                u.keys += 1;
                u.key_bytes += k.len() as u64;
                u.value_bytes += v.as_deref().map_or(0, <[u8]>::len) as u64;
            }
            out.push(u);
        }
        Ok(out)
    }

    /// Number of keys in `ks` (walks the keyspace: O(n); an unreadable entry counts).
    pub fn count(&self, ks: Keyspace) -> usize {
        self.scan(ks, Bound::Unbounded, Bound::Unbounded).count()
    }

    /// Number of keys of `ks` starting with `prefix`.
    pub fn count_prefix(&self, ks: Keyspace, prefix: &[u8]) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.scan_prefix_raw(ks, prefix) {
            item?;
            n += 1;
        }
        Ok(n)
    }
}

/// The `meta` key of the number `name` (see [`Store::meta_number`]).
pub(crate) fn meta_number_key(name: &str) -> Vec<u8> {
    let mut key = b"counter\0".to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

/// sled's configuration for a database in `dir`. `HighThroughput`: sled's default mode
/// (`LowSpace`) rewrites live pages out of fragmented segments of its file as it goes, work
/// on the write path for space the archive frees anyway (each generation's trees are dropped
/// whole after a spill, and the file is rewritten at a clean stop). No background flusher:
/// every commit is followed by [`Store::flush_durable`] (the group committer's), which is
/// what makes anything durable; sled's timer would only add flushes beside it.
fn engine_config(dir: &Path, options: &StoreOptions) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .cache_capacity(options.cache_bytes - options.block_cache_bytes() as u64)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(None)
}

/// How long [`Store::open`] waits for the lock on `db` to be released.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Opens sled, waiting up to [`LOCK_WAIT`] for the `db` file lock: sled's background I/O
/// threads may hold the previous instance's file for a moment after it is dropped, and a
/// restarting daemon may briefly overlap its predecessor.
fn open_db(dir: &Path, options: &StoreOptions) -> Result<sled::Db, StoreError> {
    let started = Instant::now();
    loop {
        match engine_config(dir, options).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.kind() == io::ErrorKind::Other
                    && e.to_string().starts_with("could not acquire lock") =>
            {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(StoreError::Locked(dir.to_path_buf()));
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(StoreError::engine("opening the database", e)),
        }
    }
}

/// Creates (0700, parent fsynced) or checks the store directory. Returns whether it was created.
fn prepare_dir(dir: &Path) -> Result<bool, StoreError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            set_mode(dir, DIR_MODE)?;
            Ok(false)
        }
        Ok(_) => Err(StoreError::io(
            format!("opening the store at {}", dir.display()),
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .mode(DIR_MODE)
                .create(dir)
                .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
            set_mode(dir, DIR_MODE)?;
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            durable::fsync_dir(parent)?;
            Ok(true)
        }
        Err(e) => Err(StoreError::io(format!("inspecting {}", dir.display()), e)),
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| StoreError::io(format!("setting the mode of {}", path.display()), e))
}

/// The first key after every key starting with `prefix` (`Unbounded`: none).
fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bound::Excluded(end);
        }
    }
    Bound::Unbounded
}

/// Iterator over decoded entries of a keyspace: `(key, value)` in key order.
pub struct Entries<T> {
    ks: Keyspace,
    iter: archive::Merged,
    _value: PhantomData<fn() -> T>,
}

impl<T> Entries<T> {
    fn new(ks: Keyspace, iter: archive::Merged) -> Self {
        Entries {
            ks,
            iter,
            _value: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Iterator for Entries<T> {
    type Item = Result<(Vec<u8>, T), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.iter.next()?;
        Some(item.and_then(|(k, v)| {
            let v =
                v.ok_or_else(|| StoreError::Invalid("a removal mark reached a reader".into()))?;
            codec::decode_json(self.ks, &k, &v).map(|value| (k, value))
        }))
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers for the store's own tests: raw access that bypasses every check.
    use super::*;

    impl Store {
        /// Test-only hook: writes bytes straight into a keyspace (no tag, no audit).
        pub(crate) fn tamper_put(&self, ks: Keyspace, key: &[u8], value: &[u8]) {
            self.tree(ks).insert(key, value).unwrap();
        }

        /// Test-only hook: removes a key straight from a keyspace.
        pub(crate) fn tamper_remove(&self, ks: Keyspace, key: &[u8]) {
            self.tree(ks).remove(key).unwrap();
        }

        /// Test-only hook: the stored bytes of a key, tag included.
        pub(crate) fn tamper_get(&self, ks: Keyspace, key: &[u8]) -> Option<Vec<u8>> {
            self.tree(ks).get(key).unwrap().map(|v| v.to_vec())
        }
    }

    /// A fresh store in a temporary directory (the directory is `tmp.path()/store`).
    pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        (tmp, store)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::temp_store;
    use super::*;

    #[test]
    fn reopen_after_drop_sees_everything() {
        let (tmp, store) = temp_store();
        let dir = tmp.path().join("store");
        store
            .transact(|tx| {
                tx.put_raw_bytes(Keyspace::Raw, b"r1", b"MSH|^~\\&|chem1")?;
                tx.put(Keyspace::Specimens, b"S-1", &vec!["a", "b"])?;
                tx.put(Keyspace::Dedupe, &dedupe_key("chem1", "c1")?, &"r1")?;
                tx.put(Keyspace::ByState, &state_key("received", "S-1")?, &())?;
                tx.put(Keyspace::Due, &due_key(42, b"S-1"), &"S-1")?;
                tx.put(Keyspace::Quarantine, b"q1", &"bad MSH")?;
                tx.audit(AuditEntry::new(7, "analyzer:chem1", "received", "S-1"))?;
                Ok::<_, Abort<()>>(())
            })
            .unwrap();
        store.flush_durable().unwrap();
        let head = store.audit_head().unwrap();
        drop(store);

        let store = Store::open(&dir).unwrap();
        assert_eq!(
            store.get_raw_bytes(Keyspace::Raw, b"r1").unwrap().unwrap(),
            b"MSH|^~\\&|chem1"
        );
        assert_eq!(
            store
                .get::<Vec<String>>(Keyspace::Specimens, b"S-1")
                .unwrap(),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            store
                .get::<String>(Keyspace::Dedupe, &dedupe_key("chem1", "c1").unwrap())
                .unwrap()
                .as_deref(),
            Some("r1")
        );
        assert_eq!(store.ids_in_state("received").unwrap(), vec!["S-1"]);
        assert_eq!(store.due_until::<String>(42).count(), 1);
        assert_eq!(store.count(Keyspace::Quarantine), 1);
        assert_eq!(store.audit_head().unwrap(), head);
        assert_eq!(store.verify_audit().unwrap().entries, 1);
        assert_eq!(
            store
                .get::<u32>(Keyspace::Meta, META_FORMAT_VERSION)
                .unwrap(),
            Some(FORMAT_VERSION)
        );
    }

    #[test]
    fn other_format_versions_are_refused_at_open() {
        let (tmp, store) = temp_store();
        let dir = tmp.path().join("store");
        store.tamper_put(
            Keyspace::Meta,
            META_FORMAT_VERSION,
            &codec::encode_json(Keyspace::Meta, META_FORMAT_VERSION, &(FORMAT_VERSION + 1))
                .unwrap(),
        );
        store.flush_durable().unwrap();
        drop(store);
        assert!(matches!(
            Store::open(&dir),
            Err(StoreError::UnsupportedFormat {
                found,
                supported: FORMAT_VERSION
            }) if found == FORMAT_VERSION + 1
        ));
        // The format this build migrates from opens (for the migration).
        let (tmp1, store) = temp_store();
        store.tamper_put(
            Keyspace::Meta,
            META_FORMAT_VERSION,
            &codec::encode_json(Keyspace::Meta, META_FORMAT_VERSION, &MIGRATES_FROM).unwrap(),
        );
        store.flush_durable().unwrap();
        drop(store);
        let store = Store::open(&tmp1.path().join("store")).unwrap();
        assert_eq!(store.format_version().unwrap(), MIGRATES_FROM);
    }

    #[test]
    fn data_without_a_format_version_is_refused() {
        let (tmp, store) = temp_store();
        let dir = tmp.path().join("store");
        store.tamper_put(Keyspace::Specimens, b"S-1", b"\x01{}");
        store.tamper_remove(Keyspace::Meta, META_FORMAT_VERSION);
        store.flush_durable().unwrap();
        drop(store);
        assert!(matches!(Store::open(&dir), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn a_second_open_of_a_held_store_is_refused() {
        let (tmp, _store) = temp_store();
        let started = Instant::now();
        let err = Store::open(&tmp.path().join("store")).unwrap_err();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
        assert!(started.elapsed() >= LOCK_WAIT);
    }

    #[test]
    fn key_refs_never_show_the_key() {
        let r = KeyRef::new(Keyspace::Specimens, b"DONOR-SECRET");
        assert!(!r.to_string().contains("DONOR"), "{r}");
        assert!(r.to_string().contains(&key_fingerprint(b"DONOR-SECRET")));
        assert_eq!(
            KeyRef::new(Keyspace::Audit, &9u64.to_be_bytes()).position,
            "seq 9"
        );
        assert_eq!(key_fingerprint(b"").len(), 16);
    }
}
