//! `GET /v2/snapshot`: a consistent online backup of this member's state, streamed.
//!
//! etcd v2 has no backup over HTTP (its `etcdctl backup` copies a stopped member's files), and
//! etcd v3 streams one over gRPC; Deimos serves it on the client listener, beside the other
//! `/v2/...` operator endpoints. The body is the snapshot stream Raft sends a lagging follower
//! (`deimos_store::persist::snapshot`), which `deimosctl snapshot save` writes to a file.
//!
//! Why it reflects every write acknowledged before the request: the request first waits for a
//! linearizable read point (the lease, or ReadIndex through the leader) and for this member to
//! apply up to it; the stream is then taken from one redb read transaction opened after that,
//! so its index is at least the read point. Writes go on meanwhile; the stream keeps showing
//! the state at its start.
//!
//! Why memory stays bounded: the records are read lazily from that transaction and sent a chunk
//! at a time through a small channel, so a slow client holds back the reader, not a buffer. A
//! read transaction keeps redb from reusing pages freed after it, so a backup is limited to one
//! at a time, and one whose client stops reading for `STALL` is abandoned.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deimos_store::persist::{RedbStorage, SnapshotEncoder};
use tokio::sync::{mpsc, oneshot};

use super::response::{self, Resp};
use crate::node::App;

/// Bytes per body chunk; with `IN_FLIGHT` chunks queued, what one backup holds in memory.
const CHUNK: usize = 256 << 10;
const IN_FLIGHT: usize = 4;
/// A client that takes no chunk for this long is dropped (its read transaction pins pages).
const STALL: Duration = Duration::from_secs(60);

/// One backup at a time (see the module docs).
static BACKUPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Response headers naming what the stream holds, so a client can report it before the end.
pub const INDEX_HEADER: &str = "x-deimos-snapshot-index";
pub const TERM_HEADER: &str = "x-deimos-snapshot-term";

pub async fn snapshot(app: Arc<App>) -> Resp {
    let Ok(permit) = BACKUPS.try_acquire() else {
        return response::message(503, "another snapshot is being taken; retry later");
    };
    if let Err(e) = app.handle.linearizable_read(false).await {
        return response::message(503, &format!("cannot reach a linearizable read point: {e}"));
    }
    // Everything acknowledged before this request is applied here now.
    let wanted = app.handle.applied_index();
    let enc = match open_encoder(&app).await {
        Ok(e) => e,
        Err(e) => return response::message(500, &format!("cannot start the snapshot: {e}")),
    };
    let (index, term) = (enc.meta().index, enc.meta().term);
    if index < wanted {
        // Cannot happen while the driver stages applied records before it answers readers;
        // checked because the guarantee is the point of this endpoint.
        return response::message(
            503,
            &format!("snapshot index {index} is behind the read point {wanted}; retry"),
        );
    }
    tracing::info!(index, term, "streaming a snapshot to a client");
    let (tx, rx) = mpsc::channel::<Bytes>(IN_FLIGHT);
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        stream(enc, &tx, &rt);
    });
    hyper::Response::builder()
        .status(200)
        .header("content-type", "application/octet-stream")
        .header(INDEX_HEADER, index)
        .header(TERM_HEADER, term)
        .body(crate::body::from_channel(rx))
        .unwrap_or_else(|_| hyper::Response::new(response::full("")))
}

/// Ask the Raft loop for a read transaction of the applied state, after writing what it has
/// staged (applied records ride with the next durable write; a read transaction sees only what
/// is written).
async fn open_encoder(app: &App) -> Result<SnapshotEncoder, OpenError> {
    let (tx, rx) = oneshot::channel();
    app.handle
        .with_storage(Box::new(move |s| {
            let r = match s.downcast_mut::<RedbStorage>() {
                Some(st) => st
                    .write_staged()
                    .map_err(OpenError::Stage)
                    .and_then(|()| st.snapshot_encoder(CHUNK).map_err(OpenError::Read)),
                None => Err(OpenError::NotRedb),
            };
            let _ = tx.send(r);
        }))
        .await?;
    rx.await.map_err(|_| OpenError::Dropped)?
}

/// Why a backup could not start.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("writing the staged applied records: {0}")]
    Stage(#[source] deimos_raft::storage::StorageError),
    #[error("opening a read transaction: {0}")]
    Read(#[source] deimos_store::persist::PersistError),
    #[error("the store is not redb")]
    NotRedb,
    #[error(transparent)]
    Driver(#[from] deimos_raft::driver::DriverError),
    #[error("the raft loop dropped the request")]
    Dropped,
}

/// Send the chunks until the end or until the client goes away. On a failure the stream just
/// stops: the body ends without its trailer, which every reader refuses as truncated.
fn stream(enc: SnapshotEncoder, tx: &mpsc::Sender<Bytes>, rt: &tokio::runtime::Handle) {
    let mut sent = 0u64;
    for chunk in enc {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "snapshot stream failed; the client sees it truncated");
                return;
            }
        };
        sent += chunk.len() as u64;
        match rt.block_on(tokio::time::timeout(STALL, tx.send(Bytes::from(chunk)))) {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                tracing::info!(sent, "snapshot client went away");
                return;
            }
            Err(_) => {
                tracing::warn!(sent, "snapshot client stopped reading; abandoned");
                return;
            }
        }
    }
    tracing::info!(bytes = sent, "snapshot sent");
}
