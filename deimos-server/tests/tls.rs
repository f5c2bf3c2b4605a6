//! Mutual TLS on the client and peer listeners, with real `deimos` processes and certificates
//! made in the test: key operations over https with a client certificate work; no certificate,
//! an unknown CA, an expired certificate and plaintext are refused; a member whose peer
//! certificate comes from another CA cannot join.

mod common;

use std::time::Duration;

use common::{
    client_tls, cluster, eventually, eventually_answers, eventually_contains, options, request,
    request_body, start_deimos, wait_watchers,
};
use deimos_tests::tls::{with_mutual_tls, Ca};
use deimos_tests::{free_port, metric_sum};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_cluster_serves_keys_and_refuses_strangers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    let other = Ca::new(d, "other-ca");
    let c = cluster(3, with_mutual_tls(options(), d, 3, |_| &ca));
    let ports: Vec<u16> = (0..3).map(|i| c.node(i).client_port).collect();
    let client = ca.leaf(d, "client", false);
    let good = client_tls(&ca.cert_path, Some(&client));
    let port = ports[0];
    // A client that connects and never starts the handshake must not hold up anyone else.
    let _silent = eventually(Duration::from_secs(10), "a TCP connection", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;

    // Every member healthy over https means the peers found each other over mutual TLS.
    for &p in &ports {
        let health = ("GET", "/health", None);
        eventually_answers(
            p,
            Some(good.clone()),
            health,
            &[200],
            Duration::from_secs(20),
        )
        .await;
    }

    // set / get / CAS / delete.
    let r = request(
        port,
        Some(good.clone()),
        "PUT",
        "/v2/keys/tls/a",
        Some("value=1"),
        &[],
    )
    .await
    .expect("set");
    assert_eq!(r.status, 201, "{r:?}");
    let other_port = ports[2];
    let r = request(
        other_port,
        Some(good.clone()),
        "GET",
        "/v2/keys/tls/a?quorum=true",
        None,
        &[],
    )
    .await
    .expect("get");
    assert_eq!(r.json()["node"]["value"], "1", "{r:?}");
    let r = request(
        port,
        Some(good.clone()),
        "PUT",
        "/v2/keys/tls/a?prevValue=0",
        Some("value=2"),
        &[],
    )
    .await
    .expect("cas");
    assert_eq!(r.status, 412, "failed CAS: {r:?}");
    let r = request(
        port,
        Some(good.clone()),
        "PUT",
        "/v2/keys/tls/a?prevValue=1",
        Some("value=2"),
        &[],
    )
    .await
    .expect("cas");
    assert_eq!(r.status, 200, "CAS: {r:?}");

    // A watch on one member sees a write made through another.
    let watch = {
        let tls = good.clone();
        tokio::spawn(async move {
            request(
                other_port,
                Some(tls),
                "GET",
                "/v2/keys/tls/w?wait=true",
                None,
                &[],
            )
            .await
        })
    };
    wait_watchers(&[other_port], Some(good.clone()), 1).await;
    let r = request(
        port,
        Some(good.clone()),
        "PUT",
        "/v2/keys/tls/w",
        Some("value=seen"),
        &[],
    )
    .await
    .expect("set watched");
    assert_eq!(r.status, 201);
    let w = tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("watch fires")
        .expect("watch task")
        .expect("watch reply");
    assert_eq!(w.json()["node"]["value"], "seen", "{w:?}");

    let r = request(
        port,
        Some(good.clone()),
        "DELETE",
        "/v2/keys/tls/a",
        None,
        &[],
    )
    .await
    .expect("delete");
    assert_eq!(r.status, 200, "{r:?}");

    // Refusals: no client certificate, a client certificate from another CA, an expired one,
    // and plain HTTP. None of them may take the server down.
    let no_cert = request(
        port,
        Some(client_tls(&ca.cert_path, None)),
        "GET",
        "/v2/keys/",
        None,
        &[],
    )
    .await;
    assert!(
        no_cert.is_err(),
        "client without certificate accepted: {no_cert:?}"
    );
    let stranger = other.leaf(d, "stranger", false);
    let r = request(
        port,
        Some(client_tls(&ca.cert_path, Some(&stranger))),
        "GET",
        "/v2/keys/",
        None,
        &[],
    )
    .await;
    assert!(r.is_err(), "client from another CA accepted: {r:?}");
    let expired = ca.leaf(d, "expired", true);
    let r = request(
        port,
        Some(client_tls(&ca.cert_path, Some(&expired))),
        "GET",
        "/v2/keys/",
        None,
        &[],
    )
    .await;
    assert!(r.is_err(), "expired client certificate accepted: {r:?}");
    let plain = request(port, None, "GET", "/v2/keys/", None, &[]).await;
    let plain = plain.expect("plaintext gets a plain-HTTP refusal");
    assert_eq!(plain.status, 400, "plaintext must be refused: {plain:?}");
    assert!(plain.body.contains("HTTPS server"), "{plain:?}");
    // The server's certificate is checked by the client too: trusting another CA fails.
    let r = request(
        port,
        Some(client_tls(&other.cert_path, Some(&stranger))),
        "GET",
        "/v2/keys/",
        None,
        &[],
    )
    .await;
    assert!(
        r.is_err(),
        "server certificate accepted by a client trusting another CA"
    );

    // Still serving after all that, and every refusal was logged with the reason.
    let r = request(port, Some(good.clone()), "GET", "/v2/keys/tls/w", None, &[])
        .await
        .expect("still serving");
    assert_eq!(r.status, 200);

    // A proxy reaches https members with the peer TLS files (mutual TLS to the client port).
    let proxy_leaf = ca.leaf(d, "proxy", false);
    let pp = free_port();
    let _proxy = start_deimos(
        d,
        "proxy",
        &[
            "--proxy".into(),
            "on".into(),
            "--listen-client-urls".into(),
            format!("http://127.0.0.1:{pp}"),
            "--proxy-endpoints".into(),
            format!("https://127.0.0.1:{port}"),
            "--peer-cert-file".into(),
            proxy_leaf.cert.display().to_string(),
            "--peer-key-file".into(),
            proxy_leaf.key.display().to_string(),
            "--peer-ca-file".into(),
            ca.cert_path.display().to_string(),
        ],
    );
    let get_w = ("GET", "/v2/keys/tls/w", None);
    let r = eventually_answers(pp, None, get_w, &[200], Duration::from_secs(10)).await;
    assert_eq!(r.json()["node"]["value"], "seen", "{r:?}");

    let refusals = ["TLS handshake failed", "refused plaintext connection"];
    eventually_contains(Duration::from_secs(5), || c.node(0).log_text(), &refusals).await;
    let log = c.node(0).log_text();
    assert!(log.contains("TLS handshake failed"), "{log}");
    assert!(log.contains("refused plaintext connection"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_with_certificate_from_another_ca_cannot_join() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    let other = Ca::new(d, "other-ca");
    // n3's peer certificate (and the CA it trusts) come from another CA.
    let issuer = |i: usize| if i == 2 { &other } else { &ca };
    let c = cluster(3, with_mutual_tls(options(), d, 3, issuer));
    let ports: Vec<u16> = (0..3).map(|i| c.node(i).client_port).collect();
    let good = client_tls(&ca.cert_path, Some(&ca.leaf(d, "client", false)));
    let port = ports[0];
    // n1 and n2 form a quorum and accept writes.
    let put_x = ("PUT", "/v2/keys/x", Some("value=1"));
    eventually_answers(
        port,
        Some(good.clone()),
        put_x,
        &[201, 200],
        Duration::from_secs(20),
    )
    .await;
    // n3 never receives it: the others refuse its certificate and it refuses theirs. Once the
    // good members have failed to send to n3 twice more since the write was acknowledged, the
    // leader has tried to replicate the write to it (every failure on n1 and n2 is towards n3).
    let failures = || async {
        let mut sum = 0.0;
        for &p in &ports[..2] {
            let m = request(p, Some(good.clone()), "GET", "/metrics", None, &[])
                .await
                .expect("metrics")
                .body;
            sum += metric_sum(&m, "deimos_network_peer_send_failures_total", &[]);
        }
        sum
    };
    let acked = failures().await;
    eventually(
        Duration::from_secs(20),
        "sends to n3 after the write",
        || async { (failures().await >= acked + 2.0).then_some(()) },
    )
    .await;
    let bad = client_tls(&other.cert_path, Some(&other.leaf(d, "client3", false)));
    let r = request(ports[2], Some(bad), "GET", "/raft/status", None, &[])
        .await
        .expect("n3 status");
    let st = r.json();
    assert!(st["leader"].is_null(), "n3 joined the cluster: {st}");
    // It holds only its own bootstrap entries (an AddVoter and a member record per member)...
    assert_eq!(
        st["commitIndex"].as_u64().unwrap_or(u64::MAX),
        6,
        "n3 got entries beyond its bootstrap: {st}"
    );
    // ...and never saw the write the other two committed.
    let bad = client_tls(&other.cert_path, Some(&other.leaf(d, "client3b", false)));
    let r = request(
        ports[2],
        Some(bad),
        "GET",
        "/v2/keys/x?consistency=local",
        None,
        &[],
    )
    .await
    .expect("n3 local read");
    assert_eq!(r.status, 404, "n3 has the cluster's write: {}", r.body);
    // Each side logs the refusal with rustls' reason: servers "TLS handshake failed", clients
    // "peer send failed" with the certificate error (n3 sends once it campaigns).
    let good_logs = || c.node(0).log_text() + &c.node(1).log_text();
    let within = Duration::from_secs(20);
    eventually_contains(within, good_logs, &["TLS handshake failed", "Unknown"]).await;
    let n3_refusals = ["peer send failed", "UnknownIssuer"];
    eventually_contains(within, || c.node(2).log_text(), &n3_refusals).await;
    let logs = good_logs();
    assert!(logs.contains("TLS handshake failed"), "{logs}");
    assert!(
        logs.contains("Unknown"),
        "handshake failure names the reason: {logs}"
    );
    let log3 = c.node(2).log_text();
    assert!(log3.contains("peer send failed"), "{log3}");
    assert!(
        log3.contains("UnknownIssuer"),
        "n3 names the reason: {log3}"
    );
    assert!(!(logs + &log3).contains("panicked"));
}

/// Issue 18: with peer TLS on, a certificate from the cluster's own CA speaks only for the
/// member it names (by its advertised peer host, or by its id). A certificate for another host
/// claiming to be a member is refused (403) and counted before anything reaches Raft, and the
/// write it carried is never made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_certificate_speaks_only_for_the_member_it_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    let c = cluster(3, with_mutual_tls(options(), d, 3, |_| &ca));
    let client_ports: Vec<u16> = (0..3).map(|i| c.node(i).client_port).collect();
    let peer_ports: Vec<u16> = (0..3).map(|i| c.node(i).peer_port).collect();
    let good = client_tls(&ca.cert_path, Some(&ca.leaf(d, "client", false)));
    let port = client_ports[0];
    let put_acked = ("PUT", "/v2/keys/acked", Some("value=1"));
    eventually_answers(
        port,
        Some(good.clone()),
        put_acked,
        &[201],
        Duration::from_secs(20),
    )
    .await;
    // Who is who: the cluster id and each member's id by peer port; the leader.
    let r = request(
        peer_ports[0],
        Some(good.clone()),
        "GET",
        "/members",
        None,
        &[],
    )
    .await
    .expect("peer /members");
    let cluster_id = r.headers["x-etcd-cluster-id"]
        .to_str()
        .expect("cluster id")
        .to_string();
    let ids: Vec<u64> = peer_ports
        .iter()
        .map(|p| {
            let url = format!("https://127.0.0.1:{p}");
            r.json()["members"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["peerURLs"][0] == url.as_str())
                .and_then(|m| u64::from_str_radix(m["id"].as_str()?, 16).ok())
                .unwrap_or_else(|| panic!("member at {url} in {}", r.body))
        })
        .collect();
    let status = request(port, Some(good.clone()), "GET", "/raft/status", None, &[])
        .await
        .expect("status")
        .json();
    let leader = ids
        .iter()
        .position(|&id| status["leader"] == format!("{id:016x}").as_str())
        .unwrap_or_else(|| panic!("leader among {ids:x?}: {status}"));
    let follower = (leader + 1) % 3;

    // Same CA, another host: it may not claim to be the follower.
    let intruder = ca.leaf_for(d, "intruder", &["intruder.invalid"], false);
    let intruder_tls = client_tls(&ca.cert_path, Some(&intruder));
    let from = format!("{:016x}", ids[follower]);
    let r = request_body(
        peer_ports[leader],
        Some(intruder_tls),
        "POST",
        "/raft/messages",
        Some((
            "application/octet-stream",
            deimos_tests::forge::forged_write(ids[follower], ids[leader], 0, "/forged"),
        )),
        &[("x-etcd-cluster-id", &cluster_id), ("x-server-from", &from)],
    )
    .await
    .expect("intruder's request is answered");
    assert_eq!(r.status, 403, "intruder accepted: {r:?}");
    let metrics = request(
        client_ports[leader],
        Some(good.clone()),
        "GET",
        "/metrics",
        None,
        &[],
    )
    .await
    .expect("metrics")
    .body;
    assert!(
        metrics.contains(r#"deimos_peer_messages_refused_total{reason="certificate_mismatch"} 1"#),
        "refusal not counted:\n{metrics}"
    );

    // The cluster still writes, and that write is the barrier: had the forged proposal gone
    // into the log, it would be there before this one. Nothing was written, and what was
    // acknowledged is intact.
    let r = request(
        port,
        Some(good.clone()),
        "PUT",
        "/v2/keys/after",
        Some("value=1"),
        &[],
    )
    .await
    .expect("write after");
    assert_eq!(r.status, 201, "{r:?}");
    for (key, want) in [("forged", 404), ("acked", 200)] {
        let r = request(
            port,
            Some(good.clone()),
            "GET",
            &format!("/v2/keys/{key}?quorum=true"),
            None,
            &[],
        )
        .await
        .expect("read");
        assert_eq!(r.status, want, "/{key}: {r:?}");
    }
    let log = c.node(leader).log_text();
    assert!(
        log.contains("certificate_mismatch") || log.contains("names neither"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}
