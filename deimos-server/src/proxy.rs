//! `--proxy on|readonly`: a process that joins no Raft group and forwards client requests to the
//! cluster's members.
//!
//! Any live member will do, because members forward writes and linearizable reads to the leader
//! themselves; so the proxy only needs to find a member that accepts a connection. It keeps using
//! the last one that worked and moves to the next on a connection failure, which is what keeps it
//! working when the leader (or any member) dies. The member list starts from `--proxy-endpoints`
//! and is refreshed from `GET /v2/members` (each member's `clientURLs`) every 30 s.
//!
//! Request bodies are buffered (they are small form posts, bounded by `--max-request-bytes`) so a
//! request can be resent to the next member when the connection could not be made; responses
//! are streamed back as they arrive, so watch long-polls work through the proxy.
//!
//! In readonly mode only GET and HEAD are forwarded; anything else answers
//! `501 {"message":"proxy: readonly mode forwards only GET and HEAD requests"}`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::api::cors::Cors;
use crate::config::{NodeConfig, ProxyMode};
use crate::tls::PeerConnector;

/// How often the member list is re-read from the cluster.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// A member that does not accept a connection within this is skipped for the next one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

type ProxyBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// Connection-level headers that belong to one hop, not to the request (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    mode: ProxyMode,
    endpoints: RwLock<Vec<String>>,
    /// Index of the member that answered last; requests start there.
    current: AtomicUsize,
    client: Client<PeerConnector, Full<Bytes>>,
    cors: Cors,
    max_body: usize,
}

impl Proxy {
    pub fn new(cfg: &NodeConfig, tls: Option<Arc<rustls::ClientConfig>>) -> Proxy {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(PeerConnector::new(http, tls));
        let endpoints = cfg
            .flags
            .proxy_endpoints
            .iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
        Proxy {
            inner: Arc::new(Inner {
                mode: cfg.flags.proxy,
                endpoints: RwLock::new(endpoints),
                current: AtomicUsize::new(0),
                client,
                cors: Cors::new(&cfg.flags.cors),
                max_body: cfg.flags.max_request_bytes,
            }),
        }
    }

    fn endpoints(&self) -> Vec<String> {
        self.inner
            .endpoints
            .read()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    async fn handle(&self, req: Request<Incoming>, remote: SocketAddr) -> Response<ProxyBody> {
        let cors = &self.inner.cors;
        if let Some(r) = cors.preflight(req.method(), req.headers()) {
            return local(r);
        }
        let req_headers = req.headers().clone();
        let mut resp = self.forward(req, remote).await;
        if cors.enabled() {
            // Upstream members may have their own --cors; the proxy's list is the one that counts.
            let mut shell = crate::api::response::text(200, "");
            cors.decorate(&req_headers, &mut shell);
            for (k, v) in shell.headers() {
                if k.as_str().starts_with("access-control-") || k == "vary" {
                    resp.headers_mut().insert(k.clone(), v.clone());
                }
            }
        }
        resp
    }

    async fn forward(&self, req: Request<Incoming>, remote: SocketAddr) -> Response<ProxyBody> {
        if self.inner.mode == ProxyMode::Readonly
            && req.method() != Method::GET
            && req.method() != Method::HEAD
        {
            return json_error(
                501,
                "proxy: readonly mode forwards only GET and HEAD requests",
            );
        }
        let (parts, body) = req.into_parts();
        let limited = http_body_util::Limited::new(body, self.inner.max_body);
        let body = match tokio::time::timeout(Duration::from_secs(30), limited.collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => return json_error(413, &format!("proxy: cannot read request body: {e}")),
            Err(_) => return json_error(408, "proxy: request body not received in time"),
        };
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let endpoints = self.endpoints();
        if endpoints.is_empty() {
            return json_error(503, "proxy: no cluster endpoints known");
        }
        let start = self.inner.current.load(Ordering::Relaxed);
        let mut last_err = String::new();
        for step in 0..endpoints.len() {
            let idx = (start + step) % endpoints.len();
            let url = format!("{}{}", endpoints[idx], path);
            let mut b = Request::builder().method(parts.method.clone()).uri(&url);
            for (k, v) in &parts.headers {
                if k == http::header::HOST || HOP_BY_HOP.contains(&k.as_str()) {
                    continue;
                }
                b = b.header(k, v);
            }
            b = b.header("x-forwarded-for", remote.ip().to_string());
            let upstream = match b.body(Full::new(body.clone())) {
                Ok(r) => r,
                Err(e) => return json_error(400, &format!("proxy: bad request: {e}")),
            };
            match self.inner.client.request(upstream).await {
                Ok(resp) => {
                    self.inner.current.store(idx, Ordering::Relaxed);
                    let (mut rparts, rbody) = resp.into_parts();
                    for h in HOP_BY_HOP {
                        if h != "transfer-encoding" {
                            rparts.headers.remove(HeaderName::from_static(h));
                        }
                    }
                    return Response::from_parts(rparts, rbody.boxed());
                }
                // Only a connection that was never made is safe to retry elsewhere: a request
                // that reached a member may have been applied.
                Err(e) if e.is_connect() => {
                    let e = crate::transport::error_chain(&e);
                    tracing::debug!(endpoint = %endpoints[idx], error = %e, "proxy: member unreachable, trying the next");
                    last_err = format!("{}: {e}", endpoints[idx]);
                }
                Err(e) => {
                    let e = crate::transport::error_chain(&e);
                    tracing::warn!(endpoint = %endpoints[idx], error = %e, "proxy: forwarding failed");
                    // Next request starts with another member.
                    self.inner
                        .current
                        .store((idx + 1) % endpoints.len(), Ordering::Relaxed);
                    return json_error(502, &format!("proxy: {}: {e}", endpoints[idx]));
                }
            }
        }
        tracing::warn!(error = %last_err, "proxy: no member reachable");
        json_error(503, &format!("proxy: no member reachable ({last_err})"))
    }

    /// Ask the members for their client URLs; keep the old list if none answers usefully.
    async fn refresh(&self) {
        for ep in self.endpoints() {
            let req = match Request::get(format!("{ep}/v2/members")).body(Full::new(Bytes::new())) {
                Ok(r) => r,
                Err(_) => continue,
            };
            let resp =
                match tokio::time::timeout(Duration::from_secs(5), self.inner.client.request(req))
                    .await
                {
                    Ok(Ok(r)) if r.status().is_success() => r,
                    _ => continue,
                };
            let body = match resp.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => continue,
            };
            let (urls, complete) = client_urls(&body);
            if !urls.is_empty() {
                if let Ok(mut e) = self.inner.endpoints.write() {
                    let urls = next_endpoints(&e, urls, complete);
                    if *e != urls {
                        tracing::info!(endpoints = ?urls, "proxy: member list refreshed");
                        // Stay on the member in use if it is still listed: it works.
                        let cur = e.get(self.inner.current.load(Ordering::Relaxed)).cloned();
                        let idx = cur
                            .and_then(|c| urls.iter().position(|u| *u == c))
                            .unwrap_or(0);
                        *e = urls;
                        self.inner.current.store(idx, Ordering::Relaxed);
                    }
                }
                return;
            }
        }
        tracing::warn!("proxy: could not refresh the member list; keeping the old one");
    }
}

