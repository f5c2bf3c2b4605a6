use super::*;
use crate::machine::{KvStateMachine, Member, Output, Proposal};
use crate::persist::RedbStorage;
use deimos_raft::driver::{ApplyBatch, Command as Cmd, StateMachine};

fn member() -> Member {
    Member {
        id: 1,
        name: "n1".into(),
        peer_urls: vec!["http://127.0.0.1:7001".into()],
        client_urls: vec![],
    }
}

fn create(user: &str, roles: Option<Vec<&str>>) -> AuthOp {
    AuthOp::CreateUser {
        user: user.into(),
        hash: Some(format!("hash-of-{user}")),
        roles: roles.map(|r| r.into_iter().map(String::from).collect()),
    }
}

fn role(name: &str, read: &[&str], write: &[&str]) -> Role {
    Role {
        role: name.into(),
        permissions: Permissions {
            kv: RwPerm {
                read: Some(read.iter().map(|s| s.to_string()).collect()),
                write: Some(write.iter().map(|s| s.to_string()).collect()),
            },
        },
    }
}

fn status(r: Result<AuthReply, AuthError>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(e) => e.status,
    }
}

#[test]
fn enabling_needs_root_and_creates_the_guest_role() {
    let mut s = AuthState::default();
    let mut m = Mutations::new();
    assert_eq!(status(s.apply(AuthOp::Enable, &mut m)), 409);
    assert!(!s.enabled());
    s.apply(create(ROOT, None), &mut m).unwrap();
    assert!(s.is_root(ROOT), "the root user holds the root role");
    s.apply(AuthOp::Enable, &mut m).unwrap();
    assert!(s.enabled());
    assert_eq!(s.role(GUEST), Some(role(GUEST, &["/*"], &["/*"])));
    assert_eq!(status(s.apply(AuthOp::Enable, &mut m)), 409);
    assert_eq!(
        status(s.apply(AuthOp::DeleteUser(ROOT.into()), &mut m)),
        403
    );
    assert_eq!(
        status(s.apply(AuthOp::DeleteRole(ROOT.into()), &mut m)),
        403
    );
    s.apply(AuthOp::Disable, &mut m).unwrap();
    assert_eq!(status(s.apply(AuthOp::Disable, &mut m)), 409);
}

#[test]
fn prefix_permissions_decide_access() {
    let mut s = AuthState::default();
    let mut m = Mutations::new();
    s.apply(
        AuthOp::CreateRole(role("rfoo", &["/foo/*"], &["/foo/x"])),
        &mut m,
    )
    .unwrap();
    s.apply(create("alice", Some(vec!["rfoo"])), &mut m)
        .unwrap();
    let a = Some("alice");
    assert!(s.may_access(a, "/foo/a", false, false));
    assert!(
        s.may_access(a, "/foo/", false, true),
        "a * pattern grants the subtree"
    );
    assert!(
        !s.may_access(a, "/foo", false, false),
        "/foo/* does not cover /foo"
    );
    assert!(!s.may_access(a, "/bar", false, false));
    assert!(s.may_access(a, "/foo/x", true, false));
    assert!(
        !s.may_access(a, "/foo/x", true, true),
        "an exact pattern is no subtree"
    );
    assert!(!s.may_access(a, "/foo/y", true, false));
    assert!(!s.may_access(Some("nobody"), "/foo/a", false, false));
    // No guest role yet: a request without credentials gets nothing.
    assert!(!s.may_access(None, "/foo/a", false, false));
    s.apply(AuthOp::CreateRole(role(GUEST, &["/pub/*"], &[])), &mut m)
        .unwrap();
    assert!(s.may_access(None, "/pub/a", false, false));
    assert!(!s.may_access(None, "/pub/a", true, false));
}

#[test]
fn grants_and_revokes_follow_etcd() {
    let mut s = AuthState::default();
    let mut m = Mutations::new();
    s.apply(create("bob", None), &mut m).unwrap();
    assert_eq!(status(s.apply(create("bob", None), &mut m)), 409);
    let upd = |grant: &[&str], revoke: &[&str]| AuthOp::UpdateUser {
        user: "bob".into(),
        hash: None,
        grant: grant.iter().map(|s| s.to_string()).collect(),
        revoke: revoke.iter().map(|s| s.to_string()).collect(),
    };
    // Granting a role that does not exist is allowed (etcd does not check).
    s.apply(upd(&["b", "a"], &[]), &mut m).unwrap();
    assert_eq!(
        s.user("bob").unwrap().roles,
        Some(vec!["a".into(), "b".into()])
    );
    assert_eq!(status(s.apply(upd(&["a"], &[]), &mut m)), 409);
    assert_eq!(status(s.apply(upd(&[], &["zz"]), &mut m)), 409);
    let same = AuthOp::CreateOrUpdateUser {
        user: "bob".into(),
        hash: None,
    };
    assert_eq!(status(s.apply(same, &mut m)), 400, "nothing changed");
    let new_pw = AuthOp::CreateOrUpdateUser {
        user: "bob".into(),
        hash: Some("h2".into()),
    };
    let Ok(AuthReply::User { created, user }) = s.apply(new_pw, &mut m) else {
        panic!("password change")
    };
    assert!(!created);
    assert_eq!(user.password_hash, "h2");
    let no_pw = AuthOp::CreateOrUpdateUser {
        user: "carl".into(),
        hash: None,
    };
    assert_eq!(status(s.apply(no_pw, &mut m)), 400);
    assert_eq!(
        status(s.apply(AuthOp::DeleteUser("zz".into()), &mut m)),
        404
    );

    s.apply(AuthOp::CreateRole(role("r", &["/a"], &[])), &mut m)
        .unwrap();
    let grant = |read: &[&str]| AuthOp::UpdateRole {
        role: "r".into(),
        grant: Some(Permissions {
            kv: RwPerm {
                read: Some(read.iter().map(|s| s.to_string()).collect()),
                write: None,
            },
        }),
        revoke: None,
    };
    assert_eq!(status(s.apply(grant(&["/a"]), &mut m)), 409);
    s.apply(grant(&["/b"]), &mut m).unwrap();
    assert_eq!(s.role("r").unwrap(), role("r", &["/a", "/b"], &[]));
    let revoke_missing = AuthOp::UpdateRole {
        role: "r".into(),
        grant: None,
        revoke: Some(Permissions {
            kv: RwPerm {
                read: Some(vec!["/zz".into()]),
                write: None,
            },
        }),
    };
    assert_eq!(
        status(s.apply(revoke_missing, &mut m)),
        400,
        "nothing changed"
    );
}

