//! etcd v2 write semantics: set, create (incl. in-order), update, compare-and-swap, delete,
//! compare-and-delete and TTL expiry.
//!
//! Each operation validates everything first and mutates only after every check passed, so a
//! failed command leaves the store (and its index) untouched. Error causes and the order in
//! which conditions are checked follow etcd v2's store so clients see the same error for the same
//! request: root read-only (107) → path walk (104/100) → node kind (102) → precondition
//! (105/101/108).

use super::error::{ErrorCode, StoreError, MAX_VALUE_BYTES};
use super::event::{Action, Event};
use super::node::{extern_of, Node, NodeExtern};
use super::path;
use super::Store;

/// The fields of a `Set`/`CreateInOrder` command that every write variant shares.
pub(super) struct Write<'a> {
    pub key: &'a str,
    pub value: &'a str,
    pub dir: bool,
    pub expire_at_ms: Option<u64>,
    pub refresh: bool,
    pub now_ms: u64,
}

/// The node of a delete/expire/CAD event: key, `dir` if it was one, original `createdIndex`, and
/// the removal's index as `modifiedIndex`; no value (as etcd).
fn removal_node(p: &str, old: &Node, index: u64) -> NodeExtern {
    NodeExtern {
        key: p.to_string(),
        value: None,
        dir: old.dir,
        expiration: None,
        ttl: None,
        nodes: None,
        modified_index: index,
        created_index: old.created,
    }
}

/// etcd's compare: each given condition must hold; the cause names the failing ones as
/// `[given != actual]`, value first.
fn compare(
    n: &Node,
    prev_value: Option<&str>,
    prev_index: Option<u64>,
    index: u64,
) -> Result<(), StoreError> {
    let value_bad = prev_value.filter(|v| *v != n.value);
    let index_bad = prev_index.filter(|i| *i != n.modified);
    let cause = match (value_bad, index_bad) {
        (None, None) => return Ok(()),
        (Some(v), None) => format!("[{v} != {}]", n.value),
        (None, Some(i)) => format!("[{i} != {}]", n.modified),
        (Some(v), Some(i)) => format!("[{v} != {}] [{i} != {}]", n.value, n.modified),
    };
    Err(StoreError::new(ErrorCode::TestFailed, cause, index))
}

