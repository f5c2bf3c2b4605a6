//! `/v2/keys` (and `/keys`): etcd v2 semantics on top of the replicated key space.
//!
//! Reads: a plain GET is linearizable — from local state when the lease is valid at read time
//! (`X-Deimos-Read: lease`), otherwise after a ReadIndex round (`read-index`; a follower obtains
//! the read index from the leader through Raft and then reads its own applied state);
//! `?quorum=true` goes through the Raft log as in etcd v2 (`quorum`: an empty barrier entry is
//! committed and applied here first); `?consistency=local` (or `?stale=true`) reads whatever
//! this node has applied (`local`). Writes are proposed here; a follower forwards them
//! through Raft and answers from its own apply, so clients never need to find the leader.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use deimos_raft::driver::{DriverError, ReadPath};
use deimos_raft::RaftError;
use deimos_store::keyspace::{Applied, Command, ErrorCode, Event, StoreError};
use deimos_store::machine::{Output, Proposal};
use hyper::body::Incoming;
use hyper::{Method, Request};
use percent_encoding::percent_decode_str;
use tokio::sync::mpsc;

use super::params::Params;
use super::response::{self, IndexHeaders, Resp};
use crate::node::{now_ms, App};
use crate::stats::{self, ReadMode};

pub async fn handle(app: Arc<App>, req: Request<Incoming>, raw_key: String) -> Resp {
    let index = store_index(&app);
    let key = match percent_decode_str(&raw_key).decode_utf8() {
        Ok(k) if k.is_empty() => "/".to_string(),
        Ok(k) => k.into_owned(),
        Err(_) => {
            return error(
                &app,
                &StoreError::invalid_key("key is not valid UTF-8", index),
            )
        }
    };
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_string);
    let is_form = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let body = if method == Method::GET || method == Method::HEAD {
        None
    } else {
        match super::read_body_at(req, app.cfg.flags.max_request_bytes, index).await {
            Ok((_, b)) => Some(b),
            // Oversized or stalled bodies are keys responses too: they carry the index headers.
            Err(resp) => return response::with_headers(resp, &headers(&app, index, None)),
        }
    };
    let form = body.as_deref().filter(|_| is_form);
    let params = match Params::parse(query.as_deref(), form, index) {
        Ok(p) => p,
        Err(e) => return error(&app, &e),
    };
    if let Err(e) = params.check_as_etcd(method == Method::GET) {
        return error(&app, &e);
    }
    let result = match method {
        Method::GET | Method::HEAD => get(&app, &key, &params).await,
        Method::PUT => put(&app, &key, &params).await,
        Method::POST => post(&app, &key, &params).await,
        Method::DELETE => delete(&app, &key, &params).await,
        _ => {
            // Plain text as etcd answers it, with the headers every keys response carries.
            let mut r = response::with_headers(
                response::text(405, "Method Not Allowed\n"),
                &headers(&app, index, None),
            );
            r.headers_mut().insert(
                "allow",
                http::HeaderValue::from_static("GET, HEAD, PUT, POST, DELETE"),
            );
            return r;
        }
    };
    match result {
        Ok(r) => r,
        Err(e) => error(&app, &e),
    }
}

fn store_index(app: &App) -> u64 {
    app.store.read().map(|s| s.index()).unwrap_or(0)
}

fn headers(app: &App, etcd_index: u64, read_mode: Option<ReadMode>) -> IndexHeaders {
    let (term, _, applied) = app.handle.indexes();
    IndexHeaders {
        etcd_index,
        raft_index: applied,
        raft_term: term,
        read_mode,
    }
}

fn error(app: &App, e: &StoreError) -> Resp {
    response::with_headers(response::store_error(e), &headers(app, e.index, None))
}

fn driver_error(app: &App, e: DriverError) -> StoreError {
    let index = store_index(app);
    match e {
        DriverError::Raft(RaftError::NotLeader { leader: None }) => StoreError::new(
            ErrorCode::LeaderElect,
            "no leader: election in progress",
            index,
        ),
        DriverError::Raft(RaftError::TransferInProgress) => {
            StoreError::new(ErrorCode::LeaderElect, "leader transfer in progress", index)
        }
        DriverError::Timeout => {
            StoreError::new(ErrorCode::RaftInternal, "request timed out", index)
        }
        other => StoreError::new(ErrorCode::RaftInternal, other.to_string(), index),
    }
}

