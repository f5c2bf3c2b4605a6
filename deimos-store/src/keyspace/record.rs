//! The persistence boundary: how the key space becomes `(record key, bytes)` pairs and back.
//!
//! Record keys are node paths (always starting with `/`) plus [`META_KEY`], which holds the store
//! index. Because node paths never contain NUL, `META_KEY` cannot collide with a node.
//!
//! Encoding is serde_json: it is already a dependency, it is self-describing (fields can be
//! added with `#[serde(default)]` without a migration), and a record read straight out of redb
//! is human-readable when debugging a replica. Records are small (a value plus four integers),
//! so JSON's overhead is not a concern next to the 1 MiB value limit.
//!
//! The event history (the last 1,000 events, for `waitIndex`) is stored beside the nodes, one
//! record per event under [`EVENT_PREFIX`] + the 16-hex-digit index, so that it survives a
//! restart as etcd's does and, since snapshots are read from the same table, travels with a
//! snapshot as etcd's (part of its v2 store snapshot) does.
//!
//! The root directory is implicit and never stored. Restoring validates the tree invariants
//! (every parent is a stored directory or the root; `created <= modified <= index`) so a damaged
//! database is refused loudly instead of producing a replica that silently diverges.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::event::Event;
use super::node::Node;
use super::path;

/// Reserved record key holding the store metadata (the store index).
pub const META_KEY: &str = "\u{0}meta";

/// Prefix of event-history records; NUL keeps them apart from node paths, and the fixed-width
/// hex index keeps them in index order.
pub const EVENT_PREFIX: &str = "\u{0}event/";

pub(crate) fn event_key(index: u64) -> String {
    format!("{EVENT_PREFIX}{index:016x}")
}

/// An event as stored: what the client sees plus the refresh flag (a refresh is kept for index
/// continuity but never delivered, which must still hold after a restart).
#[derive(Deserialize)]
struct StoredEvent {
    #[serde(flatten)]
    event: Event,
    #[serde(default)]
    refresh: bool,
}

/// [`StoredEvent`]'s serialised form, borrowing the event: one is encoded per write.
#[derive(Serialize)]
struct StoredEventRef<'a> {
    #[serde(flatten)]
    event: &'a Event,
    refresh: bool,
}

pub(crate) fn encode_event(e: &Event) -> Vec<u8> {
    let stored = StoredEventRef {
        event: e,
        refresh: e.refresh,
    };
    serde_json::to_vec(&stored).unwrap_or_default()
}

fn decode_event(key: &str, hex: &str, bytes: &[u8]) -> Result<(u64, Event), StoreError> {
    let index = u64::from_str_radix(hex, 16)
        .ok()
        .filter(|_| hex.len() == 16)
        .ok_or_else(|| StoreError::corrupt(format!("event record key {key:?}")))?;
    let stored: StoredEvent = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::corrupt(format!("event record {index}: {e}")))?;
    let mut event = stored.event;
    if event.event_index() != index {
        return Err(StoreError::corrupt(format!(
            "event record {index} holds the event of index {}",
            event.event_index()
        )));
    }
    event.refresh = stored.refresh;
    event.index = index;
    Ok((index, event))
}

/// What a set of records holds.
pub(crate) struct Decoded {
    pub index: u64,
    /// In path order.
    pub nodes: Vec<(String, Node)>,
    /// The stored event history by index (not necessarily contiguous: see `History::restore`).
    pub events: BTreeMap<u64, Event>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    index: u64,
}

pub(crate) fn encode_node(n: &Node) -> Vec<u8> {
    // Serialising a struct of strings, integers and bools into a Vec cannot fail.
    serde_json::to_vec(n).unwrap_or_default()
}

pub(crate) fn encode_meta(index: u64) -> Vec<u8> {
    serde_json::to_vec(&Meta { index }).unwrap_or_default()
}

