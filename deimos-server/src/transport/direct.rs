//! Direct peer streams: the message stream's TCP connection, after an HTTP/1.1 upgrade, is
//! written and read on the Raft driver's own thread.
//!
//! Why: on the HTTP-body stream every message crossed threads twice on each side — the driver
//! handed a batch to a sender task on a runtime worker, and on the peer a worker read the frame
//! and handed it to that peer's driver. At one client a PUT made six such hand-offs (leader to
//! follower and back, then the answer), each a wake-up and a context switch, and on a busy
//! machine each also a wait for a core: they were most of what a single-client write cost
//! beyond the two fsyncs. Here the driver writes each frame to the socket itself, in the same
//! `Ready` step that used to queue it (so it still leaves before the driver's own fsync), and
//! the receiving member reads frames on its driver thread and steps them there.
//!
//! The wire stays what it was after the handshake: frames of [`super::frame`]. The handshake is
//! `POST /raft/stream` with `Upgrade: deimos-raft-stream/1`, answered `101 Switching Protocols`
//! once the sender is authenticated. A member from before this answers the request as an empty
//! HTTP-body stream (204), and the sender falls back to that kind of stream; https peers use it
//! too (their bytes go through rustls, which is not shared with the driver's thread).
//!
//! Nothing here trusts the peer: frames are decoded and checked as on the HTTP-body stream, a
//! stream holds its listener's connection slot for its whole life, a reader ends after
//! [`STREAM_IDLE`](super::STREAM_IDLE) without a frame, and what the driver could not write at
//! once is capped ([`MAX_PENDING`]) — a peer that stops reading loses its stream, not this
//! node's memory.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Bytes, BytesMut};
use deimos_raft::types::Message;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::error::{HttpFailure, SendError};
use super::frame::{read_stream, Decoder, Source, StreamCut};
use super::inbound::Place;
use super::STALL_TIMEOUT;

/// The protocol named in the upgrade handshake.
pub const PROTOCOL: &str = "deimos-raft-stream/1";

/// Bytes the driver may leave for a stream's writer task before the stream counts as stalled
/// and is dropped (many frames of a busy leader's usual size; an empty buffer takes any one).
pub const MAX_PENDING: usize = 16 << 20;

/// The driver thread's runtime, once it runs: where direct streams are read and written.
/// Unset (no direct streams, HTTP-body streams only) until then.
pub type DriverRuntime = Arc<OnceLock<tokio::runtime::Handle>>;

/// Whether `req` asks for a direct stream.
pub fn wants_upgrade(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL))
}

/// The sending end of one direct stream, shared by the driver (which writes what it can at
/// once) and the stream's writer task (which writes the rest when the socket takes it, and
/// notices the stream end).
pub struct Sink {
    state: Mutex<SinkState>,
    wake: Notify,
}

#[derive(Default)]
struct SinkState {
    /// Registered on the driver's runtime by the writer task; `None` until then.
    stream: Option<Arc<TcpStream>>,
    /// Bytes not yet written, in order; the driver writes directly only when this is empty.
    pending: BytesMut,
    /// Why the stream ended, once it has: no more writes.
    ended: Option<End>,
}

/// Why a direct stream ended.
#[derive(Debug, Clone)]
pub enum End {
    /// The peer closed it (idle, or restarting): not a failure.
    Closed,
    /// A write or read failed, or the peer stopped reading.
    Failed(Arc<SendError>),
}

impl Sink {
    /// A sink whose first bytes are `first`, to be written once the writer task has the socket.
    pub fn new(first: Bytes) -> Arc<Sink> {
        let mut pending = BytesMut::with_capacity(first.len());
        pending.extend_from_slice(&first);
        Arc::new(Sink {
            state: Mutex::new(SinkState {
                pending,
                ..SinkState::default()
            }),
            wake: Notify::new(),
        })
    }

