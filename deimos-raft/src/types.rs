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
pub type Term = u64;
pub type Index = u64;

/// What a log entry carries. Conf changes are ordinary log entries so that they replicate and commit
/// like data; they take effect when applied (see `confchange.rs` for why that is safe here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by every new leader so that it can commit entries of earlier terms
    /// (Raft's current-term commit rule) and so that the lease can start.
    Empty,
    /// As bytes, not a sequence of `u8`: the same postcard encoding, copied in one go instead
    /// of element by element (which cost a few percent of a busy leader's CPU).
    Normal(#[serde(with = "serde_bytes")] Vec<u8>),
    ConfChange(ConfChange),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
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

/// A single-server membership change. See `confchange.rs` for the argument for one-at-a-time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConfChange {
    AddVoter(NodeId),
    AddLearner(NodeId),
    RemoveNode(NodeId),
}

impl ConfChange {
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
    pub term: Term,
    pub vote: Option<NodeId>,
    pub commit: Index,
}

/// Cluster membership. Invariant: `voters` and `learners` are disjoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfState {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

impl ConfState {
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        ConfState {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

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
    pub meta: SnapshotMeta,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl Snapshot {
    pub fn is_empty(&self) -> bool {
        self.meta.index == 0
    }
}

/// A Raft message. `term == 0` marks messages that are local to a node and carry no term
/// (never sent on the wire by the core itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Pre-vote: "would you vote for me at `term`?" sent without bumping our own term.
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteResp {
        reject: bool,
    },
    /// `transfer` is set when the campaign follows a `TimeoutNow`; such votes bypass leader
    /// stickiness because the current leader itself asked for the election.
    Vote {
        last_index: Index,
        last_term: Term,
        transfer: bool,
    },
    VoteResp {
        reject: bool,
    },
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    /// `index` is the last index the follower now matches on success, or the rejected
    /// `prev_index` on failure; `hint_index`/`hint_term` let the leader skip a whole term on
    /// rejection (fast back-off).
    AppendResp {
        reject: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    },
    /// `round` numbers the leader's heartbeat rounds within its term; acknowledgements of rounds
    /// confirm leadership for ReadIndex and anchor the lease.
    Heartbeat {
        commit: Index,
        round: u64,
    },
    HeartbeatResp {
        round: u64,
    },
    InstallSnapshot {
        snapshot: Snapshot,
    },
    /// Leader transfer: the target should campaign at once.
    TimeoutNow,
    /// A follower forwards a proposal to the leader.
    Propose {
        entries: Vec<EntryPayload>,
    },
    /// A follower asks the leader for a read index on behalf of its client.
    ReadIndex {
        ctx: Vec<u8>,
    },
    ReadIndexResp {
        ctx: Vec<u8>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
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
    pub leader: Option<NodeId>,
    pub role: Role,
}

/// A confirmed read: once the state machine has applied `index`, a read tagged `ctx` may be
/// answered linearizably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadState {
    pub index: Index,
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
    pub const ALL: [LeaseEndReason; 6] = [
        LeaseEndReason::StepDown,
        LeaseEndReason::TermChange,
        LeaseEndReason::Removed,
        LeaseEndReason::Transfer,
        LeaseEndReason::MembershipChange,
        LeaseEndReason::Timeout,
    ];

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
/// was sent and acknowledged, the driver stamps the time (see `lease.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEvent {
    /// This node became leader of `term`; no lease yet.
    BecameLeader { term: Term },
    /// Heartbeat round `round` of `term` is among this `Ready`'s messages. The driver must take
    /// the anchor time *before* it sends them.
    RoundSent { term: Term, round: u64 },
    /// A quorum of voters (counting the leader) acknowledged round `round` or a later one.
    RoundAcked { term: Term, round: u64 },
    /// An entry of the leader's own term is committed at `index`; once applied the leader has
    /// every committed write and may serve lease reads.
    TermCommitted { term: Term, index: Index },
    /// Any lease of `term` must end now.
    Revoked { term: Term, reason: LeaseEndReason },
}
