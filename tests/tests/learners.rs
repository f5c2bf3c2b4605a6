//! Safe reconfiguration through the members API, against real `deimos` processes (issue 22):
//! a learner joins with `--initial-cluster-state existing`, catches up, is never counted for
//! quorum, never campaigns, and is promoted only once in sync; adding a voter (or removing one)
//! that could cost the cluster its quorum is refused with 409 unless `?force=true`.

use std::thread;
use std::time::{Duration, Instant};

use deimos_tests::{free_port, Cluster, Http, Joiner, Reply};
use serde_json::{json, Value};

const LEADER: Duration = Duration::from_secs(15);

fn members(c: &Cluster, i: usize) -> Vec<Value> {
    c.http()
        .get(&format!("{}/v2/members", c.client_url(i)))
        .json()["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Poll `f` until it holds; panic with `what` and the logs after `timeout`.
fn wait_for(c: &Cluster, timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what} within {timeout:?}\n{}",
            c.log_tails(20)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// A change may be refused for a moment right after the previous one ("in progress"), or while
/// the leader has not yet heard from a member that just came back (`transient`); retry those.
fn retry_409(transient: &str, mut f: impl FnMut() -> Reply) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = f();
        let retry =
            r.status == 409 && (r.body.contains("in progress") || r.body.contains(transient));
        if !retry || Instant::now() > deadline {
            return r;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn message(r: &Reply) -> String {
    r.json()["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_learner_joins_catches_up_without_counting_and_is_promoted_once_in_sync() {
    let mut c = Cluster::start(3);
    let l = c.wait_leader(LEADER);
    c.wait_members_published(LEADER);
    // An HTTP client of its own: the cluster is borrowed mutably to pause and restart nodes.
    let h = Http::new();
    for i in 0..20 {
        assert_eq!(c.set(l, &format!("/learn/k{i}"), "v").status, 201);
    }
    let leader_url = c.client_url(l);
    let mut j = Joiner::new(&c, "n4");
    let r = h.json_body(
        "POST",
        &format!("{leader_url}/v2/members"),
        &json!({ "peerURLs": [j.peer_url()], "name": "n4", "isLearner": true }),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["isLearner"], true, "{r:?}");
    let id = r.json()["id"].as_str().unwrap().to_string();
    for m in members(&c, l) {
        assert_eq!(m["isLearner"], m["id"] == id.as_str(), "{m}");
    }
    let st = c.status(l).unwrap().raw;
    assert_eq!(st["learners"], json!([id]), "{st}");
    assert_eq!(st["voters"].as_array().map(Vec::len), Some(3), "{st}");
    assert_eq!(st["progress"][&id]["learner"], true, "{st}");
    assert_eq!(st["progress"][&id]["active"], false, "{st}");

    // Not started, so not in sync: promotion waits. Voters and strangers are refused too.
    let promote =
        |base: &str, id: &str| h.must("POST", &format!("{base}/v2/members/{id}/promote"), None);
    let r = promote(&leader_url, &id);
    assert_eq!(r.status, 409, "{r:?}");
    assert!(
        message(&r).starts_with(
            "membership: can only promote a learner member which is in sync with leader"
        ),
        "{r:?}"
    );
    let leader_id = c.status(l).unwrap().id;
    let r = promote(&leader_url, &leader_id);
    assert_eq!(r.status, 409, "{r:?}");
    assert!(message(&r).contains("is not one"), "{r:?}");
    assert_eq!(promote(&leader_url, "00000000deadbeef").status, 404);
    let f = (0..3).find(|&i| i != l).unwrap();
    // Through a follower: forwarded to the leader, whose answer comes back.
    let r = promote(&c.client_url(f), &id);
    assert_eq!(r.status, 409, "{r:?}");
    assert!(
        message(&r).starts_with(
            "membership: can only promote a learner member which is in sync with leader"
        ),
        "{r:?}"
    );

    // Started, it catches up from the leader and never campaigns.
    let target = c.status(l).unwrap().commit_index;
    j.start(&c);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = j.status(&c) {
            assert_eq!(s["role"], "follower", "the learner campaigned: {s}");
            let keys = h.get(&format!(
                "{}/v2/keys/learn?recursive=true&consistency=local",
                j.client_url()
            ));
            let n = keys.json()["node"]["nodes"].as_array().map_or(0, Vec::len);
            if s["appliedIndex"].as_u64() >= Some(target) && s["learners"] == json!([id]) && n == 20
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "learner did not catch up: {:?}\n{}\n{}",
            j.status(&c),
            j.log_tail(30),
            c.log_tails(20)
        );
        thread::sleep(Duration::from_millis(50));
    }
    wait_for(
        &c,
        Duration::from_secs(5),
        "leader sees the learner active",
        || {
            c.status(l)
                .is_some_and(|s| s.raw["progress"][&id]["active"] == true)
        },
    );

    // Never counted for quorum: with both other voters paused, the live learner cannot keep
    // the leader in office (check-quorum steps it down), nor does the learner campaign.
    let others: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    for &i in &others {
        c.sigstop(i);
    }
    wait_for(
        &c,
        Duration::from_secs(10),
        "leader stepped down without a voter quorum",
        || c.status(l).is_some_and(|s| s.role != "leader"),
    );
    assert_eq!(
        j.status(&c).map(|s| s["role"].clone()),
        Some(json!("follower"))
    );
    for &i in &others {
        c.sigcont(i);
    }
    let l = c.wait_leader(LEADER);
    let leader_url = c.client_url(l);

    // In sync now: promoted, and a voter on every node.
    let r = retry_409("in sync", || promote(&leader_url, &id));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["isLearner"], false, "{r:?}");
    let mut urls: Vec<String> = (0..3).map(|i| c.client_url(i)).collect();
    urls.push(j.client_url());
    for url in &urls {
        wait_for(
            &c,
            Duration::from_secs(10),
            "every node sees 4 voters",
            || {
                let s = h.get(&format!("{url}/raft/status")).json();
                s["voters"].as_array().map(Vec::len) == Some(4) && s["learners"] == json!([])
            },
        );
    }
    assert!(members(&c, l).iter().all(|m| m["isLearner"] == false));
    let r = h.put_form(
        &format!("{}/v2/keys/learn/after", j.client_url()),
        &[("value", "1")],
    );
    assert_eq!(r.status, 201, "{r:?}");
    // Promoting a voter again is refused.
    assert_eq!(promote(&leader_url, &id).status, 409);
}

#[test]
fn changes_that_could_cost_the_quorum_are_refused_unless_forced() {
    let mut c = Cluster::start(3);
    let l = c.wait_leader(LEADER);
    c.wait_members_published(LEADER);
    // An HTTP client of its own: the cluster is borrowed mutably to pause and restart nodes.
    let h = Http::new();
    let base = c.client_url(l);
    let fs: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let (down, up) = (fs[0], fs[1]);
    let (down_id, up_id) = (c.status(down).unwrap().id, c.status(up).unwrap().id);
    c.kill9(down);
    wait_for(
        &c,
        Duration::from_secs(10),
        "leader sees the killed member inactive",
        || {
            c.status(l)
                .is_some_and(|s| s.raw["progress"][&down_id]["active"] == false)
        },
    );

    // 2 of 3 active: a fourth voter that never starts would leave 2 of 4, no quorum.
    let voter_url = format!("http://127.0.0.1:{}", free_port());
    let add_voter = |query: &str| {
        h.json_body(
            "POST",
            &format!("{base}/v2/members{query}"),
            &json!({ "peerURLs": [voter_url], "name": "n5" }),
        )
    };
    let r = add_voter("");
    assert_eq!(r.status, 409, "{r:?}");
    assert!(
        message(&r).starts_with("membership: too many unavailable members to add a voter safely"),
        "{r:?}"
    );
    assert!(message(&r).contains("force=true overrides"), "{r:?}");
    assert_eq!(members(&c, l).len(), 3, "a refused add recorded something");
    // Removing the live follower would leave 1 active of 2 voters.
    let r = h.delete(&format!("{base}/v2/members/{up_id}"));
    assert_eq!(r.status, 409, "{r:?}");
    assert!(
        message(&r).contains("would leave 1 active of 2 voters"),
        "{r:?}"
    );
    assert_eq!(add_voter("?force=maybe").status, 400);

    // A learner never counts, so adding and removing one needs no check.
    let learner_url = format!("http://127.0.0.1:{}", free_port());
    let r = h.json_body(
        "POST",
        &format!("{base}/v2/members"),
        &json!({ "peerURLs": [learner_url], "isLearner": true }),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let learner_id = r.json()["id"].as_str().unwrap().to_string();
    let r = retry_409("", || h.delete(&format!("{base}/v2/members/{learner_id}")));
    assert_eq!(r.status, 204, "{r:?}");

    // Forced, the add goes through — and costs the quorum exactly as the check warned: the
    // leader, hearing from 2 of 4 voters, steps down.
    let r = retry_409("", || add_voter("?force=true"));
    assert_eq!(r.status, 201, "{r:?}");
    let forced_id = r.json()["id"].as_str().unwrap().to_string();
    wait_for(
        &c,
        Duration::from_secs(10),
        "leader stepped down with 2 of 4 voters",
        || c.status(l).is_some_and(|s| s.role != "leader"),
    );

    // Starting the killed member restores a quorum (3 of 4); the never-started voter can then
    // be removed safely (the 3 that remain are active).
    c.restart(down);
    let l = c.wait_leader(LEADER);
    let base = c.client_url(l);
    let r = retry_409("would leave", || {
        h.delete(&format!("{base}/v2/members/{forced_id}"))
    });
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(c.set(l, "/reconf/after", "1").status, 201);
    assert_eq!(members(&c, l).len(), 3);
}
