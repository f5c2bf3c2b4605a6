//! The deterministic cluster simulator: N `RawNode<MemStorage>`s, a replicated register per node,
//! a faulty network, drifting per-node clocks, crash-restart, and clients whose history is checked
//! for linearizability at the end.
//!
//! Everything runs on one thread from one event queue ordered by (simulated global time, sequence
//! number), and every random choice comes from one `StdRng` seeded per run, so a seed replays the
//! exact same run. Time is in microseconds of global simulated time; each node sees its own local
//! time through its `NodeClock`, which is what it ticks on and what a lease must be judged by.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashSet, VecDeque};
use std::fmt;
use std::time::Duration;

use deimos_raft::lease::{LeaseConfig, LeaseTracker};
use deimos_raft::{
    Clock, ConfChange, Config, EntryPayload, HardState, LeaseEvent, LogStorage, ManualClock,
    MemStorage, Message, MessageBody, NodeId, RaftError, RawNode, Ready, Role, Term,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::invariants::Invariants;
use super::lincheck::{self, Operation, Outcome};
use super::network::{NetConfig, Network};
use super::register::{ClientOp, Command, Key, KvOut, KvStore, Value};

/// One millisecond in simulated microseconds.
pub const MS: u64 = 1_000;

/// Relative weights of the faults injected during the chaos phase. Zero disables a kind.
#[derive(Debug, Clone, Copy)]
pub struct FaultWeights {
    pub partition: u32,
    pub isolate_leader: u32,
    pub heal: u32,
    pub crash: u32,
    pub weather: u32,
    pub clock_rate: u32,
    pub transfer_leader: u32,
    /// Add a spare as learner, promote a learner, or remove a member (one at a time).
    pub membership: u32,
    /// Crash the current leader (the most disruptive crash).
    pub crash_leader: u32,
    /// Make a random node campaign at once (`RawNode::campaign`), skipping pre-vote and timers.
    pub campaign: u32,
}

impl Default for FaultWeights {
    fn default() -> Self {
        FaultWeights {
            partition: 3,
            isolate_leader: 3,
            heal: 4,
            crash: 3,
            weather: 3,
            clock_rate: 1,
            transfer_leader: 1,
            membership: 2,
            crash_leader: 2,
            campaign: 1,
        }
    }
}

/// Everything that shapes one run. `SimConfig::new(seed, nodes)` gives the defaults the seed sweep
/// uses; tests tweak fields from there.
#[derive(Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    /// Length of the phase with faults; afterwards the network heals and every node restarts.
    pub chaos_us: u64,
    /// Local time per tick.
    pub tick_us: u64,
    /// Each node's clock runs at a rate in `[1 - drift, 1 + drift]` of global time.
    pub drift: f64,
    /// Extra node slots outside the initial configuration, which membership faults may add.
    pub spares: usize,
    pub clients: usize,
    pub keys: Key,
    /// Percentage of client operations that are `LocalRead`s (not linearizable; 0 in the sweep,
    /// used to show that the checker catches stale reads).
    pub local_read_pct: u32,
    /// Percentage of client operations that are `LeaseRead`s. Non-zero runs the lease service
    /// (`LeaseTracker`) on every node, on the node's own drifting clock.
    pub lease_read_pct: u32,
    /// Override the lease duration (default: the lease config derived from the Raft timing).
    pub lease_duration: Option<Duration>,
    /// Run the lease without its safety validation (tests that show a broken lease is caught).
    pub lease_unchecked: bool,
    /// A client that sees no answer within this (global) time records the op as indeterminate.
    pub client_timeout_us: u64,
    /// Client think time between operations.
    pub think_us: (u64, u64),
    /// Mean time between faults in the chaos phase (0: no faults).
    pub fault_interval_us: u64,
    pub faults: FaultWeights,
    /// Mean time between log compactions on a random node (0: never compact).
    pub compact_interval_us: u64,
    /// How long a crashed node stays down (uniform range) unless the heal comes first.
    pub downtime_us: (u64, u64),
    /// After the heal: bound for a stable leader, then for the probe proposals to commit everywhere.
    pub liveness_leader_us: u64,
    pub liveness_commit_us: u64,
    /// How long the leader must have been stable before the probes are proposed.
    pub settle_us: u64,
    pub probes: usize,
    /// Per-mille chance, during the chaos phase of a run with faults, that a node crashes between sending a
    /// Ready's early messages (`MessageBody::may_precede_persist`) and persisting its entries:
    /// the window the driver opens by sending appends before its own fsync.
    pub mid_ready_crash_per_mille: u32,
    /// Send *every* message before persisting, acknowledgements included. Unsafe: only for
    /// the test that shows a mid-Ready crash then loses committed entries and is caught.
    pub send_all_before_persist: bool,
    /// Core settings under test (the rest of `Config` keeps its defaults).
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub max_size_per_msg: u64,
    pub max_inflight_msgs: usize,
    /// Applied to each node's `Config` last, e.g. for unsafe knobs.
    pub configure: fn(&mut Config),
    /// How to rerun this configuration, for failure reports.
    pub rerun: &'static str,
    /// Keep the last `trace` events for the failure report (0: no tracing, which is faster).
    pub trace: usize,
}

impl SimConfig {
    pub fn new(seed: u64, nodes: usize) -> Self {
        SimConfig {
            seed,
            nodes,
            chaos_us: 30_000 * MS,
            tick_us: 10 * MS,
            drift: 0.05,
            spares: 0,
            clients: 4,
            keys: 3,
            local_read_pct: 0,
            lease_read_pct: 0,
            lease_duration: None,
            lease_unchecked: false,
            client_timeout_us: 300 * MS,
            think_us: (0, 20 * MS),
            fault_interval_us: 150 * MS,
            faults: FaultWeights::default(),
            compact_interval_us: 200 * MS,
            downtime_us: (20 * MS, 800 * MS),
            liveness_leader_us: 3_000 * MS,
            liveness_commit_us: 1_000 * MS,
            settle_us: 300 * MS,
            probes: 3,
            mid_ready_crash_per_mille: 5,
            send_all_before_persist: false,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            configure: |_| {},
            rerun: "cargo test -p deimos-raft --release --test simulation",
            trace: 0,
        }
    }

