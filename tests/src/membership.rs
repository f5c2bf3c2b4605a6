//! Membership changes made the way an operator makes them — through `/v2/members` on the
//! leader — and the checks that a change left the cluster whole: every member caught up, every
//! member agrees on who the voters are.
//!
//! Every request retries what a correct cluster may answer while it is busy (no leader yet, a
//! previous change still applying, a redirect to a new leader, a timeout), because the tests
//! and the fault suite run these under continuous writes; they return `Err` with what the
//! cluster last said rather than panic, so callers can add the node logs to the message.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Cluster, POLL};

/// How long one membership request may take: the server answers once the change has applied
/// on the leader, and gives up after its own request timeout (5 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

/// Pause between retries of a refused membership request.
const RETRY: Duration = Duration::from_millis(100);

impl Cluster {
    /// `/v2/members` as node `i` lists them: member id (hex) → peer URLs.
    pub fn members_of(&self, i: usize) -> Option<BTreeMap<String, Vec<String>>> {
        let r = self
            .http()
            .request(
                "GET",
                &format!("{}/v2/members", self.client_url(i)),
                None,
                Duration::from_secs(1),
            )
            .ok()?;
        if r.status != 200 {
            return None;
        }
        let v = r.json();
        let members = v["members"].as_array()?;
        Some(
            members
                .iter()
                .filter_map(|m| {
                    let id = m["id"].as_str()?.to_string();
                    let urls = m["peerURLs"]
                        .as_array()?
                        .iter()
                        .filter_map(|u| u.as_str().map(str::to_string))
                        .collect();
                    Some((id, urls))
                })
                .collect(),
        )
    }

    /// The member id (hex) the cluster records for node `i`'s peer URL, asked of the leader
    /// (or, without one, of any running node); `None` when it is not a member.
    pub fn member_id(&self, i: usize) -> Option<String> {
        let url = self.node(i).peer_url();
        let asked: Vec<usize> = self.leader().into_iter().chain(self.running()).collect();
        asked.into_iter().find_map(|via| {
            self.members_of(via)?
                .into_iter()
                .find(|(_, urls)| urls.contains(&url))
                .map(|(id, _)| id)
        })
    }

