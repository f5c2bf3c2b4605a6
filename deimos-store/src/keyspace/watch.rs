//! Event history (for `waitIndex`) and the watcher hub (for `wait=true` long polls and streams).
//!
//! Why a bounded history: etcd v2 keeps the last N events (1,000 by default) so a client that
//! reconnects with `waitIndex=n` can catch up; older indexes are answered with error 401 and the
//! client must re-read. Every successful write produces exactly one event and one index, so the
//! history is a contiguous index range `[start_index, last]`.
//!
//! Delivery uses bounded `tokio::sync::mpsc` channels so the async server can `.await` a
//! watcher while the state machine (which never blocks) pushes with `try_send`. A watcher whose
//! buffer is full is dropped (its channel closes), as etcd drops slow watchers. Dropping a
//! [`Watcher`] unregisters it immediately, so abandoned long polls do not leak.
//!
//! Matching rule (one predicate for live delivery and history replay), for a watcher on `W`:
//! * an event on `W` itself always matches;
//! * a recursive watcher matches events strictly below `W`, unless some component below `W`
//!   is hidden (`_name`) — hidden keys do not wake recursive watchers of their parents;
//! * removal (delete/expire/CAD) of a directory matches watchers on any path below it,
//!   recursive or not, since their key is gone too;
//! * refresh events never match; and the event index must be `>= since_index`.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::mpsc;

use super::error::{ErrorCode, StoreError};
use super::event::Event;
use super::path;

/// Default number of events kept for `waitIndex` (etcd's default).
pub const DEFAULT_HISTORY_CAPACITY: usize = 1000;

/// Per-watcher buffer for live events beyond any history replay (etcd uses 100).
const WATCH_BUFFER: usize = 100;

/// Whether a watcher on `watch_path` cares about `e` (see the module docs).
pub(crate) fn matches(watch_path: &str, recursive: bool, e: &Event) -> bool {
    if e.refresh {
        return false;
    }
    let key = e.key();
    if key == watch_path {
        return true;
    }
    if recursive && path::is_below(key, watch_path) && !path::hidden_below(watch_path, key) {
        return true;
    }
    e.action.removes() && e.node.dir && path::is_below(watch_path, key)
}

/// The last `capacity` events, contiguous by index.
#[derive(Debug)]
pub(crate) struct History {
    events: VecDeque<Event>,
    capacity: usize,
    /// Index of the oldest event kept; when empty, the next index to be produced.
    start_index: u64,
    /// Persistence bookkeeping (see [`History::take_dirty`]): every stored event record has an
    /// index in `disk_low ..= disk_high`, and every kept event up to `disk_high` is stored.
    disk_low: u64,
    disk_high: u64,
    /// Stored events found at load that are not served (outside the run ending at the store
    /// index): deleted by the next `take_dirty`, each by its own index, so cleaning up after
    /// damage costs what was stored, never the distance between indexes.
    stray: Vec<u64>,
}

/// What changed in the history since the last [`History::take_dirty`].
pub(crate) struct HistoryDirty<'a> {
    /// Indexes whose stored event fell out of the history (or was never served).
    pub removed: Vec<u64>,
    /// Events to store.
    pub added: Vec<&'a Event>,
}

impl History {
    /// An empty history whose first event will have index `next_index`. A store rebuilt from
    /// disk starts here, so any `waitIndex` at or below the current index is reported cleared.
    pub fn new(capacity: usize, next_index: u64) -> History {
        History {
            events: VecDeque::new(),
            capacity: capacity.max(1),
            start_index: next_index,
            disk_low: next_index,
            disk_high: next_index.saturating_sub(1),
            stray: Vec::new(),
        }
    }

