//! The watch fan-out cells of `cargo xtask bench` (workload `watch`).
//!
//! Each cell — a watcher count, long-poll or stream, one key or a recursive prefix — runs on
//! fresh clusters of both systems: the server RSS per watcher is the growth of the leader's RSS
//! while the watchers wait, and a Go process keeps the heap an earlier cell grew, which would
//! hide what the next cell costs. The watchers and the writer go to the leader.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::cluster::*;
use super::report::cell;
use super::*;

/// The watch styles a cell can use, as `deimosctl bench watch` spells them.
pub(crate) const MODES: [&str; 2] = ["long-poll", "stream"];
pub(crate) const SCOPES: [&str; 2] = ["key", "prefix"];

pub(crate) struct WatchResult {
    pub(crate) round: u32,
    pub(crate) system: System,
    pub(crate) watchers: u32,
    pub(crate) mode: &'static str,
    pub(crate) scope: &'static str,
    pub(crate) json: Value,
}

impl WatchResult {
    fn f(&self, ptr: &str) -> Option<f64> {
        self.json.pointer(ptr).and_then(Value::as_f64)
    }
}

/// Every watch cell of one round, each system on a fresh cluster.
pub(super) fn run_round(
    deimos: &Path,
    ctl: &Path,
    base: &Path,
    a: &BenchArgs,
    round: u32,
    out: &mut Vec<WatchResult>,
) -> Result<()> {
    let mut systems = a.systems();
    if round.is_multiple_of(2) {
        systems.reverse();
    }
    for &watchers in &a.watchers {
        for mode in MODES {
            for scope in SCOPES {
                for &system in &systems {
                    let cluster = match system {
                        System::Deimos => start_deimos(deimos, base, a.keep)?,
                        _ => start_etcd(base, a.keep)?,
                    };
                    let mut cluster = cluster;
                    let leader = find_leader(&mut cluster, ctl)?;
                    let pid = cluster
                        .client_urls
                        .iter()
                        .position(|u| *u == leader)
                        .map(|i| cluster.members[i].1.id())
                        .ok_or("the leader is not a member")?;
                    let json = run_one(ctl, system, &leader, pid, (watchers, mode, scope), a)?;
                    out.push(WatchResult {
                        round,
                        system,
                        watchers,
                        mode,
                        scope,
                        json,
                    });
                    // Dropping the cluster kills it and removes its data before the next cell.
                }
            }
        }
    }
    Ok(())
}

fn run_one(
    ctl: &Path,
    system: System,
    leader: &str,
    pid: u32,
    (watchers, mode, scope): (u32, &str, &str),
    a: &BenchArgs,
) -> Result<Value> {
    let mut cmd = Command::new(ctl);
    cmd.args(["--endpoints", leader, "-o", "json", "--timeout", "10s"])
        .args(["bench", "watch", "--no-progress"])
        .args(["--watchers", &watchers.to_string()])
        .args(["--mode", mode, "--scope", scope])
        .args(["--rate", &a.watch_rate.to_string()])
        .args(["--duration", &format!("{}s", a.duration)])
        .args(["--server-pid", &pid.to_string()])
        .args(["--target", system.name()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let child = cmd
        .spawn()
        .map_err(|e| format!("running {}: {e}", ctl.display()))?;
    let id = child.id();
    register(id, None);
    let res = child.wait_with_output();
    unregister(id);
    let res = res.map_err(|e| format!("running {}: {e}", ctl.display()))?;
    if !res.status.success() {
        return Err(format!(
            "{} watch ({watchers} {mode} {scope}) failed ({}): {}",
            system.name(),
            res.status,
            String::from_utf8_lossy(&res.stdout)
        ));
    }
    let v: Value = serde_json::from_slice(&res.stdout)
        .map_err(|e| format!("watch output is not JSON: {e}"))?;
    let g = |p: &str| v.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
    eprintln!(
        "  {:<6} watch {watchers:>6} {mode:<9} {scope:<6} events {}/{}  p50 {:.3} ms  p99 {:.3} ms  {:.0} B/watcher",
        system.name(),
        g("/events"),
        g("/events_expected"),
        g("/notify_latency_ms/p50"),
        g("/notify_latency_ms/p99"),
        g("/server_rss_per_watcher_bytes"),
    );
    Ok(v)
}

/// The run a cell reports: the median notify p50 of its rounds (the lower middle).
fn pick<'a>(
    rs: &'a [WatchResult],
    system: System,
    (watchers, mode, scope): (u32, &str, &str),
) -> Option<&'a WatchResult> {
    let mut runs: Vec<&WatchResult> = rs
        .iter()
        .filter(|r| {
            r.system == system && r.watchers == watchers && r.mode == mode && r.scope == scope
        })
        .collect();
    runs.sort_by(|x, y| {
        let p = |r: &WatchResult| r.f("/notify_latency_ms/p50").unwrap_or(f64::MAX);
        p(x).total_cmp(&p(y))
    });
    runs.get(runs.len().saturating_sub(1) / 2).copied()
}

