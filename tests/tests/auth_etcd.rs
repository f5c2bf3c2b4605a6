//! The same scripted v2 auth request sequence against a real etcd 3.4 (`--enable-v2`) and a
//! 1-node Deimos: statuses and JSON bodies must be identical (indexes zeroed). Prints `SKIP` and
//! passes when there is no etcd binary (PATH or `ETCD_BIN`).

use std::time::Duration;

use deimos_tests::auth::call;
use deimos_tests::etcd::{etcd_bin, skip, Etcd};
use deimos_tests::{Cluster, Http};
use serde_json::Value;

const LEADER: Duration = Duration::from_secs(15);

/// The scripted sequence: (method, path, user:password, body).
const SCRIPT: &[(&str, &str, Option<&str>, Option<&str>)] = &[
    ("GET", "/v2/auth/enable", None, None),
    ("GET", "/v2/auth/users", None, None),
    ("GET", "/v2/auth/roles", None, None),
    ("PUT", "/v2/auth/enable", None, None),
    ("POST", "/v2/auth/enable", None, None),
    (
        "PUT",
        "/v2/auth/users/root",
        None,
        Some(r#"{"user":"root","password":"rpw"}"#),
    ),
    (
        "PUT",
        "/v2/auth/users/root",
        None,
        Some(r#"{"user":"root","password":"rpw"}"#),
    ),
    ("GET", "/v2/auth/users/root", None, None),
    ("GET", "/v2/auth/roles/root", None, None),
    ("GET", "/v2/auth/roles/guest", None, None),
    (
        "PUT",
        "/v2/auth/roles/rfoo",
        None,
        Some(r#"{"role":"rfoo","permissions":{"kv":{"read":["/foo/*"],"write":["/foo/*"]}}}"#),
    ),
    (
        "PUT",
        "/v2/auth/roles/rfoo",
        None,
        Some(r#"{"role":"rfoo","permissions":{"kv":{"read":["/foo/*"]}}}"#),
    ),
    (
        "PUT",
        "/v2/auth/roles/rbar",
        None,
        Some(r#"{"role":"rbar","permissions":{"kv":{"read":["/bar"]}}}"#),
    ),
    (
        "PUT",
        "/v2/auth/roles/rbar",
        None,
        Some(r#"{"role":"rbar","grant":{"kv":{"read":["/bar2"],"write":["/bar"]}}}"#),
    ),
    (
        "PUT",
        "/v2/auth/roles/rbar",
        None,
        Some(r#"{"role":"rbar","grant":{"kv":{"read":["/bar2"]}}}"#),
    ),
    (
        "PUT",
        "/v2/auth/roles/rbar",
        None,
        Some(r#"{"role":"rbar","revoke":{"kv":{"read":["/bar2"]}}}"#),
    ),
    (
        "PUT",
        "/v2/auth/roles/rbar",
        None,
        Some(r#"{"role":"rbar","revoke":{"kv":{"read":["/nope"]}}}"#),
    ),
    (
        "PUT",
        "/v2/auth/roles/rbar",
        None,
        Some(
            r#"{"role":"rbar","permissions":{"kv":{"read":["/x"]}},"grant":{"kv":{"read":["/y"]}}}"#,
        ),
    ),
    (
        "PUT",
        "/v2/auth/roles/root",
        None,
        Some(r#"{"role":"root","grant":{"kv":{"read":["/y"]}}}"#),
    ),
    ("PUT", "/v2/auth/roles/x", None, Some(r#"{"role":"y"}"#)),
    ("PUT", "/v2/auth/roles/x", None, Some("garbage")),
    (
        "PUT",
        "/v2/auth/users/alice",
        None,
        Some(r#"{"user":"alice","password":"apw","roles":["rfoo"]}"#),
    ),
    (
        "PUT",
        "/v2/auth/users/alice",
        None,
        Some(r#"{"user":"alice","password":"apw","roles":["rfoo"]}"#),
    ),
    (
        "PUT",
        "/v2/auth/users/bob",
        None,
        Some(r#"{"user":"bob","password":"bpw"}"#),
    ),
    (
        "PUT",
        "/v2/auth/users/bob",
        None,
        Some(r#"{"user":"bob","grant":["rbar"]}"#),
    ),
    (
        "PUT",
        "/v2/auth/users/bob",
        None,
        Some(r#"{"user":"bob","grant":["rbar"]}"#),
    ),
    (
        "PUT",
        "/v2/auth/users/bob",
        None,
        Some(r#"{"user":"bob","grant":["nosuch"]}"#),
    ),
    ("GET", "/v2/auth/users/bob", None, None),
    (
        "PUT",
        "/v2/auth/users/bob",
        None,
        Some(r#"{"user":"bob","revoke":["nosuch"]}"#),
    ),
    (
        "PUT",
        "/v2/auth/users/bob",
        None,
        Some(r#"{"user":"bob","revoke":["rfoo"]}"#),
    ),
    (
        "PUT",
        "/v2/auth/users/bob",
        None,
        Some(r#"{"user":"bob","roles":["a"],"grant":["rfoo"]}"#),
    ),
    ("PUT", "/v2/auth/users/bob", None, Some(r#"{"user":"bob"}"#)),
    (
        "PUT",
        "/v2/auth/users/bob",
        None,
        Some(r#"{"user":"bob","password":"bpw2"}"#),
    ),
    (
        "PUT",
        "/v2/auth/users/carl",
        None,
        Some(r#"{"user":"carl"}"#),
    ),
    (
        "PUT",
        "/v2/auth/users/dan",
        None,
        Some(r#"{"user":"x","password":"p"}"#),
    ),
    ("PUT", "/v2/auth/users/dan", None, Some("garbage")),
    (
        "PUT",
        "/v2/auth/users/a%20b",
        None,
        Some(r#"{"user":"a b","password":"p"}"#),
    ),
    ("GET", "/v2/auth/users/a%2Fb", None, None),
    ("DELETE", "/v2/auth/users/a%20b", None, None),
    ("GET", "/v2/auth/users/nosuch", None, None),
    ("DELETE", "/v2/auth/users/nosuch", None, None),
    ("DELETE", "/v2/auth/roles/nosuch", None, None),
    ("GET", "/v2/auth/users/a/b", None, None),
    ("POST", "/v2/auth/users", None, None),
    ("GET", "/v2/auth/users", None, None),
    ("GET", "/v2/auth/roles", None, None),
    ("PUT", "/v2/auth/enable", None, None),
    ("GET", "/v2/auth/enable", None, None),
    ("PUT", "/v2/auth/enable", None, None),
    ("PUT", "/v2/auth/enable", Some("root:rpw"), None),
    ("GET", "/v2/auth/roles/guest", None, None),
    ("GET", "/v2/auth/roles/guest", Some("root:rpw"), None),
    ("PUT", "/v2/keys/foo/a", None, Some("value=1")),
    ("PUT", "/v2/keys/foo/a", Some("root:rpw"), Some("value=1")),
    ("PUT", "/v2/keys/foo/a", Some("root:bad"), Some("value=1")),
    ("PUT", "/v2/keys/foo/a", Some("alice:apw"), Some("value=2")),
    ("PUT", "/v2/keys/bar", Some("alice:apw"), Some("value=2")),
    ("GET", "/v2/keys/foo", Some("alice:apw"), None),
    (
        "GET",
        "/v2/keys/foo?recursive=true",
        Some("alice:apw"),
        None,
    ),
    (
        "GET",
        "/v2/keys/foo/?recursive=true",
        Some("alice:apw"),
        None,
    ),
    ("GET", "/v2/keys/", Some("alice:apw"), None),
    ("GET", "/v2/keys/foo/a", Some("nobody:x"), None),
    ("GET", "/v2/keys/foo/a", None, None),
    ("GET", "/v2/keys/bar", Some("bob:bpw2"), None),
    ("GET", "/v2/keys/bar", Some("bob:bpw"), None),
    (
        "PUT",
        "/v2/auth/roles/guest",
        Some("root:rpw"),
        Some(r#"{"role":"guest","revoke":{"kv":{"write":["/*"]}}}"#),
    ),
    ("PUT", "/v2/keys/foo/b", None, Some("value=1")),
    ("GET", "/v2/keys/foo/a", None, None),
    (
        "POST",
        "/v2/members",
        None,
        Some(r#"{"peerURLs":["http://127.0.0.1:1"]}"#),
    ),
    ("DELETE", "/v2/members/1234", Some("alice:apw"), None),
    ("GET", "/v2/auth/users", Some("alice:apw"), None),
    ("DELETE", "/v2/auth/enable", None, None),
    ("DELETE", "/v2/auth/users/root", Some("root:rpw"), None),
    ("DELETE", "/v2/auth/roles/root", Some("root:rpw"), None),
    (
        "PUT",
        "/v2/auth/users/alice",
        Some("root:rpw"),
        Some(r#"{"user":"alice","password":"new"}"#),
    ),
    ("GET", "/v2/keys/foo/a", Some("alice:apw"), None),
    ("GET", "/v2/keys/foo/a", Some("alice:new"), None),
    ("DELETE", "/v2/auth/users/alice", Some("root:rpw"), None),
    ("GET", "/v2/keys/foo/a", Some("alice:new"), None),
    ("DELETE", "/v2/auth/enable", Some("root:rpw"), None),
    ("DELETE", "/v2/auth/enable", Some("root:rpw"), None),
    ("DELETE", "/v2/auth/roles/guest", None, None),
    ("DELETE", "/v2/auth/users/root", None, None),
    ("GET", "/v2/auth/users", None, None),
    ("GET", "/v2/auth/roles", None, None),
];

/// Indexes differ between servers by construction: zero them.
fn normalise(body: &str) -> String {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if matches!(k.as_str(), "index" | "modifiedIndex" | "createdIndex") {
                        *x = Value::from(0);
                    } else {
                        walk(x);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    match serde_json::from_str::<Value>(body) {
        Ok(mut v) => {
            walk(&mut v);
            v.to_string()
        }
        Err(_) => body.trim().to_string(),
    }
}

#[test]
fn auth_answers_as_etcd_does_side_by_side() {
    if etcd_bin().is_none() {
        skip("auth_answers_as_etcd_does_side_by_side: no etcd 3.4 on PATH (or ETCD_BIN)");
        return;
    }
    let etcd = Etcd::start_temp();
    let c = Cluster::start(1);
    c.wait_leader(LEADER);
    let http = Http::new();
    let mut differences = Vec::new();
    for (method, path, creds, body) in SCRIPT {
        let e = call(&http, method, &format!("{}{path}", etcd.url()), *creds, *body);
        let d = call(
            &http,
            method,
            &format!("{}{path}", c.client_url(0)),
            *creds,
            *body,
        );
        let (eb, db) = (normalise(&e.body), normalise(&d.body));
        if e.status != d.status || eb != db {
            differences.push(format!(
                "{method} {path} {creds:?} {body:?}\n  etcd:   {} {eb}\n  deimos: {} {db}",
                e.status, d.status
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} steps differ:\n{}",
        differences.len(),
        SCRIPT.len(),
        differences.join("\n")
    );
}
