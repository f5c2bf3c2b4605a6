//! `RedbStorage`: opening, creating and checking the database, and the in-memory cache.
//!
//! Why the open path is careful:
//! - A missing file means "new node": the file is built under a temporary name and renamed into
//!   place only once its first transaction (magic, format version, empty state) is durable. So an
//!   existing `deimos.redb` that is empty, truncated or foreign is never mistaken for "new" and
//!   is never re-initialised: it is reported as corrupt.
//! - redb is asked to verify the checksum of every committed page on every open
//!   (`set_check_integrity_on_open`). With `StoreOptions::two_phase_commit` (the default, and
//!   what the server uses) commits use redb's 2-phase commit, under which a primary commit slot
//!   that fails its checksum is an error rather than a silent fall-back to the previous commit.
//!   Turning it off (the server's `--unsafe-one-phase-commit`) saves one fsync per commit, but
//!   damage to a commit slot that was already durable then reopens the store at the previous
//!   commit, losing acknowledged writes without a word (`tests/persist_corrupt.rs` shows both).
//!   redb may panic on some damaged files in debug builds; that panic is caught and reported as
//!   corruption.
//! - After redb accepts the file, our own records are checked against each other (see
//!   `check_consistency`).
//!
//! What redb 4.6 itself does with a damaged file (read from its source, confirmed by
//! `tests/persist_corrupt.rs`): a wrong magic number is an I/O error of kind `InvalidData`; an
//! unknown file format version, a file shorter than the layout its header records, or a page
//! whose checksum fails is `StorageError::Corrupted`. Without the integrity check it trusts an
//! allocator state saved at clean shutdown and may read damaged pages later (debug builds may
//! panic there). Without 2-phase commit a primary commit slot that fails verification makes it
//! fall back to the previous commit, which for us would be a silent rollback of an acknowledged
//! write. An empty file is initialised by `Builder::create` as a new database, which is why we
//! never call `create` on the real path.
//!
//! Cache invariant: `cache` always equals what the last committed transaction left in the file;
//! it is replaced only after a commit succeeds. After any backend failure the handle is poisoned
//! (every later call fails): the on-disk state is then unknown and the node must restart.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use deimos_raft::storage::{StorageError, StorageResult};
use deimos_raft::types::{ConfState, Entry, HardState, Index, Term};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::checkpoint::Running;
use super::codec::{decode, encode, FORMAT_VERSION, LEGACY_FORMAT_VERSION, MAGIC};
use super::error::{backend, PersistError};
use super::schema::*;
use super::staged::Staged;
use super::wal::{Resume, Wal};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "deimos.redb";
const CREATING_SUFFIX: &str = ".creating";

/// How to open the store. The defaults are the safe ones; the knobs exist for benchmarks and for
/// operators who knowingly trade safety for speed.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Membership recorded when the file is first created (ignored when it already exists).
    pub initial_conf: ConfState,
    /// Verify every page checksum at open (reads the whole file). Default `true`.
    pub verify_on_open: bool,
    /// redb 2-phase commit: one more fsync per commit, but a damaged latest commit is reported
    /// instead of silently rolled back to the one before. Default `true`.
    pub two_phase_commit: bool,
    /// redb page cache size in bytes. Default 64 MiB.
    pub cache_size: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            initial_conf: ConfState::default(),
            verify_on_open: true,
            two_phase_commit: true,
            cache_size: 64 << 20,
        }
    }
}

/// Everything reads need without touching the file. Equal to the committed state (see module doc).
#[derive(Debug, Clone, Default)]
pub(crate) struct Cached {
    pub base: LogBase,
    pub last_index: Index,
    /// Term of the entry at `last_index` (the base term when the log is empty).
    pub last_term: Term,
    pub hard_state: HardState,
    pub applied: AppliedState,
}

/// Durable Raft log, hard state and applied state in one redb database. See the module docs of
/// `persist` for the contract.
pub struct RedbStorage {
    /// Shared with a background checkpoint's thread (see `checkpoint`).
    pub(crate) db: std::sync::Arc<Database>,
    pub(crate) path: PathBuf,
    pub(crate) cache: Cached,
    pub(crate) two_phase_commit: bool,
    /// Writes that need no fsync, not yet in the file (see `staged`).
    pub(crate) staged: Staged,
    /// The write-ahead log: entries appended since the last checkpoint (see `wal`). The cache's
    /// `last_index`/`last_term` include them; redb's log ends where the tail begins.
    pub(crate) wal: Wal,
    /// The background checkpoint in flight, if any (see `checkpoint`).
    pub(crate) running: Running,
    /// Set on the first backend failure; every later call returns it.
    pub(crate) poisoned: Option<StorageError>,
}

