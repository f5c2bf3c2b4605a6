//! The peer message stream, end to end against a real process: frames are taken in as they
//! arrive on a request that stays open (an HTTP body, or a connection upgraded to a direct
//! stream), a corrupt stream is cut, and peers from before direct streams or before streams
//! get an HTTP-body stream or one request per batch instead.

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, options, request};
use deimos_raft::types::{Message, MessageBody};
use deimos_tests::{free_port, Cluster, ClusterOptions};
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// The wire format, written out independently of the server's encoder.
fn frame(msgs: &[Message]) -> Bytes {
    let body = postcard::to_stdvec(msgs).expect("encode");
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    Bytes::from(out)
}

/// Who the test speaks as: the cluster id and the (never started) member `from`, sending to
/// the running member `to`.
#[derive(Clone, Copy)]
struct Peer {
    cluster: u64,
    from: u64,
    to: u64,
}

/// Heartbeats from a term below the node's: counted on receipt, then ignored by Raft.
fn stale(p: Peer, n: u64) -> Vec<Message> {
    (0..n)
        .map(|round| Message {
            from: p.from,
            to: p.to,
            term: 0,
            body: MessageBody::Heartbeat { commit: 0, round },
        })
        .collect()
}

/// Learn the cluster id (peer `GET /members`) and the two members' ids.
async fn identify(c: &Cluster) -> Peer {
    let url = |i: usize| c.node(i).peer_url();
    let peer_port = c.node(0).peer_port;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", peer_port))
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get("/members")
        .header("host", format!("127.0.0.1:{peer_port}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("members");
    let cluster = resp.headers()["x-etcd-cluster-id"]
        .to_str()
        .ok()
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .expect("cluster id");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let list: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let id_of = |u: String| {
        list["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["peerURLs"][0] == u.as_str())
            .and_then(|m| u64::from_str_radix(m["id"].as_str()?, 16).ok())
            .expect("member")
    };
    Peer {
        cluster,
        from: id_of(url(1)),
        to: id_of(url(0)),
    }
}

async fn received(port: u16) -> u64 {
    let r = request(port, None, "GET", "/v2/stats/self", None, &[])
        .await
        .expect("stats");
    r.json()["recvAppendRequestCnt"].as_u64().expect("count")
}

/// Open a stream to the peer port: the frame sender and the eventual response status.
async fn open(
    peer_port: u16,
    p: Peer,
) -> (mpsc::Sender<Bytes>, tokio::task::JoinHandle<Option<u16>>) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", peer_port))
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let (tx, rx) = mpsc::channel(8);
    let req = http::Request::post("/raft/stream")
        .header("host", format!("127.0.0.1:{peer_port}"))
        .header("x-etcd-cluster-id", format!("{:016x}", p.cluster))
        .header("x-server-from", format!("{:016x}", p.from))
        .body(ChannelBody(rx))
        .expect("request");
    let answer = tokio::spawn(async move {
        let resp = sender.send_request(req).await.ok()?;
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        Some(status)
    });
    (tx, answer)
}

/// A running node that the test speaks to as its other member.
struct Speaking {
    /// Kept alive for the test.
    c: Cluster,
    client: u16,
    peer: u16,
    /// The node's count of received appends when the test begins.
    base: u64,
    p: Peer,
}

/// Start n1 of a two-member cluster; n2 is named in the bootstrap but never started: the test
/// speaks as n2.
async fn speak_as_a_member() -> Speaking {
    let mut c = Cluster::create(2, options());
    c.start_node(0);
    let (client, peer) = (c.node(0).client_port, c.node(0).peer_port);
    let base = eventually(
        Duration::from_secs(20),
        "the node to serve",
        || async move {
            let r = request(client, None, "GET", "/v2/stats/self", None, &[])
                .await
                .ok()?;
            r.json()["recvAppendRequestCnt"].as_u64()
        },
    )
    .await;
    let p = identify(&c).await;
    Speaking {
        c,
        client,
        peer,
        base,
        p,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_delivers_each_frame_while_it_stays_open_and_a_corrupt_one_is_cut() {
    let Speaking {
        c: _c,
        client,
        peer,
        base,
        p,
    } = speak_as_a_member().await;

    let (tx, answer) = open(peer, p).await;
    // One frame split across two body chunks, then two frames in one chunk: each is taken in
    // before the stream ends.
    let f = frame(&stale(p, 3));
    tx.send(f.slice(..5)).await.expect("stream open");
    tx.send(f.slice(5..)).await.expect("stream open");
    eventually(Duration::from_secs(5), "the first frame", || async move {
        (received(client).await == base + 3).then_some(())
    })
    .await;
    let mut two = frame(&stale(p, 2)).to_vec();
    two.extend_from_slice(&frame(&stale(p, 4)));
    tx.send(Bytes::from(two)).await.expect("stream open");
    eventually(
        Duration::from_secs(5),
        "the next two frames",
        || async move { (received(client).await == base + 9).then_some(()) },
    )
    .await;
    assert!(
        !answer.is_finished(),
        "the stream is answered only when it ends"
    );
    drop(tx);
    let status = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("answered once closed")
        .expect("task");
    assert_eq!(status, Some(204));

    // Garbage after a valid frame: the valid one counts, then the stream is refused.
    let (tx, answer) = open(peer, p).await;
    let mut bad = frame(&stale(p, 1)).to_vec();
    bad.extend_from_slice(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
    tx.send(Bytes::from(bad)).await.expect("stream open");
    let status = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("a corrupt stream is cut at once")
        .expect("task");
    assert_eq!(status, Some(400));
    assert_eq!(received(client).await, base + 10);

    // A length prefix beyond the limit is refused without waiting for that many bytes.
    let (tx, answer) = open(peer, p).await;
    tx.send(Bytes::from(u32::MAX.to_be_bytes().to_vec()))
        .await
        .expect("stream open");
    let status = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("an oversized frame is refused at once")
        .expect("task");
    assert_eq!(status, Some(400));
}

/// What a fake member from an older version saw: direct-stream attempts, HTTP-body stream
/// attempts, and the batches it took (one request per batch, or frames of a body stream).
#[derive(Default)]
struct Seen {
    direct_attempts: usize,
    stream_attempts: usize,
    batches: Vec<Vec<Message>>,
}

type Shared = Arc<Mutex<Seen>>;

/// Serve `answer` as a fake member on a fresh port.
async fn fake_peer<F, Fut>(answer: F) -> (u16, Shared)
where
    F: Fn(http::Request<hyper::body::Incoming>, Shared) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = u16> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Shared::default();
    let state = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (state, answer) = (state.clone(), answer.clone());
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let status = answer(req, state.clone());
                    async move {
                        let resp = http::Response::builder()
                            .status(status.await)
                            .body(http_body_util::Empty::<Bytes>::new())
                            .expect("response");
                        Ok::<_, Infallible>(resp)
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc),
            );
        }
    });
    (port, seen)
}

