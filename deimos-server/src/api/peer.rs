//! The peer listener: Raft messages in.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use deimos_raft::types::{Message, MessageBody};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request};

use super::response::{self, Resp};
use crate::identity::MEMBERS_PATH;
use crate::node::App;
use crate::transport::frame::{Decoder, MAX_FRAME_BYTES};
use crate::transport::{decode_batch, decode_snapshot, MESSAGES_PATH, SNAPSHOT_PATH, STREAM_PATH};

const MAX_SNAPSHOT_BYTES: usize = 1 << 30;
/// A stream with no frame for this long is ended (answered 204); its sender opens a new one
/// when it next has something to say. It keeps a vanished sender from pinning a connection.
const STREAM_IDLE: Duration = Duration::from_secs(60);

pub async fn route(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    if req.method() == Method::GET && path == MEMBERS_PATH {
        return super::members::member_list(&app);
    }
    if req.method() != Method::POST {
        return response::text(405, "Method Not Allowed\n");
    }
    match path.as_str() {
        STREAM_PATH => stream(&app, req.into_body()).await,
        MESSAGES_PATH => {
            let (_, body) = match super::read_body(req, MAX_FRAME_BYTES).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match decode_batch(&body) {
                Ok(msgs) => match deliver(&app, msgs) {
                    Ok(()) => response::text(204, ""),
                    Err(refused) => refused,
                },
                Err(e) => response::text(400, &e),
            }
        }
        SNAPSHOT_PATH => {
            let (_, body) = match super::read_body(req, MAX_SNAPSHOT_BYTES).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match decode_snapshot(&body) {
                Ok(m) if is_removed(&app, m.from) => removed_sender(m.from),
                Ok(m) if m.to == app.id() => {
                    app.handle.step(m);
                    response::text(204, "")
                }
                Ok(_) => response::text(400, "snapshot for another member"),
                Err(e) => response::text(400, &e),
            }
        }
        _ => response::text(404, "404 page not found\n"),
    }
}

/// Step every frame of a message stream as it completes. The answer goes out only when the
/// stream ends: 204 when the sender closed it or it went idle, 400 for a corrupt frame (the
/// stream cannot be resynchronised, so it is cut and the sender opens a new one).
async fn stream(app: &App, mut body: Incoming) -> Resp {
    let mut decoder = Decoder::default();
    loop {
        let frame = match tokio::time::timeout(STREAM_IDLE, body.frame()).await {
            Err(_) | Ok(None) => return response::text(204, ""),
            Ok(Some(Err(e))) => return response::text(400, &format!("stream broken: {e}")),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        decoder.push(&data);
        loop {
            match decoder.next_batch() {
                Ok(Some(msgs)) => {
                    if let Err(refused) = deliver(app, msgs) {
                        return refused;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "dropping a corrupt peer stream");
                    return response::text(400, &e);
                }
            }
        }
    }
}

/// Counted refusals of peer traffic, by reason.
pub const PEER_REFUSED: &str = "deimos_peer_messages_refused_total";

fn is_removed(app: &App, id: u64) -> bool {
    app.removed.read().is_ok_and(|r| r.contains(&id))
}

/// etcd's answer to a removed member: 410, on which the sender stops.
fn removed_sender(from: u64) -> Resp {
    metrics::counter!(PEER_REFUSED, "reason" => "removed_member").increment(1);
    tracing::warn!(peer = %deimos_raft::ids::Id(from), "refused peer traffic from a removed member");
    response::text(
        410,
        "the member has been permanently removed from the cluster\n",
    )
}

/// Step a batch; refused whole (with the response to send) if a removed member sent it.
fn deliver(app: &App, msgs: Vec<Message>) -> Result<(), Resp> {
    if let Some(m) = msgs.iter().find(|m| is_removed(app, m.from)) {
        return Err(removed_sender(m.from));
    }
    app.stats.recv_batches.fetch_add(1, Ordering::Relaxed);
    app.stats
        .recv_messages
        .fetch_add(msgs.len() as u64, Ordering::Relaxed);
    for m in msgs {
        if m.to != app.id() {
            continue;
        }
        if let MessageBody::HeartbeatResp { round } = m.body {
            if app.stats.heartbeat_answered(m.from, m.term, round) {
                tracing::info!(peer = %format!("{:016x}", m.from), "peer reachable again");
            }
        }
        app.handle.step(m);
    }
    Ok(())
}
