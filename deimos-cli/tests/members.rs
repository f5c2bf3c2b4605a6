//! `deimosctl member add --learner`, `member promote`, `member list`, `member update`,
//! `cluster-health` and the reconfiguration checks, end to end against a real 3-node Deimos
//! cluster (etcd's v2 API has no learners).
//! The endpoint list starts with every node, so some commands land on a follower, which
//! forwards them to the leader.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use deimos_tests::{free_port, Cluster, Joiner};

const LEADER: Duration = Duration::from_secs(15);

/// Runs deimosctl against `endpoints`; (exit code, stdout, stderr).
fn run(endpoints: &str, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_deimosctl"))
        .args(["--endpoints", endpoints, "--timeout", "5s"])
        .args(args)
        .output()
        .expect("run deimosctl");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(endpoints: &str, args: &[&str]) -> String {
    let (code, out, err) = run(endpoints, args);
    assert_eq!(code, 0, "deimosctl {args:?} failed: {err}");
    out
}

/// `member list` as (id, name, is learner) rows from the table.
fn list(endpoints: &str) -> Vec<(String, String, String)> {
    let out = ok(endpoints, &["member", "list"]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header.last(), Some(&"LEARNER"), "{out}");
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            let last = cells.last().expect("cells").to_string();
            (cells[0].to_string(), cells[1].to_string(), last)
        })
        .collect()
}