    /// Whether the stream still takes frames.
    pub fn is_open(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.ended.is_none())
    }

    /// Write `frame`: straight to the socket when nothing is waiting before it, else (or for
    /// what the socket did not take) after what is waiting, by the writer task. `false` if the
    /// stream has ended and the frame was not taken.
    pub fn write(&self, frame: &[u8]) -> bool {
        let Ok(mut st) = self.state.lock() else {
            return false;
        };
        if st.ended.is_some() {
            return false;
        }
        let mut rest = frame;
        if st.pending.is_empty() {
            if let Some(stream) = &st.stream {
                match write_some(stream, rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) => {
                        // The frame is lost with the stream, as on any broken stream.
                        st.ended = Some(End::Failed(Arc::new(SendError::Direct(e))));
                        drop(st);
                        self.wake.notify_one();
                        return true;
                    }
                }
            }
        }
        if rest.is_empty() {
            return true;
        }
        // An empty buffer takes any one frame (they are bounded by `MAX_FRAME_BYTES`).
        if !st.pending.is_empty() && st.pending.len() + rest.len() > MAX_PENDING {
            st.ended = Some(End::Failed(Arc::new(SendError::Stalled(STALL_TIMEOUT))));
        } else {
            st.pending.extend_from_slice(rest);
        }
        drop(st);
        self.wake.notify_one();
        true
    }

    /// End the stream from outside (the transport is going away, or the peer's URL changed).
    pub fn close(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.ended.get_or_insert(End::Closed);
        }
        self.wake.notify_one();
    }

    fn end(&self, why: End) -> End {
        let Ok(mut st) = self.state.lock() else {
            return why;
        };
        st.stream = None;
        st.ended.get_or_insert(why).clone()
    }
}

