//! etcd's configuration surface, so an etcd member's unit file, environment or YAML config
//! file starts a Deimos member unchanged.
//!
//! Three sources, in etcd's precedence:
//! - `--config-file FILE` (or `ETCD_CONFIG_FILE`/`DEIMOS_CONFIG_FILE`): etcd's YAML. As in etcd,
//!   when a config file is given every other flag and environment variable is ignored.
//! - flags: Deimos's own names plus etcd's (`--initial-cluster` = `--bootstrap-config`, ... as
//!   clap aliases in `config.rs`);
//! - environment: `DEIMOS_<FLAG>`, else etcd's `ETCD_<FLAG>` for any name of the flag.
//!
//! etcd flags with no Deimos counterpart are sorted by what ignoring them would mean. Those that
//! ask for behaviour Deimos does not have and an operator relies on (a separate WAL dir,
//! discovery, auto-generated TLS, no fsync, disabling the v2 API) are refused at start with the
//! reason: running without them would be a surprise. Those that only tune etcd internals
//! (v3 backend quota and compaction, gRPC keep-alives, zap logger outputs) are accepted and
//! named in a warning at start.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};

mod config_file;

pub use config_file::args_from_config_file;

/// An etcd flag Deimos cannot honour, or one whose value is not what etcd would accept.
#[derive(Debug, thiserror::Error)]
pub enum EtcdFlagError {
    #[error("--{flag}: {value:?} is not a boolean")]
    NotBoolean { flag: String, value: String },
    /// A flag asking for behaviour Deimos does not have, with the reason.
    #[error("--{flag} is not supported: {why}")]
    Unsupported {
        flag: &'static str,
        why: &'static str,
    },
    #[error("--enable-v2=false: Deimos serves the etcd v2 API only")]
    V2Disabled,
    #[error("--{flag} needs {ca_flag}: client certificates are checked against it")]
    NeedsCa {
        flag: &'static str,
        ca_flag: &'static str,
    },
}

/// etcd flags that tune etcd's own internals; accepted, without effect here.
const NO_EFFECT: &[&str] = &[
    "quota-backend-bytes",
    "backend-batch-interval",
    "backend-batch-limit",
    "auto-compaction-retention",
    "auto-compaction-mode",
    "max-snapshots",
    "max-wals",
    "max-txn-ops",
    "enable-pprof",
    "logger",
    "log-outputs",
    "log-package-levels",
    "debug",
    "metrics",
    "listen-metrics-urls",
    "grpc-keepalive-min-time",
    "grpc-keepalive-interval",
    "grpc-keepalive-timeout",
    "enable-grpc-gateway",
    "discovery-fallback",
    "proxy-failure-wait",
    "proxy-refresh-interval",
    "proxy-dial-timeout",
    "proxy-write-timeout",
    "proxy-read-timeout",
    "cipher-suites",
    "initial-election-tick-advance",
    "pre-vote",
    "auth-token",
    "bcrypt-cost",
    "experimental-initial-corrupt-check",
    "experimental-corrupt-check-time",
    "experimental-enable-v2v3",
    "experimental-backend-bbolt-freelist-type",
    "socket-reuse-port",
    "socket-reuse-address",
];

/// etcd flags that ask for something Deimos does not do; refused when set (non-empty).
const REFUSED_IF_SET: &[(&str, &str)] = &[
    (
        "wal-dir",
        "Deimos keeps its Raft log in the redb file under --data-dir; there is no separate WAL",
    ),
    (
        "discovery",
        "discovery services are not supported; list the members with --initial-cluster",
    ),
    (
        "discovery-srv",
        "DNS discovery is not supported; list the members with --initial-cluster",
    ),
    (
        "discovery-proxy",
        "discovery services are not supported; list the members with --initial-cluster",
    ),
];

/// etcd boolean flags refused when true.
const REFUSED_IF_TRUE: &[(&str, &str)] = &[
    (
        "auto-tls",
        "self-signed client certificates are not generated; give --cert-file and --key-file",
    ),
    (
        "peer-auto-tls",
        "self-signed peer certificates are not generated; give the --peer-* TLS files",
    ),
    (
        "unsafe-no-fsync",
        "Deimos never acknowledges a write before it is on disk",
    ),
];

