//! The write-ahead log (`deimos.wal`) under `kill -9`: appends acknowledged on the fast path
//! (one record, one `fdatasync`), mixed with checkpoints, conflicting suffixes (through redb) and
//! compactions, are all there after the child is killed at a random moment, with the exact bytes
//! written, and at most the in-flight operation beyond them.
//!
//! The test re-executes its own binary as a child (selected by `DEIMOS_WAL_CHILD_DIR`): rounds
//! default to 20; set `DEIMOS_WAL_CRASH_ROUNDS` for more and `DEIMOS_WAL_CRASH_SEED` to replay a
//! run. Damage, torn records and reads are in `persist_wal.rs`.

#[path = "persist_common.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use deimos_raft::storage::LogStorage;
use deimos_raft::types::{Entry, EntryPayload, HardState, Index, Term};
use deimos_store::persist::{RedbStorage, DB_FILE, WAL_FILE};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// 1. kill -9 durability of the fast path
// ---------------------------------------------------------------------------------------------

const CHILD_DIR: &str = "DEIMOS_WAL_CHILD_DIR";
const CHILD_SEED: &str = "DEIMOS_WAL_CHILD_SEED";
const CHILD_ROUND: &str = "DEIMOS_WAL_CHILD_ROUND";

/// The payload of the entry at (`index`, `term`) in the crash test: a pure function of the seed,
/// so the parent can check every byte. Mostly small, some of several blocks, a few ~100 KiB.
fn crash_payload(seed: u64, index: Index, term: Term) -> EntryPayload {
    let mut r = Rng::new(
        seed.wrapping_mul(0xff51_afd7_ed55_8ccd)
            ^ index.wrapping_mul(0xc4ce_b9fe_1a85_ec53)
            ^ term.rotate_left(40),
    );
    let class = r.below(100);
    if class < 4 {
        return EntryPayload::Empty;
    }
    let len = if class < 70 {
        r.below(256)
    } else if class < 93 {
        256 + r.below(8 << 10)
    } else {
        (8 << 10) + r.below(92 << 10)
    } as usize;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    v.truncate(len);
    EntryPayload::Normal(v)
}

fn crash_entries(seed: u64, lo: Index, n: u64, term: Term) -> Vec<Entry> {
    (lo..lo + n)
        .map(|index| Entry {
            index,
            term,
            payload: crash_payload(seed, index, term),
        })
        .collect()
}

/// The child: continue from what is on disk until killed, printing `@@ try ...` before every
/// change of the log and `@@ acked <last_index>` / `@@ done` once it returned.
#[test]
fn wal_crash_child_entry() {
    let (Ok(dir), Ok(seed), Ok(round)) = (
        std::env::var(CHILD_DIR),
        std::env::var(CHILD_SEED),
        std::env::var(CHILD_ROUND),
    ) else {
        return; // Not a child: nothing to do in a normal test run.
    };
    let (seed, round): (u64, u64) = (seed.parse().unwrap(), round.parse().unwrap());
    let mut s = RedbStorage::open_with(&dir, &opts()).unwrap();
    let mut out = std::io::stdout();
    let mut say = |msg: String| {
        writeln!(out, "@@ {msg}").unwrap();
        out.flush().unwrap();
    };
    let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
    say(format!(
        "start {first} {last} {} {}",
        s.term(last).unwrap(),
        s.hard_state().term
    ));
    let mut r = Rng::new(seed ^ round.wrapping_mul(0x2545_f491_4f6c_dd1d));
    loop {
        let last = s.last_index().unwrap();
        let base = s.first_index().unwrap() - 1;
        let hs = s.hard_state();
        let (applied, _, _) = s.applied_state();
        let roll = r.below(100);
        let floor = hs.commit.max(applied);
        if hs.term == 0 || roll < 70 {
            // The fast path: continue the log (plus a new commit index, staged).
            let term = hs.term.max(1);
            let n = 1 + r.below(40);
            let es = crash_entries(seed, last + 1, n, term);
            let commit = (last + n).saturating_sub(r.below(10)).max(hs.commit);
            say(format!("try append {} {n} {term}", last + 1));
            s.persist(
                Some(&HardState {
                    term,
                    vote: hs.vote.or(Some(1)),
                    commit,
                }),
                &es,
            )
            .unwrap();
            say(format!("acked {}", last + n));
        } else if roll < 78 {
            // Apply, staged; sometimes written now (with or without an fsync); large values make
            // the staged state due by size now and then.
            let upto = applied + r.below(hs.commit.saturating_sub(applied) + 1);
            let t = s.term(upto).unwrap();
            let muts = vec![(
                format!("k{}", r.below(8)),
                Some(vec![round as u8; r.below(700 << 10) as usize]),
            )];
            s.commit_applied_deferred(upto, t, &conf(), &muts).unwrap();
            match r.below(4) {
                0 => s.checkpoint().unwrap(),
                1 => s.write_staged().unwrap(),
                2 => s.checkpoint_in_background().unwrap(),
                _ => {}
            }
        } else if roll < 86 && last > floor {
            // A new leader's conflicting suffix, in a new term (through redb).
            let start = floor + 1 + r.below(last - floor);
            let term = hs.term + 1;
            let n = 1 + r.below(40);
            let es = crash_entries(seed, start, n, term);
            say(format!("try append {start} {n} {term}"));
            s.persist(
                Some(&HardState {
                    term,
                    vote: Some(2),
                    commit: hs.commit,
                }),
                &es,
            )
            .unwrap();
            say(format!("acked {}", start + n - 1));
        } else if roll < 92 && applied > base {
            let upto = applied - r.below(applied - base);
            say(format!("try compact {upto}"));
            s.compact(upto).unwrap();
            say("done".into());
        } else if roll < 96 {
            // Appends go on while it runs; the next redb write waits for it.
            s.checkpoint_in_background().unwrap();
        } else {
            s.checkpoint().unwrap();
        }
    }
}

