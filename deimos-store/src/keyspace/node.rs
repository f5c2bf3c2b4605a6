//! The tree of keys and directories, and its etcd JSON rendering (`NodeExtern`).
//!
//! The tree is a flat `BTreeMap` from normalised path to [`Node`] rather than a pointer tree:
//! a subtree is a contiguous key range (`dir/` .. `dir0`), so recursive delete, listing and
//! persistence are range scans, and two replicas holding the same nodes are equal as values.
//!
//! Invariants (upheld by every `Tree` mutator, checked by `Store::from_records`):
//! * the root `/` is implicit (never stored), a directory with indexes 0, and cannot expire;
//! * every stored node's parent is the root or a stored directory;
//! * `ttl` holds exactly the `(expire_at_ms, path)` of stored nodes that have an expiration;
//! * `dirty` holds every path inserted, changed or removed since the last `take_dirty`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::error::{ErrorCode, StoreError};
use super::path;

/// One key or directory. Directories have an empty `value`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Node {
    #[serde(default, skip_serializing_if = "is_false")]
    pub dir: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    pub created: u64,
    pub modified: u64,
    /// Absolute expiry, unix milliseconds, as computed by the proposer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_at_ms: Option<u64>,
}

static ROOT_NODE: Node = Node {
    dir: true,
    value: String::new(),
    created: 0,
    modified: 0,
    expire_at_ms: None,
};

fn is_false(b: &bool) -> bool {
    !*b
}

/// A node as etcd v2 renders it: the wire type, named apart from this module's stored [`Node`].
pub use deimos_api::keys::Node as NodeExtern;

