//! Building a running node: storage, state machine, Raft driver, peer transport, TTL sweeper.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deimos_raft::driver::{Driver, DriverConfig, Handle};
use deimos_raft::ids::{Id, Ids};
use deimos_raft::lease::LeaseConfig;
use deimos_raft::types::Role;
use deimos_raft::{Config, ScaledClock};
use deimos_store::keyspace::Command;
use deimos_store::machine::{
    KvStateMachine, Output, Proposal, SharedMembers, SharedRemoved, SharedStore,
};
use deimos_store::persist::RedbStorage;

use crate::config::NodeConfig;
use crate::error::StartError;
use crate::stats::ServerStats;
use crate::transport::HttpTransport;

pub type NodeHandle = Handle<Output, ScaledClock>;

/// Everything a request handler needs.
pub struct App {
    pub cfg: NodeConfig,
    pub handle: NodeHandle,
    pub store: SharedStore,
    pub members: SharedMembers,
    /// Ids of removed members: never added again, their peer traffic refused.
    pub removed: SharedRemoved,
    /// The cluster this member belongs to; peer traffic from another cluster is refused.
    pub cluster_id: u64,
    /// Notified when this member learns it was removed from the cluster: it stops.
    pub stop: Arc<tokio::sync::Notify>,
    pub started: Instant,
    pub stats: Arc<ServerStats>,
    /// HTTP client for requests this member forwards to the leader's client URL (membership
    /// changes); presents the peer certificate when the client URLs are https.
    pub leader_client: crate::api::members::LeaderClient,
    /// Users, roles and the verified-password cache (`api/auth.rs`).
    pub auth: Arc<crate::api::auth::AuthGate>,
    /// The driver thread's runtime, where direct peer streams are read (`transport::direct`).
    pub driver_rt: crate::transport::direct::DriverRuntime,
    /// The inbound peer streams open, at most one per member.
    pub inbound: Arc<crate::transport::inbound::InboundStreams>,
}

