//! The leader lease: while a quorum has recently confirmed this node's leadership, linearizable
//! reads are served from local state with no consensus round.
//!
//! Rules (see `LeaseConfig` for the timing argument):
//! * a lease exists only once a quorum acknowledged a heartbeat round, and lasts from the instant
//!   that round was **sent** (stamped by the driver before sending) for
//!   `lease_duration - drift_tolerance`; every later acknowledged round extends it;
//! * it ends at once on step-down, term change, removal, membership change and before a leader
//!   transfer (the core reports these as `LeaseEvent::Revoked`);
//! * a new leader serves lease reads only once an entry of its own term is committed *and
//!   applied*, so its state holds every write committed before it was elected;
//! * readers compare `valid_until` with the clock at read time, never a cached "valid" flag.
//!
//! `LeaseTracker` is sans-IO apart from the injected `Clock`; it publishes `LeaseState` on a
//! `tokio::sync::watch` channel for the server.

mod config;
pub mod metrics;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::watch;

pub use config::{LeaseConfig, LeaseConfigError};

use crate::clock::Clock;
use crate::types::{Index, LeaseEndReason, LeaseEvent, NodeId, Role, Term};

/// What the server needs to decide whether to serve a read locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseState {
    /// The node this state is about.
    pub id: NodeId,
    /// Its role as of the last `Ready` observed; only a leader can hold a lease.
    pub role: Role,
    /// The term this node last became leader in (0 if it never has): the term any lease it
    /// holds belongs to. Not updated when it merely follows in a later term.
    pub term: Term,
    /// The leader it currently knows (from the core's soft state), if any.
    pub leader: Option<NodeId>,
    /// Monotonic deadline (the tracker's clock): the lease is valid while `now < valid_until`.
    pub valid_until: Option<Duration>,
    /// An entry of this leader's term is committed and applied.
    pub serving: bool,
    /// Why there is no lease, when there is none.
    pub reason: Option<LeaseEndReason>,
}

impl LeaseState {
    fn initial(id: NodeId) -> Self {
        LeaseState {
            id,
            role: Role::Follower,
            term: 0,
            leader: None,
            valid_until: None,
            serving: false,
            reason: None,
        }
    }

    /// A quorum-confirmed lease that has not run out at `now`.
    pub fn has_valid_lease_at(&self, now: Duration) -> bool {
        self.role == Role::Leader && self.valid_until.is_some_and(|v| now < v)
    }

    /// `has_valid_lease_at` and the leader's state is complete enough to answer from.
    pub fn can_read_with_lease_at(&self, now: Duration) -> bool {
        self.serving && self.has_valid_lease_at(now)
    }

    /// Time left on the lease at `now` (zero without one, or when not leading).
    pub fn remaining_at(&self, now: Duration) -> Duration {
        match self.valid_until {
            Some(v) if self.role == Role::Leader => v.saturating_sub(now),
            _ => Duration::ZERO,
        }
    }
}

/// Turns the core's lease facts into a deadline. Feed it every `Ready`'s `lease_events` with the
/// anchor time read *before* sending that `Ready`'s messages, and every applied index.
pub struct LeaseTracker<C: Clock> {
    cfg: LeaseConfig,
    clock: C,
    state: LeaseState,
    /// Send times of rounds not yet acknowledged by a quorum, in this leadership.
    sent: VecDeque<(u64, Duration)>,
    /// Index of the first committed entry of this leader's term.
    term_commit: Option<Index>,
    applied: Index,
    /// The lease may not be (re)acquired for the rest of this term (transfer, removal).
    forbidden: bool,
    /// Whether the last `refresh` saw a valid lease (to count timeouts and acquisitions).
    was_valid: bool,
    tx: watch::Sender<LeaseState>,
}

impl<C: Clock> LeaseTracker<C> {
    /// A tracker for node `id`. `raft` must be the node's Raft config: the lease is only sound
    /// with its check-quorum (stickiness) and timing, and `new` refuses otherwise.
    pub fn new(
        id: NodeId,
        cfg: LeaseConfig,
        raft: &crate::Config,
        clock: C,
    ) -> Result<Self, LeaseConfigError> {
        cfg.validate(raft)?;
        Ok(Self::new_unchecked(id, cfg, clock))
    }

