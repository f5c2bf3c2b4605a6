//! Real `deimos` clusters on loopback for integration and fault-injection tests.
//!
//! A [`Cluster`] owns one temp directory holding every node's data dir and log file, starts each
//! node as a [`Proc`] with its own free client and peer port, and can kill (`SIGKILL`), restart
//! (same data dir and ports), pause (`SIGSTOP`) and resume (`SIGCONT`) nodes. Dropping it kills
//! every node; when the drop happens during a panic the tail of each node's log is printed, so a
//! failing test shows what the servers said. [`ClusterOptions`] sets the timings, flags for every
//! node or one, the scheme (`https` for the TLS tests, which add the certificate flags) and the
//! binary. What a test reads from a running cluster (status, leader, waits) is in `observe.rs`.
//!
//! Which binary: [`ClusterOptions::bin`], else [`deimos_bin`] (see `bins.rs`).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::bins::{deimos_bin, deimosctl_bin};
use crate::http::Http;
pub use crate::ports::free_port;
use crate::process::{deimos_command, Proc};
pub use crate::process::{rss_kib, rss_settled_within_10pct, RSS_SETTLE};

/// How often `wait_*` helpers poll.
pub const POLL: Duration = Duration::from_millis(20);

/// The scheme of a node's client and peer listeners (and of the URLs naming them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    /// The test passes the certificate flags (`--cert-file` ...) in the node's arguments. The
    /// harness cannot speak TLS, so a node counts as started once its client port accepts a
    /// connection; [`Cluster::status`] and the waits built on it need `Http`.
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One member: its fixed identity (name, ports, data dir) and its process, running or not.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub scheme: Scheme,
    /// Flags added after the common ones, on every (re)start.
    pub extra_args: Vec<String>,
    /// `(listen, advertise)` peer URLs when they are not both `127.0.0.1:peer_port` (the fault
    /// suite puts a link-cutting proxy in front of each node; see `proxy.rs`).
    pub peer_urls_override: Option<(String, String)>,
    /// `--bootstrap-config` for this node when it is not the cluster's (a member added later
    /// must find its own name in it).
    pub bootstrap_override: Option<String>,
    /// Start with `--initial-cluster-state existing`: the node was added through the API and
    /// joins the running cluster instead of bootstrapping one (ignored by the server once the
    /// data dir holds state, so restarts keep it).
    pub join_existing: bool,
    proc: Proc,
    stopped: bool,
}

impl Node {
    pub fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme.as_str(), self.client_port)
    }

    /// The advertised peer URL (what the bootstrap config names).
    pub fn peer_url(&self) -> String {
        match &self.peer_urls_override {
            Some((_, advertise)) => advertise.clone(),
            None => format!("{}://127.0.0.1:{}", self.scheme.as_str(), self.peer_port),
        }
    }

    /// Where the node itself listens for peers.
    pub fn listen_peer_url(&self) -> String {
        match &self.peer_urls_override {
            Some((listen, _)) => listen.clone(),
            None => self.peer_url(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn is_running(&self) -> bool {
        self.proc.is_running()
    }

    /// Running but frozen by [`Cluster::sigstop`].
    pub fn is_paused(&self) -> bool {
        self.stopped
    }

    /// Its log file (every run of the node, each after a `=== harness: starting` line).
    pub fn log_path(&self) -> &Path {
        &self.proc.log_path
    }

    /// Everything the node has logged so far.
    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }
}

/// Options for [`Cluster::start_with`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub heartbeat: Duration,
    pub election: Duration,
    /// Flags for every node.
    pub extra_args: Vec<String>,
    /// Flags for one node (index → flags), after `extra_args`.
    pub node_args: Vec<(usize, Vec<String>)>,
    /// How long to wait for every node's client port to answer.
    pub ready_timeout: Duration,
    /// Per node `(listen, advertise)` peer URLs; empty: `127.0.0.1:<free port>` for both.
    pub peer_urls: Vec<(String, String)>,
    /// `RLIMIT_NOFILE` (soft and hard) to start every node with, so a test of descriptor
    /// exhaustion behaves the same whatever the machine's limit; `None`: inherited.
    pub nofile: Option<u64>,
    /// The scheme of every node's listeners.
    pub scheme: Scheme,
    /// The `deimos` binary; `None`: [`deimos_bin`]. The server's own tests pass the binary
    /// cargo built for them.
    pub bin: Option<PathBuf>,
}

impl Default for ClusterOptions {
    /// The server's default timings: 100 ms heartbeat, 1000 ms election timeout; plain HTTP.
    fn default() -> Self {
        ClusterOptions {
            heartbeat: Duration::from_millis(100),
            election: Duration::from_millis(1000),
            extra_args: Vec::new(),
            node_args: Vec::new(),
            ready_timeout: Duration::from_secs(20),
            peer_urls: Vec::new(),
            nofile: None,
            scheme: Scheme::Http,
            bin: None,
        }
    }
}

