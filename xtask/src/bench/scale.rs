//! The scale cell of `cargo xtask bench` (workload `scale`): a large key space, on both systems.
//!
//! On a fresh 3-member cluster of each system, in this order: ingest `--keys` keys (one PUT
//! each, 64 clients, against the leader); the leader's RSS growth per key and its data dir's
//! size; a recursive listing of them all from the leader; a follower killed (SIGKILL) and
//! started again, timed until a read there reports the store index the leader reached; a fourth
//! member added through the members API and started empty, timed until a local read there
//! reports that index — by then the log below the ingest has been compacted on both systems, so
//! it catches up from a snapshot.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::cluster::*;
use super::report::cell;
use super::*;

/// Clients of the ingest: enough to batch on both systems.
const INGEST_CLIENTS: &str = "64";
/// Longest wait for a listing, a restart or a catch-up.
const PATIENCE: Duration = Duration::from_secs(600);
/// How often a restarted or new member is asked whether it serves.
const POLL: Duration = Duration::from_millis(20);

pub(crate) struct ScaleResult {
    pub(crate) round: u32,
    pub(crate) system: System,
    pub(crate) json: Value,
}

/// The scale cell of one round on each system.
pub(super) fn run_round(
    deimos: &Path,
    ctl: &Path,
    base: &Path,
    a: &BenchArgs,
    round: u32,
    out: &mut Vec<ScaleResult>,
) -> Result<()> {
    for system in a.systems() {
        let mut cluster = match system {
            System::Deimos => start_deimos(deimos, base, a.keep)?,
            _ => start_etcd(base, a.keep)?,
        };
        let json = measure(&mut cluster, deimos, ctl, a)?;
        out.push(ScaleResult {
            round,
            system,
            json,
        });
    }
    Ok(())
}

fn rss_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Bytes of the files below `dir` (what `du --apparent-size -b` counts).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The store index a member reports (`X-Etcd-Index`) on a read of `key` served from its own
/// state, if it answers 200.
fn local_index(system: System, url: &str, key: &str) -> Option<u64> {
    let query = match system {
        System::Deimos => "?consistency=local",
        _ => "",
    };
    let r = deimos_tests::http::Http::new()
        .request(
            "GET",
            &format!("{url}/v2/keys{key}{query}"),
            None,
            Duration::from_secs(2),
        )
        .ok()?;
    (r.status == 200)
        .then(|| r.header("x-etcd-index")?.parse().ok())
        .flatten()
}

/// Seconds until `ok` holds, polling; an error after [`PATIENCE`].
fn time_until(what: &str, cluster: &mut Cluster, mut ok: impl FnMut() -> bool) -> Result<f64> {
    let start = Instant::now();
    loop {
        if ok() {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > PATIENCE {
            return Err(format!(
                "{what}: not within {PATIENCE:?}\n{}",
                cluster.log_tails()
            ));
        }
        cluster.check_alive()?;
        std::thread::sleep(POLL);
    }
}

fn measure(cluster: &mut Cluster, deimos: &Path, ctl: &Path, a: &BenchArgs) -> Result<Value> {
    let system = cluster.system;
    let leader = find_leader(cluster, ctl)?;
    let li = cluster
        .client_urls
        .iter()
        .position(|u| *u == leader)
        .ok_or("the leader is not a member")?;
    let leader_pid = cluster.members[li].1.id();
    let leader_data = cluster.dir.join(format!("{}-data", cluster.members[li].0));
    let rss_before = rss_kb(leader_pid);

    eprintln!("  {}: ingesting {} keys ...", system.name(), a.keys);
    let out = Command::new(ctl)
        .args(["--endpoints", &leader, "-o", "json", "--timeout", "30s"])
        .args(["bench", "put", "--no-progress", "--clients", INGEST_CLIENTS])
        .args([
            "--total",
            &a.keys.to_string(),
            "--keys",
            &a.keys.to_string(),
        ])
        .args(["--value-size", &a.value_size.to_string()])
        .args(["--target", system.name()])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("ingest: {e}"))?;
    let ingest: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("ingest output is not JSON ({e}): {}", out.status))?;
    // A few timed-out writes under a million-key load happen (etcd 3.4 answers "request timed
    // out" while it snapshots); they are reported, and only a run that lost more is refused.
    let errors = ingest
        .get("errors")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    if errors > a.keys / 100 {
        return Err(format!(
            "{} ingest had {errors} errors: {ingest}",
            system.name()
        ));
    }
    // Let a background commit or compaction the ingest started finish before memory is read.
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss_kb(leader_pid);
    let data_bytes = dir_bytes(&leader_data);
    // Any key's read carries the store index; this one exists on both systems (`find_leader`
    // wrote it) and is tiny. Every later check waits for a member to reach this index.
    let last_key = "/xtask/ready".to_string();
    let index = local_index(system, &leader, &last_key).ok_or("the leader lost a key")?;

    eprintln!("  {}: listing ...", system.name());
    let t = Instant::now();
    let (status, listing_bytes) = deimos_tests::http::Http::new()
        .get_discarding(&format!("{leader}/v2/keys/bench?recursive=true"), PATIENCE)?;
    let listing_s = t.elapsed().as_secs_f64();
    if status != 200 {
        return Err(format!("listing: HTTP {status}"));
    }

    eprintln!("  {}: restarting a follower ...", system.name());
    let fi = (li + 1) % cluster.members.len();
    let follower = cluster.client_urls[fi].clone();
    cluster.restart(fi)?;
    let restart_s = time_until("restart", cluster, || {
        local_index(system, &follower, &last_key).is_some_and(|i| i >= index)
    })?;

    eprintln!("  {}: adding a member ...", system.name());
    let catch_up_s = join(cluster, deimos, &leader, (index, &last_key))?;

    Ok(json!({
        "keys": a.keys,
        "value_size": a.value_size,
        "ingest": ingest,
        "ingest_ops": ingest.get("throughput_ops"),
        "ingest_errors": errors,
        "leader_rss_before_kb": rss_before,
        "leader_rss_after_kb": rss_after,
        "rss_per_key_bytes": match (rss_before, rss_after) {
            (Some(b), Some(a2)) => Some((a2 as f64 - b as f64) * 1024.0 / a.keys as f64),
            _ => None,
        },
        "data_dir_bytes": data_bytes,
        "data_bytes_per_key": data_bytes as f64 / a.keys as f64,
        "listing_s": listing_s,
        "listing_bytes": listing_bytes,
        "restart_to_serving_s": restart_s,
        "new_member_catch_up_s": catch_up_s,
    }))
}

