//! `cluster status` and `lease status`, and the members API's `Member` they start from.

use std::time::Duration;

use deimos_api::cluster::SelfStats;
use hyper::{Method, StatusCode};
use serde::Serialize;

use crate::cli::{ClusterCommand, LeaseCommand};
use crate::client::{CliError, Client};
use crate::http::{Conn, Endpoint};
use crate::output::{opt, Output, Table};

pub use deimos_api::members::Member;
use deimos_api::members::MemberList;
use deimos_api::status::{LeaseStatus, RaftStatus};

/// One row of `cluster status` / `lease status`. Fields a source cannot tell are `None` (`-`).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub id: String,
    pub name: String,
    pub endpoint: Option<String>,
    pub reachable: bool,
    /// `raft/status`, `stats/self` (etcd fallback) or `none`.
    pub source: String,
    pub role: Option<String>,
    pub term: Option<u64>,
    pub leader: Option<String>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub last_index: Option<u64>,
    pub lease: Option<LeaseStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a member told about itself: Deimos's `/raft/status`, or etcd's `/v2/stats/self`.
enum Probed {
    Raft(RaftStatus),
    Etcd(SelfStats),
}

impl MemberStatus {
    fn fill(&mut self, probed: Probed) {
        let (name, id) = match probed {
            Probed::Raft(rs) => {
                self.source = "raft/status".into();
                self.role = Some(rs.role);
                self.term = Some(rs.term);
                self.leader = rs.leader;
                self.commit_index = Some(rs.commit_index);
                self.applied_index = Some(rs.applied_index);
                self.last_index = Some(rs.last_index);
                self.lease = Some(rs.lease);
                (rs.name, rs.id)
            }
            Probed::Etcd(ss) => {
                self.source = "stats/self".into();
                self.role = Some(role_from_etcd_state(&ss.state));
                self.leader = Some(ss.leader_info.leader).filter(|l| !l.is_empty());
                (ss.name, ss.id)
            }
        };
        if self.name.is_empty() {
            self.name = name;
        }
        if self.id.is_empty() {
            self.id = id;
        }
    }
}

pub async fn list_members(client: &mut Client) -> Result<Vec<Member>, CliError> {
    let t = Some(client.timeout());
    let (_, v) = client.json(Method::GET, "/v2/members", None, t).await?;
    let m: MemberList = serde_json::from_value(v.clone())
        .map_err(|e| CliError::Protocol(format!("/v2/members ({e}): {v}")))?;
    Ok(m.members)
}

/// Maps etcd's `StateLeader` etc. to the role names `/raft/status` uses.
pub fn role_from_etcd_state(state: &str) -> String {
    match state {
        "StateLeader" => "leader".into(),
        "StateFollower" => "follower".into(),
        "StateCandidate" => "candidate".into(),
        "StatePreCandidate" => "pre_candidate".into(),
        other => other.to_lowercase(),
    }
}

/// Asks one member for its status: `/raft/status`, else `/v2/stats/self` (etcd).
async fn probe(member: Member, timeout: Duration) -> MemberStatus {
    let mut st = MemberStatus {
        id: member.id.clone(),
        name: member.name.clone(),
        source: "none".into(),
        ..Default::default()
    };
    let Some(url) = member.client_urls.first() else {
        st.error = Some("member has no client URL (not started yet?)".into());
        return st;
    };
    st.endpoint = Some(url.clone());
    let ep = match Endpoint::parse(url) {
        Ok(ep) => ep,
        Err(e) => {
            st.error = Some(e);
            return st;
        }
    };
    let attempt = async {
        let mut conn = Conn::connect(&ep, timeout)
            .await
            .map_err(|e| e.to_string())?;
        let r = conn
            .send(Method::GET, "/raft/status", None)
            .await
            .map_err(|e| e.to_string())?;
        if r.status == StatusCode::OK {
            let rs: RaftStatus = serde_json::from_slice(&r.body)
                .map_err(|e| format!("/raft/status: bad JSON: {e}"))?;
            return Ok::<_, String>(Probed::Raft(rs));
        }
        let r = conn
            .send(Method::GET, "/v2/stats/self", None)
            .await
            .map_err(|e| e.to_string())?;
        let ss: SelfStats = serde_json::from_slice(&r.body)
            .map_err(|e| format!("/v2/stats/self: bad JSON: {e}"))?;
        Ok(Probed::Etcd(ss))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(probed)) => {
            st.reachable = true;
            st.fill(probed);
        }
        Ok(Err(e)) => st.error = Some(e),
        Err(_) => st.error = Some(format!("timed out after {timeout:?}")),
    }
    st
}

