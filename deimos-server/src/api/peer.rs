//! The peer listener: Raft messages in.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use deimos_raft::types::{Message, MessageBody};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request};

use super::peer_auth::{authenticate, check_message};
use super::response::{self, Resp};
use crate::identity::{CLUSTER_ID_HEADER, MEMBERS_PATH};
use crate::node::App;
use crate::transport::direct;
use crate::transport::frame::{read_stream, Decoder, Source, StreamCut, MAX_FRAME_BYTES};
use crate::transport::{decode_batch, decode_snapshot, MESSAGES_PATH, SNAPSHOT_PATH, STREAM_PATH};

const MAX_SNAPSHOT_BYTES: usize = 1 << 30;

pub async fn route(app: Arc<App>, mut req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    if req.method() == Method::GET && path == MEMBERS_PATH {
        // How a joining member learns its id and the cluster's (see `identity`).
        let mut r = super::members::member_list(&app);
        if let Ok(v) = http::HeaderValue::from_str(&format!("{:016x}", app.cluster_id)) {
            r.headers_mut().insert(CLUSTER_ID_HEADER, v);
        }
        return r;
    }
    if req.method() != Method::POST {
        return response::text(405, "Method Not Allowed\n");
    }
    if !matches!(path.as_str(), STREAM_PATH | MESSAGES_PATH | SNAPSHOT_PATH) {
        return response::text(404, "404 page not found\n");
    }
    let sender = match authenticate(&app, &req) {
        Ok(s) => s,
        Err(refused) => return refused,
    };
    match path.as_str() {
        STREAM_PATH if direct::wants_upgrade(req.headers()) => {
            let slot = req.extensions_mut().remove::<super::ConnSlot>();
            let driver = app.driver_rt.get().cloned();
            let place = app.inbound.open(sender);
            let to = app.clone();
            direct::accept(&mut req, driver, slot, place, move |msgs| {
                deliver(&to, sender, msgs).map_err(|r| format!("batch refused: {}", r.status()))
            })
        }
        STREAM_PATH => stream(&app, sender, req.into_body()).await,
        MESSAGES_PATH => {
            let (_, body) = match super::read_body(req, MAX_FRAME_BYTES).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match decode_batch(&body) {
                Ok(msgs) => match deliver(&app, sender, msgs) {
                    Ok(()) => response::text(204, ""),
                    Err(refused) => refused,
                },
                Err(e) => response::text(400, &e.to_string()),
            }
        }
        _ => snapshot(&app, sender, req).await,
    }
}

/// One snapshot at a time: its body is held in memory (up to `MAX_SNAPSHOT_BYTES`), so
/// concurrent ones — even from members — must not add up. A sender refused with 503 reports
/// the snapshot failed and is sent it again later.
static SNAPSHOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

async fn snapshot(app: &App, sender: u64, req: Request<Incoming>) -> Resp {
    let Ok(_permit) = SNAPSHOTS.try_acquire() else {
        return response::text(503, "another snapshot is being received; retry\n");
    };
    let (_, body) = match super::read_body(req, MAX_SNAPSHOT_BYTES).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match decode_snapshot(body) {
        Ok(m) => match check_message(app, sender, m.from, m.to) {
            Ok(()) => {
                app.handle.step(m);
                response::text(204, "")
            }
            Err(refused) => refused,
        },
        Err(e) => response::text(400, &e.to_string()),
    }
}

/// Step every frame of a message stream as it completes. The answer goes out only when the
/// stream ends: 204 when the sender closed it, it went idle or the sender opened a newer one
/// (see `transport::inbound`), 400 for a corrupt frame (the stream cannot be resynchronised,
/// so it is cut and the sender opens a new one).
async fn stream(app: &App, sender: u64, body: Incoming) -> Resp {
    let place = app.inbound.open(sender);
    let deliver = |msgs| deliver(app, sender, msgs);
    match read_stream(
        Decoder::default(),
        HttpBody(body),
        place.replaced(),
        deliver,
    )
    .await
    {
        // Replaced: the sender moved on to a newer stream, which is not a failure.
        Ok(()) | Err(StreamCut::Replaced) => response::text(204, ""),
        Err(StreamCut::Refused(refused)) => refused,
        Err(StreamCut::Corrupt(e)) => {
            tracing::warn!(error = %e, "dropping a corrupt peer stream");
            response::text(400, &e.to_string())
        }
        Err(StreamCut::Broken(e)) => response::text(400, &format!("stream broken: {e}")),
    }
}

/// A request body read as a stream [`Source`].
struct HttpBody(Incoming);

impl Source for HttpBody {
    async fn fill(&mut self, decoder: &mut Decoder) -> Result<bool, String> {
        match self.0.frame().await {
            None => Ok(false),
            Some(Err(e)) => Err(e.to_string()),
            Some(Ok(frame)) => {
                // Trailers carry no frames.
                if let Ok(data) = frame.into_data() {
                    decoder.push(&data);
                }
                Ok(true)
            }
        }
    }
}

/// Step a batch from `sender` (authenticated); refused whole if a message in it is not from
/// the sender or not to this node.
fn deliver(app: &App, sender: u64, msgs: Vec<Message>) -> Result<(), Resp> {
    for m in &msgs {
        check_message(app, sender, m.from, m.to)?;
        // Snapshots go to /raft/snapshot, where their data is checked before Raft sees them.
        if matches!(m.body, MessageBody::InstallSnapshot { .. }) {
            return Err(response::text(
                400,
                "snapshots are accepted only at /raft/snapshot\n",
            ));
        }
    }
    app.stats.recv_batches.fetch_add(1, Ordering::Relaxed);
    app.stats
        .recv_messages
        .fetch_add(msgs.len() as u64, Ordering::Relaxed);
    for m in msgs {
        if let MessageBody::HeartbeatResp { round } = m.body {
            if app.stats.heartbeat_answered(m.from, m.term, round) {
                tracing::info!(peer = %format!("{:016x}", m.from), "peer reachable again");
            }
        }
        app.handle.step(m);
    }
    Ok(())
}
