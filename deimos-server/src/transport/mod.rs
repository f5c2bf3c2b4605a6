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
pub mod inbound;
mod sender;

pub use error::{request_within, DecodeError, HttpFailure, SendError};

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use deimos_raft::driver::{Reporter, Transport};
use deimos_raft::types::{Message, MessageBody};
use deimos_store::machine::SharedMembers;
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
/// A stream (direct or HTTP-body) that brings no frame for this long is ended by its receiver;
/// the sender opens a new one when it next has something to say. It keeps a vanished sender
/// from pinning a connection.
pub const STREAM_IDLE: Duration = Duration::from_secs(60);

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
            let peer = sender::Peer {
                to,
                hint: self.hints.get(&to).cloned(),
                members: self.members.clone(),
                stats: self.stats.clone(),
                reporter,
                client: self.client.clone(),
                legacy_since: Default::default(),
                no_direct_since: Default::default(),
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
        let moved = peer_base(&self.members, self.hints.get(&to), to)
            .ok()
            .as_deref()
            != Some(d.base.as_str());
        if moved || !d.sink.is_open() {
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
