//! How `Sim` drives a node: hand its driver an input, let the driver do everything that input
//! asks for (`Driver::process`: send, persist, apply, answer — the production order), then look
//! at what it did: route the messages it sent, check what it applied, answer the clients it
//! answered, and shut down members whose removal committed.

use deimos_raft::driver::DriverError;
use deimos_raft::{MessageBody, NodeId, RaftError, Role};
use tokio::sync::oneshot::error::TryRecvError;

use super::cluster::{Event, Sim};
use super::config::MS;
use super::node::SimDriver;
use super::phases::Phase;
use super::register::KvOut;
use super::report::brief;
use super::seams::{Shared, CRASH};

/// How long a snapshot whose request was lost takes to be reported failed (the transport's
/// request timeout, scaled to the simulation).
const SNAPSHOT_TIMEOUT_US: u64 = 200 * MS;

impl Sim {
    pub(super) fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Give node `i`'s driver an input (`f`), then let it process and settle the consequences.
    /// A node whose loop is wedged (the `wedge_after_snapshot` fault) takes no input at all.
    pub fn feed(&mut self, i: usize, f: impl FnOnce(&mut SimDriver)) -> Result<(), String> {
        let id = i as NodeId + 1;
        if self.shared().wedged.contains(&id) {
            return Ok(());
        }
        let n = &mut self.nodes[i];
        let Some(driver) = n.driver.as_mut() else {
            return Ok(());
        };
        n.clock.sync(self.now);
        f(driver);
        let outcome = driver.process();
        self.settle(i)?;
        match outcome {
            Ok(()) => Ok(()),
            Err(e) if e.to_string().contains(CRASH) && self.phase == Phase::Chaos => {
                // The process died inside its write: what it sent and answered before stays
                // sent and answered, nothing of the write is on disk.
                self.stats.mid_ready_crashes += 1;
                if self.answered_in_this_step {
                    self.stats.crashes_after_early_answers += 1;
                }
                self.log(|| format!("node {id} crashes before persisting its Ready"));
                self.crash(i);
                let d = self
                    .rng
                    .gen_range(self.cfg.downtime_us.0..=self.cfg.downtime_us.1);
                self.schedule(self.now + d, Event::Restart(i));
                Ok(())
            }
            Err(e) => Err(format!("node {id}: driver failed: {e}")),
        }
    }

