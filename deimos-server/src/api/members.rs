//! The etcd v2 members API: `GET /v2/members`, `GET /v2/members/leader`, `POST /v2/members`,
//! `PUT|DELETE /v2/members/<id>`, plus etcd 3.4's learners: `"isLearner": true` in an add, and
//! `POST /v2/members/<id>/promote`.
//!
//! Changes that could cost the cluster its quorum are refused with 409 unless `?force=true`
//! (etcd's `--strict-reconfig-check`); the rules are `deimos_raft::reconfig`'s, judged on the
//! leader's view of which members are active. 409 because the request conflicts with the
//! cluster's current state and succeeds once that changes (members started, learner caught
//! up), as the v2 members API already answers for a peer URL in use or a change in progress;
//! etcd v3 reports the same conditions as `FailedPrecondition`.

use std::collections::BTreeMap;
use std::sync::Arc;

use deimos_api::members::{self as api, MemberRequest};
use deimos_raft::driver::DriverError;
use deimos_raft::reconfig::Refusal;
use deimos_raft::types::{ConfChange, ConfState, Role};
use deimos_raft::RaftError;
use deimos_store::machine::{Member, Proposal};
use hyper::body::Incoming;
use hyper::{Method, Request};

use super::cluster::hex;
use super::params::Params;
use super::response::{self, message, Resp};
use crate::identity::new_member_id;
use crate::node::App;

/// A member record as the API shows it. `isLearner` comes from the applied configuration, not
/// the record: promotion changes only the former.
fn member_json(m: &Member, conf: &ConfState) -> api::Member {
    api::Member {
        id: hex(m.id),
        name: m.name.clone(),
        peer_urls: m.peer_urls.clone(),
        client_urls: m.client_urls.clone(),
        is_learner: conf.learners.contains(&m.id),
    }
}

/// A refused reconfiguration. `NotLeader` means leadership moved since the request was routed.
fn refusal(r: Refusal) -> Resp {
    match r {
        Refusal::NotLeader => message(503, &format!("{r}; retry")),
        _ => message(409, &r.to_string()),
    }
}

/// `?force=true` skips the quorum rules (Go's `ParseBool` spellings, as etcd's flags).
fn force(req: &Request<Incoming>) -> Result<bool, Resp> {
    Params::parse(req.uri().query(), None, 0)
        .and_then(|p| p.bool("force"))
        .map_err(|_| message(400, "force must be true or false"))
}

/// Apply a quorum rule unless forced; a forced change past a refusal is logged, since it is
/// the operator accepting an outage risk.
fn quorum_rule(force: bool, rule: Result<(), Refusal>) -> Result<(), Resp> {
    match rule {
        Err(r @ Refusal::NotLeader) => Err(refusal(r)),
        Err(r) if force => {
            tracing::warn!(refusal = %r, "membership change forced past the quorum check");
            Ok(())
        }
        Err(r) => Err(refusal(r)),
        Ok(()) => Ok(()),
    }
}

fn driver_failure(e: DriverError) -> Resp {
    match e {
        DriverError::Raft(RaftError::ConfChangePending) => {
            message(409, "a membership change is in progress; retry")
        }
        DriverError::Raft(RaftError::InvalidConfChange(why)) => message(409, &why),
        DriverError::Dropped => message(503, &format!("{}; retry", DriverError::Dropped)),
        other => message(500, &other.to_string()),
    }
}

pub async fn members(app: Arc<App>, req: Request<Incoming>, id: Option<String>) -> Resp {
    let method = req.method().clone();
    match (method, id) {
        (Method::GET, None) => member_list(&app),
        // etcd v2 clients (`etcdctl member list`) ask for the leader here before listing.
        (Method::GET, Some(id)) if id == "leader" => leader_member(&app),
        // etcd serves no single member here: 404 with its JSON body, not 405.
        (Method::GET, Some(_)) => message(404, "Not found"),
        (Method::POST, _) | (Method::DELETE, Some(_)) | (Method::PUT, Some(_))
            if app.handle.status().role != Role::Leader =>
        {
            forward_to_leader(&app, req).await
        }
        (Method::POST, None) => add_member(app, req).await,
        (Method::POST, Some(path)) => match path.strip_suffix("/promote") {
            Some(id) => match force(&req) {
                Ok(f) => promote_member(app, id, f).await,
                Err(r) => r,
            },
            None => response::text(405, "Method Not Allowed\n"),
        },
        (Method::DELETE, Some(id)) => match force(&req) {
            Ok(f) => remove_member(app, &id, f).await,
            Err(r) => r,
        },
        (Method::PUT, Some(id)) => update_member(app, req, &id).await,
        _ => response::text(405, "Method Not Allowed\n"),
    }
}

