//! A member added through the API and started with `--initial-cluster-state existing` learns the
//! whole membership by replication (the bootstrap membership is in the log, not only in the
//! founders' initial state) and serves the data — it never believes it is alone.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deimos_tests::harness::{deimos_bin, free_port, Cluster};

#[test]
fn added_member_joins_and_catches_up() {
    let cluster = Cluster::start(3);
    let l = cluster.wait_leader(Duration::from_secs(10));
    for i in 0..3 {
        assert!(cluster.set(i, &format!("/join/k{i}"), "v").status < 300);
    }
    let (client, peer) = (free_port(), free_port());
    let peer_url = format!("http://127.0.0.1:{peer}");
    let body = format!(r#"{{"peerURLs":["{peer_url}"],"name":"n4"}}"#);
    let added = cluster.http().must(
        "POST",
        &format!("{}/v2/members", cluster.client_url(l)),
        Some(("application/json", body.as_bytes())),
    );
    assert_eq!(added.status, 201, "{added:?}");
    let id = added.json()["id"].as_str().unwrap().to_string();

    let data = cluster.dir().join("n4-data");
    let log = std::fs::File::create(cluster.dir().join("n4.log")).unwrap();
    let mut child = Command::new(deimos_bin())
        .args(["--name", "n4", "--initial-cluster-state", "existing"])
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args(["--listen-peer-urls", &peer_url])
        .args([
            "--bootstrap-config",
            &format!("{},n4={peer_url}", cluster.bootstrap_config()),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();

    let url = format!("http://127.0.0.1:{client}");
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
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = outcome {
        let tail = std::fs::read_to_string(cluster.dir().join("n4.log")).unwrap_or_default();
        panic!("{e}\n--- n4 log ---\n{tail}\n{}", cluster.log_tails(20));
    }
    // The founders count the newcomer too.
    let st = cluster.status(l).unwrap();
    assert_eq!(st.raw["voters"].as_array().map_or(0, Vec::len), 4);
}
