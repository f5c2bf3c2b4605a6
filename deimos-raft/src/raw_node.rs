//! `RawNode`: the public face of the core — inputs in, `Ready` out.
//!
//! Contract (etcd's): after any input, `has_ready()` tells whether there is work. Take it with
//! `ready()`, then in order: persist `snapshot`, `entries` and `hard_state` to the `LogStorage`
//! (durably); send `messages`; apply `committed_entries` (and handle `read_states`); then call
//! `advance()`. `ready()` may not be called again before `advance()`, and no other input may
//! reach the core in between. One relaxation: messages whose body
//! [`may_precede_persist`](crate::types::MessageBody::may_precede_persist) (a leader's
//! appends, heartbeats and snapshots) may be sent before persisting, so the leader's disk write
//! overlaps its followers'. The driver and the simulator both do so. A second: committed entries
//! already in stable storage before this `Ready` may be applied before persisting it (the driver
//! does so on a leader, so clients are answered before its next fsync); entries that are only
//! in this `Ready`'s `entries` may not.

use crate::core::Raft;
use crate::error::RaftError;
use crate::ready::Ready;
use crate::status::Status;
use crate::storage::LogStorage;
use crate::types::*;
use crate::Config;

/// A Raft node without I/O: feed it ticks, messages and requests, take a [`Ready`], carry it out
/// as the module docs say, then [`advance`](RawNode::advance). Generic over the log storage it
/// reads (and that the caller writes while handling a `Ready`).
pub struct RawNode<S: LogStorage> {
    pub(crate) raft: Raft<S>,
}

impl<S: LogStorage> RawNode<S> {
    /// Build a node from `config` over `storage` (which holds the state to restart from).
    pub fn new(config: &Config, storage: S) -> Result<Self, RaftError> {
        Ok(RawNode {
            raft: Raft::new(config, storage)?,
        })
    }

    /// Advance logical time by one tick (election and heartbeat timers count ticks).
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Feed a message received from a peer.
    pub fn step(&mut self, m: Message) -> Result<(), RaftError> {
        self.raft.step(m)
    }

    /// Start an election now (tests, and the `TimeoutNow` path).
    pub fn campaign(&mut self) -> Result<(), RaftError> {
        self.raft.campaign_now()
    }

    /// Propose `data` for replication. On a follower this forwards to the leader when
    /// `forward_proposals` is set, else fails with `NotLeader`. Success means only "accepted for
    /// replication": the entry may still be lost if leadership changes; the application learns
    /// the outcome when (if) the entry comes back in `committed_entries`.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), RaftError> {
        self.raft.propose(vec![EntryPayload::Normal(data)])
    }

    /// Propose several entries at once: one append message per follower carries them all
    /// (one `Propose` to the leader from a follower), instead of one message per entry.
    pub fn propose_batch(&mut self, data: Vec<Vec<u8>>) -> Result<(), RaftError> {
        self.raft
            .propose(data.into_iter().map(EntryPayload::Normal).collect())
    }

    /// Propose a membership change (leader only; one at a time).
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<(), RaftError> {
        self.raft.propose_conf_change(cc)
    }

    /// Ask for a linearizable read point. A `ReadState` with the same `ctx` appears in a later
    /// `Ready` once leadership has been confirmed by a quorum; on a follower the request goes to
    /// the leader. Fails with `NotLeader { leader: None }` when no leader is known.
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), RaftError> {
        self.raft.read_index(ctx)
    }

    /// Hand leadership to `to` (leader only). The lease is revoked before the handover starts.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), RaftError> {
        self.raft.transfer_leader(to)
    }

    /// Send a heartbeat round now (lease renewal when it is due before the next heartbeat tick).
    pub fn broadcast_heartbeat(&mut self) {
        self.raft.broadcast_heartbeat_round();
    }

    /// The transport finished (or failed) sending a snapshot to `to`.
    pub fn report_snapshot(&mut self, to: NodeId, ok: bool) {
        self.raft.report_snapshot(to, ok);
    }

    /// The transport could not reach `to`; stop pipelining to it until it answers.
    pub fn report_unreachable(&mut self, to: NodeId) {
        self.raft.report_unreachable(to);
    }

    /// Whether a `Ready` would carry any work now; call [`ready`](Self::ready) only then.
    pub fn has_ready(&self) -> bool {
        self.raft.has_ready()
    }

    /// A leader has new entries to write while entries it already wrote still wait for a
    /// quorum. The driver uses this to let those acknowledgements in before its next fsync.
    pub fn acks_pending_behind_new_entries(&self) -> bool {
        self.raft.acks_pending_behind_new_entries()
    }

    /// What to persist, send and apply since the last `Ready`. Must not be called again before
    /// [`advance`](Self::advance).
    pub fn ready(&mut self) -> Ready {
        self.raft.ready()
    }

    /// Acknowledge that the last `Ready` was fully handled.
    pub fn advance(&mut self) {
        self.raft.advance()
    }

    /// A point-in-time view of this node (role, term, indexes, membership, the leader's progress).
    pub fn status(&self) -> Status {
        self.raft.status()
    }

    /// Peer messages dropped as impossible so far, by reason (see `Refusal`).
    pub fn refused(&self) -> crate::core::RefusalCounts {
        self.raft.refused()
    }

    /// This node's role now (cheaper than a whole [`status`](Self::status)).
    pub fn role(&self) -> Role {
        self.raft.role
    }

    /// The log storage, for reading what was persisted (and for the state machine's snapshots).
    pub fn storage(&self) -> &S {
        self.raft.log.storage()
    }

    /// The log storage, for the driver to write a `Ready` into. Writes must follow the contract in
    /// the module docs: the core assumes what it reads there is what it asked to persist.
    pub fn storage_mut(&mut self) -> &mut S {
        self.raft.log.storage_mut()
    }
}
