//! Issue 18, fail-stop: a node whose Raft loop cannot go on exits non-zero at once, so a
//! supervisor restarts it; it never lingers answering clients as a zombie, and what it
//! acknowledged before is all there when it comes back.
//!
//! The fault is a real one: the data dir sits on a small tmpfs that fills up under writes, so
//! a redb commit fails with ENOSPC inside the Raft loop. Mounting needs root (CI runs as root);
//! elsewhere the test says so and does nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use deimos_tests::harness::{deimos_bin, free_port};
use deimos_tests::http::Http;
use deimos_tests::process::{deimos_command, Proc};

/// A tmpfs mounted for the test, unmounted when dropped (also when the test panics).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A one-node `deimos` on `data`, logging to `log`.
fn start(data: &Path, log: &Path, client: u16, peer: u16) -> Proc {
    let mut cmd = deimos_command(&deimos_bin());
    cmd.args(["--name", "n1", "--data-dir"]).arg(data).args([
        "--listen-client-urls",
        &format!("http://127.0.0.1:{client}"),
        "--listen-peer-urls",
        &format!("http://127.0.0.1:{peer}"),
    ]);
    Proc::spawn("n1", log.to_path_buf(), cmd)
}

#[test]
fn a_node_whose_disk_fills_up_exits_non_zero_and_keeps_what_it_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(disk) = SmallDisk::mount(&dir.path().join("small"), "24m") else {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(!root, "running as root, yet a tmpfs could not be mounted");
        eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs this test as root)");
        return;
    };
    let data = disk.0.join("data");
    let log = dir.path().join("n1.log");
    let (client, peer) = (free_port(), free_port());
    let mut p = start(&data, &log, client, peer);
    let http = Http::new();
    let base = format!("http://127.0.0.1:{client}");
    let keys = |k: usize| format!("{base}/v2/keys/fill/{k}");
    let until = Instant::now() + Duration::from_secs(20);
    while http
        .request("PUT", &keys(0), Some(form(0)), Duration::from_secs(2))
        .map_or(true, |r| r.status >= 300)
    {
        assert!(Instant::now() < until, "node never took a write");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Fill the disk with 64 KiB values until a write fails.
    let mut acked = vec![0usize];
    let mut failed_at = None;
    for k in 1..2_000 {
        match http.request("PUT", &keys(k), Some(form(k)), Duration::from_secs(5)) {
            Ok(r) if r.status < 300 => acked.push(k),
            other => {
                failed_at = Some((k, format!("{other:?}")));
                break;
            }
        }
    }
    let (k, why) = failed_at.expect("24 MiB took 2,000 writes of 64 KiB");
    eprintln!(
        "{} writes acknowledged; write {k} failed: {:.200}",
        acked.len(),
        why
    );
    // From now on the node is either gone or refuses: never healthy, never a zombie that
    // takes requests it cannot make durable.
    let status = {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(s) = p.exited() {
                break Some(s);
            }
            if let Ok(r) = http.request(
                "GET",
                &format!("{base}/health"),
                None,
                Duration::from_millis(500),
            ) {
                assert_ne!(r.status, 200, "healthy after its store failed: {}", r.body);
            }
            if Instant::now() > until {
                break p.wait_exit(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let status =
        status.unwrap_or_else(|| panic!("still running 5 s after its store failed:\n{text}"));
    assert!(!status.success(), "exited with {status}");
    let fatal = text
        .lines()
        .find(|l| l.contains("raft driver failed; exiting"))
        .unwrap_or_else(|| panic!("no fatal line in the log:\n{text}"));
    eprintln!("exited with {status}: {fatal}");
    assert!(!text.contains("panicked"), "{text}");

    // Move the data to a disk with room (as an operator would) and start again: every
    // acknowledged write is there.
    let moved = dir.path().join("data");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&data)
        .arg(&moved)
        .status()
        .expect("cp");
    assert!(cp.success());
    drop(disk);
    let log2 = dir.path().join("n1-restart.log");
    let _p = start(&moved, &log2, client, peer);
    let until = Instant::now() + Duration::from_secs(30);
    for &k in &acked {
        loop {
            match http.request(
                "GET",
                &format!("{}?quorum=true", keys(k)),
                None,
                Duration::from_secs(2),
            ) {
                Ok(r) if r.status == 200 => {
                    let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
                    assert_eq!(
                        v["node"]["value"].as_str(),
                        Some(value(k).as_str()),
                        "key {k}"
                    );
                    break;
                }
                Ok(r) if r.status == 404 => panic!("acknowledged key {k} lost: {}", r.body),
                _ => {
                    let text = std::fs::read_to_string(&log2).unwrap_or_default();
                    assert!(Instant::now() < until, "restart never served:\n{text}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
    let r = http.must("PUT", &keys(100_000), Some(form(1)));
    assert!(r.status < 300, "no write after restart: {r:?}");
}

fn value(k: usize) -> String {
    let c = (b'a' + (k % 26) as u8) as char;
    std::iter::repeat_n(c, 64 * 1024).collect()
}

fn form(k: usize) -> (&'static str, &'static [u8]) {
    let body = format!("value={}", value(k));
    (
        "application/x-www-form-urlencoded",
        Box::leak(body.into_bytes().into_boxed_slice()),
    )
}
