//! Real `deimos` clusters on loopback for integration and fault-injection tests.
//!
//! A [`Cluster`] owns one temp directory holding every node's data dir and log file, starts each
//! node as a child process with its own free client and peer port, and can kill (`SIGKILL`),
//! restart (same data dir and ports), pause (`SIGSTOP`) and resume (`SIGCONT`) nodes. Dropping it
//! kills every node; when the drop happens during a panic the tail of each node's log is printed,
//! so a failing test shows what the servers said.
//!
//! Which binary: `DEIMOS_BIN` if set; otherwise the harness runs `cargo build -p deimos-server`
//! once per test process, in the same profile as the tests and the same target dir (a no-op when
//! it is fresh), so a test never runs a stale server next to new test code. Set
//! `DEIMOS_NO_BUILD=1` to skip that step and take the newest existing `target/{release,debug}`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{metric_sum, Http, Reply};

/// How often `wait_*` helpers poll.
pub const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------
// Binary lookup

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the workspace")
        .to_path_buf()
}

/// The target dir cargo builds into: `CARGO_TARGET_DIR` when set (relative to the workspace),
/// else `<workspace>/target`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// The profile the tests were built with; the server is built the same way so that
/// `cargo test --release` does not pay for a second profile's build.
fn test_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Newest existing `deimos` among release and debug in the target dirs we know of.
fn newest_existing() -> Option<PathBuf> {
    let mut dirs = vec![target_dir()];
    let default = workspace_root().join("target");
    if !dirs.contains(&default) {
        dirs.push(default);
    }
    dirs.iter()
        .flat_map(|d| ["release", "debug"].map(|p| d.join(p).join("deimos")))
        .filter(|p| p.is_file())
        .max_by_key(|p| mtime(p))
}

fn cargo_build() -> Result<PathBuf, String> {
    cargo_build_bin("deimos-server", "deimos")
}

fn cargo_build_bin(package: &str, name: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "-p", package, "--bin", name]);
    if test_profile() == "release" {
        cmd.arg("--release");
    }
    eprintln!("harness: building the server: {cmd:?}");
    // Captured, so a passing run's log is not interleaved with cargo's progress lines.
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p {package} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let bin = target_dir().join(test_profile()).join(name);
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "cargo build succeeded but {} is missing",
            bin.display()
        ))
    }
}

/// Path to the `deimos` binary (see the module doc for the order); resolved once per process.
pub fn deimos_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(b) = std::env::var_os("DEIMOS_BIN").filter(|b| !b.is_empty()) {
            return PathBuf::from(b);
        }
        let no_build = std::env::var_os("DEIMOS_NO_BUILD").is_some_and(|v| v != "0");
        if !no_build {
            match cargo_build() {
                Ok(b) => return b,
                Err(e) => eprintln!("harness: {e}; falling back to an existing binary"),
            }
        }
        newest_existing().unwrap_or_else(|| {
            panic!(
                "no deimos binary: set DEIMOS_BIN or run `cargo build -p deimos-server` (looked in {})",
                target_dir().display()
            )
        })
    })
    .clone()
}

/// Path to the `deimosctl` binary: `DEIMOSCTL_BIN`, else built as the server is (unless
/// `DEIMOS_NO_BUILD`), else the one beside the server binary.
pub fn deimosctl_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(b) = std::env::var_os("DEIMOSCTL_BIN").filter(|b| !b.is_empty()) {
            return PathBuf::from(b);
        }
        let no_build = std::env::var_os("DEIMOS_NO_BUILD").is_some_and(|v| v != "0");
        if !no_build {
            match cargo_build_bin("deimos-cli", "deimosctl") {
                Ok(b) => return b,
                Err(e) => eprintln!("harness: {e}; falling back to an existing binary"),
            }
        }
        deimos_bin().with_file_name("deimosctl")
    })
    .clone()
}

// ---------------------------------------------------------------------------------------------
// Ports

pub use crate::ports::free_port;

// ---------------------------------------------------------------------------------------------
// Cluster

/// One member: its fixed identity (name, ports, data dir) and its current process, if any.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
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
    child: Option<Child>,
    stopped: bool,
}

