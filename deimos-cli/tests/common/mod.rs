//! What the CLI's end-to-end tests share: a throw-away etcd 3.4, a 1-node Deimos, and running
//! `deimosctl` (or the real `etcdctl` v2, for comparison) against them.
// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use deimos_tests::ports::free_port;
use deimos_tests::Cluster;

/// Kills and reaps etcd and removes its data dir however the test ends.
pub struct Etcd {
    pub child: Child,
    pub dir: PathBuf,
    pub url: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn etcd_on_path() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn start_etcd() -> Etcd {
    let (cport, pport) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("deimosctl-it-{}-{cport}", std::process::id()));
    let url = format!("http://127.0.0.1:{cport}");
    let peer = format!("http://127.0.0.1:{pport}");
    std::fs::create_dir_all(&dir).expect("temp dir");
    // The log sits in the temp dir, so it is removed with it.
    let log = std::fs::File::create(dir.join("etcd.log")).expect("log file");
    let child = Command::new("etcd")
        .args(["--enable-v2=true", "--name", "it"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("it={peer}")])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn etcd");
    let etcd = Etcd { child, dir, url };
    // Ready once a write goes through (the single member has elected itself).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = ctl(&etcd.url, &["set", "/ready", "1"]);
        if o.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "etcd did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    etcd
}

pub fn ctl(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deimosctl"))
        .args(["--endpoints", url, "--timeout", "3s"])
        .args(args)
        .output()
        .expect("run deimosctl")
}

/// Runs deimosctl against `url`: (exit code, stdout, stderr).
pub fn run_at(url: &str, args: &[&str]) -> (i32, String, String) {
    let o = ctl(url, args);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Whether etcdctl (3.4, with its v2 commands) is installed, to compare deimosctl with.
pub fn etcdctl_on_path() -> bool {
    Command::new("etcdctl")
        .arg("--version")
        .env("ETCDCTL_API", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs `ETCDCTL_API=2 etcdctl` against `url`: (exit code, stdout, stderr).
pub fn etcdctl(url: &str, args: &[&str]) -> (i32, String, String) {
    let o = Command::new("etcdctl")
        .env("ETCDCTL_API", "2")
        .args(["--endpoints", url])
        .args(args)
        .output()
        .expect("run etcdctl");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A server under test: etcd 3.4 or a 1-node Deimos, killed when dropped.
pub enum Server {
    Etcd(Etcd),
    Deimos(Cluster),
}

impl Server {
    pub fn url(&self) -> String {
        match self {
            Server::Etcd(e) => e.url.clone(),
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
    if !etcd_on_path() {
        println!("SKIP {test}: no etcd binary on PATH (apt-get install etcd-server)");
        return None;
    }
    Some(Server::Etcd(start_etcd()))
}

/// A 1-node Deimos with a leader and its member published (cluster-health needs client URLs).
pub fn deimos_server() -> Server {
    let c = Cluster::start(1);
    c.wait_leader(Duration::from_secs(15));
    c.wait_members_published(Duration::from_secs(15));
    Server::Deimos(c)
}
