//! Watches: waitIndex from history, waiting for the future, cleared history, recursion,
//! streams, expiry/deletion of parents, hidden keys, refresh, and unregistration on drop.

#[path = "keyspace_common.rs"]
mod keyspace_common;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake};
use std::time::Duration;

use deimos_store::keyspace::{Action, Command, ErrorCode, Store, Watcher};
use keyspace_common::*;
use tokio::sync::mpsc::error::TryRecvError;

fn none_yet(w: &mut Watcher) {
    assert!(matches!(w.try_recv(), Err(TryRecvError::Empty)));
}

fn closed(w: &mut Watcher) {
    assert!(matches!(w.try_recv(), Err(TryRecvError::Disconnected)));
}

#[test]
fn future_index_waits_then_fires_once() {
    let mut s = Store::new();
    let mut w = s.watch("/k", false, false, None).unwrap();
    assert_eq!(s.watcher_count(), 1);
    assert_eq!(s.stats().watchers, 1);
    none_yet(&mut w);
    ok(&mut s, put("/other", "x", Opts::default()));
    none_yet(&mut w);
    ok(&mut s, put("/k", "1", Opts::default()));
    let e = w.try_recv().unwrap();
    assert_eq!(
        (e.action, e.key(), e.node.modified_index),
        (Action::Set, "/k", 2)
    );
    closed(&mut w);
    assert_eq!(
        s.watcher_count(),
        0,
        "one-shot watcher removed after firing"
    );
    // waitIndex beyond the next index waits for that index.
    let mut w = s.watch("/k", false, false, Some(5)).unwrap();
    ok(&mut s, put("/k", "3", Opts::default())); // 3
    ok(&mut s, put("/k", "4", Opts::default())); // 4
    none_yet(&mut w);
    ok(&mut s, put("/k", "5", Opts::default())); // 5
    assert_eq!(w.try_recv().unwrap().node.modified_index, 5);
}

#[test]
fn past_index_is_answered_from_history() {
    let mut s = Store::new();
    ok(&mut s, put("/k", "1", Opts::default())); // 1
    ok(&mut s, put("/x", "1", Opts::default())); // 2
    ok(&mut s, put("/k", "2", Opts::default())); // 3
    let mut w = s.watch("/k", false, false, Some(2)).unwrap();
    let e = w.try_recv().unwrap();
    assert_eq!(e.node.modified_index, 3);
    assert_eq!(e.node.value.as_deref(), Some("2"));
    assert_eq!(e.index, 3, "X-Etcd-Index is the store index at watch time");
    closed(&mut w);
    assert_eq!(s.watcher_count(), 0);
    // waitIndex=1 gives the first event, not the latest.
    let mut w = s.watch("/k", false, false, Some(1)).unwrap();
    assert_eq!(w.try_recv().unwrap().node.value.as_deref(), Some("1"));
    // Nothing for /x after index 2 in history: the watcher waits.
    let mut w = s.watch("/x", false, false, Some(3)).unwrap();
    none_yet(&mut w);
    ok(&mut s, put("/x", "2", Opts::default()));
    assert_eq!(w.try_recv().unwrap().node.modified_index, 4);
}

#[test]
fn cleared_history_is_401() {
    let mut s = Store::with_history_capacity(3);
    for i in 0..6 {
        ok(&mut s, put("/k", &i.to_string(), Opts::default()));
    }
    let e = s.watch("/k", false, false, Some(3)).unwrap_err();
    assert_eq!(e.code, ErrorCode::EventIndexCleared);
    assert_eq!(e.cause, "the requested history has been cleared [4/3]");
    assert_eq!((e.index, e.http_status()), (6, 400));
    assert_eq!(
        json(&e),
        r#"{"errorCode":401,"message":"The event in requested index is outdated and cleared","cause":"the requested history has been cleared [4/3]","index":6}"#
    );
    let mut w = s.watch("/k", false, false, Some(4)).unwrap();
    assert_eq!(w.try_recv().unwrap().node.modified_index, 4);
    // Shrinking the history drops the oldest events.
    s.set_history_capacity(1);
    assert!(s.watch("/k", false, false, Some(5)).is_err());
    assert!(s.watch("/k", false, false, Some(6)).is_ok());
}

#[test]
fn restart_clears_history() {
    let mut s = Store::new();
    ok(&mut s, put("/k", "1", Opts::default()));
    ok(&mut s, put("/k", "2", Opts::default()));
    let mut r = Store::from_records(s.records()).unwrap();
    assert_eq!(
        r.watch("/k", false, false, Some(2)).unwrap_err().code,
        ErrorCode::EventIndexCleared
    );
    let mut w = r.watch("/k", false, false, Some(3)).unwrap();
    ok(&mut r, put("/k", "3", Opts::default()));
    assert_eq!(w.try_recv().unwrap().node.modified_index, 3);
    let mut w = r.watch("/k", false, false, None).unwrap();
    none_yet(&mut w);
}