/// Add a fourth member through the members API, start it empty, and time it from its start
/// until a local read there shows store index `index` or later.
fn join(
    cluster: &mut Cluster,
    deimos: &Path,
    leader: &str,
    (index, key): (u64, &str),
) -> Result<f64> {
    let system = cluster.system;
    let (name, client, peer) = match system {
        System::Deimos => ("n4", 4104u16, 7104u16),
        _ => ("e4", 4204, 7204),
    };
    ensure_port_free(client)?;
    ensure_port_free(peer)?;
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let body = json!({ "peerURLs": [peer_url] }).to_string();
    // Both refuse a change while a member was (re)connected only moments ago — the follower
    // just restarted — etcd with a 500 ("unhealthy cluster"), Deimos with a 409: retry a while.
    let started = Instant::now();
    loop {
        let r = deimos_tests::http::Http::new().request(
            "POST",
            &format!("{leader}/v2/members"),
            Some(("application/json", body.as_bytes())),
            Duration::from_secs(10),
        )?;
        match r.status {
            201 => break,
            409 | 500 | 503 if started.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(500));
            }
            s => return Err(format!("member add: HTTP {s} {}", r.body.trim())),
        }
    }
    // The founders' `name=peer` list, from the first member's command line, plus the new one.
    let list_flag = match system {
        System::Deimos => "--bootstrap-config",
        _ => "--initial-cluster",
    };
    let founders = cluster
        .commands
        .first()
        .and_then(|(_, args)| {
            let at = args.iter().position(|a| a == list_flag)?;
            args.get(at + 1).cloned()
        })
        .ok_or("no member list in the founders' flags")?;
    let initial = format!("{founders},{name}={peer_url}");
    let m = MemberSpec {
        name: name.to_string(),
        client: client_url.clone(),
        peer: peer_url,
        data: cluster.dir.join(format!("{name}-data")),
    };
    let (bin, args) = match system {
        System::Deimos => (deimos.to_path_buf(), deimos_args(&m, &initial, true)),
        _ => ("etcd".into(), etcd_args(&m, &initial, true)),
    };
    let child = spawn_member(system, &bin, name, &args, &cluster.dir)?;
    cluster.members.push((name.to_string(), child));
    cluster.commands.push((bin, args));
    time_until("new member catch-up", cluster, || {
        local_index(system, &client_url, key).is_some_and(|i| i >= index)
    })
}

