//! `deimosctl bench`: a closed-loop load generator.
//!
//! Each of `--clients` tokio tasks owns one HTTP/1.1 keep-alive connection and sends its next
//! request as soon as the previous answer is read, so concurrency on the wire is exactly
//! `--clients`. Latencies of successful requests go into a per-task HDR histogram (microseconds,
//! 3 significant digits), merged at the end: percentiles are exact to 0.1% without keeping every
//! sample. Failed requests are counted, not timed, so a fast error path cannot flatter the figures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::Method;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{BenchOpts, ReadMode, Target, Workload};
use crate::client::CliError;
use crate::http::{form, Conn, Endpoint};
use crate::keys::key_path;

mod report;
pub mod watch;

use report::{latency_ms, new_histogram, process_cpu_seconds, record, throughput};
pub use report::{print, Summary};

pub(super) const FORM: &str = "application/x-www-form-urlencoded";
const DEFAULT_TOTAL: u64 = 10_000;

/// Everything a task needs to build requests; shared read-only.
struct Spec {
    prefix: String,
    keys: u64,
    put_body: Bytes,
    read_query: &'static str,
    /// Probability of a read, as a threshold on a uniform u64.
    read_threshold: u64,
    /// Stop after this many requests were claimed.
    total: Option<u64>,
    timeout: Duration,
}

impl Spec {
    fn key(&self, i: u64) -> String {
        key_path(&format!("{}/k{}", self.prefix, i % self.keys))
    }
}

/// The query string for a read: what "lease", "quorum" and "local" mean on each target.
pub fn read_query(mode: ReadMode, target: Target) -> &'static str {
    match (mode, target) {
        (ReadMode::Lease, _) => "",
        (ReadMode::Quorum, _) => "?quorum=true",
        (ReadMode::Local, Target::Deimos) => "?consistency=local",
        // etcd's plain v2 GET is already served locally.
        (ReadMode::Local, Target::Etcd) => "",
    }
}

/// splitmix64: a tiny, fast, good-enough generator for choosing read vs write.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Converts a read ratio in [0, 1] into a threshold: `rng.next() < threshold` means read.
pub fn ratio_threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else if ratio <= 0.0 {
        0
    } else {
        (ratio * u64::MAX as f64) as u64
    }
}

struct Counters {
    claimed: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
}