#[test]
fn member_add_learner_promote_and_the_quorum_check() {
    let mut c = Cluster::start(3);
    let l = c.wait_leader(LEADER);
    c.wait_members_published(LEADER);
    // A follower first: membership changes there are redirected to the leader.
    let f = (0..3).find(|&i| i != l).unwrap();
    let mut order = vec![f];
    order.extend((0..3).filter(|&i| i != f));
    let eps = order
        .iter()
        .map(|&i| c.client_url(i))
        .collect::<Vec<_>>()
        .join(",");

    let mut j = Joiner::new(&c, "n4");
    let peer = j.peer_url();
    let out = ok(
        &eps,
        &["member", "add", "n4", "--peer-urls", &peer, "--learner"],
    );
    assert!(
        out.starts_with("Added member n4 with ID ") && out.trim_end().ends_with(" as a learner"),
        "{out}"
    );
    let id = out.split_whitespace().nth(5).expect("id").to_string();
    let rows = list(&eps);
    assert_eq!(rows.len(), 4, "{rows:?}");
    for (rid, name, learner) in &rows {
        let want = if *rid == id { "true" } else { "false" };
        assert_eq!(learner, want, "{name}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&ok(&eps, &["-o", "json", "member", "list"])).expect("JSON");
    let n4 = v["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["id"] == id.as_str()))
        .expect("n4 listed")
        .clone();
    assert_eq!(n4["isLearner"], true, "{v}");

    // Not started: not in sync, exit 4 with the server's message.
    let (code, _, err) = run(&eps, &["member", "promote", &id]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.starts_with(
            "Error: 409: membership: can only promote a learner member which is in sync with leader"
        ),
        "{err}"
    );
    assert_eq!(run(&eps, &["member", "promote", "not-hex"]).0, 1);

    // Started, it catches up; promotion then succeeds.
    j.start(&c);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, err) = run(&eps, &["member", "promote", &id]);
        if code == 0 {
            assert_eq!(out.trim(), format!("Promoted member {id} to voter"));
            break;
        }
        assert!(
            err.contains("in sync") || err.contains("in progress"),
            "unexpected refusal: {err}"
        );
        assert!(
            Instant::now() < deadline,
            "never promotable: {err}\n{}",
            j.log_tail(30)
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert!(list(&eps).iter().all(|(_, _, learner)| learner == "false"));
    let (code, _, err) = run(&eps, &["member", "promote", &id]);
    assert_eq!((code, err.contains("is not one")), (4, true), "{err}");

    // Back to three voters, then one of them down: adding a voter is refused, unless forced.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _, err) = run(&eps, &["member", "remove", &id]);
        if code == 0 {
            break;
        }
        assert!(
            err.contains("in progress") && Instant::now() < deadline,
            "{err}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    drop(j);
    let l = c.wait_leader(LEADER);
    let down = (0..3).find(|&i| i != l).unwrap();
    let down_id = c.status(down).expect("status").id;
    c.kill9(down);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c
        .status(l)
        .is_none_or(|s| s.raw["progress"][&down_id]["active"] != false)
    {
        assert!(Instant::now() < deadline, "killed member still active");
        thread::sleep(Duration::from_millis(50));
    }
    let leader = c.client_url(l);
    let n5 = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = run(&leader, &["member", "add", "n5", "--peer-urls", &n5]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.starts_with(
            "Error: 409: membership: too many unavailable members to add a voter safely"
        ),
        "{err}"
    );
    let out = ok(
        &leader,
        &[
            "-o",
            "json",
            "member",
            "add",
            "n5",
            "--peer-urls",
            &n5,
            "--force",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["name"], "n5", "{v}");
    assert_eq!(v["isLearner"], false, "{v}");
}

/// `member update` sent to a follower reaches the leader; `cluster-health` reports every member
/// healthy, then exits 5 with etcdctl's "unreachable" line once one is killed.
#[test]
fn member_update_and_cluster_health() {
    let mut c = Cluster::start(3);
    let l = c.wait_leader(LEADER);
    c.wait_members_published(LEADER);
    let f = (0..3).find(|&i| i != l).unwrap();
    let follower = c.client_url(f);
    let all = (0..3)
        .map(|i| c.client_url(i))
        .collect::<Vec<_>>()
        .join(",");

    // Each member's peer URLs set to what they are (changing them would cut the member off).
    let v: serde_json::Value =
        serde_json::from_str(&ok(&all, &["-o", "json", "member", "list"])).expect("JSON");
    let members = v["members"].as_array().expect("members").clone();
    assert_eq!(members.len(), 3, "{v}");
    for m in &members {
        let id = m["id"].as_str().expect("id");
        let peers: Vec<&str> = m["peerURLs"]
            .as_array()
            .expect("peer URLs")
            .iter()
            .filter_map(|u| u.as_str())
            .collect();
        let out = ok(&follower, &["member", "update", id, &peers.join(",")]);
        assert_eq!(out, format!("Updated member with ID {id} in cluster\n"));
    }
    let after: serde_json::Value =
        serde_json::from_str(&ok(&all, &["-o", "json", "member", "list"])).expect("JSON");
    assert_eq!(after["members"], v["members"]);
    let (code, _, err) = run(
        &follower,
        &["member", "update", "1234abcd", "http://127.0.0.1:1"],
    );
    assert_eq!(code, 4, "{err}");

    let out = ok(&all, &["cluster-health"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[..3]
            .iter()
            .all(|l| l.contains(" is healthy: got healthy result from http://")),
        "{out}"
    );
    assert_eq!(lines[3], "cluster is healthy");

    let down = f;
    let down_id = c.status(down).expect("status").id;
    let down_url = c.client_url(down);
    c.kill9(down);
    let (code, out, err) = run(&all, &["cluster-health"]);
    assert_eq!(code, 5, "{out}{err}");
    assert!(
        out.contains(&format!(
            "member {down_id} is unreachable: [{down_url}] are all unreachable\n"
        )),
        "{out}"
    );
    assert!(out.ends_with("cluster is unhealthy\n"), "{out}");
    let (code, out, _) = run(&all, &["-o", "json", "cluster-health"]);
    assert_eq!(code, 5);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["healthy"], false, "{v}");
    let dead = v["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["id"] == down_id.as_str()))
        .expect("killed member listed")
        .clone();
    assert_eq!(dead["health"], "unreachable", "{v}");
}
