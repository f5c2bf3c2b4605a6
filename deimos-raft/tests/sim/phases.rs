//! The phases of a run: chaos, then heal (network whole, every node up), then liveness (a stable
//! leader and probe writes applied everywhere within bounds), then the end-of-run cross-checks and
//! the linearizability check of the client history.

use std::collections::BTreeMap;

use deimos_raft::{MemStorage, NodeId, Role, Term};
use rand::Rng;

use super::clients::Client;
use super::cluster::{Event, Sim};
use super::config::MS;
use super::invariants::Invariants;
use super::lincheck::{self, Operation, Outcome};
use super::network::NetConfig;
use super::register::ClientOp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Chaos,
    Healed,
}

impl Sim {
    pub(super) fn run_phases(&mut self) -> Result<(), String> {
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
        if self.cfg.fault_interval_us > 0 {
            self.shared().crash_per_mille = self.cfg.mid_ready_crash_per_mille;
        }

        // Chaos.
        let end = self.cfg.chaos_us;
        while self.queue.peek().is_some_and(|s| s.at <= end) {
            self.step()?;
        }
        self.now = end;

        // Heal: network whole and calm, every node up; then demand progress within bounds.
        self.phase = Phase::Healed;
        self.shared().crash_per_mille = 0;
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
                    *slot = Some(self.submit(first_probe + k, l, op)?);
                }
            }
            // A refused probe (a leader transfer still in flight, ...) is not a commit: it is
            // proposed again on whoever is the stable leader then.
            for slot in probes.iter_mut() {
                if let Some(h) = slot.filter(|&h| self.history[h].refused) {
                    last_refusal =
                        format!("a probe was refused on node {}", self.history[h].node + 1);
                    *slot = None;
                }
            }
            let done = probes
                .iter()
                .all(|p| p.is_some_and(|h| self.history[h].complete.is_some()));
            if done {
                let members = self.members(leader);
                let target = members
                    .iter()
                    .map(|&m| self.nodes[m].applied())
                    .max()
                    .unwrap();
                if members.iter().all(|&m| self.nodes[m].applied() >= target) {
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
                    self.nodes.iter().map(|n| n.applied()).collect::<Vec<_>>()
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
            .map(|n| (n.id, n.log()))
            .collect();
        Invariants::check_logs_match(&logs)?;
        // Replicas that applied the same prefix hold the same state (catches snapshots whose data
        // does not match their index, and restore bugs, which per-entry checks cannot see).
        let members = self.members(leader);
        for &m in &members {
            let a = self.nodes[m].sm.lock().unwrap().clone();
            let b = self.nodes[members[0]].sm.lock().unwrap().clone();
            let (a, b) = (&a, &b);
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
        let sh = self.shared();
        let (installed, without_self, compactions) = (
            sh.snapshots_installed,
            sh.snapshots_without_self,
            sh.compactions,
        );
        drop(sh);
        self.stats.snapshots_installed = installed;
        self.stats.snapshots_without_self = without_self;
        self.stats.compactions = compactions;
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
        let conf = self.nodes[l].status()?.conf;
        let stable = conf
            .all()
            .map(|m| &self.nodes[m as usize - 1])
            .all(|n| n.up() && n.term == term && n.leader == Some(id));
        stable.then_some(l)
    }

    /// Members of the stable leader's configuration (the nodes liveness is demanded of).
    fn members(&self, leader: usize) -> Vec<usize> {
        let conf = self.nodes[leader]
            .status()
            .map(|s| s.conf)
            .unwrap_or_default();
        conf.all().map(|m| m as usize - 1).collect()
    }

    fn check_linearizable(&mut self) -> Result<(), String> {
        let mut ops = Vec::with_capacity(self.history.len());
        let effective = self.shared().effective.clone();
        for h in self.history.iter().filter(|h| !h.refused) {
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
                    if h.op.is_update() && effective.contains(&h.req) {
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
}
