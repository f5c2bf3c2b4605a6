//! `user`, `role`, `auth` and `-u/--username` (issue 20) against a 1-node Deimos; where etcd and
//! etcdctl are installed, the same script also runs as `etcdctl` against etcd 3.4 and every
//! step's exit status, stdout and stderr must agree. Without them that half prints SKIP.

mod common;

use common::{deimos_server, etcd_server, etcdctl, run_at};
use deimos_tests::etcd::etcdctl_v2_available;

/// Steps whose outputs etcdctl and deimosctl must share: (arguments, expected exit status).
const SCRIPT: &[(&[&str], i32)] = &[
    (&["user", "add", "root:rpw"], 0),
    (&["role", "add", "r1"], 0),
    (&["role", "add", "r1"], 1),
    (&["role", "grant", "r1", "--path", "/foo/*", "--rw"], 0),
    (&["role", "grant", "r1", "--path", "/bar", "--read"], 0),
    (&["role", "grant", "r1", "--path", "/bar", "--read"], 1),
    (&["role", "grant", "r1", "--path", "/x"], 1),
    (&["role", "grant", "r1", "--read"], 1),
    (&["role", "get", "r1"], 0),
    (&["role", "revoke", "r1", "--path", "/bar", "--read"], 0),
    (&["role", "revoke", "r1", "--path", "/zz", "--read"], 1),
    (&["role", "list"], 0),
    (&["user", "add", "alice:apw"], 0),
    (&["user", "grant", "alice", "--roles", "r1"], 0),
    (&["user", "grant", "alice", "--roles", "r1"], 1),
    (&["user", "get", "alice"], 0),
    (&["user", "get", "root"], 0),
    (&["user", "get", "nosuch"], 1),
    (&["user", "revoke", "alice", "--roles", "r2"], 1),
    (&["user", "list"], 0),
    (&["auth", "enable"], 0),
    (&["auth", "enable"], 1),
    (&["user", "list"], 1),
    (&["-u", "root:bad", "user", "list"], 1),
    (&["-u", "root:rpw", "user", "list"], 0),
    (&["-u", "root:rpw", "auth", "enable"], 1),
    (&["-u", "alice:apw", "set", "/foo/a", "1"], 0),
    (&["-u", "alice:apw", "get", "/foo/a"], 0),
    (&["-u", "root:rpw", "user", "remove", "root"], 1),
    (&["-u", "root:rpw", "role", "remove", "r1"], 0),
    (&["-u", "root:rpw", "role", "remove", "r1"], 1),
    (&["-u", "root:rpw", "user", "remove", "alice"], 0),
    (&["-u", "root:rpw", "user", "remove", "alice"], 1),
    (&["-u", "root:rpw", "auth", "disable"], 0),
    (&["auth", "disable"], 1),
    (&["user", "remove", "root"], 0),
];

#[test]
fn auth_commands_against_deimos() {
    let s = deimos_server();
    let url = s.url();
    for (args, code) in SCRIPT {
        let (got, out, err) = run_at(&url, args);
        assert_eq!(got, *code, "{args:?}: stdout {out:?} stderr {err:?}");
    }
    // Spot checks of the formats (the etcdctl comparison below checks every step).
    let run = |args: &[&str]| run_at(&url, args);
    assert_eq!(run(&["user", "add", "root:rpw"]).1, "User root created\n");
    assert_eq!(run(&["role", "add", "r"]).1, "Role r created\n");
    run(&["role", "grant", "r", "--path", "/p/*", "--readwrite"]);
    run(&["role", "grant", "r", "--path", "/q", "--read"]);
    assert_eq!(
        run(&["role", "get", "r"]).1,
        "Role: r\nKV Read:\n\t/p/*\n\t/q\nKV Write:\n\t/p/*\n"
    );
    run(&["user", "add", "bob:bpw"]);
    run(&["user", "grant", "bob", "--roles", "r,root"]);
    assert_eq!(
        run(&["user", "get", "bob"]).1,
        "User: bob\nRoles:   r root\n"
    );
    assert_eq!(run(&["auth", "enable"]).1, "Authentication Enabled\n");
    let (code, _, err) = run(&["user", "list"]);
    assert_eq!((code, err.as_str()), (1, "Insufficient credentials\n"));
    // bob holds root: he manages users; keys refusals keep deimosctl's exit status 3.
    assert_eq!(run(&["-u", "bob:bpw", "user", "list"]).1, "bob\nroot\n");
    run(&[
        "-u", "bob:bpw", "role", "revoke", "guest", "--path", "/*", "--write",
    ]);
    assert_eq!(
        run(&["set", "/x", "1"]).0,
        3,
        "the guest may no longer write"
    );
    assert_eq!(run(&["--username", "bob:bpw", "set", "/x", "1"]).0, 0);
    // No password and no terminal: refused before any request, not read from stdin.
    let (code, _, err) = run(&["-u", "bob", "get", "/x"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a terminal"), "{err}");
    let (code, _, err) = run(&["-u", "bob:bpw", "user", "passwd", "bob"]);
    assert_eq!(code, 1, "{err}");
    // Passwords never reach the server's log.
    if let common::Server::Deimos(c) = &s {
        let log = std::fs::read_to_string(c.node(0).log_path()).expect("the node's log");
        assert!(log.contains("node started"), "not the node's log: {log}");
        assert!(
            !log.contains("bpw") && !log.contains("rpw"),
            "a password was logged"
        );
    }
}

#[test]
fn auth_commands_match_etcdctl() {
    if !etcdctl_v2_available() {
        println!("SKIP auth_commands_match_etcdctl: no etcdctl (apt-get install etcd-client)");
        return;
    }
    let Some(etcd) = etcd_server("auth_commands_match_etcdctl") else {
        return;
    };
    let deimos = deimos_server();
    for (args, _) in SCRIPT {
        let e = etcdctl(&etcd.url(), args);
        let d = run_at(&deimos.url(), args);
        assert_eq!(d, e, "{args:?}: (code, stdout, stderr) differ");
    }
}
