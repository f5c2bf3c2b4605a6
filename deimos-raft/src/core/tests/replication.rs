//! Replication: forwarding proposals, the commit rule, log repair, snapshots, pipelining.

use super::*;

#[test]
fn follower_forwards_proposals_and_refuses_without_leader() {
    let mut net = Net::new(&[1, 2, 3]);
    assert_eq!(
        net.node(2).propose(normal(b"x")),
        Err(RaftError::NotLeader { leader: None })
    );
    net.elect(1);
    net.node(2).propose(normal(b"y")).unwrap();
    net.settle();
    assert_eq!(net.applied_data(3), vec![b"y".to_vec()]);
}

#[test]
fn commit_requires_an_entry_of_the_current_term() {
    // Everyone holds index 2 from term 2, committed only to 1.
    let stores = [1, 2, 3]
        .iter()
        .map(|&id| {
            let mut s = MemStorage::new(ConfState::new([1, 2, 3]));
            s.append(&[
                Entry {
                    index: 1,
                    term: 1,
                    payload: EntryPayload::Empty,
                },
                Entry {
                    index: 2,
                    term: 2,
                    payload: EntryPayload::Normal(b"old".to_vec()),
                },
            ])
            .unwrap();
            s.set_hard_state(&HardState {
                term: 2,
                vote: None,
                commit: 1,
            })
            .unwrap();
            (id, s)
        })
        .collect();
    let mut net = Net::with_storage(stores);
    // Let followers acknowledge index 2 but never receive index 3 (the new leader's entry).
    net.filter = Some(Box::new(
        |m| matches!(&m.body, MessageBody::Append { entries, .. } if entries.iter().any(|e| e.index >= 3)),
    ));
    net.elect(1);
    assert_eq!(net.nodes[&1].term, 3);
    net.tick_all(3);
    assert_eq!(
        net.nodes[&1].log.committed, 1,
        "index 2 is replicated everywhere but is not of term 3"
    );
    net.filter = None;
    net.tick_all(3);
    assert_eq!(net.nodes[&1].log.committed, 3);
    assert_eq!(net.applied_data(2), vec![b"old".to_vec()]);
}

#[test]
fn divergent_follower_log_is_repaired_with_fast_backoff() {
    let mk = |terms: &[Term]| {
        let mut s = MemStorage::new(ConfState::new([1, 2, 3]));
        let ents: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry {
                index: i as u64 + 1,
                term: t,
                payload: EntryPayload::Empty,
            })
            .collect();
        s.append(&ents).unwrap();
        s.set_hard_state(&HardState {
            term: *terms.last().unwrap(),
            vote: None,
            commit: 1,
        })
        .unwrap();
        s
    };
    let stores = vec![
        (1, mk(&[1, 1, 4, 4, 5, 5])),
        (2, mk(&[1, 1, 2, 2, 2, 2, 3, 3, 3, 3])),
        (3, mk(&[1, 1, 4, 4])),
    ];
    let mut net = Net::with_storage(stores);
    let mut appends = 0;
    net.elect(1);
    for _ in 0..3 {
        net.tick_all(1);
        appends += 1;
    }
    let _ = appends;
    let leader_last = net.nodes[&1].log.last_index();
    for id in [2, 3] {
        let n = &net.nodes[&id];
        assert_eq!(n.log.last_index(), leader_last, "node {id}");
        for i in 1..=leader_last {
            assert_eq!(
                n.log.term(i).unwrap(),
                net.nodes[&1].log.term(i).unwrap(),
                "node {id} index {i}"
            );
        }
    }
}

#[test]
fn lagging_follower_catches_up_by_snapshot() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    for i in 0..20u8 {
        net.node(1).propose(normal(&[i])).unwrap();
    }
    net.settle();
    let applied = net.nodes[&1].log.applied;
    net.node(1)
        .log
        .storage_mut()
        .compact(applied, ConfState::new([1, 2, 3]), b"state".to_vec())
        .unwrap();
    net.heal();
    net.tick_all(3);
    let n3 = &net.nodes[&3];
    assert_eq!(n3.log.storage().snapshot().unwrap().data, b"state".to_vec());
    assert_eq!(n3.log.committed, net.nodes[&1].log.committed);
    net.node(1).propose(normal(b"after")).unwrap();
    net.settle();
    assert_eq!(net.applied_data(3), vec![b"after".to_vec()]);
}