impl Drop for RedbStorage {
    /// A clean close writes what is staged and checkpoints the write-ahead log, durably, so a
    /// restart replays nothing. (A crash loses what is staged, which is what staging allows:
    /// see `staged`; the log is replayed.)
    fn drop(&mut self) {
        if let Err(e) = self.finish_checkpoint() {
            tracing::warn!(error = %e, "background checkpoint failed at close");
            return;
        }
        let pending = !self.staged.is_empty() || !self.wal.tail().is_empty();
        if pending && self.poisoned.is_none() {
            if let Err(e) = self.write_batch(&super::write::WriteBatch::default()) {
                tracing::warn!(error = %e, "could not write staged state on close");
            }
        }
    }
}

impl std::fmt::Debug for RedbStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStorage")
            .field("path", &self.path)
            .field("cache", &self.cache)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

fn io_err<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> PersistError + 'a {
    move |source| PersistError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

impl RedbStorage {
    /// Open the store in `dir` with default options, creating it if `dir/deimos.redb` is absent.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, PersistError> {
        Self::open_with(dir, &StoreOptions::default())
    }

    /// Open (or create) the store in `dir`. Never re-initialises an existing file: a damaged one
    /// is an error naming the file and the damage.
    pub fn open_with(dir: impl AsRef<Path>, opts: &StoreOptions) -> Result<Self, PersistError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(io_err(dir, "create data directory"))?;
        let path = dir.join(DB_FILE);
        let exists = path.try_exists().map_err(io_err(&path, "stat"))?;
        if !exists {
            create_file(dir, &path, opts)?;
        }
        let db = open_redb(&path, opts)?;
        let (mut cache, format) = load(&db, &path)?;
        let (epoch, resume) = match format {
            Format::Current { wal_epoch, resume } => (wal_epoch, resume),
            Format::Legacy => (upgrade(&db, dir, &path)?, Resume::default()),
        };
        let wal = Wal::open(dir, epoch, resume, cache.last_index + 1)?;
        if let Some(last) = wal.tail().last() {
            cache.last_index = last.index;
            cache.last_term = last.term;
            // Entries only extend the log: base <= applied and commit <= last still hold; the
            // one bound that can newly fail is the top of the index space.
            if last.index == Index::MAX {
                return Err(PersistError::Corrupt {
                    path: dir.join(super::wal::WAL_FILE),
                    what: "log index reached u64::MAX".into(),
                });
            }
            tracing::info!(
                entries = wal.tail().len(),
                last = last.index,
                "recovered entries from the write-ahead log"
            );
        }
        Ok(RedbStorage {
            db: std::sync::Arc::new(db),
            path,
            cache,
            two_phase_commit: opts.two_phase_commit,
            staged: Staged::default(),
            wal,
            running: Running::default(),
            poisoned: None,
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hard state, including a staged commit index not written yet (see `staged`).
    pub fn hard_state(&self) -> HardState {
        self.cache.hard_state
    }

    /// The hard state and applied index the file holds, without what is staged: what a crash
    /// now would leave once redb's unsynced pages reached the disk. For tests and diagnostics.
    pub fn written_state(&self) -> Result<(HardState, Index), PersistError> {
        self.settle();
        let (c, _) = load(&self.db, &self.path)?;
        Ok((c.hard_state, c.applied.index))
    }

    /// `(applied_index, applied_term, conf state at applied_index)`.
    pub fn applied_state(&self) -> (Index, Term, ConfState) {
        let a = &self.cache.applied;
        (a.index, a.term, a.conf.clone())
    }

    pub(crate) fn check_usable(&self) -> StorageResult<()> {
        match &self.poisoned {
            Some(earlier) => Err(earlier.clone()),
            None => Ok(()),
        }
    }

    /// Record a backend failure: from now on the handle refuses all work.
    pub(crate) fn poison(&mut self, e: StorageError) -> StorageError {
        if self.poisoned.is_none() {
            self.poisoned = Some(e.clone());
        }
        e
    }

    pub(crate) fn begin_read(&self) -> StorageResult<ReadTransaction> {
        self.check_usable()?;
        self.db.begin_read().map_err(|e| backend("begin read", e))
    }
}

/// A write transaction for the setup writes (creation, format upgrade): fsynced, two-phase,
/// whatever the options say for later commits.
fn begin_durable(db: &Database) -> StorageResult<redb::WriteTransaction> {
    let mut txn = db.begin_write().map_err(|e| backend("begin write", e))?;
    txn.set_durability(redb::Durability::Immediate)
        .map_err(|e| backend("durability", e))?;
    txn.set_two_phase_commit(true);
    Ok(txn)
}

/// Build a new store under a temporary name and move it into place once durable.
fn create_file(dir: &Path, path: &Path, opts: &StoreOptions) -> Result<(), PersistError> {
    let mut tmp_name = path.as_os_str().to_os_string();
    tmp_name.push(CREATING_SUFFIX);
    let tmp = PathBuf::from(tmp_name);
    // A leftover from a crash during an earlier creation never held acknowledged data.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&tmp, "remove stale temporary file")(e)),
    }
    let db = Database::builder()
        .create(&tmp)
        .map_err(|e| PersistError::Corrupt {
            path: tmp.clone(),
            what: format!("create: {e}"),
        })?;
    let init = || -> StorageResult<()> {
        let txn = begin_durable(&db)?;
        {
            let mut meta = txn.open_table(META).map_err(|e| backend("open meta", e))?;
            meta.insert(KEY_MAGIC, MAGIC)
                .map_err(|e| backend("write magic", e))?;
            meta.insert(KEY_FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())
                .map_err(|e| backend("write format", e))?;
            let mut raft = txn
                .open_table(RAFT_STATE)
                .map_err(|e| backend("open raft", e))?;
            raft.insert(KEY_HARD_STATE, encode(&HardState::default())?.as_slice())
                .map_err(|e| backend("write hard state", e))?;
            raft.insert(KEY_LOG_BASE, encode(&LogBase::default())?.as_slice())
                .map_err(|e| backend("write log base", e))?;
            raft.insert(KEY_WAL_EPOCH, FIRST_WAL_EPOCH.to_le_bytes().as_slice())
                .map_err(|e| backend("write wal epoch", e))?;
            let applied = AppliedState {
                index: 0,
                term: 0,
                conf: opts.initial_conf.clone(),
            };
            let mut ap = txn
                .open_table(APPLIED)
                .map_err(|e| backend("open applied", e))?;
            ap.insert(KEY_APPLIED, encode(&applied)?.as_slice())
                .map_err(|e| backend("write applied", e))?;
            txn.open_table(LOG).map_err(|e| backend("create log", e))?;
            txn.open_table(RECORDS)
                .map_err(|e| backend("create records", e))?;
        }
        txn.commit().map_err(|e| backend("commit", e))
    };
    init().map_err(|e| PersistError::Corrupt {
        path: tmp.clone(),
        what: format!("initialise: {e}"),
    })?;
    drop(db);
    // The log first: once the store is in place it says it has one (the directory sync below
    // makes both names durable).
    Wal::create(dir)?;
    std::fs::rename(&tmp, path).map_err(io_err(path, "rename new database into place"))?;
    let d = std::fs::File::open(dir).map_err(io_err(dir, "open data directory"))?;
    d.sync_all().map_err(io_err(dir, "sync data directory"))?;
    Ok(())
}

