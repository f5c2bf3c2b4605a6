//! The inbound message streams open at once: at most one per member.
//!
//! Why: a stream's decoder holds a frame of up to
//! [`MAX_FRAME_BYTES`](super::frame::MAX_FRAME_BYTES) while it arrives, and the peer listener
//! admits up to `--max-peer-connections` connections.
//! On a plain-HTTP cluster the member and cluster ids a sender presents are not secrets, so
//! without a bound per member anyone who can reach the peer port could hold that much memory on
//! every connection. A member's sender keeps one stream to each peer (a direct one or an HTTP
//! body), so a second stream from the same member means the first is dead or abandoned — a
//! half-open connection after the sender restarted, or a body stream it left for a direct
//! one. The new stream takes the member's place and the old one is cut. What partial frames
//! can hold is then bounded by the membership, not by what a remote party opens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Streams cut because the same member opened a newer one.
pub const PEER_STREAMS_REPLACED: &str = "deimos_peer_streams_replaced_total";

pub fn describe() {
    metrics::describe_counter!(
        PEER_STREAMS_REPLACED,
        "Inbound peer message streams cut because the same member opened a newer one (its \
         sender reconnected, or moved from an HTTP-body stream to a direct one)."
    );
    metrics::counter!(PEER_STREAMS_REPLACED).increment(0);
}

/// The open inbound streams, by sending member. Every entry is an authenticated member's, so
/// the map is no larger than the membership.
#[derive(Debug, Default)]
pub struct InboundStreams {
    /// Each member's place: the signal of the stream holding it.
    open: Mutex<HashMap<u64, Arc<Notify>>>,
}

impl InboundStreams {
    /// Take `sender`'s place for a new stream, cutting the stream that held it.
    pub fn open(self: &Arc<Self>, sender: u64) -> Place {
        let cut = Arc::new(Notify::new());
        let old = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sender, cut.clone());
        if let Some(old) = old {
            // A stored permit: the old stream sees it even if it is not waiting right now.
            old.notify_one();
            metrics::counter!(PEER_STREAMS_REPLACED).increment(1);
        }
        Place {
            streams: self.clone(),
            sender,
            cut,
        }
    }

    /// How many streams hold a place.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One stream's place; dropping it frees the place unless a newer stream took it.
#[derive(Debug)]
pub struct Place {
    streams: Arc<InboundStreams>,
    sender: u64,
    cut: Arc<Notify>,
}

impl Place {
    /// Signalled when a newer stream from the same member took this place.
    pub fn replaced(&self) -> &Notify {
        &self.cut
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|p| p.into_inner());
        if open
            .get(&self.sender)
            .is_some_and(|held| Arc::ptr_eq(held, &self.cut))
        {
            open.remove(&self.sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn signalled(n: &Notify) -> bool {
        tokio::time::timeout(Duration::from_millis(50), n.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_members_new_stream_cuts_its_old_one_and_only_that() {
        let streams = Arc::new(InboundStreams::default());
        let first = streams.open(1);
        let other = streams.open(2);
        let second = streams.open(1);
        assert_eq!(streams.len(), 2, "one place per member");
        assert!(
            signalled(first.replaced()).await,
            "the old stream is cut even though it was not waiting when replaced"
        );
        assert!(
            !signalled(other.replaced()).await,
            "another member's stream stays"
        );
        assert!(!signalled(second.replaced()).await);
        // The cut stream ending must not free the place its successor holds.
        drop(first);
        assert_eq!(streams.len(), 2);
        drop(second);
        drop(other);
        assert!(streams.is_empty());
    }
}
