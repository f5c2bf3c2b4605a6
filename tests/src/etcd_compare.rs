//! What `tests/etcd_compare.rs` needs to put Deimos beside a real etcd 3.4 (started by
//! [`crate::etcd::Etcd`]): the per-server normalisation of answers ([`Side`], [`seen`]) that leaves only
//! real differences (index bases and timestamps are not: see the test's list of intentional
//! differences for what else is normalised, and why).

use serde_json::Value;

use crate::{Http, Reply};

/// One server under comparison and the index its key space had when the script began, so that
/// indexes compare as "the n-th write of the script".
pub struct Side {
    pub name: &'static str,
    pub url: String,
    pub base: u64,
    /// Writes the server made to its own key space since the script began (etcd records its
    /// member attributes at every start; invisible under `/v2/keys` but they take indexes).
    /// Applies to the current index only, not to the events written before.
    pub drift: u64,
    member_id: String,
}

impl Side {
    pub fn new(name: &'static str, url: String, http: &Http) -> Side {
        let r = http.get(&format!("{url}/v2/keys/"));
        let members = http.get(&format!("{url}/v2/members")).json();
        Side {
            name,
            drift: 0,
            base: r.header_u64("x-etcd-index"),
            member_id: members["members"][0]["id"]
                .as_str()
                .expect("member id")
                .to_string(),
            url,
        }
    }

    /// `{i:N}` becomes the index of the script's N-th write on this server, `{id}` its member id.
    pub fn fill(&self, s: &str) -> String {
        let mut out = s.replace("{id}", &self.member_id);
        while let Some(start) = out.find("{i:") {
            let end = start + out[start..].find('}').expect("closed {i:N}");
            let n: u64 = out[start + 3..end].parse().expect("{i:N} number");
            out.replace_range(start..=end, &(self.base + n).to_string());
        }
        out
    }

    fn rel(&self, v: &Value) -> Value {
        match v.as_u64() {
            Some(i) if i >= self.base => Value::from(format!("i:{}", i - self.base)),
            _ => v.clone(),
        }
    }

    fn rel_now(&self, v: &Value) -> Value {
        match v.as_u64() {
            Some(i) if i >= self.base + self.drift => {
                Value::from(format!("i:{}", i - self.base - self.drift))
            }
            _ => v.clone(),
        }
    }

    /// Indexes relative to the script's start; timestamps and TTL countdowns coarsened;
    /// listings in key order unless `sorted` (see the list).
    fn normalise(&self, v: &Value, sorted: bool) -> Value {
        match v {
            Value::Object(m) => {
                let mut out = serde_json::Map::new();
                for (k, x) in m {
                    // A spent TTL: etcd omits a 0, Deimos renders it (an intentional difference).
                    if k == "ttl" && x.as_i64().is_some_and(|t| t <= 0) {
                        continue;
                    }
                    let y = match k.as_str() {
                        "modifiedIndex" | "createdIndex" => self.rel(x),
                        "index" => self.rel_now(x),
                        "expiration" => Value::from("<expiration>"),
                        // Seconds left, read moments after the write: equal unless a second
                        // boundary falls in between, so compared to the nearest ten.
                        "ttl" => Value::from(x.as_i64().map(|t| (t + 5) / 10 * 10)),
                        "key" => Value::from(self.in_order_key(x.as_str().unwrap_or(""))),
                        "cause" => Value::from(self.cause(x.as_str().unwrap_or(""), m)),
                        "nodes" if !sorted => {
                            let mut nodes = x.as_array().cloned().unwrap_or_default();
                            nodes.sort_by_key(|n| n["key"].as_str().unwrap_or("").to_string());
                            self.normalise(&Value::Array(nodes), sorted)
                        }
                        _ => self.normalise(x, sorted),
                    };
                    out.insert(k.clone(), y);
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| self.normalise(x, sorted)).collect()),
            other => other.clone(),
        }
    }

    /// An in-order key ends in its 20-digit creation index.
    fn in_order_key(&self, k: &str) -> String {
        match k.rsplit_once('/') {
            Some((dir, last)) if last.len() == 20 && last.bytes().all(|b| b.is_ascii_digit()) => {
                let i: u64 = last.parse().unwrap_or(0);
                format!("{dir}/<i:{}>", i.saturating_sub(self.base))
            }
            _ => k.to_string(),
        }
    }

    /// Causes that hold indexes: 101's `[asked != actual]` for `prevIndex` (the script's
    /// `prevValue`s are never numbers, so a numeric pair is an index pair) and 401's
    /// `[first kept/asked]`, the first kept one as its distance from the current index (999
    /// for a full history).
    fn cause(&self, c: &str, body: &serde_json::Map<String, Value>) -> String {
        let code = body.get("errorCode").and_then(Value::as_u64);
        let index = body.get("index").and_then(Value::as_u64);
        let mut out = String::new();
        let mut rest = c;
        while let Some(open) = rest.find('[') {
            let Some(close) = rest[open..].find(']').map(|n| open + n) else {
                break;
            };
            out.push_str(&rest[..open]);
            let inner = &rest[open + 1..close];
            let pair = |sep: &str| -> Option<(u64, u64)> {
                let (a, b) = inner.split_once(sep)?;
                Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
            };
            let rel = |i: u64| format!("i:{}", i.saturating_sub(self.base));
            out.push_str(&match (code, pair(" != "), pair("/"), index) {
                (Some(101), Some((a, b)), _, _) => format!("[{} != {}]", rel(a), rel(b)),
                (Some(401), _, Some((first, asked)), Some(now)) => {
                    format!("[index-{}/{}]", now.saturating_sub(first), rel(asked))
                }
                _ => format!("[{inner}]"),
            });
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// The headers compared (for presence; content type by value).
const HEADERS: &[&str] = &[
    "x-etcd-index",
    "x-raft-index",
    "x-raft-term",
    "x-etcd-cluster-id",
];

#[derive(Debug, PartialEq)]
pub struct Seen {
    pub status: u16,
    pub content_type: Option<String>,
    pub headers: Vec<&'static str>,
    pub body: Value,
}

pub fn seen(side: &Side, r: &Reply, sorted: bool) -> Seen {
    let body = serde_json::from_str::<Value>(&r.body)
        .map(|v| side.normalise(&v, sorted))
        .unwrap_or_else(|_| Value::from(r.body.clone()));
    Seen {
        status: r.status,
        content_type: r.header("content-type").map(str::to_string),
        headers: HEADERS
            .iter()
            .copied()
            .filter(|h| r.header(h).is_some())
            .collect(),
        body,
    }
}
