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
    #[error("stream stalled for {0:?}, dropped")]
    Stalled(Duration),
    #[error("stream closed as it was opened")]
    StreamClosed,
    #[error("direct stream broken: {0}")]
    Direct(#[source] std::io::Error),
    #[error("{url}: cannot open a direct stream: {source}")]
    DirectOpen {
        url: String,
        #[source]
        source: super::direct::OpenError,
    },
    #[error("{url}: {failure}")]
    Exchange {
        url: String,
        #[source]
        failure: HttpFailure,
    },
}

/// How one HTTP exchange with a peer failed. The peer transport and start-up's member-list
/// fetch talk to the same listeners through the same kind of client, so they fail the same ways.
#[derive(Debug, thiserror::Error)]
pub enum HttpFailure {
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("timed out")]
    Timeout,
    /// The connection or the exchange failed; the message carries the whole cause chain
    /// (hyper-util's own says only "client error (Connect)").
    #[error("{}", super::error_chain(.0))]
    Http(#[source] hyper_util::client::legacy::Error),
    #[error("HTTP {0}")]
    Status(hyper::StatusCode),
}

impl HttpFailure {
    /// This failure, of the exchange with `url`.
    pub fn at(self, url: impl Into<String>) -> SendError {
        SendError::Exchange {
            url: url.into(),
            failure: self,
        }
    }
}

/// Sends `req`, giving up after `timeout`; whatever status comes back is the caller's to judge.
pub async fn request_within<C, B>(
    client: &hyper_util::client::legacy::Client<C, B>,
    req: hyper::Request<B>,
    timeout: Duration,
) -> Result<hyper::Response<hyper::body::Incoming>, HttpFailure>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => Err(HttpFailure::Timeout),
        Ok(Err(e)) => Err(HttpFailure::Http(e)),
        Ok(Ok(resp)) => Ok(resp),
    }
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
