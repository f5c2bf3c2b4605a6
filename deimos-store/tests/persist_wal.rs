//! The write-ahead log (`deimos.wal`) for real: recovery from damaged, torn and stale records,
//! the legacy (format 1) upgrade, and reads that span redb and the in-memory tail. Crash
//! durability under `kill -9` is in `persist_wal_crash.rs`.
//!
//! Damage is made to an image of the data directory taken while the store is still open (before
//! `Drop` checkpoints the log into redb): what a crash right then would leave on disk.

#[path = "persist_common.rs"]
mod common;

use std::path::Path;

use common::*;
use deimos_raft::storage::{LogStorage, MemStorage, StorageError, StorageResult};
use deimos_raft::types::{Entry, EntryPayload, HardState, Index, Term};
use deimos_store::persist::{
    PersistError, RedbStorage, WriteBatch, DB_FILE, FORMAT_VERSION, WAL_FILE,
};
use redb::ReadableDatabase;
use tempfile::TempDir;

const META: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("meta");
const RAFT: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("raft_state");

/// The write-ahead log's layout (see the module docs of `persist::wal`).
const BLOCK: usize = 4096;
const HEADER: usize = 32;

// ---------------------------------------------------------------------------------------------
// Helpers shared by the tests
// ---------------------------------------------------------------------------------------------

/// An entry of exactly `size` payload bytes whose contents depend on index, term and position.
fn sized(index: Index, term: Term, size: usize) -> Entry {
    Entry {
        index,
        term,
        payload: EntryPayload::Normal(
            (0..size)
                .map(|k| (index.wrapping_mul(31) ^ (k as u64).wrapping_mul(7) ^ term) as u8)
                .collect(),
        ),
    }
}

fn hs(term: Term, commit: Index) -> HardState {
    HardState {
        term,
        vote: Some(1),
        commit,
    }
}

/// The whole log as the store answers it.
fn log_of(s: &RedbStorage) -> Vec<Entry> {
    let (f, l) = (s.first_index().unwrap(), s.last_index().unwrap());
    s.entries(f, l + 1, None).unwrap()
}

/// The files of a data directory, read while the store may still be open.
#[derive(Clone)]
struct Image {
    db: Vec<u8>,
    wal: Option<Vec<u8>>,
}

impl Image {
    fn take(dir: &Path) -> Image {
        Image {
            db: std::fs::read(dir.join(DB_FILE)).unwrap(),
            wal: Some(std::fs::read(dir.join(WAL_FILE)).unwrap()),
        }
    }
    fn wal(&self) -> &[u8] {
        self.wal.as_deref().unwrap()
    }
    fn wal_mut(&mut self) -> &mut Vec<u8> {
        self.wal.as_mut().unwrap()
    }
    /// A fresh data directory holding this image.
    fn restore(&self) -> TempDir {
        let d = TempDir::new().unwrap();
        std::fs::write(d.path().join(DB_FILE), &self.db).unwrap();
        if let Some(w) = &self.wal {
            std::fs::write(d.path().join(WAL_FILE), w).unwrap();
        }
        d
    }
    fn open(&self) -> (TempDir, Result<RedbStorage, PersistError>) {
        let d = self.restore();
        let r = RedbStorage::open_with(d.path(), &opts());
        (d, r)
    }
}

/// One record of the write-ahead log, as parsed from the documented format.
#[derive(Debug, Clone, Copy)]
struct Rec {
    off: usize,
    /// Padded length of one copy.
    span: usize,
    len: usize,
    epoch: u64,
    seq: u64,
}

