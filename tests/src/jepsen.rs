//! Jepsen-style runs against real `deimos` processes: concurrent clients record a history of
//! reads, writes and compare-and-swaps on a few keys while the [`Nemesis`] injects faults; at the
//! end the cluster is healed and the history is checked by `deimos_lincheck`.
//!
//! Why real processes: the simulator proves the algorithm, but the lease is only as good as the
//! code around it — the read path's choice between lease and ReadIndex, the clock the server
//! actually reads, persistence across `kill -9`, the HTTP forwarding. Those are only exercised
//! here.
//!
//! Every node's peer port sits behind the link-cutting proxy of [`crate::proxy`]; client
//! traffic goes straight to the nodes, so clients can keep talking to an isolated old leader —
//! the situation in which a broken lease serves stale reads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use deimos_lincheck::{KvInput, KvOutput};

use crate::harness::{free_port, Cluster, ClusterOptions};
use crate::history::{History, Kind, Meta, Verdict};
use crate::http::{encode_form, Http, Reply};
use crate::nemesis::{FaultKind, Nemesis, Rng, RECOVERY};
use crate::proxy::{node_ip, Net};

/// Search steps the checker may spend on one key before it gives up with "unknown".
pub const CHECK_BUDGET: u64 = 50_000_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct JepsenConfig {
    pub nodes: usize,
    pub faults: Vec<FaultKind>,
    /// Total time with clients running (faults stop a little before the end).
    pub duration: Duration,
    pub seed: u64,
    pub clients: usize,
    pub keys: usize,
    /// Flags for every node (e.g. the broken-lease settings of the negative tests).
    pub extra_args: Vec<String>,
    /// Plain GETs ask for `?consistency=local` (stale reads allowed): only for showing that the
    /// checker catches stale reads.
    pub local_reads: bool,
    /// Client request timeout; longer than an election so most writes during a fault get a
    /// definite answer, short enough that clients keep the history dense.
    pub client_timeout: Duration,
    /// Fault hold time range.
    pub hold: (Duration, Duration),
    /// Quiet time between faults (range).
    pub quiet: (Duration, Duration),
}

