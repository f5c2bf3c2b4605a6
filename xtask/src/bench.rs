//! `cargo xtask bench`: Deimos vs etcd 3.4, same client, same machine, same settings.
//!
//! Both systems run as 3-member clusters on loopback with heartbeat 100 ms and election timeout
//! 1000 ms, in fresh temp dirs on the same filesystem, and are driven one after the other (never
//! at the same time, so they do not compete for the CPU) by the same `deimosctl bench` against
//! their leader. The report keeps the machine, versions, settings and raw JSON next to the table
//! so a figure can always be traced back to how it was produced.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::Value;

type Result<T> = std::result::Result<T, String>;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Seconds per run (each workload x client count x system is one run).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Client counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    clients: Vec<u32>,
    /// Workloads to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "put,get-lease,get-quorum,get-local,mixed"
    )]
    workloads: Vec<BenchWorkload>,
    /// Distinct keys.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: u64,
    /// Do not run etcd.
    #[arg(long)]
    skip_etcd: bool,
    /// Do not build or run Deimos (etcd only, e.g. while the server is not ready).
    #[arg(long)]
    skip_deimos: bool,
    /// Use the release binaries already built instead of running `cargo build --release`.
    #[arg(long)]
    no_build: bool,
    /// Keep the clusters' temp dirs (data and logs) for inspection.
    #[arg(long)]
    keep: bool,
    /// Report path.
    #[arg(long, default_value = "bench-report.md")]
    out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchWorkload {
    Put,
    GetLease,
    GetQuorum,
    GetLocal,
    Mixed,
}

impl BenchWorkload {
    fn label(self) -> &'static str {
        match self {
            BenchWorkload::Put => "put",
            BenchWorkload::GetLease => "get lease",
            BenchWorkload::GetQuorum => "get quorum",
            BenchWorkload::GetLocal => "get local",
            BenchWorkload::Mixed => "mixed 90% lease reads",
        }
    }

    /// The `deimosctl bench` arguments for this workload.
    fn args(self) -> Vec<&'static str> {
        match self {
            BenchWorkload::Put => vec!["put"],
            BenchWorkload::GetLease => vec!["get", "--mode", "lease"],
            BenchWorkload::GetQuorum => vec!["get", "--mode", "quorum"],
            BenchWorkload::GetLocal => vec!["get", "--mode", "local"],
            BenchWorkload::Mixed => vec!["mixed", "--read-ratio", "0.9", "--mode", "lease"],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    Deimos,
    Etcd,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Deimos => "deimos",
            System::Etcd => "etcd",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Process hygiene: every child we start is registered so that Drop (normal end, error, panic)
// and the Ctrl-C handler can stop exactly those processes and remove their temp dirs.

static REGISTRY: Mutex<Vec<(u32, Option<PathBuf>)>> = Mutex::new(Vec::new());

/// Records a child (and the temp dir to remove with it, if any) for the Ctrl-C handler.
fn register(pid: u32, dir: Option<&Path>) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.push((pid, dir.map(Path::to_path_buf)));
    }
}

fn unregister(pid: u32) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.retain(|(p, _)| *p != pid);
    }
}

/// This run's temp dir; the clusters' data dirs and logs live below it.
fn base_dir() -> PathBuf {
    std::env::temp_dir().join(format!("deimos-xtask-bench-{}", std::process::id()))
}

fn install_ctrlc_handler(keep: bool) {
    let _ = ctrlc::set_handler(move || {
        eprintln!("\nxtask bench: interrupted, stopping the clusters");
        if let Ok(r) = REGISTRY.lock() {
            // SIGKILL, like Child::kill in Drop: these clusters are throw-away, and a graceful
            // etcd shutdown can take seconds while it tries to reach peers that are gone.
            for (pid, _) in r.iter() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            if !keep {
                std::thread::sleep(Duration::from_millis(200));
                for dir in r.iter().filter_map(|(_, d)| d.as_ref()) {
                    let _ = std::fs::remove_dir_all(dir);
                }
                let _ = std::fs::remove_dir_all(base_dir());
            }
        }
        std::process::exit(130);
    });
}

