//! `--cors`: the origins a browser page may call the client API from.
//!
//! As etcd: an allowed origin is echoed in `Access-Control-Allow-Origin` (with the methods and
//! headers a keys client uses); a disallowed one gets no CORS header at all, so the browser
//! blocks the page; `OPTIONS` (the preflight) is answered 200 without reaching a handler.
//! With no `--cors`, nothing here runs and `OPTIONS` is an ordinary request.

use http::header::{HeaderValue, ORIGIN};
use http::{HeaderMap, Method};

use super::response::{self, Resp};

pub const ALLOW_METHODS: &str = "POST, GET, OPTIONS, PUT, DELETE";
pub const ALLOW_HEADERS: &str = "accept, content-type, authorization";

#[derive(Debug, Clone, Default)]
pub struct Cors {
    any: bool,
    origins: Vec<String>,
}

impl Cors {
    pub fn new(list: &[String]) -> Cors {
        let origins: Vec<String> = list
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins,
        }
    }

    pub fn enabled(&self) -> bool {
        !self.origins.is_empty()
    }

    fn allowed<'a>(&self, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
        let origin = headers.get(ORIGIN)?;
        let s = origin.to_str().ok()?;
        (self.any || self.origins.iter().any(|o| o == s)).then_some(origin)
    }

    /// The preflight answer, if this request is one (`None`: handle the request normally).
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Resp> {
        if !self.enabled() || method != Method::OPTIONS {
            return None;
        }
        let mut r = response::text(200, "");
        self.decorate(headers, &mut r);
        Some(r)
    }

    /// Add the CORS headers to a response for a request from an allowed origin.
    pub fn decorate(&self, req_headers: &HeaderMap, resp: &mut Resp) {
        let Some(origin) = self.allowed(req_headers) else {
            return;
        };
        let hs = resp.headers_mut();
        hs.insert("access-control-allow-origin", origin.clone());
        hs.insert(
            "access-control-allow-methods",
            HeaderValue::from_static(ALLOW_METHODS),
        );
        hs.insert(
            "access-control-allow-headers",
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        // The answer depends on Origin, so caches must not share it across origins.
        hs.append("vary", HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
        h
    }

    #[test]
    fn allowed_origins_are_echoed_and_others_get_nothing() {
        let c = Cors::new(&["http://a.example".into()]);
        let mut r = response::text(200, "");
        c.decorate(&headers("http://a.example"), &mut r);
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "http://a.example"
        );
        let mut r = response::text(200, "");
        c.decorate(&headers("http://evil.example"), &mut r);
        assert!(r.headers().get("access-control-allow-origin").is_none());
        let any = Cors::new(&["*".into()]);
        let p = any
            .preflight(&Method::OPTIONS, &headers("http://x"))
            .unwrap();
        assert_eq!(p.status(), 200);
        assert_eq!(p.headers()["access-control-allow-origin"], "http://x");
        assert!(Cors::new(&[])
            .preflight(&Method::OPTIONS, &headers("http://x"))
            .is_none());
    }
}
