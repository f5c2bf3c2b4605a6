//! Behaviour tests of `RedbStorage`: a suite shared with the reference `MemStorage` (both must
//! pass it), then the redb-only features (applied state, batches, refusals, reopen). Snapshot
//! streams (encode, apply, damage, staleness) are in `persist_snapshots.rs`.

#[path = "persist_common.rs"]
mod common;

use common::*;
use deimos_raft::storage::{LogStorage, MemStorage, StorageError};
use deimos_raft::types::{ConfState, HardState, Snapshot, SnapshotMeta};
use deimos_store::persist::{
    encode_snapshot_data, AppliedBatch, PersistError, RedbStorage, WriteBatch,
};
use tempfile::TempDir;

// ---------- shared suite ----------

fn empty_log<S: Subject>(s: &mut S) {
    assert_eq!(s.first_index().unwrap(), 1);
    assert_eq!(s.last_index().unwrap(), 0);
    assert_eq!(s.term(0).unwrap(), 0);
    assert_eq!(s.term(1), Err(StorageError::Unavailable));
    assert_eq!(s.entries(1, 1, None).unwrap(), vec![]);
    assert_eq!(s.entries(0, 1, None), Err(StorageError::Compacted));
    assert_eq!(s.entries(1, 2, None), Err(StorageError::Unavailable));
    assert_eq!(s.initial_state().unwrap().conf_state, conf());
    assert!(s.snapshot().unwrap().is_empty());
}

fn append_truncates_conflicts<S: Subject>(s: &mut S) {
    s.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]).unwrap();
    s.append(&[ent(2, 2)]).unwrap();
    assert_eq!(s.last_index().unwrap(), 2);
    assert_eq!(s.term(2).unwrap(), 2);
    assert_eq!(s.term(1).unwrap(), 1);
    assert!(matches!(
        s.append(&[ent(5, 2)]),
        Err(StorageError::Refused(_))
    ));
    assert_eq!(s.last_index().unwrap(), 2);
    // Replacing from the very first index.
    s.append(&[ent(1, 3), ent(2, 3), ent(3, 3), ent(4, 3)])
        .unwrap();
    assert_eq!(s.entries(1, 5, None).unwrap(), ents(1, 5, 3));
    // Empty append is a no-op.
    s.append(&[]).unwrap();
    assert_eq!(s.last_index().unwrap(), 4);
}

fn entries_bounds_and_max_bytes<S: Subject>(s: &mut S) {
    s.append(&ents(1, 6, 1)).unwrap(); // each entry's size() is 17
    assert_eq!(s.entries(1, 6, None).unwrap().len(), 5);
    assert_eq!(s.entries(1, 6, Some(0)).unwrap().len(), 1);
    assert_eq!(s.entries(1, 6, Some(33)).unwrap().len(), 1);
    assert_eq!(s.entries(1, 6, Some(34)).unwrap().len(), 2);
    assert_eq!(s.entries(2, 6, Some(51)).unwrap(), ents(2, 5, 1));
    assert_eq!(s.entries(3, 4, None).unwrap(), vec![ent(3, 1)]);
    assert_eq!(s.entries(6, 6, None).unwrap(), vec![]);
    assert_eq!(s.entries(3, 7, None), Err(StorageError::Unavailable));
}