/// A running local cluster. Dropping it kills and reaps its members and removes its temp dir.
struct Cluster {
    system: System,
    members: Vec<(String, Child)>,
    client_urls: Vec<String>,
    dir: PathBuf,
    keep: bool,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.members {
            let _ = child.kill();
            let _ = child.wait();
            unregister(child.id());
        }
        if self.keep {
            eprintln!(
                "kept {} data and logs in {}",
                self.system.name(),
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Cluster {
    fn log_tails(&self) -> String {
        let mut s = String::new();
        for (name, _) in &self.members {
            let log =
                std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(15);
            let _ = writeln!(
                s,
                "--- {name}.log (last lines) ---\n{}",
                lines[from..].join("\n")
            );
        }
        s
    }

    /// Fails if a member already exited (bad flags, port taken, ...).
    fn check_alive(&mut self) -> Result<()> {
        for (name, child) in &mut self.members {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{} member {name} exited: {status}",
                    self.system.name()
                ));
            }
        }
        Ok(())
    }
}

fn ensure_port_free(port: u16) -> Result<()> {
    TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .map_err(|e| format!("127.0.0.1:{port} is not free ({e}); stop whatever uses it"))
}

fn spawn_member(
    system: System,
    bin: &Path,
    name: &str,
    args: &[String],
    dir: &Path,
) -> Result<Child> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))
        .map_err(|e| format!("creating log for {name}: {e}"))?;
    let err = log
        .try_clone()
        .map_err(|e| format!("log for {name}: {e}"))?;
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("starting {} {name} ({}): {e}", system.name(), bin.display()))?;
    register(child.id(), Some(dir));
    Ok(child)
}

/// One member's names and URLs, from which each system builds its own flags.
struct MemberSpec {
    name: String,
    client: String,
    peer: String,
    data: PathBuf,
}

/// Start three members of `system` on loopback: names `<prefix>1..3`, client ports
/// `client_base + i`, peer ports `peer_base + i`; `args` turns a member and the cluster's
/// `name=peerURL,...` list into that system's command line.
fn start_cluster(
    system: System,
    bin: &Path,
    base: &Path,
    keep: bool,
    (prefix, client_base, peer_base): (&str, u16, u16),
    args: impl Fn(&MemberSpec, &str) -> Vec<String>,
) -> Result<Cluster> {
    let dir = base.join(match system {
        System::Deimos => "deimos",
        System::Etcd => "etcd",
    });
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut cluster = Cluster {
        system,
        members: Vec::new(),
        client_urls: Vec::new(),
        dir: dir.clone(),
        keep,
    };
    let initial = (1..=3u16)
        .map(|i| format!("{prefix}{i}=http://127.0.0.1:{}", peer_base + i))
        .collect::<Vec<_>>()
        .join(",");
    for i in 1..=3u16 {
        ensure_port_free(client_base + i)?;
        ensure_port_free(peer_base + i)?;
    }
    for i in 1..=3u16 {
        let m = MemberSpec {
            name: format!("{prefix}{i}"),
            client: format!("http://127.0.0.1:{}", client_base + i),
            peer: format!("http://127.0.0.1:{}", peer_base + i),
            data: dir.join(format!("{prefix}{i}-data")),
        };
        let child = spawn_member(system, bin, &m.name, &args(&m, &initial), &dir)?;
        cluster.client_urls.push(m.client.clone());
        cluster.members.push((m.name, child));
    }
    Ok(cluster)
}

fn flags(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .collect()
}

fn start_deimos(bin: &Path, base: &Path, keep: bool) -> Result<Cluster> {
    start_cluster(
        System::Deimos,
        bin,
        base,
        keep,
        ("n", 4100, 7100),
        |m, bootstrap| {
            let data = m.data.display().to_string();
            flags(&[
                ("--name", &m.name),
                ("--data-dir", &data),
                ("--listen-client-urls", &m.client),
                ("--advertise-client-urls", &m.client),
                ("--listen-peer-urls", &m.peer),
                ("--advertise-peer-urls", &m.peer),
                ("--bootstrap-config", bootstrap),
                ("--heartbeat-interval", "100ms"),
                ("--election-timeout", "1000ms"),
            ])
        },
    )
}