impl Node {
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The advertised peer URL (what the bootstrap config names).
    pub fn peer_url(&self) -> String {
        match &self.peer_urls_override {
            Some((_, advertise)) => advertise.clone(),
            None => format!("http://127.0.0.1:{}", self.peer_port),
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
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
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
}

impl Default for ClusterOptions {
    /// The server's default timings: 100 ms heartbeat, 1000 ms election timeout.
    fn default() -> Self {
        ClusterOptions {
            heartbeat: Duration::from_millis(100),
            election: Duration::from_millis(1000),
            extra_args: Vec::new(),
            node_args: Vec::new(),
            ready_timeout: Duration::from_secs(20),
            peer_urls: Vec::new(),
            nofile: None,
        }
    }
}

/// A running cluster of `deimos` processes; see the module doc.
pub struct Cluster {
    nodes: Vec<Node>,
    bootstrap: String,
    opts: ClusterOptions,
    bin: PathBuf,
    http: Http,
    /// Holds every data dir and log; removed on drop unless `DEIMOS_KEEP_DIRS` is set.
    dir: Option<tempfile::TempDir>,
}

/// `/raft/status` of one node.
#[derive(Debug, Clone)]
pub struct RaftStatus {
    pub id: String,
    pub role: String,
    pub term: u64,
    pub leader: Option<String>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub lease_valid: bool,
    /// Voter ids (hex), sorted.
    pub voters: Vec<String>,
    pub raw: Value,
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
    /// none started, so a test can prepare their data dirs first (a restore from a backup);
    /// [`Cluster::start_all`] starts them.
    pub fn create(n: usize, opts: ClusterOptions) -> Cluster {
        assert!(n > 0, "a cluster needs a node");
        let bin = deimos_bin();
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
                    log_path: dir.path().join(format!("{name}.log")),
                    name,
                    client_port: free_port(),
                    peer_port: free_port(),
                    extra_args,
                    peer_urls_override: opts.peer_urls.get(i).cloned(),
                    bootstrap_override: None,
                    join_existing: false,
                    child: None,
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

    fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("log file");
        use std::io::Write;
        let _ = writeln!(log, "=== harness: starting {} ===", node.name);
        let mut cmd = Command::new(&self.bin);
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
            })
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        // Keep the environment from configuring the node behind the test's back.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("DEIMOS_") {
                cmd.env_remove(k);
            }
        }
        // If the test process dies without unwinding (SIGKILL, abort), take the node with it
        // rather than leave a server holding ports. PDEATHSIG fires when the *thread* that
        // spawned the child exits, so start and restart nodes from the thread that owns the
        // cluster (as every test does), not from a short-lived helper thread.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        // setrlimit is async-signal-safe too.
        let nofile = self.opts.nofile;
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if let Some(n) = nofile {
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        // Plain log files (tracing colours its output by default).
        cmd.env("NO_COLOR", "1");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        let node = &mut self.nodes[i];
        node.child = Some(child);
        node.stopped = false;
    }

    fn wait_ready(&mut self, i: usize, deadline: Instant) {
        let url = format!("{}/raft/status", self.client_url(i));
        loop {
            if let Some(child) = self.nodes[i].child.as_mut() {
                if let Ok(Some(st)) = child.try_wait() {
                    self.nodes[i].child = None;
                    panic!(
                        "{} exited during start-up ({st}):\n{}",
                        self.nodes[i].name,
                        tail(&self.nodes[i].log_path, 40)
                    );
                }
            }
            if self
                .http
                .request("GET", &url, None, Duration::from_secs(1))
                .is_ok_and(|r| r.status == 200)
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not answer on {url} in time:\n{}",
                    self.nodes[i].name,
                    tail(&self.nodes[i].log_path, 40)
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

    /// `GET /raft/status` of node `i`, or `None` if it does not answer within 1 s.
    pub fn status(&self, i: usize) -> Option<RaftStatus> {
        let url = format!("{}/raft/status", self.client_url(i));
        let r = self
            .http
            .request("GET", &url, None, Duration::from_secs(1))
            .ok()?;
        if r.status != 200 {
            return None;
        }
        let v = r.json();
        Some(RaftStatus {
            id: v["id"].as_str()?.to_string(),
            role: v["role"].as_str()?.to_string(),
            term: v["term"].as_u64()?,
            leader: v["leader"].as_str().map(str::to_string),
            commit_index: v["commitIndex"].as_u64().unwrap_or(0),
            applied_index: v["appliedIndex"].as_u64().unwrap_or(0),
            lease_valid: v["lease"]["valid"].as_bool().unwrap_or(false),
            voters: {
                let mut ids: Vec<String> = v["voters"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                ids.sort();
                ids
            },
            raw: v,
        })
    }

    /// The node that says it is leader in the highest term, among running, unpaused nodes.
    pub fn leader(&self) -> Option<usize> {
        self.running()
            .into_iter()
            .filter(|&i| !self.nodes[i].stopped)
            .filter_map(|i| self.status(i).map(|s| (i, s)))
            .filter(|(_, s)| s.role == "leader")
            .max_by_key(|(_, s)| s.term)
            .map(|(i, _)| i)
    }

    /// Poll until some node is leader and every other running, unpaused node that answers
    /// names it (so requests sent anywhere reach it); panics with the logs on timeout.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        self.wait_leader_where(timeout, |_| true)
    }

    /// [`Cluster::wait_leader`] for a leader that also satisfies `accept` (e.g. a term newer
    /// than the one before a failure).
    pub fn wait_leader_where(
        &self,
        timeout: Duration,
        accept: impl Fn(&RaftStatus) -> bool,
    ) -> usize {
        self.wait_leader_in(&self.running(), timeout, accept)
    }

    /// [`Cluster::wait_leader`] among `nodes` only: a node that was removed from the cluster
    /// but still runs (it does not hear about a new leader) must not hold the wait up.
    pub fn wait_leader_among(&self, nodes: &[usize], timeout: Duration) -> usize {
        self.wait_leader_in(nodes, timeout, |_| true)
    }

    fn wait_leader_in(
        &self,
        nodes: &[usize],
        timeout: Duration,
        accept: impl Fn(&RaftStatus) -> bool,
    ) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let live: Vec<(usize, RaftStatus)> = nodes
                .iter()
                .copied()
                .filter(|&i| self.nodes[i].is_running() && !self.nodes[i].stopped)
                .filter_map(|i| self.status(i).map(|s| (i, s)))
                .collect();
            let leader = live
                .iter()
                .filter(|(_, s)| s.role == "leader" && accept(s))
                .max_by_key(|(_, s)| s.term);
            if let Some((li, ls)) = leader {
                let agreed = live
                    .iter()
                    .all(|(_, s)| s.term == ls.term && s.leader.as_deref() == Some(&ls.id));
                if agreed {
                    return *li;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "no agreed leader within {timeout:?}; statuses: {:?}\n{}",
                    live.iter().map(|(i, s)| (i, &s.raw)).collect::<Vec<_>>(),
                    self.log_tails(30)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Poll until every running node's `/v2/members` shows every node's client URL (each node
    /// publishes its own through Raft once a leader exists; until then `/v2/machines` and the
    /// members' `clientURLs` are incomplete, which matters to clients that discover endpoints
    /// there).
    pub fn wait_members_published(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let want: Vec<String> = self.nodes.iter().map(Node::client_url).collect();
        loop {
            let complete = self.running().into_iter().all(|i| {
                self.http
                    .request(
                        "GET",
                        &format!("{}/v2/members", self.client_url(i)),
                        None,
                        Duration::from_secs(1),
                    )
                    .ok()
                    .map(|r| {
                        let v = r.json();
                        let published: Vec<String> = v["members"]
                            .as_array()
                            .map(|ms| {
                                ms.iter()
                                    .flat_map(|m| {
                                        m["clientURLs"].as_array().cloned().unwrap_or_default()
                                    })
                                    .filter_map(|u| u.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default();
                        want.iter().all(|u| published.contains(u))
                    })
                    .unwrap_or(false)
            });
            if complete {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "client URLs not all published within {timeout:?}\n{}",
                self.log_tails(20)
            );
            std::thread::sleep(POLL);
        }
    }

    /// Poll until node `i` reports a valid lease (it is leader and may serve lease reads).
    pub fn wait_lease(&self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.status(i).is_some_and(|s| s.lease_valid) {
            assert!(
                Instant::now() < deadline,
                "node {i} has no valid lease after {timeout:?}: {:?}",
                self.status(i).map(|s| s.raw)
            );
            std::thread::sleep(POLL);
        }
    }

    /// Poll until node `i` has applied at least `index`.
    pub fn wait_applied(&self, i: usize, index: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.status(i).is_none_or(|s| s.applied_index < index) {
            assert!(
                Instant::now() < deadline,
                "node {i} did not apply {index} within {timeout:?}: {:?}",
                self.status(i).map(|s| s.raw)
            );
            std::thread::sleep(POLL);
        }
    }

    /// `SIGKILL` node `i` and reap it: no graceful step-down, no flush beyond what is durable.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[i].stopped = false;
    }

    /// `SIGKILL` every running node at (nearly) the same instant, then reap them.
    pub fn kill9_all(&mut self) {
        let mut children: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take())
            .collect();
        for c in &mut children {
            let _ = c.kill();
        }
        for c in &mut children {
            let _ = c.wait();
        }
        for n in &mut self.nodes {
            n.stopped = false;
        }
    }

    /// Start node `i` again with the same name, ports, data dir and flags; returns once its
    /// client port answers.
    pub fn restart(&mut self, i: usize) {
        assert!(
            !self.nodes[i].is_running(),
            "restart({i}) of a running node"
        );
        self.spawn(i);
        let deadline = Instant::now() + self.opts.ready_timeout;
        self.wait_ready(i, deadline);
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
        let peer_port = free_port();
        let bootstrap = format!("{},{name}=http://127.0.0.1:{peer_port}", self.bootstrap);
        self.nodes.push(Node {
            name: name.to_string(),
            client_port: free_port(),
            peer_port,
            data_dir: dir.join(name),
            log_path: dir.join(format!("{name}.log")),
            extra_args: self.opts.extra_args.clone(),
            peer_urls_override: None,
            bootstrap_override: Some(bootstrap),
            join_existing: true,
            child: None,
            stopped: false,
        });
        self.nodes.len() - 1
    }

    /// Start node `i` with `--initial-cluster-state existing` (a member the cluster already
    /// added, with an empty data dir or its own); returns once its client port answers.
    pub fn start_joining(&mut self, i: usize) {
        self.nodes[i].join_existing = true;
        self.restart(i);
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

    /// Send a signal to node `i`'s process.
    fn signal(&self, i: usize, sig: libc::c_int) {
        let pid = self.nodes[i]
            .pid()
            .unwrap_or_else(|| panic!("node {i} is not running"));
        let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child, which
        // is not reaped while `self.nodes[i].child` holds it, so it cannot be a recycled pid.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}) failed: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Stop node `i` the way an operator does (`SIGTERM`) and reap it; panics unless it exits,
    /// with status 0, within `timeout`.
    pub fn terminate(&mut self, i: usize, timeout: Duration) {
        self.signal(i, libc::SIGTERM);
        let mut child = self.nodes[i].child.take().expect("checked by signal");
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    assert!(
                        status.success(),
                        "node {i} exited with {status} after SIGTERM"
                    );
                    return;
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                other => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("node {i} did not exit within {timeout:?} of SIGTERM: {other:?}");
                }
            }
        }
    }

    /// Freeze node `i` (`SIGSTOP`): its sockets stay open but it answers nothing, like a
    /// long GC pause or a hung machine.
    pub fn sigstop(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.nodes[i].stopped = true;
    }

    /// Resume a node frozen by [`Cluster::sigstop`].
    pub fn sigcont(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.nodes[i].stopped = false;
    }

    /// Node `i`'s `/metrics` text.
    pub fn metrics(&self, i: usize) -> String {
        let r = self.http.get(&format!("{}/metrics", self.client_url(i)));
        assert_eq!(r.status, 200, "/metrics: {r:?}");
        r.body
    }

    /// Sum of a metric's samples on node `i` (see [`metric_sum`]).
    pub fn metric(&self, i: usize, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics(i), name, labels)
    }

    /// `GET` a key on node `i` (plain linearizable read).
    pub fn get(&self, i: usize, key: &str) -> Reply {
        self.http.get(&self.keys_url(i, key))
    }

    /// `PUT value=` on node `i`.
    pub fn set(&self, i: usize, key: &str, value: &str) -> Reply {
        self.http
            .put_form(&self.keys_url(i, key), &[("value", value)])
    }

    /// The last `lines` lines of every node's log, labelled.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "----- {} ({}) -----\n{}",
                    n.name,
                    n.log_path.display(),
                    tail(&n.log_path, lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                // SIGKILL also ends a SIGSTOPped process.
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let keep = std::env::var_os("DEIMOS_KEEP_DIRS").is_some();
        if std::thread::panicking() {
            eprintln!(
                "harness: test failed; node logs follow\n{}",
                self.log_tails(60)
            );
        }
        if keep || std::thread::panicking() && std::env::var_os("DEIMOS_KEEP_ON_FAIL").is_some() {
            if let Some(d) = self.dir.take() {
                eprintln!("harness: keeping {}", d.keep().display());
            }
        }
    }
}

/// Last `n` lines of a file (reads at most the last 64 KiB).
fn tail(path: &Path, n: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Resident set size of process `pid`, in KiB (from `/proc/<pid>/status`): what the attack
/// tests compare before and after an attack.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// How long a node may take to hand freed memory back: it collects every 5 s.
pub const RSS_SETTLE: Duration = Duration::from_secs(15);

/// Wait until process `pid`'s RSS is within 10% of `before` KiB, at most [`RSS_SETTLE`];
/// returns the last reading (the caller asserts on it, so a failure shows the figure).
pub fn rss_settled_within_10pct(pid: u32, before: u64) -> u64 {
    let bound = before + before / 10;
    let deadline = Instant::now() + RSS_SETTLE;
    loop {
        let rss = rss_kib(pid);
        if rss <= bound || Instant::now() >= deadline {
            return rss;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
