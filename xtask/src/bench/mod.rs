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

impl BenchArgs {
    /// The systems compared, Deimos first (`--skip-deimos`, `--skip-etcd`).
    pub(crate) fn systems(&self) -> Vec<System> {
        [
            (System::Deimos, self.skip_deimos),
            (System::Etcd, self.skip_etcd),
        ]
        .into_iter()
        .filter(|(_, skip)| !skip)
        .map(|(s, _)| s)
        .collect()
    }
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
mod tests;
