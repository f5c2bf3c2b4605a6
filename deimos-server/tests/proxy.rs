//! `--proxy on|readonly` in front of a 3-node cluster (real processes), and `--cors`.

mod common;

use std::time::Duration;

use common::{cluster, eventually_answers, options, request, start_deimos, wait_watchers};
use deimos_tests::{free_port, ClusterOptions};

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
    let mut c = cluster(
        3,
        ClusterOptions {
            heartbeat: Duration::from_millis(50),
            election: Duration::from_millis(500),
            ..options()
        },
    );
    // Find the leader first and list it first, so the proxies are using it when it dies.
    let leader = c.wait_leader(Duration::from_secs(20));
    let mut order: Vec<usize> = (0..3).collect();
    order.retain(|&i| i != leader);
    order.insert(0, leader);
    let endpoints = order
        .iter()
        .map(|&i| c.client_url(i))
        .collect::<Vec<_>>()
        .join(",");
    let (pp, rp) = (free_port(), free_port());
    // No data dir, no peer listener: a proxy is not a member.
    let proxy = start_deimos(c.dir(), "proxy", &proxy_args("on", pp, &endpoints));
    let _ro = start_deimos(c.dir(), "ro", &proxy_args("readonly", rp, &endpoints));

    let put_a = ("PUT", "/v2/keys/p/a", Some("value=1"));
    eventually_answers(pp, None, put_a, &[201, 200], Duration::from_secs(20)).await;
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
    let members: Vec<u16> = (0..3).map(|i| c.node(i).client_port).collect();
    wait_watchers(&members, None, 1).await;
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
    c.kill9(leader);
    let started = std::time::Instant::now();
    let put_after = ("PUT", "/v2/keys/p/after", Some("value=ok"));
    eventually_answers(pp, None, put_after, &[201, 200], Duration::from_secs(10)).await;
    let r = request(pp, None, "GET", "/v2/keys/p/after?quorum=true", None, &[])
        .await
        .expect("read after failover");
    assert_eq!(r.json()["node"]["value"], "ok", "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!proxy.log_text().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_on_a_member() {
    // The tick flags are accepted by a real node (their precedence is unit-tested in config.rs),
    // beside the harness's duration flags, which agree with them: 50 ms x 1 heartbeat tick,
    // 50 ms x 20 election ticks.
    let c = cluster(
        1,
        ClusterOptions {
            heartbeat: Duration::from_millis(50),
            election: Duration::from_millis(1000),
            extra_args: [
                "--cors",
                "http://a.example,http://b.example",
                "--tick-interval",
                "50ms",
                "--election-timeout-ticks",
                "20",
            ]
            .map(String::from)
            .to_vec(),
            ..options()
        },
    );
    let p = c.node(0).client_port;
    let put_c = ("PUT", "/v2/keys/c", Some("value=1"));
    eventually_answers(p, None, put_c, &[201], Duration::from_secs(10)).await;
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