/// With the history records written beside the nodes (as the state machine does, in the same
/// batch), `waitIndex` works after a restart over exactly the last 1,000 events, a refresh is
/// still never delivered, and the stored history stays bounded.
#[test]
fn history_records_survive_a_restart() {
    use std::collections::BTreeMap;
    let mut s = Store::new();
    let mut disk: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let flush = |s: &mut Store, disk: &mut BTreeMap<String, Vec<u8>>| {
        for (k, v) in s.take_dirty().into_iter().chain(s.take_history_dirty()) {
            match v {
                Some(b) => disk.insert(k, b),
                None => disk.remove(&k),
            };
        }
    };
    let ttl = Opts {
        expire_at_ms: Some(u64::MAX / 2),
        ..Opts::default()
    };
    ok(&mut s, put("/t", "v", ttl.clone()));
    for i in 2..=1005u64 {
        if i == 1003 {
            let refresh = Opts {
                refresh: true,
                ..ttl.clone()
            };
            assert!(ok(&mut s, put("/t", "", refresh)).refresh);
        } else {
            ok(&mut s, put("/k", &i.to_string(), Opts::default()));
        }
        if i % 7 == 0 {
            flush(&mut s, &mut disk);
        }
    }
    flush(&mut s, &mut disk);
    let events = disk
        .keys()
        .filter(|k| k.starts_with(deimos_store::keyspace::EVENT_PREFIX))
        .count();
    assert_eq!(events, 1000, "the stored history is bounded");
    let mut r = Store::from_records(disk.clone()).unwrap();
    let e = r.watch("/k", false, false, Some(5)).unwrap_err();
    assert_eq!(e.code, ErrorCode::EventIndexCleared);
    assert_eq!(e.cause, "the requested history has been cleared [6/5]");
    let mut w = r.watch("/k", false, false, Some(6)).unwrap();
    let got = w.try_recv().unwrap();
    assert_eq!(
        (got.node.modified_index, got.node.value.as_deref()),
        (6, Some("6"))
    );
    // The refresh at 1003 is in the history but not delivered: a watch from there sees 1004.
    let mut w = r.watch("/", true, false, Some(1003)).unwrap();
    assert_eq!(w.try_recv().unwrap().node.modified_index, 1004);
    // The restarted store keeps its stored history in step as it moves on.
    ok(&mut r, put("/k", "x", Opts::default()));
    flush(&mut r, &mut disk);
    let back = Store::from_records(disk).unwrap();
    assert!(back.watch("/k", false, false, Some(6)).is_err());
    assert_eq!(
        back.history_records().collect::<Vec<_>>(),
        r.history_records().collect::<Vec<_>>()
    );
}

#[test]
fn recursive_and_non_recursive() {
    let mut s = Store::new();
    let mut flat = s.watch("/d", false, false, None).unwrap();
    let mut deep = s.watch("/d", true, false, None).unwrap();
    let mut root = s.watch("/", true, false, None).unwrap();
    let mut sibling = s.watch("/dd", true, false, None).unwrap();
    ok(&mut s, put("/d/x/y", "1", Opts::default()));
    none_yet(&mut flat);
    none_yet(&mut sibling);
    assert_eq!(deep.try_recv().unwrap().key(), "/d/x/y");
    assert_eq!(root.try_recv().unwrap().key(), "/d/x/y");
    // Recursive watch from history.
    let mut w = s.watch("/d", true, false, Some(1)).unwrap();
    assert_eq!(w.try_recv().unwrap().key(), "/d/x/y");
    assert!(s
        .watch("/d", false, false, Some(1))
        .unwrap()
        .try_recv()
        .is_err());
}

#[test]
fn stream_gets_every_event_including_history() {
    let mut s = Store::new();
    ok(&mut s, put("/s/a", "1", Opts::default())); // 1
    ok(&mut s, put("/t", "1", Opts::default())); // 2
    ok(&mut s, put("/s/b", "1", Opts::default())); // 3
    let mut w = s.watch("/s", true, true, Some(1)).unwrap();
    ok(&mut s, put("/s/a", "2", Opts::default())); // 4
    ok(&mut s, del("/s/b", false, false)); // 5
    let got: Vec<u64> = std::iter::from_fn(|| w.try_recv().ok())
        .map(|e| e.node.modified_index)
        .collect();
    assert_eq!(got, vec![1, 3, 4, 5]);
    assert_eq!(s.watcher_count(), 1, "a stream stays registered");
    drop(w);
    assert_eq!(s.watcher_count(), 0);
}