impl App {
    pub fn id(&self) -> u64 {
        self.cfg.id
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The Raft driver, on a thread of its own (see `start`).
pub struct DriverThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DriverThread {
    /// Stop the driver and wait for it: dropping it closes the store cleanly (what is staged
    /// is written), so a restart replays nothing.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DriverThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Open the data dir, resolve this member's id, and start the Raft driver; returns the app and
/// the driver's thread.
pub async fn start(mut cfg: NodeConfig) -> Result<(Arc<App>, DriverThread), StartError> {
    let data_dir = &cfg.flags.data_dir;
    // Two-phase commit (redb's default): a damaged latest commit slot is refused at open rather
    // than silently rolled back to the previous commit, which would lose acknowledged writes
    // (shown by `deimos-store/tests/persist_corrupt.rs`). It costs a second fsync per commit;
    // --unsafe-one-phase-commit trades that guarantee back for speed.
    let opts = deimos_store::persist::StoreOptions {
        two_phase_commit: !cfg.flags.unsafe_one_phase_commit,
        ..Default::default()
    };
    if cfg.flags.unsafe_one_phase_commit {
        tracing::warn!(
            "--unsafe-one-phase-commit: a damaged latest commit slot will silently lose acknowledged writes"
        );
    }
    let mut storage =
        RedbStorage::open_with(data_dir, &opts).map_err(|source| StartError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
    let peer_tls = crate::tls::TlsFiles {
        cert: cfg.flags.peer_cert_file.clone(),
        key: cfg.flags.peer_key_file.clone(),
        ca: cfg.flags.peer_ca_file.clone(),
    };
    // Peers are reached with the peer certificate whenever a peer CA is configured, so a cluster
    // mixing http and https URLs during a migration still works.
    let peer_client_tls = match peer_tls.ca {
        Some(_) => Some(peer_tls.client_config("peer client")?),
        None => None,
    };
    let peer_client_tls_for_leader = peer_client_tls.clone();
    let me = crate::identity::resolve(&cfg, &mut storage, peer_client_tls.clone()).await?;
    cfg.id = me.id;
    let cluster_id = me.cluster_id;
    if !me.members.is_empty() {
        cfg.peer_hints = me.members;
    }
    let forced = cfg.flags.force_new_cluster && force_new_cluster(&cfg, cluster_id, &mut storage)?;
    let sm = KvStateMachine::open(&mut storage, &cfg.bootstrap)?
        .with_catch_up_entries(cfg.flags.snapshot_catchup_entries);
    let (applied, _, conf) = storage.applied_state();
    let (store, members, removed) = (sm.store(), sm.members(), sm.removed());
    let auth = Arc::new(crate::api::auth::AuthGate::new(sm.auth()));
    if removed.read().is_ok_and(|r| r.contains(&cfg.id)) {
        return Err(StartError::Removed {
            id: Id(cfg.id),
            path: data_dir.clone(),
        });
    }

    let mut raft = Config::new(cfg.id);
    raft.election_tick = cfg.timing.election_tick;
    raft.heartbeat_tick = cfg.timing.heartbeat_tick;
    raft.applied = applied;
    raft.seed = cfg.id ^ now_ms();
    let mut dcfg = DriverConfig::new(raft.clone());
    let rate = cfg.flags.unsafe_clock_rate;
    // A node whose clock runs fast ticks more often in real time, and its lease clock agrees.
    dcfg.tick_interval = cfg.timing.tick_interval.div_f64(rate);
    dcfg.unsafe_skip_lease_validation = cfg.flags.unsafe_skip_lease_check;
    dcfg.snapshot_count = cfg.flags.snapshot_count;
    dcfg.request_timeout = cfg.flags.request_timeout;
    let mut lease = LeaseConfig::from_raft(&raft, cfg.timing.tick_interval);
    if let Some(d) = cfg.flags.lease_duration {
        lease = lease.with_lease_duration(d);
    }
    if let Some(t) = cfg.flags.lease_drift_tolerance {
        lease = lease.with_drift_tolerance(t);
    }
    // `--unsafe-skip-lease-check` exists so the fault suite can show a broken bound is caught;
    // validating here would refuse it before the driver's unchecked path is reached.
    if !cfg.flags.unsafe_skip_lease_check {
        lease.validate(&raft)?;
    }
    dcfg.lease = Some(lease);

    let stats = Arc::new(ServerStats::default());
    let bind = cfg
        .flags
        .listen_peer_urls
        .first()
        .and_then(|u| crate::config::url_addr(u).ok())
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified());
    let removal = Arc::new(tokio::sync::Notify::new());
    let driver_rt = crate::transport::direct::DriverRuntime::default();
    let transport = HttpTransport::new(members.clone(), stats.clone(), bind, peer_client_tls)
        .with_driver_runtime(driver_rt.clone())
        .with_removal_notice(removal.clone())
        .with_identity(cluster_id, cfg.id)
        .with_hints(
            cfg.peer_hints
                .iter()
                .filter_map(|m| Some((m.id, m.peer_urls.first()?.clone())))
                .collect(),
        );
    let (driver, handle) = Driver::new(dcfg, storage, transport, sm, ScaledClock::new(rate))?;
    // The driver blocks its thread for each fsync. On a runtime worker that stalled whatever
    // it had just woken and queued there (a follower's append, a client's answer) until the
    // fsync ended — a worker's most recently woken task cannot be stolen by another worker.
    // On its own thread (with its own timer) it blocks only itself.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let driver_rt_slot = driver_rt.clone();
    let thread = std::thread::Builder::new()
        .name("raft-driver".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the raft driver's runtime; exiting");
                    std::process::exit(70);
                }
            };
            // Direct peer streams are read and written here (`transport::direct`).
            let _ = driver_rt_slot.set(rt.handle().clone());
            let outcome = fail_stop(|| {
                rt.block_on(async move {
                    tokio::select! {
                        r = driver.run() => r.map_err(RaftLoopError::Failed),
                        _ = stopped => Ok(()),
                    }
                })
            });
            if let Err(why) = outcome {
                // Continuing with unknown durable state could lose acknowledged writes, and a
                // process whose Raft loop is gone would answer clients as a zombie: stop hard,
                // so that a supervisor restarts it.
                tracing::error!(error = %why, "raft driver failed; exiting");
                std::process::exit(70);
            }
        })
        .map_err(StartError::Thread)?;
    let task = DriverThread {
        stop: Some(stop),
        thread: Some(thread),
    };
    tracing::info!(id = %Id(cfg.id), cluster = %Id(cluster_id), name = %cfg.flags.name, applied, voters = %Ids(&conf.voters), learners = %Ids(&conf.learners), "node started");

