//! Operator-facing safety rules for membership changes, after etcd 3.4's
//! `--strict-reconfig-check` and its learner promotion rule.
//!
//! The core accepts any single-server change; whether a change is *wise* depends on which
//! members are alive, which only the leader can tell (it hears from every member). These rules
//! read nothing but the leader's [`Status`], so the server applies them before proposing and
//! lets an operator override the quorum rules (`force`), never the learner's readiness.
//!
//! Active means heard from within the last minimum election timeout
//! ([`PeerProgress::active`](crate::status::PeerProgress::active)). The quorum rules:
//! - adding a voter: the voters active now must still be a majority of the voters after the
//!   add, which counts the new member as down (it may never start). Otherwise the first failure
//!   of the new member, or the failure of one more, stops the cluster — the outage issue 22
//!   describes. Unlike etcd, growing one voter to two is refused as well: that is exactly the
//!   case where the cluster stops until the second member runs; add it as a learner instead;
//! - removing a voter: the active voters that remain must be a majority of the voters that
//!   remain (etcd's `isReadyToRemoveVotingMember`);
//! - promoting a learner: as adding a voter, with the learner counted if it is active.
//!
//! A learner is ready for promotion once its log holds at least
//! [`LEARNER_READY_PERCENT`]% of the leader's committed index (etcd compares with the leader's
//! own match, which differs only by entries still in flight). A voter that joined far behind
//! would count toward quorum long before it could acknowledge anything new.

use thiserror::Error;

use crate::quorum::majority;
use crate::status::Status;
use crate::types::{Index, NodeId, Role};

/// How far a learner's log must reach, in percent of the leader's commit index, before it may
/// become a voter (etcd's `readyPercent`, 0.9).
pub const LEARNER_READY_PERCENT: u64 = 90;

/// Why a membership change is refused. Messages follow etcd's wording where etcd has one;
/// ids print in hex, as everywhere else.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// Asked of a node that is not the leader (or has no progress view yet).
    #[error("not the leader: only the leader knows which members are active")]
    NotLeader,
    #[error(
        "membership: too many unavailable members to add a voter safely ({active} of {voters} \
         voters active, {needed} of {after} needed once it is added); add it as a learner, or \
         start the members first (force=true overrides)"
    )]
    /// Adding a voter now would leave too few active voters for a quorum of the larger cluster.
    AddWouldRiskQuorum {
        /// Voters heard from recently.
        active: usize,
        /// Voters now.
        voters: usize,
        /// Voters after the add.
        after: usize,
        /// A majority of `after`.
        needed: usize,
    },
    #[error(
        "membership: removing {id:016x} would leave {active} active of {after} voters, fewer than \
         the {needed} a quorum needs; start the members first (force=true overrides)"
    )]
    /// Removing this voter would leave too few active voters for a quorum of the rest.
    RemoveWouldRiskQuorum {
        /// The voter to remove.
        id: NodeId,
        /// Active voters that would remain.
        active: usize,
        /// Voters that would remain.
        after: usize,
        /// A majority of `after`.
        needed: usize,
    },
    #[error(
        "membership: promoting {id:016x} would leave {active} active of {after} voters, fewer than \
         the {needed} a quorum needs; start the members first (force=true overrides)"
    )]
    /// Promoting this learner would leave too few active voters for a quorum of the larger cluster.
    PromoteWouldRiskQuorum {
        /// The learner to promote.
        id: NodeId,
        /// Active voters after the promotion (the learner counted if it is active).
        active: usize,
        /// Voters after the promotion.
        after: usize,
        /// A majority of `after`.
        needed: usize,
    },
    /// Only a learner can be promoted.
    #[error("membership: can only promote a learner member ({id:016x} is not one)")]
    NotALearner {
        /// The member asked to be promoted.
        id: NodeId,
    },
    #[error(
        "membership: can only promote a learner member which is in sync with leader ({id:016x} \
         has {matched} of {commit} committed entries; {LEARNER_READY_PERCENT}% needed)"
    )]
    /// The learner's log is too far behind to start voting.
    LearnerNotReady {
        /// The learner.
        id: NodeId,
        /// The last index its log is known to hold.
        matched: Index,
        /// The leader's commit index.
        commit: Index,
    },
}

