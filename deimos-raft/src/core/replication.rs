//! Log replication: appends with pipelining and a bounded in-flight window, fast back-off on
//! rejection, the commit rule, and install-snapshot for followers whose next entry is compacted.

use super::Raft;
use crate::log::AppendRefused;
use crate::storage::{LogStorage, StorageError};
use crate::tracker::ProgressState;
use crate::types::*;

impl<S: LogStorage> Raft<S> {
    pub(crate) fn broadcast_append(&mut self) {
        for to in self.peers() {
            self.maybe_send_append(to, true);
        }
    }

    /// Send `to` what it lacks, respecting its progress state. Returns whether a message was sent.
    pub(crate) fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(pr) = self.prs.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next;
        let prev_term = self.log.term(next - 1);
        let entries = self
            .log
            .slice(next, self.log.last_index() + 1, Some(self.max_msg_size));
        let (prev_term, entries) = match (prev_term, entries) {
            (Ok(t), Ok(e)) => (t, e),
            _ => return self.send_snapshot(to),
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let Some(pr) = self.prs.progress.get_mut(&to) else {
            return false;
        };
        pr.sent = pr.sent.max(next - 1 + entries.len() as u64);
        if let Some(last) = entries.last().map(|e| e.index) {
            match pr.state {
                ProgressState::Replicate => {
                    pr.optimistic_update(last);
                    pr.inflights.add(last);
                }
                ProgressState::Probe => pr.probe_sent = true,
                ProgressState::Snapshot { .. } => unreachable!("paused"),
            }
        }
        let commit = self.log.committed;
        self.send(
            to,
            MessageBody::Append {
                prev_index: next - 1,
                prev_term,
                entries,
                commit,
            },
        );
        true
    }

    fn send_snapshot(&mut self, to: NodeId) -> bool {
        if !self.prs.progress.get(&to).is_some_and(|p| p.recent_active) {
            return false;
        }
        let snapshot = match self.log.snapshot() {
            Ok(s) if !s.is_empty() => s,
            Ok(_) | Err(StorageError::SnapshotTemporarilyUnavailable) => return false,
            Err(e) => {
                tracing::error!(error = %e, follower = %crate::ids::Id(to), "cannot read a snapshot to send");
                return false;
            }
        };
        if let Some(pr) = self.prs.progress.get_mut(&to) {
            pr.become_snapshot(snapshot.meta.index);
            pr.sent = pr.sent.max(snapshot.meta.index);
        }
        self.send(to, MessageBody::InstallSnapshot { snapshot });
        true
    }

    /// Leader: a snapshot stuck in flight (lost message, crashed receiver) is given up after an
    /// election timeout so that probing resumes.
    pub(crate) fn tick_snapshot_retries(&mut self) {
        let limit = self.election_tick;
        for p in self.prs.progress.values_mut() {
            if let ProgressState::Snapshot { .. } = p.state {
                p.snapshot_ticks += 1;
                if p.snapshot_ticks >= limit {
                    p.become_probe();
                }
            }
        }
    }

    /// Report from the transport that a snapshot to `to` finished (or failed).
    pub fn report_snapshot(&mut self, to: NodeId, ok: bool) {
        if let Some(p) = self.prs.progress.get_mut(&to) {
            if let ProgressState::Snapshot { .. } = p.state {
                if !ok {
                    p.matched = p.matched.min(p.next.saturating_sub(1));
                }
                p.become_probe();
                p.probe_sent = ok; // on success wait for the follower's answer
            }
        }
    }

