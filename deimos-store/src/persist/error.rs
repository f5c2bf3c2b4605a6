//! Typed errors of the persistence layer.
//!
//! Opening is where damage is found, so `open` returns [`PersistError`], whose variants name the
//! file and say what is wrong: the operator must be able to tell a corrupt file from a locked one
//! or from a newer format, and nothing is ever "fixed" by starting over with an empty store.
//! After a successful open the `LogStorage` contract speaks `StorageError`; the conversion below
//! keeps `Compacted`/`Unavailable` intact and turns everything else into `Other` with the message.

use std::path::PathBuf;

use deimos_raft::storage::{BackendFailure, StorageError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PersistError {
    /// The data directory or a file in it could not be created, read or synced.
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Another process (or another handle in this one) has the database open.
    #[error("{path}: database is already open (locked by another process or handle)")]
    Locked { path: PathBuf },
    /// The file exists but is not a sound Deimos store: damaged pages, truncation, a missing
    /// table or record, or contents that contradict each other.
    #[error("{path}: database is corrupt: {what}")]
    Corrupt { path: PathBuf, what: String },
    /// The file was written by a different (newer or older) version of the storage format.
    #[error(
        "{path}: unsupported storage format version {found} (this build reads version {expected})"
    )]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    /// A snapshot stream is malformed, truncated, or does not match its metadata.
    #[error("snapshot stream: {0}")]
    Snapshot(String),
    /// A storage operation failed after open (see the message); the node must stop.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<PersistError> for StorageError {
    fn from(e: PersistError) -> Self {
        match e {
            PersistError::Storage(s) => s,
            other => StorageError::Backend(BackendFailure::new("persist", other)),
        }
    }
}

/// A failure of redb (or of the disk under it) after open. Always fatal for the node.
pub(crate) fn backend(
    context: impl Into<std::borrow::Cow<'static, str>>,
    e: impl std::error::Error + Send + Sync + 'static,
) -> StorageError {
    StorageError::Backend(BackendFailure::new(context, e))
}

/// Stored bytes that cannot be what we wrote (decode failure, wrong index under a key, ...).
pub(crate) fn corrupt(what: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(what.to_string())
}

/// A caller asked for something that would break an invariant; nothing was written.
pub(crate) fn invalid(what: impl std::fmt::Display) -> StorageError {
    StorageError::Refused(what.to_string())
}
