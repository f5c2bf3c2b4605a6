//! One test per lease rule. Time is a `ManualClock`; events are what the core would report.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};

use super::*;
use crate::clock::ManualClock;
use crate::Config;

const MS: Duration = Duration::from_millis(1);

fn raft_cfg() -> Config {
    let mut c = Config::new(1);
    c.election_tick = 10;
    c.heartbeat_tick = 1;
    c
}

/// tick 100 ms: heartbeat 100 ms, lease 300 ms, tolerance 30 ms, min election timeout 900 ms.
fn tracker() -> (LeaseTracker<ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    let cfg = LeaseConfig::from_raft(&raft_cfg(), 100 * MS);
    (
        LeaseTracker::new(1, cfg, &raft_cfg(), clock.clone()).unwrap(),
        clock,
    )
}

fn lead(t: &mut LeaseTracker<ManualClock>, term: Term) {
    t.observe(
        &[
            LeaseEvent::BecameLeader { term },
            LeaseEvent::TermCommitted { term, index: 5 },
        ],
        t.now(),
    );
    t.on_applied(5);
}

#[test]
fn defaults_follow_the_heartbeat() {
    let c = LeaseConfig::from_raft(&raft_cfg(), 100 * MS);
    assert_eq!(c.lease_duration, 300 * MS);
    assert_eq!(c.drift_tolerance, 30 * MS);
    assert_eq!(c.effective_duration(), 270 * MS);
    assert!(c.validate(&raft_cfg()).is_ok());
    assert_eq!(c.with_lease_duration(5 * 100 * MS).lease_duration, 500 * MS);
}

#[test]
fn a_lease_built_for_another_timing_is_refused() {
    let base = LeaseConfig::from_raft(&raft_cfg(), 100 * MS);
    // A longer election timeout than the node's would make the bound too lax.
    let mut longer = base;
    longer.election_tick += 5;
    assert!(matches!(
        longer.validate(&raft_cfg()),
        Err(LeaseConfigError::TimingMismatch {
            what: "election tick",
            ..
        })
    ));
    let mut hb = base;
    hb.heartbeat_tick += 1;
    assert!(matches!(
        hb.validate(&raft_cfg()),
        Err(LeaseConfigError::TimingMismatch {
            what: "heartbeat tick",
            ..
        })
    ));
    assert_eq!(
        longer.validate(&raft_cfg()).map_err(|e| e.to_string()),
        Err("the lease's election tick (15) differs from the node's (10)".to_string())
    );
}

#[test]
fn config_rejected_unless_lease_plus_tolerance_below_min_election_timeout() {
    let base = LeaseConfig::from_raft(&raft_cfg(), 100 * MS);
    // 820 + 82 = 902 >= 900
    assert!(matches!(
        base.with_lease_duration(820 * MS).validate(&raft_cfg()),
        Err(LeaseConfigError::TooLong { .. })
    ));
    // 810 + 81 = 891 < 900
    assert!(base
        .with_lease_duration(810 * MS)
        .validate(&raft_cfg())
        .is_ok());
    assert!(base
        .with_drift_tolerance(700 * MS)
        .validate(&raft_cfg())
        .is_err());
    let mut no_cq = raft_cfg();
    no_cq.check_quorum = false;
    assert_eq!(
        base.validate(&no_cq),
        Err(LeaseConfigError::CheckQuorumDisabled)
    );
    assert_eq!(
        base.with_lease_duration(Duration::ZERO)
            .validate(&raft_cfg()),
        Err(LeaseConfigError::Empty)
    );
    assert!(LeaseTracker::new(
        1,
        base.with_lease_duration(2000 * MS),
        &raft_cfg(),
        ManualClock::new()
    )
    .is_err());
}

#[test]
fn lease_is_anchored_at_send_time_not_ack_time() {
    let (mut t, clock) = tracker();
    lead(&mut t, 2);
    clock.set(100 * MS);
    t.observe(&[LeaseEvent::RoundSent { term: 2, round: 1 }], clock.now());
    assert!(
        !t.has_valid_lease(),
        "no lease before a quorum acknowledges"
    );
    clock.set(180 * MS);
    t.observe(&[LeaseEvent::RoundAcked { term: 2, round: 1 }], clock.now());
    assert_eq!(t.state().valid_until, Some(370 * MS)); // 100 + 300 - 30
    assert!(t.can_read_with_lease());
    clock.set(369 * MS);
    assert!(t.can_read_with_lease());
    clock.set(370 * MS);
    assert!(
        !t.can_read_with_lease(),
        "expires at the deadline with no event at all"
    );
}

