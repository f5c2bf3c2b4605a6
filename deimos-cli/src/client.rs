//! The command-side client: endpoint failover, etcd error decoding and the exit-code mapping.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;

use crate::http::{Conn, Endpoint, Response, TransportError};

// Exit statuses, the same as `etcdctl` v2's so operators' scripts keep branching correctly.
/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: bad arguments (clap's usage errors included).
pub const EXIT_USAGE: u8 = 1;
/// Exit status: no endpoint could be reached, or the request timed out.
pub const EXIT_UNREACHABLE: u8 = 2;
/// Exit status: the server refused the credentials (HTTP 401 or etcd error 110).
pub const EXIT_AUTH: u8 = 3;
/// Exit status: the server answered with an error, or with something this tool does not
/// understand.
pub const EXIT_SERVER_ERROR: u8 = 4;
/// Exit status: `cluster-health` found a member that is not healthy.
pub const EXIT_UNHEALTHY: u8 = 5;

/// etcd's "The request requires user authentication" (answered with HTTP 401).
const ETCD_ERROR_UNAUTHORIZED: u16 = 110;

pub use deimos_api::error::EtcdError;

/// Every way a command can fail; each maps to one documented exit status.
#[derive(Debug)]
pub enum CliError {
    /// An etcd v2 error from the keys API.
    Etcd(EtcdError, Bytes),
    /// A non-keys error from the server (e.g. the members API's `{"message": ...}`).
    Server { status: u16, message: String },
    /// Arguments that clap could not reject on its own.
    Usage(String),
    /// An unexpected reply.
    Protocol(String),
    /// No endpoint answered, or the request timed out.
    Unreachable(String),
    /// `cluster-health` found the cluster degraded or down (its report is already printed).
    Unhealthy(String),
    /// A local file that cannot be used: a corrupt or truncated snapshot, an unwritable path.
    File(String),
    /// A `user`/`role`/`auth` command refused (by the server or its own checks): etcdctl prints
    /// the message alone and exits 1.
    Refused(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Etcd(e, _) if e.error_code == ETCD_ERROR_UNAUTHORIZED => EXIT_AUTH,
            CliError::Server { status: 401, .. } => EXIT_AUTH,
            CliError::Etcd(..) | CliError::Server { .. } | CliError::Protocol(_) => {
                EXIT_SERVER_ERROR
            }
            CliError::Usage(_) | CliError::File(_) | CliError::Refused(_) => EXIT_USAGE,
            CliError::Unreachable(_) => EXIT_UNREACHABLE,
            CliError::Unhealthy(_) => EXIT_UNHEALTHY,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Etcd(e, _) => write!(f, "Error: {e}"),
            CliError::Server { status, message } => write!(f, "Error: {status}: {message}"),
            CliError::Usage(m) => write!(f, "Error: bad arguments: {m}"),
            CliError::Protocol(m) => write!(f, "Error: unexpected response: {m}"),
            CliError::Unreachable(m) => write!(f, "Error: cluster unreachable: {m}"),
            CliError::Unhealthy(m) => write!(f, "Error: {m}"),
            CliError::File(m) => write!(f, "Error: {m}"),
            CliError::Refused(m) => write!(f, "{m}"),
        }
    }
}

/// Decodes a response body that is not a success into the most specific error.
pub fn error_from_response(resp: &Response) -> CliError {
    if let Ok(e) = serde_json::from_slice::<EtcdError>(&resp.body) {
        return CliError::Etcd(e, resp.body.clone());
    }
    let message = match serde_json::from_slice::<deimos_api::error::Message>(&resp.body) {
        Ok(m) => m.message,
        Err(_) => String::from_utf8_lossy(&resp.body).trim().to_string(),
    };
    let message = if message.is_empty() {
        resp.status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string()
    } else {
        message
    };
    CliError::Server {
        status: resp.status.as_u16(),
        message,
    }
}

/// Why a single attempt failed: only a broken connection is worth one more try.
enum Failure {
    Broken(CliError),
    Other(CliError),
}

