//! Rendering a key-space event as the response body, whole or streamed by size.
//!
//! Why not `serde_json::to_vec`: a recursive listing of a large directory is hundreds of MiB of
//! JSON (a million 256-byte values: 321 MiB). Built into a growing `Vec`, every doubling copies
//! what was written into fresh pages the kernel must fault in and zero; `perf` of such a
//! listing put 69% of its time in page faults under `memmove`, and the whole body sat in memory
//! on top of the node tree it was rendered from. So a body is sized from the tree first: a small
//! one is written into a buffer of about its size (one allocation, a `Content-Length`); a large
//! one is rendered on a blocking thread into fixed-size chunks that flow to the socket as the
//! client reads them (chunked transfer encoding, as etcd's Go server sends large bodies).
//! Rendering stops when the client goes away. A client that stops reading holds its blocking
//! thread until its connection closes, so at most [`MAX_STREAMING`] renders stream at once;
//! beyond that a large body is rendered here into a list of chunks (held whole, as before, but
//! without the doubling), and the blocking pool stays free for the rest (bcrypt, snapshots).

use std::io;

use bytes::Bytes;
use deimos_api::keys::Node as NodeExtern;
use deimos_store::keyspace::Event;
use tokio::sync::{mpsc, Semaphore};

use super::response::{full, json_body, Resp};

/// Estimated bodies larger than this are streamed.
const STREAM_ABOVE: usize = 1 << 20;
/// Size of each streamed chunk.
const CHUNK: usize = 64 << 10;
/// Large bodies streamed from blocking threads at once.
const MAX_STREAMING: usize = 8;
static STREAMING: Semaphore = Semaphore::const_new(MAX_STREAMING);
/// Chunks rendered ahead of the socket.
const CHUNKS_AHEAD: usize = 4;
/// JSON around one node besides its key and value: field names, indexes, punctuation.
const PER_NODE: usize = 64;

/// Roughly the JSON length of `n` and everything below it (escaping aside). Walks the tree
/// with an explicit stack: its depth is bounded by the key depth limit, but a walk need not
/// rely on that.
fn approx_len(n: &NodeExtern) -> usize {
    let mut total = 0usize;
    let mut stack = vec![n];
    while let Some(n) = stack.pop() {
        total = total
            .saturating_add(PER_NODE)
            .saturating_add(n.key.len())
            .saturating_add(n.value.as_ref().map_or(0, String::len))
            .saturating_add(n.expiration.as_ref().map_or(0, |e| e.len() + 32));
        stack.extend(n.children());
    }
    total
}

/// `ev` as a JSON response body with a trailing newline, as etcd writes it.
pub fn event_json(status: u16, ev: Event) -> Resp {
    let estimate = approx_len(&ev.node)
        .saturating_add(ev.prev_node.as_deref().map_or(0, approx_len))
        .saturating_add(PER_NODE);
    let body = if estimate <= STREAM_ABOVE {
        let mut buf = Vec::with_capacity(estimate + estimate / 4);
        if serde_json::to_writer(&mut buf, &ev).is_err() {
            buf = b"{}".to_vec();
        }
        buf.push(b'\n');
        full(buf)
    } else if let Ok(permit) = STREAMING.try_acquire() {
        let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut w = Chunks::new(Sink::Stream(tx));
            let rendered = serde_json::to_writer(&mut w, &ev)
                .map_err(io::Error::from)
                .and_then(|()| {
                    w.buf.push(b'\n');
                    w.send()
                });
            if let Err(e) = rendered {
                // Only a client that left stops it (the event itself always renders); the body
                // it was reading just ends.
                tracing::debug!(error = %e, "streamed response ended early");
            }
        });
        crate::body::from_channel(rx)
    } else {
        let mut w = Chunks::new(Sink::Keep(Vec::new()));
        // Keeping chunks cannot fail, and the event always renders.
        let _ = serde_json::to_writer(&mut w, &ev);
        w.buf.push(b'\n');
        let _ = w.send();
        match w.sink {
            Sink::Keep(chunks) => crate::body::from_chunks(chunks),
            Sink::Stream(_) => full(""),
        }
    };
    json_body(status, body)
}

