//! Flags (each also settable as a `DEIMOS_<FLAG>` environment variable; the flag wins) and the
//! node configuration derived from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use deimos_store::machine::Member;

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
    /// Peer URLs this member advertises (default: the listen URLs).
    #[arg(long, env = "DEIMOS_ADVERTISE_PEER_URLS", value_delimiter = ',')]
    pub advertise_peer_urls: Vec<String>,
    /// Initial cluster: `name=peerURL,name=peerURL,...` (default: this node alone).
    #[arg(long, env = "DEIMOS_BOOTSTRAP_CONFIG")]
    pub bootstrap_config: Option<String>,
    #[arg(
        long,
        env = "DEIMOS_INITIAL_CLUSTER_STATE",
        value_enum,
        default_value = "new"
    )]
    pub initial_cluster_state: ClusterState,
    /// Time between leader heartbeats (one Raft tick).
    #[arg(long, env = "DEIMOS_HEARTBEAT_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// Minimum election timeout (randomised up to twice this).
    #[arg(long, env = "DEIMOS_ELECTION_TIMEOUT", default_value = "1000ms", value_parser = parse_duration)]
    pub election_timeout: Duration,
    /// Leader lease duration (default: 3 x heartbeat interval).
    #[arg(long, env = "DEIMOS_LEASE_DURATION", value_parser = parse_duration)]
    pub lease_duration: Option<Duration>,
    /// Clock-drift tolerance subtracted from the lease (default: 10% of the lease).
    #[arg(long, env = "DEIMOS_LEASE_DRIFT_TOLERANCE", value_parser = parse_duration)]
    pub lease_drift_tolerance: Option<Duration>,
    /// Applied entries between log compactions.
    #[arg(long, env = "DEIMOS_SNAPSHOT_COUNT", default_value_t = 10_000)]
    pub snapshot_count: u64,
    /// Largest request body accepted on the client API.
    #[arg(long, env = "DEIMOS_MAX_REQUEST_BYTES", default_value_t = 1536 * 1024)]
    pub max_request_bytes: usize,
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
    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "DEIMOS_LOG", default_value = "info")]
    pub log: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    // Plain numbers are milliseconds, as etcd's --heartbeat-interval/--election-timeout.
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Member ids are derived from the peer URLs (stable, the same on every node), as etcd does.
pub fn member_id(peer_urls: &[String]) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(|s| s.trim_end_matches('/')).collect();
    urls.sort_unstable();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in urls.join(",").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// Where a URL's server should listen: `http://host:port` → socket address.
pub fn url_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported for listening"))?;
    let hostport = rest.trim_end_matches('/');
    let hostport = if let Some(p) = hostport.strip_prefix("localhost:") {
        format!("127.0.0.1:{p}")
    } else {
        hostport.to_string()
    };
    hostport.parse().map_err(|e| format!("{url}: {e}"))
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub flags: Flags,
    pub id: u64,
    pub client_urls: Vec<String>,
    pub peer_urls: Vec<String>,
    /// Members of the initial cluster (empty when joining an existing one).
    pub bootstrap: Vec<Member>,
    pub election_tick: usize,
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
        if flags.heartbeat_interval.is_zero() {
            return Err("--heartbeat-interval must be positive".into());
        }
        let election_tick = (flags.election_timeout.as_millis()
            / flags.heartbeat_interval.as_millis().max(1)) as usize;
        if election_tick < 3 {
            return Err("--election-timeout must be at least 3 heartbeat intervals".into());
        }
        if !(0.5..=2.0).contains(&flags.unsafe_clock_rate) {
            return Err("--unsafe-clock-rate must be within 0.5..=2.0".into());
        }
        if flags.initial_cluster_state == ClusterState::Existing {
            bootstrap.clear();
        }
        Ok(NodeConfig {
            flags,
            id,
            client_urls,
            peer_urls,
            bootstrap,
            election_tick,
        })
    }
}

/// `n1=http://a:7001,n2=http://b:7002` (a name may repeat to list several URLs).
pub fn parse_bootstrap(spec: &str) -> Result<Vec<Member>, String> {
    let mut out: Vec<Member> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| format!("bootstrap entry {part:?} is not name=url"))?;
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(format!(
                "bootstrap entry {part:?}: URL must start with http:// or https://"
            ));
        }
        match out.iter_mut().find(|m| m.name == name) {
            Some(m) => m.peer_urls.push(url.to_string()),
            None => out.push(Member {
                id: 0,
                name: name.to_string(),
                peer_urls: vec![url.to_string()],
                client_urls: vec![],
            }),
        }
    }
    if out.is_empty() {
        return Err("empty --bootstrap-config".into());
    }
    for m in &mut out {
        m.id = member_id(&m.peer_urls);
    }
    let mut ids: Vec<u64> = out.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != out.len() {
        return Err("two bootstrap members share peer URLs".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flags_means_one_local_node() {
        let f = Flags::try_parse_from(["deimos"]).unwrap();
        let c = NodeConfig::from_flags(f).unwrap();
        assert_eq!(c.bootstrap.len(), 1);
        assert_eq!(c.peer_urls, vec!["http://127.0.0.1:7001"]);
        assert_eq!(c.client_urls, vec!["http://127.0.0.1:4001"]);
        assert_eq!(c.election_tick, 10);
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
        assert!(url_addr("https://127.0.0.1:1").is_err());
    }
}
