//! `deimosctl bench watch`: how fast one write reaches many watchers, and what they cost.
//!
//! `--watchers` tasks each open their own connection and wait on one key or (recursively) on a
//! directory, by long-poll (`?wait=true`, the next event asked for with `waitIndex`, so none is
//! missed) or by stream (`&stream=true`). Once every watcher is registered (the server has sent
//! the response head, which both Deimos and etcd do before waiting), the server's RSS is read
//! (`--server-pid`) and one writer sets values at `--rate` for `--duration`. Each value carries
//! the wall-clock time it was sent, so the notify latency of an event is its arrival time minus
//! that: the writer and the watchers share this machine's clock. A run ends once every
//! expected event arrived or a grace period after the last write passed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use hyper::Method;
use serde::Serialize;
use tokio::sync::{watch, Semaphore};

use super::report::{latency_ms, new_histogram, process_cpu_seconds, record, LatencyMs};
use super::FORM;
use crate::cli::{Target, WatchMode, WatchOpts, WatchScope};
use crate::client::CliError;
use crate::http::{form, Conn, Endpoint};
use crate::keys::key_path;
use crate::output::{Output, Table};

/// Connections opened at once while the watchers register (a listener's backlog is finite).
const CONNECT_AT_ONCE: usize = 256;
/// How long all watchers may take to register.
const REGISTER_WITHIN: Duration = Duration::from_secs(120);
/// After the last write, how long stragglers may take to arrive.
const GRACE: Duration = Duration::from_secs(5);
/// Longest event line taken from a server; a longer one (no newline in sight) is an error,
/// not a buffer that grows with what the server sends.
const MAX_LINE: usize = 1 << 20;
/// Keys the writer cycles through under a prefix watch.
const PREFIX_KEYS: u64 = 64;

/// The result of one watch run; `-o json` prints exactly this.
#[derive(Clone, Debug, Serialize)]
pub struct WatchSummary {
    pub workload: &'static str,
    pub target: Target,
    pub endpoint: String,
    pub mode: WatchMode,
    pub scope: WatchScope,
    pub watchers: u32,
    /// Watchers whose first request the server took (the rest failed to connect or register).
    pub registered: u64,
    pub setup_s: f64,
    pub rate: f64,
    pub writes: u64,
    pub write_errors: u64,
    /// `writes` x `registered`: what a server that loses nothing delivers.
    pub events_expected: u64,
    pub events: u64,
    /// Watch requests that failed (status other than 200, a broken stream, a bad body).
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    pub duration_s: f64,
    pub notify_latency_ms: LatencyMs,
    pub server_rss_before_kb: Option<u64>,
    pub server_rss_watching_kb: Option<u64>,
    /// (RSS with every watcher waiting - RSS before) / registered watchers.
    pub server_rss_per_watcher_bytes: Option<f64>,
    pub client_cpu_s: Option<f64>,
}

/// What every watcher shares.
struct Shared {
    ep: Endpoint,
    /// Path and query of the first watch request, without `waitIndex`.
    watch_path: String,
    mode: WatchMode,
    timeout: Duration,
    registered: AtomicU64,
    events: AtomicU64,
    errors: AtomicU64,
    connects: Semaphore,
}

struct WatcherResult {
    hist: Histogram<u64>,
    first_error: Option<String>,
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A written value: `t<ns since the epoch>` padded to a constant length.
fn stamped_value() -> String {
    format!("t{:020}", now_ns())
}

/// One event line as both servers send it: the notify latency from the stamp in its value, and
/// its modified index. `None` for a body that is not such an event.
fn parse_event(line: &[u8]) -> Option<(Duration, u64)> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let node = v.get("node")?;
    let index = node.get("modifiedIndex")?.as_u64()?;
    let sent: u128 = node
        .get("value")?
        .as_str()?
        .strip_prefix('t')?
        .parse()
        .ok()?;
    let lag = now_ns().saturating_sub(sent);
    Some((
        Duration::from_nanos(u64::try_from(lag).unwrap_or(u64::MAX)),
        index,
    ))
}