/// Count `req` as a direct or HTTP-body stream attempt, if it is a stream at all.
fn count_attempt(req: &http::Request<hyper::body::Incoming>, seen: &Shared) -> bool {
    if req.uri().path() != "/raft/stream" {
        return false;
    }
    let mut st = seen.lock().expect("lock");
    match req.headers().contains_key("upgrade") {
        true => st.direct_attempts += 1,
        false => st.stream_attempts += 1,
    }
    true
}

/// A member from before streams: `/raft/stream` is unknown (404, answered before its body is
/// read, as the old router did), `/raft/messages` takes one batch per request.
async fn old_peer() -> (u16, Shared) {
    fake_peer(|req, seen| async move {
        if count_attempt(&req, &seen) || req.uri().path() != "/raft/messages" {
            return 404;
        }
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        match body.ok().and_then(|b| postcard::from_bytes(&b).ok()) {
            Some(batch) => {
                seen.lock().expect("lock").batches.push(batch);
                204
            }
            None => 400,
        }
    })
    .await
}

/// A member from before direct streams: a stream's body is decoded frame by frame as it
/// arrives; an upgrade request (no body) is just an empty stream, answered 204.
async fn previous_peer() -> (u16, Shared) {
    fake_peer(|req, seen| async move {
        count_attempt(&req, &seen);
        let mut body = req.into_body();
        let mut buf = Vec::new();
        while let Some(Ok(f)) = body.frame().await {
            let Ok(data) = f.into_data() else { continue };
            buf.extend_from_slice(&data);
            while buf.len() >= 4 {
                let n = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if buf.len() < 4 + n {
                    break;
                }
                let batch: Vec<Message> = postcard::from_bytes(&buf[4..4 + n]).expect("a batch");
                seen.lock().expect("lock").batches.push(batch);
                buf.drain(..4 + n);
            }
        }
        204
    })
    .await
}

