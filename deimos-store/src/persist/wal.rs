//! The write-ahead log of Raft entries: the tail of the log, appended sequentially with one
//! `fdatasync`, ahead of redb.
//!
//! Why: a durable redb commit is a copy-on-write B-tree commit — the header and about six
//! scattered pages, two fsyncs under 2-phase commit (`docs/bench/2026-12-04-latency-profile.md`:
//! 0.65 ms of a 0.9 ms single-client PUT). Every write waits for one on the leader and one on a
//! follower. An append of new entries to the end of the log needs none of that: it goes here as
//! one record — one `pwrite`, one `fdatasync` of blocks that are already allocated — and redb
//! takes the entries later, in a *checkpoint*: the next redb transaction of any kind first writes
//! every logged entry into the `raft_log` table and advances the log's *epoch* in the same
//! durable commit, after which this file starts over. Everything that is not a plain append
//! (a conflicting suffix, a new term or vote, compaction, a snapshot) still goes through redb.
//!
//! # Format
//! The file is a sequence of records, each starting on a 4 KiB boundary, so writing one never
//! rewrites a block that holds an earlier, acknowledged record. A record is two identical copies
//! of `header ‖ payload`, each padded to whole blocks, written by one `pwrite` and made durable
//! by one `fdatasync`:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `DWAL` |
//! | 4..8 | payload length, u32 LE |
//! | 8..16 | epoch, u64 LE: the `wal_epoch` redb recorded at the last checkpoint |
//! | 16..24 | sequence number of the record within its epoch, from 0 |
//! | 24..32 | FNV-1a 64 of bytes 0..24 and the payload |
//! | 32.. | payload: postcard `Vec<Entry>`, consecutive indexes |
//!
//! # Recovery
//! Records are read from offset 0 while one copy of the next expected `(epoch, seq)` checks
//! out; their entries must continue the redb log without a gap. The first position where
//! neither copy does is the end: a record torn by a crash was never acknowledged (its
//! `fdatasync` had not returned), and a record with one good copy is whole. A record of the
//! current epoch that checks out *beyond* that end means a record in the middle was damaged:
//! that is reported as corruption, never silently cut. Records of older epochs are leftovers
//! of an earlier pass (redb already holds their entries) and are ignored; so is everything
//! after the end when nothing of the current epoch follows.
//!
//! The file grows in zero-filled, fsynced steps, so `fdatasync` after an append flushes data
//! only. Its size is bounded: an append that would pass [`MAX_BYTES`] checkpoints first, and a
//! record larger than [`MAX_RECORD`] goes to redb directly.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use deimos_raft::storage::StorageResult;
use deimos_raft::types::{Entry, Index, Term};

use super::codec::{decode, encode, Fnv64};
use super::error::{backend, PersistError};

/// File name of the write-ahead log inside the data directory.
pub const WAL_FILE: &str = "deimos.wal";

const BLOCK: u64 = 4096;
const HEADER: usize = 32;
const MAGIC: &[u8; 4] = b"DWAL";
/// The file never holds more than this many bytes of records; an append past it checkpoints.
pub(crate) const MAX_BYTES: u64 = 64 << 20;
/// Largest payload logged here (both copies must fit in [`MAX_BYTES`] with room to spare);
/// larger appends are written to redb directly.
pub(crate) const MAX_RECORD: usize = 8 << 20;
/// Smallest and largest growth step of the file.
const GROW_MIN: u64 = 256 << 10;
const GROW_MAX: u64 = 8 << 20;

/// What [`Wal::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Appended {
    /// Durably logged.
    Logged,
    /// Nothing written: the file is too full; checkpoint and try again.
    Full,
    /// Nothing written: the record is too large for the log; write it to redb.
    TooLarge,
}

