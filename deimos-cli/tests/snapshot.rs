//! `deimosctl snapshot save|status|restore` against a 1-node Deimos: outputs, exit statuses,
//! and refusal of bad files and bad arguments. (The 3-node backup and restore under load is in
//! `tests/tests/backup.rs`.)

mod common;

use std::path::Path;

use common::run_at;
use deimos_tests::{free_port, Cluster};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn save_then_status_report_the_same_snapshot() {
    let c = Cluster::start(1);
    c.wait_leader(std::time::Duration::from_secs(10));
    let url = c.client_url(0);
    for i in 0..20 {
        assert_eq!(run_at(&url, &["set", &format!("/s/k{i}"), "v"]).0, 0);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.snap");
    let (code, out, err) = run_at(&url, &["-o", "json", "snapshot", "save", p(&file)]);
    assert_eq!(code, 0, "{err}");
    let saved = json(&out);
    assert_eq!(saved["keys"], 21, "20 keys and their directory: {saved}");
    assert!(saved["index"].as_u64().unwrap() >= 20);
    assert!(
        !dir.path().join("a.snap.part").exists(),
        "no partial file left"
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        saved["size"].as_u64().unwrap()
    );

    let (code, out, _) = run_at(&url, &["-o", "json", "snapshot", "status", p(&file)]);
    assert_eq!(code, 0);
    let status = json(&out);
    for f in ["hash", "index", "term", "keys", "size", "etcdIndex"] {
        assert_eq!(status[f], saved[f], "{f}");
    }
    // Human output by default.
    let (code, out, _) = run_at(&url, &["snapshot", "status", p(&file)]);
    assert_eq!(code, 0);
    for line in ["hash:", "index:", "term:", "keys:       21", "size:"] {
        assert!(out.contains(line), "{line} in {out}");
    }
    let (code, out, _) = run_at(&url, &["snapshot", "save", p(&dir.path().join("b.snap"))]);
    assert_eq!(code, 0);
    assert!(out.starts_with("Snapshot saved at "), "{out}");
}

#[test]
fn bad_files_and_unreachable_servers_have_their_exit_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let missing = dir.path().join("missing.snap");
    let (code, _, err) = run_at(&dead, &["snapshot", "status", p(&missing)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot open"), "{err}");

    let garbage = dir.path().join("garbage.snap");
    std::fs::write(&garbage, b"not a snapshot at all").unwrap();
    let (code, _, err) = run_at(&dead, &["snapshot", "status", p(&garbage)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("corrupt or truncated"), "{err}");

    let empty = dir.path().join("empty.snap");
    std::fs::write(&empty, b"").unwrap();
    let (code, _, err) = run_at(&dead, &["snapshot", "status", p(&empty)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("truncated"), "{err}");

    let file = dir.path().join("never.snap");
    let (code, _, err) = run_at(&dead, &["snapshot", "save", p(&file)]);
    assert_eq!(code, 2, "unreachable: {err}");
    assert!(!file.exists() && !dir.path().join("never.snap.part").exists());
}

#[test]
fn restore_checks_its_arguments_and_never_overwrites_a_data_dir() {
    let c = Cluster::start(1);
    c.wait_leader(std::time::Duration::from_secs(10));
    let url = c.client_url(0);
    assert_eq!(run_at(&url, &["set", "/r", "1"]).0, 0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.snap");
    assert_eq!(run_at(&url, &["snapshot", "save", p(&file)]).0, 0);
    let cluster = "m1=http://127.0.0.1:7101,m2=http://127.0.0.1:7102";
    let data = dir.path().join("m1");
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "snapshot",
            "restore",
            p(&file),
            "--data-dir",
            p(&data),
            "--initial-cluster",
            cluster,
        ];
        args.extend_from_slice(extra);
        run_at(&url, &args)
    };
    let (code, _, err) = restore(&["--name", "nobody"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no member named"), "{err}");
    let (code, _, err) = restore(&[
        "--name",
        "m1",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:9999",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("differ"), "{err}");
    assert!(!data.exists(), "refused before anything was written");

    let (code, out, err) = restore(&[
        "--name",
        "m1",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:7101",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let done = json(&out);
    assert_eq!(done["keys"], 1);
    assert_eq!(done["members"].as_array().unwrap().len(), 2, "{done}");
    assert!(data.join("deimos.redb").is_file());

    let (code, _, err) = restore(&["--name", "m1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not empty"), "{err}");
}

/// etcdctl v2's `backup`: a stopped member's data dir into a checked snapshot file that
/// `snapshot status` reads back with every key; a running member's locked store is refused.
#[test]
fn backup_of_a_stopped_member_writes_a_checked_snapshot() {
    let mut c = Cluster::start(1);
    c.wait_leader(std::time::Duration::from_secs(10));
    let url = c.client_url(0);
    for i in 0..20 {
        assert_eq!(run_at(&url, &["set", &format!("/b/k{i}"), "v"]).0, 0);
    }
    let data = c.dir().join("n1");
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("bk");
    let (code, _, err) = run_at(
        &url,
        &["backup", "--data-dir", p(&data), "--backup-dir", p(&backup)],
    );
    assert_eq!(code, 1, "a running member's store is locked: {err}");
    assert!(err.contains("stop it first"), "{err}");
    assert!(!backup.join("deimos.snapshot").exists());

    c.terminate(0, std::time::Duration::from_secs(10));
    let (code, out, err) = run_at(
        &url,
        &[
            "-o",
            "json",
            "backup",
            "--data-dir",
            p(&data),
            "--backup-dir",
            p(&backup),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let saved = json(&out);
    assert_eq!(saved["keys"], 21, "20 keys and their directory: {saved}");
    let file = backup.join("deimos.snapshot");
    let (code, out, _) = run_at(&url, &["-o", "json", "snapshot", "status", p(&file)]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["hash"], saved["hash"]);

    let (code, _, err) = run_at(
        &url,
        &[
            "backup",
            "--data-dir",
            p(dir.path()),
            "--backup-dir",
            p(&backup),
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("no Deimos store"), "{err}");
}
