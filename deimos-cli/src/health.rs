//! `cluster-health`: etcdctl v2's check of every member's `/health`.
//!
//! Members come from `/v2/members`; each is asked on its client URLs in turn until one answers.
//! The report has etcdctl's lines, so scripts that grep them keep working:
//! `member <id> is healthy: got healthy result from <url>` (or `unhealthy`, or `is unreachable`),
//! then `cluster is healthy` or `cluster is unhealthy`. Unless every member is healthy the exit
//! status is 5.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::Serialize;

use crate::client::{CliError, Client};
use crate::cluster::{list_members, Member};
use crate::http::{Conn, Endpoint};
use crate::output::Output;

/// What one member's check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Unhealthy,
    Unreachable,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemberHealth {
    pub id: String,
    pub name: String,
    pub health: Health,
    /// The client URL that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `{"health": "true"}` as etcd and Deimos send it; a JSON `true` is accepted too.
fn healthy_body(status: StatusCode, body: &[u8]) -> bool {
    if status != StatusCode::OK {
        return false;
    }
    if let Ok(h) = serde_json::from_slice::<deimos_api::cluster::Health>(body) {
        return h.is_healthy();
    }
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v.get("health") == Some(&serde_json::Value::from(true)))
}

async fn get_health(url: &str, timeout: Duration) -> Result<bool, String> {
    let ep = Endpoint::parse(url)?;
    let attempt = async {
        let mut conn = Conn::connect(&ep, timeout)
            .await
            .map_err(|e| e.to_string())?;
        conn.send(Method::GET, "/health", None)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(r)) => Ok(healthy_body(r.status, &r.body)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

async fn check(member: Member, timeout: Duration) -> MemberHealth {
    let mut h = MemberHealth {
        id: member.id,
        name: member.name,
        health: Health::Unreachable,
        url: None,
        client_urls: member.client_urls,
        error: None,
    };
    let mut errors = Vec::new();
    for url in &h.client_urls {
        match get_health(url, timeout).await {
            Ok(healthy) => {
                h.health = if healthy {
                    Health::Healthy
                } else {
                    Health::Unhealthy
                };
                h.url = Some(url.clone());
                return h;
            }
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    h.error = Some(if errors.is_empty() {
        "no published client URLs".into()
    } else {
        errors.join("; ")
    });
    h
}

/// etcdctl's line for one member.
pub fn line(h: &MemberHealth) -> String {
    let url = h.url.as_deref().unwrap_or_default();
    match h.health {
        Health::Healthy => format!("member {} is healthy: got healthy result from {url}", h.id),
        Health::Unhealthy => {
            format!(
                "member {} is unhealthy: got unhealthy result from {url}",
                h.id
            )
        }
        Health::Unreachable if h.client_urls.is_empty() => format!(
            "member {} is unreachable: no available published client urls",
            h.id
        ),
        Health::Unreachable => format!(
            "member {} is unreachable: [{}] are all unreachable",
            h.id,
            h.client_urls.join(" ")
        ),
    }
}

/// Checks every member concurrently, so one dead member costs one timeout, not one per member.
pub async fn run(client: &mut Client, out: Output) -> Result<(), CliError> {
    let members = list_members(client).await?;
    let timeout = client.timeout();
    let handles: Vec<_> = members
        .into_iter()
        .map(|m| tokio::spawn(check(m, timeout)))
        .collect();
    let mut report = Vec::with_capacity(handles.len());
    for h in handles {
        report.push(
            h.await
                .map_err(|e| CliError::Protocol(format!("health check task failed: {e}")))?,
        );
    }
    let healthy = !report.is_empty() && report.iter().all(|h| h.health == Health::Healthy);
    if out == Output::Json {
        println!(
            "{}",
            serde_json::json!({ "healthy": healthy, "members": report })
        );
    } else {
        for h in &report {
            println!("{}", line(h));
        }
        println!(
            "cluster is {}",
            if healthy { "healthy" } else { "unhealthy" }
        );
    }
    if healthy {
        Ok(())
    } else {
        Err(CliError::Unhealthy("cluster is unhealthy".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(health: Health, urls: &[&str]) -> MemberHealth {
        MemberHealth {
            id: "a1".into(),
            name: "n1".into(),
            health,
            url: urls.first().map(|u| u.to_string()),
            client_urls: urls.iter().map(|u| u.to_string()).collect(),
            error: None,
        }
    }

    #[test]
    fn lines_like_etcdctl() {
        let u = ["http://a:1", "http://b:2"];
        assert_eq!(
            line(&member(Health::Healthy, &u)),
            "member a1 is healthy: got healthy result from http://a:1"
        );
        assert_eq!(
            line(&member(Health::Unhealthy, &u)),
            "member a1 is unhealthy: got unhealthy result from http://a:1"
        );
        assert_eq!(
            line(&member(Health::Unreachable, &u)),
            "member a1 is unreachable: [http://a:1 http://b:2] are all unreachable"
        );
        assert_eq!(
            line(&member(Health::Unreachable, &[])),
            "member a1 is unreachable: no available published client urls"
        );
    }

    #[test]
    fn health_bodies() {
        assert!(healthy_body(StatusCode::OK, br#"{"health":"true"}"#));
        assert!(healthy_body(StatusCode::OK, br#"{"health":true}"#));
        assert!(!healthy_body(StatusCode::OK, br#"{"health":"false"}"#));
        assert!(!healthy_body(
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"health":"true"}"#
        ));
        assert!(!healthy_body(StatusCode::OK, b"ok"));
    }
}
