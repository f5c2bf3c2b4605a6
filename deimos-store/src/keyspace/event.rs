//! The result of an operation, as etcd v2 returns it: `{"action", "node", "prevNode"}`.

use serde::{Deserialize, Serialize};

use super::node::NodeExtern;

/// etcd v2's action names.
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

/// One operation's outcome. Only `action`, `node` and `prevNode` are serialised; the other
/// fields are for the server (headers, status code) and the watcher hub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub action: Action,
    pub node: NodeExtern,
    /// Boxed so `Event` (and every `Result<Applied, _>` carrying one) stays small.
    #[serde(rename = "prevNode", default, skip_serializing_if = "Option::is_none")]
    pub prev_node: Option<Box<NodeExtern>>,
    /// `X-Etcd-Index`: for a write, the index it produced (== `node.modified_index`); for a
    /// read, the store index at read time; for a watch answered from history, the store index
    /// at watch time (as etcd).
    #[serde(skip)]
    pub index: u64,
    /// The write created the node (the server answers 201 instead of 200).
    #[serde(skip)]
    pub created: bool,
    /// A TTL refresh: recorded in history for index continuity but never delivered to watchers.
    #[serde(skip)]
    pub refresh: bool,
}

impl Event {
    /// The path the event is about (`/` for the root, which renders with an empty key).
    pub fn key(&self) -> &str {
        if self.node.key.is_empty() {
            "/"
        } else {
            &self.node.key
        }
    }

    /// The index that orders this event in the history (its node's `modifiedIndex`).
    pub fn event_index(&self) -> u64 {
        self.node.modified_index
    }
}
