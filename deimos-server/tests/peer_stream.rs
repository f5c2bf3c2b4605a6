//! The peer message stream, end to end against a real process: frames are taken in as they
//! arrive on a request that stays open, and a corrupt stream is cut with a 400.

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, request, ClusterSpec, Proc};
use deimos_raft::types::{Message, MessageBody};
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

/// Messages for a member that is not this node: counted on receipt, never stepped.
fn elsewhere(n: u64) -> Vec<Message> {
    (0..n)
        .map(|round| Message {
            from: 7,
            to: 8,
            term: 1,
            body: MessageBody::Heartbeat { commit: 0, round },
        })
        .collect()
}

async fn received(port: u16) -> u64 {
    let r = request(port, None, "GET", "/v2/stats/self", None, &[])
        .await
        .expect("stats");
    r.json()["recvAppendRequestCnt"].as_u64().expect("count")
}

/// Open a stream to the peer port: the frame sender and the eventual response status.
async fn open(peer_port: u16) -> (mpsc::Sender<Bytes>, tokio::task::JoinHandle<Option<u16>>) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_delivers_each_frame_while_it_stays_open_and_a_corrupt_one_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = ClusterSpec::new(1, "http");
    let _node = Proc::start(dir.path(), "n1", &spec.args(dir.path(), 0));
    let (client, peer) = (spec.client_ports[0], spec.peer_ports[0]);
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

    let (tx, answer) = open(peer).await;
    // One frame split across two body chunks, then two frames in one chunk: each is taken in
    // before the stream ends.
    let f = frame(&elsewhere(3));
    tx.send(f.slice(..5)).await.expect("stream open");
    tx.send(f.slice(5..)).await.expect("stream open");
    eventually(Duration::from_secs(5), "the first frame", || async move {
        (received(client).await == base + 3).then_some(())
    })
    .await;
    let mut two = frame(&elsewhere(2)).to_vec();
    two.extend_from_slice(&frame(&elsewhere(4)));
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
    let (tx, answer) = open(peer).await;
    let mut bad = frame(&elsewhere(1)).to_vec();
    bad.extend_from_slice(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
    tx.send(Bytes::from(bad)).await.expect("stream open");
    let status = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("a corrupt stream is cut at once")
        .expect("task");
    assert_eq!(status, Some(400));
    assert_eq!(received(client).await, base + 10);

    // A length prefix beyond the limit is refused without waiting for that many bytes.
    let (tx, answer) = open(peer).await;
    tx.send(Bytes::from(u32::MAX.to_be_bytes().to_vec()))
        .await
        .expect("stream open");
    let status = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("an oversized frame is refused at once")
        .expect("task");
    assert_eq!(status, Some(400));
}
