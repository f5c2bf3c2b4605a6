//! Loopback ports for test servers.
//!
//! The usual trick — bind port 0, read the port, drop the listener, hand the number to a child
//! process — races with the kernel: the same number may be picked as the *local* port of an
//! outgoing connection (every peer and client connection takes one from the ephemeral range)
//! before the child binds it, and the child then fails to start. With three-node clusters,
//! proxies and load running side by side that happened in CI. Ports below the ephemeral range
//! are never chosen by the kernel, so we hand those out instead: each process walks its own
//! window of that range (offset by its pid, so test binaries run side by side rarely meet),
//! never hands out a port twice, and skips any port something already listens on.

use std::net::TcpListener;
use std::sync::Mutex;

/// Lowest port we use: clear of the well-known and most registered service ports.
const FLOOR: u16 = 20_000;
/// Ports per process window; windows repeat if the range holds fewer.
const WINDOW: u32 = 500;

/// A loopback port nobody listens on right now, outside the kernel's ephemeral range, never
/// returned twice by this process.
pub fn free_port() -> u16 {
    static NEXT: Mutex<Option<(u16, u16)>> = Mutex::new(None);
    let mut next = NEXT.lock().unwrap_or_else(|p| p.into_inner());
    let (start, ceiling) = *next.get_or_insert_with(|| {
        let ceiling = ephemeral_low().max(FLOOR + WINDOW as u16 + 1);
        let windows = (u32::from(ceiling - FLOOR) / WINDOW).max(1);
        let offset = (std::process::id() % windows) * WINDOW;
        (FLOOR + offset as u16, ceiling)
    });
    let mut port = start;
    // At most one full pass over the range; something is badly wrong if all of it is taken.
    for _ in FLOOR..ceiling {
        let candidate = port;
        port = if port + 1 >= ceiling { FLOOR } else { port + 1 };
        if TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            *next = Some((port, ceiling));
            return candidate;
        }
    }
    panic!("no free loopback port in {FLOOR}..{ceiling}");
}

/// The lowest ephemeral port (Linux's `ip_local_port_range`; 32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            ports.len(),
            "a port handed out twice: {ports:?}"
        );
        let low = ephemeral_low();
        for p in ports {
            assert!(
                (FLOOR..low.max(FLOOR + WINDOW as u16 + 1)).contains(&p),
                "{p} outside {FLOOR}..{low}"
            );
            assert!(
                TcpListener::bind(("127.0.0.1", p)).is_ok(),
                "{p} not bindable"
            );
        }
    }

    #[test]
    fn a_port_in_use_is_skipped() {
        let p = free_port();
        let _held = TcpListener::bind(("127.0.0.1", p + 1)).ok();
        let q = free_port();
        assert_ne!(q, p);
        if _held.is_some() {
            assert_ne!(q, p + 1, "handed out a port someone listens on");
        }
    }
}
