//! Wire and storage types shared by the core, the driver and the storage implementations.
//!
//! Everything here is plain data: `serde`-serialisable so that the peer transport and the redb
//! storage can encode it, and free of behaviour so that the state machine stays the only place
//! where Raft's rules live.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A member's identity. `0` is never a valid id (it stands for "none" on the wire of other systems,
/// and we reject it in `Config::validate`).
pub type NodeId = u64;
/// A Raft term: a leadership epoch, only ever increasing on a node.
pub type Term = u64;
/// A position in the log, from 1; 0 stands for "before the first entry".
pub type Index = u64;

/// What a log entry carries. Conf changes are ordinary log entries so that they replicate and commit
/// like data; they take effect when applied (see `core/membership.rs` for why that is safe here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by every new leader so that it can commit entries of earlier terms
    /// (Raft's current-term commit rule) and so that the lease can start.
    Empty,
    /// As bytes, not a sequence of `u8`: the same postcard encoding, copied in one go instead
    /// of element by element (which cost a few percent of a busy leader's CPU).
    Normal(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A membership change, which takes effect when applied.
    ConfChange(ConfChange),
}

/// One log entry: its position, the term of the leader that created it, and what it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Term of the leader that appended it; with `index`, identifies the entry (Log Matching).
    pub term: Term,
    /// Position in the log.
    pub index: Index,
    /// What the entry carries.
    pub payload: EntryPayload,
}

impl Entry {
    /// Approximate encoded size, used for flow control (`max_size_per_msg`).
    pub fn size(&self) -> usize {
        16 + match &self.payload {
            EntryPayload::Empty => 0,
            EntryPayload::Normal(d) => d.len(),
            EntryPayload::ConfChange(_) => 16,
        }
    }
}

/// A single-server membership change. See `core/membership.rs` for the argument for one-at-a-time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConfChange {
    /// Add a voting member (or promote a learner).
    AddVoter(NodeId),
    /// Add a member that receives the log but does not vote or count toward any quorum.
    AddLearner(NodeId),
    /// Remove a voter or a learner.
    RemoveNode(NodeId),
}

impl ConfChange {
    /// The member the change is about.
    pub fn node(&self) -> NodeId {
        match *self {
            ConfChange::AddVoter(id) | ConfChange::AddLearner(id) | ConfChange::RemoveNode(id) => {
                id
            }
        }
    }
}

/// The state that must be durable before any message that depends on it is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// Whom it voted for in `term`, if anyone: persisted so that it never votes twice in a term.
    pub vote: Option<NodeId>,
    /// Highest index known committed (may lag the true commit index after a restart).
    pub commit: Index,
}

/// Cluster membership. Invariant: `voters` and `learners` are disjoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfState {
    /// Members that vote and form quorums.
    pub voters: BTreeSet<NodeId>,
    /// Members that receive the log without voting.
    pub learners: BTreeSet<NodeId>,
}

impl ConfState {
    /// A configuration of `voters` only.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        ConfState {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member, voters first.
    pub fn all(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// Apply a membership change. Idempotent, so replay after a restart is harmless. Demoting a
    /// voter to learner is not a single-server step and is ignored (proposals refuse it).
    pub fn apply(&mut self, cc: ConfChange) {
        match cc {
            ConfChange::AddVoter(id) => {
                self.learners.remove(&id);
                self.voters.insert(id);
            }
            ConfChange::AddLearner(id) => {
                if !self.voters.contains(&id) {
                    self.learners.insert(id);
                }
            }
            ConfChange::RemoveNode(id) => {
                self.voters.remove(&id);
                self.learners.remove(&id);
            }
        }
    }
}

/// What a snapshot covers: the log prefix it replaces and the membership at its end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Last log index covered by the snapshot.
    pub index: Index,
    /// Term of the entry at `index`.
    pub term: Term,
    /// Membership as of `index`.
    pub conf: ConfState,
}

/// A point-in-time image of the state machine. `data` is opaque to Raft.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The state machine's image, encoded by the state machine.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl Snapshot {
    /// The "no snapshot" value (index 0): nothing compacted yet.
    pub fn is_empty(&self) -> bool {
        self.meta.index == 0
    }
}

