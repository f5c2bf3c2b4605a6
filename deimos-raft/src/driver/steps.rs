//! What each [`Step`](super::plan::Step) of a `Ready`'s plan does; the order is in
//! [`plan`](super::plan), the loop that follows it in `Driver::handle_ready`.

use std::time::Instant;

use super::{envelope, metrics, ApplyBatch, Command, Driver, DriverError, FatalError};
use super::{StateMachine, Transport};
use crate::clock::Clock;
use crate::error::RaftError;
use crate::ids::{Id, Ids};
use crate::storage::LogStorage;
use crate::types::{ConfChange, EntryPayload, HardState, Index, ReadState, Role, Snapshot, Term};

impl<S, T, M, C> Driver<S, T, M, C>
where
    S: LogStorage + Send + 'static,
    T: Transport,
    M: StateMachine<S>,
    C: Clock + Clone + 'static,
{
    pub(super) fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), FatalError> {
        let started = Instant::now();
        self.node.storage_mut().apply_snapshot(snap)?;
        self.sm.restore(self.node.storage_mut(), snap)?;
        self.conf = snap.meta.conf.clone();
        self.last_compaction = snap.meta.index;
        // Operators (and the membership tests) need to see that a member caught up by
        // snapshot rather than from the log, and how long the install stalled it.
        ::metrics::counter!(metrics::SNAPSHOTS_INSTALLED).increment(1);
        let first = self.node.storage().first_index()?;
        ::metrics::gauge!(metrics::LOG_FIRST_INDEX).set(first as f64);
        tracing::info!(
            index = snap.meta.index,
            term = snap.meta.term,
            bytes = snap.data.len(),
            duration = ?started.elapsed(),
            voters = %Ids(&snap.meta.conf.voters),
            learners = %Ids(&snap.meta.conf.learners),
            "snapshot installed"
        );
        Ok(())
    }

    pub(super) fn persist(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[crate::types::Entry],
    ) -> Result<(), FatalError> {
        let started = Instant::now();
        self.node.storage_mut().persist(hard_state, entries)?;
        if !entries.is_empty() || hard_state.is_some() {
            metrics::persist(started.elapsed());
        }
        if let Some(hs) = hard_state {
            self.log_term(hs.term);
        }
        Ok(())
    }

    pub(super) fn publish_snapshot_applied(&mut self, idx: Index) {
        // Never `send_*(f(*tx.borrow()))`: the borrow's read guard lives to the end of the
        // statement and the send waits for it — the driver deadlocked itself here on every
        // snapshot install (issue 22).
        self.applied_tx.send_if_modified(|applied| {
            let grew = idx > *applied;
            *applied = (*applied).max(idx);
            grew
        });
        self.lease.on_applied(idx);
    }

    pub(super) fn answer_reads(&mut self, read_states: Vec<ReadState>) {
        for rs in read_states {
            let Ok(bytes) = <[u8; 8]>::try_from(rs.ctx.as_slice()) else {
                continue;
            };
            if let Some(reply) = self.reads.remove(&u64::from_be_bytes(bytes)) {
                let _ = reply.send(Ok(rs.index));
            }
        }
    }

    pub(super) fn advance(&mut self) -> Result<(), FatalError> {
        self.node.advance();
        self.publish_status();
        for (reply, result) in self.conf_answers.drain(..) {
            let _ = reply.send(result);
        }
        self.maybe_compact()
    }

    pub(super) fn on_soft_state(&mut self, role: Role, leader: Option<u64>) {
        ::metrics::gauge!(metrics::HAS_LEADER).set(if leader.is_some() { 1.0 } else { 0.0 });
        ::metrics::gauge!(metrics::IS_LEADER).set(if role == Role::Leader { 1.0 } else { 0.0 });
        let term = self.node.status().term;
        self.log_term(term);
        if role != self.last_role {
            tracing::info!(
                from = self.last_role.as_str(),
                to = role.as_str(),
                term,
                "raft role changed"
            );
            self.last_role = role;
        }
        if leader != self.last_leader {
            match (self.last_leader, leader) {
                (None, Some(l)) => tracing::info!(leader = %Id(l), term, "leader elected"),
                (Some(was), None) => tracing::info!(was = %Id(was), term, "leader lost"),
                (Some(was), Some(l)) => {
                    tracing::info!(was = %Id(was), leader = %Id(l), term, "leader changed")
                }
                (None, None) => {}
            }
            if leader.is_some() {
                ::metrics::counter!(metrics::LEADER_CHANGES).increment(1);
            }
            self.last_leader = leader;
        }
        self.lease.on_soft_state(role, leader);
        if role != Role::Leader {
            // Reads waiting on this node as leader cannot be confirmed any more; their callers
            // retry (a follower's forwarded reads are simply never answered and time out).
            let me = self.node.status().id;
            if leader != Some(me) {
                for (_, reply) in self.reads.drain() {
                    let _ = reply.send(Err(DriverError::Raft(RaftError::NotLeader { leader })));
                }
            }
        }
    }

    /// Log a term change once, whichever input brought it.
    fn log_term(&mut self, term: Term) {
        if term != self.last_term {
            tracing::info!(from = self.last_term, to = term, "raft term changed");
            self.last_term = term;
        }
    }

    pub(super) fn apply(&mut self, entries: &[crate::types::Entry]) -> Result<(), FatalError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let started = Instant::now();
        let me = self.node.status().id;
        let mut commands = Vec::new();
        let mut conf_changes = Vec::new();
        let mut origins = Vec::new();
        let mut barriers = Vec::new();
        for e in entries {
            match &e.payload {
                EntryPayload::Normal(data) => {
                    if let Some((origin, seq, payload)) = envelope::unwrap(data) {
                        if payload.is_empty() {
                            // A log read's barrier: nothing for the state machine.
                            if origin == me {
                                barriers.push((seq, e.index));
                            }
                            continue;
                        }
                        commands.push(Command {
                            index: e.index,
                            term: e.term,
                            data: payload,
                        });
                        origins.push((origin, seq));
                    }
                }
                EntryPayload::ConfChange(cc) => {
                    self.conf.apply(*cc);
                    conf_changes.push((e.index, *cc));
                    let (what, id) = match *cc {
                        ConfChange::AddVoter(id) => ("add voter", id),
                        ConfChange::AddLearner(id) => ("add learner", id),
                        ConfChange::RemoveNode(id) => ("remove", id),
                    };
                    tracing::info!(
                        index = e.index,
                        change = what,
                        member = %Id(id),
                        voters = %Ids(&self.conf.voters),
                        learners = %Ids(&self.conf.learners),
                        "membership change applied"
                    );
                }
                EntryPayload::Empty => {}
            }
        }
        let batch = ApplyBatch {
            commands,
            conf_changes,
            applied: last.index,
            applied_term: last.term,
            conf: &self.conf,
        };
        let outputs = self.sm.apply(self.node.storage_mut(), batch)?;
        metrics::apply(started.elapsed());
        // Publish before answering: a client that saw its write acknowledged must find it
        // applied (and committed) in any read that follows.
        self.applied_tx.send_replace(last.index);
        self.lease.on_applied(last.index);
        self.publish_status();
        for ((origin, seq), out) in origins.into_iter().zip(outputs) {
            if origin != me {
                continue;
            }
            if let Some(reply) = self.proposals.remove(&seq) {
                ::metrics::counter!(metrics::PROPOSALS_COMMITTED).increment(1);
                let _ = reply.send(Ok(out));
            }
        }
        for (seq, index) in barriers {
            for reply in self.barriers.remove(&seq).unwrap_or_default() {
                let _ = reply.send(Ok(index));
            }
        }
        self.answer_conf_waiters(entries);
        Ok(())
    }

    /// A waiting membership change is answered once its index is applied: done if the entry
    /// there is still ours (same term, a change), dropped if a new leader's entry replaced it.
    /// One whose index a snapshot skipped has an unknown outcome; its caller times out.
    fn answer_conf_waiters(&mut self, applied: &[crate::types::Entry]) {
        let (Some(first), Some(last)) = (applied.first(), applied.last()) else {
            return;
        };
        let range = first.index..=last.index;
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.conf_waiters)
            .into_iter()
            .partition(|(index, _, _)| range.contains(index));
        self.conf_waiters = waiting;
        for (index, term, reply) in due {
            // Applied entries are contiguous, and `range` holds `index`.
            let e = &applied[(index - first.index) as usize];
            let ours = e.term == term && matches!(e.payload, EntryPayload::ConfChange(_));
            let result = if ours {
                Ok(())
            } else {
                Err(DriverError::Dropped)
            };
            self.conf_answers.push((reply, result));
        }
    }

    fn maybe_compact(&mut self) -> Result<(), FatalError> {
        let applied = *self.applied_tx.borrow();
        if applied >= self.last_compaction + self.snapshot_count {
            let before = self.node.storage().first_index()?;
            self.sm.compact(self.node.storage_mut(), applied)?;
            self.last_compaction = applied;
            let after = self.node.storage().first_index()?;
            // The state machine keeps its catch-up entries, so an early compaction may trim
            // nothing; count only those that moved the log's start.
            if after > before {
                ::metrics::counter!(metrics::LOG_COMPACTIONS).increment(1);
                ::metrics::gauge!(metrics::LOG_FIRST_INDEX).set(after as f64);
                tracing::debug!(applied, first_index = after, "raft log compacted");
            }
        }
        Ok(())
    }

    pub(super) fn publish_status(&mut self) {
        let refused = self.node.refused();
        if refused.total() != self.refused_exported {
            self.refused_exported = refused.total();
            for (r, n) in refused.iter() {
                ::metrics::counter!(metrics::MESSAGES_REFUSED, "reason" => r.as_str()).absolute(n);
            }
        }
        let mut st = self.node.status();
        st.applied = st.applied.max(*self.applied_tx.borrow());
        ::metrics::gauge!(metrics::TERM).set(st.term as f64);
        ::metrics::gauge!(metrics::COMMIT_INDEX).set(st.commit as f64);
        ::metrics::gauge!(metrics::APPLIED_INDEX).set(st.applied as f64);
        self.status_tx.send_if_modified(|cur| {
            if *cur != st {
                *cur = st;
                true
            } else {
                false
            }
        });
    }
}
