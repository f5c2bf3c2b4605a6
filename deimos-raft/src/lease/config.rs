//! Lease timing and the rule that makes it safe.

use std::time::Duration;

use thiserror::Error;

use crate::config::Config;

/// Lease timing that would not be safe; refused before a lease tracker is built.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LeaseConfigError {
    /// Without check-quorum followers do not refuse votes after hearing from the leader, so nothing
    /// stops a new leader while the old one's lease runs.
    #[error("the lease needs check-quorum (leader stickiness) enabled in the Raft config")]
    CheckQuorumDisabled,
    #[error(
        "lease duration {lease:?} + drift tolerance {tolerance:?} must be below the minimum election \
         timeout {election:?} ((election_tick - 1) x tick interval)"
    )]
    /// The lease (plus the drift allowance) would outlast the shortest time a follower refuses votes.
    TooLong {
        /// The configured lease duration.
        lease: Duration,
        /// The configured drift tolerance.
        tolerance: Duration,
        /// The minimum election timeout the sum must stay below.
        election: Duration,
    },
    /// The lease is zero, or no longer than the drift tolerance: it could never be trusted.
    #[error("lease duration must be greater than the drift tolerance and non-zero")]
    Empty,
    /// The lease's copy of a tick count differs from the Raft config's, so its bound would be
    /// checked against a timing that is not in force (a longer election timeout than the real
    /// one would let the lease outlast the followers' vote refusal).
    #[error("the lease's {what} ({lease}) differs from the node's ({node})")]
    TimingMismatch {
        /// Which setting.
        what: &'static str,
        /// The lease config's value.
        lease: String,
        /// The value the node runs with.
        node: String,
    },
}

/// Lease timing. Why the bound holds: a follower that acknowledged a heartbeat round sent at
/// `t` grants no vote, and does not campaign, until its own clock has counted `election_tick`
/// ticks after receiving it (leader stickiness). The first of those ticks may come at once, so
/// the window is at least `(election_tick - 1) x tick` on the follower's clock. The leader trusts
/// its lease until `t + lease_duration - drift_tolerance` on *its* clock. Requiring
/// `lease_duration + drift_tolerance < (election_tick - 1) x tick` keeps the lease inside the
/// window as long as the two clocks' rates differ by less than `drift_tolerance / lease_duration`
/// (10% by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Time of one Raft tick on this node, as the node's clock measures it. Not checked against
    /// the driver's timer: with a clock scaled for tests (`--unsafe-clock-rate`) the timer runs
    /// at another real rate on purpose, and the server builds both from the same flag.
    pub tick_interval: Duration,
    /// Ticks between heartbeat rounds (as in the Raft config).
    pub heartbeat_tick: usize,
    /// Minimum election timeout in ticks (as in the Raft config).
    pub election_tick: usize,
    /// How long after a quorum-acknowledged round's send time the lease lasts, before the drift
    /// allowance is taken off.
    pub lease_duration: Duration,
    /// What is taken off the lease for clock-rate differences between leader and followers.
    pub drift_tolerance: Duration,
}

impl LeaseConfig {
    /// Defaults from the Raft timing: lease = 3 heartbeat intervals, tolerance = 10% of it.
    pub fn from_raft(cfg: &Config, tick_interval: Duration) -> Self {
        let heartbeat = tick_interval * cfg.heartbeat_tick as u32;
        let lease = heartbeat * 3;
        LeaseConfig {
            tick_interval,
            heartbeat_tick: cfg.heartbeat_tick,
            election_tick: cfg.election_tick,
            lease_duration: lease,
            drift_tolerance: lease / 10,
        }
    }

    /// A custom lease duration (tolerance stays 10% of it unless set afterwards).
    pub fn with_lease_duration(mut self, d: Duration) -> Self {
        self.lease_duration = d;
        self.drift_tolerance = d / 10;
        self
    }

    /// A custom drift tolerance.
    pub fn with_drift_tolerance(mut self, d: Duration) -> Self {
        self.drift_tolerance = d;
        self
    }

    /// Real time between heartbeat rounds.
    pub fn heartbeat_interval(&self) -> Duration {
        self.tick_interval * self.heartbeat_tick as u32
    }

    /// The shortest wall time, on a follower's clock, during which it refuses votes after
    /// hearing from the leader.
    pub fn min_election_timeout(&self) -> Duration {
        self.tick_interval * (self.election_tick.saturating_sub(1)) as u32
    }

    /// How long after a round's send time the lease is trusted.
    pub fn effective_duration(&self) -> Duration {
        self.lease_duration.saturating_sub(self.drift_tolerance)
    }

    /// Refuses timing under which the lease could outlive the followers' vote refusal (see the type's
    /// docs), or a Raft config without check-quorum.
    pub fn validate(&self, raft: &Config) -> Result<(), LeaseConfigError> {
        if !raft.check_quorum {
            return Err(LeaseConfigError::CheckQuorumDisabled);
        }
        for (what, lease, node) in [
            ("election tick", self.election_tick, raft.election_tick),
            ("heartbeat tick", self.heartbeat_tick, raft.heartbeat_tick),
        ] {
            if lease != node {
                return Err(LeaseConfigError::TimingMismatch {
                    what,
                    lease: lease.to_string(),
                    node: node.to_string(),
                });
            }
        }
        if self.lease_duration.is_zero() || self.effective_duration().is_zero() {
            return Err(LeaseConfigError::Empty);
        }
        if self.lease_duration + self.drift_tolerance >= self.min_election_timeout() {
            return Err(LeaseConfigError::TooLong {
                lease: self.lease_duration,
                tolerance: self.drift_tolerance,
                election: self.min_election_timeout(),
            });
        }
        Ok(())
    }
}
