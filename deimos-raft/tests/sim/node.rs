//! One simulated server (`SimNode`: the production `Driver` over the seams of `seams.rs`) and
//! its machine clock (`NodeClock`), and how `Sim` boots, crashes and restarts a node: only what
//! the driver persisted survives a crash. Compaction is the driver's own (`snapshot_count`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deimos_raft::driver::{Driver, DriverConfig, DriverError, Handle};
use deimos_raft::lease::LeaseConfig;
use deimos_raft::{
    ConfChange, EntryPayload, HardState, Index, LogStorage, ManualClock, MemStorage, Message,
    NodeId, Role, Term,
};
use rand::Rng;
use tokio::sync::oneshot;

use super::cluster::Sim;
use super::register::{Key, KvOut, KvStore};
use super::seams::{SimSm, SimStorage, SimTransport};

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
    /// The index the read must see applied, once known.
    pub(super) index: Option<u64>,
    /// The driver's answer to a ReadIndex request, until it comes.
    pub(super) reply: Option<oneshot::Receiver<Result<Index, DriverError>>>,
}

/// A client update the node accepted, answered by its driver when it applies it there.
pub(super) struct PendingUpdate {
    pub(super) client: usize,
    pub(super) reply: oneshot::Receiver<Result<Option<KvOut>, DriverError>>,
}

/// A membership change proposed on this node, answered once applied there.
pub(super) struct PendingConf {
    pub(super) cc: ConfChange,
    pub(super) reply: oneshot::Receiver<Result<(), DriverError>>,
}

pub type SimDriver = Driver<SimStorage, SimTransport, SimSm, ManualClock>;
pub type SimHandle = Handle<Option<KvOut>, ManualClock>;

/// One simulated server: the production driver (and its handle) over simulated seams.
pub struct SimNode {
    pub id: NodeId,
    /// `None` while crashed.
    pub driver: Option<SimDriver>,
    pub handle: Option<SimHandle>,
    /// What survived the crash (only meaningful while `driver` is `None`).
    pub(super) disk: MemStorage,
    /// The state machine, shared with the driver's `SimSm` (rebuilt from the disk on restart).
    pub sm: Arc<Mutex<KvStore>>,
    /// Messages the driver sent and the simulator has not routed yet.
    pub(super) outbox: Arc<Mutex<Vec<Message>>>,
    pub clock: NodeClock,
    /// Local time at which this node became leader and has not yet held a usable lease.
    pub leader_since: Option<std::time::Duration>,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub(super) leader_checked_term: Term,
    /// A slot that is not a member and not running: never started, or removed and wiped.
    pub spare: bool,
    /// Removed from the configuration (committed): shut down until re-added as a new member.
    pub removed: bool,
    /// Log index of the change that added this incarnation (0: a founding member), and of the
    /// change that removed the last one: older changes that a lagging node applies late are
    /// about an earlier incarnation.
    pub(super) member_since: Index,
    pub(super) removed_at: Index,
    pub(super) pending_updates: BTreeMap<u64, PendingUpdate>,
    pub(super) pending_reads: Vec<PendingRead>,
    pub(super) pending_conf: Vec<PendingConf>,
}

impl SimNode {
    pub(super) fn up(&self) -> bool {
        self.driver.is_some()
    }

    /// The applied index the driver published (what the server's reads wait for).
    pub fn applied(&self) -> Index {
        self.sm.lock().unwrap_or_else(|p| p.into_inner()).applied
    }

    pub fn status(&self) -> Option<deimos_raft::Status> {
        self.driver.as_ref().map(|d| d.status())
    }

    /// The durable log: the live disk, or what a crash left.
    pub fn log(&self) -> &MemStorage {
        self.driver
            .as_ref()
            .map_or(&self.disk, |d| &d.storage().disk)
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
        let mut dcfg = DriverConfig::new(cfg);
        dcfg.tick_interval = Duration::from_micros(self.cfg.tick_us);
        dcfg.snapshot_count = self
            .rng
            .gen_range(self.cfg.snapshot_count.0..=self.cfg.snapshot_count.1);
        let mut lease = LeaseConfig::from_raft(&dcfg.raft, dcfg.tick_interval);
        if let Some(d) = self.cfg.lease_duration {
            lease = lease.with_lease_duration(d);
        }
        dcfg.lease = Some(lease);
        // Without lease reads nothing trusts the lease, and some profiles' timings would not
        // pass its check; the driver still runs it (renewals, revocations) as in production.
        dcfg.unsafe_skip_lease_validation =
            self.cfg.lease_unchecked || self.cfg.lease_read_pct == 0;
        let kv = Arc::new(Mutex::new(if snap.meta.index > 0 {
            KvStore::restore(&snap.data, snap.meta.index)
        } else {
            KvStore::default()
        }));
        let storage = SimStorage::new(disk, id, self.shared.clone());
        let sm = SimSm::new(id, kv.clone(), snap.meta.conf.clone(), self.shared.clone());
        let outbox = Arc::new(Mutex::new(Vec::new()));
        let clock = self.nodes[i].clock.clock.clone();
        self.nodes[i].clock.sync(self.now);
        let published: super::seams::PublishedCommit = Arc::default();
        let transport = SimTransport {
            outbox: outbox.clone(),
            published: published.clone(),
            shared: self.shared.clone(),
        };
        let (driver, handle) = Driver::new(dcfg, storage, transport, sm, clock)
            .map_err(|e| format!("node {id} failed to start: {e}"))?;
        let reader = handle.clone();
        let _ = published.set(Box::new(move || reader.status().commit));
        let n = &mut self.nodes[i];
        n.sm = kv;
        n.outbox = outbox;
        n.driver = Some(driver);
        n.handle = Some(handle);
        n.spare = false;
        n.role = Role::Follower;
        n.leader = None;
        n.leader_since = None;
        n.term = n.log().hard_state().term;
        let hs = n.log().hard_state();
        self.log(|| {
            format!(
                "START node {id} (snapshot at {}, hs {hs:?})",
                snap.meta.index
            )
        });
        self.feed(i, |_| {})
    }

    pub(super) fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let Some(driver) = n.driver.take() else {
            return;
        };
        // Only what the driver persisted is on the disk: the core's volatile state, the
        // unpersisted tail and the state machine's memory die here.
        n.disk = driver.storage().disk.clone();
        n.handle = None;
        n.pending_updates.clear();
        n.pending_reads.clear();
        n.pending_conf.clear();
        n.outbox.lock().unwrap_or_else(|p| p.into_inner()).clear();
        n.role = Role::Follower;
        n.leader = None;
        self.stats.crashes += 1;
        // A leader still waiting for its lease may have just lost the quorum it needs: how long
        // it waits now measures the crash, not the lease, so its wait is not timed.
        let id = n.id;
        for n in &mut self.nodes {
            n.leader_since = None;
        }
        self.shared().wedged.remove(&id);
        self.log(|| format!("CRASH node {id}"));
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
