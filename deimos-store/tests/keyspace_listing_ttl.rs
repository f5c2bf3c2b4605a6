//! Key-space semantics, part two: in-order keys, hidden keys, listings, read errors, limits,
//! TTLs and expiry, index/stats accounting and the persistence records.

#[path = "keyspace_common.rs"]
mod keyspace_common;

use deimos_store::keyspace::{
    Action, Applied, Command, ErrorCode, Store, MAX_KEY_BYTES, MAX_VALUE_BYTES,
};
use keyspace_common::*;

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
    put_expiring(&mut s, "/dir/b", "2", now + 90_000);
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
    put_expiring(&mut s, "/t", "v", 1_000);
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
    put_expiring(&mut s, "/a/b", "1", 77);
    let d = s.take_dirty();
    let keys: Vec<&str> = d.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["\u{0}meta", "/a", "/a/b"]);
    assert!(s.take_dirty().is_empty(), "dirty set is drained");
    ok(&mut s, del("/a", true, true));
    let d = s.take_dirty();
    assert_eq!(d.len(), 3);
    assert!(d.iter().skip(1).all(|(_, v)| v.is_none()));
    put_expiring(&mut s, "/c", "x", 5);
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