fn compaction<S: Subject>(s: &mut S) {
    s.append(&[ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2)])
        .unwrap();
    s.compact_to(2).unwrap();
    assert_eq!(s.first_index().unwrap(), 3);
    assert_eq!(s.last_index().unwrap(), 4);
    assert_eq!(s.term(2).unwrap(), 1);
    assert_eq!(s.term(1), Err(StorageError::Compacted));
    assert_eq!(s.entries(2, 3, None), Err(StorageError::Compacted));
    assert_eq!(s.entries(3, 5, None).unwrap(), vec![ent(3, 2), ent(4, 2)]);
    assert_eq!(s.compact_to(2), Err(StorageError::Compacted));
    assert_eq!(s.compact_to(1), Err(StorageError::Compacted));
    assert_eq!(s.compact_to(5), Err(StorageError::Unavailable));
    // Appending entries that are already compacted skips them.
    s.append(&[ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2), ent(5, 2)])
        .unwrap();
    assert_eq!(s.last_index().unwrap(), 5);
    assert_eq!(s.first_index().unwrap(), 3);
    s.append(&[ent(2, 1)]).unwrap();
    assert_eq!(s.last_index().unwrap(), 5);
    // Compacting the whole log keeps the last term answerable.
    s.compact_to(5).unwrap();
    assert_eq!(s.first_index().unwrap(), 6);
    assert_eq!(s.last_index().unwrap(), 5);
    assert_eq!(s.term(5).unwrap(), 2);
    s.append(&[ent(6, 3)]).unwrap();
    assert_eq!(s.term(6).unwrap(), 3);
}

fn snapshot_resets_log<S: Subject>(s: &mut S, data: Vec<u8>) {
    s.append(&ents(1, 4, 1)).unwrap();
    s.set_hard_state(&HardState {
        term: 1,
        vote: Some(1),
        commit: 2,
    })
    .unwrap();
    let meta = SnapshotMeta {
        index: 10,
        term: 3,
        conf: conf(),
    };
    s.apply_snapshot(&Snapshot {
        meta: meta.clone(),
        data: data.clone(),
    })
    .unwrap();
    assert_eq!(s.first_index().unwrap(), 11);
    assert_eq!(s.last_index().unwrap(), 10);
    assert_eq!(s.term(10).unwrap(), 3);
    assert_eq!(s.term(9), Err(StorageError::Compacted));
    assert_eq!(s.entries(11, 11, None).unwrap(), vec![]);
    let hs = s.initial_state().unwrap().hard_state;
    assert_eq!(
        hs,
        HardState {
            term: 1,
            vote: Some(1),
            commit: 10
        }
    );
    assert_eq!(s.snapshot().unwrap().meta, meta);
    assert_eq!(
        s.apply_snapshot(&Snapshot {
            meta: meta.clone(),
            data
        }),
        Err(StorageError::Compacted)
    );
    s.append(&[ent(11, 3)]).unwrap();
    assert_eq!(s.last_index().unwrap(), 11);
}

fn hard_state<S: Subject>(s: &mut S) {
    s.append(&ents(1, 3, 2)).unwrap();
    let hs = HardState {
        term: 2,
        vote: Some(3),
        commit: 2,
    };
    s.set_hard_state(&hs).unwrap();
    assert_eq!(s.initial_state().unwrap().hard_state, hs);
}

fn mem() -> MemStorage {
    MemStorage::new(conf())
}

fn snapshot_data_for(meta_index: u64, term: u64) -> Vec<u8> {
    let meta = SnapshotMeta {
        index: meta_index,
        term,
        conf: conf(),
    };
    encode_snapshot_data(&meta, &[("a".into(), b"1".to_vec())]).unwrap()
}

