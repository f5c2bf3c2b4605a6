// Not a test target of its own: included by the persist_* tests via `#[path]`.
#![allow(dead_code)]

use deimos_raft::storage::{LogStorage, MemStorage, StorageResult};
use deimos_raft::types::{ConfState, Entry, EntryPayload, Index, Term};
use deimos_store::persist::{RedbStorage, StoreOptions};
use tempfile::TempDir;

pub fn conf() -> ConfState {
    ConfState::new([1, 2, 3])
}

pub fn ent(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        payload: EntryPayload::Normal(vec![index as u8]),
    }
}

pub fn ents(lo: Index, hi: Index, term: Term) -> Vec<Entry> {
    (lo..hi).map(|i| ent(i, term)).collect()
}

pub fn opts() -> StoreOptions {
    StoreOptions {
        initial_conf: conf(),
        ..StoreOptions::default()
    }
}

pub fn open_redb(dir: &TempDir) -> RedbStorage {
    RedbStorage::open_with(dir.path(), &opts()).expect("open")
}

/// A record write for `commit_applied`: `k` set to `v`.
pub fn set(k: &str, v: &[u8]) -> (String, Option<Vec<u8>>) {
    (k.to_string(), Some(v.to_vec()))
}

/// Every applied record, in key order.
pub fn all_records(s: &RedbStorage) -> Vec<(String, Vec<u8>)> {
    s.records().unwrap().map(Result::unwrap).collect()
}

/// The operations the shared suite needs beyond `LogStorage`: compaction differs in API (MemStorage
/// takes the snapshot data; RedbStorage compacts only what the applied state already covers).
pub trait Subject: LogStorage {
    fn compact_to(&mut self, idx: Index) -> StorageResult<()>;
}

impl Subject for MemStorage {
    fn compact_to(&mut self, idx: Index) -> StorageResult<()> {
        self.compact(idx, conf(), Vec::new())
    }
}

impl Subject for RedbStorage {
    fn compact_to(&mut self, idx: Index) -> StorageResult<()> {
        let (applied, _, _) = self.applied_state();
        if idx > applied && idx <= self.last_index()? {
            let t = self.term(idx)?;
            self.commit_applied(idx, t, &conf(), &[])?;
        }
        self.compact(idx)
    }
}
