//! Every peer message is checked before it touches state: a peer may be buggy, or an attacker
//! may have got past the server's sender checks, and neither may crash, wedge or corrupt this
//! node. An impossible message is dropped and counted by [`Refusal`]; it never reaches an
//! assertion.
//!
//! What is checked here is what no honest node ever sends, so refusing it costs nothing:
//! - terms and indexes below [`MAX_TERM`]/[`MAX_INDEX`] (half of `u64`; a real cluster never
//!   gets near), so `term + 1` and `index + n` cannot overflow and a persisted term cannot wrap;
//! - appends whose entries are not `prev_index + 1, + 2, ...` with terms that never decrease,
//!   start no lower than `prev_term` and end no higher than the message's term;
//! - acknowledgements of entries this leader does not have, and of heartbeat rounds it never
//!   sent (a forged round acknowledgement would extend the lease);
//! - messages not addressed to this node, or from id 0;
//! - leader traffic (append, heartbeat, snapshot) at our term from anyone but the leader we
//!   follow, or reaching us while we lead: a term has one leader (election safety);
//! - votes asked for with a last log term above the term campaigned for;
//! - snapshots from a future term, without voters, or with a node both voter and learner;
//! - `TimeoutNow` from anyone but the leader of the current term (it forces an election);
//! - forwarded proposals carrying membership changes: those are proposed on the leader only,
//!   through [`Raft::propose_conf_change`] and its rules;
//! - read contexts longer than [`MAX_READ_CTX`] (they are held until the read is answered);
//! - campaigns, forwarded proposals and read requests from senders outside this node's
//!   configuration (voters and learners): a removed member campaigning, or a made-up id, cannot
//!   disturb the cluster or make the leader hold state for it. A *leader's* messages are taken
//!   from anyone with a current term, though: a node lagging behind a membership change must
//!   still hear from a leader it does not know yet (as must a joining node, which knows no
//!   configuration at all), and whether a sender may lead at all is the election's business.
//!
//! Checks that need the log (an append that would overwrite a committed entry) are made where
//! the log is consulted, with the same counter.

use super::Raft;
use crate::storage::LogStorage;
use crate::types::*;

/// Highest term accepted from a peer.
pub const MAX_TERM: Term = u64::MAX >> 1;
/// Highest log index accepted from a peer.
pub const MAX_INDEX: Index = u64::MAX >> 1;
/// Longest read-index context accepted from a peer (the driver's are 8 bytes).
pub const MAX_READ_CTX: usize = 64;

/// Why a message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// A term above [`MAX_TERM`]: accepting it would let one message exhaust the term space.
    TermTooHigh,
    /// A log index (or commit index) above [`MAX_INDEX`].
    IndexTooHigh,
    /// A message claiming to come from this node.
    FromSelf,
    /// Addressed to another node, or from node id 0 (which no member has).
    Misaddressed,
    /// An append, heartbeat or snapshot in this node's term from someone other than the leader it
    /// knows (or sent to the leader itself): a second leader in one term is impossible.
    NotFromLeader,
    /// A (pre-)vote request whose last log term is above the term it campaigns in.
    MalformedVote,
    /// A vote, proposal or read request from a node that is not a member.
    UnknownSender,
    /// An append whose entries do not follow `prev_index` one by one, or whose terms decrease or
    /// exceed the message's term (as may `prev_term`).
    MalformedAppend,
    /// An append that would overwrite entries this node knows are committed.
    ConflictsWithCommitted,
    /// An acknowledgement, in this leader's term, of entries past the end of its own log: it cannot
    /// have sent them, so counting the ack could commit without a quorum.
    AckBeyondLog,
    /// A heartbeat acknowledgement for a round this leader has not sent yet (a forged lease renewal).
    RoundNotSent,
    /// A snapshot whose last term is above the term of the message carrying it.
    SnapshotTermAhead,
    /// A snapshot whose configuration has no voters, voter id 0, or a node both voter and learner.
    SnapshotWithoutVoters,
    /// `TimeoutNow` from anyone but the current leader in the current term (a forced election).
    TimeoutNowNotFromLeader,
    /// A forwarded proposal carrying a configuration change: those are proposed on the leader, through
    /// the same membership checks as local ones.
    ForwardedConfChange,
    /// A read-index context longer than [`MAX_READ_CTX`].
    ReadContextTooLong,
}

