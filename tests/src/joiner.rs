//! A member that joins a running [`Cluster`]: the test adds it through the members API (as a
//! voter or a learner) at [`Joiner::peer_url`], then [`Joiner::start`]s it with
//! `--initial-cluster-state existing`, as an operator would. Killed and reaped on drop.
//!
//! Kept apart from the harness's fixed-membership `Cluster`: a joiner has no place in the
//! bootstrap configuration the founders started with.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{deimos_bin, free_port, Cluster};

pub struct Joiner {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub log_path: PathBuf,
    data_dir: PathBuf,
    child: Option<Child>,
}

impl Joiner {
    /// Ports and directories for a member named `name`, inside the cluster's temp dir; nothing
    /// runs yet.
    pub fn new(cluster: &Cluster, name: &str) -> Joiner {
        Joiner {
            name: name.to_string(),
            client_port: free_port(),
            peer_port: free_port(),
            log_path: cluster.dir().join(format!("{name}.log")),
            data_dir: cluster.dir().join(format!("{name}-data")),
            child: None,
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
        let log = File::create(&self.log_path).expect("joiner log file");
        let mut cmd = Command::new(deimos_bin());
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
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .env("NO_COLOR", "1");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("DEIMOS_") {
                cmd.env_remove(k);
            }
        }
        // As the harness does: a test process that dies without unwinding takes the node along.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().expect("start the joining member"));
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
        let Ok(mut f) = File::open(&self.log_path) else {
            return format!("(no log at {})", self.log_path.display());
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        let lines: Vec<&str> = s.lines().collect();
        format!(
            "----- {} ({}) -----\n{}",
            self.name,
            self.log_path.display(),
            lines[lines.len().saturating_sub(n)..].join("\n")
        )
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