/// The watch section of the report; nothing when no watch cell ran.
pub(super) fn report(o: &mut String, a: &BenchArgs, rs: &[WatchResult]) {
    if rs.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n## Watch fan-out\n");
    let _ = writeln!(
        o,
        "`deimosctl bench watch` against the leader of a fresh 3-member cluster per cell: the \
         watchers register (each on its own connection), then one writer sets a value {} times a \
         second for {} s; each value carries its send time, so notify latency is arrival minus \
         send on this machine's clock. Long-poll watchers ask for the next event with \
         `waitIndex`, so none is missed; `key` = all on one key, `prefix` = all on a directory \
         with `recursive=true` while the writer cycles through 64 keys below it. RSS per watcher \
         = (leader RSS with every watcher waiting - before they connected) / watchers. With \
         several rounds, each cell shows the round with the median p50.\n",
        a.watch_rate, a.duration
    );
    let _ = writeln!(
        o,
        "| watchers | mode | scope | Deimos p50 ms | etcd p50 ms | Deimos p99 ms | etcd p99 ms \
         | events Deimos | events etcd | expected (each) | Deimos B/watcher | etcd B/watcher |"
    );
    let _ = writeln!(
        o,
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for &w in &a.watchers {
        for mode in MODES {
            for scope in SCOPES {
                let d = pick(rs, System::Deimos, (w, mode, scope));
                let e = pick(rs, System::Etcd, (w, mode, scope));
                let g = |r: Option<&WatchResult>, p: &str, dec| cell(r.and_then(|r| r.f(p)), dec);
                let expected = match (d, e) {
                    (Some(d), Some(e)) => format!(
                        "{} / {}",
                        g(Some(d), "/events_expected", 0),
                        g(Some(e), "/events_expected", 0)
                    ),
                    (Some(r), None) | (None, Some(r)) => g(Some(r), "/events_expected", 0),
                    (None, None) => "-".into(),
                };
                let _ = writeln!(
                    o,
                    "| {w} | {mode} | {scope} | {} | {} | {} | {} | {} | {} | {expected} | {} | {} |",
                    g(d, "/notify_latency_ms/p50", 3),
                    g(e, "/notify_latency_ms/p50", 3),
                    g(d, "/notify_latency_ms/p99", 3),
                    g(e, "/notify_latency_ms/p99", 3),
                    g(d, "/events", 0),
                    g(e, "/events", 0),
                    g(d, "/server_rss_per_watcher_bytes", 0),
                    g(e, "/server_rss_per_watcher_bytes", 0),
                );
            }
        }
    }
}

/// Raw JSON of every watch run, for the report's appendix.
pub(super) fn raw(rs: &[WatchResult]) -> Vec<Value> {
    rs.iter()
        .map(|r| {
            serde_json::json!({
                "round": r.round,
                "system": r.system.name(),
                "workload": "watch",
                "result": r.json,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_round_by_p50_is_shown() {
        let mk = |round, system, p50: f64| WatchResult {
            round,
            system,
            watchers: 1000,
            mode: "stream",
            scope: "key",
            json: serde_json::json!({"notify_latency_ms": {"p50": p50, "p99": p50 * 2.0},
                "events": 100, "events_expected": 100, "server_rss_per_watcher_bytes": 2048.0}),
        };
        let rs = [
            mk(1, System::Deimos, 9.0),
            mk(2, System::Deimos, 1.0),
            mk(3, System::Deimos, 4.0),
            mk(1, System::Etcd, 5.0),
        ];
        assert_eq!(
            pick(&rs, System::Deimos, (1000, "stream", "key")).map(|r| r.round),
            Some(3)
        );
        assert!(pick(&rs, System::Deimos, (1000, "long-poll", "key")).is_none());
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            a: BenchArgs,
        }
        let a = <T as clap::Parser>::try_parse_from([
            "x",
            "--watchers",
            "1000",
            "--workloads",
            "watch",
        ])
        .expect("args")
        .a;
        let mut o = String::new();
        report(&mut o, &a, &rs);
        assert!(
            o.contains(
                "| 1000 | stream | key | 4.000 | 5.000 | 8.000 | 10.000 | 100 | 100 | 100 / 100 | 2048 | 2048 |"
            ),
            "{o}"
        );
        assert!(o.contains("| 1000 | long-poll | key | - | - |"), "{o}");
        let mut empty = String::new();
        report(&mut empty, &a, &[]);
        assert!(empty.is_empty());
    }
}