/// A node whose only other member is the fake one at `peer_port`. Alone it cannot win an
/// election, so it keeps asking that member for (pre-)votes. Returns the cluster (kept alive)
/// and the node's client port.
fn with_fake_member(peer_port: u16) -> (Cluster, u16) {
    let own = format!("http://127.0.0.1:{}", free_port());
    let old = format!("http://127.0.0.1:{peer_port}");
    let mut c = Cluster::create(
        2,
        ClusterOptions {
            heartbeat: Duration::from_millis(50),
            election: Duration::from_millis(500),
            peer_urls: vec![(own.clone(), own), (old.clone(), old)],
            ..options()
        },
    );
    c.start_node(0);
    let client = c.node(0).client_port;
    (c, client)
}

/// Wait until the fake member has taken three vote requests.
async fn three_votes(seen: &Shared, how: &str) {
    let seen = seen.clone();
    eventually(Duration::from_secs(20), how, move || {
        let seen = seen.clone();
        async move {
            let n = seen
                .lock()
                .expect("lock")
                .batches
                .iter()
                .flatten()
                .filter(|m| {
                    matches!(
                        m.body,
                        MessageBody::PreVote { .. } | MessageBody::Vote { .. }
                    )
                })
                .count();
            (n >= 3).then_some(())
        }
    })
    .await;
}

/// A peer that only lacks a newer kind of stream is reachable: no send failure may be counted
/// (it would keep the unreachable alert firing through a rolling upgrade).
async fn assert_no_send_failures(client: u16) {
    let metrics = request(client, None, "GET", "/metrics", None, &[])
        .await
        .expect("metrics")
        .body;
    let failures: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("deimos_network_peer_send_failures_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(failures, 0.0, "{metrics}");
}

/// Run a node whose other member is the fake `(port, seen)` until it has taken three vote
/// requests by the older path (`how`), then check it was asked once for each kind of stream
/// (then not again for a while) and no send failure was counted.
async fn falls_back_once((port, seen): (u16, Shared), how: &str) {
    let (_cluster, client) = with_fake_member(port);
    three_votes(&seen, how).await;
    let attempts = {
        let st = seen.lock().expect("lock");
        (st.direct_attempts, st.stream_attempts)
    };
    assert_eq!(attempts, (1, 1), "direct and HTTP-body stream attempts");
    assert_no_send_failures(client).await;
}

/// A node whose other member predates streams (a cluster upgraded one member at a time):
/// after one refused stream of each kind it sends that member one request per batch, which it
/// accepts, and does not try a stream again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_streams_gets_one_request_per_batch() {
    falls_back_once(old_peer().await, "three vote requests by the old path").await;
}

/// A node whose other member predates direct streams: after one attempt (answered as an empty
/// HTTP-body stream) it streams to that member in one HTTP body that stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_direct_streams_gets_an_http_body_stream() {
    falls_back_once(
        previous_peer().await,
        "three vote requests on an HTTP-body stream",
    )
    .await;
}

/// Ask `peer_port` for a direct stream, speaking as `p` (or with `cluster` instead of its
/// cluster id): the socket after the answer's head, and the answer's status.
async fn upgrade(peer_port: u16, p: Peer, cluster: u64) -> (tokio::net::TcpStream, u16) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", peer_port))
        .await
        .expect("connect");
    let head = format!(
        "POST /raft/stream HTTP/1.1\r\nhost: 127.0.0.1:{peer_port}\r\n\
         connection: upgrade\r\nupgrade: deimos-raft-stream/1\r\ncontent-length: 0\r\n\
         x-etcd-cluster-id: {cluster:016x}\r\nx-server-from: {:016x}\r\n\r\n",
        p.from
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    // Read the answer's head byte by byte, so nothing after it is taken from the socket.
    let mut reader = tokio::io::BufReader::with_capacity(1, tcp);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await.expect("status");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("header");
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (reader.into_inner(), status)
}

