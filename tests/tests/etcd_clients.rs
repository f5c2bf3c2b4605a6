//! Existing etcd v2 clients, unchanged, against a 3-node Deimos cluster's `/v2/keys`:
//! `python-etcd` from PyPI (driven by `tests/compat/python_etcd_test.py`) and `etcdctl` in v2
//! mode (Debian's `etcd-client`, 3.4). Each test prints a `SKIP` line and passes when its client
//! is not installed, so that a developer machine without them still runs the rest; CI installs
//! both (see the README's test section).

use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use deimos_tests::etcd::{etcdctl, etcdctl_v2_available, skip};
use deimos_tests::python_etcd::{self, show};
use deimos_tests::Cluster;

const LEADER: Duration = Duration::from_secs(15);

fn three() -> Cluster {
    let c = Cluster::start(3);
    c.wait_leader(LEADER);
    // Both clients discover the cluster through /v2/members and /v2/machines.
    c.wait_members_published(LEADER);
    c
}

#[test]
fn python_etcd_works_unchanged() {
    if !python_etcd::available("etcd") {
        skip("python_etcd_works_unchanged: python3 cannot import etcd (pip install python-etcd)");
        return;
    }
    let c = three();
    let out = python_etcd::run("python_etcd_test.py", &c);
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "python-etcd checks failed:\n{}",
        show(&out)
    );
    assert!(python_etcd::all_passed(&out), "{}", show(&out));
}

/// `etcdctl` v2 against the cluster's endpoints.
struct Etcdctl {
    endpoints: String,
}

impl Etcdctl {
    fn run(&self, args: &[&str]) -> Output {
        etcdctl(&self.endpoints, args)
    }

    /// Run and require success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "etcdctl {args:?}:\n{}", show(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Run and require failure with an etcd error code in the message.
    fn fails(&self, args: &[&str], code: u32) {
        let o = self.run(args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && stderr.contains(&format!("{code}:")),
            "etcdctl {args:?} should fail with {code}:\n{}",
            show(&o)
        );
    }
}

#[test]
fn etcdctl_v2_works_unchanged() {
    if !etcdctl_v2_available() {
        skip("etcdctl_v2_works_unchanged: no etcdctl with API version 2 (apt-get install etcd-client)");
        return;
    }
    let c = three();
    let ctl = Etcdctl {
        endpoints: (0..c.len())
            .map(|i| c.client_url(i))
            .collect::<Vec<_>>()
            .join(","),
    };

    assert_eq!(ctl.ok(&["set", "/ctl/a", "1"]), "1");
    assert_eq!(ctl.ok(&["get", "/ctl/a"]), "1");
    ctl.fails(&["mk", "/ctl/a", "2"], 105);
    assert_eq!(ctl.ok(&["mk", "/ctl/b", "2"]), "2");
    assert_eq!(ctl.ok(&["update", "/ctl/a", "3"]), "3");
    ctl.fails(&["update", "/ctl/missing", "x"], 100);
    // Compare-and-swap.
    assert_eq!(
        ctl.ok(&["set", "/ctl/a", "4", "--swap-with-value", "3"]),
        "4"
    );
    ctl.fails(&["set", "/ctl/a", "5", "--swap-with-value", "3"], 101);
    // Directories and listing.
    ctl.ok(&["mkdir", "/ctl/d"]);
    ctl.ok(&["set", "/ctl/d/x", "x"]);
    let ls = ctl.ok(&["ls", "--recursive", "--sort", "/ctl"]);
    assert_eq!(
        ls.lines().collect::<Vec<_>>(),
        ["/ctl/a", "/ctl/b", "/ctl/d", "/ctl/d/x"],
        "{ls}"
    );
    ctl.fails(&["rmdir", "/ctl/d"], 108);
    ctl.ok(&["rm", "--recursive", "/ctl/d"]);
    ctl.ok(&["rm", "/ctl/b"]);
    ctl.fails(&["get", "/ctl/b"], 100);
    // TTL, as JSON output to see the fields.
    ctl.ok(&["set", "/ctl/t", "x", "--ttl", "30"]);
    let json: serde_json::Value =
        serde_json::from_str(&ctl.ok(&["-o", "json", "get", "/ctl/t"])).unwrap();
    assert!(
        json["node"]["ttl"]
            .as_u64()
            .is_some_and(|t| t > 0 && t <= 30),
        "{json}"
    );
    assert!(json["node"]["expiration"].is_string(), "{json}");
    // Watch, completed by a write from another client.
    // The write is made once the watch is registered on whichever member etcdctl asked.
    let writer = {
        let url = c.keys_url(0, "/ctl/w");
        let stats: Vec<String> = (0..c.len())
            .map(|i| format!("{}/v2/stats/store", c.client_url(i)))
            .collect();
        let http = c.http().clone();
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            let watchers = |u: &String| http.get(u).json()["watchers"].as_u64().unwrap_or(0);
            while stats.iter().map(watchers).sum::<u64>() == 0 {
                assert!(Instant::now() < deadline, "no watcher registered in 10 s");
                thread::sleep(Duration::from_millis(20));
            }
            http.put_form(&url, &[("value", "watched")])
        })
    };
    let started = Instant::now();
    assert_eq!(ctl.ok(&["watch", "/ctl/w"]), "watched");
    assert!(writer.join().unwrap().status == 201);
    assert!(started.elapsed() < Duration::from_secs(10));
    // Cluster commands.
    let members = ctl.ok(&["member", "list"]);
    assert_eq!(members.lines().count(), 3, "{members}");
    assert_eq!(members.matches("isLeader=true").count(), 1, "{members}");
    let health = ctl.ok(&["cluster-health"]);
    assert!(health.contains("cluster is healthy"), "{health}");
}
