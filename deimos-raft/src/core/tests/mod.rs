//! Scenario tests for the core, on a tiny synchronous network. The randomized, fault-injecting
//! checks live in the simulator (`tests/simulation.rs`); these pin down each rule by name.
//!
//! This module holds the shared harness (`Net`, a synchronous network of `Raft` cores, and small
//! helpers); the tests are split by concern: `election`, `replication`, `membership`, `transfer`
//! and `reads` (ReadIndex and the lease facts lease reads rely on).

mod election;
mod hostile;
mod membership;
mod reads;
mod replication;
mod transfer;

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
fn persist_ready(n: &mut Raft<MemStorage>) -> crate::ready::Ready {
    let rd = n.ready();
    n.log.storage_mut().append(&rd.entries).unwrap();
    if let Some(hs) = rd.hard_state {
        n.log.storage_mut().set_hard_state(&hs).unwrap();
    }
    n.advance();
    rd
}

/// A message as a peer would send it (most scenario tests hand-deliver one).
fn msg(from: NodeId, to: NodeId, term: Term, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

fn normal(data: &[u8]) -> Vec<EntryPayload> {
    vec![EntryPayload::Normal(data.to_vec())]
}
