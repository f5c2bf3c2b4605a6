//! The client workload and its history: clients pick a node and an operation, `Sim::submit` hands
//! it to the node along the path its kind names, and every invocation and answer is recorded in
//! `HistEntry`s for the linearizability check.

use std::collections::BTreeMap;

use deimos_raft::driver::Request;
use deimos_raft::Role;
use rand::Rng;
use tokio::sync::oneshot;

use super::cluster::{Event, Sim};
use super::config::MS;
use super::node::{PendingRead, PendingUpdate};
use super::register::{ClientOp, Command, Key, KvOut, Value};

pub(super) struct Client {
    pub(super) id: u64,
    pub(super) pending: Option<(usize, usize, u64)>, // (history index, node, req)
    pub(super) hint: Option<usize>,
    pub(super) last_seen: BTreeMap<Key, Value>,
    /// Probe clients do not issue operations on their own.
    pub(super) auto: bool,
}

/// One client operation as observed by its client (global times).
#[derive(Debug, Clone)]
pub struct HistEntry {
    pub client: u64,
    pub req: u64,
    pub node: usize,
    pub invoke: u64,
    pub complete: Option<u64>,
    pub op: ClientOp,
    pub output: Option<KvOut>,
    /// The node refused it before it took effect (not a leader, no leader known): it is left
    /// out of the history that is checked.
    pub refused: bool,
}

impl Sim {
    pub(super) fn client_wake(&mut self, c: usize) -> Result<(), String> {
        if self.clients[c].pending.is_some() || !self.clients[c].auto {
            return Ok(());
        }
        let n = self.nodes.len();
        let node = match self.clients[c].hint {
            Some(h) if self.rng.gen_bool(0.8) => h,
            _ => self.rng.gen_range(0..n),
        };
        let key = self.rng.gen_range(0..self.cfg.keys);
        let value = self.next_req; // unique per run
        let op = match self.rng.gen_range(0..100) {
            x if x < self.cfg.local_read_pct => ClientOp::LocalRead { key },
            x if x < self.cfg.local_read_pct + self.cfg.lease_read_pct => {
                ClientOp::LeaseRead { key }
            }
            0..=39 => ClientOp::Read { key },
            40..=74 => ClientOp::Write { key, value },
            _ => {
                let expected = match self.clients[c].last_seen.get(&key) {
                    Some(&v) if self.rng.gen_bool(0.8) => Some(v),
                    _ => None,
                };
                ClientOp::Cas {
                    key,
                    expected,
                    new: value,
                }
            }
        };
        if !self.nodes[node].up() {
            // Connection refused: nothing was sent, so nothing to record.
            self.clients[c].hint = None;
            let d = self.rng.gen_range(MS..20 * MS);
            self.schedule(self.now + d, Event::ClientWake(c));
            return Ok(());
        }
        self.submit(c, node, op)?;
        Ok(())
    }

