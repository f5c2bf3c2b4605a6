//! `cargo xtask cluster start|stop|status`: a local 3-node Deimos cluster to play with.
//!
//! Release build, data and logs under `./target/xtask-cluster/`, clients on 127.0.0.1:4001-4003
//! and peers on 7001-7003 (the server's own defaults, counted up). The processes outlive the
//! command (own process group, so a Ctrl-C in the terminal does not reach them); their pids are
//! kept in `target/xtask-cluster/pids` so `stop` ends exactly those and nothing else.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::Value;

type Result<T> = std::result::Result<T, String>;

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Build the release server and start 3 nodes in the background.
    Start {
        /// Use the existing release binary instead of running `cargo build --release`.
        #[arg(long)]
        no_build: bool,
        /// First client port (nodes use it and the next two).
        #[arg(long, default_value_t = 4001)]
        client_port: u16,
        /// First peer port.
        #[arg(long, default_value_t = 7001)]
        peer_port: u16,
    },
    /// Stop the nodes started by `start` (graceful SIGTERM, SIGKILL after 5 s).
    Stop {
        /// Also delete the data and logs.
        #[arg(long)]
        clean: bool,
    },
    /// One line per node from its `/raft/status`.
    Status,
}

const NODES: u16 = 3;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$CARGO_TARGET_DIR` (relative to the workspace) or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if !t.is_empty() => {
            let t = PathBuf::from(t);
            if t.is_absolute() {
                t
            } else {
                root.join(t)
            }
        }
        _ => root.join("target"),
    }
}

/// Build (unless `no_build`) and return the release `deimos` binary.
pub fn release_deimos(no_build: bool) -> Result<PathBuf> {
    if !no_build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        eprintln!("building the release server ...");
        let status = Command::new(cargo)
            .current_dir(workspace_root())
            .args([
                "build",
                "--release",
                "-p",
                "deimos-server",
                "--bin",
                "deimos",
            ])
            .status()
            .map_err(|e| format!("cargo build: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build --release -p deimos-server: {status}"));
        }
    }
    let bin = target_dir().join("release").join("deimos");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} does not exist", bin.display()))
    }
}

/// The cluster's state lives in the workspace's `target/`, wherever cargo builds.
fn base_dir() -> PathBuf {
    workspace_root().join("target").join("xtask-cluster")
}

fn pid_file() -> PathBuf {
    base_dir().join("pids")
}

/// `(name, pid, client url)` per line of the pid file.
fn read_pids() -> Vec<(String, i32, String)> {
    std::fs::read_to_string(pid_file())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((
                it.next()?.to_string(),
                it.next()?.parse().ok()?,
                it.next()?.to_string(),
            ))
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    // Ask /proc rather than kill -0, so a zombie (exited, not yet reaped) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn signal(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// GET `base` + `path` with the test suite's HTTP client: the status and body.
pub fn http_get(base: &str, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let r = deimos_tests::http::Http::new().request("GET", &url, None, timeout)?;
    Ok((r.status, r.body))
}

fn start(no_build: bool, client_port: u16, peer_port: u16) -> Result<()> {
    if read_pids().iter().any(|(_, pid, _)| alive(*pid)) {
        return Err("a cluster is already running: `cargo xtask cluster stop` first".into());
    }
    let bin = release_deimos(no_build)?;
    let base = base_dir();
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    let bootstrap = (0..NODES)
        .map(|i| format!("n{}=http://127.0.0.1:{}", i + 1, peer_port + i))
        .collect::<Vec<_>>()
        .join(",");
    let mut lines = String::new();
    for i in 0..NODES {
        let name = format!("n{}", i + 1);
        let client = format!("http://127.0.0.1:{}", client_port + i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(base.join(format!("{name}.log")))
            .map_err(|e| format!("log file: {e}"))?;
        let child = Command::new(&bin)
            .args(["--name", &name])
            .arg("--data-dir")
            .arg(base.join(&name))
            .args(["--listen-client-urls", &client])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", peer_port + i),
            ])
            .args(["--bootstrap-config", &bootstrap])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        lines.push_str(&format!("{name} {} {client}\n", child.id()));
    }
    std::fs::write(pid_file(), lines).map_err(|e| format!("pid file: {e}"))?;
    // Wait for a leader so that `start && deimosctl ...` works right away.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leader = read_pids().iter().any(|(_, _, url)| {
            http_get(url, "/raft/status", Duration::from_millis(500))
                .ok()
                .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
                .is_some_and(|v| v["role"] == "leader")
        });
        if leader {
            break;
        }
        if Instant::now() > deadline {
            status()?;
            return Err(format!("no leader after 20 s; logs in {}", base.display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("data and logs: {}", base.display());
    status()
}

fn stop(clean: bool) -> Result<()> {
    let pids = read_pids();
    if pids.is_empty() {
        println!("no cluster recorded in {}", pid_file().display());
    }
    for (_, pid, _) in &pids {
        if alive(*pid) {
            signal(*pid, "-TERM");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|(_, p, _)| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (name, pid, _) in &pids {
        if alive(*pid) {
            eprintln!("{name} (pid {pid}) ignored SIGTERM; sending SIGKILL");
            signal(*pid, "-KILL");
        }
        println!("stopped {name} (pid {pid})");
    }
    let _ = std::fs::remove_file(pid_file());
    if clean {
        let base = base_dir();
        std::fs::remove_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
        println!("removed {}", base.display());
    }
    Ok(())
}

fn status() -> Result<()> {
    let pids = read_pids();
    if pids.is_empty() {
        return Err("no cluster: `cargo xtask cluster start`".into());
    }
    println!(
        "{:<4} {:<24} {:>7} {:<6} {:<9} {:>5} {:<17} {:>7} {:>7} {:<6} {:>8}",
        "NAME",
        "CLIENT URL",
        "PID",
        "ALIVE",
        "ROLE",
        "TERM",
        "LEADER",
        "COMMIT",
        "APPLIED",
        "LEASE",
        "LEASE MS"
    );
    for (name, pid, url) in pids {
        let st = http_get(&url, "/raft/status", Duration::from_secs(1))
            .ok()
            .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok());
        let f = |p: &str| {
            st.as_ref()
                .and_then(|v| v.pointer(p).cloned())
                .map(|v| match v {
                    Value::String(s) => s,
                    Value::Null => "-".into(),
                    other => other.to_string(),
                })
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<4} {:<24} {:>7} {:<6} {:<9} {:>5} {:<17} {:>7} {:>7} {:<6} {:>8}",
            name,
            url,
            pid,
            if alive(pid) { "yes" } else { "no" },
            f("/role"),
            f("/term"),
            f("/leader"),
            f("/commitIndex"),
            f("/appliedIndex"),
            f("/lease/valid"),
            f("/lease/remainingMs"),
        );
    }
    Ok(())
}

pub fn run(a: ClusterArgs) -> Result<()> {
    match a.action {
        Action::Start {
            no_build,
            client_port,
            peer_port,
        } => start(no_build, client_port, peer_port),
        Action::Stop { clean } => stop(clean),
        Action::Status => status(),
    }
}
