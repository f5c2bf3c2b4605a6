//! Backup and disaster recovery: reading a snapshot file, seeding a new member's data
//! directory from one, and turning a lone survivor into a one-member cluster.
//!
//! A backup file is exactly the snapshot stream Raft sends a lagging follower (see
//! `persist::snapshot`): magic, format version, index, term and membership in its header, the
//! applied records in key order, and a trailer with the record count and a checksum over every
//! byte before it. So a truncated file (no trailer, or a short frame) and a damaged one (framing,
//! order, or checksum) are refused by the same decoder that guards snapshot installs. The
//! checksum is FNV-1a 64, which changes for any single damaged byte (each step of it is a
//! bijection of its state), and the framing catches most larger damage on its own.
//!
//! Restoring does what a founding member's first start does, with the snapshot as its state
//! instead of an empty one: every member of the new cluster is restored from the same file with
//! the same `--initial-cluster`, so all of them hold the same state at the same index and term,
//! with the new membership (the old cluster's member records and removed ids are dropped: the
//! new cluster has other members and ids) — as `etcdctl snapshot restore` does.

use std::io::Read;
use std::path::Path;

use deimos_raft::storage::LogStorage;
use deimos_raft::types::{ConfChange, ConfState, Entry, EntryPayload, HardState, SnapshotMeta};

use crate::keyspace::META_KEY;
use crate::machine::{encode_member, member_key, Member, MEMBER_PREFIX, REMOVED_PREFIX};
use crate::persist::{PersistError, RedbStorage, SnapshotDecoder, SnapshotWriter, DB_FILE};

/// What reading a backup file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub meta: SnapshotMeta,
    /// The stream's verified checksum (FNV-1a 64).
    pub checksum: u64,
    /// Key-space nodes (keys and directories).
    pub keys: u64,
    /// Every record: nodes, the store's index record, member records.
    pub records: u64,
    /// The etcd index of the key space (`X-Etcd-Index`) at the snapshot.
    pub store_index: u64,
    /// Size of the stream in bytes.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("cannot read the snapshot: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a complete, undamaged snapshot.
    #[error("invalid snapshot: {0}")]
    Invalid(String),
    #[error("{0}")]
    Store(String),
}

fn invalid(e: impl std::fmt::Display) -> RecoveryError {
    RecoveryError::Invalid(e.to_string())
}

fn store_err(e: impl std::fmt::Display) -> RecoveryError {
    RecoveryError::Store(e.to_string())
}

/// Reading chunk size: large enough for few syscalls, small enough to stay bounded.
const READ_CHUNK: usize = 256 << 10;

/// Tallies what a stream carries, from its records as they pass.
#[derive(Default)]
struct Tally {
    keys: u64,
    store_index: u64,
    bytes: u64,
}

impl Tally {
    fn record(&mut self, key: &str, value: &[u8]) -> Result<(), PersistError> {
        if key.starts_with('/') {
            self.keys += 1;
        } else if key == META_KEY {
            #[derive(serde::Deserialize)]
            struct Meta {
                index: u64,
            }
            let m: Meta = serde_json::from_slice(value)
                .map_err(|e| PersistError::Snapshot(format!("store index record: {e}")))?;
            self.store_index = m.index;
        }
        Ok(())
    }

    fn summary(self, d: SnapshotDecoder) -> Result<BackupSummary, RecoveryError> {
        let (checksum, records) = (d.checksum(), d.records());
        let meta = d.finish().map_err(invalid)?;
        Ok(BackupSummary {
            meta,
            checksum,
            keys: self.keys,
            records,
            store_index: self.store_index,
            bytes: self.bytes,
        })
    }
}

/// Read a whole backup and check it (framing, order, record count, checksum, trailer),
/// holding at most one chunk and one frame. A truncated or damaged file is `Invalid`.
pub fn inspect(mut input: impl Read) -> Result<BackupSummary, RecoveryError> {
    let mut d = SnapshotDecoder::new();
    let mut tally = Tally::default();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = read_some(&mut input, &mut buf)?;
        if n == 0 {
            break;
        }
        tally.bytes += n as u64;
        d.push(&buf[..n], |k, v| tally.record(&k, &v))
            .map_err(invalid)?;
    }
    tally.summary(d)
}

