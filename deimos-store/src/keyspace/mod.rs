//! The etcd v2 key space as a deterministic replicated state machine.
//!
//! [`Store`] holds the tree of keys and directories, the store index (`X-Etcd-Index`), the event
//! history and the watcher hub. Writes arrive only as replicated [`Command`]s through
//! [`Store::apply`]; reads ([`Store::get`]) and watches ([`Store::watch`]) take `&self`.
//!
//! Invariants:
//! * `apply` is a pure function of (state, command): it never reads a clock or any other
//!   ambient input, so replicas applying the same log are identical record-for-record.
//! * A command either succeeds — bumping the index by exactly one per event (an `ExpireUpTo`
//!   may produce several) — or fails leaving the store untouched (index included).
//! * Every successful event is appended to the history (refreshes too, for index continuity)
//!   and, unless it is a refresh, offered to watchers.
//! * `take_dirty` reports every record changed since the previous call, so a persistence layer
//!   that writes exactly those records always holds what `records()` would return.
//!   `take_history_dirty` does the same for the event history (`history_records()`), which
//!   is bounded, so the last 1,000 events survive a restart as etcd's do.
//!
//! Deliberate differences from etcd v2's store (each makes behaviour deterministic or removes
//! an etcd inconsistency; none changes a successful write's result; the README's compatibility
//! table and `tests/tests/etcd_compare.rs` list them with the server's own):
//! * a stream watch with a past `waitIndex` replays every matching history event and then stays
//!   live (etcd sends only the first and then goes silent);
//! * history replay applies the hidden-key rule exactly like live delivery, and removal of a
//!   directory matches watchers on any path below it with component boundaries respected
//!   (etcd's replay uses a raw string prefix and ignores hidden keys);
//! * updating a directory's TTL also advances its stored `modifiedIndex` (etcd reports the new
//!   index in the event but keeps the old one on the node);
//! * expiry order is (expiry time, path) rather than heap order; a node past its expiry stays
//!   readable, with `ttl <= 0`, until the leader's `ExpireUpTo` removes it;
//! * `ttl` is rendered whenever `expiration` is, even when it is 0 (etcd's omitempty drops 0);
//! * HTTP statuses are etcd's, also where the Deimos API reference says otherwise: 104 and 107
//!   answer 400 as etcd 3.4 does (the reference lists 403).

mod apply;
mod command;
mod error;
mod event;
mod node;
mod path;
mod record;
mod stats;
mod watch;

pub use command::Command;
pub use error::{ErrorCode, StoreError, MAX_VALUE_BYTES};
pub use event::{Action, Event};
pub use node::{format_rfc3339_ms, ttl_secs, NodeExtern};
pub use path::{normalize as normalize_key, MAX_KEY_BYTES, MAX_KEY_DEPTH};
pub use record::{EVENT_PREFIX, META_KEY};
pub use stats::StoreStats;
pub use watch::{Watcher, DEFAULT_HISTORY_CAPACITY};

use node::Tree;
use stats::{Counters, Op};
use watch::{History, HubHandle};

/// What a command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A client write (`Set`, `CreateInOrder`, `Delete`): exactly one event.
    Event(Event),
    /// An `ExpireUpTo` sweep: one `expire` event per expired node, in index order (maybe none).
    Expired(Vec<Event>),
}

impl Applied {
    pub fn events(&self) -> &[Event] {
        match self {
            Applied::Event(e) => std::slice::from_ref(e),
            Applied::Expired(v) => v,
        }
    }

    /// The single event of a client write; `None` for an expiry sweep.
    pub fn into_event(self) -> Option<Event> {
        match self {
            Applied::Event(e) => Some(e),
            Applied::Expired(_) => None,
        }
    }
}

/// The etcd v2 key space.
#[derive(Debug)]
pub struct Store {
    tree: Tree,
    index: u64,
    meta_dirty: bool,
    history: History,
    hub: HubHandle,
    stats: Counters,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// An empty store (index 0) with the default history of 1,000 events.
    pub fn new() -> Store {
        Store::with_history_capacity(DEFAULT_HISTORY_CAPACITY)
    }

    pub fn with_history_capacity(capacity: usize) -> Store {
        Store {
            tree: Tree::default(),
            index: 0,
            // A new store's meta record has never been written: the first `take_dirty` writes
            // it, so what the persistence layer holds always equals `records()`.
            meta_dirty: true,
            history: History::new(capacity, 1),
            hub: HubHandle::default(),
            stats: Counters::default(),
        }
    }

