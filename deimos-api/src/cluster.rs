//! Cluster endpoints etcd v2 clients read: `/v2/stats/self`, `/v2/stats/leader`, `/health`
//! and `/version`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `/v2/stats/self`: this member as etcd describes itself. Deimos sends the fields etcd v2
/// clients use; etcd sends more (rates, start time), which readers ignore.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelfStats {
    pub name: String,
    pub id: String,
    /// `StateLeader`, `StateFollower` or `StateCandidate`.
    pub state: String,
    #[serde(rename = "leaderInfo")]
    pub leader_info: LeaderInfo,
    #[serde(rename = "recvAppendRequestCnt", default)]
    pub recv_append_request_cnt: u64,
    #[serde(rename = "sendAppendRequestCnt", default)]
    pub send_append_request_cnt: u64,
}

/// Who this member believes leads (empty when none), and for how long it has been up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaderInfo {
    #[serde(default)]
    pub leader: String,
    /// etcd prints a Go duration (`1h2m3.5s`), Deimos a humantime one (`1h 2m 3s`).
    #[serde(default)]
    pub uptime: String,
}

/// `/v2/stats/leader`, answered by the leader only: each follower's round-trip latency (in
/// seconds, as etcd's) and how many sends to it succeeded or failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaderStats {
    pub leader: String,
    pub followers: BTreeMap<String, FollowerStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FollowerStats {
    pub latency: Latency,
    pub counts: Counts,
}

/// Round trips to one follower, in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub current: f64,
    pub average: f64,
    #[serde(rename = "standardDeviation")]
    pub standard_deviation: f64,
    pub minimum: f64,
    pub maximum: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub fail: u64,
    pub success: u64,
}

/// `/health`: `"true"` or `"false"` as strings (etcd's shape). A Deimos node is healthy when it
/// knows a leader and a linearizable read completes; `reason` says why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub health: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Health {
    pub fn healthy() -> Health {
        Health {
            health: "true".into(),
            reason: None,
        }
    }

    pub fn unhealthy(reason: &str) -> Health {
        Health {
            health: "false".into(),
            reason: Some(reason.into()),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.health == "true"
    }
}

/// `/version`. etcd clients parse `etcdserver` and `etcdcluster`; `deimos` is only Deimos's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub etcdserver: String,
    pub etcdcluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deimos: Option<String>,
}

/// `GET /v2/auth/enable`: whether authentication is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthStatus {
    pub enabled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_stats_self_reads() {
        // Trimmed from etcd 3.4: the fields beyond ours are ignored.
        let body = r#"{"name":"default","id":"8e9e05c52164694d","state":"StateLeader","startTime":"2026-12-04T10:00:00Z","leaderInfo":{"leader":"8e9e05c52164694d","uptime":"10.5s","startTime":"2026-12-04T10:00:00Z"},"recvAppendRequestCnt":0,"sendAppendRequestCnt":0}"#;
        let s: SelfStats = serde_json::from_str(body).unwrap();
        assert_eq!(
            (s.state.as_str(), s.leader_info.leader.as_str()),
            ("StateLeader", "8e9e05c52164694d")
        );
    }

    #[test]
    fn leader_stats_round_trip() {
        let mut followers = BTreeMap::new();
        followers.insert(
            "00000000000000b2".to_string(),
            FollowerStats {
                latency: Latency {
                    current: 0.0012,
                    average: 0.001,
                    standard_deviation: 0.0002,
                    minimum: 0.0008,
                    maximum: 0.004,
                },
                counts: Counts {
                    fail: 1,
                    success: 90,
                },
            },
        );
        let s = LeaderStats {
            leader: "00000000000000a1".into(),
            followers,
        };
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains(r#""standardDeviation":0.0002"#), "{text}");
        assert_eq!(serde_json::from_str::<LeaderStats>(&text).unwrap(), s);
    }

    #[test]
    fn health_and_version_shapes() {
        assert_eq!(
            serde_json::to_string(&Health::healthy()).unwrap(),
            r#"{"health":"true"}"#
        );
        let h: Health = serde_json::from_str(r#"{"health":"false","reason":"no leader"}"#).unwrap();
        assert_eq!(h, Health::unhealthy("no leader"));
        assert!(!h.is_healthy());
        // etcd 3.4's /version has no `deimos`.
        let v: Version =
            serde_json::from_str(r#"{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}"#).unwrap();
        assert_eq!(v.deimos, None);
        assert_eq!(
            serde_json::to_string(&AuthStatus { enabled: true }).unwrap(),
            r#"{"enabled":true}"#
        );
    }
}
