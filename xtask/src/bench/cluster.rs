//! Starting, watching and stopping the benchmarked clusters.

use std::fmt::Write as _;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

// ---------------------------------------------------------------------------------------------
// Process hygiene: every child we start is registered so that Drop (normal end, error, panic)
// and the Ctrl-C handler can stop exactly those processes and remove their temp dirs.

pub(super) static REGISTRY: Mutex<Vec<(u32, Option<PathBuf>)>> = Mutex::new(Vec::new());

/// Records a child (and the temp dir to remove with it, if any) for the Ctrl-C handler.
pub(super) fn register(pid: u32, dir: Option<&Path>) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.push((pid, dir.map(Path::to_path_buf)));
    }
}

pub(super) fn unregister(pid: u32) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.retain(|(p, _)| *p != pid);
    }
}

/// This run's temp dir; the clusters' data dirs and logs live below it.
pub(super) fn base_dir() -> PathBuf {
    std::env::temp_dir().join(format!("deimos-xtask-bench-{}", std::process::id()))
}

pub(super) fn install_ctrlc_handler(keep: bool) {
    let _ = ctrlc::set_handler(move || {
        eprintln!("\nxtask bench: interrupted, stopping the clusters");
        if let Ok(r) = REGISTRY.lock() {
            // SIGKILL, like Child::kill in Drop: these clusters are throw-away, and a graceful
            // etcd shutdown can take seconds while it tries to reach peers that are gone.
            for (pid, _) in r.iter() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            if !keep {
                std::thread::sleep(Duration::from_millis(200));
                for dir in r.iter().filter_map(|(_, d)| d.as_ref()) {
                    let _ = std::fs::remove_dir_all(dir);
                }
                let _ = std::fs::remove_dir_all(base_dir());
            }
        }
        std::process::exit(130);
    });
}

/// A running local cluster. Dropping it kills and reaps its members and removes its temp dir.
pub(super) struct Cluster {
    pub(crate) system: System,
    pub(crate) members: Vec<(String, Child)>,
    /// Each member's binary and arguments, to start it again (`restart`).
    pub(crate) commands: Vec<(PathBuf, Vec<String>)>,
    pub(crate) client_urls: Vec<String>,
    pub(crate) dir: PathBuf,
    pub(crate) keep: bool,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.members {
            let _ = child.kill();
            let _ = child.wait();
            unregister(child.id());
        }
        if self.keep {
            eprintln!(
                "kept {} data and logs in {}",
                self.system.name(),
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Cluster {
    pub(crate) fn log_tails(&self) -> String {
        let mut s = String::new();
        for (name, _) in &self.members {
            let log =
                std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(15);
            let _ = writeln!(
                s,
                "--- {name}.log (last lines) ---\n{}",
                lines[from..].join("\n")
            );
        }
        s
    }

    /// Kill member `i` with SIGKILL and start it again with the same command line and data.
    pub(crate) fn restart(&mut self, i: usize) -> Result<()> {
        let (name, child) = self.members.get_mut(i).ok_or("no such member")?;
        let _ = child.kill();
        let _ = child.wait();
        unregister(child.id());
        let (bin, args) = self.commands.get(i).ok_or("no command for the member")?;
        *child = spawn_member(self.system, bin, name, args, &self.dir)?;
        Ok(())
    }

    /// Fails if a member already exited (bad flags, port taken, ...).
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        for (name, child) in &mut self.members {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{} member {name} exited: {status}",
                    self.system.name()
                ));
            }
        }
        Ok(())
    }
}

pub(super) fn ensure_port_free(port: u16) -> Result<()> {
    TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .map_err(|e| format!("127.0.0.1:{port} is not free ({e}); stop whatever uses it"))
}

pub(super) fn spawn_member(
    system: System,
    bin: &Path,
    name: &str,
    args: &[String],
    dir: &Path,
) -> Result<Child> {
    // Appended to: a member started again (`Cluster::restart`) keeps its earlier log.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .map_err(|e| format!("creating log for {name}: {e}"))?;
    let err = log
        .try_clone()
        .map_err(|e| format!("log for {name}: {e}"))?;
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("starting {} {name} ({}): {e}", system.name(), bin.display()))?;
    register(child.id(), Some(dir));
    Ok(child)
}

/// One member's names and URLs, from which each system builds its own flags.
pub(super) struct MemberSpec {
    pub(crate) name: String,
    pub(crate) client: String,
    pub(crate) peer: String,
    pub(crate) data: PathBuf,
}