    /// After node `i` processed: observe its role, route its messages, check what was applied,
    /// answer its clients, shut down removed members.
    fn settle(&mut self, i: usize) -> Result<(), String> {
        self.answered_in_this_step = false;
        self.observe_role(i)?;
        let sent = std::mem::take(
            &mut *self.nodes[i]
                .outbox
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for m in sent {
            self.send(m);
        }
        self.check_applied()?;
        self.poll_clients(i);
        self.poll_conf(i)?;
        let removals = std::mem::take(&mut self.shared().removals);
        for (x, index) in removals {
            let x = x as usize - 1;
            let Some(n) = self.nodes.get_mut(x) else {
                continue;
            };
            if !n.removed && !n.spare && index > n.member_since {
                // The removal is committed: the removed server shuts down, as an operator
                // would after `member remove`.
                n.removed = true;
                n.removed_at = index;
                self.log(|| format!("REMOVED node {} (committed at {index})", x + 1));
                self.crash(x);
            }
        }
        self.after_apply(i);
        match self.shared().violation.take() {
            Some(v) => Err(v),
            None => Ok(()),
        }
    }

    /// Role, term and leader as the core has them now; leader invariants on a new leadership.
    fn observe_role(&mut self, i: usize) -> Result<(), String> {
        let Some(st) = self.nodes[i].status() else {
            return Ok(());
        };
        let n = &mut self.nodes[i];
        if st.role != n.role || st.leader != n.leader {
            let (id, role, leader) = (n.id, st.role, st.leader);
            self.log(|| format!("node {id} soft state {role:?} leader {leader:?}"));
        }
        let n = &mut self.nodes[i];
        if st.role == Role::Leader && n.role != Role::Leader {
            n.leader_since = Some(deimos_raft::Clock::now(&n.clock.clock));
        } else if st.role != Role::Leader {
            n.leader_since = None;
        }
        n.role = st.role;
        n.leader = st.leader;
        n.term = st.term;
        if n.role == Role::Leader && n.leader_checked_term != n.term {
            n.leader_checked_term = n.term;
            self.stats.leaders += 1;
            let (id, term) = (n.id, n.term);
            let log = n.log().clone();
            self.shared().inv.on_leader(id, term, &log)?;
            self.log(|| format!("node {id} is leader of term {term}"));
        }
        Ok(())
    }

    /// State-machine safety for everything applied since the last check, and leader
    /// completeness for what became known committed. A node's term now bounds the term in
    /// which what it applied was committed (terms never decrease).
    fn check_applied(&mut self) -> Result<(), String> {
        let applied = std::mem::take(&mut self.shared().applied);
        for (node, e) in applied {
            let term = self.nodes[node as usize - 1].term;
            let fresh = self.shared().inv.on_apply(node, term, &e)?;
            if !fresh {
                continue;
            }
            for (j, n) in self.nodes.iter().enumerate() {
                if n.up() && n.role == Role::Leader {
                    self.shared().inv.check_leader_has(
                        j as NodeId + 1,
                        n.term,
                        n.log(),
                        e.index,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Answers node `i`'s driver gave: updates it applied, reads it confirmed (answered once
    /// applied), refusals.
    fn poll_clients(&mut self, i: usize) {
        let mut done: Vec<(usize, u64, KvOut)> = Vec::new();
        let mut refused: Vec<(usize, u64, DriverError)> = Vec::new();
        let n = &mut self.nodes[i];
        n.pending_updates
            .retain(|&req, p| match p.reply.try_recv() {
                Ok(Ok(Some(out))) => {
                    done.push((p.client, req, out));
                    false
                }
                // Applied, but without effect (a duplicate): its client times out.
                Ok(Ok(None)) => false,
                Ok(Err(e)) => {
                    refused.push((p.client, req, e));
                    false
                }
                Err(TryRecvError::Empty) => true,
                Err(TryRecvError::Closed) => false,
            });
        let applied = n.applied();
        let sm = n.sm.lock().unwrap_or_else(|p| p.into_inner()).clone();
        n.pending_reads.retain_mut(|p| {
            if let Some(rx) = p.reply.as_mut() {
                match rx.try_recv() {
                    Ok(Ok(index)) => {
                        p.index = Some(index);
                        p.reply = None;
                    }
                    Ok(Err(e)) => {
                        refused.push((p.client, p.req, e));
                        return false;
                    }
                    Err(TryRecvError::Empty) => return true,
                    Err(TryRecvError::Closed) => return false,
                }
            }
            match p.index {
                Some(index) if index <= applied => {
                    done.push((p.client, p.req, KvOut::Read(sm.get(p.key))));
                    false
                }
                _ => true,
            }
        });
        self.answered_in_this_step |= !done.is_empty();
        for (c, req, out) in done {
            self.complete(c, req, out);
        }
        for (c, req, e) in refused {
            self.refused(c, req, e);
        }
    }

    /// Membership changes proposed on node `i` that it has now applied (or refused), and
    /// members whose addition committed: a node added is started, empty, once its addition is
    /// committed — as an operator starts a member after `member add` (or, when that call timed
    /// out, after seeing it in the member list).
    fn poll_conf(&mut self, i: usize) -> Result<(), String> {
        let mut results = Vec::new();
        self.nodes[i]
            .pending_conf
            .retain_mut(|p| match p.reply.try_recv() {
                Ok(r) => {
                    results.push((p.cc, r));
                    false
                }
                Err(TryRecvError::Empty) => true,
                Err(TryRecvError::Closed) => false,
            });
        for (cc, r) in results {
            if r.is_ok() {
                self.stats.conf_changes += 1;
            }
            self.log(|| format!("membership {cc:?} applied on node {}: {r:?}", i + 1));
        }
        let added = std::mem::take(&mut self.shared().additions);
        for (x, index) in added {
            let x = x as usize - 1;
            if self
                .nodes
                .get(x)
                .is_some_and(|n| n.spare && index > n.removed_at)
            {
                self.nodes[x].member_since = index;
                self.start_node(x)?;
            }
        }
        Ok(())
    }

    /// A refusal means the operation never entered the log (or was never confirmed): it has no
    /// effect, so the history drops it. The client retries elsewhere.
    fn refused(&mut self, c: usize, req: u64, e: DriverError) {
        let Some((h, _, r)) = self.clients[c].pending else {
            return;
        };
        if r != req {
            return;
        }
        self.clients[c].pending = None;
        self.history[h].refused = true;
        self.clients[c].hint = match e {
            DriverError::Raft(RaftError::NotLeader { leader: Some(l) }) => Some(l as usize - 1),
            _ => None,
        };
        self.log(|| format!("client {} req {req} refused: {e}", c + 1));
        let d = self.rng.gen_range(MS..20 * MS);
        self.schedule(self.now + d, Event::ClientWake(c));
    }

    /// Count how long a new leader took to serve lease reads.
    fn after_apply(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let (Some(since), Some(h)) = (n.leader_since, n.handle.as_ref()) else {
            return;
        };
        if self.cfg.lease_read_pct > 0 && h.lease_reader().can_read_with_lease() {
            let d = deimos_raft::Clock::now(&n.clock.clock).saturating_sub(since);
            n.leader_since = None;
            self.stats.leases_regained += 1;
            self.stats.max_lease_regain_us =
                self.stats.max_lease_regain_us.max(d.as_micros() as u64);
        }
    }

    /// Route a message through the network. A snapshot goes as the transport sends it — alone,
    /// its outcome reported back to the sender's driver once it arrived (or failed); a message
    /// to a node that is down fails at once and is reported as unreachable.
    pub(super) fn send(&mut self, m: deimos_raft::Message) {
        self.stats.messages += 1;
        let (from, to) = (m.from as usize - 1, m.to as usize - 1);
        if to >= self.nodes.len() || to == from {
            return;
        }
        let delays = self.net.route(&mut self.rng, from, to);
        if delays.is_empty() {
            self.log(|| format!("drop {}", brief(&m)));
        }
        if !self.nodes[to].up() {
            self.schedule(self.now + MS, Event::ReportUnreachable { node: from, to });
        }
        if let MessageBody::InstallSnapshot { .. } = m.body {
            let at = match delays.first() {
                // The answer comes back over the same (calm or not) network.
                Some(&d) => self.now + d + d / 2 + 1,
                None => self.now + SNAPSHOT_TIMEOUT_US,
            };
            self.schedule(
                at,
                Event::ReportSnapshot {
                    node: from,
                    to,
                    delivered: !delays.is_empty(),
                },
            );
        }
        for d in delays {
            self.schedule(self.now + d, Event::Deliver(m.clone()));
        }
    }
}

use rand::Rng;
