//! Handing work out and taking it back: `ready()` collects what the driver must persist, send
//! and apply since the last `Ready`; `advance()` records that it was done (stable log, applied
//! index, configuration changes); `status()` is the point-in-time view.

use std::collections::BTreeMap;

use super::{InReady, Raft};
use crate::ready::Ready;
use crate::status::Status;
use crate::storage::LogStorage;
use crate::types::*;

impl<S: LogStorage> Raft<S> {
    pub fn ready(&mut self) -> Ready {
        assert!(
            self.in_ready.is_none(),
            "ready() called again before advance()"
        );
        if self.round_needed && self.role == Role::Leader {
            self.broadcast_heartbeat_round();
        }
        let snapshot = self.log.unstable_snapshot().cloned();
        let entries = self.log.unstable_entries().to_vec();
        let committed_entries = self
            .log
            .take_next_committed(Some(self.max_msg_size.max(1 << 20)));
        let conf_changes = committed_entries
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::ConfChange(cc) => Some(*cc),
                _ => None,
            })
            .collect();
        let soft = self.soft_state();
        let hard = self.hard_state();
        let rd = Ready {
            soft_state: (soft != self.prev_soft).then_some(soft),
            hard_state: (hard != self.prev_hard).then_some(hard),
            snapshot: snapshot.clone(),
            committed_entries,
            messages: std::mem::take(&mut self.msgs),
            read_states: std::mem::take(&mut self.read_states),
            lease_events: std::mem::take(&mut self.lease_events),
            entries,
        };
        self.prev_soft = soft;
        self.prev_hard = hard;
        self.in_ready = Some(InReady {
            snapshot_index: snapshot.map(|s| s.meta.index),
            last_entry: rd.entries.last().map(|e| (e.index, e.term)),
            applied_to: rd
                .committed_entries
                .last()
                .map_or(self.log.applying, |e| e.index),
            conf_changes,
        });
        rd
    }

    pub fn advance(&mut self) {
        let Some(r) = self.in_ready.take() else {
            return;
        };
        if let Some(idx) = r.snapshot_index {
            self.log.stable_snap_to(idx);
        }
        if let Some((idx, term)) = r.last_entry {
            self.log.stable_to(idx, term);
        }
        self.log.applied_to(r.applied_to);
        for cc in r.conf_changes {
            self.apply_conf_change(cc);
        }
        if self.role == Role::Leader {
            self.on_commit_advanced();
        }
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            term: self.term,
            vote: self.vote,
            role: self.role,
            leader: self.leader,
            commit: self.log.committed,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            conf: self.prs.conf.clone(),
            // Only the leader's progress means anything; elsewhere it is stale or placeholder.
            progress: if self.role == Role::Leader {
                self.prs.view(self.id, self.election_tick)
            } else {
                BTreeMap::new()
            },
        }
    }
}
