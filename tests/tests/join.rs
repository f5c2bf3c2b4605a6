//! A member added through the API and started with `--initial-cluster-state existing` learns the
//! whole membership by replication (the bootstrap membership is in the log, not only in the
//! founders' initial state) and serves the data — it never believes it is alone.

use std::time::{Duration, Instant};

use deimos_tests::{Cluster, Joiner};

#[test]
fn added_member_joins_and_catches_up() {
    let cluster = Cluster::start(3);
    let l = cluster.wait_leader(Duration::from_secs(10));
    for i in 0..3 {
        assert!(cluster.set(i, &format!("/join/k{i}"), "v").status < 300);
    }
    let mut n4 = Joiner::new(&cluster, "n4");
    let body = format!(r#"{{"peerURLs":["{}"],"name":"n4"}}"#, n4.peer_url());
    let added = cluster.http().must(
        "POST",
        &format!("{}/v2/members", cluster.client_url(l)),
        Some(("application/json", body.as_bytes())),
    );
    assert_eq!(added.status, 201, "{added:?}");
    let id = added.json()["id"].as_str().unwrap().to_string();
    n4.start(&cluster);

    let url = n4.client_url();
    let deadline = Instant::now() + Duration::from_secs(20);
    let outcome = loop {
        let st = cluster.http().request(
            "GET",
            &format!("{url}/raft/status"),
            None,
            Duration::from_secs(1),
        );
        let keys = cluster.http().request(
            "GET",
            &format!("{url}/v2/keys/join?recursive=true&consistency=local"),
            None,
            Duration::from_secs(1),
        );
        if let (Ok(st), Ok(keys)) = (st, keys) {
            let s = st.json();
            let voters = s["voters"].as_array().map_or(0, Vec::len);
            let n = keys.json()["node"]["nodes"].as_array().map_or(0, Vec::len);
            if s["role"] == "follower" && voters == 4 && n == 3 && s["id"] == id.as_str() {
                break Ok(s);
            }
            if s["role"] == "leader" && voters < 4 {
                break Err(format!(
                    "joining node elected itself with {voters} voters: {s}"
                ));
            }
        }
        if Instant::now() > deadline {
            break Err("joining node did not catch up in 20 s".to_string());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if let Err(e) = outcome {
        panic!("{e}\n{}\n{}", n4.log_tail(400), cluster.log_tails(20));
    }
    drop(n4);
    // The founders count the newcomer too.
    let st = cluster.status(l).unwrap();
    assert_eq!(st.raw["voters"].as_array().map_or(0, Vec::len), 4);
}