    /// Skip validation. Only for tests that show an unsafe configuration is caught.
    #[doc(hidden)]
    pub fn new_unchecked(id: NodeId, cfg: LeaseConfig, clock: C) -> Self {
        metrics::describe();
        let state = LeaseState::initial(id);
        let (tx, _) = watch::channel(state);
        LeaseTracker {
            cfg,
            clock,
            state,
            sent: VecDeque::new(),
            term_commit: None,
            applied: 0,
            forbidden: false,
            was_valid: false,
            tx,
        }
    }

    /// The timing this tracker enforces.
    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    /// A receiver of every published state: how validity reaches the server (see [`LeaseReader`]).
    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.tx.subscribe()
    }

    /// The state as last published.
    pub fn state(&self) -> LeaseState {
        self.state
    }

    /// The tracker's clock now (the clock anchors and deadlines are measured on).
    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    /// [`LeaseState::has_valid_lease_at`] now.
    pub fn has_valid_lease(&self) -> bool {
        self.state.has_valid_lease_at(self.clock.now())
    }

    /// [`LeaseState::can_read_with_lease_at`] now.
    pub fn can_read_with_lease(&self) -> bool {
        self.state.can_read_with_lease_at(self.clock.now())
    }

    /// [`LeaseState::remaining_at`] now.
    pub fn remaining(&self) -> Duration {
        self.state.remaining_at(self.clock.now())
    }

    /// A renewal is due when a third of the lease or less remains (or there is none) and the
    /// node leads: the driver then sends a heartbeat round without waiting for the next tick.
    pub fn renewal_due(&self) -> bool {
        if self.state.role != Role::Leader || self.forbidden {
            return false;
        }
        let now = self.clock.now();
        if let Some(&(_, sent_at)) = self.sent.back() {
            // A round is in flight; give it a heartbeat interval before asking for another.
            if now.saturating_sub(sent_at) < self.cfg.heartbeat_interval() {
                return false;
            }
        }
        self.remaining() <= self.cfg.lease_duration / 3
    }

    /// Apply the lease facts of one `Ready`. `anchor` is the clock reading taken before that
    /// `Ready`'s messages were handed to the transport.
    pub fn observe(&mut self, events: &[LeaseEvent], anchor: Duration) {
        for ev in events {
            match *ev {
                LeaseEvent::BecameLeader { term } => {
                    self.end(None);
                    self.state.term = term;
                    self.state.role = Role::Leader;
                    self.state.leader = Some(self.state.id);
                    self.state.serving = false;
                    self.term_commit = None;
                    self.forbidden = false;
                }
                LeaseEvent::RoundSent { term, round } if self.leads(term) && !self.forbidden => {
                    self.sent.push_back((round, anchor));
                }
                LeaseEvent::RoundAcked { term, round } if self.leads(term) && !self.forbidden => {
                    self.on_round_acked(round)
                }
                LeaseEvent::TermCommitted { term, index } if self.leads(term) => {
                    self.term_commit = Some(index);
                    self.update_serving();
                }
                LeaseEvent::Revoked { term, reason } if term == self.state.term => {
                    self.end(Some(reason));
                    match reason {
                        LeaseEndReason::Transfer => self.forbidden = true,
                        LeaseEndReason::StepDown
                        | LeaseEndReason::TermChange
                        | LeaseEndReason::Removed => {
                            self.forbidden = true;
                            self.state.role = Role::Follower;
                            self.state.leader = None;
                            self.state.serving = false;
                        }
                        LeaseEndReason::MembershipChange | LeaseEndReason::Timeout => {}
                    }
                }
                _ => {}
            }
        }
        self.publish();
    }

    /// The state machine applied up to `index`.
    pub fn on_applied(&mut self, index: Index) {
        self.applied = self.applied.max(index);
        if self.update_serving() {
            self.publish();
        }
    }

    /// Note where the leader is (followers learn it from `SoftState`), for status reporting.
    pub fn on_soft_state(&mut self, role: Role, leader: Option<NodeId>) {
        if role != Role::Leader && self.state.role == Role::Leader {
            self.end(Some(LeaseEndReason::StepDown));
        }
        if role != Role::Leader {
            self.state.role = role;
        }
        self.state.leader = leader;
        self.publish();
    }

    /// Re-evaluate expiry against the clock: counts timeouts, updates gauges. Call every tick.
    pub fn refresh(&mut self) {
        let now = self.clock.now();
        let valid = self.state.can_read_with_lease_at(now);
        if self.was_valid && !valid && self.state.valid_until.is_some_and(|v| now >= v) {
            metrics::expiration(LeaseEndReason::Timeout);
            self.state.reason = Some(LeaseEndReason::Timeout);
            let _ = self.tx.send(self.state);
        }
        self.was_valid = valid;
        metrics::gauges(valid, self.state.remaining_at(now));
    }

    fn leads(&self, term: Term) -> bool {
        self.state.role == Role::Leader && self.state.term == term
    }

    fn on_round_acked(&mut self, round: u64) {
        // The lease runs from the send time of the acknowledged round itself; rounds sent before
        // the last revocation are not in `sent` and confirm nothing.
        let mut anchor = None;
        while self.sent.front().is_some_and(|&(r, _)| r <= round) {
            let (r, at) = self.sent.pop_front().expect("checked");
            if r == round {
                anchor = Some(at);
            }
        }
        let Some(sent_at) = anchor else { return };
        let until = sent_at + self.cfg.effective_duration();
        if self.state.valid_until.is_none_or(|v| until > v) {
            self.state.valid_until = Some(until);
            self.state.reason = None;
            metrics::renewal();
        }
        let valid = self.state.can_read_with_lease_at(self.clock.now());
        if valid && !self.was_valid {
            metrics::acquisition();
        }
        self.was_valid = valid;
    }

    fn update_serving(&mut self) -> bool {
        let serving =
            self.state.role == Role::Leader && self.term_commit.is_some_and(|i| self.applied >= i);
        let changed = serving != self.state.serving;
        self.state.serving = serving;
        if serving && !self.was_valid && self.state.can_read_with_lease_at(self.clock.now()) {
            metrics::acquisition();
            self.was_valid = true;
        }
        changed
    }

    /// Drop the current lease; `reason` is recorded (and counted) if one was held.
    fn end(&mut self, reason: Option<LeaseEndReason>) {
        let held = self.state.has_valid_lease_at(self.clock.now());
        self.state.valid_until = None;
        self.sent.clear();
        if let Some(r) = reason {
            if held {
                metrics::expiration(r);
            }
            self.state.reason = Some(r);
        }
        self.was_valid = false;
    }

    fn publish(&mut self) {
        let now = self.clock.now();
        metrics::gauges(
            self.state.can_read_with_lease_at(now),
            self.state.remaining_at(now),
        );
        let _ = self.tx.send(self.state);
    }
}

