//! Writes: group commit of log + hard state + applied state (+ compaction) in one transaction.
//!
//! Every public write here is one redb write transaction committed with `Durability::Immediate`
//! (fsync before `commit` returns), so either all of a batch is on disk or none of it — except
//! the two kinds of write that need no fsync, which are staged (see `staged`) and carried by
//! the next transaction. Before
//! committing, the would-be state is checked with [`check_consistency`]; a batch that would
//! break an invariant is refused and the transaction is dropped (rolled back), leaving both the
//! file and the cache as they were.

use deimos_raft::storage::{LogStorage, StorageError, StorageResult};
use deimos_raft::types::{ConfState, Entry, HardState, Index, Term};
use redb::{ReadableTable, Table, WriteTransaction};

use super::codec::{decode, encode};
use super::error::{backend, corrupt, invalid};
use super::schema::*;
use super::staged::Staged;
use super::store::{check_consistency, Cached, RedbStorage};
use super::wal::{Appended, Resume};

/// Log records written since the last checkpoint that start one even when nothing is staged,
/// so that a restart never replays more than about this much.
const CHECKPOINT_BYTES: u64 = 16 << 20;

/// One applied batch of state-machine mutations: `None` deletes the record.
#[derive(Debug, Clone, Copy)]
pub struct AppliedBatch<'a> {
    /// Index of the last log entry these mutations reflect. Never moves backwards.
    pub index: Index,
    /// Term of the entry at `index`.
    pub term: Term,
    /// Membership as of `index`.
    pub conf: &'a ConfState,
    pub mutations: &'a [(String, Option<Vec<u8>>)],
}

/// Everything one transaction may do, applied in this order: append `entries` (discarding any
/// conflicting suffix), set `hard_state`, apply `applied`, then compact the log to `compact_to`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteBatch<'a> {
    pub hard_state: Option<&'a HardState>,
    pub entries: &'a [Entry],
    pub applied: Option<AppliedBatch<'a>>,
    pub compact_to: Option<Index>,
}

impl WriteBatch<'_> {
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.hard_state.is_none()
            && self.applied.is_none()
            && self.compact_to.is_none()
    }
}

impl RedbStorage {
    /// Group commit: append `entries` and set `hard_state`. It is durable (fsync) whenever
    /// Raft's safety needs it — new entries, or a new term or vote, then in ONE transaction. A
    /// change of the commit index alone is staged instead (etcd's `MustSync` rule): the commit
    /// index is recoverable after a crash from the leader, so losing the latest value only
    /// delays applying, never loses a decision. A later transaction writes it.
    pub fn persist(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
    ) -> StorageResult<()> {
        let prev = self.cache.hard_state;
        let term_or_vote =
            hard_state.is_some_and(|hs| hs.term != prev.term || hs.vote != prev.vote);
        if term_or_vote {
            return self.write_batch_with(
                &WriteBatch {
                    hard_state,
                    entries,
                    ..WriteBatch::default()
                },
                redb::Durability::Immediate,
            );
        }
        if !entries.is_empty() && !self.log_ahead(entries)? {
            // The entries alone need the fsync; a new commit index rides as staged state after
            // them (it may point into them), sparing the durable commit the hard state's page.
            self.write_batch_with(
                &WriteBatch {
                    entries,
                    ..WriteBatch::default()
                },
                redb::Durability::Immediate,
            )?;
        }
        if let Some(hs) = hard_state.filter(|hs| **hs != prev) {
            self.check_usable()?;
            let mut next = self.cache.clone();
            next.hard_state = *hs;
            self.check_staged(&next)?;
            self.cache = next;
            self.staged.stage_hard_state(*hs);
        }
        self.write_staged_if_due()
    }

