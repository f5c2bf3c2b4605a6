//! `cargo xtask bench`: Deimos vs etcd 3.4, same client, same machine, same settings.
//!
//! Both systems run as 3-member clusters on loopback with heartbeat 100 ms and election timeout
//! 1000 ms, in fresh temp dirs on the same filesystem, and are driven one after the other (never
//! at the same time, so they do not compete for the CPU) by the same `deimosctl bench` against
//! their leader. The report keeps the machine, versions, settings and raw JSON next to the table
//! so a figure can always be traced back to how it was produced.

pub mod ab;
pub mod auth_cost;
mod cluster;
mod paired;
mod report;
mod runs;
mod scale;
mod watch;

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Args, ValueEnum};

use cluster::*;
use report::*;
use runs::*;

type Result<T> = std::result::Result<T, String>;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Seconds per run (each workload x client count x system is one run).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) duration: u64,
    /// Rounds. Each round starts fresh Deimos and etcd clusters and runs every cell (workload x
    /// client count) on both, back to back. With more than one, the tables show each cell's
    /// median-throughput run, ratios are the median of the per-round ratios (so one disturbed
    /// run on a shared machine does not decide a ratio), and every round is listed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub(crate) rounds: u32,
    /// Client counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) clients: Vec<u32>,
    /// Workloads to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "put,get-lease,get-quorum,get-local,mixed"
    )]
    pub(crate) workloads: Vec<BenchWorkload>,
    /// Watcher counts of the `watch` cells, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) watchers: Vec<u32>,
    /// Writes per second in the `watch` cells (each reaches every watcher).
    #[arg(long, default_value_t = 2.0)]
    pub(crate) watch_rate: f64,
    /// Distinct keys.
    #[arg(long, default_value_t = 1000)]
    pub(crate) keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub(crate) value_size: u64,
    /// Do not run etcd.
    #[arg(long)]
    pub(crate) skip_etcd: bool,
    /// Do not run the ceiling row (a bare hyper server answering a Deimos lease read's response,
    /// run beside the lease-read cells).
    #[arg(long)]
    pub(crate) no_ceiling: bool,
    /// Do not build or run Deimos (etcd only, e.g. while the server is not ready).
    #[arg(long)]
    pub(crate) skip_deimos: bool,
    /// Use the release binaries already built instead of running `cargo build --release`.
    #[arg(long)]
    pub(crate) no_build: bool,
    /// Keep the clusters' temp dirs (data and logs) for inspection.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Report path.
    #[arg(long, default_value = "bench-report.md")]
    pub(crate) out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchWorkload {
    Put,
    GetLease,
    GetQuorum,
    GetLocal,
    Mixed,
    /// Watch fan-out (not in the default list: each of its cells starts fresh clusters).
    Watch,
    /// Ingest `--keys` keys, then memory, disk, listing, restart and a new member's catch-up
    /// (not in the default list: run it with `--keys 1000000`).
    Scale,
}

/// What the cells that start their own clusters measured.
#[derive(Default)]
pub(crate) struct Extra {
    pub(crate) watches: Vec<watch::WatchResult>,
    pub(crate) scales: Vec<scale::ScaleResult>,
}