    /// The configuration of a seed in the sweep: even seeds run 3 nodes, odd seeds 5, and seeds
    /// rotate through fault profiles so the sweep covers more than one kind of trouble:
    /// - 0: the defaults (pre-vote, check-quorum, mixed faults, membership changes) with a quarter
    ///   of the reads served by the leader lease;
    /// - 1: crash-heavy, frequent faults, one entry per append and no pipelining, which makes
    ///   followers hold partial suffixes (the shape of Raft's Figure 8);
    /// - 2: pre-vote and check-quorum off (more elections, term churn), small messages.
    pub fn for_seed(seed: u64) -> Self {
        let mut c = SimConfig::new(seed, if seed.is_multiple_of(2) { 3 } else { 5 });
        match (seed / 2) % 3 {
            0 => {
                c.spares = 2;
                c.lease_read_pct = 25;
            }
            1 => c.crash_heavy(),
            _ => {
                c.pre_vote = false;
                c.check_quorum = false;
                c.max_size_per_msg = 64;
                c.max_inflight_msgs = 4;
                c.spares = 1;
            }
        }
        c
    }

    /// Frequent faults dominated by crashes, one entry per append, one append in flight.
    pub fn crash_heavy(&mut self) {
        self.max_size_per_msg = 1;
        self.max_inflight_msgs = 1;
        self.pre_vote = false;
        self.check_quorum = false;
        self.fault_interval_us = 15 * MS;
        self.faults.crash = 12;
        self.faults.transfer_leader = 0;
        self.downtime_us = (5 * MS, 100 * MS);
    }
}

/// Why a run failed, with enough context to debug it; rerun with `DEIMOS_SIM_SEED=<seed>`.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub nodes: usize,
    pub at_us: u64,
    pub violation: String,
    pub trace: Vec<String>,
    pub rerun: &'static str,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} ({} nodes) failed at t={}.{:03}ms: {}",
            self.seed,
            self.nodes,
            self.at_us / MS,
            self.at_us % MS,
            self.violation
        )?;
        if !self.trace.is_empty() {
            writeln!(f, "last {} events:", self.trace.len())?;
            for line in &self.trace {
                writeln!(f, "  {line}")?;
            }
        }
        write!(f, "rerun: DEIMOS_SIM_SEED={} {}", self.seed, self.rerun)
    }
}

/// Counters that show a run (or a sweep) exercised what it claims to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub events: u64,
    pub messages: u64,
    pub leaders: u64,
    pub crashes: u64,
    pub compactions: u64,
    pub snapshots_installed: u64,
    pub ops_ok: u64,
    pub ops_indeterminate: u64,
    pub reads_ok: u64,
    /// Operations whose client gave up (a subset of the indeterminate ones; the rest were still
    /// in flight when the run ended).
    pub timeouts: u64,
    /// Membership changes the leader accepted.
    pub conf_changes: u64,
    /// Reads answered under a valid leader lease (no ReadIndex round).
    pub lease_reads: u64,
    /// `LeaseRead`s submitted to the node that was leader at the time, and how many of those
    /// the lease answered (the rest fell back to ReadIndex).
    pub lease_reads_on_leader: u64,
    pub lease_hits_on_leader: u64,
    /// Leaderships that reached a usable lease, and the longest wait for one, measured on the
    /// new leader's clock from becoming leader.
    pub leases_regained: u64,
    pub max_lease_regain_us: u64,
    /// Crashes between sending a Ready's early messages and persisting it (also in `crashes`).
    pub mid_ready_crashes: u64,
    pub sim_us: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.events += o.events;
        self.messages += o.messages;
        self.leaders += o.leaders;
        self.crashes += o.crashes;
        self.mid_ready_crashes += o.mid_ready_crashes;
        self.compactions += o.compactions;
        self.snapshots_installed += o.snapshots_installed;
        self.ops_ok += o.ops_ok;
        self.ops_indeterminate += o.ops_indeterminate;
        self.reads_ok += o.reads_ok;
        self.timeouts += o.timeouts;
        self.conf_changes += o.conf_changes;
        self.lease_reads += o.lease_reads;
        self.lease_reads_on_leader += o.lease_reads_on_leader;
        self.lease_hits_on_leader += o.lease_hits_on_leader;
        self.leases_regained += o.leases_regained;
        self.max_lease_regain_us = self.max_lease_regain_us.max(o.max_lease_regain_us);
        self.sim_us += o.sim_us;
    }
}

