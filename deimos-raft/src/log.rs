//! The Raft log as the core sees it: durable entries behind `LogStorage` plus the unstable tail
//! (appended in memory, handed to the driver in `Ready`, durable after `advance`).
//!
//! Invariants: `applied <= committed <= last_index()`; unstable entries, when present, start at
//! `unstable_offset` and are contiguous with storage (a conflict truncates into them or replaces
//! them, never leaves a gap).

use crate::storage::{LogStorage, StorageError, StorageResult};
use crate::types::{Entry, Index, Snapshot, Term};

/// An append the log refuses rather than corrupt itself. The core validates messages first
/// (`core/validate.rs`), so these are a second line of defence, not a normal outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendRefused {
    /// An entry differs from one already committed here.
    ConflictsWithCommitted,
    /// The entries are not `prev_index + 1, + 2, ...`.
    NotContiguous,
}

pub struct RaftLog<S: LogStorage> {
    storage: S,
    /// A snapshot received from the leader and not yet persisted.
    unstable_snapshot: Option<Snapshot>,
    /// `unstable[i].index == unstable_offset + i`.
    unstable: Vec<Entry>,
    unstable_offset: Index,
    pub committed: Index,
    /// Highest index handed to the application (in a `Ready`) — the next `Ready` starts after it.
    pub applying: Index,
    /// Highest index the application has acknowledged applying (at `advance`).
    pub applied: Index,
}