    /// Append `entries` through the write-ahead log (see `wal`) if they simply extend the log:
    /// consecutive, starting right after the last index. `false` if they must go through redb
    /// (a conflicting suffix to replace, a compacted prefix to skip, a gap to refuse, a record
    /// too large for the log). Extending the log keeps every invariant of `check_consistency`
    /// but the top of the index space, which is checked here.
    fn log_ahead(&mut self, entries: &[Entry]) -> StorageResult<bool> {
        self.check_usable()?;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(true);
        };
        let consecutive = entries
            .windows(2)
            .all(|w| w[1].index == w[0].index.wrapping_add(1));
        if !consecutive || first.index != self.cache.last_index + 1 || last.index == Index::MAX {
            return Ok(false);
        }
        let mut checkpointed = false;
        loop {
            match self.wal.append(entries) {
                Ok(Appended::Logged) => break,
                Ok(Appended::TooLarge) => return Ok(false),
                Ok(Appended::Full) if !checkpointed => {
                    self.checkpoint()?;
                    checkpointed = true;
                }
                Ok(Appended::Full) => return Ok(false),
                Err(e) => return Err(self.poison(e)),
            }
        }
        self.cache.last_index = last.index;
        self.cache.last_term = last.term;
        Ok(true)
    }

    /// Move the write-ahead log's entries into redb (with whatever is staged) in one durable
    /// commit, and start the log over.
    pub fn checkpoint(&mut self) -> StorageResult<()> {
        self.write_batch_with(&WriteBatch::default(), redb::Durability::Immediate)
    }

    /// Start a background checkpoint (see `checkpoint`) if what is staged is large or old
    /// enough (see `staged`) or the log has grown by [`CHECKPOINT_BYTES`] since the last one.
    fn write_staged_if_due(&mut self) -> StorageResult<()> {
        if self.poll_checkpoint()? && self.wal.position() > 0 {
            // One just committed: start the log over now, with the few entries logged while it
            // ran (a small checkpoint in line), so that the file stays about one checkpoint's
            // worth long instead of growing to its limit (each growth step is a pause).
            self.checkpoint()?;
        }
        if self.staged.due() || self.wal.pending_bytes() >= CHECKPOINT_BYTES {
            return self.checkpoint_in_background();
        }
        Ok(())
    }

    /// Write everything staged now, without an fsync (it is durable with the next durable
    /// write); otherwise it is written when due (see `staged`), with a compaction or a
    /// snapshot install, or at close.
    pub fn write_staged(&mut self) -> StorageResult<()> {
        self.write_batch_with(&WriteBatch::default(), redb::Durability::None)
    }

    /// The checks a commit would run, for a state that is about to be staged instead.
    fn check_staged(&self, next: &Cached) -> StorageResult<()> {
        check_consistency(next, |idx| self.term(idx))
            .map_err(|e| invalid(format!("write would leave the store inconsistent: {e}")))
    }

    /// Atomically upsert/delete `mutations` and record `applied_index`/`applied_term`/`conf`.
    /// `applied_index` must be in the stored log (or be its base) and never move backwards.
    pub fn commit_applied(
        &mut self,
        applied_index: Index,
        applied_term: Term,
        conf: &ConfState,
        mutations: &[(String, Option<Vec<u8>>)],
    ) -> StorageResult<()> {
        self.write_batch(&WriteBatch {
            applied: Some(AppliedBatch {
                index: applied_index,
                term: applied_term,
                conf,
                mutations,
            }),
            ..WriteBatch::default()
        })
    }

    /// Delete log entries `<= upto`, keeping `term(upto)` answerable. Errors like etcd's
    /// `Compact`: `Compacted` if `upto <= first_index() - 1`, `Unavailable` past the end; and
    /// refused unless `upto <= applied index` (the records must already reflect those entries).
    pub fn compact(&mut self, upto: Index) -> StorageResult<()> {
        self.write_batch(&WriteBatch {
            compact_to: Some(upto),
            ..WriteBatch::default()
        })
    }

    /// Like [`commit_applied`](Self::commit_applied) but without an fsync or a transaction of
    /// its own: the records and the applied index are staged and written with the next
    /// transaction (the next `persist` with entries, at the latest within a second), durable
    /// with the next durable one. For a state machine whose every effect can be recomputed from
    /// the durable Raft log: after a crash the applied state is an earlier consistent point
    /// (records and applied index still change together) and Raft re-applies the entries after
    /// it. Checked now exactly as a commit would be.
    pub fn commit_applied_deferred(
        &mut self,
        applied_index: Index,
        applied_term: Term,
        conf: &ConfState,
        mutations: &[(String, Option<Vec<u8>>)],
    ) -> StorageResult<()> {
        self.check_usable()?;
        if applied_index < self.cache.applied.index {
            return Err(invalid(format!(
                "applied index moves backwards ({} -> {applied_index})",
                self.cache.applied.index
            )));
        }
        let applied = AppliedState {
            index: applied_index,
            term: applied_term,
            conf: conf.clone(),
        };
        let mut next = self.cache.clone();
        next.applied = applied.clone();
        self.check_staged(&next)?;
        self.cache = next;
        self.staged.stage_applied(applied, mutations);
        self.write_staged_if_due()
    }

    /// Do all of `batch` in one durable transaction (see [`WriteBatch`]).
    pub fn write_batch(&mut self, batch: &WriteBatch<'_>) -> StorageResult<()> {
        self.write_batch_with(batch, redb::Durability::Immediate)
    }

    fn write_batch_with(
        &mut self,
        batch: &WriteBatch<'_>,
        durability: redb::Durability,
    ) -> StorageResult<()> {
        self.check_usable()?;
        // One redb writer at a time, and this one must see what a background checkpoint wrote.
        self.finish_checkpoint()?;
        // Every transaction while the write-ahead log is not at its start is a checkpoint: the
        // entries not in redb yet go in first, with the next epoch, and the commit must be
        // durable before the log may start over (a lost commit would take the logged entries
        // with it). Even with no such entries (a background checkpoint took them all) the log
        // only starts over this way: otherwise it would fill up and appends go to redb.
        let checkpoint = !self.wal.tail().is_empty() || self.wal.position() > 0;
        if batch.is_empty() && self.staged.is_empty() && !checkpoint {
            return Ok(());
        }
        let durability = if checkpoint {
            redb::Durability::Immediate
        } else {
            durability
        };
        let next_epoch = self.wal.epoch() + 1;
        let mut next = self.cache.clone();
        let txn = match self.begin_write_with(durability) {
            Ok(t) => t,
            Err(e) => return Err(self.poison(e)),
        };
        // What is staged rides along, first, when it is due, when this transaction touches the
        // applied state or the log base anyway, or when it writes nothing else (a flush, a
        // close); `next`, from the cache, already reflects it.
        // Otherwise it waits: carrying it in every log append would add the records' pages to
        // each durable commit, and their fsync is what a write waits for.
        let carry = self.staged.due()
            || batch.applied.is_some()
            || batch.compact_to.is_some()
            || batch.is_empty();
        // A batch that sets the hard state supersedes the staged one, which must go with it:
        // left behind, it could later overwrite the newer one.
        let staged = if carry {
            self.staged.take()
        } else if batch.hard_state.is_some() {
            self.staged.take_hard_state()
        } else {
            Staged::default()
        };
        let outcome = (if checkpoint {
            fill_checkpoint(&txn, self.wal.tail(), next_epoch)
        } else {
            Ok(())
        })
        .and_then(|()| fill_staged(&txn, &staged, batch.hard_state.is_some()))
        .and_then(|()| fill(&txn, &mut next, batch));
        let res = self.finish(txn, next, outcome);
        match &res {
            Ok(()) if checkpoint => self.wal.reset(next_epoch),
            Ok(()) => {}
            Err(_) => self.staged.restore(staged),
        }
        res
    }

    pub(crate) fn begin_write(&self) -> StorageResult<WriteTransaction> {
        self.begin_write_with(redb::Durability::Immediate)
    }

    fn begin_write_with(&self, durability: redb::Durability) -> StorageResult<WriteTransaction> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| backend("begin write", e))?;
        txn.set_durability(durability)
            .map_err(|e| backend("durability", e))?;
        txn.set_two_phase_commit(self.two_phase_commit);
        Ok(txn)
    }

    /// Commit `txn` if `outcome` is Ok and the result is consistent; otherwise roll back.
    /// Backend failures poison the handle; refusals of bad input do not.
    pub(crate) fn finish(
        &mut self,
        txn: WriteTransaction,
        next: Cached,
        outcome: Result<(), Failure>,
    ) -> StorageResult<()> {
        match outcome {
            Ok(()) => {}
            Err(Failure::Refused(e)) => {
                let _ = txn.abort();
                return Err(e);
            }
            Err(Failure::Backend(e)) => {
                let _ = txn.abort();
                return Err(self.poison(e));
            }
        }
        if let Err(e) = txn.commit() {
            return Err(self.poison(backend("commit", e)));
        }
        self.cache = next;
        Ok(())
    }
}

