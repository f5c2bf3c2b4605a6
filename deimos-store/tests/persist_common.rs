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

/// Deterministic generator for the crash tests: a seed replays a run.
pub struct Rng(rand::rngs::StdRng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(rand::SeedableRng::seed_from_u64(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut self.0)
    }
    /// Uniform in `0..n`; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        rand::Rng::gen_range(&mut self.0, 0..n.max(1))
    }
}

/// Re-execute this test binary running only `test` (a child entry point that reads `envs`),
/// and forward what follows `marker` on every stdout line that has it (libtest may print
/// "test NAME ... " on the same line first) to the returned channel, for the crash tests to
/// SIGKILL the child at a moment of their choosing.
pub fn spawn_child(
    test: &str,
    envs: &[(&str, String)],
    marker: &'static str,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(pos) = line.find(marker) {
                let _ = tx.send(line[pos + marker.len()..].to_string());
            }
        }
    });
    (child, rx)
}

/// The last index of the log redb itself holds (without the write-ahead log), read with raw
/// redb from a copy of the database file.
pub fn redb_last_index(dir: &std::path::Path) -> Option<Index> {
    use deimos_store::persist::DB_FILE;
    use redb::{ReadableDatabase, ReadableTable};
    const LOG: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("raft_log");
    let copy = TempDir::new().unwrap();
    std::fs::copy(dir.join(DB_FILE), copy.path().join(DB_FILE)).unwrap();
    let db = redb::Database::open(copy.path().join(DB_FILE)).unwrap();
    let t = db.begin_read().unwrap();
    let log = t.open_table(LOG).unwrap();
    let last = log.last().unwrap().map(|(k, _)| k.value());
    last
}

/// `(rounds, seed)` of a crash test from `rounds_var` (default `rounds`) and `seed_var` (default:
/// the clock, printed by the caller so that a failure can be replayed).
pub fn rounds_and_seed(rounds_var: &str, rounds: u64, seed_var: &str) -> (u64, u64) {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    let seed = var(seed_var).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    (var(rounds_var).unwrap_or(rounds), seed)
}
