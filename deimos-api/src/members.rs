//! `/v2/members`: the member list, one member, and the body that adds or updates one.

use serde::{Deserialize, Serialize};

use crate::is_false;

/// A member as `/v2/members` describes it. Ids are 16 hex digits, as etcd prints them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    /// Empty until the member has started and published its name.
    #[serde(default)]
    pub name: String,
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    /// Empty until the member has started and published them.
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
    /// etcd v3's field (its v2 API has no learners): absent means a voter. Deimos always
    /// sends it, from the applied configuration (promotion changes only that, not the record).
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
}

/// `{"members": [...]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    pub members: Vec<Member>,
}

/// The body of `POST /v2/members` (add) and `PUT /v2/members/<id>` (new peer URLs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRequest {
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Add as a learner (etcd v3's member field). `PUT` ignores it: promotion is its own call.
    #[serde(rename = "isLearner", default, skip_serializing_if = "is_false")]
    pub is_learner: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_member_list_reads() {
        // etcd 3.4's answer: no isLearner on its v2 API.
        let body = r#"{"members":[{"id":"8e9e05c52164694d","name":"default","peerURLs":["http://localhost:2380"],"clientURLs":["http://localhost:2379"]}]}"#;
        let l: MemberList = serde_json::from_str(body).unwrap();
        assert_eq!(l.members[0].name, "default");
        assert!(!l.members[0].is_learner);
        let again = serde_json::to_string(&l).unwrap();
        assert_eq!(
            again,
            body.replace(r#""]}]}"#, r#""],"isLearner":false}]}"#)
        );
    }

    #[test]
    fn learner_and_request_round_trip() {
        let m = Member {
            id: "000000000000000a".into(),
            name: String::new(),
            peer_urls: vec!["http://10.0.0.1:2380".into()],
            client_urls: vec![],
            is_learner: true,
        };
        let s = serde_json::to_string(&m).unwrap();
        assert!(s.contains(r#""isLearner":true"#), "{s}");
        assert_eq!(serde_json::from_str::<Member>(&s).unwrap(), m);
        let r: MemberRequest = serde_json::from_str(r#"{"peerURLs":["http://a:2380"]}"#).unwrap();
        assert_eq!((r.name, r.is_learner), (None, false));
        assert!(serde_json::from_str::<MemberRequest>(r#"{"peerUrls":["x"]}"#).is_err());
    }
}
