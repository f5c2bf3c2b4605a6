//! Proposal envelope: `[origin node id: u64 BE][sequence: u64 BE][payload]`.
//!
//! The node that accepted a client's proposal (leader, or a follower that forwarded it) knows the
//! outcome when it applies the entry carrying its own id and sequence — on every node the same
//! deterministic output, so a forwarding follower answers its client from its own apply.

use crate::types::NodeId;

/// Bytes of the envelope in front of the payload: origin id and sequence, 8 bytes each.
pub const HEADER: usize = 16;

/// `payload` wrapped with the proposing node's id and its per-node proposal sequence number.
pub fn wrap(origin: NodeId, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + payload.len());
    v.extend_from_slice(&origin.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// `None` for data that was not written by a driver (never produced here; tolerated, not applied
/// with an origin).
pub fn unwrap(data: &[u8]) -> Option<(NodeId, u64, &[u8])> {
    if data.len() < HEADER {
        return None;
    }
    let origin = u64::from_be_bytes(data[0..8].try_into().ok()?);
    let seq = u64::from_be_bytes(data[8..16].try_into().ok()?);
    Some((origin, seq, &data[HEADER..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_short_input() {
        let w = wrap(7, 42, b"cmd");
        assert_eq!(unwrap(&w), Some((7, 42, &b"cmd"[..])));
        assert_eq!(unwrap(b"short"), None);
        assert_eq!(unwrap(&wrap(1, 2, b"")), Some((1, 2, &b""[..])));
    }
}
