//! One simulated server (`SimNode`) and its machine clock (`NodeClock`), and how `Sim` boots,
//! crashes, restarts and compacts a node: only what a `Ready` asked to persist survives a crash.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use deimos_raft::lease::{LeaseConfig, LeaseTracker};
use deimos_raft::{
    ConfChange, Config, EntryPayload, HardState, LeaseEvent, LogStorage, ManualClock, MemStorage,
    NodeId, RawNode, Role, Term,
};
use rand::Rng;

use super::cluster::Sim;
use super::register::{Key, KvStore};

/// A node's local clock: piecewise linear in global time, rate within the drift bound, never
/// going backwards. It survives crashes (it is the machine's clock, not the process's).
pub struct NodeClock {
    anchor_global: u64,
    anchor_local: f64,
    rate: f64,
    /// Bumped on every rate change, so that tick events scheduled at the old rate are ignored.
    pub(super) gen: u64,
    /// Number of the next local tick.
    pub(super) next_tick: u64,
    /// The clock the node's harness (and the lease service, later) reads; set to local time
    /// before every input to the node.
    pub clock: ManualClock,
}

impl NodeClock {
    pub(super) fn new(rate: f64) -> Self {
        NodeClock {
            anchor_global: 0,
            anchor_local: 0.0,
            rate,
            gen: 0,
            next_tick: 1,
            clock: ManualClock::new(),
        }
    }

    /// Local time in microseconds at global time `t`.
    pub fn local(&self, t: u64) -> f64 {
        self.anchor_local + self.rate * (t - self.anchor_global) as f64
    }

    /// Earliest global time at which local time reaches `local`.
    pub(super) fn global_at(&self, local: f64) -> u64 {
        self.anchor_global + ((local - self.anchor_local) / self.rate).ceil().max(0.0) as u64
    }

    pub(super) fn set_rate(&mut self, now: u64, rate: f64) {
        self.anchor_local = self.local(now);
        self.anchor_global = now;
        self.rate = rate;
        self.gen += 1;
        // The tick already scheduled (at the old rate) is now void and has not fired: it is the
        // next one to schedule again.
        self.next_tick -= 1;
    }

    pub(super) fn sync(&self, now: u64) {
        self.clock
            .set(Duration::from_nanos((self.local(now) * 1_000.0) as u64));
    }
}

pub(super) struct PendingRead {
    pub(super) req: u64,
    pub(super) client: usize,
    pub(super) key: Key,
    pub(super) index: Option<u64>,
}

/// One simulated server: the Raft core plus what the server process would hold around it.
pub struct SimNode {
    pub id: NodeId,
    /// `None` while crashed.
    pub raw: Option<RawNode<MemStorage>>,
    /// What survived the crash (only meaningful while `raw` is `None`).
    pub(super) disk: MemStorage,
    /// The last hard state persisted, kept across crashes to check terms and votes.
    pub(super) disk_hs: HardState,
    pub sm: KvStore,
    pub clock: NodeClock,
    /// Local time at which this node became leader and has not yet held a usable lease.
    pub leader_since: Option<std::time::Duration>,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub(super) leader_checked_term: Term,
    /// A spare slot that has never been started (not a member yet).
    pub spare: bool,
    /// Removed from the configuration (committed): shut down for good.
    pub removed: bool,
    /// Client updates submitted here, by request id, awaiting their application here.
    pub(super) pending_updates: BTreeMap<u64, usize>,
    pub(super) pending_reads: Vec<PendingRead>,
    /// Recent lease facts from the core, stamped with local time (for traces and tests).
    pub lease_events: VecDeque<(Duration, LeaseEvent)>,
    /// The lease service, as the driver runs it, on this node's clock (lost on a crash).
    pub lease: Option<LeaseTracker<ManualClock>>,
}

impl SimNode {
    pub(super) fn up(&self) -> bool {
        self.raw.is_some()
    }
}

