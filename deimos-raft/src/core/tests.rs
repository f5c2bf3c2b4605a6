//! Scenario tests for the core, on a tiny synchronous network. The randomized, fault-injecting
//! checks live in the simulator (`tests/simulation.rs`); these pin down each rule by name.

use std::collections::{BTreeMap, BTreeSet};

use super::Raft;
use crate::config::Config;
use crate::error::RaftError;
use crate::storage::{LogStorage, MemStorage};
use crate::types::*;

type DropFilter = Box<dyn Fn(&Message) -> bool>;

struct Net {
    nodes: BTreeMap<NodeId, Raft<MemStorage>>,
    applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Drop messages for which this returns true.
    filter: Option<DropFilter>,
    lease_events: BTreeMap<NodeId, Vec<LeaseEvent>>,
    read_states: BTreeMap<NodeId, Vec<ReadState>>,
}

fn cfg(id: NodeId) -> Config {
    let mut c = Config::new(id);
    c.election_tick = 10;
    c.heartbeat_tick = 1;
    c
}

impl Net {
    fn new(ids: &[NodeId]) -> Net {
        Net::with_storage(
            ids.iter()
                .map(|&id| (id, MemStorage::new(ConfState::new(ids.iter().copied()))))
                .collect(),
        )
    }

    fn with_storage(stores: Vec<(NodeId, MemStorage)>) -> Net {
        let mut nodes = BTreeMap::new();
        for (id, s) in stores {
            nodes.insert(id, Raft::new(&cfg(id), s).unwrap());
        }
        Net {
            nodes,
            applied: BTreeMap::new(),
            cut: BTreeSet::new(),
            filter: None,
            lease_events: BTreeMap::new(),
            read_states: BTreeMap::new(),
        }
    }