impl Default for JepsenConfig {
    fn default() -> Self {
        JepsenConfig {
            nodes: 3,
            faults: vec![FaultKind::PartitionLeader],
            duration: Duration::from_secs(30),
            seed: 1,
            clients: 6,
            keys: 4,
            extra_args: Vec::new(),
            local_reads: false,
            client_timeout: Duration::from_millis(2500),
            hold: (Duration::from_secs(2), Duration::from_secs(5)),
            quiet: (Duration::from_millis(800), Duration::from_millis(2500)),
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Report {
    pub verdict: Verdict,
    /// The one-line summary (`jepsen: OK ops=...` or `jepsen: VIOLATION key=...`).
    pub line: String,
    /// The verdict line, the offending ops when there are any, and the nemesis log.
    pub details: String,
}

/// A cluster whose peer links run through a proxy the test controls.
pub struct ProxiedCluster {
    pub cluster: Cluster,
    pub net: Net,
}

impl ProxiedCluster {
    /// Start `n` nodes, node `i` listening for peers on its own `127.0.0.(11+i)` behind a proxy.
    pub fn start(n: usize, mut opts: ClusterOptions) -> ProxiedCluster {
        let net = Net::new();
        opts.peer_urls = (0..n)
            .map(|i| {
                let real = std::net::SocketAddr::from((node_ip(i), free_port()));
                let proxy = net
                    .spawn_proxy(i, "127.0.0.1:0".parse().expect("addr"), real)
                    .expect("proxy listener");
                (format!("http://{real}"), format!("http://{proxy}"))
            })
            .collect();
        let cluster = Cluster::start_with(n, opts);
        ProxiedCluster { cluster, net }
    }
}

impl Drop for ProxiedCluster {
    fn drop(&mut self) {
        self.net.shutdown();
    }
}

/// Everything a client thread needs; client URLs do not change across restarts.
#[derive(Clone)]
struct ClientCtx {
    urls: Vec<String>,
    keys: Vec<String>,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    local_reads: bool,
    timeout: Duration,
}

/// Result of sending one request.
pub(crate) enum Outcome {
    Reply(Reply),
    /// The request never left (connection refused): it cannot have taken effect.
    NeverLeft,
    /// Sent, outcome unknown (timeout, connection dropped).
    Unknown,
}

pub(crate) fn send(
    http: &Http,
    method: &str,
    url: &str,
    form: Option<&str>,
    timeout: Duration,
) -> Outcome {
    let body = form.map(|f| ("application/x-www-form-urlencoded", f.as_bytes()));
    match http.request(method, url, body, timeout) {
        Ok(r) => Outcome::Reply(r),
        Err(e) if e.contains("onnection refused") => Outcome::NeverLeft,
        Err(_) => Outcome::Unknown,
    }
}

pub(crate) fn meta(kind: Kind, node: usize, r: Option<&Reply>) -> Meta {
    Meta {
        kind,
        node,
        read_mode: r.and_then(|r| r.header("x-deimos-read").map(str::to_string)),
        term: r.and_then(|r| r.header("x-raft-term").and_then(|t| t.parse().ok())),
    }
}

/// What a keys read says about the register: `Some(value)` or `None` for "not found".
pub(crate) fn read_value(r: &Reply) -> Option<Option<String>> {
    match (r.status, r.error_code()) {
        (200, _) => r.json()["node"]["value"]
            .as_str()
            .map(|v| Some(v.to_string())),
        (404, Some(100)) => Some(None),
        _ => None,
    }
}

/// One read of `key` on `node`, recorded. Failed reads are not recorded: a read has no effect.
fn do_read(
    ctx: &ClientCtx,
    http: &Http,
    client: u64,
    node: usize,
    key: &str,
    kind: Kind,
) -> Option<Option<String>> {
    let q = match kind {
        Kind::QuorumGet => "?quorum=true",
        Kind::LocalGet => "?consistency=local",
        _ => "",
    };
    let url = format!("{}/v2/keys{key}{q}", ctx.urls[node]);
    let invoke = ctx.history.now();
    let Outcome::Reply(r) = send(http, "GET", &url, None, ctx.timeout) else {
        return None;
    };
    let v = read_value(&r)?;
    ctx.history.completed(
        client,
        invoke,
        KvInput::Read { key: key.into() },
        KvOutput::Read(v.clone()),
        meta(kind, node, Some(&r)),
    );
    Some(v)
}

/// A plain write, recorded. Returns true if acknowledged.
fn do_write(
    ctx: &ClientCtx,
    http: &Http,
    client: u64,
    node: usize,
    key: &str,
    value: &str,
) -> bool {
    let url = format!("{}/v2/keys{key}", ctx.urls[node]);
    let form = encode_form(&[("value", value)]);
    let input = KvInput::Write {
        key: key.into(),
        value: value.into(),
    };
    let invoke = ctx.history.now();
    match send(http, "PUT", &url, Some(&form), ctx.timeout) {
        Outcome::NeverLeft => false,
        Outcome::Reply(r) if r.status == 200 || r.status == 201 => {
            ctx.history.completed(
                client,
                invoke,
                input,
                KvOutput::Write,
                meta(Kind::Put, node, Some(&r)),
            );
            true
        }
        // Any error after sending (no leader, timed out in Raft) may still commit later.
        Outcome::Reply(r) => {
            ctx.history
                .indeterminate(client, invoke, input, meta(Kind::Put, node, Some(&r)));
            false
        }
        Outcome::Unknown => {
            ctx.history
                .indeterminate(client, invoke, input, meta(Kind::Put, node, None));
            false
        }
    }
}

/// Compare-and-swap `expected -> new`: `prevValue=` when a value is expected, `prevExist=false`
/// when the key is expected absent. Returns `Some(true/false)` when the outcome is known.
fn do_cas(
    ctx: &ClientCtx,
    http: &Http,
    client: u64,
    node: usize,
    key: &str,
    expected: Option<&str>,
    new: &str,
) -> Option<bool> {
    let url = format!("{}/v2/keys{key}", ctx.urls[node]);
    let form = match expected {
        Some(e) => encode_form(&[("value", new), ("prevValue", e)]),
        None => encode_form(&[("value", new), ("prevExist", "false")]),
    };
    let input = KvInput::Cas {
        key: key.into(),
        expected: expected.map(str::to_string),
        new: new.into(),
    };
    let invoke = ctx.history.now();
    let r = match send(http, "PUT", &url, Some(&form), ctx.timeout) {
        Outcome::NeverLeft => return None,
        Outcome::Unknown => {
            ctx.history
                .indeterminate(client, invoke, input, meta(Kind::Cas, node, None));
            return None;
        }
        Outcome::Reply(r) => r,
    };
    // 101 compare failed, 105 node exists (prevExist=false), 100 not found (prevValue on a
    // missing key): the comparison was evaluated against the replicated state and failed.
    let ok = match (r.status, r.error_code()) {
        (200 | 201, _) => Some(true),
        (_, Some(101 | 105 | 100)) => Some(false),
        _ => None,
    };
    match ok {
        Some(ok) => ctx.history.completed(
            client,
            invoke,
            input,
            KvOutput::Cas(ok),
            meta(Kind::Cas, node, Some(&r)),
        ),
        None => ctx
            .history
            .indeterminate(client, invoke, input, meta(Kind::Cas, node, Some(&r))),
    }
    ok
}

/// One client: a sequential loop of random operations against random nodes.
fn client_loop(ctx: ClientCtx, client: u64, seed: u64) {
    let http = Http::new();
    let mut rng = Rng::new(seed ^ client.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut seq = 0u64;
    // The last value this client saw per key: CAS from it, so many CASes succeed.
    let mut seen: Vec<Option<String>> = vec![None; ctx.keys.len()];
    while !ctx.stop.load(Ordering::Relaxed) {
        let k = rng.below(ctx.keys.len());
        let key = ctx.keys[k].clone();
        let node = rng.below(ctx.urls.len());
        let dice = rng.below(100);
        seq += 1;
        let value = format!("c{client}-{seq}");
        if dice < 40 {
            let kind = if ctx.local_reads {
                Kind::LocalGet
            } else {
                Kind::Get
            };
            if let Some(v) = do_read(&ctx, &http, client, node, &key, kind) {
                seen[k] = v;
            }
        } else if dice < 55 {
            if let Some(v) = do_read(&ctx, &http, client, node, &key, Kind::QuorumGet) {
                seen[k] = v;
            }
        } else if dice < 78 {
            if do_write(&ctx, &http, client, node, &key, &value) {
                seen[k] = Some(value);
            }
        } else {
            let expected = seen[k].clone();
            if do_cas(&ctx, &http, client, node, &key, expected.as_deref(), &value) == Some(true) {
                seen[k] = Some(value);
            }
        }
        thread::sleep(Duration::from_millis(2 + rng.below(8) as u64));
    }
}

/// Run one Jepsen test as configured and return its verdict.
pub fn run(cfg: &JepsenConfig) -> Report {
    // Resolve (and, the first time, build) the server before the clock starts: a build of a
    // minute would otherwise eat the run, which then ends before any fault is injected.
    crate::harness::deimos_bin();
    let started = Instant::now();
    let opts = ClusterOptions {
        extra_args: cfg.extra_args.clone(),
        ..ClusterOptions::default()
    };
    let mut pc = ProxiedCluster::start(cfg.nodes, opts);
    pc.cluster.wait_leader(RECOVERY);
    let history = Arc::new(History::new());
    let stop = Arc::new(AtomicBool::new(false));
    let ctx = ClientCtx {
        urls: (0..cfg.nodes).map(|i| pc.cluster.client_url(i)).collect(),
        keys: (0..cfg.keys).map(|k| format!("/jepsen/k{k}")).collect(),
        history: history.clone(),
        stop: stop.clone(),
        local_reads: cfg.local_reads,
        timeout: cfg.client_timeout,
    };
    let clients: Vec<_> = (0..cfg.clients as u64)
        .map(|c| {
            let ctx = ctx.clone();
            let seed = cfg.seed;
            thread::Builder::new()
                .name(format!("client-{c}"))
                .spawn(move || client_loop(ctx, c, seed))
                .expect("client thread")
        })
        .collect();

    let mut nemesis = Nemesis::new(cfg.seed, cfg.hold);
    // Faults stop early enough that the healed cluster serves clients for a while before the end:
    // operations that straddled the last fault complete, and lost writes would show in reads.
    let fault_end = started + cfg.duration.saturating_sub(Duration::from_secs(5));
    let mut order: Vec<FaultKind> = Vec::new();
    thread::sleep(Duration::from_secs(1));
    while !cfg.faults.is_empty() && Instant::now() < fault_end {
        if order.is_empty() {
            order = cfg.faults.clone();
            nemesis.rng.shuffle(&mut order);
        }
        let kind = order.pop().expect("refilled");
        nemesis.run_one(kind, &mut pc.cluster, &pc.net);
        let quiet = nemesis.rng.duration(cfg.quiet.0, cfg.quiet.1);
        thread::sleep(quiet);
    }
    nemesis.heal_all(&mut pc.cluster, &pc.net);
    let remaining = (started + cfg.duration).saturating_duration_since(Instant::now());
    thread::sleep(remaining.max(Duration::from_secs(2)));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    // Final quorum reads of every key from every node: a lost acknowledged write shows here
    // even if no client happened to read the key after the fault.
    let http = Http::new();
    for (k, key) in ctx.keys.iter().enumerate() {
        for node in 0..cfg.nodes {
            let client = 1000 + (k * cfg.nodes + node) as u64;
            do_read(&ctx, &http, client, node, key, Kind::QuorumGet);
        }
    }
    let elapsed = started.elapsed();
    finish(&history, &nemesis.summary(), &nemesis.log, cfg, elapsed)
}

/// Check the history and build the report.
pub fn finish(
    history: &History,
    faults: &str,
    log: &[String],
    cfg: &JepsenConfig,
    elapsed: Duration,
) -> Report {
    let t = Instant::now();
    let verdict = history.check(CHECK_BUDGET);
    let check_time = t.elapsed();
    let c = history.counts();
    let ops = format!(
        "ops={} (reads {} lease={} read-index={} quorum={} local={}, writes {}, cas {} ok={}; indeterminate {})",
        history.len(),
        c.reads,
        c.lease,
        c.read_index,
        c.quorum,
        c.local,
        c.writes,
        c.cas,
        c.cas_ok,
        c.indeterminate
    );
    let tail = format!(
        "faults={faults} duration={}s nodes={} seed={} check={:.1}s",
        elapsed.as_secs(),
        cfg.nodes,
        cfg.seed,
        check_time.as_secs_f64()
    );
    let line = match &verdict {
        Verdict::Ok => format!("jepsen: OK {ops} {tail}"),
        Verdict::Unknown { partition } => {
            format!("jepsen: UNKNOWN (checker budget exhausted on {partition}) {ops} {tail}")
        }
        Verdict::Violation {
            partition,
            culprits,
            confirmed,
            ..
        } => format!(
            "jepsen: VIOLATION{} {} offending=[{}] {ops} {tail}",
            if *confirmed { "" } else { " (unconfirmed)" },
            partition.replace(' ', "="),
            culprits.join("; ")
        ),
    };
    let mut details = line.clone();
    if let Verdict::Violation { report, .. } = &verdict {
        details.push('\n');
        details.push_str(report);
    }
    details.push_str("\nnemesis log:\n");
    for l in log {
        details.push_str("  ");
        details.push_str(l);
        details.push('\n');
    }
    Report {
        verdict,
        line,
        details,
    }
}
