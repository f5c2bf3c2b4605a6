//! Durable storage in redb: the Raft log, the hard state and the applied key space.
//!
//! [`RedbStorage`] implements [`deimos_raft::LogStorage`](deimos_raft::storage::LogStorage) with
//! etcd `Storage` semantics (the in-memory `MemStorage` is the reference; the tests check the
//! two agree), and adds what a restartable state machine needs:
//!
//! - group commit ([`RedbStorage::persist`], [`RedbStorage::write_batch`]): log entries, hard
//!   state and applied mutations in ONE fsynced transaction — except plain appends, which go to
//!   the write-ahead log (`wal`) and reach redb in a checkpoint (`checkpoint`: in the
//!   background, or in line with the next transaction);
//! - the applied state ([`RedbStorage::commit_applied`], [`RedbStorage::applied_state`],
//!   [`RedbStorage::records`]): opaque `String -> bytes` records plus the index/term/conf they
//!   reflect, so a restart rebuilds the key space without replaying the log;
//! - snapshots as a chunked stream ([`SnapshotEncoder`], [`SnapshotDecoder`],
//!   [`SnapshotInstaller`]);
//! - compaction ([`RedbStorage::compact`]) up to the applied index.
//!
//! Invariants of every committed state (checked at open and before each commit):
//! the log holds exactly `base+1 ..= last`; `base <= applied <= last`; the applied term is the
//! term at the applied index; `hard_state.commit <= last`.
//!
//! Files: `store` (open, checks, cache), `write` (batches, compaction), `wal` (the write-ahead
//! log of appended entries), `checkpoint` (moving them into redb in the background), `staged` (writes that
//! need no fsync, carried by the next transaction), `read` (`LogStorage`,
//! records), `snapshot` (stream format), `install` (snapshot installation), `schema` (tables),
//! `codec` (postcard, format version), `error`.

mod checkpoint;
mod codec;
mod error;
mod identity;
mod install;
mod read;
mod schema;
mod snapshot;
mod staged;
mod store;
mod wal;
mod write;

pub use codec::{FORMAT_VERSION, SNAPSHOT_FORMAT_VERSION};
pub use error::PersistError;
pub use install::SnapshotInstaller;
pub use read::RecordIter;
pub use schema::{AppliedState, LogBase};
pub use snapshot::{
    check_snapshot_data, decode_snapshot_data, encode_snapshot_data, Records, SnapshotDecoder,
    SnapshotEncoder, SnapshotWriter, DEFAULT_CHUNK, MAX_FRAME,
};
pub use store::{RedbStorage, StoreOptions, DB_FILE};
pub use wal::WAL_FILE;
pub use write::{AppliedBatch, WriteBatch};
