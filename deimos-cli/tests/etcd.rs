//! End-to-end: `deimosctl` against a throw-away etcd 3.4 with the v2 API enabled.
//!
//! etcd is the reference implementation of the API Deimos serves, so passing here means the CLI's
//! requests and parsing follow the real protocol, not just our own server's reading of it. When
//! no `etcd` binary is on PATH the test prints SKIP and passes (CI installs etcd-server).
//!
//! `DEIMOSCTL_IT_ENDPOINT=http://127.0.0.1:4101 cargo test -p deimos-cli --test etcd` runs the key
//! and watch tests against an already running server instead (e.g. a Deimos leader), under a
//! fresh key prefix, so the same expectations check Deimos against etcd's behaviour.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ctl, run_at, start_etcd};
use deimos_tests::etcd::Etcd;
use deimos_tests::ports::free_port;

/// The server under test: a throw-away etcd, or an external endpoint (key tests only).
struct Target {
    url: String,
    /// A key prefix no earlier run used, so tests also work on a long-lived server.
    p: String,
    _etcd: Option<Etcd>,
}

/// The server for `test`, or None (after printing SKIP) when there is none.
fn target(test: &str, external_ok: bool) -> Option<Target> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let p = format!("/it{nanos}");
    if external_ok {
        if let Ok(url) = std::env::var("DEIMOSCTL_IT_ENDPOINT") {
            println!("{test}: against external endpoint {url}");
            return Some(Target {
                url,
                p,
                _etcd: None,
            });
        }
    }
    let etcd = start_etcd(test)?;
    Some(Target {
        url: etcd.url().to_string(),
        p,
        _etcd: Some(etcd),
    })
}

/// Runs deimosctl and returns (exit code, stdout, stderr).
fn run(t: &Target, args: &[&str]) -> (i32, String, String) {
    run_at(&t.url, args)
}

fn ok(t: &Target, args: &[&str]) -> String {
    let (code, out, err) = run(t, args);
    assert_eq!(code, 0, "deimosctl {args:?} failed: {err}");
    out
}

fn json(t: &Target, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["-o", "json"];
    a.extend_from_slice(args);
    serde_json::from_str(ok(t, &a).trim()).expect("JSON output")
}

#[test]
fn key_commands_against_etcd() {
    let Some(e) = target("key_commands_against_etcd", true) else {
        return;
    };
    let p = e.p.as_str();
    let k = |s: &str| format!("{p}/{s}");
    let (a, b, d, dx, w) = (k("a"), k("b"), k("d"), k("d/x"), k("w"));

    // set / get, table and JSON.
    assert_eq!(ok(&e, &["set", &a, "one"]), "one\n");
    assert_eq!(ok(&e, &["get", &a]), "one\n");
    let v = json(&e, &["get", &a, "--quorum"]);
    assert_eq!(v["action"], "get");
    assert_eq!(v["node"]["value"], "one");
    assert_eq!(ok(&e, &["get", &a, "--consistency", "local"]), "one\n");

    // Compare-and-swap: the failing one is error 101 with exit 4, the message like etcdctl's.
    let (code, out, err) = run(&e, &["set", &a, "two", "--swap-with-value", "nope"]);
    assert_eq!(code, 4);
    assert_eq!(out, "");
    let err = err.trim();
    assert!(
        err.starts_with("Error: 101: Compare failed ([nope != one]) [") && err.ends_with(']'),
        "{err}"
    );
    let (code, out, _) = run(
        &e,
        &[
            "-o",
            "json",
            "set",
            &a,
            "two",
            "--swap-with-index",
            "999999",
        ],
    );
    assert_eq!(code, 4);
    let body: serde_json::Value = serde_json::from_str(out.trim()).expect("error JSON");
    assert_eq!(body["errorCode"], 101);
    let v = json(&e, &["set", &a, "two", "--swap-with-value", "one"]);
    assert_eq!(v["action"], "compareAndSwap");
    assert_eq!(v["prevNode"]["value"], "one");
    let idx2 = v["node"]["modifiedIndex"].as_u64().expect("index");
    assert_eq!(
        ok(
            &e,
            &["set", &a, "three", "--swap-with-index", &idx2.to_string()]
        ),
        "three\n"
    );

    // mk / update.
    let (code, _, err) = run(&e, &["mk", &a, "x"]);
    assert_eq!(code, 4);
    assert!(
        err.starts_with(&format!("Error: 105: Key already exists ({a})")),
        "{err}"
    );
    assert_eq!(ok(&e, &["mk", &b, "bee", "--ttl", "100"]), "bee\n");
    let (code, _, err) = run(&e, &["update", &k("missing"), "x"]);
    assert_eq!(code, 4);
    assert!(
        err.starts_with(&format!("Error: 100: Key not found ({p}/missing)")),
        "{err}"
    );
    let v = json(&e, &["update", &b, "bee2"]);
    assert_eq!(v["action"], "update");

    // mkdir / ls / rmdir / rm.
    ok(&e, &["mkdir", &d]);
    ok(&e, &["set", &dx, "ex"]);
    let ls = ok(&e, &["ls", p, "--recursive", "--sort"]);
    let keys: Vec<&str> = ls
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let dslash = format!("{d}/");
    assert_eq!(
        keys,
        [a.as_str(), b.as_str(), dslash.as_str(), dx.as_str()],
        "{ls}"
    );
    assert!(ls
        .lines()
        .any(|l| l.starts_with(&b) && l.contains(" bee2 ")));
    let (code, _, err) = run(&e, &["rmdir", &d]);
    assert_eq!(code, 4);
    assert!(err.starts_with("Error: 108: Directory not empty"), "{err}");
    let (code, _, err) = run(&e, &["get", &d]);
    assert_eq!(code, 1, "get on a directory is a usage error (as etcdctl)");
    assert!(err.contains("is a directory"), "{err}");
    let (code, _, err) = run(&e, &["rm", &a, "--with-value", "wrong"]);
    assert_eq!(code, 4);
    assert!(err.starts_with("Error: 101: Compare failed"), "{err}");
    assert_eq!(
        ok(&e, &["rm", &a, "--with-value", "three"]),
        "PrevNode.Value: three\n"
    );
    ok(&e, &["rm", &d, "--recursive"]);
    ok(&e, &["mkdir", &k("empty")]);
    ok(&e, &["rmdir", &k("empty")]);
    let (code, _, err) = run(&e, &["get", &a]);
    assert_eq!(code, 4);
    assert!(
        err.starts_with(&format!("Error: 100: Key not found ({a})")),
        "{err}"
    );

    // watch --after-index returns a past event from history at once.
    let v = json(&e, &["set", &w, "watched"]);
    let widx = v["node"]["modifiedIndex"].as_u64().expect("index");
    ok(&e, &["set", &w, "later"]);
    let out = ok(&e, &["watch", &w, "--after-index", &(widx - 1).to_string()]);
    assert_eq!(out.trim(), format!("[set] {w} watched (index {widx})"));
    let v = json(
        &e,
        &[
            "watch",
            p,
            "--recursive",
            "--after-index",
            &widx.to_string(),
        ],
    );
    assert_eq!(v["node"]["value"], "later");

    // Failover: a dead first endpoint is skipped.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let o = ctl(&format!("{dead},{}", e.url), &["get", &w]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "later\n");

    // Only dead endpoints: exit 2.
    let o = ctl(&dead, &["get", &w]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("Error: cluster unreachable"));

    // Bad arguments: exit 1.
    assert_eq!(run(&e, &["set", &k("x")]).0, 1);
}