impl Sim {
    /// Boot (or reboot) node `i` from what its disk holds.
    pub(super) fn start_node(&mut self, i: usize) -> Result<(), String> {
        let id = i as NodeId + 1;
        let disk = std::mem::take(&mut self.nodes[i].disk);
        let snap = disk.snapshot().unwrap();
        let mut cfg = self.node_config(id);
        // The state machine restarts from the snapshot; say so, or (like a store that does not
        // track it) pass 0 and rely on the core to start after the snapshot. Both must work.
        cfg.applied = if self.rng.gen_bool(0.5) {
            snap.meta.index
        } else {
            0
        };
        let raw =
            RawNode::new(&cfg, disk).map_err(|e| format!("node {id} failed to start: {e}"))?;
        let lease = self.new_lease(&cfg, i)?;
        let n = &mut self.nodes[i];
        n.sm = if snap.meta.index > 0 {
            KvStore::restore(&snap.data, snap.meta.index)
        } else {
            KvStore::default()
        };
        n.raw = Some(raw);
        n.lease = lease;
        n.spare = false;
        n.role = Role::Follower;
        n.leader = None;
        n.term = n.disk_hs.term;
        let hs = self.nodes[i].disk_hs;
        self.log(|| {
            format!(
                "START node {id} (snapshot at {}, hs {hs:?})",
                snap.meta.index
            )
        });
        self.drive(i)
    }

    /// The lease service for node `i` (a fresh one per process start), if the run uses leases.
    fn new_lease(
        &self,
        raft: &Config,
        i: usize,
    ) -> Result<Option<LeaseTracker<ManualClock>>, String> {
        if self.cfg.lease_read_pct == 0 {
            return Ok(None);
        }
        let mut lc = LeaseConfig::from_raft(raft, Duration::from_micros(self.cfg.tick_us));
        if let Some(d) = self.cfg.lease_duration {
            lc = lc.with_lease_duration(d);
        }
        let clock = self.nodes[i].clock.clock.clone();
        if self.cfg.lease_unchecked {
            Ok(Some(LeaseTracker::new_unchecked(raft.id, lc, clock)))
        } else {
            LeaseTracker::new(raft.id, lc, raft, clock)
                .map(Some)
                .map_err(|e| format!("lease config rejected: {e}"))
        }
    }

    pub(super) fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let Some(raw) = n.raw.take() else { return };
        // Only what a Ready asked us to persist is in storage: the core's volatile state dies here.
        n.disk = raw.storage().clone();
        n.pending_updates.clear();
        n.pending_reads.clear();
        n.lease = None;
        n.role = Role::Follower;
        n.leader = None;
        self.stats.crashes += 1;
        let id = n.id;
        self.log(|| format!("CRASH node {id}"));
    }

    pub(super) fn compact(&mut self) -> Result<(), String> {
        let i = self.rng.gen_range(0..self.nodes.len());
        let n = &mut self.nodes[i];
        let Some(raw) = n.raw.as_mut() else {
            return Ok(());
        };
        let applied = n.sm.applied;
        if applied < raw.storage().first_index().unwrap() {
            return Ok(());
        }
        let conf = raw.status().conf;
        raw.storage_mut()
            .compact(applied, conf, n.sm.encode())
            .map_err(|e| format!("node {}: compact at applied {applied} failed: {e}", i + 1))?;
        self.stats.compactions += 1;
        self.log(|| format!("COMPACT node {} up to {applied}", i + 1));
        Ok(())
    }

    pub(super) fn restartable(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        !n.up() && !n.spare && !n.removed
    }
}

/// The disk of an initial member: the initial configuration as committed conf-change entries
/// (etcd's bootstrap), not only as snapshot metadata, so that a server added later, which starts
/// empty and may be sent the log from index 1 rather than a snapshot, learns the full membership.
pub(super) fn bootstrap(n: usize) -> MemStorage {
    let mut s = MemStorage::new(Default::default());
    let entries: Vec<deimos_raft::Entry> = (1..=n as u64)
        .map(|id| deimos_raft::Entry {
            term: 1,
            index: id,
            payload: EntryPayload::ConfChange(ConfChange::AddVoter(id)),
        })
        .collect();
    s.append(&entries).unwrap();
    s.set_hard_state(&HardState {
        term: 1,
        vote: None,
        commit: n as u64,
    })
    .unwrap();
    s
}
