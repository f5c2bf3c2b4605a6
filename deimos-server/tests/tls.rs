//! Mutual TLS on the client and peer listeners, with real `deimos` processes and certificates
//! made in the test: key operations over https with a client certificate work; no certificate,
//! an unknown CA, an expired certificate and plaintext are refused; a member whose peer
//! certificate comes from another CA cannot join.

mod common;

use std::time::Duration;

use common::{client_tls, eventually, request, Ca, ClusterSpec, Proc};

fn tls_args(ca: &Ca, leaf: &common::Leaf) -> Vec<String> {
    let (c, k, a) = (
        leaf.cert.display().to_string(),
        leaf.key.display().to_string(),
        ca.cert_path.display().to_string(),
    );
    vec![
        "--cert-file".into(),
        c.clone(),
        "--key-file".into(),
        k.clone(),
        "--ca-file".into(),
        a.clone(),
        "--peer-cert-file".into(),
        c,
        "--peer-key-file".into(),
        k,
        "--peer-ca-file".into(),
        a,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_cluster_serves_keys_and_refuses_strangers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    let other = Ca::new(d, "other-ca");
    let spec = ClusterSpec::new(3, "https");
    let mut procs = Vec::new();
    for i in 0..3 {
        let leaf = ca.leaf(d, &format!("n{}", i + 1), false);
        let mut args = spec.args(d, i);
        args.extend(tls_args(&ca, &leaf));
        procs.push(Proc::start(d, &format!("n{}", i + 1), &args));
    }
    let client = ca.leaf(d, "client", false);
    let good = client_tls(&ca.cert_path, Some(&client));
    let port = spec.client_ports[0];
    // A client that connects and never starts the handshake must not hold up anyone else.
    let _silent = eventually(Duration::from_secs(10), "a TCP connection", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;

    // Every member healthy over https means the peers found each other over mutual TLS.
    for &p in &spec.client_ports {
        let tls = good.clone();
        eventually(Duration::from_secs(20), "healthy member over https", || {
            let tls = tls.clone();
            async move {
                let r = request(p, Some(tls), "GET", "/health", None, &[])
                    .await
                    .ok()?;
                (r.status == 200).then_some(())
            }
        })
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
    let other_port = spec.client_ports[2];
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
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    let pp = common::free_port();
    let _proxy = Proc::start(
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
    let r = eventually(
        Duration::from_secs(10),
        "a read through the proxy",
        || async move {
            let r = request(pp, None, "GET", "/v2/keys/tls/w", None, &[])
                .await
                .ok()?;
            (r.status == 200).then_some(r)
        },
    )
    .await;
    assert_eq!(r.json()["node"]["value"], "seen", "{r:?}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = procs[0].log_text();
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
    let spec = ClusterSpec::new(3, "https");
    let mut procs = Vec::new();
    for i in 0..3 {
        // n3's peer certificate (and the CA it trusts) come from another CA.
        let issuer = if i == 2 { &other } else { &ca };
        let leaf = issuer.leaf(d, &format!("n{}", i + 1), false);
        let mut args = spec.args(d, i);
        args.extend(tls_args(issuer, &leaf));
        procs.push(Proc::start(d, &format!("n{}", i + 1), &args));
    }
    let good = client_tls(&ca.cert_path, Some(&ca.leaf(d, "client", false)));
    let port = spec.client_ports[0];
    // n1 and n2 form a quorum and accept writes.
    eventually(
        Duration::from_secs(20),
        "write on the two good members",
        || {
            let tls = good.clone();
            async move {
                let r = request(port, Some(tls), "PUT", "/v2/keys/x", Some("value=1"), &[])
                    .await
                    .ok()?;
                (r.status == 201 || r.status == 200).then_some(())
            }
        },
    )
    .await;
    // n3 never receives it: the others refuse its certificate and it refuses theirs.
    let bad = client_tls(&other.cert_path, Some(&other.leaf(d, "client3", false)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = request(
        spec.client_ports[2],
        Some(bad),
        "GET",
        "/raft/status",
        None,
        &[],
    )
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
        spec.client_ports[2],
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
    // "peer send failed" with the certificate error.
    let logs = procs[0].log_text() + &procs[1].log_text();
    assert!(logs.contains("TLS handshake failed"), "{logs}");
    assert!(
        logs.contains("Unknown"),
        "handshake failure names the reason: {logs}"
    );
    let log3 = procs[2].log_text();
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
    let spec = ClusterSpec::new(3, "https");
    let mut procs = Vec::new();
    for i in 0..3 {
        let leaf = ca.leaf(d, &format!("n{}", i + 1), false);
        let mut args = spec.args(d, i);
        args.extend(tls_args(&ca, &leaf));
        procs.push(Proc::start(d, &format!("n{}", i + 1), &args));
    }
    let good = client_tls(&ca.cert_path, Some(&ca.leaf(d, "client", false)));
    let port = spec.client_ports[0];
    {
        let tls = good.clone();
        eventually(Duration::from_secs(20), "an acknowledged write", || {
            let tls = tls.clone();
            async move {
                let r = request(
                    port,
                    Some(tls),
                    "PUT",
                    "/v2/keys/acked",
                    Some("value=1"),
                    &[],
                )
                .await
                .ok()?;
                (r.status == 201).then_some(())
            }
        })
        .await;
    }
    // Who is who: the cluster id and each member's id by peer port; the leader.
    let r = request(
        spec.peer_ports[0],
        Some(good.clone()),
        "GET",
        "/members",
        None,
        &[],
    )
    .await
    .expect("peer /members");
    let cluster = r.headers["x-etcd-cluster-id"]
        .to_str()
        .expect("cluster id")
        .to_string();
    let ids: Vec<u64> = spec
        .peer_ports
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
    let r = common::request_body(
        spec.peer_ports[leader],
        Some(intruder_tls),
        "POST",
        "/raft/messages",
        Some((
            "application/octet-stream",
            deimos_tests::forge::forged_write(ids[follower], ids[leader], 0, "/forged"),
        )),
        &[("x-etcd-cluster-id", &cluster), ("x-server-from", &from)],
    )
    .await
    .expect("intruder's request is answered");
    assert_eq!(r.status, 403, "intruder accepted: {r:?}");
    let metrics = request(
        spec.client_ports[leader],
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

    // Nothing was written, what was acknowledged is intact, and the cluster still writes.
    tokio::time::sleep(Duration::from_millis(500)).await;
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
    let log = procs[leader].log_text();
    assert!(
        log.contains("certificate_mismatch") || log.contains("names neither"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}
