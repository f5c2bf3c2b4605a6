//! The faults `Sim` injects during the chaos phase: partitions, crashes, network weather, clock
//! rate changes, leader transfers, campaigns and single-server membership changes.

use deimos_raft::driver::Request;
use deimos_raft::{ConfChange, MemStorage, NodeId, Role};
use rand::Rng;
use tokio::sync::oneshot;

use super::cluster::{Event, Sim};
use super::network::NetConfig;
use super::node::PendingConf;

impl Sim {
    fn leader_index(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up() && self.nodes[i].role == Role::Leader)
            .max_by_key(|&i| self.nodes[i].term)
    }

    /// Inject one random fault. To add a kind: a weight in `FaultWeights` and an arm here.
    pub(super) fn fault(&mut self) -> Result<(), String> {
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
                    // The answer (refused, or started) does not matter to the run.
                    let (reply, _) = oneshot::channel();
                    self.feed(l, |d| d.input(Request::Transfer { to, reply }))?;
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
                if self.nodes[i].up() {
                    self.log(|| format!("FAULT node {} campaigns", i + 1));
                    self.feed(i, |d| d.input(Request::Campaign))?;
                }
            }
        }
        Ok(())
    }

    /// One single-server membership change through the current leader, as an operator makes
    /// them: add a spare as a learner, or as a voter the way the server's member API does (a
    /// member record entry first, then the change), and start it, empty, once its addition is
    /// committed; promote a learner; remove a member while at least three voters remain. A
    /// removed server stays removed: replaced, it comes back as a spare with a new id, as the
    /// member API assigns one (`reuse_removed_ids` shows why). Refusals (a change already
    /// pending, ...) are part of the test.
    fn membership_change(&mut self) -> Result<(), String> {
        let Some(l) = self.leader_index() else {
            return Ok(());
        };
        let Some(conf) = self.nodes[l].status().map(|s| s.conf) else {
            return Ok(());
        };
        let removed = (0..self.nodes.len()).find(|&x| self.nodes[x].removed);
        if let Some(x) = removed.filter(|_| self.cfg.reuse_removed_ids) {
            if self.rng.gen_bool(0.5) {
                // Replace it: wipe the removed server's data so its id can join again, empty.
                self.log(|| format!("FAULT node {} wiped, to be added again", x + 1));
                let n = &mut self.nodes[x];
                n.removed = false;
                n.spare = true;
                n.disk = MemStorage::new(Default::default());
                return Ok(());
            }
        }
        let spare = self.nodes.iter().position(|n| n.spare);
        let learners: Vec<NodeId> = conf.learners.iter().copied().collect();
        let voters: Vec<NodeId> = conf.voters.iter().copied().collect();
        let cc = match self.rng.gen_range(0..4) {
            0 if spare.is_some() => ConfChange::AddLearner(spare.unwrap() as NodeId + 1),
            1 if spare.is_some() => ConfChange::AddVoter(spare.unwrap() as NodeId + 1),
            2 if !learners.is_empty() => {
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
        self.log(|| format!("FAULT membership via leader {}: {cc:?}", l + 1));
        if let ConfChange::AddLearner(id) | ConfChange::AddVoter(id) = cc {
            if !conf.contains(id) {
                // The member's record goes first, as the server proposes it.
                let (reply, _) = oneshot::channel();
                let data = format!("member-record:{id}").into_bytes();
                self.feed(l, |d| d.input(Request::Propose { data, reply }))?;
            }
        }
        let (reply, rx) = oneshot::channel();
        if let Some(n) = self.nodes.get_mut(l).filter(|n| n.up()) {
            n.pending_conf.push(PendingConf { cc, reply: rx });
        }
        self.feed(l, |d| d.input(Request::ConfChange { cc, reply }))
    }
}