impl Refusal {
    /// Every reason, in the order of their counters in [`RefusalCounts`].
    pub const ALL: [Refusal; 16] = [
        Refusal::TermTooHigh,
        Refusal::IndexTooHigh,
        Refusal::FromSelf,
        Refusal::Misaddressed,
        Refusal::NotFromLeader,
        Refusal::MalformedVote,
        Refusal::UnknownSender,
        Refusal::MalformedAppend,
        Refusal::ConflictsWithCommitted,
        Refusal::AckBeyondLog,
        Refusal::RoundNotSent,
        Refusal::SnapshotTermAhead,
        Refusal::SnapshotWithoutVoters,
        Refusal::TimeoutNowNotFromLeader,
        Refusal::ForwardedConfChange,
        Refusal::ReadContextTooLong,
    ];

    /// The `reason` label of the refused-messages metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TermTooHigh => "term_too_high",
            Refusal::IndexTooHigh => "index_too_high",
            Refusal::FromSelf => "from_self",
            Refusal::Misaddressed => "misaddressed",
            Refusal::NotFromLeader => "not_from_leader",
            Refusal::MalformedVote => "malformed_vote",
            Refusal::UnknownSender => "unknown_sender",
            Refusal::MalformedAppend => "malformed_append",
            Refusal::ConflictsWithCommitted => "conflicts_with_committed",
            Refusal::AckBeyondLog => "ack_beyond_log",
            Refusal::RoundNotSent => "round_not_sent",
            Refusal::SnapshotTermAhead => "snapshot_term_ahead",
            Refusal::SnapshotWithoutVoters => "snapshot_without_voters",
            Refusal::TimeoutNowNotFromLeader => "timeout_now_not_from_leader",
            Refusal::ForwardedConfChange => "forwarded_conf_change",
            Refusal::ReadContextTooLong => "read_context_too_long",
        }
    }
}

/// Refused messages so far, by reason (indexed like [`Refusal::ALL`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusalCounts(pub(crate) [u64; Refusal::ALL.len()]);

impl RefusalCounts {
    /// Messages refused for reason `r`.
    pub fn get(&self, r: Refusal) -> u64 {
        self.0[r as usize]
    }

    /// Messages refused for any reason.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Every reason with its count, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (Refusal, u64)> + '_ {
        Refusal::ALL.iter().map(|&r| (r, self.get(r)))
    }
}

/// Entries that are `prev_index + 1, + 2, ...` with terms from `prev_term` up to `term`, never
/// decreasing.
fn append_is_well_formed(
    prev_index: Index,
    prev_term: Term,
    entries: &[Entry],
    term: Term,
) -> bool {
    if prev_term > term {
        return false;
    }
    let mut last_term = prev_term;
    for (i, e) in entries.iter().enumerate() {
        let Some(want) = prev_index.checked_add(i as u64 + 1) else {
            return false;
        };
        if e.index != want || e.term < last_term || e.term > term {
            return false;
        }
        last_term = e.term;
    }
    true
}

