//! Key paths: normalisation, limits, ancestry and hidden components.
//!
//! etcd v2 cleans every key with `path.Clean(path.Join("/", key))`, so `a//b/`, `/a/./b` and
//! `/x/../a/b` all name `/a/b`. We do the same lexical cleaning (`..` never climbs above the root),
//! so two spellings of one key always hit the same node and produce the same record key.
//!
//! Invariants of a normalised path: it starts with `/`; it is `/` or has no trailing `/`; it has no
//! empty, `.` or `..` component; it contains no NUL; it is at most [`MAX_KEY_BYTES`] bytes and
//! [`MAX_KEY_DEPTH`] components deep.
//! Because NUL is refused, a node path can never collide with the reserved meta record key.

use super::error::StoreError;

/// Longest key path accepted, in bytes (before and after cleaning).
pub const MAX_KEY_BYTES: usize = 4096;

/// Deepest key accepted, in path components (`/a/b/c` is 3). etcd sets no limit; Deimos does,
/// because every ancestor of a key is a directory node holding its own path (so a key's memory
/// grows with depth x length) and listings walk the tree level by level: a key 2,048 levels
/// deep made a recursive GET overflow the stack. 64 is far beyond any key layout seen in
/// practice (etcd's own registry paths are under 10 levels).
pub const MAX_KEY_DEPTH: usize = 64;

/// The root directory.
pub const ROOT: &str = "/";

/// Clean `raw` the way etcd does, refusing keys that could never be stored.
/// `index` is only used to stamp the error.
pub fn normalize(raw: &str, index: u64) -> Result<String, StoreError> {
    if raw.len() > MAX_KEY_BYTES {
        return Err(StoreError::invalid_key(
            format!(
                "key is {} bytes; the limit is {MAX_KEY_BYTES} bytes",
                raw.len()
            ),
            index,
        ));
    }
    if raw.contains('\0') {
        return Err(StoreError::invalid_key("key contains a NUL byte", index));
    }
    let mut parts: Vec<&str> = Vec::new();
    for comp in raw.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    if parts.len() > MAX_KEY_DEPTH {
        return Err(StoreError::invalid_key(
            format!(
                "key is {} levels deep; the limit is {MAX_KEY_DEPTH} levels",
                parts.len()
            ),
            index,
        ));
    }
    let mut out = String::with_capacity(raw.len() + 1);
    for p in &parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    if out.len() > MAX_KEY_BYTES {
        return Err(StoreError::invalid_key(
            format!("key is longer than {MAX_KEY_BYTES} bytes"),
            index,
        ));
    }
    Ok(out)
}

