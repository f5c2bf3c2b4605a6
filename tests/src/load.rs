//! Continuous client load for tests that change a running cluster: client threads write and
//! read a few keys through whichever member currently leads — so plain GETs are lease reads
//! whenever the lease is valid — record every operation in a [`History`] for the
//! linearizability checker, and log every write attempt so that a test can measure how long
//! writes were failing.
//!
//! The members to talk to can change while the load runs ([`Load::set_endpoints`]): a test
//! takes a node out before it removes or stops it, and adds a new member once it is started.
//! Clients find the leader by asking `/raft/status`, again after any failure and every
//! [`REDISCOVER`], and fall back to any member (which forwards) while no leader is known.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use deimos_lincheck::{KvInput, KvOutput};

use crate::history::{History, Kind};
use crate::http::{encode_form, Http};
use crate::jepsen::{meta, read_value, send, Outcome};
use crate::nemesis::Rng;

/// How often a client asks again who leads, even when nothing failed: a leader that lost
/// leadership quietly still answers (it forwards), only no longer from its lease.
pub const REDISCOVER: Duration = Duration::from_millis(300);

/// One write as its client saw it (times in the history's microseconds).
#[derive(Debug, Clone)]
pub struct WriteAttempt {
    pub invoke: u64,
    pub complete: u64,
    pub ok: bool,
    /// Node index the write was sent to.
    pub node: usize,
    /// Why it failed (status and body, or the transport error).
    pub failure: Option<String>,
}

/// A stretch of time with no acknowledged write.
#[derive(Debug, Clone)]
pub struct Gap {
    /// Completion of the last acknowledged write before it (or the start of the load).
    pub from_us: u64,
    /// Completion of the first acknowledged write after it (or the end of the load).
    pub to_us: u64,
    /// Write attempts that failed inside it.
    pub failed: usize,
    /// The first of those failures, for the report.
    pub first_failure: Option<String>,
}

impl Gap {
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.to_us.saturating_sub(self.from_us))
    }
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} (t={:.2}s..{:.2}s, {} failed writes{})",
            self.duration(),
            self.from_us as f64 / 1e6,
            self.to_us as f64 / 1e6,
            self.failed,
            self.first_failure
                .as_ref()
                .map_or_else(String::new, |w| format!(", first: {w}"))
        )
    }
}

#[derive(Clone)]
struct Shared {
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    /// `(node index, client URL)` of the members clients may use.
    endpoints: Arc<RwLock<Vec<(usize, String)>>>,
    writes: Arc<Mutex<Vec<WriteAttempt>>>,
    keys: Vec<String>,
    timeout: Duration,
}

/// Client threads running against a cluster; see the module doc.
pub struct Load {
    shared: Shared,
    threads: Vec<JoinHandle<()>>,
    started_us: u64,
}

/// What the load saw, once stopped.
pub struct LoadReport {
    pub history: Arc<History>,
    pub writes: Vec<WriteAttempt>,
    pub started_us: u64,
    /// When the clients were told to stop: after it they start no new request, so the time
    /// from the last acknowledgement to the end of the run is measured up to here.
    pub stopped_us: u64,
}

impl Load {
    /// Start `clients` threads on `keys` keys under `/load/`, talking to `endpoints`
    /// (`(node index, client URL)`); each request waits at most `timeout`.
    pub fn start(
        endpoints: Vec<(usize, String)>,
        clients: usize,
        keys: usize,
        timeout: Duration,
        seed: u64,
    ) -> Load {
        let history = Arc::new(History::new());
        let shared = Shared {
            history: history.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            endpoints: Arc::new(RwLock::new(endpoints)),
            writes: Arc::new(Mutex::new(Vec::new())),
            keys: (0..keys).map(|k| format!("/load/k{k}")).collect(),
            timeout,
        };
        let threads = (0..clients as u64)
            .map(|c| {
                let shared = shared.clone();
                thread::Builder::new()
                    .name(format!("load-{c}"))
                    .spawn(move || client(shared, c, seed))
                    .expect("load thread")
            })
            .collect();
        Load {
            started_us: history.now(),
            shared,
            threads,
        }
    }

    /// Replace the members clients may talk to.
    pub fn set_endpoints(&self, endpoints: Vec<(usize, String)>) {
        *self
            .shared
            .endpoints
            .write()
            .unwrap_or_else(|p| p.into_inner()) = endpoints;
    }

