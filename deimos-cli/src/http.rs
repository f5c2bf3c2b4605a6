//! A minimal HTTP/1.1 client on hyper's connection API.
//!
//! Why not a pooled client: the bench must control exactly one keep-alive connection per task so the
//! measured concurrency equals `--clients`, and the key commands only ever need one connection at a
//! time. `https://` endpoints use rustls with the CA and client certificate of `--cacert`,
//! `--cert`, `--key` (see `tls.rs`).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::net::TcpStream;

/// A parsed `http(s)://host:port` endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`, used both to connect and as the `Host` header.
    pub authority: String,
    /// The endpoint as the user wrote it (without a trailing slash), for messages.
    pub url: String,
    /// `https://`: speak TLS after connecting.
    pub https: bool,
}

impl Endpoint {
    /// Parses `http(s)://host[:port][/]` (IPv6 hosts in brackets). A missing port means 80
    /// (443 for https), as in any URL; a path, query or user part is refused rather than dropped.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let s = s.trim();
        let uri: hyper::Uri = s
            .parse()
            .map_err(|e| format!("endpoint {s:?}: not a URL ({e})"))?;
        let (https, default_port) = match uri.scheme_str() {
            Some("http") => (false, 80),
            Some("https") => (true, 443),
            _ => {
                return Err(format!(
                    "endpoint {s:?}: only http:// and https:// URLs are supported"
                ))
            }
        };
        let auth = uri
            .authority()
            .filter(|a| !a.host().is_empty() && !a.as_str().contains('@'))
            .ok_or_else(|| format!("endpoint {s:?}: expected http://host:port"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("endpoint {s:?}: expected http://host:port"));
        }
        let port = match auth.port_u16() {
            Some(p) => p,
            // Something after the host that is no port number (`x:`, `x:http`).
            None if auth.as_str().len() > auth.host().len() => {
                return Err(format!("endpoint {s:?}: bad host or port"))
            }
            None => default_port,
        };
        Ok(Endpoint {
            url: format!("{}://{}", if https { "https" } else { "http" }, auth),
            authority: format!("{}:{port}", auth.host()),
            https,
        })
    }

    /// Parses a comma-separated list, ignoring empty items.
    pub fn parse_list(s: &str) -> Result<Vec<Endpoint>, String> {
        let eps: Vec<Endpoint> = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Endpoint::parse)
            .collect::<Result<_, _>>()?;
        if eps.is_empty() {
            return Err("no endpoints given".into());
        }
        Ok(eps)
    }
}

/// Transport-level failure: the server was not reached or the exchange broke.
#[derive(Debug)]
pub enum TransportError {
    /// TCP connect failed or timed out: the next endpoint may help.
    Connect(String),
    /// The request was sent (or the connection was up) but failed or timed out.
    Request(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Connect(m) => write!(f, "connect: {m}"),
            TransportError::Request(m) => write!(f, "request: {m}"),
        }
    }
}

/// A fully read response.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One HTTP/1.1 keep-alive connection to one endpoint.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
    /// Why the connection task ended, if it did: hyper's sender only says "channel closed",
    /// while the task saw the real cause (e.g. a TLS alert: the server wants a client
    /// certificate, which TLS 1.3 reports only after the handshake).
    closed: Arc<Mutex<Option<String>>>,
}