/// Why a transaction was not committed: the caller's mistake, or the store's.
pub(crate) enum Failure {
    Refused(StorageError),
    Backend(StorageError),
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Compacted
            | StorageError::Unavailable
            | StorageError::SnapshotTemporarilyUnavailable => Failure::Refused(e),
            other => Failure::Backend(other),
        }
    }
}

fn be(context: &'static str) -> impl Fn(redb::StorageError) -> Failure {
    move |e| Failure::Backend(backend(context, e))
}

/// Write the write-ahead log's entries not in redb yet (`tail`, continuing the redb log) and
/// the epoch that retires their records, the log starting over.
fn fill_checkpoint(txn: &WriteTransaction, tail: &[Entry], epoch: u64) -> Result<(), Failure> {
    fill_log(txn, tail)?;
    let mut raft = txn
        .open_table(RAFT_STATE)
        .map_err(|e| Failure::Backend(backend("open raft", e)))?;
    raft.insert(KEY_WAL_EPOCH, epoch.to_le_bytes().as_slice())
        .map_err(be("write wal epoch"))?;
    raft.insert(KEY_WAL_RESUME, Resume::default().to_bytes().as_slice())
        .map_err(be("write wal resume"))?;
    Ok(())
}

/// Insert logged entries (continuing the redb log) into the log table.
pub(crate) fn fill_log(txn: &WriteTransaction, entries: &[Entry]) -> Result<(), Failure> {
    let mut log = txn
        .open_table(LOG)
        .map_err(|e| Failure::Backend(backend("open log", e)))?;
    for e in entries {
        log.insert(e.index, encode(e)?.as_slice())
            .map_err(be("write log"))?;
    }
    Ok(())
}