impl Status {
    fn leader_only(&self) -> Result<(), Refusal> {
        if self.role == Role::Leader && !self.progress.is_empty() {
            Ok(())
        } else {
            Err(Refusal::NotLeader)
        }
    }

    fn is_active(&self, id: NodeId) -> bool {
        self.progress.get(&id).is_some_and(|p| p.active)
    }

    /// Voters the leader heard from recently, leaving out `except`.
    fn active_voters(&self, except: Option<NodeId>) -> usize {
        self.conf
            .voters
            .iter()
            .filter(|&&id| Some(id) != except && self.is_active(id))
            .count()
    }

    /// May a new voter (not yet running) be added? See the module docs.
    pub fn check_add_voter(&self) -> Result<(), Refusal> {
        self.leader_only()?;
        let voters = self.conf.voters.len();
        let (active, after) = (self.active_voters(None), voters + 1);
        let needed = majority(after);
        if active < needed {
            return Err(Refusal::AddWouldRiskQuorum {
                active,
                voters,
                after,
                needed,
            });
        }
        Ok(())
    }

    /// May `id` be removed? Removing a learner or a non-member never affects quorum.
    pub fn check_remove(&self, id: NodeId) -> Result<(), Refusal> {
        self.leader_only()?;
        if !self.conf.voters.contains(&id) {
            return Ok(());
        }
        let after = self.conf.voters.len() - 1;
        let (active, needed) = (self.active_voters(Some(id)), majority(after));
        // Removing the last voter is the core's to refuse (`InvalidConfChange`).
        if after > 0 && active < needed {
            return Err(Refusal::RemoveWouldRiskQuorum {
                id,
                active,
                after,
                needed,
            });
        }
        Ok(())
    }

    /// Is `id` a learner whose log has caught up with the leader's? Not overridable: a voter
    /// far behind counts toward quorum while it cannot help commit.
    pub fn check_learner_ready(&self, id: NodeId) -> Result<(), Refusal> {
        self.leader_only()?;
        if !self.conf.learners.contains(&id) {
            return Err(Refusal::NotALearner { id });
        }
        let matched = self.progress.get(&id).map_or(0, |p| p.matched);
        let commit = self.commit;
        if u128::from(matched) * 100 < u128::from(commit) * u128::from(LEARNER_READY_PERCENT) {
            return Err(Refusal::LearnerNotReady {
                id,
                matched,
                commit,
            });
        }
        Ok(())
    }