/// Ends at `stop`. Long-poll: one request per event, the next from the event's index + 1.
/// Stream: one request, events split on newlines.
async fn watcher(s: Arc<Shared>, mut stop: watch::Receiver<bool>) -> WatcherResult {
    let mut res = WatcherResult {
        hist: new_histogram(),
        first_error: None,
    };
    let fail = |res: &mut WatcherResult, e: String| {
        s.errors.fetch_add(1, Ordering::Relaxed);
        res.first_error.get_or_insert(e);
    };
    let conn = {
        let _permit = s.connects.acquire().await;
        Conn::connect(&s.ep, s.timeout).await
    };
    let mut conn = match conn {
        Ok(c) => c,
        Err(e) => {
            fail(&mut res, e.to_string());
            return res;
        }
    };
    let mut next_index: Option<u64> = None;
    let mut registered = false;
    loop {
        let path = match next_index {
            Some(i) => format!("{}&waitIndex={i}", s.watch_path),
            None => s.watch_path.clone(),
        };
        let opened = tokio::select! {
            r = conn.open(Method::GET, &path, None) => r,
            _ = stop.changed() => return res,
        };
        let resp = match opened {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                // etcd answers 401 (EventIndexCleared) when waitIndex fell out of its history.
                fail(&mut res, format!("watch answered HTTP {}", r.status()));
                return res;
            }
            Err(e) => {
                fail(&mut res, e.to_string());
                return res;
            }
        };
        if !registered {
            registered = true;
            s.registered.fetch_add(1, Ordering::Relaxed);
        }
        let mut body = resp.into_body();
        let mut buf = BytesMut::new();
        loop {
            let frame = tokio::select! {
                f = body.frame() => f,
                _ = stop.changed() => return res,
            };
            match frame {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    fail(&mut res, format!("reading a watch: {e}"));
                    return res;
                }
                None => break,
            }
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Bytes = buf.split_to(nl + 1).freeze();
                take_line(&s, &mut res, &line, &mut next_index);
            }
            if buf.len() > MAX_LINE {
                fail(&mut res, format!("an event line over {MAX_LINE} bytes"));
                return res;
            }
        }
        // A long-poll body holds one event, with or without a trailing newline.
        if !buf.is_empty() {
            let line = buf.split().freeze();
            take_line(&s, &mut res, &line, &mut next_index);
        }
        if s.mode == WatchMode::Stream {
            fail(&mut res, "the server ended a watch stream".into());
            return res;
        }
    }
}

fn take_line(s: &Shared, res: &mut WatcherResult, line: &[u8], next: &mut Option<u64>) {
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    match parse_event(line) {
        Some((lag, index)) => {
            record(&mut res.hist, lag);
            s.events.fetch_add(1, Ordering::Relaxed);
            *next = Some(index + 1);
        }
        None => {
            s.errors.fetch_add(1, Ordering::Relaxed);
            res.first_error
                .get_or_insert_with(|| format!("not an event: {}", String::from_utf8_lossy(line)));
        }
    }
}

/// Resident set size of `pid` in KiB, from `/proc/<pid>/status`.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_rss_kb(&status)
}

