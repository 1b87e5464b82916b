//! The LIMS spool directory: the file I/O around the pure parsers.
//!
//! Layout under the spool root (one filesystem, so every rename is atomic):
//! - `incoming/`: the LIMS drops documents here. Only regular files whose name ends in `.xml`
//!   and does not start with `.` are taken; the LIMS must write under another name (e.g.
//!   `.NAME.tmp` or `NAME.xml.tmp`) and rename to `NAME.xml` when the file is complete.
//!   Symbolic links, directories and anything else are ignored.
//! - `processing/`: a claimed file, moved here by rename while the caller parses and commits it.
//! - `done/`: moved here after the caller reports that its contents are committed.
//! - `rejected/`: refused files, each with a sibling `NAME.reason` (one line naming the line,
//!   element and rule, never content).
//!
//! Durability: after every rename the directories involved are fsynced, and a reason file is
//! written to a temporary name, fsynced and renamed before the refused file is moved, so every
//! file in `rejected/` has its reason. Names in `done/` and `rejected/` are never overwritten: a
//! repeated name gets a counter (`NAME.1.xml`, `NAME.2.xml`, …).
//!
//! Confidentiality: directories this module creates are mode 0700, and [`Spool::open`] refuses
//! a spool directory that others (outside owner and group) can read, write or enter.
//!
//! One consumer per spool: [`Spool::open`] takes an exclusive lock on `ROOT/.lock` for the life
//! of the [`Spool`], so [`Spool::recover`] can never take a file another process is working on.
//!
//! Crash recovery: a file left in `processing/` after a crash is either (a) not yet committed,
//! or (b) committed, with the crash between the commit and the move to `done/`. This module
//! cannot tell which. [`Spool::recover`] moves every such file back to `incoming/` to be
//! processed again: in case (a) that is required, and in case (b) it is harmless **only because
//! the caller's commit is idempotent** (the store dedupes a document it already holds, e.g. by
//! the digest of its bytes). A caller whose commit is not idempotent must not use `recover`.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const INCOMING: &str = "incoming";
pub const PROCESSING: &str = "processing";
pub const DONE: &str = "done";
pub const REJECTED: &str = "rejected";
const LOCK: &str = ".lock";
const REASON_SUFFIX: &str = ".reason";
/// A reason is cut to this many characters.
pub const MAX_REASON_CHARS: usize = 1000;

/// A spool operation that failed. Paths name spool files, never their contents.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}: another process holds the spool lock")]
    Locked(PathBuf),
    #[error("{0}: not a directory (or a symbolic link)")]
    NotADirectory(PathBuf),
    #[error("{0}: accessible to others (mode must not grant any permission to others)")]
    Insecure(PathBuf),
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> SpoolError + 'p {
    move |source| SpoolError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A file taken from `incoming/`, now in `processing/`. Consumed by [`Spool::commit`] or
/// [`Spool::reject`]; if neither happens (a crash), [`Spool::recover`] returns it.
#[derive(Debug, PartialEq, Eq)]
pub struct Claim {
    name: String,
    path: PathBuf,
}

impl Claim {
    /// The file name, as it was in `incoming/`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The file's path in `processing/`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// An open spool, holding the consumer lock.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    _lock: File,
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

fn exists(path: &Path) -> Result<bool, SpoolError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("stat", path)(e)),
    }
}

/// Creates `dir` (mode 0700) if missing, then checks it is a real directory closed to others.
fn ensure_dir(dir: &Path) -> Result<bool, SpoolError> {
    let created = match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(io_err("create directory", dir)(e)),
    };
    let meta = fs::symlink_metadata(dir).map_err(io_err("stat", dir))?;
    if !meta.file_type().is_dir() {
        return Err(SpoolError::NotADirectory(dir.to_path_buf()));
    }
    if meta.permissions().mode() & 0o007 != 0 {
        return Err(SpoolError::Insecure(dir.to_path_buf()));
    }
    Ok(created)
}

/// A name the consumer takes from `incoming/`: `*.xml`, not hidden.
fn eligible_name(name: &str) -> bool {
    !name.starts_with('.') && name.len() > ".xml".len() && name.ends_with(".xml")
}

/// Keeps a reason to one line of printable text.
fn one_line(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS)
        .collect()
}

