//! Why a batch or a snapshot did not reach a peer, and why one received was refused.

use std::time::Duration;

/// A send that failed; Raft is told the peer is unreachable and repairs the loss.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot encode messages: {0}")]
    Encode(#[from] postcard::Error),
    #[error("message batch of {0} bytes is too large")]
    TooLarge(usize),
    #[error("unknown peer {0:016x}")]
    UnknownPeer(u64),
    #[error("members lock poisoned")]
    Poisoned,
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("stream stalled for {0:?}, dropped")]
    Stalled(Duration),
    #[error("stream closed as it was opened")]
    StreamClosed,
    #[error("{url}: timed out")]
    Timeout { url: String },
    /// The connection or the exchange failed; the message carries the whole cause chain
    /// (hyper-util's own says only "client error (Connect)").
    #[error("{url}: {}", super::error_chain(source))]
    Http {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{url}: HTTP {status}")]
    Status {
        url: String,
        status: hyper::StatusCode,
    },
}

/// A peer body that is not a well-formed batch or snapshot: answered 400, never given to Raft.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("bad message batch: {0}")]
    Batch(#[source] postcard::Error),
    #[error("frame of {0} bytes exceeds the {max}-byte limit", max = super::frame::MAX_FRAME_BYTES)]
    FrameTooLarge(usize),
    #[error("bad snapshot message: {0}")]
    Snapshot(#[source] postcard::Error),
    #[error("snapshot endpoint got a non-snapshot message")]
    NotSnapshot,
    #[error("bad snapshot data: {0}")]
    SnapshotData(#[source] deimos_store::persist::PersistError),
    #[error(
        "snapshot data is for index {data_index} term {data_term}, the message says index \
         {index} term {term}"
    )]
    Mismatch {
        data_index: u64,
        data_term: u64,
        index: u64,
        term: u64,
    },
}
