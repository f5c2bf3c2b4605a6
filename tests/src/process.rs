//! The one way the tests run a server process: a [`Proc`] owns a child (`deimos` node or proxy,
//! etcd), appends its output to a log file across restarts, signals, stops and reaps it, and
//! kills it when dropped — printing the tail of its log when the drop happens during a panic,
//! so a failing test shows what the server said.
//!
//! Every child is started with `PR_SET_PDEATHSIG` = `SIGKILL`: if the test process dies without
//! unwinding (SIGKILL, abort) the server goes with it rather than hold its ports. The signal
//! fires when the *thread* that spawned the child exits, so start processes from the thread
//! that owns them (as every test does), not from a short-lived helper thread.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How often waits on a process poll.
const POLL: Duration = Duration::from_millis(20);

/// A named process slot with its log file; see the module doc. It may be started again after
/// it was killed or stopped; the log keeps every run, each after a `=== harness: starting` line.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// A process named `name` whose output will go to `log_path`; nothing runs yet.
    pub fn new(name: &str, log_path: PathBuf) -> Proc {
        Proc {
            name: name.to_string(),
            log_path,
            child: None,
        }
    }

    /// [`Proc::new`] and [`Proc::start`] in one.
    pub fn spawn(name: &str, log_path: PathBuf, cmd: Command) -> Proc {
        let mut p = Proc::new(name, log_path);
        p.start(cmd);
        p
    }

    /// Run `cmd` as this process: no stdin, stdout and stderr appended to the log.
    pub fn start(&mut self, mut cmd: Command) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("log file {}: {e}", self.log_path.display()));
        let _ = writeln!(log, "=== harness: starting {} ===", self.name);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({cmd:?}): {e}", self.name));
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Started and not yet reaped (a process that exited on its own counts until
    /// [`Proc::exited`] or a wait notices).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Its exit status if it has exited (it is reaped then), without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Poll up to `within` for it to exit on its own; its status, or `None` if still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// `SIGKILL` and reap it: no graceful step-down, no flush beyond what is durable. Also ends
    /// a `SIGSTOP`ped process. Nothing happens if it is not running.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Send `sig` to the running process; panics if it is not running or `kill(2)` fails.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child, which
        // is not reaped while `self.child` holds it, so it cannot be a recycled pid.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}) failed: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Stop it the way an operator does (`SIGTERM`) and reap it; panics unless it exits, with
    /// status 0, within `timeout` (it is killed then).
    pub fn terminate(&mut self, timeout: Duration) {
        self.signal(libc::SIGTERM);
        match self.wait_exit(timeout) {
            Some(status) => assert!(
                status.success(),
                "{} exited with {status} after SIGTERM",
                self.name
            ),
            None => {
                self.kill9();
                panic!("{} did not exit within {timeout:?} of SIGTERM", self.name);
            }
        }
    }

    /// Everything in its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `lines` lines of its log under a `----- name (path) -----` line.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "----- {} ({}) -----\n{}",
            self.name,
            self.log_path.display(),
            tail(&self.log_path, lines)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(60));
        }
    }
}

/// Last `n` lines of a file (reads at most the last 64 KiB).
pub fn tail(path: &Path, n: usize) -> String {
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

/// A command for the `deimos` binary at `bin` whose environment cannot configure the node
/// behind the test's back (no `DEIMOS_*` variable reaches it), with plain log lines.
pub fn deimos_command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("DEIMOS_") {
            cmd.env_remove(k);
        }
    }
    // tracing colours its output by default.
    cmd.env("NO_COLOR", "1");
    cmd
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
