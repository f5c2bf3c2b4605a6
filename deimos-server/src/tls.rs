//! TLS for the client and peer listeners and for outgoing peer (and proxy) connections.
//!
//! rustls with the ring provider, chosen explicitly rather than through a process-wide default so
//! that no code path can silently fall back to another provider (or panic because none is
//! installed). Certificate validity (chain, expiry, SAN) is checked by rustls' webpki verifier on
//! both sides; this module only loads files and wires the configurations.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::Uri;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// A handshake that has not finished by then is abandoned, so a client that connects and sends
/// nothing only costs its own task, never the accept loop.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS file that cannot be used, or certificate flags that do not make a configuration.
/// `what` names the listener or connection the configuration was for.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {kind} from {}: {source}", path.display())]
    Read {
        kind: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("bad certificate PEM in {}: {source}", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate found in {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error("bad CA certificate in {}: {source}", path.display())]
    BadCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "{what} needs both a certificate and a key file (--cert-file/--key-file for clients, \
         --peer-cert-file/--peer-key-file for peers)"
    )]
    CertWithoutKey { what: String },
    #[error("{what} over https needs a CA file to verify the server")]
    NoCa { what: String },
    #[error("{what}: {source}")]
    Config {
        what: String,
        #[source]
        source: rustls::Error,
    },
    #[error("{what}: client verifier: {source}")]
    Verifier {
        what: String,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("{what}: certificate and key do not fit: {source}")]
    KeyMismatch {
        what: String,
        #[source]
        source: rustls::Error,
    },
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|source| TlsError::Read {
            kind: "certificates",
            path: path.to_owned(),
            source,
        })?
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Read {
        kind: "a private key",
        path: path.to_owned(),
        source,
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(|source| TlsError::BadCa {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// Certificate, key and (optional) CA file of one side (client API or peers).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

impl TlsFiles {
    fn cert_and_key(
        &self,
        what: &str,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Ok((load_certs(c)?, load_key(k)?)),
            _ => Err(TlsError::CertWithoutKey {
                what: what.to_string(),
            }),
        }
    }

    /// Server side. With a CA file, clients must present a certificate it signed (mutual TLS).
    pub fn server_config(&self, what: &str) -> Result<Arc<ServerConfig>, TlsError> {
        let (certs, key) = self.cert_and_key(what)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Config {
                what: what.to_string(),
                source,
            })?;
        let builder = match &self.ca {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(load_roots(ca)?),
                    provider(),
                )
                .build()
                .map_err(|source| TlsError::Verifier {
                    what: what.to_string(),
                    source,
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut cfg =
            builder
                .with_single_cert(certs, key)
                .map_err(|source| TlsError::KeyMismatch {
                    what: what.to_string(),
                    source,
                })?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// Client side: trust only the CA file, present the certificate if one is configured.
    pub fn client_config(&self, what: &str) -> Result<Arc<ClientConfig>, TlsError> {
        let ca = self.ca.as_ref().ok_or_else(|| TlsError::NoCa {
            what: what.to_string(),
        })?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Config {
                what: what.to_string(),
                source,
            })?
            .with_root_certificates(load_roots(ca)?);
        let cfg = if self.cert.is_some() || self.key.is_some() {
            let (certs, key) = self.cert_and_key(what)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|source| TlsError::KeyMismatch {
                    what: what.to_string(),
                    source,
                })?
        } else {
            builder.with_no_client_auth()
        };
        Ok(Arc::new(cfg))
    }
}

/// A misconfigured peer retries every heartbeat, so each distinct refusal (kind and reason) is
/// logged at warn at most once a second, with how many repeats were folded in; repeats in
/// between go to debug. Different reasons are never hidden behind each other.
static REFUSALS: Mutex<Option<HashMap<String, (Instant, u64)>>> = Mutex::new(None);

fn refused(remote: SocketAddr, what: &str, error: Option<&dyn std::fmt::Display>) {
    let error = error.map(|e| e.to_string()).unwrap_or_default();
    match (admit(&format!("{what}|{error}")), error.is_empty()) {
        (Some(repeats), true) => tracing::warn!(%remote, repeats, "{what}"),
        (Some(repeats), false) => tracing::warn!(%remote, %error, repeats, "{what}"),
        (None, _) => tracing::debug!(%remote, %error, "{what}"),
    }
}

/// A refused peer request (see `api::peer_auth`), logged like refused handshakes: at most one
/// warning per reason a second, whatever the detail (a made-up sender id per request must not
/// turn into a log line per request), with the number folded in.
pub fn log_refusal(reason: &str, detail: &str) {
    match admit(reason) {
        Some(repeats) => tracing::warn!(reason, repeats, "refused peer traffic: {detail}"),
        None => tracing::debug!(reason, "refused peer traffic: {detail}"),
    }
}

/// `Some(repeats folded in since the last warning)` when a refusal with this key may be logged
/// at warn now; the map is bounded (cleared past 1024 keys), whatever remote parties send.
fn admit(key: &str) -> Option<u64> {
    let Ok(mut g) = REFUSALS.lock() else {
        return Some(0);
    };
    let map = g.get_or_insert_with(HashMap::new);
    if map.len() > 1024 {
        map.clear();
    }
    let now = Instant::now();
    match map.get_mut(key) {
        Some((last, n)) if now.duration_since(*last) < Duration::from_secs(1) => {
            *n += 1;
            None
        }
        Some((last, n)) => {
            *last = now;
            Some(std::mem::take(n))
        }
        None => {
            map.insert(key.to_string(), (now, 0));
            Some(0)
        }
    }
}

/// The client certificate a TLS connection was accepted with, attached to each of its requests
/// (the peer listener checks that it names the member the request claims to come from).
#[derive(Clone)]
pub struct PeerCert(pub Arc<rustls_pki_types::CertificateDer<'static>>);

impl PeerCert {
    /// The end-entity certificate of an accepted connection, if the client sent one.
    pub fn of(s: &tokio_rustls::server::TlsStream<TcpStream>) -> Option<PeerCert> {
        let cert = s.get_ref().1.peer_certificates()?.first()?;
        Some(PeerCert(Arc::new(cert.clone().into_owned())))
    }

    /// Whether the certificate is valid for `name`: a DNS name or an IP address in its subject
    /// alternative names (the names TLS clients check a server against).
    pub fn names(&self, name: &str) -> bool {
        let Ok(cert) = webpki::EndEntityCert::try_from(self.0.as_ref()) else {
            return false;
        };
        match rustls_pki_types::ServerName::try_from(name) {
            Ok(n) => cert.verify_is_valid_for_subject_name(&n).is_ok(),
            Err(_) => false,
        }
    }
}

impl PeerCert {
    /// The subject's common name (the first CN attribute), which etcd's `--client-cert-auth`
    /// takes as the user name when a request carries no basic-auth credentials. Only ever
    /// called on a certificate the listener verified; parsed defensively all the same.
    pub fn common_name(&self) -> Option<String> {
        subject_common_name(self.0.as_ref())
    }
}

/// One DER TLV: (tag, contents, rest). Definite lengths up to 4 bytes long.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    Some((tag, contents, after))
}

/// Certificate → tbsCertificate → subject → the value of the first 2.5.4.3 attribute.
fn subject_common_name(der: &[u8]) -> Option<String> {
    const SEQ: u8 = 0x30;
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    let (SEQ, cert, _) = der_tlv(der)? else {
        return None;
    };
    let (SEQ, mut tbs, _) = der_tlv(cert)? else {
        return None;
    };
    // [0] version (optional), serial, signature algorithm, issuer, validity, then subject.
    let (tag, _, rest) = der_tlv(tbs)?;
    tbs = if tag == 0xa0 { der_tlv(rest)?.2 } else { rest };
    for _ in 0..3 {
        tbs = der_tlv(tbs)?.2;
    }
    let (SEQ, mut rdns, _) = der_tlv(tbs)? else {
        return None;
    };
    while !rdns.is_empty() {
        let (_, mut set, rest) = der_tlv(rdns)?;
        rdns = rest;
        while !set.is_empty() {
            let (_, atv, rest) = der_tlv(set)?;
            set = rest;
            let (0x06, oid, value) = der_tlv(atv)? else {
                return None;
            };
            if oid == CN_OID {
                let (_, text, _) = der_tlv(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

/// Outcome of accepting one TLS connection.
pub enum Accepted {
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The client spoke plain HTTP; it was told so and the connection is done.
    Refused,
}

/// Run the server handshake inside the connection's own task. Failures are logged at warn with
/// the remote address and rustls' reason (unknown CA, expired certificate, no certificate...),
/// because they are what an operator debugging a TLS setup needs to see (rate-limited per
/// reason, see `REFUSALS`).
pub async fn accept(acceptor: &TlsAcceptor, mut stream: TcpStream, remote: SocketAddr) -> Accepted {
    // A TLS connection starts with a handshake record (0x16). Anything else is most likely plain
    // HTTP; answer it in plain HTTP, as Go's servers do, so curl users see why.
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != 0x16 => {
            refused(
                remote,
                "refused plaintext connection on a TLS listener",
                None,
            );
            use tokio::io::AsyncWriteExt;
            let msg = "Client sent an HTTP request to an HTTPS server.\n";
            let resp = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{msg}",
                msg.len()
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(resp.as_bytes()))
                .await;
            let _ = stream.shutdown().await;
            return Accepted::Refused;
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "connection failed before TLS handshake");
            return Accepted::Refused;
        }
        Err(_) => {
            refused(
                remote,
                "TLS handshake timed out (client sent nothing)",
                None,
            );
            return Accepted::Refused;
        }
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Accepted::Tls(Box::new(s)),
        Ok(Err(e)) => {
            refused(remote, "TLS handshake failed", Some(&e));
            Accepted::Refused
        }
        Err(_) => {
            refused(remote, "TLS handshake timed out", None);
            Accepted::Refused
        }
    }
}

/// The connector of the peer, proxy and membership clients: plain TCP to `http://` URLs and
/// TLS (hyper-rustls, with the peer client configuration) to `https://` ones, so one client
/// serves a cluster whatever its URLs say. Connecting and the handshake together are bounded by
/// [`HANDSHAKE_TIMEOUT`], so a peer that accepts and then says nothing cannot hold a sender.
#[derive(Clone)]
pub enum PeerConnector {
    /// No TLS client configuration (no peer CA): `http://` only, `https://` refused.
    Plain(HttpConnector),
    Tls(HttpsConnector<HttpConnector>),
}

/// What a [`PeerConnector`] hands hyper.
pub type PeerStream = MaybeHttpsStream<TokioIo<TcpStream>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl PeerConnector {
    pub fn new(mut http: HttpConnector, tls: Option<Arc<ClientConfig>>) -> Self {
        let Some(cfg) = tls else {
            return PeerConnector::Plain(http);
        };
        // The inner connector only opens TCP; hyper-rustls handles the scheme.
        http.enforce_http(false);
        let https = HttpsConnectorBuilder::new()
            .with_tls_config((*cfg).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        PeerConnector::Tls(https)
    }
}

impl tower_service::Service<Uri> for PeerConnector {
    type Response = PeerStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<PeerStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            PeerConnector::Plain(http) => http.poll_ready(cx).map_err(Into::into),
            PeerConnector::Tls(https) => https.poll_ready(cx),
        }
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting: Self::Future = match self {
            PeerConnector::Plain(http) => {
                if uri.scheme_str() == Some("https") {
                    return Box::pin(std::future::ready(Err(
                        "https URL but no TLS client configuration (peer CA file)".into(),
                    )));
                }
                let tcp = http.call(uri);
                Box::pin(async move { Ok(MaybeHttpsStream::Http(tcp.await?)) })
            }
            PeerConnector::Tls(https) => Box::pin(https.call(uri)),
        };
        Box::pin(async move {
            tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
                .await
                .map_err(|_| "connect and TLS handshake timed out")?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_name_is_read_from_a_certificate_and_garbage_yields_none() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "deimos");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let cert = params.self_signed(&key).unwrap();
        let pc = PeerCert(Arc::new(cert.der().clone()));
        assert_eq!(pc.common_name().as_deref(), Some("alice"));
        let der = cert.der().to_vec();
        for cut in [0, 1, 5, der.len() / 2, der.len() - 1] {
            // Truncated certificates never panic (they may still hold the name).
            let _ = subject_common_name(&der[..cut]);
        }
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
    }
}