/// Probes every member concurrently, so one dead member costs one timeout, not one per member.
pub async fn statuses(client: &mut Client) -> Result<Vec<MemberStatus>, CliError> {
    let members = list_members(client).await?;
    let timeout = client.timeout();
    let handles: Vec<_> = members
        .into_iter()
        .map(|m| tokio::spawn(probe(m, timeout)))
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(
            h.await
                .map_err(|e| CliError::Protocol(format!("probe task failed: {e}")))?,
        );
    }
    Ok(out)
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// One column of a status table: its header and how a row's cell is written.
type Column = (&'static str, fn(&MemberStatus) -> String);

const ID: Column = ("ID", |r| r.id.clone());
const NAME: Column = ("NAME", |r| name_cell(&r.name));
const ROLE: Column = ("ROLE", |r| opt(r.role.clone()));
const LEASE_VALID: Column = ("LEASE VALID", |r| {
    opt(r.lease.as_ref().map(|l| yes_no(l.valid)))
});
const REACHABLE: Column = ("REACHABLE", |r| yes_no(r.reachable));

fn lease_remaining(r: &MemberStatus) -> String {
    opt(r.lease.as_ref().map(|l| l.remaining_ms))
}

fn render(rows: &[MemberStatus], columns: &[Column]) -> String {
    let headers: Vec<&str> = columns.iter().map(|c| c.0).collect();
    let mut t = Table::new(&headers);
    for r in rows {
        t.row(columns.iter().map(|c| (c.1)(r)).collect());
    }
    t.render()
}

pub fn render_cluster_status(rows: &[MemberStatus]) -> String {
    render(
        rows,
        &[
            ID,
            NAME,
            ROLE,
            ("TERM", |r| opt(r.term)),
            ("COMMIT", |r| opt(r.commit_index)),
            ("APPLIED", |r| opt(r.applied_index)),
            LEASE_VALID,
            ("LEASE REMAINING MS", lease_remaining),
            REACHABLE,
        ],
    )
}

/// A member that has not published its name yet shows `-`, like any other unknown cell.
pub(crate) fn name_cell(name: &str) -> String {
    if name.is_empty() {
        "-".into()
    } else {
        name.to_string()
    }
}

pub fn render_lease_status(rows: &[MemberStatus]) -> String {
    render(
        rows,
        &[
            ID,
            NAME,
            ROLE,
            LEASE_VALID,
            ("REMAINING MS", lease_remaining),
            ("SERVING", |r| {
                opt(r.lease.as_ref().map(|l| yes_no(l.serving)))
            }),
            REACHABLE,
        ],
    )
}

pub async fn cluster(
    client: &mut Client,
    cmd: ClusterCommand,
    out: Output,
) -> Result<(), CliError> {
    match cmd {
        ClusterCommand::Status => {
            let rows = statuses(client).await?;
            if out == Output::Json {
                println!("{}", serde_json::json!({ "members": rows }));
            } else {
                print!("{}", render_cluster_status(&rows));
            }
        }
    }
    Ok(())
}

pub async fn lease(client: &mut Client, cmd: LeaseCommand, out: Output) -> Result<(), CliError> {
    match cmd {
        LeaseCommand::Status => {
            let rows = statuses(client).await?;
            if out == Output::Json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "id": r.id, "name": r.name, "role": r.role,
                            "reachable": r.reachable, "lease": r.lease,
                        })
                    })
                    .collect();
                println!("{}", serde_json::json!({ "members": v }));
            } else {
                print!("{}", render_lease_status(&rows));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_without_is_learner_are_voters() {
        let m: Member =
            serde_json::from_str(r#"{"id":"a1","name":"n1","peerURLs":[]}"#).expect("ok");
        assert!(!m.is_learner);
        let m: Member =
            serde_json::from_str(r#"{"id":"a1","peerURLs":[],"isLearner":true}"#).expect("ok");
        assert!(m.is_learner);
    }

    #[test]
    fn raft_status_shape_parses() {
        let rs: RaftStatus = serde_json::from_str(
            r#"{"id":"00000000000000a1","name":"n1","role":"leader","term":3,"leader":null,
                "commitIndex":10,"appliedIndex":9,"lastIndex":10,"voters":["00000000000000a1"],
                "learners":[],"progress":{},
                "lease":{"valid":true,"remainingMs":270,"serving":true,"reason":null}}"#,
        )
        .expect("valid");
        let mut st = MemberStatus::default();
        st.fill(Probed::Raft(rs));
        assert_eq!(st.role.as_deref(), Some("leader"));
        assert_eq!(
            (st.id.as_str(), st.name.as_str()),
            ("00000000000000a1", "n1")
        );
        assert_eq!(st.leader, None);
        assert_eq!(st.applied_index, Some(9));
        assert_eq!(st.lease.map(|l| l.remaining_ms), Some(270));

        let ss: SelfStats = serde_json::from_str(
            r#"{"name":"default","id":"8e9e05c52164694d","state":"StateFollower",
                "leaderInfo":{"leader":"","uptime":"1s"}}"#,
        )
        .expect("etcd's stats/self");
        let mut st = MemberStatus::default();
        st.fill(Probed::Etcd(ss));
        assert_eq!(
            (st.source.as_str(), st.role.as_deref()),
            ("stats/self", Some("follower"))
        );
        assert_eq!((st.leader, st.term), (None, None));
    }

    #[test]
    fn status_rows_mark_unknown_and_unreachable() {
        let rows = vec![
            MemberStatus {
                id: "a1".into(),
                name: "n1".into(),
                reachable: true,
                role: Some("leader".into()),
                term: Some(3),
                commit_index: Some(10),
                applied_index: Some(10),
                lease: Some(LeaseStatus {
                    valid: true,
                    remaining_ms: 270,
                    serving: true,
                    reason: None,
                }),
                ..Default::default()
            },
            MemberStatus {
                id: "b2".into(),
                name: "n2".into(),
                ..Default::default()
            },
        ];
        let s = render_cluster_status(&rows);
        let lines: Vec<Vec<&str>> = s.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[1],
            vec!["a1", "n1", "leader", "3", "10", "10", "yes", "270", "yes"]
        );
        assert_eq!(
            lines[2],
            vec!["b2", "n2", "-", "-", "-", "-", "-", "-", "no"]
        );
        let s = render_lease_status(&rows);
        let lines: Vec<Vec<&str>> = s.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines[0][..4], ["ID", "NAME", "ROLE", "LEASE"]);
        assert_eq!(
            lines[1],
            vec!["a1", "n1", "leader", "yes", "270", "yes", "yes"]
        );
        assert_eq!(lines[2], vec!["b2", "n2", "-", "-", "-", "-", "no"]);
        assert_eq!(role_from_etcd_state("StateLeader"), "leader");
        assert_eq!(role_from_etcd_state("StateFollower"), "follower");
    }
}
