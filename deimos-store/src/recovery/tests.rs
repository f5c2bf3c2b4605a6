use deimos_raft::storage::LogStorage;
use deimos_raft::types::{ConfChange, ConfState, EntryPayload, SnapshotMeta};

use super::*;
use crate::keyspace::{Command, Store};
use crate::machine::KvStateMachine;
use crate::persist::encode_snapshot_data;

fn member(name: &str, port: u16) -> Member {
    let peer_urls = vec![format!("http://127.0.0.1:{port}")];
    Member {
        id: member_id(&peer_urls),
        name: name.into(),
        peer_urls,
        client_urls: vec![],
    }
}

/// A snapshot of an old 2-member cluster (one member removed earlier) holding `n` keys.
fn old_snapshot(n: usize) -> Vec<u8> {
    let mut store = Store::new();
    for i in 0..n {
        store
            .apply(&Command::set(format!("/k{i:03}"), format!("v{i}")))
            .unwrap();
    }
    let mut records: Vec<(String, Vec<u8>)> = store
        .take_dirty()
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    for m in [member("old1", 7001), member("old2", 7002)] {
        records.push((member_key(m.id), encode_member(&m)));
    }
    records.push((format!("{REMOVED_PREFIX}{:016x}", 0x99), Vec::new()));
    records.sort();
    let meta = SnapshotMeta {
        index: 500,
        term: 7,
        conf: ConfState::new([member("old1", 7001).id, member("old2", 7002).id]),
    };
    encode_snapshot_data(&meta, &records).unwrap()
}

#[test]
fn a_restored_member_holds_every_key_with_the_new_membership_only() {
    let data = old_snapshot(20);
    let new = [member("a", 8001), member("b", 8002), member("c", 8003)];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let s = restore(&data[..], &path, &new, new[1].id, 0x77).unwrap();
    assert_eq!((s.meta.index, s.meta.term, s.keys), (500, 7, 20));
    assert_eq!(s.store_index, 20);
    assert_eq!(
        s,
        inspect(&data[..]).unwrap(),
        "restore reads what inspect reads"
    );

    let mut st = RedbStorage::open(&path).unwrap();
    let (applied, term, conf) = st.applied_state();
    assert_eq!((applied, term), (500, 7));
    assert_eq!(conf, ConfState::new(new.iter().map(|m| m.id)));
    let hs = st.hard_state();
    assert_eq!((hs.term, hs.commit, hs.vote), (7, 500, None));
    assert_eq!(
        st.first_index().unwrap(),
        501,
        "the log starts after the snapshot"
    );
    assert_eq!(st.member_id().unwrap(), Some(new[1].id));
    assert_eq!(st.cluster_id().unwrap(), Some(0x77));
    let sm = KvStateMachine::open(&mut st, &[]).unwrap();
    let members: Vec<Member> = sm.members().read().unwrap().values().cloned().collect();
    let mut want = new.to_vec();
    want.sort_by_key(|m| m.id);
    assert_eq!(
        members, want,
        "the old members are gone, the new ones recorded"
    );
    assert!(sm.removed().read().unwrap().is_empty());
    let store = sm.store();
    let got = store.read().unwrap().get("/k013", false, false, 0).unwrap();
    assert_eq!(got.node.value.as_deref(), Some("v13"));
    assert_eq!(store.read().unwrap().index(), 20);
}

