//! etcd v2 write/read semantics of the key space, action by action and error by error.

#[path = "keyspace_common.rs"]
mod keyspace_common;

use deimos_store::keyspace::{
    Action, Applied, Command, ErrorCode, Store, MAX_KEY_BYTES, MAX_VALUE_BYTES,
};
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
        del("/", true, true),
        cad("/", Some("x"), None),
    ] {
        fail_code(&mut s, c, ErrorCode::RootReadOnly, "/");
    }
    assert_eq!(ErrorCode::RootReadOnly.http_status(), 403);
    // The root reads as etcd renders it: no key, no indexes.
    assert_eq!(
        json(&s.get("/", false, false, 0).unwrap()),
        r#"{"action":"get","node":{"dir":true}}"#
    );
}

#[test]
fn in_order_keys() {
    let mut s = Store::new();
    let e = ok(&mut s, post("/q", "a"));
    assert_eq!((e.action, e.created), (Action::Create, true));
    assert_eq!(e.node.key, "/q/00000000000000000001");
    ok(&mut s, put("/x", "pad", Opts::default()));
    let mut keys = Vec::new();
    for v in ["b", "c", "d"] {
        keys.push(ok(&mut s, post("/q", v)).node.key);
    }
    assert_eq!(keys[0], "/q/00000000000000000003");
    let listed: Vec<String> = s
        .get("/q", false, true, 0)
        .unwrap()
        .node
        .nodes
        .unwrap()
        .into_iter()
        .map(|n| n.value.unwrap())
        .collect();
    assert_eq!(listed, vec!["a", "b", "c", "d"]);
    // POST to the root works (the new key is not the root).
    assert_eq!(ok(&mut s, post("/", "r")).node.key, "/00000000000000000006");
}

#[test]
fn hidden_keys() {
    let mut s = Store::new();
    ok(&mut s, put("/_hidden", "h", Opts::default()));
    ok(&mut s, put("/_hd/x", "h", Opts::default()));
    ok(&mut s, put("/v/_x", "h", Opts::default()));
    ok(&mut s, put("/v/y", "y", Opts::default()));
    let root = s.get("/", true, true, 0).unwrap();
    let keys: Vec<String> = root
        .node
        .nodes
        .unwrap()
        .into_iter()
        .map(|n| n.key)
        .collect();
    assert_eq!(keys, vec!["/v"]);
    let v = s.get("/v", true, true, 0).unwrap().node.nodes.unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].key, "/v/y");
    assert_eq!(
        s.get("/_hidden", false, false, 0)
            .unwrap()
            .node
            .value
            .as_deref(),
        Some("h")
    );
    assert_eq!(
        s.get("/_hd", true, false, 0).unwrap().node.nodes.unwrap()[0].key,
        "/_hd/x"
    );
}

#[test]
fn listing_recursive_and_sorted() {
    let mut s = Store::new();
    for k in ["/l/c", "/l/a/z", "/l/b", "/l/a/y"] {
        ok(&mut s, put(k, k, Opts::default()));
    }
    let flat = s.get("/l", false, true, 0).unwrap().node.nodes.unwrap();
    let keys: Vec<&str> = flat.iter().map(|n| n.key.as_str()).collect();
    assert_eq!(keys, vec!["/l/a", "/l/b", "/l/c"]);
    assert!(
        flat[0].dir && flat[0].nodes.is_none(),
        "non-recursive: child dirs not expanded"
    );
    let deep = s.get("/l", true, true, 0).unwrap().node.nodes.unwrap();
    let a: Vec<&str> = deep[0]
        .nodes
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.key.as_str())
        .collect();
    assert_eq!(a, vec!["/l/a/y", "/l/a/z"]);
}

#[test]
fn read_errors() {
    let mut s = Store::new();
    ok(&mut s, put("/f", "1", Opts::default()));
    let e = s.get("/m/x/y", false, false, 0).unwrap_err();
    assert_eq!(
        (e.code, e.cause.as_str(), e.index, e.http_status()),
        (ErrorCode::KeyNotFound, "/m", 1, 404)
    );
    assert_eq!(
        json(&e),
        r#"{"errorCode":100,"message":"Key not found","cause":"/m","index":1}"#
    );
    let e = s.get("/f/x", false, false, 0).unwrap_err();
    assert_eq!((e.code, e.cause.as_str()), (ErrorCode::NotDir, "/f"));
}

