//! A peer's sender task: what the driver does not write itself on a direct stream — batches
//! while a direct stream is being opened (or behind others still queued), snapshots, and
//! everything to peers that get an HTTP-body stream (`https://`, or a version from before
//! direct streams) or one request per batch (a version from before streams).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deimos_raft::driver::Reporter;
use deimos_raft::types::{Message, MessageBody};
use deimos_store::machine::SharedMembers;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use tokio::sync::mpsc;

use super::{direct, frame, peer_base, Direct, DirectSlot, Identity};
use super::{request_within, HttpFailure, SendError};
use super::{
    LEGACY_RETRY, MAX_BATCH, MESSAGES_PATH, PEER_SEND_FAILURES, PEER_SENT_MESSAGES, SNAPSHOT_CHUNK,
    SNAPSHOT_PATH, STALL_TIMEOUT, STREAM_PATH, STREAM_QUEUE,
};
use crate::body::Body;
use crate::stats::ServerStats;
use crate::tls::PeerConnector;

/// One peer's sender task (see `run`), and what it shares with the driver's `Link`.
#[derive(Clone)]
pub(super) struct Peer {
    pub(super) to: u64,
    pub(super) hint: Option<String>,
    pub(super) members: SharedMembers,
    pub(super) stats: Arc<ServerStats>,
    pub(super) reporter: Reporter,
    pub(super) client: Client<PeerConnector, Body>,
    /// When the peer last answered a stream with 404 (it predates streams), if it did.
    pub(super) legacy_since: Refused,
    /// When the peer last refused a direct stream (it predates them), if it did.
    pub(super) no_direct_since: Refused,
    /// Shared with the driver's [`Link`].
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) direct: DirectSlot,
    pub(super) driver_rt: direct::DriverRuntime,
    pub(super) bind: Option<std::net::IpAddr>,
    pub(super) removed: Arc<tokio::sync::Notify>,
    pub(super) identity: Identity,
}

/// The sending end of one open stream. It is dead once its request has finished: closed by
/// the peer when idle (not a failure), or broken (the task awaiting it reports the failure).
struct Stream {
    /// Where it goes: a member whose peer URL changed gets a new stream at the new one.
    url: String,
    tx: mpsc::Sender<Bytes>,
    done: Arc<AtomicBool>,
}

impl Stream {
    fn is_open(&self) -> bool {
        !self.done.load(Ordering::Acquire) && !self.tx.is_closed()
    }
}

