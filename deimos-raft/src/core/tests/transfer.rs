//! Leadership transfer: handing over, and the lease around a transfer that completes or aborts.

use super::*;

#[test]
fn leader_transfer_hands_over_and_revokes_the_lease_first() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).propose(normal(b"t")).unwrap();
    net.settle();
    net.node(1).transfer_leader(3).unwrap();
    let ev = net.nodes[&1].lease_events.clone();
    assert!(ev.iter().any(|e| matches!(
        e,
        LeaseEvent::Revoked {
            reason: LeaseEndReason::Transfer,
            ..
        }
    )));
    assert_eq!(
        net.node(1).propose(normal(b"no")),
        Err(RaftError::TransferInProgress)
    );
    net.settle();
    assert_eq!(net.leaders(), vec![3]);
}

#[test]
fn aborted_transfer_keeps_the_lease_forbidden_for_the_term() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    net.node(1).transfer_leader(3).unwrap();
    net.tick_all(12); // transfer times out
    assert_eq!(net.leaders(), vec![1]);
    net.lease_events.clear();
    net.tick_all(3);
    assert!(!net.lease_events[&1]
        .iter()
        .any(|e| matches!(e, LeaseEvent::RoundAcked { .. })));
    assert!(net.node(1).propose(normal(b"ok")).is_ok());
}
