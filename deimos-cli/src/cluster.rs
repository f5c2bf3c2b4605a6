//! `cluster status` and `lease status`, and the members API's `Member` they start from.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::cli::{ClusterCommand, LeaseCommand};
use crate::client::{CliError, Client};
use crate::http::{Conn, Endpoint};
use crate::output::{opt, Output, Table};

/// A member as `/v2/members` describes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    #[serde(default, rename = "clientURLs")]
    pub client_urls: Vec<String>,
    /// etcd v3's field; the v2 API of etcd itself has no learners, so absent means a voter.
    #[serde(default)]
    pub is_learner: bool,
}

#[derive(Deserialize)]
struct Members {
    #[serde(default)]
    members: Vec<Member>,
}

/// Deimos's `/raft/status` (etcd has no such endpoint).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RaftStatus {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub term: Option<u64>,
    #[serde(default)]
    pub leader: Option<String>,
    #[serde(default)]
    pub commit_index: Option<u64>,
    #[serde(default)]
    pub applied_index: Option<u64>,
    #[serde(default)]
    pub last_index: Option<u64>,
    #[serde(default)]
    pub lease: Option<LeaseInfo>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseInfo {
    #[serde(default)]
    pub valid: Option<bool>,
    #[serde(default)]
    pub remaining_ms: Option<u64>,
    #[serde(default)]
    pub serving: Option<bool>,
}

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
    pub lease: Option<LeaseInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub async fn list_members(client: &mut Client) -> Result<Vec<Member>, CliError> {
    let t = Some(client.timeout());
    let (_, v) = client.json(Method::GET, "/v2/members", None, t).await?;
    let m: Members = serde_json::from_value(v.clone())
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
            return Ok::<_, String>(("raft/status", rs));
        }
        let r = conn
            .send(Method::GET, "/v2/stats/self", None)
            .await
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("/v2/stats/self: bad JSON: {e}"))?;
        let role = v
            .get("state")
            .and_then(|s| s.as_str())
            .map(role_from_etcd_state);
        let leader = v
            .pointer("/leaderInfo/leader")
            .and_then(|s| s.as_str())
            .map(String::from);
        Ok((
            "stats/self",
            RaftStatus {
                role,
                leader,
                ..Default::default()
            },
        ))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok((source, rs))) => {
            st.reachable = true;
            st.source = source.into();
            st.role = rs.role;
            st.term = rs.term;
            st.leader = rs.leader;
            st.commit_index = rs.commit_index;
            st.applied_index = rs.applied_index;
            st.last_index = rs.last_index;
            st.lease = rs.lease;
            if st.name.is_empty() {
                st.name = rs.name.unwrap_or_default();
            }
            if st.id.is_empty() {
                st.id = rs.id.unwrap_or_default();
            }
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

pub fn render_cluster_status(rows: &[MemberStatus]) -> String {
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "ROLE",
        "TERM",
        "COMMIT",
        "APPLIED",
        "LEASE VALID",
        "LEASE REMAINING MS",
        "REACHABLE",
    ]);
    for r in rows {
        let lease = r.lease.clone().unwrap_or_default();
        t.row(vec![
            r.id.clone(),
            name_cell(&r.name),
            opt(r.role.clone()),
            opt(r.term),
            opt(r.commit_index),
            opt(r.applied_index),
            opt(lease.valid.map(yes_no)),
            opt(lease.remaining_ms),
            yes_no(r.reachable),
        ]);
    }
    t.render()
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
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "ROLE",
        "LEASE VALID",
        "REMAINING MS",
        "SERVING",
        "REACHABLE",
    ]);
    for r in rows {
        let lease = r.lease.clone().unwrap_or_default();
        t.row(vec![
            r.id.clone(),
            name_cell(&r.name),
            opt(r.role.clone()),
            opt(lease.valid.map(yes_no)),
            opt(lease.remaining_ms),
            opt(lease.serving.map(yes_no)),
            yes_no(r.reachable),
        ]);
    }
    t.render()
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
        let m: Member = serde_json::from_str(r#"{"id":"a1","isLearner":true}"#).expect("ok");
        assert!(m.is_learner);
    }

    #[test]
    fn raft_status_shape_parses() {
        let rs: RaftStatus = serde_json::from_str(
            r#"{"id":"00000000000000a1","name":"n1","role":"leader","term":3,"leader":null,
                "commitIndex":10,"appliedIndex":9,"lastIndex":10,
                "lease":{"valid":true,"remainingMs":270,"serving":true}}"#,
        )
        .expect("valid");
        assert_eq!(rs.role.as_deref(), Some("leader"));
        assert_eq!(rs.leader, None);
        assert_eq!(rs.applied_index, Some(9));
        let lease = rs.lease.expect("lease");
        assert_eq!(lease.remaining_ms, Some(270));
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
                lease: Some(LeaseInfo {
                    valid: Some(true),
                    remaining_ms: Some(270),
                    serving: Some(true),
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
        assert_eq!(role_from_etcd_state("StateLeader"), "leader");
        assert_eq!(role_from_etcd_state("StateFollower"), "follower");
    }
}