#[test]
fn watch_forever_follows_events() {
    let Some(e) = target("watch_forever_follows_events", true) else {
        return;
    };
    let key = format!("{}/k", e.p);
    let v = json(&e, &["set", &key, "0"]);
    let start = v["node"]["modifiedIndex"].as_u64().expect("index");
    for i in 1..=3 {
        ok(&e, &["set", &key, &i.to_string()]);
    }
    // --forever never exits on its own: read its first lines and kill it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_deimosctl"))
        .args(["--endpoints", &e.url, "watch", &key, "--forever"])
        .args(["--after-index", &start.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    // Three events from history, then one that happens while the watch is waiting.
    while lines.len() < 4 {
        if lines.len() == 3 {
            ok(&e, &["set", &key, "4"]);
        }
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => lines.push(l),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let values: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(values, ["1", "2", "3", "4"], "{lines:?}");
}

#[test]
fn member_status_and_bench_against_etcd() {
    let Some(e) = target("member_status_and_bench_against_etcd", false) else {
        return;
    };
    let list = ok(&e, &["member", "list"]);
    assert!(list.starts_with("ID"), "{list}");
    assert!(
        list.lines().nth(1).is_some_and(|l| l.contains(" it ")),
        "{list}"
    );

    // Removing an unknown member: the members API's own error shape, exit 4. (Adding a member to
    // a 1-node cluster would cost it its quorum, so add is covered by parsing tests only.)
    let (code, _, err) = run(&e, &["member", "remove", "1234abcd"]);
    assert_eq!(code, 4);
    assert_eq!(err.trim(), "Error: 404: No such member: 1234abcd");
    assert_eq!(run(&e, &["member", "remove", "xyz"]).0, 1);

    // etcd has no /raft/status: role comes from /v2/stats/self, the rest is "-".
    let v = json(&e, &["cluster", "status"]);
    let m = &v["members"][0];
    assert_eq!(m["role"], "leader");
    assert_eq!(m["reachable"], true);
    assert_eq!(m["source"], "stats/self");
    assert_eq!(m["term"], serde_json::Value::Null);
    let table = ok(&e, &["cluster", "status"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .expect("row")
        .split_whitespace()
        .collect();
    assert_eq!(&row[1..], ["it", "leader", "-", "-", "-", "-", "-", "yes"]);

    let v = json(
        &e,
        &[
            "bench",
            "get",
            "--mode",
            "quorum",
            "--target",
            "etcd",
            "--total",
            "300",
            "--clients",
            "4",
            "--keys",
            "20",
            "--value-size",
            "16",
            "--no-progress",
        ],
    );
    assert_eq!(v["workload"], "get");
    assert_eq!(v["mode"], "quorum");
    assert_eq!(v["ok"], 300);
    assert_eq!(v["errors"], 0);
    assert!(v["throughput_ops"].as_f64().is_some_and(|t| t > 0.0));
    let l = &v["latency_ms"];
    let p50 = l["p50"].as_f64().expect("p50");
    let max = l["max"].as_f64().expect("max");
    assert!(p50 > 0.0 && p50 <= max);
    // The prefill wrote every key with the requested size.
    assert_eq!(ok(&e, &["get", "/bench/k19"]).trim().len(), 16);

    let out = ok(
        &e,
        &[
            "bench",
            "mixed",
            "--target",
            "etcd",
            "--total",
            "200",
            "--clients",
            "2",
            "--keys",
            "5",
        ],
    );
    let row: Vec<&str> = out
        .lines()
        .nth(1)
        .expect("row")
        .split_whitespace()
        .collect();
    assert_eq!(row[0], "mixed");
    assert!(out.contains(" 200 "), "{out}");
}