/// The open log: where the next record goes, and the entries logged since the last checkpoint.
#[derive(Debug)]
pub(crate) struct Wal {
    file: File,
    path: PathBuf,
    epoch: u64,
    seq: u64,
    /// Offset of the next record (block-aligned).
    pos: u64,
    /// Length of the file; every byte below it has been written (zeros or records) and synced.
    len: u64,
    /// Entries logged since the last checkpoint, consecutive: the log past redb's last index.
    tail: Vec<Entry>,
    buf: Vec<u8>,
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> PersistError + 'a {
    move |source| PersistError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn blocks_for(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(BLOCK) * BLOCK
}

fn checksum(head: &[u8], payload: &[u8]) -> u64 {
    let mut h = Fnv64::new();
    h.update(head);
    h.update(payload);
    h.finish()
}

/// One valid copy at `off`: its payload and the padded length of the copy.
fn copy_at(data: &[u8], off: u64, epoch: u64, seq: Option<u64>) -> Option<(&[u8], u64, u64)> {
    let off = usize::try_from(off).ok()?;
    let head = data.get(off..off.checked_add(HEADER)?)?;
    if &head[0..4] != MAGIC {
        return None;
    }
    let field =
        |r: std::ops::Range<usize>| u64::from_le_bytes(head[r].try_into().unwrap_or([0; 8]));
    let len = u32::from_le_bytes(head[4..8].try_into().ok()?) as usize;
    let (e, s, sum) = (field(8..16), field(16..24), field(24..32));
    if e != epoch || seq.is_some_and(|want| want != s) || len > MAX_RECORD {
        return None;
    }
    let start = off + HEADER;
    let payload = data.get(start..start.checked_add(len)?)?;
    (checksum(&head[..24], payload) == sum).then_some((payload, blocks_for(HEADER + len), s))
}

impl Wal {
    /// Create an empty log file (for a new store, or one written before the log existed), durably.
    pub(crate) fn create(dir: &Path) -> Result<(), PersistError> {
        let path = dir.join(WAL_FILE);
        let f = File::create(&path).map_err(io(&path, "create write-ahead log"))?;
        f.sync_all().map_err(io(&path, "sync write-ahead log"))?;
        let d = File::open(dir).map_err(io(dir, "open data directory"))?;
        d.sync_all().map_err(io(dir, "sync data directory"))
    }

    /// Open the log and recover the entries of `epoch` (see the module docs). `next` is the
    /// index the first logged entry must have: one past redb's last index.
    pub(crate) fn open(dir: &Path, epoch: u64, next: Index) -> Result<Wal, PersistError> {
        let path = dir.join(WAL_FILE);
        let corrupt = |what: String| PersistError::Corrupt {
            path: path.clone(),
            what,
        };
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(corrupt(
                    "the write-ahead log is missing (the store records that it has one; \
                     acknowledged entries may be in it)"
                        .into(),
                ))
            }
            Err(e) => return Err(io(&path, "open write-ahead log")(e)),
        };
        let len = file
            .metadata()
            .map_err(io(&path, "stat write-ahead log"))?
            .len();
        // Nothing valid lies past MAX_BYTES plus one largest record; don't read more than that.
        let readable = len.min(MAX_BYTES + 2 * blocks_for(HEADER + MAX_RECORD));
        let mut data = vec![0u8; readable as usize];
        file.read_exact_at(&mut data, 0)
            .map_err(io(&path, "read write-ahead log"))?;

