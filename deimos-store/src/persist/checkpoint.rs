//! Background checkpoints: the write-ahead log's entries and the staged state go into redb on a
//! thread of their own, while the caller (the Raft driver) goes on appending.
//!
//! Why: a checkpoint under load is the largest redb commit there is — a few thousand log
//! entries, as many staged records, two fsyncs: 15–28 ms at 20k writes/s, every ~0.2 s
//! (`docs/bench/2026-12-05-wal.md`). On the driver's thread every write waited for it.
//!
//! How: [`RedbStorage::start_checkpoint`] *freezes* the log's entries (they stay readable from
//! memory), takes what is staged, and hands both to a thread that commits them in one redb
//! transaction together with the log's *resume point* — the record and offset the next append
//! goes to. Appends go on after that point in the same epoch, so nothing they write can be
//! lost whether the checkpoint commits or not: recovery starts from the resume point redb has
//! (the old one if the crash came first, when the frozen records are still in the file). Only
//! one checkpoint runs at a time. Every other redb write waits for it first
//! ([`finish_checkpoint`](RedbStorage::finish_checkpoint)), and so do reads of what the file
//! holds (records, snapshots), so that they see its commit. A checkpoint of the caller's own
//! ([`RedbStorage::checkpoint`], and any redb write while entries are logged) also starts the
//! log over in a new epoch.
//!
//! A failed background commit poisons the store at the next call, as a failed commit of the
//! caller's own does: the node stops, and what was staged is recovered as after a crash.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use deimos_raft::storage::{StorageError, StorageResult};
use deimos_raft::types::Entry;
use redb::Database;

use super::error::backend;
use super::schema::{KEY_WAL_RESUME, LOG, RAFT_STATE};
use super::staged::Staged;
use super::store::{Cached, RedbStorage};
use super::wal::Resume;
use super::write::{fill_log, fill_staged, validate, Failure};

/// The background checkpoint in flight, if any. A `Mutex` so that readers holding `&self` can
/// wait for it ([`RedbStorage::settle`]).
#[derive(Debug, Default)]
pub(crate) struct Running(Mutex<Option<Job>>);

#[derive(Debug)]
struct Job {
    rx: mpsc::Receiver<StorageResult<()>>,
    /// The outcome, once received (by `settle`) but not yet acted on.
    outcome: Option<StorageResult<()>>,
}

impl Running {
    fn lock(&self) -> MutexGuard<'_, Option<Job>> {
        // Nothing panics while holding it; a poisoned lock still holds a consistent value.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_running(&self) -> bool {
        self.lock().is_some()
    }
}

fn lost() -> StorageError {
    backend(
        "background checkpoint",
        std::io::Error::other("the checkpoint thread ended without an outcome"),
    )
}

impl RedbStorage {
    /// Start a background checkpoint of the logged entries and the staged state, unless one
    /// is running or there is nothing to write. (`persist` and `commit_applied_deferred` start
    /// one themselves when it is due; this is for a caller with a better moment, and tests.)
    pub fn checkpoint_in_background(&mut self) -> StorageResult<()> {
        self.check_usable()?;
        self.collect(false)?;
        if self.running.is_running() || (self.staged.is_empty() && self.wal.tail().is_empty()) {
            return Ok(());
        }
        let staged = self.staged.take();
        // The state the file will hold once this commits: the cache, whose entries are all
        // logged (and now frozen) and whose staged values are all taken.
        let next = self.cache.clone();
        let log = if self.wal.tail().is_empty() {
            None
        } else {
            Some(self.wal.freeze())
        };
        let db = self.db.clone();
        let two_phase = self.two_phase_commit;
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("deimos-checkpoint".into())
            .spawn(move || {
                let outcome = run(&db, two_phase, log, &staged, &next);
                // Let go of the database before telling: once the store has the outcome it may
                // be dropped and the file reopened, which redb refuses while a handle lives.
                drop(db);
                let _ = tx.send(outcome);
            });
        match spawned {
            Ok(_) => {
                *self.running.lock() = Some(Job { rx, outcome: None });
                Ok(())
            }
            Err(e) => Err(self.poison(backend("start checkpoint thread", e))),
        }
    }

    /// Act on a finished background checkpoint, without waiting for one still running.
    /// `true` if one had finished.
    pub(crate) fn poll_checkpoint(&mut self) -> StorageResult<bool> {
        self.collect(false)
    }

    /// Wait for the running background checkpoint, if any, and act on its outcome.
    pub(crate) fn finish_checkpoint(&mut self) -> StorageResult<()> {
        self.collect(true).map(drop)
    }

    /// Wait for the running background checkpoint to commit (or fail) so that reads of the file
    /// see it; its outcome is acted on by the next call that can ([`poll_checkpoint`]).
    pub(crate) fn settle(&self) {
        if let Some(job) = self.running.lock().as_mut() {
            if job.outcome.is_none() {
                job.outcome = Some(job.rx.recv().unwrap_or_else(|_| Err(lost())));
            }
        }
    }

    fn collect(&mut self, wait: bool) -> StorageResult<bool> {
        let outcome = {
            let mut slot = self.running.lock();
            let Some(job) = slot.as_mut() else {
                return Ok(false);
            };
            if job.outcome.is_none() {
                job.outcome = if wait {
                    Some(job.rx.recv().unwrap_or_else(|_| Err(lost())))
                } else {
                    match job.rx.try_recv() {
                        Ok(r) => Some(r),
                        Err(mpsc::TryRecvError::Empty) => None,
                        Err(mpsc::TryRecvError::Disconnected) => Some(Err(lost())),
                    }
                };
            }
            let Some(outcome) = job.outcome.take() else {
                return Ok(false);
            };
            *slot = None;
            outcome
        };
        match outcome {
            Ok(()) => {
                self.wal.thaw();
                Ok(true)
            }
            Err(e) => Err(self.poison(e)),
        }
    }
}

/// The checkpoint's transaction (on its own thread): the frozen entries and the resume point
/// after them (durably: the log may then forget them), the staged state, checked as a commit of
/// the caller's own would be.
fn run(
    db: &Database,
    two_phase: bool,
    log: Option<(Arc<Vec<Entry>>, Resume)>,
    staged: &Staged,
    next: &Cached,
) -> StorageResult<()> {
    let mut txn = db.begin_write().map_err(|e| backend("begin write", e))?;
    let durability = match log {
        Some(_) => redb::Durability::Immediate,
        None => redb::Durability::None,
    };
    txn.set_durability(durability)
        .map_err(|e| backend("durability", e))?;
    txn.set_two_phase_commit(two_phase);
    let outcome = (|| -> Result<(), Failure> {
        if let Some((entries, resume)) = &log {
            fill_log(&txn, entries)?;
            txn.open_table(RAFT_STATE)
                .map_err(|e| Failure::Backend(backend("open raft", e)))?
                .insert(KEY_WAL_RESUME, resume.to_bytes().as_slice())
                .map_err(|e| Failure::Backend(backend("write wal resume", e)))?;
        }
        fill_staged(&txn, staged, false)?;
        let log = txn
            .open_table(LOG)
            .map_err(|e| Failure::Backend(backend("open log", e)))?;
        validate(&log, next)
    })();
    match outcome {
        Ok(()) => txn.commit().map_err(|e| backend("commit", e)),
        Err(Failure::Refused(e) | Failure::Backend(e)) => {
            let _ = txn.abort();
            Err(e)
        }
    }
}
