//! Flags (each also settable as a `DEIMOS_<FLAG>` environment variable; the flag wins) and the
//! node configuration derived from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use deimos_store::machine::Member;

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

fn parse_duration(s: &str) -> Result<Duration, String> {
    // Plain numbers are milliseconds, as etcd's --heartbeat-interval/--election-timeout.
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
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
                .map_err(invalid)?;
        flags.force_new_cluster = etcd_compat::force_new_cluster(&m).map_err(invalid)?;
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

/// Where a URL's server should listen: `http(s)://host:port` → socket address.
pub fn url_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url}: only http:// and https:// URLs are supported"))?;
    let hostport = rest.trim_end_matches('/');
    let hostport = if let Some(p) = hostport.strip_prefix("localhost:") {
        format!("127.0.0.1:{p}")
    } else {
        hostport.to_string()
    };
    hostport.parse().map_err(|e| format!("{url}: {e}"))
}

/// The host of an `http(s)://host:port` URL (without brackets for an IPv6 address).
pub fn url_host(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().map(str::to_string);
    }
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    (!host.is_empty()).then(|| host.to_string())
}

/// `scheme://host:port`, optionally with a trailing `/`, and nothing else: no path, query, user
/// info or blanks. What a member record may hold, since other members and proxies connect to it.
pub fn is_host_port_url(url: &str, scheme: &str) -> bool {
    let Some(rest) = url.strip_prefix(scheme) else {
        return false;
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let port_ok = authority
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    port_ok && !authority.contains(['/', '?', '#', '@', ' ', '\t', '\n', '\r'])
}

pub fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

/// Raft timing after applying the precedence between tick and duration flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub tick_interval: Duration,
    pub heartbeat_tick: usize,
    pub election_tick: usize,
}

impl Timing {
    pub fn heartbeat_interval(&self) -> Duration {
        self.tick_interval * self.heartbeat_tick as u32
    }
    pub fn election_timeout(&self) -> Duration {
        self.tick_interval * self.election_tick as u32
    }

    /// One source of truth: with no tick flag, the duration flags (one tick = one heartbeat
    /// interval); with any tick flag, tick x count, where the duration flags only fill in what
    /// the tick flags leave out. Explicit durations that disagree with tick flags are rejected
    /// rather than one of them silently ignored.
    pub fn from_flags(f: &Flags) -> Result<Timing, String> {
        let (hb_given, el_given) = f.explicit_durations;
        if f.heartbeat_interval.is_zero() {
            return Err("--heartbeat-interval must be positive".into());
        }
        let tick = f.tick_interval.unwrap_or(f.heartbeat_interval);
        if tick.is_zero() {
            return Err("--tick-interval must be positive".into());
        }
        let hb = f.heartbeat_timeout.unwrap_or(1);
        if hb == 0 || hb > 1000 {
            return Err("--heartbeat-timeout must be within 1..=1000 ticks".into());
        }
        let el = match f.election_timeout_ticks {
            Some(n) => n,
            None => (f.election_timeout.as_nanos() / tick.as_nanos()) as u64,
        };
        if el > 100_000 {
            return Err("--election-timeout-ticks must be at most 100000".into());
        }
        let t = Timing {
            tick_interval: tick,
            heartbeat_tick: hb as usize,
            election_tick: el as usize,
        };
        let tick_flags = f.tick_interval.is_some() || f.heartbeat_timeout.is_some();
        if hb_given && tick_flags && t.heartbeat_interval() != f.heartbeat_interval {
            return Err(format!(
                "--heartbeat-interval {:?} contradicts --tick-interval {:?} x --heartbeat-timeout {} = {:?}; give one or the other",
                f.heartbeat_interval,
                tick,
                hb,
                t.heartbeat_interval()
            ));
        }
        if el_given
            && f.election_timeout_ticks.is_some()
            && t.election_timeout() != f.election_timeout
        {
            return Err(format!(
                "--election-timeout {:?} contradicts --tick-interval {:?} x --election-timeout-ticks {} = {:?}; give one or the other",
                f.election_timeout,
                tick,
                el,
                t.election_timeout()
            ));
        }
        if t.election_tick < 3 || t.election_tick <= t.heartbeat_tick {
            return Err(
                "the election timeout must be at least 3 ticks and longer than the heartbeat interval (--election-timeout must be at least 3 heartbeat intervals)"
                    .into(),
            );
        }
        Ok(t)
    }
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub flags: Flags,
    pub id: u64,
    pub client_urls: Vec<String>,
    pub peer_urls: Vec<String>,
    /// Members of the initial cluster (empty when joining an existing one).
    pub bootstrap: Vec<Member>,
    /// Every member named in `--bootstrap-config`, also when joining: where to reach peers
    /// before their replicated records have been applied here.
    pub peer_hints: Vec<Member>,
    pub timing: Timing,
}