/// A cluster of `deimos` processes; see the module doc.
pub struct Cluster {
    nodes: Vec<Node>,
    bootstrap: String,
    opts: ClusterOptions,
    bin: PathBuf,
    http: Http,
    /// Holds every data dir and log; removed on drop unless `DEIMOS_KEEP_DIRS` is set.
    dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// `n` nodes with the default timings; returns once every client port answers
    /// (a leader may not exist yet: see [`Cluster::wait_leader`]).
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, ClusterOptions::default())
    }

    pub fn start_with(n: usize, opts: ClusterOptions) -> Cluster {
        let mut c = Cluster::create(n, opts);
        c.start_all();
        c
    }

    /// The nodes of [`Cluster::start_with`] — names, ports, data dirs, bootstrap config — with
    /// none started, so a test can prepare their data dirs first (a restore from a backup) or
    /// start only some ([`Cluster::start_node`]); [`Cluster::start_all`] starts them all.
    pub fn create(n: usize, opts: ClusterOptions) -> Cluster {
        assert!(n > 0, "a cluster needs a node");
        let bin = opts.bin.clone().unwrap_or_else(deimos_bin);
        let dir = tempfile::Builder::new()
            .prefix("deimos-it-")
            .tempdir()
            .expect("temp dir");
        let nodes: Vec<Node> = (0..n)
            .map(|i| {
                let name = format!("n{}", i + 1);
                let mut extra_args = opts.extra_args.clone();
                for (j, args) in &opts.node_args {
                    if *j == i {
                        extra_args.extend(args.iter().cloned());
                    }
                }
                Node {
                    data_dir: dir.path().join(&name),
                    proc: Proc::new(&name, dir.path().join(format!("{name}.log"))),
                    name,
                    client_port: free_port(),
                    peer_port: free_port(),
                    scheme: opts.scheme,
                    extra_args,
                    peer_urls_override: opts.peer_urls.get(i).cloned(),
                    bootstrap_override: None,
                    join_existing: false,
                    stopped: false,
                }
            })
            .collect();
        let bootstrap = nodes
            .iter()
            .map(|n| format!("{}={}", n.name, n.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            nodes,
            bootstrap,
            opts,
            bin,
            http: Http::new(),
            dir: Some(dir),
        }
    }

    /// Start every node that is not running; returns once every client port answers.
    pub fn start_all(&mut self) {
        let idle: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].is_running())
            .collect();
        for &i in &idle {
            self.spawn(i);
        }
        let deadline = Instant::now() + self.opts.ready_timeout;
        for &i in &idle {
            self.wait_ready(i, deadline);
        }
    }

    /// Start node `i` (first start or restart: same name, ports, data dir and flags); returns
    /// once its client port answers.
    pub fn start_node(&mut self, i: usize) {
        assert!(
            !self.nodes[i].is_running(),
            "start_node({i}) of a running node"
        );
        self.spawn(i);
        let deadline = Instant::now() + self.opts.ready_timeout;
        self.wait_ready(i, deadline);
    }

    /// Start node `i` again after a kill or stop; see [`Cluster::start_node`].
    pub fn restart(&mut self, i: usize) {
        self.start_node(i);
    }

    fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let mut cmd = deimos_command(&self.bin);
        cmd.arg("--name")
            .arg(&node.name)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--listen-client-urls")
            .arg(node.client_url())
            .arg("--listen-peer-urls")
            .arg(node.listen_peer_url())
            .arg("--advertise-peer-urls")
            .arg(node.peer_url())
            .arg("--bootstrap-config")
            .arg(
                node.bootstrap_override
                    .as_deref()
                    .unwrap_or(&self.bootstrap),
            )
            .arg("--heartbeat-interval")
            .arg(format!("{}ms", self.opts.heartbeat.as_millis()))
            .arg("--election-timeout")
            .arg(format!("{}ms", self.opts.election.as_millis()))
            .args(&node.extra_args)
            .args(if node.join_existing {
                &["--initial-cluster-state", "existing"][..]
            } else {
                &[]
            });
        if let Some(n) = self.opts.nofile {
            // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let node = &mut self.nodes[i];
        node.proc.start(cmd);
        node.stopped = false;
    }

    /// Until node `i` answers `/raft/status` (over https: accepts a connection on its client
    /// port); panics with its log if it exits or the deadline passes first.
    fn wait_ready(&mut self, i: usize, deadline: Instant) {
        let url = format!("{}/raft/status", self.client_url(i));
        loop {
            let node = &mut self.nodes[i];
            if let Some(st) = node.proc.exited() {
                panic!(
                    "{} exited during start-up ({st}):\n{}",
                    node.name,
                    node.proc.log_tail(40)
                );
            }
            let ready = match node.scheme {
                Scheme::Http => self
                    .http
                    .request("GET", &url, None, Duration::from_secs(1))
                    .is_ok_and(|r| r.status == 200),
                Scheme::Https => TcpStream::connect(("127.0.0.1", node.client_port)).is_ok(),
            };
            if ready {
                return;
            }
            if Instant::now() > deadline {
                let node = &self.nodes[i];
                panic!(
                    "{} did not answer on {url} in time:\n{}",
                    node.name,
                    node.proc.log_tail(40)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// For changing a node's flags (e.g. its clock rate) before a [`Cluster::restart`].
    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    pub fn client_url(&self, i: usize) -> String {
        self.nodes[i].client_url()
    }

    /// `<client url of i>/v2/keys<key>`; `key` starts with `/`.
    pub fn keys_url(&self, i: usize, key: &str) -> String {
        format!("{}/v2/keys{key}", self.client_url(i))
    }

    pub fn http(&self) -> &Http {
        &self.http
    }

    /// The temp directory holding data dirs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir kept until drop").path()
    }

    /// The `--bootstrap-config` every node was started with.
    pub fn bootstrap_config(&self) -> &str {
        &self.bootstrap
    }

    /// Indexes of nodes with a running process (paused ones included).
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    /// `SIGKILL` node `i` and reap it: no graceful step-down, no flush beyond what is durable.
    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].proc.kill9();
        self.nodes[i].stopped = false;
    }

    /// `SIGKILL` every running node at (nearly) the same instant, then reap them.
    pub fn kill9_all(&mut self) {
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            n.proc.signal(libc::SIGKILL);
        }
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
    }

    /// A node that is neither started nor a member yet: a fresh name, ports, data dir and log,
    /// the cluster-wide flags, and a bootstrap config naming the founders and itself (what an
    /// operator passes to a member added with `member add`). The cluster must add it (see
    /// `Cluster::add_member` in `membership.rs`) before [`Cluster::start_joining`] starts it.
    pub fn new_node(&mut self, name: &str) -> usize {
        assert!(
            self.nodes.iter().all(|n| n.name != name),
            "a node named {name} exists already"
        );
        let dir = self.dir().to_path_buf();
        let mut node = Node {
            name: name.to_string(),
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: dir.join(name),
            scheme: self.opts.scheme,
            extra_args: self.opts.extra_args.clone(),
            peer_urls_override: None,
            bootstrap_override: None,
            join_existing: true,
            proc: Proc::new(name, dir.join(format!("{name}.log"))),
            stopped: false,
        };
        node.bootstrap_override = Some(format!("{},{name}={}", self.bootstrap, node.peer_url()));
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Start node `i` with `--initial-cluster-state existing` (a member the cluster already
    /// added, with an empty data dir or its own); returns once its client port answers.
    pub fn start_joining(&mut self, i: usize) {
        self.nodes[i].join_existing = true;
        self.start_node(i);
    }

    /// Stop node `i` as an operator would (`SIGTERM`; it must exit cleanly within 10 s) and
    /// delete its data dir, so that its next start is an empty member. The log file stays.
    pub fn stop_and_wipe(&mut self, i: usize) {
        if self.nodes[i].is_running() {
            if self.nodes[i].stopped {
                self.sigcont(i);
            }
            self.terminate(i, Duration::from_secs(10));
        }
        match std::fs::remove_dir_all(&self.nodes[i].data_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot wipe {}: {e}", self.nodes[i].data_dir.display()),
        }
    }

    /// Stop node `i` the way an operator does (`SIGTERM`) and reap it; panics unless it exits,
    /// with status 0, within `timeout`.
    pub fn terminate(&mut self, i: usize, timeout: Duration) {
        self.nodes[i].proc.terminate(timeout);
        self.nodes[i].stopped = false;
    }

    /// Freeze node `i` (`SIGSTOP`): its sockets stay open but it answers nothing, like a
    /// long GC pause or a hung machine.
    pub fn sigstop(&mut self, i: usize) {
        self.nodes[i].proc.signal(libc::SIGSTOP);
        self.nodes[i].stopped = true;
    }

    /// Resume a node frozen by [`Cluster::sigstop`].
    pub fn sigcont(&mut self, i: usize) {
        self.nodes[i].proc.signal(libc::SIGCONT);
        self.nodes[i].stopped = false;
    }

    /// The last `lines` lines of every node's log, labelled.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| n.proc.log_tail(lines))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("harness: test failed; node logs follow");
        }
        // Each node is killed and, during a panic, prints the tail of its log.
        self.nodes.clear();
        let keep = std::env::var_os("DEIMOS_KEEP_DIRS").is_some();
        if keep || std::thread::panicking() && std::env::var_os("DEIMOS_KEEP_ON_FAIL").is_some() {
            if let Some(d) = self.dir.take() {
                eprintln!("harness: keeping {}", d.keep().display());
            }
        }
    }
}
