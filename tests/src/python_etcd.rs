//! python-etcd, an unchanged etcd v2 client from PyPI, driving a cluster through the scripts in
//! `tests/compat/` (each prints one line per check and ends with `N passed, 0 failed`).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::harness::Cluster;

/// Whether `python3` can import `module` (`etcd`, or `etcd.auth` for the auth classes).
pub fn available(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run `tests/compat/<script>` against every node of `c` (as `127.0.0.1:<client port>`).
pub fn run(script: &str, c: &Cluster) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("compat")
        .join(script);
    let endpoints: Vec<String> = (0..c.len())
        .map(|i| format!("127.0.0.1:{}", c.node(i).client_port))
        .collect();
    Command::new("python3")
        .arg(&script)
        .args(&endpoints)
        // The scripts import compat/checks.py: leave no __pycache__ in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run python3")
}

/// Whether the script's last word is that every check passed.
pub fn all_passed(out: &Output) -> bool {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.ends_with("passed, 0 failed"))
}

/// Exit status, stdout and stderr, for failure messages.
pub fn show(o: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
