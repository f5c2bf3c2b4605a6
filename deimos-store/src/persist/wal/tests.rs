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
    Wal::open(dir, epoch, next).unwrap()
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
    let mut w = Wal::open(d.path(), 1, 11).unwrap();
    assert_eq!(w.tail(), ents(11, 16, 2, 10).as_slice());
    assert_eq!((w.seq, w.pos), (2, 4 * BLOCK));
    assert_eq!(w.term(13), Some(2));
    assert_eq!(w.term(16), None);
    w.append(&ents(16, 17, 3, 10)).unwrap();
    drop(w);
    assert_eq!(Wal::open(d.path(), 1, 11).unwrap().tail().len(), 6);
    // The entries must continue redb's log.
    match Wal::open(d.path(), 1, 12) {
        Err(PersistError::Corrupt { what, .. }) => assert!(what.contains("expected"), "{what}"),
        other => panic!("a log that does not continue redb's was accepted: {other:?}"),
    }
    // Records of another epoch are not this log's.
    assert!(Wal::open(d.path(), 2, 40).unwrap().tail().is_empty());
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