/// Start three members of `system` on loopback: names `<prefix>1..3`, client ports
/// `client_base + i`, peer ports `peer_base + i`; `args` turns a member and the cluster's
/// `name=peerURL,...` list into that system's command line.
pub(super) fn start_cluster(
    system: System,
    bin: &Path,
    base: &Path,
    keep: bool,
    (prefix, client_base, peer_base): (&str, u16, u16),
    args: impl Fn(&MemberSpec, &str) -> Vec<String>,
) -> Result<Cluster> {
    let dir = base.join(system.name());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut cluster = Cluster {
        system,
        members: Vec::new(),
        commands: Vec::new(),
        client_urls: Vec::new(),
        dir: dir.clone(),
        keep,
    };
    let initial = (1..=3u16)
        .map(|i| format!("{prefix}{i}=http://127.0.0.1:{}", peer_base + i))
        .collect::<Vec<_>>()
        .join(",");
    for i in 1..=3u16 {
        ensure_port_free(client_base + i)?;
        ensure_port_free(peer_base + i)?;
    }
    for i in 1..=3u16 {
        let m = MemberSpec {
            name: format!("{prefix}{i}"),
            client: format!("http://127.0.0.1:{}", client_base + i),
            peer: format!("http://127.0.0.1:{}", peer_base + i),
            data: dir.join(format!("{prefix}{i}-data")),
        };
        let argv = args(&m, &initial);
        let child = spawn_member(system, bin, &m.name, &argv, &dir)?;
        cluster.commands.push((bin.to_path_buf(), argv));
        cluster.client_urls.push(m.client.clone());
        cluster.members.push((m.name, child));
    }
    Ok(cluster)
}

pub(super) fn flags(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .collect()
}

pub(super) fn start_deimos(bin: &Path, base: &Path, keep: bool) -> Result<Cluster> {
    start_deimos_on(bin, base, keep, ("n", 4100, 7100))
}

/// [`start_deimos`] with the member name prefix and port bases given, for running two Deimos
/// clusters side by side (`cargo xtask ab`).
pub(super) fn start_deimos_on(
    bin: &Path,
    base: &Path,
    keep: bool,
    names_and_ports: (&str, u16, u16),
) -> Result<Cluster> {
    start_cluster(
        System::Deimos,
        bin,
        base,
        keep,
        names_and_ports,
        |m, list| deimos_args(m, list, false),
    )
}

pub(super) fn start_etcd(base: &Path, keep: bool) -> Result<Cluster> {
    start_cluster(
        System::Etcd,
        Path::new("etcd"),
        base,
        keep,
        ("e", 4200, 7200),
        |m, list| etcd_args(m, list, false),
    )
}

/// A Deimos member's command line: `list` is the `name=peerURL,...` of the members to start
/// from; `joining` for a member added to a running cluster.
pub(super) fn deimos_args(m: &MemberSpec, list: &str, joining: bool) -> Vec<String> {
    let data = m.data.display().to_string();
    let mut a = flags(&[
        ("--name", &m.name),
        ("--data-dir", &data),
        ("--listen-client-urls", &m.client),
        ("--advertise-client-urls", &m.client),
        ("--listen-peer-urls", &m.peer),
        ("--advertise-peer-urls", &m.peer),
        ("--bootstrap-config", list),
        ("--heartbeat-interval", "100ms"),
        ("--election-timeout", "1000ms"),
    ]);
    if joining {
        a.extend(flags(&[("--initial-cluster-state", "existing")]));
    }
    a
}

/// An etcd member's command line, as [`deimos_args`] (etcd's timings are plain milliseconds).
pub(super) fn etcd_args(m: &MemberSpec, list: &str, joining: bool) -> Vec<String> {
    let data = m.data.display().to_string();
    let mut a = vec!["--enable-v2=true".to_string()];
    a.extend(flags(&[
        ("--name", &m.name),
        ("--data-dir", &data),
        ("--listen-client-urls", &m.client),
        ("--advertise-client-urls", &m.client),
        ("--listen-peer-urls", &m.peer),
        ("--initial-advertise-peer-urls", &m.peer),
        ("--initial-cluster", list),
        (
            "--initial-cluster-state",
            if joining { "existing" } else { "new" },
        ),
        ("--initial-cluster-token", "xtask-bench"),
        ("--heartbeat-interval", "100"),
        ("--election-timeout", "1000"),
    ]));
    a
}

// ---------------------------------------------------------------------------------------------
// Tiny blocking HTTP/1.0 GET for readiness and leader discovery: HTTP/1.0 makes both servers send
// an unchunked body and close, so reading to EOF is the whole parser we need.

pub(super) fn http_get(url: &str, path: &str) -> Result<(u16, String)> {
    crate::cluster::http_get(url, path, Duration::from_secs(2))
}

