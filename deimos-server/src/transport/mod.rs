//! Peer transport over HTTP/1.1: message batches as frames on one long-lived stream per peer
//! (see [`frame`] for the format and why it is a stream).
//!
//! To an `http://` peer the stream is a [`direct`] one, written by the driver itself from its
//! own thread. Otherwise — an `https://` peer, a peer from before direct streams, or while a
//! direct stream is being opened — batches go to a sender task per peer, which streams them in
//! an HTTP request body; while it writes one batch, later messages gather into the next, so a
//! busy leader writes few large frames and never waits for a follower's answer.
//! Snapshots go alone on `/raft/snapshot` with the body streamed in chunks, and their outcome
//! is reported to Raft. Raft tolerates loss: a stream that breaks loses what was in it, and the
//! break is counted and reported as the peer being unreachable.

pub mod direct;
mod error;
pub mod frame;

pub use error::{request_within, DecodeError, HttpFailure, SendError};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deimos_raft::driver::{Reporter, Transport};
use deimos_raft::types::{Message, MessageBody};
use deimos_store::machine::SharedMembers;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

use crate::identity::{CLUSTER_ID_HEADER, SENDER_HEADER};
use crate::stats::ServerStats;
use crate::tls::PeerConnector;

/// One request per batch, as members before the stream sent them; still accepted.
pub const MESSAGES_PATH: &str = "/raft/messages";
pub const STREAM_PATH: &str = "/raft/stream";
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";
const MAX_BATCH: usize = 4096;
const SNAPSHOT_CHUNK: usize = 256 * 1024;
/// Frames queued towards a stream's connection beyond what its socket buffer holds.
const STREAM_QUEUE: usize = 64;
/// How long a peer that refused a stream (a member from before streams) gets one request per
/// batch before a stream is tried again, so that it streams once it has been upgraded.
const LEGACY_RETRY: Duration = Duration::from_secs(30);
/// A stream that takes no frame for this long is stuck (a peer that stopped reading, a dead
/// link TCP has not noticed): it is dropped and a new one opened for the next batch.
pub(crate) const STALL_TIMEOUT: Duration = Duration::from_secs(5);

pub const PEER_SEND_FAILURES: &str = "deimos_network_peer_send_failures_total";
pub const PEER_SENT_MESSAGES: &str = "deimos_network_peer_sent_messages_total";

use crate::body::Body;

pub struct HttpTransport {
    members: SharedMembers,
    stats: Arc<ServerStats>,
    /// Set by the driver when it takes this transport (`Transport::bind`), before any send.
    reporter: Option<Reporter>,
    client: Client<PeerConnector, Body>,
    links: HashMap<u64, Link>,
    /// Where direct streams run (see [`direct`]); unset, every stream is an HTTP body.
    driver_rt: direct::DriverRuntime,
    /// Source address of outgoing connections (see `new`).
    bind: Option<std::net::IpAddr>,
    /// The server's runtime, where each peer's sender runs: the driver calling `send` runs on
    /// a thread of its own, which each fsync blocks.
    runtime: tokio::runtime::Handle,
    /// Peer URLs from the flags, for members whose replicated record this node has not applied
    /// yet (a node joining an existing cluster must answer the leader before it catches up).
    hints: HashMap<u64, String>,
    /// Notified when a peer refuses us as a removed member (HTTP 410).
    removed: Arc<tokio::sync::Notify>,
    /// Sent on every request: this member's cluster id and its own id (see `identity`).
    identity: Identity,
}

/// The driver's side of one peer: its sender task's queue, and its direct stream when one is
/// open (written straight from the driver's thread).
struct Link {
    queue: mpsc::UnboundedSender<Message>,
    /// Messages handed to the sender task and not yet written by it: while there are any,
    /// new ones queue behind them rather than overtake them on the direct stream.
    queued: Arc<AtomicUsize>,
    direct: DirectSlot,
    sent: metrics::Counter,
}

/// The peer's open direct stream, if any: set by its sender task, used by the driver.
type DirectSlot = Arc<Mutex<Option<Direct>>>;

