//! What the server's process tests share beyond `deimos_tests` (which starts and owns the
//! processes, and makes the certificates): the `deimos` binary cargo built for these tests, a
//! one-request-per-connection HTTP(S) client, and polling on its answers.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deimos_tests::process::{deimos_command, Proc};
use deimos_tests::tls::Leaf;
use deimos_tests::{Cluster, ClusterOptions};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

/// The binary under test: the one cargo built for this package's tests.
const DEIMOS: &str = env!("CARGO_BIN_EXE_deimos");

/// Cluster options that run this package's `deimos`.
pub fn options() -> ClusterOptions {
    ClusterOptions {
        bin: Some(DEIMOS.into()),
        ..ClusterOptions::default()
    }
}

/// `n` nodes of this package's `deimos` with `opts` (whose `bin` is replaced), started.
pub fn cluster(n: usize, opts: ClusterOptions) -> Cluster {
    Cluster::start_with(
        n,
        ClusterOptions {
            bin: Some(DEIMOS.into()),
            ..opts
        },
    )
}

/// A `deimos` that is not a cluster member (a proxy) with `args`, logging to `<dir>/<name>.log`.
pub fn start_deimos(dir: &Path, name: &str, args: &[String]) -> Proc {
    let mut cmd = deimos_command(Path::new(DEIMOS));
    cmd.args(args);
    Proc::spawn(name, dir.join(format!("{name}.log")), cmd)
}

/// TLS settings for the test client: the CA to trust and an optional client certificate.
pub fn client_tls(ca: &Path, cert: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(c.expect("CA pem")).expect("add CA");
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let cfg = match cert {
        Some(l) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&l.cert)
                .expect("read cert")
                .map(|c| c.expect("cert pem"))
                .collect();
            let key = PrivateKeyDer::from_pem_file(&l.key).expect("read key");
            b.with_client_auth_cert(certs, key).expect("client cert")
        }
        None => b.with_no_client_auth(),
    };
    Arc::new(cfg)
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One request on a fresh connection (`tls: None` for plain HTTP). Errors are strings so tests
/// can assert that a handshake was refused.
pub async fn request(
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    method: &str,
    path: &str,
    form: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let body = form.map(|f| ("application/x-www-form-urlencoded", f.as_bytes().to_vec()));
    request_body(port, tls, method, path, body, headers).await
}

/// Like [`request`], with any body and its content type.
pub async fn request_body(
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    method: &str,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(3),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| format!("connect: {e}"))?;
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let bytes = match body {
        Some((content_type, bytes)) => {
            b = b.header("content-type", content_type);
            bytes
        }
        None => Vec::new(),
    };
    let req = b
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|e| e.to_string())?;
    let fut = async {
        match tls {
            Some(cfg) => {
                let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
                let s = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("tls: {e}"))?;
                send(TokioIo::new(s), req).await
            }
            None => send(TokioIo::new(tcp), req).await,
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| "request timed out".to_string())?
}

async fn send<I>(io: I, req: http::Request<Full<Bytes>>) -> Result<Reply, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Poll `f` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Poll until `method path` (with the form `form`) on `port` answers one of `want`; that reply.
pub async fn eventually_answers(
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    (method, path, form): (&str, &str, Option<&str>),
    want: &[u16],
    timeout: Duration,
) -> Reply {
    let what = format!("{method} {path} answering {want:?}");
    eventually(timeout, &what, || {
        let tls = tls.clone();
        async move {
            let r = request(port, tls, method, path, form, &[]).await.ok()?;
            want.contains(&r.status).then_some(r)
        }
    })
    .await
}

/// Poll until the members on `ports` have at least `n` watchers registered between them, so a
/// test makes the write a long-poll watch waits for only once the watch is in place.
pub async fn wait_watchers(ports: &[u16], tls: Option<Arc<rustls::ClientConfig>>, n: u64) {
    eventually(Duration::from_secs(10), "a registered watcher", || {
        let tls = tls.clone();
        async move {
            let mut watchers = 0;
            for &port in ports {
                let r = request(port, tls.clone(), "GET", "/v2/stats/store", None, &[])
                    .await
                    .ok()?;
                watchers += r.json()["watchers"].as_u64()?;
            }
            (watchers >= n).then_some(())
        }
    })
    .await
}

/// Poll until `text()` contains every one of `needles`; panics with the text on timeout.
pub async fn eventually_contains(timeout: Duration, text: impl Fn() -> String, needles: &[&str]) {
    let deadline = Instant::now() + timeout;
    loop {
        let t = text();
        if needles.iter().all(|n| t.contains(n)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not all of {needles:?} within {timeout:?} in:\n{t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
