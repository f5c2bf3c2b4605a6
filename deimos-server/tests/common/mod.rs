//! Helpers shared by the TLS and proxy tests: real `deimos` processes on loopback, throw-away
//! certificates, and a one-request-per-connection HTTP(S) client.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

pub use deimos_tests::ports::free_port;

/// A test CA that signs leaf certificates into a directory.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pub cert_path: PathBuf,
}

/// Paths of a certificate and its key.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).expect("self-signed CA");
        let cert_path = dir.join(format!("{name}.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write CA");
        Ca {
            cert,
            key,
            cert_path,
        }
    }

    /// A certificate for 127.0.0.1 (IP SAN) usable as server and client. `expired` puts its
    /// validity entirely in the past.
    pub fn leaf(&self, dir: &Path, name: &str, expired: bool) -> Leaf {
        self.leaf_for(dir, name, &["127.0.0.1", "localhost"], expired)
    }

    /// A certificate naming exactly `names` (DNS or IP subject alternative names).
    pub fn leaf_for(&self, dir: &Path, name: &str, names: &[&str], expired: bool) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut p = CertificateParams::new(names).expect("leaf params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            p.not_before = rcgen::date_time_ymd(2019, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("sign leaf");
        let leaf = Leaf {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        leaf
    }
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

/// A `deimos` process, killed when dropped; its log goes to `<dir>/<name>.log`.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn start(dir: &Path, name: &str, args: &[String]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_deimos"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start deimos");
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- last lines of {} ---\n{}",
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}

/// Ports and arguments for an n-node cluster (`scheme` is http or https for both listeners).
pub struct ClusterSpec {
    pub client_ports: Vec<u16>,
    pub peer_ports: Vec<u16>,
    pub scheme: &'static str,
}

impl ClusterSpec {
    pub fn new(n: usize, scheme: &'static str) -> ClusterSpec {
        ClusterSpec {
            client_ports: (0..n).map(|_| free_port()).collect(),
            peer_ports: (0..n).map(|_| free_port()).collect(),
            scheme,
        }
    }

    pub fn bootstrap(&self) -> String {
        self.peer_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("n{}={}://127.0.0.1:{p}", i + 1, self.scheme))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Arguments for node `i` (0-based), before any TLS flags.
    pub fn args(&self, dir: &Path, i: usize) -> Vec<String> {
        let s = self.scheme;
        vec![
            "--name".into(),
            format!("n{}", i + 1),
            "--data-dir".into(),
            dir.join(format!("data{}", i + 1)).display().to_string(),
            "--listen-client-urls".into(),
            format!("{s}://127.0.0.1:{}", self.client_ports[i]),
            "--listen-peer-urls".into(),
            format!("{s}://127.0.0.1:{}", self.peer_ports[i]),
            "--bootstrap-config".into(),
            self.bootstrap(),
        ]
    }
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
