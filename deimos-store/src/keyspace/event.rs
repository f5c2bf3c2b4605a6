//! The result of an operation, as etcd v2 returns it: `{"action", "node", "prevNode"}`.

use serde::{Deserialize, Serialize};

pub use deimos_api::keys::Action;

use super::node::NodeExtern;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The server sends `Event` as it is; `deimosctl` reads it as the API crate's `Response`.
    #[test]
    fn an_event_reads_back_as_the_api_response() {
        let node = |v: &str, i: u64| NodeExtern {
            key: "/k".into(),
            value: Some(v.into()),
            modified_index: i,
            created_index: 3,
            ..NodeExtern::default()
        };
        let ev = Event {
            action: Action::CompareAndSwap,
            node: node("new", 9),
            prev_node: Some(Box::new(node("old", 3))),
            index: 9,
            created: false,
            refresh: false,
        };
        let text = serde_json::to_string(&ev).unwrap();
        let r: deimos_api::keys::Response = serde_json::from_str(&text).unwrap();
        assert_eq!(r.action, ev.action);
        assert_eq!(r.node.as_ref(), Some(&ev.node));
        assert_eq!(r.prev_node, ev.prev_node);
        assert_eq!(serde_json::to_string(&r).unwrap(), text);
    }
}
