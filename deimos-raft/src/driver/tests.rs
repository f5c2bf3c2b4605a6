//! The driver end to end: three in-process nodes on tokio, linked by channels.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::clock::MonotonicClock;
use crate::storage::MemStorage;
use crate::types::{Message, NodeId, Snapshot};

type H = Handle<Option<String>, MonotonicClock>;

#[derive(Clone, Default)]
struct Net {
    handles: Arc<Mutex<BTreeMap<NodeId, H>>>,
    /// Nodes cut off from everyone.
    down: Arc<Mutex<HashSet<NodeId>>>,
    /// Every message sent, for asserting which reads needed the network.
    sent: Arc<Mutex<u64>>,
}

struct ChanTransport(Net);

impl Transport for ChanTransport {
    /// Channels never fail to deliver, so there is nothing to report.
    fn bind(&mut self, _: Reporter) {}

    fn send(&mut self, msgs: Vec<Message>) {
        let down = self.0.down.lock().unwrap().clone();
        let handles = self.0.handles.lock().unwrap();
        for m in msgs {
            *self.0.sent.lock().unwrap() += 1;
            if down.contains(&m.from) || down.contains(&m.to) {
                continue;
            }
            if let Some(h) = handles.get(&m.to) {
                h.step(m);
            }
        }
    }
}

/// `key=value` sets; output is the previous value.
#[derive(Default)]
struct Kv(BTreeMap<String, String>);

impl StateMachine<MemStorage> for Kv {
    type Output = Option<String>;

    fn apply(
        &mut self,
        _: &mut MemStorage,
        batch: ApplyBatch<'_>,
    ) -> Result<Vec<Self::Output>, StateMachineError> {
        Ok(batch
            .commands
            .iter()
            .map(|c| {
                let s = String::from_utf8_lossy(c.data).to_string();
                let (k, v) = s.split_once('=').unwrap_or((&s, ""));
                self.0.insert(k.to_string(), v.to_string())
            })
            .collect())
    }

    fn restore(&mut self, _: &mut MemStorage, snap: &Snapshot) -> Result<(), StateMachineError> {
        self.0 = String::from_utf8_lossy(&snap.data)
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        Ok(())
    }

    fn compact(
        &mut self,
        storage: &mut MemStorage,
        applied: Index,
    ) -> Result<(), StateMachineError> {
        let data: String = self.0.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let conf = storage
            .snapshot()
            .map_err(StateMachineError::new)?
            .meta
            .conf;
        storage
            .compact(applied, conf, data.into_bytes())
            .map_err(StateMachineError::new)
    }
}

fn start(ids: &[NodeId]) -> Net {
    let net = Net::default();
    for &id in ids {
        let mut raft = Config::new(id);
        raft.election_tick = 10;
        let mut cfg = DriverConfig::new(raft);
        cfg.tick_interval = Duration::from_millis(10);
        cfg.snapshot_count = 20;
        cfg.request_timeout = Duration::from_secs(3);
        let storage = MemStorage::new(ConfState::new(ids.iter().copied()));
        let (driver, handle) = Driver::new(
            cfg,
            storage,
            ChanTransport(net.clone()),
            Kv::default(),
            MonotonicClock::new(),
        )
        .unwrap();
        net.handles.lock().unwrap().insert(id, handle);
        tokio::spawn(driver.run());
    }
    net
}

impl Net {
    fn h(&self, id: NodeId) -> H {
        self.handles.lock().unwrap()[&id].clone()
    }