struct TaskResult {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

async fn one_request(conn: &mut Conn, spec: &Spec, is_read: bool, i: u64) -> Result<(), String> {
    let fut = async {
        let r = if is_read {
            let path = format!("{}{}", spec.key(i), spec.read_query);
            conn.send(Method::GET, &path, None).await
        } else {
            conn.send(
                Method::PUT,
                &spec.key(i),
                Some((FORM, spec.put_body.clone())),
            )
            .await
        };
        match r {
            Ok(resp) if resp.status.is_success() => Ok(()),
            Ok(resp) => Err(format!(
                "HTTP {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body).trim()
            )),
            Err(e) => Err(e.to_string()),
        }
    };
    tokio::time::timeout(spec.timeout, fut)
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {:?}", spec.timeout)))
}

async fn client_task(
    ep: Endpoint,
    spec: Arc<Spec>,
    counters: Arc<Counters>,
    deadline: Option<Instant>,
    seed: u64,
) -> TaskResult {
    let mut res = TaskResult {
        hist: new_histogram(),
        ok: 0,
        errors: 0,
        first_error: None,
    };
    let mut rng = Rng(seed);
    let mut conn: Option<Conn> = None;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let i = counters.claimed.fetch_add(1, Ordering::Relaxed);
        if spec.total.is_some_and(|t| i >= t) {
            break;
        }
        if conn.as_ref().is_some_and(|c| !c.is_usable()) {
            conn = None;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::connect(&ep, spec.timeout).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    res.errors += 1;
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    counters.done.fetch_add(1, Ordering::Relaxed);
                    res.first_error.get_or_insert_with(|| e.to_string());
                    // Do not spin on a dead server.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let is_read = rng.next() < spec.read_threshold;
        let start = Instant::now();
        match one_request(c, &spec, is_read, i).await {
            Ok(()) => {
                record(&mut res.hist, start.elapsed());
                res.ok += 1;
            }
            Err(e) => {
                res.errors += 1;
                counters.errors.fetch_add(1, Ordering::Relaxed);
                res.first_error.get_or_insert(e);
                // The connection state is unknown after a failure: start afresh.
                conn = None;
            }
        }
        counters.done.fetch_add(1, Ordering::Relaxed);
    }
    res
}

/// Writes every key once so reads find values (and read the same value size as writes).
async fn prefill(ep: &Endpoint, spec: &Arc<Spec>, clients: u32) -> Result<(), CliError> {
    let workers = u64::from(clients.clamp(1, 16)).min(spec.keys);
    let mut handles = Vec::new();
    for w in 0..workers {
        let ep = ep.clone();
        let spec = spec.clone();
        handles.push(tokio::spawn(async move {
            let mut conn = Conn::connect(&ep, spec.timeout)
                .await
                .map_err(|e| CliError::Unreachable(e.to_string()))?;
            let mut k = w;
            while k < spec.keys {
                one_request(&mut conn, &spec, false, k)
                    .await
                    .map_err(|e| CliError::Protocol(format!("prefill of key {k} failed: {e}")))?;
                k += workers;
            }
            Ok::<(), CliError>(())
        }));
    }
    for h in handles {
        h.await
            .map_err(|e| CliError::Protocol(format!("prefill task failed: {e}")))??;
    }
    Ok(())
}

fn progress_bar(opts: &BenchOpts, total: Option<u64>) -> ProgressBar {
    if opts.no_progress {
        return ProgressBar::hidden();
    }
    let (len, template) = match (total, opts.duration) {
        (Some(t), _) => (
            t,
            "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} {msg}",
        ),
        (None, Some(d)) => (
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            "{spinner} {elapsed_precise} [{wide_bar}] {msg}",
        ),
        (None, None) => (0, "{spinner} {elapsed_precise} {msg}"),
    };
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Runs a workload and returns its summary (printing is the caller's).
pub async fn run(
    workload: Workload,
    endpoints: &[Endpoint],
    timeout: Duration,
) -> Result<Summary, CliError> {
    let (name, mode, read_ratio, opts) = match workload {
        Workload::Put(opts) => ("put", None, 0.0, opts),
        Workload::Get { mode, opts } => ("get", Some(mode), 1.0, opts),
        Workload::Mixed {
            read_ratio,
            mode,
            opts,
        } => ("mixed", Some(mode), read_ratio, opts),
        Workload::Watch(_) => {
            return Err(CliError::Usage(
                "bench watch has its own runner (bench::watch::run)".into(),
            ))
        }
    };
    // One endpoint unless --all-endpoints: the first that accepts a connection, in the same
    // spirit as the key commands' failover.
    let mut eps: Vec<Endpoint> = Vec::new();
    let mut failures = Vec::new();
    for ep in endpoints {
        match Conn::connect(ep, timeout).await {
            Ok(_) => {
                eps.push(ep.clone());
                if !opts.all_endpoints {
                    break;
                }
            }
            // With --all-endpoints every endpoint must be up, or the load would not be spread.
            Err(e) if opts.all_endpoints => return Err(CliError::Unreachable(e.to_string())),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if eps.is_empty() {
        return Err(CliError::Unreachable(failures.join("; ")));
    }
    let total = match (opts.total, opts.duration) {
        (Some(t), _) => Some(t),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_TOTAL),
    };
    let value = "x".repeat(usize::try_from(opts.value_size).unwrap_or(0));
    let spec = Arc::new(Spec {
        prefix: opts.prefix.trim_end_matches('/').to_string(),
        keys: opts.keys,
        put_body: Bytes::from(form(&[("value", value)])),
        read_query: read_query(mode.unwrap_or(ReadMode::Lease), opts.target),
        read_threshold: ratio_threshold(read_ratio),
        total,
        timeout,
    });

    if read_ratio > 0.0 && !opts.no_prefill {
        if !opts.no_progress {
            eprintln!("prefilling {} keys under {}", spec.keys, spec.prefix);
        }
        prefill(&eps[0], &spec, opts.clients).await?;
    }

    let deadline = opts.duration.map(|d| Instant::now() + d);
    let counters = Arc::new(Counters {
        claimed: AtomicU64::new(0),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let pb = progress_bar(&opts, total);
    let cpu_before = process_cpu_seconds();
    let start = Instant::now();
    let seed = u64::from(start.elapsed().subsec_nanos())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let handles: Vec<_> = (0..opts.clients)
        .map(|c| {
            let ep = eps[c as usize % eps.len()].clone();
            tokio::spawn(client_task(
                ep,
                spec.clone(),
                counters.clone(),
                deadline,
                seed ^ (u64::from(c) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ))
        })
        .collect();

    let ticker = {
        let pb = pb.clone();
        let counters = counters.clone();
        let by_time = total.is_none();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let done = counters.done.load(Ordering::Relaxed);
                let errs = counters.errors.load(Ordering::Relaxed);
                let el = start.elapsed();
                if by_time {
                    pb.set_position(u64::try_from(el.as_millis()).unwrap_or(u64::MAX));
                } else {
                    pb.set_position(done);
                }
                pb.set_message(format!(
                    "{done} req, {errs} err, {:.0} req/s",
                    throughput(done, el)
                ));
            }
        })
    };

    let mut hist = new_histogram();
    let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
    for h in handles {
        let r = h
            .await
            .map_err(|e| CliError::Protocol(format!("client task failed: {e}")))?;
        // Same bounds on both sides, so adding cannot fail; ignore rather than panic regardless.
        let _ = hist.add(&r.hist);
        ok += r.ok;
        errors += r.errors;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    let elapsed = start.elapsed();
    let client_cpu_s = match (cpu_before, process_cpu_seconds()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    ticker.abort();
    pb.finish_and_clear();

    Ok(Summary {
        workload: name.to_string(),
        mode,
        read_ratio: (name == "mixed").then_some(read_ratio),
        target: opts.target,
        endpoints: eps.iter().map(|e| e.url.clone()).collect(),
        clients: opts.clients,
        keys: opts.keys,
        value_size: opts.value_size,
        requests: ok + errors,
        ok,
        errors,
        first_error,
        duration_s: elapsed.as_secs_f64(),
        throughput_ops: throughput(ok, elapsed),
        latency_ms: latency_ms(&hist),
        client_cpu_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn read_ratio_threshold() {
        assert_eq!(ratio_threshold(0.0), 0);
        assert_eq!(ratio_threshold(1.0), u64::MAX);
        let th = ratio_threshold(0.9);
        let mut rng = Rng(42);
        let reads = (0..100_000).filter(|_| rng.next() < th).count();
        assert!((89_000..=91_000).contains(&reads), "reads {reads}");
    }

    #[test]
    fn read_modes_per_target() {
        assert_eq!(read_query(ReadMode::Lease, Target::Deimos), "");
        assert_eq!(read_query(ReadMode::Quorum, Target::Etcd), "?quorum=true");
        assert_eq!(
            read_query(ReadMode::Local, Target::Deimos),
            "?consistency=local"
        );
        assert_eq!(read_query(ReadMode::Local, Target::Etcd), "");
    }
}