#[test]
fn later_acknowledged_rounds_extend_and_older_rounds_do_not_shrink() {
    let (mut t, clock) = tracker();
    lead(&mut t, 2);
    t.observe(
        &[LeaseEvent::RoundSent { term: 2, round: 1 }],
        Duration::ZERO,
    );
    clock.set(100 * MS);
    t.observe(&[LeaseEvent::RoundSent { term: 2, round: 2 }], 100 * MS);
    t.observe(&[LeaseEvent::RoundAcked { term: 2, round: 2 }], 120 * MS);
    assert_eq!(t.state().valid_until, Some(370 * MS));
    // An ack of round 1 arriving late confirms nothing new (round 1 was consumed by round 2).
    t.observe(&[LeaseEvent::RoundAcked { term: 2, round: 1 }], 130 * MS);
    assert_eq!(t.state().valid_until, Some(370 * MS));
}

#[test]
fn new_leader_serves_only_after_own_term_entry_is_applied() {
    let (mut t, clock) = tracker();
    t.observe(&[LeaseEvent::BecameLeader { term: 3 }], clock.now());
    t.observe(
        &[
            LeaseEvent::RoundSent { term: 3, round: 1 },
            LeaseEvent::RoundAcked { term: 3, round: 1 },
        ],
        clock.now(),
    );
    assert!(t.has_valid_lease());
    assert!(!t.can_read_with_lease(), "nothing of term 3 committed yet");
    t.observe(
        &[LeaseEvent::TermCommitted { term: 3, index: 9 }],
        clock.now(),
    );
    assert!(!t.can_read_with_lease(), "committed but not applied");
    t.on_applied(8);
    assert!(!t.can_read_with_lease());
    t.on_applied(9);
    assert!(t.can_read_with_lease());
}

#[test]
fn renewal_is_due_when_a_third_remains() {
    let (mut t, clock) = tracker();
    lead(&mut t, 2);
    assert!(t.renewal_due(), "a leader without a lease wants one");
    t.observe(
        &[
            LeaseEvent::RoundSent { term: 2, round: 1 },
            LeaseEvent::RoundAcked { term: 2, round: 1 },
        ],
        Duration::ZERO,
    );
    clock.set(150 * MS); // 120 ms of 270 left
    assert!(!t.renewal_due());
    clock.set(171 * MS); // 99 ms left <= 100 ms (a third of 300)
    assert!(t.renewal_due());
    t.observe(&[LeaseEvent::RoundSent { term: 2, round: 2 }], clock.now());
    assert!(!t.renewal_due(), "a round is in flight");
}

#[test]
fn every_revocation_path_ends_the_lease_at_once() {
    for reason in [
        LeaseEndReason::StepDown,
        LeaseEndReason::TermChange,
        LeaseEndReason::Removed,
        LeaseEndReason::Transfer,
        LeaseEndReason::MembershipChange,
    ] {
        let (mut t, clock) = tracker();
        lead(&mut t, 4);
        t.observe(
            &[
                LeaseEvent::RoundSent { term: 4, round: 1 },
                LeaseEvent::RoundAcked { term: 4, round: 1 },
            ],
            clock.now(),
        );
        assert!(t.can_read_with_lease());
        t.observe(&[LeaseEvent::Revoked { term: 4, reason }], clock.now());
        assert!(!t.has_valid_lease(), "{reason:?}");
        assert_eq!(t.state().reason, Some(reason));
        // Rounds sent before the revocation confirm nothing afterwards.
        t.observe(&[LeaseEvent::RoundAcked { term: 4, round: 1 }], clock.now());
        assert!(!t.has_valid_lease(), "{reason:?}: stale ack");
        // Only a membership change lets this term's leader re-acquire it with fresh rounds.
        t.observe(
            &[
                LeaseEvent::RoundSent { term: 4, round: 2 },
                LeaseEvent::RoundAcked { term: 4, round: 2 },
            ],
            clock.now(),
        );
        assert_eq!(
            t.has_valid_lease(),
            reason == LeaseEndReason::MembershipChange,
            "{reason:?}: re-acquire"
        );
    }
}