fn read_some(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, std::io::Error> {
    loop {
        match input.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Seed the data directory `dir` (which must not hold a store yet) for member `me` of a new
/// cluster `cluster_id` with the given founding `members`, from the backup `input`: the
/// snapshot's key space becomes the applied state at the snapshot's index and term, with the
/// new membership. Nothing is committed unless the whole file checks out; the caller removes
/// `dir` on error (the store file may have been created, empty).
pub fn restore(
    input: impl Read,
    dir: &Path,
    members: &[Member],
    me: u64,
    cluster_id: u64,
) -> Result<BackupSummary, RecoveryError> {
    if dir.join(DB_FILE).exists() {
        return Err(RecoveryError::Store(format!(
            "{} already holds a store; restore into a new data directory",
            dir.display()
        )));
    }
    if !members.iter().any(|m| m.id == me) {
        return Err(RecoveryError::Store(
            "this member is not in the new cluster's membership".into(),
        ));
    }
    let mut storage = RedbStorage::open(dir).map_err(store_err)?;
    let summary = seed(input, &mut storage, members)?;
    let hs = HardState {
        term: summary.meta.term,
        vote: None,
        commit: summary.meta.index,
    };
    storage.persist(Some(&hs), &[]).map_err(store_err)?;
    storage
        .set_member_id(me)
        .and_then(|()| storage.set_cluster_id(cluster_id))
        .map_err(store_err)?;
    Ok(summary)
}

/// Stream the backup into `storage` through a snapshot install with the new membership.
fn seed(
    mut input: impl Read,
    storage: &mut RedbStorage,
    members: &[Member],
) -> Result<BackupSummary, RecoveryError> {
    let conf = ConfState::new(members.iter().map(|m| m.id));
    let mut new_members: Vec<(String, Vec<u8>)> = members
        .iter()
        .map(|m| (member_key(m.id), encode_member(m)))
        .collect();
    new_members.sort();
    let mut new_members = new_members.into_iter().peekable();

    let mut d = SnapshotDecoder::new();
    let mut tally = Tally::default();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut pending: Vec<(String, Vec<u8>)> = Vec::new();
    // Read up to the header: the install needs the index and term before any record.
    while d.meta().is_none() {
        let n = read_some(&mut input, &mut buf)?;
        if n == 0 {
            return Err(invalid("stream ended early (truncated)"));
        }
        tally.bytes += n as u64;
        d.push(&buf[..n], |k, v| {
            tally.record(&k, &v)?;
            pending.push((k, v));
            Ok(())
        })
        .map_err(invalid)?;
    }
    let old = d.meta().cloned().unwrap_or_default();
    let meta = SnapshotMeta {
        index: old.index,
        term: old.term,
        conf,
    };
    if meta.index == 0 {
        return Err(invalid("snapshot at index 0 holds no state"));
    }
    let mut inst = storage.begin_snapshot_install(&meta).map_err(store_err)?;
    let mut w = SnapshotWriter::new(&meta).map_err(store_err)?;
    let mut rewrite = |w: &mut SnapshotWriter, k: String, v: Vec<u8>| -> Result<(), PersistError> {
        // The old cluster's members and removed ids are not this cluster's.
        if k.starts_with(MEMBER_PREFIX) || k.starts_with(REMOVED_PREFIX) {
            return Ok(());
        }
        while let Some((mk, mv)) = new_members.next_if(|(mk, _)| *mk < k) {
            w.record(&mk, &mv)?;
        }
        w.record(&k, &v)
    };
    loop {
        for (k, v) in pending.drain(..) {
            rewrite(&mut w, k, v).map_err(store_err)?;
        }
        if w.pending() >= READ_CHUNK {
            inst.push(&w.take()).map_err(store_err)?;
        }
        let n = read_some(&mut input, &mut buf)?;
        if n == 0 {
            break;
        }
        tally.bytes += n as u64;
        d.push(&buf[..n], |k, v| {
            tally.record(&k, &v)?;
            pending.push((k, v));
            Ok(())
        })
        .map_err(invalid)?;
    }
    // The whole input must check out before anything is committed.
    let summary = tally.summary(d)?;
    for (mk, mv) in new_members {
        w.record(&mk, &mv).map_err(store_err)?;
    }
    inst.push(&w.finish().map_err(store_err)?)
        .map_err(store_err)?;
    inst.finish().map_err(store_err)?;
    Ok(summary)
}

/// What [`force_new_cluster`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedCluster {
    /// Members removed from the membership (empty: it was a one-member cluster already).
    pub removed: Vec<u64>,
    /// Index of the last entry written (the new commit index).
    pub commit: u64,
}

/// Make this member (`me`) the only member of its cluster, keeping its data, as etcd's
/// `--force-new-cluster`: one `RemoveNode` entry per other member is appended to the log and
/// everything in the log is marked committed, so the node applies them at start, through the
/// same path as any membership change (the member records and removed ids follow).
///
/// Why every entry of the log counts as committed, not only those up to the stored commit
/// index: the stored index can lag what the lost quorum had committed (and acknowledged to
/// clients), and a leader elected normally would commit its whole log too. Entries this node
/// holds that never committed elsewhere become committed, which is what Raft allows a leader.
pub fn force_new_cluster(
    storage: &mut RedbStorage,
    me: u64,
) -> Result<ForcedCluster, RecoveryError> {
    let (applied, _, mut conf) = storage.applied_state();
    let last = storage.last_index().map_err(store_err)?;
    // The membership as of the end of the log: applied, plus the changes not applied yet.
    let mut next = applied + 1;
    while next <= last {
        let batch = storage
            .entries(next, last + 1, Some(4 << 20))
            .map_err(store_err)?;
        let Some(end) = batch.last().map(|e| e.index) else {
            break;
        };
        for e in &batch {
            if let EntryPayload::ConfChange(cc) = e.payload {
                conf.apply(cc);
            }
        }
        next = end + 1;
    }
    if !conf.voters.contains(&me) {
        return Err(RecoveryError::Store(format!(
            "member {me:016x} is not a voter of the membership it holds, so it cannot carry the cluster on alone"
        )));
    }
    let removed: Vec<u64> = conf.all().filter(|&id| id != me).collect();
    let hs = storage.hard_state();
    let term = hs.term.max(storage.term(last).map_err(store_err)?);
    let entries: Vec<Entry> = removed
        .iter()
        .zip(last + 1..)
        .map(|(&id, index)| Entry {
            term,
            index,
            payload: EntryPayload::ConfChange(ConfChange::RemoveNode(id)),
        })
        .collect();
    let commit = last + entries.len() as u64;
    let hs = HardState {
        term,
        vote: if term == hs.term { hs.vote } else { None },
        commit,
    };
    storage.persist(Some(&hs), &entries).map_err(store_err)?;
    // A commit index alone is staged; this start must not depend on it.
    storage.write_staged().map_err(store_err)?;
    Ok(ForcedCluster { removed, commit })
}

/// Member ids are derived from the peer URLs (stable, the same on every node), as etcd does.
pub fn member_id(peer_urls: &[String]) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(|s| s.trim_end_matches('/')).collect();
    urls.sort_unstable();
    fnv(urls.join(",").bytes())
}

/// A new cluster's id: its founding members' ids and its token, hashed (as etcd derives it), so
/// every founder — and every member restored from a backup — computes the same one, and two
/// clusters differ.
pub fn cluster_id(founders: &[Member], token: &str) -> u64 {
    let mut ids: Vec<u64> = founders.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    fnv(ids
        .iter()
        .flat_map(|id| id.to_be_bytes())
        .chain(token.bytes()))
}

fn fnv(bytes: impl Iterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// `n1=http://a:7001,n2=http://b:7002` (etcd's `--initial-cluster`; a name may repeat to list
/// several URLs) as members with their derived ids.
pub fn parse_members(spec: &str) -> Result<Vec<Member>, MembersSpecError> {
    let mut out: Vec<Member> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| MembersSpecError::NotNameUrl(part.to_string()))?;
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(MembersSpecError::Scheme(part.to_string()));
        }
        match out.iter_mut().find(|m| m.name == name) {
            Some(m) => m.peer_urls.push(url.to_string()),
            None => out.push(Member {
                id: 0,
                name: name.to_string(),
                peer_urls: vec![url.to_string()],
                client_urls: vec![],
            }),
        }
    }
    if out.is_empty() {
        return Err(MembersSpecError::Empty);
    }
    for m in &mut out {
        m.id = member_id(&m.peer_urls);
    }
    let mut ids: Vec<u64> = out.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != out.len() {
        return Err(MembersSpecError::SharedPeerUrls);
    }
    Ok(out)
}

/// A `name=url,...` member list (`--bootstrap-config`, `--initial-cluster`) that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembersSpecError {
    #[error("bootstrap entry {0:?} is not name=url")]
    NotNameUrl(String),
    #[error("bootstrap entry {0:?}: URL must start with http:// or https://")]
    Scheme(String),
    #[error("empty --bootstrap-config")]
    Empty,
    #[error("two bootstrap members share peer URLs")]
    SharedPeerUrls,
}

#[cfg(test)]
mod tests;
