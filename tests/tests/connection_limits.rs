//! Client connections cannot take what the peer port and the store need (issue 18): the
//! client listener is capped within the descriptor budget, a connection over the cap is closed
//! at once with a 503 and counted, and a connection that never sends a request is dropped after
//! the header timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deimos_tests::harness::{rss_kib, rss_settled_within_10pct, Cluster, ClusterOptions};

const LEADER: Duration = Duration::from_secs(15);
/// Connections the attack holds on one node.
const ATTACK: usize = 20_000;
/// The attacked cluster's descriptor limit: the CI machine's, below [`ATTACK`].
const NODE_NOFILE: u64 = 20_000;

fn hard_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_max
}

/// The node `nodes` all name as leader in the same term, waiting up to [`LEADER`].
fn leader_seen_by(c: &Cluster, nodes: &[usize], ids: &[String]) -> usize {
    let deadline = Instant::now() + LEADER;
    loop {
        let seen: Vec<_> = nodes
            .iter()
            .filter_map(|&i| c.status(i))
            .map(|s| (s.term, s.leader))
            .collect();
        if seen.len() == nodes.len() && seen.iter().all(|v| *v == seen[0]) {
            if let Some(l) = &seen[0].1 {
                if let Some(i) = ids.iter().position(|id| id == l) {
                    return i;
                }
            }
        }
        assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
/// How long one write may take to be acknowledged across a leader change.
const WRITE: Duration = Duration::from_secs(20);

/// PUT `key` on node `i`, retrying an answer that says "not now" (no leader yet, timed out in
/// an election) until `within` has passed; returns the last answer.
fn write_within(c: &Cluster, i: usize, key: &str, within: Duration) -> deimos_tests::http::Reply {
    let deadline = Instant::now() + within;
    loop {
        let r = c.set(i, key, "v");
        if r.status < 500 || Instant::now() >= deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `conn_holder` process holding `n` connections to `addr`, and what it reported.
struct Holder {
    child: Child,
    held: usize,
    refused: usize,
}

fn spawn_holder(addr: &str, n: usize, mode: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_conn_holder"))
        .args([addr, &n.to_string(), mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start conn_holder")
}

/// Wait for a holder's report (it comes once every connection was tried).
fn report(mut child: Child) -> Holder {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("holder report");
    let num = |w: &str| -> usize {
        let mut it = line.split_whitespace();
        while let Some(k) = it.next() {
            if k == w {
                return it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
        panic!("no {w} in holder report {line:?}")
    };
    assert_eq!(num("failed"), 0, "holder could not connect: {line}");
    Holder {
        held: num("held"),
        refused: num("refused"),
        child,
    }
}

fn hold(addr: &str, n: usize) -> Holder {
    report(spawn_holder(addr, n, "silent"))
}

/// What a new connection to `addr` is told, if anything, within 5 s.
fn first_words(addr: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return "connect failed".into();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.chars().take(12).collect()
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Closing stdin ends the holder; its exit closes every connection.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// A peer-port request made on a fresh connection: the members list every member serves.
fn peer_port_answers(url: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(host_port(url)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = "GET /members HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

/// 20,000 connections held on the leader's client port, each a long-poll watch (which no idle
/// timeout closes), re-opened when closed as a persistent attacker would: more than its default
/// cap here (the budget is the descriptor limit, 20,000 on this machine, less the peer share and
/// the reserve). Meanwhile its peer port accepts new connections, the cluster commits writes
/// that need its vote and its store, and a member killed and restarted catches up through fresh
/// peer connections. Afterwards it serves clients again.
#[test]
fn held_client_connections_starve_neither_the_peer_port_nor_the_store() {
    // Every node gets the descriptor limit of the machine this was written on (raising a hard
    // limit needs root, which CI has; lowering works anywhere), so 20,000 connections are more
    // than the default client cap wherever it runs.
    let nofile = if is_root() {
        NODE_NOFILE
    } else {
        hard_nofile().min(NODE_NOFILE)
    };
    let mut c = Cluster::start_with(
        3,
        ClusterOptions {
            nofile: Some(nofile),
            ..ClusterOptions::default()
        },
    );
    // The leader is attacked: it has the most to lose.
    let target = c.wait_leader(LEADER);
    let warm = (target + 1) % 3;
    let pid = c.node(target).pid().expect("target pid");
    let ids: Vec<String> = (0..3).map(|i| c.status(i).expect("status").id).collect();
    // The working level: after the same writes and scrapes the test makes later, and after
    // one round of the same attack. The first flood leaves a one-time high-water mark (the
    // allocator keeps 1.5-3 MB of structures sized by the busiest moment: 15.8 MB at start,
    // then 17.6, 18.7, 17.0 MB after three rounds of 10k); what must not happen is growth
    // with every further flood, which is what this compares.
    for i in 0..50 {
        assert_eq!(c.set(warm, &format!("/warm/{i}"), "v").status, 201);
        c.metrics(target);
    }
    let addr = host_port(&c.client_url(target));
    let first = Instant::now();
    let holders: Vec<Child> = (0..2)
        .map(|_| spawn_holder(&addr, ATTACK / 2, "watch"))
        .collect();
    drop(holders.into_iter().map(report).collect::<Vec<_>>());
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.metric(target, "deimos_connections_open", &[("listener", "client")]) > 2.0 {
        assert!(
            Instant::now() < deadline,
            "first-round connections still open"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rss_first = rss_kib(pid);
    eprintln!(
        "first round ({:?}) left RSS at {rss_first} KiB",
        first.elapsed()
    );
    // After a memory collection (every 5 s), as the reading after the attack may be.
    std::thread::sleep(Duration::from_millis(5500));
    let rss_before = rss_kib(pid);
    let cap = c.metric(
        target,
        "deimos_connections_limit",
        &[("listener", "client")],
    ) as usize;
    assert!(cap > 1000, "client cap {cap}");
    let peer_cap = c.metric(target, "deimos_connections_limit", &[("listener", "peer")]) as usize;
    let nofile = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    eprintln!("attacked node: client cap {cap}, peer cap {peer_cap}");
    assert!(nofile.contains("Max open files"), "{nofile}");

    let started = Instant::now();
    // Each holder keeps a margin under its own descriptor limit.
    let per_holder = (hard_nofile().saturating_sub(100) as usize).clamp(1000, 10_000);
    let holders: Vec<Child> = (0..ATTACK.div_ceil(per_holder))
        .map(|k| {
            let n = per_holder.min(ATTACK - k * per_holder);
            spawn_holder(&addr, n, "watch")
        })
        .collect();
    let holders: Vec<Holder> = holders.into_iter().map(report).collect();
    eprintln!(
        "first pass: {} holders held {} refused {} in {:?}",
        holders.len(),
        holders.iter().map(|h| h.held).sum::<usize>(),
        holders.iter().map(|h| h.refused).sum::<usize>(),
        started.elapsed()
    );
    // (The holders' first count is only a hint: connections still queued for accept look held.)
    // The holders keep re-opening what the server closes; once every place is taken a new
    // client is refused at once, with a reason.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = first_words(&addr);
        if w == "HTTP/1.1 503" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "client listener never full: {w:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("client listener full after {:?}", started.elapsed());

    // The peer port still accepts, the store still commits, a restarted member catches up.
    // The flood costs the attacked node CPU, so leadership may move meanwhile: whoever leads,
    // one member is killed such that every commit needs the attacked node's vote, its peer
    // port and its store.
    assert!(
        peer_port_answers(&c.node(target).listen_peer_url()),
        "peer port while attacked"
    );
    let others: Vec<usize> = (0..3).filter(|&i| i != target).collect();
    for i in 0..20 {
        let r = write_within(&c, others[0], &format!("/during/{i}"), WRITE);
        assert_eq!(r.status, 201, "write during the attack: {r:?}");
    }
    // Asked of the two others: the attacked node's own status page is behind its full port.
    let now_leader = leader_seen_by(&c, &others, &ids);
    let victim = if now_leader == others[0] {
        others[1]
    } else {
        others[0]
    };
    let writer = if victim == others[0] {
        others[1]
    } else {
        others[0]
    };
    c.kill9(victim);
    for i in 0..20 {
        let r = write_within(&c, writer, &format!("/while-down/{i}"), WRITE);
        assert_eq!(r.status, 201, "write with {victim} down: {r:?}");
    }
    c.restart(victim);
    let commit = c.status(writer).expect("status").commit_index;
    c.wait_applied(victim, commit, Duration::from_secs(15));
    assert!(
        peer_port_answers(&c.node(target).listen_peer_url()),
        "peer port after restart"
    );
    assert_eq!(
        first_words(&addr),
        "HTTP/1.1 503",
        "all of that happened under attack"
    );
    let attacked_for = started.elapsed();
    drop(holders);
    eprintln!("attack held for {attacked_for:?}");

    // Released: the leader serves clients again and its places are back.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let open = c.metric(target, "deimos_connections_open", &[("listener", "client")]);
        if open <= 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} client connections still open"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let refused = c.metric(
        target,
        "deimos_connections_refused_total",
        &[("listener", "client")],
    );
    assert!(
        refused >= (ATTACK - cap) as f64,
        "refusals counted: {refused}"
    );
    for i in 0..50 {
        assert_eq!(c.set(target, &format!("/after/{i}"), "v").status, 201);
        c.metrics(target);
    }
    assert_eq!(c.get(victim, "/during/19").status, 200);
    assert_eq!(c.get(target, "/while-down/19").status, 200);
    // The flood peaks near 800 MB; all of it must be handed back. Without the server's
    // PR_SET_THP_DISABLE, khugepaged kept whole 2 MiB pages of the allocator's arena resident
    // around single live objects and this failed in about one run of three (20 -> 32 MB).
    let rss_after = rss_settled_within_10pct(pid, rss_before);
    eprintln!("attacked node RSS {rss_before} KiB -> {rss_after} KiB");
    assert!(
        rss_after <= rss_before + rss_before / 10,
        "RSS {rss_before} KiB before the flood, {rss_after} KiB after it"
    );
    let log = c.log_tails(400);
    assert!(log.contains("connection limit reached"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// `--max-client-connections` is the cap: the next connection is told 503 and counted, and a
/// place frees as soon as a connection closes.
#[test]
fn the_configured_client_cap_is_kept() {
    let c = Cluster::start_with(
        1,
        ClusterOptions {
            extra_args: vec!["--max-client-connections=100".into()],
            ..ClusterOptions::default()
        },
    );
    c.wait_leader(LEADER);
    assert_eq!(
        c.metric(0, "deimos_connections_limit", &[("listener", "client")]),
        100.0
    );
    let addr = host_port(&c.client_url(0));
    let h = hold(&addr, 150);
    // The harness's own keep-alive connection may hold one of the 100 places.
    assert_eq!(h.held + h.refused, 150);
    assert!((98..=100).contains(&h.held), "held {} of 100", h.held);
    drop(h);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.http().get(&c.keys_url(0, "/")).status != 200 {
        assert!(Instant::now() < deadline, "places not given back");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        c.metric(
            0,
            "deimos_connections_refused_total",
            &[("listener", "client")]
        ) >= 50.0
    );
}

/// A client that trickles its request head (slow-loris) or sends nothing is cut off after the
/// header timeout (10 s), so held-but-idle connections give their places back.
#[test]
fn a_connection_trickling_its_request_head_is_cut_off() {
    let c = Cluster::start(1);
    c.wait_leader(LEADER);
    let addr = host_port(&c.client_url(0));
    let mut silent = TcpStream::connect(&addr).expect("connect");
    let mut slow = TcpStream::connect(&addr).expect("connect");
    slow.write_all(b"GET /v2/keys/ HTTP/1.1\r\n")
        .expect("write");
    let started = Instant::now();
    let mut slow_closed = None;
    while started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_secs(1));
        if slow.write_all(b"X-Slow: 1\r\n").is_err() {
            slow_closed = Some(started.elapsed());
            break;
        }
    }
    let slow_closed = slow_closed.expect("trickling connection still open after 20 s");
    assert!(
        slow_closed < Duration::from_secs(13),
        "cut after {slow_closed:?}"
    );
    let _ = silent.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 16];
    assert!(
        matches!(silent.read(&mut buf), Ok(0) | Err(_)),
        "a silent connection is closed too"
    );
}
