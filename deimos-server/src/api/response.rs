//! Response building: JSON bodies, the etcd error shape, the index/term headers.

use std::convert::Infallible;

use bytes::Bytes;
use deimos_store::keyspace::StoreError;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

pub type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;
pub type Resp = hyper::Response<Body>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn json<T: Serialize + ?Sized>(status: u16, v: &T) -> Resp {
    let mut body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(body))
        .unwrap_or_else(|_| hyper::Response::new(full("")))
}

pub fn text(status: u16, s: &str) -> Resp {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(full(s.to_string()))
        .unwrap_or_else(|_| hyper::Response::new(full("")))
}

/// An etcd-shaped error without a store behind it (transport-level failures).
pub fn plain_error(status: u16, code: u16, message: &str, cause: &str, index: u64) -> Resp {
    json(
        status,
        &serde_json::json!({"errorCode": code, "message": message, "cause": cause, "index": index}),
    )
}

pub fn store_error(e: &StoreError) -> Resp {
    json(e.http_status(), e)
}

/// The headers every keys response carries.
pub struct IndexHeaders {
    pub etcd_index: u64,
    pub raft_index: u64,
    pub raft_term: u64,
    pub read_mode: Option<&'static str>,
}

pub fn with_headers(mut r: Resp, h: &IndexHeaders) -> Resp {
    let hs = r.headers_mut();
    let put = |hs: &mut http::HeaderMap, k: &'static str, v: String| {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            hs.insert(k, v);
        }
    };
    put(hs, "x-etcd-index", h.etcd_index.to_string());
    put(hs, "x-deimos-index", h.etcd_index.to_string());
    put(hs, "x-raft-index", h.raft_index.to_string());
    put(hs, "x-raft-term", h.raft_term.to_string());
    if let Some(m) = h.read_mode {
        put(hs, "x-deimos-read", m.to_string());
    }
    r
}
