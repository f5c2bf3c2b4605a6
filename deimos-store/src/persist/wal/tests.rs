use super::*;
use deimos_raft::types::EntryPayload;

fn ents(lo: Index, hi: Index, term: Term, size: usize) -> Vec<Entry> {
    (lo..hi)
        .map(|index| Entry {
            index,
            term,
            payload: EntryPayload::Normal(vec![index as u8; size]),
        })
        .collect()
}

fn new_wal(dir: &Path, epoch: u64, next: Index) -> Wal {
    Wal::create(dir).unwrap();
    Wal::open(dir, epoch, Resume::default(), next).unwrap()
}

#[test]
fn records_are_block_aligned_and_written_twice() {
    let d = tempfile::TempDir::new().unwrap();
    let mut w = new_wal(d.path(), 3, 1);
    assert_eq!(w.append(&ents(1, 4, 1, 100)).unwrap(), Appended::Logged);
    assert_eq!(w.pos, 2 * BLOCK);
    // A record of more than one block: both copies span the same whole number of blocks.
    assert_eq!(w.append(&ents(4, 5, 1, 5000)).unwrap(), Appended::Logged);
    assert_eq!(w.pos, 2 * BLOCK + 2 * 2 * BLOCK);
    let data = std::fs::read(d.path().join(WAL_FILE)).unwrap();
    let (a, span_a, seq_a) = copy_at(&data, 2 * BLOCK, 3, Some(1)).unwrap();
    let (b, span_b, _) = copy_at(&data, 4 * BLOCK, 3, Some(1)).unwrap();
    assert_eq!((a, span_a, seq_a), (b, span_b, 1));
    assert_eq!(span_a, 2 * BLOCK);
    // Another epoch or sequence number does not match.
    assert!(copy_at(&data, 0, 2, Some(0)).is_none());
    assert!(copy_at(&data, 0, 3, Some(1)).is_none());
    assert!(copy_at(&data, 0, 3, Some(0)).is_some());
}

#[test]
fn reopen_recovers_the_tail_and_continues_it() {
    let d = tempfile::TempDir::new().unwrap();
    let mut w = new_wal(d.path(), 1, 11);
    w.append(&ents(11, 15, 2, 10)).unwrap();
    w.append(&ents(15, 16, 2, 10)).unwrap();
    drop(w);
    let mut w = Wal::open(d.path(), 1, Resume::default(), 11).unwrap();
    assert_eq!(w.tail(), ents(11, 16, 2, 10).as_slice());
    assert_eq!((w.seq, w.pos), (2, 4 * BLOCK));
    assert_eq!(w.term(13), Some(2));
    assert_eq!(w.term(16), None);
    w.append(&ents(16, 17, 3, 10)).unwrap();
    drop(w);
    assert_eq!(
        Wal::open(d.path(), 1, Resume::default(), 11)
            .unwrap()
            .tail()
            .len(),
        6
    );
    // The entries must continue redb's log.
    match Wal::open(d.path(), 1, Resume::default(), 12) {
        Err(PersistError::Corrupt { what, .. }) => assert!(what.contains("expected"), "{what}"),
        other => panic!("a log that does not continue redb's was accepted: {other:?}"),
    }
    // Records of another epoch are not this log's.
    assert!(Wal::open(d.path(), 2, Resume::default(), 40)
        .unwrap()
        .tail()
        .is_empty());
}

#[test]
fn full_and_oversized_appends_write_nothing() {
    let d = tempfile::TempDir::new().unwrap();
    let mut w = new_wal(d.path(), 1, 1);
    assert_eq!(
        w.append(&ents(1, 2, 1, MAX_RECORD + 1)).unwrap(),
        Appended::TooLarge
    );
    w.pos = MAX_BYTES - BLOCK;
    assert_eq!(w.append(&ents(1, 2, 1, 10)).unwrap(), Appended::Full);
    assert!(w.tail().is_empty());
    w.reset(2);
    assert_eq!(w.append(&ents(1, 2, 1, 10)).unwrap(), Appended::Logged);
    assert_eq!((w.epoch(), w.first_index()), (2, Some(1)));
}

#[test]
fn frozen_entries_stay_readable_and_recovery_starts_at_the_resume_point() {
    let d = tempfile::TempDir::new().unwrap();
    let mut w = new_wal(d.path(), 1, 1);
    w.append(&ents(1, 3, 1, 10)).unwrap();
    let (frozen, resume) = w.freeze();
    assert_eq!(frozen.as_slice(), ents(1, 3, 1, 10).as_slice());
    assert_eq!(
        resume,
        Resume {
            seq: 1,
            pos: 2 * BLOCK
        }
    );
    // Appends go on after the frozen records, in the same epoch.
    w.append(&ents(3, 5, 1, 10)).unwrap();
    assert_eq!(
        (w.first_index(), w.term(2), w.term(4)),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(w.pending_bytes(), 2 * BLOCK);
    drop(w);
    // Before the checkpoint committed, recovery starts at the old point and finds everything.
    let w = Wal::open(d.path(), 1, Resume::default(), 1).unwrap();
    assert_eq!(w.tail().len(), 4);
    // After, at the new one, continuing redb's log.
    let mut w = Wal::open(d.path(), 1, resume, 3).unwrap();
    assert_eq!(w.tail(), ents(3, 5, 1, 10).as_slice());
    assert_eq!(w.seq, 2);
    w.thaw();
    assert_eq!(w.first_index(), Some(3));
    // A resume point that is not a record boundary is refused.
    assert!(Wal::open(d.path(), 1, Resume { seq: 1, pos: 100 }, 3).is_err());
}
