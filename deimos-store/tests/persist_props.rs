//! Property: on any sequence of operations, `RedbStorage` answers every read exactly as the
//! reference `MemStorage` does, including across reopen. Operations that `RedbStorage` refuses
//! because they would break a Raft invariant it enforces (a commit index past the log, a snapshot
//! behind the commit index) must be exactly those, and must change nothing.

#[path = "persist_common.rs"]
mod common;

use common::*;
use deimos_raft::storage::{LogStorage, MemStorage, StorageError, StorageResult};
use deimos_raft::types::{Entry, EntryPayload, HardState, Snapshot, SnapshotMeta};
use deimos_store::persist::{encode_snapshot_data, RedbStorage, StoreOptions};
use proptest::prelude::*;
use tempfile::TempDir;

#[derive(Debug, Clone)]
enum Op {
    /// Append `len` entries starting `back` positions before `last + 1`.
    Append {
        back: u64,
        len: u64,
        term_bump: u64,
        payload: u8,
    },
    /// Hard state with commit at `frac`/255 of the last index.
    HardState {
        term: u64,
        vote: Option<u64>,
        frac: u8,
    },
    /// Entries and hard state in one `persist`.
    Persist {
        len: u64,
        frac: u8,
    },
    /// Compact at base + `frac`/255 of the distance to last + 1 (may be out of range).
    Compact {
        frac: u8,
    },
    /// Snapshot at last - 3 + `ahead`.
    Snapshot {
        ahead: u64,
        term_bump: u64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..4, 0u64..6, 0u64..2, any::<u8>())
            .prop_map(|(back, len, term_bump, payload)| Op::Append { back, len, term_bump, payload }),
        2 => (0u64..5, proptest::option::of(1u64..4), any::<u8>())
            .prop_map(|(term, vote, frac)| Op::HardState { term, vote, frac }),
        2 => (0u64..5, any::<u8>()).prop_map(|(len, frac)| Op::Persist { len, frac }),
        2 => any::<u8>().prop_map(|frac| Op::Compact { frac }),
        1 => (0u64..8, 0u64..2).prop_map(|(ahead, term_bump)| Op::Snapshot { ahead, term_bump }),
        1 => Just(Op::Reopen),
    ]
}

fn payload(i: u64, p: u8) -> EntryPayload {
    match (i + p as u64) % 4 {
        0 => EntryPayload::Empty,
        _ => EntryPayload::Normal(vec![p; (i % 40) as usize]),
    }
}

fn same_kind<T: PartialEq + std::fmt::Debug>(a: &StorageResult<T>, b: &StorageResult<T>) -> bool {
    match (a, b) {
        (Err(StorageError::Refused(_)), Err(StorageError::Refused(_))) => true,
        _ => a == b,
    }
}

fn compare(m: &MemStorage, r: &RedbStorage) -> Result<(), TestCaseError> {
    let (mf, ml) = (m.first_index().unwrap(), m.last_index().unwrap());
    prop_assert_eq!(mf, r.first_index().unwrap());
    prop_assert_eq!(ml, r.last_index().unwrap());
    prop_assert_eq!(m.initial_state().unwrap(), r.initial_state().unwrap());
    prop_assert_eq!(m.snapshot().unwrap().meta, r.snapshot().unwrap().meta);
    for i in mf.saturating_sub(2)..=ml + 2 {
        prop_assert_eq!(m.term(i), r.term(i), "term({})", i);
    }
    for lo in mf.saturating_sub(1)..=ml + 1 {
        for hi in [lo, lo + 1, lo + 3, ml + 1, ml + 2] {
            if hi < lo {
                continue;
            }
            for max in [None, Some(0), Some(40), Some(100)] {
                let (a, b) = (m.entries(lo, hi, max), r.entries(lo, hi, max));
                prop_assert!(
                    same_kind(&a, &b),
                    "entries({}, {}, {:?}): {:?} vs {:?}",
                    lo,
                    hi,
                    max,
                    a,
                    b
                );
            }
        }
    }
    Ok(())
}