/// A Raft message. `term == 0` marks messages that are local to a node and carry no term
/// (never sent on the wire by the core itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// The sender's term when it sent the message.
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// What a Raft message says. Every body is checked against what an honest peer could send before
/// the core acts on it (`core/validate.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Pre-vote: "would you vote for me at `term`?" sent without bumping our own term.
    PreVote {
        /// The candidate's last log index (its log must be at least as up to date as the voter's).
        last_index: Index,
        /// The term of the candidate's last log entry.
        last_term: Term,
    },
    /// Answer to a `PreVote`.
    PreVoteResp {
        /// The pre-vote was refused (a live leader, or a more up-to-date log).
        reject: bool,
    },
    /// `transfer` is set when the campaign follows a `TimeoutNow`; such votes bypass leader
    /// stickiness because the current leader itself asked for the election.
    Vote {
        /// The candidate's last log index.
        last_index: Index,
        /// The term of the candidate's last log entry.
        last_term: Term,
        /// The election follows the leader's own `TimeoutNow`.
        transfer: bool,
    },
    /// Answer to a `Vote`.
    VoteResp {
        /// The vote was refused; otherwise it is granted (and persisted before this is sent).
        reject: bool,
    },
    /// The leader replicates `entries` after (`prev_index`, `prev_term`), and tells its commit index.
    Append {
        /// Index of the entry just before `entries`.
        prev_index: Index,
        /// Its term; the follower refuses the append unless its log holds that entry.
        prev_term: Term,
        /// Entries to append, contiguous from `prev_index + 1`; empty for a probe.
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
    },
    /// `index` is the last index the follower now matches on success, or the rejected
    /// `prev_index` on failure; `hint_index`/`hint_term` let the leader skip a whole term on
    /// rejection (fast back-off).
    AppendResp {
        /// The append was refused: the follower's log does not hold (`prev_index`, `prev_term`).
        reject: bool,
        /// On success, the last index the follower now matches; on refusal, the refused `prev_index`.
        index: Index,
        /// On refusal, where the leader should try next.
        hint_index: Index,
        /// On refusal, the follower's term at `hint_index`.
        hint_term: Term,
    },
    /// `round` numbers the leader's heartbeat rounds within its term; acknowledgements of rounds
    /// confirm leadership for ReadIndex and anchor the lease.
    Heartbeat {
        /// The leader's commit index, capped at what the follower is known to hold.
        commit: Index,
        /// The heartbeat round, counted from 1 within the leader's term.
        round: u64,
    },
    /// Answer to a `Heartbeat`.
    HeartbeatResp {
        /// The round acknowledged.
        round: u64,
    },
    /// The leader sends its snapshot to a follower whose next entry it has compacted.
    InstallSnapshot {
        /// The snapshot, data included.
        snapshot: Snapshot,
    },
    /// Leader transfer: the target should campaign at once.
    TimeoutNow,
    /// A follower forwards a proposal to the leader.
    Propose {
        /// The proposed entries (data only: configuration changes are refused when forwarded).
        entries: Vec<EntryPayload>,
    },
    /// A follower asks the leader for a read index on behalf of its client.
    ReadIndex {
        /// The follower's request id, echoed in the answer.
        ctx: Vec<u8>,
    },
    /// The leader's answer to a `ReadIndex`, once a quorum confirmed its leadership.
    ReadIndexResp {
        /// The request id from the `ReadIndex`.
        ctx: Vec<u8>,
        /// The read point: the leader's commit index when the request arrived, now confirmed by a quorum.
        index: Index,
    },
}

impl MessageBody {
    /// True for a leader's replication traffic (appends, heartbeats, snapshots), which the
    /// driver may send *before* persisting the `Ready` it came in (Raft thesis §10.2.1): the
    /// leader's own disk write then overlaps the followers'. This is safe because nothing in
    /// these messages asserts that this node has persisted anything: the leader's term and vote
    /// were made durable before it could win, a follower acknowledges only what *it* persisted,
    /// and the leader processes acknowledgements (and so advances the commit index past the new
    /// entries) only after this `Ready` is handled, by which time its own copy is durable too.
    /// Everything else — votes, acknowledgements, responses — promises persisted state and
    /// must wait.
    pub fn may_precede_persist(&self) -> bool {
        matches!(
            self,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
        )
    }

