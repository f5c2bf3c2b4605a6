//! Backup and disaster recovery with real processes: `deimosctl snapshot save` of a loaded
//! 3-node cluster under write load, `snapshot restore` into a new 3-node cluster, refusal of
//! damaged files, and `deimos --force-new-cluster` on the lone survivor of a lost quorum.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use deimos_tests::harness::deimosctl_bin;
use deimos_tests::{Cluster, ClusterOptions, Http};

const KEYS: usize = 100_000;
const DIRS: usize = 100;
const WRITERS: usize = 16;
const T: Duration = Duration::from_secs(10);

fn key(i: usize) -> String {
    format!("/bk/d{:02}/k{i:06}", i % DIRS)
}

fn ctl(args: &[&str]) -> Output {
    Command::new(deimosctl_bin())
        .args(args)
        .output()
        .expect("run deimosctl")
}

fn ctl_ok(args: &[&str]) -> String {
    let o = ctl(args);
    assert!(
        o.status.success(),
        "deimosctl {args:?}: {:?}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// PUT `key=value` on `url`, retrying through a leader change; true once acknowledged.
fn put(http: &Http, url: &str, key: &str, value: &str) -> bool {
    for _ in 0..50 {
        let r = http.request(
            "PUT",
            &format!("{url}/v2/keys{key}"),
            Some((
                "application/x-www-form-urlencoded",
                format!("value={value}").as_bytes(),
            )),
            T,
        );
        match r {
            Ok(r) if r.status == 200 || r.status == 201 => return true,
            _ => thread::sleep(Duration::from_millis(50)),
        }
    }
    false
}

/// Write keys `0..n` with `WRITERS` concurrent clients through the leader.
fn load_keys(c: &Cluster, n: usize) {
    let url = c.client_url(c.wait_leader(T));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (url, next, http) = (url.clone(), next.clone(), Http::new());
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                assert!(put(&http, &url, &key(i), &format!("v{i}")), "write {i}");
            })
        })
        .collect();
    for w in workers {
        w.join().expect("writer");
    }
}

/// Writes of keys `/load/<writer>/<n>` until stopped, recording when each was acknowledged.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String, Instant)>>>,
    workers: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(url: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..4)
            .map(|w| {
                let (url, stop, acked, http) =
                    (url.to_string(), stop.clone(), acked.clone(), Http::new());
                thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let (k, v) = (format!("/load/w{w}/{n:06}"), format!("x{w}-{n}"));
                        if put(&http, &url, &k, &v) {
                            acked.lock().unwrap().push((k, v, Instant::now()));
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            workers,
        }
    }

    /// Poll until at least `n` writes were acknowledged at or after `since`.
    fn wait_acked(&self, since: Instant, n: usize) {
        let deadline = Instant::now() + T;
        let count = || {
            let acked = self.acked.lock().unwrap();
            acked.iter().filter(|(_, _, at)| *at >= since).count()
        };
        while count() < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} load writes in {T:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(self) -> Vec<(String, String, Instant)> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.join().expect("load writer");
        }
        Arc::try_unwrap(self.acked)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_default()
    }
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Every `key → value` below `dir` on `url` (recursive GET).
fn values_below(http: &Http, url: &str, dir: &str) -> std::collections::HashMap<String, String> {
    let r = http.get(&format!("{url}/v2/keys{dir}?recursive=true"));
    assert_eq!(r.status, 200, "{dir}: {}", r.body);
    let mut out = std::collections::HashMap::new();
    fn walk(n: &serde_json::Value, out: &mut std::collections::HashMap<String, String>) {
        if let Some(v) = n["value"].as_str() {
            out.insert(n["key"].as_str().unwrap_or("").to_string(), v.to_string());
        }
        for c in n["nodes"].as_array().into_iter().flatten() {
            walk(c, out);
        }
    }
    walk(&r.json()["node"], &mut out);
    out
}

fn damaged_copies(file: &Path, dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let data = std::fs::read(file).unwrap();
    let mut flipped = data.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x04;
    let corrupt = dir.join("corrupt.snap");
    std::fs::write(&corrupt, &flipped).unwrap();
    let truncated = dir.join("truncated.snap");
    std::fs::write(&truncated, &data[..data.len() - 100]).unwrap();
    vec![(corrupt, "corrupt"), (truncated, "truncated")]
}

