//! Which member this process is: resolved once at start, recorded in the data directory.
//!
//! A founding member's id is derived from its peer URLs (every founder computes the same ids
//! from `--bootstrap-config`). A member added at runtime gets an id from the cluster when it is
//! added (`POST /v2/members`), which includes the time so that a replaced member never reuses
//! an old id: a new server under an old id would inherit that id's votes and acknowledgements
//! and its place in configurations it never held (the simulator shows it breaking leader
//! completeness). So a joining node learns its id from the cluster — the member whose peer URLs
//! are its own, in the member list a peer serves on `GET /members` — as etcd's joining members
//! do. Once known, the id is recorded in the store and read back on every restart.

use std::time::Duration;

use bytes::Bytes;
use deimos_raft::ids::Id;
use deimos_store::machine::Member;
use deimos_store::persist::{PersistError, RedbStorage};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{ClusterState, NodeConfig};
use crate::tls::PeerConnector;
use crate::transport::{request_within, HttpFailure};

/// Where the member list is served on the peer listener.
pub const MEMBERS_PATH: &str = "/members";
/// How long a joining node keeps asking for its id: the add may still be committing, and peers
/// may be restarting.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The member and cluster this data directory belongs to, and the member list learned on the way
/// (peer URLs to reach the others before the replicated records arrive).
pub struct Resolved {
    pub id: u64,
    pub cluster_id: u64,
    pub members: Vec<Member>,
}

/// The header every peer request carries with the sender's cluster id, and the one with its
/// member id (etcd's names), both as 16 hex digits.
pub const CLUSTER_ID_HEADER: &str = "x-etcd-cluster-id";
pub const SENDER_HEADER: &str = "x-server-from";

/// A new cluster's id: its founding members' ids and its token, hashed (as etcd derives it), so
/// every founder computes the same one and two clusters differ.
pub fn derive_cluster_id(founders: &[Member], token: &str) -> u64 {
    deimos_store::recovery::cluster_id(founders, token)
}

/// Why this member's identity could not be settled at start.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the {what} id: {source}")]
    Read {
        what: &'static str,
        #[source]
        source: PersistError,
    },
    #[error("cannot record the member id: {0}")]
    Record(#[source] deimos_raft::storage::StorageError),
    #[error(
        "--initial-cluster-state existing needs the other members' peer URLs in \
         --bootstrap-config"
    )]
    NoPeers,
    /// No peer listed this member before the patience ran out; the last peer's answer.
    #[error("cannot learn this member's id from the cluster: {0}")]
    NotLearned(#[source] FetchError),
}

/// One peer's member list could not be had, or does not list this member.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {failure}")]
    Exchange {
        url: String,
        #[source]
        failure: HttpFailure,
    },
    #[error("{url}: no {header} header", header = CLUSTER_ID_HEADER)]
    NoClusterId { url: String },
    #[error("{url}: {source}")]
    Body {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{url}: bad member list: {source}")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{url}: bad member id {id:?}")]
    BadId { url: String, id: String },
    #[error(
        "{peer} lists no member with peer URLs {mine:?}: add this member (`deimosctl member \
         add`) before starting it with --initial-cluster-state existing"
    )]
    NotListed { peer: String, mine: Vec<String> },
}

/// Resolve and record this node's member id (see the module docs). `fresh`: the data directory
/// holds no Raft state yet.
pub async fn resolve(
    cfg: &NodeConfig,
    storage: &mut RedbStorage,
    peer_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<Resolved, IdentityError> {
    let read = |what: &'static str, r: Result<Option<u64>, PersistError>| {
        r.map_err(|source| IdentityError::Read { what, source })
    };
    let recorded = read("member", storage.member_id())?;
    let recorded_cluster = read("cluster", storage.cluster_id())?;
    let fresh = storage.hard_state() == Default::default() && storage.applied_state().0 == 0;
    let joining = cfg.flags.initial_cluster_state == ClusterState::Existing;
    let founders_cluster = || derive_cluster_id(&cfg.peer_hints, &cfg.flags.initial_cluster_token);
    let (id, cluster_id, members) = match (recorded, recorded_cluster) {
        (Some(id), Some(cluster)) => (id, cluster, Vec::new()),
        // A new cluster: the founders agree on their ids and the cluster id from the flags.
        _ if fresh && !joining => (cfg.id, founders_cluster(), Vec::new()),
        _ if fresh => {
            let found = discover(cfg, peer_tls, DISCOVERY_TIMEOUT).await?;
            tracing::info!(id = %Id(found.id), cluster = %Id(found.cluster_id), "learned this member's id from the cluster");
            (found.id, found.cluster_id, found.members)
        }
        // A data directory written before ids were recorded: its member id is the one the
        // flags give; its cluster id is asked of the peers (a member that joined has no
        // founders in its flags), or, if none answers, derived from the flags as a founder's.
        (member, _) => {
            let id = member.unwrap_or(cfg.id);
            let cluster = match discover(cfg, peer_tls, Duration::from_secs(5)).await {
                Ok(found) if found.id == id => found.cluster_id,
                _ => {
                    tracing::warn!("no peer told this (upgraded) member its cluster id; deriving it from --bootstrap-config and --initial-cluster-token");
                    founders_cluster()
                }
            };
            (id, cluster, Vec::new())
        }
    };
    storage
        .set_member_id(id)
        .and_then(|()| storage.set_cluster_id(cluster_id))
        .map_err(IdentityError::Record)?;
    Ok(Resolved {
        id,
        cluster_id,
        members,
    })
}

