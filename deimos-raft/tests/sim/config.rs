//! What shapes one run: `SimConfig` (its defaults and the sweep's rotation of profiles) and the
//! weights of the faults the chaos phase injects.

use std::time::Duration;

use deimos_raft::Config;

use super::register::Key;

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
    /// Each node's driver compacts its log every `snapshot_count` applied entries, drawn per
    /// start from this range (small, so that followers are often caught up by snapshot).
    pub snapshot_count: (u64, u64),
    /// Freeze a node's Raft loop for good once it installed a snapshot (the old deadlock's
    /// effect): only for the test that shows the liveness checks catch a stalled member.
    pub wedge_after_snapshot: bool,
    /// Let the membership fault wipe a removed server and add it again *under its old id*.
    /// Unsafe: the new incarnation finds its own old `AddVoter` in the log it is sent and,
    /// restarted after applying only a prefix, can believe itself a voter of a configuration
    /// long gone (a founding member: a cluster of one) and elect itself. Only for the test that
    /// shows it is caught; otherwise a replaced server joins under a new id, as the server's
    /// member API assigns one.
    pub reuse_removed_ids: bool,
    /// How long a crashed node stays down (uniform range) unless the heal comes first.
    pub downtime_us: (u64, u64),
    /// After the heal: bound for a stable leader, then for the probe proposals to commit everywhere.
    pub liveness_leader_us: u64,
    pub liveness_commit_us: u64,
    /// How long the leader must have been stable before the probes are proposed.
    pub settle_us: u64,
    pub probes: usize,
    /// Per-mille chance, during the chaos phase of a run with faults, that a node crashes in a
    /// persist of entries: after the driver sent the Ready's early messages
    /// (`MessageBody::may_precede_persist`) and answered what it may answer before its write,
    /// and before the write lands.
    pub mid_ready_crash_per_mille: u32,
    /// Have the driver send *every* message before persisting, acknowledgements included
    /// (`UnsafeKnobs::send_all_before_persist`). Only for the test that shows a mid-Ready crash
    /// then loses committed entries and is caught.
    pub send_all_before_persist: bool,
    /// The driver publishes its commit index to lease readers after sending the messages that
    /// carry it (`UnsafeKnobs::publish_commit_after_send`). Only for the test that shows the
    /// transport's check catches the old order.
    pub publish_commit_after_send: bool,
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
            snapshot_count: (4, 60),
            wedge_after_snapshot: false,
            reuse_removed_ids: false,
            downtime_us: (20 * MS, 800 * MS),
            liveness_leader_us: 3_000 * MS,
            liveness_commit_us: 1_000 * MS,
            settle_us: 300 * MS,
            probes: 3,
            mid_ready_crash_per_mille: 5,
            send_all_before_persist: false,
            publish_commit_after_send: false,
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
