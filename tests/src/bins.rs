//! Which `deimos` and `deimosctl` binaries the real-process tests run.
//!
//! `DEIMOS_BIN` / `DEIMOSCTL_BIN` if set; otherwise `cargo build -p deimos-server` (or
//! `deimos-cli`) once per test process, in the same profile as the tests and the same target dir
//! (a no-op when it is fresh), so a test never runs a stale server next to new test code. Set
//! `DEIMOS_NO_BUILD=1` to skip that step and take the newest existing `target/{release,debug}`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

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