#[derive(Clone)]
struct Direct {
    /// The peer URL it was opened to: a member whose URL changed gets a new stream.
    base: String,
    sink: Arc<direct::Sink>,
}

/// The headers that tell a peer which cluster and member a request comes from.
#[derive(Clone, Copy, Default)]
struct Identity {
    cluster: u64,
    member: u64,
}

impl Identity {
    fn stamp(&self, req: hyper::http::request::Builder) -> hyper::http::request::Builder {
        req.header(CLUSTER_ID_HEADER, format!("{:016x}", self.cluster))
            .header(SENDER_HEADER, format!("{:016x}", self.member))
    }
}

impl HttpTransport {
    /// `bind`: source address for outgoing peer connections — this node's own peer IP, so that a
    /// host with several addresses (or a fault test giving each node its own 127.0.0.x) shows
    /// peers who is calling. `tls`: used for `https://` peer URLs (the peer certificate and CA).
    /// Call it on the server's runtime: the peer senders are spawned there.
    pub fn new(
        members: SharedMembers,
        stats: Arc<ServerStats>,
        bind: Option<std::net::IpAddr>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        metrics::describe_counter!(
            PEER_SEND_FAILURES,
            "Failed sends to a peer: a message stream that broke, stalled or could not be opened, or a snapshot that failed."
        );
        metrics::describe_counter!(
            PEER_SENT_MESSAGES,
            "Raft messages written to a peer's stream (a stream that breaks loses what it held)."
        );
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        // Without it a connect to a peer behind a black hole waits out the kernel's SYN
        // retries (minutes), and each reopened stream would leave one more such attempt.
        connector.set_connect_timeout(Some(STALL_TIMEOUT));
        connector.set_local_address(bind);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(4)
            .build(PeerConnector::new(connector, tls));
        HttpTransport {
            members,
            stats,
            reporter: None,
            client,
            links: HashMap::new(),
            driver_rt: direct::DriverRuntime::default(),
            bind,
            runtime: tokio::runtime::Handle::current(),
            hints: HashMap::new(),
            removed: Arc::default(),
            identity: Identity::default(),
        }
    }

    /// Where direct streams may run: the driver thread's runtime, once it is up.
    pub fn with_driver_runtime(mut self, rt: direct::DriverRuntime) -> Self {
        self.driver_rt = rt;
        self
    }

    /// Who we are, for the headers every peer request carries.
    pub fn with_identity(mut self, cluster: u64, member: u64) -> Self {
        self.identity = Identity { cluster, member };
        self
    }

    /// Where to say that a peer refused this member as removed (HTTP 410): the server stops,
    /// as etcd's removed members do.
    pub fn with_removal_notice(mut self, removed: Arc<tokio::sync::Notify>) -> Self {
        self.removed = removed;
        self
    }

    /// Peer URLs to use until the replicated member records say otherwise.
    pub fn with_hints(mut self, hints: HashMap<u64, String>) -> Self {
        self.hints = hints;
        self
    }

