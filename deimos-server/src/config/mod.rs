//! The node's configuration: flags (`flags.rs`) checked and turned into what a member or a
//! proxy runs with. Every entry point goes through [`NodeConfig::from_flags`], so a flag is
//! validated in one place.

mod flags;
mod timing;
mod urls;

use deimos_store::machine::Member;

pub use flags::{ClusterState, Flags, ProxyMode};
pub use timing::{Timing, TimingError};
pub use urls::{is_host_port_url, is_https, url_addr, url_host, UrlError};

/// Why the flags do not make a usable configuration; each message names the flag to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Timing(#[from] TimingError),
    #[error("{flag}: {url:?} is not http(s)://host:port")]
    NotHostPortUrl { flag: &'static str, url: String },
    /// https:// URLs without the certificate flags they need.
    #[error("{0}")]
    Tls(&'static str),
    #[error("--proxy needs --proxy-endpoints (the cluster's client URLs)")]
    ProxyWithoutEndpoints,
    #[error("--proxy-endpoints: {0}")]
    ProxyEndpoint(#[source] UrlError),
    /// `--bootstrap-config` that is not `name=url,...` (the message says where).
    #[error(transparent)]
    Bootstrap(#[from] deimos_store::recovery::MembersSpecError),
    #[error("--bootstrap-config has no entry for --name {0}")]
    NotInBootstrap(String),
    #[error("--unsafe-clock-rate must be within 0.5..=2.0")]
    ClockRate,
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
    pub fn from_flags(flags: Flags) -> Result<NodeConfig, ConfigError> {
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
                return Err(ConfigError::ProxyWithoutEndpoints);
            }
            for u in &flags.proxy_endpoints {
                url_addr(u).map_err(ConfigError::ProxyEndpoint)?;
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
            return Err(ConfigError::NotInBootstrap(flags.name));
        };
        let id = me.id;
        if !(0.5..=2.0).contains(&flags.unsafe_clock_rate) {
            return Err(ConfigError::ClockRate);
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
fn check_urls(f: &Flags) -> Result<(), ConfigError> {
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
            return Err(ConfigError::NotHostPortUrl {
                flag,
                url: bad.clone(),
            });
        }
    }
    Ok(())
}

/// https URLs need the matching certificate flags; say which one is missing at start-up rather
/// than failing every handshake later.
fn check_tls(f: &Flags) -> Result<(), ConfigError> {
    if f.listen_client_urls.iter().any(|u| is_https(u))
        && (f.cert_file.is_none() || f.key_file.is_none())
    {
        return Err(ConfigError::Tls(
            "https:// in --listen-client-urls needs --cert-file and --key-file",
        ));
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
        return Err(ConfigError::Tls(
            "https:// peer URLs need --peer-cert-file, --peer-key-file and --peer-ca-file (peer \
             TLS is always mutual)",
        ));
    }
    if f.proxy != ProxyMode::Off
        && f.proxy_endpoints.iter().any(|u| is_https(u))
        && f.peer_ca_file.is_none()
    {
        return Err(ConfigError::Tls(
            "https:// in --proxy-endpoints needs --peer-ca-file (and \
             --peer-cert-file/--peer-key-file for mutual TLS): the proxy talks to the cluster \
             with the peer TLS settings",
        ));
    }
    Ok(())
}

/// `n1=http://a:7001,n2=http://b:7002` (a name may repeat to list several URLs); shared with
/// `deimosctl snapshot restore`, which must derive the same ids.
pub fn parse_bootstrap(
    spec: &str,
) -> Result<Vec<Member>, deimos_store::recovery::MembersSpecError> {
    deimos_store::recovery::parse_members(spec)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::{CommandFactory, Parser};

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
            assert!(
                e.to_string().contains("--advertise-client-urls"),
                "{bad}: {e}"
            );
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
        assert!(e.to_string().contains("--cert-file"), "{e}");
        let e = cfg(&[
            "--listen-peer-urls",
            "https://127.0.0.1:7001",
            "--peer-cert-file",
            "c",
            "--peer-key-file",
            "k",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("--peer-ca-file"), "{e}");
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
