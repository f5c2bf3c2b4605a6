//! The same scripted v2 auth request sequence against a real etcd 3.4 (`--enable-v2`) and a
//! 1-node Deimos: statuses and JSON bodies must be identical (indexes zeroed). Prints `SKIP` and
//! passes when there is no etcd binary (PATH or `ETCD_BIN`).

use std::time::Duration;

use deimos_tests::auth::call;
use deimos_tests::etcd::{etcd_bin, skip, Etcd};
use deimos_tests::script::steps;
use deimos_tests::{Cluster, Http};
use serde_json::Value;

const LEADER: Duration = Duration::from_secs(15);

/// The scripted sequence, one request a line (see `deimos_tests::script`).
const SCRIPT: &str = r#"
GET /v2/auth/enable
GET /v2/auth/users
GET /v2/auth/roles
PUT /v2/auth/enable
POST /v2/auth/enable
PUT /v2/auth/users/root {"user":"root","password":"rpw"}
PUT /v2/auth/users/root {"user":"root","password":"rpw"}
GET /v2/auth/users/root
GET /v2/auth/roles/root
GET /v2/auth/roles/guest
PUT /v2/auth/roles/rfoo {"role":"rfoo","permissions":{"kv":{"read":["/foo/*"],"write":["/foo/*"]}}}
PUT /v2/auth/roles/rfoo {"role":"rfoo","permissions":{"kv":{"read":["/foo/*"]}}}
PUT /v2/auth/roles/rbar {"role":"rbar","permissions":{"kv":{"read":["/bar"]}}}
PUT /v2/auth/roles/rbar {"role":"rbar","grant":{"kv":{"read":["/bar2"],"write":["/bar"]}}}
PUT /v2/auth/roles/rbar {"role":"rbar","grant":{"kv":{"read":["/bar2"]}}}
PUT /v2/auth/roles/rbar {"role":"rbar","revoke":{"kv":{"read":["/bar2"]}}}
PUT /v2/auth/roles/rbar {"role":"rbar","revoke":{"kv":{"read":["/nope"]}}}
PUT /v2/auth/roles/rbar {"role":"rbar","permissions":{"kv":{"read":["/x"]}},"grant":{"kv":{"read":["/y"]}}}
PUT /v2/auth/roles/root {"role":"root","grant":{"kv":{"read":["/y"]}}}
PUT /v2/auth/roles/x {"role":"y"}
PUT /v2/auth/roles/x garbage
PUT /v2/auth/users/alice {"user":"alice","password":"apw","roles":["rfoo"]}
PUT /v2/auth/users/alice {"user":"alice","password":"apw","roles":["rfoo"]}
PUT /v2/auth/users/bob {"user":"bob","password":"bpw"}
PUT /v2/auth/users/bob {"user":"bob","grant":["rbar"]}
PUT /v2/auth/users/bob {"user":"bob","grant":["rbar"]}
PUT /v2/auth/users/bob {"user":"bob","grant":["nosuch"]}
GET /v2/auth/users/bob
PUT /v2/auth/users/bob {"user":"bob","revoke":["nosuch"]}
PUT /v2/auth/users/bob {"user":"bob","revoke":["rfoo"]}
PUT /v2/auth/users/bob {"user":"bob","roles":["a"],"grant":["rfoo"]}
PUT /v2/auth/users/bob {"user":"bob"}
PUT /v2/auth/users/bob {"user":"bob","password":"bpw2"}
PUT /v2/auth/users/carl {"user":"carl"}
PUT /v2/auth/users/dan {"user":"x","password":"p"}
PUT /v2/auth/users/dan garbage
PUT /v2/auth/users/a%20b {"user":"a b","password":"p"}
GET /v2/auth/users/a%2Fb
DELETE /v2/auth/users/a%20b
GET /v2/auth/users/nosuch
DELETE /v2/auth/users/nosuch
DELETE /v2/auth/roles/nosuch
GET /v2/auth/users/a/b
POST /v2/auth/users
GET /v2/auth/users
GET /v2/auth/roles
PUT /v2/auth/enable
GET /v2/auth/enable
PUT /v2/auth/enable
PUT /v2/auth/enable as root:rpw
GET /v2/auth/roles/guest
GET /v2/auth/roles/guest as root:rpw
PUT /v2/keys/foo/a value=1
PUT /v2/keys/foo/a as root:rpw value=1
PUT /v2/keys/foo/a as root:bad value=1
PUT /v2/keys/foo/a as alice:apw value=2
PUT /v2/keys/bar as alice:apw value=2
GET /v2/keys/foo as alice:apw
GET /v2/keys/foo?recursive=true as alice:apw
GET /v2/keys/foo/?recursive=true as alice:apw
GET /v2/keys/ as alice:apw
GET /v2/keys/foo/a as nobody:x
GET /v2/keys/foo/a
GET /v2/keys/bar as bob:bpw2
GET /v2/keys/bar as bob:bpw
PUT /v2/auth/roles/guest as root:rpw {"role":"guest","revoke":{"kv":{"write":["/*"]}}}
PUT /v2/keys/foo/b value=1
GET /v2/keys/foo/a
POST /v2/members {"peerURLs":["http://127.0.0.1:1"]}
DELETE /v2/members/1234 as alice:apw
GET /v2/auth/users as alice:apw
DELETE /v2/auth/enable
DELETE /v2/auth/users/root as root:rpw
DELETE /v2/auth/roles/root as root:rpw
PUT /v2/auth/users/alice as root:rpw {"user":"alice","password":"new"}
GET /v2/keys/foo/a as alice:apw
GET /v2/keys/foo/a as alice:new
DELETE /v2/auth/users/alice as root:rpw
GET /v2/keys/foo/a as alice:new
DELETE /v2/auth/enable as root:rpw
DELETE /v2/auth/enable as root:rpw
DELETE /v2/auth/roles/guest
DELETE /v2/auth/users/root
GET /v2/auth/users
GET /v2/auth/roles
"#;

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
    let script = steps(SCRIPT);
    for s in &script {
        let send = |base: &str| {
            call(
                &http,
                s.method,
                &format!("{base}{}", s.path),
                s.creds,
                s.body,
            )
        };
        let (e, d) = (send(etcd.url()), send(&c.client_url(0)));
        let (eb, db) = (normalise(&e.body), normalise(&d.body));
        if e.status != d.status || eb != db {
            differences.push(format!(
                "{}\n  etcd:   {} {eb}\n  deimos: {} {db}",
                s.line, e.status, d.status
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} steps differ:\n{}",
        differences.len(),
        script.len(),
        differences.join("\n")
    );
}
