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

use bytes::{Buf, BufMut, Bytes, BytesMut};
use deimos_raft::types::Message;

use super::error::{DecodeError, SendError};
use super::STREAM_IDLE;

/// The largest batch accepted, as a frame or as a `/raft/messages` body. Appends are bounded
/// far below this by the Raft message size limit; a larger length means a corrupt or hostile
/// sender.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// The length prefix of a frame; what follows is a `/raft/messages` body.
pub const LEN_BYTES: usize = 4;

/// One frame carrying `batch`.
pub fn encode(batch: &[Message]) -> Result<Bytes, SendError> {
    let body = postcard::to_stdvec(batch)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME_BYTES)
        .ok_or(SendError::TooLarge(body.len()))?;
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
    pub fn next_batch(&mut self) -> Result<Option<Vec<Message>>, DecodeError> {
        let Some(prefix) = self.buf.get(..LEN_BYTES) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > MAX_FRAME_BYTES {
            return Err(DecodeError::FrameTooLarge(len));
        }
        if self.buf.len() < LEN_BYTES + len {
            return Ok(None);
        }
        self.buf.advance(LEN_BYTES);
        let body = self.buf.split_to(len);
        super::decode_batch(&body).map(Some)
    }
}

/// Why a peer's message stream was cut, rather than closed by its sender or left idle.
#[derive(Debug, thiserror::Error)]
pub enum StreamCut<E> {
    /// Reading failed.
    #[error("stream broken: {0}")]
    Broken(String),
    /// A frame did not decode: the stream cannot be resynchronised.
    #[error(transparent)]
    Corrupt(#[from] DecodeError),
    /// `deliver` refused a batch: nothing after it can be trusted.
    #[error("batch refused: {0}")]
    Refused(E),
    /// The same member opened a newer stream (see `inbound`).
    #[error("replaced by a newer stream from the same member")]
    Replaced,
}

/// Where a peer's message stream comes from: an HTTP body, or a direct, upgraded connection.
pub trait Source {
    /// Add the next bytes that arrive to `decoder`; false at the end of the stream.
    fn fill(
        &mut self,
        decoder: &mut Decoder,
    ) -> impl std::future::Future<Output = Result<bool, String>> + Send;
}

/// Read a peer's message stream to its end, handing each batch completed to `deliver`. Ok
/// when the sender closed the stream or it went [`STREAM_IDLE`]; cut when `replaced` is
/// signalled.
///
/// The one reading loop of both kinds of stream, so that they cannot differ in what they
/// accept or in what ends them.
pub async fn read_stream<E>(
    mut decoder: Decoder,
    mut source: impl Source,
    replaced: &tokio::sync::Notify,
    mut deliver: impl FnMut(Vec<Message>) -> Result<(), E>,
) -> Result<(), StreamCut<E>> {
    // One waiter for the whole stream, not one registered and dropped per read.
    let replaced = replaced.notified();
    tokio::pin!(replaced);
    loop {
        while let Some(batch) = decoder.next_batch()? {
            deliver(batch).map_err(StreamCut::Refused)?;
        }
        let next = tokio::select! {
            biased;
            _ = &mut replaced => return Err(StreamCut::Replaced),
            next = tokio::time::timeout(STREAM_IDLE, source.fill(&mut decoder)) => next,
        };
        match next {
            Err(_) | Ok(Ok(false)) => return Ok(()),
            Ok(Ok(true)) => {}
            Ok(Err(e)) => return Err(StreamCut::Broken(e)),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use deimos_raft::types::MessageBody;

    pub(crate) fn heartbeat(round: u64) -> Message {
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
        assert_eq!(d.next_batch().expect("no error"), None);
        d.push(&f[f.len() - 1..]);
        assert_eq!(d.next_batch().expect("no error"), Some(vec![heartbeat(1)]));
    }

    #[test]
    fn an_oversized_or_garbled_frame_is_refused() {
        let mut d = Decoder::default();
        d.push(&(MAX_FRAME_BYTES as u32 + 1).to_be_bytes());
        let e = d.next_batch().unwrap_err();
        assert!(matches!(e, DecodeError::FrameTooLarge(_)), "{e}");
        assert!(e.to_string().contains("exceeds"), "{e}");

        let mut d = Decoder::default();
        d.push(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
        let e = d.next_batch().unwrap_err();
        assert!(matches!(e, DecodeError::Batch(_)), "{e}");
        assert!(e.to_string().contains("bad message batch"), "{e}");
    }

    mod fuzz {
        //! The decoder against arbitrary bytes: whatever a peer sends, it answers a batch,
        //! "need more" or an error, never panics, and never allocates on a length it was only
        //! told about. Valid frames survive any chunking; mutated ones are refused or decode.
        use super::*;
        use deimos_raft::types::{ConfChange, ConfState, Entry, EntryPayload, Snapshot};
        use deimos_raft::types::{Message, MessageBody, SnapshotMeta};
        use proptest::prelude::*;

        fn message() -> impl Strategy<Value = Message> {
            let body = prop_oneof![
                (any::<u64>(), any::<u64>())
                    .prop_map(|(commit, round)| MessageBody::Heartbeat { commit, round }),
                any::<u64>().prop_map(|round| MessageBody::HeartbeatResp { round }),
                (
                    any::<u64>(),
                    any::<u64>(),
                    prop::collection::vec(
                        (
                            any::<u64>(),
                            any::<u64>(),
                            prop::collection::vec(any::<u8>(), 0..32)
                        ),
                        0..4
                    ),
                    any::<u64>()
                )
                    .prop_map(|(prev_index, prev_term, es, commit)| {
                        MessageBody::Append {
                            prev_index,
                            prev_term,
                            entries: es
                                .into_iter()
                                .map(|(index, term, data)| Entry {
                                    index,
                                    term,
                                    payload: EntryPayload::Normal(data),
                                })
                                .collect(),
                            commit,
                        }
                    }),
                (any::<bool>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                    |(reject, index, hint_index, hint_term)| MessageBody::AppendResp {
                        reject,
                        index,
                        hint_index,
                        hint_term
                    }
                ),
                (
                    any::<u64>(),
                    any::<u64>(),
                    prop::collection::vec(any::<u8>(), 0..64)
                )
                    .prop_map(|(index, term, data)| MessageBody::InstallSnapshot {
                        snapshot: Snapshot {
                            meta: SnapshotMeta {
                                index,
                                term,
                                conf: ConfState::new([1, 2, 3]),
                            },
                            data,
                        },
                    }),
                any::<u64>().prop_map(|id| MessageBody::Propose {
                    entries: vec![EntryPayload::ConfChange(ConfChange::RemoveNode(id))],
                }),
                prop::collection::vec(any::<u8>(), 0..80)
                    .prop_map(|ctx| MessageBody::ReadIndex { ctx }),
                Just(MessageBody::TimeoutNow),
            ];
            (any::<u64>(), any::<u64>(), any::<u64>(), body).prop_map(|(from, to, term, body)| {
                Message {
                    from,
                    to,
                    term,
                    body,
                }
            })
        }

        /// Feed `wire` in `chunk`-byte pieces; every outcome but a panic is acceptable.
        fn drain(wire: &[u8], chunk: usize) -> Result<Vec<Vec<Message>>, DecodeError> {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk.max(1)) {
                d.push(piece);
                while let Some(b) = d.next_batch()? {
                    got.push(b);
                }
            }
            Ok(got)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn arbitrary_bytes_never_panic(wire in prop::collection::vec(any::<u8>(), 0..512),
                                           chunk in 1usize..64) {
                let _ = drain(&wire, chunk);
            }

            #[test]
            fn valid_frames_round_trip_in_any_chunking(
                batches in prop::collection::vec(prop::collection::vec(message(), 0..4), 1..4),
                chunk in 1usize..128,
            ) {
                let wire: Vec<u8> = batches
                    .iter()
                    .flat_map(|b| encode(b).expect("encodes").to_vec())
                    .collect();
                prop_assert_eq!(drain(&wire, chunk).ok(), Some(batches));
            }

            #[test]
            fn mutated_frames_are_refused_or_decoded_never_panic(
                batch in prop::collection::vec(message(), 1..4),
                flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
                cut in any::<usize>(),
                chunk in 1usize..64,
            ) {
                let mut wire = encode(&batch).expect("encodes").to_vec();
                for (at, x) in flips {
                    let n = wire.len();
                    wire[at % n] ^= x;
                }
                wire.truncate(cut % (wire.len() + 1));
                let _ = drain(&wire, chunk);
            }

            #[test]
            fn a_length_prefix_is_never_trusted(len in (MAX_FRAME_BYTES as u32 + 1)..=u32::MAX,
                                                tail in prop::collection::vec(any::<u8>(), 0..16)) {
                let mut wire = len.to_be_bytes().to_vec();
                wire.extend(tail);
                let mut d = Decoder::default();
                d.push(&wire);
                prop_assert!(d.next_batch().is_err());
                // Nothing was reserved for the claimed length.
                prop_assert!(d.buf.capacity() < 1 << 16);
            }

            #[test]
            fn snapshot_bodies_of_arbitrary_bytes_are_refused(
                body in prop::collection::vec(any::<u8>(), 0..512),
            ) {
                prop_assert!(super::super::super::decode_snapshot(body.clone().into()).is_err());
            }
        }
    }
}
