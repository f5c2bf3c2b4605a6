//! Cluster-level tests for Deimos: a harness that runs real `deimos` processes on loopback
//! ([`harness`]) and a blocking HTTP helper ([`http`]). The tests live in `tests/tests/`; this
//! library is what they (and later fault-injection and linearizability suites) share.

pub mod checks;
pub mod harness;
pub mod history;
pub mod http;
pub mod jepsen;
pub mod nemesis;
pub mod proxy;
pub mod scenarios;

pub use harness::{deimos_bin, free_port, Cluster, ClusterOptions, Node, RaftStatus};
pub use http::{encode_form, metric_sum, Http, Reply};
