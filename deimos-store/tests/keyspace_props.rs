//! Property tests of the key space over random command sequences.

#[path = "keyspace_common.rs"]
mod keyspace_common;

use std::collections::BTreeMap;

use deimos_store::keyspace::{Action, Applied, Command, Event, Store, Watcher};
use keyspace_common::*;
use proptest::prelude::*;

fn key() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "_h", "c"]), 1..=3)
        .prop_map(|v| format!("/{}", v.join("/")))
}

fn value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "x", "y"]).prop_map(str::to_string)
}

fn prev_value() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.2,
        prop::sample::select(vec!["x", "y"]).prop_map(str::to_string),
    )
}

fn cmd() -> impl Strategy<Value = Command> {
    let set = (
        key(),
        value(),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.3, 0u64..100),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.3, any::<bool>()),
        prev_value(),
        prop::option::weighted(0.15, 0u64..20),
        0u64..100,
    )
        .prop_map(
            |(
                key,
                value,
                dir,
                expire_at_ms,
                refresh,
                prev_exist,
                prev_value,
                prev_index,
                now_ms,
            )| {
                Command::Set {
                    key,
                    value,
                    dir,
                    expire_at_ms,
                    refresh,
                    prev_exist,
                    prev_value,
                    prev_index,
                    now_ms,
                }
            },
        );
    let post = (
        prop::sample::select(vec!["/q", "/a", "/a/b", "/"]),
        value(),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.3, 0u64..100),
    )
        .prop_map(|(key, value, dir, expire_at_ms)| Command::CreateInOrder {
            key: key.to_string(),
            value,
            dir,
            expire_at_ms,
            now_ms: 0,
        });
    let delete = (
        key(),
        any::<bool>(),
        any::<bool>(),
        prev_value(),
        prop::option::weighted(0.15, 0u64..20),
    )
        .prop_map(
            |(key, dir, recursive, prev_value, prev_index)| Command::Delete {
                key,
                dir,
                recursive,
                prev_value,
                prev_index,
                now_ms: 0,
            },
        );
    let expire = (0u64..120).prop_map(|now_ms| Command::ExpireUpTo { now_ms });
    prop_oneof![6 => set, 2 => post, 3 => delete, 1 => expire]
}

fn records(s: &Store) -> Vec<(String, Vec<u8>)> {
    s.records().collect()
}

