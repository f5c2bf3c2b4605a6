//! Crash safety under `kill -9`.
//!
//! The test re-executes its own binary as a child (selected by `DEIMOS_CRASH_CHILD_DIR`) that
//! applies deterministic batches from a seed — log append + hard state + applied mutations (+ a
//! compaction now and then) in one `write_batch`, and every 25th batch a snapshot install — and
//! prints `committed N` once batch N is durable. The parent SIGKILLs it at random moments, reopens
//! the store and checks that its state is EXACTLY the model state after some batch M with
//! `N <= M <= N + 1` (every reported batch survived; at most the in-flight one was added whole).
//! Then the next child continues from what is on disk.
//!
//! Rounds: 30 by default; set `DEIMOS_CRASH_ROUNDS` for more and `DEIMOS_CRASH_SEED` to replay.

#[path = "persist_common.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use common::{conf, rounds_and_seed, spawn_child, Rng};
use deimos_raft::storage::LogStorage;
use deimos_raft::types::{Entry, EntryPayload, HardState, Snapshot, SnapshotMeta};
use deimos_store::persist::{
    encode_snapshot_data, AppliedBatch, RedbStorage, StoreOptions, WriteBatch,
};
use tempfile::TempDir;

const CHILD_DIR: &str = "DEIMOS_CRASH_CHILD_DIR";
const CHILD_SEED: &str = "DEIMOS_CRASH_CHILD_SEED";
const BATCH_KEY: &str = "~batch";

/// What the store must contain after a given number of batches.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    batches: u64,
    base: (u64, u64),
    log: BTreeMap<u64, Entry>,
    hs: HardState,
    applied: (u64, u64),
    records: BTreeMap<String, Vec<u8>>,
}

enum Action {
    Batch {
        hs: HardState,
        entries: Vec<Entry>,
        applied: (u64, u64),
        muts: Vec<(String, Option<Vec<u8>>)>,
        compact: Option<u64>,
    },
    Snapshot(Snapshot),
}

impl Model {
    fn last(&self) -> u64 {
        self.log.keys().next_back().copied().unwrap_or(self.base.0)
    }
    fn term_at(&self, i: u64) -> u64 {
        if i == self.base.0 {
            self.base.1
        } else {
            self.log[&i].term
        }
    }

    /// Batch number `self.batches + 1`, deterministic in (seed, batch number, model state).
    fn step(&mut self, seed: u64) -> Action {
        let k = self.batches + 1;
        let mut r = Rng::new(seed.wrapping_mul(31).wrapping_add(k));
        self.batches = k;
        let term = self.hs.term.max(self.base.1).max(1) + u64::from(r.below(6) == 0);
        if k.is_multiple_of(25) {
            let index = self.last() + 3;
            let mut recs: BTreeMap<String, Vec<u8>> = (0..r.below(30))
                .map(|i| (format!("snap{i:02}"), vec![k as u8; r.below(100) as usize]))
                .collect();
            recs.insert(BATCH_KEY.into(), k.to_le_bytes().to_vec());
            let meta = SnapshotMeta {
                index,
                term,
                conf: conf(),
            };
            let list: Vec<_> = recs.clone().into_iter().collect();
            let data = encode_snapshot_data(&meta, &list).unwrap();
            self.base = (index, term);
            self.log.clear();
            // Installing a snapshot raises the commit index only (like MemStorage).
            self.hs.commit = index;
            self.applied = (index, term);
            self.records = recs;
            return Action::Snapshot(Snapshot { meta, data });
        }
        // Sometimes overwrite an uncommitted tail, as a new leader would.
        let last = self.last();
        let start = if term > self.hs.term {
            (last + 1)
                .saturating_sub(r.below(3))
                .max(self.hs.commit + 1)
        } else {
            last + 1
        };
        let n = 1 + r.below(8);
        let entries: Vec<Entry> = (start..start + n)
            .map(|i| Entry {
                index: i,
                term,
                payload: EntryPayload::Normal(vec![(i ^ k) as u8; r.below(300) as usize]),
            })
            .collect();
        self.log.split_off(&start);
        for e in &entries {
            self.log.insert(e.index, e.clone());
        }
        let new_last = start + n - 1;
        let commit = new_last.saturating_sub(r.below(3)).max(self.hs.commit);
        self.hs = HardState {
            term,
            vote: Some(1 + k % 3),
            commit,
        };
        let applied = (commit, self.term_at(commit));
        self.applied = applied;
        let mut muts: Vec<(String, Option<Vec<u8>>)> = (0..1 + r.below(6))
            .map(|_| {
                let key = format!("k{:02}", r.below(40));
                let val = if r.below(4) == 0 {
                    None
                } else {
                    Some(vec![k as u8; r.below(200) as usize])
                };
                (key, val)
            })
            .collect();
        muts.push((BATCH_KEY.into(), Some(k.to_le_bytes().to_vec())));
        for (key, v) in &muts {
            match v {
                Some(v) => self.records.insert(key.clone(), v.clone()),
                None => self.records.remove(key),
            };
        }
        let compact = (k.is_multiple_of(10) && applied.0 > self.base.0 + 5).then(|| applied.0 - 5);
        if let Some(c) = compact {
            self.base = (c, self.term_at(c));
            self.log = self.log.split_off(&(c + 1));
        }
        Action::Batch {
            hs: self.hs,
            entries,
            applied,
            muts,
            compact,
        }
    }

