//! `--cacert`, `--cert`, `--key`: talking to `https://` endpoints, with mutual TLS when the
//! server asks for a client certificate.
//!
//! The TLS settings are process-wide (set once in `main`, like `--timeout`), so the connection
//! code asks for them here instead of every caller of `Conn::connect` (key commands, cluster
//! status, bench) having to carry them. rustls with the ring provider: no C toolchain beyond a
//! compiler, and no system trust store: the operator names the CA that signed the cluster.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate PEM in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

/// Build the client configuration from the flags and install it for the process. Nothing is
/// installed when no flag is given; an https endpoint then fails with a message naming
/// `--cacert`.
pub fn init(
    cacert: Option<&PathBuf>,
    cert: Option<&PathBuf>,
    key: Option<&PathBuf>,
) -> Result<(), String> {
    let Some(ca) = cacert else {
        if cert.is_some() || key.is_some() {
            return Err("--cert/--key need --cacert (the CA that signed the server)".into());
        }
        return Ok(());
    };
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca)? {
        roots
            .add(c)
            .map_err(|e| format!("bad CA certificate in {}: {e}", ca.display()))?;
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
    let cfg = match (cert, key) {
        (Some(c), Some(k)) => {
            let key = PrivateKeyDer::from_pem_file(k)
                .map_err(|e| format!("cannot read a private key from {}: {e}", k.display()))?;
            builder
                .with_client_auth_cert(load_certs(c)?, key)
                .map_err(|e| format!("--cert and --key do not fit: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("--cert and --key go together".into()),
    };
    let _ = CONFIG.set(Arc::new(cfg));
    Ok(())
}

/// TLS handshake on a connected socket; `host` is checked against the server certificate.
pub async fn connect(tcp: TcpStream, host: &str) -> Result<TlsStream<TcpStream>, String> {
    let cfg = CONFIG
        .get()
        .ok_or("https endpoint: give --cacert (and --cert/--key if the server requires a client certificate)")?;
    let name = ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
    .map_err(|e| format!("bad host name {host:?}: {e}"))?;
    TlsConnector::from(cfg.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Conn, Endpoint};
    use hyper::Method;
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-connection https server that requires a client certificate from the same CA, and
    /// the CLI's connection code talking to it with --cacert/--cert/--key.
    #[tokio::test]
    async fn mutual_tls_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = p.self_signed(&ca_key).expect("ca");
        let leaf = |name: &str| {
            let key = KeyPair::generate().expect("key");
            let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = p.signed_by(&key, &ca, &ca_key).expect("sign");
            let (c, k) = (
                dir.path().join(format!("{name}.pem")),
                dir.path().join(format!("{name}-key.pem")),
            );
            std::fs::write(&c, cert.pem()).expect("write");
            std::fs::write(&k, key.serialize_pem()).expect("write");
            (c, k)
        };
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).expect("write");
        let (sc, sk) = leaf("server");
        let (cc, ck) = leaf("client");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots
            .add(load_certs(&ca_path).expect("ca")[0].clone())
            .expect("root");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("verifier");
        let server_cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                load_certs(&sc).expect("cert"),
                PrivateKeyDer::from_pem_file(&sk).expect("key"),
            )
            .expect("server config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.expect("accept");
            let mut s = acceptor.accept(s).await.expect("handshake");
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            let _ = s.flush().await;
        });

        init(Some(&ca_path), Some(&cc), Some(&ck)).expect("init");
        let ep = Endpoint::parse(&format!("https://127.0.0.1:{port}")).expect("endpoint");
        let mut conn = Conn::connect(&ep, Duration::from_secs(5))
            .await
            .expect("TLS connect");
        let r = conn
            .send(Method::GET, "/version", None)
            .await
            .expect("request");
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], b"ok");
        assert!(init(None, Some(&cc), None).is_err());
    }
}
