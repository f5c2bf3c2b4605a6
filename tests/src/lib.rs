//! Real-process tests for Deimos, and the one place that runs their servers: every `deimos`
//! node or proxy and every reference etcd a test starts is a [`process::Proc`], so each is
//! spawned, logged, signalled and killed the same way. [`harness::Cluster`] runs a cluster on
//! loopback (plain HTTP or TLS), [`observe`] reads its state, [`etcd`] runs etcd 3.4 and
//! `etcdctl` v2, [`tls`] makes throw-away certificates, [`http`] is a blocking HTTP client. The
//! cluster tests live in `tests/tests/`; the server's and the CLI's process tests
//! (`deimos-server/tests`, `deimos-cli/tests`) use this library too.
//!
//! Running: `cargo test -p deimos-tests` (or the README's `cargo test --workspace --release`).
//! `cargo test` does not build the `deimos` binary for another package's tests, so the harness
//! runs `cargo build -p deimos-server` once per test process in the tests' profile; set
//! `DEIMOS_BIN` to use a given binary instead (see [`bins`]). `tests/etcd_clients.rs` also needs
//! `pip install python-etcd` and `apt-get install etcd-client` (etcdctl 3.4, `ETCDCTL_API=2`);
//! without them those two tests print `SKIP` and pass. `tests/etcd_compare.rs` needs `etcd` 3.4
//! (`apt-get install etcd-server`) and prints `SKIP` without it.

pub mod auth;
pub mod bins;
pub mod checks;
pub mod etcd;
pub mod etcd_compare;
pub mod forge;
pub mod harness;
pub mod history;
pub mod http;
pub mod jepsen;
pub mod joiner;
pub mod load;
pub mod membership;
pub mod nemesis;
pub mod observe;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod python_etcd;
pub mod scenarios;
pub mod script;
pub mod tls;

pub use harness::{deimos_bin, free_port, Cluster, ClusterOptions, Node, Scheme};
pub use http::{encode_form, metric_sum, Http, Reply};
pub use joiner::Joiner;
pub use observe::RaftStatus;
pub use process::Proc;