#[test]
fn limits() {
    let mut s = Store::new();
    let big = "x".repeat(MAX_VALUE_BYTES + 1);
    let e = fail(&mut s, put("/k", &big, Opts::default()));
    assert_eq!(e.code, ErrorCode::InvalidField);
    assert!(e.cause.contains("1048576"));
    assert_eq!(fail(&mut s, post("/q", &big)).code, ErrorCode::InvalidField);
    ok(
        &mut s,
        put("/k", &"x".repeat(MAX_VALUE_BYTES), Opts::default()),
    );
    let long = format!("/{}", "k".repeat(MAX_KEY_BYTES));
    assert_eq!(
        fail(&mut s, put(&long, "v", Opts::default())).code,
        ErrorCode::InvalidField
    );
    assert_eq!(
        fail(&mut s, put("/a\0b", "v", Opts::default())).code,
        ErrorCode::InvalidField
    );
    assert_eq!(
        s.get("/a\0", false, false, 0).unwrap_err().code,
        ErrorCode::InvalidField
    );
    // An in-order key that would exceed the limit is refused too.
    let near = format!("/{}", "k".repeat(MAX_KEY_BYTES - 10));
    assert_eq!(fail(&mut s, post(&near, "v")).code, ErrorCode::InvalidField);
}

#[test]
fn ttl_set_clear_refresh_expire() {
    let mut s = Store::new();
    let now = 1_795_600_800_000; // 2026-11-25T10:00:00Z
    let t = Opts {
        expire_at_ms: Some(now + 5_500),
        now_ms: now,
        ..Opts::default()
    };
    let e = ok(&mut s, put("/t", "v", t.clone()));
    assert_eq!(
        json(&e.node),
        r#"{"key":"/t","value":"v","expiration":"2026-11-25T10:00:05.5Z","ttl":6,"modifiedIndex":1,"createdIndex":1}"#
    );
    assert_eq!(
        s.get("/t", false, false, now + 1_000).unwrap().node.ttl,
        Some(5)
    );
    assert_eq!(s.next_expiration_ms(), Some(now + 5_500));
    // `ttl=` (no expiry in the command) makes it permanent again.
    let e = ok(
        &mut s,
        put(
            "/t",
            "v2",
            Opts {
                now_ms: now,
                ..Opts::default()
            },
        ),
    );
    assert!(e.node.ttl.is_none() && e.node.expiration.is_none());
    assert_eq!(e.prev_node.unwrap().ttl, Some(6));
    assert_eq!(s.next_expiration_ms(), None);
    // Update clears too; CAS can set one.
    ok(&mut s, put("/t", "v3", t.clone()));
    ok(
        &mut s,
        put(
            "/t",
            "v4",
            Opts {
                prev_exist: Some(true),
                ..Opts::default()
            },
        ),
    );
    assert_eq!(s.next_expiration_ms(), None);
    let e = ok(
        &mut s,
        put(
            "/t",
            "v5",
            Opts {
                prev_value: Some("v4".into()),
                ..t.clone()
            },
        ),
    );
    assert_eq!(e.node.ttl, Some(6));

    // Refresh: value kept, TTL renewed, modifiedIndex advances, createdIndex kept.
    let before = s.get("/t", false, false, now).unwrap().node;
    let r = Opts {
        refresh: true,
        prev_exist: Some(true),
        expire_at_ms: Some(now + 60_000),
        now_ms: now,
        ..Opts::default()
    };
    let e = ok(&mut s, put("/t", "", r.clone()));
    assert!(e.refresh);
    assert_eq!(e.action, Action::Update);
    assert_eq!(e.node.value.as_deref(), Some("v5"));
    assert_eq!(e.node.ttl, Some(60));
    assert_eq!(e.node.created_index, before.created_index);
    assert!(e.node.modified_index > before.modified_index);
    // Refresh through a plain set keeps the value as well; refresh of a missing key is 100.
    let e = ok(
        &mut s,
        put(
            "/t",
            "",
            Opts {
                prev_exist: None,
                ..r.clone()
            },
        ),
    );
    assert_eq!(
        (e.action, e.node.value.as_deref()),
        (Action::Set, Some("v5"))
    );
    fail_code(
        &mut s,
        put(
            "/none",
            "",
            Opts {
                prev_exist: None,
                ..r.clone()
            },
        ),
        ErrorCode::KeyNotFound,
        "/none",
    );
    fail_code(&mut s, put("/none", "", r), ErrorCode::KeyNotFound, "/none");

    // Expiry: nothing before the deadline, then one event and one index per node.
    ok(&mut s, put("/dir/a", "1", Opts::default()));
    ok(
        &mut s,
        put(
            "/dir/b",
            "2",
            Opts {
                expire_at_ms: Some(now + 90_000),
                ..Opts::default()
            },
        ),
    );
    ok(
        &mut s,
        put(
            "/dir",
            "",
            Opts {
                dir: true,
                prev_exist: Some(true),
                expire_at_ms: Some(now + 70_000),
                ..Opts::default()
            },
        ),
    );
    let idx = s.index();
    assert_eq!(
        s.apply(&Command::ExpireUpTo {
            now_ms: now + 59_999
        })
        .unwrap(),
        Applied::Expired(vec![])
    );
    assert_eq!(s.index(), idx);
    let ev = s
        .apply(&Command::ExpireUpTo {
            now_ms: now + 100_000,
        })
        .unwrap();
    let ev = ev.events();
    assert_eq!(ev.len(), 2, "/t and /dir; /dir/b goes with its directory");
    assert_eq!((ev[0].action, ev[0].key()), (Action::Expire, "/t"));
    assert_eq!(ev[0].node.modified_index, idx + 1);
    assert_eq!(
        ev[0].prev_node.as_ref().unwrap().value.as_deref(),
        Some("v5")
    );
    assert_eq!((ev[1].key(), ev[1].node.dir), ("/dir", true));
    assert_eq!(s.index(), idx + 2);
    assert!(s.get("/dir/a", false, false, 0).is_err());
    assert_eq!(s.next_expiration_ms(), None);
    assert_eq!(s.stats().expire_count, 2);
}

