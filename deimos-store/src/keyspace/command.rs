//! The replicated write commands of the key space.
//!
//! A `Command` is what goes into a Raft entry, so its serde form is a stable wire/disk format:
//! variants and fields may be added (with `#[serde(default)]`) but never renamed or removed.
//!
//! Determinism: every time a command needs — expiry instants, the "now" used to render `ttl` in
//! the response, the cut-off of an expiry sweep — is an absolute unix-millisecond value chosen by
//! the proposer. `Store::apply` never reads a clock, so every replica applying the same log ends
//! in the same state and produces the same events.
//!
//! Mapping onto the etcd v2 API (the server builds these; see the reference table):
//!
//! | request                                   | command                                              |
//! |-------------------------------------------|------------------------------------------------------|
//! | `PUT k value=v`                           | `Set { prev_exist: None, .. }` → action `set`        |
//! | `PUT k dir=true`                          | `Set { dir: true, .. }` → action `set`               |
//! | `PUT k prevExist=false`                   | `Set { prev_exist: Some(false) }` → `create`         |
//! | `PUT k prevExist=true`                    | `Set { prev_exist: Some(true) }` → `update`          |
//! | `PUT k prevValue=x / prevIndex=n`         | `Set { prev_value / prev_index }` → `compareAndSwap` |
//! | `PUT k ttl=n` / `ttl=`                    | `expire_at_ms: Some(now + n s)` / `None` (clears)    |
//! | `PUT k refresh=true ttl=n`                | `Set { refresh: true, .. }` (value kept, no watch)   |
//! | `POST d value=v`                          | `CreateInOrder` → `create`, key `d/<20 digits>`      |
//! | `DELETE k [dir] [recursive]`              | `Delete` → `delete`                                  |
//! | `DELETE k prevValue= / prevIndex=`        | `Delete { prev_value / prev_index }` → `compareAndDelete` |
//! | leader's TTL sweep                        | `ExpireUpTo { now_ms }` → `expire` events            |
//!
//! Validation that etcd does on the HTTP form (200–212: value required, TTL not a number, value
//! on refresh, TTL required on refresh, ...) is the server's job; `apply` re-checks only what
//! the state machine depends on (key and value limits, empty `prevValue`).

use serde::{Deserialize, Serialize};

/// One replicated write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Command {
    /// `PUT /v2/keys/<key>`: set, create, update or compare-and-swap, chosen exactly as etcd's
    /// server does: `prev_exist == Some(true)` → update (or CAS when a `prev_value`/`prev_index`
    /// is also given); `Some(false)` → create; otherwise a `prev_value`/`prev_index` → CAS; else set.
    #[serde(rename_all = "camelCase")]
    Set {
        key: String,
        #[serde(default)]
        value: String,
        /// Make a directory (set/create only; ignored by update and CAS, as in etcd).
        #[serde(default)]
        dir: bool,
        /// Absolute expiry in unix ms; `None` makes the node permanent (so `ttl=` clears a TTL).
        #[serde(default)]
        expire_at_ms: Option<u64>,
        /// Renew the TTL keeping the current value; the event is recorded but wakes no watcher.
        #[serde(default)]
        refresh: bool,
        #[serde(default)]
        prev_exist: Option<bool>,
        /// Must be non-empty when present (etcd error 201 otherwise).
        #[serde(default)]
        prev_value: Option<String>,
        /// `Some(0)` means "no index condition", as etcd's `prevIndex=0`.
        #[serde(default)]
        prev_index: Option<u64>,
        /// The proposer's clock, used only to render `ttl` in the returned event.
        #[serde(default)]
        now_ms: u64,
    },
    /// `POST /v2/keys/<key>`: create `<key>/<20-digit zero-padded new index>` (action `create`).
    #[serde(rename_all = "camelCase")]
    CreateInOrder {
        key: String,
        #[serde(default)]
        value: String,
        #[serde(default)]
        dir: bool,
        #[serde(default)]
        expire_at_ms: Option<u64>,
        #[serde(default)]
        now_ms: u64,
    },
    /// `DELETE /v2/keys/<key>`: delete, or compare-and-delete when `prev_value`/`prev_index`
    /// is given. `recursive` implies `dir`.
    #[serde(rename_all = "camelCase")]
    Delete {
        key: String,
        #[serde(default)]
        dir: bool,
        #[serde(default)]
        recursive: bool,
        #[serde(default)]
        prev_value: Option<String>,
        #[serde(default)]
        prev_index: Option<u64>,
        #[serde(default)]
        now_ms: u64,
    },
    /// Leader-decided TTL sweep: delete every node whose expiry is `<= now_ms`, earliest first
    /// (ties by path), one `expire` event and one index each.
    #[serde(rename_all = "camelCase")]
    ExpireUpTo { now_ms: u64 },
}

impl Command {
    /// Shorthand for a plain `PUT key value=...` with no TTL and no preconditions.
    pub fn set(key: impl Into<String>, value: impl Into<String>) -> Command {
        Command::Set {
            key: key.into(),
            value: value.into(),
            dir: false,
            expire_at_ms: None,
            refresh: false,
            prev_exist: None,
            prev_value: None,
            prev_index: None,
            now_ms: 0,
        }
    }

    /// Shorthand for a plain `DELETE key` (no dir, no recursion, no preconditions).
    pub fn delete(key: impl Into<String>) -> Command {
        Command::Delete {
            key: key.into(),
            dir: false,
            recursive: false,
            prev_value: None,
            prev_index: None,
            now_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_stable() {
        let c = Command::set("/a", "1");
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(
            j,
            r#"{"op":"set","key":"/a","value":"1","dir":false,"expireAtMs":null,"refresh":false,"prevExist":null,"prevValue":null,"prevIndex":null,"nowMs":0}"#
        );
        // Optional fields may be absent (older or terser proposers).
        let c2: Command = serde_json::from_str(r#"{"op":"set","key":"/a","value":"1"}"#).unwrap();
        assert_eq!(c2, c);
        let e: Command = serde_json::from_str(r#"{"op":"expireUpTo","nowMs":5}"#).unwrap();
        assert_eq!(e, Command::ExpireUpTo { now_ms: 5 });
        let d: Command = serde_json::from_str(r#"{"op":"delete","key":"/a"}"#).unwrap();
        assert_eq!(d, Command::delete("/a"));
        let p: Command =
            serde_json::from_str(r#"{"op":"createInOrder","key":"/q","value":"j"}"#).unwrap();
        assert!(matches!(p, Command::CreateInOrder { .. }));
    }
}
