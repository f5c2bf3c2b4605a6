//! Heartbeat rounds, ReadIndex, and the facts the lease service is built on.
//!
//! Every heartbeat the leader sends belongs to a numbered *round* of its term. A follower echoes
//! the round; when a quorum of voters (the leader included) has echoed round `r` or later, every
//! one of them received a heartbeat sent no earlier than round `r` was, and — by leader
//! stickiness — will not help elect another leader for a minimum election timeout after that.
//! That one fact serves both linearizable reads:
//! * ReadIndex: a read that arrived before round `r` was sent is confirmed by a quorum ack of `r`.
//! * Lease: the driver stamps the send time of round `r`; a quorum ack of `r` extends the lease
//!   to `sent_at(r) + lease_duration` (see `lease/mod.rs`).

use super::{PendingRead, Raft};
use crate::error::RaftError;
use crate::storage::LogStorage;
use crate::types::*;

impl<S: LogStorage> Raft<S> {
    /// Send heartbeat round `self.round + 1` to every member.
    pub(crate) fn broadcast_heartbeat_round(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        self.round += 1;
        self.round_needed = false;
        let (term, round) = (self.term, self.round);
        self.lease_events
            .push(LeaseEvent::RoundSent { term, round });
        for to in self.peers() {
            let matched = self.prs.progress.get(&to).map_or(0, |p| p.matched);
            // Never tell a follower to commit beyond what it is known to hold.
            let commit = matched.min(self.log.committed);
            self.send(to, MessageBody::Heartbeat { commit, round });
        }
        self.check_quorum_round();
    }

    pub(crate) fn handle_heartbeat(&mut self, from: NodeId, commit: Index, round: u64) {
        self.log.commit_to(commit.min(self.log.last_index()));
        self.send(from, MessageBody::HeartbeatResp { round });
    }

    pub(crate) fn handle_heartbeat_response(&mut self, from: NodeId, round: u64) {
        let last = self.log.last_index();
        let Some(pr) = self.prs.progress.get_mut(&from) else {
            return;
        };
        pr.acked_round = pr.acked_round.max(round);
        pr.probe_sent = false;
        if pr.state == crate::tracker::ProgressState::Replicate && pr.inflights.full() {
            pr.inflights.free_first_one();
        }
        if pr.matched < last {
            self.maybe_send_append(from, true);
        }
        self.check_quorum_round();
    }

    /// Release reads and report lease acknowledgements once a quorum has answered a later round.
    fn check_quorum_round(&mut self) {
        let q = self.prs.acked_round(self.id, self.round);
        if q <= self.quorum_round {
            return;
        }
        self.quorum_round = q;
        if !self.lease_forbidden && self.prs.is_voter(self.id) {
            self.lease_events.push(LeaseEvent::RoundAcked {
                term: self.term,
                round: q,
            });
        }
        while self.pending_reads.front().is_some_and(|r| r.round <= q) {
            let r = self.pending_reads.pop_front().expect("checked");
            self.answer_read(r.ctx, r.from, r.index);
        }
    }

    fn answer_read(&mut self, ctx: Vec<u8>, from: NodeId, index: Index) {
        if from == self.id {
            self.read_states.push(ReadState { index, ctx });
        } else {
            self.send(from, MessageBody::ReadIndexResp { ctx, index });
        }
    }

    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), RaftError> {
        if self.role == Role::Leader {
            let id = self.id;
            self.handle_read_index(ctx, id);
            return Ok(());
        }
        match self.leader {
            Some(l) => {
                self.send(l, MessageBody::ReadIndex { ctx });
                Ok(())
            }
            None => Err(RaftError::NotLeader { leader: None }),
        }
    }

    pub(crate) fn handle_read_index(&mut self, ctx: Vec<u8>, from: NodeId) {
        if !self.committed_in_current_term() {
            // Our commit index may be behind entries committed by earlier leaders.
            self.reads_awaiting_commit.push((ctx, from));
            return;
        }
        let index = self.log.committed;
        if self.prs.is_singleton_voter(self.id) {
            self.answer_read(ctx, from, index);
            return;
        }
        self.pending_reads.push_back(PendingRead {
            ctx,
            from,
            index,
            round: self.round + 1,
        });
        self.round_needed = true;
    }

    pub(crate) fn committed_in_current_term(&self) -> bool {
        self.log
            .term(self.log.committed)
            .is_ok_and(|t| t == self.term)
    }

    pub(crate) fn on_commit_advanced(&mut self) {
        if self.role != Role::Leader
            || self.term_commit_reported
            || !self.committed_in_current_term()
        {
            return;
        }
        self.term_commit_reported = true;
        let (term, index) = (self.term, self.log.committed);
        self.lease_events
            .push(LeaseEvent::TermCommitted { term, index });
        for (ctx, from) in std::mem::take(&mut self.reads_awaiting_commit) {
            self.handle_read_index(ctx, from);
        }
    }
}