/// etcd's TTL: whole seconds until `expire_ms`, rounded up; zero or negative once due.
pub fn ttl_secs(expire_ms: u64, now_ms: u64) -> i64 {
    let left = i128::from(expire_ms) - i128::from(now_ms);
    let mut secs = left / 1000;
    if left % 1000 > 0 {
        secs += 1;
    }
    secs.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Format unix milliseconds as RFC 3339 UTC the way Go marshals a `time.Time`:
/// `2026-11-25T10:00:00.123Z`, `...:00.1Z`, or `...:00Z` when the fraction is zero.
pub fn format_rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let frac = ms % 1000;
    let days = secs / 86_400;
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    if frac != 0 {
        let f = format!("{frac:03}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's
/// algorithm, restricted to non-negative day counts.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The key space tree; see the module docs for its invariants.
#[derive(Debug, Default)]
pub(crate) struct Tree {
    nodes: BTreeMap<String, Node>,
    ttl: BTreeSet<(u64, String)>,
    dirty: BTreeSet<String>,
}

impl Tree {
    /// The node at a normalised path (the root included).
    pub fn get(&self, p: &str) -> Option<&Node> {
        if p == path::ROOT {
            Some(&ROOT_NODE)
        } else {
            self.nodes.get(p)
        }
    }

    /// etcd's `internalGet`: walk from the root; a file on the way is 104 (cause: that file),
    /// the first missing component is 100 (cause: the path up to it).
    pub fn lookup(&self, p: &str, index: u64) -> Result<&Node, StoreError> {
        for prefix in path::ancestors(p).chain(std::iter::once(p)) {
            if prefix == path::ROOT {
                break;
            }
            let parent = path::parent(prefix).unwrap_or(path::ROOT);
            match self.get(parent) {
                Some(n) if !n.dir => {
                    return Err(StoreError::new(ErrorCode::NotDir, parent, index));
                }
                _ => {}
            }
            if !self.nodes.contains_key(prefix) {
                return Err(StoreError::new(ErrorCode::KeyNotFound, prefix, index));
            }
        }
        self.get(p)
            .ok_or_else(|| StoreError::new(ErrorCode::KeyNotFound, p, index))
    }

    /// Check that a node could be created at `p`: no proper ancestor is a file (104, cause: the
    /// file). Missing ancestors are fine; `create_parents` makes them.
    pub fn check_parents(&self, p: &str, index: u64) -> Result<(), StoreError> {
        for a in path::ancestors(p) {
            match self.nodes.get(a) {
                Some(n) if !n.dir => return Err(StoreError::new(ErrorCode::NotDir, a, index)),
                Some(_) => {}
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// Create every missing proper ancestor of `p` as a permanent directory stamped `index`
    /// (etcd creates intermediate directories implicitly). Call `check_parents` first.
    pub fn create_parents(&mut self, p: &str, index: u64) {
        let missing: Vec<String> = path::ancestors(p)
            .filter(|a| !self.nodes.contains_key(*a))
            .map(str::to_string)
            .collect();
        for a in missing {
            self.insert(
                a,
                Node {
                    dir: true,
                    value: String::new(),
                    created: index,
                    modified: index,
                    expire_at_ms: None,
                },
            );
        }
    }

    /// Insert or replace the node at `p` (never the root), keeping `ttl` and `dirty` in step.
    pub fn insert(&mut self, p: String, node: Node) {
        if let Some(old) = self.nodes.get(&p) {
            if let Some(t) = old.expire_at_ms {
                self.ttl.remove(&(t, p.clone()));
            }
        }
        if let Some(t) = node.expire_at_ms {
            self.ttl.insert((t, p.clone()));
        }
        self.dirty.insert(p.clone());
        self.nodes.insert(p, node);
    }

    /// Remove the node at `p` and everything below it; returns the removed paths.
    pub fn remove_subtree(&mut self, p: &str) -> Vec<String> {
        let mut doomed: Vec<String> = Vec::new();
        if self.nodes.contains_key(p) {
            doomed.push(p.to_string());
        }
        let prefix = path::child_prefix(p);
        let end = path::prefix_end(&prefix);
        doomed.extend(
            self.nodes
                .range::<str, _>((
                    Bound::Included(prefix.as_str()),
                    Bound::Excluded(end.as_str()),
                ))
                .map(|(k, _)| k.clone()),
        );
        for k in &doomed {
            if let Some(old) = self.nodes.remove(k) {
                if let Some(t) = old.expire_at_ms {
                    self.ttl.remove(&(t, k.clone()));
                }
            }
            self.dirty.insert(k.clone());
        }
        doomed
    }

    /// Direct children of directory `dir`, in key order. Skips over grandchildren's ranges, so
    /// the cost is proportional to the number of children, not the subtree.
    pub fn children(&self, dir: &str) -> Vec<(&str, &Node)> {
        let prefix = path::child_prefix(dir);
        let end = path::prefix_end(&prefix);
        let mut out = Vec::new();
        let mut lower: Bound<String> = Bound::Included(prefix.clone());
        loop {
            let lo = match &lower {
                Bound::Included(s) | Bound::Excluded(s) if s.as_str() >= end.as_str() => break,
                Bound::Included(s) => Bound::Included(s.as_str()),
                Bound::Excluded(s) => Bound::Excluded(s.as_str()),
                Bound::Unbounded => Bound::Unbounded,
            };
            let Some((k, n)) = self
                .nodes
                .range::<str, _>((lo, Bound::Excluded(end.as_str())))
                .next()
            else {
                break;
            };
            match k[prefix.len()..].find('/') {
                None => {
                    out.push((k.as_str(), n));
                    lower = Bound::Excluded(k.clone());
                }
                Some(i) => {
                    // A grandchild: jump past the whole subtree of that child.
                    let child = &k[..prefix.len() + i];
                    lower = Bound::Included(format!("{child}0"));
                }
            }
        }
        out
    }

    /// Whether directory `dir` has any child (hidden ones included).
    pub fn has_children(&self, dir: &str) -> bool {
        let prefix = path::child_prefix(dir);
        let end = path::prefix_end(&prefix);
        self.nodes
            .range::<str, _>((
                Bound::Included(prefix.as_str()),
                Bound::Excluded(end.as_str()),
            ))
            .next()
            .is_some()
    }

    /// Render `p` as etcd would. `list` includes the directory's visible children; `recursive`
    /// lists every level below; `sorted` orders each listing by key.
    pub fn render(
        &self,
        p: &str,
        node: &Node,
        list: bool,
        recursive: bool,
        sorted: bool,
        now_ms: u64,
    ) -> NodeExtern {
        self.render_at(p, node, list, recursive, sorted, now_ms, 0)
    }

    /// [`render`](Self::render) `depth` levels below where the listing started. The recursion
    /// (and the nesting of the JSON it becomes) is bounded by [`path::MAX_KEY_DEPTH`]: keys
    /// are refused deeper than that, and a data dir written before the limit existed is listed
    /// no deeper, so no stored tree can overflow the stack.
    #[allow(clippy::too_many_arguments)]
    fn render_at(
        &self,
        p: &str,
        node: &Node,
        list: bool,
        recursive: bool,
        sorted: bool,
        now_ms: u64,
        depth: usize,
    ) -> NodeExtern {
        let mut ext = extern_of(p, node, now_ms);
        if node.dir && list && depth < path::MAX_KEY_DEPTH {
            let mut kids: Vec<NodeExtern> = self
                .children(p)
                .into_iter()
                .filter(|(k, _)| !path::is_hidden_name(path::base_name(k)))
                .map(|(k, n)| self.render_at(k, n, recursive, recursive, sorted, now_ms, depth + 1))
                .collect();
            if sorted {
                kids.sort_by(|a, b| a.key.cmp(&b.key));
            }
            if !kids.is_empty() {
                ext.nodes = Some(kids);
            }
        }
        ext
    }

    /// The earliest `(expire_at_ms, path)`, if any node has a TTL.
    pub fn first_expiring(&self) -> Option<(u64, &str)> {
        self.ttl.iter().next().map(|(t, p)| (*t, p.as_str()))
    }

    pub fn take_dirty(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.dirty)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }
}

/// Render one node without children. `prevNode` and event nodes use this directly.
pub(crate) fn extern_of(p: &str, node: &Node, now_ms: u64) -> NodeExtern {
    NodeExtern {
        key: if p == path::ROOT {
            String::new()
        } else {
            p.to_string()
        },
        value: if node.dir {
            None
        } else {
            Some(node.value.clone())
        },
        dir: node.dir,
        expiration: node.expire_at_ms.map(format_rfc3339_ms),
        ttl: node.expire_at_ms.map(|t| ttl_secs(t, now_ms)),
        nodes: None,
        modified_index: node.modified,
        created_index: node.created,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(v: &str, idx: u64) -> Node {
        Node {
            dir: false,
            value: v.into(),
            created: idx,
            modified: idx,
            expire_at_ms: None,
        }
    }

    #[test]
    fn rfc3339_like_go() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00Z");
        // 2026-11-25T10:00:00Z = 1795600800 s.
        assert_eq!(
            format_rfc3339_ms(1_795_600_800_123),
            "2026-11-25T10:00:00.123Z"
        );
        assert_eq!(
            format_rfc3339_ms(1_795_600_800_100),
            "2026-11-25T10:00:00.1Z"
        );
        assert_eq!(format_rfc3339_ms(1_795_600_800_000), "2026-11-25T10:00:00Z");
        assert_eq!(format_rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(
            format_rfc3339_ms(1_709_251_199_999),
            "2024-02-29T23:59:59.999Z"
        );
    }

    #[test]
    fn ttl_rounds_up() {
        assert_eq!(ttl_secs(10_000, 0), 10);
        assert_eq!(ttl_secs(10_001, 0), 11);
        assert_eq!(ttl_secs(10_999, 1), 11);
        assert_eq!(ttl_secs(1000, 1000), 0);
        assert_eq!(ttl_secs(1000, 2500), -1);
    }

    #[test]
    fn children_skip_grandchildren_and_respect_boundaries() {
        let mut t = Tree::default();
        t.create_parents("/a/b/x", 1);
        t.insert("/a/b/x".into(), file("1", 1));
        t.insert("/a/b-c".into(), file("2", 2));
        t.insert("/a/c".into(), file("3", 3));
        t.insert("/ab".into(), file("4", 4));
        let kids: Vec<&str> = t.children("/a").into_iter().map(|(k, _)| k).collect();
        assert_eq!(kids, vec!["/a/b", "/a/b-c", "/a/c"]);
        let root: Vec<&str> = t.children("/").into_iter().map(|(k, _)| k).collect();
        assert_eq!(root, vec!["/a", "/ab"]);
        assert!(t.has_children("/a") && t.has_children("/a/b") && t.has_children("/"));
        assert!(!t.has_children("/a/c") && !t.has_children("/ab") && !t.has_children("/a/b-c"));
        let gone = t.remove_subtree("/a/b");
        assert_eq!(gone, vec!["/a/b".to_string(), "/a/b/x".to_string()]);
        assert!(t.get("/a/b-c").is_some());
    }

    #[test]
    fn lookup_causes() {
        let mut t = Tree::default();
        t.insert("/f".into(), file("v", 1));
        let e = t.lookup("/f/x/y", 5).unwrap_err();
        assert_eq!(
            (e.code, e.cause.as_str(), e.index),
            (ErrorCode::NotDir, "/f", 5)
        );
        let e = t.lookup("/m/x", 5).unwrap_err();
        assert_eq!((e.code, e.cause.as_str()), (ErrorCode::KeyNotFound, "/m"));
        assert!(t.lookup("/", 5).unwrap().dir);
        assert_eq!(
            t.check_parents("/f/z", 5).unwrap_err().code,
            ErrorCode::NotDir
        );
    }

    #[test]
    fn extern_json_shape() {
        let mut n = file("bar", 3);
        n.expire_at_ms = Some(1_795_600_800_123);
        let j = serde_json::to_string(&extern_of("/foo", &n, 1_795_600_795_000)).unwrap();
        assert_eq!(
            j,
            r#"{"key":"/foo","value":"bar","expiration":"2026-11-25T10:00:00.123Z","ttl":6,"modifiedIndex":3,"createdIndex":3}"#
        );
        let t = Tree::default();
        let root = t.render("/", &ROOT_NODE, true, false, false, 0);
        assert_eq!(serde_json::to_string(&root).unwrap(), r#"{"dir":true}"#);
    }
}
