//! HTTP on hyper: the client API (etcd v2 keys and cluster endpoints, plus Deimos's status) and
//! the peer API (Raft messages). Handlers are plain async fns from a request to a response.

// Handlers return `Result<_, Resp>` where the error *is* the response to send, built once per
// request; boxing it would add an allocation to save stack bytes nobody is short of.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod auth_api;
pub mod cluster;
pub mod cors;
pub mod keys;
pub mod members;
pub mod params;
pub mod peer;
pub mod peer_auth;
pub mod render;
pub mod response;
pub mod snapshot;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::limits::ConnLimit;
use crate::node::App;
use response::{Body, Resp};

/// A client that sends headers this slowly is cut off instead of holding a connection.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to upload a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
pub enum Listener {
    Client,
    Peer,
}

pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    kind: Listener,
    tls: Option<TlsAcceptor>,
    limit: ConnLimit,
) {
    let cors = Arc::new(cors::Cors::new(&app.cfg.flags.cors));
    let handler = move |req: Request<Incoming>, remote: SocketAddr| {
        let app = app.clone();
        let cors = cors.clone();
        async move {
            match kind {
                Listener::Client => with_cors(&cors, req, |req| route_client(app, req)).await,
                Listener::Peer => {
                    let _ = remote;
                    peer::route(app, req).await
                }
            }
        }
    };
    serve_with(listener, tls, limit, handler).await
}

/// Apply `--cors` around a client handler: preflights end here, other answers get the headers.
pub async fn with_cors<F, Fut>(cors: &cors::Cors, req: Request<Incoming>, handler: F) -> Resp
where
    F: FnOnce(Request<Incoming>) -> Fut,
    Fut: Future<Output = Resp>,
{
    if !cors.enabled() {
        return handler(req).await;
    }
    if let Some(r) = cors.preflight(req.method(), req.headers()) {
        return r;
    }
    let headers = req.headers().clone();
    let mut r = handler(req).await;
    cors.decorate(&headers, &mut r);
    r
}

/// The accept loop shared by the member's listeners and the proxy. Each connection (its TLS
/// handshake included) runs in its own task, so a slow or hostile client never holds up accepts.
/// A connection holds a place under `limit` until it closes; one over the cap is closed at once
/// (plaintext ones are told so with a 503). A connection that sends no complete request head
/// within `HEADER_TIMEOUT` (new or idle keep-alive alike) is closed, so silent or trickling
/// connections give their place back.
pub async fn serve_with<H, F, B>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limit: ConnLimit,
    handler: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(admitted) = limit.admit() else {
            if tls.is_none() {
                // Best effort and never waiting: a full socket buffer just gets the close.
                let _ = stream.try_write(crate::limits::REFUSAL);
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            // An upgraded connection (a direct peer stream) outlives this task; it keeps the
            // slot through the request's copy.
            let admitted = ConnSlot(Arc::new(admitted));
            // Each request of a TLS connection carries the client's certificate, if it sent one.
            let svc = |cert: Option<crate::tls::PeerCert>| {
                let admitted = admitted.clone();
                service_fn(move |mut req: Request<Incoming>| {
                    if let Some(c) = &cert {
                        req.extensions_mut().insert(c.clone());
                    }
                    req.extensions_mut().insert(admitted.clone());
                    let fut = handler(req, remote);
                    async move { Ok::<_, Infallible>(fut.await) }
                })
            };
            let builder = {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(true);
                b
            };
            let res = match tls {
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), svc(None))
                        .with_upgrades()
                        .await
                }
                Some(acceptor) => match crate::tls::accept(&acceptor, stream, remote).await {
                    crate::tls::Accepted::Tls(s) => {
                        let cert = crate::tls::PeerCert::of(&s);
                        builder
                            .serve_connection(TokioIo::new(*s), svc(cert))
                            .with_upgrades()
                            .await
                    }
                    crate::tls::Accepted::Refused => return,
                },
            };
            if let Err(e) = res {
                tracing::debug!(%remote, error = %e, "connection closed with error");
            }
        });
    }
}

/// A connection's place under its listener's cap, in each of its requests' extensions: a
/// request that takes the connection over (an upgrade) keeps it for as long as it holds it.
#[derive(Clone)]
pub struct ConnSlot(#[allow(dead_code)] Arc<crate::limits::Admitted>);

/// `/v2/x` and `/x` are the same endpoint (the original Deimos served `/x`; etcd v2 clients use `/v2/x`).
fn strip_v2(path: &str) -> &str {
    match path.strip_prefix("/v2") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => path,
    }
}