#[test]
fn a_corrupt_or_truncated_file_is_refused_and_nothing_is_restored() {
    let data = old_snapshot(5);
    let new = [member("a", 8001)];
    let dir = tempfile::tempdir().unwrap();
    // Every truncation is checked by `inspect`; a sample of them also by `restore` (each
    // restore creates a store, which takes a while).
    let mut cases: Vec<Vec<u8>> = (0..data.len()).map(|n| data[..n].to_vec()).collect();
    let truncations = cases.len();
    for at in [0, 9, 20, data.len() / 2, data.len() - 20, data.len() - 1] {
        let mut bad = data.clone();
        bad[at] ^= 0x01;
        cases.push(bad);
    }
    let mut longer = data.clone();
    longer.push(0);
    cases.push(longer);
    for (i, case) in cases.iter().enumerate() {
        let e = inspect(&case[..]).unwrap_err();
        assert!(matches!(e, RecoveryError::Invalid(_)), "case {i}: {e}");
        if i < truncations && i % 37 != 0 && i != truncations - 1 {
            continue;
        }
        let path = dir.path().join(format!("d{i}"));
        assert!(
            restore(&case[..], &path, &new, new[0].id, 1).is_err(),
            "case {i}"
        );
        if path.join(DB_FILE).exists() {
            let st = RedbStorage::open(&path).unwrap();
            assert_eq!(st.applied_state().0, 0, "case {i}: nothing was committed");
            assert!(st.records().unwrap().next().is_none(), "case {i}");
        }
    }
}

#[test]
fn restore_refuses_a_used_data_dir_and_an_unknown_member() {
    let data = old_snapshot(1);
    let new = [member("a", 8001)];
    let dir = tempfile::tempdir().unwrap();
    restore(&data[..], dir.path(), &new, new[0].id, 1).unwrap();
    assert!(restore(&data[..], dir.path(), &new, new[0].id, 1).is_err());
    let other = tempfile::tempdir().unwrap();
    assert!(restore(&data[..], other.path(), &new, 12345, 1).is_err());
}

#[test]
fn force_new_cluster_removes_every_other_member_after_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let ms = [member("a", 8001), member("b", 8002), member("c", 8003)];
    let mut st = RedbStorage::open(dir.path()).unwrap();
    KvStateMachine::open(&mut st, &ms).unwrap();
    // The bootstrap wrote entries 1..=6, committed; a seventh is in the log, not known committed.
    let seventh = deimos_raft::types::Entry {
        term: 1,
        index: 7,
        payload: EntryPayload::Empty,
    };
    st.persist(None, &[seventh]).unwrap();
    let f = force_new_cluster(&mut st, ms[0].id).unwrap();
    let mut others = vec![ms[1].id, ms[2].id];
    others.sort();
    assert_eq!(f.removed, others);
    assert_eq!(f.commit, 9);
    assert_eq!(
        st.hard_state().commit,
        9,
        "every entry of the log is committed"
    );
    let tail = st.entries(8, 10, None).unwrap();
    let removed: Vec<_> = tail
        .iter()
        .map(|e| match e.payload {
            EntryPayload::ConfChange(ConfChange::RemoveNode(id)) => id,
            ref other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(removed, others);
    drop(st);
    // Durable: a reopen sees it, and a second run changes nothing.
    let mut st = RedbStorage::open(dir.path()).unwrap();
    assert_eq!(st.hard_state().commit, 9);
    let again = force_new_cluster(&mut st, ms[0].id).unwrap();
    assert!(again.removed.is_empty());
    // A member that is not a voter of what it holds cannot carry the cluster.
    assert!(force_new_cluster(&mut st, ms[1].id).is_err());
}

#[test]
fn ids_are_the_servers() {
    // `deimosctl snapshot restore` and the server derive ids with these same functions; this
    // pins their basic properties (trailing slashes ignored, order of parsing kept).
    let m = member("a", 8001);
    assert_eq!(m.id, member_id(&["http://127.0.0.1:8001/".to_string()]));
    let parsed = parse_members("a=http://127.0.0.1:8001,b=http://127.0.0.1:8002").unwrap();
    assert_eq!(parsed[0], m);
    assert_ne!(cluster_id(&parsed, "t1"), cluster_id(&parsed, "t2"));
    assert!(parse_members("a=ftp://x").is_err());
    assert!(parse_members("a=http://x:1,b=http://x:1").is_err());
}