/// Write the staged hard state (unless the batch brings a newer one) and applied records.
pub(crate) fn fill_staged(
    txn: &WriteTransaction,
    staged: &Staged,
    batch_sets_hard_state: bool,
) -> Result<(), Failure> {
    if let Some(hs) = staged.hard_state.filter(|_| !batch_sets_hard_state) {
        let mut raft = txn
            .open_table(RAFT_STATE)
            .map_err(|e| Failure::Backend(backend("open raft", e)))?;
        raft.insert(KEY_HARD_STATE, encode(&hs)?.as_slice())
            .map_err(be("write hard state"))?;
    }
    if let Some(applied) = &staged.applied {
        write_records(
            txn,
            staged
                .records
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref())),
        )?;
        write_applied(txn, applied)?;
    }
    Ok(())
}

fn fill(txn: &WriteTransaction, next: &mut Cached, b: &WriteBatch<'_>) -> Result<(), Failure> {
    let mut log = txn
        .open_table(LOG)
        .map_err(|e| Failure::Backend(backend("open log", e)))?;
    if !b.entries.is_empty() {
        append_in(&mut log, next, b.entries)?;
    }
    if let Some(hs) = b.hard_state {
        let mut raft = txn
            .open_table(RAFT_STATE)
            .map_err(|e| Failure::Backend(backend("open raft", e)))?;
        raft.insert(KEY_HARD_STATE, encode(hs)?.as_slice())
            .map_err(be("write hard state"))?;
        next.hard_state = *hs;
    }
    if let Some(a) = &b.applied {
        apply_in(txn, next, a)?;
    }
    if let Some(upto) = b.compact_to {
        compact_in(txn, &mut log, next, upto)?;
    }
    validate(&log, next)
}

/// Check the would-be state before committing it.
pub(crate) fn validate(log: &Table<'_, u64, &[u8]>, next: &Cached) -> Result<(), Failure> {
    check_consistency(next, |idx| term_in(log, next, idx)).map_err(|e| {
        Failure::Refused(invalid(format!(
            "batch would leave the store inconsistent: {e}"
        )))
    })
}

pub(crate) fn term_in(log: &Table<'_, u64, &[u8]>, c: &Cached, idx: Index) -> StorageResult<Term> {
    if idx == c.base.index {
        return Ok(c.base.term);
    }
    if idx == c.last_index {
        return Ok(c.last_term);
    }
    match log.get(idx).map_err(|e| backend("read log", e))? {
        Some(v) => Ok(decode::<Entry>(v.value(), "log entry")?.term),
        None => Err(corrupt(format!("log entry {idx} missing"))),
    }
}