/// The client a member forwards membership changes to the leader with.
pub type LeaderClient = hyper_util::client::legacy::Client<
    crate::tls::PeerConnector,
    http_body_util::Full<bytes::Bytes>,
>;

pub fn leader_client(tls: Option<Arc<rustls::ClientConfig>>) -> LeaderClient {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(std::time::Duration::from_secs(1)));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(crate::tls::PeerConnector::new(http, tls))
}

/// Marks a request one member forwarded to the leader, so that it is forwarded at most once.
const FORWARDED: &str = "x-deimos-forwarded";
/// Largest membership request body forwarded (a member record is a few hundred bytes).
const MAX_FORWARD_BODY: usize = 64 * 1024;
/// Largest answer taken back from the leader.
const MAX_FORWARD_ANSWER: usize = 1 << 20;

/// Membership changes are proposed on the leader: the driver forwards ordinary proposals from a
/// follower but not configuration changes, and a follower that recorded the member and then
/// failed the change would leave a member that is not a voter. So a follower forwards the
/// request to the leader's client URL and relays its answer, as etcd does, so that a client
/// (or `etcdctl`) talking to any member gets the leader's answer without following a redirect.
/// A request that was already forwarded once and meets a non-leader (the leadership moved
/// meanwhile) is answered 503: forwarding again could loop.
async fn forward_to_leader(app: &App, req: Request<Incoming>) -> Resp {
    if req.headers().contains_key(FORWARDED) {
        return message(
            503,
            "leadership changed while the request was forwarded; retry",
        );
    }
    let Some(leader) = app.handle.status().leader else {
        return message(503, "no leader: election in progress");
    };
    let base = app
        .members
        .read()
        .ok()
        .and_then(|ms| ms.get(&leader).and_then(|m| m.client_urls.first().cloned()));
    let Some(base) = base else {
        return message(503, "the leader's client URL is not known yet; retry");
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/v2/members".into());
    let (parts, body) = match super::read_body(req, MAX_FORWARD_BODY).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut upstream = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{}{path}", base.trim_end_matches('/')))
        .header(FORWARDED, "1");
    for name in [hyper::header::CONTENT_TYPE, hyper::header::AUTHORIZATION] {
        if let Some(v) = parts.headers.get(&name) {
            upstream = upstream.header(name, v.clone());
        }
    }
    let upstream = match upstream.body(http_body_util::Full::new(body)) {
        Ok(r) => r,
        Err(e) => return message(500, &format!("cannot forward to the leader: {e}")),
    };
    let timeout = app.cfg.flags.request_timeout + std::time::Duration::from_secs(1);
    let answer = match tokio::time::timeout(timeout, app.leader_client.request(upstream)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            return message(
                503,
                &format!("cannot reach the leader at {base}: {e}; retry"),
            )
        }
        Err(_) => return message(503, &format!("the leader at {base} did not answer; retry")),
    };
    let (aparts, abody) = answer.into_parts();
    let limited = http_body_util::Limited::new(abody, MAX_FORWARD_ANSWER);
    let bytes = match tokio::time::timeout(timeout, http_body_util::BodyExt::collect(limited)).await
    {
        Ok(Ok(b)) => b.to_bytes(),
        _ => return message(502, "the leader's answer could not be read"),
    };
    let mut r = hyper::Response::new(response::full(bytes));
    *r.status_mut() = aparts.status;
    for name in [hyper::header::CONTENT_TYPE, hyper::header::LOCATION] {
        if let Some(v) = aparts.headers.get(&name) {
            r.headers_mut().insert(name, v.clone());
        }
    }
    r
}