/// The endpoint list after a refresh. A complete answer replaces the list (members removed
/// from the cluster drop out). An incomplete one — some member has not published its client
/// URLs yet because it just started or has no leader to publish through — is merged with the
/// known list: replacing it could leave the proxy one member to fail over from.
fn next_endpoints(known: &[String], mut answer: Vec<String>, complete: bool) -> Vec<String> {
    if !complete {
        for old in known {
            if !answer.contains(old) {
                answer.push(old.clone());
            }
        }
    }
    answer
}

/// `clientURLs` of every member in a `/v2/members` answer, and whether every member listed
/// has at least one (the answer is complete).
fn client_urls(body: &[u8]) -> (Vec<String>, bool) {
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return (vec![], false),
    };
    let mut out = Vec::new();
    let mut complete = true;
    for m in v["members"].as_array().into_iter().flatten() {
        let listed = m["clientURLs"].as_array().map_or(0, Vec::len);
        complete &= listed > 0;
        for u in m["clientURLs"].as_array().into_iter().flatten() {
            // Only well-formed client URLs: whatever a member record says, the proxy never
            // follows it to a path, user info or another scheme.
            let Some(u) = u.as_str().filter(|u| {
                crate::config::is_host_port_url(u, "http://")
                    || crate::config::is_host_port_url(u, "https://")
            }) else {
                continue;
            };
            {
                let u = u.trim_end_matches('/').to_string();
                if !out.contains(&u) {
                    out.push(u);
                }
            }
        }
    }
    (out, complete)
}

fn local(r: crate::api::response::Resp) -> Response<ProxyBody> {
    r.map(|b| b.map_err(|never| match never {}).boxed())
}

fn json_error(status: u16, message: &str) -> Response<ProxyBody> {
    let mut r = local(crate::api::response::json(
        status,
        &deimos_api::error::Message::new(message),
    ));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub async fn serve(
    p: Proxy,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limit: crate::limits::ConnLimit,
) {
    let handler = move |req: Request<Incoming>, remote: SocketAddr| {
        let p = p.clone();
        async move { p.handle(req, remote).await }
    };
    crate::api::serve_with(listener, tls, limit, handler).await
}

pub async fn refresh_loop(p: Proxy) {
    let mut t = tokio::time::interval(REFRESH_INTERVAL);
    loop {
        t.tick().await;
        p.refresh().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_urls_from_members_answer() {
        let body = br#"{"members":[{"id":"1","clientURLs":["http://a:1/","http://b:2","ftp://c:3","http://evil:4/x","http://u@d:5"]},{"clientURLs":["http://b:2"]},{"clientURLs":[]}]}"#;
        assert_eq!(
            client_urls(body),
            (
                vec!["http://a:1".to_string(), "http://b:2".to_string()],
                false
            )
        );
        let body = br#"{"members":[{"clientURLs":["http://a:1"]},{"clientURLs":["http://c:3"]}]}"#;
        assert_eq!(
            client_urls(body),
            (
                vec!["http://a:1".to_string(), "http://c:3".to_string()],
                true
            )
        );
        assert!(client_urls(b"not json").0.is_empty());
    }

    #[test]
    fn an_incomplete_member_list_does_not_shrink_the_endpoints() {
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let known = v(&["http://a:1", "http://b:2", "http://c:3"]);
        // Only a has published: b and c stay.
        assert_eq!(next_endpoints(&known, v(&["http://a:1"]), false), known);
        // Complete: c was removed, d added.
        assert_eq!(
            next_endpoints(&known, v(&["http://a:1", "http://b:2", "http://d:4"]), true),
            v(&["http://a:1", "http://b:2", "http://d:4"])
        );
    }
}