    let app = Arc::new(App {
        cfg,
        handle,
        store,
        members,
        removed,
        cluster_id,
        stop: removal,
        started: Instant::now(),
        stats,
        leader_client: crate::api::members::leader_client(peer_client_tls_for_leader),
        auth,
        driver_rt,
        inbound: Arc::default(),
    });
    // Alone in the cluster (a fresh single-node bootstrap, or a restart of one): no one to
    // wait for. The driver applies the bootstrap entries before it serves this request.
    // (A forced new cluster applies its own removals before this request is served.)
    let alone = forced
        || match conf.voters.len() {
            0 => app.cfg.bootstrap.len() == 1 && app.cfg.bootstrap[0].id == app.id(),
            _ => conf.voters.len() == 1 && conf.voters.contains(&app.id()),
        };
    if alone {
        let h = app.handle.clone();
        tokio::spawn(async move {
            let _ = h.campaign().await;
        });
    }
    tokio::spawn(expiry_loop(app.clone()));
    tokio::spawn(publish_self(app.clone()));
    tokio::spawn(watch_removal(app.clone()));
    Ok((app, task))
}

/// `--force-new-cluster`: make this member the only one of its cluster, keeping its data (see
/// `deimos_store::recovery::force_new_cluster`). Returns whether the membership was rewritten;
/// on a data dir without state there is nothing to keep and the flag is ignored.
fn force_new_cluster(
    cfg: &NodeConfig,
    cluster_id: u64,
    storage: &mut RedbStorage,
) -> Result<bool, StartError> {
    use deimos_raft::storage::LogStorage;
    let last = storage
        .last_index()
        .map_err(|e| StartError::ForceNewCluster(Box::new(e)))?;
    if last == 0 {
        tracing::warn!("--force-new-cluster: the data dir holds no state; starting normally");
        return Ok(false);
    }
    let forced = deimos_store::recovery::force_new_cluster(storage, cfg.id)
        .map_err(|e| StartError::ForceNewCluster(Box::new(e)))?;
    if forced.removed.is_empty() {
        tracing::warn!(id = %Id(cfg.id), "--force-new-cluster: this member is already the only one; nothing to change (remove the flag)");
        return Ok(false);
    }
    let removed: Vec<String> = forced
        .removed
        .iter()
        .map(|&id| Id(id).to_string())
        .collect();
    tracing::warn!(
        id = %Id(cfg.id),
        cluster = %Id(cluster_id),
        removed = %removed.join(","),
        commit = forced.commit,
        "--force-new-cluster: this member is now the only member of its cluster, keeping its data; the other members were removed from the membership and cannot rejoin with their data. Add new members with `member add`, and remove the flag from this member's configuration"
    );
    Ok(true)
}

/// Run the Raft loop, turning a panic into an error like any other fatal one (the panic hook has
/// already printed it): the thread must not end quietly while the process stays up.
fn fail_stop(run: impl FnOnce() -> Result<(), RaftLoopError>) -> Result<(), RaftLoopError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(RaftLoopError::Panicked(msg))
        }
    }
}

