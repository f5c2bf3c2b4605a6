//! The event history behind `waitIndex` on a member that caught up by installing a snapshot:
//! the history is stored beside the key space, so it travels in the snapshot as etcd's does, and
//! the member answers a watch within the last 1,000 events exactly as the leader does (and 401
//! below them, with the same cause).

use std::time::Duration;

use deimos_tests::{Cluster, ClusterOptions};

const STEP: Duration = Duration::from_secs(20);

#[test]
fn a_member_that_installed_a_snapshot_serves_the_same_history() {
    // A compaction every 50 applied entries keeping none: a member that misses 300 writes is
    // sent a snapshot.
    let opts = ClusterOptions {
        extra_args: ["--snapshot-count", "50", "--snapshot-catchup-entries", "0"]
            .map(String::from)
            .to_vec(),
        ..ClusterOptions::default()
    };
    let mut c = Cluster::start_with(3, opts);
    let leader = c.wait_leader(STEP);
    let lagging = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    c.terminate(lagging, STEP);
    for i in 0..1100 {
        let r = c.set(other, "/h", &i.to_string());
        assert!(r.status < 300, "{r:?}");
    }
    let last = c.get(other, "/h").header_u64("x-etcd-index");
    c.restart(lagging);
    c.wait_applied(
        lagging,
        c.status(other).expect("status").applied_index,
        STEP,
    );
    let installed = c.metric(lagging, "deimos_raft_snapshots_installed_total", &[]);
    assert!(
        installed >= 1.0,
        "the member caught up without a snapshot: the test did not reach the install path"
    );
    let watch = |i: usize, index: u64| {
        let url = format!("{}?wait=true&waitIndex={index}", c.keys_url(i, "/h"));
        c.http()
            .request("GET", &url, None, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("node {i}, waitIndex {index}: {e}"))
    };
    for index in [last - 999, last - 500, last] {
        let (a, b) = (watch(other, index), watch(lagging, index));
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(
            (b.status, b.json()["node"].clone()),
            (a.status, a.json()["node"].clone()),
            "waitIndex {index} on the member that installed a snapshot"
        );
        assert_eq!(a.json()["node"]["modifiedIndex"], index);
    }
    let (a, b) = (watch(other, last - 1000), watch(lagging, last - 1000));
    assert_eq!(a.error_code(), Some(401), "{a:?}");
    assert_eq!(b.json()["cause"], a.json()["cause"], "{b:?}");
}
