//! The replicated state machine the driver runs: the etcd v2 key space plus the member registry,
//! made durable in the same redb transaction as the applied index.
//!
//! A log entry's payload is a JSON-encoded [`Proposal`]. JSON because `Command` is an internally
//! tagged enum (readable in a log dump, stable under added fields) and the cost is small next to
//! an fsync.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use deimos_raft::driver::{ApplyBatch, StateMachine, StateMachineError};
use deimos_raft::storage::LogStorage;
use deimos_raft::types::{ConfChange, Index, Snapshot};
use serde::{Deserialize, Serialize};

use crate::auth::{AuthError, AuthOp, AuthReply, AuthState, AUTH_PREFIX};
use crate::keyspace::{Applied, Command, ErrorCode, Store, StoreError};
use crate::persist::RedbStorage;

/// Member records live beside the key space's records; the key space owns `/...` and its meta
/// key, so a distinct prefix keeps the two apart.
pub(crate) const MEMBER_PREFIX: &str = "\u{1}member/";
/// Ids of removed members (etcd keeps the same list): a removed id is never added again and its
/// peer traffic is refused, because a new server under an old id would inherit that id's place
/// in logs, votes and acknowledgements it never held.
pub(crate) const REMOVED_PREFIX: &str = "\u{1}removed/";

/// Default of how many applied entries stay in the log after a compaction (etcd's
/// `--experimental-snapshot-catchup-entries`), so a briefly lagging follower catches up from the
/// log rather than by a full snapshot. The server's `--snapshot-catchup-entries` overrides it.
pub const DEFAULT_CATCH_UP_ENTRIES: u64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proposal {
    Keys(Command),
    /// Record a member's metadata (add, or update of its URLs / name).
    PutMember(Member),
    RemoveMember(u64),
    /// A change of users, roles or the auth switch (`auth.rs`). Passwords only as hashes.
    Auth(AuthOp),
}

impl Proposal {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Proposal always serialises")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Keys(Result<Applied, StoreError>),
    Members,
    Auth(Result<AuthReply, AuthError>),
    /// The entry could not be decoded (never written by this version).
    Invalid(String),
}

pub type SharedStore = Arc<RwLock<Store>>;
pub type SharedMembers = Arc<RwLock<BTreeMap<u64, Member>>>;
pub type SharedRemoved = Arc<RwLock<std::collections::BTreeSet<u64>>>;
pub type SharedAuth = Arc<RwLock<AuthState>>;

pub struct KvStateMachine {
    store: SharedStore,
    members: SharedMembers,
    removed: SharedRemoved,
    auth: SharedAuth,
    /// Applied entries kept in the log by a compaction (see [`DEFAULT_CATCH_UP_ENTRIES`]).
    catch_up_entries: u64,
}

impl KvStateMachine {
    /// Load the applied state from `storage` (no log replay). On a brand-new data dir with
    /// `bootstrap` members, write the initial membership into the log first (see
    /// `bootstrap_log`).
    pub fn open(
        storage: &mut RedbStorage,
        bootstrap: &[Member],
    ) -> Result<Self, StateMachineError> {
        let fresh = storage.last_index().map_err(StateMachineError::new)? == 0
            && storage.applied_state().2.voters.is_empty();
        if fresh && !bootstrap.is_empty() {
            bootstrap_log(storage, bootstrap)?;
        }
        let (store, members, removed, auth) = load(storage)?;
        Ok(KvStateMachine {
            store: Arc::new(RwLock::new(store)),
            members: Arc::new(RwLock::new(members)),
            removed: Arc::new(RwLock::new(removed)),
            auth: Arc::new(RwLock::new(auth)),
            catch_up_entries: DEFAULT_CATCH_UP_ENTRIES,
        })
    }

    /// Keep `n` applied entries in the log after each compaction. Fewer makes a follower that
    /// fell behind by more than `n` entries need a whole snapshot; 0 is allowed (every
    /// compaction trims the log up to the applied index, so any follower still behind it at
    /// that moment is sent a snapshot: correct, only costly), which is what tests use to force
    /// the snapshot path.
    pub fn with_catch_up_entries(mut self, n: u64) -> Self {
        self.catch_up_entries = n;
        self
    }

