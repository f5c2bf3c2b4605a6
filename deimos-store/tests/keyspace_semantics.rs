//! etcd v2 write semantics of the key space, action by action and error by error
//! (part two is keyspace_listing_ttl.rs).

#[path = "keyspace_common.rs"]
mod keyspace_common;

use deimos_store::keyspace::{Action, ErrorCode, Store};
use keyspace_common::*;

#[test]
fn set_creates_then_replaces_with_prev_node() {
    let mut s = Store::new();
    let e = ok(&mut s, put("/foo", "bar", Opts::default()));
    assert_eq!(e.action, Action::Set);
    assert!(e.created);
    assert_eq!(e.index, 1);
    assert_eq!(
        json(&e),
        r#"{"action":"set","node":{"key":"/foo","value":"bar","modifiedIndex":1,"createdIndex":1}}"#
    );
    let e = ok(&mut s, put("foo/", "baz", Opts::default()));
    assert!(!e.created);
    assert_eq!(
        json(&e),
        r#"{"action":"set","node":{"key":"/foo","value":"baz","modifiedIndex":2,"createdIndex":2},"prevNode":{"key":"/foo","value":"bar","modifiedIndex":1,"createdIndex":1}}"#
    );
    assert_eq!(s.index(), 2);
    let g = s.get("/foo", false, false, 0).unwrap();
    assert_eq!(g.action, Action::Get);
    assert_eq!(g.node.value.as_deref(), Some("baz"));
    assert_eq!(g.index, 2);
}

#[test]
fn set_over_dir_and_under_file() {
    let mut s = Store::new();
    ok(&mut s, put("/d/x", "1", Opts::default()));
    fail_code(
        &mut s,
        put("/d", "v", Opts::default()),
        ErrorCode::NotFile,
        "/d",
    );
    let dir = Opts {
        dir: true,
        ..Opts::default()
    };
    fail_code(&mut s, put("/d", "", dir.clone()), ErrorCode::NotFile, "/d");
    fail_code(
        &mut s,
        put("/d/x/y", "v", Opts::default()),
        ErrorCode::NotDir,
        "/d/x",
    );
    fail_code(&mut s, post("/d/x", "v"), ErrorCode::NotDir, "/d/x");
    // A file can be replaced by a directory.
    let e = ok(&mut s, put("/d/x", "", dir));
    assert!(e.node.dir && e.node.value.is_none());
    assert_eq!(e.prev_node.unwrap().value.as_deref(), Some("1"));
}

#[test]
fn dir_creation_and_implicit_parents() {
    let mut s = Store::new();
    let e = ok(
        &mut s,
        put(
            "/a",
            "",
            Opts {
                dir: true,
                ..Opts::default()
            },
        ),
    );
    assert_eq!(
        json(&e),
        r#"{"action":"set","node":{"key":"/a","dir":true,"modifiedIndex":1,"createdIndex":1}}"#
    );
    ok(&mut s, put("/x/y/z", "v", Opts::default()));
    let g = s.get("/x", true, true, 0).unwrap();
    assert_eq!(
        json(&g),
        r#"{"action":"get","node":{"key":"/x","dir":true,"nodes":[{"key":"/x/y","dir":true,"nodes":[{"key":"/x/y/z","value":"v","modifiedIndex":2,"createdIndex":2}],"modifiedIndex":2,"createdIndex":2}],"modifiedIndex":2,"createdIndex":2}}"#
    );
    // An empty directory has no "nodes" (etcd's omitempty).
    assert_eq!(
        json(&s.get("/a", false, false, 0).unwrap().node),
        r#"{"key":"/a","dir":true,"modifiedIndex":1,"createdIndex":1}"#
    );
}

#[test]
fn create_only() {
    let mut s = Store::new();
    let c = Opts {
        prev_exist: Some(false),
        ..Opts::default()
    };
    let e = ok(&mut s, put("/k", "1", c.clone()));
    assert_eq!((e.action, e.created), (Action::Create, true));
    fail_code(
        &mut s,
        put("/k", "2", c.clone()),
        ErrorCode::NodeExist,
        "/k",
    );
    ok(&mut s, put("/d/e", "1", Opts::default()));
    fail_code(&mut s, put("/d", "", c.clone()), ErrorCode::NodeExist, "/d");
    fail_code(&mut s, put("/k/x", "", c), ErrorCode::NotDir, "/k");
    assert_eq!(ErrorCode::NodeExist.http_status(), 412);
}