impl BenchWorkload {
    /// Watch and scale cells start fresh clusters; the others share one per round.
    pub(crate) fn own_clusters(self) -> bool {
        matches!(self, BenchWorkload::Watch | BenchWorkload::Scale)
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            BenchWorkload::Put => "put",
            BenchWorkload::GetLease => "get lease",
            BenchWorkload::GetQuorum => "get quorum",
            BenchWorkload::GetLocal => "get local",
            BenchWorkload::Mixed => "mixed 90% lease reads",
            BenchWorkload::Watch => "watch fan-out",
            BenchWorkload::Scale => "scale",
        }
    }

    /// The `deimosctl bench` arguments for this workload.
    pub(crate) fn args(self) -> Vec<&'static str> {
        match self {
            BenchWorkload::Put => vec!["put"],
            BenchWorkload::GetLease => vec!["get", "--mode", "lease"],
            BenchWorkload::GetQuorum => vec!["get", "--mode", "quorum"],
            BenchWorkload::GetLocal => vec!["get", "--mode", "local"],
            BenchWorkload::Mixed => vec!["mixed", "--read-ratio", "0.9", "--mode", "lease"],
            // Run by `watch::run_round`, with its own arguments.
            BenchWorkload::Watch => vec!["watch"],
            BenchWorkload::Scale => vec!["scale"],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum System {
    Deimos,
    Etcd,
    /// `deimos-bench-ceiling`: a bare hyper server answering the response of a Deimos lease
    /// read, run for the lease-read cells only. What no server in front of a store can beat
    /// with this client on this machine.
    Ceiling,
}

impl System {
    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Deimos => "deimos",
            System::Etcd => "etcd",
            System::Ceiling => "hyper",
        }
    }
}

// ---------------------------------------------------------------------------------------------

pub(crate) fn workspace_root() -> PathBuf {
    // xtask/ sits directly under the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub(crate) fn release_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => {
            let t = PathBuf::from(t);
            if t.is_absolute() { t } else { root.join(t) }.join("release")
        }
        None => root.join("target").join("release"),
    }
}