/// etcd boolean flags whose Deimos behaviour is fixed: checked against it.
const CLIENT_CERT_AUTH: &str = "client-cert-auth";
const PEER_CLIENT_CERT_AUTH: &str = "peer-client-cert-auth";
const STRICT_RECONFIG_CHECK: &str = "strict-reconfig-check";
const ENABLE_V2: &str = "enable-v2";
const FIXED_BOOLS: &[&str] = &[
    CLIENT_CERT_AUTH,
    PEER_CLIENT_CERT_AUTH,
    STRICT_RECONFIG_CHECK,
    ENABLE_V2,
];

/// etcd's `--force-new-cluster` (Deimos's too): start as a one-member cluster keeping the data
/// (see `deimos_store::recovery::force_new_cluster`). An etcd-style boolean, so it takes the
/// forms of the others and `ETCD_FORCE_NEW_CLUSTER`.
const FORCE_NEW_CLUSTER: &str = "force-new-cluster";

/// Whether `--force-new-cluster` was given true.
pub fn force_new_cluster(m: &ArgMatches) -> Result<bool, EtcdFlagError> {
    match given(m, FORCE_NEW_CLUSTER) {
        Some(v) => boolean(FORCE_NEW_CLUSTER, &v),
        None => Ok(false),
    }
}

/// The id of the `--config-file` flag in `config::Flags`.
pub const CONFIG_FILE: &str = "config_file";

fn etcd_env(long: &str) -> String {
    format!("ETCD_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// Hidden arguments for every etcd-only flag, each also read from `ETCD_<FLAG>`. Booleans
/// take etcd's forms: `--flag`, `--flag=true`, `--flag=false`.
pub fn etcd_only_args() -> Vec<Arg> {
    let names = NO_EFFECT
        .iter()
        .copied()
        .chain(REFUSED_IF_SET.iter().map(|(n, _)| *n))
        .chain(REFUSED_IF_TRUE.iter().map(|(n, _)| *n))
        .chain(FIXED_BOOLS.iter().copied())
        .chain([FORCE_NEW_CLUSTER]);
    names
        .map(|name| {
            // A flag Deimos has too reads `DEIMOS_<FLAG>`, and `ETCD_<FLAG>` through
            // `args_from_etcd_env` like Deimos's other flags.
            let env = match name {
                FORCE_NEW_CLUSTER => "DEIMOS_FORCE_NEW_CLUSTER".to_string(),
                _ => etcd_env(name),
            };
            Arg::new(name)
                .long(name)
                .env(env)
                .hide(true)
                .num_args(0..=1)
                .default_missing_value("true")
                .value_delimiter(None)
        })
        .collect()
}

fn given(m: &ArgMatches, id: &str) -> Option<String> {
    matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
    )
    .then(|| m.get_one::<String>(id).cloned())
    .flatten()
}

/// etcd's (Go's) boolean spellings; `None` for anything else.
fn truthy(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "t" => Some(true),
        "false" | "0" | "f" | "" => Some(false),
        _ => None,
    }
}

/// The value of boolean flag `flag`, or why it is none.
fn boolean(flag: &str, v: &str) -> Result<bool, EtcdFlagError> {
    truthy(v).ok_or_else(|| EtcdFlagError::NotBoolean {
        flag: flag.to_string(),
        value: v.to_string(),
    })
}

