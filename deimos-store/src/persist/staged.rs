//! Writes that need no fsync, held in memory until a transaction carries them.
//!
//! Two kinds of write are recoverable after a crash and so never need to be durable on their
//! own: a change of the commit index alone (the leader tells us again) and the state machine's
//! applied records (Raft re-applies them from the durable log). Written as redb transactions
//! with `Durability::None` they still cost a full copy-on-write commit each — two of the three
//! transactions a leader ran per write. Nor should they ride in every log append: their pages
//! (records table leaves, applied state, hard state) roughly doubled what each durable commit
//! wrote and fsynced (strace: 14 pages per append before, 7 after), and that fsync is what every
//! write waits for. So they are staged here, merged (the latest value per key wins), and written
//! when they are due — past [`MAX_BYTES`] or older than [`MAX_AGE`] — by a background
//! checkpoint (see `checkpoint`; without an fsync if no log entries go with them), and always
//! with any other transaction (a compaction, a snapshot install, an explicit `write_staged`) or
//! when the store is dropped. A transaction
//! that sets the hard state takes the staged one with it, superseded, so an older commit index
//! can never overwrite a newer durable hard state.
//!
//! Invariants: the cache (`hard_state`, `applied`) already shows the staged values, and they
//! were checked against it when staged, so every caller sees one consistent state. Reads of the
//! records table (`records`, `record`, snapshots) see the last *written* state with its own
//! applied index, which is consistent too: a snapshot may be a little older, and the log is
//! never compacted past what was written, so it continues from there.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deimos_raft::types::HardState;

use super::schema::AppliedState;

/// Staged bytes (keys + values) that trigger a write of their own.
pub(crate) const MAX_BYTES: usize = 4 << 20;
/// Staged writes older than this are written at the next opportunity (`persist` is called for
/// every Raft `Ready`, so at least every tick).
pub(crate) const MAX_AGE: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(crate) struct Staged {
    pub hard_state: Option<HardState>,
    pub applied: Option<AppliedState>,
    pub records: BTreeMap<String, Option<Vec<u8>>>,
    bytes: usize,
    since: Option<Instant>,
}

impl Staged {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none() && self.applied.is_none()
    }

    pub fn stage_hard_state(&mut self, hs: HardState) {
        self.hard_state = Some(hs);
        self.since.get_or_insert_with(Instant::now);
    }

    pub fn stage_applied(
        &mut self,
        applied: AppliedState,
        mutations: &[(String, Option<Vec<u8>>)],
    ) {
        for (k, v) in mutations {
            self.bytes += k.len() + v.as_ref().map_or(0, Vec::len);
            self.records.insert(k.clone(), v.clone());
        }
        self.applied = Some(applied);
        self.since.get_or_insert_with(Instant::now);
    }

    /// Whether the staged writes should be written now rather than with the next transaction.
    pub fn due(&self) -> bool {
        !self.is_empty()
            && (self.bytes >= MAX_BYTES || self.since.is_some_and(|t| t.elapsed() >= MAX_AGE))
    }

    /// Everything staged, leaving this empty (see [`restore`](Self::restore) for a failed write).
    pub fn take(&mut self) -> Staged {
        std::mem::take(self)
    }

    /// Only the staged hard state, leaving the records staged (see [`restore`](Self::restore)).
    pub fn take_hard_state(&mut self) -> Staged {
        Staged {
            hard_state: self.hard_state.take(),
            ..Staged::default()
        }
    }

    /// Put back what [`take`](Self::take) returned when the transaction carrying it failed;
    /// anything staged since is newer and wins.
    pub fn restore(&mut self, mut older: Staged) {
        if self.hard_state.is_none() {
            self.hard_state = older.hard_state;
        }
        if self.applied.is_none() {
            self.applied = older.applied.take();
        }
        for (k, v) in std::mem::take(&mut self.records) {
            older.records.insert(k, v);
        }
        self.records = older.records;
        self.bytes += older.bytes;
        self.since = match (older.since, self.since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deimos_raft::types::ConfState;

    fn applied(index: u64) -> AppliedState {
        AppliedState {
            index,
            term: 1,
            conf: ConfState::new([1]),
        }
    }

    #[test]
    fn latest_value_per_key_wins_and_restore_keeps_newer_writes() {
        let mut s = Staged::default();
        assert!(s.is_empty() && !s.due());
        s.stage_applied(applied(1), &[("a".into(), Some(b"1".to_vec()))]);
        s.stage_applied(
            applied(2),
            &[("a".into(), None), ("b".into(), Some(b"2".to_vec()))],
        );
        assert_eq!(s.records.get("a"), Some(&None));
        assert_eq!(s.applied.as_ref().map(|a| a.index), Some(2));
        let older = s.take();
        assert!(s.is_empty());
        // A write staged while the older batch was in a failed transaction stays the newest.
        s.stage_applied(applied(3), &[("b".into(), Some(b"3".to_vec()))]);
        s.restore(older);
        assert_eq!(s.applied.as_ref().map(|a| a.index), Some(3));
        assert_eq!(s.records.get("a"), Some(&None));
        assert_eq!(s.records.get("b"), Some(&Some(b"3".to_vec())));
    }

    #[test]
    fn large_batches_are_due_at_once() {
        let mut s = Staged::default();
        s.stage_applied(applied(1), &[("k".into(), Some(vec![0; MAX_BYTES]))]);
        assert!(s.due());
    }
}