fn event_response(app: &App, status: u16, ev: Event, read_mode: Option<ReadMode>) -> Resp {
    let hdrs = headers(app, ev.index, read_mode);
    response::with_headers(super::render::event_json(status, ev), &hdrs)
}

async fn get(app: &Arc<App>, key: &str, p: &Params) -> Result<Resp, StoreError> {
    if p.bool("wait")? {
        return watch(app, key, p).await;
    }
    let started = Instant::now();
    let recursive = p.bool("recursive")?;
    let sorted = p.bool("sorted")?;
    let quorum = p.bool("quorum")?;
    let local = match p.get("consistency") {
        None | Some("linearizable") | Some("") => p.bool("stale")?,
        Some("local") => true,
        Some(_) => {
            return Err(StoreError::new(
                ErrorCode::InvalidField,
                "invalid value for consistency",
                store_index(app),
            ))
        }
    };
    let mode = if quorum {
        match app.handle.log_read().await {
            Ok(_) => ReadMode::Quorum,
            Err(e) => return Err(driver_error(app, e)),
        }
    } else if local {
        ReadMode::Local
    } else {
        match app.handle.linearizable_read(false).await {
            Ok(ReadPath::Lease) => ReadMode::Lease,
            Ok(ReadPath::ReadIndex) => ReadMode::ReadIndex,
            Err(e) => return Err(driver_error(app, e)),
        }
    };
    let ev = {
        let store = app.store.read().map_err(|_| poisoned(app))?;
        store.get(key, recursive, sorted, now_ms())?
    };
    stats::read(mode, started.elapsed());
    Ok(event_response(app, 200, ev, Some(mode)))
}

fn poisoned(app: &App) -> StoreError {
    StoreError::new(
        ErrorCode::RaftInternal,
        "store lock poisoned",
        store_index(app),
    )
}

async fn watch(app: &Arc<App>, key: &str, p: &Params) -> Result<Resp, StoreError> {
    let recursive = p.bool("recursive")?;
    let stream = p.bool("stream")?;
    let wait_index = p.index("waitIndex")?;
    let (mut watcher, index) = {
        let store = app.store.read().map_err(|_| poisoned(app))?;
        (
            store.watch(key, recursive, stream, wait_index)?,
            store.index(),
        )
    };
    let hdrs = headers(app, index, None);
    // The body is a channel fed by a task, so the 200 and the index headers go out at once and
    // the event follows when it happens, as etcd (which flushes its headers before waiting).
    // With the headers sent, a watcher closed under us (store replaced by a snapshot, stream too
    // slow) can only end the body, which is also what etcd does.
    let (tx, rx) = mpsc::channel::<Bytes>(if stream { 64 } else { 1 });
    tokio::spawn(async move {
        // Ends when the client goes away (hyper drops the body, closing the channel) even if
        // the key never changes: a watcher waiting only for events would be kept for good.
        // Dropping the watcher unregisters it.
        loop {
            let ev = tokio::select! {
                ev = watcher.recv() => ev,
                _ = tx.closed() => break,
            };
            let Some(ev) = ev else { break };
            let mut line = serde_json::to_vec(&ev).unwrap_or_default();
            line.push(b'\n');
            if tx.send(Bytes::from(line)).await.is_err() || !stream {
                break;
            }
        }
    });
    let resp = hyper::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(crate::body::from_channel(rx))
        .unwrap_or_else(|_| hyper::Response::new(response::full("")));
    Ok(response::with_headers(resp, &hdrs))
}

fn expire_at(ttl: Option<Option<u64>>, now: u64, index: u64) -> Result<Option<u64>, StoreError> {
    match ttl {
        Some(Some(secs)) => secs
            .checked_mul(1000)
            .and_then(|ms| ms.checked_add(now))
            .map(Some)
            .ok_or_else(|| StoreError::new(ErrorCode::TtlNaN, "ttl out of range", index)),
        _ => Ok(None),
    }
}

