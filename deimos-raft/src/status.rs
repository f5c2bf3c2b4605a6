//! A point-in-time view of a node (`Status`) and the leader's view of each member
//! (`PeerProgress`), for status endpoints, the reconfiguration checks and tests. Below the core
//! and the tracker, which fill them, and `RawNode`, which hands them out.

use std::collections::BTreeMap;

use crate::types::*;

/// A point-in-time view of the node, for status endpoints and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This node's id.
    pub id: NodeId,
    /// The current term.
    pub term: Term,
    /// Whom this node voted for in the current term, if anyone.
    pub vote: Option<NodeId>,
    /// Leader, follower, candidate or pre-candidate.
    pub role: Role,
    /// The leader this node knows for the current term, if any.
    pub leader: Option<NodeId>,
    /// Highest log index known to be committed.
    pub commit: Index,
    /// Highest log index handed to the state machine (and acknowledged by `advance`).
    pub applied: Index,
    /// Index of the last entry in this node's log (stable or not).
    pub last_index: Index,
    /// The membership in effect: voters and learners.
    pub conf: ConfState,
    /// The leader's view of every member, itself included (empty on any other role: only the
    /// leader hears from everyone). What operators and the reconfiguration checks in
    /// [`crate::reconfig`] need, without reaching into the core.
    pub progress: BTreeMap<NodeId, PeerProgress>,
}

/// How the leader currently replicates to one member (etcd's progress states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationState {
    /// Looking for where the member's log diverges: one append at a time.
    Probe,
    /// In sync: appends are pipelined.
    Replicate,
    /// A snapshot is on its way; nothing else is sent until it is acknowledged.
    Snapshot,
}

impl ReplicationState {
    /// The name used in `/raft/status` and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationState::Probe => "probe",
            ReplicationState::Replicate => "replicate",
            ReplicationState::Snapshot => "snapshot",
        }
    }
}

/// The leader's view of one member. Invariant: `matched < next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerProgress {
    /// Highest log index known to be stored on the member (the leader: its own last index).
    pub matched: Index,
    /// Next index the leader will send it.
    pub next: Index,
    /// How the leader replicates to this member now.
    pub state: ReplicationState,
    /// Heard from within the last (minimum) election timeout; the leader always is. A member
    /// that is down, partitioned or never started is not.
    pub active: bool,
}
