//! Scripted fault scenarios: the negative test that proves the checker catches a broken lease,
//! and the durability check across `kill -9`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Cluster, ClusterOptions};
use crate::history::{History, Kind};
use crate::http::Http;
use crate::jepsen::{self, JepsenConfig, ProxiedCluster, Report};
use crate::nemesis::{set_clock_rate, FaultKind, Rng, RECOVERY};

/// Lease settings that break the safety bound: a 3 s lease against a 1 s election timeout, only
/// accepted because the check is skipped.
pub const BROKEN_LEASE_ARGS: [&str; 3] = ["--unsafe-skip-lease-check", "--lease-duration", "3s"];

/// Clock rates (leader, followers) of [`isolated_leader_scenario`]: far apart for the broken
/// lease (to make the stale-read window certain, see there), the worst allowed direction within
/// the 10% tolerance for the control run.
const BROKEN_RATES: (f64, f64) = (0.5, 2.0);
const SAFE_RATES: (f64, f64) = (0.92, 1.08);

/// Isolate the leader, let the majority elect a new one and write a new value there, and keep
/// reading from the old leader the whole time — every read recorded and the history checked.
///
/// With `broken_lease` the nodes run [`BROKEN_LEASE_ARGS`]; the old leader then keeps answering
/// lease reads with the old value after the new one is acknowledged, and the checker must say
/// so. Without it (the control) the lease is as shipped and the clocks are skewed the dangerous
/// way as far as the tolerance allows (leader 8% slow, followers 8% fast): the old leader's
/// lease must run out before anyone else can win an election, so its reads fail or go through
/// ReadIndex (which cannot complete in a minority), and the history must be linearizable.
///
/// Why the broken run also skews the clocks (leader 0.5x, followers 2x): an isolated leader
/// steps down by check-quorum after one to two election timeouts, and a step-down revokes the
/// lease; the followers elect a new leader after one to two election timeouts too. With equal
/// clocks the stale-read window (new leader has written, old leader not yet stepped down) is a
/// coin toss; with these rates the followers elect within 0.5-1 s real time while the old leader
/// cannot step down before 2 s, so the window is always there and the test is deterministic.
///
/// With `quorum_reads` the reader asks for `?quorum=true` (a read through the Raft log) instead
/// of plain GETs: in a minority the old leader's barrier entries cannot commit, so those reads
/// must fail rather than return the old value.
pub fn isolated_leader_scenario(broken_lease: bool, quorum_reads: bool, seed: u64) -> Report {
    let started = Instant::now();
    let (slow, fast) = if broken_lease {
        BROKEN_RATES
    } else {
        SAFE_RATES
    };
    let mut extra: Vec<String> = vec!["--unsafe-clock-rate".into(), slow.to_string()];
    if broken_lease {
        extra.extend(BROKEN_LEASE_ARGS.iter().map(|s| s.to_string()));
    }
    let opts = ClusterOptions {
        extra_args: extra.clone(),
        ..ClusterOptions::default()
    };
    let mut pc = ProxiedCluster::start(3, opts);
    let mut log = Vec::new();
    // Everyone starts slow so that whoever wins is a slow leader; then the followers are
    // restarted fast, one at a time, which does not disturb the leader.
    let leader = pc.cluster.wait_leader(RECOVERY);
    log.push(format!("slow leader n{}", leader + 1));
    for f in (0..3).filter(|&f| f != leader) {
        set_clock_rate(&mut pc.cluster, f, Some(fast));
        pc.cluster.kill9(f);
        pc.cluster.restart(f);
        let l = pc.cluster.wait_leader(RECOVERY);
        assert_eq!(l, leader, "leadership moved while restarting followers");
    }
    log.push(format!("followers restarted at {fast}x, leader at {slow}x"));
    let st = pc.cluster.status(leader).expect("leader status");
    pc.cluster
        .wait_applied((leader + 1) % 3, st.commit_index, Duration::from_secs(10));
    pc.cluster.wait_lease(leader, Duration::from_secs(10));

    let history = Arc::new(History::new());
    let urls: Vec<String> = (0..3).map(|i| pc.cluster.client_url(i)).collect();
    let key = "/scenario/x";
    let http = Http::new();
    let write = |client: u64, node: usize, value: &str| -> bool {
        let url = format!("{}/v2/keys{key}", urls[node]);
        let invoke = history.now();
        let input = deimos_lincheck::KvInput::Write {
            key: key.into(),
            value: value.into(),
        };
        let r = http.request(
            "PUT",
            &url,
            Some((
                "application/x-www-form-urlencoded",
                format!("value={value}").as_bytes(),
            )),
            Duration::from_secs(5),
        );
        let meta = |r: Option<&crate::http::Reply>| crate::history::Meta {
            kind: Kind::Put,
            node,
            read_mode: None,
            term: r.and_then(|r| r.header("x-raft-term").and_then(|t| t.parse().ok())),
        };
        match r {
            Ok(r) if r.status == 200 || r.status == 201 => {
                history.completed(
                    client,
                    invoke,
                    input,
                    deimos_lincheck::KvOutput::Write,
                    meta(Some(&r)),
                );
                true
            }
            Ok(r) => {
                history.indeterminate(client, invoke, input, meta(Some(&r)));
                false
            }
            Err(_) => {
                history.indeterminate(client, invoke, input, meta(None));
                false
            }
        }
    };
    assert!(write(0, leader, "old"), "initial write through the leader");

    // The reader: plain GETs on the old leader, as fast as it answers.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (history, stop, url) = (history.clone(), stop.clone(), urls[leader].clone());
        let (query, kind) = if quorum_reads {
            ("?quorum=true", Kind::QuorumGet)
        } else {
            ("", Kind::Get)
        };
        thread::spawn(move || {
            let http = Http::new();
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let invoke = history.now();
                let r = http.request(
                    "GET",
                    &format!("{url}/v2/keys{key}{query}"),
                    None,
                    Duration::from_secs(2),
                );
                if let Ok(r) = r {
                    if let Some(v) = r.json()["node"]["value"].as_str() {
                        let mode = r.header("x-deimos-read").map(str::to_string);
                        seen.push((v.to_string(), mode.clone()));
                        history.completed(
                            1,
                            invoke,
                            deimos_lincheck::KvInput::Read { key: key.into() },
                            deimos_lincheck::KvOutput::Read(Some(v.to_string())),
                            crate::history::Meta {
                                kind,
                                node: leader,
                                read_mode: mode,
                                term: r.header("x-raft-term").and_then(|t| t.parse().ok()),
                            },
                        );
                    }
                }
                thread::sleep(Duration::from_millis(5));
            }
            seen
        })
    };
    thread::sleep(Duration::from_millis(300));
    let old_term = pc.cluster.status(leader).map_or(0, |s| s.term);
    pc.net.isolate(leader, 3);
    let cut = Instant::now();
    log.push(format!("isolated n{} (term {old_term})", leader + 1));
    // Wait for the majority to elect someone else, then write the new value there.
    let deadline = Instant::now() + Duration::from_secs(20);
    let new_leader = loop {
        let found = (0..3).filter(|&i| i != leader).find(|&i| {
            pc.cluster
                .status(i)
                .is_some_and(|s| s.role == "leader" && s.term > old_term)
        });
        if let Some(n) = found {
            break n;
        }
        assert!(Instant::now() < deadline, "no new leader in the majority");
        thread::sleep(Duration::from_millis(10));
    };
    let mut wrote = false;
    while !wrote && Instant::now() < deadline {
        wrote = write(2, new_leader, "new");
    }
    log.push(format!(
        "new leader n{} wrote \"new\" {:?} after the cut (acknowledged: {wrote})",
        new_leader + 1,
        cut.elapsed()
    ));
    thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::Relaxed);
    let seen = reader.join().expect("reader");
    let stale = seen.iter().filter(|(v, _)| v == "old").count();
    log.push(format!(
        "old leader answered {} reads ({} of \"old\", modes {:?})",
        seen.len(),
        stale,
        {
            let mut m: Vec<_> = seen.iter().filter_map(|(_, m)| m.clone()).collect();
            m.dedup();
            m
        }
    ));
    pc.net.heal();
    pc.cluster.wait_leader(RECOVERY);
    let cfg = JepsenConfig {
        nodes: 3,
        seed,
        extra_args: extra,
        ..JepsenConfig::default()
    };
    jepsen::finish(
        &history,
        &format!("[partition-leader x1 (scripted), skew leader {slow}x / followers {fast}x]"),
        &log,
        &cfg,
        started.elapsed(),
    )
}