/// Open with redb, mapping each failure to a typed error; a panic inside redb (possible on
/// damaged files in debug builds) is reported as corruption.
fn open_redb(path: &Path, opts: &StoreOptions) -> Result<Database, PersistError> {
    let meta = std::fs::metadata(path).map_err(io_err(path, "stat"))?;
    if meta.len() == 0 {
        return Err(PersistError::Corrupt {
            path: path.to_path_buf(),
            what: "file is empty (truncated?)".into(),
        });
    }
    let mut builder = Database::builder();
    builder
        .set_check_integrity_on_open(opts.verify_on_open)
        .set_cache_size(opts.cache_size)
        .set_repair_callback(|s| {
            tracing::info!(progress = s.progress(), "redb: checking database integrity")
        });
    let result = catch_unwind(AssertUnwindSafe(|| builder.open(path)));
    let corrupt = |what: String| PersistError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
    match result {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(match e {
            redb::DatabaseError::DatabaseAlreadyOpen => PersistError::Locked {
                path: path.to_path_buf(),
            },
            redb::DatabaseError::Storage(redb::StorageError::Io(io))
                if !matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                PersistError::Io {
                    path: path.to_path_buf(),
                    op: "open",
                    source: io,
                }
            }
            other => corrupt(format!("redb refused the file: {other}")),
        }),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(corrupt(format!(
                "redb failed while reading the file: {msg}"
            )))
        }
    }
}

