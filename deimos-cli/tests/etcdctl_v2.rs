//! deimosctl as a drop-in for `ETCDCTL_API=2 etcdctl` (issue 20): `setdir`, `updatedir`,
//! `ls -p`, `rm -r`, `member update`, `cluster-health`, `exec-watch` and etcdctl's exit statuses,
//! with the same assertions against etcd 3.4 and a 1-node Deimos. Where etcdctl itself is
//! installed, a script of commands also runs through both tools and their exit statuses and
//! outputs must agree. Without an `etcd` binary the etcd half prints SKIP and passes.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ctl, deimos_server, etcd_server, etcdctl, run_at, Server};
use deimos_tests::etcd::etcdctl_v2_available;
use deimos_tests::ports::free_port;

fn ok(url: &str, args: &[&str]) -> String {
    let (code, out, err) = run_at(url, args);
    assert_eq!(code, 0, "deimosctl {args:?} failed: {err}");
    out
}

fn json(url: &str, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["-o", "json"];
    a.extend_from_slice(args);
    serde_json::from_str(ok(url, &a).trim()).expect("JSON output")
}

/// A key prefix of its own for each use.
fn prefix(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("/v2c{tag}{nanos}")
}

fn check_all(s: &Server) {
    let url = s.url();
    println!("etcdctl v2 commands against {}", s.name());
    dirs_and_listing(&url);
    exit_codes(&url);
    single_member_health_and_update(&url);
    exec_watch(&url);
    same_as_etcdctl(&url);
}

#[test]
fn etcdctl_v2_commands_against_etcd() {
    let Some(s) = etcd_server("etcdctl_v2_commands_against_etcd") else {
        return;
    };
    check_all(&s);
}

#[test]
fn etcdctl_v2_commands_against_deimos() {
    check_all(&deimos_server());
}

fn dirs_and_listing(url: &str) {
    let p = prefix("dirs");
    let (d, k, f) = (format!("{p}/d"), format!("{p}/k"), format!("{p}/f"));

    // setdir creates; on an existing directory the server says 102, exit 4.
    assert_eq!(ok(url, &["setdir", &d]), "");
    let (code, out, err) = run_at(url, &["setdir", &d]);
    assert_eq!((code, out.as_str()), (4, ""), "{err}");
    assert!(
        err.starts_with(&format!("Error: 102: Not a file ({d})")),
        "{err}"
    );
    // A key becomes a directory (etcdctl sends no prevExist).
    ok(url, &["set", &k, "v"]);
    ok(url, &["setdir", &k, "--ttl", "300"]);
    let v = json(url, &["ls", &k]);
    assert_eq!(v["node"]["dir"], true, "{v}");

    // updatedir: an existing directory's TTL, set then removed.
    let v = json(url, &["updatedir", &d, "--ttl", "100"]);
    assert_eq!(v["action"], "update", "{v}");
    assert_eq!(v["node"]["dir"], true, "{v}");
    let ttl = v["node"]["ttl"].as_i64().expect("ttl");
    assert!((99..=100).contains(&ttl), "{v}");
    let v = json(url, &["updatedir", &d]);
    assert!(v["node"].get("ttl").is_none(), "{v}");
    let (code, _, err) = run_at(url, &["updatedir", &format!("{p}/nope"), "--ttl", "5"]);
    assert_eq!(code, 4);
    assert!(err.starts_with("Error: 100: Key not found"), "{err}");

    // ls -p / -r / --sort in etcdctl's simple format; the table marks directories anyway.
    ok(url, &["set", &format!("{d}/x"), "ex"]);
    ok(url, &["mkdir", &format!("{d}/sub")]);
    ok(url, &["set", &f, "file"]);
    let simple = ok(url, &["-o", "simple", "ls", "-p", "-r", "--sort", &p]);
    assert_eq!(
        simple,
        format!("{d}/\n{d}/sub/\n{d}/x\n{f}\n{k}/\n"),
        "ls -p -r --sort"
    );
    let simple = ok(url, &["-o", "simple", "ls", "--sort", &p]);
    assert_eq!(simple, format!("{d}\n{f}\n{k}\n"));
    let table = ok(url, &["ls", "-p", "--sort", &p]);
    assert!(table
        .lines()
        .nth(1)
        .is_some_and(|l| l.starts_with(&format!("{d}/ "))));

    // rm on a directory needs -r.
    let (code, _, err) = run_at(url, &["rm", &d]);
    assert_eq!(code, 4);
    assert!(err.starts_with("Error: 102: Not a file"), "{err}");
    assert_eq!(ok(url, &["rm", "-r", &d]), "");
    let (code, _, _) = run_at(url, &["ls", &d]);
    assert_eq!(code, 4);
}