/// The records of the epoch starting at offset 0, checking that each is block-aligned and
/// written as two identical copies.
fn parse_wal(wal: &[u8]) -> Vec<Rec> {
    let mut out: Vec<Rec> = Vec::new();
    let mut off = 0;
    while off + HEADER <= wal.len() && &wal[off..off + 4] == b"DWAL" {
        let u64_at = |at: usize| u64::from_le_bytes(wal[at..at + 8].try_into().unwrap());
        let len = u32::from_le_bytes(wal[off + 4..off + 8].try_into().unwrap()) as usize;
        let (epoch, seq) = (u64_at(off + 8), u64_at(off + 16));
        if let Some(prev) = out.last() {
            if epoch != prev.epoch || seq != prev.seq + 1 {
                break; // a leftover of an older pass
            }
        } else {
            assert_eq!(seq, 0, "the first record of an epoch has sequence number 0");
        }
        let span = (HEADER + len).div_ceil(BLOCK) * BLOCK;
        assert_eq!(off % BLOCK, 0, "record {seq} is not block-aligned");
        assert!(
            off + 2 * span <= wal.len(),
            "record {seq} runs past the file"
        );
        assert_eq!(
            wal[off..off + span],
            wal[off + span..off + 2 * span],
            "the two copies of record {seq} differ"
        );
        out.push(Rec {
            off,
            span,
            len,
            epoch,
            seq,
        });
        off += 2 * span;
    }
    out
}

/// Entries `1..=5` through redb (a new term), then one plain append per `(count, size)` through
/// the write-ahead log. Returns the open store (NOT dropped: dropping checkpoints the log) and
/// the whole log, and checks that there is exactly one record per append.
fn wal_store(dir: &Path, appends: &[(u64, usize)]) -> (RedbStorage, Vec<Entry>) {
    let mut s = RedbStorage::open_with(dir, &opts()).unwrap();
    let mut want: Vec<Entry> = (1..=5).map(|i| sized(i, 1, 50)).collect();
    s.persist(Some(&hs(1, 0)), &want).unwrap();
    for &(count, size) in appends {
        let lo = want.len() as u64 + 1;
        let es: Vec<Entry> = (lo..lo + count).map(|i| sized(i, 1, size)).collect();
        s.persist(None, &es).unwrap();
        want.extend(es);
    }
    assert_eq!(log_of(&s), want);
    assert_eq!(
        redb_last_index(dir),
        Some(5),
        "plain appends must not go through redb"
    );
    let recs = parse_wal(&std::fs::read(dir.join(WAL_FILE)).unwrap());
    assert_eq!(recs.len(), appends.len(), "one record per append: {recs:?}");
    (s, want)
}

/// Appends of mixed sizes: single-block records and records of several blocks.
const APPENDS: &[(u64, usize)] = &[(3, 100), (2, 9000), (1, 10), (4, 3000), (2, 20_000)];

/// Entries the store has after the first `n` of `APPENDS` (and the 5 written through redb).
fn prefix(want: &[Entry], n: usize) -> Vec<Entry> {
    let count = 5 + APPENDS[..n].iter().map(|a| a.0).sum::<u64>() as usize;
    want[..count].to_vec()
}

fn flip(buf: &mut [u8], at: usize) {
    buf[at] ^= 0xa5;
}

fn expect_wal_corrupt(img: &Image, why: &str) -> String {
    match img.open().1 {
        Err(e @ PersistError::Corrupt { .. }) => {
            let PersistError::Corrupt { path, .. } = &e else {
                unreachable!()
            };
            assert!(path.ends_with(WAL_FILE), "{why}: wrong file named: {e}");
            let msg = e.to_string();
            assert!(msg.contains(WAL_FILE), "{why}: must name {WAL_FILE}: {msg}");
            msg
        }
        Err(other) => panic!("{why}: expected Corrupt, got {other:?}"),
        Ok(s) => panic!(
            "{why}: opened silently with last index {}",
            s.last_index().unwrap()
        ),
    }
}

fn expect_log(img: &Image, want: &[Entry], why: &str) -> (TempDir, RedbStorage) {
    let (d, r) = img.open();
    let s = r.unwrap_or_else(|e| panic!("{why}: reopen failed: {e}"));
    let got = log_of(&s);
    assert!(
        got == want,
        "{why}: reopened with entries {:?}, expected {:?}",
        got.iter().map(|e| e.index).collect::<Vec<_>>(),
        want.iter().map(|e| e.index).collect::<Vec<_>>()
    );
    (d, s)
}

// ---------------------------------------------------------------------------------------------
// 2. Damage to the write-ahead log
// ---------------------------------------------------------------------------------------------

/// Where to damage one copy: (what, offset within the copy).
fn damage_points(rec: &Rec) -> Vec<(&'static str, usize)> {
    vec![
        ("magic", 0),
        ("length", 5),
        ("epoch", 9),
        ("sequence number", 17),
        ("checksum", 25),
        ("first payload byte", HEADER),
        ("middle of the payload", HEADER + rec.len / 2),
        ("last payload byte", HEADER + rec.len - 1),
    ]
}