/// The epoch of the write-ahead log of a new store.
const FIRST_WAL_EPOCH: u64 = 1;

/// What `load` found about the layout.
enum Format {
    Current {
        wal_epoch: u64,
        resume: Resume,
    },
    /// Written before the write-ahead log existed: `open` upgrades it.
    Legacy,
}

/// Upgrade a version-1 store: give it an empty write-ahead log, then record the new version and
/// the log's epoch in one durable commit. A crash between the two leaves a version-1 store and a
/// log without records of epoch 1, and the upgrade runs again.
fn upgrade(db: &Database, dir: &Path, path: &Path) -> Result<u64, PersistError> {
    Wal::create(dir)?;
    let run = || -> StorageResult<()> {
        let txn = begin_durable(db)?;
        {
            let mut meta = txn.open_table(META).map_err(|e| backend("open meta", e))?;
            meta.insert(KEY_FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())
                .map_err(|e| backend("write format", e))?;
            let mut raft = txn
                .open_table(RAFT_STATE)
                .map_err(|e| backend("open raft", e))?;
            raft.insert(KEY_WAL_EPOCH, FIRST_WAL_EPOCH.to_le_bytes().as_slice())
                .map_err(|e| backend("write wal epoch", e))?;
        }
        txn.commit().map_err(|e| backend("commit", e))
    };
    run().map_err(|e| PersistError::Corrupt {
        path: path.to_path_buf(),
        what: format!("upgrade from format {LEGACY_FORMAT_VERSION}: {e}"),
    })?;
    tracing::info!(
        from = LEGACY_FORMAT_VERSION,
        to = FORMAT_VERSION,
        "upgraded the store's format"
    );
    Ok(FIRST_WAL_EPOCH)
}

