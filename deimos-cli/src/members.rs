//! `member list|add|promote|update|remove`, over the v2 members API.

use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::cli::MemberCommand;
use crate::client::{json_response, CliError, Client};
use crate::cluster::{list_members, name_cell, Member};
use crate::http::{encode, Endpoint};
use crate::output::{Output, Table};

/// Sends a membership change. A follower answers 307 with the same path on the leader (changes
/// are made there, and the follower recorded nothing), so it is followed once: any endpoint works.
async fn change(
    client: &mut Client,
    method: Method,
    path: &str,
    body: Option<(&'static str, Bytes)>,
) -> Result<serde_json::Value, CliError> {
    let t = Some(client.timeout());
    let resp = client
        .request(method.clone(), path, body.clone(), t)
        .await?;
    if resp.status != StatusCode::TEMPORARY_REDIRECT {
        return json_response(resp).map(|(_, v)| v);
    }
    let location = resp
        .headers
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| CliError::Protocol("307 without a Location header".into()))?;
    let (endpoint, leader_path) = split_location(location)?;
    let mut leader = Client::new(vec![endpoint], client.timeout());
    let resp = leader.request(method, &leader_path, body, t).await?;
    json_response(resp).map(|(_, v)| v)
}

/// `http://host:port/path?query` into the endpoint and the path with its query.
fn split_location(location: &str) -> Result<(Endpoint, String), CliError> {
    let bad = || CliError::Protocol(format!("307 to an unusable Location {location:?}"));
    let after_scheme = location.find("://").ok_or_else(bad)? + 3;
    let path_at = location[after_scheme..]
        .find('/')
        .map_or(location.len(), |i| after_scheme + i);
    let endpoint = Endpoint::parse(&location[..path_at]).map_err(|_| bad())?;
    let path = match &location[path_at..] {
        "" => "/".to_string(),
        p => p.to_string(),
    };
    Ok((endpoint, path))
}

fn hex_id(id: &str) -> Result<(), CliError> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CliError::Usage(format!("member ID {id:?} is not hex")));
    }
    Ok(())
}

fn force_query(force: bool) -> &'static str {
    if force {
        "?force=true"
    } else {
        ""
    }
}