    pub fn store(&self) -> SharedStore {
        self.store.clone()
    }

    pub fn members(&self) -> SharedMembers {
        self.members.clone()
    }

    /// Ids of members that were removed (never to be added again).
    pub fn removed(&self) -> SharedRemoved {
        self.removed.clone()
    }

    /// Users, roles and whether auth is on.
    pub fn auth(&self) -> SharedAuth {
        self.auth.clone()
    }
}

/// The initial membership as committed log entries of term 1, identical on every bootstrapping
/// node: one `AddVoter` per member, then one entry recording each member's metadata. As log
/// entries (etcd does the same) they reach a node that joins later by ordinary replication; kept
/// only as index-0 state, a newcomer that receives the log from index 1 would never learn the
/// original voters and could elect itself.
fn bootstrap_log(storage: &mut RedbStorage, members: &[Member]) -> Result<(), StateMachineError> {
    use deimos_raft::types::{ConfChange, Entry, EntryPayload, HardState};
    let mut entries = Vec::with_capacity(members.len() * 2);
    for m in members {
        let payload = EntryPayload::ConfChange(ConfChange::AddVoter(m.id));
        entries.push(Entry {
            term: 1,
            index: entries.len() as u64 + 1,
            payload,
        });
    }
    for m in members {
        // Origin 0: no node waits for these.
        let data =
            deimos_raft::driver::envelope::wrap(0, 0, &Proposal::PutMember(m.clone()).encode());
        let payload = EntryPayload::Normal(data);
        entries.push(Entry {
            term: 1,
            index: entries.len() as u64 + 1,
            payload,
        });
    }
    let hs = HardState {
        term: 1,
        vote: None,
        commit: entries.len() as u64,
    };
    storage
        .persist(Some(&hs), &entries)
        .map_err(StateMachineError::new)
}

/// Remove a member's record and remember its id as removed, in the same batch.
fn remove_member(
    members: &mut BTreeMap<u64, Member>,
    removed: &mut std::collections::BTreeSet<u64>,
    mutations: &mut Vec<(String, Option<Vec<u8>>)>,
    id: u64,
) {
    mutations.push((member_key(id), None));
    mutations.push((format!("{REMOVED_PREFIX}{id:016x}"), Some(Vec::new())));
    members.remove(&id);
    removed.insert(id);
}

pub(crate) fn member_key(id: u64) -> String {
    format!("{MEMBER_PREFIX}{id:016x}")
}

pub(crate) fn encode_member(m: &Member) -> Vec<u8> {
    serde_json::to_vec(m).expect("a Member always serialises")
}

type Loaded = (
    Store,
    BTreeMap<u64, Member>,
    std::collections::BTreeSet<u64>,
    AuthState,
);

fn load(storage: &RedbStorage) -> Result<Loaded, StateMachineError> {
    let mut keys = Vec::new();
    let mut members = BTreeMap::new();
    let mut removed = std::collections::BTreeSet::new();
    let mut auth = AuthState::default();
    for r in storage.records().map_err(StateMachineError::new)? {
        let (k, v) = r.map_err(StateMachineError::new)?;
        if k.starts_with(MEMBER_PREFIX) {
            let m: Member = serde_json::from_slice(&v)
                .map_err(|e| StateMachineError::new(format!("member record {k}: {e}")))?;
            members.insert(m.id, m);
        } else if let Some(hex) = k.strip_prefix(REMOVED_PREFIX) {
            let id = u64::from_str_radix(hex, 16)
                .map_err(|e| StateMachineError::new(format!("removed-member record {k:?}: {e}")))?;
            removed.insert(id);
        } else if k.starts_with(AUTH_PREFIX) {
            auth.load_record(&k, &v).map_err(StateMachineError::new)?;
        } else {
            keys.push((k, v));
        }
    }
    let store = Store::from_records(keys).map_err(StateMachineError::new)?;
    Ok((store, members, removed, auth))
}

impl StateMachine<RedbStorage> for KvStateMachine {
    type Output = Output;

