//! Requests with HTTP basic credentials, shared by the auth tests (`auth.rs`, `auth_etcd.rs`).

use std::time::{Duration, Instant};

use crate::http::{Http, Reply};

/// How long one auth test request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Base64 of `user:password` (RFC 4648, padded), for the `Authorization` header.
pub fn basic(creds: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = creds.as_bytes();
    let mut out = String::from("Basic ");
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One request: `creds` is `user:password`; a body starting with `{` (or any body to a
/// non-keys path) is sent as JSON, otherwise as a form.
pub fn call(
    http: &Http,
    method: &str,
    url: &str,
    creds: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let auth = creds.map(basic);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let ct = match body {
        Some(b) if b.starts_with('{') || !url.contains("/v2/keys") => "application/json",
        _ => "application/x-www-form-urlencoded",
    };
    http.request_with(
        method,
        url,
        &headers,
        body.map(|b| (ct, b.as_bytes())),
        TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

pub fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