/// (a) A record with one good copy is whole, wherever the other copy is damaged; and the same
/// damage to both copies really does take the record out (so the surviving copy was used).
#[test]
fn one_damaged_copy_of_a_record_is_recovered_from_the_other() {
    let d = TempDir::new().unwrap();
    let (s, want) = wal_store(d.path(), APPENDS);
    let img = Image::take(d.path());
    drop(s);
    let recs = parse_wal(img.wal());
    let last = recs.len() - 1;
    for (n, rec) in [(last, recs[last]), (1, recs[1]), (0, recs[0])] {
        for (what, at) in damage_points(&rec) {
            for copy in [0, 1] {
                let mut bad = img.clone();
                flip(bad.wal_mut(), rec.off + copy * rec.span + at);
                let why = format!("record {n}: {what} of copy {copy} damaged");
                let (_d, mut s) = expect_log(&bad, &want, &why);
                // The store goes on: a new append lands after the recovered record.
                let next = want.len() as u64 + 1;
                s.persist(None, &[sized(next, 1, 700)]).unwrap();
                let again = Image::take(_d.path());
                let mut longer = want.clone();
                longer.push(sized(next, 1, 700));
                drop(expect_log(
                    &again,
                    &longer,
                    &format!("{why}, then an append"),
                ));
            }
            // Both copies damaged the same way: the record is gone. For the last record that is
            // a torn end; for an earlier one, corruption.
            let mut both = img.clone();
            flip(both.wal_mut(), rec.off + at);
            flip(both.wal_mut(), rec.off + rec.span + at);
            let why = format!("record {n}: {what} of both copies damaged");
            if n == last {
                drop(expect_log(&both, &prefix(&want, last), &why));
            } else {
                expect_wal_corrupt(&both, &why);
            }
        }
    }
}

/// (b) Both copies of a record in the middle damaged, with intact records after it: the
/// acknowledged entries after it would be lost, so the store refuses to open.
#[test]
fn a_middle_record_damaged_in_both_copies_is_corruption() {
    let d = TempDir::new().unwrap();
    let (s, want) = wal_store(d.path(), APPENDS);
    let img = Image::take(d.path());
    drop(s);
    let recs = parse_wal(img.wal());
    // The undamaged image opens with every entry (the damage below is what makes it fail).
    drop(expect_log(&img, &want, "undamaged"));
    for rec in &recs[..recs.len() - 1] {
        for (what, at) in [("header", 17), ("payload", HEADER + rec.len / 3)] {
            let mut bad = img.clone();
            flip(bad.wal_mut(), rec.off + at);
            flip(bad.wal_mut(), rec.off + rec.span + at);
            let msg = expect_wal_corrupt(&bad, &format!("record {}: {what}", rec.seq));
            eprintln!("record {} {what}: {msg}", rec.seq);
        }
        // Zeroed entirely (a lost write in the middle).
        let mut bad = img.clone();
        bad.wal_mut()[rec.off..rec.off + 2 * rec.span].fill(0);
        expect_wal_corrupt(&bad, &format!("record {} zeroed", rec.seq));
    }
}