/// `GET /v2/members/leader`: the current leader's member record, as etcd serves it.
fn leader_member(app: &App) -> Resp {
    let st = app.handle.status();
    let Some(leader) = st.leader else {
        return message(503, "no leader: election in progress");
    };
    match app
        .members
        .read()
        .ok()
        .and_then(|ms| ms.get(&leader).cloned())
    {
        Some(m) => response::json(200, &member_json(&m, &st.conf)),
        None => message(503, "leader is not a known member yet"),
    }
}

async fn member_request(app: &App, req: Request<Incoming>) -> Result<MemberRequest, Resp> {
    // etcd refuses anything but JSON here (a form body would otherwise be read as garbage).
    let ct = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.split(';').next().map(str::trim) != Some("application/json") {
        // etcd's words, so scripts matching them keep working.
        return Err(message(
            415,
            &format!("Bad Content-Type {ct}, accept application/json"),
        ));
    }
    let (_, body) = super::read_body(req, 64 * 1024).await?;
    let mr: MemberRequest = serde_json::from_slice(&body)
        .map_err(|e| message(400, &format!("invalid member JSON: {e}")))?;
    let tls = app.cfg.flags.peer_ca_file.is_some();
    check_peer_urls(&mr.peer_urls, tls).map_err(|why| message(400, &why.to_string()))?;
    Ok(mr)
}

/// Peer URLs must be `scheme://host:port` (no path), and their scheme the cluster's peer TLS
/// mode: with a peer CA every member talks TLS, so an `http://` URL would have the others send
/// Raft traffic in plaintext to whoever listens there; without one, `https://` cannot work.
fn check_peer_urls(urls: &[String], tls: bool) -> Result<(), PeerUrlError> {
    if urls.is_empty() {
        return Err(PeerUrlError::Empty);
    }
    let scheme = if tls { "https://" } else { "http://" };
    for u in urls {
        if !u.starts_with(scheme) {
            return Err(PeerUrlError::Scheme {
                url: u.clone(),
                scheme,
                tls: if tls { "on" } else { "off" },
            });
        }
        if !crate::config::is_host_port_url(u, scheme) {
            return Err(PeerUrlError::NotHostPort {
                url: u.clone(),
                scheme,
            });
        }
    }
    Ok(())
}

