//! One benchmark run per workload and client count, with the CPU each process spent.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::cluster::*;
use super::*;

// ---------------------------------------------------------------------------------------------

pub(super) struct RunResult {
    /// Which round (from 1) of `--rounds` this run belongs to.
    pub(crate) round: u32,
    pub(crate) system: System,
    pub(crate) workload: BenchWorkload,
    pub(crate) clients: u32,
    pub(crate) json: Value,
    /// CPU seconds the leader and the two followers used during the run.
    pub(crate) leader_cpu_s: Option<f64>,
    pub(crate) followers_cpu_s: Option<f64>,
}

impl RunResult {
    pub(crate) fn f(&self, ptr: &str) -> Option<f64> {
        self.json.pointer(ptr).and_then(Value::as_f64)
    }

    /// Microseconds of CPU per successful operation.
    pub(crate) fn per_op_us(&self, cpu_s: Option<f64>) -> Option<f64> {
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
pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat)
}

pub(super) fn parse_stat_cpu(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// CPU seconds of each (pid, is_leader) member right now.
pub(super) fn members_cpu(members: &[(u32, bool)]) -> Vec<Option<f64>> {
    members.iter().map(|(pid, _)| cpu_seconds(*pid)).collect()
}

/// Leader and followers' CPU between two samples.
pub(super) fn cpu_split(
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

/// The cluster one round's runs go against.
pub(super) struct Target<'a> {
    pub(super) system: System,
    pub(super) round: u32,
    pub(super) leader: &'a str,
    /// Each member's pid and whether it is the leader.
    pub(super) members: &'a [(u32, bool)],
    /// `user:password` sent with every request (`deimosctl -u`), for runs with auth on.
    pub(super) credentials: Option<&'a str>,
}

pub(super) fn run_one(
    ctl: &Path,
    t: &Target<'_>,
    w: BenchWorkload,
    clients: u32,
    a: &BenchArgs,
) -> Result<RunResult> {
    let Target {
        system,
        round,
        leader,
        members,
        credentials,
    } = *t;
    let mut cmd = Command::new(ctl);
    if let Some(c) = credentials {
        cmd.args(["--username", c]);
    }
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
    // The ceiling answers whatever it is asked; it is asked what Deimos is.
    .args([
        "--target",
        match system {
            System::Etcd => "etcd",
            System::Deimos | System::Ceiling => "deimos",
        },
    ])
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
        round,
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
pub(super) fn prefill(ctl: &Path, system: System, leader: &str, a: &BenchArgs) -> Result<()> {
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

/// A cluster ready for runs: its leader found and every bench key written.
pub(super) struct Prepared {
    cluster: Cluster,
    pub(super) leader: String,
    /// Each member's pid and whether it is the leader.
    pub(super) members: Vec<(u32, bool)>,
}

impl Prepared {
    pub(super) fn system(&self) -> System {
        self.cluster.system
    }

    /// The ceiling server: its one process is the "leader", and it needs no prefill (it
    /// answers every key with the same response).
    pub(super) fn ceiling(cluster: Cluster) -> Prepared {
        let members = cluster
            .members
            .iter()
            .map(|(_, child)| (child.id(), true))
            .collect();
        Prepared {
            leader: CEILING_URL.to_string(),
            members,
            cluster,
        }
    }
}

pub(super) fn prepare(mut cluster: Cluster, ctl: &Path, a: &BenchArgs) -> Result<Prepared> {
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
    Ok(Prepared {
        cluster,
        leader,
        members,
    })
}

/// One workload at one client count against a prepared cluster.
pub(super) fn run_cell(
    p: &mut Prepared,
    ctl: &Path,
    a: &BenchArgs,
    (round, w, c): (u32, BenchWorkload, u32),
    results: &mut Vec<RunResult>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let system = p.system();
    p.cluster
        .check_alive()
        .map_err(|e| format!("{e}\n{}", p.cluster.log_tails()))?;
    let target = Target {
        system,
        round,
        leader: &p.leader,
        members: &p.members,
        credentials: None,
    };
    results.push(run_one(ctl, &target, w, c, a)?);
    // A run that lost its leader measured something else (forwarding, an election): say so in
    // the report rather than publish the figure silently.
    if role(system, &p.leader).ok().as_deref() != Some("leader") {
        let msg = format!(
            "{} {} with {c} clients: {} was no longer the leader after the run",
            system.name(),
            w.label(),
            p.leader
        );
        eprintln!("warning: {msg}");
        warnings.push(msg);
    }
    Ok(())
}