/// Durability: writers put unique keys (each written once) through random nodes while nodes
/// are killed with `kill -9` one at a time and then all at once; after a full restart every
/// acknowledged key must be there with its value (read with `?quorum=true`).
/// Returns a one-line summary, or why it failed.
pub fn durability_run(nodes: usize, duration: Duration, seed: u64) -> Result<String, String> {
    let started = Instant::now();
    let mut c = Cluster::start_with(nodes, ClusterOptions::default());
    c.wait_leader(RECOVERY);
    let urls: Vec<String> = (0..nodes).map(|i| c.client_url(i)).collect();
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let attempted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let (urls, acked, attempted, stop) =
                (urls.clone(), acked.clone(), attempted.clone(), stop.clone());
            thread::spawn(move || {
                let http = Http::new();
                let mut rng = Rng::new(seed ^ (w + 1));
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = format!("/durable/w{w}-{n}");
                    let value = format!("v{w}-{n}-{}", rng.next_u64() % 1000);
                    let url = format!("{}/v2/keys{key}", urls[rng.below(urls.len())]);
                    attempted.fetch_add(1, Ordering::Relaxed);
                    let r = http.request(
                        "PUT",
                        &url,
                        Some((
                            "application/x-www-form-urlencoded",
                            format!("value={value}").as_bytes(),
                        )),
                        Duration::from_secs(3),
                    );
                    if r.is_ok_and(|r| r.status == 201 || r.status == 200) {
                        acked
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((key, value));
                    } else {
                        thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();
    let mut rng = Rng::new(seed);
    let mut kills = 0;
    let single_end = started + duration.mul_f64(0.6);
    thread::sleep(Duration::from_secs(1));
    while Instant::now() < single_end {
        let victim = rng.below(nodes);
        c.kill9(victim);
        kills += 1;
        thread::sleep(rng.duration(Duration::from_millis(300), Duration::from_secs(2)));
        c.restart(victim);
        c.wait_leader(RECOVERY);
        thread::sleep(rng.duration(Duration::from_millis(500), Duration::from_secs(2)));
    }
    // All at once, while the writers are still going: whatever was acknowledged is on a
    // quorum's disk, or it was not acknowledged.
    c.kill9_all();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    thread::sleep(Duration::from_millis(500));
    for i in 0..nodes {
        c.restart(i);
    }
    c.wait_leader(RECOVERY);
    let http = Http::new();
    let mut lost = Vec::new();
    for (j, (key, value)) in acked.iter().enumerate() {
        let url = format!("{}/v2/keys{key}?quorum=true", urls[j % nodes]);
        let mut got = None;
        for _ in 0..20 {
            match http.request("GET", &url, None, Duration::from_secs(5)) {
                Ok(r) if r.status == 200 || r.error_code() == Some(100) => {
                    got = Some(r.json()["node"]["value"].as_str().map(str::to_string));
                    break;
                }
                _ => thread::sleep(Duration::from_millis(200)),
            }
        }
        match got {
            Some(Some(v)) if &v == value => {}
            other => lost.push(format!("{key}: acknowledged {value:?}, read {other:?}")),
        }
    }
    let line = format!(
        "durability: {} acked={} attempted={} kill9 x{kills} + kill9-all x1 nodes={nodes} seed={seed} duration={}s",
        if lost.is_empty() { "OK" } else { "LOST" },
        acked.len(),
        attempted.load(Ordering::Relaxed),
        started.elapsed().as_secs()
    );
    if lost.is_empty() {
        Ok(line)
    } else {
        Err(format!("{line}\n  {}", lost.join("\n  ")))
    }
}

/// The CI configuration of one fault run: 3 nodes unless stated, `secs` seconds.
pub fn ci_config(faults: &[FaultKind], nodes: usize, secs: u64, seed: u64) -> JepsenConfig {
    JepsenConfig {
        nodes,
        faults: faults.to_vec(),
        duration: Duration::from_secs(secs),
        seed,
        ..JepsenConfig::default()
    }
}
