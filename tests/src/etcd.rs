//! etcd 3.4's own programs, the reference Deimos is compared with: a throw-away etcd member
//! with the v2 API on ([`Etcd`]) and `etcdctl` in v2 mode ([`etcdctl`]). Tests that need them
//! print `SKIP` (see [`skip`]) and pass when they are not installed (Debian's `etcd-server` and
//! `etcd-client`; CI installs both).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::http::Http;
use crate::ports::free_port;
use crate::process::Proc;

/// The member's name (what `member list` shows).
pub const MEMBER_NAME: &str = "it";

/// How long etcd may take to elect itself after a start.
const DEADLINE: Duration = Duration::from_secs(20);

/// Say why a test did nothing on the real stderr (libtest hides a passing test's output).
pub fn skip(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP {why}");
}

/// The etcd binary, if it is 3.4 (the last release that serves v2 with only `--enable-v2`):
/// `ETCD_BIN` when set, else `etcd` on the PATH. Looked up once per process.
pub fn etcd_bin() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = std::env::var_os("ETCD_BIN")
            .filter(|b| !b.is_empty())
            .map_or_else(|| PathBuf::from("etcd"), PathBuf::from);
        let is_34 = Command::new(&bin).arg("--version").output().is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("etcd Version: 3.4.")
        });
        is_34.then_some(bin)
    })
    .clone()
}

/// One etcd 3.4 member with the v2 API, on its own free ports and data dir. Killed when dropped,
/// or when the test process dies (see `process.rs`).
pub struct Etcd {
    proc: Proc,
    bin: PathBuf,
    dir: PathBuf,
    pub client: String,
    pub peer: String,
    _temp: Option<tempfile::TempDir>,
}

impl Etcd {
    /// A member keeping its data and log (`etcd.log`) in `dir`; returns once it has elected
    /// itself and serves quorum reads. Panics if there is no etcd 3.4 (see [`etcd_bin`]).
    pub fn start(dir: &Path) -> Etcd {
        Etcd::start_in(dir.to_path_buf(), None)
    }

    /// [`Etcd::start`] in a temp dir of its own, removed on drop.
    pub fn start_temp() -> Etcd {
        let temp = tempfile::Builder::new()
            .prefix("etcd-it-")
            .tempdir()
            .expect("temp dir");
        Etcd::start_in(temp.path().to_path_buf(), Some(temp))
    }

    fn start_in(dir: PathBuf, temp: Option<tempfile::TempDir>) -> Etcd {
        let mut e = Etcd {
            proc: Proc::new("etcd", dir.join("etcd.log")),
            bin: etcd_bin().expect("etcd 3.4 (check etcd_bin() first)"),
            dir,
            client: format!("http://127.0.0.1:{}", free_port()),
            peer: format!("http://127.0.0.1:{}", free_port()),
            _temp: temp,
        };
        e.spawn();
        e
    }

    /// The client URL.
    pub fn url(&self) -> &str {
        &self.client
    }

    /// Start (again) with the same ports and data dir; returns once it is healthy.
    pub fn spawn(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--name", MEMBER_NAME, "--enable-v2=true", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &self.client])
            .args(["--advertise-client-urls", &self.client])
            .args(["--listen-peer-urls", &self.peer])
            .args(["--initial-advertise-peer-urls", &self.peer])
            .args(["--initial-cluster", &format!("{MEMBER_NAME}={}", self.peer)]);
        // etcd reads ETCD_* variables as flags: keep the environment out of the comparison.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD") {
                cmd.env_remove(k);
            }
        }
        self.proc.start(cmd);
        // Healthy: it has a leader (itself) and a quorum read went through. Nothing is written,
        // so the key space is what the test makes of it.
        let http = Http::new();
        let until = Instant::now() + DEADLINE;
        let url = format!("{}/health", self.client);
        while !http
            .request("GET", &url, None, Duration::from_secs(1))
            .is_ok_and(|r| r.status == 200 && r.json()["health"] == "true")
        {
            assert!(
                Instant::now() < until,
                "etcd was not healthy within {DEADLINE:?}:\n{}",
                self.proc.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(&mut self) {
        self.proc.kill9();
    }
}

/// Whether `etcdctl` is installed with its v2 commands (3.4 has them under `ETCDCTL_API=2`;
/// 3.5 dropped them).
pub fn etcdctl_v2_available() -> bool {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "2")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("API version: 2")
        })
}

/// `ETCDCTL_API=2 etcdctl --endpoints <endpoints> <args>`, with no stdin (a password prompt
/// fails instead of waiting).
pub fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "2")
        .args(["--endpoints", endpoints])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run etcdctl")
}