    /// Report from the transport that `to` could not be reached: stop pipelining blindly.
    pub fn report_unreachable(&mut self, to: NodeId) {
        if let Some(p) = self.prs.progress.get_mut(&to) {
            if p.state == ProgressState::Replicate {
                p.become_probe();
            }
        }
    }

    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        reject: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    ) {
        let Some(pr) = self.prs.progress.get(&from) else {
            return;
        };
        if reject {
            let next_probe = if hint_term > 0 {
                self.log.find_conflict_by_term(hint_index, hint_term).0
            } else {
                hint_index
            };
            let Some(pr) = self.prs.progress.get_mut(&from) else {
                return;
            };
            if pr.maybe_decr_to(index, next_probe) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.maybe_send_append(from, true);
            }
            return;
        }
        let was_paused = pr.is_paused();
        let Some(pr) = self.prs.progress.get_mut(&from) else {
            return;
        };
        // An honest follower acknowledges at most what we offered it this term, or its own
        // commit index when that is higher (then it holds our entries up to what we offered:
        // committed entries are the same everywhere). Never more: see `Progress::sent`.
        let index = index.min(pr.sent);
        if !pr.maybe_update(index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot { pending } if pr.matched >= pending => {
                pr.become_probe();
                pr.become_replicate();
            }
            ProgressState::Snapshot { .. } => {}
            ProgressState::Replicate => pr.inflights.free_le(index),
        }
        if self.maybe_commit() {
            self.on_commit_advanced();
            self.broadcast_append();
        } else if was_paused {
            self.maybe_send_append(from, true);
        }
        while self.maybe_send_append(from, false) {}
        if Some(from) == self.lead_transferee {
            let matched = self.prs.progress.get(&from).map_or(0, |p| p.matched);
            if matched == self.log.last_index() {
                self.send(from, MessageBody::TimeoutNow);
            }
        }
    }

    /// Advance commit to what a majority holds, if it is of our term (or the knob is set).
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let mci = self.prs.committed_index();
        let term = self.term;
        self.log
            .maybe_commit(mci, term, self.knobs.weaken_commit_rule)
    }

    /// Follower: AppendEntries.
    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    ) {
        if prev_index < self.log.committed {
            // Already committed here; tell the leader where we are.
            self.ack_append(from, self.log.committed);
            return;
        }
        // `validate` made the entries contiguous from `prev_index + 1 > committed`, so the log
        // refuses nothing here; if it did, the message is dropped like any impossible one.
        match self
            .log
            .maybe_append(prev_index, prev_term, commit, &entries)
        {
            Err(AppendRefused::ConflictsWithCommitted) => {
                self.refuse(super::Refusal::ConflictsWithCommitted, from, self.term)
            }
            Err(AppendRefused::NotContiguous) => {
                self.refuse(super::Refusal::MalformedAppend, from, self.term)
            }
            Ok(Some(last)) => self.ack_append(from, last),
            Ok(None) => {
                let hint = prev_index.min(self.log.last_index());
                let (hint_index, hint_term) = self.log.find_conflict_by_term(hint, prev_term);
                self.send(
                    from,
                    MessageBody::AppendResp {
                        reject: true,
                        index: prev_index,
                        hint_index,
                        hint_term,
                    },
                );
            }
        }
    }

    /// Tell the leader our log matches its log up to `index`.
    fn ack_append(&mut self, to: NodeId, index: Index) {
        self.send(
            to,
            MessageBody::AppendResp {
                reject: false,
                index,
                hint_index: 0,
                hint_term: 0,
            },
        );
    }

    /// Follower: InstallSnapshot.
    pub(crate) fn handle_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        let (idx, term) = (snapshot.meta.index, snapshot.meta.term);
        if idx <= self.log.committed {
            self.ack_append(from, self.log.committed);
            return;
        }
        if self.log.match_term(idx, term) {
            // We already have the entries; just learn that they are committed.
            self.log.commit_to(idx);
            self.ack_append(from, self.log.committed);
            return;
        }
        self.prs.conf = snapshot.meta.conf.clone();
        let last = self.log.last_index().max(idx);
        self.prs.reset_progress(last + 1, self.id, idx);
        self.log.restore(snapshot);
        self.ack_append(from, idx);
    }
}