    pub fn history(&self) -> &Arc<History> {
        &self.shared.history
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> usize {
        self.lock_writes().iter().filter(|w| w.ok).count()
    }

    fn lock_writes(&self) -> std::sync::MutexGuard<'_, Vec<WriteAttempt>> {
        self.shared.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stop the clients and wait for their last requests.
    pub fn stop(self) -> LoadReport {
        let stop_requested_us = self.shared.history.now();
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let writes = self
            .shared
            .writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        LoadReport {
            stopped_us: stop_requested_us,
            history: self.shared.history,
            writes,
            started_us: self.started_us,
        }
    }
}

impl LoadReport {
    pub fn acked(&self) -> usize {
        self.writes.iter().filter(|w| w.ok).count()
    }

    pub fn failed(&self) -> usize {
        self.writes.iter().filter(|w| !w.ok).count()
    }

    /// Every stretch between consecutive acknowledged writes (and before the first and after
    /// the last), with the failed attempts that completed inside it.
    pub fn gaps(&self) -> Vec<Gap> {
        let mut acks: Vec<u64> = self
            .writes
            .iter()
            .filter(|w| w.ok)
            .map(|w| w.complete)
            .collect();
        acks.sort_unstable();
        let mut bounds = vec![self.started_us];
        bounds.extend(acks);
        bounds.push(self.stopped_us.max(*bounds.last().unwrap_or(&0)));
        let mut failures: Vec<&WriteAttempt> = self.writes.iter().filter(|w| !w.ok).collect();
        failures.sort_by_key(|w| w.complete);
        let mut next = 0;
        let last = bounds.len() - 2;
        bounds
            .windows(2)
            .enumerate()
            .map(|(k, b)| {
                let mut gap = Gap {
                    from_us: b[0],
                    to_us: b[1],
                    failed: 0,
                    first_failure: None,
                };
                // A write still in flight when the clients stopped fails in the last stretch.
                let end = if k == last { u64::MAX } else { b[1] };
                while next < failures.len() && failures[next].complete <= end {
                    if failures[next].complete >= b[0] {
                        gap.failed += 1;
                        if gap.first_failure.is_none() {
                            let w = failures[next];
                            gap.first_failure = Some(format!(
                                "n{} {}",
                                w.node + 1,
                                w.failure.as_deref().unwrap_or("?")
                            ));
                        }
                    }
                    next += 1;
                }
                gap
            })
            .collect()
    }

    /// The longest window in which writes were failing: the longest stretch without an
    /// acknowledged write in which at least one write failed. `None` if no write failed.
    pub fn longest_failing_window(&self) -> Option<Gap> {
        self.gaps()
            .into_iter()
            .filter(|g| g.failed > 0)
            .max_by_key(Gap::duration)
    }

    /// The longest stretch without an acknowledged write, failing or merely slow.
    pub fn longest_stall(&self) -> Option<Gap> {
        self.gaps().into_iter().max_by_key(Gap::duration)
    }

    /// The failed write that took longest to fail (a write can hang while others succeed,
    /// e.g. one forwarded to a leader that then stepped down).
    pub fn slowest_failed_write(&self) -> Option<&WriteAttempt> {
        self.writes
            .iter()
            .filter(|w| !w.ok)
            .max_by_key(|w| w.complete - w.invoke)
    }

