//! The leader's view of the cluster: membership plus one `Progress` per member, and vote tallies.

pub mod inflights;
pub mod progress;

use std::collections::BTreeMap;

pub use progress::{Progress, ProgressState};

use crate::quorum;
use crate::status::{PeerProgress, ReplicationState};
use crate::types::{ConfState, Index, NodeId};

pub struct ProgressTracker {
    pub conf: ConfState,
    pub progress: BTreeMap<NodeId, Progress>,
    pub votes: BTreeMap<NodeId, bool>,
    max_inflight: usize,
}

impl ProgressTracker {
    pub fn new(conf: ConfState, max_inflight: usize) -> Self {
        let mut t = ProgressTracker {
            conf,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            max_inflight,
        };
        t.reset_progress(1, 0, 0);
        t
    }

    /// Fresh progress for every member: `next = last_index + 1`, and `self_id` matching its own log.
    pub fn reset_progress(&mut self, next: Index, self_id: NodeId, self_match: Index) {
        self.progress.clear();
        for id in self.conf.all().collect::<Vec<_>>() {
            let mut p = Progress::new(next, self.max_inflight);
            if id == self_id {
                p.matched = self_match;
                p.recent_active = true;
                p.idle_ticks = 0;
            }
            self.progress.insert(id, p);
        }
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.conf.voters.contains(&id)
    }

    pub fn is_singleton_voter(&self, id: NodeId) -> bool {
        self.conf.voters.len() == 1 && self.conf.voters.contains(&id)
    }

    /// The highest index replicated on a majority of voters.
    pub fn committed_index(&self) -> Index {
        quorum::majority_value(
            self.conf
                .voters
                .iter()
                .map(|id| self.progress.get(id).map_or(0, |p| p.matched)),
        )
    }

    /// The highest heartbeat round acknowledged by a majority of voters; the leader counts as
    /// having acknowledged `own_round`.
    pub fn acked_round(&self, self_id: NodeId, own_round: u64) -> u64 {
        quorum::majority_value(self.conf.voters.iter().map(|id| {
            if *id == self_id {
                own_round
            } else {
                self.progress.get(id).map_or(0, |p| p.acked_round)
            }
        }))
    }

    pub fn record_vote(&mut self, id: NodeId, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    pub fn tally(&self) -> quorum::VoteResult {
        quorum::vote_result(&self.conf.voters, &self.votes)
    }

    /// Every member's progress as `Status` reports it; a member counts as active when heard from
    /// within `active_window` ticks, and `leader` (whose entry is its own log) always does.
    pub fn view(&self, leader: NodeId, active_window: usize) -> BTreeMap<NodeId, PeerProgress> {
        self.progress
            .iter()
            .map(|(&id, p)| {
                let state = match p.state {
                    _ if id == leader => ReplicationState::Replicate,
                    ProgressState::Probe => ReplicationState::Probe,
                    ProgressState::Replicate => ReplicationState::Replicate,
                    ProgressState::Snapshot { .. } => ReplicationState::Snapshot,
                };
                let view = PeerProgress {
                    matched: p.matched,
                    next: p.next,
                    state,
                    active: id == leader || p.idle_ticks < active_window,
                };
                (id, view)
            })
            .collect()
    }

    /// True when a majority of voters was heard from in the current check-quorum period.
    pub fn quorum_active(&self) -> bool {
        let active = self
            .conf
            .voters
            .iter()
            .filter(|id| self.progress.get(id).is_some_and(|p| p.recent_active))
            .count();
        active >= quorum::majority(self.conf.voters.len())
    }
}
