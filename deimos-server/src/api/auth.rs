//! The etcd v2 auth layer in front of the keys, members and auth handlers: who a request is
//! (HTTP basic auth, else a verified TLS client certificate's common name, else nobody) and
//! whether that identity may do what it asks. The handlers behind it know nothing of auth.
//!
//! What etcd does, and so what this does while auth is on (see `deimos_store::auth`):
//! - keys: a request with an `Authorization` header must carry a valid user and password whose
//!   roles allow the key (read for GET/HEAD, write otherwise; `recursive=true` needs a `*`
//!   pattern); one without credentials gets the `guest` role. Refusals: 401 with error 110.
//! - members: reads are open, changes need a user with the root role (401
//!   `{"message":"Insufficient credentials"}`), as are all of `/v2/auth` but `GET /v2/auth/enable`.
//!
//! Passwords are checked against bcrypt hashes. bcrypt at etcd's cost 10 takes tens of
//! milliseconds of CPU, and basic auth sends the password with every request, so a verified
//! (user, password) pair is remembered — as an HMAC under a key that lives only in this
//! process's memory, never the password — together with the hash it was verified against. A
//! password change replaces the hash, so the remembered pair stops matching at once; a removed
//! user has no hash to match. Failures are never remembered. Passwords are never logged.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use deimos_store::machine::SharedAuth;
use hyper::body::Incoming;
use hyper::{Method, Request};
use ring::hmac;

use super::response::{self, Resp};
use crate::node::App;
use crate::tls::PeerCert;

/// etcd's bcrypt cost (`bcrypt.DefaultCost`): what an etcd-created hash would carry, too.
pub const BCRYPT_COST: u32 = 10;
/// Verified (user, password) pairs remembered; the map is emptied when it is full, which keeps
/// memory bounded whatever the number of users and costs one bcrypt per pair to refill.
const CACHE_CAPACITY: usize = 4096;
/// Longest `Authorization` header value looked at; a longer one is refused unread.
const MAX_AUTH_HEADER: usize = 4096;

/// Auth state plus the verified-password cache; one per member, shared by all requests.
pub struct AuthGate {
    state: SharedAuth,
    key: hmac::Key,
    verified: RwLock<HashMap<[u8; 32], Verified>>,
    /// One bcrypt at a time: a flood of wrong passwords (each costs tens of milliseconds of
    /// CPU, and failures are never remembered) then takes at most one core from Raft and the
    /// other requests, instead of all of them.
    verifying: tokio::sync::Semaphore,
}

/// A remembered header's user and the password hash it was verified against.
type Verified = (Arc<str>, Arc<str>);

/// Who a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// Auth is off: everything is allowed.
    Anyone,
    /// No credentials (guest role).
    Guest,
    User(Arc<str>),
    /// Credentials that did not check out.
    Refused,
}

impl AuthGate {
    pub fn new(state: SharedAuth) -> Self {
        let rng = ring::rand::SystemRandom::new();
        // A fresh random key per process: the remembered digests mean nothing outside it.
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            hmac::Key::new(hmac::HMAC_SHA256, &std::process::id().to_le_bytes())
        });
        AuthGate {
            state,
            key,
            verified: RwLock::new(HashMap::new()),
            verifying: tokio::sync::Semaphore::new(1),
        }
    }

    pub fn state(&self) -> &SharedAuth {
        &self.state
    }

    pub fn enabled(&self) -> bool {
        self.state.read().map(|s| s.enabled()).unwrap_or(true)
    }

    /// Identify the sender of `req`. The common case — a header verified before, or no
    /// credentials — costs one HMAC of the raw header and two read locks, and copies no record;
    /// only a header not seen yet (or a changed password) is decoded and pays for bcrypt, on a
    /// blocking thread.
    pub async fn who(&self, req: &Request<Incoming>) -> Who {
        let Some(header) = req.headers().get(hyper::header::AUTHORIZATION) else {
            let Ok(s) = self.state.read() else {
                return Who::Refused;
            };
            if !s.enabled() {
                return Who::Anyone;
            }
            // etcd with --client-cert-auth: a verified client certificate's CN names the user
            // (the certificate is only attached when the listener verified it).
            let cn = req
                .extensions()
                .get::<PeerCert>()
                .and_then(PeerCert::common_name);
            return match cn {
                Some(cn) if s.user_ref(&cn).is_some() => Who::User(cn.into()),
                _ => Who::Guest,
            };
        };
        let raw = header.as_bytes();
        if raw.len() > MAX_AUTH_HEADER {
            return Who::Refused;
        }
        let tag = self.tag(raw);
        if let Some(who) = self.remembered(&tag) {
            return who;
        }
        let Some((user, password)) = parse_basic(raw) else {
            return Who::Refused;
        };
        let hash: Arc<str> = {
            let Ok(s) = self.state.read() else {
                return Who::Refused;
            };
            if !s.enabled() {
                return Who::Anyone;
            }
            let Some(u) = s.user_ref(&user) else {
                tracing::debug!(user = %user, "auth: unknown user");
                return Who::Refused;
            };
            u.password_hash.as_str().into()
        };
        let Ok(_permit) = self.verifying.acquire().await else {
            return Who::Refused;
        };
        // Clients that start together with the same credentials wait here for the first one's
        // verification, then find it remembered.
        if let Some(who) = self.remembered(&tag) {
            return who;
        }
        let h = hash.clone();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &h).unwrap_or(false))
            .await
            .unwrap_or(false);
        if !ok {
            tracing::debug!(user = %user, "auth: wrong password");
            return Who::Refused;
        }
        let user: Arc<str> = user.into();
        if let Ok(mut v) = self.verified.write() {
            if v.len() >= CACHE_CAPACITY {
                v.clear();
            }
            v.insert(tag, (user.clone(), hash));
        }
        Who::User(user)
    }

    /// The remembered digest of an `Authorization` header value. Keyed by the raw value, so a
    /// remembered header needs no decoding; two spellings of the same credentials are two
    /// entries, each verified once.
    fn tag(&self, header: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&hmac::sign(&self.key, header).as_ref()[..32]);
        out
    }

    /// Who a remembered header names, if it was verified against the password hash its user
    /// has now (a password change or a removed user makes it unremembered at once). `None`
    /// also when auth is off (the caller then finds that out itself).
    fn remembered(&self, tag: &[u8; 32]) -> Option<Who> {
        let (user, hash) = self.verified.read().ok()?.get(tag).cloned()?;
        let s = self.state.read().ok()?;
        if !s.enabled() {
            return Some(Who::Anyone);
        }
        s.user_ref(&user)
            .filter(|u| *u.password_hash == *hash)
            .map(|_| Who::User(user))
    }

    /// Whether `who` may read (`write` false) or write `key`.
    fn may_access(&self, who: &Who, key: &str, write: bool, recursive: bool) -> bool {
        let Ok(s) = self.state.read() else {
            return false;
        };
        match who {
            Who::Anyone => true,
            Who::Guest => s.may_access(None, key, write, recursive),
            Who::User(u) => s.may_access(Some(u), key, write, recursive),
            Who::Refused => false,
        }
    }

    /// Whether `who` holds the root role (anyone does while auth is off).
    pub fn is_root(&self, who: &Who) -> bool {
        match who {
            Who::Anyone => true,
            Who::User(u) => self.state.read().is_ok_and(|s| s.is_root(u)),
            Who::Guest | Who::Refused => false,
        }
    }
}

