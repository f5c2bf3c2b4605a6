//! Reads: the `LogStorage` implementation and access to the applied records.
//!
//! First/last index, the log base (snapshot index and term), the hard state and the applied
//! state come from the in-memory cache, which always equals the last commit. Entries and terms
//! in the middle of the log are read through a redb read transaction (cheap; never blocked by a
//! writer). A stored entry whose key disagrees with its own index is reported as corruption.

use deimos_raft::storage::{InitialState, LogStorage, StorageError, StorageResult};
use deimos_raft::types::{Entry, HardState, Index, Snapshot, Term};
use redb::ReadTransaction;

use super::codec::decode;
use super::error::{backend, corrupt};
use super::schema::{LOG, RECORDS};
use super::snapshot::DEFAULT_CHUNK;
use super::store::RedbStorage;

/// The applied records in key order, read from one consistent read transaction.
pub struct RecordIter {
    range: redb::Range<'static, &'static [u8], &'static [u8]>,
    _txn: ReadTransaction,
}

impl Iterator for RecordIter {
    type Item = StorageResult<(String, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.range.next()? {
            Ok((k, v)) => match String::from_utf8(k.value().to_vec()) {
                Ok(key) => Ok((key, v.value().to_vec())),
                Err(_) => Err(corrupt("record key is not UTF-8")),
            },
            Err(e) => Err(backend("scan records", e)),
        })
    }
}

impl RedbStorage {
    /// All applied records, in key order: rebuild the in-memory key space at restart from this
    /// (together with [`applied_state`](Self::applied_state)) instead of replaying the log.
    /// A background checkpoint running is waited for, so that what it writes is seen.
    pub fn records(&self) -> StorageResult<RecordIter> {
        self.settle();
        let txn = self.begin_read()?;
        let range = txn
            .open_table(RECORDS)
            .map_err(|e| backend("open records", e))?
            .range::<&[u8]>(..)
            .map_err(|e| backend("scan records", e))?;
        Ok(RecordIter { range, _txn: txn })
    }

    /// One applied record.
    pub fn record(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        self.settle();
        let txn = self.begin_read()?;
        let t = txn
            .open_table(RECORDS)
            .map_err(|e| backend("open records", e))?;
        let v = t
            .get(key.as_bytes())
            .map_err(|e| backend("read record", e))?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    fn read_term(&self, idx: Index) -> StorageResult<Term> {
        if let Some(t) = self.wal.term(idx) {
            return Ok(t);
        }
        let txn = self.begin_read()?;
        let t = txn.open_table(LOG).map_err(|e| backend("open log", e))?;
        match t.get(idx).map_err(|e| backend("read log", e))? {
            Some(v) => {
                let e: Entry = decode(v.value(), "log entry")?;
                if e.index != idx {
                    return Err(corrupt(format!("log key {idx} holds entry {}", e.index)));
                }
                Ok(e.term)
            }
            None => Err(corrupt(format!("log entry {idx} missing inside the log"))),
        }
    }
}

impl LogStorage for RedbStorage {
    fn initial_state(&self) -> StorageResult<InitialState> {
        self.check_usable()?;
        Ok(InitialState {
            hard_state: self.cache.hard_state,
            conf_state: self.cache.applied.conf.clone(),
        })
    }

    fn entries(&self, lo: Index, hi: Index, max_bytes: Option<u64>) -> StorageResult<Vec<Entry>> {
        self.check_usable()?;
        if lo <= self.cache.base.index {
            return Err(StorageError::Compacted);
        }
        if hi > self.cache.last_index + 1 {
            return Err(StorageError::Unavailable);
        }
        if lo >= hi {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut size = 0u64;
        // Past redb's log: the write-ahead log's tail, in memory.
        let split = self.wal.first_index().unwrap_or(hi).clamp(lo, hi);
        let from_tail = (split..hi).filter_map(|i| self.wal.entry(i));
        if split == lo {
            for e in from_tail {
                size += e.size() as u64;
                if !out.is_empty() && max_bytes.is_some_and(|m| size > m) {
                    break;
                }
                out.push(e.clone());
            }
            return Ok(out);
        }
        let txn = self.begin_read()?;
        let t = txn.open_table(LOG).map_err(|e| backend("open log", e))?;
        let mut expect = lo;
        for item in t.range(lo..split).map_err(|e| backend("scan log", e))? {
            let (k, v) = item.map_err(|e| backend("scan log", e))?;
            let e: Entry = decode(v.value(), "log entry")?;
            if k.value() != expect || e.index != expect {
                return Err(corrupt(format!("log hole or mismatch at {expect}")));
            }
            expect += 1;
            size += e.size() as u64;
            if !out.is_empty() && max_bytes.is_some_and(|m| size > m) {
                return Ok(out);
            }
            out.push(e);
        }
        if expect != split {
            return Err(corrupt(format!(
                "log entry {expect} missing inside the log"
            )));
        }
        for e in from_tail {
            size += e.size() as u64;
            if max_bytes.is_some_and(|m| size > m) {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: Index) -> StorageResult<Term> {
        self.check_usable()?;
        let c = &self.cache;
        if idx < c.base.index {
            return Err(StorageError::Compacted);
        }
        if idx == c.base.index {
            return Ok(c.base.term);
        }
        if idx > c.last_index {
            return Err(StorageError::Unavailable);
        }
        if idx == c.last_index {
            return Ok(c.last_term);
        }
        self.read_term(idx)
    }

    fn first_index(&self) -> StorageResult<Index> {
        self.check_usable()?;
        Ok(self.cache.base.index + 1)
    }

    fn last_index(&self) -> StorageResult<Index> {
        self.check_usable()?;
        Ok(self.cache.last_index)
    }

    /// The applied state as a snapshot: meta = (applied index, term, conf), data = the stream of
    /// [`snapshot_encoder`](RedbStorage::snapshot_encoder) in one buffer.
    fn snapshot(&self) -> StorageResult<Snapshot> {
        let enc = self.snapshot_encoder(DEFAULT_CHUNK)?;
        let meta = enc.meta().clone();
        let mut data = Vec::new();
        for chunk in enc {
            data.extend_from_slice(&chunk?);
        }
        Ok(Snapshot { meta, data })
    }

    fn append(&mut self, entries: &[Entry]) -> StorageResult<()> {
        self.persist(None, entries)
    }

    fn set_hard_state(&mut self, hs: &HardState) -> StorageResult<()> {
        self.persist(Some(hs), &[])
    }

    /// One transaction, one fsync (the inherent [`RedbStorage::persist`]).
    fn persist(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) -> StorageResult<()> {
        RedbStorage::persist(self, hard_state, entries)
    }

    fn apply_snapshot(&mut self, snapshot: &Snapshot) -> StorageResult<()> {
        self.install_whole(snapshot)
    }
}