fn drain(w: &mut Watcher) -> Vec<(Action, String, u64)> {
    std::iter::from_fn(|| w.try_recv().ok())
        .map(|e| (e.action, e.key().to_string(), e.node.modified_index))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// What a persistence layer accumulates from `take_dirty` and `take_history_dirty`
    /// (flushed at arbitrary points) rebuilds a store identical to the live one, event history
    /// included.
    #[test]
    fn dirty_records_rebuild_the_live_store(
        cmds in prop::collection::vec(cmd(), 0..60),
        flushes in prop::collection::vec(any::<bool>(), 60),
    ) {
        let mut live = Store::new();
        let mut disk: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let flush = |s: &mut Store, disk: &mut BTreeMap<String, Vec<u8>>| {
            for (k, v) in s.take_dirty().into_iter().chain(s.take_history_dirty()) {
                match v {
                    Some(b) => { disk.insert(k, b); }
                    None => { disk.remove(&k); }
                }
            }
        };
        for (c, f) in cmds.iter().zip(flushes.iter()) {
            let _ = live.apply(c);
            if *f {
                flush(&mut live, &mut disk);
            }
        }
        flush(&mut live, &mut disk);
        let back = Store::from_records(disk.clone()).unwrap();
        prop_assert_eq!(records(&back), records(&live));
        let mut all = records(&live);
        all.extend(live.history_records());
        all.sort();
        prop_assert_eq!(disk.into_iter().collect::<Vec<_>>(), all);
        prop_assert_eq!(
            back.history_records().collect::<Vec<_>>(),
            live.history_records().collect::<Vec<_>>()
        );
        prop_assert_eq!(back.index(), live.index());
        prop_assert_eq!(back.next_expiration_ms(), live.next_expiration_ms());
        prop_assert_eq!(
            json(&back.get("/", true, true, 7).unwrap()),
            json(&live.get("/", true, true, 7).unwrap())
        );
    }

    /// Replicas applying the same log agree on every result and every record, including a
    /// replica that joined from a snapshot half way.
    #[test]
    fn replicas_agree(cmds in prop::collection::vec(cmd(), 0..60), cut in 0usize..60) {
        let mut a = Store::new();
        let mut b = Store::with_history_capacity(5);
        let cut = cut.min(cmds.len());
        for c in &cmds[..cut] {
            prop_assert_eq!(a.apply(c), b.apply(c));
        }
        let mut joined = Store::from_records(a.records()).unwrap();
        for c in &cmds[cut..] {
            let ra = a.apply(c);
            prop_assert_eq!(&ra, &b.apply(c));
            prop_assert_eq!(&ra, &joined.apply(c));
        }
        prop_assert_eq!(records(&a), records(&b));
        prop_assert_eq!(records(&a), records(&joined));
    }

    /// A failed command changes nothing; a successful one advances the index by exactly its
    /// number of events, with consecutive modifiedIndexes; the tree invariants always hold.
    #[test]
    fn index_and_atomicity(cmds in prop::collection::vec(cmd(), 0..60)) {
        let mut s = Store::new();
        for c in &cmds {
            let before = records(&s);
            let idx = s.index();
            match s.apply(c) {
                Err(e) => {
                    prop_assert_eq!(e.index, idx);
                    prop_assert_eq!(&records(&s), &before);
                }
                Ok(applied) => {
                    let ev: &[Event] = applied.events();
                    prop_assert_eq!(s.index(), idx + ev.len() as u64);
                    for (i, e) in ev.iter().enumerate() {
                        prop_assert_eq!(e.node.modified_index, idx + 1 + i as u64);
                        prop_assert_eq!(e.index, idx + 1 + i as u64);
                        prop_assert!(e.node.created_index <= e.node.modified_index);
                    }
                    if !matches!(c, Command::ExpireUpTo { .. }) {
                        prop_assert_eq!(ev.len(), 1);
                    }
                }
            }
            // Invariants: the records always form a valid tree.
            prop_assert!(Store::from_records(s.records()).is_ok());
        }
    }

    /// Live delivery and history replay agree, and both equal an independent oracle: a
    /// recursive watcher on `/` sees every non-refresh event whose key has no hidden component.
    #[test]
    fn live_stream_equals_history_replay(cmds in prop::collection::vec(cmd(), 0..40)) {
        let mut s = Store::with_history_capacity(10_000);
        let mut live = s.watch("/", true, true, None).unwrap();
        let mut live_a = s.watch("/a", false, true, None).unwrap();
        let mut expected = Vec::new();
        let mut expected_a = Vec::new();
        for c in &cmds {
            if let Ok(applied) = s.apply(c) {
                for e in applied.events() {
                    let k = e.key().to_string();
                    if !e.refresh && !k.split('/').any(|p| p.starts_with('_')) {
                        expected.push((e.action, k.clone(), e.node.modified_index));
                    }
                    let removes_a = matches!(e.action, Action::Delete | Action::Expire | Action::CompareAndDelete)
                        && e.node.dir && k == "/";
                    if !e.refresh && (k == "/a" || removes_a) {
                        expected_a.push((e.action, k, e.node.modified_index));
                    }
                }
            }
        }
        let got = drain(&mut live);
        prop_assert_eq!(&got, &expected);
        prop_assert_eq!(drain(&mut live_a), expected_a);
        let mut replay = s.watch("/", true, true, Some(1)).unwrap();
        prop_assert_eq!(drain(&mut replay), expected);
    }

    /// In-order keys list (sorted) in creation order, whatever else happens in between.
    #[test]
    fn in_order_keys_keep_creation_order(others in prop::collection::vec(cmd(), 0..30), n in 1usize..20) {
        let mut s = Store::new();
        let mut created = Vec::new();
        for i in 0..n {
            if let Some(c) = others.get(i) {
                if !matches!(c, Command::Delete { .. } | Command::ExpireUpTo { .. }) {
                    let _ = s.apply(c);
                }
            }
            let c = post("/inorder", &i.to_string());
            created.push(ok(&mut s, c).node.key);
        }
        let listed: Vec<String> = s.get("/inorder", false, true, 0).unwrap()
            .node.nodes.unwrap().into_iter().map(|n| n.key).collect();
        prop_assert_eq!(listed, created);
    }

    /// No input key makes any operation panic; whatever is stored reads back.
    #[test]
    fn arbitrary_keys_never_panic(k in "(/|[a-c]|_|\\.|\\.\\.|\u{0}|\u{e9}){0,12}", v in ".{0,8}") {
        let mut s = Store::new();
        let r = s.apply(&put(&k, &v, Opts::default()));
        let g = s.get(&k, true, true, 0);
        if r.is_ok() {
            prop_assert_eq!(g.unwrap().node.value, Some(v.clone()));
        }
        let _ = s.watch(&k, true, true, Some(1));
        let _ = s.apply(&post(&k, &v));
        let _ = s.apply(&del(&k, true, true));
        let _ = s.apply(&Command::ExpireUpTo { now_ms: u64::MAX });
        prop_assert!(Store::from_records(s.records()).is_ok());
        let swept = s.apply(&Command::ExpireUpTo { now_ms: 0 });
        prop_assert!(matches!(swept, Ok(Applied::Expired(_))));
    }
}

