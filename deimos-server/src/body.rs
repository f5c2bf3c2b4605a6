//! Bodies fed as they are produced, built from tokio-stream's adapters rather than hand-written
//! `Body` impls: from a channel (watch streams, backups, peer message streams) or from chunks
//! already in memory (a snapshot sent to a peer).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

/// Every body this server sends, as a request or a response.
pub type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A body of the chunks sent on `rx`; it ends when every sender is dropped.
pub fn from_channel(rx: mpsc::Receiver<Bytes>) -> Body {
    StreamBody::new(ReceiverStream::new(rx).map(|b| Ok(Frame::data(b)))).boxed()
}

/// A body of `chunks`, in order, each its own frame.
pub fn from_chunks(chunks: Vec<Bytes>) -> Body {
    StreamBody::new(tokio_stream::iter(chunks).map(|b| Ok(Frame::data(b)))).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_channel_body_ends_when_its_senders_are_gone() {
        let (tx, rx) = mpsc::channel(4);
        let body = from_channel(rx);
        tx.send(Bytes::from_static(b"ab")).await.unwrap();
        tx.send(Bytes::from_static(b"c")).await.unwrap();
        drop(tx);
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abc");
    }

    #[tokio::test]
    async fn chunks_come_out_as_frames_in_order() {
        let mut body = from_chunks(vec![Bytes::from_static(b"x"), Bytes::from_static(b"yz")]);
        let mut frames = Vec::new();
        while let Some(f) = body.frame().await {
            frames.push(f.unwrap().into_data().unwrap());
        }
        assert_eq!(
            frames,
            [Bytes::from_static(b"x"), Bytes::from_static(b"yz")]
        );
    }
}
