//! Apply throughput of `RedbStorage` with real fsync, next to the raw `fdatasync` rate of the same
//! disk measured in the same run.
//!
//! `cargo bench -p deimos-store --bench apply` — for each batch size (1, 16, 256 entries of
//! 256-byte sets) it runs what the server does per Raft `Ready`: `persist(hard_state, entries)`
//! and then `commit_applied` of the same number of records (two durable transactions), and, for
//! comparison, both in one `write_batch` (one transaction). Options: `DEIMOS_BENCH_SECS` (per
//! mode and batch size, default 2), `DEIMOS_BENCH_DIR` (where files go; default the system temp dir).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use deimos_raft::types::{ConfState, Entry, EntryPayload, HardState};
use deimos_store::persist::{AppliedBatch, RedbStorage, StoreOptions, WriteBatch};

const VALUE: usize = 256;

fn secs() -> Duration {
    let s = std::env::var("DEIMOS_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(s)
}

/// `write(256 bytes) + fdatasync` on a file in a directory: the disk's raw durable-write rate.
struct RawSync {
    f: std::fs::File,
    n: u64,
    busy: Duration,
}

impl RawSync {
    fn new(dir: &Path) -> std::io::Result<Self> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(dir.join("fdatasync.probe"))?;
        Ok(RawSync {
            f,
            n: 0,
            busy: Duration::ZERO,
        })
    }

    fn run_for(&mut self, dur: Duration) -> std::io::Result<()> {
        let buf = [0xabu8; VALUE];
        let start = Instant::now();
        while start.elapsed() < dur {
            self.f.write_all(&buf)?;
            self.f.sync_data()?;
            self.n += 1;
        }
        self.busy += start.elapsed();
        Ok(())
    }

    fn rate(&self) -> f64 {
        self.n as f64 / self.busy.as_secs_f64()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// `persist` then `commit_applied`: two durable transactions per batch (the server's path).
    TwoTxns,
    /// One `write_batch` with both.
    OneTxn,
    /// One `write_batch`, redb 2-phase commit off (one fsync less; see `StoreOptions`).
    OneTxnNo2pc,
}

/// Applies batches of `batch` entries + records to its own store and counts them.
struct Apply {
    s: RedbStorage,
    conf: ConfState,
    batch: usize,
    mode: Mode,
    applied: u64,
    next_key: u64,
    busy: Duration,
}

impl Apply {
    fn new(dir: &Path, batch: usize, mode: Mode) -> Result<Self, String> {
        let conf = ConfState::new([1]);
        let opts = StoreOptions {
            initial_conf: conf.clone(),
            two_phase_commit: mode != Mode::OneTxnNo2pc,
            ..StoreOptions::default()
        };
        let s = RedbStorage::open_with(dir, &opts).map_err(|e| e.to_string())?;
        Ok(Apply {
            s,
            conf,
            batch,
            mode,
            applied: 0,
            next_key: 0,
            busy: Duration::ZERO,
        })
    }

    fn run_for(&mut self, dur: Duration) -> Result<(), String> {
        let value = vec![0x5au8; VALUE];
        let batch = self.batch as u64;
        let start = Instant::now();
        while start.elapsed() < dur {
            let first = self.applied + 1;
            let last = first + batch - 1;
            let entries: Vec<Entry> = (first..=last)
                .map(|index| Entry {
                    term: 1,
                    index,
                    payload: EntryPayload::Normal(value.clone()),
                })
                .collect();
            let hs = HardState {
                term: 1,
                vote: Some(1),
                commit: last,
            };
            let muts: Vec<(String, Option<Vec<u8>>)> = (0..batch)
                .map(|_| {
                    self.next_key += 1;
                    (
                        format!("/bench/key{:06}", self.next_key % 100_000),
                        Some(value.clone()),
                    )
                })
                .collect();
            let conf = &self.conf;
            let r = match self.mode {
                Mode::TwoTxns => self
                    .s
                    .persist(Some(&hs), &entries)
                    .and_then(|()| self.s.commit_applied(last, 1, conf, &muts)),
                Mode::OneTxn | Mode::OneTxnNo2pc => {
                    let applied = AppliedBatch {
                        index: last,
                        term: 1,
                        conf,
                        mutations: &muts,
                    };
                    let b = WriteBatch {
                        hard_state: Some(&hs),
                        entries: &entries,
                        applied: Some(applied),
                        compact_to: None,
                    };
                    self.s.write_batch(&b)
                }
            };
            r.map_err(|e| e.to_string())?;
            self.applied = last;
        }
        self.busy += start.elapsed();
        Ok(())
    }

    fn rate(&self) -> f64 {
        self.applied as f64 / self.busy.as_secs_f64()
    }
}

/// Read path: `term()` and `entries()` from the middle of a 10 000-entry log (through a redb read
/// transaction; first/last index and the log base come from the in-memory cache).
fn read_rates(dir: &Path, dur: Duration) -> Result<(f64, f64), String> {
    use deimos_raft::storage::LogStorage;
    let opts = StoreOptions {
        initial_conf: ConfState::new([1]),
        ..StoreOptions::default()
    };
    let mut s = RedbStorage::open_with(dir, &opts).map_err(|e| e.to_string())?;
    let value = vec![7u8; VALUE];
    let entries: Vec<Entry> = (1..=10_000)
        .map(|index| Entry {
            term: 1 + index / 1000,
            index,
            payload: EntryPayload::Normal(value.clone()),
        })
        .collect();
    s.persist(None, &entries).map_err(|e| e.to_string())?;
    let (start, mut n, mut i) = (Instant::now(), 0u64, 1u64);
    while start.elapsed() < dur {
        i = (i * 7919 + 13) % 9_998 + 1;
        std::hint::black_box(s.term(i).map_err(|e| e.to_string())?);
        n += 1;
    }
    let terms = n as f64 / start.elapsed().as_secs_f64();
    let (start, mut n) = (Instant::now(), 0u64);
    while start.elapsed() < dur {
        i = (i * 7919 + 13) % 9_800 + 1;
        std::hint::black_box(s.entries(i, i + 100, None).map_err(|e| e.to_string())?);
        n += 1;
    }
    Ok((terms, n as f64 / start.elapsed().as_secs_f64()))
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("{what}: {e}");
    std::process::exit(1);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, so keep that short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let dur = if quick {
        Duration::from_millis(60)
    } else {
        secs()
    };
    let base = std::env::var_os("DEIMOS_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir);
    let root = tempfile::Builder::new()
        .prefix("deimos-apply-bench")
        .tempdir_in(&base)
        .unwrap_or_else(|e| fail(&format!("create a directory in {}", base.display()), e));
    println!(
        "apply benchmark: {VALUE}-byte sets, fsync per commit, dir {}",
        root.path().display()
    );
    println!("10 interleaved rounds of every configuration and of raw fdatasync, {dur:?} each");
    // Every configuration runs in each of 10 rounds, so all of them (and the raw fdatasync probe)
    // see the same mix of disk and CPU contention; the disk here is shared and its fsync rate
    // can swing several-fold within seconds.
    let sizes = [1usize, 16, 256];
    let modes = [
        (Mode::TwoTxns, "two"),
        (Mode::OneTxn, "one"),
        (Mode::OneTxnNo2pc, "one1pc"),
    ];
    let mkdir = |name: String| {
        let d = root.path().join(name);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| fail("create dir", e));
        d
    };
    let mut raw = RawSync::new(&mkdir("raw".into())).unwrap_or_else(|e| fail("fdatasync probe", e));
    let mut runs: Vec<Apply> = Vec::new();
    for batch in sizes {
        for (m, tag) in modes {
            let d = mkdir(format!("b{batch}-{tag}"));
            runs.push(Apply::new(&d, batch, m).unwrap_or_else(|e| fail("open store", e)));
        }
    }
    for _ in 0..10 {
        raw.run_for(dur / 10)
            .unwrap_or_else(|e| fail("fdatasync probe", e));
        for r in &mut runs {
            let batch = r.batch;
            r.run_for(dur / 10)
                .unwrap_or_else(|e| fail(&format!("batch {batch}"), e));
        }
    }
    let fsync = raw.rate();
    println!("raw write(256 B) + fdatasync, same directory: {fsync:.0} /s");
    println!();
    println!(
        "{:>5} | {:>22} | {:>8} | {:>17} | {:>17}",
        "batch", "persist+commit_applied", "x fsync", "write_batch 1 txn", "1 txn, no 2PC"
    );
    println!(
        "{:->5}-+-{:->22}-+-{:->8}-+-{:->17}-+-{:->17}",
        "", "", "", "", ""
    );
    let mut two = Vec::new();
    for (i, batch) in sizes.into_iter().enumerate() {
        let row = &runs[i * modes.len()..(i + 1) * modes.len()];
        let (a, b, c) = (row[0].rate(), row[1].rate(), row[2].rate());
        println!(
            "{batch:>5} | {a:>16.0} ops/s | {:>7.2}x | {b:>11.0} ops/s | {c:>11.0} ops/s",
            a / fsync
        );
        two.push(a);
    }
    let (terms, ranges) =
        read_rates(&mkdir("reads".into()), dur / 4).unwrap_or_else(|e| fail("reads", e));
    println!();
    println!(
        "reads: term(i) {terms:.0}/s, entries(i, i+100) {ranges:.0}/s ({:.0} entries/s)",
        ranges * 100.0
    );
    let ratio = two[2] / two[0];
    println!();
    println!("ratio batch256/batch1 (persist+commit_applied): {ratio:.1}x (target >= 20x)");
    if !quick && ratio < 20.0 {
        println!("WARNING: below the 20x target");
    }
}