#[test]
fn a_snapshot_taken_under_load_restores_every_acknowledged_key_into_a_new_cluster() {
    let started = Instant::now();
    let mut old = Cluster::start(3);
    let leader = old.wait_leader(T);
    let t = Instant::now();
    load_keys(&old, KEYS);
    let load_time = t.elapsed();
    eprintln!(
        "wrote {KEYS} keys in {:.1}s ({:.0}/s)",
        load_time.as_secs_f64(),
        KEYS as f64 / load_time.as_secs_f64()
    );
    let old_cluster_id = old
        .get(leader, "/bk/d00/k000000")
        .header("x-etcd-cluster-id")
        .map(str::to_string);

    // Under write load: snapshot from a follower (its read point comes from the leader).
    let load_from = Instant::now();
    let load = Load::start(&old.client_url(leader));
    load.wait_acked(load_from, 20);
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("backup.snap");
    let file_s = file.to_str().unwrap();
    let asked = Instant::now();
    let saved = ctl_ok(&[
        "-C",
        &old.client_url(follower),
        "-o",
        "json",
        "snapshot",
        "save",
        file_s,
    ]);
    let save_time = asked.elapsed();
    load.wait_acked(asked, 20);
    let acked = load.stop();
    let before: Vec<_> = acked.iter().filter(|(_, _, at)| *at < asked).collect();
    let saved = json(&saved);
    eprintln!(
        "snapshot: {saved} in {:.2}s; {} load writes acknowledged before it, {} in all",
        save_time.as_secs_f64(),
        before.len(),
        acked.len()
    );
    assert!(!before.is_empty(), "the load ran before the snapshot");
    assert!(
        acked.len() > before.len(),
        "the load ran during the snapshot"
    );
    let keys = saved["keys"].as_u64().unwrap();
    assert!(keys >= (KEYS + before.len()) as u64, "{saved}");
    let status = json(&ctl_ok(&["-o", "json", "snapshot", "status", file_s]));
    assert_eq!(status["hash"], saved["hash"]);
    assert_eq!(status["keys"], saved["keys"]);
    assert_eq!(status["index"], saved["index"]);

    // Damaged copies are refused by status and by restore, which then leaves no data dir.
    for (bad, what) in damaged_copies(&file, work.path()) {
        let o = ctl(&["snapshot", "status", bad.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains("corrupt or truncated"), "{what}: {err}");
        let dir = work.path().join(format!("restored-{what}"));
        let o = ctl(&[
            "snapshot",
            "restore",
            bad.to_str().unwrap(),
            "--data-dir",
            dir.to_str().unwrap(),
            "--name",
            "x",
            "--initial-cluster",
            "x=http://127.0.0.1:1",
        ]);
        assert_eq!(o.status.code(), Some(1), "{what}");
        assert!(
            !dir.exists(),
            "{what}: a failed restore left {}",
            dir.display()
        );
    }

    // The old cluster is gone for good.
    old.kill9_all();
    drop(old);

    // A new cluster: every member restored from the same file with its own name.
    let mut new = Cluster::create(3, ClusterOptions::default());
    let t = Instant::now();
    for i in 0..3 {
        let n = new.node(i);
        ctl_ok(&[
            "snapshot",
            "restore",
            file_s,
            "--data-dir",
            n.data_dir.to_str().unwrap(),
            "--name",
            &n.name,
            "--initial-cluster",
            new.bootstrap_config(),
            "--initial-advertise-peer-urls",
            &n.peer_url(),
        ]);
    }
    eprintln!("3 restores in {:.2}s", t.elapsed().as_secs_f64());
    new.start_all();
    let l = new.wait_leader(Duration::from_secs(20));
    let url = new.client_url(l);
    let http = Http::new();

    // Every key written before the snapshot, with its value, on the new cluster.
    let t = Instant::now();
    let mut found = 0;
    for d in 0..DIRS {
        let got = values_below(&http, &url, &format!("/bk/d{d:02}"));
        for i in (d..KEYS).step_by(DIRS) {
            assert_eq!(got.get(&key(i)), Some(&format!("v{i}")), "{}", key(i));
            found += 1;
        }
    }
    assert_eq!(found, KEYS);
    let load_keys = values_below(&http, &url, "/load");
    for (k, v, _) in &before {
        assert_eq!(
            load_keys.get(k),
            Some(v),
            "{k}, acknowledged before the snapshot"
        );
    }
    eprintln!(
        "checked {} keys in {:.1}s",
        found + before.len(),
        t.elapsed().as_secs_f64()
    );

    // A new cluster: its own id, the new members only; and it takes writes.
    let r = new.set(l, "/after", "restore");
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    assert_ne!(
        r.header("x-etcd-cluster-id").map(str::to_string),
        old_cluster_id
    );
    let members = http.get(&format!("{url}/v2/members")).json();
    let names: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names.len(), 3, "{members}");
    for i in 0..3 {
        assert!(names.contains(&new.node(i).name.as_str()), "{members}");
    }
    let elapsed = started.elapsed();
    eprintln!("whole test: {:.1}s", elapsed.as_secs_f64());
}

