//! Staged writes: a commit-index-only hard state and the deferred applied records need no fsync,
//! so `RedbStorage` keeps them in memory and writes them when they are due, with a compaction or
//! snapshot install, or at close — not with every log append, whose fsync a write waits for.
//! These tests observe the file through `records()`, snapshots and `written_state()` (which
//! read what is written) against the accessors (which show what is staged too).

#[path = "persist_common.rs"]
mod common;

use common::*;
use deimos_raft::storage::LogStorage;
use deimos_raft::types::{HardState, Snapshot, SnapshotMeta};
use deimos_store::persist::{encode_snapshot_data, RedbStorage};
use tempfile::TempDir;

fn set(k: &str, v: &[u8]) -> (String, Option<Vec<u8>>) {
    (k.to_string(), Some(v.to_vec()))
}

fn hs(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote: Some(1),
        commit,
    }
}

fn written_keys(s: &RedbStorage) -> Vec<String> {
    s.records().unwrap().map(|r| r.unwrap().0).collect()
}

/// A store with entries 1..=3 at term 1 and commit 1, durable.
fn store(d: &TempDir) -> RedbStorage {
    let mut s = open_redb(d);
    s.persist(Some(&hs(1, 1)), &ents(1, 4, 1)).unwrap();
    s
}

#[test]
fn staged_writes_are_visible_at_once_and_written_when_flushed() {
    let d = TempDir::new().unwrap();
    let mut s = store(&d);
    s.commit_applied_deferred(2, 1, &conf(), &[set("a", b"1"), set("b", b"2")])
        .unwrap();
    s.commit_applied_deferred(3, 1, &conf(), &[("b".into(), None)])
        .unwrap();
    s.persist(Some(&hs(1, 3)), &[]).unwrap();
    // The accessors show the staged state; the file does not have it yet.
    assert_eq!(s.applied_state(), (3, 1, conf()));
    assert_eq!(s.hard_state().commit, 3);
    assert!(written_keys(&s).is_empty());
    assert_eq!(s.snapshot().unwrap().meta.index, 0);
    assert_eq!(s.written_state().unwrap(), (hs(1, 1), 0));
    // A log append (with a new commit index) is durable on its own and carries none of it.
    s.persist(Some(&hs(1, 4)), &[ent(4, 1)]).unwrap();
    assert_eq!(s.last_index().unwrap(), 4);
    assert_eq!(s.hard_state().commit, 4);
    assert!(written_keys(&s).is_empty());
    assert_eq!(s.written_state().unwrap(), (hs(1, 1), 0));
    // A flush writes it, merged: "b" was set and deleted.
    s.write_staged().unwrap();
    assert_eq!(written_keys(&s), vec!["a".to_string()]);
    assert_eq!(s.snapshot().unwrap().meta.index, 3);
    assert_eq!(s.written_state().unwrap(), (hs(1, 4), 3));
    drop(s);
    let s = open_redb(&d);
    assert_eq!(s.applied_state(), (3, 1, conf()));
    assert_eq!(s.hard_state().commit, 4);
}