/// Join a normalised directory and a single component (no `/` in `name`).
pub fn join(dir: &str, name: &str) -> String {
    if dir == ROOT {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The last component of a normalised path (`""` for the root).
pub fn base_name(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// The parent directory of a normalised path; `None` for the root.
pub fn parent(path: &str) -> Option<&str> {
    if path == ROOT {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some(ROOT),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// Proper ancestors of a normalised path, excluding the root, shallowest first:
/// `/a/b/c` gives `/a`, `/a/b`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.char_indices()
        .filter(|&(i, c)| c == '/' && i > 0)
        .map(move |(i, _)| &path[..i])
}

/// Whether `path` lies strictly below directory `dir` (both normalised). Respects component
/// boundaries: `/foobar` is not below `/foo`.
pub fn is_below(path: &str, dir: &str) -> bool {
    if dir == ROOT {
        return path != ROOT;
    }
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

/// The prefix every descendant of `dir` starts with (`/` for the root, else `dir/`).
pub fn child_prefix(dir: &str) -> String {
    if dir == ROOT {
        ROOT.to_string()
    } else {
        format!("{dir}/")
    }
}

/// Exclusive upper bound of all strings starting with `prefix` (which ends in `/`): the same
/// string with that final `/` replaced by `0`, the next byte. Used for `BTreeMap` range scans.
pub fn prefix_end(prefix: &str) -> String {
    let mut s = prefix[..prefix.len().saturating_sub(1)].to_string();
    s.push('0');
    s
}

/// A component is hidden when it starts with `_`: hidden nodes are left out of directory
/// listings (but can be read directly).
pub fn is_hidden_name(name: &str) -> bool {
    name.starts_with('_')
}

/// Whether `key`, seen from a watcher on ancestor `watch_path`, is hidden: some component of
/// `key` below `watch_path` starts with `_`. etcd uses this to keep hidden keys from waking
/// recursive watchers of their parents; a watcher on the hidden key itself is still notified.
pub fn hidden_below(watch_path: &str, key: &str) -> bool {
    if !is_below(key, watch_path) {
        return false;
    }
    let rest = if watch_path == ROOT {
        key
    } else {
        &key[watch_path.len()..]
    };
    rest.split('/').any(is_hidden_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize(s, 0).unwrap()
    }

    #[test]
    fn cleans_like_go_path_clean() {
        assert_eq!(n(""), "/");
        assert_eq!(n("/"), "/");
        assert_eq!(n("a"), "/a");
        assert_eq!(n("/a//b/"), "/a/b");
        assert_eq!(n("/a/./b/."), "/a/b");
        assert_eq!(n("/x/../a/b"), "/a/b");
        assert_eq!(n("/../.."), "/");
        assert_eq!(n("/a/b/../../.."), "/");
        assert_eq!(n("/ä/ü"), "/ä/ü");
    }

    #[test]
    fn refuses_nul_and_overlong_keys() {
        assert_eq!(
            normalize("/a\0b", 3).unwrap_err().code,
            super::super::error::ErrorCode::InvalidField
        );
        let long = format!("/{}", "x".repeat(MAX_KEY_BYTES));
        let e = normalize(&long, 9).unwrap_err();
        assert_eq!(e.index, 9);
        assert!(e.cause.contains("4096"));
        assert!(normalize(&"x".repeat(MAX_KEY_BYTES - 1), 0).is_ok());
        // 4096 bytes without a leading slash become 4097 after cleaning.
        assert!(normalize(&"x".repeat(MAX_KEY_BYTES), 0).is_err());
    }

    #[test]
    fn refuses_keys_deeper_than_the_limit() {
        let at = |d: usize| "/a".repeat(d);
        assert!(normalize(&at(MAX_KEY_DEPTH), 0).is_ok());
        let e = normalize(&at(MAX_KEY_DEPTH + 1), 4).unwrap_err();
        assert_eq!(e.code, super::super::error::ErrorCode::InvalidField);
        assert!(e.cause.contains("65 levels"), "{}", e.cause);
        // Depth counts after cleaning: `..` takes a level back.
        assert!(normalize(&format!("{}/x/..", at(MAX_KEY_DEPTH)), 0).is_ok());
        assert!(normalize(&at(2048), 0).is_err());
    }

    #[test]
    fn ancestry() {
        assert_eq!(parent("/"), None);
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), vec!["/a", "/a/b"]);
        assert_eq!(ancestors("/a").count(), 0);
        assert!(is_below("/a/b", "/a"));
        assert!(is_below("/a", "/"));
        assert!(!is_below("/", "/"));
        assert!(!is_below("/ab", "/a"));
        assert!(!is_below("/a", "/a"));
        assert_eq!(base_name("/a/bc"), "bc");
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/a", "x"), "/a/x");
        assert_eq!(prefix_end("/a/"), "/a0");
        assert_eq!(prefix_end("/"), "0");
    }

    #[test]
    fn hidden() {
        assert!(is_hidden_name("_x"));
        assert!(!is_hidden_name("x_"));
        assert!(hidden_below("/", "/_a"));
        assert!(hidden_below("/", "/a/_b/c"));
        assert!(hidden_below("/a", "/a/_b"));
        assert!(!hidden_below("/_a", "/_a/b"));
        assert!(!hidden_below("/a", "/a/b_"));
        assert!(!hidden_below("/a/_b", "/a/_b"));
    }
}