/// Ask the peers named in `--bootstrap-config` for the member list until one lists a member
/// with this node's peer URLs, for up to `patience`.
async fn discover(
    cfg: &NodeConfig,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    patience: Duration,
) -> Result<Resolved, IdentityError> {
    let mine = normalised(&cfg.peer_urls);
    let peers: Vec<String> = cfg
        .peer_hints
        .iter()
        .flat_map(|m| m.peer_urls.iter().cloned())
        .filter(|u| !mine.contains(&normalise(u)))
        .collect();
    if peers.is_empty() {
        return Err(IdentityError::NoPeers);
    }
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(3)));
    let client: Client<PeerConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(PeerConnector::new(http, tls));
    let deadline = tokio::time::Instant::now() + patience;
    let mut last = None;
    loop {
        for peer in &peers {
            match fetch(&client, peer).await {
                Ok((cluster_id, members)) => {
                    let found = members
                        .iter()
                        .find(|m| normalised(&m.peer_urls) == mine)
                        .map(|m| m.id);
                    if let Some(id) = found {
                        return Ok(Resolved {
                            id,
                            cluster_id,
                            members,
                        });
                    }
                    last = Some(FetchError::NotListed {
                        peer: peer.clone(),
                        mine: cfg.peer_urls.clone(),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        // `peers` is not empty, so every pass has set `last`.
        let Some(reason) = last.take() else {
            return Err(IdentityError::NoPeers);
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(IdentityError::NotLearned(reason));
        }
        tracing::info!(%reason, "waiting to learn this member's id from the cluster");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One peer's member list and the cluster id it answers with.
async fn fetch(
    client: &Client<PeerConnector, Full<Bytes>>,
    peer: &str,
) -> Result<(u64, Vec<Member>), FetchError> {
    let url = format!("{}{MEMBERS_PATH}", peer.trim_end_matches('/'));
    let exchange = async {
        let req = hyper::Request::get(&url).body(Full::new(Bytes::new()))?;
        let resp = request_within(client, req, Duration::from_secs(5)).await?;
        match resp.status() {
            s if s.is_success() => Ok(resp),
            s => Err(HttpFailure::Status(s)),
        }
    };
    let resp = exchange.await.map_err(|failure| FetchError::Exchange {
        url: url.clone(),
        failure,
    })?;
    let cluster_id = resp
        .headers()
        .get(CLUSTER_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .ok_or_else(|| FetchError::NoClusterId { url: url.clone() })?;
    // A member list is small; a peer answering megabytes is not one.
    let body = http_body_util::Limited::new(resp.into_body(), 4 << 20)
        .collect()
        .await
        .map_err(|source| FetchError::Body {
            url: url.clone(),
            source,
        })?
        .to_bytes();
    let list: deimos_api::members::MemberList =
        serde_json::from_slice(&body).map_err(|source| FetchError::Json {
            url: url.clone(),
            source,
        })?;
    let members = list
        .members
        .into_iter()
        .map(|m| {
            let id = u64::from_str_radix(&m.id, 16).map_err(|_| FetchError::BadId {
                url: url.clone(),
                id: m.id.clone(),
            })?;
            Ok(Member {
                id,
                name: m.name,
                peer_urls: m.peer_urls,
                client_urls: m.client_urls,
            })
        })
        .collect::<Result<Vec<_>, FetchError>>()?;
    Ok((cluster_id, members))
}

fn normalise(url: &str) -> String {
    url.trim_end_matches('/').to_ascii_lowercase()
}

fn normalised(urls: &[String]) -> std::collections::BTreeSet<String> {
    urls.iter().map(|u| normalise(u)).collect()
}

/// A fresh id for a member added at runtime: its peer URLs and the time, hashed, and not one
/// `taken` already (a current or removed member's). Never 0.
pub fn new_member_id(peer_urls: &[String], taken: impl Fn(u64) -> bool) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    member_id_at(peer_urls, nanos, taken)
}

fn member_id_at(peer_urls: &[String], nanos: u128, taken: impl Fn(u64) -> bool) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for u in normalised(peer_urls) {
        eat(u.as_bytes());
        eat(b",");
    }
    eat(&nanos.to_le_bytes());
    let mut id = h.max(1);
    while taken(id) {
        id = id.wrapping_add(1).max(1);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_differ_for_the_same_urls_and_avoid_taken_ones() {
        let urls = vec!["http://10.0.0.1:7001".to_string()];
        let a = member_id_at(&urls, 1_000, |_| false);
        let b = member_id_at(&urls, 1_001, |_| false);
        assert_ne!(a, b, "a member re-added later must not get its old id");
        assert_eq!(
            member_id_at(&urls, 1_000, |id| id == a),
            a.wrapping_add(1).max(1)
        );
        assert_ne!(new_member_id(&urls, |_| false), 0);
    }

    #[test]
    fn peer_urls_match_as_sets_ignoring_case_and_trailing_slashes() {
        let a = vec!["http://H:7001/".to_string(), "http://g:7001".into()];
        let b = vec!["http://g:7001".to_string(), "http://h:7001".into()];
        assert_eq!(normalised(&a), normalised(&b));
    }
}
