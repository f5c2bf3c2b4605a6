//! Elections: pre-vote, vote, and the candidate's tally.
//!
//! Pre-vote (Raft thesis §9.6) runs a dry-run election at `term + 1` without bumping our term, so
//! a node that was partitioned away cannot force a live leader to step down when it returns.

use super::{CampaignKind, Raft};
use crate::error::RaftError;
use crate::quorum::VoteResult;
use crate::storage::LogStorage;
use crate::types::*;

impl<S: LogStorage> Raft<S> {
    /// Start an election immediately (used by tests and `RawNode::campaign`).
    pub fn campaign_now(&mut self) -> Result<(), RaftError> {
        if self.role == Role::Leader {
            return Ok(());
        }
        self.campaign(if self.pre_vote {
            CampaignKind::PreElection
        } else {
            CampaignKind::Election
        });
        Ok(())
    }

    pub(crate) fn campaign(&mut self, kind: CampaignKind) {
        if !self.promotable() {
            return;
        }
        // Entries we have not applied could be conf changes that remove us; etcd refuses to
        // campaign then. We only need the simpler rule: a snapshot not yet persisted means our
        // view of membership is in flux.
        if self.log.unstable_snapshot().is_some() {
            return;
        }
        let vote_term = match kind {
            CampaignKind::PreElection => {
                self.become_pre_candidate();
                self.term + 1
            }
            CampaignKind::Election | CampaignKind::Transfer => {
                self.become_candidate();
                self.term
            }
        };
        let id = self.id;
        self.prs.record_vote(id, true);
        if self.prs.tally() == VoteResult::Won {
            // Single voter: won outright.
            match kind {
                CampaignKind::PreElection => self.campaign(CampaignKind::Election),
                _ => self.become_leader(),
            }
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let voters: Vec<NodeId> = self
            .prs
            .conf
            .voters
            .iter()
            .copied()
            .filter(|&v| v != id)
            .collect();
        for to in voters {
            let body = match kind {
                CampaignKind::PreElection => MessageBody::PreVote {
                    last_index,
                    last_term,
                },
                CampaignKind::Election => MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer: false,
                },
                CampaignKind::Transfer => MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer: true,
                },
            };
            self.send_with_term(to, vote_term, body);
        }
    }

    /// Decide a (pre-)vote request at `term` (already `>= self.term`; stickiness already applied).
    pub(crate) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        last_index: Index,
        last_term: Term,
        pre: bool,
    ) {
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre && term > self.term);
        let log_ok =
            self.knobs.skip_log_check_on_vote || self.log.is_up_to_date(last_index, last_term);
        if can_vote && log_ok {
            // Granted replies carry the candidate's term so they count in its election.
            let body = if pre {
                MessageBody::PreVoteResp { reject: false }
            } else {
                MessageBody::VoteResp { reject: false }
            };
            self.send_with_term(from, term, body);
            if !pre {
                self.election_elapsed = 0;
                self.vote = Some(from);
            }
        } else {
            let body = if pre {
                MessageBody::PreVoteResp { reject: true }
            } else {
                MessageBody::VoteResp { reject: true }
            };
            self.send(from, body);
        }
    }

    pub(crate) fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        self.prs.record_vote(from, granted);
        match self.prs.tally() {
            VoteResult::Won => {
                if self.role == Role::PreCandidate {
                    self.campaign(CampaignKind::Election);
                } else {
                    self.become_leader();
                }
            }
            VoteResult::Lost => {
                let term = self.term;
                self.become_follower(term, None);
            }
            VoteResult::Pending => {}
        }
    }
}
