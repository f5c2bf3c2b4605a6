//! Impossible peer messages: each is dropped and counted, and the node's state is unchanged
//! (see `core/validate.rs`). Before these checks, several of them panicked the core.

use super::*;
use crate::core::validate::{Refusal, MAX_TERM};

/// Leader 1 of a settled 3-node cluster with one entry committed, and what it looked like.
fn settled() -> (Net, crate::status::Status) {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).propose(normal(b"a")).unwrap();
    net.settle();
    let before = net.nodes[&1].status();
    (net, before)
}

fn deliver(net: &mut Net, m: Message) {
    let to = m.to;
    net.node(to).step(m).unwrap();
}

fn refused(net: &Net, id: NodeId, why: Refusal) -> u64 {
    net.nodes[&id].refused().get(why)
}

#[test]
fn an_ack_of_entries_the_leader_does_not_have_is_refused() {
    let (mut net, before) = settled();
    let last = before.last_index;
    // Node 3 "acknowledges" far beyond the log (once it made the leader commit past its own
    // last index and panic in `commit_to`).
    let ack = MessageBody::AppendResp {
        reject: false,
        index: last + 1_000,
        hint_index: 0,
        hint_term: 0,
    };
    deliver(&mut net, msg(3, 1, before.term, ack));
    assert_eq!(refused(&net, 1, Refusal::AckBeyondLog), 1);
    assert_eq!(net.nodes[&1].status(), before);
}

#[test]
fn an_ack_cannot_move_progress_past_what_was_sent_this_term() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    // Node 3 hears nothing more and the leader probes it one append at a time, so the leader
    // appends entries it has not sent there.
    net.isolate(3);
    net.node(1).report_unreachable(3);
    for i in 0..3 {
        net.node(1).propose(normal(&[i])).unwrap();
        net.settle();
    }
    let leader_last = net.nodes[&1].log.last_index();
    let sent = net.nodes[&1].prs.progress[&3].sent;
    assert!(sent < leader_last, "sent {sent} < last {leader_last}");
    // A forged ack in node 3's name claims everything the leader has.
    let term = net.nodes[&1].term;
    let ack = MessageBody::AppendResp {
        reject: false,
        index: leader_last,
        hint_index: 0,
        hint_term: 0,
    };
    deliver(&mut net, msg(3, 1, term, ack));
    assert!(net.nodes[&1].prs.progress[&3].matched <= sent);
}

#[test]
fn an_ack_of_a_heartbeat_round_never_sent_is_refused() {
    let (mut net, before) = settled();
    let round = net.nodes[&1].round;
    let acked = net.nodes[&1].quorum_round;
    for from in [2, 3] {
        let m = MessageBody::HeartbeatResp { round: round + 50 };
        deliver(&mut net, msg(from, 1, before.term, m));
    }
    assert_eq!(refused(&net, 1, Refusal::RoundNotSent), 2);
    assert_eq!(
        net.nodes[&1].quorum_round, acked,
        "a future round confirmed"
    );
}

#[test]
fn a_term_near_u64_max_is_refused_and_the_term_never_wraps() {
    let (mut net, before) = settled();
    let hb = MessageBody::Heartbeat {
        commit: 0,
        round: 1,
    };
    deliver(&mut net, msg(2, 3, u64::MAX, hb.clone()));
    deliver(&mut net, msg(2, 3, MAX_TERM + 1, hb));
    assert_eq!(refused(&net, 3, Refusal::TermTooHigh), 2);
    assert_eq!(net.nodes[&3].term, before.term);
    // At the cap itself the term is taken, and campaigning from there saturates, not wraps.
    let n = net.node(3);
    n.term = u64::MAX;
    n.role = Role::Follower;
    n.become_candidate();
    assert_eq!(net.nodes[&3].term, u64::MAX);
}

#[test]
fn malformed_appends_are_refused_before_they_reach_the_log() {
    let (mut net, before) = settled();
    let last = before.last_index;
    let term = before.term;
    let e = |index, term| Entry {
        index,
        term,
        payload: EntryPayload::Empty,
    };
    for entries in [
        vec![e(last + 2, term)],                        // a gap
        vec![e(last + 1, term), e(last + 1, term)],     // a repeat
        vec![e(last + 1, term + 1)],                    // from a future term
        vec![e(last + 1, term), e(last + 2, term - 1)], // terms going back
        vec![e(1, term)],                               // overwriting index 1
    ] {
        let m = MessageBody::Append {
            prev_index: last,
            prev_term: term,
            entries,
            commit: last,
        };
        deliver(&mut net, msg(1, 2, term, m));
    }
    assert_eq!(refused(&net, 2, Refusal::MalformedAppend), 5);
    assert_eq!(net.nodes[&2].log.last_index(), last);
    // Absurd indexes too.
    let m = MessageBody::Append {
        prev_index: u64::MAX,
        prev_term: term,
        entries: vec![],
        commit: u64::MAX,
    };
    deliver(&mut net, msg(1, 2, term, m));
    assert_eq!(refused(&net, 2, Refusal::IndexTooHigh), 1);
    net.settle();
    assert_eq!(net.nodes[&2].log.committed, before.commit);
}

#[test]
fn timeout_now_only_from_the_current_leader() {
    let (mut net, before) = settled();
    // From a follower, and from the leader's id with a higher term: neither forces an election.
    deliver(&mut net, msg(3, 2, before.term, MessageBody::TimeoutNow));
    deliver(
        &mut net,
        msg(1, 2, before.term + 5, MessageBody::TimeoutNow),
    );
    assert_eq!(refused(&net, 2, Refusal::TimeoutNowNotFromLeader), 2);
    assert_eq!(net.nodes[&2].role, Role::Follower);
    assert_eq!(net.nodes[&2].term, before.term);
}

