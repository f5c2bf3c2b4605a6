//! The edges the driver runs the core against.

use thiserror::Error;
use tokio::sync::mpsc;

use crate::storage::LogStorage;
use crate::types::{ConfChange, ConfState, Index, Message, NodeId, Snapshot, Term};

/// Hands messages to the network. `send` must not block the Raft loop: queue and return.
/// Delivery is best effort (Raft tolerates loss and duplication), ordered per peer when possible.
pub trait Transport: Send + 'static {
    /// Called once, by `Driver::new`, before the first `send`: where to report what became of
    /// deliveries (a peer unreachable, a snapshot delivered or not). The driver owns the
    /// channel, so no report can arrive before there is a driver to take it.
    fn bind(&mut self, reporter: Reporter);

    /// Hand `msgs` to the network. Must not block: the Raft loop waits for it.
    fn send(&mut self, msgs: Vec<Message>);
}

/// What the transport learned about a delivery; Raft slows down probing an unreachable peer
/// and retries (or resumes after) a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Messages to this peer could not be delivered.
    Unreachable(NodeId),
    /// A snapshot sent to a peer arrived and was installed (`ok`), or failed.
    Snapshot {
        /// The peer.
        to: NodeId,
        /// Whether it arrived and was installed.
        ok: bool,
    },
}

/// The transport's end of the driver's report channel. Cheap to clone (one per peer sender).
/// Reports are dropped only when the driver is overloaded or gone; Raft recovers from a lost
/// report (it probes again, or times the snapshot out).
#[derive(Debug, Clone)]
pub struct Reporter {
    pub(crate) tx: mpsc::Sender<Report>,
}

impl Reporter {
    /// Report that `to` could not be reached.
    pub fn unreachable(&self, to: NodeId) {
        let _ = self.tx.try_send(Report::Unreachable(to));
    }

    /// Report whether the snapshot sent to `to` arrived and was installed (`ok`).
    pub fn snapshot(&self, to: NodeId, ok: bool) {
        let _ = self.tx.try_send(Report::Snapshot { to, ok });
    }
}

/// The state machine could not apply, restore or compact; the driver stops the node. The cause
/// is kept as the source (a storage failure, a record that does not decode, ...).
#[derive(Debug, Error)]
#[error("state machine failure: {0}")]
pub struct StateMachineError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl StateMachineError {
    /// Wraps any error, or a message (`&str`/`String`) when there is no error value.
    pub fn new(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StateMachineError {
        StateMachineError(cause.into())
    }
}

/// One committed client command, with the proposer's envelope already removed.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    /// Index of the entry that carried it.
    pub index: Index,
    /// The term of the entry that carried it.
    pub term: Term,
    /// The command as proposed.
    pub data: &'a [u8],
}

/// A batch of committed entries to apply. `applied`/`applied_term`/`conf` describe the state
/// after the whole batch; durable implementations record them atomically with the effects, so a
/// restart resumes from `applied` without replaying the log.
#[derive(Debug)]
pub struct ApplyBatch<'a> {
    /// The client commands, in log order.
    pub commands: Vec<Command<'a>>,
    /// The batch's membership changes with their log indexes, so that state kept about members
    /// can follow them in log order among `commands`.
    pub conf_changes: Vec<(Index, ConfChange)>,
    /// Index of the last entry in the batch.
    pub applied: Index,
    /// Term of that entry.
    pub applied_term: Term,
    /// The membership after the batch.
    pub conf: &'a ConfState,
}

/// The replicated application. It gets mutable access to the log storage because a durable
/// state machine (redb) lives in the same database and commits applied state with it.
pub trait StateMachine<S: LogStorage>: Send + 'static {
    /// The answer to one command, returned to whoever proposed it. Computed on every replica.
    type Output: Send + 'static;

    /// Apply the batch in order; one output per command. Must be deterministic.
    fn apply(
        &mut self,
        storage: &mut S,
        batch: ApplyBatch<'_>,
    ) -> Result<Vec<Self::Output>, StateMachineError>;

    /// Replace the state with `snapshot`, which the driver has already installed in `storage`.
    fn restore(&mut self, storage: &mut S, snapshot: &Snapshot) -> Result<(), StateMachineError>;

    /// `applied` moved `snapshot_count` entries past the last compaction: snapshot and trim the log.
    fn compact(&mut self, storage: &mut S, applied: Index) -> Result<(), StateMachineError>;
}
