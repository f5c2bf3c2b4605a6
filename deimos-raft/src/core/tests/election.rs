//! Elections: timeouts, pre-vote, sticky followers (leader stickiness), check-quorum.

use super::*;

#[test]
fn single_node_elects_itself_and_commits() {
    let mut net = Net::new(&[1]);
    net.tick_all(25);
    assert_eq!(net.leaders(), vec![1]);
    net.node(1).propose(normal(b"x")).unwrap();
    net.settle();
    assert_eq!(net.applied_data(1), vec![b"x".to_vec()]);
}

#[test]
fn three_nodes_elect_one_leader_by_timeout_and_replicate() {
    let mut net = Net::new(&[1, 2, 3]);
    net.tick_all(40);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1);
    let l = leaders[0];
    net.node(l).propose(normal(b"a")).unwrap();
    net.settle();
    for id in [1, 2, 3] {
        assert_eq!(net.applied_data(id), vec![b"a".to_vec()], "node {id}");
    }
}

#[test]
fn election_timeout_is_randomized_within_bounds() {
    let mut n = Raft::new(&cfg(1), MemStorage::new(ConfState::new([1, 2, 3]))).unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        n.reset_randomized_election_timeout();
        assert!((10..20).contains(&n.randomized_election_timeout));
        seen.insert(n.randomized_election_timeout);
    }
    assert!(seen.len() > 5, "timeouts should vary: {seen:?}");
}

#[test]
fn pre_vote_keeps_a_partitioned_node_from_disrupting_the_leader() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let term = net.nodes[&1].term;
    net.isolate(3);
    net.tick_all(100);
    // Pre-vote never succeeds in isolation, so node 3 never bumps its term.
    assert_eq!(net.nodes[&3].term, term);
    net.heal();
    net.tick_all(5);
    assert_eq!(net.leaders(), vec![1]);
    assert_eq!(net.nodes[&1].term, term);
}

#[test]
fn sticky_follower_ignores_votes_while_leader_is_live() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let term = net.nodes[&1].term;
    let vote = |transfer| {
        let body = MessageBody::Vote {
            last_index: 100,
            last_term: term + 5,
            transfer,
        };
        msg(3, 2, term + 5, body)
    };
    // Node 2 hears from the leader, then gets a higher-term vote request from 3.
    net.node(2).step(vote(false)).unwrap();
    assert_eq!(
        net.nodes[&2].term, term,
        "in-lease vote request must be ignored"
    );
    // A transfer-initiated campaign bypasses stickiness.
    net.node(2).step(vote(true)).unwrap();
    assert_eq!(net.nodes[&2].term, term + 5);
    assert_eq!(net.nodes[&2].vote, Some(3));
}

#[test]
fn restarted_node_grants_no_vote_within_an_election_timeout() {
    let mut n = Raft::new(&cfg(2), MemStorage::new(ConfState::new([1, 2, 3]))).unwrap();
    let vote = |t| {
        msg(
            3,
            2,
            t,
            MessageBody::Vote {
                last_index: 5,
                last_term: t,
                transfer: false,
            },
        )
    };
    n.step(vote(4)).unwrap();
    assert_eq!(n.term, 0, "fresh node is quiet");
    for _ in 0..10 {
        n.tick();
        n.election_elapsed = n.election_elapsed.min(10); // keep it from campaigning itself
        n.role = Role::Follower;
    }
    n.step(vote(4)).unwrap();
    assert_eq!((n.term, n.vote), (4, Some(3)));
}

#[test]
fn check_quorum_steps_down_an_isolated_leader() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(1);
    net.tick_all(25);
    assert_ne!(net.nodes[&1].role, Role::Leader);
    let ev = &net.lease_events[&1];
    assert!(ev.iter().any(|e| matches!(
        e,
        LeaseEvent::Revoked {
            reason: LeaseEndReason::StepDown,
            ..
        }
    )));
    // The others elected a new leader meanwhile.
    assert!(net.leaders().iter().any(|&l| l == 2 || l == 3));
}

#[test]
fn sticky_follower_ignores_higher_term_responses() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let t = net.nodes[&1].term;
    let resp = MessageBody::AppendResp {
        reject: false,
        index: 0,
        hint_index: 0,
        hint_term: 0,
    };
    net.node(2).step(msg(3, 2, t + 3, resp)).unwrap();
    assert_eq!((net.nodes[&2].term, net.nodes[&2].leader), (t, Some(1)));
}