#[test]
fn forwarded_conf_changes_are_refused_so_membership_rules_cannot_be_skipped() {
    let (mut net, before) = settled();
    // "Remove the last voter" would pass no check if a forwarded proposal carried it.
    let m = MessageBody::Propose {
        entries: vec![EntryPayload::ConfChange(ConfChange::RemoveNode(1))],
    };
    deliver(&mut net, msg(2, 1, before.term, m));
    net.settle();
    assert_eq!(refused(&net, 1, Refusal::ForwardedConfChange), 1);
    assert_eq!(net.nodes[&1].prs.conf.voters.len(), 3);
    assert_eq!(net.nodes[&1].log.last_index(), before.last_index);
}

#[test]
fn snapshots_from_a_future_term_or_without_voters_are_refused() {
    let (mut net, before) = settled();
    let snap = |term, voters: &[NodeId]| MessageBody::InstallSnapshot {
        snapshot: Snapshot {
            meta: SnapshotMeta {
                index: before.last_index + 10,
                term,
                conf: ConfState::new(voters.iter().copied()),
            },
            data: vec![],
        },
    };
    deliver(
        &mut net,
        msg(1, 2, before.term, snap(before.term + 1, &[1, 2, 3])),
    );
    deliver(&mut net, msg(1, 2, before.term, snap(before.term, &[])));
    assert_eq!(refused(&net, 2, Refusal::SnapshotTermAhead), 1);
    assert_eq!(refused(&net, 2, Refusal::SnapshotWithoutVoters), 1);
    assert_eq!(net.nodes[&2].log.last_index(), before.last_index);
}

#[test]
fn long_read_contexts_and_messages_from_oneself_are_refused() {
    let (mut net, before) = settled();
    let ctx = vec![0; crate::core::validate::MAX_READ_CTX + 1];
    deliver(
        &mut net,
        msg(2, 1, before.term, MessageBody::ReadIndex { ctx }),
    );
    deliver(
        &mut net,
        msg(1, 1, before.term, MessageBody::HeartbeatResp { round: 0 }),
    );
    assert_eq!(refused(&net, 1, Refusal::ReadContextTooLong), 1);
    assert_eq!(refused(&net, 1, Refusal::FromSelf), 1);
    assert!(net.nodes[&1].pending_reads.is_empty());
}

#[test]
fn messages_from_outside_the_configuration_are_refused() {
    let (mut net, before) = settled();
    // A made-up (or removed) id campaigning with a higher term, proposing, asking for reads.
    for kind in [false, true] {
        let body = if kind {
            MessageBody::Vote {
                last_index: 1_000,
                last_term: before.term + 1,
                transfer: false,
            }
        } else {
            MessageBody::PreVote {
                last_index: 1_000,
                last_term: before.term + 1,
            }
        };
        deliver(&mut net, msg(9, 2, before.term + 1, body));
    }
    deliver(
        &mut net,
        msg(
            9,
            1,
            before.term,
            MessageBody::Propose {
                entries: normal(b"x"),
            },
        ),
    );
    deliver(
        &mut net,
        msg(9, 1, before.term, MessageBody::ReadIndex { ctx: vec![1] }),
    );
    net.settle();
    assert_eq!(refused(&net, 2, Refusal::UnknownSender), 2);
    assert_eq!(refused(&net, 1, Refusal::UnknownSender), 2);
    assert_eq!(net.nodes[&2].term, before.term);
    assert_eq!(net.nodes[&2].leader, Some(1));
    assert_eq!(net.nodes[&1].log.last_index(), before.last_index);
    // A node that knows no configuration yet (joining) takes its leader's messages.
    let mut joiner = Raft::new(&cfg(4), MemStorage::new(ConfState::default())).unwrap();
    let hb = MessageBody::Heartbeat {
        commit: 0,
        round: 1,
    };
    joiner.step(msg(1, 4, before.term, hb)).unwrap();
    assert_eq!(joiner.leader, Some(1));
    assert_eq!(joiner.refused().total(), 0);
}

#[test]
fn a_second_leader_of_the_term_misaddressed_and_impossible_votes_are_refused() {
    let (mut net, before) = settled();
    // Node 3 "leads" node 2 in the term node 1 leads; and the leader hears an append itself.
    let append = |commit| MessageBody::Append {
        prev_index: before.last_index,
        prev_term: before.term,
        entries: vec![],
        commit,
    };
    deliver(&mut net, msg(3, 2, before.term, append(0)));
    deliver(&mut net, msg(3, 1, before.term, append(0)));
    assert_eq!(refused(&net, 2, Refusal::NotFromLeader), 1);
    assert_eq!(refused(&net, 1, Refusal::NotFromLeader), 1);
    assert_eq!(net.nodes[&2].leader, Some(1));
    assert_eq!(net.nodes[&1].role, Role::Leader);
    // Addressed to someone else, or from id 0.
    let mut m = msg(3, 1, before.term, MessageBody::HeartbeatResp { round: 0 });
    m.to = 2;
    net.node(1).step(m).unwrap();
    deliver(
        &mut net,
        msg(0, 1, before.term, MessageBody::HeartbeatResp { round: 0 }),
    );
    assert_eq!(refused(&net, 1, Refusal::Misaddressed), 2);
    // A candidate whose last log term is above the term it campaigns in.
    let vote = MessageBody::Vote {
        last_index: 1,
        last_term: before.term + 9,
        transfer: true,
    };
    deliver(&mut net, msg(3, 2, before.term + 1, vote));
    assert_eq!(refused(&net, 2, Refusal::MalformedVote), 1);
    assert_eq!(net.nodes[&2].term, before.term);
}
