//! Membership changes: learners, one change at a time, removal of the leader, lease restarts.

use super::*;
use crate::reconfig::Refusal;
use crate::status::ReplicationState;

#[test]
fn learner_receives_entries_but_does_not_vote_or_count() {
    let mut net = Net::new(&[1, 2]);
    net.nodes.insert(
        3,
        Raft::new(&cfg(3), MemStorage::new(ConfState::new([1, 2]))).unwrap(),
    );
    net.elect(1);
    net.node(1)
        .propose_conf_change(ConfChange::AddLearner(3))
        .unwrap();
    net.settle();
    net.tick_all(2);
    assert!(net.nodes[&1].prs.conf.learners.contains(&3));
    net.node(1).propose(normal(b"l")).unwrap();
    net.settle();
    assert_eq!(net.applied_data(3), vec![b"l".to_vec()]);
    // With node 2 down the learner cannot help commit.
    net.isolate(2);
    net.node(1).propose(normal(b"m")).unwrap();
    net.settle();
    assert_eq!(net.applied_data(1), vec![b"l".to_vec()]);
    // And a learner never campaigns.
    net.node(3).campaign_now().unwrap();
    assert_eq!(net.nodes[&3].role, Role::Follower);
}

#[test]
fn membership_changes_one_at_a_time() {
    let mut net = Net::new(&[1, 2, 3]);
    net.nodes.insert(
        4,
        Raft::new(&cfg(4), MemStorage::new(ConfState::new([1, 2, 3]))).unwrap(),
    );
    net.elect(1);
    net.node(1)
        .propose_conf_change(ConfChange::AddVoter(4))
        .unwrap();
    assert_eq!(
        net.node(1).propose_conf_change(ConfChange::RemoveNode(2)),
        Err(RaftError::ConfChangePending)
    );
    net.settle();
    assert_eq!(
        net.nodes[&1].prs.conf.voters,
        [1, 2, 3, 4].into_iter().collect()
    );
    net.node(1)
        .propose_conf_change(ConfChange::RemoveNode(2))
        .unwrap();
    net.settle();
    assert_eq!(
        net.nodes[&1].prs.conf.voters,
        [1, 3, 4].into_iter().collect()
    );
    // Quorum is now 2 of {1,3,4}; commits proceed without node 2.
    net.isolate(2);
    net.node(1).propose(normal(b"z")).unwrap();
    net.settle();
    assert_eq!(net.applied_data(4), vec![b"z".to_vec()]);
    assert!(matches!(
        net.node(1).propose_conf_change(ConfChange::RemoveNode(9)),
        Err(RaftError::InvalidConfChange(_))
    ));
}

#[test]
fn removed_leader_steps_down_and_revokes_lease() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1)
        .propose_conf_change(ConfChange::RemoveNode(1))
        .unwrap();
    net.settle();
    assert_ne!(net.nodes[&1].role, Role::Leader);
    assert!(net.lease_events[&1].iter().any(|e| matches!(
        e,
        LeaseEvent::Revoked {
            reason: LeaseEndReason::Removed,
            ..
        }
    )));
    net.tick_all(30);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], 1);
}

/// A leader that removes itself hands over at once: it takes no proposal after the removal, and
/// when the removal applies it tells a voter holding its whole log to campaign, so nobody waits
/// out an election timeout (the others' stickiness refuses other candidates that long).
#[test]
fn removed_leader_hands_over_without_waiting_for_an_election_timeout() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).propose(normal(b"a")).unwrap();
    net.node(1)
        .propose_conf_change(ConfChange::RemoveNode(1))
        .unwrap();
    assert_eq!(
        net.node(1).propose(normal(b"late")),
        Err(RaftError::TransferInProgress)
    );
    net.settle();
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1, "no successor without ticks: {leaders:?}");
    let l = leaders[0];
    assert_ne!(l, 1);
    assert_eq!(net.nodes[&l].prs.conf.voters, [2, 3].into_iter().collect());
    net.node(l).propose(normal(b"b")).unwrap();
    net.settle();
    let other = if l == 2 { 3 } else { 2 };
    assert_eq!(net.applied_data(other), vec![b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn membership_change_restarts_the_lease() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1)
        .propose_conf_change(ConfChange::AddLearner(4))
        .unwrap();
    net.settle();
    assert!(net.lease_events[&1].iter().any(|e| matches!(
        e,
        LeaseEvent::Revoked {
            reason: LeaseEndReason::MembershipChange,
            ..
        }
    )));
}

