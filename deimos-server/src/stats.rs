//! Counters behind `/v2/stats/self` and `/v2/stats/leader`, and the read metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const READS: &str = "deimos_server_reads_total";
pub const READ_SECONDS: &str = "deimos_server_read_duration_seconds";
pub const PEER_RTT_SECONDS: &str = "deimos_network_peer_round_trip_time_seconds";
pub const DB_SIZE_BYTES: &str = "deimos_storage_db_size_bytes";

pub fn describe() {
    metrics::describe_counter!(
        crate::api::peer_auth::PEER_REFUSED,
        "Peer requests refused before reaching Raft, by reason: cluster_mismatch, no_sender, unknown_sender, removed_member (answered 410), certificate_mismatch, forged_message."
    );
    for r in crate::api::peer_auth::Refusal::ALL {
        metrics::counter!(crate::api::peer_auth::PEER_REFUSED, "reason" => r.as_str()).increment(0);
    }
    metrics::describe_counter!(
        READS,
        "Key reads served, by how they were made consistent (lease, read-index, quorum, local)."
    );
    metrics::describe_histogram!(READ_SECONDS, "Latency of key reads, by mode.");
    metrics::describe_histogram!(
        PEER_RTT_SECONDS,
        "Heartbeat round trip to each peer (label to: member id), measured on the leader."
    );
    metrics::describe_gauge!(
        DB_SIZE_BYTES,
        "Size of the redb file (Raft log and key space), read at each scrape."
    );
    for mode in ReadMode::ALL {
        metrics::counter!(READS, "mode" => mode.as_str()).increment(0);
    }
}

/// How a key read was made consistent: the `mode` label of the read metrics and the value of
/// the `X-Deimos-Read` response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Served by a leader holding a valid lease.
    Lease,
    /// A plain read without a lease: the leader confirmed its leadership with a quorum
    /// heartbeat round (ReadIndex) first.
    ReadIndex,
    /// `?quorum=true`: through the Raft log, as etcd v2 (a barrier entry committed and applied).
    Quorum,
    /// Served from this member's state as it is (`consistency=local` / `stale=true`).
    Local,
}

impl ReadMode {
    const ALL: [ReadMode; 4] = [
        ReadMode::Lease,
        ReadMode::ReadIndex,
        ReadMode::Quorum,
        ReadMode::Local,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ReadMode::Lease => "lease",
            ReadMode::ReadIndex => "read-index",
            ReadMode::Quorum => "quorum",
            ReadMode::Local => "local",
        }
    }
}

/// Per-mode handles, registered on first use (after `main` installed the recorder): looking
/// the labelled metrics up on every read cost ~2% of a leader serving lease reads.
fn read_handles() -> &'static [(metrics::Counter, metrics::Histogram); ReadMode::ALL.len()] {
    static HANDLES: OnceLock<[(metrics::Counter, metrics::Histogram); ReadMode::ALL.len()]> =
        OnceLock::new();
    HANDLES.get_or_init(|| {
        ReadMode::ALL.map(|mode| {
            (
                metrics::counter!(READS, "mode" => mode.as_str()),
                metrics::histogram!(READ_SECONDS, "mode" => mode.as_str()),
            )
        })
    })
}

pub fn read(mode: ReadMode, took: Duration) {
    // `ALL` lists the variants in declaration order.
    let (count, latency) = &read_handles()[mode as usize];
    count.increment(1);
    latency.record(took.as_secs_f64());
}

/// Per-peer link statistics, for `/v2/stats/leader` (etcd's shape). Messages travel on a
/// one-way stream with no per-message answer, so the round trip measured is the heartbeat's:
/// from sending a heartbeat round to receiving that peer's acknowledgement of it.
#[derive(Debug, Default, Clone)]
pub struct PeerStats {
    pub success: u64,
    pub fail: u64,
    pub current_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    sum_ms: f64,
    sum_sq_ms: f64,
    /// The latest heartbeat sent: (term, round, when). An answer to an older one is not timed.
    heartbeat: Option<(u64, u64, Instant)>,
    /// A send failed and no heartbeat has been answered since (so failures log once per outage).
    failing: bool,
}

impl PeerStats {
    pub fn record(&mut self, ok: bool, took: Duration) {
        if !ok {
            self.fail += 1;
            return;
        }
        let ms = took.as_secs_f64() * 1000.0;
        if self.success == 0 || ms < self.min_ms {
            self.min_ms = ms;
        }
        self.max_ms = self.max_ms.max(ms);
        self.success += 1;
        self.current_ms = ms;
        self.sum_ms += ms;
        self.sum_sq_ms += ms * ms;
    }

