//! Which member, of which cluster, a data directory belongs to.
//!
//! A member's id is fixed when it is created (a founding member's from its bootstrap entry, a
//! member added at runtime by the cluster when it is added) and must never change or be reused:
//! Raft relies on a voter's vote and acknowledgements belonging to one durable log. So the id
//! is recorded in the store the first time the node starts and read back on every restart,
//! instead of being computed again from flags that an operator may change (peer URLs move with
//! `member update`), as etcd keeps it in its WAL metadata. The cluster id is kept the same way:
//! peers refuse traffic from another cluster, so it must not depend on flags either.

use deimos_raft::storage::StorageResult;
use deimos_raft::types::NodeId;

use super::error::{backend, invalid, PersistError};
use super::schema::{KEY_CLUSTER_ID, KEY_MEMBER_ID, META};
use super::store::RedbStorage;

impl RedbStorage {
    /// The member id recorded for this data directory, if one was recorded.
    pub fn member_id(&self) -> Result<Option<NodeId>, PersistError> {
        self.meta_u64(KEY_MEMBER_ID, "member id")
    }

    /// Record, durably, that this data directory belongs to member `id`. Recording the same id
    /// again is a no-op; a different one is refused (the data belongs to another member).
    pub fn set_member_id(&mut self, id: NodeId) -> StorageResult<()> {
        self.set_meta_u64(KEY_MEMBER_ID, "member", id)
    }

    /// The cluster id recorded for this data directory, if one was recorded.
    pub fn cluster_id(&self) -> Result<Option<u64>, PersistError> {
        self.meta_u64(KEY_CLUSTER_ID, "cluster id")
    }

    /// Record, durably, that this data directory belongs to cluster `id` (once; see
    /// [`set_member_id`](Self::set_member_id)).
    pub fn set_cluster_id(&mut self, id: u64) -> StorageResult<()> {
        self.set_meta_u64(KEY_CLUSTER_ID, "cluster", id)
    }

    fn meta_u64(&self, key: &[u8], what: &str) -> Result<Option<u64>, PersistError> {
        let txn = self.begin_read()?;
        let meta = txn.open_table(META).map_err(|e| backend("open meta", e))?;
        let Some(v) = meta
            .get(key)
            .map_err(|e| backend(format!("read {what}"), e))?
        else {
            return Ok(None);
        };
        let bytes = <[u8; 8]>::try_from(v.value()).map_err(|_| PersistError::Corrupt {
            path: self.path().to_path_buf(),
            what: format!("{what} record has {} bytes, not 8", v.value().len()),
        })?;
        Ok(Some(u64::from_le_bytes(bytes)))
    }

    fn set_meta_u64(&mut self, key: &[u8], what: &str, id: u64) -> StorageResult<()> {
        match self
            .meta_u64(key, what)
            .map_err(deimos_raft::storage::StorageError::from)?
        {
            Some(cur) if cur == id => return Ok(()),
            Some(cur) => {
                return Err(invalid(format!(
                    "this data directory belongs to {what} {cur:016x}, not {id:016x}"
                )))
            }
            None => {}
        }
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META).map_err(|e| backend("open meta", e))?;
            meta.insert(key, id.to_le_bytes().as_slice())
                .map_err(|e| backend(format!("write {what} id"), e))?;
        }
        txn.commit()
            .map_err(|e| backend(format!("commit {what} id"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_id_is_recorded_once_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut st = RedbStorage::open(dir.path()).unwrap();
            assert_eq!(st.member_id().unwrap(), None);
            st.set_member_id(0xabc).unwrap();
            st.set_member_id(0xabc).unwrap();
            let err = st.set_member_id(0xdef).unwrap_err().to_string();
            assert!(err.contains("0000000000000abc"), "{err}");
            assert_eq!(st.cluster_id().unwrap(), None);
            st.set_cluster_id(0x77).unwrap();
            assert!(st.set_cluster_id(0x78).is_err());
        }
        let st = RedbStorage::open(dir.path()).unwrap();
        assert_eq!(st.member_id().unwrap(), Some(0xabc));
        assert_eq!(st.cluster_id().unwrap(), Some(0x77));
    }
}