/// The leader's `Status` carries each member's progress; a member it has not heard from for an
/// election timeout is inactive, and the reconfiguration rules see that.
#[test]
fn status_exposes_progress_and_activity_to_the_reconfiguration_rules() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).propose(normal(b"a")).unwrap();
    net.settle();
    net.tick_all(2);
    let st = net.nodes[&1].status();
    assert_eq!(st.progress.len(), 3);
    for (id, p) in &st.progress {
        assert!(p.active, "{id:016x} should be active");
        assert_eq!(p.matched, st.last_index, "{id:016x}");
        assert_eq!(p.state, ReplicationState::Replicate);
    }
    assert!(
        net.nodes[&2].status().progress.is_empty(),
        "only the leader has progress"
    );
    assert_eq!(st.check_add_voter(), Ok(()));
    assert_eq!(st.check_remove(2), Ok(()));

    // Node 3 goes silent: after an election timeout the leader counts it as down.
    net.isolate(3);
    net.tick_all(10);
    let st = net.nodes[&1].status();
    assert!(!st.progress[&3].active);
    assert!(st.progress[&2].active && st.progress[&1].active);
    assert!(matches!(
        st.check_add_voter(),
        Err(Refusal::AddWouldRiskQuorum { active: 2, .. })
    ));
    assert!(matches!(
        st.check_remove(2),
        Err(Refusal::RemoveWouldRiskQuorum { active: 1, .. })
    ));
    assert_eq!(
        st.check_remove(3),
        Ok(()),
        "removing the dead member is safe"
    );
    net.heal();
    net.tick_all(2);
    assert_eq!(net.nodes[&1].status().check_add_voter(), Ok(()));
}

/// Activity is a sliding window: when check-quorum clears `recent_active` at the end of an
/// election timeout, members heard a tick ago still count as active.
#[test]
fn activity_survives_the_check_quorum_reset() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.tick_all(3);
    while net.nodes[&1].election_elapsed + 1 < net.nodes[&1].election_tick {
        net.tick_all(1);
    }
    // This tick ends the check-quorum period; its heartbeats are not answered yet.
    net.node(1).tick();
    assert!(
        !net.nodes[&1].prs.progress[&2].recent_active,
        "reset happened"
    );
    let st = net.nodes[&1].status();
    assert!(st.progress.values().all(|p| p.active), "{:?}", st.progress);
    assert_eq!(st.check_add_voter(), Ok(()));
    net.settle();
}

/// A learner that missed entries is not promotable until it holds 90% of the committed index;
/// once it catches up it is, the promotion makes it a voter, and it then counts for quorum.
#[test]
fn a_learner_is_promoted_only_after_catching_up() {
    let mut net = Net::new(&[1, 2]);
    net.nodes.insert(
        3,
        Raft::new(&cfg(3), MemStorage::new(ConfState::new([1, 2]))).unwrap(),
    );
    net.elect(1);
    net.isolate(3);
    net.node(1)
        .propose_conf_change(ConfChange::AddLearner(3))
        .unwrap();
    net.settle();
    for i in 0..20u8 {
        net.node(1).propose(normal(&[i])).unwrap();
        net.settle();
    }
    let st = net.nodes[&1].status();
    assert!(st.conf.learners.contains(&3));
    assert!(!st.progress[&3].active);
    assert!(matches!(
        st.check_learner_ready(3),
        Err(Refusal::LearnerNotReady {
            id: 3,
            matched: 0,
            ..
        })
    ));
    assert_eq!(
        st.check_learner_ready(2),
        Err(Refusal::NotALearner { id: 2 })
    );
    // Two active voters stay a majority of three even if the silent learner were promoted.
    assert_eq!(st.check_promote_quorum(3), Ok(()));

    net.heal();
    net.tick_all(3);
    let st = net.nodes[&1].status();
    assert_eq!(st.progress[&3].matched, st.commit);
    assert_eq!(st.check_learner_ready(3), Ok(()));
    assert_eq!(st.check_promote_quorum(3), Ok(()));
    net.node(1)
        .propose_conf_change(ConfChange::AddVoter(3))
        .unwrap();
    net.settle();
    for id in [1, 2, 3] {
        assert_eq!(
            net.nodes[&id].prs.conf.voters,
            [1, 2, 3].into_iter().collect(),
            "node {id}"
        );
        assert!(net.nodes[&id].prs.conf.learners.is_empty(), "node {id}");
    }
    // Now a voter: with node 2 gone, 1 and 3 commit together.
    net.isolate(2);
    net.node(1).propose(normal(b"after")).unwrap();
    net.settle();
    assert_eq!(net.applied_data(3).last(), Some(&b"after".to_vec()));
    assert_eq!(net.applied_data(1).last(), Some(&b"after".to_vec()));
}
