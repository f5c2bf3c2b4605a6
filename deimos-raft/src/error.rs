use thiserror::Error;

use crate::storage::StorageError;
use crate::types::NodeId;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RaftError {
    /// This node cannot accept the request; `leader` is who can, when known.
    #[error("not leader (leader hint: {})", crate::ids::MaybeId(*leader))]
    NotLeader { leader: Option<NodeId> },
    /// A membership change is already in flight or the new leader has not yet committed an entry
    /// of its term; retry later.
    #[error("a configuration change is pending")]
    ConfChangePending,
    #[error("invalid configuration change: {0}")]
    InvalidConfChange(String),
    /// Leadership is being transferred; proposals are refused until it completes or aborts.
    #[error("leader transfer in progress")]
    TransferInProgress,
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}