impl<S: LogStorage> RaftLog<S> {
    pub fn new(storage: S, committed: Index, applied: Index) -> StorageResult<Self> {
        let first = storage.first_index()?;
        let last = storage.last_index()?;
        // Whatever the state machine applied was committed, even if the commit index on disk
        // lags (it is written without an fsync): raise commit rather than lower applied, since
        // re-delivering applied entries to a state machine that is not idempotent corrupts it.
        let applied = applied.max(first - 1).min(last);
        let committed = committed.max(applied).min(last.max(first - 1));
        Ok(RaftLog {
            storage,
            unstable_snapshot: None,
            unstable: Vec::new(),
            unstable_offset: last + 1,
            committed,
            applying: applied,
            applied,
        })
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    pub fn first_index(&self) -> Index {
        match &self.unstable_snapshot {
            Some(s) => s.meta.index + 1,
            None => self.storage.first_index().unwrap_or(1),
        }
    }

    pub fn last_index(&self) -> Index {
        if let Some(e) = self.unstable.last() {
            return e.index;
        }
        if let Some(s) = &self.unstable_snapshot {
            return s.meta.index;
        }
        self.storage.last_index().unwrap_or(0)
    }

    pub fn last_term(&self) -> Term {
        self.term(self.last_index()).unwrap_or(0)
    }

    pub fn term(&self, idx: Index) -> StorageResult<Term> {
        if idx >= self.unstable_offset {
            let off = (idx - self.unstable_offset) as usize;
            return self
                .unstable
                .get(off)
                .map(|e| e.term)
                .ok_or(StorageError::Unavailable);
        }
        if let Some(s) = &self.unstable_snapshot {
            if idx == s.meta.index {
                return Ok(s.meta.term);
            }
            if idx < s.meta.index {
                return Err(StorageError::Compacted);
            }
            // Between the snapshot and the unstable offset there is nothing.
            return Err(StorageError::Unavailable);
        }
        if idx == 0 {
            return Ok(0);
        }
        self.storage.term(idx)
    }

    pub fn match_term(&self, idx: Index, term: Term) -> bool {
        self.term(idx).is_ok_and(|t| t == term)
    }

    /// Raft's "at least as up-to-date" comparison (§5.4.1).
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// Entries in `[lo, hi)` with a soft byte limit; reads storage then the unstable tail.
    pub fn slice(&self, lo: Index, hi: Index, max_bytes: Option<u64>) -> StorageResult<Vec<Entry>> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        if lo < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        let mut out = Vec::new();
        if lo < self.unstable_offset {
            let stored_hi = hi.min(self.unstable_offset);
            out = self.storage.entries(lo, stored_hi, max_bytes)?;
            if (out.len() as u64) < stored_hi - lo {
                return Ok(out); // byte limit reached inside storage
            }
        }
        if hi > self.unstable_offset {
            let from = lo.max(self.unstable_offset);
            let mut size: u64 = out.iter().map(|e| e.size() as u64).sum();
            for e in &self.unstable
                [(from - self.unstable_offset) as usize..(hi - self.unstable_offset) as usize]
            {
                size += e.size() as u64;
                if !out.is_empty() && max_bytes.is_some_and(|m| size > m) {
                    break;
                }
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    /// Append entries that follow (or overwrite part of) the log; returns the new last index.
    pub fn append(&mut self, entries: &[Entry]) -> Index {
        let Some(first) = entries.first() else {
            return self.last_index();
        };
        assert!(
            first.index > self.committed,
            "cannot overwrite committed entry {}",
            first.index
        );
        let after = first.index;
        if after == self.unstable_offset + self.unstable.len() as u64 {
            // Plain extension of the tail.
        } else if after <= self.unstable_offset {
            // Replaces the unstable tail entirely (and truncates storage when persisted).
            self.unstable_offset = after;
            self.unstable.clear();
        } else {
            self.unstable
                .truncate((after - self.unstable_offset) as usize);
        }
        self.unstable.extend_from_slice(entries);
        self.last_index()
    }

    /// The first index in `entries` whose term differs from ours, or that we lack; 0 if none.
    pub fn find_conflict(&self, entries: &[Entry]) -> Index {
        for e in entries {
            if !self.match_term(e.index, e.term) {
                return e.index;
            }
        }
        0
    }

    /// The largest index `<= index` whose term is `<= term` (fast back-off); compacted or unknown
    /// terms stop the search there.
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut i = index;
        loop {
            match self.term(i) {
                Ok(t) if t > term && i > 0 => i -= 1,
                Ok(t) => return (i, t),
                Err(_) => return (i, 0),
            }
        }
    }

    /// Follower side of AppendEntries: if our log matches at `(prev_index, prev_term)`, append the
    /// new part of `entries` and advance commit; returns the last index now known to match.
    pub fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        commit: Index,
        entries: &[Entry],
    ) -> Result<Option<Index>, AppendRefused> {
        if !self.match_term(prev_index, prev_term) {
            return Ok(None);
        }
        if entries
            .iter()
            .zip(prev_index.saturating_add(1)..)
            .any(|(e, want)| e.index != want)
        {
            return Err(AppendRefused::NotContiguous);
        }
        let last_new = prev_index
            .checked_add(entries.len() as u64)
            .ok_or(AppendRefused::NotContiguous)?;
        let ci = self.find_conflict(entries);
        if ci != 0 {
            if ci <= self.committed {
                return Err(AppendRefused::ConflictsWithCommitted);
            }
            // `ci` is one of the entries' indexes, all in `prev_index + 1..=last_new`.
            let start = (ci - prev_index - 1) as usize;
            self.append(&entries[start..]);
        }
        self.commit_to(commit.min(last_new));
        Ok(Some(last_new))
    }

    pub fn commit_to(&mut self, idx: Index) {
        if idx > self.committed {
            assert!(
                idx <= self.last_index(),
                "commit {idx} beyond last index {}",
                self.last_index()
            );
            self.committed = idx;
        }
    }

    /// Leader side: commit `idx` if it carries the leader's `term` (the current-term rule,
    /// §5.4.2) — unless the test-only knob deliberately weakens it.
    pub fn maybe_commit(&mut self, idx: Index, term: Term, weaken: bool) -> bool {
        if idx > self.committed && (weaken || self.term(idx).is_ok_and(|t| t == term)) {
            self.commit_to(idx);
            return true;
        }
        false
    }

    pub fn has_next_committed(&self) -> bool {
        self.committed > self.applying
    }

    /// Committed entries not yet handed to the application; marks them as being applied.
    pub fn take_next_committed(&mut self, max_bytes: Option<u64>) -> Vec<Entry> {
        if !self.has_next_committed() {
            return Vec::new();
        }
        let lo = (self.applying + 1).max(self.first_index());
        match self.slice(lo, self.committed + 1, max_bytes) {
            Ok(ents) => {
                if let Some(e) = ents.last() {
                    self.applying = e.index;
                }
                ents
            }
            Err(_) => Vec::new(),
        }
    }

    pub fn unstable_entries(&self) -> &[Entry] {
        &self.unstable
    }

    pub fn unstable_snapshot(&self) -> Option<&Snapshot> {
        self.unstable_snapshot.as_ref()
    }

    /// The driver persisted entries up to `(idx, term)`: drop them from the unstable tail unless
    /// they were replaced meanwhile.
    pub fn stable_to(&mut self, idx: Index, term: Term) {
        if idx < self.unstable_offset || !self.match_term(idx, term) {
            return;
        }
        let n = (idx + 1 - self.unstable_offset) as usize;
        if n <= self.unstable.len() {
            self.unstable.drain(..n);
            self.unstable_offset = idx + 1;
        }
    }

    pub fn stable_snap_to(&mut self, idx: Index) {
        if self
            .unstable_snapshot
            .as_ref()
            .is_some_and(|s| s.meta.index == idx)
        {
            self.unstable_snapshot = None;
        }
    }

    pub fn applied_to(&mut self, idx: Index) {
        if idx > self.applied {
            self.applied = idx.min(self.committed);
        }
    }

    /// Replace the log with a snapshot from the leader.
    pub fn restore(&mut self, snap: Snapshot) {
        let idx = snap.meta.index;
        self.committed = idx;
        self.applying = idx;
        self.applied = idx;
        self.unstable.clear();
        self.unstable_offset = idx + 1;
        self.unstable_snapshot = Some(snap);
    }

    /// The snapshot to send a lagging follower.
    pub fn snapshot(&self) -> StorageResult<Snapshot> {
        match &self.unstable_snapshot {
            Some(s) => Ok(s.clone()),
            None => self.storage.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use crate::types::{ConfState, EntryPayload};

    fn ent(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            payload: EntryPayload::Empty,
        }
    }

    fn log_with(terms: &[Term]) -> RaftLog<MemStorage> {
        let mut s = MemStorage::new(ConfState::new([1]));
        let ents: Vec<_> = terms
            .iter()
            .enumerate()
            .map(|(i, t)| ent(i as u64 + 1, *t))
            .collect();
        s.append(&ents).unwrap();
        RaftLog::new(s, 0, 0).unwrap()
    }

    #[test]
    fn maybe_append_truncates_conflict_and_commits_up_to_last_new() {
        let mut l = log_with(&[1, 1, 2]);
        assert_eq!(
            l.maybe_append(1, 1, 5, &[ent(2, 1), ent(3, 3)]),
            Ok(Some(3))
        );
        assert_eq!(l.term(3).unwrap(), 3);
        assert_eq!(l.committed, 3);
        assert_eq!(l.maybe_append(3, 2, 5, &[]), Ok(None));
    }

    #[test]
    fn maybe_append_refuses_what_would_corrupt_the_log() {
        let mut l = log_with(&[1, 1, 2]);
        l.commit_to(2);
        assert_eq!(
            l.maybe_append(1, 1, 3, &[ent(2, 3)]),
            Err(AppendRefused::ConflictsWithCommitted)
        );
        assert_eq!(l.term(2).unwrap(), 1, "the committed entry is intact");
        assert_eq!(
            l.maybe_append(1, 1, 3, &[ent(5, 3)]),
            Err(AppendRefused::NotContiguous)
        );
        assert_eq!(
            l.maybe_append(u64::MAX, 1, 3, &[ent(0, 1)]),
            Ok(None),
            "an index we lack never matches"
        );
        assert_eq!(l.last_index(), 3);
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let l = log_with(&[1, 1, 2, 2, 4, 4]);
        assert_eq!(l.find_conflict_by_term(6, 3), (4, 2));
        assert_eq!(l.find_conflict_by_term(6, 4), (6, 4));
        assert_eq!(l.find_conflict_by_term(6, 0), (0, 0));
    }

    #[test]
    fn up_to_date_compares_term_then_index() {
        let l = log_with(&[1, 2]);
        assert!(l.is_up_to_date(1, 3));
        assert!(l.is_up_to_date(2, 2));
        assert!(!l.is_up_to_date(5, 1));
        assert!(!l.is_up_to_date(1, 2));
    }

    #[test]
    fn slice_spans_storage_and_unstable() {
        let mut l = log_with(&[1, 1]);
        l.append(&[ent(3, 2), ent(4, 2)]);
        let s = l.slice(2, 5, None).unwrap();
        assert_eq!(s.iter().map(|e| e.index).collect::<Vec<_>>(), vec![2, 3, 4]);
        l.stable_to(4, 2);
        assert!(l.unstable_entries().is_empty());
    }

    #[test]
    fn current_term_commit_rule() {
        let mut l = log_with(&[1, 1, 2]);
        assert!(!l.maybe_commit(2, 2, false));
        assert!(l.maybe_commit(2, 2, true));
        assert!(l.maybe_commit(3, 2, false));
    }

    #[test]
    fn restart_never_redelivers_applied_entries() {
        let mut s = MemStorage::new(ConfState::new([1]));
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]).unwrap();
        // Commit on disk (1) lags the applied state (3).
        let l = RaftLog::new(s, 1, 3).unwrap();
        assert_eq!((l.committed, l.applied), (3, 3));
        assert!(!l.has_next_committed());
    }

    #[test]
    fn restore_resets_to_snapshot() {
        let mut l = log_with(&[1, 1]);
        let mut snap = Snapshot::default();
        snap.meta.index = 10;
        snap.meta.term = 3;
        l.restore(snap);
        assert_eq!(l.last_index(), 10);
        assert_eq!(l.first_index(), 11);
        assert_eq!(l.term(10).unwrap(), 3);
        assert_eq!(l.committed, 10);
    }
}
