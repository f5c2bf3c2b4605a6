//! How `Sim` drives a node: every `Ready` handled in the driver's order (early sends, the
//! leader's apply of what is already stored, persist, apply, read states, the rest of the sends), with Raft's safety invariants checked as it goes,
//! and how messages enter the faulty network.

use deimos_raft::{
    Clock, ConfChange, Entry, EntryPayload, LeaseEvent, LogStorage, Message, NodeId, Ready, Role,
};
use rand::Rng;

use super::cluster::{Event, Sim};
use super::invariants::Invariants;
use super::phases::Phase;
use super::register::{Command, KvOut, KvStore};
use super::report::brief;

/// What applying committed entries left to do once the `Ready` is handled.
#[derive(Default)]
struct Applied {
    /// Clients to answer: (client, request, output).
    done: Vec<(usize, u64, KvOut)>,
    /// Indexes this node saw committed first (for the leader-completeness check).
    fresh_commits: Vec<u64>,
    /// Members whose removal was applied.
    removals: Vec<NodeId>,
}

impl Sim {
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
        if let Some(ss) = rd.soft_state {
            let node = &mut self.nodes[i];
            if ss.role != Role::Leader {
                node.leader_since = None;
            }
            node.role = ss.role;
            node.leader = ss.leader;
            if let Some(lease) = node.lease.as_mut() {
                lease.on_soft_state(ss.role, ss.leader);
            }
            self.log(|| format!("node {id} soft state {:?} leader {:?}", ss.role, ss.leader));
        }
        // 0. As the driver does: a leader's appends and heartbeats leave before its own fsync.
        let send_all = self.cfg.send_all_before_persist;
        let (early, late): (Vec<_>, Vec<_>) = rd
            .messages
            .into_iter()
            .partition(|m| send_all || m.body.may_precede_persist());
        let sent_early = !early.is_empty();
        for m in early {
            self.send(m);
        }
        self.observe_lease(i, &rd.lease_events);

        // 1. As the driver does: a leader applies (and answers) committed entries that are
        // already in its storage before this Ready's write; those committed on its own unwritten
        // copy wait for it. A mid-Ready crash below then hits a leader that has answered.
        let raw = self.nodes[i].raw.as_ref().unwrap();
        let split = if rd.snapshot.is_none() && raw.status().role == Role::Leader {
            let stored = raw.storage().last_index().unwrap();
            rd.committed_entries.partition_point(|e| e.index <= stored)
        } else {
            0
        };
        let (ready_now, after_write) = rd.committed_entries.split_at(split);
        let mut applied = Applied::default();
        self.apply_committed(i, ready_now, &mut applied)?;
        self.after_apply(i);
        self.stats.applied_before_write += ready_now.len() as u64;
        let answered_early = !applied.done.is_empty();
        for (c, req, out) in std::mem::take(&mut applied.done) {
            self.complete(c, req, out);
        }

        // A crash point worth hitting: messages left and entries are unwritten, or clients
        // were answered before the write.
        let mid_ready_crash = ((sent_early && !rd.entries.is_empty()) || answered_early)
            && self.phase == Phase::Chaos
            && self.cfg.fault_interval_us > 0
            && self.rng.gen_range(0..1000) < self.cfg.mid_ready_crash_per_mille;
        if mid_ready_crash {
            // The process dies before the fsync: nothing of this Ready reaches the disk.
            self.stats.mid_ready_crashes += 1;
            self.stats.crashes_after_early_answers += u64::from(answered_early);
            self.log(|| format!("node {id} crashes before persisting its Ready"));
            self.crash(i);
            let d = self
                .rng
                .gen_range(self.cfg.downtime_us.0..=self.cfg.downtime_us.1);
            self.schedule(self.now + d, Event::Restart(i));
            return self.settle_applied(applied);
        }
        let Sim { nodes, inv, .. } = self;
        let node = &mut nodes[i];
        let raw = node.raw.as_mut().unwrap();

        // 2. Persist: snapshot, entries, hard state.
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

        // 3. Apply the rest of the committed entries.
        self.apply_committed(i, after_write, &mut applied)?;
        self.after_apply(i);