fn fast_opts() -> StoreOptions {
    // Durability is irrelevant to this property; keep the run short.
    StoreOptions {
        two_phase_commit: false,
        ..opts()
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = TempDir::new().unwrap();
    let mut m = MemStorage::new(conf());
    let mut r = RedbStorage::open_with(dir.path(), &fast_opts()).unwrap();
    let mut term = 1u64;
    for op in ops {
        let last = m.last_index().unwrap();
        let first = m.first_index().unwrap();
        let commit = m.hard_state().commit;
        match op {
            Op::Append {
                back,
                len,
                term_bump,
                payload: p,
            } => {
                term += term_bump;
                let start = (last + 1).saturating_sub(back).max(1);
                let es: Vec<Entry> = (start..start + len)
                    .map(|i| Entry {
                        index: i,
                        term,
                        payload: payload(i, p),
                    })
                    .collect();
                let new_last = match es.last() {
                    Some(e) if e.index >= first => e.index,
                    _ => last,
                };
                let rr = r.append(&es);
                if rr.is_ok() || new_last >= commit {
                    let mr = m.append(&es);
                    prop_assert!(same_kind(&mr, &rr), "append {:?}: {:?} vs {:?}", es, mr, rr);
                } else {
                    // Truncating below the commit index: refused by RedbStorage only.
                    prop_assert!(matches!(rr, Err(StorageError::Refused(_))));
                }
            }
            Op::HardState {
                term: t,
                vote,
                frac,
            } => {
                let hs = HardState {
                    term: t,
                    vote,
                    commit: last * frac as u64 / 255,
                };
                let hs = HardState {
                    commit: hs.commit.max(commit.min(last)),
                    ..hs
                };
                m.set_hard_state(&hs).unwrap();
                r.set_hard_state(&hs).unwrap();
            }
            Op::Persist { len, frac } => {
                let es: Vec<Entry> = (last + 1..last + 1 + len)
                    .map(|i| Entry {
                        index: i,
                        term,
                        payload: payload(i, frac),
                    })
                    .collect();
                let new_last = last + len;
                let hs = HardState {
                    term,
                    vote: None,
                    commit: commit.max(new_last * frac as u64 / 255),
                };
                r.persist(Some(&hs), &es).unwrap();
                m.append(&es).unwrap();
                m.set_hard_state(&hs).unwrap();
            }
            Op::Compact { frac } => {
                let idx = (first - 1) + (last + 2 - first) * frac as u64 / 255;
                let (a, b) = (m.compact(idx, conf(), Vec::new()), r.compact_to(idx));
                prop_assert!(same_kind(&a, &b), "compact({}): {:?} vs {:?}", idx, a, b);
            }
            Op::Snapshot { ahead, term_bump } => {
                term += term_bump;
                let idx = (last + ahead).saturating_sub(3);
                let meta = SnapshotMeta {
                    index: idx,
                    term,
                    conf: conf(),
                };
                let data = encode_snapshot_data(&meta, &[("k".into(), vec![1])]).unwrap();
                let snap = Snapshot { meta, data };
                let rr = r.apply_snapshot(&snap);
                if idx >= commit || idx < first {
                    let mr = m.apply_snapshot(&snap);
                    prop_assert!(
                        same_kind(&mr, &rr),
                        "snapshot {}: {:?} vs {:?}",
                        idx,
                        mr,
                        rr
                    );
                } else {
                    // Behind the commit index: refused by RedbStorage only.
                    prop_assert!(matches!(rr, Err(StorageError::Refused(_))), "{:?}", rr);
                }
            }
            Op::Reopen => {
                drop(r);
                r = RedbStorage::open_with(dir.path(), &fast_opts()).unwrap();
            }
        }
        compare(&m, &r)?;
    }
    drop(r);
    let r = RedbStorage::open_with(dir.path(), &fast_opts()).unwrap();
    compare(&m, &r)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn persist_matches_mem_storage(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}

// ---------- snapshot stream ----------

use deimos_store::persist::{decode_snapshot_data, Records, SnapshotDecoder};
use std::collections::BTreeMap;

fn records() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    proptest::collection::btree_map(
        "[a-z/]{0,12}",
        proptest::collection::vec(any::<u8>(), 0..64),
        0..30,
    )
    .prop_map(|m: BTreeMap<String, Vec<u8>>| m.into_iter().collect())
}

fn decode_in_chunks(data: &[u8], cuts: &[usize]) -> Result<(SnapshotMeta, Records), String> {
    let mut d = SnapshotDecoder::new();
    let mut out = Vec::new();
    let mut pos = 0;
    for c in cuts.iter().copied().chain(std::iter::once(data.len())) {
        let end = c.clamp(pos, data.len());
        d.push(&data[pos..end], |k, v| {
            out.push((k, v));
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        pos = end;
    }
    let meta = d.finish().map_err(|e| e.to_string())?;
    Ok((meta, out))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any chunking of a valid stream decodes to exactly what was encoded.
    #[test]
    fn snapshot_stream_survives_any_chunking(
        recs in records(),
        index in 0u64..1000,
        term in 0u64..10,
        mut cuts in proptest::collection::vec(0usize..4000, 0..20),
    ) {
        let meta = SnapshotMeta { index, term, conf: conf() };
        let data = encode_snapshot_data(&meta, &recs).unwrap();
        cuts.sort_unstable();
        let (m, r) = decode_in_chunks(&data, &cuts).unwrap();
        prop_assert_eq!(m, meta);
        prop_assert_eq!(r, recs);
    }

    /// Damaged streams are refused (never half-accepted), and arbitrary bytes never panic.
    #[test]
    fn damaged_snapshot_streams_never_decode(
        recs in records(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in any::<prop::sample::Index>(),
        garbage in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let meta = SnapshotMeta { index: 7, term: 2, conf: conf() };
        let data = encode_snapshot_data(&meta, &recs).unwrap();
        let mut bad = data.clone();
        for (at, x) in &flips {
            let i = at.index(bad.len());
            bad[i] ^= x;
        }
        if bad != data {
            prop_assert!(decode_snapshot_data(&bad).is_err());
        }
        let short = &data[..cut.index(data.len())];
        prop_assert!(decode_snapshot_data(short).is_err());
        let _ = decode_snapshot_data(&garbage);
        let mut prefixed = b"DEIMOSNP".to_vec();
        prefixed.extend_from_slice(&garbage);
        prop_assert!(decode_snapshot_data(&prefixed).is_err());
    }
}
