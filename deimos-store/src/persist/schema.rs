//! Tables, keys and the small records kept next to the log.
//!
//! One redb file holds everything so that one write transaction can change the log, the hard
//! state and the applied state together:
//!
//! | table             | key          | value                                       |
//! |-------------------|--------------|---------------------------------------------|
//! | `meta`            | `magic`      | [`MAGIC`](super::codec::MAGIC)              |
//! |                   | `format`     | [`FORMAT_VERSION`](super::codec::FORMAT_VERSION), u32 LE |
//! |                   | `member_id`  | the member this data belongs to, u64 LE (absent until recorded) |
//! |                   | `cluster_id` | the cluster this data belongs to, u64 LE (absent until recorded) |
//! | `raft_log`        | index (u64)  | postcard `Entry`                            |
//! | `raft_state`      | `hard_state` | postcard `HardState`                        |
//! |                   | `log_base`   | postcard [`LogBase`] (the snapshot metadata of the log) |
//! | `applied_state`   | `applied`    | postcard [`AppliedState`] (index, term, conf state) |
//! | `applied_records` | record key   | opaque record bytes                         |
//!
//! `applied_records` also holds the key space's bounded event history (keys under
//! `keyspace::EVENT_PREFIX`), written in the same batch as the nodes it describes.
//!
//! Keys of the string-keyed tables are stored as bytes: redb's `&str` type panics on invalid
//! UTF-8, and we want damaged bytes to surface as errors, never as panics.

use deimos_raft::types::{ConfState, Index, Term};
use redb::TableDefinition;
use serde::{Deserialize, Serialize};

pub(crate) const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
pub(crate) const RAFT_STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raft_state");
pub(crate) const APPLIED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("applied_state");
pub(crate) const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("applied_records");

pub(crate) const KEY_MAGIC: &[u8] = b"magic";
pub(crate) const KEY_FORMAT: &[u8] = b"format";
pub(crate) const KEY_MEMBER_ID: &[u8] = b"member_id";
pub(crate) const KEY_CLUSTER_ID: &[u8] = b"cluster_id";
pub(crate) const KEY_HARD_STATE: &[u8] = b"hard_state";
pub(crate) const KEY_LOG_BASE: &[u8] = b"log_base";
pub(crate) const KEY_WAL_EPOCH: &[u8] = b"wal_epoch";
pub(crate) const KEY_WAL_RESUME: &[u8] = b"wal_resume";
pub(crate) const KEY_APPLIED: &[u8] = b"applied";

/// Where the stored log starts: the entry at `index` was compacted away (or installed from a
/// snapshot) and only its term is kept, so `term(index)` stays answerable.
/// Invariant: the log holds exactly the indexes `index + 1 ..= last_index`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogBase {
    pub index: Index,
    pub term: Term,
}

/// How far the state machine's records reflect the log.
/// Invariant: `log_base.index <= index <= last_index`, and `term` is the term of the entry at
/// `index` (or of the log base when they coincide).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    pub index: Index,
    pub term: Term,
    /// Membership as of `index`; returned by `initial_state()` and carried in snapshots.
    pub conf: ConfState,
}