/// `Basic base64(user:password)`; `None` when malformed (etcd refuses those).
fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    if value.len() > MAX_AUTH_HEADER {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (u, p) = decoded.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// etcd's refusal of a keys request: 401, error 110, index 0.
pub fn keys_refused() -> Resp {
    let body = deimos_api::error::EtcdError {
        error_code: 110,
        message: "The request requires user authentication".into(),
        cause: "Insufficient credentials".into(),
        index: 0,
    };
    let mut r = with_challenge(response::json(401, &body));
    r.headers_mut()
        .insert("x-etcd-index", http::HeaderValue::from(0u64));
    r
}

/// etcd's refusal of a members or auth request.
pub fn refused() -> Resp {
    with_challenge(message(401, "Insufficient credentials"))
}

/// etcd's `{"message": ...}` error of the auth and members handlers (no trailing newline, as
/// etcd writes it).
pub fn message(status: u16, msg: &str) -> Resp {
    #[derive(serde::Serialize)]
    struct Message<'a> {
        message: &'a str,
    }
    let body = serde_json::to_vec(&Message { message: msg }).unwrap_or_default();
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(response::full(body))
        .unwrap_or_else(|_| hyper::Response::new(response::full("")))
}

/// RFC 7235 asks a 401 to name the scheme it wants (etcd sends none; clients ignore it).
fn with_challenge(mut r: Resp) -> Resp {
    r.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Basic realm=\"etcd\""),
    );
    r
}

/// The keys check: `raw_key` is the path after `/keys`, as the request spelled it.
pub async fn check_keys(app: &App, req: &Request<Incoming>, raw_key: &str) -> Result<(), Resp> {
    let gate = &app.auth;
    if !gate.enabled() {
        return Ok(());
    }
    let who = gate.who(req).await;
    let key = percent_encoding::percent_decode_str(raw_key).decode_utf8_lossy();
    let recursive = req
        .uri()
        .query()
        .into_iter()
        .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
        .any(|(k, v)| k == "recursive" && parse_go_bool(&v));
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    if gate.may_access(&who, &key, write, recursive) {
        Ok(())
    } else {
        Err(keys_refused())
    }
}

/// Changes need the root role; reads (GET/HEAD) are open (etcd's `hasWriteRootAccess`).
pub async fn check_write_root(app: &App, req: &Request<Incoming>) -> Result<(), Resp> {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return Ok(());
    }
    check_root(app, req).await
}

pub async fn check_root(app: &App, req: &Request<Incoming>) -> Result<(), Resp> {
    if !app.auth.enabled() {
        return Ok(());
    }
    let who = app.auth.who(req).await;
    if app.auth.is_root(&who) {
        Ok(())
    } else {
        Err(refused())
    }
}

/// Go's `strconv.ParseBool` truths, which etcd's form parsing uses.
fn parse_go_bool(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_parse_and_bad_ones_do_not() {
        let enc = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert_eq!(
            parse_basic(enc("alice:pw:with:colons").as_bytes()),
            Some(("alice".into(), "pw:with:colons".into()))
        );
        assert_eq!(parse_basic(enc("nocolon").as_bytes()), None);
        assert_eq!(parse_basic(b"Bearer abc"), None);
        assert_eq!(parse_basic(b"Basic !!!"), None);
        assert_eq!(parse_basic(&vec![b'a'; MAX_AUTH_HEADER + 1]), None);
    }
}
