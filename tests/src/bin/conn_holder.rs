//! `conn_holder ADDR COUNT [watch]`: hold COUNT TCP connections to ADDR, as an attacker
//! exhausting a server's descriptors would, until standard input closes.
//!
//! A separate process because one process's descriptor limit (20,000 on the CI machine) cannot
//! hold 20,000 connections *and* run the test; the connection-limit test starts two.
//!
//! Prints one line once every connection was tried: `held H refused R failed F`, where *refused*
//! are connections the server closed (or answered) at once and *failed* are connects that did not
//! complete. Then it keeps the pressure on: every second, connections the server closed since
//! (its idle timeout) are opened again, as a persistent attacker would.

use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// With `watch`, each connection sends a long-poll watch request, which a server keeps open
/// indefinitely (no idle timeout applies), so the held count is steady; without, connections
/// stay silent until the server's header timeout closes them.
const WATCH: &[u8] = b"GET /v2/keys/conn-holder?wait=true HTTP/1.1\r\nHost: holder\r\n\r\n";

fn connect(addr: &SocketAddr, watch: bool) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(addr, Duration::from_secs(2)).ok()?;
    if watch {
        s.write_all(WATCH).ok()?;
    }
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// Whether the server has closed or refused (503) this connection. Anything else it sent (a
/// watch's headers) is read and ignored.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => buf[..n].starts_with(b"HTTP/1.1 503"),
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(count)) = (args.next(), args.next()) else {
        eprintln!("usage: deimos-conn-holder ADDR COUNT");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().expect("ADDR is host:port");
    let count: usize = count.parse().expect("COUNT is a number");
    let watch = args.next().as_deref() == Some("watch");
    raise_nofile();

    // Many connecting threads: a SYN the server's full accept queue dropped costs its thread a
    // one-second retransmit, not the whole burst.
    const THREADS: usize = 64;
    let per = count.div_ceil(THREADS);
    let mut conns: Vec<Option<TcpStream>> = std::thread::scope(|s| {
        let parts: Vec<_> = (0..count)
            .step_by(per.max(1))
            .map(|start| {
                let n = per.min(count - start);
                s.spawn(move || (0..n).map(|_| connect(&addr, watch)).collect::<Vec<_>>())
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("connect thread"))
            .collect()
    });
    let failed = conns.iter().filter(|c| c.is_none()).count();
    // Give the server time to accept (or refuse) the tail of the burst.
    std::thread::sleep(Duration::from_millis(500));
    let mut refused = 0;
    for c in conns.iter_mut() {
        if let Some(s) = c {
            if closed_by_server(s) {
                refused += 1;
                *c = None;
            }
        }
    }
    let held = count - failed - refused;
    println!("held {held} refused {refused} failed {failed}");
    let _ = std::io::stdout().flush();

    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        d.store(true, Ordering::SeqCst);
    });
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(1));
        for c in conns.iter_mut() {
            if done.load(Ordering::SeqCst) {
                break;
            }
            let gone = match c {
                Some(s) => closed_by_server(s),
                None => true,
            };
            if gone {
                *c = connect(&addr, watch);
            }
        }
    }
}
