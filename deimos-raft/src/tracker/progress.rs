//! What the leader knows about one follower's log.
//!
//! States (etcd's): `Probe` — we don't know where the follower's log diverges; send one append at
//! a time and wait. `Replicate` — the follower is in sync; pipeline appends up to the in-flight
//! window and advance `next` optimistically. `Snapshot` — a snapshot is on its way; send nothing
//! until it is acknowledged (or given up on).

use super::inflights::Inflights;
use crate::types::Index;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    Probe,
    Replicate,
    Snapshot { pending: Index },
}

#[derive(Debug, Clone)]
pub struct Progress {
    /// Highest index known to be replicated on the follower. Invariant: `matched < next`.
    pub matched: Index,
    pub next: Index,
    pub state: ProgressState,
    /// In `Probe`, an append was sent and we wait for its answer (or a heartbeat answer).
    pub probe_sent: bool,
    pub inflights: Inflights,
    /// Heard from within the current check-quorum period.
    pub recent_active: bool,
    /// Leader ticks since this peer was last heard from; `usize::MAX` until it answers this
    /// leader at all. A sliding window, unlike `recent_active`, which check-quorum clears at
    /// every election timeout: a reconfiguration check made just after that reset would see
    /// every live peer as down.
    pub idle_ticks: usize,
    /// Latest heartbeat round the follower acknowledged in this term.
    pub acked_round: u64,
    /// Leader ticks spent in `Snapshot` state; a snapshot lost on the way is retried after an
    /// election timeout.
    pub snapshot_ticks: usize,
    /// Highest log index this leader has offered the follower in this term (the end of an
    /// append, or a snapshot's index). No acknowledgement may move `matched` past it: the
    /// follower cannot hold entries it was never sent. (A fresh `Progress` per leader term.)
    pub sent: Index,
}

impl Progress {
    pub fn new(next: Index, max_inflight: usize) -> Self {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(max_inflight),
            recent_active: false,
            idle_ticks: usize::MAX,
            acked_round: 0,
            snapshot_ticks: 0,
            sent: 0,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.state = state;
        self.inflights.reset();
        self.snapshot_ticks = 0;
    }

    pub fn become_probe(&mut self) {
        if let ProgressState::Snapshot { pending } = self.state {
            self.reset_state(ProgressState::Probe);
            self.next = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next = self.matched + 1;
        }
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    pub fn become_snapshot(&mut self, pending: Index) {
        self.reset_state(ProgressState::Snapshot { pending });
    }

    /// A successful append response for `n`; false if it was stale.
    pub fn maybe_update(&mut self, n: Index) -> bool {
        let updated = n > self.matched;
        if updated {
            self.matched = n;
            self.probe_sent = false;
        }
        self.next = self.next.max(n + 1);
        updated
    }

    /// We sent entries up to `last` while replicating: assume they arrive.
    pub fn optimistic_update(&mut self, last: Index) {
        self.next = last + 1;
    }

    /// A rejection of an append at `rejected`; `match_hint` is the highest index that may match.
    /// Returns false when the rejection is stale (answers an older message).
    pub fn maybe_decr_to(&mut self, rejected: Index, match_hint: Index) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        if self.next == 0 || self.next - 1 != rejected {
            return false;
        }
        self.next = rejected.min(match_hint + 1).max(self.matched + 1);
        self.probe_sent = false;
        true
    }

    pub fn inflights_cap(&self) -> usize {
        self.inflights.cap()
    }

    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot { .. } => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_backs_off_to_hint_but_not_below_match() {
        let mut p = Progress::new(10, 4);
        p.matched = 3;
        assert!(p.maybe_decr_to(9, 5));
        assert_eq!(p.next, 6);
        // stale rejection
        assert!(!p.maybe_decr_to(9, 5));
        assert!(p.maybe_decr_to(5, 0));
        assert_eq!(p.next, 4);
    }

    #[test]
    fn replicate_rejection_returns_to_match() {
        let mut p = Progress::new(10, 4);
        p.matched = 7;
        p.become_replicate();
        p.optimistic_update(12);
        assert!(!p.maybe_decr_to(6, 0));
        assert!(p.maybe_decr_to(9, 0));
        assert_eq!(p.next, 8);
    }

    #[test]
    fn snapshot_state_pauses_and_probe_resumes_after_it() {
        let mut p = Progress::new(5, 4);
        p.become_snapshot(20);
        assert!(p.is_paused());
        p.become_probe();
        assert_eq!(p.next, 21);
        assert!(!p.is_paused());
    }
}
