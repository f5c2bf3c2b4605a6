//! The client workload and its history: clients pick a node and an operation, `Sim::submit` hands
//! it to the node along the path its kind names, and every invocation and answer is recorded in
//! `HistEntry`s for the linearizability check.

use std::collections::BTreeMap;

use deimos_raft::{RaftError, Role};
use rand::Rng;

use super::cluster::{Event, Sim};
use super::config::MS;
use super::node::PendingRead;
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
        match self.submit(c, node, op) {
            Ok(_) => {}
            Err(e) => {
                self.clients[c].hint = match e {
                    RaftError::NotLeader { leader: Some(l) } => Some(l as usize - 1),
                    _ => None,
                };
                let d = self.rng.gen_range(MS..20 * MS);
                self.schedule(self.now + d, Event::ClientWake(c));
            }
        }
        self.drive(node)
    }

    /// Hand `op` from client `c` to `node` along the path its variant names, and record the
    /// invocation. To add an op type (e.g. a lease read): add a `ClientOp` variant and an arm
    /// here that either answers at once through `complete` or parks the request on the node.
    pub(super) fn submit(
        &mut self,
        c: usize,
        node: usize,
        op: ClientOp,
    ) -> Result<usize, RaftError> {
        let req = self.next_req;
        let client_id = self.clients[c].id;
        let n = &mut self.nodes[node];
        n.clock.sync(self.now);
        let raw = n.raw.as_mut().expect("submit to a live node");
        // Some paths answer at once; the answer is recorded after the invocation below.
        let mut immediate = None;
        if matches!(op, ClientOp::LeaseRead { .. }) && raw.status().role == Role::Leader {
            self.stats.lease_reads_on_leader += 1;
            if n.lease.as_ref().is_some_and(|l| l.can_read_with_lease()) {
                self.stats.lease_hits_on_leader += 1;
            }
        }
        match op {
            ClientOp::LocalRead { key } => immediate = Some(KvOut::Read(n.sm.get(key))),
            // As the server: under a valid lease, everything committed so far (acknowledged
            // anywhere) must be applied before answering; no lease, ReadIndex instead.
            ClientOp::LeaseRead { key }
                if n.lease.as_ref().is_some_and(|l| l.can_read_with_lease()) =>
            {
                let index = raw.status().commit;
                self.stats.lease_reads += 1;
                if index <= n.sm.applied {
                    immediate = Some(KvOut::Read(n.sm.get(key)));
                } else {
                    n.pending_reads.push(PendingRead {
                        req,
                        client: c,
                        key,
                        index: Some(index),
                    });
                }
            }
            ClientOp::LeaseRead { key } | ClientOp::Read { key } => {
                raw.read_index(req.to_le_bytes().to_vec())?;
                n.pending_reads.push(PendingRead {
                    req,
                    client: c,
                    key,
                    index: None,
                });
            }
            ClientOp::Write { .. } | ClientOp::Cas { .. } => {
                raw.propose(
                    Command {
                        req,
                        client: client_id,
                        op: op.clone(),
                    }
                    .encode(),
                )?;
                n.pending_updates.insert(req, c);
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
        });
        self.clients[c].pending = Some((h, node, req));
        self.schedule(
            self.now + self.cfg.client_timeout_us,
            Event::ClientTimeout { client: c, req },
        );
        if let Some(out) = immediate {
            self.complete(c, req, out);
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
