//! Command-line definitions (clap derive). Validation that clap can do happens here, so bad input
//! exits with status 2 before any request is sent.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::http::Endpoint;
use crate::output::Output;

pub const EXIT_CODES_HELP: &str = "\
Exit status:
  0  success
  1  the server answered with an error; etcd errors print as
     'Error: <errorCode>: <message> (<cause>) [<index>]', e.g. 101 for a failed compare-and-swap
  2  bad arguments
  3  unexpected response from the server
  4  cluster unreachable: no endpoint accepted a connection, or the request timed out";

/// The parsed `--endpoints` list (a newtype so clap treats it as one value).
#[derive(Clone, Debug)]
pub struct Endpoints(pub Vec<Endpoint>);

fn parse_endpoints(s: &str) -> Result<Endpoints, String> {
    Endpoint::parse_list(s).map(Endpoints)
}

/// Parses `250ms`, `5s`, `2m` or a bare number of seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 5s, 2m)"))?;
    if !v.is_finite() || v <= 0.0 || v * scale > 1e9 {
        return Err(format!("{s:?}: duration must be positive"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} is not between 0 and 1"))
    }
}

/// deimosctl: administer a Deimos cluster (or any etcd v2 keys API) from the shell.
#[derive(Debug, Parser)]
#[command(name = "deimosctl", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Comma-separated client URLs; the next one is tried when connecting fails.
    #[arg(
        long,
        global = true,
        env = "DEIMOSCTL_ENDPOINTS",
        default_value = "http://127.0.0.1:4001",
        value_parser = parse_endpoints
    )]
    pub endpoints: Endpoints,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Connect and request timeout (500ms, 5s, ...). Watches wait without limit.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// CA certificate (PEM) that signed the servers' certificates; needed for https:// endpoints.
    #[arg(
        long = "cacert",
        id = "tls_cacert",
        value_name = "FILE",
        global = true,
        env = "DEIMOSCTL_CACERT"
    )]
    pub cacert: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for servers that require one (mutual TLS).
    #[arg(
        long = "cert",
        id = "tls_cert",
        value_name = "FILE",
        global = true,
        env = "DEIMOSCTL_CERT"
    )]
    pub cert: Option<std::path::PathBuf>,
    /// Private key (PEM) for --cert.
    // The argument id differs from the flag name: `key` is the key commands' positional argument.
    #[arg(
        long = "key",
        id = "tls_key",
        value_name = "FILE",
        global = true,
        env = "DEIMOSCTL_KEY"
    )]
    pub key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Key(KeyCommand),
    /// Cluster membership.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Cluster health.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Leader lease state of each member.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Load generator: many concurrent HTTP/1.1 keep-alive clients.
    #[command(subcommand)]
    Bench(Workload),
}