/// Peer URLs a member record must not carry (answered 400 with this text).
#[derive(Debug, thiserror::Error)]
enum PeerUrlError {
    #[error("peerURLs must be a non-empty list")]
    Empty,
    #[error("peer URL {url:?} must start with {scheme} (peer TLS is {tls})")]
    Scheme {
        url: String,
        scheme: &'static str,
        tls: &'static str,
    },
    #[error("peer URL {url:?} must be {scheme}host:port")]
    NotHostPort { url: String, scheme: &'static str },
}

/// Add a voter or (`isLearner`) a learner. A voter must pass the quorum rule unless forced; a
/// learner never needs to, since it does not count toward any majority.
async fn add_member(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let force = match force(&req) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mr = match member_request(&app, req).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let st = app.handle.status();
    let Some((id, clash, was_removed)) = pick_id(&app, &st.conf, &mr.peer_urls) else {
        return message(500, "membership registry lock poisoned");
    };
    if was_removed {
        return message(409, "membership: ID removed");
    }
    if clash {
        return message(409, "membership: peerURL exists");
    }
    if !mr.is_learner {
        if let Err(r) = quorum_rule(force, st.check_add_voter()) {
            return r;
        }
    }
    let change = if mr.is_learner {
        ConfChange::AddLearner(id)
    } else {
        ConfChange::AddVoter(id)
    };
    let member = Member {
        id,
        name: mr.name.unwrap_or_default(),
        peer_urls: mr.peer_urls,
        client_urls: vec![],
    };
    // Metadata first so that the transport knows where the new member lives once it is one.
    if let Err(e) = app
        .handle
        .propose(Proposal::PutMember(member.clone()).encode())
        .await
    {
        return driver_failure(e);
    }
    if let Err(e) = app.handle.propose_conf_change(change).await {
        return driver_failure(e);
    }
    tracing::info!(id = %hex(id), name = %member.name, learner = mr.is_learner, "member added");
    response::json(201, &member_json(&member, &app.handle.status().conf))
}

/// `{"members": [...]}`: served to clients on `/v2/members` and to joining members on the
/// peer listener's `/members` (where they learn their id).
pub fn member_list(app: &App) -> Resp {
    let conf = app.handle.status().conf;
    let members = app
        .members
        .read()
        .map(|m| m.values().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    let members = members.iter().map(|m| member_json(m, &conf)).collect();
    response::json(200, &api::MemberList { members })
}

/// The id for a member added at `peer_urls`, whether it clashes with a recorded member, and
/// whether it was removed. An add that stopped between its record and its configuration change
/// (a leader change, a timeout) resumes under the id it was given; any other add gets a fresh
/// id, never one a current or removed member had (see `identity`). `None`: a poisoned lock.
fn pick_id(app: &App, conf: &ConfState, peer_urls: &[String]) -> Option<(u64, bool, bool)> {
    let ms = app.members.read().ok()?;
    let removed = app.removed.read().ok()?;
    let resumed = ms
        .values()
        .find(|m| m.peer_urls == peer_urls && !conf.contains(m.id))
        .map(|m| m.id);
    let id = resumed.unwrap_or_else(|| {
        new_member_id(peer_urls, |x| {
            ms.contains_key(&x) || removed.contains(&x) || conf.contains(x)
        })
    });
    Some((
        id,
        add_clashes(&ms, conf, id, peer_urls),
        removed.contains(&id),
    ))
}

/// Whether adding `id` at `peer_urls` conflicts with the recorded members. An add is two
/// entries, the record and then the configuration change; a record with the same id and URLs
/// whose node is not in the configuration is an add that stopped between them (a leader change
/// or a timeout), and adding the member again completes it.
fn add_clashes(
    members: &BTreeMap<u64, Member>,
    conf: &ConfState,
    id: u64,
    peer_urls: &[String],
) -> bool {
    members.values().any(|m| {
        let unfinished_add = m.id == id && m.peer_urls == peer_urls && !conf.contains(id);
        !unfinished_add && (m.id == id || m.peer_urls.iter().any(|u| peer_urls.contains(u)))
    })
}

/// The member named by the path's id. etcd answers an unparsable id and an unknown one alike:
/// 404 `No such member: <id as given>`.
fn parse_id(app: &App, id: &str) -> Result<Member, Resp> {
    let missing = || message(404, &format!("No such member: {id}"));
    let n = u64::from_str_radix(id, 16).map_err(|_| missing())?;
    app.members
        .read()
        .ok()
        .and_then(|ms| ms.get(&n).cloned())
        .ok_or_else(missing)
}

/// Remove a member. Removing a voter must leave a quorum of active voters unless forced.
async fn remove_member(app: Arc<App>, id: &str, force: bool) -> Resp {
    let m = match parse_id(&app, id) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Err(r) = quorum_rule(force, app.handle.status().check_remove(m.id)) {
        return r;
    }
    // The configuration change removes the member's record as it applies (one entry, so no
    // failure can separate the two); answered once applied here. Removing the leader itself
    // works the same way: it applies its own removal, then steps down.
    match app
        .handle
        .propose_conf_change(ConfChange::RemoveNode(m.id))
        .await
    {
        Ok(()) => {}
        // Refused because it is not in the configuration: the record of an unfinished add.
        Err(DriverError::Raft(RaftError::InvalidConfChange(_)))
            if !app.handle.status().conf.contains(m.id) =>
        {
            if let Err(e) = app
                .handle
                .propose(Proposal::RemoveMember(m.id).encode())
                .await
            {
                return driver_failure(e);
            }
        }
        Err(e) => return driver_failure(e),
    }
    hyper::Response::builder()
        .status(204)
        .body(super::empty_body())
        .unwrap_or_else(|_| response::text(204, ""))
}

/// `POST /v2/members/<id>/promote`: make a learner a voter, once its log has caught up with
/// the leader's (never overridable) and, unless forced, if the cluster keeps a quorum of active
/// voters. Answers the member, now a voter.
async fn promote_member(app: Arc<App>, id: &str, force: bool) -> Resp {
    let m = match parse_id(&app, id) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let st = app.handle.status();
    if let Err(r) = st.check_learner_ready(m.id) {
        return refusal(r);
    }
    if let Err(r) = quorum_rule(force, st.check_promote_quorum(m.id)) {
        return r;
    }
    if let Err(e) = app
        .handle
        .propose_conf_change(ConfChange::AddVoter(m.id))
        .await
    {
        return driver_failure(e);
    }
    tracing::info!(id = %hex(m.id), name = %m.name, "learner promoted to voter");
    response::json(200, &member_json(&m, &app.handle.status().conf))
}

async fn update_member(app: Arc<App>, req: Request<Incoming>, id: &str) -> Resp {
    let mut m = match parse_id(&app, id) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mr = match member_request(&app, req).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let taken = app.members.read().map(|ms| {
        ms.values()
            .any(|o| o.id != m.id && o.peer_urls.iter().any(|u| mr.peer_urls.contains(u)))
    });
    if taken.unwrap_or(true) {
        return message(409, "membership: peerURL exists");
    }
    m.peer_urls = mr.peer_urls;
    if let Some(n) = mr.name {
        m.name = n;
    }
    if let Err(e) = app.handle.propose(Proposal::PutMember(m).encode()).await {
        return driver_failure(e);
    }
    hyper::Response::builder()
        .status(204)
        .body(super::empty_body())
        .unwrap_or_else(|_| response::text(204, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, url: &str) -> Member {
        Member {
            id,
            name: String::new(),
            peer_urls: vec![url.to_string()],
            client_urls: vec![],
        }
    }

    #[test]
    fn peer_urls_must_be_host_and_port_in_the_clusters_tls_mode() {
        let ok = |u: &str, tls| check_peer_urls(&[u.to_string()], tls);
        assert!(ok("http://10.0.0.1:7001", false).is_ok());
        assert!(ok("http://n1.example:7001/", false).is_ok());
        assert!(ok("https://10.0.0.1:7001", true).is_ok());
        assert!(
            ok("http://10.0.0.1:7001", true).is_err(),
            "plaintext under peer TLS"
        );
        assert!(ok("https://10.0.0.1:7001", false).is_err());
        for bad in [
            "http://10.0.0.1",
            "http://:7001",
            "http://h:0",
            "http://h:7001/x",
            "http://u@h:1",
        ] {
            assert!(ok(bad, false).is_err(), "{bad}");
        }
        assert!(check_peer_urls(&[], false).is_err());
    }

    #[test]
    fn adding_again_completes_an_unfinished_add_and_nothing_else() {
        let a = "http://10.0.0.1:7001".to_string();
        let b = "http://10.0.0.2:7001".to_string();
        let members = BTreeMap::from([(1, member(1, &a)), (2, member(2, &b))]);
        let only_1 = ConfState::new([1]);
        let both = ConfState::new([1, 2]);
        // Member 2's record without its node in the configuration: the add resumes.
        assert!(!add_clashes(&members, &only_1, 2, std::slice::from_ref(&b)));
        // Once it is a voter, the same add is a conflict.
        assert!(add_clashes(&members, &both, 2, std::slice::from_ref(&b)));
        // A different member reusing a recorded URL always conflicts.
        assert!(add_clashes(&members, &only_1, 3, std::slice::from_ref(&b)));
        assert!(add_clashes(
            &members,
            &only_1,
            3,
            &[b.clone(), "http://x:1".into()]
        ));
        // Same id but other URLs (the record was updated since): not a resumable add.
        assert!(add_clashes(
            &members,
            &only_1,
            2,
            &["http://10.0.0.9:7001".into()]
        ));
        // A new member with new URLs is fine.
        assert!(!add_clashes(
            &members,
            &both,
            3,
            &["http://10.0.0.3:7001".into()]
        ));
    }
}