#[test]
fn records_rebuild_the_same_state() {
    let mut s = AuthState::default();
    let mut m = Mutations::new();
    s.apply(create(ROOT, None), &mut m).unwrap();
    s.apply(AuthOp::CreateRole(role("r", &["/a/*"], &[])), &mut m)
        .unwrap();
    s.apply(create("alice", Some(vec!["r"])), &mut m).unwrap();
    s.apply(AuthOp::Enable, &mut m).unwrap();
    s.apply(create("gone", None), &mut m).unwrap();
    s.apply(AuthOp::DeleteUser("gone".into()), &mut m).unwrap();
    let mut latest = BTreeMap::new();
    for (k, v) in m {
        assert!(k.starts_with(AUTH_PREFIX));
        latest.insert(k, v);
    }
    let mut back = AuthState::default();
    for (k, v) in latest {
        if let Some(v) = v {
            back.load_record(&k, &v).unwrap();
        }
    }
    assert_eq!(back, s);
    assert!(back.load_record("\u{1}auth/zz", b"").is_err());
}

/// Auth changes are applied through the log, stored with the applied state (a restart has
/// them) and carried by a snapshot (a member that installs one has them).
#[test]
fn auth_state_survives_a_restart_and_travels_in_snapshots() {
    use deimos_raft::types::{ConfState, Entry, EntryPayload, HardState};
    let dir = tempfile::tempdir().unwrap();
    let ops = [
        AuthOp::CreateUser {
            user: ROOT.into(),
            hash: Some("$2b$04$hash".into()),
            roles: None,
        },
        AuthOp::Enable,
        AuthOp::Enable,
    ];
    let encoded: Vec<Vec<u8>> = ops
        .iter()
        .map(|o| Proposal::Auth(o.clone()).encode())
        .collect();
    let snapshot;
    {
        let mut st = RedbStorage::open(dir.path()).unwrap();
        let mut sm = KvStateMachine::open(&mut st, &[member()]).unwrap();
        let filler: Vec<_> = (3..=5)
            .map(|index| Entry {
                term: 1,
                index,
                payload: EntryPayload::Empty,
            })
            .collect();
        let hs = HardState {
            term: 1,
            vote: None,
            commit: 5,
        };
        st.persist(Some(&hs), &filler).unwrap();
        let conf = ConfState::new([1]);
        let commands = encoded
            .iter()
            .enumerate()
            .map(|(i, d)| Cmd {
                index: 3 + i as u64,
                term: 1,
                data: d,
            })
            .collect();
        let out = sm
            .apply(
                &mut st,
                ApplyBatch {
                    commands,
                    conf_changes: vec![],
                    applied: 5,
                    applied_term: 1,
                    conf: &conf,
                },
            )
            .unwrap();
        assert!(matches!(out[1], Output::Auth(Ok(_))), "{out:?}");
        assert!(
            matches!(&out[2], Output::Auth(Err(e)) if e.status == 409),
            "{out:?}"
        );
        st.write_staged().unwrap();
        let enc = st.snapshot_encoder(1 << 10).unwrap();
        snapshot = enc.map(|c| c.unwrap()).collect::<Vec<_>>().concat();
    }
    let mut st = RedbStorage::open(dir.path()).unwrap();
    let sm = KvStateMachine::open(&mut st, &[]).unwrap();
    assert!(
        sm.auth().read().unwrap().enabled(),
        "a restart keeps auth on"
    );
    assert!(sm.auth().read().unwrap().is_root(ROOT));

    // A fresh member installs the snapshot and restores from it.
    let meta = crate::persist::check_snapshot_data(&snapshot).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let mut st2 = RedbStorage::open(dir2.path()).unwrap();
    let mut sm2 = KvStateMachine::open(&mut st2, &[]).unwrap();
    assert!(!sm2.auth().read().unwrap().enabled());
    let mut inst = st2.begin_snapshot_install(&meta).unwrap();
    inst.push(&snapshot).unwrap();
    inst.finish().unwrap();
    let snap = deimos_raft::types::Snapshot {
        meta,
        data: Vec::new(),
    };
    sm2.restore(&mut st2, &snap).unwrap();
    let auth = sm2.auth();
    let auth = auth.read().unwrap();
    assert!(auth.enabled(), "the snapshot carried auth");
    assert_eq!(auth.user(ROOT).unwrap().password_hash, "$2b$04$hash");
}
