//! The write-ahead log of Raft entries: the tail of the log, appended sequentially with one
//! `fdatasync`, ahead of redb.
//!
//! Why: a durable redb commit is a copy-on-write B-tree commit — the header and about six
//! scattered pages, two fsyncs under 2-phase commit (`docs/bench/2026-12-04-latency-profile.md`:
//! 0.65 ms of a 0.9 ms single-client PUT). Every write waits for one on the leader and one on a
//! follower. An append of new entries to the end of the log needs none of that: it goes here as
//! one record — one `pwrite`, one `fdatasync` of blocks that are already allocated — and redb
//! takes the entries later, in a *checkpoint*, of one of two kinds:
//! - in the background (`checkpoint`), when the staged state is due or the log has grown: the
//!   entries logged so far are *frozen* and written into `raft_log` by another thread, with
//!   the *resume point* (the next record's sequence number and offset) in the same durable
//!   commit; appends go on after that point meanwhile, in the same epoch;
//! - in line, by any other redb transaction while entries are logged: they go in first and
//!   the log's *epoch* advances in the same durable commit, after which this file starts over
//!   at offset 0. Everything that is not a plain append (a conflicting suffix, a new term or
//!   vote, compaction, a snapshot) still goes through redb this way.
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
//! Records are read from the resume point redb holds (offset 0, record 0 after the epoch
//! changed) while one copy of the next expected `(epoch, seq)` checks out; their entries must continue the redb log without a gap. The first position where
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
use std::sync::Arc;

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
const GROW_MAX: u64 = 1 << 20;

/// Where the records not yet in redb start: record `seq` of the epoch, at offset `pos`.
/// Stored in redb (`raft_state/wal_resume`) by a background checkpoint, which leaves the epoch
/// alone because appends go on in it meanwhile; a checkpoint that starts the log over resets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Resume {
    pub seq: u64,
    pub pos: u64,
}

impl Resume {
    pub(crate) fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..].copy_from_slice(&self.pos.to_le_bytes());
        b
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Option<Resume> {
        let b: [u8; 16] = b.try_into().ok()?;
        let (seq, pos) = b.split_at(8);
        Some(Resume {
            seq: u64::from_le_bytes(seq.try_into().ok()?),
            pos: u64::from_le_bytes(pos.try_into().ok()?),
        })
    }
}

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
    /// Where recovery starts: redb holds every entry of the records before it.
    resume: Resume,
    /// Length of the file; every byte below it has been written (zeros or records) and synced.
    len: u64,
    /// Entries a background checkpoint is writing into redb (see `checkpoint`): until it
    /// commits they are still the log past redb's last index, before `tail`.
    frozen: Arc<Vec<Entry>>,
    /// Entries logged since, consecutive, continuing `frozen` (or redb's log).
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

    /// Open the log and recover the entries of `epoch` from `resume` on (see the module docs).
    /// `next` is the index the first of them must have: one past redb's last index.
    pub(crate) fn open(
        dir: &Path,
        epoch: u64,
        resume: Resume,
        next: Index,
    ) -> Result<Wal, PersistError> {
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
        let (mut pos, mut seq) = (resume.pos, resume.seq);
        if pos % BLOCK != 0 {
            return Err(corrupt(format!("resume offset {pos} is not block-aligned")));
        }
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
            frozen: Arc::default(),
            resume,
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

    /// The entries logged and not handed to a checkpoint yet.
    pub(crate) fn tail(&self) -> &[Entry] {
        &self.tail
    }

    /// The logged entry at `idx`, if it is in the log (frozen or not).
    pub(crate) fn entry(&self, idx: Index) -> Option<&Entry> {
        let at = |v: &'_ [Entry]| -> Option<usize> {
            usize::try_from(idx.checked_sub(v.first()?.index)?).ok()
        };
        match at(&self.tail) {
            Some(i) => self.tail.get(i),
            None => at(&self.frozen).and_then(|i| self.frozen.get(i)),
        }
    }

    pub(crate) fn term(&self, idx: Index) -> Option<Term> {
        self.entry(idx).map(|e| e.term)
    }

    /// Where the log's entries start (the first not in redb), if there are any.
    pub(crate) fn first_index(&self) -> Option<Index> {
        self.frozen.first().or(self.tail.first()).map(|e| e.index)
    }

    /// Offset of the next record: 0 when the log is at its start.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// Bytes of records written since the last checkpoint started.
    pub(crate) fn pending_bytes(&self) -> u64 {
        self.pos - self.resume.pos
    }

    /// Hand the tail to a background checkpoint: the entries (kept readable until
    /// [`thaw`](Self::thaw)) and the point recovery must start from once they are in redb.
    /// Appends go on after them, in the same epoch. Only with no checkpoint running.
    pub(crate) fn freeze(&mut self) -> (Arc<Vec<Entry>>, Resume) {
        debug_assert!(self.frozen.is_empty(), "one checkpoint at a time");
        self.frozen = Arc::new(std::mem::take(&mut self.tail));
        self.resume = Resume {
            seq: self.seq,
            pos: self.pos,
        };
        (self.frozen.clone(), self.resume)
    }

    /// The background checkpoint committed: its entries are in redb.
    pub(crate) fn thaw(&mut self) {
        self.frozen = Arc::default();
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

    /// After a checkpoint committed every logged entry to redb with epoch `epoch` (no
    /// checkpoint running): start over. Earlier records are now of an older epoch and are
    /// ignored at recovery.
    pub(crate) fn reset(&mut self, epoch: u64) {
        debug_assert!(self.frozen.is_empty(), "reset while a checkpoint runs");
        self.epoch = epoch;
        self.seq = 0;
        self.pos = 0;
        self.resume = Resume::default();
        self.tail.clear();
    }
}

#[cfg(test)]
mod tests;