impl Peer {
    pub(super) async fn run(self, mut rx: mpsc::UnboundedReceiver<Message>) {
        let label = format!("{:016x}", self.to);
        let mut stream = None;
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let taken = batch.len();
            let (snapshots, batch): (Vec<Message>, Vec<Message>) = batch
                .into_iter()
                .partition(|m| matches!(m.body, MessageBody::InstallSnapshot { .. }));
            if !batch.is_empty() {
                let n = batch.len() as u64;
                match self.stream_batch(&mut stream, &batch).await {
                    Ok(()) => {
                        self.stats.record_sent(n);
                        metrics::counter!(PEER_SENT_MESSAGES, "to" => label.clone()).increment(n)
                    }
                    Err(e) => self.failed(&label, &e),
                }
            }
            for s in snapshots {
                let index = match &s.body {
                    MessageBody::InstallSnapshot { snapshot } => snapshot.meta.index,
                    _ => 0,
                };
                let started = Instant::now();
                let ok = self.post_snapshot(&s).await;
                match &ok {
                    Ok(bytes) => tracing::info!(
                        peer = %label,
                        index,
                        bytes,
                        duration = ?started.elapsed(),
                        "snapshot sent"
                    ),
                    Err(e) => {
                        tracing::warn!(peer = %label, index, error = %e, "snapshot send failed");
                        metrics::counter!(PEER_SEND_FAILURES, "to" => label.clone()).increment(1);
                    }
                }
                self.reporter.snapshot(self.to, ok.is_ok());
            }
            self.queued.fetch_sub(taken, Ordering::AcqRel);
        }
    }

    /// Send one batch: as a frame queued on the open stream (opening one if there is none), or
    /// as one request to a peer without streams. A stream found closed on the way is replaced
    /// once, so a peer that restarted gets this batch on the new one.
    async fn stream_batch(
        &self,
        stream: &mut Option<Stream>,
        batch: &[Message],
    ) -> Result<(), SendError> {
        for m in batch {
            if let MessageBody::Heartbeat { round, .. } = m.body {
                self.stats.heartbeat_sent(self.to, m.term, round);
            }
        }
        let mut frame = frame::encode(batch)?;
        frame = match self.send_direct(frame).await {
            Ok(()) => return Ok(()),
            Err(Fallback::Fail(e)) => return Err(e),
            Err(Fallback::Http(frame)) => frame,
        };
        if self.legacy_since.recently() {
            // A request per batch carries the batch as a frame does, without the length.
            let body = frame.slice(frame::LEN_BYTES..);
            return self.post(MESSAGES_PATH, Full::new(body).boxed()).await;
        }
        let url = self.url(STREAM_PATH)?;
        for _ in 0..2 {
            let s = match stream {
                Some(s) if s.is_open() && s.url == url => s,
                _ => stream.insert(self.open(url.clone())),
            };
            match s.tx.send_timeout(frame, STALL_TIMEOUT).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    *stream = None;
                    return Err(SendError::Stalled(STALL_TIMEOUT));
                }
                Err(mpsc::error::SendTimeoutError::Closed(f)) => {
                    *stream = None;
                    frame = f;
                }
            }
        }
        Err(SendError::StreamClosed)
    }

    /// Send `frame` on the direct stream, opening one if there is none. Gives the frame back
    /// when the peer should get an HTTP-body stream instead: an https peer, no driver runtime,
    /// or a peer that refused a direct stream less than `LEGACY_RETRY` ago.
    async fn send_direct(&self, frame: Bytes) -> Result<(), Fallback> {
        let Some(rt) = self.driver_rt.get().cloned() else {
            return Err(Fallback::Http(frame));
        };
        let base = self.url("").map_err(Fallback::Fail)?;
        if !base.starts_with("http://") || self.no_direct_since.recently() {
            return Err(Fallback::Http(frame));
        }
        {
            let mut slot = self
                .direct
                .lock()
                .map_err(|_| Fallback::Fail(SendError::Poisoned))?;
            match slot.as_ref() {
                Some(d) if d.base == base && d.sink.write(&frame) => return Ok(()),
                Some(d) => {
                    d.sink.close();
                    *slot = None;
                }
                None => {}
            }
        }
        let url = format!("{base}{STREAM_PATH}");
        let socket = match direct::open(&url, self.bind, |b| self.identity.stamp(b)).await {
            Ok(s) => s,
            Err(direct::OpenError::Refused(status)) if status == hyper::StatusCode::GONE => {
                self.refused_as_removed(&url);
                return Err(Fallback::Fail(HttpFailure::Status(status).at(url)));
            }
            Err(direct::OpenError::Refused(status))
                if status.is_success() || status == hyper::StatusCode::NOT_FOUND =>
            {
                // A member from before direct streams: it took the request as an (empty)
                // HTTP-body stream, or does not know streams at all.
                if self.no_direct_since.now() {
                    tracing::info!(peer = %format!("{:016x}", self.to), %url, "peer does not accept direct streams (an older version): using an HTTP-body stream, retrying every {LEGACY_RETRY:?}");
                }
                return Err(Fallback::Http(frame));
            }
            Err(e) => return Err(Fallback::Fail(SendError::DirectOpen { url, source: e })),
        };
        let sink = direct::Sink::new(frame);
        if let Ok(mut slot) = self.direct.lock() {
            *slot = Some(Direct {
                base,
                sink: sink.clone(),
            });
        }
        let peer = self.clone();
        rt.spawn(async move {
            let end = direct::run_sink(sink.clone(), socket).await;
            if let Ok(mut slot) = peer.direct.lock() {
                if slot.as_ref().is_some_and(|d| Arc::ptr_eq(&d.sink, &sink)) {
                    *slot = None;
                }
            }
            if let direct::End::Failed(e) = end {
                peer.failed(&format!("{:016x}", peer.to), &e);
            }
        });
        Ok(())
    }

    /// Start the request that carries a new stream. Its body is fed by the returned sender;
    /// a task awaits the response, which comes only when the stream ends, and reports the
    /// failure if it ended badly (peer gone, connection reset, refused).
    fn open(&self, url: String) -> Stream {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let done = Arc::new(AtomicBool::new(false));
        let req = self
            .identity
            .stamp(hyper::Request::post(&url))
            .header("content-type", "application/octet-stream")
            .body(crate::body::from_channel(rx));
        let response = req.map(|req| self.client.request(req));
        let peer = self.clone();
        let flag = done.clone();
        let to = url.clone();
        tokio::spawn(async move {
            let res = match response {
                Err(e) => Err(HttpFailure::Request(e).at(to)),
                Ok(response) => match response.await {
                    Ok(resp) if resp.status().is_success() => Ok(()),
                    Ok(resp) if resp.status() == hyper::StatusCode::GONE => {
                        peer.refused_as_removed(&to);
                        Ok(())
                    }
                    Ok(resp) if resp.status() == hyper::StatusCode::NOT_FOUND => {
                        // Not a failure (it would keep the unreachable alert firing through
                        // a rolling upgrade): the peer is up and takes the old requests.
                        // What this stream carried is lost, which Raft repairs like any loss.
                        peer.fell_back(&to);
                        Ok(())
                    }
                    Ok(resp) => Err(HttpFailure::Status(resp.status()).at(to)),
                    Err(source) => Err(HttpFailure::Http(source).at(to)),
                },
            };
            flag.store(true, Ordering::Release);
            if let Err(e) = res {
                peer.failed(&format!("{:016x}", peer.to), &e);
            }
        });
        Stream { url, tx, done }
    }

    /// The peer refused us with 410: this member was removed from the cluster while it could
    /// not hear of it. It stops rather than campaign, unheard, for ever.
    fn refused_as_removed(&self, url: &str) {
        tracing::error!(peer = %format!("{:016x}", self.to), %url, "a peer says this member was removed from the cluster; stopping");
        self.removed.notify_one();
    }

    /// The peer does not know `/raft/stream`: a member from before streams, in a cluster being
    /// upgraded one member at a time. It gets one request per batch, which it does accept.
    fn fell_back(&self, url: &str) {
        if self.legacy_since.now() {
            tracing::info!(peer = %format!("{:016x}", self.to), %url, "peer does not accept message streams (an older version): sending one request per batch, retrying a stream every {LEGACY_RETRY:?}");
        }
    }

    /// Count a failure and tell Raft. Logged at warn once per outage (a peer is retried every
    /// heartbeat, so logging each would flood the log); recovery is logged when the peer next
    /// acknowledges a heartbeat.
    fn failed(&self, label: &str, e: &SendError) {
        if self.stats.record_failure(self.to) {
            tracing::warn!(peer = %label, error = %e, "peer send failed (further failures logged at debug until it recovers)");
        } else {
            tracing::debug!(peer = %label, error = %e, "peer send failed");
        }
        metrics::counter!(PEER_SEND_FAILURES, "to" => label.to_string()).increment(1);
        self.reporter.unreachable(self.to);
    }

    fn url(&self, path: &str) -> Result<String, SendError> {
        Ok(peer_base(&self.members, self.hint.as_ref(), self.to)? + path)
    }

    async fn post(&self, path: &str, body: Body) -> Result<(), SendError> {
        let url = self.url(path)?;
        let req = self
            .identity
            .stamp(hyper::Request::post(&url))
            .header("content-type", "application/octet-stream")
            .body(body)
            .map_err(|e| HttpFailure::Request(e).at(&url))?;
        let resp = request_within(&self.client, req, Duration::from_secs(5))
            .await
            .map_err(|f| f.at(&url))?;
        let status = resp.status();
        // Drain so the connection returns to the pool.
        let _ = resp.into_body().collect().await;
        if status == hyper::StatusCode::GONE {
            self.refused_as_removed(&url);
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(HttpFailure::Status(status).at(url))
        }
    }

    /// The snapshot message goes as its encoding, streamed in chunks so that neither side needs
    /// a second full copy in a single buffer on the wire path.
    /// Returns the bytes sent.
    async fn post_snapshot(&self, m: &Message) -> Result<usize, SendError> {
        let bytes = Bytes::from(postcard::to_stdvec(m)?);
        let len = bytes.len();
        let chunks: Vec<Bytes> = (0..bytes.len())
            .step_by(SNAPSHOT_CHUNK)
            .map(|i| bytes.slice(i..(i + SNAPSHOT_CHUNK).min(bytes.len())))
            .collect();
        let body = crate::body::from_chunks(chunks);
        self.post(SNAPSHOT_PATH, body).await.map(|()| len)
    }
}

/// When a peer last refused a kind of stream (it predates it), if it did: it gets the older
/// kind until `LEGACY_RETRY` has passed, then the newer one is tried again.
#[derive(Clone, Default)]
pub(super) struct Refused(Arc<Mutex<Option<Instant>>>);

impl Refused {
    /// Note a refusal; true for the first one (logged once: later ones only renew it).
    fn now(&self) -> bool {
        let Ok(mut since) = self.0.lock() else {
            return false;
        };
        since.replace(Instant::now()).is_none()
    }

    /// Whether the older kind is still due.
    fn recently(&self) -> bool {
        self.0
            .lock()
            .is_ok_and(|since| since.is_some_and(|t| t.elapsed() < LEGACY_RETRY))
    }
}

/// Why a frame did not go on a direct stream.
enum Fallback {
    /// Send it on an HTTP-body stream instead.
    Http(Bytes),
    /// The send failed.
    Fail(SendError),
}
