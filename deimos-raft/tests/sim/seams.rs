//! The edges the real driver runs against in the simulator: `SimStorage` (a `MemStorage` that is
//! the node's disk), `SimTransport` (an outbox the simulator routes through its faulty network)
//! and `SimSm` (the register of `register.rs`). Each node's `Driver` is the production one; only
//! these three traits are simulated, so the order in which a `Ready` is sent, persisted, applied
//! and answered is the code that runs in `deimos`, not a copy of it.
//!
//! What the seams add for checking: `SimStorage` checks every write against Raft's invariants
//! (log matching on append; term, vote and commit monotonic on the hard state) and can crash the
//! node at a persist — after the driver sent a `Ready`'s early messages and answered clients it
//! may answer before its write, and before the write lands, the window that is worth hitting;
//! `SimSm` records what each node applies for the state-machine-safety and leader-completeness
//! checks.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use deimos_raft::driver::{ApplyBatch, Reporter, StateMachine, StateMachineError, Transport};
use deimos_raft::{
    BackendFailure, ConfChange, ConfState, Entry, EntryPayload, HardState, Index, InitialState,
    LogStorage, MemStorage, Message, MessageBody, NodeId, Snapshot, StorageError, StorageResult,
    Term,
};
use rand::rngs::StdRng;
use rand::Rng;

use super::invariants::Invariants;
use super::register::{Command, KvOut, KvStore};

/// The storage error a simulated crash at a persist returns; the driver stops on it (a fatal
/// storage error), which is exactly what a process killed inside its fsync does.
pub const CRASH: &str = "simulated crash before the write";

/// State the seams of every node share with the simulator (one thread, so the lock is never
/// contended; it exists because the driver's traits require `Send`).
pub struct Shared {
    pub inv: Invariants,
    /// The first invariant violation a seam saw; the simulator fails the run on it.
    pub violation: Option<String>,
    /// Requests whose command took effect on some replica.
    pub effective: HashSet<u64>,
    /// Applied commands not yet checked: (node, entry as applied).
    pub applied: Vec<(NodeId, Entry)>,
    /// Members whose removal, or addition, some node applied (so it is committed), with the
    /// index of the change: a lagging node applies old changes long after they took effect.
    pub removals: Vec<(NodeId, Index)>,
    pub additions: Vec<(NodeId, Index)>,
    /// Per-mille chance that a persist with entries crashes the node (0 outside chaos).
    pub crash_per_mille: u32,
    pub rng: StdRng,
    /// Nodes whose Raft loop the `wedge_after_snapshot` fault froze after a snapshot install.
    pub wedge_after_snapshot: bool,
    pub wedged: BTreeSet<NodeId>,
    pub snapshots_installed: u64,
    /// Snapshots a node installed whose configuration did not contain it (a joining node).
    pub snapshots_without_self: u64,
    pub compactions: u64,
}

impl Shared {
    pub fn new(rng: StdRng) -> Self {
        Shared {
            inv: Invariants::default(),
            violation: None,
            effective: HashSet::new(),
            applied: Vec::new(),
            removals: Vec::new(),
            additions: Vec::new(),
            crash_per_mille: 0,
            rng,
            wedge_after_snapshot: false,
            wedged: BTreeSet::new(),
            snapshots_installed: 0,
            snapshots_without_self: 0,
            compactions: 0,
        }
    }

    fn fail(&mut self, why: String) {
        self.violation.get_or_insert(why);
    }
}

pub type SharedRef = Arc<Mutex<Shared>>;

fn lock(s: &SharedRef) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// A node's disk. `disk` is what a crash leaves behind: only what `persist` (and
/// `apply_snapshot`) accepted is in it.
pub struct SimStorage {
    pub disk: MemStorage,
    node: NodeId,
    shared: SharedRef,
}

impl SimStorage {
    pub fn new(disk: MemStorage, node: NodeId, shared: SharedRef) -> Self {
        SimStorage { disk, node, shared }
    }
}

impl LogStorage for SimStorage {
    fn initial_state(&self) -> StorageResult<InitialState> {
        self.disk.initial_state()
    }
    fn entries(&self, lo: Index, hi: Index, max_bytes: Option<u64>) -> StorageResult<Vec<Entry>> {
        self.disk.entries(lo, hi, max_bytes)
    }
    fn term(&self, idx: Index) -> StorageResult<Term> {
        self.disk.term(idx)
    }
    fn first_index(&self) -> StorageResult<Index> {
        self.disk.first_index()
    }
    fn last_index(&self) -> StorageResult<Index> {
        self.disk.last_index()
    }
    fn snapshot(&self) -> StorageResult<Snapshot> {
        self.disk.snapshot()
    }
    fn append(&mut self, entries: &[Entry]) -> StorageResult<()> {
        self.persist(None, entries)
    }
    fn set_hard_state(&mut self, hs: &HardState) -> StorageResult<()> {
        self.persist(Some(hs), &[])
    }

    fn persist(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) -> StorageResult<()> {
        let mut sh = lock(&self.shared);
        if (!entries.is_empty() || hard_state.is_some())
            && sh.crash_per_mille > 0
            && sh.rng.gen_range(0..1000) < sh.crash_per_mille
        {
            return Err(StorageError::Backend(BackendFailure::new("persist", CRASH)));
        }
        if let Some(first) = entries.first() {
            let offset = self.disk.first_index()? - 1;
            let fresh: Vec<_> = entries
                .iter()
                .filter(|e| e.index > offset)
                .cloned()
                .collect();
            if let Some(f) = fresh.first() {
                match self.disk.term(f.index - 1) {
                    Ok(prev) => {
                        if let Err(v) = sh.inv.on_append(self.node, prev, &fresh) {
                            sh.fail(v);
                        }
                    }
                    Err(e) => sh.fail(format!(
                        "node {}: Ready appends at {} but the log ends at {offset}+: {e}",
                        self.node, first.index
                    )),
                }
            }
        }
        if let Some(hs) = hard_state {
            if let Err(v) = Invariants::on_hard_state(self.node, &self.disk.hard_state(), hs) {
                sh.fail(v);
            }
        }
        drop(sh);
        self.disk.append(entries)?;
        if let Some(hs) = hard_state {
            self.disk.set_hard_state(hs)?;
        }
        Ok(())
    }

