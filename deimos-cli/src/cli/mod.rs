//! Command-line definitions (clap derive). Validation that clap can do happens here, so bad input
//! exits with status 1 (as etcdctl v2) before any request is sent.

mod bench;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

pub use self::bench::{BenchOpts, ReadMode, Target, WatchMode, WatchOpts, WatchScope, Workload};
use crate::http::Endpoint;
use crate::output::Output;

pub const EXIT_CODES_HELP: &str = "\
Exit status (the same as etcdctl v2's):
  0  success
  1  bad arguments, or an unusable file (a corrupt or truncated snapshot)
  2  cluster unreachable: no endpoint accepted a connection, or the request timed out
  3  authentication refused (HTTP 401, etcd error 110)
  4  the server answered with an error, or with something unexpected; etcd errors print as
     'Error: <errorCode>: <message> (<cause>) [<index>]', e.g. 101 for a failed compare-and-swap
  5  cluster-health: the cluster is not healthy

Endpoints come from --endpoints, else DEIMOSCTL_ENDPOINTS, else etcdctl's ETCDCTL_ENDPOINTS or
ETCDCTL_ENDPOINT.";

/// The exit status for a clap error: 0 for `--help`/`--version` (printed to stdout), else 1.
pub fn usage_exit_code(e: &clap::Error) -> u8 {
    if e.use_stderr() {
        crate::client::EXIT_USAGE
    } else {
        crate::client::EXIT_OK
    }
}

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

pub(crate) fn parse_ratio(s: &str) -> Result<f64, String> {
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
        short = 'C',
        alias = "peers",
        alias = "endpoint",
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
        alias = "ca-file",
        id = "tls_cacert",
        value_name = "FILE",
        global = true,
        env = "DEIMOSCTL_CACERT"
    )]
    pub cacert: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for servers that require one (mutual TLS).
    #[arg(
        long = "cert",
        alias = "cert-file",
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
        alias = "key-file",
        id = "tls_key",
        value_name = "FILE",
        global = true,
        env = "DEIMOSCTL_KEY"
    )]
    pub key: Option<std::path::PathBuf>,
    /// Credentials sent with every request (HTTP basic auth): USER or USER:PASSWORD; without a
    /// password it is asked for on the terminal (never read from a pipe).
    #[arg(
        long,
        short = 'u',
        global = true,
        value_name = "USER[:PASSWORD]",
        env = "DEIMOSCTL_USERNAME"
    )]
    pub username: Option<String>,
    /// Accepted for etcdctl v2 scripts and ignored: deimosctl never syncs the endpoint list.
    #[arg(long, global = true, hide = true)]
    pub no_sync: bool,
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
    /// Check every member's /health, as etcdctl v2 does (exit 5 unless all are healthy).
    ClusterHealth,
    /// Leader lease state of each member.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Users of the v2 auth (etcdctl's `user`).
    #[command(subcommand)]
    User(crate::auth::UserCommand),
    /// Roles and their key permissions (etcdctl's `role`).
    #[command(subcommand)]
    Role(crate::auth::RoleCommand),
    /// Turn auth on or off (etcdctl's `auth`).
    #[command(subcommand)]
    Auth(crate::auth::AuthCommand),
    /// Load generator: many concurrent HTTP/1.1 keep-alive clients.
    #[command(subcommand)]
    Bench(Workload),
    /// Backups: save a consistent snapshot of a running member, check one, restore a new
    /// cluster from one (as etcdctl v3's `snapshot`).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Back up a stopped member's data directory (etcdctl v2's `backup`): writes
    /// BACKUP_DIR/deimos.snapshot, a snapshot file as `snapshot save` writes, checked whole.
    /// Start a new cluster from it with `snapshot restore`. A running member's store is locked:
    /// use `snapshot save` for a running cluster.
    Backup {
        /// The member's data directory (holding deimos.redb).
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// Where to write deimos.snapshot (created if absent).
        #[arg(long)]
        backup_dir: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stream a consistent snapshot from the first reachable endpoint (GET /v2/snapshot) into
    /// FILE. It holds every write acknowledged before the request. The file is written as
    /// FILE.part and renamed only once it has been checked whole.
    Save { file: std::path::PathBuf },
    /// Check a snapshot file whole and print its hash, index, term, keys and size; a corrupt
    /// or truncated file is refused (exit status 1).
    Status { file: std::path::PathBuf },
    /// Create a new member's data directory from a snapshot: the member starts as part of a
    /// new cluster (new cluster id, the --initial-cluster membership) holding every key of the
    /// snapshot. Restore every member of the new cluster from the same file with the same
    /// --initial-cluster and --initial-cluster-token, each with its own --name and --data-dir,
    /// then start them with those flags.
    Restore {
        file: std::path::PathBuf,
        /// The data directory to create (must not exist, or be empty).
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// This member's name in --initial-cluster.
        #[arg(long)]
        name: String,
        /// The new cluster's members: `name=peerURL,...` (Deimos's --bootstrap-config).
        #[arg(long, alias = "bootstrap-config")]
        initial_cluster: String,
        /// The new cluster's token (the server's default too); the cluster id derives from it.
        #[arg(long, default_value = "deimos-cluster")]
        initial_cluster_token: String,
        /// This member's peer URLs; when given, they must be its URLs in --initial-cluster.
        #[arg(long, value_delimiter = ',')]
        initial_advertise_peer_urls: Vec<String>,
    },
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
        #[arg(long, short = 'r')]
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
    /// Create a directory, or turn a key into one; an existing directory is refused
    /// (etcd error 102), as with etcdctl v2.
    Setdir {
        key: String,
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Update an existing directory's TTL (prevExist=true); without --ttl the TTL is removed.
    Updatedir {
        key: String,
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Remove an empty directory.
    Rmdir { key: String },
    /// List a directory (default: the root).
    Ls {
        key: Option<String>,
        #[arg(long, short = 'r')]
        recursive: bool,
        /// Sort entries by key.
        #[arg(long)]
        sort: bool,
        /// Append `/` to directories in `-o simple` output (the table always shows it).
        #[arg(short = 'p')]
        slash: bool,
    },
    /// Wait for a change (long poll); print the event.
    Watch {
        key: String,
        /// Keep watching, from each event's modifiedIndex + 1.
        #[arg(long, short = 'f')]
        forever: bool,
        /// Include changes below the key.
        #[arg(long, short = 'r')]
        recursive: bool,
        /// Report events with index > N (waitIndex = N + 1), including past ones still in history.
        #[arg(long)]
        after_index: Option<u64>,
    },
    /// Watch forever and run COMMAND once per change, one at a time, with ETCD_WATCH_ACTION,
    /// ETCD_WATCH_KEY, ETCD_WATCH_VALUE and ETCD_WATCH_MODIFIED_INDEX set. A failing command is
    /// reported and the watch goes on; Ctrl-C (SIGINT) or SIGTERM stops it.
    ExecWatch {
        key: String,
        /// Include changes below the key.
        #[arg(long, short = 'r')]
        recursive: bool,
        /// Start after this index (waitIndex = N + 1), replaying events still in history.
        #[arg(long)]
        after_index: Option<u64>,
        /// The command and its arguments (after `--`, or after the key).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
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
    /// Change a member's peer URLs (PUT /v2/members/<id>).
    Update {
        id: String,
        /// Comma-separated peer URLs.
        #[arg(value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
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

#[cfg(test)]
mod tests;
