//! The keys API of a single-node cluster, through HTTP against a real `deimos` process: every
//! keys operation and error of the etcd v2 API, directories and listings, TTLs, watches and
//! read modes. The cluster and status endpoints, bad input and the node's robustness are in
//! `api_single_service.rs`.

use std::thread;
use std::time::{Duration, Instant};

use deimos_tests::checks::{
    assert_etcd_error, assert_keys_headers, keys_node, single, store_index, wait_watchers,
};
use deimos_tests::{Http, Reply};

const LEADER: Duration = Duration::from_secs(10);

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
    assert_eq!(keys_node(&r)["value"], "v1");
    let created = keys_node(&r)["createdIndex"].as_u64().unwrap();
    assert_eq!(keys_node(&r)["modifiedIndex"].as_u64(), Some(created));
    assert_eq!(r.header_u64("X-Etcd-Index"), created);
    assert!(r.json().get("prevNode").is_none());

    // The same write with the form in the query string instead of the body.
    let r = h.must("PUT", &format!("{url}?value=v2"), None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["prevNode"]["value"], "v1");
    assert_eq!(keys_node(&r)["value"], "v2");
    // As in etcd, `set` replaces the node: a new createdIndex equal to its modifiedIndex.
    let v2_index = keys_node(&r)["modifiedIndex"].as_u64().unwrap();
    assert!(v2_index > created);
    assert_eq!(keys_node(&r)["createdIndex"].as_u64(), Some(v2_index));

    // GET through both prefixes.
    for u in [url.clone(), format!("{}/keys/k", c.client_url(0))] {
        let r = h.get(&u);
        assert_eq!(r.status, 200, "{r:?}");
        assert_keys_headers(&r);
        assert_eq!(r.json()["action"], "get");
        assert_eq!(keys_node(&r)["value"], "v2");
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
    assert_eq!(keys_node(&r)["createdIndex"].as_u64(), Some(v2_index));
    let v3_index = keys_node(&r)["modifiedIndex"].as_u64().unwrap();
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
    let v4_index = keys_node(&r)["modifiedIndex"].as_u64().unwrap();
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
    assert_eq!(keys_node(&r)["dir"], true);
    assert!(
        keys_node(&r).get("value").is_none(),
        "a dir has no value: {r:?}"
    );
    // Creating it again with prevExist=false: 105; writing a value onto it: 102.
    let r = h.put_form(&d, &[("dir", "true"), ("prevExist", "false")]);
    assert_etcd_error(&r, 412, 105);
    let r = h.put_form(&d, &[("value", "x")]);
    assert_etcd_error(&r, 403, 102);
    // A value sent with dir=true is ignored, as etcd does.
    let r = h.put_form(&c.keys_url(0, "/dir2"), &[("dir", "true"), ("value", "x")]);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(keys_node(&r)["dir"], true);
    assert!(
        keys_node(&r).get("value").is_none(),
        "a dir has no value: {r:?}"
    );

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
    let keys: Vec<String> = keys_node(&r)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["/dir/a", "/dir/b", "/dir/sub"]);
    assert!(keys_node(&r)["nodes"][2].get("nodes").is_none());
    // Recursive: the sub-dir's children too.
    let r = h.get(&format!("{d}?recursive=true&sorted=true"));
    assert_eq!(keys_node(&r)["nodes"][2]["nodes"][0]["key"], "/dir/sub/c");
    // A hidden key can be read by name.
    let r = h.get(&c.keys_url(0, "/dir/_hidden"));
    assert_eq!(keys_node(&r)["value"], "h");

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
    assert_eq!(keys_node(&r)["dir"], true);
    assert_etcd_error(&h.get(&c.keys_url(0, "/dir/a")), 404, 100);

    // In-order keys: 20-digit zero-padded names that sort in creation order.
    let q = c.keys_url(0, "/queue");
    let mut created = Vec::new();
    for v in ["first", "second", "third"] {
        let r = h.post_form(&q, &[("value", v)]);
        assert_eq!(r.status, 201, "{r:?}");
        assert_keys_headers(&r);
        assert_eq!(r.json()["action"], "create");
        let key = keys_node(&r)["key"].as_str().unwrap().to_string();
        let name = key.strip_prefix("/queue/").unwrap();
        assert_eq!(name.len(), 20, "{key}");
        assert!(name.bytes().all(|b| b.is_ascii_digit()), "{key}");
        assert_eq!(
            name.parse::<u64>().unwrap(),
            keys_node(&r)["createdIndex"].as_u64().unwrap()
        );
        created.push(key);
    }
    let r = h.get(&format!("{q}?sorted=true"));
    let listed: Vec<String> = keys_node(&r)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, created);
    assert_eq!(keys_node(&r)["nodes"][0]["value"], "first");
    // POST with the value in the query string.
    let r = h.must("POST", &format!("{q}?value=fourth"), None);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(keys_node(&r)["value"], "fourth");
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
    let n = keys_node(&r);
    assert!((99..=100).contains(&n["ttl"].as_u64().unwrap()), "{r:?}");
    let exp = n["expiration"].as_str().unwrap();
    assert!(exp.ends_with('Z') && exp.contains('T'), "{exp}");

    // `ttl=` clears it.
    let r = h.put_form(&url, &[("value", "v2"), ("ttl", "")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        keys_node(&r).get("ttl").is_none() && keys_node(&r).get("expiration").is_none(),
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
    assert_eq!(keys_node(&r)["value"], "v3");
    assert!(keys_node(&r)["ttl"].as_u64().unwrap() > 150, "{r:?}");
    let refresh_index = keys_node(&r)["modifiedIndex"].as_u64().unwrap();
    let r = h.put_form(&url, &[("refresh", "true"), ("ttl", "10"), ("value", "x")]);
    assert_etcd_error(&r, 400, 211);
    let r = h.put_form(&url, &[("refresh", "true"), ("prevExist", "true")]);
    assert_etcd_error(&r, 400, 212);
    // A watch from the refresh's index skips it and sees the next real change.
    let w = watch_in_thread(h, format!("{url}?wait=true&waitIndex={refresh_index}"));
    let r = h.put_form(&url, &[("value", "after-refresh")]);
    let after = keys_node(&r)["modifiedIndex"].as_u64().unwrap();
    let ev = w.join().unwrap();
    assert_eq!(ev.status, 200, "{ev:?}");
    assert_eq!(ev.json()["action"], "set", "{ev:?}");
    assert_eq!(keys_node(&ev)["modifiedIndex"].as_u64(), Some(after));

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
    let first = keys_node(&r)["modifiedIndex"].as_u64().unwrap();
    let ev = w.join().unwrap();
    assert_eq!(ev.status, 200, "{ev:?}");
    assert_keys_headers(&ev);
    assert_eq!(ev.json()["action"], "set");
    assert_eq!(keys_node(&ev)["value"], "1");

    // waitIndex from history: the first event at or after it.
    h.put_form(&url, &[("value", "2")]);
    let r = h.get(&format!("{url}?wait=true&waitIndex={first}"));
    assert_eq!(keys_node(&r)["value"], "1", "{r:?}");
    let r = h.get(&format!("{url}?wait=true&waitIndex={}", first + 1));
    assert_eq!(keys_node(&r)["value"], "2", "{r:?}");

    // Recursive watch on the parent sees a change below it; non-recursive does not.
    let rec = watch_in_thread(
        h,
        format!("{}?wait=true&recursive=true", c.keys_url(0, "/w")),
    );
    wait_watchers(&c, 0, 1);
    let r = h.put_form(&c.keys_url(0, "/w/deep/er"), &[("value", "d")]);
    assert_eq!(r.status, 201);
    let ev = rec.join().unwrap();
    assert_eq!(keys_node(&ev)["key"], "/w/deep/er", "{ev:?}");
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
    assert_eq!(keys_node(&r)["value"], "1");
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
