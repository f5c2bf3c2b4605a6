//! The CI fault suite: short Jepsen runs against real 3- and 5-node clusters (kill -9, pause,
//! partitions, clock skew, member replacement), each checked for linearizability with lease
//! reads enabled, plus the negative test that shows the checker catches a broken lease, and the
//! durability check across `kill -9`.
//!
//! Runs are serialised (one cluster at a time): the machine has two cores, and a starved node
//! misses heartbeats, which tests liveness rather than safety. Longer runs: `cargo xtask jepsen`.
//! Set `DEIMOS_JEPSEN_SEED` to replay a seed.

use std::sync::Mutex;
use std::time::Duration;

use deimos_tests::history::Verdict;
use deimos_tests::jepsen::{self, Report};
use deimos_tests::nemesis::FaultKind::{self, *};
use deimos_tests::scenarios::{self, ci_config};

static SERIAL: Mutex<()> = Mutex::new(());

fn seed(default: u64) -> u64 {
    std::env::var("DEIMOS_JEPSEN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn print(r: &Report) {
    eprintln!("{}", r.details);
    println!("{}", r.line);
}

/// A run must be linearizable; a budget-exhausted check is a failure too (it proves nothing).
fn must_be_linearizable(faults: &[FaultKind], nodes: usize, secs: u64, default_seed: u64) {
    must_be_linearizable_with(faults, nodes, secs, default_seed, &[]);
}

/// [`must_be_linearizable`] with flags for every node; returns the report for more checks.
fn must_be_linearizable_with(
    faults: &[FaultKind],
    nodes: usize,
    secs: u64,
    default_seed: u64,
    extra_args: &[&str],
) -> Report {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut cfg = ci_config(faults, nodes, secs, seed(default_seed));
    cfg.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
    let r = jepsen::run(&cfg);
    print(&r);
    assert!(r.verdict.is_ok(), "{}", r.details);
    let c = r.line.contains("lease=0 ");
    assert!(
        !c,
        "no read was served from the lease: the run did not test it\n{}",
        r.line
    );
    assert!(
        !r.line.contains(" quorum=0 "),
        "no ?quorum=true read went through the log: the run did not test it\n{}",
        r.line
    );
    r
}

#[test]
fn kill9_is_linearizable() {
    must_be_linearizable(&[Kill9], 3, 25, 11);
}

#[test]
fn stop_leader_is_linearizable() {
    must_be_linearizable(&[Stop], 3, 25, 12);
}

#[test]
fn partition_leader_is_linearizable() {
    must_be_linearizable(&[PartitionLeader], 3, 25, 13);
}

#[test]
fn split_is_linearizable() {
    must_be_linearizable(&[Split], 3, 25, 14);
}

#[test]
fn clock_skew_is_linearizable() {
    must_be_linearizable(&[Skew], 3, 30, 15);
}

/// Small compaction settings so that the replaced member, which starts empty, is behind the
/// leader's log and must be sent a snapshot (issue 22), as it would be on a busy cluster.
const SNAPSHOT_OFTEN: [&str; 4] = [
    "--snapshot-count",
    "200",
    "--snapshot-catchup-entries",
    "50",
];

/// Only replacements (three or four in 25 s), so that every round exercises one: a follower
/// removed, wiped, added back under the same name and URL and started empty.
#[test]
fn replace_member_is_linearizable() {
    let r = must_be_linearizable_with(&[Replace], 3, 25, 21, &SNAPSHOT_OFTEN);
    assert!(
        r.line.contains("replace x"),
        "no member was replaced: the run did not test it\n{}",
        r.line
    );
    assert!(
        r.details.contains("snapshot(s) installed") && !r.details.contains("(0 snapshot(s)"),
        "a replaced member caught up without a snapshot: the run did not test the snapshot path\n{}",
        r.details
    );
}

#[test]
fn five_nodes_mixed_faults_are_linearizable() {
    must_be_linearizable(
        &[Kill9, Stop, PartitionLeader, Split, Skew, Kill9All],
        5,
        40,
        16,
    );
}

/// The harness can fail: with the lease longer than the election timeout (a test-only setting
/// the server otherwise refuses), the isolated old leader serves the old value after the new
/// majority acknowledged a newer one, and the checker must report it.
#[test]
fn broken_lease_is_caught() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let r = scenarios::isolated_leader_scenario(true, false, seed(17));
    print(&r);
    match &r.verdict {
        Verdict::Violation { culprits, .. } => {
            assert!(
                culprits
                    .iter()
                    .any(|c| c.contains("Read") && c.contains("lease")),
                "the violation should be a lease read: {culprits:?}"
            );
        }
        other => panic!("a broken lease was not caught: {other:?}\n{}", r.details),
    }
}

/// The same scripted partition with the lease as shipped: no stale read.
#[test]
fn isolated_leader_with_safe_lease_is_linearizable() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let r = scenarios::isolated_leader_scenario(false, false, seed(18));
    print(&r);
    assert!(r.verdict.is_ok(), "{}", r.details);
}

/// The same partition, read with `?quorum=true` (through the log): the isolated leader's barrier
/// entries cannot commit, so it answers no read with the old value once the new one is written.
/// Answering a log read when its barrier is proposed instead of applied fails this test (seen:
/// 380 stale reads reported on the isolated leader).
#[test]
fn isolated_leader_quorum_reads_are_linearizable() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let r = scenarios::isolated_leader_scenario(false, true, seed(20));
    print(&r);
    assert!(r.verdict.is_ok(), "{}", r.details);
    assert!(
        !r.line.contains(" quorum=0 "),
        "no quorum read completed: the run did not test them\n{}",
        r.line
    );
}

/// No acknowledged write is lost across `kill -9` of single nodes and of all nodes at once.
#[test]
fn acknowledged_writes_survive_kill9() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    match scenarios::durability_run(3, Duration::from_secs(20), seed(19)) {
        Ok(line) => println!("{line}"),
        Err(e) => panic!("{e}"),
    }
}