impl NodeConfig {
    pub fn from_flags(flags: Flags) -> Result<NodeConfig, String> {
        let client_urls = if flags.advertise_client_urls.is_empty() {
            flags.listen_client_urls.clone()
        } else {
            flags.advertise_client_urls.clone()
        };
        let peer_urls = if flags.advertise_peer_urls.is_empty() {
            flags.listen_peer_urls.clone()
        } else {
            flags.advertise_peer_urls.clone()
        };
        let timing = Timing::from_flags(&flags)?;
        check_urls(&flags)?;
        check_tls(&flags)?;
        if flags.proxy != ProxyMode::Off {
            // A proxy is not a member: no id, no bootstrap, no data dir.
            if flags.proxy_endpoints.is_empty() {
                return Err("--proxy needs --proxy-endpoints (the cluster's client URLs)".into());
            }
            for u in &flags.proxy_endpoints {
                url_addr(u).map_err(|e| format!("--proxy-endpoints: {e}"))?;
            }
            return Ok(NodeConfig {
                flags,
                id: 0,
                client_urls,
                peer_urls: vec![],
                bootstrap: vec![],
                peer_hints: vec![],
                timing,
            });
        }
        let spec = flags
            .bootstrap_config
            .clone()
            .unwrap_or_else(|| format!("{}={}", flags.name, peer_urls.join(",")));
        // Every bootstrapping node must write identical member records, so client URLs are not
        // part of them: each node publishes its own through Raft once a leader exists.
        let mut bootstrap = parse_bootstrap(&spec)?;
        let Some(me) = bootstrap.iter().find(|m| m.name == flags.name) else {
            return Err(format!(
                "--bootstrap-config has no entry for --name {}",
                flags.name
            ));
        };
        let id = me.id;
        if !(0.5..=2.0).contains(&flags.unsafe_clock_rate) {
            return Err("--unsafe-clock-rate must be within 0.5..=2.0".into());
        }
        let peer_hints = bootstrap.clone();
        if flags.initial_cluster_state == ClusterState::Existing {
            bootstrap.clear();
        }
        Ok(NodeConfig {
            flags,
            id,
            client_urls,
            peer_urls,
            bootstrap,
            peer_hints,
            timing,
        })
    }
}

/// Every URL this member listens on or publishes is `http(s)://host:port`: the advertised ones
/// end up in member records that peers and proxies connect to.
fn check_urls(f: &Flags) -> Result<(), String> {
    let lists = [
        ("--listen-client-urls", &f.listen_client_urls),
        ("--advertise-client-urls", &f.advertise_client_urls),
        ("--listen-peer-urls", &f.listen_peer_urls),
        ("--advertise-peer-urls", &f.advertise_peer_urls),
    ];
    for (flag, urls) in lists {
        if let Some(bad) = urls
            .iter()
            .find(|u| !is_host_port_url(u, "http://") && !is_host_port_url(u, "https://"))
        {
            return Err(format!("{flag}: {bad:?} is not http(s)://host:port"));
        }
    }
    Ok(())
}

/// https URLs need the matching certificate flags; say which one is missing at start-up rather
/// than failing every handshake later.
fn check_tls(f: &Flags) -> Result<(), String> {
    if f.listen_client_urls.iter().any(|u| is_https(u))
        && (f.cert_file.is_none() || f.key_file.is_none())
    {
        return Err("https:// in --listen-client-urls needs --cert-file and --key-file".into());
    }
    let peer_https = f.listen_peer_urls.iter().any(|u| is_https(u))
        || f.advertise_peer_urls.iter().any(|u| is_https(u))
        || f.bootstrap_config
            .as_deref()
            .is_some_and(|b| b.contains("https://"));
    if f.proxy == ProxyMode::Off
        && peer_https
        && (f.peer_cert_file.is_none() || f.peer_key_file.is_none() || f.peer_ca_file.is_none())
    {
        return Err(
            "https:// peer URLs need --peer-cert-file, --peer-key-file and --peer-ca-file (peer TLS is always mutual)"
                .into(),
        );
    }
    if f.proxy != ProxyMode::Off
        && f.proxy_endpoints.iter().any(|u| is_https(u))
        && f.peer_ca_file.is_none()
    {
        return Err(
            "https:// in --proxy-endpoints needs --peer-ca-file (and --peer-cert-file/--peer-key-file for mutual TLS): the proxy talks to the cluster with the peer TLS settings"
                .into(),
        );
    }
    Ok(())
}

