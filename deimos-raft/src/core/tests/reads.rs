//! Reads: ReadIndex on the leader and through a follower, and the lease facts lease reads rely on.

use super::*;

#[test]
fn read_index_waits_for_quorum_ack_and_current_term_commit() {
    let mut net = Net::new(&[1, 2, 3]);
    for n in net.nodes.values_mut() {
        n.startup_quiet = false;
    }
    net.node(1).campaign_now().unwrap();
    // Not yet committed its own-term entry: the read waits.
    net.isolate(1);
    net.settle();
    net.heal();
    net.node(1)
        .step(msg(2, 1, 1, MessageBody::PreVoteResp { reject: false }))
        .unwrap();
    net.node(1)
        .step(msg(2, 1, 1, MessageBody::VoteResp { reject: false }))
        .unwrap();
    assert_eq!(net.nodes[&1].role, Role::Leader);
    net.node(1).read_index(b"r1".to_vec()).unwrap();
    assert!(net.nodes[&1].read_states.is_empty());
    net.settle();
    let rs = &net.read_states[&1];
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].ctx, b"r1".to_vec());
    assert_eq!(rs[0].index, net.nodes[&1].log.committed);
    // With the leader cut off from everyone, a read is never confirmed.
    net.isolate(1);
    net.node(1).read_index(b"r2".to_vec()).unwrap();
    net.settle();
    assert_eq!(net.read_states[&1].len(), 1);
}

#[test]
fn follower_read_index_is_forwarded_and_answered() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).propose(normal(b"w")).unwrap();
    net.settle();
    net.node(2).read_index(b"f".to_vec()).unwrap();
    net.settle();
    let rs = &net.read_states[&2];
    assert_eq!(rs.last().unwrap().ctx, b"f".to_vec());
    assert_eq!(rs.last().unwrap().index, net.nodes[&1].log.committed);
}

#[test]
fn lease_facts_are_reported_in_order() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.tick_all(2);
    let ev = net.lease_events[&1].clone();
    let pos = |f: &dyn Fn(&LeaseEvent) -> bool| ev.iter().position(f).unwrap();
    let became = pos(&|e| matches!(e, LeaseEvent::BecameLeader { .. }));
    let committed = pos(&|e| matches!(e, LeaseEvent::TermCommitted { .. }));
    let sent = pos(&|e| matches!(e, LeaseEvent::RoundSent { round: 1, .. }));
    let acked = pos(&|e| matches!(e, LeaseEvent::RoundAcked { round: 1, .. }));
    assert!(became < committed && became < sent && sent < acked);
    // A minority ack does not acknowledge a round.
    net.isolate(2);
    net.isolate(3);
    net.lease_events.clear();
    net.tick_all(1);
    assert!(net.lease_events[&1]
        .iter()
        .any(|e| matches!(e, LeaseEvent::RoundSent { .. })));
    assert!(!net.lease_events[&1]
        .iter()
        .any(|e| matches!(e, LeaseEvent::RoundAcked { .. })));
}

#[test]
fn higher_term_revokes_with_term_change() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let t = net.nodes[&1].term;
    net.node(1)
        .step(msg(
            2,
            1,
            t + 1,
            MessageBody::AppendResp {
                reject: false,
                index: 0,
                hint_index: 0,
                hint_term: 0,
            },
        ))
        .unwrap();
    net.settle();
    assert!(net.lease_events[&1].iter().any(|e| matches!(
        e,
        LeaseEvent::Revoked {
            reason: LeaseEndReason::TermChange,
            ..
        }
    )));
}
