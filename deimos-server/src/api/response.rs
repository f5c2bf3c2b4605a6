//! Response building: JSON bodies, the etcd error shape, the index/term headers.

use bytes::Bytes;
use deimos_store::keyspace::StoreError;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

pub use crate::body::Body;
pub type Resp = hyper::Response<Body>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn json<T: Serialize + ?Sized>(status: u16, v: &T) -> Resp {
    let mut body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    json_body(status, full(body))
}

/// A response with a JSON body already rendered (or being rendered into a stream).
pub fn json_body(status: u16, body: Body) -> Resp {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .unwrap_or_else(|_| hyper::Response::new(full("")))
}

pub fn text(status: u16, s: &str) -> Resp {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(full(s.to_string()))
        .unwrap_or_else(|_| hyper::Response::new(full("")))
}

/// The members API's (and other non-keys endpoints') error shape: `{"message": "..."}`.
pub fn message(status: u16, msg: &str) -> Resp {
    json(status, &deimos_api::error::Message::new(msg))
}

/// An etcd-shaped error without a store behind it (transport-level failures).
pub fn plain_error(status: u16, code: u16, message: &str, cause: &str, index: u64) -> Resp {
    let body = deimos_api::error::EtcdError {
        error_code: code,
        message: message.to_string(),
        cause: cause.to_string(),
        index,
    };
    json(status, &body)
}

pub fn store_error(e: &StoreError) -> Resp {
    json(e.http_status(), e)
}

/// The headers every keys response carries.
pub struct IndexHeaders {
    pub etcd_index: u64,
    pub raft_index: u64,
    pub raft_term: u64,
    pub read_mode: Option<crate::stats::ReadMode>,
}

// Names built at compile time: parsing them per response showed up in the lease-read profile.
const X_ETCD_INDEX: http::HeaderName = http::HeaderName::from_static("x-etcd-index");
const X_DEIMOS_INDEX: http::HeaderName = http::HeaderName::from_static("x-deimos-index");
const X_RAFT_INDEX: http::HeaderName = http::HeaderName::from_static("x-raft-index");
const X_RAFT_TERM: http::HeaderName = http::HeaderName::from_static("x-raft-term");
const X_DEIMOS_READ: http::HeaderName = http::HeaderName::from_static("x-deimos-read");

pub fn with_headers(mut r: Resp, h: &IndexHeaders) -> Resp {
    let hs = r.headers_mut();
    let index = http::HeaderValue::from(h.etcd_index);
    hs.insert(X_ETCD_INDEX, index.clone());
    hs.insert(X_DEIMOS_INDEX, index);
    hs.insert(X_RAFT_INDEX, http::HeaderValue::from(h.raft_index));
    hs.insert(X_RAFT_TERM, http::HeaderValue::from(h.raft_term));
    if let Some(m) = h.read_mode {
        hs.insert(X_DEIMOS_READ, http::HeaderValue::from_static(m.as_str()));
    }
    r
}
