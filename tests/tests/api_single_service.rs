//! What a single-node cluster serves besides keys, and how it holds up, through HTTP against a
//! real `deimos` process: the cluster and status endpoints; bad input (answered with an
//! etcd-style error, the store untouched); clients that stall; a clean stop and restart. The
//! keys API itself is in `api_single.rs`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use deimos_tests::checks::{
    assert_etcd_error, assert_keys_headers, keys_node, single, single_with, store_index,
};
use deimos_tests::{encode_form, Reply};
use serde_json::Value;

const LEADER: Duration = Duration::from_secs(10);

#[test]
fn cluster_and_status_endpoints() {
    let c = single();
    c.wait_members_published(LEADER);
    let h = c.http();
    let base = c.client_url(0);
    for prefix in ["", "/v2"] {
        let r = h.get(&format!("{base}{prefix}/members"));
        assert_eq!(r.status, 200, "{r:?}");
        let m = &r.json()["members"];
        assert_eq!(m.as_array().map(Vec::len), Some(1), "{r:?}");
        assert_eq!(m[0]["name"], "n1");
        assert_eq!(m[0]["peerURLs"][0], c.node(0).peer_url());
        assert!(m[0]["id"]
            .as_str()
            .is_some_and(|id| u64::from_str_radix(id, 16).is_ok()));

        let r = h.get(&format!("{base}{prefix}/machines"));
        assert_eq!((r.status, r.body.trim()), (200, base.as_str()), "{r:?}");

        let r = h.get(&format!("{base}{prefix}/stats/self"));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["state"], "StateLeader");
        assert_eq!(r.json()["name"], "n1");
        assert_eq!(r.json()["leaderInfo"]["leader"], m[0]["id"]);

        let r = h.get(&format!("{base}{prefix}/stats/leader"));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["leader"], m[0]["id"]);

        let r = h.get(&format!("{base}{prefix}/stats/store"));
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.json()["setsSuccess"].is_u64(), "{r:?}");
    }
    // The member id of a single node appears in /raft/status too.
    let r = h.get(&format!("{base}/raft/status"));
    assert_eq!(r.status, 200);
    let s = r.json();
    assert_eq!(s["role"], "leader");
    assert_eq!(s["leader"], s["id"]);
    assert!(s["term"].as_u64().unwrap() >= 1);
    assert!(s["commitIndex"].as_u64().unwrap() >= s["appliedIndex"].as_u64().unwrap());
    assert!(
        s["lease"]["valid"].is_boolean() && s["lease"]["remainingMs"].is_u64(),
        "{s}"
    );

    let r = h.get(&format!("{base}/health"));
    assert_eq!(
        (r.status, r.json()["health"].clone()),
        (200, Value::from("true"))
    );
    let r = h.get(&format!("{base}/version"));
    assert_eq!(r.status, 200);
    assert!(r.json()["etcdserver"].is_string() && r.json()["etcdcluster"].is_string());
    let r = h.get(&format!("{base}/metrics"));
    assert_eq!(r.status, 200);
    for name in [
        "deimos_lease_valid",
        "deimos_server_has_leader",
        "deimos_raft_term",
    ] {
        assert!(r.body.contains(name), "/metrics lacks {name}");
    }

    // Member errors on a single node (adding one would cost it its quorum, see api_cluster).
    let r = h.delete(&format!("{base}/v2/members/00000000000000ab"));
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.json()["message"].is_string());
    // etcd serves no single member: 404 with its JSON body.
    let r = h.get(&format!("{base}/v2/members/00000000000000ab"));
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (404, "Not found".into())
    );
    // Every client answer names the cluster, as etcd's do.
    let cluster = r.header("x-etcd-cluster-id").map(str::to_string);
    assert!(cluster.as_ref().is_some_and(|c| c.len() == 16), "{r:?}");
    let r = h.get(&format!("{base}/v2/keys/"));
    assert_eq!(r.header("x-etcd-cluster-id").map(str::to_string), cluster);
    // etcd answers an id it cannot parse as it answers an unknown one.
    let r = h.delete(&format!("{base}/v2/members/not-hex"));
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (404, "No such member: not-hex".into()),
        "{r:?}"
    );
    let r = h.must(
        "POST",
        &format!("{base}/v2/members"),
        Some(("application/json", b"{not json")),
    );
    assert_eq!(r.status, 400, "{r:?}");
    let r = h.json_body(
        "POST",
        &format!("{base}/v2/members"),
        &serde_json::json!({"peerURLs": ["ftp://x"]}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    let r = h.json_body(
        "POST",
        &format!("{base}/v2/members"),
        &serde_json::json!({"peerURLs": [c.node(0).peer_url()]}),
    );
    assert_eq!(r.status, 409, "{r:?}");
    let r = h.get(&format!("{base}/v2/nothing-here"));
    assert_eq!(r.status, 404);
    assert_eq!(
        h.get(&format!("{base}/v2/members")).json()["members"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

/// Every malformed request gets an etcd-shaped error and does not move the store index.
#[test]
fn bad_input_is_rejected_without_effect() {
    let c = single_with(vec!["--max-request-bytes".into(), "4096".into()]);
    let h = c.http();
    let url = c.keys_url(0, "/bad");
    assert_eq!(h.put_form(&url, &[("value", "orig")]).status, 201);
    let index = store_index(&c, 0);
    let form = "application/x-www-form-urlencoded";

    // (what, the reply, errorCode): every one of them is a 400.
    let put = |body: &str| h.must("PUT", &url, Some((form, body.as_bytes())));
    let get = |query: &str| h.get(&format!("{url}?{query}"));
    let root = c.client_url(0);
    let cases: Vec<(&str, Reply, u64)> = vec![
        ("invalid UTF-8 in a form body", put("value=%ff%fe"), 210),
        (
            "invalid UTF-8 in the query",
            h.must("PUT", &format!("{url}?value=%ff%fe"), None),
            210,
        ),
        ("unknown consistency", get("consistency=eventual"), 209),
        ("ttl not a number", put("value=x&ttl=soon"), 202),
        ("negative ttl", put("value=x&ttl=-1"), 202),
        ("prevIndex not a number", put("value=x&prevIndex=x1"), 203),
        (
            "waitIndex not a number",
            get("wait=true&waitIndex=abc"),
            203,
        ),
        ("bad bool", get("recursive=maybe"), 209),
        ("bad prevExist", put("value=x&prevExist=perhaps"), 209),
        (
            "bad dir flag on delete",
            h.delete(&format!("{url}?dir=yes")),
            209,
        ),
        (
            "refresh without ttl",
            put("refresh=true&prevExist=true"),
            212,
        ),
        (
            "invalid UTF-8 key",
            h.get(&format!("{root}/v2/keys/%ff")),
            209,
        ),
        (
            "invalid UTF-8 key on write",
            h.put_form(&format!("{root}/v2/keys/a%ffb"), &[("value", "x")]),
            209,
        ),
    ];
    for (what, r, code) in &cases {
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert_eq!(r.error_code(), Some(*code), "{what}: {r:?}");
        assert_etcd_error(r, 400, *code);
        assert_eq!(store_index(&c, 0), index, "{what} moved the store index");
    }

    // A body over --max-request-bytes: 413 with an etcd-shaped body.
    let big = encode_form(&[("value", &"x".repeat(8192))]);
    let r = h.must("PUT", &url, Some((form, big.as_bytes())));
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.error_code(), Some(210), "{r:?}");
    assert!(r.json()["message"].is_string(), "{r:?}");
    assert_keys_headers(&r);
    assert_eq!(r.header_u64("X-Etcd-Index"), index);
    assert_eq!(r.json()["index"].as_u64(), Some(index), "{r:?}");
    assert_eq!(
        store_index(&c, 0),
        index,
        "oversized body moved the store index"
    );

    // Unknown method: 405 naming the allowed ones (etcd answers it in plain text too).
    let r = h.must("PATCH", &url, Some((form, b"value=x")));
    assert_eq!(r.status, 405, "{r:?}");
    assert!(
        r.header("allow").is_some_and(|a| a.contains("PUT")),
        "{r:?}"
    );
    assert_keys_headers(&r);
    let r = h.must("BREW", &url, None);
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(store_index(&c, 0), index, "405 moved the store index");

    // The key is untouched and the node still serves.
    let r = h.get(&url);
    assert_eq!(keys_node(&r)["value"], "orig");
    assert_eq!(keys_node(&r)["modifiedIndex"].as_u64(), Some(index));
}

/// A client that sends part of a request and stalls holds only its own connection: others
/// are served meanwhile, and the stalled connection is closed by the server's timeouts.
#[test]
fn slow_clients_do_not_block_others() {
    let c = single();
    let addr = format!("127.0.0.1:{}", c.node(0).client_port);

    // Headers started, never finished.
    let mut headers_only = TcpStream::connect(&addr).unwrap();
    headers_only
        .write_all(b"PUT /v2/keys/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n")
        .unwrap();
    // Headers complete, body promised and never sent in full.
    let mut half_body = TcpStream::connect(&addr).unwrap();
    half_body
        .write_all(b"PUT /v2/keys/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nvalue=")
        .unwrap();
    let started = Instant::now();
    let index = store_index(&c, 0);

    // Other clients are served promptly while both stall.
    for i in 0..20 {
        let t = Instant::now();
        let r = c.set(0, "/fast", &i.to_string());
        assert!(r.status == 200 || r.status == 201, "{r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "write took {:?}",
            t.elapsed()
        );
    }
    assert_eq!(c.get(0, "/fast").json()["node"]["value"], "19");

    // The server closes the header-stalled connection (hyper's header read timeout).
    headers_only
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = headers_only.read_to_end(&mut buf);
    let closed_after = started.elapsed();
    assert!(
        closed_after < Duration::from_secs(25),
        "stalled connection kept {closed_after:?}"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");

    // The body-stalled request is answered with an error once the body timeout passes.
    half_body
        .set_read_timeout(Some(Duration::from_secs(45)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = half_body.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(40));
    // Neither touched the store beyond the fast client's 20 writes.
    assert_etcd_error(&c.get(0, "/slow"), 404, 100);
    assert_eq!(store_index(&c, 0), index + 20);
}

/// `SIGTERM` stops the node promptly and closes its store cleanly: what was applied is written
/// (not left staged in memory), so the restarted node starts from it instead of replaying.
#[test]
fn a_terminated_node_closes_its_store_and_restarts_where_it_stopped() {
    let mut c = single();
    for k in 0..20 {
        let r = c.set(0, &format!("/stop/k{k}"), "v");
        assert_eq!(r.status, 201, "{r:?}");
    }
    let last = store_index(&c, 0);
    // At once: the applied state written by a clean close, not by a later transaction.
    c.terminate(0, Duration::from_secs(10));
    c.restart(0);
    let log = std::fs::read_to_string(c.node(0).log_path()).expect("node log");
    let started = log
        .lines()
        .rev()
        .find(|l| l.contains("node started"))
        .map(str::to_string)
        .expect("a 'node started' line after the restart");
    let applied: u64 = started
        .split_whitespace()
        .find_map(|f| f.strip_prefix("applied="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no applied index in {started:?}"));
    assert!(
        applied >= last,
        "restarted from applied {applied}, but {last} was applied before SIGTERM"
    );
    assert_eq!(c.wait_leader(LEADER), 0);
    assert_eq!(c.get(0, "/stop/k19").status, 200);
}