/// (c) The last record torn (never acknowledged: its `fdatasync` had not returned): the log
/// ends at the record before, and the store then takes new appends that survive a reopen.
#[test]
fn a_torn_last_record_ends_the_log_at_the_record_before() {
    let d = TempDir::new().unwrap();
    let (s, want) = wal_store(d.path(), APPENDS);
    let img = Image::take(d.path());
    drop(s);
    let recs = parse_wal(img.wal());
    let last = *recs.last().unwrap();
    assert!(
        last.span > BLOCK,
        "the last record should span several blocks"
    );
    let before = prefix(&want, recs.len() - 1);
    let (off, span) = (last.off, last.span);
    type Tear = Box<dyn Fn(&mut Vec<u8>)>;
    let tears: Vec<(&str, Tear)> = vec![
        (
            "both copies zeroed",
            Box::new(move |w| w[off..off + 2 * span].fill(0)),
        ),
        (
            "truncated in the first copy",
            Box::new(move |w| w.truncate(off + BLOCK + 100)),
        ),
        (
            "truncated at the record's start",
            Box::new(move |w| w.truncate(off)),
        ),
        (
            "first copy's tail zeroed, second copy truncated",
            Box::new(move |w| {
                w[off + BLOCK..off + span].fill(0);
                w.truncate(off + span + BLOCK);
            }),
        ),
        (
            "only the first block of each copy written",
            Box::new(move |w| {
                w[off + BLOCK..off + span].fill(0);
                w[off + span + BLOCK..off + 2 * span].fill(0);
            }),
        ),
    ];
    for (what, tear) in &tears {
        let mut bad = img.clone();
        tear(bad.wal_mut());
        let (dir, mut s) = expect_log(&bad, &before, what);
        // New appends, smaller than the torn record they overwrite, then a crash image.
        let mut more = before.clone();
        for k in 0..3u64 {
            let i = more.len() as u64 + 1;
            let es = vec![sized(i, 1, 40 + k as usize), sized(i + 1, 1, 5)];
            s.persist(None, &es).unwrap();
            more.extend(es);
        }
        let crash = Image::take(dir.path());
        drop(expect_log(
            &crash,
            &more,
            &format!("{what}, appended, crash"),
        ));
        // And a clean close.
        drop(s);
        drop(expect_log(
            &Image::take(dir.path()),
            &more,
            &format!("{what}, appended, closed"),
        ));
    }
    // One good copy is a whole record, however the other was torn.
    let mut half = img.clone();
    half.wal_mut().truncate(off + span + BLOCK);
    drop(expect_log(&half, &want, "second copy truncated"));
    let mut half = img.clone();
    half.wal_mut()[off..off + span].fill(0);
    drop(expect_log(&half, &want, "first copy zeroed"));
}

/// (d) After a checkpoint the records of the older epoch are ignored: the log reopens exactly,
/// whether or not new (shorter) records have overwritten the start of the old ones, and even
/// when the new epoch's last record is torn right before old records.
#[test]
fn records_of_an_older_epoch_are_ignored_after_a_checkpoint() {
    let d = TempDir::new().unwrap();
    let (mut s, mut want) = wal_store(d.path(), &[(3, 30_000), (5, 10_000), (2, 40_000)]);
    let old = parse_wal(&Image::take(d.path()).wal.unwrap());
    assert_eq!(old.len(), 3);
    s.checkpoint().unwrap();
    assert_eq!(redb_last_index(d.path()), Some(want.len() as u64));
    // Nothing new: every old record is stale, none may be replayed over redb's log.
    drop(expect_log(&Image::take(d.path()), &want, "checkpoint only"));
    // New appends, each much shorter than the old record it overwrites.
    for k in 0..4u64 {
        let i = want.len() as u64 + 1;
        let es = vec![sized(i, 1, 10 + k as usize)];
        s.persist(None, &es).unwrap();
        want.extend(es);
        let img = Image::take(d.path());
        let new = parse_wal(img.wal());
        assert_eq!(new.len() as u64, k + 1);
        assert_eq!(
            new[0].epoch,
            old[0].epoch + 1,
            "the checkpoint advances the epoch"
        );
        drop(expect_log(&img, &want, &format!("{} new records", k + 1)));
        // The newest record torn: stale records of the old epoch follow it, which is no
        // corruption.
        let mut torn = img.clone();
        let r = new[new.len() - 1];
        torn.wal_mut()[r.off..r.off + 2 * r.span].fill(0);
        drop(expect_log(
            &torn,
            &want[..want.len() - 1],
            &format!("{} new records, the last torn", k + 1),
        ));
    }
    // Another pass: a third epoch over leftovers of two older ones.
    s.checkpoint().unwrap();
    let i = want.len() as u64 + 1;
    let es: Vec<Entry> = (i..i + 3).map(|i| sized(i, 1, 2000)).collect();
    s.persist(None, &es).unwrap();
    want.extend(es);
    let img = Image::take(d.path());
    assert_eq!(parse_wal(img.wal())[0].epoch, old[0].epoch + 2);
    let (_d2, s2) = expect_log(&img, &want, "third epoch");
    // A conflicting append goes through redb and checkpoints too.
    drop(s2);
    let i = want.len() as u64 - 1;
    let es: Vec<Entry> = (i..i + 2).map(|i| sized(i, 2, 33)).collect();
    s.persist(Some(&hs(2, 0)), &es).unwrap();
    want.truncate(i as usize - 1);
    want.extend(es);
    assert_eq!(redb_last_index(d.path()), Some(want.len() as u64));
    drop(expect_log(
        &Image::take(d.path()),
        &want,
        "after a conflict",
    ));
    drop(s);
    drop(expect_log(&Image::take(d.path()), &want, "closed"));
}

