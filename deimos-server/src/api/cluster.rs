//! Cluster endpoints etcd v2 clients call (`machines`, `stats/*`), and Deimos's own
//! `/raft/status`, `/health`, `/version`, `/metrics`. The members API is in `members.rs`.

use std::sync::OnceLock;

use deimos_api::cluster::{
    Counts, FollowerStats, Health, Latency, LeaderInfo, LeaderStats, SelfStats, Version,
};
use deimos_api::status::{LeaseStatus, Progress, RaftStatus};
use deimos_raft::types::Role;
use metrics_exporter_prometheus::PrometheusHandle;

use super::response::{self, message, Resp};
use crate::node::App;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

pub fn set_prometheus(h: PrometheusHandle) {
    let _ = PROMETHEUS.set(h);
}

pub(super) fn hex(id: u64) -> String {
    format!("{id:016x}")
}

pub fn machines(app: &App) -> Resp {
    let urls: Vec<String> = app
        .members
        .read()
        .map(|ms| ms.values().flat_map(|m| m.client_urls.clone()).collect())
        .unwrap_or_default();
    response::text(200, &urls.join(", "))
}

fn uptime(app: &App) -> String {
    humantime::format_duration(std::time::Duration::from_secs(
        app.started.elapsed().as_secs(),
    ))
    .to_string()
}

pub fn stats_self(app: &App) -> Resp {
    let st = app.handle.status();
    let state = match st.role {
        Role::Leader => "StateLeader",
        Role::Follower => "StateFollower",
        Role::Candidate | Role::PreCandidate => "StateCandidate",
    };
    use std::sync::atomic::Ordering::Relaxed;
    let body = SelfStats {
        name: app.cfg.flags.name.clone(),
        id: hex(app.id()),
        state: state.to_string(),
        leader_info: LeaderInfo {
            leader: st.leader.map(hex).unwrap_or_default(),
            uptime: uptime(app),
        },
        recv_append_request_cnt: app.stats.recv_messages.load(Relaxed),
        send_append_request_cnt: app.stats.sent_messages.load(Relaxed),
    };
    response::json(200, &body)
}

pub fn stats_leader(app: &App) -> Resp {
    let st = app.handle.status();
    if st.role != Role::Leader {
        return message(403, "not current leader");
    }
    let peers = app
        .stats
        .peers
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    let followers = st
        .conf
        .all()
        .filter(|&id| id != st.id)
        .map(|id| {
            let p = peers.get(&id).cloned().unwrap_or_default();
            let stats = FollowerStats {
                latency: Latency {
                    current: p.current_ms / 1000.0,
                    average: p.average_ms() / 1000.0,
                    standard_deviation: p.stddev_ms() / 1000.0,
                    minimum: p.min_ms / 1000.0,
                    maximum: p.max_ms / 1000.0,
                },
                counts: Counts {
                    fail: p.fail,
                    success: p.success,
                },
            };
            (hex(id), stats)
        })
        .collect();
    let body = LeaderStats {
        leader: hex(st.id),
        followers,
    };
    response::json(200, &body)
}

pub fn stats_store(app: &App) -> Resp {
    match app.store.read() {
        Ok(s) => response::json(200, &s.stats()),
        Err(_) => message(500, "store lock poisoned"),
    }
}

pub fn raft_status(app: &App) -> Resp {
    let st = app.handle.status();
    let lease = app.handle.lease_reader();
    let ls = lease.state();
    let progress = st
        .progress
        .iter()
        .map(|(&id, p)| {
            let v = Progress {
                matched: p.matched,
                next: p.next,
                state: p.state.as_str().to_string(),
                active: p.active,
                learner: st.conf.learners.contains(&id),
            };
            (hex(id), v)
        })
        .collect();
    let body = RaftStatus {
        id: hex(st.id),
        name: app.cfg.flags.name.clone(),
        role: st.role.as_str().to_string(),
        term: st.term,
        leader: st.leader.map(hex),
        commit_index: st.commit,
        applied_index: st.applied,
        last_index: st.last_index,
        voters: st.conf.voters.iter().copied().map(hex).collect(),
        learners: st.conf.learners.iter().copied().map(hex).collect(),
        progress,
        lease: LeaseStatus {
            valid: lease.can_read_with_lease(),
            remaining_ms: u64::try_from(lease.remaining().as_millis()).unwrap_or(u64::MAX),
            serving: ls.serving,
            reason: ls.reason.map(|r| r.as_str().to_string()),
        },
    };
    response::json(200, &body)
}

/// Healthy when a leader is known and a linearizable read completes: the node can serve.
pub async fn health(app: &App) -> Resp {
    if app.handle.status().leader.is_none() {
        return response::json(503, &Health::unhealthy("no leader"));
    }
    let check = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        app.handle.linearizable_read(false),
    )
    .await;
    match check {
        Ok(Ok(_)) => response::json(200, &Health::healthy()),
        _ => response::json(503, &Health::unhealthy("cannot reach quorum")),
    }
}

pub fn version() -> Resp {
    // etcd clients parse `etcdserver`/`etcdcluster`; we speak its v2 API as of 3.4.
    let body = Version {
        etcdserver: "3.4.0".into(),
        etcdcluster: "3.4.0".into(),
        deimos: Some(env!("CARGO_PKG_VERSION").into()),
    };
    response::json(200, &body)
}

/// Process metrics (memory, CPU, descriptors), as etcd and every Go service export them.
fn process_collector() -> &'static metrics_process::Collector {
    static C: OnceLock<metrics_process::Collector> = OnceLock::new();
    C.get_or_init(|| {
        let c = metrics_process::Collector::default();
        c.describe();
        c
    })
}

/// `/metrics`: what was recorded, plus what is read at scrape time (process, file size), plus
/// etcd's names for what etcd's dashboards query (see `etcd_metrics`).
pub fn metrics(app: &App) -> Resp {
    match PROMETHEUS.get() {
        Some(h) => {
            process_collector().collect();
            let file = app.cfg.flags.data_dir.join(deimos_store::persist::DB_FILE);
            if let Ok(meta) = std::fs::metadata(file) {
                metrics::gauge!(crate::stats::DB_SIZE_BYTES).set(meta.len() as f64);
            }
            let text = crate::etcd_metrics::with_etcd_names(&h.render());
            let mut r = response::text(200, &text);
            r.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        None => response::text(503, "metrics recorder not installed\n"),
    }
}
