//! Installing a snapshot, streamed or whole, in one write transaction.
//!
//! `begin_snapshot_install` opens a write transaction and clears the applied records; each
//! `push` decodes the chunk and inserts its records; `finish` verifies the stream (trailer,
//! checksum, header metadata equal to the announced one), empties the log, sets the log base,
//! the applied state and `hard_state.commit`, checks consistency and commits. Until `finish`
//! commits, nothing is visible and a crash or a dropped installer leaves the old state intact.

use deimos_raft::storage::{StorageError, StorageResult};
use deimos_raft::types::{Snapshot, SnapshotMeta};
use redb::WriteTransaction;

use super::codec::encode;
use super::error::{backend, invalid, PersistError};
use super::schema::*;
use super::snapshot::SnapshotDecoder;
use super::store::RedbStorage;
use super::write::{validate, Failure};

/// An in-progress snapshot installation; see the module docs. Dropping it aborts.
pub struct SnapshotInstaller<'s> {
    store: &'s mut RedbStorage,
    txn: Option<WriteTransaction>,
    decoder: SnapshotDecoder,
    meta: SnapshotMeta,
}

impl RedbStorage {
    /// Begin replacing the applied state and the log with the snapshot described by `meta`.
    /// Errs `Compacted` if the snapshot is not newer than both the log base and the applied
    /// index (it would move the state machine backwards), and refuses a snapshot older than the
    /// persisted commit index (Raft never sends one; it would leave `commit` past the log).
    pub fn begin_snapshot_install(
        &mut self,
        meta: &SnapshotMeta,
    ) -> StorageResult<SnapshotInstaller<'_>> {
        self.check_usable()?;
        let c = &self.cache;
        if meta.index <= c.base.index.max(c.applied.index) {
            return Err(StorageError::Compacted);
        }
        if c.hard_state.commit > meta.index {
            return Err(invalid(format!(
                "snapshot at {} is behind the persisted commit index {}",
                meta.index, c.hard_state.commit
            )));
        }
        // Staged writes first, in a transaction of their own: the install below replaces the
        // records wholesale, and everything it leaves alone (the hard state) must be in the file.
        self.write_staged()?;
        let txn = match self.begin_write() {
            Ok(t) => t,
            Err(e) => return Err(self.poison(e)),
        };
        let cleared = txn
            .delete_table(RECORDS)
            .map_err(|e| backend("clear records", e))
            .and_then(|_| {
                txn.open_table(RECORDS)
                    .map(drop)
                    .map_err(|e| backend("open records", e))
            });
        if let Err(e) = cleared {
            return Err(self.poison(e));
        }
        Ok(SnapshotInstaller {
            store: self,
            txn: Some(txn),
            decoder: SnapshotDecoder::new(),
            meta: meta.clone(),
        })
    }

    /// Install a whole in-memory snapshot (the `LogStorage::apply_snapshot` path).
    pub(crate) fn install_whole(&mut self, snap: &Snapshot) -> StorageResult<()> {
        let mut inst = self.begin_snapshot_install(&snap.meta)?;
        inst.push(&snap.data)?;
        inst.finish()
    }
}

impl SnapshotInstaller<'_> {
    /// Feed the next chunk of the stream.
    pub fn push(&mut self, chunk: &[u8]) -> StorageResult<()> {
        let Some(txn) = self.txn.as_ref() else {
            return Err(invalid("snapshot installer already failed"));
        };
        let result = (|| -> Result<(), PersistError> {
            let mut records = txn
                .open_table(RECORDS)
                .map_err(|e| backend("open records", e))?;
            self.decoder.push(chunk, |k, v| {
                records
                    .insert(k.as_bytes(), v.as_slice())
                    .map(drop)
                    .map_err(|e| backend("write record", e).into())
            })
        })();
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Some(t) = self.txn.take() {
                    let _ = t.abort();
                }
                Err(match e {
                    PersistError::Storage(s) => self.store.poison(s),
                    other => invalid(other),
                })
            }
        }
    }

    /// Verify the stream and commit the installation.
    pub fn finish(mut self) -> StorageResult<()> {
        let Some(txn) = self.txn.take() else {
            return Err(invalid("snapshot installer already failed"));
        };
        let decoder = std::mem::take(&mut self.decoder);
        let header = match decoder.finish() {
            Ok(m) => m,
            Err(e) => {
                let _ = txn.abort();
                return Err(invalid(e));
            }
        };
        if header != self.meta {
            let _ = txn.abort();
            return Err(invalid(format!(
                "snapshot stream is for index {} term {}, but {} term {} was announced",
                header.index, header.term, self.meta.index, self.meta.term
            )));
        }
        let meta = self.meta.clone();
        let mut next = self.store.cache.clone();
        next.base = LogBase {
            index: meta.index,
            term: meta.term,
        };
        next.last_index = meta.index;
        next.last_term = meta.term;
        next.applied = AppliedState {
            index: meta.index,
            term: meta.term,
            conf: meta.conf.clone(),
        };
        next.hard_state.commit = next.hard_state.commit.max(meta.index);
        let outcome = (|| -> Result<(), Failure> {
            txn.delete_table(LOG)
                .map_err(|e| Failure::Backend(backend("clear log", e)))?;
            let log = txn
                .open_table(LOG)
                .map_err(|e| Failure::Backend(backend("open log", e)))?;
            let mut raft = txn
                .open_table(RAFT_STATE)
                .map_err(|e| Failure::Backend(backend("open raft", e)))?;
            let put = |e| Failure::Backend(backend("write raft state", e));
            raft.insert(KEY_LOG_BASE, encode(&next.base)?.as_slice())
                .map_err(put)?;
            raft.insert(KEY_HARD_STATE, encode(&next.hard_state)?.as_slice())
                .map_err(put)?;
            let mut ap = txn
                .open_table(APPLIED)
                .map_err(|e| Failure::Backend(backend("open applied", e)))?;
            ap.insert(KEY_APPLIED, encode(&next.applied)?.as_slice())
                .map_err(|e| Failure::Backend(backend("write applied", e)))?;
            validate(&log, &next)
        })();
        self.store.finish(txn, next, outcome)
    }
}
