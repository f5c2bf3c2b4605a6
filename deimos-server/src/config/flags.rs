//! The command line: every flag also settable as a `DEIMOS_<FLAG>` environment variable (the
//! flag wins), with etcd's names, `ETCD_*` variables and YAML config file (see `etcd_compat`).

use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};

use super::timing::parse_duration;

/// `--proxy`: whether this process is a member or a forwarding proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProxyMode {
    /// A normal member of the Raft group.
    Off,
    /// Forward only GET/HEAD; other methods answer 501.
    Readonly,
    /// Forward every client request.
    On,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--bootstrap-config`.
    New,
    /// Join a cluster that already added this member (`deimosctl member add`).
    Existing,
}

/// The `deimos` server. With no flags: one node on 127.0.0.1:4001 (clients) and 7001 (peers),
/// data in `./deimos-data`.
#[derive(Debug, Clone, Parser)]
#[command(name = "deimos", version, about)]
pub struct Flags {
    /// Human-readable name of this member; must match its entry in `--bootstrap-config`.
    #[arg(long, env = "DEIMOS_NAME", default_value = "default")]
    pub name: String,
    /// Where the redb database (Raft log and applied key space) lives.
    #[arg(long, env = "DEIMOS_DATA_DIR", default_value = "./deimos-data")]
    pub data_dir: PathBuf,
    /// URLs to listen on for client traffic (comma-separated).
    #[arg(
        long,
        env = "DEIMOS_LISTEN_CLIENT_URLS",
        default_value = "http://127.0.0.1:4001",
        value_delimiter = ','
    )]
    pub listen_client_urls: Vec<String>,
    /// Client URLs this member advertises to the cluster (default: the listen URLs).
    #[arg(long, env = "DEIMOS_ADVERTISE_CLIENT_URLS", value_delimiter = ',')]
    pub advertise_client_urls: Vec<String>,
    /// URLs to listen on for peer (Raft) traffic.
    #[arg(
        long,
        env = "DEIMOS_LISTEN_PEER_URLS",
        default_value = "http://127.0.0.1:7001",
        value_delimiter = ','
    )]
    pub listen_peer_urls: Vec<String>,
    /// Peer URLs this member advertises (default: the listen URLs). etcd's name:
    /// --initial-advertise-peer-urls.
    #[arg(
        long,
        env = "DEIMOS_ADVERTISE_PEER_URLS",
        alias = "initial-advertise-peer-urls",
        value_delimiter = ','
    )]
    pub advertise_peer_urls: Vec<String>,
    /// Initial cluster: `name=peerURL,name=peerURL,...` (default: this node alone). etcd's
    /// name: --initial-cluster.
    #[arg(long, env = "DEIMOS_BOOTSTRAP_CONFIG", alias = "initial-cluster")]
    pub bootstrap_config: Option<String>,
    #[arg(
        long,
        env = "DEIMOS_INITIAL_CLUSTER_STATE",
        value_enum,
        default_value = "new"
    )]
    pub initial_cluster_state: ClusterState,
    /// A name for the cluster this bootstrap creates (etcd's flag): the cluster id is derived
    /// from it and the founding members' ids, so two clusters bootstrapped from the same URLs
    /// with different tokens refuse each other's peer traffic.
    #[arg(
        long,
        env = "DEIMOS_INITIAL_CLUSTER_TOKEN",
        default_value = "deimos-cluster"
    )]
    pub initial_cluster_token: String,
    /// Time between leader heartbeats (one Raft tick). Overridden by the tick flags (see
    /// --tick-interval).
    #[arg(long, env = "DEIMOS_HEARTBEAT_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// Minimum election timeout (randomised up to twice this). Overridden by
    /// --election-timeout-ticks.
    #[arg(long, env = "DEIMOS_ELECTION_TIMEOUT", default_value = "1000ms", value_parser = parse_duration)]
    pub election_timeout: Duration,
    /// Length of one Raft tick (default: --heartbeat-interval). Precedence: when any of
    /// --tick-interval, --heartbeat-timeout, --election-timeout-ticks is given, timing is
    /// tick x count and the duration flags only fill in what is missing; a duration flag given
    /// explicitly that disagrees with the tick flags is an error.
    #[arg(long, env = "DEIMOS_TICK_INTERVAL", value_parser = parse_duration)]
    pub tick_interval: Option<Duration>,
    /// Heartbeat interval in ticks, as the original Deimos (default: 1).
    #[arg(long, env = "DEIMOS_HEARTBEAT_TIMEOUT")]
    pub heartbeat_timeout: Option<u64>,
    /// Minimum election timeout in ticks (default: --election-timeout / tick).
    #[arg(long, env = "DEIMOS_ELECTION_TIMEOUT_TICKS")]
    pub election_timeout_ticks: Option<u64>,
    /// Whether --heartbeat-interval / --election-timeout were given (flag or environment) rather
    /// than defaulted; needed to tell a contradiction with the tick flags from a default.
    #[arg(skip)]
    pub explicit_durations: (bool, bool),
    /// Leader lease duration (default: 3 x heartbeat interval).
    #[arg(long, env = "DEIMOS_LEASE_DURATION", value_parser = parse_duration)]
    pub lease_duration: Option<Duration>,
    /// Clock-drift tolerance subtracted from the lease (default: 10% of the lease).
    #[arg(long, env = "DEIMOS_LEASE_DRIFT_TOLERANCE", value_parser = parse_duration)]
    pub lease_drift_tolerance: Option<Duration>,
    /// Applied entries between log compactions.
    #[arg(long, env = "DEIMOS_SNAPSHOT_COUNT", default_value_t = 10_000)]
    pub snapshot_count: u64,
    /// Applied entries a compaction leaves in the log, so a follower that fell behind by fewer
    /// catches up from the log instead of receiving a whole snapshot. 0 is allowed: every
    /// compaction then trims up to the applied index and any follower behind it gets a
    /// snapshot (correct, but costly; useful to test the snapshot path). Also accepted under
    /// etcd 3.5's name, --experimental-snapshot-catchup-entries.
    #[arg(
        long,
        env = "DEIMOS_SNAPSHOT_CATCHUP_ENTRIES",
        alias = "experimental-snapshot-catchup-entries",
        default_value_t = deimos_store::machine::DEFAULT_CATCH_UP_ENTRIES
    )]
    pub snapshot_catchup_entries: u64,
    /// UNSAFE: commit each write with one fsync instead of redb's two-phase commit. Faster, but
    /// if the latest commit slot is damaged on disk (torn write, bad sector) the store silently
    /// reopens at the previous commit, losing writes that were acknowledged; with the default
    /// two-phase commit that damage is refused at start instead. Exists to measure the cost
    /// (see `deimos-store/tests/persist_corrupt.rs`), like etcd's --unsafe-no-fsync.
    #[arg(long, env = "DEIMOS_UNSAFE_ONE_PHASE_COMMIT")]
    pub unsafe_one_phase_commit: bool,
    /// etcd's --force-new-cluster (read in `etcd_compat`, with etcd's boolean forms): on a
    /// member whose data dir holds state, make it the only member of its cluster, keeping its
    /// data. For recovering from a lost quorum; remove it from the unit file afterwards.
    #[arg(skip)]
    pub force_new_cluster: bool,
    /// Largest request body accepted on the client API.
    #[arg(long, env = "DEIMOS_MAX_REQUEST_BYTES", default_value_t = 1536 * 1024)]
    pub max_request_bytes: usize,
    /// Most client connections held at once (0: every descriptor not reserved for the store and
    /// the peer listener). Connections over it are closed on accept with a 503 and counted, so
    /// client load can never take the descriptors the peer port and the store need.
    #[arg(long, env = "DEIMOS_MAX_CLIENT_CONNECTIONS", default_value_t = 0)]
    pub max_client_connections: usize,
    /// Most peer connections held at once; members need a few each, the rest of the budget goes
    /// to clients.
    #[arg(long, env = "DEIMOS_MAX_PEER_CONNECTIONS", default_value_t = 256)]
    pub max_peer_connections: usize,
    /// How long a write or linearizable read may wait for consensus.
    #[arg(long, env = "DEIMOS_REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// TEST ONLY: run this node's clock (Raft ticks and lease) at this rate relative to real time,
    /// to model oscillator drift in fault tests.
    #[arg(
        long,
        hide = true,
        env = "DEIMOS_UNSAFE_CLOCK_RATE",
        default_value_t = 1.0
    )]
    pub unsafe_clock_rate: f64,
    /// TEST ONLY: accept lease settings that break the safety bound, to show the fault suite
    /// catches the resulting stale reads.
    #[arg(long, hide = true, env = "DEIMOS_UNSAFE_SKIP_LEASE_CHECK")]
    pub unsafe_skip_lease_check: bool,
    /// Client listener certificate (PEM); required when a --listen-client-urls URL is https://.
    #[arg(long, env = "DEIMOS_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) for --cert-file.
    #[arg(long, env = "DEIMOS_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// CA (PEM) for client certificates: when given, clients must present a certificate it
    /// signed (mutual TLS). etcd's name: --trusted-ca-file.
    #[arg(long, env = "DEIMOS_CA_FILE", alias = "trusted-ca-file")]
    pub ca_file: Option<PathBuf>,
    /// Peer certificate (PEM): served on https peer listeners and presented to other members.
    #[arg(long, env = "DEIMOS_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// Private key (PEM) for --peer-cert-file.
    #[arg(long, env = "DEIMOS_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// CA (PEM) that signed every member's peer certificate; peer TLS is always mutual.
    /// etcd's name: --peer-trusted-ca-file.
    #[arg(long, env = "DEIMOS_PEER_CA_FILE", alias = "peer-trusted-ca-file")]
    pub peer_ca_file: Option<PathBuf>,
    /// Run as a proxy that joins no Raft group and forwards client requests to
    /// --proxy-endpoints (readonly: GET/HEAD only, other methods answer 501).
    #[arg(long, env = "DEIMOS_PROXY", value_enum, default_value = "off")]
    pub proxy: ProxyMode,
    /// Cluster client URLs the proxy forwards to (comma-separated); refreshed from
    /// `/v2/members` every 30 s.
    #[arg(long, env = "DEIMOS_PROXY_ENDPOINTS", value_delimiter = ',')]
    pub proxy_endpoints: Vec<String>,
    /// Origins allowed by CORS (comma-separated, `*` for any); none by default.
    #[arg(long, env = "DEIMOS_CORS", value_delimiter = ',')]
    pub cors: Vec<String>,
    /// Log filter (tracing `EnvFilter` syntax; etcd's --log-level values work too).
    #[arg(long, env = "DEIMOS_LOG", alias = "log-level", default_value = "info")]
    pub log: String,
    /// An etcd YAML configuration file. As with etcd, when given, every other flag and
    /// environment variable is ignored.
    #[arg(long, env = "DEIMOS_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// What the etcd-only flags given (see `etcd_compat`) warrant saying once logging is up.
    #[arg(skip)]
    pub warnings: Vec<String>,
}

impl Flags {
    /// Parse the command line and environment (and an etcd config file, if one is given; see
    /// `etcd_compat`), remembering which duration flags were given explicitly (clap's derive
    /// API alone cannot tell a default from a given value). Exits with clap's message on error.
    pub fn parse_with_sources() -> Flags {
        let env = |k: &str| std::env::var_os(k);
        Self::try_parse_with_sources_env(std::env::args_os(), &env).unwrap_or_else(|e| e.exit())
    }

    /// As [`Flags::parse_with_sources`], from explicit arguments (tests).
    #[cfg(test)]
    pub fn try_parse_with_sources<I, T>(args: I) -> Result<Flags, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_with_sources_env(args, &|_| None)
    }

    /// The command with etcd's extra flag names.
    fn command_with_etcd() -> clap::Command {
        Self::command().args(crate::etcd_compat::etcd_only_args())
    }

    /// Parse `args`, taking `ETCD_*` variables from `env` for flags given neither on the
    /// command line nor as `DEIMOS_*`, or, with `--config-file`, the file alone.
    pub fn try_parse_with_sources_env<I, T>(
        args: I,
        env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Flags, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use crate::etcd_compat;
        let invalid = |msg: String| {
            clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{msg}\n"))
        };
        let mut args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let cmd = Self::command_with_etcd();
        let m = cmd.clone().try_get_matches_from(&args)?;
        let mut unknown_keys = Vec::new();
        let config_file = m
            .get_one::<PathBuf>(etcd_compat::CONFIG_FILE)
            .cloned()
            .or_else(|| env("ETCD_CONFIG_FILE").map(PathBuf::from));
        let m = match config_file {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| invalid(format!("--config-file {}: {e}", path.display())))?;
                let (file_args, unknown) = etcd_compat::args_from_config_file(&cmd, &text)
                    .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
                unknown_keys = unknown;
                let mut all = vec![args.first().cloned().unwrap_or_else(|| "deimos".into())];
                all.extend(file_args);
                // The file alone: no environment variable fills in what it leaves out.
                cmd.mut_args(|a| a.env(None::<&str>))
                    .try_get_matches_from(all)?
            }
            None => {
                let extra = etcd_compat::args_from_etcd_env(&cmd, &m, env);
                if extra.is_empty() {
                    m
                } else {
                    args.extend(extra);
                    cmd.try_get_matches_from(&args)?
                }
            }
        };
        let mut flags = Self::from_matches(&m)?;
        flags.warnings =
            etcd_compat::check(&m, flags.ca_file.is_some(), flags.peer_ca_file.is_some())
                .map_err(|e| invalid(e.to_string()))?;
        flags.force_new_cluster =
            etcd_compat::force_new_cluster(&m).map_err(|e| invalid(e.to_string()))?;
        for k in unknown_keys {
            flags.warnings.push(format!(
                "config file: {k:?} is not a flag Deimos knows; ignored"
            ));
        }
        Ok(flags)
    }

    fn from_matches(m: &clap::ArgMatches) -> Result<Flags, clap::Error> {
        let given = |id: &str| {
            matches!(
                m.value_source(id),
                Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
            )
        };
        let explicit = (given("heartbeat_interval"), given("election_timeout"));
        let mut flags = Flags::from_arg_matches(m)?;
        flags.explicit_durations = explicit;
        Ok(flags)
    }
}
