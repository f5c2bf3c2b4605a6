//! The file-descriptor budget and the connection caps that keep it.
//!
//! Every connection a listener accepts holds a descriptor, and without a cap a remote party
//! decides how many: 20k held client connections used to exhaust the process's descriptors, after
//! which the *peer* listener could not accept either (the member dropped out of the cluster) and
//! the store could not open a file. So at start the soft `RLIMIT_NOFILE` is raised to the hard
//! one, and the descriptors are split up front:
//!
//! * [`RESERVED_FDS`] for everything that is not an accepted connection (the redb file, logs,
//!   listeners, outgoing peer connections, snapshot files, /proc reads for metrics);
//! * `--max-peer-connections` for the peer listener;
//! * the rest, or `--max-client-connections` if smaller, for the client listener.
//!
//! Invariant: `RESERVED_FDS + peer cap + client cap <= soft limit`, so a full client listener
//! still leaves the peer listener and the store their descriptors. A connection over its
//! listener's cap is accepted only to be closed at once (with a 503 on plaintext HTTP, so a
//! client sees why) and counted; it never reaches hyper.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept back from both listeners for the store, logs, listeners themselves,
/// outgoing peer connections and snapshot files.
pub const RESERVED_FDS: u64 = 256;
/// The fewest client connections a member runs with; below that the limit is a misconfiguration.
pub const MIN_CLIENT_CONNECTIONS: usize = 64;

pub const CONNECTIONS_OPEN: &str = "deimos_connections_open";
pub const CONNECTIONS_LIMIT: &str = "deimos_connections_limit";
pub const CONNECTIONS_REFUSED: &str = "deimos_connections_refused_total";

pub fn describe() {
    metrics::describe_gauge!(
        CONNECTIONS_OPEN,
        "Accepted connections now open, by listener."
    );
    metrics::describe_gauge!(
        CONNECTIONS_LIMIT,
        "Most connections a listener holds at once (its share of the descriptor budget)."
    );
    metrics::describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections closed on accept because their listener was at its cap, by listener."
    );
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force.
/// Failing to raise it is not fatal: the budget is then planned within the old soft limit.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "getrlimit(RLIMIT_NOFILE) failed");
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let before = lim.rlim_cur;
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::debug!(from = before, to = raised.rlim_cur, "raised RLIMIT_NOFILE");
            return raised.rlim_cur;
        }
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not raise RLIMIT_NOFILE");
    }
    lim.rlim_cur
}

/// How the descriptor budget is split between the listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub nofile: u64,
    pub client: usize,
    pub peer: usize,
    /// Set when `--max-client-connections` asked for more than the budget holds.
    pub clamped_from: Option<usize>,
}

/// The descriptor limit cannot hold the reserve, the peer connections and a minimum of clients.
#[derive(Debug, thiserror::Error)]
#[error(
    "RLIMIT_NOFILE is {nofile}: too few descriptors for {reserved} reserved, {peer} peer \
     connections and at least {min} client connections (raise the limit, e.g. LimitNOFILE= in \
     the unit, or lower --max-peer-connections)",
    reserved = RESERVED_FDS,
    min = MIN_CLIENT_CONNECTIONS
)]
pub struct TooFewDescriptors {
    pub nofile: u64,
    pub peer: usize,
}

impl Budget {
    /// Split `nofile` descriptors. `want_client` is `--max-client-connections` (0: all that is
    /// left). A proxy has no peer listener but opens one upstream connection per client
    /// request in flight, so its clients get half of what is left.
    pub fn plan(
        nofile: u64,
        want_client: usize,
        peer: usize,
        proxy: bool,
    ) -> Result<Budget, TooFewDescriptors> {
        let peer = if proxy { 0 } else { peer };
        let mut left = nofile
            .saturating_sub(RESERVED_FDS)
            .saturating_sub(peer as u64);
        if proxy {
            left /= 2;
        }
        let left = usize::try_from(left).unwrap_or(usize::MAX);
        if left < MIN_CLIENT_CONNECTIONS {
            return Err(TooFewDescriptors { nofile, peer });
        }
        let (client, clamped_from) = match want_client {
            0 => (left, None),
            n if n > left => (left, Some(n)),
            n => (n, None),
        };
        Ok(Budget {
            nofile,
            client,
            peer,
            clamped_from,
        })
    }
}