fn parse_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub async fn run(
    o: WatchOpts,
    endpoints: &[Endpoint],
    timeout: Duration,
) -> Result<WatchSummary, CliError> {
    let ep = endpoints
        .first()
        .cloned()
        .ok_or_else(|| CliError::Usage("no endpoint".into()))?;
    let prefix = o.prefix.trim_end_matches('/').to_string();
    let watch_path = match o.scope {
        WatchScope::Key => format!("{}?wait=true", key_path(&format!("{prefix}/key"))),
        WatchScope::Prefix => format!("{}?wait=true&recursive=true", key_path(&prefix)),
    };
    let watch_path = match o.mode {
        WatchMode::LongPoll => watch_path,
        WatchMode::Stream => format!("{watch_path}&stream=true"),
    };
    // The directory (and the key) must exist before a recursive watch on it can wait.
    let mut writer = Conn::connect(&ep, timeout)
        .await
        .map_err(|e| CliError::Unreachable(e.to_string()))?;
    let put = |key: String| {
        let body = Bytes::from(form(&[("value", stamped_value())]));
        (key_path(&key), body)
    };
    let (first_key, body) = put(format!("{prefix}/key"));
    send_put(&mut writer, &first_key, body).await?;

    let shared = Arc::new(Shared {
        ep,
        watch_path,
        mode: o.mode,
        timeout,
        registered: AtomicU64::new(0),
        events: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        connects: Semaphore::new(CONNECT_AT_ONCE),
    });
    let rss_before = o.server_pid.and_then(rss_kb);
    let cpu_before = process_cpu_seconds();
    let (stop_tx, stop_rx) = watch::channel(false);
    let setup = Instant::now();
    let handles: Vec<_> = (0..o.watchers)
        .map(|_| tokio::spawn(watcher(shared.clone(), stop_rx.clone())))
        .collect();
    // Every watcher registered, or failed trying.
    let settled = |s: &Shared| {
        s.registered.load(Ordering::Relaxed) + s.errors.load(Ordering::Relaxed)
            >= u64::from(o.watchers)
    };
    while !settled(&shared) && setup.elapsed() < REGISTER_WITHIN {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if !o.no_progress && setup.elapsed().as_millis() % 1000 < 20 {
            eprintln!(
                "registering watchers: {}/{}",
                shared.registered.load(Ordering::Relaxed),
                o.watchers
            );
        }
    }
    let setup_s = setup.elapsed().as_secs_f64();
    let registered = shared.registered.load(Ordering::Relaxed);
    // Let the last registrations' allocations settle before reading memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_watching = o.server_pid.and_then(rss_kb);

    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / o.rate);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut writes, mut write_errors, mut i) = (0u64, 0u64, 0u64);
    while start.elapsed() < o.duration {
        tick.tick().await;
        let key = match o.scope {
            WatchScope::Key => format!("{prefix}/key"),
            WatchScope::Prefix => format!("{prefix}/k{}", i % PREFIX_KEYS),
        };
        i += 1;
        let (path, body) = put(key);
        match send_put(&mut writer, &path, body).await {
            Ok(()) => writes += 1,
            Err(_) => {
                write_errors += 1;
                if let Ok(c) = Conn::connect(&shared.ep, timeout).await {
                    writer = c;
                }
            }
        }
        if !o.no_progress && i % (o.rate.ceil() as u64).max(1) == 0 {
            eprintln!(
                "{writes} writes, {} events",
                shared.events.load(Ordering::Relaxed)
            );
        }
    }
    let expected = writes * registered;
    let last_write = Instant::now();
    while shared.events.load(Ordering::Relaxed) < expected && last_write.elapsed() < GRACE {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let duration_s = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let mut hist = new_histogram();
    let mut first_error = None;
    for h in handles {
        if let Ok(r) = h.await {
            let _ = hist.add(&r.hist);
            if first_error.is_none() {
                first_error = r.first_error;
            }
        }
    }
    let client_cpu_s = match (cpu_before, process_cpu_seconds()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let per_watcher = match (rss_before, rss_watching) {
        (Some(b), Some(w)) if registered > 0 => {
            Some((w as f64 - b as f64) * 1024.0 / registered as f64)
        }
        _ => None,
    };
    Ok(WatchSummary {
        workload: "watch",
        target: o.target,
        endpoint: shared.ep.url.clone(),
        mode: o.mode,
        scope: o.scope,
        watchers: o.watchers,
        registered,
        setup_s,
        rate: o.rate,
        writes,
        write_errors,
        events_expected: expected,
        events: shared.events.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        first_error,
        duration_s,
        notify_latency_ms: latency_ms(&hist),
        server_rss_before_kb: rss_before,
        server_rss_watching_kb: rss_watching,
        server_rss_per_watcher_bytes: per_watcher,
        client_cpu_s,
    })
}

async fn send_put(conn: &mut Conn, path: &str, body: Bytes) -> Result<(), CliError> {
    match conn.send(Method::PUT, path, Some((FORM, body))).await {
        Ok(r) if r.status.is_success() => Ok(()),
        Ok(r) => Err(CliError::Protocol(format!(
            "PUT {path}: HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body).trim()
        ))),
        Err(e) => Err(CliError::Unreachable(e.to_string())),
    }
}

/// Human-readable result table.
pub fn render(s: &WatchSummary) -> String {
    let mut t = Table::new(&[
        "MODE",
        "SCOPE",
        "WATCHERS",
        "WRITES",
        "EVENTS",
        "EXPECTED",
        "ERRORS",
        "P50 MS",
        "P99 MS",
        "MAX MS",
        "RSS/WATCHER",
    ]);
    let l = &s.notify_latency_ms;
    t.row(vec![
        match s.mode {
            WatchMode::LongPoll => "long-poll".into(),
            WatchMode::Stream => "stream".into(),
        },
        match s.scope {
            WatchScope::Key => "key".into(),
            WatchScope::Prefix => "prefix".into(),
        },
        format!("{}/{}", s.registered, s.watchers),
        s.writes.to_string(),
        s.events.to_string(),
        s.events_expected.to_string(),
        s.errors.to_string(),
        format!("{:.3}", l.p50),
        format!("{:.3}", l.p99),
        format!("{:.3}", l.max),
        s.server_rss_per_watcher_bytes
            .map(|b| format!("{:.0} B", b))
            .unwrap_or_else(|| "-".into()),
    ]);
    let mut out = t.render();
    if let Some(e) = &s.first_error {
        out.push_str(&format!("first error: {e}\n"));
    }
    out
}

pub fn print(s: &WatchSummary, out: Output) {
    super::report::print_as(s, out, render);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_gives_its_lag_and_index() {
        let sent = now_ns() - 2_000_000;
        let line = format!(
            r#"{{"action":"set","node":{{"key":"/w/key","value":"t{sent:020}","modifiedIndex":42,"createdIndex":7}}}}"#
        );
        let (lag, index) = parse_event(line.as_bytes()).expect("an event");
        assert_eq!(index, 42);
        assert!(
            lag >= Duration::from_millis(2) && lag < Duration::from_secs(5),
            "{lag:?}"
        );
        assert!(
            parse_event(br#"{"action":"set","node":{"value":"x","modifiedIndex":1}}"#).is_none()
        );
        assert!(parse_event(b"not json").is_none());
        assert_eq!(stamped_value().len(), 21);
    }

    #[test]
    fn rss_from_proc_status() {
        let status = "Name:\tdeimos\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_rss_kb(status), Some(12345));
        assert_eq!(parse_rss_kb("Name: x\n"), None);
        if cfg!(target_os = "linux") {
            assert!(rss_kb(std::process::id()).is_some_and(|kb| kb > 0));
        }
    }
}
