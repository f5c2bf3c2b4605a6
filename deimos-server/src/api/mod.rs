//! HTTP on hyper: the client API (etcd v2 keys and cluster endpoints, plus Deimos's status) and
//! the peer API (Raft messages). Handlers are plain async fns from a request to a response.

// Handlers return `Result<_, Resp>` where the error *is* the response to send, built once per
// request; boxing it would add an allocation to save stack bytes nobody is short of.
#![allow(clippy::result_large_err)]

pub mod cluster;
pub mod keys;
pub mod params;
pub mod peer;
pub mod response;

use std::convert::Infallible;
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

pub async fn serve(app: Arc<App>, listener: TcpListener, kind: Listener) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(dispatch(app, req, kind, remote).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = %e, "connection closed with error");
            }
        });
    }
}

async fn dispatch(
    app: Arc<App>,
    req: Request<Incoming>,
    kind: Listener,
    _remote: SocketAddr,
) -> Resp {
    match kind {
        Listener::Client => route_client(app, req).await,
        Listener::Peer => peer::route(app, req).await,
    }
}

/// `/v2/x` and `/x` are the same endpoint (the original Deimos served `/x`; etcd v2 clients use `/v2/x`).
fn strip_v2(path: &str) -> &str {
    match path.strip_prefix("/v2") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => path,
    }
}

async fn route_client(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let p = strip_v2(&path);
    if p == "/keys" || p.starts_with("/keys/") {
        return keys::handle(app, req, p["/keys".len()..].to_string()).await;
    }
    match (req.method(), p) {
        (_, "/members") | (_, "/members/") => cluster::members(app, req, None).await,
        (_, m) if m.starts_with("/members/") => {
            let id = m["/members/".len()..].to_string();
            cluster::members(app, req, Some(id)).await
        }
        (&Method::GET, "/machines") => cluster::machines(&app),
        (&Method::GET, "/stats/self") => cluster::stats_self(&app),
        (&Method::GET, "/stats/leader") => cluster::stats_leader(&app),
        (&Method::GET, "/stats/store") => cluster::stats_store(&app),
        (&Method::GET, "/raft/status") => cluster::raft_status(&app),
        (&Method::GET, "/health") => cluster::health(&app).await,
        (&Method::GET, "/version") => cluster::version(),
        (&Method::GET, "/metrics") => cluster::metrics(),
        _ => response::text(404, "404 page not found\n"),
    }
}

/// Read a request body up to `limit` bytes within `BODY_TIMEOUT`.
pub async fn read_body(
    req: Request<Incoming>,
    limit: usize,
) -> Result<(http::request::Parts, Bytes), Resp> {
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(b)) => Ok((parts, b.to_bytes())),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(response::plain_error(
                    413,
                    210,
                    "Invalid POST form",
                    &format!("request body larger than {limit} bytes"),
                ))
            } else {
                Err(response::plain_error(
                    400,
                    210,
                    "Invalid POST form",
                    &format!("cannot read body: {e}"),
                ))
            }
        }
        Err(_) => Err(response::plain_error(
            408,
            210,
            "Invalid POST form",
            "request body not received in time",
        )),
    }
}

pub fn empty_body() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}
