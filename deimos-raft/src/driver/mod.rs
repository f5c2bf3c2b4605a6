//! The async driver: one tokio task owns the core and does, in order, what each `Ready` asks —
//! send the leader's replication traffic, (on a leader) apply and answer what is already
//! committed and stored, persist, publish lease facts (stamped before sending), send the rest,
//! apply and answer the remainder — then `advance`. Proposals and log reads taken in together
//! are proposed together just before that (`flush_proposals`). A leader with new proposals
//! first takes in the acknowledgements of the entries it already wrote, if they are in flight
//! (`wait_for_acks`).
//!
//! The loop blocks its thread for each fsync, so it should run where that blocks nothing else:
//! the server gives it a thread and a current-thread runtime of its own.
//!
//! Everything else talks to it through a [`Handle`].

pub mod envelope;
mod handle;
pub mod metrics;
mod traits;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, oneshot, watch};

pub use handle::{DriverError, Handle, ReadPath, Request, StorageFn};
pub use traits::{
    ApplyBatch, Command, Report, Reporter, StateMachine, StateMachineError, Transport,
};

use crate::clock::Clock;
use crate::config::Config;
use crate::error::RaftError;
use crate::ids::{Id, Ids};
use crate::lease::{LeaseConfig, LeaseConfigError, LeaseTracker};
use crate::raw_node::{RawNode, Ready};
use crate::storage::{LogStorage, StorageError};
use crate::types::{ConfChange, ConfState, EntryPayload, Index, Role, Term};

/// The longest a leader holds back its next write for acknowledgements already in flight (see
/// `wait_for_acks`). They normally take a follower's fsync plus a loopback or LAN round trip; the
/// bound only matters when no quorum answers, and keeps that case from stalling the loop.
const ACK_WAIT: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub raft: Config,
    pub tick_interval: Duration,
    /// `None`: defaults derived from the Raft timing (3 heartbeats, 10% tolerance).
    pub lease: Option<LeaseConfig>,
    /// Applied entries between log compactions.
    pub snapshot_count: u64,
    /// How long a proposal or read may wait before failing with `Timeout`.
    pub request_timeout: Duration,
    /// Run the lease without checking its safety bound. Only for tests that show the fault
    /// suite catches a broken lease; the server exposes it as a hidden `--unsafe-*` flag.
    #[doc(hidden)]
    pub unsafe_skip_lease_validation: bool,
}

impl DriverConfig {
    pub fn new(raft: Config) -> Self {
        DriverConfig {
            raft,
            tick_interval: Duration::from_millis(100),
            lease: None,
            snapshot_count: 10_000,
            request_timeout: Duration::from_secs(5),
            unsafe_skip_lease_validation: false,
        }
    }

