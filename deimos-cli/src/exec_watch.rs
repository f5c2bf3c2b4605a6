//! `exec-watch KEY -- COMMAND [ARGS...]`: etcdctl v2's watch-and-run.
//!
//! Each change runs COMMAND with the event in its environment, the variables etcdctl sets:
//! `ETCD_WATCH_ACTION`, `ETCD_WATCH_KEY`, `ETCD_WATCH_VALUE` (the node's new value, empty for a
//! delete) and `ETCD_WATCH_MODIFIED_INDEX`. Commands run one at a time in event order (etcdctl
//! starts them without waiting), so a handler appending to a file sees the events in order. A
//! command that fails or cannot start is reported on stderr and the watch goes on. SIGINT or
//! SIGTERM ends the watch with status 0.

use std::process::ExitStatus;

use crate::client::{CliError, Client};
use crate::keys::{KeysResponse, Watcher};
use crate::output::Output;

/// The environment etcdctl v2 gives the command for one event.
pub fn watch_env(r: &KeysResponse) -> Vec<(&'static str, String)> {
    let node = r.node.clone().unwrap_or_default();
    vec![
        ("ETCD_WATCH_ACTION", r.action.as_str().to_string()),
        ("ETCD_WATCH_KEY", node.key),
        ("ETCD_WATCH_VALUE", node.value.unwrap_or_default()),
        ("ETCD_WATCH_MODIFIED_INDEX", node.modified_index.to_string()),
    ]
}

/// Resolves when the process is asked to stop (SIGINT, or SIGTERM on Unix).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    // Without a SIGINT handler either, never resolve: the default disposition still ends us.
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How one run of the command ended, when it did not succeed.
fn failure(
    program: &str,
    r: &KeysResponse,
    result: &std::io::Result<ExitStatus>,
) -> Option<String> {
    let key = r.node.as_ref().map(|n| n.key.as_str()).unwrap_or_default();
    match result {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!(
            "command {program:?} for [{}] {key} failed: {s}",
            r.action.as_str()
        )),
        Err(e) => Some(format!(
            "cannot run {program:?} for [{}] {key}: {e}",
            r.action.as_str()
        )),
    }
}

pub async fn run(
    client: &mut Client,
    key: &str,
    recursive: bool,
    after_index: Option<u64>,
    command: &[String],
    out: Output,
) -> Result<(), CliError> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| CliError::Usage("exec-watch needs a command to run".into()))?;
    let mut watcher = Watcher::new(key, recursive, after_index);
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let (r, _) = tokio::select! {
            _ = &mut stop => return Ok(()),
            ev = watcher.next(client) => ev?,
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).envs(watch_env(&r));
        let result = match cmd.spawn() {
            Ok(mut child) => tokio::select! {
                // The command got the same terminal signal; it is not waited for.
                _ = &mut stop => return Ok(()),
                status = child.wait() => status,
            },
            Err(e) => Err(e),
        };
        if let Some(msg) = failure(program, &r, &result) {
            if out == Output::Json {
                let code = result.as_ref().ok().and_then(|s| s.code());
                let v = serde_json::json!({
                    "error": msg,
                    "action": r.action,
                    "key": r.node.as_ref().map(|n| &n.key),
                    "exitCode": code,
                });
                eprintln!("{v}");
            } else {
                eprintln!("Error: {msg}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_like_etcdctl() {
        let r: KeysResponse = serde_json::from_str(
            r#"{"action":"set","node":{"key":"/a","value":"v","modifiedIndex":7}}"#,
        )
        .expect("valid");
        assert_eq!(
            watch_env(&r),
            vec![
                ("ETCD_WATCH_ACTION", "set".to_string()),
                ("ETCD_WATCH_KEY", "/a".to_string()),
                ("ETCD_WATCH_VALUE", "v".to_string()),
                ("ETCD_WATCH_MODIFIED_INDEX", "7".to_string()),
            ]
        );
        let r: KeysResponse = serde_json::from_str(
            r#"{"action":"delete","node":{"key":"/a","modifiedIndex":8},"prevNode":{"value":"v"}}"#,
        )
        .expect("valid");
        assert_eq!(watch_env(&r)[2], ("ETCD_WATCH_VALUE", String::new()));
    }

    #[tokio::test]
    async fn failures_are_described() {
        let r: KeysResponse =
            serde_json::from_str(r#"{"action":"set","node":{"key":"/a"}}"#).expect("valid");
        let ok = tokio::process::Command::new("true").status().await;
        assert_eq!(failure("true", &r, &ok), None);
        let bad = tokio::process::Command::new("false").status().await;
        let msg = failure("false", &r, &bad).expect("failure");
        assert!(
            msg.starts_with("command \"false\" for [set] /a failed"),
            "{msg}"
        );
        let missing = tokio::process::Command::new("/nonexistent/x")
            .status()
            .await;
        let msg = failure("/nonexistent/x", &r, &missing).expect("failure");
        assert!(msg.starts_with("cannot run"), "{msg}");
    }
}
