//! Lease metrics through the `metrics` facade (exported by the server's Prometheus recorder).

use std::time::Duration;

use crate::types::LeaseEndReason;

/// Counter: lease extensions, one per quorum-acknowledged heartbeat round that moved the deadline.
pub const RENEWALS: &str = "deimos_lease_renewals_total";
/// Counter, label `reason` ([`LeaseEndReason`]): leases that ended. Timeouts mean heartbeat rounds
/// were not acknowledged in time (slow or partitioned followers).
pub const EXPIRATIONS: &str = "deimos_lease_expirations_total";
/// Counter: transitions from no lease to a valid lease (after an election or a lapse).
pub const ACQUISITIONS: &str = "deimos_lease_acquisitions_total";
/// Gauge: 1 while this node may serve lease reads, else 0. Exactly one member of a healthy cluster
/// shows 1.
pub const VALID: &str = "deimos_lease_valid";
/// Gauge: seconds left on the lease (0 without one); near 0 on a leader means renewals lag.
pub const REMAINING: &str = "deimos_lease_remaining_seconds";

/// Registers the metrics' help texts and creates the counters at 0, so rates and alerts see the
/// first event.
pub fn describe() {
    metrics::describe_counter!(
        RENEWALS,
        "Lease extensions by a quorum-acknowledged heartbeat round."
    );
    metrics::describe_counter!(EXPIRATIONS, "Leases that ended, by reason.");
    metrics::describe_counter!(
        ACQUISITIONS,
        "Times this node went from no lease to a valid lease."
    );
    metrics::describe_gauge!(
        VALID,
        "1 while this node holds a lease it may serve reads from, else 0."
    );
    metrics::describe_gauge!(
        REMAINING,
        "Seconds until the current lease expires (0 without one)."
    );
    // Exist at 0 from the start, so rates and alerts see the first event.
    metrics::counter!(RENEWALS).increment(0);
    metrics::counter!(ACQUISITIONS).increment(0);
    for r in LeaseEndReason::ALL {
        metrics::counter!(EXPIRATIONS, "reason" => r.as_str()).increment(0);
    }
}

/// Counts one renewal.
pub fn renewal() {
    metrics::counter!(RENEWALS).increment(1);
}

/// Counts one acquisition.
pub fn acquisition() {
    metrics::counter!(ACQUISITIONS).increment(1);
}

/// Counts one lease ending, for `reason`.
pub fn expiration(reason: LeaseEndReason) {
    metrics::counter!(EXPIRATIONS, "reason" => reason.as_str()).increment(1);
}

/// Sets the validity and remaining-time gauges.
pub fn gauges(valid: bool, remaining: Duration) {
    metrics::gauge!(VALID).set(if valid { 1.0 } else { 0.0 });
    metrics::gauge!(REMAINING).set(remaining.as_secs_f64());
}
