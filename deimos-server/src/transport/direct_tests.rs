use std::io::Read;
use std::time::Duration;

use deimos_raft::types::MessageBody;

use super::super::frame::tests::heartbeat;
use super::*;

/// A connected pair: the sending end (non-blocking, as `into_std` hands it over) and the
/// receiving end (blocking, read by the test).
fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let out = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (inn, _) = listener.accept().expect("accept");
    out.set_nonblocking(true).expect("nonblocking");
    inn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    (out, inn)
}

fn read_exactly(inn: &mut std::net::TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    inn.read_exact(&mut buf).expect("read");
    buf
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "current_thread")]
async fn bytes_arrive_in_order_whether_written_at_once_or_left_pending() {
    let (out, mut inn) = pair();
    let sink = Sink::new(Bytes::from_static(b"first"));
    // Before the writer task has the socket, writes wait behind the first bytes.
    assert!(sink.write(b"-second"));
    let task = tokio::spawn(run_sink(sink.clone(), out));
    until("the writer to take the socket", || {
        sink.state.lock().unwrap().stream.is_some() && sink.state.lock().unwrap().pending.is_empty()
    })
    .await;
    assert!(sink.write(b"-third"));
    let got = tokio::task::spawn_blocking(move || {
        let got = read_exactly(&mut inn, 18);
        (got, inn)
    })
    .await
    .unwrap();
    assert_eq!(&got.0, b"first-second-third");
    let mut inn = got.1;

    // Fill the socket until the rest must wait in `pending`, then read it all back.
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let mut written = 0;
    while sink.state.lock().unwrap().pending.is_empty() {
        assert!(sink.write(&chunk));
        written += chunk.len();
    }
    assert!(sink.write(b"tail"));
    let expected = written + 4;
    let got = tokio::task::spawn_blocking(move || read_exactly(&mut inn, expected))
        .await
        .unwrap();
    for (i, part) in got[..written].chunks(chunk.len()).enumerate() {
        assert_eq!(part, &chunk[..], "chunk {i} out of order or damaged");
    }
    assert_eq!(&got[written..], b"tail");
    sink.close();
    assert!(matches!(task.await.unwrap(), End::Closed));
    assert!(!sink.write(b"late"), "a closed stream takes nothing");
}

#[tokio::test(flavor = "current_thread")]
async fn a_peer_that_stops_reading_loses_its_stream_not_our_memory() {
    let (out, inn) = pair();
    let sink = Sink::new(Bytes::new());
    let task = tokio::spawn(run_sink(sink.clone(), out));
    until("the writer to take the socket", || {
        sink.state.lock().unwrap().stream.is_some()
    })
    .await;
    let chunk = vec![7u8; 1 << 20];
    let mut taken = 0;
    while sink.write(&chunk) {
        taken += chunk.len();
        assert!(
            sink.state.lock().unwrap().pending.len() <= MAX_PENDING,
            "pending grew past its cap"
        );
        assert!(taken < 4 * MAX_PENDING, "the stream never ended");
        if !sink.is_open() {
            break;
        }
    }
    assert!(!sink.is_open());
    match task.await.unwrap() {
        End::Failed(e) => assert!(matches!(*e, SendError::Stalled(_)), "{e}"),
        End::Closed => panic!("a stalled stream is a failure"),
    }
    drop(inn);
}

#[tokio::test(flavor = "current_thread")]
async fn the_peer_closing_ends_the_stream() {
    let (out, inn) = pair();
    let sink = Sink::new(Bytes::from_static(b"x"));
    let task = tokio::spawn(run_sink(sink.clone(), out));
    drop(inn);
    let end = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the writer notices the close")
        .unwrap();
    // A close seen by a read is `Closed`; one seen by a write (reset) a failure. Either way
    // the stream is over and takes no more frames.
    let _ = end;
    assert!(!sink.is_open());
    assert!(!sink.write(b"more"));
}

fn frame_of(msgs: &[Message]) -> Vec<u8> {
    super::super::frame::encode(msgs).expect("encode").to_vec()
}

#[tokio::test(flavor = "current_thread")]
async fn frames_are_delivered_in_order_including_those_read_with_the_handshake() {
    let one = frame_of(&[heartbeat(1)]);
    let two = frame_of(&[heartbeat(2), heartbeat(3)]);
    // The HTTP layer had read the first frame and half the second.
    let split = one.len() + 3;
    let mut all = one.clone();
    all.extend_from_slice(&two);
    let first = Bytes::copy_from_slice(&all[..split]);
    let rest = all[split..].to_vec();
    let mut rounds = Vec::new();
    let r = read_frames(&rest[..], first, &Notify::new(), |batch| {
        rounds.extend(batch.iter().map(|m| match m.body {
            MessageBody::Heartbeat { round, .. } => round,
            _ => 0,
        }));
        Ok(())
    })
    .await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(rounds, [1, 2, 3]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_corrupt_frame_or_a_refused_batch_ends_the_stream() {
    let good = frame_of(&[heartbeat(1)]);
    let mut bytes = good.clone();
    bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    bytes.extend_from_slice(&good);
    let mut delivered = 0;
    let r = read_frames(&bytes[..], Bytes::new(), &Notify::new(), |_| {
        delivered += 1;
        Ok(())
    })
    .await;
    assert!(
        matches!(r, Err(StreamCut::Corrupt(_))),
        "an oversized length is refused: {r:?}"
    );
    assert_eq!(delivered, 1, "nothing after the corrupt frame is delivered");

    let mut bytes = good.clone();
    bytes.extend_from_slice(&good);
    let mut delivered = 0;
    let r = read_frames(&bytes[..], Bytes::new(), &Notify::new(), |_| {
        delivered += 1;
        Err("forged".into())
    })
    .await;
    assert!(
        matches!(&r, Err(StreamCut::Refused(why)) if why == "forged"),
        "{r:?}"
    );
    assert_eq!(delivered, 1, "a refused batch ends the stream");
}

#[test]
fn only_the_named_protocol_asks_for_a_direct_stream() {
    let mut h = hyper::HeaderMap::new();
    assert!(!wants_upgrade(&h));
    h.insert(hyper::header::UPGRADE, "websocket".parse().unwrap());
    assert!(!wants_upgrade(&h));
    h.insert(hyper::header::UPGRADE, PROTOCOL.parse().unwrap());
    assert!(wants_upgrade(&h));
}
