//! The Markdown report.

use std::fmt::Write as _;
use std::process::Command;

use serde_json::Value;

use super::runs::*;
use super::*;

// ---------------------------------------------------------------------------------------------
// Report.

pub(super) fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub(super) fn proc_field(file: &str, key: &str) -> String {
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

/// A ratio as the tables show it, `n/a` when it could not be formed.
pub fn ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}x"))
        .unwrap_or_else(|| "n/a".into())
}

pub(super) fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map(|x| format!("{x:.decimals$}"))
        .unwrap_or_else(|| "-".into())
}

/// The run a cell reports: with several rounds, the one with the median throughput (the lower
/// middle of an even count), so its latencies and CPU figures come from that same run.
pub(super) fn find(
    results: &[RunResult],
    s: System,
    w: BenchWorkload,
    c: u32,
) -> Option<&RunResult> {
    let mut runs = cell_runs(results, s, w, c);
    runs.sort_by(|a, b| {
        let t = |r: &RunResult| r.f("/throughput_ops").unwrap_or(0.0);
        t(a).total_cmp(&t(b))
    });
    runs.get(runs.len().saturating_sub(1) / 2).copied()
}

fn cell_runs(results: &[RunResult], s: System, w: BenchWorkload, c: u32) -> Vec<&RunResult> {
    results
        .iter()
        .filter(|r| r.system == s && r.workload == w && r.clients == c)
        .collect()
}

/// Throughput of `num` over throughput of `den`, paired by round: the median (lower middle of
/// an even count) of the per-round ratios. Runs of one round share the machine's state of the
/// moment (see `run`), so pairing them cancels most of a shared machine's drift.
pub(super) fn paired(results: &[RunResult], num: Cell, den: Cell) -> Option<f64> {
    let mut r = round_ratios(results, num, den);
    r.sort_by(f64::total_cmp);
    r.get(r.len().checked_sub(1)? / 2).copied()
}

/// (system, workload, clients).
pub(super) type Cell = (System, BenchWorkload, u32);

/// The per-round ratios behind [`paired`], in round order (rounds missing either side skipped).
pub(super) fn round_ratios(results: &[RunResult], num: Cell, den: Cell) -> Vec<f64> {
    let tput = |(s, w, c): Cell, round| {
        cell_runs(results, s, w, c)
            .into_iter()
            .find(|r| r.round == round)
            .and_then(|r| r.f("/throughput_ops"))
    };
    let mut rounds: Vec<u32> = results.iter().map(|r| r.round).collect();
    rounds.sort_unstable();
    rounds.dedup();
    rounds
        .into_iter()
        .filter_map(|round| match (tput(num, round), tput(den, round)) {
            (Some(n), Some(d)) if d > 0.0 => Some(n / d),
            _ => None,
        })
        .collect()
}

