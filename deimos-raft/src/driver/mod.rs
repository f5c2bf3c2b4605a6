//! The async driver: one tokio task owns the core and does, in order, what each `Ready` asks —
//! send the leader's replication traffic, (on a leader) apply and answer what is already
//! committed and stored, persist, publish lease facts (stamped before sending), send the rest,
//! apply and answer the remainder — then `advance`. That order is a list computed by
//! `plan::plan` and executed by `handle_ready`; what each step does is in `steps.rs`.
//! Proposals and log reads taken in together are proposed together just before that
//! (`flush_proposals`). A leader with new proposals first takes in the acknowledgements of the
//! entries it already wrote, if they are in flight (`wait_for_acks`).
//!
//! The loop blocks its thread for each fsync, so it should run where that blocks nothing else:
//! the server gives it a thread and a current-thread runtime of its own.
//!
//! Everything else talks to it through a [`Handle`].

pub mod envelope;
mod handle;
pub mod metrics;
mod plan;
mod steps;
mod traits;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, oneshot, watch};

pub use handle::{DriverError, Handle, ReadPath, Request, StorageFn};
pub use traits::{
    ApplyBatch, Command, Report, Reporter, StateMachine, StateMachineError, Transport,
};

use crate::clock::Clock;
use crate::config::{Config, UnsafeKnobs};
use crate::error::RaftError;
use crate::lease::{LeaseConfig, LeaseConfigError, LeaseTracker};
use crate::raw_node::RawNode;
use crate::ready::Ready;
use crate::storage::{LogStorage, StorageError};
use crate::types::{ConfState, Index, Role, Term};
use plan::Step;

/// The longest a leader holds back its next write for acknowledgements already in flight (see
/// `wait_for_acks`). They normally take a follower's fsync plus a loopback or LAN round trip; the
/// bound only matters when no quorum answers, and keeps that case from stalling the loop.
const ACK_WAIT: Duration = Duration::from_millis(1);

/// Everything a [`Driver`] needs besides its parts: the Raft config, real-time timing, the lease,
/// compaction and the request timeout.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The core's configuration.
    pub raft: Config,
    /// Real time of one Raft tick.
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
    /// Defaults around `raft`: 100 ms ticks, the default lease, compaction every 10,000 applied
    /// entries, a 5 s request timeout.
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

    /// The lease timing in effect: the configured one, else the default derived from the Raft timing.
    pub fn lease_config(&self) -> LeaseConfig {
        self.lease
            .unwrap_or_else(|| LeaseConfig::from_raft(&self.raft, self.tick_interval))
    }
}

/// Why a driver could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Raft configuration is invalid.
    #[error(transparent)]
    Raft(#[from] RaftError),
    /// The lease timing is unsafe for this Raft configuration.
    #[error(transparent)]
    Lease(#[from] LeaseConfigError),
    /// The log storage could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why the Raft loop stopped. Each is fatal: continuing with unknown durable state could lose
/// acknowledged writes, so the process must exit.
#[derive(Debug, thiserror::Error)]
pub enum FatalError {
    /// Writing or reading the log failed.
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
    /// The state machine could not apply, restore or compact.
    #[error(transparent)]
    StateMachine(#[from] StateMachineError),
    /// The core kept producing work without any input (a bug guard: see `MAX_READIES_PER_INPUT`).
    #[error("the raft core produced {0} Readies without new input")]
    NoQuiescence(usize),
}

/// See [`Driver::process`]: far above what a real backlog needs (1 MiB of entries per Ready).
const MAX_READIES_PER_INPUT: usize = 100_000;

type ConfReply = oneshot::Sender<Result<(), DriverError>>;
type ReadReply = oneshot::Sender<Result<Index, DriverError>>;
type ProposeReply<O> = oneshot::Sender<Result<O, DriverError>>;

/// The thin async loop around a [`RawNode`]: it feeds the core ticks, peer messages and requests,
/// carries out each `Ready` in the order of the plan (`plan.rs`) against the storage, transport and
/// state machine, keeps the lease tracker, and answers requests. All I/O happens here.
pub struct Driver<S: LogStorage, T: Transport, M: StateMachine<S>, C: Clock + Clone> {
    node: RawNode<S>,
    transport: T,
    sm: M,
    lease: LeaseTracker<C>,
    rx: mpsc::Receiver<Request<M::Output>>,
    /// What the transport reports about deliveries (see [`Transport::bind`]).
    reports: mpsc::Receiver<Report>,
    status_tx: watch::Sender<crate::status::Status>,
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
    /// What may break the Ready order on purpose: only for the tests that show it is caught.
    knobs: UnsafeKnobs,
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
            knobs: cfg.raft.unsafe_knobs,
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
    pub fn status(&self) -> crate::status::Status {
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

    /// Handle one `Ready`: execute its `plan::plan` step by step, and nothing in between
    /// (the order, and why, is there).
    fn handle_ready(&mut self, rd: Ready) -> Result<(), FatalError> {
        // The lease anchor, stamped before the first step: no message of this Ready has left.
        let anchor = self.lease.now();
        let role = self.node.role();
        let stored = self.node.storage().last_index()?;
        for step in plan::plan(rd, role, stored, self.knobs) {
            match step {
                Step::NoteSoftState(ss) => self.on_soft_state(ss.role, ss.leader),
                Step::InstallSnapshot(snap) => self.install_snapshot(&snap)?,
                Step::PublishStatus => self.publish_status(),
                Step::SendBeforePersist(messages) | Step::SendAfterPersist(messages) => {
                    self.transport.send(messages)
                }
                Step::ObserveLease(events) => self.lease.observe(&events, anchor),
                Step::Apply(entries) => self.apply(&entries)?,
                Step::Persist {
                    hard_state,
                    entries,
                } => self.persist(hard_state.as_ref(), &entries)?,
                Step::PublishSnapshotApplied(index) => self.publish_snapshot_applied(index),
                Step::AnswerReads(read_states) => self.answer_reads(read_states),
                Step::Advance => self.advance()?,
            }
        }
        Ok(())
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
