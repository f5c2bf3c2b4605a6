//! Membership changes on a real cluster whose log has been compacted, under continuous writes
//! and lease reads (issue 22): a member added after compaction must be sent a snapshot, install
//! it and keep applying — before the fix in 0166eed it stalled at the snapshot index forever,
//! and a fourth voter stalled that way took the cluster's quorum with it.
//!
//! Every scenario starts 3 nodes with a tiny `--snapshot-count` and `--snapshot-catchup-entries`,
//! lets the client load compact every member's log at least twice, makes its changes, and then
//! requires that:
//! - every member catches up (applies the leader's commit index) within [`CATCH_UP`];
//! - a member that joined empty installed a snapshot (its `deimos_raft_snapshots_installed_total`)
//!   taken past the leader's first log index, so it could not have been sent the log instead;
//! - writes never failed for longer than one election timeout (the longest stretch without an
//!   acknowledged write in which some write failed);
//! - the recorded history of writes and plain reads (lease reads on the leader) is linearizable;
//! - all voters agree on the membership, in `/raft/status` and in `/v2/members`.
//!
//! The scenarios run one at a time: the machine has two cores, and a starved node misses
//! heartbeats, which would measure the machine rather than the membership change.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use deimos_tests::harness::{Cluster, ClusterOptions};
use deimos_tests::history::Verdict;
use deimos_tests::jepsen::CHECK_BUDGET;
use deimos_tests::load::Load;

static SERIAL: Mutex<()> = Mutex::new(());

/// The cluster's (minimum) election timeout: the harness's default, the server's default.
const ELECTION: Duration = Duration::from_millis(1000);
/// How long any member may take to apply the leader's commit index after a change.
const CATCH_UP: Duration = Duration::from_secs(10);
/// Generous bound for steps that wait on the cluster rather than measure it.
const STEP: Duration = Duration::from_secs(20);
/// A compaction every 100 applied entries, keeping 20: under the load the log is compacted
/// about once a second, so a member that joins empty is always behind the leader's log.
const SNAPSHOT_ARGS: [&str; 4] = [
    "--snapshot-count",
    "100",
    "--snapshot-catchup-entries",
    "20",
];
const COMPACTIONS: &str = "deimos_raft_log_compactions_total";
const FIRST_INDEX: &str = "deimos_raft_log_first_index";
const SNAPSHOTS_INSTALLED: &str = "deimos_raft_snapshots_installed_total";

/// One scenario: the cluster, the load on it, which nodes are members, and what was done.
struct Run {
    c: Cluster,
    load: Option<Load>,
    members: Vec<usize>,
    steps: Vec<String>,
    started: Instant,
}

impl Run {
    /// Start 3 nodes and the load, and wait until every member has compacted its log twice.
    fn start(seed: u64) -> Run {
        let opts = ClusterOptions {
            extra_args: SNAPSHOT_ARGS.iter().map(|s| s.to_string()).collect(),
            ..ClusterOptions::default()
        };
        let c = Cluster::start_with(3, opts);
        c.wait_leader(STEP);
        let members = vec![0, 1, 2];
        let mut run = Run {
            load: None,
            members,
            steps: Vec::new(),
            started: Instant::now(),
            c,
        };
        run.load = Some(Load::start(
            run.endpoints(),
            4,
            3,
            Duration::from_secs(5),
            seed,
        ));
        run.wait_compactions(2);
        run
    }

    fn load(&self) -> &Load {
        self.load.as_ref().expect("load runs until finish")
    }

    fn endpoints(&self) -> Vec<(usize, String)> {
        self.members
            .iter()
            .map(|&i| (i, self.c.client_url(i)))
            .collect()
    }

    fn note(&mut self, msg: impl Into<String>) {
        let line = format!(
            "[{:>5.1}s] {}",
            self.started.elapsed().as_secs_f64(),
            msg.into()
        );
        eprintln!("membership: {line}");
        self.steps.push(line);
    }

    /// Panic with what was done and every node's log tail.
    fn fail(&self, msg: &str) -> ! {
        panic!(
            "{msg}\nsteps:\n  {}\nnode logs:\n{}",
            self.steps.join("\n  "),
            self.c.log_tails(40)
        )
    }

    fn check<T>(&self, r: Result<T, String>) -> T {
        r.unwrap_or_else(|e| self.fail(&e))
    }

    fn leader(&self) -> usize {
        self.c.wait_leader_among(&self.members, STEP)
    }