/// `--consistency` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Served from the contacted member's state, possibly stale.
    Local,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Local => "local",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print a key's value.
    Get {
        key: String,
        /// Linearizable read through consensus (`?quorum=true`).
        #[arg(long, conflicts_with = "consistency")]
        quorum: bool,
        /// Read the contacted member's local state (`?consistency=local`).
        #[arg(long, value_enum)]
        consistency: Option<Consistency>,
    },
    /// Set a key, optionally as a compare-and-swap.
    Set {
        key: String,
        value: String,
        /// Time to live in seconds.
        #[arg(long)]
        ttl: Option<u64>,
        /// Only if the current value equals this (prevValue).
        #[arg(long)]
        swap_with_value: Option<String>,
        /// Only if the current modifiedIndex equals this (prevIndex).
        #[arg(long)]
        swap_with_index: Option<u64>,
    },
    /// Create a key that must not exist (prevExist=false).
    Mk {
        key: String,
        value: String,
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Update a key that must exist (prevExist=true).
    Update {
        key: String,
        value: String,
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Remove a key or directory.
    Rm {
        key: String,
        /// Remove a directory and everything below it.
        #[arg(long)]
        recursive: bool,
        /// Remove an empty directory.
        #[arg(long)]
        dir: bool,
        /// Only if the current value equals this (compare-and-delete).
        #[arg(long)]
        with_value: Option<String>,
        /// Only if the current modifiedIndex equals this.
        #[arg(long)]
        with_index: Option<u64>,
    },
    /// Create a directory that must not exist.
    Mkdir {
        key: String,
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Remove an empty directory.
    Rmdir { key: String },
    /// List a directory (default: the root).
    Ls {
        key: Option<String>,
        #[arg(long)]
        recursive: bool,
        /// Sort entries by key.
        #[arg(long)]
        sort: bool,
    },
    /// Wait for a change (long poll); print the event.
    Watch {
        key: String,
        /// Keep watching, from each event's modifiedIndex + 1.
        #[arg(long)]
        forever: bool,
        /// Include changes below the key.
        #[arg(long)]
        recursive: bool,
        /// Report events with index > N (waitIndex = N + 1), including past ones still in history.
        #[arg(long)]
        after_index: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List members.
    List,
    /// Add a member (POST /v2/members). Adding a voter is refused while too few members are
    /// active to keep a quorum should the new one never start; add it as a learner instead.
    Add {
        name: String,
        /// Peer URL (the older positional form of --peer-urls).
        #[arg(conflicts_with = "peer_urls")]
        peer_url: Option<String>,
        /// Comma-separated peer URLs of the new member.
        #[arg(long = "peer-urls", value_delimiter = ',')]
        peer_urls: Vec<String>,
        /// Add a non-voting member that replicates the log; `member promote` makes it a voter.
        #[arg(long)]
        learner: bool,
        /// Add a voter even if the cluster could lose its quorum should it never start.
        #[arg(long)]
        force: bool,
    },
    /// Make a learner a voter, once its log has caught up with the leader's.
    Promote {
        id: String,
        /// Promote even if too few voters are active to keep a quorum afterwards.
        #[arg(long)]
        force: bool,
    },
    /// Remove a member by hex ID.
    Remove {
        id: String,
        /// Remove a voter even if too few active voters would remain for a quorum.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// One row per member: role, term, indexes, lease, reachable.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Lease validity and remaining time per member.
    Status,
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("deimosctl").chain(args.iter().copied()))
    }

    #[test]
    fn globals_and_defaults() {
        let c = parse(&["get", "/a"]).expect("parses");
        assert_eq!(c.endpoints.0.len(), 1);
        assert_eq!(c.endpoints.0[0].authority, "127.0.0.1:4001");
        assert_eq!(c.output, Output::Table);
        assert_eq!(c.timeout, Duration::from_secs(5));
        let c = parse(&[
            "--endpoints",
            "http://a:1,http://b:2",
            "-o",
            "json",
            "get",
            "/a",
            "--timeout",
            "250ms",
        ])
        .expect("parses");
        assert_eq!(c.endpoints.0.len(), 2);
        assert_eq!(c.output, Output::Json);
        assert_eq!(c.timeout, Duration::from_millis(250));
    }

    #[test]
    fn key_commands() {
        let c = parse(&["set", "k", "v", "--swap-with-value", "old", "--ttl", "5"]).expect("ok");
        match c.command {
            Command::Key(KeyCommand::Set {
                key,
                value,
                ttl,
                swap_with_value,
                swap_with_index,
            }) => {
                assert_eq!((key.as_str(), value.as_str()), ("k", "v"));
                assert_eq!(ttl, Some(5));
                assert_eq!(swap_with_value.as_deref(), Some("old"));
                assert_eq!(swap_with_index, None);
            }
            other => panic!("wrong command {other:?}"),
        }
        assert!(parse(&["get", "k", "--quorum", "--consistency", "local"]).is_err());
        assert!(parse(&["get", "k", "--consistency", "strong"]).is_err());
        assert!(parse(&["set", "k"]).is_err());
        assert!(parse(&["set", "k", "v", "--ttl", "-1"]).is_err());
        assert!(parse(&["watch", "k", "--after-index", "x"]).is_err());
        assert!(parse(&["--endpoints", "ftp://x:1", "get", "k"]).is_err());
        let c = parse(&["ls", "--recursive", "--sort"]).expect("ok");
        assert!(matches!(
            c.command,
            Command::Key(KeyCommand::Ls {
                key: None,
                recursive: true,
                sort: true
            })
        ));
        assert!(matches!(
            parse(&["member", "add", "n4", "http://127.0.0.1:7104"])
                .expect("ok")
                .command,
            Command::Member(MemberCommand::Add { .. })
        ));
    }

    #[test]
    fn member_commands() {
        match parse(&[
            "member",
            "add",
            "n4",
            "--peer-urls",
            "http://a:1,http://b:2",
            "--learner",
        ])
        .expect("ok")
        .command
        {
            Command::Member(MemberCommand::Add {
                name,
                peer_url,
                peer_urls,
                learner,
                force,
            }) => {
                assert_eq!(name, "n4");
                assert_eq!(peer_url, None);
                assert_eq!(peer_urls, ["http://a:1", "http://b:2"]);
                assert!(learner && !force);
            }
            other => panic!("wrong command {other:?}"),
        }
        assert!(parse(&[
            "member",
            "add",
            "n4",
            "http://a:1",
            "--peer-urls",
            "http://b:2"
        ])
        .is_err());
        assert!(matches!(
            parse(&["member", "promote", "abc", "--force"])
                .expect("ok")
                .command,
            Command::Member(MemberCommand::Promote { force: true, .. })
        ));
        assert!(parse(&["member", "promote"]).is_err());
        assert!(matches!(
            parse(&["member", "remove", "abc"]).expect("ok").command,
            Command::Member(MemberCommand::Remove { force: false, .. })
        ));
    }

    #[test]
    fn bad_arguments_exit_2() {
        let e = parse(&["bench", "put", "--clients", "0"]).expect_err("0 clients");
        assert_eq!(e.exit_code(), 2);
        let e = parse(&["frobnicate"]).expect_err("unknown");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn bench_arguments() {
        let c = parse(&[
            "bench",
            "get",
            "--mode",
            "quorum",
            "--clients",
            "64",
            "--duration",
            "3s",
            "--keys",
            "10",
        ])
        .expect("ok");
        match c.command {
            Command::Bench(Workload::Get { mode, opts }) => {
                assert_eq!(mode, ReadMode::Quorum);
                assert_eq!(opts.clients, 64);
                assert_eq!(opts.duration, Some(Duration::from_secs(3)));
                assert_eq!(opts.total, None);
                assert_eq!(opts.keys, 10);
                assert_eq!(opts.target, Target::Deimos);
            }
            other => panic!("wrong command {other:?}"),
        }
        let c = parse(&["bench", "mixed", "--read-ratio", "0.5", "--target", "etcd"]).expect("ok");
        assert!(matches!(
            c.command,
            Command::Bench(Workload::Mixed { read_ratio, .. }) if read_ratio == 0.5
        ));
        assert!(parse(&["bench", "mixed", "--read-ratio", "1.5"]).is_err());
        assert!(parse(&["bench", "put", "--total", "5", "--duration", "1s"]).is_err());
        assert!(parse(&["bench", "put", "--total", "0"]).is_err());
        assert!(parse(&["bench", "get", "--mode", "stale"]).is_err());
        match parse(&["bench", "put", "--threads", "1"])
            .expect("ok")
            .command
        {
            Command::Bench(w) => assert_eq!(w.opts().threads, 1),
            other => panic!("wrong command {other:?}"),
        }
        assert!(parse(&["bench", "put", "--threads", "-1"]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("nan").is_err());
    }
}
