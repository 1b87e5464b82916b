//! Immutable sorted segment files: the archive tier's unit of storage.
//!
//! A segment holds entries sorted by their archive key (a keyspace byte, then the key; see
//! [`archive_key`]), each either a value exactly as the store encoded it for sled, or a removal
//! mark that hides older copies of the key. It is written once to a temporary name, fsynced,
//! renamed into place (directory fsynced), and never modified; a compaction replaces whole
//! segments.
//!
//! # Layout (integers little-endian)
//! - header: the magic `CUSTSEG` and the layout version, 2 (8 bytes; version 1 differs only
//!   in its bloom filter, below);
//! - data blocks of about [`BLOCK_BYTES`] of entries, each framed as `[u32 length][u32 CRC-32 of
//!   the framed bytes][LZ4 block, decoded size prepended]`, and in layout 2 preceded by its
//!   bloom filter (below), the block index's span covering both; an entry is `[varint bytes shared
//!   with the previous key of the block][varint rest][rest][u8 kind: 1 value, 0 removal]
//!   [varint value length][value]`;
//! - the block index, framed the same way: `[u64 blocks]`, per block `[varint key length][first key][u64
//!   offset][u32 framed length]`, then `[varint length]` and the segment's last key, then `[u8
//!   count]` and per keyspace present `[u8 keyspace][varint length][its first key][varint
//!   length][its last key]`;
//! - the bloom filter. It holds the keys of the keyspaces read by key ([`bloomed`]), and for
//!   `audit_subjects` each key's subject (the prefix through its NUL), which a subject's scan
//!   asks for. Layout 2 keeps one filter per data block (8 bits per key of the block, at least
//!   one word), framed the same way but not compressed (its bit words), written just before
//!   its block; after the index, `[u32 hashes][u64 keys held]`, framed. Nothing of the filters
//!   stays in memory but what lookups keep: a lookup reads the filter of the one block that
//!   could hold its key (kept in the block cache's share for filters), so that the memory a
//!   segment takes does not grow with its keys, nor a merge's with the keys it writes. Layout
//!   1 has one filter for the whole segment, framed the same way but not
//!   compressed: `[u32 hashes][u64 keys held]` then the bit words (8 bits per key of an upper
//!   bound of them), all of it read into memory;
//! - the footer ([`FOOTER_BYTES`]): `[u64 index offset][u64 bloom offset][u64 entries][u32
//!   CRC-32][u32 keyspaces][magic 8 bytes]`. `keyspaces` has bit 31 set ([`KEYSPACES_KNOWN`])
//!   and bit `n` for each keyspace number `n` the segment holds; the CRC then covers the three
//!   words and `keyspaces`. A segment written before (`keyspaces` 0) has its CRC over the three
//!   words alone. A lookup or a scan of a keyspace a segment does not hold passes it by without
//!   reading its index.
//!
//! Every framed region is checked against its CRC before it is decoded: a torn or altered
//! segment is reported ([`StoreError::Archive`]) with its number, never its content. Opening a
//! segment reads its footer only; the index is read at the first lookup or scan, the bloom
//! filter (its table, in layout 2) by [`Segment::load`] (which the archive's upkeep calls after a start, and a spill or
//! a merge for the segment it installs) or after a few lookups (the first read the block), so
//! that a store's start does not grow with its archive.

use super::{Keyspace, StoreError, durable, set_mode};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::ops::Bound;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// First bytes of every segment this build writes: the magic and the layout version (2: a
/// bloom filter per block).
const HEADER: &[u8; 8] = b"CUSTSEG\x02";
/// First bytes of a segment of layout 1 (one bloom filter for the whole segment), which this
/// build reads (and a merge rewrites in layout 2).
const HEADER_V1: &[u8; 8] = b"CUSTSEG\x01";
/// Last bytes of every segment.
const TRAILER: &[u8; 8] = b"CUSTEND\x01";
/// Size of the footer.
pub(crate) const FOOTER_BYTES: usize = 40;
/// Entries are cut into blocks of about this many decoded bytes.
pub(crate) const BLOCK_BYTES: usize = 16 * 1024;
/// Bloom filter bits per key of the capacity it is sized for (about 2 % false positives with
/// [`BLOOM_HASHES`]: a miss then reads one block in fifty).
const BLOOM_BITS_PER_KEY: u64 = 8;
/// Lookups a segment answers by reading the block before it reads its bloom filter (see
/// [`Segment::filter`]).
const UNFILTERED_LOOKUPS: u32 = 8;

/// Bit of the footer's `keyspaces` word saying the word lists the keyspaces held.
const KEYSPACES_KNOWN: u32 = 1 << 31;

/// The footer's CRC: over its three words, and its `keyspaces` word when that is known.
fn footer_crc(footer: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&footer[0..24]);
    if footer.len() >= 32 {
        let ks = u32::from_le_bytes(footer[28..32].try_into().expect("4 bytes"));
        if ks & KEYSPACES_KNOWN != 0 {
            crc.update(&footer[28..32]);
        }
    }
    crc.finalize()
}

/// Hash functions of the bloom filter.
const BLOOM_HASHES: u32 = 6;
/// A decoded block larger than this is refused as corrupt.
const MAX_BLOCK_DECODED: usize = 64 * 1024 * 1024;

/// A keyspace's first and last key in a segment.
type KeyRange = (Box<[u8]>, Box<[u8]>);

/// A segment's entry: its key, and its value or `None` for a removal mark.
pub(crate) type Entry = (Vec<u8>, Option<Vec<u8>>);

/// Entry kinds.
const KIND_REMOVED: u8 = 0;
const KIND_VALUE: u8 = 1;

/// The key of `key` of `ks` in a segment: the keyspace's number, then the key.
pub(crate) fn archive_key(ks: Keyspace, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(ks.index() as u8);
    out.extend_from_slice(key);
    out
}

/// The segment file of number `id` in `dir`.
pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.seg"))
}

/// The number of a segment file name (`None` for any other name).
pub(crate) fn segment_id_of(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn corrupt(id: u64, detail: impl Into<String>) -> StoreError {
    StoreError::Archive {
        segment: id,
        detail: detail.into(),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn take<'b>(buf: &'b [u8], pos: &mut usize, n: usize) -> Option<&'b [u8]> {
    let end = pos.checked_add(n)?;
    let s = buf.get(*pos..end)?;
    *pos = end;
    Some(s)
}

fn frame(payload: &[u8], compress: bool) -> Vec<u8> {
    let body = if compress {
        lz4_flex::block::compress_prepend_size(payload)
    } else {
        payload.to_vec()
    };
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&frame_head(&body));
    out.extend_from_slice(&body);
    out
}