/// (e) A format-2 store without its write-ahead log is corrupt (acknowledged entries may have
/// been in it), both with logged entries and after a clean close.
#[test]
fn a_missing_write_ahead_log_is_corruption() {
    let d = TempDir::new().unwrap();
    let (s, _) = wal_store(d.path(), APPENDS);
    let mut img = Image::take(d.path());
    drop(s);
    img.wal = None;
    let msg = expect_wal_corrupt(&img, "missing with entries in it");
    assert!(msg.contains("missing"), "{msg}");
    let mut closed = Image::take(d.path());
    closed.wal = None;
    expect_wal_corrupt(&closed, "missing after a clean close");
}

/// (f) A store written before the write-ahead log existed (format 1: no `wal_epoch`, no
/// `deimos.wal`) opens, is upgraded in place and keeps all its data; the log then works.
#[test]
fn a_legacy_store_is_upgraded_and_keeps_its_data() {
    let d = TempDir::new().unwrap();
    let (mut s, mut want) = wal_store(d.path(), APPENDS);
    let last = want.len() as u64;
    s.commit_applied(last - 2, 1, &conf(), &[set("a", b"1"), set("b", b"22")])
        .unwrap();
    s.compact(4).unwrap();
    s.persist(Some(&hs(1, last - 1)), &[]).unwrap();
    drop(s);
    want.drain(..4);
    {
        let db = redb::Database::open(d.path().join(DB_FILE)).unwrap();
        let t = db.begin_write().unwrap();
        t.open_table(META)
            .unwrap()
            .insert(b"format".as_slice(), 1u32.to_le_bytes().as_slice())
            .unwrap();
        assert!(t
            .open_table(RAFT)
            .unwrap()
            .remove(b"wal_epoch".as_slice())
            .unwrap()
            .is_some());
        t.commit().unwrap();
    }
    std::fs::remove_file(d.path().join(WAL_FILE)).unwrap();

    let mut s = RedbStorage::open_with(d.path(), &opts()).expect("open a legacy store");
    assert_eq!(log_of(&s), want);
    assert_eq!(s.first_index().unwrap(), 5);
    assert_eq!(s.term(4).unwrap(), 1);
    assert_eq!(s.hard_state(), hs(1, last - 1));
    assert_eq!(s.applied_state(), (last - 2, 1, conf()));
    assert_eq!(
        all_records(&s),
        vec![("a".into(), b"1".to_vec()), ("b".into(), b"22".to_vec())]
    );
    assert!(
        d.path().join(WAL_FILE).exists(),
        "the upgrade creates the log"
    );
    // The upgrade is durable: format and epoch are in the file before anything is logged.
    let img = Image::take(d.path());
    let copy = img.restore();
    {
        let db = redb::Database::open(copy.path().join(DB_FILE)).unwrap();
        let t = db.begin_read().unwrap();
        let format = t
            .open_table(META)
            .unwrap()
            .get(b"format".as_slice())
            .unwrap();
        assert_eq!(
            format.unwrap().value(),
            FORMAT_VERSION.to_le_bytes().as_slice()
        );
        let epoch = t
            .open_table(RAFT)
            .unwrap()
            .get(b"wal_epoch".as_slice())
            .unwrap();
        assert_eq!(epoch.map(|v| v.value().len()), Some(8));
    }
    // The log works after the upgrade: appends are logged and replayed after a crash.
    let i = last + 1;
    let es: Vec<Entry> = (i..i + 3).map(|i| sized(i, 1, 5000)).collect();
    s.persist(None, &es).unwrap();
    want.extend(es);
    let img = Image::take(d.path());
    assert_eq!(parse_wal(img.wal()).len(), 1);
    drop(expect_log(&img, &want, "appended after the upgrade, crash"));
    drop(s);
    let s = RedbStorage::open_with(d.path(), &opts()).unwrap();
    assert_eq!(log_of(&s), want);
    assert_eq!(all_records(&s).len(), 2);
}