fn start_etcd(base: &Path, keep: bool) -> Result<Cluster> {
    start_cluster(
        System::Etcd,
        Path::new("etcd"),
        base,
        keep,
        ("e", 4200, 7200),
        |m, initial| {
            let data = m.data.display().to_string();
            let mut a = vec!["--enable-v2=true".to_string()];
            a.extend(flags(&[
                ("--name", &m.name),
                ("--data-dir", &data),
                ("--listen-client-urls", &m.client),
                ("--advertise-client-urls", &m.client),
                ("--listen-peer-urls", &m.peer),
                ("--initial-advertise-peer-urls", &m.peer),
                ("--initial-cluster", initial),
                ("--initial-cluster-state", "new"),
                ("--initial-cluster-token", "xtask-bench"),
                ("--heartbeat-interval", "100"),
                ("--election-timeout", "1000"),
            ]));
            a
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Tiny blocking HTTP/1.0 GET for readiness and leader discovery: HTTP/1.0 makes both servers send
// an unchunked body and close, so reading to EOF is the whole parser we need.

fn http_get(url: &str, path: &str) -> Result<(u16, String)> {
    let authority = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: not http://"))?
        .trim_end_matches('/');
    let mut s = TcpStream::connect(authority).map_err(|e| format!("{url}: {e}"))?;
    let t = Some(Duration::from_secs(2));
    let _ = s.set_read_timeout(t);
    let _ = s.set_write_timeout(t);
    write!(s, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)
        .map_err(|e| format!("{url}{path}: {e}"))?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((buf.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{url}{path}: bad response"))?;
    Ok((status, body.to_string()))
}

/// The member's role as it reports it: `/raft/status` on Deimos, `/v2/stats/self` on etcd.
fn role(system: System, url: &str) -> Result<String> {
    let (path, field) = match system {
        System::Deimos => ("/raft/status", "role"),
        System::Etcd => ("/v2/stats/self", "state"),
    };
    let (status, body) = http_get(url, path)?;
    if status != 200 {
        return Err(format!("{url}{path}: HTTP {status}"));
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{url}{path}: {e}"))?;
    let r = v.get(field).and_then(Value::as_str).unwrap_or("");
    Ok(match r {
        "StateLeader" => "leader".to_string(),
        other => other.to_string(),
    })
}

/// Waits for exactly one leader that also accepts a write, and returns its client URL.
fn find_leader(cluster: &mut Cluster, ctl: &Path) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        cluster.check_alive()?;
        let leaders: Vec<String> = cluster
            .client_urls
            .iter()
            .filter(|u| match role(cluster.system, u) {
                Ok(r) => r == "leader",
                Err(e) => {
                    last = e;
                    false
                }
            })
            .cloned()
            .collect();
        if let [leader] = leaders.as_slice() {
            let ok = Command::new(ctl)
                .args([
                    "--endpoints",
                    leader,
                    "--timeout",
                    "3s",
                    "set",
                    "/xtask/ready",
                    "1",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(leader.clone());
            }
            last = format!("{leader} is leader but a write failed");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!(
        "{}: no leader within 60s (last: {last})\n{}",
        cluster.system.name(),
        cluster.log_tails()
    ))
}

// ---------------------------------------------------------------------------------------------

struct RunResult {
    system: System,
    workload: BenchWorkload,
    clients: u32,
    json: Value,
    /// CPU seconds the leader and the two followers used during the run.
    leader_cpu_s: Option<f64>,
    followers_cpu_s: Option<f64>,
}

impl RunResult {
    fn f(&self, ptr: &str) -> Option<f64> {
        self.json.pointer(ptr).and_then(Value::as_f64)
    }

    /// Microseconds of CPU per successful operation.
    fn per_op_us(&self, cpu_s: Option<f64>) -> Option<f64> {
        let ok = self
            .json
            .get("ok")
            .and_then(Value::as_u64)
            .filter(|&n| n > 0)?;
        Some(cpu_s? * 1e6 / ok as f64)
    }
}

/// User + system CPU seconds of a process from `/proc/<pid>/stat` (fields 14 and 15, USER_HZ
/// ticks = 1/100 s on Linux), counted after the last `)` since the command name may contain any
/// character.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat)
}

fn parse_stat_cpu(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// CPU seconds of each (pid, is_leader) member right now.
fn members_cpu(members: &[(u32, bool)]) -> Vec<Option<f64>> {
    members.iter().map(|(pid, _)| cpu_seconds(*pid)).collect()
}

/// Leader and followers' CPU between two samples.
fn cpu_split(
    members: &[(u32, bool)],
    before: &[Option<f64>],
    after: &[Option<f64>],
) -> (Option<f64>, Option<f64>) {
    let mut leader = None;
    let mut followers: Option<f64> = None;
    for (i, (_, is_leader)) in members.iter().enumerate() {
        let d = match (
            before.get(i).copied().flatten(),
            after.get(i).copied().flatten(),
        ) {
            (Some(b), Some(a)) => a - b,
            _ => continue,
        };
        if *is_leader {
            leader = Some(d);
        } else {
            followers = Some(followers.unwrap_or(0.0) + d);
        }
    }
    (leader, followers)
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    ctl: &Path,
    system: System,
    leader: &str,
    members: &[(u32, bool)],
    w: BenchWorkload,
    clients: u32,
    a: &BenchArgs,
) -> Result<RunResult> {
    let mut cmd = Command::new(ctl);
    cmd.args([
        "--endpoints",
        leader,
        "-o",
        "json",
        "--timeout",
        "10s",
        "bench",
    ])
    .args(w.args())
    .args(["--clients", &clients.to_string()])
    .args(["--duration", &format!("{}s", a.duration)])
    .args(["--keys", &a.keys.to_string()])
    .args(["--value-size", &a.value_size.to_string()])
    .args(["--target", system.name()])
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    // Prefilled once per cluster (see `prefill`), so the CPU measured here is the workload's.
    cmd.arg("--no-prefill");
    let cpu_before = members_cpu(members);
    let child = cmd
        .spawn()
        .map_err(|e| format!("running {}: {e}", ctl.display()))?;
    let pid = child.id();
    register(pid, None);
    let out = child.wait_with_output();
    unregister(pid);
    let out = out.map_err(|e| format!("running {}: {e}", ctl.display()))?;
    let (leader_cpu_s, followers_cpu_s) = cpu_split(members, &cpu_before, &members_cpu(members));
    if !out.status.success() {
        return Err(format!(
            "{} bench {} with {clients} clients failed ({}): {}",
            system.name(),
            w.label(),
            out.status,
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    let json: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("bench output is not JSON: {e}"))?;
    let r = RunResult {
        system,
        workload: w,
        clients,
        json,
        leader_cpu_s,
        followers_cpu_s,
    };
    eprintln!(
        "  {:<6} {:<22} c={:<3} {:>9.0} ops/s  p50 {:.3} ms  p99 {:.3} ms  errors {}",
        system.name(),
        w.label(),
        clients,
        r.f("/throughput_ops").unwrap_or(0.0),
        r.f("/latency_ms/p50").unwrap_or(0.0),
        r.f("/latency_ms/p99").unwrap_or(0.0),
        r.json.get("errors").and_then(Value::as_u64).unwrap_or(0)
    );
    Ok(r)
}

/// Writes every bench key once (a `put` run with `--total = --keys`), so reads find values.
fn prefill(ctl: &Path, system: System, leader: &str, a: &BenchArgs) -> Result<()> {
    eprintln!("prefilling {} keys on {}", a.keys, system.name());
    let status = Command::new(ctl)
        .args(["--endpoints", leader, "--timeout", "10s", "bench", "put"])
        .args([
            "--total",
            &a.keys.to_string(),
            "--keys",
            &a.keys.to_string(),
        ])
        .args(["--value-size", &a.value_size.to_string()])
        .args([
            "--clients",
            "16",
            "--no-progress",
            "--target",
            system.name(),
        ])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("prefill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("prefill on {} failed: {status}", system.name()))
    }
}

fn run_suite(
    mut cluster: Cluster,
    ctl: &Path,
    a: &BenchArgs,
    results: &mut Vec<RunResult>,
    warnings: &mut Vec<String>,
) -> Result<String> {
    let system = cluster.system;
    eprintln!("waiting for the {} leader ...", system.name());
    let leader = find_leader(&mut cluster, ctl)?;
    eprintln!("{} leader: {leader}", system.name());
    let members: Vec<(u32, bool)> = cluster
        .members
        .iter()
        .zip(&cluster.client_urls)
        .map(|((_, child), url)| (child.id(), *url == leader))
        .collect();
    prefill(ctl, system, &leader, a)?;
    for &w in &a.workloads {
        for &c in &a.clients {
            cluster
                .check_alive()
                .map_err(|e| format!("{e}\n{}", cluster.log_tails()))?;
            results.push(run_one(ctl, system, &leader, &members, w, c, a)?);
            // A run that lost its leader measured something else (forwarding, an election):
            // say so in the report rather than publish the figure silently.
            if role(system, &leader).ok().as_deref() != Some("leader") {
                let msg = format!(
                    "{} {} with {c} clients: {leader} was no longer the leader after the run",
                    system.name(),
                    w.label()
                );
                eprintln!("warning: {msg}");
                warnings.push(msg);
            }
        }
    }
    Ok(leader)
    // `cluster` drops here: members are killed and the temp dir removed.
}

// ---------------------------------------------------------------------------------------------
// Report.

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn proc_field(file: &str, key: &str) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Deimos/etcd, or `n/a` when either side is missing or zero.
pub fn ratio(deimos: Option<f64>, etcd: Option<f64>) -> String {
    match (deimos, etcd) {
        (Some(d), Some(e)) if e > 0.0 => format!("{:.2}x", d / e),
        _ => "n/a".into(),
    }
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map(|x| format!("{x:.decimals$}"))
        .unwrap_or_else(|| "-".into())
}

fn find(results: &[RunResult], s: System, w: BenchWorkload, c: u32) -> Option<&RunResult> {
    results
        .iter()
        .find(|r| r.system == s && r.workload == w && r.clients == c)
}

fn check(out: &mut String, what: &str, value: Option<f64>, target: f64) {
    let verdict = match value {
        Some(v) if v >= target => format!("{v:.2}x (target >= {target}x): met"),
        Some(v) => format!("{v:.2}x (target >= {target}x): **missed**"),
        None => format!("n/a (target >= {target}x): not measured"),
    };
    let _ = writeln!(out, "- {what}: {verdict}");
}

struct Context {
    args_line: String,
    etcd_version: String,
    deimos_rev: String,
    fs_type: String,
    leaders: Vec<(System, String)>,
    /// `/proc/loadavg` before and after: other work on the machine skews every figure.
    load_before: String,
    load_after: String,
    /// Anything that makes a figure suspect (e.g. a leader change during a run).
    warnings: Vec<String>,
}

fn report(a: &BenchArgs, ctx: &Context, results: &[RunResult]) -> String {
    let mut o = String::new();
    let now = sh("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]);
    let _ = writeln!(o, "# Deimos vs etcd: benchmark report\n");
    let _ = writeln!(o, "Generated {now} by `{}`.\n", ctx.args_line);
    let _ = writeln!(o, "## Machine\n");
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let _ = writeln!(o, "- CPUs (nproc): {nproc}");
    let _ = writeln!(
        o,
        "- CPU model: {}",
        proc_field("/proc/cpuinfo", "model name")
    );
    let mem = proc_field("/proc/meminfo", "MemTotal");
    let mem = match mem.trim_end_matches(" kB").trim().parse::<f64>() {
        Ok(kb) => format!("{:.1} GiB ({mem})", kb / 1024.0 / 1024.0),
        Err(_) => mem,
    };
    let _ = writeln!(o, "- Memory: {mem}");
    let _ = writeln!(o, "- Kernel: {}", sh("uname", &["-sr"]));
    let _ = writeln!(o, "- Data dirs: temp dir on a `{}` filesystem", ctx.fs_type);
    let _ = writeln!(
        o,
        "- Load average (1/5/15 min) before the run: {}; after: {} (the machine may be shared; \
         the bench client runs on the same CPUs as the servers)\n",
        ctx.load_before, ctx.load_after
    );
    let _ = writeln!(o, "## Versions\n");
    let _ = writeln!(o, "- etcd: {}", ctx.etcd_version);
    let _ = writeln!(o, "- Deimos: git {}", ctx.deimos_rev);
    let _ = writeln!(
        o,
        "- Client: `deimosctl bench` from the same revision (release build)\n"
    );
    let _ = writeln!(o, "## Settings\n");
    let _ = writeln!(
        o,
        "- Each system: 3 members on 127.0.0.1, heartbeat 100 ms, election timeout 1000 ms, fresh \
         data dirs; run one system at a time.\n\
         - Deimos: clients 4101-4103, peers 7101-7103. etcd: `--enable-v2=true`, clients 4201-4203, \
         peers 7201-7203; etcd fsyncs its WAL before acknowledging a write.\n\
         - Load: closed loop, one HTTP/1.1 keep-alive connection per client, all against the leader; \
         {}s per run; {} keys under `/bench`; values of {} bytes; keys prefilled before reads.\n\
         - Read modes: `lease` = plain GET (a lease read on the Deimos leader; on etcd a plain v2 GET, \
         which is a local, non-linearizable read); `quorum` = `?quorum=true` on both; `local` = \
         `?consistency=local` on Deimos, plain GET on etcd. `mixed` = 90% lease reads, 10% PUTs.",
        a.duration, a.keys, a.value_size
    );
    for (s, l) in &ctx.leaders {
        let _ = writeln!(o, "- {} leader used: {l}", s.name());
    }
    if !ctx.warnings.is_empty() {
        let _ = writeln!(o, "\n## Warnings\n");
        for w in &ctx.warnings {
            let _ = writeln!(o, "- {w}");
        }
    }
    let _ = writeln!(o, "\n## Results\n");
    let _ = writeln!(
        o,
        "| workload | clients | Deimos ops/s | etcd ops/s | Deimos/etcd | Deimos p50 ms | etcd p50 ms \
         | Deimos p99 ms | etcd p99 ms | errors Deimos/etcd |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &w in &a.workloads {
        for &c in &a.clients {
            let d = find(results, System::Deimos, w, c);
            let e = find(results, System::Etcd, w, c);
            let g = |r: Option<&RunResult>, p: &str| r.and_then(|r| r.f(p));
            let errs = |r: Option<&RunResult>| {
                r.and_then(|r| r.json.get("errors").and_then(Value::as_u64))
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into())
            };
            let _ = writeln!(
                o,
                "| {} | {c} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
                w.label(),
                cell(g(d, "/throughput_ops"), 0),
                cell(g(e, "/throughput_ops"), 0),
                ratio(g(d, "/throughput_ops"), g(e, "/throughput_ops")),
                cell(g(d, "/latency_ms/p50"), 3),
                cell(g(e, "/latency_ms/p50"), 3),
                cell(g(d, "/latency_ms/p99"), 3),
                cell(g(e, "/latency_ms/p99"), 3),
                errs(d),
                errs(e),
            );
        }
    }

    let _ = writeln!(o, "\n## Where the CPU goes\n");
    let _ = writeln!(
        o,
        "CPU time (user + system, from `/proc/<pid>/stat`) per successful operation, in µs. The \
         client shares the machine with the servers, so its cost is part of every figure above.\n"
    );
    let _ = writeln!(
        o,
        "| workload | clients | Deimos leader | Deimos followers | Deimos client | etcd leader \
         | etcd followers | etcd client |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for &w in &a.workloads {
        for &c in &a.clients {
            let d = find(results, System::Deimos, w, c);
            let e = find(results, System::Etcd, w, c);
            let us = |r: Option<&RunResult>, which: u8| {
                cell(
                    r.and_then(|r| {
                        let cpu = match which {
                            0 => r.leader_cpu_s,
                            1 => r.followers_cpu_s,
                            _ => r.f("/client_cpu_s"),
                        };
                        r.per_op_us(cpu)
                    }),
                    1,
                )
            };
            let _ = writeln!(
                o,
                "| {} | {c} | {} | {} | {} | {} | {} | {} |",
                w.label(),
                us(d, 0),
                us(d, 1),
                us(d, 2),
                us(e, 0),
                us(e, 1),
                us(e, 2),
            );
        }
    }

    let _ = writeln!(o, "\n## Acceptance targets (computed from the table)\n");
    let tput = |s, w, c| find(results, s, w, c).and_then(|r| r.f("/throughput_ops"));
    let p99 = |s, w, c| find(results, s, w, c).and_then(|r| r.f("/latency_ms/p99"));
    let div = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if y > 0.0 => Some(x / y),
        _ => None,
    };
    use BenchWorkload::*;
    use System::*;
    check(
        &mut o,
        "Deimos lease reads vs Deimos quorum reads, 16 clients",
        div(tput(Deimos, GetLease, 16), tput(Deimos, GetQuorum, 16)),
        5.0,
    );
    check(
        &mut o,
        "Deimos lease reads vs etcd plain GET, 16 clients",
        div(tput(Deimos, GetLease, 16), tput(Etcd, GetLease, 16)),
        2.0,
    );
    let p99_line = match (p99(Deimos, GetLease, 16), p99(Etcd, GetLease, 16)) {
        (Some(d), Some(e)) => format!(
            "{d:.3} ms vs {e:.3} ms: {}",
            if d <= e { "met" } else { "**missed**" }
        ),
        _ => "n/a: not measured".into(),
    };
    let _ = writeln!(
        o,
        "- Lease-read p99 no worse than etcd's at 16 clients: {p99_line}"
    );
    for c in [16, 64] {
        check(
            &mut o,
            &format!("quorum reads vs etcd, {c} clients"),
            div(tput(Deimos, GetQuorum, c), tput(Etcd, GetQuorum, c)),
            1.5,
        );
        check(
            &mut o,
            &format!("PUTs vs etcd, {c} clients"),
            div(tput(Deimos, Put, c), tput(Etcd, Put, c)),
            1.2,
        );
    }

    let _ = writeln!(o, "\n## Raw JSON (`deimosctl -o json bench ...`)\n");
    let _ = writeln!(o, "```json");
    let raw: Vec<Value> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "system": r.system.name(),
                "workload": r.workload.label(),
                "clients": r.clients,
                "leader_cpu_s": r.leader_cpu_s,
                "followers_cpu_s": r.followers_cpu_s,
                "result": r.json,
            })
        })
        .collect();
    let _ = writeln!(
        o,
        "{}",
        serde_json::to_string_pretty(&raw).unwrap_or_else(|e| format!("\"{e}\""))
    );
    let _ = writeln!(o, "```");
    o
}

// ---------------------------------------------------------------------------------------------

fn workspace_root() -> PathBuf {
    // xtask/ sits directly under the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn release_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => {
            let t = PathBuf::from(t);
            if t.is_absolute() { t } else { root.join(t) }.join("release")
        }
        None => root.join("target").join("release"),
    }
}

fn build(root: &Path, with_deimos: bool) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "-p", "deimos-cli"]);
    if with_deimos {
        cmd.args(["-p", "deimos-server"]);
    }
    eprintln!("building release binaries ...");
    let status = cmd.status().map_err(|e| format!("cargo build: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo build --release failed: {status}"))
    }
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.skip_deimos && a.skip_etcd {
        return Err("--skip-deimos and --skip-etcd leave nothing to run".into());
    }
    if a.clients.is_empty() || a.workloads.is_empty() {
        return Err("no client counts or workloads given".into());
    }
    install_ctrlc_handler(a.keep);
    let root = workspace_root();
    if !a.no_build {
        build(&root, !a.skip_deimos)?;
    }
    let bin_dir = release_dir(&root);
    let ctl = bin_dir.join("deimosctl");
    let deimos = bin_dir.join("deimos");
    if !ctl.exists() {
        return Err(format!(
            "{} not found (build it or drop --no-build)",
            ctl.display()
        ));
    }
    if !a.skip_deimos && !deimos.exists() {
        return Err(format!("{} not found", deimos.display()));
    }
    let etcd_version = if a.skip_etcd {
        "not run".to_string()
    } else {
        let v = sh("etcd", &["--version"]);
        if v == "unknown" {
            return Err("etcd not found: apt-get install etcd-server (or pass --skip-etcd)".into());
        }
        v.lines().next().unwrap_or("unknown").to_string()
    };
    let dirty = !sh(
        "git",
        &["-C", &root.display().to_string(), "status", "--porcelain"],
    )
    .is_empty();
    let deimos_rev = format!(
        "{}{}",
        sh(
            "git",
            &[
                "-C",
                &root.display().to_string(),
                "rev-parse",
                "--short",
                "HEAD"
            ]
        ),
        if dirty {
            " (work tree has uncommitted changes)"
        } else {
            ""
        }
    );

    let base = base_dir();
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    let fs_type = sh("stat", &["-f", "-c", "%T", &base.display().to_string()]);
    let load_before = loadavg();

    let mut results = Vec::new();
    let mut leaders = Vec::new();
    let mut warnings = Vec::new();
    let outcome = (|| -> Result<()> {
        if !a.skip_deimos {
            eprintln!("starting 3-node Deimos ...");
            let c = start_deimos(&deimos, &base, a.keep)?;
            let l = run_suite(c, &ctl, &a, &mut results, &mut warnings)?;
            leaders.push((System::Deimos, l));
        }
        if !a.skip_etcd {
            eprintln!("starting 3-node etcd ...");
            let c = start_etcd(&base, a.keep)?;
            let l = run_suite(c, &ctl, &a, &mut results, &mut warnings)?;
            leaders.push((System::Etcd, l));
        }
        Ok(())
    })();
    if !a.keep {
        let _ = std::fs::remove_dir_all(&base);
    }
    outcome?;

    let ctx = Context {
        args_line: std::iter::once("cargo xtask bench".to_string())
            .chain(std::env::args().skip(2))
            .collect::<Vec<_>>()
            .join(" "),
        etcd_version,
        deimos_rev: if a.skip_deimos {
            format!("{deimos_rev} (Deimos not run: --skip-deimos)")
        } else {
            deimos_rev
        },
        fs_type,
        leaders,
        load_before,
        load_after: loadavg(),
        warnings,
    };
    let text = report(&a, &ctx, &results);
    std::fs::write(&a.out, text).map_err(|e| format!("{}: {e}", a.out.display()))?;
    eprintln!("report written to {}", a.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: BenchArgs,
    }

    #[test]
    fn args_defaults_and_lists() {
        let t = T::try_parse_from(["x"]).expect("defaults");
        assert_eq!(t.a.clients, vec![1, 16, 64]);
        assert_eq!(t.a.workloads.len(), 5);
        assert_eq!(t.a.duration, 10);
        let t = T::try_parse_from(["x", "--clients", "2,4", "--workloads", "put,get-quorum"])
            .expect("lists");
        assert_eq!(t.a.clients, vec![2, 4]);
        assert_eq!(
            t.a.workloads,
            vec![BenchWorkload::Put, BenchWorkload::GetQuorum]
        );
        assert!(T::try_parse_from(["x", "--clients", "0"]).is_err());
        assert!(T::try_parse_from(["x", "--workloads", "scan"]).is_err());
    }

    #[test]
    fn proc_stat_cpu() {
        let line = "77 (etcd (x)) S 1 2 3 4 5 6 7 8 9 10 123 77 0 0 20 0 8 0 100";
        assert_eq!(parse_stat_cpu(line), Some(2.0));
        assert_eq!(parse_stat_cpu("77 (etcd) S"), None);
        let members = [(1, true), (2, false), (3, false)];
        let (l, f) = cpu_split(
            &members,
            &[Some(1.0), Some(1.0), None],
            &[Some(1.5), Some(1.25), Some(9.0)],
        );
        assert_eq!(l, Some(0.5));
        assert_eq!(f, Some(0.25), "a member without both samples is left out");
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(300.0), Some(100.0)), "3.00x");
        assert_eq!(ratio(Some(1.0), None), "n/a");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "n/a");
    }

    #[test]
    fn report_side_by_side() {
        let a = T::try_parse_from([
            "x",
            "--clients",
            "16",
            "--workloads",
            "get-lease,get-quorum",
        ])
        .expect("args")
        .a;
        let mk = |s, w, t: f64, p99: f64| RunResult {
            system: s,
            workload: w,
            clients: 16,
            json: serde_json::json!({"throughput_ops": t, "errors": 0, "ok": 1000,
                "client_cpu_s": 0.01, "latency_ms": {"p50": 0.5, "p99": p99}}),
            leader_cpu_s: Some(0.02),
            followers_cpu_s: None,
        };
        let results = vec![
            mk(System::Deimos, BenchWorkload::GetLease, 60000.0, 1.0),
            mk(System::Deimos, BenchWorkload::GetQuorum, 10000.0, 3.0),
            mk(System::Etcd, BenchWorkload::GetLease, 20000.0, 2.0),
        ];
        let ctx = Context {
            args_line: "cargo xtask bench".into(),
            etcd_version: "etcd Version: 3.4.23".into(),
            deimos_rev: "abc".into(),
            fs_type: "ext2/ext3".into(),
            leaders: vec![],
            load_before: "0.1 0.2 0.3".into(),
            load_after: "0.4 0.5 0.6".into(),
            warnings: vec!["etcd put with 16 clients: leader changed".into()],
        };
        let r = report(&a, &ctx, &results);
        assert!(
            r.contains("| get lease | 16 | 60000 | 20000 | 3.00x |"),
            "{r}"
        );
        assert!(r.contains("| get quorum | 16 | 10000 | - | n/a |"), "{r}");
        assert!(r.contains("Deimos lease reads vs Deimos quorum reads, 16 clients: 6.00x"));
        assert!(r.contains(
            "Deimos lease reads vs etcd plain GET, 16 clients: 3.00x (target >= 2x): met"
        ));
        assert!(r.contains("1.000 ms vs 2.000 ms: met"));
        assert!(r.contains("quorum reads vs etcd, 16 clients: n/a"));
        assert!(r.contains("```json"));
        assert!(r.contains("## Warnings\n\n- etcd put with 16 clients: leader changed\n"));
        // 0.02 s of leader CPU and 0.01 s of client CPU over 1000 operations.
        assert!(
            r.contains("| get lease | 16 | 20.0 | - | 10.0 | 20.0 | - | 10.0 |"),
            "{r}"
        );
        assert!(r.contains("\"leader_cpu_s\": 0.02"), "{r}");
    }
}
