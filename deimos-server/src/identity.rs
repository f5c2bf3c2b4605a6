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
use deimos_store::persist::RedbStorage;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::config::{ClusterState, NodeConfig};
use crate::tls::MaybeTlsConnector;

/// Where the member list is served on the peer listener.
pub const MEMBERS_PATH: &str = "/members";
/// How long a joining node keeps asking for its id: the add may still be committing, and peers
/// may be restarting.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The member this data directory belongs to, and the member list learned on the way (peer URLs
/// to reach the others before the replicated records arrive).
pub struct Resolved {
    pub id: u64,
    pub members: Vec<Member>,
}

/// Resolve and record this node's member id (see the module docs). `fresh`: the data directory
/// holds no Raft state yet.
pub async fn resolve(
    cfg: &NodeConfig,
    storage: &mut RedbStorage,
    peer_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<Resolved, String> {
    let recorded = storage
        .member_id()
        .map_err(|e| format!("cannot read the member id: {e}"))?;
    let fresh = storage.hard_state() == Default::default() && storage.applied_state().0 == 0;
    let (id, members) = match recorded {
        Some(id) => (id, Vec::new()),
        // A data directory written before ids were recorded: its id is the one the flags give.
        None if !fresh || cfg.flags.initial_cluster_state == ClusterState::New => {
            (cfg.id, Vec::new())
        }
        None => {
            let (id, members) = discover(cfg, peer_tls).await?;
            tracing::info!(id = %Id(id), "learned this member's id from the cluster");
            (id, members)
        }
    };
    storage
        .set_member_id(id)
        .map_err(|e| format!("cannot record the member id: {e}"))?;
    Ok(Resolved { id, members })
}

#[derive(Deserialize)]
struct MemberList {
    members: Vec<ListedMember>,
}

#[derive(Deserialize)]
struct ListedMember {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    client_urls: Vec<String>,
}

/// Ask the peers named in `--bootstrap-config` for the member list until one lists a member
/// with this node's peer URLs.
async fn discover(
    cfg: &NodeConfig,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<(u64, Vec<Member>), String> {
    let mine = normalised(&cfg.peer_urls);
    let peers: Vec<String> = cfg
        .peer_hints
        .iter()
        .flat_map(|m| m.peer_urls.iter().cloned())
        .filter(|u| !mine.contains(&normalise(u)))
        .collect();
    if peers.is_empty() {
        return Err(
            "--initial-cluster-state existing needs the other members' peer URLs in --bootstrap-config"
                .into(),
        );
    }
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(3)));
    let client: Client<MaybeTlsConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(MaybeTlsConnector::new(http, tls));
    let deadline = tokio::time::Instant::now() + DISCOVERY_TIMEOUT;
    let mut last = String::new();
    loop {
        for peer in &peers {
            match fetch(&client, peer).await {
                Ok(list) => {
                    let found = list
                        .iter()
                        .find(|m| normalised(&m.peer_urls) == mine)
                        .map(|m| m.id);
                    if let Some(id) = found {
                        return Ok((id, list));
                    }
                    last = format!(
                        "{peer} lists no member with peer URLs {:?}: add this member (`deimosctl member add`) before starting it with --initial-cluster-state existing",
                        cfg.peer_urls
                    );
                }
                Err(e) => last = e,
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "cannot learn this member's id from the cluster: {last}"
            ));
        }
        tracing::info!(reason = %last, "waiting to learn this member's id from the cluster");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn fetch(
    client: &Client<MaybeTlsConnector, Full<Bytes>>,
    peer: &str,
) -> Result<Vec<Member>, String> {
    let url = format!("{}{MEMBERS_PATH}", peer.trim_end_matches('/'));
    let req = hyper::Request::get(&url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("{url}: {e}"))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| format!("{url}: timed out"))?
        .map_err(|e| format!("{url}: {}", crate::transport::error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    // A member list is small; a peer answering megabytes is not one.
    let body = http_body_util::Limited::new(resp.into_body(), 4 << 20)
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    let list: MemberList =
        serde_json::from_slice(&body).map_err(|e| format!("{url}: bad member list: {e}"))?;
    list.members
        .into_iter()
        .map(|m| {
            let id = u64::from_str_radix(&m.id, 16)
                .map_err(|_| format!("{url}: bad member id {:?}", m.id))?;
            Ok(Member {
                id,
                name: m.name,
                peer_urls: m.peer_urls,
                client_urls: m.client_urls,
            })
        })
        .collect()
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