fn exit_codes(url: &str) {
    let p = prefix("exit");
    assert_eq!(run_at(url, &["--help"]).0, 0);
    assert_eq!(run_at(url, &["--version"]).0, 0);
    assert_eq!(run_at(url, &["set", &format!("{p}/x")]).0, 1);
    assert_eq!(run_at(url, &["frobnicate"]).0, 1);
    assert_eq!(
        run_at(url, &["member", "update", "not-hex", "http://a:1"]).0,
        1
    );
    let (code, _, err) = run_at(url, &["get", &format!("{p}/missing")]);
    assert_eq!(code, 4, "{err}");
    assert!(err.starts_with("Error: 100: Key not found"), "{err}");
    let (code, _, err) = run_at(url, &["member", "update", "1234abcd", "http://127.0.0.1:1"]);
    assert_eq!(code, 4, "{err}");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = run_at(&dead, &["get", &format!("{p}/x")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("Error: cluster unreachable"), "{err}");
    assert_eq!(run_at(&dead, &["cluster-health"]).0, 2);

    // etcdctl's endpoint variables, below --endpoints and DEIMOSCTL_ENDPOINTS.
    let key = format!("{p}/env");
    ok(url, &["set", &key, "from-env"]);
    let with_env = |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_deimosctl"));
        cmd.env_remove("DEIMOSCTL_ENDPOINTS")
            .env_remove("ETCDCTL_ENDPOINTS")
            .env_remove("ETCDCTL_ENDPOINT")
            .envs(vars.iter().copied())
            .args(["get", &key]);
        let o = cmd.output().expect("run deimosctl");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let found = (Some(0), "from-env\n".to_string());
    assert_eq!(with_env(&[("ETCDCTL_ENDPOINTS", url)]), found);
    assert_eq!(with_env(&[("ETCDCTL_ENDPOINT", url)]), found);
    let both = [
        ("DEIMOSCTL_ENDPOINTS", dead.as_str()),
        ("ETCDCTL_ENDPOINTS", url),
    ];
    assert_eq!(with_env(&both).0, Some(2));
}

fn single_member_health_and_update(url: &str) {
    let v = json(url, &["member", "list"]);
    let m = &v["members"][0];
    let id = m["id"].as_str().expect("id").to_string();
    let client = m["clientURLs"][0].as_str().expect("client URL").to_string();
    let peer = m["peerURLs"][0].as_str().expect("peer URL").to_string();

    let out = ok(url, &["cluster-health"]);
    assert_eq!(
        out,
        format!("member {id} is healthy: got healthy result from {client}\ncluster is healthy\n")
    );
    let v = json(url, &["cluster-health"]);
    assert_eq!(v["healthy"], true, "{v}");
    assert_eq!(v["members"][0]["id"], id.as_str(), "{v}");
    assert_eq!(v["members"][0]["health"], "healthy", "{v}");
    assert_eq!(v["members"][0]["url"], client.as_str(), "{v}");

    // Updating to the URL it has keeps a 1-node cluster working.
    assert_eq!(
        ok(url, &["member", "update", &id, &peer]),
        format!("Updated member with ID {id} in cluster\n")
    );
    let v = json(url, &["member", "update", &id, &peer]);
    assert_eq!(v["updated"], id.as_str());
    let v = json(url, &["member", "list"]);
    assert_eq!(v["members"][0]["peerURLs"], serde_json::json!([peer]));
}

fn exec_watch(url: &str) {
    let p = prefix("exec");
    let key = format!("{p}/w");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("events");
    let start = json(url, &["set", &key, "0"])["node"]["modifiedIndex"]
        .as_u64()
        .expect("index");
    // The handler also fails, to show a failing command does not end the watch. --after-index
    // makes the test independent of when the watch reaches the server.
    let mut child = Command::new(env!("CARGO_BIN_EXE_deimosctl"))
        .args(["--endpoints", url, "exec-watch", "-r", "--after-index"])
        .arg(start.to_string())
        .args([&p, "--", "sh", "-c"])
        .arg(r#"echo "$ETCD_WATCH_ACTION $ETCD_WATCH_KEY $ETCD_WATCH_VALUE $ETCD_WATCH_MODIFIED_INDEX" >> "$OUT"; exit 3"#)
        .env("OUT", &file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn exec-watch");
    let i1 = json(url, &["set", &key, "one"])["node"]["modifiedIndex"]
        .as_u64()
        .expect("index");
    let i2 = json(url, &["rm", &key])["node"]["modifiedIndex"]
        .as_u64()
        .expect("index");
    let want = format!("set {key} one {i1}\ndelete {key}  {i2}\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = String::new();
    while Instant::now() < deadline {
        got = std::fs::read_to_string(&file).unwrap_or_default();
        if got.lines().count() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGTERM ends the watch cleanly.
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.is_ok_and(|s| s.success()));
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("exec-watch ignored SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(got, want, "stderr: {err}");
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    assert_eq!(err.matches("exit status: 3").count(), 2, "{err}");
}

/// The same script through etcdctl and deimosctl (each on its own keys): same exit statuses,
/// same stdout in etcdctl's default `simple` format.
fn same_as_etcdctl(url: &str) {
    if !etcdctl_v2_available() {
        println!("SKIP same_as_etcdctl: no etcdctl (apt-get install etcd-client)");
        return;
    }
    let script: &[&[&str]] = &[
        &["set", "P/a", "1"],
        &["mk", "P/a", "2"],
        &["mk", "P/b", "2"],
        &["update", "P/b", "3"],
        &["update", "P/nope", "3"],
        &["setdir", "P/d"],
        &["setdir", "P/d"],
        &["updatedir", "P/d", "--ttl", "100"],
        &["updatedir", "P/nope", "--ttl", "5"],
        &["set", "P/d/x", "ex"],
        &["mkdir", "P/d/sub"],
        &["mkdir", "P/d/sub"],
        &["ls", "-p", "-r", "--sort", "P"],
        &["ls", "--sort", "P"],
        &["ls", "P/nope"],
        &["get", "P/a"],
        &["get", "P/d"],
        &["get", "P/nope"],
        &["get"],
        &["rm", "P/d"],
        &["rmdir", "P/d"],
        &["rm", "-r", "P/d"],
        &["rm", "P/a"],
        &["rmdir", "P/nope"],
        &["watch", "--after-index", "1", "P/b"],
        &["member", "list"],
        // Not compared: for an unknown member ID etcdctl checks the list itself and exits 1;
        // deimosctl sends the request and exits 4 on the server's 404.
    ];
    let (pe, pd) = (prefix("etcdctl"), prefix("deimosctl"));
    for args in script {
        let with = |p: &str| -> Vec<String> {
            args.iter()
                .map(|a| match a.strip_prefix('P') {
                    Some(rest) => format!("{p}{rest}"),
                    None => a.to_string(),
                })
                .collect()
        };
        let ea = with(&pe);
        let ea: Vec<&str> = ea.iter().map(String::as_str).collect();
        let (ecode, eout, eerr) = etcdctl(url, &ea);
        let da = with(&pd);
        let mut dargs = vec!["-o", "simple"];
        dargs.extend(da.iter().map(String::as_str));
        let o = ctl(url, &dargs);
        let dcode = o.status.code().unwrap_or(-1);
        let dout = String::from_utf8_lossy(&o.stdout).replace(&pd, &pe);
        assert_eq!(
            (dcode, dout.as_str()),
            (ecode, eout.as_str()),
            "{args:?}: etcdctl said {eerr:?}, deimosctl {:?}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let dead = format!("http://127.0.0.1:{}", free_port());
    assert_eq!(etcdctl(&dead, &["get", "/x"]).0, 2);
    assert_eq!(run_at(&dead, &["get", "/x"]).0, 2);
}
