//! The peer listener: Raft messages in.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request};

use super::response::{self, Resp};
use crate::node::App;
use crate::transport::{decode_batch, decode_snapshot, MESSAGES_PATH, SNAPSHOT_PATH};

const MAX_BATCH_BYTES: usize = 64 << 20;
const MAX_SNAPSHOT_BYTES: usize = 1 << 30;

pub async fn route(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    if req.method() != Method::POST {
        return response::text(405, "Method Not Allowed\n");
    }
    match path.as_str() {
        MESSAGES_PATH => {
            let (_, body) = match super::read_body(req, MAX_BATCH_BYTES).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match decode_batch(&body) {
                Ok(msgs) => {
                    app.stats.recv_batches.fetch_add(1, Ordering::Relaxed);
                    app.stats
                        .recv_messages
                        .fetch_add(msgs.len() as u64, Ordering::Relaxed);
                    for m in msgs {
                        if m.to == app.id() {
                            app.handle.step(m);
                        }
                    }
                    response::text(204, "")
                }
                Err(e) => response::text(400, &e),
            }
        }
        SNAPSHOT_PATH => {
            let (_, body) = match super::read_body(req, MAX_SNAPSHOT_BYTES).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match decode_snapshot(&body) {
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
