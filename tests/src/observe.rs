//! Watching a running [`Cluster`] from outside, as a client would: each node's `/raft/status`,
//! waits for a leader, published members, a lease or an applied index, metrics, and plain key
//! reads and writes. Everything here goes through the client port over plain HTTP.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Cluster, POLL};
use crate::http::{metric_sum, Reply};

/// `/raft/status` of one node.
#[derive(Debug, Clone)]
pub struct RaftStatus {
    pub id: String,
    pub role: String,
    pub term: u64,
    pub leader: Option<String>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub lease_valid: bool,
    /// Voter ids (hex), sorted.
    pub voters: Vec<String>,
    pub raw: Value,
}

impl Cluster {
    /// `GET /raft/status` of node `i`, or `None` if it does not answer within 1 s.
    pub fn status(&self, i: usize) -> Option<RaftStatus> {
        let url = format!("{}/raft/status", self.client_url(i));
        let r = self
            .http()
            .request("GET", &url, None, Duration::from_secs(1))
            .ok()?;
        if r.status != 200 {
            return None;
        }
        let v = r.json();
        // Decoded with the type the server writes it from, so a renamed field fails here, loudly,
        // instead of reading as a default.
        let s: deimos_api::status::RaftStatus = serde_json::from_value(v.clone())
            .unwrap_or_else(|e| panic!("/raft/status of node {i} is not a RaftStatus ({e}): {v}"));
        let mut voters = s.voters;
        voters.sort();
        Some(RaftStatus {
            id: s.id,
            role: s.role,
            term: s.term,
            leader: s.leader,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            lease_valid: s.lease.valid,
            voters,
            raw: v,
        })
    }

    /// The node that says it is leader in the highest term, among running, unpaused nodes.
    pub fn leader(&self) -> Option<usize> {
        self.running()
            .into_iter()
            .filter(|&i| !self.node(i).is_paused())
            .filter_map(|i| self.status(i).map(|s| (i, s)))
            .filter(|(_, s)| s.role == "leader")
            .max_by_key(|(_, s)| s.term)
            .map(|(i, _)| i)
    }

    /// Poll until some node is leader and every other running, unpaused node that answers
    /// names it (so requests sent anywhere reach it); panics with the logs on timeout.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        self.wait_leader_where(timeout, |_| true)
    }

    /// [`Cluster::wait_leader`] for a leader that also satisfies `accept` (e.g. a term newer
    /// than the one before a failure).
    pub fn wait_leader_where(
        &self,
        timeout: Duration,
        accept: impl Fn(&RaftStatus) -> bool,
    ) -> usize {
        self.wait_leader_in(&self.running(), timeout, accept)
    }

    /// [`Cluster::wait_leader`] among `nodes` only: a node that was removed from the cluster
    /// but still runs (it does not hear about a new leader) must not hold the wait up.
    pub fn wait_leader_among(&self, nodes: &[usize], timeout: Duration) -> usize {
        self.wait_leader_in(nodes, timeout, |_| true)
    }

    fn wait_leader_in(
        &self,
        nodes: &[usize],
        timeout: Duration,
        accept: impl Fn(&RaftStatus) -> bool,
    ) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let live: Vec<(usize, RaftStatus)> = nodes
                .iter()
                .copied()
                .filter(|&i| self.node(i).is_running() && !self.node(i).is_paused())
                .filter_map(|i| self.status(i).map(|s| (i, s)))
                .collect();
            let leader = live
                .iter()
                .filter(|(_, s)| s.role == "leader" && accept(s))
                .max_by_key(|(_, s)| s.term);
            if let Some((li, ls)) = leader {
                let agreed = live
                    .iter()
                    .all(|(_, s)| s.term == ls.term && s.leader.as_deref() == Some(&ls.id));
                if agreed {
                    return *li;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "no agreed leader within {timeout:?}; statuses: {:?}\n{}",
                    live.iter().map(|(i, s)| (i, &s.raw)).collect::<Vec<_>>(),
                    self.log_tails(30)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Poll until every running node's `/v2/members` shows every node's client URL (each node
    /// publishes its own through Raft once a leader exists; until then `/v2/machines` and the
    /// members' `clientURLs` are incomplete, which matters to clients that discover endpoints
    /// there).
    pub fn wait_members_published(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let want: Vec<String> = (0..self.len()).map(|i| self.client_url(i)).collect();
        loop {
            let complete = self.running().into_iter().all(|i| {
                self.http()
                    .request(
                        "GET",
                        &format!("{}/v2/members", self.client_url(i)),
                        None,
                        Duration::from_secs(1),
                    )
                    .ok()
                    .map(|r| {
                        let v = r.json();
                        let published: Vec<String> = v["members"]
                            .as_array()
                            .map(|ms| {
                                ms.iter()
                                    .flat_map(|m| {
                                        m["clientURLs"].as_array().cloned().unwrap_or_default()
                                    })
                                    .filter_map(|u| u.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default();
                        want.iter().all(|u| published.contains(u))
                    })
                    .unwrap_or(false)
            });
            if complete {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "client URLs not all published within {timeout:?}\n{}",
                self.log_tails(20)
            );
            std::thread::sleep(POLL);
        }
    }

    /// Poll until node `i` reports a valid lease (it is leader and may serve lease reads).
    pub fn wait_lease(&self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.status(i).is_some_and(|s| s.lease_valid) {
            assert!(
                Instant::now() < deadline,
                "node {i} has no valid lease after {timeout:?}: {:?}",
                self.status(i).map(|s| s.raw)
            );
            std::thread::sleep(POLL);
        }
    }

    /// Poll until node `i` has applied at least `index`.
    pub fn wait_applied(&self, i: usize, index: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.status(i).is_none_or(|s| s.applied_index < index) {
            assert!(
                Instant::now() < deadline,
                "node {i} did not apply {index} within {timeout:?}: {:?}",
                self.status(i).map(|s| s.raw)
            );
            std::thread::sleep(POLL);
        }
    }

    /// Node `i`'s `/metrics` text.
    pub fn metrics(&self, i: usize) -> String {
        let r = self.http().get(&format!("{}/metrics", self.client_url(i)));
        assert_eq!(r.status, 200, "/metrics: {r:?}");
        r.body
    }

    /// Sum of a metric's samples on node `i` (see [`metric_sum`]).
    pub fn metric(&self, i: usize, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics(i), name, labels)
    }

    /// `GET` a key on node `i` (plain linearizable read).
    pub fn get(&self, i: usize, key: &str) -> Reply {
        self.http().get(&self.keys_url(i, key))
    }

    /// `PUT value=` on node `i`.
    pub fn set(&self, i: usize, key: &str, value: &str) -> Reply {
        self.http()
            .put_form(&self.keys_url(i, key), &[("value", value)])
    }
}