#[test]
fn update_only() {
    let mut s = Store::new();
    let u = Opts {
        prev_exist: Some(true),
        ..Opts::default()
    };
    fail_code(
        &mut s,
        put("/k", "1", u.clone()),
        ErrorCode::KeyNotFound,
        "/k",
    );
    ok(&mut s, put("/k", "1", Opts::default()));
    ok(&mut s, put("/other", "x", Opts::default()));
    let e = ok(&mut s, put("/k", "2", u.clone()));
    assert_eq!((e.action, e.created), (Action::Update, false));
    assert_eq!((e.node.created_index, e.node.modified_index), (1, 3));
    assert_eq!(e.prev_node.as_ref().unwrap().value.as_deref(), Some("1"));
    // A directory can be updated only without a value (TTL change).
    ok(&mut s, put("/d/f", "1", Opts::default()));
    fail_code(&mut s, put("/d", "v", u.clone()), ErrorCode::NotFile, "/d");
    let e = ok(
        &mut s,
        put(
            "/d",
            "",
            Opts {
                expire_at_ms: Some(10_000),
                ..u
            },
        ),
    );
    assert!(e.node.dir);
    assert_eq!(e.node.ttl, Some(10));
    assert_eq!(s.next_expiration_ms(), Some(10_000));
}

#[test]
fn compare_and_swap_and_causes() {
    let mut s = Store::new();
    for i in 0..4 {
        ok(&mut s, put("/pad", &i.to_string(), Opts::default()));
    }
    ok(&mut s, put("/k", "y", Opts::default())); // modifiedIndex 5
    let pv = |v: &str| Opts {
        prev_value: Some(v.into()),
        ..Opts::default()
    };
    let pi = |i: u64| Opts {
        prev_index: Some(i),
        ..Opts::default()
    };
    fail_code(
        &mut s,
        put("/k", "z", pv("x")),
        ErrorCode::TestFailed,
        "[x != y]",
    );
    fail_code(
        &mut s,
        put("/k", "z", pi(1)),
        ErrorCode::TestFailed,
        "[1 != 5]",
    );
    let both = Opts {
        prev_value: Some("x".into()),
        prev_index: Some(1),
        ..Opts::default()
    };
    fail_code(
        &mut s,
        put("/k", "z", both),
        ErrorCode::TestFailed,
        "[x != y] [1 != 5]",
    );
    // One condition holding is not enough.
    let half = Opts {
        prev_value: Some("y".into()),
        prev_index: Some(1),
        ..Opts::default()
    };
    fail_code(
        &mut s,
        put("/k", "z", half),
        ErrorCode::TestFailed,
        "[1 != 5]",
    );
    fail_code(
        &mut s,
        put("/nope", "z", pv("x")),
        ErrorCode::KeyNotFound,
        "/nope",
    );
    ok(&mut s, put("/d/f", "1", Opts::default()));
    fail_code(&mut s, put("/d", "z", pv("x")), ErrorCode::NotFile, "/d");
    let e = ok(&mut s, put("/k", "z", pv("y")));
    assert_eq!(e.action, Action::CompareAndSwap);
    assert_eq!((e.node.created_index, e.node.modified_index), (5, 7));
    let e = ok(&mut s, put("/k", "w", pi(7)));
    assert_eq!(e.action, Action::CompareAndSwap);
    // prevExist=true with a condition is still a CAS.
    let e = ok(
        &mut s,
        put(
            "/k",
            "v",
            Opts {
                prev_exist: Some(true),
                prev_value: Some("w".into()),
                ..Opts::default()
            },
        ),
    );
    assert_eq!(e.action, Action::CompareAndSwap);
    // prevIndex=0 is "no condition": a plain set.
    assert_eq!(ok(&mut s, put("/k", "u", pi(0))).action, Action::Set);
    fail_code(
        &mut s,
        put("/k", "z", pv("")),
        ErrorCode::PrevValueRequired,
        "prevValue must be non-empty",
    );
}