    /// True for responses: their term may be stale without indicating a newer leader.
    pub fn is_response(&self) -> bool {
        matches!(
            self,
            MessageBody::PreVoteResp { .. }
                | MessageBody::VoteResp { .. }
                | MessageBody::AppendResp { .. }
                | MessageBody::HeartbeatResp { .. }
                | MessageBody::ReadIndexResp { .. }
        )
    }
}

/// What a node currently is in its term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks whether it could win an election, without bumping its term (pre-vote).
    PreCandidate,
    /// Campaigns in a new term.
    Candidate,
    /// Leads its term.
    Leader,
}

impl Role {
    /// The name status endpoints and logs use.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre_candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// Volatile state the application may want to observe; reported in `Ready` when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftState {
    /// The leader this node knows for its term, if any.
    pub leader: Option<NodeId>,
    /// This node's role.
    pub role: Role,
}

/// A confirmed read: once the state machine has applied `index`, a read tagged `ctx` may be
/// answered linearizably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadState {
    /// The log index the state machine must have applied before answering.
    pub index: Index,
    /// The request's context, as given to `read_index`.
    pub ctx: Vec<u8>,
}

/// Why a leader lease ended. Used as a metric label, hence `as_str`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LeaseEndReason {
    /// The leader stepped down (higher term seen, check-quorum failed).
    StepDown,
    /// The term changed under us.
    TermChange,
    /// This node was removed from the configuration.
    Removed,
    /// Leadership is being handed to another node.
    Transfer,
    /// Membership changed; the lease is re-acquired from a quorum of the new configuration.
    MembershipChange,
    /// No quorum acknowledged a heartbeat round in time (reported by the lease service).
    Timeout,
}

impl LeaseEndReason {
    /// Every reason, for pre-registering the metric's label values.
    pub const ALL: [LeaseEndReason; 6] = [
        LeaseEndReason::StepDown,
        LeaseEndReason::TermChange,
        LeaseEndReason::Removed,
        LeaseEndReason::Transfer,
        LeaseEndReason::MembershipChange,
        LeaseEndReason::Timeout,
    ];

    /// The `reason` label of the lease-expiry metric.
    pub fn as_str(&self) -> &'static str {
        match self {
            LeaseEndReason::StepDown => "step_down",
            LeaseEndReason::TermChange => "term_change",
            LeaseEndReason::Removed => "removed",
            LeaseEndReason::Transfer => "transfer",
            LeaseEndReason::MembershipChange => "membership_change",
            LeaseEndReason::Timeout => "timeout",
        }
    }
}

/// Facts the lease service needs from the core. The core has no clock: it reports *which* round
/// was sent and acknowledged, the driver stamps the time (see `lease/mod.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEvent {
    /// This node became leader of `term`; no lease yet.
    BecameLeader {
        /// The term it leads.
        term: Term,
    },
    /// Heartbeat round `round` of `term` is among this `Ready`'s messages. The driver must take
    /// the anchor time *before* it sends them.
    RoundSent {
        /// The leader's term.
        term: Term,
        /// The round's number within the term.
        round: u64,
    },
    /// A quorum of voters (counting the leader) acknowledged round `round` or a later one.
    RoundAcked {
        /// The leader's term.
        term: Term,
        /// The highest round a quorum has acknowledged.
        round: u64,
    },
    /// An entry of the leader's own term is committed at `index`; once applied the leader has
    /// every committed write and may serve lease reads.
    TermCommitted {
        /// The leader's term.
        term: Term,
        /// Index of the committed entry of that term.
        index: Index,
    },
    /// Any lease of `term` must end now.
    Revoked {
        /// The term whose lease ends.
        term: Term,
        /// Why (a metric label).
        reason: LeaseEndReason,
    },
}
