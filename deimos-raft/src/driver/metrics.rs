//! Driver metrics, etcd-style names with the `deimos_` prefix.

use std::time::Duration;

/// Gauge: 1 while this node knows a leader (etcd's `etcd_server_has_leader`).
pub const HAS_LEADER: &str = "deimos_server_has_leader";
/// Gauge: 1 on the leader, 0 elsewhere.
pub const IS_LEADER: &str = "deimos_server_is_leader";
/// Counter: leader changes this node has seen; a steady rise means unstable leadership.
pub const LEADER_CHANGES: &str = "deimos_server_leader_changes_seen_total";
/// Gauge: the current term.
pub const TERM: &str = "deimos_raft_term";
/// Gauge: highest index known committed.
pub const COMMIT_INDEX: &str = "deimos_raft_commit_index";
/// Gauge: highest index applied; a gap to the commit index that keeps growing means apply lags.
pub const APPLIED_INDEX: &str = "deimos_raft_applied_index";
/// Counter: this node's proposals that were applied.
pub const PROPOSALS_COMMITTED: &str = "deimos_server_proposals_committed_total";
/// Counter: this node's proposals that failed or timed out.
pub const PROPOSALS_FAILED: &str = "deimos_server_proposals_failed_total";
/// Gauge: this node's proposals waiting to be applied.
pub const PROPOSALS_PENDING: &str = "deimos_server_proposals_pending";
/// Histogram, seconds: durably writing one `Ready`'s entries and hard state (the fsync a write
/// waits for).
pub const PERSIST_SECONDS: &str = "deimos_storage_persist_duration_seconds";
/// Histogram, seconds: applying and durably recording one batch of committed entries.
pub const APPLY_SECONDS: &str = "deimos_storage_apply_duration_seconds";
/// Counter: snapshots received from the leader and installed (this node had fallen behind the
/// leader's log).
pub const SNAPSHOTS_INSTALLED: &str = "deimos_raft_snapshots_installed_total";
/// Counter: compactions of this node's log into a snapshot.
pub const LOG_COMPACTIONS: &str = "deimos_raft_log_compactions_total";
/// Gauge: first index still in the log; a follower behind it needs a snapshot.
pub const LOG_FIRST_INDEX: &str = "deimos_raft_log_first_index";
/// Counter, label `reason` (see [`Refusal`](crate::Refusal)): peer messages the core dropped as
/// impossible. Anything but zero means a faulty or hostile peer.
pub const MESSAGES_REFUSED: &str = "deimos_raft_messages_refused_total";

/// Registers the help texts and creates the counters at 0, so rates and alerts see the first event.
pub fn describe() {
    metrics::describe_gauge!(HAS_LEADER, "1 if this node knows a leader, else 0.");
    metrics::describe_gauge!(IS_LEADER, "1 if this node is the leader, else 0.");
    metrics::describe_counter!(LEADER_CHANGES, "Leader changes seen by this node.");
    metrics::describe_gauge!(TERM, "Current Raft term.");
    metrics::describe_gauge!(COMMIT_INDEX, "Highest log index known committed.");
    metrics::describe_gauge!(
        APPLIED_INDEX,
        "Highest log index applied to the state machine."
    );
    metrics::describe_counter!(
        PROPOSALS_COMMITTED,
        "Proposals from this node that were applied."
    );
    metrics::describe_counter!(
        PROPOSALS_FAILED,
        "Proposals from this node that failed or timed out."
    );
    metrics::describe_gauge!(
        PROPOSALS_PENDING,
        "Proposals from this node waiting to be applied."
    );
    metrics::describe_histogram!(
        PERSIST_SECONDS,
        "Time to durably persist a Ready's entries and hard state (a write-ahead log append with fdatasync, or a redb commit with fsync)."
    );
    metrics::describe_histogram!(
        APPLY_SECONDS,
        "Time to apply and durably record a batch of committed entries."
    );
    metrics::describe_counter!(
        SNAPSHOTS_INSTALLED,
        "Snapshots received from the leader and installed (this node was behind the leader's log)."
    );
    metrics::describe_counter!(
        LOG_COMPACTIONS,
        "Compactions that trimmed this node's Raft log."
    );
    metrics::describe_gauge!(
        LOG_FIRST_INDEX,
        "First index still in this node's Raft log; a follower behind it needs a snapshot."
    );
    metrics::describe_counter!(
        MESSAGES_REFUSED,
        "Peer messages the Raft core dropped as impossible (by reason: term_too_high, malformed_append, ack_beyond_log, round_not_sent, ...)."
    );
    for r in crate::core::Refusal::ALL {
        metrics::counter!(MESSAGES_REFUSED, "reason" => r.as_str()).absolute(0);
    }
    // Exist at 0 from the start, so rates and alerts see the first event.
    metrics::counter!(LEADER_CHANGES).increment(0);
    metrics::counter!(PROPOSALS_COMMITTED).increment(0);
    metrics::counter!(PROPOSALS_FAILED).increment(0);
    metrics::counter!(SNAPSHOTS_INSTALLED).increment(0);
    metrics::counter!(LOG_COMPACTIONS).increment(0);
}

/// Records one persist's duration.
pub fn persist(d: Duration) {
    metrics::histogram!(PERSIST_SECONDS).record(d.as_secs_f64());
}

/// Records one apply batch's duration.
pub fn apply(d: Duration) {
    metrics::histogram!(APPLY_SECONDS).record(d.as_secs_f64());
}
