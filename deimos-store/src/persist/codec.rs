//! Encoding of everything stored in redb or sent in a snapshot stream.
//!
//! Format: `postcard` (varint integers, no field names, a documented stable wire format since
//! 1.0). It is compact — a 256-byte entry costs 256 + ~6 bytes — and fast. Any change to the
//! encoding of a stored type must bump [`FORMAT_VERSION`], which `open` checks.

use serde::{de::DeserializeOwned, Serialize};

use deimos_raft::storage::{BackendFailure, StorageError};

use super::error::corrupt;

/// Version of the on-disk layout (tables, keys and value encodings). Checked at open.
/// Version 2 added the write-ahead log (`deimos.wal` and `raft_state/wal_epoch`): a version-1
/// binary would ignore entries logged there, so it must refuse the store; version-1 stores are
/// upgraded in place at open ([`LEGACY_FORMAT_VERSION`]).
pub const FORMAT_VERSION: u32 = 2;

/// The version before the write-ahead log; `open` upgrades it.
pub(crate) const LEGACY_FORMAT_VERSION: u32 = 1;

/// Version of the snapshot stream (header, frames, record encoding), checked by the decoder.
/// Separate from the store's: version 2 of the store did not change the stream, and backups
/// and snapshots made before it must still restore.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// Stored under `meta/magic`: tells a Deimos store from any other redb file.
pub(crate) const MAGIC: &[u8] = b"deimos-store";

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StorageError> {
    postcard::to_stdvec(value).map_err(|e| StorageError::Backend(BackendFailure::new("encode", e)))
}

/// Decode a stored value; `what` names it in the error. Trailing bytes are an error too: a value
/// that decodes from a prefix of its bytes is not the value we wrote.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StorageError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(corrupt(format!("{what}: {} trailing bytes", rest.len()))),
        Err(e) => Err(corrupt(format!("{what}: {e}"))),
    }
}

/// 64-bit FNV-1a, used as the snapshot stream checksum. Not cryptographic: it only has to catch
/// truncation, reordering and corruption in transit or in a buffer.
#[derive(Debug, Clone)]
pub(crate) struct Fnv64(u64);

impl Fnv64 {
    pub(crate) fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deimos_raft::types::{Entry, EntryPayload, Snapshot, SnapshotMeta};
    use serde::Serialize;

    /// How format 1 stores were written before entry bytes were serialised as bytes: a plain
    /// `Vec<u8>` (a sequence of `u8`). Field and variant order mirror the real types.
    #[derive(Serialize)]
    enum SeqPayload {
        #[allow(dead_code)]
        Empty,
        Normal(Vec<u8>),
    }
    #[derive(Serialize)]
    struct SeqEntry {
        term: u64,
        index: u64,
        payload: SeqPayload,
    }

    #[test]
    fn entry_bytes_keep_the_format_1_encoding() {
        let data: Vec<u8> = (0..=255u8).chain([0, 7, 255]).collect();
        let old = encode(&SeqEntry {
            term: 3,
            index: 9,
            payload: SeqPayload::Normal(data.clone()),
        })
        .unwrap();
        let new = Entry {
            term: 3,
            index: 9,
            payload: EntryPayload::Normal(data),
        };
        assert_eq!(encode(&new).unwrap(), old);
        assert_eq!(decode::<Entry>(&old, "entry").unwrap(), new);
    }

    #[test]
    fn snapshots_round_trip() {
        let s = Snapshot {
            meta: SnapshotMeta::default(),
            data: vec![1, 2, 3, 200],
        };
        assert_eq!(
            decode::<Snapshot>(&encode(&s).unwrap(), "snapshot").unwrap(),
            s
        );
    }
}
