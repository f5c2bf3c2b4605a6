//! The Raft state machine. One handler module per concern, like openraft's engine:
//! `election` (pre-vote, vote, campaign), `replication` (append, commit, snapshots),
//! `heartbeat` (rounds, ReadIndex, lease facts), `membership` (conf changes), `transfer`
//! (leader transfer). This file holds the shared state, the step dispatcher (term rules) and
//! the `Ready`/`advance` bookkeeping.

mod election;
mod heartbeat;
mod membership;
mod ready;
mod replication;
mod transfer;
mod validate;

pub use validate::{Refusal, RefusalCounts, MAX_INDEX, MAX_READ_CTX, MAX_TERM};

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{Config, UnsafeKnobs};
use crate::error::RaftError;
use crate::log::RaftLog;
use crate::storage::LogStorage;
use crate::tracker::ProgressTracker;
use crate::types::*;

/// A linearizable read waiting for leadership confirmation.
#[derive(Debug, Clone)]
pub(crate) struct PendingRead {
    pub ctx: Vec<u8>,
    /// Who asked: this node, or a follower that forwarded the request.
    pub from: NodeId,
    pub index: Index,
    /// The first heartbeat round sent after the request; a quorum acknowledging it confirms that
    /// we were still leader when the request arrived.
    pub round: u64,
}

pub struct Raft<S: LogStorage> {
    pub id: NodeId,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub role: Role,
    pub leader: Option<NodeId>,
    pub(crate) log: RaftLog<S>,
    pub(crate) prs: ProgressTracker,
    msgs: Vec<Message>,

    election_elapsed: usize,
    heartbeat_elapsed: usize,
    randomized_election_timeout: usize,
    election_tick: usize,
    heartbeat_tick: usize,
    rng: StdRng,

    pre_vote: bool,
    check_quorum: bool,
    forward_proposals: bool,
    max_msg_size: u64,
    knobs: UnsafeKnobs,
    /// A node that just started does not know whether a leader it acknowledged before the restart
    /// still counts on it (the lease!); it grants no votes until an election timeout has passed.
    startup_quiet: bool,

    /// Index of the last conf change appended by this leader; no new one until it is applied.
    pending_conf_index: Index,
    lead_transferee: Option<NodeId>,
    /// This leader proposed its own removal: it takes no more proposals, so that once the
    /// removal applies a follower that acknowledged it holds the whole log and can take over at
    /// once (see `apply_conf_change`).
    removing_self: bool,
    /// Once a transfer started in this term, no lease may be (re)acquired in it: a `TimeoutNow`
    /// still in flight can start an election that ignores leader stickiness.
    lease_forbidden: bool,

    /// Heartbeat rounds of this term (0 = none sent yet).
    round: u64,
    /// Highest round a quorum acknowledged.
    quorum_round: u64,
    /// A read arrived after the last round was sent; send one at the next `ready()`.
    round_needed: bool,
    pending_reads: VecDeque<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its term.
    reads_awaiting_commit: Vec<(Vec<u8>, NodeId)>,
    term_commit_reported: bool,

    read_states: Vec<ReadState>,
    lease_events: Vec<LeaseEvent>,

    prev_soft: SoftState,
    prev_hard: HardState,
    /// What the outstanding `Ready` handed out, applied at `advance()`.
    in_ready: Option<InReady>,
    /// Peer messages dropped by `validate`, by reason.
    refused: RefusalCounts,
}

struct InReady {
    snapshot_index: Option<Index>,
    last_entry: Option<(Index, Term)>,
    applied_to: Index,
    conf_changes: Vec<ConfChange>,
}

