//! Assertions and set-up shared by the API tests.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Cluster, ClusterOptions};
use crate::http::Reply;

/// A one-node cluster whose node has been elected (a lone node campaigns at once).
pub fn single() -> Cluster {
    single_with(Vec::new())
}

/// [`single`] with `args` added to the node's flags.
pub fn single_with(args: Vec<String>) -> Cluster {
    let c = Cluster::start_with(
        1,
        ClusterOptions {
            extra_args: args,
            ..ClusterOptions::default()
        },
    );
    assert_eq!(c.wait_leader(Duration::from_secs(10)), 0);
    c
}

/// The `node` object of a keys reply.
pub fn keys_node(r: &Reply) -> Value {
    r.json()["node"].clone()
}

/// Every keys response carries the store index twice (etcd's and Deimos's name) and the Raft
/// applied index and term, so clients can order what they see.
pub fn assert_keys_headers(r: &Reply) {
    let etcd = r.header_u64("X-Etcd-Index");
    assert_eq!(etcd, r.header_u64("X-Deimos-Index"), "{r:?}");
    r.header_u64("X-Raft-Index");
    assert!(r.header_u64("X-Raft-Term") >= 1, "{r:?}");
}

/// An etcd error response: status, `errorCode`, the four fields, and the keys headers.
pub fn assert_etcd_error(r: &Reply, status: u16, code: u64) {
    assert_eq!(r.status, status, "{r:?}");
    let v = r.json();
    assert_eq!(v["errorCode"].as_u64(), Some(code), "{r:?}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{r:?}"
    );
    assert!(v["cause"].is_string(), "{r:?}");
    assert!(v["index"].is_u64(), "{r:?}");
    assert_keys_headers(r);
}

/// The store index (`X-Etcd-Index`) as node `i` reports it on a local read of the root, which
/// needs no quorum and so also works while the cluster has none.
pub fn store_index(c: &Cluster, i: usize) -> u64 {
    let r = c
        .http()
        .get(&format!("{}?consistency=local", c.keys_url(i, "/")));
    assert_eq!(r.status, 200, "{r:?}");
    r.header_u64("X-Etcd-Index")
}

/// Poll node `i`'s `/v2/stats/store` until at least `n` watchers are registered, so a test can
/// make the write a long-poll watch waits for only once the watch is in place.
pub fn wait_watchers(c: &Cluster, i: usize, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let url = format!("{}/v2/stats/store", c.client_url(i));
    while c.http().get(&url).json()["watchers"].as_u64().unwrap_or(0) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {n} watchers on node {i} after 10 s"
        );
        std::thread::sleep(crate::harness::POLL);
    }
}