        // 4. Read states; answer reads whose index is applied.
        let node = &mut self.nodes[i];
        for rs in &rd.read_states {
            if let Some(p) = node
                .pending_reads
                .iter_mut()
                .find(|p| p.index.is_none() && p.req.to_le_bytes()[..] == rs.ctx[..])
            {
                p.index = Some(rs.index);
            }
        }
        let sm_applied = node.sm.applied;
        let mut k = 0;
        while k < node.pending_reads.len() {
            if node.pending_reads[k].index.is_some_and(|x| x <= sm_applied) {
                let p = node.pending_reads.swap_remove(k);
                applied
                    .done
                    .push((p.client, p.req, KvOut::Read(node.sm.get(p.key))));
            } else {
                k += 1;
            }
        }

        // 5. Send the rest. (Persisting came first; sending before applying is what the
        // contract says.)
        let snap = rd.snapshot.as_ref().map(|s| s.meta.index);
        let nents = rd.entries.len();
        let ncommit = rd.committed_entries.len();
        if snap.is_some() || nents > 0 || ncommit > 0 {
            self.log(|| {
                format!(
                    "node {id} persists snap {snap:?} +{nents} ents, applies {ncommit} ({split} before the write)"
                )
            });
        }
        for m in late {
            self.send(m);
        }
        for (c, req, out) in std::mem::take(&mut applied.done) {
            self.complete(c, req, out);
        }
        self.settle_applied(applied)
    }

    /// The lease facts of a `Ready`, observed (as the driver does) right after its early sends.
    fn observe_lease(&mut self, i: usize, events: &[LeaseEvent]) {
        let node = &mut self.nodes[i];
        // The lease anchor. Simulated time does not move inside a Ready, so this equals the
        // reading before any of its messages was sent.
        let local = Clock::now(&node.clock.clock);
        if let Some(lease) = node.lease.as_mut() {
            lease.observe(events, local);
        }
        for e in events {
            if let LeaseEvent::BecameLeader { .. } = e {
                node.leader_since = Some(local);
            }
            if node.lease_events.len() == 64 {
                node.lease_events.pop_front();
            }
            node.lease_events.push_back((local, *e));
        }
    }

    /// Apply `entries` (committed, following the applied index) on node `i`'s state machine.
    fn apply_committed(
        &mut self,
        i: usize,
        entries: &[Entry],
        out: &mut Applied,
    ) -> Result<(), String> {
        let id = i as NodeId + 1;
        let Sim {
            nodes,
            inv,
            effective,
            ..
        } = self;
        let node = &mut nodes[i];
        for e in entries {
            if e.index != node.sm.applied + 1 {
                return Err(format!(
                    "node {id} applies index {} but has applied {}",
                    e.index, node.sm.applied
                ));
            }
            if inv.on_apply(id, node.term, e)? {
                out.fresh_commits.push(e.index);
            }
            node.sm.applied = e.index;
            if let EntryPayload::ConfChange(ConfChange::RemoveNode(x)) = e.payload {
                out.removals.push(x);
            }
            if let EntryPayload::Normal(data) = &e.payload {
                let cmd = Command::decode(data)
                    .ok_or_else(|| format!("node {id}: undecodable entry {e:?}"))?;
                if let Some(o) = node.sm.apply(&cmd) {
                    effective.insert(cmd.req);
                    if let Some(c) = node.pending_updates.remove(&cmd.req) {
                        out.done.push((c, cmd.req, o));
                    }
                }
            }
        }
        Ok(())
    }

    /// Tell the lease what is applied; count how long a new leader took to serve lease reads.
    fn after_apply(&mut self, i: usize) {
        let node = &mut self.nodes[i];
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
    }

    /// Shut down members whose removal committed; check that leaders hold what newly committed.
    fn settle_applied(&mut self, applied: Applied) -> Result<(), String> {
        for x in applied.removals {
            let x = x as usize - 1;
            if x < self.nodes.len() && !self.nodes[x].removed {
                // The removal is committed: the removed server shuts down for good, like an
                // operator would after `member remove`.
                self.log(|| format!("REMOVED node {} (committed)", x + 1));
                self.nodes[x].removed = true;
                self.crash(x);
            }
        }
        for index in applied.fresh_commits {
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
}
