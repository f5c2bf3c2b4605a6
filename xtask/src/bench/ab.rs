//! `cargo xtask ab`: is a change within a few percent of the build it replaces?
//!
//! Two 3-node Deimos clusters, one of the baseline binary and one of the candidate, run side
//! by side (idle between runs: a heartbeat every 100 ms) on their own ports and temp dirs. Each
//! workload is run in ABBA-ordered pairs (baseline first in odd pairs, candidate first in even
//! ones) by the same `deimosctl bench`, so that the machine's drift cancels, and the verdict is
//! the median of the per-pair ratios with leader CPU per operation beside it.
//!
//! One cluster differs from the next by more than the pairing removes: which member leads,
//! where its files landed, which peer connection is slow. A/B runs of the same three binaries
//! within one cluster pair were not transitive (ff3d84a->16c9dc0 1.07, 16c9dc0->cabddf3 1.01,
//! ff3d84a->cabddf3 0.93). So the pairs are spread over `--rounds`, each with a fresh cluster
//! of each binary, and the report shows each round's median beside the overall one.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;

use super::cluster::*;
use super::paired::*;
use super::runs::*;
use super::*;

#[derive(Debug, Args)]
pub struct AbArgs {
    /// The `deimos` binary to compare against (e.g. a release build of the previous commit).
    #[arg(long)]
    baseline: PathBuf,
    /// The `deimos` binary judged; default: this tree's release build.
    #[arg(long)]
    candidate: Option<PathBuf>,
    /// Rounds, each with a fresh cluster of each binary.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// ABBA pairs per workload in each round.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pairs: u32,
    #[command(flatten)]
    run: PairedRun,
    /// Report path.
    #[arg(long, default_value = "ab-report.md")]
    out: PathBuf,
}

pub fn run(a: AbArgs) -> Result<()> {
    a.run.check()?;
    install_ctrlc_handler(false);
    let root = workspace_root();
    if !a.run.no_build {
        build(&root, true)?;
    }
    let bin_dir = release_dir(&root);
    let ctl = bin_dir.join("deimosctl");
    let candidate = a
        .candidate
        .clone()
        .unwrap_or_else(|| bin_dir.join("deimos"));
    for b in [&ctl, &a.baseline, &candidate] {
        if !b.exists() {
            return Err(format!("{} not found", b.display()));
        }
    }
    let bench = a.run.bench_args(&a.out);
    let mut pairs = Vec::new();
    let mut per_round = Vec::new();
    for round in 1..=a.rounds {
        eprintln!("round {round} of {}", a.rounds);
        let base = base_dir();
        let outcome = measure(&ctl, [&a.baseline, &candidate], &base, &a, &bench, round);
        let _ = std::fs::remove_dir_all(&base);
        let got = outcome?;
        per_round.push(
            a.run
                .workloads
                .iter()
                .map(|&w| {
                    median(
                        got.iter()
                            .filter(|p| p.workload == w)
                            .filter_map(Pair::ratio)
                            .collect(),
                    )
                })
                .collect::<Vec<_>>(),
        );
        pairs.extend(got);
    }
    let mut report = String::new();
    let _ = writeln!(report, "# A/B: candidate against baseline\n");
    let _ = writeln!(
        report,
        "baseline `{}`, candidate `{}`; {} rounds, each with a fresh 3-node cluster of each \
         binary side by side and {} ABBA pairs x {} s runs; {} clients, 1000 keys, 256-byte \
         values. Ratio = candidate/baseline, median over all pairs.\n",
        a.baseline.display(),
        candidate.display(),
        a.rounds,
        a.pairs,
        a.run.duration,
        a.run.clients
    );
    report.push_str(&tables(&a.run.workloads, &pairs, "baseline", "candidate"));
    let _ = writeln!(report, "\n## Median ratio of each round\n");
    let _ = writeln!(
        report,
        "| round | {} |",
        a.run
            .workloads
            .iter()
            .map(|w| w.label())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(report, "|---:|{}", "---:|".repeat(a.run.workloads.len()));
    for (i, r) in per_round.iter().enumerate() {
        let cells: Vec<String> = r
            .iter()
            .map(|m| m.map_or_else(|| "-".into(), |x| format!("{x:.3}")))
            .collect();
        let _ = writeln!(report, "| {} | {} |", i + 1, cells.join(" | "));
    }
    print!("{report}");
    std::fs::write(&a.out, &report).map_err(|e| format!("{}: {e}", a.out.display()))?;
    eprintln!("report written to {}", a.out.display());
    Ok(())
}

fn measure(
    ctl: &Path,
    bins: [&Path; 2],
    base: &Path,
    a: &AbArgs,
    bench: &BenchArgs,
    round: u32,
) -> Result<Vec<Pair>> {
    let mut prepared = Vec::new();
    for (i, (bin, (prefix, ports))) in bins.into_iter().zip([("a", 4100), ("b", 4300)]).enumerate()
    {
        let dir = base.join(prefix);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        eprintln!("starting 3-node cluster {} ({}) ...", i + 1, bin.display());
        let cluster = start_deimos_on(bin, &dir, false, (prefix, ports, ports + 3000))?;
        prepared.push(prepare(cluster, ctl, bench)?);
    }
    let mut pairs = Vec::new();
    for n in 1..=a.pairs {
        eprintln!("pair {n} of {}", a.pairs);
        let pair = (round - 1) * a.pairs + n;
        for &w in &a.run.workloads {
            let mut got: [Option<RunResult>; 2] = [None, None];
            for side in order(pair) {
                let p = &prepared[side as usize];
                let target = Target {
                    system: System::Deimos,
                    round: pair,
                    leader: &p.leader,
                    members: &p.members,
                    credentials: None,
                };
                got[side as usize] = Some(run_one(ctl, &target, w, a.run.clients, bench)?);
            }
            for p in &prepared {
                if role(System::Deimos, &p.leader).ok().as_deref() != Some("leader") {
                    return Err(format!(
                        "{} lost leadership during pair {pair}; the figures would compare a \
                         leader with a follower",
                        p.leader
                    ));
                }
            }
            if let [Some(base), Some(cand)] = got {
                pairs.push(Pair {
                    pair,
                    workload: w,
                    a: base,
                    b: cand,
                });
            }
        }
    }
    Ok(pairs)
}