    /// The history as stored: the contiguous run of `stored` events that ends at the store
    /// index, trimmed to `capacity`. Anything else stored (a gap left by damage, or more events
    /// than the capacity) is not served and is deleted by the next `take_dirty`. With no such
    /// run (a database written before the history was stored, or an empty store) the history
    /// starts empty after `store_index`, so older `waitIndex`es get 401.
    pub fn restore(capacity: usize, store_index: u64, stored: BTreeMap<u64, Event>) -> History {
        let next = store_index.saturating_add(1);
        let mut h = History::new(capacity, next);
        let mut want = store_index;
        let mut run = VecDeque::new();
        let mut stored = stored.into_iter().rev();
        for (i, e) in stored.by_ref() {
            if i != want || i == 0 || run.len() >= h.capacity {
                h.stray.push(i);
                break;
            }
            run.push_front(e);
            want -= 1;
        }
        h.stray.extend(stored.map(|(i, _)| i));
        if let Some(front) = run.front() {
            h.start_index = front.event_index();
        }
        h.events = run;
        h.disk_low = h.start_index;
        h.disk_high = store_index;
        h
    }

    /// The changes to store since the previous call, so the stored history stays equal to the
    /// kept one (bounded by the capacity) when written in the same transaction as the apply.
    pub fn take_dirty(&mut self) -> HistoryDirty<'_> {
        let mut removed = std::mem::take(&mut self.stray);
        removed.extend(self.disk_low..self.start_index.min(self.disk_high.saturating_add(1)));
        let high = self.disk_high;
        self.disk_low = self.start_index;
        if let Some(last) = self.events.back() {
            self.disk_high = self.disk_high.max(last.event_index());
        }
        // Events are kept in index order: the new ones are a suffix, found without walking
        // the whole history on every apply.
        let from = self.events.partition_point(|e| e.event_index() <= high);
        let added = self.events.range(from..).collect();
        HistoryDirty { removed, added }
    }

    /// The kept events, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        self.trim();
    }

    pub fn push(&mut self, e: Event) {
        if self.events.is_empty() {
            self.start_index = e.event_index();
        }
        self.events.push_back(e);
        self.trim();
    }

    fn trim(&mut self) {
        while self.events.len() > self.capacity {
            self.events.pop_front();
            if let Some(front) = self.events.front() {
                self.start_index = front.event_index();
            }
        }
    }

    /// Events matching a watcher, with index `>= since`; 401 if `since` fell out of the history.
    /// `first_only` stops at the first match (non-stream watchers).
    pub fn scan(
        &self,
        watch_path: &str,
        recursive: bool,
        since: u64,
        first_only: bool,
        store_index: u64,
    ) -> Result<Vec<Event>, StoreError> {
        if since < self.start_index {
            return Err(StoreError::new(
                ErrorCode::EventIndexCleared,
                format!(
                    "the requested history has been cleared [{}/{}]",
                    self.start_index, since
                ),
                store_index,
            ));
        }
        let skip = usize::try_from(since - self.start_index).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        for e in self.events.iter().skip(skip) {
            if matches(watch_path, recursive, e) {
                out.push(e.clone());
                if first_only {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[derive(Debug)]
struct Slot {
    recursive: bool,
    stream: bool,
    since: u64,
    tx: mpsc::Sender<Event>,
}

/// Registered watchers by watched path, then id.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    next_id: u64,
    by_path: BTreeMap<String, BTreeMap<u64, Slot>>,
    count: usize,
}

/// Shared handle to the hub: the store notifies through it, watchers unregister through a weak
/// reference when dropped. The lock is never held across an await or another lock.
#[derive(Debug, Default, Clone)]
pub(crate) struct HubHandle(Arc<Mutex<Hub>>);

fn lock(m: &Mutex<Hub>) -> MutexGuard<'_, Hub> {
    // A panic elsewhere cannot leave the hub logically inconsistent (every mutation is a single
    // map insert/remove), so a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HubHandle {
    pub fn count(&self) -> usize {
        lock(&self.0).count
    }

    /// Register a watcher on `watch_path` for events with index `>= since`, pre-loaded with
    /// `replay` (history matches). A non-stream watcher with a replay is complete and is not
    /// registered at all.
    pub fn register(
        &self,
        watch_path: String,
        recursive: bool,
        stream: bool,
        since: u64,
        replay: Vec<Event>,
    ) -> Watcher {
        let (tx, rx) = mpsc::channel(replay.len() + WATCH_BUFFER);
        let done = !stream && !replay.is_empty();
        for e in replay {
            // Capacity covers the replay, so this cannot fail.
            let _ = tx.try_send(e);
        }
        let mut w = Watcher {
            id: None,
            path: watch_path.clone(),
            rx,
            hub: Arc::downgrade(&self.0),
        };
        if done {
            return w;
        }
        let mut hub = lock(&self.0);
        let id = hub.next_id;
        hub.next_id += 1;
        hub.by_path.entry(watch_path).or_default().insert(
            id,
            Slot {
                recursive,
                stream,
                since,
                tx,
            },
        );
        hub.count += 1;
        w.id = Some(id);
        w
    }

    /// Deliver `e` to every matching watcher; remove one-shot watchers that fired and watchers
    /// whose buffer is full or whose receiver is gone.
    pub fn notify(&self, e: &Event) {
        if e.refresh {
            return;
        }
        let mut hub = lock(&self.0);
        if hub.by_path.is_empty() {
            return;
        }
        let key = e.key().to_string();
        let mut paths: Vec<String> = Vec::new();
        paths.push(path::ROOT.to_string());
        paths.extend(path::ancestors(&key).map(str::to_string));
        if key != path::ROOT {
            paths.push(key.clone());
        }
        if e.action.removes() && e.node.dir {
            let prefix = path::child_prefix(&key);
            let end = path::prefix_end(&prefix);
            paths.extend(
                hub.by_path
                    .range::<str, _>((
                        Bound::Included(prefix.as_str()),
                        Bound::Excluded(end.as_str()),
                    ))
                    .map(|(k, _)| k.clone()),
            );
        }
        let idx = e.event_index();
        let mut removed = 0;
        for p in paths {
            let Some(slots) = hub.by_path.get_mut(&p) else {
                continue;
            };
            slots.retain(|_, s| {
                if idx < s.since || !matches(&p, s.recursive, e) {
                    return true;
                }
                let keep = s.tx.try_send(e.clone()).is_ok() && s.stream;
                if !keep {
                    removed += 1;
                }
                keep
            });
            if slots.is_empty() {
                hub.by_path.remove(&p);
            }
        }
        hub.count -= removed;
    }

    /// Close every watcher (their receivers then yield `None`).
    pub fn clear(&self) {
        let mut hub = lock(&self.0);
        hub.by_path.clear();
        hub.count = 0;
    }
}

/// A registered watch. Receive with [`Watcher::recv`] (async) or the non-blocking/blocking
/// variants. `None` means the watch is over: a one-shot watcher after its event, a stream
/// dropped for being too slow, or a store that was replaced/dropped.
#[derive(Debug)]
pub struct Watcher {
    id: Option<u64>,
    path: String,
    rx: mpsc::Receiver<Event>,
    hub: Weak<Mutex<Hub>>,
}

impl Watcher {
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    pub fn try_recv(&mut self) -> Result<Event, mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }

    /// Blocking receive for synchronous callers; must not be called inside an async runtime.
    pub fn blocking_recv(&mut self) -> Option<Event> {
        self.rx.blocking_recv()
    }

    /// The normalised path being watched.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let (Some(id), Some(hub)) = (self.id, self.hub.upgrade()) else {
            return;
        };
        let mut hub = lock(&hub);
        let mut gone = false;
        if let Some(slots) = hub.by_path.get_mut(&self.path) {
            gone = slots.remove(&id).is_some();
            if slots.is_empty() {
                hub.by_path.remove(&self.path);
            }
        }
        if gone {
            hub.count -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::event::Action;
    use super::super::node::NodeExtern;
    use super::*;

    fn ev(action: Action, key: &str, idx: u64, dir: bool) -> Event {
        Event {
            action,
            node: NodeExtern {
                key: key.into(),
                value: None,
                dir,
                expiration: None,
                ttl: None,
                nodes: None,
                modified_index: idx,
                created_index: idx,
            },
            prev_node: None,
            index: idx,
            created: false,
            refresh: false,
        }
    }

    #[test]
    fn matching_rules() {
        let set = ev(Action::Set, "/a/b", 1, false);
        assert!(matches("/a/b", false, &set));
        assert!(!matches("/a", false, &set));
        assert!(matches("/a", true, &set));
        assert!(matches("/", true, &set));
        assert!(!matches("/a/b/c", true, &set));
        assert!(!matches("/a/bb", true, &set));
        let hidden = ev(Action::Set, "/a/_h/x", 2, false);
        assert!(!matches("/a", true, &hidden));
        assert!(matches("/a/_h", true, &hidden));
        assert!(matches("/a/_h/x", false, &hidden));
        let deldir = ev(Action::Delete, "/a", 3, true);
        assert!(matches("/a/b/c", false, &deldir));
        assert!(!matches("/ab", false, &deldir));
        let delfile = ev(Action::Delete, "/a", 3, false);
        assert!(!matches("/a/b", false, &delfile));
        let mut refresh = ev(Action::Update, "/a/b", 4, false);
        refresh.refresh = true;
        assert!(!matches("/a/b", false, &refresh));
    }

    #[test]
    fn history_is_bounded_and_reports_cleared() {
        let mut h = History::new(3, 1);
        for i in 1..=5 {
            h.push(ev(Action::Set, "/k", i, false));
        }
        let e = h.scan("/k", false, 2, true, 5).unwrap_err();
        assert_eq!(e.code, ErrorCode::EventIndexCleared);
        assert_eq!(e.cause, "the requested history has been cleared [3/2]");
        assert_eq!(e.index, 5);
        let got = h.scan("/k", false, 3, false, 5).unwrap();
        assert_eq!(
            got.iter().map(|e| e.event_index()).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert!(h.scan("/k", false, 6, true, 5).unwrap().is_empty());
    }

    /// What a restart restores: only the contiguous run ending at the store index, at most
    /// `capacity` events; whatever else was stored is deleted by the next `take_dirty`, and
    /// new events are stored from the store index on.
    #[test]
    fn restore_serves_the_run_ending_at_the_index_and_cleans_up_the_rest() {
        let stored = |idx: &[u64]| -> BTreeMap<u64, Event> {
            idx.iter()
                .map(|&i| (i, ev(Action::Set, "/k", i, false)))
                .collect()
        };
        let kept = |h: &History| h.iter().map(|e| e.event_index()).collect::<Vec<_>>();
        // A gap at 4: only 5..=7 is served; 1..=3 are deleted.
        let mut h = History::restore(10, 7, stored(&[1, 2, 3, 5, 6, 7]));
        assert_eq!(kept(&h), [5, 6, 7]);
        assert!(h.scan("/k", false, 4, true, 7).is_err());
        let d = h.take_dirty();
        assert_eq!((d.removed, d.added.len()), (vec![3, 2, 1], 0));
        // More than the capacity: the oldest are not served and are deleted.
        let mut h = History::restore(3, 6, stored(&[1, 2, 3, 4, 5, 6]));
        assert_eq!(kept(&h), [4, 5, 6]);
        h.push(ev(Action::Set, "/k", 7, false));
        let d = h.take_dirty();
        assert_eq!(d.removed, [3, 2, 1, 4]);
        assert_eq!(
            d.added.iter().map(|e| e.event_index()).collect::<Vec<_>>(),
            [7]
        );
        // Nothing ending at the index (a store written before the history was): empty, 401 for
        // anything up to the index, the next event is stored.
        let mut h = History::restore(10, 9, stored(&[2, 3]));
        assert!(kept(&h).is_empty());
        assert!(h.scan("/k", false, 9, true, 9).is_err());
        assert!(h.scan("/k", false, 10, true, 9).unwrap().is_empty());
        h.push(ev(Action::Set, "/k", 10, false));
        let d = h.take_dirty();
        assert_eq!(d.removed, [3, 2]);
        assert_eq!(d.added.len(), 1);
        let d = h.take_dirty();
        assert_eq!((d.removed.len(), d.added.len()), (0, 0));
    }

    #[test]
    fn full_buffer_drops_watcher_and_drop_unregisters() {
        let hub = HubHandle::default();
        let w = hub.register("/k".into(), false, true, 1, Vec::new());
        assert_eq!(hub.count(), 1);
        for i in 1..=(WATCH_BUFFER as u64 + 1) {
            hub.notify(&ev(Action::Set, "/k", i, false));
        }
        assert_eq!(hub.count(), 0, "slow stream watcher must be dropped");
        drop(w);
        assert_eq!(hub.count(), 0);
        let w2 = hub.register("/k".into(), true, false, 1, Vec::new());
        assert_eq!(hub.count(), 1);
        drop(w2);
        assert_eq!(hub.count(), 0);
    }
}
