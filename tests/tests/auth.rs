//! etcd v2 auth end to end: on a 3-node Deimos cluster (enabled through one member, enforced by
//! every member, carried to a member that was down by a snapshot, kept across a restart of the
//! whole cluster); python-etcd's auth classes and lock recipe (`SKIP` without python-etcd).
//! The side-by-side comparison with etcd is `auth_etcd.rs`.

use std::time::Duration;

use deimos_tests::auth::{call, eventually};
use deimos_tests::python_etcd;
use deimos_tests::{Cluster, ClusterOptions, Reply};

const LEADER: Duration = Duration::from_secs(15);
const STEP: Duration = Duration::from_secs(20);

fn status_of(r: &Reply) -> (u16, Option<u64>) {
    (r.status, r.error_code())
}

/// What alice (role `rfoo`: read/write `/foo/*`) and a guest may do on member `i`.
fn check_enforced(c: &Cluster, i: usize, alice_pw: &str) {
    let http = c.http();
    let url = |k: &str| format!("{}/v2/keys{k}", c.client_url(i));
    let r = call(
        http,
        "PUT",
        &url("/foo/a"),
        Some(&format!("alice:{alice_pw}")),
        Some("value=1"),
    );
    assert!(
        matches!(r.status, 200 | 201),
        "alice writes /foo on {i}: {r:?}"
    );
    let r = call(
        http,
        "PUT",
        &url("/bar"),
        Some(&format!("alice:{alice_pw}")),
        Some("value=1"),
    );
    assert_eq!(
        status_of(&r),
        (401, Some(110)),
        "alice may not write /bar on {i}: {r:?}"
    );
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"etcd\""));
    let r = call(http, "GET", &url("/foo/a"), Some("alice:wrong"), None);
    assert_eq!(
        status_of(&r),
        (401, Some(110)),
        "a wrong password on {i}: {r:?}"
    );
    let r = call(http, "GET", &url("/foo/a"), None, None);
    assert_eq!(r.status, 200, "the guest still reads on {i}: {r:?}");
    let r = call(http, "PUT", &url("/bar"), None, Some("value=1"));
    assert_eq!(
        status_of(&r),
        (401, Some(110)),
        "the guest may not write on {i}: {r:?}"
    );
    let r = call(
        http,
        "PUT",
        &url("/bar"),
        Some("root:rootpw"),
        Some("value=1"),
    );
    assert!(
        matches!(r.status, 200 | 201),
        "root writes anywhere on {i}: {r:?}"
    );
    let members = format!("{}/v2/members", c.client_url(i));
    let r = call(http, "GET", &members, None, None);
    assert_eq!(r.status, 200, "member reads are open on {i}");
    let body = r#"{"peerURLs":["http://127.0.0.1:1"]}"#;
    let r = call(
        http,
        "POST",
        &members,
        Some(&format!("alice:{alice_pw}")),
        Some(body),
    );
    assert_eq!(r.status, 401, "membership changes need root on {i}: {r:?}");
    assert_eq!(r.json()["message"], "Insufficient credentials");
    // A backup holds every key and the auth records.
    let snapshot = format!("{}/v2/snapshot", c.client_url(i));
    let r = call(
        http,
        "GET",
        &snapshot,
        Some(&format!("alice:{alice_pw}")),
        None,
    );
    assert_eq!(r.status, 401, "a backup needs root on {i}: {r:?}");
    assert_eq!(call(http, "GET", &snapshot, None, None).status, 401);
    let r = call(http, "GET", &snapshot, Some("root:rootpw"), None);
    assert_eq!(r.status, 200, "root takes a backup on {i}");
}

fn auth_enabled(c: &Cluster, i: usize) -> bool {
    let r = c.http().get(&format!("{}/v2/auth/enable", c.client_url(i)));
    r.status == 200 && r.json()["enabled"] == true
}

