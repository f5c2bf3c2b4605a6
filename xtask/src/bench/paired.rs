//! Runs taken in ABBA-ordered pairs, and the table that compares their two sides.
//!
//! On a shared 2-core machine two runs of the same binary differ by more than the few percent
//! a change is judged on, and the difference drifts with time. Pairing the runs (A then B, then
//! B then A) makes that drift cancel, and a median of per-pair ratios keeps one disturbed pair
//! from deciding the result. Leader CPU per operation is shown beside throughput because it
//! moves less with the neighbours of the moment.

use std::fmt::Write as _;

use std::path::Path;

use clap::Args;

use super::runs::RunResult;
use super::{BenchArgs, BenchWorkload};

/// What every paired-run command takes: the runs' length, load and workloads.
#[derive(Debug, Args)]
pub struct PairedRun {
    /// Seconds per run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub(super) duration: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(super) clients: u32,
    /// Workloads, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "put,get-lease"
    )]
    pub(super) workloads: Vec<BenchWorkload>,
    /// Use the release binaries already built instead of running `cargo build --release`.
    #[arg(long)]
    pub(super) no_build: bool,
}

impl PairedRun {
    /// Paired runs compare request workloads; watch fan-out cells start their own clusters.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.workloads.iter().any(|w| w.own_clusters()) {
            return Err("the watch and scale workloads run in `cargo xtask bench` only".into());
        }
        Ok(())
    }

    /// The single-round, Deimos-only bench settings each run of a pair uses.
    pub(super) fn bench_args(&self, out: &Path) -> BenchArgs {
        BenchArgs {
            duration: self.duration,
            rounds: 1,
            clients: vec![self.clients],
            workloads: self.workloads.clone(),
            keys: 1000,
            value_size: 256,
            skip_etcd: true,
            skip_deimos: false,
            no_ceiling: true,
            watchers: Vec::new(),
            watch_rate: 2.0,
            no_build: true,
            keep: false,
            out: out.to_path_buf(),
        }
    }
}

/// One pair's two runs of one workload: `a` is the reference side, `b` the one judged.
pub(super) struct Pair {
    pub(super) pair: u32,
    pub(super) workload: BenchWorkload,
    pub(super) a: RunResult,
    pub(super) b: RunResult,
}

impl Pair {
    /// Throughput of `b` over `a`.
    pub(super) fn ratio(&self) -> Option<f64> {
        Some(self.b.f("/throughput_ops")? / self.a.f("/throughput_ops")?)
    }
}

/// Which side of a pair runs first: A in odd pairs, B in even ones.
pub(super) fn order(pair: u32) -> [Side; 2] {
    if pair % 2 == 1 {
        [Side::A, Side::B]
    } else {
        [Side::B, Side::A]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    A,
    B,
}

pub(super) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

/// The summary table (one row per workload) and every pair's raw figures, in Markdown, with the
/// sides named `a` and `b` in the headers.
pub(super) fn tables(workloads: &[BenchWorkload], pairs: &[Pair], a: &str, b: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| workload | {b}/{a} throughput (median) | min | max | leader CPU us/op {a} | {b} | {b}/{a} |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for &w in workloads {
        let of: Vec<&Pair> = pairs.iter().filter(|p| p.workload == w).collect();
        let ratios: Vec<f64> = of.iter().filter_map(|p| p.ratio()).collect();
        let cpu = |r: &RunResult| r.per_op_us(r.leader_cpu_s);
        let cpu_a = median(of.iter().filter_map(|p| cpu(&p.a)).collect());
        let cpu_b = median(of.iter().filter_map(|p| cpu(&p.b)).collect());
        let lo = ratios.iter().copied().reduce(f64::min);
        let hi = ratios.iter().copied().reduce(f64::max);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            w.label(),
            fmt(median(ratios.clone()), 3),
            fmt(lo, 3),
            fmt(hi, 3),
            fmt(cpu_a, 1),
            fmt(cpu_b, 1),
            fmt(cpu_b.zip(cpu_a).map(|(n, d)| n / d), 3),
        );
    }
    let _ = writeln!(
        s,
        "\n## Runs\n\n| pair | workload | {a} ops/s | {b} ops/s | {b}/{a} | {a} CPU us/op | {b} CPU us/op |"
    );
    let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---:|");
    for p in pairs {
        let cpu = |r: &RunResult| r.per_op_us(r.leader_cpu_s);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            p.pair,
            p.workload.label(),
            fmt(p.a.f("/throughput_ops"), 0),
            fmt(p.b.f("/throughput_ops"), 0),
            fmt(p.ratio(), 3),
            fmt(cpu(&p.a), 1),
            fmt(cpu(&p.b), 1),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn pairs_alternate_which_side_goes_first() {
        assert_eq!(order(1), [Side::A, Side::B]);
        assert_eq!(order(2), [Side::B, Side::A]);
        assert_eq!(order(3), [Side::A, Side::B]);
    }
}