    /// `POST /v2/members` with node `i`'s name and (advertised) peer URL on the leader, as
    /// `deimosctl member add` does; returns the new member's id. The node itself is not
    /// started (see [`Cluster::start_joining`], or [`Cluster::add_and_start`] for both).
    pub fn add_member(&self, i: usize, timeout: Duration) -> Result<String, String> {
        let name = self.node(i).name.clone();
        let body = json!({ "peerURLs": [self.node(i).peer_url()], "name": name }).to_string();
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no attempt");
        let mut attempted = false;
        loop {
            if Instant::now() > deadline {
                return Err(format!("adding {name} failed for {timeout:?}: {last}"));
            }
            let Some(l) = self.leader() else {
                last = "no leader".into();
                std::thread::sleep(POLL);
                continue;
            };
            let r = self.http().request(
                "POST",
                &format!("{}/v2/members", self.client_url(l)),
                Some(("application/json", body.as_bytes())),
                REQUEST_TIMEOUT,
            );
            match r {
                Ok(r) if r.status == 201 => {
                    return r.json()["id"]
                        .as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("add {name}: no id in {r:?}"));
                }
                // An earlier attempt that timed out may have gone through after all.
                Ok(r) if r.status == 409 && r.body.contains("exists") && attempted => {
                    let id = self.member_id(i);
                    let voter = id
                        .as_ref()
                        .is_some_and(|id| self.status(l).is_some_and(|s| s.voters.contains(id)));
                    match id {
                        Some(id) if voter => return Ok(id),
                        _ => return Err(format!("add {name}: {r:?}")),
                    }
                }
                Ok(r) if matches!(r.status, 307 | 409 | 500 | 503) => {
                    last = format!("{} {}", r.status, r.body.trim());
                }
                Ok(r) => return Err(format!("add {name}: {r:?}")),
                Err(e) => last = e,
            }
            attempted = true;
            std::thread::sleep(RETRY);
        }
    }

    /// [`Cluster::add_member`], then start the node empty with `--initial-cluster-state
    /// existing`; returns its member id once its client port answers.
    pub fn add_and_start(&mut self, i: usize, timeout: Duration) -> Result<String, String> {
        let id = self.add_member(i, timeout)?;
        self.start_joining(i);
        Ok(id)
    }

    /// `DELETE /v2/members/<id of node i>` on the leader, as `deimosctl member remove` does;
    /// returns once the leader has applied the removal. The node's process is left running
    /// (see [`Cluster::stop_and_wipe`]).
    pub fn remove_member(&self, i: usize, timeout: Duration) -> Result<(), String> {
        self.remove_member_via(i, None, timeout)
    }

    /// [`Cluster::remove_member`] sent to node `via` first (the leader removing itself is sent
    /// to itself); a redirect or a refusal there moves on to whoever leads.
    pub fn remove_member_via(
        &self,
        i: usize,
        via: Option<usize>,
        timeout: Duration,
    ) -> Result<(), String> {
        let name = self.node(i).name.clone();
        let id = self
            .member_id(i)
            .ok_or_else(|| format!("remove {name}: not a member"))?;
        let deadline = Instant::now() + timeout;
        let mut via = via;
        let mut last = String::from("no attempt");
        let mut attempted = false;
        loop {
            if Instant::now() > deadline {
                return Err(format!(
                    "removing {name} ({id}) failed for {timeout:?}: {last}"
                ));
            }
            let Some(target) = via.or_else(|| self.leader()) else {
                last = "no leader".into();
                std::thread::sleep(POLL);
                continue;
            };
            let r = self.http().request(
                "DELETE",
                &format!("{}/v2/members/{id}", self.client_url(target)),
                None,
                REQUEST_TIMEOUT,
            );
            match r {
                Ok(r) if r.status == 204 || r.status == 200 => return Ok(()),
                // An earlier attempt that timed out went through.
                Ok(r) if r.status == 404 && attempted => return Ok(()),
                Ok(r) if matches!(r.status, 307 | 409 | 500 | 503) => {
                    last = format!("{} {}", r.status, r.body.trim());
                    via = None;
                }
                Ok(r) => return Err(format!("remove {name} ({id}): {r:?}")),
                Err(e) => {
                    last = e;
                    via = None;
                }
            }
            attempted = true;
            std::thread::sleep(RETRY);
        }
    }

    /// Poll until every node in `nodes` has applied the leader's commit index as it was when
    /// this was called; returns how long that took. The leader is chosen among `nodes`.
    pub fn wait_caught_up(&self, nodes: &[usize], timeout: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let l = self.wait_leader_among(nodes, timeout);
        let target = self
            .status(l)
            .map(|s| s.commit_index)
            .ok_or_else(|| format!("leader {} stopped answering", self.node(l).name))?;
        loop {
            let behind: Vec<String> = nodes
                .iter()
                .filter_map(|&i| {
                    let applied = self.status(i).map(|s| s.applied_index);
                    match applied {
                        Some(a) if a >= target => None,
                        other => Some(format!("{} applied {other:?}", self.node(i).name)),
                    }
                })
                .collect();
            if behind.is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "not caught up with the leader's commit index {target} (leader {}) within {timeout:?}: {}",
                    self.node(l).name,
                    behind.join(", ")
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Poll until every node in `nodes` lists exactly `nodes` as voters (`/raft/status`) and as
    /// members (`/v2/members`); returns the agreed ids.
    pub fn wait_membership(
        &self,
        nodes: &[usize],
        timeout: Duration,
    ) -> Result<Vec<String>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let problem = self.membership_problem(nodes);
            match problem {
                Ok(ids) => return Ok(ids),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("membership not agreed within {timeout:?}: {e}"))
                }
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    fn membership_problem(&self, nodes: &[usize]) -> Result<Vec<String>, String> {
        let mut want = Vec::new();
        for &i in nodes {
            let id = self
                .member_id(i)
                .ok_or_else(|| format!("{} is not a member", self.node(i).name))?;
            want.push(id);
        }
        want.sort();
        for &i in nodes {
            let name = &self.node(i).name;
            let st = self
                .status(i)
                .ok_or_else(|| format!("{name} does not answer"))?;
            if st.voters != want {
                return Err(format!("{name} has voters {:?}, want {want:?}", st.voters));
            }
            let members: Vec<String> = self
                .members_of(i)
                .ok_or_else(|| format!("{name}: no /v2/members"))?
                .into_keys()
                .collect();
            if members != want {
                return Err(format!("{name} lists members {members:?}, want {want:?}"));
            }
        }
        Ok(want)
    }
}