#[test]
fn force_new_cluster_brings_the_lone_survivor_back_with_its_data() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader(T);
    let url = c.client_url(leader);
    let http = Http::new();
    for i in 0..300 {
        assert!(put(&http, &url, &format!("/fnc/k{i:03}"), &format!("v{i}")));
    }
    // Quorum lost: two members die; the survivor alone cannot write.
    let survivor = (leader + 1) % 3;
    for i in (0..3).filter(|&i| i != survivor) {
        c.kill9(i);
    }
    let r = http.request(
        "PUT",
        &c.keys_url(survivor, "/fnc/stuck"),
        Some(("application/x-www-form-urlencoded", b"value=x")),
        Duration::from_secs(8),
    );
    assert!(!r.is_ok_and(|r| r.status < 300), "no quorum, no write");

    c.kill9(survivor);
    c.node_mut(survivor)
        .extra_args
        .push("--force-new-cluster".into());
    c.restart(survivor);
    let l = c.wait_leader_among(&[survivor], Duration::from_secs(20));
    assert_eq!(l, survivor);
    let st = c.status(survivor).unwrap();
    assert_eq!(st.voters.len(), 1, "{:?}", st.raw);
    let got = values_below(&http, &c.client_url(survivor), "/fnc");
    for i in 0..300 {
        assert_eq!(got.get(&format!("/fnc/k{i:03}")), Some(&format!("v{i}")));
    }
    let r = c.set(survivor, "/fnc/after", "forced");
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let members = http
        .get(&format!("{}/v2/members", c.client_url(survivor)))
        .json();
    assert_eq!(members["members"].as_array().unwrap().len(), 1, "{members}");
    let log = std::fs::read_to_string(c.node(survivor).log_path()).unwrap();
    assert!(
        log.contains("--force-new-cluster: this member is now the only member"),
        "the log says what happened"
    );

    // Restarted without the flag it stays a one-member cluster, and grows with `member add`.
    c.node_mut(survivor).extra_args.clear();
    c.terminate(survivor, T);
    c.restart(survivor);
    c.wait_leader_among(&[survivor], Duration::from_secs(20));
    let n = c.new_node("n4");
    // With one voter, any added voter is needed for the quorum until it runs: --force.
    let peer = c.node(n).peer_url();
    ctl_ok(&[
        "-C",
        &c.client_url(survivor),
        "member",
        "add",
        "n4",
        "--peer-urls",
        &peer,
        "--force",
    ]);
    c.start_joining(n);
    let r = c.set(survivor, "/fnc/grown", "yes");
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let t = Instant::now();
    loop {
        let r = c.http().get(&format!(
            "{}/v2/keys/fnc/k150?consistency=local",
            c.client_url(n)
        ));
        if r.status == 200 {
            assert_eq!(r.json()["node"]["value"], "v150");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "n4 caught up: {r:?}");
        thread::sleep(Duration::from_millis(100));
    }
}