/// Check the etcd-only flags that were given: an error for those Deimos refuses, a warning
/// (to log once logging is up) for each one without effect.
pub fn check(m: &ArgMatches, client_ca: bool, peer_ca: bool) -> Result<Vec<String>, EtcdFlagError> {
    let mut warnings = Vec::new();
    for &(flag, why) in REFUSED_IF_SET {
        if given(m, flag).is_some_and(|v| !v.trim().is_empty()) {
            return Err(EtcdFlagError::Unsupported { flag, why });
        }
    }
    for &(flag, why) in REFUSED_IF_TRUE {
        if let Some(v) = given(m, flag) {
            if boolean(flag, &v)? {
                return Err(EtcdFlagError::Unsupported { flag, why });
            }
        }
    }
    let flag = |name: &str| -> Result<Option<bool>, EtcdFlagError> {
        given(m, name).map(|v| boolean(name, &v)).transpose()
    };
    if flag(ENABLE_V2)? == Some(false) {
        return Err(EtcdFlagError::V2Disabled);
    }
    for (name, ca, ca_flag) in [
        (CLIENT_CERT_AUTH, client_ca, "--trusted-ca-file"),
        (PEER_CLIENT_CERT_AUTH, peer_ca, "--peer-trusted-ca-file"),
    ] {
        match flag(name)? {
            Some(true) if !ca => {
                return Err(EtcdFlagError::NeedsCa {
                    flag: name,
                    ca_flag,
                })
            }
            Some(false) if ca => warnings.push(format!(
                "--{name}=false: with {ca_flag} Deimos still requires a certificate it signed"
            )),
            _ => {}
        }
    }
    if flag(STRICT_RECONFIG_CHECK)? == Some(false) {
        warnings.push(
            "--strict-reconfig-check=false: Deimos always checks; force a member add with ?force=true"
                .into(),
        );
    }
    for name in NO_EFFECT {
        // A config file spells out etcd's defaults (`debug: false`); only a setting is news.
        if given(m, name).is_some_and(|v| !matches!(v.as_str(), "" | "false")) {
            warnings.push(format!("etcd flag --{name} has no effect in Deimos"));
        }
    }
    Ok(warnings)
}

/// Arguments for `ETCD_<FLAG>` environment variables of flags that were neither given on the
/// command line nor as `DEIMOS_<FLAG>`. `env` looks a variable up (the process environment,
/// or a test's).
pub fn args_from_etcd_env(
    cmd: &Command,
    m: &ArgMatches,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Vec<OsString> {
    let mut out = Vec::new();
    for arg in cmd.get_arguments() {
        let deimos_env = arg
            .get_env()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.starts_with("DEIMOS_"));
        if !deimos_env {
            continue;
        }
        if matches!(
            m.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
        ) {
            continue;
        }
        let names = arg
            .get_long()
            .into_iter()
            .chain(arg.get_all_aliases().into_iter().flatten());
        for long in names {
            let Some(value) = env(&etcd_env(long)) else {
                continue;
            };
            if let Some(a) = flag_arg(arg, &value.to_string_lossy()) {
                out.push(a);
            }
            break;
        }
    }
    out
}

