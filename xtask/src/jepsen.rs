//! `cargo xtask jepsen`: long fault-injection runs against a real cluster, checked for
//! linearizability (the CI suite in `tests/tests/faults.rs` runs short ones).
//!
//! Builds the release server, points the test harness at it (`DEIMOS_BIN`), runs, prints the
//! details (offending ops, nemesis log) to stderr and the verdict line to stdout, and exits
//! non-zero unless the history is linearizable.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use deimos_tests::jepsen::{self, JepsenConfig};
use deimos_tests::nemesis::parse_faults;
use deimos_tests::scenarios;

#[derive(Debug, Args)]
pub struct JepsenArgs {
    /// Faults, comma-separated: kill9, kill9-all, stop, partition (isolate the leader), split,
    /// skew, replace (remove a follower, wipe it, add it back empty under the same name and URL).
    #[arg(long, default_value = "kill9,stop,partition,split,skew,replace")]
    faults: String,
    /// Nodes' --snapshot-count: small values compact the log often, so a replaced member (and
    /// any follower that falls behind) catches up by snapshot.
    #[arg(long)]
    snapshot_count: Option<u64>,
    /// Nodes' --snapshot-catchup-entries (entries a compaction keeps for lagging followers).
    #[arg(long)]
    snapshot_catchup_entries: Option<u64>,
    /// Seconds of client traffic.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: u64,
    /// Seed for the nemesis and the clients (default: from the clock, printed in the verdict).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value_t = 6)]
    clients: usize,
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Negative run: break the lease bound (3 s lease, check skipped); expect a VIOLATION.
    #[arg(long)]
    broken_lease: bool,
    /// Negative run: plain GETs use `?consistency=local` (stale reads allowed).
    #[arg(long)]
    local_reads: bool,
    /// Instead of the random run, a scripted scenario.
    #[arg(long, value_enum)]
    scenario: Option<Scenario>,
    /// Use the existing release binary.
    #[arg(long)]
    no_build: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    /// Isolated old leader with a broken lease, read while the majority writes (expect VIOLATION).
    BrokenLease,
    /// The same with the shipped lease and worst-case clock skew within tolerance (expect OK).
    SafeLease,
    /// Unique acknowledged writes must survive kill -9 of single nodes and of all nodes.
    Durability,
}

pub fn run(a: JepsenArgs) -> Result<(), String> {
    let bin = crate::cluster::release_deimos(a.no_build)?;
    // The harness reads DEIMOS_BIN; set before any thread exists.
    std::env::set_var("DEIMOS_BIN", &bin);
    let seed = a.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let report = match a.scenario {
        Some(Scenario::Durability) => {
            let line =
                scenarios::durability_run(a.nodes as usize, Duration::from_secs(a.duration), seed)?;
            println!("{line}");
            return Ok(());
        }
        Some(Scenario::BrokenLease) => scenarios::isolated_leader_scenario(true, false, seed),
        Some(Scenario::SafeLease) => scenarios::isolated_leader_scenario(false, false, seed),
        None => {
            let mut cfg = JepsenConfig {
                nodes: a.nodes as usize,
                faults: parse_faults(&a.faults)?,
                duration: Duration::from_secs(a.duration),
                seed,
                clients: a.clients.max(1),
                keys: a.keys.max(1),
                local_reads: a.local_reads,
                ..JepsenConfig::default()
            };
            if a.broken_lease {
                cfg.extra_args = scenarios::BROKEN_LEASE_ARGS
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            }
            if let Some(n) = a.snapshot_count {
                cfg.extra_args
                    .extend(["--snapshot-count".to_string(), n.to_string()]);
            }
            if let Some(n) = a.snapshot_catchup_entries {
                cfg.extra_args
                    .extend(["--snapshot-catchup-entries".to_string(), n.to_string()]);
            }
            jepsen::run(&cfg)
        }
    };
    eprintln!("{}", report.details);
    println!("{}", report.line);
    if report.verdict.is_ok() {
        Ok(())
    } else {
        Err("the history is not (known to be) linearizable".into())
    }
}
