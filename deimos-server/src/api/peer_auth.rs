//! Who may talk on the peer listener: checked on every request before anything reaches Raft.
//!
//! A request must carry this cluster's id (`X-Etcd-Cluster-ID`) and the sender's member id
//! (`X-Server-From`); the sender must be a member (or a peer this node was told of at start,
//! before the replicated records arrive) and not a removed one; with peer TLS, the client
//! certificate must name one of that member's advertised peer hosts, or carry its id as a DNS
//! name — any certificate from the peer CA could otherwise claim any id. Every message of the
//! request must then be from that sender and to this node. Each refusal is logged (rate
//! limited) and counted by reason in `deimos_peer_messages_refused_total`.

use hyper::body::Incoming;
use hyper::Request;

use super::response::{self, Resp};
use crate::identity::{CLUSTER_ID_HEADER, SENDER_HEADER};
use crate::node::App;
use crate::tls::PeerCert;

/// Counted refusals of peer traffic, by reason.
pub const PEER_REFUSED: &str = "deimos_peer_messages_refused_total";

/// Why peer traffic was refused (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No cluster id, or another cluster's (HTTP 412, as etcd).
    ClusterMismatch,
    /// No or malformed sender id (400).
    NoSender,
    /// A sender that is not a member (403).
    UnknownSender,
    /// A removed member (410: it stops when told).
    RemovedMember,
    /// A TLS client certificate that does not name the member it claims to be (403).
    CertificateMismatch,
    /// A message in the request from another member than the sender, or to another (400).
    ForgedMessage,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::ClusterMismatch,
        Refusal::NoSender,
        Refusal::UnknownSender,
        Refusal::RemovedMember,
        Refusal::CertificateMismatch,
        Refusal::ForgedMessage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ClusterMismatch => "cluster_mismatch",
            Refusal::NoSender => "no_sender",
            Refusal::UnknownSender => "unknown_sender",
            Refusal::RemovedMember => "removed_member",
            Refusal::CertificateMismatch => "certificate_mismatch",
            Refusal::ForgedMessage => "forged_message",
        }
    }

    fn status(self) -> u16 {
        match self {
            Refusal::ClusterMismatch => 412,
            Refusal::NoSender | Refusal::ForgedMessage => 400,
            Refusal::UnknownSender | Refusal::CertificateMismatch => 403,
            Refusal::RemovedMember => 410,
        }
    }
}

/// Refuse: log (at most once a second per reason and sender, like TLS refusals), count, answer.
pub fn refuse(reason: Refusal, detail: &str) -> Resp {
    metrics::counter!(PEER_REFUSED, "reason" => reason.as_str()).increment(1);
    crate::tls::log_refusal(reason.as_str(), detail);
    let body = match reason {
        Refusal::RemovedMember => "the member has been permanently removed from the cluster\n",
        _ => detail,
    };
    // Refused before its body is read: the connection cannot be reused (hyper would have to
    // drain an untrusted body), so say so and let the client open a fresh one.
    let mut resp = response::text(reason.status(), body);
    resp.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    resp
}

fn header_id(req: &Request<Incoming>, name: &str) -> Option<u64> {
    let v = req.headers().get(name)?.to_str().ok()?;
    u64::from_str_radix(v, 16).ok()
}

/// The sender of a peer request, if it may speak here (see the module docs).
pub fn authenticate(app: &App, req: &Request<Incoming>) -> Result<u64, Resp> {
    match header_id(req, CLUSTER_ID_HEADER) {
        Some(c) if c == app.cluster_id => {}
        Some(c) => {
            return Err(refuse(
                Refusal::ClusterMismatch,
                &format!(
                    "request from cluster {c:016x}, but this member belongs to cluster {:016x}",
                    app.cluster_id
                ),
            ))
        }
        None => {
            return Err(refuse(
                Refusal::ClusterMismatch,
                &format!("request without a valid {CLUSTER_ID_HEADER} header"),
            ))
        }
    }
    let Some(from) = header_id(req, SENDER_HEADER) else {
        return Err(refuse(
            Refusal::NoSender,
            &format!("request without a valid {SENDER_HEADER} header"),
        ));
    };
    if app.removed.read().map_or(true, |r| r.contains(&from)) {
        return Err(refuse(
            Refusal::RemovedMember,
            &format!("traffic from removed member {from:016x}"),
        ));
    }
    let Some(peer_urls) = peer_urls_of(app, from) else {
        return Err(refuse(
            Refusal::UnknownSender,
            &format!("{from:016x} is not a member of this cluster"),
        ));
    };
    if let Some(cert) = req.extensions().get::<PeerCert>() {
        let id_name = format!("{from:016x}");
        let named = cert.names(&id_name)
            || peer_urls
                .iter()
                .filter_map(|u| crate::config::url_host(u))
                .any(|host| cert.names(&host));
        if !named {
            return Err(refuse(
                Refusal::CertificateMismatch,
                &format!(
                    "the client certificate names neither member {from:016x}'s peer hosts {peer_urls:?} nor its id"
                ),
            ));
        }
    }
    Ok(from)
}

/// A member's peer URLs: from the replicated records, else from what this node was told at
/// start (a node joining, or starting, before it applied the records).
fn peer_urls_of(app: &App, id: u64) -> Option<Vec<String>> {
    let recorded = app
        .members
        .read()
        .ok()
        .and_then(|ms| ms.get(&id).map(|m| m.peer_urls.clone()));
    recorded.or_else(|| {
        app.cfg
            .peer_hints
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.peer_urls.clone())
    })
}

/// Check that a message of a request from `sender` is from it and to this node.
pub fn check_message(app: &App, sender: u64, from: u64, to: u64) -> Result<(), Resp> {
    if from == sender && to == app.id() {
        return Ok(());
    }
    Err(refuse(
        Refusal::ForgedMessage,
        &format!(
            "a request from {sender:016x} carries a message from {from:016x} to {to:016x} (this is {:016x})",
            app.id()
        ),
    ))
}