    fn apply_snapshot(&mut self, snapshot: &Snapshot) -> StorageResult<()> {
        self.disk.apply_snapshot(snapshot)?;
        let mut sh = lock(&self.shared);
        sh.snapshots_installed += 1;
        if !snapshot.meta.conf.contains(self.node) {
            sh.snapshots_without_self += 1;
        }
        if sh.wedge_after_snapshot {
            sh.wedged.insert(self.node);
        }
        Ok(())
    }
}

/// Reads the commit index a node has published to its lease readers (its handle's status).
pub type PublishedCommit = Arc<OnceLock<Box<dyn Fn() -> Index + Send + Sync>>>;

/// Messages the driver sent, for the simulator to route.
///
/// It also checks that no message carries a commit index the sender has not yet published to
/// its lease readers: a follower told of a commit can apply the entry and answer its writer,
/// and a lease read on the leader after that answer must see the entry.
pub struct SimTransport {
    pub outbox: Arc<Mutex<Vec<Message>>>,
    /// Set once the node's handle exists.
    pub published: PublishedCommit,
    pub shared: Arc<Mutex<Shared>>,
}

impl Transport for SimTransport {
    /// The simulator decides deliveries and reports them itself (`Driver::report`), at
    /// simulated times.
    fn bind(&mut self, _: Reporter) {}

    fn send(&mut self, msgs: Vec<Message>) {
        if let Some(published) = self.published.get() {
            let seen = published();
            let ahead = msgs.iter().find_map(|m| match m.body {
                MessageBody::Append { commit, .. } | MessageBody::Heartbeat { commit, .. }
                    if commit > seen =>
                {
                    Some((m.to, commit))
                }
                _ => None,
            });
            if let Some((to, commit)) = ahead {
                let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
                s.violation.get_or_insert_with(|| {
                    format!(
                        "a message to node {to} carries commit {commit} while the sender's lease \
                         readers still see commit {seen}"
                    )
                });
            }
        }
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(msgs);
    }
}

/// The register, applied by the driver. Its output answers the proposer: `None` for an entry
/// that was not a client command (a member record) or a duplicate without effect.
///
/// Compaction keeps entries for catching up, as the server does (it keeps the last
/// `--snapshot-catchup-entries` after the snapshot point): each compaction records an image of
/// the state and trims the log only up to the *previous* image, so a follower one interval
/// behind is caught up from the log and only one further behind needs a snapshot.
pub struct SimSm {
    node: NodeId,
    pub kv: Arc<Mutex<KvStore>>,
    conf: ConfState,
    shared: SharedRef,
    /// The image taken at the last compaction: (index, configuration, state).
    image: Option<(Index, ConfState, Vec<u8>)>,
}

impl SimSm {
    pub fn new(node: NodeId, kv: Arc<Mutex<KvStore>>, conf: ConfState, shared: SharedRef) -> Self {
        SimSm {
            node,
            kv,
            conf,
            shared,
            image: None,
        }
    }
}

impl StateMachine<SimStorage> for SimSm {
    type Output = Option<KvOut>;

    fn apply(
        &mut self,
        _: &mut SimStorage,
        batch: ApplyBatch<'_>,
    ) -> Result<Vec<Self::Output>, StateMachineError> {
        let mut kv = self.kv.lock().unwrap_or_else(|p| p.into_inner());
        let mut sh = lock(&self.shared);
        let mut out = Vec::with_capacity(batch.commands.len());
        for c in &batch.commands {
            sh.applied.push((
                self.node,
                Entry {
                    term: c.term,
                    index: c.index,
                    payload: EntryPayload::Normal(c.data.to_vec()),
                },
            ));
            out.push(Command::decode(c.data).and_then(|cmd| {
                let o = kv.apply(&cmd)?;
                sh.effective.insert(cmd.req);
                Some(o)
            }));
        }
        for &(index, cc) in &batch.conf_changes {
            match cc {
                ConfChange::RemoveNode(x) => sh.removals.push((x, index)),
                ConfChange::AddVoter(x) | ConfChange::AddLearner(x) => {
                    sh.additions.push((x, index))
                }
            }
        }
        kv.applied = batch.applied;
        self.conf = batch.conf.clone();
        Ok(out)
    }

    fn restore(&mut self, _: &mut SimStorage, snap: &Snapshot) -> Result<(), StateMachineError> {
        *self.kv.lock().unwrap_or_else(|p| p.into_inner()) =
            KvStore::restore(&snap.data, snap.meta.index);
        self.conf = snap.meta.conf.clone();
        Ok(())
    }

    fn compact(
        &mut self,
        storage: &mut SimStorage,
        applied: Index,
    ) -> Result<(), StateMachineError> {
        let data = self.kv.lock().unwrap_or_else(|p| p.into_inner()).encode();
        let Some((index, conf, data)) = self.image.replace((applied, self.conf.clone(), data))
        else {
            return Ok(());
        };
        match storage.disk.compact(index, conf, data) {
            Ok(()) => {
                lock(&self.shared).compactions += 1;
                Ok(())
            }
            Err(StorageError::Compacted) => Ok(()),
            Err(e) => Err(StateMachineError::new(format!("compact at {index}: {e}"))),
        }
    }
}
