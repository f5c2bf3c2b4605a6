//! Membership changes, one server at a time.
//!
//! Why single-server changes rather than joint consensus: any two configurations that differ by
//! one voter have overlapping majorities, so no moment exists at which two disjoint majorities can
//! each elect a leader or commit — whichever nodes still use the old configuration. That needs
//! two rules, both enforced here: (1) at most one change is in flight — a new one is refused until
//! the previous one is applied (`pending_conf_index`); (2) a new leader proposes no change until it
//! has committed an entry of its own term (the fix Ongaro published for the single-server
//! algorithm: otherwise a change from a deposed leader's term, never committed, could combine with
//! a new one into a two-server step). Joint consensus buys atomic multi-node changes, which an
//! etcd-v2-style member API (add one, remove one) never asks for.
//!
//! A change takes effect on each node when it applies the entry (etcd's rule), so every node's
//! view of membership is a function of its applied log prefix.

use super::Raft;
use crate::error::RaftError;
use crate::storage::LogStorage;
use crate::types::*;

impl<S: LogStorage> Raft<S> {
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if self.lead_transferee.is_some() {
            return Err(RaftError::TransferInProgress);
        }
        if self.pending_conf_index > self.log.applied || !self.committed_in_current_term() {
            return Err(RaftError::ConfChangePending);
        }
        let conf = &self.prs.conf;
        match cc {
            ConfChange::AddVoter(0) | ConfChange::AddLearner(0) => {
                return Err(RaftError::InvalidConfChange("node id 0 is reserved".into()))
            }
            ConfChange::AddLearner(id) if conf.voters.contains(&id) => {
                return Err(RaftError::InvalidConfChange(format!(
                    "{} is a voter; remove it first",
                    crate::ids::Id(id)
                )))
            }
            ConfChange::RemoveNode(id) if !conf.contains(id) => {
                return Err(RaftError::InvalidConfChange(format!(
                    "{} is not a member",
                    crate::ids::Id(id)
                )))
            }
            ConfChange::RemoveNode(id) if conf.voters.len() == 1 && conf.voters.contains(&id) => {
                return Err(RaftError::InvalidConfChange(
                    "cannot remove the last voter".into(),
                ))
            }
            _ => {}
        }
        self.append_entries(vec![EntryPayload::ConfChange(cc)]);
        self.pending_conf_index = self.log.last_index();
        if cc == ConfChange::RemoveNode(self.id) {
            self.removing_self = true;
        }
        Ok(())
    }

    /// Make an applied change effective. Idempotent, so replays after restart are harmless.
    pub(crate) fn apply_conf_change(&mut self, cc: ConfChange) {
        let next = self.log.last_index() + 1;
        let max_inflight = self
            .prs
            .progress
            .get(&self.id)
            .map_or(256, |p| p.inflights_cap());
        self.prs.conf.apply(cc);
        for id in self.prs.conf.all().collect::<Vec<_>>() {
            self.prs
                .progress
                .entry(id)
                .or_insert_with(|| crate::tracker::Progress::new(next, max_inflight));
        }
        if let ConfChange::RemoveNode(id) = cc {
            if id != self.id {
                self.prs.progress.remove(&id);
            }
            if self.lead_transferee == Some(id) {
                self.abort_transfer();
            }
        }
        if self.role != Role::Leader {
            return;
        }
        if !self.prs.is_voter(self.id) {
            // Removed (or demoted): hand the cluster back; a lease must not outlive membership.
            self.lease_events.push(LeaseEvent::Revoked {
                term: self.term,
                reason: LeaseEndReason::Removed,
            });
            self.lease_forbidden = true;
            // Left alone, the others would elect a successor only after an election timeout
            // (leader stickiness refuses every candidate for that long after our last
            // heartbeat), and writes would stop for one to two timeouts. So the remaining voter
            // holding our whole log is told to campaign now (`TimeoutNow`, as in a transfer).
            // Since the removal was proposed nothing was appended after it, so any voter that
            // acknowledged it qualifies. The revocation above goes out first: the driver
            // observes lease events before it sends such messages.
            let last = self.log.last_index();
            let successor = self
                .prs
                .conf
                .voters
                .iter()
                .filter_map(|&v| self.prs.progress.get(&v).map(|p| (p.matched, v)))
                .filter(|&(matched, v)| v != self.id && matched == last)
                .max();
            let term = self.term;
            self.role = Role::Follower; // avoid a second revocation event in become_follower
            self.become_follower(term, None);
            if let Some((_, to)) = successor {
                self.send(to, MessageBody::TimeoutNow);
            }
            return;
        }
        // Acknowledgements gathered under the old membership say nothing about a majority of the
        // new one (two successive single-server changes can make them disjoint): start over.
        self.lease_events.push(LeaseEvent::Revoked {
            term: self.term,
            reason: LeaseEndReason::MembershipChange,
        });
        if self.maybe_commit() {
            self.on_commit_advanced();
        }
        self.broadcast_append();
    }
}