/// One listener's cap: a connection holds a permit from accept until it closes.
#[derive(Clone)]
pub struct ConnLimit {
    name: &'static str,
    permits: Arc<Semaphore>,
    open: metrics::Gauge,
    refused: metrics::Counter,
    /// Unix-ish milliseconds (since `epoch`) of the last "at cap" warning, for rate limiting.
    last_warn_ms: Arc<AtomicU64>,
    epoch: Instant,
    max: usize,
}

/// How often a listener at its cap says so in the log.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl ConnLimit {
    pub fn new(name: &'static str, max: usize) -> Self {
        metrics::gauge!(CONNECTIONS_LIMIT, "listener" => name).set(max as f64);
        ConnLimit {
            name,
            permits: Arc::new(Semaphore::new(max)),
            open: metrics::gauge!(CONNECTIONS_OPEN, "listener" => name),
            refused: metrics::counter!(CONNECTIONS_REFUSED, "listener" => name),
            last_warn_ms: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
            max,
        }
    }

    /// A permit for one more connection, or `None` (counted) when the listener is full.
    pub fn admit(&self) -> Option<Admitted> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.open.increment(1.0);
                Some(Admitted {
                    _permit: permit,
                    open: self.open.clone(),
                })
            }
            Err(_) => {
                self.refused.increment(1);
                self.warn_full();
                None
            }
        }
    }

    fn warn_full(&self) {
        let now = self.epoch.elapsed().as_millis() as u64 + WARN_EVERY.as_millis() as u64;
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64
            && self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                listener = self.name,
                limit = self.max,
                "connection limit reached; closing new connections until some close"
            );
        }
    }
}

/// A connection's hold on its listener's cap, released when the connection task ends.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    open: metrics::Gauge,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

/// What a refused plaintext connection is told before it is closed.
pub const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\nConnection: close\r\n\r\n\
too many connections\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_the_reserve_and_the_peer_share() {
        let b = Budget::plan(20_000, 0, 256, false).unwrap();
        assert_eq!(b.client, 20_000 - 256 - 256);
        assert_eq!(b.peer, 256);
        assert!(RESERVED_FDS as usize + b.peer + b.client <= 20_000);
        assert_eq!(b.clamped_from, None);
    }

    #[test]
    fn a_cap_above_the_budget_is_clamped_and_said() {
        let b = Budget::plan(1024, 5000, 256, false).unwrap();
        assert_eq!(b.client, 1024 - 512);
        assert_eq!(b.clamped_from, Some(5000));
        let b = Budget::plan(1024, 100, 256, false).unwrap();
        assert_eq!((b.client, b.clamped_from), (100, None));
    }

    #[test]
    fn a_proxy_keeps_half_for_its_upstream_connections() {
        let b = Budget::plan(2256, 0, 256, true).unwrap();
        assert_eq!((b.client, b.peer), (1000, 0));
    }

    #[test]
    fn too_few_descriptors_is_an_error_that_says_what_to_do() {
        let e = Budget::plan(512, 0, 256, false).unwrap_err().to_string();
        assert!(e.contains("RLIMIT_NOFILE is 512"), "{e}");
        assert!(e.contains("LimitNOFILE"), "{e}");
    }

    #[test]
    fn a_full_listener_refuses_until_a_connection_closes() {
        let l = ConnLimit::new("test", 2);
        let a = l.admit().expect("first");
        let _b = l.admit().expect("second");
        assert!(l.admit().is_none(), "a third connection is over the cap");
        drop(a);
        assert!(l.admit().is_some(), "a closed connection frees its place");
    }

    #[test]
    fn raising_the_limit_never_lowers_it() {
        let mut before = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads into the struct.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut before) },
            0
        );
        let now = raise_nofile();
        assert!(now >= before.rlim_cur);
        assert_eq!(now, before.rlim_max);
    }
}
