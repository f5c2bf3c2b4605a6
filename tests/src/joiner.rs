//! A member that joins a running [`Cluster`]: the test adds it through the members API (as a
//! voter or a learner) at [`Joiner::peer_url`], then [`Joiner::start`]s it with
//! `--initial-cluster-state existing`, as an operator would. Killed and reaped on drop.
//!
//! Kept apart from the `Cluster`'s nodes: a joiner has no place in the bootstrap configuration
//! the founders started with, and starts with the server's own timings and no extra flags.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{deimos_bin, free_port, Cluster};
use crate::process::{deimos_command, Proc};

pub struct Joiner {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    data_dir: PathBuf,
    proc: Proc,
}

impl Joiner {
    /// Ports and directories for a member named `name`, inside the cluster's temp dir; nothing
    /// runs yet.
    pub fn new(cluster: &Cluster, name: &str) -> Joiner {
        Joiner {
            name: name.to_string(),
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: cluster.dir().join(format!("{name}-data")),
            proc: Proc::new(name, cluster.dir().join(format!("{name}.log"))),
        }
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Start the process: empty data dir, `--initial-cluster-state existing`, the founders'
    /// bootstrap config plus itself (so it can reach them before it learns their records).
    pub fn start(&mut self, cluster: &Cluster) {
        let mut cmd = deimos_command(&deimos_bin());
        cmd.args(["--name", &self.name, "--initial-cluster-state", "existing"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.client_url()])
            .args(["--listen-peer-urls", &self.peer_url()])
            .args([
                "--bootstrap-config",
                &format!(
                    "{},{}={}",
                    cluster.bootstrap_config(),
                    self.name,
                    self.peer_url()
                ),
            ]);
        self.proc.start(cmd);
    }

    /// Its `/raft/status`, or `None` if it does not answer within a second.
    pub fn status(&self, cluster: &Cluster) -> Option<Value> {
        let url = format!("{}/raft/status", self.client_url());
        let r = cluster
            .http()
            .request("GET", &url, None, Duration::from_secs(1))
            .ok()?;
        (r.status == 200).then(|| r.json())
    }

    /// The last `n` lines of its log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }
}