#[test]
fn revocation_for_another_term_is_ignored_and_new_term_starts_fresh() {
    let (mut t, clock) = tracker();
    lead(&mut t, 4);
    t.observe(
        &[
            LeaseEvent::RoundSent { term: 4, round: 1 },
            LeaseEvent::RoundAcked { term: 4, round: 1 },
        ],
        clock.now(),
    );
    t.observe(
        &[LeaseEvent::Revoked {
            term: 3,
            reason: LeaseEndReason::StepDown,
        }],
        clock.now(),
    );
    assert!(t.has_valid_lease());
    t.observe(
        &[LeaseEvent::Revoked {
            term: 4,
            reason: LeaseEndReason::Transfer,
        }],
        clock.now(),
    );
    lead(&mut t, 6);
    t.observe(
        &[
            LeaseEvent::RoundSent { term: 6, round: 1 },
            LeaseEvent::RoundAcked { term: 6, round: 1 },
        ],
        clock.now(),
    );
    assert!(
        t.can_read_with_lease(),
        "forbidden only for the transferred term"
    );
}

#[test]
fn watch_receivers_judge_validity_with_their_own_clock_reading() {
    let (mut t, clock) = tracker();
    let reader = LeaseReader::new(t.subscribe(), clock.clone());
    assert!(!reader.can_read_with_lease());
    lead(&mut t, 2);
    t.observe(
        &[
            LeaseEvent::RoundSent { term: 2, round: 1 },
            LeaseEvent::RoundAcked { term: 2, round: 1 },
        ],
        clock.now(),
    );
    assert!(reader.can_read_with_lease());
    assert_eq!(reader.remaining(), 270 * MS);
    clock.set(300 * MS);
    // No new message was published, yet the reader no longer trusts the stale state.
    assert!(reader.state().valid_until.is_some());
    assert!(!reader.can_read_with_lease());
}

#[test]
fn metrics_count_acquisitions_renewals_and_expirations() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    ::metrics::with_local_recorder(&recorder, || {
        let (mut t, clock) = tracker();
        lead(&mut t, 2);
        t.observe(
            &[
                LeaseEvent::RoundSent { term: 2, round: 1 },
                LeaseEvent::RoundAcked { term: 2, round: 1 },
            ],
            clock.now(),
        );
        t.observe(
            &[
                LeaseEvent::RoundSent { term: 2, round: 2 },
                LeaseEvent::RoundAcked { term: 2, round: 2 },
            ],
            50 * MS,
        );
        t.refresh();
        clock.set(400 * MS);
        t.refresh();
        t.observe(
            &[
                LeaseEvent::RoundSent { term: 2, round: 3 },
                LeaseEvent::RoundAcked { term: 2, round: 3 },
            ],
            clock.now(),
        );
        t.observe(
            &[LeaseEvent::Revoked {
                term: 2,
                reason: LeaseEndReason::StepDown,
            }],
            clock.now(),
        );
    });
    let snap = snapshotter.snapshot().into_hashmap();
    let get = |name: &str, label: Option<&str>| {
        snap.iter()
            .find(|(k, _)| {
                k.key().name() == name
                    && label.is_none_or(|l| k.key().labels().any(|x| x.value() == l))
            })
            .map(|(_, (_, _, v))| v)
    };
    assert_eq!(get(metrics::RENEWALS, None), Some(&DebugValue::Counter(3)));
    assert_eq!(
        get(metrics::ACQUISITIONS, None),
        Some(&DebugValue::Counter(2))
    );
    assert_eq!(
        get(metrics::EXPIRATIONS, Some("timeout")),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        get(metrics::EXPIRATIONS, Some("step_down")),
        Some(&DebugValue::Counter(1))
    );
    assert!(matches!(
        get(metrics::VALID, None),
        Some(DebugValue::Gauge(_))
    ));
}