/// Every round's throughput for a cell, in round order.
pub(super) fn all_throughputs(
    results: &[RunResult],
    s: System,
    w: BenchWorkload,
    c: u32,
) -> String {
    cell_runs(results, s, w, c)
        .iter()
        .map(|r| cell(r.f("/throughput_ops"), 0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One throughput target, judged on the paired ratio; the ratio of the two cells' medians is
/// shown beside it, since with few rounds the two can fall on either side of a target.
pub(super) fn check(
    out: &mut String,
    what: &str,
    results: &[RunResult],
    (num, den): (Cell, Cell),
    target: f64,
) {
    let tput = |(s, w, c): Cell| find(results, s, w, c).and_then(|r| r.f("/throughput_ops"));
    let of_medians = match (tput(num), tput(den)) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    };
    let verdict = match paired(results, num, den) {
        Some(v) if v >= target => format!("{v:.2}x (target >= {target}x): met"),
        Some(v) => format!("{v:.2}x (target >= {target}x): **missed**"),
        None => format!("n/a (target >= {target}x): not measured"),
    };
    let aside = match of_medians {
        Some(m) if results.iter().any(|r| r.round > 1) => {
            format!(" (ratio of the medians: {m:.2}x)")
        }
        _ => String::new(),
    };
    let _ = writeln!(out, "- {what}: {verdict}{aside}");
}

pub(super) struct Context {
    pub(crate) args_line: String,
    pub(crate) etcd_version: String,
    pub(crate) deimos_rev: String,
    pub(crate) fs_type: String,
    pub(crate) leaders: Vec<(System, String)>,
    /// `/proc/loadavg` before and after: other work on the machine skews every figure.
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    /// Anything that makes a figure suspect (e.g. a leader change during a run).
    pub(crate) warnings: Vec<String>,
}

pub(super) fn report(a: &BenchArgs, ctx: &Context, results: &[RunResult], extra: &Extra) -> String {
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
         data dirs; {} round(s), each on fresh clusters of both systems. Both clusters run \
         during a round (the one not measured only heartbeats); each cell runs on both back to \
         back, the first system alternating by round.\n\
         - Deimos: clients 4101-4103, peers 7101-7103. etcd: `--enable-v2=true`, clients 4201-4203, \
         peers 7201-7203; etcd fsyncs its WAL before acknowledging a write.\n\
         - Load: closed loop, one HTTP/1.1 keep-alive connection per client, all against the leader; \
         {}s per run; {} keys under `/bench`; values of {} bytes; keys prefilled before reads.\n\
         - Read modes: `lease` = plain GET (a lease read on the Deimos leader; on etcd a plain v2 GET, \
         which is a local, non-linearizable read); `quorum` = `?quorum=true` on both (on both a read \
         through the Raft log: a committed entry, fsynced on a quorum); `local` = \
         `?consistency=local` on Deimos, plain GET on etcd. `mixed` = 90% lease reads, 10% PUTs.",
        a.rounds, a.duration, a.keys, a.value_size
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
    // A watch or scale run alone has no request cells: no tables or targets for them.
    if results.is_empty() {
        super::watch::report(&mut o, a, &extra.watches);
        super::scale::report(&mut o, a, &extra.scales);
        raw_json(&mut o, results, extra);
        return o;
    }

    let _ = writeln!(o, "\n## Results\n");
    let _ = writeln!(
        o,
        "| workload | clients | Deimos ops/s | etcd ops/s | Deimos/etcd | Deimos p50 ms | etcd p50 ms \
         | Deimos p99 ms | etcd p99 ms | errors Deimos/etcd |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for w in request_workloads(a) {
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
                ratio(paired(
                    results,
                    (System::Deimos, w, c),
                    (System::Etcd, w, c)
                )),
                cell(g(d, "/latency_ms/p50"), 3),
                cell(g(e, "/latency_ms/p50"), 3),
                cell(g(d, "/latency_ms/p99"), 3),
                cell(g(e, "/latency_ms/p99"), 3),
                errs(d),
                errs(e),
            );
        }
    }

    if a.rounds > 1 {
        let _ = writeln!(
            o,
            "\nEach cell above is the median-throughput run of {} rounds (its latencies and CPU \
             figures come from that same run); each ratio is the median of the per-round ratios. \
             Every round, in round order:\n",
            a.rounds
        );
        let _ = writeln!(
            o,
            "| workload | clients | Deimos ops/s | etcd ops/s | Deimos/etcd |"
        );
        let _ = writeln!(o, "|---|---:|---|---|---|");
        for w in request_workloads(a) {
            for &c in &a.clients {
                let per_round: Vec<String> =
                    round_ratios(results, (System::Deimos, w, c), (System::Etcd, w, c))
                        .into_iter()
                        .map(|r| format!("{r:.2}x"))
                        .collect();
                let _ = writeln!(
                    o,
                    "| {} | {c} | {} | {} | {} |",
                    w.label(),
                    all_throughputs(results, System::Deimos, w, c),
                    all_throughputs(results, System::Etcd, w, c),
                    per_round.join(", "),
                );
            }
        }
    }

    ceiling_table(&mut o, a, results);
    super::watch::report(&mut o, a, &extra.watches);
    super::scale::report(&mut o, a, &extra.scales);

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
    for w in request_workloads(a) {
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
    let p99 = |s, w, c| find(results, s, w, c).and_then(|r| r.f("/latency_ms/p99"));
    use BenchWorkload::*;
    use System::*;
    check(
        &mut o,
        "Deimos lease reads vs Deimos quorum reads, 16 clients",
        results,
        ((Deimos, GetLease, 16), (Deimos, GetQuorum, 16)),
        5.0,
    );
    check(
        &mut o,
        "Deimos lease reads vs etcd plain GET, 16 clients",
        results,
        ((Deimos, GetLease, 16), (Etcd, GetLease, 16)),
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
            results,
            ((Deimos, GetQuorum, c), (Etcd, GetQuorum, c)),
            1.5,
        );
        check(
            &mut o,
            &format!("PUTs vs etcd, {c} clients"),
            results,
            ((Deimos, Put, c), (Etcd, Put, c)),
            1.2,
        );
    }

    latency_and_scale_targets(&mut o, results);
    raw_json(&mut o, results, extra);
    o
}

/// Every run's JSON as the client printed it, with where it ran.
fn raw_json(o: &mut String, results: &[RunResult], extra: &Extra) {
    let _ = writeln!(o, "\n## Raw JSON (`deimosctl -o json bench ...`)\n");
    let _ = writeln!(o, "```json");
    let raw: Vec<Value> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "round": r.round,
                "system": r.system.name(),
                "workload": r.workload.label(),
                "clients": r.clients,
                "leader_cpu_s": r.leader_cpu_s,
                "followers_cpu_s": r.followers_cpu_s,
                "result": r.json,
            })
        })
        .chain(super::watch::raw(&extra.watches))
        .chain(super::scale::raw(&extra.scales))
        .collect();
    let _ = writeln!(
        o,
        "{}",
        serde_json::to_string_pretty(&raw).unwrap_or_else(|e| format!("\"{e}\""))
    );
    let _ = writeln!(o, "```");
}