    /// `to`'s link, its sender started on first use. `None` only if the transport is used
    /// without a driver (a bug: `Driver::new` binds it before anything is sent).
    fn link(&mut self, to: u64) -> Option<&Link> {
        let Some(reporter) = self.reporter.clone() else {
            tracing::error!("peer transport used before a driver bound it; message dropped");
            return None;
        };
        Some(self.links.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let queued = Arc::new(AtomicUsize::new(0));
            let direct = DirectSlot::default();
            let peer = Peer {
                to,
                hint: self.hints.get(&to).cloned(),
                members: self.members.clone(),
                stats: self.stats.clone(),
                reporter,
                client: self.client.clone(),
                legacy_since: Arc::default(),
                no_direct_since: Arc::default(),
                removed: self.removed.clone(),
                identity: self.identity,
                queued: queued.clone(),
                direct: direct.clone(),
                driver_rt: self.driver_rt.clone(),
                bind: self.bind,
            };
            let label = format!("{to:016x}");
            metrics::counter!(PEER_SEND_FAILURES, "to" => label.clone()).increment(0);
            let sent = metrics::counter!(PEER_SENT_MESSAGES, "to" => label);
            sent.increment(0);
            self.runtime.spawn(peer.run(rx));
            Link {
                queue: tx,
                queued,
                direct,
                sent,
            }
        }))
    }

    /// Write `batch` (no snapshots in it) on `to`'s direct stream, from this (the driver's)
    /// thread. Gives the batch back when there is no open stream to the peer's current URL,
    /// or when messages queued for the sender task are still ahead of it.
    fn send_direct(&mut self, to: u64, batch: Vec<Message>) -> Option<Vec<Message>> {
        let base = peer_base(&self.members, self.hints.get(&to), to).ok();
        let link = self.links.get(&to)?;
        if link.queued.load(Ordering::Acquire) > 0 {
            return Some(batch);
        }
        let Ok(mut slot) = link.direct.lock() else {
            return Some(batch);
        };
        let Some(d) = slot.as_ref() else {
            return Some(batch);
        };
        if base.as_deref() != Some(d.base.as_str()) || !d.sink.is_open() {
            if let Some(d) = slot.take() {
                d.sink.close();
            }
            return Some(batch);
        }
        let frame = match frame::encode(&batch) {
            Ok(f) => f,
            // The sender task reports it as a failed send.
            Err(_) => return Some(batch),
        };
        if !d.sink.write(&frame) {
            slot.take();
            return Some(batch);
        }
        drop(slot);
        let n = batch.len() as u64;
        for m in &batch {
            if let MessageBody::Heartbeat { round, .. } = m.body {
                self.stats.heartbeat_sent(to, m.term, round);
            }
        }
        self.stats.record_sent(n);
        link.sent.increment(n);
        None
    }
}

impl Transport for HttpTransport {
    fn bind(&mut self, reporter: Reporter) {
        self.reporter = Some(reporter);
    }

    fn send(&mut self, msgs: Vec<Message>) {
        // One batch per peer, in the order given.
        let mut batches: Vec<(u64, Vec<Message>)> = Vec::new();
        for m in msgs {
            match batches.iter_mut().find(|(to, _)| *to == m.to) {
                Some((_, b)) => b.push(m),
                None => batches.push((m.to, vec![m])),
            }
        }
        for (to, batch) in batches {
            if self.link(to).is_none() {
                return;
            }
            let has_snapshot = batch
                .iter()
                .any(|m| matches!(m.body, MessageBody::InstallSnapshot { .. }));
            let rest = match has_snapshot {
                true => Some(batch),
                false => self.send_direct(to, batch),
            };
            let Some(rest) = rest else { continue };
            let Some(link) = self.links.get(&to) else {
                continue;
            };
            for m in rest {
                link.queued.fetch_add(1, Ordering::AcqRel);
                if link.queue.send(m).is_err() {
                    self.links.remove(&to);
                    break;
                }
            }
        }
    }
}

