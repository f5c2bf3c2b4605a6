//! Helpers shared by the keyspace_* integration tests (included via `#[path]`; no tests here).
#![allow(dead_code)]

use deimos_store::keyspace::{Applied, Command, ErrorCode, Event, Store, StoreError};

#[derive(Clone, Debug, Default)]
pub struct Opts {
    pub dir: bool,
    pub expire_at_ms: Option<u64>,
    pub refresh: bool,
    pub prev_exist: Option<bool>,
    pub prev_value: Option<String>,
    pub prev_index: Option<u64>,
    pub now_ms: u64,
}

pub fn put(key: &str, value: &str, o: Opts) -> Command {
    Command::Set {
        key: key.into(),
        value: value.into(),
        dir: o.dir,
        expire_at_ms: o.expire_at_ms,
        refresh: o.refresh,
        prev_exist: o.prev_exist,
        prev_value: o.prev_value,
        prev_index: o.prev_index,
        now_ms: o.now_ms,
    }
}

/// Sets `key` to `value`, expiring at `expire_at_ms`; the write must succeed.
pub fn put_expiring(s: &mut Store, key: &str, value: &str, expire_at_ms: u64) -> Event {
    let o = Opts {
        expire_at_ms: Some(expire_at_ms),
        ..Opts::default()
    };
    ok(s, put(key, value, o))
}

pub fn post(key: &str, value: &str) -> Command {
    Command::CreateInOrder {
        key: key.into(),
        value: value.into(),
        dir: false,
        expire_at_ms: None,
        now_ms: 0,
    }
}

pub fn del(key: &str, dir: bool, recursive: bool) -> Command {
    Command::Delete {
        key: key.into(),
        dir,
        recursive,
        prev_value: None,
        prev_index: None,
        now_ms: 0,
    }
}

pub fn cad(key: &str, prev_value: Option<&str>, prev_index: Option<u64>) -> Command {
    Command::Delete {
        key: key.into(),
        dir: false,
        recursive: false,
        prev_value: prev_value.map(str::to_string),
        prev_index,
        now_ms: 0,
    }
}

/// Apply a client write that must succeed.
pub fn ok(s: &mut Store, c: Command) -> Event {
    match s.apply(&c) {
        Ok(Applied::Event(e)) => e,
        other => panic!("{c:?} gave {other:?}"),
    }
}

/// Apply a command that must fail, checking that nothing changed.
pub fn fail(s: &mut Store, c: Command) -> StoreError {
    let before: Vec<_> = s.records().collect();
    let e = s.apply(&c).expect_err("command should fail");
    assert_eq!(e.index, s.index(), "error carries the current index");
    assert_eq!(
        before,
        s.records().collect::<Vec<_>>(),
        "failed {c:?} changed state"
    );
    e
}

pub fn fail_code(s: &mut Store, c: Command, code: ErrorCode, cause: &str) {
    let e = fail(s, c);
    assert_eq!((e.code, e.cause.as_str()), (code, cause));
}

pub fn json<T: serde::Serialize>(t: &T) -> String {
    serde_json::to_string(t).unwrap()
}