#[test]
fn expired_key_stays_until_expire_command() {
    let mut s = Store::new();
    ok(
        &mut s,
        put(
            "/t",
            "v",
            Opts {
                expire_at_ms: Some(1_000),
                ..Opts::default()
            },
        ),
    );
    let g = s.get("/t", false, false, 2_500).unwrap();
    assert_eq!(g.node.ttl, Some(-1));
    let e = s.apply(&Command::ExpireUpTo { now_ms: 1_000 }).unwrap();
    assert_eq!(e.events().len(), 1, "expiry is inclusive of now_ms");
    assert_eq!(e.into_event(), None);
}

#[test]
fn index_counts_successes_only_and_stats() {
    let mut s = Store::new();
    ok(&mut s, put("/a", "1", Opts::default()));
    fail(
        &mut s,
        put(
            "/a",
            "1",
            Opts {
                prev_exist: Some(false),
                ..Opts::default()
            },
        ),
    );
    fail(
        &mut s,
        put(
            "/a",
            "1",
            Opts {
                prev_value: Some("9".into()),
                ..Opts::default()
            },
        ),
    );
    ok(
        &mut s,
        put(
            "/a",
            "2",
            Opts {
                prev_value: Some("1".into()),
                ..Opts::default()
            },
        ),
    );
    ok(
        &mut s,
        put(
            "/a",
            "3",
            Opts {
                prev_exist: Some(true),
                ..Opts::default()
            },
        ),
    );
    fail(
        &mut s,
        put(
            "/b",
            "3",
            Opts {
                prev_exist: Some(true),
                ..Opts::default()
            },
        ),
    );
    ok(&mut s, post("/q", "x"));
    fail(&mut s, del("/zz", false, false));
    fail(&mut s, cad("/a", Some("no"), None));
    ok(&mut s, cad("/a", Some("3"), None));
    let _ = s.get("/q", false, false, 0);
    let _ = s.get("/zz", false, false, 0);
    assert_eq!(s.index(), 5);
    let st = s.stats();
    assert_eq!((st.sets_success, st.sets_fail), (1, 0));
    assert_eq!((st.create_success, st.create_fail), (1, 1));
    assert_eq!(
        (st.compare_and_swap_success, st.compare_and_swap_fail),
        (1, 1)
    );
    assert_eq!((st.update_success, st.update_fail), (1, 1));
    assert_eq!((st.delete_success, st.delete_fail), (0, 1));
    assert_eq!(
        (st.compare_and_delete_success, st.compare_and_delete_fail),
        (1, 1)
    );
    assert_eq!((st.gets_success, st.gets_fail), (1, 1));
}

#[test]
fn records_round_trip_and_dirty_tracking() {
    let mut s = Store::new();
    let first = s.take_dirty();
    assert_eq!(first.len(), 1, "a new store writes its meta record once");
    assert_eq!(first[0].0, "\u{0}meta");
    assert!(s.take_dirty().is_empty());
    assert!(Store::from_records(s.records())
        .unwrap()
        .take_dirty()
        .is_empty());
    ok(
        &mut s,
        put(
            "/a/b",
            "1",
            Opts {
                expire_at_ms: Some(77),
                ..Opts::default()
            },
        ),
    );
    let d = s.take_dirty();
    let keys: Vec<&str> = d.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["\u{0}meta", "/a", "/a/b"]);
    assert!(s.take_dirty().is_empty(), "dirty set is drained");
    ok(&mut s, del("/a", true, true));
    let d = s.take_dirty();
    assert_eq!(d.len(), 3);
    assert!(d.iter().skip(1).all(|(_, v)| v.is_none()));
    ok(
        &mut s,
        put(
            "/c",
            "x",
            Opts {
                expire_at_ms: Some(5),
                ..Opts::default()
            },
        ),
    );
    let copy = Store::from_records(s.records()).unwrap();
    assert_eq!(
        copy.records().collect::<Vec<_>>(),
        s.records().collect::<Vec<_>>()
    );
    assert_eq!(copy.index(), 3);
    assert_eq!(copy.next_expiration_ms(), Some(5));
    let bad = vec![(
        "/x/y".to_string(),
        br#"{"value":"v","created":1,"modified":1}"#.to_vec(),
    )];
    assert_eq!(
        Store::from_records(bad).unwrap_err().code,
        ErrorCode::RaftInternal
    );
}