/// Why the Raft loop ended while the node was meant to run; either way the process exits.
#[derive(Debug, thiserror::Error)]
enum RaftLoopError {
    #[error(transparent)]
    Failed(deimos_raft::driver::FatalError),
    /// The panic's message (the hook has printed it with its location already).
    #[error("raft driver panicked: {0}")]
    Panicked(String),
}

/// TTL expiry is decided by the leader and replicated, so every replica expires identically.
async fn expiry_loop(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if app.handle.status().role != Role::Leader {
            continue;
        }
        let now = now_ms();
        let due = app
            .store
            .read()
            .ok()
            .and_then(|s| s.next_expiration_ms())
            .is_some_and(|t| t <= now);
        if due {
            let p = Proposal::Keys(Command::ExpireUpTo { now_ms: now }).encode();
            if let Err(e) = app.handle.propose(p).await {
                tracing::debug!(error = %e, "expiry proposal failed");
            }
        }
    }
}

/// A member that applied its own removal stops (a removed member that kept running would
/// campaign, unheard, for ever). One cut off while it was removed learns it from a peer's 410
/// (the transport notifies `stop` itself).
async fn watch_removal(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        if is_removed(&app) {
            tracing::warn!(id = %Id(app.id()), "this member was removed from the cluster; stopping");
            app.stop.notify_one();
            return;
        }
    }
}

fn is_removed(app: &App) -> bool {
    app.removed.read().is_ok_and(|r| r.contains(&app.id()))
}

/// Make this member's name and client URLs known to the cluster (a member added through the
/// API is recorded with its peer URLs only), retrying until it sticks.
async fn publish_self(app: Arc<App>) {
    loop {
        let current = app
            .members
            .read()
            .ok()
            .and_then(|m| m.get(&app.id()).cloned());
        let wanted = deimos_store::machine::Member {
            id: app.id(),
            name: app.cfg.flags.name.clone(),
            peer_urls: current
                .as_ref()
                .map(|m| m.peer_urls.clone())
                .unwrap_or_else(|| app.cfg.peer_urls.clone()),
            client_urls: app.cfg.client_urls.clone(),
        };
        if current.as_ref() == Some(&wanted) || is_removed(&app) {
            return;
        }
        if app.handle.status().leader.is_some()
            && matches!(
                app.handle
                    .propose(Proposal::PutMember(wanted).encode())
                    .await,
                Ok(Output::Members)
            )
        {
            continue;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Graceful stop: a leader hands leadership to a follower first, so clients see no election
/// timeout.
pub async fn step_down(app: &App) {
    let st = app.handle.status();
    if st.role != Role::Leader {
        return;
    }
    let Some(&target) = st.conf.voters.iter().find(|&&v| v != st.id) else {
        return;
    };
    tracing::info!(to = %Id(target), "transferring leadership before shutdown");
    if app.handle.transfer_leader(target).await.is_err() {
        return;
    }
    // Bounded well inside the stop deadline, so the Raft loop still gets to close the store.
    let wait = (app.cfg.timing.election_timeout() * 2).min(crate::shutdown::GRACE / 2);
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if app.handle.status().role != Role::Leader {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deimos_raft::driver::FatalError;

    #[test]
    fn a_panicking_raft_loop_is_a_fatal_error_not_a_quiet_end() {
        let r = fail_stop(|| panic!("index out of bounds"));
        assert_eq!(
            r.map_err(|e| e.to_string()),
            Err("raft driver panicked: index out of bounds".to_string())
        );
        let stuck = fail_stop(|| Err(RaftLoopError::Failed(FatalError::NoQuiescence(7))));
        assert!(matches!(
            stuck,
            Err(RaftLoopError::Failed(FatalError::NoQuiescence(7)))
        ));
        assert!(fail_stop(|| Ok(())).is_ok());
    }
}
