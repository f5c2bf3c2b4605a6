//! A small blocking HTTP helper for tests: every request returns status, headers and body, never
//! an error for a 4xx/5xx, because error responses are what many tests assert on.
//!
//! Built on `ureq` (blocking, no async runtime in the tests, no TLS compiled in). The agent
//! allows non-standard methods so that a test can check the server's 405.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

/// Per-request timeout unless a test asks for another: long enough for a write that waits out
/// an election, short enough that a hung server fails the test instead of the suite.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header names lower-cased; the last value wins.
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Reply {
    /// The body as JSON (`Value::Null` when it is not JSON, so `r.json()["x"]` reads naturally).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// A numeric header such as `X-Etcd-Index`; panics with the response when missing, since
    /// every caller is asserting that it is there.
    pub fn header_u64(&self, name: &str) -> u64 {
        self.header(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric {name} header in {self:?}"))
    }

    /// `errorCode` of an etcd error body, if it is one.
    pub fn error_code(&self) -> Option<u64> {
        self.json()["errorCode"].as_u64()
    }
}

/// Blocking client; cheap to clone and safe to share between threads.
#[derive(Clone)]
pub struct Http {
    agent: ureq::Agent,
}

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

impl Http {
    pub fn new() -> Http {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .max_redirects(0)
            .timeout_global(Some(DEFAULT_TIMEOUT))
            .build();
        Http {
            agent: config.new_agent(),
        }
    }

    /// Any method, optional body with its content type, explicit timeout.
    pub fn request(
        &self,
        method: &str,
        url: &str,
        body: Option<(&str, &[u8])>,
        timeout: Duration,
    ) -> Result<Reply, String> {
        self.request_with(method, url, &[], body, timeout)
    }

    /// [`Http::request`] with extra request headers.
    pub fn request_with(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
        timeout: Duration,
    ) -> Result<Reply, String> {
        let mut resp = self.send(method, url, headers, body, timeout)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| format!("{method} {url}: reading body: {e}"))?;
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Sends one request and returns the response with its body unread.
    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
        timeout: Duration,
    ) -> Result<ureq::http::Response<ureq::Body>, String> {
        let mut b = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some((ct, _)) = body {
            b = b.header("content-type", ct);
        }
        let req = b
            .body(body.map(|(_, bytes)| bytes.to_vec()).unwrap_or_default())
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let req = self
            .agent
            .configure_request(req)
            .timeout_global(Some(timeout))
            .build();
        self.agent
            .run(req)
            .map_err(|e| format!("{method} {url}: {e}"))
    }

    /// GET `url` and read the body to the end without keeping it: its status and length in
    /// bytes. No size limit, for responses larger than [`Http::request`] keeps (a listing of a
    /// million keys).
    pub fn get_discarding(&self, url: &str, timeout: Duration) -> Result<(u16, u64), String> {
        let mut resp = self.send("GET", url, &[], None, timeout)?;
        let status = resp.status().as_u16();
        let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
        let n = std::io::copy(&mut reader, &mut std::io::sink())
            .map_err(|e| format!("GET {url}: reading body: {e}"))?;
        Ok((status, n))
    }

    /// Like [`Http::request`] but panics on a transport error: for steps that must reach a
    /// live node.
    pub fn must(&self, method: &str, url: &str, body: Option<(&str, &[u8])>) -> Reply {
        self.request(method, url, body, DEFAULT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn get(&self, url: &str) -> Reply {
        self.must("GET", url, None)
    }

    pub fn delete(&self, url: &str) -> Reply {
        self.must("DELETE", url, None)
    }

    /// `method` with an `application/x-www-form-urlencoded` body built from `form`.
    pub fn form(&self, method: &str, url: &str, form: &[(&str, &str)]) -> Reply {
        let body = encode_form(form);
        self.must(
            method,
            url,
            Some(("application/x-www-form-urlencoded", body.as_bytes())),
        )
    }

    pub fn put_form(&self, url: &str, form: &[(&str, &str)]) -> Reply {
        self.form("PUT", url, form)
    }

    pub fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Reply {
        self.form("POST", url, form)
    }

    pub fn json_body(&self, method: &str, url: &str, body: &Value) -> Reply {
        let bytes = serde_json::to_vec(body).expect("serialisable JSON");
        self.must(method, url, Some(("application/json", &bytes)))
    }
}

/// `application/x-www-form-urlencoded` encoding (also right for query strings).
pub fn encode_form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Sum of a Prometheus metric's samples whose label set contains every `labels` pair
/// (`name{...} value` lines; `name value` when unlabelled). Absent metric → 0.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_str) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| label_str.contains(&format!("{k}=\"{v}\"")));
            if !ok {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_matching_series() {
        let text = "# HELP x y\nx{to=\"a\"} 3\nx{to=\"b\"} 4\nxy 100\ny{mode=\"lease\"} 2\nz 7\n";
        assert_eq!(metric_sum(text, "x", &[]), 7.0);
        assert_eq!(metric_sum(text, "x", &[("to", "b")]), 4.0);
        assert_eq!(metric_sum(text, "y", &[("mode", "lease")]), 2.0);
        assert_eq!(metric_sum(text, "y", &[("mode", "quorum")]), 0.0);
        assert_eq!(metric_sum(text, "z", &[]), 7.0);
        assert_eq!(metric_sum(text, "absent", &[]), 0.0);
    }

    #[test]
    fn form_encoding_escapes_reserved_bytes() {
        assert_eq!(
            encode_form(&[("value", "a b&c=d/é")]),
            "value=a%20b%26c%3Dd%2F%C3%A9"
        );
        assert_eq!(
            encode_form(&[("ttl", ""), ("dir", "true")]),
            "ttl=&dir=true"
        );
    }
}