    async fn leader(&self, except: Option<NodeId>) -> NodeId {
        for _ in 0..500 {
            let hs: Vec<H> = self.handles.lock().unwrap().values().cloned().collect();
            for h in hs {
                let st = h.status();
                if st.role == Role::Leader && Some(st.id) != except && h.lease_state().serving {
                    return st.id;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no leader elected");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_commit_through_leader_and_forwarding_follower() {
    let net = start(&[1, 2, 3]);
    let l = net.leader(None).await;
    let f = [1, 2, 3].into_iter().find(|&i| i != l).unwrap();
    assert_eq!(net.h(l).propose(b"a=1".to_vec()).await.unwrap(), None);
    assert_eq!(
        net.h(f).propose(b"a=2".to_vec()).await.unwrap(),
        Some("1".to_string())
    );
    // Enough writes to cross snapshot_count and compact the log.
    for i in 0..30 {
        net.h(l)
            .propose(format!("k{i}=v").into_bytes())
            .await
            .unwrap();
    }
    assert!(net.h(l).status().applied >= 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_reads_send_nothing_quorum_reads_do() {
    let net = start(&[1, 2, 3]);
    let l = net.leader(None).await;
    net.h(l).propose(b"x=1".to_vec()).await.unwrap();
    let h = net.h(l);
    // Wait until the lease is held.
    for _ in 0..100 {
        if h.lease_reader().can_read_with_lease() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(h.linearizable_read(false).await.unwrap(), ReadPath::Lease);
    assert_eq!(
        h.linearizable_read(true).await.unwrap(),
        ReadPath::ReadIndex
    );
    let f = [1, 2, 3].into_iter().find(|&i| i != l).unwrap();
    assert_eq!(
        net.h(f).linearizable_read(false).await.unwrap(),
        ReadPath::ReadIndex
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_loses_its_lease_and_a_new_leader_takes_over() {
    let net = start(&[1, 2, 3]);
    let old = net.leader(None).await;
    net.h(old).propose(b"y=1".to_vec()).await.unwrap();
    net.down.lock().unwrap().insert(old);
    // The lease runs out within its duration (30 ms - 3 ms); no lease read after that.
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(!net.h(old).lease_reader().can_read_with_lease());
    let new = net.leader(Some(old)).await;
    assert_eq!(
        net.h(new).propose(b"y=2".to_vec()).await.unwrap(),
        Some("1".to_string())
    );
    // The old leader can neither write nor read linearizably while cut off.
    let mut short = net.h(old);
    short.timeout = Duration::from_millis(200);
    assert!(short.propose(b"y=3".to_vec()).await.is_err());
    assert!(short.linearizable_read(false).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_is_answered_once_it_took_effect() {
    use crate::types::ConfChange;
    let net = start(&[1, 2, 3]);
    let l = net.leader(None).await;
    net.h(l)
        .propose_conf_change(ConfChange::AddLearner(4))
        .await
        .unwrap();
    assert!(
        net.h(l).status().conf.learners.contains(&4),
        "answered before the change applied"
    );
    net.h(l)
        .propose_conf_change(ConfChange::RemoveNode(4))
        .await
        .unwrap();
    assert!(!net.h(l).status().conf.contains(4));
    // A refused change is answered at once.
    let err = net
        .h(l)
        .propose_conf_change(ConfChange::RemoveNode(9))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DriverError::Raft(RaftError::InvalidConfChange(_))),
        "{err:?}"
    );
    // Accepted is not done: with both followers cut off the change cannot commit, and the
    // caller hears nothing but its own timeout.
    for f in [1, 2, 3].into_iter().filter(|&i| i != l) {
        net.down.lock().unwrap().insert(f);
    }
    let mut short = net.h(l);
    short.timeout = Duration::from_millis(200);
    assert_eq!(
        short
            .propose_conf_change(ConfChange::AddLearner(5))
            .await
            .unwrap_err(),
        DriverError::Timeout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_read_is_answered_once_its_barrier_applied_after_every_earlier_write() {
    let net = start(&[1, 2, 3]);
    let l = net.leader(None).await;
    let f = [1, 2, 3].into_iter().find(|&i| i != l).unwrap();
    for (id, key) in [(l, "a"), (f, "b")] {
        let h = net.h(id);
        h.propose(format!("{key}=1").into_bytes()).await.unwrap();
        let written = h.applied_index();
        let barrier = h.log_read().await.unwrap();
        assert!(
            barrier > written,
            "barrier {barrier} not after write {written}"
        );
        assert!(
            h.applied_index() >= barrier,
            "answered before its barrier applied"
        );
    }
    // The barrier is an entry of its own that reaches no state machine: the next write's
    // previous value is the one written before it.
    assert_eq!(
        net.h(l).propose(b"a=2".to_vec()).await.unwrap(),
        Some("1".to_string())
    );
    // An empty proposal would be taken for a barrier, so it is refused.
    assert_eq!(
        net.h(l).propose(Vec::new()).await.unwrap_err(),
        DriverError::EmptyProposal
    );
    // Without a quorum the barrier cannot commit, so a cut-off leader cannot answer one.
    for id in [1, 2, 3].into_iter().filter(|&i| i != l) {
        net.down.lock().unwrap().insert(id);
    }
    let mut short = net.h(l);
    short.timeout = Duration::from_millis(200);
    assert_eq!(short.log_read().await.unwrap_err(), DriverError::Timeout);
}

/// Runs `n` tasks made by `f` and returns their results. On a current-thread runtime all of
/// them send their request before the driver task runs again, so it takes them in one batch.
async fn together<T, F>(n: usize, f: impl Fn(usize) -> F) -> Vec<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// On one thread, the reads below are all queued before the driver runs again, so the driver
/// takes them in one batch and proposes a single barrier for them.
#[tokio::test(flavor = "current_thread")]
async fn log_reads_that_arrive_together_share_one_barrier() {
    let net = start(&[1, 2, 3]);
    let l = net.leader(None).await;
    let h = net.h(l);
    h.propose(b"c=1".to_vec()).await.unwrap();
    let last_before = h.status().last_index;
    let indexes: HashSet<Index> = together(16, |_| {
        let h = h.clone();
        async move { h.log_read().await.unwrap() }
    })
    .await
    .into_iter()
    .collect();
    assert_eq!(indexes.len(), 1, "barriers at {indexes:?}");
    assert_eq!(h.status().last_index, last_before + 1);
}

/// Proposals taken in together leave as one append per follower (and come back as one
/// acknowledgement each), not one message per entry.
#[tokio::test(flavor = "current_thread")]
async fn proposals_that_arrive_together_travel_in_one_append() {
    let net = start(&[1, 2, 3]);
    let l = net.leader(None).await;
    let h = net.h(l);
    h.propose(b"d=0".to_vec()).await.unwrap();
    // Let the commit of the write above reach the followers before counting.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let sent_before = *net.sent.lock().unwrap();
    together(16, |i| {
        let h = h.clone();
        async move { h.propose(format!("d={i}").into_bytes()).await.unwrap() }
    })
    .await;
    let sent = *net.sent.lock().unwrap() - sent_before;
    // Per follower: the append, its acknowledgement, and the commit update with its answer;
    // a heartbeat round may fall inside. One message per entry would be 64 or more.
    assert!(sent <= 16, "{sent} messages for 16 proposals");
}

/// Run `body` on a runtime of its own and fail the test if it has not finished within `limit`:
/// a wedged driver blocks whoever reads its channels, so waiting on it in the test would hang.
fn within<F>(limit: Duration, body: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(body())));
        let _ = done_tx.send(outcome);
        // A wedged driver thread would block the runtime's shutdown; leave it behind.
        std::mem::forget(rt);
    });
    match done_rx.recv_timeout(limit) {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("not finished within {limit:?}: a driver is wedged")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("test thread died"),
    }
}

/// The real driver's snapshot path: a follower cut off while the log is compacted past what it
/// has is sent a snapshot, installs it, and goes on applying. (Issue 22: installing a snapshot
/// deadlocked the driver on its own applied-index channel, so the node never advanced again and
/// its loop could not even be stopped.)
#[test]
fn a_follower_behind_a_compaction_catches_up_by_snapshot_and_keeps_applying() {
    within(Duration::from_secs(30), || async {
        let net = start(&[1, 2, 3]);
        let l = net.leader(None).await;
        let f = [1, 2, 3].into_iter().find(|&i| i != l).unwrap();
        net.down.lock().unwrap().insert(f);
        // Several compactions (snapshot_count = 20) while the follower is away.
        for i in 0..70 {
            net.h(l)
                .propose(format!("k{i}=v{i}").into_bytes())
                .await
                .unwrap();
        }
        net.down.lock().unwrap().remove(&f);
        for i in 70..75 {
            net.h(l)
                .propose(format!("k{i}=v{i}").into_bytes())
                .await
                .unwrap();
        }
        let target = net.h(l).status().commit;
        net.h(f)
            .wait_applied(target)
            .await
            .unwrap_or_else(|e| panic!("follower {f} did not catch up to {target}: {e}"));
        // And it keeps applying after the snapshot: its driver is alive.
        net.h(l).propose(b"after=1".to_vec()).await.unwrap();
        let target = net.h(l).status().commit;
        net.h(f).wait_applied(target).await.unwrap();
        assert_eq!(net.h(f).status().conf.voters.len(), 3);
    });
}