/// Every client answer names the cluster (`X-Etcd-Cluster-Id`), as etcd's do: a client or
/// proxy pointed at the wrong cluster can tell.
pub async fn route_client(app: Arc<App>, req: Request<Incoming>) -> Resp {
    static CLUSTER_ID: std::sync::OnceLock<http::HeaderValue> = std::sync::OnceLock::new();
    let id = CLUSTER_ID
        .get_or_init(|| {
            http::HeaderValue::from_str(&format!("{:016x}", app.cluster_id))
                .unwrap_or_else(|_| http::HeaderValue::from_static("0"))
        })
        .clone();
    let mut r = route_client_inner(app, req).await;
    r.headers_mut()
        .insert(crate::identity::CLUSTER_ID_HEADER, id);
    r
}

async fn route_client_inner(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let p = strip_v2(&path);
    if p == "/keys" || p.starts_with("/keys/") {
        let raw_key = &p["/keys".len()..];
        if let Err(r) = auth::check_keys(&app, &req, raw_key).await {
            return r;
        }
        return keys::handle(app, req, raw_key.to_string()).await;
    }
    if p == "/auth" || p.starts_with("/auth/") {
        return auth_api::handle(app, req, p).await;
    }
    if p == "/members" || p.starts_with("/members/") {
        if let Err(r) = auth::check_write_root(&app, &req).await {
            return r;
        }
    }
    match (req.method(), p) {
        (_, "/members") | (_, "/members/") => members::members(app, req, None).await,
        (_, m) if m.starts_with("/members/") => {
            let id = m["/members/".len()..].to_string();
            members::members(app, req, Some(id)).await
        }
        (&Method::GET, "/machines") => cluster::machines(&app),
        (&Method::GET, "/stats/self") => cluster::stats_self(&app),
        (&Method::GET, "/stats/leader") => cluster::stats_leader(&app),
        (&Method::GET, "/stats/store") => cluster::stats_store(&app),
        (&Method::GET, "/raft/status") => cluster::raft_status(&app),
        (&Method::GET, "/health") => cluster::health(&app).await,
        (&Method::GET, "/version") => cluster::version(),
        (&Method::GET, "/metrics") => cluster::metrics(&app),
        // A backup holds every key and the auth records: root only once auth is on.
        (&Method::GET, "/snapshot") => match auth::check_root(&app, &req).await {
            Ok(()) => snapshot::snapshot(app).await,
            Err(r) => r,
        },
        _ => response::text(404, "404 page not found\n"),
    }
}

/// Read a request body up to `limit` bytes within `BODY_TIMEOUT`.
pub async fn read_body(
    req: Request<Incoming>,
    limit: usize,
) -> Result<(http::request::Parts, Bytes), Resp> {
    read_body_at(req, limit, 0).await
}

/// [`read_body`] whose error bodies carry the store `index`, as every keys error does.
pub async fn read_body_at(
    req: Request<Incoming>,
    limit: usize,
    index: u64,
) -> Result<(http::request::Parts, Bytes), Resp> {
    let (parts, body) = req.into_parts();
    // Collected into one buffer sized from the declared length, each frame copied in and
    // freed as it arrives: a large body (a snapshot) is held once, not as frames plus a copy.
    let too_large = || {
        response::plain_error(
            413,
            210,
            "Invalid POST form",
            &format!("request body larger than {limit} bytes"),
            index,
        )
    };
    let hint = hyper::body::Body::size_hint(&body).lower();
    // A declared length over the limit is refused before a byte of it is read or held.
    if hint > limit as u64 {
        return Err(too_large());
    }
    let mut buf = bytes::BytesMut::with_capacity(usize::try_from(hint).unwrap_or(limit).min(limit));
    let mut body = body;
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(response::plain_error(
                    408,
                    210,
                    "Invalid POST form",
                    "request body not received in time",
                    index,
                ))
            }
            Ok(None) => return Ok((parts, buf.freeze())),
            Ok(Some(Err(e))) => {
                return Err(response::plain_error(
                    400,
                    210,
                    "Invalid POST form",
                    &format!("cannot read body: {e}"),
                    index,
                ))
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > limit {
                        return Err(too_large());
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
}

pub fn empty_body() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}
