//! The durable log behind the core, and an in-memory implementation for tests and simulation.
//!
//! Contract (the same as etcd's `Storage`): the core only *reads* through `LogStorage`; the driver
//! writes what a `Ready` asks it to persist (`append`, `set_hard_state`, `apply_snapshot`) before
//! sending that `Ready`'s messages and calling `advance`. Entries in storage are contiguous from
//! `first_index()` to `last_index()`; everything up to `first_index() - 1` is covered by the
//! snapshot whose metadata `snapshot()` returns.

use std::borrow::Cow;
use std::sync::Arc;

use thiserror::Error;

use crate::types::{ConfState, Entry, HardState, Index, Snapshot, Term};

/// Why a storage read or write failed. `Compacted`, `Unavailable` and
/// `SnapshotTemporarilyUnavailable` are answers the core handles; the others are fatal to the node.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The requested index was compacted into a snapshot.
    #[error("log index compacted")]
    Compacted,
    /// The requested index is past the end of the log.
    #[error("log index unavailable")]
    Unavailable,
    /// A snapshot is being prepared; ask again later.
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// The backing store failed (its engine, the disk under it); the node must stop rather
    /// than continue with unknown state. The cause is kept as the error's source.
    #[error("storage failure: {0}")]
    Backend(#[source] BackendFailure),
    /// Stored bytes that cannot be what was written (a decode failure, a record under the
    /// wrong index); the node must stop.
    #[error("storage failure: corrupt store: {0}")]
    Corrupt(String),
    /// A request that would break the log's invariants (a gap, rewriting what was applied);
    /// nothing was written.
    #[error("storage failure: refused: {0}")]
    Refused(String),
}

/// A backend failure: what was being done, and the engine's error. Shared behind an `Arc` so
/// that [`StorageError`] stays a plain value the core can clone and compare; two failures are
/// equal only if they are the same failure.
#[derive(Debug, Clone)]
pub struct BackendFailure {
    context: Cow<'static, str>,
    cause: Arc<dyn std::error::Error + Send + Sync>,
}

impl BackendFailure {
    /// `cause`, which happened while doing `context` (e.g. "commit", "open log table").
    pub fn new(
        context: impl Into<Cow<'static, str>>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> BackendFailure {
        BackendFailure {
            context: context.into(),
            cause: Arc::from(cause.into()),
        }
    }
}

impl std::fmt::Display for BackendFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.context, self.cause)
    }
}

impl std::error::Error for BackendFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.cause.as_ref())
    }
}

impl PartialEq for BackendFailure {
    fn eq(&self, other: &Self) -> bool {
        self.context == other.context && Arc::ptr_eq(&self.cause, &other.cause)
    }
}

impl Eq for BackendFailure {}

/// Result of a [`LogStorage`] call.
pub type StorageResult<T> = Result<T, StorageError>;

/// The state a node restarts with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitialState {
    /// The persisted term, vote and commit index.
    pub hard_state: HardState,
    /// The membership as of the last applied configuration change or snapshot.
    pub conf_state: ConfState,
}

/// The durable Raft log and hard state behind the core. The core only reads through it; the driver
/// writes what each `Ready` asks for, before sending that `Ready`'s messages (see the module docs).
pub trait LogStorage {
    /// Hard state and membership to restart from.
    fn initial_state(&self) -> StorageResult<InitialState>;
    /// Entries in `[lo, hi)`, stopping early once `max_bytes` is exceeded (but always at least one).
    fn entries(&self, lo: Index, hi: Index, max_bytes: Option<u64>) -> StorageResult<Vec<Entry>>;
    /// Term of the entry at `idx`; `first_index() - 1` answers with the snapshot's term.
    fn term(&self, idx: Index) -> StorageResult<Term>;
    /// Index of the first entry still in the log; the snapshot covers everything before it.
    fn first_index(&self) -> StorageResult<Index>;
    /// Index of the last entry in the log (the snapshot's index when the log is empty).
    fn last_index(&self) -> StorageResult<Index>;
    /// The latest snapshot, used to catch up a follower whose next entry was compacted.
    fn snapshot(&self) -> StorageResult<Snapshot>;

    /// Durably append `entries`, first discarding any stored entries at or after
    /// `entries[0].index` (they conflict with the leader's log).
    fn append(&mut self, entries: &[Entry]) -> StorageResult<()>;
    /// Durably record term, vote and commit index.
    fn set_hard_state(&mut self, hs: &HardState) -> StorageResult<()>;
    /// Durably write a `Ready`'s entries and hard state together. Implementations backed by a
    /// transactional store override this to make it one transaction and one fsync.
    fn persist(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) -> StorageResult<()> {
        self.append(entries)?;
        if let Some(hs) = hard_state {
            self.set_hard_state(hs)?;
        }
        Ok(())
    }
    /// Replace the log with `snapshot`: entries up to its index are dropped, the log restarts after it.
    fn apply_snapshot(&mut self, snapshot: &Snapshot) -> StorageResult<()>;
}

/// An in-memory `LogStorage`. Deterministic and cheap to clone, so the simulator can "persist" by
/// keeping it across a simulated crash.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    /// `entries[0]` is a dummy at `snapshot.meta.index` carrying the snapshot's term.
    entries: Vec<Entry>,
}