impl Store {
    fn check_value(&self, value: &str) -> Result<(), StoreError> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::value_too_large(value.len(), self.index));
        }
        Ok(())
    }

    fn check_prev_value(&self, prev_value: Option<&str>) -> Result<(), StoreError> {
        if prev_value == Some("") {
            return Err(StoreError::new(
                ErrorCode::PrevValueRequired,
                "prevValue must be non-empty",
                self.index,
            ));
        }
        Ok(())
    }

    /// Normalise a key that names a node to be modified; the root is read-only (107).
    fn writable_path(&self, key: &str) -> Result<String, StoreError> {
        let p = path::normalize(key, self.index)?;
        if p == path::ROOT {
            return Err(StoreError::new(
                ErrorCode::RootReadOnly,
                path::ROOT,
                self.index,
            ));
        }
        Ok(p)
    }

    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.meta_dirty = true;
        self.index
    }

    fn new_node(w: &Write<'_>, index: u64) -> Node {
        Node {
            dir: w.dir,
            value: if w.dir {
                String::new()
            } else {
                w.value.to_string()
            },
            created: index,
            modified: index,
            expire_at_ms: w.expire_at_ms,
        }
    }

    /// `PUT` without preconditions (action `set`): replace a key or create it (with any missing
    /// parent directories). A fresh node gets new created/modified indexes even when it replaces
    /// an old key, as in etcd. With `refresh`, the existing value is kept and watchers are not
    /// woken.
    pub(super) fn set(&mut self, w: &Write<'_>) -> Result<Event, StoreError> {
        self.check_value(w.value)?;
        let p = self.writable_path(w.key)?;
        let prev = match self.tree.lookup(&p, self.index) {
            Ok(n) => Some(n.clone()),
            Err(e) if e.code == ErrorCode::KeyNotFound && !w.refresh => None,
            Err(e) => return Err(e),
        };
        self.tree.check_parents(&p, self.index)?;
        if prev.as_ref().is_some_and(|n| n.dir) {
            return Err(StoreError::new(ErrorCode::NotFile, p, self.index));
        }
        let index = self.bump();
        let mut node = Self::new_node(w, index);
        if w.refresh {
            if let Some(old) = &prev {
                node.value = old.value.clone();
                node.dir = old.dir;
            }
        }
        self.tree.create_parents(&p, index);
        let ext = extern_of(&p, &node, w.now_ms);
        self.tree.insert(p.clone(), node);
        Ok(Event {
            action: Action::Set,
            node: ext,
            prev_node: prev.as_ref().map(|n| Box::new(extern_of(&p, n, w.now_ms))),
            index,
            created: prev.is_none(),
            refresh: w.refresh,
        })
    }

    /// `PUT prevExist=false` or `POST` (action `create`): fails with 105 if the key exists.
    /// `in_order` appends `/<20-digit zero-padded new index>` to the key.
    pub(super) fn create(&mut self, w: &Write<'_>, in_order: bool) -> Result<Event, StoreError> {
        self.check_value(w.value)?;
        let p = if in_order {
            let dir = path::normalize(w.key, self.index)?;
            let name = format!("{:020}", self.index + 1);
            path::normalize(&path::join(&dir, &name), self.index)?
        } else {
            self.writable_path(w.key)?
        };
        self.tree.check_parents(&p, self.index)?;
        if self.tree.get(&p).is_some() {
            return Err(StoreError::new(ErrorCode::NodeExist, p, self.index));
        }
        let index = self.bump();
        let node = Self::new_node(w, index);
        self.tree.create_parents(&p, index);
        let ext = extern_of(&p, &node, w.now_ms);
        self.tree.insert(p, node);
        Ok(Event {
            action: Action::Create,
            node: ext,
            prev_node: None,
            index,
            created: true,
            refresh: false,
        })
    }

    /// `PUT prevExist=true` (action `update`): the key must exist; keeps `createdIndex`. A
    /// directory can be updated only with an empty value (to change its TTL), else 102.
    pub(super) fn update(&mut self, w: &Write<'_>) -> Result<Event, StoreError> {
        self.check_value(w.value)?;
        let p = self.writable_path(w.key)?;
        let old = self.tree.lookup(&p, self.index)?.clone();
        if old.dir && !w.value.is_empty() {
            return Err(StoreError::new(ErrorCode::NotFile, p, self.index));
        }
        self.modify(&p, old, w, Action::Update)
    }

    /// `PUT prevValue=/prevIndex=` (action `compareAndSwap`): the key must be a file whose value
    /// and/or modifiedIndex match, else 101 with cause `[given != actual]`.
    pub(super) fn compare_and_swap(
        &mut self,
        w: &Write<'_>,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
    ) -> Result<Event, StoreError> {
        self.check_prev_value(prev_value)?;
        self.check_value(w.value)?;
        let p = self.writable_path(w.key)?;
        let old = self.tree.lookup(&p, self.index)?.clone();
        if old.dir {
            return Err(StoreError::new(ErrorCode::NotFile, p, self.index));
        }
        compare(&old, prev_value, prev_index, self.index)?;
        self.modify(&p, old, w, Action::CompareAndSwap)
    }

    /// In-place write shared by update and CAS: new value (old one on refresh), new
    /// modifiedIndex, TTL replaced by the command's (`None` clears it).
    fn modify(
        &mut self,
        p: &str,
        old: Node,
        w: &Write<'_>,
        action: Action,
    ) -> Result<Event, StoreError> {
        let index = self.bump();
        let mut node = old.clone();
        if !old.dir && !w.refresh {
            node.value = w.value.to_string();
        }
        node.modified = index;
        node.expire_at_ms = w.expire_at_ms;
        let ext = extern_of(p, &node, w.now_ms);
        self.tree.insert(p.to_string(), node);
        Ok(Event {
            action,
            node: ext,
            prev_node: Some(Box::new(extern_of(p, &old, w.now_ms))),
            index,
            created: false,
            refresh: w.refresh,
        })
    }

    /// `DELETE` (action `delete`): a file always; a directory only with `dir` (else 102), and a
    /// non-empty one only with `recursive` (else 108).
    pub(super) fn delete(
        &mut self,
        key: &str,
        dir: bool,
        recursive: bool,
        now_ms: u64,
    ) -> Result<Event, StoreError> {
        let p = self.writable_path(key)?;
        let old = self.tree.lookup(&p, self.index)?.clone();
        if old.dir {
            if !dir {
                return Err(StoreError::new(ErrorCode::NotFile, p, self.index));
            }
            if !recursive && self.tree.has_children(&p) {
                return Err(StoreError::new(ErrorCode::DirNotEmpty, p, self.index));
            }
        }
        Ok(self.remove(&p, old, Action::Delete, now_ms))
    }

    /// `DELETE prevValue=/prevIndex=` (action `compareAndDelete`): files only (102 for a dir,
    /// the root included).
    pub(super) fn compare_and_delete(
        &mut self,
        key: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
        now_ms: u64,
    ) -> Result<Event, StoreError> {
        self.check_prev_value(prev_value)?;
        // No read-only check here, as in etcd: the root is a directory, so this is 102.
        let p = path::normalize(key, self.index)?;
        let old = self.tree.lookup(&p, self.index)?.clone();
        if old.dir {
            return Err(StoreError::new(ErrorCode::NotFile, p, self.index));
        }
        compare(&old, prev_value, prev_index, self.index)?;
        Ok(self.remove(&p, old, Action::CompareAndDelete, now_ms))
    }

    fn remove(&mut self, p: &str, old: Node, action: Action, now_ms: u64) -> Event {
        let index = self.bump();
        self.tree.remove_subtree(p);
        Event {
            action,
            node: removal_node(p, &old, index),
            prev_node: Some(Box::new(extern_of(p, &old, now_ms))),
            index,
            created: false,
            refresh: false,
        }
    }

    /// Remove every node whose expiry is `<= now_ms`, earliest first (ties by path, so a
    /// directory goes before its children, which then vanish with it). One index per event.
    pub(super) fn expire_up_to(&mut self, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some((t, p)) = self.tree.first_expiring() {
            if t > now_ms {
                break;
            }
            let p = p.to_string();
            let Some(old) = self.tree.get(&p).cloned() else {
                break;
            };
            events.push(self.remove(&p, old, Action::Expire, now_ms));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(v: &str, modified: u64) -> Node {
        Node {
            dir: false,
            value: v.into(),
            created: 1,
            modified,
            expire_at_ms: None,
        }
    }

    #[test]
    fn compare_causes_name_given_then_actual() {
        let n = file("y", 5);
        assert!(compare(&n, None, None, 9).is_ok());
        assert!(compare(&n, Some("y"), Some(5), 9).is_ok());
        let cause = |v, i| compare(&n, v, i, 9).unwrap_err().cause;
        assert_eq!(cause(Some("x"), None), "[x != y]");
        assert_eq!(cause(None, Some(1)), "[1 != 5]");
        assert_eq!(cause(Some("x"), Some(1)), "[x != y] [1 != 5]");
        assert_eq!(cause(Some("y"), Some(1)), "[1 != 5]");
        let e = compare(&n, Some("x"), None, 9).unwrap_err();
        assert_eq!((e.code, e.index), (ErrorCode::TestFailed, 9));
    }

    #[test]
    fn removal_node_has_no_value_and_keeps_created_index() {
        let n = removal_node("/k", &file("v", 3), 7);
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            r#"{"key":"/k","modifiedIndex":7,"createdIndex":1}"#
        );
    }
}
