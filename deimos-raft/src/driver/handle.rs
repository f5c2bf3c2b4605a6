//! The application's side of the driver: propose, read, step, observe.

use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::Clock;
use crate::error::RaftError;
use crate::lease::LeaseState;
use crate::status::Status;
use crate::types::{ConfChange, Index, Message, NodeId};

/// Why a request to the driver failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DriverError {
    /// The core refused it (not leader, a change pending, a transfer under way, ...).
    #[error(transparent)]
    Raft(#[from] RaftError),
    /// No answer within the driver's request timeout. For a proposal the outcome is unknown: it may
    /// still commit.
    #[error("request timed out")]
    Timeout,
    /// The driver's loop has ended; the node is going down.
    #[error("the raft node has stopped")]
    Stopped,
    /// The entry was replaced in the log by a new leader's: it never took effect.
    #[error("dropped by a leader change before it committed; it did not take effect")]
    Dropped,
    /// An empty entry is how the driver marks a log read's barrier, so it cannot be a command.
    #[error("empty proposal: an empty entry is reserved for log reads")]
    EmptyProposal,
}

/// An input to the driver: what a [`Handle`] sends to [`Driver::run`](super::Driver::run), or
/// what a deterministic simulator hands to [`Driver::input`](super::Driver::input). Replies
/// come back on the oneshot senders.
pub enum Request<O> {
    /// Replicate a client command; answered with the state machine's output once applied here.
    Propose {
        /// The command, as the state machine will receive it.
        data: Vec<u8>,
        /// Where the state machine's output (or the failure) goes.
        reply: oneshot::Sender<Result<O, DriverError>>,
    },
    /// Change the membership; answered once applied here.
    ConfChange {
        /// The change.
        cc: ConfChange,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<(), DriverError>>,
    },
    /// A linearizable read point by ReadIndex (a quorum-confirmed heartbeat round).
    ReadIndex {
        /// Where the read index goes.
        reply: oneshot::Sender<Result<Index, DriverError>>,
    },
    /// A read point by a log entry committed on a quorum (`?quorum=true`).
    LogRead {
        /// Where the barrier entry's index goes.
        reply: oneshot::Sender<Result<Index, DriverError>>,
    },
    /// Hand leadership to another voter.
    Transfer {
        /// The voter to hand it to.
        to: NodeId,
        /// Where the outcome goes (answered when the transfer starts or is refused).
        reply: oneshot::Sender<Result<(), DriverError>>,
    },
    /// Start an election now.
    Campaign,
    /// A message received from a peer; the core checks it before acting on it.
    Step(Message),
    /// Run a closure on the driver's thread with the log storage (as `&mut dyn Any`, so this
    /// type need not name the storage type), between two Readies: what it sees is a state the
    /// driver has finished writing and applying.
    WithStorage(StorageFn),
}

/// See [`Request::WithStorage`].
pub type StorageFn = Box<dyn FnOnce(&mut dyn std::any::Any) + Send>;

/// How a linearizable read was (or will be) confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPath {
    /// Served from local state under a valid leader lease: no messages.
    Lease,
    /// Confirmed by a quorum-acknowledged heartbeat round (on a follower, through the leader).
    ReadIndex,
}

/// Cheap to clone; every server task holds one.
pub struct Handle<O, C: Clock + Clone> {
    pub(crate) tx: mpsc::Sender<Request<O>>,
    pub(crate) status: watch::Receiver<Status>,
    pub(crate) applied: watch::Receiver<Index>,
    pub(crate) lease: watch::Receiver<LeaseState>,
    pub(crate) clock: C,
    pub(crate) timeout: Duration,
}

impl<O, C: Clock + Clone> Clone for Handle<O, C> {
    fn clone(&self) -> Self {
        Handle {
            tx: self.tx.clone(),
            status: self.status.clone(),
            applied: self.applied.clone(),
            lease: self.lease.clone(),
            clock: self.clock.clone(),
            timeout: self.timeout,
        }
    }
}