    fn apply(
        &mut self,
        storage: &mut RedbStorage,
        batch: ApplyBatch<'_>,
    ) -> Result<Vec<Output>, StateMachineError> {
        let mut outputs = Vec::with_capacity(batch.commands.len());
        let mut mutations = Vec::new();
        {
            let mut store = self
                .store
                .write()
                .map_err(|_| StateMachineError::new("store lock poisoned"))?;
            let mut members = self
                .members
                .write()
                .map_err(|_| StateMachineError::new("members lock poisoned"))?;
            let mut removed = self
                .removed
                .write()
                .map_err(|_| StateMachineError::new("removed-members lock poisoned"))?;
            // A member's record leaves with it: the `RemoveNode` entry removes both, so no
            // failure between two proposals can leave the record of a node that is gone.
            let mut removals = batch
                .conf_changes
                .iter()
                .filter_map(|(index, cc)| match cc {
                    ConfChange::RemoveNode(id) => Some((*index, *id)),
                    _ => None,
                });
            let mut next_removal = removals.next();
            for c in &batch.commands {
                while let Some((_, id)) = next_removal.filter(|(i, _)| *i < c.index) {
                    remove_member(&mut members, &mut removed, &mut mutations, id);
                    next_removal = removals.next();
                }
                let out = match serde_json::from_slice::<Proposal>(c.data) {
                    Ok(Proposal::Keys(cmd)) => Output::Keys(store.apply(&cmd)),
                    // A removed member's record never comes back (a removed node still running
                    // may try to publish itself).
                    Ok(Proposal::PutMember(m)) if removed.contains(&m.id) => {
                        Output::Invalid(format!("member {:016x} was removed", m.id))
                    }
                    Ok(Proposal::PutMember(m)) => {
                        mutations.push((member_key(m.id), Some(encode_member(&m))));
                        members.insert(m.id, m);
                        Output::Members
                    }
                    Ok(Proposal::RemoveMember(id)) => {
                        remove_member(&mut members, &mut removed, &mut mutations, id);
                        Output::Members
                    }
                    // Locked only for the entry: every authenticated request reads this state,
                    // and most batches hold no auth change.
                    Ok(Proposal::Auth(op)) => Output::Auth(
                        self.auth
                            .write()
                            .map_err(|_| StateMachineError::new("auth lock poisoned"))?
                            .apply(op, &mut mutations),
                    ),
                    Err(e) => Output::Invalid(format!("entry {}: {e}", c.index)),
                };
                outputs.push(out);
            }
            while let Some((_, id)) = next_removal {
                remove_member(&mut members, &mut removed, &mut mutations, id);
                next_removal = removals.next();
            }
            mutations.extend(store.take_dirty());
            // The bounded event history rides in the same batch, so `waitIndex` works across
            // a restart exactly up to what was applied.
            mutations.extend(store.take_history_dirty());
        }
        // No fsync and no transaction here: the Raft log already holds these entries durably,
        // so the records are staged and ride with the next persist. A crash in between rolls
        // the applied state back to a consistent earlier point, and Raft re-applies the rest.
        storage
            .commit_applied_deferred(batch.applied, batch.applied_term, batch.conf, &mutations)
            .map_err(StateMachineError::new)?;
        Ok(outputs)
    }

    fn restore(
        &mut self,
        storage: &mut RedbStorage,
        _snapshot: &Snapshot,
    ) -> Result<(), StateMachineError> {
        let (store, members, removed, auth) = load(storage)?;
        let mut cur = self
            .store
            .write()
            .map_err(|_| StateMachineError::new("store lock poisoned"))?;
        // Watchers of the old state learn it was replaced (etcd's "cleared due to recovery").
        cur.close_watchers();
        *cur = store;
        *self
            .members
            .write()
            .map_err(|_| StateMachineError::new("members lock poisoned"))? = members;
        *self
            .removed
            .write()
            .map_err(|_| StateMachineError::new("removed-members lock poisoned"))? = removed;
        *self
            .auth
            .write()
            .map_err(|_| StateMachineError::new("auth lock poisoned"))? = auth;
        Ok(())
    }

