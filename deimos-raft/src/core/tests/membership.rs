//! Membership changes: learners, one change at a time, removal of the leader, lease restarts.

use super::*;

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