fn prev_value(p: &Params, index: u64) -> Result<Option<String>, StoreError> {
    match p.get("prevValue") {
        Some("") => Err(StoreError::new(
            ErrorCode::PrevValueRequired,
            "\"prevValue\" cannot be empty",
            index,
        )),
        other => Ok(other.map(str::to_string)),
    }
}

/// `noValueOnSuccess`: when true, etcd answers a successful set/create/update/compareAndSwap
/// with the action alone (a delete keeps its body).
fn no_value_on_success(p: &Params) -> Result<bool, StoreError> {
    p.bool("noValueOnSuccess")
}

fn write_response(app: &App, status: u16, ev: Event, no_value: bool) -> Resp {
    use deimos_store::keyspace::Action;
    let trimmed = no_value
        && matches!(
            ev.action,
            Action::Set | Action::Create | Action::Update | Action::CompareAndSwap
        );
    if !trimmed {
        return event_response(app, status, ev, None);
    }
    response::with_headers(
        response::json(status, &deimos_api::keys::Response::action_only(ev.action)),
        &headers(app, ev.index, None),
    )
}

async fn put(app: &Arc<App>, key: &str, p: &Params) -> Result<Resp, StoreError> {
    let index = store_index(app);
    let refresh = p.bool("refresh")?;
    let ttl = p.ttl()?;
    let no_value = no_value_on_success(p)?;
    // Refresh's own rules (no value, a TTL) were checked with the other fields.
    let dir = p.bool("dir")?;
    // etcd ignores a value sent with `dir=true` (a directory has none), so Deimos does too.
    let value = if dir {
        String::new()
    } else {
        p.get("value").unwrap_or("").to_string()
    };
    let now = now_ms();
    let cmd = Command::Set {
        key: key.to_string(),
        value,
        dir,
        expire_at_ms: expire_at(ttl, now, index)?,
        refresh,
        prev_exist: p.opt_bool("prevExist")?,
        prev_value: prev_value(p, index)?,
        prev_index: p.index("prevIndex")?,
        now_ms: now,
    };
    let ev = propose(app, cmd).await?;
    Ok(write_response(
        app,
        if ev.created { 201 } else { 200 },
        ev,
        no_value,
    ))
}

async fn post(app: &Arc<App>, key: &str, p: &Params) -> Result<Resp, StoreError> {
    let index = store_index(app);
    let now = now_ms();
    let dir = p.bool("dir")?;
    let no_value = no_value_on_success(p)?;
    let cmd = Command::CreateInOrder {
        key: key.to_string(),
        // As for PUT: a directory's value is ignored.
        value: if dir {
            String::new()
        } else {
            p.get("value").unwrap_or("").to_string()
        },
        dir,
        expire_at_ms: expire_at(p.ttl()?, now, index)?,
        now_ms: now,
    };
    let ev = propose(app, cmd).await?;
    Ok(write_response(app, 201, ev, no_value))
}

async fn delete(app: &Arc<App>, key: &str, p: &Params) -> Result<Resp, StoreError> {
    let index = store_index(app);
    // A delete's body is never trimmed by noValueOnSuccess (as etcd).
    let cmd = Command::Delete {
        key: key.to_string(),
        dir: p.bool("dir")?,
        recursive: p.bool("recursive")?,
        prev_value: prev_value(p, index)?,
        prev_index: p.index("prevIndex")?,
        now_ms: now_ms(),
    };
    let ev = propose(app, cmd).await?;
    Ok(event_response(app, 200, ev, None))
}

async fn propose(app: &Arc<App>, cmd: Command) -> Result<Event, StoreError> {
    match app.handle.propose(Proposal::Keys(cmd).encode()).await {
        Ok(Output::Keys(Ok(Applied::Event(ev)))) => Ok(ev),
        Ok(Output::Keys(Err(e))) => Err(e),
        Ok(Output::Keys(Ok(Applied::Expired(_)))) | Ok(Output::Members) | Ok(Output::Auth(_)) => {
            Err(StoreError::new(
                ErrorCode::RaftInternal,
                "unexpected apply result",
                store_index(app),
            ))
        }
        Ok(Output::Invalid(why)) => Err(StoreError::new(
            ErrorCode::RaftInternal,
            why,
            store_index(app),
        )),
        Err(e) => Err(driver_error(app, e)),
    }
}