#[test]
fn delete_and_expire_of_parent_reach_child_watchers() {
    let mut s = Store::new();
    ok(&mut s, put("/p/q/r", "1", Opts::default()));
    let mut child = s.watch("/p/q/r", false, false, None).unwrap();
    let mut parent = s.watch("/p", false, false, None).unwrap();
    let mut not_below = s.watch("/pq", false, false, None).unwrap();
    ok(&mut s, del("/p", true, true));
    let e = child.try_recv().unwrap();
    assert_eq!(
        (e.action, e.key(), e.node.dir),
        (Action::Delete, "/p", true)
    );
    assert_eq!(parent.try_recv().unwrap().action, Action::Delete);
    none_yet(&mut not_below);
    // From history too.
    let mut late = s.watch("/p/q", false, false, Some(2)).unwrap();
    assert_eq!(late.try_recv().unwrap().key(), "/p");

    // Expiry of a directory.
    ok(&mut s, put("/e/f", "1", Opts::default()));
    ok(
        &mut s,
        put(
            "/e",
            "",
            Opts {
                dir: true,
                prev_exist: Some(true),
                expire_at_ms: Some(50),
                ..Opts::default()
            },
        ),
    );
    put_expiring(&mut s, "/k", "1", 60);
    let mut fw = s.watch("/e/f", false, false, None).unwrap();
    let mut kw = s.watch("/k", false, false, None).unwrap();
    let mut all = s.watch("/", true, true, None).unwrap();
    s.apply(&Command::ExpireUpTo { now_ms: 100 }).unwrap();
    let e = fw.try_recv().unwrap();
    assert_eq!((e.action, e.key()), (Action::Expire, "/e"));
    let e = kw.try_recv().unwrap();
    assert_eq!((e.action, e.key()), (Action::Expire, "/k"));
    let keys: Vec<String> = std::iter::from_fn(|| all.try_recv().ok())
        .map(|e| e.key().to_string())
        .collect();
    assert_eq!(keys, vec!["/e", "/k"]);
}

#[test]
fn hidden_keys_do_not_wake_parents() {
    let mut s = Store::new();
    let mut root = s.watch("/", true, false, None).unwrap();
    let mut dir = s.watch("/a", true, false, None).unwrap();
    let mut inside = s.watch("/a/_h", true, false, None).unwrap();
    let mut exact = s.watch("/a/_h/x", false, false, None).unwrap();
    ok(&mut s, put("/a/_h/x", "1", Opts::default()));
    none_yet(&mut root);
    none_yet(&mut dir);
    assert_eq!(inside.try_recv().unwrap().key(), "/a/_h/x");
    assert_eq!(exact.try_recv().unwrap().key(), "/a/_h/x");
    // History replay applies the same rule.
    assert!(matches!(
        s.watch("/", true, false, Some(1)).unwrap().try_recv(),
        Err(TryRecvError::Empty)
    ));
    ok(&mut s, put("/a/v", "1", Opts::default()));
    assert_eq!(root.try_recv().unwrap().key(), "/a/v");
}

#[test]
fn refresh_is_silent_but_keeps_index_continuity() {
    let mut s = Store::new();
    put_expiring(&mut s, "/k", "v", 10); // 1
    let mut w = s.watch("/k", false, true, None).unwrap();
    let r = Opts {
        refresh: true,
        prev_exist: Some(true),
        expire_at_ms: Some(99),
        ..Opts::default()
    };
    ok(&mut s, put("/k", "", r)); // 2 (refresh)
    none_yet(&mut w);
    ok(&mut s, put("/k", "w", Opts::default())); // 3
    assert_eq!(w.try_recv().unwrap().node.modified_index, 3);
    // From history the refresh is skipped too.
    let mut h = s.watch("/k", false, false, Some(2)).unwrap();
    assert_eq!(h.try_recv().unwrap().node.modified_index, 3);
}

#[test]
fn dropped_watchers_unregister() {
    let mut s = Store::new();
    let ws: Vec<Watcher> = (0..10)
        .map(|i| {
            s.watch(&format!("/k{i}"), i % 2 == 0, i % 3 == 0, None)
                .unwrap()
        })
        .collect();
    assert_eq!(s.watcher_count(), 10);
    drop(ws);
    assert_eq!(s.watcher_count(), 0);
    assert_eq!(s.stats().watchers, 0);
    // Writes after the drop find no stale registrations.
    ok(&mut s, put("/k1", "x", Opts::default()));
    assert_eq!(s.watcher_count(), 0);
    // close_watchers ends waiting watchers.
    let mut w = s.watch("/z", false, false, None).unwrap();
    s.close_watchers();
    closed(&mut w);
    assert_eq!(s.watcher_count(), 0);
    drop(w);
    // Dropping the store ends watchers too.
    let mut w = s.watch("/z", false, false, None).unwrap();
    drop(s);
    closed(&mut w);
}

#[test]
fn watch_key_errors() {
    let s = Store::new();
    assert_eq!(
        s.watch("/a\0", false, false, None).unwrap_err().code,
        ErrorCode::InvalidField
    );
    // A normalised spelling watches the same key.
    let w = s.watch("a//b/", false, false, None).unwrap();
    assert_eq!(w.path(), "/a/b");
}

struct ThreadWaker(std::thread::Thread);
impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Minimal executor: the crate only depends on tokio's `sync` feature.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = Arc::new(ThreadWaker(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

#[test]
fn async_recv_wakes_on_a_write_from_another_thread() {
    let store = Arc::new(Mutex::new(Store::new()));
    let mut w = store
        .lock()
        .unwrap()
        .watch("/k", false, false, None)
        .unwrap();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            ok(&mut store.lock().unwrap(), put("/k", "v", Opts::default()));
        })
    };
    let e = block_on(w.recv()).expect("event");
    assert_eq!(e.node.value.as_deref(), Some("v"));
    assert_eq!(block_on(w.recv()), None);
    writer.join().unwrap();
}