/// The server's handle: a `watch` receiver plus the clock to judge validity at read time.
#[derive(Clone)]
pub struct LeaseReader<C: Clock + Clone> {
    rx: watch::Receiver<LeaseState>,
    clock: C,
}

impl<C: Clock + Clone> LeaseReader<C> {
    /// A reader of the tracker's published states (from [`LeaseTracker::subscribe`]), judging them
    /// against `clock`, which must be the tracker's clock: deadlines are only comparable on it.
    pub fn new(rx: watch::Receiver<LeaseState>, clock: C) -> Self {
        LeaseReader { rx, clock }
    }

    /// The latest published state.
    pub fn state(&self) -> LeaseState {
        *self.rx.borrow()
    }

    /// [`LeaseState::has_valid_lease_at`] now, on the latest state.
    pub fn has_valid_lease(&self) -> bool {
        self.rx.borrow().has_valid_lease_at(self.clock.now())
    }

    /// [`LeaseState::can_read_with_lease_at`] now, on the latest state: whether a read may be answered
    /// locally, linearizably.
    pub fn can_read_with_lease(&self) -> bool {
        self.rx.borrow().can_read_with_lease_at(self.clock.now())
    }

    /// [`LeaseState::remaining_at`] now, on the latest state.
    pub fn remaining(&self) -> Duration {
        self.rx.borrow().remaining_at(self.clock.now())
    }
}
