//! Key commands over the etcd v2 keys API (`/v2/keys`), with etcdctl v2 semantics.

use std::io::Write;

use bytes::Bytes;
use hyper::Method;

use crate::cli::KeyCommand;
use crate::client::{CliError, Client};
use crate::http::{encode, form};
use crate::output::{opt, Output, Table};

const FORM: &str = "application/x-www-form-urlencoded";

pub use deimos_api::keys::{Action, Node, Response as KeysResponse};

/// `/v2/keys/<key>` with the key percent-encoded and always rooted.
pub fn key_path(key: &str) -> String {
    let key = key.trim_start_matches('/');
    format!("/v2/keys/{}", encode(key, true))
}

/// Appends `?a=b&c=d` when there are parameters.
fn with_query(path: String, params: &[(&str, String)]) -> String {
    if params.is_empty() {
        path
    } else {
        format!("{path}?{}", form(params))
    }
}

fn parse(v: &serde_json::Value) -> Result<KeysResponse, CliError> {
    serde_json::from_value(v.clone())
        .map_err(|e| CliError::Protocol(format!("not a keys response ({e}): {v}")))
}

fn print_json(v: &serde_json::Value) {
    println!("{v}");
}

/// Send one keys request. With `-o json` the server's answer is printed as it came and `None`
/// returned; otherwise the parsed response, for the command's human output.
async fn exchange(
    client: &mut Client,
    method: Method,
    path: &str,
    body: Option<(&'static str, Bytes)>,
    out: Output,
) -> Result<Option<KeysResponse>, CliError> {
    let t = Some(client.timeout());
    let (_, v) = client.json(method, path, body, t).await?;
    if out == Output::Json {
        print_json(&v);
        return Ok(None);
    }
    parse(&v).map(Some)
}

/// Runs one key command, printing its result; errors are returned for `main` to print.
pub async fn run(client: &mut Client, cmd: KeyCommand, out: Output) -> Result<(), CliError> {
    match cmd {
        KeyCommand::Get {
            key,
            quorum,
            consistency,
        } => {
            let mut q = Vec::new();
            if quorum {
                q.push(("quorum", "true".to_string()));
            }
            if let Some(c) = consistency {
                q.push(("consistency", c.as_str().to_string()));
            }
            let path = with_query(key_path(&key), &q);
            let Some(r) = exchange(client, Method::GET, &path, None, out).await? else {
                return Ok(());
            };
            let node = r.node.unwrap_or_default();
            if node.dir {
                // Same refusal as etcdctl: a directory has no value; `ls` lists it.
                return Err(CliError::Usage(format!(
                    "{}: is a directory (use ls)",
                    if node.key.is_empty() { key } else { node.key }
                )));
            }
            println!("{}", node.value.unwrap_or_default());
        }
        KeyCommand::Set {
            key,
            value,
            ttl,
            swap_with_value,
            swap_with_index,
        } => {
            let mut p = vec![("value", value)];
            if let Some(t) = ttl {
                p.push(("ttl", t.to_string()));
            }
            if let Some(v) = swap_with_value {
                p.push(("prevValue", v));
            }
            if let Some(i) = swap_with_index {
                p.push(("prevIndex", i.to_string()));
            }
            put_and_print(client, &key, &p, out).await?;
        }
        KeyCommand::Mk { key, value, ttl } => {
            let mut p = vec![("value", value), ("prevExist", "false".to_string())];
            if let Some(t) = ttl {
                p.push(("ttl", t.to_string()));
            }
            put_and_print(client, &key, &p, out).await?;
        }
        KeyCommand::Update { key, value, ttl } => {
            let mut p = vec![("value", value), ("prevExist", "true".to_string())];
            if let Some(t) = ttl {
                p.push(("ttl", t.to_string()));
            }
            put_and_print(client, &key, &p, out).await?;
        }
        KeyCommand::Mkdir { key, ttl } => {
            put_dir(client, &key, Some("false"), ttl, out).await?;
        }
        // etcdctl v2's setdir: no prevExist, so a key becomes a directory and an existing
        // directory is refused by the server (102 "Not a file").
        KeyCommand::Setdir { key, ttl } => put_dir(client, &key, None, ttl, out).await?,
        KeyCommand::Updatedir { key, ttl } => {
            put_dir(client, &key, Some("true"), ttl, out).await?;
        }
        KeyCommand::Rm {
            key,
            recursive,
            dir,
            with_value,
            with_index,
        } => {
            let mut q = Vec::new();
            if recursive {
                // etcd requires dir=true alongside recursive=true for directories.
                q.push(("recursive", "true".to_string()));
                q.push(("dir", "true".to_string()));
            } else if dir {
                q.push(("dir", "true".to_string()));
            }
            if let Some(v) = with_value {
                q.push(("prevValue", v));
            }
            if let Some(i) = with_index {
                q.push(("prevIndex", i.to_string()));
            }
            delete_and_print(client, &key, &q, out).await?;
        }
        KeyCommand::Rmdir { key } => {
            delete_and_print(client, &key, &[("dir", "true".to_string())], out).await?;
        }
        KeyCommand::Ls {
            key,
            recursive,
            sort,
            slash,
        } => {
            let mut q = Vec::new();
            if recursive {
                q.push(("recursive", "true".to_string()));
            }
            if sort {
                q.push(("sorted", "true".to_string()));
            }
            let key = key.unwrap_or_else(|| "/".to_string());
            let path = with_query(key_path(&key), &q);
            let Some(r) = exchange(client, Method::GET, &path, None, out).await? else {
                return Ok(());
            };
            let node = r.node.unwrap_or_default();
            let nodes = if node.dir {
                node.nodes.unwrap_or_default()
            } else {
                vec![node]
            };
            if out == Output::Simple {
                print!("{}", ls_simple(&nodes, slash));
            } else {
                let mut table = Table::new(&["KEY", "TYPE", "VALUE", "TTL", "MODIFIED"]);
                ls_rows(&nodes, &mut table);
                print!("{}", table.render());
            }
        }
        KeyCommand::Watch {
            key,
            forever,
            recursive,
            after_index,
        } => watch(client, &key, forever, recursive, after_index, out).await?,
        KeyCommand::ExecWatch {
            key,
            recursive,
            after_index,
            command,
        } => crate::exec_watch::run(client, &key, recursive, after_index, &command, out).await?,
    }
    Ok(())
}

/// etcdctl's `ls`: one key per line, depth-first; `-p` marks directories with a trailing `/`.
fn ls_simple(nodes: &[Node], slash: bool) -> String {
    let mut s = String::new();
    for n in nodes {
        s.push_str(&n.key);
        if n.dir && slash {
            s.push('/');
        }
        s.push('\n');
        if n.dir {
            s.push_str(&ls_simple(n.children(), slash));
        }
    }
    s
}

/// PUT a directory: `prev_exist` `false` for mkdir, `true` for updatedir, none for setdir.
/// Nothing is printed on success (as etcdctl), the answer itself with `-o json`.
async fn put_dir(
    client: &mut Client,
    key: &str,
    prev_exist: Option<&str>,
    ttl: Option<u64>,
    out: Output,
) -> Result<(), CliError> {
    let mut p = vec![("dir", "true".to_string())];
    if let Some(e) = prev_exist {
        p.push(("prevExist", e.to_string()));
    }
    if let Some(t) = ttl {
        p.push(("ttl", t.to_string()));
    }
    let body = Bytes::from(form(&p));
    let t = Some(client.timeout());
    let (_, v) = client
        .json(Method::PUT, &key_path(key), Some((FORM, body)), t)
        .await?;
    if out == Output::Json {
        print_json(&v);
    }
    Ok(())
}

/// One row per node, depth-first, so a recursive listing reads like `find`.
fn ls_rows(nodes: &[Node], table: &mut Table) {
    for n in nodes {
        let key = n.key.clone();
        if n.dir {
            table.row(vec![
                format!("{key}/"),
                "dir".into(),
                "-".into(),
                opt(n.ttl),
                n.modified_index.to_string(),
            ]);
            ls_rows(n.children(), table);
        } else {
            table.row(vec![
                key,
                "key".into(),
                n.value.clone().unwrap_or_default(),
                opt(n.ttl),
                n.modified_index.to_string(),
            ]);
        }
    }
}

async fn put_and_print(
    client: &mut Client,
    key: &str,
    params: &[(&str, String)],
    out: Output,
) -> Result<(), CliError> {
    let body = Bytes::from(form(params));
    if let Some(r) = exchange(client, Method::PUT, &key_path(key), Some((FORM, body)), out).await? {
        // etcdctl prints the value that is now stored.
        println!("{}", r.node.and_then(|n| n.value).unwrap_or_default());
    }
    Ok(())
}

async fn delete_and_print(
    client: &mut Client,
    key: &str,
    params: &[(&str, String)],
    out: Output,
) -> Result<(), CliError> {
    let path = with_query(key_path(key), params);
    if let Some(r) = exchange(client, Method::DELETE, &path, None, out).await? {
        if let Some(prev) = r.prev_node.and_then(|n| n.value) {
            println!("PrevNode.Value: {prev}");
        }
    }
    Ok(())
}

/// One line per event in table mode: `ACTION KEY VALUE (index N)`; a deleted or expired key shows
/// the value it had.
pub fn format_event(r: &KeysResponse) -> String {
    let node = r.node.clone().unwrap_or_default();
    let value = node
        .value
        .clone()
        .or_else(|| r.prev_node.as_ref().and_then(|p| p.value.clone()))
        .unwrap_or_default();
    let key = if node.dir {
        format!("{}/", node.key)
    } else {
        node.key
    };
    format!(
        "[{}] {} {} (index {})",
        r.action.as_str(),
        key,
        value,
        node.modified_index
    )
}

/// etcdctl's simple watch output: the new value; for a delete, the value the key had.
fn simple_event(r: &KeysResponse) -> String {
    if r.action == Action::Delete {
        let prev = r.prev_node.as_ref().and_then(|p| p.value.clone());
        format!("PrevNode.Value: {}", prev.unwrap_or_default())
    } else {
        let node = r.node.as_ref().and_then(|n| n.value.clone());
        node.unwrap_or_default()
    }
}

/// A long-poll watch. `after_index: Some(N)` asks for events with index > N (`waitIndex =
/// N + 1`); each next poll starts at the last event's `modifiedIndex + 1`, so no event is missed
/// or repeated between polls. No timeout applies: a watch may legitimately wait for hours.
pub struct Watcher {
    key: String,
    recursive: bool,
    wait_index: Option<u64>,
}

impl Watcher {
    pub fn new(key: &str, recursive: bool, after_index: Option<u64>) -> Watcher {
        Watcher {
            key: key.to_string(),
            recursive,
            wait_index: after_index.map(|i| i.saturating_add(1)),
        }
    }

    /// Waits for the next event: the parsed event and the server's JSON for it.
    pub async fn next(
        &mut self,
        client: &mut Client,
    ) -> Result<(KeysResponse, serde_json::Value), CliError> {
        loop {
            let mut q = vec![("wait", "true".to_string())];
            if self.recursive {
                q.push(("recursive", "true".to_string()));
            }
            if let Some(i) = self.wait_index {
                q.push(("waitIndex", i.to_string()));
            }
            let path = with_query(key_path(&self.key), &q);
            let (resp, v) = client.json(Method::GET, &path, None, None).await?;
            if v.is_null() {
                // The server ended the poll without an event: poll again from where we were, or
                // from the store index it reported so nothing after this point is skipped.
                if self.wait_index.is_none() {
                    self.wait_index = resp
                        .headers
                        .get("x-etcd-index")
                        .and_then(|h| h.to_str().ok())
                        .and_then(|s| s.parse::<u64>().ok())
                        .map(|i| i + 1);
                }
                continue;
            }
            let r = parse(&v)?;
            let idx = r.node.as_ref().map(|n| n.modified_index).unwrap_or(0);
            self.wait_index = Some(idx + 1);
            return Ok((r, v));
        }
    }
}

async fn watch(
    client: &mut Client,
    key: &str,
    forever: bool,
    recursive: bool,
    after_index: Option<u64>,
    out: Output,
) -> Result<(), CliError> {
    let mut w = Watcher::new(key, recursive, after_index);
    loop {
        let (r, v) = w.next(client).await?;
        match out {
            Output::Json => print_json(&v),
            Output::Table => println!("{}", format_event(&r)),
            Output::Simple => println!("{}", simple_event(&r)),
        }
        let _ = std::io::stdout().flush();
        if !forever {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_are_rooted_and_encoded() {
        assert_eq!(key_path("foo"), "/v2/keys/foo");
        assert_eq!(key_path("/a/b c"), "/v2/keys/a/b%20c");
        assert_eq!(key_path("/"), "/v2/keys/");
        assert_eq!(
            with_query(
                key_path("k"),
                &[("wait", "true".into()), ("waitIndex", "5".into())]
            ),
            "/v2/keys/k?wait=true&waitIndex=5"
        );
    }

    #[test]
    fn event_formatting() {
        let r: KeysResponse = serde_json::from_str(
            r#"{"action":"delete","node":{"key":"/a","modifiedIndex":9,"createdIndex":3},
                "prevNode":{"key":"/a","value":"old","modifiedIndex":3,"createdIndex":3}}"#,
        )
        .expect("valid");
        assert_eq!(format_event(&r), "[delete] /a old (index 9)");
    }

    #[test]
    fn simple_output_like_etcdctl() {
        let n: Node = serde_json::from_str(
            r#"{"key":"/","dir":true,"nodes":[{"key":"/d","dir":true,
                "nodes":[{"key":"/d/x","value":"1"}]},{"key":"/k","value":"v"}]}"#,
        )
        .expect("valid");
        assert_eq!(ls_simple(n.children(), true), "/d/\n/d/x\n/k\n");
        assert_eq!(ls_simple(n.children(), false), "/d\n/d/x\n/k\n");
        let r: KeysResponse = serde_json::from_str(
            r#"{"action":"delete","node":{"key":"/a"},"prevNode":{"key":"/a","value":"old"}}"#,
        )
        .expect("valid");
        assert_eq!(simple_event(&r), "PrevNode.Value: old");
        let r: KeysResponse =
            serde_json::from_str(r#"{"action":"set","node":{"key":"/a","value":"new"}}"#)
                .expect("valid");
        assert_eq!(simple_event(&r), "new");
    }

    #[test]
    fn ls_rows_recurse() {
        let n: Node = serde_json::from_str(
            r#"{"key":"/","dir":true,"nodes":[{"key":"/d","dir":true,"modifiedIndex":4,
                "nodes":[{"key":"/d/x","value":"1","modifiedIndex":5,"ttl":30}]},
                {"key":"/k","value":"v","modifiedIndex":6}]}"#,
        )
        .expect("valid");
        let mut t = Table::new(&["KEY", "TYPE", "VALUE", "TTL", "MODIFIED"]);
        ls_rows(n.children(), &mut t);
        let s = t.render();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].starts_with("/d/ "));
        assert!(lines[2].starts_with("/d/x") && lines[2].contains("30"));
        assert!(lines[3].starts_with("/k ") && lines[3].contains(" v "));
    }
}
