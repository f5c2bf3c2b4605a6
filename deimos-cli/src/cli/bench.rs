//! `bench` arguments.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use super::{parse_duration, parse_ratio};

/// How a bench read is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadMode {
    /// Plain GET: a lease read on a Deimos leader.
    Lease,
    /// `?quorum=true`: through consensus.
    Quorum,
    /// `?consistency=local` on Deimos; a plain GET on etcd (already local there).
    Local,
}

/// Which server the bench talks to; only changes how `local` reads are spelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Deimos,
    Etcd,
}

#[derive(Clone, Debug, Args)]
pub struct BenchOpts {
    /// Concurrent clients, each with its own keep-alive connection.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub clients: u32,
    /// Total requests (default 10000 when --duration is not given).
    #[arg(long, conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    pub total: Option<u64>,
    /// Run for this long instead of a fixed count (e.g. 10s).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(0..=16_777_216))]
    pub value_size: u64,
    /// Key prefix (directory) for bench keys.
    #[arg(long, default_value = "/bench")]
    pub prefix: String,
    /// Spread clients over all endpoints instead of the first reachable one.
    #[arg(long)]
    pub all_endpoints: bool,
    /// Server kind.
    #[arg(long, value_enum, default_value_t = Target::Deimos)]
    pub target: Target,
    /// Do not draw the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Skip writing the keys before read workloads.
    #[arg(long)]
    pub no_prefill: bool,
    /// Runtime worker threads for the load generator (0 = one per CPU). On a machine shared with
    /// the server under test, fewer threads leave more CPU to the server and avoid cross-thread
    /// wake-ups.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub threads: u16,
}

impl Workload {
    pub fn opts(&self) -> &BenchOpts {
        match self {
            Workload::Put(o) => o,
            Workload::Get { opts, .. } | Workload::Mixed { opts, .. } => opts,
        }
    }
}

#[derive(Clone, Debug, Subcommand)]
pub enum Workload {
    /// PUT <prefix>/k<i % keys>.
    Put(BenchOpts),
    /// GET <prefix>/k<i % keys> after prefilling the keys.
    Get {
        #[arg(long, value_enum, default_value_t = ReadMode::Lease)]
        mode: ReadMode,
        #[command(flatten)]
        opts: BenchOpts,
    },
    /// Reads and writes mixed at random.
    Mixed {
        /// Fraction of requests that are reads.
        #[arg(long, default_value = "0.9", value_parser = parse_ratio)]
        read_ratio: f64,
        #[arg(long, value_enum, default_value_t = ReadMode::Lease)]
        mode: ReadMode,
        #[command(flatten)]
        opts: BenchOpts,
    },
}