    fn node(&mut self, id: NodeId) -> &mut Raft<MemStorage> {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Handle every node's Ready and deliver messages until quiet.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut msgs = Vec::new();
            for (id, n) in self.nodes.iter_mut() {
                while n.has_ready() {
                    let rd = n.ready();
                    if let Some(s) = &rd.snapshot {
                        n.log.storage_mut().apply_snapshot(s).unwrap();
                    }
                    n.log.storage_mut().append(&rd.entries).unwrap();
                    if let Some(hs) = rd.hard_state {
                        n.log.storage_mut().set_hard_state(&hs).unwrap();
                    }
                    self.applied
                        .entry(*id)
                        .or_default()
                        .extend(rd.committed_entries);
                    self.lease_events
                        .entry(*id)
                        .or_default()
                        .extend(rd.lease_events);
                    self.read_states
                        .entry(*id)
                        .or_default()
                        .extend(rd.read_states);
                    msgs.extend(rd.messages);
                    n.advance();
                }
            }
            if msgs.is_empty() {
                return;
            }
            for m in msgs {
                if self.cut.contains(&(m.from, m.to)) || self.filter.as_ref().is_some_and(|f| f(&m))
                {
                    continue;
                }
                if let Some(n) = self.nodes.get_mut(&m.to) {
                    n.step(m).unwrap();
                }
            }
        }
        panic!("network did not settle");
    }

    fn tick_all(&mut self, n: usize) {
        for _ in 0..n {
            for node in self.nodes.values_mut() {
                node.tick();
            }
            self.settle();
        }
    }

    fn isolate(&mut self, id: NodeId) {
        for &other in self.nodes.keys() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    /// Win an election for `id` now. Fresh nodes are "startup quiet" (they refuse votes for an
    /// election timeout); tests skip that wait.
    fn elect(&mut self, id: NodeId) {
        for n in self.nodes.values_mut() {
            n.startup_quiet = false;
        }
        self.node(id).campaign_now().unwrap();
        self.settle();
        assert_eq!(
            self.nodes[&id].role,
            Role::Leader,
            "node {id} should have won"
        );
    }

    fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.role == Role::Leader)
            .map(|n| n.id)
            .collect()
    }

    fn applied_data(&self, id: NodeId) -> Vec<Vec<u8>> {
        self.applied
            .get(&id)
            .map(|v| {
                v.iter()
                    .filter_map(|e| match &e.payload {
                        EntryPayload::Normal(d) => Some(d.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Take a Ready and persist it the way the driver would.
fn persist_ready(n: &mut Raft<MemStorage>) -> crate::raw_node::Ready {
    let rd = n.ready();
    n.log.storage_mut().append(&rd.entries).unwrap();
    if let Some(hs) = rd.hard_state {
        n.log.storage_mut().set_hard_state(&hs).unwrap();
    }
    n.advance();
    rd
}

fn normal(data: &[u8]) -> Vec<EntryPayload> {
    vec![EntryPayload::Normal(data.to_vec())]
}

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
    // Node 2 hears from the leader, then gets a higher-term vote request from 3.
    net.node(2)
        .step(Message {
            from: 3,
            to: 2,
            term: term + 5,
            body: MessageBody::Vote {
                last_index: 100,
                last_term: 100,
                transfer: false,
            },
        })
        .unwrap();
    assert_eq!(
        net.nodes[&2].term, term,
        "in-lease vote request must be ignored"
    );
    // A transfer-initiated campaign bypasses stickiness.
    net.node(2)
        .step(Message {
            from: 3,
            to: 2,
            term: term + 5,
            body: MessageBody::Vote {
                last_index: 100,
                last_term: 100,
                transfer: true,
            },
        })
        .unwrap();
    assert_eq!(net.nodes[&2].term, term + 5);
    assert_eq!(net.nodes[&2].vote, Some(3));
}

#[test]
fn restarted_node_grants_no_vote_within_an_election_timeout() {
    let mut n = Raft::new(&cfg(2), MemStorage::new(ConfState::new([1, 2, 3]))).unwrap();
    let vote = |t| Message {
        from: 3,
        to: 2,
        term: t,
        body: MessageBody::Vote {
            last_index: 5,
            last_term: 5,
            transfer: false,
        },
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
        .step(Message {
            from: 2,
            to: 1,
            term: 1,
            body: MessageBody::PreVoteResp { reject: false },
        })
        .unwrap();
    net.node(1)
        .step(Message {
            from: 2,
            to: 1,
            term: 1,
            body: MessageBody::VoteResp { reject: false },
        })
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
        .step(Message {
            from: 2,
            to: 1,
            term: t + 1,
            body: MessageBody::AppendResp {
                reject: false,
                index: 0,
                hint_index: 0,
                hint_term: 0,
            },
        })
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

#[test]
fn pipelining_is_bounded_by_the_inflight_window() {
    let mut c = cfg(1);
    c.max_inflight_msgs = 3;
    let mut leader = Raft::new(&c, MemStorage::new(ConfState::new([1, 2]))).unwrap();
    leader.campaign_now().unwrap();
    persist_ready(&mut leader);
    leader
        .step(Message {
            from: 2,
            to: 1,
            term: 1,
            body: MessageBody::PreVoteResp { reject: false },
        })
        .unwrap();
    leader
        .step(Message {
            from: 2,
            to: 1,
            term: 1,
            body: MessageBody::VoteResp { reject: false },
        })
        .unwrap();
    assert_eq!(leader.role, Role::Leader);
    // Follower acknowledges the empty entry: progress enters Replicate.
    leader
        .step(Message {
            from: 2,
            to: 1,
            term: 1,
            body: MessageBody::AppendResp {
                reject: false,
                index: 1,
                hint_index: 0,
                hint_term: 0,
            },
        })
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
    net.node(2)
        .step(Message {
            from: 3,
            to: 2,
            term: t + 3,
            body: resp,
        })
        .unwrap();
    assert_eq!((net.nodes[&2].term, net.nodes[&2].leader), (t, Some(1)));
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