impl<S: LogStorage> Raft<S> {
    /// Whether `m` could have come from an honest peer, as far as this node can tell before
    /// acting on it (see the module docs).
    pub(crate) fn check_message(&self, m: &Message) -> Result<(), Refusal> {
        if m.term > MAX_TERM {
            return Err(Refusal::TermTooHigh);
        }
        if m.from == self.id {
            return Err(Refusal::FromSelf);
        }
        if m.to != self.id || m.from == 0 {
            return Err(Refusal::Misaddressed);
        }
        let leads = matches!(
            m.body,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
        );
        if leads
            && m.term == self.term
            && (self.role == Role::Leader || self.leader.is_some_and(|l| l != m.from))
        {
            return Err(Refusal::NotFromLeader);
        }
        let conf = &self.prs.conf;
        let knows_conf = !conf.voters.is_empty() || !conf.learners.is_empty();
        let asks_for_something = matches!(
            m.body,
            MessageBody::PreVote { .. }
                | MessageBody::Vote { .. }
                | MessageBody::Propose { .. }
                | MessageBody::ReadIndex { .. }
        );
        if asks_for_something && knows_conf && !conf.contains(m.from) {
            return Err(Refusal::UnknownSender);
        }
        let index_ok = |i: Index| i <= MAX_INDEX;
        match &m.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            }
            | MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => {
                if !index_ok(*last_index) {
                    Err(Refusal::IndexTooHigh)
                } else if *last_term > m.term {
                    Err(Refusal::MalformedVote)
                } else {
                    Ok(())
                }
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                if !index_ok(*prev_index) || !index_ok(*commit) {
                    Err(Refusal::IndexTooHigh)
                } else if !append_is_well_formed(*prev_index, *prev_term, entries, m.term)
                    || entries.last().is_some_and(|e| e.index > MAX_INDEX)
                {
                    Err(Refusal::MalformedAppend)
                } else {
                    Ok(())
                }
            }
            MessageBody::AppendResp {
                reject,
                index,
                hint_index,
                ..
            } => {
                if !index_ok(*index) || !index_ok(*hint_index) {
                    Err(Refusal::IndexTooHigh)
                } else if !reject
                    && self.role == Role::Leader
                    && m.term == self.term
                    && *index > self.log.last_index()
                {
                    Err(Refusal::AckBeyondLog)
                } else {
                    Ok(())
                }
            }
            MessageBody::Heartbeat { commit, .. } if !index_ok(*commit) => {
                Err(Refusal::IndexTooHigh)
            }
            MessageBody::HeartbeatResp { round }
                if self.role == Role::Leader && m.term == self.term && *round > self.round =>
            {
                Err(Refusal::RoundNotSent)
            }
            MessageBody::InstallSnapshot { snapshot } => {
                let meta = &snapshot.meta;
                if !index_ok(meta.index) {
                    Err(Refusal::IndexTooHigh)
                } else if meta.term > m.term {
                    Err(Refusal::SnapshotTermAhead)
                } else if meta.conf.voters.is_empty()
                    || meta.conf.voters.contains(&0)
                    || meta
                        .conf
                        .learners
                        .iter()
                        .any(|l| meta.conf.voters.contains(l))
                {
                    Err(Refusal::SnapshotWithoutVoters)
                } else {
                    Ok(())
                }
            }
            MessageBody::TimeoutNow if m.term != self.term || self.leader != Some(m.from) => {
                Err(Refusal::TimeoutNowNotFromLeader)
            }
            MessageBody::Propose { entries }
                if entries
                    .iter()
                    .any(|e| matches!(e, EntryPayload::ConfChange(_))) =>
            {
                Err(Refusal::ForwardedConfChange)
            }
            MessageBody::ReadIndex { ctx } | MessageBody::ReadIndexResp { ctx, .. }
                if ctx.len() > MAX_READ_CTX =>
            {
                Err(Refusal::ReadContextTooLong)
            }
            MessageBody::ReadIndexResp { index, .. } if !index_ok(*index) => {
                Err(Refusal::IndexTooHigh)
            }
            _ => Ok(()),
        }
    }

    /// Count a dropped message (what the driver exports as a metric).
    pub(crate) fn refuse(&mut self, why: Refusal, from: NodeId, term: Term) {
        self.refused.0[why as usize] += 1;
        tracing::debug!(
            from = %crate::ids::Id(from),
            term,
            reason = why.as_str(),
            "peer message refused"
        );
    }

    pub fn refused(&self) -> RefusalCounts {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            payload: EntryPayload::Empty,
        }
    }

    #[test]
    fn appends_must_be_contiguous_with_terms_between_prev_and_message() {
        assert!(append_is_well_formed(5, 2, &[ent(6, 2), ent(7, 3)], 3));
        assert!(append_is_well_formed(5, 2, &[], 3));
        assert!(!append_is_well_formed(5, 2, &[ent(7, 2)], 3), "gap");
        assert!(
            !append_is_well_formed(5, 2, &[ent(6, 2), ent(6, 2)], 3),
            "repeat"
        );
        assert!(
            !append_is_well_formed(5, 2, &[ent(6, 1)], 3),
            "below prev_term"
        );
        assert!(
            !append_is_well_formed(5, 2, &[ent(6, 3), ent(7, 2)], 3),
            "decreasing"
        );
        assert!(
            !append_is_well_formed(5, 2, &[ent(6, 4)], 3),
            "from the future"
        );
        assert!(
            !append_is_well_formed(5, 4, &[], 3),
            "prev_term from the future"
        );
        assert!(
            !append_is_well_formed(u64::MAX, 1, &[ent(0, 1)], 3),
            "wraps"
        );
    }

    #[test]
    fn every_reason_has_its_own_label_and_slot() {
        let labels: std::collections::BTreeSet<_> =
            Refusal::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), Refusal::ALL.len());
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