/// Decode and validate records.
pub(crate) fn decode(
    records: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> Result<Decoded, StoreError> {
    let mut meta: Option<u64> = None;
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut events = BTreeMap::new();
    for (key, bytes) in records {
        if let Some(hex) = key.strip_prefix(EVENT_PREFIX) {
            let (i, e) = decode_event(&key, hex, &bytes)?;
            events.insert(i, e);
            continue;
        }
        if key == META_KEY {
            let m: Meta = serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::corrupt(format!("meta record: {e}")))?;
            meta = Some(m.index);
            continue;
        }
        let clean = path::normalize(&key, 0)
            .map_err(|e| StoreError::corrupt(format!("record key {key:?}: {}", e.cause)))?;
        if clean != key || key == path::ROOT {
            return Err(StoreError::corrupt(format!(
                "record key {key:?} is not a node path"
            )));
        }
        let n: Node = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::corrupt(format!("record {key:?}: {e}")))?;
        nodes.insert(key, n);
    }
    let index = match meta {
        Some(i) => i,
        None if nodes.is_empty() => 0,
        None => return Err(StoreError::corrupt("node records without a meta record")),
    };
    // Indexes grow by one per write; anything near u64::MAX is damage, and refusing it keeps
    // every later `index + 1` free of overflow.
    if index > i64::MAX as u64 {
        return Err(StoreError::corrupt(format!(
            "store index {index} out of range"
        )));
    }
    for (key, n) in &nodes {
        if n.created > n.modified || n.modified > index {
            return Err(StoreError::corrupt(format!(
                "record {key:?} has indexes {}/{} beyond store index {index}",
                n.created, n.modified
            )));
        }
        if n.dir && !n.value.is_empty() {
            return Err(StoreError::corrupt(format!(
                "directory {key:?} has a value"
            )));
        }
        if let Some(parent) = path::parent(key) {
            if parent != path::ROOT && !nodes.get(parent).is_some_and(|p| p.dir) {
                return Err(StoreError::corrupt(format!(
                    "record {key:?} has no parent directory"
                )));
            }
        }
    }
    if let Some((&last, _)) = events.last_key_value() {
        if last > index {
            return Err(StoreError::corrupt(format!(
                "event record {last} beyond store index {index}"
            )));
        }
    }
    Ok(Decoded {
        index,
        nodes: nodes.into_iter().collect(),
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str, json: &str) -> (String, Vec<u8>) {
        (k.to_string(), json.as_bytes().to_vec())
    }

    #[test]
    fn empty_is_index_zero() {
        let d = decode(Vec::new()).unwrap();
        assert_eq!((d.index, d.nodes.len(), d.events.len()), (0, 0, 0));
    }

    #[test]
    fn event_records_round_trip_and_damage_is_refused() {
        let meta = rec(META_KEY, r#"{"index":2}"#);
        let ev = r#"{"action":"set","node":{"key":"/a","value":"x","modifiedIndex":2,"createdIndex":2},"refresh":true}"#;
        let d = decode(vec![meta.clone(), rec(&event_key(2), ev)]).unwrap();
        let e = &d.events[&2];
        assert!(e.refresh);
        let again = decode(vec![meta.clone(), (event_key(2), encode_event(e))]).unwrap();
        assert_eq!(&again.events[&2], e);
        // Key and event disagree, a key that is not 16 hex digits, an event beyond the index.
        assert!(decode(vec![meta.clone(), rec(&event_key(1), ev)]).is_err());
        assert!(decode(vec![meta.clone(), rec(&format!("{EVENT_PREFIX}2"), ev)]).is_err());
        assert!(decode(vec![meta.clone(), rec(&event_key(2), "{}")]).is_err());
        let beyond = ev.replace(":2,", ":3,");
        assert!(decode(vec![meta, rec(&event_key(3), &beyond)]).is_err());
    }

    #[test]
    fn refuses_damage() {
        let meta = rec(META_KEY, r#"{"index":5}"#);
        let orphan = rec("/a/b", r#"{"value":"x","created":1,"modified":1}"#);
        assert!(decode(vec![meta, orphan]).is_err());
        assert!(decode(vec![rec("/a", r#"{"created":1,"modified":1}"#)]).is_err());
        let meta = rec(META_KEY, r#"{"index":1}"#);
        assert!(decode(vec![
            meta.clone(),
            rec("/a", r#"{"created":1,"modified":2}"#)
        ])
        .is_err());
        assert!(decode(vec![
            meta.clone(),
            rec("/a//b", r#"{"created":1,"modified":1}"#)
        ])
        .is_err());
        assert!(decode(vec![meta.clone(), rec("junk", "{}")]).is_err());
        assert!(decode(vec![meta.clone(), rec("/a", "not json")]).is_err());
        assert!(decode(vec![rec(META_KEY, "[]")]).is_err());
        assert!(decode(vec![rec(META_KEY, &format!(r#"{{"index":{}}}"#, u64::MAX))]).is_err());
        let file_parent = rec("/a", r#"{"value":"x","created":1,"modified":1}"#);
        let child = rec("/a/b", r#"{"value":"y","created":1,"modified":1}"#);
        assert!(decode(vec![meta.clone(), file_parent, child]).is_err());
        let ok = decode(vec![
            meta,
            rec("/a", r#"{"dir":true,"created":1,"modified":1}"#),
            rec(
                "/a/b",
                r#"{"value":"y","created":1,"modified":1,"expire_at_ms":9}"#,
            ),
        ])
        .unwrap();
        assert_eq!(ok.nodes.len(), 2);
        assert_eq!(ok.nodes[1].1.expire_at_ms, Some(9));
    }
}