    fn compact(
        &mut self,
        storage: &mut RedbStorage,
        applied: Index,
    ) -> Result<(), StateMachineError> {
        let upto = applied.saturating_sub(self.catch_up_entries);
        let first = storage.first_index().map_err(StateMachineError::new)?;
        if upto < first {
            return Ok(());
        }
        storage.compact(upto).map_err(StateMachineError::new)
    }
}

/// The error a proposal's caller sees when the entry could not be decoded.
pub fn invalid_entry(why: &str, index: u64) -> StoreError {
    StoreError::new(ErrorCode::RaftInternal, why, index)
}

#[cfg(test)]
mod tests {
    use deimos_raft::driver::Command as Cmd;

    use super::*;

    fn member(id: u64) -> Member {
        Member {
            id,
            name: format!("n{id}"),
            peer_urls: vec![format!("http://127.0.0.1:{}", 7000 + id)],
            client_urls: vec![],
        }
    }

    #[test]
    fn applies_durably_and_reloads_without_replay() {
        use deimos_raft::storage::LogStorage;
        use deimos_raft::types::{ConfState, EntryPayload};
        let dir = tempfile::tempdir().unwrap();
        {
            let mut st = RedbStorage::open(dir.path()).unwrap();
            let mut sm = KvStateMachine::open(&mut st, &[member(1)]).unwrap();
            // Bootstrap is log entries: one AddVoter, one member record, both committed.
            assert_eq!(st.last_index().unwrap(), 2);
            assert_eq!(st.hard_state().commit, 2);
            let boot = st.entries(1, 3, None).unwrap();
            assert!(matches!(boot[0].payload, EntryPayload::ConfChange(_)));
            let EntryPayload::Normal(rec) = &boot[1].payload else {
                panic!("member entry")
            };
            let (_, _, rec) = deimos_raft::driver::envelope::unwrap(rec).unwrap();
            let e = deimos_raft::types::Entry {
                term: 1,
                index: 3,
                payload: EntryPayload::Normal(vec![]),
            };
            st.persist(None, &[e]).unwrap();
            let p = Proposal::Keys(Command::set("/a", "1")).encode();
            let bad = b"not json".to_vec();
            let conf = ConfState::new([1]);
            let out = sm
                .apply(
                    &mut st,
                    ApplyBatch {
                        commands: vec![
                            Cmd {
                                index: 2,
                                term: 1,
                                data: rec,
                            },
                            Cmd {
                                index: 3,
                                term: 1,
                                data: &p,
                            },
                            Cmd {
                                index: 3,
                                term: 1,
                                data: &bad,
                            },
                        ],
                        conf_changes: vec![],
                        applied: 3,
                        applied_term: 1,
                        conf: &conf,
                    },
                )
                .unwrap();
            assert!(matches!(out[0], Output::Members));
            assert!(matches!(out[1], Output::Keys(Ok(_))));
            assert!(matches!(out[2], Output::Invalid(_)));
            // Deferred: durable with the next durable write.
            st.persist(
                Some(&deimos_raft::types::HardState {
                    term: 2,
                    vote: None,
                    commit: 3,
                }),
                &[],
            )
            .unwrap();
        }
        let mut st = RedbStorage::open(dir.path()).unwrap();
        assert_eq!(st.applied_state().0, 3);
        assert_eq!(st.applied_state().2, ConfState::new([1]));
        let sm = KvStateMachine::open(&mut st, &[member(1), member(2)]).unwrap();
        let store = sm.store();
        let got = store.read().unwrap().get("/a", false, false, 0).unwrap();
        assert_eq!(got.node.value.as_deref(), Some("1"));
        // Bootstrap happens only on a fresh data dir: member 2 was not added on reopen.
        assert_eq!(sm.members().read().unwrap().len(), 1);
        assert_eq!(st.last_index().unwrap(), 3);
    }