/// Operations of the flat-key model test: (kind, key number, value, prev value, prev index).
fn flat_op() -> impl Strategy<Value = (u8, u8, String, Option<String>, Option<u64>)> {
    (
        0u8..6,
        0u8..3,
        value(),
        prev_value(),
        prop::option::weighted(0.3, 0u64..12),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Against an independent model of flat keys (value, createdIndex, modifiedIndex): set,
    /// create, update, CAS, delete and CAD give etcd's action or error code and the same state.
    #[test]
    fn flat_keys_match_a_model(ops in prop::collection::vec(flat_op(), 0..80)) {
        use deimos_store::keyspace::ErrorCode as C;
        let mut s = Store::new();
        let mut model: BTreeMap<String, (String, u64, u64)> = BTreeMap::new();
        let mut index = 0u64;
        for (kind, k, v, pv, pi) in ops {
            let key = format!("/k{k}");
            let pi = pi.filter(|i| *i != 0);
            let cur = model.get(&key).cloned();
            let holds = |c: &(String, u64, u64)| {
                pv.as_ref().is_none_or(|p| *p == c.0) && pi.is_none_or(|i| i == c.2)
            };
            let (cmd, expect): (Command, Result<Action, C>) = match kind {
                0 => (put(&key, &v, Opts::default()), Ok(Action::Set)),
                1 => (
                    put(&key, &v, Opts { prev_exist: Some(false), ..Opts::default() }),
                    if cur.is_some() { Err(C::NodeExist) } else { Ok(Action::Create) },
                ),
                2 => (
                    put(&key, &v, Opts { prev_exist: Some(true), ..Opts::default() }),
                    if cur.is_some() { Ok(Action::Update) } else { Err(C::KeyNotFound) },
                ),
                3 => {
                    let pv = pv.clone().or_else(|| pi.is_none().then(|| "x".to_string()));
                    let holds = |c: &(String, u64, u64)| {
                        pv.as_ref().is_none_or(|p| *p == c.0) && pi.is_none_or(|i| i == c.2)
                    };
                    let e = match &cur {
                        None => Err(C::KeyNotFound),
                        Some(c) if holds(c) => Ok(Action::CompareAndSwap),
                        Some(_) => Err(C::TestFailed),
                    };
                    (put(&key, &v, Opts { prev_value: pv, prev_index: pi, ..Opts::default() }), e)
                }
                4 => (
                    del(&key, false, false),
                    if cur.is_some() { Ok(Action::Delete) } else { Err(C::KeyNotFound) },
                ),
                _ => {
                    let e = match &cur {
                        None => Err(C::KeyNotFound),
                        Some(_) if pv.is_none() && pi.is_none() => Ok(Action::Delete),
                        Some(c) if holds(c) => Ok(Action::CompareAndDelete),
                        Some(_) => Err(C::TestFailed),
                    };
                    (cad(&key, pv.as_deref(), pi), e)
                }
            };
            let got = s.apply(&cmd).map(|a| a.into_event().unwrap());
            prop_assert_eq!(got.as_ref().map(|e| e.action).map_err(|e| e.code), expect);
            if let Ok(e) = got {
                index += 1;
                prop_assert_eq!(e.index, index);
                match e.action {
                    Action::Delete | Action::CompareAndDelete => {
                        model.remove(&key);
                    }
                    Action::Set | Action::Create => {
                        model.insert(key.clone(), (v.clone(), index, index));
                    }
                    _ => {
                        let created = cur.as_ref().map_or(0, |c| c.1);
                        model.insert(key.clone(), (v.clone(), created, index));
                    }
                }
                prop_assert_eq!(e.prev_node.as_ref().and_then(|p| p.value.clone()), cur.map(|c| c.0));
            }
            prop_assert_eq!(s.index(), index);
            for (k, (mv, mc, mm)) in &model {
                let n = s.get(k, false, false, 0).unwrap().node;
                prop_assert_eq!((n.value.as_deref(), n.created_index, n.modified_index), (Some(mv.as_str()), *mc, *mm));
            }
            let listed = s.get("/", false, true, 0).unwrap().node.nodes.unwrap_or_default();
            prop_assert_eq!(listed.len(), model.len());
        }
    }
}