    /// Hand `op` from client `c` to `node` along the path its variant names, as the server does
    /// through its driver handle, and record the invocation. To add an op type: add a
    /// `ClientOp` variant and an arm here that either answers at once through `complete` or
    /// parks the request on the node (`pending_reads`, `pending_updates`), which `drive.rs`
    /// answers from the driver's replies. Returns the history index.
    pub(super) fn submit(&mut self, c: usize, node: usize, op: ClientOp) -> Result<usize, String> {
        let req = self.next_req;
        let client_id = self.clients[c].id;
        self.nodes[node].clock.sync(self.now);
        let n = &mut self.nodes[node];
        let handle = n.handle.as_ref().expect("submit to a live node");
        let is_leader = n.role == Role::Leader;
        // The server's lease read: under a valid lease, everything committed so far
        // (acknowledged anywhere) must be applied before answering; no lease, ReadIndex.
        let lease_index = handle.lease_read_index();
        if matches!(op, ClientOp::LeaseRead { .. }) && is_leader {
            self.stats.lease_reads_on_leader += 1;
            if lease_index.is_some() {
                self.stats.lease_hits_on_leader += 1;
            }
        }
        // Some paths answer at once; the answer is recorded after the invocation below.
        let mut immediate = None;
        let mut input = None;
        match op {
            ClientOp::LocalRead { key } => {
                immediate = Some(KvOut::Read(n.sm.lock().unwrap().get(key)));
            }
            ClientOp::LeaseRead { key } if lease_index.is_some() => {
                let index = lease_index.unwrap_or_default();
                self.stats.lease_reads += 1;
                let sm = n.sm.lock().unwrap();
                if index <= sm.applied {
                    immediate = Some(KvOut::Read(sm.get(key)));
                } else {
                    drop(sm);
                    n.pending_reads.push(PendingRead {
                        req,
                        client: c,
                        key,
                        index: Some(index),
                        reply: None,
                    });
                }
            }
            ClientOp::LeaseRead { key } | ClientOp::Read { key } => {
                let (reply, rx) = oneshot::channel();
                input = Some(Request::ReadIndex { reply });
                n.pending_reads.push(PendingRead {
                    req,
                    client: c,
                    key,
                    index: None,
                    reply: Some(rx),
                });
            }
            ClientOp::Write { .. } | ClientOp::Cas { .. } => {
                let data = Command {
                    req,
                    client: client_id,
                    op: op.clone(),
                }
                .encode();
                let (reply, rx) = oneshot::channel();
                input = Some(Request::Propose { data, reply });
                n.pending_updates.insert(
                    req,
                    PendingUpdate {
                        client: c,
                        reply: rx,
                    },
                );
            }
        }
        self.next_req += 1;
        let h = self.history.len();
        self.log(|| format!("client {client_id} req {req} -> node {}: {op:?}", node + 1));
        self.history.push(HistEntry {
            client: client_id,
            req,
            node,
            invoke: self.now,
            complete: None,
            op,
            output: None,
            refused: false,
        });
        self.clients[c].pending = Some((h, node, req));
        self.schedule(
            self.now + self.cfg.client_timeout_us,
            Event::ClientTimeout { client: c, req },
        );
        if let Some(out) = immediate {
            self.complete(c, req, out);
        }
        if let Some(input) = input {
            self.feed(node, |d| d.input(input))?;
        }
        Ok(h)
    }

    pub(super) fn complete(&mut self, c: usize, req: u64, out: KvOut) {
        let Some((h, _, r)) = self.clients[c].pending else {
            return;
        };
        if r != req {
            return;
        }
        self.clients[c].pending = None;
        let key = *self.history[h].op.spec().key();
        match (&self.history[h].op, &out) {
            (_, KvOut::Read(Some(v))) => {
                self.clients[c].last_seen.insert(key, *v);
            }
            (ClientOp::Write { value, .. }, _)
            | (ClientOp::Cas { new: value, .. }, KvOut::Cas(true)) => {
                self.clients[c].last_seen.insert(key, *value);
            }
            _ => {}
        }
        self.log(|| format!("client {} req {req} done: {out:?}", c + 1));
        self.history[h].complete = Some(self.now);
        self.history[h].output = Some(out);
        let d = self
            .rng
            .gen_range(self.cfg.think_us.0..=self.cfg.think_us.1);
        self.schedule(self.now + d, Event::ClientWake(c));
    }

    pub(super) fn client_timeout(&mut self, c: usize, req: u64) {
        if !self.clients[c].auto {
            return; // probes wait for as long as the liveness bound allows
        }
        let Some((_, node, r)) = self.clients[c].pending else {
            return;
        };
        if r != req {
            return;
        }
        self.clients[c].pending = None;
        self.clients[c].hint = None;
        self.stats.timeouts += 1;
        let n = &mut self.nodes[node];
        n.pending_updates.remove(&req);
        n.pending_reads.retain(|p| p.req != req);
        self.log(|| format!("client {} req {req} timed out", c + 1));
        let d = self
            .rng
            .gen_range(self.cfg.think_us.0..=self.cfg.think_us.1);
        self.schedule(self.now + d, Event::ClientWake(c));
    }
}