/// A frame's head: `[u32 length][u32 CRC-32]` of `body` (which follows it).
fn frame_head(body: &[u8]) -> [u8; 8] {
    let mut head = [0u8; 8];
    head[0..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
    head[4..8].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    head
}

fn unframe(id: u64, what: &str, framed: &[u8], compressed: bool) -> Result<Vec<u8>, StoreError> {
    if framed.len() < 8 {
        return Err(corrupt(id, format!("{what} is truncated")));
    }
    let len = u32::from_le_bytes(framed[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(framed[4..8].try_into().expect("4 bytes"));
    let body = framed
        .get(8..8 + len)
        .ok_or_else(|| corrupt(id, format!("{what} is truncated")))?;
    if crc32fast::hash(body) != crc {
        return Err(corrupt(id, format!("{what} fails its checksum")));
    }
    if !compressed {
        return Ok(body.to_vec());
    }
    if body.len() >= 4 {
        let decoded = u32::from_le_bytes(body[0..4].try_into().expect("4 bytes")) as usize;
        if decoded > MAX_BLOCK_DECODED {
            return Err(corrupt(
                id,
                format!("{what} claims {decoded} decoded bytes"),
            ));
        }
    }
    lz4_flex::block::decompress_size_prepended(body)
        .map_err(|_| corrupt(id, format!("{what} does not decompress")))
}

/// Whether the keys of keyspace number `ks` go into the bloom filter: the keyspaces read by
/// key. `raw` (read by the keys its records name), `audit` (sequence numbers, in ranges) and
/// `audit_subjects` (scanned by subject) are not: lookups there find the key or read one block
/// per segment whose keyspace range covers it.
pub(crate) fn bloomed(ks: u8) -> bool {
    ![Keyspace::Raw, Keyspace::Audit, Keyspace::AuditSubjects]
        .iter()
        .any(|k| k.index() as u8 == ks)
}

/// For a key of `audit_subjects`, its subject prefix (through the NUL): bloomed, for scans.
fn subject_prefix(key: &[u8]) -> Option<&[u8]> {
    if key.first() != Some(&(Keyspace::AuditSubjects.index() as u8)) {
        return None;
    }
    let nul = key.iter().position(|b| *b == 0)?;
    Some(&key[..=nul])
}

/// The two hashes of a key for the bloom filter.
fn bloom_hashes(key: &[u8]) -> (u64, u64) {
    let h = twox_hash::XxHash64::oneshot(0x6375_7374_6f64_6961, key);
    (h, h.rotate_left(32) | 1)
}

/// Writes one segment, entries in strictly increasing key order.
pub(crate) struct SegmentWriter {
    id: u64,
    dir: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    block: Vec<u8>,
    block_first: Option<Vec<u8>>,
    prev: Vec<u8>,
    /// The block index as the file will hold it, decoded: 8 bytes for the count of blocks
    /// (filled in at the end), then each block's entry.
    index: Vec<u8>,
    /// Where each block's entry starts in `index` (the [`Meta`] the segment adopts).
    block_entries: Vec<u32>,
    blocks: u64,
    /// Layout 1: the whole segment's bloom filter.
    bloom: Vec<u64>,
    /// Layout 2: the hashes of the current block's bloomed keys (its filter is sized by their
    /// number when the block is cut, and written before it).
    pending: Vec<(u64, u64)>,
    /// 2, or 1 for a segment of the former layout (tests only).
    layout: u8,
    bloomed: u64,
    entries: u64,
    last: Option<Vec<u8>>,
    /// First and last key of each keyspace present, by keyspace number.
    ranges: Vec<Option<(Vec<u8>, Vec<u8>)>>,
}

fn set_bit(bloom: &mut [u64], (h1, h2): (u64, u64)) {
    let bits = bloom.len() as u64 * 64;
    for i in 0..u64::from(BLOOM_HASHES) {
        let bit = h1.wrapping_add(i.wrapping_mul(h2)) % bits;
        bloom[(bit / 64) as usize] |= 1 << (bit % 64);
    }
}

/// Bytes read for a block's filter (layout 2) at once: its frame, which the block's span starts
/// with, is a few hundred bytes (a byte per key of the block, 8 of frame); a longer one is read
/// again whole.
const FILTER_READ: usize = 512;

/// The length of the filter frame `span` (the start of a block's span of `span_len` bytes, in
/// layout 2) begins with, checked against the span.
fn filter_frame_len(id: u64, span: &[u8], span_len: u32) -> Result<usize, StoreError> {
    let len = span
        .get(0..4)
        .map(|b| 8 + u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(|| corrupt(id, "a block's bloom filter is truncated"))?;
    if len > span_len as usize {
        return Err(corrupt(id, "a block's bloom filter overruns its block"));
    }
    Ok(len)
}

/// Whether every bit of `(h1, h2)` is set in `words` (`hashes` probes).
fn bits_set(words: &[u64], hashes: u32, (h1, h2): (u64, u64)) -> bool {
    let bits = words.len() as u64 * 64;
    bits > 0
        && (0..u64::from(hashes)).all(|i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % bits;
            words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
}

impl SegmentWriter {
    /// Starts segment `id` in `dir` (under a temporary name), in layout 2.
    pub(crate) fn create(dir: &Path, id: u64) -> Result<SegmentWriter, StoreError> {
        Self::create_in(dir, id, 2, 0)
    }

    /// Starts a segment of layout 1, its one bloom filter sized for `expected` keys: what an
    /// earlier build wrote, for the tests that it still reads.
    #[cfg(test)]
    pub(crate) fn create_layout_1(
        dir: &Path,
        id: u64,
        expected: u64,
    ) -> Result<SegmentWriter, StoreError> {
        Self::create_in(dir, id, 1, expected)
    }

    fn create_in(
        dir: &Path,
        id: u64,
        layout: u8,
        expected: u64,
    ) -> Result<SegmentWriter, StoreError> {
        let tmp = dir.join(format!("{id:016x}.tmp"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(super::FILE_MODE)
            .open(&tmp)
            .map_err(|e| StoreError::io("creating an archive segment", e))?;
        let words = if layout == 1 {
            (expected.max(64) * BLOOM_BITS_PER_KEY).div_ceil(64) as usize
        } else {
            0
        };
        let mut out = BufWriter::with_capacity(256 * 1024, file);
        out.write_all(if layout == 1 { HEADER_V1 } else { HEADER })
            .map_err(|e| StoreError::io("writing an archive segment", e))?;
        Ok(SegmentWriter {
            id,
            dir: dir.to_path_buf(),
            tmp,
            out,
            offset: HEADER.len() as u64,
            block: Vec::with_capacity(BLOCK_BYTES + 4096),
            block_first: None,
            prev: Vec::new(),
            index: vec![0; 8],
            block_entries: Vec::new(),
            blocks: 0,
            bloom: vec![0; words],
            pending: Vec::new(),
            layout,
            bloomed: 0,
            entries: 0,
            last: None,
            ranges: vec![None; 256],
        })
    }

    /// Entries added so far.
    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }

    /// Makes room for `bytes` of block index at once (a merge: about what its inputs'
    /// indexes hold), rather than growing it by doubling as blocks are cut (each step
    /// leaving the allocator the one before).
    pub(crate) fn reserve_index(&mut self, bytes: usize) {
        self.index
            .reserve_exact(bytes.saturating_sub(self.index.len()));
    }

    /// Adds `key` (an [`archive_key`]) with its stored value, or `None` for a removal mark.
    /// Keys must come in strictly increasing order.
    pub(crate) fn add(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        if let Some(last) = &self.last
            && key <= last.as_slice()
        {
            return Err(StoreError::Invalid(
                "archive segment keys out of order".into(),
            ));
        }
        let shared = if self.block_first.is_none() {
            self.block_first = Some(key.to_vec());
            0
        } else {
            self.prev
                .iter()
                .zip(key)
                .take_while(|(a, b)| a == b)
                .count()
        };
        put_varint(&mut self.block, shared as u64);
        put_varint(&mut self.block, (key.len() - shared) as u64);
        self.block.extend_from_slice(&key[shared..]);
        match value {
            Some(v) => {
                self.block.push(KIND_VALUE);
                put_varint(&mut self.block, v.len() as u64);
                self.block.extend_from_slice(v);
            }
            None => {
                self.block.push(KIND_REMOVED);
                put_varint(&mut self.block, 0);
            }
        }
        let ks = key.first().copied().unwrap_or_default();
        if bloomed(ks) {
            self.filter_in(bloom_hashes(key));
        }
        if let Some(prefix) = subject_prefix(key)
            && !self.prev.starts_with(prefix)
        {
            self.filter_in(bloom_hashes(prefix));
        }
        match &mut self.ranges[usize::from(ks)] {
            Some((_, last)) => {
                last.clear();
                last.extend_from_slice(key);
            }
            none => *none = Some((key.to_vec(), key.to_vec())),
        }
        self.prev.clear();
        self.prev.extend_from_slice(key);
        self.last = Some(key.to_vec());
        self.entries += 1;
        if self.block.len() >= BLOCK_BYTES {
            self.cut_block()?;
        }
        Ok(())
    }

    /// Puts a key (or a subject) into the bloom filter: the segment's (layout 1), or the
    /// current block's (layout 2, set when the block is cut).
    fn filter_in(&mut self, hashes: (u64, u64)) {
        if self.layout == 1 {
            set_bit(&mut self.bloom, hashes);
        } else {
            self.pending.push(hashes);
        }
        self.bloomed += 1;
    }

    /// Layout 2: the framed filter of the block being cut (its pending keys).
    fn block_filter_frame(&mut self) -> Vec<u8> {
        let words = (self.pending.len() as u64 * BLOOM_BITS_PER_KEY)
            .div_ceil(64)
            .max(1) as usize;
        let mut part = vec![0u64; words];
        for h in self.pending.drain(..) {
            set_bit(&mut part, h);
        }
        let bytes: Vec<u8> = part.iter().flat_map(|w| w.to_le_bytes()).collect();
        frame(&bytes, false)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.out
            .write_all(bytes)
            .map_err(|e| StoreError::io("writing an archive segment", e))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn cut_block(&mut self) -> Result<(), StoreError> {
        let Some(first) = self.block_first.take() else {
            return Ok(());
        };
        let framed = frame(&self.block, true);
        let filter = if self.layout == 1 {
            Vec::new()
        } else {
            self.block_filter_frame()
        };
        let span = u32::try_from(filter.len() + framed.len())
            .map_err(|_| StoreError::Invalid("an archive segment's block is too large".into()))?;
        let at = u32::try_from(self.index.len())
            .map_err(|_| StoreError::Invalid("an archive segment's index is too large".into()))?;
        self.block_entries.push(at);
        put_varint(&mut self.index, first.len() as u64);
        self.index.extend_from_slice(&first);
        self.index.extend_from_slice(&self.offset.to_le_bytes());
        self.index.extend_from_slice(&span.to_le_bytes());
        self.blocks += 1;
        self.write(&filter)?;
        self.write(&framed)?;
        self.block.clear();
        Ok(())
    }

    /// Writes the index, the bloom filter and the footer, fsyncs the file, renames it into
    /// place and fsyncs the directory. Returns the segment's size in bytes. A segment without
    /// entries is not written (`Ok(None)`).
    pub(crate) fn finish(mut self) -> Result<Option<Written>, StoreError> {
        if self.entries == 0 {
            self.abandon();
            return Ok(None);
        }
        self.cut_block()?;
        let last = self.last.take().unwrap_or_default();
        // The index is completed where it was built (no copy: a merge's is megabytes).
        let mut index = std::mem::take(&mut self.index);
        index[0..8].copy_from_slice(&self.blocks.to_le_bytes());
        put_varint(&mut index, last.len() as u64);
        index.extend_from_slice(&last);
        let present = self.ranges.iter().flatten().count();
        index.push(present as u8);
        for (ks, (first, last)) in self
            .ranges
            .iter()
            .enumerate()
            .filter_map(|(ks, r)| r.as_ref().map(|r| (ks, r)))
        {
            index.push(ks as u8);
            put_varint(&mut index, first.len() as u64);
            index.extend_from_slice(first);
            put_varint(&mut index, last.len() as u64);
            index.extend_from_slice(last);
        }
        let index_off = self.offset;
        // Framed as `frame(.., true)` frames, the head and the body written apart (no copy).
        let body = lz4_flex::block::compress_prepend_size(&index);
        u32::try_from(body.len())
            .map_err(|_| StoreError::Invalid("an archive segment's index is too large".into()))?;
        self.write(&frame_head(&body))?;
        self.write(&body)?;
        drop(body);
        let bloom_off = self.offset;
        let bloom = if self.layout == 1 {
            self.write_whole_filter()?
        } else {
            self.write_filter_head()?
        };
        // Keyspace numbers are below 31 (there are 15); a segment holding another would not
        // say which it holds, and every lookup would read its index.
        let keyspaces = self
            .ranges
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_some())
            .try_fold(KEYSPACES_KNOWN, |m, (ks, _)| (ks < 31).then(|| m | 1 << ks))
            .unwrap_or(0);
        let mut footer = vec![0u8; FOOTER_BYTES];
        footer[0..8].copy_from_slice(&index_off.to_le_bytes());
        footer[8..16].copy_from_slice(&bloom_off.to_le_bytes());
        footer[16..24].copy_from_slice(&self.entries.to_le_bytes());
        footer[28..32].copy_from_slice(&keyspaces.to_le_bytes());
        let crc = footer_crc(&footer);
        footer[24..28].copy_from_slice(&crc.to_le_bytes());
        footer[32..40].copy_from_slice(TRAILER);
        self.write(&footer)?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| StoreError::io("writing an archive segment", e.into_error()))?;
        file.sync_all()
            .map_err(|e| StoreError::io("fsyncing an archive segment", e))?;
        drop(file);
        let path = segment_path(&self.dir, self.id);
        fs::rename(&self.tmp, &path)
            .map_err(|e| StoreError::io("renaming an archive segment into place", e))?;
        durable::fsync_dir(&self.dir)?;
        index.shrink_to_fit();
        let ranges = std::mem::take(&mut self.ranges)
            .into_iter()
            .map(|r| r.map(|(a, b)| (a.into_boxed_slice(), b.into_boxed_slice())))
            .collect();
        Ok(Some(Written {
            bloom,
            meta: Meta {
                index,
                entries: std::mem::take(&mut self.block_entries),
                ranges,
            },
        }))
    }

    /// Layout 1: the segment's one filter, framed as `frame(.., false)` would, but streamed: a
    /// merge's filter is megabytes, and a copy of it (two, with the frame) would only raise
    /// the peak.
    fn write_whole_filter(&mut self) -> Result<Bloom, StoreError> {
        let mut head = [0u8; 12];
        head[0..4].copy_from_slice(&BLOOM_HASHES.to_le_bytes());
        head[4..12].copy_from_slice(&self.bloomed.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        for w in &self.bloom {
            crc.update(&w.to_le_bytes());
        }
        let body_len = u32::try_from(12 + self.bloom.len() * 8).map_err(|_| {
            StoreError::Invalid("an archive segment's bloom filter is too large".into())
        })?;
        self.write(&body_len.to_le_bytes())?;
        self.write(&crc.finalize().to_le_bytes())?;
        self.write(&head)?;
        self.write_words()?;
        Ok(Bloom::Whole {
            bloomed: self.bloomed,
            words: std::mem::take(&mut self.bloom).into_boxed_slice(),
            hashes: BLOOM_HASHES,
        })
    }

    /// Layout 2: what the blocks' filters have in common (their hashes, and the keys they
    /// hold in all), framed.
    fn write_filter_head(&mut self) -> Result<Bloom, StoreError> {
        let mut head = Vec::with_capacity(12);
        head.extend_from_slice(&BLOOM_HASHES.to_le_bytes());
        head.extend_from_slice(&self.bloomed.to_le_bytes());
        self.write(&frame(&head, false))?;
        Ok(Bloom::Parted {
            bloomed: self.bloomed,
            hashes: BLOOM_HASHES,
        })
    }

    fn write_words(&mut self) -> Result<(), StoreError> {
        for i in 0..self.bloom.len() {
            let w = self.bloom[i].to_le_bytes();
            self.write(&w)?;
        }
        Ok(())
    }

    /// Drops the unfinished segment and its temporary file.
    pub(crate) fn abandon(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

/// A segment just written: its bloom filter and its block index, for [`Segment::adopt`]
/// (rather than reading them back from the file).
pub(crate) struct Written {
    bloom: Bloom,
    meta: Meta,
}

/// A segment's block index and key ranges, read at its first lookup or scan. The index is
/// kept as the file holds it, decoded (every block's first key, offset and framed length, one
/// entry after the other), with where each block's entry starts: reading it allocates the
/// decoded bytes once, at their exact size, and nothing per block (a segment of 400 MiB has
/// some 50,000 blocks, and a start reads their index); what a start frees after reading every
/// segment's index, and the allocator keeps, is the compressed bytes read.
struct Meta {
    /// The decoded index.
    index: Vec<u8>,
    /// Where block `i`'s entry (`[varint key length][first key][u64 offset][u32 framed
    /// length]`, checked when read) starts in `index`.
    entries: Vec<u32>,
    /// First and last key of each keyspace present, by keyspace number.
    ranges: Vec<Option<KeyRange>>,
}

/// A segment's bloom filter, read at the first lookup that needs it (a scan over key ranges
/// does not: a start that only scans loads no filter).
// `bloomed` (the keys and subjects a filter holds, as its file says) is read by the tests.
#[cfg_attr(not(test), allow(dead_code))]
enum Bloom {
    /// Layout 1: one filter for the whole segment, in memory.
    Whole {
        /// Keys (and subjects) the bloom filter holds.
        bloomed: u64,
        words: Box<[u64]>,
        hashes: u32,
    },
    /// Layout 2: one filter per data block, before the block in the file, read when a lookup
    /// asks.
    Parted { bloomed: u64, hashes: u32 },
}

impl Bloom {
    #[cfg(test)]
    fn bloomed(&self) -> u64 {
        match self {
            Bloom::Whole { bloomed, .. } | Bloom::Parted { bloomed, .. } => *bloomed,
        }
    }

    /// Bytes it keeps in memory.
    fn footprint(&self) -> u64 {
        match self {
            Bloom::Whole { words, .. } => (words.len() * 8) as u64,
            Bloom::Parted { .. } => 0,
        }
    }
}

impl Meta {
    /// Bytes it takes in memory.
    fn footprint(&self) -> u64 {
        let ranges: usize = self
            .ranges
            .iter()
            .flatten()
            .map(|(a, b)| a.len() + b.len())
            .sum();
        (self.index.capacity()
            + self.entries.capacity() * 4
            + self.ranges.capacity() * std::mem::size_of::<Option<KeyRange>>()
            + ranges) as u64
    }

    /// Number of blocks.
    fn blocks(&self) -> usize {
        self.entries.len()
    }

    /// Where block `i`'s first key lies in the index.
    fn key_at(&self, i: usize) -> std::ops::Range<usize> {
        let mut pos = self.entries[i] as usize;
        let len = get_varint(&self.index, &mut pos).expect("checked when read") as usize;
        pos..pos + len
    }

    /// Block `i`'s first key.
    fn first(&self, i: usize) -> &[u8] {
        &self.index[self.key_at(i)]
    }

    /// Block `i`'s offset in the file and framed length.
    fn span(&self, i: usize) -> (u64, u32) {
        let at = self.key_at(i).end;
        let word = &self.index[at..at + 12];
        (
            u64::from_le_bytes(word[0..8].try_into().expect("8 bytes")),
            u32::from_le_bytes(word[8..12].try_into().expect("4 bytes")),
        )
    }

    fn range_of(&self, key: &[u8]) -> Option<&KeyRange> {
        self.ranges.get(usize::from(*key.first()?))?.as_ref()
    }
}

/// An open segment: its footer checked, its index read at the first lookup or scan, its bloom
/// filter at the first lookup by key, its blocks on demand.
pub(crate) struct Segment {
    id: u64,
    path: PathBuf,
    file: File,
    entries: u64,
    bytes: u64,
    index_off: u64,
    bloom_off: u64,
    footer_off: u64,
    /// Its layout version (1 or 2), from its header.
    layout: u8,
    /// The keyspaces it holds, as its footer says (bit `n`: keyspace number `n`); `None` for
    /// a segment written before footers said.
    keyspaces: Option<u32>,
    meta: std::sync::OnceLock<Meta>,
    bloom: std::sync::OnceLock<Bloom>,
    /// Where its lookups keep the blocks they decode (none: every lookup reads the file).
    cache: Option<Arc<BlockCache>>,
    /// Lookups made before its bloom filter was loaded (see [`Segment::filter`]).
    unfiltered: std::sync::atomic::AtomicU32,
    /// Held while its index or its filter is read: the scans that run at once after a start
    /// (the metrics sampler, the lifecycle, quarantine and summaries sweeps, each on its own
    /// thread) would otherwise each read and decode the same index, side by side.
    loading: std::sync::Mutex<()>,
    /// Times its index was read from the file (once, unless the read failed).
    index_reads: std::sync::atomic::AtomicU32,
}
impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("id", &self.id)
            .field("entries", &self.entries)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// A decoded data block: its keys (all in one buffer), and where each value sits in the
/// decoded bytes.
pub(crate) struct Block {
    data: Vec<u8>,
    keys: Vec<u8>,
    /// End of each key in `keys`.
    key_ends: Vec<u32>,
    /// Offset and length of each value in `data`; `None` for a removal mark.
    values: Vec<Option<(u32, u32)>>,
}

impl Block {
    fn decode(id: u64, data: Vec<u8>) -> Result<Block, StoreError> {
        let mut keys: Vec<u8> = Vec::with_capacity(data.len() / 4);
        let mut key_ends: Vec<u32> = Vec::new();
        let mut values = Vec::new();
        let mut pos = 0usize;
        let bad = || corrupt(id, "a block's entries are malformed");
        while pos < data.len() {
            let shared = get_varint(&data, &mut pos).ok_or_else(bad)? as usize;
            let rest = get_varint(&data, &mut pos).ok_or_else(bad)? as usize;
            let prev_start = key_ends
                .len()
                .checked_sub(2)
                .map_or(0, |i| key_ends[i] as usize);
            let prev_len = keys.len() - prev_start;
            if shared > prev_len {
                return Err(bad());
            }
            keys.extend_from_within(prev_start..prev_start + shared);
            keys.extend_from_slice(take(&data, &mut pos, rest).ok_or_else(bad)?);
            let kind = *take(&data, &mut pos, 1)
                .ok_or_else(bad)?
                .first()
                .ok_or_else(bad)?;
            let vlen = get_varint(&data, &mut pos).ok_or_else(bad)? as usize;
            let start = pos;
            take(&data, &mut pos, vlen).ok_or_else(bad)?;
            values.push(match kind {
                KIND_VALUE => Some((start as u32, vlen as u32)),
                KIND_REMOVED => None,
                _ => return Err(bad()),
            });
            key_ends.push(u32::try_from(keys.len()).map_err(|_| bad())?);
        }
        Ok(Block {
            data,
            keys,
            key_ends,
            values,
        })
    }

    fn len(&self) -> usize {
        self.key_ends.len()
    }

    fn key(&self, i: usize) -> &[u8] {
        let start = i.checked_sub(1).map_or(0, |p| self.key_ends[p] as usize);
        &self.keys[start..self.key_ends[i] as usize]
    }

    /// The number of leading keys for which `pred` holds (keys are sorted; `pred` is true for
    /// a prefix of them), as `slice::partition_point`.
    fn partition_point(&self, pred: impl Fn(&[u8]) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.key(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The position of `key`, if the block holds it.
    fn find(&self, key: &[u8]) -> Option<usize> {
        let i = self.partition_point(|k| k < key);
        (i < self.len() && self.key(i) == key).then_some(i)
    }

    fn value(&self, i: usize) -> Option<Vec<u8>> {
        self.values[i].map(|(o, l)| self.data[o as usize..(o + l) as usize].to_vec())
    }

    /// Bytes it holds in memory (what the block cache counts).
    fn footprint(&self) -> usize {
        self.data.capacity()
            + self.keys.capacity()
            + self.key_ends.capacity() * 4
            + self.values.capacity() * std::mem::size_of::<Option<(u32, u32)>>()
            + std::mem::size_of::<Block>()
    }
}

/// Decoded blocks recently read by key, shared by every segment of a store and bounded in
/// bytes: the keys written rarely but read by many messages (an analyzer's run cursor and its
/// open run, the last-arrival note) live in segments once spilled, and would otherwise be read
/// and decoded again for each message. Scans and merges read around it (a scan over a whole
/// keyspace would only flush it). Segments are never modified and their numbers never reused,
/// so an entry cannot go stale; a merged-away segment's blocks age out.
///
/// Beside the blocks, within an eighth more bytes, it keeps the bloom filters of blocks
/// (layout 2) that lookups read: the few a day's keys fall into stay, the rest are read again
/// when asked (a few hundred bytes each), so that the filters in memory do not grow with the
/// archive.
pub(crate) struct BlockCache {
    capacity: usize,
    inner: std::sync::Mutex<CacheInner>,
}

struct CacheInner {
    blocks: lru::LruCache<(u64, u32), Arc<Block>>,
    bytes: usize,
    hits: u64,
    misses: u64,
    filters: lru::LruCache<(u64, u32), Arc<[u64]>>,
    filter_bytes: usize,
}

/// Bytes a block's filter takes in the cache.
fn filter_footprint(words: &[u64]) -> usize {
    words.len() * 8 + 2 * std::mem::size_of::<usize>()
}

impl BlockCache {
    /// A cache of at most `capacity` bytes of decoded blocks (0: none kept).
    pub(crate) fn new(capacity: usize) -> BlockCache {
        BlockCache {
            capacity,
            inner: std::sync::Mutex::new(CacheInner {
                blocks: lru::LruCache::unbounded(),
                bytes: 0,
                hits: 0,
                misses: 0,
                filters: lru::LruCache::unbounded(),
                filter_bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // A panic while holding the lock leaves a consistent map (every update is one call).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, segment: u64, block: u32) -> Option<Arc<Block>> {
        let mut inner = self.lock();
        let found = inner.blocks.get(&(segment, block)).cloned();
        match found {
            Some(_) => inner.hits += 1,
            None => inner.misses += 1,
        }
        found
    }

    fn insert(&self, segment: u64, block: u32, decoded: &Arc<Block>) {
        let size = decoded.footprint();
        if size > self.capacity {
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.blocks.put((segment, block), Arc::clone(decoded)) {
            inner.bytes -= old.footprint();
        }
        inner.bytes += size;
        while inner.bytes > self.capacity {
            match inner.blocks.pop_lru() {
                Some((_, old)) => inner.bytes -= old.footprint(),
                None => break,
            }
        }
    }

    /// Bytes of decoded blocks held, lookups served from the cache and lookups that read the
    /// file.
    pub(crate) fn stats(&self) -> (usize, u64, u64) {
        let inner = self.lock();
        (inner.bytes, inner.hits, inner.misses)
    }

    /// The most bytes of blocks' bloom filters kept.
    fn filter_capacity(&self) -> usize {
        self.capacity / 8
    }

    fn filter(&self, segment: u64, block: u32) -> Option<Arc<[u64]>> {
        self.lock().filters.get(&(segment, block)).cloned()
    }

    fn insert_filter(&self, segment: u64, block: u32, words: &Arc<[u64]>) {
        let size = filter_footprint(words);
        let capacity = self.filter_capacity();
        if size > capacity {
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.filters.put((segment, block), Arc::clone(words)) {
            inner.filter_bytes -= filter_footprint(&old);
        }
        inner.filter_bytes += size;
        while inner.filter_bytes > capacity {
            match inner.filters.pop_lru() {
                Some((_, old)) => inner.filter_bytes -= filter_footprint(&old),
                None => break,
            }
        }
    }

    /// Bytes of blocks' bloom filters held.
    pub(crate) fn filter_bytes(&self) -> usize {
        self.lock().filter_bytes
    }
}

impl Segment {
    /// Opens segment `id` in `dir`: checks its header and footer (the index and the bloom
    /// filter are read at the first lookup, or by [`Segment::load`]).
    pub(crate) fn open(dir: &Path, id: u64) -> Result<Segment, StoreError> {
        let path = segment_path(dir, id);
        let file = File::open(&path)
            .map_err(|e| StoreError::io(format!("opening archive segment {id:016x}"), e))?;
        let meta = file
            .metadata()
            .map_err(|e| StoreError::io(format!("inspecting archive segment {id:016x}"), e))?;
        // Private, as every file of the store (set only when it is not: a mode change is a
        // metadata write, and a start opens every segment).
        if meta.permissions().mode() & 0o777 != super::FILE_MODE {
            set_mode(&path, super::FILE_MODE)?;
        }
        let bytes = meta.len();
        if bytes < (HEADER.len() + FOOTER_BYTES) as u64 {
            return Err(corrupt(id, "is shorter than its header and footer"));
        }
        let mut header = [0u8; HEADER.len()];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| StoreError::io(format!("reading archive segment {id:016x}"), e))?;
        let layout = match &header {
            h if h == HEADER => 2,
            h if h == HEADER_V1 => 1,
            _ => return Err(corrupt(id, "has no segment header")),
        };
        let mut footer = [0u8; FOOTER_BYTES];
        file.read_exact_at(&mut footer, bytes - FOOTER_BYTES as u64)
            .map_err(|e| StoreError::io(format!("reading archive segment {id:016x}"), e))?;
        let word = |i: usize| u64::from_le_bytes(footer[i..i + 8].try_into().expect("8 bytes"));
        if &footer[32..40] != TRAILER
            || footer_crc(&footer)
                != u32::from_le_bytes(footer[24..28].try_into().expect("4 bytes"))
        {
            return Err(corrupt(id, "has a torn or altered footer"));
        }
        let (index_off, bloom_off, entries) = (word(0), word(8), word(16));
        let keyspaces = match u32::from_le_bytes(footer[28..32].try_into().expect("4 bytes")) {
            0 => None,
            k if k & KEYSPACES_KNOWN != 0 => Some(k & !KEYSPACES_KNOWN),
            _ => return Err(corrupt(id, "has a torn or altered footer")),
        };
        let footer_off = bytes - FOOTER_BYTES as u64;
        if !(HEADER.len() as u64 <= index_off && index_off <= bloom_off && bloom_off <= footer_off)
        {
            return Err(corrupt(id, "footer points outside the file"));
        }
        Ok(Segment {
            id,
            path,
            file,
            entries,
            bytes,
            index_off,
            bloom_off,
            footer_off,
            layout,
            keyspaces,
            meta: std::sync::OnceLock::new(),
            bloom: std::sync::OnceLock::new(),
            cache: None,
            unfiltered: std::sync::atomic::AtomicU32::new(0),
            loading: std::sync::Mutex::new(()),
            index_reads: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// Takes the bloom filter and the block index its writer built (the same bytes the file
    /// holds): a segment just written is not read back (a merge's index is megabytes, and
    /// reading it again would allocate it twice more, compressed and decoded).
    pub(crate) fn adopt(&self, written: Written) {
        let _ = self.bloom.set(written.bloom);
        let _ = self.meta.set(written.meta);
    }

    /// The segment, its lookups keeping decoded blocks in `cache`.
    pub(crate) fn with_cache(mut self, cache: Arc<BlockCache>) -> Segment {
        self.cache = Some(cache);
        self
    }

    fn read_at(&self, off: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, off)
            .map_err(|e| StoreError::io(format!("reading archive segment {:016x}", self.id), e))?;
        Ok(buf)
    }

    /// Reads and checks the index and the bloom filter, once.
    pub(crate) fn load(&self) -> Result<(), StoreError> {
        self.meta()?;
        self.bloom().map(|_| ())
    }

    /// The bloom filter for a lookup, `None` to read the block instead. The filter is read by
    /// [`Segment::load`] (the upkeep after a start, and a spill or a merge for the segment it
    /// installs) or at the [`UNFILTERED_LOOKUPS`]th lookup: a few lookups on the path to ready
    /// read a block each rather than a filter of megabytes.
    fn filter(&self) -> Result<Option<&Bloom>, StoreError> {
        if let Some(b) = self.bloom.get() {
            return Ok(Some(b));
        }
        if self
            .unfiltered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            < UNFILTERED_LOOKUPS
        {
            return Ok(None);
        }
        self.bloom().map(Some)
    }

    fn bloom(&self) -> Result<&Bloom, StoreError> {
        if let Some(b) = self.bloom.get() {
            return Ok(b);
        }
        let _loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = self.bloom.get() {
            return Ok(b);
        }
        let b = self.read_bloom()?;
        let _ = self.bloom.set(b);
        Ok(self.bloom.get().expect("just set"))
    }

    fn read_bloom(&self) -> Result<Bloom, StoreError> {
        if self.layout == 1 {
            return self.read_whole_filter();
        }
        let id = self.id;
        let head = unframe(
            id,
            "the bloom filters' head",
            &self.read_at(self.bloom_off, (self.footer_off - self.bloom_off) as usize)?,
            false,
        )?;
        if head.len() != 12 || self.footer_off - self.bloom_off != 20 {
            return Err(corrupt(id, "the bloom filters' head is malformed"));
        }
        let hashes = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes"));
        let bloomed = u64::from_le_bytes(head[4..12].try_into().expect("8 bytes"));
        if hashes == 0 || hashes > 64 {
            return Err(corrupt(id, "the bloom filters' head is malformed"));
        }
        Ok(Bloom::Parted { bloomed, hashes })
    }

    fn read_whole_filter(&self) -> Result<Bloom, StoreError> {
        let id = self.id;
        let bloom = unframe(
            id,
            "the bloom filter",
            &self.read_at(self.bloom_off, (self.footer_off - self.bloom_off) as usize)?,
            false,
        )?;
        if bloom.len() < 12 + 8 || (bloom.len() - 12) % 8 != 0 {
            return Err(corrupt(id, "the bloom filter is malformed"));
        }
        let hashes = u32::from_le_bytes(bloom[0..4].try_into().expect("4 bytes"));
        let bloomed = u64::from_le_bytes(bloom[4..12].try_into().expect("8 bytes"));
        let words: Box<[u64]> = bloom[12..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok(Bloom::Whole {
            bloomed,
            words,
            hashes,
        })
    }

    /// Whether the filter may hold `hashes`, for a key (or a subject) that block `block`
    /// would hold (layout 2; layout 1 has one filter for every block).
    fn filter_has(
        &self,
        bloom: &Bloom,
        block: usize,
        hashes: (u64, u64),
    ) -> Result<bool, StoreError> {
        match bloom {
            Bloom::Whole {
                words, hashes: k, ..
            } => Ok(bits_set(words, *k, hashes)),
            Bloom::Parted { hashes: k, .. } => {
                let words = self.block_filter(block)?;
                Ok(bits_set(&words, *k, hashes))
            }
        }
    }

    /// Block `block`'s filter (layout 2): from the cache, else read (the start of the block's
    /// span: one read of [`FILTER_READ`] bytes, usually), checked and kept there.
    fn block_filter(&self, block: usize) -> Result<Arc<[u64]>, StoreError> {
        let n = u32::try_from(block).map_err(|_| corrupt(self.id, "has too many blocks"))?;
        if let Some(cache) = &self.cache
            && let Some(w) = cache.filter(self.id, n)
        {
            return Ok(w);
        }
        let meta = self.meta()?;
        if block >= meta.blocks() {
            return Err(corrupt(self.id, "has no such block"));
        }
        let (offset, span) = meta.span(block);
        let mut bytes = self.read_at(offset, (span as usize).min(FILTER_READ))?;
        let len = filter_frame_len(self.id, &bytes, span)?;
        if len > bytes.len() {
            bytes = self.read_at(offset, len)?;
        }
        let body = unframe(self.id, "a block's bloom filter", &bytes[..len], false)?;
        if body.is_empty() || body.len() % 8 != 0 {
            return Err(corrupt(self.id, "a block's bloom filter is malformed"));
        }
        let w: Arc<[u64]> = body
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        if let Some(cache) = &self.cache {
            cache.insert_filter(self.id, n, &w);
        }
        Ok(w)
    }

    fn meta(&self) -> Result<&Meta, StoreError> {
        if let Some(m) = self.meta.get() {
            return Ok(m);
        }
        let _loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = self.meta.get() {
            return Ok(m);
        }
        let m = self.read_meta()?;
        let _ = self.meta.set(m);
        Ok(self.meta.get().expect("just set"))
    }

    fn read_meta(&self) -> Result<Meta, StoreError> {
        self.index_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = self.id;
        let index = unframe(
            id,
            "the block index",
            &self.read_at(self.index_off, (self.bloom_off - self.index_off) as usize)?,
            true,
        )?;
        let bad = || corrupt(id, "the block index is malformed");
        let mut pos = 0usize;
        let count = take(&index, &mut pos, 8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .ok_or_else(bad)?;
        if count == 0 || count > index.len() as u64 || index.len() > u32::MAX as usize {
            return Err(bad());
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            entries.push(pos as u32);
            let klen = get_varint(&index, &mut pos).ok_or_else(bad)? as usize;
            take(&index, &mut pos, klen.checked_add(12).ok_or_else(bad)?).ok_or_else(bad)?;
        }
        let boxed = |pos: &mut usize| -> Result<Box<[u8]>, StoreError> {
            let n = get_varint(&index, pos).ok_or_else(bad)? as usize;
            Ok(take(&index, pos, n)
                .ok_or_else(bad)?
                .to_vec()
                .into_boxed_slice())
        };
        let _last = boxed(&mut pos)?;
        let present = *take(&index, &mut pos, 1)
            .ok_or_else(bad)?
            .first()
            .ok_or_else(bad)?;
        let mut ranges: Vec<Option<KeyRange>> = vec![None; 256];
        for _ in 0..present {
            let ks = *take(&index, &mut pos, 1)
                .ok_or_else(bad)?
                .first()
                .ok_or_else(bad)?;
            let first = boxed(&mut pos)?;
            let last = boxed(&mut pos)?;
            ranges[usize::from(ks)] = Some((first, last));
        }
        if pos != index.len() {
            return Err(bad());
        }
        Ok(Meta {
            index,
            entries,
            ranges,
        })
    }

    /// Bytes its block index and its bloom filter take in memory (0 for one not read yet).
    pub(crate) fn memory(&self) -> (u64, u64) {
        (
            self.meta.get().map_or(0, Meta::footprint),
            self.bloom.get().map_or(0, Bloom::footprint),
        )
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Bytes of its decoded block index (0 for one not read yet).
    pub(crate) fn index_bytes(&self) -> usize {
        self.meta.get().map_or(0, |m| m.index.len())
    }

    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Keys (and subjects) its bloom filter holds.
    #[cfg(test)]
    pub(crate) fn bloomed(&self) -> Result<u64, StoreError> {
        Ok(self.bloom()?.bloomed())
    }

    /// Whether keyspace number `ks` may be here, as the footer says (without the index).
    pub(crate) fn may_hold(&self, ks: u8) -> bool {
        self.keyspaces
            .is_none_or(|m| ks >= 31 || m & (1 << u32::from(ks)) != 0)
    }

    /// Whether `key` may be here (no false negatives).
    pub(crate) fn may_contain(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.probe(key)?.is_some())
    }

    /// The block that would hold `key`, when the key may be here (its keyspace's range holds
    /// it, and the bloom filter, if read, does not rule it out).
    fn probe(&self, key: &[u8]) -> Result<Option<usize>, StoreError> {
        if key.first().is_some_and(|ks| !self.may_hold(*ks)) {
            return Ok(None);
        }
        let m = self.meta()?;
        let Some((first, last)) = m.range_of(key) else {
            return Ok(None);
        };
        if key < &**first || key > &**last {
            return Ok(None);
        }
        let Some(block) = Self::block_for(m, key) else {
            return Ok(None);
        };
        if !bloomed(key[0]) {
            return Ok(Some(block));
        }
        match self.filter()? {
            Some(b) if !self.filter_has(b, block, bloom_hashes(key))? => Ok(None),
            _ => Ok(Some(block)),
        }
    }

    /// Whether the bloom filter may hold `subject` (an `audit_subjects` prefix through its
    /// NUL). The subject went into the filter of the block holding its first key: the block
    /// that would hold the prefix itself, unless the next block starts with the subject.
    fn may_hold_subject(&self, subject: &[u8]) -> Result<bool, StoreError> {
        let Some(b) = self.filter()? else {
            return Ok(true);
        };
        let m = self.meta()?;
        let at = Self::block_for(m, subject);
        let next = at.map_or(0, |i| i + 1);
        if next < m.blocks() && m.first(next).starts_with(subject) {
            return Ok(true);
        }
        match at {
            Some(i) => self.filter_has(b, i, bloom_hashes(subject)),
            None => Ok(false),
        }
    }

    /// Whether keys of keyspace number `ks` between `lower` and `upper` (archive keys) may be
    /// here: the keyspace's range meets them, and for a scan of one subject of
    /// `audit_subjects` (`subject`: its archive key prefix), the bloom filter has the subject.
    pub(crate) fn may_overlap(
        &self,
        ks: u8,
        lower: &Bound<Vec<u8>>,
        upper: &Bound<Vec<u8>>,
        subject: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        if !self.may_hold(ks) {
            return Ok(false);
        }
        let m = self.meta()?;
        let Some((first, last)) = m.ranges.get(usize::from(ks)).and_then(Option::as_ref) else {
            return Ok(false);
        };
        let first_in = match upper {
            Bound::Included(u) => **first <= **u,
            Bound::Excluded(u) => **first < **u,
            Bound::Unbounded => true,
        };
        let last_in = match lower {
            Bound::Included(l) => **last >= **l,
            Bound::Excluded(l) => **last > **l,
            Bound::Unbounded => true,
        };
        if !(first_in && last_in) {
            return Ok(false);
        }
        Ok(match subject {
            Some(p) if subject_prefix(p).is_some_and(|sp| sp.len() == p.len()) => {
                self.may_hold_subject(p)?
            }
            _ => true,
        })
    }

    /// The block that would hold `key`: the last whose first key is at or before it.
    fn block_for(m: &Meta, key: &[u8]) -> Option<usize> {
        // The number of blocks whose first key is at or before `key` (first keys ascend).
        let (mut lo, mut hi) = (0, m.blocks());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if m.first(mid) <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }

    fn read_block(&self, i: usize) -> Result<Block, StoreError> {
        let (offset, len) = self.meta()?.span(i);
        let span = self.read_at(offset, len as usize)?;
        // Layout 2: the block's filter comes first.
        let skip = if self.layout == 1 {
            0
        } else {
            filter_frame_len(self.id, &span, len)?
        };
        let data = unframe(self.id, "a data block", &span[skip..], true)?;
        Block::decode(self.id, data)
    }

    /// Block `i` for a lookup: from the cache, else read and kept there.
    fn lookup_block(&self, i: usize) -> Result<Arc<Block>, StoreError> {
        let Some(cache) = &self.cache else {
            return self.read_block(i).map(Arc::new);
        };
        let n = u32::try_from(i).map_err(|_| corrupt(self.id, "has too many blocks"))?;
        if let Some(b) = cache.get(self.id, n) {
            return Ok(b);
        }
        let b = Arc::new(self.read_block(i)?);
        cache.insert(self.id, n, &b);
        Ok(b)
    }

    /// `key`'s entry here: `Some(Some(value))`, `Some(None)` for a removal mark, `None` when
    /// the segment does not hold the key.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Option<Vec<u8>>>, StoreError> {
        let Some(i) = self.probe(key)? else {
            return Ok(None);
        };
        let block = self.lookup_block(i)?;
        Ok(block.find(key).map(|j| block.value(j)))
    }

    /// The last entry at or before (`inclusive`) or before `key` of `key`'s keyspace, removal
    /// marks included.
    pub(crate) fn floor(&self, key: &[u8], inclusive: bool) -> Result<Option<Entry>, StoreError> {
        if key.first().is_some_and(|ks| !self.may_hold(*ks)) {
            return Ok(None);
        }
        let m = self.meta()?;
        let Some((first, last)) = m.range_of(key) else {
            return Ok(None);
        };
        if key < &**first || (!inclusive && key == &**first) {
            return Ok(None);
        }
        // Past the keyspace's last key: that key is the floor.
        let target: &[u8] = if key > &**last { last } else { key };
        let inclusive = inclusive || key > &**last;
        let Some(i) = Self::block_for(m, target) else {
            return Ok(None);
        };
        let block = self.lookup_block(i)?;
        let n = block.partition_point(|k| if inclusive { k <= target } else { k < target });
        if let Some(j) = n.checked_sub(1) {
            return Ok(Some((block.key(j).to_vec(), block.value(j))));
        }
        // `target` is this block's first key, excluded: the previous block's last entry.
        let Some(prev) = i.checked_sub(1) else {
            return Ok(None);
        };
        let block = self.lookup_block(prev)?;
        let j = block
            .len()
            .checked_sub(1)
            .ok_or_else(|| corrupt(self.id, "a block is empty"))?;
        Ok(Some((block.key(j).to_vec(), block.value(j))))
    }

    /// Iterates the entries from `lower` on, in key order, up to `upper`.
    pub(crate) fn iter(
        self: &Arc<Self>,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
    ) -> SegmentIter {
        let start = self.meta().map(|m| match &lower {
            Bound::Included(k) | Bound::Excluded(k) => Self::block_for(m, k).unwrap_or(0),
            Bound::Unbounded => 0,
        });
        let (next_block, pending) = match start {
            Ok(b) => (b, None),
            Err(e) => (0, Some(e)),
        };
        SegmentIter {
            seg: Arc::clone(self),
            next_block,
            block: None,
            pos: 0,
            lower,
            upper,
            done: false,
            pending,
        }
    }
}

/// The entries of one segment over a key range, in order: `(key, Some(value) | None)`.
pub(crate) struct SegmentIter {
    seg: Arc<Segment>,
    next_block: usize,
    block: Option<Block>,
    pos: usize,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    done: bool,
    /// An error reading the segment's index, reported as the first item.
    pending: Option<StoreError>,
}

impl Iterator for SegmentIter {
    type Item = Result<(Vec<u8>, Option<Vec<u8>>), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            self.done = true;
            return Some(Err(e));
        }
        loop {
            if self.done {
                return None;
            }
            if let Some(block) = &self.block
                && self.pos < block.len()
            {
                let i = self.pos;
                self.pos += 1;
                let key = block.key(i);
                let below = match &self.lower {
                    Bound::Included(l) => key < l.as_slice(),
                    Bound::Excluded(l) => key <= l.as_slice(),
                    Bound::Unbounded => false,
                };
                if below {
                    continue;
                }
                let above = match &self.upper {
                    Bound::Included(u) => key > u.as_slice(),
                    Bound::Excluded(u) => key >= u.as_slice(),
                    Bound::Unbounded => false,
                };
                if above {
                    self.done = true;
                    return None;
                }
                return Some(Ok((key.to_vec(), block.value(i))));
            }
            let blocks = match self.seg.meta() {
                Ok(m) => m.blocks(),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if self.next_block >= blocks {
                self.done = true;
                return None;
            }
            match self.seg.read_block(self.next_block) {
                Ok(b) => {
                    self.next_block += 1;
                    self.block = Some(b);
                    self.pos = 0;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, id: u64, entries: &[(Vec<u8>, Option<Vec<u8>>)]) -> Arc<Segment> {
        let mut w = SegmentWriter::create(dir, id).unwrap();
        for (k, v) in entries {
            w.add(k, v.as_deref()).unwrap();
        }
        w.finish().unwrap().unwrap();
        Arc::new(Segment::open(dir, id).unwrap())
    }

    /// A segment as a build before layout 2 wrote it: one bloom filter for all its keys.
    fn write_layout_1(dir: &Path, id: u64, entries: &[(Vec<u8>, Option<Vec<u8>>)]) -> Segment {
        let mut w = SegmentWriter::create_layout_1(dir, id, entries.len() as u64).unwrap();
        for (k, v) in entries {
            w.add(k, v.as_deref()).unwrap();
        }
        w.finish().unwrap().unwrap();
        Segment::open(dir, id).unwrap()
    }

    /// Absent keys of [`sample`]'s keyspace between its keys: how many of 20,000 pass.
    fn false_hits(seg: &Segment) -> usize {
        (0..20_000)
            .filter(|i| {
                seg.may_contain(format!("\x01S-{i:08}-absent").as_bytes())
                    .unwrap()
            })
            .count()
    }

    #[test]
    fn a_layout_1_segment_reads_as_before_and_holds_its_whole_filter() {
        let tmp = tempfile::tempdir().unwrap();
        let entries = sample(20_000);
        let old = write_layout_1(tmp.path(), 1, &entries);
        let new = write(tmp.path(), 2, &entries);
        assert_eq!((old.layout, new.layout), (1, 2));
        assert_eq!(
            &fs::read(segment_path(tmp.path(), 1)).unwrap()[..8],
            HEADER_V1
        );
        assert_eq!(&fs::read(segment_path(tmp.path(), 2)).unwrap()[..8], HEADER);
        old.load().unwrap();
        new.load().unwrap();
        for (k, v) in &entries {
            assert_eq!(old.get(k).unwrap(), Some(v.clone()));
            assert_eq!(old.floor(k, true).unwrap(), Some((k.clone(), v.clone())));
        }
        assert_eq!(old.bloomed().unwrap(), 20_000);
        assert_eq!(new.bloomed().unwrap(), 20_000);
        let hits = false_hits(&old);
        assert!(hits < 600, "{hits} of 20000 absent keys passed");
        // The whole filter is in memory (a byte per key); layout 2 keeps none of its own.
        let (old_filter, new_filter) = (old.memory().1, new.memory().1);
        assert!(old_filter >= 20_000, "{old_filter}");
        assert_eq!(new_filter, 0);
    }

    #[test]
    fn each_block_has_its_own_filter_read_when_asked_and_kept_in_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let entries = sample(20_000);
        write(tmp.path(), 4, &entries);
        let cache = Arc::new(BlockCache::new(64 * 1024));
        let seg = Segment::open(tmp.path(), 4)
            .unwrap()
            .with_cache(Arc::clone(&cache));
        seg.load().unwrap();
        assert!(entries.iter().all(|(k, _)| seg.may_contain(k).unwrap()));
        let hits = false_hits(&seg);
        assert!(hits < 600, "{hits} of 20000 absent keys passed");
        // The filters read stay within the cache's share for them.
        let held = cache.filter_bytes();
        assert!(
            held > 0 && held <= 64 * 1024 / 8,
            "{held} bytes of filters held"
        );
        // One key's block filter, now cached: a damaged filter on disk is not read again for
        // it, and is found (by its checksum) for a block whose filter was not kept.
        let absent = b"\x01S-00019990-absent";
        assert!(!seg.may_contain(absent).unwrap());
        assert!(matches!(seg.bloom.get(), Some(Bloom::Parted { .. })));
        let block = Segment::block_for(seg.meta().unwrap(), absent).unwrap();
        let (offset, _) = seg.meta().unwrap().span(block);
        let path = segment_path(tmp.path(), 4);
        let mut bytes = fs::read(&path).unwrap();
        // The first word of the block's filter, after its frame's length and CRC.
        bytes[offset as usize + 8] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        assert!(!seg.may_contain(absent).unwrap(), "served from the cache");
        let fresh = Segment::open(tmp.path(), 4).unwrap();
        fresh.load().unwrap();
        let err = fresh.may_contain(absent).unwrap_err().to_string();
        assert!(
            err.contains("0000000000000004") && err.contains("checksum"),
            "{err}"
        );
        assert!(!err.contains("S-0000"), "{err}");
        // Without a cache every lookup reads the block's filter, and answers the same.
        let uncached = write(tmp.path(), 5, &entries);
        uncached.load().unwrap();
        assert!(
            entries
                .iter()
                .all(|(k, _)| uncached.may_contain(k).unwrap())
        );
        assert_eq!(false_hits(&uncached), hits);
    }

    #[test]
    fn a_filter_frame_fits_its_span_to_the_byte() {
        // A frame of 8 + 16 bytes: a span of exactly that holds it, one byte less does not.
        let framed = frame(&[0u8; 16], false);
        assert_eq!(filter_frame_len(1, &framed, 24).unwrap(), 24);
        assert_eq!(filter_frame_len(1, &framed, 25).unwrap(), 24);
        let err = filter_frame_len(1, &framed, 23).unwrap_err().to_string();
        assert!(
            err.contains("0000000000000001") && err.contains("overruns"),
            "{err}"
        );
        assert!(
            filter_frame_len(1, &framed[..3], 24).is_err(),
            "no length to read"
        );
    }

    #[test]
    fn a_block_of_many_small_keys_has_a_filter_longer_than_one_read() {
        let tmp = tempfile::tempdir().unwrap();
        let entries: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..20_000)
            .map(|i| (format!("\x01S-{i:08}").into_bytes(), Some(vec![1])))
            .collect();
        let seg = write(tmp.path(), 8, &entries);
        seg.load().unwrap();
        let (_, span) = seg.meta().unwrap().span(0);
        let first = fs::read(segment_path(tmp.path(), 8)).unwrap();
        let filter = filter_frame_len(8, &first[HEADER.len()..], span).unwrap();
        assert!(filter > FILTER_READ, "a filter of {filter} bytes");
        assert!(
            entries
                .iter()
                .all(|(k, _)| seg.get(k).unwrap() == Some(Some(vec![1])))
        );
        let hits = false_hits(&seg);
        assert!(hits < 600, "{hits} of 20000 absent keys passed");
    }

    #[test]
    fn a_subject_is_found_by_its_scan_where_it_starts_a_block_or_within_one() {
        let tmp = tempfile::tempdir().unwrap();
        let ks = Keyspace::AuditSubjects.index() as u8;
        let subject = |n: usize| {
            let mut p = vec![ks];
            p.extend_from_slice(format!("specimen:S{n:05}\0").as_bytes());
            p
        };
        // Seven entries per subject, values long enough that blocks cut every few subjects.
        let mut entries = Vec::new();
        for n in 0..600 {
            for seq in 0..7u64 {
                let mut k = subject(n * 2);
                k.extend_from_slice(&seq.to_be_bytes());
                entries.push((k, Some(vec![b'v'; 300])));
            }
        }
        let seg = write(tmp.path(), 6, &entries);
        seg.load().unwrap();
        let m = seg.meta().unwrap();
        let starts_a_block = (1..m.blocks())
            .filter(|&b| {
                let first = m.first(b);
                let i = entries
                    .iter()
                    .position(|(k, _)| k.as_slice() == first)
                    .unwrap();
                subject_prefix(&entries[i - 1].0) != subject_prefix(first)
            })
            .count();
        assert!(
            starts_a_block > 0,
            "some block starts with a subject's first key"
        );
        let over = |p: &[u8]| {
            seg.may_overlap(ks, &Bound::Included(p.to_vec()), &Bound::Unbounded, Some(p))
                .unwrap()
        };
        assert!(
            (0..600).all(|n| over(&subject(n * 2))),
            "every subject present is found"
        );
        let passed = (0..600).filter(|n| over(&subject(n * 2 + 1))).count();
        assert!(passed < 60, "{passed} of 600 absent subjects passed");
    }

    fn sample(n: usize) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        (0..n)
            .map(|i| {
                let k = format!("\x01S-{i:08}").into_bytes();
                let v =
                    (i % 13 != 0).then(|| format!("value {i} ").repeat(i % 50 + 1).into_bytes());
                (k, v)
            })
            .collect()
    }

    #[test]
    fn every_entry_reads_back_by_key_by_floor_and_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let entries = sample(5000);
        let seg = write(tmp.path(), 7, &entries);
        let meta = seg.meta().unwrap();
        assert!(meta.blocks() > 10, "many blocks: {}", meta.blocks());
        assert_eq!(seg.entries(), 5000);
        for (k, v) in &entries {
            assert_eq!(seg.get(k).unwrap(), Some(v.clone()));
            assert_eq!(seg.floor(k, true).unwrap(), Some((k.clone(), v.clone())));
        }
        assert_eq!(seg.get(b"\x01S-00000000x").unwrap(), None);
        assert_eq!(seg.get(b"\x00").unwrap(), None);
        assert_eq!(seg.floor(b"\x00", true).unwrap(), None);
        let mut after = entries[10].0.clone();
        after.push(b'x');
        assert_eq!(seg.floor(&after, true).unwrap().unwrap().0, entries[10].0);
        assert_eq!(
            seg.floor(&entries[10].0, false).unwrap().unwrap().0,
            entries[9].0
        );
        assert_eq!(seg.floor(&entries[0].0, false).unwrap(), None);
        // Before the first key of every block: the previous block's last entry.
        for b in 1..meta.blocks() {
            let first = meta.first(b).to_vec();
            let i = entries.iter().position(|(k, _)| *k == first).unwrap();
            assert_eq!(
                seg.floor(&first, false).unwrap().unwrap().0,
                entries[i - 1].0
            );
        }
        let all: Vec<_> = seg
            .iter(Bound::Unbounded, Bound::Unbounded)
            .map(Result::unwrap)
            .collect();
        assert_eq!(all, entries);
        let some: Vec<_> = seg
            .iter(
                Bound::Excluded(entries[100].0.clone()),
                Bound::Included(entries[3000].0.clone()),
            )
            .map(Result::unwrap)
            .collect();
        assert_eq!(some, entries[101..=3000].to_vec());
    }

    #[test]
    fn lookups_through_the_block_cache_read_the_same_and_the_cache_stays_within_its_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let entries = sample(5000);
        let plain = write(tmp.path(), 3, &entries);
        let blocks = plain.meta().unwrap().blocks();
        assert!(blocks > 10, "many blocks: {blocks}");
        // Room for about three decoded blocks.
        let one = plain.read_block(0).unwrap().footprint();
        let cache = Arc::new(BlockCache::new(one * 3 + one / 2));
        let cached = Arc::new(
            Segment::open(tmp.path(), 3)
                .unwrap()
                .with_cache(Arc::clone(&cache)),
        );
        for round in 0..2 {
            for (k, v) in &entries {
                assert_eq!(cached.get(k).unwrap(), Some(v.clone()), "round {round}");
                assert_eq!(
                    cached.floor(k, false).unwrap(),
                    plain.floor(k, false).unwrap()
                );
                let (bytes, _, _) = cache.stats();
                assert!(bytes <= one * 4, "{bytes} bytes held, room for {}", one * 3);
            }
        }
        let (bytes, hits, misses) = cache.stats();
        assert!(bytes > 0);
        // Keys in order: each block is read once per pass, then served from the cache.
        assert!(hits > misses * 10, "{hits} hits, {misses} misses");
        assert!(
            misses >= 2 * blocks as u64,
            "evicted, read again: {misses} misses"
        );
        // The same key again: a hit.
        let (_, before, _) = cache.stats();
        cached.get(&entries[4999].0).unwrap();
        assert_eq!(cache.stats().1, before + 1);
        // A scan reads around the cache.
        let (_, h, m) = cache.stats();
        assert_eq!(
            cached.iter(Bound::Unbounded, Bound::Unbounded).count(),
            5000
        );
        assert_eq!((cache.stats().1, cache.stats().2), (h, m));
        // A cache of 0 bytes keeps nothing and still answers.
        let none = Arc::new(BlockCache::new(0));
        let uncached = Segment::open(tmp.path(), 3)
            .unwrap()
            .with_cache(Arc::clone(&none));
        assert_eq!(
            uncached.get(&entries[7].0).unwrap(),
            Some(entries[7].1.clone())
        );
        assert_eq!(none.stats().0, 0);
    }

    #[test]
    fn a_block_decodes_prefix_shared_keys_and_finds_each() {
        let tmp = tempfile::tempdir().unwrap();
        let entries: Vec<(Vec<u8>, Option<Vec<u8>>)> = [
            &b"\x01a"[..],
            b"\x01ab",
            b"\x01abc",
            b"\x01abd",
            b"\x01b",
            b"\x01bbbbbbbb",
            b"\x02",
        ]
        .iter()
        .enumerate()
        .map(|(i, k)| (k.to_vec(), (i != 3).then(|| vec![i as u8; i])))
        .collect();
        let seg = write(tmp.path(), 9, &entries);
        let block = seg.read_block(0).unwrap();
        assert_eq!(block.len(), entries.len());
        for (i, (k, v)) in entries.iter().enumerate() {
            assert_eq!(block.key(i), k.as_slice());
            assert_eq!(block.find(k), Some(i));
            assert_eq!(block.value(i), *v);
        }
        assert_eq!(block.find(b"\x01abb"), None);
        assert_eq!(block.find(b"\x03"), None);
        assert_eq!(block.partition_point(|k| k < b"\x01abd".as_slice()), 3);
        assert_eq!(block.partition_point(|k| k <= b"\x01abd".as_slice()), 4);
        assert_eq!(block.partition_point(|_| true), entries.len());
        assert_eq!(block.partition_point(|_| false), 0);
    }

    #[test]
    fn the_bloom_filter_rejects_most_absent_keys_and_never_a_present_one() {
        let tmp = tempfile::tempdir().unwrap();
        let entries = sample(20_000);
        let seg = write(tmp.path(), 1, &entries);
        // The first lookups read the block (the filter is not read yet); then the filter is.
        let absent = b"\x01S-00000005-absent";
        for _ in 0..UNFILTERED_LOOKUPS {
            assert!(seg.may_contain(absent).unwrap());
        }
        assert!(seg.bloom.get().is_none());
        assert_eq!(seg.get(absent).unwrap(), None);
        assert!(seg.bloom.get().is_some(), "read at the lookup after them");
        assert!(!seg.may_contain(absent).unwrap());
        assert!(entries.iter().all(|(k, _)| seg.may_contain(k).unwrap()));
        let false_hits = (0..20_000)
            .filter(|i| {
                seg.may_contain(format!("\x01S-{i:08}-absent").as_bytes())
                    .unwrap()
            })
            .count();
        assert!(false_hits < 600, "{false_hits} of 20000 absent keys passed");
    }

    #[test]
    fn keys_out_of_order_are_refused_and_an_empty_segment_is_not_written() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(tmp.path(), 2).unwrap();
        w.add(b"b", Some(b"1")).unwrap();
        assert!(w.add(b"a", Some(b"1")).is_err());
        assert!(w.add(b"b", None).is_err());
        w.abandon();
        let w = SegmentWriter::create(tmp.path(), 3).unwrap();
        assert!(w.finish().unwrap().is_none());
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_damaged_segment_is_reported_with_its_number_and_not_its_content() {
        let tmp = tempfile::tempdir().unwrap();
        let entries = sample(3000);
        write(tmp.path(), 0xab, &entries);
        let path = segment_path(tmp.path(), 0xab);
        let good = fs::read(&path).unwrap();
        // A flipped byte in the first data block (the end of its span: the block follows its
        // filter): open works, that block's read fails.
        let (offset, span) = Segment::open(tmp.path(), 0xab)
            .unwrap()
            .meta()
            .unwrap()
            .span(0);
        let mut bad = good.clone();
        bad[(offset + u64::from(span)) as usize - 5] ^= 0x55;
        fs::write(&path, &bad).unwrap();
        let seg = Segment::open(tmp.path(), 0xab).unwrap();
        let err = seg.get(&entries[1].0).unwrap_err().to_string();
        assert!(
            err.contains("00000000000000ab") && err.contains("checksum"),
            "{err}"
        );
        assert!(!err.contains("S-0000"), "{err}");
        // A torn tail: the footer is gone.
        fs::write(&path, &good[..good.len() - 10]).unwrap();
        let err = Segment::open(tmp.path(), 0xab).unwrap_err().to_string();
        assert!(err.contains("footer"), "{err}");
    }

    /// A segment just written adopts the index its writer built: the same bytes, blocks and
    /// key ranges a read of the file gives, and no read of it.
    #[test]
    fn an_adopted_index_is_the_one_the_file_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let mut entries = sample(20_000);
        entries.extend((0..50).map(|i| (format!("\x05q{i:04}").into_bytes(), Some(b"v".to_vec()))));
        let mut w = SegmentWriter::create(tmp.path(), 6).unwrap();
        w.reserve_index(1 << 20);
        for (k, v) in &entries {
            w.add(k, v.as_deref()).unwrap();
        }
        let written = w.finish().unwrap().unwrap();
        let adopted = Segment::open(tmp.path(), 6).unwrap();
        adopted.adopt(written);
        let read = Segment::open(tmp.path(), 6).unwrap();
        let (a, r) = (adopted.meta().unwrap(), read.meta().unwrap());
        assert_eq!(a.index, r.index);
        assert_eq!(a.entries, r.entries);
        assert_eq!(a.ranges, r.ranges);
        assert!(a.blocks() > 10);
        assert_eq!(
            adopted
                .index_reads
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        for (k, v) in entries.iter().step_by(997) {
            assert_eq!(adopted.get(k).unwrap(), Some(v.clone()));
        }
    }

    /// Threads that need a segment's index at the same time (the scans right after a start)
    /// read it once: one reads it, the others wait and use it; the same for its filter. The
    /// index is kept as read: every block's first key and span, as the file says.
    #[test]
    fn concurrent_first_reads_read_the_index_once() {
        let tmp = tempfile::tempdir().unwrap();
        let entries = sample(20_000);
        write(tmp.path(), 4, &entries);
        let seg = Segment::open(tmp.path(), 4).unwrap();
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (seg, barrier, entries) = (&seg, &barrier, &entries);
                s.spawn(move || {
                    barrier.wait();
                    let (k, v) = &entries[t * 2000 + 1];
                    assert_eq!(seg.get(k).unwrap(), Some(v.clone()));
                    seg.load().unwrap();
                });
            }
        });
        assert_eq!(
            seg.index_reads.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        let meta = seg.meta().unwrap();
        assert!(meta.blocks() > 10, "many blocks: {}", meta.blocks());
        assert_eq!(meta.first(0), &entries[0].0[..]);
        let mut last_end = 0;
        for b in 0..meta.blocks() {
            let (offset, len) = meta.span(b);
            assert!(offset >= last_end && len > 0, "block {b}: {offset} {len}");
            last_end = offset + u64::from(len);
            assert_eq!(
                seg.read_block(b).unwrap().key(0),
                meta.first(b),
                "block {b}"
            );
        }
        assert!(last_end <= seg.index_off, "the blocks lie before the index");
        assert_eq!(
            meta.footprint(),
            (meta.index.capacity()
                + meta.blocks() * 4
                + meta.ranges.capacity() * std::mem::size_of::<Option<KeyRange>>()
                + meta
                    .ranges
                    .iter()
                    .flatten()
                    .map(|(a, b)| a.len() + b.len())
                    .sum::<usize>()) as u64
        );
    }

    /// The footer says which keyspaces a segment holds: a lookup, a floor or a scan of another
    /// keyspace passes it by without reading its index; a segment written before (keyspaces
    /// 0, CRC over three words) reads as before; an altered keyspaces word is refused.
    #[test]
    fn the_footer_names_the_keyspaces_and_others_pass_without_the_index() {
        let tmp = tempfile::tempdir().unwrap();
        let mut entries = sample(2000);
        entries.extend((0..50).map(|i| (format!("\x05q{i:04}").into_bytes(), Some(b"v".to_vec()))));
        write(tmp.path(), 9, &entries);
        let seg = Segment::open(tmp.path(), 9).unwrap();
        assert_eq!(seg.keyspaces, Some(1 << 1 | 1 << 5));
        assert!(seg.may_hold(1) && seg.may_hold(5) && !seg.may_hold(2) && !seg.may_hold(6));
        assert_eq!(seg.get(b"\x02absent").unwrap(), None);
        assert_eq!(seg.floor(b"\x06absent", true).unwrap(), None);
        let (lo, hi) = (Bound::Unbounded, Bound::Unbounded);
        assert!(!seg.may_overlap(3, &lo, &hi, None).unwrap());
        assert!(
            seg.meta.get().is_none(),
            "no index read for a keyspace it does not hold"
        );
        assert!(seg.may_overlap(5, &lo, &hi, None).unwrap());
        assert!(seg.meta.get().is_some());
        assert_eq!(seg.get(b"\x05q0007").unwrap(), Some(Some(b"v".to_vec())));

        let path = segment_path(tmp.path(), 9);
        let good = fs::read(&path).unwrap();
        let f = good.len() - FOOTER_BYTES;
        // As a segment of an earlier build: keyspaces 0, the CRC over the three words.
        let mut old = good.clone();
        old[f + 28..f + 32].copy_from_slice(&0u32.to_le_bytes());
        let crc = crc32fast::hash(&old[f..f + 24]);
        old[f + 24..f + 28].copy_from_slice(&crc.to_le_bytes());
        fs::write(&path, &old).unwrap();
        let seg = Segment::open(tmp.path(), 9).unwrap();
        assert_eq!(seg.keyspaces, None);
        assert!(seg.may_hold(2), "unknown: it may hold any");
        assert_eq!(seg.get(&entries[5].0).unwrap(), Some(entries[5].1.clone()));
        assert_eq!(seg.get(b"\x02absent").unwrap(), None);
        // A keyspace dropped from the word, or the word cleared, without the CRC: refused.
        for word in [KEYSPACES_KNOWN | 1 << 1, 0] {
            let mut bad = good.clone();
            bad[f + 28..f + 32].copy_from_slice(&word.to_le_bytes());
            fs::write(&path, &bad).unwrap();
            let err = Segment::open(tmp.path(), 9).unwrap_err().to_string();
            assert!(err.contains("footer"), "{word:x}: {err}");
        }
    }

    #[test]
    fn segment_file_names_round_trip() {
        let p = segment_path(Path::new("/x"), 0x1f);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "000000000000001f.seg");
        assert_eq!(segment_id_of(name), Some(0x1f));
        assert_eq!(segment_id_of("000000000000001f.tmp"), None);
        assert_eq!(segment_id_of("1f.seg"), None);
    }
}
