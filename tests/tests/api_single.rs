//! The client API of a single-node cluster, through HTTP against a real `deimos` process: every
//! keys operation and error of the etcd v2 API, watches, read modes, the cluster and status
//! endpoints, and bad input (which must be answered with an etcd-style error and leave the store
//! untouched).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use deimos_tests::checks::{assert_etcd_error, assert_keys_headers, store_index, wait_watchers};
use deimos_tests::{encode_form, Cluster, ClusterOptions, Http, Reply};
use serde_json::Value;

const LEADER: Duration = Duration::from_secs(10);

/// A one-node cluster whose node has been elected (a lone node campaigns at once).
fn single() -> Cluster {
    single_with(Vec::new())
}

fn single_with(args: Vec<String>) -> Cluster {
    let c = Cluster::start_with(
        1,
        ClusterOptions {
            extra_args: args,
            ..ClusterOptions::default()
        },
    );
    assert_eq!(c.wait_leader(LEADER), 0);
    c
}

fn node(r: &Reply) -> Value {
    r.json()["node"].clone()
}

#[test]
fn set_create_update_and_compare_and_swap() {
    let c = single();
    let h = c.http();
    let url = c.keys_url(0, "/k");

    // set: 201 on creation, 200 with prevNode on replacement.
    let r = h.put_form(&url, &[("value", "v1")]);
    assert_eq!(r.status, 201, "{r:?}");
    assert_keys_headers(&r);
    assert_eq!(r.json()["action"], "set");
    assert_eq!(node(&r)["value"], "v1");
    let created = node(&r)["createdIndex"].as_u64().unwrap();
    assert_eq!(node(&r)["modifiedIndex"].as_u64(), Some(created));
    assert_eq!(r.header_u64("X-Etcd-Index"), created);
    assert!(r.json().get("prevNode").is_none());

    // The same write with the form in the query string instead of the body.
    let r = h.must("PUT", &format!("{url}?value=v2"), None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["prevNode"]["value"], "v1");
    assert_eq!(node(&r)["value"], "v2");
    // As in etcd, `set` replaces the node: a new createdIndex equal to its modifiedIndex.
    let v2_index = node(&r)["modifiedIndex"].as_u64().unwrap();
    assert!(v2_index > created);
    assert_eq!(node(&r)["createdIndex"].as_u64(), Some(v2_index));

    // GET through both prefixes.
    for u in [url.clone(), format!("{}/keys/k", c.client_url(0))] {
        let r = h.get(&u);
        assert_eq!(r.status, 200, "{r:?}");
        assert_keys_headers(&r);
        assert_eq!(r.json()["action"], "get");
        assert_eq!(node(&r)["value"], "v2");
    }
    // HEAD: the status and headers of a GET, no body.
    let r = h.must("HEAD", &url, None);
    assert_eq!((r.status, r.body.as_str()), (200, ""), "{r:?}");
    assert_keys_headers(&r);
    let r = h.must("HEAD", &c.keys_url(0, "/nope"), None);
    assert_eq!(r.status, 404, "{r:?}");

    // create (prevExist=false): 201, then 105 on an existing key.
    let r = h.put_form(
        &c.keys_url(0, "/new"),
        &[("value", "n"), ("prevExist", "false")],
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["action"], "create");
    let r = h.put_form(&url, &[("value", "x"), ("prevExist", "false")]);
    assert_etcd_error(&r, 412, 105);
    assert_eq!(r.json()["cause"], "/k");

    // update (prevExist=true): 200, then 100 on a missing key.
    let r = h.put_form(&url, &[("value", "v3"), ("prevExist", "true")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["action"], "update");
    assert_eq!(r.json()["prevNode"]["value"], "v2");
    // `update` keeps the node: same createdIndex.
    assert_eq!(node(&r)["createdIndex"].as_u64(), Some(v2_index));
    let v3_index = node(&r)["modifiedIndex"].as_u64().unwrap();
    let r = h.put_form(
        &c.keys_url(0, "/missing"),
        &[("value", "x"), ("prevExist", "true")],
    );
    assert_etcd_error(&r, 404, 100);

    // compare-and-swap by value and by index; failures name given and actual.
    let r = h.put_form(&url, &[("value", "v4"), ("prevValue", "nope")]);
    assert_etcd_error(&r, 412, 101);
    assert_eq!(r.json()["cause"], "[nope != v3]");
    let r = h.put_form(&url, &[("value", "v4"), ("prevIndex", "1")]);
    assert_etcd_error(&r, 412, 101);
    assert_eq!(r.json()["cause"], format!("[1 != {v3_index}]"));
    let r = h.put_form(&url, &[("value", "v4"), ("prevValue", "v3")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["action"], "compareAndSwap");
    let v4_index = node(&r)["modifiedIndex"].as_u64().unwrap();
    let r = h.put_form(
        &url,
        &[("value", "v5"), ("prevIndex", &v4_index.to_string())],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["action"], "compareAndSwap");
    assert_eq!(r.json()["prevNode"]["value"], "v4");
    let r = h.put_form(
        &c.keys_url(0, "/missing"),
        &[("value", "x"), ("prevValue", "a")],
    );
    assert_etcd_error(&r, 404, 100);
    let r = h.put_form(&url, &[("value", "x"), ("prevValue", "")]);
    assert_etcd_error(&r, 400, 201);

    // compare-and-delete, then plain delete and 100.
    let r = h.delete(&format!("{url}?prevValue=wrong"));
    assert_etcd_error(&r, 412, 101);
    let r = h.delete(&format!("{url}?prevValue=v5"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_keys_headers(&r);
    assert_eq!(r.json()["action"], "compareAndDelete");
    let r = h.get(&url);
    assert_etcd_error(&r, 404, 100);
    let r = h.delete(&c.keys_url(0, "/new"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["action"], "delete");
    assert_eq!(r.json()["prevNode"]["value"], "n");
    let r = h.delete(&c.keys_url(0, "/new"));
    assert_etcd_error(&r, 404, 100);

    // DELETE with the condition in a form body (as some clients send it).
    h.put_form(&url, &[("value", "b")]);
    let r = h.form("DELETE", &url, &[("prevValue", "b")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["action"], "compareAndDelete");

    // The root is read-only.
    let r = h.put_form(&c.keys_url(0, "/"), &[("value", "x")]);
    assert_etcd_error(&r, 400, 107);
    let r = h.delete(&c.keys_url(0, "/?recursive=true&dir=true"));
    assert_etcd_error(&r, 400, 107);
    assert_keys_headers(&r);
}

#[test]
fn directories_in_order_keys_hidden_and_sorted_listing() {
    let c = single();
    let h = c.http();
    let d = c.keys_url(0, "/dir");

    let r = h.put_form(&d, &[("dir", "true")]);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["action"], "set");
    assert_eq!(node(&r)["dir"], true);
    assert!(node(&r).get("value").is_none(), "a dir has no value: {r:?}");
    // Creating it again with prevExist=false: 105; writing a value onto it: 102.
    let r = h.put_form(&d, &[("dir", "true"), ("prevExist", "false")]);
    assert_etcd_error(&r, 412, 105);
    let r = h.put_form(&d, &[("value", "x")]);
    assert_etcd_error(&r, 403, 102);
    // A value sent with dir=true is ignored, as etcd does.
    let r = h.put_form(&c.keys_url(0, "/dir2"), &[("dir", "true"), ("value", "x")]);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(node(&r)["dir"], true);
    assert!(node(&r).get("value").is_none(), "a dir has no value: {r:?}");

    for (k, v) in [
        ("/dir/b", "2"),
        ("/dir/a", "1"),
        ("/dir/sub/c", "3"),
        ("/dir/_hidden", "h"),
    ] {
        let r = h.put_form(&c.keys_url(0, k), &[("value", v)]);
        assert_eq!(r.status, 201, "{k}: {r:?}");
    }
    // A key below a file: 104.
    let r = h.put_form(&c.keys_url(0, "/dir/a/x"), &[("value", "x")]);
    assert_etcd_error(&r, 400, 104);

    // Sorted, non-recursive listing: hidden key left out, sub-dir listed without children.
    let r = h.get(&format!("{d}?sorted=true"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_keys_headers(&r);
    let keys: Vec<String> = node(&r)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["/dir/a", "/dir/b", "/dir/sub"]);
    assert!(node(&r)["nodes"][2].get("nodes").is_none());
    // Recursive: the sub-dir's children too.
    let r = h.get(&format!("{d}?recursive=true&sorted=true"));
    assert_eq!(node(&r)["nodes"][2]["nodes"][0]["key"], "/dir/sub/c");
    // A hidden key can be read by name.
    let r = h.get(&c.keys_url(0, "/dir/_hidden"));
    assert_eq!(node(&r)["value"], "h");

    // Deleting a dir needs dir=true (102), an empty one or recursive=true (108).
    let r = h.delete(&d);
    assert_etcd_error(&r, 403, 102);
    let r = h.delete(&format!("{d}?dir=true"));
    assert_etcd_error(&r, 403, 108);
    let r = h.put_form(&c.keys_url(0, "/empty"), &[("dir", "true")]);
    assert_eq!(r.status, 201);
    let r = h.delete(&c.keys_url(0, "/empty?dir=true"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["action"], "delete");
    let r = h.delete(&format!("{d}?recursive=true"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(node(&r)["dir"], true);
    assert_etcd_error(&h.get(&c.keys_url(0, "/dir/a")), 404, 100);

    // In-order keys: 20-digit zero-padded names that sort in creation order.
    let q = c.keys_url(0, "/queue");
    let mut created = Vec::new();
    for v in ["first", "second", "third"] {
        let r = h.post_form(&q, &[("value", v)]);
        assert_eq!(r.status, 201, "{r:?}");
        assert_keys_headers(&r);
        assert_eq!(r.json()["action"], "create");
        let key = node(&r)["key"].as_str().unwrap().to_string();
        let name = key.strip_prefix("/queue/").unwrap();
        assert_eq!(name.len(), 20, "{key}");
        assert!(name.bytes().all(|b| b.is_ascii_digit()), "{key}");
        assert_eq!(
            name.parse::<u64>().unwrap(),
            node(&r)["createdIndex"].as_u64().unwrap()
        );
        created.push(key);
    }
    let r = h.get(&format!("{q}?sorted=true"));
    let listed: Vec<String> = node(&r)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, created);
    assert_eq!(node(&r)["nodes"][0]["value"], "first");
    // POST with the value in the query string.
    let r = h.must("POST", &format!("{q}?value=fourth"), None);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(node(&r)["value"], "fourth");
}

/// Waits for a watch started in a thread; the handle yields the reply.
fn watch_in_thread(http: &Http, url: String) -> thread::JoinHandle<Reply> {
    let h = http.clone();
    thread::spawn(move || {
        h.request("GET", &url, None, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

#[test]
fn ttl_expiry_refresh_and_clearing() {
    let c = single();
    let h = c.http();
    let url = c.keys_url(0, "/ttl");

    // A TTL shows as `ttl` and an RFC 3339 `expiration`.
    let r = h.put_form(&url, &[("value", "v"), ("ttl", "100")]);
    assert_eq!(r.status, 201, "{r:?}");
    let n = node(&r);
    assert!((99..=100).contains(&n["ttl"].as_u64().unwrap()), "{r:?}");
    let exp = n["expiration"].as_str().unwrap();
    assert!(exp.ends_with('Z') && exp.contains('T'), "{exp}");

    // `ttl=` clears it.
    let r = h.put_form(&url, &[("value", "v2"), ("ttl", "")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        node(&r).get("ttl").is_none() && node(&r).get("expiration").is_none(),
        "{r:?}"
    );

    // refresh: renews the TTL without changing the value and without a watch event.
    let r = h.put_form(&url, &[("value", "v3"), ("ttl", "50")]);
    assert_eq!(r.status, 200);
    let r = h.put_form(
        &url,
        &[("refresh", "true"), ("prevExist", "true"), ("ttl", "200")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(node(&r)["value"], "v3");
    assert!(node(&r)["ttl"].as_u64().unwrap() > 150, "{r:?}");
    let refresh_index = node(&r)["modifiedIndex"].as_u64().unwrap();
    let r = h.put_form(&url, &[("refresh", "true"), ("ttl", "10"), ("value", "x")]);
    assert_etcd_error(&r, 400, 211);
    let r = h.put_form(&url, &[("refresh", "true"), ("prevExist", "true")]);
    assert_etcd_error(&r, 400, 212);
    // A watch from the refresh's index skips it and sees the next real change.
    let w = watch_in_thread(h, format!("{url}?wait=true&waitIndex={refresh_index}"));
    let r = h.put_form(&url, &[("value", "after-refresh")]);
    let after = node(&r)["modifiedIndex"].as_u64().unwrap();
    let ev = w.join().unwrap();
    assert_eq!(ev.status, 200, "{ev:?}");
    assert_eq!(ev.json()["action"], "set", "{ev:?}");
    assert_eq!(node(&ev)["modifiedIndex"].as_u64(), Some(after));

    // Expiry: gone after ~ttl, and a watcher sees `expire`.
    let e = c.keys_url(0, "/short");
    let r = h.put_form(&e, &[("value", "x"), ("ttl", "1")]);
    assert_eq!(r.status, 201);
    let set_at = Instant::now();
    let w = watch_in_thread(h, format!("{e}?wait=true"));
    wait_watchers(&c, 0, 1);
    let ev = w.join().unwrap();
    assert_eq!(ev.json()["action"], "expire", "{ev:?}");
    assert_eq!(ev.json()["prevNode"]["value"], "x");
    let took = set_at.elapsed();
    assert!(took < Duration::from_secs(3), "expired after {took:?}");
    assert_etcd_error(&h.get(&e), 404, 100);

    // A TTL on a directory expires its contents with it.
    let d = c.keys_url(0, "/tdir");
    assert_eq!(h.put_form(&d, &[("dir", "true"), ("ttl", "1")]).status, 201);
    assert_eq!(
        h.put_form(&c.keys_url(0, "/tdir/k"), &[("value", "1")])
            .status,
        201
    );
    let deadline = Instant::now() + Duration::from_secs(4);
    while h.get(&c.keys_url(0, "/tdir/k")).status != 404 {
        assert!(Instant::now() < deadline, "dir with ttl=1 still there");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn watches_long_poll_history_recursive_and_cleared() {
    let c = single();
    let h = c.http();
    let url = c.keys_url(0, "/w/key");

    // Long poll: nothing yet, the write from another client completes it.
    let w = watch_in_thread(h, format!("{url}?wait=true"));
    wait_watchers(&c, 0, 1); // the write must come after the watch is registered
    let r = h.put_form(&url, &[("value", "1")]);
    let first = node(&r)["modifiedIndex"].as_u64().unwrap();
    let ev = w.join().unwrap();
    assert_eq!(ev.status, 200, "{ev:?}");
    assert_keys_headers(&ev);
    assert_eq!(ev.json()["action"], "set");
    assert_eq!(node(&ev)["value"], "1");

    // waitIndex from history: the first event at or after it.
    h.put_form(&url, &[("value", "2")]);
    let r = h.get(&format!("{url}?wait=true&waitIndex={first}"));
    assert_eq!(node(&r)["value"], "1", "{r:?}");
    let r = h.get(&format!("{url}?wait=true&waitIndex={}", first + 1));
    assert_eq!(node(&r)["value"], "2", "{r:?}");

    // Recursive watch on the parent sees a change below it; non-recursive does not.
    let rec = watch_in_thread(
        h,
        format!("{}?wait=true&recursive=true", c.keys_url(0, "/w")),
    );
    wait_watchers(&c, 0, 1);
    let r = h.put_form(&c.keys_url(0, "/w/deep/er"), &[("value", "d")]);
    assert_eq!(r.status, 201);
    let ev = rec.join().unwrap();
    assert_eq!(node(&ev)["key"], "/w/deep/er", "{ev:?}");
    let nonrec = h.request(
        "GET",
        &format!("{}?wait=true&waitIndex={}", c.keys_url(0, "/w"), first),
        None,
        Duration::from_millis(500),
    );
    assert!(
        nonrec.is_err(),
        "a non-recursive watch on /w fired: {nonrec:?}"
    );

    // Roll the 1000-event history past an index, then ask for it: 401.
    let before = store_index(&c, 0);
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let h = h.clone();
            let u = c.keys_url(0, &format!("/roll/{t}"));
            thread::spawn(move || {
                for i in 0..130 {
                    let r = h.put_form(&u, &[("value", &i.to_string())]);
                    assert!(r.status == 200 || r.status == 201, "{r:?}");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    assert!(store_index(&c, 0) >= before + 1040);
    let r = h.get(&format!("{url}?wait=true&waitIndex={first}"));
    assert_etcd_error(&r, 400, 401);
    assert!(
        r.json()["cause"].as_str().is_some_and(|s| !s.is_empty()),
        "{r:?}"
    );
}

#[test]
fn read_modes_are_reported_and_counted() {
    let c = single();
    let h = c.http();
    let url = c.keys_url(0, "/r");
    assert_eq!(h.put_form(&url, &[("value", "1")]).status, 201);
    c.wait_lease(0, LEADER);

    let lease_before = c.metric(0, "deimos_server_reads_total", &[("mode", "lease")]);
    let mut lease = 0;
    for _ in 0..20 {
        let r = h.get(&url);
        assert_eq!(r.status, 200);
        assert_keys_headers(&r);
        if r.header("X-Deimos-Read") == Some("lease") {
            lease += 1;
        } else {
            assert_eq!(r.header("X-Deimos-Read"), Some("read-index"), "{r:?}");
        }
    }
    assert!(lease > 0, "no lease read on a leader holding a lease");
    let r = h.get(&format!("{url}?quorum=true"));
    assert_eq!(r.header("X-Deimos-Read"), Some("quorum"), "{r:?}");
    let r = h.get(&format!("{url}?consistency=local"));
    assert_eq!(r.header("X-Deimos-Read"), Some("local"), "{r:?}");
    assert_eq!(node(&r)["value"], "1");
    let r = h.get(&format!("{url}?consistency=linearizable"));
    match r.header("X-Deimos-Read") {
        Some("lease") => lease += 1,
        other => assert_eq!(other, Some("read-index"), "{r:?}"),
    }

    let m = c.metrics(0);
    let count = |mode| deimos_tests::metric_sum(&m, "deimos_server_reads_total", &[("mode", mode)]);
    assert_eq!(count("lease") - lease_before, lease as f64);
    assert!(count("quorum") >= 1.0 && count("local") >= 1.0);
    assert!(
        m.contains("deimos_lease_valid"),
        "metrics lack deimos_lease_valid"
    );
    assert_eq!(deimos_tests::metric_sum(&m, "deimos_lease_valid", &[]), 1.0);
}

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

    let cases: Vec<(&str, Reply, u16, u64)> = vec![
        (
            "invalid UTF-8 in a form body",
            h.must("PUT", &url, Some((form, b"value=%ff%fe"))),
            400,
            210,
        ),
        (
            "invalid UTF-8 in the query",
            h.must("PUT", &format!("{url}?value=%ff%fe"), None),
            400,
            210,
        ),
        (
            "unknown consistency",
            h.get(&format!("{url}?consistency=eventual")),
            400,
            209,
        ),
        (
            "ttl not a number",
            h.put_form(&url, &[("value", "x"), ("ttl", "soon")]),
            400,
            202,
        ),
        (
            "negative ttl",
            h.put_form(&url, &[("value", "x"), ("ttl", "-1")]),
            400,
            202,
        ),
        (
            "prevIndex not a number",
            h.put_form(&url, &[("value", "x"), ("prevIndex", "x1")]),
            400,
            203,
        ),
        (
            "waitIndex not a number",
            h.get(&format!("{url}?wait=true&waitIndex=abc")),
            400,
            203,
        ),
        (
            "bad bool",
            h.get(&format!("{url}?recursive=maybe")),
            400,
            209,
        ),
        (
            "bad prevExist",
            h.put_form(&url, &[("value", "x"), ("prevExist", "perhaps")]),
            400,
            209,
        ),
        (
            "bad dir flag on delete",
            h.delete(&format!("{url}?dir=yes")),
            400,
            209,
        ),
        (
            "refresh without ttl",
            h.put_form(&url, &[("refresh", "true"), ("prevExist", "true")]),
            400,
            212,
        ),
        (
            "invalid UTF-8 key",
            h.get(&format!("{}/v2/keys/%ff", c.client_url(0))),
            400,
            209,
        ),
        (
            "invalid UTF-8 key on write",
            h.put_form(
                &format!("{}/v2/keys/a%ffb", c.client_url(0)),
                &[("value", "x")],
            ),
            400,
            209,
        ),
    ];
    for (what, r, status, code) in &cases {
        assert_eq!(r.status, *status, "{what}: {r:?}");
        assert_eq!(r.error_code(), Some(*code), "{what}: {r:?}");
        assert_etcd_error(r, *status, *code);
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
    assert_eq!(node(&r)["value"], "orig");
    assert_eq!(node(&r)["modifiedIndex"].as_u64(), Some(index));
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