#[test]
fn a_clean_close_writes_what_is_staged() {
    let d = TempDir::new().unwrap();
    let mut s = store(&d);
    s.commit_applied_deferred(3, 1, &conf(), &[set("a", b"1")])
        .unwrap();
    s.persist(Some(&hs(1, 3)), &[]).unwrap();
    drop(s);
    let s = open_redb(&d);
    assert_eq!(s.applied_state(), (3, 1, conf()));
    assert_eq!(s.hard_state().commit, 3);
    assert_eq!(s.record("a").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn staged_writes_are_checked_when_staged() {
    let d = TempDir::new().unwrap();
    let mut s = store(&d);
    // Past the log, a wrong term, a commit past the log: refused now, nothing staged.
    assert!(s
        .commit_applied_deferred(9, 1, &conf(), &[set("x", b"1")])
        .is_err());
    assert!(s
        .commit_applied_deferred(2, 7, &conf(), &[set("x", b"1")])
        .is_err());
    assert!(s.persist(Some(&hs(1, 9)), &[]).is_err());
    s.commit_applied_deferred(2, 1, &conf(), &[set("a", b"1")])
        .unwrap();
    // Backwards.
    assert!(s.commit_applied_deferred(1, 1, &conf(), &[]).is_err());
    assert_eq!(s.applied_state().0, 2);
    assert_eq!(s.hard_state().commit, 1);
    s.write_staged().unwrap();
    assert_eq!(written_keys(&s), vec!["a".to_string()]);
}

#[test]
fn a_refused_batch_keeps_the_staged_writes_for_the_next_one() {
    let d = TempDir::new().unwrap();
    let mut s = store(&d);
    s.commit_applied_deferred(2, 1, &conf(), &[set("a", b"1")])
        .unwrap();
    // A gap in the log: refused, rolled back, and the staged write is not lost with it.
    assert!(s.persist(None, &[ent(9, 1)]).is_err());
    assert!(written_keys(&s).is_empty());
    // So is a term change, which carries the staged hard state (it supersedes it) and fails.
    s.persist(Some(&hs(1, 2)), &[]).unwrap();
    assert!(s.persist(Some(&hs(2, 2)), &[ent(9, 2)]).is_err());
    assert_eq!(s.hard_state(), hs(1, 2));
    s.write_staged().unwrap();
    assert_eq!(written_keys(&s), vec!["a".to_string()]);
    assert_eq!(s.snapshot().unwrap().meta.index, 2);
    assert_eq!(s.written_state().unwrap(), (hs(1, 2), 2));
}

#[test]
fn a_newer_durable_hard_state_is_never_overwritten_by_an_older_staged_one() {
    let d = TempDir::new().unwrap();
    let mut s = store(&d);
    s.commit_applied_deferred(2, 1, &conf(), &[set("a", b"1")])
        .unwrap();
    // Commit 3 is staged; then a new term is written durably with commit 3.
    s.persist(Some(&hs(1, 3)), &[]).unwrap();
    s.persist(Some(&hs(2, 3)), &[ent(4, 2)]).unwrap();
    assert_eq!(s.written_state().unwrap().0, hs(2, 3));
    // Writing the staged records later must not bring back term 1.
    s.write_staged().unwrap();
    assert_eq!(s.written_state().unwrap(), (hs(2, 3), 2));
    drop(s);
    let s = open_redb(&d);
    assert_eq!(s.hard_state(), hs(2, 3));
    assert_eq!(s.applied_state().0, 2);
}

#[test]
fn staged_writes_ride_along_once_due() {
    let d = TempDir::new().unwrap();
    let mut s = store(&d);
    s.commit_applied_deferred(2, 1, &conf(), &[set("a", b"1")])
        .unwrap();
    s.persist(Some(&hs(1, 2)), &[]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // Older than a second: the next write (here a log append) takes them along.
    s.persist(None, &[ent(4, 1)]).unwrap();
    assert_eq!(written_keys(&s), vec!["a".to_string()]);
    assert_eq!(s.written_state().unwrap(), (hs(1, 2), 2));
}

#[test]
fn compaction_and_snapshot_install_write_the_staged_state_first() {
    let d = TempDir::new().unwrap();
    let mut s = store(&d);
    s.commit_applied_deferred(3, 1, &conf(), &[set("a", b"1")])
        .unwrap();
    s.persist(Some(&hs(1, 3)), &[]).unwrap();
    // Compaction up to the staged applied index: the records it relies on go in with it.
    s.compact(3).unwrap();
    assert_eq!(written_keys(&s), vec!["a".to_string()]);
    // A snapshot install replaces the records and moves the commit index to the snapshot.
    s.persist(Some(&hs(1, 3)), &ents(4, 6, 1)).unwrap();
    s.commit_applied_deferred(5, 1, &conf(), &[set("b", b"2")])
        .unwrap();
    s.persist(Some(&hs(1, 5)), &[]).unwrap();
    let meta = SnapshotMeta {
        index: 8,
        term: 2,
        conf: conf(),
    };
    let data = encode_snapshot_data(&meta, &[("c".to_string(), b"3".to_vec())]).unwrap();
    s.apply_snapshot(&Snapshot { meta, data }).unwrap();
    assert_eq!(written_keys(&s), vec!["c".to_string()]);
    drop(s);
    let s = open_redb(&d);
    assert_eq!(s.applied_state().0, 8);
    assert_eq!(s.hard_state().commit, 8);
    assert_eq!(s.first_index().unwrap(), 9);
    assert_eq!(s.record("c").unwrap(), Some(b"3".to_vec()));
    assert_eq!(s.record("b").unwrap(), None);
}