impl Conn {
    /// Opens a TCP connection and performs the (trivial) HTTP/1.1 handshake.
    pub async fn connect(ep: &Endpoint, timeout: Duration) -> Result<Conn, TransportError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(&ep.authority))
            .await
            .map_err(|_| TransportError::Connect(format!("{}: timed out", ep.url)))?
            .map_err(|e| TransportError::Connect(format!("{}: {e}", ep.url)))?;
        // Latency matters more than packet count for small request/response pairs.
        let _ = stream.set_nodelay(true);
        let (sender, closed) = if ep.https {
            let host = ep
                .authority
                .rsplit_once(':')
                .map_or(ep.authority.as_str(), |(h, _)| h);
            let tls = tokio::time::timeout(timeout, crate::tls::connect(stream, host))
                .await
                .map_err(|_| TransportError::Connect(format!("{}: TLS timed out", ep.url)))?
                .map_err(|e| TransportError::Connect(format!("{}: {e}", ep.url)))?;
            http1_handshake(TokioIo::new(tls), ep).await?
        } else {
            http1_handshake(TokioIo::new(stream), ep).await?
        };
        Ok(Conn {
            sender,
            authority: ep.authority.clone(),
            closed,
        })
    }

    /// True if the connection can take another request (not closed by the peer).
    pub fn is_usable(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Sends one request and reads the whole body so the connection can be reused.
    pub async fn send(
        &mut self,
        method: Method,
        path_and_query: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<Response, TransportError> {
        let resp = self.open(method, path_and_query, body).await?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| TransportError::Request(format!("reading body: {e}")))?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends one request and returns as soon as the response head arrives, with the body still
    /// to read (a snapshot download streams it to a file).
    pub async fn open(
        &mut self,
        method: Method,
        path_and_query: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, TransportError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(HOST, &self.authority);
        if let Some(auth) = crate::auth::authorization() {
            req = req.header(hyper::header::AUTHORIZATION, auth.clone());
        }
        let body = match body {
            Some((ct, b)) => {
                req = req.header(CONTENT_TYPE, ct);
                b
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(body))
            .map_err(|e| TransportError::Request(format!("building request: {e}")))?;
        if let Err(e) = self.sender.ready().await {
            return Err(self.failed(e).await);
        }
        match self.sender.send_request(req).await {
            Ok(r) => Ok(r),
            Err(e) => Err(self.failed(e).await),
        }
    }
}

impl Conn {
    /// A request error, with the connection task's reason when it has one. The task may record
    /// it just after the sender noticed, so wait for it briefly.
    async fn failed(&self, e: hyper::Error) -> TransportError {
        let mut reason = None;
        for _ in 0..20 {
            reason = self.closed.lock().ok().and_then(|g| g.clone());
            if reason.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        TransportError::Request(match reason {
            Some(r) => format!("{e}: {r}"),
            None => e.to_string(),
        })
    }
}

type Handshake = (SendRequest<Full<Bytes>>, Arc<Mutex<Option<String>>>);

async fn http1_handshake<I>(io: I, ep: &Endpoint) -> Result<Handshake, TransportError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| TransportError::Connect(format!("{}: {e}", ep.url)))?;
    let closed = Arc::new(Mutex::new(None));
    let slot = closed.clone();
    // The connection future drives the socket; it ends when the sender is dropped.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            let mut msg = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(c) = cur {
                msg.push_str(": ");
                msg.push_str(&c.to_string());
                cur = c.source();
            }
            if let Ok(mut g) = slot.lock() {
                *g = Some(msg);
            }
        }
    });
    Ok((sender, closed))
}

/// Everything but RFC 3986's unreserved characters is escaped, so any key or value round-trips
/// through etcd's and Deimos's decoders.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `s` for a URL path, keeping its `/` separators (`keep_slash`), or for a path
/// segment (`keep_slash = false`: a `/` is escaped too).
pub fn encode(s: &str, keep_slash: bool) -> String {
    if keep_slash {
        s.split('/')
            .map(|seg| utf8_percent_encode(seg, ESCAPED).to_string())
            .collect::<Vec<_>>()
            .join("/")
    } else {
        utf8_percent_encode(s, ESCAPED).to_string()
    }
}

/// An `application/x-www-form-urlencoded` body or query string from pairs.
pub fn form(pairs: &[(&str, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parsing() {
        let e = Endpoint::parse("http://127.0.0.1:4001/").expect("valid");
        assert_eq!(e.authority, "127.0.0.1:4001");
        assert_eq!(e.url, "http://127.0.0.1:4001");
        assert_eq!(
            Endpoint::parse("http://localhost")
                .expect("valid")
                .authority,
            "localhost:80"
        );
        let t = Endpoint::parse("https://x").expect("https is accepted");
        assert!(t.https);
        assert_eq!(t.authority, "x:443");
        assert!(Endpoint::parse("ftp://x:1").is_err());
        assert!(Endpoint::parse("127.0.0.1:4001").is_err());
        assert!(Endpoint::parse("http://x:notaport").is_err());
        assert!(Endpoint::parse("http://").is_err());
        assert!(Endpoint::parse("http://x:1/v2/keys").is_err());
        assert!(Endpoint::parse("http://u:p@x:1").is_err());
        let v6 = Endpoint::parse("http://[::1]:4001").expect("IPv6 literal");
        assert_eq!(v6.authority, "[::1]:4001");
        assert_eq!(
            Endpoint::parse("http://[::1]").expect("valid").authority,
            "[::1]:80"
        );
        let l = Endpoint::parse_list("http://a:1, http://b:2,").expect("valid");
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].authority, "b:2");
        assert!(Endpoint::parse_list(" , ").is_err());
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(encode("/a b/c&d", true), "/a%20b/c%26d");
        assert_eq!(encode("a/b=c", false), "a%2Fb%3Dc");
        assert_eq!(encode("é", false), "%C3%A9");
        assert_eq!(
            form(&[("value", "x y&z".into()), ("ttl", "5".into())]),
            "value=x+y%26z&ttl=5"
        );
    }
}