impl MemStorage {
    /// An empty log whose membership is `conf` (a node bootstrapping a new cluster, or a test).
    pub fn new(conf: ConfState) -> Self {
        let mut s = MemStorage::default();
        s.snapshot.meta.conf = conf;
        s.entries.push(Entry {
            term: 0,
            index: 0,
            payload: crate::types::EntryPayload::Empty,
        });
        s
    }

    fn offset(&self) -> Index {
        self.entries[0].index
    }

    /// The hard state last written.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Record a snapshot of the state machine at `index` (which must be applied) and discard the
    /// log up to it. `data` is whatever the state machine needs to restore itself.
    pub fn compact(&mut self, index: Index, conf: ConfState, data: Vec<u8>) -> StorageResult<()> {
        if index <= self.offset() {
            return Err(StorageError::Compacted);
        }
        if index > self.last_index()? {
            return Err(StorageError::Unavailable);
        }
        let term = self.term(index)?;
        let cut = (index - self.offset()) as usize;
        self.entries.drain(..cut);
        self.entries[0].payload = crate::types::EntryPayload::Empty;
        self.snapshot = Snapshot {
            meta: crate::types::SnapshotMeta { index, term, conf },
            data,
        };
        Ok(())
    }
}

impl LogStorage for MemStorage {
    fn initial_state(&self) -> StorageResult<InitialState> {
        Ok(InitialState {
            hard_state: self.hard_state,
            conf_state: self.snapshot.meta.conf.clone(),
        })
    }

    fn entries(&self, lo: Index, hi: Index, max_bytes: Option<u64>) -> StorageResult<Vec<Entry>> {
        if lo <= self.offset() {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index()? + 1 {
            return Err(StorageError::Unavailable);
        }
        let off = self.offset();
        let mut out = Vec::new();
        let mut size = 0u64;
        for e in &self.entries[(lo - off) as usize..(hi - off) as usize] {
            size += e.size() as u64;
            if !out.is_empty() && max_bytes.is_some_and(|m| size > m) {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: Index) -> StorageResult<Term> {
        let off = self.offset();
        if idx < off {
            return Err(StorageError::Compacted);
        }
        self.entries
            .get((idx - off) as usize)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable)
    }

    fn first_index(&self) -> StorageResult<Index> {
        Ok(self.offset() + 1)
    }

    fn last_index(&self) -> StorageResult<Index> {
        Ok(self.offset() + self.entries.len() as u64 - 1)
    }

    fn snapshot(&self) -> StorageResult<Snapshot> {
        Ok(self.snapshot.clone())
    }

    fn append(&mut self, entries: &[Entry]) -> StorageResult<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let off = self.offset();
        if first.index <= off {
            // Everything up to the snapshot is already committed and compacted; skip that part.
            let skip = (off + 1 - first.index) as usize;
            if skip >= entries.len() {
                return Ok(());
            }
            return self.append(&entries[skip..]);
        }
        if first.index > self.last_index()? + 1 {
            return Err(StorageError::Refused(format!(
                "append at {} leaves a gap after {}",
                first.index,
                self.last_index()?
            )));
        }
        self.entries.truncate((first.index - off) as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    fn set_hard_state(&mut self, hs: &HardState) -> StorageResult<()> {
        self.hard_state = *hs;
        Ok(())
    }

    fn apply_snapshot(&mut self, snapshot: &Snapshot) -> StorageResult<()> {
        if snapshot.meta.index <= self.offset() {
            return Err(StorageError::Compacted);
        }
        self.snapshot = snapshot.clone();
        self.entries.clear();
        self.entries.push(Entry {
            term: snapshot.meta.term,
            index: snapshot.meta.index,
            payload: crate::types::EntryPayload::Empty,
        });
        if self.hard_state.commit < snapshot.meta.index {
            self.hard_state.commit = snapshot.meta.index;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryPayload;

    fn ent(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            payload: EntryPayload::Normal(vec![index as u8]),
        }
    }

    #[test]
    fn append_truncates_conflicting_suffix() {
        let mut s = MemStorage::new(ConfState::new([1]));
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]).unwrap();
        s.append(&[ent(2, 2)]).unwrap();
        assert_eq!(s.last_index().unwrap(), 2);
        assert_eq!(s.term(2).unwrap(), 2);
        assert!(s.append(&[ent(5, 2)]).is_err());
    }

    #[test]
    fn compact_and_snapshot() {
        let mut s = MemStorage::new(ConfState::new([1]));
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 2)]).unwrap();
        s.compact(2, ConfState::new([1]), b"x".to_vec()).unwrap();
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 1);
        assert_eq!(s.term(1), Err(StorageError::Compacted));
        assert_eq!(s.entries(2, 3, None), Err(StorageError::Compacted));
        assert_eq!(s.entries(3, 4, None).unwrap().len(), 1);
        assert_eq!(s.snapshot().unwrap().meta.index, 2);
    }

    #[test]
    fn entries_respect_max_bytes_but_return_one() {
        let mut s = MemStorage::new(ConfState::new([1]));
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]).unwrap();
        assert_eq!(s.entries(1, 4, Some(1)).unwrap().len(), 1);
        assert_eq!(s.entries(1, 4, None).unwrap().len(), 3);
    }
}