#[test]
fn delete_rules() {
    let mut s = Store::new();
    fail_code(
        &mut s,
        del("/nope", false, false),
        ErrorCode::KeyNotFound,
        "/nope",
    );
    ok(&mut s, put("/d/sub/f", "1", Opts::default()));
    ok(
        &mut s,
        put(
            "/e/",
            "",
            Opts {
                dir: true,
                ..Opts::default()
            },
        ),
    );
    fail_code(&mut s, del("/d", false, false), ErrorCode::NotFile, "/d");
    fail_code(&mut s, del("/d", true, false), ErrorCode::DirNotEmpty, "/d");
    assert_eq!(ErrorCode::DirNotEmpty.http_status(), 403);
    let e = ok(&mut s, del("/e", true, false));
    assert_eq!(
        json(&e),
        r#"{"action":"delete","node":{"key":"/e","dir":true,"modifiedIndex":3,"createdIndex":2},"prevNode":{"key":"/e","dir":true,"modifiedIndex":2,"createdIndex":2}}"#
    );
    let e = ok(&mut s, del("/d/sub/f", false, false));
    assert_eq!(
        json(&e),
        r#"{"action":"delete","node":{"key":"/d/sub/f","modifiedIndex":4,"createdIndex":1},"prevNode":{"key":"/d/sub/f","value":"1","modifiedIndex":1,"createdIndex":1}}"#
    );
    ok(&mut s, put("/d/sub/g", "1", Opts::default()));
    // recursive implies dir.
    let e = ok(&mut s, del("/d", false, true));
    assert_eq!(e.action, Action::Delete);
    assert!(e.node.dir);
    assert_eq!(
        s.get("/d/sub/g", false, false, 0).unwrap_err().code,
        ErrorCode::KeyNotFound
    );
    assert!(s.is_empty());
    // Hidden children count: a directory holding only `_x` is not empty.
    ok(&mut s, put("/hd/_x", "1", Opts::default()));
    fail_code(
        &mut s,
        del("/hd", true, false),
        ErrorCode::DirNotEmpty,
        "/hd",
    );
    ok(&mut s, del("/hd", true, true));
    // A file is deleted even when dir=true is given.
    ok(&mut s, put("/f", "1", Opts::default()));
    ok(&mut s, del("/f", true, false));
}

#[test]
fn compare_and_delete() {
    let mut s = Store::new();
    ok(&mut s, put("/k", "y", Opts::default()));
    fail_code(
        &mut s,
        cad("/k", Some("x"), None),
        ErrorCode::TestFailed,
        "[x != y]",
    );
    fail_code(
        &mut s,
        cad("/k", None, Some(9)),
        ErrorCode::TestFailed,
        "[9 != 1]",
    );
    fail_code(
        &mut s,
        cad("/k", Some("x"), Some(9)),
        ErrorCode::TestFailed,
        "[x != y] [9 != 1]",
    );
    fail_code(
        &mut s,
        cad("/k", Some(""), None),
        ErrorCode::PrevValueRequired,
        "prevValue must be non-empty",
    );
    fail_code(
        &mut s,
        cad("/none", Some("x"), None),
        ErrorCode::KeyNotFound,
        "/none",
    );
    ok(&mut s, put("/d/f", "1", Opts::default()));
    fail_code(&mut s, cad("/d", Some("x"), None), ErrorCode::NotFile, "/d");
    let e = ok(&mut s, cad("/k", Some("y"), Some(1)));
    assert_eq!(e.action, Action::CompareAndDelete);
    assert_eq!(e.prev_node.unwrap().value.as_deref(), Some("y"));
    assert!(s.get("/k", false, false, 0).is_err());
}

#[test]
fn root_is_read_only() {
    let mut s = Store::new();
    for c in [
        put("/", "v", Opts::default()),
        put(
            "",
            "",
            Opts {
                dir: true,
                ..Opts::default()
            },
        ),
        put(
            "/a/..",
            "v",
            Opts {
                prev_exist: Some(true),
                ..Opts::default()
            },
        ),
        put(
            "/",
            "v",
            Opts {
                prev_value: Some("x".into()),
                ..Opts::default()
            },
        ),
        put(
            "/",
            "v",
            Opts {
                prev_exist: Some(false),
                ..Opts::default()
            },
        ),
        del("/", true, true),
    ] {
        fail_code(&mut s, c, ErrorCode::RootReadOnly, "/");
    }
    assert_eq!(ErrorCode::RootReadOnly.http_status(), 400);
    // etcd's compare-and-delete has no read-only check: the root is a directory, so 102.
    fail_code(&mut s, cad("/", Some("x"), None), ErrorCode::NotFile, "/");
    // The root reads as etcd renders it: no key, no indexes.
    assert_eq!(
        json(&s.get("/", false, false, 0).unwrap()),
        r#"{"action":"get","node":{"dir":true}}"#
    );
}