/// `--long=value` for `arg`, or `--long` / nothing for a flag that takes no value.
pub(super) fn flag_arg(arg: &Arg, value: &str) -> Option<OsString> {
    let long = arg.get_long()?;
    if arg.get_action().takes_values() {
        Some(format!("--{long}={value}").into())
    } else {
        truthy(value)?.then(|| format!("--{long}").into())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use crate::config::{ClusterState, Flags, NodeConfig};

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Flags, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.get(k).map(Into::into);
        let mut all = vec!["deimos"];
        all.extend_from_slice(args);
        Flags::try_parse_with_sources_env(all, &lookup).map_err(|e| e.to_string())
    }

    const CLUSTER: &str =
        "infra0=http://10.0.1.10:2380,infra1=http://10.0.1.11:2380,infra2=http://10.0.1.12:2380";

    /// The flags of an etcd 3.4 systemd unit, as etcd's clustering guide writes them.
    #[test]
    fn an_etcd_unit_files_flags_start_a_member() {
        let f = parse(
            &[
                "--name=infra0",
                "--data-dir=/var/lib/etcd",
                "--initial-advertise-peer-urls=http://10.0.1.10:2380",
                "--listen-peer-urls=http://10.0.1.10:2380",
                "--listen-client-urls=http://10.0.1.10:2379,http://127.0.0.1:2379",
                "--advertise-client-urls=http://10.0.1.10:2379",
                "--initial-cluster-token=etcd-cluster-1",
                &format!("--initial-cluster={CLUSTER}"),
                "--initial-cluster-state=new",
                "--heartbeat-interval=100",
                "--election-timeout=1000",
                "--snapshot-count=10000",
                "--enable-v2=true",
                "--quota-backend-bytes=8589934592",
                "--auto-compaction-retention=1",
                "--logger=zap",
                "--log-outputs=stderr",
                "--log-level=info",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(f.name, "infra0");
        assert_eq!(f.advertise_peer_urls, ["http://10.0.1.10:2380"]);
        assert_eq!(f.listen_client_urls.len(), 2);
        assert_eq!(f.bootstrap_config.as_deref(), Some(CLUSTER));
        assert_eq!(f.initial_cluster_token, "etcd-cluster-1");
        assert_eq!(f.election_timeout, Duration::from_millis(1000));
        assert_eq!(f.log, "info");
        for flag in [
            "quota-backend-bytes",
            "auto-compaction-retention",
            "logger",
            "log-outputs",
        ] {
            assert!(
                f.warnings.iter().any(|w| w.contains(flag)),
                "{flag}: {:?}",
                f.warnings
            );
        }
        let cfg = NodeConfig::from_flags(f).unwrap();
        assert_eq!(cfg.bootstrap.len(), 3);
    }

    #[test]
    fn etcd_environment_variables_fill_in_after_flags_and_deimos_variables() {
        let f = parse(
            &["--name", "from-flag"],
            &[
                ("ETCD_NAME", "infra0"),
                ("ETCD_INITIAL_CLUSTER", CLUSTER),
                ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://10.0.1.10:2380"),
                (
                    "ETCD_LISTEN_CLIENT_URLS",
                    "http://10.0.1.10:2379,http://127.0.0.1:2379",
                ),
                ("ETCD_INITIAL_CLUSTER_STATE", "existing"),
                ("ETCD_HEARTBEAT_INTERVAL", "50"),
                ("ETCD_TRUSTED_CA_FILE", "/etc/ssl/ca.pem"),
                ("ETCD_UNSAFE_ONE_PHASE_COMMIT", "false"),
            ],
        )
        .unwrap();
        assert_eq!(f.name, "from-flag", "a flag wins over the environment");
        assert_eq!(f.bootstrap_config.as_deref(), Some(CLUSTER));
        assert_eq!(f.advertise_peer_urls, ["http://10.0.1.10:2380"]);
        assert_eq!(f.listen_client_urls.len(), 2);
        assert_eq!(f.initial_cluster_state, ClusterState::Existing);
        assert_eq!(f.heartbeat_interval, Duration::from_millis(50));
        assert!(f.explicit_durations.0, "an etcd variable counts as given");
        assert_eq!(f.ca_file.as_deref(), Some("/etc/ssl/ca.pem".as_ref()));
        assert!(!f.unsafe_one_phase_commit);
    }

    #[test]
    fn force_new_cluster_takes_etcds_boolean_forms() {
        for (args, env, want) in [
            (&[][..], &[][..], false),
            (&["--force-new-cluster"][..], &[][..], true),
            (&["--force-new-cluster=true"][..], &[][..], true),
            (&["--force-new-cluster=false"][..], &[][..], false),
            (&[][..], &[("ETCD_FORCE_NEW_CLUSTER", "true")][..], true),
            (&[][..], &[("ETCD_FORCE_NEW_CLUSTER", "false")][..], false),
        ] {
            let f = parse(args, env).unwrap();
            assert_eq!(f.force_new_cluster, want, "{args:?} {env:?}");
        }
        assert!(parse(&["--force-new-cluster=maybe"], &[]).is_err());
    }

    #[test]
    fn what_deimos_does_not_do_is_refused_with_the_reason() {
        for (args, why) in [
            (&["--wal-dir=/var/lib/etcd/wal"][..], "no separate WAL"),
            (
                &["--discovery=https://discovery.etcd.io/x"][..],
                "discovery",
            ),
            (&["--auto-tls"][..], "self-signed"),
            (&["--enable-v2=false"][..], "v2 API only"),
            (&["--client-cert-auth"][..], "--trusted-ca-file"),
            (&["--unsafe-no-fsync"][..], "on disk"),
        ] {
            let e = parse(args, &[]).unwrap_err();
            assert!(e.contains(why), "{args:?}: {e}");
        }
        // Their harmless forms pass.
        let f = parse(
            &[
                "--wal-dir=",
                "--auto-tls=false",
                "--force-new-cluster=false",
                "--client-cert-auth=false",
            ],
            &[],
        )
        .unwrap();
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
    }

    /// The shape of etcd's sample `etcd.conf.yml`.
    const CONFIG: &str = r#"
name: 'infra1'
data-dir: /var/lib/etcd
wal-dir:
snapshot-count: 10000
heartbeat-interval: 100
election-timeout: 1000
quota-backend-bytes: 0
listen-peer-urls: http://10.0.1.11:2380
listen-client-urls: [http://10.0.1.11:2379, http://127.0.0.1:2379]
max-snapshots: 5
max-wals: 5
cors:
initial-advertise-peer-urls: http://10.0.1.11:2380
advertise-client-urls: http://10.0.1.11:2379
discovery:
discovery-fallback: 'proxy'
discovery-proxy:
discovery-srv:
initial-cluster: 'infra0=http://10.0.1.10:2380,infra1=http://10.0.1.11:2380,infra2=http://10.0.1.12:2380'
initial-cluster-token: 'etcd-cluster'
initial-cluster-state: 'new'
strict-reconfig-check: false
enable-v2: true
enable-pprof: true
proxy: 'off'
client-transport-security:
  cert-file:
  key-file:
  client-cert-auth: false
  trusted-ca-file:
  auto-tls: false
peer-transport-security:
  cert-file: /etc/etcd/peer.pem
  key-file: /etc/etcd/peer-key.pem
  client-cert-auth: true
  trusted-ca-file: /etc/etcd/ca.pem
  auto-tls: false
debug: false
log-level: debug
logger: zap
log-outputs: [stderr]
force-new-cluster: false
some-future-flag: 1
"#;

    #[test]
    fn an_etcd_config_file_stands_for_its_flags_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etcd.conf.yml");
        std::fs::write(&path, CONFIG).unwrap();
        let f = parse(
            &["--config-file", path.to_str().unwrap(), "--name", "ignored"],
            &[("ETCD_SNAPSHOT_COUNT", "5")],
        )
        .unwrap();
        assert_eq!(f.name, "infra1", "the file alone counts, as in etcd");
        assert_eq!(f.snapshot_count, 10_000);
        assert_eq!(f.listen_client_urls.len(), 2);
        assert_eq!(f.advertise_peer_urls, ["http://10.0.1.11:2380"]);
        assert_eq!(
            f.peer_cert_file.as_deref(),
            Some("/etc/etcd/peer.pem".as_ref())
        );
        assert_eq!(f.peer_ca_file.as_deref(), Some("/etc/etcd/ca.pem".as_ref()));
        assert_eq!(f.cert_file, None);
        assert_eq!(f.log, "debug");
        let said = f.warnings.join("\n");
        for w in ["strict-reconfig-check", "enable-pprof", "some-future-flag"] {
            assert!(said.contains(w), "{w}: {said}");
        }
        // The same through ETCD_CONFIG_FILE.
        let f = parse(&[], &[("ETCD_CONFIG_FILE", path.to_str().unwrap())]).unwrap();
        assert_eq!(f.name, "infra1");
        // A broken file is refused with its path.
        std::fs::write(&path, "name: [unclosed").unwrap();
        let e = parse(&["--config-file", path.to_str().unwrap()], &[]).unwrap_err();
        assert!(e.contains("etcd.conf.yml"), "{e}");
        std::fs::write(&path, "wal-dir: /wal\n").unwrap();
        let e = parse(&["--config-file", path.to_str().unwrap()], &[]).unwrap_err();
        assert!(e.contains("--wal-dir"), "{e}");
    }
}