impl<O: Send + 'static, C: Clock + Clone> Handle<O, C> {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, DriverError>>) -> Request<O>,
    ) -> Result<T, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| DriverError::Stopped)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(DriverError::Stopped),
            Err(_) => Err(DriverError::Timeout),
        }
    }

    /// Replicate `data` and return the state machine's output for it, computed when this node
    /// applied it.
    pub async fn propose(&self, data: Vec<u8>) -> Result<O, DriverError> {
        let r = self.call(|reply| Request::Propose { data, reply }).await;
        if matches!(r, Err(DriverError::Timeout) | Err(DriverError::Stopped)) {
            // Refusals are counted by the driver; these never reached it or never came back.
            metrics::counter!(super::metrics::PROPOSALS_FAILED).increment(1);
        }
        r
    }

    /// Change the membership; answered once this node has applied the change (so it is
    /// committed and in effect here), or refused at once.
    pub async fn propose_conf_change(&self, cc: ConfChange) -> Result<(), DriverError> {
        self.call(|reply| Request::ConfChange { cc, reply }).await
    }

    /// Hand leadership to voter `to` (leader only); the lease is revoked before the handover starts.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), DriverError> {
        self.call(|reply| Request::Transfer { to, reply }).await
    }

    /// Start an election on this node now. Returns once the request is queued.
    pub async fn campaign(&self) -> Result<(), DriverError> {
        self.tx
            .send(Request::Campaign)
            .await
            .map_err(|_| DriverError::Stopped)
    }

    /// Wait until this node may answer a linearizable read, and say how it was confirmed. On the
    /// leader with a valid lease: no messages, just wait for the commit index to be applied.
    /// Otherwise ReadIndex (forwarded to the leader from a follower).
    pub async fn linearizable_read(&self, force_quorum: bool) -> Result<ReadPath, DriverError> {
        if !force_quorum {
            if let Some(index) = self.lease_read_index() {
                self.wait_applied(index).await?;
                return Ok(ReadPath::Lease);
            }
        }
        let index = self.call(|reply| Request::ReadIndex { reply }).await?;
        self.wait_applied(index).await?;
        Ok(ReadPath::ReadIndex)
    }

    /// Wait until this node may answer a read through the Raft log: an empty entry (a barrier)
    /// proposed after the request arrived has committed and this node has applied it, so every
    /// write acknowledged before the request began is applied here. This is etcd v2's quorum read
    /// (`?quorum=true`): a consensus round with a log write on a quorum, where ReadIndex needs
    /// only a heartbeat round. It does not depend on the leader's lease or clock. Log reads
    /// that reach the driver together share one barrier entry. Returns the barrier's index.
    pub async fn log_read(&self) -> Result<Index, DriverError> {
        self.call(|reply| Request::LogRead { reply }).await
    }

    /// The index a lease read must see applied, if the lease is valid right now.
    pub fn lease_read_index(&self) -> Option<Index> {
        let lease = *self.lease.borrow();
        if lease.can_read_with_lease_at(self.clock.now()) {
            // Everything committed so far — possibly acknowledged to a client through another
            // node — must be visible to this read.
            Some(self.status.borrow().commit)
        } else {
            None
        }
    }

    /// Wait until this node has applied `index` (or the request timeout passes).
    pub async fn wait_applied(&self, index: Index) -> Result<(), DriverError> {
        if *self.applied.borrow() >= index {
            return Ok(());
        }
        let mut rx = self.applied.clone();
        let res = tokio::time::timeout(self.timeout, async {
            rx.wait_for(|&a| a >= index).await.map(|_| ())
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(DriverError::Stopped),
            Err(_) => Err(DriverError::Timeout),
        }
    }

    /// Run `f` on the driver's thread with the storage, between two Readies (see
    /// [`Request::WithStorage`]); it should be quick, as the Raft loop waits for it. What `f`
    /// produces goes back through a channel `f` captures. Errs only if the driver has stopped.
    pub async fn with_storage(&self, f: StorageFn) -> Result<(), DriverError> {
        self.tx
            .send(Request::WithStorage(f))
            .await
            .map_err(|_| DriverError::Stopped)
    }

    /// Deliver a message from a peer. Drops it when the node is overloaded (Raft recovers).
    pub fn step(&self, m: Message) {
        let _ = self.tx.try_send(Request::Step(m));
    }

    /// The node's status as of the last `Ready` the driver handled.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// `(term, commit, applied)` without cloning the membership (hot path: response headers).
    pub fn indexes(&self) -> (crate::types::Term, Index, Index) {
        let st = self.status.borrow();
        (st.term, st.commit, st.applied)
    }

    /// A receiver of every status the driver publishes (one per handled `Ready` that changed it).
    pub fn status_watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// The lease state as last published by the driver's lease tracker.
    pub fn lease_state(&self) -> LeaseState {
        *self.lease.borrow()
    }

    /// A reader that judges the lease against the driver's own clock ([`LeaseReader`](crate::lease::LeaseReader)).
    pub fn lease_reader(&self) -> crate::lease::LeaseReader<C> {
        crate::lease::LeaseReader::new(self.lease.clone(), self.clock.clone())
    }

    /// The highest index the state machine has applied on this node.
    pub fn applied_index(&self) -> Index {
        *self.applied.borrow()
    }

    /// The driver's clock now.
    pub fn now(&self) -> Duration {
        self.clock.now()
    }
}