/// `n1=http://a:7001,n2=http://b:7002` (a name may repeat to list several URLs); shared with
/// `deimosctl snapshot restore`, which must derive the same ids.
pub fn parse_bootstrap(spec: &str) -> Result<Vec<Member>, String> {
    deimos_store::recovery::parse_members(spec)
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_hosts_drop_scheme_port_path_and_brackets() {
        assert_eq!(
            url_host("http://10.0.0.1:7001").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            url_host("https://n1.example:7001/").as_deref(),
            Some("n1.example")
        );
        assert_eq!(url_host("https://[::1]:7001").as_deref(), Some("::1"));
        assert_eq!(url_host("http://host").as_deref(), Some("host"));
        assert_eq!(url_host("ftp://host:1"), None);
        assert_eq!(url_host("http://:1"), None);
    }

    use super::*;

    #[test]
    fn no_flags_means_one_local_node() {
        let f = Flags::try_parse_from(["deimos"]).unwrap();
        let c = NodeConfig::from_flags(f).unwrap();
        assert_eq!(c.bootstrap.len(), 1);
        assert_eq!(c.peer_urls, vec!["http://127.0.0.1:7001"]);
        assert_eq!(c.client_urls, vec!["http://127.0.0.1:4001"]);
        assert_eq!(c.timing.election_tick, 10);
        assert_eq!(c.flags.data_dir, PathBuf::from("./deimos-data"));
    }

    #[test]
    fn bootstrap_ids_are_stable_and_distinct() {
        let a = parse_bootstrap("n1=http://127.0.0.1:7001,n2=http://127.0.0.1:7002").unwrap();
        let b = parse_bootstrap("n2=http://127.0.0.1:7002,n1=http://127.0.0.1:7001").unwrap();
        assert_eq!(a[0].id, b[1].id);
        assert_ne!(a[0].id, a[1].id);
        assert!(parse_bootstrap("n1").is_err());
        assert!(parse_bootstrap("n1=ftp://x").is_err());
        assert!(parse_bootstrap("a=http://x:1,b=http://x:1").is_err());
    }

    #[test]
    fn durations_accept_ms_numbers_and_units() {
        assert_eq!(parse_duration("100").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn unknown_name_and_tiny_election_timeout_are_rejected() {
        let f = Flags::try_parse_from([
            "deimos",
            "--name",
            "x",
            "--bootstrap-config",
            "n1=http://127.0.0.1:7001",
        ])
        .unwrap();
        assert!(NodeConfig::from_flags(f).is_err());
        let f = Flags::try_parse_from(["deimos", "--election-timeout", "150ms"]).unwrap();
        assert!(NodeConfig::from_flags(f).is_err());
    }

    #[test]
    fn url_addr_parses_listen_urls() {
        assert_eq!(url_addr("http://127.0.0.1:4001").unwrap().port(), 4001);
        assert_eq!(url_addr("http://localhost:4001/").unwrap().port(), 4001);
        assert_eq!(url_addr("https://127.0.0.1:1").unwrap().port(), 1);
        assert!(url_addr("ftp://127.0.0.1:1").is_err());
    }

    fn timing(args: &[&str]) -> Result<Timing, String> {
        let mut all = vec!["deimos"];
        all.extend_from_slice(args);
        Timing::from_flags(&Flags::try_parse_with_sources(all).map_err(|e| e.to_string())?)
    }

    #[test]
    fn tick_flags_override_and_contradictions_are_rejected() {
        let d = timing(&[]).unwrap();
        assert_eq!(d.tick_interval, Duration::from_millis(100));
        assert_eq!((d.heartbeat_tick, d.election_tick), (1, 10));
        let t = timing(&["--tick-interval", "50ms", "--election-timeout-ticks", "20"]).unwrap();
        assert_eq!(t.election_timeout(), Duration::from_secs(1));
        assert_eq!(t.heartbeat_interval(), Duration::from_millis(50));
        // Defaulted durations fill in what the tick flags leave out.
        let t = timing(&["--tick-interval", "50ms", "--heartbeat-timeout", "2"]).unwrap();
        assert_eq!((t.heartbeat_tick, t.election_tick), (2, 20));
        // Explicit durations that agree are fine; ones that disagree are errors.
        assert!(timing(&[
            "--heartbeat-interval",
            "100ms",
            "--tick-interval",
            "50ms",
            "--heartbeat-timeout",
            "2"
        ])
        .is_ok());
        assert!(timing(&["--heartbeat-interval", "100ms", "--tick-interval", "50ms"]).is_err());
        assert!(timing(&["--election-timeout", "1s", "--election-timeout-ticks", "5"]).is_err());
        assert!(timing(&["--heartbeat-timeout", "5", "--election-timeout-ticks", "5"]).is_err());
        assert!(timing(&["--heartbeat-timeout", "0"]).is_err());
    }

    #[test]
    fn listen_and_advertise_urls_are_scheme_host_port() {
        let cfg = |args: &[&str]| {
            let mut all = vec!["deimos"];
            all.extend_from_slice(args);
            NodeConfig::from_flags(Flags::try_parse_from(all).unwrap())
        };
        for bad in [
            "ftp://h:1",
            "http://h",
            "http://h:1/path",
            "http://user@h:1",
            "http://:1",
            "http://h:0",
        ] {
            let e = cfg(&["--advertise-client-urls", bad]).unwrap_err();
            assert!(e.contains("--advertise-client-urls"), "{bad}: {e}");
        }
        assert!(cfg(&["--advertise-peer-urls", "http://h:7001/"]).is_ok());
        assert!(cfg(&["--listen-peer-urls", "http://[::1]:7001"]).is_ok());
    }

    #[test]
    fn https_urls_need_certificates_and_proxy_needs_endpoints() {
        let cfg = |args: &[&str]| {
            let mut all = vec!["deimos"];
            all.extend_from_slice(args);
            NodeConfig::from_flags(Flags::try_parse_from(all).unwrap())
        };
        let e = cfg(&["--listen-client-urls", "https://127.0.0.1:4001"]).unwrap_err();
        assert!(e.contains("--cert-file"), "{e}");
        let e = cfg(&[
            "--listen-peer-urls",
            "https://127.0.0.1:7001",
            "--peer-cert-file",
            "c",
            "--peer-key-file",
            "k",
        ])
        .unwrap_err();
        assert!(e.contains("--peer-ca-file"), "{e}");
        assert!(cfg(&["--proxy", "on"]).is_err());
        let p = cfg(&[
            "--proxy",
            "readonly",
            "--proxy-endpoints",
            "http://127.0.0.1:4001",
        ])
        .unwrap();
        assert_eq!(p.flags.proxy, ProxyMode::Readonly);
        assert!(p.bootstrap.is_empty());
    }

    #[test]
    fn snapshot_catchup_entries_has_a_default_an_etcd_alias_and_allows_zero() {
        let parse = |args: &[&str]| {
            let mut all = vec!["deimos"];
            all.extend_from_slice(args);
            Flags::try_parse_from(all).map(|f| f.snapshot_catchup_entries)
        };
        assert_eq!(parse(&[]).unwrap(), 5_000);
        assert_eq!(parse(&["--snapshot-catchup-entries", "7"]).unwrap(), 7);
        assert_eq!(
            parse(&["--experimental-snapshot-catchup-entries", "9"]).unwrap(),
            9
        );
        assert_eq!(parse(&["--snapshot-catchup-entries", "0"]).unwrap(), 0);
        assert!(parse(&["--snapshot-catchup-entries", "-1"]).is_err());
    }

    /// Operators rely on `DEIMOS_<FLAG>` for every flag (issue 9); a flag added without `env`
    /// would silently break that.
    #[test]
    fn every_flag_has_its_env_var() {
        let cmd = Flags::command();
        for a in cmd.get_arguments() {
            let Some(long) = a.get_long() else { continue };
            if long == "help" || long == "version" {
                continue;
            }
            let want = format!("DEIMOS_{}", long.replace('-', "_").to_uppercase());
            let got = a.get_env().map(|e| e.to_string_lossy().into_owned());
            assert_eq!(got.as_deref(), Some(want.as_str()), "--{long}");
        }
    }
}
