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
    /// The request workloads' options; `None` for `watch`, which has its own.
    pub fn opts(&self) -> Option<&BenchOpts> {
        match self {
            Workload::Put(o) => Some(o),
            Workload::Get { opts, .. } | Workload::Mixed { opts, .. } => Some(opts),
            Workload::Watch(_) => None,
        }
    }

    /// `--threads` of whichever workload this is.
    pub fn threads(&self) -> u16 {
        match self {
            Workload::Watch(w) => w.threads,
            other => other.opts().map_or(0, |o| o.threads),
        }
    }
}

/// How a watcher waits for the next event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WatchMode {
    /// `?wait=true`: one event per request, the next asked for with `waitIndex` (none missed).
    LongPoll,
    /// `?wait=true&stream=true`: one request, events as they happen.
    Stream,
}

/// What the watchers watch and the writer writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchScope {
    /// Every watcher on `<prefix>/key`, which the writer sets.
    Key,
    /// Every watcher on `<prefix>` with `recursive=true`; the writer sets keys below it.
    Prefix,
}

/// `bench watch`: fan-out of one writer's events to many watchers.
#[derive(Clone, Debug, Args)]
pub struct WatchOpts {
    /// Watchers, each on its own connection.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub watchers: u32,
    #[arg(long, value_enum, default_value_t = WatchMode::LongPoll)]
    pub mode: WatchMode,
    #[arg(long, value_enum, default_value_t = WatchScope::Key)]
    pub scope: WatchScope,
    /// Writes per second, once every watcher is registered.
    #[arg(long, default_value = "2", value_parser = parse_rate)]
    pub rate: f64,
    /// How long the writer writes.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Directory the watched keys live in.
    #[arg(long, default_value = "/benchwatch")]
    pub prefix: String,
    /// The server's pid on this machine: its RSS is read before the watchers connect and once
    /// they all wait, to report memory per watcher.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Server kind (reported only).
    #[arg(long, value_enum, default_value_t = Target::Deimos)]
    pub target: Target,
    /// Do not print progress.
    #[arg(long)]
    pub no_progress: bool,
    /// Runtime worker threads for the load generator (0 = one per CPU).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub threads: u16,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 100_000.0 => Ok(r),
        _ => Err(format!("{s:?}: expected writes per second in (0, 100000]")),
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
    /// Watch fan-out: many watchers (long-poll or stream, on one key or a prefix), one writer
    /// at a fixed rate; reports notify latency and, with --server-pid, server memory per watcher.
    Watch(WatchOpts),
}