impl Spool {
    /// Opens (creating if needed) the spool at `root` and takes the consumer lock.
    pub fn open(root: &Path) -> Result<Spool, SpoolError> {
        if !exists(root)? {
            DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(root)
                .map_err(io_err("create directory", root))?;
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        ensure_dir(root)?;
        let lock_path = root.join(LOCK);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked(root.into())),
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
        }
        let mut created = false;
        for sub in [INCOMING, PROCESSING, DONE, REJECTED] {
            created |= ensure_dir(&root.join(sub))?;
        }
        if created {
            sync_dir(root)?;
        }
        Ok(Spool {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self, sub: &str) -> PathBuf {
        self.root.join(sub)
    }

    /// Names in `incoming/` that would be claimed, in byte order of the name.
    pub fn pending(&self) -> Result<Vec<String>, SpoolError> {
        let dir = self.dir(INCOMING);
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !eligible_name(&name) {
                continue;
            }
            // `DirEntry::file_type` does not follow symbolic links.
            match entry.file_type() {
                Ok(t) if t.is_file() => names.push(name),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("stat", &entry.path())(e)),
            }
        }
        names.sort();
        Ok(names)
    }

    /// Claims the first pending file by renaming it into `processing/`. A name still in
    /// `processing/` (an earlier file of the same name not yet finished) is left waiting.
    pub fn claim_next(&self) -> Result<Option<Claim>, SpoolError> {
        let incoming = self.dir(INCOMING);
        let processing = self.dir(PROCESSING);
        for name in self.pending()? {
            let to = processing.join(&name);
            if exists(&to)? {
                continue;
            }
            let from = incoming.join(&name);
            match fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("rename", &from)(e)),
            }
            sync_dir(&processing)?;
            sync_dir(&incoming)?;
            return Ok(Some(Claim { name, path: to }));
        }
        Ok(None)
    }

    /// Reads a claimed file, at most `max_bytes + 1` bytes: a longer file comes back one byte
    /// over the limit, so the parser refuses it without the whole file being read.
    pub fn read(&self, claim: &Claim, max_bytes: usize) -> Result<Vec<u8>, SpoolError> {
        let file = File::open(&claim.path).map_err(io_err("open", &claim.path))?;
        let mut buf = Vec::new();
        file.take(
            u64::try_from(max_bytes)
                .unwrap_or(u64::MAX)
                .saturating_add(1),
        )
        .read_to_end(&mut buf)
        .map_err(io_err("read", &claim.path))?;
        Ok(buf)
    }

    /// A name in `dir` that is free for `name` (and, with `with_reason`, for its reason file):
    /// `name` itself, else `STEM.1.xml`, `STEM.2.xml`, …
    fn free_name(dir: &Path, name: &str, with_reason: bool) -> Result<String, SpoolError> {
        let stem = name.strip_suffix(".xml").unwrap_or(name);
        for n in 0u64.. {
            let candidate = if n == 0 {
                name.to_string()
            } else {
                format!("{stem}.{n}.xml")
            };
            let taken = exists(&dir.join(&candidate))?
                || (with_reason && exists(&dir.join(format!("{candidate}{REASON_SUFFIX}")))?);
            if !taken {
                return Ok(candidate);
            }
        }
        unreachable!("u64 names exhausted")
    }

    /// The caller has durably committed the claimed document: move it to `done/`.
    /// Returns its path there.
    pub fn commit(&self, claim: Claim) -> Result<PathBuf, SpoolError> {
        let done = self.dir(DONE);
        let to = done.join(Self::free_name(&done, &claim.name, false)?);
        fs::rename(&claim.path, &to).map_err(io_err("rename", &claim.path))?;
        sync_dir(&done)?;
        sync_dir(&self.dir(PROCESSING))?;
        Ok(to)
    }

    /// Refuses the claimed document: writes `rejected/NAME.reason` (one line, control
    /// characters replaced, at most [`MAX_REASON_CHARS`]), then moves the file to
    /// `rejected/NAME`. The reason must name positions and rules only (an [`XmlError`]'s text
    /// does), never document content. Returns the file's path there.
    ///
    /// [`XmlError`]: super::XmlError
    pub fn reject(&self, claim: Claim, reason: &str) -> Result<PathBuf, SpoolError> {
        let rejected = self.dir(REJECTED);
        let name = Self::free_name(&rejected, &claim.name, true)?;
        let reason_path = rejected.join(format!("{name}{REASON_SUFFIX}"));
        let tmp = rejected.join(format!(".{name}{REASON_SUFFIX}.tmp"));
        let mut text = one_line(reason);
        text.push('\n');
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.sync_all()
            });
        written.map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, &reason_path).map_err(io_err("rename", &tmp))?;
        let to = rejected.join(&name);
        fs::rename(&claim.path, &to).map_err(io_err("rename", &claim.path))?;
        sync_dir(&rejected)?;
        sync_dir(&self.dir(PROCESSING))?;
        Ok(to)
    }

    /// After a crash: moves every file left in `processing/` back to `incoming/` (under a free
    /// name, never replacing a file the LIMS has since dropped there), and removes temporary
    /// reason files left in `rejected/`. Returns the names given in `incoming/`, sorted.
    ///
    /// Safe only because commits are idempotent; see the module documentation. Call it once
    /// after [`Spool::open`], before claiming.
    pub fn recover(&self) -> Result<Vec<String>, SpoolError> {
        let processing = self.dir(PROCESSING);
        let incoming = self.dir(INCOMING);
        let mut moved = Vec::new();
        let mut entries: Vec<String> = Vec::new();
        for entry in fs::read_dir(&processing).map_err(io_err("list", &processing))? {
            let entry = entry.map_err(io_err("list", &processing))?;
            if let Ok(name) = entry.file_name().into_string() {
                entries.push(name);
            }
        }
        entries.sort();
        for name in entries {
            let from = processing.join(&name);
            // The LIMS may write into incoming/ at any time, so a plain rename could replace
            // its file. A hard link fails instead of replacing; then the old name goes.
            loop {
                let to = incoming.join(Self::free_name(&incoming, &name, false)?);
                match fs::hard_link(&from, &to) {
                    Ok(()) => {
                        sync_dir(&incoming)?;
                        fs::remove_file(&from).map_err(io_err("remove", &from))?;
                        moved.push(
                            to.file_name()
                                .and_then(|n| n.to_str())
                                .unwrap_or_default()
                                .to_string(),
                        );
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(io_err("link", &from)(e)),
                }
            }
        }
        sync_dir(&processing)?;
        let rejected = self.dir(REJECTED);
        for entry in fs::read_dir(&rejected).map_err(io_err("list", &rejected))? {
            let entry = entry.map_err(io_err("list", &rejected))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".reason.tmp") {
                fs::remove_file(entry.path()).map_err(io_err("remove", &entry.path()))?;
            }
        }
        sync_dir(&rejected)?;
        moved.sort();
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn spool() -> (tempfile::TempDir, Spool) {
        let tmp = tempfile::tempdir().unwrap();
        let s = Spool::open(&tmp.path().join("spool")).unwrap();
        (tmp, s)
    }

    fn drop_file(s: &Spool, name: &str, body: &str) {
        fs::write(s.dir(INCOMING).join(name), body).unwrap();
    }

    fn list(s: &Spool, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(s.dir(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn open_creates_private_directories() {
        let (_t, s) = spool();
        for sub in ["", INCOMING, PROCESSING, DONE, REJECTED] {
            let mode = fs::metadata(s.dir(sub)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{sub}");
        }
    }

    #[test]
    fn open_refuses_directories_open_to_others() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("spool");
        drop(Spool::open(&root).unwrap());
        fs::set_permissions(root.join(DONE), fs::Permissions::from_mode(0o705)).unwrap();
        match Spool::open(&root) {
            Err(SpoolError::Insecure(p)) => assert_eq!(p, root.join(DONE)),
            other => panic!("{other:?}"),
        }
        fs::set_permissions(root.join(DONE), fs::Permissions::from_mode(0o750)).unwrap();
        assert!(Spool::open(&root).is_ok(), "group access is allowed");
        fs::remove_dir(root.join(REJECTED)).unwrap();
        symlink(root.join(DONE), root.join(REJECTED)).unwrap();
        assert!(matches!(
            Spool::open(&root),
            Err(SpoolError::NotADirectory(_))
        ));
    }

    #[test]
    fn one_consumer_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("spool");
        let first = Spool::open(&root).unwrap();
        assert!(matches!(Spool::open(&root), Err(SpoolError::Locked(_))));
        drop(first);
        assert!(Spool::open(&root).is_ok());
    }

    #[test]
    fn only_complete_regular_xml_files_are_claimed() {
        let (_t, s) = spool();
        drop_file(&s, "b.xml", "<b/>");
        drop_file(&s, "a.xml", "<a/>");
        drop_file(&s, ".hidden.xml", "x");
        drop_file(&s, ".a.xml.tmp", "x");
        drop_file(&s, "c.xml.tmp", "x");
        drop_file(&s, "c.tmp", "x");
        drop_file(&s, "notes.txt", "x");
        drop_file(&s, ".xml", "x");
        drop_file(&s, "UPPER.XML", "x");
        fs::create_dir(s.dir(INCOMING).join("dir.xml")).unwrap();
        symlink("/etc/hostname", s.dir(INCOMING).join("link.xml")).unwrap();
        assert_eq!(s.pending().unwrap(), vec!["a.xml", "b.xml"]);

        let c = s.claim_next().unwrap().unwrap();
        assert_eq!(c.name(), "a.xml");
        assert_eq!(c.path(), s.dir(PROCESSING).join("a.xml"));
        assert_eq!(s.read(&c, 100).unwrap(), b"<a/>");
        assert_eq!(list(&s, PROCESSING), vec!["a.xml"]);
        assert!(!s.dir(INCOMING).join("a.xml").exists());
        let c2 = s.claim_next().unwrap().unwrap();
        assert_eq!(c2.name(), "b.xml");
        assert_eq!(s.claim_next().unwrap(), None);
    }

    #[test]
    fn read_stops_one_byte_past_the_limit() {
        let (_t, s) = spool();
        drop_file(&s, "big.xml", "0123456789");
        let c = s.claim_next().unwrap().unwrap();
        assert_eq!(s.read(&c, 10).unwrap().len(), 10);
        assert_eq!(s.read(&c, 4).unwrap(), b"01234");
        assert_eq!(s.read(&c, 0).unwrap(), b"0");
    }

    #[test]
    fn commit_moves_to_done_without_replacing() {
        let (_t, s) = spool();
        drop_file(&s, "a.xml", "first");
        let c = s.claim_next().unwrap().unwrap();
        assert_eq!(s.commit(c).unwrap(), s.dir(DONE).join("a.xml"));
        drop_file(&s, "a.xml", "second");
        let c = s.claim_next().unwrap().unwrap();
        assert_eq!(s.commit(c).unwrap(), s.dir(DONE).join("a.1.xml"));
        assert_eq!(list(&s, DONE), vec!["a.1.xml", "a.xml"]);
        assert_eq!(fs::read(s.dir(DONE).join("a.xml")).unwrap(), b"first");
        assert!(list(&s, PROCESSING).is_empty());
    }

    #[test]
    fn reject_writes_a_one_line_reason() {
        let (_t, s) = spool();
        drop_file(&s, "bad.xml", "<x/>");
        let c = s.claim_next().unwrap().unwrap();
        let e = crate::codec::lims::parse_document(&s.read(&c, 1000).unwrap(), 1000).unwrap_err();
        let to = s.reject(c, &e.to_string()).unwrap();
        assert_eq!(to, s.dir(REJECTED).join("bad.xml"));
        assert_eq!(list(&s, REJECTED), vec!["bad.xml", "bad.xml.reason"]);
        let reason = fs::read_to_string(s.dir(REJECTED).join("bad.xml.reason")).unwrap();
        assert_eq!(reason, format!("{e}\n"));
        assert!(reason.starts_with("line 1: /*: "), "{reason}");

        drop_file(&s, "bad.xml", "<y/>");
        let c = s.claim_next().unwrap().unwrap();
        s.reject(c, "line 2:\n/a\tb\r").unwrap();
        let reason = fs::read_to_string(s.dir(REJECTED).join("bad.1.xml.reason")).unwrap();
        assert_eq!(reason, "line 2: /a b \n");

        drop_file(&s, "long.xml", "x");
        let c = s.claim_next().unwrap().unwrap();
        s.reject(c, &"r".repeat(MAX_REASON_CHARS + 50)).unwrap();
        let reason = fs::read_to_string(s.dir(REJECTED).join("long.xml.reason")).unwrap();
        assert_eq!(reason.len(), MAX_REASON_CHARS + 1);
        assert!(list(&s, PROCESSING).is_empty());
    }

    #[test]
    fn a_name_in_flight_waits() {
        let (_t, s) = spool();
        drop_file(&s, "a.xml", "first");
        let c = s.claim_next().unwrap().unwrap();
        drop_file(&s, "a.xml", "second");
        assert_eq!(s.claim_next().unwrap(), None);
        s.commit(c).unwrap();
        let c = s.claim_next().unwrap().unwrap();
        assert_eq!(s.read(&c, 100).unwrap(), b"second");
    }

    #[test]
    fn recover_returns_unfinished_files_without_replacing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("spool");
        {
            let s = Spool::open(&root).unwrap();
            drop_file(&s, "a.xml", "a-old");
            drop_file(&s, "b.xml", "b");
            let _a = s.claim_next().unwrap().unwrap();
            let _b = s.claim_next().unwrap().unwrap();
            // The LIMS drops a new a.xml while the old one is in flight; then a crash.
            drop_file(&s, "a.xml", "a-new");
            fs::write(s.dir(REJECTED).join(".c.xml.reason.tmp"), "partial").unwrap();
        }
        let s = Spool::open(&root).unwrap();
        assert_eq!(s.recover().unwrap(), vec!["a.1.xml", "b.xml"]);
        assert!(list(&s, PROCESSING).is_empty());
        assert!(list(&s, REJECTED).is_empty());
        assert_eq!(list(&s, INCOMING), vec!["a.1.xml", "a.xml", "b.xml"]);
        assert_eq!(fs::read(s.dir(INCOMING).join("a.xml")).unwrap(), b"a-new");
        assert_eq!(fs::read(s.dir(INCOMING).join("a.1.xml")).unwrap(), b"a-old");
        assert_eq!(s.recover().unwrap(), Vec::<String>::new());
    }
}
