//! Stopping on SIGTERM or SIGINT, within a bounded time whatever state the node is in.
//!
//! The clean path comes first: a leader hands leadership over (clients see no election
//! timeout), then the Raft loop stops and the store is closed (what is staged is written, so a
//! restart replays nothing). But a supervisor's `stop` must not hang on it: a Raft loop that is
//! wedged or blocked in I/O would make it wait forever. So the first signal also arms a
//! watchdog on a plain thread (it runs even if the async runtime is stuck) that exits the
//! process after [`GRACE`], and a second signal exits at once. Exiting without the clean path
//! loses nothing acknowledged: every acknowledged write is already durable on a quorum.

use std::time::Duration;

/// How long the clean path may take before the process exits anyway.
pub const GRACE: Duration = Duration::from_secs(8);

/// Exit status when the clean path did not finish in time or a second signal arrived:
/// non-zero so that a supervisor records an unclean stop.
pub const FORCED_EXIT: i32 = 1;

/// Wait for SIGTERM or SIGINT.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Arm the stop deadline: after `grace` (or at a second signal) `exit` runs on a thread of its
/// own. Call once the first signal arrived, before starting the clean path.
pub fn arm(grace: Duration, exit: impl FnOnce(&str) + Send + 'static) {
    let (again_tx, again_rx) = std::sync::mpsc::channel::<()>();
    // A second signal, seen on the runtime if it still runs; the deadline does not need it.
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            signal().await;
            let _ = again_tx.send(());
        });
    }
    let spawned = std::thread::Builder::new()
        .name("stop-deadline".into())
        .spawn(move || {
            let why = match again_rx.recv_timeout(grace) {
                Ok(()) => "second stop signal: exiting now".to_string(),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    format!("clean shutdown did not finish within {grace:?}: exiting anyway")
                }
                // The runtime went away (the clean path finished and main is returning):
                // still bound what is left of the exit.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(grace);
                    format!("process did not exit within {grace:?} of the stop signal")
                }
            };
            exit(&why);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the stop-deadline thread; the stop is unbounded");
    }
}

/// What the server's deadline does: say why, then exit non-zero.
pub fn force_exit(why: &str) {
    tracing::error!("{why}");
    eprintln!("deimos: {why}");
    std::process::exit(FORCED_EXIT);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_fires_when_the_clean_path_hangs() {
        let (tx, rx) = std::sync::mpsc::channel();
        arm(Duration::from_millis(50), move |why| {
            let _ = tx.send(why.to_string());
        });
        // The "clean path" never finishes; the deadline must fire on its own.
        let why = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("deadline fired");
        assert!(why.contains("did not"), "{why}");
    }

    #[tokio::test]
    async fn the_deadline_fires_on_a_runtime_that_is_blocked() {
        let (tx, rx) = std::sync::mpsc::channel();
        arm(Duration::from_millis(50), move |why| {
            let _ = tx.send(why.to_string());
        });
        // Block this (current-thread) runtime outright, as a wedged loop would.
        let why = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("deadline fired");
        assert!(why.contains("within"), "{why}");
    }
}