/// Deimos lease reads beside the bare hyper server answering the same response, if it ran.
fn ceiling_table(o: &mut String, a: &BenchArgs, results: &[RunResult]) {
    if !results.iter().any(|r| r.system == System::Ceiling) {
        return;
    }
    let w = BenchWorkload::GetLease;
    let _ = writeln!(
        o,
        "\n## Ceiling: Deimos lease reads vs a bare hyper server\n"
    );
    let _ = writeln!(
        o,
        "`deimos-bench-ceiling` answers every request with the body and headers of a Deimos lease \
         read of the first bench key (same runtime, allocator and HTTP settings as `deimos`), \
         driven by the same client. The gap is what Deimos costs per read; where the ratio is \
         near 1, the client, not the server, is the limit on this machine, and the server CPU \
         per read (the leader's, and the ceiling process's) tells them apart.\n"
    );
    let _ = writeln!(
        o,
        "| clients | Deimos ops/s | hyper ops/s | Deimos/hyper | Deimos p50 ms | hyper p50 ms \
         | Deimos p99 ms | hyper p99 ms | Deimos server µs/op | hyper server µs/op \
         | every round Deimos/hyper |"
    );
    let _ = writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for &c in &a.clients {
        let d = find(results, System::Deimos, w, c);
        let h = find(results, System::Ceiling, w, c);
        let g = |r: Option<&RunResult>, p: &str| r.and_then(|r| r.f(p));
        let rounds: Vec<String> =
            round_ratios(results, (System::Deimos, w, c), (System::Ceiling, w, c))
                .into_iter()
                .map(|r| format!("{r:.2}x"))
                .collect();
        let cpu = |r: Option<&RunResult>| cell(r.and_then(|r| r.per_op_us(r.leader_cpu_s)), 1);
        let _ = writeln!(
            o,
            "| {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(g(d, "/throughput_ops"), 0),
            cell(g(h, "/throughput_ops"), 0),
            ratio(paired(
                results,
                (System::Deimos, w, c),
                (System::Ceiling, w, c)
            )),
            cell(g(d, "/latency_ms/p50"), 3),
            cell(g(h, "/latency_ms/p50"), 3),
            cell(g(d, "/latency_ms/p99"), 3),
            cell(g(h, "/latency_ms/p99"), 3),
            cpu(d),
            cpu(h),
            rounds.join(", "),
        );
    }
}

/// The p50 of `num` over the p50 of `den`, paired by round like [`paired`]: the median of the
/// per-round latency ratios (lower is better for Deimos).
pub(super) fn paired_p50(results: &[RunResult], num: Cell, den: Cell) -> Option<f64> {
    let p50 = |(s, w, c): Cell, round| {
        cell_runs(results, s, w, c)
            .into_iter()
            .find(|r| r.round == round)
            .and_then(|r| r.f("/latency_ms/p50"))
    };
    let mut r: Vec<f64> = results
        .iter()
        .map(|r| r.round)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter_map(|round| match (p50(num, round), p50(den, round)) {
            (Some(n), Some(d)) if d > 0.0 => Some(n / d),
            _ => None,
        })
        .collect();
    r.sort_by(f64::total_cmp);
    r.get(r.len().checked_sub(1)? / 2).copied()
}

/// Issue 21's targets: single-client latency, throughput at 16 clients, and lease reads
/// against the ceiling.
fn latency_and_scale_targets(o: &mut String, results: &[RunResult]) {
    use BenchWorkload::*;
    use System::*;
    for (w, what) in [(Put, "PUT"), (GetQuorum, "quorum GET")] {
        let line = match paired_p50(results, (Deimos, w, 1), (Etcd, w, 1)) {
            Some(r) if r <= 0.8 => format!("{r:.2}x (target <= 0.8x): met"),
            Some(r) => format!("{r:.2}x (target <= 0.8x): **missed**"),
            None => "n/a (target <= 0.8x): not measured".into(),
        };
        let _ = writeln!(o, "- {what} p50 latency at 1 client, Deimos/etcd: {line}");
    }
    check(
        o,
        "PUTs vs etcd, 16 clients (issue 21)",
        results,
        ((Deimos, Put, 16), (Etcd, Put, 16)),
        1.8,
    );
    check(
        o,
        "quorum reads vs etcd, 16 clients (issue 21)",
        results,
        ((Deimos, GetQuorum, 16), (Etcd, GetQuorum, 16)),
        2.0,
    );
    for c in [16, 64] {
        check(
            o,
            &format!("lease reads vs the bare hyper ceiling, {c} clients"),
            results,
            ((Deimos, GetLease, c), (Ceiling, GetLease, c)),
            0.85,
        );
    }
}

/// The workloads that run as request cells (watch has its own section).
fn request_workloads(a: &BenchArgs) -> impl Iterator<Item = BenchWorkload> + '_ {
    a.workloads.iter().copied().filter(|w| !w.own_clusters())
}