pub async fn member(client: &mut Client, cmd: MemberCommand, out: Output) -> Result<(), CliError> {
    match cmd {
        MemberCommand::List => {
            let members = list_members(client).await?;
            if out == Output::Json {
                println!("{}", serde_json::json!({ "members": members }));
                return Ok(());
            }
            if out == Output::Simple {
                // etcdctl marks the leader; without one (an election) none is marked.
                let t = Some(client.timeout());
                let leader = match client
                    .json(Method::GET, "/v2/members/leader", None, t)
                    .await
                {
                    Ok((_, v)) => v.get("id").and_then(|i| i.as_str()).map(String::from),
                    Err(_) => None,
                };
                for m in &members {
                    println!("{}", simple_member(m, leader.as_deref()));
                }
                return Ok(());
            }
            let mut table = Table::new(&["ID", "NAME", "PEER URLS", "CLIENT URLS", "IS LEARNER"]);
            for m in members {
                table.row(vec![
                    m.id,
                    name_cell(&m.name),
                    m.peer_urls.join(","),
                    m.client_urls.join(","),
                    m.is_learner.to_string(),
                ]);
            }
            print!("{}", table.render());
        }
        MemberCommand::Add {
            name,
            peer_url,
            peer_urls,
            learner,
            force,
        } => {
            let peer_urls: Vec<String> = peer_url.into_iter().chain(peer_urls).collect();
            if peer_urls.is_empty() {
                return Err(CliError::Usage(
                    "member add needs --peer-urls (or a peer URL after the name)".into(),
                ));
            }
            for u in &peer_urls {
                Endpoint::parse(u).map_err(CliError::Usage)?;
            }
            // `isLearner` only when set, so a plain add stays the etcd v2 request it always was.
            let mut body = serde_json::json!({ "peerURLs": peer_urls, "name": name });
            if learner {
                body["isLearner"] = true.into();
            }
            let path = format!("/v2/members{}", force_query(force));
            let body = Bytes::from(body.to_string());
            let v = change(
                client,
                Method::POST,
                &path,
                Some(("application/json", body)),
            )
            .await?;
            if out == Output::Json {
                println!("{v}");
            } else {
                let id = v.get("id").and_then(|i| i.as_str()).unwrap_or("?");
                let kind = if learner { " as a learner" } else { "" };
                println!("Added member {name} with ID {id}{kind}");
            }
        }
        MemberCommand::Promote { id, force } => {
            hex_id(&id)?;
            let path = format!(
                "/v2/members/{}/promote{}",
                encode(&id, false),
                force_query(force)
            );
            let v = change(client, Method::POST, &path, None).await?;
            if out == Output::Json {
                println!("{v}");
            } else {
                println!("Promoted member {id} to voter");
            }
        }
        MemberCommand::Update { id, peer_urls } => {
            hex_id(&id)?;
            for u in &peer_urls {
                Endpoint::parse(u).map_err(CliError::Usage)?;
            }
            let body = serde_json::json!({ "peerURLs": peer_urls }).to_string();
            let path = format!("/v2/members/{}", encode(&id, false));
            let body = Some(("application/json", Bytes::from(body)));
            change(client, Method::PUT, &path, body).await?;
            if out == Output::Json {
                println!(
                    "{}",
                    serde_json::json!({ "updated": id, "peerURLs": peer_urls })
                );
            } else {
                println!("Updated member with ID {id} in cluster");
            }
        }
        MemberCommand::Remove { id, force } => {
            hex_id(&id)?;
            let path = format!("/v2/members/{}{}", encode(&id, false), force_query(force));
            change(client, Method::DELETE, &path, None).await?;
            if out == Output::Json {
                println!("{}", serde_json::json!({ "removed": id }));
            } else {
                println!("Removed member {id} from cluster");
            }
        }
    }
    Ok(())
}

/// etcdctl v2's `member list` line; a member that has not started yet has no name.
pub fn simple_member(m: &Member, leader: Option<&str>) -> String {
    if m.name.is_empty() {
        return format!("{}[unstarted]: peerURLs={}", m.id, m.peer_urls.join(","));
    }
    format!(
        "{}: name={} peerURLs={} clientURLs={} isLeader={}",
        m.id,
        m.name,
        m.peer_urls.join(","),
        m.client_urls.join(","),
        leader == Some(m.id.as_str())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_split_into_endpoint_and_path() {
        let (ep, path) =
            split_location("http://127.0.0.1:4001/v2/members/ab/promote?force=true").expect("ok");
        assert_eq!(ep.authority, "127.0.0.1:4001");
        assert_eq!(path, "/v2/members/ab/promote?force=true");
        let (ep, path) = split_location("https://h:1").expect("ok");
        assert!(ep.https);
        assert_eq!(path, "/");
        assert!(split_location("/v2/members").is_err());
        assert!(split_location("ftp://x:1/a").is_err());
    }

    #[test]
    fn simple_member_lines_like_etcdctl() {
        let m: Member = serde_json::from_str(
            r#"{"id":"a1","name":"n1","peerURLs":["http://p:1"],"clientURLs":["http://c:1"]}"#,
        )
        .expect("ok");
        assert_eq!(
            simple_member(&m, Some("a1")),
            "a1: name=n1 peerURLs=http://p:1 clientURLs=http://c:1 isLeader=true"
        );
        assert!(simple_member(&m, None).ends_with("isLeader=false"));
        let m: Member =
            serde_json::from_str(r#"{"id":"b2","peerURLs":["http://p:2","http://q:2"]}"#)
                .expect("ok");
        assert_eq!(
            simple_member(&m, None),
            "b2[unstarted]: peerURLs=http://p:2,http://q:2"
        );
    }
}