pub(crate) fn build(root: &Path, with_deimos: bool) -> Result<()> {
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
    let ceiling = bin_dir.join("deimos-bench-ceiling");
    // The ceiling row copies a Deimos lease read, so it runs with Deimos and lease reads only.
    let with_ceiling =
        !a.skip_deimos && !a.no_ceiling && a.workloads.contains(&BenchWorkload::GetLease);
    if with_ceiling && !ceiling.exists() {
        return Err(format!(
            "{} not found (build it or pass --no-ceiling)",
            ceiling.display()
        ));
    }
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
    let fs_type = std::fs::read_to_string("/proc/self/mounts")
        .ok()
        .and_then(|m| mount_fs_type(&m, &base.canonicalize().unwrap_or(base.clone())))
        .unwrap_or_else(|| sh("stat", &["-f", "-c", "%T", &base.display().to_string()]));
    let load_before = loadavg();

    let mut results = Vec::new();
    let mut extra = Extra::default();
    // The request workloads share one cluster per system per round; watch cells start their own.
    let cells: Vec<BenchWorkload> = a
        .workloads
        .iter()
        .copied()
        .filter(|w| !w.own_clusters())
        .collect();
    let mut leaders = Vec::new();
    let mut warnings = Vec::new();
    let outcome = (|| -> Result<()> {
        for round in 1..=a.rounds {
            if a.rounds > 1 {
                eprintln!("round {round} of {}", a.rounds);
            }
            let mut ready = Vec::new();
            if !a.skip_deimos && !cells.is_empty() {
                eprintln!("starting 3-node Deimos ...");
                ready.push(prepare(start_deimos(&deimos, &base, a.keep)?, &ctl, &a)?);
            }
            if !a.skip_etcd && !cells.is_empty() {
                eprintln!("starting 3-node etcd ...");
                ready.push(prepare(start_etcd(&base, a.keep)?, &ctl, &a)?);
            }
            if with_ceiling && !ready.is_empty() {
                eprintln!("starting the bare hyper ceiling ...");
                let c = start_ceiling(&ceiling, &base, &ready[0].leader, a.keep)?;
                ready.push(Prepared::ceiling(c));
            }
            leaders.extend(
                ready
                    .iter()
                    .filter(|p| p.system() != System::Ceiling)
                    .map(|p| (p.system(), p.leader.clone())),
            );
            // Each cell runs on both systems back to back, so a pair shares the machine's
            // state of the moment; who goes first alternates by round.
            if round % 2 == 0 {
                ready.reverse();
            }
            for &w in &cells {
                for &c in &a.clients {
                    for p in &mut ready {
                        if p.system() == System::Ceiling && w != BenchWorkload::GetLease {
                            continue;
                        }
                        run_cell(p, &ctl, &a, (round, w, c), &mut results, &mut warnings)?;
                    }
                }
            }
            // Members are killed and their temp dirs removed before the watch cells start.
            drop(ready);
            if a.workloads.contains(&BenchWorkload::Watch) {
                watch::run_round(&deimos, &ctl, &base, &a, round, &mut extra.watches)?;
            }
            if a.workloads.contains(&BenchWorkload::Scale) {
                scale::run_round(&deimos, &ctl, &base, &a, round, &mut extra.scales)?;
            }
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
    let text = report(&a, &ctx, &results, &extra);
    std::fs::write(&a.out, text).map_err(|e| format!("{}: {e}", a.out.display()))?;
    eprintln!("report written to {}", a.out.display());
    Ok(())
}

/// The filesystem type of the mount holding `path`, from `/proc/self/mounts` (the longest
/// mount point that is a prefix of it). `stat -f` cannot tell ext4 from ext2/ext3.
fn mount_fs_type(mounts: &str, path: &Path) -> Option<String> {
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mnt, fs) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mnt).then(|| (mnt.len(), fs.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
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
        assert_eq!(t.a.rounds, 1);
        assert!(T::try_parse_from(["x", "--rounds", "0"]).is_err());
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
    fn the_median_run_of_each_cell_is_reported() {
        let run = |round, t: f64| RunResult {
            round,
            system: System::Deimos,
            workload: BenchWorkload::Put,
            clients: 16,
            json: serde_json::json!({ "throughput_ops": t }),
            leader_cpu_s: None,
            followers_cpu_s: None,
        };
        let one = [run(1, 5.0)];
        let three = [run(1, 9.0), run(2, 1.0), run(3, 4.0)];
        let four = [run(1, 9.0), run(2, 1.0), run(3, 4.0), run(4, 7.0)];
        let pick =
            |rs: &[RunResult]| find(rs, System::Deimos, BenchWorkload::Put, 16).map(|r| r.round);
        assert_eq!(pick(&one), Some(1));
        assert_eq!(pick(&three), Some(3), "4.0 is the median of 9, 1, 4");
        assert_eq!(pick(&four), Some(3), "the lower middle of an even count");
        assert_eq!(
            find(&three, System::Etcd, BenchWorkload::Put, 16).map(|r| r.round),
            None
        );
        assert_eq!(
            all_throughputs(&three, System::Deimos, BenchWorkload::Put, 16),
            "9, 1, 4"
        );
    }

    #[test]
    fn ratios_pair_runs_of_the_same_round() {
        let run = |system, round, t: f64| RunResult {
            round,
            system,
            workload: BenchWorkload::Put,
            clients: 16,
            json: serde_json::json!({ "throughput_ops": t }),
            leader_cpu_s: None,
            followers_cpu_s: None,
        };
        use System::{Deimos as D, Etcd as E};
        let rs = [
            run(D, 1, 10.0),
            run(E, 1, 10.0),
            run(D, 2, 30.0),
            run(E, 2, 10.0),
            run(D, 3, 20.0),
            run(E, 3, 5.0),
            run(D, 4, 99.0), // etcd missing in round 4
            run(D, 5, 1.0),
            run(E, 5, 0.0), // no ratio to a zero
        ];
        let (d, e) = ((D, BenchWorkload::Put, 16), (E, BenchWorkload::Put, 16));
        assert_eq!(round_ratios(&rs, d, e), [1.0, 3.0, 4.0]);
        // The ratio of the medians (20 / 10) would hide that Deimos led by 3x or more in two
        // of the three paired rounds.
        assert_eq!(paired(&rs, d, e), Some(3.0));
        assert_eq!(paired(&rs[..4], d, e), Some(1.0), "lower middle of two");
        assert_eq!(paired(&rs[6..], d, e), None);
        assert_eq!(ratio(paired(&rs, d, e)), "3.00x");
        assert_eq!(ratio(None), "n/a");
        // The target line judges the paired ratio and shows the other beside it: the median
        // runs are 20 (of 1, 10, 20, 30, 99) and 5 (lower middle of 0, 5, 10, 10).
        let mut o = String::new();
        check(&mut o, "PUTs", &rs, (d, e), 3.5);
        assert_eq!(
            o,
            "- PUTs: 3.00x (target >= 3.5x): **missed** (ratio of the medians: 4.00x)\n"
        );
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
            round: 1,
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
        let mounts = "/dev/vda / ext4 rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n";
        assert_eq!(
            mount_fs_type(mounts, Path::new("/work/x")).as_deref(),
            Some("ext4")
        );
        assert_eq!(
            mount_fs_type(mounts, Path::new("/tmp/b")).as_deref(),
            Some("tmpfs")
        );
        let r = report(&a, &ctx, &results, &Extra::default());
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

    #[test]
    fn ceiling_row_and_latency_targets() {
        let a = T::try_parse_from(["x", "--clients", "1,16", "--workloads", "put,get-lease"])
            .expect("args")
            .a;
        let mk = |s, w, c, round, t: f64, p50: f64| RunResult {
            round,
            system: s,
            workload: w,
            clients: c,
            json: serde_json::json!({"throughput_ops": t, "errors": 0, "ok": 10,
                "latency_ms": {"p50": p50, "p99": p50 * 2.0}}),
            leader_cpu_s: None,
            followers_cpu_s: None,
        };
        use BenchWorkload::{GetLease, Put};
        use System::{Ceiling as H, Deimos as D, Etcd as E};
        let results = vec![
            mk(D, GetLease, 16, 1, 90.0, 0.2),
            mk(H, GetLease, 16, 1, 100.0, 0.1),
            mk(D, GetLease, 16, 2, 80.0, 0.2),
            mk(H, GetLease, 16, 2, 100.0, 0.1),
            // p50 ratios 0.5 and 1.5 per round: the paired figure is the lower middle, 0.5.
            mk(D, Put, 1, 1, 10.0, 0.5),
            mk(E, Put, 1, 1, 10.0, 1.0),
            mk(D, Put, 1, 2, 10.0, 1.5),
            mk(E, Put, 1, 2, 10.0, 1.0),
        ];
        let ctx = Context {
            args_line: "cargo xtask bench".into(),
            etcd_version: "3.4".into(),
            deimos_rev: "abc".into(),
            fs_type: "ext4".into(),
            leaders: vec![],
            load_before: "0".into(),
            load_after: "0".into(),
            warnings: vec![],
        };
        let r = report(&a, &ctx, &results, &Extra::default());
        assert!(
            r.contains("## Ceiling: Deimos lease reads vs a bare hyper server"),
            "{r}"
        );
        assert!(
            r.contains(
                "| 16 | 80 | 100 | 0.80x | 0.200 | 0.100 | 0.400 | 0.200 | - | - | 0.90x, 0.80x |"
            ),
            "{r}"
        );
        assert!(r.contains(
            "- lease reads vs the bare hyper ceiling, 16 clients: 0.80x (target >= 0.85x): **missed**"
        ));
        assert!(
            r.contains("- PUT p50 latency at 1 client, Deimos/etcd: 0.50x (target <= 0.8x): met")
        );
        assert!(r.contains(
            "- quorum GET p50 latency at 1 client, Deimos/etcd: n/a (target <= 0.8x): not measured"
        ));
        assert!(r.contains("\"system\": \"hyper\""), "{r}");
        // Without a ceiling run there is no ceiling section.
        let r = report(&a, &ctx, &results[4..], &Extra::default());
        assert!(!r.contains("## Ceiling"));
    }
}