#[test]
fn auth_on_three_nodes_is_replicated_enforced_snapshotted_and_survives_a_restart() {
    // Frequent compactions keeping few entries: a member that was down comes back by snapshot.
    let opts = ClusterOptions {
        extra_args: ["--snapshot-count", "50", "--snapshot-catchup-entries", "5"]
            .map(String::from)
            .to_vec(),
        ..ClusterOptions::default()
    };
    let mut c = Cluster::start_with(3, opts);
    c.wait_leader(LEADER);
    c.wait_members_published(LEADER);
    let http = c.http().clone();
    let urls: Vec<String> = (0..3).map(|i| c.client_url(i)).collect();
    let auth = |i: usize, p: &str| format!("{}/v2/auth{p}", urls[i]);

    // Set up through a member that may be a follower: the changes are proposals.
    let r = call(&http, "PUT", &auth(1, "/enable"), None, None);
    assert_eq!(r.status, 409, "no root user yet: {r:?}");
    let r = call(
        &http,
        "PUT",
        &auth(1, "/users/root"),
        None,
        Some(r#"{"user":"root","password":"rootpw"}"#),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let role = r#"{"role":"rfoo","permissions":{"kv":{"read":["/foo/*"],"write":["/foo/*"]}}}"#;
    assert_eq!(
        call(&http, "PUT", &auth(1, "/roles/rfoo"), None, Some(role)).status,
        201
    );
    let alice = r#"{"user":"alice","password":"alicepw","roles":["rfoo"]}"#;
    assert_eq!(
        call(&http, "PUT", &auth(1, "/users/alice"), None, Some(alice)).status,
        200
    );
    assert_eq!(
        call(&http, "PUT", &auth(1, "/enable"), None, None).status,
        200
    );
    // The default guest role may write everything; narrow it to reads.
    let narrow = r#"{"role":"guest","revoke":{"kv":{"write":["/*"]}}}"#;
    let r = call(&http, "PUT", &auth(1, "/roles/guest"), None, Some(narrow));
    assert_eq!(r.status, 401, "auth is on: changes need root: {r:?}");
    let r = call(
        &http,
        "PUT",
        &auth(1, "/roles/guest"),
        Some("root:rootpw"),
        Some(narrow),
    );
    assert_eq!(r.status, 200, "{r:?}");

    for i in 0..3 {
        eventually("auth on everywhere", STEP, || auth_enabled(&c, i));
        eventually("the guest change everywhere", STEP, || {
            let r = call(
                &http,
                "GET",
                &auth(i, "/roles/guest"),
                Some("root:rootpw"),
                None,
            );
            r.status == 200 && r.json()["permissions"]["kv"]["write"] == serde_json::json!([])
        });
        check_enforced(&c, i, "alicepw");
    }
    assert_eq!(
        call(
            &http,
            "DELETE",
            &auth(0, "/users/root"),
            Some("root:rootpw"),
            None
        )
        .status,
        403
    );

    // A follower is down while alice's password changes and the log is compacted past it.
    let leader = c.wait_leader(LEADER);
    let down = (0..3).find(|&i| i != leader).expect("a follower");
    let up = (0..3).find(|&i| i != down).expect("another member");
    c.kill9(down);
    let pw = r#"{"user":"alice","password":"alicepw2"}"#;
    let r = call(
        &http,
        "PUT",
        &auth(up, "/users/alice"),
        Some("root:rootpw"),
        Some(pw),
    );
    assert_eq!(r.status, 200, "{r:?}");
    for n in 0..120 {
        let url = format!("{}/v2/keys/fill/{n}", c.client_url(up));
        let r = call(&http, "PUT", &url, Some("root:rootpw"), Some("value=x"));
        assert!(matches!(r.status, 200 | 201), "{r:?}");
    }
    c.restart(down);
    eventually(
        "the member that was down installed a snapshot",
        STEP,
        || c.metric(down, "deimos_raft_snapshots_installed_total", &[]) >= 1.0,
    );
    eventually(
        "the member that was down knows the new password",
        STEP,
        || {
            let url = format!("{}/v2/keys/foo/a", c.client_url(down));
            call(&http, "GET", &url, Some("alice:alicepw2"), None).status == 200
        },
    );
    for i in 0..3 {
        check_enforced(&c, i, "alicepw2");
        let url = format!("{}/v2/keys/foo/a", c.client_url(i));
        let r = call(&http, "GET", &url, Some("alice:alicepw"), None);
        assert_eq!(r.status, 401, "the old password is refused on {i}: {r:?}");
    }

    // The whole cluster restarts: auth is still on, with the same users and roles.
    c.kill9_all();
    for i in 0..3 {
        c.restart(i);
    }
    c.wait_leader(LEADER);
    for i in 0..3 {
        assert!(auth_enabled(&c, i), "auth on after a restart on {i}");
        check_enforced(&c, i, "alicepw2");
    }
}

#[test]
fn python_etcd_auth_and_lock_recipes_work_unchanged() {
    if !python_etcd::available("etcd.auth") {
        eprintln!("SKIP python_etcd_auth_and_lock_recipes_work_unchanged: no python-etcd");
        return;
    }
    let c = Cluster::start(3);
    c.wait_leader(LEADER);
    c.wait_members_published(LEADER);
    let out = python_etcd::run("python_etcd_auth_test.py", &c);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && python_etcd::all_passed(&out),
        "python-etcd auth checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