/// Where full chunks go.
enum Sink {
    /// To the response body, waiting while [`CHUNKS_AHEAD`] are unread (blocking threads only).
    Stream(mpsc::Sender<Bytes>),
    /// Into a list, sent whole afterwards.
    Keep(Vec<Bytes>),
}

/// A writer that hands out what it is given in [`CHUNK`]-sized pieces.
struct Chunks {
    sink: Sink,
    buf: Vec<u8>,
}

impl Chunks {
    fn new(sink: Sink) -> Chunks {
        Chunks {
            sink,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        match &mut self.sink {
            Sink::Stream(tx) => tx
                .blocking_send(chunk)
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away")),
            Sink::Keep(chunks) => {
                chunks.push(chunk);
                Ok(())
            }
        }
    }
}

impl io::Write for Chunks {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deimos_api::keys::Action;
    use http_body_util::BodyExt;

    fn listing(children: usize, value: &str) -> Event {
        let nodes = (0..children)
            .map(|i| NodeExtern {
                key: format!("/dir/k{i}"),
                value: Some(value.to_string()),
                modified_index: i as u64 + 1,
                created_index: i as u64 + 1,
                ..NodeExtern::default()
            })
            .collect();
        Event {
            action: Action::Get,
            node: NodeExtern {
                key: "/dir".into(),
                dir: true,
                nodes: Some(nodes),
                modified_index: 1,
                created_index: 1,
                ..NodeExtern::default()
            },
            prev_node: None,
            index: 7,
            created: false,
            refresh: false,
        }
    }

    async fn body_of(r: Resp) -> (Option<u64>, Vec<u8>) {
        use hyper::body::Body as _;
        let exact = r.body().size_hint().exact();
        let bytes = r.into_body().collect().await.expect("body").to_bytes();
        (exact, bytes.to_vec())
    }

    #[tokio::test]
    async fn small_and_streamed_bodies_are_the_same_json() {
        for (children, streamed) in [(3, false), (20_000, true)] {
            let ev = listing(children, "v\"quoted\"");
            let mut want = serde_json::to_vec(&ev).expect("json");
            want.push(b'\n');
            let (exact, got) = body_of(event_json(200, ev)).await;
            assert_eq!(got, want, "{children} children");
            // A small body has its length up front; a large one is a stream of chunks.
            assert_eq!(exact.is_none(), streamed, "{children} children");
        }
    }

    #[tokio::test]
    async fn with_every_stream_taken_a_large_body_is_kept_whole_and_the_same() {
        // As if MAX_STREAMING clients had stopped reading their listings.
        let held = STREAMING
            .acquire_many(MAX_STREAMING as u32)
            .await
            .expect("not closed");
        let ev = listing(20_000, "v");
        let mut want = serde_json::to_vec(&ev).expect("json");
        want.push(b'\n');
        let (_, got) = body_of(event_json(200, ev)).await;
        assert_eq!(got, want);
        drop(held);
    }

    #[test]
    fn the_estimate_tracks_the_rendered_size() {
        let ev = listing(1000, &"x".repeat(100));
        let real = serde_json::to_vec(&ev).expect("json").len();
        let est = approx_len(&ev.node);
        assert!(
            est >= real / 2 && est <= real * 2,
            "estimate {est} for {real} bytes"
        );
    }

    #[test]
    fn a_client_that_leaves_stops_the_rendering() {
        use std::io::Write as _;
        let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
        let mut w = Chunks::new(Sink::Stream(tx));
        w.write_all(&[b'x'; CHUNK]).expect("a reader is there");
        drop(rx);
        let e = w.write_all(&[b'x'; CHUNK]).expect_err("nobody reads");
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        // serde_json stops at the first failed write.
        let r = serde_json::to_writer(&mut w, &listing(10_000, "v"));
        assert!(r.is_err());
    }
}
