use thiserror::Error;

use crate::storage::StorageError;
use crate::types::NodeId;

/// Why the core refused an input (a proposal, a read, a configuration change) or could not run.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RaftError {
    /// This node cannot accept the request; `leader` is who can, when known.
    #[error("not leader (leader hint: {})", crate::ids::MaybeId(*leader))]
    NotLeader {
        /// The leader this node knows of, if any: where to retry.
        leader: Option<NodeId>,
    },
    /// A membership change is already in flight or the new leader has not yet committed an entry
    /// of its term; retry later.
    #[error("a configuration change is pending")]
    ConfChangePending,
    /// What is wrong with the change (e.g. removing the last voter, adding a member twice).
    #[error("invalid configuration change: {0}")]
    InvalidConfChange(String),
    /// Leadership is being handed over: proposals and membership changes are refused until a
    /// transfer completes or aborts, and proposals also while a leader is removing itself (so
    /// that once the removal applies, a follower that acknowledged it holds the whole log and
    /// can take over at once).
    #[error("leader transfer in progress")]
    TransferInProgress,
    /// A [`Config`](crate::Config) the core cannot run with; the message names the setting.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The log storage failed while the core read from it.
    #[error(transparent)]
    Storage(#[from] StorageError),
}