macro_rules! shared {
    ($($name:ident),*) => {
        mod mem_suite { use super::*; $( #[test] fn $name() { super::$name(&mut mem()); } )* }
        mod redb_suite {
            use super::*;
            $( #[test] fn $name() { let d = TempDir::new().unwrap(); super::$name(&mut open_redb(&d)); } )*
        }
    };
}
shared!(
    empty_log,
    append_truncates_conflicts,
    entries_bounds_and_max_bytes,
    compaction,
    hard_state
);

#[test]
fn mem_snapshot_resets_log() {
    snapshot_resets_log(&mut mem(), snapshot_data_for(10, 3));
}

#[test]
fn redb_snapshot_resets_log() {
    let d = TempDir::new().unwrap();
    let mut s = open_redb(&d);
    snapshot_resets_log(&mut s, snapshot_data_for(10, 3));
    assert_eq!(s.applied_state(), (10, 3, conf()));
    let recs: Vec<_> = s.records().unwrap().map(Result::unwrap).collect();
    assert_eq!(recs, vec![("a".to_string(), b"1".to_vec())]);
}

// ---------- redb-only ----------

fn del(k: &str) -> (String, Option<Vec<u8>>) {
    (k.to_string(), None)
}

#[test]
fn commit_applied_upserts_deletes_and_records_index() {
    let d = TempDir::new().unwrap();
    let mut s = open_redb(&d);
    s.append(&ents(1, 5, 1)).unwrap();
    s.commit_applied(
        2,
        1,
        &conf(),
        &[set("b", b"2"), set("a", b"1"), set("c", b"3")],
    )
    .unwrap();
    s.commit_applied(3, 1, &conf(), &[del("b"), set("a", b"x"), del("missing")])
        .unwrap();
    assert_eq!(s.applied_state(), (3, 1, conf()));
    assert_eq!(
        all_records(&s),
        vec![("a".into(), b"x".to_vec()), ("c".into(), b"3".to_vec())]
    );
    assert_eq!(s.record("a").unwrap(), Some(b"x".to_vec()));
    assert_eq!(s.record("b").unwrap(), None);
    // Same index again (an empty batch) is allowed; the conf can change with it.
    let c2 = ConfState::new([1, 2]);
    s.commit_applied(3, 1, &c2, &[]).unwrap();
    assert_eq!(s.initial_state().unwrap().conf_state, c2);
}

#[test]
fn refused_writes_change_nothing_and_keep_the_handle_usable() {
    let d = TempDir::new().unwrap();
    let mut s = open_redb(&d);
    s.append(&ents(1, 5, 1)).unwrap();
    s.commit_applied(3, 1, &conf(), &[set("a", b"1")]).unwrap();
    let before = (s.applied_state(), all_records(&s), s.last_index().unwrap());
    // Backwards, past the log, wrong term.
    assert!(s.commit_applied(2, 1, &conf(), &[set("x", b"")]).is_err());
    assert!(s.commit_applied(9, 1, &conf(), &[set("x", b"")]).is_err());
    assert!(s.commit_applied(4, 7, &conf(), &[set("x", b"")]).is_err());
    // Compaction beyond the applied index.
    assert!(matches!(s.compact(4), Err(StorageError::Refused(_))));
    // Truncating applied entries away.
    assert!(s.append(&[ent(2, 5)]).is_err());
    // A commit index past the log.
    assert!(s
        .set_hard_state(&HardState {
            term: 1,
            vote: None,
            commit: 5
        })
        .is_err());
    // Non-consecutive entries.
    assert!(s.append(&[ent(5, 1), ent(7, 1)]).is_err());
    // A batch whose last part is refused writes none of its parts.
    let bad = WriteBatch {
        hard_state: Some(&HardState {
            term: 2,
            vote: None,
            commit: 4,
        }),
        entries: &ents(5, 8, 2),
        applied: Some(AppliedBatch {
            index: 1,
            term: 1,
            conf: &conf(),
            mutations: &[set("y", b"")],
        }),
        compact_to: None,
    };
    assert!(s.write_batch(&bad).is_err());
    assert_eq!(
        (s.applied_state(), all_records(&s), s.last_index().unwrap()),
        before
    );
    assert_eq!(s.hard_state(), HardState::default());
    drop(s);
    let mut s = open_redb(&d);
    assert_eq!(
        (s.applied_state(), all_records(&s), s.last_index().unwrap()),
        before
    );
    s.append(&[ent(5, 1)]).unwrap();
}

#[test]
fn write_batch_does_everything_in_one_go() {
    let d = TempDir::new().unwrap();
    let mut s = open_redb(&d);
    s.append(&ents(1, 4, 1)).unwrap();
    s.commit_applied(3, 1, &conf(), &[]).unwrap();
    let hs = HardState {
        term: 2,
        vote: Some(2),
        commit: 5,
    };
    let b = WriteBatch {
        hard_state: Some(&hs),
        entries: &ents(4, 7, 2),
        applied: Some(AppliedBatch {
            index: 5,
            term: 2,
            conf: &conf(),
            mutations: &[set("k", b"v")],
        }),
        compact_to: Some(4),
    };
    s.write_batch(&b).unwrap();
    let check = |s: &RedbStorage| {
        assert_eq!(s.hard_state(), hs);
        assert_eq!(s.first_index().unwrap(), 5);
        assert_eq!(s.last_index().unwrap(), 6);
        assert_eq!(s.term(4).unwrap(), 2);
        assert_eq!(s.applied_state(), (5, 2, conf()));
        assert_eq!(all_records(s), vec![("k".into(), b"v".to_vec())]);
    };
    check(&s);
    drop(s);
    check(&open_redb(&d));
}

#[test]
fn reopen_preserves_everything() {
    let d = TempDir::new().unwrap();
    let mut s = open_redb(&d);
    s.persist(
        Some(&HardState {
            term: 3,
            vote: Some(2),
            commit: 8,
        }),
        &ents(1, 11, 3),
    )
    .unwrap();
    s.commit_applied(
        8,
        3,
        &ConfState::new([1, 2]),
        &[set("x", b"1"), set("y", b"2")],
    )
    .unwrap();
    s.compact(6).unwrap();
    let snap = s.snapshot().unwrap();
    let dump = |s: &RedbStorage| {
        (
            s.initial_state().unwrap(),
            s.first_index().unwrap(),
            s.last_index().unwrap(),
            s.term(6).unwrap(),
            s.entries(7, 11, None).unwrap(),
            s.applied_state(),
            all_records(s),
            s.snapshot().unwrap(),
        )
    };
    let before = dump(&s);
    assert_eq!(before.7, snap);
    drop(s);
    let s = open_redb(&d);
    assert_eq!(dump(&s), before);
    // Options for a fresh file are not applied to an existing one.
    drop(s);
    let s = RedbStorage::open(d.path()).unwrap();
    assert_eq!(
        s.initial_state().unwrap().conf_state,
        ConfState::new([1, 2])
    );
}

#[test]
fn second_open_is_refused_as_locked() {
    let d = TempDir::new().unwrap();
    let _s = open_redb(&d);
    match RedbStorage::open(d.path()) {
        Err(PersistError::Locked { path }) => assert!(path.ends_with("deimos.redb")),
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn accessors_and_fast_options() {
    let d = TempDir::new().unwrap();
    let fast = deimos_store::persist::StoreOptions {
        initial_conf: conf(),
        verify_on_open: false,
        two_phase_commit: false,
        cache_size: 1 << 20,
    };
    let mut s = RedbStorage::open_with(d.path(), &fast).unwrap();
    assert!(s.path().ends_with(deimos_store::persist::DB_FILE));
    s.persist(
        Some(&HardState {
            term: 1,
            vote: Some(1),
            commit: 3,
        }),
        &ents(1, 4, 1),
    )
    .unwrap();
    s.commit_applied(3, 1, &conf(), &[set("a", b"1")]).unwrap();
    drop(s);
    let s = RedbStorage::open_with(d.path(), &fast).unwrap();
    assert_eq!(s.applied_state(), (3, 1, conf()));
    assert_eq!(s.hard_state().commit, 3);
    // A decoder reports the header's metadata as soon as it has it, and completeness at the end.
    let snap = s.snapshot().unwrap();
    let mut dec = deimos_store::persist::SnapshotDecoder::new();
    dec.push(&snap.data[..40.min(snap.data.len())], |_, _| Ok(()))
        .unwrap();
    assert_eq!(dec.meta(), Some(&snap.meta));
    assert!(!dec.is_complete());
    dec.push(&snap.data[40.min(snap.data.len())..], |_, _| Ok(()))
        .unwrap();
    assert!(dec.is_complete());
    assert_eq!(dec.finish().unwrap(), snap.meta);
}

#[test]
fn handles_can_move_across_threads() {
    fn send<T: Send>() {}
    send::<RedbStorage>();
    send::<deimos_store::persist::SnapshotEncoder>();
    send::<deimos_store::persist::SnapshotDecoder>();
    send::<deimos_store::persist::RecordIter>();
    send::<deimos_store::persist::SnapshotInstaller<'static>>();
}