impl<S: LogStorage> Raft<S> {
    pub fn new(cfg: &Config, storage: S) -> Result<Self, RaftError> {
        cfg.validate()?;
        let init = storage.initial_state()?;
        let hs = init.hard_state;
        let log = RaftLog::new(storage, hs.commit, cfg.applied)?;
        let mut r = Raft {
            id: cfg.id,
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: None,
            prs: ProgressTracker::new(init.conf_state, cfg.max_inflight_msgs),
            log,
            msgs: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: cfg.election_tick,
            election_tick: cfg.election_tick,
            heartbeat_tick: cfg.heartbeat_tick,
            rng: StdRng::seed_from_u64(cfg.seed ^ cfg.id.rotate_left(17)),
            pre_vote: cfg.pre_vote,
            check_quorum: cfg.check_quorum,
            forward_proposals: cfg.forward_proposals,
            max_msg_size: cfg.max_size_per_msg,
            knobs: cfg.unsafe_knobs,
            startup_quiet: true,
            pending_conf_index: 0,
            lead_transferee: None,
            removing_self: false,
            lease_forbidden: false,
            round: 0,
            quorum_round: 0,
            round_needed: false,
            pending_reads: VecDeque::new(),
            reads_awaiting_commit: Vec::new(),
            term_commit_reported: false,
            read_states: Vec::new(),
            lease_events: Vec::new(),
            prev_soft: SoftState {
                leader: None,
                role: Role::Follower,
            },
            prev_hard: hs,
            in_ready: None,
            refused: RefusalCounts::default(),
        };
        let term = r.term;
        r.become_follower(term, None);
        Ok(r)
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
        }
    }

    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = self.term;
        self.send_with_term(to, term, body);
    }

    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    /// Members other than this node, voters and learners.
    pub(crate) fn peers(&self) -> Vec<NodeId> {
        self.prs.conf.all().filter(|&id| id != self.id).collect()
    }

    pub(crate) fn promotable(&self) -> bool {
        self.prs.is_voter(self.id)
    }

    fn reset_randomized_election_timeout(&mut self) {
        self.randomized_election_timeout = self
            .rng
            .gen_range(self.election_tick..2 * self.election_tick);
    }

    pub(crate) fn past_election_timeout(&self) -> bool {
        self.election_elapsed >= self.randomized_election_timeout
    }

    /// Leader stickiness: a node that heard from a live leader within the minimum election
    /// timeout (or just restarted) ignores vote requests. The lease depends on this.
    pub(crate) fn in_lease(&self) -> bool {
        self.check_quorum
            && self.election_elapsed < self.election_tick
            && (self.leader.is_some() || self.startup_quiet)
    }

    /// Revoke any lease before leaving leadership or the term.
    fn end_leadership(&mut self, new_term: Term) {
        if self.role == Role::Leader {
            let reason = if new_term != self.term {
                LeaseEndReason::TermChange
            } else {
                LeaseEndReason::StepDown
            };
            self.lease_events.push(LeaseEvent::Revoked {
                term: self.term,
                reason,
            });
        }
    }

    fn reset(&mut self, term: Term) {
        if self.term != term {
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_election_timeout();
        self.lead_transferee = None;
        self.removing_self = false;
        self.lease_forbidden = false;
        self.prs.votes.clear();
        let last = self.log.last_index();
        self.prs.reset_progress(last + 1, self.id, last);
        self.pending_conf_index = 0;
        self.round = 0;
        self.quorum_round = 0;
        self.round_needed = false;
        self.pending_reads.clear();
        self.reads_awaiting_commit.clear();
        self.term_commit_reported = false;
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.end_leadership(term);
        self.reset(term);
        self.leader = leader;
        self.role = Role::Follower;
        if leader.is_some() {
            self.startup_quiet = false;
        }
    }

    pub(crate) fn become_pre_candidate(&mut self) {
        assert_ne!(
            self.role,
            Role::Leader,
            "leader cannot become pre-candidate"
        );
        self.prs.votes.clear();
        self.leader = None;
        self.role = Role::PreCandidate;
        self.startup_quiet = false;
    }

    pub(crate) fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "leader cannot become candidate");
        // Peers' terms are capped far below u64::MAX (`validate`), so this never saturates in
        // practice; if it did, the term would stick rather than wrap to 0.
        let term = self.term.saturating_add(1);
        self.reset(term);
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.startup_quiet = false;
    }

    pub(crate) fn become_leader(&mut self) {
        assert!(
            matches!(self.role, Role::Candidate),
            "only a candidate becomes leader"
        );
        let term = self.term;
        self.reset(term);
        self.leader = Some(self.id);
        self.role = Role::Leader;
        // Conf changes already in the log may be unapplied; block new ones until then.
        self.pending_conf_index = self.log.last_index();
        self.lease_events.push(LeaseEvent::BecameLeader { term });
        self.append_entries(vec![EntryPayload::Empty]);
    }

    pub fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_heartbeat();
        } else {
            self.tick_election();
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_tick {
            self.startup_quiet = false;
        }
        if self.promotable() && self.past_election_timeout() {
            self.election_elapsed = 0;
            self.campaign(if self.pre_vote {
                CampaignKind::PreElection
            } else {
                CampaignKind::Election
            });
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        let me = self.id;
        for (_, p) in self.prs.progress.iter_mut().filter(|(id, _)| **id != me) {
            p.idle_ticks = p.idle_ticks.saturating_add(1);
        }
        self.tick_snapshot_retries();
        if self.election_elapsed >= self.election_tick {
            self.election_elapsed = 0;
            if self.check_quorum {
                let active = self.prs.quorum_active();
                for (id, p) in self.prs.progress.iter_mut() {
                    p.recent_active = *id == self.id;
                }
                if !active {
                    let term = self.term;
                    self.become_follower(term, None);
                    return;
                }
            }
            if self.lead_transferee.is_some() {
                self.abort_transfer();
            }
        }
        if self.heartbeat_elapsed >= self.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat_round();
        }
    }

    /// Term rules common to every message, then dispatch by kind and role.
    pub fn step(&mut self, m: Message) -> Result<(), RaftError> {
        if let Err(why) = self.check_message(&m) {
            self.refuse(why, m.from, m.term);
            return Ok(());
        }
        if m.term > self.term {
            // A follower inside its stickiness window takes a higher term only from a leader or a
            // transfer campaign. A stray higher-term *response* (say, a late answer to an append
            // it sent as leader in an old term) would otherwise clear its leader and let it vote
            // before the window ends — breaking the promise a lease was built on.
            if self.role == Role::Follower && self.in_lease() && m.body.is_response() {
                return Ok(());
            }
            match &m.body {
                MessageBody::Vote { transfer, .. } if !transfer && self.in_lease() => return Ok(()),
                MessageBody::PreVote { .. } if self.in_lease() => return Ok(()),
                _ => {}
            }
            match &m.body {
                // A pre-vote never changes our term; a granted pre-vote reply carries the future term.
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResp { reject: false } => {}
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => self.become_follower(m.term, Some(m.from)),
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            match &m.body {
                // A stale leader (e.g. partitioned and healed) learns the new term and steps down;
                // without this, under check-quorum/pre-vote it would never hear of it.
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
                    if self.check_quorum || self.pre_vote =>
                {
                    self.send(
                        m.from,
                        MessageBody::AppendResp {
                            reject: false,
                            index: 0,
                            hint_index: 0,
                            hint_term: 0,
                        },
                    )
                }
                MessageBody::PreVote { .. } => {
                    self.send(m.from, MessageBody::PreVoteResp { reject: true })
                }
                _ => {}
            }
            return Ok(());
        }

        match m.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => {
                self.handle_vote_request(m.from, m.term, last_index, last_term, true);
                Ok(())
            }
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => {
                self.handle_vote_request(m.from, m.term, last_index, last_term, false);
                Ok(())
            }
            body => match self.role {
                Role::Leader => self.step_leader(m.from, body),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m.from, m.term, body),
                Role::Follower => self.step_follower(m.from, body),
            },
        }
    }

    fn step_leader(&mut self, from: NodeId, body: MessageBody) -> Result<(), RaftError> {
        if let Some(p) = self.prs.progress.get_mut(&from) {
            p.recent_active = true;
            p.idle_ticks = 0;
        }
        match body {
            MessageBody::AppendResp {
                reject,
                index,
                hint_index,
                hint_term,
            } => self.handle_append_response(from, reject, index, hint_index, hint_term),
            MessageBody::HeartbeatResp { round } => self.handle_heartbeat_response(from, round),
            // Forwarded proposals are dropped during a transfer or while this leader removes
            // itself; the follower's client retries.
            MessageBody::Propose { entries }
                if self.lead_transferee.is_none() && !self.removing_self =>
            {
                self.propose(entries)?
            }
            MessageBody::ReadIndex { ctx } => self.handle_read_index(ctx, from),
            _ => {}
        }
        Ok(())
    }

    fn step_candidate(
        &mut self,
        from: NodeId,
        term: Term,
        body: MessageBody,
    ) -> Result<(), RaftError> {
        match body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(term, Some(from));
                self.step_follower(from, body)
            }
            MessageBody::PreVoteResp { reject } if self.role == Role::PreCandidate => {
                self.handle_vote_response(from, !reject);
                Ok(())
            }
            MessageBody::VoteResp { reject } if self.role == Role::Candidate => {
                self.handle_vote_response(from, !reject);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn step_follower(&mut self, from: NodeId, body: MessageBody) -> Result<(), RaftError> {
        match body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.election_elapsed = 0;
                self.leader = Some(from);
                self.handle_append(from, prev_index, prev_term, entries, commit);
            }
            MessageBody::Heartbeat { commit, round } => {
                self.election_elapsed = 0;
                self.leader = Some(from);
                self.handle_heartbeat(from, commit, round);
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.election_elapsed = 0;
                self.leader = Some(from);
                self.handle_snapshot(from, snapshot);
            }
            MessageBody::TimeoutNow if self.promotable() => self.campaign(CampaignKind::Transfer),
            MessageBody::ReadIndexResp { ctx, index } => {
                self.read_states.push(ReadState { index, ctx })
            }
            MessageBody::Propose { .. } | MessageBody::ReadIndex { .. } => {
                // Addressed to a former leader; the originator times out and retries.
            }
            _ => {}
        }
        Ok(())
    }

    /// Append `payloads` as new entries of this leader's term and replicate them.
    pub(crate) fn append_entries(&mut self, payloads: Vec<EntryPayload>) {
        let mut idx = self.log.last_index();
        let term = self.term;
        let ents: Vec<Entry> = payloads
            .into_iter()
            .map(|payload| {
                idx += 1;
                Entry {
                    term,
                    index: idx,
                    payload,
                }
            })
            .collect();
        let last = self.log.append(&ents);
        if let Some(p) = self.prs.progress.get_mut(&self.id) {
            p.maybe_update(last);
        }
        if self.maybe_commit() {
            self.on_commit_advanced();
        }
        self.broadcast_append();
    }

    pub fn propose(&mut self, payloads: Vec<EntryPayload>) -> Result<(), RaftError> {
        match self.role {
            Role::Leader => {
                if self.lead_transferee.is_some() || self.removing_self {
                    return Err(RaftError::TransferInProgress);
                }
                if !self.prs.progress.contains_key(&self.id) {
                    return Err(RaftError::NotLeader { leader: None });
                }
                self.append_entries(payloads);
                Ok(())
            }
            _ => match self.leader {
                Some(l) if self.forward_proposals => {
                    self.send(l, MessageBody::Propose { entries: payloads });
                    Ok(())
                }
                leader => Err(RaftError::NotLeader { leader }),
            },
        }
    }

    pub fn has_ready(&self) -> bool {
        self.soft_state() != self.prev_soft
            || self.hard_state() != self.prev_hard
            || !self.log.unstable_entries().is_empty()
            || self.log.unstable_snapshot().is_some()
            || self.log.has_next_committed()
            || !self.msgs.is_empty()
            || !self.read_states.is_empty()
            || !self.lease_events.is_empty()
            || (self.round_needed && self.role == Role::Leader)
    }

    /// True on a leader that has entries not yet handed to storage while some entry already in
    /// storage is not yet committed: the acknowledgements that would commit it are in flight.
    pub fn acks_pending_behind_new_entries(&self) -> bool {
        let Some(first_new) = self.log.unstable_entries().first() else {
            return false;
        };
        self.role == Role::Leader && self.log.committed + 1 < first_new.index
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CampaignKind {
    PreElection,
    Election,
    Transfer,
}
