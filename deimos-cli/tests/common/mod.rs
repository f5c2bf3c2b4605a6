//! What the CLI's end-to-end tests share: a throw-away etcd 3.4 or a 1-node Deimos (both run by
//! `deimos_tests`), and running `deimosctl` (or the real `etcdctl` v2, for comparison) against
//! them.
// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::Duration;

use deimos_tests::etcd::{etcd_bin, Etcd};
use deimos_tests::Cluster;

pub fn ctl(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deimosctl"))
        .args(["--endpoints", url, "--timeout", "3s"])
        .args(args)
        .output()
        .expect("run deimosctl")
}

/// (exit code, stdout, stderr) of a finished command.
fn parts(o: Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs deimosctl against `url`: (exit code, stdout, stderr).
pub fn run_at(url: &str, args: &[&str]) -> (i32, String, String) {
    parts(ctl(url, args))
}

/// Runs `ETCDCTL_API=2 etcdctl` against `url`: (exit code, stdout, stderr).
pub fn etcdctl(url: &str, args: &[&str]) -> (i32, String, String) {
    parts(deimos_tests::etcd::etcdctl(url, args))
}

/// A throw-away etcd 3.4, or None (after printing SKIP) when there is none.
pub fn start_etcd(test: &str) -> Option<Etcd> {
    if etcd_bin().is_none() {
        println!("SKIP {test}: no etcd 3.4 on PATH (apt-get install etcd-server)");
        return None;
    }
    Some(Etcd::start_temp())
}

/// A server under test: etcd 3.4 or a 1-node Deimos, killed when dropped.
pub enum Server {
    Etcd(Etcd),
    Deimos(Cluster),
}

impl Server {
    pub fn url(&self) -> String {
        match self {
            Server::Etcd(e) => e.url().to_string(),
            Server::Deimos(c) => c.client_url(0),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Server::Etcd(_) => "etcd",
            Server::Deimos(_) => "deimos",
        }
    }
}

/// A throw-away etcd, or None (after printing SKIP) when there is no etcd binary.
pub fn etcd_server(test: &str) -> Option<Server> {
    start_etcd(test).map(Server::Etcd)
}

/// A 1-node Deimos with a leader and its member published (cluster-health needs client URLs).
pub fn deimos_server() -> Server {
    let c = Cluster::start(1);
    c.wait_leader(Duration::from_secs(15));
    c.wait_members_published(Duration::from_secs(15));
    Server::Deimos(c)
}