/// Write as much of `buf` as the socket takes now, without waiting.
fn write_some(stream: &TcpStream, mut buf: &[u8]) -> io::Result<usize> {
    let total = buf.len();
    while !buf.is_empty() {
        match stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(total - buf.len())
}

/// The writer task of `sink`, on the driver's runtime: registers the socket, writes what the
/// driver left pending as the socket takes it, and watches for the stream's end (the peer never
/// writes on it, so anything readable is its close or a reset). Returns why it ended.
pub async fn run_sink(sink: Arc<Sink>, socket: std::net::TcpStream) -> End {
    let stream = match TcpStream::from_std(socket) {
        Ok(s) => Arc::new(s),
        Err(e) => return sink.end(End::Failed(Arc::new(SendError::Direct(e)))),
    };
    match sink.state.lock() {
        Ok(mut st) => st.stream = Some(stream.clone()),
        Err(_) => return End::Closed,
    }
    let mut stalled_since: Option<Instant> = None;
    loop {
        let has_pending = match sink.state.lock() {
            Ok(st) if st.ended.is_none() => !st.pending.is_empty(),
            _ => break,
        };
        let stall_at = match has_pending {
            true => *stalled_since.get_or_insert_with(Instant::now) + STALL_TIMEOUT,
            false => {
                stalled_since = None;
                Instant::now() + STALL_TIMEOUT
            }
        };
        // Biased: after the driver's thread was held up (a long compaction), a socket that
        // takes bytes again is not mistaken for a stalled one.
        tokio::select! {
            biased;
            _ = sink.wake.notified() => {}
            r = stream.writable(), if has_pending => {
                if let Err(e) = r.and_then(|()| flush(&sink, &stream, &mut stalled_since)) {
                    return sink.end(End::Failed(Arc::new(SendError::Direct(e))));
                }
            }
            r = stream.readable() => {
                let mut scratch = [0u8; 64];
                match r.and_then(|()| stream.try_read(&mut scratch)) {
                    Ok(0) => return sink.end(End::Closed),
                    // The peer has nothing to say on this stream; whatever it sends is dropped.
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return sink.end(End::Failed(Arc::new(SendError::Direct(e)))),
                }
            }
            _ = tokio::time::sleep_until(stall_at), if has_pending => {
                return sink.end(End::Failed(Arc::new(SendError::Stalled(STALL_TIMEOUT))));
            }
        }
    }
    sink.end(End::Closed)
}

/// Write pending bytes until the socket would block; progress restarts the stall clock.
fn flush(sink: &Sink, stream: &TcpStream, stalled_since: &mut Option<Instant>) -> io::Result<()> {
    let Ok(mut st) = sink.state.lock() else {
        return Ok(());
    };
    let n = write_some(stream, &st.pending)?;
    if n > 0 {
        let _ = st.pending.split_to(n);
        *stalled_since = None;
    }
    Ok(())
}

/// Open a direct stream to `url` (an `http://` peer URL with the stream path): connect (from
/// `bind`, if set), send the upgrade request with `headers`, and return the socket once the
/// peer switched protocols. Any other answer is returned as `Refused` with its status, for the
/// caller to judge (a member from before direct streams answers 204).
pub async fn open(
    url: &str,
    bind: Option<std::net::IpAddr>,
    stamp: impl FnOnce(hyper::http::request::Builder) -> hyper::http::request::Builder,
) -> Result<std::net::TcpStream, OpenError> {
    let uri: hyper::Uri = url.parse().map_err(|_| OpenError::BadUrl(url.into()))?;
    let host = uri.host().ok_or_else(|| OpenError::BadUrl(url.into()))?;
    let port = uri.port_u16().unwrap_or(80);
    let addr: SocketAddr = tokio::net::lookup_host((host, port))
        .await
        .map_err(OpenError::Io)?
        .next()
        .ok_or_else(|| OpenError::BadUrl(url.into()))?;
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(OpenError::Io)?;
    if let Some(ip) = bind.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        socket.bind(SocketAddr::new(ip, 0)).map_err(OpenError::Io)?;
    }
    let handshake = async {
        let tcp = socket.connect(addr).await.map_err(OpenError::Io)?;
        tcp.set_nodelay(true).map_err(OpenError::Io)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(OpenError::Http)?;
        let conn = tokio::spawn(conn.with_upgrades());
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
        let req = stamp(hyper::Request::post(uri.path()))
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONNECTION, "upgrade")
            .header(hyper::header::UPGRADE, PROTOCOL)
            .header(hyper::header::CONTENT_LENGTH, "0")
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| OpenError::Request(HttpFailure::Request(e)))?;
        let mut resp = sender.send_request(req).await.map_err(OpenError::Http)?;
        if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            conn.abort();
            return Err(OpenError::Refused(resp.status()));
        }
        let upgraded = hyper::upgrade::on(&mut resp)
            .await
            .map_err(OpenError::Http)?;
        let parts = upgraded
            .downcast::<TokioIo<TcpStream>>()
            .map_err(|_| OpenError::NotTcp)?;
        if !parts.read_buf.is_empty() {
            return Err(OpenError::Unexpected);
        }
        parts.io.into_inner().into_std().map_err(OpenError::Io)
    };
    tokio::time::timeout(STALL_TIMEOUT, handshake)
        .await
        .map_err(|_| OpenError::Timeout)?
}