#[derive(Clone)]
struct Peer {
    to: u64,
    hint: Option<String>,
    members: SharedMembers,
    stats: Arc<ServerStats>,
    reporter: Reporter,
    client: Client<PeerConnector, Body>,
    /// When the peer last answered a stream with 404 (it predates streams), if it did.
    legacy_since: Arc<Mutex<Option<Instant>>>,
    /// When the peer last refused a direct stream (it predates them), if it did.
    no_direct_since: Arc<Mutex<Option<Instant>>>,
    /// Shared with the driver's [`Link`].
    queued: Arc<AtomicUsize>,
    direct: DirectSlot,
    driver_rt: direct::DriverRuntime,
    bind: Option<std::net::IpAddr>,
    removed: Arc<tokio::sync::Notify>,
    identity: Identity,
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
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Message>) {
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
        if self.is_legacy() {
            let bytes = postcard::to_stdvec(batch)?;
            return self
                .post(MESSAGES_PATH, Full::new(Bytes::from(bytes)).boxed())
                .await;
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
        let recently_refused = self
            .no_direct_since
            .lock()
            .is_ok_and(|since| since.is_some_and(|t| t.elapsed() < LEGACY_RETRY));
        if !base.starts_with("http://") || recently_refused {
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
                if let Ok(mut since) = self.no_direct_since.lock() {
                    if since.is_none() {
                        tracing::info!(peer = %format!("{:016x}", self.to), %url, "peer does not accept direct streams (an older version): using an HTTP-body stream, retrying every {LEGACY_RETRY:?}");
                    }
                    *since = Some(Instant::now());
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
        let Ok(mut since) = self.legacy_since.lock() else {
            return;
        };
        if since.is_none() {
            // Logged once: later refusals only renew the fallback.
            tracing::info!(peer = %format!("{:016x}", self.to), %url, "peer does not accept message streams (an older version): sending one request per batch, retrying a stream every {LEGACY_RETRY:?}");
        }
        *since = Some(Instant::now());
    }

    /// Whether to send the old way now; after `LEGACY_RETRY` a stream is tried again.
    fn is_legacy(&self) -> bool {
        self.legacy_since
            .lock()
            .is_ok_and(|since| since.is_some_and(|t| t.elapsed() < LEGACY_RETRY))
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

/// Where `to` is reached now, without a trailing slash: its first peer URL as the replicated
/// member records say, else `hint` (from the flags). A direct stream records it, so that a
/// member whose URL changed gets a new stream.
fn peer_base(members: &SharedMembers, hint: Option<&String>, to: u64) -> Result<String, SendError> {
    let members = members.read().map_err(|_| SendError::Poisoned)?;
    let base = members
        .get(&to)
        .and_then(|m| m.peer_urls.first())
        .or(hint)
        .ok_or(SendError::UnknownPeer(to))?;
    Ok(base.trim_end_matches('/').to_string())
}

/// Why a frame did not go on a direct stream.
enum Fallback {
    /// Send it on an HTTP-body stream instead.
    Http(Bytes),
    /// The send failed.
    Fail(SendError),
}

/// An error with its causes: hyper-util's own message ("client error (Connect)") hides the
/// TLS or socket error an operator needs to see.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Decode a batch, received as a stream frame or as one `/raft/messages` request.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Message>, DecodeError> {
    postcard::from_bytes(bytes).map_err(DecodeError::Batch)
}

/// A snapshot message, checked whole before Raft sees it: its data must be a complete, intact
/// snapshot stream whose own metadata is the message's (a damaged or mismatched one would fail
/// the install, and a failed install stops the node).
/// Takes the body by value: it is dropped once decoded, so a large snapshot is not held twice
/// while its data is checked.
pub fn decode_snapshot(bytes: Bytes) -> Result<Message, DecodeError> {
    let m: Message = postcard::from_bytes(&bytes).map_err(DecodeError::Snapshot)?;
    drop(bytes);
    let MessageBody::InstallSnapshot { snapshot } = &m.body else {
        return Err(DecodeError::NotSnapshot);
    };
    let meta = deimos_store::persist::check_snapshot_data(&snapshot.data)
        .map_err(DecodeError::SnapshotData)?;
    if meta != snapshot.meta {
        return Err(DecodeError::Mismatch {
            data_index: meta.index,
            data_term: meta.term,
            index: snapshot.meta.index,
            term: snapshot.meta.term,
        });
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deimos_store::machine::Member;

    /// The driver compares the URL a direct stream was opened to with this on every send: the
    /// two must agree however the URL is written, or each send would drop the stream.
    #[test]
    fn a_peer_base_is_the_members_url_else_the_hint_without_a_trailing_slash() {
        let members = SharedMembers::default();
        let hint = "http://10.0.0.2:2380/".to_string();
        assert_eq!(
            peer_base(&members, Some(&hint), 2).unwrap(),
            "http://10.0.0.2:2380"
        );
        assert!(matches!(
            peer_base(&members, None, 2),
            Err(SendError::UnknownPeer(2))
        ));
        members.write().unwrap().insert(
            2,
            Member {
                id: 2,
                name: "n2".into(),
                peer_urls: vec!["http://10.0.0.3:2380//".into()],
                client_urls: vec![],
            },
        );
        assert_eq!(
            peer_base(&members, Some(&hint), 2).unwrap(),
            "http://10.0.0.3:2380"
        );
    }
}