#[test]
fn lost_snapshot_is_retried() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    net.node(1).propose(normal(b"a")).unwrap();
    net.settle();
    let applied = net.nodes[&1].log.applied;
    net.node(1)
        .log
        .storage_mut()
        .compact(applied, ConfState::new([1, 2, 3]), b"s".to_vec())
        .unwrap();
    net.heal();
    net.filter = Some(Box::new(|m| {
        matches!(m.body, MessageBody::InstallSnapshot { .. })
    }));
    net.tick_all(3);
    net.filter = None;
    net.tick_all(15);
    assert_eq!(net.nodes[&3].log.committed, net.nodes[&1].log.committed);
}

#[test]
fn pipelining_is_bounded_by_the_inflight_window() {
    let mut c = cfg(1);
    c.max_inflight_msgs = 3;
    let mut leader = Raft::new(&c, MemStorage::new(ConfState::new([1, 2]))).unwrap();
    leader.campaign_now().unwrap();
    persist_ready(&mut leader);
    leader
        .step(msg(2, 1, 1, MessageBody::PreVoteResp { reject: false }))
        .unwrap();
    leader
        .step(msg(2, 1, 1, MessageBody::VoteResp { reject: false }))
        .unwrap();
    assert_eq!(leader.role, Role::Leader);
    // Follower acknowledges the empty entry: progress enters Replicate.
    leader
        .step(msg(
            2,
            1,
            1,
            MessageBody::AppendResp {
                reject: false,
                index: 1,
                hint_index: 0,
                hint_term: 0,
            },
        ))
        .unwrap();
    persist_ready(&mut leader);
    for i in 0..10u8 {
        leader.propose(normal(&[i])).unwrap();
    }
    let rd = persist_ready(&mut leader);
    let appends = rd
        .messages
        .iter()
        .filter(|m| matches!(&m.body, MessageBody::Append { entries, .. } if !entries.is_empty()))
        .count();
    assert_eq!(appends, 3, "window of 3 appends in flight");
}

#[test]
fn a_leader_knows_when_acks_are_in_flight_behind_new_entries() {
    let mut n = Net::new(&[1, 2, 3]);
    n.elect(1);
    assert!(!n.node(1).acks_pending_behind_new_entries());
    // Written and sent, not yet acknowledged.
    n.node(1).propose(normal(b"a")).unwrap();
    let rd = persist_ready(n.node(1));
    assert!(
        !n.node(1).acks_pending_behind_new_entries(),
        "nothing new to write yet"
    );
    n.node(1).propose(normal(b"b")).unwrap();
    assert!(n.node(1).acks_pending_behind_new_entries());
    // One follower's acknowledgement commits "a": nothing stored waits any more.
    let to_2 = rd.messages.into_iter().find(|m| m.to == 2).unwrap();
    n.node(2).step(to_2).unwrap();
    let ack = persist_ready(n.node(2))
        .messages
        .into_iter()
        .find(|m| matches!(m.body, MessageBody::AppendResp { reject: false, .. }))
        .unwrap();
    n.node(1).step(ack).unwrap();
    assert!(!n.node(1).acks_pending_behind_new_entries());
    // A follower never waits: its acknowledgements come after its own write.
    n.settle();
    n.node(2).propose(normal(b"c")).unwrap();
    assert!(!n.node(2).acks_pending_behind_new_entries());
    assert!(!n.node(3).acks_pending_behind_new_entries());
}

#[test]
fn a_single_voter_leader_never_waits_for_acks() {
    let mut n = Net::new(&[1]);
    n.elect(1);
    n.node(1).propose(normal(b"a")).unwrap();
    persist_ready(n.node(1));
    n.node(1).propose(normal(b"b")).unwrap();
    assert!(!n.node(1).acks_pending_behind_new_entries());
}
