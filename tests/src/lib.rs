//! Cluster-level tests for Deimos: a harness that runs real `deimos` processes on loopback
//! ([`harness`]) and a blocking HTTP helper ([`http`]). The tests live in `tests/tests/`; this
//! library is what they (and later fault-injection and linearizability suites) share.
//!
//! Running: `cargo test -p deimos-tests` (or the README's `cargo test --workspace --release`).
//! `cargo test` does not build the `deimos` binary for another package's tests, so the harness
//! runs `cargo build -p deimos-server` once per test process in the tests' profile; set
//! `DEIMOS_BIN` to use a given binary instead. `tests/etcd_clients.rs` also needs
//! `pip install python-etcd` and `apt-get install etcd-client` (etcdctl 3.4, `ETCDCTL_API=2`);
//! without them those two tests print `SKIP` and pass. `tests/etcd_compare.rs` needs `etcd` 3.4
//! (`apt-get install etcd-server`) and prints `SKIP` without it.

pub mod auth;
pub mod checks;
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
pub mod ports;
pub mod proxy;
pub mod scenarios;

pub use harness::{deimos_bin, free_port, Cluster, ClusterOptions, Node, RaftStatus};
pub use http::{encode_form, metric_sum, Http, Reply};
pub use joiner::Joiner;