    fn after(seed: u64, batches: u64) -> Model {
        let mut m = Model::default();
        while m.batches < batches {
            m.step(seed);
        }
        m
    }

    fn read(s: &RedbStorage) -> Model {
        let recs: BTreeMap<String, Vec<u8>> = s.records().unwrap().map(Result::unwrap).collect();
        let batches = recs
            .get(BATCH_KEY)
            .map(|b| u64::from_le_bytes(b.as_slice().try_into().unwrap()))
            .unwrap_or(0);
        let (f, l) = (s.first_index().unwrap(), s.last_index().unwrap());
        let (ai, at, c) = s.applied_state();
        assert_eq!(c, conf());
        Model {
            batches,
            base: (f - 1, s.term(f - 1).unwrap()),
            log: s
                .entries(f, l + 1, None)
                .unwrap()
                .into_iter()
                .map(|e| (e.index, e))
                .collect(),
            hs: s.hard_state(),
            applied: (ai, at),
            records: recs,
        }
    }
}

fn store_opts() -> StoreOptions {
    StoreOptions {
        initial_conf: conf(),
        ..StoreOptions::default()
    }
}

/// The child: continue the batch sequence from what is on disk until killed.
#[test]
fn crash_child_entry() {
    let (Ok(dir), Ok(seed)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_SEED)) else {
        return; // Not a child: nothing to do in a normal test run.
    };
    let seed: u64 = seed.parse().unwrap();
    let mut s = RedbStorage::open_with(&dir, &store_opts()).unwrap();
    let mut model = Model::after(seed, Model::read(&s).batches);
    let mut out = std::io::stdout();
    for _ in 0..100_000 {
        match model.step(seed) {
            Action::Batch {
                hs,
                entries,
                applied,
                muts,
                compact,
            } => {
                let c = conf();
                let b = WriteBatch {
                    hard_state: Some(&hs),
                    entries: &entries,
                    applied: Some(AppliedBatch {
                        index: applied.0,
                        term: applied.1,
                        conf: &c,
                        mutations: &muts,
                    }),
                    compact_to: compact,
                };
                s.write_batch(&b).unwrap();
            }
            Action::Snapshot(snap) => s.apply_snapshot(&snap).unwrap(),
        }
        writeln!(out, "committed {}", model.batches).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_at_random_points_keeps_exactly_a_committed_prefix() {
    let (rounds, seed) = rounds_and_seed("DEIMOS_CRASH_ROUNDS", 30, "DEIMOS_CRASH_SEED");
    eprintln!("crash test: seed {seed} (DEIMOS_CRASH_SEED), {rounds} rounds (DEIMOS_CRASH_ROUNDS)");
    let dir = TempDir::new().unwrap();
    let mut rng = Rng::new(seed);
    let mut reported_total = 0u64;
    let mut in_flight_landed = 0u64;
    let started = Instant::now();
    for round in 0..rounds {
        let (mut child, lines) = spawn_child(
            "crash_child_entry",
            &[
                (CHILD_DIR, dir.path().display().to_string()),
                (CHILD_SEED, seed.to_string()),
            ],
            "committed ",
        );
        std::thread::sleep(Duration::from_millis(20 + rng.below(130)));
        if let Some(status) = child.try_wait().unwrap() {
            panic!("round {round}: child exited by itself ({status}); run it by hand to see why");
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        // The reader ends with the child's stdout; the last line it forwarded is the last
        // batch the child reported durable.
        let reported = lines
            .iter()
            .last()
            .map(|l| l.trim().parse::<u64>().unwrap());

        let s = RedbStorage::open_with(dir.path(), &store_opts())
            .unwrap_or_else(|e| panic!("round {round}: reopen after kill -9 failed: {e}"));
        let on_disk = Model::read(&s);
        let floor = reported.unwrap_or(0).max(reported_total);
        assert!(
            on_disk.batches >= floor && on_disk.batches <= floor + 1,
            "round {round}: {} batches on disk, {floor} reported durable",
            on_disk.batches
        );
        let want = Model::after(seed, on_disk.batches);
        assert_eq!(
            on_disk, want,
            "round {round}: state is not the state after batch {}",
            on_disk.batches
        );
        in_flight_landed += on_disk.batches - floor;
        reported_total = on_disk.batches;
    }
    eprintln!(
        "crash test: {rounds} kills, {reported_total} batches, {in_flight_landed} in-flight batches landed whole, {:?}",
        started.elapsed()
    );
    assert!(
        reported_total > rounds,
        "the child made too little progress to test anything"
    );
}