/// Run one seed to completion: chaos, heal, liveness, linearizability.
pub fn run(cfg: SimConfig) -> Result<Stats, Box<Failure>> {
    let mut sim = Sim::new(cfg);
    match sim.run_phases() {
        Ok(()) => Ok(sim.stats),
        Err(violation) => Err(Box::new(Failure {
            seed: sim.cfg.seed,
            nodes: sim.cfg.nodes,
            at_us: sim.now,
            violation,
            trace: sim.trace.map(Vec::from).unwrap_or_default(),
            rerun: sim.cfg.rerun,
        })),
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Event {
    Tick { node: usize, gen: u64 },
    Deliver(Message),
    ClientWake(usize),
    ClientTimeout { client: usize, req: u64 },
    Fault,
    Restart(usize),
    Compact,
}

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    /// Reversed, so that `BinaryHeap` pops the earliest event (ties in scheduling order).
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// A node's local clock: piecewise linear in global time, rate within the drift bound, never
/// going backwards. It survives crashes (it is the machine's clock, not the process's).
pub struct NodeClock {
    anchor_global: u64,
    anchor_local: f64,
    rate: f64,
    /// Bumped on every rate change, so that tick events scheduled at the old rate are ignored.
    gen: u64,
    /// Number of the next local tick.
    next_tick: u64,
    /// The clock the node's harness (and the lease service, later) reads; set to local time
    /// before every input to the node.
    pub clock: ManualClock,
}

impl NodeClock {
    fn new(rate: f64) -> Self {
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
    fn global_at(&self, local: f64) -> u64 {
        self.anchor_global + ((local - self.anchor_local) / self.rate).ceil().max(0.0) as u64
    }

    fn set_rate(&mut self, now: u64, rate: f64) {
        self.anchor_local = self.local(now);
        self.anchor_global = now;
        self.rate = rate;
        self.gen += 1;
        // The tick already scheduled (at the old rate) is now void and has not fired: it is the
        // next one to schedule again.
        self.next_tick -= 1;
    }

    fn sync(&self, now: u64) {
        self.clock
            .set(Duration::from_nanos((self.local(now) * 1_000.0) as u64));
    }
}

struct PendingRead {
    req: u64,
    client: usize,
    key: Key,
    index: Option<u64>,
}

/// One simulated server: the Raft core plus what the server process would hold around it.
pub struct SimNode {
    pub id: NodeId,
    /// `None` while crashed.
    pub raw: Option<RawNode<MemStorage>>,
    /// What survived the crash (only meaningful while `raw` is `None`).
    disk: MemStorage,
    /// The last hard state persisted, kept across crashes to check terms and votes.
    disk_hs: HardState,
    pub sm: KvStore,
    pub clock: NodeClock,
    /// Local time at which this node became leader and has not yet held a usable lease.
    pub leader_since: Option<std::time::Duration>,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    leader_checked_term: Term,
    /// A spare slot that has never been started (not a member yet).
    pub spare: bool,
    /// Removed from the configuration (committed): shut down for good.
    pub removed: bool,
    /// Client updates submitted here, by request id, awaiting their application here.
    pending_updates: BTreeMap<u64, usize>,
    pending_reads: Vec<PendingRead>,
    /// Recent lease facts from the core, stamped with local time (for traces and tests).
    pub lease_events: VecDeque<(Duration, LeaseEvent)>,
    /// The lease service, as the driver runs it, on this node's clock (lost on a crash).
    pub lease: Option<LeaseTracker<ManualClock>>,
}

impl SimNode {
    fn up(&self) -> bool {
        self.raw.is_some()
    }
}

struct Client {
    id: u64,
    pending: Option<(usize, usize, u64)>, // (history index, node, req)
    hint: Option<usize>,
    last_seen: BTreeMap<Key, Value>,
    /// Probe clients do not issue operations on their own.
    auto: bool,
}

/// One client operation as observed by its client (global times).
#[derive(Debug, Clone)]
pub struct HistEntry {
    pub client: u64,
    pub req: u64,
    pub node: usize,
    pub invoke: u64,
    pub complete: Option<u64>,
    pub op: ClientOp,
    pub output: Option<KvOut>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Chaos,
    Healed,
}

pub struct Sim {
    pub cfg: SimConfig,
    pub now: u64,
    rng: StdRng,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    pub nodes: Vec<SimNode>,
    pub net: Network,
    inv: Invariants,
    clients: Vec<Client>,
    pub history: Vec<HistEntry>,
    /// Requests whose command took effect on some replica.
    effective: HashSet<u64>,
    next_req: u64,
    phase: Phase,
    trace: Option<VecDeque<String>>,
    pub stats: Stats,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let n = cfg.nodes;
        let nodes = (0..n + cfg.spares)
            .map(|i| {
                let spare = i >= n;
                let rate = 1.0 + rng.gen_range(-cfg.drift..=cfg.drift);
                SimNode {
                    id: i as u64 + 1,
                    raw: None,
                    // A spare joins empty and learns the configuration from the leader.
                    disk: if spare {
                        MemStorage::new(Default::default())
                    } else {
                        bootstrap(n)
                    },
                    disk_hs: HardState::default(),
                    sm: KvStore::default(),
                    clock: NodeClock::new(rate),
                    leader_since: None,
                    role: Role::Follower,
                    term: 0,
                    leader: None,
                    leader_checked_term: 0,
                    spare,
                    removed: false,
                    pending_updates: BTreeMap::new(),
                    pending_reads: Vec::new(),
                    lease_events: VecDeque::new(),
                    lease: None,
                }
            })
            .collect();
        let clients = (0..cfg.clients)
            .map(|c| Client {
                id: c as u64 + 1,
                pending: None,
                hint: None,
                last_seen: BTreeMap::new(),
                auto: true,
            })
            .collect();
        let trace = (cfg.trace > 0).then(VecDeque::new);
        Sim {
            now: 0,
            rng,
            queue: BinaryHeap::new(),
            seq: 0,
            nodes,
            net: Network::new(n + cfg.spares),
            inv: Invariants::default(),
            clients,
            history: Vec::new(),
            effective: HashSet::new(),
            next_req: 1,
            phase: Phase::Chaos,
            trace,
            stats: Stats::default(),
            cfg,
        }
    }

    fn schedule(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn log(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            if t.len() == self.cfg.trace {
                t.pop_front();
            }
            let now = self.now;
            t.push_back(format!("{:>6}.{:03}ms {}", now / MS, now % MS, f()));
        }
    }

    fn exp_delay(&mut self, mean: u64) -> u64 {
        let u: f64 = self.rng.gen_range(f64::EPSILON..1.0);
        (-(u.ln()) * mean as f64) as u64 + 1
    }

    fn node_config(&mut self, id: NodeId) -> Config {
        let mut c = Config::new(id);
        c.election_tick = 10;
        c.heartbeat_tick = 1;
        c.pre_vote = self.cfg.pre_vote;
        c.check_quorum = self.cfg.check_quorum;
        c.max_size_per_msg = self.cfg.max_size_per_msg;
        c.max_inflight_msgs = self.cfg.max_inflight_msgs;
        c.forward_proposals = true;
        c.seed = self.rng.gen();
        (self.cfg.configure)(&mut c);
        c
    }

    // -- phases -----------------------------------------------------------------------------------

    fn run_phases(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].spare {
                self.start_node(i)?;
            }
            self.schedule_tick(i);
        }
        for c in 0..self.clients.len() {
            let d = self.rng.gen_range(0..20 * MS);
            self.schedule(d, Event::ClientWake(c));
        }
        if self.cfg.fault_interval_us > 0 {
            let d = self.exp_delay(self.cfg.fault_interval_us);
            self.schedule(d, Event::Fault);
        }
        if self.cfg.compact_interval_us > 0 {
            let d = self.exp_delay(self.cfg.compact_interval_us);
            self.schedule(d, Event::Compact);
        }

        // Chaos.
        let end = self.cfg.chaos_us;
        while self.queue.peek().is_some_and(|s| s.at <= end) {
            self.step()?;
        }
        self.now = end;

        // Heal: network whole and calm, every node up; then demand progress within bounds.
        self.phase = Phase::Healed;
        self.net.heal();
        self.net.cfg = NetConfig::calm();
        for i in 0..self.nodes.len() {
            if self.restartable(i) {
                self.start_node(i)?;
            }
        }
        self.log(|| "HEAL: network healed, all nodes up".into());
        let healed = self.now;

        // A stable leader: every node up and following it in its term, continuously for
        // `settle_us`, so that leftovers of the faults (a leader transfer whose TimeoutNow is
        // still in flight, a delayed vote) have drained before the probes are proposed.
        let deadline = healed + self.cfg.liveness_leader_us;
        let mut since: Option<(usize, Term, u64)> = None;
        let leader = loop {
            let cur = self.stable_leader().map(|l| (l, self.nodes[l].term));
            since = match (since, cur) {
                (Some((l, t, at)), Some((l2, t2))) if (l, t) == (l2, t2) => Some((l, t, at)),
                (_, Some((l, t))) => Some((l, t, self.now)),
                (_, None) => None,
            };
            if let Some((l, _, at)) = since {
                if self.now >= at + self.cfg.settle_us {
                    break l;
                }
            }
            if self.now >= deadline {
                return Err(format!(
                    "liveness: no stable leader {}ms after healing (roles {:?})",
                    self.cfg.liveness_leader_us / MS,
                    self.nodes
                        .iter()
                        .map(|n| (n.id, n.role, n.term, n.leader))
                        .collect::<Vec<_>>()
                ));
            }
            self.step()?;
        };
        let term = self.nodes[leader].term;
        self.log(|| format!("LIVENESS: stable leader {} at term {term}", leader + 1));

        // Probes: proposals made to the stable leader after the heal must all commit and be applied
        // on every node. A refusal (e.g. a leader transfer still in flight) is not a commit, so
        // refused probes are retried on whoever is the stable leader then.
        let first_probe = self.clients.len();
        for k in 0..self.cfg.probes {
            self.clients.push(Client {
                id: 1_000 + k as u64,
                pending: None,
                hint: None,
                last_seen: BTreeMap::new(),
                auto: false,
            });
        }
        let mut probes: Vec<Option<usize>> = vec![None; self.cfg.probes];
        let mut last_refusal = String::new();
        let deadline = self.now + self.cfg.liveness_commit_us;
        loop {
            if let Some(l) = self.stable_leader() {
                for (k, slot) in probes.iter_mut().enumerate().filter(|(_, p)| p.is_none()) {
                    let op = ClientOp::Write {
                        key: k as u64 % self.cfg.keys,
                        value: 1_000_000 + k as u64,
                    };
                    match self.submit(first_probe + k, l, op) {
                        Ok(h) => *slot = Some(h),
                        Err(e) => last_refusal = format!("leader {} refused a probe: {e}", l + 1),
                    }
                }
                self.drive(l)?;
            }
            let done = probes
                .iter()
                .all(|p| p.is_some_and(|h| self.history[h].complete.is_some()));
            if done {
                let members = self.members(leader);
                let target = members
                    .iter()
                    .map(|&m| self.nodes[m].sm.applied)
                    .max()
                    .unwrap();
                if members.iter().all(|&m| self.nodes[m].sm.applied >= target) {
                    break;
                }
            }
            if self.now >= deadline {
                return Err(format!(
                    "liveness: probes to the stable leader {} not all committed and applied everywhere \
                     within {}ms (probes done: {:?}; applied {:?}; {last_refusal})",
                    leader + 1,
                    self.cfg.liveness_commit_us / MS,
                    probes.iter().map(|p| p.map(|h| self.history[h].complete.is_some())).collect::<Vec<_>>(),
                    self.nodes.iter().map(|n| n.sm.applied).collect::<Vec<_>>()
                ));
            }
            if self.queue.is_empty() {
                return Err("simulation ran out of events".into());
            }
            self.step()?;
        }

        // End of run cross-checks.
        let logs: Vec<(NodeId, &MemStorage)> = self
            .nodes
            .iter()
            .filter(|n| !n.spare)
            .map(|n| (n.id, n.raw.as_ref().map_or(&n.disk, |r| r.storage())))
            .collect();
        Invariants::check_logs_match(&logs)?;
        // Replicas that applied the same prefix hold the same state (catches snapshots whose data
        // does not match their index, and restore bugs, which per-entry checks cannot see).
        let members = self.members(leader);
        for &m in &members {
            let (a, b) = (&self.nodes[m].sm, &self.nodes[members[0]].sm);
            if a.applied == b.applied && a != b {
                return Err(format!(
                    "replicas {} and {} applied up to {} but differ: {a:?} vs {b:?}",
                    m + 1,
                    members[0] + 1,
                    a.applied
                ));
            }
        }
        self.check_linearizable()?;
        self.stats.sim_us = self.now;
        Ok(())
    }

    /// A leader every node agrees on, in the same term, with all nodes up.
    fn stable_leader(&self) -> Option<usize> {
        let l = self
            .nodes
            .iter()
            .position(|n| n.up() && n.role == Role::Leader)?;
        let (term, id) = (self.nodes[l].term, self.nodes[l].id);
        let conf = self.nodes[l].raw.as_ref().unwrap().status().conf;
        let stable = conf
            .all()
            .map(|m| &self.nodes[m as usize - 1])
            .all(|n| n.up() && n.term == term && n.leader == Some(id));
        stable.then_some(l)
    }

    /// Members of the stable leader's configuration (the nodes liveness is demanded of).
    fn members(&self, leader: usize) -> Vec<usize> {
        let conf = self.nodes[leader].raw.as_ref().unwrap().status().conf;
        conf.all().map(|m| m as usize - 1).collect()
    }

    fn restartable(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        !n.up() && !n.spare && !n.removed
    }

    fn check_linearizable(&mut self) -> Result<(), String> {
        let mut ops = Vec::with_capacity(self.history.len());
        for h in &self.history {
            match (h.complete, &h.output) {
                (Some(t), Some(out)) => {
                    ops.push(Operation::completed(
                        h.client,
                        h.invoke,
                        t,
                        h.op.spec(),
                        out.clone(),
                    ));
                    self.stats.ops_ok += 1;
                    if !h.op.is_update() {
                        self.stats.reads_ok += 1;
                    }
                }
                _ => {
                    self.stats.ops_indeterminate += 1;
                    // An update that no replica ever applied (the run is over, so it never will)
                    // did not take effect; telling the checker so keeps its search small.
                    if h.op.is_update() && self.effective.contains(&h.req) {
                        ops.push(Operation::indeterminate(h.client, h.invoke, h.op.spec()));
                    }
                }
            }
        }
        match lincheck::check_with_budget(&lincheck::KvModel::new(), &ops, 20_000_000) {
            Outcome::Linearizable => Ok(()),
            Outcome::NotLinearizable(v) => Err(format!("linearizability: {v}")),
            Outcome::Unknown { partition } => Err(format!(
                "linearizability: search budget exhausted on {partition}"
            )),
        }
    }

    // -- the event loop ---------------------------------------------------------------------------

    fn step(&mut self) -> Result<(), String> {
        let Some(s) = self.queue.pop() else {
            return Ok(());
        };
        debug_assert!(s.at >= self.now);
        self.now = s.at;
        self.stats.events += 1;
        match s.ev {
            Event::Tick { node, gen } => {
                if gen != self.nodes[node].clock.gen {
                    return Ok(());
                }
                self.schedule_tick(node);
                let n = &mut self.nodes[node];
                if let Some(raw) = n.raw.as_mut() {
                    n.clock.sync(self.now);
                    raw.tick();
                    if let Some(lease) = n.lease.as_mut() {
                        lease.refresh();
                    }
                    self.drive(node)?;
                }
            }
            Event::Deliver(m) => {
                let (from, to) = (m.from as usize - 1, m.to as usize - 1);
                if !self.net.connected(from, to) || !self.nodes[to].up() {
                    return Ok(());
                }
                self.log(|| format!("recv {}", brief(&m)));
                self.nodes[to].clock.sync(self.now);
                let r = self.nodes[to].raw.as_mut().unwrap().step(m);
                if let Err(e) = r {
                    self.log(|| format!("  step error on {}: {e}", to + 1));
                }
                self.drive(to)?;
            }
            Event::ClientWake(c) => self.client_wake(c)?,
            Event::ClientTimeout { client, req } => self.client_timeout(client, req),
            Event::Fault => {
                if self.phase == Phase::Chaos {
                    self.fault()?;
                    let d = self.exp_delay(self.cfg.fault_interval_us);
                    self.schedule(self.now + d, Event::Fault);
                }
            }
            Event::Restart(i) => {
                if self.restartable(i) {
                    self.start_node(i)?;
                }
            }
            Event::Compact => {
                self.compact()?;
                let d = self.exp_delay(self.cfg.compact_interval_us);
                self.schedule(self.now + d, Event::Compact);
            }
        }
        Ok(())
    }

    fn schedule_tick(&mut self, i: usize) {
        let c = &mut self.nodes[i].clock;
        let mut at = c.global_at((c.next_tick * self.cfg.tick_us) as f64);
        // After a rate change the next boundary may already be behind us.
        while at <= self.now && self.now > 0 {
            c.next_tick += 1;
            at = c.global_at((c.next_tick * self.cfg.tick_us) as f64);
        }
        c.next_tick += 1;
        let gen = c.gen;
        self.schedule(at, Event::Tick { node: i, gen });
    }

    /// Handle every `Ready` the node has, in the contract's order, checking invariants as we go.
    pub fn drive(&mut self, i: usize) -> Result<(), String> {
        // As the driver does after every input: renew the lease early when it is due.
        let n = &mut self.nodes[i];
        if let (Some(raw), Some(lease)) = (n.raw.as_mut(), n.lease.as_ref()) {
            if lease.renewal_due() {
                raw.broadcast_heartbeat();
            }
        }
        for _ in 0..1_000 {
            let Some(raw) = self.nodes[i].raw.as_mut() else {
                return Ok(());
            };
            if !raw.has_ready() {
                return Ok(());
            }
            let rd = raw.ready();
            self.handle_ready(i, rd)?;
            // The node may have shut itself down (it applied its own removal).
            let Some(raw) = self.nodes[i].raw.as_mut() else {
                return Ok(());
            };
            raw.advance();
            self.after_advance(i)?;
        }
        Err(format!(
            "node {} keeps producing Ready without input",
            i + 1
        ))
    }

    fn handle_ready(&mut self, i: usize, rd: Ready) -> Result<(), String> {
        let id = i as NodeId + 1;
        // 0. As the driver does: a leader's appends and heartbeats leave before its own fsync.
        let send_all = self.cfg.send_all_before_persist;
        let (early, late): (Vec<_>, Vec<_>) = rd
            .messages
            .into_iter()
            .partition(|m| send_all || m.body.may_precede_persist());
        let mid_ready_crash = !early.is_empty()
            && !rd.entries.is_empty()
            && self.phase == Phase::Chaos
            && self.cfg.fault_interval_us > 0
            && self.rng.gen_range(0..1000) < self.cfg.mid_ready_crash_per_mille;
        for m in early {
            self.send(m);
        }
        if mid_ready_crash {
            // The process dies before the fsync: nothing of this Ready reaches the disk.
            self.stats.mid_ready_crashes += 1;
            self.log(|| format!("node {id} crashes before persisting its Ready"));
            self.crash(i);
            let d = self
                .rng
                .gen_range(self.cfg.downtime_us.0..=self.cfg.downtime_us.1);
            self.schedule(self.now + d, Event::Restart(i));
            return Ok(());
        }
        let Sim {
            nodes,
            inv,
            effective,
            ..
        } = self;
        let node = &mut nodes[i];
        let raw = node.raw.as_mut().unwrap();

        // 1. Persist: snapshot, entries, hard state.
        if let Some(s) = &rd.snapshot {
            raw.storage_mut().apply_snapshot(s).map_err(|e| {
                format!(
                    "node {id}: storage rejected snapshot at {}: {e}",
                    s.meta.index
                )
            })?;
            node.sm = KvStore::restore(&s.data, s.meta.index);
            self.stats.snapshots_installed += 1;
        }
        if let Some(first) = rd.entries.first() {
            let offset = raw.storage().first_index().unwrap() - 1;
            let fresh: Vec<_> = rd
                .entries
                .iter()
                .filter(|e| e.index > offset)
                .cloned()
                .collect();
            if let Some(f) = fresh.first() {
                let prev = raw.storage().term(f.index - 1).map_err(|e| {
                    format!(
                        "node {id}: Ready appends at {} but the log ends at {offset}+: {e}",
                        first.index
                    )
                })?;
                inv.on_append(id, prev, &fresh)?;
            }
            raw.storage_mut()
                .append(&rd.entries)
                .map_err(|e| format!("node {id}: storage rejected append: {e}"))?;
        }
        if let Some(hs) = rd.hard_state {
            Invariants::on_hard_state(id, &node.disk_hs, &hs)?;
            raw.storage_mut().set_hard_state(&hs).unwrap();
            node.disk_hs = hs;
            node.term = hs.term;
        }
        if let Some(ss) = rd.soft_state {
            if ss.role != Role::Leader {
                node.leader_since = None;
            }
            node.role = ss.role;
            node.leader = ss.leader;
            if let Some(lease) = node.lease.as_mut() {
                lease.on_soft_state(ss.role, ss.leader);
            }
        }
        // The lease anchor: read before any message of this Ready is sent (all are sent below).
        let local = Clock::now(&node.clock.clock);
        if let Some(lease) = node.lease.as_mut() {
            lease.observe(&rd.lease_events, local);
        }
        for e in &rd.lease_events {
            if let LeaseEvent::BecameLeader { .. } = e {
                node.leader_since = Some(local);
            }
            if node.lease_events.len() == 64 {
                node.lease_events.pop_front();
            }
            node.lease_events.push_back((local, *e));
        }

        // 2. Apply committed entries.
        let mut done: Vec<(usize, u64, KvOut)> = Vec::new();
        let mut fresh_commits = Vec::new();
        let mut removals = Vec::new();
        for e in &rd.committed_entries {
            if e.index != node.sm.applied + 1 {
                return Err(format!(
                    "node {id} applies index {} but has applied {}",
                    e.index, node.sm.applied
                ));
            }
            if inv.on_apply(id, node.term, e)? {
                fresh_commits.push(e.index);
            }
            node.sm.applied = e.index;
            if let EntryPayload::ConfChange(ConfChange::RemoveNode(x)) = e.payload {
                removals.push(x);
            }
            if let EntryPayload::Normal(data) = &e.payload {
                let cmd = Command::decode(data)
                    .ok_or_else(|| format!("node {id}: undecodable entry {e:?}"))?;
                if let Some(out) = node.sm.apply(&cmd) {
                    effective.insert(cmd.req);
                    if let Some(c) = node.pending_updates.remove(&cmd.req) {
                        done.push((c, cmd.req, out));
                    }
                }
            }
        }

        let mut regained = None;
        if let Some(lease) = node.lease.as_mut() {
            lease.on_applied(node.sm.applied);
            if let Some(since) = node.leader_since {
                if lease.can_read_with_lease() {
                    regained = Some(Clock::now(&node.clock.clock).saturating_sub(since));
                    node.leader_since = None;
                }
            }
        }
        if let Some(d) = regained {
            self.stats.leases_regained += 1;
            self.stats.max_lease_regain_us =
                self.stats.max_lease_regain_us.max(d.as_micros() as u64);
        }

        // 3. Read states; answer reads whose index is applied.
        for rs in &rd.read_states {
            if let Some(p) = node
                .pending_reads
                .iter_mut()
                .find(|p| p.index.is_none() && p.req.to_le_bytes()[..] == rs.ctx[..])
            {
                p.index = Some(rs.index);
            }
        }
        let applied = node.sm.applied;
        let mut k = 0;
        while k < node.pending_reads.len() {
            if node.pending_reads[k].index.is_some_and(|x| x <= applied) {
                let p = node.pending_reads.swap_remove(k);
                done.push((p.client, p.req, KvOut::Read(node.sm.get(p.key))));
            } else {
                k += 1;
            }
        }

        // 4. Send the rest. (Persisting came first; sending before applying is what the
        // contract says.)
        let snap = rd.snapshot.as_ref().map(|s| s.meta.index);
        let nents = rd.entries.len();
        let ncommit = rd.committed_entries.len();
        if let Some(ss) = rd.soft_state {
            self.log(|| format!("node {id} soft state {:?} leader {:?}", ss.role, ss.leader));
        }
        if snap.is_some() || nents > 0 || ncommit > 0 {
            self.log(|| {
                format!("node {id} persists snap {snap:?} +{nents} ents, applies {ncommit}")
            });
        }
        for m in late {
            self.send(m);
        }
        for (c, req, out) in done {
            self.complete(c, req, out);
        }
        for x in removals {
            let x = x as usize - 1;
            if x < self.nodes.len() && !self.nodes[x].removed {
                // The removal is committed: the removed server shuts down for good, like an
                // operator would after `member remove`.
                self.log(|| format!("REMOVED node {} (committed)", x + 1));
                self.nodes[x].removed = true;
                self.crash(x);
            }
        }
        for index in fresh_commits {
            for (j, n) in self.nodes.iter().enumerate() {
                if let (Some(raw), Role::Leader) = (&n.raw, n.role) {
                    self.inv
                        .check_leader_has(j as NodeId + 1, n.term, raw.storage(), index)?;
                }
            }
        }
        Ok(())
    }

    fn after_advance(&mut self, i: usize) -> Result<(), String> {
        let n = &mut self.nodes[i];
        if n.role == Role::Leader && n.leader_checked_term != n.term {
            n.leader_checked_term = n.term;
            self.stats.leaders += 1;
            let (id, term) = (n.id, n.term);
            self.inv
                .on_leader(id, term, n.raw.as_ref().unwrap().storage())?;
            self.log(|| format!("node {id} is leader of term {term}"));
        }
        Ok(())
    }

    fn send(&mut self, m: Message) {
        self.stats.messages += 1;
        let (from, to) = (m.from as usize - 1, m.to as usize - 1);
        if to >= self.nodes.len() || to == from {
            return;
        }
        let delays = self.net.route(&mut self.rng, from, to);
        if delays.is_empty() {
            self.log(|| format!("drop {}", brief(&m)));
        }
        for d in delays {
            self.schedule(self.now + d, Event::Deliver(m.clone()));
        }
    }

    // -- nodes --------------------------------------------------------------------------------------

    /// Boot (or reboot) node `i` from what its disk holds.
    fn start_node(&mut self, i: usize) -> Result<(), String> {
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

    fn crash(&mut self, i: usize) {
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

    fn compact(&mut self) -> Result<(), String> {
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

    fn leader_index(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up() && self.nodes[i].role == Role::Leader)
            .max_by_key(|&i| self.nodes[i].term)
    }

    /// Inject one random fault. To add a kind: a weight in `FaultWeights` and an arm here.
    fn fault(&mut self) -> Result<(), String> {
        let w = self.cfg.faults;
        let table = [
            w.partition,
            w.isolate_leader,
            w.heal,
            w.crash,
            w.weather,
            w.clock_rate,
            w.transfer_leader,
            w.membership,
            w.crash_leader,
            w.campaign,
        ];
        let total: u32 = table.iter().sum();
        if total == 0 {
            return Ok(());
        }
        let mut r = self.rng.gen_range(0..total);
        let kind = table.iter().position(|&x| {
            if r < x {
                true
            } else {
                r -= x;
                false
            }
        });
        let n = self.nodes.len();
        match kind.unwrap() {
            0 => {
                let groups: Vec<u8> = (0..n).map(|_| self.rng.gen_range(0..2)).collect();
                self.log(|| format!("FAULT partition {groups:?}"));
                self.net.partition(groups);
            }
            1 => {
                let l = self
                    .leader_index()
                    .unwrap_or_else(|| self.rng.gen_range(0..n));
                self.log(|| format!("FAULT isolate node {}", l + 1));
                self.net.isolate(l);
            }
            2 => {
                self.log(|| "FAULT heal partitions".into());
                self.net.heal();
            }
            3 => {
                let up: Vec<usize> = (0..n).filter(|&i| self.nodes[i].up()).collect();
                if !up.is_empty() {
                    let i = up[self.rng.gen_range(0..up.len())];
                    self.crash(i);
                    let d = self
                        .rng
                        .gen_range(self.cfg.downtime_us.0..=self.cfg.downtime_us.1);
                    self.schedule(self.now + d, Event::Restart(i));
                }
            }
            4 => {
                self.net.cfg = NetConfig::random(&mut self.rng);
                let c = self.net.cfg;
                self.log(|| format!("FAULT weather {c:?}"));
            }
            5 => {
                let i = self.rng.gen_range(0..n);
                let rate = 1.0 + self.rng.gen_range(-self.cfg.drift..=self.cfg.drift);
                self.nodes[i].clock.set_rate(self.now, rate);
                self.schedule_tick(i);
                self.log(|| format!("FAULT node {} clock rate {rate:.4}", i + 1));
            }
            6 => {
                if let Some(l) = self.leader_index() {
                    let to = self.rng.gen_range(1..=n as NodeId);
                    self.log(|| format!("FAULT transfer leadership {} -> {to}", l + 1));
                    let r = self.nodes[l].raw.as_mut().unwrap().transfer_leader(to);
                    if let Err(e) = r {
                        self.log(|| format!("  transfer refused: {e}"));
                    }
                    self.drive(l)?;
                }
            }
            7 => self.membership_change()?,
            8 => {
                if let Some(l) = self.leader_index() {
                    self.crash(l);
                    let d = self
                        .rng
                        .gen_range(self.cfg.downtime_us.0..=self.cfg.downtime_us.1);
                    self.schedule(self.now + d, Event::Restart(l));
                }
            }
            _ => {
                let i = self.rng.gen_range(0..n);
                if let Some(raw) = self.nodes[i].raw.as_mut() {
                    let r = raw.campaign();
                    self.log(|| format!("FAULT node {} campaigns: {r:?}", i + 1));
                    self.drive(i)?;
                }
            }
        }
        Ok(())
    }

    /// One single-server membership change through the current leader: add a never-started spare
    /// as a learner (and boot it, empty), promote a learner, or remove a member while at least
    /// three voters remain. Refusals (a change already pending, ...) are part of the test.
    fn membership_change(&mut self) -> Result<(), String> {
        let Some(l) = self.leader_index() else {
            return Ok(());
        };
        let conf = self.nodes[l].raw.as_ref().unwrap().status().conf;
        let spare = self.nodes.iter().position(|n| n.spare);
        let learners: Vec<NodeId> = conf.learners.iter().copied().collect();
        let voters: Vec<NodeId> = conf.voters.iter().copied().collect();
        let cc = match self.rng.gen_range(0..3) {
            0 if spare.is_some() => ConfChange::AddLearner(spare.unwrap() as NodeId + 1),
            1 if !learners.is_empty() => {
                ConfChange::AddVoter(learners[self.rng.gen_range(0..learners.len())])
            }
            _ if voters.len() > 3 || !learners.is_empty() => {
                let members: Vec<NodeId> = conf.all().collect();
                let x = members[self.rng.gen_range(0..members.len())];
                if voters.len() <= 3 && conf.voters.contains(&x) {
                    return Ok(());
                }
                ConfChange::RemoveNode(x)
            }
            _ => return Ok(()),
        };
        let r = self.nodes[l].raw.as_mut().unwrap().propose_conf_change(cc);
        self.log(|| format!("FAULT membership via leader {}: {cc:?} -> {r:?}", l + 1));
        if r.is_ok() {
            self.stats.conf_changes += 1;
            if let ConfChange::AddLearner(id) = cc {
                // Boot the new server now; it waits, empty, for the leader to reach it.
                self.start_node(id as usize - 1)?;
            }
        }
        self.drive(l)
    }

    // -- clients ------------------------------------------------------------------------------------

    fn client_wake(&mut self, c: usize) -> Result<(), String> {
        if self.clients[c].pending.is_some() || !self.clients[c].auto {
            return Ok(());
        }
        let n = self.nodes.len();
        let node = match self.clients[c].hint {
            Some(h) if self.rng.gen_bool(0.8) => h,
            _ => self.rng.gen_range(0..n),
        };
        let key = self.rng.gen_range(0..self.cfg.keys);
        let value = self.next_req; // unique per run
        let op = match self.rng.gen_range(0..100) {
            x if x < self.cfg.local_read_pct => ClientOp::LocalRead { key },
            x if x < self.cfg.local_read_pct + self.cfg.lease_read_pct => {
                ClientOp::LeaseRead { key }
            }
            0..=39 => ClientOp::Read { key },
            40..=74 => ClientOp::Write { key, value },
            _ => {
                let expected = match self.clients[c].last_seen.get(&key) {
                    Some(&v) if self.rng.gen_bool(0.8) => Some(v),
                    _ => None,
                };
                ClientOp::Cas {
                    key,
                    expected,
                    new: value,
                }
            }
        };
        if !self.nodes[node].up() {
            // Connection refused: nothing was sent, so nothing to record.
            self.clients[c].hint = None;
            let d = self.rng.gen_range(MS..20 * MS);
            self.schedule(self.now + d, Event::ClientWake(c));
            return Ok(());
        }
        match self.submit(c, node, op) {
            Ok(_) => {}
            Err(e) => {
                self.clients[c].hint = match e {
                    RaftError::NotLeader { leader: Some(l) } => Some(l as usize - 1),
                    _ => None,
                };
                let d = self.rng.gen_range(MS..20 * MS);
                self.schedule(self.now + d, Event::ClientWake(c));
            }
        }
        self.drive(node)
    }

    /// Hand `op` from client `c` to `node` along the path its variant names, and record the
    /// invocation. To add an op type (e.g. a lease read): add a `ClientOp` variant and an arm
    /// here that either answers at once through `complete` or parks the request on the node.
    fn submit(&mut self, c: usize, node: usize, op: ClientOp) -> Result<usize, RaftError> {
        let req = self.next_req;
        let client_id = self.clients[c].id;
        let n = &mut self.nodes[node];
        n.clock.sync(self.now);
        let raw = n.raw.as_mut().expect("submit to a live node");
        // Some paths answer at once; the answer is recorded after the invocation below.
        let mut immediate = None;
        if matches!(op, ClientOp::LeaseRead { .. }) && raw.status().role == Role::Leader {
            self.stats.lease_reads_on_leader += 1;
            if n.lease.as_ref().is_some_and(|l| l.can_read_with_lease()) {
                self.stats.lease_hits_on_leader += 1;
            }
        }
        match op {
            ClientOp::LocalRead { key } => immediate = Some(KvOut::Read(n.sm.get(key))),
            // As the server: under a valid lease, everything committed so far (acknowledged
            // anywhere) must be applied before answering; no lease, ReadIndex instead.
            ClientOp::LeaseRead { key }
                if n.lease.as_ref().is_some_and(|l| l.can_read_with_lease()) =>
            {
                let index = raw.status().commit;
                self.stats.lease_reads += 1;
                if index <= n.sm.applied {
                    immediate = Some(KvOut::Read(n.sm.get(key)));
                } else {
                    n.pending_reads.push(PendingRead {
                        req,
                        client: c,
                        key,
                        index: Some(index),
                    });
                }
            }
            ClientOp::LeaseRead { key } | ClientOp::Read { key } => {
                raw.read_index(req.to_le_bytes().to_vec())?;
                n.pending_reads.push(PendingRead {
                    req,
                    client: c,
                    key,
                    index: None,
                });
            }
            ClientOp::Write { .. } | ClientOp::Cas { .. } => {
                raw.propose(
                    Command {
                        req,
                        client: client_id,
                        op: op.clone(),
                    }
                    .encode(),
                )?;
                n.pending_updates.insert(req, c);
            }
        }
        self.next_req += 1;
        let h = self.history.len();
        self.log(|| format!("client {client_id} req {req} -> node {}: {op:?}", node + 1));
        self.history.push(HistEntry {
            client: client_id,
            req,
            node,
            invoke: self.now,
            complete: None,
            op,
            output: None,
        });
        self.clients[c].pending = Some((h, node, req));
        self.schedule(
            self.now + self.cfg.client_timeout_us,
            Event::ClientTimeout { client: c, req },
        );
        if let Some(out) = immediate {
            self.complete(c, req, out);
        }
        Ok(h)
    }

    fn complete(&mut self, c: usize, req: u64, out: KvOut) {
        let Some((h, _, r)) = self.clients[c].pending else {
            return;
        };
        if r != req {
            return;
        }
        self.clients[c].pending = None;
        let key = *self.history[h].op.spec().key();
        match (&self.history[h].op, &out) {
            (_, KvOut::Read(Some(v))) => {
                self.clients[c].last_seen.insert(key, *v);
            }
            (ClientOp::Write { value, .. }, _)
            | (ClientOp::Cas { new: value, .. }, KvOut::Cas(true)) => {
                self.clients[c].last_seen.insert(key, *value);
            }
            _ => {}
        }
        self.log(|| format!("client {} req {req} done: {out:?}", c + 1));
        self.history[h].complete = Some(self.now);
        self.history[h].output = Some(out);
        let d = self
            .rng
            .gen_range(self.cfg.think_us.0..=self.cfg.think_us.1);
        self.schedule(self.now + d, Event::ClientWake(c));
    }

    fn client_timeout(&mut self, c: usize, req: u64) {
        if !self.clients[c].auto {
            return; // probes wait for as long as the liveness bound allows
        }
        let Some((_, node, r)) = self.clients[c].pending else {
            return;
        };
        if r != req {
            return;
        }
        self.clients[c].pending = None;
        self.clients[c].hint = None;
        self.stats.timeouts += 1;
        let n = &mut self.nodes[node];
        n.pending_updates.remove(&req);
        n.pending_reads.retain(|p| p.req != req);
        self.log(|| format!("client {} req {req} timed out", c + 1));
        let d = self
            .rng
            .gen_range(self.cfg.think_us.0..=self.cfg.think_us.1);
        self.schedule(self.now + d, Event::ClientWake(c));
    }
}

/// The disk of an initial member: the initial configuration as committed conf-change entries
/// (etcd's bootstrap), not only as snapshot metadata, so that a server added later, which starts
/// empty and may be sent the log from index 1 rather than a snapshot, learns the full membership.
fn bootstrap(n: usize) -> MemStorage {
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

/// One line per message for traces.
pub fn brief(m: &Message) -> String {
    let body = match &m.body {
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => format!(
            "Append(prev {prev_index}/{prev_term}, {} ents{}, commit {commit})",
            entries.len(),
            entries
                .last()
                .map(|e| format!(" ..{}/{}", e.index, e.term))
                .unwrap_or_default()
        ),
        MessageBody::InstallSnapshot { snapshot } => {
            format!(
                "InstallSnapshot({}/{})",
                snapshot.meta.index, snapshot.meta.term
            )
        }
        MessageBody::Propose { entries } => format!("Propose({} ents)", entries.len()),
        b => format!("{b:?}"),
    };
    format!("{}->{} t{} {body}", m.from, m.to, m.term)
}