// ---------------------------------------------------------------------------------------------
// 3. Reads across the boundary between redb and the tail
// ---------------------------------------------------------------------------------------------

fn same_kind<T: PartialEq + std::fmt::Debug>(a: &StorageResult<T>, b: &StorageResult<T>) -> bool {
    match (a, b) {
        (Err(StorageError::Refused(_)), Err(StorageError::Refused(_))) => true,
        _ => a == b,
    }
}

/// Every `entries(lo, hi, max_bytes)` and `term(i)` near and inside the log, with `max_bytes`
/// at every cumulative-size boundary from `lo` (and one below), answered as `MemStorage` does.
fn compare(m: &MemStorage, r: &RedbStorage, why: &str) -> usize {
    let (mf, ml) = (m.first_index().unwrap(), m.last_index().unwrap());
    assert_eq!(
        (mf, ml),
        (r.first_index().unwrap(), r.last_index().unwrap())
    );
    for i in mf.saturating_sub(2)..=ml + 2 {
        assert_eq!(m.term(i), r.term(i), "{why}: term({i})");
    }
    let all = m.entries(mf, ml + 1, None).unwrap();
    let mut checked = 0;
    for lo in mf.saturating_sub(1)..=ml + 1 {
        let mut maxes = vec![None, Some(0), Some(1), Some(u64::MAX)];
        let mut sum = 0u64;
        for e in all.iter().filter(|e| e.index >= lo) {
            sum += e.size() as u64;
            maxes.extend([Some(sum - 1), Some(sum), Some(sum + 1)]);
        }
        for hi in lo..=ml + 2 {
            for &max in &maxes {
                let (a, b) = (m.entries(lo, hi, max), r.entries(lo, hi, max));
                assert!(
                    same_kind(&a, &b),
                    "{why}: entries({lo}, {hi}, {max:?}): MemStorage {:?} vs RedbStorage {:?}",
                    a.as_ref()
                        .map(|v| v.iter().map(|e| e.index).collect::<Vec<_>>()),
                    b.as_ref()
                        .map(|v| v.iter().map(|e| e.index).collect::<Vec<_>>()),
                );
                checked += 1;
            }
        }
    }
    checked
}