    /// May learner `id` become a voter without risking quorum? It counts if it is active.
    pub fn check_promote_quorum(&self, id: NodeId) -> Result<(), Refusal> {
        self.leader_only()?;
        let after = self.conf.voters.len() + 1;
        let active = self.active_voters(None) + usize::from(self.is_active(id));
        let needed = majority(after);
        if active < needed {
            return Err(Refusal::PromoteWouldRiskQuorum {
                id,
                active,
                after,
                needed,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::status::{PeerProgress, ReplicationState};
    use crate::types::ConfState;

    /// A leader (id 1) status: `voters` and `learners` with `(id, matched, active)`.
    fn leader(
        commit: Index,
        voters: &[(NodeId, Index, bool)],
        learners: &[(NodeId, Index, bool)],
    ) -> Status {
        let mut conf = ConfState::new(voters.iter().map(|v| v.0));
        conf.learners = learners.iter().map(|l| l.0).collect();
        let progress: BTreeMap<_, _> = voters
            .iter()
            .chain(learners)
            .map(|&(id, matched, active)| {
                let p = PeerProgress {
                    matched,
                    next: matched.saturating_add(1),
                    state: ReplicationState::Replicate,
                    active,
                };
                (id, p)
            })
            .collect();
        Status {
            id: 1,
            term: 2,
            vote: Some(1),
            role: Role::Leader,
            leader: Some(1),
            commit,
            applied: commit,
            last_index: commit,
            conf,
            progress,
        }
    }

    #[test]
    fn adding_a_voter_needs_a_quorum_of_the_new_size_without_it() {
        let all = leader(10, &[(1, 10, true), (2, 10, true), (3, 10, true)], &[]);
        assert_eq!(all.check_add_voter(), Ok(()));
        // 3 -> 4 with one voter down: 2 active, 3 needed.
        let one_down = leader(10, &[(1, 10, true), (2, 10, true), (3, 0, false)], &[]);
        assert_eq!(
            one_down.check_add_voter(),
            Err(Refusal::AddWouldRiskQuorum {
                active: 2,
                voters: 3,
                after: 4,
                needed: 3
            })
        );
        // 4 -> 5 with one down: 3 of 5 is a majority.
        let four = leader(
            10,
            &[(1, 10, true), (2, 10, true), (3, 10, true), (4, 0, false)],
            &[],
        );
        assert_eq!(four.check_add_voter(), Ok(()));
        // 1 -> 2 always risks quorum (etcd allows it; the learner path is the safe one).
        let single = leader(10, &[(1, 10, true)], &[]);
        assert!(matches!(
            single.check_add_voter(),
            Err(Refusal::AddWouldRiskQuorum { needed: 2, .. })
        ));
        // Learners do not count.
        let learners = leader(
            10,
            &[(1, 10, true), (2, 10, true), (3, 0, false)],
            &[(4, 10, true)],
        );
        assert!(learners.check_add_voter().is_err());
    }

    #[test]
    fn removing_a_voter_needs_a_quorum_of_the_rest() {
        let one_down = leader(
            10,
            &[(1, 10, true), (2, 10, true), (3, 0, false)],
            &[(4, 0, false)],
        );
        // Removing the dead one leaves 2 of 2.
        assert_eq!(one_down.check_remove(3), Ok(()));
        // Removing a live one leaves 1 active of 2.
        assert_eq!(
            one_down.check_remove(2),
            Err(Refusal::RemoveWouldRiskQuorum {
                id: 2,
                active: 1,
                after: 2,
                needed: 2
            })
        );
        // Learners and strangers are always removable.
        assert_eq!(one_down.check_remove(4), Ok(()));
        assert_eq!(one_down.check_remove(99), Ok(()));
        // The leader may remove itself when the others are up.
        let all = leader(10, &[(1, 10, true), (2, 10, true), (3, 10, true)], &[]);
        assert_eq!(all.check_remove(1), Ok(()));
    }

    #[test]
    fn a_learner_is_promotable_at_ninety_percent_of_the_commit_index() {
        let s = leader(
            1000,
            &[(1, 1000, true), (2, 1000, true)],
            &[(3, 899, true), (4, 900, true)],
        );
        assert_eq!(
            s.check_learner_ready(3),
            Err(Refusal::LearnerNotReady {
                id: 3,
                matched: 899,
                commit: 1000
            })
        );
        assert_eq!(s.check_learner_ready(4), Ok(()));
        assert_eq!(
            s.check_learner_ready(2),
            Err(Refusal::NotALearner { id: 2 })
        );
        assert_eq!(
            s.check_learner_ready(9),
            Err(Refusal::NotALearner { id: 9 })
        );
        // No overflow near the top of the index space.
        let big = leader(u64::MAX, &[(1, u64::MAX, true)], &[(3, u64::MAX - 1, true)]);
        assert_eq!(big.check_learner_ready(3), Ok(()));
    }

    #[test]
    fn promoting_counts_the_learner_only_if_it_is_active() {
        let s = leader(
            10,
            &[(1, 10, true), (2, 10, true), (3, 0, false)],
            &[(4, 10, true), (5, 10, false)],
        );
        assert_eq!(s.check_promote_quorum(4), Ok(()));
        assert_eq!(
            s.check_promote_quorum(5),
            Err(Refusal::PromoteWouldRiskQuorum {
                id: 5,
                active: 2,
                after: 4,
                needed: 3
            })
        );
        // Growing one voter through a learner is the safe path.
        let single = leader(10, &[(1, 10, true)], &[(2, 10, true)]);
        assert_eq!(single.check_promote_quorum(2), Ok(()));
    }

    #[test]
    fn only_a_leader_can_judge() {
        let mut s = leader(10, &[(1, 10, true), (2, 10, true), (3, 10, true)], &[]);
        s.role = Role::Follower;
        assert_eq!(s.check_add_voter(), Err(Refusal::NotLeader));
        s.role = Role::Leader;
        s.progress.clear();
        assert_eq!(s.check_remove(2), Err(Refusal::NotLeader));
    }
}