    pub fn average_ms(&self) -> f64 {
        if self.success == 0 {
            0.0
        } else {
            self.sum_ms / self.success as f64
        }
    }

    pub fn stddev_ms(&self) -> f64 {
        if self.success == 0 {
            return 0.0;
        }
        let mean = self.average_ms();
        (self.sum_sq_ms / self.success as f64 - mean * mean)
            .max(0.0)
            .sqrt()
    }
}

#[derive(Debug, Default)]
pub struct ServerStats {
    pub recv_batches: AtomicU64,
    pub recv_messages: AtomicU64,
    pub sent_messages: AtomicU64,
    pub peers: Mutex<HashMap<u64, PeerStats>>,
}

impl ServerStats {
    pub fn record_sent(&self, n: u64) {
        self.sent_messages.fetch_add(n, Ordering::Relaxed);
    }

    /// Count a failed send to `to`. True if it is the first since the link last worked.
    pub fn record_failure(&self, to: u64) -> bool {
        let Ok(mut peers) = self.peers.lock() else {
            return false;
        };
        let p = peers.entry(to).or_default();
        p.record(false, Duration::ZERO);
        !std::mem::replace(&mut p.failing, true)
    }

    pub fn heartbeat_sent(&self, to: u64, term: u64, round: u64) {
        if let Ok(mut peers) = self.peers.lock() {
            peers.entry(to).or_default().heartbeat = Some((term, round, Instant::now()));
        }
    }

    /// `from` acknowledged heartbeat `round` of `term`: time it if it is the latest we sent.
    /// True if the link had been failing, i.e. it has just recovered.
    pub fn heartbeat_answered(&self, from: u64, term: u64, round: u64) -> bool {
        let Ok(mut peers) = self.peers.lock() else {
            return false;
        };
        let Some(p) = peers.get_mut(&from) else {
            return false;
        };
        match p.heartbeat {
            Some((t, r, sent)) if (t, r) == (term, round) => {
                p.heartbeat = None;
                let took = sent.elapsed();
                p.record(true, took);
                // One series per member the leader sends to: bounded by the membership.
                metrics::histogram!(PEER_RTT_SECONDS, "to" => format!("{from:016x}"))
                    .record(took.as_secs_f64());
            }
            _ => {}
        }
        std::mem::take(&mut p.failing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_modes_index_their_own_metric_handles() {
        for (i, m) in ReadMode::ALL.into_iter().enumerate() {
            assert_eq!(m as usize, i, "{m:?}");
        }
        let names: Vec<_> = ReadMode::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(names, ["lease", "read-index", "quorum", "local"]);
    }

    #[test]
    fn peer_stats_track_latency_moments() {
        let mut p = PeerStats::default();
        p.record(true, Duration::from_millis(2));
        p.record(true, Duration::from_millis(4));
        p.record(false, Duration::from_millis(100));
        assert_eq!((p.success, p.fail), (2, 1));
        assert!((p.average_ms() - 3.0).abs() < 1e-9);
        assert!((p.stddev_ms() - 1.0).abs() < 1e-9);
        assert!((p.min_ms - 2.0).abs() < 1e-9 && (p.max_ms - 4.0).abs() < 1e-9);
    }

    #[test]
    fn only_the_latest_heartbeat_is_timed_and_an_answer_ends_an_outage() {
        let s = ServerStats::default();
        let count = |s: &ServerStats| {
            let p = s.peers.lock().expect("lock")[&2].clone();
            (p.success, p.fail)
        };
        s.heartbeat_sent(2, 5, 1);
        s.heartbeat_sent(2, 5, 2);
        assert!(!s.heartbeat_answered(2, 5, 1), "no outage to end");
        assert_eq!(
            count(&s),
            (0, 0),
            "round 1 was superseded, so it is not timed"
        );
        s.heartbeat_answered(2, 5, 2);
        assert_eq!(count(&s), (1, 0));
        s.heartbeat_answered(2, 5, 2);
        assert_eq!(count(&s), (1, 0), "a duplicate answer is not timed twice");
        s.heartbeat_sent(2, 6, 2);
        s.heartbeat_answered(2, 5, 2);
        assert_eq!(count(&s), (1, 0), "same round of an older term");

        assert!(s.record_failure(2), "first failure of an outage");
        assert!(!s.record_failure(2), "later ones are not");
        assert_eq!(count(&s), (1, 2));
        assert!(s.heartbeat_answered(2, 6, 2), "an answer ends the outage");
        assert!(s.record_failure(2), "so the next failure starts a new one");
        assert!(!s.heartbeat_answered(9, 1, 1), "unknown peer");
    }
}
