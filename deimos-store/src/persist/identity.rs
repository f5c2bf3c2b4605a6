//! Which member a data directory belongs to.
//!
//! A member's id is fixed when it is created (a founding member's from its bootstrap entry, a
//! member added at runtime by the cluster when it is added) and must never change or be reused:
//! Raft relies on a voter's vote and acknowledgements belonging to one durable log. So the id
//! is recorded in the store the first time the node starts and read back on every restart,
//! instead of being computed again from flags that an operator may change (peer URLs move with
//! `member update`), as etcd keeps it in its WAL metadata.

use deimos_raft::storage::StorageResult;
use deimos_raft::types::NodeId;

use super::error::{backend, invalid, PersistError};
use super::schema::{KEY_MEMBER_ID, META};
use super::store::RedbStorage;

impl RedbStorage {
    /// The member id recorded for this data directory, if one was recorded.
    pub fn member_id(&self) -> Result<Option<NodeId>, PersistError> {
        let txn = self.begin_read()?;
        let meta = txn.open_table(META).map_err(|e| backend("open meta", e))?;
        let Some(v) = meta
            .get(KEY_MEMBER_ID)
            .map_err(|e| backend("read member id", e))?
        else {
            return Ok(None);
        };
        let bytes = <[u8; 8]>::try_from(v.value()).map_err(|_| PersistError::Corrupt {
            path: self.path().to_path_buf(),
            what: format!("member id record has {} bytes, not 8", v.value().len()),
        })?;
        Ok(Some(u64::from_le_bytes(bytes)))
    }

    /// Record, durably, that this data directory belongs to member `id`. Recording the same id
    /// again is a no-op; a different one is refused (the data belongs to another member).
    pub fn set_member_id(&mut self, id: NodeId) -> StorageResult<()> {
        match self
            .member_id()
            .map_err(deimos_raft::storage::StorageError::from)?
        {
            Some(cur) if cur == id => return Ok(()),
            Some(cur) => {
                return Err(invalid(format!(
                    "this data directory belongs to member {cur:016x}, not {id:016x}"
                )))
            }
            None => {}
        }
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META).map_err(|e| backend("open meta", e))?;
            meta.insert(KEY_MEMBER_ID, id.to_le_bytes().as_slice())
                .map_err(|e| backend("write member id", e))?;
        }
        txn.commit().map_err(|e| backend("commit member id", e))
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
        }
        let st = RedbStorage::open(dir.path()).unwrap();
        assert_eq!(st.member_id().unwrap(), Some(0xabc));
    }
}
