//! End-to-end: `deimosctl` against a throw-away etcd 3.4 with the v2 API enabled.
//!
//! etcd is the reference implementation of the API Deimos serves, so passing here means the CLI's
//! requests and parsing follow the real protocol, not just our own server's reading of it. When
//! no `etcd` binary is on PATH the test prints SKIP and passes (CI installs etcd-server).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Kills and reaps etcd and removes its data dir however the test ends.
struct Etcd {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral loopback port")
}

fn etcd_on_path() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn start_etcd() -> Etcd {
    let (cport, pport) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("deimosctl-it-{}-{cport}", std::process::id()));
    let url = format!("http://127.0.0.1:{cport}");
    let peer = format!("http://127.0.0.1:{pport}");
    std::fs::create_dir_all(&dir).expect("temp dir");
    // The log sits in the temp dir, so it is removed with it.
    let log = std::fs::File::create(dir.join("etcd.log")).expect("log file");
    let child = Command::new("etcd")
        .args(["--enable-v2=true", "--name", "it"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("it={peer}")])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn etcd");
    let etcd = Etcd { child, dir, url };
    // Ready once a write goes through (the single member has elected itself).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = ctl(&etcd, &["set", "/ready", "1"]);
        if o.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "etcd did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    etcd
}

fn ctl(etcd: &Etcd, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deimosctl"))
        .args(["--endpoints", &etcd.url, "--timeout", "3s"])
        .args(args)
        .output()
        .expect("run deimosctl")
}

