//! `/raft/status`: Deimos's own view of one member's Raft state and lease (etcd has no such
//! endpoint; `deimosctl` falls back to `/v2/stats/self` there).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One member's Raft state. Ids are 16 hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RaftStatus {
    pub id: String,
    pub name: String,
    /// `leader`, `follower`, `candidate` or `pre_candidate`.
    pub role: String,
    pub term: u64,
    /// `None` while no leader is known.
    pub leader: Option<String>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    /// The leader's view of each member (empty elsewhere): how far its log is, and whether it
    /// answered within an election timeout — what the reconfiguration checks go by, so an
    /// operator can see why one refused.
    pub progress: BTreeMap<String, Progress>,
    pub lease: LeaseStatus,
}

/// The leader's replication state for one member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub matched: u64,
    pub next: u64,
    /// `probe`, `replicate` or `snapshot`.
    pub state: String,
    pub active: bool,
    pub learner: bool,
}

/// The leader lease as this member sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseStatus {
    /// A lease read would be served now.
    pub valid: bool,
    pub remaining_ms: u64,
    /// An entry of the leader's current term is committed and applied: until then a lease
    /// read could miss writes of the previous term, so none is served.
    pub serving: bool,
    /// Why there is no lease (`step_down`, `term_change`, `timeout`, ...), when there is none.
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_status_round_trips_with_camel_case_names() {
        let mut progress = BTreeMap::new();
        progress.insert(
            "00000000000000b2".to_string(),
            Progress {
                matched: 41,
                next: 42,
                state: "replicate".into(),
                active: true,
                learner: false,
            },
        );
        let s = RaftStatus {
            id: "00000000000000a1".into(),
            name: "n1".into(),
            role: "leader".into(),
            term: 3,
            leader: Some("00000000000000a1".into()),
            commit_index: 41,
            applied_index: 41,
            last_index: 41,
            voters: vec!["00000000000000a1".into(), "00000000000000b2".into()],
            learners: vec![],
            progress,
            lease: LeaseStatus {
                valid: true,
                remaining_ms: 850,
                serving: true,
                reason: None,
            },
        };
        let text = serde_json::to_string(&s).unwrap();
        for name in ["commitIndex", "appliedIndex", "lastIndex", "remainingMs"] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
        assert_eq!(serde_json::from_str::<RaftStatus>(&text).unwrap(), s);
        // A field the server stopped sending is an error, not a silent `-`.
        let renamed = text.replace("commitIndex", "commit");
        assert!(serde_json::from_str::<RaftStatus>(&renamed).is_err());
    }
}
