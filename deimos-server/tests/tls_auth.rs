//! With client TLS (`--ca-file`: client certificates required and verified), a request without
//! basic-auth credentials is the user its certificate's common name names, as etcd's
//! `--client-cert-auth` does; a certificate naming no user is a guest; basic auth, when sent,
//! decides instead.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{client_tls, cluster, eventually_answers, options, request};
use deimos_tests::tls::{with_mutual_tls, Ca};

async fn call(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let r = request(port, Some(tls.clone()), method, path, body, headers)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (r.status, r.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_common_name_authenticates_its_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    let c = cluster(1, with_mutual_tls(options(), d, 1, |_| &ca));
    let port = c.node(0).client_port;
    let as_cn = |cn: &str| client_tls(&ca.cert_path, Some(&ca.leaf(d, cn, false)));
    let (root, alice, stranger) = (as_cn("root"), as_cn("alice"), as_cn("stranger"));
    let ready = ("PUT", "/v2/keys/ready", Some("value=1"));
    eventually_answers(
        port,
        Some(root.clone()),
        ready,
        &[201, 200],
        Duration::from_secs(20),
    )
    .await;

    let setup = [
        (
            "/v2/auth/users/root",
            r#"{"user":"root","password":"rootpw"}"#,
        ),
        (
            "/v2/auth/roles/rfoo",
            r#"{"role":"rfoo","permissions":{"kv":{"read":["/foo/*"],"write":["/foo/*"]}}}"#,
        ),
        (
            "/v2/auth/users/alice",
            r#"{"user":"alice","password":"alicepw","roles":["rfoo"]}"#,
        ),
    ];
    for (path, body) in setup {
        let (s, v) = call(port, &root, "PUT", path, Some(body), &[]).await;
        assert!(matches!(s, 200 | 201), "{path}: {s} {v}");
    }
    assert_eq!(
        call(port, &root, "PUT", "/v2/auth/enable", None, &[])
            .await
            .0,
        200
    );

    // The root certificate is root: it may narrow the guest role without a password.
    let narrow = r#"{"role":"guest","revoke":{"kv":{"write":["/*"]}}}"#;
    let (s, v) = call(
        port,
        &stranger,
        "PUT",
        "/v2/auth/roles/guest",
        Some(narrow),
        &[],
    )
    .await;
    assert_eq!(s, 401, "a certificate naming no user is no root: {v}");
    let (s, v) = call(
        port,
        &root,
        "PUT",
        "/v2/auth/roles/guest",
        Some(narrow),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{v}");

    let (s, v) = call(port, &alice, "PUT", "/v2/keys/foo/a", Some("value=1"), &[]).await;
    assert!(
        matches!(s, 200 | 201),
        "alice's certificate writes /foo: {s} {v}"
    );
    let (s, v) = call(port, &alice, "PUT", "/v2/keys/bar", Some("value=1"), &[]).await;
    assert_eq!((s, &v["errorCode"]), (401, &serde_json::json!(110)), "{v}");
    let (s, v) = call(
        port,
        &stranger,
        "PUT",
        "/v2/keys/foo/a",
        Some("value=1"),
        &[],
    )
    .await;
    assert_eq!(s, 401, "a stranger is a guest, which may not write: {v}");
    let (s, _) = call(port, &stranger, "GET", "/v2/keys/foo/a", None, &[]).await;
    assert_eq!(s, 200, "the guest still reads");
    // Basic credentials, when present, decide: a wrong password is refused whatever the
    // certificate says.
    let wrong = [("authorization", "Basic YWxpY2U6bm9wZQ==")]; // alice:nope
    let (s, _) = call(port, &alice, "GET", "/v2/keys/foo/a", None, &wrong).await;
    assert_eq!(s, 401);
}
