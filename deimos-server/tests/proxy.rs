//! `--proxy on|readonly` in front of a 3-node cluster (real processes), and `--cors`.

mod common;

use std::time::Duration;

use common::{eventually, free_port, request, ClusterSpec, Proc};

fn proxy_args(mode: &str, port: u16, endpoints: &str) -> Vec<String> {
    vec![
        "--proxy".into(),
        mode.into(),
        "--listen-client-urls".into(),
        format!("http://127.0.0.1:{port}"),
        "--proxy-endpoints".into(),
        endpoints.into(),
        "--cors".into(),
        "http://allowed.example".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_forwards_reads_writes_and_watches_and_survives_the_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let spec = ClusterSpec::new(3, "http");
    let mut nodes: Vec<Proc> = (0..3)
        .map(|i| {
            let mut args = spec.args(d, i);
            args.extend([
                "--heartbeat-interval".into(),
                "50ms".into(),
                "--election-timeout".into(),
                "500ms".into(),
            ]);
            Proc::start(d, &format!("n{}", i + 1), &args)
        })
        .collect();
    // Find the leader first and list it first, so the proxies are using it when it dies.
    let leader_id = eventually(Duration::from_secs(20), "a leader", || {
        let p = spec.client_ports[0];
        async move {
            let r = request(p, None, "GET", "/raft/status", None, &[])
                .await
                .ok()?;
            r.json()["leader"].as_str().map(str::to_string)
        }
    })
    .await;
    let mut leader = None;
    for (i, &p) in spec.client_ports.iter().enumerate() {
        let r = request(p, None, "GET", "/raft/status", None, &[])
            .await
            .expect("status");
        if r.json()["id"].as_str() == Some(leader_id.as_str()) {
            leader = Some(i);
        }
    }
    let leader = leader.expect("the leader is one of the nodes");
    let mut order: Vec<usize> = (0..3).collect();
    order.retain(|&i| i != leader);
    order.insert(0, leader);
    let endpoints = order
        .iter()
        .map(|&i| format!("http://127.0.0.1:{}", spec.client_ports[i]))
        .collect::<Vec<_>>()
        .join(",");
    let (pp, rp) = (free_port(), free_port());
    // No data dir, no peer listener: a proxy is not a member.
    let proxy = Proc::start(d, "proxy", &proxy_args("on", pp, &endpoints));
    let _ro = Proc::start(d, "ro", &proxy_args("readonly", rp, &endpoints));

    eventually(
        Duration::from_secs(20),
        "a write through the proxy",
        || async move {
            let r = request(pp, None, "PUT", "/v2/keys/p/a", Some("value=1"), &[])
                .await
                .ok()?;
            (r.status == 201 || r.status == 200).then_some(())
        },
    )
    .await;
    let r = request(pp, None, "GET", "/v2/keys/p/a?quorum=true", None, &[])
        .await
        .expect("read through proxy");
    assert_eq!(r.json()["node"]["value"], "1", "{r:?}");
    assert!(
        r.headers.contains_key("x-etcd-index"),
        "index headers pass through"
    );
    let r = request(pp, None, "GET", "/v2/members", None, &[])
        .await
        .expect("members");
    assert_eq!(
        r.json()["members"].as_array().map(Vec::len),
        Some(3),
        "{r:?}"
    );
    let r = request(pp, None, "GET", "/version", None, &[])
        .await
        .expect("version");
    assert_eq!(r.status, 200);

    // A watch long-poll streams back through the proxy.
    let watch =
        tokio::spawn(
            async move { request(pp, None, "GET", "/v2/keys/p/w?wait=true", None, &[]).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    request(pp, None, "PUT", "/v2/keys/p/w", Some("value=seen"), &[])
        .await
        .expect("watched write");
    let w = tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("watch fires")
        .expect("task")
        .expect("reply");
    assert_eq!(w.json()["node"]["value"], "seen", "{w:?}");

    // Readonly: reads pass, writes get 501 with a JSON message.
    let r = request(rp, None, "GET", "/v2/keys/p/a", None, &[])
        .await
        .expect("ro read");
    assert_eq!(r.json()["node"]["value"], "1", "{r:?}");
    let r = request(rp, None, "PUT", "/v2/keys/p/a", Some("value=2"), &[])
        .await
        .expect("ro write");
    assert_eq!(r.status, 501, "{r:?}");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or("")
            .contains("readonly"),
        "{r:?}"
    );
    let r = request(rp, None, "DELETE", "/v2/keys/p/a", None, &[])
        .await
        .expect("ro delete");
    assert_eq!(r.status, 501);

    // CORS through the proxy: an allowed origin is echoed, others get nothing, preflight is 200.
    let r = request(
        pp,
        None,
        "GET",
        "/v2/keys/p/a",
        None,
        &[("origin", "http://allowed.example")],
    )
    .await
    .expect("cors get");
    assert_eq!(
        r.headers
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap_or("")),
        Some("http://allowed.example")
    );
    assert!(r.headers.contains_key("access-control-allow-methods"));
    let r = request(
        pp,
        None,
        "GET",
        "/v2/keys/p/a",
        None,
        &[("origin", "http://evil.example")],
    )
    .await
    .expect("cors get");
    assert!(
        r.headers.get("access-control-allow-origin").is_none(),
        "{r:?}"
    );
    let r = request(
        pp,
        None,
        "OPTIONS",
        "/v2/keys/p/a",
        None,
        &[
            ("origin", "http://allowed.example"),
            ("access-control-request-method", "PUT"),
        ],
    )
    .await
    .expect("preflight");
    assert_eq!(r.status, 200);
    assert!(r.headers.contains_key("access-control-allow-headers"));

    // kill -9 the leader, the member the proxy is using: the proxy moves on to a live member.
    nodes[leader].kill();
    let started = std::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "a write through the proxy after the leader died",
        || async move {
            let r = request(pp, None, "PUT", "/v2/keys/p/after", Some("value=ok"), &[])
                .await
                .ok()?;
            (r.status == 201 || r.status == 200).then_some(())
        },
    )
    .await;
    let r = request(pp, None, "GET", "/v2/keys/p/after?quorum=true", None, &[])
        .await
        .expect("read after failover");
    assert_eq!(r.json()["node"]["value"], "ok", "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!proxy.log_text().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_on_a_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let spec = ClusterSpec::new(1, "http");
    let mut args = spec.args(d, 0);
    args.extend(["--cors".into(), "http://a.example,http://b.example".into()]);
    // The tick flags are accepted by a real node (their precedence is unit-tested in config.rs).
    args.extend([
        "--tick-interval".into(),
        "50ms".into(),
        "--election-timeout-ticks".into(),
        "20".into(),
    ]);
    let _n = Proc::start(d, "n1", &args);
    let p = spec.client_ports[0];
    eventually(Duration::from_secs(10), "node up", || async move {
        let r = request(p, None, "PUT", "/v2/keys/c", Some("value=1"), &[])
            .await
            .ok()?;
        (r.status == 201).then_some(())
    })
    .await;
    let r = request(
        p,
        None,
        "GET",
        "/v2/keys/c",
        None,
        &[("origin", "http://b.example")],
    )
    .await
    .expect("get");
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["access-control-allow-origin"], "http://b.example");
    assert_eq!(
        r.headers["access-control-allow-methods"],
        "POST, GET, OPTIONS, PUT, DELETE"
    );
    let r = request(
        p,
        None,
        "GET",
        "/v2/keys/c",
        None,
        &[("origin", "http://c.example")],
    )
    .await
    .expect("get");
    assert_eq!(r.status, 200);
    assert!(r.headers.get("access-control-allow-origin").is_none());
    let r = request(
        p,
        None,
        "OPTIONS",
        "/v2/keys/c",
        None,
        &[
            ("origin", "http://a.example"),
            ("access-control-request-method", "PUT"),
        ],
    )
    .await
    .expect("preflight");
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["access-control-allow-origin"], "http://a.example");
    let r = request(
        p,
        None,
        "OPTIONS",
        "/v2/keys/c",
        None,
        &[("origin", "http://c.example")],
    )
    .await
    .expect("preflight");
    assert_eq!(r.status, 200);
    assert!(r.headers.get("access-control-allow-origin").is_none());
}