/// Runs deimosctl and returns (exit code, stdout, stderr).
fn run(etcd: &Etcd, args: &[&str]) -> (i32, String, String) {
    let o = ctl(etcd, args);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(etcd: &Etcd, args: &[&str]) -> String {
    let (code, out, err) = run(etcd, args);
    assert_eq!(code, 0, "deimosctl {args:?} failed: {err}");
    out
}

fn json(etcd: &Etcd, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["-o", "json"];
    a.extend_from_slice(args);
    serde_json::from_str(ok(etcd, &a).trim()).expect("JSON output")
}

#[test]
fn key_commands_against_etcd() {
    if !etcd_on_path() {
        println!(
            "SKIP key_commands_against_etcd: no etcd binary on PATH (apt-get install etcd-server)"
        );
        return;
    }
    let e = start_etcd();

    // set / get, table and JSON.
    assert_eq!(ok(&e, &["set", "/t/a", "one"]), "one\n");
    assert_eq!(ok(&e, &["get", "/t/a"]), "one\n");
    let v = json(&e, &["get", "/t/a", "--quorum"]);
    assert_eq!(v["action"], "get");
    assert_eq!(v["node"]["value"], "one");
    let idx = v["node"]["modifiedIndex"].as_u64().expect("modifiedIndex");

    // Compare-and-swap: the failing one is error 101 with exit 1, the message like etcdctl's.
    let (code, out, err) = run(&e, &["set", "/t/a", "two", "--swap-with-value", "nope"]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(
        err.trim(),
        format!("Error: 101: Compare failed ([nope != one]) [{idx}]")
    );
    let (code, out, _) = run(
        &e,
        &[
            "-o",
            "json",
            "set",
            "/t/a",
            "two",
            "--swap-with-index",
            "999999",
        ],
    );
    assert_eq!(code, 1);
    let body: serde_json::Value = serde_json::from_str(out.trim()).expect("error JSON");
    assert_eq!(body["errorCode"], 101);
    let v = json(&e, &["set", "/t/a", "two", "--swap-with-value", "one"]);
    assert_eq!(v["action"], "compareAndSwap");
    assert_eq!(v["prevNode"]["value"], "one");
    let idx2 = v["node"]["modifiedIndex"].as_u64().expect("index");
    assert_eq!(
        ok(
            &e,
            &[
                "set",
                "/t/a",
                "three",
                "--swap-with-index",
                &idx2.to_string()
            ]
        ),
        "three\n"
    );

    // mk / update.
    let (code, _, err) = run(&e, &["mk", "/t/a", "x"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("Error: 105: Key already exists (/t/a)"),
        "{err}"
    );
    assert_eq!(ok(&e, &["mk", "/t/b", "bee", "--ttl", "100"]), "bee\n");
    let (code, _, err) = run(&e, &["update", "/t/missing", "x"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("Error: 100: Key not found (/t/missing)"),
        "{err}"
    );
    let v = json(&e, &["update", "/t/b", "bee2"]);
    assert_eq!(v["action"], "update");

    // mkdir / ls / rmdir / rm.
    ok(&e, &["mkdir", "/t/d"]);
    ok(&e, &["set", "/t/d/x", "ex"]);
    let ls = ok(&e, &["ls", "/t", "--recursive", "--sort"]);
    let keys: Vec<&str> = ls
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(keys, ["/t/a", "/t/b", "/t/d/", "/t/d/x"], "{ls}");
    assert!(ls
        .lines()
        .any(|l| l.starts_with("/t/b") && l.contains(" bee2 ")));
    let (code, _, err) = run(&e, &["rmdir", "/t/d"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("Error: 108: Directory not empty"), "{err}");
    let (code, _, err) = run(&e, &["rm", "/t/a", "--with-value", "wrong"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("Error: 101: Compare failed"), "{err}");
    assert_eq!(
        ok(&e, &["rm", "/t/a", "--with-value", "three"]),
        "PrevNode.Value: three\n"
    );
    ok(&e, &["rm", "/t/d", "--recursive"]);
    ok(&e, &["mkdir", "/t/empty"]);
    ok(&e, &["rmdir", "/t/empty"]);
    let (code, _, err) = run(&e, &["get", "/t/a"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("Error: 100: Key not found (/t/a)"), "{err}");

    // watch --after-index returns a past event from history at once.
    let v = json(&e, &["set", "/t/w", "watched"]);
    let widx = v["node"]["modifiedIndex"].as_u64().expect("index");
    ok(&e, &["set", "/t/w", "later"]);
    let out = ok(
        &e,
        &["watch", "/t/w", "--after-index", &(widx - 1).to_string()],
    );
    assert_eq!(out.trim(), format!("[set] /t/w watched (index {widx})"));
    let v = json(
        &e,
        &[
            "watch",
            "/t",
            "--recursive",
            "--after-index",
            &widx.to_string(),
        ],
    );
    assert_eq!(v["node"]["value"], "later");

    // Failover: a dead first endpoint is skipped.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let o = Command::new(env!("CARGO_BIN_EXE_deimosctl"))
        .args(["--endpoints", &format!("{dead},{}", e.url), "get", "/t/w"])
        .output()
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "later\n");

    // Only dead endpoints: exit 4.
    let o = Command::new(env!("CARGO_BIN_EXE_deimosctl"))
        .args(["--endpoints", &dead, "get", "/t/w"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("Error: cluster unreachable"));

    // Bad arguments: exit 2.
    assert_eq!(run(&e, &["set", "/t/x"]).0, 2);
}

#[test]
fn watch_forever_follows_events() {
    if !etcd_on_path() {
        println!("SKIP watch_forever_follows_events: no etcd binary on PATH");
        return;
    }
    let e = start_etcd();
    let v = json(&e, &["set", "/f/k", "0"]);
    let start = v["node"]["modifiedIndex"].as_u64().expect("index");
    for i in 1..=3 {
        ok(&e, &["set", "/f/k", &i.to_string()]);
    }
    // --forever never exits on its own: read its first lines and kill it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_deimosctl"))
        .args(["--endpoints", &e.url, "watch", "/f/k", "--forever"])
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
    while lines.len() < 3 {
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
    assert_eq!(values, ["1", "2", "3"], "{lines:?}");
}

#[test]
fn member_status_and_bench_against_etcd() {
    if !etcd_on_path() {
        println!("SKIP member_status_and_bench_against_etcd: no etcd binary on PATH");
        return;
    }
    let e = start_etcd();
    let list = ok(&e, &["member", "list"]);
    assert!(list.starts_with("ID"), "{list}");
    assert!(
        list.lines().nth(1).is_some_and(|l| l.contains(" it ")),
        "{list}"
    );

    // Removing an unknown member: the members API's own error shape, exit 1. (Adding a member to
    // a 1-node cluster would cost it its quorum, so add is covered by parsing tests only.)
    let (code, _, err) = run(&e, &["member", "remove", "1234abcd"]);
    assert_eq!(code, 1);
    assert_eq!(err.trim(), "Error: 404: No such member: 1234abcd");
    assert_eq!(run(&e, &["member", "remove", "xyz"]).0, 2);

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