/// The scale section of the report; nothing when the cell did not run.
pub(super) fn report(o: &mut String, a: &BenchArgs, rs: &[ScaleResult]) {
    if rs.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n## Scale: {} keys\n", a.keys);
    let _ = writeln!(
        o,
        "A fresh 3-member cluster of each system: {} keys of {} bytes written once each by 64 \
         clients against the leader; the leader's RSS growth and data dir; a recursive listing \
         of all keys from the leader; a follower killed with SIGKILL and started again (until a \
         read there reports the store index the leader had after the ingest); a fourth member \
         added and started empty (until a local read there reports that index: a snapshot, \
         then the log's tail). Failed PUTs (timed out under the load) are counted, not retried. With several \
         rounds, each figure is the median of the rounds.\n",
        a.keys, a.value_size
    );
    let _ = writeln!(o, "| measure | Deimos | etcd | Deimos/etcd |");
    let _ = writeln!(o, "|---|---:|---:|---:|");
    let rows: [(&str, &str, f64, usize); 9] = [
        ("ingest, PUT/s", "/ingest_ops", 1.0, 0),
        ("ingest, failed PUTs", "/ingest_errors", 1.0, 0),
        (
            "leader RSS after ingest, MiB",
            "/leader_rss_after_kb",
            1.0 / 1024.0,
            1,
        ),
        (
            "leader RSS growth per key, bytes",
            "/rss_per_key_bytes",
            1.0,
            0,
        ),
        (
            "leader data dir, MiB",
            "/data_dir_bytes",
            1.0 / 1048576.0,
            1,
        ),
        ("recursive listing of all keys, s", "/listing_s", 1.0, 2),
        (
            "recursive listing size, MiB",
            "/listing_bytes",
            1.0 / 1048576.0,
            1,
        ),
        (
            "follower restart to serving, s",
            "/restart_to_serving_s",
            1.0,
            2,
        ),
        (
            "new member caught up (snapshot), s",
            "/new_member_catch_up_s",
            1.0,
            2,
        ),
    ];
    for (label, ptr, scale, dec) in rows {
        let med = |s: System| {
            let mut v: Vec<f64> = rs
                .iter()
                .filter(|r| r.system == s)
                .filter_map(|r| r.json.pointer(ptr).and_then(Value::as_f64))
                .collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len().checked_sub(1)? / 2).map(|x| x * scale)
        };
        let (d, e) = (med(System::Deimos), med(System::Etcd));
        let r = match (d, e) {
            (Some(d), Some(e)) if e > 0.0 => Some(d / e),
            _ => None,
        };
        let _ = writeln!(
            o,
            "| {label} | {} | {} | {} |",
            cell(d, dec),
            cell(e, dec),
            super::report::ratio(r)
        );
    }
}

/// Raw JSON of every scale run, for the report's appendix.
pub(super) fn raw(rs: &[ScaleResult]) -> Vec<Value> {
    rs.iter()
        .map(|r| json!({"round": r.round, "system": r.system.name(), "workload": "scale", "result": r.json}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            a: BenchArgs,
        }
        let a =
            <T as clap::Parser>::try_parse_from(["x", "--keys", "1000", "--workloads", "scale"])
                .expect("args")
                .a;
        let mk = |round, system, ops: f64, restart: f64| ScaleResult {
            round,
            system,
            json: json!({"ingest_ops": ops, "restart_to_serving_s": restart,
                "data_dir_bytes": 2097152}),
        };
        let rs = [
            mk(1, System::Deimos, 30000.0, 1.0),
            mk(2, System::Deimos, 10000.0, 3.0),
            mk(3, System::Deimos, 20000.0, 2.0),
            mk(1, System::Etcd, 10000.0, 4.0),
        ];
        let mut o = String::new();
        report(&mut o, &a, &rs);
        assert!(o.contains("## Scale: 1000 keys"), "{o}");
        assert!(
            o.contains("| ingest, PUT/s | 20000 | 10000 | 2.00x |"),
            "{o}"
        );
        assert!(
            o.contains("| follower restart to serving, s | 2.00 | 4.00 | 0.50x |"),
            "{o}"
        );
        assert!(
            o.contains("| leader data dir, MiB | 2.0 | 2.0 | 1.00x |"),
            "{o}"
        );
        assert!(
            o.contains("| recursive listing of all keys, s | - | - | n/a |"),
            "{o}"
        );
        let mut empty = String::new();
        report(&mut empty, &a, &[]);
        assert!(empty.is_empty());
        let dir = std::env::temp_dir().join(format!("xtask-scale-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).expect("dir");
        std::fs::write(dir.join("a"), [0u8; 10]).expect("a");
        std::fs::write(dir.join("sub").join("b"), [0u8; 5]).expect("b");
        assert_eq!(dir_bytes(&dir), 15);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