/// The member's role as it reports it: `/raft/status` on Deimos, `/v2/stats/self` on etcd.
pub(super) fn role(system: System, url: &str) -> Result<String> {
    let (path, field) = match system {
        System::Deimos => ("/raft/status", "role"),
        System::Etcd => ("/v2/stats/self", "state"),
        // No Raft: the one server is where every request goes.
        System::Ceiling => return Ok("leader".to_string()),
    };
    let (status, body) = http_get(url, path)?;
    if status != 200 {
        return Err(format!("{url}{path}: HTTP {status}"));
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{url}{path}: {e}"))?;
    let r = v.get(field).and_then(Value::as_str).unwrap_or("");
    Ok(match r {
        "StateLeader" => "leader".to_string(),
        other => other.to_string(),
    })
}

/// Waits for exactly one leader that also accepts a write, and returns its client URL.
pub(super) fn find_leader(cluster: &mut Cluster, ctl: &Path) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        cluster.check_alive()?;
        let leaders: Vec<String> = cluster
            .client_urls
            .iter()
            .filter(|u| match role(cluster.system, u) {
                Ok(r) => r == "leader",
                Err(e) => {
                    last = e;
                    false
                }
            })
            .cloned()
            .collect();
        if let [leader] = leaders.as_slice() {
            let ok = Command::new(ctl)
                .args([
                    "--endpoints",
                    leader,
                    "--timeout",
                    "3s",
                    "set",
                    "/xtask/ready",
                    "1",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(leader.clone());
            }
            last = format!("{leader} is leader but a write failed");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!(
        "{}: no leader within 60s (last: {last})\n{}",
        cluster.system.name(),
        cluster.log_tails()
    ))
}

// ---------------------------------------------------------------------------------------------
// The ceiling: a bare hyper server answering what a Deimos lease read answers.

/// Client URL of the ceiling server (`deimos-bench-ceiling`).
pub(super) const CEILING_URL: &str = "http://127.0.0.1:4300";

/// Headers of a Deimos GET the ceiling repeats (`content-length` and `date` hyper adds itself).
const CEILING_HEADERS: [&str; 7] = [
    "content-type",
    "x-etcd-index",
    "x-deimos-index",
    "x-raft-index",
    "x-raft-term",
    "x-deimos-read",
    "x-etcd-cluster-id",
];

/// Starts `deimos-bench-ceiling` answering every request with the body and headers the Deimos
/// `leader` gives for the first bench key, as a one-member "cluster" whose only member is its
/// own leader. Ready once it answers with that body.
pub(super) fn start_ceiling(bin: &Path, base: &Path, leader: &str, keep: bool) -> Result<Cluster> {
    let url = format!("{}/v2/keys/bench/k0", leader.trim_end_matches('/'));
    let reply =
        deimos_tests::http::Http::new().request("GET", &url, None, Duration::from_secs(5))?;
    if reply.status != 200 || reply.header("x-deimos-read") != Some("lease") {
        return Err(format!(
            "{url}: expected a 200 lease read to copy for the ceiling, got HTTP {} ({:?})",
            reply.status,
            reply.header("x-deimos-read")
        ));
    }
    let dir = base.join("ceiling");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let body_file = dir.join("body.json");
    std::fs::write(&body_file, &reply.body).map_err(|e| format!("{}: {e}", body_file.display()))?;
    let port = CEILING_URL.rsplit(':').next().unwrap_or("4300");
    ensure_port_free(port.parse().map_err(|e| format!("ceiling port: {e}"))?)?;
    let mut args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--body-file".to_string(),
        body_file.display().to_string(),
    ];
    for name in CEILING_HEADERS {
        if let Some(v) = reply.header(name) {
            args.extend(["--header".to_string(), format!("{name}: {v}")]);
        }
    }
    let child = spawn_member(System::Ceiling, bin, "ceiling", &args, &dir)?;
    let mut cluster = Cluster {
        system: System::Ceiling,
        members: vec![("ceiling".to_string(), child)],
        commands: vec![(bin.to_path_buf(), args)],
        client_urls: vec![CEILING_URL.to_string()],
        dir,
        keep,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        cluster.check_alive()?;
        match http_get(CEILING_URL, "/v2/keys/bench/k0") {
            Ok((200, body)) if body == reply.body => return Ok(cluster),
            Ok((status, _)) if Instant::now() > deadline => {
                return Err(format!(
                    "ceiling answered HTTP {status}, not the captured body"
                ))
            }
            Err(e) if Instant::now() > deadline => return Err(format!("ceiling: {e}")),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