/// What the log must be: its base, the term of every entry, and the current term.
#[derive(Debug, Clone, Default, PartialEq)]
struct LogModel {
    base: (Index, Term),
    terms: BTreeMap<Index, Term>,
    term: Term,
}

impl LogModel {
    fn last(&self) -> Index {
        self.terms
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.base.0)
    }

    /// The model after the operation of a `try` line.
    fn after(&self, words: &[&str]) -> LogModel {
        let num = |i: usize| -> u64 { words[i].parse().unwrap() };
        let mut m = self.clone();
        match words[0] {
            "append" => {
                let (start, n, term) = (num(1), num(2), num(3));
                assert!(
                    start > m.base.0 && start <= m.last() + 1,
                    "child appended at {start} to {m:?}"
                );
                m.terms.split_off(&start);
                m.terms.extend((start..start + n).map(|i| (i, term)));
                m.term = term;
            }
            "compact" => {
                let upto = num(1);
                m.base = (upto, m.terms[&upto]);
                m.terms = m.terms.split_off(&(upto + 1));
            }
            other => panic!("unknown operation {other}"),
        }
        m
    }

    /// The store's log, checking every entry's bytes against the generator.
    fn read(s: &RedbStorage, seed: u64) -> LogModel {
        let (f, l) = (s.first_index().unwrap(), s.last_index().unwrap());
        let es = s.entries(f, l + 1, None).unwrap();
        let mut terms = BTreeMap::new();
        for (k, e) in es.iter().enumerate() {
            assert_eq!(e.index, f + k as u64, "the log is not contiguous");
            assert!(
                e.payload == crash_payload(seed, e.index, e.term),
                "entry {} (term {}) does not hold the bytes written",
                e.index,
                e.term
            );
            terms.insert(e.index, e.term);
        }
        LogModel {
            base: (f - 1, s.term(f - 1).unwrap()),
            terms,
            term: s.hard_state().term,
        }
    }
}

