//! Snapshots of `RedbStorage` as the peer transport moves them: the chunked stream round trip,
//! an encoder that is a point-in-time view, damaged streams refused without a change, and stale
//! snapshots answered as compacted.

#[path = "persist_common.rs"]
mod common;

use common::*;
use deimos_raft::storage::{LogStorage, StorageError};
use deimos_raft::types::{HardState, Snapshot, SnapshotMeta};
use deimos_store::persist::{decode_snapshot_data, encode_snapshot_data, RedbStorage};
use tempfile::TempDir;

fn filled(d: &TempDir, n: usize) -> RedbStorage {
    let mut s = open_redb(d);
    s.append(&ents(1, 21, 2)).unwrap();
    let muts: Vec<_> = (0..n)
        .map(|i| set(&format!("key/{i:05}"), &vec![i as u8; i % 300]))
        .collect();
    s.commit_applied(15, 2, &conf(), &muts).unwrap();
    s
}

#[test]
fn snapshot_round_trips_through_chunked_stream() {
    let src_dir = TempDir::new().unwrap();
    let src = filled(&src_dir, 500);
    let want = all_records(&src);
    for chunk in [1usize, 7, 4096, 1 << 20] {
        let dst_dir = TempDir::new().unwrap();
        let mut dst = open_redb(&dst_dir);
        dst.append(&ents(1, 4, 1)).unwrap();
        dst.commit_applied(3, 1, &conf(), &[set("stale", b"gone")])
            .unwrap();
        let enc = src.snapshot_encoder(chunk).unwrap();
        let meta = enc.meta().clone();
        assert_eq!(
            meta,
            SnapshotMeta {
                index: 15,
                term: 2,
                conf: conf()
            }
        );
        let mut inst = dst.begin_snapshot_install(&meta).unwrap();
        let mut chunks = 0;
        for c in enc {
            let c = c.unwrap();
            assert!(c.len() <= chunk);
            inst.push(&c).unwrap();
            chunks += 1;
        }
        inst.finish().unwrap();
        assert!(chunk > 4096 || chunks > 1);
        let check = |s: &RedbStorage| {
            assert_eq!(all_records(s), want);
            assert_eq!(s.applied_state(), (15, 2, conf()));
            assert_eq!(s.first_index().unwrap(), 16);
            assert_eq!(s.last_index().unwrap(), 15);
            assert_eq!(s.term(15).unwrap(), 2);
            assert_eq!(s.hard_state().commit, 15);
        };
        check(&dst);
        drop(dst);
        check(&open_redb(&dst_dir));
    }
    // The trait's snapshot() carries the same stream in one buffer.
    let snap = src.snapshot().unwrap();
    let (meta, recs) = decode_snapshot_data(&snap.data).unwrap();
    assert_eq!(meta, snap.meta);
    assert_eq!(recs, want);
}

#[test]
fn encoder_is_a_point_in_time_view() {
    let d = TempDir::new().unwrap();
    let mut s = filled(&d, 10);
    let want = all_records(&s);
    let enc = s.snapshot_encoder(64).unwrap();
    s.commit_applied(
        16,
        2,
        &conf(),
        &[set("key/00000", b"changed"), set("new", b"")],
    )
    .unwrap();
    let data: Vec<u8> = enc.flat_map(|c| c.unwrap()).collect();
    let (meta, recs) = decode_snapshot_data(&data).unwrap();
    assert_eq!(meta.index, 15);
    assert_eq!(recs, want);
}

#[test]
fn damaged_snapshot_streams_are_refused_and_change_nothing() {
    let src_dir = TempDir::new().unwrap();
    let src = filled(&src_dir, 50);
    let good = src.snapshot().unwrap();
    let dst_dir = TempDir::new().unwrap();
    let mut dst = open_redb(&dst_dir);
    dst.append(&ents(1, 4, 1)).unwrap();
    dst.commit_applied(3, 1, &conf(), &[set("keep", b"me")])
        .unwrap();
    let before = (
        all_records(&dst),
        dst.applied_state(),
        dst.last_index().unwrap(),
    );
    let mut bad: Vec<Vec<u8>> = Vec::new();
    for cut in [0, 1, 8, 20, good.data.len() / 2, good.data.len() - 1] {
        bad.push(good.data[..cut].to_vec());
    }
    for pos in [0, 9, 30, good.data.len() / 2, good.data.len() - 3] {
        let mut d = good.data.clone();
        d[pos] ^= 0x5a;
        bad.push(d);
    }
    let mut longer = good.data.clone();
    longer.push(0);
    bad.push(longer);
    for data in bad {
        let r = dst.apply_snapshot(&Snapshot {
            meta: good.meta.clone(),
            data,
        });
        assert!(matches!(r, Err(StorageError::Refused(_))), "{r:?}");
        assert!(decode_snapshot_data(&good.data[..good.data.len() - 1]).is_err());
        assert_eq!(
            (
                all_records(&dst),
                dst.applied_state(),
                dst.last_index().unwrap()
            ),
            before
        );
    }
    // Meta that disagrees with the stream's header.
    let mut meta = good.meta.clone();
    meta.term += 1;
    assert!(dst
        .apply_snapshot(&Snapshot {
            meta,
            data: good.data.clone()
        })
        .is_err());
    // A dropped installer aborts.
    {
        let mut inst = dst.begin_snapshot_install(&good.meta).unwrap();
        inst.push(&good.data[..good.data.len() / 2]).unwrap();
    }
    assert_eq!(
        (
            all_records(&dst),
            dst.applied_state(),
            dst.last_index().unwrap()
        ),
        before
    );
    // The store is still usable and the good snapshot installs.
    dst.apply_snapshot(&good).unwrap();
    assert_eq!(all_records(&dst), all_records(&src));
}

#[test]
fn stale_snapshots_are_compacted_errors() {
    let d = TempDir::new().unwrap();
    let mut s = open_redb(&d);
    s.append(&ents(1, 11, 1)).unwrap();
    s.commit_applied(8, 1, &conf(), &[]).unwrap();
    s.compact(5).unwrap();
    for idx in [3, 5, 8] {
        let meta = SnapshotMeta {
            index: idx,
            term: 1,
            conf: conf(),
        };
        let data = encode_snapshot_data(&meta, &[]).unwrap();
        assert_eq!(
            s.apply_snapshot(&Snapshot { meta, data }),
            Err(StorageError::Compacted)
        );
    }
    // Behind the persisted commit index: refused.
    s.set_hard_state(&HardState {
        term: 1,
        vote: None,
        commit: 10,
    })
    .unwrap();
    let meta = SnapshotMeta {
        index: 9,
        term: 1,
        conf: conf(),
    };
    let data = encode_snapshot_data(&meta, &[]).unwrap();
    assert!(matches!(
        s.apply_snapshot(&Snapshot { meta, data }),
        Err(StorageError::Refused(_))
    ));
}