        let mut tail: Vec<Entry> = Vec::new();
        let (mut pos, mut seq) = (0u64, 0u64);
        loop {
            let found = copy_at(&data, pos, epoch, Some(seq)).or_else(|| {
                // The first copy is damaged or torn: the second starts one copy-length later,
                // which the damaged header cannot tell us, so try each block up to the largest.
                (1..=blocks_for(HEADER + MAX_RECORD) / BLOCK)
                    .map(|k| pos + k * BLOCK)
                    .take_while(|off| *off < readable)
                    .find_map(|off| {
                        copy_at(&data, off, epoch, Some(seq))
                            .filter(|(_, span, _)| off == pos + span)
                    })
            });
            let Some((payload, span, _)) = found else {
                break;
            };
            let entries: Vec<Entry> = decode(payload, "write-ahead log record")
                .map_err(|e| corrupt(format!("record {seq} at offset {pos}: {e}")))?;
            let mut expect = tail.last().map_or(next, |e| e.index + 1);
            for e in &entries {
                if e.index != expect {
                    return Err(corrupt(format!(
                        "record {seq} at offset {pos} holds entry {} where {expect} was expected",
                        e.index
                    )));
                }
                expect = expect.saturating_add(1);
            }
            tail.extend(entries);
            pos += 2 * span;
            seq += 1;
        }
        // A damaged record followed by intact ones of the same epoch: not a torn end.
        let mut off = pos;
        while off < readable {
            if let Some((_, _, s)) = copy_at(&data, off, epoch, None).filter(|c| c.2 >= seq) {
                return Err(corrupt(format!(
                    "record {seq} at offset {pos} is damaged in both copies, but record {s} \
                     follows at offset {off}: acknowledged entries would be lost"
                )));
            }
            off += BLOCK;
        }
        Ok(Wal {
            file,
            path,
            epoch,
            seq,
            pos,
            len,
            tail,
            buf: Vec::new(),
        })
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The entries logged since the last checkpoint (the log past redb's last index).
    pub(crate) fn tail(&self) -> &[Entry] {
        &self.tail
    }

    /// The logged entry at `idx`, if it is in the tail.
    pub(crate) fn entry(&self, idx: Index) -> Option<&Entry> {
        let first = self.tail.first()?.index;
        self.tail
            .get(usize::try_from(idx.checked_sub(first)?).ok()?)
    }

    pub(crate) fn term(&self, idx: Index) -> Option<Term> {
        self.entry(idx).map(|e| e.term)
    }

    /// Where the tail starts, if it is not empty.
    pub(crate) fn first_index(&self) -> Option<Index> {
        self.tail.first().map(|e| e.index)
    }

    /// Log `entries` (consecutive, continuing the log) durably: one write, one `fdatasync`.
    /// Writes nothing if the record is larger than [`MAX_RECORD`] or would pass [`MAX_BYTES`].
    /// On error the state on disk is unknown and the caller must poison the store.
    pub(crate) fn append(&mut self, entries: &[Entry]) -> StorageResult<Appended> {
        let payload = encode(entries)?;
        if payload.len() > MAX_RECORD {
            return Ok(Appended::TooLarge);
        }
        let span = blocks_for(HEADER + payload.len());
        if self.pos + 2 * span > MAX_BYTES {
            return Ok(Appended::Full);
        }
        let mut head = [0u8; HEADER];
        head[0..4].copy_from_slice(MAGIC);
        head[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        head[8..16].copy_from_slice(&self.epoch.to_le_bytes());
        head[16..24].copy_from_slice(&self.seq.to_le_bytes());
        let sum = checksum(&head[..24], &payload);
        head[24..32].copy_from_slice(&sum.to_le_bytes());
        self.buf.clear();
        self.buf.resize(2 * span as usize, 0);
        for copy in [0, span as usize] {
            self.buf[copy..copy + HEADER].copy_from_slice(&head);
            self.buf[copy + HEADER..copy + HEADER + payload.len()].copy_from_slice(&payload);
        }
        let end = self.pos + 2 * span;
        if end > self.len {
            self.grow(end)?;
        }
        let fail = |op: &'static str| {
            let path = self.path.display().to_string();
            move |e: std::io::Error| backend(format!("{op} {path}"), e)
        };
        self.file
            .write_all_at(&self.buf, self.pos)
            .map_err(fail("write"))?;
        self.file.sync_data().map_err(fail("fdatasync"))?;
        self.pos = end;
        self.seq += 1;
        self.tail.extend_from_slice(entries);
        Ok(Appended::Logged)
    }

    /// Extend the file with zeros to at least `end`, durably (size and blocks), so that later
    /// appends overwrite allocated blocks and `fdatasync` has no metadata to write.
    fn grow(&mut self, end: u64) -> StorageResult<()> {
        let step = self.len.clamp(GROW_MIN, GROW_MAX);
        let target = end.div_ceil(step) * step;
        let zeros = vec![0u8; (1 << 20).min((target - self.len) as usize)];
        let path = self.path.display().to_string();
        let fail = |e| backend(format!("grow {path}"), e);
        let mut at = self.len;
        while at < target {
            let n = zeros.len().min((target - at) as usize);
            self.file.write_all_at(&zeros[..n], at).map_err(fail)?;
            at += n as u64;
        }
        self.file.sync_all().map_err(fail)?;
        self.len = target;
        Ok(())
    }

    /// After a checkpoint committed the tail to redb with epoch `epoch`: start over. Earlier
    /// records are now of an older epoch and are ignored at recovery.
    pub(crate) fn reset(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.seq = 0;
        self.pos = 0;
        self.tail.clear();
    }
}

#[cfg(test)]
mod tests;