#[test]
fn kill_9_never_loses_an_acknowledged_append() {
    let (rounds, seed) = rounds_and_seed("DEIMOS_WAL_CRASH_ROUNDS", 20, "DEIMOS_WAL_CRASH_SEED");
    eprintln!(
        "wal crash test: seed {seed} (DEIMOS_WAL_CRASH_SEED), {rounds} rounds \
         (DEIMOS_WAL_CRASH_ROUNDS)"
    );
    let dir = TempDir::new().unwrap();
    let mut rng = Rng::new(seed);
    let mut model = LogModel::default();
    let (mut acked_appends, mut in_flight_landed, mut from_wal, mut rounds_with_tail) =
        (0u64, 0u64, 0u64, 0u64);
    let started = Instant::now();
    for round in 0..rounds {
        let (mut child, rx) = spawn_child(
            "wal_crash_child_entry",
            &[
                (CHILD_DIR, dir.path().display().to_string()),
                (CHILD_SEED, seed.to_string()),
                (CHILD_ROUND, round.to_string()),
            ],
            "@@ ",
        );
        let mut lines = Vec::new();
        // Now and then kill it while it opens (recovers); otherwise once it runs.
        if rng.below(8) == 0 {
            std::thread::sleep(Duration::from_millis(rng.below(40)));
        } else {
            loop {
                let line = rx
                    .recv_timeout(Duration::from_secs(60))
                    .unwrap_or_else(|e| panic!("round {round}: child did not start: {e}"));
                let start = line.starts_with("start");
                lines.push(line);
                if start {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(5 + rng.below(150)));
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("round {round}: child exited by itself ({status}); run it by hand to see why");
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        // Everything the child printed: the channel ends when its stdout does.
        lines.extend(rx.iter());

        // Replay what the child reported against the model.
        let mut pending: Option<LogModel> = None;
        for line in &lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[0] {
                "start" => {
                    let n: Vec<u64> = words[1..].iter().map(|w| w.parse().unwrap()).collect();
                    let last = model.last();
                    let last_term = model.terms.get(&last).copied().unwrap_or(model.base.1);
                    assert_eq!(
                        n,
                        vec![model.base.0 + 1, last, last_term, model.term],
                        "round {round}: the child recovered another log than the parent's check \
                         (first, last, last term, term)"
                    );
                }
                "try" => pending = Some(model.after(&words[1..])),
                "acked" | "done" => {
                    let next = pending.take().expect("ack without try");
                    if words[0] == "acked" {
                        assert_eq!(words[1].parse::<u64>().unwrap(), next.last());
                        acked_appends += 1;
                    }
                    model = next;
                }
                other => panic!("round {round}: unexpected line {other}"),
            }
        }

        // Check a copy, so the next child recovers the killed directory itself.
        let copy = TempDir::new().unwrap();
        for f in [DB_FILE, WAL_FILE] {
            std::fs::copy(dir.path().join(f), copy.path().join(f)).unwrap();
        }
        let in_redb = redb_last_index(copy.path());
        let s = RedbStorage::open_with(copy.path(), &opts())
            .unwrap_or_else(|e| panic!("round {round}: reopen after kill -9 failed: {e}"));
        let on_disk = LogModel::read(&s, seed);
        drop(s);
        if on_disk != model {
            let landed = pending.as_ref() == Some(&on_disk);
            assert!(
                landed,
                "round {round}: after kill -9 the log is neither the acknowledged one nor that \
                 plus the in-flight operation.\n on disk: base {:?} last {} term {}\n acked:   \
                 base {:?} last {} term {}\n pending: {:?}\n first difference at {:?}",
                on_disk.base,
                on_disk.last(),
                on_disk.term,
                model.base,
                model.last(),
                model.term,
                pending.as_ref().map(|p| (p.base, p.last(), p.term)),
                (model.base.0 + 1..=model.last().max(on_disk.last()))
                    .find(|i| on_disk.terms.get(i) != model.terms.get(i)),
            );
            in_flight_landed += 1;
            model = on_disk;
        }
        if let Some(r) = in_redb {
            if model.last() > r {
                from_wal += model.last() - r;
                rounds_with_tail += 1;
            }
        }
    }
    eprintln!(
        "wal crash test: {rounds} kills, {acked_appends} acknowledged appends, \
         {in_flight_landed} in-flight operations landed, {from_wal} entries replayed from the \
         write-ahead log in {rounds_with_tail} rounds, log {:?}..={}, {:?}",
        model.base,
        model.last(),
        started.elapsed()
    );
    assert!(
        acked_appends > rounds,
        "the child made too little progress to test anything"
    );
    if rounds >= 5 {
        assert!(
            rounds_with_tail > 0,
            "no kill left entries in the write-ahead log: the fast path went untested"
        );
    }
}