/// etcd `Append` semantics: skip what is already compacted, refuse a gap, drop the conflicting
/// suffix, write the rest. The entries must carry consecutive indexes.
fn append_in(
    log: &mut Table<'_, u64, &[u8]>,
    next: &mut Cached,
    entries: &[Entry],
) -> Result<(), Failure> {
    for w in entries.windows(2) {
        if w[1].index != w[0].index.wrapping_add(1) {
            return Err(Failure::Refused(invalid(format!(
                "append: entries not consecutive ({} then {})",
                w[0].index, w[1].index
            ))));
        }
    }
    let Some(first) = entries.first() else {
        return Ok(());
    };
    let skip = if first.index <= next.base.index {
        (next.base.index - first.index + 1) as usize
    } else {
        0
    };
    let Some(entries) = entries.get(skip..).filter(|e| !e.is_empty()) else {
        return Ok(());
    };
    let first = entries[0].index;
    if first > next.last_index + 1 {
        return Err(Failure::Refused(invalid(format!(
            "append at {} leaves a gap after {}",
            first, next.last_index
        ))));
    }
    if first <= next.last_index {
        log.retain_in(first..=next.last_index, |_, _| false)
            .map_err(be("truncate log"))?;
    }
    for e in entries {
        log.insert(e.index, encode(e)?.as_slice())
            .map_err(be("write log"))?;
    }
    if let Some(last) = entries.last() {
        next.last_index = last.index;
        next.last_term = last.term;
    }
    Ok(())
}

fn apply_in(
    txn: &WriteTransaction,
    next: &mut Cached,
    a: &AppliedBatch<'_>,
) -> Result<(), Failure> {
    if a.index < next.applied.index {
        return Err(Failure::Refused(invalid(format!(
            "applied index moves backwards ({} -> {})",
            next.applied.index, a.index
        ))));
    }
    write_records(
        txn,
        a.mutations.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
    )?;
    next.applied = AppliedState {
        index: a.index,
        term: a.term,
        conf: a.conf.clone(),
    };
    write_applied(txn, &next.applied)
}

/// Upsert (`Some`) or delete (`None`) records.
fn write_records<'a>(
    txn: &WriteTransaction,
    mutations: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> Result<(), Failure> {
    let mut records = txn
        .open_table(RECORDS)
        .map_err(|e| Failure::Backend(backend("open records", e)))?;
    for (key, value) in mutations {
        match value {
            Some(v) => records
                .insert(key.as_bytes(), v)
                .map_err(be("write record"))?,
            None => records
                .remove(key.as_bytes())
                .map_err(be("delete record"))?,
        };
    }
    Ok(())
}

fn write_applied(txn: &WriteTransaction, applied: &AppliedState) -> Result<(), Failure> {
    let mut ap = txn
        .open_table(APPLIED)
        .map_err(|e| Failure::Backend(backend("open applied", e)))?;
    ap.insert(KEY_APPLIED, encode(applied)?.as_slice())
        .map_err(be("write applied"))?;
    Ok(())
}

fn compact_in(
    txn: &WriteTransaction,
    log: &mut Table<'_, u64, &[u8]>,
    next: &mut Cached,
    upto: Index,
) -> Result<(), Failure> {
    if upto <= next.base.index {
        return Err(Failure::Refused(StorageError::Compacted));
    }
    if upto > next.last_index {
        return Err(Failure::Refused(StorageError::Unavailable));
    }
    if upto > next.applied.index {
        return Err(Failure::Refused(invalid(format!(
            "compact to {upto} beyond the applied index {}",
            next.applied.index
        ))));
    }
    let term = term_in(log, next, upto)?;
    log.retain_in(next.base.index + 1..=upto, |_, _| false)
        .map_err(be("compact log"))?;
    next.base = LogBase { index: upto, term };
    if next.last_index == upto {
        next.last_term = term;
    }
    let mut raft = txn
        .open_table(RAFT_STATE)
        .map_err(|e| Failure::Backend(backend("open raft", e)))?;
    raft.insert(KEY_LOG_BASE, encode(&next.base)?.as_slice())
        .map_err(be("write log base"))?;
    Ok(())
}
