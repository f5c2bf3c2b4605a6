//! etcd's metric names beside Deimos's own, so the dashboards and alert rules written for etcd
//! (has_leader, leader changes, proposals, WAL fsync and backend commit latency, peer round
//! trip, database size) see a Deimos member as they see an etcd member.
//!
//! The copies are made when `/metrics` is rendered, from the `deimos_*` families, so the hot
//! path records each value once and the two names can never disagree. Where etcd's meaning
//! differs from the Deimos metric it is mapped from, the nearest Deimos quantity is used and
//! said here:
//! - `etcd_server_proposals_committed_total` / `_applied_total` hold the committed / applied
//!   Raft index, from `deimos_raft_commit_index` / `_applied_index`. etcd types them as gauges
//!   with a `_total` name, which Prometheus' own lint refuses; they only grow, so they are typed
//!   as counters here (what dashboards do with them, `rate`/`increase`, is unchanged).
//! - `etcd_disk_wal_fsync_duration_seconds` is the durable redb commit of new entries and hard
//!   state (Deimos's log lives in redb), `etcd_disk_backend_commit_duration_seconds` the commit
//!   that applies entries to the key space.
//! - peer labels are etcd's `To` (member id in hex) instead of Deimos's `to`.

/// (Deimos family, etcd family, whether the `to` label becomes `To`).
const ALIASES: &[(&str, &str, bool)] = &[
    ("deimos_server_has_leader", "etcd_server_has_leader", false),
    ("deimos_server_is_leader", "etcd_server_is_leader", false),
    (
        "deimos_server_leader_changes_seen_total",
        "etcd_server_leader_changes_seen_total",
        false,
    ),
    (
        "deimos_raft_commit_index",
        "etcd_server_proposals_committed_total",
        false,
    ),
    (
        "deimos_raft_applied_index",
        "etcd_server_proposals_applied_total",
        false,
    ),
    (
        "deimos_server_proposals_pending",
        "etcd_server_proposals_pending",
        false,
    ),
    (
        "deimos_server_proposals_failed_total",
        "etcd_server_proposals_failed_total",
        false,
    ),
    (
        "deimos_storage_persist_duration_seconds",
        "etcd_disk_wal_fsync_duration_seconds",
        false,
    ),
    (
        "deimos_storage_apply_duration_seconds",
        "etcd_disk_backend_commit_duration_seconds",
        false,
    ),
    (
        "deimos_network_peer_round_trip_time_seconds",
        "etcd_network_peer_round_trip_time_seconds",
        true,
    ),
    (
        "deimos_network_peer_send_failures_total",
        "etcd_network_peer_sent_failures_total",
        true,
    ),
    (
        "deimos_storage_db_size_bytes",
        "etcd_mvcc_db_total_size_in_bytes",
        false,
    ),
    (
        "deimos_storage_db_size_bytes",
        "etcd_debugging_mvcc_db_total_size_in_bytes",
        false,
    ),
];

/// The metric name of a sample or comment line (`# HELP name ...`, `name{...} v`, `name v`).
fn line_name(line: &str) -> Option<&str> {
    let rest = line
        .strip_prefix("# HELP ")
        .or_else(|| line.strip_prefix("# TYPE "))
        .unwrap_or(line);
    if rest.starts_with('#') {
        return None;
    }
    rest.split(['{', ' ']).next()
}

/// Whether `name` is a sample of family `family` (histograms add `_bucket`, `_sum`, `_count`).
fn of_family<'a>(name: &'a str, family: &str) -> Option<&'a str> {
    let suffix = name.strip_prefix(family)?;
    matches!(suffix, "" | "_bucket" | "_sum" | "_count").then_some(suffix)
}

/// etcd families typed as counters although their Deimos source is a gauge (see above).
const AS_COUNTER: &[&str] = &[
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
];

/// `rendered` followed by the etcd-named copies of the aliased families.
pub fn with_etcd_names(rendered: &str) -> String {
    let mut out = String::with_capacity(rendered.len() * 3 / 2);
    out.push_str(rendered);
    if !rendered.is_empty() && !rendered.ends_with('\n') {
        out.push('\n');
    }
    for (from, to, peer_label) in ALIASES {
        for line in rendered.lines() {
            let Some(name) = line_name(line) else {
                continue;
            };
            let Some(suffix) = of_family(name, from) else {
                continue;
            };
            let renamed = line.replacen(&format!("{from}{suffix}"), &format!("{to}{suffix}"), 1);
            let renamed = if *peer_label {
                renamed
                    .replace("{to=\"", "{To=\"")
                    .replace(",to=\"", ",To=\"")
            } else {
                renamed
            };
            let renamed = match renamed.strip_suffix(" gauge") {
                Some(head) if AS_COUNTER.contains(to) && head.starts_with("# TYPE ") => {
                    format!("{head} counter")
                }
                _ => renamed,
            };
            out.push_str(&renamed);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = "\
# HELP deimos_server_has_leader 1 if this node knows a leader, else 0.
# TYPE deimos_server_has_leader gauge
deimos_server_has_leader 1

# TYPE deimos_storage_persist_duration_seconds histogram
deimos_storage_persist_duration_seconds_bucket{le=\"0.001\"} 3
deimos_storage_persist_duration_seconds_bucket{le=\"+Inf\"} 4
deimos_storage_persist_duration_seconds_sum 0.01
deimos_storage_persist_duration_seconds_count 4

# TYPE deimos_network_peer_send_failures_total counter
deimos_network_peer_send_failures_total{to=\"00000000000000ab\"} 2

# TYPE deimos_raft_commit_index gauge
deimos_raft_commit_index 42

# TYPE deimos_server_has_leader_elsewhere gauge
deimos_server_has_leader_elsewhere 7
";

    #[test]
    fn aliased_families_are_copied_whole_under_etcds_names() {
        let out = with_etcd_names(RENDERED);
        assert!(out.starts_with(RENDERED), "the Deimos names stay first");
        let added = &out[RENDERED.len()..];
        assert_eq!(
            added,
            "\
# HELP etcd_server_has_leader 1 if this node knows a leader, else 0.
# TYPE etcd_server_has_leader gauge
etcd_server_has_leader 1
# TYPE etcd_server_proposals_committed_total counter
etcd_server_proposals_committed_total 42
# TYPE etcd_disk_wal_fsync_duration_seconds histogram
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 3
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"} 4
etcd_disk_wal_fsync_duration_seconds_sum 0.01
etcd_disk_wal_fsync_duration_seconds_count 4
# TYPE etcd_network_peer_sent_failures_total counter
etcd_network_peer_sent_failures_total{To=\"00000000000000ab\"} 2
"
        );
    }
}