#[test]
fn reads_spanning_redb_and_the_tail_match_mem_storage() {
    let d = TempDir::new().unwrap();
    let mut r = RedbStorage::open_with(d.path(), &opts()).unwrap();
    let mut m = MemStorage::new(conf());
    let size = |i: Index| [0, 1, 17, 300, 4000, 64][(i % 6) as usize];
    let batch = |lo: Index, hi: Index, term: Term| -> Vec<Entry> {
        (lo..hi).map(|i| sized(i, term, size(i))).collect()
    };
    let mut checked = 0;
    // redb's part: a new term goes through redb, as does compaction.
    let es = batch(1, 13, 1);
    r.persist(Some(&hs(1, 0)), &es).unwrap();
    m.append(&es).unwrap();
    r.commit_applied(6, 1, &conf(), &[]).unwrap();
    r.compact(4).unwrap();
    m.compact(4, conf(), Vec::new()).unwrap();
    checked += compare(&m, &r, "redb only");
    // The tail: plain appends of one and several entries.
    for (lo, hi) in [(13, 14), (14, 19), (19, 22)] {
        let es = batch(lo, hi, 1);
        r.persist(None, &es).unwrap();
        m.append(&es).unwrap();
    }
    assert_eq!(
        redb_last_index(d.path()),
        Some(12),
        "the tail is not in redb"
    );
    checked += compare(&m, &r, "redb 5..=12 + tail 13..=21");
    // After a crash (a reopen without the checkpoint of `Drop`) the tail is replayed.
    let (crash_dir, crashed) = expect_log(&Image::take(d.path()), &log_of(&r), "crash");
    checked += compare(&m, &crashed, "redb 5..=12 + replayed tail 13..=21");
    drop(crashed);
    drop(crash_dir);
    // A checkpoint moves the tail into redb, then a new tail starts.
    r.checkpoint().unwrap();
    checked += compare(&m, &r, "checkpointed: redb 5..=21");
    let es = batch(22, 30, 1);
    r.persist(None, &es).unwrap();
    m.append(&es).unwrap();
    // Compaction (through redb) while the tail is not empty.
    r.commit_applied(16, 1, &conf(), &[]).unwrap();
    let es = batch(30, 33, 1);
    r.persist(None, &es).unwrap();
    m.append(&es).unwrap();
    r.compact(15).unwrap();
    m.compact(15, conf(), Vec::new()).unwrap();
    let es = batch(33, 36, 1);
    r.persist(None, &es).unwrap();
    m.append(&es).unwrap();
    assert_eq!(redb_last_index(d.path()), Some(32));
    checked += compare(&m, &r, "compacted to 15: redb 16..=32 + tail 33..=35");
    // The tail only: compact everything redb holds (applying checkpoints 33..=35 first).
    r.commit_applied(35, 1, &conf(), &[]).unwrap();
    r.compact(35).unwrap();
    m.compact(35, conf(), Vec::new()).unwrap();
    let es = batch(36, 40, 1);
    r.persist(None, &es).unwrap();
    m.append(&es).unwrap();
    assert_eq!(redb_last_index(d.path()), None, "redb's log is empty");
    checked += compare(&m, &r, "redb empty (base 35) + tail 36..=39");
    let (crash_dir, crashed) = expect_log(&Image::take(d.path()), &log_of(&r), "crash 2");
    checked += compare(&m, &crashed, "after crash: base 35 + tail 36..=39");
    drop(crashed);
    drop(crash_dir);
    // A conflicting suffix (through redb) with a tail, then more tail.
    let es = batch(38, 42, 2);
    r.persist(Some(&hs(2, 0)), &es).unwrap();
    m.append(&es).unwrap();
    let es = batch(42, 47, 2);
    r.persist(None, &es).unwrap();
    m.append(&es).unwrap();
    checked += compare(&m, &r, "conflict at 38, tail 42..=46");
    drop(r);
    let r = RedbStorage::open_with(d.path(), &opts()).unwrap();
    checked += compare(&m, &r, "closed and reopened");
    eprintln!("{checked} reads compared");
}

#[test]
fn write_batch_goes_to_redb_not_to_the_write_ahead_log() {
    // Sanity for the helpers above: an explicit `write_batch` goes to redb, not to the log.
    let d = TempDir::new().unwrap();
    let mut s = RedbStorage::open_with(d.path(), &opts()).unwrap();
    s.write_batch(&WriteBatch {
        hard_state: Some(&hs(1, 0)),
        entries: &ents(1, 4, 1),
        ..WriteBatch::default()
    })
    .unwrap();
    s.write_batch(&WriteBatch {
        entries: &ents(4, 6, 1),
        ..WriteBatch::default()
    })
    .unwrap();
    assert_eq!(redb_last_index(d.path()), Some(5));
    assert!(parse_wal(&Image::take(d.path()).wal.unwrap()).is_empty());
}

/// Background checkpoints leave the log's position where it is (appends go on after the
/// frozen records); once the file is full, the log must still start over, not send every
/// later append to redb.
#[test]
fn the_log_starts_over_when_full_even_if_background_checkpoints_took_every_entry() {
    let d = TempDir::new().unwrap();
    let mut s = RedbStorage::open_with(d.path(), &opts()).unwrap();
    let mut last = 0;
    for _ in 0..48 {
        last += 1;
        s.persist(None, &[sized(last, 1, 1 << 20)]).unwrap();
        s.checkpoint_in_background().unwrap();
        s.written_state().unwrap(); // waits for it
    }
    last += 1;
    s.persist(None, &[sized(last, 1, 1 << 20)]).unwrap();
    assert_eq!(
        redb_last_index(d.path()),
        Some(last - 1),
        "the last append went to redb, not to the write-ahead log"
    );
    let len = std::fs::metadata(d.path().join(WAL_FILE)).unwrap().len();
    assert!(len <= 72 << 20, "the log grew to {len} bytes");
    drop(s);
    let s = RedbStorage::open_with(d.path(), &opts()).unwrap();
    assert_eq!(s.last_index().unwrap(), last);
}