    pub fn lease_config(&self) -> LeaseConfig {
        self.lease
            .unwrap_or_else(|| LeaseConfig::from_raft(&self.raft, self.tick_interval))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Raft(#[from] RaftError),
    #[error(transparent)]
    Lease(#[from] LeaseConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Debug, thiserror::Error)]
pub enum FatalError {
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
    #[error(transparent)]
    StateMachine(#[from] StateMachineError),
    #[error("the raft core produced {0} Readies without new input")]
    NoQuiescence(usize),
}

/// See [`Driver::process`]: far above what a real backlog needs (1 MiB of entries per Ready).
const MAX_READIES_PER_INPUT: usize = 100_000;

type ConfReply = oneshot::Sender<Result<(), DriverError>>;
type ReadReply = oneshot::Sender<Result<Index, DriverError>>;
type ProposeReply<O> = oneshot::Sender<Result<O, DriverError>>;

pub struct Driver<S: LogStorage, T: Transport, M: StateMachine<S>, C: Clock + Clone> {
    node: RawNode<S>,
    transport: T,
    sm: M,
    lease: LeaseTracker<C>,
    rx: mpsc::Receiver<Request<M::Output>>,
    /// What the transport reports about deliveries (see [`Transport::bind`]).
    reports: mpsc::Receiver<Report>,
    status_tx: watch::Sender<crate::raw_node::Status>,
    applied_tx: watch::Sender<Index>,
    conf: ConfState,
    next_seq: u64,
    proposals: HashMap<u64, ProposeReply<M::Output>>,
    reads: HashMap<u64, ReadReply>,
    /// Taken in since the last `flush_proposals`: proposals (enveloped) with their waiters by
    /// sequence number, and log reads.
    queued: Vec<Vec<u8>>,
    queued_replies: Vec<(u64, ProposeReply<M::Output>)>,
    log_reads: Vec<ReadReply>,
    /// Log reads by the sequence number of the barrier entry they wait for.
    barriers: HashMap<u64, Vec<ReadReply>>,
    /// Accepted membership changes by log index and term, answered when applied.
    conf_waiters: Vec<(Index, Term, ConfReply)>,
    /// Answers for applied changes, sent once `advance` made them take effect in the core (so
    /// the status a caller reads next shows them).
    conf_answers: Vec<(ConfReply, Result<(), DriverError>)>,
    tick_interval: Duration,
    snapshot_count: u64,
    last_compaction: Index,
    last_leader: Option<u64>,
    /// Role and term last logged, so each change is logged once.
    last_role: Role,
    last_term: Term,
    /// `UnsafeKnobs::send_all_before_persist`: only for the test that shows it is caught.
    send_all_before_persist: bool,
    /// `UnsafeKnobs::publish_commit_after_send`: only for the tests that show it is caught.
    publish_commit_after_send: bool,
    /// The refused-message total last exported as metrics.
    refused_exported: u64,
}

impl<S, T, M, C> Driver<S, T, M, C>
where
    S: LogStorage + Send + 'static,
    T: Transport,
    M: StateMachine<S>,
    C: Clock + Clone + 'static,
{
    /// Build the node from `storage` (which holds any state to restart from) and return the
    /// driver (to `run`) and a handle. `cfg.raft.applied` must be the state machine's applied index.
    pub fn new(
        cfg: DriverConfig,
        storage: S,
        mut transport: T,
        sm: M,
        clock: C,
    ) -> Result<(Self, Handle<M::Output, C>), StartError> {
        let lease_cfg = cfg.lease_config();
        let lease = if cfg.unsafe_skip_lease_validation {
            tracing::warn!("lease safety bound NOT checked (test-only setting)");
            LeaseTracker::new_unchecked(cfg.raft.id, lease_cfg, clock.clone())
        } else {
            LeaseTracker::new(cfg.raft.id, lease_cfg, &cfg.raft, clock.clone())?
        };
        let conf = storage.initial_state()?.conf_state;
        let node = RawNode::new(&cfg.raft, storage)?;
        metrics::describe();
        ::metrics::gauge!(metrics::LOG_FIRST_INDEX).set(node.storage().first_index()? as f64);
        let status = node.status();
        let (applied, term) = (status.applied, status.term);
        let (status_tx, status_rx) = watch::channel(status);
        let (applied_tx, applied_rx) = watch::channel(applied);
        let (tx, rx) = mpsc::channel(4096);
        let (report_tx, reports) = mpsc::channel(1024);
        transport.bind(Reporter { tx: report_tx });
        let handle = Handle {
            tx,
            status: status_rx,
            applied: applied_rx,
            lease: lease.subscribe(),
            clock,
            timeout: cfg.request_timeout,
        };
        let driver = Driver {
            node,
            transport,
            sm,
            lease,
            rx,
            reports,
            status_tx,
            applied_tx,
            conf,
            // Entries this node proposed before a restart may be re-applied after it; a high word
            // drawn from the per-start seed keeps their sequence numbers from matching new
            // proposals (and a simulator's seed replays the same numbers).
            next_seq: u64::from(
                rand::rngs::StdRng::seed_from_u64(cfg.raft.seed ^ 0x5eed).gen::<u32>(),
            ) << 32,
            send_all_before_persist: cfg.raft.unsafe_knobs.send_all_before_persist,
            publish_commit_after_send: cfg.raft.unsafe_knobs.publish_commit_after_send,
            refused_exported: 0,
            proposals: HashMap::new(),
            reads: HashMap::new(),
            queued: Vec::new(),
            queued_replies: Vec::new(),
            log_reads: Vec::new(),
            barriers: HashMap::new(),
            conf_waiters: Vec::new(),
            conf_answers: Vec::new(),
            tick_interval: cfg.tick_interval,
            snapshot_count: cfg.snapshot_count.max(1),
            last_compaction: applied,
            last_leader: None,
            last_role: Role::Follower,
            last_term: term,
        };
        Ok((driver, handle))
    }

    /// Run until every handle is dropped (Ok) or storage fails (Err: the node must stop — going
    /// on with unknown durable state could lose acknowledged writes).
    ///
    /// The loop is the stepping API ([`input`](Self::input), [`tick`](Self::tick),
    /// [`process`](Self::process)) driven by a timer and the handles' channel, plus one policy
    /// of its own: waiting briefly for acknowledgements in flight (`wait_for_acks`).
    pub async fn run(mut self) -> Result<(), FatalError> {
        let mut ticker = tokio::time::interval(self.tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Committed entries not yet applied (a restart, or bootstrap entries) come first, so
        // membership is known before any request is served.
        self.process()?;
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick(),
                req = self.rx.recv() => {
                    let Some(req) = req else { return Ok(()) };
                    self.input(req);
                    self.take_queued();
                }
                Some(r) = self.reports.recv() => self.report(r),
            }
            self.flush_proposals();
            if self.node.acks_pending_behind_new_entries() {
                self.wait_for_acks().await;
            }
            self.process()?;
        }
    }

    /// Take one input: a message, a proposal, a read, a report from the transport. Nothing is
    /// sent, persisted or applied until [`process`](Self::process). `run` feeds what the
    /// handles send; a deterministic simulator calls this directly.
    pub fn input(&mut self, req: Request<M::Output>) {
        self.on_request(req);
    }

    /// Take a delivery report (what `run` reads from the transport's reporter; a deterministic
    /// simulator calls this directly).
    pub fn report(&mut self, r: Report) {
        match r {
            Report::Unreachable(to) => self.node.report_unreachable(to),
            Report::Snapshot { to, ok } => self.node.report_snapshot(to, ok),
        }
    }

    /// One tick of logical time (elections, heartbeats, lease refresh, dropping abandoned
    /// waiters). `run` calls it every `tick_interval`.
    pub fn tick(&mut self) {
        self.on_tick();
    }

    /// Do everything the inputs so far asked for: propose what was queued, renew the lease when
    /// due, then handle every `Ready` — send, persist, apply, answer — until there is none.
    /// An error is fatal: storage or the state machine failed, and the node must stop.
    pub fn process(&mut self) -> Result<(), FatalError> {
        self.flush_proposals();
        if self.lease.renewal_due() {
            self.node.broadcast_heartbeat();
        }
        // Each Ready is bounded (1 MiB of committed entries, so a long backlog takes many), but
        // a core that produced Readies forever without input would spin here for good: stop
        // the node instead of lingering as a busy zombie.
        for _ in 0..MAX_READIES_PER_INPUT {
            if !self.node.has_ready() {
                return Ok(());
            }
            let rd = self.node.ready();
            self.handle_ready(rd)?;
        }
        Err(FatalError::NoQuiescence(MAX_READIES_PER_INPUT))
    }

    /// The log storage (what is durable), for status and tests.
    pub fn storage(&self) -> &S {
        self.node.storage()
    }

    /// The core's status now (the handles see the last one published).
    pub fn status(&self) -> crate::raw_node::Status {
        self.node.status()
    }

    /// Batch whatever else is queued into the same Ready (group commit).
    fn take_queued(&mut self) {
        for _ in 0..1024 {
            match self.rx.try_recv() {
                Ok(req) => self.on_request(req),
                Err(_) => break,
            }
        }
    }

    /// Propose what was taken in since the last call: the queued proposals as one batch (one
    /// append message per follower, not one per entry, and so one acknowledgement back), then
    /// one barrier entry shared by the queued log reads.
    ///
    /// Barrier safety: every read it serves arrived before it was appended, so any write
    /// acknowledged before a read began has a lower index (or sits in a higher term's log, and
    /// then this barrier never commits). An entry appended *before* a read arrived could already
    /// be followed by committed writes, so it could not serve that read.
    fn flush_proposals(&mut self) {
        if !self.queued.is_empty() {
            let waiting = std::mem::take(&mut self.queued_replies);
            match self.node.propose_batch(std::mem::take(&mut self.queued)) {
                Ok(()) => self.proposals.extend(waiting),
                Err(e) => {
                    ::metrics::counter!(metrics::PROPOSALS_FAILED).increment(waiting.len() as u64);
                    fail_all(waiting.into_iter().map(|(_, reply)| reply), e.into());
                }
            }
        }
        if self.log_reads.is_empty() {
            return;
        }
        let readers = std::mem::take(&mut self.log_reads);
        let seq = self.seq();
        let id = self.node.status().id;
        match self.node.propose(envelope::wrap(id, seq, &[])) {
            Ok(()) => {
                self.barriers.insert(seq, readers);
            }
            Err(e) => fail_all(readers, e.into()),
        }
    }

    /// A leader with new proposals to write, while entries it wrote before still wait for a
    /// quorum, first takes input until those commit (at most `ACK_WAIT`).
    ///
    /// Why: the write blocks this loop for one fsync, and the acknowledgements that arrive
    /// meanwhile would wait it out, and with them the answers to their clients. On a loaded
    /// 3-node cluster that put a whole extra fsync into every write's latency. Waiting instead
    /// answers those clients first and writes the new proposals, with those that arrive
    /// meanwhile, in one larger batch (fewer fsyncs per entry on all three nodes).
    /// The cost is that the new entries' appends leave later (by about one follower write),
    /// which they would mostly have spent queued behind that follower's previous write.
    async fn wait_for_acks(&mut self) {
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        while self.node.acks_pending_behind_new_entries() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(req)) => {
                    self.on_request(req);
                    self.take_queued();
                }
                Ok(None) | Err(_) => return,
            }
        }
    }

    fn on_tick(&mut self) {
        self.node.tick();
        self.lease.refresh();
        self.proposals.retain(|_, tx| !tx.is_closed());
        self.reads.retain(|_, tx| !tx.is_closed());
        self.barriers.retain(|_, readers| {
            readers.retain(|tx| !tx.is_closed());
            !readers.is_empty()
        });
        self.conf_waiters.retain(|(_, _, tx)| !tx.is_closed());
        ::metrics::gauge!(metrics::PROPOSALS_PENDING).set(self.proposals.len() as f64);
    }

    fn on_request(&mut self, req: Request<M::Output>) {
        match req {
            Request::Step(m) => {
                if let Err(e) = self.node.step(m) {
                    tracing::warn!(error = %e, "step failed");
                }
            }
            Request::Propose { data, reply } if data.is_empty() => {
                let _ = reply.send(Err(DriverError::EmptyProposal));
            }
            Request::Propose { data, reply } => {
                let seq = self.seq();
                let id = self.node.status().id;
                self.queued.push(envelope::wrap(id, seq, &data));
                self.queued_replies.push((seq, reply));
            }
            Request::ConfChange { cc, reply } => match self.node.propose_conf_change(cc) {
                Ok(()) => {
                    // The change is the entry just appended.
                    let st = self.node.status();
                    self.conf_waiters.push((st.last_index, st.term, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Request::ReadIndex { reply } => {
                let seq = self.seq();
                match self.node.read_index(seq.to_be_bytes().to_vec()) {
                    Ok(()) => {
                        self.reads.insert(seq, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Request::LogRead { reply } => self.log_reads.push(reply),
            Request::Transfer { to, reply } => {
                let _ = reply.send(self.node.transfer_leader(to).map_err(Into::into));
            }
            Request::Campaign => {
                let _ = self.node.campaign();
            }
            Request::WithStorage(f) => f(self.node.storage_mut()),
        }
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn handle_ready(&mut self, rd: Ready) -> Result<(), FatalError> {
        // The lease anchor: no message of this Ready has left yet.
        let anchor = self.lease.now();
        if let Some(ss) = rd.soft_state {
            self.on_soft_state(ss.role, ss.leader);
        }
        if let Some(snap) = &rd.snapshot {
            let started = Instant::now();
            self.node.storage_mut().apply_snapshot(snap)?;
            self.sm.restore(self.node.storage_mut(), snap)?;
            self.conf = snap.meta.conf.clone();
            self.last_compaction = snap.meta.index;
            // Operators (and the membership tests) need to see that a member caught up by
            // snapshot rather than from the log, and how long the install stalled it.
            ::metrics::counter!(metrics::SNAPSHOTS_INSTALLED).increment(1);
            let first = self.node.storage().first_index()?;
            ::metrics::gauge!(metrics::LOG_FIRST_INDEX).set(first as f64);
            tracing::info!(
                index = snap.meta.index,
                term = snap.meta.term,
                bytes = snap.data.len(),
                duration = ?started.elapsed(),
                voters = %Ids(&snap.meta.conf.voters),
                learners = %Ids(&snap.meta.conf.learners),
                "snapshot installed"
            );
        }
        // Appends and heartbeats leave before our own fsync, so the followers' disk writes
        // overlap it (see `MessageBody::may_precede_persist` for why that is safe). The loop
        // handles no acknowledgement until this Ready is done, so commit never outruns our copy.
        let (early, late): (Vec<_>, Vec<_>) = rd
            .messages
            .into_iter()
            .partition(|m| self.send_all_before_persist || m.body.may_precede_persist());
        // Lease readers read at the published commit index. A message leaving now carries this
        // Ready's commit index to followers, which may apply an entry and answer its writer
        // before our own fsync ends; a lease read here after that answer must see the entry.
        // So the index is published before the first message that carries it leaves.
        if !self.publish_commit_after_send {
            self.publish_status();
        }
        if !early.is_empty() {
            self.transport.send(early);
        }
        // Quorum confirmations of heartbeat rounds count from when each round was sent (its
        // anchor), not from now, so they need nothing from this Ready's write.
        self.lease.observe(&rd.lease_events, anchor);
        // A leader answers its clients before its next fsync rather than after it: committed
        // entries already in local storage were durable on a quorum before they could commit,
        // so they need nothing from this Ready's write. Entries committed in this very Ready on
        // our own unwritten copy (a single-voter cluster) wait for the write. A follower applies
        // after persisting, so its acknowledgement does not wait for its apply.
        let committed = rd.committed_entries;
        let split = if self.node.role() == Role::Leader {
            let stored = self.node.storage().last_index()?;
            committed.partition_point(|e| e.index <= stored)
        } else {
            0
        };
        let (ready_now, after_write) = committed.split_at(split);
        self.apply(ready_now)?;
        let started = Instant::now();
        self.node
            .storage_mut()
            .persist(rd.hard_state.as_ref(), &rd.entries)?;
        if !rd.entries.is_empty() || rd.hard_state.is_some() {
            metrics::persist(started.elapsed());
        }
        if let Some(hs) = &rd.hard_state {
            self.log_term(hs.term);
        }
        self.publish_status();
        if !late.is_empty() {
            self.transport.send(late);
        }
        let snapshot_index = rd.snapshot.as_ref().map(|s| s.meta.index);
        self.apply(after_write)?;
        if let Some(idx) = snapshot_index {
            // Never `send_*(f(*tx.borrow()))`: the borrow's read guard lives to the end of the
            // statement and the send waits for it — the driver deadlocked itself here on every
            // snapshot install (issue 22).
            self.applied_tx.send_if_modified(|applied| {
                let grew = idx > *applied;
                *applied = (*applied).max(idx);
                grew
            });
            self.lease.on_applied(idx);
        }
        for rs in rd.read_states {
            let Ok(bytes) = <[u8; 8]>::try_from(rs.ctx.as_slice()) else {
                continue;
            };
            if let Some(reply) = self.reads.remove(&u64::from_be_bytes(bytes)) {
                let _ = reply.send(Ok(rs.index));
            }
        }
        self.node.advance();
        self.publish_status();
        for (reply, result) in self.conf_answers.drain(..) {
            let _ = reply.send(result);
        }
        self.maybe_compact()?;
        Ok(())
    }

    fn on_soft_state(&mut self, role: Role, leader: Option<u64>) {
        ::metrics::gauge!(metrics::HAS_LEADER).set(if leader.is_some() { 1.0 } else { 0.0 });
        ::metrics::gauge!(metrics::IS_LEADER).set(if role == Role::Leader { 1.0 } else { 0.0 });
        let term = self.node.status().term;
        self.log_term(term);
        if role != self.last_role {
            tracing::info!(
                from = self.last_role.as_str(),
                to = role.as_str(),
                term,
                "raft role changed"
            );
            self.last_role = role;
        }
        if leader != self.last_leader {
            match (self.last_leader, leader) {
                (None, Some(l)) => tracing::info!(leader = %Id(l), term, "leader elected"),
                (Some(was), None) => tracing::info!(was = %Id(was), term, "leader lost"),
                (Some(was), Some(l)) => {
                    tracing::info!(was = %Id(was), leader = %Id(l), term, "leader changed")
                }
                (None, None) => {}
            }
            if leader.is_some() {
                ::metrics::counter!(metrics::LEADER_CHANGES).increment(1);
            }
            self.last_leader = leader;
        }
        self.lease.on_soft_state(role, leader);
        if role != Role::Leader {
            // Reads waiting on this node as leader cannot be confirmed any more; their callers
            // retry (a follower's forwarded reads are simply never answered and time out).
            let me = self.node.status().id;
            if leader != Some(me) {
                for (_, reply) in self.reads.drain() {
                    let _ = reply.send(Err(DriverError::Raft(RaftError::NotLeader { leader })));
                }
            }
        }
    }

    /// Log a term change once, whichever input brought it.
    fn log_term(&mut self, term: Term) {
        if term != self.last_term {
            tracing::info!(from = self.last_term, to = term, "raft term changed");
            self.last_term = term;
        }
    }

    fn apply(&mut self, entries: &[crate::types::Entry]) -> Result<(), FatalError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let started = Instant::now();
        let me = self.node.status().id;
        let mut commands = Vec::new();
        let mut conf_changes = Vec::new();
        let mut origins = Vec::new();
        let mut barriers = Vec::new();
        for e in entries {
            match &e.payload {
                EntryPayload::Normal(data) => {
                    if let Some((origin, seq, payload)) = envelope::unwrap(data) {
                        if payload.is_empty() {
                            // A log read's barrier: nothing for the state machine.
                            if origin == me {
                                barriers.push((seq, e.index));
                            }
                            continue;
                        }
                        commands.push(Command {
                            index: e.index,
                            term: e.term,
                            data: payload,
                        });
                        origins.push((origin, seq));
                    }
                }
                EntryPayload::ConfChange(cc) => {
                    self.conf.apply(*cc);
                    conf_changes.push((e.index, *cc));
                    let (what, id) = match *cc {
                        ConfChange::AddVoter(id) => ("add voter", id),
                        ConfChange::AddLearner(id) => ("add learner", id),
                        ConfChange::RemoveNode(id) => ("remove", id),
                    };
                    tracing::info!(
                        index = e.index,
                        change = what,
                        member = %Id(id),
                        voters = %Ids(&self.conf.voters),
                        learners = %Ids(&self.conf.learners),
                        "membership change applied"
                    );
                }
                EntryPayload::Empty => {}
            }
        }
        let batch = ApplyBatch {
            commands,
            conf_changes,
            applied: last.index,
            applied_term: last.term,
            conf: &self.conf,
        };
        let outputs = self.sm.apply(self.node.storage_mut(), batch)?;
        metrics::apply(started.elapsed());
        // Publish before answering: a client that saw its write acknowledged must find it
        // applied (and committed) in any read that follows.
        self.applied_tx.send_replace(last.index);
        self.lease.on_applied(last.index);
        self.publish_status();
        for ((origin, seq), out) in origins.into_iter().zip(outputs) {
            if origin != me {
                continue;
            }
            if let Some(reply) = self.proposals.remove(&seq) {
                ::metrics::counter!(metrics::PROPOSALS_COMMITTED).increment(1);
                let _ = reply.send(Ok(out));
            }
        }
        for (seq, index) in barriers {
            for reply in self.barriers.remove(&seq).unwrap_or_default() {
                let _ = reply.send(Ok(index));
            }
        }
        self.answer_conf_waiters(entries);
        Ok(())
    }

    /// A waiting membership change is answered once its index is applied: done if the entry
    /// there is still ours (same term, a change), dropped if a new leader's entry replaced it.
    /// One whose index a snapshot skipped has an unknown outcome; its caller times out.
    fn answer_conf_waiters(&mut self, applied: &[crate::types::Entry]) {
        let (Some(first), Some(last)) = (applied.first(), applied.last()) else {
            return;
        };
        let range = first.index..=last.index;
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.conf_waiters)
            .into_iter()
            .partition(|(index, _, _)| range.contains(index));
        self.conf_waiters = waiting;
        for (index, term, reply) in due {
            // Applied entries are contiguous, and `range` holds `index`.
            let e = &applied[(index - first.index) as usize];
            let ours = e.term == term && matches!(e.payload, EntryPayload::ConfChange(_));
            let result = if ours {
                Ok(())
            } else {
                Err(DriverError::Dropped)
            };
            self.conf_answers.push((reply, result));
        }
    }

    fn maybe_compact(&mut self) -> Result<(), FatalError> {
        let applied = *self.applied_tx.borrow();
        if applied >= self.last_compaction + self.snapshot_count {
            let before = self.node.storage().first_index()?;
            self.sm.compact(self.node.storage_mut(), applied)?;
            self.last_compaction = applied;
            let after = self.node.storage().first_index()?;
            // The state machine keeps its catch-up entries, so an early compaction may trim
            // nothing; count only those that moved the log's start.
            if after > before {
                ::metrics::counter!(metrics::LOG_COMPACTIONS).increment(1);
                ::metrics::gauge!(metrics::LOG_FIRST_INDEX).set(after as f64);
                tracing::debug!(applied, first_index = after, "raft log compacted");
            }
        }
        Ok(())
    }

    fn publish_status(&mut self) {
        let refused = self.node.refused();
        if refused.total() != self.refused_exported {
            self.refused_exported = refused.total();
            for (r, n) in refused.iter() {
                ::metrics::counter!(metrics::MESSAGES_REFUSED, "reason" => r.as_str()).absolute(n);
            }
        }
        let mut st = self.node.status();
        st.applied = st.applied.max(*self.applied_tx.borrow());
        ::metrics::gauge!(metrics::TERM).set(st.term as f64);
        ::metrics::gauge!(metrics::COMMIT_INDEX).set(st.commit as f64);
        ::metrics::gauge!(metrics::APPLIED_INDEX).set(st.applied as f64);
        self.status_tx.send_if_modified(|cur| {
            if *cur != st {
                *cur = st;
                true
            } else {
                false
            }
        });
    }
}

fn fail_all<T>(
    replies: impl IntoIterator<Item = oneshot::Sender<Result<T, DriverError>>>,
    e: DriverError,
) {
    for reply in replies {
        let _ = reply.send(Err(e.clone()));
    }
}
