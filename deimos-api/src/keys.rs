//! `/v2/keys`: nodes, actions and the response (also a watch event).

use serde::{Deserialize, Serialize};

use crate::{is_false, is_zero};

/// etcd v2's action names, as they appear in `"action"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    Get,
    Set,
    Create,
    Update,
    Delete,
    Expire,
    CompareAndSwap,
    CompareAndDelete,
}

impl Action {
    /// The wire name, without going through serde (response headers and logs use it).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Get => "get",
            Action::Set => "set",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Expire => "expire",
            Action::CompareAndSwap => "compareAndSwap",
            Action::CompareAndDelete => "compareAndDelete",
        }
    }

    /// Actions that remove a node (and, for a directory, its subtree).
    pub fn removes(self) -> bool {
        matches!(
            self,
            Action::Delete | Action::Expire | Action::CompareAndDelete
        )
    }
}

/// A key or directory as etcd v2 renders it. Field order and omission rules follow etcd's
/// `NodeExtern`: `value` only on keys, `dir` only when true, `nodes` only for a non-empty
/// listing, `expiration`/`ttl` only when the node has a TTL. The root renders without `key` and
/// indexes (etcd's omitempty on its empty key and zero indexes).
///
/// The store also persists this shape in its watch history, so a change here is a change of
/// the on-disk format as well.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The absolute path; empty for the root.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// `None` for a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub dir: bool,
    /// RFC 3339 in UTC with trimmed fractional seconds, like Go's `time.RFC3339Nano`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    /// Whole seconds left, rounded up (etcd's rule); computed against the server's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    /// A directory's children, when listed; `None` (absent) when empty or not asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<Node>>,
    #[serde(rename = "modifiedIndex", default, skip_serializing_if = "is_zero")]
    pub modified_index: u64,
    #[serde(rename = "createdIndex", default, skip_serializing_if = "is_zero")]
    pub created_index: u64,
}

impl Node {
    /// The children of a listed directory (none for a key or an empty directory).
    pub fn children(&self) -> &[Node] {
        self.nodes.as_deref().unwrap_or_default()
    }
}

/// A keys API answer, and one event of a watch: `{"action", "node", "prevNode"}`.
///
/// `node` is absent only in the short answer to a write with `noValueOnSuccess=true`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    #[serde(rename = "prevNode", default, skip_serializing_if = "Option::is_none")]
    pub prev_node: Option<Box<Node>>,
}

impl Response {
    /// The short answer to a write with `noValueOnSuccess=true`: the action alone.
    pub fn action_only(action: Action) -> Response {
        Response {
            action,
            node: None,
            prev_node: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_bodies_read_back() {
        // As etcd 3.4 answers a CAS on a key with a TTL, and a recursive listing.
        let cas = r#"{"action":"compareAndSwap","node":{"key":"/a","value":"2","expiration":"2026-12-04T10:00:00.5Z","ttl":9,"modifiedIndex":8,"createdIndex":7},"prevNode":{"key":"/a","value":"1","modifiedIndex":7,"createdIndex":7}}"#;
        let r: Response = serde_json::from_str(cas).unwrap();
        assert_eq!(r.action, Action::CompareAndSwap);
        let node = r.node.as_ref().unwrap();
        assert_eq!((node.ttl, node.modified_index), (Some(9), 8));
        assert_eq!(r.prev_node.as_ref().unwrap().value.as_deref(), Some("1"));
        assert_eq!(serde_json::to_string(&r).unwrap(), cas);

        let ls = r#"{"action":"get","node":{"dir":true,"nodes":[{"key":"/d","dir":true,"modifiedIndex":3,"createdIndex":3}]}}"#;
        let r: Response = serde_json::from_str(ls).unwrap();
        let root = r.node.as_ref().unwrap();
        assert_eq!((root.key.as_str(), root.dir), ("", true));
        assert_eq!(root.children()[0].key, "/d");
        assert_eq!(serde_json::to_string(&r).unwrap(), ls);
    }

    #[test]
    fn no_value_answer_is_the_action_alone() {
        let s = serde_json::to_string(&Response::action_only(Action::Set)).unwrap();
        assert_eq!(s, r#"{"action":"set"}"#);
        let r: Response = serde_json::from_str(&s).unwrap();
        assert_eq!(r, Response::action_only(Action::Set));
    }

    #[test]
    fn action_names_match_serde() {
        for a in [
            Action::Get,
            Action::Set,
            Action::Create,
            Action::Update,
            Action::Delete,
            Action::Expire,
            Action::CompareAndSwap,
            Action::CompareAndDelete,
        ] {
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                format!("\"{}\"", a.as_str())
            );
        }
    }

    #[test]
    fn a_renamed_field_fails_to_read() {
        assert!(serde_json::from_str::<Response>(r#"{"acton":"get"}"#).is_err());
    }
}