impl Failure {
    fn into_error(self) -> CliError {
        match self {
            Failure::Broken(e) | Failure::Other(e) => e,
        }
    }
}

/// A client over a list of endpoints. It keeps one connection open so that `watch --forever` and
/// multi-request commands reuse it, and moves to the next endpoint only when connecting fails:
/// a request that reached a server is never resent elsewhere, because a PUT may have been applied.
pub struct Client {
    endpoints: Vec<Endpoint>,
    timeout: Duration,
    current: usize,
    conn: Option<Conn>,
}

impl Client {
    pub fn new(endpoints: Vec<Endpoint>, timeout: Duration) -> Client {
        Client {
            endpoints,
            timeout,
            current: 0,
            conn: None,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn connection(&mut self) -> Result<&mut Conn, CliError> {
        if self.conn.as_ref().is_some_and(|c| !c.is_usable()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let mut failures = Vec::new();
            let n = self.endpoints.len();
            for step in 0..n {
                let idx = (self.current + step) % n;
                match Conn::connect(&self.endpoints[idx], self.timeout).await {
                    Ok(c) => {
                        self.current = idx;
                        self.conn = Some(c);
                        break;
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            if self.conn.is_none() {
                return Err(CliError::Unreachable(failures.join("; ")));
            }
        }
        self.conn
            .as_mut()
            .ok_or_else(|| CliError::Unreachable("no connection".into()))
    }

    /// Sends a request; `timeout: None` waits forever (long-poll watches).
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
        timeout: Option<Duration>,
    ) -> Result<Response, CliError> {
        let reused = self.conn.as_ref().is_some_and(Conn::is_usable);
        let first = self
            .request_once(method.clone(), path, body.clone(), timeout)
            .await;
        match first {
            // A kept-alive connection may have been closed by the server between requests (its
            // idle timeout). Retrying on a fresh connection is safe only for a GET: a PUT or
            // DELETE may have been applied before the connection broke. A timeout is not retried:
            // the server is slow, not gone.
            Err(Failure::Broken(_)) if reused && method == Method::GET => self
                .request_once(method, path, body, timeout)
                .await
                .map_err(Failure::into_error),
            other => other.map_err(Failure::into_error),
        }
    }

    async fn request_once(
        &mut self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
        timeout: Option<Duration>,
    ) -> Result<Response, Failure> {
        let conn = self.connection().await.map_err(Failure::Other)?;
        let fut = conn.send(method, path, body);
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
                Err(_) => {
                    self.conn = None;
                    return Err(Failure::Other(CliError::Unreachable(format!(
                        "request timed out after {t:?}"
                    ))));
                }
            },
            None => fut.await,
        };
        result.map_err(|e| {
            self.conn = None;
            match e {
                TransportError::Connect(m) | TransportError::Request(m) => {
                    Failure::Broken(CliError::Unreachable(m))
                }
            }
        })
    }

    /// A GET whose body is streamed: the response head within the timeout, then the body to
    /// read by the caller. An answer other than 200 is read whole and decoded as an error.
    pub async fn get_stream(
        &mut self,
        path: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, CliError> {
        let timeout = self.timeout;
        let conn = self.connection().await?;
        let resp = match tokio::time::timeout(timeout, conn.open(Method::GET, path, None)).await {
            Ok(Ok(r)) => r,
            Ok(Err(TransportError::Connect(m) | TransportError::Request(m))) => {
                self.conn = None;
                return Err(CliError::Unreachable(m));
            }
            Err(_) => {
                self.conn = None;
                return Err(CliError::Unreachable(format!(
                    "request timed out after {timeout:?}"
                )));
            }
        };
        if resp.status() == hyper::StatusCode::OK {
            return Ok(resp);
        }
        let (parts, body) = resp.into_parts();
        use http_body_util::BodyExt;
        let body = match tokio::time::timeout(timeout, body.collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            _ => Bytes::new(),
        };
        Err(error_from_response(&Response {
            status: parts.status,
            headers: parts.headers,
            body,
        }))
    }

    /// A request whose success body is JSON; errors are decoded into [`CliError`].
    pub async fn json(
        &mut self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
        timeout: Option<Duration>,
    ) -> Result<(Response, serde_json::Value), CliError> {
        let resp = self.request(method, path, body, timeout).await?;
        json_response(resp)
    }
}

/// A response whose success body is JSON (or empty: `Null`); errors are decoded into [`CliError`].
pub fn json_response(resp: Response) -> Result<(Response, serde_json::Value), CliError> {
    if !resp.status.is_success() {
        return Err(error_from_response(&resp));
    }
    if resp.body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok((resp, serde_json::Value::Null));
    }
    let v = serde_json::from_slice(&resp.body).map_err(|e| {
        CliError::Protocol(format!(
            "HTTP {}: invalid JSON ({e}): {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        ))
    })?;
    Ok((resp, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderMap;
    use hyper::StatusCode;

    fn resp(status: u16, body: &str) -> Response {
        Response {
            status: StatusCode::from_u16(status).expect("valid status"),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn etcd_error_message_like_etcdctl() {
        let r = resp(
            412,
            r#"{"errorCode":101,"message":"Compare failed","cause":"[a != b]","index":7}"#,
        );
        let e = error_from_response(&r);
        assert_eq!(e.to_string(), "Error: 101: Compare failed ([a != b]) [7]");
        assert_eq!(e.exit_code(), EXIT_SERVER_ERROR);
    }

    #[test]
    fn etcd_error_without_cause_or_index() {
        let r = resp(
            400,
            r#"{"errorCode":200,"message":"Value is required","cause":""}"#,
        );
        assert_eq!(
            error_from_response(&r).to_string(),
            "Error: 200: Value is required [0]"
        );
    }

    #[test]
    fn members_api_error_and_plain_text() {
        let e = error_from_response(&resp(409, r#"{"message":"etcdserver: ID exists"}"#));
        assert_eq!(e.to_string(), "Error: 409: etcdserver: ID exists");
        let e = error_from_response(&resp(404, "404 page not found\n"));
        assert_eq!(e.to_string(), "Error: 404: 404 page not found");
        let e = error_from_response(&resp(503, ""));
        assert_eq!(e.to_string(), "Error: 503: Service Unavailable");
    }

    /// A server that answers each connection once and closes it without saying so: the client
    /// must reconnect rather than report the cluster unreachable.
    #[tokio::test]
    async fn reconnects_after_server_closes_kept_alive_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                    .await;
                // Dropping `s` closes the connection.
            }
        });
        let ep = Endpoint::parse(&format!("http://{addr}")).expect("endpoint");
        let mut c = Client::new(vec![ep], Duration::from_secs(2));
        for _ in 0..3 {
            let (_, v) = c
                .json(
                    Method::GET,
                    "/v2/keys/a",
                    None,
                    Some(Duration::from_secs(2)),
                )
                .await
                .expect("GET succeeds on a fresh connection");
            assert_eq!(v, serde_json::json!({}));
        }
    }

    #[test]
    fn exit_codes_like_etcdctl_v2() {
        let server = |status: u16| CliError::Server {
            status,
            message: String::new(),
        };
        let etcd = |code: u16| {
            CliError::Etcd(
                EtcdError {
                    error_code: code,
                    message: String::new(),
                    cause: String::new(),
                    index: 0,
                },
                Bytes::new(),
            )
        };
        let codes = [
            CliError::Usage(String::new()).exit_code(),
            CliError::Unreachable(String::new()).exit_code(),
            server(401).exit_code(),
            etcd(110).exit_code(),
            etcd(100).exit_code(),
            server(500).exit_code(),
            CliError::Protocol(String::new()).exit_code(),
            CliError::Unhealthy(String::new()).exit_code(),
        ];
        assert_eq!(codes, [1, 2, 3, 3, 4, 4, 4, 5]);
    }
}
