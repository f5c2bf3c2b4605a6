//! Framing of the peer message stream: one long-lived HTTP/1.1 request per peer whose body is a
//! sequence of frames, each a 4-byte big-endian length and a postcard-encoded batch of messages.
//!
//! Why a stream rather than one request per batch: a request per batch costs both sides a
//! response (a write, a read and a task wake-up each) and keeps the sender idle until it
//! arrives. Raft needs no per-message answer — it tolerates loss and learns of delivery from
//! the acknowledgements the peer sends on its own stream — so the frames just follow each other.
//!
//! HTTP chunk boundaries mean nothing here: a frame may arrive split over several body chunks,
//! or several frames in one, which is why the [`Decoder`] buffers.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use deimos_raft::types::Message;
use hyper::body::Frame;
use tokio::sync::mpsc;

/// The largest batch accepted, as a frame or as a `/raft/messages` body. Appends are bounded
/// far below this by the Raft message size limit; a larger length means a corrupt or hostile
/// sender.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

const LEN_BYTES: usize = 4;

/// One frame carrying `batch`.
pub fn encode(batch: &[Message]) -> Result<Bytes, String> {
    let body = postcard::to_stdvec(batch).map_err(|e| format!("cannot encode messages: {e}"))?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME_BYTES)
        .ok_or_else(|| format!("message batch of {} bytes is too large", body.len()))?;
    let mut out = BytesMut::with_capacity(LEN_BYTES + body.len());
    out.put_u32(len);
    out.extend_from_slice(&body);
    Ok(out.freeze())
}

/// Reassembles frames from body chunks as they arrive.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete batch, `Ok(None)` if more bytes are needed. After an error the stream
    /// cannot be resynchronised and must be dropped.
    pub fn next_batch(&mut self) -> Result<Option<Vec<Message>>, String> {
        let Some(prefix) = self.buf.get(..LEN_BYTES) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > MAX_FRAME_BYTES {
            return Err(format!(
                "frame of {len} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"
            ));
        }
        if self.buf.len() < LEN_BYTES + len {
            return Ok(None);
        }
        self.buf.advance(LEN_BYTES);
        let body = self.buf.split_to(len);
        super::decode_batch(&body).map(Some)
    }
}

/// A request body fed frame by frame from a channel; it ends when the sender is dropped.
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

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

#[cfg(test)]
mod tests {
    use super::*;
    use deimos_raft::types::MessageBody;

    fn heartbeat(round: u64) -> Message {
        Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::Heartbeat { commit: 7, round },
        }
    }

    #[test]
    fn frames_split_and_joined_arbitrarily_decode_in_order() {
        let batches: Vec<Vec<Message>> = (0..5)
            .map(|i| (0..i).map(|r| heartbeat(i * 10 + r)).collect())
            .collect();
        let wire: Vec<u8> = batches
            .iter()
            .flat_map(|b| encode(b).expect("encodes").to_vec())
            .collect();
        for step in [1, 2, 3, 5, 7, 64, wire.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for chunk in wire.chunks(step) {
                d.push(chunk);
                while let Some(b) = d.next_batch().expect("valid stream") {
                    got.push(b);
                }
            }
            assert_eq!(got, batches, "chunks of {step} bytes");
            assert!(d.buf.is_empty());
        }
    }

    #[test]
    fn a_partial_frame_waits_for_the_rest() {
        let f = encode(&[heartbeat(1)]).expect("encodes");
        let mut d = Decoder::default();
        d.push(&f[..f.len() - 1]);
        assert_eq!(d.next_batch(), Ok(None));
        d.push(&f[f.len() - 1..]);
        assert_eq!(d.next_batch(), Ok(Some(vec![heartbeat(1)])));
    }

    #[test]
    fn an_oversized_or_garbled_frame_is_refused() {
        let mut d = Decoder::default();
        d.push(&(MAX_FRAME_BYTES as u32 + 1).to_be_bytes());
        assert!(d.next_batch().unwrap_err().contains("exceeds"));

        let mut d = Decoder::default();
        d.push(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
        assert!(d.next_batch().unwrap_err().contains("bad message batch"));
    }
}