    /// `writes acked=.. failed=.., reads lease=.. read-index=.., longest failing window ..`.
    pub fn summary(&self) -> String {
        let c = self.history.counts();
        format!(
            "writes acked={} failed={}{}; reads {} (lease={} read-index={}); indeterminate={}; longest failing window {}; longest stall {}",
            self.acked(),
            self.failed(),
            self.slowest_failed_write().map_or_else(String::new, |w| format!(
                " (slowest failed after {:?}: t={:.2}s..{:.2}s n{} {})",
                Duration::from_micros(w.complete - w.invoke),
                w.invoke as f64 / 1e6,
                w.complete as f64 / 1e6,
                w.node + 1,
                w.failure.as_deref().unwrap_or("?")
            )),
            c.reads,
            c.lease,
            c.read_index,
            c.indeterminate,
            self.longest_failing_window()
                .map_or_else(|| "none".to_string(), |g| g.to_string()),
            self.longest_stall()
                .map_or_else(|| "none".to_string(), |g| g.to_string()),
        )
    }
}

/// The member that says it leads in the highest term, or any member while none does (members
/// forward writes and reads to the leader).
fn discover(http: &Http, shared: &Shared, rng: &mut Rng) -> Option<(usize, String)> {
    let endpoints = shared
        .endpoints
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if endpoints.is_empty() {
        return None;
    }
    let leader = endpoints
        .iter()
        .filter_map(|(i, url)| {
            let r = http
                .request(
                    "GET",
                    &format!("{url}/raft/status"),
                    None,
                    Duration::from_millis(300),
                )
                .ok()?;
            let v = r.json();
            (v["role"] == "leader").then(|| (v["term"].as_u64().unwrap_or(0), *i, url.clone()))
        })
        .max_by_key(|(term, _, _)| *term);
    match leader {
        Some((_, i, url)) => Some((i, url)),
        None => Some(endpoints[rng.below(endpoints.len())].clone()),
    }
}

/// One client: writes unique values and reads, alternately at random, through the leader.
fn client(shared: Shared, client: u64, seed: u64) {
    let http = Http::new();
    let mut rng = Rng::new(seed ^ (client + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut target: Option<(usize, String)> = None;
    let mut found_at = Instant::now();
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        if target.is_none() || found_at.elapsed() > REDISCOVER {
            target = discover(&http, &shared, &mut rng);
            found_at = Instant::now();
        }
        let Some((node, url)) = target.clone() else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let key = &shared.keys[rng.below(shared.keys.len())];
        let ok = if rng.chance(0.5) {
            seq += 1;
            write(
                &shared,
                &http,
                client,
                node,
                &url,
                key,
                &format!("c{client}-{seq}"),
            )
        } else {
            read(&shared, &http, client, node, &url, key)
        };
        if !ok {
            target = None;
        }
        thread::sleep(Duration::from_millis(2 + rng.below(6) as u64));
    }
}

/// A plain write, recorded in the history and the write log; true if acknowledged.
fn write(
    shared: &Shared,
    http: &Http,
    client: u64,
    node: usize,
    url: &str,
    key: &str,
    value: &str,
) -> bool {
    let form = encode_form(&[("value", value)]);
    let input = KvInput::Write {
        key: key.into(),
        value: value.into(),
    };
    let h = &shared.history;
    let invoke = h.now();
    let outcome = send(
        http,
        "PUT",
        &format!("{url}/v2/keys{key}"),
        Some(&form),
        shared.timeout,
    );
    let failure = match outcome {
        Outcome::Reply(r) if r.status == 200 || r.status == 201 => {
            h.completed(
                client,
                invoke,
                input,
                KvOutput::Write,
                meta(Kind::Put, node, Some(&r)),
            );
            None
        }
        // Refused after it was sent: it may still commit (a timed-out proposal), so it stays
        // in the history as indeterminate.
        Outcome::Reply(r) => {
            h.indeterminate(client, invoke, input, meta(Kind::Put, node, Some(&r)));
            Some(format!("{} {}", r.status, r.body.trim()))
        }
        Outcome::Unknown => {
            h.indeterminate(client, invoke, input, meta(Kind::Put, node, None));
            Some("no answer".to_string())
        }
        // Never left: it cannot have taken effect, so it is not history, but writes failed.
        Outcome::NeverLeft => Some("connection refused".to_string()),
    };
    let ok = failure.is_none();
    shared
        .writes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(WriteAttempt {
            invoke,
            complete: h.now(),
            ok,
            node,
            failure,
        });
    ok
}

/// A plain (linearizable) read, recorded when it got an answer; true if it did.
fn read(shared: &Shared, http: &Http, client: u64, node: usize, url: &str, key: &str) -> bool {
    let h = &shared.history;
    let invoke = h.now();
    let Outcome::Reply(r) = send(
        http,
        "GET",
        &format!("{url}/v2/keys{key}"),
        None,
        shared.timeout,
    ) else {
        return false;
    };
    let Some(v) = read_value(&r) else {
        return false;
    };
    h.completed(
        client,
        invoke,
        KvInput::Read { key: key.into() },
        KvOutput::Read(v),
        meta(Kind::Get, node, Some(&r)),
    );
    true
}