/// Read and cross-check our records; produce the cache (of redb's contents alone).
fn load(db: &Database, path: &Path) -> Result<(Cached, Format), PersistError> {
    let corrupt = |what: String| PersistError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
    let txn = db
        .begin_read()
        .map_err(|e| corrupt(format!("begin read: {e}")))?;
    let table_err = |name: &str, e: redb::TableError| {
        corrupt(format!("table `{name}`: {e} (not a Deimos store?)"))
    };
    let meta = txn.open_table(META).map_err(|e| table_err("meta", e))?;
    let magic = meta
        .get(KEY_MAGIC)
        .map_err(|e| corrupt(format!("read magic: {e}")))?;
    match magic {
        Some(m) if m.value() == MAGIC => {}
        Some(_) => return Err(corrupt("wrong magic record (not a Deimos store)".into())),
        None => return Err(corrupt("missing magic record (not a Deimos store)".into())),
    }
    let format = meta
        .get(KEY_FORMAT)
        .map_err(|e| corrupt(format!("read format: {e}")))?;
    let found = match format.as_ref().map(|v| <[u8; 4]>::try_from(v.value())) {
        Some(Ok(b)) => u32::from_le_bytes(b),
        Some(Err(_)) => return Err(corrupt("malformed format version record".into())),
        None => return Err(corrupt("missing format version record".into())),
    };
    if found != FORMAT_VERSION && found != LEGACY_FORMAT_VERSION {
        return Err(PersistError::Version {
            path: path.to_path_buf(),
            found,
            expected: FORMAT_VERSION,
        });
    }

    let raft = txn
        .open_table(RAFT_STATE)
        .map_err(|e| table_err("raft_state", e))?;
    let applied_t = txn
        .open_table(APPLIED)
        .map_err(|e| table_err("applied_state", e))?;
    let log = txn.open_table(LOG).map_err(|e| table_err("raft_log", e))?;
    txn.open_table(RECORDS)
        .map_err(|e| table_err("applied_records", e))?;

    let get = |t: &redb::ReadOnlyTable<&[u8], &[u8]>, key: &[u8], name: &str| match t.get(key) {
        Ok(Some(v)) => Ok(v.value().to_vec()),
        Ok(None) => Err(corrupt(format!("missing record `{name}`"))),
        Err(e) => Err(corrupt(format!("read `{name}`: {e}"))),
    };
    let dec_err = |e: StorageError| corrupt(e.to_string());
    let hard_state: HardState =
        decode(&get(&raft, KEY_HARD_STATE, "hard_state")?, "hard_state").map_err(dec_err)?;
    let base: LogBase =
        decode(&get(&raft, KEY_LOG_BASE, "log_base")?, "log_base").map_err(dec_err)?;
    let applied: AppliedState =
        decode(&get(&applied_t, KEY_APPLIED, "applied")?, "applied").map_err(dec_err)?;
    let format = if found == LEGACY_FORMAT_VERSION {
        Format::Legacy
    } else {
        let bytes = get(&raft, KEY_WAL_EPOCH, "wal_epoch")?;
        let wal_epoch = <[u8; 8]>::try_from(bytes.as_slice())
            .map(u64::from_le_bytes)
            .map_err(|_| corrupt("malformed wal_epoch record".into()))?;
        let resume = match raft.get(KEY_WAL_RESUME) {
            Ok(Some(v)) => Resume::from_bytes(v.value())
                .ok_or_else(|| corrupt("malformed wal_resume record".into()))?,
            Ok(None) => Resume::default(),
            Err(e) => return Err(corrupt(format!("read `wal_resume`: {e}"))),
        };
        Format::Current { wal_epoch, resume }
    };

    let read_entry = |(k, v): (redb::AccessGuard<'_, u64>, redb::AccessGuard<'_, &[u8]>)| {
        let e: Entry = decode(v.value(), "log entry").map_err(dec_err)?;
        if e.index != k.value() {
            return Err(corrupt(format!(
                "log key {} holds entry {}",
                k.value(),
                e.index
            )));
        }
        Ok(e)
    };
    let first = log
        .first()
        .map_err(|e| corrupt(format!("read log: {e}")))?
        .map(read_entry)
        .transpose()?;
    let last = log
        .last()
        .map_err(|e| corrupt(format!("read log: {e}")))?
        .map(read_entry)
        .transpose()?;
    let count = log.len().map_err(|e| corrupt(format!("read log: {e}")))?;
    let (last_index, last_term) = match (&first, &last) {
        (Some(f), Some(l)) => {
            if Some(f.index) != base.index.checked_add(1) {
                return Err(corrupt(format!(
                    "log starts at {} but the log base is {}",
                    f.index, base.index
                )));
            }
            if l.index.checked_sub(f.index).and_then(|d| d.checked_add(1)) != Some(count) {
                return Err(corrupt(format!(
                    "log {}..={} has {} entries: not contiguous",
                    f.index, l.index, count
                )));
            }
            (l.index, l.term)
        }
        _ => (base.index, base.term),
    };
    let cache = Cached {
        base,
        last_index,
        last_term,
        hard_state,
        applied,
    };
    let term_at = |idx: Index| -> Result<Term, PersistError> {
        if idx == cache.base.index {
            return Ok(cache.base.term);
        }
        match log.get(idx) {
            Ok(Some(v)) => Ok(decode::<Entry>(v.value(), "log entry")
                .map_err(dec_err)?
                .term),
            Ok(None) => Err(corrupt(format!("log entry {idx} missing"))),
            Err(e) => Err(corrupt(format!("read log: {e}"))),
        }
    };
    check_consistency(&cache, term_at).map_err(corrupt)?;
    Ok((cache, format))
}

/// The cross-record invariants every committed state satisfies; checked at open and before every
/// commit: `last_index < u64::MAX`, `base <= applied <= last`, `commit <= last`, and the applied
/// term is the term at the applied index. `term_at` answers the term of an index in `base.index ..= last_index`.
pub(crate) fn check_consistency<E>(
    c: &Cached,
    term_at: impl Fn(Index) -> Result<Term, E>,
) -> Result<(), String>
where
    E: std::fmt::Display,
{
    let a = &c.applied;
    // Keeps every `index + 1` in this module family free of overflow.
    if c.last_index == Index::MAX {
        return Err("log index reached u64::MAX".into());
    }
    if a.index < c.base.index || a.index > c.last_index {
        return Err(format!(
            "applied index {} outside the log [{} ..= {}]",
            a.index, c.base.index, c.last_index
        ));
    }
    if c.hard_state.commit > c.last_index {
        return Err(format!(
            "hard state commit {} is past the last log index {}",
            c.hard_state.commit, c.last_index
        ));
    }
    let t = term_at(a.index).map_err(|e| e.to_string())?;
    if t != a.term {
        return Err(format!(
            "applied term {} but the entry at {} has term {}",
            a.term, a.index, t
        ));
    }
    Ok(())
}