    /// Change how many events are kept for `waitIndex` (oldest dropped first).
    pub fn set_history_capacity(&mut self, capacity: usize) {
        self.history.set_capacity(capacity);
    }

    /// The store index (`X-Etcd-Index`): the number of successful modifications so far.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Apply one replicated command. See [`Command`] for how requests map onto it.
    pub fn apply(&mut self, cmd: &Command) -> Result<Applied, StoreError> {
        let (op, result) = match cmd {
            Command::ExpireUpTo { now_ms } => {
                let events = self.expire_up_to(*now_ms);
                self.stats.expired(events.len() as u64);
                for e in &events {
                    self.publish(e);
                }
                return Ok(Applied::Expired(events));
            }
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
            } => {
                let w = apply::Write {
                    key,
                    value,
                    dir: *dir,
                    expire_at_ms: *expire_at_ms,
                    refresh: *refresh,
                    now_ms: *now_ms,
                };
                let prev_index = prev_index.filter(|&i| i != 0);
                let compare = prev_value.is_some() || prev_index.is_some();
                match prev_exist {
                    Some(true) if !compare => (Op::Update, self.update(&w)),
                    Some(false) => (Op::Create, self.create(&w, false)),
                    _ if compare => (
                        Op::CompareAndSwap,
                        self.compare_and_swap(&w, prev_value.as_deref(), prev_index),
                    ),
                    _ => (Op::Set, self.set(&w)),
                }
            }
            Command::CreateInOrder {
                key,
                value,
                dir,
                expire_at_ms,
                now_ms,
            } => {
                let w = apply::Write {
                    key,
                    value,
                    dir: *dir,
                    expire_at_ms: *expire_at_ms,
                    refresh: false,
                    now_ms: *now_ms,
                };
                (Op::Create, self.create(&w, true))
            }
            Command::Delete {
                key,
                dir,
                recursive,
                prev_value,
                prev_index,
                now_ms,
            } => {
                let prev_index = prev_index.filter(|&i| i != 0);
                if prev_value.is_some() || prev_index.is_some() {
                    (
                        Op::CompareAndDelete,
                        self.compare_and_delete(key, prev_value.as_deref(), prev_index, *now_ms),
                    )
                } else {
                    (
                        Op::Delete,
                        self.delete(key, *dir || *recursive, *recursive, *now_ms),
                    )
                }
            }
        };
        self.stats.record(op, result.is_ok());
        let e = result?;
        self.publish(&e);
        Ok(Applied::Event(e))
    }

    /// Record a successful event in the history and wake matching watchers.
    fn publish(&mut self, e: &Event) {
        self.history.push(e.clone());
        self.hub.notify(e);
    }

    /// Read a key or list a directory (action `get`). `now_ms` is the reader's clock, used only
    /// to render `ttl`. Nodes past their expiry stay visible until an `ExpireUpTo` removes
    /// them, so every replica at the same index answers the same way.
    pub fn get(
        &self,
        key: &str,
        recursive: bool,
        sorted: bool,
        now_ms: u64,
    ) -> Result<Event, StoreError> {
        let r = self.get_inner(key, recursive, sorted, now_ms);
        self.stats.record(Op::Get, r.is_ok());
        r
    }

    fn get_inner(
        &self,
        key: &str,
        recursive: bool,
        sorted: bool,
        now_ms: u64,
    ) -> Result<Event, StoreError> {
        let p = path::normalize(key, self.index)?;
        let n = self.tree.lookup(&p, self.index)?;
        Ok(Event {
            action: Action::Get,
            node: self.tree.render(&p, n, true, recursive, sorted, now_ms),
            prev_node: None,
            index: self.index,
            created: false,
            refresh: false,
        })
    }

    /// Watch `key` (and, if `recursive`, everything below it) for events with index
    /// `>= since_index` (`None` or `Some(0)`: the next event). A non-stream watcher yields one
    /// event; a stream yields every matching event. Matching events already in the history are
    /// delivered at once; an index older than the history is error 401.
    pub fn watch(
        &self,
        key: &str,
        recursive: bool,
        stream: bool,
        since_index: Option<u64>,
    ) -> Result<Watcher, StoreError> {
        let p = path::normalize(key, self.index)?;
        let next = self.index.saturating_add(1);
        let since = since_index.filter(|&i| i != 0).unwrap_or(next);
        let mut replay = self
            .history
            .scan(&p, recursive, since, !stream, self.index)?;
        for e in &mut replay {
            e.index = self.index;
        }
        let live_since = if stream { since.max(next) } else { since };
        Ok(self.hub.register(p, recursive, stream, live_since, replay))
    }

    /// When the earliest TTL falls due (unix ms), so the leader knows when to propose
    /// `ExpireUpTo`.
    pub fn next_expiration_ms(&self) -> Option<u64> {
        self.tree.first_expiring().map(|(t, _)| t)
    }

    /// Counters for `/v2/stats/store`.
    pub fn stats(&self) -> StoreStats {
        self.stats.snapshot(self.hub.count() as u64)
    }

    /// Number of watchers currently registered.
    pub fn watcher_count(&self) -> usize {
        self.hub.count()
    }

    /// Close every watcher, e.g. before replacing this store with a snapshot (clients then get
    /// etcd's 400 "watcher is cleared due to etcd recovery" from the server).
    pub fn close_watchers(&self) {
        self.hub.clear();
    }

    /// Every record changed since the last call: `(record key, Some(bytes))` for a node or the
    /// meta record written, `(record key, None)` for a node removed. Writing exactly these into
    /// the database (in any order, atomically with the applied Raft index) keeps it equal to
    /// `records()`.
    pub fn take_dirty(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        if std::mem::take(&mut self.meta_dirty) {
            out.push((META_KEY.to_string(), Some(record::encode_meta(self.index))));
        }
        for p in self.tree.take_dirty() {
            let bytes = self.tree.get(&p).map(record::encode_node);
            out.push((p, bytes));
        }
        out
    }

    /// The event-history records changed since the last call (same shape as `take_dirty`):
    /// new events written, events that fell out of the bounded history deleted. Written in the
    /// same transaction as `take_dirty`'s records, they make the history survive a restart
    /// (and ride in snapshots, which are read from the database) as etcd's does.
    pub fn take_history_dirty(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        let dirty = self.history.take_dirty();
        let mut out: Vec<_> = dirty
            .removed
            .into_iter()
            .map(|i| (record::event_key(i), None))
            .collect();
        out.extend(dirty.added.into_iter().map(|e| {
            (
                record::event_key(e.event_index()),
                Some(record::encode_event(e)),
            )
        }));
        out
    }

    /// The event history as records (what `take_history_dirty` accumulates to).
    pub fn history_records(&self) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
        self.history
            .iter()
            .map(|e| (record::event_key(e.event_index()), record::encode_event(e)))
    }

    /// Every record of the key space (meta first, then nodes in path order); the event
    /// history is separate ([`Store::history_records`]), since it depends on the capacity.
    pub fn records(&self) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
        std::iter::once((META_KEY.to_string(), record::encode_meta(self.index))).chain(
            self.tree
                .iter()
                .map(|(k, n)| (k.clone(), record::encode_node(n))),
        )
    }

    /// Rebuild a store from records (a full set as produced by `records()`, or everything ever
    /// written from `take_dirty`, with or without the history records). Tree, indexes and TTLs
    /// are restored exactly; the event history is what the history records hold (see
    /// `History::restore`): without them it starts empty, so a watch with
    /// `waitIndex <= index()` gets 401. Damaged records: error 300.
    pub fn from_records(
        records: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<Store, StoreError> {
        let decoded = record::decode(records)?;
        let index = decoded.index;
        let mut s = Store::new();
        s.index = index;
        s.meta_dirty = false;
        s.history = History::restore(DEFAULT_HISTORY_CAPACITY, index, decoded.events);
        for (k, n) in decoded.nodes {
            s.tree.insert(k, n);
        }
        // The restored state is what is on disk already: nothing is dirty.
        s.tree.take_dirty();
        Ok(s)
    }

    /// Number of stored nodes (the implicit root excluded).
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_shareable_across_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Store>();
        assert_send_sync::<Watcher>();
        assert_send_sync::<Command>();
    }

    #[test]
    fn applied_accessors() {
        let mut s = Store::new();
        let a = s.apply(&Command::set("/k", "v")).unwrap();
        assert_eq!(a.events().len(), 1);
        assert_eq!(a.into_event().map(|e| e.action), Some(Action::Set));
        let x = s.apply(&Command::ExpireUpTo { now_ms: 1 }).unwrap();
        assert!(x.events().is_empty());
        assert_eq!(x.into_event(), None);
        assert_eq!((s.len(), s.is_empty(), s.index()), (1, false, 1));
    }
}