    /// A compaction keeps exactly the configured number of applied entries, and 0 keeps none
    /// (the log then starts after the applied index; lagging followers get a snapshot).
    #[test]
    fn compaction_keeps_the_configured_catch_up_entries() {
        use deimos_raft::storage::LogStorage;
        use deimos_raft::types::{ConfState, Entry, EntryPayload, HardState};
        for (keep, first_after) in [(5, 16), (0, 21), (100, 1)] {
            let dir = tempfile::tempdir().unwrap();
            let mut st = RedbStorage::open(dir.path()).unwrap();
            let sm = KvStateMachine::open(&mut st, &[member(1)]).unwrap();
            let mut sm = sm.with_catch_up_entries(keep);
            // The bootstrap wrote entries 1..=2.
            let filler: Vec<_> = (3..=20)
                .map(|index| Entry {
                    term: 1,
                    index,
                    payload: EntryPayload::Empty,
                })
                .collect();
            let hs = HardState {
                term: 1,
                vote: None,
                commit: 20,
            };
            st.persist(Some(&hs), &filler).unwrap();
            let conf = ConfState::new([1]);
            sm.apply(
                &mut st,
                ApplyBatch {
                    commands: vec![],
                    conf_changes: vec![],
                    applied: 20,
                    applied_term: 1,
                    conf: &conf,
                },
            )
            .unwrap();
            sm.compact(&mut st, 20).unwrap();
            assert_eq!(st.first_index().unwrap(), first_after, "keep {keep}");
            assert_eq!(st.last_index().unwrap(), 20, "keep {keep}");
        }
    }

    #[test]
    fn a_removed_node_takes_its_member_record_along_and_its_id_is_never_recorded_again() {
        use deimos_raft::types::ConfState;
        let dir = tempfile::tempdir().unwrap();
        let mut st = RedbStorage::open(dir.path()).unwrap();
        let mut sm = KvStateMachine::open(&mut st, &[member(1), member(2), member(3)]).unwrap();
        // The bootstrap wrote entries 1..=6; these stand for 7..=12.
        let filler: Vec<_> = (7..=12)
            .map(|index| deimos_raft::types::Entry {
                term: 1,
                index,
                payload: deimos_raft::types::EntryPayload::Empty,
            })
            .collect();
        st.persist(None, &filler).unwrap();
        let put = |id| Proposal::PutMember(member(id)).encode();
        let (put4, put3) = (put(4), put(3));
        // 7: node 2 leaves; 8: its replacement (a new id) is recorded; 9: node 3 leaves;
        // 10: node 3's record is written again (a removed node publishing itself): refused;
        // 11: the replacement becomes a voter.
        let mut conf_after = ConfState::new([1]);
        conf_after.apply(ConfChange::AddVoter(4));
        let out = sm
            .apply(
                &mut st,
                ApplyBatch {
                    commands: vec![
                        Cmd {
                            index: 8,
                            term: 1,
                            data: &put4,
                        },
                        Cmd {
                            index: 10,
                            term: 1,
                            data: &put3,
                        },
                    ],
                    conf_changes: vec![
                        (7, ConfChange::RemoveNode(2)),
                        (9, ConfChange::RemoveNode(3)),
                        (11, ConfChange::AddVoter(4)),
                    ],
                    applied: 11,
                    applied_term: 1,
                    conf: &conf_after,
                },
            )
            .unwrap();
        assert!(matches!(out[1], Output::Invalid(_)), "{out:?}");
        let ids: Vec<u64> = sm.members().read().unwrap().keys().copied().collect();
        // (The bootstrap records are in the log, not applied here.)
        assert_eq!(ids, [4], "a removed id is never recorded again");
        let conf = ConfState::new([1]);
        sm.apply(
            &mut st,
            ApplyBatch {
                commands: vec![],
                conf_changes: vec![(12, ConfChange::RemoveNode(4))],
                applied: 12,
                applied_term: 1,
                conf: &conf,
            },
        )
        .unwrap();
        assert!(
            sm.members().read().unwrap().is_empty(),
            "node 4's record left with it"
        );
        let removed: Vec<u64> = sm.removed().read().unwrap().iter().copied().collect();
        assert_eq!(removed, [2, 3, 4]);
        // The same in the stored records (staged until written), so a restart and a snapshot
        // carry the removed ids too.
        st.write_staged().unwrap();
        let (_, members, removed, _) = load(&st).unwrap();
        assert!(members.is_empty());
        assert_eq!(removed.into_iter().collect::<Vec<_>>(), [2, 3, 4]);
    }
}
