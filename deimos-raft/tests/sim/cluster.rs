//! The deterministic cluster simulator: N production `Driver`s over simulated seams, a replicated register per node,
//! a faulty network, drifting per-node clocks, crash-restart, and clients whose history is checked
//! for linearizability at the end.
//!
//! Everything runs on one thread from one event queue ordered by (simulated global time, sequence
//! number), and every random choice comes from one `StdRng` seeded per run, so a seed replays the
//! exact same run. Time is in microseconds of global simulated time; each node sees its own local
//! time through its `NodeClock`, which is what it ticks on and what a lease must be judged by.
//!
//! This module holds the simulator itself (`Sim`), its event queue and the step that dispatches
//! one event; the rest of `Sim` is split by concern into sibling modules: `node` (servers, clocks,
//! crash-restart), `seams` (the storage, transport and state machine the drivers run on), `drive`
//! (feeding a driver and checking what it did, sending messages), `clients` (workload and
//! history), `faults`, `phases` (chaos, heal, liveness, the final checks), with the run's
//! configuration in `config` and what it reports in `report`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex};

use deimos_raft::driver::{Report, Request};
use deimos_raft::{Config, MemStorage, Message, NodeId, Role};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::clients::{Client, HistEntry};
use super::network::Network;
use super::node::{bootstrap, NodeClock, SimNode};
use super::phases::Phase;
use super::seams::{Shared, SharedRef};

// The run's configuration and report used to be defined here; re-exported so that their paths
// (`sim::cluster::FaultWeights` in `tests/simulation.rs`, ...) keep working.
pub use super::config::{FaultWeights, SimConfig, MS};
pub use super::report::{brief, Failure, Stats};

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

#[derive(Debug)]
pub(super) enum Event {
    Tick {
        node: usize,
        gen: u64,
    },
    Deliver(Message),
    ClientWake(usize),
    ClientTimeout {
        client: usize,
        req: u64,
    },
    Fault,
    Restart(usize),
    /// The transport's report to `node` of a snapshot it sent to `to`.
    ReportSnapshot {
        node: usize,
        to: usize,
        delivered: bool,
    },
    /// The transport's report to `node` that `to` refused a connection.
    ReportUnreachable {
        node: usize,
        to: usize,
    },
}

pub(super) struct Scheduled {
    pub(super) at: u64,
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

/// The simulator: the nodes, the network, the clients and their history, and the event queue that
/// drives them. Its methods are split by concern across the sibling modules (see above).
pub struct Sim {
    pub cfg: SimConfig,
    pub now: u64,
    pub(super) rng: StdRng,
    pub(super) queue: BinaryHeap<Scheduled>,
    seq: u64,
    pub nodes: Vec<SimNode>,
    pub net: Network,
    /// What the nodes' seams share with the simulator (invariants, crash injection, counters).
    pub(super) shared: SharedRef,
    /// Whether the node fed last answered a client (to tell a crash after early answers).
    pub(super) answered_in_this_step: bool,
    pub(super) clients: Vec<Client>,
    pub history: Vec<HistEntry>,
    pub(super) next_req: u64,
    pub(super) phase: Phase,
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
                    driver: None,
                    handle: None,
                    // A spare joins empty and learns the configuration from the leader.
                    disk: if spare {
                        MemStorage::new(Default::default())
                    } else {
                        bootstrap(n)
                    },
                    sm: Default::default(),
                    outbox: Default::default(),
                    clock: NodeClock::new(rate),
                    leader_since: None,
                    role: Role::Follower,
                    term: 0,
                    leader: None,
                    leader_checked_term: 0,
                    spare,
                    removed: false,
                    member_since: 0,
                    removed_at: 0,
                    pending_updates: BTreeMap::new(),
                    pending_reads: Vec::new(),
                    pending_conf: Vec::new(),
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
        let mut shared = Shared::new(StdRng::seed_from_u64(rng.gen()));
        shared.wedge_after_snapshot = cfg.wedge_after_snapshot;
        Sim {
            now: 0,
            rng,
            queue: BinaryHeap::new(),
            seq: 0,
            nodes,
            net: Network::new(n + cfg.spares),
            shared: Arc::new(Mutex::new(shared)),
            answered_in_this_step: false,
            clients,
            history: Vec::new(),
            next_req: 1,
            phase: Phase::Chaos,
            trace,
            stats: Stats::default(),
            cfg,
        }
    }

    pub(super) fn schedule(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            ev,
        });
    }

    pub(super) fn log(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            if t.len() == self.cfg.trace {
                t.pop_front();
            }
            let now = self.now;
            t.push_back(format!("{:>6}.{:03}ms {}", now / MS, now % MS, f()));
        }
    }

    pub(super) fn exp_delay(&mut self, mean: u64) -> u64 {
        let u: f64 = self.rng.gen_range(f64::EPSILON..1.0);
        (-(u.ln()) * mean as f64) as u64 + 1
    }

    pub(super) fn node_config(&mut self, id: NodeId) -> Config {
        let mut c = Config::new(id);
        c.election_tick = 10;
        c.heartbeat_tick = 1;
        c.pre_vote = self.cfg.pre_vote;
        c.check_quorum = self.cfg.check_quorum;
        c.max_size_per_msg = self.cfg.max_size_per_msg;
        c.max_inflight_msgs = self.cfg.max_inflight_msgs;
        c.forward_proposals = true;
        c.seed = self.rng.gen();
        c.unsafe_knobs.send_all_before_persist = self.cfg.send_all_before_persist;
        c.unsafe_knobs.publish_commit_after_send = self.cfg.publish_commit_after_send;
        (self.cfg.configure)(&mut c);
        c
    }

    // -- the event loop ---------------------------------------------------------------------------

    pub(super) fn step(&mut self) -> Result<(), String> {
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
                self.feed(node, |d| d.tick())?;
            }
            Event::Deliver(m) => {
                let (from, to) = (m.from as usize - 1, m.to as usize - 1);
                if !self.net.connected(from, to) || !self.nodes[to].up() {
                    return Ok(());
                }
                self.log(|| format!("recv {}", brief(&m)));
                self.feed(to, |d| d.input(Request::Step(m)))?;
            }
            Event::ReportSnapshot {
                node,
                to,
                delivered,
            } => {
                // Answered only if the request arrived and its answer can come back.
                let ok = delivered && self.nodes[to].up() && self.net.connected(node, to);
                self.log(|| format!("node {} snapshot to {} reported ok={ok}", node + 1, to + 1));
                let to = to as NodeId + 1;
                self.feed(node, |d| d.report(Report::Snapshot { to, ok }))?;
            }
            Event::ReportUnreachable { node, to } => {
                let to = to as NodeId + 1;
                self.feed(node, |d| d.report(Report::Unreachable(to)))?;
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
        }
        Ok(())
    }

    pub(super) fn schedule_tick(&mut self, i: usize) {
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
}