    /// Poll until every member's log has been compacted at least `n` times.
    fn wait_compactions(&mut self, n: u64) {
        let deadline = Instant::now() + STEP;
        loop {
            let counts: Vec<f64> = self
                .members
                .iter()
                .map(|&i| self.c.metric(i, COMPACTIONS, &[]))
                .collect();
            if counts.iter().all(|&k| k >= n as f64) {
                let first = self.c.metric(self.leader(), FIRST_INDEX, &[]);
                self.note(format!(
                    "logs compacted {counts:?} times; leader's log starts at {first}; {} writes acknowledged",
                    self.load().acked()
                ));
                return;
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "the logs were not compacted {n} times within {STEP:?}: {counts:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Add node `i` (new, or removed and wiped) through the API, start it empty, and require
    /// it to catch up within [`CATCH_UP`] by installing a snapshot.
    fn join(&mut self, i: usize) {
        let l = self.leader();
        let first = self.c.metric(l, FIRST_INDEX, &[]);
        if first <= 1.0 {
            self.fail(&format!(
                "the leader's log starts at {first}: nothing compacted, the test proves nothing"
            ));
        }
        let name = self.c.node(i).name.clone();
        let added = self.c.add_and_start(i, STEP);
        let id = self.check(added);
        self.members.push(i);
        self.load().set_endpoints(self.endpoints());
        self.note(format!(
            "added {name} ({id}) on leader {} whose log starts at {first}; started it empty",
            self.c.node(l).name
        ));
        let took = self.check(self.c.wait_caught_up(&self.members, CATCH_UP));
        let installed = self.c.metric(i, SNAPSHOTS_INSTALLED, &[]);
        let applied = self.c.status(i).map_or(0, |s| s.applied_index);
        if installed < 1.0 || (applied as f64) < first {
            self.fail(&format!(
                "{name} caught up without a snapshot? snapshots installed {installed}, applied {applied}, leader's first index {first}"
            ));
        }
        self.note(format!(
            "every member caught up in {took:?}; {name} installed {installed} snapshot(s), applied {applied}"
        ));
    }

    /// Remove node `i` through the API (sent to the leader), then stop it and wipe its data.
    fn remove(&mut self, i: usize) {
        let name = self.c.node(i).name.clone();
        // Clients leave it first: requests to a node being stopped would fail for that reason.
        self.members.retain(|&m| m != i);
        self.load().set_endpoints(self.endpoints());
        self.check(self.c.remove_member(i, STEP));
        self.note(format!("removed {name}"));
        self.c.stop_and_wipe(i);
        self.note(format!("stopped {name} and wiped its data dir"));
        self.check(self.c.wait_membership(&self.members, STEP));
    }

    /// A follower among the members (the first one that does not lead).
    fn follower(&self) -> usize {
        let l = self.leader();
        *self.members.iter().find(|&&i| i != l).expect("a follower")
    }

    /// Let the load run on the final membership, stop it, and check everything.
    fn finish(mut self) {
        std::thread::sleep(Duration::from_millis(1000));
        let load = self.load.take().expect("finish once");
        let report = load.stop();
        let summary = report.summary();
        self.note(summary.clone());
        let took = self.check(self.c.wait_caught_up(&self.members, CATCH_UP));
        let ids = self.check(self.c.wait_membership(&self.members, STEP));
        self.note(format!(
            "final: members {ids:?} agree; caught up in {took:?}"
        ));
        if let Some(w) = report.longest_failing_window() {
            if w.duration() > ELECTION {
                self.fail(&format!(
                    "writes failed for longer than one election timeout ({ELECTION:?}): {w}\n{summary}"
                ));
            }
        }
        let counts = report.history.counts();
        if counts.lease == 0 {
            self.fail(&format!(
                "no lease read: the run did not test them\n{summary}"
            ));
        }
        if report.acked() < 100 {
            self.fail(&format!("too few writes to mean anything\n{summary}"));
        }
        let t = Instant::now();
        match report.history.check(CHECK_BUDGET) {
            Verdict::Ok => {}
            Verdict::Unknown { partition } => self.fail(&format!(
                "checker budget exhausted on {partition}\n{summary}"
            )),
            Verdict::Violation { report: r, .. } => {
                self.fail(&format!("history is not linearizable:\n{r}\n{summary}"))
            }
        }
        self.note(format!(
            "{} ops linearizable (checked in {:?})",
            report.history.len(),
            t.elapsed()
        ));
        println!("{}", self.steps.join("\n"));
    }
}

/// A fourth member joins a 3-node cluster whose log it cannot be sent.
#[test]
fn add_a_fourth_member_after_compaction() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut r = Run::start(1);
    let n4 = r.c.new_node("n4");
    r.join(n4);
    r.finish();
}

/// A follower is replaced the way an operator replaces a broken machine: removed, wiped, and
/// added back with the same name and peer URL (so the same member id), started empty.
#[test]
fn replace_a_member_keeping_its_name_and_url() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut r = Run::start(2);
    let f = r.follower();
    r.remove(f);
    r.join(f);
    r.finish();
}

/// Grow 3 -> 4 -> 5 one member at a time, then shrink back to 3 by removing a newcomer and a
/// founder.
#[test]
fn grow_to_five_and_shrink_back_to_three() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut r = Run::start(3);
    let n4 = r.c.new_node("n4");
    r.join(n4);
    let n5 = r.c.new_node("n5");
    r.join(n5);
    r.remove(n4);
    let founder = *r
        .members
        .iter()
        .find(|&&i| i < 3 && i != r.leader())
        .expect("a founder that does not lead");
    r.remove(founder);
    r.finish();
}

/// The leader is removed by a DELETE of its own id sent to itself: it must step down and the
/// others must elect a leader that serves; then a new member restores three voters.
#[test]
fn remove_the_leader() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut r = Run::start(4);
    let l = r.leader();
    let name = r.c.node(l).name.clone();
    let term = r.c.status(l).map_or(0, |s| s.term);
    r.members.retain(|&m| m != l);
    r.load().set_endpoints(r.endpoints());
    r.check(r.c.remove_member_via(l, Some(l), STEP));
    r.note(format!(
        "removed the leader {name} (term {term}) through itself"
    ));
    let deadline = Instant::now() + STEP;
    while r.c.status(l).is_some_and(|s| s.role == "leader") {
        if Instant::now() > deadline {
            r.fail(&format!(
                "{name} still leads {STEP:?} after removing itself"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    r.note(format!("{name} stepped down"));
    let nl = r.leader();
    let new_term = r.c.status(nl).map_or(0, |s| s.term);
    r.note(format!("{} leads in term {new_term}", r.c.node(nl).name));
    r.c.stop_and_wipe(l);
    r.note(format!("stopped {name}"));
    r.check(r.c.wait_membership(&r.members, STEP));
    let n4 = r.c.new_node("n4");
    r.join(n4);
    r.finish();
}