/// Why a direct stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("bad peer URL {0}")]
    BadUrl(String),
    #[error("{0}")]
    Io(#[source] io::Error),
    #[error("{0}")]
    Http(#[source] hyper::Error),
    #[error("{0}")]
    Request(#[source] HttpFailure),
    #[error("the peer answered HTTP {0} instead of switching protocols")]
    Refused(hyper::StatusCode),
    #[error("the upgraded connection is not a plain TCP stream")]
    NotTcp,
    #[error("the peer sent data after switching protocols")]
    Unexpected,
    #[error("timed out")]
    Timeout,
}

/// The receiving end: read frames from an upgraded stream and hand each batch to `deliver`
/// until the sender closes it, it goes [`STREAM_IDLE`](super::STREAM_IDLE), a frame is
/// corrupt, `deliver` refuses a batch (the stream cannot be trusted after that; the sender
/// opens a new one), or `replaced` is signalled. `first` is what the HTTP layer had already
/// read past the handshake.
pub async fn read_frames<R, D>(
    io: R,
    first: Bytes,
    replaced: &Notify,
    deliver: D,
) -> Result<(), Cut>
where
    R: tokio::io::AsyncRead + Unpin + Send,
    D: FnMut(Vec<Message>) -> Result<(), String>,
{
    let mut decoder = Decoder::default();
    decoder.push(&first);
    let source = Reader {
        io,
        buf: vec![0u8; 64 * 1024],
    };
    read_stream(decoder, source, replaced, deliver).await
}

/// A connection read as a stream [`Source`].
struct Reader<R> {
    io: R,
    buf: Vec<u8>,
}

impl<R: tokio::io::AsyncRead + Unpin + Send> Source for Reader<R> {
    async fn fill(&mut self, decoder: &mut Decoder) -> Result<bool, String> {
        let n = self
            .io
            .read(&mut self.buf)
            .await
            .map_err(|e| e.to_string())?;
        decoder.push(&self.buf[..n]);
        Ok(n > 0)
    }
}

/// Why a direct stream was cut (its deliverer refuses with a reason).
pub type Cut = StreamCut<String>;

/// Accept an upgrade request already authenticated as `sender`: answer 101, and once hyper
/// hands over the connection read its frames — on the driver's thread for a plain TCP
/// connection, on this runtime otherwise (TLS). `slot` is the connection's hold on its
/// listener's cap, and `place` the sender's place among the inbound streams (see `inbound`),
/// both kept for the stream's life.
pub fn accept<D, S>(
    req: &mut hyper::Request<Incoming>,
    driver: Option<tokio::runtime::Handle>,
    slot: S,
    place: Place,
    deliver: D,
) -> hyper::Response<crate::body::Body>
where
    D: FnMut(Vec<Message>) -> Result<(), String> + Send + 'static,
    S: Send + 'static,
{
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "peer stream upgrade failed");
                return;
            }
        };
        let outcome = match (upgraded.downcast::<TokioIo<TcpStream>>(), driver) {
            (Ok(parts), Some(rt)) => {
                let first = parts.read_buf;
                match parts.io.into_inner().into_std() {
                    Ok(socket) => {
                        let read = rt.spawn(async move {
                            let _slot = slot;
                            match TcpStream::from_std(socket) {
                                Ok(io) => read_frames(io, first, place.replaced(), deliver).await,
                                Err(e) => Err(Cut::Broken(e.to_string())),
                            }
                        });
                        // Cancelled: the driver stopped, and the node with it.
                        read.await.unwrap_or_else(|e| match e.is_cancelled() {
                            true => Ok(()),
                            false => Err(Cut::Broken(e.to_string())),
                        })
                    }
                    Err(e) => Err(Cut::Broken(e.to_string())),
                }
            }
            (Ok(parts), None) => {
                let _slot = slot;
                let (io, first) = (parts.io.into_inner(), parts.read_buf);
                read_frames(io, first, place.replaced(), deliver).await
            }
            (Err(upgraded), _) => {
                let _slot = slot;
                let io = TokioIo::new(upgraded);
                read_frames(io, Bytes::new(), place.replaced(), deliver).await
            }
        };
        match outcome {
            Ok(()) => {}
            Err(why @ Cut::Replaced) => tracing::debug!(error = %why, "dropping a peer stream"),
            Err(why) => tracing::warn!(error = %why, "dropping a peer stream"),
        }
    });
    let mut resp = hyper::Response::new(http_body_util::BodyExt::boxed(http_body_util::Empty::<
        Bytes,
    >::new()));
    *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("upgrade"),
    );
    h.insert(
        hyper::header::UPGRADE,
        hyper::header::HeaderValue::from_static(PROTOCOL),
    );
    resp
}

#[cfg(test)]
#[path = "direct_tests.rs"]
mod tests;