/// Whether the node closed `tcp` within a few seconds (reads return end of stream).
async fn closed(tcp: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_stream_delivers_frames_and_a_corrupt_or_unauthenticated_one_is_refused() {
    use tokio::io::AsyncWriteExt;
    let Speaking {
        c: _c,
        client,
        peer,
        base,
        p,
    } = speak_as_a_member().await;

    // Another cluster's member is refused before the connection is switched.
    let (_, status) = upgrade(peer, p, p.cluster ^ 1).await;
    assert_ne!(status, 101, "a member of another cluster gets no stream");

    let (mut tcp, status) = upgrade(peer, p, p.cluster).await;
    assert_eq!(status, 101);
    // One frame split over two writes, then two frames in one write.
    let f = frame(&stale(p, 3));
    tcp.write_all(&f[..5]).await.expect("write");
    tcp.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(50)).await;
    tcp.write_all(&f[5..]).await.expect("write");
    eventually(Duration::from_secs(5), "the first frame", || async move {
        (received(client).await == base + 3).then_some(())
    })
    .await;
    let mut two = frame(&stale(p, 2)).to_vec();
    two.extend_from_slice(&frame(&stale(p, 4)));
    tcp.write_all(&two).await.expect("write");
    eventually(
        Duration::from_secs(5),
        "the next two frames",
        || async move { (received(client).await == base + 9).then_some(()) },
    )
    .await;

    // Garbage after a valid frame: the valid one counts, then the connection is closed.
    let mut bad = frame(&stale(p, 1)).to_vec();
    bad.extend_from_slice(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
    tcp.write_all(&bad).await.expect("write");
    assert!(closed(&mut tcp).await, "a corrupt stream is cut");
    assert_eq!(received(client).await, base + 10);

    // A message that claims another sender than the stream's: refused, stream cut.
    let (mut tcp, status) = upgrade(peer, p, p.cluster).await;
    assert_eq!(status, 101);
    let forged = Peer { from: p.to, ..p };
    tcp.write_all(&frame(&stale(forged, 1)))
        .await
        .expect("write");
    assert!(closed(&mut tcp).await, "a forged message cuts the stream");
    assert_eq!(received(client).await, base + 10);

    // An oversized length prefix is refused without waiting for that many bytes.
    let (mut tcp, _) = upgrade(peer, p, p.cluster).await;
    tcp.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
    assert!(
        closed(&mut tcp).await,
        "an oversized frame is refused at once"
    );

    // Frames that never complete (a length within the limit, then silence) hold up nothing
    // else, and hold their memory only until the member opens another stream: a member has
    // one inbound stream at a time, so partial frames cannot pile up over many connections.
    let replaced = replaced_streams(client).await;
    let mut stuck = Vec::new();
    for _ in 0..3 {
        let (mut s, status) = upgrade(peer, p, p.cluster).await;
        assert_eq!(status, 101);
        s.write_all(&(1u32 << 20).to_be_bytes())
            .await
            .expect("write");
        s.write_all(&[0u8; 100]).await.expect("write");
        stuck.push(s);
    }
    let (mut tcp, status) = upgrade(peer, p, p.cluster).await;
    assert_eq!(status, 101);
    for s in &mut stuck {
        assert!(
            closed(s).await,
            "a member's older stream is cut by its newer one"
        );
    }
    assert!(replaced_streams(client).await >= replaced + 3.0);
    tcp.write_all(&frame(&stale(p, 2))).await.expect("write");
    eventually(
        Duration::from_secs(5),
        "a frame on the newest stream",
        || async move { (received(client).await == base + 12).then_some(()) },
    )
    .await;
}

async fn replaced_streams(port: u16) -> f64 {
    let r = request(port, None, "GET", "/metrics", None, &[])
        .await
        .expect("metrics");
    r.body
        .lines()
        .find_map(|l| l.strip_prefix("deimos_peer_streams_replaced_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("deimos_peer_streams_replaced_total is exported")
}
