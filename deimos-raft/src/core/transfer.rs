//! Leader transfer (Raft thesis §3.10): bring the target up to date, then tell it to campaign at
//! once with `TimeoutNow`. The lease is revoked first — and stays forbidden for the rest of the
//! term — because the target's election ignores leader stickiness.

use super::Raft;
use crate::error::RaftError;
use crate::storage::LogStorage;
use crate::types::*;

impl<S: LogStorage> Raft<S> {
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.id || self.lead_transferee == Some(to) {
            return Ok(());
        }
        if !self.prs.is_voter(to) {
            return Err(RaftError::InvalidConfChange(format!(
                "transfer target {} is not a voter",
                crate::ids::Id(to)
            )));
        }
        if !self.lease_forbidden {
            self.lease_forbidden = true;
            self.lease_events.push(LeaseEvent::Revoked {
                term: self.term,
                reason: LeaseEndReason::Transfer,
            });
        }
        self.lead_transferee = Some(to);
        // The transfer must finish within an election timeout or it is aborted.
        self.election_elapsed = 0;
        let caught_up = self
            .prs
            .progress
            .get(&to)
            .is_some_and(|p| p.matched == self.log.last_index());
        if caught_up {
            self.send(to, MessageBody::TimeoutNow);
        } else {
            self.maybe_send_append(to, true);
        }
        Ok(())
    }

    /// Give up a transfer that did not complete; the lease stays forbidden for this term.
    pub(crate) fn abort_transfer(&mut self) {
        self.lead_transferee = None;
    }
}
